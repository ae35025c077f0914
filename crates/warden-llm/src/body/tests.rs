//! Plain bodies by content type, cut at every byte: JSON stays valid JSON with its string values masked (escapes
//! included), text is masked as a stream, event streams event by event, binary passes; and the errors.

use proptest::prelude::*;
use warden_mask::{Masker, MaskerConfig, DEFAULT_HOLD_BACK};

use super::*;

fn detectors() -> Masker {
    Masker::new(&MaskerConfig::all([7; 32])).expect("the built-in detectors compile")
}

/// `body` of `content_type` cut before each offset of `cuts`.
fn mask(content_type: Option<&str>, body: &[u8], cuts: &[usize]) -> Result<Vec<u8>, BodyError> {
    let mut masker = BodyMasker::new(content_type, detectors(), DEFAULT_HOLD_BACK);
    let mut out = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain([&body.len()]) {
        if cut < from || cut > body.len() {
            continue;
        }
        out.extend(masker.push(&body[from..cut])?);
        from = cut;
    }
    out.extend(masker.finish()?);
    Ok(out)
}

/// Whole and cut at every byte, `body` masks to `expected`.
fn check(content_type: &str, body: &str, expected: &str) {
    for cut in 0..=body.len() {
        let out = mask(Some(content_type), body.as_bytes(), &[cut]).unwrap_or_else(|error| panic!("{error}: {body}"));
        assert_eq!(String::from_utf8(out).unwrap(), expected, "{body:?} cut at {cut}");
    }
    let every: Vec<usize> = (1..body.len()).collect();
    let out = mask(Some(content_type), body.as_bytes(), &every).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), expected, "{body:?} byte by byte");
}

#[test]
fn content_types() {
    let cases = [
        (Some("application/json"), BodyKind::Json),
        (Some("Application/JSON; charset=utf-8"), BodyKind::Json),
        (Some("application/problem+json"), BodyKind::Json),
        (Some("application/x-ndjson"), BodyKind::Json),
        (Some("text/event-stream"), BodyKind::EventStream),
        (Some("text/plain; charset=utf-8"), BodyKind::Text),
        (Some("text/html"), BodyKind::Text),
        (Some("application/xml"), BodyKind::Text),
        (Some("application/atom+xml"), BodyKind::Text),
        (Some("application/x-www-form-urlencoded"), BodyKind::Text),
        (Some("image/png"), BodyKind::Binary),
        (Some("application/pdf"), BodyKind::Binary),
        (Some("application/octet-stream"), BodyKind::Unknown),
        (Some("multipart/form-data; boundary=x"), BodyKind::Multipart),
        (Some("Multipart/Mixed"), BodyKind::Multipart),
        (Some(""), BodyKind::Unknown),
        (None, BodyKind::Unknown),
    ];
    for (content_type, kind) in cases {
        assert_eq!(BodyKind::of(content_type), kind, "{content_type:?}");
    }
}

