//! What judging a statement costs: classification (warden-sql) plus authorization (warden-policy, Cedar), through
//! the very guard a session runs, cached and uncached, next to the baseline of merely parsing the statement with
//! libpg_query. Prints nanoseconds per statement and the ratio to the baseline.
//!
//! `cargo bench -p warden-gateway --bench statement` (release profile). `BENCH_SECONDS` sets the measuring time per
//! case (default 1).
//!
//! A hand-rolled loop rather than criterion: each case is one closure timed in batches, and what a reader wants is
//! the side-by-side table with ratios, which criterion does not print.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_identity::{Identity, IdentityKind};
use warden_policy::{Action, Policies, Principal, RequestContext, Resource};
use warden_sql::{Analyzer, ParseOptions};

/// The statement pgbench -S sends.
const PGBENCH_SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";

/// A report query: CTE, join, subquery, five tables.
const REPORT: &str = "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') \
    SELECT c.name, count(*), sum(i.amount) FROM recent r JOIN customers c ON c.id = r.customer_id \
    JOIN order_items i ON i.order_id = r.id WHERE c.region IN (SELECT region FROM regions WHERE active) \
    AND NOT EXISTS (SELECT 1 FROM refunds f WHERE f.order_id = r.id) GROUP BY c.name ORDER BY 3 DESC LIMIT 20";

/// Twelve policies as a deployment might have them: most do not apply to the benchmark's identity.
const POLICIES: &str = r#"
@id("agents-connect-read")
permit (principal in Warden::Group::"agents",
        action in [Warden::Action::"connect", Warden::Action::"read"],
        resource in Warden::Connection::"bench");
@id("agents-write-history")
permit (principal in Warden::Group::"agents", action == Warden::Action::"write",
        resource == Warden::Table::"bench/public.pgbench_history");
@id("no-unbounded-deletes")
forbid (principal, action == Warden::Action::"write", resource)
when { context has statement && context.statement.kind == "delete"
       && context.statement has has_where && !context.statement.has_where };
@id("dba-everything")
permit (principal in Warden::Group::"dba", action, resource);
@id("dba-from-office")
forbid (principal in Warden::Group::"dba", action, resource)
unless { context.client has address && context.client.address.isInRange(ip("10.0.0.0/8")) };
@id("readers-read")
permit (principal in Warden::Group::"readers",
        action in [Warden::Action::"connect", Warden::Action::"read"], resource);
@id("readers-not-accounts")
forbid (principal in Warden::Group::"readers", action,
        resource == Warden::Table::"bench/public.pgbench_accounts");
@id("analysts-shop")
permit (principal in Warden::Group::"analysts",
        action in [Warden::Action::"connect", Warden::Action::"read"], resource in Warden::Connection::"shop");
@id("etl-writes-shop")
permit (principal == Warden::Identity::"etl",
        action in [Warden::Action::"write", Warden::Action::"ddl"], resource in Warden::Connection::"shop");
@id("no-ddl-from-notebooks")
forbid (principal, action == Warden::Action::"ddl", resource)
when { context.client has application_name && context.client.application_name like "*notebook*" };
@id("orders-append-only")
forbid (principal, action == Warden::Action::"write", resource == Warden::Table::"shop/public.orders")
when { context has statement && context.statement.kind != "insert" };
@id("oncall-admin")
permit (principal in Warden::Group::"oncall", action == Warden::Action::"admin", resource);
"#;

struct Case {
    name: &'static str,
    nanos: f64,
}

/// Median nanoseconds per call of `operation` over batches spread across the measuring time.
fn measure(name: &'static str, mut operation: impl FnMut()) -> Case {
    let seconds: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|value| value.parse().ok()).unwrap_or(1.0);
    // Warm up, and size a batch to about 10 ms.
    let mut batch = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            operation();
        }
        if start.elapsed() > Duration::from_millis(10) {
            break;
        }
        batch *= 2;
    }
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline || samples.len() < 5 {
        let start = Instant::now();
        for _ in 0..batch {
            operation();
        }
        samples.push(start.elapsed().as_nanos() as f64 / batch as f64);
    }
    samples.sort_by(f64::total_cmp);
    Case { name, nanos: samples[samples.len() / 2] }
}

fn identity() -> Identity {
    Identity::new("agent-1", vec!["agents".into()], IdentityKind::ApiKey)
}

