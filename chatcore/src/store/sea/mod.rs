//! [`SeaOrmStore`]: the [`Store`] on SQLite and PostgreSQL through SeaORM.
//!
//! SeaORM entities and `DbErr` stay in this module; the trait speaks domain
//! types and [`StoreError`] only.

mod budgets;
mod check;
mod convert;
mod direct;
mod entities;
mod guard;
mod scope;
mod search;
mod tenant;
mod unnest;
mod widget;
mod writer;

#[cfg(test)]
mod cause_tests;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use migration::{Migrator, MigratorTrait};
use scope::{Tenancy, done};
use sea_orm::prelude::Expr;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DbBackend, DbErr, EntityTrait, IntoActiveModel, Order, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Select, Set, SqlErr, TransactionTrait,
};
use tenant::of_tenant;
use uuid::Uuid;

use super::*;
use entities as e;

/// The SeaORM-backed store. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct SeaOrmStore {
    /// Reads (and, on PostgreSQL, writes).
    db: DatabaseConnection,
    /// Writes. On a SQLite file this is a separate pool of one connection:
    /// SQLite has one writer at a time, and queueing writers on an async
    /// pool is far cheaper than letting several connections collide on the
    /// write lock and sleep in SQLite's busy handler.
    wdb: DatabaseConnection,
    backend: DbBackend,
    /// Vector search state: pgvector or the in-memory scan and its cache.
    vectors: std::sync::Arc<search::VectorState>,
    /// The group-commit writer of chat turns and audit records.
    writer: writer::Writer,
    /// This store's identity in `instances` (owner of its pending turns).
    instance: writer::InstanceInfo,
    /// After how long without a heartbeat another instance is dead.
    instance_stale_after: Duration,
    /// Whether row-level security binds the pools (PostgreSQL run as
    /// [`StoreOptions::database_role`]): statements then run in a
    /// transaction that names their tenant (see `scope`).
    rls: bool,
    /// With `rls`: how to connect as the login user (the tables' owner),
    /// who migrates.
    owner: Option<ConnectOptions>,
}

impl std::fmt::Debug for SeaOrmStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never print it.
        f.debug_struct("SeaOrmStore")
            .field("backend", &self.backend)
            .finish()
    }
}

/// Pool and connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Largest pool (SQLite in memory always uses 1: each connection would
    /// otherwise be a separate database; a SQLite file at most
    /// [`SQLITE_MAX_READERS`]).
    pub max_connections: u32,
    /// How long to wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// PostgreSQL schema to use (created if missing); tests use one per run.
    pub schema: Option<String>,
    /// Memory for datasets' vectors kept for the exact scan (SQLite, or
    /// PostgreSQL without pgvector), in bytes: 100,000 chunks of 384
    /// dimensions take about 157 MB.
    pub vector_cache_bytes: usize,
    /// This instance's name in the `instances` table: stable across
    /// restarts of one deployment slot (the server uses host and listen
    /// address), unique among live instances. A store that starts under a
    /// name takes the pending turns of earlier instances of that name as
    /// orphaned at once; `None` gives a unique name, so orphans of earlier
    /// runs are found only when their heartbeat is stale.
    pub instance_name: Option<String>,
    /// After how long without a heartbeat another instance counts as dead
    /// (its pending turns as orphaned). Heartbeats come every 10 s.
    pub instance_stale_after: Duration,
    /// PostgreSQL: the role every pooled connection runs as (`SET ROLE` at
    /// connect), so that row-level security binds the store; migrations
    /// run as the login user on a connection of their own. The default,
    /// `chatcore_app`, is the role the migration creates; `None` runs as
    /// the login user (as the tables' owner the policies do not bind it).
    /// Ignored on SQLite.
    pub database_role: Option<String>,
    /// SQLite in a file: the group-commit writer's connection. `true` (the
    /// default): a connection of its own on the writer's own thread, each
    /// statement without a hand-off ([`direct`]); `false`: a connection of
    /// sqlx's pool, whose worker thread takes each statement in turn.
    /// Ignored in memory and on PostgreSQL.
    pub sqlite_direct_writer: bool,
    /// PostgreSQL: most group-commit transactions in flight at once, each
    /// on a connection of the writer's own pool (1 to 16; default 4), so
    /// that one batch's round trips and commit overlap another's. These
    /// connections come in addition to [`StoreOptions::max_connections`].
    /// Ignored on SQLite, which has one writer.
    pub writer_transactions: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            schema: None,
            vector_cache_bytes: 512 * 1024 * 1024,
            instance_name: None,
            instance_stale_after: Duration::from_secs(60),
            database_role: Some(DEFAULT_DATABASE_ROLE.into()),
            sqlite_direct_writer: true,
            writer_transactions: DEFAULT_WRITER_TRANSACTIONS,
        }
    }
}

/// [`StoreOptions::writer_transactions`] by default.
pub const DEFAULT_WRITER_TRANSACTIONS: usize = 4;

/// Most pooled connections to a SQLite file ([`StoreOptions::max_connections`]
/// above it is lowered to it).
pub const SQLITE_MAX_READERS: u32 = 4;

/// The role the `row_level_security` migration creates for the server.
pub const DEFAULT_DATABASE_ROLE: &str = migration::m20261201_000005_row_level_security::APP_ROLE;

/// Tables and indexes present in a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaObjects {
    /// Table names, sorted.
    pub tables: Vec<String>,
    /// Index names, sorted.
    pub indexes: Vec<String>,
}

/// Maps a driver error to a store error, keeping it as the `source()`.
fn db_err(e: DbErr) -> StoreError {
    let text = e.to_string();
    match e {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => {
            StoreError::unavailable_from("cannot connect to the database", e)
        }
        // SQLite's busy timeout ran out: overloaded, not broken.
        _ if text.contains("database is locked") => {
            StoreError::unavailable_from("the database is locked", e)
        }
        _ if guard::unstorable_text(&e) => {
            StoreError::InvalidInput("text: must not contain NUL characters (U+0000)".into())
        }
        // The connection went away mid-statement (a restarted or
        // terminated PostgreSQL backend, a network cut): the database is
        // unavailable, the request is not at fault.
        _ if connection_lost(&text) => {
            StoreError::unavailable_from("the database connection was lost", e)
        }
        _ => StoreError::internal_from("a database statement failed", e),
    }
}

/// Prepared statements kept per PostgreSQL connection (sqlx's default is
/// 100). It was raised when the writer's multi-row statements took a shape
/// per batch size and evicted each other; they are one shape per table now
/// (`unnest`), and the limit is headroom: an entry exists only for a
/// statement that ran.
const PG_STATEMENT_CACHE: usize = 1024;

/// The options of every PostgreSQL connection a store opens (its pool's and,
/// with `writer`, its writer's): a statement cache of [`PG_STATEMENT_CACHE`]
/// and the database role, if any, as startup parameters, so that every
/// connection the pool opens (and reopens) has them from its first statement.
///
/// The writer's connections also plan each statement once
/// (`plan_cache_mode=force_generic_plan`). Its statements take a batch's
/// rows as arrays (`unnest`): `id = ANY($1)` and `UNNEST($1, ...)`, whose
/// custom plan for the rows at hand always looks cheaper than a generic
/// plan that must assume ten. So PostgreSQL kept planning them again on
/// every execution, 40 to 80 µs a statement in its log at 1 concurrent
/// turn. They are primary-key lookups and inserts: the generic plan is the
/// plan.
fn pg_session_options(co: &mut ConnectOptions, role: Option<String>, writer: bool) {
    co.map_sqlx_postgres_opts(move |o| {
        let o = o.statement_cache_capacity(PG_STATEMENT_CACHE);
        let o = match &role {
            Some(r) => o.options([("role", r.as_str())]),
            None => o,
        };
        if writer {
            o.options([("plan_cache_mode", "force_generic_plan")])
        } else {
            o
        }
    });
}

/// A PostgreSQL URL to a loopback host without an `sslmode` gets
/// `sslmode=disable`.
///
/// Why: sqlx (0.9) opens its sockets without `TCP_NODELAY`, and over TLS a
/// statement goes out in several writes, so Nagle's algorithm holds the last
/// one until the server's delayed ACK, about 40 ms. In the wire benchmark
/// the writer's transactions spent most of their time in such waits
/// (PostgreSQL showed `idle in transaction`, `ClientRead`, 30-40 ms between
/// statements): 520 turns/s at 64 concurrent over TLS, 2,526 without. TLS
/// to a loopback address protects nothing that leaves the machine; a URL
/// that names an `sslmode` keeps it.
fn loopback_without_tls(url: &str) -> String {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return url.to_string();
    };
    if url.contains("sslmode=") {
        return url.to_string();
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode=disable")
}

/// Whether a driver error says the connection itself was lost.
fn connection_lost(text: &str) -> bool {
    const SIGNS: [&str; 7] = [
        "error communicating with database",
        "terminating connection",
        "57P01",
        "server closed the connection",
        "connection reset",
        "broken pipe",
        "pool timed out",
    ];
    let t = text.to_ascii_lowercase();
    SIGNS.iter().any(|s| t.contains(&s.to_ascii_lowercase()))
}

/// Maps a constraint violation to a typed error naming the resource.
fn write_err(e: DbErr, what: &'static str) -> StoreError {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict(what),
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => StoreError::NotFound(what),
        _ => db_err(e),
    }
}

