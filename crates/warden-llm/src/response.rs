//! Masking the answers of the LLM endpoints, whole (a JSON body) or streamed (server-sent events), and reading the
//! token usage they report.
//!
//! A whole answer has every string and number value masked by content detection in one pass over its text, the
//! rest copied as it came (keys untouched; embedding vectors left alone). A streamed answer is a sequence of events
//! each carrying a piece (a *delta*) of some text; a value split across deltas (`"jane.r"`, `"oe@exam"`,
//! `"ple.com"`) must not reach the client in any of them. So each text being streamed, a *channel*, gets its own
//! [`StreamMasker`]:
//!
//! - OpenAI chat completions: per choice, `delta.content`, `delta.refusal`, and each tool call's
//!   `function.arguments`; a channel ends at its choice's chunk with a `finish_reason`, or at `[DONE]`.
//! - OpenAI responses: per event type and (`item_id`, `output_index`, `content_index`, `summary_index`), every
//!   `response.*.delta` with a string `delta` (output text, refusals, function call arguments, reasoning summaries,
//!   transcripts) but `response.audio.delta` (audio); a channel ends at its `….done`, its item's or part's `done`,
//!   or the response's end (`response.completed`, `.incomplete`, `.failed`, `error`).
//! - Anthropic messages: per content block index, `text_delta.text`, `input_json_delta.partial_json` and
//!   `thinking_delta.thinking`; a channel ends at its `content_block_stop`, or `message_stop`.
//!
//! Each delta event is re-emitted with its delta replaced by the masked text the channel can release now (possibly
//! empty), every other member kept. Before the event that ends a channel, the text it still holds goes out in a
//! synthetic delta event of the same shape (for chat completions, a chunk with the channel's ids and model and a
//! delta of that one member; for the others, a copy of the channel's last delta event), so the deltas of a channel
//! concatenate to the masked text. Events that carry whole texts (`….done`, `response.completed`,
//! `message_start`…) and events warden does not know have every string value masked whole. The Responses API's
//! `sequence_number` is renumbered on every event emitted, so that it keeps increasing by one. Token log
//! probabilities (`logprobs`), which spell the answer token by token, are emptied.
//!
//! An event whose data is not JSON (but chat completions' `[DONE]`) is an error: the gateway ends the stream.
//!
//! Bounds: at most [`MAX_CHANNELS`] channels open at once, each holding what its [`StreamMasker`] holds (the window,
//! or [`warden_mask::LONG_VALUE_CAP`] for an open private key or JWT); events are as large as the SSE parser's limit
//! allows; the audit copy of the answer is capped at [`ANSWER_TEXT_CAP`].

use warden_mask::{Masker, Member, StreamMasker};

use crate::api::{Api, Endpoint};
use crate::json::{self, Json};
use crate::sse::SseEvent;
use crate::LlmError;

/// The most stream channels (choices' texts, tool calls, content blocks) open at once.
pub const MAX_CHANNELS: usize = 256;

/// How much of the masked answer text is kept for the audit trail.
pub const ANSWER_TEXT_CAP: usize = 8 * 1024;

/// Tokens an exchange used, as the provider reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, including cached ones (Anthropic's cache reads and writes are added in).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// As reported, or input plus output.
    pub total_tokens: u64,
}

