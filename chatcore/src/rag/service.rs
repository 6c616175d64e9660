//! Ingestion and retrieval over the store: the I/O half of RAG.
//!
//! Ingestion: a document is normalised, hashed and stored as `pending`; an
//! indexer task (off the request path) chunks it, embeds the chunks in
//! batches through the dataset's embedding provider and stores them with the
//! document marked `ready` in one transaction, or marks it `failed` with the
//! reason. Documents left `pending` or `indexing` by a restart are picked up
//! again when the indexer starts. A document uploaded again with the same
//! title is re-indexed only if its content hash changed.
//!
//! Retrieval: hybrid by default. The store's vector search (pgvector's HNSW
//! index on PostgreSQL, an exact scan elsewhere) and its full-text search
//! (SQLite FTS5, PostgreSQL tsvector) each rank candidates; reciprocal rank
//! fusion merges the two rankings. [`SearchMode`] picks one side alone.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{
    ChunkOptions, MetadataFilter, chunk, content_hash, normalize, reciprocal_rank_fusion,
    tiktoken_counter,
};
use crate::admin::Writer;
use crate::audit::AuditWriter;
use crate::domain::*;
use crate::engine::{Caches, ChatError, ContextRetriever, Providers, Source};
use crate::provider::EmbedRequest;
use crate::store::{ChunkSearch, NewChunk, NewDocument, PageRequest, Store, StoreError};

/// Texts embedded per provider call.
const EMBED_BATCH: usize = 64;

/// A document as uploaded.
#[derive(Debug, Clone)]
pub struct DocumentUpload {
    /// Title (also what identifies the document within its dataset).
    pub title: String,
    /// Raw content.
    pub content: String,
    /// MIME type (`text/plain`, `text/markdown`, `text/html`).
    pub mime_type: String,
    /// Where it came from.
    pub source: Option<String>,
    /// Metadata (a JSON object), usable as a retrieval filter.
    pub metadata: serde_json::Value,
}

/// A document as listed: everything but its content, with its chunk count.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DocumentView {
    /// Id.
    pub id: DocumentId,
    /// Dataset.
    pub dataset_id: DatasetId,
    /// Title.
    pub title: String,
    /// Source.
    pub source: Option<String>,
    /// MIME type.
    pub mime_type: String,
    /// Metadata.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: serde_json::Value,
    /// `pending`, `indexing`, `ready` or `failed`.
    pub status: DocumentStatus,
    /// Why indexing failed.
    pub error: Option<String>,
    /// SHA-256 of the normalised content.
    pub content_hash: String,
    /// Chunks stored.
    pub chunk_count: u64,
    /// Created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Last change.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// One retrieved chunk.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchHit {
    /// The chunk.
    pub chunk_id: ChunkId,
    /// Its document.
    pub document_id: DocumentId,
    /// The document's title.
    pub title: String,
    /// Fused score (higher is better).
    pub score: f32,
    /// The chunk's text.
    pub text: String,
}

/// How a search ranks chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    /// Vector and full-text rankings fused by reciprocal rank fusion.
    #[default]
    Hybrid,
    /// Cosine similarity of embeddings only.
    Vector,
    /// Full text only.
    Text,
}

/// What a raw (non-JSON) document upload holds, known from its MIME type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    /// UTF-8 text of this MIME type (`text/plain`, `text/markdown`,
    /// `text/html`).
    Text(&'static str),
    /// A PDF, whose text is extracted.
    Pdf,
}

impl RawFormat {
    /// The format of a raw upload's MIME type (parameters such as
    /// `charset` ignored, case-insensitive), or `None` for a type that is
    /// not accepted.
    pub fn from_mime(content_type: &str) -> Option<Self> {
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match mime.as_str() {
            "text/plain" => Self::Text("text/plain"),
            "text/markdown" => Self::Text("text/markdown"),
            "text/x-markdown" => Self::Text("text/x-markdown"),
            "text/html" => Self::Text("text/html"),
            "application/pdf" => Self::Pdf,
            _ => return None,
        })
    }
}

/// Ingestion and retrieval for a tenant's datasets.
///
/// It needs the store, the built [`Providers`] (for embeddings), the audit
/// writer and the engine's [`Caches`] (a deleted dataset leaves cached
/// bots), never the chat service: the chat service is given this one as
/// its [`ContextRetriever`] when it is built ([`crate::Chatcore::builder`]).
pub struct RagService {
    store: Arc<dyn Store>,
    providers: Arc<Providers>,
    audit: AuditWriter,
    caches: Caches,
    queue: mpsc::UnboundedSender<(TenantId, DocumentId)>,
    options: ChunkOptions,
}

