//! Group commit: the one writer of a [`SeaOrmStore`](super::SeaOrmStore)
//! for the writes of chat turns.
//!
//! A turn writes twice: when it starts (a new conversation or a touch of an
//! old one, the user's message, the pending assistant message) and when it
//! ends (the outcome with its tokens, and the usage rollup). Streams add the
//! text they have so far about once a second, and the audit writer adds its
//! batches. All of these go through one queue to one task, which takes
//! whatever is queued, writes it in **one transaction with multi-row
//! statements**, commits, and answers every caller of that batch.
//!
//! Why a batching writer is the design (measured on the 2-core reference
//! machine, SQLite file in WAL mode, release build):
//! - before it, a turn was four write transactions (conversation, two
//!   messages, outcome) of three to five statements each, on a one-connection
//!   write pool: about 15 statements a turn, each a hand-off between a tokio
//!   worker and sqlx's SQLite thread, and each transaction a commit. The
//!   server managed 415 turns/s at 64 concurrent, and `perf` put 45% of its
//!   CPU in the kernel's context-switch paths;
//! - SQLite has one writer at a time however many connections there are,
//!   and PostgreSQL pays a round trip per statement and an fsync-bound
//!   commit per transaction: the cost of a transaction barely grows with the
//!   rows in it, so sharing it among every turn that is waiting is where the
//!   throughput comes from.
//!
//! There is no linger: the writer commits as soon as it is free, so a lone
//! request pays one transaction and is not delayed; under load, what arrives
//! while a batch commits forms the next one. On a SQLite file a lone
//! request does not even wake the writer's thread: a turn's start or end
//! that finds nothing queued and no transaction open is written in place,
//! by its caller, on the same connection (see [`Writer::submit`]). That
//! saves the two thread wake-ups on each side of its transaction: with
//! other work on the machine, the time added to a turn at one concurrent
//! request went from 0.68-0.74 ms to 0.48 ms; on a quiet machine the
//! difference is within the noise. The guarantees of the
//! unbatched store stay: a caller's write is committed when its call
//! returns (the user's message before the provider is called, the outcome
//! before the reply).
//!
//! On PostgreSQL the writer has a thread, a runtime and a small pool of
//! its own ([`Writer::spawn_thread`]), and keeps up to
//! [`StoreOptions::writer_transactions`](super::StoreOptions) batches in
//! flight at once, each on its own connection. A batch is about ten
//! statements, each a round trip; on the server's runtime each reply
//! waited behind the request tasks queued there, so a batch took about
//! 4 ms at 64 concurrent requests whatever its size, and the database sat
//! idle (its sessions mostly `idle in transaction`, waiting for the
//! client). On its own thread the writer takes each reply as it comes;
//! with several transactions in flight, one waits for its commit's WAL
//! flush while the others run. Measured with the wire benchmark
//! (2026-12-02, alternated runs): 3,442-4,183 turns/s at 64 concurrent
//! before, 5,121-5,608 after with four in flight; four in flight on the
//! server's runtime gave 4,045-4,717, one on its own thread 4,742. At one
//! concurrent request it makes no difference (about +1 ms either way).
//! Concurrent transactions lock rows in one order
//! (messages by id, rollup rows sorted by key), so they wait for each
//! other but do not deadlock; a deadlock the database still finds (two
//! turns of one conversation touching it in two batches) fails one
//! batch, which is retried like any other.
//!
//! Row-level security (PostgreSQL run as `chatcore_app`, see `scope`): a
//! batch holds the jobs of many tenants, so its transaction opens with one
//! setting that names every tenant with a job in it
//! ([`Tenancy::Many`]), and the multi-row statements stay as they are; the
//! policies then keep the batch off the rows of every other tenant, and
//! the per-job checks below keep each job to its own tenant's rows. The
//! alternative, one group of statements per tenant each preceded by its
//! own setting, would turn a batch of N tenants' turns into N times the
//! statements and undo what batching buys; a cross-tenant setting for the
//! writer would leave its statements unguarded. The cost is one statement
//! per batch.
//!
//! A batch that fails is retried once (a dropped connection gets a fresh
//! one), then split in halves, each tried the same way, so that one bad row
//! fails only its own caller. Checks that concern one caller (a conversation
//! or message of another tenant, a deleted bot) are answered per caller and
//! never fail the batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use sea_orm::prelude::Expr;
use sea_orm::sea_query::{Alias, ExprTrait, OnConflict, Query, Value};
use sea_orm::sqlx::{self, pool::PoolConnection};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set, Statement, TransactionTrait,
};
use sea_orm::{DbErr, RuntimeErr};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::direct::{self, DirectSqlite};
use super::scope::{Tenancy, begin_with_tenancy, set_tenancy};
use super::unnest::{self, PgArray, PgStatement};
use super::{USAGE_SLOTS, UsageDelta, audit_row, convert, db_err, e};
use crate::domain::*;
use crate::store::{MessageCompletion, NewTurn, StoreError, StoreResult, TurnConversation};

/// Most jobs in one transaction (a job is one caller's write; a turn start
/// is three rows). Keeps statements well under SQLite's and PostgreSQL's
/// parameter limits.
const MAX_BATCH: usize = 256;
/// Rows per multi-row statement on PostgreSQL.
const ROWS_PER_STATEMENT: usize = 200;
/// Most rows per multi-row statement on SQLite (a power of two).
const SQLITE_ROWS_PER_STATEMENT: usize = 128;
/// Most PostgreSQL write transactions in flight at once.
pub(super) const MAX_LANES: usize = 16;

/// One caller's write.
pub(super) enum Op {
    /// A turn starts.
    Begin {
        tenant: TenantId,
        turn: NewTurn,
        conversation: ConversationId,
        /// One id per input message ([`NewTurn::inputs`]), in order.
        inputs: Vec<MessageId>,
        assistant: MessageId,
        at: DateTime<Utc>,
    },
    /// A message's outcome.
    Finish {
        tenant: TenantId,
        id: MessageId,
        done: MessageCompletion,
    },
    /// The text streamed so far of a pending message.
    Progress {
        tenant: TenantId,
        id: MessageId,
        content: String,
    },
    /// Audit records.
    Audit(Vec<AuditRecord>),
    /// The instance is alive.
    Heartbeat,
    /// Nothing: answered once everything queued before it is committed.
    Flush,
}

/// What a caller gets back.
pub(super) enum Output {
    Turn(Box<(Conversation, Message, Message)>),
    Message(Box<Message>),
    Done,
}

struct Job {
    op: Op,
    reply: Option<oneshot::Sender<StoreResult<Output>>>,
}

/// Who the writer writes as.
#[derive(Debug, Clone)]
pub(super) struct InstanceInfo {
    pub id: Uuid,
    pub name: String,
    pub started_at: DateTime<Utc>,
}

