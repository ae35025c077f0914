//! The store against a real SQLite file in a temporary directory, and against a throwaway PostgreSQL
//! started from the system binaries.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::macros::datetime;
use time::OffsetDateTime;

use super::*;

async fn open_sqlite_in(directory: &Path) -> StateStore {
    let url = format!("sqlite://{}", directory.join("warden.db").display());
    StateStore::open(&url).await.expect("open the SQLite store")
}

/// A PostgreSQL store on a throwaway server; the server lives as long as the returned guard.
async fn open_postgres() -> (StateStore, warden_testkit::TempPostgres) {
    let postgres = tokio::task::spawn_blocking(|| {
        let postgres = warden_testkit::TempPostgres::start().expect("throwaway PostgreSQL starts");
        postgres.create_role("warden", "state-store-password", false).expect("create role");
        postgres.create_database("warden_state", "warden").expect("create database");
        postgres
    })
    .await
    .expect("join");
    let url = format!("postgres://warden:state-store-password@{}/warden_state", postgres.address());
    let store = StateStore::open(&url).await.expect("open the PostgreSQL store");
    (store, postgres)
}

/// A prefix that keeps ids apart between runs against a shared PostgreSQL database.
fn unique_prefix() -> String {
    format!("{}-{}", std::process::id(), OffsetDateTime::now_utc().unix_timestamp_nanos())
}

fn start(id: &str, identity: &str, connection: &str, started_at: OffsetDateTime) -> SessionStart {
    SessionStart {
        id: id.to_string(),
        identity: identity.to_string(),
        connection: connection.to_string(),
        client_address: "192.0.2.7:51234".to_string(),
        user_name: "app".to_string(),
        application_name: Some("psql".to_string()),
        started_at,
        credential: Some("warden_token".to_string()),
        token_id: Some("tok_0123".to_string()),
        run: Some("run-7".to_string()),
        node: Some("planner".to_string()),
    }
}

pub(crate) fn statement(session_id: &str, seq: u64, text: &str) -> StatementRecord {
    StatementRecord {
        session_id: session_id.into(),
        seq,
        started_at: datetime!(2025-03-01 10:00:01.000001 UTC),
        duration: Duration::from_micros(250),
        text: text.into(),
        rows: Some(1),
        error: None,
        decision: None,
        result: None,
        http: None,
        model: None,
        tokens: None,
        batch: None,
    }
}

fn allowed_update() -> Decision {
    Decision::new(
        true,
        vec!["write".into()],
        vec!["public.orders".into(), "shop.\"odd,name\"".into()],
        vec!["agents-write-orders".into(), "policies/shop.cedar:12".into()],
    )
}

fn denied_delete() -> Decision {
    Decision::new(false, vec!["write".into()], vec!["public.orders".into()], vec!["no-unbounded-delete".into()])
}

/// Records a session, three statements (out of seq order) and its end, then reads it all back.
async fn check_round_trip(store: &StateStore) {
    let prefix = unique_prefix();
    let id = format!("{prefix}-round-trip");
    let identity = format!("{prefix}-alice@example.com");
    let recorder = store.recorder(64);

    let started_at = datetime!(2025-03-01 10:00:00.123456 UTC);
    recorder.session_started(start(&id, &identity, "shop", started_at)).expect("queue has room");
    let first = statement(&id, 1, "SELECT * FROM orders WHERE id = 7");
    let third = StatementRecord {
        seq: 3,
        started_at: datetime!(2025-03-01 10:00:03 UTC),
        duration: Duration::from_millis(12),
        text: "DELETE FROM orders".into(),
        rows: None,
        error: Some("42501: forbidden by policy no-unbounded-delete".to_string()),
        decision: Some(Arc::new(denied_delete())),
        ..statement(&id, 3, "")
    };
    let second = StatementRecord {
        seq: 2,
        started_at: datetime!(2025-03-01 10:00:02.5 UTC),
        text: "UPDATE orders SET note = 'héllo ✓' WHERE id = 7".into(),
        rows: Some(0),
        decision: Some(Arc::new(allowed_update())),
        ..statement(&id, 2, "")
    };
    for record in [first, third, second] {
        recorder.statement(record).expect("queue has room");
    }
    let ended_at = datetime!(2025-03-01 10:05:00 UTC);
    recorder.session_ended(&id, ended_at, Some("client closed the connection".to_string())).expect("queue has room");
    recorder.flush().await.expect("everything recorded is stored");

    let expected_session = SessionRow {
        id: id.clone(),
        identity: identity.clone(),
        connection: "shop".to_string(),
        client_address: "192.0.2.7:51234".to_string(),
        user_name: "app".to_string(),
        application_name: Some("psql".to_string()),
        started_at,
        ended_at: Some(ended_at),
        end_reason: Some("client closed the connection".to_string()),
        statement_count: 3,
        credential: Some("warden_token".to_string()),
        token_id: Some("tok_0123".to_string()),
        run: Some("run-7".to_string()),
        node: Some("planner".to_string()),
        masked: BTreeMap::new(),
    };
    assert_eq!(store.session(&id).await.expect("read the session"), Some(expected_session.clone()));
    let listed = store
        .list_sessions(&SessionFilter { identity: Some(identity), ..SessionFilter::default() })
        .await
        .expect("list sessions");
    assert_eq!(listed, vec![expected_session]);

    let statements = store.statements(&id).await.expect("read the statements");
    let expected_statements = vec![
        StatementRow {
            session_id: id.clone(),
            seq: 1,
            started_at: datetime!(2025-03-01 10:00:01.000001 UTC),
            duration_us: 250,
            text: "SELECT * FROM orders WHERE id = 7".to_string(),
            rows: Some(1),
            error: None,
            decision: None,
            model: None,
            tokens: None,
        },
        StatementRow {
            session_id: id.clone(),
            seq: 2,
            started_at: datetime!(2025-03-01 10:00:02.5 UTC),
            duration_us: 250,
            text: "UPDATE orders SET note = 'héllo ✓' WHERE id = 7".to_string(),
            rows: Some(0),
            error: None,
            decision: Some(allowed_update()),
            model: None,
            tokens: None,
        },
        StatementRow {
            session_id: id.clone(),
            seq: 3,
            started_at: datetime!(2025-03-01 10:00:03 UTC),
            duration_us: 12_000,
            text: "DELETE FROM orders".to_string(),
            rows: None,
            error: Some("42501: forbidden by policy no-unbounded-delete".to_string()),
            decision: Some(denied_delete()),
            model: None,
            tokens: None,
        },
    ];
    assert_eq!(statements, expected_statements);
    assert_eq!(store.session("no-such-session").await.expect("read"), None);
    assert_eq!(recorder.dropped_events(), 0);
    assert_eq!(recorder.write_errors(), 0);
}

fn masked_counts(counts: &[(&str, u64)]) -> BTreeMap<String, u64> {
    counts.iter().map(|&(detector, count)| (detector.to_string(), count)).collect()
}

/// Masked counts are stored with their session, each recording replacing the last, in one batch or across
/// batches; an empty map, or none at all, reads back empty.
async fn check_masked_counts(store: &StateStore) {
    let prefix = unique_prefix();
    let masked = format!("{prefix}-masked");
    let replaced = format!("{prefix}-replaced");
    let cleared = format!("{prefix}-cleared");
    let plain = format!("{prefix}-plain");
    let recorder = store.recorder(64);
    let at = datetime!(2025-04-01 12:00 UTC);
    for id in [&masked, &replaced, &cleared, &plain] {
        recorder.session_started(start(id, &prefix, "shop", at)).expect("queue has room");
    }
    let counts = masked_counts(&[("us_ssn", 1), ("email", 3), ("column", 2)]);
    recorder.session_masked(&masked, counts.clone()).expect("queue has room");
    recorder.session_ended(&masked, at + Duration::from_secs(60), None).expect("queue has room");
    // Two in one batch: the later wins.
    recorder.session_masked(&replaced, masked_counts(&[("email", 9)])).expect("queue has room");
    recorder.session_masked(&replaced, masked_counts(&[("phone", 1)])).expect("queue has room");
    recorder.session_masked(&cleared, masked_counts(&[("email", 1)])).expect("queue has room");
    recorder.flush().await.expect("stored");

    let read = |id: String| async move { store.session(&id).await.expect("read").expect("stored").masked };
    assert_eq!(read(masked.clone()).await, counts);
    assert_eq!(read(replaced.clone()).await, masked_counts(&[("phone", 1)]));
    assert_eq!(read(cleared.clone()).await, masked_counts(&[("email", 1)]));
    assert_eq!(read(plain.clone()).await, BTreeMap::new());

    // In a later batch: replaced, and cleared by an empty map.
    recorder.session_masked(&replaced, masked_counts(&[("email", 4), ("iban", 2)])).expect("queue has room");
    recorder.session_masked(&cleared, BTreeMap::new()).expect("queue has room");
    recorder.flush().await.expect("stored");
    assert_eq!(read(replaced.clone()).await, masked_counts(&[("email", 4), ("iban", 2)]));
    assert_eq!(read(cleared.clone()).await, BTreeMap::new());

    // Listing reads them too.
    let listed = store
        .list_sessions(&SessionFilter { identity: Some(prefix.clone()), ..SessionFilter::default() })
        .await
        .expect("list sessions");
    let listed: BTreeMap<String, BTreeMap<String, u64>> =
        listed.into_iter().map(|session| (session.id, session.masked)).collect();
    assert_eq!(
        listed,
        BTreeMap::from([
            (masked, counts),
            (replaced, masked_counts(&[("email", 4), ("iban", 2)])),
            (cleared, BTreeMap::new()),
            (plain, BTreeMap::new()),
        ])
    );
    assert_eq!(recorder.write_errors(), 0);
}

