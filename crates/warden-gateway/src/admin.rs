//! The admin API (`[listen] admin`): JSON over HTTP for the `warden` commands that act on a running gateway.
//!
//! Every request authenticates with `Authorization: Bearer <credential>`, any credential the gateway accepts (an
//! API key, a warden token, an OIDC token). Routes:
//! - `POST /v1/tokens`: issue a warden token narrowing the caller's credential.
//! - `GET /v1/sessions` (`?identity=&connection=&since=&active=&limit=`) and `GET /v1/sessions/{id}` (with its
//!   statements): every session for the `[admin] group`, the caller's own identity's sessions for anyone else (a
//!   list narrowed so names the identity in `x-warden-only-identity`).
//! - `POST /v1/revocations` (`[admin] group` only): revoke an identity, a token (and its descendants) or a
//!   session; live sessions it covers are ended at once.
//! - `GET /v1/approvals` (`?status=&limit=`) and `GET /v1/approvals/{id}`: every approval for the `[admin] group`;
//!   for anyone else the approvals they asked for and those they may decide (they are in a needed group).
//! - `POST /v1/approvals` (`{"connection", "action", "table"?, "seconds", "reason"}`): the caller asks for a
//!   time-boxed grant of an action on a connection (or one table), lifting the `@approval` forbids that apply.
//! - `POST /v1/approvals/{id}/approve` and `/deny` (`{"reason": "…"}`, required to deny): the caller's vote; the
//!   requester cannot approve their own request, and only members of a needed group can decide.
//!
//! Errors are `{"error": "…"}` with 400 (malformed request), 401 (no or bad credential) or 403 (refused).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Json, State};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::info;
use warden_identity::{Identity, TokenError, TokenRequest};

use warden_state::{
    ApprovalFilter, ApprovalRow, ApprovalStatus, Revocation, RevocationKind, RevocationRow, SessionFilter, SessionRow,
    StateStore, StatementRow, VoteError, Voter,
};

use crate::auth::Authenticator;
use crate::revoke::{self, Revocations};

/// What the admin API needs from the gateway.
pub(crate) struct AdminState {
    pub(crate) authenticator: Arc<Authenticator>,
    /// Connection names the config defines.
    pub(crate) connections: HashSet<String>,
    /// Members may revoke.
    pub(crate) admin_group: String,
    pub(crate) store: StateStore,
    pub(crate) revocations: Arc<Revocations>,
    /// Where a revocation ends live sessions.
    pub(crate) live: revoke::Live,
    /// Token issuance and revocations go into the audit log.
    pub(crate) recorder: warden_state::Recorder,
    /// What a grant request needs is read from the policies in force.
    pub(crate) policies: Arc<crate::guard::PolicyStore>,
    /// New grant requests are notified like statement requests.
    pub(crate) approvals: Arc<crate::approval::Approvals>,
}

pub(crate) fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/v1/tokens", post(issue_token))
        .route("/v1/revocations", post(revoke))
        .route("/v1/sessions", get(list_sessions))
        .route("/v1/sessions/{id}", get(show_session))
        .route("/v1/approvals", get(list_approvals).post(request_grant))
        .route("/v1/approvals/{id}", get(show_approval))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
        .with_state(state)
}

/// An error answer.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

/// The caller, from its bearer credential.
async fn caller(state: &AdminState, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no credential: send Authorization: Bearer <token>"))?;
    let credential = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "the Authorization header is not \"Bearer <token>\""))?;
    state
        .authenticator
        .authenticate(credential, OffsetDateTime::now_utc())
        .await
        .map_err(|error| ApiError::new(StatusCode::UNAUTHORIZED, error.to_string()))
}

/// `POST /v1/tokens` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    connections: Option<Vec<String>>,
    actions: Option<Vec<String>>,
    ttl_seconds: Option<u64>,
    #[serde(default)]
    labels: Labels,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Labels {
    run: Option<String>,
    node: Option<String>,
}

