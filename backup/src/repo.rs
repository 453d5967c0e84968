//! A backup target: where in a bucket each object lives, the target's
//! backup key (made on first use, kept only wrapped by the KEK), and the
//! reads and writes of its sealed objects.
//!
//! # Layout under `s3://BUCKET/PREFIX/`
//!
//! ```text
//! config                        JSON: format 1, the target's id, piece size, the backup key wrapped by the KEK
//! pieces/XX/<64 hex>            one piece of volume data, named by its keyed hash (XX: its first two digits)
//! backups/<volume>/<backup id>  the manifest of a complete backup
//! pending/<volume>/<backup id>  the journal of a backup under way
//! drills/<volume>/<backup id>   the latest verify of a backup
//! locks/<kind>-<id>             who uses the target now (lock.rs)
//! ```
//!
//! A backup is complete exactly when its manifest exists: the manifest is
//! written after every piece it names, and only a complete backup is
//! listed or restored.
//!
//! The backup key is 32 random bytes; the target's two keys are HMACs of
//! it: an SM4 key for the envelopes (envelope.rs) and a key for piece ids.
//! A piece's id is HMAC-SHA256 of its plaintext under the id key: equal
//! data gets equal ids, so a piece is stored once however many backups
//! and volumes hold it, yet an id tells nobody without the KEK what data
//! it names (a plain hash would confirm a guessed block).

use bytes::Bytes;
use chuyi_common::sm4::{Kek, Sm4Gcm, WrapError};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::envelope::{self, Kind};
use crate::error::BackupError;
use crate::s3::S3;

/// The size of a piece: the unit of change, of dedup and of transfer.
/// 1 MiB, restic's average chunk: a changed 4 KiB block costs a 1 MiB
/// piece, and a 4 GiB volume is 4096 objects.
pub const PIECE_BYTES: u32 = 1 << 20;
/// The KEK wrap's context for a target's backup key.
const KEY_CONTEXT: &[u8] = b"chuyi-backup target key";
const CONFIG_FORMAT: u32 = 1;

/// A piece's name: HMAC-SHA256 of its plaintext under the target's id key.
pub type PieceId = [u8; 32];

/// `s3://BUCKET[/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetPath {
    pub bucket: String,
    pub prefix: String,
}

impl TargetPath {
    pub fn parse(url: &str) -> Result<Self, BackupError> {
        let bad = |why: &str| BackupError::Invalid(format!("target {url:?}: {why}"));
        let rest = url.strip_prefix("s3://").ok_or_else(|| bad("must be s3://BUCKET[/PREFIX]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let ok_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !ok_bucket {
            return Err(bad("the bucket must be 3 to 63 lower-case letters, digits, - and ."));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|part| part == "." || part == "..") || prefix.contains("//") {
            return Err(bad("the prefix may not hold empty, . or .. parts"));
        }
        Ok(Self { bucket: bucket.into(), prefix: prefix.into() })
    }

    /// The key of `name` under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

impl std::fmt::Display for TargetPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.prefix.as_str() {
            "" => write!(f, "s3://{}", self.bucket),
            prefix => write!(f, "s3://{}/{prefix}", self.bucket),
        }
    }
}

pub fn piece_name(id: &PieceId) -> String {
    let hex = hex::encode(id);
    format!("pieces/{}/{hex}", &hex[..2])
}

pub fn manifest_name(volume: &str, backup: &str) -> String {
    format!("backups/{volume}/{backup}")
}

pub fn journal_name(volume: &str, backup: &str) -> String {
    format!("pending/{volume}/{backup}")
}

pub fn drill_name(volume: &str, backup: &str) -> String {
    format!("drills/{volume}/{backup}")
}

/// The id a piece's name under `pieces/` spells, if it is one.
pub fn piece_of_name(name: &str) -> Option<PieceId> {
    let hex = name.strip_prefix("pieces/")?.split_once('/')?.1;
    let mut id = [0u8; 32];
    hex::decode_to_slice(hex, &mut id).ok()?;
    Some(id)
}

/// The `config` object: public, but for the wrapped key.
#[derive(Debug, Serialize, Deserialize)]
struct Config {
    format: u32,
    /// 8 random hex digits naming the target in the cluster's snapshots
    /// (`backup-<id>-<backup id>`), so backups of one volume to two
    /// targets keep their own.
    id: String,
    piece_bytes: u32,
    /// The backup key, wrapped by the KEK (hex).
    key: String,
    created_ms: u64,
}

