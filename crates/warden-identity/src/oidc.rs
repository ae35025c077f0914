//! OIDC tokens: JWTs from the issuers configured in `[[oidc]]`, verified against the keys each issuer publishes.
//!
//! This module owns the whole path from a presented JWT to an [`Identity`]:
//! - **Issuer**: chosen by the token's (not yet verified) `iss`, which must equal a configured issuer exactly;
//!   the signature check that follows is made with that issuer's keys only.
//! - **Algorithm**: RS256, PS256, ES256 or EdDSA (Ed25519). `none`, HMAC and everything else are refused from the
//!   header alone, before any key is looked at, so a public key can never become an HMAC secret.
//! - **Key**: selected by `kid`; the header's alg must match the key's type (`kty`/`crv`) and the key's own `alg`
//!   when it names one. A token without `kid` is accepted only when the issuer publishes exactly one key usable
//!   for its alg. Signatures are checked with aws-lc-rs, against keys parsed once when the key set is fetched.
//! - **Claims**: `iss` exact, `aud` (a string or an array) contains the configured audience, `exp` required,
//!   `exp`/`nbf` with [`LEEWAY_SECONDS`] of leeway, `sub` required, the name claim required; the groups claim (an
//!   array of strings, or one string, or absent) becomes the group memberships.
//! - **Keys**: discovery (`<issuer>/.well-known/openid-configuration`, whose `issuer` must be the configured one)
//!   names the JWKS unless `jwks_url` is configured. The key set is cached per issuer and refreshed when older than
//!   ten minutes (sooner if the JWKS response's `Cache-Control: max-age` says so, but not more often than once a
//!   minute), and when a token names an unknown `kid` — at most once per issuer per [`REFRESH_INTERVAL`]: verifications
//!   waiting on the same refresh share its result, and until the interval has passed an unknown `kid` is refused
//!   without another fetch. A failed refresh keeps the cached keys.
//! - **Fetches**: one GET each, [`FETCH_TIMEOUT`] for the whole exchange, bodies capped at [`MAX_RESPONSE_BYTES`],
//!   https (plain http only on a loopback host), redirects not followed, no connection kept between fetches
//!   (fetches are rare, and a pooled connection would belong to whichever worker runtime opened it).
//!
//! Refusal reasons name the check that failed; they never contain the presented token.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self as aws_signature, ParsedPublicKey, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use warden_config::OidcIssuer;

use crate::{AuthError, Identity, IdentityKind};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECONDS: i64 = 60;

/// A cached key set is refreshed once it is this old.
const KEYS_MAX_AGE: Duration = Duration::from_secs(600);

/// The shortest cache lifetime a JWKS response's `Cache-Control: max-age` can ask for.
const KEYS_MIN_AGE: Duration = Duration::from_secs(60);

/// At most one refresh per issuer in this interval for an unknown `kid`, and no retry of a failed fetch sooner.
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// The longest one fetch (connect, request, whole response) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest discovery or JWKS response read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The longest token looked at; anything longer is refused before it is decoded.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Keys read from one JWKS; any beyond are ignored.
const MAX_KEYS: usize = 64;

/// The longest identity or group name accepted from a token, in characters.
const MAX_NAME_CHARS: usize = 256;

/// The most groups accepted from one token.
const MAX_GROUPS: usize = 256;

/// How much of a value taken from a token a refusal quotes.
const MAX_QUOTED_CHARS: usize = 80;

/// Verifies OIDC tokens from the configured issuers. Shared by all sessions (it is `Send + Sync`); each issuer's
/// keys are cached inside.
pub struct OidcVerifier {
    issuers: Vec<IssuerKeys>,
    /// Built on the first fetch: loading the system's root certificates is not free, and a gateway without
    /// `[[oidc]]` never needs it.
    client: OnceLock<HttpClient>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let issuers: Vec<&str> = self.issuers.iter().map(|issuer| issuer.config.issuer.as_str()).collect();
        f.debug_struct("OidcVerifier").field("issuers", &issuers).finish_non_exhaustive()
    }
}

impl OidcVerifier {
    pub fn new(issuers: &[OidcIssuer]) -> OidcVerifier {
        let issuers = issuers
            .iter()
            .map(|config| IssuerKeys {
                config: config.clone(),
                keys: RwLock::new(None),
                fetch: tokio::sync::Mutex::new(FetchState {
                    jwks_url: config.jwks_url.clone(),
                    ..FetchState::default()
                }),
            })
            .collect();
        OidcVerifier { issuers, client: OnceLock::new() }
    }

