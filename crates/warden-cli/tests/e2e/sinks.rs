//! The `webhook` audit sink against a loopback receiver that checks every signature itself: every record arrives,
//! once and in order, and verifies; 503s are retried; a receiver that cannot be reached does not hold up clients;
//! a receiver that refuses the signature is not hammered. The secret never appears in the gateway's logs.

use crate::OutputInPlace;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use warden_testkit::receivers::WebhookReceiver;
use warden_testkit::{AppDatabase, TempPostgres, TestGateway};

/// How long a test waits for the sink to deliver something it should.
const DELIVERY: Duration = Duration::from_secs(15);

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden")).args(args).output_in_place().expect("run warden")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Everything logged in this test process (nextest runs each test in a process of its own), at debug level and
/// above, as text; a watch channel so a test can wait for a line without polling.
fn logs() -> &'static watch::Sender<String> {
    static LOGS: OnceLock<watch::Sender<String>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let (logs, _) = watch::channel(String::new());
        let sink = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .try_init();
        logs
    })
}

struct LogWriter(watch::Sender<String>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.send_modify(|logs| logs.push_str(&String::from_utf8_lossy(bytes)));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits until a log line contains every one of `needles`; that line.
async fn logged(needles: &[&str], timeout: Duration) -> String {
    let mut receiver = logs().subscribe();
    let found =
        |logs: &str| logs.lines().find(|line| needles.iter().all(|needle| line.contains(needle))).map(str::to_string);
    // `wait_for` answers with a read guard on the log: drop it before reading the log again, or a writer waiting
    // between the two reads (a sink thread logging) deadlocks both.
    let waited = tokio::time::timeout(timeout, receiver.wait_for(|logs| found(logs).is_some())).await.map(|_| ());
    let logs = logs().borrow().clone();
    match waited {
        Ok(_) => found(&logs).expect("just found"),
        Err(_) => panic!("no log line with {needles:?} within {timeout:?}; the log:\n{logs}"),
    }
}

/// A webhook secret unique to the test, in a file the config names.
struct WebhookSecret {
    value: String,
    file: PathBuf,
    _directory: tempfile::TempDir,
}

impl WebhookSecret {
    fn new() -> WebhookSecret {
        let directory = tempfile::Builder::new().prefix("warden-webhook-").tempdir().expect("temp dir");
        let value = format!("whsec-{}", &warden_identity::generate_api_key()[3..35]);
        let file = directory.path().join("webhook.secret");
        std::fs::write(&file, &value).expect("write the secret");
        WebhookSecret { value, file, _directory: directory }
    }
}

struct Setup {
    gateway: TestGateway,
    _app: AppDatabase,
    _postgres: TempPostgres,
}

async fn gateway_with(sink: &str) -> Setup {
    logs();
    let (postgres, app) = crate::start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app).config_extra(sink).start().await;
    Setup { gateway, _app: app, _postgres: postgres }
}

/// Statements through the gateway arrive signed, every event in order with every checkpoint, and the received lines
/// verify as an export with the gateway's public key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receives_every_record_signed_and_the_lines_verify() {
    let secret = WebhookSecret::new();
    let receiver = WebhookReceiver::start(&secret.value).await;
    let Setup { mut gateway, _app, _postgres } = gateway_with(&receiver.sink_config(&secret.file, 500)).await;
    let client = gateway.connect().await;
    client.batch_execute("CREATE TABLE hooked (id int); INSERT INTO hooked VALUES (1), (2)").await.expect("statements");
    client.simple_query("SELECT 'webhook probe' FROM hooked").await.expect("select");
    drop(client);
    gateway.stop().await;
    let (events, checkpoints) = gateway.store().audit_log(None).await.expect("audit log");
    let last = checkpoints.last().expect("a checkpoint at shutdown").signature.clone();

    let lines = receiver.wait_for(&last, DELIVERY).await;
    let inbox = receiver.inbox();
    assert!(inbox.rejected_deliveries.is_empty(), "every signature checks out: {inbox:?}");
    assert_eq!(inbox.duplicates, 0, "nothing was sent twice: {inbox:?}");
    let (received, received_checkpoints) = warden_audit::parse_lines(&lines.join("\n")).expect("every line a record");
    assert_eq!(received, events, "every stored event, in order");
    let signatures = |checkpoints: &[warden_audit::Checkpoint]| -> Vec<String> {
        checkpoints.iter().map(|checkpoint| checkpoint.signature.clone()).collect()
    };
    assert_eq!(signatures(&received_checkpoints), signatures(&checkpoints), "every checkpoint, in order");
    assert!(lines.iter().any(|line| line.contains("webhook probe")));

    let directory = gateway.directory();
    let file = directory.join("received.jsonl");
    std::fs::write(&file, lines.iter().map(|line| format!("{line}\n")).collect::<String>()).unwrap();
    let key = directory.join("audit.pub");
    let printed = run(&["audit", "public-key", "--config", gateway.config_path.to_str().unwrap()]);
    assert!(printed.status.success(), "{}", text(&printed));
    std::fs::write(&key, &printed.stdout).unwrap();
    let verified = run(&["audit", "verify", "--file", file.to_str().unwrap(), "--public-key", key.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(!logs().borrow().contains(&secret.value), "the secret is never logged");
}

/// A receiver answering 503 three times: the batch is retried (same delivery id) and every record still arrives
/// exactly once, in order, with later batches behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_answering_503_gets_every_record_once_in_order() {
    let secret = WebhookSecret::new();
    let receiver = WebhookReceiver::start(&secret.value).await;
    receiver.unavailable_for(3);
    // Small batches: several wait behind the one being retried.
    let Setup { mut gateway, _app, _postgres } = gateway_with(&receiver.sink_config(&secret.file, 2)).await;
    let client = gateway.connect().await;
    for n in 0..5 {
        client.simple_query(&format!("SELECT 'retried {n}'")).await.expect("statement");
    }
    drop(client);
    gateway.stop().await;
    let (events, checkpoints) = gateway.store().audit_log(None).await.expect("audit log");
    let last = checkpoints.last().expect("a final checkpoint").signature.clone();

    let lines = receiver.wait_for(&last, DELIVERY).await;
    let inbox = receiver.inbox();
    assert_eq!(inbox.unavailable_deliveries.len(), 3, "{inbox:?}");
    assert!(
        inbox.unavailable_deliveries.iter().all(|delivery| *delivery == inbox.deliveries[0]),
        "the first batch was retried under its own delivery id: {inbox:?}"
    );
    assert!(inbox.rejected_deliveries.is_empty(), "{inbox:?}");
    let (received, _) = warden_audit::parse_lines(&lines.join("\n")).expect("every line a record");
    assert_eq!(received, events, "every event exactly once, in order");
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), lines.len(), "no record twice");
    assert!(inbox.deliveries.len() > 3, "several batches of at most 2 records: {}", inbox.deliveries.len());
    logged(&["audit webhook delivery failed; retrying", &receiver.url(), "503"], DELIVERY).await;
}