impl RagService {
    /// Starts the service and its indexer task, and re-queues documents a
    /// restart left unfinished.
    pub async fn start(
        store: Arc<dyn Store>,
        providers: Arc<Providers>,
        audit: AuditWriter,
        caches: Caches,
    ) -> Result<Arc<Self>, ChatError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let svc = Arc::new(Self {
            store: store.clone(),
            providers,
            audit,
            caches,
            queue: tx,
            options: ChunkOptions::default(),
        });
        for status in [DocumentStatus::Indexing, DocumentStatus::Pending] {
            for d in store.documents_in_status(status, 10_000).await? {
                let _ = svc.queue.send((d.tenant_id, d.id));
            }
        }
        let weak = Arc::downgrade(&svc);
        tokio::spawn(indexer(weak, rx));
        Ok(svc)
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Stores a document (or finds it unchanged) and queues it for indexing.
    async fn upload(
        &self,
        tenant: TenantId,
        dataset: DatasetId,
        up: DocumentUpload,
    ) -> Result<Document, ChatError> {
        crate::text::check_text("content", &up.content)?;
        crate::text::check_text("mime_type", &up.mime_type)?;
        let text = normalize(&up.content, &up.mime_type)
            .map_err(|e| ChatError::InvalidRequest(format!("mime_type: {e}")))?;
        self.store_upload(tenant, dataset, up, text).await
    }

    /// Stores a PDF's text (extracted off the async threads; a PDF the
    /// extractor cannot read is a 400-class error naming the body) and
    /// queues it for indexing, like [`RagService::upload`].
    async fn upload_pdf(
        &self,
        tenant: TenantId,
        dataset: DatasetId,
        title: String,
        pdf: Vec<u8>,
        source: Option<String>,
        metadata: serde_json::Value,
    ) -> Result<Document, ChatError> {
        let extracted = tokio::task::spawn_blocking(move || super::pdf_text(&pdf))
            .await
            .map_err(|e| ChatError::internal_from("the PDF extraction task failed", e))?
            .map_err(|e| ChatError::InvalidRequest(format!("body: {e}")))?;
        let text = normalize(&extracted, "text/plain")
            .map_err(|e| ChatError::InvalidRequest(format!("body: {e}")))?;
        let up = DocumentUpload {
            title,
            content: String::new(),
            mime_type: "application/pdf".into(),
            source,
            metadata,
        };
        self.store_upload(tenant, dataset, up, text).await
    }

    /// [`RagService::upload_pdf`] for an admin caller (audited).
    pub async fn upload_pdf_as(
        &self,
        caller: Writer<'_>,
        dataset: DatasetId,
        title: String,
        pdf: Vec<u8>,
    ) -> Result<DocumentView, ChatError> {
        let d = self
            .upload_pdf(
                caller.tenant,
                dataset,
                title,
                pdf,
                None,
                serde_json::json!({}),
            )
            .await?;
        self.audit(caller, "document.uploaded", "document", d.id)
            .await;
        self.view(d).await
    }

