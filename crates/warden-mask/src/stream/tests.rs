//! Streaming gives what masking the whole text gives, whatever the cuts; what is held back and for how long; the
//! window and its exceptions; bytes and UTF-8.

use proptest::prelude::*;
use proptest::strategy::Strategy as _;

use super::*;
use crate::{CustomDetector, MaskerConfig, Strategy};

const KEY: [u8; 32] = [7; 32];

fn masker() -> Masker {
    Masker::new(&MaskerConfig::all(KEY)).expect("the built-in detectors compile")
}

/// Every built-in detector with `redact`, so that a masked value shows nothing of itself.
fn redacting() -> Masker {
    let strategies = Detector::ALL.into_iter().map(|detector| (detector, Strategy::Redact)).collect();
    Masker::new(&MaskerConfig { strategies, ..MaskerConfig::all(KEY) }).expect("compiles")
}

fn with_custom() -> Masker {
    let account = CustomDetector {
        name: "account".into(),
        pattern: r"\bACC-[0-9]{8}\b".into(),
        validator: None,
        keywords: Vec::new(),
        context_window: None,
        strategy: None,
    };
    let employee = CustomDetector {
        name: "employee_id".into(),
        pattern: r"\b[0-9]{6}\b".into(),
        keywords: vec!["employee".into()],
        context_window: Some(20),
        ..account.clone()
    };
    Masker::new(&MaskerConfig { custom: vec![account, employee], ..MaskerConfig::all(KEY) }).expect("compiles")
}

/// The text cut before each offset of `cuts` (sorted, deduplicated, on any byte), pushed as bytes; what comes out,
/// how many findings were reported, and the most bytes held after any push.
fn stream(masker: &Masker, hold_back: usize, text: &str, cuts: &[usize]) -> (String, usize, usize, u64) {
    let mut streamer = StreamMasker::new(masker.clone(), hold_back);
    let mut out = Vec::new();
    let mut count = 0;
    let mut most_held = 0;
    let mut from = 0;
    for &cut in cuts.iter().chain([&text.len()]) {
        if cut < from || cut > text.len() {
            continue;
        }
        out.extend(streamer.push_bytes(&text.as_bytes()[from..cut], &mut |_| count += 1).expect("UTF-8"));
        most_held = most_held.max(streamer.held());
        from = cut;
    }
    out.extend(streamer.finish_bytes(&mut |_| count += 1).expect("UTF-8"));
    let overflows = streamer.overflows();
    (String::from_utf8(out).expect("UTF-8 out"), count, most_held, overflows)
}

/// Streaming `text` cut at any one byte, and in pieces of 1 to 7 bytes, gives `masker.mask(text)` and reports each
/// finding once.
fn check_every_split(masker: &Masker, text: &str) {
    let expected = masker.mask(text);
    let findings = masker.find(text).len();
    for cut in 0..=text.len() {
        let (out, count, _, _) = stream(masker, DEFAULT_HOLD_BACK, text, &[cut]);
        assert_eq!(out, expected, "cut at {cut} of {text:?}");
        assert_eq!(count, findings, "cut at {cut} of {text:?}");
    }
    for size in 1..=7 {
        let cuts: Vec<usize> = (size..text.len()).step_by(size).collect();
        let (out, count, _, overflows) = stream(masker, DEFAULT_HOLD_BACK, text, &cuts);
        assert_eq!(out, expected, "pieces of {size} of {text:?}");
        assert_eq!(count, findings);
        assert_eq!(overflows, 0);
    }
}

const ANSWER: &str =
    "Sure. Write to Jane Roe at jane.roe@example.com or call +1 415 555 0100; her card is 4111 1111 1111 1111.";

#[test]
fn the_default_answer_streams_as_it_masks_whole() {
    let masker = masker();
    check_every_split(&masker, ANSWER);
    assert_eq!(
        masker.mask(ANSWER),
        "Sure. Write to Jane Roe at ***@example.com or call [PHONE]; her card is **** **** **** 1111."
    );
}

