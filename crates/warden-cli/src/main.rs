//! The `warden` command line: the binary's edge, where errors become messages and exit codes.
//!
//! Subcommands: `gateway` runs the gateway, `check` validates a config, `demo` is the one-command quick
//! start, `policy explain` shows how statements would be judged, `sessions` reads what the gateway recorded,
//! `usage` sums what LLM requests used, `audit` verifies and exports the tamper-evident audit log,
//! `api-key new` mints a key and its config entry.
#![forbid(unsafe_code)]

mod admin_client;
mod approvals;
mod audit;
mod demo;
mod policy;
mod revoke;
mod sessions;
mod token;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: warden allocates on one thread and frees on another all the time (a
/// statement's record is made on its session's worker and freed by the state writer), which glibc handles slowly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use warden_config::{Config, ProcessEnvironment};

#[derive(Parser)]
#[command(name = "warden", version, about = "warden: a layer-7 access gateway for databases and APIs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Gateway {
        #[arg(long, short, env = "WARDEN_CONFIG", default_value = "warden.toml")]
        config: PathBuf,
    },
    /// Validate a config file and everything it points at; print each problem with file, line and field.
    Check {
        #[arg(long, short, env = "WARDEN_CONFIG", default_value = "warden.toml")]
        config: PathBuf,
    },
    /// Start a throwaway PostgreSQL with an example shop database and a gateway in front of it.
    Demo {
        /// Port for the gateway's PostgreSQL listener (0 picks a free one).
        #[arg(long, default_value_t = 15432)]
        port: u16,
    },
    /// Policies: explain how statements would be judged.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// The tamper-evident audit log: verify, export, the key that signs it.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Sessions recorded in the state store.
    Sessions {
        #[command(subcommand)]
        command: sessions::SessionsCommand,
    },
    /// LLM usage recorded in the state store: requests and tokens per identity, connection, run, node or model.
    Usage(usage::UsageArgs),
    /// warden tokens: short-lived credentials for workflow nodes, through the gateway's admin API.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Revoke an identity, a token or a session: new authentications are refused and live sessions end at once.
    Revoke(revoke::RevokeArgs),
    /// Approval requests: list them, approve or deny one (through the gateway's admin API).
    Approvals {
        #[command(subcommand)]
        command: approvals::ApprovalsCommand,
    },
    /// API keys for service accounts.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Print a fresh API key (standard output) and the config entry to paste (standard error).
    New {
        #[arg(long)]
        name: String,
        /// Comma-separated groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The command's own runtime: one thread for accepting, signals and the state writer. Sessions run on the
/// gateway's worker threads (`[runtime] workers`).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

pub(crate) fn load_config(path: &std::path::Path) -> Result<Config> {
    Config::load(path, &ProcessEnvironment).map_err(|error| anyhow::anyhow!("invalid configuration:\n{error}"))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Gateway { config } => {
            let config = load_config(&config)?;
            runtime()?.block_on(gateway(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config: path } => match Config::load(&path, &ProcessEnvironment) {
            Ok(config) => {
                // The gateway refuses to start on the same policy errors.
                if config.policy.files.is_empty() {
                    eprintln!("{}: warning: no [policy] files: every session will be refused", path.display());
                }
                let policies = match warden_policy::Policies::load(&config.policy.files) {
                    Ok(policies) => policies,
                    Err(error) => {
                        eprintln!("{error}");
                        return Ok(ExitCode::FAILURE);
                    }
                };
                println!(
                    "{}: ok ({} connection(s), {} API key(s), {} policies, state {})",
                    path.display(),
                    config.connections.len(),
                    config.api_keys.len(),
                    policies.len(),
                    if config.state.is_sqlite() { "sqlite" } else { "postgres" }
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                eprintln!("{error}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Demo { port } => {
            runtime()?.block_on(demo::run(port))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy { command } => {
            policy::run(command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Revoke(args) => {
            runtime()?.block_on(revoke::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Approvals { command } => {
            runtime()?.block_on(approvals::run(command))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { command } => {
            runtime()?.block_on(token::run(command))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sessions { command } => {
            runtime()?.block_on(sessions::run(command))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Usage(args) => {
            runtime()?.block_on(usage::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command } => runtime()?.block_on(audit::run(command)),
        Command::ApiKey { command: ApiKeyCommand::New { name, groups } } => {
            let key = warden_identity::generate_api_key();
            println!("{key}");
            let groups: Vec<String> = groups.iter().map(|group| format!("{group:?}")).collect();
            eprintln!(
                "\n# Add to warden.toml (the key above is shown once; warden keeps only its digest):\n[[api_key]]\nname = {name:?}\nkey = {{ sha256 = \"{}\" }}\ngroups = [{}]",
                warden_identity::api_key_digest(&key),
                groups.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn gateway(config: Config) -> Result<()> {
    let gateway = warden_gateway::Gateway::start(config).await?;
    let mut hangup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let shutdown = wait_for_shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            result = &mut shutdown => break result?,
            _ = hangup.recv() => match gateway.reload_policies().await {
                Ok(count) => tracing::info!(policies = count, "policies reloaded"),
                Err(error) => tracing::error!("policy reload failed; the previous policies stay in force:\n{error}"),
            },
        }
    }
    tracing::info!("shutting down");
    gateway.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_shutdown_signal() -> Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
