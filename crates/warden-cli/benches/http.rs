//! What warden adds to an HTTP request, at fixed request rates: `POST /v1/chat/completions` to the test kit's LLM
//! stand-in, directly (the floor) and through warden, on a plain route (`kind = "http"`, no `api`, no masking)
//! and on an LLM route (`api = "openai"`, every detector masking, a model allow-list and a `max_tokens` cap); and,
//! streamed, the time to the first byte and to the first content of the answer, directly and through the LLM
//! route. Prints p50, p99 (and p99.9 when there are enough samples) microseconds per side and rate, what warden
//! adds (warden − direct), the rate achieved and the errors, then a line per route comparing the added p99 to the
//! 0.3 ms target (agentgateway's published figure, without guardrails).
//!
//! `cargo bench -p warden-cli --bench http` (release profile). Environment:
//! - `BENCH_RATES`: the request rates of the non-streamed sides, requests per second, comma-separated (default
//!   `200,500,1000`);
//! - `BENCH_STREAM_RATES`: the rates of the streamed sides (default `50,100`);
//! - `BENCH_SECONDS`: seconds per rate and side in each round (default 5);
//! - `BENCH_ROUNDS`: measured rounds (default 3), after one warm-up second per side at the highest rate;
//! - `BENCH_CONNECTIONS`: keep-alive connections per side (default 64);
//! - `BENCH_CHUNK_DELAY_MS`: the stand-in's pause between streamed content deltas (default 20);
//! - `BENCH_REFERENCE=haproxy`: a fourth non-streamed side through haproxy in `mode http` (on the PATH: `apt-get
//!   install haproxy`), a plain reverse proxy that only swaps the `Authorization` header: what any HTTP proxy adds
//!   on this machine, measured in the same rotation (unset: no reference);
//! - `BENCH_WORKERS`: warden's `[runtime] workers` (default: one per core).
//!
//! After the tables, the time of each non-streamed request inside warden, read back from its audit trail
//! (`forwarded_us`, `first_byte_us`, `duration_us`): before forwarding, upstream (sent → response head, the worker's
//! wake-up included) and after the head (the answer read, masked, written, and the record made).
//!
//! **Open loop.** The load generator is this file: a hyper HTTP/1.1 client with a pool of keep-alive connections
//! per side, each connection a task that takes the next request of the schedule (request `i` is due at `start +
//! i / rate`), waits for its due time, sends it and reads the whole answer. A request that finds every connection
//! busy at its due time is sent when one frees up and its latency counts from its due time, so a stall of the
//! system under test is charged to every request it delays (no coordinated omission). A request whose connection
//! was idle counts from the moment it is sent: tokio's timer wakes up to a millisecond after a due time, and that
//! lateness is the load generator's, not the system's. The `queued` column counts the requests that waited for a
//! connection.
//!
//! **Sides.** Each round runs, for each rate, every side in turn, the order rotating from round to round, so
//! drift on this noisy machine falls on all sides alike. Non-streamed: direct, warden plain, warden LLM (masked).
//! Streamed (`stream: true`, the stand-in pausing `BENCH_CHUNK_DELAY_MS` between content deltas, none before the
//! first): direct and warden LLM (masked), twice: with 6-byte deltas (the first, `"Sure. "`, ends with a space)
//! and with 4-byte deltas (the first, `"Sure"`, ends mid-text, as a provider's token usually does); per request,
//! the time to the first byte of the body (the role chunk), to the first SSE frame whose delta has content, and to
//! the end of the stream. warden's streaming masker releases text only once it knows no value is in progress in
//! it, so a first delta that ends mid-text waits for the next one: that first-content figure is one inter-token
//! gap, not warden's processing, and the output says so.
//!
//! The load generator (one thread), the stand-in (its own runtime, one thread), warden (its accept runtime, the
//! state writer and `[runtime] workers` worker threads, one per core by default) share the machine's cores. A
//! throwaway PostgreSQL is started because the test gateway always has a PostgreSQL connection; it serves nothing
//! here. The process uses mimalloc, as the `warden` binary does. Every answer is checked: status 200, the planted email in direct and plain answers, none of the planted
//! values in masked ones; anything else is an error, and errors must be 0.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use warden_testkit::llm::{LlmStandIn, LlmStandInOptions};
use warden_testkit::{AppDatabase, TempPostgres, TestGateway};

