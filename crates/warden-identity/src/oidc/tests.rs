use std::sync::Arc;

use serde_json::json;
use warden_testkit::oidc::{TestAlg, TestIssuer};

use super::*;

const AUDIENCE: &str = "warden";

fn config(issuer: &TestIssuer) -> OidcIssuer {
    OidcIssuer {
        issuer: issuer.issuer(),
        audience: AUDIENCE.to_string(),
        groups_claim: "groups".to_string(),
        name_claim: "sub".to_string(),
        jwks_url: None,
    }
}

async fn started() -> (TestIssuer, OidcVerifier) {
    let issuer = TestIssuer::start().await;
    let verifier = OidcVerifier::new(&[config(&issuer)]);
    (issuer, verifier)
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The refusal reason for `token`, which must not appear in it.
async fn refused(verifier: &OidcVerifier, token: &str) -> String {
    match verifier.verify(token, now()).await {
        Err(AuthError::Oidc(reason)) => {
            assert!(token.is_empty() || !reason.contains(token), "the reason echoes the token: {reason}");
            for part in token.split('.').filter(|part| part.len() > 16) {
                assert!(!reason.contains(part), "the reason echoes part of the token: {reason}");
            }
            reason
        }
        other => panic!("expected an OIDC refusal, got {other:?}"),
    }
}

/// Asserts that `token` is refused with a reason containing `expected`.
async fn check_refused(verifier: &OidcVerifier, token: &str, expected: &str) {
    let reason = refused(verifier, token).await;
    assert!(reason.contains(expected), "expected a reason containing {expected:?}, got {reason:?}");
}

/// Ages the first issuer's cached keys and its last fetch, so the next verification refreshes them.
fn make_stale(verifier: &OidcVerifier) {
    let issuer = &verifier.issuers[0];
    let current = issuer.current().expect("keys cached");
    let stale = KeySet { keys: current.keys.clone(), fetched_at: current.fetched_at, fresh_until: Instant::now() };
    *issuer.keys.write() = Some(Arc::new(stale));
    issuer.fetch.try_lock().expect("no fetch in progress").last_attempt = None;
}

#[tokio::test]
async fn each_allowed_alg_is_accepted() {
    let (issuer, verifier) = started().await;
    for alg in [TestAlg::Rs256, TestAlg::Ps256, TestAlg::Es256, TestAlg::EdDsa] {
        let claims = issuer.claims("alice", AUDIENCE);
        let exp = claims["exp"].as_i64().unwrap();
        let token = issuer.mint_with(alg, Some(&issuer.kid(alg)), claims);
        let identity = verifier.verify(&token, now()).await.unwrap_or_else(|error| panic!("{alg:?}: {error}"));
        assert_eq!(identity.name, "alice");
        assert_eq!(identity.kind, IdentityKind::Oidc);
        assert!(identity.groups.is_empty());
        assert_eq!(identity.expires_at, Some(OffsetDateTime::from_unix_timestamp(exp).unwrap()));
        assert!(identity.token.is_none());
    }
    assert_eq!((issuer.discovery_fetches(), issuer.jwks_fetches()), (1, 1), "keys fetched once and cached");
}

#[tokio::test]
async fn the_groups_claim_becomes_group_memberships() {
    let (issuer, verifier) = started().await;
    let with_groups = |groups: Value| {
        let mut claims = issuer.claims("alice", AUDIENCE);
        claims["groups"] = groups;
        issuer.mint(claims)
    };
    let groups = |token: String| {
        let verifier = &verifier;
        async move { verifier.verify(&token, now()).await.map(|identity| identity.groups) }
    };
    assert_eq!(groups(with_groups(json!(["analysts", "oncall", "analysts"]))).await.unwrap(), ["analysts", "oncall"]);
    assert_eq!(groups(with_groups(json!("analysts"))).await.unwrap(), ["analysts"]);
    assert_eq!(groups(with_groups(json!([]))).await.unwrap(), Vec::<String>::new());
    assert_eq!(groups(with_groups(Value::Null)).await.unwrap(), Vec::<String>::new());
    assert_eq!(groups(issuer.mint(issuer.claims("alice", AUDIENCE))).await.unwrap(), Vec::<String>::new());
    check_refused(&verifier, &with_groups(json!(["analysts", 7])), "groups claim \"groups\" is neither").await;
    check_refused(&verifier, &with_groups(json!({"analysts": true})), "groups claim \"groups\" is neither").await;
    check_refused(&verifier, &with_groups(json!(["bad\nname"])), "printable characters").await;
}

#[tokio::test]
async fn the_configured_claims_name_the_identity_and_its_groups() {
    let issuer = TestIssuer::start().await;
    let config = OidcIssuer { groups_claim: "roles".into(), name_claim: "email".into(), ..config(&issuer) };
    let verifier = OidcVerifier::new(&[config]);
    let mut claims = issuer.claims("0f3a-77", AUDIENCE);
    claims["email"] = json!("alice@example.com");
    claims["roles"] = json!(["dba"]);
    claims["groups"] = json!(["ignored"]);
    let identity = verifier.verify(&issuer.mint(claims.clone()), now()).await.unwrap();
    assert_eq!((identity.name.as_str(), identity.groups.as_slice()), ("alice@example.com", &["dba".to_string()][..]));

    claims.as_object_mut().unwrap().remove("email");
    check_refused(&verifier, &issuer.mint(claims), "token has no \"email\" claim").await;
}

#[tokio::test]
async fn every_attack_is_refused_with_its_reason() {
    let (issuer, verifier) = started().await;
    let claims = || issuer.claims("alice", AUDIENCE);
    // Keys are cached first, so no refusal below is about fetching them.
    verifier.verify(&issuer.mint(claims()), now()).await.expect("a genuine token");

    check_refused(&verifier, &issuer.alg_none(claims()), "alg none").await;
    check_refused(
        &verifier,
        &issuer.hs256_with_public_key(claims()),
        "alg HS256 (a shared-secret MAC) is never accepted",
    )
    .await;

    let mut wrong_issuer = claims();
    wrong_issuer["iss"] = json!("https://impostor.example");
    check_refused(&verifier, &issuer.mint(wrong_issuer), "issuer \"https://impostor.example\" is not configured").await;
    let mut trailing_slash = claims();
    trailing_slash["iss"] = json!(format!("{}/", issuer.issuer()));
    check_refused(&verifier, &issuer.mint(trailing_slash), "is not configured").await;

    let mut wrong_audience = claims();
    wrong_audience["aud"] = json!(["billing", "crm"]);
    check_refused(&verifier, &issuer.mint(wrong_audience), "token is not meant for audience \"warden\"").await;

    let now_seconds = now().unix_timestamp();
    let mut expired = claims();
    expired["exp"] = json!(now_seconds - LEEWAY_SECONDS - 5);
    check_refused(&verifier, &issuer.mint(expired), "token expired at ").await;

    let mut not_yet_valid = claims();
    not_yet_valid["nbf"] = json!(now_seconds + LEEWAY_SECONDS + 30);
    check_refused(&verifier, &issuer.mint(not_yet_valid), "token is not valid before ").await;

    check_refused(&verifier, &issuer.mint_unpublished(claims()), "key id \"unpublished\" which issuer").await;

    let genuine = issuer.mint(claims());
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let mut elevated = claims();
    elevated["sub"] = json!("admin");
    let forged_payload = URL_SAFE_NO_PAD.encode(elevated.to_string());
    parts[1] = &forged_payload;
    check_refused(&verifier, &parts.join("."), "bad signature").await;
    let (signing_input, signature) = genuine.rsplit_once('.').unwrap();
    let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    signature[10] ^= 1;
    check_refused(&verifier, &format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)), "bad signature").await;
}

