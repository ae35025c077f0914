//! A local stand-in for the LLM providers' HTTP APIs ([`LlmStandIn`]), faithful enough that the official `openai`
//! and `anthropic` SDKs parse everything it answers, streamed or not, with strict response validation on. It
//! serves HTTP/1.1 (keep-alive) on loopback:
//!
//! - OpenAI: `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/responses`,
//!   `POST /v1/responses/input_tokens`, `POST /v1/embeddings`, `GET /v1/models` (the
//!   models asked for so far, plus `gpt-4o-mini` and `gpt-4o`), `GET /v1/models/{id}`, `POST /v1/files`
//!   (multipart/form-data: `purpose` and `file`; the bytes are kept), `GET /v1/files/{id}/content` (the bytes, as
//!   `application/octet-stream`), `POST /v1/batches` (answered as just created, and processed at once: each line of
//!   the input file answered as its endpoint answers it, not streamed, with the creating request's overrides, into
//!   an output file of result lines; a line the stand-in cannot run refuses the batch) and `GET /v1/batches/{id}`
//!   (completed, with its `output_file_id`), authenticated with `Authorization: Bearer <openai_key>`;
//! - Anthropic: `POST /v1/messages`, `POST /v1/messages/count_tokens`, `POST /v1/messages/batches` (answered as
//!   created, and processed at once), `GET /v1/messages/batches/{id}` (ended, with an absolute `results_url`) and
//!   `GET /v1/messages/batches/{id}/results` (JSON lines as `application/binary`), authenticated with
//!   `x-api-key: <anthropic_key>` or, as the current `anthropic` SDKs send an API key, `Authorization: Bearer
//!   <anthropic_key>`, with an `anthropic-version` header required.
//!
//! Every generation answers the same text: [`LlmStandInOptions::answer`] (by default [`DEFAULT_ANSWER`], which
//! carries an email address, a phone number and a card number), unless the request says otherwise (below). A
//! streamed answer is cut into content deltas of about [`LlmStandInOptions::chunk_bytes`] bytes on character
//! boundaries, so with the default 6 bytes every one of those values arrives split across deltas: what a gateway
//! masking streams must reassemble. Each delta is its own SSE event, sent as its own HTTP chunk.
//!
//! **Tokens** are counted deterministically, so tests can assert budgets: a token is a whitespace-separated word.
//! Prompt tokens are the words of every prompt text (system prompt or instructions, and the text of every message
//! or input item: string contents, and the `text` of content blocks), at least 1; for embeddings, the words of
//! every input (a token-array input counts its array's length). Completion tokens are the words of the answer
//! sent. A limit (`max_completion_tokens` or `max_tokens` for chat completions, `max_output_tokens` for responses,
//! `max_tokens` for Anthropic, which requires it) keeps only that many words of the answer, up to the end of the
//! last word kept, and reports the truncation as the provider does: `finish_reason: "length"`, `status:
//! "incomplete"` with `incomplete_details.reason: "max_output_tokens"` (streamed: `response.incomplete` instead of
//! `response.completed`), `stop_reason: "max_tokens"`. Anthropic's `message_start` reports `output_tokens: 1`, as
//! the real API does; the final count is in `message_delta`.
//!
//! **Per-request overrides**, read from request headers (a gateway forwards headers it does not know):
//! - `x-standin-answer: <text>` answers that text (UTF-8) instead of the configured answer;
//! - `x-standin-chunk-bytes: <n>`, `x-standin-chunk-delay-ms: <ms>`, `x-standin-first-delay-ms: <ms>` replace the
//!   options of the same names for that request;
//! - `x-standin-error: <status>` answers that HTTP status with an error body in the provider's format (429 a rate
//!   limit error, 500 a server error, 529 Anthropic's overloaded error, …), after the key is checked;
//! - `x-standin-abort-after: <n>` cuts a streamed answer after `n` content deltas (or after the last one, if
//!   fewer): the connection is closed mid-body, without the terminal events, as an upstream failing mid-stream.
//!
//! And if the text of the last user message starts with `ECHO:`, the answer is the rest of that text (one space
//! after the colon dropped), whatever the headers say, so a test sees its prompt round-trip.
//!
//! Like the real Chat Completions API, streamed chat chunks and response text deltas carry a random `obfuscation`
//! padding field (lower-case letters only, so no PII detector can match it), unless the request sets
//! `stream_options.include_obfuscation: false`; chunks carry `"usage": null` when `include_usage` is on.
//!
//! Every request is recorded ([`LlmStandIn::requests`]; unless [`LlmStandInOptions::record_requests`] is off), and a
//! test can wait for requests without sleeping: the serving task publishes each one on a watch channel. Delays are only the simulated model's pace. Test-only
//! helpers: they panic with a clear message instead of returning errors. The stand-in stops when dropped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rand::Rng;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Sleep;

/// The answer when none is configured: an email address, a phone number and a (test) card number, each longer
/// than the default delta, so streaming splits every one of them.
pub const DEFAULT_ANSWER: &str =
    "Sure. Write to Jane Roe at jane.roe@example.com or call +1 415 555 0100; her card is 4111 1111 1111 1111.";

/// How long [`LlmStandIn::wait_for_requests`] waits before giving up.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The models `GET /v1/models` always lists, before those asked for.
const LISTED_MODELS: [&str; 2] = ["gpt-4o-mini", "gpt-4o"];

const SYSTEM_FINGERPRINT: &str = "fp_5713a5f1e0";

/// How the stand-in answers.
#[derive(Debug, Clone)]
pub struct LlmStandInOptions {
    /// Expected as `Authorization: Bearer <key>` on the OpenAI routes.
    pub openai_key: String,
    /// Expected as `x-api-key: <key>` (or `Authorization: Bearer <key>`) on the Anthropic routes.
    pub anthropic_key: String,
    /// The assistant text every generation answers.
    pub answer: String,
    /// Streamed answers are cut into deltas of this many bytes (a delta ends at the first character boundary at or
    /// after it); 0 sends the whole answer as one delta.
    pub chunk_bytes: usize,
    /// The pause before each content delta after the first.
    pub chunk_delay: Duration,
    /// The pause before the first content delta, after the opening events (role, start) are sent. A non-streamed
    /// answer is sent after this pause too.
    pub first_delay: Duration,
    /// Whether to keep every request for [`LlmStandIn::requests`] (default); a long benchmark turns it off, so
    /// memory does not grow with every request.
    pub record_requests: bool,
}

impl Default for LlmStandInOptions {
    fn default() -> LlmStandInOptions {
        LlmStandInOptions {
            openai_key: "sk-upstream-openai-test".to_string(),
            anthropic_key: "sk-ant-upstream-test".to_string(),
            answer: DEFAULT_ANSWER.to_string(),
            chunk_bytes: 6,
            chunk_delay: Duration::ZERO,
            first_delay: Duration::ZERO,
            record_requests: true,
        }
    }
}

/// One request as the stand-in received it, whatever it answered.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Every header, names in lower case, in the order hyper keeps them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "the {} {} request's body is not JSON ({error}): {:?}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The stand-in, serving on its own port until dropped.
pub struct LlmStandIn {
    address: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for LlmStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmStandIn").field("address", &self.address).finish_non_exhaustive()
    }
}

impl LlmStandIn {
    /// Starts serving on `127.0.0.1:<a free port>`, on the current tokio runtime.
    pub async fn start(options: LlmStandInOptions) -> LlmStandIn {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        LlmStandIn::bind(loopback, options).await.expect("bind a loopback port for the LLM stand-in")
    }

    /// Starts serving on `address` (port 0 picks a free one), on the current tokio runtime.
    pub async fn bind(address: SocketAddr, options: LlmStandInOptions) -> std::io::Result<LlmStandIn> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let (requests, _) = watch::channel(Vec::new());
        let (models, batches) = (Mutex::new(Vec::new()), Mutex::new(Vec::new()));
        let (files, openai_batches) = (Mutex::new(Vec::new()), Mutex::new(Vec::new()));
        let state = Arc::new(State { options, address, requests, models, batches, files, openai_batches });
        let task = tokio::spawn(serve(listener, state.clone()));
        Ok(LlmStandIn { address, state, task })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:PORT`: the Anthropic SDK's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `http://127.0.0.1:PORT/v1`: the OpenAI SDK's `base_url`.
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// Every request received so far, in order (none unless [`LlmStandInOptions::record_requests`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.borrow().clone()
    }

    /// Waits until at least `n` requests have arrived (panicking after [`WAIT_TIMEOUT`]); every request so far.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<RecordedRequest> {
        let mut receiver = self.state.requests.subscribe();
        let requests = match tokio::time::timeout(WAIT_TIMEOUT, receiver.wait_for(|requests| requests.len() >= n)).await
        {
            Ok(Ok(requests)) => requests.clone(),
            Ok(Err(_)) => panic!("the LLM stand-in stopped while waiting for {n} requests"),
            Err(_) => panic!(
                "timed out after {WAIT_TIMEOUT:?} waiting for {n} requests to the LLM stand-in; it has {}",
                self.state.requests.borrow().len()
            ),
        };
        requests
    }
}

