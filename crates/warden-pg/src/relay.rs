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

use crate::codec::{self, backend, frontend, CodecError};
use crate::hooks::{SessionHooks, SessionInfo, StatementEvent};

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
}

/// The statements sent but not yet answered, shared by the two directions.
#[derive(Default)]
struct Tracker {
    queue: VecDeque<Pending>,
    next_seq: u64,
}

impl Tracker {
    fn push(&mut self, kind: PendingKind, text: Arc<str>) -> Result<(), CodecError> {
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
        });
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
        }
    }

    /// Drops the extended-protocol requests in front of the next Sync (or simple Query).
    fn drop_until_sync(&mut self) {
        while self.queue.front().is_some_and(|next| matches!(next.kind, PendingKind::Execute | PendingKind::Parse)) {
            self.queue.pop_front();
        }
    }

    /// Applies one tracked server message; returns a completed statement, if any.
    fn on_server_message(&mut self, tag: u8, message: &[u8]) -> Option<StatementEvent> {
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
    let tracker = Mutex::new(Tracker::default());
    let client_to_upstream = client_loop(client_read, upstream_write, &tracker, context.max_message_bytes);
    let upstream_to_client = upstream_loop(upstream_read, client_write, &tracker, &context);
    let mut stop = context.stop.clone();
    tokio::select! {
        end = client_to_upstream => end,
        end = upstream_to_client => end,
        _ = stop.wait_for(|stop| *stop) => RelayEnd::Stopped,
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
        mut inspect: impl FnMut(u8, &[u8]) -> Result<(), CodecError>,
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
                if let Err(error) = inspect(tag, &buffer[position..position + total]) {
                    return Step::Fail(error);
                }
                position += total;
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
        backend::COMMAND_COMPLETE
            | backend::PARSE_COMPLETE
            | backend::EMPTY_QUERY_RESPONSE
            | backend::PORTAL_SUSPENDED
            | backend::ERROR_RESPONSE
            | backend::READY_FOR_QUERY
    )
}

/// The client's prepared statements and portals, by name, to know what an Execute runs.
#[derive(Default)]
struct ClientNames {
    statements: HashMap<String, Arc<str>>,
    portals: HashMap<String, Arc<str>>,
}

async fn client_loop<R, W>(reader: &mut R, writer: &mut W, tracker: &Mutex<Tracker>, limit: usize) -> RelayEnd
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
        let step = framing.scan(&mut buffer, Some(limit), client_message_tracked, |tag, message| {
            on_client_message(tag, message, &mut names, tracker, &mut terminated)
        });
        let forward = match step {
            Step::Forward(forward) => forward,
            Step::Fail(error) => return RelayEnd::ClientProtocol(error),
        };
        if let Err(error) = forward_prefix(writer, &mut buffer, forward).await {
            return RelayEnd::UpstreamIo(error);
        }
        if terminated {
            return RelayEnd::ClientTerminated;
        }
    }
}

fn on_client_message(
    tag: u8,
    message: &[u8],
    names: &mut ClientNames,
    tracker: &Mutex<Tracker>,
    terminated: &mut bool,
) -> Result<(), CodecError> {
    match tag {
        frontend::QUERY => {
            let text: Arc<str> = frontend::query_text(message)?.into();
            tracker.lock().push(PendingKind::Query, text)?;
        }
        frontend::PARSE => {
            let (name, query) = frontend::parse_statement(message)?;
            let text: Arc<str> = query.into();
            names.statements.insert(name.to_string(), text.clone());
            tracker.lock().push(PendingKind::Parse, text)?;
        }
        frontend::BIND => {
            let (portal, statement) = frontend::bind_names(message)?;
            let text = names
                .statements
                .get(statement)
                .cloned()
                .unwrap_or_else(|| Arc::from(format!("<unknown prepared statement \"{statement}\">")));
            names.portals.insert(portal.to_string(), text);
        }
        frontend::EXECUTE => {
            let portal = frontend::execute_portal(message)?;
            let text = names
                .portals
                .get(portal)
                .cloned()
                .unwrap_or_else(|| Arc::from(format!("<unknown portal \"{portal}\">")));
            tracker.lock().push(PendingKind::Execute, text)?;
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
            tracker.lock().push(PendingKind::Query, Arc::from(format!("<function call {oid}>")))?;
        }
        frontend::TERMINATE => *terminated = true,
        _ => {}
    }
    Ok(())
}

async fn upstream_loop<R, W>(
    reader: &mut R,
    writer: &mut W,
    tracker: &Mutex<Tracker>,
    context: &RelayContext<'_>,
) -> RelayEnd
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let early_bytes = context.upstream_early_bytes;
    let mut buffer = BytesMut::with_capacity(READ_CHUNK.max(early_bytes.len()));
    buffer.extend_from_slice(early_bytes);
    let mut framing = Framing::default();
    let mut completed: Vec<StatementEvent> = Vec::new();
    // Scan before reading: the buffer may already hold the upstream's early bytes.
    loop {
        let step = framing.scan(&mut buffer, None, server_message_tracked, |tag, message| {
            if let Some(event) = tracker.lock().on_server_message(tag, message) {
                completed.push(event);
            }
            Ok(())
        });
        let forward = match step {
            Step::Forward(forward) => forward,
            Step::Fail(error) => return RelayEnd::UpstreamProtocol(error),
        };
        if let Err(error) = forward_prefix(writer, &mut buffer, forward).await {
            return RelayEnd::ClientIo(error);
        }
        for event in completed.drain(..) {
            context.hooks.statement(context.session, event);
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
