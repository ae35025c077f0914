//! Audit export sinks (`[[audit.sink]]`): every audit event and checkpoint the state writer commits is handed, in
//! order, to each sink's bounded queue, and a sink thread writes it out. The writer never waits on a sink: a full
//! queue drops the batch, counts it and logs a warning (the state store still holds every event, and `warden audit
//! export` can fill the gap).
//!
//! `jsonl`: the records `warden audit export` writes, appended to a file and rotated by size; each file (and the set
//! of them) verifies with `warden audit verify --file`. `syslog`: each record as an RFC 5424 message over UDP or TCP
//! (octet counting), its text the same JSON line, so a SIEM can keep the chain fields. `webhook`: batches of up to
//! `max_batch` records POSTed as JSON Lines (the same lines), signed by warden-webhook, each with an
//! `X-Warden-Delivery` id its retries keep; a failure worth retrying is retried with backoff until it succeeds (the
//! batches behind it wait, in order, while the queue keeps the writer's usual limit), and one that is not (a 4xx) is
//! logged, counted as dropped, and skipped. When the gateway shuts down (the writer drops the tap), each webhook sink
//! gets at most [`WEBHOOK_SHUTDOWN`] to deliver what is queued, and dropping the tap waits for that.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};
use warden_audit::{Checkpoint, Record, Sealed};
use warden_config::AuditSink;
use warden_webhook::{Backoff, Webhook};

/// Batches a sink may have waiting before new ones are dropped.
const SINK_QUEUE: usize = 1024;

/// How long a webhook sink may go on delivering what is queued once the gateway shuts down.
const WEBHOOK_SHUTDOWN: Duration = Duration::from_secs(5);

struct Queue {
    name: String,
    sender: mpsc::Sender<Arc<Vec<Record>>>,
    dropped: Arc<AtomicU64>,
    /// Dropped with the queue: tells a webhook sink, even in the middle of a retry, that the gateway is stopping.
    _closing: Option<oneshot::Sender<()>>,
}

/// The writer's tap: fans committed records out to the sinks.
pub(crate) struct Sinks {
    queues: Vec<Queue>,
    /// Webhook sink threads, waited for on drop (each gives up after [`WEBHOOK_SHUTDOWN`]).
    webhooks: Vec<std::thread::JoinHandle<()>>,
}

impl Sinks {
    /// Starts one thread per configured sink; `None` when there is none.
    pub(crate) fn start(sinks: &[AuditSink]) -> std::io::Result<Option<Arc<Sinks>>> {
        if sinks.is_empty() {
            return Ok(None);
        }
        let mut queues = Vec::new();
        let mut webhooks = Vec::new();
        for sink in sinks {
            let (sender, receiver) = mpsc::channel(SINK_QUEUE);
            match sink {
                AuditSink::Jsonl { path, max_bytes, keep } => {
                    let mut file = JsonlFile::open(path.clone(), *max_bytes, *keep)?;
                    let name = format!("jsonl {}", path.display());
                    std::thread::Builder::new().name("warden-audit-jsonl".into()).spawn(move || file.run(receiver))?;
                    queues.push(Queue { name, sender, dropped: Arc::default(), _closing: None });
                }
                AuditSink::Syslog { address, tcp } => {
                    let mut syslog = Syslog { address: address.clone(), tcp: *tcp, connection: None };
                    let name = format!("syslog {}://{address}", if *tcp { "tcp" } else { "udp" });
                    std::thread::Builder::new()
                        .name("warden-audit-syslog".into())
                        .spawn(move || syslog.run(receiver))?;
                    queues.push(Queue { name, sender, dropped: Arc::default(), _closing: None });
                }
                AuditSink::Webhook { url, secret, max_batch } => {
                    let webhook = Webhook::new(url, secret.expose().as_bytes())
                        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error.to_string()))?;
                    let name = format!("webhook {}", webhook.url());
                    let dropped = Arc::<AtomicU64>::default();
                    let (closing, closed) = oneshot::channel();
                    let sink = WebhookSink { webhook, max_batch: (*max_batch).max(1), dropped: dropped.clone() };
                    webhooks.push(
                        std::thread::Builder::new()
                            .name("warden-audit-webhook".into())
                            .spawn(move || sink.run(receiver, closed))?,
                    );
                    queues.push(Queue { name, sender, dropped, _closing: Some(closing) });
                }
            }
        }
        Ok(Some(Arc::new(Sinks { queues, webhooks })))
    }

    fn send(&self, records: Vec<Record>) {
        let records = Arc::new(records);
        for queue in &self.queues {
            if queue.sender.try_send(records.clone()).is_err() {
                let dropped = queue.dropped.fetch_add(records.len() as u64, Ordering::Relaxed) + records.len() as u64;
                warn!(sink = %queue.name, dropped, "audit sink is not keeping up (or stopped): records dropped");
            }
        }
    }
}

