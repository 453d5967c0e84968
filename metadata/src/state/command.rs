//! The commands of the replicated log: its application data.
//!
//! A client's [`Request`] becomes one [`Command`] (`From`, written out
//! field by field, so the two cannot drift apart silently); the members add
//! their own (marking a node down, rebalancing, a user with the secret the
//! service minted), which no client can send. The proposer packs many
//! into one [`MetaRequest`] (one Raft entry, one fsync) stamped with the
//! leader's clock. Applying is deterministic: the same entries give the
//! same state on every member.
//!
//! This is an on-disk format (each log value carries the codec's version
//! byte, KEYSPACE.md): variants are only ever appended, and a command whose
//! meaning changes gets a new variant while the old one stays readable. A
//! field may be added to a variant with a new store format version: older
//! entries read it as its default (`since_format_3`).

use chuyi_common::ids::{DeviceClass, NodeId};
use chuyi_common::seal::Sealed;
use chuyi_meta_api::model::since_format_3;
use chuyi_meta_api::qos::{QosRule, QosScope};
use chuyi_meta_api::request::Request;
use serde::{Deserialize, Serialize};

use super::error::MetaError;
use super::model::{
    BucketConfigKind, BucketSettings, DataRun, DiskRecord, Millis, ObjectLockConfig, ObjectPut, PoolDefaults,
    Redundancy, Retention, Versioning, WriteCondition,
};
use super::Reply;
use chuyi_meta_api::placement::DiskRef;

/// Commands in one entry at most; also bounds the sequence numbers an entry
/// hands out (`index << 16 | position`).
pub const COMMANDS_PER_ENTRY_MAX: usize = 1 << 16;

/// One Raft entry's application data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaRequest {
    /// The proposing leader's wall clock: every time the state machine
    /// records or compares (heartbeats, leases) is this one.
    pub now_ms: Millis,
    pub commands: Vec<Command>,
}