    /// Whether no issuer is configured (every OIDC token is then refused).
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Verifies a presented JWT: `Ok` with an identity of kind [`IdentityKind::Oidc`], named by the issuer's name
    /// claim, with the groups of its groups claim, expiring at `exp`.
    pub async fn verify(&self, presented: &str, now: OffsetDateTime) -> Result<Identity, AuthError> {
        let started = Instant::now();
        let token = Jwt::parse(presented).map_err(refuse)?;
        let issuer_name = match token.claims.get("iss") {
            Some(Value::String(issuer)) => issuer.as_str(),
            Some(_) => return Err(refuse("the issuer claim (iss) is not a string")),
            None => return Err(refuse("token has no issuer claim (iss)")),
        };
        let Some(issuer) = self.issuers.iter().find(|issuer| issuer.config.issuer == issuer_name) else {
            return Err(refuse(format!("issuer {} is not configured", quoted(issuer_name))));
        };

        let keys = self.key_set(issuer).await?;
        let (keys, index) = match keys.select(&token, &issuer.config.issuer) {
            Selection::Found(index) => (keys, index),
            Selection::Unknown => {
                let kid = token.kid.as_deref().unwrap_or_default();
                let refreshed = self.refresh_for_unknown_key(issuer, started).await?;
                let unknown = || {
                    refuse(format!(
                        "token is signed with key id {} which issuer \"{}\" does not publish",
                        quoted(kid),
                        issuer.config.issuer
                    ))
                };
                let Some(refreshed) = refreshed else { return Err(unknown()) };
                match refreshed.select(&token, &issuer.config.issuer) {
                    Selection::Found(index) => (refreshed, index),
                    Selection::Unknown => return Err(unknown()),
                    Selection::Refused(reason) => return Err(refuse(reason)),
                }
            }
            Selection::Refused(reason) => return Err(refuse(reason)),
        };
        let public_key = keys.keys[index].verifier(token.alg).map_err(refuse)?;
        public_key.verify_sig(token.signing_input.as_bytes(), &token.signature).map_err(|_| refuse("bad signature"))?;
        drop(keys);

        check_claims(token.claims, &issuer.config, now)
    }

    /// The issuer's key set: the cached one, fetched first if there is none, refreshed first if it is stale (and no
    /// other verification is refreshing it, and the last attempt is not too recent).
    async fn key_set(&self, issuer: &IssuerKeys) -> Result<Arc<KeySet>, AuthError> {
        let cached = issuer.current();
        match cached {
            Some(keys) if !keys.is_stale() => Ok(keys),
            Some(stale) => {
                // Another verification is refreshing: use the stale keys rather than wait.
                let Ok(mut state) = issuer.fetch.try_lock() else { return Ok(stale) };
                if let Some(current) = issuer.current().filter(|keys| !keys.is_stale()) {
                    return Ok(current);
                }
                if state.attempted_recently() {
                    return Ok(stale);
                }
                match self.refresh(issuer, &mut state).await {
                    Ok(fresh) => Ok(fresh),
                    Err(reason) => {
                        tracing::warn!(
                            issuer = %issuer.config.issuer,
                            "cannot refresh the issuer's keys, using the cached ones: {reason}"
                        );
                        Ok(stale)
                    }
                }
            }
            None => {
                let mut state = issuer.fetch.lock().await;
                if let Some(current) = issuer.current() {
                    return Ok(current);
                }
                if state.attempted_recently() {
                    if let Some(reason) = &state.last_failure {
                        return Err(cannot_fetch(issuer, reason));
                    }
                }
                self.refresh(issuer, &mut state).await.map_err(|reason| cannot_fetch(issuer, &reason))
            }
        }
    }

