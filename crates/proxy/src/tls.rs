//! TLS to clients: the listener's certificate and key, loaded from PEM
//! files and swappable at runtime, so a SIGHUP gives new handshakes the new
//! certificate while established sessions keep theirs.
//!
//! rustls with the ring provider; TLS 1.2 and 1.3 only; ALPN `h2` and
//! `http/1.1`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Where the listener's certificate chain and private key are (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Which of the two files a [`LoadError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
}

/// Why a certificate could not be loaded: which file and what is wrong
/// (never the key material).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct LoadError {
    pub file: TlsFile,
    pub path: String,
    pub reason: String,
}

impl LoadError {
    fn new(file: TlsFile, path: &Path, reason: impl fmt::Display) -> LoadError {
        LoadError {
            file,
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Reads and checks a certificate chain and its key: both parse, the key is
/// of a supported type, and it belongs to the first certificate.
pub fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, LoadError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| LoadError::new(TlsFile::Cert, &files.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| LoadError::new(TlsFile::Cert, &files.cert, e))?;
    if certs.is_empty() {
        return Err(LoadError::new(
            TlsFile::Cert,
            &files.cert,
            "no CERTIFICATE in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        LoadError::new(
            TlsFile::Key,
            &files.key,
            format!("no usable private key ({e})"),
        )
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| LoadError::new(TlsFile::Key, &files.key, e))?;
    let certified = CertifiedKey::new(certs, signer);
    certified.keys_match().map_err(|e| {
        LoadError::new(
            TlsFile::Key,
            &files.key,
            format!("does not match {}: {e}", files.cert.display()),
        )
    })?;
    Ok(Arc::new(certified))
}

/// The certificate new handshakes get.
#[derive(Debug)]
struct CurrentCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Accepts TLS on client connections.
#[derive(Clone)]
pub struct Acceptor {
    acceptor: TlsAcceptor,
    current: Arc<CurrentCert>,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor").finish_non_exhaustive()
    }
}

impl Acceptor {
    pub fn new(files: &TlsFiles) -> Result<Acceptor, LoadError> {
        let current = Arc::new(CurrentCert(ArcSwap::new(load(files)?)));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| LoadError::new(TlsFile::Cert, &files.cert, e))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Our order, not the client's: every suite the provider offers is
        // an AEAD with forward secrecy, listed AES-GCM first (hardware AES
        // on servers), and a client that prefers something weaker first
        // does not get to choose it.
        config.ignore_client_order = true;
        Ok(Acceptor {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
        })
    }

    /// Loads `files` again; new handshakes get the new certificate. On an
    /// error the current one stays.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), LoadError> {
        self.current.0.store(load(files)?);
        Ok(())
    }

    /// Runs the server side of a handshake.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.acceptor.accept(stream).await
    }
}
