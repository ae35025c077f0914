//! Audit events and how they are chained: the canonical encoding, the link hash, sealed events, and the records of a
//! JSON Lines export.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AuditError, Checkpoint};

/// The hash before a chain's first event (`h_0`).
pub const GENESIS: [u8; 32] = [0; 32];

/// What every link hash starts with, so an audit hash cannot be mistaken for any other SHA-256.
const LINK_DOMAIN: &[u8] = b"warden-audit-v1\0";

/// One audit event as chained. `at` is kept as the RFC 3339 text written, so re-encoding is stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The writing gateway's chain id.
    pub chain: String,
    /// 1-based, contiguous within a chain.
    pub seq: u64,
    /// RFC 3339 UTC, e.g. "2026-11-21T07:25:00.123456789Z".
    pub at: String,
    /// "chain.start", "session.start", "session.end", "statement", "revocation", …
    pub kind: String,
    pub session: Option<String>,
    pub identity: Option<String>,
    pub connection: Option<String>,
    pub run: Option<String>,
    pub node: Option<String>,
    /// Kind-specific object.
    pub body: Body,
}

impl Event {
    /// The canonical encoding hashed into the chain: compact JSON, the fields above in this order with `None` as
    /// null, object keys of `body` sorted recursively (independent of serde_json's preserve_order feature),
    /// numbers as serde_json writes them.
    ///
    /// Keys sort by their UTF-8 bytes; strings are escaped as serde_json escapes them (only `"`, `\` and control
    /// characters; everything else as UTF-8). Floats are written shortest-round-trip, and this crate turns on
    /// serde_json's `float_roundtrip`, so an event read back from its JSON re-encodes to the same bytes.
    pub fn canonical(&self) -> Vec<u8> {
        let mut object = ObjectWriter::new();
        self.members(&mut object);
        object.finish()
    }

    /// The members of [`Event::canonical`], in its order.
    fn members(&self, object: &mut ObjectWriter) {
        object.string("chain", &self.chain);
        object.number("seq", self.seq);
        object.string("at", &self.at);
        object.string("kind", &self.kind);
        object.optional_string("session", self.session.as_deref());
        object.optional_string("identity", self.identity.as_deref());
        object.optional_string("connection", self.connection.as_deref());
        object.optional_string("run", self.run.as_deref());
        object.optional_string("node", self.node.as_deref());
        object.raw("body", self.body.canonical());
    }
}

/// An event's body: a JSON value, kept as its canonical encoding (compact, object keys sorted by their bytes) and
/// parsed on first look. The writer builds a body straight into its canonical text ([`BodyWriter`]), so sealing,
/// storing and exporting an event never build a `serde_json::Value` tree; readers see the value through `Deref`.
/// Changing the value through `DerefMut` drops the stale encoding, which is re-made on the next look.
pub struct Body {
    /// Canonical JSON text; at least one of `text` and `value` is set.
    text: OnceLock<String>,
    value: OnceLock<Value>,
}

impl Body {
    /// The canonical encoding, as hashed into the chain and stored.
    pub fn canonical(&self) -> &str {
        self.text
            .get_or_init(|| {
                let mut out = Vec::new();
                write_value(&mut out, self.value.get().unwrap_or(&Value::Null));
                utf8(out)
            })
            .as_str()
    }

    /// The body of `value`, encoded now (without keeping a copy of the value).
    pub fn encode(value: &Value) -> Body {
        let mut out = Vec::new();
        write_value(&mut out, value);
        Body::from_canonical(utf8(out))
    }

    fn from_canonical(text: String) -> Body {
        Body { text: OnceLock::from(text), value: OnceLock::new() }
    }
}

impl From<Value> for Body {
    fn from(value: Value) -> Body {
        Body { text: OnceLock::new(), value: OnceLock::from(value) }
    }
}

impl std::ops::Deref for Body {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.value.get_or_init(|| parse(self.text.get()))
    }
}

impl std::ops::DerefMut for Body {
    fn deref_mut(&mut self) -> &mut Value {
        let value = self.value.take().unwrap_or_else(|| parse(self.text.get()));
        self.text = OnceLock::new();
        self.value = OnceLock::from(value);
        self.value.get_mut().expect("set on the line above")
    }
}

/// A body's value from its canonical text (JSON by construction; should it ever not be, the reader sees a string).
fn parse(text: Option<&String>) -> Value {
    let text = text.map_or("null", String::as_str);
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

impl Clone for Body {
    fn clone(&self) -> Body {
        Body { text: self.text.clone(), value: self.value.clone() }
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        self.canonical() == other.canonical()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.canonical())
    }
}

/// The canonical JSON text.
impl std::fmt::Display for Body {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.canonical())
    }
}

impl Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Value::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Body, D::Error> {
        Value::deserialize(deserializer).map(Body::from)
    }
}

/// Builds a JSON object body straight into its canonical text. Members must be added with their keys in byte order
/// (as [`Event::canonical`] sorts them); a writer given them out of order still yields the canonical text, through
/// a slower parse and re-encoding.
pub struct BodyWriter {
    object: ObjectWriter,
    last: Option<&'static str>,
    sorted: bool,
}

