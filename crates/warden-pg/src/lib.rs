//! warden's PostgreSQL front end.
//!
//! This crate owns everything PostgreSQL-specific on the data path: the wire codec ([`codec`]), the client
//! startup and authentication exchange ([`session`]), the upstream leg with warden's own credential
//! ([`upstream`]), TLS on both legs ([`tls`]), cancel forwarding ([`cancel`]) and the relay loop with
//! statement tracking ([`relay`]). Decisions and records that are not about the protocol go through
//! [`SessionHooks`], which the gateway implements; this crate never touches the state store.
#![forbid(unsafe_code)]

pub mod cancel;
pub mod catalog;
pub mod codec;
pub mod hooks;
mod mask;
pub mod relay;
pub mod sample;
mod session;
pub mod stream;
pub mod tls;
pub mod upstream;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use rand::RngCore;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{error, warn};
use warden_config::{Config, Limits};

pub use hooks::{
    Admission, Admitted, Annotation, AuthFuture, CopyColumn, CopyShape, Deferral, Deferred, DeferredStatement,
    DerivedRule, Durable, Ending, Judgement, MaskFuture, Notices, RefusedStartup, ResponseMasking, SessionHooks,
    SessionInfo, SourceColumn, StatementEvent, StatementGuard, StatementRefusal,
};
use upstream::UpstreamTarget;

/// The PostgreSQL front end's compiled configuration: built once per config version.
pub struct PgFrontendConfig {
    pub connections: HashMap<String, Arc<UpstreamTarget>>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub tls_required: bool,
    pub allow_plaintext_password: bool,
    pub limits: Limits,
}

impl PgFrontendConfig {
    pub fn from_config(config: &Config) -> Result<Self, tls::TlsError> {
        let mut connections = HashMap::new();
        for connection in &config.connections {
            let Some(postgres) = connection.postgres() else { continue };
            let tls = tls::UpstreamTlsConnector::new(&postgres.tls)?;
            let target = UpstreamTarget { name: connection.name.clone(), postgres: postgres.clone(), tls };
            connections.insert(connection.name.clone(), Arc::new(target));
        }
        let tls = config.listen.tls.as_ref().map(tls::acceptor).transpose()?;
        Ok(PgFrontendConfig {
            connections,
            tls_required: config.listen.tls.as_ref().is_some_and(|tls| tls.required),
            tls,
            allow_plaintext_password: config.listen.allow_plaintext_password,
            limits: config.limits.clone(),
        })
    }
}

/// A session in the relay phase.
struct LiveSession {
    info: SessionInfo,
    ending: watch::Sender<Option<Ending>>,
}

/// Removes a session from the live set when its relay ends.
pub(crate) struct LiveHandle {
    frontend: Arc<PgFrontend>,
    id: Arc<str>,
}

impl Drop for LiveHandle {
    fn drop(&mut self) {
        self.frontend.live.lock().remove(&self.id);
    }
}

/// The PostgreSQL listener's shared state.
pub struct PgFrontend {
    config: RwLock<Arc<PgFrontendConfig>>,
    hooks: Arc<dyn SessionHooks>,
    cancel: Arc<cancel::CancelRegistry>,
    sessions: Arc<Semaphore>,
    /// Turns true when live sessions must end (gateway shutdown).
    stop: watch::Sender<bool>,
    /// Sessions in the relay phase, by id, each with the switch that ends it alone.
    live: parking_lot::Mutex<HashMap<Arc<str>, LiveSession>>,
    /// Runtimes sessions run on, in turn; empty means the accepting runtime. Each session's sockets, reads
    /// and writes stay on one thread, so relaying needs no cross-thread wake-ups.
    workers: Vec<tokio::runtime::Handle>,
    next_worker: std::sync::atomic::AtomicUsize,
}

