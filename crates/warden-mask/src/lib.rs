//! warden-mask owns finding and masking sensitive values in text: the built-in detectors (emails, phone numbers,
//! payment cards, US SSNs, IBANs, IP addresses, cloud and API credentials, JWTs, PEM private keys), custom detectors
//! from config, their validators (Luhn and issuer ranges, SSN rules, IBAN mod-97…) and the masking strategies
//! (`redact`, `partial`, `hash`, `null`).
//!
//! It is pure logic: no IO, no global state. A [`Masker`] is compiled once per config version and shared; scanning is
//! one pass of one multi-pattern automaton over the text (regex-automata's meta regex: a lazy DFA with literal
//! prefilters), then a validator per candidate. Time is linear in the text (a rejected candidate costs at most its
//! own bounded length again), memory bounded by the automaton's cache.
//!
//! Matching rules, in order: the leftmost candidate wins; at the same start, custom detectors come first, then the
//! built-ins in [`Detector::ALL`] order; a candidate its validator rejects gives way to the next detector matching at
//! the same start, then to whatever starts later. Findings never overlap.
//!
//! Cost: a rejected candidate is scanned again from its next character (the rest of its ASCII word when only
//! built-in detectors run), so near misses everywhere cost a small constant factor (built-in candidates are bounded
//! in length); a custom pattern with unbounded repetition that its validator or keywords often reject can make that
//! factor the candidate's length.

#![forbid(unsafe_code)]

mod detectors;
mod json;
mod strategy;
mod stream;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input, PatternID};

pub use json::{mask_json_members, mask_json_values, JsonError, Member};
pub use strategy::Strategy;
pub use stream::{StreamError, StreamMasker, DEFAULT_HOLD_BACK, LONG_VALUE_CAP, LOOKAHEAD};

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// A PEM private key block, `-----BEGIN … PRIVATE KEY-----` to its `-----END … PRIVATE KEY-----`.
    PemPrivateKey,
    /// A JSON Web Token: three base64url parts, header and payload both JSON objects (`eyJ…`).
    Jwt,
    /// An AWS access key id (`AKIA…`, `ASIA…` and the other documented prefixes).
    AwsAccessKeyId,
    /// An AWS secret access key: 40 base64 characters, only near a keyword (`aws`, `secret`).
    AwsSecretKey,
    /// A GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// A Slack token (`xoxb-`, `xoxp-`…) or incoming-webhook URL.
    SlackToken,
    /// An Anthropic API key (`sk-ant-…`).
    AnthropicKey,
    /// An OpenAI API key (`sk-…`, `sk-proj-…`).
    OpenAiKey,
    /// A Stripe secret or restricted key (`sk_live_`, `rk_test_`…).
    StripeKey,
    /// An email address.
    Email,
    /// An IBAN, compact or in groups of four, with its country's length and a valid mod-97 check.
    Iban,
    /// A payment card number: 13 to 19 digits, Luhn-valid, in a known issuer range, compact or grouped by spaces
    /// or dashes.
    PaymentCard,
    /// A US Social Security number, `AAA-GG-SSSS`, with a valid area, group and serial.
    UsSsn,
    /// A phone number: international (`+` country code, 8 to 15 digits) or national with separators (North
    /// American `(212) 555-0123`, French `06 12 34 56 78`, British `020 7946 0958`).
    Phone,
    /// An IPv6 address (checked by the standard library's parser).
    Ipv6,
    /// A dotted-quad IPv4 address.
    Ipv4,
}

impl Detector {
    /// Every built-in detector, in matching priority order.
    pub const ALL: [Detector; 16] = [
        Detector::PemPrivateKey,
        Detector::Jwt,
        Detector::AwsAccessKeyId,
        Detector::AwsSecretKey,
        Detector::GithubToken,
        Detector::SlackToken,
        Detector::AnthropicKey,
        Detector::OpenAiKey,
        Detector::StripeKey,
        Detector::Email,
        Detector::Iban,
        Detector::PaymentCard,
        Detector::UsSsn,
        Detector::Phone,
        Detector::Ipv6,
        Detector::Ipv4,
    ];

