//! Framing and statement tracking, driven by hand-built message streams.

use super::*;
use crate::codec::{build, put_cstr};

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    build(&mut out, tag, |out| out.extend_from_slice(body));
    out
}

fn cstr_message(tag: u8, text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    build(&mut out, tag, |out| put_cstr(out, text.as_bytes()));
    out
}

/// Scans `input` in one buffer; returns (forwardable bytes, inspected tags).
fn scan_all(framing: &mut Framing, input: &[u8], limit: Option<usize>) -> (Result<usize, CodecError>, Vec<u8>) {
    let mut buffer = BytesMut::from(input);
    let mut seen = Vec::new();
    let step = framing.scan(
        &mut buffer,
        limit,
        |tag, _| tag == b'Q',
        |tag, _| {
            seen.push(tag);
            Ok(None)
        },
    );
    let result = match step {
        Step::Forward(forward) => Ok(forward),
        Step::Replace { .. } => panic!("nothing is replaced here"),
        Step::Fail(error) => Err(error),
    };
    (result, seen)
}

#[test]
fn whole_messages_are_forwarded_and_inspected() {
    let mut input = cstr_message(b'Q', "select 1");
    input.extend(message(b'd', &[1, 2, 3]));
    let mut framing = Framing::default();
    let (forward, seen) = scan_all(&mut framing, &input, Some(1024));
    assert_eq!(forward, Ok(input.len()));
    assert_eq!(seen, vec![b'Q']);
}

#[test]
fn an_incomplete_inspected_message_waits_and_a_pass_through_one_streams() {
    let query = cstr_message(b'Q', "select 1");
    let mut framing = Framing::default();
    let (forward, seen) = scan_all(&mut framing, &query[..7], Some(1024));
    assert_eq!(forward, Ok(0), "a partial Query is held until whole");
    assert!(seen.is_empty());

    let copy = message(b'd', &[7; 100]);
    let (forward, _) = scan_all(&mut framing, &copy[..40], Some(1024));
    assert_eq!(forward, Ok(40), "a partial CopyData streams on");
    assert_eq!(framing.passthrough, copy.len() - 40);
    let mut rest = copy[40..].to_vec();
    rest.extend(cstr_message(b'Q', "select 2"));
    let (forward, seen) = scan_all(&mut framing, &rest, Some(1024));
    assert_eq!(forward, Ok(rest.len()));
    assert_eq!(seen, vec![b'Q']);
}

#[test]
fn an_oversized_message_is_refused_from_its_header() {
    // Only the header is present: the refusal must not wait for (or allocate) the body.
    let header = [b'Q', 0x10, 0, 0, 0];
    let mut framing = Framing::default();
    let (forward, _) = scan_all(&mut framing, &header, Some(1 << 20));
    assert!(matches!(forward, Err(CodecError::TooLarge { tag: 'Q', limit: 1_048_576, .. })), "{forward:?}");
    let (forward, _) = scan_all(&mut framing, &[b'S', 0, 0, 0, 2], None);
    assert!(matches!(forward, Err(CodecError::BadLength { .. })));
}

fn server(tag: u8, text: &str) -> Vec<u8> {
    match tag {
        b'Z' => message(b'Z', text.as_bytes()),
        b'E' => {
            let mut out = Vec::new();
            backend::error_response(&mut out, backend::Severity::Error, "42P01", text, None);
            out
        }
        _ => cstr_message(tag, text),
    }
}

fn feed(tracker: &mut Tracker, tag: u8, text: &str) -> Option<(String, Option<u64>, Option<String>)> {
    let bytes = server(tag, text);
    tracker.on_server_message(tag, &bytes).0.map(|event| (event.text.to_string(), event.rows, event.error))
}

#[test]
fn simple_query_completes_at_ready_for_query_with_summed_rows() {
    let mut tracker = Tracker::default();
    tracker.push(PendingKind::Query, Arc::from("insert …; insert …")).unwrap();
    assert_eq!(feed(&mut tracker, b'C', "INSERT 0 2"), None);
    assert_eq!(feed(&mut tracker, b'C', "INSERT 0 3"), None);
    assert_eq!(feed(&mut tracker, b'Z', "I"), Some(("insert …; insert …".into(), Some(5), None)));
    assert!(tracker.queue.is_empty());
}