impl Default for BodyWriter {
    fn default() -> BodyWriter {
        BodyWriter::new()
    }
}

impl BodyWriter {
    pub fn new() -> BodyWriter {
        BodyWriter { object: ObjectWriter::new(), last: None, sorted: true }
    }

    pub fn string(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.order(key);
        self.object.string(key, value);
        self
    }

    pub fn optional_string(&mut self, key: &'static str, value: Option<&str>) -> &mut Self {
        self.order(key);
        self.object.optional_string(key, value);
        self
    }

    pub fn strings(&mut self, key: &'static str, values: &[String]) -> &mut Self {
        self.order(key);
        self.object.key(key);
        let out = &mut self.object.out;
        out.push(b'[');
        for (index, value) in values.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            write_string(out, value);
        }
        out.push(b']');
        self
    }

    pub fn number(&mut self, key: &'static str, value: u64) -> &mut Self {
        self.order(key);
        self.object.number(key, value);
        self
    }

    pub fn optional_number(&mut self, key: &'static str, value: Option<u64>) -> &mut Self {
        match value {
            Some(value) => self.number(key, value),
            None => self.null(key),
        }
    }

    pub fn bool(&mut self, key: &'static str, value: bool) -> &mut Self {
        self.order(key);
        self.object.raw(key, if value { "true" } else { "false" });
        self
    }

    /// Any JSON value, written canonically (`None` as null).
    pub fn value(&mut self, key: &'static str, value: Option<&Value>) -> &mut Self {
        self.order(key);
        self.object.key(key);
        write_value(&mut self.object.out, value.unwrap_or(&Value::Null));
        self
    }

    /// An array of strings, or null.
    pub fn optional_strings(&mut self, key: &'static str, values: Option<&[String]>) -> &mut Self {
        match values {
            Some(values) => self.strings(key, values),
            None => self.null(key),
        }
    }

    /// An array of arrays of strings and nulls (rows of text values, `None` as null).
    pub fn string_rows(&mut self, key: &'static str, rows: &[Vec<Option<String>>]) -> &mut Self {
        self.order(key);
        self.object.key(key);
        let out = &mut self.object.out;
        out.push(b'[');
        for (index, row) in rows.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.push(b'[');
            for (index, value) in row.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                match value {
                    Some(value) => write_string(out, value),
                    None => out.extend_from_slice(b"null"),
                }
            }
            out.push(b']');
        }
        out.push(b']');
        self
    }

    /// Another body, embedded as it is (`None` as null).
    pub fn body(&mut self, key: &'static str, body: Option<&Body>) -> &mut Self {
        self.order(key);
        self.object.raw(key, body.map_or("null", Body::canonical));
        self
    }

    /// An array of objects, one per item, each one's members added by `build` (in byte order too).
    pub fn objects<T>(
        &mut self,
        key: &'static str,
        items: impl IntoIterator<Item = T>,
        mut build: impl FnMut(&mut BodyWriter, T),
    ) -> &mut Self {
        self.order(key);
        self.object.key(key);
        self.object.out.push(b'[');
        for (index, item) in items.into_iter().enumerate() {
            if index > 0 {
                self.object.out.push(b',');
            }
            self.nested(|inner| build(inner, item));
        }
        self.object.out.push(b']');
        self
    }

    /// A nested object, its members added by `build` (in byte order too).
    pub fn object(&mut self, key: &'static str, build: impl FnOnce(&mut BodyWriter)) -> &mut Self {
        self.order(key);
        self.object.key(key);
        self.nested(build);
        self
    }

    /// Writes an object in place, its members added by `build`.
    fn nested(&mut self, build: impl FnOnce(&mut BodyWriter)) {
        let mut inner = BodyWriter {
            object: ObjectWriter { out: std::mem::take(&mut self.object.out), empty: true },
            last: None,
            sorted: true,
        };
        inner.object.out.push(b'{');
        build(&mut inner);
        inner.object.out.push(b'}');
        self.object.out = inner.object.out;
        self.sorted &= inner.sorted;
    }

    pub fn finish(self) -> Body {
        let sorted = self.sorted;
        let text = utf8(self.object.finish());
        if sorted {
            return Body::from_canonical(text);
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(value) => Body::from(value),
            Err(_) => Body::from(Value::String(text)),
        }
    }

    fn null(&mut self, key: &'static str) -> &mut Self {
        self.order(key);
        self.object.raw(key, "null");
        self
    }

    /// Notes `key` as the next member's: a key not after the one before it makes [`BodyWriter::finish`] re-encode.
    fn order(&mut self, key: &'static str) {
        if self.last.is_some_and(|last| last.as_bytes() >= key.as_bytes()) {
            self.sorted = false;
        }
        self.last = Some(key);
    }
}

/// JSON text this module wrote (always UTF-8: keys and strings are `str`, the rest ASCII) as a `String`.
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

