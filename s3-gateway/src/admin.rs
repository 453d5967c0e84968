//! The gateway's admin endpoint: `GET /?chuyi-bucket-info=NAME` answers a
//! bucket's info as JSON, the same [`BucketInfo`] `chuyi bucket info
//! --json` prints: owner, pool, versioning, compression, the bytes as sent
//! and as stored, the bytes saved and the ratio, from the metadata
//! service's exact counters.
//!
//! Signed with SigV4 like any S3 request (s3s checks the signature before
//! the route is called); answered only to the bucket's owner or an admin.
//! On the service's root with a query no S3 operation has, so no S3
//! request is taken for it (s3s reads the path as S3's first, which rules
//! out a path of our own).

use std::sync::Arc;

use chuyi_client::Cluster;
use chuyi_meta_api::ask;
use chuyi_meta_api::model::{Bucket, BucketConfigKind, BucketUsage, Versioning};
use http::{Extensions, HeaderMap, HeaderValue, Method, Uri};
use s3s::route::S3Route;
use s3s::{s3_error, Body, S3Request, S3Response, S3Result};
use serde::{Deserialize, Serialize};

use crate::auth::Users;
use crate::errors::meta_error;

/// The query naming the bucket, on the path `/`.
pub const BUCKET_INFO_QUERY: &str = "chuyi-bucket-info";

/// The bucket a request's query names, if it is this endpoint's.
fn named_bucket(uri: &Uri) -> Option<String> {
    let query = uri.query()?;
    let value = query.split('&').find_map(|pair| pair.strip_prefix(BUCKET_INFO_QUERY)?.strip_prefix('='))?;
    urlencoding::decode(value).ok().map(|v| v.into_owned())
}

/// A bucket as its owner or an operator sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketInfo {
    pub name: String,
    pub owner: String,
    pub pool: String,
    pub versioning: String,
    pub created_ms: u64,
    /// Versions that are not delete markers.
    pub objects: u64,
    /// Their bytes as sent.
    pub bytes: u64,
    /// What their data takes on each replica.
    pub stored_bytes: u64,
    pub saved_bytes: u64,
    /// Bytes as sent per byte stored (1 when nothing is compressed).
    pub ratio: f64,
    /// The policy new writes get: `capacity`, `performance` or `off`.
    pub compression: String,
    /// The default encryption new writes get: `SM4`, `AES256` or `off`.
    pub encryption: String,
}

impl BucketInfo {
    /// `encryption`: the bucket's `encryption` document, if it has one.
    pub fn new(b: &Bucket, usage: BucketUsage, encryption: Option<&[u8]>) -> Self {
        let versioning = match b.versioning {
            Versioning::Unset => "unversioned",
            Versioning::Enabled => "enabled",
            Versioning::Suspended => "suspended",
        };
        Self {
            name: b.name.clone(),
            owner: b.owner.clone(),
            pool: b.pool.clone(),
            versioning: versioning.into(),
            created_ms: b.created_ms,
            objects: usage.objects,
            bytes: usage.bytes,
            stored_bytes: usage.stored_bytes,
            saved_bytes: usage.bytes.saturating_sub(usage.stored_bytes),
            ratio: if usage.stored_bytes == 0 { 1.0 } else { usage.bytes as f64 / usage.stored_bytes as f64 },
            compression: b.settings.compression.clone().unwrap_or_else(|| "off".into()),
            encryption: encryption
                .and_then(crate::encryption::decode_default)
                .map_or_else(|| "off".into(), |a| a.s3_name().into()),
        }
    }
}

/// The s3s route serving `GET /?chuyi-bucket-info=NAME`.
#[derive(Debug)]
pub struct AdminRoute {
    pub users: Arc<Users>,
    pub cluster: Arc<Cluster>,
}

#[async_trait::async_trait]
impl S3Route for AdminRoute {
    fn is_match(&self, method: &Method, uri: &Uri, _: &HeaderMap, _: &mut Extensions) -> bool {
        method == Method::GET && uri.path() == "/" && named_bucket(uri).is_some()
    }

    async fn call(&self, req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        let credentials = req.credentials.as_ref().ok_or_else(|| s3_error!(AccessDenied, "Signature is required"))?;
        let user = self.users.user(&credentials.access_key).await?;
        let name = named_bucket(&req.uri).unwrap_or_default();
        let meta = self.cluster.meta();
        let bucket = meta.ask(ask::Bucket(name.clone())).await.map_err(meta_error)?;
        if !user.admin && user.name != bucket.owner {
            return Err(s3_error!(AccessDenied, "only the bucket's owner or an admin may see its info"));
        }
        let usage = meta.ask(ask::BucketUsage(name.clone())).await.map_err(meta_error)?;
        let encryption = meta
            .ask(ask::BucketConfig { bucket: name, kind: BucketConfigKind::Encryption })
            .await
            .map_err(meta_error)?;
        let json = serde_json::to_vec(&BucketInfo::new(&bucket, usage, encryption.as_deref()))
            .map_err(|e| s3_error!(InternalError, "encoding the bucket's info: {e}"))?;
        let mut res = S3Response::new(Body::from(json));
        res.headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_root_with_the_query_is_the_endpoint() {
        let uri = |s: &str| s.parse::<Uri>().expect("uri");
        assert_eq!(named_bucket(&uri("/?chuyi-bucket-info=scans")).as_deref(), Some("scans"));
        assert_eq!(named_bucket(&uri("/?a=1&chuyi-bucket-info=a%2Db")).as_deref(), Some("a-b"));
        assert_eq!(named_bucket(&uri("/?chuyi-bucket-infox=scans")), None);
        assert_eq!(named_bucket(&uri("/?list-type=2")), None);
        assert_eq!(named_bucket(&uri("/")), None);
    }
}