    /// The name used in config (`email`, `payment_card`…).
    pub fn name(self) -> &'static str {
        match self {
            Detector::PemPrivateKey => "pem_private_key",
            Detector::Jwt => "jwt",
            Detector::AwsAccessKeyId => "aws_access_key_id",
            Detector::AwsSecretKey => "aws_secret_key",
            Detector::GithubToken => "github_token",
            Detector::SlackToken => "slack_token",
            Detector::AnthropicKey => "anthropic_key",
            Detector::OpenAiKey => "openai_key",
            Detector::StripeKey => "stripe_key",
            Detector::Email => "email",
            Detector::Iban => "iban",
            Detector::PaymentCard => "payment_card",
            Detector::UsSsn => "us_ssn",
            Detector::Phone => "phone",
            Detector::Ipv6 => "ipv6",
            Detector::Ipv4 => "ipv4",
        }
    }

    /// The label in masked output (`[EMAIL]`, `[CARD:…]`).
    pub fn label(self) -> &'static str {
        match self {
            Detector::PemPrivateKey => "PRIVATE_KEY",
            Detector::Jwt => "JWT",
            Detector::AwsAccessKeyId => "AWS_ACCESS_KEY_ID",
            Detector::AwsSecretKey => "AWS_SECRET_KEY",
            Detector::GithubToken => "GITHUB_TOKEN",
            Detector::SlackToken => "SLACK_TOKEN",
            Detector::AnthropicKey => "ANTHROPIC_KEY",
            Detector::OpenAiKey => "OPENAI_KEY",
            Detector::StripeKey => "STRIPE_KEY",
            Detector::Email => "EMAIL",
            Detector::Iban => "IBAN",
            Detector::PaymentCard => "CARD",
            Detector::UsSsn => "SSN",
            Detector::Phone => "PHONE",
            Detector::Ipv6 => "IPV6",
            Detector::Ipv4 => "IPV4",
        }
    }

    /// The strategy used unless the config overrides it: what keeps data useful where that is safe (an email's
    /// domain, a card's last four, an address's network), never any part of a credential.
    pub fn default_strategy(self) -> Strategy {
        match self {
            Detector::Email | Detector::PaymentCard | Detector::Iban => Strategy::Partial,
            Detector::Ipv4 | Detector::Ipv6 => Strategy::Hash,
            Detector::PemPrivateKey
            | Detector::Jwt
            | Detector::AwsAccessKeyId
            | Detector::AwsSecretKey
            | Detector::GithubToken
            | Detector::SlackToken
            | Detector::AnthropicKey
            | Detector::OpenAiKey
            | Detector::StripeKey
            | Detector::UsSsn
            | Detector::Phone => Strategy::Redact,
        }
    }

    /// The candidate pattern (before validation); public for benchmarks and diagnostics.
    pub fn pattern(self) -> &'static str {
        detectors::spec(self).pattern
    }
}

impl std::fmt::Display for Detector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

impl std::str::FromStr for Detector {
    type Err = MaskError;

    fn from_str(name: &str) -> Result<Detector, MaskError> {
        Detector::ALL
            .into_iter()
            .find(|detector| detector.name() == name)
            .ok_or_else(|| MaskError::UnknownDetector(name.to_string()))
    }
}

/// A check on a candidate's text, for custom detectors.
#[derive(Debug, Clone, Copy)]
pub enum Validator {
    /// The digits (other characters ignored) pass the Luhn check.
    Luhn,
    /// A payment card: Luhn plus a known issuer range and length.
    PaymentCard,
    /// An IBAN: country length and mod-97 (spaces ignored).
    Iban,
    /// A US SSN's area, group and serial rules (dashes or spaces ignored).
    UsSsn,
    /// Any other check, given the candidate's text.
    Function(fn(&str) -> bool),
}