/// Maps a foreign-key violation on delete to `InUse`.
fn delete_err(e: DbErr, what: &'static str) -> StoreError {
    match e.sql_err() {
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => StoreError::InUse(what),
        // SQLite reports ON DELETE RESTRICT as SQLITE_CONSTRAINT_TRIGGER
        // (1811), which SeaORM does not classify.
        _ if e.to_string().contains("FOREIGN KEY constraint failed") => StoreError::InUse(what),
        _ => db_err(e),
    }
}

/// Whether `s` can be written into SQL as a name without quoting issues.
fn sql_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Applies pending migrations and installs pgvector's column on a
/// connection of its own made with `opts` (the login user's).
async fn migrate_as(opts: &ConnectOptions) -> StoreResult<()> {
    let mut o = opts.clone();
    o.max_connections(1).min_connections(0);
    let odb = Database::connect(o).await.map_err(db_err)?;
    let r = async {
        Migrator::up(&odb, None).await.map_err(db_err)?;
        search::install_vectors(&odb).await
    }
    .await;
    let _ = odb.close().await;
    r
}

fn parse_cursor(c: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(c).map_err(|_| StoreError::InvalidInput("cursor is not valid".into()))
}

/// One page of `query` ordered by `id_col` (ids are UUIDv7: creation order).
async fn paginate<E, C, T>(
    db: &C,
    query: Select<E>,
    id_col: E::Column,
    page: &PageRequest,
    order: Order,
    id_of: fn(&E::Model) -> Uuid,
    conv: fn(E::Model) -> StoreResult<T>,
) -> StoreResult<Page<T>>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let limit = page.effective_limit();
    let mut q = query;
    if let Some(c) = &page.cursor {
        let c = parse_cursor(c)?;
        q = match order {
            Order::Desc => q.filter(id_col.lt(c)),
            _ => q.filter(id_col.gt(c)),
        };
    }
    let mut rows = q
        .order_by(id_col, order)
        .limit(limit + 1)
        .all(db)
        .await
        .map_err(db_err)?;
    let next_cursor = if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|m| id_of(m).to_string())
    } else {
        None
    };
    Ok(Page {
        data: rows.into_iter().map(conv).collect::<StoreResult<_>>()?,
        next_cursor,
    })
}

fn audit_row(r: AuditRecord) -> e::audit_log::ActiveModel {
    e::audit_log::ActiveModel {
        id: Set(r.id.0),
        tenant_id: Set(r.tenant_id.map(|t| t.0)),
        actor_kind: Set(r.actor.kind.as_str().into()),
        actor_id: Set(r.actor.id),
        action: Set(r.action),
        resource_type: Set(r.resource_type),
        resource_id: Set(r.resource_id),
        request_id: Set(r.request_id),
        ip: Set(r.ip),
        metadata: Set(r.metadata),
        created_at: Set(r.created_at),
    }
}

/// One group of the usage aggregate, as the database returns it.
#[derive(Debug, sea_orm::FromQueryResult)]
struct UsageAgg {
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    total_tokens: i64,
    cost_micros: i64,
}

#[derive(Debug, sea_orm::FromQueryResult)]
struct UsageByUuid {
    grp: Uuid,
    #[sea_orm(nested)]
    agg: UsageAgg,
}

#[derive(Debug, sea_orm::FromQueryResult)]
struct UsageByDay {
    grp: chrono::NaiveDate,
    #[sea_orm(nested)]
    agg: UsageAgg,
}

impl UsageAgg {
    fn row(self, group: Option<String>) -> UsageRow {
        let n = |v: i64| v.max(0) as u64;
        UsageRow {
            group,
            requests: n(self.requests),
            prompt_tokens: n(self.prompt_tokens),
            completion_tokens: n(self.completion_tokens),
            total_tokens: n(self.total_tokens),
            cost_micros: self.cost_micros,
        }
    }
}

/// Rows of `usage_daily` that one tenant/day/bot/key is spread over on
/// PostgreSQL (see the `usage_daily` migration): each connection adds to
/// its own, so concurrent turns do not queue on one row lock.
const USAGE_SLOTS: i32 = 64;

/// What a message adds to the usage rollup: an assistant message with an
/// outcome (any status but `pending`) is one turn with its tokens; anything
/// else adds nothing. Written as the difference between a message's
/// contribution after and before a change.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct UsageDelta {
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    total_tokens: i64,
    cost_micros: i64,
}

impl UsageDelta {
    fn of(m: &e::message::Model) -> Self {
        if m.role != Role::Assistant.as_str() || m.status == MessageStatus::Pending.as_str() {
            return Self::default();
        }
        let n = |v: Option<i32>| i64::from(v.unwrap_or(0));
        Self {
            requests: 1,
            prompt_tokens: n(m.prompt_tokens),
            completion_tokens: n(m.completion_tokens),
            total_tokens: n(m.total_tokens),
            cost_micros: m.cost_micros.unwrap_or(0),
        }
    }

    fn minus(self, o: Self) -> Self {
        Self {
            requests: self.requests - o.requests,
            prompt_tokens: self.prompt_tokens - o.prompt_tokens,
            completion_tokens: self.completion_tokens - o.completion_tokens,
            total_tokens: self.total_tokens - o.total_tokens,
            cost_micros: self.cost_micros - o.cost_micros,
        }
    }
}

fn found<T>(m: Option<T>, what: &'static str) -> StoreResult<T> {
    m.ok_or(StoreError::NotFound(what))
}

impl SeaOrmStore {
    /// Connects to `url` (`sqlite:...` or `postgres://...`) without migrating.
    pub async fn connect(url: &str, opts: StoreOptions) -> StoreResult<Self> {
        Self::start(url, opts, false).await
    }

    /// Connects and brings the schema up to date first (as the login user
    /// when the pools run as [`StoreOptions::database_role`]).
    async fn start(url: &str, opts: StoreOptions, migrate: bool) -> StoreResult<Self> {
        let url = &loopback_without_tls(url);
        let mut co = ConnectOptions::new(url.to_string());
        co.acquire_timeout(opts.acquire_timeout).sqlx_logging(false);
        let is_sqlite = url.starts_with("sqlite:");
        let in_memory = is_sqlite && (url.contains(":memory:") || url.contains("mode=memory"));
        let mut role = None;
        if is_sqlite {
            guard::restrict_sqlite_files(url)?;
            co.map_sqlx_sqlite_opts(move |o| {
                let o = o.foreign_keys(true).busy_timeout(Duration::from_secs(5));
                if in_memory {
                    o
                } else {
                    // WAL: readers never block the writer; NORMAL sync is
                    // durable across application crashes in WAL mode.
                    o.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                }
            });
            if in_memory {
                // Each connection to :memory: is its own database: keep one,
                // forever.
                co.max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
            } else {
                // Readers of one file on one machine: more of them than
                // cores buys nothing, and each is a thread of sqlx's with a
                // page cache of its own (at 16, a burst of cache misses
                // left 17 such threads and about 30 MiB behind).
                co.max_connections(opts.max_connections.clamp(1, SQLITE_MAX_READERS));
            }
        } else {
            co.max_connections(opts.max_connections.max(1));
            if let Some(schema) = &opts.schema {
                if !sql_name(schema) {
                    return Err(StoreError::InvalidInput(
                        "schema name must be alphanumeric".into(),
                    ));
                }
                // Create the schema through a short-lived connection first.
                let bootstrap = Database::connect(url).await.map_err(db_err)?;
                bootstrap
                    .execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                    .await
                    .map_err(db_err)?;
                bootstrap.close().await.map_err(db_err)?;
                // `public` stays on the path: extensions (pgvector) live there.
                co.set_schema_search_path(format!("{schema},public"));
            }
            if let Some(r) = opts.database_role.as_deref().filter(|r| !r.is_empty()) {
                if !sql_name(r) {
                    return Err(StoreError::InvalidInput(
                        "database role name must be alphanumeric".into(),
                    ));
                }
                role = Some(r.to_string());
            }
        }
        let owner = role.as_ref().map(|_| co.clone());
        if migrate && let Some(o) = &owner {
            migrate_as(o).await?;
        }
        // The writer's PostgreSQL connections: the same options, and generic
        // plans (below).
        let mut writer_co = co.clone();
        if !is_sqlite {
            pg_session_options(&mut co, role.clone(), false);
            pg_session_options(&mut writer_co, role.clone(), true);
        }
        let connected = |e: DbErr| match &role {
            Some(r) if e.to_string().contains("role") => StoreError::InvalidInput(format!(
                "cannot run as database role {r}: {e}. The migration creates the role when \
                 the login user may create roles, and grants it to that user; otherwise grant it \
                 (GRANT {r} TO <login user>), or run without row-level security \
                 (database role set to none)"
            )),
            _ => db_err(e),
        };
        let db = Database::connect(co.clone()).await.map_err(connected)?;
        let backend = db.get_database_backend();
        let wdb = if is_sqlite && !in_memory {
            let mut wo = co.clone();
            wo.max_connections(1).min_connections(1);
            Database::connect(wo).await.map_err(db_err)?
        } else {
            db.clone()
        };
        let id = Uuid::now_v7();
        let instance = writer::InstanceInfo {
            id,
            name: opts
                .instance_name
                .clone()
                .unwrap_or_else(|| format!("anonymous-{id}")),
            started_at: now(),
        };
        let rls = role.is_some();
        let writer = match guard::sqlite_file(url) {
            Some(path) if opts.sqlite_direct_writer => {
                let direct = direct::DirectSqlite::open(&path).map_err(db_err)?;
                writer::Writer::spawn_direct(direct, instance.clone())
                    .map_err(|e| StoreError::internal_from("cannot start the store's writer", e))?
            }
            _ if backend == DbBackend::Postgres => {
                writer::Writer::spawn_thread(
                    writer_co,
                    instance.clone(),
                    rls,
                    opts.writer_transactions,
                )
                .await?
            }
            _ => writer::Writer::spawn(wdb.clone(), instance.clone(), rls),
        };
        let store = Self {
            writer,
            db,
            wdb,
            backend,
            vectors: std::sync::Arc::new(search::VectorState::new(opts.vector_cache_bytes)),
            instance,
            instance_stale_after: opts.instance_stale_after,
            rls,
            owner,
        };
        if migrate && !rls {
            Migrator::up(&store.wdb, None).await.map_err(db_err)?;
            search::install_vectors(&store.db).await?;
        }
        store.prepare_vector_search().await?;
        Ok(store)
    }

