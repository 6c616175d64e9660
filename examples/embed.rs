//! Embedding chatcore in a Rust program: no HTTP, no server.
//!
//! It builds the services on SQLite in memory, creates a tenant, an offline
//! `mock` provider, a bot and an API key through the library's admin API
//! (as the server's management endpoints do), then holds a streamed
//! conversation of several turns in-process and reads the stored history
//! back.
//!
//! Run it with:
//!
//! ```sh
//! cargo run -p chatcore-examples --example embed
//! ```

use std::io::Write;

use chatcore::Chatcore;
use chatcore::admin::{
    AdminCaller, CreateApiKey, CreateBot, CreateProvider, CreateTenant, Operator,
};
use chatcore::domain::Permission;
use chatcore::engine::{Caller, ChatInput, TurnEvent};
use chatcore::store::PageRequest;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let core = Chatcore::builder()
        .store_url("sqlite::memory:")
        .build()
        .await?;

    // A tenant, and its admin acting in it: a mock provider, a bot that
    // echoes, and a key that may chat.
    let op = Operator::default();
    let tenant = core
        .admin
        .create_tenant(&op, CreateTenant::new("Embedded"))
        .await?
        .tenant;
    let admin = AdminCaller::operator_in(tenant.id, &op);
    let provider = CreateProvider {
        default_model: Some("echo".into()),
        ..CreateProvider::new("mock", "offline")
    };
    let provider = core
        .admin
        .create_provider(admin.writer()?, provider)
        .await?;
    let bot = CreateBot {
        slug: Some("parrot".into()),
        system_prompt: Some("Repeat what you hear.".into()),
        ..CreateBot::new("Parrot", provider.id)
    };
    let bot = core.admin.create_bot(admin.writer()?, bot).await?;
    let key = CreateApiKey::new("app", vec![Permission::Chat]);
    let key = core.admin.create_api_key(admin.writer()?, key).await?.key;
    let principal = core
        .chat
        .authenticate(Some(&key.into()), None, None)
        .await?;

    let mut conversation = None;
    for line in ["Hello there", "How are you today?", "Goodbye"] {
        println!("you: {line}");
        let caller = Caller::Key {
            principal: principal.clone(),
            ip: None,
        };
        let input = ChatInput {
            bot: bot.slug.clone(),
            message: line.into(),
            conversation_id: conversation.clone(),
            ..Default::default()
        };
        let mut events = core.chat.chat_stream(caller, input).await?;
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
    let history = core
        .admin
        .list_messages(&admin, id, PageRequest::first(50))
        .await?;
    println!(
        "\n{} messages stored in conversation {id} with bot {}",
        history.data.len(),
        bot.slug
    );
    assert_eq!(history.data.len(), 6, "three turns, two messages each");
    core.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}
