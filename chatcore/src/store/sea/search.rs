//! Chunk retrieval on SeaORM.
//!
//! Vectors: on PostgreSQL with pgvector, an HNSW index per common dimension
//! (`ORDER BY embedding_v <=> $q`); elsewhere (SQLite, PostgreSQL without
//! the extension) an exact scan of unit vectors held in memory per dataset.
//! A dataset's vectors are loaded once and kept while its documents do not
//! change: every search first reads the dataset's stamp (document count and
//! newest `updated_at`, one indexed query), and any ingestion or deletion,
//! from this process or another, changes it. The cache is bounded in bytes
//! (least recently used sets go first); a dataset bigger than the whole
//! budget is scanned without being kept.
//!
//! Full text: SQLite FTS5 (`chunks_fts`, BM25) and PostgreSQL `tsvector`
//! (`ts_rank`), matching any word of the query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement, TransactionTrait, Value,
};
use uuid::Uuid;

use super::scope::{Tenancy, done};
use super::{SeaOrmStore, db_err};
use crate::domain::{ChunkId, DatasetId, DocumentId, TenantId};
use crate::rag::{top_k_unit_rows, unit_vector};
use crate::store::{ChunkHit, ChunkSearch, ScoredChunk, StoreError, StoreResult};

/// Document ids per statement when a search is limited to documents.
const DOCUMENTS_PER_STATEMENT: usize = 1000;
/// Words of a query given to the full-text engine at most.
const MAX_QUERY_WORDS: usize = 64;

/// What this store knows about vector search, shared by its clones.
pub(super) struct VectorState {
    /// `chunks.embedding_v` exists (pgvector installed).
    pgvector: AtomicBool,
    /// pgvector 0.8+: iterative index scans keep filtered searches complete.
    iterative_scan: AtomicBool,
    cache: Mutex<Cache>,
    budget_bytes: usize,
}

impl std::fmt::Debug for VectorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorState")
            .field("pgvector", &self.pgvector.load(AtomicOrdering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Cache {
    sets: HashMap<(DatasetId, usize), (Arc<VectorSet>, u64)>,
    bytes: usize,
    tick: u64,
}

/// A dataset's unit vectors of one dimension, row after row.
struct VectorSet {
    stamp: Stamp,
    chunks: Vec<ChunkId>,
    documents: Vec<DocumentId>,
    data: Vec<f32>,
}

impl VectorSet {
    fn bytes(&self) -> usize {
        self.data.len() * 4 + self.chunks.len() * 32
    }
}

/// Changes whenever a document of the dataset is added, re-indexed or
/// deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    documents: i64,
    newest: Option<DateTime<Utc>>,
}

impl VectorState {
    pub(super) fn new(budget_bytes: usize) -> Self {
        Self {
            pgvector: AtomicBool::new(false),
            iterative_scan: AtomicBool::new(false),
            cache: Mutex::new(Cache::default()),
            budget_bytes,
        }
    }

    fn cached(&self, key: (DatasetId, usize), stamp: &Stamp) -> Option<Arc<VectorSet>> {
        let mut c = self.cache.lock().expect("vector cache poisoned");
        c.tick += 1;
        let tick = c.tick;
        match c.sets.get_mut(&key) {
            Some((set, used)) if &set.stamp == stamp => {
                *used = tick;
                Some(set.clone())
            }
            _ => None,
        }
    }

    fn keep(&self, key: (DatasetId, usize), set: Arc<VectorSet>) {
        let size = set.bytes();
        let mut c = self.cache.lock().expect("vector cache poisoned");
        if let Some((old, _)) = c.sets.remove(&key) {
            c.bytes -= old.bytes();
        }
        if size > self.budget_bytes {
            return;
        }
        while c.bytes + size > self.budget_bytes {
            let Some(oldest) = c
                .sets
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some((old, _)) = c.sets.remove(&oldest) {
                c.bytes -= old.bytes();
            }
        }
        c.tick += 1;
        let tick = c.tick;
        c.bytes += size;
        c.sets.insert(key, (set, tick));
    }
}

/// A statement under construction with positional parameters.
struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            text: String::new(),
            values: Vec::new(),
        }
    }

    fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    fn bind(&mut self, v: impl Into<Value>) -> &mut Self {
        self.values.push(v.into());
        if self.backend == DbBackend::Postgres {
            let n = self.values.len();
            self.text.push_str(&format!("${n}"));
        } else {
            self.text.push('?');
        }
        self
    }

    fn bind_list(&mut self, ids: impl IntoIterator<Item = Uuid>) -> &mut Self {
        self.push("(");
        for (i, id) in ids.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(id);
        }
        self.push(")")
    }

    fn statement(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}

