//! The HTTP front end's hooks: identity, the per-request decision (token scope, Cedar `http:<METHOD>` on the
//! connection with `context.http`), masking per connection (unless policy permits `unmask`), rate limits and token
//! budgets, and records: each client connection's requests of one identity on one connection are a session, each
//! request a statement whose `http` part carries status, model, usage and the masked, capped prompt and answer.
//!
//! Policy decisions are cached per session by method, path and model (nothing else of the request is in the Cedar
//! context, and the rest of it is fixed for the session), and dropped when the policies are reloaded. Verdicts that
//! need an approval are never cached: each such request asks the approval job.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use time::OffsetDateTime;
use tracing::warn;
use warden_http::{Authorization, BoxFuture, Exchange, HttpHooks, HttpSession, LimitRefusal, RequestInfo, TokenUsage};
use warden_identity::{AuthError, Identity};
use warden_mask::Masker;
use warden_policy::{Action, RequestContext, Resource};
use warden_state::{BatchResults, Decision, Recorder, SessionStart, StatementRecord, Tokens};

use crate::guard::{authorize, token_context, PolicyStore};
use crate::limits::Limits;

pub(crate) struct GatewayHttpHooks {
    pub(crate) authenticator: Arc<crate::auth::Authenticator>,
    pub(crate) policies: Arc<PolicyStore>,
    pub(crate) recorder: Recorder,
    /// Connections with `[connection.masking]`, compiled.
    pub(crate) maskers: HashMap<String, Masker>,
    /// Every built-in detector: prompts and answers of connections that do not mask are masked with it in the
    /// audit trail, and prompt PII is found with it.
    pub(crate) audit_masker: Arc<Masker>,
    /// Shared with the task that refreshes budgets from the state store.
    pub(crate) limits: Arc<Limits>,
    pub(crate) approvals: Arc<crate::approval::Approvals>,
    /// Each connection's `approval` mode.
    pub(crate) approval_modes: HashMap<String, warden_config::ApprovalMode>,
    /// Each live session's cached decisions.
    pub(crate) decisions: Mutex<HashMap<Arc<str>, SessionDecisions>>,
}

/// Decisions a session keeps before starting over.
const DECISION_CACHE: usize = 1024;

/// One session's cached decisions, valid for one generation of the policies.
#[derive(Default)]
pub(crate) struct SessionDecisions {
    generation: u64,
    entries: HashMap<DecisionKey, Cached>,
}

#[derive(PartialEq, Eq, Hash)]
struct DecisionKey {
    method: String,
    path: String,
    model: Option<String>,
}

/// A decision that needed no approval.
#[derive(Clone)]
enum Cached {
    Allowed { policies: Vec<Arc<str>>, masker: Option<Masker> },
    Refused { rule: String, message: String, policies: Vec<Arc<str>> },
}

impl Cached {
    fn authorization(self) -> Authorization {
        match self {
            Cached::Allowed { policies, masker } => Authorization::Allowed { policies, masker, approval: None },
            Cached::Refused { rule, message, policies } => {
                Authorization::Refused { status: 403, rule, message, policies }
            }
        }
    }
}

/// How much of a held request's body approvers see.
const HELD_BODY_SHOWN: usize = 2000;

/// What an approval of one HTTP request is bound to: SHA-256 over a version tag, the method, the path and the body
/// as it would be sent, hex.
fn fingerprint(request: &RequestInfo<'_>) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(b"warden-approval-http-v1\0");
    for part in [request.method.as_bytes(), request.path.as_bytes(), request.body.unwrap_or_default()] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    format!("{:x}", hash.finalize())
}

impl GatewayHttpHooks {
    fn masker_for(&self, connection: &str) -> &Masker {
        self.maskers.get(connection).unwrap_or(&self.audit_masker)
    }
}

