//! A test OIDC identity provider ([`TestIssuer`]): it generates keys (RSA 2048, P-256, Ed25519), serves its
//! discovery document and JWKS over plain HTTP on loopback, and mints tokens with whatever claims a test chooses —
//! including the forgeries a verifier must refuse (alg `none`, HS256 keyed with the RSA public key, a key it does
//! not publish).
//!
//! Keys are generated with aws-lc-rs and tokens signed with it directly, so the kit shares no JWT code with the
//! verifier it tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED_SIGNING,
    RSA_PKCS1_SHA256, RSA_PSS_SHA256,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How long a token from [`TestIssuer::claims`] is valid, in seconds.
pub const TEST_TOKEN_LIFETIME_SECONDS: i64 = 600;

/// The signature algorithms the test issuer signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256, with the current RSA key.
    Rs256,
    /// RSASSA-PSS with SHA-256, with the current RSA key.
    Ps256,
    /// ECDSA P-256 with SHA-256, with the P-256 key.
    Es256,
    /// Ed25519, with the Ed25519 key.
    EdDsa,
}

impl TestAlg {
    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            TestAlg::Rs256 => "RS256",
            TestAlg::Ps256 => "PS256",
            TestAlg::Es256 => "ES256",
            TestAlg::EdDsa => "EdDSA",
        }
    }
}

/// A test identity provider on `127.0.0.1:<port>`: `/.well-known/openid-configuration` and `/jwks`. It stops
/// serving when dropped (or on [`TestIssuer::stop`]).
pub struct TestIssuer {
    issuer: String,
    shared: Arc<Shared>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl TestIssuer {
    /// Generates the keys (one RSA, one P-256, one Ed25519, all published) and starts serving, on the current
    /// tokio runtime.
    pub async fn start() -> TestIssuer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port for the test issuer");
        let address: SocketAddr = listener.local_addr().expect("the listener's address");
        let issuer = format!("http://{address}");
        let keys = Keys {
            rsa: vec![RsaKey::generate("rsa-1")],
            current_rsa: 0,
            ec: EcKey {
                kid: "ec-1".to_string(),
                pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("generate a P-256 key"),
            },
            ed: EdKey { kid: "ed-1".to_string(), pair: Ed25519KeyPair::generate().expect("generate an Ed25519 key") },
            unpublished: None,
            generated: 1,
        };
        let shared = Arc::new(Shared {
            issuer: issuer.clone(),
            advertised_issuer: Mutex::new(None),
            keys: Mutex::new(keys),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        TestIssuer { issuer, shared, server: Mutex::new(Some(server)) }
    }

    /// The issuer identifier (`iss`): `http://127.0.0.1:PORT`, no trailing slash.
    pub fn issuer(&self) -> String {
        self.issuer.clone()
    }

    /// The JWKS URL discovery names.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// Claims for `subject` and `audience`, from this issuer, valid from now for ten minutes: `iss`, `sub`, `aud`,
    /// `iat`, `nbf`, `exp`. Tests change or add members before minting.
    pub fn claims(&self, subject: &str, audience: &str) -> Value {
        let now = unix_now();
        json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + TEST_TOKEN_LIFETIME_SECONDS,
        })
    }

    /// A token with `claims`, RS256-signed by the current RSA key, its `kid` in the header.
    pub fn mint(&self, claims: Value) -> String {
        let kid = self.kid(TestAlg::Rs256);
        self.mint_with(TestAlg::Rs256, Some(&kid), claims)
    }

