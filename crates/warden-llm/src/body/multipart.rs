//! Multipart bodies (`multipart/form-data`, `multipart/mixed`, … — RFC 2046 §5.1, RFC 7578), masked part by part as
//! they stream: each part's body goes through a [`BodyMasker`] of the part's own `Content-Type` (JSON, text, an
//! event stream, binary passed untouched, none sniffed, a nested multipart up to [`MAX_DEPTH`] levels), and the
//! values of its headers other than `Content-Type` and `Content-Transfer-Encoding` (a file name, say) are masked as
//! text. Delimiters are copied; the preamble and the epilogue, which a receiver ignores, are dropped.
//!
//! Fail closed: a body without its boundary parameter, one that is not multipart as RFC 2046 frames it, one that
//! ends before its close delimiter, a part's headers over [`MAX_HEADER_BYTES`] or not UTF-8, and a maskable part in
//! a `Content-Transfer-Encoding` that would hide its text from the detectors (base64, quoted-printable) are errors.
//! Held at any time: at most a delimiter's length of the body (besides a part's headers and what its own masker
//! holds).

use memchr::memmem::Finder;
use warden_mask::Masker;

use super::{BodyError, BodyKind, BodyMasker};

/// The largest header section of one part.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How deep multipart bodies may nest (a multipart part of a multipart body is level 2).
pub const MAX_DEPTH: usize = 4;

/// The longest boundary RFC 2046 allows.
const MAX_BOUNDARY_BYTES: usize = 70;

/// The most transport padding (spaces and tabs) accepted after a delimiter.
const MAX_PADDING_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the first delimiter (dropped).
    Preamble,
    /// Just after a delimiter: `--` (the close delimiter) or padding and CRLF.
    AfterDelimiter,
    /// A part's header section.
    Headers,
    /// A part's body.
    Body,
    /// After the close delimiter (dropped).
    Epilogue,
}

pub(super) struct MultipartMasker {
    /// `CRLF--boundary`: what ends a part's body.
    delimiter: Vec<u8>,
    finder: Finder<'static>,
    phase: Phase,
    /// Input not yet consumed. The body is read as if it began with CRLF, so that a first delimiter at its very
    /// start is found as every other.
    pending: Vec<u8>,
    /// The current part's masker.
    part: Option<Box<BodyMasker>>,
    masker: Masker,
    hold_back: usize,
    depth: usize,
    /// Body bytes consumed before `pending` (plus the CRLF put in front), for error offsets.
    consumed: u64,
}

impl MultipartMasker {
    /// A masker for a body of `content_type` (`multipart/…; boundary=…`), nested `depth` levels deep (1: the body).
    pub(super) fn new(
        content_type: &str,
        masker: Masker,
        hold_back: usize,
        depth: usize,
    ) -> Result<MultipartMasker, BodyError> {
        if depth > MAX_DEPTH {
            return Err(BodyError::InvalidMultipart {
                offset: 0,
                reason: format!("multipart bodies nest deeper than {MAX_DEPTH} levels"),
            });
        }
        let delimiter = delimiter(content_type)?;
        Ok(MultipartMasker {
            finder: Finder::new(&delimiter).into_owned(),
            delimiter,
            phase: Phase::Preamble,
            pending: b"\r\n".to_vec(),
            part: None,
            masker,
            hold_back,
            depth,
            consumed: 0,
        })
    }

    pub(super) fn push(&mut self, chunk: &[u8], findings: &mut usize) -> Result<Vec<u8>, BodyError> {
        if self.phase == Phase::Epilogue {
            return Ok(Vec::new());
        }
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(chunk.len() + 16);
        self.run(&mut out, findings, false)?;
        Ok(out)
    }