impl Drop for LlmStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    options: LlmStandInOptions,
    /// Where it serves (a batch's `results_url` is absolute, as the API's is).
    address: SocketAddr,
    requests: watch::Sender<Vec<RecordedRequest>>,
    /// The models asked for so far, each once, in order of first use.
    models: Mutex<Vec<String>>,
    /// The message batches created, with their requests' answers.
    batches: Mutex<Vec<(String, Vec<BatchAnswer>)>>,
    /// The OpenAI files: uploaded, and batches' output files.
    files: Mutex<Vec<StoredFile>>,
    /// The OpenAI batches created (each processed at once).
    openai_batches: Mutex<Vec<OpenAiBatch>>,
}

/// A batch request's custom id, model, prompt tokens and answer text.
type BatchAnswer = (String, String, usize, String);

async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Reap finished connections, so a long benchmark does not accumulate them.
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else { continue };
        // Small SSE frames must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, request).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// The error a streamed body ends with when `x-standin-abort-after` asks for it: hyper then closes the connection
/// without finishing the chunked body.
#[derive(Debug, thiserror::Error)]
#[error("the LLM stand-in cut the stream, as x-standin-abort-after asked")]
pub struct StreamCut;

type ResponseBody = UnsyncBoxBody<Bytes, StreamCut>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Anthropic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    ChatCompletions,
    Completions,
    Responses,
    Embeddings,
    Models,
    Model(String),
    Messages,
    CountTokens,
    InputTokens,
    MessageBatches,
    /// `GET /v1/messages/batches/{id}`.
    MessageBatch(String),
    /// `GET /v1/messages/batches/{id}/results`.
    MessageBatchResults(String),
    /// `POST /v1/files`.
    Files,
    /// `GET /v1/files/{id}/content`.
    FileContent(String),
    /// `POST /v1/batches`.
    Batches,
    /// `GET /v1/batches/{id}`.
    Batch(String),
}

impl Endpoint {
    fn of(method: &Method, path: &str) -> Option<Endpoint> {
        let post = method == Method::POST;
        let get = method == Method::GET;
        match path {
            "/v1/chat/completions" if post => Some(Endpoint::ChatCompletions),
            "/v1/completions" if post => Some(Endpoint::Completions),
            "/v1/responses" if post => Some(Endpoint::Responses),
            "/v1/responses/input_tokens" if post => Some(Endpoint::InputTokens),
            "/v1/embeddings" if post => Some(Endpoint::Embeddings),
            "/v1/models" if get => Some(Endpoint::Models),
            "/v1/messages" if post => Some(Endpoint::Messages),
            "/v1/messages/count_tokens" if post => Some(Endpoint::CountTokens),
            "/v1/messages/batches" if post => Some(Endpoint::MessageBatches),
            "/v1/files" if post => Some(Endpoint::Files),
            "/v1/batches" if post => Some(Endpoint::Batches),
            _ if get && path.starts_with("/v1/messages/batches/") => {
                let rest = &path["/v1/messages/batches/".len()..];
                match rest.strip_suffix("/results") {
                    Some(id) if !id.is_empty() => Some(Endpoint::MessageBatchResults(id.to_string())),
                    _ if !rest.is_empty() && !rest.contains('/') => Some(Endpoint::MessageBatch(rest.to_string())),
                    _ => None,
                }
            }
            _ if get && path.starts_with("/v1/files/") => path["/v1/files/".len()..]
                .strip_suffix("/content")
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .map(|id| Endpoint::FileContent(id.to_string())),
            _ if get && path.starts_with("/v1/batches/") => Some(&path["/v1/batches/".len()..])
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .map(|id| Endpoint::Batch(id.to_string())),
            _ if get => {
                path.strip_prefix("/v1/models/").filter(|id| !id.is_empty()).map(|id| Endpoint::Model(id.to_string()))
            }
            _ => None,
        }
    }

    fn provider(&self) -> Provider {
        match self {
            Endpoint::Messages
            | Endpoint::CountTokens
            | Endpoint::MessageBatches
            | Endpoint::MessageBatch(_)
            | Endpoint::MessageBatchResults(_) => Provider::Anthropic,
            _ => Provider::OpenAi,
        }
    }

    /// Whether it answers a generated text (and so waits `first_delay` before a non-streamed answer).
    fn generates(&self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Responses | Endpoint::Messages)
    }
}

/// What a handler answers; [`respond`] adds the headers.
enum Reply {
    Json(StatusCode, Value),
    Stream(SseBody),
    /// A body of its own content type.
    Raw(&'static str, Bytes),
}

impl Reply {
    fn ok(value: Value) -> Reply {
        Reply::Json(StatusCode::OK, value)
    }
}

async fn respond(state: &State, request: Request<Incoming>) -> Response<ResponseBody> {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|body| body.to_bytes()) else {
        return plain(StatusCode::BAD_REQUEST, "could not read the request body");
    };
    if state.options.record_requests {
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        let recorded = RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            headers,
            body: body.to_vec(),
        };
        state.requests.send_modify(|requests| requests.push(recorded));
    }

    let endpoint = Endpoint::of(&parts.method, parts.uri.path());
    let provider = match &endpoint {
        Some(endpoint) => endpoint.provider(),
        None if parts.headers.contains_key("x-api-key") || parts.headers.contains_key("anthropic-version") => {
            Provider::Anthropic
        }
        None => Provider::OpenAi,
    };
    let reply = match endpoint {
        None => not_found(provider, &parts.method, parts.uri.path()),
        Some(endpoint) => match answer(state, &endpoint, &parts.headers, &body) {
            Ok((reply, pause)) => {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                reply
            }
            Err(reply) => reply,
        },
    };
    finish(provider, reply)
}

/// Checks the key, the overrides and the JSON, then lets the endpoint answer; with the pause before sending it (a
/// non-streamed generation waits `first_delay`). `Err` holds an error reply.
fn answer(state: &State, endpoint: &Endpoint, headers: &HeaderMap, body: &[u8]) -> Result<(Reply, Duration), Reply> {
    let provider = endpoint.provider();
    authenticate(provider, headers, &state.options)?;
    let knobs = Knobs::read(headers, &state.options).map_err(|message| bad_request(provider, &message, None))?;
    if let Some(status) = knobs.error {
        return Err(forced_error(provider, status));
    }
    let request = match endpoint {
        Endpoint::Models
        | Endpoint::Model(_)
        | Endpoint::MessageBatch(_)
        | Endpoint::MessageBatchResults(_)
        | Endpoint::Files
        | Endpoint::FileContent(_)
        | Endpoint::Batch(_) => Map::new(),
        _ => parse_json(provider, body)?,
    };
    if let Some(model) = request.get("model").and_then(Value::as_str) {
        let mut models = state.models.lock();
        if !models.iter().any(|known| known == model) {
            models.push(model.to_string());
        }
    }
    let reply = match endpoint {
        Endpoint::ChatCompletions => chat_completions(&knobs, &request)?,
        Endpoint::Completions => completions(&knobs, &request)?,
        Endpoint::Responses => responses(&knobs, &request)?,
        Endpoint::Embeddings => embeddings(&request)?,
        Endpoint::Models => models(state),
        Endpoint::Model(id) => Reply::ok(model_object(id)),
        Endpoint::Messages => messages(&knobs, &request)?,
        Endpoint::CountTokens => count_tokens(&request)?,
        Endpoint::InputTokens => input_tokens(&request)?,
        Endpoint::MessageBatches => message_batch(state, &knobs, &request)?,
        Endpoint::MessageBatch(id) => batch_status(state, id)?,
        Endpoint::MessageBatchResults(id) => batch_results(state, id)?,
        Endpoint::Files => upload_file(state, headers, body)?,
        Endpoint::FileContent(id) => file_content(state, id)?,
        Endpoint::Batches => openai_batch(state, &knobs, &request)?,
        Endpoint::Batch(id) => openai_batch_status(state, id)?,
    };
    let pause = match reply {
        Reply::Json(..) if endpoint.generates() => knobs.first_delay,
        _ => Duration::ZERO,
    };
    Ok((reply, pause))
}

/// The per-request settings: the options, overridden by `x-standin-*` headers.
struct Knobs {
    /// The configured answer, or `x-standin-answer`'s.
    answer: String,
    chunk_bytes: usize,
    chunk_delay: Duration,
    first_delay: Duration,
    abort_after: Option<usize>,
    error: Option<StatusCode>,
}

impl Knobs {
    fn read(headers: &HeaderMap, options: &LlmStandInOptions) -> Result<Knobs, String> {
        let answer = match headers.get("x-standin-answer") {
            Some(value) => {
                String::from_utf8(value.as_bytes().to_vec()).map_err(|_| "x-standin-answer: not UTF-8".to_string())?
            }
            None => options.answer.clone(),
        };
        let error = match header_number(headers, "x-standin-error")? {
            Some(status) => Some(
                u16::try_from(status)
                    .ok()
                    .and_then(|status| StatusCode::from_u16(status).ok())
                    .filter(|status| status.as_u16() >= 400)
                    .ok_or_else(|| format!("x-standin-error: {status} is not an HTTP error status"))?,
            ),
            None => None,
        };
        Ok(Knobs {
            answer,
            chunk_bytes: header_number(headers, "x-standin-chunk-bytes")?.unwrap_or(options.chunk_bytes),
            chunk_delay: header_millis(headers, "x-standin-chunk-delay-ms")?.unwrap_or(options.chunk_delay),
            first_delay: header_millis(headers, "x-standin-first-delay-ms")?.unwrap_or(options.first_delay),
            abort_after: header_number(headers, "x-standin-abort-after")?,
            error,
        })
    }

