//! The prompt guardrails, applied to a request body before it goes upstream, in this order: the model allow-list,
//! the deny patterns (on the prompt texts as sent), input warden cannot read, PII in the prompts (masked in place or
//! refused), the `max_tokens` cap, and usage reporting for streamed chat completions.
//!
//! A [`PromptGuard`] is compiled once per config version (the deny patterns into one multi-pattern regex) and
//! shared. A rewritten body changes only what the guard changed: the prompt text fields, the token budget member,
//! `stream_options`; members keep their order.

use regex_automata::meta::Regex;
use warden_mask::{Kind, Masker};

use crate::api::{self, Api, Endpoint, LlmRequest, ReadRequest};
use crate::json::Json;

/// What to do with PII found in prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptPii {
    /// Send it as it is.
    Allow,
    /// Mask it in the prompt texts (with the connection's masker) before sending.
    Mask,
    /// Refuse the request, naming the kinds found.
    Refuse,
}

/// The guardrails of one connection, as config gives them.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Deny rules: (rule id, regex in the `regex` crate's syntax). A prompt text matching any is refused.
    pub deny: Vec<(String, String)>,
    pub pii: PromptPii,
    /// The most tokens an answer may ask for: a larger request is lowered to it, one without a budget gets it.
    pub max_tokens: Option<u32>,
    /// The models allowed; `None` allows any. An entry ending in `*` allows every model starting with what is before
    /// it (`gpt-4o*`).
    pub models: Option<Vec<String>>,
}

/// A guard config that cannot be compiled; the config author's to fix.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("deny rule \"{rule}\": invalid pattern: {reason}")]
    InvalidPattern { rule: String, reason: String },
    #[error("deny rule \"{rule}\": the pattern matches the empty string, so it would refuse every prompt")]
    EmptyMatch { rule: String },
    #[error("the deny rules could not be compiled together: {0}")]
    Compile(String),
}

/// A request the guard refuses: which rule, and a message for the client that names the thing and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The rule's machine id: `request` (the body is not a valid request for its endpoint), `model` (not on the
    /// allow-list), `deny:<id>` (a deny rule matched), `opaque-input` (token ids while deny rules or PII checks are
    /// on), `prompt-pii` (PII in a prompt, with `pii = "refuse"`), `batch-upload` (a batch's input file uploaded in
    /// parts on a guarded connection).
    pub rule: String,
    pub message: String,
}

impl Refusal {
    fn new(rule: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal { rule: rule.into(), message: message.into() }
    }

    /// The HTTP status to answer with: 400 for a malformed request, 403 for a refusal by a guardrail.
    pub fn status(&self) -> u16 {
        if self.rule == "request" {
            400
        } else {
            403
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.message)
    }
}

/// A request the guard lets through.
#[derive(Debug, Clone)]
pub struct GuardOutcome {
    /// The body to send instead of the client's; `None` when it is unchanged.
    pub body: Option<Vec<u8>>,
    /// What the request asks (as the client sent it: prompts unmasked, its own token budget).
    pub request: LlmRequest,
    /// The token budget sent upstream (the client's, or the cap).
    pub max_tokens: Option<u64>,
    /// warden turned on `stream_options.include_usage` for a streamed chat completion the client did not ask usage
    /// for: the response side must drop the usage-only chunk ([`crate::ResponseMasker`] does, given this).
    pub strip_usage_chunk: bool,
    /// Values masked in the prompts (with `pii = "mask"`).
    pub masked_prompt_findings: usize,
}

/// An OpenAI batch input file the guard lets through.
#[derive(Debug, Clone)]
pub struct BatchUploadOutcome {
    /// The upload to send instead of the client's (its file's requests rewritten); `None` when it is unchanged.
    pub body: Option<Vec<u8>>,
    /// The one model the file's requests name.
    pub model: Option<String>,
    /// The requests' prompt texts, in order (as the client sent them).
    pub prompts: Vec<String>,
}

/// The compiled guardrails of one connection.
#[derive(Debug)]
pub struct PromptGuard {
    deny: Option<Regex>,
    deny_rules: Vec<String>,
    pii: PromptPii,
    max_tokens: Option<u32>,
    models: Option<Vec<String>>,
}

