//! The upstream leg: open a session to the real PostgreSQL with the credential warden holds.
//!
//! Connect (TCP or Unix socket), negotiate TLS per the connection's `tls.mode`, send the StartupMessage,
//! answer the server's authentication (SCRAM-SHA-256, md5, or cleartext), and collect what the server says
//! before its first ReadyForQuery. Errors never contain the password.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use warden_config::{PostgresTarget, UpstreamAddress, UpstreamTlsMode};

use crate::codec::backend::{self, Authentication, ErrorFields};
use crate::codec::{self, frontend};
use crate::stream::Stream;
use crate::tls::UpstreamTlsConnector;

/// Largest message accepted from an upstream during startup.
const MAX_STARTUP_MESSAGE: usize = 1 << 20;

/// A connection target, compiled once per config version.
#[derive(Debug)]
pub struct UpstreamTarget {
    /// The connection's name.
    pub name: String,
    pub postgres: PostgresTarget,
    pub tls: UpstreamTlsConnector,
}

/// An authenticated upstream session, ready for queries.
pub struct UpstreamSession {
    pub stream: Stream,
    /// ParameterStatus messages, in order, as raw messages ready to relay.
    pub parameter_messages: Vec<u8>,
    /// NoticeResponse messages sent during startup, raw.
    pub notice_messages: Vec<u8>,
    pub backend_key: Option<(i32, i32)>,
    pub transaction_status: u8,
    /// Bytes the server sent after its first ReadyForQuery in the same read (e.g. a notification); the
    /// relay forwards them first.
    pub early_bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("the server refused TLS, and tls.mode = \"{mode}\" requires it")]
    TlsRefused { mode: &'static str },
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("the server refused the session: {0}")]
    Refused(ErrorFields),
    #[error("the server asks for {0} authentication, which warden does not support")]
    UnsupportedAuthentication(String),
    #[error("the server asks for a password, but the connection has none configured")]
    NoPassword,
    #[error("SCRAM authentication failed: {0}")]
    Scram(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the server closed the connection during startup")]
    Closed,
    #[error("connection lost: {0}")]
    Io(String),
}

impl From<io::Error> for UpstreamError {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            UpstreamError::Closed
        } else {
            UpstreamError::Io(error.to_string())
        }
    }
}

impl From<codec::CodecError> for UpstreamError {
    fn from(error: codec::CodecError) -> Self {
        UpstreamError::Protocol(error.to_string())
    }
}

fn mode_name(mode: UpstreamTlsMode) -> &'static str {
    match mode {
        UpstreamTlsMode::Disable => "disable",
        UpstreamTlsMode::Prefer => "prefer",
        UpstreamTlsMode::Require => "require",
        UpstreamTlsMode::VerifyCa => "verify-ca",
        UpstreamTlsMode::VerifyFull => "verify-full",
    }
}

/// Opens the transport (TLS negotiated per the mode), without any PostgreSQL message yet.
pub async fn open_transport(target: &UpstreamTarget) -> Result<Stream, UpstreamError> {
    let connection = &target.postgres;
    let (host, port) = match &connection.address {
        UpstreamAddress::Unix(path) => {
            let stream = UnixStream::connect(path).await.map_err(|error| UpstreamError::Unreachable {
                address: path.display().to_string(),
                reason: error.to_string(),
            })?;
            return Ok(Stream::Unix(stream));
        }
        UpstreamAddress::Tcp { host, port } => (host.as_str(), *port),
    };
    let mut tcp = TcpStream::connect((host, port)).await.map_err(|error| UpstreamError::Unreachable {
        address: connection.address.to_string(),
        reason: error.to_string(),
    })?;
    tcp.set_nodelay(true)?;
    let Some(connector) = target.tls.connector() else {
        return Ok(Stream::Tcp(tcp));
    };
    tcp.write_all(&frontend::ssl_request()).await?;
    let answer = tcp.read_u8().await?;
    match answer {
        b'S' => {}
        b'N' if target.tls.mode == UpstreamTlsMode::Prefer => return Ok(Stream::Tcp(tcp)),
        b'N' => return Err(UpstreamError::TlsRefused { mode: mode_name(target.tls.mode) }),
        other => return Err(UpstreamError::Protocol(format!("unexpected answer {other:#04x} to SSLRequest"))),
    }
    let server_name = target
        .tls
        .server_name(host)
        .map_err(|_| UpstreamError::Tls(format!("\"{host}\" is not a valid TLS server name")))?;
    let tls = connector.connect(server_name, tcp).await.map_err(|error| UpstreamError::Tls(error.to_string()))?;
    Ok(Stream::ClientTls(Box::new(tls)))
}