    /// Refreshes the issuer's keys for a token naming an unknown key id, unless they were fetched after the
    /// verification `started` (by it, or by a concurrent one while it waited: refetching cannot help) or an unknown
    /// key id already caused a refresh within [`REFRESH_INTERVAL`] (`Ok(None)`: refuse without fetching).
    async fn refresh_for_unknown_key(
        &self,
        issuer: &IssuerKeys,
        started: Instant,
    ) -> Result<Option<Arc<KeySet>>, AuthError> {
        let mut state = issuer.fetch.lock().await;
        if let Some(current) = issuer.current().filter(|current| current.fetched_at >= started) {
            return Ok(Some(current));
        }
        if state.unknown_key_refresh.is_some_and(|at| at.elapsed() < REFRESH_INTERVAL) {
            return Ok(None);
        }
        state.unknown_key_refresh = Some(Instant::now());
        self.refresh(issuer, &mut state).await.map(Some).map_err(|reason| cannot_fetch(issuer, &reason))
    }

    /// Fetches the issuer's keys (after discovery, the first time) and caches them. The caller holds the
    /// issuer's fetch lock.
    async fn refresh(&self, issuer: &IssuerKeys, state: &mut FetchState) -> Result<Arc<KeySet>, String> {
        state.last_attempt = Some(Instant::now());
        match self.fetch_keys(issuer, state).await {
            Ok(keys) => {
                tracing::debug!(issuer = %issuer.config.issuer, keys = keys.keys.len(), "fetched the issuer's keys");
                state.last_failure = None;
                let keys = Arc::new(keys);
                *issuer.keys.write() = Some(keys.clone());
                Ok(keys)
            }
            Err(reason) => {
                state.last_failure = Some(reason.clone());
                Err(reason)
            }
        }
    }

    async fn fetch_keys(&self, issuer: &IssuerKeys, state: &mut FetchState) -> Result<KeySet, String> {
        let client = self.client.get_or_init(HttpClient::new);
        let jwks_url = match &state.jwks_url {
            Some(url) => url.clone(),
            None => {
                let url = discover(client, &issuer.config.issuer).await?;
                state.jwks_url = Some(url.clone());
                url
            }
        };
        let (document, max_age) = client.get_json::<JwkSetDocument>(&jwks_url).await?;
        let keys: Vec<PublishedKey> = document.keys.iter().take(MAX_KEYS).filter_map(PublishedKey::from_jwk).collect();
        if keys.is_empty() {
            return Err(format!("the key set at {jwks_url} has no keys"));
        }
        let max_age = max_age.map_or(KEYS_MAX_AGE, |max_age| max_age.clamp(KEYS_MIN_AGE, KEYS_MAX_AGE));
        let fetched_at = Instant::now();
        Ok(KeySet { keys, fetched_at, fresh_until: fetched_at + max_age })
    }
}

fn refuse(reason: impl Into<String>) -> AuthError {
    AuthError::Oidc(reason.into())
}

fn cannot_fetch(issuer: &IssuerKeys, reason: &str) -> AuthError {
    refuse(format!("cannot fetch keys for issuer \"{}\": {reason}", issuer.config.issuer))
}

/// A value taken from a token, quoted and cut short for a refusal message.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => format!("{:?}…", &value[..end]),
        None => format!("{value:?}"),
    }
}

/// One configured issuer and its cached keys.
struct IssuerKeys {
    config: OidcIssuer,
    /// The key set last fetched; `None` until the first fetch succeeds. Swapped whole on refresh.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching, so concurrent verifications share one fetch.
    fetch: tokio::sync::Mutex<FetchState>,
}

impl IssuerKeys {
    fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.read().clone()
    }
}

#[derive(Debug, Default)]
struct FetchState {
    /// The configured JWKS URL, or the one discovery named (discovery runs until it succeeds once).
    jwks_url: Option<String>,
    last_attempt: Option<Instant>,
    /// Why the last attempt failed, if it did.
    last_failure: Option<String>,
    /// When an unknown key id last caused a refresh.
    unknown_key_refresh: Option<Instant>,
}

impl FetchState {
    fn attempted_recently(&self) -> bool {
        self.last_attempt.is_some_and(|at| at.elapsed() < REFRESH_INTERVAL)
    }
}

/// The keys an issuer published, as fetched at one time.
#[derive(Debug, Clone)]
struct KeySet {
    keys: Vec<PublishedKey>,
    fetched_at: Instant,
    /// Refreshed on use after this.
    fresh_until: Instant,
}

enum Selection {
    Found(usize),
    /// The token names a key id the set does not hold.
    Unknown,
    Refused(String),
}

impl KeySet {
    fn is_stale(&self) -> bool {
        Instant::now() >= self.fresh_until
    }

