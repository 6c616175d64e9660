//! Management endpoints: the operator's `/v1/admin/tenants` and a tenant
//! admin's providers, bots, API keys, scopes, conversations, audit log and
//! usage. Each handler authenticates, parses the path, query and body, and
//! calls [`chatcore::admin::AdminService`]; the rules live there.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use chatcore::admin::{Access, AdminCaller, ConversationQuery, List, Operator, page_request};
use chatcore::domain::{ActorKind, ApiKeyId, ConversationId, ProviderConfigId, ScopeId, TenantId};
use chatcore::store::{AuditFilter, PageRequest, UsageGroup};
use chrono::{DateTime, Utc};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::App;
use crate::chat::bearer;
use crate::http::{ApiError, Body, full, json_response, parse_json, read_body};
use crate::routes::Matched;

/// Query parameters of one request; every parameter must be taken, so an
/// unknown one is a 400 naming it.
pub struct Query {
    pairs: Vec<(String, String)>,
}

fn bad(msg: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", msg)
}

impl Query {
    /// Parses the query string of a URI.
    pub fn parse(uri: &http::Uri) -> Self {
        let pairs = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Self { pairs }
    }

    /// Takes a string parameter (400 if given twice, or if it holds text
    /// the database cannot store).
    pub fn take(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        let mut found: Vec<String> = vec![];
        self.pairs.retain(|(k, v)| {
            if k == name {
                found.push(v.clone());
                false
            } else {
                true
            }
        });
        if let Some(v) = found.first() {
            chatcore::text::check_text(name, v).map_err(|e| bad(e.to_string()))?;
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(bad(format!("{name}: given more than once"))),
        }
    }

    /// Takes a parameter parsed with `FromStr`; `what` describes the format.
    pub fn parsed<T: FromStr>(&mut self, name: &str, what: &str) -> Result<Option<T>, ApiError> {
        match self.take(name)? {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| bad(format!("{name}: must be {what}"))),
        }
    }

    /// Takes an RFC 3339 time.
    pub fn time(&mut self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        match self.take(name)? {
            None => Ok(None),
            Some(v) => DateTime::parse_from_rfc3339(&v)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| {
                    bad(format!(
                        "{name}: must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z"
                    ))
                }),
        }
    }

    /// Takes an RFC 3339 time or a UTC day (`YYYY-MM-DD`, its midnight).
    pub fn time_or_day(&mut self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        match self.take(name)? {
            None => Ok(None),
            Some(v) => match chrono::NaiveDate::parse_from_str(&v, "%Y-%m-%d") {
                Ok(d) => Ok(Some(d.and_time(chrono::NaiveTime::MIN).and_utc())),
                Err(_) => DateTime::parse_from_rfc3339(&v)
                    .map(|t| Some(t.with_timezone(&Utc)))
                    .map_err(|_| {
                        bad(format!(
                            "{name}: must be a day (2026-01-31) or an RFC 3339 time (2026-01-31T00:00:00Z)"
                        ))
                    }),
            },
        }
    }

    /// Takes `limit` and `cursor`.
    pub fn page(&mut self) -> Result<PageRequest, ApiError> {
        let limit = self.parsed::<u64>("limit", "a whole number from 1 to 200")?;
        let cursor = self.take("cursor")?;
        Ok(page_request(limit, cursor)?)
    }

    /// Ends parsing: a parameter nobody took is an error.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.pairs.first() {
            Some((k, _)) => Err(bad(format!("{k}: unknown query parameter"))),
            None => Ok(()),
        }
    }
}

pub(crate) fn id<T: FromStr>(m: &Matched, what: &'static str) -> Result<T, ApiError> {
    m.id.as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::not_found(what))
}

pub(crate) fn ok<T: Serialize>(v: &T) -> Response<Body> {
    json_response(StatusCode::OK, v)
}

pub(crate) fn created<T: Serialize>(v: &T) -> Response<Body> {
    json_response(StatusCode::CREATED, v)
}

