//! Datasets, documents and retrieval (`/v1/datasets`, `/v1/documents`):
//! HTTP in, [`chatcore::rag::RagService`] calls, JSON out.

use std::net::SocketAddr;
use std::sync::Arc;

use chatcore::domain::{DatasetId, DocumentId, ProviderConfigId};
use chatcore::rag::{DocumentUpload, MetadataFilter, SearchMode};
use http::{Method, Request, Response, header};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::App;
use crate::admin::{Query, created, id, no_content, ok, tenant_admin};
use crate::http::{ApiError, Body, parse_json, read_body};
use crate::routes::Matched;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateDataset {
    name: String,
    provider_id: ProviderConfigId,
    #[serde(default)]
    embedding_model: Option<String>,
    #[serde(default)]
    embedding_dim: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadDocument {
    title: String,
    content: String,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Search {
    query: String,
    #[serde(default)]
    top_k: Option<usize>,
    #[serde(default)]
    filter: Option<MetadataFilter>,
    #[serde(default)]
    mode: Option<SearchMode>,
}

/// Handles a dataset or document route.
pub async fn handle(
    app: &Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    rid: &str,
    m: Matched,
) -> Result<Response<Body>, ApiError> {
    let c = tenant_admin(app, &req, peer, rid).await?;
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
            Ok(ok(
                &serde_json::json!({"data": p.data, "next_cursor": p.next_cursor}),
            ))
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
            Ok(ok(
                &serde_json::json!({"data": data, "next_cursor": p.next_cursor}),
            ))
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
            Ok(ok(&serde_json::json!({"data": hits})))
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
