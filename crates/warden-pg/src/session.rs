//! One client session: startup (TLS, StartupMessage, password), upstream connect, relay, teardown.
//!
//! The pipeline for PostgreSQL, in order: **negotiate** (SSLRequest/GSSENCRequest/CancelRequest) →
//! **authenticate** (the client's password is its credential) → **route** (dbname names the connection) →
//! **connect** (upstream session with warden's credential) → **relay** (statement tracking and recording).

use std::net::SocketAddr;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::hooks::Ending;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::codec::backend::{self, Severity};
use crate::codec::startup::{self, StartupMessage, StartupPacket};
use crate::codec::{self, frontend, CodecError};
use crate::hooks::SessionInfo;
use crate::relay::{relay, RelayContext, RelayEnd};
use crate::stream::Stream;
use crate::upstream::{self, UpstreamError};
use crate::{new_session_id, PgFrontend};

/// A refusal sent to the client before the relay starts: SQLSTATE and message.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub code: &'static str,
    pub message: String,
    /// Who asked for what, as far as startup got: recorded for refusals after the StartupMessage.
    pub about: Option<crate::hooks::RefusedStartup>,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into(), about: None }
    }

    fn about(mut self, user: &str, connection: &str, identity: Option<&str>) -> Self {
        self.about = Some(crate::hooks::RefusedStartup {
            user: user.to_string(),
            connection: connection.to_string(),
            identity: identity.map(str::to_string),
        });
        self
    }
}

impl From<CodecError> for Refusal {
    fn from(error: CodecError) -> Self {
        Refusal::new("08P01", error.to_string())
    }
}

/// What ended the startup phase early.
enum Startup {
    /// The client went away (psql does this after learning a password is needed, then asks for one).
    Gone,
    /// A cancel request was handled; the connection closes without a reply, as PostgreSQL does.
    Cancelled,
    Refused(Stream, Refusal),
    /// A refusal that arrives before any stream exists to write it on.
    Broken(String),
}

