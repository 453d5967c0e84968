//! What a name, key or shape must look like before anything is stored.

use std::collections::BTreeSet;

use super::error::MetaError;
use super::model::{DiskRecord, Redundancy};

/// Longest name of a pool, volume, user or lease holder.
pub const NAME_MAX_BYTES: usize = 128;
/// Longest S3 object key, as S3 allows.
pub const OBJECT_KEY_MAX_BYTES: usize = 1024;
/// Most PGs one pool may have.
pub const PG_COUNT_MAX: u32 = 8192;
/// Most PGs in the cluster: the map (every PG) is one reply, bounded well
/// under the 4 MiB RPC payload.
pub const CLUSTER_PGS_MAX: u32 = 32_768;
/// Most disks one node may report.
pub const DISKS_PER_NODE_MAX: usize = 256;
/// Largest capacity a disk may report (1 EiB): sums cannot overflow.
pub const DISK_CAPACITY_MAX_BYTES: u64 = 1 << 60;
/// Most replicas a replicated pool may ask for.
pub const REPLICAS_MAX: u8 = 3;

/// Pools, volumes, users, holders: 1 to 128 of `[A-Za-z0-9._:-]`, not
/// starting with a dot.
pub fn check_name(what: &str, name: &str) -> Result<(), MetaError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
    if name.is_empty() || name.len() > NAME_MAX_BYTES {
        return Err(MetaError::invalid(what, format!("must be 1 to {NAME_MAX_BYTES} bytes, got {}", name.len())));
    }
    if !name.chars().all(ok_char) || name.starts_with('.') {
        return Err(MetaError::invalid(
            what,
            format!("{name:?} may only hold letters, digits and . _ : - (not first .)"),
        ));
    }
    Ok(())
}

/// S3 access key ids: 16 to 128 upper-case letters and digits.
pub fn check_access_key(key: &str) -> Result<(), MetaError> {
    let ok = (16..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !ok {
        return Err(MetaError::invalid("access key", "must be 16 to 128 upper-case letters and digits"));
    }
    Ok(())
}

/// S3's bucket naming rules: 3 to 63 of lower-case letters, digits, dots
/// and hyphens, starting and ending with a letter or digit, no `..`, no dot
/// next to a hyphen (each label of a DNS name starts and ends with a letter
/// or digit), not an IP address.
pub fn check_bucket_name(name: &str) -> Result<(), MetaError> {
    let bad = |why: &str| Err(MetaError::invalid("bucket name", format!("{name:?}: {why}")));
    if !(3..=63).contains(&name.len()) {
        return bad("must be 3 to 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        return bad("may only hold lower-case letters, digits, dots and hyphens");
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !edge_ok(name.bytes().next()) || !edge_ok(name.bytes().last()) {
        return bad("must start and end with a letter or digit");
    }
    if name.contains("..") {
        return bad("must not hold two dots in a row");
    }
    if name.contains(".-") || name.contains("-.") {
        return bad("must not hold a dot next to a hyphen");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not be an IP address");
    }
    Ok(())
}

/// 1 to 1024 bytes of UTF-8 (the type already guarantees UTF-8).
pub fn check_object_key(key: &str) -> Result<(), MetaError> {
    if key.is_empty() || key.len() > OBJECT_KEY_MAX_BYTES {
        return Err(MetaError::KeyLength { len: key.len(), max: OBJECT_KEY_MAX_BYTES });
    }
    Ok(())
}

pub fn check_pool_shape(redundancy: Redundancy, pg_count: u32) -> Result<(), MetaError> {
    let Redundancy::Replicated(n) = redundancy;
    if n == 0 || n > REPLICAS_MAX {
        return Err(MetaError::invalid("redundancy", format!("replicated({n}) is not within 1..={REPLICAS_MAX}")));
    }
    if pg_count == 0 || pg_count > PG_COUNT_MAX {
        return Err(MetaError::invalid("pg count", format!("{pg_count} is not within 1..={PG_COUNT_MAX}")));
    }
    Ok(())
}

/// A node's disk list: unique ids.
pub fn check_disks(disks: &[DiskRecord]) -> Result<(), MetaError> {
    if disks.len() > DISKS_PER_NODE_MAX {
        return Err(MetaError::invalid("disk list", format!("{} disks; at most {DISKS_PER_NODE_MAX}", disks.len())));
    }
    let mut seen = BTreeSet::new();
    for d in disks {
        if !seen.insert(d.id) {
            return Err(MetaError::invalid("disk list", format!("disk id {} appears twice", d.id)));
        }
        if d.capacity_bytes > DISK_CAPACITY_MAX_BYTES || d.used_bytes > d.capacity_bytes {
            return Err(MetaError::invalid("disk list", format!("disk {}: capacity or used bytes out of range", d.id)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3() {
        for ok in ["abc", "my-bucket.v2", "0ab"] {
            assert!(check_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "Abc", "-abc", "abc-", "a..b", "a.-b", "a-.b", "192.168.1.1", "a_b", &"a".repeat(64)] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_refuse_paths_and_empties() {
        assert!(check_name("pool", "ssd-1").is_ok());
        assert!(check_name("pool", "").is_err());
        assert!(check_name("pool", "a/b").is_err());
        assert!(check_name("pool", ".hidden").is_err());
        assert!(check_name("pool", &"x".repeat(129)).is_err());
    }
}