/// The words of a query as the full-text engines get them: letters and
/// digits only (no operator can slip through), lower-cased, each once.
fn query_words(query: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for w in query.split(|c: char| !c.is_alphanumeric()) {
        let w = w.to_lowercase();
        if !w.is_empty() && !words.contains(&w) {
            words.push(w);
        }
        if words.len() == MAX_QUERY_WORDS {
            break;
        }
    }
    words
}

/// English words too common to rank by, left out of SQLite full-text
/// queries (PostgreSQL's `english` configuration drops the same kind of
/// words itself). Matching them costs the most, since they occur in nearly
/// every chunk, and their weight in BM25 is close to nothing.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had",
    "has", "have", "he", "her", "his", "how", "i", "if", "in", "into", "is", "it", "its", "me",
    "my", "no", "not", "of", "on", "or", "our", "s", "she", "so", "than", "that", "the", "their",
    "them", "then", "there", "these", "they", "this", "to", "was", "we", "were", "what", "when",
    "where", "which", "who", "why", "will", "with", "would", "you", "your",
];

/// [`query_words`] without stop words, unless that leaves none.
fn ranking_words(query: &str) -> Vec<String> {
    let words = query_words(query);
    let kept: Vec<String> = words
        .iter()
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .cloned()
        .collect();
    if kept.is_empty() { words } else { kept }
}

/// pgvector's text form of a vector; `None` when it holds a NaN or an
/// infinity (which pgvector refuses; such a vector is never found).
pub(super) fn pgvector_text(v: &[f32]) -> Option<String> {
    if v.is_empty() || v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mut s = String::with_capacity(v.len() * 12);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // Display gives the shortest text that reads back as the same f32.
        s.push_str(&x.to_string());
    }
    s.push(']');
    Some(s)
}

/// Splits a document restriction into statement-sized batches; `None` (no
/// restriction) is one batch.
fn document_batches(documents: Option<&[DocumentId]>) -> Vec<Option<&[DocumentId]>> {
    match documents {
        None => vec![None],
        Some(d) => d.chunks(DOCUMENTS_PER_STATEMENT).map(Some).collect(),
    }
}

fn uuid_of(row: &QueryResult, col: &str) -> StoreResult<Uuid> {
    row.try_get::<Uuid>("", col)
        .map_err(|e| StoreError::internal_from(format!("reading {col}"), e))
}

fn best_first(mut all: Vec<ScoredChunk>, limit: usize) -> Vec<ScoredChunk> {
    all.sort_by(|a, b| b.score.total_cmp(&a.score));
    all.truncate(limit);
    all
}

/// Inserts a document's chunks with their pgvector copy, in statements of at
/// most 1,000 rows (9 parameters each: under PostgreSQL's 65,535).
pub(super) async fn insert_chunks_with_vectors(
    txn: &sea_orm::DatabaseTransaction,
    tenant: TenantId,
    dataset: Uuid,
    document: Uuid,
    chunks: Vec<crate::store::NewChunk>,
) -> StoreResult<()> {
    for batch in chunks.chunks(1000) {
        let mut sql = Sql::new(DbBackend::Postgres);
        sql.push(
            "INSERT INTO chunks (id, tenant_id, dataset_id, document_id, ordinal, text, \
             token_count, embedding, embedding_v) VALUES ",
        );
        for (i, c) in batch.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(")
                .bind(ChunkId::new().0)
                .push(", ")
                .bind(tenant.0)
                .push(", ")
                .bind(dataset)
                .push(", ")
                .bind(document)
                .push(", ")
                .bind(c.ordinal)
                .push(", ")
                .bind(c.text.clone())
                .push(", ")
                .bind(c.token_count)
                .push(", ")
                .bind(c.embedding.as_deref().map(super::convert::embedding_bytes))
                .push(", ")
                .bind(c.embedding.as_deref().and_then(pgvector_text))
                .push("::vector)");
        }
        txn.execute_raw(sql.statement())
            .await
            .map_err(|e| super::write_err(e, "chunk"))?;
    }
    Ok(())
}