    /// Connects and applies pending migrations.
    pub async fn open(url: &str, opts: StoreOptions) -> StoreResult<Self> {
        let s = Self::start(url, opts, true).await?;
        s.register().await?;
        Ok(s)
    }

    /// An empty, migrated SQLite database in memory.
    pub async fn in_memory() -> StoreResult<Self> {
        Self::open("sqlite::memory:", StoreOptions::default()).await
    }

    /// Applies pending migrations (as the login user), then registers this
    /// instance (its heartbeat goes on every 10 s while the store lives).
    pub async fn migrate(&self) -> StoreResult<()> {
        match &self.owner {
            Some(o) => migrate_as(o).await?,
            None => {
                Migrator::up(&self.wdb, None).await.map_err(db_err)?;
                search::install_vectors(&self.db).await?;
            }
        }
        self.prepare_vector_search().await?;
        self.register().await
    }

    /// Registers this instance; its heartbeat goes on while the store lives.
    async fn register(&self) -> StoreResult<()> {
        self.writer.submit(writer::Op::Heartbeat).await?;
        self.writer.keep_alive();
        Ok(())
    }

    /// Waits until every write queued so far is committed.
    pub async fn flush(&self) -> StoreResult<()> {
        self.writer.submit(writer::Op::Flush).await.map(|_| ())
    }

    /// Pending assistant messages whose instance is gone (see
    /// [`ChatStore::orphaned_turns`]): no live instance owns them, where live
    /// means this one, or another of a different name with a fresh
    /// heartbeat. Reads the partial index over pending messages.
    async fn find_orphaned_turns(&self, limit: u64) -> StoreResult<Vec<OrphanedTurn>> {
        let ph = |i: usize| match self.backend {
            DbBackend::Postgres => format!("${i}"),
            _ => "?".to_string(),
        };
        let sql = format!(
            "SELECT m.* FROM messages m WHERE m.status = 'pending' AND m.role = 'assistant' \
             AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = m.instance_id \
             AND (i.id = {} OR (i.name <> {} AND i.heartbeat_at >= {}))) \
             ORDER BY m.id LIMIT {}",
            ph(1),
            ph(2),
            ph(3),
            limit.clamp(1, 10_000)
        );
        let stale = now()
            - chrono::Duration::from_std(self.instance_stale_after)
                .unwrap_or(chrono::Duration::seconds(60));
        // Cross-tenant by nature: the turns of every tenant a dead instance
        // left.
        let db = self.scoped(Tenancy::All).await?;
        let rows = e::message::Entity::find()
            .from_raw_sql(sea_orm::Statement::from_sql_and_values(
                self.backend,
                sql,
                [
                    self.instance.id.into(),
                    self.instance.name.clone().into(),
                    stale.into(),
                ],
            ))
            .all(&db)
            .await
            .map_err(db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for m in rows {
            let prompt = e::message::Entity::find()
                .filter(e::message::Column::ConversationId.eq(m.conversation_id))
                .filter(e::message::Column::Role.eq(Role::User.as_str()))
                .filter(e::message::Column::Id.lt(m.id))
                .order_by_desc(e::message::Column::Id)
                .one(&db)
                .await
                .map_err(db_err)?
                .map(|u| u.content);
            out.push(OrphanedTurn {
                message: convert::message(m)?,
                prompt,
            });
        }
        done(db).await?;
        Ok(out)
    }

    /// This store's instance id (the owner recorded on its pending turns).
    pub fn instance_id(&self) -> Uuid {
        self.instance.id
    }

    /// Reverts every migration (drops every table), as the login user.
    pub async fn migrate_down(&self) -> StoreResult<()> {
        match &self.owner {
            Some(o) => {
                let odb = Database::connect(o.clone()).await.map_err(db_err)?;
                let r = Migrator::down(&odb, None).await.map_err(db_err);
                let _ = odb.close().await;
                r?;
            }
            None => Migrator::down(&self.wdb, None).await.map_err(db_err)?,
        }
        self.prepare_vector_search().await
    }

    /// Names of the tables and indexes in the database (for diagnostics and
    /// schema tests), sorted.
    pub async fn schema_objects(&self) -> StoreResult<SchemaObjects> {
        use sea_orm::{FromQueryResult, JsonValue, Statement};
        let (tables_sql, indexes_sql) = match self.backend {
            DbBackend::Postgres => (
                "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1",
                "SELECT indexname AS name FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1",
            ),
            _ => (
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1",
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY 1",
            ),
        };
        let names = |sql: &'static str| async move {
            let rows = JsonValue::find_by_statement(Statement::from_string(self.backend, sql))
                .all(&self.db)
                .await
                .map_err(db_err)?;
            Ok::<_, StoreError>(
                rows.into_iter()
                    .filter_map(|r| r.get("name").and_then(|n| n.as_str()).map(str::to_string))
                    .collect(),
            )
        };
        Ok(SchemaObjects {
            tables: names(tables_sql).await?,
            indexes: names(indexes_sql).await?,
        })
    }

    /// PostgreSQL: the role the store's statements run as (`current_user`:
    /// [`StoreOptions::database_role`] when set); `None` on SQLite.
    pub async fn current_role(&self) -> StoreResult<Option<String>> {
        if self.backend != DbBackend::Postgres {
            return Ok(None);
        }
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                DbBackend::Postgres,
                "SELECT current_user::text AS u",
            ))
            .await
            .map_err(db_err)?;
        Ok(row.and_then(|r| r.try_get::<String>("", "u").ok()))
    }

    /// Which database this is.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            DbBackend::Postgres => "postgres",
            DbBackend::Sqlite => "sqlite",
            _ => "other",
        }
    }

    /// Closes the pool (and, for SQLite, checkpoints the WAL), after the
    /// writes queued so far are committed.
    pub async fn close(self) -> StoreResult<()> {
        self.flush().await?;
        if self.backend == DbBackend::Sqlite {
            let _ = self.wdb.close().await;
        }
        self.db.close().await.map_err(db_err)
    }

    /// Drops a PostgreSQL schema and everything in it (test cleanup).
    pub async fn drop_schema(url: &str, schema: &str) -> StoreResult<()> {
        if !schema
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(StoreError::InvalidInput(
                "schema name must be alphanumeric".into(),
            ));
        }
        let db = Database::connect(url).await.map_err(db_err)?;
        db.execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .map_err(db_err)?;
        db.close().await.map_err(db_err)
    }

    /// A transaction that writes. On SQLite it takes the write lock at
    /// BEGIN (IMMEDIATE): a deferred transaction that reads first and then
    /// writes fails with SQLITE_BUSY, without waiting, when another
    /// connection wrote in between.
    /// Its first statement sets `tenancy` when row-level security binds
    /// the store.
    async fn write_txn(&self, tenancy: Tenancy<'_>) -> StoreResult<sea_orm::DatabaseTransaction> {
        let opts = sea_orm::TransactionOptions {
            sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        let txn = self.wdb.begin_with_options(opts).await.map_err(db_err)?;
        self.set_tenancy_in(&txn, tenancy).await?;
        Ok(txn)
    }

    /// Marks a document whose chunks were just written `ready` and commits.
    async fn finish_replace(txn: sea_orm::DatabaseTransaction, doc: Uuid) -> StoreResult<()> {
        e::document::Entity::update_many()
            .col_expr(
                e::document::Column::Status,
                Expr::value(DocumentStatus::Ready.as_str()),
            )
            .col_expr(
                e::document::Column::Error,
                Expr::value(Option::<String>::None),
            )
            .col_expr(e::document::Column::UpdatedAt, Expr::value(now()))
            .filter(e::document::Column::Id.eq(doc))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        txn.commit().await.map_err(db_err)
    }

    async fn tenant_owns_provider<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        id: ProviderConfigId,
    ) -> StoreResult<bool> {
        Ok(of_tenant::<e::provider_config::Entity>(tenant)
            .filter(e::provider_config::Column::Id.eq(id.0))
            .count(db)
            .await
            .map_err(db_err)?
            == 1)
    }

    async fn check_datasets<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        ids: &[DatasetId],
    ) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let n = of_tenant::<e::dataset::Entity>(tenant)
            .filter(e::dataset::Column::Id.is_in(ids.iter().map(|d| d.0)))
            .count(db)
            .await
            .map_err(db_err)?;
        let mut distinct = ids.to_vec();
        distinct.sort();
        distinct.dedup();
        if n as usize != distinct.len() {
            return Err(StoreError::NotFound("dataset"));
        }
        Ok(())
    }

    async fn find_bot<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        id: BotId,
    ) -> StoreResult<e::bot::Model> {
        found(
            of_tenant::<e::bot::Entity>(tenant)
                .filter(e::bot::Column::Id.eq(id.0))
                .one(db)
                .await
                .map_err(db_err)?,
            "bot",
        )
    }

    /// Adds `d` to the usage rollup row of message `m` (its tenant, UTC day
    /// of creation, bot and key), creating the row if needed. Called last in
    /// the transaction that changed `m`, so that on PostgreSQL the row lock
    /// is held only until the commit that follows.
    async fn add_usage<C: ConnectionTrait>(
        &self,
        db: &C,
        m: &e::message::Model,
        d: UsageDelta,
    ) -> StoreResult<()> {
        use e::usage_daily::{Column as U, Entity as UsageDaily};
        use sea_orm::sea_query::{Alias, ExprTrait, OnConflict, Query};
        if d == UsageDelta::default() {
            return Ok(());
        }
        let slot = match self.backend {
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
        let stmt = Query::insert()
            .into_table(UsageDaily)
            .columns([
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
            ])
            .values_panic([
                Expr::val(m.tenant_id),
                Expr::val(m.created_at.date_naive()),
                Expr::val(m.bot_id),
                Expr::val(m.api_key_id.unwrap_or(Uuid::nil())),
                slot,
                Expr::val(d.requests),
                Expr::val(d.prompt_tokens),
                Expr::val(d.completion_tokens),
                Expr::val(d.total_tokens),
                Expr::val(d.cost_micros),
            ])
            .on_conflict(
                OnConflict::columns([U::TenantId, U::Day, U::BotId, U::ApiKeyId, U::Slot])
                    .values([
                        add(U::Requests),
                        add(U::PromptTokens),
                        add(U::CompletionTokens),
                        add(U::TotalTokens),
                        add(U::CostMicros),
                    ])
                    .to_owned(),
            )
            .to_owned();
        db.execute(&stmt).await.map_err(db_err)?;
        self.add_end_user_usage(db, vec![(m.clone(), d)]).await?;
        Ok(())
    }
}