/// Which text of the stream a channel carries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChannelKey {
    Chat { choice: u64, part: ChatPart },
    Responses { base: String, item: Option<String>, output: Option<u64>, content: Option<u64>, summary: Option<u64> },
    Anthropic { index: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChatPart {
    /// A legacy completion's `choices[].text`.
    Text,
    Content,
    Refusal,
    ToolArguments(u64),
}

struct Channel {
    key: ChannelKey,
    stream: StreamMasker,
    /// The channel's last delta event (for chat completions, the chunk without its choices), copied for the
    /// synthetic event that releases what is held.
    template: (Option<String>, Json),
    /// Part of the answer's text (kept for the audit trail).
    answer: bool,
}

/// Masks one answer: [`ResponseMasker::json`] for a whole one, [`ResponseMasker::event`] then
/// [`ResponseMasker::finish`] for a streamed one.
pub struct ResponseMasker {
    api: Api,
    endpoint: Endpoint,
    masker: Masker,
    hold_back: usize,
    strip_usage_chunk: bool,
    channels: Vec<Channel>,
    usage: Option<Usage>,
    /// Anthropic reports usage in pieces (`message_start`, then `message_delta`): the latest of each field.
    anthropic_usage: [Option<u64>; 4],
    answer: String,
    findings: usize,
    next_sequence: Option<u64>,
}

impl ResponseMasker {
    /// `hold_back` is each channel's window ([`warden_mask::DEFAULT_HOLD_BACK`] is a good one);
    /// `strip_usage_chunk` comes from [`crate::GuardOutcome::strip_usage_chunk`].
    pub fn new(api: Api, endpoint: Endpoint, masker: Masker, hold_back: usize, strip_usage_chunk: bool) -> Self {
        ResponseMasker {
            api,
            endpoint,
            masker,
            hold_back,
            strip_usage_chunk,
            channels: Vec::new(),
            usage: None,
            anthropic_usage: [None; 4],
            answer: String::new(),
            findings: 0,
            next_sequence: None,
        }
    }

    /// Masks a whole JSON answer (the provider's own errors included): the masked body, the usage it reports, and
    /// how many values were masked. (The masked body is the audit copy: [`ResponseMasker::answer_text`] is for
    /// streams.)
    ///
    /// One pass over the text ([`warden_mask::mask_json_values`]), no tree: every string and number is masked by
    /// content detection, every `logprobs` member emptied, embedding vectors kept as they are, and the rest of the
    /// text copied verbatim. The usage is read from the top-level `usage` member as received; an answer with two is
    /// refused, as one that is not UTF-8 or not JSON is. Other repeated keys are each masked.
    pub fn json(&self, body: &[u8]) -> Result<(Vec<u8>, Option<Usage>, usize), LlmError> {
        let text = std::str::from_utf8(body).map_err(|error| LlmError::ResponseJson(format!("not UTF-8: {error}")))?;
        let embeddings = self.endpoint == Endpoint::Embeddings;
        let member = |depth: usize, key: &str| match key {
            "logprobs" => Member::Empty,
            "embedding" if embeddings => Member::Keep,
            "usage" if depth == 1 => Member::Report,
            _ => Member::Walk,
        };
        let mut usages = Vec::new();
        let (masked, count) =
            warden_mask::mask_json_values(text, &self.masker, &member, &mut |_, raw| usages.push(raw))
                .map_err(|error| LlmError::ResponseJson(error.to_string()))?;
        let usage = match usages.as_slice() {
            [] => None,
            [raw] => read_usage(self.api, &Json::parse(raw.as_bytes()).map_err(LlmError::ResponseJson)?),
            _ => return Err(self.shape("the answer has more than one \"usage\" member")),
        };
        Ok((masked.into_owned().into_bytes(), usage, count))
    }

    /// Masks one event of a streamed answer; returns the events to send in its place, in order (none, when it is the
    /// usage chunk warden asked for and the client did not).
    pub fn event(&mut self, event: SseEvent) -> Result<Vec<SseEvent>, LlmError> {
        let event = self.mask_comments(event);
        let Some(data) = event.data.as_deref() else {
            return Ok(vec![event]);
        };
        let mut out = Vec::new();
        match (self.api, self.endpoint) {
            (Api::OpenAi, endpoint) if endpoint.streams_chunks() && data.trim() == "[DONE]" => {
                self.flush_all(&mut out);
                out.push(Emit::Keep(event));
            }
            (Api::OpenAi, endpoint) if endpoint.streams_chunks() => {
                let value = self.parse_event(data)?;
                self.chat(event, value, &mut out)?;
            }
            (Api::OpenAi, Endpoint::Responses) => {
                let value = self.parse_event(data)?;
                self.responses(event, value, &mut out)?;
            }
            (Api::Anthropic, Endpoint::Messages) => {
                let value = self.parse_event(data)?;
                self.anthropic(event, value, &mut out)?;
            }
            _ => {
                let data = match Json::parse(data.as_bytes()) {
                    Ok(mut value) => {
                        self.findings += json::mask_values(&mut value, &self.masker, &[], &mut |_| {});
                        json_text(&value)
                    }
                    Err(_) => {
                        let mut count = 0;
                        let masked = self.masker.mask_counting(data, &mut |_| count += 1).into_owned();
                        self.findings += count;
                        masked
                    }
                };
                out.push(Emit::Keep(SseEvent { data: Some(data), ..event }));
            }
        }
        Ok(self.emit(out))
    }

    /// The end of the stream: what open channels still hold, in synthetic delta events (a stream that ended without
    /// closing them, cut short or failed).
    pub fn finish(&mut self) -> Result<Vec<SseEvent>, LlmError> {
        let mut out = Vec::new();
        self.flush_all(&mut out);
        Ok(self.emit(out))
    }

    /// The usage the answer reported, once it has.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The first [`ANSWER_TEXT_CAP`] bytes of the answer's text as the client got it, masked.
    pub fn answer_text(&self) -> &str {
        &self.answer
    }

    /// Values masked so far in the stream (a value repeated in several events, as the Responses API repeats the
    /// whole text in its `….done` events, counts each time).
    pub fn masked_count(&self) -> usize {
        self.findings
    }

    fn parse_event(&self, data: &str) -> Result<Json, LlmError> {
        let value = Json::parse(data.as_bytes()).map_err(LlmError::ResponseJson)?;
        if !matches!(value, Json::Object(_)) {
            return Err(self.shape("an event's data is not a JSON object"));
        }
        Ok(value)
    }

    fn shape(&self, reason: impl Into<String>) -> LlmError {
        LlmError::ResponseShape { endpoint: self.endpoint.name(), reason: reason.into() }
    }

    fn mask_comments(&mut self, mut event: SseEvent) -> SseEvent {
        for comment in &mut event.comments {
            let mut count = 0;
            if let std::borrow::Cow::Owned(masked) = self.masker.mask_counting(comment, &mut |_| count += 1) {
                *comment = masked;
            }
            self.findings += count;
        }
        event
    }

    fn mask_whole(&mut self, value: &mut Json, skip: &[&str]) {
        json::drop_logprobs(value);
        self.findings += json::mask_values(value, &self.masker, skip, &mut |_| {});
    }

    // Channels.

    fn open(&mut self, key: ChannelKey, template: (Option<String>, Json), answer: bool) -> Result<usize, LlmError> {
        if let Some(index) = self.channels.iter().position(|channel| channel.key == key) {
            self.channels[index].template = template;
            return Ok(index);
        }
        if self.channels.len() >= MAX_CHANNELS {
            return Err(LlmError::TooManyChannels { limit: MAX_CHANNELS });
        }
        let stream = StreamMasker::new(self.masker.clone(), self.hold_back);
        self.channels.push(Channel { key, stream, template, answer });
        Ok(self.channels.len() - 1)
    }

    fn push(&mut self, index: usize, text: &str) -> String {
        let mut count = 0;
        let channel = &mut self.channels[index];
        let released = channel.stream.push(text, &mut |_| count += 1);
        let answer = channel.answer;
        self.findings += count;
        if answer {
            self.record_answer(&released);
        }
        released
    }

    /// Ends channel `index`: its key, template and the text it still held, masked.
    fn close(&mut self, index: usize) -> (ChannelKey, (Option<String>, Json), String) {
        let mut channel = self.channels.remove(index);
        let mut count = 0;
        let held = channel.stream.finish(&mut |_| count += 1);
        self.findings += count;
        if channel.answer {
            self.record_answer(&held);
        }
        (channel.key, channel.template, held)
    }

    /// Closes every channel `matches` selects, in order, adding a synthetic delta for what each held.
    fn close_where(&mut self, out: &mut Vec<Emit>, matches: &dyn Fn(&ChannelKey) -> bool) {
        while let Some(index) = self.channels.iter().position(|channel| matches(&channel.key)) {
            let (key, template, held) = self.close(index);
            if let Some(event) = synthetic(&key, template, held) {
                out.push(Emit::Json(event.0, event.1));
            }
        }
    }

    fn flush_all(&mut self, out: &mut Vec<Emit>) {
        self.close_where(out, &|_| true);
    }

    fn record_answer(&mut self, text: &str) {
        let room = ANSWER_TEXT_CAP - self.answer.len();
        if room == 0 || text.is_empty() {
            return;
        }
        let mut end = text.len().min(room);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.answer.push_str(&text[..end]);
    }

    // OpenAI chat completions.

    fn chat(&mut self, event: SseEvent, mut chunk: Json, out: &mut Vec<Emit>) -> Result<(), LlmError> {
        if let Some(usage) = chunk.member("usage").and_then(|usage| read_usage(self.api, usage)) {
            self.usage = Some(usage);
        }
        if self.strip_usage_chunk && chunk.get("usage").is_some_and(Json::is_null) {
            chunk.remove("usage");
        }
        let mut choices = match chunk.get_mut("choices").map(|slot| std::mem::replace(slot, Json::Null)) {
            Some(Json::Array(choices)) => choices,
            None | Some(Json::Null) => {
                // Not a chunk (an error object): every string masked.
                self.mask_whole(&mut chunk, &[]);
                out.push(Emit::Json(event.event, chunk));
                return Ok(());
            }
            Some(_) => return Err(self.shape("\"choices\" is not an array")),
        };
        if self.strip_usage_chunk && choices.is_empty() && chunk.member("usage").is_some() {
            return Ok(());
        }
        // The chunk without its choices: the template of synthetic chunks.
        let mut template = chunk.clone();
        template.set("choices", Json::Null);
        if template.get("usage").is_some() {
            template.set("usage", Json::Null);
        }
        for choice in &mut choices {
            self.chat_choice(choice, &event.event, &template, out)?;
        }
        // The rest of the chunk (ids, model, fingerprint) masked whole, as any other string.
        self.mask_whole(&mut chunk, &["choices"]);
        chunk.set("choices", Json::Array(choices));
        out.push(Emit::Json(event.event, chunk));
        Ok(())
    }

    fn chat_choice(
        &mut self,
        choice: &mut Json,
        event_name: &Option<String>,
        template: &Json,
        out: &mut Vec<Emit>,
    ) -> Result<(), LlmError> {
        let index =
            choice.get("index").and_then(Json::as_u64).ok_or_else(|| self.shape("a choice without an index"))?;
        if choice.get("logprobs").is_some() {
            choice.set("logprobs", Json::Null);
        }
        let mut present: Vec<ChatPart> = Vec::new();
        if let Some(Json::String(text)) = choice.get_mut("text") {
            let key = ChannelKey::Chat { choice: index, part: ChatPart::Text };
            let channel = self.open(key, (event_name.clone(), template.clone()), true)?;
            *text = self.push(channel, text);
            present.push(ChatPart::Text);
        }
        if let Some(delta) = choice.get_mut("delta").filter(|delta| !delta.is_null()) {
            if !matches!(delta, Json::Object(_)) {
                return Err(self.shape("a choice's delta is not an object"));
            }
            for (part, member) in [(ChatPart::Content, "content"), (ChatPart::Refusal, "refusal")] {
                if let Some(Json::String(text)) = delta.get_mut(member) {
                    let key = ChannelKey::Chat { choice: index, part };
                    let channel = self.open(key, (event_name.clone(), template.clone()), true)?;
                    *text = self.push(channel, text);
                    present.push(part);
                }
            }
            match delta.get_mut("tool_calls") {
                None | Some(Json::Null) => {}
                Some(Json::Array(calls)) => {
                    for call in calls {
                        let tool = call
                            .get("index")
                            .and_then(Json::as_u64)
                            .ok_or_else(|| self.shape("a tool call delta without an index"))?;
                        if let Some(Json::String(arguments)) =
                            call.get_mut("function").and_then(|function| function.get_mut("arguments"))
                        {
                            let part = ChatPart::ToolArguments(tool);
                            let key = ChannelKey::Chat { choice: index, part };
                            let channel = self.open(key, (event_name.clone(), template.clone()), false)?;
                            *arguments = self.push(channel, arguments);
                            present.push(part);
                        }
                    }
                }
                Some(_) => return Err(self.shape("a delta's tool_calls is not an array")),
            }
            // Anything else in the delta (an audio transcript, future members) is masked whole.
            self.mask_whole(delta, &["content", "refusal", "tool_calls", "role"]);
        }
        if choice.member("finish_reason").is_some() {
            // What the choice's channels hold goes out now: into this chunk's delta for a member it carries, in a
            // synthetic chunk before it otherwise.
            while let Some(position) = self
                .channels
                .iter()
                .position(|channel| matches!(channel.key, ChannelKey::Chat { choice, .. } if choice == index))
            {
                let (key, template, held) = self.close(position);
                let ChannelKey::Chat { part, .. } = key else { continue };
                if present.contains(&part) {
                    if let Some(text) = chat_part_text(choice, part) {
                        text.push_str(&held);
                    }
                } else if let Some(event) = synthetic(&key, template, held) {
                    out.push(Emit::Json(event.0, event.1));
                }
            }
        }
        Ok(())
    }

    // OpenAI responses.

    fn responses(&mut self, event: SseEvent, mut value: Json, out: &mut Vec<Emit>) -> Result<(), LlmError> {
        let kind = value.str_member("type").ok_or_else(|| self.shape("an event without a \"type\""))?.to_string();
        let key_of = |value: &Json, base: &str| ChannelKey::Responses {
            base: base.to_string(),
            item: value.str_member("item_id").map(str::to_string),
            output: value.get("output_index").and_then(Json::as_u64),
            content: value.get("content_index").and_then(Json::as_u64),
            summary: value.get("summary_index").and_then(Json::as_u64),
        };
        if kind == "response.audio.delta" {
            // Audio, not text.
        } else if let (Some(base), Some(Json::String(_))) = (kind.strip_suffix(".delta"), value.get("delta")) {
            let key = key_of(&value, base);
            let answer = matches!(base, "response.output_text" | "response.refusal");
            if value.get("logprobs").is_some() {
                value.set("logprobs", Json::Array(Vec::new()));
            }
            let channel = self.open(key, (event.event.clone(), value.clone()), answer)?;
            if let Some(Json::String(delta)) = value.get_mut("delta") {
                *delta = self.push(channel, delta);
            }
        } else {
            if let Some(base) = kind.strip_suffix(".done") {
                let key = key_of(&value, base);
                self.close_where(out, &|channel| *channel == key);
            }
            match kind.as_str() {
                "response.output_item.done" => {
                    let item = value.get("item").and_then(|item| item.str_member("id")).map(str::to_string);
                    let output = value.get("output_index").and_then(Json::as_u64);
                    self.close_where(out, &|channel| {
                        matches!(channel, ChannelKey::Responses { item: channel_item, output: channel_output, .. }
                            if (item.is_some() && *channel_item == item) || (output.is_some() && *channel_output == output))
                    });
                }
                "response.content_part.done" => {
                    let item = value.str_member("item_id").map(str::to_string);
                    let content = value.get("content_index").and_then(Json::as_u64);
                    self.close_where(out, &|channel| {
                        matches!(channel, ChannelKey::Responses { item: channel_item, content: channel_content, .. }
                            if *channel_item == item && *channel_content == content)
                    });
                }
                "response.completed" | "response.incomplete" | "response.failed" | "error" => {
                    self.flush_all(out);
                    if let Some(usage) = value
                        .get("response")
                        .and_then(|response| response.member("usage"))
                        .and_then(|usage| read_usage(self.api, usage))
                    {
                        self.usage = Some(usage);
                    }
                }
                _ => {}
            }
            self.mask_whole(&mut value, &[]);
        }
        out.push(Emit::Json(event.event, value));
        Ok(())
    }

    // Anthropic messages.

    fn anthropic(&mut self, event: SseEvent, mut value: Json, out: &mut Vec<Emit>) -> Result<(), LlmError> {
        let kind = value.str_member("type").ok_or_else(|| self.shape("an event without a \"type\""))?.to_string();
        let block_index = |value: &Json| value.get("index").and_then(Json::as_u64);
        match kind.as_str() {
            "content_block_delta" => {
                let index = block_index(&value).ok_or_else(|| self.shape("a content_block_delta without an index"))?;
                let delta_type = value.get("delta").and_then(|delta| delta.str_member("type")).unwrap_or_default();
                let member = match delta_type {
                    "text_delta" => Some("text"),
                    "input_json_delta" => Some("partial_json"),
                    "thinking_delta" => Some("thinking"),
                    _ => None,
                };
                let text_member = member.filter(|member| {
                    value.get("delta").and_then(|delta| delta.get(member)).is_some_and(|text| text.as_str().is_some())
                });
                match text_member {
                    Some(member) => {
                        let key = ChannelKey::Anthropic { index };
                        let answer = member == "text";
                        let channel = self.open(key, (event.event.clone(), value.clone()), answer)?;
                        if let Some(Json::String(text)) = value.get_mut("delta").and_then(|delta| delta.get_mut(member))
                        {
                            *text = self.push(channel, text);
                        }
                    }
                    // A signature is the provider's, opaque; citations and future deltas are masked whole.
                    None if delta_type == "signature_delta" => {}
                    None => self.mask_whole(&mut value, &[]),
                }
            }
            "content_block_stop" => {
                let index = block_index(&value).ok_or_else(|| self.shape("a content_block_stop without an index"))?;
                self.close_where(out, &|channel| *channel == ChannelKey::Anthropic { index });
            }
            "message_stop" => self.flush_all(out),
            "ping" => {}
            _ => {
                if kind == "message_start" || kind == "message_delta" {
                    let usage = match kind.as_str() {
                        "message_start" => value.get("message").and_then(|message| message.member("usage")),
                        _ => value.member("usage"),
                    };
                    if let Some(usage) = usage {
                        self.anthropic_usage(usage);
                    }
                }
                // Thinking signatures and redacted thinking are the provider's, opaque.
                self.mask_whole(&mut value, &["signature", "data"]);
            }
        }
        out.push(Emit::Json(event.event, value));
        Ok(())
    }

    fn anthropic_usage(&mut self, usage: &Json) {
        let fields = ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"];
        for (slot, field) in self.anthropic_usage.iter_mut().zip(fields) {
            if let Some(value) = usage.get(field).and_then(Json::as_u64) {
                *slot = Some(value);
            }
        }
        let [input, creation, read, output] = self.anthropic_usage;
        if input.is_some() || output.is_some() {
            let input_tokens = input.unwrap_or(0) + creation.unwrap_or(0) + read.unwrap_or(0);
            let output_tokens = output.unwrap_or(0);
            self.usage = Some(Usage { input_tokens, output_tokens, total_tokens: input_tokens + output_tokens });
        }
    }

    /// Serialises what an event became, renumbering the Responses API's sequence numbers.
    fn emit(&mut self, out: Vec<Emit>) -> Vec<SseEvent> {
        out.into_iter()
            .map(|emit| match emit {
                Emit::Keep(event) => event,
                Emit::Json(name, mut value) => {
                    if let Some(number) = value.get("sequence_number").and_then(Json::as_u64) {
                        let next = *self.next_sequence.get_or_insert(number);
                        value.set("sequence_number", Json::Number(next.into()));
                        self.next_sequence = Some(next + 1);
                    }
                    SseEvent { event: name, data: Some(json_text(&value)), ..SseEvent::default() }
                }
            })
            .collect()
    }
}

impl std::fmt::Debug for ResponseMasker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ResponseMasker")
            .field("api", &self.api)
            .field("endpoint", &self.endpoint)
            .field("open_channels", &self.channels.len())
            .field("usage", &self.usage)
            .field("findings", &self.findings)
            .finish_non_exhaustive()
    }
}