    /// The key to check the token's signature with.
    fn select(&self, token: &Jwt, issuer: &str) -> Selection {
        match &token.kid {
            Some(kid) => {
                let mut named = self.keys.iter().enumerate().filter(|(_, key)| key.kid.as_deref() == Some(kid));
                let Some((first_index, first)) = named.next() else { return Selection::Unknown };
                // Several keys may share a kid (one per type): take the one that can verify the token's alg.
                if first.verifier(token.alg).is_ok() {
                    return Selection::Found(first_index);
                }
                if let Some((index, _)) = named.find(|(_, key)| key.verifier(token.alg).is_ok()) {
                    return Selection::Found(index);
                }
                let reason = first.verifier(token.alg).err().unwrap_or_default();
                Selection::Refused(format!("key {} of issuer \"{issuer}\" {reason}", quoted(kid)))
            }
            None => {
                let mut usable = self.keys.iter().enumerate().filter(|(_, key)| key.verifier(token.alg).is_ok());
                match (usable.next(), usable.count()) {
                    (Some((index, _)), 0) => Selection::Found(index),
                    (None, _) => Selection::Refused(format!(
                        "token has no key id (kid) and issuer \"{issuer}\" publishes no key for {}",
                        token.alg.name()
                    )),
                    (Some(_), more) => Selection::Refused(format!(
                        "token has no key id (kid) and issuer \"{issuer}\" publishes {} keys for {}",
                        more + 1,
                        token.alg.name()
                    )),
                }
            }
        }
    }
}

/// The signature algorithms accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Ps256,
    Es256,
    EdDsa,
}

