//! warden-http owns the HTTP front end: the listener (HTTP/1.1 and HTTP/2, optionally TLS with ALPN), routing by
//! path prefix `/<connection>/…` to `kind = "http"` connections, the caller's credential (`Authorization: Bearer`,
//! or an LLM SDK's own key header) swapped for the one warden holds, per-request authorization through
//! [`HttpHooks`], and the bodies: LLM requests inspected and guarded (`warden-llm`), responses masked as they
//! stream (JSON, text, server-sent events), each exchange recorded when its response ends.
//!
//! It talks to the rest of the gateway only through [`HttpHooks`]; policy, identity, limits and the state store
//! live behind it.
#![forbid(unsafe_code)]

mod body;
mod error;
mod hooks;
mod proxy;
mod route;

pub use error::HttpError;
pub use hooks::{
    Authorization, BatchRead, BoxFuture, Exchange, HttpHooks, HttpSession, LimitRefusal, RequestInfo, TokenUsage,
};
pub use route::Route;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The largest request body warden reads whole (an LLM request, whose prompt it must inspect): 16 MiB.
pub const MAX_INSPECTED_BODY: usize = 16 << 20;

/// The HTTP front end's compiled configuration, built once per config version.
pub struct HttpFrontendConfig {
    pub routes: HashMap<String, Arc<Route>>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// A credential over plaintext HTTP from a non-loopback address is refused unless this is set.
    pub allow_plaintext_credentials: bool,
    /// How long an answer may stream past its credential's expiry (`tokens.expiry_grace`).
    pub expiry_grace: std::time::Duration,
    /// The base URL clients reach this listener at, if not its own (`listen.http_public_url`): URLs written into
    /// answers begin with it.
    pub public_url: Option<String>,
}

impl HttpFrontendConfig {
    pub fn from_config(config: &warden_config::Config) -> Result<HttpFrontendConfig, HttpError> {
        let mut routes = HashMap::new();
        for connection in &config.connections {
            let Some(target) = connection.http() else { continue };
            let route = Route::new(&connection.name, target, config.runtime.workers)?;
            routes.insert(connection.name.clone(), Arc::new(route));
        }
        let tls = config.listen.tls.as_ref().map(error::tls_acceptor).transpose()?;
        Ok(HttpFrontendConfig {
            routes,
            tls,
            allow_plaintext_credentials: config.listen.allow_plaintext_password,
            expiry_grace: config.tokens.expiry_grace,
            public_url: config.listen.http_public_url.clone(),
        })
    }
}

/// The running front end.
pub struct HttpFrontend {
    config: HttpFrontendConfig,
    hooks: Arc<dyn HttpHooks>,
    workers: Vec<tokio::runtime::Handle>,
    next_worker: AtomicUsize,
    live: AtomicUsize,
    /// Signalled each time a client connection closes ([`HttpFrontend::drain`] waits on it).
    closed: watch::Sender<()>,
    pub(crate) records: Arc<Deferred>,
    /// The sessions not yet ended, by id, for [`HttpFrontend::end_sessions_where`].
    sessions: parking_lot::Mutex<HashMap<Arc<str>, Weak<proxy::SessionSlot>>>,
}

/// Work put off until the current task yields: the record of an exchange is made once hyper has written the
/// answer's last bytes, not before. Counted, so [`HttpFrontend::settled`] can wait for it, including the wait for
/// room in the audit queue the work may return.
pub(crate) struct Deferred {
    pending: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// What deferred work may leave to wait for: the audit queue's room for its record.
pub(crate) type Wait = Option<BoxFuture<'static, ()>>;

/// One piece of deferred work: runs when its task runs, or when the task is dropped unrun (a worker shutting down),
/// so it is never skipped.
struct Later {
    work: Option<Box<dyn FnOnce() -> Wait + Send>>,
    deferred: Arc<Deferred>,
}

impl Later {
    fn run(&mut self) -> Wait {
        self.work.take().and_then(|work| work())
    }
}

impl Drop for Later {
    fn drop(&mut self) {
        // Dropped unrun (a worker stopping): nothing can wait any more, so a record that finds the audit queue over
        // half full now is lost.
        drop(self.run());
        if self.deferred.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.deferred.idle.notify_waiters();
        }
    }
}

