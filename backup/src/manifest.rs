//! A backup's manifest: which piece holds each piece-sized span of the
//! volume, and what was recorded at backup time to check a restore
//! against. Written last, so a manifest names only pieces already in the
//! target; a backup under way keeps the same record as its journal, with
//! the spans still to read.
//!
//! # Format, version 1
//!
//! The [`Manifest`] struct, postcard-encoded, sealed in an envelope
//! (envelope.rs) of kind manifest or journal named
//! `backups/<volume>/<id>` or `pending/<volume>/<id>`. A span is 33 bytes
//! (a tag and an id): 33 MB for a 1 TiB volume before compression.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::BackupError;
use crate::repo::{PieceId, PIECE_BYTES};

pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// `20261204T112233.456Z-1a2b3c`: its UTC start to the millisecond,
    /// then random digits; ids of one volume sort by time.
    pub id: String,
    pub volume: String,
    /// The volume's chunk owner: tells the volume backed up from a later
    /// one of the same name, whose changes do not follow from this one.
    pub volume_owner: u64,
    pub volume_bytes: u64,
    /// Whether the volume was encrypted (a restore encrypts its copy).
    pub encrypted: bool,
    /// The snapshot it was read from, and that snapshot's id.
    pub snapshot: String,
    pub snapshot_id: u32,
    /// The backup it holds the changes since, if incremental.
    pub parent: Option<String>,
    /// The schedule that made it (its label), if any.
    pub schedule: Option<String>,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub piece_bytes: u32,
    /// Each span's piece; `None` reads as zeros and is stored nowhere.
    pub pieces: Vec<Option<PieceId>>,
    /// Spans not read yet (a journal's); empty in a manifest.
    pub todo: Vec<u64>,
    /// SHA-256 over the volume's size and every span's id (32 zero bytes
    /// for a hole), in order: the whole image's hash, as each id is a
    /// keyed hash of its span's bytes. A verify recomputes it from the
    /// bytes it reads back.
    pub image_hash: [u8; 32],
    pub stats: Stats,
}

/// What one run of a backup did (summed over resumed runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Spans read from the snapshot.
    pub spans_read: u64,
    pub bytes_read: u64,
    /// Pieces sent to the target, and their bytes as stored.
    pub pieces_sent: u64,
    pub bytes_sent: u64,
    /// Spans whose piece was already in the target.
    pub pieces_reused: u64,
    /// Spans of zeros.
    pub holes: u64,
    /// Bytes that differed from the parent (all data, for a full backup).
    pub changed_bytes: u64,
}

impl std::ops::AddAssign<&Stats> for Stats {
    /// Sums what runs did; `changed_bytes` is the backup's, not a run's.
    fn add_assign(&mut self, s: &Stats) {
        self.spans_read += s.spans_read;
        self.bytes_read += s.bytes_read;
        self.pieces_sent += s.pieces_sent;
        self.bytes_sent += s.bytes_sent;
        self.pieces_reused += s.pieces_reused;
        self.holes += s.holes;
    }
}

/// Whether the manifest of a volume of `spans` spans, `data_spans` of them
/// holding a piece, stays small enough to be read back: a piece costs 33
/// bytes of it (its id and a tag), a hole one; 1 MiB is left for the rest.
pub fn fits(spans: u64, data_spans: u64) -> bool {
    let bytes = spans.saturating_add(data_spans.saturating_mul(32)).saturating_add(1 << 20);
    bytes <= crate::envelope::PLAINTEXT_MAX_BYTES as u64
}

impl Manifest {
    /// Spans of a volume of `bytes`.
    pub fn spans(bytes: u64) -> u64 {
        bytes.div_ceil(u64::from(PIECE_BYTES))
    }

    /// Byte range `[start, end)` of span `index`.
    pub fn span_range(&self, index: u64) -> (u64, u64) {
        let start = index * u64::from(self.piece_bytes);
        (start, (start + u64::from(self.piece_bytes)).min(self.volume_bytes))
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a manifest always encodes")
    }

