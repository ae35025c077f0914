//! Streams of each provider, as their servers send them, cut into small deltas: what the client gets is valid SSE
//! and valid JSON of the provider's shape, its deltas concatenate to the masked answer, and no event carries a piece
//! of a masked value. Then usage, whole answers, and the failures.

use proptest::prelude::*;
use warden_mask::{Masker, MaskerConfig, DEFAULT_HOLD_BACK};

use super::*;
use crate::sse::SseParser;

const ANSWER: &str =
    "Sure. Write to Jane Roe at jane.roe@example.com or call +1 415 555 0100; her card is 4111 1111 1111 1111.";
const MASKED: &str = "Sure. Write to Jane Roe at ***@example.com or call [PHONE]; her card is **** **** **** 1111.";

fn detectors() -> Masker {
    Masker::new(&MaskerConfig::all([7; 32])).expect("the built-in detectors compile")
}

fn pieces(text: &str, size: usize) -> Vec<String> {
    text.as_bytes().chunks(size).map(|piece| String::from_utf8(piece.to_vec()).unwrap()).collect()
}

fn data(value: serde_json::Value) -> SseEvent {
    SseEvent::data(value.to_string())
}

fn named(name: &str, value: serde_json::Value) -> SseEvent {
    SseEvent::named(name, value.to_string())
}

/// A chat completion streamed as OpenAI does with `include_usage`: a role chunk, content chunks, the finish chunk,
/// the usage chunk, `[DONE]`.
fn chat_stream(deltas: &[String]) -> Vec<SseEvent> {
    let chunk = |choices: serde_json::Value| {
        data(serde_json::json!({"id":"chatcmpl-9","object":"chat.completion.chunk","created":1730000000,
            "model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_1","choices":choices,"usage":null}))
    };
    let mut events =
        vec![chunk(serde_json::json!([{"index":0,"delta":{"role":"assistant","content":"","refusal":null},
        "logprobs":null,"finish_reason":null}]))];
    for delta in deltas {
        events.push(chunk(
            serde_json::json!([{"index":0,"delta":{"content":delta},"logprobs":null,"finish_reason":null}]),
        ));
    }
    events.push(chunk(serde_json::json!([{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}])));
    events.push(data(serde_json::json!({"id":"chatcmpl-9","object":"chat.completion.chunk","created":1730000000,
        "model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_1","choices":[],
        "usage":{"prompt_tokens":12,"completion_tokens":31,"total_tokens":43}})));
    events.push(SseEvent::data("[DONE]"));
    events
}

/// A legacy completion streamed as OpenAI does with `include_usage`: text chunks, the finish chunk (empty text), the
/// usage chunk, `[DONE]`.
fn completion_stream(deltas: &[String]) -> Vec<SseEvent> {
    let chunk = |choices: serde_json::Value| {
        data(serde_json::json!({"id":"cmpl-9","object":"text_completion","created":1730000000,
            "model":"gpt-3.5-turbo-instruct","choices":choices,"usage":null}))
    };
    let mut events = Vec::new();
    for delta in deltas {
        events.push(chunk(serde_json::json!([{"text":delta,"index":0,"logprobs":null,"finish_reason":null}])));
    }
    events.push(chunk(serde_json::json!([{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}])));
    events.push(data(serde_json::json!({"id":"cmpl-9","object":"text_completion","created":1730000000,
        "model":"gpt-3.5-turbo-instruct","choices":[],
        "usage":{"prompt_tokens":12,"completion_tokens":31,"total_tokens":43}})));
    events.push(SseEvent::data("[DONE]"));
    events
}

