//! Receivers for what the audit export sinks send, on loopback: [`SyslogUdpReceiver`] and [`SyslogTcpReceiver`]
//! (RFC 5424 messages, checked and unwrapped to the JSON record they carry; TCP with RFC 6587 octet counting) and
//! [`WebhookReceiver`] (HTTP/1.1 POSTs of JSON Lines, each signature checked with its own HMAC-SHA256, deliveries
//! deduplicated by `X-Warden-Delivery`, and 503s on demand to exercise retries).
//!
//! Each keeps the JSON lines it received, in arrival order, and lets a test wait for a line containing some text
//! without sleeping: the receiving task publishes every change on a watch channel. Each stops when dropped.
//! Test-only helpers: they panic with a clear message instead of returning errors.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Signatures older (or further ahead) than this are refused, as the README tells receivers to.
const MAX_SIGNATURE_AGE_SECONDS: u64 = 300;

/// What a syslog receiver has received: the JSON records, in order, and any message that was not RFC 5424 with
/// facility log audit.
#[derive(Debug, Clone, Default)]
pub struct SyslogInbox {
    pub lines: Vec<String>,
    pub malformed: Vec<String>,
}

/// The JSON record a syslog message carries, after checking its RFC 5424 header (`<PRI>1 `, facility 13: log
/// audit, severity 6 or, for a refusal, 4).
pub fn syslog_record(message: &str) -> Result<String, String> {
    if !(message.starts_with("<110>1 ") || message.starts_with("<108>1 ")) {
        return Err(format!("not RFC 5424 with facility log audit: {message}"));
    }
    let json = message.find('{').ok_or_else(|| format!("no JSON record: {message}"))?;
    Ok(message[json..].to_string())
}

/// Splits the complete messages off the front of an octet-counted syslog stream (RFC 6587), leaving an incomplete
/// one in `stream`. `Err` when the stream does not start with a message length.
pub fn octet_counted(stream: &mut Vec<u8>) -> Result<Vec<String>, String> {
    let mut messages = Vec::new();
    let mut start = 0;
    while let Some(space) = stream[start..].iter().position(|byte| *byte == b' ') {
        let length = std::str::from_utf8(&stream[start..start + space])
            .ok()
            .and_then(|text| text.parse::<usize>().ok())
            .ok_or_else(|| format!("not octet counting: {:?}", String::from_utf8_lossy(&stream[start..])))?;
        let Some(message) = stream.get(start + space + 1..start + space + 1 + length) else { break };
        messages.push(String::from_utf8_lossy(message).into_owned());
        start += space + 1 + length;
    }
    stream.drain(..start);
    Ok(messages)
}

fn receive_syslog(inbox: &watch::Sender<SyslogInbox>, message: &str) {
    inbox.send_modify(|inbox| match syslog_record(message) {
        Ok(line) => inbox.lines.push(line),
        Err(problem) => inbox.malformed.push(problem),
    });
}

/// Waits until `done` holds for the watched state (checked on every change), panicking after `timeout`.
async fn wait<T: Clone>(
    state: &watch::Sender<T>,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&T) -> bool,
) -> T {
    let mut receiver = state.subscribe();
    let value = match tokio::time::timeout(timeout, receiver.wait_for(|value| done(value))).await {
        Ok(Ok(value)) => value.clone(),
        Ok(Err(_)) => panic!("the receiver stopped while waiting for {what}"),
        Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
    };
    value
}

/// Waits for a line containing `needle`, then returns every line so far, checking none was malformed.
async fn wait_for_line(inbox: &watch::Sender<SyslogInbox>, needle: &str, timeout: Duration) -> Vec<String> {
    let what = format!("a syslog record containing {needle:?}");
    let inbox = wait(inbox, timeout, &what, |inbox| {
        !inbox.malformed.is_empty() || inbox.lines.iter().any(|line| line.contains(needle))
    })
    .await;
    assert!(inbox.malformed.is_empty(), "malformed syslog messages: {:?}", inbox.malformed);
    inbox.lines
}

/// RFC 5424 syslog over UDP on `127.0.0.1:<port>`, a datagram per message.
pub struct SyslogUdpReceiver {
    address: SocketAddr,
    inbox: watch::Sender<SyslogInbox>,
    task: JoinHandle<()>,
}

