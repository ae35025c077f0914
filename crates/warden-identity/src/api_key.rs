//! API keys for service accounts: SHA-256 digests in the config, compared in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use warden_config::ApiKey;

use crate::{AuthError, Identity, IdentityKind};

/// Verifies presented API keys against the configured digests.
#[derive(Debug, Clone, Default)]
pub struct ApiKeyVerifier {
    keys: Vec<ApiKey>,
}

impl ApiKeyVerifier {
    pub fn new(keys: &[ApiKey]) -> Self {
        ApiKeyVerifier { keys: keys.to_vec() }
    }

    /// Checks `presented` against every configured key in constant time per key, without stopping early.
    pub fn verify(&self, presented: &str, now: OffsetDateTime) -> Result<Identity, AuthError> {
        if presented.is_empty() {
            return Err(AuthError::Empty);
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&ApiKey> = None;
        for key in &self.keys {
            if bool::from(key.sha256.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        let key = found.ok_or(AuthError::UnknownKey)?;
        if let Some(expired_at) = key.expires_at.filter(|expires_at| *expires_at <= now) {
            return Err(AuthError::Expired { name: key.name.clone(), expired_at });
        }
        Ok(Identity {
            name: key.name.clone(),
            groups: key.groups.clone(),
            kind: IdentityKind::ApiKey,
            expires_at: key.expires_at,
            token: None,
        })
    }
}

/// A fresh API key: `wk_` and 32 random bytes in hex (64 characters).
pub fn generate_api_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("wk_{}", hex::encode(bytes))
}

/// The hex SHA-256 digest to put in `key = { sha256 = "…" }`.
pub fn api_key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, secret: &str, expires_at: Option<OffsetDateTime>) -> ApiKey {
        ApiKey {
            name: name.to_string(),
            sha256: Sha256::digest(secret.as_bytes()).into(),
            groups: vec!["agents".to_string()],
            expires_at,
        }
    }

    fn check(verifier: &ApiKeyVerifier, presented: &str, expected: Result<&str, AuthError>) {
        let actual = verifier.verify(presented, OffsetDateTime::now_utc()).map(|identity| identity.name);
        assert_eq!(actual, expected.map(str::to_string), "presented {presented:?}");
    }

    #[test]
    fn verifies_each_key_and_refuses_others() {
        let expired_at = OffsetDateTime::now_utc() - time::Duration::hours(1);
        let verifier = ApiKeyVerifier::new(&[
            key("agent", "wk_one", None),
            key("ci", "wk_two", None),
            key("old", "wk_three", Some(expired_at)),
        ]);
        check(&verifier, "wk_one", Ok("agent"));
        check(&verifier, "wk_two", Ok("ci"));
        check(&verifier, "wk_one ", Err(AuthError::UnknownKey));
        check(&verifier, "", Err(AuthError::Empty));
        check(&verifier, "wk_three", Err(AuthError::Expired { name: "old".into(), expired_at }));
    }

    #[test]
    fn generated_keys_are_unique_and_digest_matches() {
        let first = generate_api_key();
        assert_ne!(first, generate_api_key());
        assert_eq!(first.len(), 67);
        let verifier = ApiKeyVerifier::new(&[ApiKey {
            name: "new".into(),
            sha256: hex::decode(api_key_digest(&first)).unwrap().try_into().unwrap(),
            groups: vec![],
            expires_at: None,
        }]);
        check(&verifier, &first, Ok("new"));
    }
}
