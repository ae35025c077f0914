//! The gateway process: one validated [`Config`] in, running listeners out.
//!
//! This crate owns start-up and shutdown: it opens the state store, compiles each protocol front end's
//! configuration, binds the listeners, and implements the front ends' [`SessionHooks`] by wiring identity
//! verification and the state recorder together. It holds no protocol logic of its own.
#![forbid(unsafe_code)]

mod admin;
mod approval;
mod auth;
mod explain;
mod guard;
mod http;
mod limits;
mod masking;
mod revoke;
mod sinks;

pub use admin::ONLY_IDENTITY_HEADER;
pub use auth::{token_issuer, Authenticator, SIGNING_KEY_FILE};
pub use guard::session_guard;
pub use masking::{hash_key, MaskingError, MASK_KEY_FILE};

pub use explain::{
    explain, CheckExplanation, ErrorExplanation, ExplainRequest, Explanation, QueryExplanation, StatementExplanation,
};

use std::net::SocketAddr;
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use warden_config::Config;
use warden_pg::{
    Admission, Admitted, AuthFuture, PgFrontend, PgFrontendConfig, SessionHooks, SessionInfo, StatementEvent,
};
use warden_policy::Policies;
use warden_sql::Analyzer;
use warden_state::{Decision, Recorder, SessionStart, StateStore, StatementRecord};

