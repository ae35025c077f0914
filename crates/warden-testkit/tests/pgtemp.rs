//! The throwaway PostgreSQL server against the real system binaries: it starts, demands passwords on every
//! path, creates roles and databases, serves verifiable TLS, and is gone after drop.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use warden_testkit::{AuthMethod, PgTempError, TempPostgres, TempPostgresOptions};

/// Runs the kit's psql with a connection string of our own, the password (if any) in `PGPASSWORD`.
fn psql_with_conninfo(server: &TempPostgres, conninfo: &str, password: Option<&str>, sql: &str) -> Output {
    let mut command = Command::new(server.psql_program());
    command
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", conninfo, "-c", sql])
        .env_remove("PGPASSWORD")
        // An empty password file, so a password can only come from PGPASSWORD.
        .env("PGPASSFILE", "/dev/null");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    command.output().expect("psql runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim_end().to_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn starts_and_answers_as_the_superuser() -> anyhow::Result<()> {
    let server = TempPostgres::start()?;

    assert_eq!(server.psql("postgres", "select 1")?, "1");
    assert_eq!(server.host(), "127.0.0.1");
    assert_eq!(server.address(), format!("127.0.0.1:{}", server.port()));
    assert_eq!(server.superuser(), "postgres");
    assert!(server.superuser_password().len() >= 24);
    assert_eq!(server.ca_cert_pem(), None);
    assert_eq!(server.psql("postgres", "show port")?, server.port().to_string());
    assert_eq!(server.psql("postgres", "show max_connections")?, "300");
    assert_eq!(
        server
            .psql("postgres", "select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'postgres'")?,
        "t"
    );
    assert!(server.socket_path().exists(), "no socket at {}", server.socket_path().display());
    assert_eq!(
        server.url("my db"),
        format!(
            "postgresql://postgres:{}@127.0.0.1:{}/my%20db?sslmode=disable",
            server.superuser_password(),
            server.port()
        )
    );
    Ok(())
}

#[test]
fn a_wrong_or_missing_password_is_refused_over_tcp_and_the_socket() -> anyhow::Result<()> {
    let server = TempPostgres::start()?;

    match server.psql_as("postgres", "not-the-password", "postgres", "select 1") {
        Err(PgTempError::CommandFailed { stderr, .. }) => {
            assert!(stderr.contains("password authentication failed"), "unexpected psql error: {stderr}")
        }
        other => panic!("a wrong password was not refused: {other:?}"),
    }

    // The Unix socket demands a password too (no peer or trust authentication).
    let socket = format!("host={} port={} user=postgres dbname=postgres", server.socket_dir().display(), server.port());
    let without_password = psql_with_conninfo(&server, &socket, None, "select 1");
    assert!(!without_password.status.success());
    assert!(
        stderr(&without_password).contains("no password supplied"),
        "unexpected psql error: {}",
        stderr(&without_password)
    );
    let wrong_password = psql_with_conninfo(&server, &socket, Some("not-the-password"), "select 1");
    assert!(stderr(&wrong_password).contains("password authentication failed"));
    let right_password = psql_with_conninfo(&server, &socket, Some(server.superuser_password()), "select 1");
    assert!(right_password.status.success(), "{}", stderr(&right_password));
    assert_eq!(stdout(&right_password), "1");
    Ok(())
}

#[test]
fn a_created_role_logs_in_to_its_own_database() -> anyhow::Result<()> {
    let server = TempPostgres::start()?;
    // Quotes and spaces check that names and passwords are quoted, not pasted.
    server.create_role("app \"user\"", "it's a secret", false)?;
    server.create_database("app db", "app \"user\"")?;

    let who = server.psql_as(
        "app \"user\"",
        "it's a secret",
        "app db",
        "select current_user, current_database(), (select rolsuper from pg_roles where rolname = current_user)",
    )?;
    assert_eq!(who, "app \"user\"|app db|f");
    assert_eq!(
        server.psql(
            "postgres",
            "select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'app \"user\"'"
        )?,
        "t"
    );
    assert_eq!(
        server.psql("postgres", "select pg_get_userbyid(datdba) from pg_database where datname = 'app db'")?,
        "app \"user\""
    );
    assert!(server.psql_as("app \"user\"", "wrong", "app db", "select 1").is_err());

    server.create_role("admin", "admin-password", true)?;
    assert_eq!(
        server.psql_as(
            "admin",
            "admin-password",
            "postgres",
            "select rolsuper from pg_roles where rolname = current_user"
        )?,
        "t"
    );
    Ok(())
}

#[test]
fn md5_servers_store_and_check_md5_passwords_and_take_extra_settings() -> anyhow::Result<()> {
    let server = TempPostgres::start_with(TempPostgresOptions {
        auth: AuthMethod::Md5,
        max_connections: 20,
        extra_settings: vec![
            ("statement_timeout".to_owned(), "1234ms".to_owned()),
            ("cluster_name".to_owned(), "it's quoted".to_owned()),
        ],
        ..TempPostgresOptions::default()
    })?;
    server.create_role("legacy", "legacy-password", false)?;

    assert_eq!(
        server.psql(
            "postgres",
            "select string_agg(rolname || ':' || left(rolpassword, 3), ',' order by rolname) \
             from pg_authid where rolname in ('legacy', 'postgres')"
        )?,
        "legacy:md5,postgres:md5"
    );
    assert_eq!(server.psql("postgres", "select distinct auth_method from pg_hba_file_rules")?, "md5");
    assert_eq!(server.psql_as("legacy", "legacy-password", "postgres", "select current_user")?, "legacy");
    assert!(server.psql_as("legacy", "wrong", "postgres", "select 1").is_err());
    assert_eq!(server.psql("postgres", "show statement_timeout")?, "1234ms");
    assert_eq!(server.psql("postgres", "show max_connections")?, "20");
    assert_eq!(
        server.psql(
            "postgres",
            "select setting from pg_settings where name = 'cluster_name' and source = 'configuration file'"
        )?,
        "it's quoted"
    );
    Ok(())
}

#[test]
fn an_invalid_setting_name_is_refused_before_anything_starts() {
    let result = TempPostgres::start_with(TempPostgresOptions {
        extra_settings: vec![("work_mem = '1GB'\nfsync".to_owned(), "on".to_owned())],
        ..TempPostgresOptions::default()
    });
    assert!(matches!(result, Err(PgTempError::InvalidSetting { .. })), "{result:?}");
}

#[test]
fn the_server_is_gone_after_drop() -> anyhow::Result<()> {
    let server = TempPostgres::start()?;
    let address: SocketAddr = server.address().parse()?;
    let data_dir = server.data_dir().to_owned();
    let socket_path = server.socket_path();
    assert!(TcpStream::connect_timeout(&address, Duration::from_secs(5)).is_ok());

    drop(server);

    assert!(
        TcpStream::connect_timeout(&address, Duration::from_secs(5)).is_err(),
        "{address} still accepts connections after drop"
    );
    assert!(!socket_path.exists(), "{} is still there", socket_path.display());
    assert!(!data_dir.exists(), "{} was not deleted", data_dir.display());

    // `stop` is the same, explicitly.
    let server = TempPostgres::start()?;
    let address: SocketAddr = server.address().parse()?;
    server.stop();
    assert!(TcpStream::connect_timeout(&address, Duration::from_secs(5)).is_err());
    Ok(())
}

#[test]
fn tls_servers_present_a_certificate_the_ca_verifies() -> anyhow::Result<()> {
    let server = TempPostgres::start_with(TempPostgresOptions { tls: true, ..TempPostgresOptions::default() })?;
    let ca_pem = server.ca_cert_pem().expect("a TLS server has a CA");
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let ca_path = server.ca_cert_path().expect("a TLS server has a CA file");
    assert_eq!(std::fs::read_to_string(ca_path)?, ca_pem);

    let query = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
    // Both names in the certificate: the DNS name and the IP address.
    for host in [
        format!("host=localhost hostaddr=127.0.0.1 port={}", server.port()),
        format!("host=127.0.0.1 port={}", server.port()),
    ] {
        let conninfo =
            format!("{host} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}", ca_path.display());
        let output = psql_with_conninfo(&server, &conninfo, Some(server.superuser_password()), query);
        assert!(output.status.success(), "{conninfo}: {}", stderr(&output));
        assert_eq!(stdout(&output), "t", "{conninfo}");
    }

    // A name the certificate does not hold fails verification.
    let conninfo = format!(
        "host=not-localhost hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        server.port(),
        ca_path.display()
    );
    let output = psql_with_conninfo(&server, &conninfo, Some(server.superuser_password()), query);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("does not match host name"), "unexpected psql error: {}", stderr(&output));

    // Plain connections still work, and are not encrypted.
    assert_eq!(server.psql("postgres", query)?, "f");
    Ok(())
}

