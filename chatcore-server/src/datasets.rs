//! Datasets, documents and retrieval (`/v1/datasets`, `/v1/documents`):
//! HTTP in, [`chatcore::rag::RagService`] calls, JSON out.

use std::net::SocketAddr;
use std::sync::Arc;

use chatcore::admin::List;
use chatcore::domain::{DatasetId, DocumentId, ProviderConfigId};
use chatcore::rag::{DocumentUpload, MetadataFilter, SearchHit, SearchMode};
use http::{Method, Request, Response, header};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::App;
use crate::admin::{Query, created, id, no_content, ok, tenant_admin};
use crate::http::{ApiError, Body, parse_json, read_body};
use crate::routes::Matched;

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

/// Handles a dataset or document route.
pub async fn handle(
    app: &Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    rid: &str,
    m: Matched,
) -> Result<Response<Body>, ApiError> {
    let c = tenant_admin(app, &req, peer, rid, &m).await?;
    let rag = &app.rag;
    let store = &app.store;
    let mut q = Query::parse(req.uri());
    match (req.method(), m.pattern) {
        (&Method::POST, "/v1/datasets") => {
            q.finish()?;
            let b: CreateDataset = json_body(app, req).await?;
            Ok(created(
                &rag.create_dataset(
                    &c,
                    b.name,
                    b.provider_id,
                    b.embedding_model,
                    b.embedding_dim,
                )
                .await?,
            ))
        }
        (&Method::GET, "/v1/datasets") => {
            let page = q.page()?;
            q.finish()?;
            let p = store
                .list_datasets(c.tenant, page)
                .await
                .map_err(chat_err)?;
            Ok(ok(&List {
                data: p.data,
                next_cursor: p.next_cursor,
            }))
        }
        (&Method::GET, "/v1/datasets/{id}") => {
            q.finish()?;
            let d: DatasetId = id(&m, "dataset")?;
            Ok(ok(&store
                .get_dataset(c.tenant, d)
                .await
                .map_err(chat_err)?))
        }
        (&Method::DELETE, "/v1/datasets/{id}") => {
            q.finish()?;
            let d: DatasetId = id(&m, "dataset")?;
            rag.delete_dataset_as(&c, d).await?;
            Ok(no_content())
        }
        (&Method::POST, "/v1/datasets/{id}/documents") => {
            let d: DatasetId = id(&m, "dataset")?;
            let title = q.take("title")?;
            q.finish()?;
            let (parts, b) = req.into_parts();
            let bytes = read_body(b, app.config.max_upload_bytes).await?;
            let ct = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let upload = if mime == "application/json" {
                let u: UploadDocument = parse_json(&parts.headers, &bytes)?;
                DocumentUpload {
                    title: u.title,
                    content: u.content,
                    mime_type: u.mime_type.unwrap_or_else(|| "text/plain".into()),
                    source: u.source,
                    metadata: u.metadata.unwrap_or_else(|| serde_json::json!({})),
                }
            } else if [
                "text/plain",
                "text/markdown",
                "text/x-markdown",
                "text/html",
            ]
            .contains(&mime.as_str())
            {
                let content = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::new(
                        http::StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "body: not UTF-8 text",
                    )
                })?;
                DocumentUpload {
                    title: title.ok_or_else(|| {
                        ApiError::new(
                            http::StatusCode::BAD_REQUEST,
                            "invalid_request",
                            "title: required as ?title= with a raw upload",
                        )
                    })?,
                    content,
                    mime_type: mime,
                    source: None,
                    metadata: serde_json::json!({}),
                }
            } else if mime == "application/pdf" {
                let title = title.ok_or_else(|| {
                    ApiError::new(
                        http::StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "title: required as ?title= with a raw upload",
                    )
                })?;
                return Ok(created(
                    &rag.upload_pdf_as(&c, d, title, bytes.to_vec()).await?,
                ));
            } else {
                return Err(ApiError::new(
                    http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send application/json, or a raw text/plain, text/markdown, text/html or application/pdf body",
                ));
            };
            Ok(created(&rag.upload_as(&c, d, upload).await?))
        }
        (&Method::GET, "/v1/datasets/{id}/documents") => {
            let d: DatasetId = id(&m, "dataset")?;
            let page = q.page()?;
            q.finish()?;
            store.get_dataset(c.tenant, d).await.map_err(chat_err)?;
            let p = store
                .list_documents(c.tenant, d, page)
                .await
                .map_err(chat_err)?;
            let mut data = Vec::with_capacity(p.data.len());
            for doc in p.data {
                data.push(rag.view(doc).await?);
            }
            Ok(ok(&List {
                data,
                next_cursor: p.next_cursor,
            }))
        }
        (&Method::POST, "/v1/datasets/{id}/search") => {
            q.finish()?;
            let d: DatasetId = id(&m, "dataset")?;
            let s: Search = json_body(app, req).await?;
            let top_k = s.top_k.unwrap_or(5);
            if !(1..=100).contains(&top_k) {
                return Err(ApiError::new(
                    http::StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "top_k: must be between 1 and 100",
                ));
            }
            store.get_dataset(c.tenant, d).await.map_err(chat_err)?;
            let hits = rag
                .search_with(
                    c.tenant,
                    &[d],
                    &s.query,
                    top_k,
                    &s.filter.unwrap_or_default(),
                    s.mode.unwrap_or_default(),
                )
                .await?;
            Ok(ok(&SearchResult { data: hits }))
        }
        (&Method::GET, "/v1/documents/{id}") => {
            q.finish()?;
            let d: DocumentId = id(&m, "document")?;
            let doc = store.get_document(c.tenant, d).await.map_err(chat_err)?;
            Ok(ok(&rag.view(doc).await?))
        }
        (&Method::DELETE, "/v1/documents/{id}") => {
            q.finish()?;
            let d: DocumentId = id(&m, "document")?;
            rag.delete_document_as(&c, d).await?;
            Ok(no_content())
        }
        _ => Err(ApiError::not_found("route")),
    }
}

fn chat_err(e: chatcore::store::StoreError) -> ApiError {
    ApiError::from(chatcore::engine::ChatError::from(e))
}

async fn json_body<T: serde::de::DeserializeOwned>(
    app: &App,
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let (parts, b) = req.into_parts();
    let bytes = read_body(b, app.config.max_body_bytes).await?;
    parse_json(&parts.headers, &bytes)
}
