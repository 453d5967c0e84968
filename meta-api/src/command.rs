//! The commands of the replicated log and what applying one returns.
//!
//! A client's request becomes one [`Command`]; the proposer packs many into
//! one [`MetaRequest`] (one Raft entry, one fsync) stamped with the leader's
//! clock. Applying is deterministic: the same entries give the same state
//! on every member.

use chuyi_common::ids::{DeviceClass, NodeId};
use chuyi_common::seal::Sealed;
use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::model::{
    Bucket, BucketSettings, DataRun, DiskRecord, Lease, Millis, ObjectPut, Pool, PoolDefaults, Redundancy, Upload,
    User, Versioning, Volume,
};
use crate::placement::{DiskRef, PgChange};

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
}

impl Command {
    /// The command's name, for refusals and logs.
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
    /// How many records a command went through.
    Count(u64),
}

/// A placement change of one pool's PG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolChange {
    pub pool: String,
    pub change: PgChange,
}
