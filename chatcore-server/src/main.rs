//! The `chatcore-server` binary: argument parsing and logging, then the
//! library does the rest.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chatcore::admin::{AdminCaller, AdminService, CreateApiKey, CreateTenant, Operator};
use chatcore::store::SeaOrmStore;

use clap::{Parser, Subcommand};

use chatcore_server::config::Config;
use chatcore_server::{App, run};

/// mimalloc instead of the system allocator: a chat turn allocates many
/// small, short-lived buffers on two threads, where glibc's malloc took
/// about a tenth of the server's CPU in the load benchmark's profile (and
/// fragments its arenas).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// chatcore: a multi-tenant, multi-provider chatbot server.
///
/// Configuration comes from the environment (CHATCORE_DATABASE_URL,
/// CHATCORE_LISTEN, CHATCORE_MASTER_KEY, CHATCORE_OPERATOR_KEY,
/// CHATCORE_REDIS_URL, ...) and optionally a TOML file with the same keys.
/// The management commands (tenant, key) work on the configured database
/// directly and need the same CHATCORE_DATABASE_URL and master key as the
/// server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML file with configuration keys (the environment wins over it).
    #[arg(long, global = true, env = "CHATCORE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate the database and serve HTTP (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check the database: schema version, foreign keys and orphaned rows,
    /// turns left pending by lost instances, usage against the messages.
    /// Prints each problem and exits non-zero if there is any.
    Check,
    /// Print the OpenAPI 3.1 document of the HTTP API (JSON) and exit.
    Openapi,
    /// Manage tenants directly in the database (no server needed).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage a tenant's API keys directly in the database.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its first admin API key (shown only once).
    ///
    /// Example: chatcore-server tenant create --name "Acme" --rpm 600
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// URL-safe slug (a-z, 0-9, '-'); derived from the name if omitted.
        #[arg(long)]
        slug: Option<String>,
        /// Requests per minute across the tenant (default: unlimited).
        #[arg(long)]
        rpm: Option<i32>,
        /// Tokens per minute across the tenant (default: unlimited).
        #[arg(long)]
        tpm: Option<i32>,
    },
    /// List tenants (id, slug, status, name).
    List {
        /// How many to show.
        #[arg(long, default_value_t = 200)]
        limit: u64,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an API key for a tenant and print it (shown only once).
    ///
    /// Example: chatcore-server key create --tenant acme --name widget --permission chat
    Create {
        /// The tenant, by id or slug.
        #[arg(long)]
        tenant: String,
        /// Display name of the key.
        #[arg(long)]
        name: String,
        /// A permission: chat, read or admin (repeat for several; default chat).
        #[arg(long = "permission", value_parser = ["chat", "read", "admin"])]
        permissions: Vec<String>,
    },
    /// Revoke an API key: it stops working (running servers notice within
    /// their key cache lifetime, 5 seconds by default).
    Revoke {
        /// The tenant, by id or slug.
        #[arg(long)]
        tenant: String,
        /// The key's id (see the key list in the API: GET /v1/api-keys).
        id: String,
    },
}

fn main() -> ExitCode {
    no_huge_pages();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main())
}

/// Turns off transparent huge pages for this process, before the runtime
/// allocates.
///
/// mimalloc asks for huge pages on its arenas, and the kernel then backs a
/// mostly empty arena with 2 MiB pages: in the wire benchmark at 64
/// concurrent the server's peak RSS was 98-104 MiB with them and 70-76 MiB
/// without (`MIMALLOC_ALLOW_THP=0`), at the same throughput. The flag is the
/// process's (`PR_SET_THP_DISABLE`), so it also holds for the C code that
/// allocates with mmap.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("warning: could not turn off transparent huge pages: {e}");
    }
}

