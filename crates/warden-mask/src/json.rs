//! JSON documents masked in one pass over their text, two ways:
//!
//! - [`mask_json_members`], column rules inside JSON: when a query returns `row_to_json(c)` or `json_agg(c)`, the
//!   columns come back as object keys, and a rule on column `full_name` must still mask the value of every
//!   `full_name` member;
//! - [`mask_json_values`], content detection on every string and number of a document (an LLM's answer), with
//!   per-member exceptions (kept verbatim, emptied, reported to the caller).
//!
//! One hand-written pass over the bytes, with no tree built: it checks the RFC 8259 grammar, decodes a key or a
//! string only when it holds an escape (the common case borrows), and copies everything but the replaced values
//! verbatim, so the output keeps the input's structure and whitespace. Time is linear in the text; recursion follows
//! the nesting of objects and arrays and stops at [`MAX_DEPTH`].

use std::borrow::Cow;

use crate::{Masker, Strategy};

/// The deepest nesting of objects and arrays accepted, the top-level container being depth 1. This bounds the
/// recursion, and so the stack, whatever the input. A deeper document is refused whole, like an invalid one: its
/// members cannot all be checked, so none of it is reported as masked.
const MAX_DEPTH: usize = 128;

/// Masks, at any depth of the JSON document `text`, the value of every object member whose key `rule` maps to a
/// strategy. Returns None when `text` is not a JSON object or array (after optional leading whitespace) or is not
/// valid JSON (the caller then falls back to content detection alone); Some(Cow::Borrowed) when nothing was masked.
/// `masked` is called once per masked member.
///
/// Keys are compared after JSON unescaping (`"full\u005fname"` is `full_name`); an unpaired surrogate escape, which
/// the grammar allows, decodes as U+FFFD. A matched member's value is replaced by the JSON rendering of
/// [`Masker::mask_value`] (no detector kind): a string's unescaped content, or the raw JSON text of a number, `true`,
/// `false`, object or array (whitespace included), is masked into a JSON string, or `null` under the `null`
/// strategy. A `null` value stays `null` and is not counted: there is nothing to hide. Members inside a replaced
/// value are replaced with it and not counted on their own.
///
/// Fails closed on nesting: a document nested deeper than 128 objects and arrays returns None, as an invalid one
/// does, and `masked` is never called for a document that returns None.
pub fn mask_json_members<'a>(
    text: &'a str,
    masker: &Masker,
    rule: &dyn Fn(&str) -> Option<Strategy>,
    masked: &mut dyn FnMut(),
) -> Option<Cow<'a, str>> {
    let first = text.bytes().find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'));
    if !matches!(first, Some(b'{' | b'[')) {
        return None;
    }
    let member = |_depth: usize, key: &str| rule(key).map_or(Member::Walk, Member::Replace);
    let (output, count) = walk(text, masker, &member, false, &mut |_, _| {}).ok()?;
    // Counted only now, so that a document refused late reports nothing masked.
    for _ in 0..count {
        masked();
    }
    Some(output)
}

/// What [`mask_json_values`] does with an object member's value, decided by its unescaped key and the depth of its
/// object (1 for the top-level object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// Masked like the rest of the document.
    Walk,
    /// Copied as it is: checked, never scanned nor rewritten (embedding vectors, numbers or base64, are not text).
    Keep,
    /// Replaced whole by a strategy, as a column rule of [`mask_json_members`] does (counted once).
    Replace(Strategy),
    /// Emptied: an array becomes `[]`, anything else `null` (not counted).
    Empty,
    /// Masked like the rest of the document, and its raw text, as received, handed to the caller's `report`.
    Report,
}

/// Why a document was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("syntax error at byte {offset}")]
    Invalid { offset: usize },
    #[error("nested deeper than {MAX_DEPTH} objects and arrays at byte {offset}")]
    TooDeep { offset: usize },
}

/// Masks every string value (unescaped first, so `jane\u002eroe@example.com` is seen as the address it is) and
/// every number (its raw text: a card number sent as a JSON number) of the JSON document `text` by content
/// detection. A value with findings becomes the JSON string of its masked text; object keys are not scanned.
/// `member` decides, per object member, what happens to its value instead (see [`Member`]); `report` is called with
/// the key and raw text of every [`Member::Report`] member as the walk meets it, before the document is known to be
/// valid (discard what it reported when the call fails).
///
/// Returns the masked document, borrowed when nothing changed, and the number of values masked (findings, plus
/// members replaced whole). Any JSON value is accepted at the top level. Fails closed: a document that is not valid
/// JSON, or nests deeper than [`MAX_DEPTH`], is refused whole with where the walk stopped. Repeated keys are each
/// handled like the others.
pub fn mask_json_values<'a>(
    text: &'a str,
    masker: &Masker,
    member: &dyn Fn(usize, &str) -> Member,
    report: &mut dyn FnMut(&str, &'a str),
) -> Result<(Cow<'a, str>, usize), JsonError> {
    walk(text, masker, member, true, report)
}

