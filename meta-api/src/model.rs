//! The records the state machine keeps, one type per table of KEYSPACE.md.
//!
//! Every record is stored as the format version byte plus postcard, like
//! the store's own values, so a later release can add fields by bumping the
//! version and reading both.

use std::fmt;

use chuyi_common::ids::{DeviceClass, DiskId, NodeId};
use chuyi_common::limits::OBJECT_CHUNK_BYTES;
use chuyi_common::map::{DataMap, NodeAddr, PgMap, PoolMap, Replica};
use chuyi_common::seal::Sealed;
use serde::{Deserialize, Serialize};

use crate::placement::{DiskRef, ReplicaSet};

/// Milliseconds since the Unix epoch, as stamped by the leader on each
/// proposal: the state machine never reads a clock of its own.
pub type Millis = u64;

/// A storage node as registered and last heard from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    /// Endpoints of its chunk service, first preferred (`host:port`, `unix:/path`).
    pub addrs: Vec<String>,
    pub failure_domain: String,
    pub disks: Vec<DiskRecord>,
    pub state: NodeState,
    pub last_heartbeat_ms: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    Up,
    /// Missed heartbeats for the configured time; its PGs moved away.
    Down,
}

/// One disk of a node, as the node last reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRecord {
    pub id: DiskId,
    pub class: DeviceClass,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub state: DiskState,
}

impl DiskRecord {
    /// An empty, working disk.
    pub fn empty(id: DiskId, class: DeviceClass, capacity_bytes: u64) -> Self {
        Self { id, class, capacity_bytes, used_bytes: 0, state: DiskState::Up }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskState {
    Up,
    /// The node took it out of service (EIO) or stopped reporting it.
    Failed,
}

/// How a pool keeps copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Redundancy {
    Replicated(u8),
}

impl Redundancy {
    pub fn replicas(self) -> usize {
        match self {
            Redundancy::Replicated(n) => usize::from(n),
        }
    }
}

impl fmt::Display for Redundancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Redundancy::Replicated(n) => write!(f, "replicated({n})"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub id: u32,
    pub name: String,
    pub class: DeviceClass,
    pub redundancy: Redundancy,
    pub pg_count: u32,
    pub separate_failure_domains: bool,
}

/// What a pool's new volumes get unless told otherwise. Kept beside the
/// pool record, not in it, so pools written before it existed still read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolDefaults {
    /// Every volume of the pool is encrypted: creating one without a
    /// wrapped key is refused.
    pub encrypt: bool,
}

/// One placement group of a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgRecord {
    pub pool: u32,
    pub pg: u32,
    /// Primary first.
    pub replicas: ReplicaSet,
    /// Replicas that joined and are not yet backfilled: they hold no data
    /// until the primary reports them recovered.
    pub recovering: Vec<DiskRef>,
    /// The map epoch at which this PG last changed.
    pub epoch: u64,
}

/// A PG's health, as `chuyi status` counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PgHealth {
    /// Every replica the pool asks for, all backfilled.
    Clean,
    /// A replica is being backfilled.
    Recovering,
    /// Fewer replicas than the pool asks for.
    Degraded,
}

