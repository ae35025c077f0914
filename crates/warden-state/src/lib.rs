//! warden's state store: the sessions clients opened and the statements they ran, kept in SQLite
//! (one gateway, the default) or PostgreSQL (several gateways sharing state).
//!
//! This crate owns the schema and its migrations (one set per dialect, embedded in the binary), the
//! background writer that takes recorded events off the data path and stores them in batches
//! ([`Recorder`]), and the read queries the admin API uses ([`StateStore::list_sessions`] and friends), `warden usage`
//! reads ([`StateStore::usage`]) and token budgets count with ([`StateStore::tokens_used`]).
//!
//! Storage: timestamps are INTEGER microseconds since the Unix epoch (UTC) in SQLite and `timestamptz`
//! in PostgreSQL; a session's statement count is a column the writer keeps up to date in the same
//! transaction that inserts the statements, so listing sessions never counts statements.
#![forbid(unsafe_code)]

mod approvals;
mod audit;
mod error;
mod migrations;
mod prune;
mod rates;
mod recorder;
mod sql;
mod usage;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Postgres, Sqlite};
use time::OffsetDateTime;

pub use approvals::{
    ApprovalFilter, ApprovalKind, ApprovalRow, ApprovalStatus, Needed, NewApproval, Vote, VoteError, Voter,
};
pub use audit::{timestamp, AuditSigner, AuditTap, CHECKPOINT_INTERVAL};
pub use error::{redact_url, Fault, RecordError, StateError};
pub use prune::{prune_periodically, retention_cutoff, PruneReport, PrunedChain, PRUNE_FIRST_DELAY, PRUNE_INTERVAL};
pub use rates::RateCount;
pub use recorder::{AuditRecord, BatchResults, RecordWait, Recorder, SessionStart, StatementRecord, Tokens};
pub use usage::{UsageFilter, UsageRow};

use recorder::{SessionEnd, SessionMasked};
use sql::{Batch, Dialect, Store};

/// Sessions [`StateStore::list_sessions`] returns when the filter sets no limit.
pub const DEFAULT_SESSION_LIMIT: u32 = 100;

/// The state store: a pool of connections to SQLite or PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    backend: Backend,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore").field("backend", &self.backend()).finish_non_exhaustive()
    }
}

/// Which sessions [`StateStore::list_sessions`] returns; every field set narrows the selection.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub identity: Option<String>,
    pub connection: Option<String>,
    /// Sessions that started at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// Sessions that started before this instant.
    pub until: Option<OffsetDateTime>,
    /// Sessions with a statement that touched this table: `schema.table` names exactly that table, a bare name
    /// (`customers`) the table of that name in any schema.
    pub table: Option<String>,
    /// Sessions of a warden token issued for this workflow run (its `run` label).
    pub run: Option<String>,
    /// Sessions of a warden token issued for this workflow node (its `node` label).
    pub node: Option<String>,
    /// Sessions that have not ended.
    pub active_only: bool,
    /// At most this many sessions; [`DEFAULT_SESSION_LIMIT`] when unset.
    pub limit: Option<u32>,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SessionRow {
    pub id: String,
    pub identity: String,
    pub connection: String,
    pub client_address: String,
    pub user_name: String,
    pub application_name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    pub end_reason: Option<String>,
    pub statement_count: i64,
    /// How the session authenticated: `api_key`, `warden_token`, `oidc`.
    pub credential: Option<String>,
    /// For a warden token: its id, and the workflow run and node it was issued for.
    pub token_id: Option<String>,
    pub run: Option<String>,
    pub node: Option<String>,
    /// How many values warden masked in the session, by detector (`email`, `us_ssn`, `column`, …); empty when it
    /// masked none.
    #[serde(default)]
    pub masked: BTreeMap<String, u64>,
}

/// A stored statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StatementRow {
    pub session_id: String,
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub duration_us: i64,
    pub text: String,
    pub rows: Option<i64>,
    pub error: Option<String>,
    /// What warden decided before forwarding it; absent for statements no guard judged.
    pub decision: Option<Decision>,
    /// For an LLM request: the model it asked for.
    #[serde(default)]
    pub model: Option<String>,
    /// For an LLM request whose answer reported usage: the tokens the provider counted.
    #[serde(default)]
    pub tokens: Option<Tokens>,
}

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    /// Every credential of the identity, now and later.
    Identity,
    /// A warden token and every token issued from it.
    Token,
    /// One live session.
    Session,
}

