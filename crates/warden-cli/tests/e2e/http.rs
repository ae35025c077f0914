//! The HTTP front end end to end: the official `openai` and `anthropic` Python SDKs, pointed at warden with a
//! warden API key, reach the test kit's LLM stand-in (which plants an email address, a phone number and a card
//! number in every answer, split across SSE deltas) through warden, which injects the upstream key, decides per
//! request, masks answers as they stream, enforces the model allow-list, guardrails and budgets, and records
//! every request.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use warden_testkit::llm::{LlmStandIn, LlmStandInOptions};
use warden_testkit::{AppDatabase, TempPostgres, TestGateway};

/// Pieces of the stand-in's planted values: none may reach a client.
const PII_FRAGMENTS: [&str; 8] =
    ["jane.roe", "roe@", "example.com", "415 555", "555 0100", "4111 1111", "1111 1111 1111", "+1 415"];

const POLICIES: &str = r#"
@id("agents-call-llms")
permit (principal in Warden::Group::"agents",
        action in [Warden::Action::"http:POST", Warden::Action::"http:GET"],
        resource);

@id("no-big-model-for-readers")
forbid (principal in Warden::Group::"readers", action, resource)
when { context has http && context.http has model && context.http.model == "gpt-4o" };

@id("readers-call-llms")
permit (principal in Warden::Group::"readers", action == Warden::Action::"http:POST", resource);
"#;

pub struct LlmFixture {
    pub gateway: TestGateway,
    pub standin: LlmStandIn,
    /// `http://<warden's HTTP listener>`.
    pub base: String,
    _secrets: tempfile::TempDir,
    _app: AppDatabase,
    _postgres: TempPostgres,
}

/// A gateway with an HTTP listener and three connections to one stand-in: `openai` (api openai, masking every
/// detector, models gpt-4o-mini and gpt-4o), `claude` (api anthropic, masking) and `plain` (no api, masking).
/// `extra` is appended to the `openai` connection's table.
pub async fn llm_fixture(extra: &str) -> LlmFixture {
    let standin = LlmStandIn::start(LlmStandInOptions::default()).await;
    let options = LlmStandInOptions::default();
    let secrets = tempfile::tempdir().expect("secrets dir");
    let openai_key = secrets.path().join("openai.key");
    let anthropic_key = secrets.path().join("anthropic.key");
    std::fs::write(&openai_key, &options.openai_key).expect("write key");
    std::fs::write(&anthropic_key, &options.anthropic_key).expect("write key");
    let (postgres, app) = crate::start_postgres(Default::default()).await;
    let masking = r#"
[connection.masking]
detect = ["all"]
strategies = { email = "redact", payment_card = "redact" }
"#;
    let connections = format!(
        r#"
[[connection]]
name = "openai"
kind = "http"
url = "{url}"
api = "openai"
auth = {{ bearer = {{ file = "{openai_key}" }} }}
models = ["gpt-4o-mini", "gpt-4o"]
{extra}
{masking}
[[connection]]
name = "claude"
kind = "http"
url = "{url}"
api = "anthropic"
auth = {{ header = "x-api-key", value = {{ file = "{anthropic_key}" }} }}
{masking}
[[connection]]
name = "plain"
kind = "http"
url = "{url}"
auth = {{ bearer = {{ file = "{openai_key}" }} }}
{masking}"#,
        url = standin.base_url(),
        openai_key = openai_key.display(),
        anthropic_key = anthropic_key.display(),
    );
    let gateway = TestGateway::builder(&postgres, &app)
        .listen_extra("http = \"127.0.0.1:0\"")
        .policies(POLICIES)
        .config_extra(&connections)
        .start()
        .await;
    let base = format!("http://{}", gateway.gateway().http_address().expect("HTTP listener"));
    LlmFixture { gateway, standin, base, _secrets: secrets, _app: app, _postgres: postgres }
}

/// Runs a scenario of `tests/python/llm_client.py` with the real SDKs; its JSON output.
pub async fn sdk(scenario: &str, base: &str, key: &str, args: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/llm_client.py");
    let mut command = Command::new("python3");
    command.arg(script).arg(scenario).arg(base).arg(key).args(args);
    let output = tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "llm_client.py {scenario} failed:\n{stdout}\n{stderr}");
    let value: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("llm_client.py {scenario} printed no JSON ({error}):\n{stdout}\n{stderr}"));
    assert!(value.get("unexpected_refusal").is_none(), "{scenario}: warden refused: {value}");
    value
}

fn assert_no_pii(what: &str, text: &str) {
    for fragment in PII_FRAGMENTS {
        assert!(!text.contains(fragment), "{what} leaks {fragment:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_gets_masked_answers_json_and_streamed_with_valid_frames() {
    let fixture = llm_fixture("").await;
    let key = fixture.gateway.api_key.clone();
    let seen = sdk("openai-chat", &format!("{}/openai", fixture.base), &key, &[]).await;
    let text = seen["text"].as_str().expect("text");
    assert!(text.starts_with("Sure. Write to Jane Roe at [EMAIL] or call [PHONE]"), "{text}");
    assert_no_pii("the JSON answer", text);
    // The stream is masked to exactly the same text, though every planted value arrived split across deltas.
    assert_eq!(seen["stream_text"], seen["text"], "{seen}");
    assert_no_pii("the streamed answer", &seen.to_string());
    assert!(seen["stream_deltas"].as_array().expect("deltas").len() > 3, "still streamed: {seen}");
    assert_eq!(seen["raw_status"], 200);
    assert_eq!(seen["frame_problems"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["usage"]["completion_tokens"].as_u64().map(|tokens| tokens > 0), Some(true), "{seen}");
    // The stand-in saw warden's key, never the caller's.
    let requests = fixture.standin.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.header("authorization"), Some("Bearer sk-upstream-openai-test"));
        assert!(!format!("{:?}", request.headers).contains(&key), "the caller's key went upstream");
    }
}
