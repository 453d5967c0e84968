//! The on-disk format, as pure encode/decode functions with no I/O.
//!
//! `storage-node/FORMAT.md` draws every byte. A disk (a file in a
//! directory, a file, or a block device) is laid out as:
//!
//! ```text
//! [superblock 4 KiB][slot table][checksum tables: 4 KiB per slot][checksum journal][pad to 1 MiB][slot data: chunk_size per slot]
//! ```
//!
//! The checksum journal is version 2's; a version 1 disk has none.

pub mod journal;
pub mod layout;
pub mod slot_table;
pub mod superblock;

/// The little-endian `u32` at byte `at` of `b` (the caller has checked
/// that `b` is long enough: a whole block).
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The little-endian `u64` at byte `at` of `b`, as [`u32_at`].
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Why bytes read from a disk are not a valid structure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a chuyi disk (bad magic)")]
    BadMagic,
    #[error("disk format version {0} is not supported (this build reads versions {old} and {current})", old = superblock::FORMAT_VERSION_NO_JOURNAL, current = superblock::FORMAT_VERSION)]
    Version(u32),
    #[error("superblock checksum mismatch")]
    Checksum,
    #[error("superblock field {field} is invalid: {value}")]
    Field { field: &'static str, value: u64 },
    #[error("disk of {capacity_bytes} bytes is too small for one chunk of {chunk_size} bytes")]
    TooSmall { capacity_bytes: u64, chunk_size: u64 },
}
