//! Bodies on their way through: [`Relay`] passes an upstream (or client) body frame by frame, through a
//! [`Transform`] when warden must rewrite it (server-sent events masked event by event, text and JSON masked as
//! they stream), counts it, keeps the start of it for the audit trail, and reports once when it ends, however it
//! ends (complete, failed, cut by warden, or dropped because the client went away).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};

use crate::hooks::TokenUsage;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body warden sends, to clients and upstreams.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What a transform learned of the body, for the record.
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    pub usage: Option<TokenUsage>,
    /// The answer text (LLM) or the start of the body, as sent (masked when the transform masks).
    pub answer: Option<String>,
    pub masked: u64,
    /// A batch's results read whole: its key, and what they reported.
    pub batch: Option<(String, warden_llm::BatchTotals)>,
}

/// How a body ended.
pub(crate) struct End {
    pub bytes: u64,
    pub error: Option<String>,
    pub summary: Summary,
}

pub(crate) type OnEnd = Box<dyn FnOnce(End) + Send>;

/// A rewrite of a body, chunk by chunk. Output may lag input (held back) but is complete after `finish`.
pub(crate) trait Transform: Send {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), String>;
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String>;
    /// The last bytes to send after a failure, when the format has a way to say so (an SSE error event).
    fn failure(&mut self, _message: &str, _out: &mut Vec<u8>) {}
    fn summary(&mut self) -> Summary;
}

/// How much of an untransformed body is kept for the audit trail.
const SAMPLE_BYTES: usize = crate::proxy::AUDIT_TEXT_CAP;

/// The start of a body as sent (at most [`SAMPLE_BYTES`]), kept for the audit trail.
#[derive(Default)]
struct Sample(Vec<u8>);

impl Sample {
    fn keep(&mut self, bytes: &[u8]) {
        let room = SAMPLE_BYTES.saturating_sub(self.0.len());
        self.0.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// The summary of a body with this sample and `masked` values masked.
    fn summary(&self, masked: u64) -> Summary {
        Summary {
            usage: None,
            answer: (!self.0.is_empty()).then(|| String::from_utf8_lossy(&self.0).into_owned()),
            masked,
            batch: None,
        }
    }
}

/// A session's stop signal: set once, with the reason, when warden ends the session under its streams (a
/// revocation); every stream of the session watching it ([`Cut`]) then ends.
pub(crate) struct Stop {
    reason: OnceLock<String>,
    notify: Arc<tokio::sync::Notify>,
}

impl Stop {
    pub(crate) fn new() -> Stop {
        Stop { reason: OnceLock::new(), notify: Arc::new(tokio::sync::Notify::new()) }
    }

    /// Stops the session's streams; false if it was stopped before.
    pub(crate) fn stop(&self, reason: String) -> bool {
        let first = self.reason.set(reason).is_ok();
        if first {
            self.notify.notify_waiters();
        }
        first
    }

    pub(crate) fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}

/// What ends one answer before its upstream does: its session's [`Stop`], and the expiry of the credential the
/// request came with. Checked before each frame; the wakers that end a stalled answer are only registered once the
/// upstream has nothing ready, so an answer that streams without waiting costs an atomic load per frame.
pub(crate) struct Cut {
    stop: Arc<Stop>,
    stopped: Option<Pin<Box<tokio::sync::futures::OwnedNotified>>>,
    expiry: Option<(tokio::time::Instant, String)>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Cut {
    /// Watches `stop`, and `expiry` (when, and what to say then) if the credential expires.
    pub(crate) fn new(stop: Arc<Stop>, expiry: Option<(tokio::time::Instant, String)>) -> Cut {
        Cut { stop, stopped: None, expiry, sleep: None }
    }

    /// Why the answer must end now, if it must.
    fn check(&self) -> Option<String> {
        if let Some(reason) = self.stop.reason() {
            return Some(reason.to_string());
        }
        let (at, message) = self.expiry.as_ref()?;
        (tokio::time::Instant::now() >= *at).then(|| message.clone())
    }

    /// As [`Cut::check`], after arranging for the task to be woken when the session is stopped or the credential
    /// expires (the upstream has nothing ready).
    fn watch(&mut self, cx: &mut Context<'_>) -> Option<String> {
        let stop = &self.stop;
        let stopped = self.stopped.get_or_insert_with(|| Box::pin(stop.notify.clone().notified_owned()));
        // Registered before the reason is read (`check`): a stop after this wakes the task, one before is seen.
        if stopped.as_mut().poll(cx).is_ready() {
            self.stopped = None;
        }
        if let Some((at, _)) = &self.expiry {
            let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(*at)));
            let _ = sleep.as_mut().poll(cx);
        }
        self.check()
    }
}

