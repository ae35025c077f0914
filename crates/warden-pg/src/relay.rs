//! The relay: both directions of an established session, message-framed, forwarding whole read buffers.
//!
//! Each direction reads into one buffer, walks the message headers in it, decodes only the messages that
//! statement tracking needs (Query, Parse, Bind, Execute, Sync, Close from the client; ParseComplete,
//! CommandComplete, EmptyQueryResponse, PortalSuspended, ErrorResponse, ReadyForQuery from the server), and writes the
//! processed bytes on with one write. Other messages, however large, stream through without being held
//! whole. The two directions run concurrently so neither side's backpressure can deadlock the other.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::backend::Severity;
use crate::codec::frontend::BindParameters;
use crate::codec::{self, backend, frontend, CodecError};
use crate::hooks::{
    Annotation, Deferral, DeferredStatement, Durable, Ending, Judgement, Notices, ResponseMasking, SessionHooks,
    SessionInfo, StatementEvent, StatementGuard,
};
use crate::mask::{self, CopyOut, PortalShapes, SessionMasking, Shape};
use crate::sample::Sampler;

/// Bytes requested from the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// Requests (Query, Execute, Sync) a client may have in flight before warden ends the session: each costs
/// warden a little memory until the server answers, and a client that pipelines without ever reading
/// would otherwise grow that without bound.
const MAX_IN_FLIGHT: usize = 100_000;

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The client sent Terminate.
    ClientTerminated,
    /// The client closed its socket without Terminate.
    ClientClosed,
    /// The upstream closed its socket (e.g. after a FATAL error, or shutdown).
    UpstreamClosed,
    /// A client message broke the protocol or a limit; the client gets a FATAL error with this text.
    ClientProtocol(CodecError),
    /// The upstream sent something warden could not frame.
    UpstreamProtocol(CodecError),
    /// The gateway is shutting down.
    Stopped,
    /// warden ended the session (revocation, credential expiry); the client gets this FATAL error.
    Ended(crate::hooks::Ending),
    ClientIo(io::Error),
    UpstreamIo(io::Error),
}

