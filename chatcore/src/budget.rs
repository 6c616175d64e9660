//! Spending budgets that concurrent requests cannot overspend.
//!
//! A [`Budget`] caps what a scope (tenant, API key, bot, end user of a bot)
//! may spend per period (UTC day, UTC month, rolling 24 hours). The failure
//! this module exists to prevent: every request checks the balance, sees
//! room, and then all of them spend. So a turn does not check, it
//! **reserves**: before the provider call, its worst case (the prompt's
//! estimate plus `max_tokens` or the bot's cap, at the dearest price of its
//! providers) is added to the reserved amount of every budget that applies,
//! in one atomic step that refuses when `spent + reserved + worst case`
//! would pass any of them. When the turn ends it **settles**: the
//! reservation goes and the message's real cost is added to `spent`. A
//! reservation whose turn died (the process was killed) expires after
//! [`BudgetSettings::reservation_ttl`].
//!
//! The atomic step is a [`BudgetLedger`]:
//! - [`LocalLedger`]: one process's memory, under one lock, for a single
//!   instance;
//! - [`RedisLedger`]: one Lua script per reservation and per settlement,
//!   run atomically by Redis, so any number of instances share a budget
//!   exactly.
//!
//! Either way the database is the record: a window's spent amount starts
//! from the sum of the stored messages' costs
//! ([`AuditStore::budget_spent`](crate::store::AuditStore::budget_spent))
//! the first time a ledger sees it (a fresh instance, a restarted Redis),
//! and from then on the live counter moves with exactly the costs that are
//! stored on messages, so `spent` equals their sum.
//!
//! When Redis fails, budgets **fail closed** (the turn is refused with
//! `503 unavailable`) unless [`BudgetSettings::fail_open`] is set; each
//! failure is logged and counted ([`BudgetService::ledger_errors`]). There is
//! no silent fallback to per-process counting: that would multiply every
//! budget by the number of instances.
//!
//! Known edge: a rolling window rebuilt from the database counts what was
//! spent in the last 24 hours as spent now, so it drains up to a day later
//! than it would have (conservative).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;

use crate::cache::TtlCache;
use crate::domain::*;
use crate::store::{Store, StoreError};

/// How budgets behave.
#[derive(Debug, Clone)]
pub struct BudgetSettings {
    /// Admit turns (unreserved) when the ledger fails, instead of refusing
    /// them. Off by default: a Redis outage must not lift every budget.
    pub fail_open: bool,
    /// How long a reservation lives without a settlement (a turn whose
    /// process died). Longer than the longest turn.
    pub reservation_ttl: Duration,
    /// Output tokens assumed for the worst case when neither the request
    /// nor the bot caps them.
    pub default_max_tokens: u32,
    /// How long a tenant's budgets stay cached.
    pub cache_ttl: Duration,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self {
            fail_open: false,
            reservation_ttl: Duration::from_secs(15 * 60),
            default_max_tokens: 4096,
            cache_ttl: Duration::from_secs(5),
        }
    }
}

/// The ledger failed (Redis unreachable, script error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("budget ledger unavailable: {0}")]
pub struct LedgerError(pub String);

/// A time window of a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Where it starts (rolling: 24 hours ago).
    pub start: DateTime<Utc>,
    /// Where it ends (None: rolling, it never ends).
    pub end: Option<DateTime<Utc>>,
    /// A name for keys: `d20261203`, `m202612`, `rolling`.
    pub name: String,
}

/// The window of `period` at `now`.
pub fn window(period: BudgetPeriod, now: DateTime<Utc>) -> Window {
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let today = now.date_naive();
    match period {
        BudgetPeriod::Day => Window {
            start: midnight(today),
            end: today.succ_opt().map(midnight),
            name: format!("d{}", today.format("%Y%m%d")),
        },
        BudgetPeriod::Month => {
            let first = today.with_day(1).expect("day 1");
            let next = if first.month() == 12 {
                NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
            };
            Window {
                start: midnight(first),
                end: next.map(midnight),
                name: format!("m{}", first.format("%Y%m")),
            }
        }
        BudgetPeriod::Rolling24h => Window {
            start: now - chrono::Duration::hours(24),
            end: None,
            name: "rolling".into(),
        },
    }
}