/// One per command of the entry, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaResponse {
    pub results: Vec<Result<Reply, MetaError>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
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
    /// Marks the node down and moves its PGs, if it has still not been heard
    /// from for `timeout_ms` (a heartbeat committed meanwhile wins).
    MarkNodeDown {
        id: NodeId,
        timeout_ms: u64,
    },
    /// Up to `max_moves` moves per pool towards capacity balance.
    Rebalance {
        max_moves: usize,
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
    CreateUser {
        name: String,
        access_key: String,
        secret: Sealed,
        admin: bool,
    },
    DeleteUser {
        name: String,
    },
    CreateBucket {
        name: String,
        owner: String,
        pool: String,
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
    },
    /// Without a version: removes the null version, or adds a delete marker
    /// when the bucket is versioned. With one: removes that version.
    DeleteObject {
        bucket: String,
        key: String,
        version_id: Option<String>,
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
        /// In the upload's checksum algorithm (stored format 3 on).
        #[serde(default, deserialize_with = "since_format_3")]
        checksum: Option<String>,
        /// The size uploaded when the run is framed (format 3 on).
        #[serde(default, deserialize_with = "since_format_3")]
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
        /// Headers added to the upload's (its checksum; format 3 on).
        #[serde(default, deserialize_with = "since_format_3")]
        headers: Vec<(String, String)>,
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
    /// `PutObject` applied only if `condition` holds of the key's current
    /// object (a retry of the same put is answered as done, as for
    /// `PutObject`).
    PutObjectIf {
        bucket: String,
        key: String,
        object: ObjectPut,
        condition: WriteCondition,
    },
    /// `CompleteUpload` applied only if `condition` holds.
    CompleteUploadIf {
        bucket: String,
        key: String,
        upload_id: String,
        parts: Vec<(u32, u64)>,
        etag: String,
        min_part_bytes: u64,
        condition: WriteCondition,
        /// As `CompleteUpload`'s (format 3 on).
        #[serde(default, deserialize_with = "since_format_3")]
        headers: Vec<(String, String)>,
    },
    SetBucketConfig {
        bucket: String,
        kind: BucketConfigKind,
        document: Option<Vec<u8>>,
    },
    SetObjectTags {
        bucket: String,
        key: String,
        version_id: Option<String>,
        tags: String,
    },
    /// `CreateBucket` with object lock on and versioning enabled.
    CreateBucketLocked {
        name: String,
        owner: String,
        pool: String,
    },
    /// `DeleteObject` that may remove a version under Governance retention.
    DeleteObjectBypass {
        bucket: String,
        key: String,
        version_id: Option<String>,
    },
    SetObjectLockConfig {
        bucket: String,
        config: ObjectLockConfig,
    },
    SetRetention {
        bucket: String,
        key: String,
        version_id: Option<String>,
        retention: Option<Retention>,
        bypass_governance: bool,
    },
    SetLegalHold {
        bucket: String,
        key: String,
        version_id: Option<String>,
        on: bool,
    },
    ExpireObject {
        bucket: String,
        key: String,
        seq: u64,
    },
    SetObjectAcl {
        bucket: String,
        key: String,
        version_id: Option<String>,
        acl: String,
    },
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
    /// Appended.
    SetQosRule {
        rule: QosRule,
    },
    /// Appended.
    DeleteQosRule {
        scope: QosScope,
    },
    /// Appended, as the ones below.
    TrashVolume {
        name: String,
        retain_ms: Option<u64>,
    },
    RestoreVolume {
        name: String,
    },
    BeginPurge {
        name: String,
        force: bool,
    },
    EndPurge {
        name: String,
        token: u64,
    },
    SetTrashRetention {
        retain_ms: u64,
    },
    CreateSnapshot {
        volume: String,
        name: String,
    },
    DeleteSnapshot {
        volume: String,
        name: String,
    },
    RenameSnapshot {
        volume: String,
        from: String,
        to: String,
    },
    SetSnapshotSchedule {
        scope: chuyi_meta_api::schedule::ScheduleScope,
        schedule: chuyi_meta_api::schedule::SnapshotSchedule,
    },
    TakeScheduledSnapshot {
        volume: String,
        every_ms: u64,
    },
    ExpireSnapshot {
        volume: String,
        name: String,
    },
    CloneVolume {
        volume: String,
        snapshot: String,
        name: String,
        wrapped_key: Vec<u8>,
    },
    FlattenVolume {
        name: String,
    },
    SetBackupSchedule {
        schedule: Box<chuyi_meta_api::backup_schedule::BackupSchedule>,
    },
    DeleteBackupSchedule {
        volume: String,
        target: String,
    },
    ClaimBackupRun {
        volume: String,
        target: String,
        holder: String,
        ttl_ms: u64,
    },
    ReportBackupRun {
        volume: String,
        target: String,
        holder: String,
        outcome: chuyi_meta_api::backup_schedule::BackupOutcome,
    },
    RemoveVersion {
        bucket: String,
        key: String,
        version_id: String,
        seq: u64,
        lone_marker: bool,
    },
}

impl Command {
    /// The name, for refusals and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::RegisterNode { .. } => "RegisterNode",
            Command::Heartbeat { .. } => "Heartbeat",
            Command::MarkNodeDown { .. } => "MarkNodeDown",
            Command::Rebalance { .. } => "Rebalance",
            Command::PgRecovered { .. } => "PgRecovered",
            Command::CreatePool { .. } => "CreatePool",
            Command::DeletePool { .. } => "DeletePool",
            Command::CreateVolume { .. } => "CreateVolume",
            Command::ResizeVolume { .. } => "ResizeVolume",
            Command::DeleteVolume { .. } => "DeleteVolume",
            Command::AcquireLease { .. } => "AcquireLease",
            Command::RenewLease { .. } => "RenewLease",
            Command::ReleaseLease { .. } => "ReleaseLease",
            Command::CreateUser { .. } => "CreateUser",
            Command::DeleteUser { .. } => "DeleteUser",
            Command::CreateBucket { .. } => "CreateBucket",
            Command::DeleteBucket { .. } => "DeleteBucket",
            Command::SetVersioning { .. } => "SetVersioning",
            Command::SetBucketSettings { .. } => "SetBucketSettings",
            Command::BeginData { .. } => "BeginData",
            Command::OpenPack { .. } => "OpenPack",
            Command::MovePacked { .. } => "MovePacked",
            Command::RetirePacks { .. } => "RetirePacks",
            Command::AbandonData { .. } => "AbandonData",
            Command::PutObject { .. } => "PutObject",
            Command::DeleteObject { .. } => "DeleteObject",
            Command::CreateUpload { .. } => "CreateUpload",
            Command::PutPart { .. } => "PutPart",
            Command::CompleteUpload { .. } => "CompleteUpload",
            Command::AbortUpload { .. } => "AbortUpload",
            Command::ForgetGarbage { .. } => "ForgetGarbage",
            Command::ExpirePending { .. } => "ExpirePending",
            Command::ReportUnreachable { .. } => "ReportUnreachable",
            Command::DestroyVolumeKey { .. } => "DestroyVolumeKey",
            Command::RewrapVolumeKey { .. } => "RewrapVolumeKey",
            Command::SetPoolDefaults { .. } => "SetPoolDefaults",
            Command::PutObjectIf { .. } => "PutObjectIf",
            Command::CompleteUploadIf { .. } => "CompleteUploadIf",
            Command::SetBucketConfig { .. } => "SetBucketConfig",
            Command::SetObjectTags { .. } => "SetObjectTags",
            Command::CreateBucketLocked { .. } => "CreateBucketLocked",
            Command::DeleteObjectBypass { .. } => "DeleteObjectBypass",
            Command::SetObjectLockConfig { .. } => "SetObjectLockConfig",
            Command::SetRetention { .. } => "SetRetention",
            Command::SetLegalHold { .. } => "SetLegalHold",
            Command::ExpireObject { .. } => "ExpireObject",
            Command::SetObjectAcl { .. } => "SetObjectAcl",
            Command::TransitionObject { .. } => "TransitionObject",
            Command::SetBucketKey { .. } => "SetBucketKey",
            Command::SetQosRule { .. } => "SetQosRule",
            Command::DeleteQosRule { .. } => "DeleteQosRule",
            Command::TrashVolume { .. } => "TrashVolume",
            Command::RestoreVolume { .. } => "RestoreVolume",
            Command::BeginPurge { .. } => "BeginPurge",
            Command::EndPurge { .. } => "EndPurge",
            Command::SetTrashRetention { .. } => "SetTrashRetention",
            Command::CreateSnapshot { .. } => "CreateSnapshot",
            Command::DeleteSnapshot { .. } => "DeleteSnapshot",
            Command::RenameSnapshot { .. } => "RenameSnapshot",
            Command::SetSnapshotSchedule { .. } => "SetSnapshotSchedule",
            Command::TakeScheduledSnapshot { .. } => "TakeScheduledSnapshot",
            Command::ExpireSnapshot { .. } => "ExpireSnapshot",
            Command::CloneVolume { .. } => "CloneVolume",
            Command::FlattenVolume { .. } => "FlattenVolume",
            Command::SetBackupSchedule { .. } => "SetBackupSchedule",
            Command::DeleteBackupSchedule { .. } => "DeleteBackupSchedule",
            Command::ClaimBackupRun { .. } => "ClaimBackupRun",
            Command::ReportBackupRun { .. } => "ReportBackupRun",
            Command::RemoveVersion { .. } => "RemoveVersion",
        }
    }
}

