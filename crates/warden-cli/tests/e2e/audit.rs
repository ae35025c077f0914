//! The tamper-evident audit log: what a session leaves in it, `warden audit verify` on the store and on an export,
//! and verification failing at the right link when the SQLite file is edited.

use std::process::{Command, Output};

use crate::fixture;

fn warden() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warden"))
}

fn run(args: &[&str]) -> Output {
    warden().args(args).output().expect("run warden")
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