/// A Responses API stream: created, item and part added, text deltas, text done, part and item done, completed.
fn responses_stream(deltas: &[String]) -> Vec<SseEvent> {
    let whole: String = deltas.concat();
    let mut sequence = 0;
    let mut events = Vec::new();
    let mut event = |value: serde_json::Value| {
        let mut value = value;
        value["sequence_number"] = sequence.into();
        sequence += 1;
        let name = value["type"].as_str().unwrap().to_string();
        events.push(named(&name, value));
    };
    event(serde_json::json!({"type":"response.created","response":{"id":"resp_1","status":"in_progress","output":[]}}));
    event(serde_json::json!({"type":"response.output_item.added","output_index":0,
        "item":{"id":"msg_1","type":"message","status":"in_progress","role":"assistant","content":[]}}));
    event(
        serde_json::json!({"type":"response.content_part.added","item_id":"msg_1","output_index":0,"content_index":0,
        "part":{"type":"output_text","text":"","annotations":[]}}),
    );
    for delta in deltas {
        event(serde_json::json!({"type":"response.output_text.delta","item_id":"msg_1","output_index":0,
            "content_index":0,"delta":delta,"logprobs":[]}));
    }
    event(serde_json::json!({"type":"response.output_text.done","item_id":"msg_1","output_index":0,"content_index":0,
        "text":whole,"logprobs":[]}));
    event(serde_json::json!({"type":"response.content_part.done","item_id":"msg_1","output_index":0,"content_index":0,
        "part":{"type":"output_text","text":whole,"annotations":[]}}));
    event(
        serde_json::json!({"type":"response.output_item.done","output_index":0,"item":{"id":"msg_1","type":"message",
        "status":"completed","role":"assistant","content":[{"type":"output_text","text":whole,"annotations":[]}]}}),
    );
    event(serde_json::json!({"type":"response.completed","response":{"id":"resp_1","status":"completed",
        "output":[{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"output_text","text":whole}]}],
        "usage":{"input_tokens":20,"output_tokens":31,"total_tokens":51}}}));
    events
}

/// An Anthropic Messages stream: message_start, a text block, ping, deltas, block stop, message_delta, message_stop.
fn anthropic_stream(deltas: &[String]) -> Vec<SseEvent> {
    let mut events = vec![
        named(
            "message_start",
            serde_json::json!({"type":"message_start","message":{"id":"msg_01","type":"message",
            "role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,
            "usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":100,"output_tokens":1}}}),
        ),
        named(
            "content_block_start",
            serde_json::json!({"type":"content_block_start","index":0,
            "content_block":{"type":"text","text":""}}),
        ),
        named("ping", serde_json::json!({"type":"ping"})),
    ];
    for delta in deltas {
        events.push(named(
            "content_block_delta",
            serde_json::json!({"type":"content_block_delta","index":0,
            "delta":{"type":"text_delta","text":delta}}),
        ));
    }
    events.push(named("content_block_stop", serde_json::json!({"type":"content_block_stop","index":0})));
    events.push(named(
        "message_delta",
        serde_json::json!({"type":"message_delta",
        "delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":31}}),
    ));
    events.push(named("message_stop", serde_json::json!({"type":"message_stop"})));
    events
}

/// The events through a masker; each one emitted is written as a frame and parsed back (it must be one valid
/// event, the same).
fn run(masker: &mut ResponseMasker, events: Vec<SseEvent>) -> Vec<SseEvent> {
    let mut emitted = Vec::new();
    for event in events {
        emitted.extend(masker.event(event).expect("the stream masks"));
    }
    emitted.extend(masker.finish().expect("the stream ends"));
    for event in &emitted {
        let frame = event.to_bytes();
        let mut parser = SseParser::new(1 << 20);
        let parsed = parser.push(&frame).expect("a valid frame");
        assert_eq!(parsed, vec![event.clone()], "{}", String::from_utf8_lossy(&frame));
        parser.finish().expect("a whole frame");
    }
    emitted
}

fn json(event: &SseEvent) -> serde_json::Value {
    serde_json::from_str(event.data.as_deref().expect("data")).expect("JSON data")
}

/// The concatenated text of the deltas, each event's shape checked on the way.
fn chat_text(events: &[SseEvent]) -> String {
    let mut text = String::new();
    for event in events {
        if event.data.as_deref() == Some("[DONE]") {
            continue;
        }
        let value = json(event);
        assert_eq!(value["object"], "chat.completion.chunk");
        for choice in value["choices"].as_array().expect("choices") {
            assert!(choice["index"].is_u64() && choice["delta"].is_object(), "{value}");
            text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        }
    }
    text
}

fn completion_text(events: &[SseEvent]) -> String {
    let mut text = String::new();
    for event in events {
        if event.data.as_deref() == Some("[DONE]") {
            continue;
        }
        let value = json(event);
        assert_eq!(value["object"], "text_completion");
        for choice in value["choices"].as_array().expect("choices") {
            assert!(choice["index"].is_u64() && choice.get("delta").is_none(), "{value}");
            text.push_str(choice["text"].as_str().expect("a text"));
        }
    }
    text
}

