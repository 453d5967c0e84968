//! Typed reads of the tables, shared by apply (validation) and queries.

use chuyi_common::ids::NodeId;

use super::keys;
use super::model::{
    seq_of_version_id, Bucket, BucketConfigKind, BucketUsage, ClusterMap, DataRun, DiskState, NodeRecord, NodeState,
    ObjectLockConfig, ObjectRecord, Part, PgRecord, Pool, PoolDefaults, Upload, User, Volume, NULL_VERSION,
};
use super::tables::TableError;
use super::tables::Tables;
use crate::placement::{DiskView, NodeView, PoolRule, ReplicaSet};

pub(crate) fn epoch(t: &impl Tables) -> Result<u64, TableError> {
    Ok(t.get_rec("epoch", keys::EPOCH)?.unwrap_or(0))
}

fn all<T: serde::de::DeserializeOwned>(t: &impl Tables, what: &'static str, table: u8) -> Result<Vec<T>, TableError> {
    let (from, to) = keys::table_range(table);
    Ok(t.scan_recs(what, &from, &to)?.into_iter().map(|(_, v)| v).collect())
}

pub(crate) fn node(t: &impl Tables, id: NodeId) -> Result<Option<NodeRecord>, TableError> {
    t.get_rec("node", &keys::node(id))
}

pub(crate) fn nodes(t: &impl Tables) -> Result<Vec<NodeRecord>, TableError> {
    all(t, "node", keys::T_NODE)
}

/// The nodes as placement sees them.
pub(crate) fn node_views(t: &impl Tables) -> Result<Vec<NodeView>, TableError> {
    Ok(node_views_of(&nodes(t)?))
}

pub(crate) fn node_views_of(nodes: &[NodeRecord]) -> Vec<NodeView> {
    nodes.iter().map(node_view).collect()
}

fn node_view(n: &NodeRecord) -> NodeView {
    NodeView {
        id: n.id,
        failure_domain: n.failure_domain.clone(),
        up: n.state == NodeState::Up,
        disks: n
            .disks
            .iter()
            .map(|d| DiskView {
                id: d.id,
                class: d.class,
                capacity_bytes: d.capacity_bytes,
                up: d.state == DiskState::Up,
            })
            .collect(),
    }
}

pub(crate) fn pool(t: &impl Tables, name: &str) -> Result<Option<Pool>, TableError> {
    t.get_rec("pool", &keys::pool(name))
}

pub(crate) fn pool_defaults(t: &impl Tables, name: &str) -> Result<PoolDefaults, TableError> {
    Ok(t.get_rec("pool defaults", &keys::pool_defaults(name))?.unwrap_or_default())
}

pub(crate) fn pools(t: &impl Tables) -> Result<Vec<Pool>, TableError> {
    all(t, "pool", keys::T_POOL)
}

/// The replica sets placement balances: each PG's without the replicas a
/// rebalance keeps past the pool's count until its move's backfill ends
/// (`nodes::during`). Counted, they would keep their disks looking full and
/// draw more moves off them than balance needs.
pub(crate) fn placed_sets(pgs: Vec<PgRecord>, replicas: usize) -> Vec<ReplicaSet> {
    pgs.into_iter()
        .map(|pg| {
            let mut set = pg.replicas;
            set.truncate(replicas);
            set
        })
        .collect()
}

/// PGs with a replica still being backfilled: frozen for rebalancing.
pub(crate) fn recovering_pgs(pgs: &[PgRecord]) -> std::collections::BTreeSet<u32> {
    pgs.iter().filter(|pg| !pg.recovering.is_empty()).map(|pg| pg.pg).collect()
}

pub(crate) fn rule(pool: &Pool) -> PoolRule {
    PoolRule {
        class: pool.class,
        replicas: pool.redundancy.replicas(),
        pg_count: pool.pg_count,
        separate_failure_domains: pool.separate_failure_domains,
    }
}

