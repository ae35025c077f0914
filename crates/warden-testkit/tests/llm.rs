//! The LLM provider stand-in against a plain hyper client (SSE framing, split PII, token counts, errors, the
//! per-request overrides) and against the providers' own Python SDKs (`llm_sdk_check.py`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use warden_testkit::llm::{LlmStandIn, LlmStandInOptions, DEFAULT_ANSWER};

const OPENAI_KEY: &str = "sk-upstream-openai-test";
const ANTHROPIC_KEY: &str = "sk-ant-upstream-test";
const SENSITIVE: [&str; 3] = ["jane.roe@example.com", "+1 415 555 0100", "4111 1111 1111 1111"];

/// What came back: the status, the headers and the whole body, or the error that ended the body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Vec<u8>, String>,
    /// The body's bytes received before it ended, whole or not.
    partial: Vec<u8>,
    /// From the response head to the end of the body.
    body_time: Duration,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8(self.body.clone().expect("a whole body")).expect("a UTF-8 body")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text()).unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text()))
    }
}

async fn send(address: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let stream = TcpStream::connect(address).await.expect("connect to the stand-in");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("an HTTP/1.1 handshake");
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path).header("host", address.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_string()))).expect("a valid request");
    let response = sender.send_request(request).await.expect("an answer");
    let start = Instant::now();
    let (head, mut body) = response.into_parts();
    let mut partial = Vec::new();
    let ended = loop {
        match body.frame().await {
            None => break Ok(()),
            Some(Ok(frame)) => partial.extend_from_slice(frame.data_ref().map_or(&[][..], |data| &data[..])),
            Some(Err(error)) => break Err(error.to_string()),
        }
    };
    let body = ended.map(|()| partial.clone());
    Answer { status: head.status, headers: head.headers, body, partial, body_time: start.elapsed() }
}

async fn openai(standin: &LlmStandIn, path: &str, body: &Value) -> Answer {
    openai_with(standin, path, &[], body).await
}

async fn openai_with(standin: &LlmStandIn, path: &str, extra: &[(&str, &str)], body: &Value) -> Answer {
    let authorization = format!("Bearer {OPENAI_KEY}");
    let mut headers = vec![("authorization", authorization.as_str()), ("content-type", "application/json")];
    headers.extend_from_slice(extra);
    send(standin.address(), "POST", path, &headers, &body.to_string()).await
}

async fn anthropic(standin: &LlmStandIn, body: &Value) -> Answer {
    anthropic_with(standin, &[], body).await
}

async fn anthropic_with(standin: &LlmStandIn, extra: &[(&str, &str)], body: &Value) -> Answer {
    let mut headers =
        vec![("x-api-key", ANTHROPIC_KEY), ("anthropic-version", "2023-06-01"), ("content-type", "application/json")];
    headers.extend_from_slice(extra);
    send(standin.address(), "POST", "/v1/messages", &headers, &body.to_string()).await
}

/// One SSE event: its `event:` name, if any, and its `data:`.
#[derive(Debug)]
struct Event {
    name: Option<String>,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|error| panic!("event data is not JSON ({error}): {self:?}"))
    }
}

/// Splits a whole SSE body into its events, checking each is `[event: NAME\n]data: ONE LINE\n\n`.
fn events(answer: &Answer) -> Vec<Event> {
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.headers["content-type"], "text/event-stream; charset=utf-8");
    let text = answer.text();
    assert!(text.ends_with("\n\n"), "the stream ends mid-event: {text:?}");
    text.trim_end_matches('\n')
        .split("\n\n")
        .map(|frame| {
            let lines: Vec<&str> = frame.split('\n').collect();
            let (name, data) = match lines.as_slice() {
                [data] => (None, *data),
                [name, data] => (Some(name.strip_prefix("event: ").expect("an event line").to_string()), *data),
                _ => panic!("not one SSE event: {frame:?}"),
            };
            Event { name, data: data.strip_prefix("data: ").expect("a data line").to_string() }
        })
        .collect()
}