    /// A token with `claims` signed with `alg` by the key that alg uses (see [`TestAlg`]); the header carries
    /// `kid` exactly as given (`None`: no `kid` member), so a test can name another key than the signing one.
    pub fn mint_with(&self, alg: TestAlg, kid: Option<&str>, claims: Value) -> String {
        let header = header(alg.name(), kid);
        let signing_input = signing_input(&header, &claims);
        let keys = self.shared.keys.lock();
        let signature = match alg {
            TestAlg::Rs256 => keys.current_rsa().sign(&RSA_PKCS1_SHA256, signing_input.as_bytes()),
            TestAlg::Ps256 => keys.current_rsa().sign(&RSA_PSS_SHA256, signing_input.as_bytes()),
            TestAlg::Es256 => keys
                .ec
                .pair
                .sign(&SystemRandom::new(), signing_input.as_bytes())
                .expect("P-256 signing")
                .as_ref()
                .to_vec(),
            TestAlg::EdDsa => keys.ed.pair.sign(signing_input.as_bytes()).as_ref().to_vec(),
        };
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The `kid` of the key that signs `alg` (for RS256 and PS256, the current RSA key).
    pub fn kid(&self, alg: TestAlg) -> String {
        let keys = self.shared.keys.lock();
        match alg {
            TestAlg::Rs256 | TestAlg::Ps256 => keys.current_rsa().kid.clone(),
            TestAlg::Es256 => keys.ec.kid.clone(),
            TestAlg::EdDsa => keys.ed.kid.clone(),
        }
    }

    /// Generates a new RSA key, publishes it and makes it the current one; the previous keys stay published
    /// until [`TestIssuer::retire`]. Returns the new key's `kid`.
    pub fn rotate(&self) -> String {
        let mut keys = self.shared.keys.lock();
        keys.generated += 1;
        let key = RsaKey::generate(&format!("rsa-{}", keys.generated));
        let kid = key.kid.clone();
        keys.rsa.push(key);
        keys.current_rsa = keys.rsa.len() - 1;
        kid
    }

    /// Stops publishing the RSA key `kid` (the current key cannot be retired). Returns whether it was published.
    pub fn retire(&self, kid: &str) -> bool {
        let mut keys = self.shared.keys.lock();
        let current_kid = keys.current_rsa().kid.clone();
        if current_kid == kid {
            return false;
        }
        let before = keys.rsa.len();
        keys.rsa.retain(|key| key.kid != kid);
        keys.current_rsa = keys.rsa.iter().position(|key| key.kid == current_kid).unwrap_or_default();
        keys.rsa.len() != before
    }

    /// A token with `claims`, RS256-signed by an RSA key this issuer never publishes (`kid` "unpublished").
    pub fn mint_unpublished(&self, claims: Value) -> String {
        let header = header("RS256", Some(UNPUBLISHED_KID));
        let signing_input = signing_input(&header, &claims);
        let mut keys = self.shared.keys.lock();
        let key = keys.unpublished.get_or_insert_with(|| RsaKey::generate(UNPUBLISHED_KID));
        let signature = key.sign(&RSA_PKCS1_SHA256, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// An unsigned token: header `{"alg":"none"}`, empty signature.
    pub fn alg_none(&self, claims: Value) -> String {
        let header = json!({ "alg": "none", "typ": "JWT" });
        format!("{}.", signing_input(&header, &claims))
    }

    /// The key-confusion forgery: HS256 with the current RSA public key (its SubjectPublicKeyInfo PEM, as a
    /// verifier that trusted the header would load it) as the HMAC secret, and that key's `kid`.
    pub fn hs256_with_public_key(&self, claims: Value) -> String {
        let keys = self.shared.keys.lock();
        let current = keys.current_rsa();
        let header = header("HS256", Some(&current.kid));
        let signing_input = signing_input(&header, &claims);
        let der = current.pair.public_key().as_der().expect("encode the RSA public key");
        let secret = pem("PUBLIC KEY", der.as_ref());
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Makes discovery name `issuer` instead of this issuer's own identifier (a misconfigured or impostor
    /// provider).
    pub fn advertise_issuer(&self, issuer: &str) {
        *self.shared.advertised_issuer.lock() = Some(issuer.to_string());
    }

    /// How many times `/jwks` has been served.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// How many times the discovery document has been served.
    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Stops serving: when this returns, the port refuses connections (the identity provider is down).
    pub async fn stop(&self) {
        let server = self.server.lock().take();
        if let Some(server) = server {
            server.abort();
            // The listener is dropped with the task; waiting for the task makes that certain.
            let _ = server.await;
        }
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().take() {
            server.abort();
        }
    }
}

const UNPUBLISHED_KID: &str = "unpublished";

struct Shared {
    issuer: String,
    advertised_issuer: Mutex<Option<String>>,
    keys: Mutex<Keys>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
}

struct Keys {
    /// Every published RSA key, oldest first.
    rsa: Vec<RsaKey>,
    current_rsa: usize,
    ec: EcKey,
    ed: EdKey,
    unpublished: Option<RsaKey>,
    /// RSA keys generated so far, for their kids.
    generated: usize,
}

impl Keys {
    fn current_rsa(&self) -> &RsaKey {
        &self.rsa[self.current_rsa]
    }

    fn jwks(&self) -> Value {
        let mut keys: Vec<Value> = self.rsa.iter().map(RsaKey::jwk).collect();
        let point = self.ec.pair.public_key().as_ref();
        // An uncompressed point: 0x04, then x and y, 32 bytes each.
        keys.push(json!({
            "kty": "EC",
            "crv": "P-256",
            "use": "sig",
            "alg": "ES256",
            "kid": self.ec.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }));
        keys.push(json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "alg": "EdDSA",
            "kid": self.ed.kid,
            "x": URL_SAFE_NO_PAD.encode(self.ed.pair.public_key().as_ref()),
        }));
        json!({ "keys": keys })
    }
}

struct RsaKey {
    kid: String,
    pair: RsaKeyPair,
}

impl RsaKey {
    fn generate(kid: &str) -> RsaKey {
        RsaKey { kid: kid.to_string(), pair: RsaKeyPair::generate(KeySize::Rsa2048).expect("generate an RSA key") }
    }

    fn sign(&self, padding: &'static dyn aws_lc_rs::signature::RsaEncoding, message: &[u8]) -> Vec<u8> {
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair.sign(padding, &SystemRandom::new(), message, &mut signature).expect("RSA signing");
        signature
    }

    /// The key's JWK. It names no `alg`, so the verifier may use it for RS256 and PS256 alike.
    fn jwk(&self) -> Value {
        let components = RsaPublicKeyComponents::<Vec<u8>>::from(self.pair.public_key());
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&components.n),
            "e": URL_SAFE_NO_PAD.encode(&components.e),
        })
    }
}