/// Rate counts add up per replica, slot and identity; a replica reads every other's (summed) and not its own, from a
/// slot on; pruning deletes the old slots.
async fn check_rate_counts(store: &StateStore) {
    let connection = format!("{}-llm", unique_prefix());
    let count = |identity: &str, slot: i64, requests: u64, tokens: u64| RateCount {
        connection: connection.clone(),
        identity: identity.to_string(),
        slot,
        requests,
        tokens,
    };
    store.add_rate_counts("a", &[count("alice", 10, 2, 30), count("bob", 10, 1, 0)]).await.expect("add");
    store.add_rate_counts("a", &[count("alice", 10, 1, 5), count("alice", 11, 1, 0)]).await.expect("add");
    store.add_rate_counts("b", &[count("alice", 10, 3, 100), count("alice", 9, 1, 1)]).await.expect("add");
    store.add_rate_counts("c", &[]).await.expect("nothing to add");
    let mut others = store.rate_counts_of_others("c", &connection, 10).await.expect("read");
    others.sort_by(|left, right| (&left.identity, left.slot).cmp(&(&right.identity, right.slot)));
    assert_eq!(others, [count("alice", 10, 6, 135), count("alice", 11, 1, 0), count("bob", 10, 1, 0)]);
    let mut others = store.rate_counts_of_others("a", &connection, 0).await.expect("read");
    others.sort_by_key(|count| count.slot);
    assert_eq!(others, [count("alice", 9, 1, 1), count("alice", 10, 3, 100)]);
    assert_eq!(store.prune_rate_counts(11).await.expect("prune"), 4);
    let others = store.rate_counts_of_others("c", &connection, 0).await.expect("read");
    assert_eq!(others, [count("alice", 11, 1, 0)]);
}

#[tokio::test]
async fn sqlite_rate_counts() {
    let directory = tempfile::tempdir().expect("temporary directory");
    check_rate_counts(&open_sqlite_in(directory.path()).await).await;
}

#[tokio::test]
async fn postgres_rate_counts() {
    let (store, _postgres) = open_postgres().await;
    check_rate_counts(&store).await;
}

/// An Ed25519 key signing checkpoints, as the gateway's would.
struct TestSigner {
    pair: aws_lc_rs::signature::Ed25519KeyPair,
    key_id: String,
}

impl TestSigner {
    fn new() -> (Arc<TestSigner>, warden_audit::PublicKey) {
        use aws_lc_rs::signature::KeyPair;
        let document = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .expect("generate a key");
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(document.as_ref()).expect("parse the key");
        let raw: [u8; 32] = pair.public_key().as_ref().try_into().expect("32 bytes");
        let public = warden_audit::PublicKey::from_raw(raw);
        (Arc::new(TestSigner { pair, key_id: public.key_id().to_string() }), public)
    }
}

impl AuditSigner for TestSigner {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.pair.sign(message).as_ref().try_into().expect("64 bytes")
    }
}

/// Two gateways' recorders one after the other: each writes its own chain, sealed by signed checkpoints, and the
/// second chain's first event names the first chain's head; the whole log verifies. An idle writer seals what it
/// wrote within the checkpoint interval, without a flush.
async fn check_audit_chain(store: &StateStore) {
    let (signer, key) = TestSigner::new();
    let prefix = unique_prefix();
    let first = store.audited_recorder(64, signer.clone());
    let session = format!("{prefix}-a");
    first.session_started(start(&session, "agent", "shop", datetime!(2025-03-01 10:00 UTC))).expect("queue");
    first.statement(statement(&session, 1, "SELECT 1")).expect("queue");
    first.audit(AuditRecord::new("policy.reload", serde_json::json!({"policies": 3}))).expect("queue");
    first.session_ended(&session, datetime!(2025-03-01 10:01 UTC), Some("client closed".into())).expect("queue");
    first.flush().await.expect("flush");
    drop(first);

    let second = store.audited_recorder(64, signer);
    second.session_started(start(&format!("{prefix}-b"), "agent", "shop", OffsetDateTime::now_utc())).expect("queue");
    // No flush: the writer seals it on its own within the checkpoint interval.
    let deadline = Instant::now() + CHECKPOINT_INTERVAL * 5;
    let (events, checkpoints) = loop {
        let (events, checkpoints) = store.audit_log(None).await.expect("read the audit log");
        let chains: std::collections::BTreeSet<&str> = events.iter().map(|e| e.event.chain.as_str()).collect();
        let sealed = chains.len() == 2
            && chains.iter().all(|chain| {
                let last = events.iter().filter(|e| e.event.chain == *chain).map(|e| e.event.seq).max();
                checkpoints.iter().any(|c| c.chain == *chain && Some(c.seq) == last)
            });
        if sealed {
            break (events, checkpoints);
        }
        assert!(Instant::now() < deadline, "the idle writer did not seal its chain: {checkpoints:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let report = warden_audit::verify(events.clone(), checkpoints, &[key]).expect("the log verifies");
    assert_eq!(report.chains.len(), 2);
    assert!(report.chains.iter().all(|chain| chain.unsealed == 0), "{report:?}");

    let statement_event = events.iter().find(|e| e.event.kind == "statement").expect("the statement");
    assert_eq!(statement_event.event.identity.as_deref(), Some("agent"));
    assert_eq!(statement_event.event.run.as_deref(), Some("run-7"));
    assert_eq!(statement_event.event.body["text"], "SELECT 1");
    assert!(events.iter().any(|e| e.event.kind == "policy.reload" && e.event.body["policies"] == 3));
    let starts: Vec<_> = events.iter().filter(|e| e.event.kind == "chain.start").collect();
    assert_eq!(starts.len(), 2);
    let named: Vec<&str> = starts
        .iter()
        .flat_map(|start| start.event.body["previous"].as_array().into_iter().flatten())
        .filter_map(|previous| previous["chain"].as_str())
        .collect();
    assert_eq!(named.len(), 1, "the second chain names the first: {starts:?}");
    second.flush().await.expect("flush");
}

#[tokio::test]
async fn sqlite_audit_chain() {
    let directory = tempfile::tempdir().expect("temporary directory");
    check_audit_chain(&open_sqlite_in(directory.path()).await).await;
}

#[tokio::test]
async fn postgres_audit_chain() {
    let (store, _postgres) = open_postgres().await;
    check_audit_chain(&store).await;
}

#[tokio::test]
async fn sqlite_masked_counts() {
    let directory = tempfile::tempdir().expect("temporary directory");
    check_masked_counts(&open_sqlite_in(directory.path()).await).await;
}

#[tokio::test]
async fn postgres_masked_counts() {
    let (store, _postgres) = open_postgres().await;
    check_masked_counts(&store).await;
}

#[tokio::test]
async fn open_creates_the_file_and_its_parent_directories() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let nested = directory.path().join("state/nested");
    let store = open_sqlite_in(&nested).await;
    assert_eq!(store.backend(), "sqlite");
    assert!(nested.join("warden.db").is_file());
}

#[tokio::test]
async fn reopening_an_existing_store_keeps_its_data() {
    let directory = tempfile::tempdir().expect("temporary directory");
    {
        let store = open_sqlite_in(directory.path()).await;
        let recorder = store.recorder(8);
        recorder
            .session_started(start("kept", "alice", "shop", datetime!(2025-01-01 0:00 UTC)))
            .expect("queue has room");
        recorder.flush().await.expect("stored");
    }
    // Migrations already applied must be recognised, not run again.
    let store = open_sqlite_in(directory.path()).await;
    let store_again = open_sqlite_in(directory.path()).await;
    assert!(store.session("kept").await.expect("read").is_some());
    assert!(store_again.session("kept").await.expect("read").is_some());
}

#[tokio::test]
async fn sqlite_round_trip() {
    let directory = tempfile::tempdir().expect("temporary directory");
    check_round_trip(&open_sqlite_in(directory.path()).await).await;
}

#[tokio::test]
async fn postgres_round_trip() {
    let (store, _postgres) = open_postgres().await;
    assert_eq!(store.backend(), "postgres");
    check_round_trip(&store).await;
}

/// Revocations come back in order, past any id a gateway has already seen.
async fn check_revocations(store: &StateStore) {
    let at = datetime!(2026-11-21 10:00:00 UTC);
    let seen = store.revocations_after(0).await.expect("read").last().map_or(0, |row| row.id);
    let revoke = |kind, subject: &str| Revocation {
        kind,
        subject: subject.to_string(),
        reason: Some("offboarded".to_string()),
        revoked_by: "alice".to_string(),
        revoked_at: at,
    };
    let first = store.revoke(&revoke(RevocationKind::Identity, "contractor-7")).await.expect("revoke");
    let second = store.revoke(&revoke(RevocationKind::Token, "tok_abc")).await.expect("revoke");
    assert!(second > first && first > seen);
    let rows = store.revocations_after(seen).await.expect("read");
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].kind, rows[0].subject.as_str()), (RevocationKind::Identity, "contractor-7"));
    assert_eq!((rows[1].kind, rows[1].subject.as_str(), rows[1].revoked_at), (RevocationKind::Token, "tok_abc", at));
    assert_eq!(store.revocations_after(second).await.expect("read"), Vec::new());
}

