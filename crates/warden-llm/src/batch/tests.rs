use proptest::prelude::*;

use super::*;

fn anthropic_line(custom_id: &str, input: u64, output: u64) -> String {
    serde_json::json!({"custom_id": custom_id, "result": {"type": "succeeded", "message": {
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": input, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 1,
            "output_tokens": output}}}})
    .to_string()
}

fn openai_line(custom_id: &str, prompt: u64, completion: u64) -> String {
    serde_json::json!({"id": "batch_req_1", "custom_id": custom_id, "response": {"status_code": 200,
        "request_id": "req_1", "body": {"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
        "model": "gpt-4o-mini-2024-07-18", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}},
        "error": null})
    .to_string()
}

fn totals(api: Api, text: &str) -> Option<BatchTotals> {
    let mut usage = BatchUsage::new(api);
    usage.push(text.as_bytes());
    usage.finish()
}

#[test]
fn the_requests_that_read_results() {
    let cases = [
        (Api::Anthropic, "GET", "/v1/messages/batches/msgbatch_01/results", Some("msgbatch_01")),
        (Api::Anthropic, "get", "/v1/messages/batches/msgbatch_01/results/", Some("msgbatch_01")),
        (Api::Anthropic, "GET", "/v1/messages/batches/msgbatch_01/results?x=1", Some("msgbatch_01")),
        (Api::Anthropic, "GET", "/v1/messages/batches/msgbatch_01", None),
        (Api::Anthropic, "POST", "/v1/messages/batches/msgbatch_01/results", None),
        (Api::Anthropic, "GET", "/v1/messages/batches//results", None),
        (Api::Anthropic, "GET", "/v1/files/file-1/content", None),
        (Api::OpenAi, "GET", "/v1/files/file-abc/content", Some("file-abc")),
        (Api::OpenAi, "GET", "/v1/files/file-abc", None),
        (Api::OpenAi, "GET", "/v1/files/a/b/content", None),
        (Api::OpenAi, "DELETE", "/v1/files/file-abc/content", None),
        (Api::OpenAi, "GET", "/v1/messages/batches/msgbatch_01/results", None),
    ];
    for (api, method, path, expected) in cases {
        assert_eq!(reads_batch_results(api, method, path), expected, "{api:?} {method} {path}");
    }
}

#[test]
fn anthropic_results_are_summed_with_cache_tokens() {
    let text = format!("{}\n{}\n", anthropic_line("a", 10, 5), anthropic_line("b", 20, 7));
    let totals = totals(Api::Anthropic, &text).expect("results");
    assert_eq!(totals.model.as_deref(), Some("claude-haiku-4-5"));
    assert_eq!(totals.requests, 2);
    // Each input adds its cache writes (2) and reads (1).
    assert_eq!(totals.usage, Usage { input_tokens: 36, output_tokens: 12, total_tokens: 48 });
    assert_eq!(totals.unread, 0);
}

#[test]
fn openai_output_lines_are_summed_and_failed_requests_count_nothing() {
    let failed = serde_json::json!({"id": "batch_req_2", "custom_id": "x", "response": null,
        "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}})
    .to_string();
    let text = format!("{}\n{failed}\n{}", openai_line("a", 12, 30), openai_line("b", 8, 2));
    let totals = totals(Api::OpenAi, &text).expect("results");
    assert_eq!(totals.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(totals.requests, 2);
    assert_eq!(totals.usage, Usage { input_tokens: 20, output_tokens: 32, total_tokens: 52 });
}

#[test]
fn an_errored_anthropic_result_counts_nothing() {
    let errored = serde_json::json!({"custom_id": "x", "result": {"type": "errored",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}}})
    .to_string();
    let totals = totals(Api::Anthropic, &format!("{errored}\n{}\n", anthropic_line("a", 1, 1))).expect("results");
    assert_eq!(totals.requests, 1);
    assert_eq!(totals.usage.total_tokens, 5);
}

#[test]
fn a_file_that_is_not_a_batch_output_has_no_totals() {
    for text in ["", "\n\n", "hello world\n", "{\"a\": 1}\n{\"custom_id\": \"x\"}\n", "%PDF-1.7 \u{0}\u{1}"] {
        assert_eq!(totals(Api::OpenAi, text), None, "{text:?}");
    }
    // A batch's input file (requests, not results) is not an output either.
    let input = r#"{"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}"#;
    assert_eq!(totals(Api::OpenAi, input), None);
}

#[test]
fn lines_that_cannot_be_read_are_counted_as_unread() {
    let long = format!("{{\"custom_id\": \"x\", \"pad\": \"{}\"}}", "a".repeat(RESULT_LINE_BYTES));
    let text = format!("{}\nnot json\n{long}\n{}", anthropic_line("a", 1, 1), anthropic_line("b", 1, 1));
    let totals = totals(Api::Anthropic, &text).expect("results");
    assert_eq!((totals.requests, totals.unread), (2, 2));
    assert_eq!(totals.usage.total_tokens, 10);
}

proptest! {
    /// However the answer is cut into pieces, the totals are those of the whole.
    #[test]
    fn pieces_make_no_difference(cuts in proptest::collection::vec(0usize..2000, 0..12), crlf in any::<bool>()) {
        let ending = if crlf { "\r\n" } else { "\n" };
        let text: String = (0..5).map(|index| anthropic_line(&index.to_string(), index, 2 * index) + ending).collect();
        let whole = totals(Api::Anthropic, &text);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut % (text.len() + 1)).collect();
        cuts.sort_unstable();
        let mut usage = BatchUsage::new(Api::Anthropic);
        let mut from = 0;
        for cut in cuts.into_iter().chain([text.len()]) {
            usage.push(&text.as_bytes()[from..cut]);
            from = cut;
        }
        prop_assert_eq!(usage.finish(), whole.clone());
        prop_assert_eq!(whole.map(|totals| totals.requests), Some(5));
    }
}