impl RevocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Identity => "identity",
            RevocationKind::Token => "token",
            RevocationKind::Session => "session",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<RevocationKind> {
        match text {
            "identity" => Some(RevocationKind::Identity),
            "token" => Some(RevocationKind::Token),
            "session" => Some(RevocationKind::Session),
            _ => None,
        }
    }
}

/// A revocation to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub kind: RevocationKind,
    /// The identity name, token id or session id.
    pub subject: String,
    pub reason: Option<String>,
    /// The identity that revoked it.
    pub revoked_by: String,
    pub revoked_at: OffsetDateTime,
}

/// A stored revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevocationRow {
    pub id: i64,
    pub kind: RevocationKind,
    pub subject: String,
    pub reason: Option<String>,
    pub revoked_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
}

/// What warden decided about a statement (or a query of several) before forwarding it.
///
/// One decision is shared (in an `Arc`) by every execution of the statement it was made for; its stored form is
/// encoded once, on first write.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Decision {
    pub allowed: bool,
    /// Each statement's action class, in order (`["read", "write"]`).
    pub classes: Vec<String>,
    /// The tables it touches, `schema.table`, each once.
    pub tables: Vec<String>,
    /// The policies that determined the decision: those that permitted it, or those that forbade it (empty
    /// when it was refused because no policy permits it).
    pub policies: Vec<String>,
    /// The list columns as stored (JSON arrays): classes, tables, policies.
    #[serde(skip)]
    stored: std::sync::OnceLock<[String; 3]>,
}

impl Decision {
    pub fn new(allowed: bool, classes: Vec<String>, tables: Vec<String>, policies: Vec<String>) -> Decision {
        Decision { allowed, classes, tables, policies, stored: std::sync::OnceLock::new() }
    }

    /// The list columns as stored, encoded on first use.
    pub(crate) fn stored_lists(&self) -> &[String; 3] {
        self.stored.get_or_init(|| {
            let encode = |items: &[String]| serde_json::to_string(items).expect("a list of strings always serializes");
            [encode(&self.classes), encode(&self.tables), encode(&self.policies)]
        })
    }
}

impl PartialEq for Decision {
    fn eq(&self, other: &Decision) -> bool {
        (self.allowed, &self.classes, &self.tables, &self.policies)
            == (other.allowed, &other.classes, &other.tables, &other.policies)
    }
}

impl Eq for Decision {}