/// The writes, on any connection: the `Store` methods run them on the pool
/// or in a write transaction, [`AuditStore::apply`] in one with the audit record.
impl SeaOrmStore {
    async fn create_tenant_in<C: ConnectionTrait>(db: &C, new: NewTenant) -> StoreResult<Tenant> {
        let t = now();
        let m = e::tenant::ActiveModel {
            id: Set(TenantId::new().0),
            name: Set(new.name),
            slug: Set(new.slug),
            status: Set(TenantStatus::Active.as_str().into()),
            rate_limit_rpm: Set(new.rate_limit_rpm),
            rate_limit_tpm: Set(new.rate_limit_tpm),
            public_rate_limit_rpm: Set(new.public_rate_limit_rpm),
            features: Set(new.features),
            created_at: Set(t),
            updated_at: Set(t),
        };
        convert::tenant(m.insert(db).await.map_err(|e| write_err(e, "tenant"))?)
    }

    async fn update_tenant_in<C: ConnectionTrait>(
        db: &C,
        id: TenantId,
        patch: TenantPatch,
    ) -> StoreResult<Tenant> {
        let m = found(
            e::tenant::Entity::find_by_id(id.0)
                .one(db)
                .await
                .map_err(db_err)?,
            "tenant",
        )?;
        let mut a = m.into_active_model();
        if let Some(v) = patch.name {
            a.name = Set(v);
        }
        if let Some(v) = patch.slug {
            a.slug = Set(v);
        }
        if let Some(v) = patch.status {
            a.status = Set(v.as_str().into());
        }
        if let Some(v) = patch.rate_limit_rpm {
            a.rate_limit_rpm = Set(v);
        }
        if let Some(v) = patch.rate_limit_tpm {
            a.rate_limit_tpm = Set(v);
        }
        if let Some(v) = patch.public_rate_limit_rpm {
            a.public_rate_limit_rpm = Set(v);
        }
        if let Some(v) = patch.features {
            a.features = Set(v);
        }
        a.updated_at = Set(now());
        convert::tenant(a.update(db).await.map_err(|e| write_err(e, "tenant"))?)
    }

    async fn create_provider_config_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        new: NewProviderConfig,
    ) -> StoreResult<ProviderConfig> {
        let t = now();
        let (ct, kid, last4) = match new.api_key {
            Some(k) => (Some(k.ciphertext), Some(k.key_id), Some(k.last4)),
            None => (None, None, None),
        };
        let m = e::provider_config::ActiveModel {
            id: Set(ProviderConfigId::new().0),
            tenant_id: Set(tenant.0),
            provider: Set(new.provider),
            name: Set(new.name),
            api_key_ciphertext: Set(ct),
            api_key_key_id: Set(kid),
            api_key_last4: Set(last4),
            base_url: Set(new.base_url),
            default_model: Set(new.default_model),
            enabled: Set(new.enabled),
            created_at: Set(t),
            updated_at: Set(t),
        };
        // A foreign-key failure here is an unknown catalog key or tenant.
        let m = m
            .insert(db)
            .await
            .map_err(|e| write_err(e, "catalog entry"))?;
        convert::provider_config(m)
    }

    async fn update_provider_config_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        id: ProviderConfigId,
        patch: ProviderConfigPatch,
    ) -> StoreResult<ProviderConfig> {
        let m = of_tenant::<e::provider_config::Entity>(tenant)
            .filter(e::provider_config::Column::Id.eq(id.0))
            .one(db)
            .await
            .map_err(db_err)?;
        let mut a = found(m, "provider")?.into_active_model();
        if let Some(v) = patch.name {
            a.name = Set(v);
        }
        if let Some(k) = patch.api_key {
            let (ct, kid, last4) = match k {
                Some(k) => (Some(k.ciphertext), Some(k.key_id), Some(k.last4)),
                None => (None, None, None),
            };
            a.api_key_ciphertext = Set(ct);
            a.api_key_key_id = Set(kid);
            a.api_key_last4 = Set(last4);
        }
        if let Some(v) = patch.base_url {
            a.base_url = Set(v);
        }
        if let Some(v) = patch.default_model {
            a.default_model = Set(v);
        }
        if let Some(v) = patch.enabled {
            a.enabled = Set(v);
        }
        a.updated_at = Set(now());
        convert::provider_config(a.update(db).await.map_err(|e| write_err(e, "provider"))?)
    }

    async fn delete_provider_config_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        id: ProviderConfigId,
    ) -> StoreResult<()> {
        let r = e::provider_config::Entity::delete_many()
            .filter(e::provider_config::Column::Id.eq(id.0))
            .filter(e::provider_config::Column::TenantId.eq(tenant.0))
            .exec(db)
            .await
            .map_err(|e| delete_err(e, "provider"))?;
        if r.rows_affected == 0 {
            return Err(StoreError::NotFound("provider"));
        }
        Ok(())
    }

    async fn create_bot_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        new: NewBot,
    ) -> StoreResult<Bot> {
        if !Self::tenant_owns_provider(db, tenant, new.provider_id).await? {
            return Err(StoreError::NotFound("provider"));
        }
        if let Some(f) = new.fallback_provider_id
            && !Self::tenant_owns_provider(db, tenant, f).await?
        {
            return Err(StoreError::NotFound("fallback provider"));
        }
        Self::check_datasets(db, tenant, &new.dataset_ids).await?;
        if new.is_public && Self::public_slug_taken(db, tenant, &new.slug, None).await? {
            return Err(StoreError::Conflict("public bot"));
        }
        let t = now();
        let m = e::bot::ActiveModel {
            id: Set(BotId::new().0),
            tenant_id: Set(tenant.0),
            name: Set(new.name),
            slug: Set(new.slug),
            system_prompt: Set(new.system_prompt),
            provider_id: Set(new.provider_id.0),
            model: Set(new.model),
            fallback_provider_id: Set(new.fallback_provider_id.map(|p| p.0)),
            temperature: Set(new.temperature),
            max_tokens: Set(new.max_tokens),
            context_tokens: Set(new.context_tokens),
            is_public: Set(new.is_public),
            dataset_ids: Set(convert::ids_json(&new.dataset_ids)),
            status: Set(BotStatus::Active.as_str().into()),
            created_at: Set(t),
            updated_at: Set(t),
        }
        .insert(db)
        .await
        .map_err(|e| write_err(e, "bot"))?;
        convert::bot(m)
    }

    async fn update_bot_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        id: BotId,
        patch: BotPatch,
    ) -> StoreResult<Bot> {
        let mut a = Self::find_bot(db, tenant, id).await?.into_active_model();
        if let Some(p) = patch.provider_id {
            if !Self::tenant_owns_provider(db, tenant, p).await? {
                return Err(StoreError::NotFound("provider"));
            }
            a.provider_id = Set(p.0);
        }
        if let Some(f) = patch.fallback_provider_id {
            if let Some(p) = f
                && !Self::tenant_owns_provider(db, tenant, p).await?
            {
                return Err(StoreError::NotFound("fallback provider"));
            }
            a.fallback_provider_id = Set(f.map(|p| p.0));
        }
        if let Some(d) = patch.dataset_ids {
            Self::check_datasets(db, tenant, &d).await?;
            a.dataset_ids = Set(convert::ids_json(&d));
        }
        if let Some(v) = patch.name {
            a.name = Set(v);
        }
        if let Some(v) = patch.slug {
            a.slug = Set(v);
        }
        if let Some(v) = patch.system_prompt {
            a.system_prompt = Set(v);
        }
        if let Some(v) = patch.model {
            a.model = Set(v);
        }
        if let Some(v) = patch.temperature {
            a.temperature = Set(v);
        }
        if let Some(v) = patch.max_tokens {
            a.max_tokens = Set(v);
        }
        if let Some(v) = patch.context_tokens {
            a.context_tokens = Set(v);
        }
        if let Some(v) = patch.is_public {
            a.is_public = Set(v);
        }
        if let Some(v) = patch.status {
            a.status = Set(v.as_str().into());
        }
        a.updated_at = Set(now());
        // Publishing, or renaming a public bot: the slug must be free.
        if *a.is_public.as_ref()
            && (a.is_public.is_set() || a.slug.is_set())
            && Self::public_slug_taken(db, tenant, a.slug.as_ref(), Some(id.0)).await?
        {
            return Err(StoreError::Conflict("public bot"));
        }
        let m = a.update(db).await.map_err(|e| write_err(e, "bot"))?;
        convert::bot(m)
    }

    async fn delete_bot_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        id: BotId,
    ) -> StoreResult<()> {
        let r = e::bot::Entity::delete_many()
            .filter(e::bot::Column::Id.eq(id.0))
            .filter(e::bot::Column::TenantId.eq(tenant.0))
            .exec(db)
            .await
            .map_err(|e| delete_err(e, "bot"))?;
        if r.rows_affected == 0 {
            return Err(StoreError::NotFound("bot"));
        }
        Ok(())
    }

    async fn create_api_key_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        new: NewApiKey,
    ) -> StoreResult<ApiKey> {
        let m = e::api_key::ActiveModel {
            id: Set(ApiKeyId::new().0),
            tenant_id: Set(tenant.0),
            name: Set(new.name),
            prefix: Set(new.prefix),
            secret_hash: Set(new.secret_hash.to_vec()),
            permissions: Set(convert::permissions_json(&new.permissions)),
            bot_ids: Set(convert::ids_json(&new.bot_ids)),
            rate_limit_rpm: Set(new.rate_limit_rpm),
            expires_at: Set(new.expires_at),
            last_used_at: Set(None),
            revoked_at: Set(None),
            created_at: Set(now()),
        };
        convert::api_key(m.insert(db).await.map_err(|e| write_err(e, "api key"))?)
    }

    async fn revoke_api_key_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        id: ApiKeyId,
    ) -> StoreResult<ApiKey> {
        e::api_key::Entity::update_many()
            .col_expr(e::api_key::Column::RevokedAt, Expr::value(now()))
            .filter(e::api_key::Column::Id.eq(id.0))
            .filter(e::api_key::Column::TenantId.eq(tenant.0))
            .filter(e::api_key::Column::RevokedAt.is_null())
            .exec(db)
            .await
            .map_err(db_err)?;
        convert::api_key(found(
            of_tenant::<e::api_key::Entity>(tenant)
                .filter(e::api_key::Column::Id.eq(id.0))
                .one(db)
                .await
                .map_err(db_err)?,
            "api key",
        )?)
    }

    async fn delete_conversation_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        id: ConversationId,
    ) -> StoreResult<()> {
        let r = e::conversation::Entity::delete_many()
            .filter(e::conversation::Column::Id.eq(id.0))
            .filter(e::conversation::Column::TenantId.eq(tenant.0))
            .exec(db)
            .await
            .map_err(db_err)?;
        if r.rows_affected == 0 {
            return Err(StoreError::NotFound("conversation"));
        }
        Ok(())
    }

    async fn create_scope_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        new: NewScope,
    ) -> StoreResult<Scope> {
        Self::find_bot(db, tenant, new.bot_id).await?;
        let m = e::scope::ActiveModel {
            id: Set(ScopeId::new().0),
            tenant_id: Set(tenant.0),
            bot_id: Set(new.bot_id.0),
            kind: Set(new.kind),
            config: Set(new.config),
            created_at: Set(now()),
        }
        .insert(db)
        .await
        .map_err(|e| write_err(e, "bot"))?;
        convert::scope(m)
    }

    async fn delete_scope_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        id: ScopeId,
    ) -> StoreResult<()> {
        let r = e::scope::Entity::delete_many()
            .filter(e::scope::Column::Id.eq(id.0))
            .filter(e::scope::Column::TenantId.eq(tenant.0))
            .exec(db)
            .await
            .map_err(db_err)?;
        if r.rows_affected == 0 {
            return Err(StoreError::NotFound("scope"));
        }
        Ok(())
    }
}

