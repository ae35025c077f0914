//! Talking to a running gateway's admin API: its address from `--admin-url` or the config's `[listen] admin`, the
//! credential from `WARDEN_TOKEN`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Largest answer read from the admin API.
const MAX_ANSWER: usize = 16 << 20;

/// Where and as whom to reach the admin API.
pub(crate) struct AdminClient {
    base: String,
    credential: String,
}

impl AdminClient {
    /// From `--admin-url`, else the config's `[listen] admin`; the credential from `WARDEN_TOKEN`.
    pub(crate) fn new(admin_url: Option<&str>, config: &Path) -> Result<AdminClient> {
        let base = match admin_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let config = crate::load_config(config)?;
                let address = config.listen.admin.with_context(|| {
                    format!("{}: no [listen] admin address; pass --admin-url", config.source.display())
                })?;
                format!("http://{address}")
            }
        };
        if !base.starts_with("http://") {
            bail!("--admin-url must be an http:// URL of the gateway's admin listener (got {base})");
        }
        let credential = std::env::var("WARDEN_TOKEN").ok().filter(|token| !token.is_empty()).context(
            "set WARDEN_TOKEN to a credential the gateway accepts (an API key, a warden token, an OIDC token)",
        )?;
        Ok(AdminClient { base, credential })
    }

    /// Sends `body` (JSON) to `path` and returns the JSON answer, or the API's error message.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        Ok(self.call_with_headers(method, path, body).await?.0)
    }

    /// As [`AdminClient::call`], with the answer's headers.
    pub(crate) async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(serde_json::Value, hyper::HeaderMap)> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let url = format!("{}{path}", self.base);
        let payload = body.map(serde_json::to_vec).transpose()?.unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(&url)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.credential))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(payload)))
            .context("cannot build the request")?;
        let response = client.request(request).await.with_context(|| format!("cannot reach the admin API at {url}"))?;
        let (parts, body) = response.into_parts();
        let status = parts.status;
        let bytes = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|error| anyhow::anyhow!("cannot read the admin API's answer: {error}"))?
            .to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("the admin API answered {status} with something other than JSON"))?;
        if status != StatusCode::OK {
            let message = answer.get("error").and_then(|error| error.as_str()).unwrap_or("no reason given");
            bail!("{status}: {message}");
        }
        Ok((answer, parts.headers))
    }
}
