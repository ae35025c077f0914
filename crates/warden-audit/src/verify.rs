//! Offline verification of a whole audit trail: every chain's links, every checkpoint, and the chains each
//! `chain.start` names.
//!
//! The order problems are looked for, so "the first" is well defined: chains by id; within a chain, where it starts
//! (seq 1, or just after its pruning mark, see below), then events by seq (for each: its seq, then its `prev`, then
//! its `hash`), then its checkpoints by seq (for each: its key, its signature, that its seq exists, its head). Only
//! when every chain passes are the `chain.start` references checked, chains by id and events by seq, because they
//! name other chains.
//!
//! # Pruned chains
//!
//! Retention deletes a chain's oldest events, but only up to one of its checkpoints, and only after appending an
//! `audit.pruned` event to the pruning gateway's chain, `{"before": T, "chains": [{"chain": C, "through": S, "head":
//! H}, …]}`: events 1..=S of chain C may be gone, and event S's hash was H. Each such event lists every chain ever
//! pruned (marks only grow), so the latest one suffices even after older ones were pruned in turn.
//!
//! An `audit.pruned` event counts only when a verified checkpoint of its own chain covers it: a signature vouches for
//! it, so an attacker without the key cannot write one (an unsealed one, after its chain's last checkpoint, could be
//! appended by anyone). A chain's mark is the greatest `through` any counted event names. A chain whose first stored
//! event is `f > 1` then verifies from `f` when its mark is at least `f - 1`, and when the mark is exactly `f - 1`,
//! event `f`'s `prev` must be the head the mark recorded; with a smaller mark the events between are missing
//! ([`Broken::PrunedBeyond`]), with none the chain is missing its start as before ([`Broken::Missing`] at seq 1).
//! Checkpoints at or below a chain's first stored event need only verify by signature, and a chain pruned whole (no
//! events left) is fine where a `chain.start` names a seq at or below its mark.

use std::collections::BTreeMap;

use crate::{link, Checkpoint, PublicKey, Sealed, GENESIS};

/// What a verified trail holds, per chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Sorted by chain id.
    pub chains: Vec<ChainReport>,
}

/// One verified chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub chain: String,
    /// The first seq verified: 1, or for a partial export ([`verify_export`]) where the file starts.
    pub first: u64,
    /// Events in the chain (its last seq).
    pub events: u64,
    /// Checkpoints of the chain, all verified.
    pub checkpoints: u64,
    /// The seq of the last verified checkpoint, 0 if none.
    pub sealed_through: u64,
    /// Events after it. No signature covers these: deleting them from the end of the chain, or rewriting them with
    /// recomputed hashes, cannot be detected.
    pub unsealed: u64,
    /// Events deleted by retention pruning, as an `audit.pruned` event allows: those before `first` (all of them, for
    /// a chain pruned whole). 0 for an export ([`verify_export`]), which starts where it starts.
    pub pruned: u64,
}