impl Validator {
    fn accepts(self, candidate: &str) -> bool {
        match self {
            Validator::Luhn => detectors::luhn_valid(candidate),
            Validator::PaymentCard => detectors::card_number_valid(candidate),
            Validator::Iban => detectors::iban_valid(candidate),
            Validator::UsSsn => detectors::ssn_valid(candidate),
            Validator::Function(check) => check(candidate),
        }
    }
}

/// A detector from config: a pattern, an optional validator, optional context keywords.
#[derive(Debug, Clone)]
pub struct CustomDetector {
    /// Its name, which is also its label in masked output (`[EMPLOYEE_ID]`).
    pub name: String,
    /// The candidate pattern (regex-automata syntax, the `regex` crate's).
    pub pattern: String,
    /// A check the candidate must pass.
    pub validator: Option<Validator>,
    /// When not empty, one of these (ASCII case-insensitive) must occur in the `context_window` bytes before the
    /// candidate, e.g. `employee` before a bare number.
    pub keywords: Vec<String>,
    /// How many bytes before a candidate to look for a keyword; 48 when `None`.
    pub context_window: Option<usize>,
    /// Its strategy; `redact` when `None`.
    pub strategy: Option<Strategy>,
}

/// Which built-in detectors to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every built-in detector (config `"all"`).
    All,
    /// These only (possibly none, for custom detectors alone).
    Only(Vec<Detector>),
}

/// What a [`Masker`] detects and how it masks.
#[derive(Clone)]
pub struct MaskerConfig {
    pub detectors: Selection,
    pub custom: Vec<CustomDetector>,
    /// Strategies replacing built-in defaults ([`Detector::default_strategy`]).
    pub strategies: HashMap<Detector, Strategy>,
    /// The HMAC key of the `hash` strategy: tokens are stable for one key (across rows, sessions, restarts and
    /// gateways sharing it) and unrelated across keys.
    pub hash_key: [u8; 32],
}

impl MaskerConfig {
    /// Every built-in detector with its default strategy.
    pub fn all(hash_key: [u8; 32]) -> MaskerConfig {
        MaskerConfig { detectors: Selection::All, custom: Vec::new(), strategies: HashMap::new(), hash_key }
    }
}

impl std::fmt::Debug for MaskerConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MaskerConfig")
            .field("detectors", &self.detectors)
            .field("custom", &self.custom)
            .field("strategies", &self.strategies)
            .field("hash_key", &"<redacted>")
            .finish()
    }
}

/// What kind of value a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Builtin(Detector),
    /// The custom detector at this index of [`MaskerConfig::custom`].
    Custom(usize),
}

/// A detected value: its kind and its byte range in the text scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub range: Range<usize>,
}

/// A config the masker cannot be built from; always the config author's to fix.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error("unknown detector \"{0}\"")]
    UnknownDetector(String),
    #[error("unknown masking strategy \"{0}\" (expected redact, partial, hash or null)")]
    UnknownStrategy(String),
    #[error("custom detector \"{name}\": invalid pattern: {reason}")]
    InvalidPattern { name: String, reason: String },
    #[error("custom detector \"{name}\": the pattern matches the empty string")]
    EmptyMatch { name: String },
    #[error("custom detector \"{name}\": invalid name (use letters, digits and underscores)")]
    InvalidName { name: String },
    #[error("custom detector \"{name}\": invalid keywords: {reason}")]
    InvalidKeywords { name: String, reason: String },
    #[error("the detectors could not be compiled together: {0}")]
    Compile(String),
}

/// The compiled detectors and strategies: built once per config, `Send + Sync`, cheap to clone and share.
#[derive(Clone)]
pub struct Masker {
    inner: Arc<Inner>,
}

