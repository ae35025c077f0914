//! Endpoints by method and path; what each kind of request asks, its prompt texts, and the shapes refused.

use super::*;

#[test]
fn endpoints_by_method_and_path() {
    let cases = [
        (Api::OpenAi, "POST", "/v1/chat/completions", Endpoint::ChatCompletions),
        (Api::OpenAi, "post", "/chat/completions/", Endpoint::ChatCompletions),
        (Api::OpenAi, "POST", "/v1/chat/completions?api-version=1", Endpoint::ChatCompletions),
        (Api::OpenAi, "GET", "/v1/chat/completions", Endpoint::Other),
        (Api::OpenAi, "POST", "/v1/responses", Endpoint::Responses),
        (Api::OpenAi, "GET", "/v1/responses/resp_1", Endpoint::Other),
        (Api::OpenAi, "POST", "/v1/embeddings", Endpoint::Embeddings),
        (Api::OpenAi, "GET", "/v1/models", Endpoint::Models),
        (Api::OpenAi, "GET", "/v1/models/gpt-4o", Endpoint::Models),
        (Api::OpenAi, "POST", "/v1/messages", Endpoint::Other),
        (Api::OpenAi, "POST", "/v2/chat/completions", Endpoint::Other),
        (Api::OpenAi, "POST", "/v1x/chat/completions", Endpoint::Other),
        (Api::Anthropic, "POST", "/v1/messages", Endpoint::Messages),
        (Api::Anthropic, "POST", "/v1/messages/count_tokens", Endpoint::CountTokens),
        (Api::Anthropic, "POST", "/v1/messages/batches", Endpoint::MessageBatches),
        (Api::Anthropic, "POST", "/v1/messages/batches?beta=true", Endpoint::MessageBatches),
        (Api::Anthropic, "GET", "/v1/messages/batches/msgbatch_1/results", Endpoint::Other),
        (Api::OpenAi, "POST", "/v1/responses/input_tokens", Endpoint::InputTokens),
        (Api::OpenAi, "POST", "/v1/messages/count_tokens", Endpoint::Other),
        (Api::Anthropic, "POST", "/v1/responses/input_tokens", Endpoint::Other),
        (Api::Anthropic, "POST", "/v1/chat/completions", Endpoint::Other),
        (Api::Anthropic, "GET", "/v1/models", Endpoint::Models),
    ];
    for (api, method, path, expected) in cases {
        assert_eq!(Endpoint::of(api, method, path), expected, "{method} {path}");
    }
    assert_eq!("anthropic".parse(), Ok(Api::Anthropic));
    assert!("gemini".parse::<Api>().is_err());
}

fn inspect(api: Api, endpoint: Endpoint, body: &str) -> LlmRequest {
    LlmRequest::inspect(api, endpoint, body.as_bytes()).unwrap_or_else(|error| panic!("{error}: {body}"))
}

fn refused(api: Api, endpoint: Endpoint, body: &str) -> String {
    let error = LlmRequest::inspect(api, endpoint, body.as_bytes()).expect_err(body);
    assert_eq!(error.fault(), crate::Fault::Client);
    error.to_string()
}

