//! Holding a deferred statement, at the protocol level: the client's statement does not reach the upstream until
//! its deferral decides; the client is told it waits; allowed, it runs; refused, the upstream gets a stand-in that
//! fails and the client gets the refusal, with its session (and extended-protocol batch) as PostgreSQL leaves them.
//!
//! The upstream here is a scripted byte stream (these tests are about the relay's ordering); the same flows run
//! against a real PostgreSQL in the gateway's end-to-end tests.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::hooks::{Admission, Admitted, AuthFuture, Deferred, StatementRefusal};

struct Hooks {
    statements: mpsc::UnboundedSender<StatementEvent>,
}

impl SessionHooks for Hooks {
    fn authenticate<'a>(&'a self, _credential: &'a str) -> AuthFuture<'a> {
        unreachable!("the relay does not authenticate")
    }
    fn admit(&self, _admission: &Admission<'_>) -> Result<Admitted, String> {
        unreachable!("the relay does not admit")
    }
    fn session_started(&self, _session: &SessionInfo) -> Option<Durable> {
        None
    }
    fn statement(&self, _session: &SessionInfo, statement: StatementEvent) -> Option<Durable> {
        let _ = self.statements.send(statement);
        None
    }
    fn session_ended(&self, _session: &SessionInfo, _reason: &str) -> Option<Durable> {
        None
    }
}

/// Defers every statement containing `DELETE`; the test answers each deferral through `decisions`.
struct Guard {
    deferral: Arc<dyn Deferral>,
}

impl StatementGuard for Guard {
    fn query(&mut self, text: &str) -> Judgement {
        self.judge(text)
    }
    fn parse(&mut self, _name: &str, text: &str) -> Judgement {
        self.judge(text)
    }
    fn function_call(&mut self, _oid: i32) -> Judgement {
        Judgement::default()
    }
    fn server_parameter(&mut self, _name: &str, _value: &str) {}
    fn transaction_status(&mut self, _status: u8) {}
}

impl Guard {
    fn judge(&self, text: &str) -> Judgement {
        let deferral = text.contains("DELETE").then(|| self.deferral.clone());
        Judgement { deferral, ..Judgement::default() }
    }
}

type Decision = oneshot::Sender<Result<(), StatementRefusal>>;

/// Hands each deferred statement (with a way to answer it) to the test, after telling the client it waits.
struct Deferrals {
    asked: mpsc::UnboundedSender<(DeferredStatement, Decision)>,
}

impl Deferral for Deferrals {
    fn decide(&self, statement: DeferredStatement, notices: Notices) -> Deferred {
        let (answer, decided) = oneshot::channel();
        notices.notice("01000", "waiting for approval apr_1");
        let _ = self.asked.send((statement, answer));
        Box::pin(async move {
            match decided.await {
                Ok(Ok(())) => Ok(None),
                Ok(Err(refusal)) => Err(refusal),
                Err(_) => Err(StatementRefusal { code: "57014", message: "nobody decided".into() }),
            }
        })
    }
}

