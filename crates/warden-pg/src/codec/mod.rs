//! The PostgreSQL wire format (protocol 3.0): framing, and the few messages warden builds or reads.
//!
//! Messages are relayed as raw bytes; only the ones a decision needs are decoded, through the typed
//! accessors in the submodules. Nothing here does IO or allocates from a length field before checking it.

pub mod backend;
pub mod frontend;
pub mod startup;

/// Bytes in a regular message header: a tag byte and a big-endian length that counts itself.
pub const HEADER_LEN: usize = 5;

/// PostgreSQL's own limit on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// A decoding problem; always the client's or the upstream's fault, never retryable on the same stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("invalid message length {length} for message type '{tag}'")]
    BadLength { tag: char, length: u32 },
    #[error("message type '{tag}' of {length} bytes exceeds the limit of {limit} bytes (limits.max_message_bytes)")]
    TooLarge { tag: char, length: usize, limit: usize },
    #[error("malformed '{tag}' message: {reason}")]
    Malformed { tag: char, reason: &'static str },
    #[error("more than {limit} {what}")]
    LimitExceeded { what: &'static str, limit: usize },
}

/// The header at the start of `bytes`, if five bytes are there: the tag and the total message size
/// (tag byte included). Rejects lengths under 4.
pub fn header(bytes: &[u8]) -> Option<Result<(u8, usize), CodecError>> {
    if bytes.len() < HEADER_LEN {
        return None;
    }
    let tag = bytes[0];
    let length = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    if length < 4 {
        return Some(Err(CodecError::BadLength { tag: tag as char, length }));
    }
    Some(Ok((tag, length as usize + 1)))
}

/// Reads NUL-terminated strings and fixed-width integers from a message body.
pub struct BodyReader<'a> {
    tag: u8,
    body: &'a [u8],
}

impl<'a> BodyReader<'a> {
    /// A reader over the body of the whole message `message` (header included).
    pub fn new(message: &'a [u8]) -> Self {
        BodyReader { tag: message[0], body: &message[HEADER_LEN.min(message.len())..] }
    }

    pub fn over(tag: u8, body: &'a [u8]) -> Self {
        BodyReader { tag, body }
    }

    fn malformed(&self, reason: &'static str) -> CodecError {
        CodecError::Malformed { tag: self.tag as char, reason }
    }

    pub fn cstr(&mut self) -> Result<&'a [u8], CodecError> {
        let end =
            self.body.iter().position(|&byte| byte == 0).ok_or_else(|| self.malformed("string not NUL-terminated"))?;
        let (text, rest) = self.body.split_at(end);
        self.body = &rest[1..];
        Ok(text)
    }

    pub fn cstr_utf8(&mut self) -> Result<&'a str, CodecError> {
        let bytes = self.cstr()?;
        std::str::from_utf8(bytes).map_err(|_| self.malformed("string is not valid UTF-8"))
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let (&first, rest) = self.body.split_first().ok_or_else(|| self.malformed("message too short"))?;
        self.body = rest;
        Ok(first)
    }

    pub fn i16(&mut self) -> Result<i16, CodecError> {
        let bytes = self.take(2)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, CodecError> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn take(&mut self, count: usize) -> Result<&'a [u8], CodecError> {
        if self.body.len() < count {
            return Err(self.malformed("message too short"));
        }
        let (taken, rest) = self.body.split_at(count);
        self.body = rest;
        Ok(taken)
    }

    pub fn rest(&self) -> &'a [u8] {
        self.body
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

/// Appends a message with `tag` whose body `write_body` produces, filling in the length.
pub fn build(out: &mut Vec<u8>, tag: u8, write_body: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    let length_at = out.len();
    out.extend_from_slice(&[0; 4]);
    write_body(out);
    let length = (out.len() - length_at) as u32;
    out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
}

pub fn put_cstr(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(text);
    out.push(0);
}

#[cfg(test)]
mod tests;