impl Deferred {
    /// Runs `work` on this thread's runtime after the current task yields (at once outside a runtime), then waits
    /// for what it returns.
    pub(crate) fn later(self: &Arc<Self>, work: impl FnOnce() -> Wait + Send + 'static) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        let mut later = Later { work: Some(Box::new(work)), deferred: self.clone() };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn(async move {
                if let Some(wait) = later.run() {
                    wait.await;
                }
                drop(later);
            }));
        }
    }

    async fn settled(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl HttpFrontend {
    pub fn new(
        config: HttpFrontendConfig,
        hooks: Arc<dyn HttpHooks>,
        workers: Vec<tokio::runtime::Handle>,
    ) -> Arc<HttpFrontend> {
        Arc::new(HttpFrontend {
            config,
            hooks,
            workers,
            next_worker: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            closed: watch::channel(()).0,
            records: Arc::new(Deferred { pending: AtomicUsize::new(0), idle: tokio::sync::Notify::new() }),
            sessions: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// Ends every live session `select` picks (a revocation names them), with `reason`: each end is recorded, and
    /// each of their answers still streaming is cut (an SSE stream gets an error event saying why; any other body
    /// is aborted). Returns how many sessions were ended.
    pub fn end_sessions_where(&self, select: impl Fn(&HttpSession) -> bool, reason: &str) -> usize {
        let picked: Vec<Arc<proxy::SessionSlot>> =
            self.sessions.lock().values().filter_map(Weak::upgrade).filter(|slot| select(&slot.session)).collect();
        picked.iter().filter(|slot| self.end_session(slot, reason)).count()
    }

    /// Keeps a new session where [`HttpFrontend::end_sessions_where`] finds it.
    pub(crate) fn register(&self, slot: &Arc<proxy::SessionSlot>) {
        self.sessions.lock().insert(slot.session.id.clone(), Arc::downgrade(slot));
    }

    /// Ends `slot`'s session with `reason` and records it, once (false if it had ended already).
    pub(crate) fn end_session(&self, slot: &proxy::SessionSlot, reason: &str) -> bool {
        self.sessions.lock().remove(&slot.session.id);
        let first = slot.stop.stop(reason.to_string());
        if first {
            if let Some(wait) = self.hooks.session_ended(&slot.session, reason) {
                self.records.later(move || Some(wait));
            }
        }
        first
    }

    /// Client connections open now.
    pub fn live_connections(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Waits until every exchange answered so far has been handed to the hooks (records are made just after the
    /// answer's last bytes are written).
    pub async fn settled(&self) {
        self.records.settled().await;
    }

    /// After shutdown began: waits up to `grace` for the client connections to finish their requests and close
    /// (each is shut down gracefully: requests in flight, streams included, run to their end). Returns how many
    /// are still open; their sessions are ended when the worker threads stop.
    pub async fn drain(&self, grace: std::time::Duration) -> usize {
        let mut closed = self.closed.subscribe();
        let _ = tokio::time::timeout(grace, closed.wait_for(|()| self.live_connections() == 0)).await;
        self.settled().await;
        self.live_connections()
    }

    /// Accepts connections until `shutdown` turns true; each connection is served on a worker thread.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        let address = listener.local_addr().ok();
        info!(?address, routes = self.config.routes.len(), "HTTP front end listening");
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = async { drop(shutdown.wait_for(|stop| *stop).await) } => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "HTTP accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let frontend = self.clone();
            let stop = shutdown.clone();
            let index = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len().max(1);
            match self.workers.get(index) {
                Some(worker) => {
                    // Move the socket to the worker's reactor (deregister here, register there), as the PostgreSQL
                    // front end does: otherwise every read and write event would wake this thread first.
                    let stream = match stream.into_std() {
                        Ok(stream) => stream,
                        Err(error) => {
                            warn!(%peer, %error, "cannot hand the HTTP connection to a worker");
                            continue;
                        }
                    };
                    drop(worker.spawn(async move {
                        match tokio::net::TcpStream::from_std(stream) {
                            Ok(stream) => frontend.connection(stream, peer, index, stop).await,
                            Err(error) => warn!(%peer, %error, "cannot register the HTTP connection with its worker"),
                        }
                    }));
                }
                None => drop(tokio::spawn(async move { frontend.connection(stream, peer, 0, stop).await })),
            }
        }
    }

    /// Serves one client connection on worker `worker` (whose upstream pools its requests use).
    async fn connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        worker: usize,
        stop: watch::Receiver<bool>,
    ) {
        self.live.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(proxy::ConnectionState::new(self.clone(), peer, worker, self.config.tls.is_some()));
        match &self.config.tls {
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(tls) => serve_connection(TokioIo::new(tls), state.clone(), stop).await,
                Err(error) => debug!(%peer, %error, "HTTP TLS handshake failed"),
            },
            None => serve_connection(TokioIo::new(stream), state.clone(), stop).await,
        }
        state.end("connection closed");
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.closed.send_replace(());
    }
}

async fn serve_connection<I>(io: I, state: Arc<proxy::ConnectionState>, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(state.handle(request).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                debug!(%error, "HTTP connection ended with an error");
            }
        }
        () = async { drop(stop.wait_for(|stop| *stop).await) } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
