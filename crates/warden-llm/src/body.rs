//! Masking plain HTTP bodies (connections without an `api`), request or response, streamed chunk by chunk and never
//! held whole, chosen by content type:
//!
//! - JSON (`application/json`, `*+json`, `application/x-ndjson`, `application/jsonl`): a streaming tokenizer walks
//!   the document; each string value is decoded (escapes included) and its text masked by a
//!   [`warden_mask::StreamMasker`], then encoded again; keys, structure and whitespace are copied as they are; a
//!   number the detectors find something in (a card number sent as a number) becomes a JSON string of its masked
//!   form. Masking the decoded text rather than the raw bytes is what keeps the JSON valid whatever is found: raw,
//!   `"…\njane@example.com"` is `…\` followed by a word `njane@example.com`, which a detector takes whole, leaving
//!   `\***@example.com`, an invalid escape; and raw text would hide `jane\u0040example.com` from every detector.
//!   Several top-level values (NDJSON, concatenated JSON) are accepted. A body that is not JSON is an error.
//! - `text/event-stream`: each event's data is masked whole (as JSON when it is JSON, as text otherwise), and its
//!   comments as text; an event is at most [`MAX_EVENT_BYTES`]. A trailing event the stream never ended is dropped
//!   (a client discards it too). Values split across events are not seen: for LLM streams, where they are, use
//!   [`crate::ResponseMasker`].
//! - Text (`text/*`, XML, JavaScript, YAML, GraphQL, form-encoded): masked as a text stream, which must be UTF-8.
//! - No content type, `application/octet-stream` (what clients send for a file whose type they do not know, a `.jsonl`
//!   batch file among them) or its unregistered alias `application/binary`: the first [`SNIFF_BYTES`] are looked at.
//!   The body is binary when they are not UTF-8 or hold a NUL; JSON when they begin a JSON value the tokenizer
//!   accepts; text otherwise.
//! - Multipart (`multipart/*`): part by part, each part's body by its own content type as above (see
//!   [`multipart`]).
//! - Anything else (images, audio, archives, PDF) passes untouched.
//!
//! The body must be the identity encoding: the proxy decodes or refuses a `Content-Encoding` first.
//!
//! Bounds: a string value's held text is its stream masker's; a number at most [`MAX_NUMBER_BYTES`]; nesting at
//! most [`MAX_DEPTH`]; an event at most [`MAX_EVENT_BYTES`]; a sniffed body's first [`SNIFF_BYTES`]. Going over is an
//! error.

use warden_mask::{Masker, StreamError, StreamMasker};

use crate::json::{self, Json};
use crate::sse::{SseError, SseParser};

pub mod multipart;
mod texts;

pub use texts::RequestTexts;

/// The deepest nesting of JSON objects and arrays accepted.
pub const MAX_DEPTH: usize = 128;

/// The longest JSON number accepted (number tokens are held whole to be checked).
pub const MAX_NUMBER_BYTES: usize = 128;

/// The largest event of a `text/event-stream` body.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// How much of a body without a content type is looked at to tell text from binary.
pub const SNIFF_BYTES: usize = 512;

/// How a body is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    EventStream,
    Text,
    /// Passed untouched.
    Binary,
    /// No content type, or `application/octet-stream`: JSON, text or binary is decided on the first bytes.
    Unknown,
    /// `multipart/*`: each part by its own content type.
    Multipart,
}

impl BodyKind {
    /// The kind of a `Content-Type` header value (`None`: no header).
    pub fn of(content_type: Option<&str>) -> BodyKind {
        let Some(content_type) = content_type else {
            return BodyKind::Unknown;
        };
        let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if essence.is_empty() {
            return BodyKind::Unknown;
        }
        match essence.as_str() {
            "application/json"
            | "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/jsonlines"
            | "application/x-jsonlines" => BodyKind::Json,
            "text/event-stream" => BodyKind::EventStream,
            "application/octet-stream" | "application/binary" => BodyKind::Unknown,
            "application/xml"
            | "application/javascript"
            | "application/x-www-form-urlencoded"
            | "application/yaml"
            | "application/x-yaml"
            | "application/graphql"
            | "application/sql" => BodyKind::Text,
            other if other.ends_with("+json") => BodyKind::Json,
            other if other.ends_with("+xml") || other.starts_with("text/") => BodyKind::Text,
            other if other.starts_with("multipart/") => BodyKind::Multipart,
            _ => BodyKind::Binary,
        }
    }
}