impl Alg {
    fn from_header(name: &str) -> Result<Alg, String> {
        match name {
            "RS256" => Ok(Alg::Rs256),
            "PS256" => Ok(Alg::Ps256),
            "ES256" => Ok(Alg::Es256),
            "EdDSA" => Ok(Alg::EdDsa),
            _ if name.eq_ignore_ascii_case("none") => Err("unsigned tokens (alg none) are never accepted".to_string()),
            "HS256" | "HS384" | "HS512" => Err(format!(
                "alg {name} (a shared-secret MAC) is never accepted for OIDC tokens; RS256, PS256, ES256 or EdDSA only"
            )),
            _ => Err(format!("alg {} is not accepted; RS256, PS256, ES256 or EdDSA only", quoted(name))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Ps256 => "PS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

/// One key of an issuer's JWKS, parsed for verification.
#[derive(Debug, Clone)]
struct PublishedKey {
    kid: Option<String>,
    /// The JWK's own `alg`, when it names one: the only alg the key may verify.
    alg: Option<String>,
    material: KeyMaterial,
}

#[derive(Debug, Clone)]
enum KeyMaterial {
    /// An RSA key, parsed once for each padding (a JWK without `alg` may serve RS256 and PS256).
    Rsa {
        pkcs1: ParsedPublicKey,
        pss: ParsedPublicKey,
    },
    P256(ParsedPublicKey),
    Ed25519(ParsedPublicKey),
    /// A key warden will not verify with, and why (finishing "key … of issuer …").
    Unusable(String),
}

impl KeyMaterial {
    fn describe(&self) -> &'static str {
        match self {
            KeyMaterial::Rsa { .. } => "an RSA key",
            KeyMaterial::P256(_) => "an EC P-256 key",
            KeyMaterial::Ed25519(_) => "an Ed25519 key",
            KeyMaterial::Unusable(_) => "an unusable key",
        }
    }
}

impl PublishedKey {
    /// A key from one JWK; `None` for an entry that is not a JWK at all (it is skipped).
    fn from_jwk(value: &Value) -> Option<PublishedKey> {
        let jwk = Jwk::deserialize(value).ok()?;
        let material = match jwk.usage.as_deref() {
            Some("sig") | None => KeyMaterial::from_jwk(&jwk).unwrap_or_else(KeyMaterial::Unusable),
            Some(usage) => KeyMaterial::Unusable(format!("is not a signing key (\"use\": {})", quoted(usage))),
        };
        Some(PublishedKey { kid: jwk.kid, alg: jwk.alg, material })
    }

    /// The parsed key for `alg`, or why this key cannot verify it (a sentence finishing "key … of issuer …").
    fn verifier(&self, alg: Alg) -> Result<&ParsedPublicKey, String> {
        if let Some(own) = &self.alg {
            if own != alg.name() {
                return Err(format!("is published for alg {} and cannot verify {}", quoted(own), alg.name()));
            }
        }
        match (&self.material, alg) {
            (KeyMaterial::Rsa { pkcs1, .. }, Alg::Rs256) => Ok(pkcs1),
            (KeyMaterial::Rsa { pss, .. }, Alg::Ps256) => Ok(pss),
            (KeyMaterial::P256(key), Alg::Es256) => Ok(key),
            (KeyMaterial::Ed25519(key), Alg::EdDsa) => Ok(key),
            (KeyMaterial::Unusable(reason), _) => Err(reason.clone()),
            (material, alg) => Err(format!("is {} and cannot verify {}", material.describe(), alg.name())),
        }
    }
}

impl KeyMaterial {
    fn from_jwk(jwk: &Jwk) -> Result<KeyMaterial, String> {
        let component = |name: &str, value: &Option<String>| -> Result<Vec<u8>, String> {
            let value = value.as_deref().ok_or_else(|| format!("has no \"{name}\""))?;
            URL_SAFE_NO_PAD.decode(value).map_err(|_| format!("has a malformed \"{name}\" (not base64url)"))
        };
        match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("RSA", _) => {
                let modulus = component("n", &jwk.n)?;
                let exponent = component("e", &jwk.e)?;
                let modulus = strip_leading_zeros(&modulus);
                let exponent = strip_leading_zeros(&exponent);
                let bits = modulus.len() * 8 - modulus.first().map_or(8, |byte| byte.leading_zeros() as usize);
                if !(2048..=8192).contains(&bits) {
                    return Err(format!("is an RSA key of {bits} bits (2048 to 8192 accepted)"));
                }
                let components = RsaPublicKeyComponents { n: modulus, e: exponent };
                let parse = |params: &'static aws_signature::RsaParameters| {
                    components.to_parsed_public_key(params).map_err(|_| "is not a valid RSA public key".to_string())
                };
                Ok(KeyMaterial::Rsa {
                    pkcs1: parse(&aws_signature::RSA_PKCS1_2048_8192_SHA256)?,
                    pss: parse(&aws_signature::RSA_PSS_2048_8192_SHA256)?,
                })
            }
            ("EC", Some("P-256")) => {
                let x = component("x", &jwk.x)?;
                let y = component("y", &jwk.y)?;
                if x.len() != 32 || y.len() != 32 {
                    return Err("is not a valid P-256 public key (x and y must be 32 bytes)".to_string());
                }
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                ParsedPublicKey::new(&aws_signature::ECDSA_P256_SHA256_FIXED, point)
                    .map(KeyMaterial::P256)
                    .map_err(|_| "is not a valid P-256 public key".to_string())
            }
            ("OKP", Some("Ed25519")) => {
                let x = component("x", &jwk.x)?;
                if x.len() != 32 {
                    return Err("is not a valid Ed25519 public key (x must be 32 bytes)".to_string());
                }
                ParsedPublicKey::new(&aws_signature::ED25519, x)
                    .map(KeyMaterial::Ed25519)
                    .map_err(|_| "is not a valid Ed25519 public key".to_string())
            }
            ("oct", _) => Err("is a shared secret (kty \"oct\"), which is never accepted".to_string()),
            (kty, Some(crv)) => Err(format!("has an unsupported type (kty {}, crv {})", quoted(kty), quoted(crv))),
            (kty, None) => Err(format!("has an unsupported type (kty {})", quoted(kty))),
        }
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&byte| byte != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// The members of a JWK warden reads.
#[derive(Debug, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JwkSetDocument {
    keys: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    #[serde(default)]
    jwks_uri: Option<String>,
}

/// A JWS in compact serialization, decoded but not yet verified.
struct Jwt<'a> {
    alg: Alg,
    kid: Option<String>,
    /// `header.payload`, what the signature covers.
    signing_input: &'a str,
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

/// The JOSE header members warden reads. Others (`typ`, `cty`, and `jku`, `jwk`, `x5u`, which could point at
/// keys of the token's choosing) are ignored.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

impl<'a> Jwt<'a> {
    fn parse(presented: &'a str) -> Result<Jwt<'a>, String> {
        if presented.is_empty() {
            return Err("empty token".to_string());
        }
        if presented.len() > MAX_TOKEN_BYTES {
            return Err(format!("token is longer than {MAX_TOKEN_BYTES} bytes"));
        }
        let malformed = || "malformed token: a signed JWT has three dot-separated parts".to_string();
        let (signing_input, signature) = presented.rsplit_once('.').ok_or_else(malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or_else(malformed)?;
        if payload.contains('.') {
            return Err(malformed());
        }
        let header: JoseHeader = decode_part(header)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| "malformed token header".to_string())?;
        let alg = Alg::from_header(&header.alg)?;
        if header.crit.is_some() {
            return Err("token header lists critical extensions (crit), which warden does not support".to_string());
        }
        let claims: Map<String, Value> = decode_part(payload)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| "malformed token payload (not a JSON object)".to_string())?;
        let signature = decode_part(signature).ok_or_else(|| "malformed token signature".to_string())?;
        Ok(Jwt { alg, kid: header.kid, signing_input, signature, claims })
    }
}

fn decode_part(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part).ok()
}

/// Checks the claims of a token whose signature verified, and builds its identity.
fn check_claims(
    mut claims: Map<String, Value>,
    config: &OidcIssuer,
    now: OffsetDateTime,
) -> Result<Identity, AuthError> {
    let audience_ok = match claims.get("aud") {
        Some(Value::String(audience)) => *audience == config.audience,
        Some(Value::Array(audiences)) => audiences.iter().any(|audience| audience.as_str() == Some(&config.audience)),
        Some(_) => return Err(refuse("the audience claim (aud) is neither a string nor an array")),
        None => return Err(refuse("token has no audience claim (aud)")),
    };
    if !audience_ok {
        return Err(refuse(format!("token is not meant for audience \"{}\"", config.audience)));
    }

    let now_seconds = now.unix_timestamp();
    let expires = match claims.get("exp") {
        Some(value) => numeric_date(value).ok_or_else(|| refuse("the expiry claim (exp) is not a number"))?,
        None => return Err(refuse("token has no expiry claim (exp)")),
    };
    let expires_at =
        OffsetDateTime::from_unix_timestamp(expires).map_err(|_| refuse("the expiry claim (exp) is out of range"))?;
    if expires.saturating_add(LEEWAY_SECONDS) <= now_seconds {
        return Err(refuse(format!("token expired at {}", display_time(expires_at))));
    }
    if let Some(value) = claims.get("nbf") {
        let not_before = numeric_date(value).ok_or_else(|| refuse("the not-before claim (nbf) is not a number"))?;
        if not_before.saturating_sub(LEEWAY_SECONDS) > now_seconds {
            let shown =
                OffsetDateTime::from_unix_timestamp(not_before).map_or_else(|_| not_before.to_string(), display_time);
            return Err(refuse(format!("token is not valid before {shown}")));
        }
    }

    match claims.get("sub") {
        Some(Value::String(subject)) if !subject.is_empty() => {}
        Some(_) => return Err(refuse("the subject claim (sub) is not a non-empty string")),
        None => return Err(refuse("token has no subject claim (sub)")),
    }
    let name = match claims.remove(&config.name_claim) {
        Some(Value::String(name)) => check_name(&config.name_claim, name)?,
        Some(_) => return Err(refuse(format!("the name claim \"{}\" is not a string", config.name_claim))),
        None => return Err(refuse(format!("token has no \"{}\" claim (the issuer's name claim)", config.name_claim))),
    };
    let groups = groups(claims.remove(&config.groups_claim), &config.groups_claim)?;
    Ok(Identity { name, groups, kind: IdentityKind::Oidc, expires_at: Some(expires_at), token: None })
}

/// A NumericDate: seconds since the epoch, possibly with a fraction (dropped).
fn numeric_date(value: &Value) -> Option<i64> {
    let Value::Number(number) = value else { return None };
    number.as_i64().or_else(|| {
        let seconds = number.as_f64()?;
        // Out-of-range floats saturate, which the range checks on the result then refuse or accept as such.
        seconds.is_finite().then(|| seconds.floor() as i64)
    })
}

fn display_time(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| at.unix_timestamp().to_string())
}

