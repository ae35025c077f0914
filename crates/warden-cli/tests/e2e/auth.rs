//! Refusals before the relay: each names its reason with the right SQLSTATE, and none leaks a secret.

use crate::raw::{self, RawClient};
use crate::{fixture, server_message, sqlstate, start_postgres};
use warden_testkit::TestGateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_is_refused_with_28p01() {
    let fixture = fixture().await;
    let wrong = fixture.gateway.connection_string().replace(&fixture.gateway.api_key, "wk_not-a-real-key");
    let error = fixture.gateway.try_connect(&wrong).await.unwrap_err();
    assert_eq!(sqlstate(&error), "28P01");
    assert!(server_message(&error).contains("invalid API key"), "{error}");

    // The upstream password is not an API key either.
    let upstream = fixture.gateway.connection_string().replace(&fixture.gateway.api_key, &fixture.app.password);
    let error = fixture.gateway.try_connect(&upstream).await.unwrap_err();
    assert_eq!(sqlstate(&error), "28P01");
    fixture.gateway.flush().await;
    let sessions = fixture.gateway.gateway().store().list_sessions(&Default::default()).await.unwrap();
    assert!(sessions.is_empty(), "refused logins open no session: {sessions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_connection_is_refused_with_3d000() {
    let fixture = fixture().await;
    let connection_string = fixture.gateway.connection_string().replace("dbname=app", "dbname=payroll");
    let error = fixture.gateway.try_connect(&connection_string).await.unwrap_err();
    assert_eq!(sqlstate(&error), "3D000");
    assert_eq!(server_message(&error), "connection \"payroll\" does not exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_refused_with_08001() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gateway = TestGateway::builder(&postgres, &app).upstream_address(&closed_port.to_string()).start().await;
    let error = gateway.try_connect(&gateway.connection_string()).await.unwrap_err();
    assert_eq!(sqlstate(&error), "08001");
    let message = server_message(&error);
    assert!(message.contains("could not connect to connection \"app\""), "{message}");
    assert!(message.contains("Connection refused"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_refuses_warden_credential_is_08001_without_the_secret() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app).upstream_password("wrong-upstream-secret-123").start().await;
    let error = gateway.try_connect(&gateway.connection_string()).await.unwrap_err();
    assert_eq!(sqlstate(&error), "08001");
    let message = server_message(&error);
    assert!(message.contains("password authentication failed for user \"app_owner\""), "{message}");
    assert!(!message.contains("wrong-upstream-secret-123"));
    assert!(!message.contains(&app.password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_upstream_authentication_works() {
    let options = warden_testkit::TempPostgresOptions { auth: warden_testkit::AuthMethod::Md5, ..Default::default() };
    let (postgres, app) = start_postgres(options).await;
    let gateway = TestGateway::start(&postgres, &app).await;
    let client = gateway.connect().await;
    let user: String = client.query_one("select current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(user, "app_owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_packets_get_a_clear_error() {
    let fixture = fixture().await;
    let address = fixture.gateway.address();

    // A length word below the minimum.
    let mut client = RawClient::connect(address).await;
    client.send(&3u32.to_be_bytes()).await;
    let reply = client.read_message().await.expect("an error");
    assert_eq!(reply.tag, b'E');
    assert_eq!(reply.error().0, "08P01");
    assert!(reply.error().1.contains("invalid message length"), "{:?}", reply.error());
    assert!(client.read_message().await.is_none(), "connection closed");

    // A 1 GiB length word is refused at once, without waiting for (or allocating) the body.
    let mut client = RawClient::connect(address).await;
    client.send(&(1u32 << 30).to_be_bytes()).await;
    let reply = client.read_message().await.expect("an error");
    assert_eq!(reply.error().0, "08P01");

    // Protocol 2.0.
    let mut client = RawClient::connect(address).await;
    let mut packet = raw::startup_packet(&[("user", "agent")]);
    packet[4..8].copy_from_slice(&0x0002_0000i32.to_be_bytes());
    client.send(&packet).await;
    let reply = client.read_message().await.expect("an error");
    assert_eq!(reply.error().0, "0A000");
    assert!(reply.error().1.contains("unsupported frontend protocol 2.0"));

    // A parameter without its terminator.
    let mut client = RawClient::connect(address).await;
    let mut body = 196_608i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0agent");
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend(body);
    client.send(&packet).await;
    let reply = client.read_message().await.expect("an error");
    assert_eq!(reply.error().0, "08P01");

    // No user name.
    let mut client = RawClient::connect(address).await;
    client.send(&raw::startup_packet(&[("database", "app")])).await;
    let reply = client.read_message().await.expect("an error");
    assert_eq!(reply.error().0, "28000");

    // A replication connection.
    let mut client = RawClient::connect(address).await;
    client.send(&raw::startup_packet(&[("user", "agent"), ("replication", "database")])).await;
    let reply = client.read_message().await.expect("an error");
    assert_eq!(reply.error().0, "0A000");

    // After all that, the gateway still serves.
    let client = fixture.gateway.connect().await;
    assert_eq!(client.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_is_refused_before_it_is_read() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app).limits("max_message_bytes = 65536").start().await;
    let (mut client, _) =
        RawClient::login(gateway.address(), &[("user", "agent"), ("database", "app")], &gateway.api_key).await;
    // Announce a 100 MB query but send only its header.
    let mut header = vec![b'Q'];
    header.extend_from_slice(&100_000_000u32.to_be_bytes());
    client.send(&header).await;
    let reply = client.read_message().await.expect("an error");
    assert_eq!(reply.tag, b'E');
    let (code, message) = reply.error();
    assert_eq!(code, "08P01");
    assert!(message.contains("exceeds the limit of 65536 bytes (limits.max_message_bytes)"), "{message}");
    assert!(client.read_message().await.is_none(), "session closed");

    // A query just under the limit still works.
    let client = gateway.connect().await;
    let sql = format!("select length('{}')", "y".repeat(60_000));
    let length: i32 = client.query_one(sql.as_str(), &[]).await.unwrap().get(0);
    assert_eq!(length, 60_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_password_never_reaches_the_client() {
    let fixture = fixture().await;
    let (mut client, mut transcript) = RawClient::login(
        fixture.gateway.address(),
        &[("user", "agent"), ("database", "app")],
        &fixture.gateway.api_key,
    )
    .await;
    for sql in [
        "show all",
        "select * from pg_settings",
        "select current_setting('password_encryption')",
        "select 1/0",
        "select rolname, rolpassword from pg_authid",
    ] {
        client.send(&raw::query(sql)).await;
        transcript.extend(client.read_until_ready().await);
    }
    client.send(&raw::message(b'X', &[])).await;
    assert!(client.read_message().await.is_none());
    let received = String::from_utf8_lossy(&client.received).into_owned();
    assert!(!received.contains(&fixture.app.password), "the upstream password leaked to the client");
    assert!(received.contains("division by zero"), "the transcript is real");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_the_limit_are_refused_with_53300_until_one_ends() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app).limits("max_sessions = 2").start().await;
    let first = gateway.connect().await;
    let second = gateway.connect().await;
    let error = gateway.try_connect(&gateway.connection_string()).await.unwrap_err();
    assert_eq!(sqlstate(&error), "53300");
    assert_eq!(server_message(&error), "too many sessions: warden allows 2 (limits.max_sessions)");
    assert_eq!(second.query_one("select 2", &[]).await.unwrap().get::<_, i32>(0), 2);

    drop(first);
    crate::wait_until(10, "a session slot to free up", || async {
        gateway.try_connect(&gateway.connection_string()).await.is_ok()
    })
    .await;
}