impl HttpHooks for GatewayHttpHooks {
    fn authenticate<'a>(&'a self, credential: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(self.authenticator.authenticate(credential, OffsetDateTime::now_utc()))
    }

    fn new_session_id(&self) -> Arc<str> {
        warden_pg::new_session_id().into()
    }

    fn authorize<'a>(&'a self, request: &'a RequestInfo<'a>) -> BoxFuture<'a, Authorization> {
        Box::pin(self.decide(request))
    }

    fn admit_usage(&self, session: &HttpSession, _model: Option<&str>) -> Result<(), LimitRefusal> {
        self.limits.admit(&session.connection, &session.identity.name, std::time::Instant::now())
    }

    fn limits_tokens(&self, connection: &str) -> bool {
        self.limits.limits_tokens(connection)
    }

    fn used(&self, session: &HttpSession, _model: Option<&str>, usage: TokenUsage) {
        self.limits.used(
            &session.connection,
            &session.identity.name,
            usage.input + usage.output,
            std::time::Instant::now(),
        );
    }

    fn session_started(&self, session: &HttpSession) -> Option<BoxFuture<'static, Result<(), String>>> {
        let scope = session.identity.token.as_ref();
        let start = SessionStart {
            id: session.id.to_string(),
            identity: session.identity.name.clone(),
            connection: session.connection.clone(),
            client_address: session.client_address.to_string(),
            user_name: session.identity.name.clone(),
            application_name: session.user_agent.clone(),
            started_at: session.started_at,
            credential: Some(session.identity.kind.as_str().to_string()),
            token_id: scope.map(|scope| scope.id.clone()),
            run: scope.and_then(|scope| scope.run.clone()),
            node: scope.and_then(|scope| scope.node.clone()),
        };
        let wait = self.recorder.session_started_or_wait(start).err()?;
        let session = session.id.clone();
        Some(Box::pin(async move {
            wait.await.map_err(|error| {
                warn!(%session, %error, "session start not recorded: its requests are refused");
                error.to_string()
            })
        }))
    }

    fn exchange(&self, session: &HttpSession, exchange: Exchange) -> Option<BoxFuture<'static, ()>> {
        let action =
            Action::http(&exchange.method).map_or_else(|| format!("http:{}", exchange.method), |a| a.to_string());
        let policies = exchange.policies.iter().map(|policy| policy.to_string()).collect();
        let decision = Decision::new(exchange.allowed, vec![action], Vec::new(), policies);
        let error = exchange.refusal.clone().or_else(|| exchange.error.clone());
        let mut http = serde_json::json!({
            "method": exchange.method,
            "path": exchange.path,
            "status": exchange.status,
            "model": exchange.model,
            "stream": exchange.stream,
            "usage": exchange.usage.map(|usage| serde_json::json!({
                "input_tokens": usage.input,
                "output_tokens": usage.output,
            })),
            "prompt": exchange.prompt,
            "response": exchange.response,
            "masked": exchange.masked,
            "request_bytes": exchange.request_bytes,
            "response_bytes": exchange.response_bytes,
            "first_byte_us": exchange.first_byte.map(whole_micros),
            "forwarded_us": exchange.forwarded.map(whole_micros),
        });
        if let Some(batch) = &exchange.batch {
            // Only a batch's results read carries it: other records keep the shape they had.
            http["batch"] = serde_json::json!({ "key": batch.key, "requests": batch.requests, "unread": batch.unread });
        }
        let record = StatementRecord {
            session_id: session.id.clone(),
            seq: exchange.seq,
            started_at: exchange.started_at,
            duration: exchange.duration,
            text: Arc::from(format!("{} {}", exchange.method, exchange.path)),
            rows: None,
            error,
            decision: Some(Arc::new(decision)),
            result: None,
            http: Some(http),
            // Usage accounting and budgets read these columns (the audit event has them in `http` too).
            model: exchange.model,
            tokens: exchange.usage.map(|usage| Tokens { input: usage.input, output: usage.output }),
            batch: exchange.batch.map(|batch| BatchResults { key: batch.key, requests: batch.requests }),
        };
        // As a statement's: never dropped for a full queue, but waited for (the answer has gone; the request after
        // it is refused while the queue stays nine-tenths full).
        match self.recorder.statement_or_wait(record) {
            Ok(()) => None,
            Err(wait) => {
                let session = session.id.clone();
                Some(Box::pin(async move {
                    if let Err(error) = wait.await {
                        warn!(%session, %error, "HTTP request not recorded");
                    }
                }))
            }
        }
    }

    fn session_ended(&self, session: &HttpSession, reason: &str) -> Option<BoxFuture<'static, ()>> {
        self.decisions.lock().remove(&session.id);
        let ended =
            self.recorder.session_ended_or_wait(&session.id, OffsetDateTime::now_utc(), Some(reason.to_string()));
        logged_wait(ended, "session end not recorded")
    }

    fn audit_mask(&self, connection: &str, text: &str) -> String {
        self.masker_for(connection).mask(text).into_owned()
    }

    fn prompt_masker(&self, connection: &str) -> Masker {
        self.masker_for(connection).clone()
    }

    fn unauthenticated(&self, client: SocketAddr, connection: &str, reason: &str) -> Option<BoxFuture<'static, ()>> {
        let mut record = warden_state::AuditRecord::new(
            "session.refused",
            serde_json::json!({ "client_address": client.to_string(), "code": "401", "reason": reason }),
        );
        record.connection = Some(connection.to_string());
        logged_wait(self.recorder.audit_or_wait(record), "refused HTTP request not recorded in the audit log")
    }
}