/// The model a request body of `content_type` names, read whole: a JSON object's `"model"` string, or a multipart
/// form's `model` field (as OpenAI's audio endpoints take it); `None` for a body that names none, or of another
/// type. A body without a type (or `application/octet-stream`) that is JSON is read as JSON: a provider may parse it
/// whatever its type says. A JSON or multipart body that cannot be read is an error: whether it names a model
/// cannot be told.
pub fn named_model(content_type: &str, body: &[u8]) -> Result<Option<String>, BodyError> {
    let content_type = (!content_type.trim().is_empty()).then_some(content_type);
    let model_of = |value: &Json| match value.member("model") {
        None => Ok(None),
        Some(Json::String(model)) => Ok(Some(model.clone())),
        Some(_) => Err(BodyError::InvalidJson { offset: 0, reason: "\"model\" is not a string" }),
    };
    match BodyKind::of(content_type) {
        BodyKind::Json => {
            let value =
                Json::parse(body).map_err(|_| BodyError::InvalidJson { offset: 0, reason: "not one JSON value" })?;
            model_of(&value)
        }
        BodyKind::Unknown => match Json::parse(body) {
            Ok(value) => model_of(&value),
            Err(_) => Ok(None),
        },
        BodyKind::Multipart => multipart::form_field(content_type.unwrap_or_default(), body, "model")
            .map(|model| model.map(|model| model.trim().to_string())),
        _ => Ok(None),
    }
}

