//! What the PostgreSQL front end asks of the rest of the gateway. The protocol crate never talks to the
//! state store or the identity store itself; the gateway implements these hooks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use warden_identity::{AuthError, Identity};

/// One client session, as the hooks see it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Shared by every record of the session.
    pub id: Arc<str>,
    pub identity: Identity,
    pub connection: String,
    pub client_address: SocketAddr,
    /// The user name the client declared (any name is accepted; the identity comes from the key).
    pub user_name: String,
    pub application_name: Option<String>,
    pub started_at: OffsetDateTime,
}

/// One statement and its outcome.
#[derive(Debug, Clone)]
pub struct StatementEvent {
    /// 1-based order within the session.
    pub seq: u64,
    pub started_at: OffsetDateTime,
    pub duration: Duration,
    pub text: Arc<str>,
    pub rows: Option<u64>,
    /// The upstream's error, or warden's refusal, `SQLSTATE: message`.
    pub error: Option<String>,
    /// What the guard attached to the statement when it judged it (for an Execute: what it attached to the
    /// Parse of the prepared statement), handed back untouched.
    pub annotation: Option<Annotation>,
}

/// Whatever a [`StatementGuard`] wants recorded with a statement (its verdict, the classes and tables it
/// saw). The protocol crate never looks inside: it carries the annotation from the judgement to the
/// statement's [`StatementEvent`], so the guard and the recorder agree on its type without this crate
/// knowing it, and recording copies nothing.
pub type Annotation = Arc<dyn std::any::Any + Send + Sync>;

/// A guard's answer about a query, a Parse or a function call.
#[derive(Clone, Default)]
pub struct Judgement {
    pub annotation: Option<Annotation>,
    /// Set when the statement must not reach the upstream.
    pub refusal: Option<StatementRefusal>,
}

/// Why a statement was refused: what the client gets as an ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRefusal {
    pub code: &'static str,
    pub message: String,
}

/// Judges a session's statements before they are forwarded. One per session, owned by its relay.
pub trait StatementGuard: Send {
    /// A simple-protocol Query (possibly several statements).
    fn query(&mut self, text: &str) -> Judgement;
    /// An extended-protocol Parse: judged here, once, for every later Bind/Execute of it.
    fn parse(&mut self, statement_name: &str, text: &str) -> Judgement;
    /// A fast-path FunctionCall, which names a function by OID and bypasses SQL.
    fn function_call(&mut self, function_oid: i32) -> Judgement;
    /// A ParameterStatus the upstream reported (at startup and whenever a reported setting changes).
    fn server_parameter(&mut self, name: &str, value: &str);
    /// The transaction status of each ReadyForQuery: `I` idle, `T` in a transaction block, `E` failed block.
    fn transaction_status(&mut self, status: u8);
}

/// A session asking to start, after authentication and routing, before the upstream is connected.
#[derive(Debug, Clone)]
pub struct Admission<'a> {
    pub identity: &'a Identity,
    pub connection: &'a str,
    pub client_address: SocketAddr,
    /// The client's startup parameters (user, database and protocol extensions removed).
    pub parameters: &'a [(String, String)],
}

/// An admitted session: its guard and the startup parameters to send upstream.
pub struct Admitted {
    pub guard: Box<dyn StatementGuard>,
    pub upstream_parameters: Vec<(String, String)>,
    /// When the session must end (its credential expires, plus any grace); it is then ended with FATAL 57P01.
    pub ends_at: Option<OffsetDateTime>,
}

/// Why warden ends a live session: the FATAL error its client gets and the end recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub code: &'static str,
    pub message: String,
}

/// The answer to [`SessionHooks::authenticate`]: verifying a credential may need IO (an OIDC issuer's keys).
pub type AuthFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Identity, AuthError>> + Send + 'a>>;

pub trait SessionHooks: Send + Sync + 'static {
    /// Verifies the password a client presented (an API key, a warden token or an OIDC token).
    fn authenticate<'a>(&'a self, credential: &'a str) -> AuthFuture<'a>;
    /// Decides whether the session may start (policy `connect`, startup parameters) and sets up its guard.
    /// An `Err` is sent to the client as FATAL 42501.
    fn admit(&self, admission: &Admission<'_>) -> Result<Admitted, String>;
    fn session_started(&self, session: &SessionInfo);
    fn statement(&self, session: &SessionInfo, statement: StatementEvent);
    fn session_ended(&self, session: &SessionInfo, reason: &str);
}
