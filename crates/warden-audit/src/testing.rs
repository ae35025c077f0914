//! Test helpers: an Ed25519 signer generated with aws-lc-rs, and events to chain.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use serde_json::json;

use crate::{sign_checkpoint, Checkpoint, Event, PublicKey, Sealed, GENESIS};

/// A gateway's checkpoint signing key, fresh per test.
pub(crate) struct TestSigner {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl TestSigner {
    pub(crate) fn generate() -> TestSigner {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("key generation");
        let pair = Ed25519KeyPair::from_pkcs8(document.as_ref()).expect("a key just generated parses");
        let raw: [u8; 32] = pair.public_key().as_ref().try_into().expect("Ed25519 public keys are 32 bytes");
        TestSigner { pair, public: PublicKey::from_raw(raw) }
    }

    pub(crate) fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.pair.sign(message).as_ref().try_into().expect("Ed25519 signatures are 64 bytes")
    }

    /// A checkpoint of `chain`'s head at `seq`.
    pub(crate) fn checkpoint(&self, chain: &[Sealed], seq: u64) -> Checkpoint {
        let sealed = &chain[seq as usize - 1];
        self.checkpoint_of(&sealed.event.chain, seq, &sealed.hash)
    }

    pub(crate) fn checkpoint_of(&self, chain: &str, seq: u64, head: &str) -> Checkpoint {
        let at = format!("2026-11-21T08:00:{:02}Z", seq % 60);
        sign_checkpoint(chain, seq, head, &at, self.public.key_id(), |message| self.sign(message))
    }
}

/// The event a gateway would record as event `seq` of `chain`: a statement, mostly.
pub(crate) fn event(chain: &str, seq: u64) -> Event {
    Event {
        chain: chain.to_string(),
        seq,
        at: format!("2026-11-21T07:25:{:02}.123456789Z", seq % 60),
        kind: "statement".to_string(),
        session: Some(format!("ses_{}", seq / 4)),
        identity: Some("alice".to_string()),
        connection: Some("shop".to_string()),
        run: None,
        node: None,
        body: json!({"sql": format!("SELECT {seq}"), "allowed": true, "rows": seq * 3, "policies": ["read"]}).into(),
    }
}

/// A chain of `count` events sealed in order, the first a `chain.start` naming `previous` heads.
pub(crate) fn chain(name: &str, count: u64, previous: serde_json::Value) -> Vec<Sealed> {
    let mut sealed: Vec<Sealed> = Vec::new();
    for seq in 1..=count {
        let mut next = event(name, seq);
        if seq == 1 {
            next.kind = "chain.start".to_string();
            next.session = None;
            next.identity = None;
            next.connection = None;
            next.body = json!({"gateway": "gw", "previous": previous}).into();
        }
        sealed.push(append(&sealed, next));
    }
    sealed
}

/// Seals `event` after the last of `chain`.
pub(crate) fn append(chain: &[Sealed], event: Event) -> Sealed {
    Sealed::seal(&chain.last().map_or(GENESIS, hash_of), event)
}

/// Recomputes every `prev` and `hash` from the events as they now stand: what an attacker without the key can do.
pub(crate) fn reseal(chain: &mut [Sealed]) {
    let mut prev = GENESIS;
    for sealed in chain {
        *sealed = Sealed::seal(&prev, sealed.event.clone());
        prev = hash_of(sealed);
    }
}

pub(crate) fn hash_of(sealed: &Sealed) -> [u8; 32] {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&sealed.hash, &mut hash).expect("a sealed hash is 32 bytes of hex");
    hash
}
