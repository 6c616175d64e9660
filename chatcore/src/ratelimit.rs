//! Rate limits: GCRA (the generic cell rate algorithm), in process or in
//! Redis.
//!
//! A [`Quota`] of `limit` units per `period` admits a burst of `limit` and
//! then one unit every `period / limit`. The state of a key is a single
//! timestamp (the theoretical arrival time, TAT), so a check is O(1) and the
//! Redis version is one atomic script: check-and-consume happens inside
//! Redis, with Redis's clock, so several server instances share one limit
//! exactly (no read-then-write race, no clock skew between instances).
//!
//! Requests are checked and consumed before the work ([`RateLimiter::check`]);
//! tokens, known only afterwards, are charged with [`RateLimiter::charge`],
//! which always records the cost and so delays later requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

/// `limit` units per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Units admitted per period (and the largest burst).
    pub limit: u32,
    /// The period.
    pub period: Duration,
}

impl Quota {
    /// `limit` per minute.
    pub fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            period: Duration::from_secs(60),
        }
    }

    fn emission_interval(&self) -> Duration {
        self.period / self.limit.max(1)
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted; this many more units would be admitted right now.
    Allowed {
        /// Units left in the current burst.
        remaining: u32,
    },
    /// Refused; retry after this long.
    Limited {
        /// Time until the request would be admitted.
        retry_after: Duration,
    },
}

impl Decision {
    /// Whether the request was admitted.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

/// A rate limiter backend failed (Redis unreachable, script error).
///
/// It holds the Redis error's kind only, not the error as a `source()`:
/// a Redis error's full text can echo the URL and its password (see
/// [`crate::error`] on causes).
#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct RateLimitError(pub String);

/// Check-and-consume rate limiting by key.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Admits `cost` units for `key` under `quota` if they fit, consuming
    /// them; otherwise consumes nothing and says when to retry.
    async fn check(&self, key: &str, quota: Quota, cost: u32) -> Result<Decision, RateLimitError>;
    /// Records `cost` units for `key` whether or not they fit (usage known
    /// after the fact, e.g. completion tokens).
    async fn charge(&self, key: &str, quota: Quota, cost: u32) -> Result<(), RateLimitError>;
    /// How many times the shared backend (Redis) failed since the start
    /// (0 for limiters without one).
    fn backend_failures(&self) -> u64 {
        0
    }
}

/// GCRA step, shared by the in-process limiter and the tests: given the
/// stored TAT (as an offset from `now`, clamped at 0) returns the decision
/// and the TAT offset to store.
fn gcra(tat_ahead: Duration, quota: Quota, cost: u32, force: bool) -> (Decision, Option<Duration>) {
    let t = quota.emission_interval();
    let new_ahead = tat_ahead + t * cost;
    if !force && new_ahead > quota.period {
        return (
            Decision::Limited {
                retry_after: new_ahead - quota.period,
            },
            None,
        );
    }
    let room = quota.period.saturating_sub(new_ahead);
    let remaining = if t.is_zero() {
        u32::MAX
    } else {
        (room.as_nanos() / t.as_nanos()) as u32
    };
    (Decision::Allowed { remaining }, Some(new_ahead))
}

/// The in-process limiter: one instance's memory. Uses tokio's clock, so
/// tests drive it with paused time.
#[derive(Debug, Default)]
pub struct LocalRateLimiter {
    state: Mutex<HashMap<String, Instant>>,
}

impl LocalRateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    fn step(&self, key: &str, quota: Quota, cost: u32, force: bool) -> Decision {
        let now = Instant::now();
        let mut map = self.state.lock().expect("rate limiter lock poisoned");
        // Keep memory bounded: keys whose TAT passed carry no information.
        if map.len() > 100_000 {
            map.retain(|_, tat| *tat > now);
        }
        let ahead = map
            .get(key)
            .map(|tat| tat.saturating_duration_since(now))
            .unwrap_or_default();
        let (decision, store) = gcra(ahead, quota, cost, force);
        if let Some(a) = store {
            map.insert(key.to_string(), now + a);
        }
        decision
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(&self, key: &str, quota: Quota, cost: u32) -> Result<Decision, RateLimitError> {
        Ok(self.step(key, quota, cost, false))
    }

    async fn charge(&self, key: &str, quota: Quota, cost: u32) -> Result<(), RateLimitError> {
        self.step(key, quota, cost, true);
        Ok(())
    }
}

/// GCRA in one Lua script, run atomically by Redis with Redis's clock.
/// KEYS[1]: the key. ARGV: emission interval (µs), period (µs), cost,
/// force (1: record even when over). Returns {allowed, µs}: the room left
/// when allowed, the wait when refused.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * cost
local ahead = new_tat - now
if ARGV[4] ~= '1' and ahead > period then
  return {0, math.ceil(ahead - period)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(ahead / 1000) + 1)