    pub(super) fn finish(&mut self, findings: &mut usize) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        self.run(&mut out, findings, true)?;
        if self.phase != Phase::Epilogue {
            return Err(self.error(0, "the body ends before its close delimiter"));
        }
        Ok(out)
    }

    fn error(&self, at: usize, reason: &str) -> BodyError {
        let offset = (self.consumed + at as u64).saturating_sub(2);
        BodyError::InvalidMultipart { offset, reason: reason.to_string() }
    }

    /// Drops the first `count` pending bytes.
    fn consume(&mut self, count: usize) {
        self.pending.drain(..count);
        self.consumed += count as u64;
    }

    /// Goes as far as the pending input allows (`last`: no more will come).
    fn run(&mut self, out: &mut Vec<u8>, findings: &mut usize, last: bool) -> Result<(), BodyError> {
        loop {
            let went_on = match self.phase {
                Phase::Preamble => self.preamble(out),
                Phase::AfterDelimiter => self.after_delimiter(out, last)?,
                Phase::Headers => self.headers(out, findings)?,
                Phase::Body => self.body(out, findings)?,
                Phase::Epilogue => {
                    let all = self.pending.len();
                    self.consume(all);
                    false
                }
            };
            if !went_on {
                return Ok(());
            }
        }
    }

    /// Whether the phase changed.
    fn preamble(&mut self, out: &mut Vec<u8>) -> bool {
        match self.finder.find(&self.pending) {
            Some(at) => {
                // The first delimiter, written without its CRLF: the preamble is dropped.
                out.extend_from_slice(&self.delimiter[2..]);
                self.consume(at + self.delimiter.len());
                self.phase = Phase::AfterDelimiter;
                true
            }
            None => {
                let keep = self.delimiter.len() - 1;
                self.consume(self.pending.len().saturating_sub(keep));
                false
            }
        }
    }

    fn after_delimiter(&mut self, out: &mut Vec<u8>, last: bool) -> Result<bool, BodyError> {
        if self.pending.starts_with(b"--") {
            out.extend_from_slice(b"--\r\n");
            self.consume(2);
            self.phase = Phase::Epilogue;
            return Ok(true);
        }
        let line_end = self.pending.windows(2).position(|pair| pair == b"\r\n");
        // Without a line end yet, a last CR may be the first half of one.
        let padding = line_end.unwrap_or(self.pending.len() - usize::from(self.pending.last() == Some(&b'\r')));
        if let Some(at) = self.pending[..padding].iter().position(|byte| !matches!(byte, b' ' | b'\t')) {
            // A lone `-` may be the first half of `--`.
            if !(at == 0 && self.pending == b"-" && !last) {
                return Err(self.error(at, "a delimiter is followed by something other than CRLF or --"));
            }
        }
        match line_end {
            Some(at) => {
                out.extend_from_slice(b"\r\n");
                self.consume(at + 2);
                self.phase = Phase::Headers;
                Ok(true)
            }
            None if self.pending.len() > MAX_PADDING_BYTES => {
                Err(self.error(MAX_PADDING_BYTES, "a delimiter is followed by too much padding"))
            }
            None => Ok(false),
        }
    }

    fn headers(&mut self, out: &mut Vec<u8>, findings: &mut usize) -> Result<bool, BodyError> {
        // No headers: the section is the empty line alone.
        let end = if self.pending.starts_with(b"\r\n") {
            Some(0)
        } else {
            Finder::new(b"\r\n\r\n").find(&self.pending).map(|at| at + 2)
        };
        let Some(end) = end else {
            if self.pending.len() > MAX_HEADER_BYTES + 2 {
                return Err(self.error(0, &format!("a part's headers are longer than {MAX_HEADER_BYTES} bytes")));
            }
            return Ok(false);
        };
        if end > MAX_HEADER_BYTES {
            return Err(self.error(0, &format!("a part's headers are longer than {MAX_HEADER_BYTES} bytes")));
        }
        let Ok(section) = std::str::from_utf8(&self.pending[..end]) else {
            return Err(self.error(0, "a part's headers are not UTF-8"));
        };
        let mut content_type = None;
        let mut transfer_encoding = None;
        let mut written = String::with_capacity(section.len());
        for line in section.split_terminator("\r\n") {
            let (name, value) = header(line).map_err(|reason| self.error(0, reason))?;
            if name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value);
                written.push_str(line);
            } else if name.eq_ignore_ascii_case("content-transfer-encoding") {
                transfer_encoding = Some(value);
                written.push_str(line);
            } else {
                written.push_str(name);
                written.push_str(": ");
                written.push_str(&self.masker.mask_counting(value, &mut |_| *findings += 1));
            }
            written.push_str("\r\n");
        }
        if let Some(reason) = hidden_text(content_type, transfer_encoding) {
            return Err(self.error(0, &reason));
        }
        let part = BodyMasker::nested(content_type, self.masker.clone(), self.hold_back, self.depth + 1);
        self.part = Some(Box::new(part));
        out.extend_from_slice(written.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.consume(end + 2);
        self.phase = Phase::Body;
        Ok(true)
    }

    fn body(&mut self, out: &mut Vec<u8>, findings: &mut usize) -> Result<bool, BodyError> {
        let part = self.part.as_mut().expect("a part's body has its masker");
        match self.finder.find(&self.pending) {
            Some(at) => {
                let masked = part.push(&self.pending[..at]).and_then(|mut masked| {
                    masked.extend(part.finish()?);
                    Ok(masked)
                });
                let masked = masked.map_err(|error| part_error(self.consumed, error))?;
                *findings += part.masked_count();
                out.extend_from_slice(&masked);
                out.extend_from_slice(&self.delimiter);
                self.part = None;
                self.consume(at + self.delimiter.len());
                self.phase = Phase::AfterDelimiter;
                Ok(true)
            }
            None => {
                // What may be the start of a delimiter stays.
                let ready = self.pending.len().saturating_sub(self.delimiter.len() - 1);
                if ready > 0 {
                    let masked = part.push(&self.pending[..ready]).map_err(|error| part_error(self.consumed, error))?;
                    out.extend_from_slice(&masked);
                    self.consume(ready);
                }
                Ok(false)
            }
        }
    }
}

