//! `warden sessions replay`: a session's audit events in order with their offsets, as text and as JSON Lines, read
//! offline after the gateway stopped, and followed live until the session ends.

use crate::OutputInPlace;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use warden_testkit::TestGateway;

use crate::policy::NO_UNBOUNDED_DELETES;
use crate::start_postgres;

fn warden() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `warden sessions replay <id> --config <gateway's config>` with `extra` arguments.
fn replay(gateway: &TestGateway, id: &str, extra: &[&str]) -> Output {
    warden()
        .args(["sessions", "replay", id, "--config"])
        .arg(&gateway.config_path)
        .args(extra)
        .env_remove("WARDEN_TOKEN")
        .output_in_place()
        .expect("run warden sessions replay")
}

/// The seconds of a line's `+0.012s` offset, when it starts with one.
fn offset_of(line: &str) -> Option<f64> {
    let rest = line.strip_prefix('+')?;
    let (seconds, _) = rest.split_once("s  ")?;
    seconds.parse().ok()
}

/// Reads the child's lines into `printed` until one contains `needle`, failing after 30 s or if the child exits first.
async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    printed: &mut Vec<String>,
    needle: &str,
) {
    let reading = async {
        while let Some(line) = lines.next_line().await.expect("read the child's stdout") {
            let found = line.contains(needle);
            printed.push(line);
            if found {
                return true;
            }
        }
        false
    };
    match tokio::time::timeout(Duration::from_secs(30), reading).await {
        Ok(true) => {}
        Ok(false) => panic!("replay exited before printing {needle:?}:\n{}", printed.join("\n")),
        Err(_) => panic!("timed out waiting for {needle:?}:\n{}", printed.join("\n")),
    }
}

