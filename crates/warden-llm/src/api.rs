//! The provider APIs warden understands, which endpoint a request is for, and what a request body asks: model,
//! streaming, token budget, and the prompt texts (every text the model will read: messages, system prompts and
//! instructions, tool call arguments and tool results, embedding inputs).
//!
//! A body of a known endpoint must have the shape the provider documents; anything else (not JSON, a repeated key,
//! a field of the wrong type, a content part or block type warden does not know and so cannot inspect) is an
//! [`LlmError`] the gateway answers with 400. Non-text inputs (images, audio, files) are not prompt texts and are
//! not inspected.

use crate::json::Json;
use crate::LlmError;

/// A provider API, as `api = "…"` names it in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI's API (and the many servers compatible with it).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }
}

impl std::str::FromStr for Api {
    type Err = String;

    fn from_str(name: &str) -> Result<Api, String> {
        match name {
            "openai" => Ok(Api::OpenAi),
            "anthropic" => Ok(Api::Anthropic),
            other => Err(format!("unknown api \"{other}\" (expected openai or anthropic)")),
        }
    }
}

/// The endpoints warden understands; everything else is [`Endpoint::Other`] (forwarded as plain HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI's legacy `POST /v1/completions` (a `prompt`, answered in `choices[].text`).
    Completions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`: a messages request, counted, not answered; its prompts still go to
    /// the provider.
    CountTokens,
    /// OpenAI `POST /v1/responses/input_tokens`: a responses request, counted, not answered.
    InputTokens,
    /// Anthropic `POST /v1/messages/batches`: messages requests (`requests[].params`), answered later. Every request
    /// of a batch must name the same model: warden decides a request (and policy sees its model) as one.
    MessageBatches,
    /// `GET /v1/models` and `GET /v1/models/{id}`, either API.
    Models,
    Other,
}

impl Endpoint {
    /// The endpoint of `method` on `path`, the path after the connection's prefix, with or without its `/v1`
    /// (`/v1/chat/completions` or `/chat/completions` when the client's base URL ends in `/v1`); a query string
    /// and a trailing slash are ignored.
    pub fn of(api: Api, method: &str, path: &str) -> Endpoint {
        let path = normalized(path);
        let post = method.eq_ignore_ascii_case("POST");
        let get = method.eq_ignore_ascii_case("GET");
        match (api, path) {
            (Api::OpenAi, "/chat/completions") if post => Endpoint::ChatCompletions,
            (Api::OpenAi, "/completions") if post => Endpoint::Completions,
            (Api::OpenAi, "/responses") if post => Endpoint::Responses,
            (Api::OpenAi, "/responses/input_tokens") if post => Endpoint::InputTokens,
            (Api::OpenAi, "/embeddings") if post => Endpoint::Embeddings,
            (Api::Anthropic, "/messages") if post => Endpoint::Messages,
            (Api::Anthropic, "/messages/count_tokens") if post => Endpoint::CountTokens,
            (Api::Anthropic, "/messages/batches") if post => Endpoint::MessageBatches,
            (_, "/models") if get => Endpoint::Models,
            (_, models) if get && models.strip_prefix("/models/").is_some_and(|id| !id.is_empty()) => Endpoint::Models,
            _ => Endpoint::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat completions",
            Endpoint::Completions => "completions",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count tokens",
            Endpoint::InputTokens => "input tokens",
            Endpoint::MessageBatches => "message batches",
            Endpoint::Models => "models",
            Endpoint::Other => "other",
        }
    }

    /// Whether requests to it carry prompts (and so are inspected and guarded).
    pub fn has_prompts(self) -> bool {
        matches!(
            self,
            Endpoint::ChatCompletions
                | Endpoint::Completions
                | Endpoint::Responses
                | Endpoint::Embeddings
                | Endpoint::Messages
                | Endpoint::CountTokens
                | Endpoint::InputTokens
                | Endpoint::MessageBatches
        )
    }

    /// Whether its streamed answer is chat-completion chunks (`choices`, a final usage chunk when asked with
    /// `stream_options.include_usage`).
    pub(crate) fn streams_chunks(self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Completions)
    }

    /// The request member that caps the answer's tokens, if the endpoint has one.
    pub(crate) fn max_tokens_field(self) -> Option<&'static str> {
        match self {
            Endpoint::ChatCompletions => Some("max_completion_tokens"),
            Endpoint::Responses => Some("max_output_tokens"),
            // A batch's cap is on each of its requests (see [`capped_objects`]).
            Endpoint::Messages | Endpoint::Completions | Endpoint::MessageBatches => Some("max_tokens"),
            _ => None,
        }
    }
}

/// `path` without its query, a trailing slash and a leading `/v1`.
pub(crate) fn normalized(path: &str) -> &str {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.strip_suffix('/').unwrap_or(path);
    path.strip_prefix("/v1").filter(|rest| rest.starts_with('/')).unwrap_or(path)
}

/// Whether `method` on `path` creates a batch, whose requests run later and report their tokens only in the
/// results: OpenAI `POST /v1/batches`, Anthropic `POST /v1/messages/batches`.
pub fn creates_batch(api: Api, method: &str, path: &str) -> bool {
    let path = normalized(path);
    method.eq_ignore_ascii_case("POST")
        && match api {
            Api::OpenAi => path == "/batches",
            Api::Anthropic => path == "/messages/batches",
        }
}

/// Whether `method` on `path` uploads a file to OpenAI (`POST /v1/files`), which may be a batch's input (see
/// [`crate::PromptGuard::apply_batch_upload`]).
pub fn is_file_upload(api: Api, method: &str, path: &str) -> bool {
    api == Api::OpenAi && method.eq_ignore_ascii_case("POST") && normalized(path) == "/files"
}

/// Whether `method` on `path` starts an OpenAI upload in parts (`POST /v1/uploads`), which may be a batch's input
/// (see [`crate::PromptGuard::check_upload_start`]).
pub fn starts_upload(api: Api, method: &str, path: &str) -> bool {
    api == Api::OpenAi && method.eq_ignore_ascii_case("POST") && normalized(path) == "/uploads"
}

/// Whether `method` on `path` is answered with Anthropic message batch objects (create, list, retrieve, cancel),
/// whose `results_url` names where the results are: on the provider, where the SDKs then fetch them from directly,
/// past warden and with the client's warden credential (see [`gateway_results_urls`]).
pub fn answers_batches(api: Api, method: &str, path: &str) -> bool {
    let path = normalized(path);
    let get_or_post = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("POST");
    api == Api::Anthropic
        && get_or_post
        && (path == "/messages/batches"
            || path
                .strip_prefix("/messages/batches/")
                .is_some_and(|rest| !rest.is_empty() && !rest.ends_with("/results")))
}

/// Stands for the connection's URL on warden in a `results_url` [`gateway_results_urls`] moved, until
/// [`place_gateway`] puts the URL in: masking runs in between, and must not take an address in that URL (warden's
/// own, `127.0.0.1` or `10.0.0.5`) for personal data.
pub const GATEWAY_MARKER: &str = "WARDEN-GATEWAY-URL";

/// An answer of message batch objects (one, or a list's `data`) with every `results_url` under `upstream` (the
/// connection's base URL) moved under [`GATEWAY_MARKER`], which [`place_gateway`] replaces with the connection's URL
/// on warden once the answer is masked; so the results are fetched through warden too. `None` when there is nothing
/// to move, or the body is not JSON.
pub fn gateway_results_urls(body: &[u8], upstream: &str) -> Option<Vec<u8>> {
    let mut value = Json::parse(body).ok()?;
    let upstream = upstream.trim_end_matches('/');
    let mut moved = false;
    let mut move_url = |batch: &mut Json| {
        let rest = match batch.get("results_url") {
            Some(Json::String(url)) => url.strip_prefix(upstream).filter(|rest| rest.starts_with('/')),
            _ => None,
        };
        if let Some(rest) = rest.map(str::to_string) {
            batch.set("results_url", Json::String(format!("{GATEWAY_MARKER}{rest}")));
            moved = true;
        }
    };
    match value.get_mut("data") {
        Some(Json::Array(batches)) => batches.iter_mut().for_each(&mut move_url),
        _ => move_url(&mut value),
    }
    moved.then(|| value.to_vec())
}

/// `body` with every [`GATEWAY_MARKER`] replaced by `gateway` (which must need no escaping in a JSON string).
pub fn place_gateway(body: &[u8], gateway: &str) -> Vec<u8> {
    let gateway = gateway.trim_end_matches('/').as_bytes();
    let mut out = Vec::with_capacity(body.len());
    let mut from = 0;
    for at in memchr::memmem::find_iter(body, GATEWAY_MARKER) {
        out.extend_from_slice(&body[from..at]);
        out.extend_from_slice(gateway);
        from = at + GATEWAY_MARKER.len();
    }
    out.extend_from_slice(&body[from..]);
    out
}

/// The objects of a request body that hold its token cap: the body itself, or each request's `params` in a batch
/// (whose shape [`parse`] has checked).
pub(crate) fn capped_objects(endpoint: Endpoint, body: &mut Json) -> Vec<&mut Json> {
    if endpoint != Endpoint::MessageBatches {
        return vec![body];
    }
    match body.get_mut("requests") {
        Some(Json::Array(requests)) => requests.iter_mut().filter_map(|request| request.get_mut("params")).collect(),
        _ => Vec::new(),
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmRequest {
    pub api: Api,
    pub endpoint: Endpoint,
    pub model: Option<String>,
    /// The answer is streamed (server-sent events).
    pub stream: bool,
    /// The token budget asked for: chat `max_completion_tokens` (or the older `max_tokens`, the smaller if both),
    /// responses `max_output_tokens`, messages `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Chat `stream_options.include_usage`, when given.
    pub include_usage: Option<bool>,
    /// The prompt texts, in document order.
    pub prompts: Vec<String>,
    /// Some input is text warden cannot read: embeddings given as token ids.
    pub opaque_input: bool,
}