struct Inner {
    /// One pattern per entry of `entries`, same order.
    regex: Regex,
    entries: Vec<Entry>,
    hasher: strategy::Hasher,
    /// After a rejected candidate, skip the rest of its ASCII word: true when there are only built-in detectors (a
    /// custom pattern may start inside a word).
    skip_words: bool,
    /// What [`StreamMasker`] needs to know which candidates are still open at the end of a piece of text.
    stream: stream::Automaton,
    /// The fewest bytes any pattern matches: a shorter text holds no finding and is not scanned at all (with every
    /// built-in detector it is 2, IPv6's `::`, so a JSON answer's many `0`s cost nothing).
    shortest: usize,
}

/// A pattern's build error with its cause (the meta regex's own message only says which pattern failed).
fn build_error(error: &regex_automata::meta::BuildError) -> String {
    match error.syntax_error() {
        Some(syntax) => {
            syntax.to_string().lines().filter(|line| !line.trim().is_empty()).collect::<Vec<_>>().join(": ")
        }
        None => match error.size_limit() {
            Some(limit) => format!("the pattern compiles to more than the size limit of {limit} bytes"),
            None => error.to_string(),
        },
    }
}

/// The fewest bytes a match of any of `patterns` spans (0 when unknown, so that everything is scanned); a pattern
/// that can never match does not count. Parsed with the syntax the meta regex compiles them with.
fn shortest_match(patterns: &[String]) -> usize {
    let mut shortest = usize::MAX;
    for pattern in patterns {
        match regex_automata::util::syntax::parse(pattern) {
            Ok(hir) => {
                if let Some(length) = hir.properties().minimum_len() {
                    shortest = shortest.min(length);
                }
            }
            Err(_) => return 0,
        }
    }
    shortest
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

struct Entry {
    kind: Kind,
    name: String,
    label: String,
    strategy: Strategy,
    check: Check,
    keywords: Option<(AhoCorasick, usize)>,
}

enum Check {
    Builtin(detectors::Validate),
    Custom(Option<Validator>),
}

const DEFAULT_CONTEXT_WINDOW: usize = 48;

impl Masker {
    pub fn new(config: &MaskerConfig) -> Result<Masker, MaskError> {
        let mut patterns: Vec<String> = Vec::new();
        let mut entries = Vec::new();
        for (index, custom) in config.custom.iter().enumerate() {
            let name_ok =
                !custom.name.is_empty() && custom.name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
            if !name_ok {
                return Err(MaskError::InvalidName { name: custom.name.clone() });
            }
            let alone = Regex::new(&custom.pattern).map_err(|error| MaskError::InvalidPattern {
                name: custom.name.clone(),
                reason: build_error(&error),
            })?;
            if alone.is_match("") {
                return Err(MaskError::EmptyMatch { name: custom.name.clone() });
            }
            let keywords = if custom.keywords.is_empty() {
                None
            } else {
                let automaton =
                    AhoCorasick::builder().ascii_case_insensitive(true).build(&custom.keywords).map_err(|error| {
                        MaskError::InvalidKeywords { name: custom.name.clone(), reason: error.to_string() }
                    })?;
                Some((automaton, custom.context_window.unwrap_or(DEFAULT_CONTEXT_WINDOW)))
            };
            patterns.push(custom.pattern.clone());
            entries.push(Entry {
                kind: Kind::Custom(index),
                name: custom.name.clone(),
                label: custom.name.to_ascii_uppercase(),
                strategy: custom.strategy.unwrap_or(Strategy::Redact),
                check: Check::Custom(custom.validator),
                keywords,
            });
        }
        let selected: Vec<Detector> = match &config.detectors {
            Selection::All => Detector::ALL.to_vec(),
            Selection::Only(only) => Detector::ALL.into_iter().filter(|detector| only.contains(detector)).collect(),
        };
        for detector in selected {
            let spec = detectors::spec(detector);
            let keywords = if spec.keywords.is_empty() {
                None
            } else {
                let automaton = AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(spec.keywords)
                    .expect("built-in keywords are plain words");
                Some((automaton, DEFAULT_CONTEXT_WINDOW))
            };
            patterns.push(spec.pattern.to_string());
            entries.push(Entry {
                kind: Kind::Builtin(detector),
                name: detector.name().to_string(),
                label: detector.label().to_string(),
                strategy: config.strategies.get(&detector).copied().unwrap_or(detector.default_strategy()),
                check: Check::Builtin(spec.validate),
                keywords,
            });
        }
        let regex = Regex::new_many(&patterns).map_err(|error| MaskError::Compile(error.to_string()))?;
        let hasher = strategy::Hasher::new(&config.hash_key);
        let skip_words = config.custom.is_empty();
        let longest_window =
            entries.iter().filter_map(|entry| entry.keywords.as_ref().map(|(_, window)| *window)).max();
        let kinds: Vec<Kind> = entries.iter().map(|entry| entry.kind).collect();
        let stream = stream::Automaton::new(&patterns, &kinds, longest_window.unwrap_or(0))?;
        let shortest = shortest_match(&patterns);
        Ok(Masker { inner: Arc::new(Inner { regex, entries, hasher, skip_words, stream, shortest }) })
    }

    /// Masks every detected value in `text` with its detector's strategy; borrowed when nothing was found (the
    /// common case allocates nothing).
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.mask_counting(text, &mut |_| {})
    }

    /// [`Masker::mask`], calling `found` with the kind of each value masked (for per-detector counts).
    pub fn mask_counting<'a>(&self, text: &'a str, found: &mut dyn FnMut(Kind)) -> Cow<'a, str> {
        let mut output: Option<String> = None;
        let mut copied = 0;
        for finding in self.scan(text) {
            let out = output.get_or_insert_with(|| String::with_capacity(text.len() + 16));
            out.push_str(&text[copied..finding.range.start]);
            self.render(text, &finding, out, found);
            copied = finding.range.end;
        }
        match output {
            None => Cow::Borrowed(text),
            Some(mut out) => {
                out.push_str(&text[copied..]);
                Cow::Owned(out)
            }
        }
    }

    /// The values detected in `text`, in order, without rewriting it.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        self.scan(text).collect()
    }

    /// Applies `strategy` to a whole value, whatever its content (a column rule); `kind` shapes `partial` and labels
    /// `redact` and `hash` (`None`: a generic `[MASKED]`). `None` is SQL NULL, for the `null` strategy.
    pub fn mask_value(&self, value: &str, strategy: Strategy, kind: Option<Detector>) -> Option<String> {
        match kind {
            Some(detector) => {
                strategy::apply(&self.inner.hasher, strategy, Kind::Builtin(detector), detector.label(), value)
            }
            None => strategy::apply(&self.inner.hasher, strategy, Kind::Custom(usize::MAX), "MASKED", value),
        }
    }

    /// A finding's detector name, as config names it: the built-in's (`email`) or the custom detector's.
    pub fn name(&self, kind: Kind) -> &str {
        match kind {
            Kind::Builtin(detector) => detector.name(),
            Kind::Custom(_) => &self.entry(kind).name,
        }
    }

    /// Whether any detector runs at all (a config may select none and rely on column rules).
    pub fn detects_anything(&self) -> bool {
        !self.inner.entries.is_empty()
    }

    /// A finding's label: the built-in's (`EMAIL`) or the custom detector's name, upper-cased.
    pub fn label(&self, kind: Kind) -> &str {
        &self.entry(kind).label
    }

    fn entry(&self, kind: Kind) -> &Entry {
        self.inner.entries.iter().find(|entry| entry.kind == kind).expect("findings come from this masker's entries")
    }

    fn scan<'m, 't>(&'m self, text: &'t str) -> Scan<'m, 't> {
        Scan { inner: &self.inner, text, at: 0 }
    }

    /// The findings of `text` starting at or after `from`, the text before it serving as context only (look-behind,
    /// keyword windows), exactly as a scan of the whole text would see them were its cursor at `from`.
    fn scan_from<'m, 't>(&'m self, text: &'t str, from: usize) -> Scan<'m, 't> {
        Scan { inner: &self.inner, text, at: from }
    }

    /// Appends `finding` (a range of `text`) to `out` as its strategy renders it, and reports its kind.
    fn render(&self, text: &str, finding: &Finding, out: &mut String, found: &mut dyn FnMut(Kind)) {
        let entry = self.entry(finding.kind);
        found(finding.kind);
        if let Some(masked) = strategy::apply(
            &self.inner.hasher,
            entry.strategy,
            finding.kind,
            &entry.label,
            &text[finding.range.clone()],
        ) {
            out.push_str(&masked);
        }
    }

    /// A value withheld by a [`StreamMasker`] because it outgrew [`LONG_VALUE_CAP`]: its strategy applied to what was
    /// seen of it, except `hash`, whose token would depend on the part seen, which gives the label alone.
    fn render_withheld(&self, detector: Detector, seen: &str) -> Option<String> {
        let kind = Kind::Builtin(detector);
        let entry = self.entry(kind);
        match entry.strategy {
            Strategy::Hash => Some(format!("[{}]", entry.label)),
            strategy => strategy::apply(&self.inner.hasher, strategy, kind, &entry.label, seen),
        }
    }
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self.inner.entries.iter().map(|entry| entry.label.as_str()).collect();
        formatter.debug_struct("Masker").field("detectors", &labels).finish_non_exhaustive()
    }
}