#[async_trait]
impl StoreBase for SeaOrmStore {
    async fn ping(&self) -> StoreResult<()> {
        self.db
            .ping()
            .await
            .map_err(|e| StoreError::unavailable_from("the database does not answer a ping", e))
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        let stats = |pool: &'static str, c: &DatabaseConnection| {
            let (size, idle, max) = match self.backend {
                DbBackend::Postgres => {
                    let p = c.get_postgres_connection_pool();
                    (p.size(), p.num_idle(), p.options().get_max_connections())
                }
                _ => {
                    let p = c.get_sqlite_connection_pool();
                    (p.size(), p.num_idle(), p.options().get_max_connections())
                }
            };
            let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
            PoolStats {
                pool,
                in_use: size - idle,
                idle,
                max,
            }
        };
        let mut out = vec![stats("main", &self.db)];
        // On a SQLite file, writes have a pool of their own; elsewhere `wdb`
        // is a clone of `db` (the same pool, so the same options in memory).
        if self.backend == DbBackend::Sqlite
            && !std::ptr::eq(
                self.db.get_sqlite_connection_pool().options(),
                self.wdb.get_sqlite_connection_pool().options(),
            )
        {
            out.push(stats("writer", &self.wdb));
        }
        // On PostgreSQL the turn writer has a pool of its own.
        if let Some(w) = self.writer.pool() {
            out.push(stats("writer", w));
        }
        out
    }

    async fn flush(&self) -> StoreResult<()> {
        SeaOrmStore::flush(self).await
    }
}

#[async_trait]
impl TenantStore for SeaOrmStore {
    async fn get_tenant(&self, id: TenantId) -> StoreResult<Tenant> {
        convert::tenant(
            self.tenant_rows::<e::tenant::Entity>(id)
                .get("tenant")
                .await?,
        )
    }

    async fn get_tenant_by_slug(&self, slug: &str) -> StoreResult<Tenant> {
        // Cross-tenant by nature: operator, and public bots addressed as tenant/bot.
        let db = self.scoped(Tenancy::All).await?;
        let out: StoreResult<Tenant> = async {
            let m = e::tenant::Entity::find()
                .filter(e::tenant::Column::Slug.eq(slug))
                .one(&db)
                .await
                .map_err(db_err)?;
            convert::tenant(found(m, "tenant")?)
        }
        .await;
        scope::finish(db, out).await
    }

    async fn list_tenants(&self, page: PageRequest) -> StoreResult<Page<Tenant>> {
        // Cross-tenant by nature: operator.
        let db = self.scoped(Tenancy::All).await?;
        let out: StoreResult<Page<Tenant>> = async {
            paginate(
                &db,
                e::tenant::Entity::find(),
                e::tenant::Column::Id,
                &page,
                Order::Asc,
                |m| m.id,
                convert::tenant,
            )
            .await
        }
        .await;
        scope::finish(db, out).await
    }

    async fn list_catalog(&self) -> StoreResult<Vec<CatalogEntry>> {
        e::catalog::Entity::find()
            .order_by_asc(e::catalog::Column::Key)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(convert::catalog)
            .collect()
    }

    async fn get_catalog_entry(&self, key: &str) -> StoreResult<CatalogEntry> {
        let m = e::catalog::Entity::find_by_id(key.to_string())
            .one(&self.db)
            .await
            .map_err(db_err)?;
        convert::catalog(found(m, "catalog entry")?)
    }

    async fn get_provider_config(
        &self,
        tenant: TenantId,
        id: ProviderConfigId,
    ) -> StoreResult<ProviderConfig> {
        convert::provider_config(
            self.tenant_rows::<e::provider_config::Entity>(tenant)
                .by_id(id.0)
                .get("provider")
                .await?,
        )
    }