fn responses_text(events: &[SseEvent]) -> String {
    let mut text = String::new();
    let mut sequence = None;
    for event in events {
        let value = json(event);
        assert_eq!(Some(value["type"].as_str().unwrap()), event.event.as_deref());
        let number = value["sequence_number"].as_u64().expect("a sequence number");
        if let Some(previous) = sequence {
            assert_eq!(number, previous + 1, "sequence numbers increase by one");
        }
        sequence = Some(number);
        if value["type"] == "response.output_text.delta" {
            text.push_str(value["delta"].as_str().unwrap());
        }
    }
    text
}

fn anthropic_text(events: &[SseEvent]) -> String {
    let mut text = String::new();
    for event in events {
        let value = json(event);
        assert_eq!(Some(value["type"].as_str().unwrap()), event.event.as_deref());
        if value["type"] == "content_block_delta" && value["delta"]["type"] == "text_delta" {
            text.push_str(value["delta"]["text"].as_str().unwrap());
        }
    }
    text
}

/// No event carries four characters in a row of what masking hides (the email's local part, the phone number,
/// the card's first twelve digits).
fn assert_no_leak(events: &[SseEvent]) {
    let hidden = ["jane.roe@", "+1 415 555 0100", "4111 1111 1111 "];
    for event in events {
        let frame = String::from_utf8(event.to_bytes()).unwrap();
        for value in hidden {
            for window in value.as_bytes().windows(4) {
                let window = std::str::from_utf8(window).unwrap();
                if !MASKED.contains(window) {
                    assert!(!frame.contains(window), "{window:?} of {value:?} in {frame}");
                }
            }
        }
    }
}

type Stream = fn(&[String]) -> Vec<SseEvent>;
type Text = fn(&[SseEvent]) -> String;

const APIS: [(Api, Endpoint, Stream, Text); 4] = [
    (Api::OpenAi, Endpoint::ChatCompletions, chat_stream, chat_text),
    (Api::OpenAi, Endpoint::Completions, completion_stream, completion_text),
    (Api::OpenAi, Endpoint::Responses, responses_stream, responses_text),
    (Api::Anthropic, Endpoint::Messages, anthropic_stream, anthropic_text),
];

#[test]
fn the_answer_in_six_byte_deltas_reaches_the_client_masked() {
    for (api, endpoint, stream, text) in APIS {
        let mut masker = ResponseMasker::new(api, endpoint, detectors(), DEFAULT_HOLD_BACK, false);
        let emitted = run(&mut masker, stream(&pieces(ANSWER, 6)));
        assert_eq!(text(&emitted), MASKED, "{api:?} {endpoint:?}");
        assert_no_leak(&emitted);
        assert_eq!(masker.answer_text(), MASKED);
        assert_eq!(masker.masked_count(), 3 + if endpoint == Endpoint::Responses { 12 } else { 0 });
    }
}

#[test]
fn a_split_value_is_never_sent_in_part() {
    let deltas: Vec<String> = ["Mail ", "jane.r", "oe@exam", "ple.com", " today"].map(String::from).to_vec();
    for (api, endpoint, stream, text) in APIS {
        let mut masker = ResponseMasker::new(api, endpoint, detectors(), DEFAULT_HOLD_BACK, false);
        let emitted = run(&mut masker, stream(&deltas));
        assert_eq!(text(&emitted), "Mail ***@example.com today");
        for event in &emitted {
            let frame = String::from_utf8(event.to_bytes()).unwrap();
            assert!(!frame.contains("jane") && !frame.contains(".r\"") && !frame.contains("oe@"), "{frame}");
        }
    }
}

#[test]
fn usage_from_each_provider() {
    let expected = [
        Usage { input_tokens: 12, output_tokens: 31, total_tokens: 43 },
        Usage { input_tokens: 12, output_tokens: 31, total_tokens: 43 },
        Usage { input_tokens: 20, output_tokens: 31, total_tokens: 51 },
        Usage { input_tokens: 125, output_tokens: 31, total_tokens: 156 },
    ];
    for ((api, endpoint, stream, _), usage) in APIS.into_iter().zip(expected) {
        let mut masker = ResponseMasker::new(api, endpoint, detectors(), DEFAULT_HOLD_BACK, false);
        run(&mut masker, stream(&pieces("Hello there.", 5)));
        assert_eq!(masker.usage(), Some(usage), "{api:?} {endpoint:?}");
    }
}