pub(crate) async fn run(frontend: Arc<PgFrontend>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let config = frontend.config();
    let timeout = config.limits.startup_timeout;
    let started = match tokio::time::timeout(timeout, startup(&frontend, tcp, peer)).await {
        Ok(result) => result,
        Err(_) => {
            debug!(%peer, "startup timed out");
            return;
        }
    };
    let (mut client, message, identity, upstream, target, (guard, masking), ends_at) = match started {
        Ok(established) => established,
        Err(Startup::Gone | Startup::Cancelled) => return,
        Err(Startup::Broken(reason)) => {
            debug!(%peer, %reason, "startup failed");
            return;
        }
        Err(Startup::Refused(mut stream, refusal)) => {
            info!(%peer, code = refusal.code, reason = %refusal.message, "session refused");
            if let Some(about) = &refusal.about {
                if let Some(queued) = frontend.hooks.session_refused(peer, about, refusal.code, &refusal.message) {
                    if let Err(error) = queued.await {
                        warn!(%peer, %error, "refused session not recorded in the audit log");
                    }
                }
            }
            let mut out = Vec::new();
            backend::error_response(&mut out, Severity::Fatal, refusal.code, &refusal.message, None);
            let _ = stream.write_all(&out).await;
            let _ = stream.flush().await;
            let _ = stream.shutdown().await;
            return;
        }
    };

    let upstream_key = upstream.backend_key;
    let cancel_key = frontend.cancel.register(upstream.backend_key.map(|(process_id, secret_key)| {
        crate::cancel::CancelTarget { upstream: target.clone(), process_id, secret_key }
    }));
    let session = SessionInfo {
        id: new_session_id().into(),
        identity,
        connection: target.name.clone(),
        client_address: peer,
        user_name: message.get("user").unwrap_or_default().to_string(),
        application_name: message.get("application_name").map(str::to_string),
        started_at: OffsetDateTime::now_utc(),
    };

    // Recorded before the client hears of it: a session whose start cannot be recorded does not start.
    if let Some(queued) = frontend.hooks.session_started(&session) {
        if let Err(error) = queued.await {
            warn!(session = %session.id, %error, "session start not recorded: session refused");
            let mut out = Vec::new();
            let message = format!("warden cannot record this session in its audit trail: {error}");
            backend::error_response(&mut out, Severity::Fatal, "58000", &message, None);
            let _ = client.write_all(&out).await;
            let _ = client.flush().await;
            let mut upstream_stream = upstream.stream;
            let _ = upstream_stream.write_all(&frontend::terminate()).await;
            return;
        }
    }
    // Tell the client what a direct connection would: the server's parameters, our key, the status.
    let mut greeting = backend::authentication_ok().to_vec();
    greeting.extend_from_slice(&upstream.parameter_messages);
    backend::backend_key_data(&mut greeting, cancel_key.process_id, cancel_key.secret_key);
    greeting.extend_from_slice(&upstream.notice_messages);
    backend::ready_for_query(&mut greeting, upstream.transaction_status);
    if client.write_all(&greeting).await.is_err() || client.flush().await.is_err() {
        end_session(&frontend, &session, "the client went away before its session began").await;
        return;
    }
    let (live, ending) = frontend.register_live(&session);
    let deadline = ends_at.map(|ends_at| {
        let remaining = (ends_at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
        let at = tokio::time::Instant::now() + std::time::Duration::try_from(remaining).unwrap_or_default();
        let ending = Ending {
            code: "57P01",
            message: format!(
                "terminating connection: the credential of identity \"{}\" expired",
                session.identity.name
            ),
        };
        (at, ending)
    });
    info!(
        session = %session.id,
        identity = %session.identity.name,
        connection = %session.connection,
        %peer,
        "session started"
    );

    // The guard learns the server's settings that change how SQL is lexed (standard_conforming_strings,
    // client_encoding) from the same ParameterStatus messages the client gets.
    let mut guard = guard;
    let mut parameters = upstream.parameter_messages.as_slice();
    while let Some(Ok((_, total))) = codec::header(parameters) {
        let Some(message) = parameters.get(..total) else { break };
        if let Ok((name, value)) = backend::parameter_status_fields(message) {
            guard.server_parameter(name, value);
        }
        parameters = &parameters[total..];
    }
    let (mut client_read, mut client_write) = client.into_split();
    let early_bytes = upstream.early_bytes;
    let (mut upstream_read, mut upstream_write) = upstream.stream.into_split();
    let context = RelayContext {
        session: &session,
        hooks: frontend.hooks.as_ref(),
        max_message_bytes: config.limits.max_message_bytes,
        upstream_early_bytes: &early_bytes,
        stop: frontend.stop_signal(),
        ending,
        deadline,
        guard,
        masking,
        max_row_bytes: config.limits.max_row_bytes,
        canceled: cancel_key.canceled.clone(),
    };
    let end = relay((&mut client_read, &mut client_write), (&mut upstream_read, &mut upstream_write), context).await;
    let farewell = match &end {
        RelayEnd::ClientProtocol(error) => Some(("08P01", error.to_string())),
        RelayEnd::Stopped => Some(("57P01", "terminating connection because warden is shutting down".to_string())),
        RelayEnd::Ended(ending) => Some((ending.code, ending.message.clone())),
        _ => None,
    };
    if let Some((code, message)) = farewell {
        // A backend busy with a query reads neither Terminate nor a closed socket until the query ends: cancel
        // it first, so an ended session stops its work upstream too.
        if let (RelayEnd::Ended(_) | RelayEnd::Stopped, Some((process_id, secret_key))) = (&end, upstream_key) {
            let cancel = upstream::cancel(&target, process_id, secret_key);
            match tokio::time::timeout(config.limits.connect_timeout, cancel).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => warn!(session = %session.id, %error, "could not cancel the upstream query"),
                Err(_) => warn!(session = %session.id, "cancelling the upstream query timed out"),
            }
        }
        let mut out = Vec::new();
        backend::error_response(&mut out, Severity::Fatal, code, &message, None);
        let _ = client_write.write_all(&out).await;
        let _ = client_write.flush().await;
        let _ = upstream_write.write_all(&frontend::terminate()).await;
    }
    let _ = client_write.shutdown().await;
    let _ = upstream_write.shutdown().await;
    drop(cancel_key);
    let reason = end.describe();
    end_session(&frontend, &session, &reason).await;
    // Live until its end is queued, so a shutdown's final flush comes after it.
    drop(live);
    info!(session = %session.id, %reason, "session ended");
}