/// One budget line of a reservation, as a ledger sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The ledger key of the budget's window.
    pub key: String,
    /// The budget's amount.
    pub limit: i64,
    /// Whether it is a rolling window (spend kept per minute).
    pub rolling: bool,
    /// The window's spent amount from the database, when the ledger asked
    /// for it ([`Reserve::NeedSeed`]).
    pub seed: Option<i64>,
    /// When the ledger may forget the key (ms since the epoch).
    pub expire_at_ms: i64,
}

/// What a ledger answered to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// Reserved on every line.
    Admitted,
    /// Line `line` has no room; nothing was reserved. For a rolling
    /// window, when enough of its spend ages out (if it ever does).
    Refused {
        /// Index of the full line.
        line: usize,
        /// Rolling windows: time until the amount would fit.
        retry_after: Option<Duration>,
    },
    /// These lines' windows are not known yet: reserve again with their
    /// `seed` from the database.
    NeedSeed(Vec<usize>),
}

/// A window's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineState {
    /// Settled spend in the window.
    pub spent: i64,
    /// Held by turns under way.
    pub reserved: i64,
    /// Whether the ledger knows the window (else: read the database).
    pub known: bool,
}

/// The atomic step of budgets: reserve on several lines at once, settle.
#[async_trait]
pub trait BudgetLedger: Send + Sync + 'static {
    /// Reserves `amount` as `id` on every line if it fits all of them
    /// (`spent + reserved + amount <= limit`, and a full line refuses even
    /// an amount of 0); else reserves nothing.
    async fn reserve(
        &self,
        lines: &[Line],
        id: &str,
        amount: i64,
        ttl: Duration,
        now_ms: i64,
    ) -> Result<Reserve, LedgerError>;
    /// Ends reservation `id` on `lines` and adds `actual` to their spend
    /// (lines the ledger does not know are left to the database).
    async fn settle(
        &self,
        lines: &[Line],
        id: &str,
        actual: i64,
        now_ms: i64,
    ) -> Result<(), LedgerError>;
    /// The state of a line.
    async fn state(&self, line: &Line, now_ms: i64) -> Result<LineState, LedgerError>;
}

const MINUTE_MS: i64 = 60_000;
const DAY_MINUTES: i64 = 24 * 60;

/// One window in a [`LocalLedger`].
#[derive(Debug, Default)]
struct LocalLine {
    spent: i64,
    /// Rolling windows: spend per minute (ms / 60 000).
    buckets: BTreeMap<i64, i64>,
    /// id → (amount, expires at ms).
    reservations: HashMap<String, (i64, i64)>,
    expire_at_ms: i64,
}

impl LocalLine {
    fn prune(&mut self, now_ms: i64) {
        self.reservations.retain(|_, (_, exp)| *exp > now_ms);
        let oldest = now_ms / MINUTE_MS - DAY_MINUTES;
        self.buckets.retain(|m, _| *m > oldest);
    }
    fn used(&self, rolling: bool) -> (i64, i64) {
        let spent = if rolling {
            self.buckets.values().sum()
        } else {
            self.spent
        };
        (spent, self.reservations.values().map(|(a, _)| a).sum())
    }
    /// Rolling: time until `need` more fits under `limit` as minutes age out.
    fn retry_after(&self, limit: i64, need: i64, now_ms: i64) -> Option<Duration> {
        let (spent, reserved) = self.used(true);
        let mut over = spent + reserved + need - limit;
        for (m, v) in &self.buckets {
            over -= v;
            if over <= 0 && (need > 0 || over < 0) {
                let free_at = (m + DAY_MINUTES + 1) * MINUTE_MS;
                return Some(Duration::from_millis((free_at - now_ms).max(0) as u64));
            }
        }
        None
    }
}

/// Room for `amount`; a full budget refuses even a turn that costs nothing.
fn fits(spent: i64, reserved: i64, amount: i64, limit: i64) -> bool {
    let total = spent.saturating_add(reserved);
    total < limit && total.saturating_add(amount) <= limit
}

/// Budgets in this process's memory: exact for one instance.
#[derive(Debug, Default)]
pub struct LocalLedger {
    lines: Mutex<HashMap<String, LocalLine>>,
}