/// A byte stream cut inside a character holds that character's first bytes too: they count against the window, which
/// the masker keeps by releasing as much more text (found by the property test below).
#[test]
fn an_incomplete_character_counts_against_the_window() {
    let masker = redacting();
    let text = "0a(( GB82WEST12345698765432ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789\u{1F300} and on";
    let inside = text.find('\u{1F300}').unwrap() + 1;
    // Cut one byte into the emoji, and that byte alone after the text before it.
    for cuts in [vec![inside], vec![inside - 1, inside]] {
        let (out, _, most_held, _) = stream(&masker, 48, text, &cuts);
        assert!(most_held <= 48, "held {most_held} with cuts {cuts:?}");
        assert_eq!(out, masker.mask(text), "{cuts:?}");
    }
}

#[test]
fn values_of_every_detector_split_anywhere() {
    let masker = masker();
    for text in [
        "mail jane.doe@example.com, then j+tag@mail.example.co.uk.",
        "call (212) 555-0123 or 212.555.0123 or 06 12 34 56 78 or +44 20 7946 0958 12345 678",
        "cards 4111-1111-1111-1111 and 3782 822463 10005 and ref 2024-4111-1111-1111-1111",
        "IBAN DE89 3704 0044 0532 0130 00 PAID and GB82WEST12345698765432",
        "ssn 123-45-6789 but not 12-123-45-6789",
        "hosts 192.168.1.1, 1.2.3.4.5, version 1.2.3.4, 2001:db8::1 and ::ffff:192.0.2.128",
        "keys AKIAIOSFODNN7EXAMPLE ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "aws secret key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY done",
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U end",
        "openai sk-proj-abcdefghij0123456789ABCDEFGHIJ and anthropic sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123",
        "slack https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX ok",
        "✉️jane@example.com✉️ карта 4111 1111 1111 1111 — 电话：+86 10 6552 9988。",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----\nand then prose, with words.",
        "{\"email\":\"jane@example.com\",\"card\":\"4111111111111111\",\"note\":\"call +1 212 555 0123\"}",
    ] {
        check_every_split(&masker, text);
    }
}

#[test]
fn custom_detectors_with_keywords_and_unicode_boundaries() {
    let masker = with_custom();
    for text in [
        "Accounts ACC-12345678 and ACC-1234567 and xACC-12345678.",
        "Employee no. 123456 and order 654321; employee 000001.",
        "Счёт ACC-12345678 für Müller, employee № 123456 — 日本",
    ] {
        check_every_split(&masker, text);
    }
}

#[test]
fn a_keyword_released_long_before_its_value_still_counts() {
    let masker = masker();
    let text = "aws secret: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    // The keyword goes out on its own first; the key arrives later.
    let (out, count, _, _) = stream(&masker, DEFAULT_HOLD_BACK, text, &[11, 12, 20]);
    assert_eq!(out, "aws secret: [AWS_SECRET_KEY]");
    assert_eq!(count, 1);
}

#[test]
fn prose_is_released_up_to_its_last_word() {
    let masker = masker();
    let mut streamer = StreamMasker::new(masker, DEFAULT_HOLD_BACK);
    let mut out = streamer.push("The delivery could be moved to Thursday afternoon", &mut |_| {});
    assert_eq!(out, "The delivery could be moved to Thursday ");
    assert_eq!(streamer.held(), "afternoon".len());
    out.push_str(&streamer.push(", between two and four. ", &mut |_| {}));
    // Ending in a space, nothing can be in progress: all of it goes.
    assert_eq!(out, "The delivery could be moved to Thursday afternoon, between two and four. ");
    assert_eq!(streamer.held(), 0);
    out.push_str(&streamer.push("Thanks", &mut |_| {}));
    assert_eq!(out, "The delivery could be moved to Thursday afternoon, between two and four. ");
    assert_eq!(streamer.held(), "Thanks".len());
    out.push_str(&streamer.finish(&mut |_| {}));
    assert_eq!(out, "The delivery could be moved to Thursday afternoon, between two and four. Thanks");
}