return {1, math.floor(period - ahead)}
"#;

/// The Redis limiter: one limit shared by every instance using the same
/// Redis. Keys are prefixed with `chatcore:rl:`.
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: redis::aio::ConnectionManager,
    script: redis::Script,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter").finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// Connects to `url` (`redis://host:port/db`). The URL may hold a
    /// password: it is never logged or put in an error.
    pub async fn connect(url: &str) -> Result<Self, RateLimitError> {
        let client =
            redis::Client::open(url).map_err(|_| RateLimitError("invalid Redis URL".into()))?;
        // Bounded: a request must not hang on an unreachable Redis (the
        // failover limiter takes over instead).
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let conn = redis::aio::ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| RateLimitError(format!("cannot connect to Redis: {}", e.kind_str())))?;
        Ok(Self {
            conn,
            script: redis::Script::new(GCRA_LUA),
        })
    }

    async fn run(
        &self,
        key: &str,
        quota: Quota,
        cost: u32,
        force: bool,
    ) -> Result<Decision, RateLimitError> {
        let interval = quota.emission_interval().as_micros() as u64;
        let period = quota.period.as_micros() as u64;
        let mut conn = self.conn.clone();
        let (allowed, us): (i64, i64) = self
            .script
            .key(format!("chatcore:rl:{key}"))
            .arg(interval)
            .arg(period)
            .arg(cost)
            .arg(if force { 1 } else { 0 })
            .invoke_async(&mut conn)
            .await
            .map_err(|e| RateLimitError(format!("Redis script failed: {}", e.kind_str())))?;
        let us = Duration::from_micros(us.max(0) as u64);
        Ok(if allowed == 1 {
            let remaining = (us.as_micros() as u64)
                .checked_div(interval)
                .map_or(u32::MAX, |n| n as u32);
            Decision::Allowed { remaining }
        } else {
            Decision::Limited { retry_after: us }
        })
    }
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    /// The error's kind and code only: the full text can echo the URL.
    fn kind_str(&self) -> String {
        format!(
            "{:?}{}",
            self.kind(),
            self.code().map(|c| format!(" ({c})")).unwrap_or_default()
        )
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, quota: Quota, cost: u32) -> Result<Decision, RateLimitError> {
        self.run(key, quota, cost, false).await
    }

    async fn charge(&self, key: &str, quota: Quota, cost: u32) -> Result<(), RateLimitError> {
        self.run(key, quota, cost, true).await.map(|_| ())
    }
}

/// What a Redis-backed limiter does while Redis fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRedisFailure {
    /// Refuse: the check fails (a chat turn answers 503 `unavailable`)
    /// until Redis answers again. Limits never turn into per-instance
    /// limits that multiply with the number of instances. The default.
    #[default]
    Refuse,
    /// Count in this instance meanwhile: chat keeps working, but with N
    /// instances a limit admits up to N times its quota while Redis is down.
    Local,
}

impl std::str::FromStr for OnRedisFailure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "refuse" => Ok(Self::Refuse),
            "local" => Ok(Self::Local),
            other => Err(format!("{other:?}: expected refuse or local")),
        }
    }
}

/// Redis, with a policy for when it fails ([`OnRedisFailure`]): refuse, or
/// this instance's own limiter. Every failure is logged and counted
/// ([`FailoverRateLimiter::failures`], exported in `/metrics`).
pub struct FailoverRateLimiter {
    primary: RedisRateLimiter,
    fallback: LocalRateLimiter,
    policy: OnRedisFailure,
    failures: std::sync::atomic::AtomicU64,
}

impl FailoverRateLimiter {
    /// Wraps a Redis limiter that refuses while Redis fails.
    pub fn new(primary: RedisRateLimiter) -> Self {
        Self::with_policy(primary, OnRedisFailure::Refuse)
    }

    /// Wraps a Redis limiter with the given failure policy.
    pub fn with_policy(primary: RedisRateLimiter, policy: OnRedisFailure) -> Self {
        Self {
            primary,
            fallback: LocalRateLimiter::new(),
            policy,
            failures: Default::default(),
        }
    }

    /// How many checks and charges Redis failed since the start.
    pub fn failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn failed(&self, e: &RateLimitError) {
        self.failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.policy {
            OnRedisFailure::Refuse => {
                tracing::error!(error = %e, "Redis rate limiter failed: refusing (CHATCORE_REDIS_FAILURE=refuse)")
            }
            OnRedisFailure::Local => {
                tracing::warn!(error = %e, "Redis rate limiter failed: counting in this instance (CHATCORE_REDIS_FAILURE=local)")
            }
        }
    }
}

