//! TLS for both ends: the server's certificate (reloaded on SIGHUP) and the roots clients
//! trust (the system's, plus a CA file for private PKI).
//!
//! rustls with the ring provider does the work; nothing here is cryptography of our own. The
//! server resolves its certificate on every handshake from a slot that a reload swaps, so a
//! renewed certificate takes effect for new connections at once and open ones keep theirs. A
//! reload that fails (a half-written file, a key that does not match) keeps the certificate in
//! use and says why in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsFiles;

/// A certificate file, key file or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct TlsError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

fn problem(path: &Path, problem: impl std::fmt::Display) -> TlsError {
    TlsError { path: path.to_owned(), problem: problem.to_string() }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its key, checking that they belong together.
fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| problem(&files.cert, format!("cannot read a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(problem(&files.cert, "holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| problem(&files.key, format!("cannot read a PEM private key: {e}")))?;
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| problem(&files.key, format!("does not fit the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

/// The server's certificate, swappable while it serves.
#[derive(Debug)]
pub struct CertSlot {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertSlot {
    /// Loads the files; an error here stops the server from starting.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let current = RwLock::new(load(&files)?);
        Ok(Arc::new(CertSlot { files, current }))
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// An acceptor that presents this slot's certificate, HTTP/1.1 over TLS 1.2 or 1.3.
    pub fn acceptor(self: &Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| problem(&self.files.cert, e))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner())))
    }
}

/// Reloads `slot` on every SIGHUP, for as long as the server runs. The handler is in place
/// when this returns, so a SIGHUP that comes early cannot stop the server.
pub fn reload_on_sighup(slot: Arc<CertSlot>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; the certificate will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match slot.reload() {
                Ok(()) => tracing::info!(cert = %slot.files.cert.display(), "TLS certificate reloaded"),
                Err(err) => tracing::error!(error = %err, "TLS certificate not reloaded; keeping the one in use"),
            }
        }
    });
}

/// The certificates a client trusts: the system's roots, plus those of `ca_file`.
pub fn client_roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    // A machine without a system store still reaches servers of its own CA.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| problem(path, format!("cannot read PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(problem(path, "holds no certificate"));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| problem(path, e))?;
        }
    }
    Ok(roots)
}

/// A client's TLS configuration: the ring provider, safe protocol versions, [`client_roots`].
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let roots = client_roots(ca_file)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| problem(ca_file.unwrap_or(Path::new("system roots")), e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A connector for clients that open their own connections (the bench's load loops).
pub fn connector(ca_file: Option<&Path>) -> Result<tokio_rustls::TlsConnector, TlsError> {
    Ok(tokio_rustls::TlsConnector::from(Arc::new(client_config(ca_file)?)))
}