/// An opened target: its S3 client, where it is, and its keys.
#[derive(Debug)]
pub struct Repo {
    pub s3: S3,
    pub path: TargetPath,
    /// The config's id of the target.
    pub id: String,
    gcm: Sm4Gcm,
    id_key: Zeroizing<[u8; 32]>,
}

impl Repo {
    /// Opens the target at `path`, making its bucket and backup key when
    /// `create` and there is none yet.
    pub async fn open(s3: S3, path: TargetPath, kek: &Kek, create: bool) -> Result<Self, BackupError> {
        let config_key = path.key("config");
        let config = match s3.get(&path.bucket, &config_key).await? {
            Some(bytes) => serde_json::from_slice::<Config>(&bytes)
                .map_err(|e| BackupError::corrupt(format!("{path}/config"), e.to_string()))?,
            None if create => Self::init(&s3, &path, kek).await?,
            None => {
                return Err(BackupError::NotFound(format!("target at {path} (no config: nothing was backed up there)")))
            }
        };
        if config.format != CONFIG_FORMAT || config.piece_bytes != PIECE_BYTES {
            return Err(BackupError::corrupt(
                format!("{path}/config"),
                format!("format {} with {} byte pieces is not this build's", config.format, config.piece_bytes),
            ));
        }
        let wrapped =
            hex::decode(&config.key).map_err(|e| BackupError::corrupt(format!("{path}/config"), e.to_string()))?;
        let key = kek.unwrap(&wrapped, KEY_CONTEXT).map_err(|e| match e {
            WrapError::WrongKek { .. } | WrapError::BadTag => BackupError::WrongKek(e.to_string()),
            other => BackupError::corrupt(format!("{path}/config"), other.to_string()),
        })?;
        let (gcm, id_key) = sub_keys(&key);
        Ok(Self { s3, path, id: config.id, gcm, id_key })
    }

    /// Writes a new target's config, only if there is none
    /// (`If-None-Match: *`): two first backups racing, or a read that
    /// missed an existing config, end up with the one config written
    /// first, never a second key.
    async fn init(s3: &S3, path: &TargetPath, kek: &Kek) -> Result<Config, BackupError> {
        s3.create_bucket(&path.bucket).await?;
        let mut key = Zeroizing::new([0u8; 32]);
        chuyi_common::secret::fill_random(&mut key[..]);
        let mut id = [0u8; 4];
        chuyi_common::secret::fill_random(&mut id);
        let config = Config {
            format: CONFIG_FORMAT,
            id: hex::encode(id),
            piece_bytes: PIECE_BYTES,
            key: hex::encode(kek.wrap(&key[..], KEY_CONTEXT)),
            created_ms: chuyi_common::clock::unix_ms(),
        };
        let json = serde_json::to_vec_pretty(&config).map_err(|e| BackupError::Invalid(e.to_string()))?;
        if s3.put_new(&path.bucket, &path.key("config"), Bytes::from(json)).await? {
            return Ok(config);
        }
        let bytes = s3
            .get(&path.bucket, &path.key("config"))
            .await?
            .ok_or_else(|| BackupError::corrupt(format!("{path}/config"), "said to exist, then missing"))?;
        serde_json::from_slice(&bytes).map_err(|e| BackupError::corrupt(format!("{path}/config"), e.to_string()))
    }