struct Running {
    client: DuplexStream,
    upstream: DuplexStream,
    asked: mpsc::UnboundedReceiver<(DeferredStatement, Decision)>,
    statements: mpsc::UnboundedReceiver<StatementEvent>,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn start() -> Running {
    let (client, mut relay_client) = tokio::io::duplex(1 << 16);
    let (upstream, mut relay_upstream) = tokio::io::duplex(1 << 16);
    let (asked_sender, asked) = mpsc::unbounded_channel();
    let (statements_sender, statements) = mpsc::unbounded_channel();
    let (stop, stop_receiver) = tokio::sync::watch::channel(false);
    let (_ending_sender, ending) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let _ending_sender = _ending_sender;
        let session = SessionInfo {
            id: Arc::from("s1"),
            identity: warden_identity::Identity::new("agent", Vec::new(), warden_identity::IdentityKind::ApiKey),
            connection: "app".into(),
            client_address: "127.0.0.1:5000".parse::<SocketAddr>().unwrap(),
            user_name: "agent".into(),
            application_name: None,
            started_at: OffsetDateTime::now_utc(),
        };
        let hooks = Hooks { statements: statements_sender };
        let guard = Guard { deferral: Arc::new(Deferrals { asked: asked_sender }) };
        let context = RelayContext {
            session: &session,
            hooks: &hooks,
            max_message_bytes: 1 << 20,
            upstream_early_bytes: &[],
            stop: stop_receiver,
            ending,
            deadline: None,
            guard: Box::new(guard),
            masking: None,
            max_row_bytes: 1 << 20,
            canceled: Arc::new(tokio::sync::Notify::new()),
        };
        let (mut client_read, mut client_write) = tokio::io::split(&mut relay_client);
        let (mut upstream_read, mut upstream_write) = tokio::io::split(&mut relay_upstream);
        relay((&mut client_read, &mut client_write), (&mut upstream_read, &mut upstream_write), context).await
    });
    Running { client, upstream, asked, statements, _stop: stop }
}

/// Reads exactly `count` whole messages.
async fn read_messages(stream: &mut DuplexStream, count: usize) -> Vec<(u8, Vec<u8>)> {
    let mut messages = Vec::new();
    for _ in 0..count {
        let tag = stream.read_u8().await.expect("a message");
        let length = stream.read_u32().await.expect("a length") as usize;
        let mut body = vec![0; length - 4];
        stream.read_exact(&mut body).await.expect("a body");
        messages.push((tag, body));
    }
    messages
}

fn ready() -> Vec<u8> {
    let mut out = Vec::new();
    backend::ready_for_query(&mut out, b'I');
    out
}

fn complete(tag: &str) -> Vec<u8> {
    let mut out = Vec::new();
    codec::build(&mut out, backend::COMMAND_COMPLETE, |body| codec::put_cstr(body, tag.as_bytes()));
    out
}

fn syntax_error() -> Vec<u8> {
    let mut out = Vec::new();
    backend::error_response(&mut out, Severity::Error, "42601", "syntax error at or near \"warden\"", None);
    out
}