/// Records a session's end, waiting for room in the record's queue when it is full.
async fn end_session(frontend: &PgFrontend, session: &SessionInfo, reason: &str) {
    if let Some(queued) = frontend.hooks.session_ended(session, reason) {
        if let Err(error) = queued.await {
            warn!(session = %session.id, %error, "session end not recorded");
        }
    }
}

type Established = (
    Stream,
    StartupMessage,
    warden_identity::Identity,
    upstream::UpstreamSession,
    Arc<upstream::UpstreamTarget>,
    (Box<dyn crate::hooks::StatementGuard>, Option<Box<dyn crate::hooks::ResponseMasking>>),
    Option<OffsetDateTime>,
);

async fn startup(frontend: &PgFrontend, tcp: TcpStream, peer: SocketAddr) -> Result<Established, Startup> {
    let config = frontend.config();
    let mut stream = Stream::Tcp(tcp);
    let mut negotiated_tls = false;
    let mut negotiated_gss = false;
    let message = loop {
        let packet = match read_startup_packet(&mut stream).await {
            Ok(Some(packet)) => packet,
            Ok(None) => return Err(Startup::Gone),
            Err(error) => return Err(Startup::Refused(stream, error.into())),
        };
        match packet {
            StartupPacket::SslRequest if !negotiated_tls => {
                negotiated_tls = true;
                let Stream::Tcp(tcp) = stream else {
                    return Err(Startup::Broken("SSLRequest on a stream that is not plain TCP".into()));
                };
                stream = match &config.tls {
                    Some(acceptor) => {
                        let mut tcp = tcp;
                        if tcp.write_all(b"S").await.is_err() {
                            return Err(Startup::Gone);
                        }
                        match acceptor.accept(tcp).await {
                            Ok(tls) => Stream::ServerTls(Box::new(tls)),
                            Err(error) => return Err(Startup::Broken(format!("TLS handshake failed: {error}"))),
                        }
                    }
                    None => {
                        let mut tcp = tcp;
                        if tcp.write_all(b"N").await.is_err() {
                            return Err(Startup::Gone);
                        }
                        Stream::Tcp(tcp)
                    }
                };
            }
            StartupPacket::GssEncRequest if !negotiated_gss && !stream.is_tls() => {
                negotiated_gss = true;
                if stream.write_all(b"N").await.is_err() {
                    return Err(Startup::Gone);
                }
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                return Err(Startup::Refused(
                    stream,
                    Refusal::new("08P01", "encryption was already negotiated on this connection"),
                ))
            }
            StartupPacket::CancelRequest { process_id, secret_key } => {
                if let Some(target) = frontend.cancel.request_cancel(process_id, secret_key) {
                    debug!(%peer, "forwarding cancel request");
                    if let Err(error) = upstream::cancel(&target.upstream, target.process_id, target.secret_key).await {
                        warn!(connection = %target.upstream.name, %error, "cancel request could not be forwarded");
                    }
                }
                return Err(Startup::Cancelled);
            }
            StartupPacket::Startup(message) => break message,
        }
    };

    if message.major != 3 {
        return Err(Startup::Refused(
            stream,
            Refusal::new(
                "0A000",
                format!("unsupported frontend protocol {}.{}: warden supports 3.0", message.major, message.minor),
            ),
        ));
    }
    if message.minor > 0 {
        // A newer 3.x client: tell it we speak 3.0 and ignore its protocol extensions.
        let unrecognized: Vec<&str> = message
            .parameters
            .iter()
            .filter(|(key, _)| key.starts_with("_pq_."))
            .map(|(key, _)| key.as_str())
            .collect();
        let mut out = Vec::new();
        backend::negotiate_protocol_version(&mut out, 0, &unrecognized);
        if stream.write_all(&out).await.is_err() {
            return Err(Startup::Gone);
        }
    }
    let Some(user) = message.get("user").filter(|user| !user.is_empty()) else {
        return Err(Startup::Refused(
            stream,
            Refusal::new("28000", "no PostgreSQL user name specified in startup packet"),
        ));
    };
    if message.get("replication").is_some_and(|value| value != "false" && value != "0" && value != "off") {
        return Err(Startup::Refused(
            stream,
            Refusal::new("0A000", "replication connections are not supported through warden"),
        ));
    }
    if let Err(refusal) =
        transport_policy(stream.is_tls(), peer.ip(), config.tls_required, config.allow_plaintext_password)
    {
        return Err(Startup::Refused(stream, refusal));
    }

    // Authenticate: the password is the caller's API key.
    if stream.write_all(&backend::authentication_cleartext_password()).await.is_err() || stream.flush().await.is_err() {
        return Err(Startup::Gone);
    }
    let password = match read_password(&mut stream).await {
        Ok(Some(password)) => password,
        Ok(None) => return Err(Startup::Gone),
        Err(refusal) => return Err(Startup::Refused(stream, refusal)),
    };
    // The database name is the connection name.
    let database = message.get("database").filter(|name| !name.is_empty()).unwrap_or(user);
    let identity = match frontend.hooks.authenticate(&password).await {
        Ok(identity) => identity,
        Err(error) => {
            info!(%peer, user, %error, "authentication failed");
            return Err(Startup::Refused(
                stream,
                Refusal::new("28P01", format!("password authentication failed for user \"{user}\": {error}"))
                    .about(user, database, None),
            ));
        }
    };
    drop(password);

    // Route.
    let Some(target) = config.connections.get(database).cloned() else {
        return Err(Startup::Refused(
            stream,
            Refusal::new("3D000", format!("connection \"{database}\" does not exist")).about(
                user,
                database,
                Some(&identity.name),
            ),
        ));
    };

    // Connect upstream with warden's credential, forwarding the client's session parameters.
    let forwarded: Vec<(String, String)> = message
        .parameters
        .iter()
        .filter(|(key, _)| !matches!(key.as_str(), "user" | "database" | "replication") && !key.starts_with("_pq_."))
        .cloned()
        .collect();
    // Admit: the connect policy, and which startup parameters may reach the upstream.
    let admission = crate::hooks::Admission {
        identity: &identity,
        connection: &target.name,
        client_address: peer,
        parameters: &forwarded,
    };
    let admitted = match frontend.hooks.admit(&admission) {
        Ok(admitted) => admitted,
        Err(message) => {
            info!(%peer, identity = %identity.name, connection = %target.name, %message, "session not admitted");
            let refusal = Refusal::new("42501", message).about(user, database, Some(&identity.name));
            return Err(Startup::Refused(stream, refusal));
        }
    };
    let forwarded = admitted.upstream_parameters;
    let connected = tokio::time::timeout(config.limits.connect_timeout, upstream::connect(&target, &forwarded)).await;
    let upstream = match connected {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(error)) => {
            let refusal = upstream_refusal(&target.name, &error).about(user, database, Some(&identity.name));
            return Err(Startup::Refused(stream, refusal));
        }
        Err(_) => {
            return Err(Startup::Refused(
                stream,
                Refusal::new(
                    "08001",
                    format!(
                        "could not connect to connection \"{}\": timed out after {:?} (limits.connect_timeout)",
                        target.name, config.limits.connect_timeout
                    ),
                ),
            ))
        }
    };
    Ok((stream, message, identity, upstream, target, (admitted.guard, admitted.masking), admitted.ends_at))
}

