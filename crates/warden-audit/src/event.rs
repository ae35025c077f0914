//! Audit events and how they are chained: the canonical encoding, the link hash, sealed events, and the records of a
//! JSON Lines export.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    pub body: serde_json::Value,
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
        object.string("chain", &self.chain);
        object.number("seq", self.seq);
        object.string("at", &self.at);
        object.string("kind", &self.kind);
        object.optional_string("session", self.session.as_deref());
        object.optional_string("identity", self.identity.as_deref());
        object.optional_string("connection", self.connection.as_deref());
        object.optional_string("run", self.run.as_deref());
        object.optional_string("node", self.node.as_deref());
        object.value("body", &self.body);
        object.finish()
    }
}

/// SHA-256 over b"warden-audit-v1\0", `prev`, and `event.canonical()`.
pub fn link(prev: &[u8; 32], event: &Event) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(LINK_DOMAIN);
    hasher.update(prev);
    hasher.update(event.canonical());
    hasher.finalize().into()
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
        let hash = link(prev, &event);
        Sealed { event, prev: hex::encode(prev), hash: hex::encode(hash) }
    }
}

/// One line of a JSON Lines export: {"type":"event", …Sealed fields…} or {"type":"checkpoint", …}.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    Event(Sealed),
    Checkpoint(Checkpoint),
}

impl Record {
    /// The record as one line of JSON Lines, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a record holds only strings, integers and JSON values")
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
        self.out.extend_from_slice(value.to_string().as_bytes());
    }

    pub(crate) fn value(&mut self, key: &str, value: &serde_json::Value) {
        self.key(key);
        write_value(&mut self.out, value);
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
fn write_value(out: &mut Vec<u8>, value: &serde_json::Value) {
    use serde_json::Value;
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