impl PromptGuard {
    pub fn new(config: GuardConfig) -> Result<PromptGuard, GuardError> {
        for (rule, pattern) in &config.deny {
            let alone = Regex::new(pattern)
                .map_err(|error| GuardError::InvalidPattern { rule: rule.clone(), reason: build_error(&error) })?;
            if alone.is_match("") {
                return Err(GuardError::EmptyMatch { rule: rule.clone() });
            }
        }
        let deny = if config.deny.is_empty() {
            None
        } else {
            let patterns: Vec<&str> = config.deny.iter().map(|(_, pattern)| pattern.as_str()).collect();
            Some(Regex::new_many(&patterns).map_err(|error| GuardError::Compile(error.to_string()))?)
        };
        Ok(PromptGuard {
            deny,
            deny_rules: config.deny.into_iter().map(|(rule, _)| rule).collect(),
            pii: config.pii,
            max_tokens: config.max_tokens,
            models: config.models,
        })
    }

    /// Whether the connection allows only some models.
    pub fn restricts_models(&self) -> bool {
        self.models.is_some()
    }

    /// Whether any guardrail is on (an allow-list, a deny rule, PII in prompts masked or refused, a token cap).
    pub fn is_active(&self) -> bool {
        self.models.is_some() || self.deny.is_some() || self.pii != PromptPii::Allow || self.max_tokens.is_some()
    }

    /// Guards an OpenAI file upload (`POST /v1/files`: a whole `multipart/form-data` body of `content_type`) whose
    /// `purpose` is `batch`. Its `file` is JSON lines, each a request the provider runs later (`custom_id`, `method`,
    /// `url`, `body`); each `body` is guarded as a request to its `url` ([`PromptGuard::apply`]: model, deny rules,
    /// prompt PII, the token cap) and rewritten in place. Every request must name the same model (policy decides the
    /// upload on one), and be to an endpoint warden interprets. `None`: not a batch upload.
    pub fn apply_batch_upload(
        &self,
        content_type: &str,
        body: &[u8],
        masker: &Masker,
    ) -> Result<Option<BatchUploadOutcome>, Refusal> {
        let invalid = |message: String| Refusal::new("request", message);
        let parts = crate::body::multipart::form_parts(content_type, body)
            .map_err(|error| invalid(format!("the upload cannot be read: {error}")))?;
        let field = |name: &str| parts.iter().find(|part| part.name.as_deref() == Some(name));
        if field("purpose").is_none_or(|purpose| body[purpose.content.clone()].trim_ascii() != b"batch") {
            return Ok(None);
        }
        let file = field("file").ok_or_else(|| invalid("the batch upload has no \"file\" part".into()))?;
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut changed = false;
        let mut model: Option<String> = None;
        let mut prompts = Vec::new();
        for (index, line) in body[file.content.clone()].split(|byte| *byte == b'\n').enumerate() {
            let number = index + 1;
            if line.trim_ascii().is_empty() {
                lines.push(line.to_vec());
                continue;
            }
            let at = |message: String| format!("the batch file's line {number}: {message}");
            let mut request = Json::parse(line).map_err(|error| invalid(at(format!("not JSON ({error})"))))?;
            let method = request.str_member("method").unwrap_or("POST").to_string();
            let url = request.str_member("url").ok_or_else(|| invalid(at("no \"url\"".into())))?.to_string();
            let endpoint = Endpoint::of(Api::OpenAi, &method, &url);
            if !endpoint.has_prompts() || endpoint == Endpoint::InputTokens {
                return Err(invalid(at(format!("warden does not guard batch requests to {method} {url}"))));
            }
            let inner = match request.member("body") {
                Some(inner @ Json::Object(_)) => inner.to_vec(),
                _ => return Err(invalid(at("\"body\" is missing or not an object".into()))),
            };
            let outcome = self
                .apply(Api::OpenAi, endpoint, &inner, masker)
                .map_err(|refusal| Refusal::new(refusal.rule, at(refusal.message)))?;
            let named =
                outcome.request.model.clone().ok_or_else(|| invalid(at("the request names no model".into())))?;
            match &model {
                Some(first) if *first != named => {
                    return Err(invalid(format!(
                        "the batch file's requests name different models (\"{first}\", \"{named}\"); upload one \
                         file per model"
                    )))
                }
                Some(_) => {}
                None => model = Some(named),
            }
            prompts.extend(outcome.request.prompts);
            match outcome.body {
                Some(rewritten) => {
                    let rewritten = Json::parse(&rewritten).expect("the guard writes JSON");
                    request.set("body", rewritten);
                    lines.push(request.to_vec());
                    changed = true;
                }
                None => lines.push(line.to_vec()),
            }
        }
        let body = changed.then(|| {
            let file_content = lines.join(&b"\n"[..]);
            [&body[..file.content.start], &file_content, &body[file.content.end..]].concat()
        });
        Ok(Some(BatchUploadOutcome { body, model, prompts }))
    }