impl PgRecord {
    pub fn health(&self, pool: &Pool) -> PgHealth {
        if self.replicas.len() < pool.redundancy.replicas() {
            PgHealth::Degraded
        } else if !self.recovering.is_empty() {
            PgHealth::Recovering
        } else {
            PgHealth::Clean
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// The owner of its chunks' ids; never reused.
    pub id: u64,
    pub name: String,
    pub pool: String,
    pub size_bytes: u64,
    pub chunk_size_bytes: u32,
    /// The volume's data key wrapped by the KEK; opaque here. Empty for a
    /// volume that is not encrypted (or whose key was destroyed: see
    /// `state`).
    pub wrapped_key: Vec<u8>,
    pub state: VolumeState,
    pub lease: Option<Lease>,
    pub created_ms: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeState {
    Ready,
    /// An encrypted volume whose data key was destroyed (crypto-erase, the
    /// first step of deleting it): nothing of it can be read or attached.
    KeyDestroyed,
}

/// A deleted volume in the recycle bin: its record as it was, its chunks
/// still on the nodes, until it is restored or purged (at `purge_at_ms`
/// by the cluster, or earlier by an administrator). Its name stays taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    /// Without a lease, and with its key until the purge begins.
    pub volume: Volume,
    pub deleted_ms: Millis,
    pub purge_at_ms: Millis,
    /// Once a purge began: the fence token its chunk deletes carry (newer
    /// than any lease the volume had); the key is destroyed by then, and
    /// the volume can no longer be restored.
    pub purging: Option<u64>,
    /// The volume's own QoS rule, put back with it on a restore.
    pub qos: Option<crate::qos::QosLimits>,
}

/// A point in time of a whole volume, kept by the storage nodes' clones
/// (storage-node/FORMAT.md, "Snapshot clones"): every write the volume's
/// writer sent under a snap sequence below `id` is in it, none sent under
/// `id` or later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The volume's snap sequence it was taken at (1, 2, ...; never reused).
    pub id: u32,
    pub name: String,
    pub created_ms: Millis,
    /// The schedule that took it; `None` when taken by hand.
    pub schedule: Option<String>,
}

/// A volume's snapshots, oldest first, and its snap sequence: the newest
/// snapshot's id (0 before the first), which every write carries; its own
/// snapshot schedules, and the slot each schedule (its own or its pool's,
/// by label) took last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSnapshots {
    pub seq: u32,
    pub snapshots: Vec<Snapshot>,
    pub schedules: Vec<crate::schedule::SnapshotSchedule>,
    pub taken: Vec<(String, Millis)>,
    /// A clone volume's parent snapshot, until the clone is flattened.
    pub parent: Option<CloneParent>,
}

/// The snapshot a clone volume was made from: its chunks not written since
/// read from there (the parent's chunk owner at that snap sequence).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneParent {
    pub volume: String,
    pub owner: u64,
    pub snapshot: String,
    pub snap: u32,
}

impl VolumeSnapshots {
    pub fn find(&self, name: &str) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.name == name)
    }

    /// The live snapshots' ids, ascending: what the nodes keep clones for.
    pub fn live(&self) -> Vec<u32> {
        self.snapshots.iter().map(|s| s.id).collect()
    }
}

/// How long a deleted volume stays in the recycle bin unless the cluster's
/// setting or the delete says otherwise.
pub const DEFAULT_TRASH_RETENTION_MS: Millis = 7 * 86_400_000;

/// The right of one frontend to write a volume, until `expires_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    /// Changes at every acquisition, so a holder that lost its lease and
    /// got a new one cannot renew with the old one's id.
    pub id: u64,
    pub expires_ms: Millis,
}

impl Lease {
    pub fn is_live(&self, now: Millis) -> bool {
        now < self.expires_ms
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub access_key: String,
    /// The S3 secret key, sealed with a key derived from the cluster secret.
    pub secret: Sealed,
    pub admin: bool,
    pub created_ms: Millis,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("access_key", &self.access_key)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// A bucket's versioning state, as S3 names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    #[default]
    Unset,
    Enabled,
    Suspended,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub name: String,
    pub owner: String,
    pub pool: String,
    pub created_ms: Millis,
    pub versioning: Versioning,
    pub settings: BucketSettings,
}

/// Per-bucket policies the gateway applies; the metadata service only keeps
/// them. Empty means the gateway's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSettings {
    /// `capacity` (zstd) or `performance` (lz4), or none.
    pub compression: Option<String>,
    /// The bucket's data key wrapped by the KEK, when encrypted.
    pub wrapped_key: Option<Vec<u8>>,
    /// Unused, kept for the stored format: QoS rules have their own table
    /// (`qos.rs`, `SetQosRule`).
    pub qos: Vec<u8>,
}

/// What must hold of a key's current object for a write to apply (S3's
/// conditional writes). Checked when the write is applied, in log order, so
/// of two writers racing with If-None-Match: * exactly one wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteCondition {
    /// `If-None-Match: *`: the key has no current object (a delete marker
    /// is none).
    Absent,
    /// `If-Match`: the current object's ETag (hex, unquoted) is this one.
    ETag(String),
}

impl fmt::Display for WriteCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteCondition::Absent => f.write_str("If-None-Match: *"),
            WriteCondition::ETag(etag) => write!(f, "If-Match: {etag:?}"),
        }
    }
}