    pub fn decode(bytes: &[u8], what: &str) -> Result<Self, BackupError> {
        let m: Self = postcard::from_bytes(bytes).map_err(|e| BackupError::corrupt(what, e.to_string()))?;
        if m.format != FORMAT {
            return Err(BackupError::corrupt(
                what,
                format!("manifest format {} (this build reads {FORMAT})", m.format),
            ));
        }
        if m.piece_bytes != PIECE_BYTES || m.pieces.len() as u64 != Self::spans(m.volume_bytes) {
            return Err(BackupError::corrupt(what, "its spans do not cover its volume"));
        }
        // Spans left are indexes into the spans: one past them would be
        // read and written out of bounds.
        if m.todo.iter().any(|&i| i >= m.pieces.len() as u64) {
            return Err(BackupError::corrupt(what, "it lists a span to read past its volume"));
        }
        Ok(m)
    }

    /// Bytes of data (not holes) the backup holds.
    pub fn data_bytes(&self) -> u64 {
        (0..self.pieces.len() as u64)
            .filter(|&i| self.pieces[i as usize].is_some())
            .map(|i| {
                let (start, end) = self.span_range(i);
                end - start
            })
            .sum()
    }
}

/// The image hash of a volume of `volume_bytes` whose spans hold `pieces`.
pub fn image_hash(volume_bytes: u64, pieces: &[Option<PieceId>]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"chuyi-backup image 1");
    h.update(volume_bytes.to_le_bytes());
    for piece in pieces {
        h.update(piece.unwrap_or([0; 32]));
    }
    h.finalize().into()
}

/// A new backup's id: its start in UTC to the millisecond and 24 random
/// bits, so ids sort by time (backups of one volume run one at a time,
/// each longer than a millisecond) and two started at once differ.
pub fn new_id(now_ms: u64) -> String {
    let mut r = [0u8; 3];
    chuyi_common::secret::fill_random(&mut r);
    format!("{}-{}", utc_stamp(now_ms), hex::encode(r))
}

/// `20261204T112233.456Z`.
pub fn utc_stamp(ms: u64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms as i64).unwrap_or_default();
    t.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// The time a backup id starts with, in ms since the epoch.
pub fn id_time_ms(id: &str) -> Option<u64> {
    let stamp = id.get(..20)?;
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ").ok()?;
    u64::try_from(t.and_utc().timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_fits_up_to_about_seven_tib_of_data() {
        let tib = (1u64 << 40) / u64::from(PIECE_BYTES);
        assert!(fits(16 * tib, 7 * tib), "7 TiB of data in a 16 TiB volume");
        assert!(!fits(16 * tib, 8 * tib), "8 TiB of data");
        assert!(!fits(u64::MAX, u64::MAX));
    }

    #[test]
    fn ids_sort_by_time_and_give_it_back() {
        let a = new_id(1_796_000_000_098);
        let b = new_id(1_796_000_000_099);
        assert!(a < b);
        assert_eq!(id_time_ms(&a), Some(1_796_000_000_098));
        assert_eq!(&a[..20], "20261130T005320.098Z");
        assert_eq!(id_time_ms("garbage"), None);
    }

    #[test]
    fn a_manifest_round_trips_and_a_bad_one_is_refused() {
        let m = Manifest {
            format: FORMAT,
            id: new_id(0),
            volume: "v".into(),
            volume_owner: 7,
            volume_bytes: 3 * u64::from(PIECE_BYTES) - 5,
            encrypted: false,
            snapshot: "s".into(),
            snapshot_id: 2,
            parent: None,
            schedule: None,
            started_ms: 1,
            finished_ms: 2,
            piece_bytes: PIECE_BYTES,
            pieces: vec![Some([1; 32]), None, Some([2; 32])],
            todo: vec![],
            image_hash: [0; 32],
            stats: Stats::default(),
        };
        assert_eq!(Manifest::decode(&m.encode(), "m").expect("decode"), m);
        assert_eq!(m.span_range(2), (2 << 20, (3 << 20) - 5));
        assert_eq!(m.data_bytes(), (2 << 20) - 5);
        let short = Manifest { pieces: vec![None], ..m.clone() };
        assert!(Manifest::decode(&short.encode(), "m").is_err());
        let past = Manifest { todo: vec![3], ..m.clone() };
        assert!(Manifest::decode(&past.encode(), "m").is_err());
        assert!(Manifest::decode(&m.encode()[..10], "m").is_err());
    }

    #[test]
    fn the_image_hash_tells_holes_and_order_apart() {
        let a = image_hash(8, &[Some([1; 32]), None]);
        assert_ne!(a, image_hash(8, &[None, Some([1; 32])]));
        assert_ne!(a, image_hash(9, &[Some([1; 32]), None]));
        assert_eq!(a, image_hash(8, &[Some([1; 32]), None]));
    }
}
