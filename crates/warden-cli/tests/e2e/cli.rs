//! The `warden` binary as an operator uses it: check, gateway (with its logs), sessions.

use crate::OutputInPlace;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::raw::{self, RawClient};
use crate::{start_postgres, wait_until};

fn warden() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warden"))
}

#[test]
fn check_reports_every_problem_with_file_line_and_field() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("warden.toml");
    std::fs::write(
        &path,
        r#"[listen]
postgres = "127.0.0.1:15432"

[[connection]]
name = "shop"
kind = "postgres"
address = "127.0.0.1:5432"
database = "shop"
user = "warden_shop"
password = "hunter2"

[[api_key]]
name = "agent"
key = { env = "WARDEN_TEST_UNSET_KEY_VARIABLE" }
"#,
    )
    .unwrap();
    let output = warden().arg("check").arg("--config").arg(&path).output_in_place().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let location = path.display().to_string();
    assert!(
        stderr.contains(&format!("{location}:10:12: connection[0].password: a literal secret is not allowed")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{location}:14:7: api_key[0].key: environment variable WARDEN_TEST_UNSET_KEY_VARIABLE is not set or empty"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "a refused secret is not echoed");

    // The gateway refuses to start on the same errors.
    let output = warden().arg("gateway").arg("--config").arg(&path).output_in_place().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("connection[0].password"));

    std::fs::write(directory.path().join("pw"), "s3cret\n").unwrap();
    let fixed = std::fs::read_to_string(&path)
        .unwrap()
        .replace("password = \"hunter2\"", "password = { file = \"pw\" }")
        .replace("{ env = \"WARDEN_TEST_UNSET_KEY_VARIABLE\" }", &format!("{{ sha256 = \"{}\" }}", "ab".repeat(32)));
    std::fs::write(&path, fixed).unwrap();
    let output = warden().arg("check").arg("--config").arg(&path).output_in_place().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains("ok (1 connection(s), 1 API key(s), 0 policies, state sqlite)"));

    // Policies are validated against warden's schema, each problem with its file, line and column.
    std::fs::create_dir(directory.path().join("policies")).unwrap();
    let policy = directory.path().join("policies/shop.cedar");
    std::fs::write(
        &policy,
        "@id(\"ok\")\npermit (principal, action == Warden::Action::\"read\", resource);\n\n@id(\"typo\")\nforbid (principal, action, resource)\nwhen { context.statement.knd == \"delete\" };\n",
    )
    .unwrap();
    let with_policies = std::fs::read_to_string(&path).unwrap() + "\n[policy]\nfiles = [\"policies/*.cedar\"]\n";
    std::fs::write(&path, with_policies).unwrap();
    let output = warden().arg("check").arg("--config").arg(&path).output_in_place().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{}:6:", policy.display())), "{stderr}");
    assert!(stderr.contains("knd"), "{stderr}");
    let output = warden().arg("gateway").arg("--config").arg(&path).output_in_place().unwrap();
    assert!(!output.status.success(), "the gateway refuses the same policies");
    assert!(String::from_utf8_lossy(&output.stderr).contains("knd"));

    std::fs::write(&policy, "@id(\"ok\")\npermit (principal, action == Warden::Action::\"read\", resource);\n")
        .unwrap();
    let output = warden().arg("check").arg("--config").arg(&path).output_in_place().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 policies"));
}

/// Runs `warden gateway` as its own process with debug logs, uses it, and reads its logs and records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_process_records_sessions_and_never_logs_secrets() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("upstream.password"), &app.password).unwrap();
    let api_key = warden_identity::generate_api_key();
    let config = directory.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            r#"[listen]
postgres = "127.0.0.1:0"

[[connection]]
name = "app"
kind = "postgres"
address = "{address}"
database = "app"
user = "app_owner"
password = {{ file = "upstream.password" }}

[[api_key]]
name = "ci-agent"
key = {{ sha256 = "{digest}" }}

