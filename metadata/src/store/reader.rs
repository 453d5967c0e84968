//! Reads of the applied state, for the service's queries. Each call reads
//! one consistent RocksDB view. Whether the state is current is the
//! caller's business: the service confirms leadership first (a linearizable
//! read) or serves what this member has applied (map watches).

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::rocks::{Rocks, View};
use super::StoreError;
use crate::state::listing::{self, ListRequest, Listing};
use crate::state::model::{
    Bucket, BucketConfigKind, BucketUsage, ClusterMap, DataRun, NodeRecord, ObjectLockConfig, ObjectRecord, Pack,
    PackRef, PackTotals, Part, Pool, PoolDefaults, Upload, User, Volume,
};
use crate::state::{packs, view};

/// Versions of one key examined to find its null version in a read.
const NULL_VERSION_READ_SCAN_MAX: usize = 100_000;

#[derive(Debug, Clone)]
pub struct StateReader {
    rocks: Rocks,
    epoch: watch::Receiver<u64>,
    /// Held for writing while a snapshot replaces the state, whose
    /// batches would otherwise show a state half old, half new.
    installing: Arc<RwLock<()>>,
}

/// A view taken while no snapshot install is under way.
struct Guarded<'a> {
    view: View<'a>,
    _installs_wait: RwLockReadGuard<'a, ()>,
}

impl<'a> std::ops::Deref for Guarded<'a> {
    type Target = View<'a>;

    fn deref(&self) -> &View<'a> {
        &self.view
    }
}

impl StateReader {
    pub(crate) fn new(rocks: Rocks, epoch: watch::Receiver<u64>, installing: Arc<RwLock<()>>) -> Self {
        Self { rocks, epoch, installing }
    }

