//! `warden token issue`: a warden token narrowing the caller's credential, through the admin API.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use hyper::Method;

use crate::admin_client::AdminClient;

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Issue a token narrowing the WARDEN_TOKEN credential: fewer connections and actions, a shorter life, labels.
    ///
    /// Prints the token on standard output (so `export WARDEN_TOKEN=$(warden token issue …)` works) and its id and
    /// expiry on standard error.
    Issue {
        #[arg(long, short, env = "WARDEN_CONFIG", default_value = "warden.toml")]
        config: PathBuf,
        /// The admin API, e.g. http://127.0.0.1:18081 (default: the config's [listen] admin).
        #[arg(long)]
        admin_url: Option<String>,
        /// A connection the token may use (repeatable; default: as the parent credential).
        #[arg(long = "connection")]
        connections: Vec<String>,
        /// An action the token may perform: connect, read, write, ddl, dcl, admin, procedural, unclassified
        /// (repeatable; default: as the parent credential).
        #[arg(long = "action")]
        actions: Vec<String>,
        /// Lifetime, e.g. 90s, 15m, 2h (default: the gateway's tokens.default_ttl).
        #[arg(long)]
        ttl: Option<String>,
        /// The workflow run the token is for.
        #[arg(long)]
        run: Option<String>,
        /// The workflow node the token is for.
        #[arg(long)]
        node: Option<String>,
        /// Print the whole answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(command: TokenCommand) -> Result<()> {
    let TokenCommand::Issue { config, admin_url, connections, actions, ttl, run, node, json } = command;
    let client = AdminClient::new(admin_url.as_deref(), &config)?;
    let mut body = serde_json::json!({ "labels": { "run": run, "node": node } });
    if !connections.is_empty() {
        body["connections"] = serde_json::json!(connections);
    }
    if !actions.is_empty() {
        body["actions"] = serde_json::json!(actions);
    }
    if let Some(ttl) = ttl {
        let seconds = parse_ttl(&ttl)?;
        body["ttl_seconds"] = serde_json::json!(seconds);
    }
    let answer = client.call(Method::POST, "/v1/tokens", Some(&body)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        let field = |name: &str| answer.get(name).and_then(|value| value.as_str()).unwrap_or_default().to_string();
        println!("{}", field("token"));
        eprintln!("token {} expires at {}", field("id"), field("expires_at"));
    }
    Ok(())
}

/// `90s`, `15m`, `2h`, `1d` (as durations are written in the config), or plain seconds.
fn parse_ttl(text: &str) -> Result<u64> {
    let text = text.trim();
    let with_unit = if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        format!("{text}s")
    } else {
        text.to_string()
    };
    warden_config::parse_duration(&with_unit)
        .map(|duration| duration.as_secs())
        .ok_or_else(|| anyhow::anyhow!("--ttl {text}: expected e.g. 90s, 15m or 2h"))
}