/// A bucket sub-resource whose configuration the gateway keeps as a
/// document of its own format (S3's XML, as the gateway validated and
/// normalised it): the metadata service stores each per bucket and drops
/// them with the bucket, knowing nothing of what is inside. Variants are
/// only appended (their names are keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BucketConfigKind {
    Tagging,
    Cors,
    Lifecycle,
    /// The bucket policy, as the owner put it (S3 returns it verbatim).
    Policy,
    /// The bucket's ACL (the gateway's JSON of its grants).
    Acl,
    /// How far the last lifecycle pass over the bucket came (the
    /// gateway's JSON of `lifecycle::Progress`), for `chuyi status`.
    LifecycleProgress,
    /// The bucket's default server-side encryption: the algorithm's S3
    /// name (`SM4` or `AES256`) as text.
    Encryption,
}

impl BucketConfigKind {
    /// The stable name the document is stored under.
    pub fn name(self) -> &'static str {
        match self {
            BucketConfigKind::Tagging => "tagging",
            BucketConfigKind::Cors => "cors",
            BucketConfigKind::Lifecycle => "lifecycle",
            BucketConfigKind::Policy => "policy",
            BucketConfigKind::Acl => "acl",
            BucketConfigKind::LifecycleProgress => "lifecycle-progress",
            BucketConfigKind::Encryption => "encryption",
        }
    }
}

/// Largest bucket configuration document stored (S3's own limit for a
/// CORS configuration is 64 KiB).
pub const BUCKET_CONFIG_MAX_BYTES: usize = 64 << 10;

/// The header an object's tag set is kept under in its `ObjectPut::headers`
/// (URL-encoded `key=value&...`, as S3's `x-amz-tagging` request header
/// carries it); never returned as a header itself.
pub const TAGGING_HEADER: &str = "x-amz-tagging";

/// The header a version's ACL is kept under in its `ObjectPut::headers`
/// (the gateway's JSON of its grants; none for private); never returned
/// as a header itself.
pub const ACL_HEADER: &str = "x-chuyi-acl";

/// Object lock (WORM) retention modes, as S3 has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockMode {
    /// Removable before its date only by a caller who asks to bypass it.
    Governance,
    /// Removable by no one before its date; the date can only move later.
    Compliance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "GOVERNANCE" => Some(LockMode::Governance),
            "COMPLIANCE" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// A version's retention: kept until `until_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub mode: LockMode,
    pub until_ms: Millis,
}

/// A bucket's object lock configuration (present: object lock is on, for
/// good): the retention new versions get when they name none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLockConfig {
    pub default_retention: Option<DefaultRetention>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRetention {
    pub mode: LockMode,
    pub days: u32,
}

/// Headers under which a version's lock is kept in its `ObjectPut::headers`
/// (the retention date as Unix milliseconds), read by the metadata
/// service, which enforces them, and returned by the gateway as S3's.
pub const LOCK_MODE_HEADER: &str = "x-amz-object-lock-mode";
pub const LOCK_UNTIL_HEADER: &str = "x-amz-object-lock-retain-until-date";
pub const LEGAL_HOLD_HEADER: &str = "x-amz-object-lock-legal-hold";

/// Why a version cannot be removed now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockRefusal {
    LegalHold,
    Retained { mode: LockMode, until_ms: Millis },
}

impl fmt::Display for LockRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockRefusal::LegalHold => f.write_str("it is under legal hold"),
            LockRefusal::Retained { mode, until_ms } => {
                write!(f, "it is retained in {} mode until {until_ms} ms", mode.as_str())
            }
        }
    }
}

impl ObjectPut {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn set_header(&mut self, name: &str, value: Option<String>) {
        self.headers.retain(|(n, _)| n != name);
        if let Some(value) = value {
            self.headers.push((name.into(), value));
        }
    }

    /// The version's retention, if it has one.
    pub fn retention(&self) -> Option<Retention> {
        let mode = LockMode::parse(self.header(LOCK_MODE_HEADER)?)?;
        let until_ms = self.header(LOCK_UNTIL_HEADER)?.parse().ok()?;
        Some(Retention { mode, until_ms })
    }

    pub fn set_retention(&mut self, retention: Option<Retention>) {
        self.set_header(LOCK_MODE_HEADER, retention.map(|r| r.mode.as_str().to_string()));
        self.set_header(LOCK_UNTIL_HEADER, retention.map(|r| r.until_ms.to_string()));
    }