/// The one session in the gateway's store.
async fn only_session(gateway: &TestGateway) -> String {
    let sessions = gateway.store().list_sessions(&Default::default()).await.expect("list sessions");
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    sessions[0].id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_session_replays_in_order_with_decisions_and_errors() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let mut gateway = TestGateway::builder(&postgres, &app).policies(NO_UNBOUNDED_DELETES).start().await;
    let client = gateway
        .try_connect(&format!("{} application_name=replay-e2e", gateway.connection_string()))
        .await
        .expect("connect through warden");
    client.batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3)").await.expect("setup");
    client.simple_query("SELECT id FROM t ORDER BY id").await.expect("allowed read");
    client.simple_query("DELETE FROM t").await.expect_err("unbounded delete refused by policy");
    client.simple_query("SELECT 1/0").await.expect_err("division by zero");
    // PostgreSQL flushes an error before its ReadyForQuery, and a statement is recorded at its ReadyForQuery: one
    // more round trip makes sure the failed statement is complete before the gateway stops.
    client.simple_query("SELECT 'done'").await.expect("last statement");
    drop(client);
    gateway.stop().await;
    let id = only_session(&gateway).await;

    let output = replay(&gateway, &id, &[]);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let lines: Vec<&str> = stdout.lines().collect();
    let header = lines[0];
    let connection = format!("connection {}", gateway.database);
    for part in [&*format!("session {id}"), "identity agent", &connection, "application replay-e2e", "started "] {
        assert!(header.contains(part), "{part:?} not in the header: {stdout}");
    }
    assert!(header.contains("client 127.0.0.1:"), "{stdout}");
    let position = |needle: &str| {
        lines.iter().position(|line| line.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in:\n{stdout}"))
    };

    let start = position("session.start");
    let read = position("statement #2");
    let denied = position("statement #3");
    let failed = position("statement #4");
    let last = position("statement #5");
    let end = position("session.end");
    assert!(start < position("statement #1") && read < denied && denied < failed && failed < last, "{stdout}");
    assert!(last < end, "{stdout}");
    assert!(lines[start].starts_with("+0.000s  session.start  user agent"), "{stdout}");
    assert!(lines[read].contains("allowed [read] public.t  (3 rows, "), "{stdout}");
    assert_eq!(lines[read + 1].trim(), "SELECT id FROM t ORDER BY id", "{stdout}");
    assert!(lines[denied].contains("DENIED [write] public.t  by no-unbounded-deletes"), "{stdout}");
    assert_eq!(lines[denied + 1].trim(), "DELETE FROM t", "{stdout}");
    assert!(lines[denied + 2].trim().starts_with("error: 42501: "), "{stdout}");
    assert!(lines[failed].contains("allowed [read] -  ERROR"), "{stdout}");
    assert_eq!(lines[failed + 1].trim(), "SELECT 1/0", "{stdout}");
    assert!(lines[failed + 2].contains("error: ") && lines[failed + 2].contains("division by zero"), "{stdout}");
    assert!(lines[end].contains("(lasted "), "{stdout}");
    assert_eq!(end, lines.len() - 1, "the end is the last line: {stdout}");
    let offsets: Vec<f64> = lines.iter().filter_map(|line| offset_of(line)).collect();
    assert_eq!(offsets.len(), 7, "start, five statements and the end each have an offset: {stdout}");
    assert!(offsets.windows(2).all(|pair| pair[0] <= pair[1]), "offsets never go back: {offsets:?}");

    let output = replay(&gateway, &id, &["--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line:?}: {error}")))
        .collect();
    let kinds: Vec<&str> = events.iter().map(|event| event["kind"].as_str().expect("a kind")).collect();
    assert_eq!(
        kinds,
        ["session.start", "statement", "statement", "statement", "statement", "statement", "session.end"]
    );
    let offsets: Vec<f64> = events.iter().map(|event| event["offset_ms"].as_f64().expect("offset_ms")).collect();
    assert_eq!(offsets[0], 0.0);
    assert!(offsets.windows(2).all(|pair| pair[0] <= pair[1]), "offset_ms never decreases: {offsets:?}");
    assert!(offsets[6] > offsets[1], "{offsets:?}");
    for event in &events {
        assert_eq!(event["identity"], "agent", "{event}");
        assert_eq!(event["connection"], gateway.database.as_str(), "{event}");
        assert_eq!(event["session"], id.as_str(), "{event}");
        assert!(event["at"].is_string() && event.get("run").is_some() && event.get("node").is_some(), "{event}");
    }
    assert_eq!(events[0]["application_name"], "replay-e2e");
    assert_eq!(events[2]["text"], "SELECT id FROM t ORDER BY id");
    assert_eq!(events[2]["rows"], 3);
    assert_eq!(events[3]["decision"]["allowed"], false);
    assert_eq!(events[3]["decision"]["policies"], serde_json::json!(["no-unbounded-deletes"]));
    assert!(events[4]["error"].as_str().is_some_and(|error| error.contains("division by zero")), "{}", events[4]);
    assert!(events[6]["reason"].is_string(), "{}", events[6]);

    let output = replay(&gateway, "no-such-session", &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("no session with id no-such-session"), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_a_live_session_until_it_ends() {
    let (postgres, app) = start_postgres(Default::default()).await;
    follow_a_live_session(&TestGateway::start(&postgres, &app).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_reads_a_postgresql_state_store_too() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let state_url = format!("postgres://{}:{}@{}/app", app.role, app.password, postgres.address());
    let gateway = TestGateway::builder(&postgres, &app).state_url(&state_url).start().await;
    assert_eq!(gateway.store().backend(), "postgres");
    follow_a_live_session(&gateway).await;
}

/// Starts `replay --follow` on a live session of `gateway`, runs one more statement and ends the session: the child
/// prints both statements and the end, then exits 0.
async fn follow_a_live_session(gateway: &TestGateway) {
    let client = gateway.connect().await;
    client.simple_query("SELECT 1 AS before_following").await.expect("first statement");
    gateway.flush().await;
    let id = only_session(gateway).await;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["sessions", "replay", &id, "--follow", "--config"])
        .arg(&gateway.config_path)
        .env_remove("WARDEN_TOKEN")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start warden sessions replay --follow");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let mut printed = Vec::new();

    // The child has read what was stored before it started ...
    read_until(&mut lines, &mut printed, "SELECT 1 AS before_following").await;
    // ... and picks up what happens after.
    client.simple_query("SELECT 2 AS while_following").await.expect("second statement");
    read_until(&mut lines, &mut printed, "SELECT 2 AS while_following").await;
    drop(client);
    read_until(&mut lines, &mut printed, "session.end").await;

    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("replay --follow exits once the session ended")
        .expect("wait for replay");
    assert!(status.success(), "{status:?}");
    let statements: Vec<&String> = printed.iter().filter(|line| line.contains("  statement #")).collect();
    assert_eq!(statements.len(), 2, "{printed:#?}");
    assert!(statements[1].contains("statement #2  allowed [read]"), "{printed:#?}");
    assert!(printed.last().expect("lines").contains("session.end"), "{printed:#?}");
}

/// The statement events of the gateway's one session, by seq.
async fn statement_events(gateway: &TestGateway) -> Vec<serde_json::Value> {
    let id = only_session(gateway).await;
    let events = gateway.store().audit_events_for_session(&id, None).await.expect("audit events");
    events
        .into_iter()
        .filter(|sealed| sealed.event.kind == "statement")
        .map(|sealed| serde_json::Value::clone(&sealed.event.body))
        .collect()
}

/// Each statement's event keeps its first result rows, masked by every built-in detector even though the connection
/// does not mask, capped by `[audit] result_rows` with the rest counted; replay prints them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_rows_are_recorded_masked_and_capped() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let mut gateway = TestGateway::builder(&postgres, &app).config_extra("[audit]\nresult_rows = 3\n").start().await;
    let client = gateway.connect().await;
    client
        .batch_execute(
            "CREATE TABLE people (id int, email text, note text); \
             INSERT INTO people SELECT g, 'user' || g || '@example.com', 'note ' || g FROM generate_series(1, 12) g",
        )
        .await
        .expect("setup");
    let rows = client.simple_query("SELECT id, email, note FROM people ORDER BY id").await.expect("simple read");
    assert_eq!(rows.len(), 14, "the description, 12 rows and the command tag reach the client whole");
    let extended =
        client.query("SELECT id, email FROM people WHERE id > $1 ORDER BY id", &[&8i32]).await.expect("extended read");
    assert_eq!(extended.len(), 4);
    let emails: Vec<String> = extended.iter().map(|row| row.get(1)).collect();
    assert_eq!(emails[0], "user9@example.com", "the client's rows are not masked: the connection does not mask");
    client.simple_query("SELECT 'a' AS x WHERE false; SELECT 2 AS y").await.expect("two result sets");
    drop(client);
    gateway.stop().await;

    let statements = statement_events(&gateway).await;
    let text_of = |body: &serde_json::Value| body["text"].as_str().unwrap_or_default().to_string();
    let simple = statements.iter().find(|body| text_of(body).starts_with("SELECT id, email, note")).expect("simple");
    let result = &simple["result"];
    assert_eq!(result["cut"], 9, "{result}");
    assert_eq!(result["sets"][0]["columns"], serde_json::json!(["id", "email", "note"]), "{result}");
    assert_eq!(
        result["sets"][0]["rows"],
        serde_json::json!([
            ["1", "***@example.com", "note 1"],
            ["2", "***@example.com", "note 2"],
            ["3", "***@example.com", "note 3"]
        ]),
        "{result}"
    );

    let prepared = statements.iter().find(|body| text_of(body).contains("WHERE id > $1")).expect("extended");
    let result = &prepared["result"];
    assert_eq!(result["cut"], 1, "{result}");
    let rows = result["sets"][0]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3, "{result}");
    // tokio-postgres described the statement in an earlier round trip, in binary: the values' format is unknown
    // here, so printable ones are text and the rest hex.
    assert_eq!(rows[0], serde_json::json!(["\\x00000009", "***@example.com"]), "{result}");
    assert!(!result.to_string().contains("user9@"), "{result}");

    let two = statements.iter().find(|body| text_of(body).contains("WHERE false")).expect("two sets");
    assert_eq!(
        two["result"],
        serde_json::json!({"sets": [{"columns": ["x"], "rows": []}, {"columns": ["y"], "rows": [["2"]]}], "cut": 0})
    );
    let setup = statements.iter().find(|body| text_of(body).starts_with("CREATE TABLE")).expect("setup");
    assert!(setup["result"].is_null(), "a statement without rows has no result: {setup}");

    let id = only_session(&gateway).await;
    let output = replay(&gateway, &id, &[]);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(stdout.contains("→ id | email | note\n"), "{stdout}");
    assert!(stdout.contains("  1 | ***@example.com | note 1\n"), "{stdout}");
    assert!(stdout.contains("(9 more rows not kept)"), "{stdout}");
    assert!(!stdout.contains("user1@example.com"), "{stdout}");
}