/// PostgreSQL, as the tables' owner: installs pgvector's column and indexes
/// if the extension is available and they are missing (the server may have
/// gained the extension after the schema was created), and fills
/// `embedding_v` for chunks written before.
pub(super) async fn install_vectors(db: &DatabaseConnection) -> StoreResult<()> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let txn = db.begin().await.map_err(db_err)?;
    let has = migration::m20260126_000003_rag_search::install_pgvector(&txn)
        .await
        .map_err(db_err)?;
    txn.commit().await.map_err(db_err)?;
    if has {
        backfill_vector_column(db).await?;
    }
    Ok(())
}

/// Copies `embedding` into `embedding_v` where it is missing.
async fn backfill_vector_column(db: &DatabaseConnection) -> StoreResult<()> {
    let mut after = Uuid::nil();
    loop {
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT id, embedding FROM chunks WHERE embedding_v IS NULL \
                 AND embedding IS NOT NULL AND id > $1 ORDER BY id LIMIT 500",
                [after.into()],
            ))
            .await
            .map_err(db_err)?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = uuid_of(last, "id")?;
        let txn = db.begin().await.map_err(db_err)?;
        for r in &rows {
            let id = uuid_of(r, "id")?;
            let bytes: Vec<u8> = r
                .try_get("", "embedding")
                .map_err(|e| StoreError::internal_from("reading embedding", e))?;
            let Some(text) = super::convert::embedding_from_bytes(&bytes)
                .ok()
                .and_then(|v| pgvector_text(&v))
            else {
                continue;
            };
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "UPDATE chunks SET embedding_v = $1::vector WHERE id = $2",
                [text.into(), id.into()],
            ))
            .await
            .map_err(db_err)?;
        }
        txn.commit().await.map_err(db_err)?;
    }
}

impl SeaOrmStore {
    pub(super) fn pgvector_enabled(&self) -> bool {
        self.vectors.pgvector.load(AtomicOrdering::Relaxed)
    }

