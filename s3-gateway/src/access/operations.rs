//! The S3 operations on ACLs and bucket policies: Get/PutBucketAcl,
//! Get/PutObjectAcl, Get/Put/DeleteBucketPolicy, GetBucketPolicyStatus.
//! Who may call each was decided by the access check like any request.

use chuyi_meta_api::model::{Bucket, BucketConfigKind};
use chuyi_meta_api::{ask, order};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::acl::{self, Acl, Given};
use super::policy::Policy;
use crate::buckets::JsonDocument;
use crate::gateway::{check_version_id, Gateway};

impl Gateway {
    pub(crate) async fn bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let stored = self.ask(ask::BucketConfig { bucket: bucket.name.clone(), kind: BucketConfigKind::Acl }).await?;
        let acl = match stored {
            None => Acl::default(),
            Some(bytes) => Acl::decode(&bytes)
                .ok_or_else(|| s3_error!(InternalError, "the bucket's stored ACL does not decode"))?,
        };
        let (owner, grants) = acl.to_document(&bucket.owner);
        Ok(S3Response::new(GetBucketAclOutput { owner: Some(owner), grants: Some(grants) }))
    }

    pub(crate) async fn set_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = &req.input;
        let given = Given {
            canned: input.acl.as_ref().map(|a| a.as_str()),
            read: input.grant_read.as_deref(),
            write: input.grant_write.as_deref(),
            read_acp: input.grant_read_acp.as_deref(),
            write_acp: input.grant_write_acp.as_deref(),
            full_control: input.grant_full_control.as_deref(),
            document: input.access_control_policy.as_ref(),
        };
        let Some(acl) = given.acl(&bucket.owner).map_err(acl::s3_error)? else {
            return Err(s3_error!(MissingSecurityHeader, "the request gives no ACL"));
        };
        self.set_bucket_acl_to(bucket, &acl).await?;
        Ok(S3Response::new(PutBucketAclOutput::default()))
    }

    /// Stores `acl` as the bucket's (the default, private, as none).
    pub(crate) async fn set_bucket_acl_to(&self, bucket: Bucket, acl: &Acl) -> S3Result<()> {
        let document = (!acl.grants.is_empty()).then(|| acl.encode());
        self.set_bucket_document(bucket, BucketConfigKind::Acl, document).await
    }

    pub(crate) async fn object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = &req.input;
        let record = self.object(&bucket.name, &input.key, input.version_id.as_deref()).await?;
        if record.delete_marker {
            return Err(s3_error!(MethodNotAllowed, "a delete marker has no ACL"));
        }
        let (owner, grants) = acl::of_object(&record.data.headers).to_document(&bucket.owner);
        Ok(S3Response::new(GetObjectAclOutput { owner: Some(owner), grants: Some(grants), ..Default::default() }))
    }

    pub(crate) async fn set_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = req.input;
        if let Some(v) = &input.version_id {
            check_version_id(v)?;
        }
        let given = Given {
            write: input.grant_write.as_deref(),
            document: input.access_control_policy.as_ref(),
            ..acl::acl_given!(input)
        };
        let Some(acl) = given.acl(&bucket.owner).map_err(acl::s3_error)? else {
            return Err(s3_error!(MissingSecurityHeader, "the request gives no ACL"));
        };
        let acl = acl::header_value(&acl);
        let order = order::SetObjectAcl { bucket: bucket.name, key: input.key, version_id: input.version_id, acl };
        self.order(order).await?;
        Ok(S3Response::new(PutObjectAclOutput::default()))
    }

    pub(crate) async fn bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).ok();
        let missing = s3_error!(NoSuchBucketPolicy, "The bucket policy does not exist");
        let policy = self.bucket_document(bucket, BucketConfigKind::Policy, text, missing).await?;
        Ok(S3Response::new(GetBucketPolicyOutput { policy: Some(policy) }))
    }

    pub(crate) async fn set_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let text = req.input.policy.into_bytes();
        Policy::parse(&text, &bucket.name).map_err(|e| s3_error!(MalformedPolicy, "{e}"))?;
        self.set_bucket_document(bucket, BucketConfigKind::Policy, Some(text)).await?;
        Ok(S3Response::new(PutBucketPolicyOutput::default()))
    }

    pub(crate) async fn delete_bucket_policy_of(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        self.set_bucket_document(bucket, BucketConfigKind::Policy, None).await?;
        Ok(S3Response::new(DeleteBucketPolicyOutput::default()))
    }

    pub(crate) async fn bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let name = bucket.name.clone();
        let decode = move |bytes: &[u8]| Policy::parse(bytes, &name).ok();
        let missing = s3_error!(NoSuchBucketPolicy, "The bucket policy does not exist");
        let policy = self.bucket_document(bucket, BucketConfigKind::Policy, decode, missing).await?;
        let policy_status = Some(PolicyStatus { is_public: Some(policy.is_public()) });
        Ok(S3Response::new(GetBucketPolicyStatusOutput { policy_status }))
    }
}
