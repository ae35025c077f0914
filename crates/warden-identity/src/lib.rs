//! Identity: who is calling warden, and the checks that establish it.
//!
//! This crate owns the [`Identity`] type every protocol front end attaches to a session, and the
//! verification of presented credentials:
//! - API keys (`api_key.rs`): stored as SHA-256 digests, compared in constant time against every configured key
//!   (no early exit), with optional expiry;
//! - warden tokens (`token.rs`): Ed25519-signed JWTs the gateway issues, each narrowing its parent credential
//!   (connections, actions, lifetime) and carrying workflow labels (`run`, `node`);
//! - OIDC tokens (`oidc.rs`): JWTs from configured issuers, checked against their published keys (JWKS, fetched
//!   and cached, refreshed on an unknown key id).
//!
//! It never keeps a presented credential. Only the OIDC verifier does network IO (discovery and JWKS).
#![forbid(unsafe_code)]

mod api_key;
mod oidc;
mod token;

use std::sync::Arc;

use time::OffsetDateTime;

pub use api_key::{api_key_digest, generate_api_key, ApiKeyVerifier};
pub use oidc::OidcVerifier;
pub use token::{IssuedToken, SigningKey, TokenError, TokenIssuer, TokenRequest, TokenScope, ISSUED_TOKEN_PREFIX};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identity's name: for an API key, its `name` in the config.
    pub name: String,
    pub groups: Vec<String>,
    pub kind: IdentityKind,
    /// When the credential stops being valid, if it does.
    pub expires_at: Option<OffsetDateTime>,
    /// For a warden token: its id, its ancestry, what it narrows the identity to, and its labels.
    pub token: Option<Arc<TokenScope>>,
}

impl Identity {
    /// An identity from a credential that carries no token scope.
    pub fn new(name: impl Into<String>, groups: Vec<String>, kind: IdentityKind) -> Identity {
        Identity { name: name.into(), groups, kind, expires_at: None, token: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    ApiKey,
    Oidc,
    WardenToken,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::ApiKey => "api_key",
            IdentityKind::Oidc => "oidc",
            IdentityKind::WardenToken => "warden_token",
        }
    }
}

/// Why a credential was refused. The messages are safe to show the caller: they never echo the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("invalid API key")]
    UnknownKey,
    #[error("API key \"{name}\" expired at {expired_at}")]
    Expired { name: String, expired_at: OffsetDateTime },
    #[error("no credential presented")]
    Empty,
    /// A JWT from a configured OIDC issuer that fails validation; the reason names the check.
    #[error("OIDC token refused: {0}")]
    Oidc(String),
    /// A warden token that fails validation.
    #[error("warden token refused: {0}")]
    Token(String),
    /// The identity, token or an ancestor token was revoked.
    #[error("{0} has been revoked")]
    Revoked(String),
}