/// Whether a client on this transport may be asked for its password (its API key).
fn transport_policy(
    is_tls: bool,
    peer: std::net::IpAddr,
    tls_required: bool,
    allow_plaintext_password: bool,
) -> Result<(), Refusal> {
    if tls_required && !is_tls {
        return Err(Refusal::new(
            "28000",
            "warden requires TLS on this listener (listen.tls.required); connect with sslmode=require",
        ));
    }
    if !is_tls && !peer.is_loopback() && !allow_plaintext_password {
        return Err(Refusal::new(
            "28000",
            "warden will not accept a password over an unencrypted connection from a non-loopback address; connect with sslmode=require (or set listen.allow_plaintext_password)",
        ));
    }
    Ok(())
}

fn upstream_refusal(connection: &str, error: &UpstreamError) -> Refusal {
    Refusal::new("08001", format!("could not connect to connection \"{connection}\": {error}"))
}

/// Reads one untagged startup-phase packet; `None` when the client closed before sending one.
pub(crate) async fn read_startup_packet(stream: &mut Stream) -> Result<Option<StartupPacket>, CodecError> {
    let mut length_word = [0u8; 4];
    match stream.read_exact(&mut length_word).await {
        Ok(_) => {}
        Err(_) => return Ok(None),
    }
    let length = startup::packet_length(length_word)?;
    let mut body = vec![0u8; length - 4];
    if stream.read_exact(&mut body).await.is_err() {
        return Ok(None);
    }
    startup::parse(&body).map(Some)
}

