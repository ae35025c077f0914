//! A batch's results: which request reads them, and the tokens they report.
//!
//! A batch (OpenAI `POST /v1/batches`, Anthropic `POST /v1/messages/batches`) runs its requests later and reports
//! their usage only in its results, one JSON line per request:
//! - Anthropic, `GET /v1/messages/batches/{id}/results`: `{"custom_id": …, "result": {"type": "succeeded",
//!   "message": {"model": …, "usage": {…}}}}`;
//! - OpenAI, the batch's output file, `GET /v1/files/{id}/content`: `{"custom_id": …, "response": {"status_code":
//!   200, "body": {"model": …, "usage": {…}}}, "error": null}`. Any file is read at that path: only lines of that
//!   shape make it a batch's output.
//!
//! [`BatchUsage`] sums what the lines report as they stream by, without holding more than one line (at most
//! [`RESULT_LINE_BYTES`]). The gateway counts the sum once per batch, however often its results are read.

use crate::api::{normalized, Api};
use crate::json::Json;
use crate::response::{read_usage, Usage};

/// The longest result line whose usage is read; a longer one is counted as unread (its bytes still go through).
pub const RESULT_LINE_BYTES: usize = 8 << 20;

/// The batch (Anthropic) or file (OpenAI) id whose results `method` on `path` reads, if it reads any: Anthropic
/// `GET /v1/messages/batches/{id}/results`, OpenAI `GET /v1/files/{id}/content` (a batch's output file, or some
/// other file: the lines tell).
pub fn reads_batch_results<'a>(api: Api, method: &str, path: &'a str) -> Option<&'a str> {
    if !method.eq_ignore_ascii_case("GET") {
        return None;
    }
    let path = normalized(path);
    let id = match api {
        Api::Anthropic => path.strip_prefix("/messages/batches/")?.strip_suffix("/results")?,
        Api::OpenAi => path.strip_prefix("/files/")?.strip_suffix("/content")?,
    };
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// What a batch's results reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchTotals {
    /// The model of the first result that named one (a batch runs one model).
    pub model: Option<String>,
    /// Results that reported usage.
    pub requests: u64,
    /// Their tokens, summed.
    pub usage: Usage,
    /// Result lines whose usage could not be read: not JSON, or longer than [`RESULT_LINE_BYTES`].
    pub unread: u64,
}

/// Sums the usage of a batch's results, fed the raw bytes of the answer as they come ([`BatchUsage::push`]).
#[derive(Debug)]
pub struct BatchUsage {
    api: Api,
    line: Vec<u8>,
    /// The current line went over [`RESULT_LINE_BYTES`]: the rest of it is skipped.
    skipping: bool,
    /// Lines that were batch results (with or without usage).
    results: u64,
    totals: BatchTotals,
}

impl BatchUsage {
    pub fn new(api: Api) -> BatchUsage {
        BatchUsage { api, line: Vec::new(), skipping: false, results: 0, totals: BatchTotals::default() }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        while let Some(end) = memchr::memchr(b'\n', bytes) {
            self.extend(&bytes[..end]);
            self.end_line();
            bytes = &bytes[end + 1..];
        }
        self.extend(bytes);
    }

    /// The totals, once the answer has ended; `None` when no line was a batch result (an OpenAI file of something
    /// else, an empty answer).
    pub fn finish(mut self) -> Option<BatchTotals> {
        self.end_line();
        (self.results > 0).then_some(self.totals)
    }

    fn extend(&mut self, bytes: &[u8]) {
        if self.skipping {
            return;
        }
        if self.line.len() + bytes.len() > RESULT_LINE_BYTES {
            self.skipping = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.skipping) {
            self.totals.unread += 1;
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let Ok(value) = Json::parse(&line) else {
            self.totals.unread += 1;
            return;
        };
        // A result line, and the answer in it if its request succeeded.
        let (is_result, answer) = match self.api {
            Api::Anthropic => {
                let result = value.member("result");
                let succeeded = result.filter(|result| result.str_member("type") == Some("succeeded"));
                (result.is_some(), succeeded.and_then(|result| result.member("message")))
            }
            Api::OpenAi => {
                let response = value.get("response");
                (response.is_some(), response.and_then(|response| response.member("body")))
            }
        };
        if !is_result || value.member("custom_id").is_none() {
            return;
        }
        self.results += 1;
        let Some(answer) = answer else { return };
        if self.totals.model.is_none() {
            self.totals.model = answer.str_member("model").map(str::to_string);
        }
        if let Some(usage) = answer.member("usage").and_then(|usage| read_usage(self.api, usage)) {
            let totals = &mut self.totals;
            totals.requests += 1;
            totals.usage.input_tokens = totals.usage.input_tokens.saturating_add(usage.input_tokens);
            totals.usage.output_tokens = totals.usage.output_tokens.saturating_add(usage.output_tokens);
            totals.usage.total_tokens = totals.usage.total_tokens.saturating_add(usage.total_tokens);
        }
    }
}

#[cfg(test)]
mod tests;
