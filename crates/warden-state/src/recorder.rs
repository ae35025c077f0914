//! The data path's handle to the store ([`Recorder`]) and the background writer behind it.
//!
//! Recording never waits while the store keeps up: an event goes into a bounded queue. Once the queue is half full,
//! a statement waits: [`Recorder::statement_or_wait`] hands back a future that queues it once the writer has brought
//! the queue under half, and the data path holds the statement's answer until then, so it slows to what the store
//! can take instead of going on unrecorded (and the other half stays free for session starts and ends, and new
//! sessions are refused on a queue nine-tenths full). A session's start, end and masked counts and the audit events
//! of refusals are never dropped either: their `*_or_wait` methods hand back the wait for room when the queue is
//! full, which the session awaits. Events recorded through the plain methods are dropped and counted when the queue
//! is full. One writer task per recorder drains the queue in batches of up to
//! [`EVENTS_PER_BATCH`] events, gathered for at most [`LINGER`], and writes each batch in one
//! transaction. A batch the database refuses
//! (a duplicate statement, say) is written again event by event, so one bad row costs only itself.
//! Statements of a session the store does not know (its start was dropped) are skipped and counted
//! as write errors; ending an unknown session, or recording its masked counts, changes nothing. The
//! writer never stops on a failed write; it logs it (never a statement's text), counts it, and
//! carries on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::audit::{AuditSigner, AuditTap, Chain, CHECKPOINT_INTERVAL};
use crate::error::is_transient;
use crate::sql::Batch;
use crate::{Backend, RecordError, StateError};
use warden_audit::Sealed;

/// The most events the writer takes from the queue for one transaction.
pub(crate) const EVENTS_PER_BATCH: usize = 1000;

/// How long the writer lets a batch grow before committing it (a flush commits at once).
const LINGER: Duration = Duration::from_millis(10);

/// A client session that has just been accepted.
#[derive(Debug, Clone)]
pub struct SessionStart {
    pub id: String,
    pub identity: String,
    pub connection: String,
    pub client_address: String,
    pub user_name: String,
    pub application_name: Option<String>,
    pub started_at: OffsetDateTime,
    /// How the session authenticated: `api_key`, `warden_token`, `oidc`.
    pub credential: Option<String>,
    /// For a warden token: its id and workflow labels.
    pub token_id: Option<String>,
    pub run: Option<String>,
    pub node: Option<String>,
}

/// One statement a session ran, recorded once it finished.
#[derive(Debug, Clone)]
pub struct StatementRecord {
    /// Shared with the session's other records: recording a statement copies no strings.
    pub session_id: std::sync::Arc<str>,
    /// The statement's position in its session, from 1 (or 0); unique per session.
    pub seq: u64,
    pub started_at: OffsetDateTime,
    pub duration: Duration,
    pub text: std::sync::Arc<str>,
    pub rows: Option<u64>,
    pub error: Option<String>,
    /// What warden decided before forwarding it; shared by every statement judged the same way.
    pub decision: Option<std::sync::Arc<crate::Decision>>,
    /// The first rows of its result, masked, for the audit log alone: `{"cut": n, "sets": [{"columns": [...] |
    /// null, "rows": [[...]]}]}` (`cut`: rows not kept), written by the data path straight into its canonical text.
    pub result: Option<warden_audit::Body>,
    /// For an HTTP request, what the audit log keeps of it beyond the text (`POST /v1/chat/completions`): status,
    /// model, usage, the masked and capped prompt and answer, latencies. Absent from the event otherwise.
    pub http: Option<serde_json::Value>,
    /// For an LLM request: the model it asked for. Stored in its own column, for usage accounting.
    pub model: Option<String>,
    /// For an LLM request whose answer reported usage: the tokens the provider counted. Stored in their own columns,
    /// for usage accounting and budgets ([`crate::StateStore::usage`], [`crate::StateStore::tokens_used`]).
    pub tokens: Option<Tokens>,
    /// For an HTTP request that read a batch's results whole: the batch, whose tokens (in `tokens`) count once. A
    /// later read of the same results is written without its tokens.
    pub batch: Option<BatchResults>,
}