impl LocalLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl BudgetLedger for LocalLedger {
    async fn reserve(
        &self,
        lines: &[Line],
        id: &str,
        amount: i64,
        ttl: Duration,
        now_ms: i64,
    ) -> Result<Reserve, LedgerError> {
        let mut map = self.lines.lock().expect("budget ledger poisoned");
        if map.len() > 100_000 {
            map.retain(|_, l| l.expire_at_ms > now_ms);
        }
        let mut need = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if !map.contains_key(&l.key) {
                match l.seed {
                    Some(seed) => {
                        let mut line = LocalLine::default();
                        if l.rolling {
                            line.buckets.insert(now_ms / MINUTE_MS, seed);
                        } else {
                            line.spent = seed;
                        }
                        map.insert(l.key.clone(), line);
                    }
                    None => need.push(i),
                }
            }
        }
        if !need.is_empty() {
            return Ok(Reserve::NeedSeed(need));
        }
        for (i, l) in lines.iter().enumerate() {
            let line = map.get_mut(&l.key).expect("seeded above");
            line.prune(now_ms);
            let (spent, reserved) = line.used(l.rolling);
            if !fits(spent, reserved, amount, l.limit) {
                let retry_after = if l.rolling {
                    line.retry_after(l.limit, amount, now_ms)
                } else {
                    None
                };
                return Ok(Reserve::Refused {
                    line: i,
                    retry_after,
                });
            }
        }
        let exp = now_ms + ttl.as_millis() as i64;
        for l in lines {
            let line = map.get_mut(&l.key).expect("seeded above");
            line.reservations.insert(id.to_string(), (amount, exp));
            line.expire_at_ms = line.expire_at_ms.max(l.expire_at_ms);
        }
        Ok(Reserve::Admitted)
    }

    async fn settle(
        &self,
        lines: &[Line],
        id: &str,
        actual: i64,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let mut map = self.lines.lock().expect("budget ledger poisoned");
        for l in lines {
            if let Some(line) = map.get_mut(&l.key) {
                line.reservations.remove(id);
                if actual != 0 {
                    if l.rolling {
                        *line.buckets.entry(now_ms / MINUTE_MS).or_default() += actual;
                    } else {
                        line.spent += actual;
                    }
                }
            }
        }
        Ok(())
    }

    async fn state(&self, l: &Line, now_ms: i64) -> Result<LineState, LedgerError> {
        let mut map = self.lines.lock().expect("budget ledger poisoned");
        Ok(match map.get_mut(&l.key) {
            Some(line) => {
                line.prune(now_ms);
                let (spent, reserved) = line.used(l.rolling);
                LineState {
                    spent,
                    reserved,
                    known: true,
                }
            }
            None => LineState::default(),
        })
    }
}

/// Reserve on every key or none. KEYS: the lines. ARGV: now (ms), id,
/// amount, reservation expiry (ms), then per line: limit, rolling (0/1),
/// seed ('' when unknown), key expiry (ms since the epoch).
/// Returns {1} admitted, {0, line, retry_ms or -1} refused, {-1, lines...}
/// seeds needed (lines 1-based).
const RESERVE_LUA: &str = r#"
local now = tonumber(ARGV[1])
local id = ARGV[2]
local amount = tonumber(ARGV[3])
local exp = tonumber(ARGV[4])
local minute = math.floor(now / 60000)
local need = {}
for i = 1, #KEYS do
  local base = 4 + (i - 1) * 4
  if redis.call('HEXISTS', KEYS[i], 'seeded') == 0 then
    local seed = ARGV[base + 3]
    if seed == '' then
      table.insert(need, i)
    else
      redis.call('HSET', KEYS[i], 'seeded', '1')
      local s = tonumber(seed)
      if s ~= 0 then
        if ARGV[base + 2] == '1' then
          redis.call('HINCRBY', KEYS[i], 'b:' .. minute, s)
        else
          redis.call('HINCRBY', KEYS[i], 'spent', s)
        end
      end
      redis.call('PEXPIREAT', KEYS[i], tonumber(ARGV[base + 4]))
    end
  end
end
if #need > 0 then
  local out = {-1}
  for _, i in ipairs(need) do table.insert(out, i) end
  return out