/// SHA-256 over b"warden-audit-v1\0", `prev`, and `event.canonical()`.
/// AWS-LC's SHA-256 (assembly, with the CPU's SHA extensions where it has them): every statement is hashed into the
/// chain on the writer, so this is on the gateway's busiest background path.
pub fn link(prev: &[u8; 32], event: &Event) -> [u8; 32] {
    let mut hasher = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    hasher.update(LINK_DOMAIN);
    hasher.update(prev);
    hasher.update(&event.canonical());
    hasher.finish().as_ref().try_into().expect("a SHA-256 digest is 32 bytes")
}

/// An event as stored and exported: the event plus its chain fields, hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sealed {
    #[serde(flatten)]
    pub event: Event,
    /// `h_{seq-1}`, lowercase hex.
    pub prev: String,
    /// `h_seq` = [`link`]`(prev, event)`, lowercase hex.
    pub hash: String,
}

impl Sealed {
    /// Chains `event` after the event whose hash is `prev` ([`GENESIS`] for a chain's first event).
    pub fn seal(prev: &[u8; 32], event: Event) -> Sealed {
        Sealed::chain(prev, event).0
    }

    /// [`Sealed::seal`], and the event's hash as bytes, the next event's `prev`.
    pub fn chain(prev: &[u8; 32], event: Event) -> (Sealed, [u8; 32]) {
        let hash = link(prev, &event);
        (Sealed { event, prev: hex32(prev), hash: hex32(&hash) }, hash)
    }
}

/// 32 bytes as 64 lowercase hex digits (`hex::encode` goes character by character through an iterator: twice per
/// event on the writer).
fn hex32(bytes: &[u8; 32]) -> String {
    let mut digits = [0u8; 64];
    hex::encode_to_slice(bytes, &mut digits).expect("64 digits for 32 bytes");
    String::from_utf8(digits.to_vec()).expect("hex digits are ASCII")
}

/// One line of a JSON Lines export: {"type":"event", …Sealed fields…} or {"type":"checkpoint", …}.
// Most records are events; boxing them to shrink the rarer checkpoint's variant would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    Event(Sealed),
    Checkpoint(Checkpoint),
}

impl Record {
    /// The record as one line of JSON Lines, without the newline.
    pub fn to_line(&self) -> String {
        match self {
            // Written by hand to copy the body's canonical text instead of serializing its value.
            Record::Event(sealed) => {
                let event = &sealed.event;
                let mut object = ObjectWriter::new();
                object.string("type", "event");
                event.members(&mut object);
                object.string("prev", &sealed.prev);
                object.string("hash", &sealed.hash);
                utf8(object.finish())
            }
            Record::Checkpoint(_) => serde_json::to_string(self).expect("a checkpoint holds only strings and integers"),
        }
    }
}

/// Reads a JSON Lines export (blank lines allowed) into its events and checkpoints, in file order, ready for
/// [`crate::verify`].
pub fn parse_lines(text: &str) -> Result<(Vec<Sealed>, Vec<Checkpoint>), AuditError> {
    let mut events = Vec::new();
    let mut checkpoints = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(Record::Event(sealed)) => events.push(sealed),
            Ok(Record::Checkpoint(checkpoint)) => checkpoints.push(checkpoint),
            Err(error) => return Err(AuditError::Line { line: index + 1, reason: error.to_string() }),
        }
    }
    Ok((events, checkpoints))
}

/// Writes one compact JSON object, members in the order they are added.
pub(crate) struct ObjectWriter {
    out: Vec<u8>,
    empty: bool,
}

impl ObjectWriter {
    pub(crate) fn new() -> ObjectWriter {
        ObjectWriter { out: vec![b'{'], empty: true }
    }

    pub(crate) fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        write_string(&mut self.out, value);
    }

    pub(crate) fn optional_string(&mut self, key: &str, value: Option<&str>) {
        self.key(key);
        match value {
            Some(value) => write_string(&mut self.out, value),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    pub(crate) fn number(&mut self, key: &str, value: u64) {
        self.key(key);
        serde_json::to_writer(&mut self.out, &value).expect("writing a JSON number into a Vec cannot fail");
    }

    /// A member whose value is JSON text already.
    pub(crate) fn raw(&mut self, key: &str, json: &str) {
        self.key(key);
        self.out.extend_from_slice(json.as_bytes());
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out.push(b'}');
        self.out
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_string(&mut self.out, key);
        self.out.push(b':');
    }
}

/// Compact JSON with every object's keys sorted by their bytes, whatever order the map keeps them in.
fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            serde_json::to_writer(&mut *out, number).expect("writing a JSON number into a Vec cannot fail")
        }
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_unstable_by(|left, right| left.0.as_bytes().cmp(right.0.as_bytes()));
            out.push(b'{');
            for (index, (key, member)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write_value(out, member);
            }
            out.push(b'}');
        }
    }
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing a JSON string into a Vec cannot fail");
}

#[cfg(test)]
mod tests;
