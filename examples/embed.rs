//! Embedding chatcore in a Rust program: no HTTP, no server.
//!
//! It opens SQLite in memory, creates a tenant, an offline `mock` provider,
//! a bot and an API key, then holds a streamed conversation of several
//! turns in-process and reads the stored history back.
//!
//! Run it with:
//!
//! ```sh
//! cargo run -p chatcore-examples --example embed
//! ```

use std::io::Write;
use std::sync::Arc;

use chatcore::audit::{AuditConfig, AuditWriter};
use chatcore::auth::generate_key;
use chatcore::crypto::Keyring;
use chatcore::domain::Permission;
use chatcore::engine::{Caller, ChatInput, ChatService, ChatSettings, TurnEvent};
use chatcore::provider::ProviderRegistry;
use chatcore::ratelimit::LocalRateLimiter;
use chatcore::store::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn Store> = Arc::new(SeaOrmStore::in_memory().await?);
    let keyring = Keyring::from_base64(&Keyring::generate_base64(), &[])?;

    // A tenant with a mock provider and a bot that echoes.
    let tenant = store
        .create_tenant(NewTenant {
            name: "Embedded".into(),
            slug: "embedded".into(),
            rate_limit_rpm: None,
            rate_limit_tpm: None,
            features: serde_json::json!({}),
            public_rate_limit_rpm: None,
        })
        .await?;
    let provider = store
        .create_provider_config(
            tenant.id,
            NewProviderConfig {
                provider: "mock".into(),
                name: "offline".into(),
                api_key: None,
                base_url: None,
                default_model: Some("echo".into()),
                enabled: true,
            },
        )
        .await?;
    let bot = store
        .create_bot(
            tenant.id,
            NewBot {
                name: "Parrot".into(),
                slug: "parrot".into(),
                system_prompt: "Repeat what you hear.".into(),
                provider_id: provider.id,
                model: Some("echo".into()),
                fallback_provider_id: None,
                temperature: None,
                max_tokens: None,
                context_tokens: 2000,
                is_public: false,
                dataset_ids: vec![],
            },
        )
        .await?;
    let key = generate_key();
    store
        .create_api_key(
            tenant.id,
            NewApiKey {
                name: "app".into(),
                prefix: key.prefix.clone(),
                secret_hash: key.hash,
                permissions: vec![Permission::Chat],
                bot_ids: vec![],
                rate_limit_rpm: None,
                expires_at: None,
            },
        )
        .await?;

    // The engine, with everything in process.
    let (audit, _audit_task) = AuditWriter::spawn(store.clone(), AuditConfig::default());
    let chat = Arc::new(ChatService::new(
        store.clone(),
        Arc::new(ProviderRegistry::with_builtins()),
        keyring,
        Arc::new(LocalRateLimiter::new()),
        audit,
        ChatSettings::default(),
    ));
    let principal = chat.authenticate(Some(&key.secret), None, None).await?;

    let mut conversation = None;
    for line in ["Hello there", "How are you today?", "Goodbye"] {
        println!("you: {line}");
        let caller = Caller::Key {
            principal: principal.clone(),
            ip: None,
        };
        let input = ChatInput {
            bot: "parrot".into(),
            message: line.into(),
            conversation_id: conversation.clone(),
            ..Default::default()
        };
        let mut events = chat.chat_stream(caller, input).await?;
        print!("bot: ");
        while let Some(ev) = events.recv().await {
            match ev {
                TurnEvent::Start {
                    conversation_id, ..
                } => conversation = Some(conversation_id.to_string()),
                TurnEvent::Delta(d) => {
                    print!("{d}");
                    std::io::stdout().flush()?;
                }
                TurnEvent::Done(done) => println!(
                    "   [{} tokens, {} ms]",
                    done.usage.total_tokens, done.response_time_ms
                ),
                TurnEvent::Error { code, message } => println!("\nerror {code}: {message}"),
                // `chat_stream` offers no tools: no call comes.
                TurnEvent::ToolCall(_) => {}
            }
        }
    }

    // Everything was stored.
    let id = conversation.expect("a conversation was started").parse()?;
    let history = store
        .list_messages(tenant.id, id, PageRequest::first(50))
        .await?;
    println!(
        "\n{} messages stored in conversation {id} with bot {}",
        history.data.len(),
        bot.slug
    );
    assert_eq!(history.data.len(), 6, "three turns, two messages each");
    chat.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}
