//! TLS for both legs: the acceptor clients negotiate with (`SSLRequest`), and the connector towards the
//! upstream with libpq's `sslmode` semantics (`prefer`, `require`, `verify-ca`, `verify-full`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use warden_config::{ServerTls, UpstreamTls, UpstreamTlsMode};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    Pem { what: &'static str, path: String, reason: String },
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no usable trusted root certificates ({0})")]
    NoRoots(String),
}

/// Installs aws-lc-rs as the process's rustls provider, once. Safe to call any number of times.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The client-facing acceptor for `[listen.tls]`.
pub fn acceptor(config: &ServerTls) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    install_crypto_provider();
    let certificates = read_certificates(&config.cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|error| TlsError::Pem {
        what: "private key",
        path: config.key.display().to_string(),
        reason: error.to_string(),
    })?;
    let server = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certificates, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem { what, path: path.display().to_string(), reason };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| pem_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(pem_error("no certificate in file".to_string()));
    }
    Ok(certificates)
}

/// What the upstream leg needs to negotiate TLS for one connection, built once per config.
#[derive(Clone)]
pub struct UpstreamTlsConnector {
    pub mode: UpstreamTlsMode,
    connector: Option<tokio_rustls::TlsConnector>,
    server_name: Option<String>,
}

impl std::fmt::Debug for UpstreamTlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTlsConnector").field("mode", &self.mode).finish()
    }
}

impl UpstreamTlsConnector {
    pub fn new(config: &UpstreamTls) -> Result<Self, TlsError> {
        install_crypto_provider();
        let connector = match config.mode {
            UpstreamTlsMode::Disable => None,
            mode => {
                let verifier: Arc<dyn ServerCertVerifier> = match mode {
                    UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => Arc::new(NoVerification::new()),
                    _ => {
                        let roots = root_store(config.ca.as_deref())?;
                        let webpki = WebPkiServerVerifier::builder(Arc::new(roots))
                            .build()
                            .map_err(|error| TlsError::NoRoots(error.to_string()))?;
                        if mode == UpstreamTlsMode::VerifyCa {
                            Arc::new(ChainOnly { inner: webpki })
                        } else {
                            webpki
                        }
                    }
                };
                let client = rustls::ClientConfig::builder()
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth();
                Some(tokio_rustls::TlsConnector::from(Arc::new(client)))
            }
        };
        Ok(UpstreamTlsConnector { mode: config.mode, connector, server_name: config.server_name.clone() })
    }

    pub(crate) fn connector(&self) -> Option<&tokio_rustls::TlsConnector> {
        self.connector.as_ref()
    }

    /// The name to verify: the configured `server_name`, else the address's host.
    pub(crate) fn server_name(
        &self,
        host: &str,
    ) -> Result<ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_string())
    }
}

fn root_store(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for certificate in read_certificates(path, "CA bundle")? {
                roots.add(certificate)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for certificate in found.certs {
                let _ = roots.add(certificate);
            }
            if roots.is_empty() {
                return Err(TlsError::NoRoots("the system has none; set tls.ca on the connection".to_string()));
            }
        }
    }
    Ok(roots)
}

/// `require`/`prefer`: encrypt, verify nothing (libpq's meaning). Signatures are still checked so the
/// handshake is a real one.
#[derive(Debug)]
struct NoVerification {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl NoVerification {
    fn new() -> Self {
        NoVerification { provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()) }
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
