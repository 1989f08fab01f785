//! HTTPS through rustls (`tls_cert` and `tls_key`, PEM). The certificate is served through a
//! resolver that holds the current one, so a SIGHUP can read the files again and new
//! connections get the new certificate without a restart (renewals, e.g. from ACME).
//!
//! A certificate is only used together with the key it was issued for: a pair that does not
//! match would pass every check of its own and then fail every handshake, so it is refused
//! when read (at start, by `check-config`, and on SIGHUP, where the old pair stays).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::settings::Settings;

/// Why the certificate or key could not be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls_cert {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("tls_key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    /// Both files are readable, but the key is not the certificate's: every handshake would
    /// fail. A configuration error (exit 2 at start).
    #[error(
        "tls_cert {} and tls_key {} do not belong together: the certificate's public key is not the public half of the key (was one of them replaced without the other?)",
        cert.display(),
        key.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS set-up: {0}")]
    Config(String),
}

/// Serves the current certificate to every handshake.
#[derive(Debug)]
struct CurrentCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Swaps the certificate of a running server (SIGHUP).
#[derive(Debug, Clone)]
pub struct TlsReloader {
    current: Arc<CurrentCert>,
}

impl TlsReloader {
    /// Reads `tls_cert` and `tls_key` of `settings` again; on error the old pair stays.
    pub fn reload(&self, settings: &Settings) -> Result<(), TlsError> {
        let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) else {
            return Err(TlsError::Config(
                "tls_cert and tls_key were removed; HTTPS stays on until a restart".into(),
            ));
        };
        self.current.0.store(Arc::new(load_certified_key(cert, key)?));
        Ok(())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The largest certificate chain or key file read: a chain of a dozen 4096-bit
/// certificates is well under 64 KiB.
pub const MAX_PEM_FILE_BYTES: u64 = 1 << 20;

/// Reads a certificate or key file: a regular file (a symbolic link to one is fine: certbot's
/// `live/` files are links) of at most [`MAX_PEM_FILE_BYTES`]. Opened without blocking and
/// checked before any byte is read, so `/dev/zero`, `/dev/urandom` or a FIFO put in its place
/// is refused at once instead of filling memory or blocking the start, or the SIGHUP reload
/// and every signal after it.
fn read_pem_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file (a device, FIFO or directory cannot hold a PEM file)".into());
    }
    if meta.len() > MAX_PEM_FILE_BYTES {
        return Err(format!(
            "{} bytes: larger than the {MAX_PEM_FILE_BYTES} bytes a PEM file may have",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while it is read.
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(format!(
            "grew past the {MAX_PEM_FILE_BYTES} bytes a PEM file may have while it was read"
        ));
    }
    Ok(bytes)
}

/// Reads a PEM certificate chain and private key, and checks that the key is the one the
/// (first, end-entity) certificate was issued for.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Cert {
        path: cert.to_owned(),
        reason,
    };
    let cert_pem = read_pem_file(cert).map_err(cert_error)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate in the file".into()));
    }
    let key_error = |reason: String| TlsError::Key {
        path: key.to_owned(),
        reason,
    };
    let key_pem = read_pem_file(key).map_err(key_error)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| key_error(e.to_string()))?;
    let signing = provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| key_error(e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        // `Unknown`: the key cannot tell its public half (no key type of the ring provider
        // does this); nothing to compare, as rustls's own `CertifiedKey::from_der` decides.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
        // The end-entity certificate is PEM but not a certificate rustls can read.
        Err(e) => Err(cert_error(format!("not a usable X.509 certificate: {e}"))),
    }
}

/// Reads the pair `settings` names, as the server would (`check-config`); nothing when HTTPS
/// is off.
pub fn check_files(settings: &Settings) -> Result<(), TlsError> {
    match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => load_certified_key(cert, key).map(drop),
        _ => Ok(()),
    }
}

/// The server configuration for `settings`, and the handle that reloads its certificate.
pub fn server_config(cert: &Path, key: &Path) -> Result<(rustls::ServerConfig, TlsReloader), TlsError> {
    let current = Arc::new(CurrentCert(ArcSwap::from_pointee(load_certified_key(cert, key)?)));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    Ok((config, TlsReloader { current }))
}
