//! What the HTTP front end asks of the rest of the gateway: who a credential is, whether a request may go
//! through (and how it is masked), whether a limit stops it, and where records go.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use warden_identity::{AuthError, Identity};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One client connection's requests on one warden connection by one identity: a session.
#[derive(Debug, Clone)]
pub struct HttpSession {
    pub id: Arc<str>,
    pub identity: Identity,
    pub connection: String,
    pub client_address: SocketAddr,
    /// The `User-Agent` of the request that opened the session.
    pub user_agent: Option<String>,
    pub started_at: OffsetDateTime,
}

/// A request as policy sees it.
#[derive(Debug)]
pub struct RequestInfo<'a> {
    pub session: &'a HttpSession,
    /// Upper case, as sent.
    pub method: &'a str,
    /// The path after the connection prefix, query excluded (`/v1/chat/completions`).
    pub path: &'a str,
    /// The model asked for (LLM connections).
    pub model: Option<&'a str>,
    /// The request body as it will be sent upstream, when warden read it whole (LLM requests): what an approval
    /// is bound to.
    pub body: Option<&'a [u8]>,
}

/// The answer to a request.
pub enum Authorization {
    /// It may go. `masker`: what responses (and, for plain HTTP, request bodies) are masked with; `None` when the
    /// connection does not mask or the identity may see it unmasked.
    Allowed { policies: Vec<Arc<str>>, masker: Option<warden_mask::Masker>, approval: Option<String> },
    /// It may not: HTTP status, the rule (a policy id, `approval:<id>`…) and a message for the caller.
    Refused { status: u16, rule: String, message: String, policies: Vec<Arc<str>> },
}

/// A request stopped by a limit: 429 with `Retry-After`.
#[derive(Debug, Clone)]
pub struct LimitRefusal {
    /// `requests_per_minute`, `tokens_per_minute`, `budget`.
    pub limit: &'static str,
    pub message: String,
    pub retry_after: Duration,
}

/// Token counts a provider reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
}

/// A batch's results a request read whole (see [`warden_llm::BatchUsage`]): their tokens are the exchange's usage,
/// counted once per batch however often they are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRead {
    /// `<api>:<id>`: `anthropic:<batch id>`, `openai:<output file id>`.
    pub key: String,
    /// Results that reported usage.
    pub requests: u64,
    /// Result lines whose usage could not be read (not JSON, or longer than [`warden_llm::RESULT_LINE_BYTES`]).
    pub unread: u64,
}

/// One request and its outcome, recorded when its response has been sent whole (or the client went away).
#[derive(Debug, Clone)]
pub struct Exchange {
    /// 1-based order within the session.
    pub seq: u64,
    pub started_at: OffsetDateTime,
    /// From the request's arrival to the last byte of its response.
    pub duration: Duration,
    /// From the request's arrival to the response headers (for a stream: before its first event).
    pub first_byte: Option<Duration>,
    /// From the request's arrival to its sending upstream: what warden itself took before the upstream had it
    /// (reading, checking and authorizing the request).
    pub forwarded: Option<Duration>,
    pub method: String,
    pub path: String,
    /// The status sent to the client.
    pub status: u16,
    pub allowed: bool,
    /// The policies (or `approval:<id>`, guard rule, limit) that decided.
    pub policies: Vec<Arc<str>>,
    /// Why warden refused or ended it, if it did.
    pub refusal: Option<String>,
    pub model: Option<String>,
    pub stream: bool,
    pub usage: Option<TokenUsage>,
    /// The prompt texts, masked and capped (LLM requests).
    pub prompt: Option<String>,
    /// The answer text (LLM) or the start of the response body, masked and capped.
    pub response: Option<String>,
    /// Values masked in the response.
    pub masked: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// An error that cut the response short (upstream reset, masking failure…).
    pub error: Option<String>,
    /// The batch whose results it read whole, if it did: `usage` and `model` are theirs.
    pub batch: Option<BatchRead>,
}

pub trait HttpHooks: Send + Sync + 'static {
    /// Verifies the credential a caller presented (an API key, a warden token or an OIDC token).
    fn authenticate<'a>(&'a self, credential: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>>;
    /// A fresh session id.
    fn new_session_id(&self) -> Arc<str>;
    /// Whether `request` may go through: policy (`http:<METHOD>` on the connection), token scope, approvals.
    /// May wait (a held request waits for its approval).
    fn authorize<'a>(&'a self, request: &'a RequestInfo<'a>) -> BoxFuture<'a, Authorization>;
    /// Whether a limit (rate, budget) stops this request now. Called after authorization, for LLM connections.
    fn admit_usage(&self, session: &HttpSession, model: Option<&str>) -> Result<(), LimitRefusal>;
    /// Whether `connection` limits tokens (a budget or `tokens_per_minute`): a batch, whose tokens are spent after
    /// it is created and reported only in its results, is refused there.
    fn limits_tokens(&self, connection: &str) -> bool;
    /// Counts what a request used, for the limits and the usage report.
    fn used(&self, session: &HttpSession, model: Option<&str>, usage: TokenUsage);
    /// A session's first request arrived. `None` when its start is queued for the record at once; otherwise the
    /// wait until it is (the audit queue is full), which the session's requests wait for: an `Err` refuses them.
    fn session_started(&self, session: &HttpSession) -> Option<BoxFuture<'static, Result<(), String>>>;
    /// Records an answered request. `None` when the record is queued at once; otherwise the wait until it is (the
    /// audit log's queue is filling up): the caller awaits it, so a record is late rather than lost.
    fn exchange(&self, session: &HttpSession, exchange: Exchange) -> Option<BoxFuture<'static, ()>>;
    /// A session ended. `None` when its end is queued at once; otherwise the wait until it is, which the front end
    /// awaits off the request path (counted, so [`crate::HttpFrontend::settled`] waits for it).
    fn session_ended(&self, session: &HttpSession, reason: &str) -> Option<BoxFuture<'static, ()>>;
    /// Masks text for the audit trail with the connection's masker, or every built-in detector when it has none.
    fn audit_mask(&self, connection: &str, text: &str) -> String;
    /// What PII in a prompt is found with (`guard.prompt_pii`): the connection's masker, or every built-in
    /// detector when it has none.
    fn prompt_masker(&self, connection: &str) -> warden_mask::Masker;
    /// Masks for the audit trail the start of a longer text, as [`HttpHooks::audit_mask`] does but with the
    /// prompts' masker (the same one) reading it as a stream not yet ended: a value that may go on past the cut
    /// (held in a window of `hold_back` bytes) is left out, never recorded in part.
    fn audit_mask_start(&self, connection: &str, text: &str, hold_back: usize) -> String {
        warden_mask::StreamMasker::new(self.prompt_masker(connection), hold_back).push(text, &mut |_| {})
    }
    /// A request refused before it had an identity (no credential, a bad one, plaintext from afar).
    /// `None` when the record is queued at once; otherwise the wait until it is, awaited before the refusal is sent.
    fn unauthenticated(&self, client: SocketAddr, connection: &str, reason: &str) -> Option<BoxFuture<'static, ()>>;
}