[policy]
files = ["ci.cedar"]
"#,
            address = postgres.address(),
            digest = warden_identity::api_key_digest(&api_key),
        ),
    )
    .unwrap();
    std::fs::write(
        directory.path().join("ci.cedar"),
        "permit (principal == Warden::Identity::\"ci-agent\", action, resource in Warden::Connection::\"app\");\n",
    )
    .unwrap();
    let mut child = warden()
        .arg("gateway")
        .arg("--config")
        .arg(&config)
        .env("WARDEN_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = BufReader::new(child.stderr.take().unwrap());
    let mut log_text = String::new();
    let address: std::net::SocketAddr = loop {
        let mut line = String::new();
        assert!(logs.read_line(&mut line).unwrap() > 0, "gateway exited:\n{log_text}");
        log_text.push_str(&line);
        if let Some(rest) = line.split("postgres=Some(").nth(1) {
            break rest.split(')').next().unwrap().parse().unwrap();
        }
    };

    let (mut client, _) = RawClient::login(
        address,
        &[("user", "ops"), ("database", "app"), ("application_name", "nightly-report")],
        &api_key,
    )
    .await;
    client.send(&raw::query("select 40 + 2")).await;
    client.read_until_ready().await;
    client.send(&raw::message(b'X', &[])).await;
    assert!(client.read_message().await.is_none());
    // A refused login too, so failure paths are logged.
    let mut refused = RawClient::connect(address).await;
    refused.send(&raw::startup_packet(&[("user", "ops"), ("database", "app")])).await;
    refused.read_message().await;
    refused.send(&raw::message(b'p', format!("{}\0", app.password).as_bytes())).await;
    let reply = refused.read_message().await.unwrap();
    assert_eq!(reply.error().0, "28P01");
    // SIGTERM: the gateway flushes its records and exits cleanly.
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let status = child.wait().unwrap();
    std::io::Read::read_to_string(&mut logs, &mut log_text).unwrap();
    assert!(status.success(), "gateway exit: {status:?}\n{log_text}");
    assert!(log_text.contains("session started"), "{log_text}");
    assert!(!log_text.contains(&app.password), "the upstream password is in the logs:\n{log_text}");
    assert!(!log_text.contains(&api_key), "the API key is in the logs");

    let output = warden().args(["sessions", "list", "--json", "--config"]).arg(&config).output_in_place().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let sessions: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let session = &sessions[0];
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    assert_eq!(session["identity"], "ci-agent");
    assert_eq!(session["connection"], "app");
    assert_eq!(session["user_name"], "ops");
    assert_eq!(session["application_name"], "nightly-report");
    assert_eq!(session["end_reason"], "client terminated");

    let id = session["id"].as_str().unwrap();
    let output = warden().args(["sessions", "show", id, "--json", "--config"]).arg(&config).output_in_place().unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["statements"][0]["text"], "select 40 + 2");
    assert_eq!(shown["statements"][0]["rows"], 1);

    let output = warden().args(["sessions", "show", id, "--config"]).arg(&config).output_in_place().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("select 40 + 2") && text.contains("ci-agent"), "{text}");
    let output = warden()
        .args(["sessions", "list", "--identity", "someone-else", "--json", "--config"])
        .arg(&config)
        .output_in_place()
        .unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap(), serde_json::json!([]));
}