/// The one-pass scan: the leftmost candidate of any pattern, validated; on rejection the other patterns anchored at
/// the same start, then onwards from the next character.
struct Scan<'m, 't> {
    inner: &'m Inner,
    text: &'t str,
    at: usize,
}

impl Iterator for Scan<'_, '_> {
    type Item = Finding;

    fn next(&mut self) -> Option<Finding> {
        let text = self.text;
        while self.at <= text.len() {
            if text.len() - self.at < self.inner.shortest {
                // No match fits in what is left (a finding's validator may shorten it, never lengthen it).
                return None;
            }
            let found = self.inner.regex.search(&Input::new(text).span(self.at..text.len()))?;
            let start = found.start();
            if let Some(finding) = self.accept(found.pattern(), start, found.end()) {
                self.at = finding.range.end;
                return Some(finding);
            }
            // Patterns before the one found cannot match at this start (leftmost-first would have chosen them).
            for index in found.pattern().as_usize() + 1..self.inner.entries.len() {
                let pattern = PatternID::new(index).expect("pattern count fits");
                let input = Input::new(text).span(start..text.len()).anchored(Anchored::Pattern(pattern));
                if let Some(other) = self.inner.regex.search(&input) {
                    if let Some(finding) = self.accept(pattern, start, other.end()) {
                        self.at = finding.range.end;
                        return Some(finding);
                    }
                }
            }
            self.at = start + text[start..].chars().next().map_or(1, char::len_utf8);
            if self.inner.skip_words && is_word_byte(text.as_bytes()[start]) {
                // No built-in finding starts inside an ASCII word (they start at a word boundary, or with `+`, `(`,
                // `-`, or are refused when glued to a word), so the rest of this word cannot start one.
                while self.at < text.len() && is_word_byte(text.as_bytes()[self.at]) {
                    self.at += 1;
                }
            }
        }
        None
    }
}

impl Scan<'_, '_> {
    fn accept(&self, pattern: PatternID, start: usize, end: usize) -> Option<Finding> {
        if start == end {
            return None;
        }
        let entry = &self.inner.entries[pattern.as_usize()];
        let end = match &entry.check {
            Check::Builtin(validate) => validate(self.text, start, end)?,
            Check::Custom(None) => end,
            Check::Custom(Some(validator)) => validator.accepts(&self.text[start..end]).then_some(end)?,
        };
        if let Some((keywords, window)) = &entry.keywords {
            let mut from = start.saturating_sub(*window);
            while !self.text.is_char_boundary(from) {
                from += 1;
            }
            if !keywords.is_match(&self.text[from..start]) {
                return None;
            }
        }
        Some(Finding { kind: entry.kind, range: start..end })
    }
}