/// A part's masker's error, said of the multipart body (a nested multipart's says where it is itself).
fn part_error(consumed: u64, error: BodyError) -> BodyError {
    match error {
        BodyError::InvalidMultipart { .. } => error,
        other => BodyError::InvalidMultipart {
            offset: consumed.saturating_sub(2),
            reason: format!("a part's body: {other}"),
        },
    }
}

/// `CRLF--boundary`, what ends each part of a body of `content_type`.
fn delimiter(content_type: &str) -> Result<Vec<u8>, BodyError> {
    let boundary = boundary(content_type).ok_or_else(|| BodyError::InvalidMultipart {
        offset: 0,
        reason: "its content type has no usable boundary parameter".to_string(),
    })?;
    Ok([&b"\r\n--"[..], boundary.as_bytes()].concat())
}

/// Why a part of `content_type` in `transfer_encoding` cannot be read for its text (base64 or quoted-printable would
/// hide it from the detectors), if it cannot. A binary part is never read, so any encoding goes.
pub(super) fn hidden_text(content_type: Option<&str>, transfer_encoding: Option<&str>) -> Option<String> {
    let encoding = transfer_encoding?;
    let identity = ["7bit", "8bit", "binary"].iter().any(|identity| encoding.eq_ignore_ascii_case(identity));
    (!identity && BodyKind::of(content_type) != BodyKind::Binary)
        .then(|| format!("a part in Content-Transfer-Encoding {encoding} cannot be masked"))
}

/// A part's header line: its name and its trimmed value.
fn header(line: &str) -> Result<(&str, &str), &'static str> {
    let (name, value) = line.split_once(':').ok_or("a part's header line has no colon")?;
    Ok((name, value.trim()))
}

/// The `boundary` parameter of a multipart content type: 1 to 70 characters, quoted or not.
fn boundary(content_type: &str) -> Option<String> {
    for parameter in content_type.split(';').skip(1) {
        let Some((name, value)) = parameter.split_once('=') else { continue };
        if !name.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            Some(quoted) => quoted.strip_suffix('"')?,
            None => value,
        };
        let usable = !value.is_empty()
            && value.len() <= MAX_BOUNDARY_BYTES
            && !value.ends_with(' ')
            && value.bytes().all(|byte| byte.is_ascii_graphic() || byte == b' ')
            && !value.contains('"');
        return usable.then(|| value.to_string());
    }
    None
}

/// The text of the form field `name` of a whole `multipart/form-data` body of `content_type` (its first such field),
/// if it has one. A body that is not multipart as RFC 2046 frames it, or a field that is not UTF-8, is an error.
pub(super) fn form_field(content_type: &str, body: &[u8], name: &str) -> Result<Option<String>, BodyError> {
    let parts = form_parts(content_type, body)?;
    let Some(part) = parts.iter().find(|part| part.name.as_deref() == Some(name)) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&body[part.content.clone()]).map_err(|_| BodyError::InvalidMultipart {
        offset: part.content.start as u64,
        reason: "a form field is not UTF-8".to_string(),
    })?;
    Ok(Some(text.to_string()))
}