/// The handle the store keeps: a queue to the writer task.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Job>,
    /// The writer of a SQLite file ([`Writer::spawn_direct`]): shared with
    /// callers, who write in place while it is idle.
    direct: Option<Arc<Direct>>,
    /// The pool of a writer on its own thread ([`Writer::spawn_thread`]).
    pool: Option<DatabaseConnection>,
}

/// The writer of a SQLite file, as callers share it. Each transaction
/// holds the connection's gate ([`DirectSqlite::gate`]): the writer's
/// thread waits for it, a caller writing in place only tries it.
struct Direct {
    task: Task,
    db: Arc<DirectSqlite>,
    /// Callers in [`Writer::submit`] right now.
    waiting: AtomicUsize,
}

/// A caller counted in [`Direct::waiting`] until it has its answer.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    /// No other caller was waiting when this one came.
    alone: bool,
}

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        let before = count.fetch_add(1, Ordering::AcqRel);
        Self {
            count,
            alone: before == 0,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Writer {
    /// Starts the writer task on `db` (the store's write connection), on
    /// the caller's runtime, one batch at a time: SQLite in memory (whose
    /// one connection the store's reads share), or a SQLite file through
    /// sqlx's pool. `rls`: row-level security binds `db` (see `scope`).
    pub fn spawn(db: DatabaseConnection, instance: InstanceInfo, rls: bool) -> Self {
        let (tx, rx) = mpsc::channel(16 * MAX_BATCH);
        let task = Arc::new(Task {
            backend: db.get_database_backend(),
            conn: Conn::Sea(db),
            instance,
            rls,
        });
        tokio::spawn(task.run(rx, 1));
        Self {
            tx,
            direct: None,
            pool: None,
        }
    }

    /// Starts the writer on a thread of its own, with a runtime and a pool
    /// (`options`, at most `lanes` connections) of its own: PostgreSQL.
    /// Its statements' round trips are then answered as soon as they
    /// arrive, not after the tasks queued on the server's busy runtime
    /// (see the module docs). Returns once its pool is connected.
    pub async fn spawn_thread(
        options: sea_orm::ConnectOptions,
        instance: InstanceInfo,
        rls: bool,
        lanes: usize,
    ) -> StoreResult<Self> {
        let lanes = lanes.clamp(1, MAX_LANES);
        let (tx, rx) = mpsc::channel(16 * MAX_BATCH);
        let (ready, connected) = oneshot::channel::<StoreResult<DatabaseConnection>>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::internal_from("cannot start the store's writer", e))?;
        let mut options = options;
        options
            .max_connections(u32::try_from(lanes).unwrap_or(1))
            .min_connections(1);
        std::thread::Builder::new()
            .name("chatcore-writer".into())
            .spawn(move || {
                rt.block_on(async move {
                    let db = match sea_orm::Database::connect(options).await {
                        Ok(db) => db,
                        Err(e) => {
                            let _ = ready.send(Err(db_err(e)));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(db.clone()));
                    let task = Arc::new(Task {
                        backend: db.get_database_backend(),
                        conn: Conn::Sea(db.clone()),
                        instance,
                        rls,
                    });
                    task.run(rx, lanes).await;
                    let _ = db.close().await;
                });
            })
            .map_err(|e| StoreError::internal_from("cannot start the store's writer", e))?;
        let pool = connected
            .await
            .map_err(|_| StoreError::unavailable("the store's writer has stopped"))??;
        Ok(Self {
            tx,
            direct: None,
            pool: Some(pool),
        })
    }

    /// Starts the writer on a thread of its own with `db`, a SQLite
    /// connection of its own ([`super::direct`]): each statement runs to
    /// completion there, without a hand-off. A turn's start or end that
    /// finds the writer idle (nothing queued, no transaction open) is
    /// written in place by its caller instead ([`Writer::submit`]).
    pub fn spawn_direct(db: DirectSqlite, instance: InstanceInfo) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(16 * MAX_BATCH);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        db.spawn_checkpointer(stopped)?;
        let db = Arc::new(db);
        let direct = Arc::new(Direct {
            task: Task {
                backend: DbBackend::Sqlite,
                conn: Conn::Direct(db.clone()),
                instance,
                rls: false,
            },
            db,
            waiting: AtomicUsize::new(0),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let shared = direct.clone();
        std::thread::Builder::new()
            .name("chatcore-writer".into())
            .spawn(move || {
                rt.block_on(shared.run(rx));
                // The checkpointer ends with the writer.
                drop(stop);
            })?;
        Ok(Self {
            tx,
            direct: Some(direct),
            pool: None,
        })
    }

    /// Queues `op` and waits for its batch's commit; on a SQLite file, a
    /// turn's start or end that finds no other caller waiting for the
    /// writer and the writer idle is written at once, by the caller
    /// ([`Direct::write_in_place`]).
    pub async fn submit(&self, op: Op) -> StoreResult<Output> {
        let waiting = self
            .direct
            .as_ref()
            .map(|d| (d, Waiting::enter(&d.waiting)));
        if let Some((d, w)) = &waiting
            && w.alone
            && matches!(op, Op::Begin { .. } | Op::Finish { .. })
            && self.tx.capacity() == self.tx.max_capacity()
            && let Some(out) = d.write_in_place(&op)
        {
            return out;
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                op,
                reply: Some(reply),
            })
            .await
            .map_err(|_| StoreError::unavailable("the store's writer has stopped"))?;
        rx.await
            .map_err(|_| StoreError::unavailable("the store's writer has stopped"))?
    }

    /// The pool of a writer with one of its own (PostgreSQL).
    pub fn pool(&self) -> Option<&DatabaseConnection> {
        self.pool.as_ref()
    }

    /// Queues `op` without waiting; dropped when the queue is full.
    pub fn submit_detached(&self, op: Op) {
        let _ = self.tx.try_send(Job { op, reply: None });
    }

    /// Sends a heartbeat every [`HEARTBEAT_EVERY`] while the store lives
    /// (the ticker holds only a weak handle: it stops with the writer).
    pub fn keep_alive(&self) {
        let weak = self.tx.downgrade();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tx) = weak.upgrade() else { break };
                let _ = tx.try_send(Job {
                    op: Op::Heartbeat,
                    reply: None,
                });
            }
        });
    }
}

