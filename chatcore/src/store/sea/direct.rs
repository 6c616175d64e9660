//! The group-commit writer of a SQLite file without hand-offs.
//!
//! sqlx runs each SQLite connection on a worker thread of its own, so every
//! statement of a batch is two thread hand-offs (the statement to the
//! worker, the result back to the tokio task that builds the next one).
//! Under load the writer is one serial chain, and those hand-offs and
//! wake-ups were most of it: in the wire benchmark at 64 concurrent the
//! server's two tokio workers sat at 40% each while the writer's chain
//! (its task and sqlx's thread) was saturated.
//!
//! Here the writer's task runs on a thread of its own (a current-thread
//! runtime) with its own SQLite connection (rusqlite, the same
//! `libsqlite3-sys` as sqlx): the writer's statements are still built by
//! the same SeaORM and sea-query code as on PostgreSQL (see
//! `writer::WriteConn`), and each runs to completion on the writer's
//! thread, from a cache of prepared statements. Callers hand a batch over
//! once and are answered once.
//!
//! Values are bound exactly as sqlx binds them (UUIDs as 16-byte blobs,
//! timestamps as RFC 3339 text, JSON as text, booleans as integers), so
//! the rows read the same through the store's sqlx pool; the few rows the
//! writer reads back (messages, conversations, bots' tenants) are decoded
//! the way sqlx decodes them.
//!
//! Only the writer uses this connection; every other statement of the
//! store goes through sqlx. SQLite in memory keeps the sqlx writer (a
//! second connection would be a second database).
//!
//! The WAL is checkpointed by a thread and connection of its own
//! ([`spawn_checkpointer`]), not by the commit that crosses SQLite's
//! threshold: a checkpoint copies the WAL into the database file and
//! syncs both (about 10 ms for 4 MiB on the reference machine), and with
//! the automatic checkpoint the turn whose commit crossed the threshold
//! waited for it: at one concurrent request, p99 was 4-7 ms against a
//! p50 of 0.6-0.8 ms (2-2.6 ms with the checkpointer).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use rusqlite::types::{Value as Sql, ValueRef};
use sea_orm::sea_query::Value;
use sea_orm::{DbErr, RuntimeErr, Statement};
use uuid::Uuid;

use super::e;

/// The writer's own SQLite connection.
pub(super) struct DirectSqlite {
    conn: Mutex<rusqlite::Connection>,
    path: PathBuf,
    /// Transactions committed, read by the checkpointer.
    commits: Arc<AtomicU64>,
    /// Held by whoever checkpoints (two at once: one would fail busy).
    /// Taken after [`DirectSqlite::gate`] by whoever needs both.
    checkpointing: Arc<Mutex<()>>,
    /// Held for each of the writer's transactions (see [`DirectSqlite::gate`]).
    gate: Arc<Mutex<()>>,
    /// Set by the checkpointer when the WAL should start over and the gate
    /// was busy: the writer's thread does it after its batch.
    restart_wanted: Arc<AtomicBool>,
}

impl std::fmt::Debug for DirectSqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectSqlite").finish_non_exhaustive()
    }
}