impl From<Request> for Command {
    fn from(request: Request) -> Self {
        match request {
            Request::RegisterNode { id, addrs, failure_domain, disks } => {
                Command::RegisterNode { id, addrs, failure_domain, disks }
            }
            Request::Heartbeat { id, disks } => Command::Heartbeat { id, disks },
            Request::PgRecovered { pool, pg, disk, epoch } => Command::PgRecovered { pool, pg, disk, epoch },
            Request::CreatePool { name, class, redundancy, pg_count, separate_failure_domains } => {
                Command::CreatePool { name, class, redundancy, pg_count, separate_failure_domains }
            }
            Request::DeletePool { name } => Command::DeletePool { name },
            Request::CreateVolume { name, pool, size_bytes, chunk_size_bytes, wrapped_key } => {
                Command::CreateVolume { name, pool, size_bytes, chunk_size_bytes, wrapped_key }
            }
            Request::ResizeVolume { name, size_bytes } => Command::ResizeVolume { name, size_bytes },
            Request::DeleteVolume { name } => Command::DeleteVolume { name },
            Request::AcquireLease { volume, holder, ttl_ms } => Command::AcquireLease { volume, holder, ttl_ms },
            Request::RenewLease { volume, holder, lease_id, ttl_ms } => {
                Command::RenewLease { volume, holder, lease_id, ttl_ms }
            }
            Request::ReleaseLease { volume, holder, lease_id } => Command::ReleaseLease { volume, holder, lease_id },
            Request::DeleteUser { name } => Command::DeleteUser { name },
            Request::CreateBucket { name, owner, pool, object_lock: false } => {
                Command::CreateBucket { name, owner, pool }
            }
            Request::CreateBucket { name, owner, pool, object_lock: true } => {
                Command::CreateBucketLocked { name, owner, pool }
            }
            Request::DeleteBucket { name } => Command::DeleteBucket { name },
            Request::SetVersioning { bucket, versioning } => Command::SetVersioning { bucket, versioning },
            Request::SetBucketSettings { bucket, settings } => Command::SetBucketSettings { bucket, settings },
            Request::BeginData { pool, len, ttl_ms } => Command::BeginData { pool, len, ttl_ms },
            Request::OpenPack { pool, ttl_ms } => Command::OpenPack { pool, ttl_ms },
            Request::MovePacked { bucket, key, seq, from, to } => Command::MovePacked { bucket, key, seq, from, to },
            Request::RetirePacks { max, grace_ms } => Command::RetirePacks { max, grace_ms },
            Request::AbandonData { owner } => Command::AbandonData { owner },
            Request::PutObject { bucket, key, object, condition: None } => Command::PutObject { bucket, key, object },
            Request::PutObject { bucket, key, object, condition: Some(condition) } => {
                Command::PutObjectIf { bucket, key, object, condition }
            }
            Request::DeleteObject { bucket, key, version_id, bypass_governance: false } => {
                Command::DeleteObject { bucket, key, version_id }
            }
            Request::DeleteObject { bucket, key, version_id, bypass_governance: true } => {
                Command::DeleteObjectBypass { bucket, key, version_id }
            }
            Request::CreateUpload { bucket, key, object } => Command::CreateUpload { bucket, key, object },
            Request::PutPart { bucket, key, upload_id, number, etag, run, checksum, size } => {
                Command::PutPart { bucket, key, upload_id, number, etag, run, checksum, size }
            }
            Request::CompleteUpload {
                bucket,
                key,
                upload_id,
                parts,
                etag,
                min_part_bytes,
                headers,
                condition: None,
            } => Command::CompleteUpload { bucket, key, upload_id, parts, etag, min_part_bytes, headers },
            Request::CompleteUpload {
                bucket,
                key,
                upload_id,
                parts,
                etag,
                min_part_bytes,
                headers,
                condition: Some(condition),
            } => Command::CompleteUploadIf { bucket, key, upload_id, parts, etag, min_part_bytes, condition, headers },
            Request::AbortUpload { bucket, key, upload_id } => Command::AbortUpload { bucket, key, upload_id },
            Request::ForgetGarbage { owners } => Command::ForgetGarbage { owners },
            Request::ExpirePending { max } => Command::ExpirePending { max },
            Request::ReportUnreachable { reporter, node } => Command::ReportUnreachable { reporter, node },
            Request::DestroyVolumeKey { name, holder } => Command::DestroyVolumeKey { name, holder },
            Request::RewrapVolumeKey { name, old, new } => Command::RewrapVolumeKey { name, old, new },
            Request::SetPoolDefaults { pool, defaults } => Command::SetPoolDefaults { pool, defaults },
            Request::SetBucketConfig { bucket, kind, document } => Command::SetBucketConfig { bucket, kind, document },
            Request::SetBucketKey { bucket, old, new } => Command::SetBucketKey { bucket, old, new },
            Request::SetObjectTags { bucket, key, version_id, tags } => {
                Command::SetObjectTags { bucket, key, version_id, tags }
            }
            Request::SetObjectLockConfig { bucket, config } => Command::SetObjectLockConfig { bucket, config },
            Request::SetRetention { bucket, key, version_id, retention, bypass_governance } => {
                Command::SetRetention { bucket, key, version_id, retention, bypass_governance }
            }
            Request::SetLegalHold { bucket, key, version_id, on } => {
                Command::SetLegalHold { bucket, key, version_id, on }
            }
            Request::ExpireObject { bucket, key, seq } => Command::ExpireObject { bucket, key, seq },
            Request::SetObjectAcl { bucket, key, version_id, acl } => {
                Command::SetObjectAcl { bucket, key, version_id, acl }
            }
            Request::TransitionObject { bucket, key, seq, from, to } => {
                Command::TransitionObject { bucket, key, seq, from, to }
            }
            Request::SetQosRule { rule } => Command::SetQosRule { rule },
            Request::DeleteQosRule { scope } => Command::DeleteQosRule { scope },
            Request::TrashVolume { name, retain_ms } => Command::TrashVolume { name, retain_ms },
            Request::RestoreVolume { name } => Command::RestoreVolume { name },
            Request::BeginPurge { name, force } => Command::BeginPurge { name, force },
            Request::EndPurge { name, token } => Command::EndPurge { name, token },
            Request::SetTrashRetention { retain_ms } => Command::SetTrashRetention { retain_ms },
            Request::CreateSnapshot { volume, name } => Command::CreateSnapshot { volume, name },
            Request::DeleteSnapshot { volume, name } => Command::DeleteSnapshot { volume, name },
            Request::RenameSnapshot { volume, from, to } => Command::RenameSnapshot { volume, from, to },
            Request::SetSnapshotSchedule { scope, schedule } => Command::SetSnapshotSchedule { scope, schedule },
            Request::TakeScheduledSnapshot { volume, every_ms } => Command::TakeScheduledSnapshot { volume, every_ms },
            Request::ExpireSnapshot { volume, name } => Command::ExpireSnapshot { volume, name },
            Request::CloneVolume { volume, snapshot, name, wrapped_key } => {
                Command::CloneVolume { volume, snapshot, name, wrapped_key }
            }
            Request::FlattenVolume { name } => Command::FlattenVolume { name },
            Request::SetBackupSchedule { schedule } => Command::SetBackupSchedule { schedule },
            Request::DeleteBackupSchedule { volume, target } => Command::DeleteBackupSchedule { volume, target },
            Request::ClaimBackupRun { volume, target, holder, ttl_ms } => {
                Command::ClaimBackupRun { volume, target, holder, ttl_ms }
            }
            Request::ReportBackupRun { volume, target, holder, outcome } => {
                Command::ReportBackupRun { volume, target, holder, outcome }
            }
            Request::RemoveVersion { bucket, key, version_id, seq, lone_marker } => {
                Command::RemoveVersion { bucket, key, version_id, seq, lone_marker }
            }
        }
    }
}
