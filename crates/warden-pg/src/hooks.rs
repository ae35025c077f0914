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
    /// The first rows of its result, as the client received them ([`crate::sample`]), when the hooks ask for
    /// them ([`SessionHooks::result_rows`]) and it had a result.
    pub result: Option<crate::sample::ResultSample>,
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
    /// Set when the statement's fate is decided later (an approval): the relay holds it, and everything the
    /// client sent after it, until [`Deferral::decide`] resolves. For a Parse the hold is at each Execute, when
    /// the parameters are known.
    pub deferral: Option<Arc<dyn Deferral>>,
}

/// Decides a held statement ([`Judgement::deferral`]).
pub trait Deferral: Send + Sync {
    /// Resolves to the annotation to record the statement with when it may run, or the refusal the client gets.
    /// `notices` tells the client something while it waits (a NoticeResponse, delivered between messages).
    fn decide(&self, statement: DeferredStatement, notices: Notices) -> Deferred;
}

/// The answer a [`Deferral`] comes to.
pub type Deferred =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<Annotation>, StatementRefusal>> + Send + 'static>>;

/// A held statement as it will run: its text and, for an extended-protocol Execute, the parameters its portal
/// was bound with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredStatement {
    /// The session it belongs to.
    pub session: Arc<str>,
    pub text: Arc<str>,
    pub parameters: Option<crate::codec::frontend::BindParameters>,
}

/// Sends NoticeResponses to a client whose statement is held.
#[derive(Clone)]
pub struct Notices(pub(crate) tokio::sync::mpsc::UnboundedSender<Vec<u8>>);

impl Notices {
    /// A NoticeResponse with SQLSTATE `code` (`01000`, warning, when unsure) and `message`.
    pub fn notice(&self, code: &str, message: &str) {
        let mut out = Vec::new();
        crate::codec::backend::error_response(&mut out, crate::codec::backend::Severity::Notice, code, message, None);
        // The session may have ended meanwhile: nobody left to tell.
        let _ = self.0.send(out);
    }
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
    /// A statement this guard deferred was allowed to run (its deferral decided so): the guard follows the session
    /// state it changes (a `PREPARE`, a `search_path`), as it does for a statement it allows at once.
    fn deferral_allowed(&mut self, _deferral: &std::sync::Arc<dyn Deferral>) {}
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
    /// Masks what the upstream sends before the client sees it; `None` when nothing is masked for this session
    /// (the connection masks nothing, or policy lets the identity see raw data).
    pub masking: Option<Box<dyn ResponseMasking>>,
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

/// Resolves once what was recorded is durable; `Err` says why it cannot be, and the session ends (fail closed).
pub type Durable = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'static>>;

/// The answer to [`SessionHooks::authenticate`]: verifying a credential may need IO (an OIDC issuer's keys).
pub type AuthFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Identity, AuthError>> + Send + 'a>>;

pub trait SessionHooks: Send + Sync + 'static {
    /// Verifies the password a client presented (an API key, a warden token or an OIDC token).
    fn authenticate<'a>(&'a self, credential: &'a str) -> AuthFuture<'a>;
    /// Decides whether the session may start (policy `connect`, startup parameters) and sets up its guard.
    /// An `Err` is sent to the client as FATAL 42501.
    fn admit(&self, admission: &Admission<'_>) -> Result<Admitted, String>;
    /// A session admitted, before the client is greeted. The answer to return, if any, resolves once the start is
    /// queued for the record (the queue was full): the session waits for it, and an `Err` refuses the session
    /// (nothing goes unrecorded).
    fn session_started(&self, session: &SessionInfo) -> Option<Durable>;
    /// A finished statement. The answer to return, if any, must resolve before the client gets the statement's
    /// answer: with `audit.durability = sync` once its record is durable; otherwise, when the record could not be
    /// queued at once (a full queue), once it is. An error ends the session.
    fn statement(&self, session: &SessionInfo, statement: StatementEvent) -> Option<Durable>;
    /// A statement about to be forwarded upstream (a Query, a Parse, a function call). With `audit.durability =
    /// sync` the answer to return resolves once the request is durable, and the statement is forwarded only then.
    /// How many rows of each statement's result to sample into its [`StatementEvent`] (0: none).
    fn result_rows(&self) -> u32 {
        0
    }
    fn statement_requested(&self, _session: &SessionInfo, _text: &str) -> Option<Durable> {
        None
    }
    /// A session refused after its StartupMessage (bad credential, unknown connection, not admitted, upstream
    /// unreachable): `code` and `reason` are what the client was told.
    /// The answer to return, if any, resolves once the refusal is queued for the record; the refusal is sent after.
    fn session_refused(
        &self,
        _client_address: SocketAddr,
        _about: &RefusedStartup,
        _code: &str,
        _reason: &str,
    ) -> Option<Durable> {
        None
    }
    /// How many values were masked in the session, by detector name (and `column` for column rules); called
    /// once, before [`SessionHooks::session_ended`], when any value was. The answer, if any, is awaited.
    fn session_masked(
        &self,
        _session: &SessionInfo,
        _masked: std::collections::BTreeMap<String, u64>,
    ) -> Option<Durable> {
        None
    }
    /// The session is over. The answer to return, if any, resolves once the end is queued for the record; the
    /// session's task awaits it.
    fn session_ended(&self, session: &SessionInfo, reason: &str) -> Option<Durable>;
}

/// Who a refused session was, as far as its startup got.
#[derive(Debug, Clone)]
pub struct RefusedStartup {
    pub user: String,
    /// The database name asked for (the connection).
    pub connection: String,
    /// Once authenticated.
    pub identity: Option<String>,
}

/// A result column's source, as RowDescription names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceColumn {
    /// `pg_class` OID of the table.
    pub table: u32,
    /// Attribute number of the column within it.
    pub attnum: i16,
}

