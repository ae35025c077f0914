//! Finding sessions by what they touched (`warden sessions list --table`, `--until`), and retention: `warden audit
//! prune` removes old sessions and audit events and the log still verifies, while deleting one more event does not.

use crate::OutputInPlace;
use std::process::{Command, Output};

use sqlx::sqlite::SqliteConnection;
use sqlx::Connection;

use crate::fixture;

fn warden() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warden"));
    // Offline: read the state store the config names, never an admin API.
    command.env_remove("WARDEN_TOKEN");
    command
}

fn run(args: &[&str]) -> Output {
    warden().args(args).output_in_place().expect("run warden")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The ids `warden sessions list --json` printed.
fn listed(output: &Output) -> Vec<String> {
    assert!(output.status.success(), "{}", text(output));
    let sessions: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    sessions.as_array().expect("a list").iter().map(|session| session["id"].as_str().expect("id").to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_list_filters_by_table_and_time() {
    let mut fixture = fixture().await;
    let setup = fixture.gateway.connect().await;
    setup
        .batch_execute("CREATE TABLE customers (id int, email text); CREATE TABLE orders (id int, customer int)")
        .await
        .expect("setup");
    drop(setup);
    let reads_customers = fixture.gateway.connect().await;
    reads_customers.query("SELECT email FROM customers WHERE id = 1", &[]).await.expect("select");
    drop(reads_customers);
    let reads_orders = fixture.gateway.connect().await;
    reads_orders.batch_execute("SELECT count(*) FROM orders").await.expect("select");
    drop(reads_orders);
    fixture.gateway.stop().await;
    let config = fixture.gateway.config_path.to_str().expect("utf-8 path").to_string();

    let all = listed(&run(&["sessions", "list", "--json", "--config", &config]));
    assert_eq!(all.len(), 3, "{all:?}");
    // Newest first: the orders reader, the customers reader, the setup session (which created both tables).
    let (orders, customers, setup) = (&all[0], &all[1], &all[2]);
    let by_table = |table: &str| listed(&run(&["sessions", "list", "--table", table, "--json", "--config", &config]));
    assert_eq!(by_table("customers"), [customers.clone(), setup.clone()]);
    assert_eq!(by_table("public.customers"), [customers.clone(), setup.clone()]);
    assert_eq!(by_table("orders"), [orders.clone(), setup.clone()]);
    assert_eq!(by_table("other.customers"), Vec::<String>::new());
    assert_eq!(by_table("nothing"), Vec::<String>::new());

    let long_ago =
        listed(&run(&["sessions", "list", "--until", "2020-01-01T00:00:00Z", "--json", "--config", &config]));
    assert_eq!(long_ago, Vec::<String>::new());
    let before_now = listed(&run(&[
        "sessions",
        "list",
        "--table",
        "customers",
        "--until",
        "2999-01-01T00:00:00Z",
        "--run",
        "nightly",
        "--json",
        "--config",
        &config,
    ]));
    assert_eq!(before_now, Vec::<String>::new(), "API-key sessions carry no run label");
    let refused = run(&["sessions", "list", "--until", "yesterday", "--config", &config]);
    assert!(!refused.status.success() && text(&refused).contains("RFC 3339"), "{}", text(&refused));
}

/// `warden audit prune` after the gateway stopped, with a cutoff after its sessions: they are gone from `sessions
/// list/show/replay`, the audit log still verifies (the gateway's chain reported as pruned), and deleting one more
/// audit row (the `audit.pruned` event that vouches for the pruning) breaks it at that row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_keeps_the_log_verifiable_and_deleting_more_is_found() {
    let mut fixture = fixture().await;
    let client = fixture.gateway.connect().await;
    client
        .batch_execute("CREATE TABLE customers (id int, email text); INSERT INTO customers VALUES (1, 'a@example.com')")
        .await
        .expect("statements");
    client.query("SELECT email FROM customers", &[]).await.expect("select");
    drop(client);
    fixture.gateway.stop().await;
    let config = fixture.gateway.config_path.to_str().expect("utf-8 path").to_string();
    let sessions = listed(&run(&["sessions", "list", "--json", "--config", &config]));
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let (events, _) = fixture.gateway.store().audit_log(None).await.expect("audit log");
    let gateway_chain = events[0].event.chain.clone();
    let gateway_events = events.len();

    // The gateway stopped, its last checkpoint written: a cutoff a few seconds ahead is after all of it.
    let before = (time::OffsetDateTime::now_utc() + std::time::Duration::from_secs(3))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let pruned = run(&["audit", "prune", "--config", &config, "--before", &before]);
    assert!(pruned.status.success(), "{}", text(&pruned));
    assert!(text(&pruned).contains("1 session(s)"), "{}", text(&pruned));
    assert!(
        text(&pruned)
            .contains(&format!("{gateway_chain}: events 1..={gateway_events} pruned ({gateway_events} event(s)")),
        "{}",
        text(&pruned)
    );

    let verified = run(&["audit", "verify", "--config", &config]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        text(&verified).contains(&format!("{gateway_chain}: {gateway_events} events, all pruned by retention")),
        "{}",
        text(&verified)
    );
    let verified = run(&["audit", "verify", "--json", "--config", &config]);
    let report: serde_json::Value = serde_json::from_slice(&verified.stdout).expect("JSON");
    let gateway = report["chains"].as_array().expect("chains").iter().find(|chain| chain["chain"] == *gateway_chain);
    assert_eq!(gateway.expect("the gateway's chain is reported")["pruned"], gateway_events);

    assert_eq!(listed(&run(&["sessions", "list", "--json", "--config", &config])), Vec::<String>::new());
    assert_eq!(
        listed(&run(&["sessions", "list", "--table", "customers", "--json", "--config", &config])),
        Vec::<String>::new()
    );
    for command in ["show", "replay"] {
        let output = run(&["sessions", command, &sessions[0], "--config", &config]);
        assert!(!output.status.success(), "sessions {command}: {}", text(&output));
        assert!(text(&output).contains(&format!("no session with id {}", sessions[0])), "{}", text(&output));
    }

    // The pass's own chain holds the audit.pruned event; deleting that row is found at it.
    let (events, _) = fixture.gateway.store().audit_log(None).await.expect("audit log");
    let mark = events.iter().find(|sealed| sealed.event.kind == "audit.pruned").expect("an audit.pruned event");
    let (chain, seq) = (mark.event.chain.clone(), mark.event.seq);
    assert_ne!(chain, gateway_chain);
    let loaded = warden_config::Config::load(&fixture.gateway.config_path, &|_: &str| None).expect("config");
    let url = loaded.state.url.expose().to_string();
    let mut database = SqliteConnection::connect(&url).await.expect("open the state file");
    let deleted = sqlx::query("DELETE FROM audit_events WHERE chain = ? AND seq = ?")
        .bind(&chain)
        .bind(i64::try_from(seq).expect("a small seq"))
        .execute(&mut database)
        .await
        .expect("delete the row");
    assert_eq!(deleted.rows_affected(), 1);
    database.close().await.expect("close");
    let verified = run(&["audit", "verify", "--config", &config]);
    assert!(!verified.status.success(), "{}", text(&verified));
    let expected = warden_audit::Broken::Truncated { chain: chain.clone(), seq, last: seq - 1 };
    assert!(text(&verified).contains(&expected.to_string()), "{}", text(&verified));
}
