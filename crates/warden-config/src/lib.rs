//! warden's configuration: the `warden.toml` file parsed once into a validated, typed [`Config`].
//!
//! This crate owns the file format (the shape in `shared/PRODUCT.md`), the validation rules, and the
//! resolution of secret references (`{ env = "…" }`, `{ file = "…" }`, `{ sha256 = "…" }` for API keys).
//! Every problem is reported with the file, line, column and field it concerns, all problems at once, so
//! `warden check` and `warden gateway` say the same thing. It does no network IO.
#![forbid(unsafe_code)]

mod diagnostics;
mod raw;
mod secret;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diagnostics::{ConfigError, Diagnostic};
pub use secret::Secret;
pub use validate::parse_duration;

/// The default `hold_back` of an HTTP connection: bytes of streamed text held while they could still be part of a
/// value to mask.
pub const DEFAULT_HOLD_BACK: usize = 256;

/// The environment a config is resolved against: where `{ env = "…" }` secrets come from.
///
/// Passed explicitly so tests never have to touch the process environment.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Environment for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A validated configuration. Built only by [`Config::load`] / [`Config::parse`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from (or a label for in-memory text).
    pub source: PathBuf,
    pub state: StateConfig,
    pub listen: ListenConfig,
    pub limits: Limits,
    pub runtime: RuntimeConfig,
    pub connections: Vec<Connection>,
    pub api_keys: Vec<ApiKey>,
    pub policy: PolicyConfig,
    /// OpenID Connect issuers whose ID/access tokens are accepted as credentials.
    pub oidc: Vec<OidcIssuer>,
    pub tokens: TokenConfig,
    pub admin: AdminConfig,
    /// Settings shared by every connection's masking (`[masking]`).
    pub masking: GlobalMasking,
    /// The audit log (`[audit]`).
    pub audit: AuditConfig,
    /// Approval requests (`[approvals]`).
    pub approvals: ApprovalsConfig,
}

/// `[approvals]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovalsConfig {
    /// Where approvers reach the admin API, for the links in messages (`url`); default `http://<[listen] admin>`.
    pub url: Option<String>,
    /// Who is told of each new request (`[[approvals.notify]]`).
    pub notify: Vec<ApprovalNotify>,
}

/// `[[approvals.notify]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalNotify {
    /// `kind = "webhook"`: the request as JSON, POSTed to `url`, signed with HMAC-SHA256 under `secret` (the audit
    /// webhook sink's headers).
    Webhook { url: String, secret: Secret },
    /// `kind = "slack"`: a Slack-compatible incoming-webhook message; the URL is a secret (it holds the token).
    Slack { url: Secret },
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub durability: Durability,
    /// Where every sealed event (and checkpoint) is also sent, as it is committed (`[[audit.sink]]`).
    pub sinks: Vec<AuditSink>,
    /// Result rows of each statement kept in its audit event, masked (`result_rows`, default 10; 0 keeps none).
    /// Rows past this (or past [`AUDIT_RESULT_BYTES`]) are counted, not kept.
    pub result_rows: u32,
    /// How long sessions, statements and audit events are kept (`retention`); `None` keeps them forever.
    pub retention: Option<Duration>,
}

/// The most bytes of result values one statement's audit event keeps.
pub const AUDIT_RESULT_BYTES: usize = 64 * 1024;

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { durability: Durability::Async, sinks: Vec::new(), result_rows: 10, retention: None }
    }
}

/// `[[audit.sink]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// `kind = "jsonl"`: JSON Lines appended to `path` (the same records as `warden audit export`), rotated to
    /// `path.1` … `path.<keep>` when it would pass `max_bytes`.
    Jsonl { path: PathBuf, max_bytes: u64, keep: usize },
    /// `kind = "syslog"`: each record as an RFC 5424 message (facility log audit) whose text is the record's JSON
    /// line, over UDP (one datagram each) or TCP (octet-counted framing, RFC 6587).
    Syslog { address: String, tcp: bool },
    /// `kind = "webhook"`: batches of records POSTed to `url` as JSON Lines (`application/x-ndjson`), signed with
    /// HMAC-SHA256 under `secret`, retried with backoff.
    Webhook { url: String, secret: Secret, max_batch: usize },
}