#[tokio::test]
async fn sqlite_revocations() {
    let directory = tempfile::tempdir().expect("temporary directory");
    check_revocations(&open_sqlite_in(directory.path()).await).await;
}

#[tokio::test]
async fn postgres_revocations() {
    let (store, _postgres) = open_postgres().await;
    check_revocations(&store).await;
}

#[tokio::test]
async fn postgres_filters() {
    let (store, _postgres) = open_postgres().await;
    check_filters(&store).await;
}

#[tokio::test]
async fn postgres_bad_rows_fail_alone() {
    let (store, _postgres) = open_postgres().await;
    check_bad_rows_fail_alone(&store).await;
}

#[tokio::test]
async fn sqlite_filters() {
    let directory = tempfile::tempdir().expect("temporary directory");
    check_filters(&open_sqlite_in(directory.path()).await).await;
}

/// Five sessions over two identities and two connections; one of them still active.
async fn check_filters(store: &StateStore) {
    let prefix = unique_prefix();
    let alice = format!("{prefix}-alice");
    let bob = format!("{prefix}-bob");
    let shop = format!("{prefix}-shop");
    let crm = format!("{prefix}-crm");
    let sessions = [
        ("s1", &alice, &shop, datetime!(2025-02-01 09:00 UTC), true),
        ("s2", &alice, &crm, datetime!(2025-02-02 09:00 UTC), true),
        ("s3", &bob, &shop, datetime!(2025-02-03 09:00 UTC), false),
        ("s4", &bob, &crm, datetime!(2025-02-04 09:00 UTC), true),
        ("s5", &alice, &shop, datetime!(2025-02-05 09:00 UTC), true),
    ];
    let recorder = store.recorder(64);
    for (id, identity, connection, started_at, ended) in &sessions {
        let id = format!("{prefix}-{id}");
        recorder.session_started(start(&id, identity, connection, *started_at)).expect("queue has room");
        if *ended {
            recorder.session_ended(&id, *started_at + Duration::from_secs(60), None).expect("queue has room");
        }
    }
    recorder.flush().await.expect("stored");

    let check = |filter: SessionFilter, expected: &'static [&'static str]| {
        let prefix = prefix.clone();
        async move {
            let listed = store.list_sessions(&filter).await.expect("list sessions");
            let ids: Vec<String> = listed.into_iter().map(|session| session.id).collect();
            let expected: Vec<String> = expected.iter().map(|id| format!("{prefix}-{id}")).collect();
            assert_eq!(ids, expected, "filter {filter:?}");
        }
    };
    let alice_only = SessionFilter { identity: Some(alice.clone()), ..SessionFilter::default() };
    check(alice_only.clone(), &["s5", "s2", "s1"]).await;
    check(SessionFilter { connection: Some(shop.clone()), ..SessionFilter::default() }, &["s5", "s3", "s1"]).await;
    check(
        SessionFilter { identity: Some(alice.clone()), connection: Some(shop.clone()), ..SessionFilter::default() },
        &["s5", "s1"],
    )
    .await;
    check(SessionFilter { identity: Some(bob.clone()), active_only: true, ..SessionFilter::default() }, &["s3"]).await;
    check(SessionFilter { since: Some(datetime!(2025-02-02 09:00 UTC)), ..alice_only.clone() }, &["s5", "s2"]).await;
    check(SessionFilter { limit: Some(2), ..alice_only.clone() }, &["s5", "s2"]).await;
    check(SessionFilter { identity: Some(format!("{prefix}-carol")), ..SessionFilter::default() }, &[]).await;
    let session = store.session(&format!("{prefix}-s1")).await.expect("read").expect("s1 is stored");
    assert_eq!(session.ended_at, Some(datetime!(2025-02-01 09:01 UTC)), "ended_at is stored");
    assert_eq!(session.end_reason, None);
}

#[tokio::test]
async fn sqlite_table_run_node_and_until_filters() {
    let directory = tempfile::tempdir().expect("temporary directory");
    check_table_run_node_and_until_filters(&open_sqlite_in(directory.path()).await).await;
}

#[tokio::test]
async fn postgres_table_run_node_and_until_filters() {
    let (store, _postgres) = open_postgres().await;
    check_table_run_node_and_until_filters(&store).await;
}

fn touching(session_id: &str, seq: u64, tables: &[&str]) -> StatementRecord {
    let tables = tables.iter().map(|table| table.to_string()).collect();
    let decision = Decision::new(true, vec!["read".into()], tables, vec!["read-all".into()]);
    StatementRecord { decision: Some(Arc::new(decision)), ..statement(session_id, seq, "SELECT …") }
}

/// Four sessions of two runs and nodes, whose statements touch `public.customers`, `crm.customers` and
/// `public.orders`; listed by time window, run, node and table (qualified or bare), alone and together.
async fn check_table_run_node_and_until_filters(store: &StateStore) {
    let prefix = unique_prefix();
    let identity = format!("{prefix}-agent");
    let (run_a, run_b) = (format!("{prefix}-run-a"), format!("{prefix}-run-b"));
    let sessions = [
        ("t1", &run_a, "planner", datetime!(2025-04-01 09:00 UTC)),
        ("t2", &run_a, "writer", datetime!(2025-04-02 09:00 UTC)),
        ("t3", &run_b, "planner", datetime!(2025-04-03 09:00 UTC)),
        ("t4", &run_b, "writer", datetime!(2025-04-04 09:00 UTC)),
    ];
    let recorder = store.recorder(64);
    for (id, run, node, started_at) in &sessions {
        let start = SessionStart {
            run: Some(run.to_string()),
            node: Some(node.to_string()),
            ..start(&format!("{prefix}-{id}"), &identity, "shop", *started_at)
        };
        recorder.session_started(start).expect("queue has room");
    }
    let id = |name: &str| format!("{prefix}-{name}");
    // t1 reads public.customers twice (one session_tables row), t2 crm.customers, t3 public.orders with
    // public.customers in a later batch, t4 nothing judged.
    recorder.statement(touching(&id("t1"), 1, &["public.customers"])).expect("queue has room");
    recorder.statement(touching(&id("t1"), 2, &["public.customers", "public.orders"])).expect("queue has room");
    recorder.statement(touching(&id("t2"), 1, &["crm.customers"])).expect("queue has room");
    recorder.statement(touching(&id("t3"), 1, &["public.orders"])).expect("queue has room");
    recorder.statement(statement(&id("t4"), 1, "SELECT 1")).expect("queue has room");
    recorder.flush().await.expect("stored");
    recorder.statement(touching(&id("t3"), 2, &["public.customers"])).expect("queue has room");
    recorder.statement(touching(&id("t1"), 3, &["public.customers"])).expect("queue has room");
    recorder.flush().await.expect("stored");

    let check = |filter: SessionFilter, expected: &'static [&'static str]| {
        let prefix = prefix.clone();
        async move {
            let listed = store.list_sessions(&filter).await.expect("list sessions");
            let ids: Vec<String> = listed.into_iter().map(|session| session.id).collect();
            let expected: Vec<String> = expected.iter().map(|id| format!("{prefix}-{id}")).collect();
            assert_eq!(ids, expected, "filter {filter:?}");
        }
    };
    let mine = SessionFilter { identity: Some(identity.clone()), ..SessionFilter::default() };
    check(mine.clone(), &["t4", "t3", "t2", "t1"]).await;
    check(SessionFilter { until: Some(datetime!(2025-04-03 09:00 UTC)), ..mine.clone() }, &["t2", "t1"]).await;
    check(
        SessionFilter {
            since: Some(datetime!(2025-04-02 00:00 UTC)),
            until: Some(datetime!(2025-04-03 09:00:01 UTC)),
            ..mine.clone()
        },
        &["t3", "t2"],
    )
    .await;
    check(SessionFilter { run: Some(run_a.clone()), ..SessionFilter::default() }, &["t2", "t1"]).await;
    check(SessionFilter { node: Some("planner".into()), ..mine.clone() }, &["t3", "t1"]).await;
    check(SessionFilter { run: Some(run_b.clone()), node: Some("writer".into()), ..mine.clone() }, &["t4"]).await;
    // A bare name matches the table in any schema; a qualified one only that schema's.
    check(SessionFilter { table: Some("customers".into()), ..mine.clone() }, &["t3", "t2", "t1"]).await;
    check(SessionFilter { table: Some("public.customers".into()), ..mine.clone() }, &["t3", "t1"]).await;
    check(SessionFilter { table: Some("crm.customers".into()), ..mine.clone() }, &["t2"]).await;
    check(SessionFilter { table: Some("orders".into()), ..mine.clone() }, &["t3", "t1"]).await;
    check(SessionFilter { table: Some("public".into()), ..mine.clone() }, &[]).await;
    check(SessionFilter { table: Some("orders".into()), node: Some("planner".into()), ..mine.clone() }, &["t3", "t1"])
        .await;
    check(SessionFilter { table: Some("customers".into()), limit: Some(1), ..mine.clone() }, &["t3"]).await;
    let t1 = store.session(&id("t1")).await.expect("read").expect("t1 is stored");
    assert_eq!(t1.statement_count, 3);
}