impl Direct {
    /// The writer's loop on its thread: each batch under the gate.
    #[expect(
        clippy::await_holding_lock,
        reason = "the loop runs alone on the writer's thread (block_on), and \
                  the direct connection's statements never yield: the gate is \
                  only ever waited for by this thread or tried by callers"
    )]
    async fn run(&self, mut rx: mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
            // Poisoned only by a panic in a transaction, which a rollback
            // at the next BEGIN clears: the gate still serialises.
            let _g = self.db.gate().lock().unwrap_or_else(|p| p.into_inner());
            self.task.settle(std::mem::take(&mut jobs)).await;
            self.db.restart_if_wanted();
        }
    }

    /// Writes `op` in its own transaction on the caller's thread, if the
    /// writer is idle; `None` (the caller queues it) when the writer is
    /// busy, when another connection holds SQLite's write lock, or when
    /// the transaction failed (the writer then retries it as it retries
    /// any batch).
    ///
    /// Only a caller that came while no other was waiting gets here:
    /// under load every write is batched; alone, a turn pays for its
    /// transaction and not for two thread wake-ups on each side of it.
    /// (Asking only for an empty queue and a free gate was not enough: at
    /// 64 concurrent requests the writer is often idle between batches,
    /// and `perf` found 24% of the server's time in transactions of one
    /// write each, run on the tokio workers, which also stalled every
    /// other task of those workers meanwhile.)
    fn write_in_place(&self, op: &Op) -> Option<StoreResult<Output>> {
        let db = &self.db;
        let _g = db.gate().try_lock().ok()?;
        // Never block a tokio worker on another connection's lock.
        db.set_busy_timeout(Duration::ZERO).ok()?;
        // The direct connection's statements never wait on anything
        // asynchronous: the transaction runs to its end in this poll.
        let written = self.task.write(&[op]).now_or_never();
        let restored = db.set_busy_timeout(direct::BUSY_TIMEOUT);
        if let Err(e) = restored {
            tracing::warn!(error = %e, "could not restore the writer's busy timeout");
        }
        match written {
            Some(Ok(mut outs)) if outs.len() == 1 => outs.pop(),
            Some(Ok(_)) => None,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "an in-place write failed: queueing it");
                None
            }
            None => {
                // Not reachable with the direct connection; should it be,
                // nothing of an unfinished transaction may stay open.
                let _ = db.exec(Statement::from_string(DbBackend::Sqlite, "ROLLBACK"));
                None
            }
        }
    }
}

struct Task {
    conn: Conn,
    backend: DbBackend,
    instance: InstanceInfo,
    rls: bool,
}

/// The writer's connection.
enum Conn {
    /// Through SeaORM and sqlx (PostgreSQL, SQLite in memory).
    Sea(DatabaseConnection),
    /// Its own SQLite connection, on the writer's thread: transactions are
    /// statements (`BEGIN IMMEDIATE`, `COMMIT`).
    Direct(Arc<DirectSqlite>),
}

/// Where a batch's statements run. They are built once, by SeaORM and
/// sea-query, for either connection.
#[async_trait::async_trait]
trait WriteConn: Sync {
    async fn exec(&self, st: Stmt) -> StoreResult<()>;
    async fn messages(&self, st: Stmt) -> StoreResult<Vec<e::message::Model>>;
    async fn conversations(&self, st: Stmt) -> StoreResult<Vec<e::conversation::Model>>;
    async fn bot_tenants(&self, st: Stmt) -> StoreResult<Vec<(Uuid, Uuid)>>;
}

/// A statement of a batch: sea-query's, or one of PostgreSQL's with array
/// parameters ([`unnest`]: one statement for any number of rows).
pub(super) enum Stmt {
    Sea(Statement),
    Arrays(PgStatement),
}

impl From<Statement> for Stmt {
    fn from(st: Statement) -> Self {
        Stmt::Sea(st)
    }
}

impl Stmt {
    /// The sea-query statement (array statements are PostgreSQL's alone).
    fn sea(self) -> StoreResult<Statement> {
        match self {
            Stmt::Sea(st) => Ok(st),
            Stmt::Arrays(_) => Err(StoreError::internal(
                "a statement with array parameters off PostgreSQL",
            )),
        }
    }
}

/// An error building an array statement: a bug, never the caller's input.
fn unnest_err(e: String) -> StoreError {
    StoreError::internal(format!("building a batch statement: {e}"))
}

/// A SeaORM connection or transaction.
struct Sea<'a, C>(&'a C);

#[async_trait::async_trait]
impl<C: ConnectionTrait + Sync> WriteConn for Sea<'_, C> {
    async fn exec(&self, st: Stmt) -> StoreResult<()> {
        self.0
            .execute_raw(st.sea()?)
            .await
            .map(|_| ())
            .map_err(db_err)
    }
    async fn messages(&self, st: Stmt) -> StoreResult<Vec<e::message::Model>> {
        e::message::Model::find_by_statement(st.sea()?)
            .all(self.0)
            .await
            .map_err(db_err)
    }
    async fn conversations(&self, st: Stmt) -> StoreResult<Vec<e::conversation::Model>> {
        e::conversation::Model::find_by_statement(st.sea()?)
            .all(self.0)
            .await
            .map_err(db_err)
    }
    async fn bot_tenants(&self, st: Stmt) -> StoreResult<Vec<(Uuid, Uuid)>> {
        Ok(BotTenant::find_by_statement(st.sea()?)
            .all(self.0)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|b| (b.id, b.tenant_id))
            .collect())
    }
}

/// A PostgreSQL transaction of the writer, on a connection of its own
/// pool, driven through sqlx directly ([`Task::write_pg`]).
struct PgTxn(tokio::sync::Mutex<PoolConnection<sqlx::Postgres>>);

impl PgTxn {
    /// Runs `sql`, one or more statements without parameters, in one round
    /// trip (the simple query protocol).
    async fn simple(&self, sql: String) -> StoreResult<()> {
        let mut conn = self.0.lock().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut **conn)
            .await
            .map(|_| ())
            .map_err(|e| db_err(DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)))))
    }

    /// `st` as a prepared statement of sqlx (cached per connection, as
    /// SeaORM's are).
    fn query(
        st: Stmt,
    ) -> StoreResult<sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>> {
        let st = match st {
            Stmt::Sea(st) => PgStatement {
                st,
                arrays: Vec::new(),
            },
            Stmt::Arrays(st) => st,
        };
        let (sql, args) = st
            .arguments()
            .map_err(|e| StoreError::internal(format!("binding a batch statement: {e}")))?;
        Ok(sqlx::query_with(sqlx::AssertSqlSafe(sql), args))
    }

    /// The rows `st` returns, as `M`.
    async fn rows<M: FromQueryResult>(&self, st: Stmt) -> StoreResult<Vec<M>> {
        let query = Self::query(st)?;
        let mut conn = self.0.lock().await;
        let rows = query
            .fetch_all(&mut **conn)
            .await
            .map_err(|e| db_err(DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))))?;
        rows.into_iter()
            .map(|r| M::from_query_result(&sea_orm::QueryResult::from(r), ""))
            .collect::<Result<_, _>>()
            .map_err(db_err)
    }
}

