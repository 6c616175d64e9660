//! The router: one route table ([`ROUTES`]), which the dispatcher, the
//! OpenAPI document's test and the metrics labels all use; the request id.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::http::{ApiError, Body, json_response};
use crate::{App, admin, chat};

/// Every route the server answers: method and path pattern, `{id}` standing
/// for one path segment.
pub const ROUTES: &[(Method, &str)] = &[
    (Method::POST, "/v1/chat/public"),
    (Method::OPTIONS, "/v1/chat/public"),
    (Method::POST, "/v1/chat"),
    (Method::GET, "/healthz"),
    (Method::GET, "/readyz"),
    (Method::GET, "/metrics"),
    (Method::GET, "/openapi.json"),
    // operator
    (Method::POST, "/v1/admin/tenants"),
    (Method::GET, "/v1/admin/tenants"),
    (Method::GET, "/v1/admin/tenants/{id}"),
    (Method::PATCH, "/v1/admin/tenants/{id}"),
    // tenant admin
    (Method::GET, "/v1/providers/catalog"),
    (Method::POST, "/v1/providers"),
    (Method::GET, "/v1/providers"),
    (Method::GET, "/v1/providers/{id}"),
    (Method::PATCH, "/v1/providers/{id}"),
    (Method::DELETE, "/v1/providers/{id}"),
    (Method::POST, "/v1/bots"),
    (Method::GET, "/v1/bots"),
    (Method::GET, "/v1/bots/{id}"),
    (Method::PATCH, "/v1/bots/{id}"),
    (Method::DELETE, "/v1/bots/{id}"),
    (Method::POST, "/v1/api-keys"),
    (Method::GET, "/v1/api-keys"),
    (Method::GET, "/v1/api-keys/{id}"),
    (Method::DELETE, "/v1/api-keys/{id}"),
    (Method::POST, "/v1/scopes"),
    (Method::GET, "/v1/scopes"),
    (Method::GET, "/v1/scopes/{id}"),
    (Method::DELETE, "/v1/scopes/{id}"),
    (Method::GET, "/v1/conversations"),
    (Method::GET, "/v1/conversations/{id}"),
    (Method::DELETE, "/v1/conversations/{id}"),
    (Method::GET, "/v1/conversations/{id}/messages"),
    (Method::GET, "/v1/audit-logs"),
    (Method::GET, "/v1/usage"),
    // datasets and documents (RAG)
    (Method::POST, "/v1/datasets"),
    (Method::GET, "/v1/datasets"),
    (Method::GET, "/v1/datasets/{id}"),
    (Method::DELETE, "/v1/datasets/{id}"),
    (Method::POST, "/v1/datasets/{id}/documents"),
    (Method::GET, "/v1/datasets/{id}/documents"),
    (Method::POST, "/v1/datasets/{id}/search"),
    (Method::GET, "/v1/documents/{id}"),
    (Method::DELETE, "/v1/documents/{id}"),
];

/// The reply of `/healthz` and `/readyz`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok` (the process runs) or `ready` (the database answers).
    #[schema(schema_with = status_schema)]
    pub status: &'static str,
}

fn status_schema() -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["ok", "ready"]))
}

/// A matched route: its index in [`ROUTES`] and the `{id}` segment, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// Index in [`ROUTES`].
    pub index: usize,
    /// The path pattern.
    pub pattern: &'static str,
    /// The `{id}` segment.
    pub id: Option<String>,
}

fn segments_match(pattern: &str, path: &str) -> Option<Option<String>> {
    let mut id = None;
    let mut p = pattern.split('/');
    let mut s = path.split('/');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return Some(id),
            (Some("{id}"), Some(seg)) if !seg.is_empty() => id = Some(seg.to_string()),
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
}