    /// The answer to a conversation whose last user message says `last_user_text`.
    fn answer_to(&self, last_user_text: Option<String>) -> String {
        match last_user_text.as_deref().and_then(|text| text.strip_prefix("ECHO:")) {
            Some(rest) => rest.strip_prefix(' ').unwrap_or(rest).to_string(),
            None => self.answer.clone(),
        }
    }
}

fn header_number(headers: &HeaderMap, name: &str) -> Result<Option<usize>, String> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| format!("{name}: {value:?} is not a number")),
    }
}

fn header_millis(headers: &HeaderMap, name: &str) -> Result<Option<Duration>, String> {
    Ok(header_number(headers, name)?.map(|millis| Duration::from_millis(millis as u64)))
}

fn authenticate(provider: Provider, headers: &HeaderMap, options: &LlmStandInOptions) -> Result<(), Reply> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    match provider {
        Provider::OpenAi => {
            let presented = header("authorization").and_then(|value| value.strip_prefix("Bearer "));
            if presented == Some(options.openai_key.as_str()) {
                return Ok(());
            }
            let message = match presented {
                None => "You didn't provide an API key. You need to provide your API key in an Authorization \
                         header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                    .to_string(),
                Some(key) => format!(
                    "Incorrect API key provided: {}. You can find your API key at \
                     https://platform.openai.com/account/api-keys.",
                    redacted_key(key)
                ),
            };
            Err(openai_error(
                StatusCode::UNAUTHORIZED,
                &message,
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ))
        }
        // The SDK sent `x-api-key` until recently; its current versions send the API key as a bearer token.
        Provider::Anthropic => match header("x-api-key")
            .or_else(|| header("authorization").and_then(|value| value.strip_prefix("Bearer ")))
        {
            None => Err(anthropic_error(StatusCode::UNAUTHORIZED, "x-api-key header is required")),
            Some(key) if key != options.anthropic_key => {
                Err(anthropic_error(StatusCode::UNAUTHORIZED, "invalid x-api-key"))
            }
            Some(_) if header("anthropic-version").is_none() => {
                Err(anthropic_error(StatusCode::BAD_REQUEST, "anthropic-version: header is required"))
            }
            Some(_) => Ok(()),
        },
    }
}

/// A key as OpenAI's error message shows it: the first and last few characters.
fn redacted_key(key: &str) -> String {
    let characters: Vec<char> = key.chars().collect();
    if characters.len() <= 8 {
        return "*".repeat(characters.len());
    }
    let head: String = characters[..3].iter().collect();
    let tail: String = characters[characters.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(characters.len() - 7))
}

fn parse_json(provider: Provider, body: &[u8]) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(request)) => Ok(request),
        Ok(_) => Err(bad_request(provider, "the request body must be a JSON object", None)),
        Err(error) => Err(match provider {
            Provider::OpenAi => openai_error(
                StatusCode::BAD_REQUEST,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your \
                 HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid \
                 JSON.)",
                "invalid_request_error",
                None,
                None,
            ),
            Provider::Anthropic => {
                anthropic_error(StatusCode::BAD_REQUEST, &format!("There was an error parsing the body: {error}"))
            }
        }),
    }
}

// ----- Generation -------------------------------------------------------------------------------------------------

/// The text one request gets: the answer (truncated to a token limit, if any), its deltas and the token counts.
struct Generation {
    text: String,
    deltas: Vec<String>,
    /// Whether the limit cut the answer short.
    truncated: bool,
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl Generation {
    fn new(answer: &str, limit: Option<u64>, chunk_bytes: usize, prompt_texts: &[String]) -> Generation {
        let (text, truncated) = match limit.and_then(|limit| first_words(answer, limit)) {
            Some(kept) => (kept, true),
            None => (answer, false),
        };
        Generation {
            text: text.to_string(),
            deltas: pieces(text, chunk_bytes),
            truncated,
            prompt_tokens: prompt_tokens(prompt_texts),
            completion_tokens: words(text),
        }
    }
}

/// The number of whitespace-separated words: the stand-in's token.
fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Prompt tokens: the words of all prompt texts, at least 1.
fn prompt_tokens(texts: &[String]) -> usize {
    texts.iter().map(|text| words(text)).sum::<usize>().max(1)
}

/// `text` up to the end of its `limit`th word, when it has more words than that; `None` when it fits.
fn first_words(text: &str, limit: u64) -> Option<&str> {
    let mut seen = 0u64;
    let mut end = 0;
    let mut in_word = false;
    for (index, character) in text.char_indices() {
        if character.is_whitespace() {
            if in_word {
                in_word = false;
                end = index;
            }
        } else if !in_word {
            if seen == limit {
                return Some(&text[..end]);
            }
            in_word = true;
            seen += 1;
        }
    }
    None
}

/// `text` cut into pieces of `chunk_bytes` bytes, each ending at the first character boundary at or after that
/// many bytes (the last may be shorter); one piece when `chunk_bytes` is 0, none when `text` is empty.
fn pieces(text: &str, chunk_bytes: usize) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    if chunk_bytes == 0 {
        return vec![text.to_string()];
    }
    let mut pieces = Vec::new();
    let mut start = 0;
    for (index, character) in text.char_indices() {
        let end = index + character.len_utf8();
        if end - start >= chunk_bytes {
            pieces.push(text[start..end].to_string());
            start = end;
        }
    }
    if start < text.len() {
        pieces.push(text[start..].to_string());
    }
    pieces
}

/// The prompt texts in a message content, an input or a system prompt: strings, and the `text`, `content` and
/// `output` members of blocks and items, recursively.
fn collect_texts(value: &Value, texts: &mut Vec<String>) {
    match value {
        Value::String(text) => texts.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| collect_texts(item, texts)),
        Value::Object(object) => {
            for key in ["text", "content", "output"] {
                if let Some(inner) = object.get(key) {
                    collect_texts(inner, texts);
                }
            }
        }
        _ => {}
    }
}

fn texts_of<'a>(values: impl IntoIterator<Item = Option<&'a Value>>) -> Vec<String> {
    let mut texts = Vec::new();
    values.into_iter().flatten().for_each(|value| collect_texts(value, &mut texts));
    texts
}

/// The text of the last message with role `user` in `messages` (its text parts joined by newlines).
fn last_user_text(messages: Option<&Value>) -> Option<String> {
    let message = messages?
        .as_array()?
        .iter()
        .rev()
        .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))?;
    Some(texts_of([message.get("content")]).join("\n"))
}

// ----- OpenAI -----------------------------------------------------------------------------------------------------

fn require_model(request: &Map<String, Value>) -> Result<String, Reply> {
    match request.get("model").and_then(Value::as_str) {
        Some(model) => Ok(model.to_string()),
        None => Err(openai_error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            "invalid_request_error",
            None,
            None,
        )),
    }
}

fn openai_missing(param: &str) -> Reply {
    openai_error(
        StatusCode::BAD_REQUEST,
        &format!("Missing required parameter: '{param}'."),
        "invalid_request_error",
        Some(param),
        Some("missing_required_parameter"),
    )
}

fn is_streamed(request: &Map<String, Value>) -> bool {
    request.get("stream").and_then(Value::as_bool) == Some(true)
}

/// A random padding of lower-case letters, as the real API's `obfuscation` field (letters only, so that no PII
/// detector can match it).
fn obfuscation() -> String {
    let mut random = rand::rng();
    let length = random.random_range(1..=16);
    (0..length).map(|_| char::from(b'a' + random.random_range(0..26u8))).collect()
}

fn chat_usage(generation: &Generation) -> Value {
    json!({
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    })
}

fn chat_completions(knobs: &Knobs, request: &Map<String, Value>) -> Result<Reply, Reply> {
    let model = require_model(request)?;
    let messages = request.get("messages").ok_or_else(|| openai_missing("messages"))?;
    if messages.as_array().is_none_or(Vec::is_empty) {
        return Err(openai_error(
            StatusCode::BAD_REQUEST,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "invalid_request_error",
            Some("messages"),
            Some("empty_array"),
        ));
    }
    let streamed = is_streamed(request);
    let stream_options = request.get("stream_options").filter(|options| !options.is_null());
    if stream_options.is_some() && !streamed {
        return Err(openai_error(
            StatusCode::BAD_REQUEST,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "invalid_request_error",
            Some("stream_options"),
            None,
        ));
    }
    let answer = knobs.answer_to(last_user_text(Some(messages)));
    let limit = ["max_completion_tokens", "max_tokens"].iter().find_map(|key| request.get(*key)?.as_u64());
    let prompt = texts_of(messages.as_array().into_iter().flatten().map(|message| message.get("content")));
    let generation = Generation::new(&answer, limit, knobs.chunk_bytes, &prompt);
    let finish_reason = if generation.truncated { "length" } else { "stop" };
    let id = random_id("chatcmpl-", 29, BASE62);
    let created = unix_now();

    if !streamed {
        return Ok(Reply::ok(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": generation.text, "refusal": null, "annotations": [] },
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": chat_usage(&generation),
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        })));
    }

    let include_usage =
        stream_options.and_then(|options| options.get("include_usage")).and_then(Value::as_bool) == Some(true);
    let include_obfuscation =
        stream_options.and_then(|options| options.get("include_obfuscation")).and_then(Value::as_bool) != Some(false);
    let chunk = |choices: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        if include_obfuscation {
            chunk["obfuscation"] = Value::String(obfuscation());
        }
        data_frame(&chunk)
    };
    let choice = |delta: Value, finish_reason: Value| json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }]);
    let mut tail = vec![chunk(choice(json!({}), json!(finish_reason)))];
    if include_usage {
        let mut usage_chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [],
            "usage": chat_usage(&generation),
        });
        if include_obfuscation {
            usage_chunk["obfuscation"] = Value::String(obfuscation());
        }
        tail.push(data_frame(&usage_chunk));
    }
    tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Ok(Reply::Stream(SseBody::new(
        vec![chunk(choice(json!({ "role": "assistant", "content": "", "refusal": null }), Value::Null))],
        generation.deltas.iter().map(|delta| chunk(choice(json!({ "content": delta }), Value::Null))).collect(),
        tail,
        knobs,
    )))
}

