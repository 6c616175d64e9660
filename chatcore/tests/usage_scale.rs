//! How fast `Store::usage` answers over a million messages, on SQLite (a
//! WAL file) and PostgreSQL, next to the GROUP BY over `messages` that it
//! replaced, whose answer it must equal. Ignored by default (building the
//! data takes a while); run with
//!
//! ```text
//! cargo test --release -p chatcore --test usage_scale -- --ignored --nocapture
//! ```
//!
//! The tenant measured holds 1,000,000 messages (half of them assistant
//! turns) over 31 UTC days and 10 bots; another tenant holds 200,000 more,
//! which the query must skip. The first messages are written through the
//! store (so the rollup is maintained by the real write path); SQL copies
//! them, and the `usage_daily` migration is then reverted and applied again,
//! which rebuilds the rollup from the messages with its backfill (timed:
//! it is what an upgrade does to an existing database). It prints the time
//! of each grouping (best of 3), before (GROUP BY over messages) and after
//! (the rollup), and again with every rollup group spread over all 64 write
//! slots (the most PostgreSQL can create).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatcore::domain::*;
use chatcore::store::*;
use chatcore::testkit::fixtures::{self, SystemWrites};
use chatcore::testkit::pg;
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, FromQueryResult,
    Statement,
};

const PER_TEMPLATE: u64 = 50_000;

