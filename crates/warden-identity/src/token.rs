//! warden tokens: short-lived credentials the gateway issues, each narrowing the credential it was issued to.
//!
//! A token is `wt_` followed by a JWT signed with the gateway's Ed25519 key (`EdDSA`, header `kid` = the key's id),
//! so anyone holding the public key can verify it, and secret scanners can recognise it by its prefix. Claims:
//! `iss` = `warden`, `sub` = the identity, `jti` = the token id, `iat`/`exp`, `groups` (the parent's, unchanged),
//! optional `connections` and `actions` (absent = as the parent), optional labels `run` and `node`, and `chain`,
//! the ids of the tokens it descends from (root first), so revoking a token refuses its descendants too.
//!
//! Narrowing is checked at issue: a child's connections and actions are subsets of its parent's, its lifetime ends
//! no later than its parent's and is at most the configured maximum, and it keeps its parent's `run` label.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{AuthError, Identity, IdentityKind};

/// What every warden token starts with.
pub const ISSUED_TOKEN_PREFIX: &str = "wt_";

/// The `iss` of warden tokens.
const ISSUER: &str = "warden";

/// Tokens descending from tokens descending from …: at most this many generations.
const MAX_GENERATIONS: usize = 8;

/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECONDS: u64 = 5;

/// Longest label, connection or action name accepted in a request.
const MAX_NAME: usize = 128;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// Why a token could not be issued, or a signing key loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The request asks for more than the parent credential holds, or is malformed.
    #[error("{0}")]
    Refused(String),
    #[error("token signing key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("cannot sign the token: {0}")]
    Signing(String),
}

/// The gateway's Ed25519 token signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_key: [u8; 32],
    key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key, and its PKCS#8 PEM to store.
    pub fn generate() -> Result<(SigningKey, String), TokenError> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| TokenError::Signing("cannot generate an Ed25519 key".into()))?;
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", document.as_ref().to_vec()));
        let key = SigningKey::from_pkcs8(document.as_ref()).map_err(TokenError::Signing)?;
        Ok((key, pem))
    }

    /// A key from PKCS#8 PEM (`openssl genpkey -algorithm ed25519` writes one).
    pub fn from_pem(text: &str) -> Result<SigningKey, String> {
        let block = pem::parse(text.trim()).map_err(|error| format!("not a PEM private key: {error}"))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(format!("expected a PKCS#8 \"PRIVATE KEY\" PEM block, found \"{}\"", block.tag()));
        }
        SigningKey::from_pkcs8(block.contents())
    }

    fn from_pkcs8(der: &[u8]) -> Result<SigningKey, String> {
        let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|error| format!("not an Ed25519 PKCS#8 key: {error}"))?;
        let public_key: [u8; 32] =
            pair.public_key().as_ref().try_into().map_err(|_| "unexpected Ed25519 public key length".to_string())?;
        let key_id = hex::encode(&Sha256::digest(public_key)[..8]);
        Ok(SigningKey {
            pair,
            encoding: EncodingKey::from_ed_der(der),
            decoding: DecodingKey::from_ed_der(&public_key),
            public_key,
            key_id,
        })
    }

    /// Reads the key at `path`, or creates it there (mode 0600, parent directories too) when there is none.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, TokenError> {
        let key_error = |reason: String| TokenError::Key { path: path.display().to_string(), reason };
        match std::fs::read_to_string(path) {
            Ok(text) => return SigningKey::from_pem(&text).map_err(key_error),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(key_error(error.to_string())),
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| key_error(error.to_string()))?;
        }
        let (key, pem) = SigningKey::generate()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                std::io::Write::write_all(&mut file, pem.as_bytes()).map_err(|error| key_error(error.to_string()))?;
                file.sync_all().map_err(|error| key_error(error.to_string()))?;
                Ok(key)
            }
            // Another gateway process created it first: use theirs.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(|error| key_error(error.to_string()))?;
                SigningKey::from_pem(&text).map_err(key_error)
            }
            Err(error) => Err(key_error(error.to_string())),
        }
    }

    /// The key's id: the first 8 bytes of the SHA-256 of its public key, in hex (the tokens' `kid`).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// An Ed25519 signature of `message` (the audit trail's checkpoints).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let signature = self.pair.sign(message);
        let mut out = [0u8; 64];
        out.copy_from_slice(signature.as_ref());
        out
    }

    /// The public key as SubjectPublicKeyInfo PEM, for verifiers outside warden.
    pub fn public_key_pem(&self) -> String {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.public_key);
        pem::encode(&pem::Pem::new("PUBLIC KEY", der))
    }
}

