//! The built-in detectors: each one's candidate pattern, the validator that accepts or rejects a candidate (checksums,
//! issuer ranges, neighbours), and the context keywords some need.
//!
//! Patterns use only ASCII classes and ASCII word boundaries (`(?-u:\b)`), which keeps the lazy DFA on its fast path
//! whatever the text's script. A validator sees the whole text and the candidate's range, so it can look at the
//! neighbours, and returns the finding's end (which it may shorten) or `None`.

use crate::Detector;

/// Accepts a candidate `text[start..end]`, returning the finding's end.
pub(crate) type Validate = fn(text: &str, start: usize, end: usize) -> Option<usize>;

pub(crate) struct Spec {
    pub pattern: &'static str,
    pub validate: Validate,
    /// One must occur (ASCII case-insensitive) shortly before the candidate; empty: no condition.
    pub keywords: &'static [&'static str],
}

pub(crate) fn spec(detector: Detector) -> Spec {
    let (pattern, validate, keywords): (&'static str, Validate, &'static [&'static str]) = match detector {
        Detector::PemPrivateKey => (
            concat!(
                r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----",
                // Base64, headers (`DEK-Info: AES-128-CBC,…`), and `\n` escapes as in a JSON string; lazily, to the
                // first END.
                r"[A-Za-z0-9+/=\r\n\t :,.\\-]+?",
                r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----",
            ),
            accept,
            &[],
        ),
        Detector::Jwt => (r"(?-u:\b)eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", accept, &[]),
        Detector::AwsAccessKeyId => (
            r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}(?-u:\b)",
            accept,
            &[],
        ),
        Detector::AwsSecretKey => {
            (r"(?-u:\b)[A-Za-z0-9][A-Za-z0-9/+]{38}[A-Za-z0-9](?-u:\b)", aws_secret, &["aws", "secret"])
        }
        Detector::GithubToken => {
            (r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})(?-u:\b)", accept, &[])
        }
        Detector::SlackToken => (
            r"(?-u:\b)(?:xox[abposr]-[A-Za-z0-9-]{10,250}|https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,200})",
            accept,
            &[],
        ),
        Detector::AnthropicKey => (r"(?-u:\b)sk-ant-[a-z0-9]{2,12}-[A-Za-z0-9_-]{20,250}", accept, &[]),
        Detector::OpenAiKey => (r"(?-u:\b)sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,250}", openai_key, &[]),
        Detector::StripeKey => (r"(?-u:\b)(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,247}(?-u:\b)", accept, &[]),
        // Addresses glued together (`jane@example.comjohn@example.org`, where the first domain runs into the next
        // local part) are one finding: taken one by one, the first would end inside the second's local part, and its
        // masked form (`***@example.comjohn`) followed by the rest (`@example.org`) would show the second address.
        Detector::Email => (
            concat!(
                r"(?-u:\b)[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.){1,8}[A-Za-z]{2,63}",
                r"(?:[A-Za-z0-9._%+-]{0,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.){1,8}[A-Za-z]{2,63})*(?-u:\b)",
            ),
            accept,
            &[],
        ),
        Detector::Iban => (r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)", iban, &[]),
        Detector::PaymentCard => (r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)", card, &[]),
        Detector::UsSsn => (r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)", ssn, &[]),
        Detector::Phone => (
            concat!(
                // International: + country code, groups separated by at most one space, dot or dash.
                r"\+[1-9][0-9]{0,3}(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,6}(?-u:\b)",
                // North American: (212) 555-0123, 212-555-0123, 212.555.0123.
                r"|(?:\([2-9][0-9]{2}\) ?|(?-u:\b)[2-9][0-9]{2}[-. ])[2-9][0-9]{2}[-. ][0-9]{4}(?-u:\b)",
                // French style: 06 12 34 56 78, 01.23.45.67.89.
                r"|(?-u:\b)0[1-9](?:[ .-][0-9]{2}){4}(?-u:\b)",
                // British style: 020 7946 0958, 07700 900123.
                r"|(?-u:\b)0[1-9][0-9]{1,3}[ -][0-9]{3,4}[ -]?[0-9]{3,4}(?-u:\b)",
            ),
            phone,
            &[],
        ),
        // Only the shapes an address can have: eight groups, six and an IPv4 tail, or a `::` with up to seven groups
        // around it (the validator counts them). A clock time (`10:00:00`) or a ratio (`16:9`) is no candidate, so
        // the timestamps of a result set cost no rejected candidate each. An embedded IPv4 tail comes before a last
        // group, so that `::ffff:192.0.2.1` is not cut at `192`.
        Detector::Ipv6 => (
            concat!(
                r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}",
                r"|(?:[0-9A-Fa-f]{1,4}:){6}[0-9]{1,3}(?:\.[0-9]{1,3}){3}",
                r"|(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?::",
                r"(?:(?:[0-9A-Fa-f]{1,4}:){0,6}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4}))?",
            ),
            ipv6,
            &[],
        ),
        Detector::Ipv4 => (
            concat!(
                r"(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}",
                r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?-u:\b)",
            ),
            ipv4,
            &[],
        ),
    };
    Spec { pattern, validate, keywords }
}