impl Drop for Sinks {
    /// Closes every queue, then waits for the webhook sinks to deliver what they hold (or give up, after at most
    /// [`WEBHOOK_SHUTDOWN`]). The writer task drops the tap as it ends: on a multi-threaded runtime the wait hands
    /// the worker's other tasks to another thread first.
    fn drop(&mut self) {
        self.queues.clear();
        if self.webhooks.is_empty() {
            return;
        }
        let threads = std::mem::take(&mut self.webhooks);
        let join = move || {
            for thread in threads {
                let _ = thread.join();
            }
        };
        match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(join),
            _ => join(),
        }
    }
}

impl warden_state::AuditTap for Sinks {
    fn committed(&self, events: &[Sealed]) {
        self.send(events.iter().cloned().map(Record::Event).collect());
    }

    fn checkpointed(&self, checkpoint: &Checkpoint) {
        self.send(vec![Record::Checkpoint(checkpoint.clone())]);
    }
}

/// A JSON Lines file, rotated to `path.1` … `path.<keep>` when the next batch would take it past `max_bytes`.
struct JsonlFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: std::fs::File,
    size: u64,
}

impl JsonlFile {
    fn open(path: PathBuf, max_bytes: u64, keep: usize) -> std::io::Result<JsonlFile> {
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = append(&path)?;
        let size = file.metadata()?.len();
        Ok(JsonlFile { path, max_bytes, keep, file, size })
    }

    fn run(&mut self, mut receiver: mpsc::Receiver<Arc<Vec<Record>>>) {
        while let Some(records) = receiver.blocking_recv() {
            let mut lines = Vec::with_capacity(records.len() * 256);
            for record in records.iter() {
                lines.extend_from_slice(record.to_line().as_bytes());
                lines.push(b'\n');
            }
            if let Err(error) = self.write(&lines) {
                warn!(path = %self.path.display(), %error, "cannot write the audit sink file; these records are lost");
            }
        }
    }

    fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + lines.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(lines)?;
        self.file.flush()?;
        self.size += lines.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        for index in (1..self.keep).rev() {
            let from = numbered(&self.path, index);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, index + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// RFC 5424 over UDP (a datagram per record) or TCP (octet counting, RFC 6587), reconnecting after a failure.
struct Syslog {
    address: String,
    tcp: bool,
    connection: Option<SyslogConnection>,
}

enum SyslogConnection {
    Udp(std::net::UdpSocket),
    Tcp(std::net::TcpStream),
}

/// Facility 13 (log audit); severity 6 (informational), 4 (warning) for refusals.
const FACILITY: u8 = 13;

impl Syslog {
    fn run(&mut self, mut receiver: mpsc::Receiver<Arc<Vec<Record>>>) {
        let host = hostname();
        while let Some(records) = receiver.blocking_recv() {
            let messages: Vec<Vec<u8>> = records.iter().map(|record| message(&host, record)).collect();
            // One reconnect per batch; a batch that still cannot be sent is lost (and said so).
            if let Err(error) = self.send(&messages).or_else(|_| {
                self.connection = None;
                self.send(&messages)
            }) {
                self.connection = None;
                warn!(address = %self.address, %error, records = messages.len(), "cannot send to the syslog sink; records lost");
            }
        }
    }

    fn send(&mut self, messages: &[Vec<u8>]) -> std::io::Result<()> {
        if self.connection.is_none() {
            self.connection = Some(if self.tcp {
                SyslogConnection::Tcp(std::net::TcpStream::connect(&self.address)?)
            } else {
                let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
                socket.connect(&self.address)?;
                SyslogConnection::Udp(socket)
            });
        }
        match self.connection.as_mut().expect("just connected") {
            SyslogConnection::Udp(socket) => {
                for message in messages {
                    socket.send(message)?;
                }
            }
            SyslogConnection::Tcp(stream) => {
                let mut framed = Vec::new();
                for message in messages {
                    framed.extend_from_slice(format!("{} ", message.len()).as_bytes());
                    framed.extend_from_slice(message);
                }
                stream.write_all(&framed)?;
                stream.flush()?;
            }
        }
        Ok(())
    }
}

/// Batches of JSON Lines POSTed to a receiver, one at a time, in order; see the module doc.
struct WebhookSink {
    webhook: Webhook,
    max_batch: usize,
    /// Shared with the queue: records refused by the receiver, or still held when shutdown gave up, count here.
    dropped: Arc<AtomicU64>,
}

/// Whether a batch's delivery ended (delivered, or refused for good), or shutdown cut it short.
enum Delivery {
    Done,
    GaveUp,
}

impl WebhookSink {
    fn run(self, receiver: mpsc::Receiver<Arc<Vec<Record>>>, closed: oneshot::Receiver<()>) {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(self.deliver(receiver, Shutdown { closed, deadline: None })),
            Err(error) => error!(sink = %self.webhook.url(), %error, "cannot start the audit webhook sink's runtime"),
        }
    }

    async fn deliver(self, mut receiver: mpsc::Receiver<Arc<Vec<Record>>>, mut shutdown: Shutdown) {
        // Records taken off the queue and not yet sent: at most a batch and one queued item.
        let mut pending: VecDeque<Record> = VecDeque::new();
        loop {
            if pending.is_empty() {
                match receiver.recv().await {
                    Some(records) => pending.extend(records.iter().cloned()),
                    None => return,
                }
            }
            while pending.len() < self.max_batch {
                match receiver.try_recv() {
                    Ok(records) => pending.extend(records.iter().cloned()),
                    Err(_) => break,
                }
            }
            let batch: Vec<Record> = pending.drain(..pending.len().min(self.max_batch)).collect();
            if let Delivery::GaveUp = self.send(&batch, &mut shutdown).await {
                let mut left = (batch.len() + pending.len()) as u64;
                while let Ok(records) = receiver.try_recv() {
                    left += records.len() as u64;
                }
                let dropped = self.dropped.fetch_add(left, Ordering::Relaxed) + left;
                warn!(
                    sink = %self.webhook.url(),
                    records = left,
                    dropped,
                    "gateway shutting down: gave up delivering to the audit webhook after {}s; records dropped",
                    WEBHOOK_SHUTDOWN.as_secs()
                );
                return;
            }
        }
    }

    /// POSTs one batch until it is delivered or refused for good, retrying with backoff.
    async fn send(&self, batch: &[Record], shutdown: &mut Shutdown) -> Delivery {
        let mut body = Vec::with_capacity(batch.len() * 256);
        for record in batch {
            body.extend_from_slice(record.to_line().as_bytes());
            body.push(b'\n');
        }
        let body = warden_webhook::Bytes::from(body);
        let delivery = format!("{:032x}", rand::random::<u128>());
        let headers = [("x-warden-delivery", delivery.as_str())];
        let mut backoff = Backoff::new();
        loop {
            let posted = self.webhook.post(body.clone(), "application/x-ndjson", &headers);
            let Some(result) = shutdown.bounded(posted).await else { return Delivery::GaveUp };
            match result {
                Ok(()) => {
                    if backoff.failures() > 0 {
                        info!(sink = %self.webhook.url(), delivery, attempts = backoff.failures() + 1, "audit webhook delivered after retrying");
                    }
                    return Delivery::Done;
                }
                Err(failure) if failure.is_retryable() => {
                    let delay = backoff.next_delay(failure.retry_after());
                    warn!(
                        sink = %self.webhook.url(),
                        error = %failure,
                        delivery,
                        records = batch.len(),
                        attempts = backoff.failures(),
                        retry_in_ms = delay.as_millis() as u64,
                        "audit webhook delivery failed; retrying (later records wait behind it)"
                    );
                    if shutdown.bounded(tokio::time::sleep(delay)).await.is_none() {
                        return Delivery::GaveUp;
                    }
                }
                Err(failure) => {
                    let records = batch.len() as u64;
                    let dropped = self.dropped.fetch_add(records, Ordering::Relaxed) + records;
                    error!(
                        sink = %self.webhook.url(),
                        status = failure.status().map(|status| status.as_u16()),
                        error = %failure,
                        delivery,
                        records,
                        dropped,
                        "the audit webhook refused a batch (not retried); its records are dropped"
                    );
                    return Delivery::Done;
                }
            }
        }
    }
}

/// The gateway's shutdown as a webhook sink sees it: unknown until the queue's closing signal fires, then a deadline.
struct Shutdown {
    closed: oneshot::Receiver<()>,
    deadline: Option<tokio::time::Instant>,
}

impl Shutdown {
    /// `work`'s output, or `None` when the shutdown deadline passes first.
    async fn bounded<T>(&mut self, work: impl std::future::Future<Output = T>) -> Option<T> {
        let mut work = std::pin::pin!(work);
        let deadline = match self.deadline {
            Some(deadline) => deadline,
            None => {
                tokio::select! {
                    output = &mut work => return Some(output),
                    _ = &mut self.closed => {
                        let deadline = tokio::time::Instant::now() + WEBHOOK_SHUTDOWN;
                        self.deadline = Some(deadline);
                        deadline
                    }
                }
            }
        };
        tokio::time::timeout_at(deadline, work).await.ok()
    }
}

/// `<PRI>1 TIMESTAMP HOSTNAME warden - MSGID - JSON`, MSGID the event kind (or `checkpoint`).
fn message(host: &str, record: &Record) -> Vec<u8> {
    let (kind, at, severity) = match record {
        Record::Event(sealed) => {
            // The body's text is looked at before its value is parsed: most events refuse nothing.
            let body = &sealed.event.body;
            let refused = sealed.event.kind == "session.refused"
                || (body.canonical().contains(r#""allowed":false"#)
                    && body.get("decision").and_then(|decision| decision.get("allowed"))
                        == Some(&serde_json::Value::Bool(false)));
            (sealed.event.kind.as_str(), sealed.event.at.as_str(), if refused { 4 } else { 6 })
        }
        Record::Checkpoint(checkpoint) => ("checkpoint", checkpoint.at.as_str(), 6),
    };
    let msgid: String = kind.chars().filter(|c| c.is_ascii_graphic()).take(32).collect();
    format!("<{}>1 {at} {host} warden - {msgid} - {}", FACILITY * 8 + severity, record.to_line()).into_bytes()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().chars().filter(|c| c.is_ascii_graphic()).take(255).collect::<String>())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "-".to_string())
}

fn append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// `path.<index>`.
fn numbered(path: &Path, index: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> Record {
        let event = warden_audit::Event {
            chain: "gw-test".into(),
            seq,
            at: "2026-11-21T00:00:00Z".into(),
            kind: "statement".into(),
            session: None,
            identity: None,
            connection: None,
            run: None,
            node: None,
            body: serde_json::json!({"text": "x".repeat(200)}).into(),
        };
        Record::Event(Sealed::seal(&warden_audit::GENESIS, event))
    }

    #[test]
    fn files_rotate_by_size_and_keep_the_newest() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("audit/warden.jsonl");
        let mut file = JsonlFile::open(path.clone(), 4096, 2).expect("open");
        for seq in 1..=100 {
            let line = format!("{}\n", record(seq).to_line());
            file.write(line.as_bytes()).expect("write");
        }
        let sizes: Vec<u64> = [path.clone(), numbered(&path, 1), numbered(&path, 2)]
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .collect();
        assert!(sizes.iter().all(|size| *size <= 4096 && *size > 0), "{sizes:?}");
        assert!(!numbered(&path, 3).exists(), "only `keep` rotated files are kept");
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(last.lines().last().unwrap().contains("\"seq\":100"), "the newest records are in the live file");
    }
}
