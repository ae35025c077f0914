//! `warden audit`: verify the tamper-evident audit log offline (a state store or an exported file), print the key
//! that signs its checkpoints, export it as JSON Lines.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use warden_audit::{Checkpoint, PublicKey, Record, Sealed};
use warden_state::StateStore;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chains and signed checkpoints, with no gateway running; names the first broken
    /// link. Exit status 0 when intact, 1 when not.
    Verify {
        /// Verify the state store this config names, with the gateway's own key.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        config: Option<PathBuf>,
        /// Verify an export (`warden audit export`) instead.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The public key checkpoints must be signed with (`warden audit public-key` prints it); with --config, the
        /// gateway's key by default.
        #[arg(long)]
        public_key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print the public key that signs the audit checkpoints (PEM), for third parties verifying an export.
    PublicKey {
        #[arg(long)]
        config: PathBuf,
    },
    /// Write the audit log as JSON Lines, chain fields and checkpoints included, so the file verifies on its own.
    Export {
        #[arg(long)]
        config: PathBuf,
        /// Only events at or after this time (RFC 3339); the export then starts mid-chain and verifies from there.
        #[arg(long)]
        since: Option<String>,
        /// Only `jsonl` for now.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Run one retention pass on the state store now, as the gateway's pruner does every 10 minutes (maintenance and
    /// tests): deletes the sessions that ended before the cutoff and each audit chain's events up to its last
    /// checkpoint before it, after recording (and signing) how far. Prints what it deleted.
    #[command(hide = true)]
    Prune {
        #[arg(long)]
        config: PathBuf,
        /// The cutoff (RFC 3339); default: now minus `[audit] retention`.
        #[arg(long)]
        before: Option<String>,
    },
}

pub async fn run(command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::Verify { config, file, public_key, json } => {
            let partial = file.is_some();
            let (events, checkpoints, key) = match (config, file) {
                (Some(config), _) => {
                    let config = crate::load_config(&config)?;
                    let store = open(&config).await?;
                    let (events, checkpoints) = store.audit_log(None).await.context("cannot read the audit log")?;
                    let key = match &public_key {
                        Some(path) => read_public_key(path)?,
                        None => gateway_key(&config)?,
                    };
                    (events, checkpoints, key)
                }
                (None, Some(file)) => {
                    let Some(path) = public_key else {
                        bail!("--file needs --public-key (the PEM `warden audit public-key` prints)");
                    };
                    let (events, checkpoints) = read_export(&file)?;
                    (events, checkpoints, read_public_key(&path)?)
                }
                (None, None) => bail!("give --config or --file"),
            };
            let count = events.len();
            let verified = if partial {
                warden_audit::verify_export(events, checkpoints, &[key])
            } else {
                warden_audit::verify(events, checkpoints, &[key])
            };
            match verified {
                Ok(report) => {
                    if json {
                        let chains: Vec<serde_json::Value> = report
                            .chains
                            .iter()
                            .map(|chain| {
                                serde_json::json!({
                                    "chain": chain.chain,
                                    "first": chain.first,
                                    "events": chain.events,
                                    "checkpoints": chain.checkpoints,
                                    "sealed_through": chain.sealed_through,
                                    "unsealed": chain.unsealed,
                                    "pruned": chain.pruned,
                                })
                            })
                            .collect();
                        println!("{}", serde_json::json!({"ok": true, "events": count, "chains": chains}));
                    } else {
                        println!(
                            "ok: {count} events in {} chain(s), every link and checkpoint verified",
                            report.chains.len()
                        );
                        for chain in &report.chains {
                            let range = if chain.pruned > 0 && chain.pruned == chain.events {
                                format!("{} events, all pruned by retention", chain.events)
                            } else if chain.pruned > 0 {
                                format!(
                                    "events {}..={} ({} pruned by retention)",
                                    chain.first, chain.events, chain.pruned
                                )
                            } else if chain.first > 1 {
                                format!("events {}..={} (the file starts mid-chain)", chain.first, chain.events)
                            } else {
                                format!("{} events", chain.events)
                            };
                            println!(
                                "  {}: {range}, {} checkpoints, sealed through {}{}",
                                chain.chain,
                                chain.checkpoints,
                                chain.sealed_through,
                                if chain.unsealed > 0 {
                                    format!(" ({} after the last checkpoint: not yet sealed)", chain.unsealed)
                                } else {
                                    String::new()
                                }
                            );
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(broken) => {
                    if json {
                        println!("{}", serde_json::json!({"ok": false, "error": broken.to_string()}));
                    } else {
                        eprintln!("audit log BROKEN: {broken}");
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Prune { config, before } => prune(&config, before).await,
        AuditCommand::PublicKey { config } => {
            let config = crate::load_config(&config)?;
            let issuer = warden_gateway::token_issuer(&config).context("cannot load the gateway's signing key")?;
            print!("{}", issuer.signing_key().public_key_pem());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { config, since, format, output } => {
            if format != "jsonl" {
                bail!("unsupported format \"{format}\" (expected jsonl)");
            }
            let since = since
                .map(|text| {
                    OffsetDateTime::parse(&text, &Rfc3339)
                        .with_context(|| format!("--since \"{text}\" is not RFC 3339"))
                })
                .transpose()?;
            let config = crate::load_config(&config)?;
            let store = open(&config).await?;
            let (events, checkpoints) = store.audit_log(since).await.context("cannot read the audit log")?;
            let mut out: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let first: std::collections::HashMap<&str, u64> =
                events.iter().fold(std::collections::HashMap::new(), |mut first, sealed| {
                    first.entry(sealed.event.chain.as_str()).or_insert(sealed.event.seq);
                    first
                });
            let mut lines = 0;
            for sealed in &events {
                // Bodies as the chain hashes them (canonical JSON), like the audit sinks' lines.
                out.write_all(Record::Event(sealed.clone()).to_line().as_bytes())?;
                out.write_all(b"\n")?;
                lines += 1;
            }
            // Checkpoints over the exported range only: one before it names events the file does not hold.
            for checkpoint in checkpoints {
                if first.get(checkpoint.chain.as_str()).is_some_and(|first| checkpoint.seq >= *first) {
                    serde_json::to_writer(&mut out, &Record::Checkpoint(checkpoint))?;
                    out.write_all(b"\n")?;
                    lines += 1;
                }
            }
            out.flush()?;
            if let Some(path) = output {
                eprintln!("wrote {lines} records to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `warden audit prune`: one retention pass with a recorder of its own (a chain of its own, signed with the gateway's
/// key).
async fn prune(config: &Path, before: Option<String>) -> Result<ExitCode> {
    let config = crate::load_config(config)?;
    let before =
        match (before, config.audit.retention) {
            (Some(text), _) => OffsetDateTime::parse(&text, &Rfc3339)
                .with_context(|| format!("--before \"{text}\" is not RFC 3339"))?,
            (None, Some(retention)) => warden_state::retention_cutoff(retention)
                .context("[audit] retention reaches before any time there is")?,
            (None, None) => bail!("give --before, or set [audit] retention in the config"),
        };
    let issuer = warden_gateway::token_issuer(&config).context("cannot load the gateway's signing key")?;
    let store = open(&config).await?;
    let recorder = store.audited_recorder(64, std::sync::Arc::new(AuditKey(issuer)));
    let report = recorder.prune(before).await.context("pruning failed")?;
    recorder.flush().await.context("cannot flush the audit log")?;
    println!(
        "pruned before {}: {} session(s), {} statement(s)",
        before.format(&Rfc3339)?,
        report.sessions,
        report.statements
    );
    for chain in &report.chains {
        println!(
            "  {}: events 1..={} pruned ({} event(s) and {} checkpoint(s) deleted now)",
            chain.chain, chain.through, chain.events, chain.checkpoints
        );
    }
    if !report.recorded {
        println!("  nothing new to prune: no audit.pruned event recorded");
    }
    Ok(ExitCode::SUCCESS)
}

/// The gateway's token signing key as the audit signer, as the gateway itself uses it.
struct AuditKey(warden_identity::TokenIssuer);

impl warden_state::AuditSigner for AuditKey {
    fn key_id(&self) -> &str {
        self.0.signing_key().key_id()
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.signing_key().sign(message)
    }
}

async fn open(config: &warden_config::Config) -> Result<StateStore> {
    StateStore::open(config.state.url.expose()).await.context("cannot open the state store")
}

fn gateway_key(config: &warden_config::Config) -> Result<PublicKey> {
    let issuer = warden_gateway::token_issuer(config).context("cannot load the gateway's signing key")?;
    PublicKey::from_pem(&issuer.signing_key().public_key_pem()).map_err(|error| anyhow::anyhow!("{error}"))
}

fn read_public_key(path: &Path) -> Result<PublicKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    PublicKey::from_pem(&text).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
}

/// Reads an export; a line that is not a record is an error naming the line.
fn read_export(path: &Path) -> Result<(Vec<Sealed>, Vec<Checkpoint>)> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut events = Vec::new();
    let mut checkpoints = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(Record::Event(sealed)) => events.push(sealed),
            Ok(Record::Checkpoint(checkpoint)) => checkpoints.push(checkpoint),
            Err(error) => bail!("{}:{}: not an audit record: {error}", path.display(), index + 1),
        }
    }
    Ok((events, checkpoints))
}