fn check_name(claim: &str, name: String) -> Result<String, AuthError> {
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(refuse(format!("the \"{claim}\" claim must be 1 to {MAX_NAME_CHARS} printable characters")));
    }
    Ok(name)
}

/// The group memberships a groups claim grants: an array of strings, one string, or none when absent.
fn groups(value: Option<Value>, claim: &str) -> Result<Vec<String>, AuthError> {
    let not_groups = || refuse(format!("the groups claim \"{claim}\" is neither a string nor an array of strings"));
    let names = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(name)) => vec![name],
        Some(Value::Array(values)) => {
            if values.len() > MAX_GROUPS {
                return Err(refuse(format!("the groups claim \"{claim}\" lists more than {MAX_GROUPS} groups")));
            }
            values
                .into_iter()
                .map(|value| match value {
                    Value::String(name) => Ok(name),
                    _ => Err(not_groups()),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => return Err(not_groups()),
    };
    let mut groups: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let name = check_name(claim, name)?;
        if !groups.contains(&name) {
            groups.push(name);
        }
    }
    Ok(groups)
}

/// Finds the issuer's JWKS URL through its discovery document.
async fn discover(client: &HttpClient, issuer: &str) -> Result<String, String> {
    let url = format!("{issuer}/.well-known/openid-configuration");
    let (document, _) = client.get_json::<DiscoveryDocument>(&url).await?;
    if document.issuer != issuer {
        return Err(format!(
            "the discovery document at {url} names issuer {}, not \"{issuer}\"",
            quoted(&document.issuer)
        ));
    }
    document.jwks_uri.ok_or_else(|| format!("the discovery document at {url} has no jwks_uri"))
}

