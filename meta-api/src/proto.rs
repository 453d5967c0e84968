//! The metadata service's client messages, carried by the common RPC
//! layer (layout in `common/PROTOCOL.md`, "Metadata service").
//!
//! The frame body is only an [`Envelope`]: the protocol version and the
//! channel (a client's call, or Raft traffic between members, whose
//! messages are the service's own: `metadata/src/proto.rs`). The message
//! itself is postcard in the frame's payload, because Raft entries,
//! snapshots and listings outgrow the 64 KiB body limit while the payload
//! may carry up to 4 MiB. A [`MetaCall`] is answered by an [`ApiResult`].

use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::listing::{ListRequest, Listing};
use crate::model::{
    Bucket, BucketConfigKind, BucketUsage, ClusterMap, DataRun, ObjectLockConfig, ObjectRecord, Pack, PackRef,
    PackTotals, Part, Pool, PoolDefaults, TrashEntry, Upload, User, Volume, VolumeSnapshots,
};
use crate::qos::{QosGrant, QosReport, QosRule, RuleStatus};
use crate::request::{Reply, Request};
/// The version of the messages below (2: packs, and runs with an offset;
/// 3: the channel in the envelope, Raft traffic apart from client calls).
pub const META_PROTOCOL_VERSION: u8 = 3;

/// Longest a map watch may wait before answering.
pub const WATCH_WAIT_MAX_MS: u32 = 30_000;

/// The frame body of every metadata request and reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u8,
    pub channel: Channel,
}

/// What a frame's payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channel {
    /// A [`MetaCall`], answered by an [`ApiResult`].
    Api,
    /// Raft traffic between members (only members may send it).
    Raft,
}

/// What every [`MetaCall`] is answered with.
pub type ApiResult = Result<ApiReply, MetaError>;