async fn async_main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Openapi)) {
        println!(
            "{}",
            serde_json::to_string_pretty(chatcore_server::openapi::document())
                .expect("the document serializes")
        );
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = chatcore_server::telemetry::init(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => ExitCode::SUCCESS,
        Command::Tenant(c) => cli_result(tenant_command(config, c).await),
        Command::Key(c) => cli_result(key_command(config, c).await),
        Command::Check => check_command(&config).await,
        Command::Migrate => match App::build(config).await {
            Ok(_) => {
                println!("database migrated");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve => {
            let listen = config.listen;
            let mut config = config;
            if config.instance_name.is_none() {
                config.instance_name = Some(config.default_instance_name());
            }
            let app = match App::build(config).await {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match app.bootstrap_demo().await {
                Ok(Some(demo)) => print_demo(&demo, listen),
                Ok(None) => {}
                Err(e) => {
                    eprintln!("error: creating the demo tenant: {e}");
                    return ExitCode::FAILURE;
                }
            }
            let listener = match tokio::net::TcpListener::bind(listen).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: cannot listen on {listen}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(%listen, "chatcore listening");
            run(listener, app, shutdown_signal()).await;
            telemetry.shutdown();
            ExitCode::SUCCESS
        }
    }
}

/// Shown once, on first start: the admin key is not stored anywhere.
fn print_demo(demo: &chatcore::bootstrap::Demo, listen: std::net::SocketAddr) {
    use secrecy::ExposeSecret;
    println!();
    println!(
        "First start: created the demo tenant with a public bot \"{}\".",
        demo.bot.slug
    );
    println!("Its admin API key (shown only this once, keep it):");
    println!();
    println!("    {}", demo.admin_key.expose_secret());
    println!();
    println!("Chat with the bot:");
    println!();
    println!(
        "    curl -s {listen}/v1/chat/public -H 'content-type: application/json' -H 'origin: http://{listen}' -d '{{\"bot_id\":\"{}\",\"message\":\"hello\"}}'",
        demo.bot.slug
    );
    println!();
    println!("Or open http://{listen}/demo in a browser (the chat widget).");
    println!();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn cli_result(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `check`: read-only consistency checks of the configured database.
async fn check_command(config: &Config) -> ExitCode {
    let store = match SeaOrmStore::connect(&config.database_url, config.store_options()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot open the database: {e}");
            return ExitCode::FAILURE;
        }
    };
    match store.check().await {
        Ok(problems) if problems.is_empty() => {
            println!(
                "ok: schema up to date, foreign keys hold, no orphaned rows or pending turns, usage agrees with the messages"
            );
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            for p in &problems {
                println!("problem: {p}");
            }
            println!("{} problem(s) found", problems.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: the check could not run: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The management logic straight on the configured database.
async fn admin_service(config: &Config) -> Result<AdminService, String> {
    let keyring = chatcore_server::keys::keyring(config).map_err(|e| e.to_string())?;
    let store = SeaOrmStore::open(&config.database_url, config.store_options())
        .await
        .map_err(|e| format!("database: {e}"))?;
    Ok(AdminService::new(Arc::new(store), keyring))
}

fn cli_operator() -> Operator {
    Operator {
        via: Some("cli".into()),
        request_id: None,
        ip: None,
    }
}

async fn find_tenant(admin: &AdminService, r: &str) -> Result<chatcore::domain::Tenant, String> {
    let t = match r.parse::<chatcore::domain::TenantId>() {
        Ok(id) => admin.get_tenant(id).await,
        Err(_) => admin.get_tenant_by_slug(r).await,
    };
    t.map_err(|e| format!("tenant {r:?}: {e}"))
}

async fn tenant_command(config: Config, c: TenantCommand) -> Result<(), String> {
    let admin = admin_service(&config).await?;
    match c {
        TenantCommand::Create {
            name,
            slug,
            rpm,
            tpm,
        } => {
            let created = admin
                .create_tenant(
                    &cli_operator(),
                    CreateTenant {
                        name,
                        slug,
                        rate_limit_rpm: rpm,
                        rate_limit_tpm: tpm,
                        public_rate_limit_rpm: None,
                        features: None,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "created tenant {} ({})",
                created.tenant.slug, created.tenant.id
            );
            println!("admin API key (shown only this once, keep it):");
            println!();
            println!("    {}", created.admin_key);
            println!();
            Ok(())
        }
        TenantCommand::List { limit } => {
            let page = chatcore::admin::page_request(Some(limit.clamp(1, 200)), None)
                .map_err(|e| e.to_string())?;
            let list = admin.list_tenants(page).await.map_err(|e| e.to_string())?;
            println!("{:<36}  {:<24}  {:<9}  name", "id", "slug", "status");
            for t in list.data {
                println!("{:<36}  {:<24}  {:<9}  {}", t.id, t.slug, t.status, t.name);
            }
            Ok(())
        }
    }
}

async fn key_command(config: Config, c: KeyCommand) -> Result<(), String> {
    let admin = admin_service(&config).await?;
    match c {
        KeyCommand::Create {
            tenant,
            name,
            permissions,
        } => {
            let t = find_tenant(&admin, &tenant).await?;
            let permissions = if permissions.is_empty() {
                vec!["chat".to_string()]
            } else {
                permissions
            };
            let permissions = permissions
                .iter()
                .map(|p| p.parse::<chatcore::domain::Permission>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let caller = AdminCaller::operator_in(t.id, &cli_operator());
            let k = admin
                .create_api_key(
                    caller.writer().map_err(|e| e.to_string())?,
                    CreateApiKey {
                        name,
                        permissions,
                        bot_ids: None,
                        rate_limit_rpm: None,
                        expires_at: None,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            println!("created API key {} for tenant {}", k.api_key.id, t.slug);
            println!("the key (shown only this once, keep it):");
            println!();
            println!("    {}", k.key);
            println!();
            Ok(())
        }
        KeyCommand::Revoke { tenant, id } => {
            let t = find_tenant(&admin, &tenant).await?;
            let id = id
                .parse::<chatcore::domain::ApiKeyId>()
                .map_err(|e| e.to_string())?;
            let caller = AdminCaller::operator_in(t.id, &cli_operator());
            let k = admin
                .revoke_api_key(caller.writer().map_err(|e| e.to_string())?, id)
                .await
                .map_err(|e| e.to_string())?;
            println!("revoked API key {} ({})", k.id, k.prefix);
            Ok(())
        }
    }
}