/// A batch whose results an HTTP request read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResults {
    /// `<api>:<id>`: the Anthropic batch, or the OpenAI batch's output file.
    pub key: String,
    /// How many of its requests reported usage.
    pub requests: u64,
}

/// The tokens one LLM request used, as its provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tokens {
    /// Prompt (input) tokens.
    pub input: u64,
    /// Completion (output) tokens.
    pub output: u64,
}

impl Tokens {
    /// Input and output together: what a budget counts.
    pub fn total(self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// The end of a session.
#[derive(Debug, Clone)]
pub(crate) struct SessionEnd {
    pub(crate) id: String,
    pub(crate) ended_at: OffsetDateTime,
    pub(crate) end_reason: Option<String>,
}

/// A session's masked-value counts by detector, replacing any recorded before.
#[derive(Debug, Clone)]
pub(crate) struct SessionMasked {
    pub(crate) id: String,
    /// The counts as stored: a JSON object, or `None` (stored as NULL) when nothing was masked.
    pub(crate) masked: Option<String>,
}

/// An event for the audit log alone (it has no session table of its own): a refused session, a revocation, a
/// token issued, a policy reload.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// `session.refused`, `revocation`, `token.issued`, `policy.reload`…
    pub kind: &'static str,
    pub at: OffsetDateTime,
    pub session: Option<String>,
    pub identity: Option<String>,
    pub connection: Option<String>,
    pub run: Option<String>,
    pub node: Option<String>,
    /// Kind-specific details; never a secret.
    pub body: serde_json::Value,
}

impl AuditRecord {
    pub fn new(kind: &'static str, body: serde_json::Value) -> AuditRecord {
        AuditRecord {
            kind,
            at: OffsetDateTime::now_utc(),
            session: None,
            identity: None,
            connection: None,
            run: None,
            node: None,
            body,
        }
    }
}

pub(crate) enum Event {
    Audit(AuditRecord),
    Started(SessionStart),
    Statement(StatementRecord),
    Ended(SessionEnd),
    Masked(SessionMasked),
    /// Answered, with the number of events that failed since the previous flush, once every event
    /// queued before it is committed.
    Flush(oneshot::Sender<u64>),
    /// Answered once the batch holding it (and so every event queued before it) is committed: whether every event
    /// since the previous durable marker was stored. Unlike a flush, it does not ask for a checkpoint.
    Durable(oneshot::Sender<bool>),
    /// A pruning pass, run by the writer once the batch holding it is written.
    Prune(crate::prune::PruneRequest),
}

/// What the recorders and their writer share.
#[derive(Default)]
struct Shared {
    dropped_events: AtomicU64,
    write_errors: AtomicU64,
    /// Cuts the writer's [`LINGER`] short: a flush is queued, or the queue is more than half full.
    hurry: Notify,
    /// Statements waiting for room in the queue: while any wait, new ones wait too.
    waiting: AtomicUsize,
    /// Woken each time the writer has taken a batch from the queue.
    room: Notify,
}

/// An event waiting for room in the queue (see [`Recorder::statement_or_wait`],
/// [`Recorder::session_started_or_wait`]): resolves once it is queued, or fails when the writer is gone.
pub type RecordWait = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StateError>> + Send + 'static>>;

/// Counts a waiting statement for as long as it waits, however its wait ends (queued, or dropped with its session).
struct WaitingGuard(Arc<Shared>);

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The handle the data path records sessions and statements through; cheap to clone.
///
/// Made by [`crate::StateStore::recorder`]. The writer task stops once every clone is dropped,
/// after storing what was queued.
#[derive(Clone)]
pub struct Recorder {
    sender: mpsc::Sender<Event>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("queued", &(self.sender.max_capacity() - self.sender.capacity()))
            .field("capacity", &self.sender.max_capacity())
            .field("dropped_events", &self.dropped_events())
            .field("write_errors", &self.write_errors())
            .finish()
    }
}