    pub fn legal_hold(&self) -> bool {
        self.header(LEGAL_HOLD_HEADER) == Some("ON")
    }

    pub fn set_legal_hold(&mut self, on: bool) {
        self.set_header(LEGAL_HOLD_HEADER, on.then(|| "ON".to_string()));
    }

    /// Whether the version has any lock at all (a bucket without object
    /// lock takes none).
    pub fn is_locked_at_all(&self) -> bool {
        self.retention().is_some() || self.legal_hold()
    }

    /// Why removing this version at `now_ms` is refused, if it is: a legal
    /// hold always; a retention until its date, Governance unless
    /// `bypass_governance`.
    pub fn removal_refused(&self, now_ms: Millis, bypass_governance: bool) -> Option<LockRefusal> {
        if self.legal_hold() {
            return Some(LockRefusal::LegalHold);
        }
        match self.retention() {
            Some(Retention { mode: LockMode::Governance, .. }) if bypass_governance => None,
            Some(Retention { mode, until_ms }) if until_ms > now_ms => Some(LockRefusal::Retained { mode, until_ms }),
            _ => None,
        }
    }
}

/// Whether a version's retention may change from `old` to `new` at
/// `now_ms`: extending is always allowed; shortening, removing or changing
/// the mode of an unexpired Compliance retention never; of a Governance
/// one only with `bypass_governance`.
pub fn retention_change_allowed(
    old: Option<Retention>,
    new: Option<Retention>,
    now_ms: Millis,
    bypass_governance: bool,
) -> bool {
    let Some(old) = old.filter(|o| o.until_ms > now_ms) else { return true };
    let extends = new.is_some_and(|n| n.mode == old.mode && n.until_ms >= old.until_ms);
    match old.mode {
        LockMode::Compliance => extends,
        LockMode::Governance => extends || bypass_governance,
    }
}

/// The version id S3 gives objects written while versioning is not enabled.
pub const NULL_VERSION: &str = "null";

/// One version of an object (or a delete marker) in the object index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Orders versions of a key, newest highest; assigned at apply.
    pub seq: u64,
    /// `"null"` or a version id derived from `seq`.
    pub version_id: String,
    pub delete_marker: bool,
    pub modified_ms: Millis,
    /// What the client put (empty for a delete marker).
    pub data: ObjectPut,
}

/// A run of object data: bytes `offset..offset + len` of chunk owner
/// `owner`'s chunks, chunk `i` holding bytes `i × OBJECT_CHUNK_BYTES`
/// onwards. A single PUT of a chunk or more writes a run of its own
/// (offset 0); a multipart object has one per part; an object smaller than
/// a chunk is a run inside a [`Pack`] shared with others. An owner that is
/// not a pack belongs to exactly one run (a copy writes new chunks), so
/// freeing such a run never frees another object's data; a pack is freed
/// only when no run in it is live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DataRun {
    pub owner: u64,
    pub offset: u64,
    pub len: u64,
}

impl DataRun {
    /// A run of its own: from the owner's first byte.
    pub fn owned(owner: u64, len: u64) -> Self {
        Self { owner, offset: 0, len }
    }

    /// The owner's chunk indexes the run touches.
    pub fn chunks(&self) -> std::ops::Range<u64> {
        if self.len == 0 {
            return 0..0;
        }
        self.offset / OBJECT_CHUNK_BYTES..(self.offset + self.len).div_ceil(OBJECT_CHUNK_BYTES)
    }
}

impl<'de> Deserialize<'de> for DataRun {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct V1 {
            owner: u64,
            len: u64,
        }
        #[derive(Deserialize)]
        struct V2 {
            owner: u64,
            offset: u64,
            len: u64,
        }
        // Stored format 1 had no offset (codec.rs): every run was owned.
        if reading_format() == 1 {
            let V1 { owner, len } = V1::deserialize(d)?;
            return Ok(Self::owned(owner, len));
        }
        let V2 { owner, offset, len } = V2::deserialize(d)?;
        Ok(Self { owner, offset, len })
    }
}