/// The allocator the `warden` binary ships with (see `src/main.rs`), so that the in-process gateway measured here
/// allocates as the real one does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// agentgateway's published p99 added latency, the target with masking on.
const TARGET_ADDED_P99_MICROS: f64 = 300.0;
const WARM_UP_SECONDS: f64 = 1.0;
/// p99.9 is printed only with at least this many samples (the 2nd largest of 2,000 is noise enough).
const P999_MIN_SAMPLES: usize = 2_000;

/// A chat request without `max_tokens` (warden's cap adds it on the LLM route, rewriting the body).
const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"How can I reach Jane Roe?"}]}"#;
const CHAT_STREAMED: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"How can I reach Jane Roe?"}]}"#;

/// The values the stand-in plants in every answer ([`warden_testkit::llm::DEFAULT_ANSWER`]).
const PLANTED_EMAIL: &str = "jane.roe@example.com";
const PLANTED: [&str; 3] = [PLANTED_EMAIL, "415 555 0100", "4111 1111 1111 1111"];

/// Agents may POST to any HTTP connection; nothing permits `unmask`, so masked connections stay masked.
const POLICIES: &str = r#"
@id("agents-call-llms")
permit (principal in Warden::Group::"agents", action == Warden::Action::"http:POST", resource);
"#;

/// What an answer must (not) hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The planted email, as the stand-in sent it.
    Planted,
    /// None of the planted values.
    Masked,
}

/// Where one side sends its requests, and what it sends.
struct Target {
    name: &'static str,
    address: SocketAddr,
    path: String,
    authorization: String,
    body: Bytes,
    streamed: bool,
    /// `x-standin-chunk-bytes`: the stand-in's delta size for this side's streams.
    chunk_bytes: Option<&'static str>,
    expect: Expect,
}

/// A keep-alive connection, reopened after a failure.
struct Connection {
    address: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            let stream = TcpStream::connect(self.address).await.map_err(|error| format!("connect: {error}"))?;
            stream.set_nodelay(true).map_err(|error| format!("nodelay: {error}"))?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|error| format!("handshake: {error}"))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("just opened");
        sender.ready().await.map_err(|error| format!("connection not ready: {error}"))?;
        Ok(sender)
    }
}

/// When each request of one run is due, and which is next.
struct Schedule {
    start: Instant,
    rate: f64,
    total: usize,
    next: AtomicUsize,
}

impl Schedule {
    fn due(&self, index: usize) -> Instant {
        self.start + Duration::from_secs_f64(index as f64 / self.rate)
    }
}

/// One answered request, in microseconds from its start.
struct Timing {
    first_byte: f64,
    first_content: Option<f64>,
    total: f64,
    /// A stream's first content delta.
    first_delta: Option<String>,
}

/// Everything measured on one side at one rate, over every round.
#[derive(Default)]
struct Tally {
    total: Vec<f64>,
    first_byte: Vec<f64>,
    first_content: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    queued: usize,
    /// Requests sent, and the time the runs took to send them (from the first due time to the last request sent,
    /// plus one interval): their quotient is the rate achieved.
    sent: usize,
    sending_seconds: f64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.total.extend(other.total);
        self.first_byte.extend(other.first_byte);
        self.first_content.extend(other.first_content);
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.queued += other.queued;
        self.sent += other.sent;
        self.sending_seconds += other.sending_seconds;
    }

    fn record(&mut self, result: Result<Timing, String>) {
        match result {
            Ok(timing) => {
                self.total.push(timing.total);
                self.first_byte.push(timing.first_byte);
                if let Some(first_content) = timing.first_content {
                    self.first_content.push(first_content);
                }
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }

    fn achieved_rate(&self) -> f64 {
        self.sent as f64 / self.sending_seconds.max(f64::EPSILON)
    }
}

/// The request `target` sends.
fn request(target: &Target) -> Request<Full<Bytes>> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(&target.path)
        .header(HOST, target.address.to_string())
        .header(AUTHORIZATION, &target.authorization)
        .header(CONTENT_TYPE, "application/json");
    if let Some(chunk_bytes) = target.chunk_bytes {
        request = request.header("x-standin-chunk-bytes", chunk_bytes);
    }
    request.body(Full::new(target.body.clone())).expect("a valid request")
}