#[test]
fn a_number_is_held_while_it_could_become_a_phone_or_a_card() {
    let masker = redacting();
    let mut streamer = StreamMasker::new(masker, DEFAULT_HOLD_BACK);
    assert_eq!(streamer.push("call +1 415 ", &mut |_| {}), "call ");
    // Settled once a few bytes follow it: another group of digits could still have extended it.
    assert_eq!(streamer.push("555 0100", &mut |_| {}), "");
    // Prose after it goes at once, but for its last word.
    assert_eq!(streamer.push(" now, ok", &mut |_| {}), "[PHONE] now, ");
    assert_eq!(streamer.push(". Card 4111 1111 ", &mut |_| {}), "ok. Card ");
    assert_eq!(streamer.push("1111 1111", &mut |_| {}), "");
    assert_eq!(streamer.push(" thanks", &mut |_| {}), "[CARD] ");
    assert_eq!(streamer.finish(&mut |_| {}), "thanks");
}

/// A PEM block with `lines` lines of base64.
fn pem_block(lines: usize) -> String {
    let mut block = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in 0..lines {
        block.push_str(&format!("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC{line:013}\n"));
    }
    block.push_str("-----END PRIVATE KEY-----");
    block
}

#[test]
fn a_pem_block_is_held_whole_beyond_the_window() {
    let masker = masker();
    let text = format!("Here is the key:\n{}\nKeep it safe.", pem_block(50));
    assert!(text.len() > 3 * DEFAULT_HOLD_BACK);
    let cuts: Vec<usize> = (7..text.len()).step_by(7).collect();
    let (out, count, most_held, overflows) = stream(&masker, DEFAULT_HOLD_BACK, &text, &cuts);
    assert_eq!(out, "Here is the key:\n[PRIVATE_KEY]\nKeep it safe.");
    assert_eq!(out, masker.mask(&text));
    assert_eq!((count, overflows), (1, 0));
    assert!(most_held > DEFAULT_HOLD_BACK && most_held <= LONG_VALUE_CAP);
}

#[test]
fn an_over_long_pem_block_is_withheld_and_masking_resumes_after_it() {
    let masker = masker();
    let block = pem_block(400);
    assert!(block.len() > LONG_VALUE_CAP);
    let text = format!("Key:\n{block}\nMail jane@example.com.");
    let cuts: Vec<usize> = (64..text.len()).step_by(64).collect();
    let (out, count, most_held, _) = stream(&masker, DEFAULT_HOLD_BACK, &text, &cuts);
    // The whole text masked gives the same: the block is one finding.
    assert_eq!(out, "Key:\n[PRIVATE_KEY]\nMail ***@example.com.");
    assert_eq!(out, masker.mask(&text));
    assert_eq!(count, 2);
    assert!(most_held <= LONG_VALUE_CAP + 64);
    // A block that never ends is withheld to the end of the text.
    let open = format!("Key:\n{}", &block[..block.len() - 30]);
    let (out, _, _, _) = stream(&masker, DEFAULT_HOLD_BACK, &open, &cuts);
    assert_eq!(out, "Key:\n[PRIVATE_KEY]");
    // It stops at the first character that cannot be in a block; that is over-masking, never a leak.
    let broken = format!("{}\"}} and jane@example.com", &block[..LONG_VALUE_CAP + 500]);
    let (out, _, _, _) = stream(&masker, DEFAULT_HOLD_BACK, &broken, &cuts);
    assert_eq!(out, "[PRIVATE_KEY]\"} and ***@example.com");
}

#[test]
fn a_long_jwt_is_held_then_withheld() {
    let masker = masker();
    let payload = "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUgUm9lIn0".repeat(20);
    let jwt = format!("eyJhbGciOiJIUzI1NiJ9.{payload}.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U");
    assert!(jwt.len() > 2 * DEFAULT_HOLD_BACK);
    let text = format!("Bearer {jwt} sent");
    let cuts: Vec<usize> = (5..text.len()).step_by(5).collect();
    let (out, _, _, overflows) = stream(&masker, DEFAULT_HOLD_BACK, &text, &cuts);
    assert_eq!(out, "Bearer [JWT] sent");
    assert_eq!(overflows, 0);
    let huge = format!("eyJhbGciOiJIUzI1NiJ9.{}.sig", payload.repeat(20));
    assert!(huge.len() > LONG_VALUE_CAP);
    let text = format!("Bearer {huge} sent");
    let (out, _, most_held, _) = stream(&masker, DEFAULT_HOLD_BACK, &text, &cuts);
    assert_eq!(out, "Bearer [JWT] sent");
    assert!(most_held <= LONG_VALUE_CAP + 5);
}

