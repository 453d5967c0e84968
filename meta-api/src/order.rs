//! Typed writes: each request a frontend, gateway or tool sends for its
//! answer is a type that names that answer, so a caller writes
//! `meta.order(order::AcquireLease { .. })` and has a [`model::Lease`], and
//! the one place a reply of the wrong kind is handled is
//! [`crate::client::MetaClient::order`]. Each order's fields are its
//! request's: the conversion is written out field by field, so the two
//! cannot drift apart without the compiler saying so.
//!
//! Requests answered only with `Done` need no order: `meta.write(request)`.

use chuyi_common::ids::DeviceClass;

use crate::model::{self, DataRun, ObjectPut, Redundancy, WriteCondition};
use crate::request::{Reply, Request};

/// A request and the kind of its answer.
pub trait Order {
    type Answer;
    fn request(self) -> Request;
    /// The answer in `reply`, or what `reply` was when of another kind.
    fn answer(reply: Reply) -> Result<Self::Answer, String>;
}

/// A new object version: its id ("null" when unversioned) and sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub version_id: String,
    pub seq: u64,
}

/// What a delete removed or added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The version removed, or the delete marker's id.
    pub version_id: Option<String>,
    pub delete_marker: bool,
}

macro_rules! order {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? } -> $answer:ty, $pat:pat => $out:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            $(pub $field: $ty),*
        }

        impl Order for $name {
            type Answer = $answer;
            fn request(self) -> Request {
                let Self { $($field),* } = self;
                Request::$name { $($field),* }
            }
            fn answer(reply: Reply) -> Result<$answer, String> {
                match reply {
                    $pat => Ok($out),
                    other => Err(format!("{other:?}")),
                }
            }
        }
    };
}

order!(
    /// A pool; answers with it as made.
    CreatePool { name: String, class: DeviceClass, redundancy: Redundancy, pg_count: u32, separate_failure_domains: bool }
        -> model::Pool, Reply::Pool(pool) => pool
);
order!(
    /// A volume; answers with it as made.
    CreateVolume { name: String, pool: String, size_bytes: u64, chunk_size_bytes: u32, wrapped_key: Vec<u8> }
        -> model::Volume, Reply::Volume(volume) => volume
);
order!(
    /// Grows a volume; answers with it grown.
    ResizeVolume { name: String, size_bytes: u64 } -> model::Volume, Reply::Volume(volume) => volume
);
order!(
    /// Attaches a volume for `holder`; answers with the lease.
    AcquireLease { volume: String, holder: String, ttl_ms: u64 } -> model::Lease, Reply::Lease(lease) => lease
);
order!(
    /// Takes a snapshot of a volume; answers with its snapshots.
    CreateSnapshot { volume: String, name: String } -> model::VolumeSnapshots, Reply::Snapshots(snapshots) => snapshots
);
order!(
    /// Takes a due scheduled snapshot; answers with the volume's snapshots.
    TakeScheduledSnapshot { volume: String, every_ms: u64 }
        -> model::VolumeSnapshots, Reply::Snapshots(snapshots) => snapshots
);
order!(
    /// A clone of a snapshot; answers with the new volume.
    CloneVolume { volume: String, snapshot: String, name: String, wrapped_key: Vec<u8> }
        -> model::Volume, Reply::Volume(volume) => volume
);
order!(
    /// Deletes an expired scheduled snapshot; answers with those left.
    ExpireSnapshot { volume: String, name: String } -> model::VolumeSnapshots, Reply::Snapshots(snapshots) => snapshots
);
order!(
    /// Forgets a snapshot; answers with the snapshots left.
    DeleteSnapshot { volume: String, name: String } -> model::VolumeSnapshots, Reply::Snapshots(snapshots) => snapshots
);
order!(
    /// Renames a snapshot; answers with the volume's snapshots.
    RenameSnapshot { volume: String, from: String, to: String }
        -> model::VolumeSnapshots, Reply::Snapshots(snapshots) => snapshots
);
order!(
    /// Extends a live lease; answers with it extended.
    RenewLease { volume: String, holder: String, lease_id: u64, ttl_ms: u64 }
        -> model::Lease, Reply::Lease(lease) => lease
);
order!(
    /// Reserves a chunk owner for object data; answers with the owner.
    BeginData { pool: String, len: u64, ttl_ms: u64 } -> u64, Reply::Data { owner } => owner
);
order!(
    /// Opens a pack for small objects; answers with its owner.
    OpenPack { pool: String, ttl_ms: u64 } -> u64, Reply::Data { owner } => owner
);
order!(
    /// Moves a packed run; answers with how many versions moved (0 or 1).
    MovePacked { bucket: String, key: String, seq: u64, from: DataRun, to: DataRun } -> u64, Reply::Count(n) => n
);
order!(
    /// A new object version; answers with its id and sequence.
    PutObject { bucket: String, key: String, object: ObjectPut, condition: Option<WriteCondition> }
        -> Put, Reply::ObjectPut { version_id, seq } => Put { version_id, seq }
);
order!(
    /// Removes a version or adds a delete marker; answers with which.
    DeleteObject { bucket: String, key: String, version_id: Option<String>, bypass_governance: bool }
        -> Deleted, Reply::ObjectDeleted { version_id, delete_marker } => Deleted { version_id, delete_marker }
);
order!(
    /// Starts a multipart upload; answers with it.
    CreateUpload { bucket: String, key: String, object: ObjectPut } -> model::Upload, Reply::Upload(upload) => upload
);
order!(
    /// Completes a multipart upload; answers with the object's version.
    CompleteUpload {
        bucket: String,
        key: String,
        upload_id: String,
        parts: Vec<(u32, u64)>,
        etag: String,
        min_part_bytes: u64,
        headers: Vec<(String, String)>,
        condition: Option<WriteCondition>,
    }
        -> Put, Reply::ObjectPut { version_id, seq } => Put { version_id, seq }
);
order!(
    /// Replaces a version's ACL; answers with the version.
    SetObjectAcl { bucket: String, key: String, version_id: Option<String>, acl: String }
        -> Put, Reply::ObjectPut { version_id, seq } => Put { version_id, seq }
);
order!(
    /// Replaces a version's tags; answers with the version.
    SetObjectTags { bucket: String, key: String, version_id: Option<String>, tags: String }
        -> Put, Reply::ObjectPut { version_id, seq } => Put { version_id, seq }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_becomes_its_request_and_reads_its_answer() {
        let order = AcquireLease { volume: "v".into(), holder: "nbd-a".into(), ttl_ms: 30_000 };
        let Request::AcquireLease { volume, holder, ttl_ms } = order.request() else { panic!("another request") };
        assert_eq!((volume.as_str(), holder.as_str(), ttl_ms), ("v", "nbd-a", 30_000));
        assert_eq!(BeginData::answer(Reply::Data { owner: 7 }), Ok(7));
        let put = Reply::ObjectPut { version_id: "null".into(), seq: 3 };
        assert_eq!(PutObject::answer(put), Ok(Put { version_id: "null".into(), seq: 3 }));
    }

    #[test]
    fn a_reply_of_another_kind_is_named() {
        assert_eq!(OpenPack::answer(Reply::Count(1)).err().as_deref(), Some("Count(1)"));
        assert_eq!(MovePacked::answer(Reply::Done).err().as_deref(), Some("Done"));
    }
}