/// A request read once ([`LlmRequest::read`]): what it asks, and its body as the guard
/// ([`PromptGuard::apply_read`](crate::PromptGuard::apply_read)) goes on from, so that it is not parsed again.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub request: LlmRequest,
    pub(crate) body: Option<Json>,
}

impl LlmRequest {
    /// Reads `body`, a request to `endpoint`. Endpoints without prompts ([`Endpoint::Models`],
    /// [`Endpoint::Other`]) are not read and give an empty request.
    pub fn inspect(api: Api, endpoint: Endpoint, body: &[u8]) -> Result<LlmRequest, LlmError> {
        Ok(Self::read(api, endpoint, body)?.request)
    }

    /// Reads `body` as [`LlmRequest::inspect`] does, keeping it parsed for the guard.
    pub fn read(api: Api, endpoint: Endpoint, body: &[u8]) -> Result<ReadRequest, LlmError> {
        let (body, request) = parse(api, endpoint, body)?;
        Ok(ReadRequest { request, body })
    }

    /// The prompt texts as one text (for the audit trail), separated by blank lines.
    pub fn prompt_text(&self) -> String {
        self.prompts.join("\n\n")
    }
}

/// The body as JSON (absent for endpoints without prompts) and what it asks.
pub(crate) fn parse(api: Api, endpoint: Endpoint, body: &[u8]) -> Result<(Option<Json>, LlmRequest), LlmError> {
    let mut request = LlmRequest {
        api,
        endpoint,
        model: None,
        stream: false,
        max_tokens: None,
        include_usage: None,
        prompts: Vec::new(),
        opaque_input: false,
    };
    if !endpoint.has_prompts() {
        return Ok((None, request));
    }
    let mut value = Json::parse(body).map_err(LlmError::RequestJson)?;
    let shape = |reason: String| LlmError::RequestShape { endpoint: endpoint.name(), reason };
    if !matches!(value, Json::Object(_)) {
        return Err(shape("the body is not a JSON object".into()));
    }
    if endpoint == Endpoint::MessageBatches {
        let (model, max_tokens) = batch_model(&mut value).map_err(shape)?;
        request.model = model;
        request.max_tokens = max_tokens;
        let mut prompts = Vec::new();
        visit_prompts(endpoint, &mut value, &mut |text| prompts.push(text.clone())).map_err(shape)?;
        request.prompts = prompts;
        return Ok((Some(value), request));
    }
    request.model = optional_string(&value, "model").map_err(shape)?;
    request.stream = match value.member("stream") {
        None => false,
        Some(Json::Bool(stream)) => *stream,
        Some(_) => return Err(shape("\"stream\" is not a boolean".into())),
    };
    let budget = |name: &str| -> Result<Option<u64>, String> {
        match value.member(name) {
            None => Ok(None),
            Some(number) => number.as_u64().map(Some).ok_or_else(|| format!("\"{name}\" is not a whole number")),
        }
    };
    request.max_tokens = match endpoint {
        Endpoint::ChatCompletions => {
            match (budget("max_completion_tokens").map_err(shape)?, budget("max_tokens").map_err(shape)?) {
                (Some(one), Some(other)) => Some(one.min(other)),
                (one, other) => one.or(other),
            }
        }
        Endpoint::Responses => budget("max_output_tokens").map_err(shape)?,
        Endpoint::Messages | Endpoint::Completions => budget("max_tokens").map_err(shape)?,
        _ => None,
    };
    if endpoint.streams_chunks() {
        request.include_usage = match value.member("stream_options") {
            None => None,
            Some(options @ Json::Object(_)) => match options.member("include_usage") {
                None => None,
                Some(Json::Bool(include)) => Some(*include),
                Some(_) => return Err(shape("\"stream_options.include_usage\" is not a boolean".into())),
            },
            Some(_) => return Err(shape("\"stream_options\" is not an object".into())),
        };
    }
    let mut prompts = Vec::new();
    request.opaque_input =
        visit_prompts(endpoint, &mut value, &mut |text| prompts.push(text.clone())).map_err(shape)?;
    request.prompts = prompts;
    Ok((Some(value), request))
}

