//! Usage accounting end to end: the official SDKs call the LLM stand-in through warden as two identities, and
//! `warden usage` (reading the state store offline) shows each one's requests and tokens exactly; a token budget
//! is counted in the store, so it still holds after the gateway restarts.

use crate::OutputInPlace;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::http::{assert_no_pii, llm_fixture, sdk, sdk_batch, LlmFixture};

/// `warden usage --config <config> <args>`: its standard output, which must be a success.
fn warden_usage(config: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("usage")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("WARDEN_CONFIG")
        .output_in_place()
        .expect("run warden usage");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "warden usage {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn usage_json(config: &Path, args: &[&str]) -> Value {
    let stdout = warden_usage(config, &[&["--json"], args].concat());
    serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("warden usage --json printed no JSON ({error}):\n{stdout}"))
}

/// Requests and tokens of `requests` calls that each used 1 prompt token and 20 answer tokens.
fn calls(requests: u64) -> Value {
    json!({"requests": requests, "input_tokens": requests, "output_tokens": 20 * requests, "total_tokens": 21 * requests})
}

/// `calls(requests)` with the group's keys.
fn group(keys: Value, requests: u64) -> Value {
    let mut group = keys;
    group.as_object_mut().expect("keys").extend(calls(requests).as_object().expect("sums").clone());
    group
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_usage_shows_each_identitys_requests_and_tokens() {
    let fixture = llm_fixture("").await;
    let (openai, claude) = (format!("{}/openai", fixture.base), format!("{}/claude", fixture.base));
    let (agent, reader) = (fixture.gateway.api_key.clone(), fixture.gateway.reader_key.clone());
    // Each call uses 21 tokens: a one-word prompt, a 20-word answer. A refused request used nothing and is not
    // counted.
    let hello: &[&str] = &["Hello"];
    let seen = sdk_batch(&[
        ("openai-prompt", &openai, &agent, hello),
        ("openai-prompt", &openai, &agent, hello),
        ("anthropic-prompt", &claude, &agent, hello),
        ("openai-prompt", &openai, &reader, hello),
        ("openai-model", &openai, &reader, &["gpt-4o"]),
    ])
    .await;
    for answer in &seen[..4] {
        assert_eq!(answer["refused"], Value::Null, "{answer}");
    }
    assert_eq!(seen[4]["refused"]["status"], 403, "{}", seen[4]);
    fixture.gateway.flush().await;
    let config = fixture.gateway.config_path.clone();

    let report = usage_json(&config, &[]);
    assert_eq!(report["by"], json!(["identity"]), "{report:#}");
    assert_eq!(report["since"], Value::Null, "{report:#}");
    assert_eq!(
        report["groups"],
        json!([group(json!({"identity": "agent"}), 3), group(json!({"identity": "reader"}), 1)]),
        "{report:#}"
    );
    assert_eq!(report["total"], calls(4), "{report:#}");

    // One identity, by connection and model.
    let report = usage_json(&config, &["--identity", "agent", "--by", "connection,model"]);
    assert_eq!(
        report["groups"],
        json!([
            group(json!({"connection": "claude", "model": "claude-haiku-4-5"}), 1),
            group(json!({"connection": "openai", "model": "gpt-4o-mini"}), 2),
        ]),
        "{report:#}"
    );
    // API keys carry no run or node label.
    let report = usage_json(&config, &["--connection", "openai", "--by", "run", "--by", "node"]);
    assert_eq!(report["groups"], json!([group(json!({"run": null, "node": null}), 3)]), "{report:#}");
    // A period: everything was in the last hour, nothing before 2020.
    assert_eq!(usage_json(&config, &["--since", "1h"])["total"], calls(4));
    let before = usage_json(&config, &["--until", "2020-01-01T00:00:00Z"]);
    assert_eq!((&before["groups"], &before["total"]), (&json!([]), &calls(0)), "{before:#}");

    // The table: a line per group and the total.
    let table = warden_usage(&config, &["--since", "24h"]);
    let lines: Vec<Vec<&str>> = table.lines().map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(
        lines,
        [
            vec!["IDENTITY", "REQUESTS", "INPUT", "OUTPUT", "TOTAL"],
            vec!["agent", "3", "3", "60", "63"],
            vec!["reader", "1", "1", "20", "21"],
            vec!["total", "4", "4", "80", "84"],
        ],
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_budget_survives_a_gateway_restart() {
    // Each call uses 21 tokens: the third crosses 50, the fourth is refused. (A period no test run straddles the end
    // of: budget windows are aligned to the Unix epoch.)
    let mut fixture = llm_fixture("[connection.limits]\nbudget = { tokens = 50, per = \"3650d\" }\n").await;
    let agent = fixture.gateway.api_key.clone();
    let seen = sdk("openai-until-refused", &format!("{}/openai", fixture.base), &agent, &["10"]).await;
    assert_eq!(seen["completed"], 3, "{seen}");
    assert_eq!(seen["refused"]["status"], 429, "{seen}");

    // The gateway stops; a new one starts on the same config and state store, with nothing in memory.
    fixture.gateway.stop().await;
    let config = warden_config::Config::load(&fixture.gateway.config_path, &|_: &str| None).expect("config");
    let gateway = warden_gateway::Gateway::start(config).await.expect("the gateway starts again");
    let openai = format!("http://{}/openai", gateway.http_address().expect("HTTP listener"));
    let seen = sdk("openai-until-refused", &openai, &agent, &["10"]).await;
    assert_eq!(seen["completed"], 0, "refused from the first request after the restart: {seen}");
    assert_eq!(seen["refused"]["status"], 429, "{seen}");
    let message = seen["refused"]["message"].as_str().expect("message");
    assert!(message.contains("used 63 of its 50 tokens per 3650d"), "{seen}");
    // Another identity has its own budget.
    let seen = sdk("openai-until-refused", &openai, &fixture.gateway.reader_key, &["1"]).await;
    assert_eq!(seen["completed"], 1, "{seen}");
    gateway.shutdown().await;

    let report = usage_json(&fixture.gateway.config_path, &[]);
    assert_eq!(
        report["groups"],
        json!([group(json!({"identity": "agent"}), 3), group(json!({"identity": "reader"}), 1)]),
        "{report:#}"
    );
}

/// A batch's requests run after it is created and report their tokens only in its results. Read through warden (the
/// anthropic SDK follows the `results_url` warden moved under itself), the results' tokens are counted, once per batch
/// however often they are read, and as the batch's requests; the audit log names the batch on each read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batchs_results_count_its_tokens_once() {
    let fixture = llm_fixture("").await;
    let claude = format!("{}/claude", fixture.base);
    let agent = fixture.gateway.api_key.clone();
    // Two requests: prompts of 1 and 5 words, each answered with the stand-in's 20 words.
    let created =
        sdk("anthropic-batch", &claude, &agent, &["claude-haiku-4-5|Hello,claude-haiku-4-5|one two three four five"])
            .await;
    let id = created["id"].as_str().unwrap_or_else(|| panic!("a batch: {created}")).to_string();
    let reads = read_three_times("anthropic-batch-results", &claude, &agent, &id).await;
    for results in &reads {
        assert_eq!(results["results"].as_array().map(Vec::len), Some(2), "{results}");
    }
    let key = format!("anthropic:{id}");
    assert_counted_once(&fixture, "claude-haiku-4-5", &key, |path| path.ends_with("/results")).await;
}

/// An OpenAI batch's requests report their tokens only in its output file. Read through warden (the openai SDK
/// retrieves the batch, then the file's content), the file's tokens are counted, once per batch however often it is
/// read, and as the batch's requests; the audit log names the batch's output file on each read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_batchs_output_counts_its_tokens_once() {
    let fixture = llm_fixture("").await;
    let openai = format!("{}/openai", fixture.base);
    let agent = fixture.gateway.api_key.clone();
    // Two requests: prompts of 1 and 5 words, each answered with the stand-in's 20 words.
    let files = tempfile::tempdir().expect("temp dir");
    let input = files.path().join("batch.jsonl");
    let lines: Vec<String> = ["Hello", "one two three four five"]
        .iter()
        .enumerate()
        .map(|(index, prompt)| {
            json!({"custom_id": format!("r{index}"), "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}})
            .to_string()
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").expect("write the batch's input");
    let created = sdk("openai-batch-run", &openai, &agent, &[&input.display().to_string()]).await;
    let id = created["id"].as_str().unwrap_or_else(|| panic!("a batch: {created}")).to_string();
    let reads = read_three_times("openai-batch-output", &openai, &agent, &id).await;
    let file = reads[0]["output_file_id"].as_str().unwrap_or_else(|| panic!("an output file: {reads:?}")).to_string();
    for output in &reads {
        assert_eq!(output["status"], "completed", "{output}");
        assert_eq!(output["output_file_id"], file.as_str(), "{output}");
        assert_eq!(output["lines"].as_array().map(Vec::len), Some(2), "{output}");
        assert_no_pii("the batch's output", &output.to_string());
    }
    let is_read = |path: &str| path.contains("/files/") && path.ends_with("/content");
    assert_counted_once(&fixture, "gpt-4o-mini", &format!("openai:{file}"), is_read).await;
}

/// Batch `id`'s results read three times through `scenario` of the Python client, in one interpreter.
async fn read_three_times(scenario: &str, base: &str, key: &str, id: &str) -> Vec<Value> {
    let read: &[&str] = &[id];
    sdk_batch(&[(scenario, base, key, read), (scenario, base, key, read), (scenario, base, key, read)]).await
}

/// After three reads of one batch's results (the requests whose path `is_read`), each of its two requests reporting
/// prompts of 1 and 5 words and answers of 20: `warden usage` counts the batch once, as two requests of `model`, and
/// each read's audit record names batch `key` with what the results reported.
async fn assert_counted_once(fixture: &LlmFixture, model: &str, key: &str, is_read: impl Fn(&str) -> bool) {
    fixture.gateway.flush().await;
    let report = usage_json(&fixture.gateway.config_path, &["--by", "identity,model"]);
    let batch = json!({"identity": "agent", "model": model,
        "requests": 2, "input_tokens": 6, "output_tokens": 40, "total_tokens": 46});
    assert_eq!(report["groups"], json!([batch]), "counted once, for the first read: {report:#}");

    let (events, _) = fixture.gateway.store().audit_log(None).await.expect("audit log");
    let reads: Vec<&Value> = events
        .iter()
        .filter_map(|sealed| sealed.event.body.get("http"))
        .filter(|http| http["path"].as_str().is_some_and(&is_read))
        .collect();
    assert_eq!(reads.len(), 3, "{reads:#?}");
    for http in reads {
        assert_eq!(http["batch"], json!({"key": key, "requests": 2, "unread": 0}), "{http}");
        assert_eq!(http["usage"], json!({"input_tokens": 6, "output_tokens": 40}), "what the results report: {http}");
        assert_eq!(http["model"], model, "{http}");
    }
}
