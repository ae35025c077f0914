//! `warden approvals list|show|approve|deny`: approval requests, through the gateway's admin API (the approver is
//! whoever `WARDEN_TOKEN` authenticates).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use hyper::Method;

use crate::admin_client::AdminClient;

#[derive(Args)]
pub(crate) struct Target {
    #[arg(long, short, env = "WARDEN_CONFIG", default_value = "warden.toml")]
    config: PathBuf,
    /// The admin API, e.g. http://127.0.0.1:18081 (default: the config's [listen] admin).
    #[arg(long)]
    admin_url: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// Approval requests you may see (all of them for the [admin] group), newest first.
    List {
        #[command(flatten)]
        target: Target,
        /// pending (default), approved, denied, expired, used or all.
        #[arg(long, default_value = "pending")]
        status: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON array of approvals.
        #[arg(long)]
        json: bool,
    },
    /// One approval request with its votes.
    Show {
        id: String,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Approve a request (you must be in one of its approver groups, and not its requester).
    Approve {
        id: String,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Ask for a time-boxed grant: an action on a connection (or one table) for a while, once approved.
    Request {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        connection: String,
        /// read, write, ddl, dcl, admin or procedural.
        #[arg(long)]
        action: String,
        /// schema.table (a bare name is in public); without it, the whole connection.
        #[arg(long)]
        table: Option<String>,
        /// How long the grant lasts once approved: 90s, 30m, 2h, 1d.
        #[arg(long = "for", value_parser = parse_length)]
        length: std::time::Duration,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Deny a request, saying why (the client waiting on it gets the reason).
    Deny {
        id: String,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(command: ApprovalsCommand) -> Result<()> {
    match command {
        ApprovalsCommand::List { target, status, limit, json } => {
            let client = AdminClient::new(target.admin_url.as_deref(), &target.config)?;
            let path = format!("/v1/approvals?status={}&limit={limit}", encode(&status));
            let answer = client.call(Method::GET, &path, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let approvals = answer.as_array().map(Vec::as_slice).unwrap_or_default();
            if approvals.is_empty() {
                eprintln!("no {status} approvals");
            }
            for approval in approvals {
                println!("{}", summary(approval));
            }
            Ok(())
        }
        ApprovalsCommand::Show { id, target, json } => {
            let client = AdminClient::new(target.admin_url.as_deref(), &target.config)?;
            let answer = client.call(Method::GET, &format!("/v1/approvals/{}", encode(&id)), None).await?;
            print(&answer, json)
        }
        ApprovalsCommand::Approve { id, target, reason, json } => {
            let client = AdminClient::new(target.admin_url.as_deref(), &target.config)?;
            let body = serde_json::json!({ "reason": reason });
            let answer =
                client.call(Method::POST, &format!("/v1/approvals/{}/approve", encode(&id)), Some(&body)).await?;
            print(&answer, json)
        }
        ApprovalsCommand::Request { target, connection, action, table, length, reason, json } => {
            let client = AdminClient::new(target.admin_url.as_deref(), &target.config)?;
            let body = serde_json::json!({
                "connection": connection,
                "action": action,
                "table": table,
                "seconds": length.as_secs(),
                "reason": reason,
            });
            let answer = client.call(Method::POST, "/v1/approvals", Some(&body)).await?;
            print(&answer, json)
        }
        ApprovalsCommand::Deny { id, target, reason, json } => {
            if reason.trim().is_empty() {
                bail!("a denial needs a reason (--reason \"…\")");
            }
            let client = AdminClient::new(target.admin_url.as_deref(), &target.config)?;
            let body = serde_json::json!({ "reason": reason });
            let answer = client.call(Method::POST, &format!("/v1/approvals/{}/deny", encode(&id)), Some(&body)).await?;
            print(&answer, json)
        }
    }
}

fn print(approval: &serde_json::Value, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(approval)?);
        return Ok(());
    }
    println!("{}", summary(approval));
    if let Some(statement) = approval["statement"].as_str() {
        println!("    {statement}");
    }
    if let Some(parameters) = approval["parameters"].as_array() {
        let shown: Vec<String> = parameters
            .iter()
            .enumerate()
            .map(|(index, value)| format!("${}={}", index + 1, value.as_str().unwrap_or("NULL")))
            .collect();
        println!("    parameters: {}", shown.join(", "));
    }
    if let Some(reason) = approval["reason"].as_str() {
        println!("    reason: {reason}");
    }
    if let Some(seconds) = approval["grant_seconds"].as_u64() {
        println!("    grant: {seconds} s once approved");
    }
    for vote in approval["votes"].as_array().into_iter().flatten() {
        let verdict = if vote["approve"].as_bool() == Some(true) { "approved" } else { "denied" };
        let reason = vote["reason"].as_str().map(|reason| format!(": {reason}")).unwrap_or_default();
        println!(
            "    {verdict} by {} at {}{reason}",
            vote["by"].as_str().unwrap_or("?"),
            vote["at"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `apr_…  pending  agent on shop  write public.orders  needs dba×2  until …`.
fn summary(approval: &serde_json::Value) -> String {
    let text = |key: &str| approval[key].as_str().unwrap_or("-").to_string();
    let tables: Vec<&str> =
        approval["tables"].as_array().into_iter().flatten().filter_map(|table| table.as_str()).collect();
    let needed: Vec<String> = approval["needed"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|needed| format!("{}×{}", needed["group"].as_str().unwrap_or("?"), needed["approvals"]))
        .collect();
    format!(
        "{}  {}  {} on {}  {} {}  needs {}  until {}",
        text("id"),
        text("status"),
        text("identity"),
        text("connection"),
        text("action"),
        if tables.is_empty() { "-".to_string() } else { tables.join(",") },
        needed.join(" and "),
        text("expires_at")
    )
}

/// Percent-encodes what goes into a URL path or query.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A grant's length: whole seconds, at least one.
fn parse_length(text: &str) -> Result<std::time::Duration, String> {
    match warden_config::parse_duration(text) {
        Some(length) if length.as_secs() >= 1 && length.subsec_millis() == 0 => Ok(length),
        _ => Err(format!("\"{text}\" is not a length such as 90s, 30m, 2h or 1d")),
    }
}