fn accept(_text: &str, _start: usize, end: usize) -> Option<usize> {
    Some(end)
}

fn byte_before(text: &str, start: usize) -> Option<u8> {
    start.checked_sub(1).map(|index| text.as_bytes()[index])
}

fn byte_at(text: &str, index: usize) -> Option<u8> {
    text.as_bytes().get(index).copied()
}

fn is_base64(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'/' || byte == b'+'
}

/// 40 base64 characters, not part of a longer run, mixing upper case, lower case and digits (which a hex digest or
/// a word never does).
fn aws_secret(text: &str, start: usize, end: usize) -> Option<usize> {
    if byte_before(text, start).is_some_and(is_base64) || byte_at(text, end).is_some_and(is_base64) {
        return None;
    }
    let candidate = &text.as_bytes()[start..end];
    let upper = candidate.iter().any(u8::is_ascii_uppercase);
    let lower = candidate.iter().any(u8::is_ascii_lowercase);
    let digit = candidate.iter().any(u8::is_ascii_digit);
    (upper && lower && digit).then_some(end)
}

/// Not the tail of a longer dashed identifier (`task-sk-…`), and with a digit in it (a key is random; a slug of
/// words like `sk-learn-something-or-other` is not).
fn openai_key(text: &str, start: usize, end: usize) -> Option<usize> {
    if byte_before(text, start) == Some(b'-') {
        return None;
    }
    text.as_bytes()[start..end].iter().any(u8::is_ascii_digit).then_some(end)
}

/// The Luhn check over the digits of `candidate` (other characters ignored); false for fewer than two digits.
pub(crate) fn luhn_valid(candidate: &str) -> bool {
    let mut sum = 0u32;
    let mut count = 0;
    for digit in candidate.bytes().rev().filter(u8::is_ascii_digit).map(|byte| u32::from(byte - b'0')) {
        let doubled = if count % 2 == 1 { digit * 2 } else { digit };
        sum += if doubled > 9 { doubled - 9 } else { doubled };
        count += 1;
    }
    count >= 2 && sum.is_multiple_of(10)
}

/// Whether `digits` (digits only) is in a known issuer range with a length that issuer uses.
fn issuer_known(digits: &[u8]) -> bool {
    let prefix =
        |length: usize| -> u32 { digits[..length].iter().fold(0, |value, digit| value * 10 + u32::from(digit - b'0')) };
    let length = digits.len();
    let (one, two, three, four, six) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
    // Visa.
    (one == 4 && matches!(length, 13 | 16 | 19))
        // Mastercard, including the 2-series.
        || ((51..=55).contains(&two) || (2221..=2720).contains(&four)) && length == 16
        // American Express.
        || matches!(two, 34 | 37) && length == 15
        // Discover, including the China UnionPay co-branded range.
        || (four == 6011 || (644..=649).contains(&three) || two == 65 || (622126..=622925).contains(&six))
            && (16..=19).contains(&length)
        // UnionPay.
        || two == 62 && (16..=19).contains(&length)
        // JCB.
        || (3528..=3589).contains(&four) && (16..=19).contains(&length)
        // Diners Club.
        || ((300..=305).contains(&three) || matches!(two, 36 | 38 | 39)) && (14..=19).contains(&length)
        // Maestro.
        || (matches!(four, 5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761..=6763)) && (12..=19).contains(&length)
        // Mir.
        || (2200..=2204).contains(&four) && length == 16
}

