//! The file's shape as serde sees it. Spans are kept on every field a diagnostic may point at.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub state: Option<RawState>,
    pub listen: Option<Spanned<RawListen>>,
    pub limits: Option<RawLimits>,
    pub runtime: Option<RawRuntime>,
    #[serde(default)]
    pub connection: Vec<Spanned<RawConnection>>,
    #[serde(default)]
    pub api_key: Vec<Spanned<RawApiKey>>,
    pub policy: Option<RawPolicy>,
    #[serde(default)]
    pub oidc: Vec<Spanned<RawOidc>>,
    pub tokens: Option<RawTokens>,
    pub admin: Option<RawAdmin>,
    pub masking: Option<RawGlobalMasking>,
    pub audit: Option<RawAudit>,
    pub approvals: Option<RawApprovals>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApprovals {
    pub url: Option<Spanned<String>>,
    #[serde(default)]
    pub notify: Vec<Spanned<RawApprovalNotify>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApprovalNotify {
    pub kind: Spanned<String>,
    pub url: Option<Spanned<toml::Value>>,
    pub secret: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub durability: Option<Spanned<String>>,
    #[serde(default)]
    pub sink: Vec<Spanned<RawAuditSink>>,
    pub result_rows: Option<Spanned<i64>>,
    pub retention: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuditSink {
    pub kind: Spanned<String>,
    pub path: Option<Spanned<String>>,
    pub max_bytes: Option<Spanned<i64>>,
    pub keep: Option<Spanned<i64>>,
    pub address: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub secret: Option<Spanned<toml::Value>>,
    pub max_batch: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    pub url: Spanned<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListen {
    pub postgres: Option<Spanned<String>>,
    pub http: Option<Spanned<String>>,
    pub admin: Option<Spanned<String>>,
    pub tls: Option<Spanned<RawServerTls>>,
    pub allow_plaintext_password: Option<bool>,
    pub http_public_url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServerTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    pub required: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_message_bytes: Option<Spanned<i64>>,
    pub max_row_bytes: Option<Spanned<i64>>,
    pub max_sessions: Option<Spanned<i64>>,
    pub startup_timeout: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntime {
    pub workers: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConnection {
    pub name: Spanned<String>,
    pub kind: Spanned<String>,
    pub address: Option<Spanned<String>>,
    pub database: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub password: Option<Spanned<toml::Value>>,
    pub tls: Option<Spanned<RawUpstreamTls>>,
    pub masking: Option<Spanned<RawMasking>>,
    pub approval: Option<Spanned<RawApproval>>,
    // kind = "http"
    pub url: Option<Spanned<String>>,
    pub api: Option<Spanned<String>>,
    pub auth: Option<Spanned<toml::Value>>,
    pub ca: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub models: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_tokens: Option<Spanned<i64>>,
    pub guard: Option<Spanned<RawGuard>>,
    pub limits: Option<Spanned<RawLlmLimits>>,
    pub hold_back: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGuard {
    #[serde(default)]
    pub deny: Vec<Spanned<RawDenyPattern>>,
    pub prompt_pii: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDenyPattern {
    pub id: Spanned<String>,
    pub pattern: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLlmLimits {
    pub budget: Option<Spanned<RawBudget>>,
    pub requests_per_minute: Option<Spanned<i64>>,
    pub tokens_per_minute: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBudget {
    pub tokens: Spanned<i64>,
    pub per: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApproval {
    pub mode: Spanned<String>,
    pub wait: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMasking {
    #[serde(default)]
    pub detect: Vec<Spanned<String>>,
    #[serde(default)]
    pub column: Vec<Spanned<RawMaskedColumn>>,
    /// Built-in detector name → strategy name, both as written (keys keep their spans).
    #[serde(default)]
    pub strategies: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub detector: Vec<Spanned<RawCustomDetector>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCustomDetector {
    pub name: Spanned<String>,
    pub pattern: Spanned<String>,
    pub validator: Option<Spanned<String>>,
    pub keywords: Option<Spanned<Vec<String>>>,
    pub window: Option<Spanned<i64>>,
    pub strategy: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMaskedColumn {
    #[serde(rename = "match")]
    pub pattern: Spanned<String>,
    pub strategy: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    pub mode: Spanned<String>,
    pub ca: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiKey {
    pub name: Spanned<String>,
    pub key: Spanned<toml::Value>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub expires_at: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    #[serde(default)]
    pub files: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOidc {
    pub issuer: Spanned<String>,
    pub audience: Spanned<String>,
    pub groups_claim: Option<Spanned<String>>,
    pub name_claim: Option<Spanned<String>>,
    pub jwks_url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTokens {
    pub signing_key: Option<Spanned<toml::Value>>,
    pub default_ttl: Option<Spanned<String>>,
    pub max_ttl: Option<Spanned<String>>,
    pub expiry_grace: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub group: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGlobalMasking {
    pub hash_key: Option<Spanned<toml::Value>>,
}