    /// Checks the start of an OpenAI upload in parts (`POST /v1/uploads`, a whole JSON `body`): on a guarded
    /// connection, one whose `purpose` is `batch` is refused (rule `batch-upload`). Its parts cut the file anywhere,
    /// so its requests could not be guarded line by line as a batch file uploaded whole is
    /// ([`PromptGuard::apply_batch_upload`]).
    pub fn check_upload_start(&self, body: &[u8]) -> Result<(), Refusal> {
        if !self.is_active() {
            return Ok(());
        }
        let value = Json::parse(body)
            .map_err(|error| Refusal::new("request", format!("the upload's start is not JSON ({error})")))?;
        if value.str_member("purpose") == Some("batch") {
            return Err(Refusal::new(
                "batch-upload",
                "a batch's input file is guarded request by request when it is uploaded whole: on this connection, \
                 upload it with POST /v1/files (purpose \"batch\"), not in parts",
            ));
        }
        Ok(())
    }

    /// Whether the guard reads prompt texts: deny rules, or PII in prompts masked or refused.
    pub fn checks_texts(&self) -> bool {
        self.deny.is_some() || self.pii != PromptPii::Allow
    }

    /// Whether PII in prompts is masked before they are sent.
    pub fn masks_prompts(&self) -> bool {
        self.pii == PromptPii::Mask
    }

    /// Checks a request to an endpoint warden does not interpret (an image's prompt, speech's input, a moderation,
    /// a form, an uploaded document…), where any text may be a prompt: every text of its body, read as
    /// [`RequestTexts`](crate::RequestTexts), against the deny rules and, with `pii = "refuse"`, for what `masker`
    /// finds. With `pii = "mask"` the body is masked as it is sent, as any body is (not here). A body whose text
    /// cannot be read is refused (rule `request`).
    pub fn check_texts(&self, body: &crate::RequestTexts, masker: &Masker) -> Result<(), Refusal> {
        if !self.checks_texts() {
            return Ok(());
        }
        let texts = body
            .texts()
            .map_err(|error| Refusal::new("request", format!("the request's text cannot be read: {error}")))?;
        let mut kinds: Vec<Kind> = Vec::new();
        for text in texts {
            self.check_deny(text, "the request's text")?;
            if self.pii == PromptPii::Refuse {
                collect_kinds(masker, text, &mut kinds);
            }
        }
        refuse_pii(masker, &kinds, "the request")
    }

    /// Refuses `text` (rule `deny:<id>`) if a deny rule matches it; `what` names it in the message.
    fn check_deny(&self, text: &str, what: &str) -> Result<(), Refusal> {
        let Some(found) = self.deny.as_ref().and_then(|deny| deny.find(text)) else { return Ok(()) };
        let rule = &self.deny_rules[found.pattern().as_usize()];
        Err(Refusal::new(format!("deny:{rule}"), format!("{what} matches deny rule \"{rule}\"")))
    }

    /// Refuses (rule `model`) a model the allow-list does not name, or no model when there is an allow-list.
    pub fn check_model(&self, model: Option<&str>) -> Result<(), Refusal> {
        let Some(models) = &self.models else { return Ok(()) };
        if model.is_some_and(|model| model_allowed(models, model)) {
            return Ok(());
        }
        let list = if models.is_empty() { "none".to_string() } else { models.join(", ") };
        let message = match model {
            Some(model) => format!("model \"{model}\" is not allowed on this connection (allowed: {list})"),
            None => format!("the request names no model, and this connection allows only some (allowed: {list})"),
        };
        Err(Refusal::new("model", message))
    }

    /// Applies the guardrails to `body`, a request to `endpoint`; `masker` finds (and with `pii = "mask"`, masks)
    /// PII. Endpoints without prompts pass unchanged.
    pub fn apply(&self, api: Api, endpoint: Endpoint, body: &[u8], masker: &Masker) -> Result<GuardOutcome, Refusal> {
        let read = LlmRequest::read(api, endpoint, body).map_err(|error| Refusal::new("request", error.to_string()))?;
        self.apply_read(read, masker)
    }