/// Sends one request on `connection` and reads its whole answer, checking it; timings from `start`.
async fn exchange(connection: &mut Connection, target: &Target, start: Instant) -> Result<Timing, String> {
    let micros = |instant: Instant| instant.duration_since(start).as_secs_f64() * 1e6;
    let request = request(target);
    let sent = connection.sender().await?.send_request(request).await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            connection.sender = None;
            return Err(format!("request: {error}"));
        }
    };
    let status = response.status();
    let mut body = response.into_body();
    let mut first_byte = None;
    let mut first_content = None;
    let mut received = Vec::new();
    let mut events = SseText::default();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                connection.sender = None;
                return Err(format!("reading the answer: {error}"));
            }
        };
        let Ok(data) = frame.into_data() else { continue };
        let now = Instant::now();
        first_byte.get_or_insert(now);
        received.extend_from_slice(&data);
        if target.streamed && events.push(&received) && first_content.is_none() {
            first_content = Some(now);
        }
        if target.streamed {
            received.drain(..events.consumed);
            events.consumed = 0;
        }
    }
    let end = Instant::now();
    if status != StatusCode::OK {
        return Err(format!("status {status}: {}", String::from_utf8_lossy(&received)));
    }
    let text = if target.streamed { events.text } else { String::from_utf8_lossy(&received).into_owned() };
    match target.expect {
        Expect::Planted if !text.contains(PLANTED_EMAIL) => return Err(format!("no planted email in {text:?}")),
        Expect::Masked if PLANTED.iter().any(|value| text.contains(value)) => {
            return Err(format!("a planted value unmasked in {text:?}"))
        }
        _ => {}
    }
    if target.streamed && first_content.is_none() {
        return Err("a stream without content".to_string());
    }
    Ok(Timing {
        first_byte: micros(first_byte.unwrap_or(end)),
        first_content: first_content.map(micros),
        total: micros(end),
        first_delta: events.first,
    })
}

/// The content of a chat completions stream, frame by frame.
#[derive(Default)]
struct SseText {
    text: String,
    first: Option<String>,
    /// Bytes of the buffer given to the last push that held whole frames.
    consumed: usize,
}

impl SseText {
    /// Reads the whole frames in `buffer`; whether one of them had a delta with content.
    fn push(&mut self, buffer: &[u8]) -> bool {
        let mut content = false;
        while let Some(end) = buffer[self.consumed..].windows(2).position(|pair| pair == b"\n\n") {
            let frame = &buffer[self.consumed..self.consumed + end];
            self.consumed += end + 2;
            let Some(data) = frame.split(|byte| *byte == b'\n').find_map(|line| line.strip_prefix(b"data: ")) else {
                continue;
            };
            if data == b"[DONE]" {
                continue;
            }
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { continue };
            let delta = value["choices"][0]["delta"]["content"].as_str().unwrap_or_default();
            if !delta.is_empty() {
                content = true;
                self.text.push_str(delta);
                self.first.get_or_insert_with(|| delta.to_string());
            }
        }
        content
    }
}

/// One connection's share of a run: the next due request, again and again, until the schedule is done.
/// Also the instant of the last request it sent.
async fn drive(
    mut connection: Connection,
    target: Arc<Target>,
    schedule: Arc<Schedule>,
) -> (Connection, Tally, Option<Instant>) {
    let mut tally = Tally::default();
    let mut last_sent = None;
    loop {
        let index = schedule.next.fetch_add(1, Ordering::Relaxed);
        if index >= schedule.total {
            break;
        }
        let due = schedule.due(index);
        let start = if Instant::now() < due {
            tokio::time::sleep_until(due.into()).await;
            Instant::now()
        } else {
            // Every connection was busy at the due time: the wait is the system's.
            tally.queued += 1;
            due
        };
        tally.sent += 1;
        last_sent = Some(Instant::now());
        tally.record(exchange(&mut connection, &target, start).await);
    }
    (connection, tally, last_sent)
}

/// Runs `target` at `rate` for `seconds` on the connections of `pool`.
async fn run(pool: &mut Vec<Connection>, target: &Arc<Target>, rate: f64, seconds: f64) -> Tally {
    let schedule = Arc::new(Schedule {
        start: Instant::now() + Duration::from_millis(2),
        rate,
        total: (rate * seconds).round() as usize,
        next: AtomicUsize::new(0),
    });
    let tasks: Vec<_> =
        pool.drain(..).map(|connection| tokio::spawn(drive(connection, target.clone(), schedule.clone()))).collect();
    let mut tally = Tally::default();
    let mut last_sent = schedule.start;
    for task in tasks {
        let (connection, part, sent) = task.await.expect("a connection task panicked");
        pool.push(connection);
        tally.merge(part);
        last_sent = last_sent.max(sent.unwrap_or(last_sent));
    }
    tally.sending_seconds = (last_sent - schedule.start).as_secs_f64() + 1.0 / rate;
    tally
}