#[test]
fn the_usage_chunk_the_client_did_not_ask_for_is_dropped() {
    let events = chat_stream(&pieces("Hello there.", 5));
    let mut masker = ResponseMasker::new(Api::OpenAi, Endpoint::ChatCompletions, detectors(), DEFAULT_HOLD_BACK, true);
    let emitted = run(&mut masker, events.clone());
    assert_eq!(masker.usage().map(|usage| usage.total_tokens), Some(43));
    for event in &emitted[..emitted.len() - 1] {
        let value = json(event);
        assert!(!value["choices"].as_array().unwrap().is_empty());
        // And `"usage": null`, which only include_usage adds, is gone from the chunks.
        assert!(value.get("usage").is_none(), "{value}");
    }
    assert_eq!(emitted.last().unwrap().data.as_deref(), Some("[DONE]"));
    // Asked for, it stays.
    let mut masker = ResponseMasker::new(Api::OpenAi, Endpoint::ChatCompletions, detectors(), DEFAULT_HOLD_BACK, false);
    let emitted = run(&mut masker, events);
    let usage = &emitted[emitted.len() - 2];
    assert_eq!(json(usage)["usage"]["total_tokens"], 43);
}

#[test]
fn the_held_text_goes_out_before_the_finish_chunk_in_a_chunk_like_the_others() {
    let mut masker = ResponseMasker::new(Api::OpenAi, Endpoint::ChatCompletions, detectors(), DEFAULT_HOLD_BACK, false);
    let emitted = run(&mut masker, chat_stream(&pieces("Call +1 415 555 0100", 4)));
    let finish = emitted.iter().position(|event| event.data.as_deref().unwrap().contains("\"stop\"")).unwrap();
    let synthetic = json(&emitted[finish - 1]);
    assert_eq!(
        synthetic,
        serde_json::json!({"id":"chatcmpl-9","object":"chat.completion.chunk","created":1730000000,
            "model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_1",
            "choices":[{"index":0,"delta":{"content":"[PHONE]"},"logprobs":null,"finish_reason":null}],"usage":null})
    );
    // The finish chunk itself is unchanged.
    assert_eq!(
        json(&emitted[finish])["choices"][0],
        serde_json::json!({"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"})
    );
}

#[test]
fn tool_call_arguments_and_parallel_choices_are_channels_of_their_own() {
    let chunk = |choices: serde_json::Value| {
        data(serde_json::json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":choices}))
    };
    let events = vec![
        chunk(serde_json::json!([{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,
            "id":"call_1","type":"function","function":{"name":"send_mail","arguments":""}}]},"finish_reason":null}])),
        chunk(
            serde_json::json!([{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"to\":\"jane."}}]},"finish_reason":null}]),
        ),
        chunk(serde_json::json!([{"index":1,"delta":{"content":"Card 4111 1111 "},"finish_reason":null}])),
        chunk(
            serde_json::json!([{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"roe@example.com\"}"}}]},"finish_reason":null}]),
        ),
        chunk(serde_json::json!([{"index":1,"delta":{"content":"1111 1111 ok"},"finish_reason":null}])),
        chunk(serde_json::json!([{"index":0,"delta":{},"finish_reason":"tool_calls"}])),
        chunk(serde_json::json!([{"index":1,"delta":{"content":"!"},"finish_reason":"stop"}])),
        SseEvent::data("[DONE]"),
    ];
    let mut masker = ResponseMasker::new(Api::OpenAi, Endpoint::ChatCompletions, detectors(), DEFAULT_HOLD_BACK, false);
    let emitted = run(&mut masker, events);
    let mut arguments = String::new();
    let mut content = String::new();
    for event in emitted.iter().filter(|event| event.data.as_deref() != Some("[DONE]")) {
        let value = json(event);
        for choice in value["choices"].as_array().unwrap() {
            if let Some(calls) = choice["delta"]["tool_calls"].as_array() {
                arguments.push_str(calls[0]["function"]["arguments"].as_str().unwrap_or_default());
            }
            if choice["index"] == 1 {
                content.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
            }
        }
        let frame = String::from_utf8(event.to_bytes()).unwrap();
        assert!(!frame.contains("jane") && !frame.contains("4111"), "{frame}");
    }
    assert_eq!(arguments, "{\"to\":\"***@example.com\"}");
    // The text held when the finish chunk comes with a delta of its own is added to that delta.
    assert_eq!(content, "Card **** **** **** 1111 ok!");
}