end
for i = 1, #KEYS do
  local base = 4 + (i - 1) * 4
  local limit = tonumber(ARGV[base + 1])
  local rolling = ARGV[base + 2] == '1'
  local h = redis.call('HGETALL', KEYS[i])
  local spent, reserved = 0, 0
  local buckets = {}
  for j = 1, #h, 2 do
    local f, v = h[j], h[j + 1]
    local kind = string.sub(f, 1, 2)
    if kind == 'r:' then
      local a, e = string.match(v, '^(-?%d+):(%d+)$')
      if tonumber(e) <= now then
        redis.call('HDEL', KEYS[i], f)
      else
        reserved = reserved + tonumber(a)
      end
    elseif rolling and kind == 'b:' then
      local m = tonumber(string.sub(f, 3))
      if m <= minute - 1440 then
        redis.call('HDEL', KEYS[i], f)
      else
        spent = spent + tonumber(v)
        table.insert(buckets, {m, tonumber(v)})
      end
    elseif (not rolling) and f == 'spent' then
      spent = tonumber(v)
    end
  end
  local total = spent + reserved
  if total + amount > limit or total >= limit then
    local retry = -1
    if rolling then
      table.sort(buckets, function(a, b) return a[1] < b[1] end)
      local over = total + amount - limit
      for _, b in ipairs(buckets) do
        over = over - b[2]
        if over <= 0 and (amount > 0 or over < 0) then
          retry = (b[1] + 1441) * 60000 - now
          break
        end
      end
    end
    return {0, i, retry}
  end
end
for i = 1, #KEYS do
  local base = 4 + (i - 1) * 4
  redis.call('HSET', KEYS[i], 'r:' .. id, amount .. ':' .. exp)
  local until_ms = math.max(tonumber(ARGV[base + 4]), exp)
  redis.call('PEXPIREAT', KEYS[i], until_ms)
end
return {1}
"#;

/// Settle on every key. KEYS: the lines. ARGV: now (ms), id, actual, then
/// per line: rolling (0/1). A key the ledger does not know (expired,
/// Redis restarted) is left alone: its next reservation reads the
/// database, which has the cost.
const SETTLE_LUA: &str = r#"
local now = tonumber(ARGV[1])
local id = ARGV[2]
local actual = tonumber(ARGV[3])
local minute = math.floor(now / 60000)
for i = 1, #KEYS do
  if redis.call('HEXISTS', KEYS[i], 'seeded') == 1 then
    redis.call('HDEL', KEYS[i], 'r:' .. id)
    if actual ~= 0 then
      if ARGV[3 + i] == '1' then
        redis.call('HINCRBY', KEYS[i], 'b:' .. minute, actual)
      else
        redis.call('HINCRBY', KEYS[i], 'spent', actual)
      end
    end
  end
end
return 1
"#;

/// State of one key. ARGV: now (ms), rolling (0/1). Returns {known,
/// spent, reserved}.
const STATE_LUA: &str = r#"
local now = tonumber(ARGV[1])
local rolling = ARGV[2] == '1'
local minute = math.floor(now / 60000)
if redis.call('HEXISTS', KEYS[1], 'seeded') == 0 then return {0, 0, 0} end
local h = redis.call('HGETALL', KEYS[1])
local spent, reserved = 0, 0
for j = 1, #h, 2 do
  local f, v = h[j], h[j + 1]
  local kind = string.sub(f, 1, 2)
  if kind == 'r:' then
    local a, e = string.match(v, '^(-?%d+):(%d+)$')
    if tonumber(e) > now then reserved = reserved + tonumber(a) end
  elseif rolling and kind == 'b:' then
    if tonumber(string.sub(f, 3)) > minute - 1440 then spent = spent + tonumber(v) end
  elseif (not rolling) and f == 'spent' then
    spent = tonumber(v)
  end
end
return {1, spent, reserved}
"#;

/// Budgets in Redis: every instance sharing the Redis shares each budget
/// exactly. Keys are `chatcore:budget:<id>:<window>`.
#[derive(Clone)]
pub struct RedisLedger {
    conn: redis::aio::ConnectionManager,
    reserve: redis::Script,
    settle: redis::Script,
    state: redis::Script,
}

impl std::fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLedger").finish_non_exhaustive()
    }
}

fn redis_err(what: &str, e: &redis::RedisError) -> LedgerError {
    // Kind and code only: the full text can echo the URL.
    LedgerError(format!(
        "{what}: {:?}{}",
        e.kind(),
        e.code().map(|c| format!(" ({c})")).unwrap_or_default()
    ))
}