/// One answer of `target`, whole, on a connection of its own.
async fn fetch(target: &Target) -> Bytes {
    let mut connection = Connection { address: target.address, sender: None };
    let request = request(target);
    let sender = connection.sender().await.expect("connect");
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK, "{}", target.name);
    response.into_body().collect().await.expect("the body").to_bytes()
}

/// The value at `quantile` (nearest rank) of `values`.
fn quantile(values: &[f64], quantile: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn p999(values: &[f64]) -> String {
    if values.len() >= P999_MIN_SAMPLES {
        format!("{:.0}", quantile(values, 0.999))
    } else {
        "-".to_string()
    }
}

fn environment(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|value| value.trim().parse().ok()).unwrap_or(default)
}

fn rates_from(name: &str, default: &str) -> Vec<f64> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_string());
    let rates: Vec<f64> = text
        .split(',')
        .filter(|rate| !rate.trim().is_empty())
        .map(|rate| rate.trim().parse().unwrap_or_else(|_| panic!("{name}: {rate:?} is not a rate")))
        .filter(|rate: &f64| *rate > 0.0)
        .collect();
    rates
}

/// The routes warden serves in this bench: `plain` and `openai`, both to the stand-in.
fn connections(standin: &LlmStandIn, key_file: &std::path::Path) -> String {
    format!(
        r#"
[[connection]]
name = "plain"
kind = "http"
url = "{url}"
auth = {{ bearer = {{ file = "{key}" }} }}

[[connection]]
name = "openai"
kind = "http"
url = "{url}"
api = "openai"
auth = {{ bearer = {{ file = "{key}" }} }}
models = ["gpt-4o-mini", "gpt-4o"]
max_tokens = 1024

[connection.masking]
detect = ["all"]
"#,
        url = standin.base_url(),
        key = key_file.display(),
    )
}

/// A reference HTTP proxy between the load generator and the stand-in: haproxy 2.x in `mode http`, keep-alive on
/// both sides, replacing the caller's `Authorization` with the stand-in's key (as warden injects its credential),
/// with its default threads (one per core). No policy, masking or audit: what any HTTP proxy costs on this machine.
struct Haproxy {
    address: SocketAddr,
    child: std::process::Child,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the reference proxy when `BENCH_REFERENCE=haproxy` (haproxy must be on the PATH: `apt-get install
/// haproxy`); none otherwise.
fn reference_proxy(standin: &LlmStandIn, directory: &std::path::Path) -> Option<Haproxy> {
    let wanted = std::env::var("BENCH_REFERENCE").unwrap_or_default();
    match wanted.trim() {
        "" => return None,
        "haproxy" => {}
        other => panic!("BENCH_REFERENCE: {other:?} is not a reference this bench knows (haproxy)"),
    }
    // A free port: bound, read, released (haproxy cannot report a port it picked).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let config = directory.join("haproxy.cfg");
    let text = format!(
        r#"global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend bench
    bind {address}
    default_backend standin
backend standin
    http-request set-header Authorization "Bearer {key}"
    server standin {upstream}
"#,
        key = LlmStandInOptions::default().openai_key,
        upstream = standin.address(),
    );
    std::fs::write(&config, text).expect("write haproxy.cfg");
    let child = std::process::Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("BENCH_REFERENCE=haproxy: cannot start haproxy ({error}); apt-get install haproxy")
        });
    let haproxy = Haproxy { address, child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "haproxy is not listening on {address} after 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(haproxy)
}

/// `[runtime] workers` from `BENCH_WORKERS`, when set (warden's default otherwise: one per core).
fn runtime_config() -> String {
    match std::env::var("BENCH_WORKERS") {
        Ok(workers) => format!("\n[runtime]\nworkers = {}\n", workers.trim()),
        Err(_) => String::new(),
    }
}

/// A pool of `count` connections to `address`, each opened on its first use.
fn pool(address: SocketAddr, count: usize) -> Vec<Connection> {
    (0..count).map(|_| Connection { address, sender: None }).collect()
}

/// One side: its target and its connections.
struct Side {
    target: Arc<Target>,
    pool: Vec<Connection>,
}

