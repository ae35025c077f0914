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
    /// The upstream's error, `SQLSTATE: message`.
    pub error: Option<String>,
}

pub trait SessionHooks: Send + Sync + 'static {
    /// Verifies the password a client presented (an API key).
    fn authenticate(&self, credential: &str) -> Result<Identity, AuthError>;
    fn session_started(&self, session: &SessionInfo);
    fn statement(&self, session: &SessionInfo, statement: StatementEvent);
    fn session_ended(&self, session: &SessionInfo, reason: &str);
}
