//! The router: maps method and path to a handler, adds the request id.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::http::{ApiError, Body, json_response};
use crate::{App, chat};

/// The request id: the caller's `x-request-id` when it is short and plain,
/// else a fresh UUIDv7.
fn request_id(req: &Request<Incoming>) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// Handles one request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let rid = request_id(&req);
    let result = route(&app, req, peer, &rid).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => e.into_response(&rid),
    };
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn route(
    app: &Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    rid: &str,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::POST, "/v1/chat/public") => chat::handle(app, req, peer, rid, true).await,
        (&Method::OPTIONS, "/v1/chat/public") => Ok(chat::preflight(req.headers())),
        (&Method::POST, "/v1/chat") => chat::handle(app, req, peer, rid, false).await,
        (_, "/v1/chat" | "/v1/chat/public") => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use POST",
        )),
        (&Method::GET, "/healthz") => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
        )),
        (&Method::GET, "/readyz") => match app.store.ping().await {
            Ok(()) => Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ready"}),
            )),
            Err(e) => {
                tracing::warn!(error = %e, "readiness check failed");
                Err(ApiError::unavailable("database unreachable"))
            }
        },
        (_, "/healthz" | "/readyz") => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        )),
        _ => Err(ApiError::not_found("route")),
    }
}