#[async_trait]
impl RateLimiter for FailoverRateLimiter {
    async fn check(&self, key: &str, quota: Quota, cost: u32) -> Result<Decision, RateLimitError> {
        match self.primary.check(key, quota, cost).await {
            Ok(d) => Ok(d),
            Err(e) => {
                self.failed(&e);
                match self.policy {
                    OnRedisFailure::Refuse => Err(e),
                    OnRedisFailure::Local => self.fallback.check(key, quota, cost).await,
                }
            }
        }
    }

    async fn charge(&self, key: &str, quota: Quota, cost: u32) -> Result<(), RateLimitError> {
        match self.primary.charge(key, quota, cost).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.failed(&e);
                match self.policy {
                    OnRedisFailure::Refuse => Err(e),
                    OnRedisFailure::Local => self.fallback.charge(key, quota, cost).await,
                }
            }
        }
    }

    fn backend_failures(&self) -> u64 {
        self.failures()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_steady_rate() {
        let l = LocalRateLimiter::new();
        let q = Quota::per_minute(6); // one every 10 s, burst of 6
        for i in 0..6 {
            let d = l.check("k", q, 1).await.unwrap();
            assert_eq!(d, Decision::Allowed { remaining: 5 - i }, "request {i}");
        }
        let d = l.check("k", q, 1).await.unwrap();
        assert_eq!(
            d,
            Decision::Limited {
                retry_after: Duration::from_secs(10)
            }
        );
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!l.check("k", q, 1).await.unwrap().is_allowed());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(l.check("k", q, 1).await.unwrap().is_allowed());
        assert!(!l.check("k", q, 1).await.unwrap().is_allowed());
        // Keys are independent.
        assert!(l.check("other", q, 1).await.unwrap().is_allowed());
        // A full period restores the whole burst.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..6 {
            assert!(l.check("k", q, 1).await.unwrap().is_allowed());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_pruned_of_expired_keys_past_a_hundred_thousand() {
        let l = LocalRateLimiter::new();
        let q = Quota::per_minute(60);
        for i in 0..100_000 {
            l.check(&format!("k{i}"), q, 1).await.unwrap();
        }
        let len = || l.state.lock().unwrap().len();
        assert_eq!(len(), 100_000);
        // Exactly when their time comes (each key's TAT is now), the keys
        // carry no information any more.
        tokio::time::advance(Duration::from_secs(1)).await;
        // At the bound itself nothing is pruned...
        l.check("a", q, 1).await.unwrap();
        assert_eq!(len(), 100_001);
        // ... past it, every key whose time has passed goes; live ones stay.
        l.check("b", q, 1).await.unwrap();
        assert_eq!(len(), 2);
        assert_eq!(
            l.check("a", q, 60).await.unwrap(),
            Decision::Limited {
                retry_after: Duration::from_secs(1)
            },
            "a live key kept its state"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn costs_and_charges() {
        let l = LocalRateLimiter::new();
        let q = Quota::per_minute(1000); // tokens per minute
        assert!(l.check("t", q, 600).await.unwrap().is_allowed());
        let d = l.check("t", q, 600).await.unwrap();
        assert!(!d.is_allowed(), "600 + 600 > 1000");
        assert!(
            l.check("t", q, 400).await.unwrap().is_allowed(),
            "a refused check consumed nothing"
        );
        // Charged after the fact, beyond the limit: later requests wait.
        l.charge("t", q, 500).await.unwrap();
        match l.check("t", q, 1).await.unwrap() {
            Decision::Limited { retry_after } => {
                assert_eq!(retry_after, Duration::from_millis(30_060))
            }
            d => panic!("{d:?}"),
        }
        // A cost larger than the whole limit never fits.
        assert!(!l.check("fresh", q, 1001).await.unwrap().is_allowed());
    }

    #[tokio::test(start_paused = true)]
    async fn an_in_process_limiter_has_no_backend_to_fail() {
        let l = LocalRateLimiter::new();
        let q = Quota::per_minute(1);
        assert!(l.check("k", q, 1).await.unwrap().is_allowed());
        assert!(!l.check("k", q, 1).await.unwrap().is_allowed());
        l.charge("k", q, 5).await.unwrap();
        assert_eq!(l.backend_failures(), 0, "what /metrics exports for it");
    }

    #[test]
    fn the_redis_failure_policy_is_read_from_its_setting() {
        assert_eq!("refuse".parse(), Ok(OnRedisFailure::Refuse));
        assert_eq!(" local\n".parse(), Ok(OnRedisFailure::Local));
        assert_eq!(OnRedisFailure::default(), OnRedisFailure::Refuse);
        let e = "count-locally".parse::<OnRedisFailure>().unwrap_err();
        assert!(e.contains("expected refuse or local"), "{e}");
        assert!("".parse::<OnRedisFailure>().is_err());
    }
}
