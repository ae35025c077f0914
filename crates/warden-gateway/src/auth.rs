//! Who is calling: every credential the gateway accepts, tried by its shape. `wt_…` is a warden token, a JWT
//! (three dot-separated parts) an OIDC token when issuers are configured, anything else an API key. Shared by
//! every front end and the admin API.

use std::sync::Arc;

use time::OffsetDateTime;
use warden_config::Config;

use crate::revoke::Revocations;
use warden_identity::{
    ApiKeyVerifier, AuthError, Identity, OidcVerifier, SigningKey, TokenError, TokenIssuer, ISSUED_TOKEN_PREFIX,
};

/// The file a gateway with SQLite state keeps its token signing key in, beside the database.
pub const SIGNING_KEY_FILE: &str = "token-signing-key.pem";

/// Verifies presented credentials.
pub struct Authenticator {
    api_keys: ApiKeyVerifier,
    tokens: Arc<TokenIssuer>,
    oidc: OidcVerifier,
    revocations: Arc<Revocations>,
}

impl Authenticator {
    pub(crate) fn new(config: &Config, tokens: Arc<TokenIssuer>, revocations: Arc<Revocations>) -> Authenticator {
        Authenticator {
            api_keys: ApiKeyVerifier::new(&config.api_keys),
            tokens,
            oidc: OidcVerifier::new(&config.oidc),
            revocations,
        }
    }

    /// The identity `credential` establishes at `now`.
    pub async fn authenticate(&self, credential: &str, now: OffsetDateTime) -> Result<Identity, AuthError> {
        let identity = if credential.starts_with(ISSUED_TOKEN_PREFIX) {
            self.tokens.verify(credential, now)?
        } else if !self.oidc.is_empty() && credential.split('.').count() == 3 {
            self.oidc.verify(credential, now).await?
        } else {
            self.api_keys.verify(credential, now)?
        };
        self.revocations.check(&identity)?;
        Ok(identity)
    }

    pub fn tokens(&self) -> &Arc<TokenIssuer> {
        &self.tokens
    }
}

/// The token issuer for `config`: its signing key named in `[tokens]`, or kept beside the SQLite state file
/// (created on first run).
pub fn token_issuer(config: &Config) -> Result<TokenIssuer, TokenError> {
    let key = match (&config.tokens.signing_key, config.state.directory()) {
        (Some(pem), _) => SigningKey::from_pem(pem.expose())
            .map_err(|reason| TokenError::Key { path: "tokens.signing_key".into(), reason })?,
        (None, Some(directory)) => SigningKey::load_or_create(&directory.join(SIGNING_KEY_FILE))?,
        (None, None) => {
            return Err(TokenError::Key {
                path: "tokens.signing_key".into(),
                reason: "not configured, and the state store has no local directory to keep one in".into(),
            })
        }
    };
    Ok(TokenIssuer::new(key, config.tokens.default_ttl, config.tokens.max_ttl))
}