impl StateStore {
    /// Opens the store at `url` and brings its schema up to date.
    ///
    /// `sqlite:///abs/path/warden.db` creates the parent directories and the file on first run and uses
    /// a WAL journal, `synchronous = NORMAL`, a 5 s busy timeout, foreign keys and in-memory temporary storage.
    /// `postgres://…` (or `postgresql://…`) is a server several gateways may share; concurrent
    /// migrations are serialised by an advisory lock.
    pub async fn open(url: &str) -> Result<StateStore, StateError> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(open_sqlite(url).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(open_postgres(url).await?)
        } else {
            return Err(StateError::UnsupportedUrl { url: redact_url(url) });
        };
        Ok(StateStore { backend })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.backend.name()
    }

    /// Starts a background writer task (on the current tokio runtime) and returns the handle the data
    /// path records through. `capacity` (at least 1) bounds the queue of events waiting for the
    /// writer; size it for a burst, e.g. a second of statements at peak rate.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like `tokio::spawn`.
    pub fn recorder(&self, capacity: usize) -> Recorder {
        Recorder::start(self.backend.clone(), capacity, None, None)
    }

    /// [`StateStore::recorder`] whose audit chain is checkpointed with `signer` (the gateway's key): each
    /// recorder writes its own hash chain, and a signed checkpoint of its head at most every second.
    pub fn audited_recorder(&self, capacity: usize, signer: std::sync::Arc<dyn AuditSigner>) -> Recorder {
        Recorder::start(self.backend.clone(), capacity, Some(signer), None)
    }

    /// [`StateStore::audited_recorder`] that also hands every committed audit event and checkpoint to `tap` (the
    /// export sinks).
    pub fn audited_recorder_with_tap(
        &self,
        capacity: usize,
        signer: std::sync::Arc<dyn AuditSigner>,
        tap: std::sync::Arc<dyn AuditTap>,
    ) -> Recorder {
        Recorder::start(self.backend.clone(), capacity, Some(signer), Some(tap))
    }

    /// The audit log: events (at or after `since`, an RFC 3339 time, when given) by chain and seq, and every
    /// checkpoint.
    pub async fn audit_log(
        &self,
        since: Option<OffsetDateTime>,
    ) -> Result<(Vec<warden_audit::Sealed>, Vec<warden_audit::Checkpoint>), StateError> {
        let since = since.map(audit::timestamp);
        match &self.backend {
            Backend::Sqlite(store) => Ok((store.audit_events(since.as_deref()).await?, store.all_checkpoints().await?)),
            Backend::Postgres(store) => {
                Ok((store.audit_events(since.as_deref()).await?, store.all_checkpoints().await?))
            }
        }
    }

    /// Sessions matching `filter`, newest first.
    pub async fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionRow>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.list_sessions(filter).await,
            Backend::Postgres(store) => store.list_sessions(filter).await,
        }
    }

    /// One session by id.
    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.session(id).await,
            Backend::Postgres(store) => store.session(id).await,
        }
    }

    /// Records a revocation, durably, before returning its id.
    pub async fn revoke(&self, revocation: &Revocation) -> Result<i64, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.revoke(revocation).await,
            Backend::Postgres(store) => store.revoke(revocation).await,
        }
    }

    /// Records a new approval request (pending), durably, and returns it with its id.
    pub async fn create_approval(&self, new: NewApproval) -> Result<ApprovalRow, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.create_approval(new).await,
            Backend::Postgres(store) => store.create_approval(new).await,
        }
    }

    /// One approval by id.
    pub async fn approval(&self, id: &str) -> Result<Option<ApprovalRow>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.approval(id).await,
            Backend::Postgres(store) => store.approval(id).await,
        }
    }

    /// Approvals, newest first.
    pub async fn list_approvals(&self, filter: &ApprovalFilter) -> Result<Vec<ApprovalRow>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.list_approvals(filter).await,
            Backend::Postgres(store) => store.list_approvals(filter).await,
        }
    }

    /// `voter` approves (or denies) approval `id` at `now` ([`ApprovalRow::vote`]); the outer error is the store's,
    /// the inner one why the vote was refused; `None` when there is no such approval. A pending request whose time
    /// ran out is marked expired on the way.
    pub async fn vote_on_approval(
        &self,
        id: &str,
        voter: Voter<'_>,
        approve: bool,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Result<Option<ApprovalRow>, VoteError>, StateError> {
        let change = |row: &mut ApprovalRow| {
            if row.status == ApprovalStatus::Pending && now >= row.expires_at {
                row.status = ApprovalStatus::Expired;
                return Ok(true);
            }
            row.vote(voter, approve, reason.map(str::to_string), now).map(|()| true)
        };
        let changed = match &self.backend {
            Backend::Sqlite(store) => store.change_approval(id, change).await?,
            Backend::Postgres(store) => store.change_approval(id, change).await?,
        };
        // An expiry found on the way is stored, and reported as the reason the vote was not taken.
        Ok(changed.and_then(|row| match row {
            Some(row) if row.status == ApprovalStatus::Expired => {
                Err(VoteError::Expired { id: row.id.clone(), expires_at: audit::timestamp(row.expires_at) })
            }
            other => Ok(other),
        }))
    }

    /// Takes (marks used) an approved, unused statement approval of `identity` on `connection` for exactly
    /// `fingerprint`, still within its time; `None` if there is none.
    pub async fn use_statement_approval(
        &self,
        identity: &str,
        connection: &str,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<ApprovalRow>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.use_statement_approval(identity, connection, fingerprint, now).await,
            Backend::Postgres(store) => store.use_statement_approval(identity, connection, fingerprint, now).await,
        }
    }

    /// A pending request of `identity` on `connection` for exactly `fingerprint`, if one is still waiting.
    pub async fn pending_statement_approval(
        &self,
        identity: &str,
        connection: &str,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<ApprovalRow>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.pending_statement_approval(identity, connection, fingerprint, now).await,
            Backend::Postgres(store) => store.pending_statement_approval(identity, connection, fingerprint, now).await,
        }
    }

    /// A grant in force for `identity` to do `action` on `connection`, covering `tables`.
    pub async fn active_grant(
        &self,
        identity: &str,
        connection: &str,
        action: &str,
        tables: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<ApprovalRow>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.active_grant(identity, connection, action, tables, now).await,
            Backend::Postgres(store) => store.active_grant(identity, connection, action, tables, now).await,
        }
    }

    /// Marks pending requests past their time as expired, and returns them.
    pub async fn expire_approvals(&self, now: OffsetDateTime) -> Result<Vec<ApprovalRow>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.expire_approvals(now).await,
            Backend::Postgres(store) => store.expire_approvals(now).await,
        }
    }

    /// Revocations with an id above `after`, oldest first.
    pub async fn revocations_after(&self, after: i64) -> Result<Vec<RevocationRow>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.revocations_after(after).await,
            Backend::Postgres(store) => store.revocations_after(after).await,
        }
    }

    /// One session's audit events (`session.start`, `statement`, `session.masked`, `session.end`, …) by chain and
    /// seq; with `after` (a chain and a seq), only that chain's events after it — for following a live session.
    pub async fn audit_events_for_session(
        &self,
        session_id: &str,
        after: Option<(&str, u64)>,
    ) -> Result<Vec<warden_audit::Sealed>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.audit_events_for_session(session_id, after).await,
            Backend::Postgres(store) => store.audit_events_for_session(session_id, after).await,
        }
    }

    /// What LLM requests used (those whose answer reported usage), per identity, connection, run, node and model,
    /// sorted by those.
    pub async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.usage(filter).await,
            Backend::Postgres(store) => store.usage(filter).await,
        }
    }

    /// Tokens (input + output) `identity` used on `connection` in LLM requests that started at or after `since`,
    /// through every gateway sharing the store: what a budget window has spent.
    pub async fn tokens_used(
        &self,
        connection: &str,
        identity: &str,
        since: OffsetDateTime,
    ) -> Result<u64, StateError> {
        let used = match &self.backend {
            Backend::Sqlite(store) => store.tokens_used(connection, Some(identity), since).await?,
            Backend::Postgres(store) => store.tokens_used(connection, Some(identity), since).await?,
        };
        Ok(used.get(identity).copied().unwrap_or(0))
    }

    /// [`StateStore::tokens_used`] of every identity that used tokens on `connection` since `since`, in one query.
    pub async fn tokens_used_by_identity(
        &self,
        connection: &str,
        since: OffsetDateTime,
    ) -> Result<std::collections::HashMap<String, u64>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.tokens_used(connection, None, since).await,
            Backend::Postgres(store) => store.tokens_used(connection, None, since).await,
        }
    }

    /// A session's statements in `seq` order.
    pub async fn statements(&self, session_id: &str) -> Result<Vec<StatementRow>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.statements(session_id).await,
            Backend::Postgres(store) => store.statements(session_id).await,
        }
    }
}