    /// Stores `text` (the upload's normalised content) as a document, or
    /// finds it unchanged, and queues it for indexing.
    async fn store_upload(
        &self,
        tenant: TenantId,
        dataset: DatasetId,
        up: DocumentUpload,
        text: String,
    ) -> Result<Document, ChatError> {
        crate::text::check_text("title", &up.title)?;
        crate::text::check_opt("source", up.source.as_deref())?;
        crate::text::check_json("metadata", &up.metadata)?;
        crate::text::check_text("content", &text)?;
        if up.title.trim().is_empty() {
            return Err(ChatError::InvalidRequest("title: must not be empty".into()));
        }
        if !up.metadata.is_object() {
            return Err(ChatError::InvalidRequest(
                "metadata: must be a JSON object".into(),
            ));
        }
        if text.trim().is_empty() {
            return Err(ChatError::InvalidRequest(
                "content: no text in the document".into(),
            ));
        }
        let hash = content_hash(&text);
        self.store().get_dataset(tenant, dataset).await?;
        // Same title, same content: nothing to do. Same title, new content:
        // replace it (its chunks go with the old row), in one transaction
        // with the new row: a failed upload leaves the old one untouched.
        let mut replaced = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .store()
                .list_documents(
                    tenant,
                    dataset,
                    crate::store::PageRequest {
                        limit: 200,
                        cursor: cursor.clone(),
                    },
                )
                .await?;
            for d in page.data {
                if d.title == up.title {
                    if d.content_hash == hash && d.status != DocumentStatus::Failed {
                        return Ok(d);
                    }
                    replaced.push(d.id);
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let doc = self
            .store()
            .replace_document(
                tenant,
                NewDocument {
                    dataset_id: dataset,
                    title: up.title,
                    source: up.source,
                    mime_type: up.mime_type,
                    metadata: up.metadata,
                    content: text,
                    content_hash: hash,
                },
                &replaced,
            )
            .await?;
        let _ = self.queue.send((tenant, doc.id));
        Ok(doc)
    }

    /// Creates a dataset; without a dimension, the provider is asked for one
    /// embedding to learn it.
    pub async fn create_dataset(
        &self,
        caller: Writer<'_>,
        name: String,
        provider_id: ProviderConfigId,
        embedding_model: Option<String>,
        embedding_dim: Option<i32>,
    ) -> Result<Dataset, ChatError> {
        crate::text::check_text("name", &name)?;
        crate::text::check_opt("embedding_model", embedding_model.as_deref())?;
        if name.trim().is_empty() {
            return Err(ChatError::InvalidRequest("name: must not be empty".into()));
        }
        let tenant = caller.tenant;
        let cfg = self
            .store()
            .get_provider_config(tenant, provider_id)
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => ChatError::NotFound("provider_id: provider"),
                e => e.into(),
            })?;
        let entry = self.store().get_catalog_entry(&cfg.provider).await?;
        let model = embedding_model
            .or(entry.default_embedding_model)
            .ok_or_else(|| {
                ChatError::InvalidRequest("embedding_model: required for this provider".into())
            })?;
        let dim = match embedding_dim {
            Some(d) if (1..=16_000).contains(&d) => d,
            Some(_) => {
                return Err(ChatError::InvalidRequest(
                    "embedding_dim: must be 1 to 16000".into(),
                ));
            }
            None => {
                let provider = self.providers.get(tenant, provider_id).await?;
                let probe = provider
                    .embed(
                        &EmbedRequest::new(vec!["dimension probe".into()])
                            .with_model(model.clone()),
                    )
                    .await?;
                probe
                    .vectors
                    .first()
                    .map(|v| v.len() as i32)
                    .filter(|d| *d > 0)
                    .ok_or_else(|| {
                        ChatError::InvalidRequest(
                            "embedding_model: the provider returned no embedding".into(),
                        )
                    })?
            }
        };
        let ds = self
            .store()
            .create_dataset(
                tenant,
                crate::store::NewDataset {
                    name,
                    provider_id,
                    embedding_model: model,
                    embedding_dim: dim,
                },
            )
            .await?;
        self.audit(caller, "dataset.created", "dataset", ds.id)
            .await;
        Ok(ds)
    }

    async fn audit(&self, caller: Writer<'_>, action: &str, kind: &str, id: impl ToString) {
        let mut r =
            AuditRecord::new(Some(caller.tenant), caller.actor.clone(), action).resource(kind, id);
        r.request_id = caller.request_id.clone();
        r.ip = caller.ip.clone();
        self.audit.record(r).await;
    }

    /// A document without its content, with its chunk count.
    pub async fn view(&self, d: Document) -> Result<DocumentView, ChatError> {
        let chunk_count = self.store().count_chunks(d.tenant_id, d.id).await?;
        Ok(DocumentView {
            id: d.id,
            dataset_id: d.dataset_id,
            title: d.title,
            source: d.source,
            mime_type: d.mime_type,
            metadata: d.metadata,
            status: d.status,
            error: d.error,
            content_hash: d.content_hash,
            chunk_count,
            created_at: d.created_at,
            updated_at: d.updated_at,
        })
    }

    /// Uploads a document for an admin caller (audited).
    pub async fn upload_as(
        &self,
        caller: Writer<'_>,
        dataset: DatasetId,
        up: DocumentUpload,
    ) -> Result<DocumentView, ChatError> {
        let d = self.upload(caller.tenant, dataset, up).await?;
        self.audit(caller, "document.uploaded", "document", d.id)
            .await;
        self.view(d).await
    }

    /// Deletes a dataset for an admin caller (audited).
    pub async fn delete_dataset_as(
        &self,
        caller: Writer<'_>,
        id: DatasetId,
    ) -> Result<(), ChatError> {
        self.delete_dataset(caller.tenant, id).await?;
        self.audit(caller, "dataset.deleted", "dataset", id).await;
        Ok(())
    }

