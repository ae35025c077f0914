//! Masking a text that arrives in pieces (an LLM's streamed answer, an HTTP body read chunk by chunk): the
//! [`StreamMasker`] releases the masked text of each piece as early as the detectors allow, holding back only the tail
//! that could still become, or extend, a finding.
//!
//! ## What is held back
//!
//! After each piece, the masker asks, for each position of the unreleased text in turn, whether a candidate of any
//! detector starting there could still be in progress: an anchored walk of a lazy DFA built from every detector's
//! pattern (all of them at once, every match kept, so no alternative is forgotten) over the text up to
//! [`LOOKAHEAD`] bytes before its end, or, failing that, whether the walk over the whole text dies without ever
//! matching (then no candidate starts there at all, and there is nothing for a validator to look past). The first
//! position where neither holds is the earliest *open* start; everything before it is *settled*: which candidates
//! start there, where they end, and what their validators say (they look at most two bytes past a candidate, a
//! Unicode word boundary four) no longer depends on what comes next. The settled part is released, masked by the same scan [`Masker::mask`] runs (with up to a keyword window of
//! already released text kept as look-behind context), except a finding that runs past it, which is held whole.
//!
//! So prose is released up to its last word (an email's local part could be in progress), and whole when it ends
//! in a space or a punctuation mark no candidate can run through; a number is held while more digits or separators could extend it into a phone, card or IBAN;
//! a `-----BEGIN … PRIVATE KEY-----` block is held until its `-----END … PRIVATE KEY-----`.
//!
//! ## What is guaranteed
//!
//! - **Exactness within the window.** While the open tail fits in `hold_back` bytes at every step, the concatenation
//!   of everything [`StreamMasker::push`] and [`StreamMasker::finish`] return equals `masker.mask(whole_text)`, for
//!   any way of cutting the text into pieces, and `found` is called once per finding of the whole text. The open
//!   tail exceeds the window only when a candidate (or a run that some pattern could still be matching) is longer
//!   than the window: built-in values other than PEM blocks and JWTs are bounded by their patterns (credentials at
//!   most about 270 bytes, an email with eight domain labels of 63 characters 633; addresses glued together without
//!   a separator are one finding, as long as the chain), and realistic ones are under 200.
//! - **PEM private keys and JWTs, the two built-in values of unbounded length, are held up to [`LONG_VALUE_CAP`]
//!   (16 KiB) whatever the window.** Beyond that they are withheld: one masked rendering of the part seen (the
//!   detector's strategy, `hash` giving the bare label) is released, then nothing of the value's characters until the
//!   block's `-----END … PRIVATE KEY-----` line, or for a JWT the first character that cannot be part of one. This
//!   fails closed: what follows a value withheld this way is masked as usual.
//! - **Beyond the window (an overflow).** The oldest bytes are released so that `hold_back` bytes stay held,
//!   masked by scanning the unreleased text as if it ended there; a finding that scan sees across the cut is released
//!   whole, masked. What can then be released in part is a candidate longer than the window (with built-in
//!   detectors and the default window, a credential or email at its pattern's extreme length; or a custom pattern
//!   that can run that long), and the output may differ from `masker.mask(whole_text)`; the property tests check
//!   that a finding of at most `hold_back - LOOKAHEAD` bytes never shows more than it does in the whole text masked.
//!   [`StreamMasker::overflows`] counts such releases.
//! - **Bounded memory.** Between calls, at most `hold_back` bytes are held (or [`LONG_VALUE_CAP`] while a PEM
//!   block or JWT is open), plus the look-behind context (the longest keyword window of the detectors plus 16 bytes;
//!   64 with the built-ins), plus at most 3 bytes of an incomplete UTF-8 sequence; during a call, also the piece
//!   being pushed. The lazy DFA's caches are not the masker's: they are pooled, one per thread pushing at once,
//!   each capped at 256 KiB (cleared and refilled beyond that).
//!
//! A custom pattern's word boundaries (`\b`, `\B`) are left out of the walk (which then sees a superset of the
//! pattern's matches: more is held, never less), since the lazy DFA cannot check a Unicode word boundary; a custom
//! pattern with a lazy repetition is held as if greedy (the PEM pattern's own lazy body is settled by the scan
//! instead). Both only make the masker hold more.
//!
//! Cost per piece: the scan and the walks cover the unreleased text and the new piece, never what was released.

use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::Arc;

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::util::pool::Pool;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind, PatternID};