pub(crate) fn pgs(t: &impl Tables, pool: u32) -> Result<Vec<PgRecord>, TableError> {
    let from = keys::pg_pool_prefix(pool);
    let to = keys::prefix_end(&from).unwrap_or_else(|| vec![keys::T_PG + 1]);
    Ok(t.scan_recs("pg", &from, &to)?.into_iter().map(|(_, v)| v).collect())
}

/// Bytes of data the pool can hold: the capacity of its class's up disks on
/// up nodes, divided by its replica count. Thin volumes are not summed: the
/// check refuses a single volume that could never fit.
pub(crate) fn pool_capacity(t: &impl Tables, pool: &Pool) -> Result<u64, TableError> {
    let raw: u64 = nodes(t)?
        .iter()
        .filter(|n| n.state == NodeState::Up)
        .flat_map(|n| n.disks.iter())
        .filter(|d| d.class == pool.class && d.state == DiskState::Up)
        .fold(0u64, |sum, d| sum.saturating_add(d.capacity_bytes));
    Ok(raw / pool.redundancy.replicas().max(1) as u64)
}

pub(crate) fn volume(t: &impl Tables, name: &str) -> Result<Option<Volume>, TableError> {
    t.get_rec("volume", &keys::volume(name))
}

pub(crate) fn volumes(t: &impl Tables) -> Result<Vec<Volume>, TableError> {
    all(t, "volume", keys::T_VOLUME)
}

pub(crate) fn user(t: &impl Tables, access_key: &str) -> Result<Option<User>, TableError> {
    t.get_rec("user", &keys::user(access_key))
}

pub(crate) fn user_by_name(t: &impl Tables, name: &str) -> Result<Option<User>, TableError> {
    match t.get_rec::<String>("user name", &keys::user_name(name))? {
        Some(access_key) => user(t, &access_key),
        None => Ok(None),
    }
}

pub(crate) fn users(t: &impl Tables) -> Result<Vec<User>, TableError> {
    all(t, "user", keys::T_USER)
}

pub(crate) fn bucket(t: &impl Tables, name: &str) -> Result<Option<Bucket>, TableError> {
    t.get_rec("bucket", &keys::bucket(name))
}

pub(crate) fn bucket_config(
    t: &impl Tables,
    bucket: &str,
    kind: BucketConfigKind,
) -> Result<Option<Vec<u8>>, TableError> {
    t.get_rec("bucket config", &keys::bucket_config(bucket, kind.name()))
}

/// The bucket's object lock configuration: `Some` when object lock is on.
pub(crate) fn object_lock(t: &impl Tables, bucket: &str) -> Result<Option<ObjectLockConfig>, TableError> {
    t.get_rec("object lock", &keys::object_lock(bucket))
}

pub(crate) fn trash_entry(
    t: &impl Tables,
    name: &str,
) -> Result<Option<chuyi_meta_api::model::TrashEntry>, TableError> {
    t.get_rec("trash entry", &keys::trash(name))
}

/// A volume's snapshots (none taken: sequence 0, empty).
pub(crate) fn snapshots(t: &impl Tables, volume: &str) -> Result<chuyi_meta_api::model::VolumeSnapshots, TableError> {
    Ok(t.get_rec("snapshots", &keys::snapshots(volume))?.unwrap_or_default())
}

pub(crate) fn pool_schedules(
    t: &impl Tables,
    pool: &str,
) -> Result<Vec<chuyi_meta_api::schedule::SnapshotSchedule>, TableError> {
    Ok(t.get_rec("pool schedules", &keys::pool_schedules(pool))?.unwrap_or_default())
}

/// Every pool's schedules.
pub(crate) fn all_pool_schedules(
    t: &impl Tables,
) -> Result<Vec<(String, Vec<chuyi_meta_api::schedule::SnapshotSchedule>)>, TableError> {
    let mut out = Vec::new();
    for pool in pools(t)? {
        let schedules = pool_schedules(t, &pool.name)?;
        if !schedules.is_empty() {
            out.push((pool.name, schedules));
        }
    }
    Ok(out)
}

