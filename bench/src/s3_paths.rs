//! The two ways `s3-load` moves the same objects: through the S3 gateway
//! over HTTP ([`GatewayPath`]), and through chuyi-client straight to the
//! metadata service and the storage nodes ([`DirectPath`]) doing what the
//! gateway does underneath (reserve data, write its chunks, commit the
//! record; read the record, read the chunks; page the index; delete the
//! record). The gateway's own cost is the difference between the two.
//!
//! Each benchmark worker opens its own [`Session`]: a connection of its own
//! on the gateway path, a handle on the shared client on the direct path.
//! Every answer is checked (sizes, ETags, listing counts), so a fast wrong
//! answer fails the run instead of being reported.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use chuyi_client::{ClientError, Cluster};
use chuyi_common::ids::ChunkId;
use chuyi_common::limits::OBJECT_CHUNK_BYTES;
use chuyi_meta_api::{ask, order};
use chuyi_metadata::state::model::{DataRun, ObjectPut};
use chuyi_metadata::state::{ListCursor, ListRequest, MetaError, DATA_TTL_MAX_MS, LIST_MAX_KEYS};
use chuyi_s3::data::{READS_AHEAD, WRITES_IN_FLIGHT};
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::s3_client::{Keys, PayloadSigning, S3ClientError, S3Connection};

