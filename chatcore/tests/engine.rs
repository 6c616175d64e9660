//! The chat turn in the library itself: each stage (validate, resolve,
//! authorize, limit, conversation, prompt) and each way a turn ends
//! (complete, failed, failed after partial text, cancelled by the client,
//! ended by the shutdown grace, orphaned by a dead instance), on a real
//! store (SQLite) and the offline mock provider. No HTTP.

use std::sync::Arc;
use std::time::Duration;

use chatcore::Chatcore;
use chatcore::auth::Principal;
use chatcore::crypto::Keyring;
use chatcore::domain::*;
use chatcore::engine::{
    Caller, ChatError, ChatInput, ChatReply, ChatService, ChatSettings, TurnEvent,
};
use chatcore::store::*;
use chatcore::testkit::fixtures::{self, Seed, Seeded, SystemWrites};

struct Fx {
    store: Arc<SeaOrmStore>,
    chat: Arc<ChatService>,
    tenant: Tenant,
    bot: Bot,
    provider: ProviderConfig,
    key: Arc<Principal>,
}

async fn tenant(store: &dyn Store, slug: &str, rpm: Option<i32>) -> Tenant {
    let mut new = fixtures::new_tenant(slug);
    new.rate_limit_rpm = rpm;
    store.create_tenant(new).await.unwrap()
}

async fn bot(store: &dyn Store, t: TenantId, p: ProviderConfigId, slug: &str, model: &str) -> Bot {
    let mut new = fixtures::new_bot(p, slug, model);
    new.is_public = slug.starts_with("public");
    store.create_bot(t, new).await.unwrap()
}

async fn key(
    store: &dyn Store,
    chat: &ChatService,
    t: TenantId,
    permissions: Vec<Permission>,
    bot_ids: Vec<BotId>,
    rpm: Option<i32>,
) -> Arc<Principal> {
    let (k, mut new) = fixtures::new_key("k", permissions);
    new.bot_ids = bot_ids;
    new.rate_limit_rpm = rpm;
    store.create_api_key(t, new).await.unwrap();
    chat.authenticate(Some(&k.secret), None, None)
        .await
        .unwrap()
}

async fn service(store: Arc<SeaOrmStore>, settings: ChatSettings) -> Arc<ChatService> {
    Chatcore::builder()
        .store(store)
        .keyring(Keyring::from_base64(&Keyring::generate_base64(), &[]).unwrap())
        .settings(settings)
        .build()
        .await
        .unwrap()
        .chat
}

/// Bots, guardrails and keys are cached for 1 ms only: a test's changes
/// are seen by the next turn.
fn short_cache() -> ChatSettings {
    ChatSettings {
        cache_ttl: Duration::from_millis(1),
        ..Default::default()
    }
}

/// Bots and keys stay cached for an hour: only an invalidation drops them.
fn long_cache() -> ChatSettings {
    ChatSettings {
        cache_ttl: Duration::from_secs(3600),
        ..Default::default()
    }
}

async fn fixture_on(store: SeaOrmStore, rpm: Option<i32>) -> Fx {
    let store = Arc::new(store);
    let chat = service(store.clone(), short_cache()).await;
    seeded_on(store, chat, rpm).await
}

/// The seeded tenant `acme` (bot `echo`, a key) served by `chat`.
async fn seeded_on(store: Arc<SeaOrmStore>, chat: Arc<ChatService>, rpm: Option<i32>) -> Fx {
    let seeded = Seed::new("acme")
        .tenant(|t| t.rate_limit_rpm = rpm)
        .bot_slug("echo")
        .create(&*store)
        .await
        .unwrap();
    let key = chat
        .authenticate(Some(&seeded.secret), None, None)
        .await
        .unwrap();
    let Seeded {
        tenant,
        provider,
        bot,
        ..
    } = seeded;
    Fx {
        store,
        chat,
        tenant,
        bot,
        provider,
        key,
    }
}

async fn fixture() -> Fx {
    fixture_on(SeaOrmStore::in_memory().await.unwrap(), None).await
}

/// The request was refused as invalid, the message naming `field` first.
fn assert_invalid<T: std::fmt::Debug>(field: &str, r: Result<T, ChatError>) {
    match r {
        Err(ChatError::InvalidRequest(m)) => assert!(m.starts_with(field), "{m}"),
        other => panic!("{field}: {other:?}"),
    }
}

fn as_key(p: &Arc<Principal>) -> Caller {
    Caller::Key {
        principal: p.clone(),
        ip: None,
    }
}

fn input(bot: &str, message: &str) -> ChatInput {
    ChatInput {
        bot: bot.into(),
        message: message.into(),
        ..Default::default()
    }
}

impl Fx {
    /// A turn of `bot` with the fixture's key, which must be answered.
    async fn ask(&self, bot: &str, message: &str) -> ChatReply {
        self.chat
            .chat(as_key(&self.key), input(bot, message))
            .await
            .unwrap()
    }
    async fn messages(&self, c: ConversationId) -> Vec<Message> {
        self.store
            .list_messages(self.tenant.id, c, PageRequest::first(100))
            .await
            .unwrap()
            .data
    }
    async fn conversations(&self) -> usize {
        self.store
            .list_conversations(
                self.tenant.id,
                ConversationFilter::default(),
                PageRequest::first(100),
            )
            .await
            .unwrap()
            .data
            .len()
    }
    async fn turns_counted(&self) -> (u64, u64) {
        let days = UsageDays::last(1, now()).unwrap();
        let rows = self
            .store
            .usage(self.tenant.id, days, UsageGroup::Bot)
            .await
            .unwrap();
        (
            rows.iter().map(|r| r.requests).sum(),
            rows.iter().map(|r| r.total_tokens).sum(),
        )
    }
    async fn bot_with_model(&self, slug: &str, model: &str) -> Bot {
        bot(&*self.store, self.tenant.id, self.provider.id, slug, model).await
    }
}

// ---- validate ----

#[tokio::test]
async fn validate_refuses_bad_input_before_anything_is_read_or_stored() {
    let fx = fixture().await;
    let long = "x".repeat(ChatSettings::default().max_message_chars + 1);
    let cases = [
        (input("echo", "   "), "message"),
        (input("echo", &long), "message"),
        (input(" ", "hi"), "bot_id"),
        // Text the database cannot store (NUL), named by its field.
        (input("echo", "a\0b"), "message"),
        (input("ec\0ho", "hi"), "bot_id"),
        (
            ChatInput {
                user_id: Some("u\0".into()),
                ..input("echo", "hi")
            },
            "user_id",
        ),
        (
            ChatInput {
                conversation_id: Some("not-an-id".into()),
                ..input("echo", "hi")
            },
            "conversation_id",
        ),
        (
            ChatInput {
                user_id: Some("u".repeat(257)),
                ..input("echo", "hi")
            },
            "user_id",
        ),
        (
            ChatInput {
                user_id: Some(String::new()),
                ..input("echo", "hi")
            },
            "user_id",
        ),
    ];
    for (i, field) in cases {
        assert_invalid(field, fx.chat.chat(as_key(&fx.key), i).await);
    }
    assert_eq!(fx.conversations().await, 0);
    // The longest message accepted is accepted.
    let max = "y".repeat(ChatSettings::default().max_message_chars);
    fx.ask("echo", &max).await;
}

// ---- resolve ----

#[tokio::test]
async fn resolve_finds_bots_by_id_and_slug_in_the_callers_tenant_only() {
    let fx = fixture().await;
    let by_slug = fx.ask("echo", "a").await;
    let by_id = fx.ask(&fx.bot.id.to_string(), "b").await;
    assert_eq!(by_slug.bot_id, fx.bot.id);
    assert_eq!(by_id.bot_id, fx.bot.id);
    assert!(matches!(
        fx.chat.chat(as_key(&fx.key), input("nope", "a")).await,
        Err(ChatError::NotFound("bot"))
    ));
    // Another tenant's bot, by slug and by id, is not found.
    let other = tenant(&*fx.store, "other", None).await;
    let p = fx
        .store
        .create_provider_config(
            other.id,
            NewProviderConfig {
                name: "m".into(),
                default_model: None,
                ..fixtures::mock_provider()
            },
        )
        .await
        .unwrap();
    let theirs = bot(&*fx.store, other.id, p.id, "theirs", "echo").await;
    for r in ["theirs".to_string(), theirs.id.to_string()] {
        assert!(matches!(
            fx.chat.chat(as_key(&fx.key), input(&r, "a")).await,
            Err(ChatError::NotFound("bot"))
        ));
    }
}

// ---- authorize ----

