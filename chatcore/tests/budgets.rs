//! Budgets under concurrency, for real: SQLite with the in-process ledger,
//! PostgreSQL with the Redis ledger (`CHATCORE_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`), one instance and two instances sharing both.
//!
//! - 200 concurrent turns against a budget that fits 10 worst cases admit
//!   at most 10, and the rest answer `budget_exceeded`;
//! - after streams cut at random points, the budget's spent amount equals
//!   the sum of the stored messages' costs, exactly.

use std::sync::Arc;
use std::time::Duration;

use chatcore::auth::Principal;
use chatcore::budget::{BudgetLedger, BudgetService, BudgetSettings, LocalLedger, RedisLedger};
use chatcore::crypto::Keyring;
use chatcore::domain::*;
use chatcore::engine::{Caller, ChatError, ChatInput, ChatService, TurnEvent};
use chatcore::pricing::Price;
use chatcore::ratelimit::LocalRateLimiter;
use chatcore::store::*;
use chatcore::testkit::fixtures::{Seed, Seeded, SystemWrites};
use chatcore::testkit::pg;

/// 1 micro-unit per output token, input free: a turn's worst case is its
/// bot's `max_tokens` exactly.
const PRICE: Price = Price {
    input_per_mtok: 0,
    cached_input_per_mtok: 0,
    output_per_mtok: 1_000_000,
};
const MAX_TOKENS: i32 = 100;

