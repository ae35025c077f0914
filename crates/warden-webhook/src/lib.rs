//! Signed HTTP POST delivery: what warden sends to a receiver it does not otherwise trust or get trusted by, today
//! the `webhook` audit sink, later approval notifications.
//!
//! This crate owns:
//! - **Signing** ([`sign`]): `X-Warden-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with
//!   `X-Warden-Timestamp: <unix seconds>`, so a receiver can check that a request comes from a holder of the secret,
//!   was not altered, and is recent (receivers should reject timestamps more than five minutes old).
//! - **The client** ([`Webhook`]): one POST per call over http or https (rustls with aws-lc-rs, the system's root
//!   certificates), [`REQUEST_TIMEOUT`] for the whole exchange, redirects not followed, and the outcome classified
//!   ([`classify`]): 2xx delivered; 408, 429, 5xx, connection failures and timeouts worth retrying; any other
//!   status permanent. Idle connections are kept for reuse; a pooled connection is driven by the tokio runtime that
//!   opened it, so a [`Webhook`] is meant to be used from one runtime.
//! - **Retry pacing** ([`Backoff`]): 0.5 s doubling to a 30 s cap, ±20% jitter, or the receiver's `Retry-After`
//!   seconds on 429 and 503 (at most 60 s).
//!
//! What to send, how to batch it and when to give up belong to the caller. Errors name the URL (without any user
//! information in it) and the status or failure, never the secret.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
pub use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::Rng;
use sha2::Sha256;

/// The header carrying the request's signature, `v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-warden-signature";

/// The header carrying the unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-warden-timestamp";

/// The longest one POST (connect, TLS, request, whole response) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a response body is read (and discarded) so the connection can be reused.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How long an idle connection is kept for the next POST.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// `v1=` and the lowercase hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// What an answer's status means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the receiver has it.
    Delivered,
    /// 408, 429, 5xx: the same request may succeed later.
    Retryable,
    /// Anything else (other 4xx, 3xx: redirects are not followed): sending it again will not help.
    Permanent,
}

/// Classifies an answer's status.
pub fn classify(status: StatusCode) -> Outcome {
    if status.is_success() {
        Outcome::Delivered
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Outcome::Retryable
    } else {
        Outcome::Permanent
    }
}

/// Why a POST did not deliver. `Display` names the URL and the failure, never the secret.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{url} is not a usable webhook URL: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("cannot verify {url}: the system has no trusted root certificates")]
    NoRootCertificates { url: String },
    #[error("cannot send to {url}: header {name} is not valid")]
    InvalidHeader { url: String, name: String },
    #[error("{url} answered HTTP {status}")]
    Status {
        url: String,
        status: StatusCode,
        /// The answer's `Retry-After` seconds, on 429 and 503 only.
        retry_after: Option<Duration>,
    },
    #[error("cannot reach {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url}: no complete answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout { url: String },
}

impl WebhookError {
    /// Whether the same request may succeed later: 408, 429, 5xx, connection failures and timeouts.
    pub fn is_retryable(&self) -> bool {
        match self {
            WebhookError::Status { status, .. } => classify(*status) == Outcome::Retryable,
            WebhookError::Transport { .. } | WebhookError::Timeout { .. } => true,
            WebhookError::InvalidUrl { .. }
            | WebhookError::NoRootCertificates { .. }
            | WebhookError::InvalidHeader { .. } => false,
        }
    }