#[derive(Debug, Serialize)]
struct TokenAnswer {
    token: String,
    id: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

/// Action names a token may be narrowed to: the policy actions.
fn known_action(name: &str) -> bool {
    warden_policy::Action::ALL.iter().any(|action| action.to_string() == name)
}

async fn issue_token(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: Result<Json<TokenBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<TokenAnswer>, ApiError> {
    let parent = caller(&state, &headers).await?;
    let Json(body) = body.map_err(|rejection| ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    for connection in body.connections.iter().flatten() {
        if !state.connections.contains(connection) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("no connection named \"{connection}\"")));
        }
    }
    for action in body.actions.iter().flatten() {
        if !known_action(action) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("unknown action \"{action}\"")));
        }
    }
    let request = TokenRequest {
        connections: body.connections,
        actions: body.actions,
        ttl: body.ttl_seconds.map(Duration::from_secs),
        run: body.labels.run,
        node: body.labels.node,
    };
    let issued =
        state.authenticator.tokens().issue(&parent, &request, OffsetDateTime::now_utc()).map_err(
            |error| match error {
                TokenError::Refused(reason) => ApiError::new(StatusCode::FORBIDDEN, reason),
                other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
            },
        )?;
    info!(
        identity = %parent.name,
        token = %issued.id,
        parent = parent.token.as_ref().map(|scope| scope.id.as_str()),
        run = issued.scope.run.as_deref(),
        node = issued.scope.node.as_deref(),
        expires_at = %issued.expires_at,
        "token issued"
    );
    let mut record = warden_state::AuditRecord::new(
        "token.issued",
        serde_json::json!({
            "token_id": issued.id,
            "parent": parent.token.as_ref().map(|scope| scope.id.as_str()),
            "groups": parent.groups,
            "connections": issued.scope.connections,
            "actions": issued.scope.actions,
            "expires_at": issued.expires_at.unix_timestamp(),
        }),
    );
    record.identity = Some(parent.name.clone());
    record.run = issued.scope.run.clone();
    record.node = issued.scope.node.clone();
    if let Err(error) = state.recorder.audit_when_room(record).await {
        tracing::warn!(%error, token = %issued.id, "token issuance not recorded in the audit log");
    }
    Ok(Json(TokenAnswer { token: issued.token, id: issued.id, expires_at: issued.expires_at }))
}

/// `POST /v1/revocations` body: exactly one of identity, token, session.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationBody {
    identity: Option<String>,
    token: Option<String>,
    session: Option<String>,
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct RevocationAnswer {
    id: i64,
    kind: RevocationKind,
    subject: String,
    /// Live sessions on this gateway ended by it (other gateways end theirs within a second).
    sessions_ended: usize,
}

async fn revoke(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: Result<Json<RevocationBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<RevocationAnswer>, ApiError> {
    let caller = caller(&state, &headers).await?;
    if !state.is_admin(&caller) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("revoking needs membership of group \"{}\" ([admin] group)", state.admin_group),
        ));
    }
    let Json(body) = body.map_err(|rejection| ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    let (kind, subject) = match (body.identity, body.token, body.session) {
        (Some(identity), None, None) => (RevocationKind::Identity, identity),
        (None, Some(token), None) => (RevocationKind::Token, token),
        (None, None, Some(session)) => (RevocationKind::Session, session),
        _ => return Err(ApiError::new(StatusCode::BAD_REQUEST, "name exactly one of identity, token, session")),
    };
    if subject.is_empty() || subject.len() > 256 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "the revoked name must be 1 to 256 characters"));
    }
    let revocation = Revocation {
        kind,
        subject: subject.clone(),
        reason: body.reason.filter(|reason| !reason.is_empty()),
        revoked_by: caller.name.clone(),
        revoked_at: OffsetDateTime::now_utc(),
    };
    // Durable first: a revocation the store does not hold would be forgotten at the next restart.
    let id = state.store.revoke(&revocation).await.map_err(|error| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("the revocation could not be stored: {error}"))
    })?;
    let row = RevocationRow {
        id,
        kind,
        subject: subject.clone(),
        reason: revocation.reason,
        revoked_by: revocation.revoked_by,
        revoked_at: revocation.revoked_at,
    };
    state.revocations.apply_local(&row);
    let sessions_ended = revoke::end_sessions(&state.live, &row);
    info!(kind = kind.as_str(), %subject, by = %caller.name, sessions_ended, "revoked");
    let mut record = warden_state::AuditRecord::new(
        "revocation",
        serde_json::json!({
            "id": id,
            "kind": kind.as_str(),
            "subject": subject,
            "reason": row.reason,
            "sessions_ended": sessions_ended,
        }),
    );
    record.identity = Some(caller.name.clone());
    if let Err(error) = state.recorder.audit_when_room(record).await {
        tracing::warn!(%error, revocation = id, "revocation not recorded in the audit log");
    }
    Ok(Json(RevocationAnswer { id, kind, subject, sessions_ended }))
}

