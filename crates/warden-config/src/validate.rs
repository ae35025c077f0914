//! From the raw, spanned file to a validated [`Config`], collecting every problem on the way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::diagnostics::{ConfigError, Diagnostic, LineIndex};
use crate::raw::{
    RawAdmin, RawApiKey, RawConfig, RawConnection, RawCustomDetector, RawGlobalMasking, RawListen, RawMasking, RawOidc,
    RawServerTls, RawTokens, RawUpstreamTls,
};
use crate::secret::Secret;
use crate::{
    AdminConfig, ApiKey, Config, Connection, ConnectionKind, Environment, GlobalMasking, HttpAuth, HttpTarget, Limits,
    ListenConfig, LlmApi, MaskedColumn, MaskingConfig, OidcIssuer, PolicyConfig, PostgresTarget, RuntimeConfig,
    ServerTls, StateConfig, Target, TokenConfig, UpstreamAddress, UpstreamTls, UpstreamTlsMode,
};

pub(crate) fn parse(text: &str, path: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
    let mut checker = Checker {
        path: path.to_path_buf(),
        base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        lines: LineIndex::new(text),
        env,
        diagnostics: Vec::new(),
        state_url: None,
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(error) => {
            let span = error.span();
            let message = error.message().trim().to_string();
            checker.report(span, &field_from_message(&message), message);
            return Err(ConfigError::Invalid(checker.diagnostics));
        }
    };
    let config = checker.check(raw);
    checker.diagnostics.sort_by_key(|diagnostic| (diagnostic.line, diagnostic.column));
    if checker.diagnostics.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(checker.diagnostics))
    }
}

/// serde's messages name the offending key in backticks; use it as the field when there is one.
fn field_from_message(message: &str) -> String {
    message.split('`').nth(1).filter(|name| !name.is_empty()).unwrap_or("(file)").to_string()
}

struct Checker<'e> {
    path: PathBuf,
    base: PathBuf,
    lines: LineIndex,
    env: &'e dyn Environment,
    diagnostics: Vec<Diagnostic>,
    /// Where `[state] url` is written, for diagnostics about what the state store implies.
    state_url: Option<Range<usize>>,
}

