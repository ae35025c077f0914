//! Frontend (client → server) messages: the ones warden sends upstream, and accessors for the ones it reads.

use super::startup::{CANCEL_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE};
use super::{build, put_cstr, BodyReader, CodecError};

pub const QUERY: u8 = b'Q';
pub const PARSE: u8 = b'P';
pub const BIND: u8 = b'B';
pub const EXECUTE: u8 = b'E';
pub const SYNC: u8 = b'S';
pub const CLOSE: u8 = b'C';
pub const DESCRIBE: u8 = b'D';
pub const FLUSH: u8 = b'H';
pub const FUNCTION_CALL: u8 = b'F';
pub const TERMINATE: u8 = b'X';
pub const PASSWORD: u8 = b'p';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const COPY_FAIL: u8 = b'f';

pub fn ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8u32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    out
}

pub fn cancel_request(process_id: i32, secret_key: i32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&16u32.to_be_bytes());
    out[4..8].copy_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    out[8..12].copy_from_slice(&process_id.to_be_bytes());
    out[12..].copy_from_slice(&secret_key.to_be_bytes());
    out
}

/// A protocol 3.0 StartupMessage with `parameters` in order.
pub fn startup_message<'a>(parameters: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    out.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (key, value) in parameters {
        put_cstr(&mut out, key.as_bytes());
        put_cstr(&mut out, value.as_bytes());
    }
    out.push(0);
    let length = out.len() as u32;
    out[..4].copy_from_slice(&length.to_be_bytes());
    out
}

pub fn password_message(password: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(password.len() + 6);
    build(&mut out, PASSWORD, |body| put_cstr(body, password));
    out
}

pub fn sasl_initial_response(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    build(&mut out, PASSWORD, |body| {
        put_cstr(body, mechanism.as_bytes());
        body.extend_from_slice(&(data.len() as i32).to_be_bytes());
        body.extend_from_slice(data);
    });
    out
}

pub fn sasl_response(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    build(&mut out, PASSWORD, |body| body.extend_from_slice(data));
    out
}

pub fn terminate() -> [u8; 5] {
    [TERMINATE, 0, 0, 0, 4]
}

/// The password in a PasswordMessage (without its terminator).
pub fn password(message: &[u8]) -> Result<&[u8], CodecError> {
    BodyReader::new(message).cstr()
}

/// The SQL text of a Query message.
pub fn query_text(message: &[u8]) -> Result<&str, CodecError> {
    BodyReader::new(message).cstr_utf8()
}

/// A Parse message's statement name and SQL text.
pub fn parse_statement(message: &[u8]) -> Result<(&str, &str), CodecError> {
    let mut reader = BodyReader::new(message);
    let name = reader.cstr_utf8()?;
    let query = reader.cstr_utf8()?;
    Ok((name, query))
}

/// A Bind message's portal and statement names.
pub fn bind_names(message: &[u8]) -> Result<(&str, &str), CodecError> {
    let mut reader = BodyReader::new(message);
    let portal = reader.cstr_utf8()?;
    let statement = reader.cstr_utf8()?;
    Ok((portal, statement))
}

/// A Bind message's parameters: their format codes (as sent: none, one for all, or one each) and values (`None`
/// is NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindParameters {
    pub formats: Vec<i16>,
    pub values: Vec<Option<Vec<u8>>>,
}

/// The parameters of a Bind message. Counts are bounded by the message's own length.
pub fn bind_parameters(message: &[u8]) -> Result<BindParameters, CodecError> {
    let mut reader = BodyReader::new(message);
    reader.cstr()?;
    reader.cstr()?;
    let count =
        |value: i16| usize::try_from(value).map_err(|_| CodecError::Malformed { tag: 'B', reason: "negative count" });
    let format_count = count(reader.i16()?)?;
    let mut formats = Vec::with_capacity(format_count.min(message.len() / 2));
    for _ in 0..format_count {
        formats.push(reader.i16()?);
    }
    let value_count = count(reader.i16()?)?;
    let mut values = Vec::with_capacity(value_count.min(message.len() / 4));
    for _ in 0..value_count {
        let length = reader.i32()?;
        values.push(if length < 0 { None } else { Some(reader.take(length as usize)?.to_vec()) });
    }
    Ok(BindParameters { formats, values })
}

/// An Execute message's portal name.
pub fn execute_portal(message: &[u8]) -> Result<&str, CodecError> {
    BodyReader::new(message).cstr_utf8()
}

/// A Close message's target: `b'S'` for a statement or `b'P'` for a portal, and its name.
pub fn close_target(message: &[u8]) -> Result<(u8, &str), CodecError> {
    let mut reader = BodyReader::new(message);
    let kind = reader.u8()?;
    Ok((kind, reader.cstr_utf8()?))
}

/// A Query message with `text`.
pub fn query(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 6);
    out.push(QUERY);
    out.extend_from_slice(&((text.len() + 5) as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    out
}

/// A Parse message for statement `name` with `text` and no parameter types.
/// A Describe of the portal `name`.
pub fn describe_portal(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 7);
    out.push(DESCRIBE);
    out.extend_from_slice(&((name.len() + 6) as u32).to_be_bytes());
    out.push(b'P');
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out
}

pub fn parse(name: &str, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + text.len() + 9);
    out.push(PARSE);
    out.extend_from_slice(&((name.len() + text.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    out.extend_from_slice(&0u16.to_be_bytes());
    out
}