#[test]
fn anthropic_tool_input_and_thinking_are_masked_too() {
    let delta = |index: u64, delta: serde_json::Value| {
        named("content_block_delta", serde_json::json!({"type":"content_block_delta","index":index,"delta":delta}))
    };
    let events = vec![
        named(
            "content_block_start",
            serde_json::json!({"type":"content_block_start","index":0,
            "content_block":{"type":"thinking","thinking":"","signature":""}}),
        ),
        delta(0, serde_json::json!({"type":"thinking_delta","thinking":"Her number is +1 415 "})),
        delta(0, serde_json::json!({"type":"thinking_delta","thinking":"555 0100."})),
        delta(0, serde_json::json!({"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3h"})),
        named("content_block_stop", serde_json::json!({"type":"content_block_stop","index":0})),
        named(
            "content_block_start",
            serde_json::json!({"type":"content_block_start","index":1,
            "content_block":{"type":"tool_use","id":"toolu_1","name":"call","input":{}}}),
        ),
        delta(1, serde_json::json!({"type":"input_json_delta","partial_json":"{\"number\": \"+1 415"})),
        delta(1, serde_json::json!({"type":"input_json_delta","partial_json":" 555 0100\"}"})),
        named("content_block_stop", serde_json::json!({"type":"content_block_stop","index":1})),
    ];
    let mut masker = ResponseMasker::new(Api::Anthropic, Endpoint::Messages, detectors(), DEFAULT_HOLD_BACK, false);
    let emitted = run(&mut masker, events);
    let (mut thinking, mut input) = (String::new(), String::new());
    for event in &emitted {
        let value = json(event);
        thinking.push_str(value["delta"]["thinking"].as_str().unwrap_or_default());
        input.push_str(value["delta"]["partial_json"].as_str().unwrap_or_default());
        assert!(!String::from_utf8(event.to_bytes()).unwrap().contains("415"));
    }
    assert_eq!(thinking, "Her number is [PHONE].");
    assert_eq!(input, "{\"number\": \"[PHONE]\"}");
    // The signature is the provider's, passed as it is.
    assert!(emitted.iter().any(|event| event.data.as_deref().unwrap().contains("EqQBCgIYAhIM1gbcDa9GJwZA2b3h")));
    // The answer text for the audit trail is the text blocks only.
    assert_eq!(masker.answer_text(), "");
}

#[test]
fn a_stream_cut_short_still_releases_what_was_held_masked() {
    let mut events = chat_stream(&pieces("Write to jane.roe@example.com", 5));
    events.truncate(events.len() - 3);
    let mut masker = ResponseMasker::new(Api::OpenAi, Endpoint::ChatCompletions, detectors(), DEFAULT_HOLD_BACK, false);
    let emitted = run(&mut masker, events);
    assert_eq!(chat_text(&emitted), "Write to ***@example.com");
}

#[test]
fn done_and_unknown_events_are_masked_whole() {
    let mut masker = ResponseMasker::new(Api::OpenAi, Endpoint::Responses, detectors(), DEFAULT_HOLD_BACK, false);
    let emitted = run(
        &mut masker,
        vec![named(
            "response.future_event",
            serde_json::json!({"type":"response.future_event","sequence_number":7,
            "note":"from jane@example.com","nested":[{"card":"4111111111111111"}]}),
        )],
    );
    assert_eq!(
        json(&emitted[0]),
        serde_json::json!({"type":"response.future_event","sequence_number":7,"note":"from ***@example.com",
            "nested":[{"card":"************1111"}]})
    );
}

