//! warden tokens end to end: issued through the admin API with `warden token issue`, used as the PostgreSQL
//! password, narrowing what the parent credential may do, and labelling the session record.

use crate::OutputInPlace;
use std::process::Command;

use crate::{server_message, sqlstate, start_postgres};
use warden_testkit::TestGateway;

/// An admin command (`subcommand`, then `--admin-url` and `args`) run as `credential` (WARDEN_TOKEN); (success,
/// trimmed stdout, stderr).
fn admin_command(
    gateway: &TestGateway,
    credential: &str,
    subcommand: &[&str],
    args: &[&str],
) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(subcommand)
        .args(["--admin-url", &gateway.admin_url()])
        .args(args)
        .env("WARDEN_TOKEN", credential)
        .env_remove("WARDEN_CONFIG")
        .output_in_place()
        .expect("run warden");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// `warden token issue` as `credential`.
pub(crate) fn issue(gateway: &TestGateway, credential: &str, args: &[&str]) -> (bool, String, String) {
    admin_command(gateway, credential, &["token", "issue"], args)
}

/// `warden revoke` as `credential`.
pub(crate) fn revoke(gateway: &TestGateway, credential: &str, args: &[&str]) -> (bool, String, String) {
    admin_command(gateway, credential, &["revoke"], args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_token_narrows_its_parent_and_labels_the_session() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::start(&postgres, &app).await;
    let agent = gateway.connect().await;
    agent.batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)").await.expect("setup");

    // The agent's API key issues a read-only token for one node of a run.
    let (ok, token, stderr) = issue(
        &gateway,
        &gateway.api_key,
        &[
            "--connection",
            &app.database,
            "--action",
            "connect",
            "--action",
            "read",
            "--run",
            "run-7",
            "--node",
            "planner",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(token.starts_with("wt_"), "{token}");
    assert!(stderr.contains("expires at"), "{stderr}");

    let node = gateway.try_connect(&gateway.connection_string_with(&token)).await.expect("the token is a password");
    let rows = node.query("SELECT id FROM t", &[]).await.expect("the token may read");
    assert_eq!(rows.len(), 1);
    let error = node.batch_execute("INSERT INTO t VALUES (2)").await.expect_err("the token may not write");
    assert_eq!(sqlstate(&error), "42501");
    assert!(server_message(&error).contains("does not allow write"), "{}", server_message(&error));
    node.query("SELECT 1", &[]).await.expect("the session goes on");

    // A child of that token cannot ask for more than it holds.
    let (ok, _, stderr) = issue(&gateway, &token, &["--action", "write"]);
    assert!(!ok);
    assert!(
        stderr.contains("403") && stderr.contains("action \"write\" is not allowed to the parent token"),
        "{stderr}"
    );
    let (ok, _, stderr) = issue(&gateway, &token, &["--run", "run-8"]);
    assert!(!ok && stderr.contains("run \"run-7\""), "{stderr}");
    // A narrower child is fine, and keeps the run.
    let (ok, child, stderr) = issue(&gateway, &token, &["--node", "summariser", "--ttl", "60s"]);
    assert!(ok, "{stderr}");
    let summariser = gateway.try_connect(&gateway.connection_string_with(&child)).await.expect("child connects");
    summariser.query("SELECT id FROM t", &[]).await.expect("child reads");

    // A tampered token is refused at authentication.
    let mut tampered = token.clone();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let error = gateway.try_connect(&gateway.connection_string_with(&tampered)).await.expect_err("tampered");
    assert_eq!(sqlstate(&error), "28P01");
    assert!(server_message(&error).contains("warden token refused"), "{}", server_message(&error));
    // A bad credential for the admin API is refused too.
    let (ok, _, stderr) = issue(&gateway, "wk_not-a-key", &[]);
    assert!(!ok && stderr.contains("401"), "{stderr}");

    drop((node, summariser));
    gateway.flush().await;
    let sessions = gateway.store().list_sessions(&Default::default()).await.expect("sessions");
    let labelled: Vec<_> = sessions.iter().filter(|session| session.run.as_deref() == Some("run-7")).collect();
    assert_eq!(labelled.len(), 2, "{sessions:#?}");
    assert!(labelled.iter().all(|session| session.credential.as_deref() == Some("warden_token")));
    let mut nodes: Vec<_> = labelled.iter().filter_map(|session| session.node.as_deref()).collect();
    nodes.sort();
    assert_eq!(nodes, ["planner", "summariser"]);
    let api_key_session = sessions.iter().find(|session| session.token_id.is_none()).expect("the agent's own session");
    assert_eq!(api_key_session.credential.as_deref(), Some("api_key"));

    // `warden sessions show` through the admin API shows the node's labels to its owner and to the admin group,
    // and nothing to anyone else.
    let planner = labelled.iter().find(|session| session.node.as_deref() == Some("planner")).expect("planner");
    let show = |credential: &str| admin_command(&gateway, credential, &["sessions", "show", &planner.id], &[]);
    for credential in [&gateway.api_key, &gateway.admin_key] {
        let (ok, stdout, stderr) = show(credential);
        assert!(ok, "{stderr}");
        assert!(
            stdout.contains("credential: warden_token tok_") && stdout.contains("run run-7, node planner"),
            "{stdout}"
        );
        assert!(stdout.contains("SELECT id FROM t"), "{stdout}");
    }
    let (ok, _, stderr) = show(&gateway.reader_key);
    assert!(!ok && stderr.contains("404") && stderr.contains("no session with id"), "{stderr}");
    // `warden sessions list` says when it shows only the caller's own sessions, so that none is not read as none
    // at all; the admin group's list says nothing of the kind.
    let list = |credential: &str| admin_command(&gateway, credential, &["sessions", "list"], &[]);
    let (ok, stdout, stderr) = list(&gateway.reader_key);
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("run-7") && !stdout.contains(&planner.id), "{stdout}");
    assert!(stderr.contains("only identity \"reader\"'s sessions are listed"), "{stderr}");
    let (ok, stdout, stderr) = list(&gateway.admin_key);
    assert!(ok && stdout.contains(&planner.id), "{stdout}\n{stderr}");
    assert!(!stderr.contains("only identity"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_identity_ends_its_running_psql_session_and_refuses_it_from_then_on() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::start(&postgres, &app).await;
    let (direct, connection) =
        tokio_postgres::connect(&postgres.url(&app.database), tokio_postgres::NoTls).await.expect("direct");
    tokio::spawn(connection);

    // The reader runs a long query in psql.
    let psql = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &gateway.port().to_string(), "-U", "reader", "-d", &app.database])
        .args(["-c", "SELECT pg_sleep(60)"])
        .env("PGPASSWORD", &gateway.reader_key)
        .env("PGSSLMODE", "disable")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql starts");
    crate::wait_until(10, "the reader's query to run upstream", || {
        let direct = &direct;
        async move {
            let rows = direct
                .query("SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(60)'", &[])
                .await
                .expect("pg_stat_activity");
            !rows.is_empty()
        }
    })
    .await;
    let agent = gateway.connect().await;

    // Only the admin group may revoke.
    let (ok, _, stderr) = revoke(&gateway, &gateway.api_key, &["--identity", "reader"]);
    assert!(!ok && stderr.contains("403") && stderr.contains("group \"admin\""), "{stderr}");

    let revoked_at = std::time::Instant::now();
    let (ok, stdout, stderr) =
        revoke(&gateway, &gateway.admin_key, &["--identity", "reader", "--reason", "offboarded"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "revoked identity reader; 1 live session(s) ended");
    let output = tokio::task::spawn_blocking(move || psql.wait_with_output().expect("psql ends")).await.unwrap();
    let ended_after = revoked_at.elapsed();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("terminating connection: identity \"reader\" has been revoked (offboarded)"), "{stderr}");
    assert!(ended_after < std::time::Duration::from_secs(5), "psql ended {ended_after:?} after the revocation");
    eprintln!("psql ended {ended_after:?} after `warden revoke` started");
    // The query stopped upstream too (its backend got Terminate and went away).
    crate::wait_until(10, "the reader's backend to go", || {
        let direct = &direct;
        async move {
            let rows = direct
                .query("SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'", &[])
                .await
                .expect("pg_stat_activity");
            rows.is_empty()
        }
    })
    .await;

    // From now on the identity is refused, and the agent is untouched.
    let error = gateway.try_connect(&gateway.connection_string_with(&gateway.reader_key)).await.expect_err("revoked");
    assert_eq!(sqlstate(&error), "28P01");
    assert!(server_message(&error).contains("identity \"reader\" has been revoked"), "{}", server_message(&error));
    agent.query("SELECT 1", &[]).await.expect("the agent's session goes on");

    // Revoking a token ends its sessions and refuses it and every token issued from it.
    let (_, parent, _) = issue(&gateway, &gateway.api_key, &["--run", "run-9"]);
    let (_, child, _) = issue(&gateway, &parent, &["--node", "child"]);
    let parent_session = gateway.try_connect(&gateway.connection_string_with(&parent)).await.expect("parent");
    let child_session = gateway.try_connect(&gateway.connection_string_with(&child)).await.expect("child");
    let parent_id = token_id(&parent);
    let (ok, stdout, stderr) = revoke(&gateway, &gateway.admin_key, &["--token", &parent_id]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, format!("revoked token {parent_id}; 2 live session(s) ended"));
    for session in [&parent_session, &child_session] {
        let error = session.query("SELECT 1", &[]).await.expect_err("ended");
        assert!(error.is_closed() || server_message(&error).contains("has been revoked"), "{error}");
    }
    let error = gateway.try_connect(&gateway.connection_string_with(&child)).await.expect_err("child refused");
    assert!(
        server_message(&error).contains(&format!("token {parent_id} has been revoked")),
        "{}",
        server_message(&error)
    );
    agent.query("SELECT 1", &[]).await.expect("the agent's own session goes on");
}

/// The `jti` of a `wt_` token (its id), read from the unverified payload.
pub(crate) fn token_id(token: &str) -> String {
    use base64::Engine;
    let payload = token.strip_prefix("wt_").unwrap().split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["jti"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_token_is_a_password_and_its_groups_meet_the_policies() {
    let issuer = warden_testkit::oidc::TestIssuer::start().await;
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app)
        .config_extra(&format!("[[oidc]]\nissuer = \"{}\"\naudience = \"warden\"\n", issuer.issuer()))
        .start()
        .await;

    // A human in group "readers" (DEFAULT_POLICIES: connect and read) signs in with their IdP token.
    let mut claims = issuer.claims("alice@example.com", "warden");
    claims["groups"] = serde_json::json!(["readers"]);
    let token = issuer.mint(claims.clone());
    let alice = gateway.try_connect(&gateway.connection_string_with(&token)).await.expect("OIDC login");
    alice.query("SELECT 1", &[]).await.expect("readers read");
    let error = alice.batch_execute("CREATE TABLE nope (id int)").await.expect_err("readers do not write");
    assert_eq!(sqlstate(&error), "42501");

    // Forgeries are refused at authentication, with the reason.
    for (forged, reason) in [
        (issuer.alg_none(claims.clone()), "alg none"),
        (issuer.hs256_with_public_key(claims.clone()), "HS256"),
        (issuer.mint(issuer.claims("alice@example.com", "someone-else")), "audience"),
    ] {
        let error = gateway.try_connect(&gateway.connection_string_with(&forged)).await.expect_err("forged");
        assert_eq!(sqlstate(&error), "28P01");
        let message = server_message(&error);
        assert!(message.contains("OIDC token refused") && message.contains(reason), "{reason}: {message}");
    }

    // The human can hand a workflow node a narrower warden token of their own.
    let (ok, node_token, stderr) =
        issue(&gateway, &token, &["--node", "notebook", "--action", "connect", "--action", "read"]);
    assert!(ok, "{stderr}");
    let node = gateway.try_connect(&gateway.connection_string_with(&node_token)).await.expect("node connects");
    node.query("SELECT 1", &[]).await.expect("node reads");
    drop((alice, node));
    gateway.flush().await;
    let sessions = gateway.store().list_sessions(&Default::default()).await.expect("sessions");
    assert!(sessions
        .iter()
        .any(|session| session.identity == "alice@example.com" && session.credential.as_deref() == Some("oidc")));
    assert!(sessions
        .iter()
        .any(|session| session.identity == "alice@example.com" && session.node.as_deref() == Some("notebook")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_token_expires() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::start(&postgres, &app).await;
    let (ok, token, stderr) = issue(&gateway, &gateway.api_key, &["--ttl", "2s", "--node", "short-lived"]);
    assert!(ok, "{stderr}");
    let session = gateway.try_connect(&gateway.connection_string_with(&token)).await.expect("connects");
    // A query that would outlive the token is cut off at its expiry.
    let started = std::time::Instant::now();
    let error = session.query("SELECT pg_sleep(30)", &[]).await.expect_err("ended at expiry");
    let elapsed = started.elapsed();
    // The client reads the FATAL, or (when its query crossed warden's close) sees the connection drop.
    if let Some(db) = error.as_db_error() {
        assert!(db.message().contains("expired"), "{}", db.message());
    }
    assert!(elapsed < std::time::Duration::from_secs(10), "the session outlived its token: {elapsed:?}");
    // The end is recorded once warden has closed both legs.
    crate::wait_until(10, "the session's end to be recorded", || async {
        gateway.flush().await;
        let sessions = gateway.store().list_sessions(&Default::default()).await.expect("sessions");
        sessions.iter().any(|row| {
            row.node.as_deref() == Some("short-lived")
                && row.end_reason.as_deref().is_some_and(|reason| reason.contains("expired"))
        })
    })
    .await;
}

/// Two gateways sharing one PostgreSQL state store: a revocation made through one ends the identity's session on
/// the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_replica_ends_sessions_on_another() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let state_url = format!("postgres://{}:{}@{}/app", app.role, app.password, postgres.address());
    let first = TestGateway::builder(&postgres, &app).state_url(&state_url).start().await;
    let second = TestGateway::builder(&postgres, &app).state_url(&state_url).start().await;
    let on_second = second.try_connect(&second.connection_string_with(&second.reader_key)).await.expect("reader");
    on_second.query("SELECT 1", &[]).await.expect("reads");

    let revoked_at = std::time::Instant::now();
    let (ok, stdout, stderr) = revoke(&first, &first.admin_key, &["--identity", "reader"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "revoked identity reader; 0 live session(s) ended", "none on the first gateway");
    crate::wait_until(10, "the second gateway to end the reader's session", || {
        let on_second = &on_second;
        async move { on_second.is_closed() || on_second.query("SELECT 1", &[]).await.is_err() }
    })
    .await;
    let elapsed = revoked_at.elapsed();
    assert!(elapsed < std::time::Duration::from_secs(5), "took {elapsed:?}");
    eprintln!("session on the other replica ended {elapsed:?} after the revocation");
    let error = second.try_connect(&second.connection_string_with(&second.reader_key)).await.expect_err("revoked");
    assert!(server_message(&error).contains("identity \"reader\" has been revoked"), "{}", server_message(&error));
}