impl Checker<'_> {
    fn report(&mut self, span: Option<Range<usize>>, field: &str, message: impl Into<String>) {
        let (line, column) = span.map(|span| self.lines.position(span.start)).unwrap_or((0, 0));
        self.diagnostics.push(Diagnostic {
            path: self.path.clone(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn resolve_path(&self, value: &str) -> PathBuf {
        let path = Path::new(value);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }

    fn check(&mut self, raw: RawConfig) -> Config {
        let state = self.check_state(raw.state);
        let listen = self.check_listen(raw.listen);
        let limits = self.check_limits(raw.limits);
        let runtime = self.check_runtime(raw.runtime);
        // Asked of the file rather than of the validated connections, which leave out any that has a problem.
        let any_masking = raw.connection.iter().any(|connection| connection.get_ref().masking.is_some());
        let connections = self.check_connections(raw.connection);
        let api_keys = self.check_api_keys(raw.api_key);
        let policy = self.check_policy(raw.policy);
        let oidc = self.check_oidc(raw.oidc);
        let tokens = self.check_tokens(raw.tokens, &state);
        let admin = self.check_admin(raw.admin);
        let masking = self.check_global_masking(raw.masking, &state, any_masking);
        let audit = self.check_audit(raw.audit);
        let approvals = self.check_approvals(raw.approvals);
        Config {
            source: self.path.clone(),
            state,
            listen,
            limits,
            runtime,
            connections,
            api_keys,
            policy,
            oidc,
            tokens,
            admin,
            masking,
            audit,
            approvals,
        }
    }

    fn check_approvals(&mut self, raw: Option<crate::raw::RawApprovals>) -> crate::ApprovalsConfig {
        let mut approvals = crate::ApprovalsConfig::default();
        let Some(raw) = raw else { return approvals };
        if let Some(url) = raw.url {
            if http_url(url.get_ref()) {
                approvals.url = Some(url.get_ref().trim_end_matches('/').to_string());
            } else {
                self.report(
                    Some(url.span()),
                    "approvals.url",
                    format!("\"{}\" is not an http:// or https:// URL", url.get_ref()),
                );
            }
        }
        for (index, notify) in raw.notify.into_iter().enumerate() {
            let field = format!("approvals.notify[{index}]");
            let span = notify.span();
            let notify = notify.into_inner();
            match notify.kind.get_ref().as_str() {
                "webhook" => {
                    let url = match notify.url.as_ref().map(|url| (url, url.get_ref().as_str())) {
                        Some((_, Some(text))) if http_url(text) => text.to_string(),
                        Some((url, _)) => {
                            self.report(
                                Some(url.span()),
                                &format!("{field}.url"),
                                "must be an http:// or https:// URL",
                            );
                            continue;
                        }
                        None => {
                            self.report(Some(span), &format!("{field}.url"), "a webhook needs a url");
                            continue;
                        }
                    };
                    let Some(secret) = notify.secret else {
                        self.report(Some(span), &format!("{field}.secret"), "a webhook needs a secret (its HMAC key)");
                        continue;
                    };
                    let Some(secret) = self.secret(&secret, &format!("{field}.secret"), false) else { continue };
                    approvals.notify.push(crate::ApprovalNotify::Webhook { url, secret });
                }
                "slack" => {
                    let Some(url) = notify.url else {
                        self.report(Some(span), &format!("{field}.url"), "a slack notification needs its webhook url");
                        continue;
                    };
                    if let Some(secret) = notify.secret {
                        self.report(Some(secret.span()), &format!("{field}.secret"), "slack messages are not signed");
                        continue;
                    }
                    let Some(url) = self.secret(&url, &format!("{field}.url"), false) else { continue };
                    if !http_url(url.expose()) {
                        self.report(
                            Some(span),
                            &format!("{field}.url"),
                            "the secret is not an http:// or https:// URL",
                        );
                        continue;
                    }
                    approvals.notify.push(crate::ApprovalNotify::Slack { url });
                }
                other => self.report(
                    Some(notify.kind.span()),
                    &format!("{field}.kind"),
                    format!("\"{other}\" is not a notification kind (expected \"webhook\" or \"slack\")"),
                ),
            }
        }
        approvals
    }

    fn check_state(&mut self, raw: Option<crate::raw::RawState>) -> StateConfig {
        let default =
            StateConfig { url: Secret::new(format!("sqlite://{}", self.base.join("warden-data/warden.db").display())) };
        let Some(raw) = raw else { return default };
        let span = raw.url.span();
        self.state_url = Some(span.clone());
        let url = match raw.url.get_ref() {
            toml::Value::String(url) => {
                if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    if url_has_password(url) {
                        self.report(
                            Some(span.clone()),
                            "state.url",
                            "a password in a literal URL is not allowed; use url = { env = \"…\" } or { file = \"…\" }",
                        );
                    }
                    Secret::new(url.clone())
                } else {
                    Secret::new(url.clone())
                }
            }
            _ => match self.secret(&raw.url, "state.url", false) {
                Some(url) => url,
                None => return default,
            },
        };
        let text = url.expose();
        if let Some(rest) = text.strip_prefix("sqlite://") {
            let (file, query) = rest.split_once('?').map_or((rest, None), |(f, q)| (f, Some(q)));
            if file.is_empty() {
                self.report(Some(span), "state.url", "sqlite URL names no file");
                return default;
            }
            let resolved = self.resolve_path(file);
            let mut url = format!("sqlite://{}", resolved.display());
            if let Some(query) = query {
                url.push('?');
                url.push_str(query);
            }
            StateConfig { url: Secret::new(url) }
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            StateConfig { url }
        } else {
            self.report(Some(span), "state.url", "expected a sqlite://… or postgres://… URL");
            default
        }
    }

    fn check_listen(&mut self, raw: Option<Spanned<RawListen>>) -> ListenConfig {
        let mut listen = ListenConfig {
            postgres: None,
            http: None,
            admin: None,
            tls: None,
            allow_plaintext_password: false,
            http_public_url: None,
        };
        let Some(raw) = raw else {
            self.report(None, "listen", "missing [listen] section; set listen.postgres or listen.http");
            return listen;
        };
        let raw_span = raw.span();
        let raw = raw.into_inner();
        if raw.postgres.is_none() && raw.http.is_none() {
            self.report(
                Some(raw_span),
                "listen.postgres",
                "no listener configured; set listen.postgres or listen.http",
            );
        }
        listen.postgres = raw.postgres.and_then(|address| self.socket_address(&address, "listen.postgres"));
        listen.http = raw.http.and_then(|address| self.socket_address(&address, "listen.http"));
        listen.admin = raw.admin.and_then(|address| {
            let parsed = self.socket_address(&address, "listen.admin")?;
            if !parsed.ip().is_loopback() {
                // Bearer credentials must not cross a network in clear.
                self.report(
                    Some(address.span()),
                    "listen.admin",
                    "the admin API is served without TLS: listen on a loopback address (e.g. \"127.0.0.1:18081\") \
                     and reach it through a TLS-terminating proxy or an SSH tunnel",
                );
                return None;
            }
            Some(parsed)
        });
        listen.tls = raw.tls.and_then(|tls| self.check_server_tls(tls));
        listen.allow_plaintext_password = raw.allow_plaintext_password.unwrap_or(false);
        listen.http_public_url = raw.http_public_url.and_then(|url| {
            let text = url.get_ref().trim_end_matches('/');
            // Written into JSON answers as it is: only characters that need no escaping there.
            let plain = text.bytes().all(|byte| byte.is_ascii_graphic() && byte != b'"' && byte != b'\\');
            if !http_url(text) || text.contains(['?', '#']) || url_has_userinfo(text) || !plain {
                self.report(
                    Some(url.span()),
                    "listen.http_public_url",
                    format!(
                        "\"{}\" is not an http:// or https:// base URL (no credentials, query, fragment, spaces or \
                         quotes), e.g. \"https://warden.example.com\"",
                        url.get_ref()
                    ),
                );
                return None;
            }
            if listen.http.is_none() {
                self.report(Some(url.span()), "listen.http_public_url", "there is no HTTP listener (listen.http)");
                return None;
            }
            Some(text.to_string())
        });
        listen
    }

    fn check_server_tls(&mut self, raw: Spanned<RawServerTls>) -> Option<ServerTls> {
        let raw = raw.into_inner();
        let cert = self.existing_file(&raw.cert, "listen.tls.cert");
        let key = self.existing_file(&raw.key, "listen.tls.key");
        Some(ServerTls { cert: cert?, key: key?, required: raw.required.unwrap_or(false) })
    }

    fn existing_file(&mut self, raw: &Spanned<String>, field: &str) -> Option<PathBuf> {
        let path = self.resolve_path(raw.get_ref());
        if path.is_file() {
            Some(path)
        } else {
            self.report(Some(raw.span()), field, format!("file {} does not exist", path.display()));
            None
        }
    }

    fn socket_address(&mut self, raw: &Spanned<String>, field: &str) -> Option<SocketAddr> {
        match raw.get_ref().parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                self.report(
                    Some(raw.span()),
                    field,
                    format!("\"{}\" is not an IP address with a port, e.g. \"127.0.0.1:15432\"", raw.get_ref()),
                );
                None
            }
        }
    }

    fn check_limits(&mut self, raw: Option<crate::raw::RawLimits>) -> Limits {
        let mut limits = Limits::default();
        let Some(raw) = raw else { return limits };
        if let Some(value) = raw.max_message_bytes {
            if let Some(bytes) = self.message_size(&value, "limits.max_message_bytes") {
                limits.max_message_bytes = bytes;
            }
        }
        if let Some(value) = raw.max_row_bytes {
            if let Some(bytes) = self.message_size(&value, "limits.max_row_bytes") {
                limits.max_row_bytes = bytes;
            }
        }
        if let Some(value) = raw.max_sessions {
            match usize::try_from(*value.get_ref()) {
                Ok(count) if count >= 1 => limits.max_sessions = count,
                _ => self.report(Some(value.span()), "limits.max_sessions", "must be at least 1"),
            }
        }
        if let Some(value) = raw.startup_timeout {
            if let Some(duration) = self.duration(&value, "limits.startup_timeout") {
                limits.startup_timeout = duration;
            }
        }
        if let Some(value) = raw.connect_timeout {
            if let Some(duration) = self.duration(&value, "limits.connect_timeout") {
                limits.connect_timeout = duration;
            }
        }
        limits
    }

    /// A protocol message size in bytes. PostgreSQL itself refuses messages over 1 GiB; a smaller floor would break
    /// ordinary clients and servers.
    fn message_size(&mut self, raw: &Spanned<i64>, field: &str) -> Option<usize> {
        match usize::try_from(*raw.get_ref()) {
            Ok(bytes) if (1024..=1 << 30).contains(&bytes) => Some(bytes),
            _ => {
                self.report(Some(raw.span()), field, "must be between 1024 and 1073741824");
                None
            }
        }
    }

    fn check_runtime(&mut self, raw: Option<crate::raw::RawRuntime>) -> RuntimeConfig {
        let mut runtime = RuntimeConfig::default();
        if let Some(workers) = raw.and_then(|raw| raw.workers) {
            match usize::try_from(*workers.get_ref()) {
                Ok(count) if (1..=1024).contains(&count) => runtime.workers = count,
                _ => self.report(Some(workers.span()), "runtime.workers", "must be between 1 and 1024"),
            }
        }
        runtime
    }

    fn duration(&mut self, raw: &Spanned<String>, field: &str) -> Option<Duration> {
        match parse_duration(raw.get_ref()) {
            Some(duration) if !duration.is_zero() => Some(duration),
            _ => {
                self.report(
                    Some(raw.span()),
                    field,
                    format!("\"{}\" is not a duration such as \"500ms\", \"15s\", \"5m\" or \"1h\"", raw.get_ref()),
                );
                None
            }
        }
    }

    fn check_connections(&mut self, raw: Vec<Spanned<RawConnection>>) -> Vec<Connection> {
        let mut seen = HashSet::new();
        let mut connections = Vec::new();
        for (index, raw) in raw.into_iter().enumerate() {
            let raw = raw.into_inner();
            let prefix = format!("connection[{index}]");
            let name = raw.name.get_ref().clone();
            if !valid_name(&name) {
                self.report(
                    Some(raw.name.span()),
                    &format!("{prefix}.name"),
                    "a connection name is 1 to 63 characters of letters, digits, '_' and '-'",
                );
            } else if !seen.insert(name.clone()) {
                self.report(
                    Some(raw.name.span()),
                    &format!("{prefix}.name"),
                    format!("connection \"{name}\" is defined twice"),
                );
            }
            if let Some(connection) = self.check_connection(raw, &prefix) {
                connections.push(connection);
            }
        }
        connections
    }

    fn check_connection(&mut self, mut raw: RawConnection, prefix: &str) -> Option<Connection> {
        let kind = match raw.kind.get_ref().as_str() {
            "postgres" => Some(ConnectionKind::Postgres),
            "http" => Some(ConnectionKind::Http),
            other @ ("mysql" | "ssh") => {
                self.report(
                    Some(raw.kind.span()),
                    &format!("{prefix}.kind"),
                    format!("kind \"{other}\" is not supported by this version of warden yet"),
                );
                None
            }
            other => {
                self.report(
                    Some(raw.kind.span()),
                    &format!("{prefix}.kind"),
                    format!("unknown kind \"{other}\"; expected \"postgres\" or \"http\""),
                );
                None
            }
        };
        let masking_span = raw.masking.as_ref().map(Spanned::span);
        let masking = raw.masking.take().and_then(|masking| self.check_masking(masking, prefix));
        let approval = match raw.approval.take() {
            None => Some(crate::ApprovalMode::default()),
            Some(approval) => self.check_approval(approval.into_inner(), prefix),
        };
        let target = match kind? {
            ConnectionKind::Postgres => self.check_postgres_target(&mut raw, prefix).map(Target::Postgres),
            ConnectionKind::Http => {
                if masking.as_ref().is_some_and(|masking| !masking.columns.is_empty()) {
                    self.report(
                        masking_span,
                        &format!("{prefix}.masking.column"),
                        "column rules apply to database connections; an http connection masks by content \
                         (masking.detect)",
                    );
                }
                self.check_http_target(&raw, prefix).map(Target::Http)
            }
        };
        Some(Connection { masking, approval: approval?, name: raw.name.into_inner(), kind: kind?, target: target? })
    }

    /// Reports each field that belongs to another kind of connection.
    fn foreign_fields(&mut self, fields: &[(&str, Option<Range<usize>>)], prefix: &str, kind: &str) {
        for (field, span) in fields {
            if let Some(span) = span {
                self.report(
                    Some(span.clone()),
                    &format!("{prefix}.{field}"),
                    format!("{field} does not apply to a kind = \"{kind}\" connection"),
                );
            }
        }
    }

    fn check_postgres_target(&mut self, raw: &mut RawConnection, prefix: &str) -> Option<PostgresTarget> {
        let span = |value: &Option<Spanned<_>>| value.as_ref().map(Spanned::span);
        let foreign = [
            ("url", span(&raw.url)),
            ("api", raw.api.as_ref().map(Spanned::span)),
            ("auth", raw.auth.as_ref().map(Spanned::span)),
            ("ca", raw.ca.as_ref().map(Spanned::span)),
            ("timeout", raw.timeout.as_ref().map(Spanned::span)),
            ("models", raw.models.as_ref().map(Spanned::span)),
            ("max_tokens", raw.max_tokens.as_ref().map(Spanned::span)),
            ("guard", raw.guard.as_ref().map(Spanned::span)),
            ("limits", raw.limits.as_ref().map(Spanned::span)),
            ("hold_back", raw.hold_back.as_ref().map(Spanned::span)),
        ];
        self.foreign_fields(&foreign, prefix, "postgres");
        let address = match &raw.address {
            Some(address) => self.upstream_address(address, &format!("{prefix}.address")),
            None => {
                self.report(
                    Some(raw.name.span()),
                    &format!("{prefix}.address"),
                    format!("connection \"{}\" needs an address", raw.name.get_ref()),
                );
                None
            }
        };
        let database = self.required(raw.database.clone(), &raw.name, prefix, "database");
        let user = self.required(raw.user.clone(), &raw.name, prefix, "user");
        let password =
            raw.password.as_ref().and_then(|password| self.secret(password, &format!("{prefix}.password"), false));
        let tls = match raw.tls.take() {
            Some(tls) => self.check_upstream_tls(tls.into_inner(), prefix),
            None => Some(UpstreamTls { mode: UpstreamTlsMode::Prefer, ca: None, server_name: None }),
        };
        Some(PostgresTarget { address: address?, database: database?, user: user?, password, tls: tls? })
    }

    fn check_http_target(&mut self, raw: &RawConnection, prefix: &str) -> Option<HttpTarget> {
        let foreign = [
            ("address", raw.address.as_ref().map(Spanned::span)),
            ("database", raw.database.as_ref().map(Spanned::span)),
            ("user", raw.user.as_ref().map(Spanned::span)),
            ("password", raw.password.as_ref().map(Spanned::span)),
            ("tls", raw.tls.as_ref().map(Spanned::span)),
        ];
        self.foreign_fields(&foreign, prefix, "http");
        let url = match &raw.url {
            Some(url) => {
                let text = url.get_ref().trim_end_matches('/');
                if !http_url(text) || text.contains(['?', '#']) {
                    self.report(
                        Some(url.span()),
                        &format!("{prefix}.url"),
                        format!("\"{}\" is not an http:// or https:// base URL (no query or fragment)", url.get_ref()),
                    );
                    None
                } else if url_has_userinfo(text) {
                    self.report(
                        Some(url.span()),
                        &format!("{prefix}.url"),
                        "credentials do not belong in the URL; use auth = { basic = { user = \"…\", password = \
                         { env = \"…\" } } }",
                    );
                    None
                } else {
                    Some(text.to_string())
                }
            }
            None => {
                self.report(
                    Some(raw.name.span()),
                    &format!("{prefix}.url"),
                    format!("connection \"{}\" needs a url", raw.name.get_ref()),
                );
                None
            }
        };
        let api = match &raw.api {
            None => Some(None),
            Some(api) => {
                match api.get_ref().as_str() {
                    "openai" => Some(Some(LlmApi::OpenAi)),
                    "anthropic" => Some(Some(LlmApi::Anthropic)),
                    other => {
                        self.report(
                        Some(api.span()),
                        &format!("{prefix}.api"),
                        format!("unknown api \"{other}\"; expected \"openai\" or \"anthropic\" (or none, for plain HTTP)"),
                    );
                        None
                    }
                }
            }
        };
        let auth = match &raw.auth {
            None => Some(None),
            Some(auth) => self.http_auth(auth, &format!("{prefix}.auth")).map(Some),
        };
        let ca = match &raw.ca {
            Some(ca) => self.existing_file(ca, &format!("{prefix}.ca")).map(Some),
            None => Some(None),
        };
        let timeout = match &raw.timeout {
            Some(timeout) => self.duration(timeout, &format!("{prefix}.timeout")),
            None => Some(Duration::from_secs(300)),
        };
        let llm_only = [
            ("models", raw.models.as_ref().map(Spanned::span)),
            ("max_tokens", raw.max_tokens.as_ref().map(Spanned::span)),
            ("guard", raw.guard.as_ref().map(Spanned::span)),
            ("limits", raw.limits.as_ref().map(Spanned::span)),
        ];
        if matches!(api, Some(None)) {
            for (field, span) in llm_only {
                if let Some(span) = span {
                    self.report(
                        Some(span),
                        &format!("{prefix}.{field}"),
                        format!("{field} applies to LLM connections only (set api = \"openai\" or \"anthropic\")"),
                    );
                }
            }
        }
        let models = match &raw.models {
            None => Some(None),
            Some(models) if models.get_ref().is_empty() => {
                self.report(
                    Some(models.span()),
                    &format!("{prefix}.models"),
                    "an empty allow-list refuses every request; list the models, or leave models out to allow any",
                );
                None
            }
            Some(models) => Some(Some(models.get_ref().iter().map(|model| model.get_ref().clone()).collect())),
        };
        let max_tokens = match &raw.max_tokens {
            None => Some(None),
            Some(value) => match u32::try_from(*value.get_ref()) {
                Ok(tokens) if tokens > 0 => Some(Some(tokens)),
                _ => {
                    self.report(
                        Some(value.span()),
                        &format!("{prefix}.max_tokens"),
                        "must be a positive number of tokens",
                    );
                    None
                }
            },
        };
        let guard = match &raw.guard {
            None => Some(crate::PromptGuard::default()),
            Some(guard) => self.check_guard(guard.get_ref(), prefix),
        };
        let limits = match &raw.limits {
            None => Some(crate::LlmLimits::default()),
            Some(limits) => self.check_llm_limits(limits.get_ref(), prefix),
        };
        let hold_back = match &raw.hold_back {
            None => Some(crate::DEFAULT_HOLD_BACK),
            Some(value) => match usize::try_from(*value.get_ref()) {
                Ok(bytes) if (64..=65_536).contains(&bytes) => Some(bytes),
                _ => {
                    self.report(
                        Some(value.span()),
                        &format!("{prefix}.hold_back"),
                        "must be between 64 and 65536 bytes",
                    );
                    None
                }
            },
        };
        Some(HttpTarget {
            url: url?,
            api: api?,
            auth: auth?,
            ca: ca?,
            timeout: timeout?,
            models: models?,
            max_tokens: max_tokens?,
            guard: guard?,
            limits: limits?,
            hold_back: hold_back?,
        })
    }

    fn http_auth(&mut self, raw: &Spanned<toml::Value>, field: &str) -> Option<HttpAuth> {
        let expected = "expected { bearer = { env = \"…\" } }, { header = \"x-api-key\", value = { env = \"…\" } } \
                        or { basic = { user = \"…\", password = { env = \"…\" } } }";
        let Some(table) = raw.get_ref().as_table() else {
            self.report(Some(raw.span()), field, expected);
            return None;
        };
        // Spans of the inner values are not kept by toml::Value; point at the auth table.
        let inner = |value: &toml::Value| Spanned::new(raw.span(), value.clone());
        let keys: Vec<&str> = table.keys().map(String::as_str).collect();
        match keys.as_slice() {
            ["bearer"] => {
                self.secret(&inner(&table["bearer"]), &format!("{field}.bearer"), false).map(HttpAuth::Bearer)
            }
            ["header", "value"] | ["value", "header"] => {
                let Some(name) = table["header"].as_str().filter(|name| valid_header_name(name)) else {
                    self.report(Some(raw.span()), &format!("{field}.header"), "must be an HTTP header name");
                    return None;
                };
                let value = self.secret(&inner(&table["value"]), &format!("{field}.value"), false)?;
                Some(HttpAuth::Header { name: name.to_ascii_lowercase(), value })
            }
            ["basic"] => {
                let basic = table["basic"].as_table();
                let user = basic.and_then(|basic| basic.get("user")).and_then(toml::Value::as_str);
                let password = basic.and_then(|basic| basic.get("password"));
                match (user, password, basic.map(|basic| basic.len())) {
                    (Some(user), Some(password), Some(2)) if !user.contains(':') => {
                        let password = self.secret(&inner(password), &format!("{field}.basic.password"), false)?;
                        Some(HttpAuth::Basic { user: user.to_string(), password })
                    }
                    _ => {
                        self.report(
                            Some(raw.span()),
                            &format!("{field}.basic"),
                            "expected { user = \"…\" (no ':'), password = { env = \"…\" } }",
                        );
                        None
                    }
                }
            }
            _ => {
                self.report(Some(raw.span()), field, expected);
                None
            }
        }
    }

    fn check_guard(&mut self, raw: &crate::raw::RawGuard, prefix: &str) -> Option<crate::PromptGuard> {
        let mut ok = true;
        let mut deny = Vec::new();
        let mut ids = HashSet::new();
        for (index, pattern) in raw.deny.iter().enumerate() {
            let field = format!("{prefix}.guard.deny[{index}]");
            let pattern = pattern.get_ref();
            let id = pattern.id.get_ref();
            if !valid_name(id) {
                self.report(
                    Some(pattern.id.span()),
                    &format!("{field}.id"),
                    "an id is 1 to 63 letters, digits, '_' and '-'",
                );
                ok = false;
            } else if !ids.insert(id.clone()) {
                self.report(
                    Some(pattern.id.span()),
                    &format!("{field}.id"),
                    format!("deny pattern \"{id}\" is defined twice"),
                );
                ok = false;
            }
            if let Err(error) = regex_automata::meta::Regex::new(pattern.pattern.get_ref()) {
                // The meta regex's own message only says which pattern failed; the syntax error says why.
                let reason = match error.syntax_error() {
                    Some(syntax) => syntax
                        .to_string()
                        .lines()
                        .map(|line| line.trim().trim_end_matches(':'))
                        .filter(|line| !line.is_empty())
                        .collect::<Vec<_>>()
                        .join(": "),
                    None => one_line(&error.to_string()),
                };
                self.report(
                    Some(pattern.pattern.span()),
                    &format!("{field}.pattern"),
                    format!("invalid regular expression: {reason}"),
                );
                ok = false;
            }
            deny.push(crate::DenyPattern { id: id.clone(), pattern: pattern.pattern.get_ref().clone() });
        }
        let prompt_pii = match &raw.prompt_pii {
            None => crate::PromptPii::default(),
            Some(value) => match value.get_ref().as_str() {
                "allow" => crate::PromptPii::Allow,
                "mask" => crate::PromptPii::Mask,
                "refuse" => crate::PromptPii::Refuse,
                other => {
                    self.report(
                        Some(value.span()),
                        &format!("{prefix}.guard.prompt_pii"),
                        format!("\"{other}\" is not allow, mask or refuse"),
                    );
                    return None;
                }
            },
        };
        ok.then_some(crate::PromptGuard { deny, prompt_pii })
    }

    fn check_llm_limits(&mut self, raw: &crate::raw::RawLlmLimits, prefix: &str) -> Option<crate::LlmLimits> {
        let mut ok = true;
        let mut positive = |this: &mut Self, value: &Spanned<i64>, field: &str| -> Option<u64> {
            match u64::try_from(*value.get_ref()) {
                Ok(number) if number > 0 => Some(number),
                _ => {
                    this.report(Some(value.span()), &format!("{prefix}.limits.{field}"), "must be a positive number");
                    ok = false;
                    None
                }
            }
        };
        let requests_per_minute = raw
            .requests_per_minute
            .as_ref()
            .and_then(|value| positive(self, value, "requests_per_minute"))
            .map(|value| u32::try_from(value).unwrap_or(u32::MAX));
        let tokens_per_minute =
            raw.tokens_per_minute.as_ref().and_then(|value| positive(self, value, "tokens_per_minute"));
        let budget = match &raw.budget {
            None => None,
            Some(budget) => {
                let budget = budget.get_ref();
                let tokens = positive(self, &budget.tokens, "budget.tokens");
                let per = self.duration(&budget.per, &format!("{prefix}.limits.budget.per"));
                match (tokens, per) {
                    (Some(tokens), Some(per)) if per >= Duration::from_secs(60) => {
                        Some(crate::TokenBudget { tokens, per })
                    }
                    (Some(_), Some(_)) => {
                        self.report(
                            Some(budget.per.span()),
                            &format!("{prefix}.limits.budget.per"),
                            "a budget period is at least 1m (use tokens_per_minute for shorter windows)",
                        );
                        return None;
                    }
                    _ => return None,
                }
            }
        };
        ok.then_some(crate::LlmLimits { budget, requests_per_minute, tokens_per_minute })
    }

    fn check_approval(&mut self, raw: crate::raw::RawApproval, prefix: &str) -> Option<crate::ApprovalMode> {
        match (raw.mode.get_ref().as_str(), raw.wait) {
            ("hold", None) => Some(crate::ApprovalMode::default()),
            ("hold", Some(wait)) => {
                let wait = self.duration(&wait, &format!("{prefix}.approval.wait"))?;
                Some(crate::ApprovalMode::Hold { wait })
            }
            ("fail-fast", None) => Some(crate::ApprovalMode::FailFast),
            ("fail-fast", Some(wait)) => {
                self.report(
                    Some(wait.span()),
                    &format!("{prefix}.approval.wait"),
                    "wait applies to mode = \"hold\" only; a fail-fast statement does not wait",
                );
                None
            }
            (other, _) => {
                self.report(
                    Some(raw.mode.span()),
                    &format!("{prefix}.approval.mode"),
                    format!("\"{other}\" is not an approval mode (expected \"hold\" or \"fail-fast\")"),
                );
                None
            }
        }
    }

    fn required(
        &mut self,
        value: Option<Spanned<String>>,
        name: &Spanned<String>,
        prefix: &str,
        field: &str,
    ) -> Option<String> {
        match value {
            Some(value) if !value.get_ref().is_empty() => Some(value.into_inner()),
            Some(value) => {
                self.report(Some(value.span()), &format!("{prefix}.{field}"), "must not be empty");
                None
            }
            None => {
                self.report(
                    Some(name.span()),
                    &format!("{prefix}.{field}"),
                    format!("connection \"{}\" needs a {field}", name.get_ref()),
                );
                None
            }
        }
    }

    fn upstream_address(&mut self, raw: &Spanned<String>, field: &str) -> Option<UpstreamAddress> {
        let text = raw.get_ref();
        if text.starts_with('/') {
            return Some(UpstreamAddress::Unix(PathBuf::from(text)));
        }
        let parsed = if let Ok(address) = text.parse::<SocketAddr>() {
            Some(UpstreamAddress::Tcp { host: address.ip().to_string(), port: address.port() })
        } else {
            text.rsplit_once(':').and_then(|(host, port)| {
                let port = port.parse::<u16>().ok()?;
                let valid_host =
                    !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
                valid_host.then(|| UpstreamAddress::Tcp { host: host.to_string(), port })
            })
        };
        if parsed.is_none() {
            self.report(
                Some(raw.span()),
                field,
                format!("\"{text}\" is not host:port or an absolute Unix socket path"),
            );
        }
        parsed
    }

    fn check_upstream_tls(&mut self, raw: RawUpstreamTls, prefix: &str) -> Option<UpstreamTls> {
        let mode = match raw.mode.get_ref().as_str() {
            "disable" => Some(UpstreamTlsMode::Disable),
            "prefer" => Some(UpstreamTlsMode::Prefer),
            "require" => Some(UpstreamTlsMode::Require),
            "verify-ca" => Some(UpstreamTlsMode::VerifyCa),
            "verify-full" => Some(UpstreamTlsMode::VerifyFull),
            other => {
                self.report(
                    Some(raw.mode.span()),
                    &format!("{prefix}.tls.mode"),
                    format!("unknown mode \"{other}\"; expected disable, prefer, require, verify-ca or verify-full"),
                );
                None
            }
        };
        let ca = raw.ca.as_ref().and_then(|ca| self.existing_file(ca, &format!("{prefix}.tls.ca")));
        if raw.ca.is_some() && ca.is_none() {
            return None;
        }
        Some(UpstreamTls { mode: mode?, ca, server_name: raw.server_name.map(Spanned::into_inner) })
    }

    fn check_api_keys(&mut self, raw: Vec<Spanned<RawApiKey>>) -> Vec<ApiKey> {
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        let mut keys = Vec::new();
        for (index, raw) in raw.into_iter().enumerate() {
            let raw = raw.into_inner();
            let prefix = format!("api_key[{index}]");
            let name = raw.name.get_ref().clone();
            if !valid_name(&name) {
                self.report(
                    Some(raw.name.span()),
                    &format!("{prefix}.name"),
                    "an API key name is 1 to 63 characters of letters, digits, '_' and '-'",
                );
            } else if !names.insert(name.clone()) {
                self.report(
                    Some(raw.name.span()),
                    &format!("{prefix}.name"),
                    format!("API key \"{name}\" is defined twice"),
                );
            }
            let Some(sha256) = self.api_key_hash(&raw.key, &format!("{prefix}.key")) else {
                continue;
            };
            if !hashes.insert(sha256) {
                self.report(
                    Some(raw.key.span()),
                    &format!("{prefix}.key"),
                    "the same key is configured for two API keys",
                );
            }
            let expires_at = raw.expires_at.as_ref().and_then(|value| self.timestamp(value, &prefix));
            keys.push(ApiKey { name, sha256, groups: raw.groups, expires_at });
        }
        keys
    }

    fn timestamp(&mut self, raw: &Spanned<toml::Value>, prefix: &str) -> Option<time::OffsetDateTime> {
        let text = match raw.get_ref() {
            toml::Value::String(text) => text.clone(),
            toml::Value::Datetime(datetime) => datetime.to_string(),
            _ => String::new(),
        };
        match time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339) {
            Ok(timestamp) => Some(timestamp),
            Err(_) => {
                self.report(
                    Some(raw.span()),
                    &format!("{prefix}.expires_at"),
                    "expected an RFC 3339 timestamp with an offset, e.g. 2027-01-31T00:00:00Z",
                );
                None
            }
        }
    }

    fn api_key_hash(&mut self, raw: &Spanned<toml::Value>, field: &str) -> Option<[u8; 32]> {
        if let toml::Value::Table(table) = raw.get_ref() {
            if let Some(value) = table.get("sha256") {
                if table.len() != 1 {
                    self.report(Some(raw.span()), field, "give exactly one of sha256, env or file");
                    return None;
                }
                let decoded = value.as_str().and_then(|text| hex::decode(text.trim()).ok());
                return match decoded.and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()) {
                    Some(hash) => Some(hash),
                    None => {
                        self.report(Some(raw.span()), field, "sha256 must be 64 hexadecimal characters");
                        None
                    }
                };
            }
        }
        let key = self.secret(raw, field, true)?;
        Some(Sha256::digest(key.expose().as_bytes()).into())
    }

    /// Resolves `{ env = "…" }` or `{ file = "…" }`. A literal string is refused: secrets do not live in config.
    fn secret(&mut self, raw: &Spanned<toml::Value>, field: &str, allow_sha256: bool) -> Option<Secret> {
        let expected = if allow_sha256 {
            "{ sha256 = \"…\" }, { env = \"…\" } or { file = \"…\" }"
        } else {
            "{ env = \"…\" } or { file = \"…\" }"
        };
        let table = match raw.get_ref() {
            toml::Value::Table(table) if table.len() == 1 => table,
            toml::Value::String(_) => {
                self.report(
                    Some(raw.span()),
                    field,
                    format!("a literal secret is not allowed in the config file; use {expected}"),
                );
                return None;
            }
            _ => {
                self.report(Some(raw.span()), field, format!("expected {expected}"));
                return None;
            }
        };
        let (source, name) = table.iter().next().expect("table has exactly one entry");
        let Some(name) = name.as_str() else {
            self.report(Some(raw.span()), field, format!("{source} must be a string"));
            return None;
        };
        match source.as_str() {
            "env" => match self.env.var(name) {
                Some(value) if !value.is_empty() => Some(Secret::new(value)),
                _ => {
                    self.report(Some(raw.span()), field, format!("environment variable {name} is not set or empty"));
                    None
                }
            },
            "file" => {
                let path = self.resolve_path(name);
                match std::fs::read_to_string(&path) {
                    Ok(value) if !value.trim_end_matches(['\r', '\n']).is_empty() => {
                        Some(Secret::new(value.trim_end_matches(['\r', '\n'])))
                    }
                    Ok(_) => {
                        self.report(Some(raw.span()), field, format!("secret file {} is empty", path.display()));
                        None
                    }
                    Err(error) => {
                        self.report(
                            Some(raw.span()),
                            field,
                            format!("cannot read secret file {}: {error}", path.display()),
                        );
                        None
                    }
                }
            }
            other => {
                self.report(Some(raw.span()), field, format!("unknown secret source \"{other}\"; expected {expected}"));
                None
            }
        }
    }

    fn check_policy(&mut self, raw: Option<crate::raw::RawPolicy>) -> PolicyConfig {
        let Some(raw) = raw else {
            return PolicyConfig::default();
        };
        let mut files = Vec::new();
        for (index, pattern) in raw.files.iter().enumerate() {
            let resolved = self.resolve_path(pattern.get_ref());
            let directory = if pattern.get_ref().contains(['*', '?', '[']) {
                resolved.parent().map(Path::to_path_buf).unwrap_or_default()
            } else {
                resolved.clone()
            };
            if !directory.exists() {
                self.report(
                    Some(pattern.span()),
                    &format!("policy.files[{index}]"),
                    format!("{} does not exist", directory.display()),
                );
            }
            files.push(resolved);
        }
        PolicyConfig { files }
    }
}