/// Runs every side at every rate, `rounds` times, the side order rotating; one tally per rate and side.
async fn measure(sides: &mut [Side], rates: &[f64], seconds: f64, rounds: usize) -> Vec<Vec<Tally>> {
    if rates.is_empty() {
        return Vec::new();
    }
    let top = rates.iter().copied().fold(0.0, f64::max);
    for side in sides.iter_mut() {
        let warm_up = run(&mut side.pool, &side.target, top, WARM_UP_SECONDS).await;
        assert_eq!(
            warm_up.errors, 0,
            "{}: {} errors in the warm-up, the first: {:?}",
            side.target.name, warm_up.errors, warm_up.first_error
        );
    }
    let mut tallies: Vec<Vec<Tally>> = rates.iter().map(|_| sides.iter().map(|_| Tally::default()).collect()).collect();
    for round in 0..rounds {
        for (rate_index, rate) in rates.iter().enumerate() {
            for turn in 0..sides.len() {
                let side_index = (round + turn) % sides.len();
                let side = &mut sides[side_index];
                let tally = run(&mut side.pool, &side.target, *rate, seconds).await;
                eprintln!(
                    "round {}/{rounds}, {rate:.0}/s, {}: p50 {:.0} µs, p99 {:.0} µs, {} errors",
                    round + 1,
                    side.target.name,
                    quantile(&tally.total, 0.5),
                    quantile(&tally.total, 0.99),
                    tally.errors
                );
                tallies[rate_index][side_index].merge(tally);
            }
        }
    }
    tallies
}

fn print_latency_table(names: &[&str], rate: f64, tallies: &[Tally]) {
    println!("\n{rate:.0} requests/s");
    println!(
        "{:<22}  {:>8}  {:>10}  {:>6}  {:>6}  {:>7}  {:>7}  {:>8}",
        "side", "requests", "achieved/s", "errors", "queued", "p50 µs", "p99 µs", "p99.9 µs"
    );
    for (name, tally) in names.iter().zip(tallies) {
        println!(
            "{:<22}  {:>8}  {:>10.1}  {:>6}  {:>6}  {:>7.0}  {:>7.0}  {:>8}",
            name,
            tally.total.len(),
            tally.achieved_rate(),
            tally.errors,
            tally.queued,
            quantile(&tally.total, 0.5),
            quantile(&tally.total, 0.99),
            p999(&tally.total)
        );
        if let Some(error) = &tally.first_error {
            println!("    first error: {error}");
        }
    }
}

/// Per route, the phases of a non-streamed request as warden recorded them in its audit trail (`forwarded_us`,
/// `first_byte_us`, `duration_us`): before forwarding (reading, checking, authorizing), upstream (sent → the
/// response head read, the worker's wake-up included), and after the head (the answer read, masked and written, up
/// to the record).
async fn time_inside_warden(gateway: &TestGateway) -> Vec<String> {
    gateway.flush().await;
    let (events, _) = gateway.store().audit_log(None).await.expect("the audit trail");
    let mut phases: std::collections::BTreeMap<String, [Vec<f64>; 3]> = std::collections::BTreeMap::new();
    for sealed in events.iter().filter(|sealed| sealed.event.kind == "statement") {
        let body = &sealed.event.body;
        let http = &body["http"];
        let (Some(forwarded), Some(first_byte), Some(total)) =
            (http["forwarded_us"].as_u64(), http["first_byte_us"].as_u64(), body["duration_us"].as_u64())
        else {
            continue;
        };
        if http["stream"] == serde_json::Value::Bool(true) {
            continue;
        }
        let route = sealed.event.connection.clone().unwrap_or_default();
        let entry = phases.entry(route).or_default();
        entry[0].push(forwarded as f64);
        entry[1].push(first_byte.saturating_sub(forwarded) as f64);
        entry[2].push(total.saturating_sub(first_byte) as f64);
    }
    let show =
        |values: &[f64]| format!("{:.0} / {:.0} / {}", quantile(values, 0.5), quantile(values, 0.99), p999(values));
    phases
        .into_iter()
        .map(|(route, [before, upstream, after])| {
            format!(
                "{route} ({} requests): before forwarding {}; upstream {}; after the head {}",
                before.len(),
                show(&before),
                show(&upstream),
                show(&after)
            )
        })
        .collect()
}

/// `(rate, added p99)` pairs as `+312 µs at 200/s, …`.
fn per_rate(figures: &[(f64, f64)]) -> String {
    let each: Vec<String> = figures.iter().map(|(rate, p99)| format!("{p99:+.0} µs at {rate:.0}/s")).collect();
    each.join(", ")
}