/// The first problem found, naming the chain and seq ("the first broken link").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    /// A gap in the seqs: the event was deleted.
    #[error("audit chain \"{chain}\": event {seq} is missing (deleted)")]
    Missing { chain: String, seq: u64 },
    /// A seq that appears more than once: an event was inserted.
    #[error("audit chain \"{chain}\": event {seq} appears more than once (inserted)")]
    Duplicate { chain: String, seq: u64 },
    /// The event's stored `prev` is not the recomputed hash of the event before it: that event was modified, or this
    /// one was moved, inserted or replaced.
    #[error(
        "audit chain \"{chain}\": event {seq} does not follow the event before it (its prev differs from the \
         recomputed hash: modified, reordered or inserted)"
    )]
    PrevMismatch { chain: String, seq: u64 },
    /// The event's recomputed hash differs from its stored `hash`: it was modified, reordered or inserted.
    #[error("audit chain \"{chain}\": event {seq} does not match its stored hash (modified, reordered or inserted)")]
    HashMismatch { chain: String, seq: u64 },
    /// A checkpoint (or another chain's `chain.start`) names event `seq`, but the chain ends at `last`: it was cut
    /// after that event was signed.
    #[error("audit chain \"{chain}\": event {seq} was checkpointed, but the chain ends at {last} (truncated)")]
    Truncated { chain: String, seq: u64, last: u64 },
    /// The recomputed hash of event `seq` differs from the head a checkpoint signed: events up to it were modified,
    /// inserted, deleted or reordered and their hashes recomputed.
    #[error(
        "audit chain \"{chain}\": event {seq}'s recomputed hash differs from the head its checkpoint signed \
         (rewritten)"
    )]
    CheckpointMismatch { chain: String, seq: u64 },
    /// The checkpoint's signature does not verify with the key its `key_id` names: forged or altered.
    #[error("audit chain \"{chain}\": the checkpoint of event {seq} has a bad signature for key {key_id} (forged or altered)")]
    BadSignature { chain: String, seq: u64, key_id: String },
    /// The checkpoint names a key not among those given.
    #[error("audit chain \"{chain}\": the checkpoint of event {seq} is signed by unknown key {key_id}")]
    UnknownKey { chain: String, seq: u64, key_id: String },
    /// Event `seq` of `chain` is a `chain.start` naming chain `missing`, which has no events or checkpoints left:
    /// it was deleted.
    #[error("audit chain \"{chain}\": event {seq} names chain \"{missing}\", which is missing (deleted)")]
    MissingChain { chain: String, seq: u64, missing: String },
    /// Event `seq` of `chain` is a `chain.start` naming a head of chain `previous` at `previous_seq` that differs from
    /// that event's recomputed hash: the other chain was rewritten.
    #[error(
        "audit chain \"{chain}\": event {seq} names the head of chain \"{previous}\" at event {previous_seq}, which \
         differs from its recomputed hash (rewritten)"
    )]
    PreviousMismatch { chain: String, seq: u64, previous: String, previous_seq: u64 },
    /// The chain was pruned through event `pruned` (an `audit.pruned` event says so), but its first stored event
    /// comes after `seq` = `pruned + 1`: events after the pruning mark were deleted.
    #[error(
        "audit chain \"{chain}\": event {seq} is missing (deleted): the chain was pruned only through event {pruned}, \
         so events from {seq} on must be kept"
    )]
    PrunedBeyond { chain: String, seq: u64, pruned: u64 },
    /// Something no gateway writes: a seq of 0, a `chain.start` body whose `previous` is not a list of
    /// {chain, seq, head}, or an `audit.pruned` body whose `chains` is not a list of {chain, through, head}.
    #[error("audit chain \"{chain}\": event {seq} is malformed: {reason}")]
    Malformed { chain: String, seq: u64, reason: String },
}

impl Broken {
    /// The chain the problem was found in.
    pub fn chain(&self) -> &str {
        match self {
            Broken::Missing { chain, .. }
            | Broken::PrunedBeyond { chain, .. }
            | Broken::Duplicate { chain, .. }
            | Broken::PrevMismatch { chain, .. }
            | Broken::HashMismatch { chain, .. }
            | Broken::Truncated { chain, .. }
            | Broken::CheckpointMismatch { chain, .. }
            | Broken::BadSignature { chain, .. }
            | Broken::UnknownKey { chain, .. }
            | Broken::MissingChain { chain, .. }
            | Broken::PreviousMismatch { chain, .. }
            | Broken::Malformed { chain, .. } => chain,
        }
    }

    /// The seq of the event (or checkpoint) the problem was found at.
    pub fn seq(&self) -> u64 {
        match self {
            Broken::Missing { seq, .. }
            | Broken::PrunedBeyond { seq, .. }
            | Broken::Duplicate { seq, .. }
            | Broken::PrevMismatch { seq, .. }
            | Broken::HashMismatch { seq, .. }
            | Broken::Truncated { seq, .. }
            | Broken::CheckpointMismatch { seq, .. }
            | Broken::BadSignature { seq, .. }
            | Broken::UnknownKey { seq, .. }
            | Broken::MissingChain { seq, .. }
            | Broken::PreviousMismatch { seq, .. }
            | Broken::Malformed { seq, .. } => *seq,
        }
    }
}

/// Verifies events (any order; group by chain, sort by seq) and checkpoints against the given keys.
///
/// Every hash is recomputed from [`GENESIS`]; stored `prev` and `hash` fields are only compared, never trusted.
/// Hex is compared as bytes, so its case does not matter.
pub fn verify(events: Vec<Sealed>, checkpoints: Vec<Checkpoint>, keys: &[PublicKey]) -> Result<Report, Broken> {
    verify_with(events, checkpoints, keys, false)
}