fn policies() -> Policies {
    Policies::from_sources(&[("bench.cedar".into(), POLICIES.to_string())]).expect("benchmark policies are valid")
}

/// Statements of the same shape on different tables: each is a new cache entry for the analyzer.
fn distinct_shapes(template: &str, count: usize) -> Vec<String> {
    (0..count).map(|index| template.replace("pgbench_accounts", &format!("pgbench_accounts_{index}"))).collect()
}

fn main() {
    let options = ParseOptions::default();
    let mut cases = Vec::new();

    // Baseline: libpg_query's parse alone, what any parser-based gateway pays before classifying anything.
    cases.push(measure("baseline: pg_query::parse, pgbench -S", || {
        black_box(pg_query::parse(black_box(PGBENCH_SELECT), pg_query::ParserOptions::default()).expect("parses"));
    }));
    cases.push(measure("classify uncached, pgbench -S", || {
        black_box(warden_sql::analyze(black_box(PGBENCH_SELECT), options).expect("analyses"));
    }));
    let analyzer = Analyzer::default();
    cases.push(measure("classify cached (key + lookup), pgbench -S", || {
        black_box(analyzer.analyze(black_box(PGBENCH_SELECT), options).expect("analyses"));
    }));

    let loaded = policies();
    let identity = identity();
    let principal = Principal { name: &identity.name, groups: &identity.groups };
    let resource = Resource::Table { connection: "bench", schema: "public", table: "pgbench_accounts" };
    let context = RequestContext {
        client_address: Some([127, 0, 0, 1].into()),
        application_name: Some("pgbench"),
        statement_kind: Some("select"),
        has_where: None,
        token: None,
        approved: false,
        http_path: None,
        model: None,
    };
    cases.push(measure("authorize one (read, table), 12 policies", || {
        black_box(loaded.authorize(&principal, Action::Read, black_box(&resource), &context));
    }));

    // The guard a session runs. Uncached: an analyzer that keeps one shape, fed four in turn, so every statement is
    // parsed, classified and authorized afresh.
    let shapes = distinct_shapes(PGBENCH_SELECT, 4);
    let mut guard = warden_gateway::session_guard(policies(), Arc::new(Analyzer::new(1)), identity.clone(), "bench");
    let mut next = 0;
    cases.push(measure("guard uncached: classify + authorize, pgbench -S", || {
        next = (next + 1) % shapes.len();
        let judgement = guard.query(black_box(&shapes[next]));
        assert!(judgement.refusal.is_none());
    }));
    let mut guard = warden_gateway::session_guard(policies(), Arc::new(Analyzer::default()), identity.clone(), "bench");
    cases.push(measure("guard cached: classify + authorize, pgbench -S", || {
        let judgement = guard.query(black_box(PGBENCH_SELECT));
        assert!(judgement.refusal.is_none());
    }));

    let report_policies = POLICIES.replace("\"bench\"", "\"shop\"");
    let report_policies = Policies::from_sources(&[("bench.cedar".into(), report_policies)]).expect("valid");
    cases.push(measure("baseline: pg_query::parse, 5-table report", || {
        black_box(pg_query::parse(black_box(REPORT), pg_query::ParserOptions::default()).expect("parses"));
    }));
    let reports: Vec<String> = (0..4).map(|index| REPORT.replace("regions", &format!("regions_{index}"))).collect();
    let mut guard = warden_gateway::session_guard(report_policies, Arc::new(Analyzer::new(1)), identity, "shop");
    cases.push(measure("guard uncached: classify + authorize, 5-table report", || {
        next = (next + 1) % reports.len();
        let judgement = guard.query(black_box(&reports[next]));
        assert!(judgement.refusal.is_none());
    }));
    guard.query(&reports[0]);
    cases.push(measure("guard cached: classify + authorize, 5-table report", || {
        let judgement = guard.query(black_box(&reports[0]));
        assert!(judgement.refusal.is_none());
    }));

    println!("\n{:<52}  {:>12}  {:>14}", "case", "ns/statement", "vs baseline");
    let mut baseline = f64::NAN;
    for case in &cases {
        if case.name.starts_with("baseline") {
            baseline = case.nanos;
        }
        println!("{:<52}  {:>12.0}  {:>13.3}x", case.name, case.nanos, case.nanos / baseline);
    }
}
