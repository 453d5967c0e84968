//! Keys of the typed tables in `sm_data`: one prefix byte per table, then
//! the record's key encoded so that bytewise order is the table's order
//! (layout in KEYSPACE.md).
//!
//! Strings are encoded with 0x00 escaped as 0x00 0xFF and ended by
//! 0x00 0x01: order-preserving, self-delimiting (so a bucket name can be
//! followed by an object key), and a string's encoding without its end is a
//! prefix of the encoding of every string it prefixes, which is what a
//! prefix listing scans.

use chuyi_common::ids::NodeId;

/// Singletons: the map epoch and id counters.
pub(crate) const T_META: u8 = 0x00;
pub(crate) const T_NODE: u8 = 0x01;
pub(crate) const T_POOL: u8 = 0x02;
pub(crate) const T_PG: u8 = 0x03;
pub(crate) const T_VOLUME: u8 = 0x04;
pub(crate) const T_USER: u8 = 0x05;
pub(crate) const T_BUCKET: u8 = 0x06;
/// User name → access key, so names are unique and users are found by name.
pub(crate) const T_USER_NAME: u8 = 0x07;
/// Nodes marked down on a peer's report, and until when they stay down.
pub(crate) const T_QUARANTINE: u8 = 0x08;
/// Pool name → the defaults its new volumes get ([`PoolDefaults`]); a pool
/// without a record has the default ones.
///
/// [`PoolDefaults`]: super::model::PoolDefaults
pub(crate) const T_POOL_DEFAULTS: u8 = 0x09;
/// The object index: every version of every object.
pub(crate) const T_OBJECT: u8 = 0x10;
/// Chunk owner → object data not yet referred to ([`PendingData`]).
///
/// [`PendingData`]: super::model::PendingData
pub(crate) const T_PENDING: u8 = 0x11;
/// Chunk owner → bytes of object data no record refers to any more,
/// waiting for the gateway to delete its chunks.
pub(crate) const T_GARBAGE: u8 = 0x12;
/// Multipart uploads in progress, by bucket, key and upload id.
pub(crate) const T_UPLOAD: u8 = 0x13;
/// Their parts, by upload id and part number.
pub(crate) const T_PART: u8 = 0x14;
/// Bucket name → what it holds ([`BucketUsage`]).
///
/// [`BucketUsage`]: super::model::BucketUsage
pub(crate) const T_BUCKET_USAGE: u8 = 0x15;
/// Pack owner → [`Pack`]: chunk owners shared by small objects.
///
/// [`Pack`]: super::model::Pack
pub(crate) const T_PACK: u8 = 0x16;
/// Pack owner → (): the packs most of which is dead, so the compactor and
/// the reclaimer find them without reading every pack.
pub(crate) const T_PACK_SPARSE: u8 = 0x17;
/// Pack owner, offset → [`PackRef`]: the live runs of each pack.
///
/// [`PackRef`]: super::model::PackRef
pub(crate) const T_PACK_REF: u8 = 0x18;
/// Bucket, configuration name → document bytes
/// ([`BucketConfigKind`](super::model::BucketConfigKind)).
pub(crate) const T_BUCKET_CONFIG: u8 = 0x19;
/// QoS scope → [`QosRule`](chuyi_meta_api::qos::QosRule).
pub(crate) const T_QOS: u8 = 0x1A;
/// Volume name → [`TrashEntry`](chuyi_meta_api::model::TrashEntry): the
/// recycle bin.
pub(crate) const T_TRASH: u8 = 0x1B;
/// Volume name → [`VolumeSnapshots`](chuyi_meta_api::model::VolumeSnapshots).
pub(crate) const T_SNAPSHOTS: u8 = 0x1C;
/// Pool name → `Vec<`[`SnapshotSchedule`](chuyi_meta_api::schedule::SnapshotSchedule)`>`:
/// schedules of every volume of the pool.
pub(crate) const T_POOL_SCHEDULES: u8 = 0x1D;
/// Volume name, target →
/// [`BackupSchedule`](chuyi_meta_api::backup_schedule::BackupSchedule).
pub(crate) const T_BACKUP_SCHEDULES: u8 = 0x1E;