impl Recorder {
    /// Starts the writer task on the current tokio runtime; `capacity` (at least 1) bounds the queue.
    pub(crate) fn start(
        backend: Backend,
        capacity: usize,
        signer: Option<Arc<dyn AuditSigner>>,
        tap: Option<Arc<dyn AuditTap>>,
    ) -> Recorder {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let shared = Arc::new(Shared::default());
        tokio::spawn(run_writer(backend, receiver, Arc::clone(&shared), Chain::new(signer), tap));
        Recorder { sender, shared }
    }

    /// Records that a session started. Never blocks; see [`RecordError`] for when the event is dropped.
    pub fn session_started(&self, start: SessionStart) -> Result<(), RecordError> {
        self.send(Event::Started(start))
    }

    /// Records that a session ended. Never blocks; see [`RecordError`] for when the event is dropped.
    pub fn session_ended(
        &self,
        id: &str,
        ended_at: OffsetDateTime,
        end_reason: Option<String>,
    ) -> Result<(), RecordError> {
        self.send(Self::ended_event(id, ended_at, end_reason))
    }

    /// Records that a session started, without ever dropping it: queued at once when the queue has room (`Ok`);
    /// otherwise the future that queues it once it has (`Err`), which the caller awaits before the session goes on,
    /// so a session's start always precedes its statements. Fails only when the writer is gone.
    pub fn session_started_or_wait(&self, start: SessionStart) -> Result<(), RecordWait> {
        self.or_wait(Event::Started(start))
    }

    /// Records that a session ended, without ever dropping it (see [`Recorder::session_started_or_wait`]).
    pub fn session_ended_or_wait(
        &self,
        id: &str,
        ended_at: OffsetDateTime,
        end_reason: Option<String>,
    ) -> Result<(), RecordWait> {
        self.or_wait(Self::ended_event(id, ended_at, end_reason))
    }

    /// Records a session's masked counts (see [`Recorder::session_masked`]) without ever dropping them (see
    /// [`Recorder::session_started_or_wait`]).
    pub fn session_masked_or_wait(&self, id: &str, masked: BTreeMap<String, u64>) -> Result<(), RecordWait> {
        self.or_wait(Self::masked_event(id, masked))
    }

    /// Appends an event to the audit log alone, without ever dropping it (see [`Recorder::session_started_or_wait`]).
    pub fn audit_or_wait(&self, record: AuditRecord) -> Result<(), RecordWait> {
        self.or_wait(Event::Audit(record))
    }

    /// Appends an event to the audit log alone, waiting for room in a full queue (see [`Recorder::audit_or_wait`]).
    pub async fn audit_when_room(&self, record: AuditRecord) -> Result<(), StateError> {
        match self.audit_or_wait(record) {
            Ok(()) => Ok(()),
            Err(wait) => wait.await,
        }
    }

    /// Records how many values were masked in a session, by detector name (`email`, `us_ssn`, `column`, …),
    /// replacing the counts recorded before; an empty map clears them. Events of one recorder are applied in the
    /// order they were recorded. Never blocks; see [`RecordError`] for when the event is dropped.
    pub fn session_masked(&self, id: &str, masked: BTreeMap<String, u64>) -> Result<(), RecordError> {
        self.send(Self::masked_event(id, masked))
    }

    fn ended_event(id: &str, ended_at: OffsetDateTime, end_reason: Option<String>) -> Event {
        Event::Ended(SessionEnd { id: id.to_string(), ended_at, end_reason })
    }

    fn masked_event(id: &str, masked: BTreeMap<String, u64>) -> Event {
        let masked = (!masked.is_empty())
            .then(|| serde_json::to_string(&masked).expect("a map of strings to integers always serializes"));
        Event::Masked(SessionMasked { id: id.to_string(), masked })
    }

