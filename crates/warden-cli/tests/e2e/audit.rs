//! The tamper-evident audit log: what a session leaves in it, `warden audit verify` on the store and on an export,
//! and verification failing at the right link when the SQLite file is edited.

use crate::OutputInPlace;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::Connection;
use warden_audit::{Broken, Checkpoint, Event, Sealed};

use crate::{fixture, Fixture};

fn warden() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warden"))
}

fn run(args: &[&str]) -> Output {
    warden().args(args).output_in_place().expect("run warden")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_chained_signed_and_verifies_offline() {
    let mut fixture = fixture().await;
    let client = fixture.gateway.connect().await;
    client.batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)").await.expect("statements");
    client.query("SELECT id FROM t", &[]).await.expect("select");
    drop(client);
    fixture.gateway.stop().await;
    let config = fixture.gateway.config_path.to_str().expect("utf-8 path").to_string();

    let (events, checkpoints) = fixture.gateway.store().audit_log(None).await.expect("audit log");
    let kinds: Vec<&str> = events.iter().map(|sealed| sealed.event.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"chain.start"), "{kinds:?}");
    assert!(kinds.contains(&"session.start") && kinds.contains(&"session.end"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|kind| **kind == "statement").count(), 2, "{kinds:?}");
    let statement = events.iter().find(|sealed| sealed.event.kind == "statement").expect("a statement");
    assert_eq!(statement.event.identity.as_deref(), Some("agent"));
    assert_eq!(statement.event.connection.as_deref(), Some(fixture.gateway.database.as_str()));
    assert!(statement.event.body["decision"]["allowed"].as_bool().expect("a decision"));
    let last = events.last().expect("events").event.seq;
    assert_eq!(checkpoints.last().map(|checkpoint| checkpoint.seq), Some(last), "shutdown seals the whole chain");

    let verified = run(&["audit", "verify", "--config", &config]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains(&format!("{} events", events.len())), "{}", text(&verified));

    // An export verifies on its own, with the public key the gateway prints.
    let directory = fixture.gateway.directory();
    let export = directory.join("audit.jsonl");
    let key = directory.join("audit.pub");
    let exported = run(&["audit", "export", "--config", &config, "--output", export.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", text(&exported));
    let printed = run(&["audit", "public-key", "--config", &config]);
    assert!(
        printed.status.success() && printed.stdout.starts_with(b"-----BEGIN PUBLIC KEY-----"),
        "{}",
        text(&printed)
    );
    std::fs::write(&key, &printed.stdout).unwrap();
    let verified = run(&["audit", "verify", "--file", export.to_str().unwrap(), "--public-key", key.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", text(&verified));

    // One changed byte in the export breaks it at that event.
    let original = std::fs::read_to_string(&export).unwrap();
    let tampered = original.replacen("SELECT id FROM t", "SELECT id FROM u", 1);
    assert_ne!(tampered, original);
    std::fs::write(&export, tampered).unwrap();
    let verified = run(&["audit", "verify", "--file", export.to_str().unwrap(), "--public-key", key.to_str().unwrap()]);
    assert!(!verified.status.success());
    let seq = events.iter().find(|sealed| sealed.event.body["text"] == "SELECT id FROM t").unwrap().event.seq;
    assert!(text(&verified).contains(&format!("event {seq} does not match its stored hash")), "{}", text(&verified));
}

/// Each way of editing the SQLite file, on a fresh copy of one recorded gateway's directory, and the first broken
/// link `warden audit verify --config` must name for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_the_sqlite_file_is_found_at_the_right_link() {
    let recorded = Recorded::start().await;
    let chain = recorded.chain.clone();
    let last = recorded.events.len() as u64;
    // A case either verifies, printing this line about the chain, or fails at this link.
    let broken = |broken: Broken| Err::<String, Broken>(broken);
    // A statement in the middle, with events on both sides of it and of its successor.
    let statements: Vec<u64> = recorded
        .events
        .iter()
        .filter(|sealed| sealed.event.kind == "statement")
        .map(|sealed| sealed.event.seq)
        .collect();
    let n = statements[statements.len() / 2];
    assert!(n > 1 && n + 1 < last - 3, "statement {n} of {last} events is not in the middle: {statements:?}");
    let original = recorded.event(n).clone();
    let forged = recorded.forged(n);
    let h_before = hash(&original.prev);
    // The first checkpoint that signs event n (and so everything rewritten from it on).
    let sealing = recorded.checkpoints.iter().find(|checkpoint| checkpoint.seq >= n).expect("a checkpoint after n");
    let final_checkpoint = recorded.checkpoints.last().expect("a checkpoint");
    // Rewriting event n and every later one, each hash recomputed, as an attacker without the signing key can.
    let mut rewritten = Vec::new();
    let mut prev = h_before;
    for seq in n..=last {
        let event = if seq == n { forged.clone() } else { recorded.event(seq).event.clone() };
        let sealed = Sealed::seal(&prev, event);
        prev = hash(&sealed.hash);
        rewritten.push(Edit::Overwrite(seq, sealed));
    }
    // Renumbers events n.. to n+1.. (through negative seqs: SQLite checks the primary key row by row).
    let make_room = || {
        [
            Edit::Sql(format!("UPDATE audit_events SET seq = -seq - 1 WHERE seq >= {n}")),
            Edit::Sql("UPDATE audit_events SET seq = -seq WHERE seq < 0".into()),
        ]
    };

    let cases: Vec<(&str, Vec<Edit>, Result<String, Broken>)> = vec![
        (
            "untouched",
            vec![],
            Ok(format!("{last} events, {} checkpoints, sealed through {last}\n", recorded.checkpoints.len())),
        ),
        (
            "modified",
            vec![Edit::Overwrite(n, Sealed { event: forged.clone(), ..original.clone() })],
            broken(Broken::HashMismatch { chain: chain.clone(), seq: n }),
        ),
        (
            "modified, its hash recomputed",
            vec![Edit::Overwrite(n, Sealed::seal(&h_before, forged.clone()))],
            broken(Broken::PrevMismatch { chain: chain.clone(), seq: n + 1 }),
        ),
        (
            "modified, every later hash recomputed",
            rewritten,
            broken(Broken::CheckpointMismatch { chain: chain.clone(), seq: sealing.seq }),
        ),
        (
            "deleted",
            vec![Edit::Sql(format!("DELETE FROM audit_events WHERE seq = {n}"))],
            broken(Broken::Missing { chain: chain.clone(), seq: n }),
        ),
        (
            "inserted, the later ones renumbered",
            make_room()
                .into_iter()
                .chain([Edit::Insert(Sealed { event: forged.clone(), ..original.clone() })])
                .collect(),
            broken(Broken::HashMismatch { chain: chain.clone(), seq: n }),
        ),
        (
            "inserted with its hash computed, the later ones renumbered",
            make_room().into_iter().chain([Edit::Insert(Sealed::seal(&h_before, forged.clone()))]).collect(),
            broken(Broken::PrevMismatch { chain: chain.clone(), seq: n + 1 }),
        ),
        (
            "reordered",
            vec![Edit::Overwrite(n, recorded.event(n + 1).clone()), Edit::Overwrite(n + 1, original.clone())],
            broken(Broken::PrevMismatch { chain: chain.clone(), seq: n }),
        ),
        (
            "truncated before the last checkpoint",
            vec![Edit::Sql(format!("DELETE FROM audit_events WHERE seq > {}", last - 3))],
            broken(Broken::Truncated {
                chain: chain.clone(),
                seq: recorded
                    .checkpoints
                    .iter()
                    .find(|checkpoint| checkpoint.seq > last - 3)
                    .expect("a checkpoint")
                    .seq,
                last: last - 3,
            }),
        ),
        (
            "checkpoints deleted",
            vec![Edit::Sql("DELETE FROM audit_checkpoints".into())],
            Ok(format!(
                "{last} events, 0 checkpoints, sealed through 0 ({last} after the last checkpoint: not yet sealed)\n"
            )),
        ),
        (
            "checkpoint forged",
            vec![Edit::Sql(format!(
                "UPDATE audit_checkpoints SET head = '{}' WHERE seq = {}",
                recorded.event(final_checkpoint.seq - 1).hash,
                final_checkpoint.seq
            ))],
            broken(Broken::BadSignature {
                chain: chain.clone(),
                seq: final_checkpoint.seq,
                key_id: final_checkpoint.key_id.clone(),
            }),
        ),
    ];
    for (case, edits, expected) in cases {
        let verified = recorded.verify_after(&edits).await;
        match expected {
            Ok(line) => {
                assert!(verified.status.success(), "{case}: {}", text(&verified));
                let stdout = String::from_utf8_lossy(&verified.stdout);
                assert!(stdout.contains(&format!("  {chain}: {line}")), "{case}: expected {line:?} in\n{stdout}");
            }
            Err(broken) => {
                let expected = format!("audit log BROKEN: {broken}\n");
                assert_eq!(verified.status.code(), Some(1), "{case}: {}", text(&verified));
                assert!(text(&verified).contains(&expected), "{case}: expected {expected:?}, got\n{}", text(&verified));
            }
        }
    }
}

/// A stopped gateway whose audit log holds one chain: two interleaved sessions' events, sealed by the checkpoint
/// shutdown writes.
struct Recorded {
    fixture: Fixture,
    /// The config file and the SQLite state file, relative to the gateway's directory.
    config: PathBuf,
    database: PathBuf,
    chain: String,
    /// Sorted by seq, 1..=n.
    events: Vec<Sealed>,
    checkpoints: Vec<Checkpoint>,
}

impl Recorded {
    async fn start() -> Recorded {
        let mut fixture = fixture().await;
        let first = fixture.gateway.connect().await;
        let second = fixture.gateway.connect().await;
        let script = [
            (&first, "CREATE TABLE ledger (id int PRIMARY KEY, note text)"),
            (&second, "SELECT 1"),
            (&first, "INSERT INTO ledger VALUES (1, 'one'), (2, 'two')"),
            (&second, "SELECT count(*) FROM ledger"),
            (&first, "UPDATE ledger SET note = 'uno' WHERE id = 1"),
            (&second, "SELECT note FROM ledger WHERE id = 1"),
            (&first, "INSERT INTO ledger VALUES (3, 'three')"),
            (&second, "SELECT id FROM ledger ORDER BY id"),
            (&first, "DELETE FROM ledger WHERE id = 2"),
            (&second, "SELECT max(id) FROM ledger"),
            (&first, "SELECT note FROM ledger"),
            (&second, "SELECT now()"),
        ];
        for (client, statement) in script {
            client.batch_execute(statement).await.unwrap_or_else(|error| panic!("{statement}: {error:?}"));
        }
        drop((first, second));
        fixture.gateway.stop().await;

        let directory = fixture.gateway.directory().to_path_buf();
        let config = fixture.gateway.config_path.strip_prefix(&directory).expect("the config is in the directory");
        let loaded = warden_config::Config::load(&fixture.gateway.config_path, &|_: &str| None).expect("config");
        let url = loaded.state.url.expose();
        let file = url.strip_prefix("sqlite://").expect("a SQLite state store");
        let file = file.split_once('?').map_or(file, |(file, _)| file);
        let database = Path::new(file).strip_prefix(&directory).expect("the state file is in the directory");

        let (events, checkpoints) = fixture.gateway.store().audit_log(None).await.expect("audit log");
        let chain = events.first().expect("events").event.chain.clone();
        assert!(events.iter().all(|sealed| sealed.event.chain == chain), "one gateway writes one chain");
        assert!(events.iter().enumerate().all(|(index, sealed)| sealed.event.seq == index as u64 + 1));
        assert!(events.len() >= 15, "{} events", events.len());
        assert_eq!(checkpoints.last().map(|checkpoint| checkpoint.seq), Some(events.len() as u64));
        Recorded { config: config.to_path_buf(), database: database.to_path_buf(), fixture, chain, events, checkpoints }
    }

    fn event(&self, seq: u64) -> &Sealed {
        &self.events[usize::try_from(seq - 1).expect("a small seq")]
    }

    /// Event `seq` (a statement) with different text.
    fn forged(&self, seq: u64) -> Event {
        let mut event = self.event(seq).event.clone();
        assert!(event.body["text"].is_string(), "{event:?}");
        event.body["text"] = serde_json::json!("SELECT 'nothing to see here'");
        event
    }

    /// Copies the gateway's directory (config, signing key and a snapshot of the state file) to a fresh temp dir,
    /// applies `edits` to the copy's state file and runs `warden audit verify --config` on the copy.
    async fn verify_after(&self, edits: &[Edit]) -> Output {
        let source = self.fixture.gateway.directory();
        let copy = tempfile::Builder::new().prefix("warden-tamper-").tempdir().expect("create temp dir");
        copy_directory(source, copy.path(), &self.database);
        // One self-contained file, whatever the WAL still holds.
        let database = copy.path().join(&self.database);
        let mut original = open_sqlite(&source.join(&self.database)).await;
        sqlx::query("VACUUM INTO ?")
            .bind(database.to_str().expect("utf-8 path"))
            .execute(&mut original)
            .await
            .expect("snapshot the state file");
        original.close().await.expect("close the state file");

        let mut tampered = open_sqlite(&database).await;
        for edit in edits {
            let affected = match edit {
                Edit::Sql(sql) => sqlx::query(sql).execute(&mut tampered).await,
                Edit::Overwrite(seq, sealed) => {
                    let event = &sealed.event;
                    sqlx::query(
                        "UPDATE audit_events SET at = ?, kind = ?, session_id = ?, identity = ?, connection = ?, \
                         run = ?, node = ?, body = ?, prev = ?, hash = ? WHERE chain = ? AND seq = ?",
                    )
                    .bind(&event.at)
                    .bind(&event.kind)
                    .bind(&event.session)
                    .bind(&event.identity)
                    .bind(&event.connection)
                    .bind(&event.run)
                    .bind(&event.node)
                    .bind(event.body.to_string())
                    .bind(&sealed.prev)
                    .bind(&sealed.hash)
                    .bind(&event.chain)
                    .bind(i64::try_from(*seq).expect("a small seq"))
                    .execute(&mut tampered)
                    .await
                }
                Edit::Insert(sealed) => {
                    let event = &sealed.event;
                    sqlx::query(
                        "INSERT INTO audit_events (chain, seq, at, kind, session_id, identity, connection, run, node, \
                         body, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&event.chain)
                    .bind(i64::try_from(event.seq).expect("a small seq"))
                    .bind(&event.at)
                    .bind(&event.kind)
                    .bind(&event.session)
                    .bind(&event.identity)
                    .bind(&event.connection)
                    .bind(&event.run)
                    .bind(&event.node)
                    .bind(event.body.to_string())
                    .bind(&sealed.prev)
                    .bind(&sealed.hash)
                    .execute(&mut tampered)
                    .await
                }
            }
            .unwrap_or_else(|error| panic!("{edit:?}: {error}"))
            .rows_affected();
            assert!(affected > 0, "{edit:?} changed nothing");
        }
        tampered.close().await.expect("close the copy");

        let config = copy.path().join(&self.config);
        run(&["audit", "verify", "--config", config.to_str().expect("utf-8 path")])
    }
}

/// One change to a copied state file.
#[derive(Debug)]
enum Edit {
    Sql(String),
    /// Every column of event `seq` but chain and seq, from this sealed event.
    Overwrite(u64, Sealed),
    Insert(Sealed),
}

async fn open_sqlite(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .unwrap_or_else(|error| panic!("open {}: {error}", path.display()))
}

/// Copies `from` into `to` recursively, except the SQLite file `database` (relative) and its -wal and -shm files.
fn copy_directory(from: &Path, to: &Path, database: &Path) {
    fn walk(from: &Path, to: &Path, relative: &Path, database: &Path) {
        for entry in std::fs::read_dir(from.join(relative)).expect("read the gateway directory") {
            let entry = entry.expect("directory entry");
            let relative = relative.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                std::fs::create_dir_all(to.join(&relative)).expect("create directory");
                walk(from, to, &relative, database);
            } else if !relative.to_string_lossy().starts_with(&*database.to_string_lossy()) {
                std::fs::copy(from.join(&relative), to.join(&relative)).expect("copy file");
            }
        }
    }
    walk(from, to, Path::new(""), database);
}

fn hash(text: &str) -> [u8; 32] {
    let mut hash = [0; 32];
    hex::decode_to_slice(text, &mut hash).expect("a stored hash is 64 hex digits");
    hash
}

/// A `jsonl` sink receives every event and checkpoint as it is committed; the file verifies on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_sink_receives_the_log_as_it_is_written() {
    let (postgres, app) = crate::start_postgres(Default::default()).await;
    let mut gateway = warden_testkit::TestGateway::builder(&postgres, &app)
        .config_extra("[[audit.sink]]\nkind = \"jsonl\"\npath = \"audit/warden.jsonl\"\n")
        .start()
        .await;
    let client = gateway.connect().await;
    client.batch_execute("CREATE TABLE s (id int); INSERT INTO s VALUES (1)").await.expect("statements");
    drop(client);
    gateway.stop().await;
    let sink = gateway.directory().join("audit/warden.jsonl");
    let (events, checkpoints) = gateway.store().audit_log(None).await.expect("audit log");
    let last = checkpoints.last().expect("a checkpoint at shutdown").clone();
    // The sink thread writes on its own schedule after the writer commits: wait for the final checkpoint.
    crate::wait_until(10, "the sink to receive the final checkpoint", || {
        let sink = sink.clone();
        let last = last.clone();
        async move {
            std::fs::read_to_string(&sink).is_ok_and(|text| {
                text.lines().any(|line| line.contains("\"checkpoint\"") && line.contains(&last.signature))
            })
        }
    })
    .await;
    let lines = std::fs::read_to_string(&sink).expect("the sink file");
    let (sunk_events, _) = warden_audit::parse_lines(&lines).expect("every line is a record");
    assert_eq!(sunk_events, events, "the sink holds exactly the stored events, in order");

    let config = gateway.config_path.to_str().unwrap().to_string();
    let key = gateway.directory().join("audit.pub");
    let printed = run(&["audit", "public-key", "--config", &config]);
    std::fs::write(&key, &printed.stdout).unwrap();
    let verified = run(&["audit", "verify", "--file", sink.to_str().unwrap(), "--public-key", key.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", text(&verified));
}

/// Two syslog sinks, UDP and TCP, each receive every record as RFC 5424 messages whose JSON verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_sinks_receive_every_record_over_udp_and_tcp() {
    let udp = warden_testkit::receivers::SyslogUdpReceiver::start().await;
    let tcp = warden_testkit::receivers::SyslogTcpReceiver::start().await;
    let sinks = format!("{}\n{}", udp.sink_config(), tcp.sink_config());
    let (postgres, app) = crate::start_postgres(Default::default()).await;
    let mut gateway = warden_testkit::TestGateway::builder(&postgres, &app).config_extra(&sinks).start().await;
    let client = gateway.connect().await;
    client.simple_query("SELECT 'syslog probe'").await.expect("statement");
    drop(client);
    gateway.stop().await;
    let (events, checkpoints) = gateway.store().audit_log(None).await.expect("audit log");
    let last_signature = checkpoints.last().expect("a final checkpoint").signature.clone();

    // The sink threads send on their own schedule: wait for the final checkpoint on each.
    let timeout = std::time::Duration::from_secs(10);
    let received =
        [("UDP", udp.wait_for(&last_signature, timeout).await), ("TCP", tcp.wait_for(&last_signature, timeout).await)];
    for (transport, lines) in received {
        let (sunk_events, sunk_checkpoints) = warden_audit::parse_lines(&lines.join("\n")).expect("records");
        assert_eq!(sunk_events, events, "every event over {transport}, in order");
        assert!(sunk_checkpoints.iter().any(|checkpoint| checkpoint.signature == last_signature), "{transport}");
        assert!(lines.iter().any(|line| line.contains("syslog probe")), "{transport}");
    }
}