/// `result_rows = 0` keeps no rows; a masking connection's rows are recorded as the client saw them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_rows_can_be_turned_off() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let mut gateway = TestGateway::builder(&postgres, &app).config_extra("[audit]\nresult_rows = 0\n").start().await;
    let client = gateway.connect().await;
    client.simple_query("SELECT 'jane@example.com' AS email").await.expect("read");
    drop(client);
    gateway.stop().await;
    let statements = statement_events(&gateway).await;
    assert_eq!(statements.len(), 1);
    assert!(statements[0]["result"].is_null(), "{}", statements[0]);
}

/// The log says which config and policies a gateway ran with (the config file's SHA-256, never a secret), and
/// when it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_start_and_stop_are_logged_with_the_config_digest() {
    use sha2::Digest;
    let (postgres, app) = start_postgres(Default::default()).await;
    let mut gateway = TestGateway::builder(&postgres, &app).policies(NO_UNBOUNDED_DELETES).start().await;
    gateway.stop().await;
    let (events, _) = gateway.store().audit_log(None).await.expect("audit log");
    let kinds: Vec<&str> = events.iter().map(|sealed| sealed.event.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"chain.start"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"gateway.stop"), "{kinds:?}");
    let start = &events.iter().find(|sealed| sealed.event.kind == "gateway.start").expect("gateway.start").event.body;
    let digest = format!("{:x}", sha2::Sha256::digest(std::fs::read(&gateway.config_path).expect("config")));
    assert_eq!(start["config_sha256"], serde_json::json!(digest), "{start}");
    assert_eq!(start["connections"], serde_json::json!([gateway.database]), "{start}");
    assert_eq!(start["policies"], 2, "the harness's permit and the forbid under test: {start}");
    assert_eq!((start["durability"].as_str(), start["result_rows"].as_u64()), (Some("async"), Some(10)), "{start}");
    let config_text = std::fs::read_to_string(&gateway.config_path).expect("config");
    assert!(!start.to_string().contains(app.password.as_str()), "no secret in {start}\n{config_text}");
}