/// The one model a batch's requests name, and the largest `max_tokens` they ask. A batch naming several models is
/// refused: policy and the allow-list decide on one.
fn batch_model(body: &mut Json) -> Result<(Option<String>, Option<u64>), String> {
    let requests = required_array(body, "requests")?;
    let mut model: Option<String> = None;
    let mut max_tokens: Option<u64> = None;
    for (index, request) in requests.iter().enumerate() {
        let params = match request.member("params") {
            Some(params @ Json::Object(_)) => params,
            _ => return Err(format!("requests[{index}].params is missing or not an object")),
        };
        let named = optional_string(params, "model").map_err(|reason| format!("requests[{index}].params: {reason}"))?;
        let named = named.ok_or_else(|| format!("requests[{index}].params names no model"))?;
        match &model {
            Some(first) if *first != named => {
                return Err(format!(
                    "its requests name different models (\"{first}\", \"{named}\"); send one batch per model"
                ))
            }
            Some(_) => {}
            None => model = Some(named),
        }
        if let Some(asked) = params.member("max_tokens") {
            let asked = asked
                .as_u64()
                .ok_or_else(|| format!("requests[{index}].params: \"max_tokens\" is not a whole number"))?;
            max_tokens = Some(max_tokens.map_or(asked, |most: u64| most.max(asked)));
        }
    }
    Ok((model, max_tokens))
}