impl SyslogUdpReceiver {
    pub async fn start() -> SyslogUdpReceiver {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind a loopback UDP port");
        let address = socket.local_addr().expect("the socket's address");
        let (inbox, _) = watch::channel(SyslogInbox::default());
        let sender = inbox.clone();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 65536];
            while let Ok(read) = socket.recv(&mut buffer).await {
                receive_syslog(&sender, &String::from_utf8_lossy(&buffer[..read]));
            }
        });
        SyslogUdpReceiver { address, inbox, task }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// An `[[audit.sink]]` table sending here.
    pub fn sink_config(&self) -> String {
        format!("[[audit.sink]]\nkind = \"syslog\"\naddress = \"udp://{}\"\n", self.address)
    }

    /// Waits (at most `timeout`) for a record containing `needle`; every record received so far, in order.
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> Vec<String> {
        wait_for_line(&self.inbox, needle, timeout).await
    }

    /// What has arrived so far.
    pub fn inbox(&self) -> SyslogInbox {
        self.inbox.borrow().clone()
    }
}

impl Drop for SyslogUdpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// RFC 5424 syslog over TCP with octet counting (RFC 6587) on `127.0.0.1:<port>`; accepts any number of
/// connections (a sink reconnects after a failure), each read as its own stream.
pub struct SyslogTcpReceiver {
    address: SocketAddr,
    inbox: watch::Sender<SyslogInbox>,
    task: JoinHandle<()>,
}

impl SyslogTcpReceiver {
    pub async fn start() -> SyslogTcpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback TCP port");
        let address = listener.local_addr().expect("the listener's address");
        let (inbox, _) = watch::channel(SyslogInbox::default());
        let sender = inbox.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let inbox = sender.clone();
                connections.spawn(async move {
                    let mut pending = Vec::new();
                    let mut buffer = vec![0u8; 65536];
                    while let Ok(read) = stream.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        pending.extend_from_slice(&buffer[..read]);
                        match octet_counted(&mut pending) {
                            Ok(messages) => messages.iter().for_each(|message| receive_syslog(&inbox, message)),
                            Err(problem) => {
                                inbox.send_modify(|inbox| inbox.malformed.push(problem));
                                break;
                            }
                        }
                    }
                });
            }
        });
        SyslogTcpReceiver { address, inbox, task }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// An `[[audit.sink]]` table sending here.
    pub fn sink_config(&self) -> String {
        format!("[[audit.sink]]\nkind = \"syslog\"\naddress = \"tcp://{}\"\n", self.address)
    }

    /// Waits (at most `timeout`) for a record containing `needle`; every record received so far, in order.
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> Vec<String> {
        wait_for_line(&self.inbox, needle, timeout).await
    }

    /// What has arrived so far.
    pub fn inbox(&self) -> SyslogInbox {
        self.inbox.borrow().clone()
    }
}

impl Drop for SyslogTcpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a [`WebhookReceiver`] has seen.
#[derive(Debug, Clone, Default)]
pub struct WebhookInbox {
    /// The JSON lines of every accepted delivery, in order, each delivery once.
    pub lines: Vec<String>,
    /// Every request, whatever was answered.
    pub requests: usize,
    /// The `X-Warden-Delivery` of each request answered 503 because the test asked for it, in order.
    pub unavailable_deliveries: Vec<String>,
    /// The `X-Warden-Delivery` of each request refused with 401 (no signature, a wrong one, or a stale
    /// timestamp), in order.
    pub rejected_deliveries: Vec<String>,
    /// The lines those refused requests carried, unverified: only for telling what was refused.
    pub rejected_lines: Vec<String>,
    /// The `X-Warden-Delivery` of each accepted delivery, in order.
    pub deliveries: Vec<String>,
    /// Requests repeating an accepted delivery (answered 200, their lines not kept again).
    pub duplicates: usize,
    /// Requests that were not what a warden webhook sends (method, content type, missing delivery id).
    pub problems: Vec<String>,
}

/// An HTTP/1.1 endpoint on `127.0.0.1:<port>` receiving signed JSON Lines POSTs, as a SIEM's ingest would.
pub struct WebhookReceiver {
    address: SocketAddr,
    state: Arc<WebhookState>,
    task: JoinHandle<()>,
}

struct WebhookState {
    secret: Vec<u8>,
    inbox: watch::Sender<WebhookInbox>,
    /// Requests still to answer with 503.
    unavailable: parking_lot::Mutex<usize>,
}