#[test]
fn json_string_values_are_masked_and_the_document_stays_valid() {
    check(
        "application/json",
        r#"{"name": "Jane", "email": "jane.roe@example.com", "tags": ["+1 415 555 0100", true, null, -1.5e3]}"#,
        r#"{"name": "Jane", "email": "***@example.com", "tags": ["[PHONE]", true, null, -1.5e3]}"#,
    );
    // Keys are copied as they are, escapes and all; a value found in a key is not masked.
    check(
        "application/json",
        r#"{"jane@example.com": 1, "k\"ey\\": "v"}"#,
        r#"{"jane@example.com": 1, "k\"ey\\": "v"}"#,
    );
    // A card sent as a number becomes a string of its masked form.
    check("application/json", r#"{"card": 4111111111111111, "n": 42}"#, r#"{"card": "************1111", "n": 42}"#);
}

#[test]
fn escapes_are_decoded_before_masking_and_encoded_after() {
    // Raw, `\n` glues its `n` to the address, which would give `\***@…`, an invalid escape.
    check("application/json", r#"["Hi\njane@example.com\tok"]"#, r#"["Hi\n***@example.com\tok"]"#);
    // An escaped `@` hides nothing.
    check("application/json", r#"["jane\u0040example.com"]"#, r#"["***@example.com"]"#);
    check("application/json", r#"["\"jane@example.com\" \\ \/"]"#, r#"["\"***@example.com\" \\ /"]"#);
    // Surrogate pairs join; a lone surrogate becomes U+FFFD; control characters are escaped again.
    check("application/json", r#"["\ud83d\ude00 \ud800x \udc00 \u0001"]"#, "[\"😀 \u{fffd}x \u{fffd} \\u0001\"]");
    check("application/json", r#"["\ud83d"]"#, "[\"\u{fffd}\"]");
    check("application/json", r#"["é日本 +44 20 7946 0958"]"#, r#"["é日本 [PHONE]"]"#);
}

#[test]
fn several_documents_in_one_body() {
    check(
        "application/x-ndjson",
        "{\"a\":\"jane@example.com\"}\n{\"b\":[1,2]}\n\"123-45-6789\"\n7\n",
        "{\"a\":\"***@example.com\"}\n{\"b\":[1,2]}\n\"[SSN]\"\n7\n",
    );
    check("application/json", "", "");
    check("application/json", " 4111111111111111 ", " \"************1111\" ");
    check("application/json", "4111111111111111", "\"************1111\"");
}

#[test]
fn what_is_not_json_is_an_error() {
    let refused = |body: &str| mask(Some("application/json"), body.as_bytes(), &[]).unwrap_err();
    assert_eq!(refused("{\"a\" 1}"), BodyError::InvalidJson { offset: 5, reason: "expected ':'" });
    assert_eq!(refused("[1,]"), BodyError::InvalidJson { offset: 3, reason: "expected a value" });
    assert_eq!(refused("{1:2}"), BodyError::InvalidJson { offset: 1, reason: "expected a key" });
    assert_eq!(refused("[01]"), BodyError::InvalidJson { offset: 3, reason: "an invalid number" });
    assert_eq!(refused("[tru]"), BodyError::InvalidJson { offset: 4, reason: "an invalid literal" });
    assert_eq!(refused("[\"a\\x\"]"), BodyError::InvalidJson { offset: 4, reason: "an invalid escape" });
    assert_eq!(refused("[\"a\nb\"]"), BodyError::InvalidJson { offset: 3, reason: "a control character in a string" });
    assert_eq!(
        refused("[1}"),
        BodyError::InvalidJson { offset: 2, reason: "expected ',' or the end of the container" }
    );
    assert_eq!(refused("{\"a\": [1, 2"), BodyError::TruncatedJson);
    assert_eq!(refused("\"open"), BodyError::TruncatedJson);
    assert_eq!(refused(&"[".repeat(MAX_DEPTH + 1)), BodyError::TooDeep { limit: MAX_DEPTH });
    assert_eq!(refused(&format!("[{}]", "1".repeat(MAX_NUMBER_BYTES + 1))), BodyError::NumberTooLong { limit: 128 });
    assert!(matches!(refused("[\"\u{0}\"]"), BodyError::InvalidJson { .. }));
    assert!(matches!(mask(Some("application/json"), b"[\"\xff\"]", &[]), Err(BodyError::InvalidUtf8 { .. })));
}

#[test]
fn text_is_masked_as_a_stream() {
    check(
        "text/plain",
        "Sure. Write to jane.roe@example.com or call +1 415 555 0100.\n",
        "Sure. Write to ***@example.com or call [PHONE].\n",
    );
    assert!(matches!(mask(Some("text/plain"), b"ok \xff", &[]), Err(BodyError::InvalidUtf8 { offset: 3 })));
    assert!(matches!(mask(Some("text/plain"), b"ok \xe6\x97", &[]), Err(BodyError::InvalidUtf8 { offset: 3 })));
}

#[test]
fn event_streams_are_masked_event_by_event() {
    check(
        "text/event-stream",
        ": hi jane@example.com\n\nevent: note\ndata: {\"to\": \"jane@example.com\", \"n\": 1}\n\ndata: call +1 415 555 0100\ndata: now\n\ndata: cut",
        ": hi ***@example.com\n\nevent: note\ndata: {\"to\":\"***@example.com\",\"n\":1}\n\ndata: call [PHONE]\ndata: now\n\n",
    );
}

#[test]
fn binary_passes_untouched_and_unknown_bodies_are_sniffed() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR jane@example.com";
    let masker = BodyMasker::new(Some("image/png"), detectors(), DEFAULT_HOLD_BACK);
    assert!(masker.passes_untouched());
    assert!(BodyMasker::for_content_type("image/png", detectors(), DEFAULT_HOLD_BACK).is_none());
    let sniffing = BodyMasker::for_content_type("", detectors(), DEFAULT_HOLD_BACK).expect("sniffed");
    assert_eq!(sniffing.kind(), BodyKind::Unknown);
    assert_eq!(mask(Some("image/png"), png, &[3]).unwrap(), png.to_vec());
    assert_eq!(mask(None, png, &[3]).unwrap(), png.to_vec());
    assert_eq!(mask(None, b"mail jane@example.com", &[7]).unwrap(), b"mail ***@example.com".to_vec());
    // Decided on the first bytes: a long text body is streamed once they are in.
    let long = format!("{}jane@example.com", "word ".repeat(200));
    let mut masker = BodyMasker::new(None, detectors(), DEFAULT_HOLD_BACK);
    let first = masker.push(long.as_bytes()).unwrap();
    assert_eq!(masker.kind(), BodyKind::Text);
    assert!(first.len() >= 990);
    let rest = masker.finish().unwrap();
    assert_eq!(String::from_utf8([first, rest].concat()).unwrap(), format!("{}***@example.com", "word ".repeat(200)));
    assert_eq!(masker.masked_count(), 1);
}

#[test]
fn octet_stream_bodies_are_sniffed_and_json_ones_masked_as_json() {
    // A batch file a client uploads as application/octet-stream: masked string by string, escapes kept whole.
    let jsonl = concat!(
        r#"{"custom_id":"1","body":{"messages":[{"role":"user","content":"write to\njane.roe@example.com"}]}}"#,
        "\n",
        r#"{"custom_id":"2","body":{"messages":[{"role":"user","content":"call +1 415 555 0100"}]}}"#,
        "\n",
    );
    let expected = jsonl.replace("jane.roe@example.com", "***@example.com").replace("+1 415 555 0100", "[PHONE]");
    for content_type in [Some("application/octet-stream"), None] {
        for cut in [1, 7, 200, jsonl.len() - 1] {
            let out = mask(content_type, jsonl.as_bytes(), &[cut]).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{content_type:?} cut at {cut}");
        }
    }
    let mut masker = BodyMasker::new(Some("application/octet-stream"), detectors(), DEFAULT_HOLD_BACK);
    masker.push(jsonl.repeat(4).as_bytes()).unwrap();
    assert_eq!(masker.kind(), BodyKind::Json);
    // Text that only begins like JSON is text; binary is still binary.
    let log = "[INFO] mail sent to jane.roe@example.com";
    let masked = mask(Some("application/octet-stream"), log.as_bytes(), &[3]).unwrap();
    assert_eq!(String::from_utf8(masked).unwrap(), log.replace("jane.roe", "***"));
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR jane@example.com";
    assert_eq!(mask(Some("application/octet-stream"), png, &[3]).unwrap(), png.to_vec());
}

/// A JSON value with planted values in its strings and numbers.
fn value() -> impl Strategy<Value = serde_json::Value> {
    let planted = prop::sample::select(vec![
        "jane.roe@example.com",
        "+1 415 555 0100",
        "4111 1111 1111 1111",
        "DE89 3704 0044 0532 0130 00",
        "123-45-6789",
        "é\n\"\\\u{1}\u{1F600}",
        "plain words",
    ]);
    let text = (planted, "[ a-z\n\"\\\\/é]{0,8}").prop_map(|(value, gap)| format!("{gap}{value}{gap}"));
    let leaf = prop_oneof![
        text.prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::from(4111111111111111u64)),
        any::<bool>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::vec(("[a-z@]{1,6}", inner), 0..6)
                .prop_map(|members| serde_json::Value::Object(members.into_iter().collect())),
        ]
    })
}

/// What masking the decoded values gives: each string masked, each number with a finding turned into a string.
fn expected(value: &serde_json::Value, masker: &Masker) -> serde_json::Value {
    match value {
        serde_json::Value::String(text) => serde_json::Value::from(masker.mask(text).into_owned()),
        serde_json::Value::Number(number) => {
            let digits = number.to_string();
            match masker.mask(&digits) {
                std::borrow::Cow::Borrowed(_) => value.clone(),
                std::borrow::Cow::Owned(masked) => serde_json::Value::from(masked),
            }
        }
        serde_json::Value::Array(items) => items.iter().map(|item| expected(item, masker)).collect(),
        serde_json::Value::Object(members) => {
            members.iter().map(|(name, member)| (name.clone(), expected(member, masker))).collect()
        }
        other => other.clone(),
    }
}

proptest! {
    #[test]
    fn any_json_cut_anywhere_stays_valid_and_masked(
        value in value(),
        pretty in any::<bool>(),
        cuts in prop::collection::vec(0usize..600, 0..12),
    ) {
        let body = if pretty { serde_json::to_vec_pretty(&value).unwrap() } else { serde_json::to_vec(&value).unwrap() };
        let mut cuts = cuts;
        cuts.sort_unstable();
        let out = mask(Some("application/json"), &body, &cuts).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON out");
        prop_assert_eq!(parsed, expected(&value, &detectors()));
    }

    #[test]
    fn any_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..100), cut in 0usize..100) {
        for content_type in ["application/json", "text/plain", "text/event-stream"] {
            let _ = mask(Some(content_type), &body, &[cut]);
        }
        let _ = mask(None, &body, &[cut]);
    }

    /// Well-formed forms of text, JSON, untyped and binary parts, cut anywhere: the same output, every planted value
    /// masked except in the binary parts, which pass byte for byte, and the parts all there.
    #[test]
    fn any_form_cut_anywhere_is_masked_part_by_part(
        parts in prop::collection::vec((0u8..4, prop::collection::vec(prop::sample::select(vec![
            "jane.roe@example.com", " ", "word", "\r\n", "--", "-", "--XyZ-", "é",
        ]), 0..12)), 1..6),
        cuts in prop::collection::vec(0usize..2000, 0..8),
    ) {
        let planted = "jane.roe@example.com";
        let mut body = String::new();
        let mut binary_planted = 0;
        for (kind, pieces) in &parts {
            // Apart, as values are in text (two addresses glued together read as one with an odd domain).
            let text = pieces.join(" ");
            body.push_str("--XyZ\r\n");
            match kind {
                0 => body.push_str(&format!("Content-Type: text/plain\r\n\r\n{text}")),
                1 => {
                    binary_planted += text.matches(planted).count();
                    body.push_str(&format!("Content-Type: application/octet-stream\r\n\r\n\u{0}{text}"));
                }
                2 => body.push_str(&format!("\r\n{text}")),
                _ => body.push_str(&format!(
                    "Content-Type: application/json\r\n\r\n{}",
                    serde_json::to_string(&serde_json::json!({ "text": text })).unwrap()
                )),
            }
            body.push_str("\r\n");
        }
        body.push_str("--XyZ--\r\n");
        let mut sorted = cuts.clone();
        sorted.sort_unstable();
        let content_type = Some("multipart/form-data; boundary=XyZ");
        let whole = mask(content_type, body.as_bytes(), &[]).expect("a well-formed form");
        let cut = mask(content_type, body.as_bytes(), &sorted).expect("a well-formed form, cut");
        prop_assert_eq!(&whole, &cut);
        let out = String::from_utf8(whole).expect("UTF-8 in, UTF-8 out");
        prop_assert_eq!(out.matches(planted).count(), binary_planted, "{}", out);
        prop_assert_eq!(out.matches("--XyZ\r\n").count(), parts.len(), "{}", out);
        prop_assert!(out.ends_with("\r\n--XyZ--\r\n"));
    }

    /// Bodies made of multipart's own pieces: never a panic, and the same outcome however the body is cut.
    #[test]
    fn multipart_pieces_mask_the_same_whatever_the_cuts(
        pieces in prop::collection::vec(prop::sample::select(vec![
            "--b", "--", "\r\n", "\r", "\n", " ", "Content-Type: text/plain", "Content-Type: application/json",
            "Content-Type: multipart/mixed; boundary=c", "--c", "X-Name: jane.roe@example.com", ":", "{\"a\": 1}",
            "jane.roe@example.com", "\u{0}", "4111111111111111",
        ]), 0..40),
        cuts in prop::collection::vec(0usize..400, 0..6),
    ) {
        let body = pieces.concat();
        let mut sorted = cuts.clone();
        sorted.sort_unstable();
        let content_type = Some("multipart/form-data; boundary=b");
        let whole = mask(content_type, body.as_bytes(), &[]);
        let cut = mask(content_type, body.as_bytes(), &sorted);
        match (whole, cut) {
            (Ok(whole), Ok(cut)) => prop_assert_eq!(whole, cut),
            (Err(_), Err(_)) => {}
            (whole, cut) => prop_assert!(false, "whole {:?}, cut {:?}", whole, cut),
        }
    }
}

/// A form as browsers, curl and HTTP libraries send it (CRLF line ends).
fn form(parts: &[&str]) -> String {
    let mut body = String::from("a preamble jane@example.com\r\n");
    for part in parts {
        body.push_str("--XyZ\r\n");
        body.push_str(part);
        body.push_str("\r\n");
    }
    body.push_str("--XyZ--\r\nan epilogue jane@example.com");
    body
}

#[test]
fn multipart_parts_are_masked_by_their_own_content_types() {
    let body = form(&[
        "Content-Disposition: form-data; name=\"note\"\r\n\r\ncall +1 415 555 0100 or write jane.roe@example.com",
        "Content-Disposition: form-data; name=\"file\"; filename=\"jane.roe@example.com.csv\"\r\n\
         Content-Type: text/csv\r\n\r\nname,card\r\nJane,4111111111111111\r\n",
        "Content-Disposition: form-data; name=\"doc\"\r\nContent-Type: application/json\r\n\r\n\
         {\"email\": \"jane.roe@example.com\", \"n\": 1}",
        "Content-Disposition: form-data; name=\"blob\"; filename=\"b.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n\x00\x01jane.roe@example.com",
        "\r\nno headers: jane.roe@example.com",
    ]);
    let expected = "--XyZ\r\n\
        Content-Disposition: form-data; name=\"note\"\r\n\r\ncall [PHONE] or write ***@example.com\r\n\
        --XyZ\r\n\
        Content-Disposition: form-data; name=\"file\"; filename=\"***@example.com.csv\"\r\n\
        Content-Type: text/csv\r\n\r\nname,card\r\nJane,************1111\r\n\r\n\
        --XyZ\r\n\
        Content-Disposition: form-data; name=\"doc\"\r\nContent-Type: application/json\r\n\r\n\
        {\"email\": \"***@example.com\", \"n\": 1}\r\n\
        --XyZ\r\n\
        Content-Disposition: form-data; name=\"blob\"; filename=\"b.bin\"\r\n\
        Content-Type: application/octet-stream\r\n\r\n\x00\x01jane.roe@example.com\r\n\
        --XyZ\r\n\r\nno headers: ***@example.com\r\n\
        --XyZ--\r\n";
    check("multipart/form-data; boundary=XyZ", &body, expected);
    // The boundary may be quoted, and the body may start with its first delimiter.
    let body = "--a b\r\n\r\njane.roe@example.com\r\n--a b--";
    check("multipart/form-data; charset=utf-8; boundary=\"a b\"", body, "--a b\r\n\r\n***@example.com\r\n--a b--\r\n");
}

#[test]
fn a_multipart_part_may_be_multipart_itself() {
    let inner = "--in\r\nContent-Type: text/plain\r\n\r\nwrite jane.roe@example.com\r\n--in--";
    let body = format!("--out\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n{inner}\r\n--out--\r\n");
    let expected = "--out\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n\
        --in\r\nContent-Type: text/plain\r\n\r\nwrite ***@example.com\r\n--in--\r\n\r\n--out--\r\n";
    check("multipart/mixed; boundary=out", &body, expected);
    // Nested deeper than the limit: refused.
    let mut body = "jane.roe@example.com".to_string();
    for level in (0..=multipart::MAX_DEPTH).rev() {
        let content_type = if level == multipart::MAX_DEPTH {
            String::new()
        } else {
            format!("multipart/mixed; boundary=b{}", level + 1)
        };
        let header = if content_type.is_empty() { String::new() } else { format!("Content-Type: {content_type}\r\n") };
        body = format!("--b{level}\r\n{header}\r\n{body}\r\n--b{level}--");
    }
    let error = mask(Some("multipart/mixed; boundary=b0"), body.as_bytes(), &[]).expect_err("too deep");
    assert!(error.to_string().contains("nest deeper than 4 levels"), "{error}");
}

#[test]
fn a_multipart_body_that_cannot_be_masked_is_an_error() {
    let cases: [(&str, &str, &str); 8] = [
        ("multipart/form-data", "--x\r\n\r\na\r\n--x--", "no usable boundary"),
        ("multipart/form-data; boundary=\"\"", "--x\r\n\r\na\r\n--x--", "no usable boundary"),
        ("multipart/form-data; boundary=x", "--x\r\n\r\njane.roe@example.com", "ends before its close delimiter"),
        ("multipart/form-data; boundary=x", "no delimiter at all", "ends before its close delimiter"),
        ("multipart/form-data; boundary=x", "--x\r\n\r\na\r\n--xy\r\n", "other than CRLF or --"),
        (
            "multipart/form-data; boundary=x",
            "--x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\namFuZUBleGFtcGxlLmNvbQ==\r\n--x--",
            "Content-Transfer-Encoding base64 cannot be masked",
        ),
        ("multipart/form-data; boundary=x", "--x\r\nno colon here\r\n\r\na\r\n--x--", "has no colon"),
        (
            "multipart/form-data; boundary=x",
            "--x\r\nContent-Type: application/json\r\n\r\n{\"a\": \r\n--x--",
            "a part's body: the body ends inside a JSON value",
        ),
    ];
    for (content_type, body, reason) in cases {
        for cut in 0..=body.len() {
            let error = mask(Some(content_type), body.as_bytes(), &[cut]).expect_err(body);
            assert!(error.to_string().contains(reason), "{body:?} cut at {cut}: {error}");
        }
    }
    // A base64 part that is binary anyway passes as it is.
    let body = "--x\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--x--\r\n";
    check("multipart/form-data; boundary=x", body, body);
    // Headers are bounded.
    let body = format!("--x\r\nX-Long: {}\r\n\r\na\r\n--x--", "a".repeat(multipart::MAX_HEADER_BYTES));
    let error = mask(Some("multipart/form-data; boundary=x"), body.as_bytes(), &[]).expect_err("too long");
    assert!(error.to_string().contains("headers are longer than 16384 bytes"), "{error}");
    let error = mask(Some("multipart/form-data; boundary=x"), &body.as_bytes()[..9000], &[]).expect_err("cut");
    assert!(error.to_string().contains("ends before its close delimiter"), "{error}");
}

#[test]
fn a_multipart_body_holds_back_no_more_than_a_delimiter() {
    let mut masker = BodyMasker::new(Some("multipart/form-data; boundary=XyZ"), detectors(), DEFAULT_HOLD_BACK);
    let mut out = masker.push(b"--XyZ\r\nContent-Type: application/octet-stream\r\n\r\n").expect("headers");
    let blob = vec![0xAB_u8; 1 << 20];
    out.extend(masker.push(&blob).expect("a binary part streams"));
    // All but what could be the start of the next delimiter (`CRLF--XyZ`, 7 bytes) has gone out.
    let header = "--XyZ\r\nContent-Type: application/octet-stream\r\n\r\n".len();
    assert_eq!(out.len(), header + blob.len() - 6);
    out.extend(masker.push(b"\r\n--XyZ--\r\n").expect("the end"));
    out.extend(masker.finish().expect("complete"));
    assert!(out.ends_with(b"\xAB\xAB\r\n--XyZ--\r\n"));
}

#[test]
fn the_model_a_body_names() {
    let json = br#"{"model": "dall-e-3", "prompt": "a cat"}"#;
    assert_eq!(named_model("application/json", json), Ok(Some("dall-e-3".to_string())));
    assert_eq!(named_model("application/json", br#"{"file_id": "f"}"#), Ok(None));
    assert_eq!(named_model("application/json", br#"[1, 2]"#), Ok(None));
    assert!(named_model("application/json", br#"{"model": 3}"#).is_err());
    assert!(named_model("application/json", br#"{"model": "#).is_err());
    let form = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n\
        Content-Type: audio/mpeg\r\n\r\nID3\u{0}\r\n--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n\
        whisper-1\r\n--b--\r\n";
    assert_eq!(named_model("multipart/form-data; boundary=b", form.as_bytes()), Ok(Some("whisper-1".to_string())));
    let upload = "--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n--b--\r\n";
    assert_eq!(named_model("multipart/form-data; boundary=b", upload.as_bytes()), Ok(None));
    let cut = "--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n";
    assert!(named_model("multipart/form-data; boundary=b", cut.as_bytes()).is_err());
    assert!(named_model("multipart/form-data", upload.as_bytes()).is_err());
    assert_eq!(named_model("application/octet-stream", b"\x00model"), Ok(None));
    assert_eq!(named_model("image/png", b"{\"model\": \"x\"}"), Ok(None));
    // Without a type, JSON is still read: a provider may parse it whatever the type says.
    assert_eq!(named_model("", b"{\"model\": \"x\"}"), Ok(Some("x".to_string())));
    assert_eq!(named_model("application/octet-stream", b" {\"model\": \"x\"}"), Ok(Some("x".to_string())));
    assert!(named_model("", b"{\"model\": [\"x\"]}").is_err());
    assert_eq!(named_model("", b"model=x"), Ok(None));
}

/// Every string of `value`, keys too.
fn strings_of(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(text) => out.push(text.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|item| strings_of(item, out)),
        serde_json::Value::Object(members) => {
            for (key, member) in members {
                out.push(key.clone());
                strings_of(member, out);
            }
        }
        _ => {}
    }
}

proptest! {
    #[test]
    fn a_request_read_once_gives_every_text_and_a_record_cut_at_its_maximum(value in value(), max in 0usize..300) {
        let body = serde_json::to_vec(&value).unwrap();
        let mut read = RequestTexts::read("application/json", &body, max);
        let texts = read.texts().expect("JSON has texts").to_vec();
        let mut strings = Vec::new();
        strings_of(&value, &mut strings);
        for string in &strings {
            prop_assert!(texts.contains(string), "{:?} not in {:?}", string, texts);
        }
        let (record, cut) = read.take_record().expect("JSON has a record");
        let (whole, _) = RequestTexts::read("application/json", &body, 1 << 30).take_record().expect("a record");
        prop_assert!(record.len() <= max);
        prop_assert!(whole.starts_with(&record), "{:?} is not the start of {:?}", record, whole);
        prop_assert_eq!(cut, whole.len() > max);
    }

    #[test]
    fn any_bytes_of_any_type_are_read_without_a_panic(
        body in prop::collection::vec(any::<u8>(), 0..300),
        content_type in prop::sample::select(vec![
            "", "application/json", "text/plain", "application/octet-stream", "image/png",
            "multipart/form-data; boundary=x", "application/x-ndjson",
        ]),
        max in 0usize..64,
    ) {
        let mut read = RequestTexts::read(content_type, &body, max);
        if let Some((record, _)) = read.take_record() {
            prop_assert!(record.len() <= max);
        }
    }

    #[test]
    fn a_form_of_any_parts_has_a_record_cut_at_its_maximum(
        parts in prop::collection::vec((
            "[a-z]{1,4}",
            prop::sample::select(vec![
                "", "text/plain", "application/json", "image/png", "multipart/mixed; boundary=y",
            ]),
            any::<bool>(),
            "[a-zé€\"{}:, \n]{0,24}",
        ), 0..5),
        max in 0usize..80,
    ) {
        let mut body = String::new();
        for (name, content_type, base64, content) in &parts {
            body.push_str(&format!("--x\r\nContent-Disposition: form-data; name=\"{name}\"\r\n"));
            if !content_type.is_empty() {
                body.push_str(&format!("Content-Type: {content_type}\r\n"));
            }
            if *base64 {
                body.push_str("Content-Transfer-Encoding: base64\r\n");
            }
            body.push_str(&format!("\r\n{content}\r\n"));
        }
        body.push_str("--x--\r\n");
        let form = "multipart/form-data; boundary=x";
        let mut read = RequestTexts::read(form, body.as_bytes(), max);
        let (whole, _) = RequestTexts::read(form, body.as_bytes(), 1 << 30).take_record().expect("a form's record");
        let (record, cut) = read.take_record().expect("a form's record");
        prop_assert!(record.len() <= max);
        prop_assert!(whole.starts_with(&record), "{:?} is not the start of {:?}", record, whole);
        prop_assert_eq!(cut, whole.len() > max);
        prop_assert_eq!(whole.lines().count() >= parts.len(), true);
    }
}