/// A body warden cannot mask; the stream must stop (fail closed). Who is at fault depends on the direction: the
/// client for a request body, the upstream for a response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not valid UTF-8 (at byte {offset})")]
    InvalidUtf8 { offset: u64 },
    #[error("the body is not valid JSON (at byte {offset}: {reason})")]
    InvalidJson { offset: u64, reason: &'static str },
    #[error("the body ends inside a JSON value")]
    TruncatedJson,
    #[error("the body has a JSON number longer than {limit} bytes")]
    NumberTooLong { limit: usize },
    #[error("the body nests JSON deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error(transparent)]
    EventStream(#[from] SseError),
    #[error("the body is not multipart as it says (at byte {offset}: {reason})")]
    InvalidMultipart { offset: u64, reason: String },
}

impl From<StreamError> for BodyError {
    fn from(error: StreamError) -> BodyError {
        match error {
            StreamError::InvalidUtf8 { offset } | StreamError::TruncatedUtf8 { offset } => {
                BodyError::InvalidUtf8 { offset }
            }
        }
    }
}

/// Masks one body, chunk by chunk.
pub struct BodyMasker {
    kind: BodyKind,
    inner: Inner,
    masker: Masker,
    hold_back: usize,
    findings: usize,
}

enum Inner {
    Pass,
    Text(Box<StreamMasker>),
    Json(Box<JsonMasker>),
    EventStream(SseParser),
    Sniff(Vec<u8>),
    Multipart(Box<multipart::MultipartMasker>),
    /// A body that cannot be masked as its content type says (a multipart one without a boundary): every push is
    /// this error.
    Invalid(BodyError),
}

impl BodyMasker {
    /// A masker for a body of `content_type` (the header's value, if any); `hold_back` is the window of the
    /// stream maskers ([`warden_mask::DEFAULT_HOLD_BACK`] is a good one).
    pub fn new(content_type: Option<&str>, masker: Masker, hold_back: usize) -> BodyMasker {
        BodyMasker::nested(content_type, masker, hold_back, 1)
    }

    /// A masker for a body nested `depth` levels deep in multipart bodies (1: not nested).
    fn nested(content_type: Option<&str>, masker: Masker, hold_back: usize, depth: usize) -> BodyMasker {
        let kind = BodyKind::of(content_type);
        let inner = Self::inner(kind, content_type, &masker, hold_back, depth);
        BodyMasker { kind, inner, masker, hold_back, findings: 0 }
    }

    fn inner(kind: BodyKind, content_type: Option<&str>, masker: &Masker, hold_back: usize, depth: usize) -> Inner {
        match kind {
            BodyKind::Json => Inner::Json(Box::new(JsonMasker::new(masker.clone(), hold_back))),
            BodyKind::EventStream => Inner::EventStream(SseParser::new(MAX_EVENT_BYTES)),
            BodyKind::Text => Inner::Text(Box::new(StreamMasker::new(masker.clone(), hold_back))),
            BodyKind::Binary => Inner::Pass,
            BodyKind::Unknown => Inner::Sniff(Vec::new()),
            BodyKind::Multipart => {
                let content_type = content_type.unwrap_or_default();
                match multipart::MultipartMasker::new(content_type, masker.clone(), hold_back, depth) {
                    Ok(multipart) => Inner::Multipart(Box::new(multipart)),
                    Err(error) => Inner::Invalid(error),
                }
            }
        }
    }

    /// A masker for a body of `content_type` (the header's value, empty when there is none), or `None` when such a
    /// body passes untouched (binary).
    pub fn for_content_type(content_type: &str, masker: Masker, hold_back: usize) -> Option<BodyMasker> {
        let content_type = (!content_type.trim().is_empty()).then_some(content_type);
        (BodyKind::of(content_type) != BodyKind::Binary).then(|| BodyMasker::new(content_type, masker, hold_back))
    }

    /// How the body is masked (for a body without a content type, [`BodyKind::Unknown`] until decided).
    pub fn kind(&self) -> BodyKind {
        self.kind
    }

    /// Whether the body passes untouched (the proxy may then forward its chunks without calling [`Self::push`]).
    pub fn passes_untouched(&self) -> bool {
        matches!(self.inner, Inner::Pass)
    }

    /// Values masked so far.
    pub fn masked_count(&self) -> usize {
        self.findings
    }

    /// Feeds a chunk; returns what may be sent now.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BodyError> {
        let mut findings = 0;
        let result = match &mut self.inner {
            Inner::Pass => Ok(chunk.to_vec()),
            Inner::Text(stream) => stream.push_bytes(chunk, &mut |_| findings += 1).map_err(BodyError::from),
            Inner::Json(json) => json.push(chunk, &mut findings),
            Inner::Multipart(multipart) => multipart.push(chunk, &mut findings),
            Inner::Invalid(error) => Err(error.clone()),
            Inner::EventStream(parser) => {
                let events = parser.push(chunk)?;
                let mut out = Vec::new();
                for event in events {
                    mask_event(&self.masker, event, &mut findings).write(&mut out);
                }
                Ok(out)
            }
            Inner::Sniff(buffer) => {
                buffer.extend_from_slice(chunk);
                if buffer.len() < SNIFF_BYTES {
                    Ok(Vec::new())
                } else {
                    let buffered = std::mem::take(buffer);
                    return self.decide(&buffered);
                }
            }
        };
        self.findings += findings;
        result
    }

    /// The end of the body: what is still held.
    pub fn finish(&mut self) -> Result<Vec<u8>, BodyError> {
        if let Inner::Sniff(buffer) = &mut self.inner {
            let buffered = std::mem::take(buffer);
            let mut out = self.decide(&buffered)?;
            out.extend(self.finish()?);
            return Ok(out);
        }
        let mut findings = 0;
        let result = match &mut self.inner {
            Inner::Pass | Inner::Sniff(_) => Ok(Vec::new()),
            Inner::Text(stream) => stream.finish_bytes(&mut |_| findings += 1).map_err(BodyError::from),
            Inner::Json(json) => json.finish(&mut findings),
            Inner::Multipart(multipart) => multipart.finish(&mut findings),
            Inner::Invalid(error) => Err(error.clone()),
            // An event the stream never ended is dropped, as a client would drop it.
            Inner::EventStream(parser) => {
                let _ = parser.finish();
                Ok(Vec::new())
            }
        };
        self.findings += findings;
        result
    }

    /// Decides how the body is masked on its first bytes, and masks them: binary when they are not UTF-8 (an
    /// incomplete last character allowed) or hold a NUL; JSON when they begin with `{` or `[` (after white space)
    /// and the JSON tokenizer takes them; text otherwise. A JSON document is masked as JSON, string by string:
    /// masked as text, an escape next to a value (`\njane@…`) would be cut.
    fn decide(&mut self, first: &[u8]) -> Result<Vec<u8>, BodyError> {
        let sniffed = sniff(first);
        if sniffed == Sniffed::JsonLike {
            // The JSON masker that took the first bytes goes on with the rest.
            let mut json = JsonMasker::new(self.masker.clone(), self.hold_back);
            let mut findings = 0;
            if let Ok(out) = json.push(first, &mut findings) {
                (self.kind, self.inner) = (BodyKind::Json, Inner::Json(Box::new(json)));
                self.findings += findings;
                return Ok(out);
            }
        }
        self.kind = if sniffed == Sniffed::Binary { BodyKind::Binary } else { BodyKind::Text };
        // Neither has parameters or nesting to pass on.
        self.inner = Self::inner(self.kind, None, &self.masker, self.hold_back, 1);
        self.push(first)
    }
}