impl WebhookReceiver {
    /// Starts serving on the current tokio runtime, accepting requests signed with `secret`.
    pub async fn start(secret: &str) -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port for the webhook receiver");
        let address = listener.local_addr().expect("the listener's address");
        let (inbox, _) = watch::channel(WebhookInbox::default());
        let state =
            Arc::new(WebhookState { secret: secret.as_bytes().to_vec(), inbox, unavailable: Default::default() });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.respond(request).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        WebhookReceiver { address, state, task }
    }

    /// `http://127.0.0.1:<port>/ingest`.
    pub fn url(&self) -> String {
        format!("http://{}/ingest", self.address)
    }

    /// An `[[audit.sink]]` table sending here, its secret read from `secret_file`.
    pub fn sink_config(&self, secret_file: &std::path::Path, max_batch: usize) -> String {
        format!(
            "[[audit.sink]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = {{ file = \"{}\" }}\nmax_batch = {max_batch}\n",
            self.url(),
            secret_file.display()
        )
    }

    /// Answers the next `requests` requests with 503 Service Unavailable (no Retry-After).
    pub fn unavailable_for(&self, requests: usize) {
        *self.state.unavailable.lock() = requests;
    }

    /// What has arrived so far.
    pub fn inbox(&self) -> WebhookInbox {
        self.state.inbox.borrow().clone()
    }

    /// Waits (at most `timeout`) until an accepted line contains `needle`; every accepted line so far, in order.
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let what = format!("a webhook record containing {needle:?}");
        self.wait_until(&what, timeout, |inbox| inbox.lines.iter().any(|line| line.contains(needle))).await.lines
    }

    /// Waits (at most `timeout`) until `done` holds for the inbox (checked on every request); the inbox then.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl FnMut(&WebhookInbox) -> bool,
    ) -> WebhookInbox {
        let inbox = wait(&self.state.inbox, timeout, what, done).await;
        assert!(inbox.problems.is_empty(), "the webhook receiver saw bad requests: {:?}", inbox.problems);
        inbox
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

impl WebhookState {
    async fn respond(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let header = |name: &str| {
            request.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_string).unwrap_or_default()
        };
        let (timestamp, signature, delivery) =
            (header("x-warden-timestamp"), header("x-warden-signature"), header("x-warden-delivery"));
        let content_type = header("content-type");
        let method = request.method().clone();
        let body = match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return answer(StatusCode::BAD_REQUEST),
        };
        let unavailable = {
            let mut left = self.unavailable.lock();
            let unavailable = *left > 0;
            *left = left.saturating_sub(1);
            unavailable
        };
        let verified = self.verify(&timestamp, &signature, &body);
        let mut status = StatusCode::OK;
        self.inbox.send_modify(|inbox| {
            inbox.requests += 1;
            if unavailable {
                inbox.unavailable_deliveries.push(delivery.clone());
                status = StatusCode::SERVICE_UNAVAILABLE;
                return;
            }
            if !verified {
                inbox.rejected_deliveries.push(delivery.clone());
                inbox.rejected_lines.extend(String::from_utf8_lossy(&body).lines().map(str::to_string));
                status = StatusCode::UNAUTHORIZED;
                return;
            }
            let json = content_type == "application/json";
            if method != hyper::Method::POST || !(json || content_type == "application/x-ndjson") || delivery.is_empty()
            {
                inbox.problems.push(format!("{method} content-type {content_type:?} delivery {delivery:?}"));
                status = StatusCode::BAD_REQUEST;
                return;
            }
            if inbox.deliveries.contains(&delivery) {
                inbox.duplicates += 1;
                return;
            }
            let text = String::from_utf8_lossy(&body);
            if json {
                // One JSON document (an approval notification), kept as one line.
                match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(document) => inbox.lines.push(document.to_string()),
                    Err(error) => inbox.problems.push(format!("delivery {delivery}: not JSON: {error}")),
                }
                inbox.deliveries.push(delivery.clone());
                return;
            }
            if !text.ends_with('\n') {
                inbox.problems.push(format!("delivery {delivery}: the body does not end with a newline"));
            }
            inbox.lines.extend(text.lines().map(str::to_string));
            inbox.deliveries.push(delivery.clone());
        });
        answer(status)
    }

    /// Checks `v1=<hex>` against HMAC-SHA256(secret, timestamp + "." + body), computed here, and the timestamp's age.
    fn verify(&self, timestamp: &str, signature: &str, body: &[u8]) -> bool {
        let Ok(seconds) = timestamp.parse::<u64>() else { return false };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
        if now.abs_diff(seconds) > MAX_SIGNATURE_AGE_SECONDS {
            return false;
        }
        let Some(Ok(presented)) = signature.strip_prefix("v1=").map(hex::decode) else { return false };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&presented).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octet_counting_keeps_an_incomplete_message() {
        let mut stream = b"5 hello3 abc4 de".to_vec();
        assert_eq!(octet_counted(&mut stream).unwrap(), ["hello", "abc"]);
        assert_eq!(stream, b"4 de");
        stream.extend_from_slice(b"fg");
        assert_eq!(octet_counted(&mut stream).unwrap(), ["defg"]);
        assert!(stream.is_empty());
        assert!(octet_counted(&mut b"x hello".to_vec()).is_err());
    }

    #[test]
    fn syslog_records_need_the_audit_facility() {
        assert_eq!(
            syslog_record("<110>1 2026-11-21T00:00:00Z host warden - statement - {\"a\":1}").unwrap(),
            "{\"a\":1}"
        );
        assert!(syslog_record("<14>1 2026-11-21T00:00:00Z host warden - statement - {}").is_err());
    }
}
