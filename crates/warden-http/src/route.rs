//! A `kind = "http"` connection, compiled: where requests go, the credential injected, the HTTPS clients (one pool
//! per worker thread, so a request never rides a connection another thread's reactor owns; its own trusted roots),
//! and for an LLM connection what warden-llm checks.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION};
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use warden_config::{HttpAuth, HttpTarget, LlmApi};
use warden_llm::Api;

use crate::body::ResponseBody;
use crate::error::HttpError;

pub(crate) type UpstreamClient = Client<HttpsConnector<HttpConnector>, ResponseBody>;

pub struct Route {
    pub name: String,
    /// `scheme://authority`, for building upstream URIs.
    pub(crate) scheme: hyper::http::uri::Scheme,
    pub(crate) authority: hyper::http::uri::Authority,
    /// The base URL's path, without a trailing `/` (often empty).
    pub(crate) base_path: String,
    pub(crate) api: Option<Api>,
    /// The header warden sets on every upstream request (marked sensitive: never logged by hyper).
    pub(crate) credential: Option<(HeaderName, HeaderValue)>,
    pub(crate) timeout: Duration,
    pub(crate) hold_back: usize,
    pub(crate) guard: Option<Arc<warden_llm::PromptGuard>>,
    /// One client (and so one pool of upstream connections) per worker thread: a connection's I/O is driven by the
    /// reactor of the thread that opened it, so sharing one pool between workers would bounce every request
    /// between threads.
    clients: Vec<UpstreamClient>,
}

impl Route {
    /// `pools`: how many worker threads serve requests (at least one pool is made).
    pub fn new(name: &str, target: &HttpTarget, pools: usize) -> Result<Route, HttpError> {
        let error = |reason: String| HttpError::Route { connection: name.to_string(), reason };
        let uri: Uri = target.url.parse().map_err(|parse| error(format!("url: {parse}")))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
            return Err(error("url: needs a scheme and a host".into()));
        };
        let credential = match &target.auth {
            None => None,
            Some(HttpAuth::Bearer(token)) => Some((AUTHORIZATION, format!("Bearer {}", token.expose()))),
            Some(HttpAuth::Header { name, value }) => {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| error("auth.header: invalid".into()))?;
                Some((name, value.expose().to_string()))
            }
            Some(HttpAuth::Basic { user, password }) => {
                let pair = format!("{user}:{}", password.expose());
                Some((AUTHORIZATION, format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))))
            }
        };
        let credential = credential
            .map(|(name, value)| {
                let mut value = HeaderValue::from_str(&value)
                    .map_err(|_| error("auth: the secret is not a valid header value".into()))?;
                value.set_sensitive(true);
                Ok::<_, HttpError>((name, value))
            })
            .transpose()?;
        let api = target.api.map(|api| match api {
            LlmApi::OpenAi => Api::OpenAi,
            LlmApi::Anthropic => Api::Anthropic,
        });
        let guard = match api {
            Some(_) => Some(Arc::new(crate::proxy::compile_guard(target).map_err(error)?)),
            None => None,
        };
        Ok(Route {
            name: name.to_string(),
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_string(),
            api,
            credential,
            timeout: target.timeout,
            hold_back: target.hold_back,
            guard,
            clients: clients(target.ca.as_deref(), pools.max(1)).map_err(error)?,
        })
    }

    /// The client of worker `worker`'s pool.
    pub(crate) fn client(&self, worker: usize) -> &UpstreamClient {
        &self.clients[worker % self.clients.len()]
    }

    /// The upstream URI for a request path (after the connection prefix) and query.
    pub(crate) fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, hyper::http::Error> {
        let mut path_and_query = format!("{}{path}", self.base_path);
        if let Some(query) = query {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

/// `count` HTTP/1.1 and HTTP/2 (by ALPN) clients, each with its own pool, trusting the system's roots, or only
/// `ca` when given.
fn clients(ca: Option<&std::path::Path>, count: usize) -> Result<Vec<UpstreamClient>, String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|error| format!("ca {}: {error}", path.display()))?;
            for certificate in certificates {
                roots.add(certificate).map_err(|error| format!("ca {}: {error}", path.display()))?;
            }
        }
        None => {
            for certificate in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(certificate);
            }
        }
    }
    let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let client = || {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector)
    };
    Ok((0..count).map(|_| client()).collect())
}