/// Finds the route of a request: `Ok` with the route, `Err(true)` when the
/// path exists with other methods (405), `Err(false)` when it does not (404).
/// A literal segment wins over `{id}` (`/v1/providers/catalog`).
pub fn match_route(method: &Method, path: &str) -> Result<Matched, bool> {
    let mut path_known = false;
    let mut best: Option<Matched> = None;
    for (index, (m, pattern)) in ROUTES.iter().enumerate() {
        let Some(id) = segments_match(pattern, path) else {
            continue;
        };
        path_known = true;
        if m != method {
            continue;
        }
        let better = match &best {
            None => true,
            Some(b) => b.id.is_some() && id.is_none(),
        };
        if better {
            best = Some(Matched { index, pattern, id });
        }
    }
    match best {
        Some(b) => Ok(b),
        None => {
            // `/v1/providers/catalog` with DELETE matches `{id}` routes:
            // that is a 405 on a literal path only if a literal route exists.
            Err(path_known)
        }
    }
}

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

/// Handles one request, in a span carrying its request id: every log line
/// of the request (a provider failure's redacted detail included) can be
/// found by the id its caller was given.
pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    use tracing::Instrument as _;
    let rid = request_id(&req);
    let span = tracing::info_span!("request", request_id = %rid, method = %req.method(), path = %req.uri().path());
    handle_in_span(app, req, peer, rid).instrument(span).await
}

async fn handle_in_span(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    rid: String,
) -> Response<Body> {
    let matched = match_route(req.method(), req.uri().path());
    let route_index = matched.as_ref().ok().map(|m| m.index);
    let result = match matched {
        Ok(m) => route(&app, req, peer, &rid, m).await,
        Err(true) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not answer this method",
        )),
        Err(false) => Err(ApiError::not_found("route")),
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => e.into_response(&rid),
    };
    app.metrics.request(route_index, resp.status());
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
    m: Matched,
) -> Result<Response<Body>, ApiError> {
    match (req.method(), m.pattern) {
        (&Method::POST, "/v1/chat/public") => chat::handle(app, req, peer, rid, true).await,
        (&Method::OPTIONS, "/v1/chat/public") => Ok(chat::preflight(req.headers())),
        (&Method::POST, "/v1/chat") => chat::handle(app, req, peer, rid, false).await,
        (&Method::GET, "/healthz") => Ok(json_response(StatusCode::OK, &Status { status: "ok" })),
        (&Method::GET, "/readyz") => match app.store.ping().await {
            Ok(()) => Ok(json_response(StatusCode::OK, &Status { status: "ready" })),
            Err(e) => {
                tracing::warn!(error = %e, "readiness check failed");
                Err(ApiError::unavailable("database unreachable"))
            }
        },
        (&Method::GET, "/metrics") => {
            crate::metrics::authorize(&app.config, req.headers(), peer)?;
            Ok(crate::metrics::render(app))
        }
        (&Method::GET, "/openapi.json") => {
            Ok(json_response(StatusCode::OK, crate::openapi::document()))
        }
        _ if m.pattern.starts_with("/v1/datasets") || m.pattern.starts_with("/v1/documents") => {
            crate::datasets::handle(app, req, peer, rid, m).await
        }
        _ => admin::handle(app, req, peer, rid, m).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_win_and_methods_are_checked() {
        let m = match_route(&Method::GET, "/v1/providers/catalog").unwrap();
        assert_eq!(m.pattern, "/v1/providers/catalog");
        assert_eq!(m.id, None);
        let m = match_route(&Method::GET, "/v1/providers/abc").unwrap();
        assert_eq!(m.pattern, "/v1/providers/{id}");
        assert_eq!(m.id.as_deref(), Some("abc"));
        let m = match_route(&Method::GET, "/v1/conversations/x/messages").unwrap();
        assert_eq!(m.pattern, "/v1/conversations/{id}/messages");
        assert_eq!(match_route(&Method::PUT, "/v1/bots/x"), Err(true));
        assert_eq!(match_route(&Method::GET, "/v1/nope"), Err(false));
        assert_eq!(match_route(&Method::GET, "/v1/bots/"), Err(false));
        assert_eq!(match_route(&Method::GET, "/v1/bots/a/b"), Err(false));
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(a != b, "{a:?} twice");
            }
        }
    }
}