pub(crate) const EPOCH: &[u8] = &[T_META, b'e'];
/// Next volume id (chunk owner) and lease id.
pub(crate) const NEXT_ID: &[u8] = &[T_META, b'i'];
/// Next pool id.
pub(crate) const NEXT_POOL_ID: &[u8] = &[T_META, b'p'];
/// The latest leader clock applied: time never goes back in the state.
pub(crate) const LAST_NOW: &[u8] = &[T_META, b'n'];
/// [`PackTotals`](super::model::PackTotals), kept as packs change.
pub(crate) const PACK_TOTALS: &[u8] = &[T_META, b'k'];
/// The QoS rules' version: one more at each change, so frontends refetch
/// the rules only when they changed.
pub(crate) const QOS_VERSION: &[u8] = &[T_META, b'q'];
/// How long deleted volumes stay in the recycle bin (ms); none set: the
/// default, 7 days.
pub(crate) const TRASH_RETENTION: &[u8] = &[T_META, b'r'];

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const END: u8 = 0x01;

/// Appends the escaped bytes of `s` without the end mark.
fn push_open(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        out.push(b);
        if b == ESCAPE {
            out.push(ESCAPED_ZERO);
        }
    }
}

/// Appends `s` escaped and ended.
fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    push_open(out, s);
    out.extend_from_slice(&[ESCAPE, END]);
}

/// Splits one ended string off the front of `bytes`.
pub(crate) fn take_str(bytes: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != ESCAPE {
            out.push(b);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(&ESCAPED_ZERO) => out.push(ESCAPE),
            Some(&END) => return Some((out, &bytes[i + 2..])),
            _ => return None,
        }
        i += 2;
    }
    None
}

fn table(t: u8) -> Vec<u8> {
    vec![t]
}

/// The first key after every key that starts with `prefix`, or `None` when no
/// key can follow (all bytes 0xFF).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// `[start, end)` of a whole table.
pub(crate) fn table_range(t: u8) -> (Vec<u8>, Vec<u8>) {
    (table(t), vec![t + 1])
}