#[tokio::test]
async fn authorize_checks_permission_bot_restriction_status_features_and_guardrails() {
    let fx = fixture().await;
    let read = key(
        &*fx.store,
        &fx.chat,
        fx.tenant.id,
        vec![Permission::Read],
        vec![],
        None,
    )
    .await;
    assert!(matches!(
        fx.chat.chat(as_key(&read), input("echo", "hi")).await,
        Err(ChatError::Forbidden(m)) if m.contains("chat permission")
    ));
    let other_bot = fx.bot_with_model("other", "echo").await;
    let restricted = key(
        &*fx.store,
        &fx.chat,
        fx.tenant.id,
        vec![Permission::Chat],
        vec![other_bot.id],
        None,
    )
    .await;
    assert!(matches!(
        fx.chat.chat(as_key(&restricted), input("echo", "hi")).await,
        Err(ChatError::Forbidden(m)) if m.contains("may not use")
    ));
    fx.chat
        .chat(as_key(&restricted), input("other", "hi"))
        .await
        .unwrap();

    // A private bot is not found by public visitors.
    let public = Caller::Public {
        ip: Some("1.2.3.4".into()),
        origin: None,
        visitor: None,
    };
    assert!(matches!(
        fx.chat.chat(public.clone(), input("echo", "hi")).await,
        Err(ChatError::NotFound("bot"))
    ));
    fx.bot_with_model("public-bot", "echo").await;
    fx.chat
        .chat(public.clone(), input("public-bot", "hi"))
        .await
        .unwrap();

    // Guardrails: a blocked term refuses the message, nothing is stored.
    fx.store
        .create_scope(
            fx.tenant.id,
            NewScope {
                bot_id: fx.bot.id,
                kind: "blocked_terms".into(),
                config: serde_json::json!(["forbidden"]),
            },
        )
        .await
        .unwrap();
    let before = fx.conversations().await;
    tokio::time::sleep(Duration::from_millis(5)).await; // the 1 ms bot cache
    assert!(matches!(
        fx.chat
            .chat(as_key(&fx.key), input("echo", "a Forbidden word"))
            .await,
        Err(ChatError::GuardrailBlocked(_))
    ));
    assert_eq!(fx.conversations().await, before);

    // Features: chat switched off for the tenant.
    fx.store
        .update_tenant(
            fx.tenant.id,
            TenantPatch {
                features: Some(serde_json::json!({"chat": false})),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    fx.chat.invalidate_tenant(fx.tenant.id);
    let key2 = key(
        &*fx.store,
        &fx.chat,
        fx.tenant.id,
        vec![Permission::Chat],
        vec![],
        None,
    )
    .await;
    assert!(matches!(
        fx.chat.chat(as_key(&key2), input("echo", "hi")).await,
        Err(ChatError::FeatureDisabled(_))
    ));
}

// ---- limit ----

#[tokio::test]
async fn limits_refuse_over_quota_and_store_nothing_for_a_refusal() {
    let fx = fixture_on(SeaOrmStore::in_memory().await.unwrap(), Some(2)).await;
    for _ in 0..2 {
        fx.ask("echo", "hi").await;
    }
    match fx.chat.chat(as_key(&fx.key), input("echo", "hi")).await {
        Err(ChatError::RateLimited { scope, retry_after }) => {
            assert_eq!(scope, "tenant");
            assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fx.conversations().await,
        2,
        "nothing stored for the refusal"
    );
    assert_eq!(fx.turns_counted().await.0, 2);

    // A key's own limit.
    let fx = fixture().await;
    let slow = key(
        &*fx.store,
        &fx.chat,
        fx.tenant.id,
        vec![Permission::Chat],
        vec![],
        Some(1),
    )
    .await;
    fx.chat
        .chat(as_key(&slow), input("echo", "hi"))
        .await
        .unwrap();
    assert!(matches!(
        fx.chat.chat(as_key(&slow), input("echo", "hi")).await,
        Err(ChatError::RateLimited {
            scope: "api_key",
            ..
        })
    ));
    // ... which does not hold back the tenant's other keys.
    fx.ask("echo", "hi").await;
}

// ---- conversation ----

#[tokio::test]
async fn a_continued_conversation_must_be_the_bots_and_the_users() {
    let fx = fixture().await;
    let first = fx
        .chat
        .chat(
            as_key(&fx.key),
            ChatInput {
                user_id: Some("u1".into()),
                ..input("echo", "one")
            },
        )
        .await
        .unwrap();
    let cont = |user: Option<&str>, bot: &str| ChatInput {
        conversation_id: Some(first.conversation_id.to_string()),
        user_id: user.map(str::to_string),
        ..input(bot, "two")
    };
    let second = fx
        .chat
        .chat(as_key(&fx.key), cont(Some("u1"), "echo"))
        .await
        .unwrap();
    assert_eq!(second.conversation_id, first.conversation_id);
    let msgs = fx.messages(first.conversation_id).await;
    let roles: Vec<_> = msgs.iter().map(|m| (m.role, m.content.as_str())).collect();
    assert_eq!(
        roles,
        [
            (Role::User, "one"),
            (Role::Assistant, "one"),
            (Role::User, "two"),
            (Role::Assistant, "two"),
        ]
    );
    assert!(matches!(
        fx.chat
            .chat(as_key(&fx.key), cont(Some("u2"), "echo"))
            .await,
        Err(ChatError::NotFound("conversation"))
    ));
    fx.bot_with_model("other", "echo").await;
    assert!(matches!(
        fx.chat.chat(as_key(&fx.key), cont(None, "other")).await,
        Err(ChatError::NotFound("conversation"))
    ));
    // A conversation of the API channel cannot be continued publicly.
    fx.bot_with_model("public-x", "echo").await;
    let api_conv = fx.ask("public-x", "k").await;
    assert!(matches!(
        fx.chat
            .chat(
                Caller::Public {
                    ip: None,
                    origin: None,
                    visitor: None,
                },
                ChatInput {
                    conversation_id: Some(api_conv.conversation_id.to_string()),
                    ..input("public-x", "v")
                },
            )
            .await,
        Err(ChatError::NotFound("conversation"))
    ));
}

// ---- outcomes ----

#[tokio::test]
async fn a_complete_turn_is_stored_with_tokens_timings_and_usage() {
    let fx = fixture().await;
    let r = fx.ask("echo", "hello there").await;
    assert_eq!(r.content, "hello there");
    let msgs = fx.messages(r.conversation_id).await;
    assert_eq!(msgs.len(), 2);
    let a = &msgs[1];
    assert_eq!(a.id, r.message_id);
    assert_eq!(a.status, MessageStatus::Complete);
    assert_eq!(a.content, "hello there");
    let u = a.usage.unwrap();
    assert!(u.prompt_tokens > 0 && u.completion_tokens > 0);
    assert_eq!(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    assert_eq!(r.usage.total_tokens as i32, u.total_tokens);
    assert_eq!(a.api_key_id, Some(fx.key.key.id));
    assert!(a.response_time_ms.is_some());
    assert_eq!(a.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        fx.turns_counted().await,
        (1, u.total_tokens as u64),
        "counted once, with its tokens"
    );
}

#[tokio::test]
async fn a_provider_failure_keeps_the_users_message_and_records_the_error() {
    let fx = fixture().await;
    fx.bot_with_model("broken", "error-500").await;
    let e = fx
        .chat
        .chat(as_key(&fx.key), input("broken", "are you there?"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "provider_error");
    let convs = fx
        .store
        .list_conversations(
            fx.tenant.id,
            ConversationFilter::default(),
            PageRequest::first(10),
        )
        .await
        .unwrap()
        .data;
    let msgs = fx.messages(convs[0].id).await;
    assert_eq!(msgs[0].content, "are you there?");
    assert_eq!(msgs[1].status, MessageStatus::Error);
    assert_eq!(msgs[1].error.as_deref(), Some("provider_error"));
    assert_eq!(msgs[1].usage, None, "no text, no tokens");
    assert_eq!(fx.turns_counted().await.0, 1, "a failed turn is a turn");
}

async fn collect(mut rx: tokio::sync::mpsc::Receiver<TurnEvent>) -> Vec<TurnEvent> {
    let mut v = Vec::new();
    while let Some(e) = rx.recv().await {
        v.push(e);
    }
    v
}

#[tokio::test]
async fn a_streamed_turn_sends_start_deltas_done_and_stores_what_was_sent() {
    let fx = fixture().await;
    let rx = fx
        .chat
        .chat_stream(as_key(&fx.key), input("echo", "stream me please"))
        .await
        .unwrap();
    let events = collect(rx).await;
    let TurnEvent::Start {
        conversation_id,
        message_id,
    } = &events[0]
    else {
        panic!("{:?}", events[0])
    };
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::Delta(d) => Some(d.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "stream me please");
    let TurnEvent::Done(done) = events.last().unwrap() else {
        panic!("{:?}", events.last())
    };
    let msgs = fx.messages(*conversation_id).await;
    assert_eq!(msgs[1].id, *message_id);
    assert_eq!(msgs[1].content, text);
    assert_eq!(msgs[1].status, MessageStatus::Complete);
    assert_eq!(
        msgs[1].usage.unwrap().total_tokens,
        done.usage.total_tokens as i32
    );
    assert!(done.time_to_first_token_ms <= done.response_time_ms);
}

#[tokio::test]
async fn a_stream_that_fails_midway_keeps_the_partial_text_with_estimated_tokens() {
    let fx = fixture().await;
    fx.bot_with_model("flaky", "stream-then-error").await;
    let rx = fx
        .chat
        .chat_stream(as_key(&fx.key), input("flaky", "go"))
        .await
        .unwrap();
    let events = collect(rx).await;
    let TurnEvent::Start {
        conversation_id, ..
    } = &events[0]
    else {
        panic!()
    };
    let sent: String = events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::Delta(d) => Some(d.as_str()),
            _ => None,
        })
        .collect();
    assert!(!sent.is_empty());
    assert!(matches!(
        events.last().unwrap(),
        TurnEvent::Error { code, .. } if *code == "provider_error"
    ));
    let m = &fx.messages(*conversation_id).await[1];
    assert_eq!(m.status, MessageStatus::Incomplete);
    assert_eq!(m.content, sent);
    let u = m.usage.unwrap();
    assert!(u.estimated && u.completion_tokens > 0 && u.prompt_tokens > 0);
    assert_eq!(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    assert_eq!(fx.turns_counted().await, (1, u.total_tokens as u64));
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_stream_and_keeps_what_it_saw() {
    let fx = fixture().await;
    fx.bot_with_model("slowpoke", "slow").await;
    let mut rx = fx
        .chat
        .chat_stream(as_key(&fx.key), input("slowpoke", "go"))
        .await
        .unwrap();
    let Some(TurnEvent::Start {
        conversation_id, ..
    }) = rx.recv().await
    else {
        panic!()
    };
    let Some(TurnEvent::Delta(first)) = rx.recv().await else {
        panic!()
    };
    drop(rx);
    // The engine notices, stores, and ends the task.
    for _ in 0..200 {
        if fx.chat.open_streams() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fx.chat.open_streams(), 0);
    let m = &fx.messages(conversation_id).await[1];
    assert_eq!(m.status, MessageStatus::Cancelled);
    assert!(m.content.starts_with(&first), "{:?}", m.content);
    assert_eq!(m.finish_reason.as_deref(), Some("client_disconnected"));
    assert!(m.usage.unwrap().estimated);
}

#[tokio::test]
async fn the_end_of_the_shutdown_grace_ends_open_streams_as_cancelled() {
    let fx = fixture().await;
    fx.bot_with_model("slowpoke", "slow").await;
    let mut rx = fx
        .chat
        .chat_stream(as_key(&fx.key), input("slowpoke", "go"))
        .await
        .unwrap();
    let Some(TurnEvent::Start {
        conversation_id, ..
    }) = rx.recv().await
    else {
        panic!()
    };
    let chat = fx.chat.clone();
    let shutdown = tokio::spawn(async move { chat.shutdown(Duration::from_millis(120)).await });
    let rest = collect(rx).await;
    shutdown.await.unwrap();
    assert!(
        matches!(rest.last(), Some(TurnEvent::Error { code, .. }) if *code == "unavailable"),
        "{rest:?}"
    );
    assert!(!rest.iter().any(|e| matches!(e, TurnEvent::Done(_))));
    let m = &fx.messages(conversation_id).await[1];
    assert_eq!(m.status, MessageStatus::Cancelled);
    assert_eq!(m.finish_reason.as_deref(), Some("shutdown"));
    assert!(
        m.response_time_ms.unwrap() >= 120,
        "it lasted the whole grace: {:?}",
        m.response_time_ms
    );
    // Streams that finish within the grace are not touched.
    let fx = fixture().await;
    let rx = fx
        .chat
        .chat_stream(as_key(&fx.key), input("echo", "quick"))
        .await
        .unwrap();
    fx.chat.shutdown(Duration::from_secs(5)).await;
    assert!(matches!(collect(rx).await.last(), Some(TurnEvent::Done(_))));
}

// ---- turns left pending by a dead instance ----

/// The orphans `chat` closes, within about 30 s of this process running
/// (a paused process does not use the time up): a sweep that closes
/// nothing it finds would find the same turns again, for ever.
async fn recovered(chat: &Arc<ChatService>) -> usize {
    let sweep = tokio::spawn({
        let chat = chat.clone();
        async move { chat.recover_orphaned_turns().await }
    });
    for _ in 0..300 {
        if sweep.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sweep.is_finished(), "the sweep is still running");
    sweep.await.unwrap().unwrap()
}

#[tokio::test]
async fn turns_of_a_dead_instance_are_closed_with_their_streamed_text() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("o.db").display());
    let named = |name: &str| StoreOptions {
        instance_name: Some(name.into()),
        ..Default::default()
    };
    // The first run of instance "web-1" starts a turn, streams some text,
    // and dies without an outcome.
    let first = SeaOrmStore::open(&url, named("web-1")).await.unwrap();
    let fx = fixture_on(first.clone(), None).await;
    let (conv, _u, pending) = first
        .begin_turn(
            fx.tenant.id,
            NewTurn {
                conversation: TurnConversation::New(NewConversation {
                    bot_id: fx.bot.id,
                    end_user_id: None,
                    title: None,
                    channel: Channel::Api,
                }),
                user_content: "tell me a story".into(),
                tool_results: Vec::new(),
                api_key_id: None,
                provider: Some("mock".into()),
                model: Some("echo".into()),
            },
        )
        .await
        .unwrap();
    first.record_partial(fx.tenant.id, pending.id, "Once upon a time".into());
    first.flush().await.unwrap();
    // A live instance of another name has a pending turn too.
    let live = SeaOrmStore::open(&url, named("web-2")).await.unwrap();
    let (_c, _u, live_turn) = live
        .begin_turn(
            fx.tenant.id,
            NewTurn {
                conversation: TurnConversation::Existing(conv.id),
                user_content: "and another".into(),
                tool_results: Vec::new(),
                api_key_id: None,
                provider: None,
                model: None,
            },
        )
        .await
        .unwrap();
    // Restarted: "web-1" again.
    let second = SeaOrmStore::open(&url, named("web-1")).await.unwrap();
    let orphans = second.orphaned_turns(100).await.unwrap();
    assert_eq!(orphans.len(), 1, "only the dead instance's turn");
    assert_eq!(orphans[0].message.id, pending.id);
    assert_eq!(orphans[0].prompt.as_deref(), Some("tell me a story"));
    let chat = service(Arc::new(second.clone()), ChatSettings::default()).await;
    assert_eq!(recovered(&chat).await, 1);
    assert_eq!(recovered(&chat).await, 0, "once");
    let m = second.get_message(fx.tenant.id, pending.id).await.unwrap();
    assert_eq!(m.status, MessageStatus::Incomplete);
    assert_eq!(m.content, "Once upon a time");
    let u = m.usage.unwrap();
    assert!(u.estimated && u.prompt_tokens > 0 && u.completion_tokens > 0);
    assert_eq!(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    assert_eq!(m.finish_reason.as_deref(), Some("instance_lost"));
    assert_eq!(m.error.as_deref(), Some("unavailable"));
    assert_eq!(
        (m.provider.as_deref(), m.model.as_deref()),
        (Some("mock"), Some("echo")),
        "what the turn was started with"
    );
    let still = second
        .get_message(fx.tenant.id, live_turn.id)
        .await
        .unwrap();
    assert_eq!(
        still.status,
        MessageStatus::Pending,
        "a live instance's turn"
    );
    let days = UsageDays::last(1, now()).unwrap();
    let usage = second
        .usage(fx.tenant.id, days, UsageGroup::Bot)
        .await
        .unwrap();
    assert_eq!(usage.iter().map(|r| r.requests).sum::<u64>(), 1);
    assert_eq!(
        usage.iter().map(|r| r.total_tokens).sum::<u64>(),
        u.total_tokens as u64
    );
}

#[tokio::test]
async fn streamed_text_reaches_the_store_while_the_stream_runs() {
    let fx = fixture().await;
    fx.bot_with_model("slowpoke", "slow-echo").await;
    // The mock echoes the message: 40 words stream for about two seconds.
    let long = "word ".repeat(40);
    let mut rx = fx
        .chat
        .chat_stream(as_key(&fx.key), input("slowpoke", &long))
        .await
        .unwrap();
    let Some(TurnEvent::Start {
        conversation_id,
        message_id,
    }) = rx.recv().await
    else {
        panic!()
    };
    let mut seen = String::new();
    let mut stored = String::new();
    // The canned reply streams for a few seconds at the mock's pace; the
    // text so far is written about once a second.
    while let Some(ev) = rx.recv().await {
        match ev {
            TurnEvent::Delta(d) => seen.push_str(&d),
            TurnEvent::Done(_) => break,
            other => panic!("{other:?}"),
        }
        fx.store.flush().await.unwrap();
        let m = fx
            .store
            .get_message(fx.tenant.id, message_id)
            .await
            .unwrap();
        if m.status == MessageStatus::Pending && !m.content.is_empty() {
            stored = m.content;
            break;
        }
    }
    assert!(!stored.is_empty(), "partial text was stored before the end");
    // A delta is handed to the store before it is sent: the store may be
    // one delta ahead of what was received so far, never off the answer.
    for ev in collect(rx).await {
        if let TurnEvent::Delta(d) = ev {
            seen.push_str(&d);
        }
    }
    assert!(seen.starts_with(&stored), "{stored:?} / {seen:?}");
    let _ = conversation_id;
}

// ---- an outcome the database could not take at once ----

/// Another connection holds the SQLite file's write lock when a streamed
/// turn ends: the store gives up after its busy timeout (twice 5 s), the
/// client gets an `unavailable` error instead of `done`, and the answer is
/// stored in the background once the lock is released, counted once.
#[tokio::test]
async fn an_answer_the_locked_database_refused_is_stored_once_it_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("locked.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let store = SeaOrmStore::open(&url, StoreOptions::default())
        .await
        .unwrap();
    let fx = fixture_on(store, None).await;
    // Two words, 50 ms apart: the stream is still running after `Start`.
    fx.bot_with_model("slowpoke", "slow-echo").await;
    let mut rx = fx
        .chat
        .chat_stream(as_key(&fx.key), input("slowpoke", "held up"))
        .await
        .unwrap();
    let Some(TurnEvent::Start { message_id, .. }) = rx.recv().await else {
        panic!()
    };
    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let rest = collect(rx).await;
    assert!(
        matches!(rest.last(), Some(TurnEvent::Error { code, .. }) if *code == "unavailable"),
        "{rest:?}"
    );
    assert!(!rest.iter().any(|e| matches!(e, TurnEvent::Done(_))));
    // Readers are not blocked: nothing is stored yet.
    let m = fx
        .store
        .get_message(fx.tenant.id, message_id)
        .await
        .unwrap();
    assert_eq!(m.status, MessageStatus::Pending);
    other.execute_batch("COMMIT").unwrap();
    // The first retry comes 250 ms after the failure; allow for a slow box.
    let mut m = m;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = fx.message(message_id).await;
        if m.status != MessageStatus::Pending {
            break;
        }
    }
    assert_eq!(m.status, MessageStatus::Complete);
    assert_eq!(m.content, "held up");
    assert_eq!(m.finish_reason.as_deref(), Some("stop"));
    let u = m.usage.unwrap();
    assert!(u.total_tokens > 0, "{u:?}");
    assert_eq!(fx.turns_counted().await, (1, u.total_tokens as u64));
}

// ---- the service around the turn: authentication, caches, providers ----

#[tokio::test]
async fn failed_authentications_throttle_their_ip_and_successes_do_not() {
    let store = Arc::new(SeaOrmStore::in_memory().await.unwrap());
    let chat = service(
        store.clone(),
        ChatSettings {
            auth_failures_per_minute: 3,
            ..Default::default()
        },
    )
    .await;
    let t = tenant(&*store, "acme", None).await;
    let (k, new) = fixtures::new_key("k", vec![Permission::Chat]);
    store.create_api_key(t.id, new).await.unwrap();
    let wrong = secrecy::SecretString::from(format!("{}x", k.prefix));
    // Good keys from one address never count against it.
    for _ in 0..6 {
        chat.authenticate(Some(&k.secret), Some("10.0.0.1"), None)
            .await
            .unwrap();
    }
    for _ in 0..4 {
        let e = chat
            .authenticate(Some(&wrong), Some("10.0.0.2"), None)
            .await
            .unwrap_err();
        if matches!(e, ChatError::RateLimited { .. }) {
            break;
        }
        assert!(matches!(e, ChatError::Unauthorized(_)), "{e:?}");
    }
    assert!(
        matches!(
            chat.authenticate(Some(&k.secret), Some("10.0.0.2"), None)
                .await,
            Err(ChatError::RateLimited {
                scope: "auth_failures",
                ..
            })
        ),
        "the failing address is held back, even with a good key"
    );
    chat.authenticate(Some(&k.secret), Some("10.0.0.3"), None)
        .await
        .expect("other addresses are not");
    assert!(matches!(
        chat.authenticate(None, Some("10.0.0.4"), None).await,
        Err(ChatError::Unauthorized(_))
    ));

    // The operator key: compared, and its failures counted the same way.
    let operator = secrecy::SecretString::from("op-secret-0123456789".to_string());
    chat.authenticate_operator(Some(&operator), &operator, Some("10.0.0.5"), None)
        .await
        .unwrap();
    let bad = secrecy::SecretString::from("op-secret-0123456780".to_string());
    assert!(matches!(
        chat.authenticate_operator(Some(&bad), &operator, Some("10.0.0.5"), None)
            .await,
        Err(ChatError::Unauthorized(_))
    ));
    assert!(matches!(
        chat.authenticate_operator(None, &operator, Some("10.0.0.5"), None)
            .await,
        Err(ChatError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn invalidating_a_tenant_drops_its_cached_bots_public_and_keyed() {
    let store = Arc::new(SeaOrmStore::in_memory().await.unwrap());
    let chat = service(store.clone(), long_cache()).await;
    let t = tenant(&*store, "acme", None).await;
    let p = store
        .create_provider_config(
            t.id,
            NewProviderConfig {
                default_model: None,
                ..fixtures::mock_provider()
            },
        )
        .await
        .unwrap();
    let private = bot(&*store, t.id, p.id, "private", "echo").await;
    let public = bot(&*store, t.id, p.id, "public-one", "echo").await;
    let k = key(&*store, &chat, t.id, vec![Permission::Chat], vec![], None).await;
    let visitor = || Caller::Public {
        ip: Some("192.0.2.1".into()),
        origin: None,
        visitor: None,
    };
    chat.chat(as_key(&k), input("private", "a")).await.unwrap();
    chat.chat(visitor(), input("public-one", "a"))
        .await
        .unwrap();
    for b in [private.id, public.id] {
        store
            .update_bot(
                t.id,
                b,
                BotPatch {
                    model: Some(Some("error-500".into())),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    // Cached for an hour: the old model still answers...
    chat.chat(as_key(&k), input("private", "b")).await.unwrap();
    chat.chat(visitor(), input("public-one", "b"))
        .await
        .unwrap();
    // ... until the tenant is invalidated.
    chat.invalidate_tenant(t.id);
    assert_eq!(
        chat.chat(as_key(&k), input("private", "c"))
            .await
            .unwrap_err()
            .code(),
        "provider_error"
    );
    assert_eq!(
        chat.chat(visitor(), input("public-one", "c"))
            .await
            .unwrap_err()
            .code(),
        "provider_error"
    );
}

#[tokio::test]
async fn a_changed_provider_config_is_rebuilt_and_a_disabled_one_refused() {
    let fx = fixture().await;
    // A bot without a model of its own takes the provider's default.
    fx.store
        .create_bot(
            fx.tenant.id,
            NewBot {
                name: "default".into(),
                slug: "default".into(),
                system_prompt: String::new(),
                provider_id: fx.provider.id,
                model: None,
                fallback_provider_id: None,
                temperature: None,
                max_tokens: None,
                context_tokens: 2000,
                is_public: false,
                dataset_ids: vec![],
            },
        )
        .await
        .unwrap();
    let r = fx.ask("default", "hi there").await;
    assert_eq!(r.content, "hi there");
    let patch = |p: ProviderConfigPatch| {
        fx.store
            .update_provider_config(fx.tenant.id, fx.provider.id, p)
    };
    patch(ProviderConfigPatch {
        default_model: Some(Some("error-500".into())),
        ..Default::default()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await; // the 1 ms bot cache
    assert_eq!(
        fx.chat
            .chat(as_key(&fx.key), input("default", "hi"))
            .await
            .unwrap_err()
            .code(),
        "provider_error",
        "the provider was rebuilt with the new default model"
    );
    patch(ProviderConfigPatch {
        enabled: Some(false),
        ..Default::default()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(matches!(
        fx.chat.chat(as_key(&fx.key), input("echo", "hi")).await,
        Err(ChatError::Forbidden(m)) if m.contains("disabled")
    ));
}

#[tokio::test]
async fn a_limit_of_zero_is_no_limit() {
    let fx = fixture_on(SeaOrmStore::in_memory().await.unwrap(), Some(0)).await;
    for _ in 0..4 {
        fx.ask("echo", "hi").await;
    }
}

#[tokio::test]
async fn tokens_per_minute_are_settled_with_the_real_usage() {
    let fx = fixture().await;
    fx.store
        .update_tenant(
            fx.tenant.id,
            TenantPatch {
                rate_limit_tpm: Some(Some(200)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let k = key(
        &*fx.store,
        &fx.chat,
        fx.tenant.id,
        vec![Permission::Chat],
        vec![],
        None,
    )
    .await;
    // 40 words: the prompt's byte estimate is about 31 tokens; the mock
    // reports 48 prompt and 40 completion tokens, so each turn costs 88.
    let message = vec!["w"; 40].join(" ");
    let mut admitted = 0;
    for _ in 0..6 {
        match fx.chat.chat(as_key(&k), input("echo", &message)).await {
            Ok(r) => {
                assert_eq!(r.usage.total_tokens, 88);
                admitted += 1;
            }
            Err(ChatError::RateLimited { scope, .. }) => {
                assert_eq!(scope, "tenant_tokens");
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    // Charged only the estimates, six would fit in 200 a minute.
    assert_eq!(admitted, 2, "88 + 88, then 176 + 31 > 200");
}

#[tokio::test]
async fn open_streams_are_counted_while_they_run() {
    let fx = fixture().await;
    fx.bot_with_model("slowpoke", "slow").await;
    let a = fx
        .chat
        .chat_stream(as_key(&fx.key), input("slowpoke", "one"))
        .await
        .unwrap();
    let b = fx
        .chat
        .chat_stream(as_key(&fx.key), input("slowpoke", "two"))
        .await
        .unwrap();
    assert_eq!(fx.chat.open_streams(), 2);
    drop(a);
    drop(b);
    for _ in 0..200 {
        if fx.chat.open_streams() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fx.chat.open_streams(), 0);
}

// ---- audit ----

impl Fx {
    /// The tenant's audit records of `action`, oldest first, once the
    /// writer has stored what was queued.
    async fn audit(&self, action: &str) -> Vec<AuditRecord> {
        self.chat.audit().flush().await;
        let mut v = self
            .store
            .list_audit(
                self.tenant.id,
                AuditFilter {
                    action: Some(action.into()),
                    ..Default::default()
                },
                PageRequest::first(100),
            )
            .await
            .unwrap()
            .data;
        v.sort_by_key(|r| r.created_at);
        v
    }
}

#[tokio::test]
async fn each_turn_and_each_refusal_leaves_an_audit_record_of_who_and_what() {
    let fx = fixture_on(SeaOrmStore::in_memory().await.unwrap(), Some(2)).await;
    fx.bot_with_model("broken", "error-500").await;
    let from = |ip: &str| Caller::Key {
        principal: fx.key.clone(),
        ip: Some(ip.into()),
    };
    let r = fx
        .chat
        .chat(
            from("203.0.113.7"),
            ChatInput {
                request_id: Some("req-1".into()),
                ..input("echo", "hello there")
            },
        )
        .await
        .unwrap();
    let done = fx.audit("chat.completed").await;
    assert_eq!(done.len(), 1);
    let a = &done[0];
    assert_eq!(a.ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(a.request_id.as_deref(), Some("req-1"));
    assert_eq!(a.actor.kind, ActorKind::ApiKey);
    assert_eq!(a.actor.id, Some(fx.key.key.id.to_string()));
    assert_eq!(a.resource_type.as_deref(), Some("message"));
    assert_eq!(a.resource_id, Some(r.message_id.to_string()));
    assert_eq!(a.metadata["bot_id"], fx.bot.id.to_string());
    assert_eq!(a.metadata["total_tokens"], r.usage.total_tokens);
    assert_eq!(a.metadata["provider"], "mock");
    assert_eq!(
        a.metadata.get("cost_micros").and_then(|c| c.as_i64()),
        (r.cost.amount_micros > 0).then_some(r.cost.amount_micros),
        "a cost only when there is one"
    );
    assert!(a.metadata.get("code").is_none());

    // A failed turn: its code, and neither tokens nor provider.
    let e = fx
        .chat
        .chat(from("198.51.100.1"), input("broken", "are you there?"))
        .await
        .unwrap_err();
    let failed = fx.audit("chat.failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].ip.as_deref(), Some("198.51.100.1"));
    assert_eq!(failed[0].metadata["code"], e.code());
    assert!(failed[0].metadata.get("total_tokens").is_none());
    assert!(failed[0].metadata.get("provider").is_none());

    // The tenant's limit of 2 a minute is reached: the refusal is audited
    // with its scope and wait.
    let e = fx
        .chat
        .chat(from("192.0.2.9"), input("echo", "again"))
        .await
        .unwrap_err();
    let wait = e.retry_after().expect("a rate limit says when to retry");
    let refused = fx.audit("rate_limit.rejected").await;
    assert_eq!(refused.len(), 1);
    let a = &refused[0];
    assert_eq!(a.ip.as_deref(), Some("192.0.2.9"));
    assert_eq!(a.actor.id, Some(fx.key.key.id.to_string()));
    assert_eq!(a.metadata["scope"], "tenant");
    assert_eq!(a.metadata["retry_after_ms"], wait.as_millis() as u64);
}

#[tokio::test]
async fn a_user_id_of_256_characters_is_accepted() {
    let fx = fixture().await;
    let r = fx
        .chat
        .chat(
            as_key(&fx.key),
            ChatInput {
                user_id: Some("u".repeat(256)),
                ..input("echo", "hi")
            },
        )
        .await
        .unwrap();
    let c = fx
        .store
        .get_conversation(fx.tenant.id, r.conversation_id)
        .await
        .unwrap();
    assert_eq!(c.end_user_id, Some("u".repeat(256)));
}

// ---- client-held conversations (the OpenAI-compatible API) ----

mod completions {
    use super::*;
    use chatcore::engine::{CompletionInput, TurnOptions};
    use chatcore::provider::{ChatMessage, ImagePart, ToolDefinition};

    fn weather() -> ToolDefinition {
        ToolDefinition {
            name: "get_weather".into(),
            description: Some("The weather in a city".into()),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"]
            }),
        }
    }

    fn sent(messages: Vec<ChatMessage>) -> CompletionInput {
        CompletionInput {
            bot: "echo".into(),
            messages,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_client_held_turn_stores_what_came_after_the_last_answer() {
        let fx = fixture().await;
        // The model calls the tool; the client's image is read (the mock
        // provider reads images, and calls tools).
        let question = ChatMessage::user("What is the weather in Paris?")
            .with_image(ImagePart::url("https://example.com/sky.png"));
        let first = fx
            .chat
            .complete(
                as_key(&fx.key),
                CompletionInput {
                    options: TurnOptions {
                        tools: vec![weather()],
                        ..Default::default()
                    },
                    ..sent(vec![question.clone()])
                },
            )
            .await
            .unwrap();
        assert_eq!(first.finish_reason, "tool_calls");
        assert_eq!(first.tool_calls.len(), 1);
        assert_eq!(first.tool_calls[0].name, "get_weather");
        let c = fx
            .store
            .get_conversation(fx.tenant.id, first.conversation_id)
            .await
            .unwrap();
        assert_eq!(c.title.as_deref(), Some("What is the weather in Paris?"));
        let msgs = fx.messages(first.conversation_id).await;
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert_eq!(
            (msgs[0].role, msgs[0].content.as_str()),
            (Role::User, "What is the weather in Paris?")
        );
        assert_eq!(msgs[1].tool_calls, first.tool_calls);

        // The client sends the tool's result: that (and the answer) is the
        // turn; what it sent before the last answer is stored already.
        let call = first.tool_calls[0].clone();
        let second = fx
            .chat
            .complete(
                as_key(&fx.key),
                CompletionInput {
                    conversation_id: Some(first.conversation_id.to_string()),
                    ..sent(vec![
                        question,
                        ChatMessage::assistant_tool_calls("", vec![call.clone()]),
                        ChatMessage::tool_result(call.id.clone(), "sunny, 21 degrees"),
                    ])
                },
            )
            .await
            .unwrap();
        assert_eq!(second.conversation_id, first.conversation_id);
        assert_eq!(second.content, "The tools said: sunny, 21 degrees");
        let msgs = fx.messages(first.conversation_id).await;
        let got: Vec<_> = msgs
            .iter()
            .map(|m| (m.role, m.content.as_str(), m.tool_call_id.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Role::User, "What is the weather in Paris?", None),
                (Role::Assistant, "", None),
                (Role::Tool, "sunny, 21 degrees", Some(call.id.as_str())),
                (Role::Assistant, "The tools said: sunny, 21 degrees", None),
            ]
        );

        // A later question after an answered tool round: only the new
        // question is stored, not the old tool result again.
        let third = fx
            .chat
            .complete(
                as_key(&fx.key),
                CompletionInput {
                    conversation_id: Some(first.conversation_id.to_string()),
                    ..sent(vec![
                        ChatMessage::user("What is the weather in Paris?"),
                        ChatMessage::assistant_tool_calls("", vec![call.clone()]),
                        ChatMessage::tool_result(call.id.clone(), "sunny, 21 degrees"),
                        ChatMessage::assistant("The tools said: sunny, 21 degrees"),
                        ChatMessage::user("And in Lyon?"),
                    ])
                },
            )
            .await
            .unwrap();
        assert_eq!(third.content, "And in Lyon?", "the echo model");
        let msgs = fx.messages(first.conversation_id).await;
        assert_eq!(msgs.len(), 6);
        assert_eq!(
            (msgs[4].role, msgs[4].content.as_str()),
            (Role::User, "And in Lyon?")
        );
    }

    #[tokio::test]
    async fn a_conversation_started_from_tool_results_is_titled_by_the_last_question() {
        let fx = fixture().await;
        let r = fx
            .chat
            .complete(
                as_key(&fx.key),
                sent(vec![
                    ChatMessage::user("first question"),
                    ChatMessage::assistant("first answer"),
                    ChatMessage::user("Which city is warmer?"),
                    ChatMessage::assistant_tool_calls(
                        "",
                        vec![chatcore::provider::ToolCall {
                            id: "call_1".into(),
                            name: "get_weather".into(),
                            arguments: "{}".into(),
                        }],
                    ),
                    ChatMessage::tool_result("call_1", "Lyon"),
                ]),
            )
            .await
            .unwrap();
        let c = fx
            .store
            .get_conversation(fx.tenant.id, r.conversation_id)
            .await
            .unwrap();
        assert_eq!(c.title.as_deref(), Some("Which city is warmer?"));
        let msgs = fx.messages(r.conversation_id).await;
        assert_eq!(msgs.len(), 2, "the tool result and the answer: {msgs:?}");
        assert_eq!(msgs[0].role, Role::Tool);
    }

    #[tokio::test]
    async fn a_client_held_turn_refuses_bad_input_before_anything_is_stored() {
        let fx = fixture().await;
        let max = ChatSettings::default().max_message_chars;
        let cases = [
            (
                CompletionInput {
                    bot: "  ".into(),
                    ..sent(vec![ChatMessage::user("hi")])
                },
                "model",
            ),
            (
                CompletionInput {
                    user_id: Some(String::new()),
                    ..sent(vec![ChatMessage::user("hi")])
                },
                "user",
            ),
            (
                CompletionInput {
                    user_id: Some("u".repeat(257)),
                    ..sent(vec![ChatMessage::user("hi")])
                },
                "user",
            ),
            (
                CompletionInput {
                    conversation_id: Some("nope".into()),
                    ..sent(vec![ChatMessage::user("hi")])
                },
                "X-Chatcore-Conversation-Id",
            ),
            (
                sent(vec![
                    ChatMessage::user("hi"),
                    ChatMessage::assistant("hello"),
                ]),
                "messages: the conversation must end",
            ),
            (sent(vec![]), "messages: the conversation must end"),
            (
                sent(vec![ChatMessage::user("x".repeat(max + 1))]),
                "messages: the last user message is longer",
            ),
        ];
        for (i, field) in cases {
            assert_invalid(field, fx.chat.complete(as_key(&fx.key), i).await);
        }
        assert_eq!(fx.conversations().await, 0);
        // The limits themselves are accepted.
        fx.chat
            .complete(
                as_key(&fx.key),
                CompletionInput {
                    user_id: Some("u".repeat(256)),
                    ..sent(vec![ChatMessage::user("y".repeat(max))])
                },
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn models_are_the_active_bots_the_key_may_use() {
        let fx = fixture().await;
        let second = fx.bot_with_model("second", "echo").await;
        let off = fx.bot_with_model("off", "echo").await;
        fx.store
            .update_bot(
                fx.tenant.id,
                off.id,
                BotPatch {
                    status: Some(BotStatus::Disabled),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let guarded = fx.bot_with_model("guarded", "echo").await;
        let slugs = |bots: Vec<Bot>| bots.into_iter().map(|b| b.slug).collect::<Vec<_>>();
        assert_eq!(
            slugs(fx.chat.models(&fx.key).await.unwrap()),
            ["echo", "second", "guarded"]
        );
        // A scope naming other keys hides the bot from this one.
        fx.store
            .create_scope(
                fx.tenant.id,
                NewScope {
                    bot_id: guarded.id,
                    kind: "api_keys".into(),
                    config: serde_json::json!([ApiKeyId::new().to_string()]),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            slugs(fx.chat.models(&fx.key).await.unwrap()),
            ["echo", "second"]
        );
        // A key restricted to one bot sees that one.
        let only = key(
            &*fx.store,
            &fx.chat,
            fx.tenant.id,
            vec![Permission::Chat],
            vec![second.id],
            None,
        )
        .await;
        assert_eq!(slugs(fx.chat.models(&only).await.unwrap()), ["second"]);
        // One model, by slug or id; one the key may not use is not found.
        assert_eq!(fx.chat.model(&only, "second").await.unwrap().id, second.id);
        assert_eq!(
            fx.chat
                .model(&only, &second.id.to_string())
                .await
                .unwrap()
                .id,
            second.id
        );
        assert!(matches!(
            fx.chat.model(&only, "echo").await,
            Err(ChatError::NotFound("model"))
        ));
        assert!(matches!(
            fx.chat.model(&fx.key, "off").await,
            Err(ChatError::NotFound("model"))
        ));
        // Without the chat permission, none.
        let read = key(
            &*fx.store,
            &fx.chat,
            fx.tenant.id,
            vec![Permission::Read],
            vec![],
            None,
        )
        .await;
        assert!(matches!(
            fx.chat.models(&read).await,
            Err(ChatError::Forbidden(_))
        ));
    }
}

// ---- public visitors ----

#[tokio::test]
async fn a_widget_visitor_is_one_visitor_for_its_own_bot_whatever_its_ip() {
    use chatcore::engine::Visitor;
    let fx = fixture().await;
    let a = fx.bot_with_model("public-a", "echo").await;
    let b = fx.bot_with_model("public-b", "echo").await;
    // One turn a minute per visitor on bot a.
    fx.store
        .create_scope(
            fx.tenant.id,
            NewScope {
                bot_id: a.id,
                kind: "visitor_rate_limit".into(),
                config: serde_json::json!({"rpm": 1}),
            },
        )
        .await
        .unwrap();
    let visitor = |bot: BotId, id: &str, ip: &str| Caller::Public {
        ip: Some(ip.into()),
        origin: None,
        visitor: Some(Visitor { bot, id: id.into() }),
    };
    // A token issued for bot b is no good on bot a.
    assert!(matches!(
        fx.chat.chat(visitor(b.id, "v-1", "10.0.0.1"), input("public-a", "hi")).await,
        Err(ChatError::Unauthorized(m)) if m.contains("another bot")
    ));
    fx.chat
        .chat(visitor(a.id, "v-1", "10.0.0.1"), input("public-a", "hi"))
        .await
        .unwrap();
    // The same visitor from another address is still the same visitor...
    assert!(matches!(
        fx.chat
            .chat(visitor(a.id, "v-1", "10.0.0.2"), input("public-a", "hi"))
            .await,
        Err(ChatError::RateLimited {
            scope: "visitor",
            ..
        })
    ));
    // ... and another visitor behind the same address is another.
    fx.chat
        .chat(visitor(a.id, "v-2", "10.0.0.1"), input("public-a", "hi"))
        .await
        .unwrap();
    // Without a token, the address is the visitor.
    let anon = |ip: &str| Caller::Public {
        ip: Some(ip.into()),
        origin: None,
        visitor: None,
    };
    fx.chat
        .chat(anon("10.0.0.3"), input("public-a", "hi"))
        .await
        .unwrap();
    assert!(matches!(
        fx.chat
            .chat(anon("10.0.0.3"), input("public-a", "hi"))
            .await,
        Err(ChatError::RateLimited {
            scope: "visitor",
            ..
        })
    ));
    fx.chat
        .chat(anon("10.0.0.4"), input("public-a", "hi"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_chat_service_debugs_as_its_settings() {
    let fx = fixture().await;
    let d = format!("{:?}", fx.chat);
    assert!(d.starts_with("ChatService"), "{d}");
    assert!(d.contains("history_limit: 50"), "{d}");
}

// ---- what the engine was built with ----

#[tokio::test]
async fn the_engine_reports_the_settings_providers_and_egress_it_was_built_with() {
    use chatcore::provider::{EgressPolicy, Provider, mock::MockProvider};
    let store = Arc::new(SeaOrmStore::in_memory().await.unwrap());
    let egress = EgressPolicy::parse("10.0.0.0/8, llm.internal:8080").unwrap();
    assert_ne!(egress, EgressPolicy::default());
    let chat = Chatcore::builder()
        .store(store)
        .keyring(Keyring::from_base64(&Keyring::generate_base64(), &[]).unwrap())
        .settings(ChatSettings {
            history_limit: 7,
            rag_top_k: 3,
            egress: egress.clone(),
            ..Default::default()
        })
        .provider("in-house", |_| {
            Ok(Arc::new(MockProvider::new()) as Arc<dyn Provider>)
        })
        .build()
        .await
        .unwrap()
        .chat;
    assert_eq!(chat.settings().history_limit, 7);
    assert_eq!(chat.settings().rag_top_k, 3);
    assert_eq!(chat.providers().egress(), &egress);
    let registry = chat.providers().registry();
    assert!(registry.contains("in-house"), "{registry:?}");
    assert!(
        registry.contains("mock"),
        "the built-ins stay: {registry:?}"
    );
    let d = format!("{:?}", chat.providers());
    assert!(d.starts_with("Providers"), "{d}");
    assert!(d.contains("in-house"), "{d}");
}

#[tokio::test]
async fn a_revoked_key_passes_until_its_cache_entry_is_dropped() {
    let store = Arc::new(SeaOrmStore::in_memory().await.unwrap());
    let chat = service(store.clone(), long_cache()).await;
    let seeded = Seed::new("acme").create(&*store).await.unwrap();
    chat.authenticate(Some(&seeded.secret), None, None)
        .await
        .unwrap();
    store
        .revoke_api_key(seeded.tenant.id, seeded.key.id)
        .await
        .unwrap();
    // Verified keys are cached for an hour: the revoked key still passes...
    chat.authenticate(Some(&seeded.secret), None, None)
        .await
        .unwrap();
    // ... until the key is invalidated.
    chat.invalidate_key(seeded.key.id);
    assert!(matches!(
        chat.authenticate(Some(&seeded.secret), None, None).await,
        Err(ChatError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn a_keyed_turn_records_the_keys_last_use() {
    let fx = fixture().await;
    let key = || fx.store.get_api_key(fx.tenant.id, fx.key.key.id);
    assert_eq!(key().await.unwrap().last_used_at, None);
    fx.ask("echo", "hi").await;
    // Recorded off the request path.
    let mut used = None;
    for _ in 0..200 {
        used = key().await.unwrap().last_used_at;
        if used.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(used.is_some(), "the key's last use is recorded");
}

// ---- public bots that are off ----

#[tokio::test]
async fn a_disabled_public_bot_is_not_found_by_visitors() {
    let fx = fixture().await;
    let b = fx.bot_with_model("public-off", "echo").await;
    let visitor = || Caller::Public {
        ip: Some("192.0.2.1".into()),
        origin: None,
        visitor: None,
    };
    fx.chat
        .chat(visitor(), input("public-off", "hi"))
        .await
        .unwrap();
    fx.store
        .update_bot(
            fx.tenant.id,
            b.id,
            BotPatch {
                status: Some(BotStatus::Disabled),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    fx.chat.invalidate_tenant(fx.tenant.id);
    assert!(matches!(
        fx.chat.chat(visitor(), input("public-off", "hi")).await,
        Err(ChatError::NotFound("bot"))
    ));
    // Its tenant's keys are told why.
    assert!(matches!(
        fx.chat.chat(as_key(&fx.key), input("public-off", "hi")).await,
        Err(ChatError::Forbidden(m)) if m.contains("disabled")
    ));
}

// ---- prices, costs and budgets ----

/// 1 micro-unit per output token, input free: a turn costs its completion
/// tokens, and its worst case is its `max_tokens`.
const PER_OUTPUT_TOKEN: chatcore::pricing::Price = chatcore::pricing::Price {
    input_per_mtok: 0,
    cached_input_per_mtok: 0,
    output_per_mtok: 1_000_000,
};

impl Fx {
    /// Prices `model` of the seeded provider at [`PER_OUTPUT_TOKEN`].
    async fn price(&self, model: &str) {
        fixtures::apply(
            &*self.store,
            Change::PutPrice(
                self.tenant.id,
                NewPrice {
                    provider_id: self.provider.id,
                    model: model.into(),
                    price: PER_OUTPUT_TOKEN,
                },
            ),
        )
        .await
        .unwrap();
        self.chat.invalidate_tenant(self.tenant.id);
    }

    /// A daily budget of the tenant.
    async fn day_budget(&self, micros: i64) {
        fixtures::apply(
            &*self.store,
            Change::CreateBudget(
                self.tenant.id,
                NewBudget {
                    scope: BudgetScope::Tenant,
                    api_key_id: None,
                    bot_id: None,
                    end_user_id: None,
                    period: BudgetPeriod::Day,
                    amount_micros: micros,
                },
            ),
        )
        .await
        .unwrap();
        self.chat.invalidate_tenant(self.tenant.id);
    }

    async fn message(&self, id: MessageId) -> Message {
        self.store.flush().await.unwrap();
        self.store.get_message(self.tenant.id, id).await.unwrap()
    }
}

#[tokio::test]
async fn a_priced_turn_replies_stores_and_audits_its_cost() {
    let fx = fixture().await;
    fx.price("echo").await;
    // The mock counts words: three completion tokens, three micro-units.
    let r = fx.ask("echo", "one two three").await;
    assert_eq!(r.usage.completion_tokens, 3);
    assert_eq!(
        (r.cost.amount_micros, r.cost.currency, r.cost.priced),
        (3, "USD", true)
    );
    let stored = fx.message(r.message_id).await.cost.unwrap();
    assert_eq!((stored.micros, stored.priced), (3, true));
    let done = fx.audit("chat.completed").await;
    assert_eq!(done[0].metadata["cost_micros"], 3);

    // A stream's end says the same.
    let events = collect(
        fx.chat
            .chat_stream(as_key(&fx.key), input("echo", "four five"))
            .await
            .unwrap(),
    )
    .await;
    let Some(TurnEvent::Done(end)) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(
        (end.cost.amount_micros, end.cost.currency, end.cost.priced),
        (2, "USD", true)
    );
}

#[tokio::test]
async fn a_budget_without_room_for_the_worst_case_refuses_the_turn() {
    let fx = fixture().await;
    fx.price("echo").await;
    // Room for 50 output tokens; the bot may write up to 100.
    fx.day_budget(50).await;
    let capped = |max_tokens| NewBot {
        max_tokens: Some(max_tokens),
        ..fixtures::new_bot(fx.provider.id, &format!("capped-{max_tokens}"), "echo")
    };
    fx.store
        .create_bot(fx.tenant.id, capped(100))
        .await
        .unwrap();
    fx.store.create_bot(fx.tenant.id, capped(40)).await.unwrap();
    match fx
        .chat
        .chat(as_key(&fx.key), input("capped-100", "hi"))
        .await
    {
        Err(ChatError::BudgetExceeded { scope, period, .. }) => {
            assert_eq!((scope, period), ("tenant", "day"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.conversations().await, 0, "a refused turn stores nothing");
    // A bot that may write 40 fits.
    fx.ask("capped-40", "hi").await;
}

#[tokio::test]
async fn budgets_set_before_the_first_turn_are_used_and_later_ones_ignored() {
    use chatcore::budget::{BudgetService, BudgetSettings, LocalLedger};
    let fx = fixture().await;
    let budgets = |default_max_tokens| {
        Arc::new(BudgetService::new(
            fx.store.clone(),
            Arc::new(LocalLedger::new()),
            BudgetSettings {
                default_max_tokens,
                ..Default::default()
            },
        ))
    };
    // The bot sets no `max_tokens`: its worst case is the budgets' default
    // cap, 4096 tokens unless set otherwise.
    fx.chat.set_budgets(budgets(20));
    fx.price("echo").await;
    fx.day_budget(50).await;
    fx.ask("echo", "hi").await;
    fx.chat.set_budgets(budgets(4096));
    fx.chat
        .chat(as_key(&fx.key), input("echo", "hi"))
        .await
        .expect("the budgets set first stay");
    // The default cap of a service whose budgets were not set.
    let other = fixture().await;
    other.price("echo").await;
    other.day_budget(50).await;
    assert!(matches!(
        other
            .chat
            .chat(as_key(&other.key), input("echo", "hi"))
            .await,
        Err(ChatError::BudgetExceeded { .. })
    ));
}

// ---- retrieved context ----

mod retrieval {
    use super::*;
    use chatcore::engine::{ContextRetriever, Source};
    use std::sync::Mutex;

    /// One retrieval: the tenant, its datasets, the query and `top_k`.
    type Asked = (TenantId, Vec<DatasetId>, String, usize);

    /// Answers every query with one source, and remembers what it was asked.
    struct Library {
        source: Source,
        asked: Mutex<Vec<Asked>>,
    }

    #[async_trait::async_trait]
    impl ContextRetriever for Library {
        async fn retrieve(
            &self,
            tenant: TenantId,
            datasets: &[DatasetId],
            query: &str,
            top_k: usize,
        ) -> Result<Vec<Source>, ChatError> {
            self.asked
                .lock()
                .unwrap()
                .push((tenant, datasets.to_vec(), query.to_string(), top_k));
            Ok(vec![self.source.clone()])
        }
    }

    #[tokio::test]
    async fn a_bot_with_datasets_answers_with_the_retrieved_sources() {
        let store = Arc::new(SeaOrmStore::in_memory().await.unwrap());
        let library = Arc::new(Library {
            source: Source {
                document_id: DocumentId::new(),
                title: "Handbook".into(),
                chunk_id: ChunkId::new(),
                score: 0.9,
                text: "Refunds take five days.".into(),
                snippet: "Refunds take five days.".into(),
            },
            asked: Mutex::new(Vec::new()),
        });
        let chat = Chatcore::builder()
            .store(store.clone())
            .keyring(Keyring::from_base64(&Keyring::generate_base64(), &[]).unwrap())
            .settings(ChatSettings {
                rag_top_k: 4,
                ..Default::default()
            })
            .retriever(library.clone())
            .build()
            .await
            .unwrap()
            .chat;
        let seeded = Seed::new("acme")
            .dataset(384)
            .bot_slug("docs")
            .create(&*store)
            .await
            .unwrap();
        let key = chat
            .authenticate(Some(&seeded.secret), None, None)
            .await
            .unwrap();
        let r = chat
            .chat(as_key(&key), input("docs", "how long do refunds take?"))
            .await
            .unwrap();
        assert_eq!(r.sources, vec![library.source.clone()]);
        let dataset = seeded.dataset.unwrap().id;
        assert_eq!(
            *library.asked.lock().unwrap(),
            vec![(
                seeded.tenant.id,
                vec![dataset],
                "how long do refunds take?".to_string(),
                4
            )]
        );
        store.flush().await.unwrap();
        let m = store
            .get_message(seeded.tenant.id, r.message_id)
            .await
            .unwrap();
        assert_eq!(m.source_chunk_ids, vec![library.source.chunk_id]);
    }
}

// ---- what a turn's span says ----

mod spans {
    use super::*;
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

    /// The fields recorded on `chat` spans, by span.
    #[derive(Clone, Default)]
    struct ChatSpans(Arc<Mutex<HashMap<u64, BTreeMap<String, String>>>>);

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().into(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().into(), value.into());
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for ChatSpans {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
            if attrs.metadata().name() == "chat" {
                let mut fields = BTreeMap::new();
                attrs.record(&mut Fields(&mut fields));
                self.0.lock().unwrap().insert(id.into_u64(), fields);
            }
        }
        fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
            if let Some(fields) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
                values.record(&mut Fields(fields));
            }
        }
    }

    #[tokio::test]
    async fn a_turns_span_names_who_answered_and_what_it_took() {
        let fx = fixture().await;
        // A first turn registers the span's callsite; the subscriber set
        // after it, the callsites' interest is rebuilt with it (tests on
        // other threads may have registered the callsite while none was).
        fx.ask("echo", "warm up").await;
        let spans = ChatSpans::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
        tracing::callsite::rebuild_interest_cache();
        let r = fx.ask("echo", "hello there").await;
        let all: Vec<_> = spans.0.lock().unwrap().values().cloned().collect();
        assert_eq!(all.len(), 1, "{all:?}");
        let s = &all[0];
        let field = |k: &str| s.get(k).map(String::as_str);
        let tenant = fx.tenant.id.to_string();
        let bot = fx.bot.id.to_string();
        let total = r.usage.total_tokens.to_string();
        assert_eq!(field("tenant"), Some(tenant.as_str()), "{s:?}");
        assert_eq!(field("bot"), Some(bot.as_str()), "{s:?}");
        assert_eq!(field("provider"), Some("mock"), "{s:?}");
        assert_eq!(field("model"), Some("echo"), "{s:?}");
        assert_eq!(field("status"), Some("complete"), "{s:?}");
        assert_eq!(field("total_tokens"), Some(total.as_str()), "{s:?}");
    }
}

// ---- closing the turns of a dead instance, in batches ----

#[tokio::test]
async fn more_orphans_than_one_batch_are_all_closed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("o.db").display());
    let named = || StoreOptions {
        instance_name: Some("web-1".into()),
        ..Default::default()
    };
    let first = SeaOrmStore::open(&url, named()).await.unwrap();
    let fx = fixture_on(first.clone(), None).await;
    // One batch is 500: 501 turns left pending by the first run.
    let mut conversation = TurnConversation::New(NewConversation {
        bot_id: fx.bot.id,
        end_user_id: None,
        title: None,
        channel: Channel::Api,
    });
    for i in 0..501 {
        let (c, _u, _pending) = first
            .begin_turn(
                fx.tenant.id,
                NewTurn {
                    conversation,
                    user_content: format!("question {i}"),
                    tool_results: Vec::new(),
                    api_key_id: None,
                    provider: Some("mock".into()),
                    model: Some("echo".into()),
                },
            )
            .await
            .unwrap();
        conversation = TurnConversation::Existing(c.id);
    }
    first.flush().await.unwrap();
    let second = SeaOrmStore::open(&url, named()).await.unwrap();
    let chat = service(Arc::new(second.clone()), ChatSettings::default()).await;
    assert_eq!(recovered(&chat).await, 501);
    assert!(second.orphaned_turns(10).await.unwrap().is_empty());
}

// ---- providers that bend the rules ----

mod scripted {
    use super::*;
    use chatcore::engine::{CompletionInput, TurnOptions};
    use chatcore::provider::mock::MockProvider;
    use chatcore::provider::tokens::count_tokens;
    use chatcore::provider::{
        Capabilities, ChatEvent, ChatMessage, ChatRequest, ChatResponse, ChatStream, ImagePart,
        Provider, ProviderError, ToolDefinition, Usage,
    };
    use futures::StreamExt as _;

    /// The mock, with a twist chosen by the model asked for: `unmetered`
    /// answers like `echo` but reports no usage (as some OpenAI-compatible
    /// servers do); `cut-longer`, `cut-shorter` and `cut-other` stream
    /// `Once upon`, then break, saying they had written more, less, or
    /// other text of the same length. A provider config whose default
    /// model is `text-only` reads no images and calls no tools.
    #[derive(Debug)]
    struct Scripted {
        mock: MockProvider,
        text_only: bool,
    }

    #[async_trait::async_trait]
    impl Provider for Scripted {
        fn kind(&self) -> &str {
            "mock"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                images: !self.text_only,
                tools: !self.text_only,
                ..self.mock.capabilities()
            }
        }
        fn default_model(&self) -> Option<&str> {
            self.mock.default_model()
        }
        async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
            if request.model.as_deref() != Some("unmetered") {
                return self.mock.complete(request).await;
            }
            let echo = ChatRequest {
                model: Some("echo".into()),
                ..request.clone()
            };
            let r = self.mock.complete(&echo).await?;
            Ok(ChatResponse {
                usage: Usage::default(),
                model: "unmetered".into(),
                ..r
            })
        }
        async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
            let said = match request.model.as_deref() {
                Some("cut-longer") => "Once upon a time",
                Some("cut-shorter") => "Once",
                Some("cut-other") => "Twice upo",
                _ => return self.mock.stream(request).await,
            };
            let events = vec![
                Ok(ChatEvent::Delta("Once upon".into())),
                Err(ProviderError::StreamInterrupted {
                    provider: "mock".into(),
                    partial: said.into(),
                    cause: None,
                }),
            ];
            Ok(futures::stream::iter(events).boxed())
        }
    }

    async fn scripted_fixture() -> Fx {
        let store = Arc::new(SeaOrmStore::in_memory().await.unwrap());
        let chat = Chatcore::builder()
            .store(store.clone())
            .keyring(Keyring::from_base64(&Keyring::generate_base64(), &[]).unwrap())
            .settings(short_cache())
            .provider("mock", |spec| {
                Ok(Arc::new(Scripted {
                    mock: MockProvider::from_spec(spec)?,
                    text_only: spec.default_model.as_deref() == Some("text-only"),
                }) as Arc<dyn Provider>)
            })
            .build()
            .await
            .unwrap()
            .chat;
        seeded_on(store, chat, None).await
    }

    fn weather() -> ToolDefinition {
        ToolDefinition {
            name: "get_weather".into(),
            description: None,
            parameters: serde_json::json!({
                "type": "object",
                "properties": {"city": {"type": "string"}}
            }),
        }
    }

    #[tokio::test]
    async fn a_provider_without_images_or_tools_is_sent_neither() {
        let fx = scripted_fixture().await;
        let p = fx
            .store
            .create_provider_config(
                fx.tenant.id,
                NewProviderConfig {
                    name: "text only".into(),
                    default_model: Some("text-only".into()),
                    ..fixtures::mock_provider()
                },
            )
            .await
            .unwrap();
        fx.store
            .create_bot(
                fx.tenant.id,
                NewBot {
                    model: None,
                    ..fixtures::new_bot(p.id, "plain", "text-only")
                },
            )
            .await
            .unwrap();
        let ask = |messages: Vec<ChatMessage>, tools: Vec<ToolDefinition>| CompletionInput {
            bot: "plain".into(),
            messages,
            options: TurnOptions {
                tools,
                ..Default::default()
            },
            ..Default::default()
        };
        let picture = ChatMessage::user("what is this?")
            .with_image(ImagePart::url("https://example.com/a.png"));
        assert_invalid(
            "messages[1].content",
            fx.chat
                .complete(
                    as_key(&fx.key),
                    ask(vec![ChatMessage::user("hello"), picture], vec![]),
                )
                .await,
        );
        assert_invalid(
            "tools",
            fx.chat
                .complete(
                    as_key(&fx.key),
                    ask(vec![ChatMessage::user("weather?")], vec![weather()]),
                )
                .await,
        );
        assert_eq!(fx.conversations().await, 0);
        // Text alone, without tools, is answered.
        fx.chat
            .complete(
                as_key(&fx.key),
                ask(vec![ChatMessage::user("hello")], vec![]),
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn usage_a_provider_does_not_report_is_estimated_from_the_answer() {
        let fx = scripted_fixture().await;
        fx.bot_with_model("unmetered", "unmetered").await;
        // Text.
        let r = fx.ask("unmetered", "tell me something").await;
        assert_eq!(r.content, "tell me something");
        let u = fx.message(r.message_id).await.usage.unwrap();
        assert!(u.estimated, "{u:?}");
        assert_eq!(
            u.completion_tokens as u32,
            count_tokens("unmetered", "tell me something")
        );
        assert!(u.prompt_tokens > 0);
        assert_eq!(u.total_tokens, u.prompt_tokens + u.completion_tokens);
        assert!(r.usage.estimated);
        assert_eq!(r.usage.total_tokens as i32, u.total_tokens);

        // Tool calls: their names and arguments are the completion.
        let r = fx
            .chat
            .complete(
                as_key(&fx.key),
                CompletionInput {
                    bot: "unmetered".into(),
                    messages: vec![ChatMessage::user("Weather in Paris?")],
                    options: TurnOptions {
                        tools: vec![weather()],
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(r.content, "");
        assert_eq!(r.tool_calls.len(), 1);
        let call = &r.tool_calls[0];
        let expected =
            count_tokens("unmetered", &call.name) + count_tokens("unmetered", &call.arguments);
        let u = fx.message(r.message_id).await.usage.unwrap();
        assert!(u.estimated, "{u:?}");
        assert_eq!(u.completion_tokens as u32, expected, "{call:?}");
        assert_eq!(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    }

    #[tokio::test]
    async fn a_broken_stream_keeps_the_longer_of_what_was_sent_and_what_the_provider_had() {
        let fx = scripted_fixture().await;
        for (model, stored) in [
            ("cut-longer", "Once upon a time"),
            ("cut-shorter", "Once upon"),
            ("cut-other", "Once upon"),
        ] {
            fx.bot_with_model(model, model).await;
            let events = collect(
                fx.chat
                    .chat_stream(as_key(&fx.key), input(model, "go"))
                    .await
                    .unwrap(),
            )
            .await;
            let TurnEvent::Start { message_id, .. } = &events[0] else {
                panic!("{events:?}")
            };
            assert!(
                matches!(events.last(), Some(TurnEvent::Error { code, .. }) if *code == "provider_error"),
                "{events:?}"
            );
            let m = fx.message(*message_id).await;
            assert_eq!(m.status, MessageStatus::Incomplete, "{model}");
            assert_eq!(m.content, stored, "{model}");
        }
    }
}

#[tokio::test]
async fn streamed_text_is_written_about_once_a_second_not_with_each_delta() {
    let fx = fixture().await;
    fx.bot_with_model("slowpoke", "slow-echo").await;
    let started = std::time::Instant::now();
    let mut rx = fx
        .chat
        .chat_stream(as_key(&fx.key), input("slowpoke", &"word ".repeat(10)))
        .await
        .unwrap();
    let Some(TurnEvent::Start { message_id, .. }) = rx.recv().await else {
        panic!()
    };
    let Some(TurnEvent::Delta(_)) = rx.recv().await else {
        panic!()
    };
    fx.store.flush().await.unwrap();
    let m = fx
        .store
        .get_message(fx.tenant.id, message_id)
        .await
        .unwrap();
    // Only conclusive if this process was not held up for a second.
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            (m.status, m.content.as_str()),
            (MessageStatus::Pending, ""),
            "nothing written within the first second"
        );
    }
    drop(rx);
}
