//! Detector tables (true positives and near misses), strategies, custom detectors, overlaps, UTF-8, and a property
//! test that masking never panics and never leaves a detected value behind.

use std::borrow::Cow;
use std::collections::HashMap;

use proptest::prelude::*;
use proptest::strategy::Strategy as _;

use crate::{CustomDetector, Detector, Finding, Kind, Masker, MaskerConfig, Selection, Strategy, Validator};

const KEY: [u8; 32] = [7; 32];

fn masker() -> Masker {
    Masker::new(&MaskerConfig::all(KEY)).expect("the built-in detectors compile")
}

fn redacting() -> Masker {
    let strategies = Detector::ALL.into_iter().map(|detector| (detector, Strategy::Redact)).collect();
    Masker::new(&MaskerConfig { strategies, ..MaskerConfig::all(KEY) }).expect("compiles")
}

/// What `masker` finds in `text`, as (kind, matched text).
fn found<'t>(masker: &Masker, text: &'t str) -> Vec<(Kind, &'t str)> {
    masker.find(text).into_iter().map(|Finding { kind, range }| (kind, &text[range])).collect()
}

/// `value` alone and inside a sentence is found whole, as `detector`.
fn check_positive(masker: &Masker, detector: Detector, value: &str) {
    for text in [value.to_string(), format!("see {value} here"), format!("é«{value}», 日本")] {
        assert_eq!(found(masker, &text), vec![(Kind::Builtin(detector), value)], "in {text:?}");
    }
}

/// Nothing at all is found in `text`.
fn check_negative(masker: &Masker, text: &str) {
    assert_eq!(found(masker, text), vec![], "in {text:?}");
}

