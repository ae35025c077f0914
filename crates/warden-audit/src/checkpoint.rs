//! Signed checkpoints of a chain's head, and the Ed25519 public keys that verify them.

use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::event::ObjectWriter;
use crate::AuditError;

/// What every signed checkpoint message starts with, so the signature cannot be replayed as any other.
const CHECKPOINT_DOMAIN: &[u8] = b"warden-audit-checkpoint-v1\0";

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 key bytes follow (as in warden-identity's token.rs).
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// A signed statement of a chain's head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub chain: String,
    /// The seq of the chain's last event when the checkpoint was taken.
    pub seq: u64,
    /// That event's hash, lowercase hex.
    pub head: String,
    /// RFC 3339 UTC, as written.
    pub at: String,
    /// The id of the signing key ([`PublicKey::key_id`]).
    pub key_id: String,
    /// Ed25519 over [`Checkpoint::signed_message`], base64url without padding.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes signed: canonical compact JSON of {chain, seq, head, at, key_id} in that order, prefixed
    /// b"warden-audit-checkpoint-v1\0".
    pub fn signed_message(chain: &str, seq: u64, head: &str, at: &str, key_id: &str) -> Vec<u8> {
        let mut object = ObjectWriter::new();
        object.string("chain", chain);
        object.number("seq", seq);
        object.string("head", head);
        object.string("at", at);
        object.string("key_id", key_id);
        let mut message = CHECKPOINT_DOMAIN.to_vec();
        message.extend_from_slice(&object.finish());
        message
    }

    /// The message this checkpoint's signature should cover.
    pub(crate) fn message(&self) -> Vec<u8> {
        Checkpoint::signed_message(&self.chain, self.seq, &self.head, &self.at, &self.key_id)
    }
}

/// Builds a checkpoint, signing its message with `sign` (the gateway's Ed25519 key, whose id is `key_id`).
pub fn sign_checkpoint(
    chain: &str,
    seq: u64,
    head_hex: &str,
    at: &str,
    key_id: &str,
    sign: impl FnOnce(&[u8]) -> [u8; 64],
) -> Checkpoint {
    let signature = sign(&Checkpoint::signed_message(chain, seq, head_hex, at, key_id));
    Checkpoint {
        chain: chain.to_string(),
        seq,
        head: head_hex.to_string(),
        at: at.to_string(),
        key_id: key_id.to_string(),
        signature: URL_SAFE_NO_PAD.encode(signature),
    }
}

/// An Ed25519 public key and its id (first 8 bytes of SHA-256 of the raw key, hex — same as warden-identity's
/// key_id).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    raw: [u8; 32],
    key_id: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl PublicKey {
    pub fn from_raw(raw: [u8; 32]) -> PublicKey {
        let key_id = hex::encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &raw).as_ref()[..8]);
        PublicKey { raw, key_id }
    }

    /// SubjectPublicKeyInfo PEM ("PUBLIC KEY"), as `warden audit public-key` prints (warden-identity's
    /// public_key_pem).
    pub fn from_pem(text: &str) -> Result<PublicKey, AuditError> {
        let block =
            pem::parse(text.trim()).map_err(|error| AuditError::Key(format!("not a PEM public key: {error}")))?;
        if block.tag() != "PUBLIC KEY" {
            return Err(AuditError::Key(format!(
                "expected a SubjectPublicKeyInfo \"PUBLIC KEY\" PEM block, found \"{}\"",
                block.tag()
            )));
        }
        let raw = block
            .contents()
            .strip_prefix(ED25519_SPKI_PREFIX.as_slice())
            .and_then(|rest| <[u8; 32]>::try_from(rest).ok())
            .ok_or_else(|| AuditError::Key("not an Ed25519 public key".to_string()))?;
        Ok(PublicKey::from_raw(raw))
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The 32 bytes of the key.
    pub fn raw(&self) -> &[u8; 32] {
        &self.raw
    }

    /// Whether `signature` is this key's Ed25519 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.raw).verify(message, signature).is_ok()
    }

    /// Whether `checkpoint` carries this key's signature of its own fields (base64url, no padding).
    pub(crate) fn verifies(&self, checkpoint: &Checkpoint) -> bool {
        match URL_SAFE_NO_PAD.decode(&checkpoint.signature) {
            Ok(signature) => self.verify(&checkpoint.message(), &signature),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests;