    /// The receiver's `Retry-After`, when it answered 429 or 503 with one in seconds.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            WebhookError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The status the receiver answered, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            WebhookError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A receiver URL and the secret requests to it are signed with. Cloning shares the connection pool.
#[derive(Clone)]
pub struct Webhook {
    uri: Uri,
    /// The URL without user information, for messages.
    url: String,
    secret: Arc<[u8]>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Webhook {
    /// A client for `url` (http:// or https://), signing with `secret`. Fails on a URL it cannot send to, and on
    /// an https URL when the system has no trusted root certificates.
    pub fn new(url: &str, secret: &[u8]) -> Result<Webhook, WebhookError> {
        let shown = redact(url);
        let invalid = |reason| WebhookError::InvalidUrl { url: shown.clone(), reason };
        let uri: Uri = url.parse().map_err(|_| invalid("it does not parse"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("http:// or https:// only")),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("it names no host"));
        }
        let mut roots = rustls::RootCertStore::empty();
        if https {
            for certificate in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(certificate);
            }
            if roots.is_empty() {
                return Err(WebhookError::NoRootCertificates { url: shown });
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the aws-lc-rs provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(1)
            .build(connector);
        Ok(Webhook { uri, url: shown, secret: secret.into(), client })
    }

    /// The URL, without user information.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs `body` with `content_type` and `headers`, signed with the current time. `Ok` on a 2xx answer.
    pub async fn post(
        &self,
        body: impl Into<Bytes>,
        content_type: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), WebhookError> {
        let body: Bytes = body.into();
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
        let signature = sign(&self.secret, timestamp, &body);
        let invalid_header = |name: &str| WebhookError::InvalidHeader { url: self.url.clone(), name: name.to_string() };
        let mut request = Request::post(self.uri.clone())
            .header(USER_AGENT, HeaderValue::from_static("warden"))
            .header(TIMESTAMP_HEADER, HeaderValue::from(timestamp))
            .header(SIGNATURE_HEADER, HeaderValue::from_str(&signature).expect("hex is a valid header value"))
            .body(Full::new(body))
            .expect("a request from a parsed URI and valid headers");
        request.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_str(content_type).map_err(|_| invalid_header(CONTENT_TYPE.as_str()))?,
        );
        for (name, value) in headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid_header(name))?;
            let value = HeaderValue::from_str(value).map_err(|_| invalid_header(name))?;
            request.headers_mut().append(header, value);
        }
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| WebhookError::Transport { url: self.url.clone(), reason: chain(&error) })?;
            let status = response.status();
            let retry_after = (status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE)
                .then(|| response.headers().get(RETRY_AFTER).and_then(retry_after_seconds))
                .flatten();
            // Read (and drop) the answer so the connection can serve the next POST.
            let _ = Limited::new(response.into_body(), MAX_RESPONSE_BYTES).collect().await;
            match classify(status) {
                Outcome::Delivered => Ok(()),
                Outcome::Retryable | Outcome::Permanent => {
                    Err(WebhookError::Status { url: self.url.clone(), status, retry_after })
                }
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| WebhookError::Timeout { url: self.url.clone() })?
    }
}

/// `Retry-After` in seconds (an HTTP date is ignored: the backoff applies then).
fn retry_after_seconds(value: &HeaderValue) -> Option<Duration> {
    value.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `scheme://user:password@host/…` → `scheme://host/…`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// An error and its sources, joined: hyper's own messages alone ("client error (Connect)") do not say what failed.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Delays between attempts at one request: [`Backoff::INITIAL`] doubling to [`Backoff::CAP`], each ±20% (never
/// above the cap), or the receiver's `Retry-After` up to [`Backoff::RETRY_AFTER_CAP`].
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub const INITIAL: Duration = Duration::from_millis(500);
    pub const CAP: Duration = Duration::from_secs(30);
    pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
    /// The jitter, as a fraction of the delay either way.
    pub const JITTER: f64 = 0.2;

    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// The delay before the next attempt after a failure, advancing the sequence: the receiver's `retry_after`
    /// (see [`WebhookError::retry_after`]) when it gave one, else the jittered backoff.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let nominal = Backoff::nominal(self.failures);
        self.failures = self.failures.saturating_add(1);
        if let Some(retry_after) = retry_after {
            return retry_after.min(Backoff::RETRY_AFTER_CAP);
        }
        let factor = rand::rng().random_range(1.0 - Backoff::JITTER..=1.0 + Backoff::JITTER);
        nominal.mul_f64(factor).min(Backoff::CAP)
    }

    /// The delay after `failures` earlier failures, before jitter.
    pub fn nominal(failures: u32) -> Duration {
        Backoff::INITIAL.saturating_mul(1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX)).min(Backoff::CAP)
    }

    /// Failures since the last [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Starts over (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests;