/// What a warden token narrows its identity to, and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenScope {
    pub id: String,
    /// The tokens this one descends from, root first.
    pub chain: Vec<String>,
    /// The connections it may use; `None`: every connection the identity may use.
    pub connections: Option<Vec<String>>,
    /// The actions it may perform; `None`: every action the identity may perform.
    pub actions: Option<Vec<String>>,
    /// The workflow run it was issued for.
    pub run: Option<String>,
    /// The workflow node it was issued for.
    pub node: Option<String>,
}

impl TokenScope {
    pub fn allows_connection(&self, connection: &str) -> bool {
        self.connections.as_ref().is_none_or(|allowed| allowed.iter().any(|name| name == connection))
    }

    pub fn allows_action(&self, action: &str) -> bool {
        self.actions.as_ref().is_none_or(|allowed| allowed.iter().any(|name| name == action))
    }

    /// This token's id and every ancestor's.
    pub fn lineage(&self) -> impl Iterator<Item = &str> {
        self.chain.iter().map(String::as_str).chain(std::iter::once(self.id.as_str()))
    }
}

/// What a caller asks a new token for. Absent fields inherit the parent's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRequest {
    pub connections: Option<Vec<String>>,
    pub actions: Option<Vec<String>>,
    pub ttl: Option<Duration>,
    pub run: Option<String>,
    pub node: Option<String>,
}

/// A token just issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The credential to hand over (`wt_…`); shown once, never stored.
    pub token: String,
    pub id: String,
    pub expires_at: OffsetDateTime,
    pub scope: TokenScope,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    jti: String,
    iat: i64,
    exp: i64,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connections: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    chain: Vec<String>,
}

/// Issues and verifies warden tokens with one signing key.
#[derive(Debug)]
pub struct TokenIssuer {
    key: SigningKey,
    default_ttl: Duration,
    max_ttl: Duration,
}

