//! TLS on both legs: client-facing with rustls, upstream with libpq's sslmode meanings.

use crate::OutputInPlace;
use std::process::Command;

use crate::start_postgres;
use warden_testkit::{TempPostgresOptions, TestGateway};

fn psql_tls(gateway: &TestGateway, sslmode: &str, sql: &str) -> std::process::Output {
    let ca = gateway.client_ca.as_ref().expect("client TLS configured");
    Command::new("psql")
        .args(["-X", "-At", "-c", sql])
        .arg(format!(
            "host=localhost port={} user=agent dbname=app sslmode={sslmode} sslrootcert={}",
            gateway.port(),
            ca.display()
        ))
        .env("PGPASSWORD", &gateway.api_key)
        .output_in_place()
        .expect("run psql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connect_with_verified_tls() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app).client_tls(false).start().await;
    let output = psql_tls(&gateway, "verify-full", "select 'over tls'");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "over tls");

    // Plaintext from loopback is still allowed when TLS is not required.
    let plain = gateway.psql(&["-At", "-c", "select 'plain'"]);
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_refuses_plaintext_clients() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app).client_tls(true).start().await;
    let plain = gateway.psql(&["-At", "-c", "select 1"]);
    assert!(!plain.status.success());
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("warden requires TLS on this listener"), "{stderr}");

    let output = psql_tls(&gateway, "require", "select 2");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verify_full_checks_the_name() {
    let options = TempPostgresOptions { tls: true, ..Default::default() };
    let (postgres, app) = start_postgres(options).await;
    let superuser = postgres.superuser_password().to_string();

    let gateway = TestGateway::builder(&postgres, &app)
        .connection_tls(r#"{ mode = "verify-full", ca = "upstream-ca.pem", server_name = "localhost" }"#)
        .start()
        .await;
    let client = gateway.connect().await;
    let ssl: bool =
        client.query_one("select ssl from pg_stat_ssl where pid = pg_backend_pid()", &[]).await.unwrap().get(0);
    assert!(ssl, "the upstream leg is encrypted");
    drop(superuser);

    let wrong_name = TestGateway::builder(&postgres, &app)
        .connection_tls(r#"{ mode = "verify-full", ca = "upstream-ca.pem", server_name = "db.example.com" }"#)
        .start()
        .await;
    let error = wrong_name.try_connect(&wrong_name.connection_string()).await.unwrap_err();
    assert_eq!(crate::sqlstate(&error), "08001");
    assert!(crate::server_message(&error).contains("TLS handshake failed"), "{error}");

    // verify-ca accepts the same certificate under any name.
    let chain_only = TestGateway::builder(&postgres, &app)
        .connection_tls(r#"{ mode = "verify-ca", ca = "upstream-ca.pem", server_name = "db.example.com" }"#)
        .start()
        .await;
    chain_only.connect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_required_but_refused_is_08001() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app).connection_tls(r#"{ mode = "require" }"#).start().await;
    let error = gateway.try_connect(&gateway.connection_string()).await.unwrap_err();
    assert_eq!(crate::sqlstate(&error), "08001");
    assert!(
        crate::server_message(&error).contains("the server refused TLS, and tls.mode = \"require\" requires it"),
        "{error}"
    );
}
