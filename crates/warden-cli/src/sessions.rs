//! `warden sessions list|show`: the recorded sessions and statements, from the gateway's admin API (when
//! `--admin-url` is given or `WARDEN_TOKEN` is set), or read straight from the state store the config names
//! (offline, e.g. after the gateway stopped).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use hyper::Method;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use warden_state::{SessionFilter, SessionRow, StateStore, StatementRow};

use crate::admin_client::AdminClient;

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// List sessions, newest first.
    List {
        #[arg(long, short, env = "WARDEN_CONFIG", default_value = "warden.toml")]
        config: PathBuf,
        #[arg(long)]
        identity: Option<String>,
        #[arg(long)]
        connection: Option<String>,
        /// Only sessions started at or after this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        since: Option<OffsetDateTime>,
        /// Only sessions still open.
        #[arg(long)]
        active: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
        /// The admin API, e.g. http://127.0.0.1:18081 (with WARDEN_TOKEN set, default: the config's [listen] admin).
        #[arg(long)]
        admin_url: Option<String>,
    },
    /// One session and its statements.
    Show {
        id: String,
        #[arg(long, short, env = "WARDEN_CONFIG", default_value = "warden.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
        /// The admin API, e.g. http://127.0.0.1:18081 (with WARDEN_TOKEN set, default: the config's [listen] admin).
        #[arg(long)]
        admin_url: Option<String>,
    },
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|error| format!("expected an RFC 3339 time such as 2026-11-21T09:00:00Z: {error}"))
}

/// The admin API client when the command should go through it: `--admin-url` given, or `WARDEN_TOKEN` set.
fn api(admin_url: Option<&str>, config: &std::path::Path) -> Result<Option<AdminClient>> {
    let token_set = std::env::var("WARDEN_TOKEN").is_ok_and(|token| !token.is_empty());
    if admin_url.is_none() && !token_set {
        return Ok(None);
    }
    AdminClient::new(admin_url, config).map(Some)
}

/// Percent-encodes a query or path value.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

async fn open(config: &std::path::Path) -> Result<StateStore> {
    let config = crate::load_config(config)?;
    StateStore::open(config.state.url.expose()).await.context("cannot open the state store")
}

pub async fn run(command: SessionsCommand) -> Result<()> {
    match command {
        SessionsCommand::List { config, identity, connection, since, active, limit, json, admin_url } => {
            let filter = SessionFilter { identity, connection, since, active_only: active, limit: Some(limit) };
            let sessions = match api(admin_url.as_deref(), &config)? {
                Some(client) => {
                    let mut query = vec![format!("limit={limit}")];
                    if let Some(identity) = &filter.identity {
                        query.push(format!("identity={}", encode(identity)));
                    }
                    if let Some(connection) = &filter.connection {
                        query.push(format!("connection={}", encode(connection)));
                    }
                    if let Some(since) = filter.since {
                        query.push(format!("since={}", encode(&since.format(&Rfc3339)?)));
                    }
                    if filter.active_only {
                        query.push("active=true".into());
                    }
                    let answer = client.call(Method::GET, &format!("/v1/sessions?{}", query.join("&")), None).await?;
                    serde_json::from_value::<Vec<SessionRow>>(answer).context("unexpected answer from the admin API")?
                }
                None => open(&config).await?.list_sessions(&filter).await?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&sessions)?);
            } else {
                print_sessions(&sessions);
            }
        }
        SessionsCommand::Show { id, config, json, admin_url } => {
            let (session, statements) = match api(admin_url.as_deref(), &config)? {
                Some(client) => {
                    let mut answer = client.call(Method::GET, &format!("/v1/sessions/{}", encode(&id)), None).await?;
                    let session: SessionRow = serde_json::from_value(answer["session"].take())
                        .context("unexpected answer from the admin API")?;
                    let statements: Vec<StatementRow> = serde_json::from_value(answer["statements"].take())
                        .context("unexpected answer from the admin API")?;
                    (session, statements)
                }
                None => {
                    let store = open(&config).await?;
                    let session = store.session(&id).await?.with_context(|| format!("no session with id {id}"))?;
                    let statements = store.statements(&id).await?;
                    (session, statements)
                }
            };
            if json {
                let value = serde_json::json!({ "session": session, "statements": statements });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print_sessions(std::slice::from_ref(&session));
                if let Some(credential) = &session.credential {
                    let mut line = format!("credential: {credential}");
                    if let Some(token) = &session.token_id {
                        line.push_str(&format!(" {token}"));
                    }
                    if let Some(run) = &session.run {
                        line.push_str(&format!(", run {run}"));
                    }
                    if let Some(node) = &session.node {
                        line.push_str(&format!(", node {node}"));
                    }
                    println!("{line}");
                }
                if !session.masked.is_empty() {
                    // A BTreeMap iterates in name order.
                    let counts: Vec<String> =
                        session.masked.iter().map(|(detector, count)| format!("{detector} {count}")).collect();
                    println!("masked: {}", counts.join(", "));
                }
                println!();
                println!(
                    "{:>5}  {:>10}  {:>8}  {:<8}  {:<12}  STATEMENT",
                    "SEQ", "DURATION", "ROWS", "DECISION", "CLASS"
                );
                for statement in statements {
                    let rows = statement.rows.map_or_else(|| "-".to_string(), |rows| rows.to_string());
                    let outcome = statement.error.map(|error| format!("  -- ERROR {error}")).unwrap_or_default();
                    let (decision, classes) = match &statement.decision {
                        Some(decision) => {
                            (if decision.allowed { "allowed" } else { "denied" }, decision.classes.join(","))
                        }
                        None => ("-", "-".to_string()),
                    };
                    println!(
                        "{:>5}  {:>8}ms  {:>8}  {:<8}  {:<12}  {}{}",
                        statement.seq,
                        format!("{:.3}", statement.duration_us as f64 / 1000.0),
                        rows,
                        decision,
                        classes,
                        one_line(&statement.text),
                        outcome
                    );
                    if let Some(decision) = &statement.decision {
                        let list = |items: &[String]| if items.is_empty() { "-".to_string() } else { items.join(", ") };
                        println!("{:>56}tables {}; policies {}", "", list(&decision.tables), list(&decision.policies));
                    }
                }
            }
        }
    }
    Ok(())
}

fn print_sessions(sessions: &[SessionRow]) {
    println!(
        "{:<36}  {:<20}  {:<12}  {:<21}  {:<16}  {:<20}  {:>5}  END",
        "ID", "STARTED", "IDENTITY", "CLIENT", "APPLICATION", "CONNECTION", "STMTS"
    );
    for session in sessions {
        let started = session.started_at.format(&Rfc3339).unwrap_or_default();
        let end = match (&session.ended_at, &session.end_reason) {
            (None, _) => "active".to_string(),
            (Some(_), Some(reason)) => reason.clone(),
            (Some(_), None) => "ended".to_string(),
        };
        println!(
            "{:<36}  {:<20}  {:<12}  {:<21}  {:<16}  {:<20}  {:>5}  {}",
            session.id,
            &started[..started.len().min(19)],
            session.identity,
            session.client_address,
            session.application_name.as_deref().unwrap_or("-"),
            session.connection,
            session.statement_count,
            end
        );
    }
}

/// `text` on one line, cut at 120 characters.
pub(crate) fn one_line(text: &str) -> String {
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() > 120 {
        format!("{}…", collapsed.chars().take(119).collect::<String>())
    } else {
        collapsed
    }
}
