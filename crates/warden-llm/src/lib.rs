//! warden-llm owns what warden understands of LLM provider APIs and of server-sent events: which endpoint a request
//! is for and what it asks (model, streaming, token budget, the prompt texts) for `api = "openai"` (chat
//! completions, responses, embeddings) and `api = "anthropic"` (messages); the prompt guardrails (model allow-list,
//! deny patterns, PII in prompts masked or refused, a `max_tokens` cap); masking the answers, whole or streamed as
//! SSE with a [`warden_mask::StreamMasker`] per stream channel (a choice's content, a tool call's arguments, a
//! content block), usage accounting from the providers' usage fields; and masking plain HTTP bodies by content type,
//! streamed.
//!
//! It is pure logic: no sockets, no IO, no global state. Everything is incremental and bounded so that a hyper
//! body-streaming proxy can drive it chunk by chunk: each buffer has a documented cap, and going over it is an
//! error (the proxy refuses or ends the stream), never an allocation. Anything warden cannot parse where it must
//! understand the content (a request body of a known endpoint, an event of a known API) is an error too: fail
//! closed.
//!
//! Modules: [`sse`] (the event-stream parser and writer), [`api`] (endpoints and request inspection), [`guard`]
//! (the prompt guardrails), [`response`] (answers, whole and streamed, and usage), [`batch`] (the usage a batch's
//! results report), [`body`] (plain HTTP bodies), and a private `json` (an order-preserving JSON value).

#![forbid(unsafe_code)]

pub mod api;
pub mod batch;
pub mod body;
pub mod guard;
mod json;
pub mod response;
pub mod sse;

pub use api::{
    answers_batches, creates_batch, gateway_results_urls, is_file_upload, place_gateway, starts_upload, Api, Endpoint,
    LlmRequest, ReadRequest, GATEWAY_MARKER,
};
pub use batch::{reads_batch_results, BatchTotals, BatchUsage, RESULT_LINE_BYTES};
pub use body::{named_model, BodyError, BodyKind, BodyMasker, RequestTexts};
pub use guard::{BatchUploadOutcome, GuardConfig, GuardError, GuardOutcome, PromptGuard, PromptPii, Refusal};
pub use response::{ResponseMasker, Usage, ANSWER_TEXT_CAP, MAX_CHANNELS};
pub use sse::{SseError, SseEvent, SseParser};

/// Who caused an error: what the gateway answers, and whether it is worth a retry, follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client's request (a 400; retrying the same request fails the same way).
    Client,
    /// The upstream's answer (a 502 before the answer started, the stream ended after; a retry may succeed).
    Upstream,
}

/// A request or answer warden cannot make sense of where it must.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The request body of a known endpoint is not JSON.
    #[error("the request body is not valid JSON: {0}")]
    RequestJson(String),
    /// The request body is JSON but not what the endpoint takes.
    #[error("the request body is not a valid {endpoint} request: {reason}")]
    RequestShape { endpoint: &'static str, reason: String },
    /// The upstream's answer (a body or an event's data) is not JSON where the API says it is.
    #[error("the upstream's answer is not valid JSON: {0}")]
    ResponseJson(String),
    /// The upstream's answer is JSON but not of the shape the API documents.
    #[error("the upstream's answer is not a valid {endpoint} answer: {reason}")]
    ResponseShape { endpoint: &'static str, reason: String },
    /// More stream channels open at once than [`MAX_CHANNELS`].
    #[error("the upstream's stream opened more than {limit} channels at once")]
    TooManyChannels { limit: usize },
}

impl LlmError {
    pub fn fault(&self) -> Fault {
        match self {
            LlmError::RequestJson(_) | LlmError::RequestShape { .. } => Fault::Client,
            LlmError::ResponseJson(_) | LlmError::ResponseShape { .. } | LlmError::TooManyChannels { .. } => {
                Fault::Upstream
            }
        }
    }
}