impl RedisLedger {
    /// Connects to `url` (never logged: it may hold a password).
    pub async fn connect(url: &str) -> Result<Self, LedgerError> {
        let client =
            redis::Client::open(url).map_err(|_| LedgerError("invalid Redis URL".into()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let conn = redis::aio::ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| redis_err("cannot connect to Redis", &e))?;
        Ok(Self {
            conn,
            reserve: redis::Script::new(RESERVE_LUA),
            settle: redis::Script::new(SETTLE_LUA),
            state: redis::Script::new(STATE_LUA),
        })
    }
}

#[async_trait]
impl BudgetLedger for RedisLedger {
    async fn reserve(
        &self,
        lines: &[Line],
        id: &str,
        amount: i64,
        ttl: Duration,
        now_ms: i64,
    ) -> Result<Reserve, LedgerError> {
        let mut inv = self.reserve.prepare_invoke();
        for l in lines {
            inv.key(&l.key);
        }
        inv.arg(now_ms)
            .arg(id)
            .arg(amount)
            .arg(now_ms + ttl.as_millis() as i64);
        for l in lines {
            inv.arg(l.limit)
                .arg(if l.rolling { 1 } else { 0 })
                .arg(l.seed.map(|s| s.to_string()).unwrap_or_default())
                .arg(l.expire_at_ms);
        }
        let mut conn = self.conn.clone();
        let r: Vec<i64> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_err("Redis budget script failed", &e))?;
        Ok(match r.first() {
            Some(1) => Reserve::Admitted,
            Some(0) => Reserve::Refused {
                line: r.get(1).map_or(0, |i| (*i as usize).saturating_sub(1)),
                retry_after: r
                    .get(2)
                    .filter(|ms| **ms >= 0)
                    .map(|ms| Duration::from_millis(*ms as u64)),
            },
            _ => Reserve::NeedSeed(
                r.iter()
                    .skip(1)
                    .map(|i| (*i as usize).saturating_sub(1))
                    .collect(),
            ),
        })
    }

    async fn settle(
        &self,
        lines: &[Line],
        id: &str,
        actual: i64,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let mut inv = self.settle.prepare_invoke();
        for l in lines {
            inv.key(&l.key);
        }
        inv.arg(now_ms).arg(id).arg(actual);
        for l in lines {
            inv.arg(if l.rolling { 1 } else { 0 });
        }
        let mut conn = self.conn.clone();
        let _: i64 = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_err("Redis budget script failed", &e))?;
        Ok(())
    }

    async fn state(&self, l: &Line, now_ms: i64) -> Result<LineState, LedgerError> {
        let mut conn = self.conn.clone();
        let r: Vec<i64> = self
            .state
            .key(&l.key)
            .arg(now_ms)
            .arg(if l.rolling { 1 } else { 0 })
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_err("Redis budget script failed", &e))?;
        Ok(LineState {
            known: r.first() == Some(&1),
            spent: r.get(1).copied().unwrap_or(0),
            reserved: r.get(2).copied().unwrap_or(0),
        })
    }
}

/// Why a turn was refused by a budget.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BudgetError {
    /// A budget has no room for the turn's worst case.
    #[error("budget {budget} ({scope}, {period}) is exhausted")]
    Exceeded {
        /// The full budget.
        budget: BudgetId,
        /// Its scope.
        scope: BudgetScope,
        /// Its period.
        period: BudgetPeriod,
        /// When its period ends (or rolling spend ages out), if known.
        retry_after: Option<Duration>,
    },
    /// The ledger (or the store under it) failed and budgets fail closed.
    #[error("{message}")]
    Unavailable {
        /// What cannot be done right now.
        message: String,
        /// The store's error, when that is what failed. (A Redis ledger's
        /// error is logged where it happens, by kind and code only: its
        /// full text can echo the URL and its password.)
        #[source]
        source: Option<crate::error::Cause>,
    },
}

/// A budget's state, for `GET /v1/budgets`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetState {
    /// The budget.
    #[serde(flatten)]
    pub budget: Budget,
    /// Currency of the amounts.
    pub currency: &'static str,
    /// Settled spend in the current window, micro-units.
    pub spent_micros: i64,
    /// Held by turns under way, micro-units.
    pub reserved_micros: i64,
    /// What is left: amount − spent − reserved (never below 0).
    pub remaining_micros: i64,
    /// Start of the current window.
    pub window_start: DateTime<Utc>,
    /// End of the current window (none for a rolling one).
    pub window_end: Option<DateTime<Utc>>,
}