/// What the first bytes of a body without a type say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// Not UTF-8 (an incomplete last character allowed), or holding a NUL.
    Binary,
    /// Text beginning with `{` or `[` (after white space): JSON if the rest bears it out.
    JsonLike,
    Text,
}

/// Sniffs `first`, the first [`SNIFF_BYTES`] of a body (or all of a shorter one).
pub(crate) fn sniff(first: &[u8]) -> Sniffed {
    let utf8 = match std::str::from_utf8(first) {
        Ok(_) => true,
        Err(error) => error.error_len().is_none(),
    };
    if !utf8 || first.contains(&0) {
        Sniffed::Binary
    } else if matches!(first.trim_ascii_start().first(), Some(b'{' | b'[')) {
        Sniffed::JsonLike
    } else {
        Sniffed::Text
    }
}

impl std::fmt::Debug for BodyMasker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("BodyMasker").field("kind", &self.kind).field("findings", &self.findings).finish()
    }
}

/// An event of a plain event stream: data masked as JSON when it is JSON, as text otherwise; comments as text.
fn mask_event(masker: &Masker, mut event: crate::SseEvent, findings: &mut usize) -> crate::SseEvent {
    if let Some(data) = &mut event.data {
        match Json::parse(data.as_bytes()) {
            Ok(mut value) => {
                let masked = json::mask_values(&mut value, masker, &[], &mut |_| {});
                if masked > 0 {
                    *findings += masked;
                    *data = String::from_utf8(value.to_vec()).expect("serde_json writes UTF-8");
                }
            }
            Err(_) => {
                if let std::borrow::Cow::Owned(masked) = masker.mask_counting(data, &mut |_| *findings += 1) {
                    *data = masked;
                }
            }
        }
    }
    for comment in &mut event.comments {
        if let std::borrow::Cow::Owned(masked) = masker.mask_counting(comment, &mut |_| *findings += 1) {
            *comment = masked;
        }
    }
    event
}

