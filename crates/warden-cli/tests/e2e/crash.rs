//! A crash under load: `warden gateway` as a child process in `[audit] durability = "sync"`, killed with SIGKILL
//! while four clients insert rows; every statement whose answer a client received must be in the audit log, and
//! the log must still verify.

use crate::OutputInPlace;
use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::start_postgres;

/// Concurrent clients inserting rows.
const LOAD_TASKS: i32 = 4;
/// How many acknowledged inserts to see before the kill.
const ACKNOWLEDGED_BEFORE_KILL: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sync_mode_a_killed_gateway_loses_no_acknowledged_statement() {
    let (postgres, app) = start_postgres(Default::default()).await;
    postgres
        .psql(&app.database, &format!("CREATE TABLE t (n int); GRANT SELECT, INSERT ON t TO {}", app.role))
        .expect("create table t");

    let directory = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let api_key = warden_identity::generate_api_key();
    let config = write_config(directory.path(), port, &postgres.address(), &app, &api_key);
    let stderr_path = directory.path().join("gateway.stderr");
    let mut gateway = ChildGateway::spawn(&config, &stderr_path);
    let connection_string =
        format!("host=127.0.0.1 port={port} user=loader dbname={} password={api_key} sslmode=disable", app.database);
    gateway.wait_until_ready(&connection_string).await;

    // Steady load: each task inserts unique values until its connection fails, and returns the values whose
    // INSERT was answered with success, and the first error with whether it came after the kill.
    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..LOAD_TASKS {
        let client = connect(&connection_string).await.unwrap_or_else(|error| panic!("load client {task}: {error:?}"));
        let acknowledged_count = acknowledged_count.clone();
        let killed = killed.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                let n = task * 1_000_000 + i;
                match client.simple_query(&insert_text(n)).await {
                    Ok(_) => {
                        acknowledged.push(n);
                        acknowledged_count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(error) => return (acknowledged, error, killed.load(Ordering::SeqCst)),
                }
            }
            unreachable!("the loop ends only on an error")
        }));
    }
    crate::wait_until(60, "acknowledged inserts under load", || {
        let enough = acknowledged_count.load(Ordering::SeqCst) >= ACKNOWLEDGED_BEFORE_KILL;
        let a_task_stopped = tasks.iter().any(|task| task.is_finished());
        async move { enough || a_task_stopped }
    })
    .await;
    killed.store(true, Ordering::SeqCst);
    gateway.kill();

    let mut acknowledged = Vec::new();
    for task in tasks {
        let (values, error, after_kill) = task.await.expect("load task");
        assert!(after_kill, "a load client failed before the kill: {error:?}\n{}", gateway.stderr());
        acknowledged.extend(values);
    }
    assert!(
        acknowledged.len() >= ACKNOWLEDGED_BEFORE_KILL,
        "only {} inserts acknowledged before the kill",
        acknowledged.len()
    );

    // The chain verifies; events after the last checkpoint are reported as not yet sealed, which is fine.
    let verified = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .output_in_place()
        .expect("run warden audit verify");
    assert!(
        verified.status.success(),
        "audit verify after the kill:\n{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );

    // Every acknowledged INSERT is recorded as a statement.
    let state_url = format!("sqlite://{}", directory.path().join("state/warden.db").display());
    let store = warden_state::StateStore::open(&state_url).await.expect("open the state store");
    let (events, _) = store.audit_log(None).await.expect("audit log");
    let recorded: HashSet<&str> = events
        .iter()
        .filter(|sealed| sealed.event.kind == "statement")
        .filter_map(|sealed| sealed.event.body["text"].as_str())
        .collect();
    let unrecorded: Vec<i32> =
        acknowledged.iter().copied().filter(|n| !recorded.contains(insert_text(*n).as_str())).collect();
    assert!(
        unrecorded.is_empty(),
        "{} of {} acknowledged inserts are not in the audit log ({} statements recorded), e.g. {:?}",
        unrecorded.len(),
        acknowledged.len(),
        recorded.len(),
        &unrecorded[..unrecorded.len().min(10)]
    );

    // Sanity: the rows themselves reached PostgreSQL.
    let rows = postgres.psql(&app.database, "SELECT n FROM t").expect("read t directly");
    let in_table: HashSet<i32> = rows.lines().map(|line| line.parse().expect("an int")).collect();
    let missing: Vec<i32> = acknowledged.iter().copied().filter(|n| !in_table.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged inserts are not in t ({} rows), e.g. {:?}",
        missing.len(),
        acknowledged.len(),
        in_table.len(),
        &missing[..missing.len().min(10)]
    );
    println!(
        "acknowledged {}, statements recorded {}, rows in t {}",
        acknowledged.len(),
        recorded.len(),
        in_table.len()
    );
}

