//! Datasets, documents and retrieval (`/v1/datasets`, `/v1/documents`):
//! HTTP in, [`chatcore::rag::RagService`] calls, JSON out.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use chatcore::admin::List;
use chatcore::domain::{Dataset, DatasetId, DocumentId, ProviderConfigId};
use chatcore::rag::{
    DocumentUpload, DocumentView, MetadataFilter, RawFormat, SearchHit, SearchMode,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::App;
use crate::admin::{NoQuery, PageQuery};
use crate::auth::TenantCaller;
use crate::http::{
    ApiError, Id, Json, Query, created, mime, no_content, ok, parse_json, read_body,
};

type Reply = Result<Response, ApiError>;

/// `POST /v1/datasets`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDataset {
    /// Display name.
    #[schema(min_length = 1)]
    pub name: String,
    /// The provider configuration that embeds (it must support embeddings).
    pub provider_id: ProviderConfigId,
    /// Embedding model (default: the provider's).
    #[serde(default)]
    pub embedding_model: Option<String>,
    /// Embedding dimension, 1 to 16000 (default: learned from the provider).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 16000)]
    pub embedding_dim: Option<i32>,
}

/// `POST /v1/datasets/{id}/documents` as JSON.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadDocument {
    /// Title (identifies the document within its dataset).
    pub title: String,
    /// The raw content.
    pub content: String,
    /// `text/plain` (default), `text/markdown` or `text/html`.
    #[serde(default)]
    pub mime_type: Option<String>,
    /// Where it came from (URL, file name).
    #[serde(default)]
    pub source: Option<String>,
    /// Metadata (a JSON object), usable as a search filter.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// `POST /v1/datasets/{id}/search`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// What to look for.
    pub query: String,
    /// How many chunks (default 5; 1 to 100).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub top_k: Option<usize>,
    /// Equality conditions on top-level metadata keys, e.g. `{"lang": "en"}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<MetadataFilter>,
    /// How to rank: `hybrid` (default: vector and full-text rankings fused),
    /// `vector` or `text` alone.
    #[serde(default)]
    pub mode: Option<SearchMode>,
}

/// The reply of a search: the best chunks, best first.
#[derive(Serialize, ToSchema)]
pub struct SearchResult {
    /// The hits.
    pub data: Vec<SearchHit>,
}

/// The title of a raw (non-JSON) document upload.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Title; required with a raw `text/*` or PDF body.
    pub title: Option<String>,
}

/// Create a dataset (embedding provider, model, dimension)
#[utoipa::path(post, path = "/v1/datasets", tag = "datasets", request_body = CreateDataset,
    security(("apiKey" = ["admin"])),
    responses((status = 201, description = "The dataset", body = Dataset)))]
pub async fn create_dataset(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Json(b): Json<CreateDataset>,
) -> Reply {
    let ds = app
        .rag
        .create_dataset(
            c.writer()?,
            b.name,
            b.provider_id,
            b.embedding_model,
            b.embedding_dim,
        )
        .await?;
    Ok(created(&ds))
}

/// List datasets
#[utoipa::path(get, path = "/v1/datasets", tag = "datasets", params(PageQuery),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "A page of datasets", body = List<Dataset>)))]
pub async fn list_datasets(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    Query(q): Query<PageQuery>,
) -> Reply {
    Ok(ok(&app.rag.list_datasets_as(&c, q.page()?).await?))
}

/// Get a dataset
#[utoipa::path(get, path = "/v1/datasets/{id}", tag = "datasets",
    params(("id" = DatasetId, Path, description = "Dataset id")),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The dataset", body = Dataset)))]
pub async fn get_dataset(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<DatasetId>,
) -> Reply {
    Ok(ok(&app.rag.get_dataset_as(&c, id).await?))
}

/// Delete a dataset with its documents
#[utoipa::path(delete, path = "/v1/datasets/{id}", tag = "datasets",
    params(("id" = DatasetId, Path, description = "Dataset id")),
    security(("apiKey" = ["admin"])),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_dataset(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<DatasetId>,
) -> Reply {
    app.rag.delete_dataset_as(c.writer()?, id).await?;
    Ok(no_content())
}