/// Where the JSON tokenizer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value must come (top level, after `:`, after `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ValueOrClose,
    /// After `{`: a key or `}`.
    KeyOrClose,
    /// After `,` in an object.
    Key,
    /// After a key.
    Colon,
    /// After a value: `,` or the container's close (at top level, whitespace or another value).
    After,
    /// Inside a key, copied as it is; `escaped` after a backslash.
    KeyString {
        escaped: bool,
    },
    /// Inside a string value, decoded.
    ValueString,
    /// After a backslash in a string value.
    Escape,
    /// In a `\uXXXX` escape: the digits so far.
    Unicode {
        digits: u8,
        value: u16,
    },
    Number,
    /// In `true`, `false` or `null`: the literal and how much of it was seen.
    Literal {
        literal: &'static [u8],
        seen: usize,
    },
}

/// The streaming JSON masker: structure copied, string values decoded, masked and encoded again.
struct JsonMasker {
    masker: Masker,
    strings: StreamMasker,
    /// `{` or `[` per open container.
    stack: Vec<u8>,
    state: State,
    /// Decoded bytes of the current string value not yet given to `strings` (at most one chunk's worth).
    decoded: Vec<u8>,
    /// A high surrogate escape waiting for its low half.
    high_surrogate: Option<u16>,
    number: String,
    /// Bytes consumed before the current chunk, for error offsets.
    offset: u64,
}

impl JsonMasker {
    fn new(masker: Masker, hold_back: usize) -> JsonMasker {
        JsonMasker {
            strings: StreamMasker::new(masker.clone(), hold_back),
            masker,
            stack: Vec::new(),
            state: State::Value,
            decoded: Vec::new(),
            high_surrogate: None,
            number: String::new(),
            offset: 0,
        }
    }