/// The walk both entry points share: `detect` scans string and number values.
fn walk<'a>(
    text: &'a str,
    masker: &Masker,
    member: &dyn Fn(usize, &str) -> Member,
    detect: bool,
    report: &mut dyn FnMut(&str, &'a str),
) -> Result<(Cow<'a, str>, usize), JsonError> {
    let mut walk = Walk {
        text,
        bytes: text.as_bytes(),
        at: 0,
        depth: 0,
        masker,
        member,
        detect,
        report,
        output: None,
        copied: 0,
        masked: 0,
    };
    let refused = |walk: &Walk<'_, '_>, refusal: Refused| match refusal {
        Refused::Invalid => JsonError::Invalid { offset: walk.at },
        Refused::TooDeep => JsonError::TooDeep { offset: walk.at },
    };
    walk.skip_whitespace();
    if let Err(refusal) = walk.value(true) {
        return Err(refused(&walk, refusal));
    }
    walk.skip_whitespace();
    if walk.at != text.len() {
        return Err(refused(&walk, Refused::Invalid));
    }
    let output = match walk.output {
        None => Cow::Borrowed(text),
        Some(mut output) => {
            output.push_str(&text[walk.copied..]);
            Cow::Owned(output)
        }
    };
    Ok((output, walk.masked))
}

/// Why the walk stopped.
#[derive(Debug)]
enum Refused {
    /// The document is not valid JSON.
    Invalid,
    /// It is nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// The single pass: a cursor over the bytes, the output built lazily from the first replacement on.
struct Walk<'a, 'm> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    depth: usize,
    masker: &'m Masker,
    member: &'m dyn Fn(usize, &str) -> Member,
    /// Scan string and number values for content.
    detect: bool,
    report: &'m mut dyn FnMut(&str, &'a str),
    /// The text up to `copied` with its replacements; `None` until the first one.
    output: Option<String>,
    copied: usize,
    masked: usize,
}