/// How long the direct path's reserved data may stay pending: an hour, as
/// the gateway gives a small object (a run that fails is left to expire).
const DIRECT_DATA_TTL_MS: u64 = 3_600_000;
const _: () = assert!(DIRECT_DATA_TTL_MS <= DATA_TTL_MAX_MS);

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error(transparent)]
    Gateway(#[from] S3ClientError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Data(#[from] ClientError),
    /// An answer that does not match what was written.
    #[error("{op} {key}: {what}")]
    Mismatch { op: &'static str, key: String, what: String },
}

/// The body every object of one size carries, with its digests computed
/// once, so neither path's client spends CPU on them per request.
#[derive(Debug)]
pub struct ObjectBody {
    pub data: Bytes,
    /// What the gateway must answer as the ETag.
    pub md5_hex: String,
    /// For `PayloadSigning::Sha256`.
    pub sha256_hex: String,
    /// How fast one core here computed the two, in MB/s: the per-byte work
    /// the gateway does for a PUT (MD5 always, SHA-256 for a signed
    /// payload), measured with the same crates.
    pub md5_mb_per_s: f64,
    pub sha256_mb_per_s: f64,
}

impl ObjectBody {
    /// `len` random bytes: nothing the path could compress or skip.
    pub fn random(len: usize) -> Self {
        use rand::Rng as _;
        let mut data = vec![0u8; len];
        rand::rng().fill(&mut data[..]);
        Self::of(data)
    }

    /// `len` bytes of `corpus`, repeated as needed from a random place.
    pub fn from_corpus(corpus: &[u8], len: usize) -> Self {
        use rand::Rng as _;
        if corpus.is_empty() {
            return Self::random(len);
        }
        let start = rand::rng().random_range(0..corpus.len());
        Self::of(corpus.iter().cycle().skip(start).take(len).copied().collect())
    }

    fn of(data: Vec<u8>) -> Self {
        use md5::Digest as _;
        use sha2::Digest as _;
        let len = data.len();
        let mb_per_s = |t: Instant| len as f64 / t.elapsed().as_secs_f64().max(f64::MIN_POSITIVE) / 1e6;
        let t = Instant::now();
        let md5_hex = chuyi_common::secret::hex(md5::Md5::digest(&data).as_slice());
        let md5_mb_per_s = mb_per_s(t);
        let t = Instant::now();
        let sha256_hex = chuyi_common::secret::hex(sha2::Sha256::digest(&data).as_slice());
        let sha256_mb_per_s = mb_per_s(t);
        Self { data: Bytes::from(data), md5_hex, sha256_hex, md5_mb_per_s, sha256_mb_per_s }
    }
}

/// Where the next page of a listing starts.
#[derive(Debug, Clone)]
pub enum Resume {
    /// The gateway's continuation token.
    Token(String),
    /// The index's own cursor.
    Cursor(ListCursor),
}

/// One worker's handle on a path; one request at a time.
#[async_trait]
pub trait Session: Send {
    async fn put(&mut self, key: &str, body: &ObjectBody) -> Result<(), PathError>;
    /// Reads the whole object and checks it against `body`; returns its bytes.
    async fn get(&mut self, key: &str, body: &ObjectBody) -> Result<u64, PathError>;
    /// One page of up to 1000 keys under `prefix`: (keys, where the next
    /// page starts, if any).
    async fn list_page(&mut self, prefix: &str, from: Option<Resume>) -> Result<(usize, Option<Resume>), PathError>;
    async fn delete(&mut self, key: &str) -> Result<(), PathError>;
}

/// A way to reach the objects of one bucket.
#[async_trait]
pub trait ObjectPath: Send + Sync {
    /// "gateway" or "direct", as the reports name it.
    fn name(&self) -> &'static str;
    async fn session(&self) -> Result<Box<dyn Session>, PathError>;
}

/// Through the gateway: real HTTP, signed with SigV4.
#[derive(Debug)]
pub struct GatewayPath {
    /// "gateway" or "gateway-owned" (its gateway's layout).
    pub name: &'static str,
    pub addr: std::net::SocketAddr,
    pub keys: Keys,
    pub payload: PayloadSigning,
    pub bucket: String,
}

#[async_trait]
impl ObjectPath for GatewayPath {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn session(&self) -> Result<Box<dyn Session>, PathError> {
        let connection = S3Connection::connect(self.addr, &self.keys, self.payload).await?;
        Ok(Box::new(GatewaySession { connection, bucket: self.bucket.clone() }))
    }
}

#[derive(Debug)]
struct GatewaySession {
    connection: S3Connection,
    bucket: String,
}

#[async_trait]
impl Session for GatewaySession {
    async fn put(&mut self, key: &str, body: &ObjectBody) -> Result<(), PathError> {
        let etag = self.connection.put_object(&self.bucket, key, body.data.clone(), &body.sha256_hex).await?;
        check_etag("PUT", key, &etag, body)
    }

    async fn get(&mut self, key: &str, body: &ObjectBody) -> Result<u64, PathError> {
        let (len, etag) = self.connection.get_object(&self.bucket, key).await?;
        check_len("GET", key, len, body)?;
        check_etag("GET", key, &etag, body)?;
        Ok(len)
    }

    async fn list_page(&mut self, prefix: &str, from: Option<Resume>) -> Result<(usize, Option<Resume>), PathError> {
        let token = match from {
            None => None,
            Some(Resume::Token(t)) => Some(t),
            Some(Resume::Cursor(_)) => {
                return Err(PathError::Mismatch { op: "LIST", key: prefix.into(), what: "an index cursor".into() })
            }
        };
        let page = self.connection.list_page(&self.bucket, prefix, token.as_deref()).await?;
        Ok((page.keys, page.next_token.map(Resume::Token)))
    }

    async fn delete(&mut self, key: &str) -> Result<(), PathError> {
        Ok(self.connection.delete_object(&self.bucket, key).await?)
    }
}

/// Through chuyi-client, as the gateway does underneath.
#[derive(Debug, Clone)]
pub struct DirectPath {
    pub cluster: Arc<Cluster>,
    pub bucket: String,
    pub pool: String,
}

#[async_trait]
impl ObjectPath for DirectPath {
    fn name(&self) -> &'static str {
        "direct"
    }

    async fn session(&self) -> Result<Box<dyn Session>, PathError> {
        Ok(Box::new(self.clone()))
    }
}

