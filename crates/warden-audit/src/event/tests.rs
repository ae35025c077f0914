use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::testing::{chain, TestSigner};

fn golden_event() -> Event {
    Event {
        chain: "gw-1".into(),
        seq: 7,
        at: "2026-11-21T07:25:00.123456789Z".into(),
        kind: "statement".into(),
        session: Some("ses_1".into()),
        identity: Some("alice".into()),
        connection: None,
        run: None,
        node: Some("n\"1".into()),
        body: serde_json::from_str::<Value>(r#"{"z": 1, "a": {"y": [2.5, null, true], "b": "é\n"}}"#)
            .expect("valid JSON")
            .into(),
    }
}

/// The canonical bytes of `body` inside an otherwise fixed event.
fn canonical_body(body: Value) -> Vec<u8> {
    Event { body: body.into(), ..golden_event() }.canonical()
}

#[test]
fn canonical_encoding_is_pinned() {
    let canonical = golden_event().canonical();
    assert_eq!(
        String::from_utf8(canonical).expect("UTF-8"),
        r#"{"chain":"gw-1","seq":7,"at":"2026-11-21T07:25:00.123456789Z","kind":"statement","session":"ses_1","identity":"alice","connection":null,"run":null,"node":"n\"1","body":{"a":{"b":"é\n","y":[2.5,null,true]},"z":1}}"#
    );
}

#[test]
fn link_is_pinned() {
    // Computed outside Rust: sha256(b"warden-audit-v1\0" + 32 zero bytes + the canonical encoding above).
    assert_eq!(
        hex::encode(link(&GENESIS, &golden_event())),
        "76b14262c0d71f3dd37fe4e19dd1b9da49fc9f1b101776aca28415958a9282e7"
    );
    let sealed = Sealed::seal(&GENESIS, golden_event());
    assert_eq!(sealed.prev, "0".repeat(64));
    assert_eq!(sealed.hash, "76b14262c0d71f3dd37fe4e19dd1b9da49fc9f1b101776aca28415958a9282e7");
}

#[test]
fn canonical_encoding_ignores_body_key_order() {
    let one = serde_json::from_str(r#"{"b": {"d": [{"f": 1, "e": 2}], "c": null}, "a": "x"}"#).expect("valid JSON");
    let two = serde_json::from_str(r#"{"a": "x", "b": {"c": null, "d": [{"e": 2, "f": 1}]}}"#).expect("valid JSON");
    assert_eq!(canonical_body(one), canonical_body(two));
    let mut built = serde_json::Map::new();
    built.insert("b".into(), json!({"d": [{"f": 1, "e": 2}], "c": null}));
    built.insert("a".into(), json!("x"));
    let expected = canonical_body(Value::Object(built));
    let text = String::from_utf8(expected).expect("UTF-8");
    assert!(text.ends_with(r#""body":{"a":"x","b":{"c":null,"d":[{"e":2,"f":1}]}}}"#), "{text}");
}

#[test]
fn canonical_encoding_sorts_keys_by_bytes() {
    let text = String::from_utf8(canonical_body(json!({"é": 1, "z": 2, "Z": 3, "": 4}))).expect("UTF-8");
    assert!(text.ends_with(r#""body":{"":4,"Z":3,"z":2,"é":1}}"#), "{text}");
}

#[test]
fn records_round_trip_through_json_lines() {
    let signer = TestSigner::generate();
    let events = chain("gw-1", 4, json!([]));
    let checkpoint = signer.checkpoint(&events, 3);
    let mut records: Vec<Record> = events.iter().cloned().map(Record::Event).collect();
    records.insert(3, Record::Checkpoint(checkpoint.clone()));

    let text: String = records.iter().map(|record| record.to_line() + "\n").collect();
    let first = text.lines().next().expect("a line");
    assert!(first.starts_with(r#"{"type":"event","chain":"gw-1","seq":1,"#), "{first}");
    assert!(first.contains(r#""prev":"0000"#) && first.contains(r#""hash":""#), "{first}");
    let fourth = text.lines().nth(3).expect("a line");
    assert!(fourth.starts_with(r#"{"type":"checkpoint","chain":"gw-1","seq":3,"#), "{fourth}");

    for (line, record) in text.lines().zip(&records) {
        assert_eq!(&serde_json::from_str::<Record>(line).expect("a record"), record);
    }
    let (parsed_events, parsed_checkpoints) = parse_lines(&format!("\n{text}\n")).expect("parses");
    assert_eq!(parsed_events, events);
    assert_eq!(parsed_checkpoints, vec![checkpoint]);
    for (parsed, original) in parsed_events.iter().zip(&events) {
        assert_eq!(parsed.event.canonical(), original.event.canonical());
    }
}

#[test]
fn parse_lines_names_the_bad_line() {
    let good = Record::Event(chain("gw-1", 1, json!([])).remove(0)).to_line();
    let check = |text: String, line: usize| match parse_lines(&text) {
        Err(AuditError::Line { line: found, reason }) => assert_eq!(found, line, "{reason}"),
        other => panic!("expected an error on line {line}, got {other:?}"),
    };
    check(format!("{good}\nnot json\n"), 2);
    check(format!("{good}\n\n{{\"type\":\"nonsense\"}}\n"), 3);
    check(format!("{}\n", good.replace(r#""seq":1"#, r#""seq":"1""#)), 1);
    check(format!("{}\n", good.replace(r#""type":"event","#, "")), 1);
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |value| value.is_finite()).prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::String),
        "[\u{0}-\u{1f}\"\\\\a]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("\\PC{0,6}", inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// The same value with every object's members inserted in reverse order (which matters with preserve_order).
fn reversed(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(reversed).collect()),
        Value::Object(members) => {
            Value::Object(members.iter().rev().map(|(key, member)| (key.clone(), reversed(member))).collect())
        }
        other => other.clone(),
    }
}

proptest! {
    #[test]
    fn canonical_encoding_is_valid_json_independent_of_insertion_order(body in arbitrary_json()) {
        let canonical = canonical_body(body.clone());
        prop_assert_eq!(&canonical, &canonical_body(reversed(&body)));
        let parsed: Value = serde_json::from_slice(&canonical).expect("canonical encoding is JSON");
        prop_assert_eq!(&parsed["body"], &body);
    }

    #[test]
    fn canonical_encoding_survives_an_export(body in arbitrary_json()) {
        let sealed = Sealed::seal(&GENESIS, Event { body: body.into(), ..golden_event() });
        let line = Record::Event(sealed.clone()).to_line();
        let Record::Event(parsed) = serde_json::from_str::<Record>(&line).expect("a record") else {
            panic!("an event line read back as a checkpoint");
        };
        prop_assert_eq!(parsed.event.canonical(), sealed.event.canonical());
        prop_assert_eq!(hex::encode(link(&GENESIS, &parsed.event)), sealed.hash);
    }
}

/// A statement-like body written member by member, as the writer does.
fn written(text: &str, keys_in_order: bool) -> Body {
    let mut writer = BodyWriter::new();
    let decision = |writer: &mut BodyWriter| {
        writer.bool("allowed", false).strings("classes", &["read".into()]).strings("policies", &[]);
    };
    if keys_in_order {
        writer.object("decision", decision).number("duration_us", 17).optional_string("error", None);
        writer.value("result", Some(&json!({"rows": [["x"]], "columns": ["email"]}))).string("text", text);
    } else {
        writer.string("text", text).number("duration_us", 17).object("decision", decision);
        writer.value("result", Some(&json!({"rows": [["x"]], "columns": ["email"]}))).optional_string("error", None);
    }
    writer.finish()
}

#[test]
fn a_written_body_is_the_canonical_encoding_of_its_value() {
    for in_order in [true, false] {
        let body = written("SELECT 'é\"\n'", in_order);
        let value = json!({
            "text": "SELECT 'é\"\n'", "duration_us": 17, "error": null,
            "decision": {"policies": [], "classes": ["read"], "allowed": false},
            "result": {"columns": ["email"], "rows": [["x"]]},
        });
        assert_eq!(*body, value, "in order: {in_order}");
        assert_eq!(body.canonical(), Body::from(value).canonical(), "in order: {in_order}");
        assert_eq!(
            body.canonical(),
            r#"{"decision":{"allowed":false,"classes":["read"],"policies":[]},"duration_us":17,"error":null,"result":{"columns":["email"],"rows":[["x"]]},"text":"SELECT 'é\"\n'"}"#
        );
    }
}

#[test]
fn changing_a_body_re_encodes_it() {
    let mut event = golden_event();
    event.body = written("SELECT 1", true);
    let before = link(&GENESIS, &event);
    event.body["text"] = json!("DROP TABLE orders");
    assert!(event.body.canonical().ends_with(r#""text":"DROP TABLE orders"}"#), "{:?}", event.body);
    assert_ne!(link(&GENESIS, &event), before);
    let line = Record::Event(Sealed::seal(&GENESIS, event.clone())).to_line();
    assert!(line.contains(r#""text":"DROP TABLE orders""#), "{line}");
}

#[test]
fn written_arrays_and_embedded_bodies_are_canonical() {
    let rows = vec![vec![Some("a@b.c".to_string()), None], vec![Some("\u{1}\"".to_string()), Some(String::new())]];
    let columns = vec!["email".to_string(), "id".to_string()];
    type Set<'a> = (Option<&'a [String]>, &'a [Vec<Option<String>>]);
    let sets: [Set; 3] = [(Some(columns.as_slice()), rows.as_slice()), (None, &[]), (Some(&[]), &[vec![]])];
    let mut sample = BodyWriter::new();
    sample.number("cut", 4).objects("sets", sets, |set, (columns, rows)| {
        set.optional_strings("columns", columns).string_rows("rows", rows);
    });
    let sample = sample.finish();
    let mut outer = BodyWriter::new();
    outer.optional_number("rows", None).body("result", Some(&sample)).body("z", None);
    let outer = outer.finish();
    let expected = json!({
        "result": {"sets": [
            {"rows": [["a@b.c", null], ["\u{1}\"", ""]], "columns": ["email", "id"]},
            {"rows": [], "columns": null},
            {"rows": [[]], "columns": []},
        ], "cut": 4},
        "rows": null,
        "z": null,
    });
    assert_eq!(*outer, expected);
    assert_eq!(outer.canonical(), Body::from(expected).canonical());
}