/// Upload a document; it is indexed in the background
///
/// JSON, or a raw `text/plain`, `text/markdown`, `text/html` or
/// `application/pdf` body with `?title=`. The reply's `status` moves from `pending` through `indexing`
/// to `ready` or `failed` (with `error`).
#[utoipa::path(post, path = "/v1/datasets/{id}/documents", tag = "datasets",
    params(("id" = DatasetId, Path, description = "Dataset id"), UploadQuery),
    request_body(content(
        (UploadDocument = "application/json"),
        (String = "text/plain"),
        (String = "text/markdown"),
        (String = "text/html"),
        (String = "application/pdf"),
    )),
    security(("apiKey" = ["admin"])),
    responses((status = 201, description = "The document, pending", body = DocumentView)))]
pub async fn upload_document(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    Id(d): Id<DatasetId>,
    Query(q): Query<UploadQuery>,
    req: Request,
) -> Reply {
    let w = c.writer()?;
    let (parts, body) = req.into_parts();
    let mime = mime(&parts.headers);
    let view = if mime == "application/json" {
        let bytes = read_body(body).await?;
        let u: UploadDocument = parse_json(&parts.headers, &bytes)?;
        let up = DocumentUpload {
            title: u.title,
            content: u.content,
            mime_type: u.mime_type.unwrap_or_else(|| "text/plain".into()),
            source: u.source,
            metadata: u.metadata.unwrap_or_else(|| serde_json::json!({})),
        };
        app.rag.upload_as(w, d, up).await?
    } else {
        let format = RawFormat::from_mime(&mime).ok_or_else(|| {
            ApiError::unsupported_media_type(
                "send application/json, or a raw text/plain, text/markdown, text/html or application/pdf body",
            )
        })?;
        let bytes = read_body(body).await?;
        app.rag
            .upload_raw_as(w, d, format, q.title, bytes.to_vec())
            .await?
    };
    Ok(created(&view))
}

/// List a dataset's documents with status and chunk count
#[utoipa::path(get, path = "/v1/datasets/{id}/documents", tag = "datasets",
    params(("id" = DatasetId, Path, description = "Dataset id"), PageQuery),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "A page of documents", body = List<DocumentView>)))]
pub async fn list_documents(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    Id(d): Id<DatasetId>,
    Query(q): Query<PageQuery>,
) -> Reply {
    Ok(ok(&app.rag.list_documents_as(&c, d, q.page()?).await?))
}

/// Try retrieval: hybrid (vector and full text, fused by RRF) by default,
/// or one side alone with `mode`
#[utoipa::path(post, path = "/v1/datasets/{id}/search", tag = "datasets",
    params(("id" = DatasetId, Path, description = "Dataset id")), request_body = Search,
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The best chunks, best first", body = SearchResult)))]
pub async fn search_dataset(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(d): Id<DatasetId>,
    Json(s): Json<Search>,
) -> Reply {
    let hits = app
        .rag
        .search_as(
            &c,
            d,
            &s.query,
            s.top_k,
            &s.filter.unwrap_or_default(),
            s.mode.unwrap_or_default(),
        )
        .await?;
    Ok(ok(&SearchResult { data: hits }))
}

/// Get a document (status, failure reason, chunk count)
#[utoipa::path(get, path = "/v1/documents/{id}", tag = "datasets",
    params(("id" = DocumentId, Path, description = "Document id")),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The document", body = DocumentView)))]
pub async fn get_document(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<DocumentId>,
) -> Reply {
    Ok(ok(&app.rag.get_document_as(&c, id).await?))
}

/// Delete a document and its chunks
#[utoipa::path(delete, path = "/v1/documents/{id}", tag = "datasets",
    params(("id" = DocumentId, Path, description = "Document id")),
    security(("apiKey" = ["admin"])),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_document(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<DocumentId>,
) -> Reply {
    app.rag.delete_document_as(c.writer()?, id).await?;
    Ok(no_content())
}