struct EcKey {
    kid: String,
    pair: EcdsaKeyPair,
}

struct EdKey {
    kid: String,
    pair: Ed25519KeyPair,
}

fn header(alg: &str, kid: Option<&str>) -> Value {
    match kid {
        Some(kid) => json!({ "alg": alg, "typ": "JWT", "kid": kid }),
        None => json!({ "alg": alg, "typ": "JWT" }),
    }
}

/// `base64url(header).base64url(claims)`.
fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

fn unix_now() -> i64 {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970");
    i64::try_from(elapsed.as_secs()).expect("seconds since 1970 fit an i64")
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(shared.respond(&request)) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

impl Shared {
    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        match request.uri().path() {
            "/.well-known/openid-configuration" => {
                self.discovery_fetches.fetch_add(1, Ordering::SeqCst);
                let issuer = self.advertised_issuer.lock().clone().unwrap_or_else(|| self.issuer.clone());
                json_response(&json!({
                    "issuer": issuer,
                    "jwks_uri": format!("{}/jwks", self.issuer),
                    "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
                }))
            }
            "/jwks" => {
                self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                json_response(&self.keys.lock().jwks())
            }
            _ => {
                let mut response = Response::new(Full::new(Bytes::from_static(b"not found")));
                *response.status_mut() = StatusCode::NOT_FOUND;
                response
            }
        }
    }
}