    /// Deletes a document for an admin caller (audited).
    pub async fn delete_document_as(
        &self,
        caller: Writer<'_>,
        id: DocumentId,
    ) -> Result<(), ChatError> {
        self.delete_document(caller.tenant, id).await?;
        self.audit(caller, "document.deleted", "document", id).await;
        Ok(())
    }

    /// A raw (non-JSON) upload of `format` for an admin caller (audited):
    /// text is taken as UTF-8, a PDF's text is extracted; the title is
    /// required, since a raw body carries none.
    pub async fn upload_raw_as(
        &self,
        caller: Writer<'_>,
        dataset: DatasetId,
        format: RawFormat,
        title: Option<String>,
        body: Vec<u8>,
    ) -> Result<DocumentView, ChatError> {
        let title = title.ok_or_else(|| {
            ChatError::InvalidRequest("title: required as ?title= with a raw upload".into())
        })?;
        match format {
            RawFormat::Pdf => self.upload_pdf_as(caller, dataset, title, body).await,
            RawFormat::Text(mime) => {
                let content = String::from_utf8(body)
                    .map_err(|_| ChatError::InvalidRequest("body: not UTF-8 text".into()))?;
                let up = DocumentUpload {
                    title,
                    content,
                    mime_type: mime.into(),
                    source: None,
                    metadata: serde_json::json!({}),
                };
                self.upload_as(caller, dataset, up).await
            }
        }
    }

    /// A page of the caller's datasets.
    pub async fn list_datasets_as(
        &self,
        caller: &crate::admin::AdminCaller,
        page: PageRequest,
    ) -> Result<crate::admin::List<Dataset>, ChatError> {
        let p = self.store().list_datasets(caller.tenant, page).await?;
        Ok(crate::admin::List {
            data: p.data,
            next_cursor: p.next_cursor,
        })
    }

    /// One of the caller's datasets.
    pub async fn get_dataset_as(
        &self,
        caller: &crate::admin::AdminCaller,
        id: DatasetId,
    ) -> Result<Dataset, ChatError> {
        Ok(self.store().get_dataset(caller.tenant, id).await?)
    }

    /// A page of a dataset's documents (404 when the dataset is not the
    /// caller's), each with its chunk count.
    pub async fn list_documents_as(
        &self,
        caller: &crate::admin::AdminCaller,
        dataset: DatasetId,
        page: PageRequest,
    ) -> Result<crate::admin::List<DocumentView>, ChatError> {
        self.store().get_dataset(caller.tenant, dataset).await?;
        let p = self
            .store()
            .list_documents(caller.tenant, dataset, page)
            .await?;
        let mut data = Vec::with_capacity(p.data.len());
        for doc in p.data {
            data.push(self.view(doc).await?);
        }
        Ok(crate::admin::List {
            data,
            next_cursor: p.next_cursor,
        })
    }

    /// One of the caller's documents, with its chunk count.
    pub async fn get_document_as(
        &self,
        caller: &crate::admin::AdminCaller,
        id: DocumentId,
    ) -> Result<DocumentView, ChatError> {
        let doc = self.store().get_document(caller.tenant, id).await?;
        self.view(doc).await
    }

    /// Tries retrieval on one of the caller's datasets (404 when it is not
    /// theirs): `top_k` 1 to 100 (default 5), hybrid ranking by default.
    pub async fn search_as(
        &self,
        caller: &crate::admin::AdminCaller,
        dataset: DatasetId,
        query: &str,
        top_k: Option<usize>,
        filter: &MetadataFilter,
        mode: SearchMode,
    ) -> Result<Vec<SearchHit>, ChatError> {
        let top_k = top_k.unwrap_or(5);
        if !(1..=100).contains(&top_k) {
            return Err(ChatError::InvalidRequest(
                "top_k: must be between 1 and 100".into(),
            ));
        }
        self.store().get_dataset(caller.tenant, dataset).await?;
        self.search_with(caller.tenant, &[dataset], query, top_k, filter, mode)
            .await
    }

    /// Deletes a document and its chunks.
    async fn delete_document(&self, tenant: TenantId, id: DocumentId) -> Result<(), ChatError> {
        self.store().delete_document(tenant, id).await?;
        Ok(())
    }

    /// Deletes a dataset with its documents.
    async fn delete_dataset(&self, tenant: TenantId, id: DatasetId) -> Result<(), ChatError> {
        self.store().delete_dataset(tenant, id).await?;
        self.caches.invalidate_tenant(tenant);
        Ok(())
    }

