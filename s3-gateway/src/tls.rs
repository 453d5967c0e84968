//! S3 over TLS: rustls (ring) with a certificate chain and key from PEM
//! files. The files are read again when they change (checked every few
//! seconds) or on SIGHUP; each new connection takes the certificate of the
//! moment, and connections already open keep theirs, so a renewal drops
//! nobody. A reload that fails (a half-written file, a key that does not
//! match) keeps the certificate in use and says why in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    #[error("{0}: no PEM private key in it")]
    NoKey(PathBuf),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// How often the files are checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Where the certificate chain and its key are, in PEM.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TLS configuration in use, reloaded from its files.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    current: RwLock<(Arc<ServerConfig>, Stamp)>,
    /// The leaf certificate's notAfter (Unix seconds), when it reads.
    not_after: std::sync::atomic::AtomicI64,
}

/// What [`Tls::not_after`] holds while the certificate's date is unknown.
const NOT_AFTER_UNKNOWN: i64 = i64::MIN;

/// What the files were when read: each one's inode, length and time of
/// change. A file replaced by a rename (as certificate tools do) has a new
/// inode even when its time is the same to the kernel's clock tick.
type Stamp = [Option<(u64, u64, SystemTime)>; 2];

fn stamp(files: &TlsFiles) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    let of = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.ino(), m.len(), m.modified().ok()?)));
    [of(&files.cert), of(&files.key)]
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.into(), source })
}

/// A server configuration from the files (HTTP/1.1 and h2 by ALPN), and
/// the leaf certificate's notAfter when it reads.
fn config(files: &TlsFiles) -> Result<(ServerConfig, Option<i64>), TlsError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&files.cert)?).filter_map(Result::ok).collect();
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    };
    let not_after = crate::certificate::not_after(leaf);
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|_| TlsError::NoKey(files.key.clone()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, not_after))
}

impl Tls {
    /// Reads the files; refused when they do not make a configuration.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let at = stamp(&files);
        let (config, not_after) = config(&files)?;
        let not_after = std::sync::atomic::AtomicI64::new(not_after.unwrap_or(NOT_AFTER_UNKNOWN));
        Ok(Arc::new(Tls { files, current: RwLock::new((Arc::new(config), at)), not_after }))
    }

    /// When the certificate in use expires (Unix seconds), if its date reads.
    pub fn not_after(&self) -> Option<i64> {
        Some(self.not_after.load(std::sync::atomic::Ordering::Relaxed)).filter(|&t| t != NOT_AFTER_UNKNOWN)
    }

    /// An acceptor with the certificate of the moment.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        TlsAcceptor::from(current.0.clone())
    }

    /// Reads the files again if they changed since (or always, `forced`);
    /// whether the configuration was replaced.
    pub fn reload(&self, forced: bool) -> Result<bool, TlsError> {
        let at = stamp(&self.files);
        let unchanged = self.current.read().map(|c| c.1 == at).unwrap_or(false);
        if unchanged && !forced {
            return Ok(false);
        }
        let (config, not_after) = config(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(config), at);
        self.not_after.store(not_after.unwrap_or(NOT_AFTER_UNKNOWN), std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    /// Reloads when the files change (checked every `every`) or on SIGHUP,
    /// until the process ends.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let forced = tokio::select! {
                () = tokio::time::sleep(every) => false,
                Some(()) = async { hangups.as_mut()?.recv().await } => true,
            };
            match self.reload(forced) {
                Ok(true) => tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded; the one in use stays"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("certificate");
        let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.cert, cert.cert.pem()).expect("write");
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).expect("write");
        files
    }

    #[test]
    fn a_changed_pair_is_taken_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("dir");
        let files = write_pair(dir.path(), "one.test");
        let tls = Tls::load(files.clone()).expect("load");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        assert!(tls.not_after().is_some_and(|t| t > now as i64), "the certificate's expiry reads");
        assert!(!tls.reload(false).expect("unchanged"), "nothing changed");
        std::thread::sleep(Duration::from_millis(20));
        write_pair(dir.path(), "two.test");
        assert!(tls.reload(true).expect("reload"), "a new pair is taken");
        let before = tls.current.read().expect("lock").0.clone();
        std::fs::write(&files.key, b"not a key").expect("write");
        assert!(matches!(tls.reload(true), Err(TlsError::NoKey(_))));
        let after = tls.current.read().expect("lock").0.clone();
        assert!(Arc::ptr_eq(&before, &after), "a failed reload keeps the configuration in use");
        std::fs::write(&files.cert, b"").expect("write");
        assert!(matches!(Tls::load(files), Err(TlsError::NoCertificate(_))));
    }
}