#[tokio::test]
async fn leeway_and_required_claims() {
    let (issuer, verifier) = started().await;
    let now_seconds = now().unix_timestamp();
    let mut recently_expired = issuer.claims("alice", AUDIENCE);
    recently_expired["exp"] = json!(now_seconds - 30);
    verifier.verify(&issuer.mint(recently_expired), now()).await.expect("within the leeway");
    let mut nearly_valid = issuer.claims("alice", AUDIENCE);
    nearly_valid["nbf"] = json!(now_seconds + 30);
    verifier.verify(&issuer.mint(nearly_valid), now()).await.expect("within the leeway");
    let mut fractional = issuer.claims("alice", AUDIENCE);
    fractional["exp"] = json!(now_seconds as f64 + 600.5);
    verifier.verify(&issuer.mint(fractional), now()).await.expect("a fractional NumericDate");

    let without = |claim: &str| {
        let mut claims = issuer.claims("alice", AUDIENCE);
        claims.as_object_mut().unwrap().remove(claim);
        issuer.mint(claims)
    };
    check_refused(&verifier, &without("exp"), "token has no expiry claim (exp)").await;
    check_refused(&verifier, &without("sub"), "token has no subject claim (sub)").await;
    check_refused(&verifier, &without("aud"), "token has no audience claim (aud)").await;
    check_refused(&verifier, &without("iss"), "token has no issuer claim (iss)").await;
    verifier.verify(&without("nbf"), now()).await.expect("nbf is optional");

    let with = |claim: &str, value: Value| {
        let mut claims = issuer.claims("alice", AUDIENCE);
        claims[claim] = value;
        issuer.mint(claims)
    };
    check_refused(&verifier, &with("exp", json!("tomorrow")), "the expiry claim (exp) is not a number").await;
    check_refused(&verifier, &with("sub", json!("")), "the subject claim (sub) is not a non-empty string").await;
    check_refused(&verifier, &with("aud", json!(7)), "neither a string nor an array").await;
    verifier.verify(&with("aud", json!(["crm", AUDIENCE])), now()).await.expect("an audience array");
}