#[async_trait]
impl Session for DirectPath {
    async fn put(&mut self, key: &str, body: &ObjectBody) -> Result<(), PathError> {
        let len = body.data.len() as u64;
        let begin = order::BeginData { pool: self.pool.clone(), len, ttl_ms: DIRECT_DATA_TTL_MS };
        let owner = self.cluster.meta().order(begin).await?;
        // Up to WRITES_IN_FLIGHT chunk writes at once, as the gateway streams.
        let chunk = OBJECT_CHUNK_BYTES as usize;
        stream::iter((0..body.data.len()).step_by(chunk))
            .map(|at| {
                let data = body.data.slice(at..(at + chunk).min(body.data.len()));
                let id = ChunkId::new(owner, (at / chunk) as u64);
                // FUA, as the gateway writes them (s3-gateway/src/data.rs):
                // an acknowledged PUT is on stable storage on both replicas.
                self.cluster.write_chunk(id, 0, data, true)
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        let object = ObjectPut {
            size: len,
            etag: body.md5_hex.clone(),
            content_type: "binary/octet-stream".into(),
            data: vec![DataRun::owned(owner, len)],
            ..ObjectPut::default()
        };
        let put = order::PutObject { bucket: self.bucket.clone(), key: key.into(), object, condition: None };
        self.cluster.meta().order(put).await?;
        Ok(())
    }

    async fn get(&mut self, key: &str, body: &ObjectBody) -> Result<u64, PathError> {
        let object = ask::Object { bucket: self.bucket.clone(), key: key.into(), version_id: None };
        let record = self.cluster.meta().ask(object).await?;
        check_etag("GET", key, &record.data.etag, body)?;
        // Collected first: a borrowing iterator held across the awaits
        // below would not be Send.
        let mut pieces = Vec::new();
        for run in &record.data.data {
            let end = run.offset + run.len;
            for i in run.chunks() {
                let chunk_start = i * OBJECT_CHUNK_BYTES;
                let from = run.offset.max(chunk_start);
                let to = end.min(chunk_start + OBJECT_CHUNK_BYTES);
                pieces.push((ChunkId::new(run.owner, i), (from - chunk_start) as u32, (to - from) as u32));
            }
        }
        // READS_AHEAD chunk reads ahead, in order, as the gateway sends a body.
        let mut reads = stream::iter(pieces)
            .map(|(chunk, offset, len)| self.cluster.read_chunk(chunk, offset, len))
            .buffered(READS_AHEAD);
        let mut received = 0u64;
        while let Some(data) = reads.next().await {
            received += data?.len() as u64;
        }
        check_len("GET", key, received, body)?;
        Ok(received)
    }

    async fn list_page(&mut self, prefix: &str, from: Option<Resume>) -> Result<(usize, Option<Resume>), PathError> {
        let after = match from {
            None => None,
            Some(Resume::Cursor(c)) => Some(c),
            Some(Resume::Token(_)) => {
                return Err(PathError::Mismatch { op: "LIST", key: prefix.into(), what: "a gateway token".into() })
            }
        };
        let request = ListRequest {
            bucket: self.bucket.clone(),
            prefix: prefix.into(),
            delimiter: None,
            after,
            max_keys: LIST_MAX_KEYS,
            versions: false,
        };
        let listing = self.cluster.meta().ask(ask::List(request)).await?;
        Ok((listing.entries.len(), listing.next.map(Resume::Cursor)))
    }

    async fn delete(&mut self, key: &str) -> Result<(), PathError> {
        let delete = order::DeleteObject {
            bucket: self.bucket.clone(),
            key: key.into(),
            version_id: None,
            bypass_governance: false,
        };
        self.cluster.meta().order(delete).await?;
        Ok(())
    }
}

fn check_len(op: &'static str, key: &str, len: u64, body: &ObjectBody) -> Result<(), PathError> {
    if len == body.data.len() as u64 {
        return Ok(());
    }
    Err(PathError::Mismatch { op, key: key.into(), what: format!("{len} bytes, written {}", body.data.len()) })
}

fn check_etag(op: &'static str, key: &str, etag: &str, body: &ObjectBody) -> Result<(), PathError> {
    if etag == body.md5_hex {
        return Ok(());
    }
    Err(PathError::Mismatch { op, key: key.into(), what: format!("ETag {etag}, the body's MD5 is {}", body.md5_hex) })
}