/// How a statement's computed values (no source column) are masked beyond content detection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DerivedRule {
    /// Computed text-like values and whole rows: masked whole with this strategy.
    pub text: Option<warden_mask::Strategy>,
    /// Computed JSON documents: masked whole with this strategy; when `None`, their members are masked by key
    /// ([`ResponseMasking::json_member_rule`]).
    pub json: Option<warden_mask::Strategy>,
}

/// A COPY TO's output as the masker learned it: the format options, and per column its rule and type.
#[derive(Debug, Clone, Default)]
pub struct CopyShape {
    /// One entry per output column, in order; empty when the columns could not be known (content detection then
    /// applies to every field, which is only acceptable when the connection has no column rules).
    pub columns: Vec<CopyColumn>,
    /// The field delimiter (text: tab, csv: comma, unless the statement set another).
    pub delimiter: u8,
    /// CSV (`FORMAT csv`) rather than text; binary is told by CopyOutResponse itself.
    pub csv: bool,
    /// The CSV quote character.
    pub quote: u8,
    /// The string standing for NULL (text: `\N`, csv: empty).
    pub null: String,
    /// The first line holds the column names (csv `HEADER`), not values.
    pub header: bool,
    /// The rules for derived columns (no source table), as [`ResponseMasking::derived_rule`].
    pub derived: DerivedRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyColumn {
    pub rule: Option<warden_mask::Strategy>,
    /// `pg_class` OID of the column's table (0: derived).
    pub table: u32,
    /// The column's type OID (0: unknown).
    pub type_oid: u32,
}

/// What masking may need to wait for (a catalog lookup on a side connection); `Err` is why it could not, and ends
/// the session rather than pass unmasked data.
pub type MaskFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, String>> + Send + 'static>>;

/// The masking of one session's results: content detection, column rules, and what the relay cannot know itself
/// (which tables a column belongs to, what a COPY outputs). The relay owns the wire formats and calls these.
pub trait ResponseMasking: Send {
    /// The content detectors and strategies.
    fn masker(&self) -> &warden_mask::Masker;
    /// Whether any column rule exists (otherwise the relay never asks for column rules).
    fn has_column_rules(&self) -> bool;
    /// The rule for each column, or the tables (OIDs) whose columns must be looked up first.
    fn column_rules(&self, columns: &[SourceColumn]) -> Result<Vec<Option<warden_mask::Strategy>>, Vec<u32>>;
    /// Looks `tables` up in the upstream's catalog; afterwards [`ResponseMasking::column_rules`] knows them.
    fn look_up(&self, tables: Vec<u32>) -> MaskFuture<()>;
    /// The rules for values `statement` computes (expressions, whole rows) when they may carry a masked column;
    /// `annotation` is what the guard attached to the statement (`None`: unknown, assume the worst).
    fn derived_rule(&self, statement: &str, annotation: Option<&Annotation>) -> DerivedRule;
    /// The rule for a member of a JSON document the statement returns, by its key (a column name).
    fn json_member_rule(&self, annotation: Option<&Annotation>, key: &str) -> Option<warden_mask::Strategy>;
    /// What the `index`-th COPY TO STDOUT of the query `statement` outputs (0-based among its COPY TOs).
    fn copy_out(&self, statement: &str, index: usize, annotation: Option<&Annotation>) -> MaskFuture<CopyShape>;
    /// Whether an error about `schema.table` must have the row values in its detail masked (the table has a
    /// masked column).
    fn table_has_rules(&self, schema: &str, table: &str) -> bool;
}
