//! SQL-aware policy over the wire: statements are judged as PostgreSQL parses them and decided with Cedar; a
//! refused statement never reaches the database and the session stays usable.

use crate::{fixture, server_message, sqlstate, start_postgres};
use warden_testkit::TestGateway;

async fn row_count(client: &tokio_postgres::Client) -> i64 {
    client.query_one("SELECT count(*) FROM items", &[]).await.expect("count items").get(0)
}

/// What a read-only identity tries, over the simple protocol; each must be refused with 42501.
const WRITES: &[&str] = &[
    "INSERT INTO items VALUES (99, 'x')",
    "UPDATE items SET note = 'changed'",
    "DELETE FROM items WHERE id = 1",
    "DROP TABLE items",
    "TRUNCATE items",
    "WITH gone AS (DELETE FROM items RETURNING *) SELECT * FROM gone",
    "SELECT 1; DELETE FROM items",
    "/* harmless */ DELETE FROM items -- really",
    "SELECT nextval('items_seq')",
    "SET default_transaction_read_only = off",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "BEGIN READ WRITE",
    "RESET ALL",
    "DISCARD ALL",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "DO $$ BEGIN DELETE FROM items; END $$",
    "COPY items FROM STDIN",
    "PREPARE wipe AS DELETE FROM items",
];

/// Reads that merely mention destructive words; each must succeed.
const READS: &[&str] = &[
    "SELECT 'DROP TABLE items; DELETE FROM items' AS text",
    "SELECT id FROM items /* DELETE FROM items */ ORDER BY id",
    "SELECT \"delete\" FROM (SELECT 1 AS \"delete\") AS \"DROP\"",
    "SELECT $$; DROP TABLE items; $$",
    "SELECT E'\\'; DELETE FROM items; --'",
    "WITH items AS (SELECT 1 AS id) SELECT id FROM items",
    "EXPLAIN DELETE FROM items",
    "SHOW search_path",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_identity_reads_but_no_write_reaches_the_database() {
    let fixture = fixture().await;
    let agent = fixture.gateway.connect().await;
    agent
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, note text); CREATE SEQUENCE items_seq;
             INSERT INTO items SELECT g, 'note ' || g FROM generate_series(1, 5) g",
        )
        .await
        .expect("agent sets up");
    let reader = fixture
        .gateway
        .try_connect(&fixture.gateway.connection_string_with(&fixture.gateway.reader_key))
        .await
        .unwrap();

    for sql in WRITES {
        let error = reader.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&error), "42501", "{sql}: {error:?}");
        assert!(server_message(&error).contains("no policy permits"), "{sql}: {}", server_message(&error));
    }
    // The extended protocol is judged at Parse.
    let error = reader.query("DELETE FROM items WHERE id = $1", &[&1i32]).await.unwrap_err();
    assert_eq!(sqlstate(&error), "42501");
    assert!(server_message(&error).contains("write on table app/public.items"), "{}", server_message(&error));
    let error = reader.prepare("UPDATE items SET note = $1").await.unwrap_err();
    assert_eq!(sqlstate(&error), "42501");

    for sql in READS {
        reader.simple_query(sql).await.unwrap_or_else(|error| panic!("{sql}: {error:?}"));
    }
    let rows = reader.query("SELECT note FROM items WHERE id = $1", &[&2i32]).await.expect("extended read");
    assert_eq!(rows[0].get::<_, &str>(0), "note 2");

    // A refusal inside a transaction block fails the block, as the server's own refusal would.
    reader.batch_execute("BEGIN").await.unwrap();
    assert_eq!(row_count(&reader).await, 5);
    let error = reader.simple_query("DELETE FROM items").await.unwrap_err();
    assert_eq!(sqlstate(&error), "42501");
    let error = reader.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&error), "25P02", "the block is aborted: {error:?}");
    reader.batch_execute("ROLLBACK").await.unwrap();

    // Defence in depth: the reader's upstream session itself is read-only.
    let row = reader.query_one("SHOW default_transaction_read_only", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "on");

    // Nothing changed, and the session is still usable.
    let direct = fixture.direct_superuser().await;
    assert_eq!(row_count(&direct).await, 5);
    let notes: Vec<String> =
        direct.query("SELECT note FROM items ORDER BY id", &[]).await.unwrap().iter().map(|row| row.get(0)).collect();
    assert_eq!(notes, (1..=5).map(|id| format!("note {id}")).collect::<Vec<_>>());
    let sequence: i64 = direct.query_one("SELECT last_value FROM items_seq", &[]).await.unwrap().get(0);
    assert_eq!(sequence, 1, "nextval never ran");
    assert_eq!(row_count(&reader).await, 5);
    // The agent, who may write, is not read-only.
    agent.execute("DELETE FROM items WHERE id = 5", &[]).await.expect("agent writes");
    assert_eq!(row_count(&direct).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_shows_the_refusal_and_the_determining_policy() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app).policies(NO_UNBOUNDED_DELETES).start().await;
    let setup = gateway.psql(&["-c", "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3)"]);
    assert!(setup.status.success(), "{}", String::from_utf8_lossy(&setup.stderr));

    let refused = gateway.psql(&["-c", "DELETE FROM t"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("policy \"no-unbounded-deletes\" forbids write on table app/public.t"), "{stderr}");

    // The same session goes on after the refusal; a filtered delete is allowed.
    let output = gateway.psql_with_stdin(
        &["-v", "ON_ERROR_STOP=0", "-At"],
        Some(b"DELETE FROM t;\nDELETE FROM t WHERE id = 1;\nSELECT count(*) FROM t;\n"),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.trim_end().ends_with('2'), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_without_connect_is_refused_at_startup() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app)
        .policies(
            r#"
@id("agents-read-write")
permit (principal in Warden::Group::"agents",
        action in [Warden::Action::"connect", Warden::Action::"read", Warden::Action::"write"],
        resource);
"#,
        )
        .start()
        .await;
    let error = gateway.try_connect(&gateway.connection_string_with(&gateway.reader_key)).await.unwrap_err();
    assert_eq!(sqlstate(&error), "42501");
    assert_eq!(server_message(&error), "connection \"app\": no policy permits connect on connection app");
    // A startup option that weakens security is judged like the SET it is.
    let weakening = format!("{} options='-c session_replication_role=replica'", gateway.connection_string());
    let error = gateway.try_connect(&weakening).await.unwrap_err();
    assert_eq!(sqlstate(&error), "42501");
    assert!(
        server_message(&error).contains("startup setting session_replication_role=replica needs admin"),
        "{}",
        server_message(&error)
    );
    gateway.try_connect(&gateway.connection_string()).await.expect("the agent connects without it");
}