impl AdminState {
    fn is_admin(&self, identity: &Identity) -> bool {
        identity.groups.contains(&self.admin_group)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionQuery {
    identity: Option<String>,
    connection: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    since: Option<OffsetDateTime>,
    #[serde(default)]
    active: bool,
    limit: Option<u32>,
}

/// The header of a session list narrowed to the caller's own sessions, naming the identity, so that a client can
/// tell "none of yours" from "none".
pub const ONLY_IDENTITY_HEADER: &str = "x-warden-only-identity";

async fn list_sessions(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    query: Result<Query<SessionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers).await?;
    let Query(query) = query.map_err(|rejection| ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    let admin = state.is_admin(&caller);
    let identity = if admin {
        query.identity
    } else {
        match query.identity {
            Some(asked) if asked != caller.name => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("only the [admin] group sees other identities' sessions; you are \"{}\"", caller.name),
                ))
            }
            _ => Some(caller.name.clone()),
        }
    };
    let filter = SessionFilter {
        identity,
        connection: query.connection,
        since: query.since,
        active_only: query.active,
        limit: query.limit,
        ..SessionFilter::default()
    };
    let sessions = state.store.list_sessions(&filter).await.map_err(unavailable)?;
    let mut answer = Json(sessions).into_response();
    if !admin {
        if let Ok(name) = axum::http::HeaderValue::from_str(&caller.name) {
            answer.headers_mut().insert(ONLY_IDENTITY_HEADER, name);
        }
    }
    Ok(answer)
}

#[derive(Debug, Serialize)]
struct SessionAnswer {
    session: SessionRow,
    statements: Vec<StatementRow>,
}

async fn show_session(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SessionAnswer>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no session with id {id}"));
    let session = state.store.session(&id).await.map_err(unavailable)?.ok_or_else(not_found)?;
    // Someone else's session is reported as absent, not as forbidden: ids are not to be probed.
    if !state.is_admin(&caller) && session.identity != caller.name {
        return Err(not_found());
    }
    let statements = state.store.statements(&id).await.map_err(unavailable)?;
    Ok(Json(SessionAnswer { session, statements }))
}

fn unavailable(error: warden_state::StateError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("state store: {error}"))
}

/// `GET /v1/approvals` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalQuery {
    status: Option<String>,
    limit: Option<u32>,
}

/// Whether `caller` may see `approval`: an admin, its requester, or someone who may decide it.
fn may_see(state: &AdminState, caller: &Identity, approval: &ApprovalRow) -> bool {
    state.is_admin(caller)
        || approval.identity == caller.name
        || approval.needed.iter().any(|needed| caller.groups.contains(&needed.group))
}

async fn list_approvals(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    query: Result<Query<ApprovalQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ApprovalRow>>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let Query(query) = query.map_err(|rejection| ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    let status = match query.status.as_deref() {
        None | Some("all") => None,
        Some(text) => Some(ApprovalStatus::parse(text).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("\"{text}\" is not a status (pending, approved, denied, expired, used, all)"),
            )
        })?),
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    // Read more than asked when filtering by visibility, so a caller sees up to `limit` of their own.
    let filter = ApprovalFilter {
        status,
        limit: Some(if state.is_admin(&caller) { limit } else { 1000 }),
        ..ApprovalFilter::default()
    };
    let approvals = state.store.list_approvals(&filter).await.map_err(unavailable)?;
    Ok(Json(approvals.into_iter().filter(|approval| may_see(&state, &caller, approval)).take(limit as usize).collect()))
}

async fn show_approval(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ApprovalRow>, ApiError> {
    let caller = caller(&state, &headers).await?;
    match state.store.approval(&id).await.map_err(unavailable)? {
        Some(approval) if may_see(&state, &caller, &approval) => Ok(Json(approval)),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no approval {id}"))),
    }
}

/// `POST /v1/approvals/{id}/approve|deny` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoteBody {
    reason: Option<String>,
}

async fn approve(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<VoteBody>>,
) -> Result<Json<ApprovalRow>, ApiError> {
    vote(&state, &headers, &id, true, body.map(|Json(body)| body).unwrap_or_default()).await
}

async fn deny(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<VoteBody>>,
) -> Result<Json<ApprovalRow>, ApiError> {
    let body = body.map(|Json(body)| body).unwrap_or_default();
    if body.reason.as_deref().is_none_or(|reason| reason.trim().is_empty()) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "a denial needs a reason: {\"reason\": \"…\"}"));
    }
    vote(&state, &headers, &id, false, body).await
}

