//! How fast `Store::usage` aggregates a million messages, on SQLite (a
//! WAL file) and PostgreSQL. Ignored by default (building the data takes a
//! while); run with
//!
//! ```text
//! cargo test -p chatcore --test usage_scale -- --ignored --nocapture
//! ```
//!
//! The tenant measured holds 1,000,000 messages (half of them assistant
//! turns) over 30 days and 10 bots; another tenant holds 200,000 more, which
//! the query must skip. It prints the time of each grouping (best of 3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatcore::domain::*;
use chatcore::store::*;
use chatcore::testkit::pg;
use sea_orm::{ConnectionTrait, Database};

const PER_TEMPLATE: u64 = 50_000;

async fn seed(s: &dyn Store, copies: u64) -> (TenantId, Vec<MessageId>) {
    let t = s
        .create_tenant(NewTenant {
            name: "scale".into(),
            slug: format!("scale-{}", uuid::Uuid::now_v7().simple()),
            rate_limit_rpm: None,
            rate_limit_tpm: None,
            features: serde_json::json!({}),
        })
        .await
        .unwrap();
    let p = s
        .create_provider_config(
            t.id,
            NewProviderConfig {
                provider: "mock".into(),
                name: "m".into(),
                api_key: None,
                base_url: None,
                default_model: None,
                enabled: true,
            },
        )
        .await
        .unwrap();
    let g = chatcore::auth::generate_key();
    let key = s
        .create_api_key(
            t.id,
            NewApiKey {
                name: "k".into(),
                prefix: g.prefix,
                secret_hash: g.hash,
                permissions: vec![Permission::Chat],
                bot_ids: vec![],
                rate_limit_rpm: None,
                expires_at: None,
            },
        )
        .await
        .unwrap();
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
        let c = s
            .create_conversation(
                t.id,
                NewConversation {
                    bot_id: b.id,
                    end_user_id: None,
                    title: None,
                    channel: Channel::Api,
                },
            )
            .await
            .unwrap();
        for role in [Role::User, Role::Assistant] {
            let m = s
                .append_message(
                    t.id,
                    NewMessage {
                        conversation_id: c.id,
                        role,
                        content: "some text of a typical length for a chat turn".into(),
                        status: MessageStatus::Complete,
                        api_key_id: Some(key.id),
                        provider: Some("mock".into()),
                        model: Some("echo".into()),
                    },
                )
                .await
                .unwrap();
            if role == Role::Assistant {
                s.finish_message(
                    t.id,
                    m.id,
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
            }
            templates.push(m.id);
        }
    }
    (t.id, templates)
}

/// Assistant turns after copying: each template and its copies, half of
/// them assistant messages.
fn turns(templates: &[MessageId]) -> u64 {
    templates.len() as u64 / 2 * (PER_TEMPLATE + 1)
}

async fn measure(s: &dyn Store, tenant: TenantId, expected: u64, label: &str) {
    let until = now() + chrono::Duration::hours(1);
    let since = until - chrono::Duration::days(31);
    for (g, name) in [
        (UsageGroup::Bot, "bot"),
        (UsageGroup::ApiKey, "key"),
        (UsageGroup::Day, "day"),
    ] {
        let mut best = Duration::MAX;
        let mut rows = vec![];
        for _ in 0..3 {
            let t0 = Instant::now();
            rows = s.usage(tenant, since, until, g).await.unwrap();
            best = best.min(t0.elapsed());
        }
        let requests: u64 = rows.iter().map(|r| r.requests).sum();
        assert_eq!(requests, expected, "{label} {name}: {rows:?}");
        println!(
            "{label}: usage group_by={name}: {} groups, best of 3: {:.1} ms",
            rows.len(),
            best.as_secs_f64() * 1000.0
        );
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
    let (tenant, templates) = seed(&*s, 1_000_000 / 2).await;
    let (other, other_templates) = seed(&*s, 100_000).await;
    let raw = Database::connect(&url).await.unwrap();
    let t0 = Instant::now();
    for id in templates.iter().chain(&other_templates) {
        // Copies spread over 30 days; ids only need to be unique.
        raw.execute_unprepared(&format!(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {PER_TEMPLATE})
             INSERT INTO messages (id, tenant_id, conversation_id, bot_id, role, content, prompt_tokens,
                 completion_tokens, total_tokens, tokens_estimated, response_time_ms, time_to_first_token_ms,
                 provider, model, finish_reason, status, error, source_chunk_ids, api_key_id, created_at)
             SELECT randomblob(16), tenant_id, conversation_id, bot_id, role, content, prompt_tokens,
                 completion_tokens, total_tokens, tokens_estimated, response_time_ms, time_to_first_token_ms,
                 provider, model, finish_reason, status, error, source_chunk_ids, api_key_id,
                 strftime('%Y-%m-%d %H:%M:%f', created_at, '-' || (x % 30) || ' days', '-' || (x % 86400) || ' seconds') || '+00:00'
             FROM messages, n WHERE messages.id = x'{}'",
            id.as_uuid().simple()
        ))
        .await
        .unwrap();
    }
    raw.execute_unprepared("ANALYZE").await.unwrap();
    println!("sqlite: seeded in {:.1} s", t0.elapsed().as_secs_f64());
    measure(&*s, tenant, turns(&templates), "sqlite").await;
    assert_eq!(
        s.usage(
            other,
            now() - chrono::Duration::days(31),
            now() + chrono::Duration::hours(1),
            UsageGroup::Bot
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.requests)
        .sum::<u64>(),
        turns(&other_templates)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds a million rows; run explicitly"]
async fn usage_at_a_million_messages_postgres() {
    let (store, schema) = pg::fresh_store().await;
    let s: Arc<dyn Store> = Arc::new(store.clone());
    let (tenant, templates) = seed(&*s, 1_000_000 / 2).await;
    let (_, other_templates) = seed(&*s, 100_000).await;
    let raw = Database::connect(pg::url()).await.unwrap();
    let t0 = Instant::now();
    for id in templates.iter().chain(&other_templates) {
        raw.execute_unprepared(&format!(
            "INSERT INTO \"{schema}\".messages (id, tenant_id, conversation_id, bot_id, role, content, prompt_tokens,
                 completion_tokens, total_tokens, tokens_estimated, response_time_ms, time_to_first_token_ms,
                 provider, model, finish_reason, status, error, source_chunk_ids, api_key_id, created_at)
             SELECT gen_random_uuid(), tenant_id, conversation_id, bot_id, role, content, prompt_tokens,
                 completion_tokens, total_tokens, tokens_estimated, response_time_ms, time_to_first_token_ms,
                 provider, model, finish_reason, status, error, source_chunk_ids, api_key_id,
                 created_at - make_interval(days => x % 30, secs => x % 86400)
             FROM \"{schema}\".messages, generate_series(1, {PER_TEMPLATE}) x WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    }
    raw.execute_unprepared(&format!("ANALYZE \"{schema}\".messages"))
        .await
        .unwrap();
    println!("postgres: seeded in {:.1} s", t0.elapsed().as_secs_f64());
    measure(&*s, tenant, turns(&templates), "postgres").await;
    drop(s);
    let _ = store.close().await;
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}
