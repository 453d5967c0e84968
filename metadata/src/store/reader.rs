//! Reads of the applied state, for the service's queries. Each call reads
//! one consistent RocksDB view. Whether the state is current is the
//! caller's business: the service confirms leadership first (a linearizable
//! read) or serves what this member has applied (map watches).

use std::time::Duration;

use tokio::sync::watch;

use super::rocks::Rocks;
use super::StoreError;
use crate::state::listing::{self, ListRequest, Listing};
use crate::state::model::{
    Bucket, BucketUsage, ClusterMap, DataRun, NodeRecord, ObjectRecord, Part, Pool, PoolDefaults, Upload, User, Volume,
};
use crate::state::view;

/// Versions of one key examined to find its null version in a read.
const NULL_VERSION_READ_SCAN_MAX: usize = 100_000;

#[derive(Debug, Clone)]
pub struct StateReader {
    rocks: Rocks,
    epoch: watch::Receiver<u64>,
}

impl StateReader {
    pub(crate) fn new(rocks: Rocks, epoch: watch::Receiver<u64>) -> Self {
        Self { rocks, epoch }
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
        view::map(&self.rocks.view())
    }

    pub fn node(&self, id: u32) -> Result<Option<NodeRecord>, StoreError> {
        view::node(&self.rocks.view(), id)
    }

    pub fn pools(&self) -> Result<Vec<Pool>, StoreError> {
        view::pools(&self.rocks.view())
    }

    pub fn pool_defaults(&self, name: &str) -> Result<Option<PoolDefaults>, StoreError> {
        let view = self.rocks.view();
        if view::pool(&view, name)?.is_none() {
            return Ok(None);
        }
        view::pool_defaults(&view, name).map(Some)
    }

    pub fn volume(&self, name: &str) -> Result<Option<Volume>, StoreError> {
        view::volume(&self.rocks.view(), name)
    }

    pub fn volumes(&self) -> Result<Vec<Volume>, StoreError> {
        view::volumes(&self.rocks.view())
    }

    pub fn user(&self, access_key: &str) -> Result<Option<User>, StoreError> {
        view::user(&self.rocks.view(), access_key)
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        view::users(&self.rocks.view())
    }

    pub fn bucket(&self, name: &str) -> Result<Option<Bucket>, StoreError> {
        view::bucket(&self.rocks.view(), name)
    }

    pub fn buckets(&self) -> Result<Vec<Bucket>, StoreError> {
        view::buckets(&self.rocks.view())
    }

    /// The newest version of `key` (which may be a delete marker), or the
    /// named version.
    pub fn object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        let v = self.rocks.view();
        match version_id {
            Some(id) => view::object_version(&v, bucket, key, id, NULL_VERSION_READ_SCAN_MAX),
            None => view::latest_object(&v, bucket, key),
        }
    }

    pub fn list(&self, request: &ListRequest) -> Result<Listing, StoreError> {
        listing::list(&self.rocks.view(), request)
    }

    pub fn bucket_usage(&self, bucket: &str) -> Result<BucketUsage, StoreError> {
        view::bucket_usage(&self.rocks.view(), bucket)
    }

    pub fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Option<Upload>, StoreError> {
        view::upload(&self.rocks.view(), bucket, key, upload_id)
    }

    pub fn parts(&self, upload_id: &str, after: u32, max: usize) -> Result<Vec<Part>, StoreError> {
        view::parts(&self.rocks.view(), upload_id, after, max)
    }

    pub fn uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        max: usize,
    ) -> Result<Vec<Upload>, StoreError> {
        view::uploads(&self.rocks.view(), bucket, prefix, after, max)
    }

    pub fn garbage(&self, max: usize) -> Result<Vec<DataRun>, StoreError> {
        view::garbage(&self.rocks.view(), max)
    }

    pub fn expired_pending(&self, now_ms: u64, scan_max: usize) -> Result<u64, StoreError> {
        view::expired_pending(&self.rocks.view(), now_ms, scan_max)
    }
}
