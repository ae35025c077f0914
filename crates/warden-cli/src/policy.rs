//! `warden policy explain`: how the gateway would judge statements, offline.

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use warden_gateway::{ExplainRequest, Explanation};
use warden_identity::{Identity, IdentityKind};

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Show how each statement would be judged: its class, tables, decision and the determining policies.
    ///
    /// Each --sql is one query sent in order on one session (outside a transaction block), so PREPARE/EXECUTE
    /// and `SET search_path` carry over as they would on a live session. Without --sql, one query is read from
    /// standard input. Exits 0 whether or not the statements would be allowed.
    Explain {
        #[arg(long, short, env = "WARDEN_CONFIG", default_value = "warden.toml")]
        config: PathBuf,
        /// The identity: an [[api_key]] name from the config (its groups are used), or any name with --groups.
        #[arg(long)]
        identity: String,
        /// Comma-separated groups; overrides the groups the config gives the identity.
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<String>>,
        /// The connection (the database name a client would use).
        #[arg(long)]
        connection: String,
        /// A query (repeatable).
        #[arg(long)]
        sql: Vec<String>,
        /// The client address policies see as `context.client.address`.
        #[arg(long)]
        address: Option<IpAddr>,
        /// The application_name policies see as `context.client.application_name`.
        #[arg(long)]
        application_name: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: PolicyCommand) -> Result<()> {
    let PolicyCommand::Explain { config: path, identity, groups, connection, sql, address, application_name, json } =
        command;
    let config = crate::load_config(&path)?;
    if !config.connections.iter().any(|known| known.name == connection) {
        let known: Vec<&str> = config.connections.iter().map(|known| known.name.as_str()).collect();
        bail!("{}: no connection named \"{connection}\" (connections: {})", path.display(), known.join(", "));
    }
    let groups = match (groups, config.api_keys.iter().find(|key| key.name == identity)) {
        (Some(groups), _) => groups,
        (None, Some(key)) => key.groups.clone(),
        (None, None) => bail!(
            "{}: no [[api_key]] named \"{identity}\"; pass --groups to explain for an identity the config does not name",
            path.display()
        ),
    };
    let queries = if sql.is_empty() {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the query from standard input")?;
        vec![text]
    } else {
        sql
    };
    let policies = warden_policy::Policies::load(&config.policy.files).map_err(|error| anyhow::anyhow!("{error}"))?;
    let identity = Identity::new(identity, groups, IdentityKind::ApiKey);
    let explanation = warden_gateway::explain(
        policies,
        &ExplainRequest {
            identity: &identity,
            connection: &connection,
            client_address: address,
            application_name: application_name.as_deref(),
            queries: &queries,
        },
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&explanation).context("cannot encode the explanation")?);
    } else {
        print!("{}", render(&explanation));
    }
    Ok(())
}

fn render(explanation: &Explanation) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let groups = if explanation.groups.is_empty() { "no groups".to_string() } else { explanation.groups.join(", ") };
    let _ = writeln!(out, "identity {} ({groups}) on connection {}", explanation.identity, explanation.connection);
    let connect = &explanation.connect;
    let _ = writeln!(out, "connect: {}: {}", verdict(connect.allowed), connect.reason);
    if explanation.read_only {
        let _ = writeln!(out, "session: read-only (no policy grants this identity more than read here)");
    }
    for (index, query) in explanation.queries.iter().enumerate() {
        let _ = writeln!(out, "\nquery {}: {}", index + 1, crate::sessions::one_line(&query.sql));
        match &query.error {
            None => {
                let _ = writeln!(out, "  allowed");
            }
            Some(error) => {
                let _ = writeln!(out, "  refused: ERROR {}: {}", error.code, error.message);
            }
        }
        for (number, statement) in query.statements.iter().enumerate() {
            let text = statement.sql.as_deref().map(crate::sessions::one_line).unwrap_or_default();
            let _ = writeln!(out, "  statement {}: {text}", number + 1);
            let mut what = format!("{} ({}", statement.class, statement.kind);
            match statement.has_where {
                Some(true) => what.push_str(", with WHERE"),
                Some(false) => what.push_str(", no WHERE"),
                None => {}
            }
            what.push(')');
            let tables = if statement.tables.is_empty() { "none".to_string() } else { statement.tables.join(", ") };
            let _ = writeln!(out, "    class {what}; tables {tables}");
            if let Some(note) = &statement.note {
                let _ = writeln!(out, "    note: {note}");
            }
            for check in &statement.checks {
                let _ = writeln!(
                    out,
                    "    {} {} on {}: {}",
                    verdict(check.allowed),
                    check.action,
                    check.resource,
                    check.reason
                );
            }
        }
    }
    out
}

fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "denied"
    }
}