#[test]
fn chat_completions() {
    let request = inspect(
        Api::OpenAi,
        Endpoint::ChatCompletions,
        r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false},"max_tokens":900,
            "max_completion_tokens":500,"messages":[
            {"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image_url","image_url":{"url":"x"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",
             "function":{"name":"lookup","arguments":"{\"email\":\"jane@example.com\"}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"found"},
            {"role":"assistant","content":[{"type":"refusal","refusal":"No."}]}]}"#,
    );
    assert_eq!(request.model.as_deref(), Some("gpt-4o"));
    assert!(request.stream);
    assert_eq!(request.max_tokens, Some(500));
    assert_eq!(request.include_usage, Some(false));
    assert_eq!(request.prompts, ["Be brief.", "Hi", "{\"email\":\"jane@example.com\"}", "found", "No."]);
    assert!(!request.opaque_input);

    let request = inspect(Api::OpenAi, Endpoint::ChatCompletions, r#"{"messages":[],"max_tokens":null,"stream":null}"#);
    assert_eq!((request.model, request.stream, request.max_tokens, request.include_usage), (None, false, None, None));
}

#[test]
fn responses() {
    let request = inspect(
        Api::OpenAi,
        Endpoint::Responses,
        r#"{"model":"gpt-4.1","instructions":"Answer in French.","max_output_tokens":64,"stream":true,"input":[
            {"role":"user","content":"Bonjour"},
            {"type":"message","role":"user","content":[{"type":"input_text","text":"Mon email"},
             {"type":"input_image","image_url":"data:..."}]},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Oui","annotations":[]}]},
            {"type":"function_call","call_id":"c","name":"f","arguments":"{\"q\":1}"},
            {"type":"function_call_output","call_id":"c","output":"résultat"},
            {"type":"reasoning","id":"rs_1","summary":[]},
            {"type":"item_reference","id":"msg_1"}],
            "prompt":{"id":"pmpt_1","variables":{"city":"Paris","note":{"type":"input_text","text":"secret"}}}}"#,
    );
    assert_eq!(request.max_tokens, Some(64));
    assert_eq!(
        request.prompts,
        ["Answer in French.", "Bonjour", "Mon email", "Oui", "{\"q\":1}", "résultat", "Paris", "secret"]
    );
    let request = inspect(Api::OpenAi, Endpoint::Responses, r#"{"model":"m","input":"plain"}"#);
    assert_eq!(request.prompts, ["plain"]);
}

#[test]
fn embeddings() {
    let request = inspect(Api::OpenAi, Endpoint::Embeddings, r#"{"model":"e","input":["a","b"]}"#);
    assert_eq!((request.prompts, request.opaque_input), (vec!["a".to_string(), "b".to_string()], false));
    let request = inspect(Api::OpenAi, Endpoint::Embeddings, r#"{"model":"e","input":[[1,2],[3]]}"#);
    assert!(request.opaque_input);
    let request = inspect(Api::OpenAi, Endpoint::Embeddings, r#"{"model":"e","input":[1,2,3]}"#);
    assert!(request.opaque_input);
    let error = refused(Api::OpenAi, Endpoint::Embeddings, r#"{"model":"e","input":["a",[1]]}"#);
    assert_eq!(error, "the request body is not a valid embeddings request: \"input\" mixes strings with other values");
}

#[test]
fn anthropic_messages() {
    let request = inspect(
        Api::Anthropic,
        Endpoint::Messages,
        r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"system":[{"type":"text","text":"Be kind.",
            "cache_control":{"type":"ephemeral"}}],"messages":[
            {"role":"user","content":"Hello"},
            {"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"sig"},
             {"type":"tool_use","id":"t","name":"lookup","input":{"who":"Jane","tags":["a"]}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"ok"}]},
             {"type":"document","source":{"type":"text","media_type":"text/plain","data":"doc body"}},
             {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBOR"}}]}]}"#,
    );
    assert_eq!(request.max_tokens, Some(1024));
    assert_eq!(request.prompts, ["Be kind.", "Hello", "Jane", "a", "ok", "doc body"]);
    let request = inspect(Api::Anthropic, Endpoint::Messages, r#"{"model":"c","system":"S","messages":[]}"#);
    assert_eq!(request.prompts, ["S"]);
}

#[test]
fn token_counts_carry_prompts_as_the_requests_they_count() {
    let request = inspect(
        Api::Anthropic,
        Endpoint::CountTokens,
        r#"{"model":"claude-haiku-4-5","system":"Be kind.","messages":[{"role":"user","content":"Hello"}]}"#,
    );
    assert_eq!((request.model.as_deref(), request.max_tokens), (Some("claude-haiku-4-5"), None));
    assert_eq!(request.prompts, ["Be kind.", "Hello"]);
    let error = refused(Api::Anthropic, Endpoint::CountTokens, r#"{"model":"c"}"#);
    assert!(error.contains("not a valid count tokens request"), "{error}");
    let request = inspect(
        Api::OpenAi,
        Endpoint::InputTokens,
        r#"{"model":"gpt-4o","instructions":"Be kind.","input":[{"role":"user","content":"Hello"}]}"#,
    );
    assert_eq!((request.model.as_deref(), request.max_tokens), (Some("gpt-4o"), None));
    assert_eq!(request.prompts, ["Be kind.", "Hello"]);
}

#[test]
fn endpoints_without_prompts_are_not_read() {
    let request = inspect(Api::OpenAi, Endpoint::Models, "not json at all");
    assert!(request.prompts.is_empty());
    let request = inspect(Api::OpenAi, Endpoint::Other, "");
    assert_eq!(request.endpoint, Endpoint::Other);
}

#[test]
fn malformed_requests_are_refused() {
    let chat = |body: &str| refused(Api::OpenAi, Endpoint::ChatCompletions, body);
    assert!(chat("{").starts_with("the request body is not valid JSON"));
    assert!(chat(r#"{"model":"a","messages":[],"model":"b"}"#).contains("the key \"model\" appears twice"));
    assert_eq!(chat("[]"), "the request body is not a valid chat completions request: the body is not a JSON object");
    assert!(chat(r#"{"model":"m"}"#).ends_with("\"messages\" is missing"));
    assert!(chat(r#"{"messages":{}}"#).ends_with("\"messages\" is not an array"));
    assert!(chat(r#"{"model":7,"messages":[]}"#).ends_with("\"model\" is not a string"));
    assert!(chat(r#"{"stream":"yes","messages":[]}"#).ends_with("\"stream\" is not a boolean"));
    assert!(chat(r#"{"max_tokens":-1,"messages":[]}"#).ends_with("\"max_tokens\" is not a whole number"));
    assert!(chat(r#"{"max_completion_tokens":1.5,"messages":[]}"#).ends_with("is not a whole number"));
    assert!(chat(r#"{"stream_options":true,"messages":[]}"#).ends_with("\"stream_options\" is not an object"));
    assert!(chat(r#"{"messages":[{"role":"user","content":7}]}"#).contains("messages[0]: \"content\" is not a string"));
    assert!(chat(r#"{"messages":[{"role":"user","content":[{"type":"hologram","text":"x"}]}]}"#)
        .contains("messages[0]: content[0]: unknown content part type \"hologram\""));
    assert!(chat(r#"{"messages":[{"role":"user","content":[{"type":"text"}]}]}"#)
        .contains("a \"text\" part without a string \"text\""));
    let responses = |body: &str| refused(Api::OpenAi, Endpoint::Responses, body);
    assert!(
        responses(r#"{"input":[{"type":"teleport"}]}"#).contains("input: [0]: unknown input item type \"teleport\"")
    );
    assert!(responses(r#"{"input":7}"#).contains("input: not a string or an array of items"));
    let messages = |body: &str| refused(Api::Anthropic, Endpoint::Messages, body);
    assert!(messages(r#"{"messages":[{"role":"user","content":[{"type":"smell"}]}]}"#)
        .contains("messages[0].content[0]: unknown content block type \"smell\""));
    assert!(messages(r#"{"system":5,"messages":[]}"#).contains("\"system\" is not a string"));
}

#[test]
fn a_message_batch_is_its_requests_prompts_under_one_model() {
    let batch = r#"{"requests":[
        {"custom_id":"a","params":{"model":"claude-haiku-4-5","max_tokens":100,"system":"Be kind.",
         "messages":[{"role":"user","content":"Hello"}]}},
        {"custom_id":"b","params":{"model":"claude-haiku-4-5","max_tokens":300,
         "messages":[{"role":"user","content":[{"type":"text","text":"Bye"}]}]}}]}"#;
    let request = inspect(Api::Anthropic, Endpoint::MessageBatches, batch);
    assert_eq!((request.model.as_deref(), request.max_tokens), (Some("claude-haiku-4-5"), Some(300)));
    assert_eq!(request.prompts, ["Be kind.", "Hello", "Bye"]);
    let mixed = batch.replacen("claude-haiku-4-5", "claude-opus-4-1", 1);
    let error = refused(Api::Anthropic, Endpoint::MessageBatches, &mixed);
    assert!(
        error.contains(r#"name different models ("claude-opus-4-1", "claude-haiku-4-5"); send one batch per model"#)
    );
    for (body, reason) in [
        (r#"{"requests":[{"custom_id":"a"}]}"#, "requests[0].params is missing or not an object"),
        (r#"{"requests":[{"params":{"messages":[]}}]}"#, "requests[0].params names no model"),
        (r#"{"requests":[{"params":{"model":"m","messages":"hi"}}]}"#, "requests[0].params: \"messages\" is not"),
        (r#"{"model":"m"}"#, "\"requests\" is missing"),
    ] {
        let error = refused(Api::Anthropic, Endpoint::MessageBatches, body);
        assert!(error.contains(reason), "{body}: {error}");
    }
}

#[test]
fn batch_results_are_fetched_through_the_gateway() {
    for (method, path, expected) in [
        ("POST", "/v1/messages/batches", true),
        ("GET", "/v1/messages/batches?limit=2", true),
        ("GET", "/v1/messages/batches/msgbatch_1", true),
        ("POST", "/v1/messages/batches/msgbatch_1/cancel", true),
        ("GET", "/v1/messages/batches/msgbatch_1/results", false),
        ("DELETE", "/v1/messages/batches/msgbatch_1", false),
        ("GET", "/v1/messages", false),
    ] {
        assert_eq!(answers_batches(Api::Anthropic, method, path), expected, "{method} {path}");
    }
    assert!(!answers_batches(Api::OpenAi, "GET", "/v1/messages/batches"));
    assert!(creates_batch(Api::OpenAi, "POST", "/v1/batches") && creates_batch(Api::OpenAi, "post", "/batches/"));
    assert!(creates_batch(Api::Anthropic, "POST", "/v1/messages/batches?beta=true"));
    assert!(!creates_batch(Api::OpenAi, "GET", "/v1/batches") && !creates_batch(Api::Anthropic, "POST", "/v1/batches"));
    assert!(!creates_batch(Api::Anthropic, "POST", "/v1/messages/batches/msgbatch_1/cancel"));
    let (upstream, gateway) = ("https://api.anthropic.com/", "http://127.0.0.1:8080/claude");
    let one =
        br#"{"id":"msgbatch_1","results_url":"https://api.anthropic.com/v1/messages/batches/msgbatch_1/results"}"#;
    let moved = gateway_results_urls(one, upstream).expect("moved");
    let marked = r#"{"id":"msgbatch_1","results_url":"WARDEN-GATEWAY-URL/v1/messages/batches/msgbatch_1/results"}"#;
    assert_eq!(String::from_utf8(moved.clone()).unwrap(), marked);
    let expected =
        r#"{"id":"msgbatch_1","results_url":"http://127.0.0.1:8080/claude/v1/messages/batches/msgbatch_1/results"}"#;
    assert_eq!(String::from_utf8(place_gateway(&moved, gateway)).unwrap(), expected);
    let list = format!(
        r#"{{"data":[{},{{"id":"msgbatch_2","results_url":null}}],"has_more":false}}"#,
        std::str::from_utf8(one).unwrap()
    );
    let moved = place_gateway(&gateway_results_urls(list.as_bytes(), upstream).expect("moved"), gateway);
    let moved = String::from_utf8(moved).unwrap();
    assert!(moved.contains(expected) && moved.contains(r#""results_url":null"#), "{moved}");
    // Nothing to move: not yet ended, elsewhere, or not JSON.
    assert!(gateway_results_urls(br#"{"id":"msgbatch_1","results_url":null}"#, upstream).is_none());
    assert!(gateway_results_urls(br#"{"results_url":"https://api.anthropic.com.evil/x"}"#, upstream).is_none());
    assert!(gateway_results_urls(b"not json", upstream).is_none());
}
