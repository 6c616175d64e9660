//! A plugin author's own server binary: the library's builder with their
//! provider registered, handed to `chatcore-server`'s `serve`.
//!
//! The provider is [`Shout`] (this folder's `lib.rs`), registered for the
//! catalog kind `openai_compatible`: every tenant provider configured with
//! that kind answers through it. The configuration is the server's own
//! (`CHATCORE_DATABASE_URL`, `CHATCORE_LISTEN`, ...). So that one request
//! can show it working, it creates a tenant with a bot on that provider and
//! a chat key, and prints one JSON line (`listen`, `bot`, `key`) before
//! serving until Ctrl-C.
//!
//! Run it, then chat with the printed key:
//!
//! ```sh
//! CHATCORE_DATABASE_URL=sqlite::memory: CHATCORE_LISTEN=127.0.0.1:8080 \
//!   cargo run -p chatcore-examples --example plugin_server
//! curl -s localhost:8080/v1/chat -H "authorization: Bearer $KEY" \
//!   -H 'content-type: application/json' -d '{"bot_id": "shouter", "message": "hello"}'
//! ```

use chatcore::admin::{
    AdminCaller, CreateApiKey, CreateBot, CreateProvider, CreateTenant, Operator,
};
use chatcore::domain::Permission;
use chatcore_examples::Shout;
use chatcore_server::config::Config;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(None)?;
    chatcore_server::telemetry::init(config.log_format);
    let core = chatcore_server::core_builder(&config)
        .await?
        .provider("openai_compatible", Shout::build)
        .build()
        .await?;

    // Something to chat with.
    let op = Operator::default();
    let tenant = core
        .admin
        .create_tenant(&op, CreateTenant::new("Plugin demo"))
        .await?
        .tenant;
    let admin = AdminCaller::operator_in(tenant.id, &op);
    let provider = CreateProvider::new("openai_compatible", "shout");
    let provider = core
        .admin
        .create_provider(admin.writer()?, provider)
        .await?;
    let bot = CreateBot {
        slug: Some("shouter".into()),
        ..CreateBot::new("Shouter", provider.id)
    };
    let bot = core.admin.create_bot(admin.writer()?, bot).await?;
    let key = CreateApiKey::new("demo", vec![Permission::Chat]);
    let key = core.admin.create_api_key(admin.writer()?, key).await?.key;

    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let listen = listener.local_addr()?;
    println!(
        "{}",
        serde_json::json!({"listen": listen.to_string(), "bot": bot.slug, "key": key})
    );
    chatcore_server::serve(listener, core, config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