/// A turn's reservation. Settle it with [`BudgetService::settle`]; if it is
/// dropped unsettled (the turn failed before the provider call), it is
/// released with nothing spent.
pub struct Hold {
    id: String,
    lines: Vec<Line>,
    amount: i64,
    settled: AtomicBool,
    ledger: Arc<dyn BudgetLedger>,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("id", &self.id)
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

impl Hold {
    /// The reserved worst case, micro-units.
    pub fn amount(&self) -> i64 {
        self.amount
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        let (ledger, lines, id) = (
            self.ledger.clone(),
            std::mem::take(&mut self.lines),
            self.id.clone(),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = ledger.settle(&lines, &id, 0, now_ms()).await {
                    tracing::warn!(error = %e, "could not release a budget reservation (it expires)");
                }
            });
        }
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Budgets for the engine: which apply to a turn, reserve, settle, state.
pub struct BudgetService {
    store: Arc<dyn Store>,
    ledger: Arc<dyn BudgetLedger>,
    settings: BudgetSettings,
    cache: TtlCache<TenantId, Arc<Vec<Budget>>>,
    errors: AtomicU64,
}

impl std::fmt::Debug for BudgetService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl BudgetService {
    /// Budgets of `store` kept by `ledger`.
    pub fn new(
        store: Arc<dyn Store>,
        ledger: Arc<dyn BudgetLedger>,
        settings: BudgetSettings,
    ) -> Self {
        Self {
            cache: TtlCache::new(settings.cache_ttl, 100_000),
            store,
            ledger,
            settings,
            errors: AtomicU64::new(0),
        }
    }

    /// In this process only.
    pub fn local(store: Arc<dyn Store>) -> Self {
        Self::new(
            store,
            Arc::new(LocalLedger::new()),
            BudgetSettings::default(),
        )
    }

    /// The settings.
    pub fn settings(&self) -> &BudgetSettings {
        &self.settings
    }

    /// How often the ledger failed since the start (for `/metrics`).
    pub fn ledger_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Forgets a tenant's cached budgets (after a change).
    pub fn invalidate(&self, tenant: TenantId) {
        self.cache.remove_where(|t, _| *t == tenant);
    }

    async fn budgets(&self, tenant: TenantId) -> Result<Arc<Vec<Budget>>, StoreError> {
        if let Some(b) = self.cache.get(&tenant) {
            return Ok(b);
        }
        let b = Arc::new(self.store.list_budgets(tenant).await?);
        self.cache.insert(tenant, b.clone());
        Ok(b)
    }

    fn line(b: &Budget, now: DateTime<Utc>) -> (Line, Window) {
        let w = window(b.period, now);
        // The amount is not in the key: a changed amount applies to the
        // spend so far. The period is (in the window's name).
        let expire = match w.end {
            Some(end) => end + chrono::Duration::hours(1),
            None => now + chrono::Duration::hours(25),
        };
        (
            Line {
                key: format!("chatcore:budget:{}:{}", b.id, w.name),
                limit: b.amount_micros,
                rolling: b.period == BudgetPeriod::Rolling24h,
                seed: None,
                expire_at_ms: expire.timestamp_millis(),
            },
            w,
        )
    }

    fn failed(&self, e: &LedgerError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, fail_open = self.settings.fail_open, "budget ledger failed");
    }

    /// Reserves `amount` (a turn's worst case) on every budget of `tenant`
    /// that applies to a turn of `bot` with `key` for `end_user`. None when
    /// no budget applies (or the ledger failed and budgets fail open).
    pub async fn reserve(
        &self,
        tenant: TenantId,
        bot: BotId,
        key: Option<ApiKeyId>,
        end_user: Option<&str>,
        amount: i64,
    ) -> Result<Option<Hold>, BudgetError> {
        let all = self
            .budgets(tenant)
            .await
            .map_err(|e| BudgetError::Unavailable {
                message: "budgets cannot be read from the store".into(),
                source: Some(crate::error::Cause::new(e)),
            })?;
        let applying: Vec<&Budget> = all
            .iter()
            .filter(|b| b.applies(bot, key, end_user))
            .collect();
        if applying.is_empty() {
            return Ok(None);
        }
        let now = Utc::now();
        let (mut lines, windows): (Vec<Line>, Vec<Window>) =
            applying.iter().map(|b| Self::line(b, now)).unzip();
        let id = uuid::Uuid::now_v7().to_string();
        let amount = amount.max(0);
        for _ in 0..3 {
            let r = self
                .ledger
                .reserve(&lines, &id, amount, self.settings.reservation_ttl, now_ms())
                .await;
            match r {
                Ok(Reserve::Admitted) => {
                    return Ok(Some(Hold {
                        id,
                        lines,
                        amount,
                        settled: AtomicBool::new(false),
                        ledger: self.ledger.clone(),
                    }));
                }
                Ok(Reserve::Refused { line, retry_after }) => {
                    let b = applying[line.min(applying.len() - 1)];
                    let w = &windows[line.min(windows.len() - 1)];
                    let retry_after = match w.end {
                        Some(end) => (end - now).to_std().ok(),
                        None => retry_after,
                    };
                    return Err(BudgetError::Exceeded {
                        budget: b.id,
                        scope: b.scope,
                        period: b.period,
                        retry_after,
                    });
                }
                Ok(Reserve::NeedSeed(need)) => {
                    for i in need {
                        let (Some(b), Some(w)) = (applying.get(i), windows.get(i)) else {
                            continue;
                        };
                        let spent =
                            self.store
                                .budget_spent(tenant, b, w.start)
                                .await
                                .map_err(|e| BudgetError::Unavailable {
                                    message: "budgets cannot be read from the store".into(),
                                    source: Some(crate::error::Cause::new(e)),
                                })?;
                        lines[i].seed = Some(spent);
                    }
                }
                Err(e) => {
                    self.failed(&e);
                    if self.settings.fail_open {
                        return Ok(None);
                    }
                    return Err(BudgetError::Unavailable {
                        message: "budgets cannot be checked right now".into(),
                        source: None,
                    });
                }
            }
        }
        Err(BudgetError::Unavailable {
            message: "budgets cannot be checked right now".into(),
            source: None,
        })
    }