/// When a recorded event must be durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Events are written in batches behind the data path (at most ~10 ms later); when the writer cannot keep up
    /// and its bounded queue fills, new sessions are refused.
    #[default]
    Async,
    /// A statement is forwarded upstream only once its request is durable in the audit log, and its answer reaches
    /// the client only once its record is; when the log cannot be written, the session ends with an error.
    Sync,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Async => "async",
            Durability::Sync => "sync",
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`, resolving secrets against `env`.
    pub fn load(path: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Unreadable { path: path.to_path_buf(), reason: error.to_string() })?;
        Config::parse(&text, path, env)
    }

    /// Validates `text` as if it had been read from `path` (relative paths resolve against its directory).
    pub fn parse(text: &str, path: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
        validate::parse(text, path, env)
    }

    /// The connection called `name`, if configured.
    pub fn connection(&self, name: &str) -> Option<&Connection> {
        self.connections.iter().find(|connection| connection.name == name)
    }
}

/// Where warden keeps its state (sessions, statements; later approvals and the audit trail).
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// `sqlite://…` (path resolved against the config file's directory) or `postgres://…`.
    pub url: Secret,
}

impl StateConfig {
    pub fn is_sqlite(&self) -> bool {
        self.url.expose().starts_with("sqlite:")
    }

    /// The directory of a SQLite state file, where the gateway keeps its other local state (the token signing
    /// key); `None` for a PostgreSQL store.
    pub fn directory(&self) -> Option<PathBuf> {
        let rest = self.url.expose().strip_prefix("sqlite://")?;
        let file = rest.split_once('?').map_or(rest, |(file, _)| file);
        Path::new(file).parent().map(Path::to_path_buf)
    }
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// The PostgreSQL front end.
    pub postgres: Option<SocketAddr>,
    /// The HTTP front end (HTTP/1.1 and HTTP/2; LLM APIs and plain HTTP services).
    pub http: Option<SocketAddr>,
    /// The admin REST API and web page.
    pub admin: Option<SocketAddr>,
    /// Client-facing TLS; absent means `SSLRequest` is answered with `N`.
    pub tls: Option<ServerTls>,
    /// Accept a cleartext password (the API key) over plaintext TCP from a non-loopback address.
    pub allow_plaintext_password: bool,
    /// The base URL clients reach the HTTP listener at, where it is not the listener's own (behind a load balancer
    /// that terminates TLS, say), without a trailing `/`. URLs warden writes into answers (a batch's `results_url`)
    /// begin with it; without it, with the listener's scheme and the request's `Host`.
    pub http_public_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Refuse clients that do not negotiate TLS (loopback included).
    pub required: bool,
}

/// Bounds that protect the gateway from its inputs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest protocol message accepted from a client; refused before any allocation.
    pub max_message_bytes: usize,
    /// Largest upstream message (a row, a COPY chunk, an error) warden holds whole to mask it; a larger one ends
    /// the session rather than pass unmasked.
    pub max_row_bytes: usize,
    /// Most concurrent client sessions; more are refused with SQLSTATE 53300.
    pub max_sessions: usize,
    /// Time a client has to finish the startup and authentication exchange.
    pub startup_timeout: Duration,
    /// Time allowed to open (and authenticate) the upstream session.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024 * 1024,
            max_row_bytes: 64 * 1024 * 1024,
            max_sessions: 10_000,
            startup_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// How the gateway uses the machine's cores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Worker threads sessions are spread over, each running its sessions start to end; the number of
    /// cores when not set.
    pub workers: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { workers: std::thread::available_parallelism().map_or(1, usize::from) }
    }
}

/// A named downstream target.
#[derive(Debug, Clone)]
pub struct Connection {
    pub name: String,
    pub kind: ConnectionKind,
    /// Where and how warden reaches it, by kind.
    pub target: Target,
    /// What is masked in this connection's responses; `None`: nothing.
    pub masking: Option<MaskingConfig>,
    /// What a client experiences when a statement needs an approval (`approval = { mode = "hold", wait = "5m" }`).
    pub approval: ApprovalMode,
}

impl Connection {
    /// The PostgreSQL upstream, for a `kind = "postgres"` connection.
    pub fn postgres(&self) -> Option<&PostgresTarget> {
        match &self.target {
            Target::Postgres(target) => Some(target),
            Target::Http(_) => None,
        }
    }

    /// The HTTP upstream, for a `kind = "http"` connection.
    pub fn http(&self) -> Option<&HttpTarget> {
        match &self.target {
            Target::Http(target) => Some(target),
            Target::Postgres(_) => None,
        }
    }
}