#[async_trait::async_trait]
impl WriteConn for PgTxn {
    async fn exec(&self, st: Stmt) -> StoreResult<()> {
        let query = Self::query(st)?;
        let mut conn = self.0.lock().await;
        query
            .execute(&mut **conn)
            .await
            .map(|_| ())
            .map_err(|e| db_err(DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)))))
    }
    async fn messages(&self, st: Stmt) -> StoreResult<Vec<e::message::Model>> {
        self.rows(st).await
    }
    async fn conversations(&self, st: Stmt) -> StoreResult<Vec<e::conversation::Model>> {
        self.rows(st).await
    }
    async fn bot_tenants(&self, st: Stmt) -> StoreResult<Vec<(Uuid, Uuid)>> {
        Ok(self
            .rows::<BotTenant>(st)
            .await?
            .into_iter()
            .map(|b| (b.id, b.tenant_id))
            .collect())
    }
}

#[async_trait::async_trait]
impl WriteConn for DirectSqlite {
    async fn exec(&self, st: Stmt) -> StoreResult<()> {
        DirectSqlite::exec(self, st.sea()?)
            .map(|_| ())
            .map_err(db_err)
    }
    async fn messages(&self, st: Stmt) -> StoreResult<Vec<e::message::Model>> {
        self.rows(st.sea()?, direct::message).map_err(db_err)
    }
    async fn conversations(&self, st: Stmt) -> StoreResult<Vec<e::conversation::Model>> {
        self.rows(st.sea()?, direct::conversation).map_err(db_err)
    }
    async fn bot_tenants(&self, st: Stmt) -> StoreResult<Vec<(Uuid, Uuid)>> {
        self.rows(st.sea()?, direct::bot_tenant).map_err(db_err)
    }
}

