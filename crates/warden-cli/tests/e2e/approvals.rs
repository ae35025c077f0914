//! Just-in-time approval over PostgreSQL: an agent's DELETE is held (or refused fast) until two DBAs approve it
//! with `warden approvals approve`; a denial, a timeout, a different parameter and a second run are refused and
//! leave the table as it was; the requester cannot approve their own statement; every step is in the audit log.

use crate::OutputInPlace;
use std::process::Command;

use tokio_postgres::SimpleQueryMessage;
use warden_testkit::TestGateway;

use crate::{server_message, sqlstate, start_postgres, wait_until};

const POLICIES: &str = r#"
@id("agents") permit (principal in Warden::Group::"agents", action, resource);

@id("deletes-need-two-dbas")
@approval("dba") @approvals("2") @approval_ttl("30m")
forbid (principal, action == Warden::Action::"write", resource)
when { context has statement && context.statement.kind == "delete" }
unless { context.approved };
"#;

/// Three DBAs' API keys, and the config lines that define them.
struct Dbas {
    keys: Vec<String>,
    config: String,
}

fn dbas() -> Dbas {
    let keys: Vec<String> = (0..3).map(|_| warden_identity::generate_api_key()).collect();
    let config = keys
        .iter()
        .enumerate()
        .map(|(index, key)| {
            format!(
                "\n[[api_key]]\nname = \"dba{}\"\nkey = {{ sha256 = \"{}\" }}\ngroups = [\"dba\"]\n",
                index + 1,
                warden_identity::api_key_digest(key)
            )
        })
        .collect();
    Dbas { keys, config }
}

/// `warden approvals <args>` as `credential`: (success, stdout, stderr).
pub(crate) fn approvals(gateway: &TestGateway, credential: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("approvals")
        .args(args)
        .args(["--admin-url", &gateway.admin_url()])
        .env("WARDEN_TOKEN", credential)
        .env_remove("WARDEN_CONFIG")
        .output_in_place()
        .expect("run warden approvals");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

async fn start(dbas: &Dbas, connection_extra: &str) -> (TestGateway, warden_testkit::TempPostgres) {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app)
        .policies(POLICIES)
        .masking(connection_extra)
        .config_extra(&dbas.config)
        .start()
        .await;
    let client = gateway.connect().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 5) g")
        .await
        .expect("setup");
    (gateway, postgres)
}

/// The ids of the rows left in `t`.
async fn ids(gateway: &TestGateway) -> Vec<i32> {
    let client = gateway.connect().await;
    client.query("SELECT id FROM t ORDER BY id", &[]).await.expect("read t").iter().map(|row| row.get(0)).collect()
}

/// The one pending approval's id, once the gateway has recorded it.
pub(crate) async fn pending_id(gateway: &TestGateway) -> String {
    let store = gateway.store();
    let filter = warden_state::ApprovalFilter {
        status: Some(warden_state::ApprovalStatus::Pending),
        ..warden_state::ApprovalFilter::default()
    };
    wait_until(20, "an approval request", || {
        let store = store.clone();
        let filter = filter.clone();
        async move { !store.list_approvals(&filter).await.expect("list").is_empty() }
    })
    .await;
    let pending = store.list_approvals(&filter).await.expect("list");
    assert_eq!(pending.len(), 1, "{pending:#?}");
    pending[0].id.clone()
}