impl DirectSqlite {
    /// Opens `path` with the pragmas of the store's sqlx pool (WAL,
    /// `synchronous = NORMAL`, foreign keys, a 5 s busy timeout), without
    /// the automatic checkpoint: [`spawn_checkpointer`] does it.
    pub fn open(path: &Path) -> Result<Self, DbErr> {
        let conn = rusqlite::Connection::open(path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA wal_autocheckpoint = 0;",
        )
        .map_err(err)?;
        conn.set_prepared_statement_cache_capacity(256);
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            commits: Arc::default(),
            checkpointing: Arc::default(),
            gate: Arc::default(),
            restart_wanted: Arc::default(),
        })
    }

    /// Held for each transaction on this connection, from its `BEGIN` to
    /// its `COMMIT`, and by the checkpointer while it resets the WAL.
    pub fn gate(&self) -> &Mutex<()> {
        &self.gate
    }

    /// Counts a committed transaction (the checkpointer's cue).
    pub fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// How long a statement waits for another connection's write lock:
    /// [`BUSY_TIMEOUT`] on the writer's thread; zero for a caller that
    /// writes in place and would rather queue than block its thread.
    pub fn set_busy_timeout(&self, wait: Duration) -> Result<(), DbErr> {
        self.lock()?.busy_timeout(wait).map_err(err)
    }

    /// Starts the thread that checkpoints the WAL. Every
    /// [`CHECKPOINT_EVERY`] in which something was committed, it copies
    /// the WAL into the database file with a passive checkpoint, on a
    /// connection of its own: no writer waits for it, and it waits for no
    /// writer. That alone would let the WAL grow without end under
    /// sustained writes (SQLite starts the WAL over only when a
    /// transaction begins with every frame copied, and frames keep coming
    /// while a checkpoint runs: 700 MB in 10 s in the wire benchmark).
    /// So once the WAL holds [`RESTART_FRAMES`], the checkpointer copies
    /// once more without the gate, then, with the writer's gate, copies
    /// the few frames written meanwhile: the next transaction then starts
    /// the WAL over. Writers wait for that short step only (the second
    /// copy without the gate took p99 at 64 concurrent from 16-18 ms to
    /// 14-15 ms in the wire benchmark; with no restart at all it was
    /// 13-15 ms). The gate is only tried: while batches follow each other,
    /// the writer's thread takes it again before a waiting checkpointer
    /// wakes, and the WAL grew past 100 MB in the sustained-writes test.
    /// When it is busy, the checkpointer asks the writer's thread instead,
    /// which restarts the WAL after its batch ([`Self::restart_if_wanted`]).
    /// The thread ends when `stop`'s sender is dropped.
    pub fn spawn_checkpointer(&self, stop: mpsc::Receiver<()>) -> std::io::Result<()> {
        // A short busy timeout: the reset waits for other connections'
        // writers and readers while it holds the writer's gate; it would
        // rather try again next time.
        let conn = rusqlite::Connection::open(&self.path)
            .and_then(|c| c.busy_timeout(Duration::from_millis(100)).map(|_| c))
            .map_err(std::io::Error::other)?;
        let (commits, checkpointing, gate, wanted) = (
            self.commits.clone(),
            self.checkpointing.clone(),
            self.gate.clone(),
            self.restart_wanted.clone(),
        );
        std::thread::Builder::new()
            .name("chatcore-wal".into())
            .spawn(move || {
                let mut seen = commits.load(Ordering::Relaxed);
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY)
                {
                    let now = commits.load(Ordering::Relaxed);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    // A panic elsewhere must not stop the checkpoints (the
                    // WAL would grow without end): poisoned locks still lock.
                    let frames = {
                        let _c = checkpointing.lock().unwrap_or_else(|p| p.into_inner());
                        checkpoint(&conn, "PASSIVE")
                    };
                    if frames.is_some_and(|f| f >= RESTART_FRAMES) {
                        // Once more without the gate: the writers wait
                        // only for what is written meanwhile.
                        {
                            let _c = checkpointing.lock().unwrap_or_else(|p| p.into_inner());
                            checkpoint(&conn, "PASSIVE");
                        }
                        let _g = match gate.try_lock() {
                            Ok(g) => g,
                            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                            Err(std::sync::TryLockError::WouldBlock) => {
                                wanted.store(true, Ordering::Release);
                                continue;
                            }
                        };
                        let _c = checkpointing.lock().unwrap_or_else(|p| p.into_inner());
                        checkpoint(&conn, "RESTART");
                        wanted.store(false, Ordering::Release);
                    }
                }
            })
            .map(|_| ())
    }

    /// Has the WAL start over if the checkpointer asked for it: called by
    /// the writer's thread after a batch, with the gate held and no
    /// transaction open. Readers still on an older snapshot are waited
    /// for 10 ms at most (the turns queued behind this batch wait too); a
    /// restart that could not finish is asked for again at the next
    /// checkpoint.
    pub fn restart_if_wanted(&self) {
        if !self.restart_wanted.swap(false, Ordering::AcqRel) {
            return;
        }
        let _c = self.checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(conn) = self.lock() else { return };
        if conn.busy_timeout(Duration::from_millis(10)).is_ok() {
            checkpoint(&conn, "RESTART");
        }
        if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
            tracing::warn!(error = %e, "could not restore the writer's busy timeout");
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, rusqlite::Connection>, DbErr> {
        self.conn.lock().map_err(|_| {
            DbErr::Conn(RuntimeErr::Internal(
                "the writer's connection is poisoned".into(),
            ))
        })
    }

    /// Moves everything in the WAL into the database file and empties the
    /// WAL, so that the file alone holds every committed write (a backup
    /// that copies only `chatcore.db` after a flush misses nothing). Run
    /// on a flush, which the server does at shutdown.
    pub fn checkpoint(&self) -> Result<(), DbErr> {
        let _g = self.checkpointing.lock().map_err(|_| {
            DbErr::Conn(RuntimeErr::Internal(
                "the checkpoint lock is poisoned".into(),
            ))
        })?;
        let conn = self.lock()?;
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(err)?;
        if busy != 0 {
            return Err(DbErr::Exec(RuntimeErr::Internal(
                "the WAL checkpoint was blocked by a reader".into(),
            )));
        }
        Ok(())
    }

    /// Runs a statement without rows.
    pub fn exec(&self, st: Statement) -> Result<u64, DbErr> {
        let conn = self.lock()?;
        let args = params(st.values)?;
        let mut stmt = conn.prepare_cached(&st.sql).map_err(err)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(args.iter()))
            .map_err(err)?;
        Ok(n as u64)
    }

    /// Runs a query, each row decoded by `f`.
    pub fn rows<T>(
        &self,
        st: Statement,
        f: impl Fn(&Named<'_, '_>) -> Result<T, DbErr>,
    ) -> Result<Vec<T>, DbErr> {
        let conn = self.lock()?;
        let args = params(st.values)?;
        let mut stmt = conn.prepare_cached(&st.sql).map_err(err)?;
        let names: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args.iter()))
            .map_err(err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            out.push(f(&Named {
                row,
                names: &names,
                next: Cell::new(0),
            })?);
        }
        Ok(out)
    }
}