impl Task {
    /// Takes batches off the queue while a lane is free. A lane is taken
    /// before the queue is read, so that while every lane commits, what
    /// arrives forms the next batch; with one lane the batches are written
    /// one after another.
    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Job>, lanes: usize) {
        let free = Arc::new(tokio::sync::Semaphore::new(lanes));
        let others = u32::try_from(lanes - 1).unwrap_or(0);
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        loop {
            let Ok(lane) = free.clone().acquire_owned().await else {
                break;
            };
            // `recv_many` waits for one job, then takes what else is queued.
            if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
                break;
            }
            let batch = std::mem::take(&mut jobs);
            if lanes == 1 {
                self.settle(batch).await;
                continue;
            }
            if batch.iter().any(|j| matches!(j.op, Op::Flush)) {
                // A flush is answered once everything queued before it is
                // committed: the batches still in flight first.
                let rest = free.acquire_many(others).await;
                self.settle(batch).await;
                drop(rest);
                continue;
            }
            let task = self.clone();
            tokio::spawn(async move {
                task.settle(batch).await;
                drop(lane);
            });
        }
        // The batches in flight end before the writer does.
        let _ = free
            .acquire_many(u32::try_from(lanes).unwrap_or(u32::MAX))
            .await;
    }

    /// Writes `jobs` and answers each: the whole batch, retried once, then
    /// halves of it, down to single jobs.
    async fn settle(&self, jobs: Vec<Job>) {
        let mut groups: Vec<(Vec<Job>, bool)> = vec![(jobs, false)];
        while let Some((group, retried)) = groups.pop() {
            let ops: Vec<&Op> = group.iter().map(|j| &j.op).collect();
            match self.write(&ops).await {
                Ok(outputs) => {
                    for (job, out) in group.into_iter().zip(outputs) {
                        if let Some(r) = job.reply {
                            let _ = r.send(out);
                        }
                    }
                }
                Err(e) if !retried => {
                    tracing::warn!(error = %e, jobs = group.len(), "a write batch failed: retrying it");
                    groups.push((group, true));
                }
                Err(e) if group.len() == 1 => {
                    tracing::error!(error = %e, "a write failed twice");
                    for job in group {
                        if let Some(r) = job.reply {
                            let _ = r.send(Err(e.clone()));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, jobs = group.len(), "a write batch failed again: splitting it");
                    let mut first = group;
                    let second = first.split_off(first.len() / 2);
                    groups.push((second, false));
                    groups.push((first, false));
                }
            }
        }
    }

    /// One transaction for `ops`. `Err` only when the transaction failed;
    /// a check that concerns one op is that op's `Err` in the list.
    async fn write(&self, ops: &[&Op]) -> StoreResult<Vec<StoreResult<Output>>> {
        let db = match &self.conn {
            Conn::Direct(db) => {
                let db: &DirectSqlite = db;
                let sql = |q: &str| Statement::from_string(DbBackend::Sqlite, q);
                WriteConn::exec(db, sql("BEGIN IMMEDIATE").into()).await?;
                let mut written = self.write_in(db, ops).await;
                if written.is_ok() {
                    written = WriteConn::exec(db, sql("COMMIT").into()).await.and(written);
                    if written.is_ok() {
                        db.committed();
                    }
                }
                if written.is_err() {
                    // Nothing of a failed batch stays (and a failed COMMIT
                    // leaves the transaction open).
                    let _ = WriteConn::exec(db, sql("ROLLBACK").into()).await;
                } else if ops.iter().any(|op| matches!(op, Op::Flush))
                    && let Err(e) = db.checkpoint()
                {
                    // The writes are committed (in the WAL) either way.
                    tracing::warn!(error = %e, "could not checkpoint the WAL on a flush");
                }
                return written;
            }
            Conn::Sea(db) if self.backend == DbBackend::Postgres => {
                return self.write_pg(db, ops).await;
            }
            Conn::Sea(db) => db,
        };
        let txn = db
            .begin_with_options(sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
            .map_err(db_err)?;
        if self.rls {
            // One setting for the whole batch: the rows of the tenants that
            // have a job in it (each job's own tenant is checked below).
            set_tenancy(&txn, Tenancy::Many(&batch_tenants(ops))).await?;
        }
        let out = self.write_in(&Sea(&txn), ops).await?;
        txn.commit().await.map_err(db_err)?;
        Ok(out)
    }

    /// [`Self::write`] on PostgreSQL: one transaction on a connection of
    /// the writer's pool, held as a [`PgTxn`]. Its `BEGIN` and the batch's
    /// tenancy go to the database in one round trip
    /// ([`begin_with_tenancy`]), where SeaORM's transaction takes two (its
    /// `BEGIN`, then the setting). A turn is two batches, so that is two
    /// round trips fewer per turn.
    async fn write_pg(
        &self,
        db: &DatabaseConnection,
        ops: &[&Op],
    ) -> StoreResult<Vec<StoreResult<Output>>> {
        let conn = db
            .get_postgres_connection_pool()
            .acquire()
            .await
            .map_err(|e| db_err(DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e)))))?;
        let begin = if self.rls {
            begin_with_tenancy(Tenancy::Many(&batch_tenants(ops)))
                .ok_or_else(|| StoreError::internal("a tenant id that is not a UUID"))?
        } else {
            "BEGIN".to_owned()
        };
        let txn = PgTxn(tokio::sync::Mutex::new(conn));
        let written = match txn.simple(begin).await {
            Ok(()) => match self.write_in(&txn, ops).await {
                Ok(out) => txn.simple("COMMIT".to_owned()).await.map(|()| out),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if written.is_err() {
            // A failed statement leaves the transaction open and aborted (a
            // failed COMMIT ends it; the ROLLBACK then only warns). A
            // connection that cannot roll back is closed, never returned
            // to the pool inside a transaction.
            if txn.simple("ROLLBACK".to_owned()).await.is_err() {
                let _ = txn.0.into_inner().close().await;
            }
        }
        written
    }

    /// The statements of one batch, inside its transaction.
    async fn write_in(
        &self,
        db: &(dyn WriteConn + '_),
        ops: &[&Op],
    ) -> StoreResult<Vec<StoreResult<Output>>> {
        let mut out: Vec<Option<StoreResult<Output>>> = (0..ops.len()).map(|_| None).collect();
        self.write_begins(db, ops, &mut out).await?;
        let usage = self.write_outcomes(db, ops, &mut out).await?;
        self.write_usage(db, usage).await?;
        let audit: Vec<e::audit_log::ActiveModel> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Audit(records) => Some(records.iter().cloned().map(audit_row)),
                _ => None,
            })
            .flatten()
            .collect();
        insert_rows::<e::audit_log::Entity>(db, self.backend, audit).await?;
        if ops.iter().any(|op| matches!(op, Op::Heartbeat)) {
            self.heartbeat(db).await?;
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or(Ok(Output::Done)))
            .collect())
    }

    /// Turn starts: conversations, user and pending assistant messages.
    async fn write_begins(
        &self,
        db: &(dyn WriteConn + '_),
        ops: &[&Op],
        out: &mut [Option<StoreResult<Output>>],
    ) -> StoreResult<()> {
        let begins: Vec<usize> = (0..ops.len())
            .filter(|&i| matches!(ops[i], Op::Begin { .. }))
            .collect();
        if begins.is_empty() {
            return Ok(());
        }
        let (mut bot_ids, mut conv_ids) = (Vec::new(), Vec::new());
        for &i in &begins {
            if let Op::Begin { turn, .. } = ops[i] {
                match &turn.conversation {
                    TurnConversation::New(n) => bot_ids.push(n.bot_id.0),
                    TurnConversation::Existing(id) => conv_ids.push(id.0),
                }
            }
        }
        // Which tenant each bot and conversation belongs to: one query each.
        let bots: HashMap<Uuid, Uuid> = if bot_ids.is_empty() {
            HashMap::new()
        } else {
            let q = e::bot::Entity::find()
                .select_only()
                .column(e::bot::Column::Id)
                .column(e::bot::Column::TenantId);
            db.bot_tenants(self.where_in(q, e::bot::Column::Id, dedup(bot_ids))?)
                .await?
                .into_iter()
                .collect()
        };
        let convs: HashMap<Uuid, e::conversation::Model> = if conv_ids.is_empty() {
            HashMap::new()
        } else {
            let q = e::conversation::Entity::find();
            db.conversations(self.where_in(q, e::conversation::Column::Id, dedup(conv_ids))?)
                .await?
                .into_iter()
                .map(|c| (c.id, c))
                .collect()
        };

        let (mut new_convs, mut touched, mut messages) = (Vec::new(), Vec::new(), Vec::new());
        for &i in &begins {
            let Op::Begin {
                tenant,
                turn,
                conversation,
                inputs,
                assistant,
                at,
            } = ops[i]
            else {
                continue;
            };
            let conv = match &turn.conversation {
                TurnConversation::New(n) => {
                    if bots.get(&n.bot_id.0) != Some(&tenant.0) {
                        out[i] = Some(Err(StoreError::NotFound("bot")));
                        continue;
                    }
                    let c = e::conversation::Model {
                        id: conversation.0,
                        tenant_id: tenant.0,
                        bot_id: n.bot_id.0,
                        end_user_id: n.end_user_id.clone(),
                        title: n.title.clone(),
                        channel: n.channel.as_str().into(),
                        created_at: *at,
                        updated_at: *at,
                    };
                    new_convs.push(c.clone());
                    c
                }
                TurnConversation::Existing(id) => match convs.get(&id.0) {
                    Some(c) if c.tenant_id == tenant.0 => {
                        touched.push(c.id);
                        let mut c = c.clone();
                        c.updated_at = *at;
                        c
                    }
                    _ => {
                        out[i] = Some(Err(StoreError::NotFound("conversation")));
                        continue;
                    }
                },
            };
            let message = |id: MessageId,
                           role: Role,
                           content: String,
                           status: MessageStatus,
                           tool_call_id: Option<String>| {
                let assistant = role == Role::Assistant;
                e::message::Model {
                    id: id.0,
                    tenant_id: tenant.0,
                    conversation_id: conv.id,
                    bot_id: conv.bot_id,
                    role: role.as_str().into(),
                    content,
                    prompt_tokens: None,
                    completion_tokens: None,
                    total_tokens: None,
                    tokens_estimated: false,
                    response_time_ms: None,
                    time_to_first_token_ms: None,
                    provider: if assistant {
                        turn.provider.clone()
                    } else {
                        None
                    },
                    model: if assistant { turn.model.clone() } else { None },
                    finish_reason: None,
                    status: status.as_str().into(),
                    error: None,
                    source_chunk_ids: serde_json::json!([]),
                    api_key_id: turn.api_key_id.map(|k| k.0),
                    created_at: *at,
                    instance_id: assistant.then_some(self.instance.id),
                    tool_calls: None,
                    tool_call_id,
                    cost_micros: None,
                    cached_tokens: None,
                    priced: None,
                    end_user_id: if assistant {
                        conv.end_user_id.clone()
                    } else {
                        None
                    },
                }
            };
            let sent: Vec<e::message::Model> = turn
                .inputs()
                .into_iter()
                .zip(inputs)
                .map(|((role, content, call), id)| {
                    message(*id, role, content, MessageStatus::Complete, call)
                })
                .collect();
            let a = message(
                *assistant,
                Role::Assistant,
                String::new(),
                MessageStatus::Pending,
                None,
            );
            let Some(last) = sent.last() else {
                out[i] = Some(Err(StoreError::internal("a turn without an input message")));
                continue;
            };
            out[i] = Some((|| {
                Ok(Output::Turn(Box::new((
                    convert::conversation(conv)?,
                    convert::message(last.clone())?,
                    convert::message(a.clone())?,
                ))))
            })());
            messages.extend(sent);
            messages.push(a);
        }
        insert_rows::<e::conversation::Entity>(
            db,
            self.backend,
            new_convs
                .into_iter()
                .map(e::conversation::ActiveModel::from),
        )
        .await?;
        insert_rows::<e::message::Entity>(
            db,
            self.backend,
            messages.into_iter().map(e::message::ActiveModel::from),
        )
        .await?;
        if !touched.is_empty() {
            for ids in self.id_chunks(&dedup(touched)) {
                let q = e::conversation::Entity::update_many()
                    .col_expr(e::conversation::Column::UpdatedAt, Expr::value(now()));
                db.exec(self.where_in(q, e::conversation::Column::Id, ids.to_vec())?)
                    .await?;
            }
        }
        Ok(())
    }

    /// Outcomes and streamed text of existing messages; returns what they
    /// add to the usage rollup.
    async fn write_outcomes(
        &self,
        db: &(dyn WriteConn + '_),
        ops: &[&Op],
        out: &mut [Option<StoreResult<Output>>],
    ) -> StoreResult<Vec<(e::message::Model, UsageDelta)>> {
        let ids: Vec<Uuid> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Finish { id, .. } | Op::Progress { id, .. } => Some(id.0),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // The rows as they are, locked on PostgreSQL until the commit so that
        // two instances cannot both count one outcome.
        let mut rows: HashMap<Uuid, e::message::Model> = HashMap::new();
        for chunk in self.id_chunks(&dedup(ids)) {
            let mut q = e::message::Entity::find();
            if self.backend == DbBackend::Postgres {
                // In id order, as every transaction locks them.
                q = q.order_by_asc(e::message::Column::Id).lock_exclusive();
            }
            let q = self.where_in(q, e::message::Column::Id, chunk.to_vec())?;
            for m in db.messages(q).await? {
                rows.insert(m.id, m);
            }
        }
        let before: HashMap<Uuid, UsageDelta> = rows
            .iter()
            .map(|(id, m)| (*id, UsageDelta::of(m)))
            .collect();
        let mut changed: Vec<Uuid> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Finish { tenant, id, done } => {
                    let Some(m) = rows.get_mut(&id.0).filter(|m| m.tenant_id == tenant.0) else {
                        out[i] = Some(Err(StoreError::NotFound("message")));
                        continue;
                    };
                    apply_completion(m, done);
                    out[i] =
                        Some(convert::message(m.clone()).map(|m| Output::Message(Box::new(m))));
                    changed.push(id.0);
                }
                Op::Progress {
                    tenant,
                    id,
                    content,
                } => {
                    if let Some(m) = rows.get_mut(&id.0).filter(|m| {
                        m.tenant_id == tenant.0 && m.status == MessageStatus::Pending.as_str()
                    }) {
                        m.content.clone_from(content);
                        changed.push(id.0);
                    }
                }
                _ => {}
            }
        }
        let changed = dedup(changed);
        let models: Vec<e::message::Model> = changed
            .iter()
            .filter_map(|id| rows.get(id).cloned())
            .collect();
        upsert_messages(db, self.backend, &models).await?;
        Ok(models
            .into_iter()
            .map(|m| {
                let d = UsageDelta::of(&m).minus(before[&m.id]);
                (m, d)
            })
            .collect())
    }

    /// Adds the usage of a batch's outcomes to the rollup: one multi-row
    /// upsert, one row per tenant, day, bot and key.
    async fn write_usage(
        &self,
        db: &(dyn WriteConn + '_),
        changes: Vec<(e::message::Model, UsageDelta)>,
    ) -> StoreResult<()> {
        use e::usage_daily::{Column as U, Entity as UsageDaily};
        // Sorted: concurrent transactions (PostgreSQL's lanes) lock the rows
        // they add to in one order, so they wait for each other but never
        // deadlock.
        let mut sums: BTreeMap<(Uuid, chrono::NaiveDate, Uuid, Uuid), UsageDelta> = BTreeMap::new();
        let end_users: Vec<(e::message::Model, UsageDelta)> = changes
            .iter()
            .filter(|(m, _)| m.end_user_id.is_some())
            .cloned()
            .collect();
        let user_sums = super::budgets::end_user_sums(end_users);
        if self.arrays_for(user_sums.len()) {
            db.exec(super::budgets::end_user_usage_pg(user_sums)?)
                .await?;
        } else {
            for st in super::budgets::end_user_rollup_statements(self.backend, user_sums) {
                db.exec(self.backend.build(&st).into()).await?;
            }
        }
        for (m, d) in changes {
            if d == UsageDelta::default() {
                continue;
            }
            let key = (
                m.tenant_id,
                m.created_at.date_naive(),
                m.bot_id,
                m.api_key_id.unwrap_or(Uuid::nil()),
            );
            let s = sums.entry(key).or_default();
            s.requests += d.requests;
            s.prompt_tokens += d.prompt_tokens;
            s.completion_tokens += d.completion_tokens;
            s.total_tokens += d.total_tokens;
            s.cost_micros += d.cost_micros;
        }
        if sums.is_empty() {
            return Ok(());
        }
        if self.arrays_for(sums.len()) {
            let st = rollup_pg(
                "usage_daily",
                ["tenant_id", "day", "bot_id", "api_key_id"],
                sums,
            )?;
            return db.exec(st).await;
        }
        let slot = || match self.backend {
            DbBackend::Postgres => {
                Expr::cust(format!("(pg_backend_pid() % {USAGE_SLOTS})::smallint"))
            }
            _ => Expr::val(0i16),
        };
        let add = |c: U| {
            (
                c,
                Expr::col((UsageDaily, c)).add(Expr::col((Alias::new("excluded"), c))),
            )
        };
        let rows: Vec<_> = sums.into_iter().collect();
        for chunk in statement_chunks(self.backend, &rows) {
            let mut stmt = Query::insert();
            stmt.into_table(UsageDaily).columns([
                U::TenantId,
                U::Day,
                U::BotId,
                U::ApiKeyId,
                U::Slot,
                U::Requests,
                U::PromptTokens,
                U::CompletionTokens,
                U::TotalTokens,
                U::CostMicros,
            ]);
            for ((tenant, day, bot, key), d) in chunk {
                stmt.values_panic([
                    Expr::val(*tenant),
                    Expr::val(*day),
                    Expr::val(*bot),
                    Expr::val(*key),
                    slot(),
                    Expr::val(d.requests),
                    Expr::val(d.prompt_tokens),
                    Expr::val(d.completion_tokens),
                    Expr::val(d.total_tokens),
                    Expr::val(d.cost_micros),
                ]);
            }
            stmt.on_conflict(
                OnConflict::columns([U::TenantId, U::Day, U::BotId, U::ApiKeyId, U::Slot])
                    .values([
                        add(U::Requests),
                        add(U::PromptTokens),
                        add(U::CompletionTokens),
                        add(U::TotalTokens),
                        add(U::CostMicros),
                    ])
                    .to_owned(),
            );
            db.exec(self.backend.build(&stmt).into()).await?;
        }
        Ok(())
    }

    /// Marks this instance alive, and forgets instances dead for a day.
    async fn heartbeat(&self, db: &(dyn WriteConn + '_)) -> StoreResult<()> {
        use e::instance::{Column as I, Entity as Instance};
        let t = now();
        let alive = Instance::insert(e::instance::ActiveModel {
            id: Set(self.instance.id),
            name: Set(self.instance.name.clone()),
            started_at: Set(self.instance.started_at),
            heartbeat_at: Set(t),
        })
        .on_conflict(
            OnConflict::column(I::Id)
                .update_column(I::HeartbeatAt)
                .to_owned(),
        )
        .into_query();
        db.exec(self.backend.build(&alive).into()).await?;
        let gone = Instance::delete_many()
            .filter(I::HeartbeatAt.lt(t - chrono::Duration::days(1)))
            .into_query();
        db.exec(self.backend.build(&gone).into()).await
    }

    /// `q` filtered to the rows whose `col` is one of `ids`: `IN (...)` on
    /// SQLite; on PostgreSQL `= ANY($n)`, one statement for any number of
    /// ids ([`unnest`]).
    fn where_in<Q>(&self, q: Q, col: impl ColumnTrait, ids: Vec<Uuid>) -> StoreResult<Stmt>
    where
        Q: QueryFilter + QueryTrait,
        <Q as QueryTrait>::QueryStatement: sea_orm::StatementBuilder,
    {
        if self.backend != DbBackend::Postgres {
            let q = q.filter(col.is_in(ids));
            return Ok(self.backend.build(q.as_query()).into());
        }
        // The array follows the statement's own values (the filter is the
        // last part of it that takes a parameter): its number is known once
        // the statement is built, so it goes in then.
        const ARRAY: &str = "$ids";
        let q = q.filter(Expr::cust(format!(
            "{} = ANY({ARRAY})",
            unnest::ident(sea_orm::IdenStatic::as_str(&col)),
        )));
        let mut st = self.backend.build(q.as_query());
        let n = st.values.as_ref().map_or(0, |v| v.0.len()) + 1;
        st.sql = st.sql.replacen(ARRAY, &format!("${n}"), 1);
        PgStatement::new(st, vec![PgArray::ids(ids)])
            .map(Stmt::Arrays)
            .map_err(unnest_err)
    }

    /// Whether a write of `rows` rows takes them as arrays ([`arrays_for`]).
    fn arrays_for(&self, rows: usize) -> bool {
        arrays_for(self.backend, rows)
    }

    /// The chunks of ids that [`Task::where_in`] filters on: all of them on
    /// PostgreSQL (an array), multi-row sizes on SQLite.
    fn id_chunks<'a>(&self, ids: &'a [Uuid]) -> Vec<&'a [Uuid]> {
        if self.backend == DbBackend::Postgres {
            vec![ids]
        } else {
            statement_chunks(self.backend, ids).collect()
        }
    }
}