impl RelayEnd {
    pub fn describe(&self) -> String {
        match self {
            RelayEnd::ClientTerminated => "client terminated".into(),
            RelayEnd::ClientClosed => "client closed the connection".into(),
            RelayEnd::UpstreamClosed => "upstream closed the connection".into(),
            RelayEnd::ClientProtocol(error) => format!("client protocol error: {error}"),
            RelayEnd::UpstreamProtocol(error) => format!("upstream protocol error: {error}"),
            RelayEnd::Stopped => "gateway shutting down".into(),
            RelayEnd::Ended(ending) => format!("ended by warden: {}", ending.message),
            RelayEnd::ClientIo(error) => format!("client connection error: {error}"),
            RelayEnd::UpstreamIo(error) => format!("upstream connection error: {error}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingKind {
    /// A simple-protocol Query (or FunctionCall): completes at ReadyForQuery.
    Query,
    /// An extended-protocol Execute: completes at CommandComplete, EmptyQueryResponse, PortalSuspended or error.
    Execute,
    /// An extended-protocol Parse: dropped at ParseComplete, recorded only when the server refuses it (a
    /// statement that never ran still belongs in the record).
    Parse,
    /// A Sync: its ReadyForQuery ends the batch.
    Sync,
    /// A Describe (tracked only when masking): its RowDescription or NoData gives a portal's result columns.
    /// `injected`: warden sent it (the client did not describe the portal), so its answer is not forwarded.
    Describe { portal: bool, injected: bool },
}

struct Pending {
    kind: PendingKind,
    text: Arc<str>,
    /// The portal an Execute or a Describe names, when masking needs it.
    target: Option<Arc<str>>,
    started: Instant,
    started_at: OffsetDateTime,
    rows: Option<u64>,
    error: Option<String>,
    annotation: Option<Annotation>,
    refusal: Option<Refused>,
}

/// A refused statement on its way: the upstream was sent a stand-in that fails, and its error is replaced by
/// this one, so the refusal reaches the client in order and the upstream's transaction state matches it.
struct Refused {
    /// The ErrorResponse the client gets.
    response: Vec<u8>,
    /// `SQLSTATE: message`, for the record.
    summary: String,
}

/// The stand-in sent upstream for a refused statement: it fails to parse, so it does nothing but fail
/// (aborting a transaction block, or the rest of an extended-protocol batch, as a refusal by the server would).
const STAND_IN: &str = "warden refused this statement";

impl Refused {
    fn new(code: &'static str, message: &str) -> Self {
        let mut response = Vec::new();
        backend::error_response(&mut response, Severity::Error, code, message, None);
        Refused { response, summary: format!("{code}: {message}") }
    }
}

/// The statements sent but not yet answered, shared by the two directions.
#[derive(Default)]
struct Tracker {
    queue: VecDeque<Pending>,
    next_seq: u64,
}

impl Tracker {
    fn push(&mut self, kind: PendingKind, text: Arc<str>) -> Result<(), CodecError> {
        self.push_judged(kind, text, Judgement::default()).map(|_| ())
    }

    /// Queues a judged request; returns whether it was refused.
    fn push_judged(&mut self, kind: PendingKind, text: Arc<str>, judgement: Judgement) -> Result<bool, CodecError> {
        if self.queue.len() >= MAX_IN_FLIGHT {
            return Err(CodecError::LimitExceeded {
                what: "requests in flight without a response (pipeline depth)",
                limit: MAX_IN_FLIGHT,
            });
        }
        self.queue.push_back(Pending {
            kind,
            text,
            target: None,
            started: Instant::now(),
            started_at: OffsetDateTime::now_utc(),
            rows: None,
            error: None,
            annotation: judgement.annotation,
            refusal: judgement.refusal.map(|refusal| Refused::new(refusal.code, &refusal.message)),
        });
        Ok(self.queue.back().is_some_and(|pending| pending.refusal.is_some()))
    }

    /// Queues a request naming a portal (masking tracks which result columns each portal has).
    fn push_targeted(
        &mut self,
        kind: PendingKind,
        text: Arc<str>,
        target: &str,
        annotation: Option<Annotation>,
    ) -> Result<(), CodecError> {
        self.push_judged(kind, text, Judgement { annotation, ..Judgement::default() })?;
        if let Some(back) = self.queue.back_mut() {
            back.target = Some(Arc::from(target));
        }
        Ok(())
    }

    fn finish(&mut self, pending: Pending) -> StatementEvent {
        self.next_seq += 1;
        StatementEvent {
            seq: self.next_seq,
            started_at: pending.started_at,
            duration: pending.started.elapsed(),
            text: pending.text,
            rows: pending.rows,
            error: pending.error,
            annotation: pending.annotation,
            result: None,
        }
    }

    /// The statements still in flight when the session ended (the client left right after an error, before the
    /// server's ReadyForQuery; warden ended the session mid-query), finished with what is known of them.
    fn unfinished(&mut self) -> Vec<StatementEvent> {
        let mut events = Vec::new();
        while let Some(mut pending) = self.queue.pop_front() {
            let recorded = match pending.kind {
                PendingKind::Query | PendingKind::Execute => true,
                // A Parse is recorded when it runs, unless warden refused it.
                PendingKind::Parse => pending.refusal.is_some(),
                PendingKind::Sync | PendingKind::Describe { .. } => false,
            };
            if !recorded {
                continue;
            }
            if let Some(refused) = pending.refusal.take() {
                pending.error.get_or_insert(refused.summary);
            }
            if pending.rows.is_none() {
                pending.error.get_or_insert_with(|| "the session ended before the statement completed".to_string());
            }
            events.push(self.finish(pending));
        }
        events
    }

    /// Drops the extended-protocol requests in front of the next Sync (or simple Query).
    fn drop_until_sync(&mut self) {
        while self.queue.front().is_some_and(|next| {
            matches!(next.kind, PendingKind::Execute | PendingKind::Parse | PendingKind::Describe { .. })
        }) {
            self.queue.pop_front();
        }
    }

    /// Applies one tracked server message; returns a completed statement, if any, and what to send the
    /// client instead of the message when it answers a refused statement.
    fn on_server_message(&mut self, tag: u8, message: &[u8]) -> (Option<StatementEvent>, Option<Vec<u8>>) {
        if tag == backend::ERROR_RESPONSE {
            if let Some(refused) = self.queue.front_mut().and_then(|front| front.refusal.take()) {
                let event = self.on_error(refused.summary);
                return (event, Some(refused.response));
            }
        }
        (self.on_tracked_message(tag, message), None)
    }

    fn on_error(&mut self, error: String) -> Option<StatementEvent> {
        // A Describe is never what failed on its own account in a way worth recording: the request it describes is.
        while self.queue.front().is_some_and(|front| matches!(front.kind, PendingKind::Describe { .. })) {
            self.queue.pop_front();
        }
        let front = self.queue.front_mut()?;
        match front.kind {
            PendingKind::Query => {
                front.error = Some(error);
                None
            }
            PendingKind::Execute | PendingKind::Parse => {
                let mut pending = self.queue.pop_front().expect("front exists");
                pending.error = Some(error);
                // The server skips everything up to the next Sync: those requests get no answer.
                self.drop_until_sync();
                Some(self.finish(pending))
            }
            PendingKind::Sync | PendingKind::Describe { .. } => None,
        }
    }

    fn on_tracked_message(&mut self, tag: u8, message: &[u8]) -> Option<StatementEvent> {
        match tag {
            backend::COMMAND_COMPLETE => {
                let rows = backend::command_complete_rows(message);
                let front = self.queue.front_mut()?;
                match front.kind {
                    PendingKind::Query => {
                        if let Some(rows) = rows {
                            front.rows = Some(front.rows.unwrap_or(0) + rows);
                        }
                        None
                    }
                    PendingKind::Execute => {
                        let mut pending = self.queue.pop_front().expect("front exists");
                        pending.rows = rows;
                        Some(self.finish(pending))
                    }
                    PendingKind::Sync | PendingKind::Parse | PendingKind::Describe { .. } => None,
                }
            }
            backend::PARSE_COMPLETE => {
                if self.queue.front()?.kind == PendingKind::Parse {
                    // An allowed Parse is recorded when it runs (Execute), not here.
                    self.queue.pop_front();
                }
                None
            }
            backend::EMPTY_QUERY_RESPONSE | backend::PORTAL_SUSPENDED => {
                if self.queue.front()?.kind == PendingKind::Execute {
                    let pending = self.queue.pop_front().expect("front exists");
                    Some(self.finish(pending))
                } else {
                    None
                }
            }
            backend::ERROR_RESPONSE => {
                let error = match backend::error_fields(message) {
                    Ok(fields) => format!("{}: {}", fields.code, fields.message),
                    Err(_) => "malformed error response".to_string(),
                };
                self.on_error(error)
            }
            backend::READY_FOR_QUERY => {
                // Requests still queued before a Sync were skipped after an error.
                self.drop_until_sync();
                let pending = self.queue.pop_front()?;
                match pending.kind {
                    PendingKind::Query => Some(self.finish(pending)),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// What a relay needs besides the two legs.
pub struct RelayContext<'a> {
    pub session: &'a SessionInfo,
    pub hooks: &'a dyn SessionHooks,
    /// Largest message accepted from the client.
    pub max_message_bytes: usize,
    /// Bytes the upstream sent right after its first ReadyForQuery, to relay before reading more.
    pub upstream_early_bytes: &'a [u8],
    /// Ends the relay when it turns true.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Ends the relay with this ending when one is sent (revocation).
    pub ending: tokio::sync::watch::Receiver<Option<crate::hooks::Ending>>,
    /// Ends the relay at this instant (credential expiry), with this ending.
    pub deadline: Option<(tokio::time::Instant, crate::hooks::Ending)>,
    /// Judges each query, Parse and function call before it is forwarded.
    pub guard: Box<dyn StatementGuard>,
    /// Masks what the upstream sends; `None`: relayed as is.
    pub masking: Option<Box<dyn ResponseMasking>>,
    /// Largest upstream message held whole to be masked (limits.max_row_bytes).
    pub max_row_bytes: usize,
    /// Notified when the client sends a CancelRequest: a held statement stops waiting.
    pub canceled: Arc<tokio::sync::Notify>,
}

/// Relays an established session until either side ends it. Each leg is a (read, write) pair.
pub async fn relay<CR, CW, UR, UW>(
    (client_read, client_write): (&mut CR, &mut CW),
    (upstream_read, upstream_write): (&mut UR, &mut UW),
    context: RelayContext<'_>,
) -> RelayEnd
where
    CR: AsyncRead + Unpin + ?Sized,
    CW: AsyncWrite + Unpin + ?Sized,
    UR: AsyncRead + Unpin + ?Sized,
    UW: AsyncWrite + Unpin + ?Sized,
{
    let RelayContext {
        session,
        hooks,
        max_message_bytes,
        upstream_early_bytes,
        stop,
        ending,
        deadline,
        guard,
        masking,
        max_row_bytes,
        canceled,
    } = context;
    let tracker = Mutex::new(Tracker::default());
    // Both directions run in this one task, so the lock is never contended; it only satisfies the borrow.
    let guard = Mutex::new(guard);
    let masking = masking.map(|masking| Mutex::new(SessionMasking::new(masking)));
    let masked = masking.is_some();
    // Notices for a client whose statement is held, written by the upstream leg between messages.
    let (notices, mut notice_receiver) = tokio::sync::mpsc::unbounded_channel();
    let client_to_upstream = client_loop(
        client_read,
        upstream_write,
        (&tracker, &guard),
        (session, hooks),
        (max_message_bytes, masked),
        (Notices(notices), canceled),
    );
    let upstream_to_client = async {
        match &masking {
            None => {
                let legs = (upstream_read, client_write);
                upstream_loop(legs, &tracker, &guard, (session, hooks), upstream_early_bytes, &mut notice_receiver)
                    .await
            }
            Some(masking) => {
                let legs = (upstream_read, client_write);
                let shared = Shared { tracker: &tracker, guard: &guard, masking, session, hooks };
                upstream_loop_masked(legs, shared, upstream_early_bytes, max_row_bytes, &mut notice_receiver).await
            }
        }
    };
    let end = relay_until_end(client_to_upstream, upstream_to_client, stop, ending, deadline).await;
    // What was sent but not answered still belongs in the record.
    let unfinished = tracker.lock().unfinished();
    for event in unfinished {
        // The client waits on it no more (the session is over), but a record waiting for room is still awaited.
        if let Some(queued) = hooks.statement(session, event) {
            let _ = queued.await;
        }
    }
    if let Some(masking) = &masking {
        let counts = masking.lock().counts();
        if !counts.is_empty() {
            if let Some(queued) = hooks.session_masked(session, counts) {
                let _ = queued.await;
            }
        }
    }
    end
}

async fn relay_until_end(
    client_to_upstream: impl std::future::Future<Output = RelayEnd>,
    upstream_to_client: impl std::future::Future<Output = RelayEnd>,
    stop: tokio::sync::watch::Receiver<bool>,
    ending: tokio::sync::watch::Receiver<Option<Ending>>,
    deadline: Option<(tokio::time::Instant, Ending)>,
) -> RelayEnd {
    let mut stop = stop;
    let mut ending = ending;
    let expiry = async {
        match deadline {
            Some((at, ending)) => {
                tokio::time::sleep_until(at).await;
                ending
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        end = client_to_upstream => end,
        end = upstream_to_client => end,
        _ = stop.wait_for(|stop| *stop) => RelayEnd::Stopped,
        ended = ending.wait_for(Option::is_some) => match ended {
            Ok(ending) => RelayEnd::Ended(ending.clone().expect("waited for some")),
            // The sender is gone only when the front end is: treat as shutdown.
            Err(_) => RelayEnd::Stopped,
        },
        ending = expiry => RelayEnd::Ended(ending),
    }
}

/// Where a direction is within the message stream.
#[derive(Default)]
struct Framing {
    /// Bytes of the current pass-through message still to forward without inspection.
    passthrough: usize,
}

enum Step {
    /// Forward the buffer up to this offset and read more.
    Forward(usize),
    /// Forward the buffer up to `forward`, send `with` in place of the `skip` bytes after it, and scan on.
    Replace {
        forward: usize,
        skip: usize,
        with: Vec<u8>,
    },
    Fail(CodecError),
}

impl Framing {
    /// Walks the messages in `buffer`, calling `inspect` for each whole message of a type `wants` selects.
    /// Returns how much of the buffer may be forwarded now.
    fn scan(
        &mut self,
        buffer: &mut BytesMut,
        limit: Option<usize>,
        wants: impl Fn(u8, usize) -> bool,
        mut inspect: impl FnMut(u8, &[u8]) -> Result<Option<Vec<u8>>, CodecError>,
    ) -> Step {
        let mut position = 0;
        loop {
            if self.passthrough > 0 {
                let take = self.passthrough.min(buffer.len() - position);
                position += take;
                self.passthrough -= take;
                if self.passthrough > 0 {
                    return Step::Forward(position);
                }
            }
            let available = buffer.len() - position;
            let (tag, total) = match codec::header(&buffer[position..]) {
                None => return Step::Forward(position),
                Some(Err(error)) => return Step::Fail(error),
                Some(Ok(header)) => header,
            };
            if let Some(limit) = limit {
                if total > limit {
                    return Step::Fail(CodecError::TooLarge { tag: tag as char, length: total, limit });
                }
            }
            if wants(tag, total) {
                if available < total {
                    buffer.reserve(total - available);
                    return Step::Forward(position);
                }
                match inspect(tag, &buffer[position..position + total]) {
                    Err(error) => return Step::Fail(error),
                    Ok(Some(with)) => return Step::Replace { forward: position, skip: total, with },
                    Ok(None) => position += total,
                }
            } else if available >= total {
                position += total;
            } else {
                self.passthrough = total - available;
                return Step::Forward(buffer.len());
            }
        }
    }
}

fn client_message_tracked_masked(tag: u8) -> bool {
    client_message_tracked(tag) || tag == frontend::DESCRIBE
}

fn client_message_tracked(tag: u8) -> bool {
    matches!(
        tag,
        frontend::QUERY
            | frontend::PARSE
            | frontend::BIND
            | frontend::EXECUTE
            | frontend::SYNC
            | frontend::CLOSE
            | frontend::FUNCTION_CALL
            | frontend::TERMINATE
    )
}

/// Messages after which a result set has no more rows.
fn ends_result_set(tag: u8) -> bool {
    matches!(
        tag,
        backend::COMMAND_COMPLETE | backend::PORTAL_SUSPENDED | backend::ERROR_RESPONSE | backend::EMPTY_QUERY_RESPONSE
    )
}

fn server_message_tracked(tag: u8) -> bool {
    matches!(
        tag,
        backend::PARAMETER_STATUS
            | backend::COMMAND_COMPLETE
            | backend::PARSE_COMPLETE
            | backend::EMPTY_QUERY_RESPONSE
            | backend::PORTAL_SUSPENDED
            | backend::ERROR_RESPONSE
            | backend::READY_FOR_QUERY
    )
}

/// The client's prepared statements and portals, by name, to know what an Execute runs: its text, and what
/// the guard attached to it at Parse.
#[derive(Default)]
struct ClientNames {
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Portal>,
    /// When masking: the portals described since their Bind (warden describes the others itself before their
    /// Execute, to learn their result columns).
    described: std::collections::HashSet<String>,
    masked: bool,
    /// Statements judged in the current read, whose requests are recorded before they are forwarded.
    requested: Vec<Arc<str>>,
    /// The statement just scanned, when its judgement deferred it: held back until its deferral decides.
    held: Option<Held>,
    /// The session's id, for deferred statements.
    session: Arc<str>,
}

/// A prepared statement: its text, and what the guard said of it at Parse.
#[derive(Clone)]
struct Prepared {
    text: Arc<str>,
    annotation: Option<Annotation>,
    deferral: Option<Arc<dyn Deferral>>,
}

/// A bound portal: its statement and, when that statement is deferred, the parameters it was bound with.
#[derive(Clone)]
struct Portal {
    prepared: Prepared,
    parameters: Option<BindParameters>,
}

/// A statement held back from the upstream ([`Judgement::deferral`]).
struct Held {
    /// What goes upstream if it may run.
    message: Vec<u8>,
    /// What goes upstream in its place if not: a request that fails, whose error the refusal replaces.
    stand_in: Vec<u8>,
    deferral: Arc<dyn Deferral>,
    statement: DeferredStatement,
}

/// The name of the statement a refused Execute's stand-in fails to prepare (so no client statement is touched).
const STAND_IN_NAME: &str = "warden_refused";

/// Waits for a held statement's deferral, then sends upstream the statement or, refused, its stand-in (with the
/// refusal queued to replace the stand-in's error). The held request is the newest in the tracker: nothing after
/// it was scanned.
async fn release<W: AsyncWrite + Unpin + ?Sized>(
    held: Held,
    writer: &mut W,
    (tracker, guard): (&Mutex<Tracker>, &Mutex<Box<dyn StatementGuard>>),
    (notices, canceled): (&Notices, &tokio::sync::Notify),
) -> io::Result<()> {
    let deciding = held.deferral.decide(held.statement, notices.clone());
    // A CancelRequest from the client stops the wait, as it would stop a running statement.
    let outcome = tokio::select! {
        outcome = deciding => outcome,
        () = canceled.notified() => Err(crate::hooks::StatementRefusal {
            code: "57014",
            message: "canceling statement due to user request (it was waiting for an approval, which stays pending)"
                .to_string(),
        }),
    };
    let send = {
        let mut tracker = tracker.lock();
        let pending = tracker.queue.back_mut();
        match outcome {
            Ok(annotation) => {
                if let (Some(pending), Some(annotation)) = (pending, annotation) {
                    pending.annotation = Some(annotation);
                }
                guard.lock().deferral_allowed(&held.deferral);
                held.message
            }
            Err(refusal) => {
                if let Some(pending) = pending {
                    pending.refusal = Some(Refused::new(refusal.code, &refusal.message));
                }
                held.stand_in
            }
        }
    };
    writer.write_all(&send).await?;
    writer.flush().await
}

async fn client_loop<R, W>(
    reader: &mut R,
    writer: &mut W,
    (tracker, guard): (&Mutex<Tracker>, &Mutex<Box<dyn StatementGuard>>),
    (session, hooks): (&SessionInfo, &dyn SessionHooks),
    (limit, masked): (usize, bool),
    (notices, canceled): (Notices, Arc<tokio::sync::Notify>),
) -> RelayEnd
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let mut framing = Framing::default();
    let mut names = ClientNames { masked, session: session.id.clone(), ..ClientNames::default() };
    let tracked: fn(u8) -> bool = if masked { client_message_tracked_masked } else { client_message_tracked };
    let mut terminated = false;
    loop {
        match read_more(reader, &mut buffer).await {
            Ok(0) => {
                // Tell the upstream we are leaving, as a client would; ignore failures, we are closing.
                let _ = writer.write_all(&frontend::terminate()).await;
                let _ = writer.flush().await;
                return RelayEnd::ClientClosed;
            }
            Ok(_) => {}
            Err(error) => return RelayEnd::ClientIo(error),
        }
        loop {
            let step = framing.scan(
                &mut buffer,
                Some(limit),
                |tag, _| tracked(tag),
                |tag, message| on_client_message(tag, message, &mut names, tracker, guard, &mut terminated),
            );
            // A statement is forwarded only once its request is durable (audit.durability = sync).
            let durable: Vec<Durable> =
                names.requested.drain(..).filter_map(|text| hooks.statement_requested(session, &text)).collect();
            if let Err(end) = await_durable(durable).await {
                return end;
            }
            let done = match step {
                Step::Forward(forward) => forward_prefix(writer, &mut buffer, forward).await.map(|()| true),
                Step::Replace { forward, skip, with } => replace(writer, &mut buffer, forward, skip, &with).await,
                Step::Fail(error) => return RelayEnd::ClientProtocol(error),
            };
            // A held statement was skipped by the step (replaced with nothing): it goes now, or its stand-in does.
            let done = match (done, names.held.take()) {
                (Ok(more), Some(held)) => {
                    release(held, writer, (tracker, guard), (&notices, &canceled)).await.map(|()| more)
                }
                (done, _) => done,
            };
            match done {
                Ok(true) => break,
                Ok(false) => continue,
                Err(error) => return RelayEnd::UpstreamIo(error),
            }
        }
        if terminated {
            return RelayEnd::ClientTerminated;
        }
    }
}

/// Tracks one client message; returns the stand-in to forward instead when the guard refused it.
fn on_client_message(
    tag: u8,
    message: &[u8],
    names: &mut ClientNames,
    tracker: &Mutex<Tracker>,
    guard: &Mutex<Box<dyn StatementGuard>>,
    terminated: &mut bool,
) -> Result<Option<Vec<u8>>, CodecError> {
    match tag {
        frontend::QUERY => {
            let text: Arc<str> = frontend::query_text(message)?.into();
            let mut judgement = guard.lock().query(&text);
            names.requested.push(text.clone());
            let deferral = judgement.deferral.take();
            if tracker.lock().push_judged(PendingKind::Query, text.clone(), judgement)? {
                return Ok(Some(frontend::query(STAND_IN)));
            }
            if let Some(deferral) = deferral {
                let statement = DeferredStatement { session: names.session.clone(), text, parameters: None };
                let stand_in = frontend::query(STAND_IN);
                names.held = Some(Held { message: message.to_vec(), stand_in, deferral, statement });
                return Ok(Some(Vec::new()));
            }
        }
        frontend::PARSE => {
            let (name, query) = frontend::parse_statement(message)?;
            let mut judgement = guard.lock().parse(name, query);
            let text: Arc<str> = query.into();
            names.requested.push(text.clone());
            // A deferred statement is prepared as usual; each Execute of it is held.
            let deferral = judgement.deferral.take();
            let prepared = Prepared { text: text.clone(), annotation: judgement.annotation.clone(), deferral };
            names.statements.insert(name.to_string(), prepared);
            if tracker.lock().push_judged(PendingKind::Parse, text, judgement)? {
                return Ok(Some(frontend::parse(name, STAND_IN)));
            }
        }
        frontend::BIND => {
            let (portal, statement) = frontend::bind_names(message)?;
            let prepared = names.statements.get(statement).cloned().unwrap_or_else(|| Prepared {
                text: Arc::from(format!("<unknown prepared statement \"{statement}\">")),
                annotation: None,
                deferral: None,
            });
            let parameters = match prepared.deferral {
                Some(_) => Some(frontend::bind_parameters(message)?),
                None => None,
            };
            names.portals.insert(portal.to_string(), Portal { prepared, parameters });
            if names.masked {
                names.described.remove(portal);
            }
        }
        frontend::DESCRIBE => {
            let (kind, name) = frontend::close_target(message)?;
            let mut tracker = tracker.lock();
            if kind == b'P' {
                let (text, annotation) = match names.portals.get(name) {
                    Some(portal) => (portal.prepared.text.clone(), portal.prepared.annotation.clone()),
                    None => (Arc::from(""), None),
                };
                names.described.insert(name.to_string());
                tracker.push_targeted(
                    PendingKind::Describe { portal: true, injected: false },
                    text,
                    name,
                    annotation,
                )?;
            } else {
                tracker.push(PendingKind::Describe { portal: false, injected: false }, Arc::from(""))?;
            }
        }
        frontend::EXECUTE => {
            let portal = frontend::execute_portal(message)?;
            let (text, annotation, held) = match names.portals.get(portal) {
                Some(bound) => {
                    let held = bound.prepared.deferral.clone().map(|deferral| {
                        let statement = DeferredStatement {
                            session: names.session.clone(),
                            text: bound.prepared.text.clone(),
                            parameters: bound.parameters.clone(),
                        };
                        let stand_in = frontend::parse(STAND_IN_NAME, STAND_IN);
                        Held { message: Vec::new(), stand_in, deferral, statement }
                    });
                    (bound.prepared.text.clone(), bound.prepared.annotation.clone(), held)
                }
                None => (Arc::from(format!("<unknown portal \"{portal}\">")), None, None),
            };
            // A held Execute goes upstream (with any Describe warden adds) only once its deferral allows it.
            let hold = |names: &mut ClientNames, with: Vec<u8>| match held {
                Some(mut held) => {
                    held.message = with;
                    names.held = Some(held);
                    Ok(Some(Vec::new()))
                }
                None if with.as_slice() == message => Ok(None),
                None => Ok(Some(with)),
            };
            let mut tracker = tracker.lock();
            if names.masked {
                // The result columns must be known before the rows arrive: describe the portal first if the client
                // did not, and keep that answer from the client.
                let inject = names.described.insert(portal.to_string());
                if inject {
                    let kind = PendingKind::Describe { portal: true, injected: true };
                    tracker.push_targeted(kind, text.clone(), portal, annotation.clone())?;
                }
                tracker.push_targeted(PendingKind::Execute, text, portal, annotation)?;
                drop(tracker);
                if inject {
                    let mut with = frontend::describe_portal(portal);
                    with.extend_from_slice(message);
                    return hold(names, with);
                }
                return hold(names, message.to_vec());
            } else {
                tracker.push_judged(PendingKind::Execute, text, Judgement { annotation, ..Judgement::default() })?;
                drop(tracker);
                return hold(names, message.to_vec());
            }
        }
        frontend::SYNC => tracker.lock().push(PendingKind::Sync, Arc::from(""))?,
        frontend::CLOSE => {
            let (kind, name) = frontend::close_target(message)?;
            match kind {
                b'S' => drop(names.statements.remove(name)),
                b'P' => drop(names.portals.remove(name)),
                _ => {}
            }
        }
        frontend::FUNCTION_CALL => {
            let mut reader = codec::BodyReader::new(message);
            let oid = reader.i32()?;
            let judgement = guard.lock().function_call(oid);
            let text: Arc<str> = Arc::from(format!("<function call {oid}>"));
            names.requested.push(text.clone());
            if tracker.lock().push_judged(PendingKind::Query, text, judgement)? {
                return Ok(Some(frontend::query(STAND_IN)));
            }
        }
        frontend::TERMINATE => *terminated = true,
        _ => {}
    }
    Ok(None)
}

async fn upstream_loop<R, W>(
    (reader, writer): (&mut R, &mut W),
    tracker: &Mutex<Tracker>,
    guard: &Mutex<Box<dyn StatementGuard>>,
    (session, hooks): (&SessionInfo, &dyn SessionHooks),
    early_bytes: &[u8],
    notices: &mut NoticeReceiver,
) -> RelayEnd
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buffer = BytesMut::with_capacity(READ_CHUNK.max(early_bytes.len()));
    buffer.extend_from_slice(early_bytes);
    let mut framing = Framing::default();
    let mut completed: Vec<StatementEvent> = Vec::new();
    let sampler = std::cell::RefCell::new(Sampler::new(hooks.result_rows()));
    let sampling = sampler.borrow().enabled();
    // Scan before reading: the buffer may already hold the upstream's early bytes.
    loop {
        loop {
            // Rows are inspected only while the sample has room for them; the rest pass through unheld.
            let wants = |tag: u8, total: usize| {
                server_message_tracked(tag)
                    || (sampling
                        && match tag {
                            backend::DATA_ROW => sampler.borrow().wants_row(total),
                            backend::ROW_DESCRIPTION | backend::PARAMETER_DESCRIPTION | backend::NO_DATA => true,
                            _ => false,
                        })
            };
            let step = framing.scan(&mut buffer, None, wants, |tag, message| {
                match tag {
                    backend::PARAMETER_STATUS => {
                        let (name, value) = backend::parameter_status_fields(message)?;
                        guard.lock().server_parameter(name, value);
                        return Ok(None);
                    }
                    backend::DATA_ROW => {
                        sampler.borrow_mut().on_data_row(message)?;
                        return Ok(None);
                    }
                    backend::ROW_DESCRIPTION => {
                        sampler.borrow_mut().on_row_description(message)?;
                        return Ok(None);
                    }
                    backend::PARAMETER_DESCRIPTION => {
                        sampler.borrow_mut().on_parameter_description();
                        return Ok(None);
                    }
                    backend::NO_DATA => {
                        sampler.borrow_mut().on_no_data();
                        return Ok(None);
                    }
                    _ => {}
                }
                let mut sampler = sampler.borrow_mut();
                if sampling && ends_result_set(tag) {
                    sampler.end_of_set();
                }
                let (event, replacement) = tracker.lock().on_server_message(tag, message);
                if let Some(mut event) = event {
                    if sampling {
                        event.result = sampler.take(event.rows);
                    }
                    completed.push(event);
                }
                if tag == backend::READY_FOR_QUERY {
                    sampler.on_ready();
                    if let Some(&status) = message.get(codec::HEADER_LEN) {
                        guard.lock().transaction_status(status);
                    }
                }
                Ok(replacement)
            });
            // Recorded before the client sees the answer, so whoever reads the record after the answer finds it
            // (and with audit.durability = sync, durable before it).
            let durable: Vec<Durable> =
                completed.drain(..).filter_map(|event| hooks.statement(session, event)).collect();
            if let Err(end) = await_durable(durable).await {
                return end;
            }
            let done = match step {
                Step::Forward(forward) => forward_prefix(writer, &mut buffer, forward).await.map(|()| true),
                Step::Replace { forward, skip, with } => replace(writer, &mut buffer, forward, skip, &with).await,
                Step::Fail(error) => return RelayEnd::UpstreamProtocol(error),
            };
            match done {
                Ok(true) => break,
                Ok(false) => continue,
                Err(error) => return RelayEnd::ClientIo(error),
            }
        }
        // Between messages (nothing of a message forwarded in part), a notice for a held statement may go out.
        let between = framing.passthrough == 0;
        if let Some(end) = read_or_notify(reader, writer, &mut buffer, notices, between).await {
            return end;
        }
    }
}

type NoticeReceiver = tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>;

/// Reads more from the upstream, unless a notice for the client arrives first (then sends it, when `between`
/// messages). `Some` when the relay must end.
async fn read_or_notify<R, W>(
    reader: &mut R,
    writer: &mut W,
    buffer: &mut BytesMut,
    notices: &mut NoticeReceiver,
    between: bool,
) -> Option<RelayEnd>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    loop {
        tokio::select! {
            read = read_more(reader, buffer) => return match read {
                Ok(0) => Some(RelayEnd::UpstreamClosed),
                Ok(_) => None,
                Err(error) => Some(RelayEnd::UpstreamIo(error)),
            },
            Some(notice) = notices.recv(), if between => {
                if let Err(error) = writer.write_all(&notice).await {
                    return Some(RelayEnd::ClientIo(error));
                }
                if let Err(error) = writer.flush().await {
                    return Some(RelayEnd::ClientIo(error));
                }
            }
        }
    }
}

/// What the masked upstream loop shares with the rest of the relay.
struct Shared<'a> {
    tracker: &'a Mutex<Tracker>,
    guard: &'a Mutex<Box<dyn StatementGuard>>,
    masking: &'a Mutex<SessionMasking>,
    session: &'a SessionInfo,
    hooks: &'a dyn SessionHooks,
}

/// The session ends (FATAL) rather than pass a message warden could not mask.
fn masking_failed(what: &str) -> RelayEnd {
    RelayEnd::Ended(Ending {
        code: "XX000",
        message: format!(
            "warden could not mask the result ({what}); the session is ended rather than pass unmasked data"
        ),
    })
}

/// The request at the front of the queue, as masking needs it.
struct Front {
    kind: Option<PendingKind>,
    target: Option<Arc<str>>,
    annotation: Option<Annotation>,
    text: Arc<str>,
}

fn front(tracker: &Mutex<Tracker>) -> Front {
    let tracker = tracker.lock();
    match tracker.queue.front() {
        Some(pending) => Front {
            kind: Some(pending.kind),
            target: pending.target.clone(),
            annotation: pending.annotation.clone(),
            text: pending.text.clone(),
        },
        None => Front { kind: None, target: None, annotation: None, text: Arc::from("") },
    }
}

/// Plans a result's masking, looking up the tables its columns come from first when needed.
async fn plan_shape(masking: &Mutex<SessionMasking>, fields: &[mask::Field], front: &Front) -> Result<Shape, RelayEnd> {
    let mut looked_up = false;
    loop {
        let planned = masking.lock().plan(fields, &front.text, front.annotation.clone());
        match planned {
            Ok(shape) => return Ok(shape),
            Err(_) if looked_up => return Err(masking_failed("the catalog does not describe a column's table")),
            Err(tables) => {
                let lookup = masking.lock().hooks.look_up(tables);
                lookup.await.map_err(|error| masking_failed(&format!("catalog lookup failed: {error}")))?;
                looked_up = true;
            }
        }
    }
}

/// The upstream-to-client direction when masking: every message is held whole (up to `limit` bytes), the ones that
/// carry data are rewritten, and what the client gets is written once per read.
async fn upstream_loop_masked<R, W>(
    (reader, writer): (&mut R, &mut W),
    shared: Shared<'_>,
    early_bytes: &[u8],
    limit: usize,
    notices: &mut NoticeReceiver,
) -> RelayEnd
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let Shared { tracker, guard, masking, session, hooks } = shared;
    let mut buffer = BytesMut::with_capacity(READ_CHUNK.max(early_bytes.len()));
    buffer.extend_from_slice(early_bytes);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut completed: Vec<StatementEvent> = Vec::new();
    // The result columns of the simple query running now, and of each described portal.
    let mut current: Option<Arc<Shape>> = None;
    let mut portals = PortalShapes::new();
    let mut copy: Option<CopyOut> = None;
    let mut copies_in_query = 0usize;
    let mut sampler = Sampler::new(hooks.result_rows());
    loop {
        let mut position = 0;
        loop {
            let (tag, total) = match codec::header(&buffer[position..]) {
                None => break,
                Some(Err(error)) => return RelayEnd::UpstreamProtocol(error),
                Some(Ok(header)) => header,
            };
            if total > limit {
                return masking_failed(&format!(
                    "a '{}' message of {total} bytes exceeds limits.max_row_bytes ({limit} bytes)",
                    tag as char
                ));
            }
            if buffer.len() - position < total {
                buffer.reserve(total - (buffer.len() - position));
                break;
            }
            let message = &buffer[position..position + total];
            position += total;
            let result = match tag {
                backend::ROW_DESCRIPTION => {
                    let fields = match mask::row_description(message) {
                        Ok(fields) => fields,
                        Err(error) => return RelayEnd::UpstreamProtocol(error),
                    };
                    if let Err(error) = sampler.on_row_description(message) {
                        return RelayEnd::UpstreamProtocol(error);
                    }
                    let front = front(tracker);
                    let shape = match plan_shape(masking, &fields, &front).await {
                        Ok(shape) => Arc::new(shape),
                        Err(end) => return end,
                    };
                    match front.kind {
                        Some(PendingKind::Describe { portal, injected }) => {
                            tracker.lock().queue.pop_front();
                            if portal {
                                portals.insert(front.target.unwrap_or_else(|| Arc::from("")), shape);
                            }
                            if !injected {
                                out.extend_from_slice(message);
                            }
                        }
                        _ => {
                            current = Some(shape);
                            out.extend_from_slice(message);
                        }
                    }
                    Ok(())
                }
                backend::PARAMETER_DESCRIPTION => {
                    sampler.on_parameter_description();
                    out.extend_from_slice(message);
                    Ok(())
                }
                backend::NO_DATA => {
                    sampler.on_no_data();
                    let front = front(tracker);
                    if let Some(PendingKind::Describe { portal, injected }) = front.kind {
                        tracker.lock().queue.pop_front();
                        if portal {
                            let empty = Arc::new(Shape { columns: Vec::new(), annotation: None });
                            portals.insert(front.target.unwrap_or_else(|| Arc::from("")), empty);
                        }
                        if injected {
                            continue;
                        }
                    }
                    out.extend_from_slice(message);
                    Ok(())
                }
                backend::DATA_ROW => {
                    let shape = {
                        let tracker = tracker.lock();
                        match tracker.queue.front() {
                            Some(Pending { kind: PendingKind::Execute, target: Some(portal), .. }) => {
                                portals.get(portal).cloned()
                            }
                            _ => current.clone(),
                        }
                    };
                    let Some(shape) = shape else {
                        return masking_failed("a row arrived without its row description");
                    };
                    let start = out.len();
                    masking.lock().data_row(message, &shape, &mut out).and_then(|()| {
                        // The sample holds what the client received.
                        if sampler.wants_row(out.len() - start) {
                            sampler.on_data_row(&out[start..])
                        } else {
                            Ok(())
                        }
                    })
                }
                backend::COPY_OUT_RESPONSE => {
                    let binary = match mask::copy_out_binary(message) {
                        Ok(binary) => binary,
                        Err(error) => return RelayEnd::UpstreamProtocol(error),
                    };
                    let front = front(tracker);
                    let lookup = masking.lock().hooks.copy_out(&front.text, copies_in_query, front.annotation.as_ref());
                    copies_in_query += 1;
                    match lookup.await {
                        Ok(shape) => copy = Some(CopyOut::new(binary, shape)),
                        Err(error) => return masking_failed(&format!("COPY columns unknown: {error}")),
                    }
                    out.extend_from_slice(message);
                    Ok(())
                }
                backend::COPY_DATA => match copy.as_mut() {
                    Some(copy) => masking.lock().copy_data(message, copy, &mut out),
                    None => return masking_failed("COPY data outside a COPY TO"),
                },
                backend::COPY_DONE => {
                    copy = None;
                    out.extend_from_slice(message);
                    Ok(())
                }
                backend::NOTICE_RESPONSE => masking.lock().error_fields(message, &mut out),
                backend::NOTIFICATION_RESPONSE => masking.lock().notification(message, &mut out),
                backend::FUNCTION_CALL_RESPONSE => masking.lock().function_result(message, &mut out),
                backend::PARAMETER_STATUS => {
                    if let Ok((name, value)) = backend::parameter_status_fields(message) {
                        guard.lock().server_parameter(name, value);
                    }
                    out.extend_from_slice(message);
                    Ok(())
                }
                _ if server_message_tracked(tag) => {
                    match tag {
                        backend::READY_FOR_QUERY => {
                            if let Some(&status) = message.get(codec::HEADER_LEN) {
                                guard.lock().transaction_status(status);
                            }
                            current = None;
                            copy = None;
                            copies_in_query = 0;
                        }
                        backend::ERROR_RESPONSE => copy = None,
                        backend::COMMAND_COMPLETE => {
                            let tracker = tracker.lock();
                            match tracker.queue.front() {
                                // A portal run to completion has no more rows.
                                Some(Pending { kind: PendingKind::Execute, target: Some(portal), .. }) => {
                                    portals.remove(portal);
                                }
                                _ => current = None,
                            }
                        }
                        _ => {}
                    }
                    if ends_result_set(tag) {
                        sampler.end_of_set();
                    }
                    let (event, replacement) = tracker.lock().on_server_message(tag, message);
                    if let Some(mut event) = event {
                        event.result = sampler.take(event.rows);
                        completed.push(event);
                    }
                    if tag == backend::READY_FOR_QUERY {
                        sampler.on_ready();
                    }
                    match replacement {
                        Some(replacement) => {
                            out.extend_from_slice(&replacement);
                            Ok(())
                        }
                        None if tag == backend::ERROR_RESPONSE => masking.lock().error_fields(message, &mut out),
                        None => {
                            out.extend_from_slice(message);
                            Ok(())
                        }
                    }
                }
                _ => {
                    out.extend_from_slice(message);
                    Ok(())
                }
            };
            if let Err(error) = result {
                return masking_failed(&error.to_string());
            }
        }
        buffer.advance(position);
        // Recorded before the client sees the answer, so whoever reads the record after the answer finds it (and
        // with audit.durability = sync, durable before it).
        let durable: Vec<Durable> = completed.drain(..).filter_map(|event| hooks.statement(session, event)).collect();
        if let Err(end) = await_durable(durable).await {
            return end;
        }
        if !out.is_empty() {
            if let Err(error) = writer.write_all(&out).await {
                return RelayEnd::ClientIo(error);
            }
            if let Err(error) = writer.flush().await {
                return RelayEnd::ClientIo(error);
            }
            out.clear();
            if out.capacity() > 4 * READ_CHUNK {
                out.shrink_to(READ_CHUNK);
            }
        }
        // Every message scanned was written whole: a notice may go out.
        if let Some(end) = read_or_notify(reader, writer, &mut buffer, notices, true).await {
            return end;
        }
    }
}

/// Waits for records to be durable (`audit.durability = sync`) or queued (a full queue); when one cannot be, the
/// session ends rather than go on unrecorded.
async fn await_durable(durable: Vec<Durable>) -> Result<(), RelayEnd> {
    for ticket in durable {
        if let Err(reason) = ticket.await {
            return Err(RelayEnd::Ended(Ending {
                code: "58030",
                message: format!(
                    "the audit log cannot be written ({reason}); warden forwards nothing it cannot record, so \
                     the session is ended"
                ),
            }));
        }
    }
    Ok(())
}

/// Reads once into `buffer`, first making room when little is left.
async fn read_more<R: AsyncRead + Unpin + ?Sized>(reader: &mut R, buffer: &mut BytesMut) -> io::Result<usize> {
    if buffer.capacity() - buffer.len() < READ_CHUNK / 4 {
        buffer.reserve(READ_CHUNK);
    }
    reader.read_buf(buffer).await
}

/// Writes the first `forward` bytes of `buffer` and then `with`, in one write, and drops `forward + skip`
/// bytes from the buffer. Returns `false`: the rest of the buffer still needs scanning.
async fn replace<W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    buffer: &mut BytesMut,
    forward: usize,
    skip: usize,
    with: &[u8],
) -> io::Result<bool> {
    let mut out = Vec::with_capacity(forward + with.len());
    out.extend_from_slice(&buffer[..forward]);
    out.extend_from_slice(with);
    writer.write_all(&out).await?;
    writer.flush().await?;
    buffer.advance(forward + skip);
    Ok(false)
}

/// Writes the first `count` bytes of `buffer` on, with one write, and drops them from the buffer.
async fn forward_prefix<W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    buffer: &mut BytesMut,
    count: usize,
) -> io::Result<()> {
    if count > 0 {
        writer.write_all(&buffer[..count]).await?;
        writer.flush().await?;
        buffer.advance(count);
    }
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hold_tests;