/// A volume's schedules: its own, and its pool's of other intervals.
pub(crate) fn volume_schedules(
    t: &impl Tables,
    pool: &str,
    snaps: &chuyi_meta_api::model::VolumeSnapshots,
) -> Result<Vec<chuyi_meta_api::schedule::SnapshotSchedule>, TableError> {
    let mut all = snaps.schedules.clone();
    for s in pool_schedules(t, pool)? {
        if !all.iter().any(|own| own.every_ms == s.every_ms) {
            all.push(s);
        }
    }
    Ok(all)
}

pub(crate) fn backup_schedules(
    t: &impl Tables,
) -> Result<Vec<chuyi_meta_api::backup_schedule::BackupSchedule>, TableError> {
    all(t, "backup schedule", keys::T_BACKUP_SCHEDULES)
}

pub(crate) fn trash(t: &impl Tables) -> Result<Vec<chuyi_meta_api::model::TrashEntry>, TableError> {
    all(t, "trash entry", keys::T_TRASH)
}

pub(crate) fn trash_retention(t: &impl Tables) -> Result<u64, TableError> {
    Ok(t.get_rec::<u64>("trash retention", keys::TRASH_RETENTION)?.unwrap_or_else(super::trash::default_retention))
}

pub(crate) fn qos_rules(t: &impl Tables) -> Result<Vec<chuyi_meta_api::qos::QosRule>, TableError> {
    all(t, "QoS rule", keys::T_QOS)
}

/// The rules' version: 0 before the first rule.
pub(crate) fn qos_version(t: &impl Tables) -> Result<u64, TableError> {
    Ok(t.get_rec::<u64>("QoS version", keys::QOS_VERSION)?.unwrap_or(0))
}

pub(crate) fn buckets(t: &impl Tables) -> Result<Vec<Bucket>, TableError> {
    all(t, "bucket", keys::T_BUCKET)
}

/// Up to `max` versions of `key`, newest first.
fn versions(t: &impl Tables, bucket: &str, key: &str, max: usize) -> Result<Vec<ObjectRecord>, TableError> {
    let from = keys::object_versions(bucket, key);
    let to = keys::prefix_end(&from).unwrap_or_default();
    t.scan(&from, &to, max)?
        .into_iter()
        .map(|(_, v)| crate::store::codec::decode("object", &v).map_err(TableError::from))
        .collect()
}