    /// PostgreSQL: notes whether pgvector's column is there (see
    /// [`install_vectors`]) and what the searches can use.
    pub(super) async fn prepare_vector_search(&self) -> StoreResult<()> {
        if self.backend != DbBackend::Postgres {
            return Ok(());
        }
        let has = migration::m20260126_000003_rag_search::has_vector_column(&self.db)
            .await
            .map_err(db_err)?;
        self.vectors.pgvector.store(has, AtomicOrdering::Relaxed);
        if !has {
            return Ok(());
        }
        let version = self
            .db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT extversion AS v FROM pg_extension WHERE extname = 'vector'",
            ))
            .await
            .map_err(db_err)?
            .and_then(|r| r.try_get::<String>("", "v").ok())
            .unwrap_or_default();
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        self.vectors
            .iterative_scan
            .store((major, minor) >= (0, 8), AtomicOrdering::Relaxed);
        Ok(())
    }

    /// Vector search (see [`crate::store::RagStore::search_chunks_by_vector`]).
    pub(super) async fn vector_search(
        &self,
        tenant: TenantId,
        search: ChunkSearch<'_>,
        vector: &[f32],
    ) -> StoreResult<Vec<ScoredChunk>> {
        let Some(unit) = unit_vector(vector) else {
            return Ok(Vec::new());
        };
        if search.limit == 0 || search.datasets.is_empty() {
            return Ok(Vec::new());
        }
        if search.documents.is_some_and(|d| d.is_empty()) {
            return Ok(Vec::new());
        }
        if self.pgvector_enabled() {
            self.pgvector_search(tenant, search, &unit).await
        } else {
            self.scan_search(tenant, search, &unit).await
        }
    }

    async fn pgvector_search(
        &self,
        tenant: TenantId,
        search: ChunkSearch<'_>,
        unit: &[f32],
    ) -> StoreResult<Vec<ScoredChunk>> {
        let dims = unit.len();
        let q = pgvector_text(unit).expect("a unit vector is finite");
        let txn = self.db.begin().await.map_err(db_err)?;
        self.set_tenancy_in(&txn, Tenancy::One(tenant)).await?;
        // The index returns `ef_search` candidates before the filters; ask for
        // enough, and (0.8+) let it keep scanning until the filters are met.
        let ef = (search.limit * 2).clamp(40, 1000);
        txn.execute_unprepared(&format!("SET LOCAL hnsw.ef_search = {ef}"))
            .await
            .map_err(db_err)?;
        if self.vectors.iterative_scan.load(AtomicOrdering::Relaxed) {
            txn.execute_unprepared("SET LOCAL hnsw.iterative_scan = relaxed_order")
                .await
                .map_err(db_err)?;
        }
        let mut out = Vec::new();
        for docs in document_batches(search.documents) {
            let mut sql = Sql::new(DbBackend::Postgres);
            // The query vector arrives as text. As a scalar subquery it is
            // parsed once (an InitPlan); `$n::vector` written in the
            // expressions, or a subquery in FROM (which the planner pulls
            // up), would be parsed again for every row the plan looks at.
            let q_expr = format!("(SELECT $1::vector({dims}))");
            sql.values.push(q.clone().into());
            sql.push(&format!(
                "SELECT id, document_id, (embedding_v::vector({dims}) <=> {q_expr})::float8 AS distance \
                 FROM chunks WHERE tenant_id = "
            ))
            .bind(tenant.0)
            .push(" AND dataset_id IN ")
            .bind_list(search.datasets.iter().map(|d| d.0))
            .push(&format!(" AND vector_dims(embedding_v) = {dims}"));
            if let Some(docs) = docs {
                sql.push(" AND document_id IN ")
                    .bind_list(docs.iter().map(|d| d.0));
            }
            sql.push(&format!(
                " ORDER BY embedding_v::vector({dims}) <=> {q_expr} LIMIT {}",
                search.limit
            ));
            for r in txn.query_all_raw(sql.statement()).await.map_err(db_err)? {
                let distance: f64 = r
                    .try_get("", "distance")
                    .map_err(|e| StoreError::internal_from("reading distance", e))?;
                out.push(ScoredChunk {
                    chunk_id: ChunkId(uuid_of(&r, "id")?),
                    document_id: DocumentId(uuid_of(&r, "document_id")?),
                    score: (1.0 - distance) as f32,
                });
            }
        }
        txn.commit().await.map_err(db_err)?;
        // relaxed_order may return neighbours slightly out of order.
        Ok(best_first(out, search.limit))
    }

    async fn dataset_stamp(&self, tenant: TenantId, dataset: DatasetId) -> StoreResult<Stamp> {
        let mut sql = Sql::new(self.backend);
        sql.push(
            "SELECT COUNT(*) AS n, MAX(updated_at) AS newest FROM documents WHERE tenant_id = ",
        )
        .bind(tenant.0)
        .push(" AND dataset_id = ")
        .bind(dataset.0);
        let db = self.scoped(Tenancy::One(tenant)).await?;
        let row = db
            .query_one_raw(sql.statement())
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::internal("stamp query returned no row"))?;
        done(db).await?;
        let documents: i64 = row
            .try_get("", "n")
            .map_err(|e| StoreError::internal_from("reading stamp", e))?;
        // SQLite hands MAX() back as text; PostgreSQL as a timestamp.
        let newest = match self.backend {
            DbBackend::Postgres => row
                .try_get::<Option<DateTime<Utc>>>("", "newest")
                .map_err(|e| StoreError::internal_from("reading stamp", e))?,
            _ => row
                .try_get::<Option<String>>("", "newest")
                .map_err(|e| StoreError::internal_from("reading stamp", e))?
                .map(|s| {
                    DateTime::parse_from_rfc3339(&s)
                        .or_else(|_| {
                            chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S%.f")
                                .map(|n| n.and_utc().fixed_offset())
                        })
                        .map(|d| d.with_timezone(&Utc))
                        .map_err(|e| StoreError::internal_from(format!("stamp time {s:?}"), e))
                })
                .transpose()?,
        };
        Ok(Stamp { documents, newest })
    }

    async fn load_vectors(
        &self,
        tenant: TenantId,
        dataset: DatasetId,
        dims: usize,
        stamp: Stamp,
    ) -> StoreResult<VectorSet> {
        use futures::TryStreamExt;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
        let e = &super::entities::chunk::Column::Embedding;
        // Streamed: a transaction when the tenancy must be set, else the pool.
        let txn = if self.rls() {
            let t = self.db.begin().await.map_err(db_err)?;
            super::scope::set_tenancy(&t, Tenancy::One(tenant)).await?;
            Some(t)
        } else {
            None
        };
        let query = super::entities::chunk::Entity::find()
            .select_only()
            .column(super::entities::chunk::Column::Id)
            .column(super::entities::chunk::Column::DocumentId)
            .column(*e)
            .filter(super::entities::chunk::Column::TenantId.eq(tenant.0))
            .filter(super::entities::chunk::Column::DatasetId.eq(dataset.0))
            .filter(e.is_not_null())
            .into_tuple::<(Uuid, Uuid, Vec<u8>)>();
        type Rows<'a> = std::pin::Pin<
            Box<
                dyn futures::Stream<Item = Result<(Uuid, Uuid, Vec<u8>), sea_orm::DbErr>>
                    + Send
                    + 'a,
            >,
        >;
        let mut rows: Rows<'_> = match &txn {
            Some(t) => Box::pin(query.stream(t).await.map_err(db_err)?),
            None => Box::pin(query.stream(&self.db).await.map_err(db_err)?),
        };
        let mut set = VectorSet {
            stamp,
            chunks: Vec::new(),
            documents: Vec::new(),
            data: Vec::new(),
        };
        while let Some((id, doc, bytes)) = rows.try_next().await.map_err(db_err)? {
            if bytes.len() != dims * 4 {
                continue;
            }
            let v = super::convert::embedding_from_bytes(&bytes)?;
            let Some(u) = unit_vector(&v) else { continue };
            set.chunks.push(ChunkId(id));
            set.documents.push(DocumentId(doc));
            set.data.extend_from_slice(&u);
        }
        drop(rows);
        if let Some(t) = txn {
            t.commit().await.map_err(db_err)?;
        }
        Ok(set)
    }

    async fn scan_search(
        &self,
        tenant: TenantId,
        search: ChunkSearch<'_>,
        unit: &[f32],
    ) -> StoreResult<Vec<ScoredChunk>> {
        let dims = unit.len();
        let wanted: Option<std::collections::HashSet<DocumentId>> =
            search.documents.map(|d| d.iter().copied().collect());
        let mut out = Vec::new();
        for &dataset in search.datasets {
            let stamp = self.dataset_stamp(tenant, dataset).await?;
            let key = (dataset, dims);
            let set = match self.vectors.cached(key, &stamp) {
                Some(set) => set,
                None => {
                    let set = Arc::new(self.load_vectors(tenant, dataset, dims, stamp).await?);
                    self.vectors.keep(key, set.clone());
                    set
                }
            };
            let found = top_k_unit_rows(unit, &set.data, search.limit, |row| {
                wanted
                    .as_ref()
                    .is_none_or(|w| w.contains(&set.documents[row]))
            });
            out.extend(found.into_iter().map(|(row, score)| ScoredChunk {
                chunk_id: set.chunks[row],
                document_id: set.documents[row],
                score,
            }));
        }
        Ok(best_first(out, search.limit))
    }

    /// Full-text search (see [`crate::store::RagStore::search_chunks_by_text`]).
    pub(super) async fn text_search(
        &self,
        tenant: TenantId,
        search: ChunkSearch<'_>,
        query: &str,
    ) -> StoreResult<Vec<ScoredChunk>> {
        let words = if self.backend == DbBackend::Postgres {
            query_words(query)
        } else {
            ranking_words(query)
        };
        if words.is_empty()
            || search.limit == 0
            || search.datasets.is_empty()
            || search.documents.is_some_and(|d| d.is_empty())
        {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for docs in document_batches(search.documents) {
            let mut sql = Sql::new(self.backend);
            if self.backend == DbBackend::Postgres {
                // `|`: any word; to_tsquery stems them and drops stop words.
                sql.push("SELECT id AS chunk_id, document_id, ts_rank(tsv, q)::float8 AS score FROM chunks, to_tsquery('english'::regconfig, ")
                    .bind(words.join(" | "))
                    .push(") AS q WHERE tsv @@ q AND tenant_id = ")
                    .bind(tenant.0)
                    .push(" AND dataset_id IN ")
                    .bind_list(search.datasets.iter().map(|d| d.0));
                if let Some(docs) = docs {
                    sql.push(" AND document_id IN ")
                        .bind_list(docs.iter().map(|d| d.0));
                }
                sql.push(&format!(" ORDER BY score DESC LIMIT {}", search.limit));
            } else {
                // Quoted words joined by OR: FTS5 syntax cannot be injected.
                let expr = words
                    .iter()
                    .map(|w| format!("\"{w}\""))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                // `ORDER BY rank LIMIT` lets FTS5 rank inside the module and
                // hand rows over best first, so the tenant and dataset checks
                // (stored columns) read only as many rows as the limit needs.
                sql.push("SELECT chunk_id, document_id, -rank AS score FROM chunks_fts WHERE chunks_fts MATCH ")
                    .bind(expr)
                    .push(" AND tenant_id = ")
                    .bind(tenant.0)
                    .push(" AND dataset_id IN ")
                    .bind_list(search.datasets.iter().map(|d| d.0));
                if let Some(docs) = docs {
                    sql.push(" AND document_id IN ")
                        .bind_list(docs.iter().map(|d| d.0));
                }
                sql.push(&format!(" ORDER BY rank LIMIT {}", search.limit));
            }
            let db = self.scoped(Tenancy::One(tenant)).await?;
            let rows = db.query_all_raw(sql.statement()).await.map_err(db_err)?;
            done(db).await?;
            for r in rows {
                let score: f64 = r
                    .try_get("", "score")
                    .map_err(|e| StoreError::internal_from("reading score", e))?;
                out.push(ScoredChunk {
                    chunk_id: ChunkId(uuid_of(&r, "chunk_id")?),
                    document_id: DocumentId(uuid_of(&r, "document_id")?),
                    score: score as f32,
                });
            }
        }
        Ok(best_first(out, search.limit))
    }

    /// Chunks with their documents' titles, in the order of `ids`.
    pub(super) async fn hits(
        &self,
        tenant: TenantId,
        ids: &[ChunkId],
    ) -> StoreResult<Vec<ChunkHit>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut found: HashMap<Uuid, ChunkHit> = HashMap::new();
        for batch in ids.chunks(DOCUMENTS_PER_STATEMENT) {
            let mut sql = Sql::new(self.backend);
            sql.push("SELECT c.id AS chunk_id, c.document_id AS document_id, c.text AS text, d.title AS title \
                      FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.tenant_id = ")
                .bind(tenant.0)
                .push(" AND c.id IN ")
                .bind_list(batch.iter().map(|c| c.0));
            let db = self.scoped(Tenancy::One(tenant)).await?;
            let rows = db.query_all_raw(sql.statement()).await.map_err(db_err)?;
            done(db).await?;
            for r in rows {
                let chunk_id = uuid_of(&r, "chunk_id")?;
                let text: String = r
                    .try_get("", "text")
                    .map_err(|e| StoreError::internal_from("reading text", e))?;
                let title: String = r
                    .try_get("", "title")
                    .map_err(|e| StoreError::internal_from("reading title", e))?;
                found.insert(
                    chunk_id,
                    ChunkHit {
                        chunk_id: ChunkId(chunk_id),
                        document_id: DocumentId(uuid_of(&r, "document_id")?),
                        title,
                        text,
                    },
                );
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(&id.0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_words_keep_letters_and_digits_only() {
        assert_eq!(
            query_words("What's the \"boiling\" point OR NEAR(x) of H2O? what"),
            vec![
                "what", "s", "the", "boiling", "point", "or", "near", "x", "of", "h2o"
            ]
        );
        assert!(query_words("  *** -- ").is_empty());
        assert_eq!(query_words("Émile Zoë"), vec!["émile", "zoë"]);
        assert_eq!(
            ranking_words("How long do the refunds take?"),
            vec!["long", "refunds", "take"]
        );
        assert_eq!(
            ranking_words("to be or not to be"),
            vec!["to", "be", "or", "not"]
        );
    }

    #[test]
    fn pgvector_text_round_trips_and_refuses_non_finite() {
        let v = [0.1f32, -2.5e-8, 3.0, f32::MIN_POSITIVE];
        let t = pgvector_text(&v).unwrap();
        let back: Vec<f32> = t
            .trim_matches(['[', ']'])
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(back, v);
        assert!(pgvector_text(&[1.0, f32::NAN]).is_none());
        assert!(pgvector_text(&[]).is_none());
    }
}