/// `warden policy explain` predicts what the gateway does: the same refusal, word for word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_explain_predicts_the_gateway_decision() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = warden_testkit::TestGateway::builder(&postgres, &app)
        .policies(&format!(
            "{}\n@id(\"readers-read\")\npermit (principal in Warden::Group::\"readers\",\n        \
                 action in [Warden::Action::\"connect\", Warden::Action::\"read\"], resource);\n",
            crate::policy::NO_UNBOUNDED_DELETES
        ))
        .start()
        .await;
    let query = "SELECT * FROM t /* DELETE */; DELETE FROM t";
    let output = warden()
        .args(["policy", "explain", "--identity", "agent", "--connection", &app.database, "--json", "--sql"])
        .arg(query)
        .args(["--sql", "PREPARE wipe AS DELETE FROM t WHERE id > 0", "--sql", "EXECUTE wipe"])
        .arg("--config")
        .arg(&gateway.config_path)
        .output_in_place()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let explanation: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(explanation["connect"]["allowed"], true);
    assert_eq!(explanation["read_only"], false);
    let first = &explanation["queries"][0];
    assert_eq!(first["allowed"], false);
    let statements = first["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 2);
    assert_eq!(statements[0]["sql"], "SELECT * FROM t /* DELETE */");
    assert_eq!(statements[0]["class"], "read");
    assert_eq!(statements[0]["allowed"], true);
    assert_eq!(statements[0]["policies"], serde_json::json!(["agents-all"]));
    assert_eq!(statements[1]["sql"], "DELETE FROM t");
    assert_eq!((&statements[1]["class"], &statements[1]["kind"]), (&"write".into(), &"delete".into()));
    assert_eq!(statements[1]["has_where"], false);
    assert_eq!(statements[1]["tables"], serde_json::json!(["public.t"]));
    assert_eq!(statements[1]["allowed"], false);
    assert_eq!(statements[1]["policies"], serde_json::json!(["no-unbounded-deletes"]));
    // EXECUTE is judged as what was prepared.
    let execute = &explanation["queries"][2]["statements"][0];
    assert_eq!((&execute["class"], &execute["allowed"]), (&"write".into(), &true.into()));

    // The gateway refuses the same query with the message explain predicted.
    let client = gateway.connect().await;
    client.batch_execute("CREATE TABLE t (id int)").await.expect("setup");
    let error = client.simple_query(query).await.expect_err("refused");
    assert_eq!(crate::sqlstate(&error), first["error"]["code"].as_str().unwrap());
    assert_eq!(crate::server_message(&error), first["error"]["message"].as_str().unwrap());

    // Text output, for a reader: read-only session, and the refusal reason.
    let output = warden()
        .args([
            "policy",
            "explain",
            "--identity",
            "reader",
            "--connection",
            &app.database,
            "--sql",
            "DELETE FROM t WHERE id = 1",
        ])
        .arg("--config")
        .arg(&gateway.config_path)
        .output_in_place()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("session: read-only"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "denied write on table {0}/public.t: no policy permits write on table {0}/public.t",
            app.database
        )),
        "{stdout}"
    );
    // An identity the config does not name needs its groups.
    let output = warden()
        .args(["policy", "explain", "--identity", "nobody", "--connection", &app.database, "--sql", "SELECT 1"])
        .arg("--config")
        .arg(&gateway.config_path)
        .output_in_place()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("pass --groups"));
}

/// `warden check` accepts a masking config, and points at the file, line and field of a broken one.
#[test]
fn check_validates_masking_config() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("warden.toml");
    let base = "[listen]\npostgres = \"127.0.0.1:0\"\n\n[[connection]]\nname = \"shop\"\nkind = \"postgres\"\n\
         address = \"127.0.0.1:5432\"\ndatabase = \"shop\"\nuser = \"app\"\n\n[connection.masking]\ndetect = [\"all\"]\n";
    std::fs::write(&path, format!("{base}[[connection.masking.column]]\nmatch = \"public.customers.full_name\"\n"))
        .unwrap();
    let output = warden().arg("check").arg("--config").arg(&path).output_in_place().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::write(
        &path,
        format!("{base}[[connection.masking.detector]]\nname = \"employee_id\"\npattern = \"EMP-(\"\n"),
    )
    .unwrap();
    let output = warden().arg("check").arg("--config").arg(&path).output_in_place().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warden.toml:15") && stderr.contains("connection[0].masking.detector[0].pattern"),
        "{stderr}"
    );
}

