//! Who is calling: every credential the gateway accepts, tried by its shape. `wk_…` is an API key, `wt_…` a warden
//! token; anything else is refused as an unknown key. Shared by every front end and the admin API.

use std::sync::Arc;

use time::OffsetDateTime;
use warden_config::Config;
use warden_identity::{ApiKeyVerifier, AuthError, Identity, SigningKey, TokenError, TokenIssuer, ISSUED_TOKEN_PREFIX};

/// The file a gateway with SQLite state keeps its token signing key in, beside the database.
pub const SIGNING_KEY_FILE: &str = "token-signing-key.pem";

/// Verifies presented credentials.
pub struct Authenticator {
    api_keys: ApiKeyVerifier,
    tokens: Arc<TokenIssuer>,
}

impl Authenticator {
    pub fn new(config: &Config, tokens: Arc<TokenIssuer>) -> Authenticator {
        Authenticator { api_keys: ApiKeyVerifier::new(&config.api_keys), tokens }
    }

    /// The identity `credential` establishes at `now`.
    pub async fn authenticate(&self, credential: &str, now: OffsetDateTime) -> Result<Identity, AuthError> {
        if credential.starts_with(ISSUED_TOKEN_PREFIX) {
            return self.tokens.verify(credential, now);
        }
        self.api_keys.verify(credential, now)
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
