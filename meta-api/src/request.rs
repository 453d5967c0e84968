//! The writes a client may ask of the metadata service, and what each
//! returns.
//!
//! A [`Request`] is what travels in `MetaCall::Write`: the service checks
//! the caller's role against it, then turns it into the replicated log's
//! own command (`chuyi-metadata`'s `state::Command`), field by field. The
//! two are separate types on purpose: the log is an on-disk format, kept
//! readable across releases, and this is an API; and what only the
//! members themselves commit (marking a node down, rebalancing, a user with
//! the secret the service minted) cannot be said here at all.

use chuyi_common::ids::{DeviceClass, NodeId};
use serde::{Deserialize, Serialize};

use crate::model::{
    Bucket, BucketConfigKind, BucketSettings, DataRun, DiskRecord, Lease, ObjectLockConfig, ObjectPut, Pool,
    PoolDefaults, Redundancy, Retention, TrashEntry, Upload, User, Versioning, Volume, VolumeSnapshots, WriteCondition,
};
use crate::placement::{DiskRef, PgChange};
use crate::qos::{QosRule, QosScope};
use crate::schedule::{ScheduleScope, SnapshotSchedule};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Adds a node or updates its addresses and disks; marks it up.
    RegisterNode {
        id: NodeId,
        addrs: Vec<String>,
        failure_domain: String,
        disks: Vec<DiskRecord>,
    },
    /// A node is alive; its disks as it sees them now.
    Heartbeat {
        id: NodeId,
        disks: Vec<DiskRecord>,
    },
    /// A backfilled replica now holds the PG's data; `epoch` is the PG's
    /// epoch when the backfill began.
    PgRecovered {
        pool: u32,
        pg: u32,
        disk: DiskRef,
        epoch: u64,
    },
    CreatePool {
        name: String,
        class: DeviceClass,
        redundancy: Redundancy,
        pg_count: u32,
        separate_failure_domains: bool,
    },
    DeletePool {
        name: String,
    },
    CreateVolume {
        name: String,
        pool: String,
        size_bytes: u64,
        chunk_size_bytes: u32,
        wrapped_key: Vec<u8>,
    },
    ResizeVolume {
        name: String,
        size_bytes: u64,
    },
    DeleteVolume {
        name: String,
    },
    AcquireLease {
        volume: String,
        holder: String,
        ttl_ms: u64,
    },
    RenewLease {
        volume: String,
        holder: String,
        lease_id: u64,
        ttl_ms: u64,
    },
    ReleaseLease {
        volume: String,
        holder: String,
        lease_id: u64,
    },
    DeleteUser {
        name: String,
    },
    CreateBucket {
        name: String,
        owner: String,
        pool: String,
        /// Created with object lock on (and so versioning enabled), at once.
        object_lock: bool,
    },
    DeleteBucket {
        name: String,
    },
    SetVersioning {
        bucket: String,
        versioning: Versioning,
    },
    SetBucketSettings {
        bucket: String,
        settings: BucketSettings,
    },
    /// Reserves a new chunk owner in `pool` for `len` bytes of object data
    /// about to be written, pending until an object or part claims it, and
    /// freed if nothing has by `ttl_ms` from now (its writer died).
    BeginData {
        pool: String,
        len: u64,
        ttl_ms: u64,
    },
    /// Opens a pack in `pool` for small objects' data, writable for
    /// `ttl_ms` from now; replies with its owner (`Reply::Data`).
    OpenPack {
        pool: String,
        ttl_ms: u64,
    },
    /// The compactor copied run `from` of version `seq` of `bucket/key` to
    /// `to` (in a writable pack): the version holds `to` from now on, if it
    /// still holds `from` (`Count(1)`; else `Count(0)` and nothing moves).
    MovePacked {
        bucket: String,
        key: String,
        seq: u64,
        from: DataRun,
        to: DataRun,
    },
    /// Frees up to `max` packs with nothing live, no writer, and no run
    /// died in the last `grace_ms` (a GET may still read it).
    RetirePacks {
        max: u32,
        grace_ms: u64,
    },
    /// The writer of pending data gave up: its chunks are garbage now.
    AbandonData {
        owner: u64,
    },
    /// A new version of `key` (or its null version). Every run of its data
    /// must be pending, and is claimed.
    PutObject {
        bucket: String,
        key: String,
        object: ObjectPut,
        /// Applies only if this holds of the key's current object.
        condition: Option<WriteCondition>,
    },
    /// Without a version: removes the null version, or adds a delete marker
    /// when the bucket is versioned. With one: removes that version.
    DeleteObject {
        bucket: String,
        key: String,
        version_id: Option<String>,
        /// Remove a version under Governance retention (S3's
        /// x-amz-bypass-governance-retention).
        bypass_governance: bool,
    },
    /// Starts a multipart upload of `key`; `object` is the object to be,
    /// less its data.
    CreateUpload {
        bucket: String,
        key: String,
        object: ObjectPut,
    },
    /// Adds part `number` (replacing an earlier upload of it); its run must
    /// be pending, and is claimed.
    PutPart {
        bucket: String,
        key: String,
        upload_id: String,
        number: u32,
        etag: String,
        run: DataRun,
        /// In the upload's checksum algorithm, when it names one.
        checksum: Option<String>,
        /// The size uploaded, when the run is framed (compressed).
        size: Option<u64>,
    },
    /// Makes the listed parts (number, owner of the part's data as read
    /// before) the object's data, in order; every part but the last must be
    /// at least `min_part_bytes`. Parts not listed become garbage.
    CompleteUpload {
        bucket: String,
        key: String,
        upload_id: String,
        parts: Vec<(u32, u64)>,
        etag: String,
        min_part_bytes: u64,
        /// Headers the object gets besides the upload's: its checksum,
        /// made of the parts'.
        headers: Vec<(String, String)>,
        /// Applies only if this holds of the key's current object.
        condition: Option<WriteCondition>,
    },
    AbortUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    /// The gateway deleted these owners' chunks.
    ForgetGarbage {
        owners: Vec<u64>,
    },
    /// Frees up to `max` pending runs whose time is up.
    ExpirePending {
        max: u32,
    },
    /// Storage node `reporter` cannot reach `node` on the data path although
    /// `node` may still be heartbeating (a network cut between nodes). The
    /// node is marked down and kept down for a penalty that doubles with
    /// each report in a row, so a persisting cut does not make it flap.
    ReportUnreachable {
        reporter: NodeId,
        node: NodeId,
    },
    /// Crypto-erase: forgets an encrypted volume's wrapped data key, so its
    /// data can never be read again (it is freed afterwards). Refused while
    /// a frontend other than `holder` holds the volume's lease.
    DestroyVolumeKey {
        name: String,
        holder: String,
    },
    /// Replaces an encrypted volume's wrapped key by the same data key
    /// wrapped under a new KEK, only if it is still `old` (rotation runs
    /// once per volume, and never undoes a concurrent change).
    RewrapVolumeKey {
        name: String,
        old: Vec<u8>,
        new: Vec<u8>,
    },
    /// Sets what a pool's new volumes get by default.
    SetPoolDefaults {
        pool: String,
        defaults: PoolDefaults,
    },
    /// Stores (`Some`) or removes (`None`) one configuration document of a
    /// bucket; at most `BUCKET_CONFIG_MAX_BYTES`.
    SetBucketConfig {
        bucket: String,
        kind: BucketConfigKind,
        document: Option<Vec<u8>>,
    },
    /// Replaces the tag set of a version of `key` (the newest when
    /// `version_id` is `None`): `tags` URL-encoded, empty for none. A
    /// delete marker has no tags.
    SetObjectTags {
        bucket: String,
        key: String,
        version_id: Option<String>,
        tags: String,
    },
    /// Turns object lock on for a versioned bucket (for good), or changes
    /// its default retention.
    SetObjectLockConfig {
        bucket: String,
        config: ObjectLockConfig,
    },
    /// Sets a version's retention (the newest when `version_id` is `None`),
    /// as far as [`crate::model::retention_change_allowed`] allows.
    SetRetention {
        bucket: String,
        key: String,
        version_id: Option<String>,
        retention: Option<Retention>,
        bypass_governance: bool,
    },
    /// Puts a version under legal hold, or lifts it.
    SetLegalHold {
        bucket: String,
        key: String,
        version_id: Option<String>,
        on: bool,
    },
    /// Lifecycle expiration of the current version of `key`: as a delete
    /// without a version id (a delete marker in a versioned bucket), but
    /// only if the current version is still the one with sequence `seq`,
    /// so two runners, or a rule judged before a new write, never expire
    /// the wrong version or add two markers. Answers `Count(0)` when not.
    ExpireObject {
        bucket: String,
        key: String,
        seq: u64,
    },
    /// Replaces the ACL of a version of `key` (the newest when
    /// `version_id` is `None`): the gateway's JSON, kept under
    /// [`crate::model::ACL_HEADER`], empty for the default (private).
    SetObjectAcl {
        bucket: String,
        key: String,
        version_id: Option<String>,
        acl: String,
    },
    /// Lifecycle transition of version `seq` of `key` to another pool:
    /// its data, still `from`, becomes `to` (written there and pending),
    /// and `from` is freed. Answers `Count(0)` and changes nothing when
    /// the version is gone or its data is no longer `from` (another
    /// gateway moved it first); the caller then abandons `to`.
    TransitionObject {
        bucket: String,
        key: String,
        seq: u64,
        from: Vec<DataRun>,
        to: Vec<DataRun>,
    },
    /// Sets a bucket's data key, wrapped under the KEK, only if the bucket's
    /// is still `old` (`None`: it has none). The first gateway to make a
    /// bucket's key wins and every other uses that one; a rotation stores
    /// its re-wrapped key only over the one it read. `SetBucketSettings`
    /// never changes the key: a key replaced would lose every object
    /// sealed under it. Appended, so the variants before keep their numbers.
    SetBucketKey {
        bucket: String,
        old: Option<Vec<u8>>,
        new: Vec<u8>,
    },
    /// Sets the QoS rule of its scope, replacing any it had (qos.rs). The
    /// user, bucket, volume or pool it names must exist. Appended.
    SetQosRule {
        rule: QosRule,
    },
    /// Deletes the QoS rule of `scope`. Appended.
    DeleteQosRule {
        scope: QosScope,
    },
    /// Moves a volume no frontend holds into the recycle bin, for
    /// `retain_ms` (none: the cluster's retention). Its QoS rule goes.
    /// Appended, as every request below.
    TrashVolume {
        name: String,
        retain_ms: Option<u64>,
    },
    /// Brings a volume back from the recycle bin, as it was.
    RestoreVolume {
        name: String,
    },
    /// Begins (or begins again) purging a volume in the recycle bin: its
    /// key is destroyed and a fence token drawn, for deleting its chunks.
    /// Only once its time is up unless `force` (the administrator's).
    BeginPurge {
        name: String,
        force: bool,
    },
    /// Removes a volume whose purge began under `token` (what `BeginPurge`
    /// answered), once its chunks are freed.
    EndPurge {
        name: String,
        token: u64,
    },
    /// How long deleted volumes stay in the recycle bin from now on.
    SetTrashRetention {
        retain_ms: u64,
    },
    /// Takes a snapshot of a volume: one more in its snap sequence, no data
    /// touched. The caller then raises the sequence on every node
    /// (common/PROTOCOL.md section 5.3). Answered with the volume's
    /// snapshots.
    CreateSnapshot {
        volume: String,
        name: String,
    },
    /// Forgets a snapshot; the caller then has the nodes trim the clones
    /// only it read. Answered with the snapshots left.
    DeleteSnapshot {
        volume: String,
        name: String,
    },
    RenameSnapshot {
        volume: String,
        from: String,
        to: String,
    },
    /// Sets a snapshot schedule of a volume or of every volume of a pool,
    /// replacing the one of the same interval; `keep: 0` removes it (its
    /// snapshots stay).
    SetSnapshotSchedule {
        scope: ScheduleScope,
        schedule: SnapshotSchedule,
    },
    /// Takes the snapshot a schedule of `volume` (its own or its pool's)
    /// of interval `every_ms` is due for by the leader's clock; refused
    /// when that slot was taken (another frontend got there first).
    /// Answered like `CreateSnapshot`.
    TakeScheduledSnapshot {
        volume: String,
        every_ms: u64,
    },
    /// Deletes a snapshot its schedule keeps no more (beyond its keep
    /// count); refused for any other. Answered like `DeleteSnapshot`.
    ExpireSnapshot {
        volume: String,
        name: String,
    },
    /// Creates volume `name` as a clone of snapshot `snapshot` of `volume`:
    /// its shape and pool, its data read from the snapshot until written.
    /// An encrypted parent's clone carries the parent's data key wrapped
    /// for the clone's name (`wrapped_key`, made by a caller with the KEK;
    /// empty for a plain parent). Answered with the new volume.
    CloneVolume {
        volume: String,
        snapshot: String,
        name: String,
        wrapped_key: Vec<u8>,
    },
    /// Forgets a clone's parent once every chunk the parent held was
    /// copied into it (`chuyi volume flatten`).
    FlattenVolume {
        name: String,
    },
    /// Sets the backup schedule of `schedule.volume` to `schedule.target`
    /// (its run state kept when it replaces one). Appended.
    SetBackupSchedule {
        schedule: Box<crate::backup_schedule::BackupSchedule>,
    },
    DeleteBackupSchedule {
        volume: String,
        target: String,
    },
    /// Claims (or, by its holder, renews) the run of the slot due, for
    /// `ttl_ms` by the leader's clock; refused while another holder's
    /// claim lives, after a recent failure, or with no slot due
    /// (`chuyi_meta_api::backup_schedule::claimable`). Answered with the
    /// schedule.
    ClaimBackupRun {
        volume: String,
        target: String,
        holder: String,
        ttl_ms: u64,
    },
    /// Ends `holder`'s claim with what the run did.
    ReportBackupRun {
        volume: String,
        target: String,
        holder: String,
        outcome: crate::backup_schedule::BackupOutcome,
    },
    /// Lifecycle's removal of one version of `key` for good, planned from
    /// a listing: only if version `version_id` still has sequence `seq`
    /// (with versioning suspended a write replaces the null version, and
    /// the new one must not go by the old one's rule) and, with
    /// `lone_marker`, is still a delete marker and the key's newest
    /// version. Object lock holds as for any removal. Answers `Count(0)`
    /// when the version is not the one planned. (Last: the log keeps
    /// requests by their place in this enum.)
    RemoveVersion {
        bucket: String,
        key: String,
        version_id: String,
        seq: u64,
        lone_marker: bool,
    },
}

