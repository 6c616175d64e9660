//! Where a chat turn's time goes: the engine in process (no HTTP in front),
//! its store writes alone, and the provider call alone, each timed over
//! many iterations. `cargo bench -p chatcore-benches --bench turn_breakdown`

use std::sync::Arc;
use std::time::Instant;

use chatcore::crypto::Keyring;
use chatcore::domain::*;
use chatcore::engine::{Caller, ChatInput};
use chatcore::provider::{ChatMessage, ChatRequest, ProviderRegistry, ProviderSpec};
use chatcore::store::*;
use chatcore::testkit::fixtures::Seed;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn time<F, Fut>(name: &str, n: usize, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let t = Instant::now();
    for _ in 0..n {
        f().await;
    }
    println!(
        "{name:<48} {:>9.1} µs per call",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
    let store: Arc<dyn Store> = Arc::new(
        SeaOrmStore::open(&url, StoreOptions::default())
            .await
            .unwrap(),
    );
    let ring = Keyring::from_raw([3; 32], &[]);
    let seeded = Seed::new("b")
        .bot_slug("b")
        .bot(|b| {
            b.system_prompt = "You are a benchmark.".into();
            b.context_tokens = 4000;
            b.is_public = true;
        })
        .create(&*store)
        .await
        .unwrap();
    let (t, bot) = (seeded.tenant, seeded.bot);
    let chat = chatcore::Chatcore::builder()
        .store(store.clone())
        .keyring(ring)
        .build()
        .await
        .unwrap()
        .chat;
    let principal = chat
        .authenticate(Some(&seeded.secret), None, None)
        .await
        .unwrap();
    let n = 500;
    let caller = Caller::Key {
        principal: principal.clone(),
        ip: None,
    };
    chat.chat(
        caller.clone(),
        ChatInput {
            bot: "b".into(),
            message: "warm".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    println!("chat turn breakdown, SQLite file (WAL), mock provider, {n} iterations each");
    time("ChatService::chat (new conversation)", n, || {
        let chat = chat.clone();
        let caller = caller.clone();
        async move {
            chat.chat(
                caller,
                ChatInput {
                    bot: "b".into(),
                    message: "hello there".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        }
    })
    .await;
    time("Authenticator (cached)", n, || {
        let chat = chat.clone();
        let k = seeded.secret.clone();
        async move {
            chat.authenticate(Some(&k), None, None).await.unwrap();
        }
    })
    .await;
    time("Store::begin_turn (new conversation)", n, || {
        let store = store.clone();
        async move {
            store
                .begin_turn(
                    t.id,
                    NewTurn {
                        conversation: TurnConversation::New(NewConversation {
                            bot_id: bot.id,
                            end_user_id: None,
                            title: None,
                            channel: Channel::Api,
                        }),
                        user_content: "hello".into(),
                        tool_results: Vec::new(),
                        api_key_id: None,
                        provider: None,
                        model: None,
                    },
                )
                .await
                .unwrap();
        }
    })
    .await;
    let (_, _, a) = store
        .begin_turn(
            t.id,
            NewTurn {
                conversation: TurnConversation::New(NewConversation {
                    bot_id: bot.id,
                    end_user_id: None,
                    title: None,
                    channel: Channel::Api,
                }),
                user_content: "hello".into(),
                tool_results: Vec::new(),
                api_key_id: None,
                provider: None,
                model: None,
            },
        )
        .await
        .unwrap();
    time("Store::finish_message", n, || {
        let store = store.clone();
        async move {
            store
                .finish_message(
                    t.id,
                    a.id,
                    MessageCompletion {
                        content: "x".into(),
                        status: Some(MessageStatus::Complete),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
    })
    .await;
    time("Store::get_bot (a read)", n, || {
        let store = store.clone();
        async move {
            store.get_bot(t.id, bot.id).await.unwrap();
        }
    })
    .await;
    let provider = ProviderRegistry::with_builtins()
        .build(&ProviderSpec::new("mock").with_default_model("echo"))
        .unwrap();
    let req = ChatRequest::new(vec![
        ChatMessage::system("You are a benchmark."),
        ChatMessage::user("hello there"),
    ]);
    time("mock Provider::complete", n, || {
        let provider = provider.clone();
        let req = req.clone();
        async move {
            provider.complete(&req).await.unwrap();
        }
    })
    .await;
    time("count_tokens (short prompt)", n, || async {
        std::hint::black_box(chatcore::provider::tokens::count_tokens(
            "gpt-4o-mini",
            "You are a benchmark. hello there",
        ));
    })
    .await;
}