/// GETs JSON documents over https (or http on loopback) for discovery and JWKS.
struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// Whether the system has trusted root certificates (without them, https fetches are refused up front).
    has_roots: bool,
}

impl HttpClient {
    fn new() -> HttpClient {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for certificate in found.certs {
            let _ = roots.add(certificate);
        }
        let has_roots = !roots.is_empty();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the aws-lc-rs provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        // No pooling: fetches are rare, and a pooled connection's task lives on the runtime that opened it.
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
        HttpClient { client, has_roots }
    }

    /// GETs `url` and parses its JSON body, with the response's `Cache-Control: max-age`, if any.
    async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<(T, Option<Duration>), String> {
        let uri = allowed_uri(url)?;
        if uri.scheme_str() == Some("https") && !self.has_roots {
            return Err(format!("cannot verify {url}: the system has no trusted root certificates"));
        }
        let request = Request::get(uri)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static("warden"))
            .body(Empty::new())
            .map_err(|error| format!("{url}: {error}"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| format!("{url}: {}", chain(&error)))?;
            let status = response.status();
            if status != StatusCode::OK {
                return Err(if status.is_redirection() {
                    format!("{url} answered HTTP {status} (redirects are not followed)")
                } else {
                    format!("{url} answered HTTP {status}")
                });
            }
            let declared_length = response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<u64>().ok());
            if declared_length.is_some_and(|length| length > MAX_RESPONSE_BYTES as u64) {
                return Err(format!("{url}: the response is larger than {MAX_RESPONSE_BYTES} bytes"));
            }
            let max_age = response.headers().get(CACHE_CONTROL).and_then(|value| max_age(value.to_str().ok()?));
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        format!("{url}: the response is larger than {MAX_RESPONSE_BYTES} bytes")
                    } else {
                        format!("{url}: {}", chain(&*error))
                    }
                })?
                .to_bytes();
            let document = serde_json::from_slice(&body)
                .map_err(|error| format!("{url}: not the expected JSON document: {error}"))?;
            Ok((document, max_age))
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{url}: no complete answer within {}s", FETCH_TIMEOUT.as_secs()))?
    }
}

/// `url` parsed, if it is https, or http to a loopback host.
fn allowed_uri(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|_| format!("{} is not a valid URL", quoted(url)))?;
    let loopback = matches!(uri.host(), Some("localhost" | "127.0.0.1" | "[::1]" | "::1"));
    match uri.scheme_str() {
        Some("https") if uri.host().is_some() => Ok(uri),
        Some("http") if loopback => Ok(uri),
        _ => Err(format!("refusing to fetch {}: https only (plain http only on a loopback host)", quoted(url))),
    }
}

/// The `max-age` of a Cache-Control header value.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        value.trim().trim_matches('"').parse::<u64>().ok().map(Duration::from_secs)
    })
}

/// An error and its sources, joined: hyper's own messages alone ("client error (Connect)") do not say what failed.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