/// warden − direct at `quantile`, in microseconds.
fn added(warden: &[f64], direct: &[f64], at: f64) -> f64 {
    quantile(warden, at) - quantile(direct, at)
}

/// The streamed pairs: the stand-in's delta size, and what its first delta is with the default answer. Real
/// providers cut at tokens, which carry their leading space (`"Sure"`, `"."`, `" Write"`), so a delta usually ends
/// right after a word: the 4-byte pair is the realistic one for the first content.
const STREAM_PAIRS: [(&str, &str); 2] =
    [("6", "6-byte deltas, the first ends with a space"), ("4", "4-byte deltas, the first ends mid-text")];

async fn bench(gateway: &TestGateway, standin: &LlmStandIn, chunk_delay_ms: usize, reference: Option<&Haproxy>) {
    let rates = rates_from("BENCH_RATES", "200,500,1000");
    assert!(!rates.is_empty(), "BENCH_RATES: no rate");
    let stream_rates = rates_from("BENCH_STREAM_RATES", "50,100");
    let seconds = environment("BENCH_SECONDS", 5).max(1) as f64;
    let rounds = environment("BENCH_ROUNDS", 3).max(1);
    let connections = environment("BENCH_CONNECTIONS", 64).max(1);

    let warden = gateway.gateway().http_address().expect("the gateway has an HTTP listener");
    let upstream_key = format!("Bearer {}", LlmStandInOptions::default().openai_key);
    let warden_key = format!("Bearer {}", gateway.api_key);
    let target = |name: &'static str, through: Option<&str>, body: &'static str, chunk_bytes, expect| {
        let (address, prefix, authorization) = match through {
            None => (standin.address(), String::new(), upstream_key.clone()),
            Some(connection) => (warden, format!("/{connection}"), warden_key.clone()),
        };
        Arc::new(Target {
            name,
            address,
            path: format!("{prefix}/v1/chat/completions"),
            authorization,
            body: Bytes::from_static(body.as_bytes()),
            streamed: body.contains("\"stream\":true"),
            chunk_bytes,
            expect,
        })
    };
    let direct = target("direct", None, CHAT, None, Expect::Planted);
    let plain = target("warden plain", Some("plain"), CHAT, None, Expect::Planted);
    let llm = target("warden LLM, masked", Some("openai"), CHAT, None, Expect::Masked);
    let stream_targets: Vec<Arc<Target>> = STREAM_PAIRS
        .iter()
        .flat_map(|(chunk_bytes, _)| {
            [
                target("direct", None, CHAT_STREAMED, Some(*chunk_bytes), Expect::Planted),
                target("warden LLM, masked", Some("openai"), CHAT_STREAMED, Some(*chunk_bytes), Expect::Masked),
            ]
        })
        .collect();

    // One answer of each kind, not timed, to show what the sides get (the warm-up checks every side's answers).
    let direct_answer = fetch(&direct).await;
    let masked_answer = fetch(&llm).await;
    let mut first_deltas = Vec::new();
    for target in &stream_targets {
        let mut connection = Connection { address: target.address, sender: None };
        let timing = exchange(&mut connection, target, Instant::now()).await;
        let timing = timing.unwrap_or_else(|error| panic!("{}: a streamed answer: {error}", target.name));
        first_deltas.push(timing.first_delta.unwrap_or_default());
    }

    let mut sides = vec![
        Side { target: direct.clone(), pool: pool(standin.address(), connections) },
        Side { target: plain, pool: pool(warden, connections) },
        Side { target: llm, pool: pool(warden, connections) },
    ];
    // The reference proxy, last, so the sides above keep their places.
    if let Some(haproxy) = reference {
        let target = Arc::new(Target {
            name: "haproxy (mode http)",
            address: haproxy.address,
            path: "/v1/chat/completions".to_string(),
            authorization: warden_key.clone(),
            body: Bytes::from_static(CHAT.as_bytes()),
            streamed: false,
            chunk_bytes: None,
            expect: Expect::Planted,
        });
        sides.push(Side { target, pool: pool(haproxy.address, connections) });
    }
    let started = Instant::now();
    let tallies = measure(&mut sides, &rates, seconds, rounds).await;
    // The streamed sides reuse the open connections: direct, warden, direct (a new pool), warden.
    let mut reused = [
        std::mem::take(&mut sides[0].pool),
        std::mem::take(&mut sides[2].pool),
        pool(standin.address(), connections),
        std::mem::take(&mut sides[1].pool),
    ]
    .into_iter();
    let mut stream_sides: Vec<Side> = stream_targets
        .iter()
        .map(|target| Side { target: target.clone(), pool: reused.next().expect("a pool per streamed side") })
        .collect();
    let stream_tallies = measure(&mut stream_sides, &stream_rates, seconds, rounds).await;
    let elapsed = started.elapsed();

    println!(
        "\n`POST /v1/chat/completions`, open loop over {connections} keep-alive HTTP/1.1 connections per side: \
         {seconds:.0} s per rate and side in each of {rounds} rounds, after {WARM_UP_SECONDS:.0} s of warm-up per \
         side, sides in turn ({:.0} s in all)",
        elapsed.as_secs_f64()
    );
    let content = |answer: &[u8]| {
        let value: serde_json::Value = serde_json::from_slice(answer).expect("a JSON answer");
        value["choices"][0]["message"]["content"].clone()
    };
    println!(
        "answers: direct {} bytes, {}; warden LLM route {} bytes, {}",
        direct_answer.len(),
        content(&direct_answer),
        masked_answer.len(),
        content(&masked_answer)
    );
    println!(
        "warden: plain route (kind = \"http\", no api, no masking); LLM route (api = \"openai\", detect = [\"all\"], \
         models, max_tokens)"
    );
    println!("latency: request sent (or due, when every connection was busy) → last byte of the answer");

    let split = time_inside_warden(gateway).await;
    let names: Vec<&str> = sides.iter().map(|side| side.target.name).collect();
    let mut summary: [(&str, Vec<(f64, f64)>); 2] = [("plain", Vec::new()), ("LLM, masking on,", Vec::new())];
    let mut reference_p99: Vec<(f64, f64)> = Vec::new();
    for (rate, rate_tallies) in rates.iter().zip(&tallies) {
        print_latency_table(&names, *rate, rate_tallies);
        let direct = &rate_tallies[0].total;
        for (route, warden) in [(0, &rate_tallies[1].total), (1, &rate_tallies[2].total)] {
            let (p50, p99) = (added(warden, direct, 0.5), added(warden, direct, 0.99));
            println!("added by warden, {} route: p50 {p50:+.0} µs, p99 {p99:+.0} µs", summary[route].0);
            summary[route].1.push((*rate, p99));
        }
        if let Some(haproxy) = rate_tallies.get(3) {
            let (p50, p99) = (added(&haproxy.total, direct, 0.5), added(&haproxy.total, direct, 0.99));
            println!(
                "added by haproxy (the reference, no policy, masking or audit): p50 {p50:+.0} µs, p99 {p99:+.0} µs"
            );
            reference_p99.push((*rate, p99));
        }
    }

    if !stream_rates.is_empty() {
        println!(
            "\nstreamed (`stream: true`, LLM route): the stand-in sends the role chunk at once, then content deltas \
             {chunk_delay_ms} ms apart; times from the request sent to the first byte of the body (the role chunk), \
             to the first frame whose delta has content, and to the end of the stream"
        );
    }
    for (rate, rate_tallies) in stream_rates.iter().zip(&stream_tallies) {
        println!("\n{rate:.0} streams/s");
        println!(
            "{:<22}  {:>7}  {:>10}  {:>6}  {:>6}  {:>8}  {:>8}  {:>11}  {:>11}  {:>10}",
            "side",
            "streams",
            "achieved/s",
            "errors",
            "queued",
            "byte p50",
            "byte p99",
            "content p50",
            "content p99",
            "end p50 ms"
        );
        for (pair, (_, what)) in STREAM_PAIRS.iter().enumerate() {
            println!(
                "{what} (first content delta: direct {:?}, through warden {:?})",
                first_deltas[2 * pair],
                first_deltas[2 * pair + 1]
            );
            for (side, tally) in stream_sides[2 * pair..].iter().zip(&rate_tallies[2 * pair..2 * pair + 2]) {
                println!(
                    "{:<22}  {:>7}  {:>10.1}  {:>6}  {:>6}  {:>8.0}  {:>8.0}  {:>11.0}  {:>11.0}  {:>10.1}",
                    side.target.name,
                    tally.total.len(),
                    tally.achieved_rate(),
                    tally.errors,
                    tally.queued,
                    quantile(&tally.first_byte, 0.5),
                    quantile(&tally.first_byte, 0.99),
                    quantile(&tally.first_content, 0.5),
                    quantile(&tally.first_content, 0.99),
                    quantile(&tally.total, 0.5) / 1e3
                );
                if let Some(error) = &tally.first_error {
                    println!("    first error: {error}");
                }
            }
            let (direct, warden) = (&rate_tallies[2 * pair], &rate_tallies[2 * pair + 1]);
            println!(
                "added by warden: first byte p50 {:+.0} µs, p99 {:+.0} µs; first content p50 {:+.0} µs, p99 {:+.0} \
                 µs; end of stream p50 {:+.0} µs",
                added(&warden.first_byte, &direct.first_byte, 0.5),
                added(&warden.first_byte, &direct.first_byte, 0.99),
                added(&warden.first_content, &direct.first_content, 0.5),
                added(&warden.first_content, &direct.first_content, 0.99),
                added(&warden.total, &direct.total, 0.5)
            );
        }
    }
    if !stream_rates.is_empty() {
        println!(
            "(warden's streaming masker releases a delta's text only up to where no value can be in progress: a \
             delta ending mid-text keeps its last word until the next delta, {chunk_delay_ms} ms later here, shows \
             how it goes on)"
        );
    }

    println!();
    for (route, figures) in &summary {
        let worst = figures.iter().map(|(_, p99)| *p99).fold(f64::MIN, f64::max);
        let best = figures.iter().map(|(_, p99)| *p99).fold(f64::MAX, f64::min);
        // A direct side slower than warden's at p99 was stalled by the machine, not helped by a shorter path: the
        // round says nothing about the target either way.
        let verdict = if best < 0.0 {
            "inconclusive (direct p99 above warden's at some rate: the machine stalled the direct side; run again)"
        } else if worst <= TARGET_ADDED_P99_MICROS {
            "met"
        } else {
            "NOT met"
        };
        println!("{route} route: added p99 {}; target ≤ {TARGET_ADDED_P99_MICROS:.0} µs: {verdict}", per_rate(figures));
    }

    if !reference_p99.is_empty() {
        println!("haproxy (mode http), the reference: added p99 {}", per_rate(&reference_p99));
    }

    println!(
        "\nwhere a request's time goes inside warden, from its audit trail (every non-streamed request of the run, \
         warm-up included; p50 / p99 / p99.9 µs):"
    );
    for line in &split {
        println!("{line}");
    }

    let errors: usize = tallies.iter().chain(&stream_tallies).flatten().map(|tally| tally.errors).sum();
    assert_eq!(errors, 0, "{errors} requests failed");
}