/// OpenAI's legacy completions: `prompt` (a text or a list; the first is answered), `max_tokens`, streamed as
/// `text_completion` chunks whose `choices[].text` are the deltas, with a usage chunk when asked.
fn completions(knobs: &Knobs, request: &Map<String, Value>) -> Result<Reply, Reply> {
    let model = require_model(request)?;
    let prompt = match request.get("prompt") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let streamed = is_streamed(request);
    let answer = knobs.answer_to(prompt.first().cloned());
    let limit = request.get("max_tokens").and_then(Value::as_u64);
    let generation = Generation::new(&answer, limit, knobs.chunk_bytes, &prompt);
    let finish_reason = if generation.truncated { "length" } else { "stop" };
    let id = random_id("cmpl-", 29, BASE62);
    let created = unix_now();
    let usage = json!({
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
    });
    let completion = |choices: Value, usage: Value| {
        json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage,
        })
    };
    let choice = |text: &str, finish_reason: Value| json!([{ "text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason }]);
    if !streamed {
        return Ok(Reply::ok(completion(choice(&generation.text, json!(finish_reason)), usage)));
    }
    let include_usage =
        request.get("stream_options").and_then(|options| options.get("include_usage")).and_then(Value::as_bool)
            == Some(true);
    let chunk = |choices: Value| {
        let mut chunk = completion(choices, Value::Null);
        if let Some(chunk) = chunk.as_object_mut().filter(|_| !include_usage) {
            chunk.remove("usage");
        }
        data_frame(&chunk)
    };
    let mut tail = vec![chunk(choice("", json!(finish_reason)))];
    if include_usage {
        tail.push(data_frame(&completion(json!([]), usage)));
    }
    tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Ok(Reply::Stream(SseBody::new(
        Vec::new(),
        generation.deltas.iter().map(|delta| chunk(choice(delta, Value::Null))).collect(),
        tail,
        knobs,
    )))
}

/// The Responses API's `input`'s last user text: the input itself when it is a string.
fn responses_last_user_text(input: Option<&Value>) -> Option<String> {
    match input? {
        Value::String(text) => Some(text.clone()),
        items => last_user_text(Some(items)),
    }
}

/// `POST /v1/responses/input_tokens`: the tokens a responses request's input would use.
fn input_tokens(request: &Map<String, Value>) -> Result<Reply, Reply> {
    require_model(request)?;
    let tokens = prompt_tokens(&texts_of([request.get("instructions"), request.get("input")]));
    Ok(Reply::ok(json!({ "object": "response.input_tokens", "input_tokens": tokens })))
}

fn responses(knobs: &Knobs, request: &Map<String, Value>) -> Result<Reply, Reply> {
    let model = require_model(request)?;
    let input = request.get("input");
    let answer = knobs.answer_to(responses_last_user_text(input));
    let limit = request.get("max_output_tokens").and_then(Value::as_u64);
    let generation =
        Generation::new(&answer, limit, knobs.chunk_bytes, &texts_of([request.get("instructions"), input]));
    let echoed =
        |key: &str, default: Value| request.get(key).filter(|value| !value.is_null()).cloned().unwrap_or(default);
    let id = random_id("resp_", 50, HEX);
    let item_id = random_id("msg_", 50, HEX);
    let created = unix_now();
    let final_status = if generation.truncated { "incomplete" } else { "completed" };
    let response = |status: &str, output: Value, usage: Value| {
        let done = status != "in_progress";
        json!({
            "id": id,
            "object": "response",
            "created_at": created,
            "status": status,
            "background": false,
            "completed_at": if done { json!(unix_now()) } else { Value::Null },
            "error": null,
            "incomplete_details": if status == "incomplete" {
                json!({ "reason": "max_output_tokens" })
            } else {
                Value::Null
            },
            "instructions": echoed("instructions", Value::Null),
            "max_output_tokens": echoed("max_output_tokens", Value::Null),
            "max_tool_calls": echoed("max_tool_calls", Value::Null),
            "model": model,
            "output": output,
            "parallel_tool_calls": echoed("parallel_tool_calls", json!(true)),
            "previous_response_id": echoed("previous_response_id", Value::Null),
            "prompt_cache_key": echoed("prompt_cache_key", Value::Null),
            "reasoning": { "effort": null, "summary": null },
            "safety_identifier": echoed("safety_identifier", Value::Null),
            "service_tier": "default",
            "store": echoed("store", json!(true)),
            "temperature": echoed("temperature", json!(1.0)),
            "text": echoed("text", json!({ "format": { "type": "text" }, "verbosity": "medium" })),
            "tool_choice": echoed("tool_choice", json!("auto")),
            "tools": echoed("tools", json!([])),
            "top_logprobs": echoed("top_logprobs", json!(0)),
            "top_p": echoed("top_p", json!(1.0)),
            "truncation": echoed("truncation", json!("disabled")),
            "usage": usage,
            "user": echoed("user", Value::Null),
            "metadata": echoed("metadata", json!({})),
        })
    };
    let part = |text: &str| json!({ "type": "output_text", "annotations": [], "logprobs": [], "text": text });
    let item = |status: &str, content: Value| json!({ "id": item_id, "type": "message", "status": status, "content": content, "role": "assistant" });
    let usage = json!({
        "input_tokens": generation.prompt_tokens,
        "input_tokens_details": { "cached_tokens": 0, "cache_write_tokens": 0 },
        "output_tokens": generation.completion_tokens,
        "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
    });
    let done_item = item(final_status, json!([part(&generation.text)]));
    let done_response = response(final_status, json!([done_item]), usage);
    if !is_streamed(request) {
        return Ok(Reply::ok(done_response));
    }

    let include_obfuscation =
        request.get("stream_options").and_then(|options| options.get("include_obfuscation")).and_then(Value::as_bool)
            != Some(false);
    let mut sequence_number = 0u64;
    let mut event = |mut body: Value| {
        body["sequence_number"] = json!(sequence_number);
        sequence_number += 1;
        event_frame(&body)
    };
    let head = vec![
        event(json!({ "type": "response.created", "response": response("in_progress", json!([]), Value::Null) })),
        event(json!({ "type": "response.in_progress", "response": response("in_progress", json!([]), Value::Null) })),
        event(json!({
            "type": "response.output_item.added",
            "output_index": 0,
            "item": item("in_progress", json!([])),
        })),
        event(json!({
            "type": "response.content_part.added",
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "part": part(""),
        })),
    ];
    let deltas = generation
        .deltas
        .iter()
        .map(|delta| {
            let mut body = json!({
                "type": "response.output_text.delta",
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": delta,
                "logprobs": [],
            });
            if include_obfuscation {
                body["obfuscation"] = Value::String(obfuscation());
            }
            event(body)
        })
        .collect();
    let tail = vec![
        event(json!({
            "type": "response.output_text.done",
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "text": generation.text,
            "logprobs": [],
        })),
        event(json!({
            "type": "response.content_part.done",
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "part": part(&generation.text),
        })),
        event(json!({ "type": "response.output_item.done", "output_index": 0, "item": done_item })),
        event(json!({ "type": format!("response.{final_status}"), "response": done_response })),
    ];
    Ok(Reply::Stream(SseBody::new(head, deltas, tail, knobs)))
}

/// One embedding input: what seeds its vector, and its token count.
struct EmbeddingInput {
    seed: String,
    tokens: usize,
}

fn embedding_inputs(input: &Value) -> Option<Vec<EmbeddingInput>> {
    let text = |text: &str| EmbeddingInput { seed: text.to_string(), tokens: words(text) };
    let token_array = |tokens: &[Value]| {
        tokens
            .iter()
            .all(Value::is_u64)
            .then(|| EmbeddingInput { seed: Value::from(tokens).to_string(), tokens: tokens.len() })
    };
    match input {
        Value::String(single) => Some(vec![text(single)]),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => Some(vec![token_array(items)?]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(single) => Some(text(single)),
                Value::Array(tokens) if !tokens.is_empty() => token_array(tokens),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// A unit vector of `dimensions` components, a pure function of `seed` (FNV-1a, then xorshift64*).
fn embedding_vector(seed: &str, dimensions: usize) -> Vec<f32> {
    let mut state = seed
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3));
    state |= 1;
    let mut vector: Vec<f32> = (0..dimensions)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bits = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            (bits as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|value| *value /= norm);
    }
    vector
}

fn embeddings(request: &Map<String, Value>) -> Result<Reply, Reply> {
    let model = require_model(request)?;
    let input = request.get("input").ok_or_else(|| openai_missing("input"))?;
    let inputs = embedding_inputs(input).ok_or_else(|| {
        openai_error(
            StatusCode::BAD_REQUEST,
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
            "invalid_request_error",
            None,
            None,
        )
    })?;
    let base64 = match request.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(openai_error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid value: '{other}'. Supported values are: 'float' and 'base64'."),
                "invalid_request_error",
                Some("encoding_format"),
                Some("invalid_value"),
            ))
        }
    };
    let default_dimensions = if model.contains("3-large") { 3072 } else { 1536 };
    let dimensions = request.get("dimensions").and_then(Value::as_u64).map_or(default_dimensions, |n| n as usize);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding_vector(&input.seed, dimensions);
            let embedding = if base64 {
                json!(STANDARD.encode(vector.iter().flat_map(|value| value.to_le_bytes()).collect::<Vec<u8>>()))
            } else {
                json!(vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let tokens = inputs.iter().map(|input| input.tokens).sum::<usize>().max(1);
    Ok(Reply::ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    })))
}