    /// Indexes one document now (the indexer calls this).
    async fn index_document(&self, tenant: TenantId, id: DocumentId) -> Result<(), ChatError> {
        let doc = match self.store().get_document(tenant, id).await {
            Ok(d) => d,
            // Deleted while queued.
            Err(StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        self.store()
            .set_document_status(tenant, id, DocumentStatus::Indexing, None)
            .await?;
        let result = self.build_chunks(&doc).await;
        match result {
            Ok(chunks) => {
                self.store().replace_chunks(tenant, id, chunks).await?;
                Ok(())
            }
            Err(e) => {
                let reason = e.public_message();
                tracing::warn!(document = %id, error = %crate::error::Report(&e), "indexing failed");
                self.store()
                    .set_document_status(tenant, id, DocumentStatus::Failed, Some(reason))
                    .await?;
                Ok(())
            }
        }
    }

    async fn build_chunks(&self, doc: &Document) -> Result<Vec<NewChunk>, ChatError> {
        let ds = self
            .store()
            .get_dataset(doc.tenant_id, doc.dataset_id)
            .await?;
        let counter = tiktoken_counter();
        let text = doc.content.clone();
        let opts = self.options;
        let pieces = tokio::task::spawn_blocking(move || chunk(&text, &opts, &counter))
            .await
            .map_err(|e| ChatError::internal_from("chunking panicked", e))?;
        let provider = self.providers.get(doc.tenant_id, ds.provider_id).await?;
        let mut out = Vec::with_capacity(pieces.len());
        for batch in pieces.chunks(EMBED_BATCH) {
            let req = EmbedRequest::new(batch.iter().map(|c| c.text.clone()).collect())
                .with_model(ds.embedding_model.clone());
            let resp = provider.embed(&req).await?;
            if resp.vectors.len() != batch.len() {
                return Err(ChatError::internal(format!(
                    "the embedding provider returned {} vectors for {} texts",
                    resp.vectors.len(),
                    batch.len()
                )));
            }
            for (c, v) in batch.iter().zip(resp.vectors) {
                if v.len() != ds.embedding_dim as usize {
                    return Err(ChatError::InvalidRequest(format!(
                        "embedding dimension {} does not match the dataset's {}",
                        v.len(),
                        ds.embedding_dim
                    )));
                }
                out.push(NewChunk {
                    ordinal: c.ordinal as i32,
                    text: c.text.clone(),
                    token_count: c.token_count as i32,
                    embedding: Some(v),
                });
            }
        }
        Ok(out)
    }

    /// Search over `datasets` (those that are not the tenant's, or gone,
    /// are ignored): the top `k` chunks among documents matching `filter`,
    /// ranked as `mode` says (hybrid: reciprocal rank fusion of the vector
    /// and full-text rankings).
    pub async fn search(
        &self,
        tenant: TenantId,
        datasets: &[DatasetId],
        query: &str,
        k: usize,
        filter: &MetadataFilter,
    ) -> Result<Vec<SearchHit>, ChatError> {
        self.search_with(tenant, datasets, query, k, filter, SearchMode::Hybrid)
            .await
    }

    /// [`RagService::search`] with a chosen ranking.
    pub async fn search_with(
        &self,
        tenant: TenantId,
        datasets: &[DatasetId],
        query: &str,
        k: usize,
        filter: &MetadataFilter,
        mode: SearchMode,
    ) -> Result<Vec<SearchHit>, ChatError> {
        crate::text::check_text("query", query)?;
        if query.trim().is_empty() {
            return Err(ChatError::InvalidRequest("query: must not be empty".into()));
        }
        let k = k.clamp(1, 100);
        let mut found: Vec<Dataset> = Vec::new();
        for &ds_id in datasets {
            match self.store().get_dataset(tenant, ds_id).await {
                Ok(ds) => found.push(ds),
                // Deleted meanwhile (a cached bot may still list it).
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<DatasetId> = found.iter().map(|d| d.id).collect();
        let allowed = if filter.is_empty() {
            None
        } else {
            let docs = self.matching_documents(tenant, &ids, filter).await?;
            if docs.is_empty() {
                return Ok(Vec::new());
            }
            Some(docs)
        };
        // Each side contributes more candidates than asked, so that fusion
        // can promote a chunk ranked well by both.
        let candidates = k * 4;
        let mut vector_ranked: Vec<(ChunkId, f32)> = Vec::new();
        if mode != SearchMode::Text {
            // One query embedding per (provider, model) among the datasets.
            let mut groups: HashMap<(ProviderConfigId, String), Vec<DatasetId>> = HashMap::new();
            for ds in &found {
                groups
                    .entry((ds.provider_id, ds.embedding_model.clone()))
                    .or_default()
                    .push(ds.id);
            }
            for ((provider_id, model), group) in groups {
                let provider = self.providers.get(tenant, provider_id).await?;
                let q = provider
                    .embed(&EmbedRequest::new(vec![query.to_string()]).with_model(model))
                    .await?;
                let Some(qv) = q.vectors.first() else {
                    continue;
                };
                let hits = self
                    .store()
                    .search_chunks_by_vector(
                        tenant,
                        ChunkSearch {
                            datasets: &group,
                            documents: allowed.as_deref(),
                            limit: candidates,
                        },
                        qv,
                    )
                    .await?;
                vector_ranked.extend(hits.into_iter().map(|h| (h.chunk_id, h.score)));
            }
            vector_ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            vector_ranked.truncate(candidates);
        }
        let text_ranked: Vec<(ChunkId, f32)> = if mode != SearchMode::Vector {
            self.store()
                .search_chunks_by_text(
                    tenant,
                    ChunkSearch {
                        datasets: &ids,
                        documents: allowed.as_deref(),
                        limit: candidates,
                    },
                    query,
                )
                .await?
                .into_iter()
                .map(|h| (h.chunk_id, h.score))
                .collect()
        } else {
            Vec::new()
        };
        let ranked: Vec<(ChunkId, f32)> = match mode {
            SearchMode::Vector => vector_ranked,
            SearchMode::Text => text_ranked,
            SearchMode::Hybrid => reciprocal_rank_fusion(
                &[
                    vector_ranked.into_iter().map(|(id, _)| id).collect(),
                    text_ranked.into_iter().map(|(id, _)| id).collect(),
                ],
                60.0,
            ),
        };
        let top: Vec<(ChunkId, f32)> = ranked.into_iter().take(k).collect();
        let ids: Vec<ChunkId> = top.iter().map(|(id, _)| *id).collect();
        let mut hits: HashMap<ChunkId, crate::store::ChunkHit> = self
            .store()
            .chunk_hits(tenant, &ids)
            .await?
            .into_iter()
            .map(|h| (h.chunk_id, h))
            .collect();
        Ok(top
            .into_iter()
            .filter_map(|(id, score)| {
                hits.remove(&id).map(|h| SearchHit {
                    chunk_id: h.chunk_id,
                    document_id: h.document_id,
                    title: h.title,
                    score,
                    text: h.text,
                })
            })
            .collect())
    }

    /// Ids of the documents of `datasets` whose metadata matches `filter`.
    async fn matching_documents(
        &self,
        tenant: TenantId,
        datasets: &[DatasetId],
        filter: &MetadataFilter,
    ) -> Result<Vec<DocumentId>, ChatError> {
        let mut out = Vec::new();
        for &dataset in datasets {
            let mut cursor = None;
            loop {
                let page = self
                    .store()
                    .list_documents(
                        tenant,
                        dataset,
                        PageRequest {
                            limit: PageRequest::MAX_LIMIT,
                            cursor: cursor.take(),
                        },
                    )
                    .await?;
                out.extend(
                    page.data
                        .iter()
                        .filter(|d| filter.matches(&d.metadata))
                        .map(|d| d.id),
                );
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ContextRetriever for RagService {
    async fn retrieve(
        &self,
        tenant: TenantId,
        datasets: &[DatasetId],
        query: &str,
        top_k: usize,
    ) -> Result<Vec<Source>, ChatError> {
        let hits = self
            .search(tenant, datasets, query, top_k, &MetadataFilter::new())
            .await?;
        Ok(hits
            .into_iter()
            .map(|h| Source {
                document_id: h.document_id,
                title: h.title,
                chunk_id: h.chunk_id,
                score: h.score,
                snippet: h.text.chars().take(200).collect(),
                text: h.text,
            })
            .collect())
    }
}

async fn indexer(
    svc: std::sync::Weak<RagService>,
    mut rx: mpsc::UnboundedReceiver<(TenantId, DocumentId)>,
) {
    while let Some((tenant, id)) = rx.recv().await {
        let Some(svc) = svc.upgrade() else { return };
        if let Err(e) = svc.index_document(tenant, id).await {
            tracing::error!(document = %id, error = %crate::error::Report(&e), "indexing could not record its outcome");
        }
    }
}