    /// Waits until everything recorded through this recorder before the call is committed (`audit.durability =
    /// sync`): the batch is committed at once, without the usual linger, together with whatever else is queued.
    /// Fails when the queue is full, the writer is gone, or an event of that batch could not be stored.
    pub fn durable(&self) -> impl std::future::Future<Output = Result<(), StateError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self.send(Event::Durable(reply));
        self.shared.hurry.notify_one();
        async move {
            match sent {
                Err(RecordError::QueueFull) => return Err(StateError::QueueFull),
                Err(RecordError::WriterStopped) => return Err(StateError::WriterStopped),
                Ok(()) => {}
            }
            match answer.await {
                Ok(true) => Ok(()),
                Ok(false) => Err(StateError::WritesFailed { failed: 1 }),
                Err(_) => Err(StateError::WriterStopped),
            }
        }
    }

    /// Whether the queue has room for a new session's events: less than nine tenths full (`audit.durability =
    /// async` refuses new sessions otherwise).
    pub fn has_room(&self) -> bool {
        self.sender.capacity() * 10 > self.sender.max_capacity()
    }

    /// Appends an event to the audit log alone. Never blocks; see [`RecordError`] for when the event is dropped.
    pub fn audit(&self, record: AuditRecord) -> Result<(), RecordError> {
        self.send(Event::Audit(record))
    }

    /// Records one finished statement. Never blocks; see [`RecordError`] for when the event is dropped.
    pub fn statement(&self, record: StatementRecord) -> Result<(), RecordError> {
        self.send(Event::Statement(record))
    }

    /// Records one finished statement without ever dropping it: queued at once when the queue is less than half
    /// full and no other statement is waiting (`Ok`); otherwise the future that queues it once the writer has
    /// brought the queue under half (`Err`). The caller holds the statement's answer until the future resolves, and
    /// awaits its statements' futures in order, so each session's records stay in order.
    pub fn statement_or_wait(&self, record: StatementRecord) -> Result<(), RecordWait> {
        let mut event = Event::Statement(record);
        if self.shared.waiting.load(Ordering::Acquire) == 0 && self.below_half() {
            match self.sender.try_send(event) {
                Ok(()) => {
                    self.hurry_if_filling();
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Full(returned)) => event = returned,
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.writer_stopped()),
            }
        }
        self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        let guard = WaitingGuard(self.shared.clone());
        self.shared.hurry.notify_one();
        let recorder = self.clone();
        Err(Box::pin(async move {
            loop {
                let room = recorder.shared.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                if recorder.below_half() || recorder.sender.is_closed() {
                    break;
                }
                room.await;
            }
            let sent = recorder.sender.send(event).await.map_err(|_| StateError::WriterStopped);
            drop(guard);
            sent
        }))
    }

    /// Whether the queue is less than half full.
    fn below_half(&self) -> bool {
        self.sender.capacity() * 2 > self.sender.max_capacity()
    }

    /// Statements waiting for room in the queue now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Acquire)
    }

    /// Waits until everything recorded (through any clone) before this call is committed to the store.
    ///
    /// Fails with [`StateError::WritesFailed`] if some of those events could not be stored since the
    /// previous flush, and with [`StateError::WriterStopped`] if the writer task is gone.
    pub async fn flush(&self) -> Result<(), StateError> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Event::Flush(reply)).await.map_err(|_| StateError::WriterStopped)?;
        self.shared.hurry.notify_one();
        match answer.await {
            Ok(0) => Ok(()),
            Ok(failed) => Err(StateError::WritesFailed { failed }),
            Err(_) => Err(StateError::WriterStopped),
        }
    }

    /// Runs a retention pass on the writer (ordered with this recorder's chain): deletes the sessions that ended
    /// before `before`, and each audit chain's events and checkpoints up to its latest checkpoint before it, after
    /// appending an `audit.pruned` event that names how far every chain is pruned and sealing it with a checkpoint
    /// (see [`crate::PruneReport`]). Needs an audited recorder ([`crate::StateStore::audited_recorder`]). Waits for room
    /// in the queue.
    pub async fn prune(&self, before: OffsetDateTime) -> Result<crate::PruneReport, StateError> {
        let (reply, answer) = oneshot::channel();
        let request = crate::prune::PruneRequest { before, reply };
        self.sender.send(Event::Prune(request)).await.map_err(|_| StateError::WriterStopped)?;
        self.shared.hurry.notify_one();
        answer.await.map_err(|_| StateError::WriterStopped)?
    }

    /// Events refused because the queue was full or the writer had stopped.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped_events.load(Ordering::Relaxed)
    }

    /// Events the writer took from the queue but could not store.
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// After queueing an event: hurries the writer once the queue is more than half full. Two atomic loads; the
    /// notification itself is rare (only under load) and lock-free unless the writer is waiting on it.
    fn hurry_if_filling(&self) {
        if self.sender.capacity() * 2 < self.sender.max_capacity() {
            self.shared.hurry.notify_one();
        }
    }

    /// Queues an event other than a statement: at once when the queue has room at all (statements leave its upper
    /// half to such events), otherwise the wait for room, in the queue's first-come order.
    fn or_wait(&self, event: Event) -> Result<(), RecordWait> {
        let event = match self.sender.try_send(event) {
            Ok(()) => {
                self.hurry_if_filling();
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Full(event)) => event,
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.writer_stopped()),
        };
        self.shared.hurry.notify_one();
        let sender = self.sender.clone();
        let shared = self.shared.clone();
        Err(Box::pin(async move {
            sender.send(event).await.map_err(|_| {
                shared.dropped_events.fetch_add(1, Ordering::Relaxed);
                StateError::WriterStopped
            })
        }))
    }

    /// An event that cannot be queued because the writer is gone: counted as dropped, and the wait fails at once.
    fn writer_stopped(&self) -> RecordWait {
        self.shared.dropped_events.fetch_add(1, Ordering::Relaxed);
        Box::pin(std::future::ready(Err(StateError::WriterStopped)))
    }

    fn send(&self, event: Event) -> Result<(), RecordError> {
        let error = match self.sender.try_send(event) {
            Ok(()) => {
                self.hurry_if_filling();
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Full(_)) => RecordError::QueueFull,
            Err(mpsc::error::TrySendError::Closed(_)) => RecordError::WriterStopped,
        };
        self.shared.dropped_events.fetch_add(1, Ordering::Relaxed);
        Err(error)
    }
}