/// How long shutdown waits for live sessions to end after telling them to.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Events the recorder may queue before the data path starts dropping them (and counting the drops).
const RECORDER_CAPACITY: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("state store {url}: {source}")]
    State {
        url: String,
        #[source]
        source: warden_state::StateError,
    },
    #[error("cannot listen on {address} (listen.{listener}): {source}")]
    Bind {
        listener: &'static str,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] warden_pg::tls::TlsError),
    #[error("HTTP front end: {0}")]
    Http(#[from] warden_http::HttpError),
    #[error("policies: {0}")]
    Policy(#[from] warden_policy::PolicyError),
    #[error("tokens: {0}")]
    Token(#[from] warden_identity::TokenError),
    #[error("no listener configured")]
    NoListener,
    #[error("{0}")]
    Masking(#[from] MaskingError),
    #[error("audit sink: {0}")]
    AuditSink(#[source] std::io::Error),
    #[error("approval notification: {0}")]
    Notify(#[source] warden_webhook::WebhookError),
    #[error("cannot start worker thread: {0}")]
    Worker(#[source] std::io::Error),
}

/// Threads that run sessions, each a single-threaded runtime: a session's reads, writes and wake-ups stay
/// on one thread, with no work stealing between cores.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Workers {
    fn start(count: usize) -> Result<Workers, GatewayError> {
        let (stop, _) = watch::channel(false);
        let mut handles = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(GatewayError::Worker)?;
            handles.push(runtime.handle().clone());
            let mut stopped = stop.subscribe();
            let thread = std::thread::Builder::new()
                .name(format!("warden-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    });
                })
                .map_err(GatewayError::Worker)?;
            threads.push(thread);
        }
        Ok(Workers { handles, threads, stop })
    }

    /// Stops the threads (tasks still on them are dropped) and waits for them.
    async fn stop(&mut self) {
        self.stop.send_replace(true);
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// A running gateway. Dropping it without [`Gateway::shutdown`] stops accepting but does not flush.
pub struct Gateway {
    postgres_address: Option<SocketAddr>,
    http_address: Option<SocketAddr>,
    admin_address: Option<SocketAddr>,
    policy_files: Vec<std::path::PathBuf>,
    policies: Arc<guard::PolicyStore>,
    store: StateStore,
    recorder: Recorder,
    pg: Option<Arc<PgFrontend>>,
    http: Option<Arc<warden_http::HttpFrontend>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Delivers approval notifications; stopped after the sessions end, given the grace to finish deliveries.
    notifier: Option<JoinHandle<()>>,
    notifier_stop: watch::Sender<bool>,
    workers: Workers,
}

impl Gateway {
    /// Opens the state store and starts every configured listener.
    pub async fn start(config: Config) -> Result<Gateway, GatewayError> {
        let store = StateStore::open(config.state.url.expose())
            .await
            .map_err(|source| GatewayError::State { url: redact_url(config.state.url.expose()), source })?;
        if config.policy.files.is_empty() {
            warn!("no [policy] files configured: every session will be refused (default deny)");
        }
        let policies = Policies::load(&config.policy.files)?;
        let policy_count = policies.len();
        info!(policies = policy_count, "policies loaded");
        let policies = Arc::new(guard::PolicyStore::new(policies));
        let tokens = Arc::new(auth::token_issuer(&config)?);
        info!(key_id = tokens.signing_key().key_id(), "token signing key loaded");
        // The same key signs the audit chain's checkpoints (`warden audit public-key` prints it).
        let signer = Arc::new(AuditKey(tokens.clone()));
        let recorder = match sinks::Sinks::start(&config.audit.sinks).map_err(GatewayError::AuditSink)? {
            Some(sinks) => store.audited_recorder_with_tap(RECORDER_CAPACITY, signer, sinks),
            None => store.audited_recorder(RECORDER_CAPACITY, signer),
        };
        let revocations = Arc::new(revoke::Revocations::default());
        let loaded = revoke::load(&store, &revocations)
            .await
            .map_err(|source| GatewayError::State { url: redact_url(config.state.url.expose()), source })?;
        info!(revocations = loaded, "revocations loaded");
        let authenticator = Arc::new(auth::Authenticator::new(&config, tokens, revocations.clone()));
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let mut tasks = Vec::new();
        let pg_config = PgFrontendConfig::from_config(&config)?;
        let (maskings, hash_key) = if config.connections.iter().any(|connection| connection.masking.is_some()) {
            let hash_key = masking::hash_key(&config)?;
            (masking::Maskings::new(&config, &pg_config.connections, hash_key)?, hash_key)
        } else {
            (masking::Maskings::default(), masking::hash_key_if_configured(&config))
        };
        // Result rows of connections that do not mask are masked for the audit log by every built-in detector.
        let audit_masker = warden_mask::Masker::new(&warden_mask::MaskerConfig::all(hash_key)).map_err(|source| {
            GatewayError::Masking(masking::MaskingError::Masker { connection: "*".into(), source })
        })?;
        if config.listen.postgres.is_none() && config.listen.http.is_none() {
            return Err(GatewayError::NoListener);
        }
        let listener = bind("postgres", config.listen.postgres).await?;
        let postgres_address = listener.as_ref().and_then(|listener| listener.local_addr().ok());
        let http_listener = bind("http", config.listen.http).await?;
        let http_address = http_listener.as_ref().and_then(|listener| listener.local_addr().ok());
        let admin_listener = bind("admin", config.listen.admin).await?;
        // Where approvers act: the configured URL, else the admin listener as bound.
        let admin_url = config.approvals.url.clone().or_else(|| {
            admin_listener
                .as_ref()
                .and_then(|listener| listener.local_addr().ok())
                .map(|bound| format!("http://{bound}"))
        });
        let notify_targets = approval::notify_targets(&config.approvals.notify).map_err(GatewayError::Notify)?;
        // The notifier stops after the sessions have ended (a request made while they end is still sent).
        let (notifier_stop, notifier_stopped) = watch::channel(false);
        let mut notifier = None;
        let notices = if notify_targets.is_empty() {
            None
        } else {
            let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
            let context = (recorder.clone(), admin_url.clone());
            let task = approval::notify(receiver, notify_targets, context, notifier_stopped, SHUTDOWN_GRACE);
            notifier = Some(tokio::spawn(task));
            Some(sender)
        };
        let approvals =
            Arc::new(approval::Approvals { store: store.clone(), recorder: recorder.clone(), admin_url, notices });
        info!(durability = config.audit.durability.as_str(), "audit log");
        let audit_masker = Arc::new(audit_masker);
        let hooks = Arc::new(GatewayHooks {
            durability: config.audit.durability,
            result_rows: config.audit.result_rows,
            audit_masker: audit_masker.clone(),
            approvals: approvals.clone(),
            approval_modes: config
                .connections
                .iter()
                .map(|connection| (connection.name.clone(), connection.approval))
                .collect(),
            maskings: Arc::new(maskings),
            authenticator: authenticator.clone(),
            expiry_grace: config.tokens.expiry_grace,
            recorder: recorder.clone(),
            analyzer: Arc::new(Analyzer::default()),
            policies: policies.clone(),
        });
        let workers = Workers::start(config.runtime.workers)?;
        let pg = PgFrontend::new(pg_config, hooks, workers.handles.clone());
        if let Some(listener) = listener {
            tasks.push(tokio::spawn(pg.clone().serve(listener, shutdown_receiver.clone())));
        }
        let mut http_frontend = None;
        if let Some(listener) = http_listener {
            let http_config = warden_http::HttpFrontendConfig::from_config(&config)?;
            let limits = Arc::new(limits::Limits::new(&config));
            if limits.has_budgets() {
                // Budgets are counted in the store (they survive restarts and are shared by replicas): read before
                // the first request, then refreshed in the background.
                limits
                    .refresh(&store, &recorder)
                    .await
                    .map_err(|source| GatewayError::State { url: redact_url(config.state.url.expose()), source })?;
                tasks.push(tokio::spawn(limits::refresh_periodically(
                    limits.clone(),
                    store.clone(),
                    recorder.clone(),
                    shutdown_receiver.clone(),
                )));
            }
            if limits.has_rates() {
                // Rates are shared with the other replicas through the store: what they counted in the last minute is
                // read before the first request, then exchanged every second.
                limits
                    .sync(&store)
                    .await
                    .map_err(|source| GatewayError::State { url: redact_url(config.state.url.expose()), source })?;
                tasks.push(tokio::spawn(limits::sync_periodically(
                    limits.clone(),
                    store.clone(),
                    shutdown_receiver.clone(),
                )));
            }
            let http_hooks = Arc::new(http::GatewayHttpHooks {
                authenticator: authenticator.clone(),
                policies: policies.clone(),
                recorder: recorder.clone(),
                maskers: http_maskers(&config, hash_key)?,
                audit_masker: audit_masker.clone(),
                limits,
                approvals: approvals.clone(),
                approval_modes: config
                    .connections
                    .iter()
                    .map(|connection| (connection.name.clone(), connection.approval))
                    .collect(),
                decisions: Default::default(),
            });
            let frontend = warden_http::HttpFrontend::new(http_config, http_hooks, workers.handles.clone());
            http_frontend = Some(frontend.clone());
            tasks.push(tokio::spawn(frontend.serve(listener, shutdown_receiver.clone())));
        }
        let live = revoke::Live { pg: pg.clone(), http: http_frontend.clone() };
        tasks.push(tokio::spawn(revoke::poll(
            store.clone(),
            revocations.clone(),
            live.clone(),
            shutdown_receiver.clone(),
        )));
        tasks.push(tokio::spawn(approval::expire_periodically(approvals.clone(), shutdown_receiver.clone())));
        if let Some(retention) = config.audit.retention {
            info!(retention_s = retention.as_secs(), "retention: pruning every 10 minutes");
            tasks.push(tokio::spawn(warden_state::prune_periodically(
                recorder.clone(),
                retention,
                shutdown_receiver.clone(),
            )));
        }
        let admin_address = match admin_listener {
            Some(listener) => {
                let bound = listener.local_addr().ok();
                let state = Arc::new(admin::AdminState {
                    authenticator: authenticator.clone(),
                    connections: config.connections.iter().map(|connection| connection.name.clone()).collect(),
                    admin_group: config.admin.group.clone(),
                    store: store.clone(),
                    revocations,
                    live,
                    recorder: recorder.clone(),
                    policies: policies.clone(),
                    approvals: approvals.clone(),
                });
                let mut stop = shutdown_receiver;
                tasks.push(tokio::spawn(async move {
                    let serve = axum::serve(listener, admin::router(state)).with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    });
                    if let Err(error) = serve.await {
                        warn!(%error, "admin API stopped");
                    }
                }));
                bound
            }
            None => None,
        };
        // What is in force, for the audit log: an auditor can tell which config (by digest) and policies a gateway ran.
        let listening = Listening { postgres: postgres_address, http: http_address, admin: admin_address };
        if let Err(error) = recorder.audit_when_room(started_record(&config, policy_count, &listening)).await {
            warn!(%error, "gateway start not recorded in the audit log");
        }
        info!(
            postgres = ?postgres_address,
            http = ?http_address,
            admin = ?admin_address,
            state = store.backend(),
            connections = config.connections.len(),
            workers = config.runtime.workers,
            "warden gateway listening"
        );
        Ok(Gateway {
            postgres_address,
            http_address,
            admin_address,
            policy_files: config.policy.files.clone(),
            policies,
            store,
            recorder,
            pg: Some(pg),
            http: http_frontend,
            shutdown,
            tasks,
            notifier,
            notifier_stop,
            workers,
        })
    }

    /// Reads the policy files again and, when they load and validate, puts them in force for every statement
    /// judged from now on (live sessions keep running). On error the previous policies stay. Returns how many
    /// policies are in force. The reload's audit record waits for room in a full audit queue.
    pub async fn reload_policies(&self) -> Result<usize, warden_policy::PolicyError> {
        let files: Vec<String> = self.policy_files.iter().map(|file| file.display().to_string()).collect();
        let loaded = Policies::load(&self.policy_files);
        let body = match &loaded {
            Ok(policies) => serde_json::json!({"files": files, "policies": policies.len(), "applied": true}),
            Err(error) => serde_json::json!({"files": files, "applied": false, "error": error.to_string()}),
        };
        if let Err(error) = self.recorder.audit_when_room(warden_state::AuditRecord::new("policy.reload", body)).await {
            warn!(%error, "policy reload not recorded in the audit log");
        }
        let policies = loaded?;
        let count = policies.len();
        self.policies.replace(policies);
        Ok(count)
    }

    /// Where the admin API is bound, when configured (the real port when the config said port 0).
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin_address
    }

    /// Where the PostgreSQL listener is bound (the real port when the config said port 0).
    pub fn postgres_address(&self) -> Option<SocketAddr> {
        self.postgres_address
    }

    /// Where the HTTP listener is bound (the real port when the config said port 0).
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http_address
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Waits until everything recorded so far is in the state store, HTTP exchanges included (each is recorded
    /// just after its answer's last bytes are written).
    pub async fn flush(&self) -> Result<(), warden_state::StateError> {
        if let Some(http) = &self.http {
            http.settled().await;
        }
        self.recorder.flush().await
    }

    /// Sessions currently relaying.
    pub fn live_sessions(&self) -> usize {
        self.pg.as_ref().map_or(0, |pg| pg.live_sessions())
    }

    /// Stops accepting, ends live sessions (each client is told why, each end is recorded; up to
    /// [`SHUTDOWN_GRACE`] for them to finish), and flushes what has been recorded.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(pg) = &self.pg {
            let unfinished = pg.end_sessions(SHUTDOWN_GRACE).await;
            if unfinished > 0 {
                warn!(unfinished, "sessions still open after the shutdown grace period");
            }
        }
        if let Some(http) = &self.http {
            let unfinished = http.drain(SHUTDOWN_GRACE).await;
            if unfinished > 0 {
                warn!(unfinished, "HTTP connections still open after the shutdown grace period");
            }
        }
        let _ = self.notifier_stop.send(true);
        if let Some(notifier) = self.notifier.take() {
            let _ = notifier.await;
        }
        self.workers.stop().await;
        let stopped = warden_state::AuditRecord::new("gateway.stop", serde_json::json!({"reason": "shutdown"}));
        if let Err(error) = self.recorder.audit_when_room(stopped).await {
            warn!(%error, "gateway stop not recorded in the audit log");
        }
        if let Err(error) = self.recorder.flush().await {
            warn!(%error, "state store flush at shutdown failed");
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.notifier_stop.send(true);
        self.workers.stop.send_replace(true);
    }
}

/// Why a record could not be made durable, as a session ended for it reads it.
fn sync_failure(error: &dyn std::fmt::Display) -> String {
    format!("{error}; with audit.durability = sync")
}

/// Binds `listen.<listener>` when it is configured.
async fn bind(listener: &'static str, address: Option<SocketAddr>) -> Result<Option<TcpListener>, GatewayError> {
    let Some(address) = address else { return Ok(None) };
    TcpListener::bind(address).await.map(Some).map_err(|source| GatewayError::Bind { listener, address, source })
}

/// `postgres://user:…@host/db` → `postgres://user@host/db`, for messages.
fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (userinfo, host) = rest.rsplit_once('@').expect("contains @");
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        _ => url.to_string(),
    }
}

/// The gateway's Ed25519 key as the audit chain's checkpoint signer.
struct AuditKey(Arc<warden_identity::TokenIssuer>);

impl warden_state::AuditSigner for AuditKey {
    fn key_id(&self) -> &str {
        self.0.signing_key().key_id()
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.signing_key().sign(message)
    }
}

struct GatewayHooks {
    durability: warden_config::Durability,
    /// `[audit] result_rows`.
    result_rows: u32,
    /// Masks the result rows of connections without masking, for the audit log.
    audit_masker: Arc<warden_mask::Masker>,
    approvals: Arc<approval::Approvals>,
    /// Each connection's `approval` mode.
    approval_modes: std::collections::HashMap<String, warden_config::ApprovalMode>,
    maskings: Arc<masking::Maskings>,
    authenticator: Arc<auth::Authenticator>,
    expiry_grace: std::time::Duration,
    recorder: Recorder,
    analyzer: Arc<Analyzer>,
    policies: Arc<guard::PolicyStore>,
}

impl GatewayHooks {
    /// With `audit.durability = sync`, resolves once everything recorded so far is committed.
    fn durable(&self) -> Option<warden_pg::Durable> {
        if self.durability != warden_config::Durability::Sync {
            return None;
        }
        let durable = self.recorder.durable();
        Some(Box::pin(async move { durable.await.map_err(|error| sync_failure(&error)) }))
    }
}

impl SessionHooks for GatewayHooks {
    fn authenticate<'a>(&'a self, credential: &'a str) -> AuthFuture<'a> {
        Box::pin(self.authenticator.authenticate(credential, OffsetDateTime::now_utc()))
    }

    fn admit(&self, admission: &Admission<'_>) -> Result<Admitted, String> {
        if !self.recorder.has_room() {
            // Fail closed: a session whose events could not be recorded is not started.
            return Err(format!(
                "connection \"{}\": the audit log cannot keep up (its queue is nearly full); new sessions are \
                 refused until it drains",
                admission.connection
            ));
        }
        let scope = admission.identity.token.as_ref();
        let approvals = Arc::new(approval::SessionApprovals {
            shared: self.approvals.clone(),
            identity: admission.identity.name.clone(),
            connection: admission.connection.to_string(),
            run: scope.and_then(|scope| scope.run.clone()),
            node: scope.and_then(|scope| scope.node.clone()),
            mode: self.approval_modes.get(admission.connection).copied().unwrap_or_default(),
            masker: self
                .maskings
                .get(admission.connection)
                .map_or_else(|| (*self.audit_masker).clone(), |masking| masking.masker().clone()),
        });
        let mut admitted =
            guard::admit(admission, &self.analyzer, &self.policies, (self.expiry_grace, Some(approvals)))?;
        if let Some(connection) = self.maskings.get(admission.connection) {
            if !guard::may_unmask(admission, &self.policies) {
                admitted.masking = Some(Box::new(masking::SessionMasker::new(connection.clone())));
            }
        }
        Ok(admitted)
    }

    fn session_started(&self, session: &SessionInfo) -> Option<warden_pg::Durable> {
        let start = SessionStart {
            id: session.id.to_string(),
            identity: session.identity.name.clone(),
            connection: session.connection.clone(),
            client_address: session.client_address.to_string(),
            user_name: session.user_name.clone(),
            application_name: session.application_name.clone(),
            started_at: session.started_at,
            credential: Some(session.identity.kind.as_str().to_string()),
            token_id: session.identity.token.as_ref().map(|scope| scope.id.clone()),
            run: session.identity.token.as_ref().and_then(|scope| scope.run.clone()),
            node: session.identity.token.as_ref().and_then(|scope| scope.node.clone()),
        };
        queued(self.recorder.session_started_or_wait(start))
    }

    fn statement(&self, session: &SessionInfo, statement: StatementEvent) -> Option<warden_pg::Durable> {
        // The record is masked like the connection's results, whoever the identity (the audit trail never holds
        // what masking hides).
        let masker = match self.maskings.get(&session.connection) {
            Some(masking) => masking.masker(),
            None => &self.audit_masker,
        };
        let result = statement.result.map(|mut sample| {
            sample.map_values(|value| match masker.mask(value) {
                std::borrow::Cow::Borrowed(_) => None,
                std::borrow::Cow::Owned(masked) => Some(masked),
            });
            // Written straight into the audit body's canonical text: no JSON tree on the data path.
            let mut body = warden_audit::BodyWriter::new();
            body.number("cut", sample.cut).objects("sets", &sample.sets, |set_body, set| {
                set_body.optional_strings("columns", set.columns.as_deref()).string_rows("rows", &set.rows);
            });
            body.finish()
        });
        let (text, error) = match self.maskings.get(&session.connection) {
            Some(masking) => {
                let masker = masking.masker();
                let text = match masker.mask(&statement.text) {
                    std::borrow::Cow::Borrowed(_) => statement.text,
                    std::borrow::Cow::Owned(masked) => Arc::from(masked),
                };
                (text, statement.error.map(|error| masker.mask(&error).into_owned()))
            }
            None => (statement.text, statement.error),
        };
        let record = StatementRecord {
            session_id: session.id.clone(),
            seq: statement.seq,
            started_at: statement.started_at,
            duration: statement.duration,
            text,
            rows: statement.rows,
            error,
            decision: statement.annotation.and_then(|annotation| annotation.downcast::<Decision>().ok()),
            result,
            http: None,
            model: None,
            tokens: None,
            batch: None,
        };
        if self.durability == warden_config::Durability::Sync {
            if let Err(error) = self.recorder.statement(record) {
                warn!(session = %session.id, %error, "statement not recorded");
                return Some(Box::pin(std::future::ready(Err(sync_failure(&error)))));
            }
            return self.durable();
        }
        // Never dropped: once the queue is half full the answer waits until the record is queued (fail closed: the
        // data path slows to what the store can take rather than go on unrecorded).
        match self.recorder.statement_or_wait(record) {
            Ok(()) => None,
            Err(wait) => {
                let waiting = self.recorder.waiting();
                debug!(session = %session.id, waiting, "the audit queue is half full: the answer waits for room");
                Some(Box::pin(async move { wait.await.map_err(|error| error.to_string()) }))
            }
        }
    }

    fn result_rows(&self) -> u32 {
        self.result_rows
    }

    fn statement_requested(&self, session: &SessionInfo, text: &str) -> Option<warden_pg::Durable> {
        if self.durability != warden_config::Durability::Sync {
            return None;
        }
        let text = match self.maskings.get(&session.connection) {
            Some(masking) => masking.masker().mask(text).into_owned(),
            None => text.to_string(),
        };
        let mut record = warden_state::AuditRecord::new("statement.request", serde_json::json!({ "text": text }));
        record.session = Some(session.id.to_string());
        record.identity = Some(session.identity.name.clone());
        record.connection = Some(session.connection.clone());
        record.run = session.identity.token.as_ref().and_then(|scope| scope.run.clone());
        record.node = session.identity.token.as_ref().and_then(|scope| scope.node.clone());
        if let Err(error) = self.recorder.audit(record) {
            return Some(Box::pin(std::future::ready(Err(sync_failure(&error)))));
        }
        self.durable()
    }

    fn session_refused(
        &self,
        client_address: SocketAddr,
        about: &warden_pg::RefusedStartup,
        code: &str,
        reason: &str,
    ) -> Option<warden_pg::Durable> {
        let mut record = warden_state::AuditRecord::new(
            "session.refused",
            serde_json::json!({
                "client_address": client_address.to_string(),
                "user_name": about.user,
                "code": code,
                "reason": reason,
            }),
        );
        record.identity = about.identity.clone();
        record.connection = Some(about.connection.clone());
        queued(self.recorder.audit_or_wait(record))
    }

    fn session_masked(
        &self,
        session: &SessionInfo,
        masked: std::collections::BTreeMap<String, u64>,
    ) -> Option<warden_pg::Durable> {
        queued(self.recorder.session_masked_or_wait(&session.id, masked))
    }

    fn session_ended(&self, session: &SessionInfo, reason: &str) -> Option<warden_pg::Durable> {
        queued(self.recorder.session_ended_or_wait(&session.id, OffsetDateTime::now_utc(), Some(reason.to_string())))
    }
}

/// A record queued at once (`None`), or the wait until it is, for the session to await.
fn queued(queued: Result<(), warden_state::RecordWait>) -> Option<warden_pg::Durable> {
    queued
        .err()
        .map(|wait| -> warden_pg::Durable { Box::pin(async move { wait.await.map_err(|error| error.to_string()) }) })
}

/// The `gateway.start` audit event: the config file (path and SHA-256 of its bytes), what it puts in force and
/// where the gateway listens. Secrets are never part of it.
/// Where a gateway listens, as bound.
struct Listening {
    postgres: Option<SocketAddr>,
    http: Option<SocketAddr>,
    admin: Option<SocketAddr>,
}

/// The compiled maskers of the `http` connections with `[connection.masking]`.
fn http_maskers(
    config: &Config,
    hash_key: [u8; 32],
) -> Result<std::collections::HashMap<String, warden_mask::Masker>, GatewayError> {
    let mut maskers = std::collections::HashMap::new();
    for connection in &config.connections {
        let (Some(_), Some(masking)) = (connection.http(), &connection.masking) else { continue };
        let masker = warden_mask::Masker::new(&masking.masker_config(hash_key)).map_err(|source| {
            GatewayError::Masking(masking::MaskingError::Masker { connection: connection.name.clone(), source })
        })?;
        maskers.insert(connection.name.clone(), masker);
    }
    Ok(maskers)
}

fn started_record(config: &Config, policies: usize, listening: &Listening) -> warden_state::AuditRecord {
    use sha2::Digest;
    let digest = std::fs::read(&config.source).ok().map(|bytes| format!("{:x}", sha2::Sha256::digest(&bytes)));
    let sinks: Vec<&str> = config
        .audit
        .sinks
        .iter()
        .map(|sink| match sink {
            warden_config::AuditSink::Jsonl { .. } => "jsonl",
            warden_config::AuditSink::Syslog { .. } => "syslog",
            warden_config::AuditSink::Webhook { .. } => "webhook",
        })
        .collect();
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": config.source.display().to_string(),
        "config_sha256": digest,
        "policy_files": config.policy.files.iter().map(|file| file.display().to_string()).collect::<Vec<_>>(),
        "policies": policies,
        "connections": config.connections.iter().map(|connection| connection.name.as_str()).collect::<Vec<_>>(),
        "durability": config.audit.durability.as_str(),
        "result_rows": config.audit.result_rows,
        "retention_s": config.audit.retention.map(|retention| retention.as_secs()),
        "sinks": sinks,
        "listen": {
            "postgres": listening.postgres.map(|address| address.to_string()),
            "http": listening.http.map(|address| address.to_string()),
            "admin": listening.admin.map(|address| address.to_string()),
        },
    });
    warden_state::AuditRecord::new("gateway.start", body)
}
