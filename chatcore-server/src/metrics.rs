//! `GET /metrics`: a prometheus-client registry, in the text format.
//!
//! Requests are counted by method, matched route template (`unmatched`
//! when no route matched) and status; chat latency and time to first
//! token are histograms; tokens are counted by the bot's tenant and the
//! provider. Gauges that mirror state (open streams, database pools) are
//! read when scraped. The registry is the [`App`]'s own, so several apps in
//! one process (the tests) count apart.
//!
//! Access ([`authorize`]): the metrics name every tenant, so with
//! `CHATCORE_METRICS_KEY` set a scraper must send it as a bearer; without
//! it only clients on loopback are answered.

use std::borrow::Cow;
use std::collections::HashMap;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::App;
use crate::http::{Body, full};

/// Histogram bucket upper bounds, seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: Cow<'static, str>,
    route: Cow<'static, str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    tenant: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolMaxLabels {
    pool: String,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    chat_latency: Histogram,
    time_to_first_token: Histogram,
    provider_errors: Counter,
    rate_limited: Counter,
    tokens: Family<TokenLabels, Counter>,
    open_streams: Gauge,
    redis_failures: Counter,
    /// Cost by tenant and provider, micro-units of USD.
    cost_micros: Family<TokenLabels, Counter>,
    /// Budget ledger failures (Redis), read from the engine at scrape.
    budget_ledger_errors: Gauge,
    pool_connections: Family<PoolLabels, Gauge>,
    pool_max: Family<PoolMaxLabels, Gauge>,
    /// The route templates, as `'static` label values.
    routes: HashMap<&'static str, &'static str>,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "chatcore_http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let chat_latency = histogram();
        registry.register(
            "chatcore_chat_duration_seconds",
            "Chat turns, request to last token",
            chat_latency.clone(),
        );
        let time_to_first_token = histogram();
        registry.register(
            "chatcore_chat_time_to_first_token_seconds",
            "Streamed chat turns, request to first token",
            time_to_first_token.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "chatcore_tokens",
            "Tokens by tenant and provider",
            tokens.clone(),
        );
        let cost_micros = Family::<TokenLabels, Counter>::default();
        registry.register(
            "chatcore_cost_micros",
            "Cost of chat turns by tenant and provider, micro-units of USD",
            cost_micros.clone(),
        );
        let budget_ledger_errors = Gauge::default();
        registry.register(
            "chatcore_budget_ledger_errors",
            "Budget ledger (Redis) failures since the start; budgets fail closed unless configured open",
            budget_ledger_errors.clone(),
        );
        let provider_errors = Counter::default();
        registry.register(
            "chatcore_provider_errors",
            "Provider failures seen by chat",
            provider_errors.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "chatcore_rate_limited",
            "Chat requests refused by a rate limit",
            rate_limited.clone(),
        );
        let open_streams = Gauge::default();
        registry.register(
            "chatcore_open_streams",
            "Streamed chat turns running",
            open_streams.clone(),
        );
        let redis_failures = Counter::default();
        registry.register(
            "chatcore_rate_limit_redis_failures",
            "Rate-limit checks and charges that Redis failed (see CHATCORE_REDIS_FAILURE)",
            redis_failures.clone(),
        );
        let pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "chatcore_db_pool_connections",
            "Database pool connections by state (in_use, idle)",
            pool_connections.clone(),
        );
        let pool_max = Family::<PoolMaxLabels, Gauge>::default();
        registry.register(
            "chatcore_db_pool_max_connections",
            "The most connections a database pool opens",
            pool_max.clone(),
        );
        let routes = crate::openapi::document()["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| (k.as_str(), k.as_str()))
            .collect();
        Self {
            registry,
            requests,
            chat_latency,
            time_to_first_token,
            provider_errors,
            rate_limited,
            tokens,
            open_streams,
            redis_failures,
            cost_micros,
            budget_ledger_errors,
            pool_connections,
            pool_max,
            routes,
        }
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    /// Counts a request by method, route template (None: no route
    /// matched) and status.
    pub fn request(&self, method: &Method, route: Option<&str>, status: StatusCode) {
        let (method, route) = match route {
            Some(r) => (
                method_label(method),
                match self.routes.get(r) {
                    Some(r) => Cow::Borrowed(*r),
                    None => Cow::Owned(r.to_string()),
                },
            ),
            None => ("any", Cow::Borrowed("unmatched")),
        };
        self.requests
            .get_or_create(&RequestLabels {
                method: Cow::Borrowed(method),
                route,
                status: status.as_u16(),
            })
            .inc();
    }

    /// A chat turn's duration, request to last token.
    pub fn chat_latency(&self, ms: u64) {
        self.chat_latency.observe(ms as f64 / 1000.0);
    }

    /// A streamed turn's time to first token.
    pub fn time_to_first_token(&self, ms: u64) {
        self.time_to_first_token.observe(ms as f64 / 1000.0);
    }

    /// A provider failure seen by chat (502/504 answers and stream errors).
    pub fn provider_error(&self) {
        self.provider_errors.inc();
    }

    /// A chat request refused by a rate limit (429).
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// Counts the cost of a turn (micro-units of USD) by the bot's tenant
    /// and provider.
    pub fn cost(&self, tenant: &str, provider: &str, micros: i64) {
        if micros > 0 {
            self.cost_micros
                .get_or_create(&TokenLabels {
                    tenant: tenant.to_string(),
                    provider: provider.to_string(),
                })
                .inc_by(micros as u64);
        }
    }

    /// Counts tokens of a turn by the bot's tenant (public chat included)
    /// and provider.
    pub fn tokens(&self, tenant: &str, provider: &str, n: u64) {
        self.tokens
            .get_or_create(&TokenLabels {
                tenant: tenant.to_string(),
                provider: provider.to_string(),
            })
            .inc_by(n);
    }
}

