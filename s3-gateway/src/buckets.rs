//! The gateway's S3 operations on buckets, mapped onto the metadata
//! service's bucket records. A bucket belongs to the user who created it;
//! only that user (or an admin) reaches it.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use chuyi_metadata::client::MetaClient;
use chuyi_metadata::proto::{ApiReply, Query};
use chuyi_metadata::state::model::{Bucket, User};
use chuyi_metadata::state::{Command, MetaError};
use s3s::dto::{
    Bucket as S3Bucket, BucketLocationConstraint, CreateBucketInput, CreateBucketOutput, DeleteBucketInput,
    DeleteBucketOutput, GetBucketLocationInput, GetBucketLocationOutput, HeadBucketInput, HeadBucketOutput,
    ListBucketsInput, ListBucketsOutput, Owner, Timestamp,
};
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

use crate::auth::{canonical_id, unavailable, Users};

/// The region every bucket reports; AWS's default, so clients that assume
/// it sign for it.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The S3 gateway: what it serves from.
#[derive(Debug)]
pub struct Gateway {
    meta: Arc<MetaClient>,
    users: Arc<Users>,
    /// The pool new buckets' objects go to.
    pool: String,
    region: String,
}

impl Gateway {
    pub fn new(meta: Arc<MetaClient>, users: Arc<Users>, pool: String) -> Self {
        Self { meta, users, pool, region: DEFAULT_REGION.into() }
    }

    /// The user a request is signed by; anonymous requests are refused.
    async fn caller<T>(&self, req: &S3Request<T>) -> S3Result<User> {
        let Some(credentials) = &req.credentials else {
            return Err(s3_error!(AccessDenied, "anonymous requests are not allowed"));
        };
        self.users.user(&credentials.access_key).await
    }

    /// `name`, if it exists and `user` may reach it.
    async fn owned_bucket(&self, user: &User, name: &str) -> S3Result<Bucket> {
        let bucket = match self.meta.read(Query::Bucket(name.to_string())).await {
            Ok(ApiReply::Bucket(bucket)) => bucket,
            Ok(other) => return Err(s3_error!(InternalError, "unexpected metadata reply {other:?}")),
            Err(MetaError::NotFound { .. }) => return Err(s3_error!(NoSuchBucket)),
            Err(e) => return Err(unavailable(e)),
        };
        if bucket.owner != user.name && !user.admin {
            return Err(s3_error!(AccessDenied));
        }
        Ok(bucket)
    }
}

fn owner(user_name: &str) -> Owner {
    Owner { display_name: Some(user_name.to_string()), id: Some(canonical_id(user_name)) }
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let user = self.caller(&req).await?;
        let buckets = match self.meta.read(Query::Buckets).await {
            Ok(ApiReply::Buckets(buckets)) => buckets,
            Ok(other) => return Err(s3_error!(InternalError, "unexpected metadata reply {other:?}")),
            Err(e) => return Err(unavailable(e)),
        };
        let prefix = req.input.prefix.as_deref().unwrap_or("");
        let mine = buckets
            .into_iter()
            .filter(|b| b.owner == user.name && b.name.starts_with(prefix))
            .map(|b| S3Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                bucket_region: Some(self.region.clone()),
            })
            .collect();
        let output = ListBucketsOutput { buckets: Some(mine), owner: Some(owner(&user.name)), ..Default::default() };
        Ok(S3Response::new(output))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let user = self.caller(&req).await?;
        let name = req.input.bucket.clone();
        if let Some(constraint) = req
            .input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
            .map(|c| c.as_str().to_string())
            .filter(|c| !c.is_empty() && *c != self.region)
        {
            return Err(s3_error!(
                InvalidLocationConstraint,
                "this gateway's region is {}; {constraint} was asked for",
                self.region
            ));
        }
        let command = Command::CreateBucket { name: name.clone(), owner: user.name.clone(), pool: self.pool.clone() };
        match self.meta.write(command).await {
            Ok(_) => Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) })),
            Err(MetaError::AlreadyExists { .. }) => match self.owned_bucket(&user, &name).await {
                Ok(b) if b.owner == user.name => Err(s3_error!(BucketAlreadyOwnedByYou)),
                _ => Err(s3_error!(BucketAlreadyExists)),
            },
            Err(MetaError::Invalid { why, .. }) => Err(s3_error!(InvalidBucketName, "{why}")),
            Err(e) if e.is_refusal() => Err(s3_error!(InvalidRequest, "{e}")),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let user = self.caller(&req).await?;
        self.owned_bucket(&user, &req.input.bucket).await?;
        let output = HeadBucketOutput { bucket_region: Some(self.region.clone()), ..Default::default() };
        Ok(S3Response::new(output))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let user = self.caller(&req).await?;
        let bucket = self.owned_bucket(&user, &req.input.bucket).await?;
        match self.meta.write(Command::DeleteBucket { name: bucket.name }).await {
            Ok(_) => Ok(S3Response::new(DeleteBucketOutput::default())),
            Err(MetaError::BucketNotEmpty(_)) => Err(s3_error!(BucketNotEmpty)),
            Err(MetaError::NotFound { .. }) => Err(s3_error!(NoSuchBucket)),
            Err(e) if e.is_refusal() => Err(s3_error!(InvalidRequest, "{e}")),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let user = self.caller(&req).await?;
        self.owned_bucket(&user, &req.input.bucket).await?;
        // us-east-1 is reported as no constraint at all, as S3 does.
        let location_constraint =
            (self.region != DEFAULT_REGION).then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint }))
    }
}