/// How long the writer waits for another connection's write lock.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the WAL is checkpointed while something is written.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The WAL's size, in frames (pages), from which the checkpointer has it
/// start over ([`DirectSqlite::spawn_checkpointer`]): SQLite's own
/// automatic checkpoint threshold, about 4 MiB.
const RESTART_FRAMES: i64 = 1000;

/// Runs `PRAGMA wal_checkpoint(mode)`; the frames in the WAL, or `None`
/// (logged) when it failed.
fn checkpoint(conn: &rusqlite::Connection, mode: &str) -> Option<i64> {
    match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        r.get::<_, i64>(1)
    }) {
        Ok(frames) => Some(frames),
        Err(e) => {
            tracing::warn!(error = %e, mode, "could not checkpoint the WAL");
            None
        }
    }
}

fn err(e: rusqlite::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::Internal(e.to_string()))
}

fn bad(column: &str, what: &str) -> DbErr {
    DbErr::Type(format!("column {column}: {what}"))
}

/// A row with its statement's column names, read by name.
///
/// rusqlite's own lookup by name asks SQLite for every column's name and
/// compares them on each call (1.2% of the server's CPU
/// in the wire benchmark's profile); here the names are read once per
/// statement, and since decoders read the columns in the order they were
/// selected, each lookup starts where the last one ended.
pub(super) struct Named<'a, 'r> {
    row: &'a rusqlite::Row<'r>,
    names: &'a [String],
    next: Cell<usize>,
}

impl<'a> Named<'a, '_> {
    fn get(&self, column: &str) -> Result<ValueRef<'a>, DbErr> {
        let n = self.names.len();
        let start = self.next.get();
        for k in 0..n {
            let i = (start + k) % n;
            if self.names[i].eq_ignore_ascii_case(column) {
                self.next.set(i + 1);
                return self.row.get_ref(i).map_err(err);
            }
        }
        Err(bad(column, "not in the result"))
    }
}

fn opt_text(row: &Named<'_, '_>, c: &str) -> Result<Option<String>, DbErr> {
    match row.get(c)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map(|t| Some(t.to_string()))
            .map_err(|_| bad(c, "not UTF-8")),
        _ => Err(bad(c, "not text")),
    }
}

fn text(row: &Named<'_, '_>, c: &str) -> Result<String, DbErr> {
    opt_text(row, c)?.ok_or_else(|| bad(c, "null"))
}

fn opt_int(row: &Named<'_, '_>, c: &str) -> Result<Option<i64>, DbErr> {
    match row.get(c)? {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(i) => Ok(Some(i)),
        _ => Err(bad(c, "not an integer")),
    }
}

fn opt_i32(row: &Named<'_, '_>, c: &str) -> Result<Option<i32>, DbErr> {
    opt_int(row, c)?
        .map(|i| i32::try_from(i).map_err(|_| bad(c, "out of range")))
        .transpose()
}