fn assert_split(deltas: &[String]) {
    assert_eq!(deltas.concat(), DEFAULT_ANSWER);
    assert!(deltas.len() > 10, "{deltas:?}");
    for value in SENSITIVE {
        assert!(deltas.iter().all(|delta| !delta.contains(value)), "{value:?} arrived in one delta: {deltas:?}");
    }
    // About 6 bytes each: at least 6 but the last, at most 6 plus a character.
    assert!(deltas.iter().all(|delta| delta.len() <= 9), "{deltas:?}");
    assert!(deltas[..deltas.len() - 1].iter().all(|delta| delta.len() >= 6), "{deltas:?}");
}

fn chat(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [
            { "role": "system", "content": "You are terse." },
            { "role": "user", "content": [{ "type": "text", "text": "Who is Jane?" }] },
        ],
    })
}

#[tokio::test]
async fn chat_stream_frames_split_the_sensitive_values() {
    let standin = LlmStandIn::start(LlmStandInOptions::default()).await;
    let mut request = chat(true);
    request["stream_options"] = json!({ "include_usage": true });
    let events = events(&openai(&standin, "/v1/chat/completions", &request).await);

    assert!(events.iter().all(|event| event.name.is_none()));
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Event::json).collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o-mini");
        assert!(chunk["usage"].is_null() || chunk["choices"] == json!([]), "{chunk}");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({ "role": "assistant", "content": "", "refusal": null }));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    // "You are terse." and "Who is Jane?": 6 words; the answer: 20.
    assert_eq!(usage["usage"]["prompt_tokens"], 6);
    assert_eq!(usage["usage"]["completion_tokens"], 20);
    assert_eq!(usage["usage"]["total_tokens"], 26);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let deltas: Vec<String> = chunks[1..chunks.len() - 2]
        .iter()
        .map(|chunk| {
            assert!(chunk["choices"][0]["finish_reason"].is_null());
            chunk["choices"][0]["delta"]["content"].as_str().expect("a content delta").to_string()
        })
        .collect();
    assert_split(&deltas);

    // Without include_usage: no usage member, no usage chunk.
    let events = self::events(&openai(&standin, "/v1/chat/completions", &chat(true)).await);
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Event::json).collect();
    assert!(chunks.iter().all(|chunk| chunk.get("usage").is_none() && chunk["choices"] != json!([])));
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn anthropic_stream_events_in_order() {
    let standin = LlmStandIn::start(LlmStandInOptions::default()).await;
    let request = json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 1024,
        "stream": true,
        "system": [{ "type": "text", "text": "Be terse." }],
        "messages": [{ "role": "user", "content": "Who is Jane?" }],
    });
    let events = events(&anthropic(&standin, &request).await);
    let names: Vec<&str> = events.iter().map(|event| event.name.as_deref().expect("an event name")).collect();
    for event in &events {
        assert_eq!(event.json()["type"], event.name.as_deref().unwrap());
    }
    let deltas = names.iter().filter(|name| **name == "content_block_delta").count();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);

    let start = events[0].json();
    assert!(start["message"]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["message"]["content"], json!([]));
    assert_eq!(start["message"]["usage"]["input_tokens"], 5);
    let texts: Vec<String> = events[3..3 + deltas]
        .iter()
        .map(|event| {
            let delta = event.json();
            assert_eq!(delta["delta"]["type"], "text_delta");
            delta["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_split(&texts);
    let message_delta = events[events.len() - 2].json();
    assert_eq!(message_delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(message_delta["usage"]["output_tokens"], 20);
}

#[tokio::test]
async fn responses_stream_numbers_its_events() {
    let standin = LlmStandIn::start(LlmStandInOptions::default()).await;
    let request = json!({ "model": "gpt-4o", "input": "Who is Jane?", "instructions": "Be terse.", "stream": true });
    let events = events(&openai(&standin, "/v1/responses", &request).await);
    let bodies: Vec<Value> = events.iter().map(Event::json).collect();
    for (number, (event, body)) in events.iter().zip(&bodies).enumerate() {
        assert_eq!(body["type"], event.name.as_deref().expect("an event name"));
        assert_eq!(body["sequence_number"], number);
    }
    let names: Vec<&str> = bodies.iter().map(|body| body["type"].as_str().unwrap()).collect();
    assert_eq!(
        names[..4],
        ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    );
    assert_eq!(
        names[names.len() - 4..],
        ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    );
    let deltas: Vec<String> = bodies[4..bodies.len() - 4]
        .iter()
        .map(|body| {
            assert_eq!(body["type"], "response.output_text.delta");
            body["delta"].as_str().unwrap().to_string()
        })
        .collect();
    assert_split(&deltas);
    let completed = &bodies[bodies.len() - 1]["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"][0]["content"][0]["text"], DEFAULT_ANSWER);
    assert_eq!(completed["usage"]["input_tokens"], 5);
    assert_eq!(completed["usage"]["output_tokens"], 20);
    assert_eq!(bodies[0]["response"]["id"], completed["id"]);
}

#[tokio::test]
async fn non_streamed_answers_and_limits() {
    let standin = LlmStandIn::start(LlmStandInOptions::default()).await;
    let answer = openai(&standin, "/v1/chat/completions", &chat(false)).await;
    assert_eq!(answer.headers["content-type"], "application/json");
    assert!(answer.headers.contains_key("x-request-id"));
    let completion = answer.json();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["content"], DEFAULT_ANSWER);
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert_eq!(completion["usage"]["prompt_tokens"], 6);
    assert_eq!(completion["usage"]["completion_tokens"], 20);

    let mut limited = chat(false);
    limited["max_completion_tokens"] = json!(3);
    let completion = openai(&standin, "/v1/chat/completions", &limited).await.json();
    assert_eq!(completion["choices"][0]["message"]["content"], "Sure. Write to");
    assert_eq!(completion["choices"][0]["finish_reason"], "length");
    assert_eq!(completion["usage"]["completion_tokens"], 3);

    let request = json!({ "model": "gpt-4o", "input": [{ "role": "user", "content": "hi" }], "max_output_tokens": 2 });
    let response = openai(&standin, "/v1/responses", &request).await.json();
    assert_eq!(response["status"], "incomplete");
    assert_eq!(response["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(response["output"][0]["content"][0]["text"], "Sure. Write");

    let request =
        json!({ "model": "claude-haiku-4-5", "max_tokens": 4, "messages": [{ "role": "user", "content": "hi" }] });
    let answer = anthropic(&standin, &request).await;
    assert!(answer.headers.contains_key("request-id"));
    let message = answer.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"], json!([{ "type": "text", "text": "Sure. Write to Jane" }]));
    assert_eq!(message["stop_reason"], "max_tokens");
    assert_eq!(message["usage"]["output_tokens"], 4);
    assert_eq!(message["usage"]["input_tokens"], 1);

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let events = events(&anthropic(&standin, &streamed).await);
    let message_delta = events.iter().find(|event| event.name.as_deref() == Some("message_delta")).unwrap().json();
    assert_eq!(message_delta["delta"]["stop_reason"], "max_tokens");
}

#[tokio::test]
async fn errors_in_each_providers_format() {
    let standin = LlmStandIn::start(LlmStandInOptions::default()).await;
    let address = standin.address();

    let wrong =
        send(address, "POST", "/v1/chat/completions", &[("authorization", "Bearer sk-wrong-key-123456")], "{}").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let error = &wrong.json()["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "invalid_api_key");
    assert!(error["param"].is_null());
    assert!(!error["message"].as_str().unwrap().contains("sk-wrong-key-123456"));
    let missing = send(address, "POST", "/v1/responses", &[], "{}").await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.json()["error"]["code"], "invalid_api_key");

    let wrong =
        send(address, "POST", "/v1/messages", &[("x-api-key", "nope"), ("anthropic-version", "2023-06-01")], "{}")
            .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let body = wrong.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(body["request_id"].is_string());
    let bearer = format!("Bearer {ANTHROPIC_KEY}");
    let request = json!({ "model": "claude", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] });
    let as_bearer = send(
        address,
        "POST",
        "/v1/messages",
        &[("authorization", &bearer), ("anthropic-version", "2023-06-01")],
        &request.to_string(),
    )
    .await;
    assert_eq!(as_bearer.status, StatusCode::OK, "{:?}", as_bearer.body);
    let unversioned = send(address, "POST", "/v1/messages", &[("x-api-key", ANTHROPIC_KEY)], "{}").await;
    assert_eq!(unversioned.status, StatusCode::BAD_REQUEST);

    let authorization = format!("Bearer {OPENAI_KEY}");
    let malformed = send(address, "POST", "/v1/chat/completions", &[("authorization", &authorization)], "{nope").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.json()["error"]["type"], "invalid_request_error");
    let headers = [("x-api-key", ANTHROPIC_KEY), ("anthropic-version", "2023-06-01")];
    let malformed = send(address, "POST", "/v1/messages", &headers, "{nope").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.json()["error"]["type"], "invalid_request_error");

    let unlimited = anthropic(&standin, &json!({ "model": "claude", "messages": [] })).await;
    assert_eq!(unlimited.status, StatusCode::BAD_REQUEST);
    assert_eq!(unlimited.json()["error"]["message"], "max_tokens: Field required");
    let no_messages = openai(&standin, "/v1/chat/completions", &json!({ "model": "gpt-4o" })).await;
    assert_eq!(no_messages.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_messages.json()["error"]["param"], "messages");
    let mut options_without_stream = chat(false);
    options_without_stream["stream_options"] = json!({ "include_usage": true });
    let answer = openai(&standin, "/v1/chat/completions", &options_without_stream).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);

    let unknown = send(address, "GET", "/v1/nothing", &[("authorization", &authorization)], "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["error"]["message"], "Invalid URL (GET /v1/nothing)");
    let unknown = send(address, "POST", "/v1/complete", &headers, "{}").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["error"]["type"], "not_found_error");

    let limited = openai_with(&standin, "/v1/chat/completions", &[("x-standin-error", "429")], &chat(false)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.json()["error"]["code"], "rate_limit_exceeded");
    let overloaded = anthropic_with(&standin, &[("x-standin-error", "529")], &json!({})).await;
    assert_eq!(overloaded.status.as_u16(), 529);
    assert_eq!(overloaded.json()["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn overrides_echo_and_recording() {
    let standin = LlmStandIn::start(LlmStandInOptions { answer: "configured".to_string(), ..Default::default() }).await;
    let overridden = openai_with(
        &standin,
        "/v1/chat/completions",
        &[("x-standin-answer", "from the header"), ("x-standin-chunk-bytes", "0")],
        &chat(true),
    )
    .await;
    let chunks: Vec<Value> =
        events(&overridden).iter().filter(|event| event.data != "[DONE]").map(Event::json).collect();
    let contents: Vec<&str> =
        chunks.iter().filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(contents, ["", "from the header"]);

    let echo = json!({ "model": "gpt-4o", "messages": [{ "role": "user", "content": "ECHO: call 555 0100" }] });
    let completion =
        openai_with(&standin, "/v1/chat/completions", &[("x-standin-answer", "ignored")], &echo).await.json();
    assert_eq!(completion["choices"][0]["message"]["content"], "call 555 0100");
    let request = json!({ "model": "claude", "max_tokens": 50, "messages": [{ "role": "user", "content": [{ "type": "text", "text": "ECHO:hi" }] }] });
    assert_eq!(anthropic(&standin, &request).await.json()["content"][0]["text"], "hi");
    let completion = openai(&standin, "/v1/chat/completions", &chat(false)).await.json();
    assert_eq!(completion["choices"][0]["message"]["content"], "configured");

    let requests = standin.wait_for_requests(4).await;
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(requests[0].header("X-Standin-Answer"), Some("from the header"));
    assert!(requests[0].headers.iter().all(|(name, _)| *name == name.to_lowercase()));
    assert_eq!(requests[1].json()["messages"][0]["content"], "ECHO: call 555 0100");
    assert_eq!(requests[2].path, "/v1/messages");
    assert_eq!(requests[2].header("x-api-key"), Some(ANTHROPIC_KEY));
}

#[tokio::test]
async fn abort_after_cuts_the_stream_mid_body() {
    let standin = LlmStandIn::start(LlmStandInOptions::default()).await;
    let answer = openai_with(&standin, "/v1/chat/completions", &[("x-standin-abort-after", "3")], &chat(true)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.is_err(), "the body ended cleanly: {:?}", answer.body);
    // What came before the cut arrived: the role chunk and three deltas.
    let received = String::from_utf8(answer.partial.clone()).unwrap();
    assert_eq!(received.matches("data: ").count(), 4, "{received}");
    assert!(received.ends_with("\n\n"), "{received}");
}

#[tokio::test]
async fn delays_pace_the_stream() {
    let options = LlmStandInOptions {
        first_delay: Duration::from_millis(150),
        chunk_delay: Duration::from_millis(10),
        ..Default::default()
    };
    let standin = LlmStandIn::start(options).await;
    let answer = openai(&standin, "/v1/chat/completions", &chat(true)).await;
    let deltas = events(&answer).len() - 3;
    let least = Duration::from_millis(150) + Duration::from_millis(10) * (deltas as u32 - 1);
    assert!(answer.body_time >= least, "the stream took {:?}, less than {least:?}", answer.body_time);
    let quick = openai_with(
        &standin,
        "/v1/chat/completions",
        &[("x-standin-first-delay-ms", "0"), ("x-standin-chunk-delay-ms", "0")],
        &chat(true),
    )
    .await;
    assert!(quick.body.is_ok());
}

#[tokio::test]
async fn embeddings_in_both_encodings_and_the_model_list() {
    let standin = LlmStandIn::start(LlmStandInOptions::default()).await;
    let request = json!({ "model": "text-embedding-3-small", "input": ["one two", "three"], "dimensions": 4 });
    let floats = openai(&standin, "/v1/embeddings", &request).await.json();
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["usage"], json!({ "prompt_tokens": 3, "total_tokens": 3 }));
    let mut request = request;
    request["encoding_format"] = json!("base64");
    let encoded = openai(&standin, "/v1/embeddings", &request).await.json();
    for index in 0..2 {
        let bytes = STANDARD.decode(encoded["data"][index]["embedding"].as_str().unwrap()).unwrap();
        let decoded: Vec<f64> =
            bytes.chunks(4).map(|four| f64::from(f32::from_le_bytes(four.try_into().unwrap()))).collect();
        let floats: Vec<f64> = floats["data"][index]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_f64().unwrap())
            .collect();
        assert_eq!(decoded.len(), 4);
        assert!(decoded.iter().zip(&floats).all(|(a, b)| (a - b).abs() < 1e-6), "{decoded:?} {floats:?}");
        assert_eq!(encoded["data"][index]["index"], index);
    }

    let authorization = format!("Bearer {OPENAI_KEY}");
    let list = send(standin.address(), "GET", "/v1/models", &[("authorization", &authorization)], "").await.json();
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|model| model["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]);
}

/// The providers' own SDKs parse every answer, with strict response validation (every required field present).
#[tokio::test]
async fn the_python_sdks_parse_everything() {
    let standin = LlmStandIn::start(LlmStandInOptions::default()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/llm_sdk_check.py");
    let output = match tokio::process::Command::new("python3").arg(script).arg(standin.base_url()).output().await {
        Ok(output) => output,
        Err(error) => panic!("cannot run python3 ({error}): install Python 3, then pip install openai anthropic"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(3) {
        panic!("the openai and anthropic Python SDKs are missing: pip install openai anthropic\n{stderr}");
    }
    assert!(output.status.success(), "llm_sdk_check.py failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("all SDK checks passed"), "{stdout}");
}