fn model_object(id: &str) -> Value {
    json!({ "id": id, "object": "model", "created": 1_715_367_049, "owned_by": "system" })
}

fn models(state: &State) -> Reply {
    let mut ids: Vec<String> = LISTED_MODELS.iter().map(|model| model.to_string()).collect();
    for model in state.models.lock().iter() {
        if !ids.contains(model) {
            ids.push(model.clone());
        }
    }
    Reply::ok(json!({ "object": "list", "data": ids.iter().map(|id| model_object(id)).collect::<Vec<_>>() }))
}

// ----- OpenAI files and batches -----------------------------------------------------------------------------------

/// An OpenAI file: uploaded with `POST /v1/files`, or a batch's output.
struct StoredFile {
    id: String,
    filename: String,
    purpose: String,
    created_at: u64,
    content: Bytes,
}

/// An OpenAI batch, processed when created.
struct OpenAiBatch {
    id: String,
    endpoint: String,
    input_file_id: String,
    completion_window: String,
    /// The model of its first request.
    model: String,
    metadata: Value,
    created_at: u64,
    requests: usize,
    /// The input and output tokens its requests used.
    tokens: (u64, u64),
    output_file_id: String,
}

/// The purposes a file can be uploaded for.
const FILE_PURPOSES: [&str; 5] = ["assistants", "batch", "fine-tune", "vision", "user_data"];

/// The endpoints a batch can run (those the stand-in serves; the API also has `/v1/moderations`).
const BATCH_ENDPOINTS: [&str; 4] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"];

/// The most requests in one batch, as the API's limit.
const BATCH_REQUESTS: usize = 50_000;

/// The most parts a multipart/form-data body may have.
const FORM_PARTS: usize = 16;

/// The most bytes of one part's headers.
const FORM_PART_HEADERS: usize = 8 * 1024;

/// One part of a multipart/form-data body: its field name, its file name if it is a file, and its content.
#[derive(Debug, PartialEq, Eq)]
struct FormPart<'a> {
    name: String,
    filename: Option<String>,
    content: &'a [u8],
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// The parameters of a header value after its first `;` (`name=value` or `name="value"`), names in lower case.
fn header_params(value: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = value.split_once(';').map_or("", |(_, rest)| rest);
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        // A parameter without a value is skipped.
        match rest.find(['=', ';']) {
            None => return params,
            Some(end) if rest[end..].starts_with(';') => {
                rest = &rest[end..];
                continue;
            }
            Some(_) => {}
        }
        let Some((name, after)) = rest.split_once('=') else { return params };
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut value = String::new();
                let mut characters = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((index, character)) = characters.next() {
                    match character {
                        '"' => {
                            end = index + 1;
                            break;
                        }
                        '\\' => value.extend(characters.next().map(|(_, escaped)| escaped)),
                        _ => value.push(character),
                    }
                }
                (value, &quoted[end..])
            }
            None => {
                let (value, after) = after.split_once(';').unwrap_or((after, ""));
                (value.trim().to_string(), after)
            }
        };
        params.push((name.trim().to_ascii_lowercase(), value));
        rest = after;
    }
}

/// The parts of a multipart/form-data body (RFC 7578) with this `Content-Type`: the delimiter is `--` and the
/// boundary, at the start of the body or of a line; a part is its headers, an empty line and its content, up to
/// the line break before the next delimiter; the last delimiter ends with `--`. At most [`FORM_PARTS`] parts, each
/// named by its `Content-Disposition`.
fn form_parts<'a>(content_type: &str, body: &'a [u8]) -> Result<Vec<FormPart<'a>>, String> {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!("Invalid Content-Type header ({content_type}), expected multipart/form-data."));
    }
    let params = header_params(content_type);
    let boundary = params.iter().find(|(name, _)| name == "boundary").map(|(_, value)| value.as_str());
    let boundary = boundary
        .filter(|boundary| (1..=70).contains(&boundary.len()))
        .ok_or("Invalid Content-Type header: multipart/form-data needs a boundary of 1 to 70 characters.")?;
    let delimiter = [b"--", boundary.as_bytes()].concat();
    let next_delimiter = [b"\r\n", delimiter.as_slice()].concat();
    let mut cursor = if body.starts_with(&delimiter) {
        delimiter.len()
    } else {
        find(body, &next_delimiter).ok_or("the multipart body has no boundary")? + next_delimiter.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = &body[cursor..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        let padding = rest.iter().take_while(|byte| matches!(byte, b' ' | b'\t')).count();
        if !rest[padding..].starts_with(b"\r\n") {
            return Err("a multipart boundary is not followed by a line break".to_string());
        }
        let start = cursor + padding + 2;
        let length = find(&body[start..], &next_delimiter).ok_or("the multipart body ends before its last boundary")?;
        if parts.len() == FORM_PARTS {
            return Err(format!("the multipart body has more than {FORM_PARTS} parts"));
        }
        parts.push(form_part(&body[start..start + length])?);
        cursor = start + length + next_delimiter.len();
    }
}

/// One part: its headers (the name and file name from `Content-Disposition: form-data; name=…; filename=…`), and
/// its content.
fn form_part(part: &[u8]) -> Result<FormPart<'_>, String> {
    let (head, content) = match part.strip_prefix(b"\r\n") {
        Some(content) => (&[][..], content),
        None => {
            let window = &part[..part.len().min(FORM_PART_HEADERS + 4)];
            let end = find(window, b"\r\n\r\n")
                .ok_or(format!("a multipart part has no end of its headers in its first {FORM_PART_HEADERS} bytes"))?;
            (&part[..end], &part[end + 4..])
        }
    };
    let head = std::str::from_utf8(head).map_err(|_| "a multipart part's headers are not UTF-8".to_string())?;
    let disposition = head
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-disposition"))
        .map(|(_, value)| value.trim())
        .ok_or("a multipart part has no Content-Disposition header")?;
    let kind = disposition.split(';').next().unwrap_or("").trim();
    if !kind.eq_ignore_ascii_case("form-data") {
        return Err(format!("a multipart part's Content-Disposition is {kind:?}, not form-data"));
    }
    let params = header_params(disposition);
    let param = |wanted: &str| params.iter().find(|(name, _)| name == wanted).map(|(_, value)| value.clone());
    let name = param("name").ok_or("a multipart part's Content-Disposition has no name")?;
    Ok(FormPart { name, filename: param("filename"), content })
}

fn file_object(file: &StoredFile) -> Value {
    json!({
        "id": file.id,
        "object": "file",
        "bytes": file.content.len(),
        "created_at": file.created_at,
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": null,
        "expires_at": null,
    })
}

fn invalid_value(param: &str, message: &str) -> Reply {
    openai_error(StatusCode::BAD_REQUEST, message, "invalid_request_error", Some(param), Some("invalid_value"))
}

/// `POST /v1/files`: a multipart/form-data body with the fields `purpose` and `file` (a file part); the file is
/// kept, and described.
fn upload_file(state: &State, headers: &HeaderMap, body: &[u8]) -> Result<Reply, Reply> {
    let content_type = headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let parts = form_parts(content_type, body).map_err(|message| bad_request(Provider::OpenAi, &message, None))?;
    let field = |name: &str| parts.iter().find(|part| part.name == name);
    let purpose = field("purpose").ok_or_else(|| openai_missing("purpose"))?;
    let purpose = String::from_utf8_lossy(purpose.content).trim().to_string();
    if !FILE_PURPOSES.contains(&purpose.as_str()) {
        let supported = FILE_PURPOSES.map(|purpose| format!("'{purpose}'")).join(", ");
        return Err(invalid_value(
            "purpose",
            &format!("Invalid value: '{purpose}'. Supported values are: {supported}."),
        ));
    }
    let file = field("file").ok_or_else(|| openai_missing("file"))?;
    let filename = file.filename.clone().ok_or_else(|| {
        bad_request(Provider::OpenAi, "Invalid 'file': expected a file upload (a part with a filename).", Some("file"))
    })?;
    if purpose == "batch" && !filename.ends_with(".jsonl") {
        return Err(bad_request(Provider::OpenAi, "Invalid file format for Batch API. Must be .jsonl", Some("file")));
    }
    let stored = StoredFile {
        id: random_id("file-", 22, BASE62),
        filename,
        purpose,
        created_at: unix_now(),
        content: Bytes::copy_from_slice(file.content),
    };
    let object = file_object(&stored);
    state.files.lock().push(stored);
    Ok(Reply::ok(object))
}