    fn push(&mut self, chunk: &[u8], findings: &mut usize) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::with_capacity(chunk.len() + 16);
        let mut at = 0;
        while at < chunk.len() {
            at = self.step(chunk, at, &mut out, findings)?;
        }
        if matches!(self.state, State::ValueString | State::Escape | State::Unicode { .. }) {
            self.release_decoded(&mut out, findings)?;
        }
        self.offset += chunk.len() as u64;
        Ok(out)
    }

    fn finish(&mut self, findings: &mut usize) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        if self.state == State::Number && self.stack.is_empty() {
            self.end_number(&mut out, findings)?;
            self.state = State::After;
        }
        if !self.stack.is_empty() || !matches!(self.state, State::Value | State::After) {
            return Err(BodyError::TruncatedJson);
        }
        Ok(out)
    }

    fn error(&self, at: usize, reason: &'static str) -> BodyError {
        BodyError::InvalidJson { offset: self.offset + at as u64, reason }
    }

    /// Consumes from `chunk[at]`; returns where to go on.
    fn step(&mut self, chunk: &[u8], at: usize, out: &mut Vec<u8>, findings: &mut usize) -> Result<usize, BodyError> {
        let byte = chunk[at];
        match self.state {
            State::ValueString => {
                // The run up to the next quote, backslash or control character is text as it is.
                let run = chunk[at..].iter().position(|byte| matches!(byte, b'"' | b'\\' | 0..=0x1F));
                let end = run.map_or(chunk.len(), |run| at + run);
                if end > at {
                    self.flush_surrogate();
                    self.decoded.extend_from_slice(&chunk[at..end]);
                    return Ok(end);
                }
                match byte {
                    b'"' => {
                        self.flush_surrogate();
                        self.release_decoded(out, findings)?;
                        let rest = self.strings.finish_bytes(&mut |_| *findings += 1)?;
                        escape_into(out, &rest);
                        out.push(b'"');
                        self.state = State::After;
                    }
                    b'\\' => self.state = State::Escape,
                    _ => return Err(self.error(at, "a control character in a string")),
                }
            }
            State::Escape => {
                let decoded = match byte {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b'f' => 0x0C,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        self.state = State::Unicode { digits: 0, value: 0 };
                        return Ok(at + 1);
                    }
                    _ => return Err(self.error(at, "an invalid escape")),
                };
                self.flush_surrogate();
                self.decoded.push(decoded);
                self.state = State::ValueString;
            }
            State::Unicode { digits, value } => {
                let digit = (byte as char).to_digit(16).ok_or_else(|| self.error(at, "an invalid \\u escape"))?;
                let value = value << 4 | digit as u16;
                if digits < 3 {
                    self.state = State::Unicode { digits: digits + 1, value };
                } else {
                    self.unicode(value);
                    self.state = State::ValueString;
                }
            }
            State::KeyString { escaped } => {
                if !escaped {
                    let run = chunk[at..].iter().position(|byte| matches!(byte, b'"' | b'\\' | 0..=0x1F));
                    let end = run.map_or(chunk.len(), |run| at + run);
                    if end > at {
                        out.extend_from_slice(&chunk[at..end]);
                        return Ok(end);
                    }
                }
                if byte < 0x20 {
                    return Err(self.error(at, "a control character in a key"));
                }
                out.push(byte);
                self.state = match (escaped, byte) {
                    (false, b'\\') => State::KeyString { escaped: true },
                    (false, b'"') => State::Colon,
                    _ => State::KeyString { escaped: false },
                };
            }
            State::Number => {
                if matches!(byte, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                    if self.number.len() >= MAX_NUMBER_BYTES {
                        return Err(BodyError::NumberTooLong { limit: MAX_NUMBER_BYTES });
                    }
                    self.number.push(byte as char);
                    return Ok(at + 1);
                }
                if !valid_number(&self.number) {
                    return Err(self.error(at, "an invalid number"));
                }
                self.end_number(out, findings)?;
                self.state = State::After;
                // The byte after the number is read in its own right.
                return Ok(at);
            }
            State::Literal { literal, seen } => {
                if byte != literal[seen] {
                    return Err(self.error(at, "an invalid literal"));
                }
                out.push(byte);
                self.state =
                    if seen + 1 == literal.len() { State::After } else { State::Literal { literal, seen: seen + 1 } };
            }
            State::Colon => match byte {
                b' ' | b'\t' | b'\n' | b'\r' => out.push(byte),
                b':' => {
                    out.push(byte);
                    self.state = State::Value;
                }
                _ => return Err(self.error(at, "expected ':'")),
            },
            State::KeyOrClose | State::Key => match byte {
                b' ' | b'\t' | b'\n' | b'\r' => out.push(byte),
                b'"' => {
                    out.push(byte);
                    self.state = State::KeyString { escaped: false };
                }
                b'}' if self.state == State::KeyOrClose => self.close(byte, out),
                _ => return Err(self.error(at, "expected a key")),
            },
            State::After if !self.stack.is_empty() => match byte {
                b' ' | b'\t' | b'\n' | b'\r' => out.push(byte),
                b',' => {
                    out.push(byte);
                    self.state = if self.stack.last() == Some(&b'{') { State::Key } else { State::Value };
                }
                b'}' | b']' if self.stack.last() == Some(&if byte == b'}' { b'{' } else { b'[' }) => {
                    self.close(byte, out)
                }
                _ => return Err(self.error(at, "expected ',' or the end of the container")),
            },
            // A value: at top level (where after a value, another may come), after ':' or ',' or '['.
            State::Value | State::ValueOrClose | State::After => match byte {
                b' ' | b'\t' | b'\n' | b'\r' => out.push(byte),
                b'{' | b'[' => {
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(BodyError::TooDeep { limit: MAX_DEPTH });
                    }
                    self.stack.push(byte);
                    out.push(byte);
                    self.state = if byte == b'{' { State::KeyOrClose } else { State::ValueOrClose };
                }
                b']' if self.state == State::ValueOrClose => self.close(byte, out),
                b'"' => {
                    out.push(byte);
                    self.strings.reset();
                    self.state = State::ValueString;
                }
                b'-' | b'0'..=b'9' => {
                    self.number.clear();
                    self.number.push(byte as char);
                    self.state = State::Number;
                }
                b't' | b'f' | b'n' => {
                    let literal: &'static [u8] = match byte {
                        b't' => b"true",
                        b'f' => b"false",
                        _ => b"null",
                    };
                    out.push(byte);
                    self.state = State::Literal { literal, seen: 1 };
                }
                _ => return Err(self.error(at, "expected a value")),
            },
        }
        Ok(at + 1)
    }

    fn close(&mut self, byte: u8, out: &mut Vec<u8>) {
        self.stack.pop();
        out.push(byte);
        self.state = State::After;
    }

    /// A `\uXXXX` escape decoded: surrogate pairs joined, a lone surrogate replaced by U+FFFD.
    fn unicode(&mut self, value: u16) {
        let mut buffer = [0; 4];
        if let Some(high) = self.high_surrogate.take() {
            if (0xDC00..=0xDFFF).contains(&value) {
                let code = 0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(value) - 0xDC00);
                let character = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
                self.decoded.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
                return;
            }
            self.decoded.extend_from_slice(char::REPLACEMENT_CHARACTER.encode_utf8(&mut buffer).as_bytes());
        }
        if (0xD800..=0xDBFF).contains(&value) {
            self.high_surrogate = Some(value);
            return;
        }
        let character = char::from_u32(u32::from(value)).unwrap_or(char::REPLACEMENT_CHARACTER);
        self.decoded.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
    }

    /// A high surrogate not followed by its low half is U+FFFD.
    fn flush_surrogate(&mut self) {
        if self.high_surrogate.take().is_some() {
            let mut buffer = [0; 4];
            self.decoded.extend_from_slice(char::REPLACEMENT_CHARACTER.encode_utf8(&mut buffer).as_bytes());
        }
    }

    fn release_decoded(&mut self, out: &mut Vec<u8>, findings: &mut usize) -> Result<(), BodyError> {
        if self.decoded.is_empty() {
            return Ok(());
        }
        let released = self.strings.push_bytes(&self.decoded, &mut |_| *findings += 1)?;
        self.decoded.clear();
        escape_into(out, &released);
        Ok(())
    }

    fn end_number(&mut self, out: &mut Vec<u8>, findings: &mut usize) -> Result<(), BodyError> {
        if !valid_number(&self.number) {
            return Err(BodyError::InvalidJson { offset: self.offset, reason: "an invalid number" });
        }
        match self.masker.mask_counting(&self.number, &mut |_| *findings += 1) {
            std::borrow::Cow::Borrowed(_) => out.extend_from_slice(self.number.as_bytes()),
            std::borrow::Cow::Owned(masked) => {
                out.push(b'"');
                escape_into(out, masked.as_bytes());
                out.push(b'"');
            }
        }
        Ok(())
    }
}

/// RFC 8259's number: `-? (0 | [1-9][0-9]*) (\.[0-9]+)? ([eE][+-]?[0-9]+)?`.
fn valid_number(number: &str) -> bool {
    let bytes = number.as_bytes();
    let mut at = usize::from(bytes.first() == Some(&b'-'));
    let digits = |at: &mut usize| {
        let start = *at;
        while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
            *at += 1;
        }
        *at - start
    };
    let start = at;
    match digits(&mut at) {
        0 => return false,
        count if count > 1 && bytes[start] == b'0' => return false,
        _ => {}
    }
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        if digits(&mut at) == 0 {
            return false;
        }
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        if digits(&mut at) == 0 {
            return false;
        }
    }
    at == bytes.len()
}

/// Appends `text` (UTF-8) as the inside of a JSON string.
fn escape_into(out: &mut Vec<u8>, text: &[u8]) {
    for &byte in text {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            0..=0x1F => out.extend_from_slice(format!("\\u{byte:04x}").as_bytes()),
            _ => out.push(byte),
        }
    }
}

#[cfg(test)]
mod tests;
