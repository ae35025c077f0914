//! `[audit] durability = "sync"`: a statement's answer reaches the client only once its record is durable, and
//! when the audit log cannot be written the session ends instead of going on unrecorded.

use crate::{sqlstate, start_postgres};
use warden_testkit::TestGateway;

const SYNC: &str = "[audit]\ndurability = \"sync\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sync_mode_what_the_client_received_is_already_in_the_log() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app).config_extra(SYNC).start().await;
    let client = gateway.connect().await;
    let store = gateway.store();
    for n in 0..5 {
        let text = format!("SELECT {n} AS sync_probe");
        client.simple_query(&text).await.expect("query");
        // No flush: the answer came back, so the record is already committed.
        let (events, _) = store.audit_log(None).await.expect("audit log");
        let recorded: Vec<&str> = events
            .iter()
            .filter(|sealed| sealed.event.kind == "statement")
            .filter_map(|sealed| sealed.event.body["text"].as_str())
            .collect();
        assert!(recorded.contains(&text.as_str()), "{text} not yet in the log: {recorded:?}");
        let requested = events
            .iter()
            .any(|sealed| sealed.event.kind == "statement.request" && sealed.event.body["text"] == text.as_str());
        assert!(requested, "the request of {text} was recorded before it was forwarded");
    }
    // Extended protocol too.
    let row = client.query_one("SELECT $1::int + 1", &[&41i32]).await.expect("extended");
    assert_eq!(row.get::<_, i32>(0), 42);
    let (events, _) = store.audit_log(None).await.expect("audit log");
    assert!(events
        .iter()
        .any(|sealed| sealed.event.kind == "statement" && sealed.event.body["text"] == "SELECT $1::int + 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sync_mode_a_lost_state_store_ends_the_session_with_a_clear_error() {
    let (postgres, app) = start_postgres(Default::default()).await;
    // The state store on a server of its own, so it can be taken away while the data path still works.
    let (state, state_app) = start_postgres(Default::default()).await;
    let state_url = format!("postgres://{}:{}@{}/app", state_app.role, state_app.password, state.address());
    let gateway = TestGateway::builder(&postgres, &app).state_url(&state_url).config_extra(SYNC).start().await;
    let client = gateway.connect().await;
    client.simple_query("SELECT 1").await.expect("recorded and answered");
    tokio::task::spawn_blocking(move || state.stop()).await.expect("stop the state store");

    let error = client.simple_query("SELECT 2").await.expect_err("nothing is forwarded unrecorded");
    assert_eq!(sqlstate(&error), "58030", "{error:?}");
    let message = crate::server_message(&error);
    assert!(
        message.contains("audit log cannot be written") && message.contains("audit.durability = sync"),
        "{message}"
    );
}