impl Request {
    /// The name, for refusals and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::RegisterNode { .. } => "RegisterNode",
            Request::Heartbeat { .. } => "Heartbeat",
            Request::PgRecovered { .. } => "PgRecovered",
            Request::CreatePool { .. } => "CreatePool",
            Request::DeletePool { .. } => "DeletePool",
            Request::CreateVolume { .. } => "CreateVolume",
            Request::ResizeVolume { .. } => "ResizeVolume",
            Request::DeleteVolume { .. } => "DeleteVolume",
            Request::AcquireLease { .. } => "AcquireLease",
            Request::RenewLease { .. } => "RenewLease",
            Request::ReleaseLease { .. } => "ReleaseLease",
            Request::DeleteUser { .. } => "DeleteUser",
            Request::CreateBucket { .. } => "CreateBucket",
            Request::DeleteBucket { .. } => "DeleteBucket",
            Request::SetVersioning { .. } => "SetVersioning",
            Request::SetBucketSettings { .. } => "SetBucketSettings",
            Request::BeginData { .. } => "BeginData",
            Request::OpenPack { .. } => "OpenPack",
            Request::MovePacked { .. } => "MovePacked",
            Request::RetirePacks { .. } => "RetirePacks",
            Request::AbandonData { .. } => "AbandonData",
            Request::PutObject { .. } => "PutObject",
            Request::DeleteObject { .. } => "DeleteObject",
            Request::CreateUpload { .. } => "CreateUpload",
            Request::PutPart { .. } => "PutPart",
            Request::CompleteUpload { .. } => "CompleteUpload",
            Request::AbortUpload { .. } => "AbortUpload",
            Request::ForgetGarbage { .. } => "ForgetGarbage",
            Request::ExpirePending { .. } => "ExpirePending",
            Request::ReportUnreachable { .. } => "ReportUnreachable",
            Request::DestroyVolumeKey { .. } => "DestroyVolumeKey",
            Request::RewrapVolumeKey { .. } => "RewrapVolumeKey",
            Request::SetPoolDefaults { .. } => "SetPoolDefaults",
            Request::SetBucketConfig { .. } => "SetBucketConfig",
            Request::SetBucketKey { .. } => "SetBucketKey",
            Request::SetObjectTags { .. } => "SetObjectTags",
            Request::SetObjectLockConfig { .. } => "SetObjectLockConfig",
            Request::SetRetention { .. } => "SetRetention",
            Request::SetLegalHold { .. } => "SetLegalHold",
            Request::ExpireObject { .. } => "ExpireObject",
            Request::SetObjectAcl { .. } => "SetObjectAcl",
            Request::TransitionObject { .. } => "TransitionObject",
            Request::SetQosRule { .. } => "SetQosRule",
            Request::DeleteQosRule { .. } => "DeleteQosRule",
            Request::TrashVolume { .. } => "TrashVolume",
            Request::RestoreVolume { .. } => "RestoreVolume",
            Request::BeginPurge { .. } => "BeginPurge",
            Request::EndPurge { .. } => "EndPurge",
            Request::SetTrashRetention { .. } => "SetTrashRetention",
            Request::CreateSnapshot { .. } => "CreateSnapshot",
            Request::DeleteSnapshot { .. } => "DeleteSnapshot",
            Request::RenameSnapshot { .. } => "RenameSnapshot",
            Request::SetSnapshotSchedule { .. } => "SetSnapshotSchedule",
            Request::TakeScheduledSnapshot { .. } => "TakeScheduledSnapshot",
            Request::ExpireSnapshot { .. } => "ExpireSnapshot",
            Request::CloneVolume { .. } => "CloneVolume",
            Request::FlattenVolume { .. } => "FlattenVolume",
            Request::SetBackupSchedule { .. } => "SetBackupSchedule",
            Request::DeleteBackupSchedule { .. } => "DeleteBackupSchedule",
            Request::ClaimBackupRun { .. } => "ClaimBackupRun",
            Request::ReportBackupRun { .. } => "ReportBackupRun",
            Request::RemoveVersion { .. } => "RemoveVersion",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Done,
    /// The PG moves a cluster change caused, and the epoch after it.
    Moves {
        epoch: u64,
        changes: Vec<PoolChange>,
    },
    Pool(Pool),
    Volume(Volume),
    Lease(Lease),
    User(User),
    Bucket(Bucket),
    ObjectPut {
        version_id: String,
        seq: u64,
    },
    ObjectDeleted {
        version_id: Option<String>,
        delete_marker: bool,
    },
    /// The chunk owner reserved for new object data.
    Data {
        owner: u64,
    },
    Upload(Upload),
    /// How many records a request went through.
    Count(u64),
    /// A volume moved to the recycle bin. Appended.
    Trashed(TrashEntry),
    /// A purge begun: the volume's chunks to free, under `token`.
    Purging {
        volume: Volume,
        token: u64,
    },
    /// A volume's snapshots after a change. Appended.
    Snapshots(VolumeSnapshots),
    /// A backup schedule claimed. Appended.
    BackupSchedule(Box<crate::backup_schedule::BackupSchedule>),
}

/// A placement change of one pool's PG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolChange {
    pub pool: String,
    pub change: PgChange,
}