    async fn list_provider_configs(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> StoreResult<Page<ProviderConfig>> {
        self.tenant_rows::<e::provider_config::Entity>(tenant)
            .page_by_id(&page, Order::Asc, convert::provider_config)
            .await
    }

    async fn get_bot(&self, tenant: TenantId, id: BotId) -> StoreResult<Bot> {
        convert::bot(
            self.tenant_rows::<e::bot::Entity>(tenant)
                .by_id(id.0)
                .get("bot")
                .await?,
        )
    }

    async fn get_bot_by_slug(&self, tenant: TenantId, slug: &str) -> StoreResult<Bot> {
        convert::bot(
            self.tenant_rows::<e::bot::Entity>(tenant)
                .filter(e::bot::Column::Slug.eq(slug))
                .get("bot")
                .await?,
        )
    }

    async fn find_public_bot(&self, id_or_slug: &str) -> StoreResult<Bot> {
        self.find_public_bot_in(id_or_slug).await
    }

    async fn list_bots(&self, tenant: TenantId, page: PageRequest) -> StoreResult<Page<Bot>> {
        self.tenant_rows::<e::bot::Entity>(tenant)
            .page_by_id(&page, Order::Asc, convert::bot)
            .await
    }

    async fn find_api_key_by_prefix(&self, prefix: &str) -> StoreResult<Option<ApiKey>> {
        // Cross-tenant by nature: the tenant is not known before the key is.
        let db = self.scoped(Tenancy::All).await?;
        let out: StoreResult<Option<ApiKey>> = async {
            e::api_key::Entity::find()
                .filter(e::api_key::Column::Prefix.eq(prefix))
                .one(&db)
                .await
                .map_err(db_err)?
                .map(convert::api_key)
                .transpose()
        }
        .await;
        scope::finish(db, out).await
    }

    async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> StoreResult<ApiKey> {
        convert::api_key(
            self.tenant_rows::<e::api_key::Entity>(tenant)
                .by_id(id.0)
                .get("api key")
                .await?,
        )
    }

    async fn list_api_keys(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> StoreResult<Page<ApiKey>> {
        self.tenant_rows::<e::api_key::Entity>(tenant)
            .page_by_id(&page, Order::Asc, convert::api_key)
            .await
    }

    async fn touch_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let db = self.scoped_write(Tenancy::One(tenant)).await?;
        let out: StoreResult<()> = async {
            let r = e::api_key::Entity::update_many()
                .col_expr(e::api_key::Column::LastUsedAt, Expr::value(at))
                .filter(e::api_key::Column::Id.eq(id.0))
                .filter(e::api_key::Column::TenantId.eq(tenant.0))
                .exec(&db)
                .await
                .map_err(db_err)?;
            if r.rows_affected == 0 {
                return Err(StoreError::NotFound("api key"));
            }
            Ok(())
        }
        .await;
        scope::finish(db, out).await
    }

    async fn get_scope(&self, tenant: TenantId, id: ScopeId) -> StoreResult<Scope> {
        convert::scope(
            self.tenant_rows::<e::scope::Entity>(tenant)
                .by_id(id.0)
                .get("scope")
                .await?,
        )
    }

    async fn list_scopes(&self, tenant: TenantId, bot: BotId) -> StoreResult<Vec<Scope>> {
        self.tenant_rows::<e::scope::Entity>(tenant)
            .filter(e::scope::Column::BotId.eq(bot.0))
            .query(|q| q.order_by_asc(e::scope::Column::Id))
            .all()
            .await?
            .into_iter()
            .map(convert::scope)
            .collect()
    }

    async fn get_widget(&self, tenant: TenantId, bot: BotId) -> StoreResult<Option<WidgetRecord>> {
        self.widget_get(tenant, bot).await
    }

    async fn put_widget(
        &self,
        tenant: TenantId,
        bot: BotId,
        update: WidgetUpdate,
        audit: AuditRecord,
    ) -> StoreResult<WidgetRecord> {
        self.widget_put(tenant, bot, update, audit).await
    }
}

#[async_trait]
impl ChatStore for SeaOrmStore {
    async fn create_conversation(
        &self,
        tenant: TenantId,
        new: NewConversation,
    ) -> StoreResult<Conversation> {
        let txn = self.write_txn(Tenancy::One(tenant)).await?;
        Self::find_bot(&txn, tenant, new.bot_id).await?;
        let t = now();
        let m = e::conversation::ActiveModel {
            id: Set(ConversationId::new().0),
            tenant_id: Set(tenant.0),
            bot_id: Set(new.bot_id.0),
            end_user_id: Set(new.end_user_id),
            title: Set(new.title),
            channel: Set(new.channel.as_str().into()),
            created_at: Set(t),
            updated_at: Set(t),
        }
        .insert(&txn)
        .await
        .map_err(|e| write_err(e, "bot"))?;
        txn.commit().await.map_err(db_err)?;
        convert::conversation(m)
    }

    async fn get_conversation(
        &self,
        tenant: TenantId,
        id: ConversationId,
    ) -> StoreResult<Conversation> {
        convert::conversation(
            self.tenant_rows::<e::conversation::Entity>(tenant)
                .by_id(id.0)
                .get("conversation")
                .await?,
        )
    }

    async fn list_conversations(
        &self,
        tenant: TenantId,
        filter: ConversationFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Conversation>> {
        use e::conversation::Column as C;
        let mut q = self.tenant_rows::<e::conversation::Entity>(tenant);
        if let Some(b) = filter.bot_id {
            q = q.filter(C::BotId.eq(b.0));
        }
        if let Some(u) = filter.end_user_id {
            q = q.filter(C::EndUserId.eq(u));
        }
        if let Some(s) = filter.since {
            q = q.filter(C::CreatedAt.gte(s));
        }
        if let Some(u) = filter.until {
            q = q.filter(C::CreatedAt.lt(u));
        }
        q.page_by_id(&page, Order::Desc, convert::conversation)
            .await
    }

    async fn append_message(&self, tenant: TenantId, new: NewMessage) -> StoreResult<Message> {
        let txn = self.write_txn(Tenancy::One(tenant)).await?;
        let conv = of_tenant::<e::conversation::Entity>(tenant)
            .filter(e::conversation::Column::Id.eq(new.conversation_id.0))
            .one(&txn)
            .await
            .map_err(db_err)?;
        let conv = found(conv, "conversation")?;
        let t = now();
        let m = e::message::ActiveModel {
            id: Set(MessageId::new().0),
            tenant_id: Set(tenant.0),
            conversation_id: Set(conv.id),
            bot_id: Set(conv.bot_id),
            role: Set(new.role.as_str().into()),
            content: Set(new.content),
            prompt_tokens: Set(None),
            completion_tokens: Set(None),
            total_tokens: Set(None),
            tokens_estimated: Set(false),
            response_time_ms: Set(None),
            time_to_first_token_ms: Set(None),
            provider: Set(new.provider),
            model: Set(new.model),
            finish_reason: Set(None),
            status: Set(new.status.as_str().into()),
            error: Set(None),
            source_chunk_ids: Set(serde_json::json!([])),
            api_key_id: Set(new.api_key_id.map(|k| k.0)),
            created_at: Set(t),
            instance_id: Set(None),
            tool_calls: Set(None),
            tool_call_id: Set(new.tool_call_id),
            cost_micros: Set(None),
            cached_tokens: Set(None),
            priced: Set(None),
            end_user_id: Set((new.role == Role::Assistant)
                .then(|| conv.end_user_id.clone())
                .flatten()),
        }
        .insert(&txn)
        .await
        .map_err(|e| write_err(e, "conversation"))?;
        e::conversation::Entity::update_many()
            .col_expr(e::conversation::Column::UpdatedAt, Expr::value(t))
            .filter(e::conversation::Column::Id.eq(conv.id))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        self.add_usage(&txn, &m, UsageDelta::of(&m)).await?;
        txn.commit().await.map_err(db_err)?;
        convert::message(m)
    }

    async fn begin_turn(
        &self,
        tenant: TenantId,
        turn: NewTurn,
    ) -> StoreResult<(Conversation, Message, Message)> {
        let conversation = match &turn.conversation {
            TurnConversation::New(_) => ConversationId::new(),
            TurnConversation::Existing(id) => *id,
        };
        // Ids are taken here, in order: the caller's messages sort before
        // the answer.
        let inputs = (0..turn.inputs().len()).map(|_| MessageId::new()).collect();
        let assistant = MessageId::new();
        let op = writer::Op::Begin {
            tenant,
            turn,
            conversation,
            inputs,
            assistant,
            at: now(),
        };
        match self.writer.submit(op).await? {
            writer::Output::Turn(t) => Ok(*t),
            _ => Err(StoreError::internal("the writer answered out of turn")),
        }
    }

    async fn finish_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        done: MessageCompletion,
    ) -> StoreResult<Message> {
        // The outcome and its usage are written together, in the writer's
        // batch (see `writer`): either both are stored or neither.
        match self
            .writer
            .submit(writer::Op::Finish { tenant, id, done })
            .await?
        {
            writer::Output::Message(m) => Ok(*m),
            _ => Err(StoreError::internal("the writer answered out of turn")),
        }
    }

    fn record_partial(&self, tenant: TenantId, id: MessageId, content: String) {
        self.writer.submit_detached(writer::Op::Progress {
            tenant,
            id,
            content,
        });
    }

    async fn orphaned_turns(&self, limit: u64) -> StoreResult<Vec<OrphanedTurn>> {
        self.find_orphaned_turns(limit).await
    }

    async fn get_message(&self, tenant: TenantId, id: MessageId) -> StoreResult<Message> {
        convert::message(
            self.tenant_rows::<e::message::Entity>(tenant)
                .by_id(id.0)
                .get("message")
                .await?,
        )
    }

    async fn recent_messages(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        limit: u64,
    ) -> StoreResult<Vec<Message>> {
        let mut rows = self
            .tenant_rows::<e::message::Entity>(tenant)
            .filter(e::message::Column::ConversationId.eq(conversation.0))
            .query(|q| q.order_by_desc(e::message::Column::Id).limit(limit))
            .all()
            .await?;
        rows.reverse();
        rows.into_iter().map(convert::message).collect()
    }