    fn view(&self) -> Guarded<'_> {
        let guard = self.installing.read().unwrap_or_else(PoisonError::into_inner);
        Guarded { view: self.rocks.view(), _installs_wait: guard }
    }

    /// The map epoch this member has applied.
    pub fn epoch(&self) -> u64 {
        *self.epoch.borrow()
    }

    /// Waits until the applied epoch exceeds `known` or `wait` passes;
    /// returns the epoch then.
    pub async fn wait_epoch_above(&self, known: u64, wait: Duration) -> u64 {
        let mut rx = self.epoch.clone();
        // Timeout or a closed channel both just end the wait.
        let _ = tokio::time::timeout(wait, rx.wait_for(|e| *e > known)).await;
        let epoch = *rx.borrow();
        epoch
    }

    pub fn map(&self) -> Result<ClusterMap, StoreError> {
        Ok(view::map(&*self.view())?)
    }

    pub fn node(&self, id: u32) -> Result<Option<NodeRecord>, StoreError> {
        Ok(view::node(&*self.view(), id)?)
    }

    pub fn pools(&self) -> Result<Vec<Pool>, StoreError> {
        Ok(view::pools(&*self.view())?)
    }

    pub fn pool_defaults(&self, name: &str) -> Result<Option<PoolDefaults>, StoreError> {
        let guarded = self.view();
        if view::pool(&*guarded, name)?.is_none() {
            return Ok(None);
        }
        Ok(view::pool_defaults(&*guarded, name).map(Some)?)
    }

    pub fn volume(&self, name: &str) -> Result<Option<Volume>, StoreError> {
        Ok(view::volume(&*self.view(), name)?)
    }

    pub fn volumes(&self) -> Result<Vec<Volume>, StoreError> {
        Ok(view::volumes(&*self.view())?)
    }

    pub fn user(&self, access_key: &str) -> Result<Option<User>, StoreError> {
        Ok(view::user(&*self.view(), access_key)?)
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        Ok(view::users(&*self.view())?)
    }

    pub fn bucket(&self, name: &str) -> Result<Option<Bucket>, StoreError> {
        Ok(view::bucket(&*self.view(), name)?)
    }

    pub fn bucket_config(&self, bucket: &str, kind: BucketConfigKind) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(view::bucket_config(&*self.view(), bucket, kind)?)
    }

    pub fn object_lock(&self, bucket: &str) -> Result<Option<ObjectLockConfig>, StoreError> {
        Ok(view::object_lock(&*self.view(), bucket)?)
    }

    /// The recycle bin's retention and entries, read at one point.
    pub fn trash(&self) -> Result<(u64, Vec<chuyi_meta_api::model::TrashEntry>), StoreError> {
        let v = self.view();
        Ok((view::trash_retention(&*v)?, view::trash(&*v)?))
    }

    pub fn snapshots(&self, volume: &str) -> Result<chuyi_meta_api::model::VolumeSnapshots, StoreError> {
        Ok(view::snapshots(&*self.view(), volume)?)
    }

    /// The snapshots of the volume (or volume in the recycle bin) with
    /// chunk owner id `owner`; none found: none.
    pub fn snapshots_of(&self, owner: u64) -> Result<chuyi_meta_api::model::VolumeSnapshots, StoreError> {
        let v = self.view();
        let live = view::volumes(&*v)?.into_iter().find(|vol| vol.id == owner).map(|vol| vol.name);
        let name = match live {
            Some(name) => Some(name),
            None => view::trash(&*v)?.into_iter().find(|e| e.volume.id == owner).map(|e| e.volume.name),
        };
        match name {
            Some(name) => Ok(view::snapshots(&*v, &name)?),
            None => Ok(Default::default()),
        }
    }

    /// What snapshot schedules want done at `now_ms`: snapshots due
    /// (volume, interval) and expired (volume, name). Volumes in the
    /// recycle bin are not listed: their schedules wait with them.
    #[allow(clippy::type_complexity)]
    pub fn snapshot_work(&self, now_ms: u64) -> Result<(Vec<(String, u64)>, Vec<(String, String)>), StoreError> {
        use chuyi_meta_api::schedule;
        let v = self.view();
        let (mut due, mut expired) = (Vec::new(), Vec::new());
        for volume in view::volumes(&*v)? {
            let snaps = view::snapshots(&*v, &volume.name)?;
            for s in view::volume_schedules(&*v, &volume.pool, &snaps)? {
                let label = s.label();
                let last = snaps.taken.iter().find(|(l, _)| *l == label).map(|(_, slot)| *slot);
                if schedule::due(s.every_ms, last, now_ms).is_some() {
                    due.push((volume.name.clone(), s.every_ms));
                }
                for old in schedule::expired(&snaps.snapshots, &label, s.keep) {
                    expired.push((volume.name.clone(), old.name.clone()));
                }
            }
        }
        Ok((due, expired))
    }

    /// Every snapshot schedule: each volume's, then each pool's.
    #[allow(clippy::type_complexity)]
    pub fn snapshot_schedules(
        &self,
    ) -> Result<Vec<(chuyi_meta_api::schedule::ScheduleScope, chuyi_meta_api::schedule::SnapshotSchedule)>, StoreError>
    {
        use chuyi_meta_api::schedule::ScheduleScope;
        let v = self.view();
        let mut out = Vec::new();
        for volume in view::volumes(&*v)? {
            for s in view::snapshots(&*v, &volume.name)?.schedules {
                out.push((ScheduleScope::Volume(volume.name.clone()), s));
            }
        }
        for (pool, schedules) in view::all_pool_schedules(&*v)? {
            out.extend(schedules.into_iter().map(|s| (ScheduleScope::Pool(pool.clone()), s)));
        }
        Ok(out)
    }

    pub fn backup_schedules(&self) -> Result<Vec<chuyi_meta_api::backup_schedule::BackupSchedule>, StoreError> {
        Ok(view::backup_schedules(&*self.view())?)
    }

    /// Every QoS rule and the rules' version, read at one point.
    pub fn qos_rules(&self) -> Result<(u64, Vec<chuyi_meta_api::qos::QosRule>), StoreError> {
        let v = self.view();
        Ok((view::qos_version(&*v)?, view::qos_rules(&*v)?))
    }

    pub fn buckets(&self) -> Result<Vec<Bucket>, StoreError> {
        Ok(view::buckets(&*self.view())?)
    }

    /// The newest version of `key` (which may be a delete marker), or the
    /// named version.
    pub fn object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        let v = self.view();
        let record = match version_id {
            Some(id) => view::object_version(&*v, bucket, key, id, NULL_VERSION_READ_SCAN_MAX)?,
            None => view::latest_object(&*v, bucket, key)?,
        };
        Ok(record)
    }

    pub fn list(&self, request: &ListRequest) -> Result<Listing, StoreError> {
        Ok(listing::list(&*self.view(), request)?)
    }

    pub fn bucket_usage(&self, bucket: &str) -> Result<BucketUsage, StoreError> {
        Ok(view::bucket_usage(&*self.view(), bucket)?)
    }

    pub fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Option<Upload>, StoreError> {
        Ok(view::upload(&*self.view(), bucket, key, upload_id)?)
    }

    pub fn parts(&self, upload_id: &str, after: u32, max: usize) -> Result<Vec<Part>, StoreError> {
        Ok(view::parts(&*self.view(), upload_id, after, max)?)
    }

    pub fn uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        max: usize,
    ) -> Result<Vec<Upload>, StoreError> {
        Ok(view::uploads(&*self.view(), bucket, prefix, after, max)?)
    }

    pub fn garbage(&self, after: Option<u64>, max: usize) -> Result<Vec<DataRun>, StoreError> {
        Ok(view::garbage(&*self.view(), after, max)?)
    }

    pub fn expired_pending(&self, now_ms: u64, scan_max: usize) -> Result<u64, StoreError> {
        Ok(view::expired_pending(&*self.view(), now_ms, scan_max)?)
    }

    pub fn sparse_packs(&self, after: u64, max: usize) -> Result<Vec<(u64, Pack)>, StoreError> {
        Ok(packs::sparse(&*self.view(), after, max)?)
    }

    pub fn pack_refs(&self, owner: u64, from: u64, max: usize) -> Result<Vec<PackRef>, StoreError> {
        Ok(packs::refs(&*self.view(), owner, from, max)?)
    }

    pub fn freeable_packs(&self, now_ms: u64, grace_ms: u64, scan_max: usize) -> Result<u64, StoreError> {
        Ok(packs::freeable(&*self.view(), now_ms, grace_ms, scan_max)?)
    }

    pub fn pack_totals(&self) -> Result<PackTotals, StoreError> {
        Ok(packs::totals(&*self.view())?)
    }
}