async fn vote(
    state: &AdminState,
    headers: &HeaderMap,
    id: &str,
    approve: bool,
    body: VoteBody,
) -> Result<Json<ApprovalRow>, ApiError> {
    let caller = caller(state, headers).await?;
    let reason = body.reason.filter(|reason| !reason.trim().is_empty());
    if reason.as_ref().is_some_and(|reason| reason.len() > 1000) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "the reason must be at most 1000 characters"));
    }
    let voter = Voter { name: &caller.name, groups: &caller.groups };
    let now = OffsetDateTime::now_utc();
    let voted = state.store.vote_on_approval(id, voter, approve, reason.as_deref(), now).await.map_err(unavailable)?;
    let approval = match voted {
        Ok(Some(approval)) => approval,
        Ok(None) => return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no approval {id}"))),
        Err(error) => {
            let status = match error {
                VoteError::OwnRequest { .. } | VoteError::NotApprover { .. } => StatusCode::FORBIDDEN,
                VoteError::NotPending { .. } | VoteError::Expired { .. } | VoteError::AlreadyVoted { .. } => {
                    StatusCode::CONFLICT
                }
            };
            return Err(ApiError::new(status, error.to_string()));
        }
    };
    info!(approval = %approval.id, by = %caller.name, approve, status = approval.status.as_str(), "approval vote");
    let kind = if approve { "approval.approved" } else { "approval.denied" };
    let extra = serde_json::json!({
        "by": caller.name,
        "vote_reason": reason,
        "outstanding": approval.outstanding(),
    });
    let mut record = warden_state::AuditRecord::new(kind, crate::approval::approval_body(&approval, extra));
    record.session.clone_from(&approval.session_id);
    record.identity = Some(approval.identity.clone());
    record.connection = Some(approval.connection.clone());
    if let Err(error) = state.recorder.audit_when_room(record).await {
        tracing::warn!(%error, "approval vote not recorded in the audit log");
    }
    Ok(Json(approval))
}

/// `POST /v1/approvals` body: a grant request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    connection: String,
    action: String,
    /// `schema.table` (a bare name is in `public`).
    table: Option<String>,
    /// How long the grant lasts once approved.
    seconds: u64,
    reason: String,
}

/// The longest grant: thirty days.
const MAX_GRANT_SECONDS: u64 = 30 * 86_400;

async fn request_grant(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: Result<Json<GrantBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ApprovalRow>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let Json(body) = body.map_err(|rejection| ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    if !state.connections.contains(&body.connection) {
        return Err(bad(format!("no connection \"{}\"", body.connection)));
    }
    let action = warden_policy::Action::parse(&body.action)
        .filter(|action| !matches!(action, warden_policy::Action::Connect | warden_policy::Action::Unmask))
        .ok_or_else(|| {
            bad(format!("\"{}\" is not a statement action (read, write, ddl, dcl, admin, procedural)", body.action))
        })?;
    if !(1..=MAX_GRANT_SECONDS).contains(&body.seconds) {
        return Err(bad(format!("a grant lasts from 1 second to {MAX_GRANT_SECONDS} seconds (30 days)")));
    }
    let reason = body.reason.trim().to_string();
    if reason.is_empty() || reason.len() > 1000 {
        return Err(bad("a grant request needs a reason of at most 1000 characters".to_string()));
    }
    let table = match body.table.as_deref() {
        None => None,
        Some(table) => {
            let (schema, name) = table.split_once('.').unwrap_or(("public", table));
            if schema.is_empty() || name.is_empty() || name.contains('.') {
                return Err(bad(format!("\"{table}\" is not schema.table")));
            }
            Some((schema.to_string(), name.to_string()))
        }
    };
    let (policies, _) = state.policies.get();
    let principal = warden_policy::Principal { name: &caller.name, groups: &caller.groups };
    let table_ref = table.as_ref().map(|(schema, name)| (schema.as_str(), name.as_str()));
    let Some(needed) = policies.approval_for_grant(&principal, action, &body.connection, table_ref) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "no @approval forbid applies to {} on {}{}: there is nothing to approve",
                body.action,
                body.connection,
                table_ref.map(|(schema, name)| format!(" table {schema}.{name}")).unwrap_or_default()
            ),
        ));
    };
    let now = OffsetDateTime::now_utc();
    let request = warden_state::NewApproval {
        kind: warden_state::ApprovalKind::Grant,
        identity: caller.name.clone(),
        connection: body.connection.clone(),
        action: action.to_string(),
        tables: table.iter().map(|(schema, name)| format!("{schema}.{name}")).collect(),
        statement: None,
        parameters: None,
        fingerprint: None,
        reason: Some(reason),
        needed: needed
            .groups
            .iter()
            .map(|(group, approvals)| warden_state::Needed { group: group.to_string(), approvals: *approvals })
            .collect(),
        policies: Vec::new(),
        session_id: None,
        requested_at: now,
        expires_at: now + needed.ttl,
        grant_seconds: Some(body.seconds),
    };
    let created = state.store.create_approval(request).await.map_err(unavailable)?;
    info!(approval = %created.id, by = %caller.name, "grant requested");
    state.approvals.requested(&created);
    let mut record = warden_state::AuditRecord::new(
        "approval.requested",
        crate::approval::approval_body(&created, serde_json::json!({ "grant_seconds": body.seconds })),
    );
    record.identity = Some(caller.name.clone());
    record.connection = Some(created.connection.clone());
    if let Err(error) = state.recorder.audit_when_room(record).await {
        tracing::warn!(%error, "grant request not recorded in the audit log");
    }
    Ok(Json(created))
}