#[test]
fn beyond_the_window_the_oldest_bytes_go_and_no_more_than_the_window_is_held() {
    // A custom pattern that can run long: beyond the window, the oldest part of the candidate is released.
    let long = CustomDetector {
        name: "ticket".into(),
        pattern: r"T-[a-z]{1,500}-[0-9]{4}".into(),
        validator: None,
        keywords: Vec::new(),
        context_window: None,
        strategy: None,
    };
    let masker = Masker::new(&MaskerConfig { custom: vec![long], ..MaskerConfig::all(KEY) }).unwrap();
    let text = format!("see T-{}-1234 and jane@example.com", "x".repeat(100));
    let cuts: Vec<usize> = (3..text.len()).step_by(3).collect();
    let (out, _, most_held, overflows) = stream(&masker, 32, &text, &cuts);
    assert!(overflows > 0);
    assert!(most_held <= 32);
    // The candidate longer than the window was cut; the short value after it was still masked whole.
    assert!(out.ends_with(" and ***@example.com"), "{out}");
    // With a window that fits it, the same text streams exactly.
    let (out, _, _, overflows) = stream(&masker, DEFAULT_HOLD_BACK, &text, &cuts);
    assert_eq!((out.as_str(), overflows), ("see [TICKET] and ***@example.com", 0));
}

#[test]
fn bytes_hold_an_incomplete_character_and_refuse_invalid_utf8() {
    let masker = masker();
    let text = "é日本 jane@example.com ✉️";
    // Every byte on its own: characters are split everywhere.
    let cuts: Vec<usize> = (1..text.len()).collect();
    let (out, _, _, _) = stream(&masker, DEFAULT_HOLD_BACK, text, &cuts);
    assert_eq!(out, "é日本 ***@example.com ✉️");

    let mut streamer = StreamMasker::new(masker.clone(), DEFAULT_HOLD_BACK);
    // "ok " is settled; the incomplete character is held.
    assert_eq!(streamer.push_bytes(b"ok \xE6\x97", &mut |_| {}).unwrap(), b"ok ");
    assert_eq!(streamer.held(), 2);
    assert_eq!(streamer.push_bytes(b"\xA5 \xFF", &mut |_| {}), Err(StreamError::InvalidUtf8 { offset: 7 }));

    let mut streamer = StreamMasker::new(masker.clone(), DEFAULT_HOLD_BACK);
    assert_eq!(streamer.push_bytes(b"ab \xE6", &mut |_| {}).unwrap(), b"ab ");
    assert_eq!(streamer.push_bytes(b"A", &mut |_| {}), Err(StreamError::InvalidUtf8 { offset: 3 }));

    let mut streamer = StreamMasker::new(masker, DEFAULT_HOLD_BACK);
    streamer.push_bytes(b"ab \xE6\x97", &mut |_| {}).unwrap();
    assert_eq!(streamer.finish_bytes(&mut |_| {}), Err(StreamError::TruncatedUtf8 { offset: 3 }));
}

#[test]
fn a_finished_masker_starts_a_new_text() {
    let masker = masker();
    let mut streamer = StreamMasker::new(masker, DEFAULT_HOLD_BACK);
    let first = streamer.push("mail jane@exa", &mut |_| {}) + &streamer.finish(&mut |_| {});
    assert_eq!(first, "mail jane@exa");
    let second = streamer.push("mple.com", &mut |_| {}) + &streamer.finish(&mut |_| {});
    assert_eq!(second, "mple.com");
}