#[tokio::test]
async fn the_default_limit_is_one_hundred() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = open_sqlite_in(directory.path()).await;
    let recorder = store.recorder(256);
    let base = datetime!(2025-01-01 0:00 UTC);
    for index in 0..120u64 {
        let started_at = base + Duration::from_secs(index);
        recorder.session_started(start(&format!("s{index}"), "alice", "shop", started_at)).expect("queue has room");
    }
    recorder.flush().await.expect("stored");
    let listed = store.list_sessions(&SessionFilter::default()).await.expect("list sessions");
    assert_eq!(listed.len(), 100);
    assert_eq!(listed[0].id, "s119", "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_twenty_thousand_statements_all_land() {
    let directory = tempfile::tempdir().expect("temporary directory");
    check_many_statements(&open_sqlite_in(directory.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_twenty_thousand_statements_all_land() {
    let (store, _postgres) = open_postgres().await;
    check_many_statements(&store).await;
}

/// Records 20,000 statements of one session as fast as possible, flushes, and counts them.
async fn check_many_statements(store: &StateStore) {
    const STATEMENTS: u64 = 20_000;
    let id = format!("{}-busy", unique_prefix());
    // Room for everything, so the count below cannot depend on how fast the writer drains.
    let recorder = store.recorder(STATEMENTS as usize + 16);

    let began = Instant::now();
    recorder.session_started(start(&id, "alice", "shop", OffsetDateTime::now_utc())).expect("queue has room");
    for seq in 1..=STATEMENTS {
        recorder
            .statement(StatementRecord {
                started_at: OffsetDateTime::now_utc(),
                ..statement(&id, seq, "SELECT id, total FROM orders WHERE customer_id = $1")
            })
            .expect("queue has room");
    }
    let recorded = began.elapsed();
    recorder.flush().await.expect("stored");
    let flushed = began.elapsed();
    eprintln!(
        "{}: recorded {STATEMENTS} statements in {recorded:?}; recorded and flushed in {flushed:?} \
         ({:.1} µs per statement)",
        store.backend(),
        flushed.as_secs_f64() * 1e6 / STATEMENTS as f64
    );

    assert_eq!(recorder.dropped_events(), 0);
    assert_eq!(recorder.write_errors(), 0);
    let statements = store.statements(&id).await.expect("read statements");
    assert_eq!(statements.len() as u64, STATEMENTS);
    assert!(statements.iter().zip(1..).all(|(row, seq)| row.seq == seq));
    let session = store.session(&id).await.expect("read").expect("stored");
    assert_eq!(session.statement_count, STATEMENTS as i64);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = open_sqlite_in(directory.path()).await;
    // A current-thread runtime: the writer cannot run until this task awaits, so the queue of one
    // is full after the first event.
    let recorder = store.recorder(1);
    recorder
        .session_started(start("crowded", "alice", "shop", datetime!(2025-01-01 0:00 UTC)))
        .expect("the first event fits");
    assert_eq!(recorder.statement(statement("crowded", 1, "SELECT 1")), Err(RecordError::QueueFull));
    assert_eq!(recorder.session_ended("crowded", datetime!(2025-01-01 0:01 UTC), None), Err(RecordError::QueueFull));
    assert_eq!(recorder.dropped_events(), 2);

    recorder.flush().await.expect("the queued event is stored");
    let session = store.session("crowded").await.expect("read").expect("stored");
    assert_eq!(session.statement_count, 0);
    assert_eq!(session.ended_at, None);
    assert_eq!(recorder.write_errors(), 0);
}

#[tokio::test]
async fn a_full_queue_holds_session_events_until_there_is_room() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = open_sqlite_in(directory.path()).await;
    // A current-thread runtime: the writer cannot run until this task awaits, so the queue of one is full after
    // the first event.
    let recorder = store.recorder(1);
    recorder.session_started(start("crowded", "alice", "shop", datetime!(2025-01-01 0:00 UTC))).expect("fits");
    let Err(masked) = recorder.session_masked_or_wait("crowded", BTreeMap::from([("email".to_string(), 2)])) else {
        panic!("the queue is full: the masked counts must wait")
    };
    masked.await.expect("queued once the writer made room");
    let ended = recorder.session_ended_or_wait("crowded", datetime!(2025-01-01 0:01 UTC), Some("bye".into()));
    let Err(ended) = ended else { panic!("the queue is full again: the end must wait") };
    ended.await.expect("queued once the writer made room");
    let mut refused = AuditRecord::new("session.refused", serde_json::json!({ "reason": "bad key" }));
    refused.connection = Some("shop".into());
    let Err(refused) = recorder.audit_or_wait(refused) else { panic!("the queue is full again: the event must wait") };
    refused.await.expect("queued once the writer made room");
    recorder.flush().await.expect("stored");

    assert_eq!(recorder.dropped_events(), 0, "nothing dropped");
    let session = store.session("crowded").await.expect("read").expect("stored");
    assert_eq!(session.ended_at, Some(datetime!(2025-01-01 0:01 UTC)));
    assert_eq!(session.end_reason.as_deref(), Some("bye"));
    assert_eq!(session.masked, BTreeMap::from([("email".to_string(), 2)]));
    let (events, _) = store.audit_log(None).await.expect("audit log");
    assert!(events.iter().any(|sealed| sealed.event.kind == "session.refused"), "the refusal is in the audit log");
}

#[tokio::test]
async fn a_full_queue_holds_statements_until_there_is_room_and_keeps_their_order() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = open_sqlite_in(directory.path()).await;
    // A current-thread runtime: the writer cannot run until this task awaits, so the queue of four is half full
    // after the second event.
    let recorder = store.recorder(4);
    recorder.session_started(start("busy", "alice", "shop", datetime!(2025-01-01 0:00 UTC))).expect("room");
    assert!(recorder.statement_or_wait(statement("busy", 1, "SELECT 1")).is_ok(), "queued at once");
    let Err(second) = recorder.statement_or_wait(statement("busy", 2, "SELECT 2")) else {
        panic!("the queue is half full: the statement must wait")
    };
    // A session's end still fits (the other half of the queue is kept for such events).
    recorder.session_masked("busy", BTreeMap::new()).expect("the other half takes a session's other events");
    // Room or not, a statement waits behind those already waiting.
    let Err(third) = recorder.statement_or_wait(statement("busy", 3, "SELECT 3")) else {
        panic!("another statement waits: this one waits behind it")
    };
    assert_eq!(recorder.waiting(), 2);
    second.await.expect("queued once the writer made room");
    third.await.expect("queued after it");
    assert_eq!(recorder.waiting(), 0);
    recorder.flush().await.expect("stored");
    let texts: Vec<String> =
        store.statements("busy").await.expect("read").into_iter().map(|row| row.text.to_string()).collect();
    assert_eq!(texts, ["SELECT 1", "SELECT 2", "SELECT 3"]);
    assert_eq!(recorder.dropped_events(), 0, "nothing dropped");
    let (events, _) = store.audit_log(None).await.expect("audit log");
    let order: Vec<&str> = events.iter().filter_map(|sealed| sealed.event.body["text"].as_str()).collect();
    assert_eq!(order, ["SELECT 1", "SELECT 2", "SELECT 3"], "the audit chain keeps the session's order");
    // A wait given up (its session ended) stops counting.
    assert!(recorder.statement_or_wait(statement("busy", 4, "SELECT 4")).is_ok());
    assert!(recorder.statement_or_wait(statement("busy", 5, "SELECT 5")).is_ok());
    let Err(abandoned) = recorder.statement_or_wait(statement("busy", 6, "SELECT 6")) else { panic!("half full") };
    drop(abandoned);
    assert_eq!(recorder.waiting(), 0);
}

#[tokio::test]
async fn sqlite_bad_rows_fail_alone() {
    let directory = tempfile::tempdir().expect("temporary directory");
    check_bad_rows_fail_alone(&open_sqlite_in(directory.path()).await).await;
}

/// A statement of an unknown session and a duplicate statement fail; the writer stores the rest of
/// their batch and keeps going.
async fn check_bad_rows_fail_alone(store: &StateStore) {
    let prefix = unique_prefix();
    let id = format!("{prefix}-good");
    let recorder = store.recorder(64);
    recorder.session_started(start(&id, "alice", "shop", datetime!(2025-01-01 0:00 UTC))).expect("queue has room");
    recorder.statement(statement(&id, 1, "SELECT 1")).expect("queue has room");
    recorder.statement(statement(&format!("{prefix}-unknown"), 1, "SELECT 2")).expect("queue has room");
    recorder.statement(statement(&id, 2, "SELECT 3")).expect("queue has room");
    assert!(matches!(recorder.flush().await, Err(StateError::WritesFailed { failed: 1 })));

    // The duplicate fails the whole batch first, then alone on the one-by-one path.
    recorder.statement(statement(&id, 3, "SELECT 4")).expect("queue has room");
    recorder.statement(statement(&id, 2, "SELECT 3 again")).expect("queue has room");
    recorder.session_masked(&id, masked_counts(&[("email", 2)])).expect("queue has room");
    recorder.session_ended(&id, datetime!(2025-01-01 0:10 UTC), Some("done".to_string())).expect("queue has room");
    assert!(matches!(recorder.flush().await, Err(StateError::WritesFailed { failed: 1 })));

    // Failures are reported once: the next flush is clean.
    recorder.flush().await.expect("nothing failed since the last flush");
    assert_eq!(recorder.write_errors(), 2);

    let texts: Vec<String> =
        store.statements(&id).await.expect("read statements").into_iter().map(|row| row.text).collect();
    assert_eq!(texts, ["SELECT 1", "SELECT 3", "SELECT 4"]);
    let session = store.session(&id).await.expect("read").expect("stored");
    assert_eq!(session.statement_count, 3);
    assert_eq!(session.end_reason.as_deref(), Some("done"));
    assert_eq!(session.masked, masked_counts(&[("email", 2)]));
}

#[test]
fn a_stopped_writer_drops_events_and_fails_flush() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let store = runtime.block_on(open_sqlite_in(directory.path()));
    // A writer spawned on a runtime that is then shut down stops with it.
    let doomed = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a second runtime");
    let recorder = doomed.block_on(async { store.recorder(4) });
    drop(doomed);
    assert_eq!(recorder.statement(statement("any", 1, "SELECT 1")), Err(RecordError::WriterStopped));
    assert!(matches!(runtime.block_on(recorder.flush()), Err(StateError::WriterStopped)));
    assert_eq!(recorder.dropped_events(), 1);
}