/// PostgreSQL: adds sums to a usage rollup table in one statement for any
/// number of rows: the four key columns, the slot of this connection, then
/// the five counters ([`unnest`]). Rows come sorted by key, so concurrent
/// transactions lock them in one order.
pub(super) fn rollup_pg<K: Into<Value>>(
    table: &str,
    keys: [&str; 4],
    rows: impl IntoIterator<Item = ((Uuid, chrono::NaiveDate, Uuid, K), UsageDelta)>,
) -> StoreResult<Stmt> {
    const COUNTERS: [&str; 5] = [
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost_micros",
    ];
    let mut columns: Vec<(String, Vec<Value>)> = keys
        .iter()
        .chain(COUNTERS.iter())
        .map(|c| ((*c).to_owned(), Vec::new()))
        .collect();
    for ((tenant, day, bot, last), d) in rows {
        let key = [
            Value::from(tenant),
            Value::from(day),
            Value::from(bot),
            last.into(),
        ];
        let counters = [
            d.requests,
            d.prompt_tokens,
            d.completion_tokens,
            d.total_tokens,
            d.cost_micros,
        ];
        let values = key.into_iter().chain(counters.map(Value::from));
        for ((_, column), v) in columns.iter_mut().zip(values) {
            column.push(v);
        }
    }
    let slot = format!("(pg_backend_pid() % {USAGE_SLOTS})::smallint");
    let conflict: Vec<&str> = keys.iter().copied().chain(["slot"]).collect();
    let add: Vec<(&str, String)> = COUNTERS
        .iter()
        .map(|c| {
            (
                *c,
                format!(
                    "{}.{c} + \"excluded\".{c}",
                    unnest::ident(table),
                    c = unnest::ident(c)
                ),
            )
        })
        .collect();
    unnest::insert(
        table,
        columns,
        &[("slot", &slot)],
        &unnest::on_conflict(&conflict, &add),
    )
    .map(Stmt::Arrays)
    .map_err(unnest_err)
}