/// A record queued at once (`None`), or the wait until it is, which logs `what` if it fails.
fn logged_wait(queued: Result<(), warden_state::RecordWait>, what: &'static str) -> Option<BoxFuture<'static, ()>> {
    let wait = queued.err()?;
    Some(Box::pin(async move {
        if let Err(error) = wait.await {
            warn!(%error, "{what}");
        }
    }))
}

impl GatewayHttpHooks {
    async fn decide(&self, request: &RequestInfo<'_>) -> Authorization {
        let session = request.session;
        let identity = &session.identity;
        let Some(action) = Action::http(request.method) else {
            return Authorization::Refused {
                status: 405,
                rule: "method".into(),
                message: format!("warden does not relay {} requests", request.method),
                policies: Vec::new(),
            };
        };
        if let Some(scope) = &identity.token {
            if !scope.allows_connection(&session.connection) {
                return Authorization::Refused {
                    status: 403,
                    rule: "token".into(),
                    message: format!("token {} does not allow connection \"{}\"", scope.id, session.connection),
                    policies: Vec::new(),
                };
            }
        }
        if !self.recorder.has_room() {
            return Authorization::Refused {
                status: 503,
                rule: "audit".into(),
                message: "the audit log cannot keep up (its queue is nearly full); requests are refused until it \
                          drains"
                    .into(),
                policies: Vec::new(),
            };
        }
        let key = DecisionKey {
            method: request.method.to_string(),
            path: request.path.to_string(),
            model: request.model.map(str::to_string),
        };
        let generation = self.policies.generation();
        if let Some(cached) = self.cached(&session.id, generation, &key) {
            return cached.authorization();
        }
        let (policies, generation) = self.policies.get();
        let context = RequestContext {
            client_address: Some(session.client_address.ip()),
            application_name: None,
            statement_kind: None,
            has_where: None,
            token: token_context(identity),
            approved: false,
            http_path: Some(request.path),
            model: request.model,
        };
        let resource = Resource::Connection { name: &session.connection, kind: "http" };
        let (verdict, reason) = authorize(identity, &policies, action, &resource, &context);
        let decided_by: Vec<Arc<str>> = verdict.policies.clone();
        let masker = match self.maskers.get(&session.connection) {
            Some(masker) => {
                let unmask = authorize(identity, &policies, Action::Unmask, &resource, &context).0.allowed;
                (!unmask).then(|| masker.clone())
            }
            None => None,
        };
        if verdict.allowed {
            let cached = Cached::Allowed { policies: decided_by, masker };
            return self.remember(&session.id, generation, key, cached).authorization();
        }
        let Some(needed) = policies.approval_needed(&verdict) else {
            let rule =
                decided_by.first().map_or_else(|| "default-deny".to_string(), |policy| format!("policy:{policy}"));
            let cached = Cached::Refused { rule, message: reason, policies: decided_by };
            return self.remember(&session.id, generation, key, cached).authorization();
        };
        // Only `@approval` forbids stand in the way: held (or refused fast) until an approver lets it through.
        let approvals = self.approval_session(session);
        let job = crate::approval::Job {
            session: approvals,
            needed,
            lifted: vec![crate::approval::Lifted { action: action.to_string(), tables: Vec::new() }],
            policies: decided_by.iter().map(|policy| policy.to_string()).collect(),
            noun: "request",
        };
        let held = crate::approval::Held {
            session: session.id.clone(),
            text: self.held_text(request),
            parameters: None,
            fingerprint: fingerprint(request),
        };
        match job.decide(held, &|_| {}).await {
            Ok(approval) => Authorization::Allowed { policies: Vec::new(), masker, approval: Some(approval.id) },
            Err(refusal) => Authorization::Refused {
                status: match refusal.code {
                    "58030" => 503,
                    _ => 403,
                },
                rule: "approval".into(),
                message: refusal.message,
                policies: decided_by,
            },
        }
    }

    /// The session's cached decision on `key`, if made under policy generation `generation`.
    fn cached(&self, session: &Arc<str>, generation: u64, key: &DecisionKey) -> Option<Cached> {
        let decisions = self.decisions.lock();
        let session = decisions.get(session).filter(|session| session.generation == generation)?;
        session.entries.get(key).cloned()
    }

    /// Keeps a decision made under `generation` (of a session not yet ended) and hands it back.
    fn remember(&self, session: &Arc<str>, generation: u64, key: DecisionKey, cached: Cached) -> Cached {
        let mut decisions = self.decisions.lock();
        let session = decisions.entry(session.clone()).or_default();
        if session.generation != generation || session.entries.len() >= DECISION_CACHE {
            session.entries.clear();
            session.generation = generation;
        }
        session.entries.insert(key, cached.clone());
        cached
    }

    fn approval_session(&self, session: &HttpSession) -> Arc<crate::approval::SessionApprovals> {
        let scope = session.identity.token.as_ref();
        Arc::new(crate::approval::SessionApprovals {
            shared: self.approvals.clone(),
            identity: session.identity.name.clone(),
            connection: session.connection.clone(),
            run: scope.and_then(|scope| scope.run.clone()),
            node: scope.and_then(|scope| scope.node.clone()),
            mode: self.approval_modes.get(&session.connection).copied().unwrap_or_default(),
            masker: self.masker_for(&session.connection).clone(),
        })
    }

    /// What approvers see of a held request: method, path, model and the start of the body, masked.
    fn held_text(&self, request: &RequestInfo<'_>) -> String {
        let mut text = format!("{} {}", request.method, request.path);
        if let Some(model) = request.model {
            text.push_str(&format!(" (model {model})"));
        }
        if let Some(body) = request.body {
            let body = String::from_utf8_lossy(&body[..body.len().min(HELD_BODY_SHOWN)]);
            text.push('\n');
            text.push_str(&body);
            if request.body.is_some_and(|body| body.len() > HELD_BODY_SHOWN) {
                text.push('…');
            }
        }
        self.masker_for(&request.session.connection).mask(&text).into_owned()
    }
}

/// A latency in whole microseconds, as the audit record keeps it.
fn whole_micros(latency: std::time::Duration) -> u64 {
    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)
}