    async fn list_messages(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        page: PageRequest,
    ) -> StoreResult<Page<Message>> {
        self.tenant_rows::<e::message::Entity>(tenant)
            .filter(e::message::Column::ConversationId.eq(conversation.0))
            .page_by_id(&page, Order::Asc, convert::message)
            .await
    }
}

#[async_trait]
impl RagStore for SeaOrmStore {
    async fn create_dataset(&self, tenant: TenantId, new: NewDataset) -> StoreResult<Dataset> {
        let txn = self.write_txn(Tenancy::One(tenant)).await?;
        if !Self::tenant_owns_provider(&txn, tenant, new.provider_id).await? {
            return Err(StoreError::NotFound("provider"));
        }
        let m = e::dataset::ActiveModel {
            id: Set(DatasetId::new().0),
            tenant_id: Set(tenant.0),
            name: Set(new.name),
            provider_id: Set(new.provider_id.0),
            embedding_model: Set(new.embedding_model),
            embedding_dim: Set(new.embedding_dim),
            created_at: Set(now()),
        }
        .insert(&txn)
        .await
        .map_err(|e| write_err(e, "provider"))?;
        txn.commit().await.map_err(db_err)?;
        convert::dataset(m)
    }

    async fn get_dataset(&self, tenant: TenantId, id: DatasetId) -> StoreResult<Dataset> {
        convert::dataset(
            self.tenant_rows::<e::dataset::Entity>(tenant)
                .by_id(id.0)
                .get("dataset")
                .await?,
        )
    }

    async fn list_datasets(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> StoreResult<Page<Dataset>> {
        self.tenant_rows::<e::dataset::Entity>(tenant)
            .page_by_id(&page, Order::Asc, convert::dataset)
            .await
    }

    async fn delete_dataset(&self, tenant: TenantId, id: DatasetId) -> StoreResult<()> {
        let txn = self.write_txn(Tenancy::One(tenant)).await?;
        let r = e::dataset::Entity::delete_many()
            .filter(e::dataset::Column::Id.eq(id.0))
            .filter(e::dataset::Column::TenantId.eq(tenant.0))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if r.rows_affected == 0 {
            return Err(StoreError::NotFound("dataset"));
        }
        // Unlink it from the tenant's bots (a JSON list, not a foreign key).
        let bots = of_tenant::<e::bot::Entity>(tenant)
            .all(&txn)
            .await
            .map_err(db_err)?;
        for b in bots {
            let bot = convert::bot(b.clone())?;
            if bot.dataset_ids.contains(&id) {
                let kept: Vec<DatasetId> =
                    bot.dataset_ids.into_iter().filter(|d| *d != id).collect();
                let mut a = b.into_active_model();
                a.dataset_ids = Set(convert::ids_json(&kept));
                a.update(&txn).await.map_err(db_err)?;
            }
        }
        txn.commit().await.map_err(db_err)
    }

    async fn create_document(&self, tenant: TenantId, new: NewDocument) -> StoreResult<Document> {
        // A replacement of nothing: the same checks and insert.
        self.replace_document_in(tenant, new, &[]).await
    }

    async fn get_document(&self, tenant: TenantId, id: DocumentId) -> StoreResult<Document> {
        convert::document(
            self.tenant_rows::<e::document::Entity>(tenant)
                .by_id(id.0)
                .get("document")
                .await?,
        )
    }

    async fn list_documents(
        &self,
        tenant: TenantId,
        dataset: DatasetId,
        page: PageRequest,
    ) -> StoreResult<Page<Document>> {
        self.tenant_rows::<e::document::Entity>(tenant)
            .filter(e::document::Column::DatasetId.eq(dataset.0))
            .page_by_id(&page, Order::Asc, convert::document)
            .await
    }

    async fn documents_in_status(
        &self,
        status: DocumentStatus,
        limit: u64,
    ) -> StoreResult<Vec<Document>> {
        // Cross-tenant by nature: the indexing queue of every tenant.
        let db = self.scoped(Tenancy::All).await?;
        let out: StoreResult<Vec<Document>> = async {
            e::document::Entity::find()
                .filter(e::document::Column::Status.eq(status.as_str()))
                .order_by_asc(e::document::Column::Id)
                .limit(limit)
                .all(&db)
                .await
                .map_err(db_err)?
                .into_iter()
                .map(convert::document)
                .collect()
        }
        .await;
        scope::finish(db, out).await
    }

    async fn set_document_status(
        &self,
        tenant: TenantId,
        id: DocumentId,
        status: DocumentStatus,
        error: Option<String>,
    ) -> StoreResult<()> {
        let db = self.scoped_write(Tenancy::One(tenant)).await?;
        let out: StoreResult<()> = async {
            let r = e::document::Entity::update_many()
                .col_expr(e::document::Column::Status, Expr::value(status.as_str()))
                .col_expr(e::document::Column::Error, Expr::value(error))
                .col_expr(e::document::Column::UpdatedAt, Expr::value(now()))
                .filter(e::document::Column::Id.eq(id.0))
                .filter(e::document::Column::TenantId.eq(tenant.0))
                .exec(&db)
                .await
                .map_err(db_err)?;
            if r.rows_affected == 0 {
                return Err(StoreError::NotFound("document"));
            }
            Ok(())
        }
        .await;
        scope::finish(db, out).await
    }

    async fn delete_document(&self, tenant: TenantId, id: DocumentId) -> StoreResult<()> {
        let db = self.scoped_write(Tenancy::One(tenant)).await?;
        let out: StoreResult<()> = async {
            let r = e::document::Entity::delete_many()
                .filter(e::document::Column::Id.eq(id.0))
                .filter(e::document::Column::TenantId.eq(tenant.0))
                .exec(&db)
                .await
                .map_err(db_err)?;
            if r.rows_affected == 0 {
                return Err(StoreError::NotFound("document"));
            }
            Ok(())
        }
        .await;
        scope::finish(db, out).await
    }

    async fn replace_document(
        &self,
        tenant: TenantId,
        new: NewDocument,
        replaced: &[DocumentId],
    ) -> StoreResult<Document> {
        self.replace_document_in(tenant, new, replaced).await
    }

    async fn replace_chunks(
        &self,
        tenant: TenantId,
        document: DocumentId,
        chunks: Vec<NewChunk>,
    ) -> StoreResult<()> {
        let txn = self.write_txn(Tenancy::One(tenant)).await?;
        let doc = of_tenant::<e::document::Entity>(tenant)
            .filter(e::document::Column::Id.eq(document.0))
            .one(&txn)
            .await
            .map_err(db_err)?;
        let doc = found(doc, "document")?;
        e::chunk::Entity::delete_many()
            .filter(e::chunk::Column::DocumentId.eq(doc.id))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if self.pgvector_enabled() {
            search::insert_chunks_with_vectors(&txn, tenant, doc.dataset_id, doc.id, chunks)
                .await?;
            return Self::finish_replace(txn, doc.id).await;
        }
        // Bounded batches keep each statement under the backends' bind
        // parameter limits (SQLite: 32766, PostgreSQL: 65535).
        let rows: Vec<e::chunk::ActiveModel> = chunks
            .into_iter()
            .map(|c| e::chunk::ActiveModel {
                id: Set(ChunkId::new().0),
                tenant_id: Set(tenant.0),
                dataset_id: Set(doc.dataset_id),
                document_id: Set(doc.id),
                ordinal: Set(c.ordinal),
                text: Set(c.text),
                token_count: Set(c.token_count),
                embedding: Set(c.embedding.as_deref().map(convert::embedding_bytes)),
            })
            .collect();
        for batch in rows.chunks(1000) {
            e::chunk::Entity::insert_many(batch.to_vec())
                .exec_without_returning(&txn)
                .await
                .map_err(|e| write_err(e, "chunk"))?;
        }
        Self::finish_replace(txn, doc.id).await
    }

    async fn list_chunks(&self, tenant: TenantId, document: DocumentId) -> StoreResult<Vec<Chunk>> {
        self.tenant_rows::<e::chunk::Entity>(tenant)
            .filter(e::chunk::Column::DocumentId.eq(document.0))
            .query(|q| q.order_by_asc(e::chunk::Column::Ordinal))
            .all()
            .await?
            .into_iter()
            .map(convert::chunk)
            .collect()
    }

    async fn count_chunks(&self, tenant: TenantId, document: DocumentId) -> StoreResult<u64> {
        self.tenant_rows::<e::chunk::Entity>(tenant)
            .filter(e::chunk::Column::DocumentId.eq(document.0))
            .count()
            .await
    }

    async fn search_chunks_by_vector(
        &self,
        tenant: TenantId,
        search: ChunkSearch<'_>,
        vector: &[f32],
    ) -> StoreResult<Vec<ScoredChunk>> {
        self.vector_search(tenant, search, vector).await
    }

    async fn search_chunks_by_text(
        &self,
        tenant: TenantId,
        search: ChunkSearch<'_>,
        query: &str,
    ) -> StoreResult<Vec<ScoredChunk>> {
        self.text_search(tenant, search, query).await
    }

    async fn chunk_hits(&self, tenant: TenantId, ids: &[ChunkId]) -> StoreResult<Vec<ChunkHit>> {
        self.hits(tenant, ids).await
    }

    fn vector_search_kind(&self) -> &'static str {
        if self.pgvector_enabled() {
            "pgvector-hnsw"
        } else {
            "scan"
        }
    }
}

#[async_trait]
impl AuditStore for SeaOrmStore {
    async fn append_audit_batch(&self, records: Vec<AuditRecord>) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        // With the chat turns' writes: one transaction for both.
        self.writer
            .submit(writer::Op::Audit(records))
            .await
            .map(|_| ())
    }