#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite(Store<Sqlite>),
    Postgres(Store<Postgres>),
}

impl Backend {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => Sqlite::NAME,
            Backend::Postgres(_) => Postgres::NAME,
        }
    }

    pub(crate) async fn write_batch(&self, batch: &Batch<'_>) -> Result<u64, sqlx::Error> {
        match self {
            Backend::Sqlite(store) => store.write_batch(batch).await,
            Backend::Postgres(store) => store.write_batch(batch).await,
        }
    }

    pub(crate) async fn write_start(&self, start: &SessionStart) -> Result<(), sqlx::Error> {
        match self {
            Backend::Sqlite(store) => store.write_start(start).await,
            Backend::Postgres(store) => store.write_start(start).await,
        }
    }

    pub(crate) async fn write_statement(&self, record: &StatementRecord) -> Result<(), sqlx::Error> {
        match self {
            Backend::Sqlite(store) => store.write_statement(record).await,
            Backend::Postgres(store) => store.write_statement(record).await,
        }
    }

    pub(crate) async fn write_end(&self, end: &SessionEnd) -> Result<(), sqlx::Error> {
        match self {
            Backend::Sqlite(store) => store.write_end(end).await,
            Backend::Postgres(store) => store.write_end(end).await,
        }
    }

    pub(crate) async fn write_audit(&self, sealed: &[warden_audit::Sealed]) -> Result<(), sqlx::Error> {
        match self {
            Backend::Sqlite(store) => store.write_audit(sealed).await,
            Backend::Postgres(store) => store.write_audit(sealed).await,
        }
    }

    pub(crate) async fn write_checkpoint(&self, checkpoint: &warden_audit::Checkpoint) -> Result<(), sqlx::Error> {
        match self {
            Backend::Sqlite(store) => store.write_checkpoint(checkpoint).await,
            Backend::Postgres(store) => store.write_checkpoint(checkpoint).await,
        }
    }

    pub(crate) async fn latest_checkpoints(&self) -> Result<Vec<warden_audit::Checkpoint>, StateError> {
        match self {
            Backend::Sqlite(store) => store.latest_checkpoints().await,
            Backend::Postgres(store) => store.latest_checkpoints().await,
        }
    }

    pub(crate) async fn prune_plan(
        &self,
        before: OffsetDateTime,
        signer: &dyn AuditSigner,
    ) -> Result<sql::PrunePlan, StateError> {
        match self {
            Backend::Sqlite(store) => store.prune_plan(before, signer).await,
            Backend::Postgres(store) => store.prune_plan(before, signer).await,
        }
    }

    pub(crate) async fn prune_delete(
        &self,
        before: OffsetDateTime,
        marks: &BTreeMap<String, sql::Mark>,
    ) -> Result<sql::Pruned, sqlx::Error> {
        match self {
            Backend::Sqlite(store) => store.prune_delete(before, marks).await,
            Backend::Postgres(store) => store.prune_delete(before, marks).await,
        }
    }

    pub(crate) async fn write_masked(&self, masked: &SessionMasked) -> Result<(), sqlx::Error> {
        match self {
            Backend::Sqlite(store) => store.write_masked(masked).await,
            Backend::Postgres(store) => store.write_masked(masked).await,
        }
    }
}

