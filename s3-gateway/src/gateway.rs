//! The gateway as s3s sees it: one [`S3`] implementation whose operations
//! are written, by what they act on, in [`crate::buckets`],
//! [`crate::objects`], [`crate::listing`] and [`crate::multipart`]. Here
//! are what they share: who the caller is and the bucket the access check
//! ([`crate::access`]) let them reach, and reading an object's index
//! record.

use std::sync::Arc;
use std::time::Duration;

use chuyi_common::sm4::Kek;
use chuyi_meta_api::ask::{self, Ask};
use chuyi_meta_api::client::MetaClient;
use chuyi_meta_api::model::{seq_of_version_id, Bucket, BucketConfigKind, ObjectRecord, NULL_VERSION};
use chuyi_meta_api::order::Order;
use chuyi_meta_api::{Reply, Request};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

use crate::access::check::{granted, Access};
use crate::access::Caller;
use crate::buckets::JsonDocument;
use crate::data::DataPath;
use crate::documents::Documents;
use crate::errors::meta_error;
use crate::lifecycle;

/// The region every bucket reports; AWS's default, so clients that assume
/// it sign for it.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The S3 gateway: what it serves from.
#[derive(Debug)]
pub struct Gateway {
    /// The access check, whose caches of policies and ACLs the operations
    /// that change them refresh.
    pub(crate) access: Arc<Access>,
    /// The buckets' lifecycle rules, for `x-amz-expiration`, and how long
    /// a lifecycle day is.
    pub(crate) lifecycles: Documents<lifecycle::Config>,
    pub(crate) lifecycle_day: Duration,
    /// The buckets' default encryption.
    pub(crate) encryptions: Documents<crate::sse::Algorithm>,
    /// The master key bucket keys are wrapped under; none: encrypted
    /// objects are refused (`encryption::key_unavailable`).
    pub(crate) kek: Option<Arc<Kek>>,
    pub(crate) data: DataPath,
    /// The pool new buckets' objects go to.
    pub(crate) pool: String,
    pub(crate) region: String,
}

impl Gateway {
    pub fn new(
        data: DataPath,
        access: Arc<Access>,
        pool: String,
        lifecycle_day: Duration,
        kek: Option<Arc<Kek>>,
    ) -> Self {
        let lifecycles = Documents::new(data.cluster().clone(), BucketConfigKind::Lifecycle, |_, bytes| {
            lifecycle::Config::decode(bytes)
        });
        let encryptions = Documents::new(data.cluster().clone(), BucketConfigKind::Encryption, |_, bytes| {
            crate::encryption::decode_default(bytes)
        });
        Self { access, lifecycles, lifecycle_day, encryptions, kek, data, pool, region: DEFAULT_REGION.into() }
    }

    pub(crate) fn meta(&self) -> &MetaClient {
        self.data.cluster().meta()
    }

    /// The name of the user a request is signed by: for the operations on
    /// no bucket, which the access check opened to users only.
    pub(crate) fn user_name<T>(&self, req: &S3Request<T>) -> S3Result<String> {
        match &granted(req)?.caller {
            Caller::User { name, .. } => Ok(name.clone()),
            Caller::Anonymous => Err(s3_error!(AccessDenied, "anonymous requests are not allowed")),
        }
    }

    /// Who asks, and bucket `name`, which the access check found the
    /// request may reach: the start of every operation on a bucket.
    pub(crate) async fn request_bucket<T>(&self, req: &S3Request<T>, name: &str) -> S3Result<(Caller, Bucket)> {
        let granted = granted(req)?;
        match &granted.bucket {
            Some(bucket) if bucket.name == name => Ok((granted.caller.clone(), bucket.clone())),
            _ => Err(s3_error!(AccessDenied, "the request was not checked for bucket {name}")),
        }
    }

    /// The newest version of `key`, or version `version_id`; it may be a
    /// delete marker.
    pub(crate) async fn object(&self, bucket: &str, key: &str, version_id: Option<&str>) -> S3Result<ObjectRecord> {
        if let Some(v) = version_id {
            check_version_id(v)?;
        }
        let ask = ask::Object { bucket: bucket.into(), key: key.into(), version_id: version_id.map(Into::into) };
        self.meta().ask(ask).await.map_err(meta_error)
    }