    /// Ends a reservation: the turn cost `actual` micro-units (what is
    /// stored on its message).
    pub async fn settle(&self, hold: &Hold, actual: i64) {
        if hold.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self
            .ledger
            .settle(&hold.lines, &hold.id, actual, now_ms())
            .await
        {
            self.failed(&e);
        }
    }

    /// The state of every budget of a tenant, in its current window.
    pub async fn states(&self, tenant: TenantId) -> Result<Vec<BudgetState>, BudgetError> {
        let all = self
            .store
            .list_budgets(tenant)
            .await
            .map_err(|e| BudgetError::Unavailable {
                message: "budgets cannot be read from the store".into(),
                source: Some(crate::error::Cause::new(e)),
            })?;
        let mut out = Vec::with_capacity(all.len());
        for b in all {
            out.push(self.state(&b).await?);
        }
        Ok(out)
    }

    /// The state of one budget in its current window: the ledger's, or the
    /// database's when the ledger has not seen the window yet.
    pub async fn state(&self, b: &Budget) -> Result<BudgetState, BudgetError> {
        let now = Utc::now();
        let (line, w) = Self::line(b, now);
        let s = match self.ledger.state(&line, now_ms()).await {
            Ok(s) => s,
            Err(e) => {
                self.failed(&e);
                return Err(BudgetError::Unavailable {
                    message: "budgets cannot be read right now".into(),
                    source: None,
                });
            }
        };
        let (spent, reserved) = if s.known {
            (s.spent, s.reserved)
        } else {
            let spent = self
                .store
                .budget_spent(b.tenant_id, b, w.start)
                .await
                .map_err(|e| BudgetError::Unavailable {
                    message: "budgets cannot be read from the store".into(),
                    source: Some(crate::error::Cause::new(e)),
                })?;
            (spent, 0)
        };
        Ok(BudgetState {
            budget: b.clone(),
            currency: crate::pricing::CURRENCY,
            spent_micros: spent,
            reserved_micros: reserved,
            remaining_micros: (b.amount_micros - spent - reserved).max(0),
            window_start: w.start,
            window_end: w.end,
        })
    }
}

/// Where a chat service keeps its budgets: set once (e.g. with a Redis
/// ledger) before the first turn, else the in-process default on first
/// use. Clones share it, so the management service sees the chat
/// service's budgets however they were set.
#[derive(Clone)]
pub struct BudgetSlot {
    slot: Arc<std::sync::OnceLock<Arc<BudgetService>>>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for BudgetSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetSlot")
            .field("set", &self.slot.get().is_some())
            .finish()
    }
}

