//! Server-sent events (the WHATWG `text/event-stream` format), incrementally: the [`SseParser`] turns chunks of bytes
//! into the events they complete, and [`SseEvent::write`] serialises an event back into a valid frame.
//!
//! Parsing follows the specification's rules: lines end with LF, CRLF or CR (a CRLF split across chunks is one line
//! end); a leading byte-order mark is dropped; a line starting with `:` is a comment; `field: value` (one space after
//! the colon removed) sets `event`, `data` (several data lines joined with `\n`), `id` (ignored if it contains NUL)
//! or `retry` (ASCII digits only), other fields are ignored; an empty line ends the event. Unlike a browser, the
//! parser also returns events without data (comments, a `retry` or an `id` alone), so that a proxy can forward
//! keep-alive comments and reconnection hints. The stream must be UTF-8 (a browser would replace bad bytes; warden
//! refuses them, since it masks the text).
//!
//! Memory is bounded by `max_event_bytes`: the fields of the event being read and its current line never exceed it.

/// One event: its fields as the stream had them, and its comment lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field (the type; a client reads none as `message`).
    pub event: Option<String>,
    /// The data lines joined with `\n`; `None` when the event had no data line (a browser dispatches nothing then).
    pub data: Option<String>,
    /// The `id` field (the empty string resets the client's last event id).
    pub id: Option<String>,
    /// The `retry` field, in milliseconds.
    pub retry: Option<u64>,
    /// Comment lines, without their leading `:`.
    pub comments: Vec<String>,
}

impl SseEvent {
    /// An event with data only.
    pub fn data(data: impl Into<String>) -> SseEvent {
        SseEvent { data: Some(data.into()), ..SseEvent::default() }
    }

    /// An event with a type and data.
    pub fn named(event: impl Into<String>, data: impl Into<String>) -> SseEvent {
        SseEvent { event: Some(event.into()), data: Some(data.into()), ..SseEvent::default() }
    }

    /// Appends the event as a frame: comments, then `event`, `id`, `retry` and one `data:` line per line of data
    /// (LF, CRLF and CR all split lines), then the empty line that ends it. Line breaks and NUL in `event` and `id`,
    /// which a frame cannot carry, are dropped. A frame parses back to the same event.
    pub fn write(&self, out: &mut Vec<u8>) {
        for comment in &self.comments {
            for line in lines(comment) {
                out.push(b':');
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
        }
        let field = |out: &mut Vec<u8>, name: &str, value: &str| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend(value.bytes().filter(|byte| !matches!(byte, b'\r' | b'\n' | 0)));
            out.push(b'\n');
        };
        if let Some(event) = &self.event {
            field(out, "event", event);
        }
        if let Some(id) = &self.id {
            field(out, "id", id);
        }
        if let Some(retry) = self.retry {
            field(out, "retry", &retry.to_string());
        }
        if let Some(data) = &self.data {
            for line in lines(data) {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
        }
        out.push(b'\n');
    }

    /// The frame [`SseEvent::write`] appends.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    /// Whether the event carries nothing at all.
    pub fn is_empty(&self) -> bool {
        self.event.is_none()
            && self.data.is_none()
            && self.id.is_none()
            && self.retry.is_none()
            && self.comments.is_empty()
    }
}

/// The lines of `text`, split at LF, CRLF or CR (`n` line breaks give `n + 1` lines).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(index) => {
                let skip = if current[index..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&current[index + skip..]);
                Some(&current[..index])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// An event stream warden cannot read; all are the sender's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the event stream is not valid UTF-8 (in the line ending at byte {offset})")]
    InvalidUtf8 { offset: u64 },
    /// The stream ended inside an event, which a client discards (the specification says so).
    #[error("the event stream ended inside an event ({bytes} bytes discarded)")]
    Incomplete { bytes: usize },
}

/// The incremental parser: bytes in, completed events out.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// The current line, without its terminator.
    line: Vec<u8>,
    /// The event being read.
    event: SseEvent,
    /// Bytes of the event's lines read so far (terminators counted as one byte each).
    event_bytes: usize,
    /// The last chunk ended with CR: an LF starting the next one belongs to it.
    after_cr: bool,
    /// No line has ended yet (a byte-order mark may start the first).
    first_line: bool,
    /// Bytes consumed, for error offsets.
    offset: u64,
}

impl SseParser {
    /// A parser for one stream; an event (its lines, terminators included) may be at most `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> SseParser {
        SseParser {
            max_event_bytes,
            line: Vec::new(),
            event: SseEvent::default(),
            event_bytes: 0,
            after_cr: false,
            first_line: true,
            offset: 0,
        }
    }

    /// Feeds a chunk; returns the events it completes, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    self.offset += 1;
                    continue;
                }
            }
            match rest.iter().position(|byte| matches!(byte, b'\n' | b'\r')) {
                Some(index) => {
                    self.append(&rest[..index])?;
                    self.after_cr = rest[index] == b'\r';
                    self.offset += index as u64 + 1;
                    rest = &rest[index + 1..];
                    self.end_line(&mut events)?;
                }
                None => {
                    self.append(rest)?;
                    self.offset += rest.len() as u64;
                    rest = &[];
                }
            }
        }
        Ok(events)
    }

    /// The end of the stream. The specification dispatches nothing at the end (an event is complete only at its
    /// empty line), so this returns no event; it is a list so that a caller can treat it as the last `push`. An
    /// error if the stream stopped inside an event, which is discarded, as a client would discard it.
    pub fn finish(&mut self) -> Result<Vec<SseEvent>, SseError> {
        let bytes = self.event_bytes + self.line.len();
        self.line.clear();
        self.event = SseEvent::default();
        self.event_bytes = 0;
        if bytes > 0 {
            return Err(SseError::Incomplete { bytes });
        }
        Ok(Vec::new())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.event_bytes + self.line.len() + bytes.len() + 1 > self.max_event_bytes {
            return Err(SseError::TooLarge { limit: self.max_event_bytes });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut line = std::mem::take(&mut self.line);
        let mut start = 0;
        if std::mem::take(&mut self.first_line) && line.starts_with("\u{feff}".as_bytes()) {
            start = 3;
        }
        let result = self.field(&line[start..], events);
        line.clear();
        self.line = line;
        result
    }

    fn field(&mut self, line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            if !self.event.is_empty() {
                events.push(std::mem::take(&mut self.event));
            }
            self.event_bytes = 0;
            return Ok(());
        }
        let text = std::str::from_utf8(line).map_err(|_| SseError::InvalidUtf8 { offset: self.offset })?;
        self.event_bytes += line.len() + 1;
        if let Some(comment) = text.strip_prefix(':') {
            self.event.comments.push(comment.to_string());
            return Ok(());
        }
        let (name, value) = match text.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (text, ""),
        };
        match name {
            "event" => self.event.event = Some(value.to_string()),
            "data" => match &mut self.event.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.event.data = Some(value.to_string()),
            },
            "id" if !value.contains('\0') => self.event.id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) => {
                // Digits beyond u64 are ignored like any invalid value.
                if let Ok(retry) = value.parse() {
                    self.event.retry = Some(retry);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