async fn run_writer(
    backend: Backend,
    mut receiver: mpsc::Receiver<Event>,
    shared: Arc<Shared>,
    mut chain: Chain,
    tap: Option<Arc<dyn AuditTap>>,
) {
    match backend.latest_checkpoints().await {
        Ok(previous) => chain.set_previous(previous),
        // The chain then cannot vouch for the others; its own events are still sealed.
        Err(error) => tracing::error!(backend = backend.name(), %error, "cannot read the audit checkpoints"),
    }
    let mut events = Vec::with_capacity(EVENTS_PER_BATCH);
    let mut failed_since_flush = 0;
    let mut failed_since_durable = 0;
    loop {
        // Sealed events wait at most CHECKPOINT_INTERVAL for their checkpoint, even when recording stops.
        let wait = (chain.unsealed() > 0).then_some(CHECKPOINT_INTERVAL);
        let open = gather(&mut receiver, &mut events, &shared.hurry, wait).await;
        shared.room.notify_waiters();
        let prunes = take_prunes(&mut events);
        let flush = !open || events.iter().any(|event| matches!(event, Event::Flush(_)));
        let (mut failed, committed) = write_events(&backend, &events, &mut chain).await;
        if let (Some(tap), false) = (&tap, committed.is_empty()) {
            tap.committed(&committed);
        }
        // A durable marker vouches for every event queued before it, which may have been in an earlier batch.
        failed_since_durable += failed;
        if let Some(checkpoint) = chain.checkpoint_due(flush) {
            match backend.write_checkpoint(&checkpoint).await {
                Ok(()) => {
                    chain.checkpointed(&checkpoint);
                    if let Some(tap) = &tap {
                        tap.checkpointed(&checkpoint);
                    }
                }
                Err(error) => {
                    tracing::error!(backend = backend.name(), %error, "cannot store an audit checkpoint");
                    failed += 1;
                }
            }
        }
        if failed > 0 {
            shared.write_errors.fetch_add(failed, Ordering::Relaxed);
            failed_since_flush += failed;
        }
        let mut answered_a_flush = false;
        let mut answered_a_durable = false;
        for event in events.drain(..) {
            match event {
                Event::Flush(reply) => {
                    // The flusher may have given up waiting; nothing to do then.
                    let _ = reply.send(failed_since_flush);
                    answered_a_flush = true;
                }
                Event::Durable(reply) => {
                    let _ = reply.send(failed_since_durable == 0);
                    answered_a_durable = true;
                }
                _ => {}
            }
        }
        if answered_a_flush {
            failed_since_flush = 0;
        }
        if answered_a_durable {
            failed_since_durable = 0;
        }
        for request in prunes {
            let result = crate::prune::run(&backend, &mut chain, tap.as_ref(), request.before).await;
            let _ = request.reply.send(result);
        }
        if !open {
            break;
        }
    }
    tracing::debug!(backend = backend.name(), "state writer stopped: every recorder is gone");
}

