//! What `[audit] durability = "sync"` adds to a statement: `SELECT 1` over the simple protocol, one after another
//! on an open connection, directly to PostgreSQL (the floor), through a gateway with the default `async`
//! durability, and through a gateway with `sync` (the request is durable before it is forwarded, the record before
//! the answer reaches the client). Prints p50 and p99 microseconds per statement for each side, and what sync adds
//! to the p99 (and the p50) over async.
//!
//! `cargo bench -p warden-cli --bench durability` (release profile). `BENCH_ROUNDS` sets the measured rounds
//! (default 10, after one warm-up round); `BENCH_STATEMENTS` the statements per side and round (default 2,000).
//!
//! Two gateways in front of the same PostgreSQL, each with its own SQLite state store in its own temporary
//! directory, as the default test gateway has. Each round runs every side's statements in turn, the order rotating
//! from round to round, so drift on this noisy machine falls on all sides alike. The client, both gateways, their
//! state writers and PostgreSQL share the machine's cores: the figures are the round trip as a client sees it.

use std::time::Instant;

use tokio_postgres::Client;
use warden_testkit::{AppDatabase, TempPostgres, TestGateway};

const QUERY: &str = "SELECT 1";
const WARM_UP_ROUNDS: usize = 1;
const SYNC: &str = "[audit]\ndurability = \"sync\"\n";
const SIDES: [&str; 3] = ["direct PostgreSQL", "warden, async", "warden, sync"];

async fn connect(connection_string: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(connection_string, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connect {connection_string:?}: {error:?}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Runs [`QUERY`] `count` times, one after another; pushes each one's microseconds onto `samples`.
async fn time_statements(client: &Client, count: usize, samples: &mut Vec<f64>) {
    for _ in 0..count {
        let start = Instant::now();
        let messages = client.simple_query(QUERY).await.expect("SELECT 1");
        samples.push(start.elapsed().as_secs_f64() * 1e6);
        assert_eq!(messages.len(), 3, "SELECT 1 answers RowDescription, one row and CommandComplete");
    }
}

/// Whether the gateway's audit log holds a `statement.request` event: recorded only in sync mode, before the
/// statement is forwarded.
async fn records_requests(gateway: &TestGateway) -> bool {
    gateway.flush().await;
    let (events, _) = gateway.store().audit_log(None).await.expect("read the audit log");
    events.iter().any(|sealed| sealed.event.kind == "statement.request")
}

/// The value at `quantile` (nearest rank) of `values`.
fn quantile(values: &[f64], quantile: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn environment(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

async fn run(postgres: &TempPostgres, app: &AppDatabase) {
    let rounds = environment("BENCH_ROUNDS", 10).max(1);
    let statements = environment("BENCH_STATEMENTS", 2_000).max(1);

    let async_gateway = TestGateway::builder(postgres, app).start().await;
    let sync_gateway = TestGateway::builder(postgres, app).config_extra(SYNC).start().await;
    let direct = connect(&format!(
        "host=127.0.0.1 port={} user={} password={} dbname={} sslmode=disable",
        postgres.port(),
        app.role,
        app.password,
        app.database
    ))
    .await;
    let through_async = async_gateway.connect().await;
    let through_sync = sync_gateway.connect().await;
    let clients = [&direct, &through_async, &through_sync];

    // Not timed: each gateway runs in the mode it was configured with.
    through_async.simple_query(QUERY).await.expect("SELECT 1 through the async gateway");
    through_sync.simple_query(QUERY).await.expect("SELECT 1 through the sync gateway");
    assert!(!records_requests(&async_gateway).await, "the async gateway records requests: it runs in sync mode");
    assert!(records_requests(&sync_gateway).await, "the sync gateway records no requests: it runs in async mode");

    let mut samples: Vec<Vec<f64>> = SIDES.iter().map(|_| Vec::with_capacity(rounds * statements)).collect();
    let mut warm_up = Vec::new();
    let start = Instant::now();
    for round in 0..WARM_UP_ROUNDS + rounds {
        for turn in 0..SIDES.len() {
            let side = (round + turn) % SIDES.len();
            let into = if round < WARM_UP_ROUNDS { &mut warm_up } else { &mut samples[side] };
            time_statements(clients[side], statements, into).await;
        }
    }
    let elapsed = start.elapsed();

    for (gateway, name) in [(&async_gateway, "async"), (&sync_gateway, "sync")] {
        gateway.flush().await;
        let dropped = gateway.gateway().recorder().dropped_events();
        assert_eq!(dropped, 0, "the {name} gateway dropped {dropped} recorded events");
    }

    println!(
        "\n`{QUERY}`, simple protocol, one after another on an open connection: {statements} per side and round, \
         {rounds} rounds after {WARM_UP_ROUNDS} warm-up, sides in turn ({:.0} s in all)",
        elapsed.as_secs_f64()
    );
    println!(
        "state store: SQLite, one per gateway; sync: request durable before forwarding, record before answering\n"
    );
    println!("{:<18}  {:>7}  {:>7}  {:>8}  {:>12}", "side", "p50 µs", "p99 µs", "mean µs", "statements/s");
    for (side, name) in SIDES.iter().enumerate() {
        let side_samples = &samples[side];
        let mean = side_samples.iter().sum::<f64>() / side_samples.len() as f64;
        println!(
            "{:<18}  {:>7.0}  {:>7.0}  {:>8.0}  {:>12.0}",
            name,
            quantile(side_samples, 0.5),
            quantile(side_samples, 0.99),
            mean,
            1e6 / mean
        );
    }
    let (async_samples, sync_samples) = (&samples[1], &samples[2]);
    println!(
        "\nsync adds p99 {:.0} µs (p50 {:.0} µs) per statement over async",
        quantile(sync_samples, 0.99) - quantile(async_samples, 0.99),
        quantile(sync_samples, 0.5) - quantile(async_samples, 0.5)
    );
}

fn main() {
    let postgres = TempPostgres::start().expect("throwaway PostgreSQL starts");
    let app = AppDatabase::create(&postgres, "app");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(run(&postgres, &app));
}
