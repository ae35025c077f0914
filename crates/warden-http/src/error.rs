//! Errors building the front end, and refusals as the caller's SDK expects them: an LLM connection answers in
//! its provider's error format (so the OpenAI and Anthropic SDKs raise their usual exceptions with warden's
//! message), a plain HTTP connection in a small JSON object. Every refusal names its rule.

use std::sync::Arc;

use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use warden_llm::Api;

use crate::body::ResponseBody;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connection \"{connection}\": {reason}")]
    Route { connection: String, reason: String },
    #[error("cannot read {what} {path}: {reason}")]
    Pem { what: &'static str, path: String, reason: String },
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The client-facing acceptor for `[listen.tls]`, offering HTTP/2 and HTTP/1.1 by ALPN.
pub(crate) fn tls_acceptor(config: &warden_config::ServerTls) -> Result<tokio_rustls::TlsAcceptor, HttpError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pem = |what: &'static str, path: &std::path::Path, reason: String| HttpError::Pem {
        what,
        path: path.display().to_string(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|error| pem("certificate", &config.cert, error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem("certificate", &config.cert, error.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .map_err(|error| pem("private key", &config.key, error.to_string()))?;
    let mut server = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certificates, key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

/// A refusal or failure answered by warden itself.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    /// Machine-readable: `unauthenticated`, `policy:<id>`, `model`, `deny:<id>`, `rate:requests_per_minute`…
    pub rule: String,
    pub message: String,
    pub retry_after: Option<std::time::Duration>,
}

impl Refusal {
    pub fn new(status: StatusCode, rule: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal { status, rule: rule.into(), message: message.into(), retry_after: None }
    }

    /// The response, in the format `api`'s SDKs parse.
    pub fn response(&self, api: Option<Api>) -> Response<ResponseBody> {
        let message = format!("warden: {}", self.message);
        let body = match api {
            Some(Api::Anthropic) => serde_json::json!({
                "type": "error",
                "error": { "type": anthropic_type(self.status), "message": message },
            }),
            Some(Api::OpenAi) => serde_json::json!({
                "error": { "message": message, "type": openai_type(self.status), "param": null, "code": self.rule },
            }),
            None => serde_json::json!({ "error": { "code": self.rule, "message": message } }),
        };
        let mut response = Response::new(crate::body::full(body.to_string()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(rule) = HeaderValue::from_str(&self.rule) {
            headers.insert("x-warden-refusal", rule);
        }
        if let Some(retry_after) = self.retry_after {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 413 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}
