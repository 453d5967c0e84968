//! The cluster secret: what proves an RPC peer belongs to the cluster.
//!
//! It is read from a file or the environment at start and is never logged:
//! its `Debug` prints a placeholder.

use std::fmt;
use std::path::Path;

/// The environment variable that carries the secret when no file is given.
pub const SECRET_ENV: &str = "CHUYI_CLUSTER_SECRET";

/// Fewest bytes a secret may have; shorter ones are refused at start.
pub const SECRET_MIN_BYTES: usize = 16;

/// The shared key of the RPC handshake's HMAC.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the cluster secret from {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the cluster secret is {0} bytes; at least {SECRET_MIN_BYTES} are needed")]
    TooShort(usize),
    #[error("no cluster secret: set {SECRET_ENV} or give a secret file")]
    Missing,
    #[error("{0} holds a node's or frontend's credential, not the cluster secret this needs")]
    IsCredential(String),
}

impl ClusterSecret {
    /// A secret from raw bytes, refused when shorter than [`SECRET_MIN_BYTES`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = bytes.into();
        if bytes.len() < SECRET_MIN_BYTES {
            return Err(SecretError::TooShort(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// A secret from a file; surrounding whitespace is not part of it.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let text =
            std::fs::read(path).map_err(|source| SecretError::Read { path: path.display().to_string(), source })?;
        if text.starts_with(b"chuyi-credential-") {
            return Err(SecretError::IsCredential(path.display().to_string()));
        }
        Self::new(text.trim_ascii().to_vec())
    }

    /// The file if given, else [`SECRET_ENV`].
    pub fn load(file: Option<&Path>) -> Result<Self, SecretError> {
        match (file, std::env::var_os(SECRET_ENV)) {
            (Some(path), _) => Self::from_file(path),
            (None, Some(value)) => Self::new(value.into_encoded_bytes()),
            (None, None) => Err(SecretError::Missing),
        }
    }

    /// A fresh random secret, 64 hex digits, as text.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes);
        Self(hex(&bytes).into_bytes())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as text, for writing a secret file.
    pub fn to_text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Fills `buf` from the OS random source. Without one the node cannot make
/// nonces or keys at all, so failing is a crash, not an error.
pub fn fill_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        panic!("the operating system's random source failed: {e}");
    }
}

/// Whether `a` and `b` are the same bytes, in time that does not depend on
/// where they first differ (tags, key checks, secret keys); only their
/// lengths may show.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `bytes` as lower-case hex digits, two per byte.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of hex digits (either case), two per byte; none if `text`
/// is anything else.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_compare_whole() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abd", b"abc"));
        assert!(!same_bytes(b"ab", b"abc"));
        assert!(!same_bytes(b"", b"abc"));
    }

    #[test]
    fn refuses_short_secret() {
        assert!(matches!(ClusterSecret::new(b"short".to_vec()), Err(SecretError::TooShort(5))));
    }

    #[test]
    fn debug_redacts() {
        let s = ClusterSecret::new(b"0123456789abcdef-very-secret".to_vec()).expect("long enough");
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn file_is_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef0123\n").expect("write");
        let s = ClusterSecret::from_file(&path).expect("load");
        assert_eq!(s.as_bytes(), b"0123456789abcdef0123");
    }

    #[test]
    fn generated_secrets_differ() {
        assert_ne!(ClusterSecret::generate().as_bytes(), ClusterSecret::generate().as_bytes());
    }
}
