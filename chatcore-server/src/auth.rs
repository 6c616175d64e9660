//! Who may call a route. Each operation's `#[utoipa::path]` names what it
//! needs in its `security` (no entry: open; `operatorKey`; `apiKey` with
//! one of the roles `chat`, `read`, `admin`). [`guards`] reads those from
//! the OpenAPI document the router is built with, so the permission of a
//! route is declared once, beside its path and handler, and is both what
//! the document says and what [`authorize`] enforces: it authenticates the
//! caller before the body is read, checks the permission, and hands the
//! handler a [`TenantCaller`], an [`OperatorCaller`] or a [`ChatKey`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chatcore::admin::{Access, AdminCaller, Operator};
use chatcore::auth::Principal;
use http::request::Parts;
use http::{HeaderMap, Method, header};
use secrecy::SecretString;

use crate::App;
use crate::http::{ApiError, Peer, Rid};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Anyone (public chat, health, metrics with its own rule, the document).
    Open,
    /// A tenant key with the `chat` permission.
    Chat,
    /// The operator key.
    Operator,
    /// A tenant key allowed this access (see [`chatcore::admin::Access`]).
    Tenant(Access),
}

impl Guard {
    /// The `x-chatcore-permission` the document states.
    pub fn permission(self) -> &'static str {
        match self {
            Guard::Open => "none",
            Guard::Chat => "chat",
            Guard::Operator => "operator",
            Guard::Tenant(Access::Read) => "read",
            Guard::Tenant(Access::Write) => "admin",
        }
    }

    /// The guard an operation's security requirements declare: `None`
    /// when they name something unknown (a mistake in a declaration,
    /// refused when the router is built).
    pub fn of_security(security: Option<&[serde_json::Value]>) -> Option<Guard> {
        let reqs = match security {
            None => return Some(Guard::Open),
            Some(r) => r,
        };
        let [req] = reqs else {
            return reqs.is_empty().then_some(Guard::Open);
        };
        let obj = req.as_object()?;
        let Some((scheme, roles)) = obj.iter().next() else {
            return Some(Guard::Open);
        };
        let role = roles.as_array()?.first().and_then(|r| r.as_str());
        match (scheme.as_str(), role) {
            ("operatorKey", None) => Some(Guard::Operator),
            ("apiKey", Some("chat")) => Some(Guard::Chat),
            ("apiKey", Some("read")) => Some(Guard::Tenant(Access::Read)),
            ("apiKey", Some("admin")) => Some(Guard::Tenant(Access::Write)),
            _ => None,
        }
    }
}

/// The guard of every routed operation, by method and path template.
#[derive(Debug, Default)]
pub struct Guards(HashMap<(Method, String), Guard>);

impl Guards {
    /// The guard of a route (open when it is not listed).
    pub fn get(&self, method: &Method, template: &str) -> Guard {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.0
            .get(&(method.clone(), template.to_string()))
            .copied()
            .unwrap_or(Guard::Open)
    }
}

/// Every operation's guard, as the document states it
/// (`x-chatcore-permission`, see [`crate::openapi`]).
pub fn guards(doc: &serde_json::Value) -> Guards {
    let mut map = HashMap::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (m, op) in item.as_object().into_iter().flatten() {
            let Ok(method) = m.to_ascii_uppercase().parse::<Method>() else {
                continue;
            };
            let guard = match op["x-chatcore-permission"].as_str() {
                Some("chat") => Guard::Chat,
                Some("operator") => Guard::Operator,
                Some("read") => Guard::Tenant(Access::Read),
                Some("admin") => Guard::Tenant(Access::Write),
                _ => Guard::Open,
            };
            map.insert((method, path.clone()), guard);
        }
    }
    Guards(map)
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<SecretString> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| SecretString::from(token.trim().to_string()))
}

/// The caller of a tenant management route, checked for its access.
#[derive(Clone)]
pub struct TenantCaller(pub AdminCaller);
/// The operator, checked.
#[derive(Clone)]
pub struct OperatorCaller(pub Operator);
/// The key of an authenticated chat request.
#[derive(Clone)]
pub struct ChatKey(pub Arc<Principal>);

macro_rules! from_extension {
    ($t:ty) => {
        impl<S: Send + Sync> FromRequestParts<S> for $t {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
                parts.extensions.remove::<$t>().ok_or_else(|| {
                    // A handler asking for a caller its route does not
                    // declare: fail closed.
                    tracing::error!(caller = stringify!($t), "route declares no such caller");
                    ApiError::internal()
                })
            }
        }
    };
}

from_extension!(TenantCaller);
from_extension!(OperatorCaller);
from_extension!(ChatKey);

/// The middleware that applies a route's guard (see the module docs).
pub async fn authorize(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let guard = match req.extensions().get::<MatchedPath>() {
        Some(p) => app.guards.get(req.method(), p.as_str()),
        None => Guard::Open,
    };
    if guard == Guard::Open {
        return next.run(req).await;
    }
    // Taken before any await: a request (its body) is not `Sync`.
    let rid = Rid::of(req.extensions());
    let peer = match peer(&req) {
        Ok(Peer(p)) => p,
        Err(e) => return e.into_response(),
    };
    let token = bearer(req.headers());
    match check(&app, guard, rid, peer.ip().to_string(), token).await {
        Ok(Checked::Tenant(c)) => {
            req.extensions_mut().insert(TenantCaller(c));
        }
        Ok(Checked::Operator(o)) => {
            req.extensions_mut().insert(OperatorCaller(o));
        }
        Ok(Checked::Chat(p)) => {
            req.extensions_mut().insert(ChatKey(p));
        }
        Err(e) => return e.into_response(),
    }
    next.run(req).await
}

enum Checked {
    Tenant(AdminCaller),
    Operator(Operator),
    Chat(Arc<Principal>),
}

async fn check(
    app: &App,
    guard: Guard,
    rid: String,
    ip: String,
    token: Option<SecretString>,
) -> Result<Checked, ApiError> {
    match guard {
        Guard::Open => unreachable!("open routes are not checked"),
        Guard::Operator => {
            // The routes do not exist (404) while no operator key is
            // configured; a missing or wrong key is a 401 (throttled per
            // IP and audited by the library, like tenant keys).
            let Some(expected) = &app.config.operator_key else {
                return Err(ApiError::not_found("route"));
            };
            app.chat
                .authenticate_operator(token.as_ref(), expected, Some(&ip), Some(&rid))
                .await?;
            Ok(Checked::Operator(Operator {
                via: Some("http".into()),
                request_id: Some(rid),
                ip: Some(ip),
            }))
        }
        Guard::Chat => Ok(Checked::Chat(
            app.chat
                .authenticate(token.as_ref(), Some(&ip), Some(&rid))
                .await?,
        )),
        Guard::Tenant(access) => {
            let principal = app
                .chat
                .authenticate(token.as_ref(), Some(&ip), Some(&rid))
                .await?;
            Ok(Checked::Tenant(AdminCaller::from_principal(
                &principal,
                access,
                Some(rid),
                Some(ip),
            )?))
        }
    }
}

fn peer(req: &Request) -> Result<Peer, ApiError> {
    match req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        Some(axum::extract::ConnectInfo(a)) => Ok(Peer(*a)),
        None => {
            tracing::error!("no client address on the request");
            Err(ApiError::internal())
        }
    }
}
