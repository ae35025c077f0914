//! The untagged packets a client opens with: SSLRequest, GSSENCRequest, CancelRequest, StartupMessage.

use super::{BodyReader, CodecError, MAX_STARTUP_PACKET};

pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
pub const PROTOCOL_3_0: i32 = 196_608;

/// One startup-phase packet, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    CancelRequest { process_id: i32, secret_key: i32 },
    Startup(StartupMessage),
}

#[derive(Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub major: u16,
    pub minor: u16,
    /// Parameters in the order the client sent them.
    pub parameters: Vec<(String, String)>,
}

impl StartupMessage {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.parameters.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }
}

impl std::fmt::Debug for StartupMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartupMessage")
            .field("version", &format_args!("{}.{}", self.major, self.minor))
            .field("parameters", &self.parameters)
            .finish()
    }
}

/// Validates the length word of a startup packet (which counts itself) before anything is allocated.
pub fn packet_length(length_word: [u8; 4]) -> Result<usize, CodecError> {
    let length = u32::from_be_bytes(length_word);
    if !(8..=MAX_STARTUP_PACKET as u32).contains(&length) {
        return Err(CodecError::BadLength { tag: ' ', length });
    }
    Ok(length as usize)
}

/// Decodes a startup packet's body (everything after the length word).
pub fn parse(body: &[u8]) -> Result<StartupPacket, CodecError> {
    let mut reader = BodyReader::over(b' ', body);
    let code = reader.i32()?;
    match code {
        SSL_REQUEST_CODE if reader.is_empty() => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE if reader.is_empty() => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let process_id = reader.i32()?;
            let secret_key = reader.i32()?;
            if !reader.is_empty() {
                return Err(malformed("cancel request has trailing bytes"));
            }
            Ok(StartupPacket::CancelRequest { process_id, secret_key })
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => Err(malformed("request has trailing bytes")),
        version => {
            let major = (version >> 16) as u16;
            let minor = (version & 0xffff) as u16;
            let mut parameters = Vec::new();
            loop {
                let key = reader.cstr_utf8()?;
                if key.is_empty() {
                    break;
                }
                let value = reader.cstr_utf8()?;
                parameters.push((key.to_string(), value.to_string()));
            }
            if !reader.is_empty() {
                return Err(malformed("startup packet has bytes after its terminator"));
            }
            Ok(StartupPacket::Startup(StartupMessage { major, minor, parameters }))
        }
    }
}

fn malformed(reason: &'static str) -> CodecError {
    CodecError::Malformed { tag: ' ', reason }
}