fn text_of(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[tokio::test]
async fn a_held_query_waits_then_runs_when_allowed() {
    let mut running = start();
    running.client.write_all(&frontend::query("DELETE FROM t WHERE id = 1")).await.unwrap();
    let (statement, decide) = running.asked.recv().await.expect("the statement is deferred");
    assert_eq!(&*statement.text, "DELETE FROM t WHERE id = 1");
    let notice = read_messages(&mut running.client, 1).await;
    assert_eq!(notice[0].0, backend::NOTICE_RESPONSE);
    assert!(text_of(&notice[0].1).contains("waiting for approval apr_1"));

    // Nothing reached the upstream yet: the next thing it reads is the statement, once allowed.
    decide.send(Ok(())).unwrap();
    let forwarded = read_messages(&mut running.upstream, 1).await;
    assert_eq!((forwarded[0].0, text_of(&forwarded[0].1)), (frontend::QUERY, "DELETE FROM t WHERE id = 1\0".into()));
    running.upstream.write_all(&[complete("DELETE 1"), ready()].concat()).await.unwrap();
    let answer = read_messages(&mut running.client, 2).await;
    assert_eq!((answer[0].0, answer[1].0), (backend::COMMAND_COMPLETE, backend::READY_FOR_QUERY));
    let recorded = running.statements.recv().await.expect("recorded");
    assert_eq!((recorded.rows, recorded.error), (Some(1), None));
}

#[tokio::test]
async fn a_held_query_refused_gets_the_refusal_and_the_session_goes_on() {
    let mut running = start();
    running.client.write_all(&frontend::query("DELETE FROM t")).await.unwrap();
    let (_, decide) = running.asked.recv().await.expect("deferred");
    read_messages(&mut running.client, 1).await;
    decide.send(Err(StatementRefusal { code: "42501", message: "approval apr_1 denied by alice".into() })).unwrap();
    let forwarded = read_messages(&mut running.upstream, 1).await;
    assert_eq!(text_of(&forwarded[0].1), format!("{STAND_IN}\0"), "the upstream gets the stand-in, never the DELETE");
    running.upstream.write_all(&[syntax_error(), ready()].concat()).await.unwrap();
    let answer = read_messages(&mut running.client, 2).await;
    assert_eq!(answer[0].0, backend::ERROR_RESPONSE);
    assert!(text_of(&answer[0].1).contains("42501") && text_of(&answer[0].1).contains("denied by alice"));
    assert_eq!(answer[1].0, backend::READY_FOR_QUERY);
    let recorded = running.statements.recv().await.expect("recorded");
    assert_eq!(recorded.error.as_deref(), Some("42501: approval apr_1 denied by alice"));

    // The next statement is not held and runs.
    running.client.write_all(&frontend::query("SELECT 1")).await.unwrap();
    let forwarded = read_messages(&mut running.upstream, 1).await;
    assert_eq!(text_of(&forwarded[0].1), "SELECT 1\0");
}

/// Extended protocol: the Parse goes through; the Execute is held with the parameters of its Bind, and what the
/// client pipelined after it (Sync) waits behind it. Refused, the stand-in is a Parse of a statement of warden's own
/// (no client statement is touched) and the rest of the batch is skipped by the server as after any error.
#[tokio::test]
async fn a_held_execute_carries_its_parameters_and_what_follows_waits() {
    let mut running = start();
    let mut batch = frontend::parse("", "DELETE FROM t WHERE id = $1");
    let mut bind = Vec::new();
    codec::build(&mut bind, frontend::BIND, |body| {
        body.extend_from_slice(b"\0\0");
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        body.push(b'7');
        body.extend_from_slice(&0i16.to_be_bytes());
    });
    batch.extend_from_slice(&bind);
    let mut execute = Vec::new();
    codec::build(&mut execute, frontend::EXECUTE, |body| {
        body.push(0);
        body.extend_from_slice(&0i32.to_be_bytes());
    });
    batch.extend_from_slice(&execute);
    let mut sync = Vec::new();
    codec::build(&mut sync, frontend::SYNC, |_| {});
    batch.extend_from_slice(&sync);
    running.client.write_all(&batch).await.unwrap();

    let (statement, decide) = running.asked.recv().await.expect("the Execute is deferred");
    let parameters = statement.parameters.expect("bound parameters");
    assert_eq!(parameters.values, vec![Some(b"7".to_vec())]);
    // Parse and Bind went ahead; the Execute and the Sync wait.
    let ahead = read_messages(&mut running.upstream, 2).await;
    assert_eq!((ahead[0].0, ahead[1].0), (frontend::PARSE, frontend::BIND));
    decide.send(Err(StatementRefusal { code: "42501", message: "approval expired".into() })).unwrap();
    let after = read_messages(&mut running.upstream, 2).await;
    assert_eq!(after[0].0, frontend::PARSE);
    assert!(text_of(&after[0].1).starts_with(&format!("{STAND_IN_NAME}\0{STAND_IN}\0")), "{:?}", text_of(&after[0].1));
    assert_eq!(after[1].0, frontend::SYNC);
    let mut parse_complete = Vec::new();
    codec::build(&mut parse_complete, backend::PARSE_COMPLETE, |_| {});
    let mut bind_complete = Vec::new();
    codec::build(&mut bind_complete, b'2', |_| {});
    running.upstream.write_all(&[parse_complete, bind_complete, syntax_error(), ready()].concat()).await.unwrap();
    let answer = read_messages(&mut running.client, 5).await;
    let tags: Vec<u8> = answer.iter().map(|(tag, _)| *tag).collect();
    assert_eq!(tags, [backend::NOTICE_RESPONSE, b'1', b'2', backend::ERROR_RESPONSE, backend::READY_FOR_QUERY]);
    assert!(text_of(&answer[3].1).contains("approval expired"));
}