/// The approval id a message names.
fn approval_id(message: &str) -> String {
    let start = message.find("apr_").unwrap_or_else(|| panic!("no approval id in {message:?}"));
    message[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_delete_runs_once_two_dbas_approve_it() {
    let dbas = dbas();
    let (mut gateway, _postgres) = start(&dbas, "").await;
    // psql prints the notice the held statement gets.
    let mut psql = Command::new("psql");
    psql.args(["-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
        .arg(gateway.port().to_string())
        .args(["-U", "agent", "-d", &gateway.database, "-c", "DELETE FROM t WHERE id = 1"])
        .env("PGPASSWORD", &gateway.api_key)
        .env("PGSSLMODE", "disable");
    let held = tokio::task::spawn_blocking(move || psql.output_in_place().expect("run psql"));
    let id = pending_id(&gateway).await;

    // The requester cannot approve their own statement; an outsider cannot either.
    let (ok, _, stderr) = approvals(&gateway, &gateway.api_key, &["approve", &id]);
    assert!(!ok && stderr.contains("cannot approve their own request"), "{stderr}");
    let (ok, _, stderr) = approvals(&gateway, &gateway.reader_key, &["approve", &id]);
    assert!(!ok && stderr.contains("not in an approver group"), "{stderr}");

    // A DBA lists it, with the statement, and approves: one of two.
    let (ok, listed, stderr) = approvals(&gateway, &dbas.keys[0], &["list", "--json"]);
    assert!(ok, "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["status"], "pending");
    assert_eq!(listed[0]["identity"], "agent");
    assert_eq!(listed[0]["connection"], gateway.database.as_str());
    assert_eq!(listed[0]["statement"], "DELETE FROM t WHERE id = 1");
    let (ok, answer, stderr) = approvals(&gateway, &dbas.keys[0], &["approve", &id, "--reason", "ticket 42"]);
    assert!(ok && answer.contains("pending"), "{answer}{stderr}");
    assert_eq!(ids(&gateway).await, [1, 2, 3, 4, 5], "one approval of two: still held");
    let (ok, answer, stderr) = approvals(&gateway, &dbas.keys[1], &["approve", &id]);
    assert!(ok && answer.contains("approved"), "{answer}{stderr}");

    let output = held.await.expect("psql");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("DELETE 1"), "{stdout}");
    assert!(stderr.contains(&format!("this statement needs approval {id}")), "the client was told: {stderr}");
    assert_eq!(ids(&gateway).await, [2, 3, 4, 5]);

    gateway.stop().await;
    let (events, _) = gateway.store().audit_log(None).await.expect("audit log");
    let kinds: Vec<&str> =
        events.iter().map(|sealed| sealed.event.kind.as_str()).filter(|kind| kind.starts_with("approval.")).collect();
    assert_eq!(kinds, ["approval.requested", "approval.approved", "approval.approved", "approval.used"]);
    let statement = events
        .iter()
        .find(|sealed| sealed.event.kind == "statement" && sealed.event.body["text"] == "DELETE FROM t WHERE id = 1")
        .expect("the statement's event");
    assert_eq!(statement.event.body["decision"]["allowed"], true);
    assert_eq!(statement.event.body["decision"]["policies"], serde_json::json!([format!("approval:{id}")]));
    assert_eq!(statement.event.body["rows"], 1);

    // Replay tells the story.
    let session = gateway.store().approval(&id).await.expect("read").expect("exists").session_id.expect("a session");
    let replayed = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["sessions", "replay", &session, "--config"])
        .arg(&gateway.config_path)
        .env_remove("WARDEN_TOKEN")
        .output_in_place()
        .expect("run warden sessions replay");
    let text = String::from_utf8_lossy(&replayed.stdout);
    assert!(text.contains(&format!("allowed [write] public.t  by approval {id}")), "{text}");
    assert!(
        text.contains(&format!("approval.requested  {id}  needs dba×2  (lifting deletes-need-two-dbas)")),
        "{text}"
    );
    assert!(
        text.contains(&format!("approval.approved  {id}  by dba1: ticket 42  (still missing dba 1 of 2)")),
        "{text}"
    );
    assert!(text.contains(&format!("approval.approved  {id}  by dba2")), "{text}");
    assert!(text.contains(&format!("approval.used  {id}")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_delete_fails_with_the_reason_and_the_session_goes_on() {
    let dbas = dbas();
    let (gateway, _postgres) = start(&dbas, "").await;
    let client = gateway.connect().await;
    let held = tokio::spawn(async move {
        let result = client.simple_query("DELETE FROM t WHERE id > 3").await;
        (client, result)
    });
    let id = pending_id(&gateway).await;
    let (ok, _, stderr) = approvals(&gateway, &dbas.keys[2], &["deny", &id, "--reason", "not during the sale"]);
    assert!(ok, "{stderr}");
    let (client, result) = held.await.expect("join");
    let error = result.expect_err("denied");
    assert_eq!(sqlstate(&error), "42501");
    assert!(server_message(&error).contains(&format!("approval {id} was denied by dba3: not during the sale")));
    assert_eq!(ids(&gateway).await, [1, 2, 3, 4, 5], "nothing deleted");
    let rows = client.simple_query("SELECT count(*) FROM t").await.expect("the session goes on");
    assert!(matches!(&rows[1], SimpleQueryMessage::Row(row) if row.get(0) == Some("5")));
    // A decided request takes no more votes.
    let (ok, _, stderr) = approvals(&gateway, &dbas.keys[0], &["approve", &id]);
    assert!(!ok && stderr.contains("is denied, not pending"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_delete_nobody_decides_times_out() {
    let dbas = dbas();
    let (gateway, _postgres) = start(&dbas, "approval = { mode = \"hold\", wait = \"1s\" }\n").await;
    let client = gateway.connect().await;
    let error = client.simple_query("DELETE FROM t").await.expect_err("not decided in time");
    assert_eq!(sqlstate(&error), "57014");
    let message = server_message(&error);
    assert!(message.contains("was not decided within 1s") && message.contains("stays pending"), "{message}");
    assert_eq!(ids(&gateway).await, [1, 2, 3, 4, 5]);
    let approval = gateway.store().approval(&approval_id(&message)).await.expect("read").expect("exists");
    assert_eq!(approval.status, warden_state::ApprovalStatus::Pending, "an approver may still act on it");
}

/// Fail-fast, extended protocol: the approval is bound to the exact statement and parameters, and used once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_binds_the_approval_to_the_parameters_and_uses_it_once() {
    let dbas = dbas();
    let (gateway, _postgres) = start(&dbas, "approval = { mode = \"fail-fast\" }\n").await;
    let client = gateway.connect().await;
    let delete = "DELETE FROM t WHERE id = $1";
    let error = client.execute(delete, &[&2i32]).await.expect_err("needs approval");
    assert_eq!(sqlstate(&error), "42501");
    let id = approval_id(&server_message(&error));
    assert!(server_message(&error).contains("send the statement again once it is approved"), "{error}");
    let approval = gateway.store().approval(&id).await.expect("read").expect("exists");
    assert_eq!(approval.parameters, Some(vec![Some("\\x00000002".to_string())]), "tokio-postgres binds binary");
    for key in &dbas.keys[..2] {
        let (ok, _, stderr) = approvals(&gateway, key, &["approve", &id]);
        assert!(ok, "{stderr}");
    }

    // Another parameter is another statement: it needs its own approval.
    let error = client.execute(delete, &[&3i32]).await.expect_err("a different parameter");
    assert_ne!(approval_id(&server_message(&error)), id);
    assert_eq!(ids(&gateway).await, [1, 2, 3, 4, 5]);
    // The approved one runs, once.
    assert_eq!(client.execute(delete, &[&2i32]).await.expect("approved"), 1);
    assert_eq!(ids(&gateway).await, [1, 3, 4, 5]);
    let error = client.execute(delete, &[&2i32]).await.expect_err("used once");
    assert_ne!(approval_id(&server_message(&error)), id, "a new request");
    let used = gateway.store().approval(&id).await.expect("read").expect("exists");
    assert_eq!(used.status, warden_state::ApprovalStatus::Used);
}

/// An approved `PREPARE` is followed like an allowed one: each `EXECUTE` of it is then judged as the DELETE it runs,
/// and needs its own approval (it would otherwise be an unknown prepared statement, judged as `unclassified`, which
/// the agents' blanket permit lets through: one approval would have bought any number of deletes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_prepare_is_followed_so_each_execute_needs_its_own_approval() {
    let dbas = dbas();
    let (gateway, _postgres) = start(&dbas, "approval = { mode = \"fail-fast\" }\n").await;
    let client = gateway.connect().await;
    let prepare = "PREPARE del (int) AS DELETE FROM t WHERE id = $1";
    let error = client.batch_execute(prepare).await.expect_err("needs approval");
    let id = approval_id(&server_message(&error));
    for key in &dbas.keys[..2] {
        let (ok, _, stderr) = approvals(&gateway, key, &["approve", &id]);
        assert!(ok, "{stderr}");
    }
    client.batch_execute(prepare).await.expect("approved");

    let error = client.batch_execute("EXECUTE del(2)").await.expect_err("the DELETE it runs needs approval");
    assert_eq!(sqlstate(&error), "42501");
    assert!(server_message(&error).contains("(policy deletes-need-two-dbas;"), "{}", server_message(&error));
    assert_ne!(approval_id(&server_message(&error)), id, "a request of its own");
    assert_eq!(ids(&gateway).await, [1, 2, 3, 4, 5]);
}

/// A time-boxed grant, asked for with `warden approvals request`: once two DBAs approve, the agent's deletes on that
/// table run without asking, on that table only, until the grant ends; then they need approval again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_lets_deletes_run_on_its_table_until_it_ends() {
    let dbas = dbas();
    let (gateway, _postgres) = start(&dbas, "approval = { mode = \"fail-fast\" }\n").await;
    let client = gateway.connect().await;
    client.batch_execute("CREATE TABLE u (id int); INSERT INTO u VALUES (1)").await.expect("another table");
    let (ok, answer, stderr) = approvals(
        &gateway,
        &gateway.api_key,
        &[
            "request",
            "--connection",
            &gateway.database,
            "--action",
            "write",
            "--table",
            "t",
            "--for",
            "3s",
            "--reason",
            "cleanup",
            "--json",
        ],
    );
    assert!(ok, "{stderr}");
    let grant: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    let id = grant["id"].as_str().expect("an id").to_string();
    assert_eq!((grant["kind"].as_str(), grant["status"].as_str()), (Some("grant"), Some("pending")));
    assert_eq!(grant["needed"], serde_json::json!([{"group": "dba", "approvals": 2}]));
    let error = client.simple_query("DELETE FROM t WHERE id = 5").await.expect_err("not approved yet");
    assert_eq!(sqlstate(&error), "42501");
    for key in &dbas.keys[1..] {
        let (ok, _, stderr) = approvals(&gateway, key, &["approve", &id]);
        assert!(ok, "{stderr}");
    }
    client.simple_query("DELETE FROM t WHERE id = 5").await.expect("the grant covers t");
    let error = client.simple_query("DELETE FROM u").await.expect_err("the grant does not cover u");
    assert_eq!(sqlstate(&error), "42501");
    assert_eq!(ids(&gateway).await, [1, 2, 3, 4]);

    // When the grant ends, deleting needs approval again.
    wait_until(20, "the grant to end", || {
        let client = &client;
        async move {
            match client.simple_query("DELETE FROM t WHERE id = 4").await {
                Ok(_) => false,
                Err(error) => {
                    assert_eq!(sqlstate(&error), "42501", "{error}");
                    assert!(server_message(&error).contains("needs approval"), "{error}");
                    true
                }
            }
        }
    })
    .await;
    let requested = approvals(&gateway, &dbas.keys[0], &["list", "--status", "all", "--json"]).1;
    let listed: serde_json::Value = serde_json::from_str(&requested).expect("JSON");
    assert!(listed.as_array().expect("array").iter().any(|approval| approval["id"] == id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_for_what_no_approval_governs_is_refused() {
    let dbas = dbas();
    let (gateway, _postgres) = start(&dbas, "").await;
    let (ok, _, stderr) = approvals(
        &gateway,
        &gateway.api_key,
        &["request", "--connection", &gateway.database, "--action", "read", "--for", "10m", "--reason", "x"],
    );
    assert!(!ok && stderr.contains("there is nothing to approve"), "{stderr}");
    let (ok, _, stderr) = approvals(
        &gateway,
        &gateway.api_key,
        &["request", "--connection", "nowhere", "--action", "write", "--for", "10m", "--reason", "x"],
    );
    assert!(!ok && stderr.contains("no connection \"nowhere\""), "{stderr}");
}

/// A new request is sent to a generic webhook (signed JSON, checked by the receiver) and to a Slack-compatible
/// incoming webhook, with the details and the approve/deny links; each delivery is in the audit log, a delivery
/// still being retried when the gateway stops included (shutdown lets it finish and records it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_requests_are_notified_to_a_webhook_and_slack() {
    let hook = warden_testkit::receivers::WebhookReceiver::start("approvals-hook-secret").await;
    let slack = warden_testkit::receivers::WebhookReceiver::start("").await;
    let secrets = tempfile::tempdir().expect("temp dir");
    std::fs::write(secrets.path().join("hook.secret"), "approvals-hook-secret").unwrap();
    std::fs::write(secrets.path().join("slack.url"), slack.url()).unwrap();
    let mut dbas = dbas();
    dbas.config.push_str(&format!(
        "\n[approvals]\n\n[[approvals.notify]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = {{ file = \"{}\" }}\n\n\
         [[approvals.notify]]\nkind = \"slack\"\nurl = {{ file = \"{}\" }}\n",
        hook.url(),
        secrets.path().join("hook.secret").display(),
        secrets.path().join("slack.url").display()
    ));
    let (mut gateway, _postgres) = start(&dbas, "approval = { mode = \"fail-fast\" }\n").await;
    // Slack's first attempt fails: its delivery is backing off for a retry when the gateway is stopped.
    slack.unavailable_for(1);
    let client = gateway.connect().await;
    let error = client.simple_query("DELETE FROM t WHERE id = 3").await.expect_err("needs approval");
    let id = approval_id(&server_message(&error));

    let timeout = std::time::Duration::from_secs(20);
    let lines = hook.wait_for(&id, timeout).await;
    slack.wait_until("a failed first attempt", timeout, |inbox| !inbox.unavailable_deliveries.is_empty()).await;
    let admin_url = gateway.admin_url();
    drop(client);
    gateway.stop().await;

    let sent: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
    assert_eq!(sent["event"], "approval.requested");
    assert_eq!(sent["approval"]["id"], id.as_str());
    assert_eq!(sent["approval"]["statement"], "DELETE FROM t WHERE id = 3");
    assert_eq!(sent["approval"]["needed"], serde_json::json!([{"group": "dba", "approvals": 2}]));
    assert_eq!(sent["links"]["approve"], format!("{}/v1/approvals/{id}/approve", admin_url));
    assert_eq!(sent["commands"]["approve"], format!("warden approvals approve {id}"));
    let message = slack.inbox().lines;
    assert_eq!(message.len(), 1, "the retried Slack message arrived before the gateway stopped: {message:?}");
    let message: serde_json::Value = serde_json::from_str(&message[0]).expect("JSON");
    let text = message["text"].as_str().expect("a text");
    assert!(text.contains("*agent* asks for approval") && text.contains(&id), "{text}");
    let buttons = message["blocks"].as_array().expect("blocks").last().expect("actions")["elements"].clone();
    assert_eq!(buttons[0]["url"], format!("{}/v1/approvals/{id}/approve", admin_url));
    assert_eq!(buttons[1]["url"], format!("{}/v1/approvals/{id}/deny", admin_url));

    let (events, _) = gateway.store().audit_log(None).await.expect("audit log");
    let notified: Vec<&serde_json::Value> = events
        .iter()
        .filter(|sealed| sealed.event.kind == "approval.notified")
        .map(|sealed| &*sealed.event.body)
        .collect();
    assert_eq!(notified.len(), 2, "{notified:?}");
    assert!(notified.iter().all(|body| body["delivered"] == true && body["id"] == id.as_str()), "{notified:?}");
    let attempts: Vec<(&str, i64)> = notified
        .iter()
        .map(|body| (body["target"].as_str().unwrap_or(""), body["attempts"].as_i64().unwrap_or(0)))
        .collect();
    assert!(attempts.contains(&("slack", 2)), "{attempts:?}");
    assert!(!format!("{notified:?}").contains(&slack.url()), "the Slack URL is a secret: {notified:?}");
}

/// Ctrl-C on a held statement (a CancelRequest) stops the wait at once; the request stays pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_held_statement_stops_the_wait() {
    let dbas = dbas();
    let (gateway, _postgres) = start(&dbas, "").await;
    let client = gateway.connect().await;
    let cancel = client.cancel_token();
    let held = tokio::spawn(async move { client.simple_query("DELETE FROM t WHERE id = 2").await });
    let id = pending_id(&gateway).await;
    cancel.cancel_query(tokio_postgres::NoTls).await.expect("send the cancel request");
    let error = held.await.expect("join").expect_err("cancelled");
    assert_eq!(sqlstate(&error), "57014");
    assert!(server_message(&error).contains("waiting for an approval"), "{error}");
    assert_eq!(ids(&gateway).await, [1, 2, 3, 4, 5]);
    let approval = gateway.store().approval(&id).await.expect("read").expect("exists");
    assert_eq!(approval.status, warden_state::ApprovalStatus::Pending);
}

/// Approvals live in the shared state store: a statement held on a gateway that stops fails cleanly (57P01), and
/// once approved through another gateway the same statement, sent again, runs there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_statement_fails_cleanly_when_its_gateway_stops_and_its_approval_outlives_it() {
    let dbas = dbas();
    let (postgres, app) = start_postgres(Default::default()).await;
    let state_url = format!("postgres://{}:{}@{}/{}", app.role, app.password, postgres.address(), app.database);
    let builder =
        || TestGateway::builder(&postgres, &app).state_url(&state_url).policies(POLICIES).config_extra(&dbas.config);
    let mut first = builder().start().await;
    let second = builder().start().await;
    first
        .connect()
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 5)")
        .await
        .expect("setup");
    let client = first.connect().await;
    let held = tokio::spawn(async move { client.simple_query("DELETE FROM t WHERE id = 1").await });
    let id = pending_id(&first).await;
    first.stop().await;
    let error = held.await.expect("join").expect_err("the gateway stopped");
    assert_eq!(sqlstate(&error), "57P01", "{error}");
    assert_eq!(ids(&second).await, [1, 2, 3, 4, 5]);

    for key in &dbas.keys[..2] {
        let (ok, _, stderr) = approvals(&second, key, &["approve", &id]);
        assert!(ok, "{stderr}");
    }
    let again = second.connect().await;
    let rows = again.simple_query("DELETE FROM t WHERE id = 1").await.expect("approved: runs at once");
    assert!(matches!(rows.last(), Some(SimpleQueryMessage::CommandComplete(1))), "{rows:?}");
    assert_eq!(ids(&second).await, [2, 3, 4, 5]);
    let used = second.store().approval(&id).await.expect("read").expect("exists");
    assert_eq!(used.status, warden_state::ApprovalStatus::Used);
}