#[tokio::test]
async fn unsupported_urls_are_refused_without_their_password() {
    let error =
        StateStore::open("mysql://warden:hunter2@db.internal/warden").await.expect_err("mysql is not a state store");
    let message = error.to_string();
    assert!(matches!(error, StateError::UnsupportedUrl { .. }));
    assert!(!message.contains("hunter2"), "{message}");
    assert_eq!(error.fault(), Fault::Configuration);
}

#[test]
fn urls_are_redacted() {
    fn check(url: &str, expected: &str) {
        assert_eq!(redact_url(url), expected, "redacting {url}");
    }
    check("postgres://warden:hunter2@db.internal:5432/warden", "postgres://warden@db.internal:5432/warden");
    check("postgres://warden:hun/ter@2@db.internal/warden?sslmode=require", "postgres://warden@db.internal/warden");
    check("postgresql://db.internal/warden?user=warden&password=hunter2", "postgresql://db.internal/warden");
    check("postgres://warden@db.internal/warden", "postgres://warden@db.internal/warden");
    check("sqlite:///var/lib/warden/warden.db", "sqlite:///var/lib/warden/warden.db");
    check("sqlite:warden.db?mode=rwc", "sqlite:warden.db");
}

#[test]
fn rows_serialize_with_rfc3339_timestamps() {
    let row = SessionRow {
        id: "s1".to_string(),
        identity: "alice".to_string(),
        connection: "shop".to_string(),
        client_address: "192.0.2.7:51234".to_string(),
        user_name: "app".to_string(),
        application_name: None,
        started_at: datetime!(2025-03-01 10:00:00.5 UTC),
        ended_at: None,
        end_reason: None,
        statement_count: 0,
        credential: None,
        token_id: None,
        run: None,
        node: None,
        masked: BTreeMap::from([("email".to_string(), 3), ("us_ssn".to_string(), 1)]),
    };
    let json = serde_json::to_value(&row).expect("serialize");
    assert_eq!(json["started_at"], "2025-03-01T10:00:00.5Z");
    assert_eq!(json["ended_at"], serde_json::Value::Null);
    assert_eq!(json["masked"], serde_json::json!({ "email": 3, "us_ssn": 1 }));
    assert_eq!(serde_json::from_value::<SessionRow>(json.clone()).expect("deserialize"), row);

    // A row from an older gateway has no masked counts.
    let mut older = json;
    older.as_object_mut().expect("a row is an object").remove("masked");
    let read = serde_json::from_value::<SessionRow>(older).expect("deserialize without masked counts");
    assert_eq!(read.masked, BTreeMap::new());
}

#[test]
fn statements_are_cut_by_rows_and_by_bytes() {
    fn check(text_lengths: &[usize], expected_chunk_sizes: &[usize]) {
        let records: Vec<StatementRecord> =
            text_lengths.iter().zip(1..).map(|(&length, seq)| statement("s", seq, &"x".repeat(length))).collect();
        let references: Vec<&StatementRecord> = records.iter().collect();
        let sizes: Vec<usize> = sql::statement_chunks(&references).map(<[_]>::len).collect();
        assert_eq!(sizes, expected_chunk_sizes, "text lengths {text_lengths:?}");
    }
    let big = sql::BYTES_PER_STATEMENT / 2;
    check(&[], &[]);
    check(&[10; 3], &[2, 1]);
    check(&[10; sql::ROWS_PER_STATEMENT * 2 + 1], &[sql::ROWS_PER_STATEMENT, sql::ROWS_PER_STATEMENT, 1]);
    check(&[big, big, big, big, 10], &[2, 2, 1]);
    check(&[sql::BYTES_PER_STATEMENT * 2, 10], &[1, 1]);
}

#[tokio::test]
async fn sqlite_stores_huge_statements() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = open_sqlite_in(directory.path()).await;
    let recorder = store.recorder(16);
    recorder.session_started(start("huge", "alice", "shop", datetime!(2025-01-01 0:00 UTC))).expect("queue has room");
    let text = format!("SELECT '{}'", "é".repeat(3 << 20));
    for seq in 1..=4 {
        recorder.statement(statement("huge", seq, &text)).expect("queue has room");
    }
    recorder.flush().await.expect("stored");
    let statements = store.statements("huge").await.expect("read statements");
    assert_eq!(statements.len(), 4);
    assert!(statements.iter().all(|row| row.text == text));
}

/// `durable()` vouches for every event before it, the audit-only ones too: with the store gone, an audit event's
/// durability fails rather than pass as stored.
#[tokio::test]
async fn durable_fails_for_an_audit_event_the_store_did_not_take() {
    let (store, postgres) = open_postgres().await;
    let recorder = store.recorder(64);
    recorder.audit(AuditRecord::new("policy.reload", serde_json::json!({}))).expect("queue");
    recorder.durable().await.expect("stored while the store is up");
    tokio::task::spawn_blocking(move || postgres.stop()).await.expect("stop the store");
    recorder.audit(AuditRecord::new("policy.reload", serde_json::json!({}))).expect("queue");
    let error = recorder.durable().await.expect_err("not stored: the store is gone");
    assert!(matches!(error, StateError::WritesFailed { .. }), "{error:?}");
}

#[tokio::test]
async fn sqlite_pruning() {
    let directory = tempfile::tempdir().expect("temporary directory");
    check_pruning(&open_sqlite_in(directory.path()).await).await;
}

#[tokio::test]
async fn postgres_pruning() {
    let (store, _postgres) = open_postgres().await;
    check_pruning(&store).await;
}