/// A part of a whole multipart body: the form field name its `Content-Disposition` gives, its `Content-Type` and
/// `Content-Transfer-Encoding`, the values of its other headers (a file name is in one), and where its content is in
/// the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormPart {
    pub name: Option<String>,
    /// The file name its `Content-Disposition` gives, if any.
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub transfer_encoding: Option<String>,
    /// The values of its headers other than `Content-Type` and `Content-Transfer-Encoding`, which the masker masks as
    /// text.
    pub other_headers: Vec<String>,
    pub content: std::ops::Range<usize>,
}

/// The parts of a whole multipart body of `content_type`, in order. A body that is not multipart as RFC 2046 frames
/// it (a delimiter not followed by CRLF or `--`, headers that do not end or are not UTF-8, no close delimiter) is an
/// error.
pub fn form_parts(content_type: &str, body: &[u8]) -> Result<Vec<FormPart>, BodyError> {
    let invalid = |reason: &str| BodyError::InvalidMultipart { offset: 0, reason: reason.to_string() };
    let delimiter = delimiter(content_type)?;
    let finder = Finder::new(&delimiter);
    // Read as if it began with CRLF, so that a first delimiter at its very start is found as every other.
    let framed = [&b"\r\n"[..], body].concat();
    let starts: Vec<usize> = finder.find_iter(&framed).collect();
    if starts.is_empty() {
        return Err(invalid("the body has no delimiter"));
    }
    let mut parts = Vec::with_capacity(starts.len() - 1);
    for pair in starts.windows(2) {
        let from = pair[0] + delimiter.len();
        let part = &framed[from..pair[1]];
        let Some(line_end) = Finder::new(b"\r\n").find(part) else {
            return Err(invalid("a delimiter is followed by something other than CRLF or --"));
        };
        if part.starts_with(b"--") || part[..line_end].iter().any(|byte| !matches!(byte, b' ' | b'\t')) {
            return Err(invalid("a delimiter is followed by something other than CRLF or --"));
        }
        let part = &part[line_end + 2..];
        let (headers, skipped) = if part.starts_with(b"\r\n") {
            (&part[..0], 2)
        } else {
            let end = Finder::new(b"\r\n\r\n").find(part).ok_or_else(|| invalid("a part's headers do not end"))?;
            (&part[..end], end + 4)
        };
        let headers = std::str::from_utf8(headers).map_err(|_| invalid("a part's headers are not UTF-8"))?;
        let (mut name, mut filename) = (None, None);
        let (mut content_type, mut transfer_encoding, mut other_headers) = (None, None, Vec::new());
        for line in headers.split_terminator("\r\n") {
            let Ok((header, value)) = header(line) else { continue };
            let header = header.trim();
            if header.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_string());
                continue;
            }
            if header.eq_ignore_ascii_case("content-transfer-encoding") {
                transfer_encoding = Some(value.to_string());
                continue;
            }
            other_headers.push(value.to_string());
            if header.eq_ignore_ascii_case("content-disposition") {
                for parameter in value.split(';').skip(1) {
                    if let Some((key, value)) = parameter.split_once('=') {
                        let value = || Some(value.trim().trim_matches('"').to_string());
                        if key.trim().eq_ignore_ascii_case("name") && name.is_none() {
                            name = value();
                        } else if key.trim().eq_ignore_ascii_case("filename") && filename.is_none() {
                            filename = value();
                        }
                    }
                }
            }
        }
        // Offsets in `framed` are 2 past those in `body` (the CRLF put before it).
        let start = from + line_end + 2 + skipped - 2;
        parts.push(FormPart {
            name,
            filename,
            content_type,
            transfer_encoding,
            other_headers,
            content: start..pair[1] - 2,
        });
    }
    let last = &framed[starts[starts.len() - 1] + delimiter.len()..];
    if !last.starts_with(b"--") {
        return Err(invalid("the body ends before its close delimiter"));
    }
    Ok(parts)
}
