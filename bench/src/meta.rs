//! Load on the metadata service through its real client: object-index puts
//! from many concurrent writers (each put is a Raft commit: a majority's
//! fsync), then linearizable reads one at a time (each confirms leadership
//! with a quorum before reading).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chuyi_common::ids::DeviceClass;
use chuyi_meta_api::order;
use chuyi_metadata::client::MetaClient;
use chuyi_metadata::proto::{MetaCall, Query};
use chuyi_metadata::state::model::{DataRun, DiskRecord, ObjectPut, Redundancy, PACK_BYTES};
use chuyi_metadata::state::{MetaError, Request};
use md5::{Digest, Md5};
use serde::Serialize;

use crate::latency::{nanos, LatencySummary};

pub const BUCKET: &str = "bench-meta";

#[derive(Debug, Clone, Copy)]
pub struct MetaSpec {
    pub writers: usize,
    pub measure: Duration,
    pub reads: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetaReport {
    pub writers: usize,
    pub puts: u64,
    pub puts_per_s: f64,
    pub put_latency: LatencySummary,
    pub reads: usize,
    pub read_latency: LatencySummary,
}

fn ignore_exists(result: Result<impl Sized, MetaError>) -> Result<(), MetaError> {
    match result {
        Ok(_) | Err(MetaError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Two nodes, a pool, a user and the bucket; what exists already is kept.
pub async fn seed(client: &MetaClient) -> Result<(), MetaError> {
    for id in 1..=2 {
        let disks = vec![DiskRecord::empty(0, DeviceClass::Ssd, 1 << 40)];
        let addrs = vec![format!("127.0.0.1:{}", 9000 + id)];
        client.write(Request::RegisterNode { id, addrs, failure_domain: String::new(), disks }).await?;
    }
    let pool = Request::CreatePool {
        name: "bench".into(),
        class: DeviceClass::Ssd,
        redundancy: Redundancy::Replicated(2),
        pg_count: 64,
        separate_failure_domains: false,
    };
    ignore_exists(client.write(pool).await)?;
    ignore_exists(client.call(&MetaCall::CreateUser { name: "bench".into(), admin: false }).await)?;
    ignore_exists(
        client
            .write(Request::CreateBucket {
                name: BUCKET.into(),
                owner: "bench".into(),
                pool: "bench".into(),
                object_lock: false,
            })
            .await,
    )
}

/// An index entry of an empty object: what the index costs, without the
/// reservation of data a gateway PUT also makes. Every metadata bench puts
/// its objects through this one function. The ETag is the MD5 of the key,
/// so ETags differ as real objects' do (identical ones would compress
/// away in RocksDB and flatter its size per object).
pub fn put(key: String) -> Request {
    put_run(key, None)
}

/// [`put`] of an object whose data is `run` (a range of a pack, as the
/// gateway puts objects smaller than a chunk), or none.
pub fn put_run(key: String, run: Option<DataRun>) -> Request {
    let etag: String = Md5::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let object = ObjectPut {
        etag,
        content_type: "application/dicom".into(),
        user_meta: vec![("study".into(), "1.2.840.113619".into())],
        size: run.map_or(0, |r| r.len),
        data: run.into_iter().collect(),
        ..ObjectPut::default()
    };
    Request::PutObject { bucket: BUCKET.into(), key, object, condition: None }
}

/// Hands out ranges of packs for one writer's objects, as a gateway does:
/// a new pack (`OpenPack`) whenever the last is full.
#[derive(Debug, Default)]
pub struct PackCursor {
    open: Option<(u64, u64)>,
}

impl PackCursor {
    /// The range of the next object of `len` bytes.
    pub async fn next(&mut self, client: &MetaClient, len: u64) -> Result<DataRun, MetaError> {
        let aligned = len.next_multiple_of(4096);
        match self.open {
            Some((owner, offset)) if offset + aligned <= PACK_BYTES => {
                self.open = Some((owner, offset + aligned));
                Ok(DataRun { owner, offset, len })
            }
            _ => {
                let open = order::OpenPack { pool: "bench".into(), ttl_ms: chuyi_metadata::state::PACK_TTL_MAX_MS };
                let owner = client.order(open).await?;
                self.open = Some((owner, aligned));
                Ok(DataRun { owner, offset: 0, len })
            }
        }
    }
}

pub async fn run(client: Arc<MetaClient>, spec: MetaSpec) -> Result<MetaReport, MetaError> {
    seed(&client).await?;
    let started = Instant::now();
    let deadline = started + spec.measure;
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..spec.writers {
        let (client, counter) = (client.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                client.write(put(format!("w{w}/{n:010}"))).await?;
                latencies.push(nanos(t.elapsed()));
            }
            Ok::<_, MetaError>(latencies)
        }));
    }
    let mut put_ns = Vec::new();
    for t in tasks {
        put_ns.extend(t.await.map_err(|e| MetaError::Internal(e.to_string()))??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let puts = put_ns.len() as u64;

    let mut read_ns = Vec::with_capacity(spec.reads);
    for i in 0..spec.reads {
        let key = format!("w0/{:010}", i as u64 % puts.max(1));
        let t = Instant::now();
        // A key another writer got is NotFound: still a full linearizable read.
        match client.read(Query::Object { bucket: BUCKET.into(), key, version_id: None }).await {
            Ok(_) | Err(MetaError::NotFound { .. }) => read_ns.push(nanos(t.elapsed())),
            Err(e) => return Err(e),
        }
    }
    Ok(MetaReport {
        writers: spec.writers,
        puts,
        puts_per_s: puts as f64 / elapsed,
        put_latency: LatencySummary::from_nanos(&mut put_ns),
        reads: spec.reads,
        read_latency: LatencySummary::from_nanos(&mut read_ns),
    })
}