#[tokio::test]
async fn the_header_alg_must_match_the_key() {
    let (issuer, verifier) = started().await;
    let claims = || issuer.claims("alice", AUDIENCE);
    // RS256 naming the P-256 key: refused on the key's type, before any signature check.
    let token = issuer.mint_with(TestAlg::Rs256, Some("ec-1"), claims());
    check_refused(&verifier, &token, "key \"ec-1\" of issuer").await;
    check_refused(&verifier, &token, "is published for alg \"ES256\" and cannot verify RS256").await;
    let token = issuer.mint_with(TestAlg::Es256, Some(&issuer.kid(TestAlg::Rs256)), claims());
    check_refused(&verifier, &token, "is an RSA key and cannot verify ES256").await;
    // No kid: accepted while the issuer publishes exactly one key for the alg.
    verifier.verify(&issuer.mint_with(TestAlg::Es256, None, claims()), now()).await.expect("one P-256 key");
    verifier.verify(&issuer.mint_with(TestAlg::Rs256, None, claims()), now()).await.expect("one RSA key");
    issuer.rotate();
    make_stale(&verifier);
    check_refused(&verifier, &issuer.mint_with(TestAlg::Ps256, None, claims()), "token has no key id (kid) and issuer")
        .await;
    check_refused(&verifier, &issuer.mint_with(TestAlg::Ps256, None, claims()), "publishes 2 keys for PS256").await;
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_exactly_one_refetch() {
    let (issuer, verifier) = started().await;
    let old_token = issuer.mint(issuer.claims("alice", AUDIENCE));
    verifier.verify(&old_token, now()).await.expect("the first key");
    assert_eq!(issuer.jwks_fetches(), 1);

    let new_kid = issuer.rotate();
    let new_token = issuer.mint(issuer.claims("bob", AUDIENCE));
    assert!(new_token
        .starts_with(&URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT", "kid": new_kid}).to_string())));
    assert_eq!(verifier.verify(&new_token, now()).await.expect("the rotated key").name, "bob");
    assert_eq!(issuer.jwks_fetches(), 2, "one refetch for the new kid");
    assert_eq!(issuer.discovery_fetches(), 1, "discovery is not repeated");
    verifier.verify(&new_token, now()).await.expect("cached now");
    verifier.verify(&old_token, now()).await.expect("the old key is still published");
    assert_eq!(issuer.jwks_fetches(), 2);
}

#[tokio::test]
async fn a_burst_of_unknown_kids_causes_at_most_one_fetch() {
    let (issuer, verifier) = started().await;
    verifier.verify(&issuer.mint(issuer.claims("alice", AUDIENCE)), now()).await.expect("keys cached");
    assert_eq!(issuer.jwks_fetches(), 1);

    let verifier = Arc::new(verifier);
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let verifier = verifier.clone();
        let token = issuer.mint_unpublished(issuer.claims("mallory", AUDIENCE));
        burst.spawn(async move { verifier.verify(&token, OffsetDateTime::now_utc()).await });
    }
    while let Some(result) = burst.join_next().await {
        let reason = match result.expect("the task") {
            Err(AuthError::Oidc(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(reason.contains("key id \"unpublished\" which issuer"), "{reason}");
    }
    assert_eq!(issuer.jwks_fetches(), 2, "the burst shares one refresh");

    // Within the interval, even a genuinely new key waits: it is refused without a fetch.
    issuer.rotate();
    check_refused(&verifier, &issuer.mint(issuer.claims("bob", AUDIENCE)), "which issuer").await;
    assert_eq!(issuer.jwks_fetches(), 2);

    // Once the interval has passed, an unknown kid refreshes again.
    verifier.issuers[0].fetch.lock().await.unknown_key_refresh = Instant::now().checked_sub(REFRESH_INTERVAL);
    verifier.verify(&issuer.mint(issuer.claims("bob", AUDIENCE)), now()).await.expect("the new key after the interval");
    assert_eq!(issuer.jwks_fetches(), 3);
}

#[tokio::test]
async fn an_unknown_kid_on_the_first_verification_costs_one_fetch() {
    let (issuer, verifier) = started().await;
    check_refused(&verifier, &issuer.mint_unpublished(issuer.claims("mallory", AUDIENCE)), "which issuer").await;
    assert_eq!(issuer.jwks_fetches(), 1, "the keys just fetched are not fetched again");
}

#[tokio::test]
async fn concurrent_first_verifications_share_one_fetch() {
    let (issuer, verifier) = started().await;
    let verifier = Arc::new(verifier);
    let mut first = tokio::task::JoinSet::new();
    for alg in [TestAlg::Rs256, TestAlg::Ps256, TestAlg::Es256, TestAlg::EdDsa, TestAlg::Rs256] {
        let verifier = verifier.clone();
        let token = issuer.mint_with(alg, Some(&issuer.kid(alg)), issuer.claims("alice", AUDIENCE));
        first.spawn(async move { verifier.verify(&token, OffsetDateTime::now_utc()).await });
    }
    while let Some(result) = first.join_next().await {
        result.expect("the task").expect("verifies");
    }
    assert_eq!((issuer.discovery_fetches(), issuer.jwks_fetches()), (1, 1));
}

#[tokio::test]
async fn cached_keys_outlive_the_identity_provider() {
    let (issuer, verifier) = started().await;
    let token = issuer.mint(issuer.claims("alice", AUDIENCE));
    let unknown = issuer.mint_unpublished(issuer.claims("alice", AUDIENCE));
    verifier.verify(&token, now()).await.expect("keys cached");
    issuer.stop().await;

    // Stale keys: the refresh fails, and the cached keys still verify.
    make_stale(&verifier);
    verifier.verify(&token, now()).await.expect("the cached keys");
    // An unknown kid needs a fetch, which fails with a clear reason.
    let reason = refused(&verifier, &unknown).await;
    assert!(reason.starts_with(&format!("cannot fetch keys for issuer \"{}\": ", issuer.issuer())), "{reason}");
    assert!(reason.contains(&issuer.jwks_url()), "{reason}");
    verifier.verify(&token, now()).await.expect("still the cached keys");
}

#[tokio::test]
async fn an_unreachable_identity_provider_is_a_clear_refusal() {
    let issuer = TestIssuer::start().await;
    let token = issuer.mint(issuer.claims("alice", AUDIENCE));
    issuer.stop().await;
    let verifier = OidcVerifier::new(&[config(&issuer)]);
    let reason = refused(&verifier, &token).await;
    let expected = format!(
        "cannot fetch keys for issuer \"{}\": {}/.well-known/openid-configuration",
        issuer.issuer(),
        issuer.issuer()
    );
    assert!(reason.starts_with(&expected), "{reason}");
    // Within the retry interval the failure is remembered, not refetched.
    assert_eq!(refused(&verifier, &token).await, reason);
}

#[tokio::test]
async fn discovery_must_name_the_configured_issuer() {
    let (issuer, verifier) = started().await;
    issuer.advertise_issuer("https://impostor.example");
    let reason = refused(&verifier, &issuer.mint(issuer.claims("alice", AUDIENCE))).await;
    assert!(reason.starts_with(&format!("cannot fetch keys for issuer \"{}\"", issuer.issuer())), "{reason}");
    assert!(reason.contains("names issuer \"https://impostor.example\", not"), "{reason}");
    assert_eq!(issuer.jwks_fetches(), 0);
}

#[tokio::test]
async fn a_configured_jwks_url_skips_discovery() {
    let issuer = TestIssuer::start().await;
    issuer.advertise_issuer("https://impostor.example");
    let verifier = OidcVerifier::new(&[OidcIssuer { jwks_url: Some(issuer.jwks_url()), ..config(&issuer) }]);
    verifier.verify(&issuer.mint(issuer.claims("alice", AUDIENCE)), now()).await.expect("keys from jwks_url");
    assert_eq!((issuer.discovery_fetches(), issuer.jwks_fetches()), (0, 1));
}

#[tokio::test]
async fn each_issuer_verifies_with_its_own_keys() {
    let first = TestIssuer::start().await;
    let second = TestIssuer::start().await;
    let verifier = OidcVerifier::new(&[config(&first), config(&second)]);
    verifier.verify(&first.mint(first.claims("alice", AUDIENCE)), now()).await.expect("first issuer");
    verifier.verify(&second.mint(second.claims("bob", AUDIENCE)), now()).await.expect("second issuer");
    // Signed by the second issuer's key under the first issuer's name (same kid "rsa-1" at both).
    check_refused(&verifier, &second.mint(first.claims("mallory", AUDIENCE)), "bad signature").await;
}

#[tokio::test]
async fn malformed_tokens_are_refused_without_panicking() {
    let (issuer, verifier) = started().await;
    let genuine = issuer.mint(issuer.claims("alice", AUDIENCE));
    let (header, rest) = genuine.split_once('.').unwrap();
    let tokens = [
        ("".to_string(), "empty token"),
        ("abc".to_string(), "three dot-separated parts"),
        ("a.b".to_string(), "three dot-separated parts"),
        ("a.b.c.d.e".to_string(), "three dot-separated parts"),
        ("!!.b.c".to_string(), "malformed token header"),
        (format!("{}.{rest}", URL_SAFE_NO_PAD.encode("[1]")), "malformed token header"),
        (format!("{header}.e30.!!"), "malformed token signature"),
        (format!("{header}.WzFd.c2ln"), "malformed token payload"),
        (format!("{}.{rest}", URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","crit":["exp"]}"#)), "critical extensions"),
        (format!("{}.{rest}", URL_SAFE_NO_PAD.encode(r#"{"alg":"NONE"}"#)), "alg none"),
        (format!("{}.{rest}", URL_SAFE_NO_PAD.encode(r#"{"alg":"RS512"}"#)), "alg \"RS512\" is not accepted"),
        (format!("{}.{rest}", URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","alg":"none"}"#)), "malformed token header"),
        ("a".repeat(MAX_TOKEN_BYTES + 1), "token is longer than"),
    ];
    for (token, expected) in &tokens {
        check_refused(&verifier, token, expected).await;
    }
    let empty = OidcVerifier::new(&[]);
    assert!(empty.is_empty() && !verifier.is_empty());
    check_refused(&empty, &genuine, "is not configured").await;
}

#[test]
fn verification_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let verifier = OidcVerifier::new(&[]);
    assert_send(&verifier.verify("", OffsetDateTime::UNIX_EPOCH));
    fn assert_shared<T: Send + Sync>() {}
    assert_shared::<OidcVerifier>();
}

#[test]
fn published_keys_are_checked_when_fetched() {
    let usable = |jwk: Value, alg: Alg| PublishedKey::from_jwk(&jwk).expect("a JWK").verifier(alg).map(|_| ());
    let p256 = json!({
        "kty": "EC", "crv": "P-256", "kid": "k",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    });
    assert_eq!(usable(p256.clone(), Alg::Es256), Ok(()));
    let mut declared = p256.clone();
    declared["alg"] = json!("ES384");
    assert_eq!(usable(declared, Alg::Es256), Err("is published for alg \"ES384\" and cannot verify ES256".into()));
    let mut encryption = p256.clone();
    encryption["use"] = json!("enc");
    assert_eq!(usable(encryption, Alg::Es256), Err("is not a signing key (\"use\": \"enc\")".into()));
    let mut off_curve = p256;
    off_curve["y"] = json!(URL_SAFE_NO_PAD.encode([1u8; 32]));
    assert_eq!(usable(off_curve, Alg::Es256), Err("is not a valid P-256 public key".into()));

    let secret = json!({"kty": "oct", "kid": "k", "k": "c2VjcmV0"});
    assert_eq!(usable(secret, Alg::Rs256), Err("is a shared secret (kty \"oct\"), which is never accepted".into()));
    let small_rsa = json!({"kty": "RSA", "kid": "k", "n": URL_SAFE_NO_PAD.encode([0xC5u8; 128]), "e": "AQAB"});
    assert_eq!(usable(small_rsa, Alg::Rs256), Err("is an RSA key of 1024 bits (2048 to 8192 accepted)".into()));
    let rsa_no_n = json!({"kty": "RSA", "kid": "k", "e": "AQAB"});
    assert_eq!(usable(rsa_no_n, Alg::Rs256), Err("has no \"n\"".into()));
    let ed448 = json!({"kty": "OKP", "crv": "Ed448", "x": "AAAA"});
    assert_eq!(usable(ed448, Alg::EdDsa), Err("has an unsupported type (kty \"OKP\", crv \"Ed448\")".into()));
    assert!(PublishedKey::from_jwk(&json!({"kid": "no kty"})).is_none());
    assert!(PublishedKey::from_jwk(&json!("not an object")).is_none());
}

#[test]
fn fetches_go_to_https_or_loopback_only() {
    assert!(allowed_uri("https://login.example.com/keys").is_ok());
    assert!(allowed_uri("http://127.0.0.1:8080/jwks").is_ok());
    assert!(allowed_uri("http://localhost/jwks").is_ok());
    assert!(allowed_uri("http://[::1]:9000/jwks").is_ok());
    for refused in ["http://login.example.com/keys", "ftp://127.0.0.1/jwks", "file:///etc/passwd", "/jwks", "not a url"]
    {
        let reason = allowed_uri(refused).unwrap_err();
        assert!(reason.contains("https only") || reason.contains("not a valid URL"), "{refused}: {reason}");
    }
    assert_eq!(max_age("public, max-age=300, must-revalidate"), Some(Duration::from_secs(300)));
    assert_eq!(max_age("no-store"), None);
}