use crate::{Detector, Finding, Kind, MaskError, Masker};

#[cfg(test)]
mod tests;

/// A reasonable window: every realistic built-in value fits, and prose is never delayed by more than a word.
pub const DEFAULT_HOLD_BACK: usize = 256;

/// How much of an open PEM private key block or JWT is held, whatever the window, before it is withheld whole.
pub const LONG_VALUE_CAP: usize = 16 * 1024;

/// Bytes at the end of the unreleased text that are never settled: a validator looks at most two bytes past a
/// candidate, a Unicode word boundary decodes one character (up to four bytes) past it, and the walk that settles a
/// candidate always reads at least one byte past its end.
pub const LOOKAHEAD: usize = 4;

/// The lazy DFA's cache, past which it is cleared and refilled (the walks stay correct, only slower).
const STREAM_CACHE_BYTES: usize = 256 * 1024;

type CacheFn = Box<dyn Fn() -> Cache + Send + Sync + UnwindSafe + RefUnwindSafe>;

/// What is kept of a withheld value's end, to see its PEM END line arrive: `-----END ` + 40 + `PRIVATE KEY-----`.
const WITHHELD_TAIL: usize = 80;

/// A piece of bytes that cannot be masked as text; the stream must stop (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The bytes are not UTF-8; `offset` counts the bytes pushed before the first bad one.
    #[error("the text is not valid UTF-8 (at byte {offset})")]
    InvalidUtf8 { offset: u64 },
    /// The text ended inside a UTF-8 sequence.
    #[error("the text ends inside a UTF-8 sequence (at byte {offset})")]
    TruncatedUtf8 { offset: u64 },
}

/// The detectors' patterns compiled once more, for the walks that decide what is still open: built with the
/// [`Masker`], shared by every [`StreamMasker`] made from it. The lazy DFA's caches (about 100 KiB each to start
/// with) are pooled like the meta regex's: a masker takes one only for the length of a call, so there are as many as
/// threads pushing at once, not as many as streams.
pub(crate) struct Automaton {
    dfa: Arc<DFA>,
    caches: Pool<Cache, CacheFn>,
    /// The custom detectors' patterns, which take priority over the built-ins.
    custom: Vec<PatternID>,
    pem: Option<PatternID>,
    jwt: Option<PatternID>,
    /// Already released text kept before the unreleased part, as look-behind for the scan.
    context: usize,
}

impl Automaton {
    /// `patterns[i]` is the pattern of detector `kinds[i]`, in the masker's priority order; `longest_window` the
    /// largest keyword window of any detector.
    pub(crate) fn new(patterns: &[String], kinds: &[Kind], longest_window: usize) -> Result<Automaton, MaskError> {
        let relaxed: Vec<String> = patterns
            .iter()
            .zip(kinds)
            .map(|(pattern, kind)| match kind {
                Kind::Custom(_) => without_word_boundaries(pattern),
                Kind::Builtin(_) => pattern.clone(),
            })
            .collect();
        let config = DFA::config()
            .match_kind(MatchKind::All)
            .starts_for_each_pattern(true)
            .cache_capacity(STREAM_CACHE_BYTES)
            .skip_cache_capacity_check(true);
        let dfa = match DFA::builder().configure(config.clone()).build_many(&relaxed) {
            Ok(dfa) => dfa,
            // The relaxed text did not parse (an unusual escape): the patterns as they are, giving up (holding) on
            // non-ASCII text where a Unicode word boundary would have to be checked.
            Err(_) => DFA::builder()
                .configure(config.unicode_word_boundary(true))
                .build_many(patterns)
                .map_err(|error| MaskError::Compile(format!("the streaming automaton: {error}")))?,
        };
        let dfa = Arc::new(dfa);
        let for_pool = Arc::clone(&dfa);
        let caches: Pool<Cache, CacheFn> = Pool::new(Box::new(move || for_pool.create_cache()));
        let id = |index: usize| PatternID::new(index).expect("pattern count fits");
        let position = |detector: Detector| kinds.iter().position(|kind| *kind == Kind::Builtin(detector)).map(id);
        Ok(Automaton {
            dfa,
            caches,
            custom: kinds
                .iter()
                .enumerate()
                .filter(|(_, kind)| matches!(kind, Kind::Custom(_)))
                .map(|(i, _)| id(i))
                .collect(),
            pem: position(Detector::PemPrivateKey),
            jwt: position(Detector::Jwt),
            context: longest_window.max(16) + 16,
        })
    }
}