/// The README's main job, `warden demo`, walked through as its printout says: psql with the printed line (PII
/// masked, a refused delete naming its policy), the LLM through warden with the same key (the answer masked), the
/// sessions listed as the demo DBA, then Ctrl-C removes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_as_its_printout_says_and_cleans_up_on_ctrl_c() {
    let scratch = tempfile::tempdir().unwrap();
    let stderr_path = scratch.path().join("demo.stderr");
    let mut demo = warden()
        .args(["demo", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let mut stdout = BufReader::new(demo.stdout.take().unwrap());
    let mut printout = String::new();
    while !printout.contains("Press Ctrl-C") {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the demo exited:\n{printout}\n{}", stderr());
        printout.push_str(&line);
    }
    let after = |marker: &str| -> String {
        let start = printout.find(marker).unwrap_or_else(|| panic!("no {marker:?} in:\n{printout}")) + marker.len();
        printout[start..].split(|c: char| c.is_whitespace() || c == '"').next().unwrap().to_string()
    };
    let api_key = after("PGPASSWORD=");
    let port = after(" port=");
    let http = after("OPENAI_BASE_URL=");
    let dba_token = after("export WARDEN_TOKEN=");
    let config = after("sessions list --config ");
    assert!(std::path::Path::new(&config).exists(), "{config}");

    let psql = |sql: &str| {
        Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &port])
            .args(["-U", "demo", "-d", "shop", "-c", sql])
            .env("PGPASSWORD", &api_key)
            .env("PGSSLMODE", "disable")
            .output_in_place()
            .unwrap()
    };
    let select = psql("SELECT email, ssn FROM customers ORDER BY id LIMIT 1");
    let rows = String::from_utf8_lossy(&select.stdout);
    assert!(select.status.success(), "{}", String::from_utf8_lossy(&select.stderr));
    assert!(rows.contains("@example.com") && !rows.contains("ada@") && !rows.contains("372-11-4420"), "{rows}");
    let delete = psql("DELETE FROM orders");
    assert!(!delete.status.success());
    let refusal = String::from_utf8_lossy(&delete.stderr);
    assert!(refusal.contains("no-delete-without-where"), "{refusal}");

    let answer = Command::new("curl")
        .args(["-s", "--fail-with-body", &format!("{http}/chat/completions")])
        .args(["-H", &format!("Authorization: Bearer {api_key}"), "-H", "content-type: application/json"])
        .args(["-d", r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}"#])
        .output_in_place()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer.stdout);
    assert!(answer.contains("***@example.com") && !answer.contains("jane.roe@"), "{answer}");

    // As the demo DBA, through the admin API: every identity's sessions, the agent's among them (its psql sessions
    // have ended, so their records are on their way to the store).
    let list = || {
        warden()
            .args(["sessions", "list", "--config", &config])
            .env("WARDEN_TOKEN", &dba_token)
            .env_remove("WARDEN_CONFIG")
            .output_in_place()
            .unwrap()
    };
    wait_until(10, "the agent's three sessions in the DBA's list", || {
        let listed = list();
        async move { String::from_utf8_lossy(&listed.stdout).matches("demo-agent").count() >= 3 }
    })
    .await;
    let listed = list();
    let (sessions, notes) = (String::from_utf8_lossy(&listed.stdout), String::from_utf8_lossy(&listed.stderr));
    assert!(listed.status.success(), "{notes}");
    assert!(sessions.matches("demo-agent").count() >= 3, "psql twice and the LLM:\n{sessions}");
    assert!(!notes.contains("only identity"), "{notes}");

    Command::new("kill").arg("-INT").arg(demo.id().to_string()).status().unwrap();
    let status = demo.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", stderr());
    assert!(stderr().contains("Removed the demo database"), "{}", stderr());
    let directory = std::path::Path::new(&config).parent().unwrap();
    assert!(!directory.exists(), "{} is still there", directory.display());
}