/// The agent may do anything but an unbounded DELETE.
pub(crate) const NO_UNBOUNDED_DELETES: &str = r#"
@id("agents-all")
permit (principal in Warden::Group::"agents", action, resource);

@id("no-unbounded-deletes")
forbid (principal, action == Warden::Action::"write", resource)
when { context has statement && context.statement.kind == "delete"
       && context.statement has has_where && !context.statement.has_where };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_record_carries_its_class_tables_decision_and_policies() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app).policies(NO_UNBOUNDED_DELETES).start().await;
    let client = gateway.connect().await;
    client.batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)").await.expect("setup");
    // Simple protocol: allowed and refused.
    client.simple_query("SELECT count(*) FROM t").await.expect("simple read");
    client.simple_query("DELETE FROM t").await.expect_err("unbounded delete refused");
    // Extended protocol: the decision made at Parse is recorded with the Execute that ran it.
    let rows = client.query("SELECT id FROM public.t WHERE id = $1", &[&1i32]).await.expect("extended read");
    assert_eq!(rows.len(), 1);
    client.execute("DELETE FROM t", &[]).await.expect_err("extended unbounded delete refused");
    drop(client);
    gateway.flush().await;

    let store = gateway.store();
    let sessions = store.list_sessions(&Default::default()).await.expect("list sessions");
    let session = &sessions[0];
    let statements = store.statements(&session.id).await.expect("read statements");
    assert_eq!(statements.len(), 5, "{statements:#?}");
    let decision = |text: &str| {
        let statement = statements
            .iter()
            .find(|statement| statement.text == text)
            .unwrap_or_else(|| panic!("no record of {text:?} in {statements:#?}"));
        (statement.decision.clone().expect("judged"), statement.error.clone())
    };

    let (setup, _) = decision("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)");
    assert!(setup.allowed);
    assert_eq!(setup.classes, ["ddl", "write"]);
    assert_eq!(setup.tables, ["public.t"]);
    assert_eq!(setup.policies, ["agents-all"]);

    let (read, error) = decision("SELECT count(*) FROM t");
    assert_eq!(
        (read.allowed, read.classes.as_slice(), read.tables.as_slice()),
        (true, &["read".to_string()][..], &["public.t".to_string()][..])
    );
    assert_eq!(error, None);

    let (extended, error) = decision("SELECT id FROM public.t WHERE id = $1");
    assert!(extended.allowed && error.is_none());
    assert_eq!(extended.classes, ["read"]);
    assert_eq!(extended.policies, ["agents-all"]);

    let refused: Vec<_> = statements.iter().filter(|statement| statement.text == "DELETE FROM t").collect();
    assert_eq!(refused.len(), 2, "both refusals are recorded: {statements:#?}");
    for statement in refused {
        let decision = statement.decision.as_ref().expect("judged");
        assert!(!decision.allowed);
        assert_eq!(decision.classes, ["write"]);
        assert_eq!(decision.tables, ["public.t"]);
        assert_eq!(decision.policies, ["no-unbounded-deletes"]);
        let error = statement.error.as_deref().expect("refused");
        assert!(error.starts_with("42501: ") && error.contains("no-unbounded-deletes"), "{error}");
    }
}