fn optional_string(value: &Json, key: &str) -> Result<Option<String>, String> {
    match value.member(key) {
        None => Ok(None),
        Some(Json::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(format!("\"{key}\" is not a string")),
    }
}

/// Calls `visit` on every prompt text of a request body of `endpoint` (which may rewrite it); returns whether some
/// input is opaque (token ids). An error says what is wrong with the shape.
pub(crate) fn visit_prompts(
    endpoint: Endpoint,
    body: &mut Json,
    visit: &mut dyn FnMut(&mut String),
) -> Result<bool, String> {
    match endpoint {
        Endpoint::ChatCompletions => {
            let messages = required_array(body, "messages")?;
            for (index, message) in messages.iter_mut().enumerate() {
                chat_message(message, visit).map_err(|reason| format!("messages[{index}]: {reason}"))?;
            }
            Ok(false)
        }
        Endpoint::Responses | Endpoint::InputTokens => {
            if let Some(instructions) = body.get_mut("instructions") {
                responses_input(instructions, visit).map_err(|reason| format!("instructions: {reason}"))?;
            }
            if let Some(input) = body.get_mut("input") {
                responses_input(input, visit).map_err(|reason| format!("input: {reason}"))?;
            }
            // A stored prompt's variables are substituted into it.
            if let Some(Json::Object(variables)) = body.get_mut("prompt").and_then(|prompt| prompt.get_mut("variables"))
            {
                for (name, variable) in variables {
                    match variable {
                        Json::String(text) => visit(text),
                        part @ Json::Object(_) => {
                            content_part(part, visit).map_err(|reason| format!("prompt.variables.{name}: {reason}"))?
                        }
                        _ => return Err(format!("prompt.variables.{name} is not a string or a content part")),
                    }
                }
            }
            Ok(false)
        }
        Endpoint::Embeddings => texts_or_tokens(body, "input", visit),
        Endpoint::Completions => {
            if let Some(suffix) = body.get_mut("suffix") {
                match suffix {
                    Json::String(text) => visit(text),
                    Json::Null => {}
                    _ => return Err("\"suffix\" is not a string".into()),
                }
            }
            match body.get("prompt") {
                // The API's default prompt is its end-of-text token.
                None | Some(Json::Null) => Ok(false),
                Some(_) => texts_or_tokens(body, "prompt", visit),
            }
        }
        Endpoint::Messages | Endpoint::CountTokens => messages_prompts(body, visit),
        Endpoint::MessageBatches => {
            let requests = required_array(body, "requests")?;
            for (index, request) in requests.iter_mut().enumerate() {
                match request.get_mut("params") {
                    Some(params @ Json::Object(_)) => messages_prompts(params, visit)
                        .map_err(|reason| format!("requests[{index}].params: {reason}"))?,
                    _ => return Err(format!("requests[{index}].params is missing or not an object")),
                };
            }
            Ok(false)
        }
        Endpoint::Models | Endpoint::Other => Ok(false),
    }
}

/// The prompts of an Anthropic messages request (its system prompt and every message's text).
fn messages_prompts(body: &mut Json, visit: &mut dyn FnMut(&mut String)) -> Result<bool, String> {
    match body.get_mut("system") {
        None | Some(Json::Null) => {}
        Some(Json::String(text)) => visit(text),
        Some(Json::Array(blocks)) => {
            for (index, block) in blocks.iter_mut().enumerate() {
                anthropic_block(block, visit).map_err(|reason| format!("system[{index}]: {reason}"))?;
            }
        }
        Some(_) => return Err("\"system\" is not a string or an array of blocks".into()),
    }
    let messages = required_array(body, "messages")?;
    for (index, message) in messages.iter_mut().enumerate() {
        let content = match message {
            Json::Object(_) => message.get_mut("content"),
            _ => return Err(format!("messages[{index}] is not an object")),
        };
        match content {
            Some(Json::String(text)) => visit(text),
            Some(Json::Array(blocks)) => {
                for (block_index, block) in blocks.iter_mut().enumerate() {
                    anthropic_block(block, visit)
                        .map_err(|reason| format!("messages[{index}].content[{block_index}]: {reason}"))?;
                }
            }
            _ => return Err(format!("messages[{index}].content is not a string or an array of blocks")),
        }
    }
    Ok(false)
}

/// A member that is a text, or an array of texts, of token ids, or of arrays of token ids (embeddings' `input`,
/// completions' `prompt`): each text visited; whether the input is tokens warden cannot read.
fn texts_or_tokens(body: &mut Json, key: &str, visit: &mut dyn FnMut(&mut String)) -> Result<bool, String> {
    match body.get_mut(key) {
        Some(Json::String(text)) => {
            visit(text);
            Ok(false)
        }
        Some(Json::Array(items)) => {
            // All strings, or all token ids, or all arrays of token ids.
            let class = |item: &Json| match item {
                Json::String(_) => Some(0),
                Json::Number(_) => Some(1),
                Json::Array(tokens) if tokens.iter().all(|token| matches!(token, Json::Number(_))) => Some(2),
                _ => None,
            };
            let first = items.first().map(class);
            if items.iter().any(|item| Some(class(item)) != first || class(item).is_none()) {
                return Err(format!("\"{key}\" mixes strings with other values"));
            }
            for item in items.iter_mut() {
                if let Json::String(text) = item {
                    visit(text);
                }
            }
            Ok(matches!(first, Some(Some(1 | 2))))
        }
        _ => Err(format!("\"{key}\" is not a string or an array")),
    }
}

fn required_array<'a>(body: &'a mut Json, key: &str) -> Result<&'a mut Vec<Json>, String> {
    match body.get_mut(key) {
        Some(Json::Array(items)) => Ok(items),
        Some(_) => Err(format!("\"{key}\" is not an array")),
        None => Err(format!("\"{key}\" is missing")),
    }
}