    async fn list_audit(
        &self,
        tenant: TenantId,
        filter: AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditRecord>> {
        use e::audit_log::Column as C;
        let mut q = self.tenant_rows::<e::audit_log::Entity>(tenant);
        if let Some(a) = filter.action {
            q = q.filter(C::Action.eq(a));
        }
        if let Some(k) = filter.actor_kind {
            q = q.filter(C::ActorKind.eq(k.as_str()));
        }
        if let Some(i) = filter.actor_id {
            q = q.filter(C::ActorId.eq(i));
        }
        if let Some(s) = filter.since {
            q = q.filter(C::CreatedAt.gte(s));
        }
        if let Some(u) = filter.until {
            q = q.filter(C::CreatedAt.lt(u));
        }
        q.page_by_id(&page, Order::Desc, convert::audit).await
    }

    async fn apply(&self, change: Change, mut audit: AuditRecord) -> StoreResult<Changed> {
        // A tenant's change sees that tenant's rows; creating a tenant is the
        // operator's, and there is no tenant yet.
        let txn = self
            .write_txn(change.tenant().map_or(Tenancy::All, Tenancy::One))
            .await?;
        audit.tenant_id = change.tenant();
        let (changed, resource) = match change {
            Change::CreateTenant(new, key) => {
                let t = Self::create_tenant_in(&txn, new).await?;
                let k = match key {
                    Some(key) => Some(Self::create_api_key_in(&txn, t.id, key).await?),
                    None => None,
                };
                audit.tenant_id = Some(t.id);
                let id = t.id.to_string();
                (Changed::TenantCreated(t, k), ("tenant", id))
            }
            Change::UpdateTenant(id, patch) => (
                Changed::Tenant(Self::update_tenant_in(&txn, id, patch).await?),
                ("tenant", id.to_string()),
            ),
            Change::CreateProviderConfig(t, new) => {
                let p = Self::create_provider_config_in(&txn, t, new).await?;
                let id = p.id.to_string();
                (Changed::ProviderConfig(p), ("provider", id))
            }
            Change::UpdateProviderConfig(t, id, patch) => (
                Changed::ProviderConfig(Self::update_provider_config_in(&txn, t, id, patch).await?),
                ("provider", id.to_string()),
            ),
            Change::DeleteProviderConfig(t, id) => {
                Self::delete_provider_config_in(&txn, t, id).await?;
                (Changed::Deleted, ("provider", id.to_string()))
            }
            Change::CreateBot(t, new) => {
                let b = Self::create_bot_in(&txn, t, new).await?;
                let id = b.id.to_string();
                (Changed::Bot(b), ("bot", id))
            }
            Change::UpdateBot(t, id, patch) => (
                Changed::Bot(Self::update_bot_in(&txn, t, id, patch).await?),
                ("bot", id.to_string()),
            ),
            Change::DeleteBot(t, id) => {
                Self::delete_bot_in(&txn, t, id).await?;
                (Changed::Deleted, ("bot", id.to_string()))
            }
            Change::CreateApiKey(t, new) => {
                let k = Self::create_api_key_in(&txn, t, new).await?;
                let id = k.id.to_string();
                (Changed::ApiKey(k), ("api_key", id))
            }
            Change::RevokeApiKey(t, id) => (
                Changed::ApiKey(Self::revoke_api_key_in(&txn, t, id).await?),
                ("api_key", id.to_string()),
            ),
            Change::CreateScope(t, new) => {
                let sc = Self::create_scope_in(&txn, t, new).await?;
                let id = sc.id.to_string();
                (Changed::Scope(sc), ("scope", id))
            }
            Change::DeleteScope(t, id) => {
                Self::delete_scope_in(&txn, t, id).await?;
                (Changed::Deleted, ("scope", id.to_string()))
            }
            Change::DeleteConversation(t, id) => {
                Self::delete_conversation_in(&txn, t, id).await?;
                (Changed::Deleted, ("conversation", id.to_string()))
            }
            Change::CreateBudget(t, new) => {
                let b = Self::create_budget_in(&txn, t, new).await?;
                let id = b.id.to_string();
                (Changed::Budget(b), ("budget", id))
            }
            Change::UpdateBudget(t, id, patch) => (
                Changed::Budget(Self::update_budget_in(&txn, t, id, patch).await?),
                ("budget", id.to_string()),
            ),
            Change::DeleteBudget(t, id) => {
                Self::delete_budget_in(&txn, t, id).await?;
                (Changed::Deleted, ("budget", id.to_string()))
            }
            Change::PutPrice(t, new) => {
                let p = Self::put_price_in(&txn, t, new).await?;
                let id = p.id.to_string();
                (Changed::Price(p), ("price", id))
            }
            Change::DeletePrice(t, id) => {
                Self::delete_price_in(&txn, t, id).await?;
                (Changed::Deleted, ("price", id.to_string()))
            }
        };
        audit.resource_type = Some(resource.0.into());
        audit.resource_id = Some(resource.1);
        e::audit_log::Entity::insert(audit_row(audit))
            .exec_without_returning(&txn)
            .await
            .map_err(|e| write_err(e, "audit record"))?;
        txn.commit().await.map_err(db_err)?;
        Ok(changed)
    }

    async fn usage(
        &self,
        tenant: TenantId,
        days: UsageDays,
        group_by: UsageGroup,
    ) -> StoreResult<Vec<UsageRow>> {
        if group_by == UsageGroup::EndUser {
            return self.usage_by_end_user(tenant, days).await;
        }
        use e::usage_daily::Column as U;
        use sea_orm::sea_query::{Alias, Func};
        // SUM of a BIGINT is NUMERIC on PostgreSQL: cast it back.
        let sum =
            |c: U| -> Expr { Func::cast_as(Func::sum(Expr::col(c)), Alias::new("BIGINT")).into() };
        let grp = match group_by {
            UsageGroup::Bot => U::BotId,
            UsageGroup::ApiKey => U::ApiKeyId,
            UsageGroup::Day => U::Day,
            UsageGroup::EndUser => unreachable!("read from usage_daily_end_users"),
        };
        // A range scan of the primary key (tenant_id, day, ...): a few rows
        // per bot, key and day, however many messages they count.
        let q = self
            .tenant_rows::<e::usage_daily::Entity>(tenant)
            .filter(U::Day.gte(days.start))
            .filter(U::Day.lt(days.end))
            .query(|q| {
                q.select_only()
                    .column_as(grp, "grp")
                    .expr_as(sum(U::Requests), "requests")
                    .expr_as(sum(U::PromptTokens), "prompt_tokens")
                    .expr_as(sum(U::CompletionTokens), "completion_tokens")
                    .expr_as(sum(U::TotalTokens), "total_tokens")
                    .expr_as(sum(U::CostMicros), "cost_micros")
                    .group_by(grp)
                    .order_by(grp, Order::Asc)
            });
        let rows: Vec<UsageRow> = match group_by {
            UsageGroup::Day => q
                .all_as::<UsageByDay>()
                .await?
                .into_iter()
                .map(|r| r.agg.row(Some(r.grp.format("%Y-%m-%d").to_string())))
                .collect(),
            _ => q
                .all_as::<UsageByUuid>()
                .await?
                .into_iter()
                // The nil UUID stands for "no API key" (public chat).
                .map(|r| r.agg.row((!r.grp.is_nil()).then(|| r.grp.to_string())))
                .collect(),
        };
        // Groups whose turns were all re-counted to nothing are left out.
        Ok(rows.into_iter().filter(|r| r.requests > 0).collect())
    }

    async fn put_feedback(&self, tenant: TenantId, new: NewFeedback) -> StoreResult<Feedback> {
        self.feedback_put(tenant, new).await
    }

    async fn feedback_for(
        &self,
        tenant: TenantId,
        messages: &[MessageId],
    ) -> StoreResult<Vec<Feedback>> {
        self.feedback_get(tenant, messages).await
    }

    async fn feedback_counts(
        &self,
        tenant: TenantId,
        days: UsageDays,
        group_by: UsageGroup,
    ) -> StoreResult<Vec<FeedbackRow>> {
        self.feedback_count(tenant, days, group_by).await
    }

    async fn list_budgets(&self, tenant: TenantId) -> StoreResult<Vec<Budget>> {
        self.list_budgets_of(tenant).await
    }

    async fn get_budget(&self, tenant: TenantId, id: BudgetId) -> StoreResult<Budget> {
        self.get_budget_of(tenant, id).await
    }

    async fn list_prices(&self, tenant: TenantId) -> StoreResult<Vec<PriceOverride>> {
        self.list_prices_of(tenant).await
    }

    async fn budget_spent(
        &self,
        tenant: TenantId,
        budget: &Budget,
        since: DateTime<Utc>,
    ) -> StoreResult<i64> {
        self.budget_spent_of(tenant, budget, since).await
    }
}

#[cfg(test)]
mod url_tests {
    use super::loopback_without_tls;

    #[test]
    fn loopback_postgres_urls_skip_tls_unless_told() {
        assert_eq!(
            loopback_without_tls("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
        );
        assert_eq!(
            loopback_without_tls("postgresql://u:p@localhost/db?application_name=x"),
            "postgresql://u:p@localhost/db?application_name=x&sslmode=disable"
        );
        assert_eq!(
            loopback_without_tls("postgres://[::1]:5432/db"),
            "postgres://[::1]:5432/db?sslmode=disable"
        );
        for kept in [
            "postgres://127.0.0.1/db?sslmode=require",
            "postgres://db.example.com/db",
            "postgres://u@10.0.0.5:5432/db",
            "sqlite://chatcore.db?mode=rwc",
        ] {
            assert_eq!(loopback_without_tls(kept), kept);
        }
    }
}