#[test]
fn word_boundaries_are_left_out_of_the_walk() {
    assert_eq!(without_word_boundaries(r"\bACC-\d+\b"), r"ACC-\d+");
    assert_eq!(without_word_boundaries(r"\\b\B\<x\>\b{start}y"), r"\\bxy");
    assert_eq!(without_word_boundaries(r"a\"), r"a\");
}

/// Values the detectors find, to plant in random text.
const PLANTED: &[&str] = &[
    "jane.roe@example.com",
    "j+tag@mail.example.co.uk",
    "+1 415 555 0100",
    "+44 20 7946 0958",
    "(212) 555-0123",
    "06 12 34 56 78",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5555555555554444",
    "123-45-6789",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "192.168.10.77",
    "2001:db8::8a2e:370:7334",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "sk-proj-abcdefghij0123456789ABCDEFGHIJ",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oNYxb6RSfgnuoAoGCCqGSM49\n-----END EC PRIVATE KEY-----",
];

fn filler() -> impl proptest::strategy::Strategy<Value = String> {
    prop_oneof![
        Just(" ".to_string()),
        Just(", ".to_string()),
        Just("\n".to_string()),
        Just(" é ".to_string()),
        Just(" 日本語 ".to_string()),
        Just("\", \"".to_string()),
        Just(" aws secret ".to_string()),
        "[ a-zA-Z0-9.,:;@+()-]{0,16}",
        "\\PC{0,12}",
    ]
}

fn planted_text() -> impl proptest::strategy::Strategy<Value = String> {
    (prop::collection::vec((filler(), prop::sample::select(PLANTED.to_vec())), 1..6), filler()).prop_map(
        |(parts, tail)| {
            let mut text = String::new();
            for (gap, value) in parts {
                text.push_str(&gap);
                text.push_str(value);
            }
            text.push_str(&tail);
            text
        },
    )
}

proptest! {
    #[test]
    fn streaming_equals_masking_the_whole(
        text in planted_text(),
        cuts in prop::collection::vec(0usize..400, 0..40),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|cut| *cut <= text.len()).collect();
        cuts.sort_unstable();
        cuts.dedup();
        for masker in [masker(), redacting(), with_custom()] {
            let (out, count, most_held, overflows) = stream(&masker, DEFAULT_HOLD_BACK, &text, &cuts);
            prop_assert_eq!(&out, &masker.mask(&text));
            prop_assert_eq!(count, masker.find(&text).len());
            prop_assert_eq!(overflows, 0);
            prop_assert!(most_held <= DEFAULT_HOLD_BACK);
        }
    }

    /// Near misses everywhere: digits and separators (phones, cards, IBANs, addresses), dotted words and `@`.
    #[test]
    fn streaming_equals_masking_the_whole_on_near_misses(
        text in "([0-9]{1,5}|[ .:()+-]|[A-Z]{2}[0-9]{2}|[a-z]{1,4}|@|\\.|é){0,60}",
        cuts in prop::collection::vec(0usize..200, 0..30),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|cut| *cut <= text.len()).collect();
        cuts.sort_unstable();
        cuts.dedup();
        for masker in [masker(), with_custom()] {
            let (out, count, _, overflows) = stream(&masker, DEFAULT_HOLD_BACK, &text, &cuts);
            prop_assert_eq!(&out, &masker.mask(&text));
            prop_assert_eq!(count, masker.find(&text).len());
            prop_assert_eq!(overflows, 0);
        }
    }

    #[test]
    fn a_small_window_holds_no_more_and_leaks_no_short_value(
        text in planted_text(),
        cuts in prop::collection::vec(0usize..400, 0..40),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|cut| *cut <= text.len()).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let masker = redacting();
        let (out, _, most_held, _) = stream(&masker, 48, &text, &cuts);
        let long_value = text.contains("-----BEGIN") || text.contains("eyJ");
        prop_assert!(most_held <= 48 || long_value, "held {}", most_held);
        // A value shorter than the window shows no more often than it does in the whole text masked (where it may
        // show unmasked elsewhere, where it is not a finding).
        let whole = masker.mask(&text);
        for finding in masker.find(&text) {
            let value = &text[finding.range];
            if value.len() <= 48 - LOOKAHEAD {
                prop_assert!(out.matches(value).count() <= whole.matches(value).count(), "{:?} leaked in {:?}", value, out);
            }
        }
    }
}