fn main() {
    let postgres = TempPostgres::start().expect("throwaway PostgreSQL starts");
    let app = AppDatabase::create(&postgres, "app");
    let chunk_delay_ms = environment("BENCH_CHUNK_DELAY_MS", 20);

    // The stand-in on its own runtime (one thread), so its work and the load generator's do not queue on each
    // other's thread.
    let standin_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("llm-stand-in")
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let standin = standin_runtime.block_on(LlmStandIn::start(LlmStandInOptions {
        chunk_delay: Duration::from_millis(chunk_delay_ms as u64),
        record_requests: false,
        ..LlmStandInOptions::default()
    }));

    // warden's accept loop and state writer on their own runtime; its sessions on its own worker threads.
    let gateway_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("warden")
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let secrets = tempfile::tempdir().expect("a secrets directory");
    let key_file = secrets.path().join("openai.key");
    std::fs::write(&key_file, LlmStandInOptions::default().openai_key).expect("write the upstream key");
    let mut gateway = gateway_runtime.block_on(
        TestGateway::builder(&postgres, &app)
            .listen_extra("http = \"127.0.0.1:0\"")
            .policies(POLICIES)
            .config_extra(&(connections(&standin, &key_file) + &runtime_config()))
            .start(),
    );

    // The load generator: one thread.
    let client_runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let reference = reference_proxy(&standin, secrets.path());
    client_runtime.block_on(bench(&gateway, &standin, chunk_delay_ms, reference.as_ref()));
    drop(reference);

    gateway_runtime.block_on(async {
        gateway.flush().await;
        let dropped = gateway.gateway().recorder().dropped_events();
        assert_eq!(dropped, 0, "the gateway dropped {dropped} recorded events");
        gateway.stop().await;
    });
    drop(standin);
}