fn insert_text(n: i32) -> String {
    format!("INSERT INTO t VALUES ({n})")
}

/// A port nothing listens on right now: bound, read and released. Another process could take it before the
/// gateway does; the gateway would then fail to start and say so in its stderr.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A gateway config in `directory`: SQLite state beside it, one connection to `app`, the `loader` API key (group
/// `loaders`) which may connect, read and write, and sync durability.
fn write_config(
    directory: &Path,
    port: u16,
    upstream: &str,
    app: &warden_testkit::AppDatabase,
    api_key: &str,
) -> std::path::PathBuf {
    std::fs::write(directory.join("upstream.password"), &app.password).expect("write password file");
    std::fs::write(
        directory.join("loaders.cedar"),
        "@id(\"loaders-load\")\npermit (principal in Warden::Group::\"loaders\",\n        \
         action in [Warden::Action::\"connect\", Warden::Action::\"read\", Warden::Action::\"write\"],\n        \
         resource);\n",
    )
    .expect("write policy");
    let config = directory.join("warden.toml");
    std::fs::write(
        &config,
        format!(
            r#"[state]
url = "sqlite://state/warden.db"

[listen]
postgres = "127.0.0.1:{port}"

[[connection]]
name = "{database}"
kind = "postgres"
address = "{upstream}"
database = "{database}"
user = "{role}"
password = {{ file = "upstream.password" }}
tls = {{ mode = "disable" }}

[[api_key]]
name = "loader"
key = {{ sha256 = "{digest}" }}
groups = ["loaders"]

[policy]
files = ["loaders.cedar"]

[audit]
durability = "sync"
"#,
            database = app.database,
            role = app.role,
            digest = warden_identity::api_key_digest(api_key),
        ),
    )
    .expect("write config");
    config
}

async fn connect(connection_string: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(connection_string, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `warden gateway` running as a child process, its stderr in a file; killed on drop if still running.
struct ChildGateway {
    child: Child,
    stderr_path: std::path::PathBuf,
}

impl ChildGateway {
    fn spawn(config: &Path, stderr_path: &Path) -> ChildGateway {
        let stderr = std::fs::File::create(stderr_path).expect("create the gateway's stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("gateway")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start warden gateway");
        ChildGateway { child, stderr_path: stderr_path.to_path_buf() }
    }

    /// Retries a login until one succeeds (the gateway is listening and reaches its upstream), for up to 20 s.
    async fn wait_until_ready(&mut self, connection_string: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the gateway") {
                panic!("the gateway exited before accepting a login ({status}):\n{}", self.stderr());
            }
            match connect(connection_string).await {
                Ok(_client) => return,
                Err(error) if Instant::now() >= deadline => {
                    panic!("no login through the gateway within 20 s: {error:?}\n{}", self.stderr())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps the process.
    fn kill(&mut self) {
        self.child.kill().expect("kill the gateway");
        let status = self.child.wait().expect("reap the gateway");
        assert!(!status.success(), "the gateway was killed, not stopped: {status}");
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_else(|error| format!("(no stderr: {error})"))
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