/// [`verify`] for an export that may start mid-chain (`warden audit export --since`): a chain may begin at any seq,
/// its first event's stored `prev` is taken as given (everything after it is verified as usual, and
/// [`ChainReport::first`] says where it starts), checkpoints before it are ignored, and a `chain.start` naming a chain
/// (or an event) the file does not hold is not an error.
pub fn verify_export(events: Vec<Sealed>, checkpoints: Vec<Checkpoint>, keys: &[PublicKey]) -> Result<Report, Broken> {
    verify_with(events, checkpoints, keys, true)
}

fn verify_with(
    events: Vec<Sealed>,
    checkpoints: Vec<Checkpoint>,
    keys: &[PublicKey],
    partial: bool,
) -> Result<Report, Broken> {
    let mut chains: BTreeMap<String, Chain> = BTreeMap::new();
    for sealed in events {
        chains.entry(sealed.event.chain.clone()).or_default().events.push(sealed);
    }
    for checkpoint in checkpoints {
        chains.entry(checkpoint.chain.clone()).or_default().checkpoints.push(checkpoint);
    }
    for chain in chains.values_mut() {
        chain.events.sort_by_key(|sealed| sealed.event.seq);
        chain.checkpoints.sort_by_key(|checkpoint| checkpoint.seq);
    }

    // First each chain's own links and checkpoints, from its first stored event on, chains by id; then where each
    // chain starts, which the pruning marks decide, read from the events those checks vouch for.
    let mut sealed: BTreeMap<String, u64> = BTreeMap::new();
    for (name, chain) in &mut chains {
        if chain.events.is_empty() {
            continue;
        }
        // From the first stored event, whatever its seq; below, whether the chain may start there.
        (chain.offset, chain.hashes) = verify_links(name, &chain.events, true)?;
        let through = verify_checkpoints(name, &chain.checkpoints, chain.offset, &chain.hashes, keys, partial)?;
        if !partial {
            check_pruned_bodies(name, &chain.events)?;
        }
        sealed.insert(name.clone(), through);
    }
    let marks = if partial { BTreeMap::new() } else { pruning_marks(&chains, &sealed) };
    for name in marks.keys() {
        chains.entry(name.clone()).or_default();
    }

    let mut reports = Vec::with_capacity(chains.len());
    for (name, chain) in &mut chains {
        let mark = marks.get(name);
        let sealed_through = match chain.events.first() {
            Some(first) => {
                let first_seq = first.event.seq;
                if !partial && chain.offset > 0 {
                    match mark {
                        None => return Err(Broken::Missing { chain: name.clone(), seq: 1 }),
                        Some(mark) if mark.through < chain.offset => {
                            return Err(Broken::PrunedBeyond {
                                chain: name.clone(),
                                seq: mark.through + 1,
                                pruned: mark.through,
                            })
                        }
                        Some(mark) if mark.through == chain.offset && chain.hashes[0] != mark.head => {
                            return Err(Broken::PrevMismatch { chain: name.clone(), seq: first_seq });
                        }
                        Some(_) => {}
                    }
                }
                sealed[name]
            }
            None => {
                // No events: a chain pruned whole starts after its mark; otherwise at 1 (and any checkpoint is then a
                // truncation).
                (chain.offset, chain.hashes) = match mark {
                    Some(mark) => (mark.through, vec![mark.head]),
                    None => (0, vec![GENESIS]),
                };
                verify_checkpoints(name, &chain.checkpoints, chain.offset, &chain.hashes, keys, partial)?
            }
        };
        let events = chain.offset + chain.events.len() as u64;
        let sealed_through = sealed_through.max(chain.offset);
        reports.push(ChainReport {
            chain: name.clone(),
            first: chain.offset + 1,
            events,
            checkpoints: chain.checkpoints.len() as u64,
            sealed_through,
            unsealed: events - sealed_through,
            pruned: if partial { 0 } else { chain.offset },
        });
    }

    for (name, chain) in &chains {
        for sealed in chain.events.iter().filter(|sealed| sealed.event.kind == "chain.start") {
            verify_previous(name, sealed, &chains, &marks, partial)?;
        }
    }
    Ok(Report { chains: reports })
}

/// One chain's records, and once its links verify, `hashes[k]` = `h_(offset+k)` (`hashes[0]` = [`GENESIS`] for a
/// whole chain).
#[derive(Default)]
struct Chain {
    events: Vec<Sealed>,
    checkpoints: Vec<Checkpoint>,
    offset: u64,
    hashes: Vec<[u8; 32]>,
}

