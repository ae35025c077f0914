//! Backend (server → client) messages: the ones warden builds for its clients, and accessors for the
//! upstream's messages that a decision or a record needs.

use super::{build, put_cstr, BodyReader, CodecError};

pub const AUTHENTICATION: u8 = b'R';
pub const PARAMETER_STATUS: u8 = b'S';
pub const BACKEND_KEY_DATA: u8 = b'K';
pub const READY_FOR_QUERY: u8 = b'Z';
pub const ERROR_RESPONSE: u8 = b'E';
pub const NOTICE_RESPONSE: u8 = b'N';
pub const COMMAND_COMPLETE: u8 = b'C';
pub const PARSE_COMPLETE: u8 = b'1';
pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
pub const PORTAL_SUSPENDED: u8 = b's';
pub const DATA_ROW: u8 = b'D';
pub const ROW_DESCRIPTION: u8 = b'T';
pub const NO_DATA: u8 = b'n';
pub const PARAMETER_DESCRIPTION: u8 = b't';
pub const COPY_OUT_RESPONSE: u8 = b'H';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const NOTIFICATION_RESPONSE: u8 = b'A';
pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';

pub fn authentication_ok() -> [u8; 9] {
    [AUTHENTICATION, 0, 0, 0, 8, 0, 0, 0, 0]
}

pub fn authentication_cleartext_password() -> [u8; 9] {
    [AUTHENTICATION, 0, 0, 0, 8, 0, 0, 0, 3]
}

pub fn parameter_status(out: &mut Vec<u8>, name: &str, value: &str) {
    build(out, PARAMETER_STATUS, |body| {
        put_cstr(body, name.as_bytes());
        put_cstr(body, value.as_bytes());
    });
}

pub fn backend_key_data(out: &mut Vec<u8>, process_id: i32, secret_key: i32) {
    build(out, BACKEND_KEY_DATA, |body| {
        body.extend_from_slice(&process_id.to_be_bytes());
        body.extend_from_slice(&secret_key.to_be_bytes());
    });
}

pub fn ready_for_query(out: &mut Vec<u8>, status: u8) {
    build(out, READY_FOR_QUERY, |body| body.push(status));
}

/// NegotiateProtocolVersion: the newest 3.x minor version warden speaks, and the `_pq_.` options it ignored.
pub fn negotiate_protocol_version(out: &mut Vec<u8>, minor: i32, unrecognized: &[&str]) {
    build(out, NEGOTIATE_PROTOCOL_VERSION, |body| {
        body.extend_from_slice(&minor.to_be_bytes());
        body.extend_from_slice(&(unrecognized.len() as i32).to_be_bytes());
        for option in unrecognized {
            put_cstr(body, option.as_bytes());
        }
    });
}

/// Severity of an error or notice, as PostgreSQL spells it in the `S`/`V` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
        }
    }
}

/// An ErrorResponse (or NoticeResponse, for `Severity::Notice`) in PostgreSQL's field layout.
pub fn error_response(out: &mut Vec<u8>, severity: Severity, code: &str, message: &str, detail: Option<&str>) {
    let tag = if severity == Severity::Notice { NOTICE_RESPONSE } else { ERROR_RESPONSE };
    build(out, tag, |body| {
        for field in [b'S', b'V'] {
            body.push(field);
            put_cstr(body, severity.as_str().as_bytes());
        }
        body.push(b'C');
        put_cstr(body, code.as_bytes());
        body.push(b'M');
        put_cstr(body, message.as_bytes());
        if let Some(detail) = detail {
            body.push(b'D');
            put_cstr(body, detail.as_bytes());
        }
        body.push(0);
    });
}

/// The fields of an ErrorResponse or NoticeResponse that warden reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl ErrorFields {
    pub fn is_fatal(&self) -> bool {
        self.severity == "FATAL" || self.severity == "PANIC"
    }
}

impl std::fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)
    }
}

pub fn error_fields(message: &[u8]) -> Result<ErrorFields, CodecError> {
    let mut reader = BodyReader::new(message);
    let mut fields = ErrorFields::default();
    loop {
        let kind = reader.u8()?;
        if kind == 0 {
            break;
        }
        let value = String::from_utf8_lossy(reader.cstr()?);
        match kind {
            b'V' => fields.severity = value.into_owned(),
            b'S' if fields.severity.is_empty() => fields.severity = value.into_owned(),
            b'C' => fields.code = value.into_owned(),
            b'M' => fields.message = value.into_owned(),
            _ => {}
        }
    }
    Ok(fields)
}

/// The row count at the end of a CommandComplete tag (`SELECT 5`, `INSERT 0 5`, `COPY 10`), if it has one.
pub fn command_complete_rows(message: &[u8]) -> Option<u64> {
    let tag = BodyReader::new(message).cstr().ok()?;
    let last = tag.rsplit(|&byte| byte == b' ').next()?;
    if last.is_empty() || last.len() == tag.len() {
        return None;
    }
    std::str::from_utf8(last).ok()?.parse().ok()
}

/// An Authentication request from the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication<'a> {
    Ok,
    CleartextPassword,
    Md5Password { salt: [u8; 4] },
    Sasl { mechanisms: Vec<&'a str> },
    SaslContinue { data: &'a [u8] },
    SaslFinal { data: &'a [u8] },
    Other(i32),
}

pub fn authentication(message: &[u8]) -> Result<Authentication<'_>, CodecError> {
    let mut reader = BodyReader::new(message);
    Ok(match reader.i32()? {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => {
            let salt = reader.take(4)?;
            Authentication::Md5Password { salt: [salt[0], salt[1], salt[2], salt[3]] }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let mechanism = reader.cstr_utf8()?;
                if mechanism.is_empty() {
                    break;
                }
                mechanisms.push(mechanism);
            }
            Authentication::Sasl { mechanisms }
        }
        11 => Authentication::SaslContinue { data: reader.rest() },
        12 => Authentication::SaslFinal { data: reader.rest() },
        other => Authentication::Other(other),
    })
}

/// A ParameterStatus's name and value.
pub fn parameter(message: &[u8]) -> Result<(&str, &str), CodecError> {
    let mut reader = BodyReader::new(message);
    Ok((reader.cstr_utf8()?, reader.cstr_utf8()?))
}

/// A BackendKeyData's process id and secret key.
pub fn backend_key(message: &[u8]) -> Result<(i32, i32), CodecError> {
    let mut reader = BodyReader::new(message);
    Ok((reader.i32()?, reader.i32()?))
}

/// A ParameterStatus message's name and value.
pub fn parameter_status_fields(message: &[u8]) -> Result<(&str, &str), CodecError> {
    let mut reader = BodyReader::new(message);
    let name = reader.cstr_utf8()?;
    let value = reader.cstr_utf8()?;
    Ok((name, value))
}
