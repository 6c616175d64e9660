//! Brute-force protection: failed authentications are throttled per client
//! IP and audited as one counted record per IP and minute.
//!
//! Every presented credential (a tenant API key, the operator key) first
//! asks [`AuthThrottle::admit`]: once an IP has failed more than its burst
//! ([`AuthThrottle::new`]'s quota, GCRA as every other limit, in process or
//! in Redis when configured, so several instances share it) it gets a
//! `rate_limited` answer with a `Retry-After`, *before* the credential is
//! verified: a throttled client learns nothing, not even whether a key is
//! right. Each failure is charged with [`AuthThrottle::failed`].
//!
//! Audit: failures from the open internet must not grow the audit log by a
//! row per request. They are counted in memory per (IP, credential kind,
//! UTC minute) and written as one `auth.failed` record per such window,
//! with the number of failures, the number of throttled attempts and the
//! reasons, as the window closes (a background sweep, at the latest a
//! minute later, and [`AuthThrottle::flush`] at shutdown). The record
//! belongs to no tenant (an unknown key has none); operator-key failures
//! are recorded with the operator as actor kind.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};

use crate::audit::AuditWriter;
use crate::domain::{Actor, ActorKind, AuditRecord, now};
use crate::ratelimit::{Decision, Quota, RateLimiter};

/// Which credential failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Credential {
    /// A tenant API key (or none at all).
    ApiKey,
    /// The operator key.
    Operator,
}

impl Credential {
    fn as_str(self) -> &'static str {
        match self {
            Credential::ApiKey => "api_key",
            Credential::Operator => "operator",
        }
    }

    fn actor(self) -> Actor {
        Actor {
            kind: match self {
                Credential::ApiKey => ActorKind::PublicVisitor,
                Credential::Operator => ActorKind::Operator,
            },
            id: None,
        }
    }
}

/// One IP's failures of one kind in one minute.
#[derive(Debug)]
struct Window {
    start: DateTime<Utc>,
    failures: u64,
    throttled: u64,
    reasons: BTreeMap<&'static str, u64>,
    last_request_id: Option<String>,
}

/// Most open windows kept before all are written out at once.
const MAX_WINDOWS: usize = 50_000;

#[derive(Debug)]
struct Inner {
    audit: AuditWriter,
    windows: Mutex<HashMap<(String, Credential), Window>>,
}

impl Inner {
    /// Takes the windows that started before `before` (all with `None`).
    fn take_closed(&self, before: Option<DateTime<Utc>>) -> Vec<((String, Credential), Window)> {
        let mut map = self.windows.lock().expect("auth windows lock");
        let closed: Vec<(String, Credential)> = map
            .iter()
            .filter(|(_, w)| before.is_none_or(|b| w.start < b))
            .map(|(k, _)| k.clone())
            .collect();
        closed
            .into_iter()
            .filter_map(|k| map.remove(&k).map(|w| (k, w)))
            .collect()
    }

    async fn write(&self, closed: Vec<((String, Credential), Window)>) {
        for ((ip, cred), w) in closed {
            let mut r = AuditRecord::new(None, cred.actor(), "auth.failed");
            r.ip = Some(ip);
            r.request_id = w.last_request_id;
            r.metadata = serde_json::json!({
                "credential": cred.as_str(),
                "count": w.failures,
                "throttled": w.throttled,
                "reasons": w.reasons,
                "window_start": w.start,
                "window_secs": 60,
            });
            self.audit.record(r).await;
        }
    }
}

fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

/// Throttles and audits failed authentications (see the module docs).
pub struct AuthThrottle {
    limiter: Arc<dyn RateLimiter>,
    quota: Option<Quota>,
    inner: Arc<Inner>,
    sweeper: std::sync::OnceLock<()>,
}

