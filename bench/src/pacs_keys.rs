//! Object keys shaped like a PACS archive's: `shard/study/series/instance`,
//! e.g. `a/2.25.733112620431/3/0017.dcm`, so a listing with a prefix and
//! the delimiter `/` rolls instances up into study or series folders as it
//! would for a real archive.
//!
//! Object `n` is instance `n % 25` of series `n / 25 % 4` of study
//! `n / 100`. Studies are written whole, one after another, but their UIDs
//! are scattered (a multiplicative hash, as UIDs from many modalities
//! are), so the fill lands all over the key space rather than appending
//! at its end: the harder case for an LSM tree, and the realistic one.
//! The first UID hex digit picks one of 16 shard folders; at 10 million
//! objects a shard holds about 6 250 studies, enough for full pages of
//! 1000 study folders.

/// Instances (objects) in one series.
pub const INSTANCES_PER_SERIES: u64 = 25;
/// Series in one study.
pub const SERIES_PER_STUDY: u64 = 4;
/// Top-level folders, one per hex digit.
pub const SHARDS: u64 = 16;

/// Bits of the scattered study number; studies must stay below this.
const UID_BITS: u32 = 40;
const UID_MASK: u64 = (1 << UID_BITS) - 1;
/// Odd, so multiplying by it modulo 2^40 is a bijection: no two studies
/// share a UID.
const SCATTER: u64 = 0x9E37_79B9_7F4A_7C15;
const _: () = assert!(SCATTER % 2 == 1);
const _: () = assert!(SHARDS == 16, "the shard is the UID's top hex digit");

/// Objects in one study.
pub const fn objects_per_study() -> u64 {
    INSTANCES_PER_SERIES * SERIES_PER_STUDY
}

/// The scattered number of study `study`, below 2^40.
fn study_uid(study: u64) -> u64 {
    assert!(study <= UID_MASK, "study {study} exceeds the key layout");
    study.wrapping_mul(SCATTER) & UID_MASK
}

/// The folder of shard `shard` (0..16): what a delimited listing of one
/// shard's studies takes as its prefix.
pub fn shard_prefix(shard: u64) -> String {
    assert!(shard < SHARDS);
    format!("{shard:x}/")
}

/// The key of object `n`.
pub fn key(n: u64) -> String {
    let study = n / objects_per_study();
    let series = n / INSTANCES_PER_SERIES % SERIES_PER_STUDY + 1;
    let instance = n % INSTANCES_PER_SERIES + 1;
    let uid = study_uid(study);
    let shard = uid >> (UID_BITS - 4);
    format!("{shard:x}/2.25.{uid}/{series}/{instance:04}.dcm")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use super::*;

    #[test]
    fn keys_are_unique_and_a_study_is_one_folder() {
        let keys: Vec<String> = (0..20_000).map(key).collect();
        assert_eq!(keys.iter().collect::<HashSet<_>>().len(), keys.len());
        let study_of = |k: &str| k.rsplitn(3, '/').nth(2).map(String::from);
        assert_eq!(study_of(&keys[0]), study_of(&keys[99]));
        assert_ne!(study_of(&keys[99]), study_of(&keys[100]));
        assert!(keys[0].ends_with("/1/0001.dcm") && keys[99].ends_with("/4/0025.dcm"), "{keys:?}");
    }

    #[test]
    fn studies_spread_over_every_shard() {
        let shards: BTreeSet<String> = (0..1000).map(|s| key(s * objects_per_study())[..2].to_string()).collect();
        let all: BTreeSet<String> = (0..SHARDS).map(shard_prefix).collect();
        assert_eq!(shards, all);
    }

    #[test]
    fn consecutive_studies_do_not_sort_together() {
        let a = key(0);
        let b = key(objects_per_study());
        let c = key(2 * objects_per_study());
        assert!(!(a < b && b < c), "{a} {b} {c}");
    }
}