const POSITIVES: &[(Detector, &str)] = &[
    (Detector::Email, "jane.doe@example.com"),
    (Detector::Email, "j+tag@mail.example.co.uk"),
    (Detector::Email, "X_Y-Z%1@sub-domain.example.org"),
    (Detector::Phone, "+1 212 555 0123"),
    (Detector::Phone, "+44 20 7946 0958"),
    (Detector::Phone, "+33612345678"),
    (Detector::Phone, "+49 (30) 901820"),
    (Detector::Phone, "(212) 555-0123"),
    (Detector::Phone, "212-555-0123"),
    (Detector::Phone, "212.555.0123"),
    (Detector::Phone, "06 12 34 56 78"),
    (Detector::Phone, "01.23.45.67.89"),
    (Detector::Phone, "020 7946 0958"),
    (Detector::Phone, "07700 900123"),
    (Detector::PaymentCard, "4111111111111111"),
    (Detector::PaymentCard, "4111 1111 1111 1111"),
    (Detector::PaymentCard, "4111-1111-1111-1111"),
    (Detector::PaymentCard, "5555555555554444"),
    (Detector::PaymentCard, "2223003122003222"),
    (Detector::PaymentCard, "3782 822463 10005"),
    (Detector::PaymentCard, "6011111111111117"),
    (Detector::PaymentCard, "3530111333300000"),
    (Detector::PaymentCard, "30569309025904"),
    (Detector::PaymentCard, "6200000000000005"),
    (Detector::UsSsn, "123-45-6789"),
    (Detector::UsSsn, "899-99-9999"),
    (Detector::Iban, "DE89 3704 0044 0532 0130 00"),
    (Detector::Iban, "DE89370400440532013000"),
    (Detector::Iban, "GB82 WEST 1234 5698 7654 32"),
    (Detector::Iban, "FR14 2004 1010 0505 0001 3M02 606"),
    (Detector::Iban, "NO9386011117947"),
    (Detector::Ipv4, "192.168.1.1"),
    (Detector::Ipv4, "10.0.0.255"),
    (Detector::Ipv4, "8.8.8.8"),
    (Detector::Ipv6, "2001:db8::1"),
    (Detector::Ipv6, "::1"),
    (Detector::Ipv6, "fe80::1ff:fe23:4567:890a"),
    (Detector::Ipv6, "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    (Detector::Ipv6, "::ffff:192.0.2.128"),
    (Detector::AwsAccessKeyId, "AKIAIOSFODNN7EXAMPLE"),
    (Detector::AwsAccessKeyId, "ASIAY34FZKBOKMUTVV7A"),
    (
        Detector::Jwt,
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ),
    (Detector::GithubToken, "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
    (Detector::GithubToken, "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"),
    (Detector::SlackToken, "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp"),
    (Detector::SlackToken, "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
    (Detector::OpenAiKey, "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56"),
    (Detector::OpenAiKey, "sk-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78St90Uv12"),
    (Detector::AnthropicKey, "sk-ant-api03-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56_Qr78-St90AA"),
    (Detector::StripeKey, "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    (Detector::StripeKey, "rk_test_4eC39HqLyjWDarjtT1zdp7dc"),
];

#[test]
fn true_positives() {
    let masker = masker();
    for (detector, value) in POSITIVES {
        check_positive(&masker, *detector, value);
    }
}

#[test]
fn pem_private_keys() {
    let masker = masker();
    for key in [
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F17\n\nMIIE+/a==\n-----END RSA PRIVATE KEY-----",
        // As it appears inside a JSON string.
        "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIIrY\\n-----END EC PRIVATE KEY-----",
    ] {
        check_positive(&masker, Detector::PemPrivateKey, key);
    }
    check_negative(&masker, "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----");
    check_negative(&masker, "-----BEGIN PRIVATE KEY----- but never ended");
}

#[test]
fn aws_secret_keys_need_context() {
    let masker = masker();
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    for text in [format!("aws_secret_access_key = {secret}"), format!("\"SecretAccessKey\": \"{secret}\"")] {
        assert_eq!(found(&masker, &text), vec![(Kind::Builtin(Detector::AwsSecretKey), secret)], "{text}");
    }
    // The same characters with no keyword nearby, a git digest, and a longer base64 run.
    check_negative(&masker, &format!("blob {secret} end"));
    check_negative(&masker, "aws commit 3f9a1c2b7d3f9a1c2b7d3f9a1c2b7d3f9a1c2b7d");
    check_negative(&masker, &format!("aws secret {secret}QQQQ"));
}

#[test]
fn near_misses() {
    let masker = masker();
    for text in [
        // Cards: not Luhn-valid; Luhn-valid but no issuer (an order id, a millisecond timestamp); inside longer runs.
        "order 4111111111111112",
        "order 1234567812345670",
        "ts 1700000000000",
        "ref 94111111111111111",
        "ref 41111111111111119",
        "ref 2024-4111-1111-1111-1111",
        "4111 1111 1111-1111",
        "x4111111111111111",
        // SSNs: invalid area, group, serial; advertising numbers; inside a longer dashed number.
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "123-00-4567",
        "123-45-0000",
        "078-05-1120",
        "12-123-45-6789",
        // IBANs: bad check digits, wrong length for the country, unknown country.
        "DE89 3704 0044 0532 0130 01",
        "DE89 3704 0044 0532 0130",
        "ZZ89 3704 0044 0532 0130 00",
        // Phones: dates, times, too short, too long, unseparated national digits.
        "on 2024-01-15 at 12:30:45",
        "call +12 345",
        "call +1234567890123456789",
        "call 555-0123",
        "id 0612345678",
        // IPs: octet out of range, longer dotted numbers (OIDs), versions, times, MAC addresses, code paths.
        "256.1.1.1",
        "oid 1.3.6.1.4.1",
        "version 1.2.3.4",
        "v1.2.3.4",
        "00:1A:2B:3C:4D:5E",
        "std::vec::Vec and a::b",
        "deadbeef::cafe",
        // Emails without a dotted domain or with a one-letter TLD.
        "root@localhost",
        "a@b.c",
        // Credentials: too short, wrong prefix, words.
        "AKIA1234",
        "ghp_short",
        "sk-learn-is-a-library-name-here",
        "pk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "eyJhbGciOiJIUzI1NiJ9",
        // Identifiers and timestamps that look numeric.
        "id 550e8400-e29b-41d4-a716-446655440000",
        "at 2024-01-15 10:30:00.123456+00",
        "image sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "semver 1.2.3 and 10.4.22-beta",
        "price 1,234,567.89 EUR",
        // Plain prose and numbers.
        "The quick brown fox jumps over 13 lazy dogs in 2024; pi is 3.14159 and e is 2.71828.",
    ] {
        check_negative(&masker, text);
    }
}

#[test]
fn bare_dotted_quads_are_addresses() {
    // Documented choice: a bare 1.2.3.4 is a valid address; only `v`/`version` before it marks a version.
    check_positive(&masker(), Detector::Ipv4, "1.2.3.4");
}

#[test]
fn strategies() {
    let masker = masker();
    let check = |detector: Detector, value: &str, strategy: Strategy, expected: Option<&str>| {
        assert_eq!(masker.mask_value(value, strategy, Some(detector)).as_deref(), expected, "{detector} {strategy:?}");
    };
    check(Detector::Email, "jane@example.com", Strategy::Redact, Some("[EMAIL]"));
    check(Detector::Email, "jane@example.com", Strategy::Partial, Some("***@example.com"));
    check(Detector::Email, "jane@example.com", Strategy::Null, None);
    check(Detector::PaymentCard, "4111 1111 1111 1234", Strategy::Partial, Some("**** **** **** 1234"));
    check(Detector::PaymentCard, "4111111111111234", Strategy::Partial, Some("************1234"));
    check(Detector::UsSsn, "123-45-6789", Strategy::Partial, Some("***-**-6789"));
    check(Detector::Phone, "+1 212 555 0123", Strategy::Partial, Some("+* *** *** 0123"));
    check(Detector::Iban, "DE89 3704 0044 0532 0130 00", Strategy::Partial, Some("DE** **** **** **** **30 00"));
    check(Detector::Ipv4, "192.168.1.77", Strategy::Partial, Some("192.168.1.*"));
    check(Detector::Ipv6, "2001:db8:85a3::8a2e:370:7334", Strategy::Partial, Some("2001:db8:85a3:*:*:*:*:*"));
    check(Detector::GithubToken, "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", Strategy::Partial, Some("ghp_***"));
    check(Detector::AnthropicKey, "sk-ant-api03-Ab12Cd34Ef56", Strategy::Partial, Some("sk-ant-api03-***"));
    check(Detector::AwsAccessKeyId, "AKIAIOSFODNN7EXAMPLE", Strategy::Partial, Some("AKIA***"));
    check(Detector::PemPrivateKey, "-----BEGIN PRIVATE KEY-----", Strategy::Partial, Some("[PRIVATE_KEY]"));
    assert_eq!(masker.mask_value("EMP-000123", Strategy::Partial, None).as_deref(), Some("****0123"));
    assert_eq!(masker.mask_value("short", Strategy::Partial, None).as_deref(), Some("****"));
    assert_eq!(masker.mask_value("anything", Strategy::Redact, None).as_deref(), Some("[MASKED]"));
}

#[test]
fn hash_tokens_are_keyed_stable_and_normalized() {
    let masker = masker();
    let hash = |value: &str, detector: Detector| masker.mask_value(value, Strategy::Hash, Some(detector)).unwrap();
    let token = hash("Jane@Example.com", Detector::Email);
    assert!(token.starts_with("[EMAIL:") && token.len() == "[EMAIL:]".len() + 10, "{token}");
    assert_eq!(token, hash("jane@example.com", Detector::Email));
    assert_ne!(token, hash("john@example.com", Detector::Email));
    assert_eq!(hash("4111 1111 1111 1111", Detector::PaymentCard), hash("4111-1111-1111-1111", Detector::PaymentCard));
    assert_eq!(hash("2001:DB8::1", Detector::Ipv6), hash("2001:0db8:0:0::1", Detector::Ipv6));
    // Stable across maskers (rows, sessions, restarts) with the same key; different under another key.
    assert_eq!(
        token,
        Masker::new(&MaskerConfig::all(KEY))
            .unwrap()
            .mask_value("jane@example.com", Strategy::Hash, Some(Detector::Email))
            .unwrap()
    );
    let other = Masker::new(&MaskerConfig::all([8; 32])).unwrap();
    assert_ne!(token, other.mask_value("jane@example.com", Strategy::Hash, Some(Detector::Email)).unwrap());
}

#[test]
fn mask_uses_default_strategies_and_borrows_clean_text() {
    let masker = masker();
    let clean = "nothing to see here, order 42 shipped at 12:30";
    assert!(matches!(masker.mask(clean), Cow::Borrowed(_)));
    let text = "mail jane@example.com, card 4111 1111 1111 1111, ssn 123-45-6789, \
        token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";
    let masked = masker.mask(text);
    assert_eq!(masked, "mail ***@example.com, card **** **** **** 1111, ssn [SSN], token [GITHUB_TOKEN]");
    let address = masker.mask("from 10.1.2.3");
    assert!(address.starts_with("from [IPV4:") && address.ends_with(']'), "{address}");
}

#[test]
fn strategy_overrides_and_null_in_text() {
    let strategies = HashMap::from([(Detector::Email, Strategy::Null), (Detector::PaymentCard, Strategy::Redact)]);
    let masker = Masker::new(&MaskerConfig { strategies, ..MaskerConfig::all(KEY) }).unwrap();
    assert_eq!(masker.mask("a jane@example.com b 4111111111111111 c"), "a  b [CARD] c");
}

#[test]
fn selection_limits_the_detectors() {
    let config = MaskerConfig { detectors: Selection::Only(vec![Detector::Email]), ..MaskerConfig::all(KEY) };
    let masker = Masker::new(&config).unwrap();
    assert_eq!(
        found(&masker, "jane@example.com 4111111111111111"),
        vec![(Kind::Builtin(Detector::Email), "jane@example.com")]
    );
    assert_eq!("payment_card".parse::<Detector>().unwrap(), Detector::PaymentCard);
    assert!("credit_card".parse::<Detector>().is_err());
    assert_eq!("hash".parse::<Strategy>().unwrap(), Strategy::Hash);
}

#[test]
fn texts_as_short_as_the_shortest_match_are_still_scanned() {
    // Shortest match 4 bytes: a 3-byte text is skipped, a 4-byte one (alone, or at the end of a longer text after a
    // rejected candidate) is found.
    let config = MaskerConfig {
        detectors: Selection::Only(Vec::new()),
        custom: vec![custom("pin", r"\b[0-9]{4}\b"), custom("code", r"\bCODE-[A-Z]{6}\b")],
        ..MaskerConfig::all(KEY)
    };
    let masker = Masker::new(&config).unwrap();
    assert_eq!(masker.mask("123"), "123");
    assert_eq!(masker.mask("1234"), "[PIN]");
    assert_eq!(masker.mask("12345 1234"), "12345 [PIN]");
    assert_eq!(masker.mask("CODE-ABCDEF"), "[CODE]");
    // Every built-in: the shortest is IPv6's `::`, and the shortest address found is three bytes.
    assert_eq!(redacting().mask("::1"), "[IPV6]");
}

fn custom(name: &str, pattern: &str) -> CustomDetector {
    CustomDetector {
        name: name.into(),
        pattern: pattern.into(),
        validator: None,
        keywords: Vec::new(),
        context_window: None,
        strategy: None,
    }
}

#[test]
fn custom_detectors() {
    let employee = CustomDetector {
        keywords: vec!["employee".into(), "staff".into()],
        context_window: Some(16),
        ..custom("employee_id", r"\b[0-9]{6}\b")
    };
    let account = CustomDetector {
        validator: Some(Validator::Luhn),
        strategy: Some(Strategy::Partial),
        ..custom("account", r"\bACC-[0-9]{8}\b")
    };
    let config = MaskerConfig { custom: vec![employee, account], ..MaskerConfig::all(KEY) };
    let masker = Masker::new(&config).unwrap();
    assert_eq!(masker.mask("Employee no. 123456 and order 654321"), "Employee no. [EMPLOYEE_ID] and order 654321");
    assert_eq!(masker.mask("STAFF:111111"), "STAFF:[EMPLOYEE_ID]");
    // The validator decides: 00000000 is Luhn-valid, 00000001 is not.
    assert_eq!(masker.mask("ACC-00000000 ACC-00000001"), "****0000 ACC-00000001");
    assert_eq!(masker.label(Kind::Custom(0)), "EMPLOYEE_ID");
    // The keyword must be close: beyond the window it does not count.
    let far = format!("employee {} 123456", "x".repeat(20));
    assert_eq!(masker.mask(&far), far.as_str());
}

#[test]
fn custom_detector_errors() {
    let build =
        |detector: CustomDetector| Masker::new(&MaskerConfig { custom: vec![detector], ..MaskerConfig::all(KEY) });
    let error = build(custom("bad", "(unclosed")).unwrap_err().to_string();
    assert!(
        error.starts_with("custom detector \"bad\": invalid pattern") && error.contains("unclosed group"),
        "{error}"
    );
    let error = build(custom("empty", "a*")).unwrap_err().to_string();
    assert_eq!(error, "custom detector \"empty\": the pattern matches the empty string");
    let error = build(custom("has space", "x")).unwrap_err().to_string();
    assert!(error.contains("invalid name"), "{error}");
}

#[test]
fn overlapping_candidates() {
    let masker = redacting();
    // The leftmost wins, and findings never overlap: an email whose local part is digits is an email.
    assert_eq!(masker.mask("4111111111111111@example.com"), "[EMAIL]");
    // A card's digits inside a JWT or a token stay part of it.
    assert_eq!(masker.mask("ghp_4111111111111111aaaaaaaaaaaaaaaaaaaa"), "[GITHUB_TOKEN]");
    // An international number running into the next one is cut back to E.164's 15 digits.
    assert_eq!(masker.mask("+44 20 7946 0958 12345 678"), "[PHONE] 12345 678");
    // A space-separated card right after another number is still a card; a dash-joined run is an identifier.
    assert_eq!(masker.mask("qty 2 4111 1111 1111 1111"), "qty 2 [CARD]");
    assert_eq!(masker.mask("ref 2024-4111-1111-1111-1111"), "ref 2024-4111-1111-1111-1111");
    // An IBAN followed by an upper-case word is cut to its country's length.
    assert_eq!(masker.mask("DE89370400440532013000 PAID"), "[IBAN] PAID");
    // Adjacent values, separated by one character.
    assert_eq!(masker.mask("10.0.0.1,10.0.0.2;jane@example.com"), "[IPV4],[IPV4];[EMAIL]");
    // Sorted, non-overlapping findings.
    let text = "a@example.com 123-45-6789 8.8.8.8 4111111111111111";
    let findings = masker.find(text);
    assert_eq!(findings.len(), 4);
    assert!(findings.windows(2).all(|pair| pair[0].range.end <= pair[1].range.start));
}

#[test]
fn utf8_around_matches() {
    let masker = redacting();
    assert_eq!(masker.mask("✉️jane@example.com✉️"), "✉️[EMAIL]✉️");
    assert_eq!(masker.mask("карта 4111 1111 1111 1111 — спасибо"), "карта [CARD] — спасибо");
    assert_eq!(masker.mask("电话：+86 10 6552 9988。"), "电话：[PHONE]。");
    assert_eq!(masker.mask("ünïcödé only"), "ünïcödé only");
    let custom_window =
        CustomDetector { keywords: vec!["id".into()], context_window: Some(3), ..custom("code", r"X[0-9]{4}") };
    let masker = Masker::new(&MaskerConfig { custom: vec![custom_window], ..MaskerConfig::all(KEY) }).unwrap();
    // The keyword window starts inside a multibyte character and must not split it.
    assert_eq!(masker.mask("id日X1234"), "id日X1234");
    assert_eq!(masker.mask("日id X1234"), "日id [CODE]");
}

/// Values from the positive table, to weave into random text.
fn sample() -> impl proptest::strategy::Strategy<Value = String> {
    prop::sample::select(POSITIVES.iter().map(|(_, value)| value.to_string()).collect::<Vec<_>>())
}

fn filler() -> impl proptest::strategy::Strategy<Value = String> {
    prop_oneof![
        // Not a bare space: `+1 212 555 0123 3782 822463 10005` is ambiguous even to a reader.
        Just(" ; ".to_string()),
        Just(", ".to_string()),
        Just("\n".to_string()),
        Just(" é ".to_string()),
        Just(" 日本語 ".to_string()),
        // Anything at all, fenced off so it cannot join a value (`+1 ` before card digits is a phone number).
        "[ a-z.,:;-]{0,12}".prop_map(|text| format!(" | {text} | ")),
        "\\PC{0,16}".prop_map(|text| format!(" | {text} | ")),
    ]
}

proptest! {
    #[test]
    fn mask_never_panics(text in "\\PC{0,200}") {
        let masker = masker();
        let masked = masker.mask(&text);
        for finding in masker.find(&text) {
            prop_assert!(text.is_char_boundary(finding.range.start) && text.is_char_boundary(finding.range.end));
        }
        if masker.find(&text).is_empty() {
            prop_assert_eq!(masked, Cow::Borrowed(text.as_str()));
        }
    }

    #[test]
    fn detected_values_do_not_survive(parts in prop::collection::vec((filler(), sample()), 1..6), tail in filler()) {
        let mut text = String::new();
        for (gap, value) in &parts {
            text.push_str(gap);
            text.push_str(value);
        }
        text.push_str(&tail);
        for masker in [masker(), redacting()] {
            let masked = masker.mask(&text);
            for finding in masker.find(&text) {
                let value = &text[finding.range];
                prop_assert!(!masked.contains(value), "{value:?} survived in {masked:?}");
            }
            for (_, value) in &parts {
                prop_assert!(!masked.contains(value.as_str()), "{value:?} survived in {masked:?}");
            }
        }
    }
}

/// An IPv6 address with `zeros` of its eight groups (from `at`) set to zero, so that the text forms compress a run.
fn ipv6_address() -> impl proptest::strategy::Strategy<Value = std::net::Ipv6Addr> {
    (any::<[u16; 8]>(), 0..8usize, 0..9usize).prop_map(|(mut groups, at, zeros)| {
        for group in groups.iter_mut().skip(at).take(zeros) {
            *group = 0;
        }
        std::net::Ipv6Addr::from(groups)
    })
}

proptest! {
    /// Every text form of an address is found whole: compressed (`Display`), all eight groups, with leading zeros,
    /// and with an IPv4 tail (mapped, and the last two groups written as a dotted quad), unless it has no decimal
    /// digit (the validator's rule against `Foo::Bar` paths).
    #[test]
    fn ipv6_addresses_are_found_in_every_form(address in ipv6_address(), upper in any::<bool>()) {
        let masker = masker();
        let segments = address.segments();
        let octets = address.octets();
        let mut forms = vec![
            address.to_string(),
            segments.map(|group| format!("{group:x}")).join(":"),
            segments.map(|group| format!("{group:04x}")).join(":"),
        ];
        let head: Vec<String> = segments[..6].iter().map(|group| format!("{group:x}")).collect();
        forms.push(format!("{}:{}.{}.{}.{}", head.join(":"), octets[12], octets[13], octets[14], octets[15]));
        if let [a, b, c, d] = octets[12..] {
            forms.push(std::net::Ipv4Addr::new(a, b, c, d).to_ipv6_mapped().to_string());
        }
        for form in forms {
            let form = if upper { form.to_ascii_uppercase() } else { form };
            prop_assert!(form.parse::<std::net::Ipv6Addr>().is_ok(), "{form}");
            if !form.bytes().any(|byte| byte.is_ascii_digit()) {
                continue;
            }
            let text = format!("peer {form} connected");
            prop_assert_eq!(found(&masker, &text), vec![(Kind::Builtin(Detector::Ipv6), form.as_str())]);
        }
    }
}

/// Clock times, ratios and other colon-separated numbers are no IPv6 candidate (they used to be candidates the
/// validator rejected, one per timestamp of a result set).
#[test]
fn times_are_not_ipv6_addresses() {
    let masker = masker();
    for text in ["2024-01-01 10:00:00+00", "2024-01-01T10:00:00.123456Z", "16:9", "1:2:3:4:5:6:7", "ab:cd:ef:12"] {
        check_negative(&masker, text);
    }
    // Not even a candidate to reject: the IPv6 pattern alone matches nothing in a timestamp.
    let ipv6 = regex_automata::meta::Regex::new(Detector::Ipv6.pattern()).unwrap();
    assert!(ipv6.find("2024-01-01 10:00:00+00, 23:59:59.999").is_none());
    for address in ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:1.2.3.4", "1::", "::1.2.3.4", "1:2:3:4:5:6:7::"] {
        check_positive(&masker, Detector::Ipv6, address);
    }
}

#[test]
fn no_detectors_finds_nothing_and_the_masker_is_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Masker>();
    let masker =
        Masker::new(&MaskerConfig { detectors: Selection::Only(Vec::new()), ..MaskerConfig::all(KEY) }).unwrap();
    assert!(masker.find("jane@example.com 4111111111111111").is_empty());
}

#[test]
fn glued_email_addresses_are_one_finding() {
    let masker = Masker::new(&MaskerConfig::all(KEY)).unwrap();
    // The first domain runs into the next local part: masked one by one, the second address would show whole.
    let cases = [
        ("jane@example.comjohn@example.org", "***@example.org"),
        ("a@b.comc.d@e.com", "***@e.com"),
        ("to: a.b@c.de.f@g.hi, bye", "to: ***@g.hi, bye"),
        ("jane@example.com,john@x.org", "***@example.com,***@x.org"),
        ("jane@example.com john@x.org", "***@example.com ***@x.org"),
    ];
    for (text, expected) in cases {
        assert_eq!(masker.mask(text), expected, "{text}");
        let mut stream = crate::StreamMasker::new(masker.clone(), crate::DEFAULT_HOLD_BACK);
        let mut out = String::new();
        for character in text.chars() {
            out.push_str(&stream.push(&character.to_string(), &mut |_| {}));
        }
        out.push_str(&stream.finish(&mut |_| {}));
        assert_eq!(out, expected, "{text}, streamed a character at a time");
        assert!(!out.contains("john") && !out.contains("c.d@") && !out.contains("f@g"), "{out}");
    }
    assert_eq!(redacting().mask("jane@example.comjohn@example.org"), "[EMAIL]");
}
