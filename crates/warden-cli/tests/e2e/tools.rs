//! Real command-line clients through warden: psql and pgbench.

use crate::OutputInPlace;
use std::process::Command;

use crate::fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_a_script_with_copy_from_stdin() {
    let fixture = fixture().await;
    let script = b"\\set ON_ERROR_STOP 1
create table items (id int, name text);
copy items from stdin;
1\tapple
2\tpear
\\.
select string_agg(name, ',' order by id) from items;
begin;
insert into items values (3, 'plum');
rollback;
select count(*) from items;
";
    let output = fixture.gateway.psql_with_stdin(&["-At", "-f", "-"], Some(script));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "psql failed: {}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, vec!["CREATE TABLE", "COPY 2", "apple,pear", "BEGIN", "INSERT 0 1", "ROLLBACK", "2"]);

    let error = fixture.gateway.psql(&["-At", "-c", "select * from missing_table"]);
    assert!(!error.status.success());
    assert!(String::from_utf8_lossy(&error.stderr).contains("relation \"missing_table\" does not exist"));
}

fn pgbench(gateway: &warden_testkit::TestGateway, args: &[&str]) -> (bool, String) {
    let output = Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(gateway.port().to_string())
        .args(["-U", "agent"])
        .args(args)
        .arg("app")
        .env("PGPASSWORD", &gateway.api_key)
        .env("PGSSLMODE", "disable")
        .output_in_place()
        .expect("run pgbench");
    let text = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_initializes_and_runs_without_errors() {
    let fixture = fixture().await;
    let (ok, output) = pgbench(&fixture.gateway, &["-i", "-s", "1", "-q"]);
    assert!(ok, "pgbench -i failed:\n{output}");

    for (mode, args) in [
        ("select-only simple", vec!["-S", "-c", "4", "-j", "2", "-t", "300"]),
        ("select-only prepared", vec!["-S", "-M", "prepared", "-c", "4", "-j", "2", "-t", "300"]),
        ("TPC-B", vec!["-c", "4", "-j", "2", "-t", "100"]),
    ] {
        let (ok, output) = pgbench(&fixture.gateway, &args);
        assert!(ok, "pgbench {mode} failed:\n{output}");
        let processed = output
            .lines()
            .find(|line| line.starts_with("number of transactions actually processed"))
            .unwrap_or_else(|| panic!("no summary from pgbench {mode}:\n{output}"));
        let expected = if mode == "TPC-B" { "400/400" } else { "1200/1200" };
        assert!(processed.ends_with(expected), "pgbench {mode}: {processed}");
        let failed = output
            .lines()
            .find(|line| line.starts_with("number of failed transactions"))
            .unwrap_or("number of failed transactions: 0");
        assert!(failed.contains(": 0 "), "pgbench {mode}: {failed}");
    }
}