/// A connection's upstream, by kind.
#[derive(Debug, Clone)]
pub enum Target {
    Postgres(PostgresTarget),
    Http(HttpTarget),
}

/// A PostgreSQL server and the credential warden logs in with.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    pub address: UpstreamAddress,
    pub database: String,
    pub user: String,
    pub password: Option<Secret>,
    pub tls: UpstreamTls,
}

/// An HTTP service (plain, or an LLM provider's API) and the credential warden injects.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// The upstream base URL, `http://` or `https://`, without a trailing `/`; a request to
    /// `/<connection>/rest` goes to `<url>/rest`.
    pub url: String,
    /// The LLM API the upstream speaks, when it is one.
    pub api: Option<LlmApi>,
    /// The credential injected into every upstream request (the caller's own is always removed).
    pub auth: Option<HttpAuth>,
    /// A PEM bundle of trusted roots for an `https` upstream; the system's roots when absent.
    pub ca: Option<PathBuf>,
    /// How long warden waits for the upstream's response headers.
    pub timeout: Duration,
    /// The models a caller may ask for (LLM connections); `None`: any.
    pub models: Option<Vec<String>>,
    /// The most output tokens a request may ask for (LLM connections); requests asking for more, or not saying,
    /// are capped to it.
    pub max_tokens: Option<u32>,
    /// Prompt guardrails (LLM connections).
    pub guard: PromptGuard,
    /// Budgets and rate limits (LLM connections).
    pub limits: LlmLimits,
    /// The most bytes of masked text held back while streaming, waiting to know whether it is part of a value.
    pub hold_back: usize,
}

/// `api = "openai" | "anthropic"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmApi {
    OpenAi,
    Anthropic,
}

impl LlmApi {
    pub fn as_str(self) -> &'static str {
        match self {
            LlmApi::OpenAi => "openai",
            LlmApi::Anthropic => "anthropic",
        }
    }
}

/// `auth = { bearer = … } | { header = "…", value = … } | { basic = { user = "…", password = … } }`.
#[derive(Debug, Clone)]
pub enum HttpAuth {
    Bearer(Secret),
    Header { name: String, value: Secret },
    Basic { user: String, password: Secret },
}

/// `[connection.guard]`: what a prompt may contain.
#[derive(Debug, Clone, Default)]
pub struct PromptGuard {
    /// `deny = [{ id = "…", pattern = "…" }]`: a prompt matching any is refused, naming the id.
    pub deny: Vec<DenyPattern>,
    /// What happens to PII found in a prompt.
    pub prompt_pii: PromptPii,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyPattern {
    pub id: String,
    /// A regular expression (regex-automata syntax), checked at load.
    pub pattern: String,
}

/// `prompt_pii = "allow" | "mask" | "refuse"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PromptPii {
    /// Sent as written.
    #[default]
    Allow,
    /// Masked (with the connection's masking, or every built-in detector) before it leaves.
    Mask,
    /// The request is refused, naming what was found.
    Refuse,
}

/// `[connection.limits]`: per identity, counted from the usage the provider reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LlmLimits {
    /// `budget = { tokens = N, per = "1d" }`: tokens (input + output) an identity may use per period.
    pub budget: Option<TokenBudget>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBudget {
    pub tokens: u64,
    pub per: Duration,
}

/// `[[connection]] approval`: how a statement that needs an approval is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    /// The statement waits (the client told so by a notice) until it is approved (it runs), denied, or `wait`
    /// passes (it fails; the request stays pending and an approval can still be used by sending it again).
    Hold { wait: Duration },
    /// The statement fails at once with the approval id; sent again once approved, it runs.
    FailFast,
}

impl Default for ApprovalMode {
    fn default() -> Self {
        ApprovalMode::Hold { wait: Duration::from_secs(300) }
    }
}

/// `[connection.masking]`.
///
/// Not `PartialEq`: [`warden_mask::CustomDetector`] is not (its validator may be a function).
#[derive(Debug, Clone)]
pub struct MaskingConfig {
    /// Content detectors run over every text value.
    pub detect: warden_mask::Selection,
    /// Columns masked whatever their content, first match wins.
    pub columns: Vec<MaskedColumn>,
    /// Strategies replacing the built-in detectors' defaults (`strategies = { email = "hash" }`); only for
    /// detectors `detect` selects.
    pub strategies: HashMap<warden_mask::Detector, warden_mask::Strategy>,
    /// Detectors defined in this config (`[[connection.masking.detector]]`), in file order; each compiles, alone
    /// and with the built-ins, and its strategy is always set (`redact` unless told otherwise).
    pub custom: Vec<warden_mask::CustomDetector>,
}