impl PgFrontend {
    /// A front end whose sessions run on `workers` in turn (on the accepting runtime when empty).
    pub fn new(
        config: PgFrontendConfig,
        hooks: Arc<dyn SessionHooks>,
        workers: Vec<tokio::runtime::Handle>,
    ) -> Arc<Self> {
        let sessions = Arc::new(Semaphore::new(config.limits.max_sessions));
        Arc::new(PgFrontend {
            config: RwLock::new(Arc::new(config)),
            hooks,
            cancel: Arc::new(cancel::CancelRegistry::default()),
            sessions,
            stop: watch::channel(false).0,
            live: parking_lot::Mutex::new(HashMap::new()),
            workers,
            next_worker: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Ends every live session: each client gets FATAL 57P01, its upstream a Terminate, and the session's
    /// end is recorded. Then waits up to `grace` for them to finish; returns how many had not.
    pub async fn end_sessions(&self, grace: std::time::Duration) -> usize {
        self.stop.send_replace(true);
        let limit = self.config().limits.max_sessions;
        let all = u32::try_from(limit).unwrap_or(u32::MAX);
        match tokio::time::timeout(grace, self.sessions.acquire_many(all)).await {
            Ok(_) => 0,
            Err(_) => limit - self.sessions.available_permits(),
        }
    }

    /// Ends every live session `select` picks: its client gets FATAL `ending.code` with `ending.message`, its
    /// upstream a Terminate, and its end is recorded. Returns how many were picked.
    pub fn end_sessions_where(&self, select: impl Fn(&SessionInfo) -> bool, ending: &Ending) -> usize {
        let live = self.live.lock();
        let mut ended = 0;
        for session in live.values().filter(|session| select(&session.info)) {
            session.ending.send_replace(Some(ending.clone()));
            ended += 1;
        }
        ended
    }

    /// Registers a session entering the relay phase; it is forgotten when the returned handle drops.
    pub(crate) fn register_live(self: &Arc<Self>, info: &SessionInfo) -> (LiveHandle, watch::Receiver<Option<Ending>>) {
        let (sender, receiver) = watch::channel(None);
        self.live.lock().insert(info.id.clone(), LiveSession { info: info.clone(), ending: sender });
        (LiveHandle { frontend: self.clone(), id: info.id.clone() }, receiver)
    }

    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// The configuration new sessions use.
    pub fn config(&self) -> Arc<PgFrontendConfig> {
        self.config.read().clone()
    }

    /// Number of sessions in the relay phase.
    pub fn live_sessions(&self) -> usize {
        self.cancel.len()
    }

    /// Accepts clients until `shutdown` turns true.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: keep serving the sessions we have, back off briefly.
                    error!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.sessions.clone().try_acquire_owned() else {
                warn!(%peer, limit = self.config().limits.max_sessions, "session limit reached");
                // Bounded like a startup, so a flood past the limit cannot park tasks forever.
                let limits = self.config().limits.clone();
                tokio::spawn(tokio::time::timeout(limits.startup_timeout, refuse_busy(tcp, limits.max_sessions)));
                continue;
            };
            let frontend = self.clone();
            if self.workers.is_empty() {
                tokio::spawn(async move {
                    session::run(frontend, tcp, peer).await;
                    drop(permit);
                });
                continue;
            }
            let index = self.next_worker.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.workers.len();
            // Move the socket to the worker's reactor: deregister here, register there.
            let tcp = match tcp.into_std() {
                Ok(tcp) => tcp,
                Err(error) => {
                    warn!(%peer, %error, "cannot hand the connection to a worker");
                    continue;
                }
            };
            self.workers[index].spawn(async move {
                match tokio::net::TcpStream::from_std(tcp) {
                    Ok(tcp) => session::run(frontend, tcp, peer).await,
                    Err(error) => warn!(%peer, %error, "cannot register the connection with its worker"),
                }
                drop(permit);
            });
        }
    }
}

/// Answers a client over the session limit with SQLSTATE 53300, after its startup packet.
async fn refuse_busy(tcp: tokio::net::TcpStream, limit: usize) {
    use tokio::io::AsyncWriteExt;
    let mut stream = stream::Stream::Tcp(tcp);
    match session::read_startup_packet(&mut stream).await {
        Ok(Some(codec::startup::StartupPacket::SslRequest)) => {
            let _ = stream.write_all(b"N").await;
        }
        // A packet that parses badly still gets the refusal; one whose length is invalid does not.
        Ok(Some(_)) | Err(codec::CodecError::Malformed { .. }) => {}
        Ok(None) | Err(_) => return,
    }
    let mut out = Vec::new();
    codec::backend::error_response(
        &mut out,
        codec::backend::Severity::Fatal,
        "53300",
        &format!("too many sessions: warden allows {limit} (limits.max_sessions)"),
        None,
    );
    let _ = stream.write_all(&out).await;
}

/// A time-ordered session id in UUID form (version 7 layout).
pub fn new_session_id() -> String {
    let millis = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let mut random = [0u8; 10];
    rand::rng().fill_bytes(&mut random);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&(millis as u64).to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&random);
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}
