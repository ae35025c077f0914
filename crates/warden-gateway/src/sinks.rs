//! Audit export sinks (`[[audit.sink]]`): every audit event and checkpoint the state writer commits is handed, in
//! order, to each sink's bounded queue, and a sink thread writes it out. The writer never waits on a sink: a full
//! queue drops the batch, counts it and logs a warning (the state store still holds every event, and `warden audit
//! export` can fill the gap).
//!
//! `jsonl`: the records `warden audit export` writes, appended to a file and rotated by size; each file (and the set
//! of them) verifies with `warden audit verify --file`. `syslog`: each record as an RFC 5424 message over UDP or TCP
//! (octet counting), its text the same JSON line, so a SIEM can keep the chain fields.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::warn;
use warden_audit::{Checkpoint, Record, Sealed};
use warden_config::AuditSink;

/// Batches a sink may have waiting before new ones are dropped.
const SINK_QUEUE: usize = 1024;

struct Queue {
    name: String,
    sender: mpsc::Sender<Arc<Vec<Record>>>,
    dropped: AtomicU64,
}

/// The writer's tap: fans committed records out to the sinks.
pub(crate) struct Sinks {
    queues: Vec<Queue>,
}

impl Sinks {
    /// Starts one thread per configured sink; `None` when there is none.
    pub(crate) fn start(sinks: &[AuditSink]) -> std::io::Result<Option<Arc<Sinks>>> {
        if sinks.is_empty() {
            return Ok(None);
        }
        let mut queues = Vec::new();
        for sink in sinks {
            let (sender, receiver) = mpsc::channel(SINK_QUEUE);
            match sink {
                AuditSink::Jsonl { path, max_bytes, keep } => {
                    let mut file = JsonlFile::open(path.clone(), *max_bytes, *keep)?;
                    let name = format!("jsonl {}", path.display());
                    std::thread::Builder::new().name("warden-audit-jsonl".into()).spawn(move || file.run(receiver))?;
                    queues.push(Queue { name, sender, dropped: AtomicU64::new(0) });
                }
                AuditSink::Syslog { address, tcp } => {
                    let mut syslog = Syslog { address: address.clone(), tcp: *tcp, connection: None };
                    let name = format!("syslog {}://{address}", if *tcp { "tcp" } else { "udp" });
                    std::thread::Builder::new()
                        .name("warden-audit-syslog".into())
                        .spawn(move || syslog.run(receiver))?;
                    queues.push(Queue { name, sender, dropped: AtomicU64::new(0) });
                }
                AuditSink::Webhook { .. } => {
                    return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "webhook sinks are not built yet"))
                }
            }
        }
        Ok(Some(Arc::new(Sinks { queues })))
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

/// `<PRI>1 TIMESTAMP HOSTNAME warden - MSGID - JSON`, MSGID the event kind (or `checkpoint`).
fn message(host: &str, record: &Record) -> Vec<u8> {
    let (kind, at, severity) = match record {
        Record::Event(sealed) => {
            let refused = sealed.event.kind == "session.refused"
                || sealed.event.body.get("decision").and_then(|decision| decision.get("allowed"))
                    == Some(&serde_json::Value::Bool(false));
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
            body: serde_json::json!({"text": "x".repeat(200)}),
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
