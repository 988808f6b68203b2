//! Frontend TLS: a rustls server configuration from PEM files, or a self-signed certificate
//! generated at start for development.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("frontend.tls.cert: cannot read certificates from {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("frontend.tls.key: cannot read a private key from {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("frontend.tls: {0}")]
    Rustls(String),
}

/// Builds the acceptor, or `None` when TLS is not configured.
pub fn acceptor(cfg: &TlsConfig) -> Result<Option<TlsAcceptor>, TlsSetupError> {
    if !cfg.enabled() {
        return Ok(None);
    }
    let (certs, key) = match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => load_pem(cert, key)?,
        _ => self_signed()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

fn load_pem(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsSetupError> {
    let cert_err = |reason: String| TlsSetupError::Cert {
        path: cert.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((certs, key))
}

/// A certificate for localhost / 127.0.0.1, made at start (development only).
pub fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsSetupError>
{
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    Ok((vec![ck.cert.der().clone()], key))
}

/// A TLS session's cipher and protocol as MySQL reports them (`SHOW STATUS LIKE 'Ssl_%'`):
/// OpenSSL's names, since that is what MySQL and MariaDB servers are built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsParams {
    pub cipher: &'static str,
    pub version: &'static str,
}

impl TlsParams {
    pub fn of(conn: &rustls::ServerConnection) -> Self {
        use rustls::{CipherSuite as C, ProtocolVersion as V};
        let cipher = match conn.negotiated_cipher_suite().map(|s| s.suite()) {
            Some(C::TLS13_AES_256_GCM_SHA384) => "TLS_AES_256_GCM_SHA384",
            Some(C::TLS13_AES_128_GCM_SHA256) => "TLS_AES_128_GCM_SHA256",
            Some(C::TLS13_CHACHA20_POLY1305_SHA256) => "TLS_CHACHA20_POLY1305_SHA256",
            Some(C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) => "ECDHE-RSA-AES256-GCM-SHA384",
            Some(C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) => "ECDHE-RSA-AES128-GCM-SHA256",
            Some(C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256) => "ECDHE-RSA-CHACHA20-POLY1305",
            Some(C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384) => "ECDHE-ECDSA-AES256-GCM-SHA384",
            Some(C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256) => "ECDHE-ECDSA-AES128-GCM-SHA256",
            Some(C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256) => {
                "ECDHE-ECDSA-CHACHA20-POLY1305"
            }
            Some(other) => other.as_str().unwrap_or("unknown"),
            None => "",
        };
        let version = match conn.protocol_version() {
            Some(V::TLSv1_3) => "TLSv1.3",
            Some(V::TLSv1_2) => "TLSv1.2",
            Some(_) => "unknown",
            None => "",
        };
        Self { cipher, version }
    }
}