/// The metadata store's value format (`metadata/src/store/codec.rs`)
/// written now. The layouts changed, oldest first: 1 had no offset in a
/// [`DataRun`]; 2 added it; 3 added a [`Part`]'s checksum and size, the
/// same fields of the multipart commands, and [`BucketUsage`]'s stored
/// bytes. RPC messages are always the
/// current format.
pub const STORED_FORMAT: u8 = 3;

thread_local! {
    /// The stored format of the value being decoded on this thread, for
    /// the few records whose layout changed since it was written.
    static READING_FORMAT: std::cell::Cell<u8> = const { std::cell::Cell::new(STORED_FORMAT) };
}

fn reading_format() -> u8 {
    READING_FORMAT.with(std::cell::Cell::get)
}

/// Runs `decode` with the records it decodes read as stored format
/// `format`: the metadata store's codec calls it around every value.
pub fn decoding_stored<T>(format: u8, decode: impl FnOnce() -> T) -> T {
    let before = READING_FORMAT.with(|r| r.replace(format));
    let out = decode();
    READING_FORMAT.with(|r| r.set(before));
    out
}

/// A field added in stored format 3: read from values of format 3 on,
/// its default in older ones (postcard is positional, so an old value
/// simply has nothing there). Use with `#[serde(deserialize_with)]`.
pub fn since_format_3<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    if reading_format() < 3 {
        return Ok(T::default());
    }
    T::deserialize(d)
}

/// Bytes one pack spans: sixteen chunks, so a pack's last, partly filled
/// chunk wastes at most a sixteenth of it, and compacting one moves at
/// most this much.
pub const PACK_BYTES: u64 = 16 * OBJECT_CHUNK_BYTES;

/// A chunk owner whose chunks hold many small objects' data, appended by
/// one gateway at a time (Haystack's volume, Ambry's partition): each
/// object's run is a byte range in it. Written only until
/// `writable_until_ms`; then its runs only die, and it is compacted when
/// most of it is dead and freed when all is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pack {
    /// No object may be added after this (the writer's window).
    pub writable_until_ms: Millis,
    /// The end of the highest run committed into it.
    pub end: u64,
    pub live_bytes: u64,
    pub live_runs: u64,
    /// When a run in it last died: it is freed no earlier than a grace
    /// after (`RetirePacks`), so a GET that read the run's place just
    /// before still finds the bytes.
    pub died_ms: Millis,
}

impl Pack {
    /// What it takes on each replica: its chunks up to its end, whole (a
    /// node reserves a chunk's slot at its first write).
    pub fn footprint(&self) -> u64 {
        self.end.div_ceil(OBJECT_CHUNK_BYTES) * OBJECT_CHUNK_BYTES
    }

    /// Whether most of what it takes is dead, or wasted in a chunk its
    /// writer left barely used: worth compacting (or freeing, when nothing
    /// is live).
    pub fn sparse(&self) -> bool {
        self.live_bytes.saturating_mul(2) < self.footprint() || self.live_runs == 0
    }

    /// Whether it can be freed at `now_ms`: nothing live, no writer, and
    /// `grace_ms` since its last run died.
    pub fn freeable(&self, now_ms: Millis, grace_ms: u64) -> bool {
        self.live_runs == 0 && now_ms >= self.writable_until_ms.max(self.died_ms).saturating_add(grace_ms)
    }
}

/// Where a live run in a pack comes from: the object version that holds
/// it (the compactor's way from a pack to the records to move).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    pub offset: u64,
    pub len: u64,
    pub bucket: String,
    pub key: String,
    pub seq: u64,
}

/// All packs at a glance, for `chuyi status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackTotals {
    pub packs: u64,
    /// Sum of the packs' footprints: what they take on each replica.
    pub bytes: u64,
    pub live_bytes: u64,
    /// Packs most of which is dead, waiting to be compacted or freed.
    pub sparse: u64,
    pub sparse_bytes: u64,
    pub sparse_live_bytes: u64,
    /// Bytes the compactor has moved, ever.
    pub moved_bytes: u64,
}