/// `pattern` without its word-boundary assertions (`\b`, `\B`, `\b{…}`, `\<`, `\>`): every match of the pattern is a
/// match of the result, so a walk over the result is alive wherever one over the pattern would be.
fn without_word_boundaries(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut characters = pattern.chars().peekable();
    while let Some(character) = characters.next() {
        if character != '\\' {
            out.push(character);
            continue;
        }
        match characters.next() {
            Some('b') => {
                if characters.peek() == Some(&'{') {
                    for skipped in characters.by_ref() {
                        if skipped == '}' {
                            break;
                        }
                    }
                }
            }
            Some('B' | '<' | '>') => {}
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Whether a candidate starting at `from` (anchored as `anchored`) could still be in progress after `text[..to]`.
/// Undecidable walks (a quit byte, a cache that gave up) count as alive: holding is the safe answer.
fn alive(automaton: &Automaton, cache: &mut Cache, text: &[u8], from: usize, to: usize, anchored: Anchored) -> bool {
    let dfa = &automaton.dfa;
    let look_behind = from.checked_sub(1).map(|index| text[index]);
    let config = start::Config::new().anchored(anchored).look_behind(look_behind);
    let Ok(mut state) = dfa.start_state(cache, &config) else {
        return true;
    };
    for &byte in &text[from..to] {
        match dfa.next_state(cache, state, byte) {
            Ok(next) if next.is_dead() => return false,
            Ok(next) if next.is_quit() => return true,
            Ok(next) => state = next,
            Err(_) => return true,
        }
    }
    !state.is_dead()
}

/// Whether the anchored walk from `from` dies before `to` without passing a match: no candidate of any detector
/// starts at `from`, whatever follows.
fn dies_unmatched(automaton: &Automaton, cache: &mut Cache, text: &[u8], from: usize, to: usize) -> bool {
    let dfa = &automaton.dfa;
    let look_behind = from.checked_sub(1).map(|index| text[index]);
    let config = start::Config::new().anchored(Anchored::Yes).look_behind(look_behind);
    let Ok(mut state) = dfa.start_state(cache, &config) else {
        return false;
    };
    if state.is_match() {
        return false;
    }
    for &byte in &text[from..to] {
        match dfa.next_state(cache, state, byte) {
            // A match is reported one byte late: a dead state right after one is still a match state's successor.
            Ok(next) if next.is_dead() => return true,
            Ok(next) if next.is_quit() || next.is_match() => return false,
            Ok(next) => state = next,
            Err(_) => return false,
        }
    }
    false
}

fn next_boundary(text: &str, at: usize) -> usize {
    at + text[at..].chars().next().map_or(1, char::len_utf8)
}

fn ceil_boundary(text: &str, mut at: usize) -> usize {
    while at < text.len() && !text.is_char_boundary(at) {
        at += 1;
    }
    at.min(text.len())
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// A character of a PEM block's body, headers or END line (the PEM pattern's body class).
fn pem_character(character: char) -> bool {
    character.is_ascii_alphanumeric() || "+/=\r\n\t :,.\\-".contains(character)
}

/// A character of a JWT (its three base64url parts and the dots between them).
fn jwt_character(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '_' | '-' | '.')
}

/// Whether `tail`, which ends with `PRIVATE KEY-----`, ends with a whole `-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----`.
fn pem_end_line(tail: &str) -> bool {
    let Some(label_end) = tail.len().checked_sub("PRIVATE KEY-----".len()) else {
        return false;
    };
    let Some(marker) = tail[..label_end].rfind("-----END ") else {
        return false;
    };
    let between = &tail[marker + "-----END ".len()..label_end];
    between.len() <= 40
        && between.bytes().all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b' ')
}

/// An over-long PEM block or JWT being withheld.
struct Withheld {
    detector: Detector,
    /// Its last [`WITHHELD_TAIL`] to `2 *` [`WITHHELD_TAIL`] characters (all ASCII), for the END line and as
    /// look-behind once it ends.
    tail: String,
}

/// Masks a text that arrives in pieces: each piece's masked text is released as soon as no finding can still cover
/// it. See the module documentation for the exact guarantee.
pub struct StreamMasker {
    masker: Masker,
    hold_back: usize,
    /// `buffer[..held_from]`: released text kept as look-behind context; `buffer[held_from..]`: the unreleased text.
    buffer: String,
    held_from: usize,
    /// Candidates starting before this offset of `buffer` are settled (their walks died; settling is permanent).
    frontier: usize,
    /// The start of an incomplete UTF-8 sequence from [`StreamMasker::push_bytes`] (at most 3 bytes).
    pending: Vec<u8>,
    withheld: Option<Withheld>,
    overflows: u64,
    /// Bytes taken by `push_bytes` so far, for error offsets.
    offset: u64,
    /// The scan's findings, kept to reuse the allocation.
    findings: Vec<Finding>,
}

impl StreamMasker {
    /// A masker for one text; `hold_back` is the window: the most bytes held between calls (but see
    /// [`LONG_VALUE_CAP`]).
    pub fn new(masker: Masker, hold_back: usize) -> StreamMasker {
        StreamMasker {
            masker,
            hold_back,
            buffer: String::new(),
            held_from: 0,
            frontier: 0,
            pending: Vec::new(),
            withheld: None,
            overflows: 0,
            offset: 0,
            findings: Vec::new(),
        }
    }

    /// Appends `text`; returns the masked text that is now safe to release (possibly empty). `found` is called with
    /// the kind of each value masked in what is released.
    pub fn push(&mut self, text: &str, found: &mut dyn FnMut(Kind)) -> String {
        let mut out = String::new();
        let mut text = text;
        if self.withheld.is_some() {
            let consumed = self.withhold(text);
            text = &text[consumed..];
            if self.withheld.is_some() {
                return out;
            }
        }
        // Nothing new to release, unless an incomplete character just put the window over its size.
        if text.is_empty() && self.held() <= self.hold_back {
            return out;
        }
        self.buffer.push_str(text);
        self.release(&mut out, found);
        out
    }

    /// End of the text: masks and returns whatever is held. The masker is then ready for a new text.
    pub fn finish(&mut self, found: &mut dyn FnMut(Kind)) -> String {
        let mut out = String::new();
        if self.withheld.is_none() {
            let mut findings = std::mem::take(&mut self.findings);
            findings.clear();
            findings.extend(self.masker.scan_from(&self.buffer, self.held_from));
            self.emit(&findings, self.buffer.len(), &mut out, found);
            self.findings = findings;
        }
        self.reset();
        out
    }

    /// [`StreamMasker::push`] for raw bytes: an incomplete UTF-8 sequence at the end is held until the next piece;
    /// bytes that are not UTF-8 are an error, after which the stream must stop.
    pub fn push_bytes(&mut self, bytes: &[u8], found: &mut dyn FnMut(Kind)) -> Result<Vec<u8>, StreamError> {
        let mut out = String::new();
        let mut bytes = bytes;
        if !self.pending.is_empty() {
            let width = match self.pending[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (width - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            match std::str::from_utf8(&self.pending) {
                Ok(character) => {
                    let character = character.to_string();
                    self.offset += self.pending.len() as u64;
                    self.pending.clear();
                    out.push_str(&self.push(&character, found));
                }
                Err(error) if error.error_len().is_none() => return Ok(Vec::new()),
                Err(_) => return Err(StreamError::InvalidUtf8 { offset: self.offset }),
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                out.push_str(&self.push(text, found));
                self.offset += bytes.len() as u64;
            }
            Err(error) => {
                let valid = error.valid_up_to();
                if error.error_len().is_some() {
                    return Err(StreamError::InvalidUtf8 { offset: self.offset + valid as u64 });
                }
                let text = std::str::from_utf8(&bytes[..valid]).expect("valid up to here");
                // Pending before the text is pushed: the incomplete character counts against the window.
                self.pending.extend_from_slice(&bytes[valid..]);
                out.push_str(&self.push(text, found));
                self.offset += valid as u64;
            }
        }
        Ok(out.into_bytes())
    }

    /// [`StreamMasker::finish`] for raw bytes: an error if the text ends inside a UTF-8 sequence.
    pub fn finish_bytes(&mut self, found: &mut dyn FnMut(Kind)) -> Result<Vec<u8>, StreamError> {
        if !self.pending.is_empty() {
            let offset = self.offset;
            self.reset();
            return Err(StreamError::TruncatedUtf8 { offset });
        }
        Ok(self.finish(found).into_bytes())
    }

    /// Bytes held (not yet released): the open tail and any incomplete UTF-8 sequence. A withheld value's dropped
    /// characters are not held.
    pub fn held(&self) -> usize {
        self.buffer.len() - self.held_from + self.pending.len()
    }

    /// How many times the window overflowed (text released while a candidate might still cover it).
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    /// Forgets the current text (held text included, unreleased), keeping the compiled state for a new one.
    pub fn reset(&mut self) {
        self.buffer.clear();
        self.held_from = 0;
        self.frontier = 0;
        self.pending.clear();
        self.withheld = None;
        self.offset = 0;
    }

    /// Releases what is settled (or, past the window, what must go).
    fn release(&mut self, out: &mut String, found: &mut dyn FnMut(Kind)) {
        let mut findings = std::mem::take(&mut self.findings);
        findings.clear();
        findings.extend(self.masker.scan_from(&self.buffer, self.held_from));
        let automaton = &self.masker.inner.stream;
        let mut cache = automaton.caches.get();
        let text = self.buffer.as_str();
        let bytes = text.as_bytes();
        let length = text.len();
        let limit = length.saturating_sub(LOOKAHEAD);

        // The earliest open start.
        let mut position = self.frontier.max(self.held_from);
        let mut next_finding = 0;
        let open = loop {
            if position >= length {
                break position;
            }
            // Settled: no candidate can start here. Either the walk dies before the lookahead (whatever it matched
            // ended far enough from the end for its validators), or it dies anywhere in the text without having
            // matched at all (there is no candidate, so nothing to validate: prose ending in a space or a
            // punctuation mark is released at once).
            let settled = (position < limit && !alive(automaton, &mut cache, bytes, position, limit, Anchored::Yes))
                || dies_unmatched(automaton, &mut cache, bytes, position, length);
            if settled {
                position = next_boundary(text, position);
                self.frontier = position;
                continue;
            }
            if position >= limit {
                break position;
            }
            // A complete PEM block found here is settled although the walk is alive (its lazy body could run on to
            // a later END line, but the scan stops at the first), unless a custom pattern, which comes first, is open.
            while findings.get(next_finding).is_some_and(|finding| finding.range.start < position) {
                next_finding += 1;
            }
            if let Some(finding) = findings.get(next_finding) {
                let mut custom_open = || {
                    automaton.custom.iter().any(|pattern| {
                        alive(automaton, &mut cache, bytes, position, limit, Anchored::Pattern(*pattern))
                    })
                };
                if finding.range.start == position
                    && finding.kind == Kind::Builtin(Detector::PemPrivateKey)
                    && !custom_open()
                {
                    position = finding.range.end;
                    self.frontier = position;
                    continue;
                }
            }
            break position;
        };

        drop(cache);

        // Release up to the open start, but never part of a finding.
        let mut cut = open.min(length);
        if let Some(finding) = findings.iter().find(|finding| finding.range.end > cut) {
            cut = cut.min(finding.range.start);
        }

        // The window holds the incomplete character at the end of a byte stream too ([`StreamMasker::held`]).
        let window = self.hold_back.saturating_sub(self.pending.len());
        if length - cut > window {
            let forced = ceil_boundary(text, length - window);
            match self.long_value(cut, forced.min(limit), limit) {
                Some((start, detector)) => {
                    if start > cut {
                        self.overflows += 1;
                    }
                    // Never split a finding the scan sees running into the value.
                    let keep_from = findings
                        .iter()
                        .find(|finding| finding.range.start < start && finding.range.end > start)
                        .map_or(start, |finding| finding.range.start);
                    cut = keep_from;
                    if length - keep_from > LONG_VALUE_CAP {
                        self.emit(&findings, cut, out, found);
                        self.start_withholding(detector, out, found);
                        self.findings = findings;
                        return;
                    }
                }
                None => {
                    self.overflows += 1;
                    cut = forced;
                    if let Some(finding) =
                        findings.iter().find(|finding| finding.range.start < cut && finding.range.end > cut)
                    {
                        cut = finding.range.end;
                    }
                }
            }
        }
        self.emit(&findings, cut, out, found);
        self.findings = findings;
    }

    /// The earliest start in `from..to` of a PEM block or JWT still open at `limit`, with its detector.
    fn long_value(&mut self, from: usize, to: usize, limit: usize) -> Option<(usize, Detector)> {
        let automaton = &self.masker.inner.stream;
        let mut cache = automaton.caches.get();
        let bytes = self.buffer.as_bytes();
        let mut position = from;
        while position < to {
            let candidate = match bytes[position] {
                b'-' => automaton.pem.map(|pattern| (pattern, Detector::PemPrivateKey)),
                b'e' => automaton.jwt.map(|pattern| (pattern, Detector::Jwt)),
                _ => None,
            };
            if let Some((pattern, detector)) = candidate {
                if alive(automaton, &mut cache, bytes, position, limit, Anchored::Pattern(pattern)) {
                    return Some((position, detector));
                }
            }
            position = next_boundary(&self.buffer, position);
        }
        None
    }

    /// Appends the masked text of `buffer[held_from..cut]` (given the scan's findings from `held_from`, none of
    /// which starts before `cut` and ends after it) and moves `held_from` to `cut`, trimming the context.
    fn emit(&mut self, findings: &[Finding], cut: usize, out: &mut String, found: &mut dyn FnMut(Kind)) {
        let mut copied = self.held_from;
        for finding in findings.iter().take_while(|finding| finding.range.start < cut) {
            out.push_str(&self.buffer[copied..finding.range.start]);
            self.masker.render(&self.buffer, finding, out, found);
            copied = finding.range.end;
        }
        out.push_str(&self.buffer[copied..cut]);
        self.held_from = cut;
        self.frontier = self.frontier.max(cut);
        let context = self.masker.inner.stream.context;
        if self.held_from > context {
            let drop = floor_boundary(&self.buffer, self.held_from - context);
            self.buffer.drain(..drop);
            self.held_from -= drop;
            self.frontier -= drop;
        }
    }

    /// Withholds the over-long value that is all of `buffer[held_from..]`: one masked rendering now, then nothing of
    /// it until it ends.
    fn start_withholding(&mut self, detector: Detector, out: &mut String, found: &mut dyn FnMut(Kind)) {
        let seen = &self.buffer[self.held_from..];
        found(Kind::Builtin(detector));
        if let Some(masked) = self.masker.render_withheld(detector, seen) {
            out.push_str(&masked);
        }
        let tail_from = floor_boundary(seen, seen.len().saturating_sub(WITHHELD_TAIL));
        let mut withheld = Withheld { detector, tail: String::new() };
        // The value's walk was alive to the end, so its tail is all part of it; fed through the same checks anyway.
        let tail = seen[tail_from..].to_string();
        let (consumed, ended) = withhold_into(&mut withheld, &tail);
        self.buffer.clear();
        self.held_from = 0;
        self.frontier = 0;
        if ended || consumed < tail.len() {
            self.buffer.push_str(&withheld.tail);
            self.buffer.push_str(&tail[consumed..]);
            self.held_from = self.buffer.len() - (tail.len() - consumed);
            self.frontier = self.held_from;
        } else {
            self.withheld = Some(withheld);
        }
    }

    /// Drops the withheld value's characters from `text`; returns how many bytes were consumed (all of `text` while
    /// the value goes on). When it ends, the masker resumes with the value's tail as look-behind.
    fn withhold(&mut self, text: &str) -> usize {
        let Some(withheld) = self.withheld.as_mut() else {
            return 0;
        };
        let (consumed, ended) = withhold_into(withheld, text);
        if ended || consumed < text.len() {
            let withheld = self.withheld.take().expect("checked above");
            self.buffer.clear();
            self.buffer.push_str(&withheld.tail);
            self.held_from = self.buffer.len();
            self.frontier = self.held_from;
        }
        consumed
    }
}

/// Feeds `text` into a withheld value up to the first character that cannot be part of it, or (PEM) the end of its
/// END line; returns the bytes consumed and whether the value ended.
fn withhold_into(withheld: &mut Withheld, text: &str) -> (usize, bool) {
    for (index, character) in text.char_indices() {
        let part_of_it = match withheld.detector {
            Detector::PemPrivateKey => pem_character(character),
            _ => jwt_character(character),
        };
        if !part_of_it {
            return (index, true);
        }
        withheld.tail.push(character);
        if withheld.tail.len() > 2 * WITHHELD_TAIL {
            withheld.tail.drain(..withheld.tail.len() - WITHHELD_TAIL);
        }
        if withheld.detector == Detector::PemPrivateKey
            && character == '-'
            && withheld.tail.ends_with("PRIVATE KEY-----")
            && pem_end_line(&withheld.tail)
        {
            return (index + 1, true);
        }
    }
    (text.len(), false)
}

impl std::fmt::Debug for StreamMasker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StreamMasker")
            .field("hold_back", &self.hold_back)
            .field("held", &self.held())
            .field("withholding", &self.withheld.as_ref().map(|withheld| withheld.detector))
            .field("overflows", &self.overflows)
            .finish_non_exhaustive()
    }
}