/// A webhook on a closed port: clients run statements as usual, every one recorded in the store, while the sink
/// retries; at shutdown it gives up after 5 s, saying so. The secret is never logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_webhook_does_not_hold_up_clients() {
    let secret = WebhookSecret::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{closed}/ingest");
    let sink = format!(
        "[[audit.sink]]\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = {{ file = \"{}\" }}\nmax_batch = 10\n",
        secret.file.display()
    );
    let Setup { mut gateway, _app, _postgres } = gateway_with(&sink).await;
    let client = gateway.connect().await;
    client.batch_execute("CREATE TABLE busy (id int)").await.expect("create");
    logged(&["audit webhook delivery failed; retrying", &url], DELIVERY).await;
    // While the sink is failing, statements run as they would without it.
    let started = Instant::now();
    for n in 0..200 {
        client.simple_query(&format!("INSERT INTO busy VALUES ({n})")).await.expect("insert");
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(20), "200 statements took {elapsed:?}");
    let rows = client.query_one("SELECT count(*) FROM busy", &[]).await.expect("count");
    assert_eq!(rows.get::<_, i64>(0), 200);
    gateway.flush().await;
    let (events, _) = gateway.store().audit_log(None).await.expect("audit log");
    assert_eq!(
        events.iter().filter(|sealed| sealed.event.kind == "statement").count(),
        202,
        "every statement recorded"
    );
    drop(client);

    let stopping = Instant::now();
    gateway.stop().await;
    let gave_up = logged(&["gave up delivering to the audit webhook", &url], Duration::from_secs(15)).await;
    assert!(stopping.elapsed() < Duration::from_secs(10), "shutdown gave up in {:?}", stopping.elapsed());
    assert!(gave_up.contains("records dropped"), "{gave_up}");
    let logs = logs().borrow().clone();
    assert!(!logs.contains(&secret.value), "the secret is in the log:\n{logs}");
}

/// A receiver holding a different secret refuses every request with 401: the sink logs it as an error naming the
/// URL, drops the batch and moves on, never sending one delivery twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_refusing_the_signature_is_not_retried() {
    let secret = WebhookSecret::new();
    let receiver = WebhookReceiver::start("a different secret").await;
    let Setup { mut gateway, _app, _postgres } = gateway_with(&receiver.sink_config(&secret.file, 3)).await;
    let client = gateway.connect().await;
    for n in 0..4 {
        client.simple_query(&format!("SELECT 'refused {n}'")).await.expect("statements run regardless");
    }
    drop(client);
    gateway.stop().await;
    let (events, checkpoints) = gateway.store().audit_log(None).await.expect("audit log");
    let last = checkpoints.last().expect("a final checkpoint").signature.clone();

    let inbox = receiver
        .wait_until("the final checkpoint to be refused", DELIVERY, |inbox| {
            inbox.rejected_lines.iter().any(|line| line.contains(&last))
        })
        .await;
    assert!(inbox.lines.is_empty(), "nothing is accepted with the wrong secret: {inbox:?}");
    let mut deliveries = inbox.rejected_deliveries.clone();
    deliveries.sort();
    deliveries.dedup();
    assert_eq!(deliveries.len(), inbox.rejected_deliveries.len(), "a refused delivery is never sent again: {inbox:?}");
    assert_eq!(inbox.requests, inbox.rejected_deliveries.len());
    assert!(
        inbox.requests <= events.len() + checkpoints.len(),
        "{} requests for {} events",
        inbox.requests,
        events.len()
    );
    let refused = logged(&["the audit webhook refused a batch", &receiver.url(), "401"], DELIVERY).await;
    assert!(refused.contains("ERROR"), "{refused}");
    let logs = logs().borrow().clone();
    assert!(!logs.contains(&secret.value), "the secret is in the log:\n{logs}");
}