fn redis_url() -> String {
    std::env::var("CHATCORE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn service(store: Arc<dyn Store>, ledger: Arc<dyn BudgetLedger>) -> Arc<ChatService> {
    chatcore::Chatcore::builder()
        .store(store.clone())
        .keyring(Keyring::from_base64(&Keyring::generate_base64(), &[]).unwrap())
        .limiter(Arc::new(LocalRateLimiter::new()))
        .budgets(Arc::new(BudgetService::new(
            store,
            ledger,
            BudgetSettings::default(),
        )))
        .build()
        .await
        .unwrap()
        .chat
}

struct Fx {
    tenant: TenantId,
    bot: Bot,
    budget: Budget,
    secret: secrecy::SecretString,
}

/// A tenant with a priced mock bot (`slow-echo`: a stream as long as the
/// message) and a daily budget of `fits` worst cases.
async fn seed(store: &dyn Store, fits: i64) -> Fx {
    let Seeded {
        tenant: t,
        provider: p,
        bot,
        secret,
        ..
    } = Seed::new("acme")
        .provider(|p| p.default_model = Some("slow-echo".into()))
        .bot_slug("b")
        .model("slow-echo")
        .bot(|b| b.max_tokens = Some(MAX_TOKENS))
        .create(store)
        .await
        .unwrap();
    let audit = || {
        AuditRecord::new(
            Some(t.id),
            Actor {
                kind: ActorKind::Operator,
                id: None,
            },
            "x",
        )
    };
    store
        .apply(
            Change::PutPrice(
                t.id,
                NewPrice {
                    provider_id: p.id,
                    model: "slow-echo".into(),
                    price: PRICE,
                },
            ),
            audit(),
        )
        .await
        .unwrap();
    let Changed::Budget(budget) = store
        .apply(
            Change::CreateBudget(
                t.id,
                NewBudget {
                    scope: BudgetScope::Tenant,
                    api_key_id: None,
                    bot_id: None,
                    end_user_id: None,
                    period: BudgetPeriod::Day,
                    amount_micros: fits * i64::from(MAX_TOKENS),
                },
            ),
            audit(),
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    Fx {
        tenant: t.id,
        bot,
        budget,
        secret,
    }
}

async fn principal(chat: &ChatService, fx: &Fx) -> Arc<Principal> {
    chat.authenticate(Some(&fx.secret), None, None)
        .await
        .unwrap()
}

fn input(bot: &Bot, i: usize) -> ChatInput {
    // Long enough that every stream outlives the burst of requests.
    let words: Vec<String> = (0..120).map(|w| format!("w{w}")).collect();
    ChatInput {
        bot: bot.id.to_string(),
        message: format!("turn {i} {}", words.join(" ")),
        user_id: Some(format!("u{}", i % 3)),
        ..Default::default()
    }
}

/// 200 concurrent streamed turns spread over `chats`. Every admitted
/// stream is held open until all 200 have their answer (so no settlement
/// frees room during the burst), then each is cut at a pseudo-random point
/// or read to its end. Returns how many were admitted.
async fn race(chats: &[Arc<ChatService>], fx: &Fx) -> usize {
    let mut principals = Vec::new();
    for c in chats {
        principals.push(principal(c, fx).await);
    }
    let mut tasks = Vec::new();
    for i in 0..200 {
        let chat = chats[i % chats.len()].clone();
        let p = principals[i % chats.len()].clone();
        let inp = input(&fx.bot, i);
        tasks.push(tokio::spawn(async move {
            let caller = Caller::Key {
                principal: p,
                ip: None,
            };
            match chat.chat_stream(caller, inp).await {
                Ok(rx) => Some((i, rx)),
                Err(ChatError::BudgetExceeded { .. }) => None,
                Err(e) => panic!("turn {i}: {e}"),
            }
        }));
    }
    let mut open = Vec::new();
    for t in tasks {
        open.extend(t.await.unwrap());
    }
    let admitted = open.len();
    let mut readers = Vec::new();
    for (i, mut rx) in open {
        readers.push(tokio::spawn(async move {
            // Cut after 0..8 events, or read everything.
            let cut = (i * 7919) % 10;
            let mut n = 0;
            while let Some(ev) = rx.recv().await {
                n += 1;
                if matches!(ev, TurnEvent::Done(_)) || (cut < 9 && n > cut) {
                    break;
                }
            }
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
    admitted
}

/// Waits until no reservation is left, then checks spent == the sum of
/// the stored costs (and within the amount).
async fn spent_equals_stored(chat: &ChatService, store: &dyn Store, fx: &Fx) {
    let mut state = None;
    for _ in 0..200 {
        store.flush().await.unwrap();
        let s = chat.budgets().state(&fx.budget).await.unwrap();
        if s.reserved_micros == 0 {
            state = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = state.expect("every reservation settles");
    store.flush().await.unwrap();
    let window = chatcore::budget::window(BudgetPeriod::Day, chrono::Utc::now());
    let stored = store
        .budget_spent(fx.tenant, &fx.budget, window.start)
        .await
        .unwrap();
    assert!(stored > 0, "the turns cost something");
    assert_eq!(s.spent_micros, stored, "spent equals the stored costs");
    assert!(s.spent_micros <= fx.budget.amount_micros, "never overspent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_hundred_concurrent_turns_admit_at_most_ten() {
    let store: Arc<dyn Store> = Arc::new(SeaOrmStore::in_memory().await.unwrap());
    let fx = seed(&*store, 10).await;
    let chat = service(store.clone(), Arc::new(LocalLedger::new())).await;
    let admitted = race(std::slice::from_ref(&chat), &fx).await;
    assert!(admitted <= 10, "admitted {admitted}");
    assert!(admitted >= 1, "admitted {admitted}");
    spent_equals_stored(&chat, &*store, &fx).await;
}

async fn pg_stores(n: usize) -> (Vec<Arc<dyn Store>>, String) {
    let (first, schema) = pg::fresh_store().await;
    let mut stores: Vec<Arc<dyn Store>> = vec![Arc::new(first)];
    for _ in 1..n {
        stores.push(Arc::new(
            SeaOrmStore::open(
                &pg::url(),
                StoreOptions {
                    schema: Some(schema.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
        ));
    }
    (stores, schema)
}

async fn redis() -> Arc<dyn BudgetLedger> {
    Arc::new(
        RedisLedger::connect(&redis_url())
            .await
            .expect("Redis must be running for this test"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_and_redis_one_instance() {
    if pg::skip_requested() {
        return;
    }
    let (stores, schema) = pg_stores(1).await;
    let fx = seed(&*stores[0], 10).await;
    let chat = service(stores[0].clone(), redis().await).await;
    let admitted = race(std::slice::from_ref(&chat), &fx).await;
    assert!((1..=10).contains(&admitted), "admitted {admitted}");
    spent_equals_stored(&chat, &*stores[0], &fx).await;
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_and_redis_two_instances_share_one_budget() {
    if pg::skip_requested() {
        return;
    }
    let (stores, schema) = pg_stores(2).await;
    let fx = seed(&*stores[0], 10).await;
    let a = service(stores[0].clone(), redis().await).await;
    let b = service(stores[1].clone(), redis().await).await;
    let admitted = race(&[a.clone(), b.clone()], &fx).await;
    assert!((1..=10).contains(&admitted), "admitted {admitted}");
    spent_equals_stored(&a, &*stores[0], &fx).await;
    spent_equals_stored(&b, &*stores[1], &fx).await;
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}

/// Every way a turn that produced tokens ends records a cost above zero,
/// and the budget's spent follows the stored costs: a complete turn, a
/// complete stream, a stream the client cancels, a stream the provider
/// cuts after some text, and a turn the fallback provider answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_that_produces_tokens_records_a_cost() {
    let store: Arc<dyn Store> = Arc::new(SeaOrmStore::in_memory().await.unwrap());
    let fx = seed(&*store, 1_000).await;
    let chat = service(store.clone(), Arc::new(LocalLedger::new())).await;
    let caller = Caller::Key {
        principal: principal(&chat, &fx).await,
        ip: None,
    };
    // A second bot on a provider that always fails, with the priced mock
    // as its fallback; and one that streams three deltas, then breaks.
    let failing = store
        .create_provider_config(
            fx.tenant,
            NewProviderConfig {
                provider: "mock".into(),
                name: "failing".into(),
                api_key: None,
                base_url: None,
                default_model: Some("error-500".into()),
                enabled: true,
            },
        )
        .await
        .unwrap();
    let bot = |slug: &str, provider, model: &str, fallback| NewBot {
        name: slug.into(),
        slug: slug.into(),
        system_prompt: String::new(),
        provider_id: provider,
        model: Some(model.into()),
        fallback_provider_id: fallback,
        temperature: None,
        max_tokens: Some(MAX_TOKENS),
        context_tokens: 2000,
        is_public: false,
        dataset_ids: vec![],
    };
    let fallback_bot = store
        .create_bot(
            fx.tenant,
            bot("fb", failing.id, "error-500", Some(fx.bot.provider_id)),
        )
        .await
        .unwrap();
    let cut_bot = store
        .create_bot(
            fx.tenant,
            bot("cut", fx.bot.provider_id, "stream-then-error", None),
        )
        .await
        .unwrap();
    let audit = || {
        AuditRecord::new(
            Some(fx.tenant),
            Actor {
                kind: ActorKind::Operator,
                id: None,
            },
            "x",
        )
    };
    for model in ["stream-then-error", "error-500"] {
        for provider_id in [fx.bot.provider_id, failing.id] {
            store
                .apply(
                    Change::PutPrice(
                        fx.tenant,
                        NewPrice {
                            provider_id,
                            model: model.into(),
                            price: PRICE,
                        },
                    ),
                    audit(),
                )
                .await
                .unwrap();
        }
    }
    let ask = |b: &Bot, m: &str| ChatInput {
        bot: b.id.to_string(),
        message: m.into(),
        ..Default::default()
    };
    let cost_of = |id: MessageId| {
        let store = store.clone();
        let tenant = fx.tenant;
        async move {
            store.flush().await.unwrap();
            let conversations = store
                .list_conversations(
                    tenant,
                    ConversationFilter::default(),
                    PageRequest::first(50),
                )
                .await
                .unwrap()
                .data;
            for c in conversations {
                for m in store
                    .list_messages(tenant, c.id, PageRequest::first(50))
                    .await
                    .unwrap()
                    .data
                {
                    if m.id == id {
                        return (m.status, m.cost);
                    }
                }
            }
            panic!("message {id} not stored");
        }
    };

    // Complete.
    let r = chat
        .chat(caller.clone(), ask(&fx.bot, "one two three"))
        .await
        .unwrap();
    let (status, cost) = cost_of(r.message_id).await;
    assert_eq!(status, MessageStatus::Complete);
    let cost = cost.expect("an outcome has a cost");
    assert!(cost.priced && cost.micros > 0, "complete: {cost:?}");

    // A complete stream.
    let mut rx = chat
        .chat_stream(caller.clone(), ask(&fx.bot, "four five six"))
        .await
        .unwrap();
    let mut id = None;
    while let Some(ev) = rx.recv().await {
        if let TurnEvent::Start { message_id, .. } = ev {
            id = Some(message_id);
        }
    }
    let (status, cost) = cost_of(id.unwrap()).await;
    assert_eq!(status, MessageStatus::Complete);
    let cost = cost.expect("an outcome has a cost");
    assert!(cost.priced && cost.micros > 0, "stream: {cost:?}");

    // Cancelled by the client after the first piece.
    let words: Vec<String> = (0..60).map(|w| format!("w{w}")).collect();
    let mut rx = chat
        .chat_stream(caller.clone(), ask(&fx.bot, &words.join(" ")))
        .await
        .unwrap();
    let Some(TurnEvent::Start { message_id, .. }) = rx.recv().await else {
        panic!("a stream starts")
    };
    assert!(matches!(rx.recv().await, Some(TurnEvent::Delta(_))));
    drop(rx);
    let (status, cost) = loop {
        let (s, c) = cost_of(message_id).await;
        if s != MessageStatus::Pending {
            break (s, c);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, MessageStatus::Cancelled);
    let cost = cost.expect("an outcome has a cost");
    assert!(cost.priced && cost.micros > 0, "cancelled: {cost:?}");

    // Cut by the provider after some text.
    let mut rx = chat
        .chat_stream(caller.clone(), ask(&cut_bot, "go"))
        .await
        .unwrap();
    let mut id = None;
    let mut failed = false;
    while let Some(ev) = rx.recv().await {
        match ev {
            TurnEvent::Start { message_id, .. } => id = Some(message_id),
            TurnEvent::Error { .. } => failed = true,
            _ => {}
        }
    }
    assert!(failed, "the cut stream ends with an error event");
    let (status, cost) = cost_of(id.unwrap()).await;
    assert_eq!(status, MessageStatus::Incomplete);
    let cost = cost.expect("an outcome has a cost");
    assert!(cost.priced && cost.micros > 0, "cut: {cost:?}");

    // Answered by the fallback provider.
    let r = chat
        .chat(caller.clone(), ask(&fallback_bot, "seven eight"))
        .await
        .unwrap();
    let (status, cost) = cost_of(r.message_id).await;
    assert_eq!(status, MessageStatus::Complete);
    let cost = cost.expect("an outcome has a cost");
    assert!(cost.priced && cost.micros > 0, "fallback: {cost:?}");

    spent_equals_stored(&chat, &*store, &fx).await;
}
