use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::*;
use crate::testing::TestSigner;

#[test]
fn signed_message_is_pinned() {
    let head = "ab".repeat(32);
    let message = Checkpoint::signed_message("gw-1", 7, &head, "2026-11-21T08:00:00Z", "0011223344556677");
    let expected = format!(
        "warden-audit-checkpoint-v1\0{{\"chain\":\"gw-1\",\"seq\":7,\"head\":\"{head}\",\"at\":\"2026-11-21T08:00:00Z\",\
         \"key_id\":\"0011223344556677\"}}"
    );
    assert_eq!(String::from_utf8(message).expect("UTF-8"), expected);
}

#[test]
fn sign_checkpoint_signs_the_message() {
    let signer = TestSigner::generate();
    let key = signer.public_key();
    let head = "cd".repeat(32);
    let checkpoint =
        sign_checkpoint("gw-1", 3, &head, "2026-11-21T08:00:00Z", key.key_id(), |message| signer.sign(message));
    assert_eq!(checkpoint.key_id, key.key_id());
    assert!(!checkpoint.signature.contains('=') && !checkpoint.signature.contains('+'));
    let signature = URL_SAFE_NO_PAD.decode(&checkpoint.signature).expect("base64url");
    assert_eq!(signature.len(), 64);
    assert!(key.verify(&checkpoint.message(), &signature));
    assert!(key.verifies(&checkpoint));
    assert!(!key.verify(b"something else", &signature));
    let altered = Checkpoint { seq: 4, ..checkpoint };
    assert!(!key.verifies(&altered));
}

#[test]
fn key_id_is_warden_identitys() {
    let raw = [7u8; 32];
    let key = PublicKey::from_raw(raw);
    assert_eq!(key.key_id(), hex::encode(&Sha256::digest(raw)[..8]));
    assert_eq!(key.key_id().len(), 16);
    assert_eq!(key.raw(), &raw);
    assert_eq!(format!("{key:?}"), format!("PublicKey {{ key_id: {:?}, .. }}", key.key_id()));
}

#[test]
fn public_key_from_spki_pem() {
    let signer = TestSigner::generate();
    let key = signer.public_key();
    // What warden-identity's public_key_pem writes.
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(key.raw());
    let text = pem::encode(&pem::Pem::new("PUBLIC KEY", der.clone()));
    assert_eq!(PublicKey::from_pem(&text), Ok(key.clone()));
    assert_eq!(PublicKey::from_pem(&format!("\n  {text}\n")), Ok(key));

    let check_error = |text: String, reason: &str| match PublicKey::from_pem(&text) {
        Err(AuditError::Key(found)) => assert!(found.contains(reason), "{found}"),
        other => panic!("expected a key error, got {other:?}"),
    };
    check_error(pem::encode(&pem::Pem::new("PRIVATE KEY", der.clone())), "found \"PRIVATE KEY\"");
    check_error(pem::encode(&pem::Pem::new("PUBLIC KEY", der[..40].to_vec())), "not an Ed25519 public key");
    let mut other_algorithm = der.clone();
    other_algorithm[8] = 0x71; // Ed448's OID ends in 0x71
    check_error(pem::encode(&pem::Pem::new("PUBLIC KEY", other_algorithm)), "not an Ed25519 public key");
    check_error("not pem at all".to_string(), "not a PEM public key");
}