/// An event to emit: passed through as it is, or rebuilt from its JSON (the original's comments were only
/// keep-alives of its own frame, and are not kept on rebuilt events).
enum Emit {
    Keep(SseEvent),
    Json(Option<String>, Json),
}

fn json_text(value: &Json) -> String {
    String::from_utf8(value.to_vec()).expect("serde_json writes UTF-8")
}

/// The string member of a choice (of its delta, but for a legacy completion's text) that `part` streams.
fn chat_part_text(choice: &mut Json, part: ChatPart) -> Option<&mut String> {
    let text = match part {
        ChatPart::Text => choice.get_mut("text"),
        ChatPart::Content => choice.get_mut("delta")?.get_mut("content"),
        ChatPart::Refusal => choice.get_mut("delta")?.get_mut("refusal"),
        ChatPart::ToolArguments(tool) => match choice.get_mut("delta")?.get_mut("tool_calls") {
            Some(Json::Array(calls)) => calls
                .iter_mut()
                .find(|call| call.get("index").and_then(Json::as_u64) == Some(tool))
                .and_then(|call| call.get_mut("function"))
                .and_then(|function| function.get_mut("arguments")),
            _ => None,
        },
    };
    match text {
        Some(Json::String(text)) => Some(text),
        _ => None,
    }
}