impl MaskingConfig {
    /// What to compile a [`warden_mask::Masker`] from, with the `hash` strategy keyed by `hash_key`.
    pub fn masker_config(&self, hash_key: [u8; 32]) -> warden_mask::MaskerConfig {
        warden_mask::MaskerConfig {
            detectors: self.detect.clone(),
            custom: self.custom.clone(),
            strategies: self.strategies.clone(),
            hash_key,
        }
    }
}

/// `[[connection.masking.column]]`: a column masked whatever its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedColumn {
    /// `schema.table.column`; each part may be `*`, or a glob such as `*.ssn` for any table's `ssn` column.
    pub pattern: String,
    pub strategy: warden_mask::Strategy,
}

impl MaskedColumn {
    /// Whether this rule covers `schema.table.column`.
    pub fn matches(&self, schema: &str, table: &str, column: &str) -> bool {
        let parts: Vec<&str> = self.pattern.split('.').collect();
        let wanted: [&str; 3] = match parts.as_slice() {
            [schema, table, column] => [schema, table, column],
            [table, column] => ["*", table, column],
            _ => return false,
        };
        wanted.iter().zip([schema, table, column]).all(|(wanted, actual)| *wanted == "*" || *wanted == actual)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    Postgres,
    Http,
}

impl ConnectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Postgres => "postgres",
            ConnectionKind::Http => "http",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAddress {
    Tcp {
        host: String,
        port: u16,
    },
    /// A Unix-domain socket file, e.g. `/var/run/postgresql/.s.PGSQL.5432`.
    Unix(PathBuf),
}

impl std::fmt::Display for UpstreamAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAddress::Tcp { host, port } if host.contains(':') => {
                write!(f, "[{host}]:{port}")
            }
            UpstreamAddress::Tcp { host, port } => write!(f, "{host}:{port}"),
            UpstreamAddress::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// TLS towards the upstream, with libpq's `sslmode` meanings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub mode: UpstreamTlsMode,
    /// PEM bundle of trusted roots; the system's roots when absent.
    pub ca: Option<PathBuf>,
    /// Name to verify the certificate against; the address's host when absent.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The identity name the key authenticates as.
    pub name: String,
    /// SHA-256 of the key; the key itself is never kept.
    pub sha256: [u8; 32],
    pub groups: Vec<String>,
    pub expires_at: Option<time::OffsetDateTime>,
}

#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// Policy file patterns, resolved against the config file's directory.
    pub files: Vec<PathBuf>,
}

/// An OpenID Connect issuer (`[[oidc]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIssuer {
    /// The `iss` its tokens carry; discovery is at `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The `aud` a token must carry to be accepted here.
    pub audience: String,
    /// The claim listing the identity's groups (`Warden::Group` memberships); `groups` by default.
    pub groups_claim: String,
    /// The claim naming the identity (`Warden::Identity`); `sub` by default.
    pub name_claim: String,
    /// The JWKS URL, when not taken from discovery.
    pub jwks_url: Option<String>,
}

/// warden-issued tokens (`[tokens]`).
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// The Ed25519 signing key (PKCS#8 PEM). When absent, the gateway creates one in the SQLite state directory
    /// on first run.
    pub signing_key: Option<Secret>,
    /// Lifetime of a token whose request names none.
    pub default_ttl: Duration,
    /// Longest lifetime a token may be issued with (and never beyond its parent's).
    pub max_ttl: Duration,
    /// How long a session may outlive its credential's expiry before it is ended.
    pub expiry_grace: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            signing_key: None,
            default_ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(12 * 3600),
            expiry_grace: Duration::ZERO,
        }
    }
}

/// Masking settings shared by every connection (`[masking]`).
#[derive(Debug, Clone, Default)]
pub struct GlobalMasking {
    /// The secret keying the `hash` strategy, so that a value's token is the same in every session and on every
    /// gateway holding the same key. Required with a PostgreSQL state store when any connection masks (replicas
    /// must agree); when absent with SQLite, the gateway keeps a key file beside the database.
    pub hash_key: Option<Secret>,
}

/// Who administers the gateway through its admin API (`[admin]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Members of this group may revoke identities, tokens and sessions.
    pub group: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { group: "admin".to_string() }
    }
}

#[cfg(test)]
mod tests;