/// Waits for the next events and lets a small batch grow for up to [`LINGER`], unless a flush is
/// waiting or the queue is filling up. With `wait`, returns (with no events) once that long has passed
/// without any. Returns false once every recorder is gone and the queue is empty.
///
/// Each transaction has a fixed cost (begin, commit, a few round trips to SQLite's worker thread)
/// that dwarfs a few rows' worth of inserts: measured here at 20,000 statements per second, a writer
/// committing ~20-row batches spent ~12 µs of CPU per statement, one lingering 10 ms ~2.5 µs. The
/// writer sleeps through the linger rather than waking for every event.
async fn gather(
    receiver: &mut mpsc::Receiver<Event>,
    events: &mut Vec<Event>,
    hurry: &Notify,
    wait: Option<Duration>,
) -> bool {
    let received = match wait {
        None => receiver.recv_many(events, EVENTS_PER_BATCH).await,
        Some(wait) => match tokio::time::timeout(wait, receiver.recv_many(events, EVENTS_PER_BATCH)).await {
            Ok(received) => received,
            Err(_) => return true,
        },
    };
    if received == 0 {
        return false;
    }
    let flush_waiting =
        |events: &[Event]| events.iter().any(|event| matches!(event, Event::Flush(_) | Event::Durable(_)));
    if events.len() < EVENTS_PER_BATCH && !flush_waiting(events) {
        tokio::select! {
            () = tokio::time::sleep(LINGER) => {}
            // A flush sends its event before notifying, so the drain below picks it up; a half-full
            // queue must be drained before recording has to drop events.
            () = hurry.notified() => {}
        }
        while events.len() < EVENTS_PER_BATCH && !receiver.is_empty() {
            // Returns at once: the queue is not empty.
            receiver.recv_many(events, EVENTS_PER_BATCH - events.len()).await;
        }
    }
    true
}

/// Takes the pruning passes out of a batch (they run after it is written); allocates only when there is one.
fn take_prunes(events: &mut Vec<Event>) -> Vec<crate::prune::PruneRequest> {
    if !events.iter().any(|event| matches!(event, Event::Prune(_))) {
        return Vec::new();
    }
    let mut prunes = Vec::new();
    for event in std::mem::take(events) {
        match event {
            Event::Prune(request) => prunes.push(request),
            other => events.push(other),
        }
    }
    prunes
}

