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