/// Writes an outcome onto a message row.
fn apply_completion(m: &mut e::message::Model, done: &MessageCompletion) {
    m.content.clone_from(&done.content);
    if let Some(s) = done.status {
        m.status = s.as_str().into();
    }
    if let Some(u) = done.usage {
        m.prompt_tokens = Some(u.prompt_tokens);
        m.completion_tokens = Some(u.completion_tokens);
        m.total_tokens = Some(u.total_tokens);
        m.tokens_estimated = u.estimated;
    }
    m.response_time_ms = done.response_time_ms;
    m.time_to_first_token_ms = done.time_to_first_token_ms;
    if done.provider.is_some() {
        m.provider.clone_from(&done.provider);
    }
    if done.model.is_some() {
        m.model.clone_from(&done.model);
    }
    m.finish_reason.clone_from(&done.finish_reason);
    m.error.clone_from(&done.error);
    m.source_chunk_ids = convert::ids_json(&done.source_chunk_ids);
    m.tool_calls = convert::tool_calls(&done.tool_calls);
    if let Some(c) = done.cost {
        m.cost_micros = Some(c.micros);
        m.cached_tokens = Some(std::cmp::min(c.cached_tokens, i32::MAX as u32) as i32);
        m.priced = Some(c.priced);
    }
}

