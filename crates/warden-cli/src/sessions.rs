//! `warden sessions list|show|replay`: the recorded sessions and statements, from the gateway's admin API (when
//! `--admin-url` is given or `WARDEN_TOKEN` is set), or read straight from the state store the config names
//! (offline, e.g. after the gateway stopped). `replay` reads a session's audit events from the store, always
//! offline, and can follow a live session until it ends.

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
        /// Only sessions started before this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        until: Option<OffsetDateTime>,
        /// Only sessions with a statement that touched this table: `schema.table`, or a bare name for that table in
        /// any schema.
        #[arg(long)]
        table: Option<String>,
        /// Only sessions of warden tokens issued for this workflow run.
        #[arg(long)]
        run: Option<String>,
        /// Only sessions of warden tokens issued for this workflow node.
        #[arg(long)]
        node: Option<String>,
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
    /// A session's audit events in order, each with its time since the session started (read from the state
    /// store, offline).
    Replay {
        id: String,
        #[arg(long, short, env = "WARDEN_CONFIG", default_value = "warden.toml")]
        config: PathBuf,
        /// One JSON object per event and line (JSON Lines).
        #[arg(long)]
        json: bool,
        /// Keep printing new events until the session ends (or Ctrl-C).
        #[arg(long)]
        follow: bool,
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
        SessionsCommand::List {
            config,
            identity,
            connection,
            since,
            until,
            table,
            run,
            node,
            active,
            limit,
            json,
            admin_url,
        } => {
            let filter = SessionFilter {
                identity,
                connection,
                since,
                until,
                table,
                run,
                node,
                active_only: active,
                limit: Some(limit),
            };
            let sessions = match api(admin_url.as_deref(), &config)? {
                Some(client) => {
                    if filter.until.is_some() || filter.table.is_some() || filter.run.is_some() || filter.node.is_some()
                    {
                        anyhow::bail!(
                            "--until, --table, --run and --node read the state store directly: run without \
                             --admin-url and WARDEN_TOKEN (the admin API does not take them yet)"
                        );
                    }
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
                    let path = format!("/v1/sessions?{}", query.join("&"));
                    let (answer, headers) = client.call_with_headers(Method::GET, &path, None).await?;
                    // Said on standard error, so that an empty list is not taken for "no sessions at all".
                    let only = headers.get(warden_gateway::ONLY_IDENTITY_HEADER).and_then(|name| name.to_str().ok());
                    if let (Some(name), None) = (only, &filter.identity) {
                        eprintln!(
                            "only identity \"{name}\"'s sessions are listed: the [admin] group sees every identity's"
                        );
                    }
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
        SessionsCommand::Replay { id, config, json, follow } => {
            let store = open(&config).await?;
            replay(&store, &id, json, follow).await?;
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

/// How often `replay --follow` reads the store for new events.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Prints a session's audit events in order; with `follow`, polls for new ones until its `session.end`.
async fn replay(store: &StateStore, id: &str, json: bool, follow: bool) -> Result<()> {
    let mut events = session_events(store, id, None).await?;
    if events.is_empty() {
        if store.session(id).await?.is_some() {
            anyhow::bail!("session {id} has no audit events: it was recorded before the audit log existed");
        }
        anyhow::bail!("no session with id {id}");
    }
    let (session_start, start_at) = {
        let first = events.iter().find(|event| event.event.kind == "session.start").unwrap_or(&events[0]);
        (first.event.clone(), first.at)
    };
    let replay = Replay { start_at, json };
    if !json {
        replay.print_header(&session_start);
    }
    loop {
        let mut ended = false;
        for event in &events {
            replay.print(event);
            ended |= event.event.kind == "session.end";
        }
        if ended || !follow {
            return Ok(());
        }
        // A session's events are all in one chain; the last one read is where the next read starts.
        let last = events.iter().max_by_key(|event| event.event.seq).map(|event| &event.event);
        let after = last.map(|event| (event.chain.clone(), event.seq));
        loop {
            tokio::time::sleep(FOLLOW_INTERVAL).await;
            events = session_events(store, id, after.as_ref().map(|(chain, seq)| (chain.as_str(), *seq))).await?;
            if !events.is_empty() {
                break;
            }
        }
    }
}

/// One audit event of the session, with its time parsed.
struct ReplayEvent {
    event: warden_audit::Event,
    at: OffsetDateTime,
}

/// The session's events (after `after`, a chain and seq) in replay order: by time, then chain and seq, except
/// that `session.end` comes last. (A `session.masked` event is stamped when the writer seals it, which is after
/// the end it precedes; and RFC 3339 text with a varying number of fraction digits does not sort as time, so
/// the sort is here rather than in SQL.)
async fn session_events(store: &StateStore, id: &str, after: Option<(&str, u64)>) -> Result<Vec<ReplayEvent>> {
    let sealed = store.audit_events_for_session(id, after).await.context("cannot read the audit log")?;
    let mut events = sealed
        .into_iter()
        .map(|sealed| {
            let at = OffsetDateTime::parse(&sealed.event.at, &Rfc3339).with_context(|| {
                format!("audit event {} {}: bad time {:?}", sealed.event.chain, sealed.event.seq, sealed.event.at)
            })?;
            Ok(ReplayEvent { event: sealed.event, at })
        })
        .collect::<Result<Vec<_>>>()?;
    events.sort_by(|a, b| {
        let key = |event: &ReplayEvent| (event.event.kind == "session.end", event.at);
        key(a).cmp(&key(b)).then_with(|| (&a.event.chain, a.event.seq).cmp(&(&b.event.chain, b.event.seq)))
    });
    Ok(events)
}

/// How replayed events are printed.
struct Replay {
    /// When the session started: offsets are from here.
    start_at: OffsetDateTime,
    json: bool,
}

impl Replay {
    fn print_header(&self, start: &warden_audit::Event) {
        let body = &start.body;
        let field = |name: &str| body[name].as_str().unwrap_or("-").to_string();
        let mut line = format!(
            "session {}  identity {}  connection {}",
            start.session.as_deref().unwrap_or("-"),
            start.identity.as_deref().unwrap_or("-"),
            start.connection.as_deref().unwrap_or("-")
        );
        if let Some(run) = &start.run {
            line.push_str(&format!("  run {run}"));
        }
        if let Some(node) = &start.node {
            line.push_str(&format!("  node {node}"));
        }
        line.push_str(&format!(
            "  client {}  application {}  started {}",
            field("client_address"),
            field("application_name"),
            self.start_at.format(&Rfc3339).unwrap_or_else(|_| start.at.clone())
        ));
        println!("{line}");
    }

    fn offset(&self, at: OffsetDateTime) -> time::Duration {
        at - self.start_at
    }

    fn print(&self, replayed: &ReplayEvent) {
        let offset = self.offset(replayed.at);
        let event = &replayed.event;
        if self.json {
            let mut object = match &*event.body {
                serde_json::Value::Object(body) => body.clone(),
                other => serde_json::Map::from_iter([("body".to_string(), other.clone())]),
            };
            let micros = offset.whole_microseconds();
            object.insert("offset_ms".into(), serde_json::json!(micros as f64 / 1000.0));
            object.insert("kind".into(), serde_json::json!(event.kind));
            object.insert("at".into(), serde_json::json!(event.at));
            object.insert("session".into(), serde_json::json!(event.session));
            object.insert("identity".into(), serde_json::json!(event.identity));
            object.insert("connection".into(), serde_json::json!(event.connection));
            object.insert("run".into(), serde_json::json!(event.run));
            object.insert("node".into(), serde_json::json!(event.node));
            println!("{}", serde_json::Value::Object(object));
            return;
        }
        let body = &event.body;
        let at = format_offset(offset);
        match event.kind.as_str() {
            "session.start" => {
                let mut line = format!("{at}  session.start  user {}", body["user_name"].as_str().unwrap_or("-"));
                if let Some(credential) = body["credential"].as_str() {
                    line.push_str(&format!(", credential {credential}"));
                }
                if let Some(token) = body["token_id"].as_str() {
                    line.push_str(&format!(" {token}"));
                }
                println!("{line}");
            }
            "statement" => {
                let seq = body["seq"].as_u64().map_or_else(|| "?".to_string(), |seq| seq.to_string());
                let list = |value: &serde_json::Value, separator: &str| {
                    let items: Vec<&str> = value
                        .as_array()
                        .map(|items| items.iter().filter_map(|item| item.as_str()).collect())
                        .unwrap_or_default();
                    if items.is_empty() {
                        "-".to_string()
                    } else {
                        items.join(separator)
                    }
                };
                let decision = &body["decision"];
                let verdict = match decision["allowed"].as_bool() {
                    None => "unjudged".to_string(),
                    Some(allowed) => {
                        let mut verdict = format!(
                            "{} [{}] {}",
                            if allowed { "allowed" } else { "DENIED" },
                            list(&decision["classes"], ","),
                            list(&decision["tables"], ", ")
                        );
                        let policies = list(&decision["policies"], ", ");
                        if !allowed {
                            match policies.as_str() {
                                "-" => verdict.push_str("  no policy permits it"),
                                policies => verdict.push_str(&format!("  by {policies}")),
                            }
                        } else if let Some(approval) = policies.strip_prefix("approval:") {
                            verdict.push_str(&format!("  by approval {approval}"));
                        }
                        verdict
                    }
                };
                let error = body["error"].as_str();
                let failed =
                    if error.is_some() && decision["allowed"].as_bool() != Some(false) { "  ERROR" } else { "" };
                let duration = format_duration_us(body["duration_us"].as_u64().unwrap_or(0));
                let outcome = match body["rows"].as_u64() {
                    Some(1) => format!("1 row, {duration}"),
                    Some(rows) => format!("{rows} rows, {duration}"),
                    None => duration,
                };
                println!("{at}  statement #{seq}  {verdict}{failed}  ({outcome})");
                for line in body["text"].as_str().unwrap_or("").lines() {
                    println!("{INDENT}{line}");
                }
                print_result(&body["result"]);
                print_http(&body["http"]);
                if let Some(error) = error {
                    println!("{INDENT}error: {error}");
                }
            }
            "session.masked" => {
                let counts: Vec<String> = body["masked"]
                    .as_object()
                    .map(|counts| counts.iter().map(|(detector, count)| format!("{detector} {count}")).collect())
                    .unwrap_or_default();
                let counts = if counts.is_empty() { "nothing".to_string() } else { counts.join(", ") };
                println!("{at}  session.masked  {counts}");
            }
            "session.end" => {
                let reason = body["reason"].as_str().unwrap_or("ended");
                println!("{at}  session.end  {reason}  (lasted {})", format_seconds(offset));
            }
            kind if kind.starts_with("approval.") => {
                let id = body["id"].as_str().unwrap_or("?");
                let detail = match kind {
                    "approval.requested" => {
                        let needed: Vec<String> = body["needed"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|needed| {
                                format!("{}×{}", needed["group"].as_str().unwrap_or("?"), needed["approvals"])
                            })
                            .collect();
                        let policies = body["policies"].as_array().map(|policies| {
                            policies.iter().filter_map(|policy| policy.as_str()).collect::<Vec<_>>().join(", ")
                        });
                        format!(
                            "needs {}{}",
                            needed.join(" and "),
                            policies
                                .filter(|list| !list.is_empty())
                                .map(|list| format!("  (lifting {list})"))
                                .unwrap_or_default()
                        )
                    }
                    "approval.approved" | "approval.denied" => {
                        let by = body["by"].as_str().unwrap_or("?");
                        let reason =
                            body["vote_reason"].as_str().map(|reason| format!(": {reason}")).unwrap_or_default();
                        let outstanding = body["outstanding"]
                            .as_array()
                            .filter(|missing| !missing.is_empty() && kind == "approval.approved")
                            .map(|missing| {
                                let missing: Vec<&str> = missing.iter().filter_map(|item| item.as_str()).collect();
                                format!("  (still missing {})", missing.join(", "))
                            })
                            .unwrap_or_default();
                        format!("by {by}{reason}{outstanding}")
                    }
                    "approval.notified" => match body["delivered"].as_bool() {
                        Some(true) => format!("to {}", body["target"].as_str().unwrap_or("?")),
                        _ => format!(
                            "to {} FAILED: {}",
                            body["target"].as_str().unwrap_or("?"),
                            body["error"].as_str().unwrap_or("?")
                        ),
                    },
                    _ => String::new(),
                };
                println!("{at}  {kind}  {id}  {detail}");
            }
            other => println!("{at}  {other}  {}", body),
        }
    }
}

/// Where a statement's text and error go: under the event's line.
const INDENT: &str = "          ";

/// `+0.012s`.
fn format_offset(offset: time::Duration) -> String {
    let sign = if offset.is_negative() { "-" } else { "+" };
    format!("{sign}{}", format_seconds(offset.abs()))
}

/// `0.012s`.
fn format_seconds(duration: time::Duration) -> String {
    format!("{:.3}s", duration.as_seconds_f64())
}

/// `0.40 ms`, `12.3 ms`, `1520 ms`.
fn format_duration_us(micros: u64) -> String {
    let millis = micros as f64 / 1000.0;
    if micros < 1_000 {
        format!("{millis:.2} ms")
    } else if micros < 100_000 {
        format!("{millis:.1} ms")
    } else {
        format!("{millis:.0} ms")
    }
}

/// A statement's recorded result rows (masked when they were recorded), as `|`-separated lines under it.
/// What an HTTP request's record adds: status, model, usage, latency to the first byte, the masked prompt and
/// answer (first lines).
fn print_http(http: &serde_json::Value) {
    if !http.is_object() {
        return;
    }
    let mut line = format!("status {}", http["status"]);
    if let Some(model) = http["model"].as_str() {
        line.push_str(&format!("  model {model}"));
    }
    if http["stream"] == true {
        line.push_str("  streamed");
    }
    if let (Some(input), Some(output)) =
        (http["usage"]["input_tokens"].as_u64(), http["usage"]["output_tokens"].as_u64())
    {
        line.push_str(&format!("  tokens {input} in, {output} out"));
    }
    if let Some(forwarded) = http["forwarded_us"].as_u64() {
        line.push_str(&format!("  sent upstream after {}", format_duration_us(forwarded)));
    }
    if let Some(first_byte) = http["first_byte_us"].as_u64() {
        line.push_str(&format!("  first byte after {}", format_duration_us(first_byte)));
    }
    if let Some(masked) = http["masked"].as_u64().filter(|masked| *masked > 0) {
        line.push_str(&format!("  {masked} masked"));
    }
    println!("{INDENT}{line}");
    for (label, field) in [("prompt", "prompt"), ("answer", "response")] {
        if let Some(text) = http[field].as_str().filter(|text| !text.is_empty()) {
            let mut lines = text.lines();
            println!("{INDENT}{label}: {}", lines.next().unwrap_or(""));
            for more in lines.take(20) {
                println!("{INDENT}  {more}");
            }
        }
    }
}

fn print_result(result: &serde_json::Value) {
    let cell = |value: &serde_json::Value| match value.as_str() {
        Some(text) if text.chars().count() > 60 => format!("{}…", text.chars().take(59).collect::<String>()),
        Some(text) => text.replace('\n', "\\n"),
        None => "NULL".to_string(),
    };
    for set in result["sets"].as_array().into_iter().flatten() {
        if let Some(columns) = set["columns"].as_array() {
            let names: Vec<String> = columns.iter().map(cell).collect();
            println!("{INDENT}→ {}", names.join(" | "));
        }
        for row in set["rows"].as_array().into_iter().flatten() {
            let values: Vec<String> = row.as_array().into_iter().flatten().map(cell).collect();
            println!("{INDENT}  {}", values.join(" | "));
        }
    }
    match result["cut"].as_u64() {
        Some(0) | None => {}
        Some(1) => println!("{INDENT}  (1 more row not kept)"),
        Some(cut) => println!("{INDENT}  ({cut} more rows not kept)"),
    }
}
