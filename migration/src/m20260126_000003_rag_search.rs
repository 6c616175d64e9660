//! `rag_search`: what retrieval searches with, beside the `chunks` table.
//!
//! - SQLite: an FTS5 table `chunks_fts` (Porter stemming over unicode61)
//!   kept in step with `chunks` by triggers. It keys on the chunk's rowid, so
//!   a chunk's FTS row goes with it; chunks are never updated in place
//!   (re-indexing replaces them), and chatcore never runs `VACUUM`, which
//!   could renumber the rowids of a table without an INTEGER PRIMARY KEY.
//! - PostgreSQL: a generated `tsv tsvector` column (English configuration)
//!   with a GIN index; and, when the pgvector extension is available on the
//!   server, a `embedding_v vector` column with one partial HNSW index (cosine
//!   distance) per common embedding size. Without pgvector the column is
//!   absent and retrieval scans the f32 blobs instead;
//!   [`install_pgvector`] adds it later (the store calls it on every start).
//!
//! The `embedding` blob stays the source of truth on both backends;
//! `embedding_v` is an index copy written in the same statement.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

/// The migration.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "rag_search"
    }
}

/// Embedding sizes that get an HNSW index on PostgreSQL (a pgvector index
/// needs a fixed dimension): MiniLM/mock 384, Gemini 768, 1024, OpenAI 1536.
/// Other sizes are searched exactly, without an index.
pub const HNSW_DIMENSIONS: &[u32] = &[384, 768, 1024, 1536];

const SQLITE_UP: &[&str] = &[
    "CREATE VIRTUAL TABLE chunks_fts USING fts5(\
        text, chunk_id UNINDEXED, tenant_id UNINDEXED, dataset_id UNINDEXED, document_id UNINDEXED, \
        tokenize = 'porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN \
        INSERT INTO chunks_fts (rowid, text, chunk_id, tenant_id, dataset_id, document_id) \
        VALUES (new.rowid, new.text, new.id, new.tenant_id, new.dataset_id, new.document_id); END",
    "CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN \
        DELETE FROM chunks_fts WHERE rowid = old.rowid; END",
    "CREATE TRIGGER chunks_fts_update AFTER UPDATE ON chunks BEGIN \
        DELETE FROM chunks_fts WHERE rowid = old.rowid; \
        INSERT INTO chunks_fts (rowid, text, chunk_id, tenant_id, dataset_id, document_id) \
        VALUES (new.rowid, new.text, new.id, new.tenant_id, new.dataset_id, new.document_id); END",
    "INSERT INTO chunks_fts (rowid, text, chunk_id, tenant_id, dataset_id, document_id) \
        SELECT rowid, text, id, tenant_id, dataset_id, document_id FROM chunks",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS chunks_fts_update",
    "DROP TRIGGER IF EXISTS chunks_fts_delete",
    "DROP TRIGGER IF EXISTS chunks_fts_insert",
    "DROP TABLE IF EXISTS chunks_fts",
];

const POSTGRES_UP: &[&str] = &[
    "ALTER TABLE chunks ADD COLUMN tsv tsvector \
        GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED",
    "CREATE INDEX ix_chunks_tsv ON chunks USING gin (tsv)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        match db.get_database_backend() {
            DbBackend::Sqlite => {
                for sql in SQLITE_UP {
                    db.execute_unprepared(sql).await?;
                }
            }
            DbBackend::Postgres => {
                for sql in POSTGRES_UP {
                    db.execute_unprepared(sql).await?;
                }
                install_pgvector(db).await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        match db.get_database_backend() {
            DbBackend::Sqlite => {
                for sql in SQLITE_DOWN {
                    db.execute_unprepared(sql).await?;
                }
            }
            DbBackend::Postgres => {
                for d in HNSW_DIMENSIONS {
                    db.execute_unprepared(&format!("DROP INDEX IF EXISTS ix_chunks_hnsw_{d}"))
                        .await?;
                }
                db.execute_unprepared("DROP INDEX IF EXISTS ix_chunks_tsv")
                    .await?;
                db.execute_unprepared("ALTER TABLE chunks DROP COLUMN IF EXISTS embedding_v")
                    .await?;
                db.execute_unprepared("ALTER TABLE chunks DROP COLUMN IF EXISTS tsv")
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether the pgvector extension can be (or is) installed on this server.
pub async fn pgvector_available<C: ConnectionTrait>(db: &C) -> Result<bool, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT 1 AS ok FROM pg_available_extensions WHERE name = 'vector'",
        ))
        .await?;
    Ok(row.is_some())
}

/// Whether `chunks.embedding_v` exists in the current schema.
pub async fn has_vector_column<C: ConnectionTrait>(db: &C) -> Result<bool, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT 1 AS ok FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'chunks' \
             AND column_name = 'embedding_v'",
        ))
        .await?;
    Ok(row.is_some())
}

/// On PostgreSQL with pgvector available: creates the extension (in schema
/// `public`, once per database), the `chunks.embedding_v` column and its
/// HNSW indexes, if missing. Returns whether the column exists afterwards.
/// Call it inside a transaction: an advisory lock held to its end keeps
/// concurrent installers (several instances or test schemas starting at
/// once) from racing on `CREATE EXTENSION`.
pub async fn install_pgvector<C: ConnectionTrait>(db: &C) -> Result<bool, DbErr> {
    if db.get_database_backend() != DbBackend::Postgres || !pgvector_available(db).await? {
        return Ok(false);
    }
    if has_vector_column(db).await? {
        return Ok(true);
    }
    // 0x63686174 = "chat": one lock id for every installer of this database.
    db.execute_unprepared("SELECT pg_advisory_xact_lock(1667785076, 1)")
        .await?;
    db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
        .await?;
    db.execute_unprepared("ALTER TABLE chunks ADD COLUMN IF NOT EXISTS embedding_v vector")
        .await?;
    for d in HNSW_DIMENSIONS {
        db.execute_unprepared(&format!(
            "CREATE INDEX IF NOT EXISTS ix_chunks_hnsw_{d} ON chunks \
             USING hnsw ((embedding_v::vector({d})) vector_cosine_ops) \
             WHERE vector_dims(embedding_v) = {d}"
        ))
        .await?;
    }
    Ok(true)
}
