use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

use super::*;
use crate::testing::{append, chain, event, hash_of, reseal, TestSigner};
use crate::{sign_checkpoint, Event};

/// Two gateways' chains: "gw-a" with 20 events, checkpoints at 10 and 18; "gw-b", started after gw-a's checkpoint
/// at 18 (its chain.start names that head), with 5 events and a checkpoint at 5.
struct Trail {
    signer: TestSigner,
    a: Vec<Sealed>,
    b: Vec<Sealed>,
    checkpoints: Vec<Checkpoint>,
}

fn trail() -> Trail {
    let signer = TestSigner::generate();
    let a = chain("gw-a", 20, json!([]));
    let b = chain("gw-b", 5, json!([{"chain": "gw-a", "seq": 18, "head": a[17].hash}]));
    let checkpoints = vec![signer.checkpoint(&a, 10), signer.checkpoint(&a, 18), signer.checkpoint(&b, 5)];
    Trail { signer, a, b, checkpoints }
}

/// (chain, events, checkpoints, sealed_through, unsealed)
type Row = (&'static str, u64, u64, u64, u64);

/// The untouched trail's report.
const INTACT: &[Row] = &[("gw-a", 20, 2, 18, 2), ("gw-b", 5, 1, 5, 0)];

fn check(events: Vec<Sealed>, checkpoints: Vec<Checkpoint>, keys: &[PublicKey], expected: Result<&[Row], Broken>) {
    let found = verify(events, checkpoints, keys).map(|report| {
        report
            .chains
            .into_iter()
            .map(|chain| (chain.chain, chain.events, chain.checkpoints, chain.sealed_through, chain.unsealed))
            .collect::<Vec<_>>()
    });
    let expected = expected.map(|rows| {
        rows.iter()
            .map(|&(chain, events, checkpoints, sealed, unsealed)| {
                (chain.to_string(), events, checkpoints, sealed, unsealed)
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(found, expected);
}

/// Tampers with a fresh trail, then verifies it with the trail's key.
fn check_tampered(tamper: impl FnOnce(&mut Trail), expected: Result<&[Row], Broken>) {
    let mut trail = trail();
    tamper(&mut trail);
    let events = trail.a.iter().chain(&trail.b).cloned().collect();
    check(events, trail.checkpoints, &[trail.signer.public_key()], expected);
}

fn gw_a(seq: u64) -> (String, u64) {
    ("gw-a".to_string(), seq)
}

#[test]
fn an_intact_trail_verifies() {
    check_tampered(|_| {}, Ok(INTACT));
}

#[test]
fn record_order_does_not_matter() {
    let trail = trail();
    let mut events: Vec<Sealed> = trail.b.iter().chain(trail.a.iter().rev()).cloned().collect();
    events.swap(3, 17);
    let mut checkpoints = trail.checkpoints.clone();
    checkpoints.reverse();
    check(events, checkpoints, &[trail.signer.public_key()], Ok(INTACT));
}

#[test]
fn modified_event_is_named() {
    let (chain, seq) = gw_a(7);
    check_tampered(
        |trail| trail.a[6].event.body["sql"] = json!("DROP TABLE orders"),
        Err(Broken::HashMismatch { chain, seq }),
    );
    // Any field counts, including the ones outside the body.
    check_tampered(
        |trail| trail.a[6].event.identity = Some("mallory".into()),
        Err(Broken::HashMismatch { chain: "gw-a".into(), seq: 7 }),
    );
    check_tampered(
        |trail| trail.b[2].event.at = "2026-11-21T07:25:03.123456780Z".into(),
        Err(Broken::HashMismatch { chain: "gw-b".into(), seq: 3 }),
    );
}

#[test]
fn modified_event_with_its_hash_recomputed_breaks_the_next_link() {
    check_tampered(
        |trail| {
            trail.a[6].event.body["sql"] = json!("DROP TABLE orders");
            trail.a[6] = append(&trail.a[..6], trail.a[6].event.clone());
        },
        Err(Broken::PrevMismatch { chain: "gw-a".into(), seq: 8 }),
    );
}

#[test]
fn rewritten_chain_is_caught_by_its_checkpoint() {
    check_tampered(
        |trail| {
            trail.a[6].event.body["sql"] = json!("DROP TABLE orders");
            reseal(&mut trail.a);
        },
        Err(Broken::CheckpointMismatch { chain: "gw-a".into(), seq: 10 }),
    );
    check_tampered(
        |trail| {
            trail.a[14].event.body["sql"] = json!("DROP TABLE orders");
            reseal(&mut trail.a);
        },
        Err(Broken::CheckpointMismatch { chain: "gw-a".into(), seq: 18 }),
    );
}

#[test]
fn rewriting_after_the_last_checkpoint_is_not_detectable() {
    check_tampered(
        |trail| {
            trail.a[18].event.body["sql"] = json!("DROP TABLE orders");
            reseal(&mut trail.a);
        },
        Ok(INTACT),
    );
}

#[test]
fn deleted_event_is_named() {
    check_tampered(
        |trail| {
            trail.a.remove(4);
        },
        Err(Broken::Missing { chain: "gw-a".into(), seq: 5 }),
    );
    check_tampered(
        |trail| {
            trail.a.remove(0);
        },
        Err(Broken::Missing { chain: "gw-a".into(), seq: 1 }),
    );
    check_tampered(
        |trail| {
            trail.b.drain(1..3);
        },
        Err(Broken::Missing { chain: "gw-b".into(), seq: 2 }),
    );
}

#[test]
fn deleted_event_with_the_rest_renumbered_and_resealed_is_caught_by_the_checkpoint() {
    check_tampered(
        |trail| {
            trail.a.remove(4);
            for (index, sealed) in trail.a.iter_mut().enumerate() {
                sealed.event.seq = index as u64 + 1;
            }
            reseal(&mut trail.a);
            // Keep the chain long enough for both checkpoints.
            let next = event("gw-a", 20);
            let extra = append(&trail.a, next);
            trail.a.push(extra);
        },
        Err(Broken::CheckpointMismatch { chain: "gw-a".into(), seq: 10 }),
    );
}

#[test]
fn inserted_event_is_named() {
    // With a seq already taken.
    check_tampered(
        |trail| {
            let mut forged = event("gw-a", 9);
            forged.body["sql"] = json!("SELECT 'nothing to see'");
            let forged = append(&trail.a[..8], forged);
            trail.a.push(forged);
        },
        Err(Broken::Duplicate { chain: "gw-a".into(), seq: 9 }),
    );
    // With the events after it renumbered.
    let insert_at_nine = |trail: &mut Trail| {
        let mut forged = event("gw-a", 9);
        forged.body["sql"] = json!("SELECT 'nothing to see'");
        let forged = append(&trail.a[..8], forged);
        trail.a.insert(8, forged);
        for sealed in &mut trail.a[9..] {
            sealed.event.seq += 1;
        }
    };
    check_tampered(insert_at_nine, Err(Broken::PrevMismatch { chain: "gw-a".into(), seq: 10 }));
    // With every hash recomputed.
    check_tampered(
        |trail| {
            insert_at_nine(trail);
            reseal(&mut trail.a);
        },
        Err(Broken::CheckpointMismatch { chain: "gw-a".into(), seq: 10 }),
    );
}

#[test]
fn reordered_events_are_named() {
    // The contents of events 12 and 13 swapped, each keeping its seq and chain fields.
    check_tampered(
        |trail| {
            let twelve = trail.a[11].event.clone();
            let thirteen = trail.a[12].event.clone();
            trail.a[11].event = Event { seq: 12, ..thirteen };
            trail.a[12].event = Event { seq: 13, ..twelve };
        },
        Err(Broken::HashMismatch { chain: "gw-a".into(), seq: 12 }),
    );
    // The records swapped, renumbered to fit.
    check_tampered(
        |trail| {
            trail.a.swap(11, 12);
            trail.a[11].event.seq = 12;
            trail.a[12].event.seq = 13;
        },
        Err(Broken::PrevMismatch { chain: "gw-a".into(), seq: 12 }),
    );
}

#[test]
fn truncation_after_the_last_checkpoint_is_reported_as_fewer_unsealed_events() {
    check_tampered(|trail| trail.a.truncate(19), Ok(&[("gw-a", 19, 2, 18, 1), ("gw-b", 5, 1, 5, 0)]));
    check_tampered(|trail| trail.a.truncate(18), Ok(&[("gw-a", 18, 2, 18, 0), ("gw-b", 5, 1, 5, 0)]));
}

#[test]
fn truncation_before_a_checkpoint_is_named() {
    check_tampered(|trail| trail.a.truncate(15), Err(Broken::Truncated { chain: "gw-a".into(), seq: 18, last: 15 }));
    check_tampered(|trail| trail.a.truncate(3), Err(Broken::Truncated { chain: "gw-a".into(), seq: 10, last: 3 }));
    // With the checkpoint deleted too, gw-b's chain.start still names gw-a's event 18.
    check_tampered(
        |trail| {
            trail.a.truncate(15);
            trail.checkpoints.remove(1);
        },
        Err(Broken::Truncated { chain: "gw-a".into(), seq: 18, last: 15 }),
    );
}

#[test]
fn checkpoint_without_events_is_truncation() {
    check_tampered(|trail| trail.a.clear(), Err(Broken::Truncated { chain: "gw-a".into(), seq: 10, last: 0 }));
}

#[test]
fn damaged_signature_is_named() {
    /// Damages gw-a's checkpoint at 18, which must then be reported at `seq` (the seq it claims).
    fn check_damage(seq: u64, damage: impl FnOnce(&mut Trail)) {
        let mut trail = trail();
        damage(&mut trail);
        let key_id = trail.signer.public_key().key_id().to_string();
        let events = trail.a.iter().chain(&trail.b).cloned().collect();
        let expected = Broken::BadSignature { chain: "gw-a".into(), seq, key_id };
        check(events, trail.checkpoints, &[trail.signer.public_key()], Err(expected));
    }
    fn signature(trail: &mut Trail) -> &mut String {
        &mut trail.checkpoints[1].signature
    }
    let redo = |trail: &mut Trail, change: fn(&mut Vec<u8>)| {
        let mut bytes = URL_SAFE_NO_PAD.decode(signature(trail).as_str()).expect("base64url");
        change(&mut bytes);
        *signature(trail) = URL_SAFE_NO_PAD.encode(bytes);
    };
    check_damage(18, |trail| {
        redo(trail, |bytes| {
            bytes.pop();
        })
    });
    check_damage(18, |trail| redo(trail, |bytes| bytes[0] ^= 1));
    check_damage(18, |trail| signature(trail).push('='));
    check_damage(18, |trail| signature(trail).clear());
    // Every signed field counts.
    check_damage(18, |trail| trail.checkpoints[1].head = "00".repeat(32));
    check_damage(18, |trail| trail.checkpoints[1].at = "2027-01-01T00:00:00Z".into());
    // A lower seq (whose head an attacker can compute) would otherwise hide a truncation.
    check_damage(15, |trail| {
        trail.a.truncate(15);
        trail.checkpoints[1].seq = 15;
        trail.checkpoints[1].head = trail.a[14].hash.clone();
    });
}

#[test]
fn wrong_key_is_named() {
    let trail = trail();
    let key_id = trail.signer.public_key().key_id().to_string();
    let other = TestSigner::generate();
    let events: Vec<Sealed> = trail.a.iter().chain(&trail.b).cloned().collect();
    check(
        events.clone(),
        trail.checkpoints.clone(),
        &[other.public_key()],
        Err(Broken::UnknownKey { chain: "gw-a".into(), seq: 10, key_id: key_id.clone() }),
    );
    check(
        events.clone(),
        trail.checkpoints.clone(),
        &[],
        Err(Broken::UnknownKey { chain: "gw-a".into(), seq: 10, key_id: key_id.clone() }),
    );
    // A checkpoint forged with another key that claims the gateway's key id.
    let mut checkpoints = trail.checkpoints.clone();
    let head = &trail.a[9].hash;
    checkpoints[0] = sign_checkpoint("gw-a", 10, head, "2026-11-21T08:00:10Z", &key_id, |message| other.sign(message));
    check(
        events.clone(),
        checkpoints,
        &[trail.signer.public_key(), other.public_key()],
        Err(Broken::BadSignature { chain: "gw-a".into(), seq: 10, key_id }),
    );
    // Several keys (a rotation): each checkpoint verifies with the one it names.
    let mut checkpoints = trail.checkpoints.clone();
    checkpoints[2] = other.checkpoint(&trail.b, 5);
    check(events, checkpoints, &[other.public_key(), trail.signer.public_key()], Ok(INTACT));
}

#[test]
fn deleted_chain_is_named_by_the_chain_that_started_after_it() {
    check_tampered(
        |trail| {
            trail.a.clear();
            trail.checkpoints.retain(|checkpoint| checkpoint.chain != "gw-a");
        },
        Err(Broken::MissingChain { chain: "gw-b".into(), seq: 1, missing: "gw-a".into() }),
    );
    // Rewritten whole, its checkpoints deleted: the head gw-b's chain.start names no longer matches.
    check_tampered(
        |trail| {
            trail.a[2].event.body["sql"] = json!("DROP TABLE orders");
            reseal(&mut trail.a);
            trail.checkpoints.retain(|checkpoint| checkpoint.chain != "gw-a");
        },
        Err(Broken::PreviousMismatch { chain: "gw-b".into(), seq: 1, previous: "gw-a".into(), previous_seq: 18 }),
    );
    // The newest chain is named by none: deleting it whole is not detectable.
    check_tampered(
        |trail| {
            trail.b.clear();
            trail.checkpoints.retain(|checkpoint| checkpoint.chain != "gw-b");
        },
        Ok(&[("gw-a", 20, 2, 18, 2)]),
    );
}

#[test]
fn malformed_records_are_named() {
    check_tampered(
        |trail| {
            trail.b[0].event.body["previous"] = json!({"chain": "gw-a"});
            reseal(&mut trail.b);
            let checkpoint = trail.signer.checkpoint(&trail.b, 5);
            trail.checkpoints[2] = checkpoint;
        },
        Err(Broken::Malformed {
            chain: "gw-b".into(),
            seq: 1,
            reason: "chain.start's \"previous\" is not a list".into(),
        }),
    );
    check_tampered(
        |trail| {
            trail.b[0].event.body["previous"] = json!([{"chain": "gw-a", "seq": 18}]);
            reseal(&mut trail.b);
            let checkpoint = trail.signer.checkpoint(&trail.b, 5);
            trail.checkpoints[2] = checkpoint;
        },
        Err(Broken::Malformed {
            chain: "gw-b".into(),
            seq: 1,
            reason: "a chain.start \"previous\" entry is not {chain, seq, head}".into(),
        }),
    );
    check_tampered(
        |trail| {
            let zero = Sealed::seal(&GENESIS, event("gw-a", 0));
            trail.a.push(zero);
        },
        Err(Broken::Malformed { chain: "gw-a".into(), seq: 0, reason: "seqs start at 1".into() }),
    );
    // A stored hash that is not 32 bytes of hex is a mismatch.
    check_tampered(|trail| trail.a[3].hash.push('0'), Err(Broken::HashMismatch { chain: "gw-a".into(), seq: 4 }));
}

#[test]
fn hex_case_does_not_matter() {
    check_tampered(
        |trail| {
            trail.a[3].hash = trail.a[3].hash.to_uppercase();
            trail.a[4].prev = trail.a[4].prev.to_uppercase();
        },
        Ok(INTACT),
    );
}

#[test]
fn first_broken_link_is_the_lowest_seq() {
    // Event 3 modified and event 10 deleted: event 3 is reported.
    check_tampered(
        |trail| {
            trail.a[2].event.body["sql"] = json!("DROP TABLE orders");
            trail.a.remove(9);
        },
        Err(Broken::HashMismatch { chain: "gw-a".into(), seq: 3 }),
    );
}

#[test]
fn messages_name_the_chain_and_the_event() {
    let broken = Broken::Missing { chain: "gw-a".into(), seq: 5 };
    assert_eq!(broken.to_string(), "audit chain \"gw-a\": event 5 is missing (deleted)");
    assert_eq!((broken.chain(), broken.seq()), ("gw-a", 5));
    let broken = Broken::Truncated { chain: "gw-a".into(), seq: 18, last: 15 };
    assert_eq!(
        broken.to_string(),
        "audit chain \"gw-a\": event 18 was checkpointed, but the chain ends at 15 (truncated)"
    );
    let broken = Broken::MissingChain { chain: "gw-b".into(), seq: 1, missing: "gw-a".into() };
    assert_eq!((broken.chain(), broken.seq()), ("gw-b", 1));
    assert!(hash_of(&trail().a[0]) != GENESIS);
}

/// Parts of an export (`--since`, or a rotated sink file) start mid-chain: they verify from their first event,
/// a part holding only a checkpoint checks its signature, and tampering inside a part is still found.
#[test]
fn exports_verify_from_where_they_start() {
    let Trail { signer, a, b, checkpoints } = trail();
    let keys = [signer.public_key()];
    // Events 12..=20 of gw-a with the checkpoint at 18, and all of gw-b (whose chain.start names gw-a's event 18).
    let part: Vec<Sealed> = a[11..].iter().chain(&b).cloned().collect();
    let report = verify_export(part.clone(), checkpoints.clone(), &keys).expect("the part verifies");
    let a_report = report.chains.iter().find(|chain| chain.chain == "gw-a").expect("gw-a");
    assert_eq!((a_report.first, a_report.events, a_report.sealed_through, a_report.unsealed), (12, 20, 18, 2));
    // The whole-store check does not accept a chain that starts mid-way.
    assert_eq!(
        verify(part.clone(), checkpoints.clone(), &keys).unwrap_err(),
        Broken::Missing { chain: "gw-a".into(), seq: 1 }
    );
    // A part with only a checkpoint of gw-a (the file rotated between its events and it).
    let only_checkpoint = vec![signer.checkpoint(&a, 20)];
    verify_export(Vec::new(), only_checkpoint, &keys).expect("a lone checkpoint verifies by its signature");
    // Tampering inside the part is found at its seq.
    let mut tampered = part;
    tampered[2].event.body = json!({"text": "changed"}).into();
    assert_eq!(
        verify_export(tampered, checkpoints, &keys).unwrap_err(),
        Broken::HashMismatch { chain: "gw-a".into(), seq: 14 }
    );
}

/// The `audit.pruned` event a pruning pass appends to `chain` (after its last event): it may delete events
/// 1..=through of each chain named, whose event `through` hashed to the head given.
fn pruned_event(chain: &[Sealed], marks: &[(&str, u64, &str)]) -> Sealed {
    let mut next = event(&chain[0].event.chain, chain.len() as u64 + 1);
    next.kind = "audit.pruned".to_string();
    next.session = None;
    let marks: Vec<serde_json::Value> =
        marks.iter().map(|(chain, through, head)| json!({"chain": chain, "through": through, "head": head})).collect();
    next.body = json!({"before": "2026-11-21T07:25:30Z", "chains": marks}).into();
    append(chain, next)
}

/// The trail after gw-b pruned gw-a through its checkpoint at 10: gw-b's event 6 is the `audit.pruned` event, sealed by
/// a checkpoint at 6; gw-a's events 1..=10 and its checkpoint at 10 are gone.
fn pruned_trail() -> Trail {
    let mut trail = trail();
    let head = trail.a[9].hash.clone();
    let pruned = pruned_event(&trail.b, &[("gw-a", 10, &head)]);
    trail.b.push(pruned);
    trail.checkpoints.push(trail.signer.checkpoint(&trail.b, 6));
    trail.a.drain(..10);
    trail.checkpoints.retain(|checkpoint| !(checkpoint.chain == "gw-a" && checkpoint.seq <= 10));
    trail
}

fn verify_trail(trail: &Trail) -> Result<Report, Broken> {
    let events = trail.a.iter().chain(&trail.b).cloned().collect();
    verify(events, trail.checkpoints.clone(), &[trail.signer.public_key()])
}

#[test]
fn a_pruned_trail_verifies_and_counts_what_was_pruned() {
    let trail = pruned_trail();
    let report = verify_trail(&trail).expect("the pruned trail verifies");
    let rows: Vec<_> =
        report.chains.iter().map(|chain| (chain.chain.as_str(), chain.first, chain.events, chain.pruned)).collect();
    assert_eq!(rows, [("gw-a", 11, 20, 10), ("gw-b", 1, 6, 0)]);
    let a = &report.chains[0];
    assert_eq!((a.checkpoints, a.sealed_through, a.unsealed), (1, 18, 2));

    // Pruned again, later, through 18 (gw-b's chain.start names that head): a second audit.pruned event, cumulative.
    let mut trail = pruned_trail();
    let head = trail.a[7].hash.clone();
    assert_eq!(trail.a[7].event.seq, 18);
    let again = pruned_event(&trail.b, &[("gw-a", 18, &head)]);
    trail.b.push(again);
    trail.checkpoints.push(trail.signer.checkpoint(&trail.b, 7));
    trail.a.drain(..8);
    trail.checkpoints.retain(|checkpoint| !(checkpoint.chain == "gw-a" && checkpoint.seq <= 18));
    let report = verify_trail(&trail).expect("pruned twice, it verifies");
    let a = &report.chains[0];
    assert_eq!((a.first, a.events, a.pruned, a.sealed_through, a.unsealed), (19, 20, 18, 18, 2));

    // A chain pruned whole: gw-c (3 events, sealed at 3), named by a gw-d that pruned it and then itself through 2.
    let signer = TestSigner::generate();
    let c = chain("gw-c", 3, json!([]));
    let mut d = chain("gw-d", 3, json!([{"chain": "gw-c", "seq": 3, "head": c[2].hash}]));
    let mut checkpoints = vec![signer.checkpoint(&c, 3), signer.checkpoint(&d, 2)];
    let marks = [("gw-c", 3, c[2].hash.as_str()), ("gw-d", 2, d[1].hash.as_str())];
    let pruned = pruned_event(&d, &marks);
    d.push(pruned);
    checkpoints.push(signer.checkpoint(&d, 4));
    let events: Vec<Sealed> = d[2..].to_vec();
    checkpoints.retain(|checkpoint| checkpoint.chain == "gw-d" && checkpoint.seq > 2);
    let report = verify(events.clone(), checkpoints.clone(), &[signer.public_key()]).expect("verifies");
    let rows: Vec<_> = report
        .chains
        .iter()
        .map(|chain| (chain.chain.as_str(), chain.first, chain.events, chain.pruned, chain.unsealed))
        .collect();
    assert_eq!(rows, [("gw-c", 4, 3, 3, 0), ("gw-d", 3, 4, 2, 0)]);
    // Without the audit.pruned event's checkpoint, it counts for nothing.
    checkpoints.retain(|checkpoint| checkpoint.seq != 4);
    assert_eq!(
        verify(events, checkpoints, &[signer.public_key()]).unwrap_err(),
        Broken::Missing { chain: "gw-d".into(), seq: 1 }
    );
}

#[test]
fn deleting_beyond_the_pruning_mark_is_named() {
    let mut trail = pruned_trail();
    trail.a.remove(0);
    let broken = verify_trail(&trail).unwrap_err();
    assert_eq!(broken, Broken::PrunedBeyond { chain: "gw-a".into(), seq: 11, pruned: 10 });
    assert_eq!(
        broken.to_string(),
        "audit chain \"gw-a\": event 11 is missing (deleted): the chain was pruned only through event 10, so events \
         from 11 on must be kept"
    );
    assert_eq!((broken.chain(), broken.seq()), ("gw-a", 11));
    // Deleting in the middle after pruning is still a gap.
    let mut trail = pruned_trail();
    trail.a.remove(3);
    assert_eq!(verify_trail(&trail).unwrap_err(), Broken::Missing { chain: "gw-a".into(), seq: 14 });
    // Pruning the audit.pruned event away too leaves the chain without its start.
    let mut trail = pruned_trail();
    trail.b.pop();
    trail.checkpoints.retain(|checkpoint| !(checkpoint.chain == "gw-b" && checkpoint.seq == 6));
    assert_eq!(verify_trail(&trail).unwrap_err(), Broken::Missing { chain: "gw-a".into(), seq: 1 });
}

#[test]
fn a_forged_or_edited_pruning_mark_is_caught() {
    // Edited to allow more: the event no longer matches its hash.
    let mut trail = pruned_trail();
    trail.b[5].event.body["chains"][0]["through"] = json!(12);
    assert_eq!(verify_trail(&trail).unwrap_err(), Broken::HashMismatch { chain: "gw-b".into(), seq: 6 });
    // Edited and resealed, as an attacker without the key can: the checkpoint that sealed it no longer matches.
    let mut trail = pruned_trail();
    trail.b[5].event.body["chains"][0]["through"] = json!(12);
    reseal(&mut trail.b);
    trail.a.drain(..2);
    assert_eq!(verify_trail(&trail).unwrap_err(), Broken::CheckpointMismatch { chain: "gw-b".into(), seq: 6 });
    // Forged after the last checkpoint (anyone can append there): it does not count.
    let mut trail = super::tests::trail();
    let head = trail.a[9].hash.clone();
    let forged = pruned_event(&trail.b, &[("gw-a", 10, &head)]);
    trail.b.push(forged);
    trail.a.drain(..10);
    trail.checkpoints.retain(|checkpoint| !(checkpoint.chain == "gw-a" && checkpoint.seq <= 10));
    assert_eq!(verify_trail(&trail).unwrap_err(), Broken::Missing { chain: "gw-a".into(), seq: 1 });
    // A mark whose head is not the pruned event's hash: the first event left does not follow it.
    let mut trail = super::tests::trail();
    let pruned = pruned_event(&trail.b, &[("gw-a", 10, &"ab".repeat(32))]);
    trail.b.push(pruned);
    trail.checkpoints.push(trail.signer.checkpoint(&trail.b, 6));
    trail.a.drain(..10);
    assert_eq!(verify_trail(&trail).unwrap_err(), Broken::PrevMismatch { chain: "gw-a".into(), seq: 11 });
    // A sealed audit.pruned event that names no marks is nothing a gateway writes.
    let mut trail = super::tests::trail();
    let mut pruned = pruned_event(&trail.b, &[]);
    pruned.event.body = json!({"before": "2026-11-21T07:25:30Z", "chains": [{"chain": "gw-a"}]}).into();
    let pruned = append(&trail.b, pruned.event);
    trail.b.push(pruned);
    trail.checkpoints.push(trail.signer.checkpoint(&trail.b, 6));
    assert_eq!(
        verify_trail(&trail).unwrap_err(),
        Broken::Malformed {
            chain: "gw-b".into(),
            seq: 6,
            reason: "audit.pruned's \"chains\" is not a list of {chain, through, head}".into()
        }
    );
}

#[test]
fn exports_ignore_pruning_marks() {
    // A pruned store's export verifies as any export does, from where each chain starts.
    let trail = pruned_trail();
    let events = trail.a.iter().chain(&trail.b).cloned().collect();
    let report = verify_export(events, trail.checkpoints.clone(), &[trail.signer.public_key()]).expect("verifies");
    let a = &report.chains[0];
    assert_eq!((a.first, a.events, a.pruned), (11, 20, 0));
}