#[test]
fn what_is_not_json_ends_the_stream() {
    let mut masker = ResponseMasker::new(Api::OpenAi, Endpoint::ChatCompletions, detectors(), DEFAULT_HOLD_BACK, false);
    let error = masker.event(SseEvent::data("{\"choices\": [")).unwrap_err();
    assert!(matches!(error, LlmError::ResponseJson(_)));
    assert_eq!(error.fault(), crate::Fault::Upstream);
    let error = masker.event(data(serde_json::json!({"choices": {}}))).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the upstream's answer is not a valid chat completions answer: \"choices\" is not an array"
    );
    let mut masker = ResponseMasker::new(Api::Anthropic, Endpoint::Messages, detectors(), DEFAULT_HOLD_BACK, false);
    assert!(masker.event(SseEvent::named("ping", "[DONE]")).is_err());
    assert!(masker.event(named("x", serde_json::json!([1]))).is_err());
    // Events without data (keep-alive comments) pass, their comments masked.
    let comment = SseEvent { comments: vec![" keep-alive for jane@example.com".into()], ..SseEvent::default() };
    let emitted = masker.event(comment).unwrap();
    assert_eq!(emitted[0].comments, [" keep-alive for ***@example.com"]);
}

#[test]
fn too_many_channels_at_once() {
    let mut masker = ResponseMasker::new(Api::OpenAi, Endpoint::ChatCompletions, detectors(), DEFAULT_HOLD_BACK, false);
    let chunk = |index: usize| {
        data(serde_json::json!({"choices":[{"index":index,"delta":{"content":"x"},"finish_reason":null}]}))
    };
    for index in 0..MAX_CHANNELS {
        masker.event(chunk(index)).unwrap();
    }
    assert!(matches!(masker.event(chunk(MAX_CHANNELS)), Err(LlmError::TooManyChannels { limit: MAX_CHANNELS })));
}

#[test]
fn logprobs_are_emptied() {
    let mut masker = ResponseMasker::new(Api::OpenAi, Endpoint::ChatCompletions, detectors(), DEFAULT_HOLD_BACK, false);
    let emitted = masker
        .event(data(serde_json::json!({"choices":[{"index":0,"delta":{"content":"jane"},
            "logprobs":{"content":[{"token":"jane","logprob":-0.1,"bytes":[106,97,110,101],"top_logprobs":[]}]},
            "finish_reason":null}]})))
        .unwrap();
    assert_eq!(json(&emitted[0])["choices"][0]["logprobs"], serde_json::Value::Null);
}

#[test]
fn whole_answers() {
    let masker = ResponseMasker::new(Api::OpenAi, Endpoint::ChatCompletions, detectors(), DEFAULT_HOLD_BACK, false);
    let body = serde_json::json!({"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,
        "message":{"role":"assistant","content":ANSWER,"tool_calls":[{"id":"call_1","type":"function",
        "function":{"name":"f","arguments":"{\"to\":\"jane.roe@example.com\"}"}}]},"logprobs":null,"finish_reason":"stop"}],
        "usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}});
    let (masked, usage, count) = masker.json(body.to_string().as_bytes()).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&masked).unwrap();
    assert_eq!(value["choices"][0]["message"]["content"], MASKED);
    assert_eq!(
        value["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"to\":\"***@example.com\"}"
    );
    assert_eq!(usage, Some(Usage { input_tokens: 9, output_tokens: 12, total_tokens: 21 }));
    assert_eq!(count, 4);

    let masker = ResponseMasker::new(Api::Anthropic, Endpoint::Messages, detectors(), DEFAULT_HOLD_BACK, false);
    let body = serde_json::json!({"id":"msg_1","type":"message","content":[{"type":"text","text":ANSWER}],
        "usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":7}});
    let (masked, usage, _) = masker.json(body.to_string().as_bytes()).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&masked).unwrap();
    assert_eq!(value["content"][0]["text"], MASKED);
    assert_eq!(usage, Some(Usage { input_tokens: 15, output_tokens: 7, total_tokens: 22 }));

    let masker = ResponseMasker::new(Api::OpenAi, Endpoint::Responses, detectors(), DEFAULT_HOLD_BACK, false);
    let body = serde_json::json!({"id":"resp_1","output":[{"type":"message","content":[{"type":"output_text",
        "text":ANSWER,"annotations":[],"logprobs":[{"token":"jane"}]}]}],"usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}});
    let (masked, usage, _) = masker.json(body.to_string().as_bytes()).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&masked).unwrap();
    assert_eq!(value["output"][0]["content"][0]["text"], MASKED);
    assert_eq!(value["output"][0]["content"][0]["logprobs"], serde_json::json!([]));
    assert_eq!(usage.map(|usage| usage.total_tokens), Some(7));

    // Embedding vectors, numbers or base64, are not text.
    let masker = ResponseMasker::new(Api::OpenAi, Endpoint::Embeddings, detectors(), DEFAULT_HOLD_BACK, false);
    let body = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AAAA+14155550100/AKIAIOSFODNN7EXAMPLE"}],"usage":{"prompt_tokens":2,"total_tokens":2}}"#;
    let (masked, usage, count) = masker.json(body.as_bytes()).unwrap();
    assert_eq!((masked.as_slice(), count), (body.as_bytes(), 0));
    assert_eq!(usage, Some(Usage { input_tokens: 2, output_tokens: 0, total_tokens: 2 }));

    assert!(matches!(masker.json(b"<html>"), Err(LlmError::ResponseJson(_))));
}