fn file_not_found(id: &str) -> Reply {
    openai_error(
        StatusCode::NOT_FOUND,
        &format!("No such File object: {id}"),
        "invalid_request_error",
        Some("id"),
        None,
    )
}

/// `GET /v1/files/{id}/content`: the file's bytes, as the API sends them (`application/octet-stream`).
fn file_content(state: &State, id: &str) -> Result<Reply, Reply> {
    let files = state.files.lock();
    let file = files.iter().find(|file| file.id == id).ok_or_else(|| file_not_found(id))?;
    Ok(Reply::Raw("application/octet-stream", file.content.clone()))
}

/// A batch as the API describes it: just created (validating), or completed with every request succeeded.
fn openai_batch_object(batch: &OpenAiBatch, completed: bool) -> Value {
    let when = |value: Value| if completed { value } else { Value::Null };
    let (input_tokens, output_tokens) = if completed { batch.tokens } else { (0, 0) };
    json!({
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": when(json!(batch.model)),
        "errors": null,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": if completed { "completed" } else { "validating" },
        "output_file_id": when(json!(batch.output_file_id)),
        "error_file_id": null,
        "created_at": batch.created_at,
        "in_progress_at": when(json!(batch.created_at)),
        "expires_at": batch.created_at + 86_400,
        "finalizing_at": when(json!(batch.created_at)),
        "completed_at": when(json!(batch.created_at)),
        "failed_at": null,
        "expired_at": null,
        "cancelling_at": null,
        "cancelled_at": null,
        "request_counts": {
            "total": batch.requests,
            "completed": if completed { batch.requests } else { 0 },
            "failed": 0,
        },
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": { "cached_tokens": 0 },
            "output_tokens": output_tokens,
            "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": input_tokens + output_tokens,
        },
        "metadata": batch.metadata,
    })
}

/// A batch's input line that is not a request the stand-in can run: the batch is refused when created (where the
/// API would accept it and fail it while validating).
fn batch_line_error(line: usize, message: &str) -> Reply {
    bad_request(Provider::OpenAi, &format!("Invalid batch input file, line {line}: {message}"), Some("input_file_id"))
}

/// `POST /v1/batches`: the input file's lines (`{"custom_id", "method": "POST", "url": <the batch's endpoint>,
/// "body"}`) each answered as that endpoint answers the body, not streamed, with this request's knobs; the result
/// lines are kept as the batch's output file (purpose `batch_output`), and the batch answered as just created.
fn openai_batch(state: &State, knobs: &Knobs, request: &Map<String, Value>) -> Result<Reply, Reply> {
    let text = |param: &str| match request.get(param) {
        Some(Value::String(value)) => Ok(value.clone()),
        _ => Err(openai_missing(param)),
    };
    let (input_file_id, endpoint, completion_window) =
        (text("input_file_id")?, text("endpoint")?, text("completion_window")?);
    if !BATCH_ENDPOINTS.contains(&endpoint.as_str()) {
        let supported = BATCH_ENDPOINTS.map(|endpoint| format!("'{endpoint}'")).join(", ");
        return Err(invalid_value(
            "endpoint",
            &format!("Invalid value: '{endpoint}'. Supported values are: {supported}."),
        ));
    }
    if completion_window != "24h" {
        let message = format!("Invalid value: '{completion_window}'. Supported values are: '24h'.");
        return Err(invalid_value("completion_window", &message));
    }
    let (input, purpose) = {
        let files = state.files.lock();
        let file = files.iter().find(|file| file.id == input_file_id).ok_or_else(|| file_not_found(&input_file_id))?;
        (file.content.clone(), file.purpose.clone())
    };
    if purpose != "batch" {
        let message = format!("Invalid 'input_file_id': '{input_file_id}'. The file's purpose must be 'batch'.");
        return Err(bad_request(Provider::OpenAi, &message, Some("input_file_id")));
    }
    let input = std::str::from_utf8(&input)
        .map_err(|_| bad_request(Provider::OpenAi, "Invalid batch input file: not UTF-8", Some("input_file_id")))?;
    let (mut lines, mut custom_ids, mut models) = (String::new(), Vec::new(), Vec::new());
    let mut tokens = (0, 0);
    for (index, line) in input.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let number = index + 1;
        if custom_ids.len() == BATCH_REQUESTS {
            return Err(batch_line_error(number, &format!("a batch has at most {BATCH_REQUESTS} requests")));
        }
        let item: Map<String, Value> = serde_json::from_str(line)
            .map_err(|error| batch_line_error(number, &format!("not a JSON object ({error})")))?;
        let custom_id = item.get("custom_id").and_then(Value::as_str);
        let custom_id = custom_id.ok_or_else(|| batch_line_error(number, "custom_id: a string is required"))?;
        if custom_ids.iter().any(|known| known == custom_id) {
            return Err(batch_line_error(number, &format!("the custom_id {custom_id:?} is a duplicate")));
        }
        if item.get("method").and_then(Value::as_str) != Some("POST") {
            return Err(batch_line_error(number, "method: must be \"POST\""));
        }
        if item.get("url").and_then(Value::as_str) != Some(endpoint.as_str()) {
            return Err(batch_line_error(number, &format!("url: must be the batch's endpoint, {endpoint:?}")));
        }
        let body = item.get("body").and_then(Value::as_object);
        let body = body.ok_or_else(|| batch_line_error(number, "body: a JSON object is required"))?;
        if is_streamed(body) {
            return Err(batch_line_error(number, "body.stream: a batch's requests are not streamed"));
        }
        let answered = match endpoint.as_str() {
            "/v1/chat/completions" => chat_completions(knobs, body),
            "/v1/completions" => completions(knobs, body),
            "/v1/responses" => responses(knobs, body),
            _ => embeddings(body),
        };
        let answer = match answered {
            Ok(Reply::Json(status, answer)) if status.is_success() => answer,
            Ok(_) => return Err(batch_line_error(number, "the request was not answered as JSON")),
            Err(Reply::Json(_, error)) => {
                let message = error["error"]["message"].as_str().unwrap_or("invalid request");
                return Err(batch_line_error(number, message));
            }
            Err(_) => return Err(batch_line_error(number, "invalid request")),
        };
        let usage = &answer["usage"];
        let count = |names: [&str; 2]| names.iter().find_map(|name| usage[*name].as_u64()).unwrap_or(0);
        tokens.0 += count(["prompt_tokens", "input_tokens"]);
        tokens.1 += count(["completion_tokens", "output_tokens"]);
        if let Some(model) = body.get("model").and_then(Value::as_str) {
            models.push(model.to_string());
        }
        let result = json!({
            "id": random_id("batch_req_", 32, HEX),
            "custom_id": custom_id,
            "response": { "status_code": 200, "request_id": random_id("req_", 32, HEX), "body": answer },
            "error": null,
        });
        lines.push_str(&result.to_string());
        lines.push('\n');
        custom_ids.push(custom_id.to_string());
    }
    if custom_ids.is_empty() {
        return Err(bad_request(
            Provider::OpenAi,
            "Invalid batch input file: it has no requests",
            Some("input_file_id"),
        ));
    }
    {
        let mut known = state.models.lock();
        for model in &models {
            if !known.contains(model) {
                known.push(model.clone());
            }
        }
    }
    let id = random_id("batch_", 32, HEX);
    let created_at = unix_now();
    let output = StoredFile {
        id: random_id("file-", 22, BASE62),
        filename: format!("{id}_output.jsonl"),
        purpose: "batch_output".to_string(),
        created_at,
        content: Bytes::from(lines),
    };
    let batch = OpenAiBatch {
        id,
        endpoint,
        input_file_id,
        completion_window,
        model: models.into_iter().next().unwrap_or_default(),
        metadata: request.get("metadata").filter(|metadata| metadata.is_object()).cloned().unwrap_or(Value::Null),
        created_at,
        requests: custom_ids.len(),
        tokens,
        output_file_id: output.id.clone(),
    };
    let created = openai_batch_object(&batch, false);
    state.files.lock().push(output);
    state.openai_batches.lock().push(batch);
    Ok(Reply::ok(created))
}

/// `GET /v1/batches/{id}`: the batch, completed.
fn openai_batch_status(state: &State, id: &str) -> Result<Reply, Reply> {
    let batches = state.openai_batches.lock();
    let batch = batches.iter().find(|batch| batch.id == id).ok_or_else(|| {
        openai_error(
            StatusCode::NOT_FOUND,
            &format!("No such Batch object: {id}"),
            "invalid_request_error",
            Some("id"),
            None,
        )
    })?;
    Ok(Reply::ok(openai_batch_object(batch, true)))
}

// ----- Anthropic --------------------------------------------------------------------------------------------------