pub(crate) fn no_content() -> Response<Body> {
    let mut r = Response::new(full(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// Checks the operator key: the routes do not exist (404) when no operator
/// key is configured, and answer 401 to a missing or wrong one (throttled
/// per IP and audited by the library, like tenant keys).
async fn operator(
    app: &App,
    req: &Request<Incoming>,
    peer: SocketAddr,
    rid: &str,
) -> Result<Operator, ApiError> {
    let Some(expected) = &app.config.operator_key else {
        return Err(ApiError::not_found("route"));
    };
    let ip = peer.ip().to_string();
    app.chat
        .authenticate_operator(
            bearer(req.headers()).as_ref(),
            expected,
            Some(&ip),
            Some(rid),
        )
        .await?;
    Ok(Operator {
        via: Some("http".into()),
        request_id: Some(rid.to_string()),
        ip: Some(ip),
    })
}

/// What a tenant management route does, for the permission check: reads
/// (`GET`, and trying retrieval on a dataset) or changes (everything else).
/// The OpenAPI document states each route's permission from this too.
pub fn access(method: &Method, pattern: &str) -> Access {
    if method == Method::GET || (method == Method::POST && pattern == "/v1/datasets/{id}/search") {
        Access::Read
    } else {
        Access::Write
    }
}

/// Authenticates a tenant key and checks that it may do what the route
/// does (before the body is read: a read key gets 403, whatever it sent).
pub(crate) async fn tenant_admin(
    app: &App,
    req: &Request<Incoming>,
    peer: SocketAddr,
    rid: &str,
    m: &Matched,
) -> Result<AdminCaller, ApiError> {
    let ip = peer.ip().to_string();
    let principal = app
        .chat
        .authenticate(bearer(req.headers()).as_ref(), Some(&ip), Some(rid))
        .await?;
    Ok(AdminCaller::from_principal(
        &principal,
        access(req.method(), m.pattern),
        Some(rid.to_string()),
        Some(ip),
    )?)
}

async fn body<T: serde::de::DeserializeOwned>(
    app: &App,
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let (parts, b) = req.into_parts();
    let bytes = read_body(b, app.config.max_body_bytes).await?;
    parse_json(&parts.headers, &bytes)
}

/// Handles a management route (see [`crate::routes::ROUTES`]).
pub async fn handle(
    app: &Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    rid: &str,
    m: Matched,
) -> Result<Response<Body>, ApiError> {
    let admin = &app.admin;
    let mut q = Query::parse(req.uri());
    if m.pattern.starts_with("/v1/admin/") {
        let op = operator(app, &req, peer, rid).await?;
        return match (req.method(), m.pattern) {
            (&Method::POST, "/v1/admin/tenants") => {
                q.finish()?;
                Ok(created(
                    &admin.create_tenant(&op, body(app, req).await?).await?,
                ))
            }
            (&Method::GET, "/v1/admin/tenants") => {
                let page = q.page()?;
                q.finish()?;
                Ok(ok(&admin.list_tenants(page).await?))
            }
            (&Method::GET, "/v1/admin/tenants/{id}") => {
                q.finish()?;
                let t: TenantId = id(&m, "tenant")?;
                Ok(ok(&admin.get_tenant(t).await?))
            }
            (&Method::PATCH, "/v1/admin/tenants/{id}") => {
                q.finish()?;
                let t: TenantId = id(&m, "tenant")?;
                Ok(ok(&admin
                    .update_tenant(&op, t, body(app, req).await?)
                    .await?))
            }
            _ => Err(ApiError::not_found("route")),
        };
    }

    let c = tenant_admin(app, &req, peer, rid, &m).await?;
    match (req.method(), m.pattern) {
        // ---- providers ----
        (&Method::GET, "/v1/providers/catalog") => {
            q.finish()?;
            Ok(ok(&List {
                data: admin.catalog().await?,
                next_cursor: None,
            }))
        }
        (&Method::POST, "/v1/providers") => {
            q.finish()?;
            Ok(created(
                &admin.create_provider(&c, body(app, req).await?).await?,
            ))
        }
        (&Method::GET, "/v1/providers") => {
            let page = q.page()?;
            q.finish()?;
            Ok(ok(&admin.list_providers(&c, page).await?))
        }
        (&Method::GET, "/v1/providers/{id}") => {
            q.finish()?;
            let p: ProviderConfigId = id(&m, "provider")?;
            Ok(ok(&admin.get_provider(&c, p).await?))
        }
        (&Method::PATCH, "/v1/providers/{id}") => {
            q.finish()?;
            let p: ProviderConfigId = id(&m, "provider")?;
            Ok(ok(&admin
                .update_provider(&c, p, body(app, req).await?)
                .await?))
        }
        (&Method::DELETE, "/v1/providers/{id}") => {
            q.finish()?;
            let p: ProviderConfigId = id(&m, "provider")?;
            admin.delete_provider(&c, p).await?;
            Ok(no_content())
        }
        // ---- bots (by id or slug) ----
        (&Method::POST, "/v1/bots") => {
            q.finish()?;
            Ok(created(&admin.create_bot(&c, body(app, req).await?).await?))
        }
        (&Method::GET, "/v1/bots") => {
            let page = q.page()?;
            q.finish()?;
            Ok(ok(&admin.list_bots(&c, page).await?))
        }
        (&Method::GET, "/v1/bots/{id}") => {
            q.finish()?;
            let b = m.id.clone().unwrap_or_default();
            Ok(ok(&admin.get_bot(&c, &b).await?))
        }
        (&Method::PATCH, "/v1/bots/{id}") => {
            q.finish()?;
            let b = m.id.clone().unwrap_or_default();
            Ok(ok(&admin.update_bot(&c, &b, body(app, req).await?).await?))
        }
        (&Method::DELETE, "/v1/bots/{id}") => {
            q.finish()?;
            let b = m.id.clone().unwrap_or_default();
            admin.delete_bot(&c, &b).await?;
            Ok(no_content())
        }
        // ---- API keys ----
        (&Method::POST, "/v1/api-keys") => {
            q.finish()?;
            Ok(created(
                &admin.create_api_key(&c, body(app, req).await?).await?,
            ))
        }
        (&Method::GET, "/v1/api-keys") => {
            let page = q.page()?;
            q.finish()?;
            Ok(ok(&admin.list_api_keys(&c, page).await?))
        }
        (&Method::GET, "/v1/api-keys/{id}") => {
            q.finish()?;
            let k: ApiKeyId = id(&m, "api key")?;
            Ok(ok(&admin.get_api_key(&c, k).await?))
        }
        (&Method::DELETE, "/v1/api-keys/{id}") => {
            q.finish()?;
            let k: ApiKeyId = id(&m, "api key")?;
            admin.revoke_api_key(&c, k).await?;
            Ok(no_content())
        }
        // ---- scopes ----
        (&Method::POST, "/v1/scopes") => {
            q.finish()?;
            Ok(created(
                &admin.create_scope(&c, body(app, req).await?).await?,
            ))
        }
        (&Method::GET, "/v1/scopes") => {
            let bot = q
                .take("bot_id")?
                .ok_or_else(|| bad("bot_id: required (the bot whose scopes to list)".into()))?;
            let page = q.page()?;
            q.finish()?;
            Ok(ok(&admin.list_scopes(&c, &bot, page).await?))
        }
        (&Method::GET, "/v1/scopes/{id}") => {
            q.finish()?;
            let s: ScopeId = id(&m, "scope")?;
            Ok(ok(&admin.get_scope(&c, s).await?))
        }
        (&Method::DELETE, "/v1/scopes/{id}") => {
            q.finish()?;
            let s: ScopeId = id(&m, "scope")?;
            admin.delete_scope(&c, s).await?;
            Ok(no_content())
        }
        // ---- conversations ----
        (&Method::GET, "/v1/conversations") => {
            let filter = ConversationQuery {
                bot: q.take("bot_id")?,
                user_id: q.take("user_id")?,
                since: q.time("since")?,
                until: q.time("until")?,
            };
            let page = q.page()?;
            q.finish()?;
            Ok(ok(&admin.list_conversations(&c, filter, page).await?))
        }
        (&Method::GET, "/v1/conversations/{id}") => {
            q.finish()?;
            let cv: ConversationId = id(&m, "conversation")?;
            Ok(ok(&admin.get_conversation(&c, cv).await?))
        }
        (&Method::DELETE, "/v1/conversations/{id}") => {
            q.finish()?;
            let cv: ConversationId = id(&m, "conversation")?;
            admin.delete_conversation(&c, cv).await?;
            Ok(no_content())
        }
        (&Method::GET, "/v1/conversations/{id}/messages") => {
            let page = q.page()?;
            q.finish()?;
            let cv: ConversationId = id(&m, "conversation")?;
            Ok(ok(&admin.list_messages(&c, cv, page).await?))
        }
        // ---- audit and usage ----
        (&Method::GET, "/v1/audit-logs") => {
            let filter = AuditFilter {
                action: q.take("action")?,
                actor_kind: q.parsed::<ActorKind>(
                    "actor_kind",
                    "one of api_key, operator, public_visitor, system",
                )?,
                actor_id: q.take("actor_id")?,
                since: q.time("since")?,
                until: q.time("until")?,
            };
            let page = q.page()?;
            q.finish()?;
            Ok(ok(&admin.audit_logs(&c, filter, page).await?))
        }
        (&Method::GET, "/v1/usage") => {
            // Usage is kept per UTC day: a time is widened to its day (see
            // `AdminService::usage`), and a bare day is accepted.
            let since = q.time_or_day("since")?;
            let until = q.time_or_day("until")?;
            let group_by = match q.take("group_by")?.as_deref() {
                None | Some("bot") => UsageGroup::Bot,
                Some("key") => UsageGroup::ApiKey,
                Some("day") => UsageGroup::Day,
                Some(_) => return Err(bad("group_by: must be bot, key or day".into())),
            };
            q.finish()?;
            Ok(ok(&admin.usage(&c, since, until, group_by).await?))
        }
        _ => Err(ApiError::not_found("route")),
    }
}
