//! warden-audit owns the tamper-evident audit trail: the shape of an audit [`Event`] and its [`Body`] (kept as
//! canonical JSON text, written directly by [`BodyWriter`]), its canonical encoding, the
//! per-gateway hash chain the events are appended to ([`link`], [`Sealed`]), the signed [`Checkpoint`]s of a chain's
//! head, the JSON Lines export format ([`Record`]), and offline verification of all of it ([`verify`]), which names
//! the first broken link it finds ([`Broken`]).
//!
//! It is pure logic: no IO, no clock, no global state. The store writes and reads the records; the gateway signs
//! checkpoints with its Ed25519 key through [`sign_checkpoint`]; `warden audit verify` hands what it read to
//! [`verify`].
//!
//! # The chain
//!
//! Each gateway writes its own chain, named by a chain id, numbered 1, 2, 3, … without gaps. Event `k`'s hash is
//! `h_k = SHA-256(b"warden-audit-v1\0" ‖ h_{k-1} ‖ canonical(event_k))` with `h_0` = [`GENESIS`] (32 zero bytes), so
//! anyone can recompute it with standard tools. The canonical encoding ([`Event::canonical`]) is compact JSON with a
//! fixed field order and `body`'s object keys sorted; the chain id and seq are inside it, so moving or renumbering an
//! event changes its hash.
//!
//! Periodically the gateway signs a [`Checkpoint`]: (chain, seq, head = `h_seq`, time, key id). A chain's first event
//! is a `chain.start` whose body names the heads of the other chains' latest checkpoints, so deleting a whole chain
//! is detected through the chains that started after it.
//!
//! # What verification detects, and what it cannot
//!
//! Without the signing key, an attacker who edits the store can delete, insert, modify or reorder events, recompute
//! every hash, delete checkpoints or whole chains. [`verify`] recomputes every hash from [`GENESIS`], never trusting
//! stored fields, and checks every checkpoint's signature and head, so it detects:
//! - a deleted event in the middle of a chain (a gap in the seqs), an inserted one (a repeated seq, or a hash that no
//!   longer chains), a modified or reordered one (its recomputed hash differs from what was stored, or from what a
//!   checkpoint signed, when the attacker recomputed the stored hashes);
//! - a chain cut before its last checkpoint, and a forged or altered checkpoint;
//! - a deleted chain, when a `chain.start` of a chain started after that chain's checkpoint names it.
//!
//! It cannot detect what no signature covers: events after a chain's last checkpoint can be deleted from the end (or
//! rewritten, hashes recomputed) without trace, which is why the report counts them as `unsealed`; deleting the
//! latest checkpoints together with the events after the remaining ones looks the same; and a chain that no later
//! `chain.start` names (the newest chain, or one without a checkpoint when the next chain started) can be deleted
//! whole. Checkpointing often and shipping checkpoints off the gateway shrinks these windows; this crate does not
//! close them.

#![forbid(unsafe_code)]

mod checkpoint;
mod event;
mod verify;

#[cfg(test)]
mod testing;

pub use checkpoint::{sign_checkpoint, Checkpoint, PublicKey};
pub use event::{link, parse_lines, Body, BodyWriter, Event, Record, Sealed, GENESIS};
pub use verify::{verify, verify_export, Broken, ChainReport, Report};

/// Why audit input could not be read: a public key or a line of an export. (A trail that reads but does not verify
/// is a [`Broken`], not an `AuditError`.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The text is not an Ed25519 SubjectPublicKeyInfo PEM.
    #[error("audit public key: {0}")]
    Key(String),
    /// A line of a JSON Lines export is not a record (`line` counts from 1).
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
}