    /// Applies the guardrails to a request already read ([`LlmRequest::read`]), as [`PromptGuard::apply`] does.
    pub fn apply_read(&self, read: ReadRequest, masker: &Masker) -> Result<GuardOutcome, Refusal> {
        let ReadRequest { request, body } = read;
        let endpoint = request.endpoint;
        let Some(mut value) = body else {
            return Ok(GuardOutcome {
                body: None,
                request,
                max_tokens: None,
                strip_usage_chunk: false,
                masked_prompt_findings: 0,
            });
        };

        self.check_model(request.model.as_deref())?;

        for prompt in &request.prompts {
            self.check_deny(prompt, "the prompt")?;
        }

        if request.opaque_input && self.checks_texts() {
            return Err(Refusal::new(
                "opaque-input",
                "the input is given as token ids, which warden cannot inspect; send it as text",
            ));
        }

        let mut changed = false;
        let mut masked_prompt_findings = 0;
        match self.pii {
            PromptPii::Allow => {}
            PromptPii::Refuse => {
                let mut kinds: Vec<Kind> = Vec::new();
                for prompt in &request.prompts {
                    collect_kinds(masker, prompt, &mut kinds);
                }
                refuse_pii(masker, &kinds, "the prompt")?;
            }
            PromptPii::Mask => {
                api::visit_prompts(endpoint, &mut value, &mut |text| {
                    if let std::borrow::Cow::Owned(masked) =
                        masker.mask_counting(text, &mut |_| masked_prompt_findings += 1)
                    {
                        *text = masked;
                    }
                })
                .map_err(|reason| Refusal::new("request", reason))?;
                changed |= masked_prompt_findings > 0;
            }
        }

        let mut max_tokens = request.max_tokens;
        if let (Some(cap), Some(field)) = (self.max_tokens, endpoint.max_tokens_field()) {
            let cap = u64::from(cap);
            // Chat completions have two members for it (`max_tokens` is the deprecated one): each present is capped.
            let fields: &[&str] = if endpoint == Endpoint::ChatCompletions { &[field, "max_tokens"] } else { &[field] };
            for target in api::capped_objects(endpoint, &mut value) {
                let mut present = false;
                for name in fields {
                    if let Some(asked) = target.member(name).and_then(Json::as_u64) {
                        present = true;
                        if asked > cap {
                            target.set(name, Json::Number(cap.into()));
                            changed = true;
                        }
                    }
                }
                if !present {
                    target.set(field, Json::Number(cap.into()));
                    changed = true;
                }
            }
            max_tokens = Some(request.max_tokens.map_or(cap, |asked| asked.min(cap)));
        }

        let mut strip_usage_chunk = false;
        if endpoint.streams_chunks() && request.stream && request.include_usage != Some(true) {
            strip_usage_chunk = true;
            changed = true;
            match value.get_mut("stream_options").filter(|options| !options.is_null()) {
                Some(options) => options.set("include_usage", Json::Bool(true)),
                None => value.set("stream_options", Json::Object(vec![("include_usage".into(), Json::Bool(true))])),
            }
        }

        Ok(GuardOutcome {
            body: changed.then(|| value.to_vec()),
            request,
            max_tokens,
            strip_usage_chunk,
            masked_prompt_findings,
        })
    }
}

/// Adds the kinds of what `masker` finds in `text` to `kinds`.
fn collect_kinds(masker: &Masker, text: &str, kinds: &mut Vec<Kind>) {
    for finding in masker.find(text) {
        if !kinds.contains(&finding.kind) {
            kinds.push(finding.kind);
        }
    }
}

/// Refuses (rule `prompt-pii`) when `kinds` is not empty, naming them; `what` names where they were found.
fn refuse_pii(masker: &Masker, kinds: &[Kind], what: &str) -> Result<(), Refusal> {
    if kinds.is_empty() {
        return Ok(());
    }
    let mut names: Vec<&str> = kinds.iter().map(|kind| masker.name(*kind)).collect();
    names.sort_unstable();
    Err(Refusal::new("prompt-pii", format!("{what} contains personal data or secrets ({})", names.join(", "))))
}

fn model_allowed(models: &[String], model: &str) -> bool {
    models.iter().any(|allowed| match allowed.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => allowed == model,
    })
}

/// A pattern's build error with its cause (the meta regex's own message only says which pattern failed).
fn build_error(error: &regex_automata::meta::BuildError) -> String {
    match error.syntax_error() {
        Some(syntax) => {
            syntax.to_string().lines().filter(|line| !line.trim().is_empty()).collect::<Vec<_>>().join(": ")
        }
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests;