/// Rewrites whole message rows in one statement per chunk: an insert that
/// conflicts on the id and so updates the row (multi-row `UPDATE` has no
/// portable form; this one runs on SQLite and PostgreSQL alike).
async fn upsert_messages(
    db: &(dyn WriteConn + '_),
    backend: DbBackend,
    models: &[e::message::Model],
) -> StoreResult<()> {
    use e::message::Column as M;
    const UPDATED: [M; 17] = [
        M::Content,
        M::Status,
        M::PromptTokens,
        M::CompletionTokens,
        M::TotalTokens,
        M::TokensEstimated,
        M::ResponseTimeMs,
        M::TimeToFirstTokenMs,
        M::Provider,
        M::Model,
        M::FinishReason,
        M::Error,
        M::SourceChunkIds,
        M::ToolCalls,
        M::CostMicros,
        M::CachedTokens,
        M::Priced,
    ];
    if models.is_empty() {
        return Ok(());
    }
    if arrays_for(backend, models.len()) {
        use sea_orm::IdenStatic;
        let set: Vec<(&str, String)> = UPDATED
            .iter()
            .map(|c| {
                (
                    c.as_str(),
                    format!("\"excluded\".{}", unnest::ident(c.as_str())),
                )
            })
            .collect();
        let st = unnest::insert_models(models, &unnest::on_conflict(&["id"], &set))
            .map_err(unnest_err)?;
        return db.exec(Stmt::Arrays(st)).await;
    }
    for chunk in statement_chunks(backend, models) {
        let q = e::message::Entity::insert_many(
            chunk.iter().cloned().map(e::message::ActiveModel::from),
        )
        .on_conflict(OnConflict::column(M::Id).update_columns(UPDATED).to_owned())
        .into_query();
        db.exec(backend.build(&q).into()).await?;
    }
    Ok(())
}

/// Inserts rows in multi-row statements.
async fn insert_rows<E>(
    db: &(dyn WriteConn + '_),
    backend: DbBackend,
    rows: impl IntoIterator<Item = E::ActiveModel>,
) -> StoreResult<()>
where
    E: EntityTrait,
    E::ActiveModel: sea_orm::ActiveModelTrait<Entity = E> + Send,
{
    let rows: Vec<E::ActiveModel> = rows.into_iter().collect();
    if rows.is_empty() {
        return Ok(());
    }
    if arrays_for(backend, rows.len()) {
        let st = unnest::insert_active(&rows, "").map_err(unnest_err)?;
        return db.exec(Stmt::Arrays(st)).await;
    }
    for chunk in statement_chunks(backend, &rows) {
        let q = E::insert_many(chunk.to_vec()).into_query();
        db.exec(backend.build(&q).into()).await?;
    }
    Ok(())
}

/// Most rows a PostgreSQL write sends as a `VALUES` list; more go as arrays.
const PG_VALUES_ROWS: usize = 4;

/// Whether a write of `rows` rows goes as arrays ([`unnest`]): on
/// PostgreSQL, beyond [`PG_VALUES_ROWS`] rows.
///
/// Arrays make one statement of any row count, but PostgreSQL's `UNNEST`
/// of a row's 28 columns costs about 80 µs more to execute than a one-row
/// `VALUES` list (its log at 1 concurrent turn: 310 µs a message insert
/// against 227 µs), and a lone turn writes its rows one or two at a time.
/// So small writes keep `VALUES`: four shapes per statement, and the
/// arrays' one shape for everything larger.
fn arrays_for(backend: DbBackend, rows: usize) -> bool {
    backend == DbBackend::Postgres && rows > PG_VALUES_ROWS
}

/// Splits `rows` into the multi-row statements that write them, in order.
///
/// On PostgreSQL, chunks of [`ROWS_PER_STATEMENT`]: each statement is a
/// round trip. On SQLite a statement is a call on the writer's thread, not a
/// round trip, but each row count is a statement of its own in the writer's
/// prepared-statement cache, and a multi-row insert of messages compiles to
/// a large program. With a chunk of every size up to 200, SQLite held 21 MB
/// at 64 concurrent in the wire benchmark (`sqlite3_memory_used`; its page
/// caches were 2.3 MB of it). So SQLite gets chunks of powers of two, at
/// most [`SQLITE_ROWS_PER_STATEMENT`]: eight sizes for each statement.
pub(super) fn statement_chunks<T>(backend: DbBackend, rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if backend == DbBackend::Sqlite {
            SQLITE_ROWS_PER_STATEMENT.min(1 << rest.len().ilog2())
        } else {
            ROWS_PER_STATEMENT.min(rest.len())
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// A bot's tenant (read by column name, as every backend reads it).
#[derive(sea_orm::FromQueryResult)]
struct BotTenant {
    id: Uuid,
    tenant_id: Uuid,
}

/// The tenants that have a job in `ops`.
fn batch_tenants(ops: &[&Op]) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for op in ops {
        match op {
            Op::Begin { tenant, .. } | Op::Finish { tenant, .. } | Op::Progress { tenant, .. } => {
                ids.push(tenant.0)
            }
            Op::Audit(records) => {
                ids.extend(records.iter().filter_map(|r| r.tenant_id.map(|t| t.0)))
            }
            Op::Heartbeat | Op::Flush => {}
        }
    }
    dedup(ids)
}

fn dedup(mut v: Vec<Uuid>) -> Vec<Uuid> {
    v.sort_unstable();
    v.dedup();
    v
}

/// How often an idle instance says it is alive.
pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(backend: DbBackend, n: usize) -> Vec<usize> {
        let rows: Vec<usize> = (0..n).collect();
        let chunks: Vec<&[usize]> = statement_chunks(backend, &rows).collect();
        // Every row once, in order.
        assert_eq!(chunks.concat(), rows, "{n} rows on {backend:?}");
        chunks.iter().map(|c| c.len()).collect()
    }

    #[test]
    fn sqlite_statements_have_power_of_two_row_counts() {
        assert!(sizes(DbBackend::Sqlite, 0).is_empty());
        assert_eq!(sizes(DbBackend::Sqlite, 1), [1]);
        assert_eq!(sizes(DbBackend::Sqlite, 3), [2, 1]);
        assert_eq!(sizes(DbBackend::Sqlite, 64), [64]);
        assert_eq!(sizes(DbBackend::Sqlite, 200), [128, 64, 8]);
        assert_eq!(sizes(DbBackend::Sqlite, 300), [128, 128, 32, 8, 4]);
        let mut shapes = std::collections::BTreeSet::new();
        for n in 0..=3 * MAX_BATCH {
            shapes.extend(sizes(DbBackend::Sqlite, n));
        }
        assert_eq!(
            shapes.into_iter().collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 64, 128],
            "a batch of any size is written with eight statement shapes"
        );
    }

    #[test]
    fn postgres_statements_take_up_to_two_hundred_rows() {
        assert!(sizes(DbBackend::Postgres, 0).is_empty());
        assert_eq!(sizes(DbBackend::Postgres, 37), [37]);
        assert_eq!(sizes(DbBackend::Postgres, 200), [200]);
        assert_eq!(sizes(DbBackend::Postgres, 450), [200, 200, 50]);
    }
}