/// What a client gives for an object put; the state machine adds the
/// sequence, version id and time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectPut {
    pub size: u64,
    pub etag: String,
    pub content_type: String,
    /// `x-amz-meta-*` pairs, names without the prefix.
    pub user_meta: Vec<(String, String)>,
    /// The other headers S3 stores and returns (Content-Encoding,
    /// Content-Disposition, Cache-Control, Content-Language, Expires, the
    /// x-amz-checksum-* sent), lower-case names.
    pub headers: Vec<(String, String)>,
    /// The data, in order; their lengths add up to `size`.
    pub data: Vec<DataRun>,
    /// Parts of a multipart upload, 0 for a single PUT.
    pub parts: u32,
    /// Compression and encryption flags, for the gateway.
    pub flags: u32,
}

impl ObjectPut {
    /// The same object description without its data: what a copy or an
    /// upload starts from.
    pub fn without_data(&self) -> ObjectPut {
        ObjectPut { size: 0, data: Vec::new(), parts: 0, ..self.clone() }
    }
}

/// Object data written (or being written) that no object or part refers
/// to yet. Committing an object claims it; one whose writer died is freed
/// after `expires_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingData {
    pub run: DataRun,
    pub expires_ms: Millis,
}

/// A multipart upload in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub initiated_ms: Millis,
    /// What the object will be, less its data.
    pub object: ObjectPut,
}

/// One uploaded part of a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub number: u32,
    /// MD5 of the part, hex, as S3 reports a part's ETag.
    pub etag: String,
    pub run: DataRun,
    pub modified_ms: Millis,
    /// The part's checksum (base64) in its upload's checksum algorithm,
    /// when the upload names one.
    #[serde(default, deserialize_with = "since_format_3")]
    pub checksum: Option<String>,
    /// The part's size as uploaded, when its run is framed (compressed);
    /// none when it is the run's length.
    #[serde(default, deserialize_with = "since_format_3")]
    pub size: Option<u64>,
}

impl Part {
    /// The part's size as the client uploaded it.
    pub fn size(&self) -> u64 {
        self.size.unwrap_or(self.run.len)
    }
}

/// Lowest and highest part numbers, as S3.
pub const PART_NUMBER_MAX: u32 = 10_000;

/// What a bucket holds: every version that is not a delete marker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BucketUsage {
    pub objects: u64,
    /// Their bytes as clients see them.
    pub bytes: u64,
    /// What their data takes on each replica: less than `bytes` when
    /// compressed (stored format 3 on; before, nothing was).
    pub stored_bytes: u64,
}

impl<'de> Deserialize<'de> for BucketUsage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct V2 {
            objects: u64,
            bytes: u64,
        }
        #[derive(Deserialize)]
        struct V3 {
            objects: u64,
            bytes: u64,
            stored_bytes: u64,
        }
        // Before format 3 no object was compressed: stored as logical.
        if reading_format() < 3 {
            let V2 { objects, bytes } = V2::deserialize(d)?;
            return Ok(Self { objects, bytes, stored_bytes: bytes });
        }
        let V3 { objects, bytes, stored_bytes } = V3::deserialize(d)?;
        Ok(Self { objects, bytes, stored_bytes })
    }
}

/// `ObjectPut::flags` bit: the version's runs are framed and compressed
/// (`s3-gateway/src/frames.rs`), so their lengths are what the data takes,
/// not the object's size.
pub const OBJECT_FRAMED: u32 = 1;
/// `ObjectPut::flags` bits: the version's frames are sealed (server-side
/// encryption, `s3-gateway/src/sse.rs`) with SM4-GCM or AES-256-GCM under
/// its bucket's key, or with AES-256-GCM under a key the client holds
/// (SSE-C). Sealed runs are always framed.
pub const OBJECT_SSE_SM4: u32 = 1 << 1;
pub const OBJECT_SSE_AES256: u32 = 1 << 2;
pub const OBJECT_SSE_C: u32 = 1 << 3;

/// The header a framed multipart object keeps its parts' sizes under
/// (comma-separated, in order): a range GET finds its parts by them.
pub const PART_SIZES_HEADER: &str = "x-chuyi-part-sizes";

/// A version id derived from a sequence number: fixed width so text order
/// matches sequence order.
pub fn version_id_of(seq: u64) -> String {
    format!("{seq:020}")
}

/// Inverse of [`version_id_of`]; `None` for anything it did not produce.
pub fn seq_of_version_id(id: &str) -> Option<u64> {
    if id.len() != 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

/// A node held down after a peer reported it unreachable: its heartbeats
/// do not bring it up before `until_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub until_ms: Millis,
    /// Reports in a row; the penalty doubles with each.
    pub strikes: u32,
    pub last_reporter: NodeId,
}

