//! What the audit log costs the writer: statement events appended per second with `audit.durability = async`
//! (recorded as fast as the queue accepts them, then one flush) and with `sync` (each recording task waits for its
//! statement to be durable before recording the next), and the latency of that wait. On SQLite in a temporary
//! directory and on a throwaway PostgreSQL, through an audited recorder whose checkpoints a test Ed25519 key signs,
//! as the gateway's are; the async run is repeated with a plain recorder (no signer) as the baseline.
//!
//! `cargo bench -p warden-state --bench audit` (release profile). `BENCH_EVENTS` sets the events of an async run
//! (default 200,000), `BENCH_ROUNDS` the async runs per row (default 3, the median is printed), `BENCH_SECONDS`
//! the length of a sync run (default 5).
//!
//! A hand-rolled harness rather than criterion: each row is a whole writer run with its own store, and what a
//! reader wants is the table. Eight recording tasks stand for eight sessions; they, the writer and the database
//! share the machine's cores, as they do in a gateway. The chain is always written: the signer only adds a
//! checkpoint at most every second and at the flush, so the baseline row shows what signing costs, not what the
//! chain costs. The async tasks fill the queue within milliseconds and then retry, yielding, until the writer makes
//! room (the QueueFull count): on a small machine those retries take CPU from the writer, so the async rate is the
//! writer's under a saturating load, not its rate on an idle machine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use warden_state::{AuditSigner, Decision, RecordError, Recorder, SessionStart, StateStore, StatementRecord};
use warden_testkit::TempPostgres;

/// Recording tasks, each standing for one session.
const TASKS: usize = 8;

/// The gateway's queue capacity (warden-gateway's `RECORDER_CAPACITY`).
const CAPACITY: usize = 65_536;

/// The statement pgbench -S sends: what the gateway records most often.
const TEXT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";

/// An Ed25519 key signing checkpoints, as the gateway's would.
struct BenchSigner {
    pair: aws_lc_rs::signature::Ed25519KeyPair,
    key_id: String,
}

impl BenchSigner {
    fn new() -> Arc<BenchSigner> {
        use aws_lc_rs::signature::KeyPair;
        let document = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .expect("generate a key");
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(document.as_ref()).expect("parse the key");
        let raw: [u8; 32] = pair.public_key().as_ref().try_into().expect("an Ed25519 public key is 32 bytes");
        let key_id = warden_audit::PublicKey::from_raw(raw).key_id().to_string();
        Arc::new(BenchSigner { pair, key_id })
    }
}

impl AuditSigner for BenchSigner {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.pair.sign(message).as_ref().try_into().expect("an Ed25519 signature is 64 bytes")
    }
}

/// Where a run's store lives: a fresh SQLite file per run, or one database on the shared throwaway server.
enum Backend<'a> {
    Sqlite,
    Postgres(&'a str),
}

