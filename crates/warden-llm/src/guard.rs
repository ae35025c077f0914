//! The prompt guardrails, applied to a request body before it goes upstream, in this order: the model allow-list,
//! the deny patterns (on the prompt texts as sent), input warden cannot read, PII in the prompts (masked in place or
//! refused), the `max_tokens` cap, and usage reporting for streamed chat completions.
//!
//! A [`PromptGuard`] is compiled once per config version (the deny patterns into one multi-pattern regex) and
//! shared. A rewritten body changes only what the guard changed: the prompt text fields, the token budget member,
//! `stream_options`; members keep their order.

use regex_automata::meta::Regex;
use warden_mask::{Kind, Masker};

use crate::api::{self, Api, Endpoint, LlmRequest};
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
    /// on), `prompt-pii` (PII in a prompt, with `pii = "refuse"`).
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
        let (value, request) =
            api::parse(api, endpoint, body).map_err(|error| Refusal::new("request", error.to_string()))?;
        let Some(mut value) = value else {
            return Ok(GuardOutcome {
                body: None,
                request,
                max_tokens: None,
                strip_usage_chunk: false,
                masked_prompt_findings: 0,
            });
        };

        self.check_model(request.model.as_deref())?;

        if let Some(deny) = &self.deny {
            for prompt in &request.prompts {
                if let Some(found) = deny.find(prompt.as_str()) {
                    let rule = &self.deny_rules[found.pattern().as_usize()];
                    return Err(Refusal::new(
                        format!("deny:{rule}"),
                        format!("the prompt matches deny rule \"{rule}\""),
                    ));
                }
            }
        }

        if request.opaque_input && (self.deny.is_some() || self.pii != PromptPii::Allow) {
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
                    for finding in masker.find(prompt) {
                        if !kinds.contains(&finding.kind) {
                            kinds.push(finding.kind);
                        }
                    }
                }
                if !kinds.is_empty() {
                    let mut names: Vec<&str> = kinds.iter().map(|kind| masker.name(*kind)).collect();
                    names.sort_unstable();
                    return Err(Refusal::new(
                        "prompt-pii",
                        format!("the prompt contains personal data or secrets ({})", names.join(", ")),
                    ));
                }
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
