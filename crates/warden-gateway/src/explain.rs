//! `warden policy explain`: how the gateway would judge a session's queries, without a gateway or an upstream.
//!
//! It runs the very guard a live session runs (same analysis, same policy requests, same session-state
//! tracking for PREPARE/EXECUTE and `search_path`), so what it prints is what the data path decides.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use warden_identity::Identity;
use warden_policy::{Action, Policies, Principal, RequestContext, Resource};
use warden_sql::Analyzer;

use crate::guard::{self, PolicyStore, SqlGuard, StatementDecision};

/// The session to explain: who, where, and the queries it sends (each as one simple-protocol Query, in order,
/// outside a transaction block).
#[derive(Debug, Clone)]
pub struct ExplainRequest<'a> {
    pub identity: &'a Identity,
    pub connection: &'a str,
    pub client_address: Option<IpAddr>,
    pub application_name: Option<&'a str>,
    pub queries: &'a [String],
}

/// How the gateway would judge a session.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub identity: String,
    pub groups: Vec<String>,
    pub connection: String,
    /// The `connect` check made when the session starts.
    pub connect: CheckExplanation,
    /// The identity may only read on the connection: its upstream session would run read-only.
    pub read_only: bool,
    pub queries: Vec<QueryExplanation>,
}

/// One query: refused whole if any statement is.
#[derive(Debug, Clone, Serialize)]
pub struct QueryExplanation {
    pub sql: String,
    pub allowed: bool,
    /// The ErrorResponse the client would get.
    pub error: Option<ErrorExplanation>,
    pub statements: Vec<StatementExplanation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorExplanation {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatementExplanation {
    /// The statement's own text, when it could be cut out of the query.
    pub sql: Option<String>,
    pub class: String,
    pub kind: String,
    pub has_where: Option<bool>,
    /// `schema.table`, resolved against the session's `search_path`.
    pub tables: Vec<String>,
    pub allowed: bool,
    /// The determining policies: those that permitted every check, or those that forbade one.
    pub policies: Vec<String>,
    pub note: Option<String>,
    /// Every (action, resource) request made for the statement.
    pub checks: Vec<CheckExplanation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckExplanation {
    pub action: String,
    pub resource: String,
    pub allowed: bool,
    pub policies: Vec<String>,
    /// Why it is allowed or refused, as the client would read it.
    pub reason: String,
}

/// Explains how a session of `request.identity` on `request.connection` would be judged under `policies`.
pub fn explain(policies: Policies, request: &ExplainRequest<'_>) -> Explanation {
    let identity = request.identity;
    let principal = Principal { name: &identity.name, groups: &identity.groups };
    let context = RequestContext {
        client_address: request.client_address,
        application_name: request.application_name,
        statement_kind: None,
        has_where: None,
        token: None,
        approved: false,
        http_path: None,
        model: None,
    };
    let verdict = guard::connect_verdict(&policies, &principal, request.connection, &context);
    let resource = Resource::Connection { name: request.connection, kind: "postgres" };
    let connect = CheckExplanation {
        action: Action::Connect.to_string(),
        resource: resource.to_string(),
        allowed: verdict.allowed,
        policies: ids(&verdict.policies),
        reason: verdict.reason(Action::Connect, &resource),
    };
    let read_only = !policies.grants_beyond_read(&principal, request.connection);

    let mut guard = SqlGuard::new(
        Arc::new(Analyzer::default()),
        Arc::new(PolicyStore::new(policies)),
        identity.clone(),
        request.connection,
        request.client_address,
        request.application_name,
    );
    let queries = request
        .queries
        .iter()
        .map(|sql| {
            let (judgement, decisions) = guard.explain(sql);
            let texts = warden_sql::split_statements(sql);
            let texts = (texts.len() == decisions.len()).then_some(texts);
            let statements = decisions
                .iter()
                .enumerate()
                .map(|(index, decision)| statement(decision, texts.as_ref().map(|texts| texts[index].to_string())))
                .collect();
            QueryExplanation {
                sql: sql.clone(),
                allowed: judgement.refusal.is_none(),
                error: judgement
                    .refusal
                    .map(|refusal| ErrorExplanation { code: refusal.code.to_string(), message: refusal.message }),
                statements,
            }
        })
        .collect();
    Explanation {
        identity: identity.name.clone(),
        groups: identity.groups.clone(),
        connection: request.connection.to_string(),
        connect,
        read_only,
        queries,
    }
}

fn statement(decision: &StatementDecision, sql: Option<String>) -> StatementExplanation {
    let statement = &decision.statement;
    StatementExplanation {
        sql,
        class: statement.class.as_str().to_string(),
        kind: statement.kind.clone(),
        has_where: statement.has_where,
        tables: decision.tables.clone(),
        allowed: decision.allowed(),
        policies: ids(&decision.policies()),
        note: statement.note.clone(),
        checks: decision
            .checks
            .iter()
            .map(|check| CheckExplanation {
                action: check.action.to_string(),
                resource: check.resource.clone(),
                allowed: check.allowed,
                policies: ids(&check.policies),
                reason: check.reason.clone(),
            })
            .collect(),
    }
}

fn ids(policies: &[Arc<str>]) -> Vec<String> {
    policies.iter().map(|id| id.to_string()).collect()
}