impl Backend<'_> {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Opens the store; the returned directory (SQLite) must outlive it.
    async fn open(&self) -> (StateStore, Option<tempfile::TempDir>) {
        match self {
            Backend::Sqlite => {
                let directory = tempfile::tempdir().expect("create a temporary directory");
                let url = format!("sqlite://{}", directory.path().join("warden.db").display());
                (StateStore::open(&url).await.expect("open the SQLite store"), Some(directory))
            }
            Backend::Postgres(url) => (StateStore::open(url).await.expect("open the PostgreSQL store"), None),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Signing {
    Signed,
    Plain,
}

fn recorder(store: &StateStore, signing: Signing) -> Recorder {
    match signing {
        Signing::Signed => store.audited_recorder(CAPACITY, BenchSigner::new()),
        Signing::Plain => store.recorder(CAPACITY),
    }
}

/// Keeps session ids apart between runs on the shared PostgreSQL database.
fn unique_prefix() -> String {
    format!("bench-{}-{}", std::process::id(), OffsetDateTime::now_utc().unix_timestamp_nanos())
}

/// Starts one session per task, stored before the clock starts; returns their ids.
async fn start_sessions(recorder: &Recorder) -> Vec<Arc<str>> {
    let prefix = unique_prefix();
    let ids: Vec<Arc<str>> = (0..TASKS).map(|task| Arc::from(format!("{prefix}-{task}"))).collect();
    for id in &ids {
        let start = SessionStart {
            id: id.to_string(),
            identity: "agent-1".to_string(),
            connection: "bench".to_string(),
            client_address: "127.0.0.1:50000".to_string(),
            user_name: "app".to_string(),
            application_name: Some("pgbench".to_string()),
            started_at: OffsetDateTime::now_utc(),
            credential: Some("api_key".to_string()),
            token_id: None,
            run: None,
            node: None,
        };
        recorder.session_started(start).expect("the queue has room");
    }
    recorder.flush().await.expect("the sessions are stored");
    ids
}

/// A statement record as the gateway makes one: text and decision shared, nothing copied.
fn statement(session_id: &Arc<str>, seq: u64, text: &Arc<str>, decision: &Arc<Decision>) -> StatementRecord {
    StatementRecord {
        session_id: Arc::clone(session_id),
        seq,
        started_at: OffsetDateTime::now_utc(),
        duration: Duration::from_micros(180),
        text: Arc::clone(text),
        rows: Some(1),
        error: None,
        decision: Some(Arc::clone(decision)),
        result: None,
        http: None,
        model: None,
        tokens: None,
        batch: None,
    }
}

fn decision() -> Arc<Decision> {
    Arc::new(Decision::new(
        true,
        vec!["read".into()],
        vec!["public.pgbench_accounts".into()],
        vec!["agents-connect-read".into()],
    ))
}

/// Fails unless every session holds `expected` statements and the writer reported no error.
async fn check_stored(store: &StateStore, recorder: &Recorder, ids: &[Arc<str>], expected: &[u64]) {
    assert_eq!(recorder.write_errors(), 0, "the writer failed to store some events");
    for (id, &expected) in ids.iter().zip(expected) {
        let session = store.session(id).await.expect("read the session").expect("the session is stored");
        assert_eq!(session.statement_count as u64, expected, "session {id}: statements stored");
    }
}

struct AsyncRun {
    events_per_second: f64,
    queue_full: u64,
}

/// `events` statements from [`TASKS`] tasks as fast as the queue takes them (yielding whenever it is full), then
/// one flush; the clock runs from the first record to the flush's answer.
async fn run_async(backend: &Backend<'_>, signing: Signing, events: u64) -> AsyncRun {
    let (store, _directory) = backend.open().await;
    let recorder = recorder(&store, signing);
    let ids = start_sessions(&recorder).await;
    let per_task = events / TASKS as u64;
    let queue_full = Arc::new(AtomicU64::new(0));
    let text: Arc<str> = Arc::from(TEXT);
    let decision = decision();

    let start = Instant::now();
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let (recorder, id, text, decision) = (recorder.clone(), Arc::clone(id), text.clone(), decision.clone());
            let queue_full = Arc::clone(&queue_full);
            tokio::spawn(async move {
                let mut full = 0;
                for seq in 1..=per_task {
                    loop {
                        match recorder.statement(statement(&id, seq, &text, &decision)) {
                            Ok(()) => break,
                            Err(RecordError::QueueFull) => {
                                full += 1;
                                tokio::task::yield_now().await;
                            }
                            Err(RecordError::WriterStopped) => panic!("the writer stopped"),
                        }
                    }
                }
                queue_full.fetch_add(full, Ordering::Relaxed);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a recording task");
    }
    recorder.flush().await.expect("every event is stored");
    let elapsed = start.elapsed();

    check_stored(&store, &recorder, &ids, &[per_task; TASKS]).await;
    AsyncRun {
        events_per_second: (per_task * TASKS as u64) as f64 / elapsed.as_secs_f64(),
        queue_full: queue_full.load(Ordering::Relaxed),
    }
}

struct SyncRun {
    events_per_second: f64,
    /// Microseconds each durable wait took, all tasks together.
    waits: Vec<f64>,
}

/// [`TASKS`] tasks, each recording a statement and waiting for it to be durable before the next, for `length`.
async fn run_sync(backend: &Backend<'_>, length: Duration) -> SyncRun {
    let (store, _directory) = backend.open().await;
    let recorder = recorder(&store, Signing::Signed);
    let ids = start_sessions(&recorder).await;
    let text: Arc<str> = Arc::from(TEXT);
    let decision = decision();

    let start = Instant::now();
    let deadline = start + length;
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let (recorder, id, text, decision) = (recorder.clone(), Arc::clone(id), text.clone(), decision.clone());
            tokio::spawn(async move {
                let mut waits = Vec::new();
                let mut seq = 0;
                while Instant::now() < deadline {
                    seq += 1;
                    recorder.statement(statement(&id, seq, &text, &decision)).expect("the queue has room");
                    let waiting = Instant::now();
                    recorder.durable().await.expect("the statement is durable");
                    waits.push(waiting.elapsed().as_secs_f64() * 1e6);
                }
                waits
            })
        })
        .collect();
    let mut waits = Vec::new();
    let mut per_task = Vec::new();
    for task in tasks {
        let task_waits = task.await.expect("a recording task");
        per_task.push(task_waits.len() as u64);
        waits.extend(task_waits);
    }
    let elapsed = start.elapsed();

    recorder.flush().await.expect("every event is stored");
    check_stored(&store, &recorder, &ids, &per_task).await;
    SyncRun { events_per_second: waits.len() as f64 / elapsed.as_secs_f64(), waits }
}

/// The value at `quantile` (nearest rank) of `values`.
fn quantile(values: &[f64], quantile: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn environment<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

struct Row {
    backend: &'static str,
    mode: &'static str,
    events_per_second: f64,
    detail: String,
}

async fn measure(backend: &Backend<'_>, events: u64, rounds: usize, length: Duration, rows: &mut Vec<Row>) {
    // Signed and plain runs alternate, so drift on this noisy machine falls on both alike.
    let mut runs: [Vec<AsyncRun>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (index, signing) in [Signing::Signed, Signing::Plain].into_iter().enumerate() {
            runs[index].push(run_async(backend, signing, events).await);
        }
    }
    for (index, mode) in ["async, signed checkpoints", "async, plain recorder (baseline)"].into_iter().enumerate() {
        let rates: Vec<f64> = runs[index].iter().map(|run| run.events_per_second).collect();
        let queue_full: Vec<String> = runs[index].iter().map(|run| run.queue_full.to_string()).collect();
        rows.push(Row {
            backend: backend.name(),
            mode,
            events_per_second: quantile(&rates, 0.5),
            detail: format!(
                "{events} events; runs {:.0}–{:.0}/s; QueueFull {}",
                quantile(&rates, 0.0),
                quantile(&rates, 1.0),
                queue_full.join("/")
            ),
        });
    }
    let sync = run_sync(backend, length).await;
    rows.push(Row {
        backend: backend.name(),
        mode: "sync, signed checkpoints",
        events_per_second: sync.events_per_second,
        detail: format!(
            "{} events in {:.0} s; durable wait p50 {:.0} µs, p99 {:.0} µs",
            sync.waits.len(),
            length.as_secs_f64(),
            quantile(&sync.waits, 0.5),
            quantile(&sync.waits, 0.99)
        ),
    });
}

async fn run(postgres_url: Option<&str>) {
    let events: u64 = environment("BENCH_EVENTS", 200_000);
    let rounds: usize = environment("BENCH_ROUNDS", 3).max(1);
    let length = Duration::from_secs_f64(environment("BENCH_SECONDS", 5.0));
    let mut rows = Vec::new();
    measure(&Backend::Sqlite, events, rounds, length, &mut rows).await;
    if let Some(url) = postgres_url {
        measure(&Backend::Postgres(url), events, rounds, length, &mut rows).await;
    }

    println!(
        "\n{TASKS} recording tasks, queue capacity {CAPACITY}; async: median of {rounds} runs, signed and plain \
         alternating; sync: each task waits for durable() after every statement\n"
    );
    println!("{:<9}  {:<33}  {:>9}  {:>8}  detail", "store", "mode", "events/s", "vs async");
    for row in &rows {
        let async_rate = rows
            .iter()
            .find(|other| other.backend == row.backend && other.mode == "async, signed checkpoints")
            .map_or(f64::NAN, |other| other.events_per_second);
        println!(
            "{:<9}  {:<33}  {:>9.0}  {:>7.3}x  {}",
            row.backend,
            row.mode,
            row.events_per_second,
            row.events_per_second / async_rate,
            row.detail
        );
    }
}

fn main() {
    // PostgreSQL is optional: without the server binaries the SQLite rows are still measured.
    let postgres = match TempPostgres::start() {
        Ok(postgres) => {
            postgres.create_role("warden", "state-store-password", false).expect("create role");
            postgres.create_database("warden_state", "warden").expect("create database");
            Some(postgres)
        }
        Err(error) => {
            eprintln!("no throwaway PostgreSQL ({error}); measuring SQLite only");
            None
        }
    };
    let url = postgres
        .as_ref()
        .map(|postgres| format!("postgres://warden:state-store-password@{}/warden_state", postgres.address()));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(run(url.as_deref()));
}