#[test]
fn servers_started_at_once_do_not_collide() -> anyhow::Result<()> {
    let servers = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3).map(|_| scope.spawn(TempPostgres::start)).collect();
        handles.into_iter().map(|handle| handle.join().expect("start does not panic")).collect::<Result<Vec<_>, _>>()
    })?;
    let mut ports: Vec<u16> = servers.iter().map(TempPostgres::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), servers.len());
    for server in &servers {
        assert_eq!(server.psql("postgres", "show port")?, server.port().to_string());
    }
    Ok(())
}

/// Set in the environment of the child process `a_server_leaked_by_a_dying_process_is_cleaned_up` runs.
const LEAKING_CHILD: &str = "WARDEN_TESTKIT_LEAKING_CHILD";

#[test]
fn a_server_leaked_by_a_dying_process_is_cleaned_up() -> anyhow::Result<()> {
    if std::env::var_os(LEAKING_CHILD).is_some() {
        // The child: start a server, report it, and exit without running its `Drop`.
        let server = TempPostgres::start()?;
        println!("\nleaked: {} {}", server.address(), server.data_dir().display());
        std::mem::forget(server);
        std::process::exit(0);
    }

    // The parent runs this same test in a child process. Reading the child's output to the end also waits
    // for the server's watchdog, which holds the child's standard error until it has cleaned up.
    let output = Command::new(std::env::current_exe()?)
        .args(["a_server_leaked_by_a_dying_process_is_cleaned_up", "--exact", "--nocapture", "--test-threads=1"])
        .env(LEAKING_CHILD, "1")
        .output()?;
    assert!(output.status.success(), "child failed: {}", stderr(&output));
    let report = String::from_utf8_lossy(&output.stdout);
    let (address, data_dir) = report
        .lines()
        .find_map(|line| {
            let (address, data_dir) = line.strip_prefix("leaked: ")?.split_once(' ')?;
            Some((address.parse::<SocketAddr>().ok()?, Path::new(data_dir).to_owned()))
        })
        .ok_or_else(|| anyhow::anyhow!("the child reported no server: {report}"))?;

    assert!(
        TcpStream::connect_timeout(&address, Duration::from_secs(5)).is_err(),
        "{address} still accepts connections after its process exited"
    );
    assert!(!data_dir.exists(), "{} was not deleted", data_dir.display());
    Ok(())
}