/// Whether the client may read the metrics (see the module docs).
pub fn authorize(
    config: &crate::config::Config,
    headers: &http::HeaderMap,
    peer: std::net::SocketAddr,
) -> Result<(), crate::http::ApiError> {
    match &config.metrics_key {
        Some(expected) => match crate::auth::bearer(headers) {
            Some(k) if chatcore::auth::secrets_equal(&k, expected) => Ok(()),
            _ => Err(crate::http::ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send the metrics key: Authorization: Bearer <CHATCORE_METRICS_KEY>",
            )),
        },
        None => {
            let ip = match peer.ip() {
                std::net::IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map(std::net::IpAddr::V4)
                    .unwrap_or(std::net::IpAddr::V6(v6)),
                v4 => v4,
            };
            if ip.is_loopback() {
                Ok(())
            } else {
                Err(crate::http::ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "metrics are served to loopback clients only; set CHATCORE_METRICS_KEY to scrape them from elsewhere",
                ))
            }
        }
    }
}

/// Renders every metric: OpenMetrics when the scraper asks for it (as
/// Prometheus does), else the same text as `text/plain`.
pub fn render(app: &App, headers: &HeaderMap) -> Response<Body> {
    let m = &app.metrics;
    m.open_streams.set(app.chat.open_streams() as i64);
    // A counter kept by the limiter: bring the exported one up to it.
    m.redis_failures.inner().fetch_max(
        app.chat.rate_limiter().backend_failures(),
        std::sync::atomic::Ordering::Relaxed,
    );
    m.budget_ledger_errors
        .set(app.chat.budgets().ledger_errors() as i64);
    for p in app.chat.store().pool_stats() {
        for (state, n) in [("in_use", p.in_use), ("idle", p.idle)] {
            m.pool_connections
                .get_or_create(&PoolLabels {
                    pool: p.pool.to_string(),
                    state,
                })
                .set(n as i64);
        }
        m.pool_max
            .get_or_create(&PoolMaxLabels {
                pool: p.pool.to_string(),
            })
            .set(p.max as i64);
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m.registry) {
        tracing::error!(error = %e, "could not encode the metrics");
    }
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let ct = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    let mut r = Response::new(full(out));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}