impl BudgetSlot {
    /// An empty slot over `store` (for the default).
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            slot: Default::default(),
            store,
        }
    }

    /// Sets the budgets; false if they were set (or used) already.
    pub fn set(&self, budgets: Arc<BudgetService>) -> bool {
        self.slot.set(budgets).is_ok()
    }

    /// The budgets: the ones set, else the in-process default.
    pub fn get(&self) -> &Arc<BudgetService> {
        self.slot
            .get_or_init(|| Arc::new(BudgetService::local(self.store.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(key: &str, limit: i64, rolling: bool) -> Line {
        Line {
            key: key.into(),
            limit,
            rolling,
            seed: Some(0),
            expire_at_ms: i64::MAX,
        }
    }

    #[test]
    fn windows_are_utc_days_and_months() {
        let t = "2026-12-31T23:30:00Z".parse::<DateTime<Utc>>().unwrap();
        let d = window(BudgetPeriod::Day, t);
        assert_eq!(d.start.to_rfc3339(), "2026-12-31T00:00:00+00:00");
        assert_eq!(d.end.unwrap().to_rfc3339(), "2027-01-01T00:00:00+00:00");
        let m = window(BudgetPeriod::Month, t);
        assert_eq!(m.start.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(m.end.unwrap().to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert_eq!(m.name, "m202612");
        let r = window(BudgetPeriod::Rolling24h, t);
        assert_eq!(r.end, None);
        assert_eq!(r.start, t - chrono::Duration::hours(24));
    }

    #[tokio::test]
    async fn reservations_hold_room_and_settle_to_the_real_cost() {
        let l = LocalLedger::new();
        let lines = [line("a", 100, false)];
        let ttl = Duration::from_secs(60);
        assert_eq!(
            l.reserve(&lines, "1", 60, ttl, 0).await.unwrap(),
            Reserve::Admitted
        );
        // 60 reserved: 50 more does not fit.
        assert!(matches!(
            l.reserve(&lines, "2", 50, ttl, 0).await.unwrap(),
            Reserve::Refused { line: 0, .. }
        ));
        // Settled at 30: 70 fits now.
        l.settle(&lines, "1", 30, 0).await.unwrap();
        assert_eq!(
            l.reserve(&lines, "3", 70, ttl, 0).await.unwrap(),
            Reserve::Admitted
        );
        let s = l.state(&lines[0], 0).await.unwrap();
        assert_eq!((s.spent, s.reserved), (30, 70));
        // A full budget refuses even a turn that costs nothing.
        l.settle(&lines, "3", 70, 0).await.unwrap();
        assert!(matches!(
            l.reserve(&lines, "4", 0, ttl, 0).await.unwrap(),
            Reserve::Refused { .. }
        ));
    }

    #[tokio::test]
    async fn a_dead_turns_reservation_expires() {
        let l = LocalLedger::new();
        let lines = [line("a", 100, false)];
        let ttl = Duration::from_secs(60);
        l.reserve(&lines, "dead", 100, ttl, 0).await.unwrap();
        assert!(matches!(
            l.reserve(&lines, "x", 1, ttl, 59_999).await.unwrap(),
            Reserve::Refused { .. }
        ));
        assert_eq!(
            l.reserve(&lines, "x", 1, ttl, 60_000).await.unwrap(),
            Reserve::Admitted
        );
    }

    #[tokio::test]
    async fn all_lines_or_none_and_unknown_lines_ask_for_a_seed() {
        let l = LocalLedger::new();
        let ttl = Duration::from_secs(60);
        let mut lines = vec![line("big", 1000, false), line("small", 10, false)];
        lines[1].seed = None;
        assert_eq!(
            l.reserve(&lines, "1", 5, ttl, 0).await.unwrap(),
            Reserve::NeedSeed(vec![1])
        );
        lines[1].seed = Some(8);
        assert!(matches!(
            l.reserve(&lines, "1", 5, ttl, 0).await.unwrap(),
            Reserve::Refused { line: 1, .. }
        ));
        // Nothing was held on the big one.
        assert_eq!(l.state(&lines[0], 0).await.unwrap().reserved, 0);
    }

    #[tokio::test]
    async fn rolling_spend_ages_out_after_a_day() {
        let l = LocalLedger::new();
        let lines = [line("r", 100, true)];
        let ttl = Duration::from_secs(60);
        l.reserve(&lines, "1", 100, ttl, 0).await.unwrap();
        l.settle(&lines, "1", 100, 0).await.unwrap();
        let Reserve::Refused { retry_after, .. } =
            l.reserve(&lines, "2", 1, ttl, 3_600_000).await.unwrap()
        else {
            panic!()
        };
        // Spent in minute 0: it leaves the window 24 h and a minute later.
        assert_eq!(
            retry_after,
            Some(Duration::from_millis((1441 * 60_000 - 3_600_000) as u64))
        );
        assert_eq!(
            l.reserve(&lines, "2", 1, ttl, 1441 * 60_000).await.unwrap(),
            Reserve::Admitted
        );
    }
}
