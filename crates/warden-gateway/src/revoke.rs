//! Revocation: identities, tokens (with every token issued from them) and sessions that must stop at once.
//!
//! A revocation is written to the state store before it is acknowledged, applied to this gateway's in-memory
//! set (refusing new authentications), and its live sessions are ended with FATAL 57P01. Every gateway polls the
//! store for revocations past the last one it has seen, so a revocation made through one replica reaches the
//! others within [`POLL_INTERVAL`], and a restarted gateway starts with all of them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tracing::{info, warn};
use warden_http::HttpFrontend;
use warden_identity::{AuthError, Identity};
use warden_pg::{Ending, PgFrontend, SessionInfo};
use warden_state::{RevocationKind, RevocationRow, StateStore};

/// How often a gateway looks for revocations made elsewhere.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Ids below the last one seen that each poll reads again.
const REREAD_WINDOW: i64 = 64;

#[derive(Default)]
struct Sets {
    identities: HashSet<String>,
    tokens: HashSet<String>,
    sessions: HashSet<String>,
    last_id: i64,
}

/// The revocations in force.
#[derive(Default)]
pub(crate) struct Revocations {
    sets: RwLock<Sets>,
}

impl Revocations {
    /// Refuses an identity that is revoked, or whose token (or an ancestor of it) is.
    pub(crate) fn check(&self, identity: &Identity) -> Result<(), AuthError> {
        let sets = self.sets.read();
        if sets.identities.contains(&identity.name) {
            return Err(AuthError::Revoked(format!("identity \"{}\"", identity.name)));
        }
        if let Some(scope) = &identity.token {
            if let Some(token) = scope.lineage().find(|id| sets.tokens.contains(*id)) {
                return Err(AuthError::Revoked(format!("token {token}")));
            }
        }
        Ok(())
    }

    /// Adds `rows` read from the store, in id order; returns those not applied before.
    pub(crate) fn apply(&self, rows: Vec<RevocationRow>) -> Vec<RevocationRow> {
        let mut sets = self.sets.write();
        let mut fresh = Vec::new();
        for row in rows {
            sets.last_id = sets.last_id.max(row.id);
            if sets.insert(&row) {
                fresh.push(row);
            }
        }
        fresh
    }

    /// Adds a revocation this gateway just stored. The poll position is left alone: revocations other gateways
    /// stored with lower ids may not have been read yet.
    pub(crate) fn apply_local(&self, row: &RevocationRow) {
        self.sets.write().insert(row);
    }

    fn last_id(&self) -> i64 {
        self.sets.read().last_id
    }
}

impl Sets {
    fn insert(&mut self, row: &RevocationRow) -> bool {
        match row.kind {
            RevocationKind::Identity => self.identities.insert(row.subject.clone()),
            RevocationKind::Token => self.tokens.insert(row.subject.clone()),
            RevocationKind::Session => self.sessions.insert(row.subject.clone()),
        }
    }
}

/// Whether the session `id` of `identity` is what `revocation` names.
pub(crate) fn covers(revocation: &RevocationRow, id: &str, identity: &Identity) -> bool {
    match revocation.kind {
        RevocationKind::Identity => identity.name == revocation.subject,
        RevocationKind::Token => {
            identity.token.as_ref().is_some_and(|scope| scope.lineage().any(|id| id == revocation.subject))
        }
        RevocationKind::Session => id == revocation.subject,
    }
}

/// The front ends whose live sessions a revocation ends.
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) pg: Arc<PgFrontend>,
    pub(crate) http: Option<Arc<HttpFrontend>>,
}

/// Ends the live sessions `revocation` names, PostgreSQL (FATAL 57P01) and HTTP (their answers still streaming
/// are cut); returns how many.
pub(crate) fn end_sessions(live: &Live, revocation: &RevocationRow) -> usize {
    let mut message = format!("{} {} has been revoked", revocation.kind.as_str(), quoted(revocation));
    if let Some(reason) = &revocation.reason {
        message.push_str(&format!(" ({reason})"));
    }
    let ending = Ending { code: "57P01", message: format!("terminating connection: {message}") };
    let mut ended =
        live.pg.end_sessions_where(|session: &SessionInfo| covers(revocation, &session.id, &session.identity), &ending);
    if let Some(http) = &live.http {
        ended += http.end_sessions_where(|session| covers(revocation, &session.id, &session.identity), &message);
    }
    info!(kind = revocation.kind.as_str(), subject = %revocation.subject, sessions = ended, "revocation applied");
    ended
}

fn quoted(revocation: &RevocationRow) -> String {
    match revocation.kind {
        RevocationKind::Identity => format!("\"{}\"", revocation.subject),
        _ => revocation.subject.clone(),
    }
}

/// Loads every stored revocation (at start-up).
pub(crate) async fn load(store: &StateStore, revocations: &Revocations) -> Result<usize, warden_state::StateError> {
    let rows = store.revocations_after(0).await?;
    Ok(revocations.apply(rows).len())
}

/// Applies revocations other gateways record, until `stop` turns true.
pub(crate) async fn poll(
    store: StateStore,
    revocations: Arc<Revocations>,
    live: Live,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        // Re-read a window below the last id seen: PostgreSQL hands out ids at insert but makes rows visible at
        // commit, so a lower id can appear after a higher one. Rows already applied are skipped.
        match store.revocations_after(revocations.last_id().saturating_sub(REREAD_WINDOW)).await {
            Ok(rows) => {
                failing = false;
                for revocation in revocations.apply(rows) {
                    end_sessions(&live, &revocation);
                }
            }
            Err(error) if !failing => {
                failing = true;
                warn!(%error, "cannot read revocations from the state store; retrying");
            }
            Err(_) => {}
        }
    }
}