/// Reads the PasswordMessage answering our cleartext request; `None` if the client hung up.
async fn read_password(stream: &mut Stream) -> Result<Option<String>, Refusal> {
    let mut header = [0u8; codec::HEADER_LEN];
    if stream.read_exact(&mut header).await.is_err() {
        return Ok(None);
    }
    let (tag, total) = codec::header(&header).expect("five bytes read")?;
    if tag != frontend::PASSWORD {
        return Err(Refusal::new("08P01", format!("expected a password message, got message type '{}'", tag as char)));
    }
    if total > codec::MAX_STARTUP_PACKET {
        return Err(CodecError::TooLarge { tag: 'p', length: total, limit: codec::MAX_STARTUP_PACKET }.into());
    }
    let mut message = header.to_vec();
    message.resize(total, 0);
    if stream.read_exact(&mut message[codec::HEADER_LEN..]).await.is_err() {
        return Ok(None);
    }
    let password = frontend::password(&message)?;
    let password = std::str::from_utf8(password).map_err(|_| Refusal::new("28P01", "password is not valid UTF-8"))?;
    Ok(Some(password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::transport_policy;

    fn check(is_tls: bool, peer: &str, tls_required: bool, allow_plaintext: bool, expected: Option<&str>) {
        let result = transport_policy(is_tls, peer.parse().unwrap(), tls_required, allow_plaintext);
        let refusal = result.err().map(|refusal| refusal.message);
        match (refusal.as_deref(), expected) {
            (None, None) => {}
            (Some(message), Some(expected)) => assert!(message.contains(expected), "{message}"),
            (actual, expected) => {
                panic!("{is_tls} {peer} {tls_required} {allow_plaintext}: {actual:?} vs {expected:?}")
            }
        }
    }

    #[test]
    fn a_password_over_plaintext_is_accepted_only_from_loopback_unless_allowed() {
        check(false, "127.0.0.1", false, false, None);
        check(false, "::1", false, false, None);
        check(false, "203.0.113.9", false, false, Some("unencrypted connection from a non-loopback address"));
        check(false, "2001:db8::1", false, false, Some("non-loopback"));
        check(true, "203.0.113.9", false, false, None);
        check(false, "203.0.113.9", false, true, None);
    }

    #[test]
    fn required_tls_refuses_every_plaintext_client() {
        check(false, "127.0.0.1", true, true, Some("requires TLS"));
        check(true, "127.0.0.1", true, false, None);
    }
}