/// A card number in isolation: digits (with any separators ignored) Luhn-valid in a known issuer range.
pub(crate) fn card_number_valid(candidate: &str) -> bool {
    let digits: Vec<u8> = candidate.bytes().filter(u8::is_ascii_digit).collect();
    (12..=19).contains(&digits.len()) && luhn_valid(candidate) && issuer_known(&digits)
}

/// A card number: one kind of separator at most, not continuing a longer run of dash-separated digits
/// (`2024-4111-1111-1111-1111`), Luhn-valid in a known issuer range.
fn card(text: &str, start: usize, end: usize) -> Option<usize> {
    let candidate = &text[start..end];
    let separator = candidate.bytes().find(|byte| !byte.is_ascii_digit());
    if let Some(separator) = separator {
        if candidate.bytes().any(|byte| !byte.is_ascii_digit() && byte != separator) {
            return None;
        }
    }
    // A dash joins numbers into one identifier; a space does not (`qty 2 4111 1111 1111 1111` is a card).
    if separator == Some(b'-') {
        let separator = b'-';
        let before = start.checked_sub(2).map(|index| &text.as_bytes()[index..start]);
        if before.is_some_and(|pair| pair[0].is_ascii_digit() && pair[1] == separator) {
            return None;
        }
        let after = text.as_bytes().get(end..end + 2);
        if after.is_some_and(|pair| pair[0] == separator && pair[1].is_ascii_digit()) {
            return None;
        }
    }
    card_number_valid(candidate).then_some(end)
}

/// A US SSN: area not 000, 666 or 900–999; group not 00; serial not 0000; not the two numbers famous from
/// advertising (078-05-1120, 219-09-9999). Separators other than digits are ignored.
pub(crate) fn ssn_valid(candidate: &str) -> bool {
    let digits: Vec<u8> = candidate.bytes().filter(u8::is_ascii_digit).map(|byte| byte - b'0').collect();
    if digits.len() != 9 {
        return false;
    }
    let number =
        |range: std::ops::Range<usize>| digits[range].iter().fold(0u32, |value, digit| value * 10 + u32::from(*digit));
    let (area, group, serial) = (number(0..3), number(3..5), number(5..9));
    area != 0
        && area != 666
        && area < 900
        && group != 0
        && serial != 0
        && !(area == 78 && group == 5 && serial == 1120)
        && !(area == 219 && group == 9 && serial == 9999)
}

fn ssn(text: &str, start: usize, end: usize) -> Option<usize> {
    // Not inside a longer dashed number (a date-like or part id `12-123-45-6789`).
    if byte_before(text, start) == Some(b'-') || byte_at(text, end) == Some(b'-') {
        return None;
    }
    ssn_valid(&text[start..end]).then_some(end)
}

/// IBAN lengths by country, from the SWIFT IBAN registry.
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HN", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

fn iban_length(country: &str) -> Option<usize> {
    IBAN_LENGTHS.iter().find(|(code, _)| *code == country).map(|(_, length)| *length)
}

