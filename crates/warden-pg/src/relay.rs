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
use crate::codec::{self, backend, frontend, CodecError};
use crate::hooks::{Annotation, Judgement, SessionHooks, SessionInfo, StatementEvent, StatementGuard};

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
}

struct Pending {
    kind: PendingKind,
    text: Arc<str>,
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
            started: Instant::now(),
            started_at: OffsetDateTime::now_utc(),
            rows: None,
            error: None,
            annotation: judgement.annotation,
            refusal: judgement.refusal.map(|refusal| Refused::new(refusal.code, &refusal.message)),
        });
        Ok(self.queue.back().is_some_and(|pending| pending.refusal.is_some()))
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
        }
    }

    /// Drops the extended-protocol requests in front of the next Sync (or simple Query).
    fn drop_until_sync(&mut self) {
        while self.queue.front().is_some_and(|next| matches!(next.kind, PendingKind::Execute | PendingKind::Parse)) {
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
            PendingKind::Sync => None,
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
                    PendingKind::Sync | PendingKind::Parse => None,
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
    let RelayContext { session, hooks, max_message_bytes, upstream_early_bytes, stop, ending, deadline, guard } =
        context;
    let tracker = Mutex::new(Tracker::default());
    // Both directions run in this one task, so the lock is never contended; it only satisfies the borrow.
    let guard = Mutex::new(guard);
    let client_to_upstream = client_loop(client_read, upstream_write, &tracker, &guard, max_message_bytes);
    let upstream_to_client =
        upstream_loop(upstream_read, client_write, &tracker, &guard, (session, hooks), upstream_early_bytes);
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
        wants: impl Fn(u8) -> bool,
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
            if wants(tag) {
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
    statements: HashMap<String, (Arc<str>, Option<Annotation>)>,
    portals: HashMap<String, (Arc<str>, Option<Annotation>)>,
}

async fn client_loop<R, W>(
    reader: &mut R,
    writer: &mut W,
    tracker: &Mutex<Tracker>,
    guard: &Mutex<Box<dyn StatementGuard>>,
    limit: usize,
) -> RelayEnd
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let mut framing = Framing::default();
    let mut names = ClientNames::default();
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
            let step = framing.scan(&mut buffer, Some(limit), client_message_tracked, |tag, message| {
                on_client_message(tag, message, &mut names, tracker, guard, &mut terminated)
            });
            let done = match step {
                Step::Forward(forward) => forward_prefix(writer, &mut buffer, forward).await.map(|()| true),
                Step::Replace { forward, skip, with } => replace(writer, &mut buffer, forward, skip, &with).await,
                Step::Fail(error) => return RelayEnd::ClientProtocol(error),
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
            let text = frontend::query_text(message)?;
            let judgement = guard.lock().query(text);
            if tracker.lock().push_judged(PendingKind::Query, text.into(), judgement)? {
                return Ok(Some(frontend::query(STAND_IN)));
            }
        }
        frontend::PARSE => {
            let (name, query) = frontend::parse_statement(message)?;
            let judgement = guard.lock().parse(name, query);
            let text: Arc<str> = query.into();
            names.statements.insert(name.to_string(), (text.clone(), judgement.annotation.clone()));
            if tracker.lock().push_judged(PendingKind::Parse, text, judgement)? {
                return Ok(Some(frontend::parse(name, STAND_IN)));
            }
        }
        frontend::BIND => {
            let (portal, statement) = frontend::bind_names(message)?;
            let named = names
                .statements
                .get(statement)
                .cloned()
                .unwrap_or_else(|| (Arc::from(format!("<unknown prepared statement \"{statement}\">")), None));
            names.portals.insert(portal.to_string(), named);
        }
        frontend::EXECUTE => {
            let portal = frontend::execute_portal(message)?;
            let (text, annotation) = names
                .portals
                .get(portal)
                .cloned()
                .unwrap_or_else(|| (Arc::from(format!("<unknown portal \"{portal}\">")), None));
            tracker.lock().push_judged(PendingKind::Execute, text, Judgement { annotation, refusal: None })?;
        }
        frontend::SYNC => tracker.lock().push(PendingKind::Sync, Arc::from(""))?,
        frontend::CLOSE => {
            let (kind, name) = frontend::close_target(message)?;
            match kind {
                b'S' => names.statements.remove(name),
                b'P' => names.portals.remove(name),
                _ => None,
            };
        }
        frontend::FUNCTION_CALL => {
            let mut reader = codec::BodyReader::new(message);
            let oid = reader.i32()?;
            let judgement = guard.lock().function_call(oid);
            let text = Arc::from(format!("<function call {oid}>"));
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
    reader: &mut R,
    writer: &mut W,
    tracker: &Mutex<Tracker>,
    guard: &Mutex<Box<dyn StatementGuard>>,
    (session, hooks): (&SessionInfo, &dyn SessionHooks),
    early_bytes: &[u8],
) -> RelayEnd
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buffer = BytesMut::with_capacity(READ_CHUNK.max(early_bytes.len()));
    buffer.extend_from_slice(early_bytes);
    let mut framing = Framing::default();
    let mut completed: Vec<StatementEvent> = Vec::new();
    // Scan before reading: the buffer may already hold the upstream's early bytes.
    loop {
        loop {
            let step = framing.scan(&mut buffer, None, server_message_tracked, |tag, message| {
                if tag == backend::PARAMETER_STATUS {
                    let (name, value) = backend::parameter_status_fields(message)?;
                    guard.lock().server_parameter(name, value);
                    return Ok(None);
                }
                if tag == backend::READY_FOR_QUERY {
                    if let Some(&status) = message.get(codec::HEADER_LEN) {
                        guard.lock().transaction_status(status);
                    }
                }
                let (event, replacement) = tracker.lock().on_server_message(tag, message);
                completed.extend(event);
                Ok(replacement)
            });
            // Recorded before the client sees the answer, so whoever reads the record after the answer finds it.
            for event in completed.drain(..) {
                hooks.statement(session, event);
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
        match read_more(reader, &mut buffer).await {
            Ok(0) => return RelayEnd::UpstreamClosed,
            Ok(_) => {}
            Err(error) => return RelayEnd::UpstreamIo(error),
        }
    }
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