/// The Anthropic request's prompt texts and last user text, after checking the required fields.
fn anthropic_request(request: &Map<String, Value>) -> Result<(String, Vec<String>, Option<String>), Reply> {
    let required = |field: &str| {
        request
            .get(field)
            .filter(|value| !value.is_null())
            .ok_or_else(|| anthropic_error(StatusCode::BAD_REQUEST, &format!("{field}: Field required")))
    };
    let model = required("model")?
        .as_str()
        .ok_or_else(|| anthropic_error(StatusCode::BAD_REQUEST, "model: Input should be a valid string"))?
        .to_string();
    let messages = required("messages")?;
    if messages.as_array().is_none() {
        return Err(anthropic_error(StatusCode::BAD_REQUEST, "messages: Input should be a valid list"));
    }
    let prompt = texts_of(
        std::iter::once(request.get("system"))
            .chain(messages.as_array().into_iter().flatten().map(|message| message.get("content"))),
    );
    Ok((model, prompt, last_user_text(Some(messages))))
}

/// `POST /v1/messages/batches`: each request's params checked as a message's, and the batch answered as just
/// created (processing, no results yet). It is processed at once: retrieved, it has ended, and its results are each
/// request's answer, as `messages` would give it (not streamed).
fn message_batch(state: &State, knobs: &Knobs, request: &Map<String, Value>) -> Result<Reply, Reply> {
    let invalid = |message: &str| anthropic_error(StatusCode::BAD_REQUEST, message);
    let requests =
        request.get("requests").and_then(Value::as_array).ok_or_else(|| invalid("requests: Field required"))?;
    if requests.is_empty() {
        return Err(invalid("requests: List should have at least 1 item after validation, not 0"));
    }
    let mut answers = Vec::with_capacity(requests.len());
    for (index, item) in requests.iter().enumerate() {
        let custom_id = item.get("custom_id").and_then(Value::as_str);
        let custom_id = custom_id.ok_or_else(|| invalid(&format!("requests.{index}.custom_id: Field required")))?;
        let params = item.get("params").and_then(Value::as_object);
        let params = params.ok_or_else(|| invalid(&format!("requests.{index}.params: Field required")))?;
        let (model, prompt, last_user) = anthropic_request(params)?;
        answers.push((custom_id.to_string(), model, prompt_tokens(&prompt), knobs.answer_to(last_user)));
    }
    let id = random_id("msgbatch_", 24, BASE62);
    state.batches.lock().push((id.clone(), answers));
    Ok(Reply::ok(batch_object(state, &id, requests.len(), false)))
}

/// A message batch as the API describes it: just created, or ended with every request succeeded.
fn batch_object(state: &State, id: &str, count: usize, ended: bool) -> Value {
    let now = unix_now();
    let (processing, succeeded) = if ended { (0, count) } else { (count, 0) };
    json!({
        "id": id,
        "type": "message_batch",
        "processing_status": if ended { "ended" } else { "in_progress" },
        "request_counts": {
            "processing": processing, "succeeded": succeeded, "errored": 0, "canceled": 0, "expired": 0,
        },
        "ended_at": if ended { json!(rfc3339(now)) } else { Value::Null },
        "created_at": rfc3339(now),
        "expires_at": rfc3339(now + 86_400),
        "archived_at": null,
        "cancel_initiated_at": null,
        "results_url": if ended {
            json!(format!("http://{}/v1/messages/batches/{id}/results", state.address))
        } else {
            Value::Null
        },
    })
}

fn batch_status(state: &State, id: &str) -> Result<Reply, Reply> {
    let batches = state.batches.lock();
    let (_, answers) = batches.iter().find(|(known, _)| known == id).ok_or_else(|| batch_not_found(id))?;
    Ok(Reply::ok(batch_object(state, id, answers.len(), true)))
}

/// The results as the API streams them: JSON lines, one per request, `application/binary` as the SDK asks.
fn batch_results(state: &State, id: &str) -> Result<Reply, Reply> {
    let batches = state.batches.lock();
    let (_, answers) = batches.iter().find(|(known, _)| known == id).ok_or_else(|| batch_not_found(id))?;
    let mut lines = String::new();
    for (custom_id, model, prompt_tokens, answer) in answers {
        let words = words(answer);
        let message = json!({
            "id": random_id("msg_01", 22, BASE62),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{ "type": "text", "text": answer }],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": anthropic_usage(*prompt_tokens, words),
        });
        let line = json!({ "custom_id": custom_id, "result": { "type": "succeeded", "message": message } });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    Ok(Reply::Raw("application/binary", Bytes::from(lines)))
}

fn batch_not_found(id: &str) -> Reply {
    anthropic_error(StatusCode::NOT_FOUND, &format!("message_batch {id} not found"))
}

/// `seconds` since the epoch as an RFC 3339 UTC time (days to a civil date: Howard Hinnant's algorithm).
fn rfc3339(seconds: u64) -> String {
    let (days, time) = ((seconds / 86_400) as i64, seconds % 86_400);
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", time / 3_600, time % 3_600 / 60, time % 60)
}

fn anthropic_usage(input_tokens: usize, output_tokens: usize) -> Value {
    json!({
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": { "ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0 },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    })
}

fn messages(knobs: &Knobs, request: &Map<String, Value>) -> Result<Reply, Reply> {
    let (model, prompt, last_user) = anthropic_request(request)?;
    let max_tokens = request
        .get("max_tokens")
        .filter(|value| !value.is_null())
        .ok_or_else(|| anthropic_error(StatusCode::BAD_REQUEST, "max_tokens: Field required"))?
        .as_u64()
        .filter(|max_tokens| *max_tokens >= 1)
        .ok_or_else(|| {
            anthropic_error(StatusCode::BAD_REQUEST, "max_tokens: Input should be greater than or equal to 1")
        })?;
    let answer = knobs.answer_to(last_user);
    let generation = Generation::new(&answer, Some(max_tokens), knobs.chunk_bytes, &prompt);
    let stop_reason = if generation.truncated { "max_tokens" } else { "end_turn" };
    let id = random_id("msg_01", 22, BASE62);
    let message = |content: Value, stop_reason: Value, usage: Value| {
        json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": usage,
        })
    };
    if !is_streamed(request) {
        return Ok(Reply::ok(message(
            json!([{ "type": "text", "text": generation.text }]),
            json!(stop_reason),
            anthropic_usage(generation.prompt_tokens, generation.completion_tokens),
        )));
    }
    let head = vec![
        event_frame(&json!({
            "type": "message_start",
            "message": message(json!([]), Value::Null, anthropic_usage(generation.prompt_tokens, 1)),
        })),
        event_frame(
            &json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
        ),
        event_frame(&json!({ "type": "ping" })),
    ];
    let deltas = generation
        .deltas
        .iter()
        .map(|delta| {
            event_frame(&json!({
                "type": "content_block_delta",
                "index": 0,
                "delta": { "type": "text_delta", "text": delta },
            }))
        })
        .collect();
    let tail = vec![
        event_frame(&json!({ "type": "content_block_stop", "index": 0 })),
        event_frame(&json!({
            "type": "message_delta",
            "delta": { "stop_reason": stop_reason, "stop_sequence": null },
            "usage": {
                "input_tokens": generation.prompt_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": generation.completion_tokens,
            },
        })),
        event_frame(&json!({ "type": "message_stop" })),
    ];
    Ok(Reply::Stream(SseBody::new(head, deltas, tail, knobs)))
}

fn count_tokens(request: &Map<String, Value>) -> Result<Reply, Reply> {
    let (_, prompt, _) = anthropic_request(request)?;
    Ok(Reply::ok(json!({ "input_tokens": prompt_tokens(&prompt) })))
}

// ----- Errors -----------------------------------------------------------------------------------------------------