#[test]
fn pipelined_executes_after_an_error_are_skipped_until_sync() {
    let mut tracker = Tracker::default();
    tracker.push(PendingKind::Execute, Arc::from("select 1")).unwrap();
    tracker.push(PendingKind::Execute, Arc::from("select * from missing")).unwrap();
    tracker.push(PendingKind::Execute, Arc::from("select 3")).unwrap();
    tracker.push(PendingKind::Sync, Arc::from("")).unwrap();
    tracker.push(PendingKind::Execute, Arc::from("select 4")).unwrap();
    tracker.push(PendingKind::Sync, Arc::from("")).unwrap();
    assert_eq!(feed(&mut tracker, b'C', "SELECT 1"), Some(("select 1".into(), Some(1), None)));
    assert_eq!(
        feed(&mut tracker, b'E', "relation \"missing\" does not exist"),
        Some(("select * from missing".into(), None, Some("42P01: relation \"missing\" does not exist".into())))
    );
    assert_eq!(feed(&mut tracker, b'Z', "I"), None);
    assert_eq!(feed(&mut tracker, b'C', "SELECT 1"), Some(("select 4".into(), Some(1), None)));
    assert_eq!(feed(&mut tracker, b'Z', "I"), None);
    assert!(tracker.queue.is_empty());
    assert_eq!(tracker.next_seq, 3);
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Arbitrary client bytes, split into arbitrary reads: framing forwards at most what it has, refuses
        /// what breaks the protocol, and never panics; tracking never panics on arbitrary server bytes.
        #[test]
        fn framing_and_tracking(bytes in proptest::collection::vec(any::<u8>(), 0..512), split in 0usize..512) {
            let split = split.min(bytes.len());
            let mut framing = Framing::default();
            let mut tracker = Tracker::default();
            tracker.push(PendingKind::Query, Arc::from("q")).unwrap();
            tracker.push(PendingKind::Execute, Arc::from("e")).unwrap();
            tracker.push(PendingKind::Sync, Arc::from("")).unwrap();
            let mut buffer = BytesMut::from(&bytes[..split]);
            for chunk in [&bytes[..0], &bytes[split..]] {
                buffer.extend_from_slice(chunk);
                let before = buffer.len();
                match framing.scan(&mut buffer, Some(256), |_, _| true, |tag, message| {
                    let _ = tracker.on_server_message(tag, message);
                    Ok(None)
                }) {
                    Step::Forward(forward) => {
                        prop_assert!(forward <= before);
                        buffer.advance(forward);
                    }
                    Step::Fail(_) | Step::Replace { .. } => break,
                }
            }
        }
    }
}

#[test]
fn a_client_that_never_reads_cannot_grow_the_queue_without_bound() {
    let mut tracker = Tracker::default();
    for _ in 0..MAX_IN_FLIGHT {
        tracker.push(PendingKind::Sync, Arc::from("")).unwrap();
    }
    assert!(matches!(
        tracker.push(PendingKind::Sync, Arc::from("")),
        Err(CodecError::LimitExceeded { limit: MAX_IN_FLIGHT, .. })
    ));
}

#[test]
fn a_parse_the_server_refuses_is_recorded_and_what_follows_it_is_skipped() {
    let mut tracker = Tracker::default();
    tracker.push(PendingKind::Parse, Arc::from("select 1")).unwrap();
    tracker.push(PendingKind::Execute, Arc::from("select 1")).unwrap();
    tracker.push(PendingKind::Sync, Arc::from("")).unwrap();
    tracker.push(PendingKind::Parse, Arc::from("selec 2")).unwrap();
    tracker.push(PendingKind::Execute, Arc::from("selec 2")).unwrap();
    tracker.push(PendingKind::Sync, Arc::from("")).unwrap();
    assert_eq!(feed(&mut tracker, b'1', ""), None, "ParseComplete records nothing");
    assert_eq!(feed(&mut tracker, b'C', "SELECT 1"), Some(("select 1".into(), Some(1), None)));
    assert_eq!(feed(&mut tracker, b'Z', "I"), None);
    assert_eq!(
        feed(&mut tracker, b'E', "syntax error at or near \"selec\""),
        Some(("selec 2".into(), None, Some("42P01: syntax error at or near \"selec\"".into())))
    );
    assert_eq!(feed(&mut tracker, b'Z', "I"), None);
    assert!(tracker.queue.is_empty());
}

#[test]
fn a_refused_statement_gets_warden_error_in_place_of_the_stand_in() {
    let mut tracker = Tracker::default();
    let judgement = crate::hooks::Judgement {
        annotation: None,
        refusal: Some(crate::hooks::StatementRefusal { code: "42501", message: "no policy permits write".into() }),
        deferral: None,
    };
    assert!(tracker.push_judged(PendingKind::Query, Arc::from("DELETE FROM t"), judgement).unwrap());
    let upstream_error = server(backend::ERROR_RESPONSE, "42601");
    let (event, replacement) = tracker.on_server_message(backend::ERROR_RESPONSE, &upstream_error);
    assert!(event.is_none(), "a simple query completes at ReadyForQuery");
    let replacement = replacement.expect("the stand-in's error is replaced");
    let fields = backend::error_fields(&replacement).unwrap();
    assert_eq!((fields.code.as_str(), fields.message.as_str()), ("42501", "no policy permits write"));
    let event = feed(&mut tracker, backend::READY_FOR_QUERY, "I").expect("completed");
    assert_eq!(event.0, "DELETE FROM t");
    assert_eq!(event.2.as_deref(), Some("42501: no policy permits write"));
}