/// The event that releases `held`, the end of channel `key`, shaped like its deltas; none when nothing was held.
fn synthetic(key: &ChannelKey, template: (Option<String>, Json), held: String) -> Option<(Option<String>, Json)> {
    if held.is_empty() {
        return None;
    }
    let (name, mut value) = template;
    match key {
        ChannelKey::Chat { choice, part } => {
            // Only the one member: an accumulating client appends every string it is given to what it has.
            let (member, text) = match part {
                ChatPart::Text => ("text", Json::String(held)),
                ChatPart::Content => ("delta", Json::Object(vec![("content".into(), Json::String(held))])),
                ChatPart::Refusal => ("delta", Json::Object(vec![("refusal".into(), Json::String(held))])),
                ChatPart::ToolArguments(tool) => (
                    "delta",
                    Json::Object(vec![(
                        "tool_calls".into(),
                        Json::Array(vec![Json::Object(vec![
                            ("index".into(), Json::Number((*tool).into())),
                            ("function".into(), Json::Object(vec![("arguments".into(), Json::String(held))])),
                        ])]),
                    )]),
                ),
            };
            let choice = Json::Object(vec![
                ("index".into(), Json::Number((*choice).into())),
                (member.into(), text),
                ("logprobs".into(), Json::Null),
                ("finish_reason".into(), Json::Null),
            ]);
            value.set("choices", Json::Array(vec![choice]));
        }
        ChannelKey::Responses { .. } => value.set("delta", Json::String(held)),
        ChannelKey::Anthropic { .. } => {
            let member = match value.get("delta").and_then(|delta| delta.str_member("type")) {
                Some("input_json_delta") => "partial_json",
                Some("thinking_delta") => "thinking",
                _ => "text",
            };
            if let Some(delta) = value.get_mut("delta") {
                delta.set(member, Json::String(held));
            }
        }
    }
    Some((name, value))
}

/// Usage from a provider's `usage` object: OpenAI's `prompt_tokens`/`completion_tokens` or
/// `input_tokens`/`output_tokens`, Anthropic's with its cache reads and writes added to the input.
pub(crate) fn read_usage(api: Api, usage: &Json) -> Option<Usage> {
    let field = |name: &str| usage.get(name).and_then(Json::as_u64);
    let mut input = field("prompt_tokens").or_else(|| field("input_tokens"));
    if api == Api::Anthropic {
        let cached = field("cache_creation_input_tokens").unwrap_or(0) + field("cache_read_input_tokens").unwrap_or(0);
        input = input.map(|input| input + cached);
    }
    let output = field("completion_tokens").or_else(|| field("output_tokens"));
    if input.is_none() && output.is_none() {
        return None;
    }
    let (input_tokens, output_tokens) = (input.unwrap_or(0), output.unwrap_or(0));
    let total_tokens = field("total_tokens").unwrap_or(input_tokens + output_tokens);
    Some(Usage { input_tokens, output_tokens, total_tokens })
}

#[cfg(test)]
mod tests;