async fn seed(s: &dyn Store, copies: u64) -> (TenantId, Vec<MessageId>) {
    let mut nt = fixtures::new_tenant("scale");
    nt.slug = format!("scale-{}", uuid::Uuid::now_v7().simple());
    let t = s.create_tenant(nt).await.unwrap();
    let mut np = fixtures::mock_provider();
    np.name = "m".into();
    np.default_model = None;
    let p = s.create_provider_config(t.id, np).await.unwrap();
    let (_, nk) = fixtures::new_key("k", vec![Permission::Chat]);
    let key = s.create_api_key(t.id, nk).await.unwrap();
    // Templates: per bot a user and an assistant message; SQL copies them.
    let mut templates = vec![];
    let bots = (copies * 2).div_ceil(PER_TEMPLATE * 2);
    for i in 0..bots {
        let b = s
            .create_bot(
                t.id,
                NewBot {
                    name: format!("b{i}"),
                    slug: format!("b{i}"),
                    system_prompt: String::new(),
                    provider_id: p.id,
                    model: None,
                    fallback_provider_id: None,
                    temperature: None,
                    max_tokens: None,
                    context_tokens: 4000,
                    is_public: false,
                    dataset_ids: vec![],
                },
            )
            .await
            .unwrap();
        let (_, user, assistant) = s
            .begin_turn(
                t.id,
                NewTurn {
                    conversation: TurnConversation::New(NewConversation {
                        bot_id: b.id,
                        end_user_id: None,
                        title: None,
                        channel: Channel::Api,
                    }),
                    user_content: "some text of a typical length for a chat turn".into(),
                    tool_results: Vec::new(),
                    api_key_id: Some(key.id),
                    provider: Some("mock".into()),
                    model: Some("echo".into()),
                },
            )
            .await
            .unwrap();
        s.finish_message(
            t.id,
            assistant.id,
            MessageCompletion {
                content: "an answer".into(),
                status: Some(MessageStatus::Complete),
                usage: Some(TokenUsage {
                    prompt_tokens: 120,
                    completion_tokens: 40,
                    total_tokens: 160,
                    estimated: false,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        templates.extend([user.id, assistant.id]);
    }
    (t.id, templates)
}

/// Assistant turns after copying: each template and its copies, half of
/// them assistant messages.
fn turns(templates: &[MessageId]) -> u64 {
    templates.len() as u64 / 2 * (PER_TEMPLATE + 1)
}

/// The usage query before the rollup: a GROUP BY over the tenant's
/// assistant messages in a time range. Groups come back as text.
fn group_by_messages(backend: DbBackend, group: UsageGroup) -> String {
    let pg = backend == DbBackend::Postgres;
    let grp = match (group, pg) {
        (UsageGroup::Bot, true) => "bot_id::text",
        (UsageGroup::Bot, false) => "lower(hex(bot_id))",
        (UsageGroup::ApiKey, true) => "api_key_id::text",
        (UsageGroup::ApiKey, false) => "lower(hex(api_key_id))",
        (UsageGroup::Day, true) => "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        (UsageGroup::Day, false) => "substr(created_at, 1, 10)",
        (UsageGroup::EndUser, _) => "end_user_id",
    };
    let (p1, p2, p3) = if pg {
        ("$1", "$2", "$3")
    } else {
        ("?", "?", "?")
    };
    format!(
        "SELECT {grp} AS grp, COUNT(id) AS requests, \
         COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, \
         COALESCE(SUM(completion_tokens), 0) AS completion_tokens, \
         COALESCE(SUM(total_tokens), 0) AS total_tokens \
         FROM messages WHERE tenant_id = {p1} AND created_at >= {p2} AND created_at < {p3} \
         AND role = 'assistant' GROUP BY 1 ORDER BY 1"
    )
}

#[derive(Debug, FromQueryResult)]
struct OldRow {
    grp: Option<String>,
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    total_tokens: i64,
}

type Totals = (Option<String>, u64, u64, u64, u64);

async fn measure(
    s: &dyn Store,
    raw: &DatabaseConnection,
    tenant: TenantId,
    expected: u64,
    label: &str,
    compare_with_messages: bool,
) {
    let days = UsageDays::last(32, now()).unwrap();
    let backend = raw.get_database_backend();
    for (g, name) in [
        (UsageGroup::Bot, "bot"),
        (UsageGroup::ApiKey, "key"),
        (UsageGroup::Day, "day"),
    ] {
        let mut after = Duration::MAX;
        let mut rows = vec![];
        for _ in 0..3 {
            let t0 = Instant::now();
            rows = s.usage(tenant, days, g).await.unwrap();
            after = after.min(t0.elapsed());
        }
        let requests: u64 = rows.iter().map(|r| r.requests).sum();
        assert_eq!(requests, expected, "{label} {name}: {rows:?}");
        if !compare_with_messages {
            println!(
                "{label}: usage group_by={name}: {} groups, rollup {:.2} ms",
                rows.len(),
                after.as_secs_f64() * 1000.0
            );
            continue;
        }
        let sql = group_by_messages(backend, g);
        let mut before = Duration::MAX;
        let mut old = vec![];
        for _ in 0..3 {
            let stmt = Statement::from_sql_and_values(
                backend,
                &sql,
                [
                    tenant.as_uuid().into(),
                    days.since().into(),
                    days.until().into(),
                ],
            );
            let t0 = Instant::now();
            old = OldRow::find_by_statement(stmt).all(raw).await.unwrap();
            before = before.min(t0.elapsed());
        }
        // Both as (group without dashes, sums), sorted: the same answer.
        let mut old: Vec<Totals> = old
            .into_iter()
            .map(|r| {
                (
                    r.grp,
                    r.requests as u64,
                    r.prompt_tokens as u64,
                    r.completion_tokens as u64,
                    r.total_tokens as u64,
                )
            })
            .collect();
        let mut new: Vec<Totals> = rows
            .iter()
            .map(|r| {
                (
                    r.group.as_ref().map(|g| {
                        if g.len() == 36 && backend == DbBackend::Sqlite {
                            g.replace('-', "")
                        } else {
                            g.clone()
                        }
                    }),
                    r.requests,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.total_tokens,
                )
            })
            .collect();
        old.sort();
        new.sort();
        assert_eq!(new, old, "{label} {name}: the rollup equals the messages");
        println!(
            "{label}: usage group_by={name}: {} groups, GROUP BY over messages {:.1} ms, rollup {:.2} ms",
            rows.len(),
            before.as_secs_f64() * 1000.0,
            after.as_secs_f64() * 1000.0
        );
    }
}

/// Reverts and reapplies the `usage_daily` migration: the rollup is
/// rebuilt from the messages by its backfill. Returns how long `up` took.
async fn rebuild_rollup(raw: &DatabaseConnection) -> Duration {
    // Every migration after consolidated_init: usage_daily is the second,
    // so it goes last (whatever later migrations are added).
    let after_init = Migrator::migrations().len() as u32 - 1;
    Migrator::down(raw, Some(after_init)).await.unwrap();
    let t0 = Instant::now();
    Migrator::up(raw, None).await.unwrap();
    t0.elapsed()
}

/// Spreads every rollup row over all 64 write slots with empty rows: the
/// most rows PostgreSQL's per-connection slots can ever create, and the
/// totals stay the same.
async fn fill_all_slots(raw: &DatabaseConnection, slot_series: &str) {
    raw.execute_unprepared(&format!(
        "INSERT INTO usage_daily (tenant_id, day, bot_id, api_key_id, slot, requests, \
         prompt_tokens, completion_tokens, total_tokens) \
         SELECT u.tenant_id, u.day, u.bot_id, u.api_key_id, n.x, 0, 0, 0, 0 \
         FROM usage_daily u, ({slot_series}) n WHERE u.slot = 0"
    ))
    .await
    .unwrap();
}

async fn analyze(raw: &DatabaseConnection) {
    for t in ["messages", "usage_daily"] {
        raw.execute_unprepared(&format!("ANALYZE {t}"))
            .await
            .unwrap();
    }
}

async fn run(s: &dyn Store, raw: &DatabaseConnection, label: &str, copy: impl AsyncCopy) {
    let (tenant, templates) = seed(s, 1_000_000 / 2).await;
    let (other, other_templates) = seed(s, 100_000).await;
    let t0 = Instant::now();
    for id in templates.iter().chain(&other_templates) {
        copy.copy(raw, *id).await;
    }
    println!(
        "{label}: copied {} messages in {:.1} s",
        (templates.len() + other_templates.len()) as u64 * PER_TEMPLATE,
        t0.elapsed().as_secs_f64()
    );
    let backfill = rebuild_rollup(raw).await;
    analyze(raw).await;
    println!(
        "{label}: migration backfill of usage_daily from 1.2M messages: {:.2} s",
        backfill.as_secs_f64()
    );
    measure(s, raw, tenant, turns(&templates), label, true).await;
    let other_days = UsageDays::last(32, now()).unwrap();
    assert_eq!(
        s.usage(other, other_days, UsageGroup::Bot)
            .await
            .unwrap()
            .iter()
            .map(|r| r.requests)
            .sum::<u64>(),
        turns(&other_templates)
    );
    fill_all_slots(raw, copy.slot_series()).await;
    analyze(raw).await;
    measure(
        s,
        raw,
        tenant,
        turns(&templates),
        &format!("{label} (64 slots per group)"),
        false,
    )
    .await;
}

/// How one backend copies a template message `PER_TEMPLATE` times.
trait AsyncCopy {
    fn copy(&self, raw: &DatabaseConnection, id: MessageId) -> impl Future<Output = ()>;
    /// A query of the numbers 1 to 63, as column `x`.
    fn slot_series(&self) -> &'static str;
}

struct SqliteCopy;

impl AsyncCopy for SqliteCopy {
    async fn copy(&self, raw: &DatabaseConnection, id: MessageId) {
        // Copies spread over 30 days (RFC 3339 text, like the store writes);
        // ids only need to be unique.
        raw.execute_unprepared(&format!(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {PER_TEMPLATE})
             INSERT INTO messages (id, tenant_id, conversation_id, bot_id, role, content, prompt_tokens,
                 completion_tokens, total_tokens, tokens_estimated, response_time_ms, time_to_first_token_ms,
                 provider, model, finish_reason, status, error, source_chunk_ids, api_key_id, created_at)
             SELECT randomblob(16), tenant_id, conversation_id, bot_id, role, content, prompt_tokens,
                 completion_tokens, total_tokens, tokens_estimated, response_time_ms, time_to_first_token_ms,
                 provider, model, finish_reason, status, error, source_chunk_ids, api_key_id,
                 strftime('%Y-%m-%dT%H:%M:%f', created_at, '-' || (x % 30) || ' days', '-' || (x % 86400) || ' seconds') || '+00:00'
             FROM messages, n WHERE messages.id = x'{}'",
            id.as_uuid().simple()
        ))
        .await
        .unwrap();
    }

    fn slot_series(&self) -> &'static str {
        "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 63) SELECT x FROM s"
    }
}

struct PgCopy;

impl AsyncCopy for PgCopy {
    async fn copy(&self, raw: &DatabaseConnection, id: MessageId) {
        raw.execute_unprepared(&format!(
            "INSERT INTO messages (id, tenant_id, conversation_id, bot_id, role, content, prompt_tokens,
                 completion_tokens, total_tokens, tokens_estimated, response_time_ms, time_to_first_token_ms,
                 provider, model, finish_reason, status, error, source_chunk_ids, api_key_id, created_at)
             SELECT gen_random_uuid(), tenant_id, conversation_id, bot_id, role, content, prompt_tokens,
                 completion_tokens, total_tokens, tokens_estimated, response_time_ms, time_to_first_token_ms,
                 provider, model, finish_reason, status, error, source_chunk_ids, api_key_id,
                 created_at - make_interval(days => x % 30, secs => x % 86400)
             FROM messages, generate_series(1, {PER_TEMPLATE}) x WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    }

    fn slot_series(&self) -> &'static str {
        "SELECT generate_series(1, 63)::smallint AS x"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds a million rows; run explicitly"]
async fn usage_at_a_million_messages_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("scale.db").display()
    );
    let store = SeaOrmStore::open(&url, StoreOptions::default())
        .await
        .unwrap();
    let s: Arc<dyn Store> = Arc::new(store.clone());
    let raw = Database::connect(&url).await.unwrap();
    run(&*s, &raw, "sqlite", SqliteCopy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds a million rows; run explicitly"]
async fn usage_at_a_million_messages_postgres() {
    let (store, schema) = pg::fresh_store().await;
    let s: Arc<dyn Store> = Arc::new(store.clone());
    let mut opts = ConnectOptions::new(pg::url());
    opts.set_schema_search_path(format!("{schema},public"))
        .max_connections(1)
        .sqlx_logging(false);
    let raw = Database::connect(opts).await.unwrap();
    run(&*s, &raw, "postgres", PgCopy).await;
    drop(s);
    let _ = raw.close().await;
    let _ = store.close().await;
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}

/// The write side: 64 tasks finish 4,000 pending turns of one bot and key
/// at once, the case where every turn adds to the same usage row. Prints
/// the turns finished per second and the latency of `finish_message`.
async fn finish_under_contention(s: Arc<dyn Store>, label: &str) {
    const TURNS: usize = 4_000;
    const TASKS: usize = 64;
    let (t, templates) = seed(&*s, 1).await;
    let first = s.get_message(t, templates[1]).await.unwrap();
    let c = first.conversation_id;
    let key = first.api_key_id;
    // Pending turns, written 16 at a time.
    let mut pending = vec![];
    let mut setup = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let s = s.clone();
        setup.spawn(async move {
            let mut ids = vec![];
            for _ in 0..TURNS / 16 {
                let (_, _, a) = s
                    .begin_turn(
                        t,
                        NewTurn {
                            conversation: TurnConversation::Existing(c),
                            user_content: "q".into(),
                            tool_results: Vec::new(),
                            api_key_id: key,
                            provider: None,
                            model: None,
                        },
                    )
                    .await
                    .unwrap();
                ids.push(a.id);
            }
            ids
        });
    }
    while let Some(ids) = setup.join_next().await {
        pending.extend(ids.unwrap());
    }
    let mut run = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    for ids in pending.chunks(TURNS / TASKS).map(<[MessageId]>::to_vec) {
        let s = s.clone();
        run.spawn(async move {
            let mut lat = vec![];
            for id in ids {
                let t1 = Instant::now();
                s.finish_message(
                    t,
                    id,
                    MessageCompletion {
                        content: "an answer".into(),
                        status: Some(MessageStatus::Complete),
                        usage: Some(TokenUsage {
                            prompt_tokens: 20,
                            completion_tokens: 12,
                            total_tokens: 32,
                            estimated: false,
                        }),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
                lat.push(t1.elapsed());
            }
            lat
        });
    }
    let mut lat = vec![];
    while let Some(l) = run.join_next().await {
        lat.extend(l.unwrap());
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort();
    let ms =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "{label}: {TASKS} tasks finishing {TURNS} turns of one bot and key: {:.0} turns/s, finish_message p50 {:.2} ms, p99 {:.2} ms",
        lat.len() as f64 / secs,
        ms(0.5),
        ms(0.99)
    );
    let days = UsageDays::last(1, now()).unwrap();
    let rows = s.usage(t, days, UsageGroup::ApiKey).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.requests).sum::<u64>(),
        TURNS as u64 + 1,
        "every turn counted once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a write benchmark; run explicitly"]
async fn finish_under_contention_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
    let store = SeaOrmStore::open(&url, StoreOptions::default())
        .await
        .unwrap();
    finish_under_contention(Arc::new(store.clone()), "sqlite").await;
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a write benchmark; run explicitly"]
async fn finish_under_contention_postgres() {
    // The server's pool size (16), not the tests' (4).
    let url = pg::url();
    let schema = pg::fresh_schema_name();
    let store = SeaOrmStore::open(
        &url,
        StoreOptions {
            schema: Some(schema.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    finish_under_contention(Arc::new(store.clone()), "postgres").await;
    store.close().await.unwrap();
    SeaOrmStore::drop_schema(&url, &schema).await.unwrap();
}
