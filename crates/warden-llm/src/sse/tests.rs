//! The specification's examples, every line ending, any chunking, the limits, and write → parse round trips.

use proptest::prelude::*;

use super::*;

/// `stream` parsed in pieces cut before each offset of `cuts` gives the same events as in one piece.
fn parse(stream: &[u8], cuts: &[usize]) -> Result<Vec<SseEvent>, SseError> {
    let mut parser = SseParser::new(1 << 16);
    let mut events = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain([&stream.len()]) {
        if cut < from || cut > stream.len() {
            continue;
        }
        events.extend(parser.push(&stream[from..cut])?);
        from = cut;
    }
    events.extend(parser.finish()?);
    Ok(events)
}

/// Parsed whole and cut at every byte, `stream` gives `expected`.
fn check(stream: &str, expected: &[SseEvent]) {
    assert_eq!(parse(stream.as_bytes(), &[]).unwrap(), expected, "{stream:?}");
    for cut in 0..=stream.len() {
        assert_eq!(parse(stream.as_bytes(), &[cut]).unwrap(), expected, "{stream:?} cut at {cut}");
    }
    let every: Vec<usize> = (0..stream.len()).collect();
    assert_eq!(parse(stream.as_bytes(), &every).unwrap(), expected, "{stream:?} byte by byte");
}

#[test]
fn the_specification_examples() {
    // Two events, the second with two data lines; a comment line alone is returned for forwarding.
    check(
        ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
        &[
            SseEvent { comments: vec![" test stream".into()], ..SseEvent::default() },
            SseEvent { data: Some("first event".into()), id: Some("1".into()), ..SseEvent::default() },
            SseEvent { data: Some("second event".into()), id: Some(String::new()), ..SseEvent::default() },
            SseEvent::data(" third event"),
        ],
    );
    check("data: YHOO\ndata: +2\ndata: 10\n\n", &[SseEvent::data("YHOO\n+2\n10")]);
    // `data` alone is an empty data line; two give one line break.
    check("data\n\ndata\ndata\n\n", &[SseEvent::data(""), SseEvent::data("\n")]);
}

#[test]
fn every_line_ending_and_a_byte_order_mark() {
    let expected = [SseEvent::named("add", "a\nb"), SseEvent::data("c")];
    check("event: add\ndata: a\ndata: b\n\ndata: c\n\n", &expected);
    check("event: add\r\ndata: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n", &expected);
    check("event: add\rdata: a\rdata: b\r\rdata: c\r\r", &expected);
    check("\u{feff}event: add\ndata: a\ndata: b\r\n\rdata: c\n\r\n", &expected);
    // Only a leading one is dropped.
    check("data: x\n\n\u{feff}data: y\n\n", &[SseEvent::data("x")]);
}

#[test]
fn fields_the_specification_ignores() {
    check(
        "retry: 1500\nretry: 15x\nid: a\0b\nfoo: bar\nevent\ndata: x\n\n",
        &[SseEvent { retry: Some(1500), event: Some(String::new()), data: Some("x".into()), ..SseEvent::default() }],
    );
    // A block of unknown fields only is nothing.
    check("foo: bar\n\ndata: y\n\n", &[SseEvent::data("y")]);
}

#[test]
fn limits_and_errors() {
    let mut parser = SseParser::new(32);
    assert_eq!(parser.push(b"data: 0123456789\n").unwrap(), vec![]);
    assert_eq!(parser.push(b"data: 0123456789\n"), Err(SseError::TooLarge { limit: 32 }));
    // A line without its end counts too: nothing grows past the limit.
    let mut parser = SseParser::new(32);
    assert_eq!(parser.push(&[b'a'; 40]), Err(SseError::TooLarge { limit: 32 }));
    // The limit is per event.
    let mut parser = SseParser::new(32);
    for _ in 0..10 {
        assert_eq!(parser.push(b"data: 0123456789\n\n").unwrap(), vec![SseEvent::data("0123456789")]);
    }
    let mut parser = SseParser::new(1024);
    assert!(matches!(parser.push(b"data: \xff\n\n"), Err(SseError::InvalidUtf8 { .. })));
    let mut parser = SseParser::new(1024);
    parser.push(b"data: [DONE]\n").unwrap();
    assert_eq!(parser.finish(), Err(SseError::Incomplete { bytes: 13 }));
    let mut parser = SseParser::new(1024);
    parser.push(b"data: partial").unwrap();
    assert_eq!(parser.finish(), Err(SseError::Incomplete { bytes: 13 }));
}

#[test]
fn write_makes_frames() {
    let event = SseEvent {
        event: Some("message\r\nid: forged".into()),
        data: Some("line one\nline two\r\nthree\r".into()),
        id: Some("7".into()),
        retry: Some(10),
        comments: vec![" keep-alive".into(), "two\nlines".into()],
    };
    let frame = String::from_utf8(event.to_bytes()).unwrap();
    assert_eq!(
        frame,
        ": keep-alive\n:two\n:lines\nevent: messageid: forged\nid: 7\nretry: 10\ndata: line one\ndata: line two\ndata: three\ndata: \n\n"
    );
}

fn event() -> impl Strategy<Value = SseEvent> {
    let text = "[^\r\n\u{0}]{0,12}";
    (
        proptest::option::of(text),
        proptest::option::of("\\PC{0,30}|[a\r\n ]{0,8}"),
        proptest::option::of(text),
        proptest::option::of(any::<u64>()),
        prop::collection::vec(text, 0..3),
    )
        .prop_map(|(event, data, id, retry, comments)| SseEvent { event, data, id, retry, comments })
        .prop_filter("not empty", |event| !event.is_empty())
}

proptest! {
    #[test]
    fn written_events_parse_back(events in prop::collection::vec(event(), 0..6), cuts in prop::collection::vec(0usize..400, 0..8)) {
        let mut stream = Vec::new();
        for event in &events {
            event.write(&mut stream);
        }
        let mut cuts = cuts;
        cuts.sort_unstable();
        let parsed = parse(&stream, &cuts).unwrap();
        // Data line breaks of any kind come back as LF.
        let expected: Vec<SseEvent> = events
            .into_iter()
            .map(|mut event| {
                event.data = event.data.map(|data| lines(&data).collect::<Vec<_>>().join("\n"));
                event.comments = event.comments.iter().flat_map(|comment| lines(comment).map(str::to_string)).collect();
                event
            })
            .collect();
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn any_bytes_never_panic(stream in prop::collection::vec(any::<u8>(), 0..200), cut in 0usize..200) {
        let _ = parse(&stream, &[cut]);
    }
}