/// Opens and authenticates an upstream session, forwarding the client's `parameters` (user and database
/// are the connection's own).
pub async fn connect(
    target: &UpstreamTarget,
    parameters: &[(String, String)],
) -> Result<UpstreamSession, UpstreamError> {
    let connection = &target.postgres;
    let mut stream = open_transport(target).await?;
    let mut startup: Vec<(&str, &str)> = vec![("user", &connection.user), ("database", &connection.database)];
    startup.extend(parameters.iter().map(|(key, value)| (key.as_str(), value.as_str())));
    stream.write_all(&frontend::startup_message(startup)).await?;
    // One buffer for the whole startup: a read may carry the end of authentication and what follows it.
    let mut buffer = BytesMut::new();
    authenticate(&mut stream, connection, &mut buffer).await?;

    let mut session = UpstreamSession {
        stream,
        parameter_messages: Vec::new(),
        notice_messages: Vec::new(),
        backend_key: None,
        transaction_status: b'I',
        early_bytes: Vec::new(),
    };
    loop {
        let message = read_message(&mut session.stream, &mut buffer).await?;
        match message[0] {
            backend::PARAMETER_STATUS => session.parameter_messages.extend_from_slice(&message),
            backend::BACKEND_KEY_DATA => session.backend_key = Some(backend::backend_key(&message)?),
            backend::NOTICE_RESPONSE => session.notice_messages.extend_from_slice(&message),
            backend::ERROR_RESPONSE => return Err(UpstreamError::Refused(backend::error_fields(&message)?)),
            backend::READY_FOR_QUERY => {
                session.transaction_status = *message.get(codec::HEADER_LEN).unwrap_or(&b'I');
                session.early_bytes = buffer.to_vec();
                return Ok(session);
            }
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected message '{}' before ReadyForQuery",
                    other as char
                )))
            }
        }
    }
}

async fn authenticate(
    stream: &mut Stream,
    connection: &PostgresTarget,
    buffer: &mut BytesMut,
) -> Result<(), UpstreamError> {
    let password =
        || connection.password.as_ref().map(|secret| secret.expose().as_bytes()).ok_or(UpstreamError::NoPassword);
    let mut scram: Option<ScramSha256> = None;
    loop {
        let message = read_message(stream, buffer).await?;
        match message[0] {
            backend::AUTHENTICATION => {}
            backend::ERROR_RESPONSE => return Err(UpstreamError::Refused(backend::error_fields(&message)?)),
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected message '{}' during authentication",
                    other as char
                )))
            }
        }
        match backend::authentication(&message)? {
            Authentication::Ok => return Ok(()),
            Authentication::CleartextPassword => {
                stream.write_all(&frontend::password_message(password()?)).await?;
            }
            Authentication::Md5Password { salt } => {
                let hash = md5_hash(connection.user.as_bytes(), password()?, salt);
                stream.write_all(&frontend::password_message(hash.as_bytes())).await?;
            }
            Authentication::Sasl { mechanisms } => {
                if !mechanisms.contains(&SCRAM_SHA_256) {
                    return Err(UpstreamError::UnsupportedAuthentication(mechanisms.join(", ")));
                }
                // 'n': warden does not use channel binding, so offering -PLUS is not a downgrade.
                let state = ScramSha256::new(password()?, ChannelBinding::unsupported());
                stream.write_all(&frontend::sasl_initial_response(SCRAM_SHA_256, state.message())).await?;
                scram = Some(state);
            }
            Authentication::SaslContinue { data } => {
                let state = scram.as_mut().ok_or_else(|| UpstreamError::Protocol("SASLContinue before SASL".into()))?;
                state.update(data).map_err(|error| UpstreamError::Scram(error.to_string()))?;
                stream.write_all(&frontend::sasl_response(state.message())).await?;
            }
            Authentication::SaslFinal { data } => {
                let state = scram.as_mut().ok_or_else(|| UpstreamError::Protocol("SASLFinal before SASL".into()))?;
                state.finish(data).map_err(|error| UpstreamError::Scram(error.to_string()))?;
            }
            Authentication::Other(code) => {
                let name = match code {
                    2 => "Kerberos V5".to_string(),
                    7 | 8 => "GSSAPI".to_string(),
                    9 => "SSPI".to_string(),
                    other => format!("method {other}"),
                };
                return Err(UpstreamError::UnsupportedAuthentication(name));
            }
        }
    }
}

/// Reads one whole tagged message during startup, bounded by [`MAX_STARTUP_MESSAGE`].
pub(crate) async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> Result<BytesMut, UpstreamError> {
    loop {
        if let Some(header) = codec::header(buffer) {
            let (tag, total) = header?;
            if total > MAX_STARTUP_MESSAGE {
                return Err(UpstreamError::Protocol(format!(
                    "message '{}' of {total} bytes during startup",
                    tag as char
                )));
            }
            if buffer.len() >= total {
                return Ok(buffer.split_to(total));
            }
            buffer.reserve(total - buffer.len());
        }
        if stream.read_buf(buffer).await? == 0 {
            return Err(UpstreamError::Closed);
        }
    }
}

/// Sends a CancelRequest for the upstream backend `(process_id, secret_key)` behind `target`.
pub async fn cancel(target: &Arc<UpstreamTarget>, process_id: i32, secret_key: i32) -> Result<(), UpstreamError> {
    let mut stream = open_transport(target).await?;
    stream.write_all(&frontend::cancel_request(process_id, secret_key)).await?;
    stream.flush().await?;
    // The server closes the connection once it has read the request; wait for that so it is delivered.
    let mut sink = [0u8; 16];
    let _ = stream.read(&mut sink).await;
    let _ = stream.shutdown().await;
    Ok(())
}