/// Stores one batch; returns how many of its events could not be stored, and the audit events committed.
async fn write_events(backend: &Backend, events: &[Event], chain: &mut Chain) -> (u64, Vec<Sealed>) {
    let pending = chain.seal(events);
    let mut batch = Batch {
        audit: &pending.sealed,
        starts: Vec::new(),
        statements: Vec::with_capacity(events.len()),
        masked: Vec::new(),
        ends: Vec::new(),
    };
    for event in events {
        match event {
            Event::Started(start) => batch.starts.push(start),
            Event::Statement(record) => batch.statements.push(record),
            Event::Ended(end) => batch.ends.push(end),
            Event::Masked(masked) => batch.masked.push(masked),
            Event::Audit(_) | Event::Flush(_) | Event::Durable(_) => {}
            Event::Prune(_) => {}
        }
    }
    let table_events = batch.starts.len() + batch.statements.len() + batch.masked.len() + batch.ends.len();
    if table_events == 0 && pending.sealed.is_empty() {
        return (0, Vec::new());
    }
    // Every event of the batch, the audit-only ones included (a lost batch loses them all).
    let stored_events = events.iter().filter(|event| !matches!(event, Event::Flush(_) | Event::Durable(_))).count();
    let result = backend.write_batch(&batch).await;
    drop(batch);
    match result {
        Ok(orphaned) => {
            let committed = chain.commit(pending);
            if orphaned > 0 {
                tracing::error!(
                    backend = backend.name(),
                    statements = orphaned,
                    "statements of sessions the state store does not know were not stored; \
                     their session start was probably dropped (the audit log has them)"
                );
            }
            (orphaned, committed)
        }
        Err(error) if is_transient(&error) => {
            tracing::error!(
                backend = backend.name(),
                events = stored_events,
                %error,
                "cannot reach the state store; a batch of recorded events is lost"
            );
            (stored_events as u64, Vec::new())
        }
        Err(error) => {
            tracing::warn!(
                backend = backend.name(),
                events = stored_events,
                %error,
                "the state store refused a batch; storing its events one by one"
            );
            // The audit log first, on its own: it is the record that must not lose an event.
            let mut failed = 0;
            let committed = match backend.write_audit(&pending.sealed).await {
                Ok(()) => chain.commit(pending),
                Err(error) => {
                    tracing::error!(backend = backend.name(), %error, "cannot store a batch of audit events");
                    failed += pending.sealed.len() as u64;
                    Vec::new()
                }
            };
            (failed + write_one_by_one(backend, events).await, committed)
        }
    }
}

/// The slow path: each event in its own transaction, in recording order, so only bad ones fail.
async fn write_one_by_one(backend: &Backend, events: &[Event]) -> u64 {
    let mut failed = 0;
    let mut unreachable = false;
    for event in events {
        let (result, kind, session_id, seq) = match event {
            // Audit-only events were written with the batch's audit rows.
            Event::Flush(_) | Event::Durable(_) | Event::Audit(_) => continue,
            Event::Prune(_) => continue,
            _ if unreachable => {
                failed += 1;
                continue;
            }
            Event::Started(start) => (backend.write_start(start).await, "session start", start.id.as_str(), None),
            Event::Statement(record) => {
                (backend.write_statement(record).await, "statement", &*record.session_id, Some(record.seq))
            }
            Event::Ended(end) => (backend.write_end(end).await, "session end", end.id.as_str(), None),
            Event::Masked(masked) => {
                (backend.write_masked(masked).await, "session masked counts", masked.id.as_str(), None)
            }
        };
        if let Err(error) = result {
            failed += 1;
            unreachable = is_transient(&error);
            // The statement's text and error are left out: they may hold personal data.
            tracing::error!(
                backend = backend.name(),
                event = kind,
                session_id = %session_id,
                seq,
                %error,
                "cannot store a recorded event"
            );
        }
    }
    failed
}
