//! Bucket documents read through a short cache: the CORS rules every
//! browser request is judged by, and the policy and ACL every request's
//! access is decided by. Each would otherwise cost a linearizable metadata
//! read per request (a web viewer loads hundreds of images a minute).
//!
//! A document changed through another gateway is seen here at most
//! [`FRESH`] later; one changed through this gateway at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chuyi_client::Cluster;
use chuyi_common::clock::{self, Instant};
use chuyi_meta_api::ask;
use chuyi_meta_api::model::BucketConfigKind;
use chuyi_meta_api::MetaError;

/// How long a document, once read, answers the next requests.
pub const FRESH: Duration = Duration::from_secs(2);
/// Buckets whose document is kept at most (a bound on memory, not a tuning).
const KEPT_MAX: usize = 4096;

/// Why a document could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A stored document this gateway cannot read (written by a newer one).
    #[error("the bucket's stored {0} document does not decode")]
    Undecodable(&'static str),
}

/// Each bucket's document (none: it has none) and when it was read.
type Recent<T> = HashMap<String, (Instant, Option<Arc<T>>)>;

/// One kind of bucket document, decoded, through a short cache.
pub struct Documents<T> {
    cluster: Arc<Cluster>,
    kind: BucketConfigKind,
    /// Decodes bucket `.0`'s stored document.
    decode: fn(&str, &[u8]) -> Option<T>,
    recent: Mutex<Recent<T>>,
}

impl<T> std::fmt::Debug for Documents<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl<T> Documents<T> {
    pub fn new(cluster: Arc<Cluster>, kind: BucketConfigKind, decode: fn(&str, &[u8]) -> Option<T>) -> Self {
        Self { cluster, kind, decode, recent: Mutex::new(HashMap::new()) }
    }

    /// The bucket's document; none when it has none or does not exist (so
    /// requests naming made-up buckets cost no metadata read each).
    pub async fn of(&self, bucket: &str) -> Result<Option<Arc<T>>, DocumentError> {
        if let Some((at, document)) = self.lock().get(bucket) {
            if at.elapsed() < FRESH {
                return Ok(document.clone());
            }
        }
        let ask = ask::BucketConfig { bucket: bucket.into(), kind: self.kind };
        let document = match self.cluster.meta().ask(ask).await {
            Ok(Some(bytes)) => {
                Some(Arc::new((self.decode)(bucket, &bytes).ok_or(DocumentError::Undecodable(self.kind.name()))?))
            }
            Ok(None) | Err(MetaError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let mut recent = self.lock();
        recent.retain(|_, (at, _)| at.elapsed() < FRESH);
        if recent.len() < KEPT_MAX {
            recent.insert(bucket.to_string(), (clock::now(), document.clone()));
        }
        Ok(document)
    }

    /// Drops what is kept of the bucket's document: this gateway changed it.
    pub fn forget(&self, bucket: &str) {
        self.lock().remove(bucket);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent<T>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}