/// A string member's text, if present and not null; an error if it is something else.
fn visit_string_member(value: &mut Json, key: &str, visit: &mut dyn FnMut(&mut String)) -> Result<(), String> {
    match value.get_mut(key) {
        None | Some(Json::Null) => Ok(()),
        Some(Json::String(text)) => {
            visit(text);
            Ok(())
        }
        Some(_) => Err(format!("\"{key}\" is not a string")),
    }
}

fn chat_message(message: &mut Json, visit: &mut dyn FnMut(&mut String)) -> Result<(), String> {
    if !matches!(message, Json::Object(_)) {
        return Err("not an object".into());
    }
    match message.get_mut("content") {
        None | Some(Json::Null) => {}
        Some(Json::String(text)) => visit(text),
        Some(Json::Array(parts)) => {
            for (index, part) in parts.iter_mut().enumerate() {
                content_part(part, visit).map_err(|reason| format!("content[{index}]: {reason}"))?;
            }
        }
        Some(_) => return Err("\"content\" is not a string or an array of parts".into()),
    }
    visit_string_member(message, "refusal", visit)?;
    match message.get_mut("tool_calls") {
        None | Some(Json::Null) => {}
        Some(Json::Array(calls)) => {
            for (index, call) in calls.iter_mut().enumerate() {
                let result = match call.get_mut("function") {
                    Some(function) => visit_string_member(function, "arguments", visit),
                    // A custom tool's input is free text.
                    None => match call.get_mut("custom") {
                        Some(custom) => visit_string_member(custom, "input", visit),
                        None => Err("neither \"function\" nor \"custom\"".into()),
                    },
                };
                result.map_err(|reason| format!("tool_calls[{index}]: {reason}"))?;
            }
        }
        Some(_) => return Err("\"tool_calls\" is not an array".into()),
    }
    // The deprecated single function call.
    if let Some(function) = message.get_mut("function_call").filter(|call| !call.is_null()) {
        visit_string_member(function, "arguments", visit).map_err(|reason| format!("function_call: {reason}"))?;
    }
    Ok(())
}