impl<'a> Walk<'a, '_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Refused> {
        if self.peek() != Some(byte) {
            return Err(Refused::Invalid);
        }
        self.at += 1;
        Ok(())
    }

    /// One value starting at `at`. `rewrite` is false inside a value being replaced whole: its keys are then only
    /// checked, not decoded nor matched.
    fn value(&mut self, rewrite: bool) -> Result<(), Refused> {
        match self.peek() {
            Some(b'{') => self.object(rewrite),
            Some(b'[') => self.array(rewrite),
            Some(b'"') if rewrite && self.detect => self.detected_string(),
            Some(b'"') => self.string(false).map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                self.number()?;
                if rewrite && self.detect {
                    let raw = &self.text[start..self.at];
                    self.detected(start, raw);
                }
                Ok(())
            }
            _ => Err(Refused::Invalid),
        }
    }

    fn enter(&mut self) -> Result<(), Refused> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Refused::TooDeep);
        }
        self.at += 1;
        self.skip_whitespace();
        Ok(())
    }

    fn object(&mut self, rewrite: bool) -> Result<(), Refused> {
        self.enter()?;
        if self.peek() == Some(b'}') {
            self.at += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(Refused::Invalid);
            }
            let key = self.string(rewrite)?;
            self.skip_whitespace();
            self.expect(b':')?;
            self.skip_whitespace();
            // Without `rewrite` the key is not decoded: the member is inside a value kept or replaced whole.
            let action = key.as_deref().map_or(Member::Keep, |key| (self.member)(self.depth, key));
            match action {
                Member::Walk => self.value(true)?,
                Member::Keep => self.value(false)?,
                Member::Replace(strategy) => self.masked_member(strategy)?,
                Member::Empty => self.emptied_member()?,
                Member::Report => {
                    let start = self.at;
                    self.value(true)?;
                    (self.report)(key.as_deref().unwrap_or_default(), &self.text[start..self.at]);
                }
            }
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_whitespace();
                }
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(Refused::Invalid),
            }
        }
        self.depth -= 1;
        Ok(())
    }

    fn array(&mut self, rewrite: bool) -> Result<(), Refused> {
        self.enter()?;
        if self.peek() == Some(b']') {
            self.at += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.value(rewrite)?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_whitespace();
                }
                Some(b']') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(Refused::Invalid),
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// The value of a member whose key matched: checked whole, then replaced (unless it is `null`).
    fn masked_member(&mut self, strategy: Strategy) -> Result<(), Refused> {
        let start = self.at;
        let replacement = match self.peek() {
            Some(b'n') => return self.literal(b"null"),
            Some(b'"') => {
                let content = self.string(true)?.expect("a decoded string has content");
                self.masker.mask_value(&content, strategy, None)
            }
            _ => {
                self.value(false)?;
                self.masker.mask_value(&self.text[start..self.at], strategy, None)
            }
        };
        self.replace(start, |output| match replacement {
            Some(masked) => push_json_string(output, &masked),
            None => output.push_str("null"),
        });
        self.masked += 1;
        Ok(())
    }

    /// A member's value emptied: checked, then `[]` for an array, `null` for anything else.
    fn emptied_member(&mut self) -> Result<(), Refused> {
        let start = self.at;
        let empty = if self.peek() == Some(b'[') { "[]" } else { "null" };
        self.value(false)?;
        if &self.text[start..self.at] != empty {
            self.replace(start, |output| output.push_str(empty));
        }
        Ok(())
    }

    /// A string value scanned for content: its unescaped content, masked.
    fn detected_string(&mut self) -> Result<(), Refused> {
        let start = self.at;
        let content = self.string(true)?.expect("a decoded string has content");
        self.detected(start, &content);
        Ok(())
    }

    /// The value from `start` to `at`, whose text (unescaped) is `content`, replaced by the JSON string of its
    /// masked text when a detector finds anything in it.
    fn detected(&mut self, start: usize, content: &str) {
        let masker = self.masker;
        let mut found = 0;
        if let Cow::Owned(masked) = masker.mask_counting(content, &mut |_| found += 1) {
            self.replace(start, |output| push_json_string(output, &masked));
            self.masked += found;
        }
    }

    /// Replaces the text from `start` to `at` by what `render` writes.
    fn replace(&mut self, start: usize, render: impl FnOnce(&mut String)) {
        let text = self.text;
        let output = self.output.get_or_insert_with(|| String::with_capacity(text.len() + 16));
        output.push_str(&text[self.copied..start]);
        render(output);
        self.copied = self.at;
    }

    /// A string starting at its opening quote; its unescaped content when `decode`, borrowed unless it has escapes.
    fn string(&mut self, decode: bool) -> Result<Option<Cow<'a, str>>, Refused> {
        let text = self.text;
        self.at += 1;
        let start = self.at;
        // The content decoded up to `unescaped_from`, once an escape has been met.
        let mut decoded: Option<String> = None;
        let mut unescaped_from = start;
        loop {
            match *self.bytes.get(self.at).ok_or(Refused::Invalid)? {
                b'"' => {
                    let end = self.at;
                    self.at += 1;
                    if !decode {
                        return Ok(None);
                    }
                    return Ok(Some(match decoded {
                        None => Cow::Borrowed(&text[start..end]),
                        Some(mut content) => {
                            content.push_str(&text[unescaped_from..end]);
                            Cow::Owned(content)
                        }
                    }));
                }
                b'\\' => {
                    let backslash = self.at;
                    self.at += 1;
                    let character = self.escape()?;
                    if decode {
                        let content = decoded.get_or_insert_with(|| String::with_capacity(self.at - start + 16));
                        content.push_str(&text[unescaped_from..backslash]);
                        content.push(character);
                    }
                    unescaped_from = self.at;
                }
                0x00..=0x1f => return Err(Refused::Invalid),
                _ => self.at += 1,
            }
        }
    }

    /// The character an escape stands for, `at` just past its backslash. An unpaired surrogate is U+FFFD.
    fn escape(&mut self) -> Result<char, Refused> {
        let byte = self.peek().ok_or(Refused::Invalid)?;
        self.at += 1;
        Ok(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex_unit()?;
                if !(0xD800..=0xDBFF).contains(&unit) {
                    // Lone low surrogates are the only code units that are not characters.
                    return Ok(char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                if self.bytes.get(self.at..self.at + 2) != Some(b"\\u") {
                    return Ok(char::REPLACEMENT_CHARACTER);
                }
                let next_escape = self.at;
                self.at += 2;
                let low = self.hex_unit()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    // Not a pair: the next escape stands on its own and is read again.
                    self.at = next_escape;
                    return Ok(char::REPLACEMENT_CHARACTER);
                }
                char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                    .expect("a surrogate pair encodes a scalar value")
            }
            _ => return Err(Refused::Invalid),
        })
    }

    /// The four hex digits of a `\u` escape.
    fn hex_unit(&mut self) -> Result<u32, Refused> {
        let digits = self.bytes.get(self.at..self.at + 4).ok_or(Refused::Invalid)?;
        let mut unit = 0;
        for digit in digits {
            unit = unit * 16 + char::from(*digit).to_digit(16).ok_or(Refused::Invalid)?;
        }
        self.at += 4;
        Ok(unit)
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Refused> {
        if !self.bytes[self.at..].starts_with(word) {
            return Err(Refused::Invalid);
        }
        self.at += word.len();
        Ok(())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`; what may follow is the caller's to check.
    fn number(&mut self) -> Result<(), Refused> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(Refused::Invalid),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.required_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.required_digits()?;
        }
        Ok(())
    }

    fn skip_digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), Refused> {
        let from = self.at;
        self.skip_digits();
        if self.at == from {
            return Err(Refused::Invalid);
        }
        Ok(())
    }
}

/// `value` as a JSON string: quotes, backslashes and control characters escaped.
fn push_json_string(output: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    output.push('"');
    for character in value.chars() {
        match character {
            '"' => output.push_str("\\\""),
            '\\' => output.push_str("\\\\"),
            '\n' => output.push_str("\\n"),
            '\r' => output.push_str("\\r"),
            '\t' => output.push_str("\\t"),
            '\u{8}' => output.push_str("\\b"),
            '\u{c}' => output.push_str("\\f"),
            '\u{0}'..='\u{1f}' => {
                let code = character as usize;
                output.push_str("\\u00");
                output.push(char::from(HEX[code >> 4]));
                output.push(char::from(HEX[code & 0xf]));
            }
            other => output.push(other),
        }
    }
    output.push('"');
}

#[cfg(test)]
mod tests {
    //! Tables through one `check` helper (row_to_json and json_agg shapes, nesting, escapes, each kind of value,
    //! the null strategy, invalid and too-deep documents), then property tests against serde_json.

    use std::borrow::Cow;
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use proptest::strategy::Strategy as _;

    use super::{mask_json_members, mask_json_values, JsonError, Member, MAX_DEPTH};
    use crate::{Masker, MaskerConfig, Strategy};

    static MASKER: LazyLock<Masker> =
        LazyLock::new(|| Masker::new(&MaskerConfig::all([7; 32])).expect("the built-in detectors compile"));

    /// The column rules of the tests: `full_name` redacted, `notes` partial, `email` hashed, `ssn` nulled.
    fn rule(key: &str) -> Option<Strategy> {
        match key {
            "full_name" => Some(Strategy::Redact),
            "notes" => Some(Strategy::Partial),
            "email" => Some(Strategy::Hash),
            "ssn" => Some(Strategy::Null),
            _ => None,
        }
    }

    fn run(input: &str) -> (Option<Cow<'_, str>>, usize) {
        let mut count = 0;
        let output = mask_json_members(input, &MASKER, &rule, &mut || count += 1);
        (output, count)
    }

    /// `input` masks to `expected` with `count` members masked; borrowed exactly when the count is zero.
    fn check(input: &str, expected: Option<&str>, count: usize) {
        let (output, masked) = run(input);
        assert_eq!(output.as_deref(), expected, "in {input:?}");
        assert_eq!(masked, count, "members masked in {input:?}");
        if let Some(output) = output {
            assert_eq!(matches!(output, Cow::Borrowed(_)), count == 0, "borrowed iff nothing masked, in {input:?}");
            // serde_json refuses lone surrogates and 128 levels of nesting, which the grammar allows.
            if serde_json::from_str::<serde_json::Value>(input).is_ok() {
                serde_json::from_str::<serde_json::Value>(&output).expect("the output is JSON");
            }
        }
    }

    fn hashed(raw: &str) -> String {
        MASKER.mask_value(raw, Strategy::Hash, None).expect("hash renders a token")
    }

    #[test]
    fn row_to_json() {
        check(
            r#"{"id":1,"full_name":"Ada Lovelace","city":"London"}"#,
            Some(r#"{"id":1,"full_name":"[MASKED]","city":"London"}"#),
            1,
        );
        check(
            r#"{"id":1,"email":"Ada@Example.com","ssn":"078-05-1120"}"#,
            Some(&format!(r#"{{"id":1,"email":"{}","ssn":null}}"#, hashed("Ada@Example.com"))),
            2,
        );
    }

    #[test]
    fn json_agg() {
        check(
            "[{\"id\":1,\"full_name\":\"Ada\"}, \n {\"id\":2,\"full_name\":\"Grace\"}]",
            Some("[{\"id\":1,\"full_name\":\"[MASKED]\"}, \n {\"id\":2,\"full_name\":\"[MASKED]\"}]"),
            2,
        );
        check("[]", Some("[]"), 0);
        check("{}", Some("{}"), 0);
    }

    #[test]
    fn whitespace_and_layout_are_kept() {
        check(
            "\n { \"full_name\" :\t\"Ada\" ,\r\n \"id\" : [ 1 , 2 ] } \n",
            Some("\n { \"full_name\" :\t\"[MASKED]\" ,\r\n \"id\" : [ 1 , 2 ] } \n"),
            1,
        );
    }

    #[test]
    fn nested_members_are_found_at_any_depth() {
        check(
            r#"{"customer":{"full_name":"Ada","orders":[{"full_name":"Grace"},["full_name"]]},"id":2}"#,
            Some(r#"{"customer":{"full_name":"[MASKED]","orders":[{"full_name":"[MASKED]"},["full_name"]]},"id":2}"#),
            2,
        );
        // Duplicate keys are each masked.
        check(r#"{"full_name":"a","full_name":"b"}"#, Some(r#"{"full_name":"[MASKED]","full_name":"[MASKED]"}"#), 2);
        // A value replaced whole counts once, whatever matches inside it.
        check(r#"{"full_name":{"full_name":"Ada","ssn":"x"}}"#, Some(r#"{"full_name":"[MASKED]"}"#), 1);
    }

    #[test]
    fn keys_are_compared_unescaped() {
        check(r#"{"full\u005fname":"Ada"}"#, Some(r#"{"full\u005fname":"[MASKED]"}"#), 1);
        check(r#"{"full\u005Fname":"Ada"}"#, Some(r#"{"full\u005Fname":"[MASKED]"}"#), 1);
        check(r#"{"\u0066ull_name":"Ada"}"#, Some(r#"{"\u0066ull_name":"[MASKED]"}"#), 1);
        check(r#"{"ss\u006e":"x","s\/sn":"y","s\\sn":"z"}"#, Some(r#"{"ss\u006e":null,"s\/sn":"y","s\\sn":"z"}"#), 1);
        check(
            r#"{"full_name\u0000":"Ada","full_nam":"Ada"}"#,
            Some(r#"{"full_name\u0000":"Ada","full_nam":"Ada"}"#),
            0,
        );
        // Escapes that do not decode to a rule's key, including surrogate pairs and a lone surrogate.
        check(r#"{"\ud83d\ude00":1,"\ud800":2,"\udc00x":3}"#, Some(r#"{"\ud83d\ude00":1,"\ud800":2,"\udc00x":3}"#), 0);
    }

    #[test]
    fn string_values_are_unescaped_then_escaped_again() {
        // Partial keeps a custom value's last four characters, here a quote, a backslash, a newline and a tab.
        check(r#"{"notes":"12345678\"\\\n\t"}"#, Some(r#"{"notes":"****\"\\\n\t"}"#), 1);
        check(r#"{"notes":"12345678\b\f\r\u0001"}"#, Some(r#"{"notes":"****\b\f\r\u0001"}"#), 1);
        check(r#"{"notes":"12345678\ud83d\ude00"}"#, Some("{\"notes\":\"****678\u{1F600}\"}"), 1);
        check(r#"{"notes":"12345678\ud83dé\/"}"#, Some("{\"notes\":\"****8\u{FFFD}é/\"}"), 1);
        check(r#"{"email":"a\u0040b.c"}"#, Some(&format!(r#"{{"email":"{}"}}"#, hashed("a@b.c"))), 1);
    }

    #[test]
    fn other_values_are_masked_from_their_raw_text() {
        check(
            r#"{"full_name":42,"ssn":true,"notes":-1.5e+300}"#,
            Some(r#"{"full_name":"[MASKED]","ssn":null,"notes":"****+300"}"#),
            3,
        );
        check(
            r#"[{"full_name":false},{"full_name":[]}]"#,
            Some(r#"[{"full_name":"[MASKED]"},{"full_name":"[MASKED]"}]"#),
            2,
        );
        check(
            r#"{"email":{"a": [1, 2]},"id":0}"#,
            Some(&format!(r#"{{"email":"{}","id":0}}"#, hashed(r#"{"a": [1, 2]}"#))),
            1,
        );
    }

    #[test]
    fn null_strategy_and_null_values() {
        check(r#"{"ssn":"078-05-1120","id":1}"#, Some(r#"{"ssn":null,"id":1}"#), 1);
        check(r#"{"ssn":{"x":[1]}}"#, Some(r#"{"ssn":null}"#), 1);
        // A null stays null, and is not counted: there is nothing to hide.
        check(r#"{"full_name":null,"ssn":null}"#, Some(r#"{"full_name":null,"ssn":null}"#), 0);
    }

    #[test]
    fn no_match_borrows() {
        check(
            r#"{"id":1,"name":"full_name","tags":["ssn"]}"#,
            Some(r#"{"id":1,"name":"full_name","tags":["ssn"]}"#),
            0,
        );
    }

    #[test]
    fn invalid_documents_are_refused() {
        for input in [
            "",
            "   ",
            "{",
            "[",
            "}",
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            "[1,]",
            "[,1]",
            "[1 2]",
            r#"{"a" 1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{a:1}"#,
            r#"{'a':1}"#,
            r#"{1:1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":1e+}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":True}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\u12g4"}"#,
            r#"{"a":"\ud800\u12"}"#,
            r#"{"a":"unterminated}"#,
            r#"{"a":"trailing backslash\"#,
            "{\"a\":\"raw\ttab\"}",
            "{\"a\":\"raw\nnewline\"}",
            "{} {}",
            "{}x",
            "[] ,",
            "\u{feff}{}",
            "\u{a0}{}",
            // Refused even after a member was masked: nothing is reported.
            r#"{"full_name":"Ada",}"#,
            r#"{"full_name":"Ada"} x"#,
            r#"{"full_name":{"a":}}"#,
            r#"{"full_name":"\q"}"#,
        ] {
            check(input, None, 0);
        }
    }

    #[test]
    fn scalar_documents_are_refused() {
        for input in [r#""full_name""#, "1", "-2.5", "true", "false", "null", " \"x\" "] {
            check(input, None, 0);
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let nested =
            |depth: usize| format!(r#"{}{{"full_name":"Ada"}}{}"#, "[".repeat(depth - 1), "]".repeat(depth - 1));
        let masked =
            |depth: usize| format!(r#"{}{{"full_name":"[MASKED]"}}{}"#, "[".repeat(depth - 1), "]".repeat(depth - 1));
        check(&nested(MAX_DEPTH), Some(&masked(MAX_DEPTH)), 1);
        check(&nested(MAX_DEPTH + 1), None, 0);
        check(&nested(100_000), None, 0);
        // Inside a value replaced whole too.
        let deep_value = format!(r#"{{"full_name":{}{}}}"#, "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        check(&deep_value, None, 0);
        let deepest_value = format!(r#"{{"full_name":{}{}}}"#, "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        check(&deepest_value, Some(r#"{"full_name":"[MASKED]"}"#), 1);
    }

    type Detected<'a> = Result<(Cow<'a, str>, usize), JsonError>;

    /// Content detection with the members of an LLM answer: `logprobs` emptied, `embedding` kept, `usage` reported,
    /// `full_name` replaced; what was reported comes back as (key, raw text).
    fn detect(input: &str) -> (Detected<'_>, Vec<(String, &str)>) {
        let member = |depth: usize, key: &str| match key {
            "logprobs" => Member::Empty,
            "embedding" => Member::Keep,
            "usage" if depth == 1 => Member::Report,
            "full_name" => Member::Replace(Strategy::Redact),
            _ => Member::Walk,
        };
        let mut reported = Vec::new();
        let result = mask_json_values(input, &MASKER, &member, &mut |key, raw| reported.push((key.to_string(), raw)));
        (result, reported)
    }

    /// `input` masks to `expected`, `count` values masked, borrowed exactly when it is unchanged.
    fn check_detected(input: &str, expected: &str, count: usize) {
        let (output, _) = detect(input);
        let (output, masked) = output.unwrap_or_else(|error| panic!("{input:?} refused: {error}"));
        assert_eq!(output, expected, "in {input:?}");
        assert_eq!(masked, count, "values masked in {input:?}");
        assert_eq!(matches!(output, Cow::Borrowed(_)), input == expected, "borrowed iff unchanged, in {input:?}");
        // serde_json refuses lone surrogates, which the grammar allows.
        if serde_json::from_str::<serde_json::Value>(input).is_ok() {
            serde_json::from_str::<serde_json::Value>(&output).expect("the output is JSON");
        }
    }

    #[test]
    fn detection_masks_string_and_number_values_not_keys() {
        check_detected(
            r#"{"jane.roe@example.com":"write to jane.roe@example.com", "n":[12, 4111111111111111, -1.5e3]}"#,
            r#"{"jane.roe@example.com":"write to ***@example.com", "n":[12, "************1111", -1.5e3]}"#,
            2,
        );
        // Findings anywhere in the tree, each value masked on its own; a scalar document too.
        check_detected(
            r#"[{"a":{"b":["call +1 415 555 0100 or 415 555 0199"]}},"123-45-6789",true,null]"#,
            r#"[{"a":{"b":["call [PHONE] or [PHONE]"]}},"[SSN]",true,null]"#,
            3,
        );
        check_detected(r#" "jane.roe@example.com" "#, r#" "***@example.com" "#, 1);
        check_detected("\n{ \"a\" : \"nothing here\" ,\t\"b\":0 }\n", "\n{ \"a\" : \"nothing here\" ,\t\"b\":0 }\n", 0);
    }

    #[test]
    fn detection_sees_through_escapes_and_escapes_what_it_writes() {
        // An escaped `@` or `.` hides no address; the masked text is written escaped again.
        check_detected(r#"{"a":"jane.roe\u0040example\u002ecom"}"#, r#"{"a":"***@example.com"}"#, 1);
        check_detected(r#"{"a":"\"jane.roe@example.com\"\n\u0001"}"#, r#"{"a":"\"***@example.com\"\n\u0001"}"#, 1);
        // Escapes with no finding are copied as they came.
        check_detected(r#"{"a":"caf\u00e9\/\ud83d\ude00\ud800"}"#, r#"{"a":"caf\u00e9\/\ud83d\ude00\ud800"}"#, 0);
    }

    #[test]
    fn members_can_be_kept_emptied_replaced_or_reported() {
        check_detected(
            r#"{"embedding":[4111111111111111],"data":{"embedding":"AKIAIOSFODNN7EXAMPLE"}}"#,
            r#"{"embedding":[4111111111111111],"data":{"embedding":"AKIAIOSFODNN7EXAMPLE"}}"#,
            0,
        );
        check_detected(
            r#"{"logprobs":[{"token":"jane"}],"x":{"logprobs":{"a":1}},"y":{"logprobs":null},"z":{"logprobs":[]}}"#,
            r#"{"logprobs":[],"x":{"logprobs":null},"y":{"logprobs":null},"z":{"logprobs":[]}}"#,
            0,
        );
        check_detected(r#"{"full_name":"Ada","note":"Ada"}"#, r#"{"full_name":"[MASKED]","note":"Ada"}"#, 1);

        // Reported as received, while masked in the output; only at the depth asked for.
        let input = r#"{"usage":{"tokens":12,"note":"jane.roe@example.com"},"x":{"usage":1},"usage":null}"#;
        let (output, reported) = detect(input);
        let (output, count) = output.expect("valid");
        assert_eq!(output, r#"{"usage":{"tokens":12,"note":"***@example.com"},"x":{"usage":1},"usage":null}"#);
        assert_eq!(count, 1);
        let expected = [("usage", r#"{"tokens":12,"note":"jane.roe@example.com"}"#), ("usage", "null")];
        assert_eq!(reported, expected.map(|(key, raw)| (key.to_string(), raw)));
    }

    #[test]
    fn refusals_say_where() {
        for (input, error) in [
            ("", JsonError::Invalid { offset: 0 }),
            (r#"{"a":1,}"#, JsonError::Invalid { offset: 7 }),
            (r#"{"a":"jane.roe@example.com"} x"#, JsonError::Invalid { offset: 29 }),
            (r#"{"logprobs":[1,]}"#, JsonError::Invalid { offset: 15 }),
            (r#"{"embedding":"\q"}"#, JsonError::Invalid { offset: 16 }),
            (
                &format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1)),
                JsonError::TooDeep { offset: MAX_DEPTH },
            ),
        ] {
            assert_eq!(detect(input).0.map(|(output, _)| output.into_owned()), Err(error), "{input:?}");
        }
        assert_eq!(JsonError::TooDeep { offset: 3 }.to_string(), "nested deeper than 128 objects and arrays at byte 3");
    }

    /// A JSON value whose keys often match a rule, with strings that need escaping.
    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let key = prop_oneof![
            Just("full_name".to_string()),
            Just("notes".to_string()),
            Just("email".to_string()),
            Just("ssn".to_string()),
            Just("id".to_string()),
            "[a-z_\"\\\\\u{1}\n é😀]{0,6}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("JSON numbers are finite", |number| number.is_finite()).prop_map(Value::from),
            "[a-z0-9 \"\\\\/\u{0}-\u{1f}é😀\u{2028}]{0,12}".prop_map(Value::String),
            prop_oneof![Just("jane.roe@example.com"), Just("4111 1111 1111 1111"), Just("+1 415 555 0100")]
                .prop_map(|planted| Value::String(format!("call {planted} now"))),
            Just(Value::from(4_111_111_111_111_111_u64)),
        ];
        leaf.prop_recursive(6, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    /// Walks the parsed input and output together: matched members hold their masked value, others are equal.
    /// Returns how many members were masked.
    fn compare(input: &serde_json::Value, output: &serde_json::Value) -> usize {
        use serde_json::Value;
        match (input, output) {
            (Value::Object(input), Value::Object(output)) => {
                assert_eq!(input.len(), output.len());
                let mut masked = 0;
                for (key, value) in input {
                    let out = output.get(key).expect("every key is kept");
                    match rule(key) {
                        Some(_) if value.is_null() => assert!(out.is_null()),
                        Some(strategy) => {
                            match (value, strategy) {
                                // Redact and null ignore the value, so any raw text gives the expected rendering.
                                (Value::String(_), _) | (_, Strategy::Redact | Strategy::Null) => {
                                    let content = value.as_str().unwrap_or("raw text");
                                    let expected =
                                        MASKER.mask_value(content, strategy, None).map_or(Value::Null, Value::String);
                                    assert_eq!(out, &expected, "member {key:?}");
                                }
                                // Partial and hash read the raw text, whose layout the parsed input no longer has:
                                // only their shape is checked here (the tables check the exact text).
                                (_, Strategy::Partial) => {
                                    assert!(out.as_str().is_some_and(|masked| masked.starts_with("****")), "{key:?}")
                                }
                                (_, Strategy::Hash) => {
                                    assert!(
                                        out.as_str().is_some_and(|masked| masked.starts_with("[MASKED:")),
                                        "{key:?}"
                                    )
                                }
                            }
                            masked += 1;
                        }
                        None => masked += compare(value, out),
                    }
                }
                masked
            }
            (Value::Array(input), Value::Array(output)) => {
                assert_eq!(input.len(), output.len());
                input.iter().zip(output).map(|(input, output)| compare(input, output)).sum()
            }
            (input, output) => {
                assert_eq!(input, output);
                0
            }
        }
    }

    /// Walks a document and its content-masked output together: each string is what the masker makes of it, each
    /// number the same or the string the masker makes of its text. Returns how many values were masked.
    fn compare_detected(input: &serde_json::Value, output: &serde_json::Value) -> usize {
        use serde_json::Value;
        let masked = |text: &str| {
            let mut count = 0;
            let masked = MASKER.mask_counting(text, &mut |_| count += 1).into_owned();
            (masked, count)
        };
        match (input, output) {
            (Value::Object(input), Value::Object(output)) => {
                assert_eq!(input.len(), output.len());
                input.iter().map(|(key, value)| compare_detected(value, &output[key])).sum()
            }
            (Value::Array(input), Value::Array(output)) => {
                assert_eq!(input.len(), output.len());
                input.iter().zip(output).map(|(input, output)| compare_detected(input, output)).sum()
            }
            (Value::String(input), Value::String(output)) => {
                let (expected, count) = masked(input);
                assert_eq!(output, &expected);
                count
            }
            (Value::Number(number), Value::String(output)) => {
                let (expected, count) = masked(&number.to_string());
                assert!(count > 0, "{number} was rewritten with nothing found");
                assert_eq!(output, &expected);
                count
            }
            (input, output) => {
                assert_eq!(input, output);
                0
            }
        }
    }

    /// `document` as serde_json writes it, compact or pretty.
    fn serialized(document: &serde_json::Value, pretty: bool) -> String {
        if pretty {
            serde_json::to_string_pretty(document).expect("serializes")
        } else {
            serde_json::to_string(document).expect("serializes")
        }
    }

    proptest! {
        #[test]
        fn masks_every_matching_member_and_nothing_else(document in any_json(), pretty in any::<bool>()) {
            let text = serialized(&document, pretty);
            let (output, count) = run(&text);
            let top_level_container = document.is_object() || document.is_array();
            prop_assert_eq!(output.is_some(), top_level_container);
            let Some(output) = output else { return Ok(()) };
            let input: serde_json::Value = serde_json::from_str(&text).expect("serde_json reads its own output");
            let parsed: serde_json::Value = serde_json::from_str(&output).expect("the output is JSON");
            prop_assert_eq!(compare(&input, &parsed), count);
            prop_assert_eq!(matches!(output, Cow::Borrowed(_)), count == 0);
        }

        #[test]
        fn detection_masks_each_string_as_the_masker_does(document in any_json(), pretty in any::<bool>()) {
            let text = serialized(&document, pretty);
            let (output, count) = mask_json_values(&text, &MASKER, &|_, _| Member::Walk, &mut |_, _| {})
                .expect("serde_json's output is valid JSON");
            // Compared as serde_json reads both texts (it does not read back every float it writes exactly).
            let input: serde_json::Value = serde_json::from_str(&text).expect("serde_json reads its own output");
            let parsed: serde_json::Value = serde_json::from_str(&output).expect("the output is JSON");
            prop_assert_eq!(compare_detected(&input, &parsed), count);
            prop_assert_eq!(matches!(output, Cow::Borrowed(_)), count == 0);
        }

        #[test]
        fn accepts_exactly_what_serde_json_accepts(
            tokens in proptest::collection::vec(
                prop_oneof![
                    Just("{"), Just("}"), Just("["), Just("]"), Just(","), Just(":"), Just(" "), Just("\n"),
                    Just("\"full_name\""), Just("\"ssn\""), Just("\"x\""), Just(r#""a\"b""#), Just(r#""\u00e9\/""#),
                    Just("1"), Just("-0.5e3"), Just("0"), Just("true"), Just("null"), Just("nul"), Just("\""),
                    Just("\\"), Just("\t"), Just("x"),
                ],
                0..24,
            )
        ) {
            let text = tokens.concat();
            let (output, count) = run(&text);
            let container = text.trim_start().starts_with(['{', '[']);
            let serde_accepts = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            prop_assert_eq!(output.is_some(), container && serde_accepts, "{:?}", text);
            if let Some(output) = output {
                prop_assert!(serde_json::from_str::<serde_json::Value>(&output).is_ok());
                prop_assert_eq!(matches!(output, Cow::Borrowed(_)), count == 0);
            } else {
                prop_assert_eq!(count, 0);
            }
        }
    }
}
