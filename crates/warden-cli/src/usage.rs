//! `warden usage`: what LLM requests used, from the usage fields of the providers' answers, summed per identity,
//! connection, workflow run, node or model. Read straight from the state store the config names (offline: the
//! gateway may be running or not), so it counts the requests of every gateway sharing the store.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use warden_state::{StateStore, UsageFilter, UsageRow};

#[derive(clap::Args)]
pub struct UsageArgs {
    #[arg(long, short, env = "WARDEN_CONFIG", default_value = "warden.toml")]
    config: PathBuf,
    /// Requests that started at or after this time: an RFC 3339 time, or a length back from now (90m, 24h, 7d).
    /// Default: everything recorded.
    #[arg(long, value_parser = parse_instant)]
    since: Option<OffsetDateTime>,
    /// Requests that started before this time: an RFC 3339 time, or a length back from now.
    #[arg(long, value_parser = parse_instant)]
    until: Option<OffsetDateTime>,
    /// Only requests on this connection.
    #[arg(long)]
    connection: Option<String>,
    /// Only requests of this identity.
    #[arg(long)]
    identity: Option<String>,
    /// Only requests made with warden tokens issued for this workflow run.
    #[arg(long)]
    run: Option<String>,
    /// Only requests made with warden tokens issued for this workflow node.
    #[arg(long)]
    node: Option<String>,
    /// What to sum per, in this order (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "identity")]
    by: Vec<GroupBy>,
    /// The groups and the total as one JSON object.
    #[arg(long)]
    json: bool,
}

/// What `--by` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GroupBy {
    Identity,
    Connection,
    Run,
    Node,
    Model,
}

impl GroupBy {
    fn name(self) -> &'static str {
        match self {
            GroupBy::Identity => "identity",
            GroupBy::Connection => "connection",
            GroupBy::Run => "run",
            GroupBy::Node => "node",
            GroupBy::Model => "model",
        }
    }

    /// The row's value of this key: `None` for a request without a run or node label (not made with a warden token
    /// that has one), or without a model.
    fn of(self, row: &UsageRow) -> Option<&str> {
        match self {
            GroupBy::Identity => Some(&row.identity),
            GroupBy::Connection => Some(&row.connection),
            GroupBy::Run => row.run.as_deref(),
            GroupBy::Node => row.node.as_deref(),
            GroupBy::Model => row.model.as_deref(),
        }
    }
}

/// Requests and tokens of one group (or of all).
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
}

impl Sums {
    fn add(&mut self, row: &UsageRow) {
        self.requests += row.requests;
        self.input_tokens += row.input_tokens;
        self.output_tokens += row.output_tokens;
    }

    fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    fn columns(&self) -> [u64; 4] {
        [self.requests, self.input_tokens, self.output_tokens, self.total_tokens()]
    }

    fn json(&self, object: &mut Map<String, Value>) {
        object.insert("requests".into(), json!(self.requests));
        object.insert("input_tokens".into(), json!(self.input_tokens));
        object.insert("output_tokens".into(), json!(self.output_tokens));
        object.insert("total_tokens".into(), json!(self.total_tokens()));
    }
}

/// `2026-11-21T09:00:00Z`, or a length back from now: `24h` is 24 hours ago.
fn parse_instant(text: &str) -> Result<OffsetDateTime, String> {
    if let Some(length) = warden_config::parse_duration(text) {
        return Ok(OffsetDateTime::now_utc() - length);
    }
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        format!("\"{text}\" is neither an RFC 3339 time such as 2026-11-21T09:00:00Z nor a length such as 24h or 7d")
    })
}

pub async fn run(args: UsageArgs) -> Result<()> {
    if let (Some(since), Some(until)) = (args.since, args.until) {
        anyhow::ensure!(since < until, "--since must be before --until");
    }
    let mut by: Vec<GroupBy> = Vec::new();
    for key in args.by {
        if !by.contains(&key) {
            by.push(key);
        }
    }
    if by.is_empty() {
        by.push(GroupBy::Identity);
    }
    let config = crate::load_config(&args.config)?;
    let store = StateStore::open(config.state.url.expose()).await.context("cannot open the state store")?;
    let filter = UsageFilter {
        since: args.since,
        until: args.until,
        connection: args.connection,
        identity: args.identity,
        run: args.run,
        node: args.node,
    };
    let rows = store.usage(&filter).await?;
    let (groups, total) = sum(&rows, &by);
    if args.json {
        let format = |at: Option<OffsetDateTime>| at.map(warden_state::timestamp);
        let groups: Vec<Value> = groups
            .iter()
            .map(|(key, sums)| {
                let mut object = Map::new();
                for (group_by, value) in by.iter().zip(key) {
                    object.insert(group_by.name().into(), json!(value));
                }
                sums.json(&mut object);
                Value::Object(object)
            })
            .collect();
        let mut total_object = Map::new();
        total.json(&mut total_object);
        let report = json!({
            "since": format(filter.since),
            "until": format(filter.until),
            "by": by.iter().map(|key| key.name()).collect::<Vec<_>>(),
            "groups": groups,
            "total": total_object,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&by, &groups, &total);
    }
    Ok(())
}

/// The rows summed per the `by` keys (in key order), and over all.
fn sum<'a>(rows: &'a [UsageRow], by: &[GroupBy]) -> (BTreeMap<Vec<Option<&'a str>>, Sums>, Sums) {
    let mut groups: BTreeMap<Vec<Option<&str>>, Sums> = BTreeMap::new();
    let mut total = Sums::default();
    for row in rows {
        groups.entry(by.iter().map(|key| key.of(row)).collect()).or_default().add(row);
        total.add(row);
    }
    (groups, total)
}

/// One line per group and a total line, in columns; `by` is never empty ([`run`] falls back to the identity).
fn print_table(by: &[GroupBy], groups: &BTreeMap<Vec<Option<&str>>, Sums>, total: &Sums) {
    const NUMBERS: [&str; 4] = ["REQUESTS", "INPUT", "OUTPUT", "TOTAL"];
    let mut lines: Vec<(Vec<String>, [u64; 4])> = groups
        .iter()
        .map(|(key, sums)| (key.iter().map(|value| value.unwrap_or("-").to_string()).collect(), sums.columns()))
        .collect();
    let mut total_labels = vec![String::new(); by.len()];
    total_labels[0] = "total".to_string();
    lines.push((total_labels, total.columns()));
    let label_widths: Vec<usize> = by
        .iter()
        .enumerate()
        .map(|(index, key)| {
            lines.iter().map(|(labels, _)| labels[index].chars().count()).max().unwrap_or(0).max(key.name().len())
        })
        .collect();
    let number_widths: Vec<usize> = NUMBERS
        .iter()
        .enumerate()
        .map(|(index, header)| {
            lines.iter().map(|(_, numbers)| numbers[index].to_string().len()).max().unwrap_or(0).max(header.len())
        })
        .collect();
    let header: Vec<String> = by
        .iter()
        .zip(&label_widths)
        .map(|(key, width)| format!("{:<width$}", key.name().to_uppercase()))
        .chain(NUMBERS.iter().zip(&number_widths).map(|(header, width)| format!("{header:>width$}")))
        .collect();
    println!("{}", header.join("  "));
    for (labels, numbers) in &lines {
        let line: Vec<String> = labels
            .iter()
            .zip(&label_widths)
            .map(|(label, width)| format!("{label:<width$}"))
            .chain(numbers.iter().zip(&number_widths).map(|(number, width)| format!("{number:>width$}")))
            .collect();
        println!("{}", line.join("  "));
    }
}