/// A content part of a chat message or a Responses API message: the text ones are prompts, the media ones are not
/// read, any other is refused (warden cannot tell whether it carries text).
fn content_part(part: &mut Json, visit: &mut dyn FnMut(&mut String)) -> Result<(), String> {
    let kind = part.str_member("type").ok_or("a part without a \"type\"")?.to_string();
    let text_member = match kind.as_str() {
        "text" | "input_text" | "output_text" => "text",
        "refusal" => "refusal",
        "image_url" | "input_image" | "input_audio" | "file" | "input_file" => return Ok(()),
        other => return Err(format!("unknown content part type \"{other}\"")),
    };
    match part.get_mut(text_member) {
        Some(Json::String(text)) => {
            visit(text);
            Ok(())
        }
        _ => Err(format!("a \"{kind}\" part without a string \"{text_member}\"")),
    }
}

/// Responses API `input` or `instructions`: a string, or an array of input items.
fn responses_input(input: &mut Json, visit: &mut dyn FnMut(&mut String)) -> Result<(), String> {
    match input {
        Json::Null => Ok(()),
        Json::String(text) => {
            visit(text);
            Ok(())
        }
        Json::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                responses_item(item, visit).map_err(|reason| format!("[{index}]: {reason}"))?;
            }
            Ok(())
        }
        _ => Err("not a string or an array of items".into()),
    }
}

/// Input items that carry no text the model reads as a prompt (references, calls of built-in tools and their
/// results, encrypted reasoning).
const RESPONSES_ITEMS_WITHOUT_TEXT: &[&str] = &[
    "item_reference",
    "reasoning",
    "web_search_call",
    "file_search_call",
    "computer_call",
    "computer_call_output",
    "image_generation_call",
    "code_interpreter_call",
    "local_shell_call",
    "local_shell_call_output",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "mcp_call",
];