/// The mod-97 check of an IBAN's characters (spaces removed, upper case).
fn iban_checksum_valid(compact: &[u8]) -> bool {
    let mut remainder = 0u32;
    let rotated = compact[4..].iter().chain(&compact[..4]);
    for &byte in rotated {
        let value = match byte {
            b'0'..=b'9' => u32::from(byte - b'0'),
            b'A'..=b'Z' => u32::from(byte - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 };
    }
    remainder == 1
}

/// An IBAN in isolation: the country's length and mod-97 (spaces ignored).
pub(crate) fn iban_valid(candidate: &str) -> bool {
    let compact: Vec<u8> = candidate.bytes().filter(|byte| *byte != b' ').collect();
    compact.len() >= 4
        && std::str::from_utf8(&compact[..2]).ok().and_then(iban_length) == Some(compact.len())
        && iban_checksum_valid(&compact)
}

/// An IBAN: the candidate is cut to its country's length (the pattern may run on into a following upper-case word),
/// which must end at a word boundary, then checked with mod-97.
fn iban(text: &str, start: usize, end: usize) -> Option<usize> {
    let candidate = &text.as_bytes()[start..end];
    let length = iban_length(std::str::from_utf8(&candidate[..2]).ok()?)?;
    let mut compact = Vec::with_capacity(length);
    let mut cut = start;
    for (offset, &byte) in candidate.iter().enumerate() {
        if compact.len() == length {
            break;
        }
        if byte != b' ' {
            compact.push(byte);
            cut = start + offset + 1;
        }
    }
    if compact.len() != length || byte_at(text, cut).is_some_and(|byte| byte.is_ascii_alphanumeric()) {
        return None;
    }
    iban_checksum_valid(&compact).then_some(cut)
}

/// A phone number: 8 to 15 digits for international (E.164's limit; a longer candidate is cut back group by group),
/// 10 or 11 for national; not glued to a word or another number on the left (the international form starts with
/// `+`, where no word boundary applies).
fn phone(text: &str, start: usize, end: usize) -> Option<usize> {
    let candidate = &text[start..end];
    let digits = candidate.bytes().filter(u8::is_ascii_digit).count();
    if candidate.starts_with('+') {
        if byte_before(text, start).is_some_and(|byte| byte.is_ascii_alphanumeric()) {
            return None;
        }
        // The pattern may run on into a following number: drop trailing groups until E.164's 15 digits fit.
        let mut cut = end;
        let mut digits = digits;
        while digits > 15 {
            let group_start = text[start..cut].rfind([' ', '.', '-', '('])?;
            digits -= text[start + group_start..cut].bytes().filter(u8::is_ascii_digit).count();
            cut = start + group_start;
            cut = start + text[start..cut].trim_end_matches([' ', '.', '-', '(']).len();
        }
        return (8..=15).contains(&digits).then_some(cut);
    }
    if byte_before(text, start).is_some_and(|byte| byte.is_ascii_digit() || byte == b'-' || byte == b'.') {
        return None;
    }
    (10..=11).contains(&digits).then_some(end)
}

/// An IPv6 address, as the standard library parses it (so `12:30:45` and MAC addresses are not), with a decimal
/// digit in it, not glued to other word characters or colons.
fn ipv6(text: &str, start: usize, end: usize) -> Option<usize> {
    let glued = |byte: u8| byte.is_ascii_alphanumeric() || byte == b':' || byte == b'_';
    if byte_before(text, start).is_some_and(glued) || byte_at(text, end).is_some_and(glued) {
        return None;
    }
    let candidate = &text[start..end];
    // A decimal digit, or `Foo::Bar` paths and `a::b` would pass as addresses.
    if !candidate.bytes().any(|byte| byte.is_ascii_digit()) {
        return None;
    }
    candidate.parse::<std::net::Ipv6Addr>().ok().map(|_| end)
}

/// A dotted quad that is not part of a longer dotted number (`1.2.3.4.5`, an OID) and not a version (`v1.2.3.4`,
/// `version 1.2.3.4`). A bare `1.2.3.4` is a valid address and is masked: text alone cannot tell it from a version.
fn ipv4(text: &str, start: usize, end: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    if start >= 2 && bytes[start - 1] == b'.' && bytes[start - 2].is_ascii_digit() {
        return None;
    }
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    if matches!(byte_before(text, start), Some(b'v' | b'V')) {
        return None;
    }
    let mut from = start.saturating_sub(9);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    if text[from..start].trim_end().to_ascii_lowercase().ends_with("version") {
        return None;
    }
    Some(end)
}