#[derive(Debug, Serialize, Deserialize)]
pub enum MetaCall {
    /// A change, committed by a majority before the reply. Leader only.
    Write(Request),
    /// A linearizable read. Leader only.
    Read(Query),
    /// Answers as soon as this member has applied an epoch above
    /// `known_epoch`, or after `wait_ms`, with the map it has. Any member.
    WatchMap {
        known_epoch: u64,
        wait_ms: u32,
    },
    /// This member's view of the group and the cluster. Any member.
    Status,
    /// Creates a user with a fresh access key and secret key. Leader only.
    CreateUser {
        name: String,
        admin: bool,
    },
    /// Adds `id` at `addr` as a voter (a learner first, until caught up).
    AddMember {
        id: u64,
        addr: String,
    },
    RemoveMember {
        id: u64,
    },
    /// Asks this member to build a snapshot of its whole state now,
    /// whatever its snapshot policy says (an operator's call before
    /// copying a member's data directory; the count benchmark's). Answers
    /// once the build is requested; it runs on in the background. Any
    /// member.
    BuildSnapshot,
    /// A frontend's use of the QoS rules it serves, answered with its
    /// shares of their rates and, when they changed, the rules. Leader
    /// only: the leader's memory is where every frontend's use meets.
    QosExchange(QosReport),
    /// Every QoS rule with the rates and counters the frontends reported
    /// lately. Leader only.
    QosStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    Map,
    Pools,
    Volume(String),
    Volumes,
    /// By access key: what the S3 gateway authenticates with.
    User(String),
    Users,
    Bucket(String),
    Buckets,
    Object {
        bucket: String,
        key: String,
        version_id: Option<String>,
    },
    List(ListRequest),
    /// What a pool's new volumes get by default.
    PoolDefaults(String),
    /// Objects and bytes a bucket holds.
    BucketUsage(String),
    Upload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    /// Up to `max` parts numbered above `after`.
    Parts {
        upload_id: String,
        after: u32,
        max: u32,
    },
    /// Up to `max` uploads of keys starting with `prefix`, after (key,
    /// upload id) `after`.
    Uploads {
        bucket: String,
        prefix: String,
        after: Option<(String, String)>,
        max: u32,
    },
    /// Up to `max` runs of object data waiting to be deleted, the first
    /// in owner order ([`Query::GarbageAfter`] pages on).
    Garbage {
        max: u32,
    },
    /// How many pending runs' time is up at `now_ms` (the asker's clock):
    /// whether an `ExpirePending` write is worth making.
    ExpiredPending {
        now_ms: u64,
    },
    /// Up to `max` sparse packs (most of them dead), owners from `after`.
    SparsePacks {
        after: u64,
        max: u32,
    },
    /// Up to `max` live runs of pack `owner` at offsets from `from`.
    PackRefs {
        owner: u64,
        from: u64,
        max: u32,
    },
    /// How many packs could be freed at `now_ms` (the asker's clock):
    /// whether a `RetirePacks` write is worth making.
    FreeablePacks {
        now_ms: u64,
        grace_ms: u64,
    },
    /// One configuration document of a bucket (`Document(None)`: none).
    BucketConfig {
        bucket: String,
        kind: BucketConfigKind,
    },
    /// A bucket's object lock configuration (`ObjectLock(None)`: off).
    ObjectLock(String),
    /// Every QoS rule, with the rules' version.
    QosRules,
    /// The recycle bin, and how long deleted volumes stay in it.
    Trash,
    /// A volume's snapshots and snap sequence (a volume in the recycle bin
    /// too: its snapshots wait with it).
    Snapshots(String),
    /// The snapshots of the volume (in the recycle bin too) whose chunk
    /// owner id this is; none found: none (sequence 0). What a node asks
    /// before trimming clones.
    SnapshotsOf(u64),
    /// What snapshot schedules want done now by the answering member's
    /// clock: snapshots due (volume, interval) and expired (volume, name).
    SnapshotWork,
    /// Every snapshot schedule, volumes' and pools'.
    SnapshotSchedules,
    /// Every backup schedule with its run state. Appended.
    BackupSchedules,
    /// Up to `max` runs of object data waiting to be deleted, in owner
    /// order, those after owner `after` (a page of a scan). Appended.
    GarbageAfter {
        max: u32,
        after: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApiReply {
    Written(Reply),
    Map(ClusterMap),
    Pools(Vec<Pool>),
    Volume(Volume),
    Volumes(Vec<Volume>),
    User(User),
    Users(Vec<User>),
    Bucket(Bucket),
    Buckets(Vec<Bucket>),
    Object(ObjectRecord),
    Listing(Listing),
    Status(Box<StatusReport>),
    /// The only time the secret key is shown.
    UserCreated {
        user: User,
        secret_key: String,
    },
    Done,
    PoolDefaults(PoolDefaults),
    BucketUsage(BucketUsage),
    Upload(Upload),
    Parts(Vec<Part>),
    Uploads(Vec<Upload>),
    Garbage(Vec<DataRun>),
    Count(u64),
    Packs(Vec<(u64, Pack)>),
    PackRefs(Vec<PackRef>),
    Document(Option<Vec<u8>>),
    ObjectLock(Option<ObjectLockConfig>),
    QosRules {
        version: u64,
        rules: Vec<QosRule>,
    },
    QosGrant(QosGrant),
    QosStatus(Vec<RuleStatus>),
    Trash {
        retention_ms: u64,
        entries: Vec<TrashEntry>,
    },
    Snapshots(VolumeSnapshots),
    SnapshotWork {
        due: Vec<(String, u64)>,
        expired: Vec<(String, String)>,
    },
    SnapshotSchedules(Vec<(crate::schedule::ScheduleScope, crate::schedule::SnapshotSchedule)>),
    BackupSchedules(Vec<crate::backup_schedule::BackupSchedule>),
}

/// A Raft member as `chuyi status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
}

/// PG counts of one pool by health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolHealth {
    pub pool: Pool,
    pub clean: u32,
    pub recovering: u32,
    pub degraded: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The member that answered.
    pub member: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub members: Vec<MemberInfo>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// The last log index in this member's snapshot.
    pub snapshot: Option<u64>,
    /// Log entries up to here are purged (compacted into the snapshot).
    pub purged: Option<u64>,
    pub map: ClusterMap,
    pub pools: Vec<PoolHealth>,
    /// Small objects' packs, and how much of them waits for compaction.
    pub packs: PackTotals,
}

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("metadata protocol version {0}, expected {META_PROTOCOL_VERSION}")]
    Version(u8),
    #[error("malformed metadata message: {0}")]
    Postcard(#[from] postcard::Error),
}

/// The envelope of a client's call and its reply.
pub const ENVELOPE: Envelope = Envelope { version: META_PROTOCOL_VERSION, channel: Channel::Api };

/// The payload bytes of `message`.
pub fn encode<T: Serialize>(message: &T) -> Result<bytes::Bytes, CodecError> {
    Ok(postcard::to_allocvec(message)?.into())
}

/// A message from a frame, checking the envelope's version first.
pub fn decode<T: serde::de::DeserializeOwned>(envelope: Envelope, payload: &[u8]) -> Result<T, CodecError> {
    if envelope.version != META_PROTOCOL_VERSION {
        return Err(CodecError::Version(envelope.version));
    }
    Ok(postcard::from_bytes(payload)?)
}