/// How far a chain was pruned: events 1..=`through` may be gone, and event `through`'s hash was `head`.
#[derive(Debug, Clone, Copy)]
struct Mark {
    through: u64,
    head: [u8; 32],
}

/// Per chain, the greatest `through` named by an `audit.pruned` event that a verified checkpoint of its own chain
/// covers (with the head recorded for it).
fn pruning_marks(chains: &BTreeMap<String, Chain>, sealed: &BTreeMap<String, u64>) -> BTreeMap<String, Mark> {
    let mut marks: BTreeMap<String, Mark> = BTreeMap::new();
    for (name, chain) in chains {
        let Some(&sealed_through) = sealed.get(name) else { continue };
        let counted =
            chain.events.iter().filter(|sealed| sealed.event.kind == PRUNED && sealed.event.seq <= sealed_through);
        for event in counted {
            let Ok(named) = pruned_marks(&event.event.body) else { continue };
            for (chain, mark) in named {
                match marks.get(&chain) {
                    Some(known) if known.through >= mark.through => {}
                    _ => {
                        marks.insert(chain, mark);
                    }
                }
            }
        }
    }
    marks
}

/// The kind of the event a pruning pass appends before deleting.
const PRUNED: &str = "audit.pruned";

/// The marks an `audit.pruned` body names: {"before": T, "chains": [{"chain": C, "through": S, "head": H}, …]}.
fn pruned_marks(body: &serde_json::Value) -> Result<Vec<(String, Mark)>, &'static str> {
    const NOT_A_LIST: &str = "audit.pruned's \"chains\" is not a list of {chain, through, head}";
    let Some(entries) = body.get("chains").and_then(serde_json::Value::as_array) else { return Err(NOT_A_LIST) };
    entries
        .iter()
        .map(|entry| {
            let chain = entry.get("chain").and_then(serde_json::Value::as_str);
            let through = entry.get("through").and_then(serde_json::Value::as_u64);
            let head = entry.get("head").and_then(serde_json::Value::as_str).and_then(parse_hash);
            match (chain, through, head) {
                (Some(chain), Some(through), Some(head)) => Ok((chain.to_string(), Mark { through, head })),
                _ => Err(NOT_A_LIST),
            }
        })
        .collect()
}

/// Every `audit.pruned` body in a verified chain must name its marks: one that does not is nothing a gateway writes.
fn check_pruned_bodies(chain: &str, events: &[Sealed]) -> Result<(), Broken> {
    for sealed in events.iter().filter(|sealed| sealed.event.kind == PRUNED) {
        pruned_marks(&sealed.event.body).map_err(|reason| Broken::Malformed {
            chain: chain.into(),
            seq: sealed.event.seq,
            reason: reason.into(),
        })?;
    }
    Ok(())
}

/// Checks that `events` (sorted by seq) are exactly 1..=n (with `partial`, first..=n) and chain from [`GENESIS`]
/// (from the first event's `prev`); returns the offset (first − 1) and `h_offset..=h_n`.
fn verify_links(chain: &str, events: &[Sealed], partial: bool) -> Result<(u64, Vec<[u8; 32]>), Broken> {
    let offset = match events.first() {
        Some(first) if partial && first.event.seq > 1 => first.event.seq - 1,
        _ => 0,
    };
    let mut hashes = Vec::with_capacity(events.len() + 1);
    hashes.push(match events.first() {
        Some(first) if offset > 0 => {
            parse_hash(&first.prev).ok_or_else(|| Broken::PrevMismatch { chain: chain.into(), seq: first.event.seq })?
        }
        _ => GENESIS,
    });
    for (index, sealed) in events.iter().enumerate() {
        let expected = offset + index as u64 + 1;
        let seq = sealed.event.seq;
        if seq == 0 {
            return Err(Broken::Malformed { chain: chain.into(), seq, reason: "seqs start at 1".into() });
        }
        if seq != expected {
            // Sorted, and a repeat of the previous seq was reported there: this one is beyond `expected`.
            return Err(Broken::Missing { chain: chain.into(), seq: expected });
        }
        if events.get(index + 1).is_some_and(|next| next.event.seq == seq) {
            return Err(Broken::Duplicate { chain: chain.into(), seq });
        }
        let prev = hashes[index];
        if parse_hash(&sealed.prev) != Some(prev) {
            return Err(Broken::PrevMismatch { chain: chain.into(), seq });
        }
        let hash = link(&prev, &sealed.event);
        if parse_hash(&sealed.hash) != Some(hash) {
            return Err(Broken::HashMismatch { chain: chain.into(), seq });
        }
        hashes.push(hash);
    }
    Ok((offset, hashes))
}