    pub(crate) async fn write(&self, request: Request) -> S3Result<Reply> {
        match self.meta().write(request).await {
            Ok(reply) => Ok(reply),
            Err(e) => Err(meta_error(e)),
        }
    }

    /// A typed write to the metadata service, its refusals as S3 errors.
    pub(crate) async fn order<O: Order>(&self, order: O) -> S3Result<O::Answer> {
        self.meta().order(order).await.map_err(meta_error)
    }

    /// A typed read of the metadata service, its refusals as S3 errors.
    pub(crate) async fn ask<A: Ask>(&self, ask: A) -> S3Result<A::Answer> {
        self.meta().ask(ask).await.map_err(meta_error)
    }
}

/// A version id is `null` or one this gateway gave out.
pub(crate) fn check_version_id(v: &str) -> S3Result<()> {
    if v == NULL_VERSION || seq_of_version_id(v).is_some() {
        Ok(())
    } else {
        Err(s3_error!(InvalidArgument, "Invalid version id specified"))
    }
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        self.list_buckets_of(req).await
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        self.create_bucket_for(req).await
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.head_bucket_of(req).await
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.delete_bucket_of(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket_location(req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.bucket_versioning(req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        self.set_bucket_versioning(req).await
    }

    async fn put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        self.put_encryption(req).await
    }

    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        self.get_encryption(req).await
    }

    async fn delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        self.delete_encryption(req).await
    }

    async fn get_bucket_cors(&self, req: S3Request<GetBucketCorsInput>) -> S3Result<S3Response<GetBucketCorsOutput>> {
        self.bucket_cors(req).await
    }

    async fn put_bucket_cors(&self, req: S3Request<PutBucketCorsInput>) -> S3Result<S3Response<PutBucketCorsOutput>> {
        self.set_bucket_cors(req).await
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        self.delete_bucket_cors(req).await
    }

    async fn get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        self.bucket_object_lock(req).await
    }

    async fn put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        self.set_bucket_object_lock(req).await
    }

    async fn get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        self.object_retention(req).await
    }

    async fn put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        self.set_object_retention(req).await
    }

    async fn get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        self.object_legal_hold(req).await
    }

    async fn put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        self.set_object_legal_hold(req).await
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        self.bucket_lifecycle(req).await
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        self.set_bucket_lifecycle(req).await
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        self.delete_lifecycle(req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        self.attributes(req).await
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        self.bucket_tags(req).await
    }

    async fn get_bucket_acl(&self, req: S3Request<GetBucketAclInput>) -> S3Result<S3Response<GetBucketAclOutput>> {
        self.bucket_acl(req).await
    }

    async fn put_bucket_acl(&self, req: S3Request<PutBucketAclInput>) -> S3Result<S3Response<PutBucketAclOutput>> {
        self.set_bucket_acl(req).await
    }

    async fn get_object_acl(&self, req: S3Request<GetObjectAclInput>) -> S3Result<S3Response<GetObjectAclOutput>> {
        self.object_acl(req).await
    }

    async fn put_object_acl(&self, req: S3Request<PutObjectAclInput>) -> S3Result<S3Response<PutObjectAclOutput>> {
        self.set_object_acl(req).await
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        self.bucket_policy(req).await
    }

    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        self.set_bucket_policy(req).await
    }

    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        self.delete_bucket_policy_of(req).await
    }

    async fn get_bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
        self.bucket_policy_status(req).await
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        self.set_bucket_tags(req).await
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        self.delete_bucket_tags(req).await
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        self.object_tags(req).await
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        self.set_object_tags(req).await
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        self.delete_object_tags(req).await
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        self.put(req).await
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        self.get(req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.head(req).await
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.delete(req).await
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.delete_many(req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        self.copy(req).await
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        self.list_v1(req).await
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.list_v2(req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        self.list_versions(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.create_upload(req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.put_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.copy_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.complete_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.abort_upload(req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        self.parts_of(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.uploads_of(req).await
    }
}