fn openai_error(status: StatusCode, message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Reply {
    Reply::Json(status, json!({ "error": { "message": message, "type": kind, "param": param, "code": code } }))
}

/// Anthropic's error body; its type follows the status, as the API's does.
fn anthropic_error(status: StatusCode, message: &str) -> Reply {
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    Reply::Json(status, json!({ "type": "error", "error": { "type": kind, "message": message } }))
}

fn bad_request(provider: Provider, message: &str, param: Option<&str>) -> Reply {
    match provider {
        Provider::OpenAi => openai_error(StatusCode::BAD_REQUEST, message, "invalid_request_error", param, None),
        Provider::Anthropic => anthropic_error(StatusCode::BAD_REQUEST, message),
    }
}

fn not_found(provider: Provider, method: &Method, path: &str) -> Reply {
    match provider {
        Provider::OpenAi => openai_error(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} {path})"),
            "invalid_request_error",
            None,
            None,
        ),
        Provider::Anthropic => anthropic_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// The error `x-standin-error` asks for, in the provider's format.
fn forced_error(provider: Provider, status: StatusCode) -> Reply {
    let message = format!("the LLM stand-in answers {status}, as x-standin-error asked");
    match provider {
        Provider::Anthropic => anthropic_error(status, &message),
        Provider::OpenAi => {
            let (kind, code) = match status.as_u16() {
                401 => ("invalid_request_error", Some("invalid_api_key")),
                429 => ("requests", Some("rate_limit_exceeded")),
                500.. => ("server_error", None),
                _ => ("invalid_request_error", None),
            };
            openai_error(status, &message, kind, None, code)
        }
    }
}

// ----- Responses and SSE ------------------------------------------------------------------------------------------

/// The reply with its headers: the content type, and a request id as the provider sends it (Anthropic's also in
/// its error bodies).
fn finish(provider: Provider, reply: Reply) -> Response<ResponseBody> {
    let request_id = match provider {
        Provider::OpenAi => random_id("req_", 32, HEX),
        Provider::Anthropic => random_id("req_011C", 20, BASE62),
    };
    let mut response = match reply {
        Reply::Json(status, mut value) => {
            if provider == Provider::Anthropic && value.get("type").and_then(Value::as_str) == Some("error") {
                value["request_id"] = json!(request_id);
            }
            let mut response = Response::new(full(value.to_string()));
            *response.status_mut() = status;
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Reply::Raw(content_type, body) => {
            let mut response = Response::new(Full::new(body).map_err(|never| match never {}).boxed_unsync());
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        Reply::Stream(body) => {
            let mut response = Response::new(body.boxed_unsync());
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
    };
    let name = match provider {
        Provider::OpenAi => HeaderName::from_static("x-request-id"),
        Provider::Anthropic => HeaderName::from_static("request-id"),
    };
    response.headers_mut().insert(name, HeaderValue::from_str(&request_id).expect("a request id is ASCII"));
    response
}

fn full(text: String) -> ResponseBody {
    Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync()
}

fn plain(status: StatusCode, text: &str) -> Response<ResponseBody> {
    let mut response = Response::new(full(text.to_string()));
    *response.status_mut() = status;
    response
}

/// `data: <json>\n\n`, as Chat Completions streams.
fn data_frame(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// `event: <type>\ndata: <json>\n\n`, as the Responses API and Anthropic stream (the event named by `type`).
fn event_frame(value: &Value) -> Bytes {
    let kind = value.get("type").and_then(Value::as_str).expect("every event has a type");
    Bytes::from(format!("event: {kind}\ndata: {value}\n\n"))
}

/// A streamed body: each SSE event its own HTTP chunk, sent after its pause; optionally cut (an error, which makes
/// hyper close the connection mid-body).
struct SseBody {
    frames: VecDeque<(Duration, Bytes)>,
    cut: Cut,
    waiting: Option<(Pin<Box<Sleep>>, Bytes)>,
}

/// Whether the body ends with a cut, and how far it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    No,
    /// After the last frame: first yield once, so hyper flushes the frames before (it drops its write buffer when a
    /// body fails), then fail.
    Pending,
    Now,
}

impl SseBody {
    /// The opening events at once; the content deltas after `first_delay`, then `chunk_delay` each; the closing
    /// events at once after them (after `first_delay` when there is no delta) — or, with `abort_after`, a cut
    /// after that many deltas instead of the closing events.
    fn new(head: Vec<Bytes>, deltas: Vec<Bytes>, tail: Vec<Bytes>, knobs: &Knobs) -> SseBody {
        let mut frames: VecDeque<(Duration, Bytes)> = head.into_iter().map(|frame| (Duration::ZERO, frame)).collect();
        let kept = knobs.abort_after.map_or(deltas.len(), |abort_after| abort_after.min(deltas.len()));
        for (index, delta) in deltas.into_iter().take(kept).enumerate() {
            frames.push_back((if index == 0 { knobs.first_delay } else { knobs.chunk_delay }, delta));
        }
        let cut = if knobs.abort_after.is_some() { Cut::Pending } else { Cut::No };
        if cut == Cut::No {
            for (index, frame) in tail.into_iter().enumerate() {
                let delay = if index == 0 && kept == 0 { knobs.first_delay } else { Duration::ZERO };
                frames.push_back((delay, frame));
            }
        }
        SseBody { frames, cut, waiting: None }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        let this = self.get_mut();
        loop {
            if let Some((sleep, _)) = &mut this.waiting {
                if sleep.as_mut().poll(context).is_pending() {
                    return Poll::Pending;
                }
                let (_, frame) = this.waiting.take().expect("a frame is waiting");
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            match this.frames.pop_front() {
                Some((delay, frame)) if delay.is_zero() => return Poll::Ready(Some(Ok(Frame::data(frame)))),
                Some((delay, frame)) => this.waiting = Some((Box::pin(tokio::time::sleep(delay)), frame)),
                None => match this.cut {
                    Cut::No => return Poll::Ready(None),
                    Cut::Pending => {
                        this.cut = Cut::Now;
                        context.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Cut::Now => {
                        this.cut = Cut::No;
                        return Poll::Ready(Some(Err(StreamCut)));
                    }
                },
            }
        }
    }
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const HEX: &[u8] = b"0123456789abcdef";

fn random_id(prefix: &str, length: usize, alphabet: &[u8]) -> String {
    let mut random = rand::rng();
    let mut id = prefix.to_string();
    id.extend((0..length).map(|_| char::from(alphabet[random.random_range(0..alphabet.len())])));
    id
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_348_799), "2026-11-22T11:59:59Z");
    }

    #[test]
    fn pieces_end_on_character_boundaries() {
        assert_eq!(pieces("abcdefgh", 3), ["abc", "def", "gh"]);
        assert_eq!(pieces("añb€c", 2), ["añ", "b€", "c"]);
        assert_eq!(pieces("abc", 0), ["abc"]);
        assert!(pieces("", 6).is_empty());
        assert_eq!(pieces(DEFAULT_ANSWER, 6).concat(), DEFAULT_ANSWER);
    }

    #[test]
    fn the_default_answer_splits_every_sensitive_value() {
        let deltas = pieces(DEFAULT_ANSWER, LlmStandInOptions::default().chunk_bytes);
        for value in ["jane.roe@example.com", "+1 415 555 0100", "4111 1111 1111 1111"] {
            assert!(DEFAULT_ANSWER.contains(value));
            assert!(deltas.iter().all(|delta| !delta.contains(value)), "{value} arrives whole");
        }
    }

    #[test]
    fn limits_keep_whole_words() {
        assert_eq!(first_words("one two  three", 2), Some("one two"));
        assert_eq!(first_words("one two", 2), None);
        assert_eq!(first_words("  one two", 0), Some(""));
        assert_eq!(first_words("one", 5), None);
        assert_eq!(words(DEFAULT_ANSWER), 20);
    }

    #[test]
    fn prompt_texts_come_from_strings_and_blocks() {
        let messages = json!([
            { "role": "system", "content": "be brief" },
            { "role": "user", "content": [{ "type": "text", "text": "hello there" }, { "type": "image_url", "image_url": { "url": "x" } }] },
        ]);
        let texts = texts_of(messages.as_array().unwrap().iter().map(|message| message.get("content")));
        assert_eq!(texts, ["be brief", "hello there"]);
        assert_eq!(prompt_tokens(&texts), 4);
        assert_eq!(prompt_tokens(&[]), 1);
        assert_eq!(last_user_text(Some(&messages)).as_deref(), Some("hello there"));
    }

    #[test]
    fn echo_wins_over_the_configured_answer() {
        let knobs = Knobs::read(&HeaderMap::new(), &LlmStandInOptions::default()).unwrap();
        assert_eq!(knobs.answer_to(Some("ECHO: round trip".to_string())), "round trip");
        assert_eq!(knobs.answer_to(Some("ECHO:x".to_string())), "x");
        assert_eq!(knobs.answer_to(Some("hello".to_string())), DEFAULT_ANSWER);
        assert_eq!(knobs.answer_to(None), DEFAULT_ANSWER);
    }

    #[test]
    fn form_parts_are_named_and_bounded() {
        let body = b"preamble\r\n--xyz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--xyz\r\n\
            content-disposition: form-data; name=\"file\"; filename=\"a;b \\\"c\\\".jsonl\"\r\n\
            Content-Type: application/octet-stream\r\n\r\n{}\n\r\n\r\n--xyz--\r\n";
        let parts = form_parts("multipart/form-data; boundary=\"xyz\"", body).unwrap();
        assert_eq!(
            parts,
            [
                FormPart { name: "purpose".into(), filename: None, content: b"batch" },
                FormPart { name: "file".into(), filename: Some("a;b \"c\".jsonl".into()), content: b"{}\n\r\n" },
            ]
        );
        let params = header_params("form-data; flag; name=x ; filename=\"y\"; other");
        assert_eq!(params, [("name".into(), "x".into()), ("filename".into(), "y".into())]);
        let empty = form_parts("Multipart/Form-Data;boundary=b", b"--b--\r\n").unwrap();
        assert!(empty.is_empty());
        for (content_type, body) in [
            ("application/json", &b"{}"[..]),
            ("multipart/form-data", b"--b--"),
            ("multipart/form-data; boundary=b", b"no delimiter"),
            ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nunended"),
            ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--"),
            ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: attachment; name=x\r\n\r\nx\r\n--b--"),
            ("multipart/form-data; boundary=b", b"--bX\r\n\r\nx\r\n--b--"),
        ] {
            assert!(form_parts(content_type, body).is_err(), "{content_type} {}", String::from_utf8_lossy(body));
        }
        let many =
            format!("{}--b--", "--b\r\nContent-Disposition: form-data; name=x\r\n\r\n\r\n".repeat(FORM_PARTS + 1));
        assert!(form_parts("multipart/form-data; boundary=b", many.as_bytes()).unwrap_err().contains("more than"));
        let fits = format!("{}--b--", "--b\r\nContent-Disposition: form-data; name=x\r\n\r\n\r\n".repeat(FORM_PARTS));
        assert_eq!(form_parts("multipart/form-data; boundary=b", fits.as_bytes()).unwrap().len(), FORM_PARTS);
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let first = embedding_vector("hello", 8);
        assert_eq!(first, embedding_vector("hello", 8));
        assert_ne!(first, embedding_vector("hellp", 8));
        let norm: f32 = first.iter().map(|value| value * value).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}