pub(crate) struct Relay<B> {
    inner: B,
    transform: Option<Box<dyn Transform>>,
    on_end: Option<OnEnd>,
    cut: Option<Cut>,
    bytes: u64,
    /// The start of an untransformed body, for the record.
    sample: Sample,
    state: State,
    out: Vec<u8>,
}

#[derive(PartialEq, Eq)]
enum State {
    Streaming,
    /// The last frame has been sent: the next poll ends the body.
    Done,
}

impl<B> Relay<B> {
    pub fn new(inner: B, transform: Option<Box<dyn Transform>>, on_end: Option<OnEnd>) -> Relay<B> {
        Relay {
            inner,
            transform,
            on_end,
            cut: None,
            bytes: 0,
            sample: Sample::default(),
            state: State::Streaming,
            out: Vec::new(),
        }
    }

    /// Ends the body early, as a failure, when `cut` says so.
    pub fn with_cut(mut self, cut: Cut) -> Relay<B> {
        self.cut = Some(cut);
        self
    }

    fn end(&mut self, error: Option<String>) {
        let Some(on_end) = self.on_end.take() else { return };
        let summary = match &mut self.transform {
            Some(transform) => transform.summary(),
            None => self.sample.summary(0),
        };
        on_end(End { bytes: self.bytes, error, summary });
    }

