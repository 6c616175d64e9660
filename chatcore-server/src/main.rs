//! The `chatcore-server` binary: argument parsing and logging, then the
//! library does the rest.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use chatcore_server::config::Config;
use chatcore_server::{App, run};

/// chatcore: a multi-tenant, multi-provider chatbot server.
///
/// Configuration comes from the environment (CHATCORE_DATABASE_URL,
/// CHATCORE_LISTEN, CHATCORE_MASTER_KEY, CHATCORE_OPERATOR_KEY,
/// CHATCORE_REDIS_URL, ...) and optionally a TOML file with the same keys.
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
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
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
        "    curl -s {listen}/v1/chat/public -H 'content-type: application/json' -d '{{\"bot_id\":\"{}\",\"message\":\"hello\"}}'",
        demo.bot.slug
    );
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