async fn open_sqlite(url: &str) -> Result<Store<Sqlite>, StateError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|source| StateError::InvalidUrl { url: redact_url(url), source })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        // Statement journals for the writer's multi-row INSERTs stay in memory: on disk SQLite creates,
        // writes and unlinks a temporary file for every batch (measured: ~60% of the writer's syscalls).
        .pragma("temp_store", "MEMORY");
    let file = options.get_filename();
    // An in-memory database ("sqlite::memory:") is named "file:…" and has no directory to create.
    if !file.as_os_str().to_string_lossy().starts_with("file:") {
        if let Some(directory) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(directory)
                .await
                .map_err(|source| StateError::CreateDirectory { path: directory.to_path_buf(), source })?;
        }
    }
    // WAL lets readers (the admin API) run beside the one writer; four connections are plenty.
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options.clone())
        .await
        .map_err(|source| StateError::Connect { url: redact_url(url), source })?;
    let migrate = |source| StateError::Migrate { backend: Sqlite::NAME, source };
    migrations::sqlite()
        .await
        .map_err(migrate)?
        .run(&pool)
        .await
        .map_err(|source| StateError::Migrate { backend: Sqlite::NAME, source })?;
    let writer = SqlitePoolOptions::new().max_connections(1).connect_lazy_with(options);
    Ok(Store { pool, writer })
}

async fn open_postgres(url: &str) -> Result<Store<Postgres>, StateError> {
    let options =
        PgConnectOptions::from_str(url).map_err(|source| StateError::InvalidUrl { url: redact_url(url), source })?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        // A store that is gone must fail a write within seconds: in sync mode the data path waits on it.
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options.clone())
        .await
        .map_err(|source| StateError::Connect { url: redact_url(url), source })?;
    let migrate = |source| StateError::Migrate { backend: Postgres::NAME, source };
    migrations::postgres()
        .await
        .map_err(migrate)?
        .run(&pool)
        .await
        .map_err(|source| StateError::Migrate { backend: Postgres::NAME, source })?;
    let writer =
        PgPoolOptions::new().max_connections(1).acquire_timeout(Duration::from_secs(3)).connect_lazy_with(options);
    Ok(Store { pool, writer })
}