    /// The id of a piece holding `plain`.
    pub fn piece_id(&self, plain: &[u8]) -> PieceId {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.id_key[..]).expect("HMAC takes any key length");
        mac.update(plain);
        mac.finalize().into_bytes().into()
    }

    pub fn seal(&self, kind: Kind, name: &str, plain: &[u8]) -> Bytes {
        envelope::seal(&self.gcm, kind, name.as_bytes(), plain)
    }

    /// Writes `plain` sealed as object `name` (under the prefix).
    /// One that could not be read back (larger than [`envelope::holds`]
    /// or than a reply is read: a manifest of a volume holding more than
    /// about 7 TiB of data) is refused, so a backup fails at its start
    /// rather than finish unreadable.
    pub async fn put_sealed(&self, kind: Kind, name: &str, plain: &[u8]) -> Result<u64, BackupError> {
        let too_large = |len: usize| {
            BackupError::Invalid(format!(
                "{name} would be {len} bytes, more than a backup target object is read back at ({} bytes): a volume holding this much data cannot be backed up yet",
                envelope::PLAINTEXT_MAX_BYTES
            ))
        };
        if !envelope::holds(kind, plain.len()) {
            return Err(too_large(plain.len()));
        }
        let sealed = self.seal(kind, name, plain);
        if kind != Kind::Piece && sealed.len() > envelope::PLAINTEXT_MAX_BYTES {
            return Err(too_large(sealed.len()));
        }
        let len = sealed.len() as u64;
        self.s3.put(&self.path.bucket, &self.path.key(name), sealed).await?;
        Ok(len)
    }

    /// The plaintext of sealed object `name`; `None` when absent.
    pub async fn get_sealed(&self, kind: Kind, name: &str) -> Result<Option<Vec<u8>>, BackupError> {
        let Some(sealed) = self.s3.get(&self.path.bucket, &self.path.key(name)).await? else { return Ok(None) };
        let what = format!("{}/{name}", self.path);
        envelope::open(&self.gcm, kind, name.as_bytes(), &sealed, &what).map(Some)
    }

    /// A piece's plaintext, checked against its id.
    pub async fn get_piece(&self, id: &PieceId) -> Result<Vec<u8>, BackupError> {
        let name = piece_name(id);
        let plain = self
            .get_sealed(Kind::Piece, &name)
            .await?
            .ok_or_else(|| BackupError::corrupt(format!("{}/{name}", self.path), "missing"))?;
        if self.piece_id(&plain) != *id {
            return Err(BackupError::corrupt(format!("{}/{name}", self.path), "its data does not hash to its name"));
        }
        Ok(plain)
    }

    pub async fn delete(&self, name: &str) -> Result<(), BackupError> {
        Ok(self.s3.delete(&self.path.bucket, &self.path.key(name)).await?)
    }

    /// Names (under the prefix, without it) of every object under `dir`.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, BackupError> {
        let full = self.path.key(dir);
        let prefix = &full[..full.len() - dir.len()];
        let listed = self.s3.list(&self.path.bucket, &full).await?;
        // A key not under the prefix (a target answering for another) is
        // not ours: left out, never sliced.
        Ok(listed.into_iter().filter_map(|l| l.key.strip_prefix(prefix).map(String::from)).collect())
    }

    /// Every piece stored in the target now.
    pub async fn pieces(&self) -> Result<std::collections::HashSet<PieceId>, BackupError> {
        Ok(self.list("pieces/").await?.iter().filter_map(|name| piece_of_name(name)).collect())
    }
}

/// The envelope key and the id key of a backup key.
fn sub_keys(key: &[u8]) -> (Sm4Gcm, Zeroizing<[u8; 32]>) {
    let derive = |label: &[u8]| -> Zeroizing<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(label);
        Zeroizing::new(mac.finalize().into_bytes().into())
    };
    let enc = derive(b"chuyi-backup envelope");
    let mut sm4 = Zeroizing::new([0u8; 16]);
    sm4.copy_from_slice(&enc[..16]);
    (Sm4Gcm::new(&sm4), derive(b"chuyi-backup piece id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_to_bucket_and_prefix() {
        let t = TargetPath::parse("s3://backups/site-a/vms/").expect("parse");
        assert_eq!((t.bucket.as_str(), t.prefix.as_str()), ("backups", "site-a/vms"));
        assert_eq!(t.key("config"), "site-a/vms/config");
        assert_eq!(t.to_string(), "s3://backups/site-a/vms");
        let bare = TargetPath::parse("s3://backups").expect("parse");
        assert_eq!(bare.key("config"), "config");
        for bad in ["backups", "s3://", "s3://UPPER", "s3://b", "s3://bk/a/../b", "s3://bk/a//b", "http://bk"] {
            assert!(TargetPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn piece_names_spell_their_ids() {
        let id = [0xab; 32];
        let name = piece_name(&id);
        assert!(name.starts_with("pieces/ab/abab"));
        assert_eq!(piece_of_name(&name), Some(id));
        assert_eq!(piece_of_name("pieces/ab/xyz"), None);
        assert_eq!(piece_of_name("backups/v/1"), None);
    }
}