fn json_response(document: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(document.to_string())));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// GETs `path` from the issuer with a bare HTTP/1.0 request and returns the body.
    async fn get(issuer: &TestIssuer, path: &str) -> String {
        let address = issuer.issuer().trim_start_matches("http://").to_string();
        let path = path.to_string();
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).expect("connect to the test issuer");
            write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").expect("send the request");
            let mut response = String::new();
            stream.read_to_string(&mut response).expect("read the response");
            response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
        })
        .await
        .expect("the request thread")
    }

    fn kids(jwks: &Value) -> Vec<String> {
        jwks["keys"].as_array().expect("keys").iter().map(|key| key["kid"].as_str().expect("kid").to_string()).collect()
    }

    #[tokio::test]
    async fn it_serves_discovery_and_the_keys_it_publishes() {
        let issuer = TestIssuer::start().await;
        let discovery: Value = serde_json::from_str(&get(&issuer, "/.well-known/openid-configuration").await).unwrap();
        assert_eq!(discovery["issuer"], issuer.issuer());
        assert_eq!(discovery["jwks_uri"], issuer.jwks_url());
        let jwks: Value = serde_json::from_str(&get(&issuer, "/jwks").await).unwrap();
        assert_eq!(kids(&jwks), ["rsa-1", "ec-1", "ed-1"]);
        assert_eq!((issuer.discovery_fetches(), issuer.jwks_fetches()), (1, 1));

        let new_kid = issuer.rotate();
        assert_eq!(issuer.kid(TestAlg::Rs256), new_kid);
        let jwks: Value = serde_json::from_str(&get(&issuer, "/jwks").await).unwrap();
        assert_eq!(kids(&jwks), ["rsa-1", "rsa-2", "ec-1", "ed-1"]);
        assert!(!issuer.retire(&new_kid), "the current key stays");
        assert!(issuer.retire("rsa-1"));
        let jwks: Value = serde_json::from_str(&get(&issuer, "/jwks").await).unwrap();
        assert_eq!(kids(&jwks), ["rsa-2", "ec-1", "ed-1"]);
        assert_eq!(issuer.jwks_fetches(), 3);

        issuer.advertise_issuer("https://elsewhere.example");
        let discovery: Value = serde_json::from_str(&get(&issuer, "/.well-known/openid-configuration").await).unwrap();
        assert_eq!(discovery["issuer"], "https://elsewhere.example");
    }

    #[tokio::test]
    async fn minted_tokens_verify_with_the_published_keys() {
        use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256};

        let issuer = TestIssuer::start().await;
        let jwks: Value = serde_json::from_str(&get(&issuer, "/jwks").await).unwrap();
        let decode = |text: &Value| URL_SAFE_NO_PAD.decode(text.as_str().expect("a string")).expect("base64url");
        let claims = issuer.claims("alice", "warden");
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), TEST_TOKEN_LIFETIME_SECONDS);

        let split = |token: &str| {
            let (input, signature) = token.rsplit_once('.').expect("three parts");
            (input.to_string(), URL_SAFE_NO_PAD.decode(signature).expect("signature"))
        };
        let rsa = &jwks["keys"][0];
        let (input, signature) = split(&issuer.mint(claims.clone()));
        let components = RsaPublicKeyComponents { n: decode(&rsa["n"]), e: decode(&rsa["e"]) };
        components.verify(&RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &signature).expect("RS256 verifies");

        let ec = &jwks["keys"][1];
        let mut point = vec![4];
        point.extend(decode(&ec["x"]));
        point.extend(decode(&ec["y"]));
        let (input, signature) = split(&issuer.mint_with(TestAlg::Es256, Some("ec-1"), claims.clone()));
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(input.as_bytes(), &signature)
            .expect("ES256 verifies");

        let ed = &jwks["keys"][2];
        let (input, signature) = split(&issuer.mint_with(TestAlg::EdDsa, None, claims.clone()));
        UnparsedPublicKey::new(&ED25519, decode(&ed["x"]))
            .verify(input.as_bytes(), &signature)
            .expect("EdDSA verifies");

        let header = |token: &str| -> Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap()
        };
        assert_eq!(header(&issuer.alg_none(claims.clone()))["alg"], "none");
        assert!(issuer.alg_none(claims.clone()).ends_with('.'));
        assert_eq!(header(&issuer.hs256_with_public_key(claims.clone()))["alg"], "HS256");
        assert_eq!(header(&issuer.mint_unpublished(claims.clone()))["kid"], "unpublished");
        assert!(header(&issuer.mint_with(TestAlg::Ps256, None, claims)).get("kid").is_none());
    }

    #[tokio::test]
    async fn a_stopped_issuer_refuses_connections() {
        let issuer = TestIssuer::start().await;
        let address = issuer.issuer().trim_start_matches("http://").to_string();
        issuer.stop().await;
        assert!(tokio::net::TcpStream::connect(address).await.is_err());
    }
}