    fn data(&mut self, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.bytes += bytes.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    /// Warden ends the body: its session was stopped, or its credential expired.
    fn cut_off(&mut self, reason: &str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.cut = None;
        let message = format!("the answer was cut off: {reason}");
        self.fail(message.clone(), message.into())
    }

    /// The body fails with `message`. Held text is never released unmasked. A format with an in-band error (SSE)
    /// says so and ends cleanly, the connection staying usable; any other body is aborted with `error`, so the
    /// client cannot take a truncated answer for a whole one.
    fn fail(&mut self, message: String, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.end(Some(message.clone()));
        self.state = State::Done;
        if let Some(transform) = self.transform.as_mut() {
            self.out.clear();
            transform.failure(&message, &mut self.out);
            if !self.out.is_empty() {
                let out = Bytes::from(std::mem::take(&mut self.out));
                return self.data(out);
            }
        }
        Poll::Ready(Some(Err(error)))
    }
}

/// Why a body was stopped: its content could not be masked (the transform's message). A request body's tells the
/// proxy to answer the client 400 rather than blame the upstream.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unmaskable(pub(crate) String);

impl<B> Body for Relay<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.state == State::Done {
                this.end(None);
                return Poll::Ready(None);
            }
            if let Some(reason) = this.cut.as_ref().and_then(Cut::check) {
                return this.cut_off(&reason);
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => match this.cut.as_mut().and_then(|cut| cut.watch(cx)) {
                    Some(reason) => return this.cut_off(&reason),
                    None => return Poll::Pending,
                },
                Poll::Ready(frame) => frame,
            };
            match frame {
                Some(Ok(frame)) => {
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        // Trailers pass as they are.
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    let Some(transform) = this.transform.as_mut() else {
                        this.sample.keep(&data);
                        return this.data(data);
                    };
                    this.out.clear();
                    if let Err(message) = transform.push(&data, &mut this.out) {
                        // Fail closed: what could not be masked is not sent; the format's error, if it has one, is.
                        this.out.clear();
                        transform.failure(&message, &mut this.out);
                        this.end(Some(message.clone()));
                        this.state = State::Done;
                        if this.out.is_empty() {
                            return Poll::Ready(Some(Err(Box::new(Unmaskable(message)))));
                        }
                        let out = Bytes::from(std::mem::take(&mut this.out));
                        return this.data(out);
                    }
                    if !this.out.is_empty() {
                        let out = Bytes::from(std::mem::take(&mut this.out));
                        return this.data(out);
                    }
                }
                Some(Err(error)) => {
                    let error: BoxError = error.into();
                    return this.fail(format!("the upstream's answer was cut short: {error}"), error);
                }
                None => {
                    this.state = State::Done;
                    let Some(transform) = this.transform.as_mut() else { continue };
                    this.out.clear();
                    if let Err(message) = transform.finish(&mut this.out) {
                        this.out.clear();
                        transform.failure(&message, &mut this.out);
                        this.end(Some(message.clone()));
                        if this.out.is_empty() {
                            return Poll::Ready(Some(Err(Box::new(Unmaskable(message)))));
                        }
                    }
                    if !this.out.is_empty() {
                        let out = Bytes::from(std::mem::take(&mut this.out));
                        return this.data(out);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done && self.on_end.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.transform {
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

impl<B> Drop for Relay<B> {
    fn drop(&mut self) {
        if self.on_end.is_some() {
            self.end(Some("the client went away before the end of the response".into()));
        }
    }
}

/// An LLM answer streamed as server-sent events: each event parsed, masked by the provider's rules, written back.
pub(crate) struct SseTransform {
    parser: warden_llm::SseParser,
    masker: warden_llm::ResponseMasker,
    events: Vec<warden_llm::SseEvent>,
}

/// The largest single event accepted from an upstream.
const MAX_EVENT_BYTES: usize = 4 << 20;

impl SseTransform {
    pub fn new(masker: warden_llm::ResponseMasker) -> SseTransform {
        SseTransform { parser: warden_llm::SseParser::new(MAX_EVENT_BYTES), masker, events: Vec::new() }
    }

    fn write(&mut self, events: Vec<warden_llm::SseEvent>, out: &mut Vec<u8>) -> Result<(), String> {
        for event in events {
            for masked in self.masker.event(event).map_err(|error| error.to_string())? {
                masked.write(out);
            }
        }
        Ok(())
    }
}

impl Transform for SseTransform {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let events = self.parser.push(chunk).map_err(|error| error.to_string())?;
        self.write(events, out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let events = self.parser.finish().map_err(|error| error.to_string())?;
        self.write(events, out)?;
        for event in self.masker.finish().map_err(|error| error.to_string())? {
            event.write(out);
        }
        let _ = &self.events;
        Ok(())
    }

    fn failure(&mut self, message: &str, out: &mut Vec<u8>) {
        let data = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": format!("warden: {message}")}});
        out.extend_from_slice(format!("event: error\ndata: {data}\n\n").as_bytes());
    }

    fn summary(&mut self) -> Summary {
        Summary {
            usage: self
                .masker
                .usage()
                .map(|usage| TokenUsage { input: usage.input_tokens, output: usage.output_tokens }),
            answer: Some(crate::proxy::cap(self.masker.answer_text().to_string())),
            masked: self.masker.masked_count() as u64,
            batch: None,
        }
    }
}

/// A plain HTTP body masked as it streams, when its content type is text or JSON.
struct PlainTransform {
    masker: warden_llm::BodyMasker,
    sample: Sample,
}

impl Transform for PlainTransform {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let masked = self.masker.push(chunk).map_err(|error| error.to_string())?;
        self.sample.keep(&masked);
        out.extend_from_slice(&masked);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let masked = self.masker.finish().map_err(|error| error.to_string())?;
        self.sample.keep(&masked);
        out.extend_from_slice(&masked);
        Ok(())
    }

    fn summary(&mut self) -> Summary {
        self.sample.summary(self.masker.masked_count() as u64)
    }
}

/// The masking transform for a plain body of `content_type`, or `None` when the type is not masked (binary).
pub(crate) fn plain_transform(
    content_type: &str,
    masker: warden_mask::Masker,
    hold_back: usize,
) -> Option<Box<dyn Transform>> {
    let masker = warden_llm::BodyMasker::for_content_type(content_type, masker, hold_back)?;
    Some(Box::new(PlainTransform { masker, sample: Sample::default() }))
}

/// The largest answer of Anthropic batch objects read whole to move their `results_url` (a list of a thousand is
/// about 600 KiB).
const BATCH_ANSWER_BYTES: usize = 8 << 20;

/// Reads an answer of Anthropic batch objects whole, moves their `results_url` from the upstream to warden
/// ([`warden_llm::gateway_results_urls`]), then passes it on through `then` (the masking of its content type), if
/// any.
struct ResultsUrls {
    upstream: String,
    gateway: String,
    buffer: Vec<u8>,
    then: Option<Box<dyn Transform>>,
    sample: Sample,
}

pub(crate) fn results_urls(upstream: String, gateway: String, then: Option<Box<dyn Transform>>) -> Box<dyn Transform> {
    Box::new(ResultsUrls { upstream, gateway, buffer: Vec::new(), then, sample: Sample::default() })
}

impl ResultsUrls {
    /// `body` through `then` (masked), or as it is.
    fn pass(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match &mut self.then {
            Some(then) => {
                then.push(body, out)?;
                then.finish(out)
            }
            None => {
                self.sample.keep(body);
                out.extend_from_slice(body);
                Ok(())
            }
        }
    }
}

impl Transform for ResultsUrls {
    fn push(&mut self, chunk: &[u8], _out: &mut Vec<u8>) -> Result<(), String> {
        if self.buffer.len() + chunk.len() > BATCH_ANSWER_BYTES {
            return Err(format!("an answer of message batches over {} MiB", BATCH_ANSWER_BYTES >> 20));
        }
        self.buffer.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let buffer = std::mem::take(&mut self.buffer);
        let Some(marked) = warden_llm::gateway_results_urls(&buffer, &self.upstream) else {
            return self.pass(&buffer, out);
        };
        let mut masked = Vec::new();
        self.pass(&marked, &mut masked)?;
        out.extend(warden_llm::place_gateway(&masked, &self.gateway));
        Ok(())
    }

    fn failure(&mut self, message: &str, out: &mut Vec<u8>) {
        if let Some(then) = &mut self.then {
            then.failure(message, out);
        }
    }

    fn summary(&mut self) -> Summary {
        match &mut self.then {
            Some(then) => then.summary(),
            None => self.sample.summary(0),
        }
    }
}

/// Passes a batch's results on through `then` (the masking of their content type), if any, and sums the usage
/// their lines report ([`warden_llm::BatchUsage`]) from the bytes as the upstream sent them. The totals are in the
/// summary only when the results were read to their end.
struct BatchResults {
    key: String,
    usage: Option<warden_llm::BatchUsage>,
    totals: Option<warden_llm::BatchTotals>,
    then: Option<Box<dyn Transform>>,
    sample: Sample,
}

/// The transform of the results of batch `key` (`<api>:<id>`) of `api`.
pub(crate) fn batch_results(key: String, api: warden_llm::Api, then: Option<Box<dyn Transform>>) -> Box<dyn Transform> {
    let usage = Some(warden_llm::BatchUsage::new(api));
    Box::new(BatchResults { key, usage, totals: None, then, sample: Sample::default() })
}

impl Transform for BatchResults {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        if let Some(usage) = &mut self.usage {
            usage.push(chunk);
        }
        match &mut self.then {
            Some(then) => then.push(chunk, out),
            None => {
                self.sample.keep(chunk);
                out.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        if let Some(then) = &mut self.then {
            then.finish(out)?;
        }
        self.totals = self.usage.take().and_then(warden_llm::BatchUsage::finish);
        Ok(())
    }

    fn failure(&mut self, message: &str, out: &mut Vec<u8>) {
        if let Some(then) = &mut self.then {
            then.failure(message, out);
        }
    }

    fn summary(&mut self) -> Summary {
        let mut summary = match &mut self.then {
            Some(then) => then.summary(),
            None => self.sample.summary(0),
        };
        summary.batch = self.totals.take().map(|totals| (self.key.clone(), totals));
        summary
    }
}

/// A masker that finds nothing: LLM answers of a session that is not masked still go through the response
/// masker, for usage and the audit copy.
pub(crate) fn no_masking() -> warden_mask::Masker {
    static NONE: std::sync::OnceLock<warden_mask::Masker> = std::sync::OnceLock::new();
    NONE.get_or_init(|| {
        let config = warden_mask::MaskerConfig {
            detectors: warden_mask::Selection::Only(Vec::new()),
            custom: Vec::new(),
            strategies: std::collections::HashMap::new(),
            hash_key: [0; 32],
        };
        warden_mask::Masker::new(&config).expect("a masker with no detectors compiles")
    })
    .clone()
}

/// A body of known bytes.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into()).map_err(|never| -> BoxError { match never {} }).boxed_unsync()
}
