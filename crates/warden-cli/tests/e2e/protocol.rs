//! The PostgreSQL protocol through warden behaves as a direct connection does.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::AsyncMessage;

use crate::raw::{self, RawClient};
use crate::{fixture, sqlstate, wait_until};

/// Backends the app role has open on the upstream server right now.
async fn upstream_backends(superuser: &tokio_postgres::Client) -> i64 {
    superuser.query_one("select count(*) from pg_stat_activity where usename = 'app_owner'", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries_with_types() {
    let fixture = fixture().await;
    let client = fixture.gateway.connect().await;

    let messages = client
        .simple_query("create table t (id int primary key, name text, data bytea, at timestamptz); insert into t values (1, 'one', '\\x0102', '2026-01-02T03:04:05Z'); select name from t")
        .await
        .expect("simple query");
    let rows: Vec<&str> = messages
        .iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .collect();
    assert_eq!(rows, vec!["one"]);

    let insert = client.prepare("insert into t (id, name, data) values ($1, $2, $3)").await.expect("prepare");
    let inserted = client.execute(&insert, &[&2i32, &"two", &vec![0u8, 255, 7]]).await.expect("execute");
    assert_eq!(inserted, 1);
    client.execute(&insert, &[&3i32, &None::<String>, &None::<Vec<u8>>]).await.expect("execute with nulls");

    let row = client.query_one("select name, data, id from t where id = $1", &[&2i32]).await.expect("query_one");
    assert_eq!(row.get::<_, &str>(0), "two");
    assert_eq!(row.get::<_, Vec<u8>>(1), vec![0u8, 255, 7]);
    let null: Option<String> = client.query_one("select name from t where id = 3", &[]).await.expect("null row").get(0);
    assert_eq!(null, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_extended_queries_keep_their_order() {
    let fixture = fixture().await;
    let client = fixture.gateway.connect().await;
    let statement = client.prepare("select $1::int * 2, repeat('x', $1::int)").await.expect("prepare");
    // tokio-postgres pipelines concurrent queries on one connection: all are sent before results return.
    let queries = (0..300).map(|i| {
        let client = &client;
        let statement = &statement;
        async move { client.query_one(statement, &[&i]).await }
    });
    let rows = futures_util::future::try_join_all(queries).await.expect("pipelined queries");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, i32>(0), i as i32 * 2);
        assert_eq!(row.get::<_, &str>(1).len(), i);
    }

    // An error in the middle of a pipeline fails only its own query.
    let results = futures_util::future::join_all([
        client.query("select 1", &[]),
        client.query("select * from no_such_table", &[]),
        client.query("select 3", &[]),
    ])
    .await;
    assert!(results[0].is_ok());
    assert_eq!(sqlstate(results[1].as_ref().unwrap_err()), "42P01");
    assert_eq!(results[2].as_ref().expect("third query")[0].get::<_, i32>(0), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_of_more_than_10_mb() {
    let fixture = fixture().await;
    let client = fixture.gateway.connect().await;
    client.batch_execute("create table big (id int, payload text)").await.expect("create");

    let rows = 120_000;
    let mut expected_bytes = 0usize;
    let sink = client.copy_in("copy big from stdin").await.expect("copy in");
    futures_util::pin_mut!(sink);
    let mut chunk = String::new();
    for id in 0..rows {
        let line = format!("{id}\t{}\n", "abcdefghij".repeat(9));
        expected_bytes += line.len();
        chunk.push_str(&line);
        if chunk.len() > 64 * 1024 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut chunk))).await.expect("send chunk");
        }
    }
    sink.send(bytes::Bytes::from(chunk)).await.expect("send last chunk");
    let copied = sink.finish().await.expect("finish copy in");
    assert_eq!(copied, rows as u64);
    assert!(expected_bytes > 10 * 1024 * 1024, "sent {expected_bytes} bytes");

    let stream = client.copy_out("copy big to stdout").await.expect("copy out");
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("copy out data");
    let received: usize = chunks.iter().map(|chunk| chunk.len()).sum();
    assert_eq!(received, expected_bytes);
    let text: Vec<u8> = chunks.concat();
    let last_line = text.split(|&b| b == b'\n').rev().nth(1).expect("a last line");
    assert!(last_line.starts_with(format!("{}\t", rows - 1).as_bytes()));

    // The session is still healthy after both copies.
    let count: i64 = client.query_one("select count(*) from big", &[]).await.unwrap().get(0);
    assert_eq!(count, rows as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_and_listen_notify_are_delivered() {
    let fixture = fixture().await;
    let (listener, mut connection) =
        tokio_postgres::connect(&fixture.gateway.connection_string(), tokio_postgres::NoTls)
            .await
            .expect("listener connects");
    let (sender, mut messages) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = stream.next().await {
            let _ = sender.send(message);
        }
    });

    listener.batch_execute("do $$ begin raise notice 'hello from %', 'plpgsql'; end $$").await.expect("do block");
    match messages.recv().await.expect("a notice") {
        AsyncMessage::Notice(notice) => assert_eq!(notice.message(), "hello from plpgsql"),
        other => panic!("expected a notice, got {other:?}"),
    }

    listener.batch_execute("listen orders").await.expect("listen");
    let notifier = fixture.gateway.connect().await;
    notifier.batch_execute("notify orders, 'order 42 placed'").await.expect("notify");
    let notification = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(AsyncMessage::Notification(notification)) = messages.recv().await {
                return notification;
            }
        }
    })
    .await
    .expect("notification within 10 s");
    assert_eq!(notification.channel(), "orders");
    assert_eq!(notification.payload(), "order 42 placed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_inside_and_outside_transactions_recover() {
    let fixture = fixture().await;
    let client = fixture.gateway.connect().await;

    let error = client.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&error), "22012");
    assert_eq!(client.query_one("select 2", &[]).await.unwrap().get::<_, i32>(0), 2);

    client.batch_execute("create table acct (n int)").await.unwrap();
    client.batch_execute("begin; insert into acct values (1)").await.unwrap();
    let error = client.batch_execute("insert into acct values ('not a number')").await.unwrap_err();
    assert_eq!(sqlstate(&error), "22P02");
    let error = client.query("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&error), "25P02", "the transaction is aborted until rollback");
    client.batch_execute("rollback").await.unwrap();

    client.batch_execute("begin; insert into acct values (1); savepoint s; ").await.unwrap();
    assert!(client.batch_execute("insert into acct values (1/0)").await.is_err());
    client.batch_execute("rollback to savepoint s; insert into acct values (2); commit").await.unwrap();
    let total: i64 = client.query_one("select sum(n) from acct", &[]).await.unwrap().get(0);
    assert_eq!(total, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_reaches_the_right_backend() {
    let fixture = fixture().await;
    let client = fixture.gateway.connect().await;
    let bystander = fixture.gateway.connect().await;
    let cancel = client.cancel_token();
    let superuser = fixture.direct_superuser().await;

    let sleeper = tokio::spawn(async move {
        let result = client.simple_query("select pg_sleep(30)").await;
        (result, Instant::now())
    });
    wait_until(10, "pg_sleep to be running", || async {
        let row = superuser
            .query_one(
                "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) == 1
    })
    .await;

    let cancelled_at = Instant::now();
    cancel.cancel_query(tokio_postgres::NoTls).await.expect("cancel request sent");
    let (result, returned_at) = sleeper.await.unwrap();
    let error = result.expect_err("the sleep is cancelled");
    assert_eq!(sqlstate(&error), "57014", "query_canceled");
    let latency = returned_at - cancelled_at;
    eprintln!("cancel latency through warden: {latency:?}");
    assert!(latency < Duration::from_secs(1), "cancel took {latency:?}");
    // The other session was not touched.
    assert_eq!(bystander.query_one("select 7", &[]).await.unwrap().get::<_, i32>(0), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_sessions() {
    let fixture = fixture().await;
    let superuser = fixture.direct_superuser().await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(201));
    let mut sessions = Vec::new();
    for i in 0..200i32 {
        let connection_string = fixture.gateway.connection_string();
        let barrier = barrier.clone();
        sessions.push(tokio::spawn(async move {
            let (client, connection) =
                tokio_postgres::connect(&connection_string, tokio_postgres::NoTls).await.expect("session connects");
            tokio::spawn(connection);
            let row = client.query_one("select $1::int + 1", &[&i]).await.expect("query");
            barrier.wait().await;
            // Keep the session open until every session has answered.
            barrier.wait().await;
            row.get::<_, i32>(0)
        }));
    }
    barrier.wait().await;
    let upstream = upstream_backends(&superuser).await;
    assert_eq!(upstream, 200, "every session holds its own upstream backend");
    assert_eq!(fixture.gateway.gateway().live_sessions(), 200);
    barrier.wait().await;
    for (i, session) in sessions.into_iter().enumerate() {
        assert_eq!(session.await.unwrap(), i as i32 + 1);
    }
    wait_until(10, "upstream backends to end", || async { upstream_backends(&superuser).await == 0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_status_and_application_name_match_a_direct_connection() {
    let fixture = fixture().await;
    let (mut client, messages) = RawClient::login(
        fixture.gateway.address(),
        &[
            ("user", "agent"),
            ("database", "app"),
            ("application_name", "langgraph-node-7"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, DMY"),
        ],
        &fixture.gateway.api_key,
    )
    .await;
    let tags: Vec<char> = messages.iter().map(|m| m.tag as char).collect();
    assert_eq!(tags.first(), Some(&'R'), "AuthenticationOk first: {tags:?}");
    assert_eq!(tags.last(), Some(&'Z'));
    let parameters: std::collections::HashMap<String, String> = messages
        .iter()
        .filter(|m| m.tag == b'S')
        .map(|m| {
            let strings = m.strings();
            (strings[0].clone(), strings[1].clone())
        })
        .collect();
    for name in [
        "server_version",
        "server_encoding",
        "client_encoding",
        "integer_datetimes",
        "IntervalStyle",
        "standard_conforming_strings",
        "TimeZone",
        "is_superuser",
        "session_authorization",
    ] {
        assert!(parameters.contains_key(name), "missing ParameterStatus {name}: {parameters:?}");
    }
    assert_eq!(parameters["application_name"], "langgraph-node-7");
    assert_eq!(parameters["DateStyle"], "ISO, DMY");
    assert!(parameters["server_version"].starts_with("15"));
    let key_data = messages.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
    assert_eq!(key_data.body.len(), 8);

    // The upstream backend carries the client's application_name, as a direct connection's would.
    client.send(&raw::query("select application_name from pg_stat_activity where pid = pg_backend_pid()")).await;
    let reply = client.read_until_ready().await;
    let row = reply.iter().find(|m| m.tag == b'D').expect("a row");
    assert!(String::from_utf8_lossy(&row.body).contains("langgraph-node-7"));
    // Warden's key data is its own, not the upstream backend's.
    client.send(&raw::query("select pg_backend_pid()")).await;
    let reply = client.read_until_ready().await;
    let row = reply.iter().find(|m| m.tag == b'D').expect("a row");
    let upstream_pid: i32 = String::from_utf8_lossy(&row.body[6..]).parse().expect("a pid");
    let warden_pid = i32::from_be_bytes(key_data.body[..4].try_into().unwrap());
    assert_ne!(warden_pid, upstream_pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_ends_the_upstream_backend_and_the_session_is_recorded() {
    let fixture = fixture().await;
    let superuser = fixture.direct_superuser().await;
    {
        let client = fixture.gateway.connect().await;
        client.batch_execute("create table r (n int)").await.unwrap();
        client.execute("insert into r select generate_series(1, 5)", &[]).await.unwrap();
        assert!(client.simple_query("select nope").await.is_err());
        // A statement the server refuses at Parse never runs, but it is recorded.
        assert_eq!(sqlstate(&client.prepare("selec 1").await.unwrap_err()), "42601");
        // Dropping the client sends Terminate.
    }
    wait_until(10, "the upstream backend to exit", || async { upstream_backends(&superuser).await == 0 }).await;
    wait_until(10, "the session to be recorded as ended", || async {
        fixture.gateway.flush().await;
        let sessions = fixture.gateway.gateway().store().list_sessions(&Default::default()).await.unwrap();
        sessions.len() == 1 && sessions[0].ended_at.is_some()
    })
    .await;
    let store = fixture.gateway.gateway().store();
    let session = &store.list_sessions(&Default::default()).await.unwrap()[0];
    assert_eq!(session.identity, "agent");
    assert_eq!(session.connection, "app");
    assert_eq!(session.end_reason.as_deref(), Some("client terminated"));
    let statements = store.statements(&session.id).await.unwrap();
    let summary: Vec<(String, Option<i64>, bool)> =
        statements.iter().map(|s| (s.text.clone(), s.rows, s.error.is_some())).collect();
    assert_eq!(
        summary,
        vec![
            ("create table r (n int)".to_string(), None, false),
            ("insert into r select generate_series(1, 5)".to_string(), Some(5), false),
            ("select nope".to_string(), None, true),
            ("selec 1".to_string(), None, true),
        ]
    );
    assert!(statements[2].error.as_deref().unwrap().starts_with("42703"));
    // warden parses with the server's grammar, so it refuses the syntax error itself, with the same SQLSTATE.
    let error = statements[3].error.as_deref().unwrap();
    assert!(error.starts_with("42601: ") && error.contains("syntax error at or near \"selec\""), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_recorded_in_a_postgresql_state_store() {
    let (postgres, app) = crate::start_postgres(Default::default()).await;
    let state_url = format!("postgres://{}:{}@{}/app", app.role, app.password, postgres.address());
    let gateway = warden_testkit::TestGateway::builder(&postgres, &app).state_url(&state_url).start().await;
    assert_eq!(gateway.gateway().store().backend(), "postgres");
    let client = gateway.connect().await;
    client.batch_execute("select 1; select 2").await.unwrap();
    drop(client);
    wait_until(10, "the session and its statement to be recorded", || async {
        gateway.flush().await;
        let sessions = gateway.gateway().store().list_sessions(&Default::default()).await.unwrap();
        sessions.len() == 1 && sessions[0].ended_at.is_some() && sessions[0].statement_count == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_live_sessions_why_and_records_their_end() {
    let crate::Fixture { mut gateway, app: _app, postgres } = fixture().await;
    let (mut client, _) =
        RawClient::login(gateway.address(), &[("user", "agent"), ("database", "app")], &gateway.api_key).await;
    client.send(&raw::query("select 1")).await;
    client.read_until_ready().await;
    let store = gateway.store();
    gateway.stop().await;

    let farewell = client.read_message().await.expect("a FATAL error before the close");
    assert_eq!(farewell.tag, b'E');
    assert_eq!(
        farewell.error(),
        ("57P01".to_string(), "terminating connection because warden is shutting down".to_string())
    );
    assert!(client.read_message().await.is_none(), "then the connection closes");

    let sessions = store.list_sessions(&Default::default()).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].end_reason.as_deref(), Some("gateway shutting down"));
    assert_eq!(sessions[0].statement_count, 1);

    let (superuser, connection) = tokio_postgres::connect(&postgres.url("app"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    wait_until(10, "the upstream backend to exit", || async { upstream_backends(&superuser).await == 0 }).await;
}