/// Checks each checkpoint (sorted by seq) against the keys and the recomputed hashes; returns the last one's seq.
fn verify_checkpoints(
    chain: &str,
    checkpoints: &[Checkpoint],
    offset: u64,
    hashes: &[[u8; 32]],
    keys: &[PublicKey],
    partial: bool,
) -> Result<u64, Broken> {
    let mut sealed_through = 0;
    for checkpoint in checkpoints {
        let seq = checkpoint.seq;
        if partial && seq < offset {
            continue;
        }
        let mut named = keys.iter().filter(|key| key.key_id() == checkpoint.key_id).peekable();
        if named.peek().is_none() {
            return Err(Broken::UnknownKey { chain: chain.into(), seq, key_id: checkpoint.key_id.clone() });
        }
        if !named.any(|key| key.verifies(checkpoint)) {
            return Err(Broken::BadSignature { chain: chain.into(), seq, key_id: checkpoint.key_id.clone() });
        }
        if partial && hashes.len() == 1 && offset == 0 {
            // A part of an export holding this chain's checkpoint but none of its events (a file rotated between
            // them): the signature is all there is to check.
            continue;
        }
        if seq < offset {
            // Of a pruned event: what it signed is gone, the signature is all there is to check.
            continue;
        }
        let Some(hash) = usize::try_from(seq - offset).ok().and_then(|index| hashes.get(index)) else {
            return Err(Broken::Truncated { chain: chain.into(), seq, last: offset + hashes.len() as u64 - 1 });
        };
        if parse_hash(&checkpoint.head) != Some(*hash) {
            return Err(Broken::CheckpointMismatch { chain: chain.into(), seq });
        }
        sealed_through = seq;
    }
    Ok(sealed_through)
}

/// Checks the heads a `chain.start` body names: {"previous": [{"chain": C, "seq": S, "head": H}, …]}.
fn verify_previous(
    chain: &str,
    start: &Sealed,
    chains: &BTreeMap<String, Chain>,
    marks: &BTreeMap<String, Mark>,
    partial: bool,
) -> Result<(), Broken> {
    let seq = start.event.seq;
    let malformed = |reason: &str| Broken::Malformed { chain: chain.into(), seq, reason: reason.into() };
    let entries = match start.event.body.get("previous") {
        None | Some(serde_json::Value::Null) => return Ok(()),
        Some(serde_json::Value::Array(entries)) => entries,
        Some(_) => return Err(malformed("chain.start's \"previous\" is not a list")),
    };
    for entry in entries {
        let previous = entry.get("chain").and_then(serde_json::Value::as_str);
        let previous_seq = entry.get("seq").and_then(serde_json::Value::as_u64);
        let head = entry.get("head").and_then(serde_json::Value::as_str).and_then(parse_hash);
        let (Some(previous), Some(previous_seq), Some(head)) = (previous, previous_seq, head) else {
            return Err(malformed("a chain.start \"previous\" entry is not {chain, seq, head}"));
        };
        let other = match chains.get(previous) {
            Some(other) if other.events.is_empty() && partial => continue,
            Some(other) => other,
            None if partial => continue,
            None => return Err(Broken::MissingChain { chain: chain.into(), seq, missing: previous.into() }),
        };
        // Before where the chain starts: in an export, outside the file; in a store, pruned (a chain starts after
        // its first event only as far as its pruning mark allows).
        if previous_seq < other.offset
            && (partial || marks.get(previous).is_some_and(|mark| mark.through >= previous_seq))
        {
            continue;
        }
        let Some(hash) = usize::try_from(previous_seq - other.offset).ok().and_then(|index| other.hashes.get(index))
        else {
            return Err(Broken::Truncated {
                chain: previous.into(),
                seq: previous_seq,
                last: other.offset + other.hashes.len() as u64 - 1,
            });
        };
        if *hash != head {
            return Err(Broken::PreviousMismatch { chain: chain.into(), seq, previous: previous.into(), previous_seq });
        }
    }
    Ok(())
}

/// 32 bytes from hex of either case; `None` for anything else.
fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash).ok()?;
    Some(hash)
}

#[cfg(test)]
mod tests;