pub(crate) fn node(id: NodeId) -> Vec<u8> {
    let mut k = table(T_NODE);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn pool_defaults(name: &str) -> Vec<u8> {
    let mut k = table(T_POOL_DEFAULTS);
    push_str(&mut k, name.as_bytes());
    k
}

pub(crate) fn quarantine(id: NodeId) -> Vec<u8> {
    let mut k = table(T_QUARANTINE);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn pool(name: &str) -> Vec<u8> {
    let mut k = table(T_POOL);
    push_str(&mut k, name.as_bytes());
    k
}

pub(crate) fn pg(pool: u32, pg: u32) -> Vec<u8> {
    let mut k = pg_pool_prefix(pool);
    k.extend_from_slice(&pg.to_be_bytes());
    k
}

pub(crate) fn pg_pool_prefix(pool: u32) -> Vec<u8> {
    let mut k = table(T_PG);
    k.extend_from_slice(&pool.to_be_bytes());
    k
}

pub(crate) fn volume(name: &str) -> Vec<u8> {
    let mut k = table(T_VOLUME);
    push_str(&mut k, name.as_bytes());
    k
}

pub(crate) fn trash(name: &str) -> Vec<u8> {
    let mut k = table(T_TRASH);
    push_str(&mut k, name.as_bytes());
    k
}

pub(crate) fn snapshots(volume: &str) -> Vec<u8> {
    let mut k = table(T_SNAPSHOTS);
    push_str(&mut k, volume.as_bytes());
    k
}

pub(crate) fn backup_schedule(volume: &str, target: &str) -> Vec<u8> {
    let mut k = table(T_BACKUP_SCHEDULES);
    push_str(&mut k, volume.as_bytes());
    push_str(&mut k, target.as_bytes());
    k
}

pub(crate) fn pool_schedules(pool: &str) -> Vec<u8> {
    let mut k = table(T_POOL_SCHEDULES);
    push_str(&mut k, pool.as_bytes());
    k
}

pub(crate) fn user(access_key: &str) -> Vec<u8> {
    let mut k = table(T_USER);
    push_str(&mut k, access_key.as_bytes());
    k
}

pub(crate) fn user_name(name: &str) -> Vec<u8> {
    let mut k = table(T_USER_NAME);
    push_str(&mut k, name.as_bytes());
    k
}

pub(crate) fn bucket(name: &str) -> Vec<u8> {
    let mut k = table(T_BUCKET);
    push_str(&mut k, name.as_bytes());
    k
}

/// A QoS rule's key: its kind of scope, then the names it holds.
pub(crate) fn qos(scope: &chuyi_meta_api::qos::QosScope) -> Vec<u8> {
    use chuyi_meta_api::qos::QosScope;
    let mut k = table(T_QOS);
    match scope {
        QosScope::User(user) => {
            k.push(b'u');
            push_str(&mut k, user.as_bytes());
        }
        QosScope::Bucket(bucket) => {
            k.push(b'b');
            push_str(&mut k, bucket.as_bytes());
        }
        QosScope::UserBucket { user, bucket } => {
            k.push(b'x');
            push_str(&mut k, user.as_bytes());
            push_str(&mut k, bucket.as_bytes());
        }
        QosScope::Volume(volume) => {
            k.push(b'v');
            push_str(&mut k, volume.as_bytes());
        }
        QosScope::Pool(pool) => {
            k.push(b'p');
            push_str(&mut k, pool.as_bytes());
        }
    }
    k
}

/// Every configuration document of a bucket starts with this.
pub(crate) fn bucket_configs(bucket: &str) -> Vec<u8> {
    let mut k = table(T_BUCKET_CONFIG);
    push_str(&mut k, bucket.as_bytes());
    k
}

pub(crate) fn bucket_config(bucket: &str, name: &str) -> Vec<u8> {
    let mut k = bucket_configs(bucket);
    push_str(&mut k, name.as_bytes());
    k
}

/// A bucket's object lock configuration: among its configuration
/// documents (so it goes with the bucket), typed, read by apply.
pub(crate) fn object_lock(bucket: &str) -> Vec<u8> {
    bucket_config(bucket, "object-lock")
}

/// Every key of a bucket's objects starts with this.
pub(crate) fn bucket_objects(bucket: &str) -> Vec<u8> {
    let mut k = table(T_OBJECT);
    push_str(&mut k, bucket.as_bytes());
    k
}

/// Every version key of objects whose key starts with `key_prefix`.
pub(crate) fn object_prefix(bucket: &str, key_prefix: &str) -> Vec<u8> {
    let mut k = bucket_objects(bucket);
    push_open(&mut k, key_prefix.as_bytes());
    k
}

/// Every version key of exactly `key`.
pub(crate) fn object_versions(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = bucket_objects(bucket);
    push_str(&mut k, key.as_bytes());
    k
}

/// One version of `key`: newest first, so the sequence is stored inverted.
pub(crate) fn object_version(bucket: &str, key: &str, seq: u64) -> Vec<u8> {
    let mut k = object_versions(bucket, key);
    k.extend_from_slice(&(!seq).to_be_bytes());
    k
}

pub(crate) fn pending(owner: u64) -> Vec<u8> {
    let mut k = table(T_PENDING);
    k.extend_from_slice(&owner.to_be_bytes());
    k
}

pub(crate) fn garbage(owner: u64) -> Vec<u8> {
    let mut k = table(T_GARBAGE);
    k.extend_from_slice(&owner.to_be_bytes());
    k
}

pub(crate) fn pack(owner: u64) -> Vec<u8> {
    let mut k = table(T_PACK);
    k.extend_from_slice(&owner.to_be_bytes());
    k
}

pub(crate) fn pack_sparse(owner: u64) -> Vec<u8> {
    let mut k = table(T_PACK_SPARSE);
    k.extend_from_slice(&owner.to_be_bytes());
    k
}

pub(crate) fn pack_ref(owner: u64, offset: u64) -> Vec<u8> {
    let mut k = table(T_PACK_REF);
    k.extend_from_slice(&owner.to_be_bytes());
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// The owner of a pending, garbage, pack or sparse-pack key.
pub(crate) fn parse_owner(raw: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(raw.get(1..)?.try_into().ok()?))
}

pub(crate) fn bucket_usage(bucket: &str) -> Vec<u8> {
    let mut k = table(T_BUCKET_USAGE);
    push_str(&mut k, bucket.as_bytes());
    k
}

/// Every upload of a bucket starts with this.
pub(crate) fn bucket_uploads(bucket: &str) -> Vec<u8> {
    let mut k = table(T_UPLOAD);
    push_str(&mut k, bucket.as_bytes());
    k
}

/// Uploads of `bucket` whose key starts with `key_prefix`.
pub(crate) fn upload_prefix(bucket: &str, key_prefix: &str) -> Vec<u8> {
    let mut k = bucket_uploads(bucket);
    push_open(&mut k, key_prefix.as_bytes());
    k
}

pub(crate) fn upload(bucket: &str, key: &str, upload_id: &str) -> Vec<u8> {
    let mut k = bucket_uploads(bucket);
    push_str(&mut k, key.as_bytes());
    push_str(&mut k, upload_id.as_bytes());
    k
}

/// Every part key of an upload starts with this.
pub(crate) fn upload_parts(upload_id: &str) -> Vec<u8> {
    let mut k = table(T_PART);
    push_str(&mut k, upload_id.as_bytes());
    k
}

pub(crate) fn part(upload_id: &str, number: u32) -> Vec<u8> {
    let mut k = upload_parts(upload_id);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

/// The object key and sequence of an object index key of `bucket`.
pub(crate) fn parse_object(bucket_prefix: &[u8], raw: &[u8]) -> Option<(String, u64)> {
    let rest = raw.strip_prefix(bucket_prefix)?;
    let (key, rest) = take_str(rest)?;
    let inverted: [u8; 8] = rest.try_into().ok()?;
    Some((String::from_utf8(key).ok()?, !u64::from_be_bytes(inverted)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn object_keys_parse_back() {
        let prefix = bucket_objects("b");
        let raw = object_version("b", "a\0b/c", 7);
        assert_eq!(parse_object(&prefix, &raw), Some(("a\0b/c".to_string(), 7)));
        assert_eq!(parse_object(&prefix, &raw[..raw.len() - 1]), None);
        assert_eq!(parse_object(&bucket_objects("c"), &raw), None);
    }

    #[test]
    fn newer_versions_sort_first() {
        assert!(object_version("b", "k", 9) < object_version("b", "k", 8));
    }

    #[test]
    fn prefix_end_skips_every_extension() {
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }

    proptest! {
        /// Key order is (bucket, key, newest first) in string order, so a
        /// scan lists a bucket in S3 order.
        #[test]
        fn encoding_preserves_order(a in "[a-c\\x00/]{0,6}", b in "[a-c\\x00/]{0,6}", sa in any::<u64>(), sb in any::<u64>()) {
            let ka = object_version("bk", &a, sa);
            let kb = object_version("bk", &b, sb);
            let expected = a.cmp(&b).then(sb.cmp(&sa));
            prop_assert_eq!(ka.cmp(&kb), expected);
        }

        /// Every key starting with `p` falls inside the prefix range of `p`.
        #[test]
        fn prefixes_contain_their_extensions(p in "[a-c\\x00]{0,4}", rest in "[a-c\\x00]{0,4}", seq in any::<u64>()) {
            let key = object_version("bk", &format!("{p}{rest}"), seq);
            let start = object_prefix("bk", &p);
            prop_assert!(key >= start);
            if let Some(end) = prefix_end(&start) {
                prop_assert!(key < end);
            }
        }

        #[test]
        fn take_str_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = take_str(&bytes);
        }
    }
}