impl Checker<'_> {
    fn check_oidc(&mut self, raw: Vec<Spanned<RawOidc>>) -> Vec<OidcIssuer> {
        let mut issuers: Vec<OidcIssuer> = Vec::new();
        for (index, raw) in raw.into_iter().enumerate() {
            let raw = raw.into_inner();
            let prefix = format!("oidc[{index}]");
            let issuer = raw.issuer.get_ref().trim_end_matches('/').to_string();
            self.oidc_url(&raw.issuer, &format!("{prefix}.issuer"));
            if issuers.iter().any(|known| known.issuer == issuer) {
                self.report(
                    Some(raw.issuer.span()),
                    &format!("{prefix}.issuer"),
                    format!("issuer {issuer} is configured twice"),
                );
            }
            if raw.audience.get_ref().is_empty() {
                self.report(Some(raw.audience.span()), &format!("{prefix}.audience"), "must not be empty");
            }
            if let Some(url) = &raw.jwks_url {
                self.oidc_url(url, &format!("{prefix}.jwks_url"));
            }
            let claim = |value: Option<Spanned<String>>, default: &str| {
                value.map(Spanned::into_inner).filter(|claim| !claim.is_empty()).unwrap_or_else(|| default.to_string())
            };
            issuers.push(OidcIssuer {
                issuer,
                audience: raw.audience.into_inner(),
                groups_claim: claim(raw.groups_claim, "groups"),
                name_claim: claim(raw.name_claim, "sub"),
                jwks_url: raw.jwks_url.map(Spanned::into_inner),
            });
        }
        issuers
    }

    /// An issuer or JWKS URL: https, or http on a loopback host (a local test issuer).
    fn oidc_url(&mut self, raw: &Spanned<String>, field: &str) {
        let url = raw.get_ref();
        let loopback_http = url
            .strip_prefix("http://")
            .map(|rest| rest.split(['/', '?']).next().unwrap_or(""))
            .is_some_and(|authority| {
                let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
                matches!(host, "localhost" | "127.0.0.1" | "[::1]")
            });
        let https = url.strip_prefix("https://").is_some_and(|rest| !rest.is_empty());
        if !https && !loopback_http {
            self.report(
                Some(raw.span()),
                field,
                format!("\"{url}\" must be an https:// URL (plain http only on a loopback host)"),
            );
        }
    }

    fn check_masking(&mut self, raw: Spanned<RawMasking>, prefix: &str) -> Option<MaskingConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let mut valid = true;
        let mut all = false;
        let mut detectors = Vec::new();
        for name in &raw.detect {
            if name.get_ref() == "all" {
                all = true;
                continue;
            }
            match name.get_ref().parse::<warden_mask::Detector>() {
                Ok(detector) => detectors.push(detector),
                Err(error) => {
                    let known: Vec<&str> = warden_mask::Detector::ALL.iter().map(|detector| detector.name()).collect();
                    self.report(
                        Some(name.span()),
                        &format!("{prefix}.masking.detect"),
                        format!("{error}; expected \"all\" or some of {}", known.join(", ")),
                    );
                    valid = false;
                }
            }
        }
        let detect = if all { warden_mask::Selection::All } else { warden_mask::Selection::Only(detectors) };
        let detect_valid = valid;
        let mut columns = Vec::new();
        for (index, column) in raw.column.into_iter().enumerate() {
            let column = column.into_inner();
            let field = format!("{prefix}.masking.column[{index}]");
            let pattern = column.pattern.get_ref();
            let parts: Vec<&str> = pattern.split('.').collect();
            if !(2..=3).contains(&parts.len()) || parts.iter().any(|part| part.is_empty()) {
                self.report(
                    Some(column.pattern.span()),
                    &format!("{field}.match"),
                    format!("\"{pattern}\" is not schema.table.column or table.column (each part may be *)"),
                );
                valid = false;
                continue;
            }
            let strategy = match &column.strategy {
                Some(strategy) => match strategy.get_ref().parse::<warden_mask::Strategy>() {
                    Ok(strategy) => strategy,
                    Err(error) => {
                        self.report(Some(strategy.span()), &format!("{field}.strategy"), error.to_string());
                        valid = false;
                        continue;
                    }
                },
                None => warden_mask::Strategy::Redact,
            };
            columns.push(MaskedColumn { pattern: pattern.clone(), strategy });
        }
        let custom_names: Vec<&str> =
            raw.detector.iter().map(|detector| detector.get_ref().name.get_ref().as_str()).collect();
        let strategies =
            self.check_mask_strategies(&raw.strategies, detect_valid.then_some(&detect), &custom_names, prefix);
        let custom = self.check_custom_detectors(raw.detector, prefix);
        let (Some(strategies), Some(custom)) = (strategies, custom) else { return None };
        if !valid {
            return None;
        }
        let masking = MaskingConfig { detect, columns, strategies, custom };
        // Each custom detector compiled alone; together with the built-ins they could still exceed the automaton's
        // limits. The built-ins alone are known to compile.
        if !masking.custom.is_empty() {
            if let Err(error) = warden_mask::Masker::new(&masking.masker_config([0; 32])) {
                self.report(Some(span), &format!("{prefix}.masking"), one_line(&error.to_string()));
                return None;
            }
        }
        Some(masking)
    }

    /// `strategies = { email = "hash" }`: each key a built-in detector that `detect` selects (`detect` is `None`
    /// when it has problems of its own), each value a strategy.
    fn check_mask_strategies(
        &mut self,
        raw: &BTreeMap<Spanned<String>, Spanned<String>>,
        detect: Option<&warden_mask::Selection>,
        custom_names: &[&str],
        prefix: &str,
    ) -> Option<HashMap<warden_mask::Detector, warden_mask::Strategy>> {
        let mut valid = true;
        let mut strategies = HashMap::new();
        for (name, strategy) in raw {
            let field = format!("{prefix}.masking.strategies.{}", name.get_ref());
            let detector = match name.get_ref().parse::<warden_mask::Detector>() {
                Ok(detector) => Some(detector),
                Err(_) if custom_names.contains(&name.get_ref().as_str()) => {
                    self.report(
                        Some(name.span()),
                        &field,
                        format!(
                            "\"{}\" is a custom detector: set its strategy in its [[connection.masking.detector]]",
                            name.get_ref()
                        ),
                    );
                    None
                }
                Err(error) => {
                    let known: Vec<&str> = warden_mask::Detector::ALL.iter().map(|detector| detector.name()).collect();
                    self.report(Some(name.span()), &field, format!("{error}; expected one of {}", known.join(", ")));
                    None
                }
            };
            let parsed = match strategy.get_ref().parse::<warden_mask::Strategy>() {
                Ok(parsed) => Some(parsed),
                Err(error) => {
                    self.report(Some(strategy.span()), &field, error.to_string());
                    None
                }
            };
            if let (Some(detector), Some(warden_mask::Selection::Only(selected))) = (detector, detect) {
                if !selected.contains(&detector) {
                    self.report(
                        Some(name.span()),
                        &field,
                        format!("{detector} is not detected on this connection; add it to detect"),
                    );
                    valid = false;
                    continue;
                }
            }
            match (detector, parsed) {
                (Some(detector), Some(parsed)) => {
                    strategies.insert(detector, parsed);
                }
                _ => valid = false,
            }
        }
        valid.then_some(strategies)
    }

    /// `[[connection.masking.detector]]`: each checked field by field, then compiled alone so that every broken
    /// pattern is reported, not only the first.
    fn check_custom_detectors(
        &mut self,
        raw: Vec<Spanned<RawCustomDetector>>,
        prefix: &str,
    ) -> Option<Vec<warden_mask::CustomDetector>> {
        let mut valid = true;
        // Lowercased: a detector's label is its uppercased name, so names differing only in case would collide.
        let mut seen = HashSet::new();
        let mut custom = Vec::new();
        for (index, raw) in raw.into_iter().enumerate() {
            let raw = raw.into_inner();
            let field = format!("{prefix}.masking.detector[{index}]");
            let name = raw.name.get_ref();
            let label = name.to_ascii_uppercase();
            let mut name_valid = false;
            if name.is_empty() || !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_') {
                self.report(
                    Some(raw.name.span()),
                    &format!("{field}.name"),
                    format!("\"{name}\" is not a detector name: use letters, digits and '_'"),
                );
            } else if let Some(builtin) = warden_mask::Detector::ALL.iter().find(|builtin| builtin.name() == name) {
                self.report(
                    Some(raw.name.span()),
                    &format!("{field}.name"),
                    format!("\"{builtin}\" is a built-in detector; give the custom detector another name"),
                );
            } else if let Some(builtin) = warden_mask::Detector::ALL.iter().find(|builtin| builtin.label() == label) {
                self.report(
                    Some(raw.name.span()),
                    &format!("{field}.name"),
                    format!(
                        "\"{name}\" would be labelled [{label}] like the built-in detector {builtin}; give it another name"
                    ),
                );
            } else if !seen.insert(name.to_ascii_lowercase()) {
                self.report(
                    Some(raw.name.span()),
                    &format!("{field}.name"),
                    format!("custom detector \"{name}\" is defined twice (names are compared ignoring case)"),
                );
            } else {
                name_valid = true;
            }
            let validator = raw.validator.as_ref().and_then(|validator| match validator.get_ref().as_str() {
                "luhn" => Some(warden_mask::Validator::Luhn),
                "payment_card" => Some(warden_mask::Validator::PaymentCard),
                "iban" => Some(warden_mask::Validator::Iban),
                "us_ssn" => Some(warden_mask::Validator::UsSsn),
                other => {
                    self.report(
                        Some(validator.span()),
                        &format!("{field}.validator"),
                        format!("unknown validator \"{other}\"; expected luhn, payment_card, iban or us_ssn"),
                    );
                    None
                }
            });
            let validator_valid = raw.validator.is_none() || validator.is_some();
            let keywords = raw.keywords.as_ref().map_or(Vec::new(), |keywords| keywords.get_ref().clone());
            let keywords_valid = !keywords.iter().any(String::is_empty);
            if let (false, Some(raw_keywords)) = (keywords_valid, &raw.keywords) {
                // An empty keyword occurs everywhere: the context check would pass vacuously.
                self.report(Some(raw_keywords.span()), &format!("{field}.keywords"), "a keyword must not be empty");
            }
            let mut window_valid = true;
            let context_window = raw.window.as_ref().and_then(|window| {
                let bytes = usize::try_from(*window.get_ref()).ok().filter(|bytes| (1..=4096).contains(bytes));
                let problem = if bytes.is_none() {
                    Some("must be between 1 and 4096")
                } else if keywords.is_empty() {
                    Some("a context window needs keywords to look for; add keywords or remove window")
                } else {
                    None
                };
                if let Some(problem) = problem {
                    self.report(Some(window.span()), &format!("{field}.window"), problem);
                    window_valid = false;
                    return None;
                }
                bytes
            });
            let strategy = match &raw.strategy {
                Some(strategy) => match strategy.get_ref().parse::<warden_mask::Strategy>() {
                    Ok(strategy) => Some(strategy),
                    Err(error) => {
                        self.report(Some(strategy.span()), &format!("{field}.strategy"), error.to_string());
                        None
                    }
                },
                None => Some(warden_mask::Strategy::Redact),
            };
            let detector = warden_mask::CustomDetector {
                name: name.clone(),
                pattern: raw.pattern.get_ref().clone(),
                validator,
                keywords,
                context_window,
                strategy,
            };
            let mut compiled = false;
            if name_valid && keywords_valid {
                let alone = warden_mask::MaskerConfig {
                    detectors: warden_mask::Selection::Only(Vec::new()),
                    custom: vec![detector.clone()],
                    strategies: HashMap::new(),
                    hash_key: [0; 32],
                };
                match warden_mask::Masker::new(&alone) {
                    Ok(_) => compiled = true,
                    Err(error) => {
                        let (span, part) = match &error {
                            warden_mask::MaskError::InvalidName { .. } => (raw.name.span(), "name"),
                            warden_mask::MaskError::InvalidKeywords { .. } => match &raw.keywords {
                                Some(keywords) => (keywords.span(), "keywords"),
                                None => (raw.pattern.span(), "pattern"),
                            },
                            _ => (raw.pattern.span(), "pattern"),
                        };
                        self.report(Some(span), &format!("{field}.{part}"), one_line(&error.to_string()));
                    }
                }
            }
            if compiled && validator_valid && window_valid && detector.strategy.is_some() {
                custom.push(detector);
            } else {
                valid = false;
            }
        }
        valid.then_some(custom)
    }

    /// `[masking]`. Gateways sharing a PostgreSQL state store are replicas of one service: a value must hash to
    /// the same token on each, so they must share the key (a SQLite store is one gateway's, which may keep its own).
    fn check_global_masking(
        &mut self,
        raw: Option<RawGlobalMasking>,
        state: &StateConfig,
        any_masking: bool,
    ) -> GlobalMasking {
        let mut masking = GlobalMasking::default();
        match raw.and_then(|raw| raw.hash_key) {
            Some(key) => masking.hash_key = self.secret(&key, "masking.hash_key", false),
            None if any_masking && !state.is_sqlite() => self.report(
                self.state_url.clone(),
                "masking.hash_key",
                "a PostgreSQL state store is shared by several gateways, which must share the masking hash key so \
                 that hash tokens agree across replicas: name it in [masking] hash_key = { file = \"…\" } or \
                 { env = \"…\" }",
            ),
            None => {}
        }
        masking
    }

    fn check_tokens(&mut self, raw: Option<RawTokens>, state: &StateConfig) -> TokenConfig {
        let mut tokens = TokenConfig::default();
        let Some(raw) = raw else {
            if !state.is_sqlite() {
                self.report(
                    self.state_url.clone(),
                    "tokens.signing_key",
                    "a PostgreSQL state store is shared by several gateways: name their common token signing key \
                     in [tokens] signing_key = { file = \"…\" } or { env = \"…\" }",
                );
            }
            return tokens;
        };
        match &raw.signing_key {
            Some(key) => tokens.signing_key = self.secret(key, "tokens.signing_key", false),
            None if !state.is_sqlite() => self.report(
                self.state_url.clone(),
                "tokens.signing_key",
                "a PostgreSQL state store is shared by several gateways: name their common token signing key \
                 with signing_key = { file = \"…\" } or { env = \"…\" }",
            ),
            None => {}
        }
        if let Some(value) = &raw.default_ttl {
            if let Some(duration) = self.duration(value, "tokens.default_ttl") {
                tokens.default_ttl = duration;
            }
        }
        if let Some(value) = &raw.max_ttl {
            if let Some(duration) = self.duration(value, "tokens.max_ttl") {
                tokens.max_ttl = duration;
            }
        }
        if tokens.default_ttl > tokens.max_ttl {
            let span = raw.default_ttl.as_ref().or(raw.max_ttl.as_ref()).map(Spanned::span);
            self.report(span, "tokens.default_ttl", "the default lifetime is longer than tokens.max_ttl");
        }
        if let Some(value) = &raw.expiry_grace {
            match parse_duration(value.get_ref()) {
                Some(duration) => tokens.expiry_grace = duration,
                None => self.report(
                    Some(value.span()),
                    "tokens.expiry_grace",
                    format!("\"{}\" is not a duration such as \"0s\", \"30s\" or \"5m\"", value.get_ref()),
                ),
            }
        }
        tokens
    }

    fn check_audit(&mut self, raw: Option<crate::raw::RawAudit>) -> crate::AuditConfig {
        let mut audit = crate::AuditConfig::default();
        let Some(raw) = raw else { return audit };
        for (index, sink) in raw.sink.into_iter().enumerate() {
            let field = format!("audit.sink[{index}]");
            let span = sink.span();
            let sink = sink.into_inner();
            match sink.kind.get_ref().as_str() {
                "jsonl" => {
                    let Some(path) = sink.path else {
                        self.report(Some(span), &format!("{field}.path"), "a jsonl sink needs a path");
                        continue;
                    };
                    let max_bytes = match sink.max_bytes {
                        None => 100 * 1024 * 1024,
                        Some(value) => match u64::try_from(*value.get_ref()) {
                            Ok(bytes) if bytes >= 4096 => bytes,
                            _ => {
                                self.report(Some(value.span()), &format!("{field}.max_bytes"), "must be at least 4096");
                                continue;
                            }
                        },
                    };
                    let keep = match sink.keep {
                        None => 10,
                        Some(value) => match usize::try_from(*value.get_ref()) {
                            Ok(keep) if (1..=1000).contains(&keep) => keep,
                            _ => {
                                self.report(Some(value.span()), &format!("{field}.keep"), "must be between 1 and 1000");
                                continue;
                            }
                        },
                    };
                    let path = self.resolve_path(path.get_ref());
                    audit.sinks.push(crate::AuditSink::Jsonl { path, max_bytes, keep });
                }
                "syslog" => {
                    let Some(address) = sink.address else {
                        self.report(Some(span), &format!("{field}.address"), "a syslog sink needs an address");
                        continue;
                    };
                    let (tcp, rest) = match address.get_ref().split_once("://") {
                        Some(("udp", rest)) => (false, rest),
                        Some(("tcp", rest)) => (true, rest),
                        _ => {
                            self.report(
                                Some(address.span()),
                                &format!("{field}.address"),
                                format!("\"{}\" is not udp://host:port or tcp://host:port", address.get_ref()),
                            );
                            continue;
                        }
                    };
                    if rest.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none() {
                        self.report(Some(address.span()), &format!("{field}.address"), "needs a host and a port");
                        continue;
                    }
                    audit.sinks.push(crate::AuditSink::Syslog { address: rest.to_string(), tcp });
                }
                "webhook" => {
                    let Some(url) = sink.url else {
                        self.report(Some(span), &format!("{field}.url"), "a webhook sink needs a url");
                        continue;
                    };
                    let text = url.get_ref();
                    if !http_url(text) {
                        self.report(
                            Some(url.span()),
                            &format!("{field}.url"),
                            format!("\"{text}\" is not an http:// or https:// URL"),
                        );
                        continue;
                    }
                    let Some(raw_secret) = sink.secret else {
                        self.report(
                            Some(span),
                            &format!("{field}.secret"),
                            "a webhook sink needs a secret (the HMAC-SHA256 key its receiver checks)",
                        );
                        continue;
                    };
                    let Some(secret) = self.secret(&raw_secret, &format!("{field}.secret"), false) else { continue };
                    let max_batch = match sink.max_batch {
                        None => 500,
                        Some(value) => match usize::try_from(*value.get_ref()) {
                            Ok(batch) if (1..=10_000).contains(&batch) => batch,
                            _ => {
                                self.report(
                                    Some(value.span()),
                                    &format!("{field}.max_batch"),
                                    "must be between 1 and 10000",
                                );
                                continue;
                            }
                        },
                    };
                    audit.sinks.push(crate::AuditSink::Webhook { url: text.clone(), secret, max_batch });
                }
                other => self.report(
                    Some(sink.kind.span()),
                    &format!("{field}.kind"),
                    format!("\"{other}\" is not a sink kind (expected \"jsonl\", \"syslog\" or \"webhook\")"),
                ),
            }
        }
        if let Some(rows) = raw.result_rows {
            match u32::try_from(*rows.get_ref()) {
                Ok(count) if count <= 10_000 => audit.result_rows = count,
                _ => self.report(Some(rows.span()), "audit.result_rows", "must be between 0 and 10000"),
            }
        }
        if let Some(retention) = raw.retention {
            if let Some(duration) = self.duration(&retention, "audit.retention") {
                if duration < Duration::from_secs(3600) {
                    self.report(Some(retention.span()), "audit.retention", "must be at least 1h");
                } else {
                    audit.retention = Some(duration);
                }
            }
        }
        if let Some(durability) = raw.durability {
            match durability.get_ref().as_str() {
                "async" => audit.durability = crate::Durability::Async,
                "sync" => audit.durability = crate::Durability::Sync,
                other => self.report(
                    Some(durability.span()),
                    "audit.durability",
                    format!("\"{other}\" is not a durability mode (expected \"async\" or \"sync\")"),
                ),
            }
        }
        audit
    }

    fn check_admin(&mut self, raw: Option<RawAdmin>) -> AdminConfig {
        let mut admin = AdminConfig::default();
        if let Some(group) = raw.and_then(|raw| raw.group) {
            if group.get_ref().is_empty() {
                self.report(Some(group.span()), "admin.group", "must not be empty");
            } else {
                admin.group = group.into_inner();
            }
        }
        admin
    }
}

/// A library's error message on one line, as every diagnostic is (regex syntax errors span several).
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A URL whose authority carries `user@` or `user:password@`.
fn url_has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or("").contains('@')
}

/// An HTTP header name (RFC 9110 token).
fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// Parses "250ms", "15s", "5m", "2h", "1d".
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let milliseconds = match unit.trim() {
        "ms" => number,
        "s" => number.checked_mul(1000)?,
        "m" => number.checked_mul(60_000)?,
        "h" => number.checked_mul(3_600_000)?,
        "d" => number.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(milliseconds))
}

/// `http://host…` or `https://host…`.
fn http_url(text: &str) -> bool {
    match text.split_once("://") {
        Some(("http" | "https", rest)) => !rest.is_empty() && !rest.starts_with('/'),
        _ => false,
    }
}