impl TokenIssuer {
    pub fn new(key: SigningKey, default_ttl: Duration, max_ttl: Duration) -> TokenIssuer {
        TokenIssuer { key, default_ttl, max_ttl }
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Issues a token for `parent` (the identity that authenticated the request) narrowed by `request`.
    pub fn issue(
        &self,
        parent: &Identity,
        request: &TokenRequest,
        now: OffsetDateTime,
    ) -> Result<IssuedToken, TokenError> {
        let refuse = |reason: String| Err(TokenError::Refused(reason));
        let parent_scope = parent.token.as_deref();
        let connections = narrow(
            "connection",
            request.connections.as_ref(),
            parent_scope.and_then(|scope| scope.connections.as_ref()),
        )?;
        let actions =
            narrow("action", request.actions.as_ref(), parent_scope.and_then(|scope| scope.actions.as_ref()))?;
        for label in [&request.run, &request.node].into_iter().flatten() {
            check_name("label", label)?;
        }
        let parent_run = parent_scope.and_then(|scope| scope.run.as_ref());
        let run = match (&request.run, parent_run) {
            (Some(asked), Some(held)) if asked != held => {
                return refuse(format!(
                    "the parent token belongs to run \"{held}\"; a child cannot move to run \"{asked}\""
                ))
            }
            (asked, held) => asked.clone().or_else(|| held.cloned()),
        };
        let node = request.node.clone().or_else(|| parent_scope.and_then(|scope| scope.node.clone()));
        let chain: Vec<String> =
            parent_scope.map(|scope| scope.lineage().map(str::to_string).collect()).unwrap_or_default();
        if chain.len() >= MAX_GENERATIONS {
            return refuse(format!("a token may descend from at most {MAX_GENERATIONS} tokens"));
        }

        let ttl = match request.ttl {
            Some(ttl) if ttl.is_zero() => return refuse("ttl_seconds must be at least 1".into()),
            Some(ttl) if ttl > self.max_ttl => {
                return refuse(format!(
                    "ttl of {}s exceeds the maximum of {}s (tokens.max_ttl)",
                    ttl.as_secs(),
                    self.max_ttl.as_secs()
                ))
            }
            Some(ttl) => ttl,
            None => self.default_ttl,
        };
        let mut expires_at = now + ttl;
        if let Some(parent_expiry) = parent.expires_at {
            if parent_expiry <= now {
                return refuse("the parent credential has expired".into());
            }
            if expires_at > parent_expiry {
                if request.ttl.is_some() {
                    return refuse(format!(
                        "ttl of {}s outlives the parent credential, which expires in {}s",
                        ttl.as_secs(),
                        (parent_expiry - now).whole_seconds()
                    ));
                }
                expires_at = parent_expiry;
            }
        }
        // Whole seconds, as JWT times are.
        let expires_at = OffsetDateTime::from_unix_timestamp(expires_at.unix_timestamp()).unwrap_or(expires_at);

        let mut random = [0u8; 16];
        rand::rng().fill_bytes(&mut random);
        let id = format!("tok_{}", hex::encode(random));
        let claims = Claims {
            iss: ISSUER.to_string(),
            sub: parent.name.clone(),
            jti: id.clone(),
            iat: now.unix_timestamp(),
            exp: expires_at.unix_timestamp(),
            groups: parent.groups.clone(),
            connections: connections.clone(),
            actions: actions.clone(),
            run: run.clone(),
            node: node.clone(),
            chain: chain.clone(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key.key_id.clone());
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key.encoding)
            .map_err(|error| TokenError::Signing(error.to_string()))?;
        Ok(IssuedToken {
            token: format!("{ISSUED_TOKEN_PREFIX}{jwt}"),
            id: id.clone(),
            expires_at,
            scope: TokenScope { id, chain, connections, actions, run, node },
        })
    }

    /// Verifies a presented `wt_…` token: signature by this gateway's key, issuer, expiry.
    pub fn verify(&self, presented: &str, now: OffsetDateTime) -> Result<Identity, AuthError> {
        let refuse = |reason: &str| AuthError::Token(reason.to_string());
        let jwt = presented.strip_prefix(ISSUED_TOKEN_PREFIX).ok_or_else(|| refuse("not a warden token"))?;
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| refuse("malformed token"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(refuse("token is not signed with EdDSA"));
        }
        if header.kid.as_deref() != Some(self.key.key_id.as_str()) {
            return Err(refuse("token was signed with a key this gateway does not hold"));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.validate_aud = false;
        // Expiry is checked below against `now`, so tests and callers agree on the clock.
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Claims>(jwt, &self.key.decoding, &validation).map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            match error.kind() {
                ErrorKind::InvalidSignature => refuse("bad signature"),
                ErrorKind::InvalidIssuer => refuse("wrong issuer"),
                _ => refuse("malformed token"),
            }
        })?;
        let claims = data.claims;
        if claims.exp.saturating_add(LEEWAY_SECONDS as i64) <= now.unix_timestamp() {
            return Err(AuthError::Token(format!("token {} expired", claims.jti)));
        }
        let expires_at = OffsetDateTime::from_unix_timestamp(claims.exp).map_err(|_| refuse("malformed token"))?;
        Ok(Identity {
            name: claims.sub,
            groups: claims.groups,
            kind: IdentityKind::WardenToken,
            expires_at: Some(expires_at),
            token: Some(Arc::new(TokenScope {
                id: claims.jti,
                chain: claims.chain,
                connections: claims.connections,
                actions: claims.actions,
                run: claims.run,
                node: claims.node,
            })),
        })
    }
}

fn check_name(what: &str, name: &str) -> Result<(), TokenError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(TokenError::Refused(format!("{what} \"{name}\" must be 1 to {MAX_NAME} printable characters")));
    }
    Ok(())
}

/// The child's list: what it asks for, each item allowed by the parent; or the parent's when it asks nothing.
fn narrow(
    what: &str,
    asked: Option<&Vec<String>>,
    held: Option<&Vec<String>>,
) -> Result<Option<Vec<String>>, TokenError> {
    let Some(asked) = asked else {
        return Ok(held.cloned());
    };
    if asked.is_empty() {
        return Err(TokenError::Refused(format!(
            "an empty {what} list allows nothing; omit it to inherit the parent's"
        )));
    }
    let mut list: Vec<String> = Vec::new();
    for item in asked {
        check_name(what, item)?;
        if let Some(held) = held {
            if !held.contains(item) {
                return Err(TokenError::Refused(format!(
                    "{what} \"{item}\" is not allowed to the parent token (it allows {})",
                    held.join(", ")
                )));
            }
        }
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
    Ok(Some(list))
}

#[cfg(test)]
mod tests;
