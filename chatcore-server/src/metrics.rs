//! `GET /metrics`: a small registry in Prometheus text format.
//!
//! The hot path only touches atomics: request counters are a fixed array
//! per route (from [`crate::routes::ROUTES`]) and status, histograms have
//! fixed buckets. Token counters are keyed by tenant and provider in a map
//! behind a read-mostly `RwLock` (a new pair takes the write lock once).
//! Database pool gauges are read from the store when scraped.
//!
//! Access ([`authorize`]): the metrics name every tenant, so with
//! `CHATCORE_METRICS_KEY` set a scraper must send it as a bearer; without
//! it only clients on loopback are answered.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use http::{HeaderValue, Response, StatusCode, header};

use crate::App;
use crate::http::{Body, full};
use crate::routes::ROUTES;

const STATUSES: &[u16] = &[
    200, 201, 204, 400, 401, 403, 404, 405, 409, 413, 415, 429, 500, 502, 503, 504,
];
/// Histogram bucket upper bounds, seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A fixed-bucket histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 14],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation, in milliseconds.
    pub fn observe_ms(&self, ms: u64) {
        let secs = ms as f64 / 1000.0;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(ms * 1000, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Per route (the last row: no route matched), per status (the last
    /// column: any other status).
    requests: Vec<Vec<AtomicU64>>,
    /// Non-streamed and streamed chat turns, request to last token.
    pub chat_latency: Histogram,
    /// Streamed chat turns, request to first token.
    pub time_to_first_token: Histogram,
    /// Provider failures seen by chat (502/504 answers and stream errors).
    pub provider_errors: AtomicU64,
    /// Chat requests refused by a rate limit (429).
    pub rate_limited: AtomicU64,
    tokens: RwLock<HashMap<(String, String), AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: (0..=ROUTES.len())
                .map(|_| (0..=STATUSES.len()).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            chat_latency: Histogram::default(),
            time_to_first_token: Histogram::default(),
            provider_errors: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            tokens: RwLock::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// Counts a request by route (None: no route matched) and status.
    pub fn request(&self, route: Option<usize>, status: StatusCode) {
        let r = route.unwrap_or(ROUTES.len()).min(ROUTES.len());
        let s = STATUSES
            .iter()
            .position(|s| *s == status.as_u16())
            .unwrap_or(STATUSES.len());
        self.requests[r][s].fetch_add(1, Relaxed);
    }

    /// Counts tokens of a turn by the bot's tenant (public chat included)
    /// and provider.
    pub fn tokens(&self, tenant: &str, provider: &str, n: u64) {
        let key = (tenant.to_string(), provider.to_string());
        if let Some(c) = self.tokens.read().expect("metrics lock").get(&key) {
            c.fetch_add(n, Relaxed);
            return;
        }
        self.tokens
            .write()
            .expect("metrics lock")
            .entry(key)
            .or_default()
            .fetch_add(n, Relaxed);
    }
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Whether the client may read the metrics (see the module docs).
pub fn authorize(
    config: &crate::config::Config,
    headers: &http::HeaderMap,
    peer: std::net::SocketAddr,
) -> Result<(), crate::http::ApiError> {
    match &config.metrics_key {
        Some(expected) => match crate::chat::bearer(headers) {
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

/// Renders every metric.
pub fn render(app: &App) -> Response<Body> {
    let m = &app.metrics;
    let mut out = String::new();
    out.push_str("# HELP chatcore_http_requests_total HTTP requests by route and status.\n# TYPE chatcore_http_requests_total counter\n");
    for (r, row) in m.requests.iter().enumerate() {
        let (method, route) = match ROUTES.get(r) {
            Some((method, path)) => (method.as_str(), *path),
            None => ("any", "unmatched"),
        };
        for (s, c) in row.iter().enumerate() {
            let n = c.load(Relaxed);
            if n == 0 {
                continue;
            }
            let status = STATUSES
                .get(s)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "other".into());
            let _ = writeln!(
                out,
                "chatcore_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
    }
    m.chat_latency.render(
        &mut out,
        "chatcore_chat_duration_seconds",
        "Chat turns, request to last token.",
    );
    m.time_to_first_token.render(
        &mut out,
        "chatcore_chat_time_to_first_token_seconds",
        "Streamed chat turns, request to first token.",
    );
    out.push_str("# HELP chatcore_tokens_total Tokens by tenant and provider.\n# TYPE chatcore_tokens_total counter\n");
    for ((tenant, provider), n) in m.tokens.read().expect("metrics lock").iter() {
        let _ = writeln!(
            out,
            "chatcore_tokens_total{{tenant=\"{}\",provider=\"{}\"}} {}",
            label(tenant),
            label(provider),
            n.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP chatcore_provider_errors_total Provider failures seen by chat.\n# TYPE chatcore_provider_errors_total counter\nchatcore_provider_errors_total {}",
        m.provider_errors.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP chatcore_rate_limited_total Chat requests refused by a rate limit.\n# TYPE chatcore_rate_limited_total counter\nchatcore_rate_limited_total {}",
        m.rate_limited.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP chatcore_open_streams Streamed chat turns running.\n# TYPE chatcore_open_streams gauge\nchatcore_open_streams {}",
        app.chat.open_streams()
    );
    let pools = app.store.pool_stats();
    if !pools.is_empty() {
        out.push_str("# HELP chatcore_db_pool_connections Database pool connections by state (in_use, idle).\n# TYPE chatcore_db_pool_connections gauge\n");
        for p in &pools {
            for (state, n) in [("in_use", p.in_use), ("idle", p.idle)] {
                let _ = writeln!(
                    out,
                    "chatcore_db_pool_connections{{pool=\"{}\",state=\"{state}\"}} {n}",
                    p.pool
                );
            }
        }
        out.push_str("# HELP chatcore_db_pool_max_connections The most connections a database pool opens.\n# TYPE chatcore_db_pool_max_connections gauge\n");
        for p in &pools {
            let _ = writeln!(
                out,
                "chatcore_db_pool_max_connections{{pool=\"{}\"}} {}",
                p.pool, p.max
            );
        }
    }
    let mut r = Response::new(full(out));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