/// Retention: a pass deletes the sessions that ended before its cutoff (statements and session_tables rows with them)
/// and each chain's events up to its last checkpoint before it, after an `audit.pruned` event sealed by a checkpoint;
/// the log still verifies, reporting what was pruned, and deleting one more event breaks it at that event. The cutoff
/// is a few seconds ahead, so every checkpoint written so far is before it whatever the clock does.
async fn check_pruning(store: &StateStore) {
    let (signer, key) = TestSigner::new();
    let prefix = unique_prefix();
    let id = |name: &str| format!("{prefix}-{name}");
    let recorder = store.audited_recorder(64, signer.clone());
    let long_ago = datetime!(2025-01-01 10:00 UTC);
    for name in ["old", "open"] {
        recorder.session_started(start(&id(name), "agent", "shop", long_ago)).expect("queue");
        recorder.statement(touching(&id(name), 1, &["public.customers"])).expect("queue");
    }
    recorder.statement(touching(&id("old"), 2, &["public.orders"])).expect("queue");
    recorder.session_ended(&id("old"), long_ago + Duration::from_secs(60), None).expect("queue");
    let now = OffsetDateTime::now_utc();
    recorder.session_started(start(&id("recent"), "agent", "shop", now)).expect("queue");
    recorder.statement(touching(&id("recent"), 1, &["public.customers"])).expect("queue");
    // Ends after the cutoff.
    recorder.session_ended(&id("recent"), now + Duration::from_secs(86_400), None).expect("queue");
    recorder.flush().await.expect("flush");
    let (events, _) = store.audit_log(None).await.expect("audit log");
    let chain = events[0].event.chain.clone();
    let sealed_before = events.len() as u64;

    // Without a signer there is nothing to seal the pruning mark with.
    let unsigned = store.recorder(8);
    let before = OffsetDateTime::now_utc() + Duration::from_secs(3);
    assert!(matches!(unsigned.prune(before).await, Err(StateError::PruneUnsigned)));

    // Another gateway's recorder runs the pass: its chain holds the audit.pruned event.
    let pruner = store.audited_recorder(64, signer.clone());
    let report = pruner.prune(before).await.expect("prune");
    assert!(report.recorded);
    assert_eq!((report.sessions, report.statements), (1, 2));
    assert_eq!(report.chains.len(), 1);
    let pruned = &report.chains[0];
    assert_eq!((pruned.chain.as_str(), pruned.through, pruned.events), (chain.as_str(), sealed_before, sealed_before));

    assert_eq!(store.session(&id("old")).await.expect("read"), None);
    assert!(store.statements(&id("old")).await.expect("read").is_empty());
    let listed = |table: &str| {
        let filter = SessionFilter { table: Some(table.to_string()), ..SessionFilter::default() };
        async move {
            let sessions = store.list_sessions(&filter).await.expect("list");
            sessions.into_iter().map(|session| session.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("customers").await, [id("recent"), id("open")]);
    assert_eq!(listed("orders").await, Vec::<String>::new());
    assert_eq!(store.statements(&id("recent")).await.expect("read").len(), 1);

    // Recording goes on after the pass; the log verifies and says how much of the chain was pruned.
    recorder.statement(touching(&id("open"), 2, &["public.orders"])).expect("queue");
    recorder.statement(touching(&id("open"), 3, &["public.orders"])).expect("queue");
    recorder.flush().await.expect("flush");
    let (events, checkpoints) = store.audit_log(None).await.expect("audit log");
    let first_left = events.iter().find(|sealed| sealed.event.chain == chain).expect("the first chain goes on");
    assert_eq!(first_left.event.seq, sealed_before + 1);
    let mark = events.iter().find(|sealed| sealed.event.kind == "audit.pruned").expect("the audit.pruned event");
    assert_eq!(mark.event.body["chains"][0]["chain"], chain.as_str());
    assert_eq!(mark.event.body["chains"][0]["through"], sealed_before);
    let report =
        warden_audit::verify(events.clone(), checkpoints.clone(), std::slice::from_ref(&key)).expect("verifies");
    assert_eq!(report.chains.len(), 2);
    let first = report.chains.iter().find(|report| report.chain == chain).expect("reported");
    assert_eq!((first.first, first.pruned), (sealed_before + 1, sealed_before));
    // One event more deleted is found at that event.
    let mut fewer = events.clone();
    fewer.retain(|sealed| !(sealed.event.chain == chain && sealed.event.seq == sealed_before + 1));
    let broken = warden_audit::verify(fewer, checkpoints, std::slice::from_ref(&key)).unwrap_err();
    assert_eq!(
        broken,
        warden_audit::Broken::PrunedBeyond { chain: chain.clone(), seq: sealed_before + 1, pruned: sealed_before }
    );

    // A pass with nothing new to delete records nothing.
    let again = pruner.prune(OffsetDateTime::now_utc() - Duration::from_secs(3600)).await.expect("prune");
    assert!(!again.recorded && again.sessions == 0);
    assert_eq!(again.chains.iter().map(|chain| chain.events).sum::<u64>(), 0);
    drop((recorder, pruner));

    // A third gateway's pass takes the first chain's mark from its sealed audit.pruned event and prunes the whole
    // first chain now; it still verifies, the first chain reported as pruned whole.
    let second = store.audited_recorder(64, signer);
    let report = second.prune(OffsetDateTime::now_utc() + Duration::from_secs(3)).await.expect("prune");
    assert!(report.recorded);
    second.flush().await.expect("flush");
    let (events, checkpoints) = store.audit_log(None).await.expect("audit log");
    assert!(events.iter().all(|sealed| sealed.event.chain != chain), "the first chain is pruned whole");
    let report = warden_audit::verify(events, checkpoints, &[key]).expect("verifies");
    let first = report.chains.iter().find(|report| report.chain == chain).expect("reported");
    assert_eq!(first.events, first.pruned);
    assert!(store.session(&id("recent")).await.expect("read").is_some());
}

/// Migration 7 fills session_tables from the statements already stored: its INSERT, run again over a statement
/// written straight into the table (as one stored before the migration), adds the rows, each once.
#[tokio::test]
async fn sqlite_session_tables_backfill() {
    let directory = tempfile::tempdir().expect("temporary directory");
    check_session_tables_backfill(&open_sqlite_in(directory.path()).await).await;
}

#[tokio::test]
async fn postgres_session_tables_backfill() {
    let (store, _postgres) = open_postgres().await;
    check_session_tables_backfill(&store).await;
}

async fn check_session_tables_backfill(store: &StateStore) {
    let prefix = unique_prefix();
    let id = format!("{prefix}-before-7");
    let recorder = store.recorder(8);
    recorder.session_started(start(&id, "agent", "shop", datetime!(2025-05-01 09:00 UTC))).expect("queue");
    recorder.flush().await.expect("stored");
    let tables = r#"["public.customers", "crm.customers", "public.customers"]"#;
    let insert = "INSERT INTO statements (session_id, seq, started_at, duration_us, text, tables) VALUES";
    let backfill = |migration: &str| {
        let start = migration.find("\nINSERT ").expect("the backfill") + 1;
        migration[start..start + migration[start..].find(';').expect("its end")].to_string()
    };
    match &store.backend {
        Backend::Sqlite(inner) => {
            sqlx::query(&format!("{insert} (?, 1, 0, 1, 'SELECT 1', ?)"))
                .bind(&id)
                .bind(tables)
                .execute(&inner.pool)
                .await
                .expect("a statement");
            let sql = backfill(include_str!("../migrations/sqlite/0007_session_tables.sql"));
            sqlx::query(&sql).execute(&inner.pool).await.expect("backfill");
        }
        Backend::Postgres(inner) => {
            sqlx::query(&format!("{insert} ($1, 1, now(), 1, 'SELECT 1', $2)"))
                .bind(&id)
                .bind(tables)
                .execute(&inner.pool)
                .await
                .expect("a statement");
            let sql = backfill(include_str!("../migrations/postgres/0007_session_tables.sql"));
            sqlx::query(&sql).execute(&inner.pool).await.expect("backfill");
        }
    }
    for (table, expected) in [("customers", 1), ("public.customers", 1), ("crm.customers", 1), ("orders", 0)] {
        let filter =
            SessionFilter { table: Some(table.into()), identity: Some("agent".into()), ..SessionFilter::default() };
        let listed = store.list_sessions(&filter).await.expect("list");
        assert_eq!(listed.iter().filter(|session| session.id == id).count(), expected, "{table}");
    }
}

fn new_approval(kind: ApprovalKind, fingerprint: Option<&str>, now: OffsetDateTime) -> NewApproval {
    NewApproval {
        kind,
        identity: "agent".into(),
        connection: "shop".into(),
        action: "write".into(),
        tables: vec!["public.orders".into()],
        statement: fingerprint.map(|_| "DELETE FROM orders WHERE id = $1".into()),
        parameters: fingerprint.map(|_| vec![Some("7".into())]),
        fingerprint: fingerprint.map(str::to_string),
        reason: None,
        needed: vec![Needed { group: "dba".into(), approvals: 2 }],
        policies: vec!["deletes-need-a-dba".into()],
        session_id: Some("s-1".into()),
        requested_at: now,
        expires_at: now + time::Duration::minutes(30),
        grant_seconds: (kind == ApprovalKind::Grant).then_some(60),
    }
}

/// Requests, votes (the requester refused, two of three DBAs approving at once on two connections), one use of a
/// statement approval, grants by table and time, and expiry.
async fn check_approvals(store: &StateStore) {
    let now = OffsetDateTime::now_utc();
    let dba: Vec<String> = vec!["dba".into()];
    let requested =
        store.create_approval(new_approval(ApprovalKind::Statement, Some("f1"), now)).await.expect("create");
    assert!(requested.id.starts_with("apr_"));
    assert_eq!(store.approval(&requested.id).await.expect("read"), Some(requested.clone()));
    let pending = store.pending_statement_approval("agent", "shop", "f1", now).await.expect("pending");
    assert_eq!(pending.map(|row| row.id), Some(requested.id.clone()));
    let agent = vec!["agents".to_string(), "dba".to_string()];
    let own = store.vote_on_approval(&requested.id, Voter { name: "agent", groups: &agent }, true, None, now).await;
    assert!(matches!(own, Ok(Err(VoteError::OwnRequest { .. }))), "{own:?}");

    // Two approvers at once: both votes count, whichever writes first.
    let (alice, bob) = tokio::join!(
        store.vote_on_approval(&requested.id, Voter { name: "alice", groups: &dba }, true, Some("ok"), now),
        store.vote_on_approval(&requested.id, Voter { name: "bob", groups: &dba }, true, None, now),
    );
    alice.expect("store").expect("vote");
    bob.expect("store").expect("vote");
    let approved = store.approval(&requested.id).await.expect("read").expect("exists");
    assert_eq!(approved.status, ApprovalStatus::Approved);
    let voters: Vec<&str> = approved.votes.iter().map(|vote| vote.by.as_str()).collect();
    assert_eq!(voters.len(), 2, "{voters:?}");
    let listed = store
        .list_approvals(&ApprovalFilter { status: Some(ApprovalStatus::Approved), ..ApprovalFilter::default() })
        .await
        .expect("list");
    assert_eq!(listed.iter().map(|row| row.id.as_str()).collect::<Vec<_>>(), [requested.id.as_str()]);

    // Used once, for exactly that statement.
    assert_eq!(store.use_statement_approval("agent", "shop", "other", now).await.expect("use"), None);
    assert_eq!(store.use_statement_approval("intruder", "shop", "f1", now).await.expect("use"), None);
    let used = store.use_statement_approval("agent", "shop", "f1", now).await.expect("use").expect("usable");
    assert_eq!((used.status, used.used_at), (ApprovalStatus::Used, Some(now)));
    assert_eq!(store.use_statement_approval("agent", "shop", "f1", now).await.expect("use"), None, "used once");

    // A grant covers its table for its time.
    let grant = store.create_approval(new_approval(ApprovalKind::Grant, None, now)).await.expect("grant");
    for name in ["alice", "carol"] {
        store.vote_on_approval(&grant.id, Voter { name, groups: &dba }, true, None, now).await.unwrap().unwrap();
    }
    let orders = vec!["public.orders".to_string()];
    let customers = vec!["public.customers".to_string()];
    let active = store.active_grant("agent", "shop", "write", &orders, now).await.expect("grant lookup");
    assert_eq!(active.map(|row| row.id), Some(grant.id.clone()));
    assert_eq!(store.active_grant("agent", "shop", "write", &customers, now).await.unwrap(), None);
    assert_eq!(store.active_grant("agent", "shop", "ddl", &orders, now).await.unwrap(), None);
    let later = now + time::Duration::minutes(2);
    assert_eq!(store.active_grant("agent", "shop", "write", &orders, later).await.unwrap(), None, "the grant ended");

    // A request nobody decides expires; a vote after that is refused.
    let lapsing = store.create_approval(new_approval(ApprovalKind::Statement, Some("f2"), now)).await.expect("create");
    let after = now + time::Duration::minutes(31);
    let expired = store.expire_approvals(after).await.expect("expire");
    assert_eq!(expired.iter().map(|row| row.id.as_str()).collect::<Vec<_>>(), [lapsing.id.as_str()]);
    let late = store.vote_on_approval(&lapsing.id, Voter { name: "alice", groups: &dba }, true, None, after).await;
    assert!(matches!(late, Ok(Err(VoteError::NotPending { status: "expired", .. }))), "{late:?}");
    assert_eq!(
        store.vote_on_approval("apr_none", Voter { name: "alice", groups: &dba }, true, None, now).await.unwrap(),
        Ok(None)
    );
}

#[tokio::test]
async fn sqlite_approvals() {
    let directory = tempfile::tempdir().expect("temp dir");
    check_approvals(&open_sqlite_in(directory.path()).await).await;
}

#[tokio::test]
async fn postgres_approvals() {
    let (store, _postgres) = open_postgres().await;
    check_approvals(&store).await;
}

/// An LLM request: `model`, and the tokens its answer reported (`None`: refused, or no usage reported).
fn llm_request(
    session_id: &str,
    seq: u64,
    started_at: OffsetDateTime,
    model: &str,
    tokens: Option<(u64, u64)>,
) -> StatementRecord {
    StatementRecord {
        started_at,
        rows: None,
        model: Some(model.to_string()),
        tokens: tokens.map(|(input, output)| Tokens { input, output }),
        ..statement(session_id, seq, "POST /v1/chat/completions")
    }
}

fn usage_row(
    identity: &str,
    connection: &str,
    labels: Option<(&str, &str)>,
    model: &str,
    (requests, input_tokens, output_tokens): (u64, u64, u64),
) -> UsageRow {
    UsageRow {
        identity: identity.to_string(),
        connection: connection.to_string(),
        run: labels.map(|(run, _)| run.to_string()),
        node: labels.map(|(_, node)| node.to_string()),
        model: Some(model.to_string()),
        requests,
        input_tokens,
        output_tokens,
    }
}

/// Four sessions on two connections: LLM requests with usage, one refused (no usage) and one SQL statement (neither),
/// summed per identity, connection, run, node and model; filtered by period, connection, identity, run and node; the
/// tokens of one identity since an instant, and of every identity of a connection.
async fn check_usage(store: &StateStore) {
    let prefix = unique_prefix();
    let (llm, other) = (format!("{prefix}-llm"), format!("{prefix}-other"));
    let (agent, reader) = (format!("{prefix}-agent"), format!("{prefix}-reader"));
    let id = |name: &str| format!("{prefix}-{name}");
    let recorder = store.recorder(64);
    let at = |hour: u8, minute: u8, second: u8| {
        datetime!(2025-05-01 00:00 UTC)
            + time::Duration::seconds(i64::from(hour) * 3600 + i64::from(minute) * 60)
            + time::Duration::seconds(i64::from(second))
    };
    // u1: the agent's run-7/planner session, 10:00 to 10:30: two requests with usage and a SQL statement.
    recorder.session_started(start(&id("u1"), &agent, &llm, at(10, 0, 0))).expect("queue");
    recorder.statement(llm_request(&id("u1"), 1, at(10, 0, 1), "gpt-4o-mini", Some((3, 4)))).expect("queue");
    recorder.statement(llm_request(&id("u1"), 2, at(10, 0, 2), "gpt-4o-mini", Some((1, 20)))).expect("queue");
    recorder.statement(statement(&id("u1"), 3, "SELECT 1")).expect("queue");
    recorder.session_ended(&id("u1"), at(10, 30, 0), None).expect("queue");
    // u2: the agent without token labels, from 11:00, still open: two models, and a refused request.
    let unlabelled = SessionStart { run: None, node: None, ..start(&id("u2"), &agent, &llm, at(11, 0, 0)) };
    recorder.session_started(unlabelled).expect("queue");
    recorder.statement(llm_request(&id("u2"), 1, at(11, 0, 1), "gpt-4o-mini", Some((10, 20)))).expect("queue");
    recorder.statement(llm_request(&id("u2"), 2, at(11, 0, 2), "claude-haiku-4-5", Some((5, 7)))).expect("queue");
    recorder.statement(llm_request(&id("u2"), 3, at(11, 0, 3), "gpt-4o", None)).expect("queue");
    // u3: the reader, 09:00 to 09:10.
    recorder.session_started(start(&id("u3"), &reader, &llm, at(9, 0, 0))).expect("queue");
    recorder.statement(llm_request(&id("u3"), 1, at(9, 0, 1), "gpt-4o-mini", Some((1, 20)))).expect("queue");
    recorder.session_ended(&id("u3"), at(9, 10, 0), None).expect("queue");
    // u4: the agent on another connection, from 12:00.
    recorder.session_started(start(&id("u4"), &agent, &other, at(12, 0, 0))).expect("queue");
    recorder.statement(llm_request(&id("u4"), 1, at(12, 0, 1), "gpt-4o-mini", Some((100, 200)))).expect("queue");
    recorder.flush().await.expect("stored");

    // The usage columns are stored and read back; a SQL statement has none.
    let statements = store.statements(&id("u2")).await.expect("statements");
    assert_eq!(statements[0].model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(statements[0].tokens, Some(Tokens { input: 10, output: 20 }));
    assert_eq!((statements[2].model.as_deref(), statements[2].tokens), (Some("gpt-4o"), None));
    let statements = store.statements(&id("u1")).await.expect("statements");
    assert_eq!((statements[2].model.as_deref(), statements[2].tokens), (None, None));

    let planner = Some(("run-7", "planner"));
    let agent_u1 = usage_row(&agent, &llm, planner, "gpt-4o-mini", (2, 4, 24));
    let agent_u2_claude = usage_row(&agent, &llm, None, "claude-haiku-4-5", (1, 5, 7));
    let agent_u2_mini = usage_row(&agent, &llm, None, "gpt-4o-mini", (1, 10, 20));
    let agent_other = usage_row(&agent, &other, planner, "gpt-4o-mini", (1, 100, 200));
    let reader_u3 = usage_row(&reader, &llm, planner, "gpt-4o-mini", (1, 1, 20));
    let mine = prefix.as_str();
    let check = |filter: UsageFilter, expected: Vec<UsageRow>| async move {
        let mut usage = store.usage(&filter).await.expect("usage");
        // Other tests' rows on a shared server are not this test's business.
        usage.retain(|row| row.identity.starts_with(mine));
        assert_eq!(usage, expected, "{filter:?}");
    };
    // Sorted by identity, connection, run, node (unlabelled first), model.
    let everything =
        vec![agent_u2_claude.clone(), agent_u2_mini.clone(), agent_u1.clone(), agent_other.clone(), reader_u3.clone()];
    check(UsageFilter::default(), everything).await;
    check(UsageFilter { connection: Some(other.clone()), ..UsageFilter::default() }, vec![agent_other.clone()]).await;
    check(UsageFilter { identity: Some(reader.clone()), ..UsageFilter::default() }, vec![reader_u3.clone()]).await;
    let run_7 = UsageFilter { run: Some("run-7".into()), connection: Some(llm.clone()), ..UsageFilter::default() };
    check(run_7.clone(), vec![agent_u1.clone(), reader_u3.clone()]).await;
    check(UsageFilter { node: Some("planner".into()), ..run_7 }, vec![agent_u1.clone(), reader_u3.clone()]).await;
    // A period: requests that started in it, whenever their session started.
    let since =
        |at: OffsetDateTime| UsageFilter { since: Some(at), connection: Some(llm.clone()), ..UsageFilter::default() };
    check(
        since(at(10, 0, 2)),
        vec![
            agent_u2_claude.clone(),
            agent_u2_mini.clone(),
            usage_row(&agent, &llm, planner, "gpt-4o-mini", (1, 1, 20)),
        ],
    )
    .await;
    check(since(at(10, 45, 0)), vec![agent_u2_claude.clone(), agent_u2_mini.clone()]).await;
    check(since(at(11, 0, 2)), vec![agent_u2_claude.clone()]).await;
    check(
        UsageFilter { until: Some(at(11, 0, 2)), ..since(at(10, 0, 0)) },
        vec![agent_u2_mini.clone(), agent_u1.clone()],
    )
    .await;
    check(UsageFilter { until: Some(at(10, 0, 0)), ..UsageFilter::default() }, vec![reader_u3.clone()]).await;

    // Budgets: one identity's tokens on one connection since an instant, and every identity's.
    assert_eq!(store.tokens_used(&llm, &agent, at(0, 0, 0)).await.expect("tokens"), 7 + 21 + 30 + 12);
    assert_eq!(store.tokens_used(&llm, &agent, at(10, 45, 0)).await.expect("tokens"), 30 + 12);
    assert_eq!(store.tokens_used(&llm, &agent, at(11, 0, 3)).await.expect("tokens"), 0, "the refused request");
    assert_eq!(store.tokens_used(&other, &agent, at(0, 0, 0)).await.expect("tokens"), 300);
    assert_eq!(store.tokens_used(&other, &reader, at(0, 0, 0)).await.expect("tokens"), 0);
    let by_identity = store.tokens_used_by_identity(&llm, at(0, 0, 0)).await.expect("tokens");
    assert_eq!(by_identity, std::collections::HashMap::from([(agent.clone(), 70), (reader.clone(), 21)]));
    let by_identity = store.tokens_used_by_identity(&llm, at(9, 30, 0)).await.expect("tokens");
    assert_eq!(by_identity, std::collections::HashMap::from([(agent.clone(), 70)]));
}

/// A batch's results read three times: the first read recorded holds their tokens and counts as the batch's
/// requests; the later reads (another identity's, the same session's) are recorded with the model and no tokens. A
/// second batch counts on its own. Through a batch write and, for the last, the one-by-one write a failed batch falls
/// back to.
async fn check_batch_results(store: &StateStore) {
    let prefix = unique_prefix();
    let llm = format!("{prefix}-llm");
    let (agent, reader) = (format!("{prefix}-agent"), format!("{prefix}-reader"));
    let id = |name: &str| format!("{prefix}-{name}");
    let at = datetime!(2025-05-02 10:00 UTC);
    let read = |session: &str, seq: u64, batch: &str, requests: u64, tokens: (u64, u64)| StatementRecord {
        batch: Some(BatchResults { key: format!("anthropic:{prefix}-{batch}"), requests }),
        ..llm_request(session, seq, at + time::Duration::seconds(seq as i64), "claude-haiku-4-5", Some(tokens))
    };
    let recorder = store.recorder(64);
    recorder.session_started(start(&id("b1"), &agent, &llm, at)).expect("queue");
    recorder.session_started(start(&id("b2"), &reader, &llm, at)).expect("queue");
    recorder.statement(read(&id("b1"), 1, "one", 3, (30, 60))).expect("queue");
    recorder.statement(read(&id("b2"), 1, "one", 3, (30, 60))).expect("queue");
    recorder.statement(read(&id("b1"), 2, "two", 1, (5, 5))).expect("queue");
    recorder.flush().await.expect("stored");
    store.backend.write_statement(&read(&id("b1"), 3, "one", 3, (30, 60))).await.expect("stored alone");

    let filter = UsageFilter { connection: Some(llm.clone()), ..UsageFilter::default() };
    let usage = store.usage(&filter).await.expect("usage");
    let planner = Some(("run-7", "planner"));
    assert_eq!(usage, vec![usage_row(&agent, &llm, planner, "claude-haiku-4-5", (4, 35, 65))]);
    assert_eq!(store.tokens_used(&llm, &agent, at).await.expect("tokens"), 100);
    let again = store.statements(&id("b2")).await.expect("statements");
    assert_eq!((again[0].model.as_deref(), again[0].tokens), (Some("claude-haiku-4-5"), None));
    let first = store.statements(&id("b1")).await.expect("statements");
    assert_eq!(first[0].tokens, Some(Tokens { input: 30, output: 60 }));
    assert_eq!((first.len(), first[2].tokens), (3, None), "the third read, written alone");
}

#[tokio::test]
async fn sqlite_batch_results_count_once() {
    let directory = tempfile::tempdir().expect("temp dir");
    check_batch_results(&open_sqlite_in(directory.path()).await).await;
}

#[tokio::test]
async fn postgres_batch_results_count_once() {
    let (store, _postgres) = open_postgres().await;
    check_batch_results(&store).await;
}

#[tokio::test]
async fn sqlite_usage() {
    let directory = tempfile::tempdir().expect("temp dir");
    check_usage(&open_sqlite_in(directory.path()).await).await;
}

#[tokio::test]
async fn postgres_usage() {
    let (store, _postgres) = open_postgres().await;
    check_usage(&store).await;
}

/// The tokens of one identity on one connection since an instant are read from the two usage indexes alone: the
/// pair's sessions, then each one's statements with usage from that instant.
#[tokio::test]
async fn sqlite_tokens_used_reads_the_usage_indexes() {
    let directory = tempfile::tempdir().expect("temp dir");
    let store = open_sqlite_in(directory.path()).await;
    let Backend::Sqlite(sqlite) = &store.backend else { unreachable!("a SQLite store") };
    let sql = format!("EXPLAIN QUERY PLAN {}", usage::tokens_used_sql::<sqlx::Sqlite>(true));
    let rows = sqlx::query(&sql).bind("llm").bind("agent").bind(0i64).bind(0i64).fetch_all(&sqlite.pool).await;
    let plan: Vec<String> = rows.expect("explain").iter().map(|row| sql::get(row, 3).expect("detail")).collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("SEARCH sessions USING COVERING INDEX sessions_usage (connection=? AND identity=?)"),
        "{plan}"
    );
    assert!(
        plan.contains("SEARCH statements USING COVERING INDEX statements_tokens (session_id=? AND started_at>?)"),
        "{plan}"
    );
}

/// PostgreSQL can answer the same from the same indexes (with sequential scans off: on a table this small the planner
/// would rightly prefer them).
#[tokio::test]
async fn postgres_tokens_used_can_read_the_usage_indexes() {
    let (store, _postgres) = open_postgres().await;
    let Backend::Postgres(postgres) = &store.backend else { unreachable!("a PostgreSQL store") };
    let mut connection = postgres.pool.acquire().await.expect("a connection");
    sqlx::query("SET enable_seqscan = off").execute(&mut *connection).await.expect("set");
    let sql = format!("EXPLAIN {}", usage::tokens_used_sql::<sqlx::Postgres>(true));
    let rows = sqlx::query(&sql).bind("llm").bind("agent").bind(0i64).bind(0i64).fetch_all(&mut *connection).await;
    let plan: Vec<String> = rows.expect("explain").iter().map(|row| sql::get(row, 0).expect("line")).collect();
    let plan = plan.join("\n");
    assert!(plan.contains("sessions_usage"), "{plan}");
    assert!(plan.contains("statements_tokens"), "{plan}");
}