/// The whole cluster map a client caches, at one epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    pub epoch: u64,
    pub nodes: Vec<NodeRecord>,
    pub pools: Vec<Pool>,
    pub pgs: Vec<PgRecord>,
}

impl ClusterMap {
    /// The projection the data path works from (see `chuyi_common::map`).
    pub fn data_map(&self) -> DataMap {
        let replica = |d: &DiskRef| Replica { node: d.node, disk: d.disk };
        let pools = self
            .pools
            .iter()
            .map(|pool| {
                let mut pgs: Vec<&PgRecord> = self.pgs.iter().filter(|pg| pg.pool == pool.id).collect();
                pgs.sort_by_key(|pg| pg.pg);
                PoolMap {
                    id: pool.id,
                    name: pool.name.clone(),
                    class: pool.class,
                    size: pool.redundancy.replicas() as u32,
                    pgs: pgs
                        .into_iter()
                        .map(|pg| PgMap {
                            epoch: pg.epoch,
                            replicas: pg.replicas.iter().map(replica).collect(),
                            recovering: pg.recovering.iter().map(replica).collect(),
                        })
                        .collect(),
                }
            })
            .collect();
        let nodes = self
            .nodes
            .iter()
            .map(|n| NodeAddr { id: n.id, addrs: n.addrs.clone(), up: n.state == NodeState::Up })
            .collect();
        DataMap { epoch: self.epoch, nodes, pools }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_round_trip_and_sort_by_seq() {
        assert_eq!(seq_of_version_id(&version_id_of(42)), Some(42));
        assert!(version_id_of(9) < version_id_of(10));
        assert_eq!(seq_of_version_id("null"), None);
        assert_eq!(seq_of_version_id("0000000000000000004x"), None);
        assert_eq!(seq_of_version_id("99999999999999999999"), None, "beyond u64");
    }

    #[test]
    fn locked_versions_are_removed_only_as_object_lock_allows() {
        let mut o = ObjectPut::default();
        assert_eq!(o.removal_refused(0, false), None);
        o.set_retention(Some(Retention { mode: LockMode::Governance, until_ms: 1000 }));
        assert_eq!(o.retention(), Some(Retention { mode: LockMode::Governance, until_ms: 1000 }));
        assert!(matches!(o.removal_refused(999, false), Some(LockRefusal::Retained { .. })));
        assert_eq!(o.removal_refused(999, true), None, "governance bypassed");
        assert_eq!(o.removal_refused(1000, false), None, "expired");
        o.set_retention(Some(Retention { mode: LockMode::Compliance, until_ms: 1000 }));
        assert!(o.removal_refused(999, true).is_some(), "compliance is never bypassed");
        o.set_retention(None);
        o.set_legal_hold(true);
        assert_eq!(o.removal_refused(u64::MAX, true), Some(LockRefusal::LegalHold));
        o.set_legal_hold(false);
        assert!(!o.is_locked_at_all() && o.headers.is_empty());
    }

    #[test]
    fn retention_moves_only_later_unless_governance_is_bypassed() {
        let r = |mode, until_ms| Some(Retention { mode, until_ms });
        let (gov, comp) = (LockMode::Governance, LockMode::Compliance);
        assert!(retention_change_allowed(None, r(comp, 10), 0, false), "a first retention");
        assert!(retention_change_allowed(r(comp, 10), r(comp, 20), 0, false), "extended");
        assert!(!retention_change_allowed(r(comp, 10), r(comp, 5), 0, true), "compliance shortened");
        assert!(!retention_change_allowed(r(comp, 10), r(gov, 20), 0, true), "compliance weakened");
        assert!(!retention_change_allowed(r(comp, 10), None, 0, true), "compliance removed");
        assert!(retention_change_allowed(r(comp, 10), None, 10, false), "expired: anything");
        assert!(!retention_change_allowed(r(gov, 10), r(gov, 5), 0, false), "governance shortened");
        assert!(retention_change_allowed(r(gov, 10), None, 0, true), "governance bypassed");
        assert!(!retention_change_allowed(r(gov, 10), r(comp, 10), 0, false), "a mode change is no extension");
    }
}
