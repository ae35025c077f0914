use super::*;

fn issuer() -> TokenIssuer {
    let (key, _) = SigningKey::generate().expect("key");
    TokenIssuer::new(key, Duration::from_secs(900), Duration::from_secs(3600))
}

fn api_key_identity() -> Identity {
    Identity::new("ci-runner", vec!["agents".into()], IdentityKind::ApiKey)
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn refused(result: Result<IssuedToken, TokenError>) -> String {
    match result {
        Err(TokenError::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_token_verifies_as_its_parent_identity_with_its_scope() {
    let issuer = issuer();
    let request = TokenRequest {
        connections: Some(vec!["shop".into()]),
        actions: Some(vec!["read".into(), "write".into()]),
        ttl: None,
        run: Some("run-42".into()),
        node: Some("planner".into()),
    };
    let issued = issuer.issue(&api_key_identity(), &request, now()).expect("issued");
    assert!(issued.token.starts_with("wt_"));
    assert_eq!(issued.expires_at, now() + Duration::from_secs(900));
    let identity = issuer.verify(&issued.token, now()).expect("verifies");
    assert_eq!(identity.name, "ci-runner");
    assert_eq!(identity.groups, ["agents"]);
    assert_eq!(identity.kind, IdentityKind::WardenToken);
    assert_eq!(identity.expires_at, Some(issued.expires_at));
    let scope = identity.token.as_deref().expect("scope");
    assert_eq!(scope, &issued.scope);
    assert!(scope.allows_connection("shop") && !scope.allows_connection("billing"));
    assert!(scope.allows_action("write") && !scope.allows_action("ddl"));
    assert_eq!((scope.run.as_deref(), scope.node.as_deref()), (Some("run-42"), Some("planner")));
}

#[test]
fn a_child_can_only_narrow_its_parent() {
    let issuer = issuer();
    let parent_request = TokenRequest {
        connections: Some(vec!["shop".into()]),
        actions: Some(vec!["read".into()]),
        ttl: Some(Duration::from_secs(600)),
        run: Some("run-1".into()),
        node: None,
    };
    let parent = issuer.issue(&api_key_identity(), &parent_request, now()).unwrap();
    let parent = issuer.verify(&parent.token, now()).unwrap();

    let more_connections =
        TokenRequest { connections: Some(vec!["shop".into(), "billing".into()]), ..Default::default() };
    assert!(refused(issuer.issue(&parent, &more_connections, now())).contains("connection \"billing\""));
    let more_actions = TokenRequest { actions: Some(vec!["write".into()]), ..Default::default() };
    assert!(refused(issuer.issue(&parent, &more_actions, now())).contains("action \"write\""));
    let longer = TokenRequest { ttl: Some(Duration::from_secs(601)), ..Default::default() };
    assert!(refused(issuer.issue(&parent, &longer, now())).contains("outlives the parent"));
    let other_run = TokenRequest { run: Some("run-2".into()), ..Default::default() };
    assert!(refused(issuer.issue(&parent, &other_run, now())).contains("run \"run-1\""));
    let beyond_max = TokenRequest { ttl: Some(Duration::from_secs(3601)), ..Default::default() };
    assert!(refused(issuer.issue(&api_key_identity(), &beyond_max, now())).contains("tokens.max_ttl"));
    let empty = TokenRequest { actions: Some(vec![]), ..Default::default() };
    assert!(refused(issuer.issue(&parent, &empty, now())).contains("allows nothing"));

    // Asking nothing inherits everything, and the default lifetime is cut at the parent's expiry.
    let child =
        issuer.issue(&parent, &TokenRequest { node: Some("writer".into()), ..Default::default() }, now()).unwrap();
    assert_eq!(child.expires_at, parent.expires_at.unwrap());
    let scope = child.scope;
    assert_eq!(scope.connections, Some(vec!["shop".to_string()]));
    assert_eq!(scope.actions, Some(vec!["read".to_string()]));
    assert_eq!((scope.run.as_deref(), scope.node.as_deref()), (Some("run-1"), Some("writer")));
    assert_eq!(scope.chain, vec![parent.token.as_ref().unwrap().id.clone()]);
}

#[test]
fn forged_tampered_foreign_and_expired_tokens_are_refused() {
    let issuer = issuer();
    let issued = issuer.issue(&api_key_identity(), &TokenRequest::default(), now()).unwrap();
    let reason = |presented: &str, at: OffsetDateTime| match issuer.verify(presented, at) {
        Err(AuthError::Token(reason)) => reason,
        other => panic!("expected a refusal for {presented}, got {other:?}"),
    };
    // Expired (beyond the leeway).
    assert!(reason(&issued.token, issued.expires_at + Duration::from_secs(6)).contains("expired"));
    issuer.verify(&issued.token, issued.expires_at).expect("valid within the leeway");
    // Tampered payload: claim another identity.
    let jwt = issued.token.strip_prefix("wt_").unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    let payload = String::from_utf8(base64_decode(parts[1])).unwrap().replace("ci-runner", "admin-bot");
    let tampered = format!("wt_{}.{}.{}", parts[0], base64_encode(payload.as_bytes()), parts[2]);
    assert_eq!(reason(&tampered, now()), "bad signature");
    // Signed by another gateway's key.
    let foreign = self::issuer().issue(&api_key_identity(), &TokenRequest::default(), now()).unwrap();
    assert!(reason(&foreign.token, now()).contains("does not hold"));
    // alg none, with our kid.
    let header = base64_encode(format!("{{\"alg\":\"none\",\"kid\":\"{}\"}}", issuer.key.key_id).as_bytes());
    assert!(!reason(&format!("wt_{header}.{}.", parts[1]), now()).is_empty());
    assert_eq!(reason("wt_garbage", now()), "malformed token");
    assert_eq!(reason("wk_notatoken", now()), "not a warden token");
}

#[test]
fn the_signing_key_is_created_once_and_reloaded() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state/token-signing-key.pem");
    let first = SigningKey::load_or_create(&path).expect("created");
    let second = SigningKey::load_or_create(&path).expect("loaded");
    assert_eq!(first.key_id(), second.key_id());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(first.public_key_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
    std::fs::write(&path, "not a key").unwrap();
    let error = SigningKey::load_or_create(&path).unwrap_err();
    assert!(error.to_string().contains("not a PEM private key"), "{error}");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