impl std::fmt::Debug for AuthThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthThrottle")
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl AuthThrottle {
    /// Failures admitted per IP per minute (and as a burst) by default.
    pub const DEFAULT_PER_MINUTE: u32 = 20;

    /// A throttle admitting `per_minute` failures per IP per minute, as a
    /// burst then steadily (0 turns throttling off; failures are still
    /// audited), keeping its state in `limiter`.
    pub fn new(limiter: Arc<dyn RateLimiter>, audit: AuditWriter, per_minute: u32) -> Self {
        Self {
            limiter,
            quota: (per_minute > 0).then(|| Quota::per_minute(per_minute)),
            inner: Arc::new(Inner {
                audit,
                windows: Mutex::new(HashMap::new()),
            }),
            sweeper: std::sync::OnceLock::new(),
        }
    }

    fn key(ip: &str) -> String {
        format!("af:{ip}")
    }

    /// Whether a credential from `ip` may be verified now. `Err` carries
    /// the wait: the caller answers 429 with it as `Retry-After`. Callers
    /// without an IP (in-process embedding) are never throttled; a failing
    /// limiter admits (it is logged where it fails).
    pub async fn admit(
        &self,
        ip: Option<&str>,
        credential: Credential,
        request_id: Option<&str>,
    ) -> Result<(), Duration> {
        let (Some(ip), Some(q)) = (ip, self.quota) else {
            return Ok(());
        };
        // Cost 0: asks whether the failures so far leave room, consuming
        // nothing (GCRA refuses once they ran over the burst).
        match self.limiter.check(&Self::key(ip), q, 0).await {
            Ok(Decision::Limited { retry_after }) => {
                if let Some(ended) = self.count(ip, credential, None, request_id) {
                    self.inner.write(vec![ended]).await;
                }
                Err(retry_after.max(Duration::from_secs(1)))
            }
            Ok(Decision::Allowed { .. }) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "auth throttle unavailable: admitting");
                Ok(())
            }
        }
    }

    /// Records a failed authentication from `ip` (`reason`: a stable code).
    pub async fn failed(
        &self,
        ip: Option<&str>,
        credential: Credential,
        reason: &'static str,
        request_id: Option<&str>,
    ) {
        let ip_s = ip.unwrap_or("unknown");
        if let (Some(ip), Some(q)) = (ip, self.quota)
            && let Err(e) = self.limiter.charge(&Self::key(ip), q, 1).await
        {
            tracing::warn!(error = %e, "auth throttle unavailable: a failure was not counted");
        }
        let ended = self.count(ip_s, credential, Some(reason), request_id);
        self.ensure_sweeper();
        if let Some(ended) = ended {
            self.inner.write(vec![ended]).await;
        }
    }

    fn count(
        &self,
        ip: &str,
        credential: Credential,
        reason: Option<&'static str>,
        request_id: Option<&str>,
    ) -> Option<((String, Credential), Window)> {
        let start = minute_of(now());
        let mut map = self.inner.windows.lock().expect("auth windows lock");
        if map.len() >= MAX_WINDOWS {
            // Far too many distinct IPs failing at once: drop the detail of
            // the oldest rather than grow without bound (logged).
            tracing::warn!(
                windows = map.len(),
                "too many failing IPs: forgetting their counts"
            );
            map.clear();
        }
        let key = (ip.to_string(), credential);
        // A window of an earlier minute ends here (if the sweep has not
        // written it yet): the caller writes it out.
        let ended = match map.get(&key) {
            Some(w) if w.start != start => map.remove(&key).map(|w| (key.clone(), w)),
            _ => None,
        };
        let w = map
            .entry((ip.to_string(), credential))
            .or_insert_with(|| Window {
                start,
                failures: 0,
                throttled: 0,
                reasons: BTreeMap::new(),
                last_request_id: None,
            });
        match reason {
            Some(r) => {
                w.failures += 1;
                *w.reasons.entry(r).or_default() += 1;
            }
            None => w.throttled += 1,
        }
        if let Some(rid) = request_id {
            w.last_request_id = Some(rid.to_string());
        }
        ended
    }

    /// Writes windows out as their minute ends, from a task that holds
    /// only a weak reference (it stops when the throttle is dropped).
    fn ensure_sweeper(&self) {
        self.sweeper.get_or_init(|| {
            let weak: Weak<Inner> = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    let closed = inner.take_closed(Some(minute_of(now())));
                    inner.write(closed).await;
                }
            });
        });
    }

    /// Writes every open window (shutdown; tests).
    pub async fn flush(&self) {
        let all = self.inner.take_closed(None);
        self.inner.write(all).await;
    }
}