/// The newest version of `key`, which may be a delete marker.
pub(crate) fn latest_object(t: &impl Tables, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, TableError> {
    Ok(versions(t, bucket, key, 1)?.into_iter().next())
}

pub(crate) fn find_null_version(
    t: &impl Tables,
    bucket: &str,
    key: &str,
    max: usize,
) -> Result<Option<ObjectRecord>, TableError> {
    Ok(versions(t, bucket, key, max)?.into_iter().find(|r| r.version_id == NULL_VERSION))
}

/// The version `version_id` of `key` ("null" included), if it exists.
pub(crate) fn object_version(
    t: &impl Tables,
    bucket: &str,
    key: &str,
    version_id: &str,
    null_scan_max: usize,
) -> Result<Option<ObjectRecord>, TableError> {
    if version_id == NULL_VERSION {
        return find_null_version(t, bucket, key, null_scan_max);
    }
    let Some(seq) = seq_of_version_id(version_id) else { return Ok(None) };
    let record: Option<ObjectRecord> = t.get_rec("object", &keys::object_version(bucket, key, seq))?;
    Ok(record.filter(|r| r.version_id == version_id))
}

pub(crate) fn bucket_usage(t: &impl Tables, bucket: &str) -> Result<BucketUsage, TableError> {
    Ok(t.get_rec("bucket usage", &keys::bucket_usage(bucket))?.unwrap_or_default())
}

pub(crate) fn upload(t: &impl Tables, bucket: &str, key: &str, upload_id: &str) -> Result<Option<Upload>, TableError> {
    t.get_rec("upload", &keys::upload(bucket, key, upload_id))
}

/// Up to `max` parts of an upload numbered above `after`, in order.
pub(crate) fn parts(t: &impl Tables, upload_id: &str, after: u32, max: usize) -> Result<Vec<Part>, TableError> {
    let base = keys::upload_parts(upload_id);
    let from = keys::part(upload_id, after.saturating_add(1));
    let to = keys::prefix_end(&base).unwrap_or_default();
    if after == u32::MAX {
        return Ok(Vec::new());
    }
    Ok(t.scan_recs_limited("part", &from, &to, max)?.into_iter().map(|(_, v)| v).collect())
}

/// Up to `max` uploads of `bucket` whose key starts with `prefix`, after
/// (key, upload id) `after`, in key then upload order.
pub(crate) fn uploads(
    t: &impl Tables,
    bucket: &str,
    prefix: &str,
    after: Option<(&str, &str)>,
    max: usize,
) -> Result<Vec<Upload>, TableError> {
    let base = keys::upload_prefix(bucket, prefix);
    let to = keys::prefix_end(&base).unwrap_or_default();
    let from = match after {
        // The first key after that upload's own.
        Some((key, id)) => {
            let mut k = keys::upload(bucket, key, id);
            k.push(0);
            k.max(base)
        }
        None => base,
    };
    Ok(t.scan_recs_limited("upload", &from, &to, max)?.into_iter().map(|(_, v)| v).collect())
}

/// Whether any pending or garbage run or pack belongs to pool `pool`
/// (owners of a pool are one contiguous key range in each table).
pub(crate) fn object_data_left(t: &impl Tables, pool: u32) -> Result<bool, TableError> {
    let first = chuyi_common::map::owner_id(pool, 0);
    let last = chuyi_common::map::owner_id(pool, (1 << chuyi_common::map::OWNER_SEQ_BITS) - 1);
    let ranges = [
        (keys::pending(first), keys::pending(last)),
        (keys::garbage(first), keys::garbage(last)),
        (keys::pack(first), keys::pack(last)),
    ];
    for (from, to) in ranges {
        let mut to = to;
        to.push(0);
        if !t.scan(&from, &to, 1)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Pending runs whose time is up at `now_ms`, among the first `scan_max`.
pub(crate) fn expired_pending(t: &impl Tables, now_ms: u64, scan_max: usize) -> Result<u64, TableError> {
    let (from, to) = keys::table_range(keys::T_PENDING);
    let mut expired = 0;
    for (_, value) in t.scan(&from, &to, scan_max)? {
        let pending: super::model::PendingData = crate::store::codec::decode("pending data", &value)?;
        if pending.expires_ms <= now_ms {
            expired += 1;
        }
    }
    Ok(expired)
}

/// Up to `max` runs of garbage, in owner order, those after owner `after`.
pub(crate) fn garbage(t: &impl Tables, after: Option<u64>, max: usize) -> Result<Vec<DataRun>, TableError> {
    let (first, to) = keys::table_range(keys::T_GARBAGE);
    let from = match after {
        // The first key after that owner's own.
        Some(owner) => {
            let mut k = keys::garbage(owner);
            k.push(0);
            k
        }
        None => first,
    };
    let mut runs = Vec::new();
    for (key, value) in t.scan(&from, &to, max)? {
        let len: u64 = crate::store::codec::decode("garbage", &value)?;
        if let Some(owner) = keys::parse_owner(&key) {
            runs.push(DataRun::owned(owner, len));
        }
    }
    Ok(runs)
}

pub(crate) fn map(t: &impl Tables) -> Result<ClusterMap, TableError> {
    let pools = pools(t)?;
    let mut pgs = Vec::new();
    for pool in &pools {
        pgs.extend(self::pgs(t, pool.id)?);
    }
    Ok(ClusterMap { epoch: epoch(t)?, nodes: nodes(t)?, pools, pgs })
}