fn responses_item(item: &mut Json, visit: &mut dyn FnMut(&mut String)) -> Result<(), String> {
    if !matches!(item, Json::Object(_)) {
        return Err("not an object".into());
    }
    // A message may leave out its type.
    let kind = match item.get("type") {
        None => "message".to_string(),
        Some(Json::String(kind)) => kind.clone(),
        Some(_) => return Err("\"type\" is not a string".into()),
    };
    match kind.as_str() {
        "message" => match item.get_mut("content") {
            Some(Json::String(text)) => {
                visit(text);
                Ok(())
            }
            Some(Json::Array(parts)) => {
                for (index, part) in parts.iter_mut().enumerate() {
                    content_part(part, visit).map_err(|reason| format!("content[{index}]: {reason}"))?;
                }
                Ok(())
            }
            _ => Err("a message without a string or array \"content\"".into()),
        },
        "function_call" => visit_string_member(item, "arguments", visit),
        "custom_tool_call" => visit_string_member(item, "input", visit),
        "function_call_output" | "custom_tool_call_output" => match item.get_mut("output") {
            Some(Json::String(text)) => {
                visit(text);
                Ok(())
            }
            Some(Json::Array(parts)) => {
                for (index, part) in parts.iter_mut().enumerate() {
                    content_part(part, visit).map_err(|reason| format!("output[{index}]: {reason}"))?;
                }
                Ok(())
            }
            _ => Err(format!("a {kind} without a string or array \"output\"")),
        },
        other if RESPONSES_ITEMS_WITHOUT_TEXT.contains(&other) => Ok(()),
        other => Err(format!("unknown input item type \"{other}\"")),
    }
}

/// An Anthropic content block.
fn anthropic_block(block: &mut Json, visit: &mut dyn FnMut(&mut String)) -> Result<(), String> {
    let kind = block.str_member("type").ok_or("a block without a \"type\"")?.to_string();
    match kind.as_str() {
        "text" => match block.get_mut("text") {
            Some(Json::String(text)) => {
                visit(text);
                Ok(())
            }
            _ => Err("a text block without a string \"text\"".into()),
        },
        // A tool's input is JSON the model wrote: each of its strings is text.
        "tool_use" | "server_tool_use" => {
            if let Some(input) = block.get_mut("input") {
                visit_strings(input, visit);
            }
            Ok(())
        }
        "tool_result" => match block.get_mut("content") {
            None | Some(Json::Null) => Ok(()),
            Some(Json::String(text)) => {
                visit(text);
                Ok(())
            }
            Some(Json::Array(blocks)) => {
                for (index, inner) in blocks.iter_mut().enumerate() {
                    anthropic_block(inner, visit).map_err(|reason| format!("content[{index}]: {reason}"))?;
                }
                Ok(())
            }
            Some(_) => Err("a tool_result whose content is not a string or an array".into()),
        },
        "search_result" => match block.get_mut("content") {
            Some(Json::Array(blocks)) => {
                for (index, inner) in blocks.iter_mut().enumerate() {
                    anthropic_block(inner, visit).map_err(|reason| format!("content[{index}]: {reason}"))?;
                }
                Ok(())
            }
            _ => Err("a search_result without an array \"content\"".into()),
        },
        // A plain-text document is a prompt; a PDF or an image is not read.
        "document" => {
            let Some(source) = block.get_mut("source") else {
                return Err("a document without a \"source\"".into());
            };
            match source.str_member("type") {
                Some("text") => visit_string_member(source, "data", visit),
                Some("content") => match source.get_mut("content") {
                    Some(Json::String(text)) => {
                        visit(text);
                        Ok(())
                    }
                    Some(Json::Array(blocks)) => {
                        for inner in blocks {
                            anthropic_block(inner, visit)?;
                        }
                        Ok(())
                    }
                    _ => Err("a content document without content".into()),
                },
                _ => Ok(()),
            }
        }
        // Thinking is signed by the provider: changing it would break the conversation, and it is the model's own.
        "image" | "thinking" | "redacted_thinking" | "web_search_tool_result" | "container_upload" => Ok(()),
        other => Err(format!("unknown content block type \"{other}\"")),
    }
}

fn visit_strings(value: &mut Json, visit: &mut dyn FnMut(&mut String)) {
    match value {
        Json::String(text) => visit(text),
        Json::Array(items) => items.iter_mut().for_each(|item| visit_strings(item, visit)),
        Json::Object(members) => members.iter_mut().for_each(|(_, member)| visit_strings(member, visit)),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