fn opt_uuid(row: &Named<'_, '_>, c: &str) -> Result<Option<Uuid>, DbErr> {
    match row.get(c)? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(b) => Uuid::from_slice(b)
            .map(Some)
            .map_err(|_| bad(c, "not a UUID")),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(|t| Uuid::parse_str(t).ok())
            .map(Some)
            .ok_or_else(|| bad(c, "not a UUID")),
        _ => Err(bad(c, "not a UUID")),
    }
}

fn uuid(row: &Named<'_, '_>, c: &str) -> Result<Uuid, DbErr> {
    opt_uuid(row, c)?.ok_or_else(|| bad(c, "null"))
}

fn timestamp(row: &Named<'_, '_>, c: &str) -> Result<DateTime<Utc>, DbErr> {
    let t = text(row, c)?;
    DateTime::parse_from_rfc3339(&t)
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(&t, "%F %T%.f").map(|d| d.and_utc()))
        .map_err(|_| bad(c, "not a timestamp"))
}

fn opt_json(row: &Named<'_, '_>, c: &str) -> Result<Option<serde_json::Value>, DbErr> {
    match row.get(c)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) | ValueRef::Blob(t) => serde_json::from_slice(t)
            .map(Some)
            .map_err(|_| bad(c, "not JSON")),
        _ => Err(bad(c, "not JSON")),
    }
}

/// A `messages` row (every column).
pub(super) fn message(row: &Named<'_, '_>) -> Result<e::message::Model, DbErr> {
    Ok(e::message::Model {
        id: uuid(row, "id")?,
        tenant_id: uuid(row, "tenant_id")?,
        conversation_id: uuid(row, "conversation_id")?,
        bot_id: uuid(row, "bot_id")?,
        role: text(row, "role")?,
        content: text(row, "content")?,
        prompt_tokens: opt_i32(row, "prompt_tokens")?,
        completion_tokens: opt_i32(row, "completion_tokens")?,
        total_tokens: opt_i32(row, "total_tokens")?,
        tokens_estimated: opt_int(row, "tokens_estimated")?.is_some_and(|b| b != 0),
        response_time_ms: opt_i32(row, "response_time_ms")?,
        time_to_first_token_ms: opt_i32(row, "time_to_first_token_ms")?,
        provider: opt_text(row, "provider")?,
        model: opt_text(row, "model")?,
        finish_reason: opt_text(row, "finish_reason")?,
        status: text(row, "status")?,
        error: opt_text(row, "error")?,
        source_chunk_ids: opt_json(row, "source_chunk_ids")?
            .ok_or_else(|| bad("source_chunk_ids", "null"))?,
        api_key_id: opt_uuid(row, "api_key_id")?,
        created_at: timestamp(row, "created_at")?,
        instance_id: opt_uuid(row, "instance_id")?,
        tool_calls: opt_json(row, "tool_calls")?,
        tool_call_id: opt_text(row, "tool_call_id")?,
        cost_micros: opt_int(row, "cost_micros")?,
        cached_tokens: opt_i32(row, "cached_tokens")?,
        priced: opt_int(row, "priced")?.map(|b| b != 0),
        end_user_id: opt_text(row, "end_user_id")?,
    })
}