#[test]
fn whole_answers_keep_their_layout_and_refuse_what_cannot_be_read() {
    let masker = ResponseMasker::new(Api::OpenAi, Endpoint::ChatCompletions, detectors(), DEFAULT_HOLD_BACK, false);
    // Only the values with findings change: the provider's layout, key order and escapes are kept.
    let body = concat!(
        "{\n  \"id\": \"chatcmpl-1\",\n  \"choices\": [{\"message\": ",
        "{\"content\": \"caf\\u00e9 jane.roe@example.com\"}, \"card\": 4111111111111111}],\n",
        "  \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 4}\n}\n",
    );
    let (masked, usage, count) = masker.json(body.as_bytes()).unwrap();
    let expected = concat!(
        "{\n  \"id\": \"chatcmpl-1\",\n  \"choices\": [{\"message\": ",
        "{\"content\": \"café ***@example.com\"}, \"card\": \"************1111\"}],\n",
        "  \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 4}\n}\n",
    );
    assert_eq!(String::from_utf8(masked).unwrap(), expected);
    assert_eq!((usage.map(|usage| usage.total_tokens), count), (Some(7), 2));

    // Two usages (which one would the client believe?), text that is not UTF-8, and JSON cut short are refused.
    let twice = r#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":100000}}"#;
    let error = masker.json(twice.as_bytes()).unwrap_err();
    assert!(matches!(error, LlmError::ResponseShape { .. }), "{error}");
    assert!(error.to_string().contains("more than one \"usage\""), "{error}");
    let error = masker.json(b"{\"a\":\"\xff\"}").unwrap_err();
    assert!(error.to_string().contains("not UTF-8"), "{error}");
    let error = masker.json(br#"{"choices":[{"message":{"content":"jane.roe@example.com"}}"#).unwrap_err();
    assert_eq!(error.to_string(), "the upstream's answer is not valid JSON: syntax error at byte 58");
}

#[test]
fn the_answer_kept_for_the_audit_trail_is_capped() {
    let long = "word ".repeat(ANSWER_TEXT_CAP);
    let mut masker = ResponseMasker::new(Api::Anthropic, Endpoint::Messages, detectors(), DEFAULT_HOLD_BACK, false);
    run(&mut masker, anthropic_stream(&pieces(&long, 100)));
    assert_eq!(masker.answer_text().len(), ANSWER_TEXT_CAP);
}

fn splits() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(1usize..12, 1..40).prop_map(|sizes| {
        let mut deltas = Vec::new();
        let mut from = 0;
        for size in sizes.into_iter().cycle() {
            if from >= ANSWER.len() {
                break;
            }
            let to = (from + size).min(ANSWER.len());
            deltas.push(ANSWER[from..to].to_string());
            from = to;
        }
        deltas
    })
}

proptest! {
    #[test]
    fn any_split_of_the_answer_reaches_the_client_masked(deltas in splits()) {
        for (api, endpoint, stream, text) in APIS {
            let mut masker = ResponseMasker::new(api, endpoint, detectors(), DEFAULT_HOLD_BACK, false);
            let emitted = run(&mut masker, stream(&deltas));
            prop_assert_eq!(text(&emitted), MASKED);
            assert_no_leak(&emitted);
        }
    }
}