/// A `conversations` row (every column).
pub(super) fn conversation(row: &Named<'_, '_>) -> Result<e::conversation::Model, DbErr> {
    Ok(e::conversation::Model {
        id: uuid(row, "id")?,
        tenant_id: uuid(row, "tenant_id")?,
        bot_id: uuid(row, "bot_id")?,
        end_user_id: opt_text(row, "end_user_id")?,
        title: opt_text(row, "title")?,
        channel: text(row, "channel")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

/// A bot's id and tenant.
pub(super) fn bot_tenant(row: &Named<'_, '_>) -> Result<(Uuid, Uuid), DbErr> {
    Ok((uuid(row, "id")?, uuid(row, "tenant_id")?))
}

/// A SeaORM value as sqlx's SQLite driver binds it.
fn bind(v: Value) -> Result<Sql, DbErr> {
    fn int(i: Option<i64>) -> Sql {
        i.map_or(Sql::Null, Sql::Integer)
    }
    let text = |s: Option<String>| s.map_or(Sql::Null, Sql::Text);
    Ok(match v {
        Value::Bool(b) => int(b.map(i64::from)),
        Value::TinyInt(i) => int(i.map(i64::from)),
        Value::SmallInt(i) => int(i.map(i64::from)),
        Value::Int(i) => int(i.map(i64::from)),
        Value::BigInt(i) => int(i),
        Value::TinyUnsigned(i) => int(i.map(i64::from)),
        Value::SmallUnsigned(i) => int(i.map(i64::from)),
        Value::Unsigned(i) => int(i.map(i64::from)),
        Value::BigUnsigned(i) => match i {
            None => Sql::Null,
            Some(i) => Sql::Integer(
                i64::try_from(i)
                    .map_err(|_| DbErr::Type(format!("{i} is too large for SQLite")))?,
            ),
        },
        Value::Float(f) => f.map_or(Sql::Null, |f| Sql::Real(f64::from(f))),
        Value::Double(f) => f.map_or(Sql::Null, Sql::Real),
        Value::String(s) => text(s),
        Value::Char(c) => text(c.map(String::from)),
        Value::Bytes(b) => b.map_or(Sql::Null, Sql::Blob),
        Value::Json(j) => text(j.map(|j| j.to_string())),
        Value::ChronoDate(d) => text(d.map(|d| d.format("%F").to_string())),
        Value::ChronoDateTime(d) => text(d.map(|d| d.format("%F %T%.f").to_string())),
        Value::ChronoDateTimeUtc(d) => {
            text(d.map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, false)))
        }
        Value::ChronoDateTimeWithTimeZone(d) => {
            text(d.map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, false)))
        }
        Value::ChronoDateTimeLocal(d) => {
            text(d.map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, false)))
        }
        Value::Uuid(u) => u.map_or(Sql::Null, |u| Sql::Blob(u.as_bytes().to_vec())),
        other => return Err(DbErr::Type(format!("cannot bind {other:?} for SQLite"))),
    })
}

fn params(values: Option<sea_orm::sea_query::Values>) -> Result<Vec<Sql>, DbErr> {
    values
        .map(|v| v.0.into_iter().map(bind).collect())
        .unwrap_or_else(|| Ok(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_as_sqlx_binds_them_and_read_back() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T19:28:16.480240+00:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            bind(Value::ChronoDateTimeUtc(Some(at))).unwrap(),
            Sql::Text("2026-12-01T19:28:16.480240+00:00".into())
        );
        let id = Uuid::now_v7();
        assert_eq!(
            bind(Value::Uuid(Some(id))).unwrap(),
            Sql::Blob(id.as_bytes().to_vec())
        );
        assert_eq!(bind(Value::Bool(Some(true))).unwrap(), Sql::Integer(1));
        assert_eq!(bind(Value::Int(None)).unwrap(), Sql::Null);
        assert_eq!(
            bind(Value::Json(Some(Box::new(serde_json::json!([1]))))).unwrap(),
            Sql::Text("[1]".into())
        );
        // Through a real connection: written as bound, read as decoded.
        let dir = tempfile::tempdir().unwrap();
        let db = DirectSqlite::open(&dir.path().join("t.db")).unwrap();
        let st = |sql: &str, values: Vec<Value>| {
            Statement::from_sql_and_values(sea_orm::DbBackend::Sqlite, sql, values)
        };
        db.exec(st(
            "CREATE TABLE t (id BLOB, created_at TEXT, n INTEGER, j TEXT)",
            vec![],
        ))
        .unwrap();
        db.exec(st(
            "INSERT INTO t VALUES (?, ?, ?, ?)",
            vec![
                Value::Uuid(Some(id)),
                Value::ChronoDateTimeUtc(Some(at)),
                Value::BigInt(Some(1 << 40)),
                Value::Json(Some(Box::new(serde_json::json!({"a": 1})))),
            ],
        ))
        .unwrap();
        let got = db
            .rows(st("SELECT * FROM t", vec![]), |r| {
                Ok((
                    uuid(r, "id")?,
                    timestamp(r, "created_at")?,
                    opt_int(r, "n")?,
                    opt_json(r, "j")?,
                ))
            })
            .unwrap();
        assert_eq!(
            got,
            vec![(id, at, Some(1 << 40), Some(serde_json::json!({"a": 1})))]
        );
        let row_err = db.rows(st("SELECT * FROM t", vec![]), |r| opt_i32(r, "n"));
        assert!(row_err.is_err(), "2^40 does not fit an i32 column");
        let row_err = db.rows(st("SELECT * FROM t", vec![]), |r| uuid(r, "created_at"));
        assert!(row_err.is_err(), "a timestamp is not a UUID");
    }
}
