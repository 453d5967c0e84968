//! The gateway's S3 operations on buckets, mapped onto the metadata
//! service's bucket records: create, list, head, delete (only empty),
//! location, versioning, tagging and CORS. A bucket belongs to the user who
//! created it; only that user (or an admin) reaches it.

use chuyi_meta_api::ask;
use chuyi_meta_api::model::{Bucket, BucketConfigKind, Versioning};
use chuyi_meta_api::{MetaError, Request};
use s3s::dto::{
    Bucket as S3Bucket, BucketLocationConstraint, BucketVersioningStatus, CreateBucketInput, CreateBucketOutput,
    DeleteBucketCorsInput, DeleteBucketCorsOutput, DeleteBucketInput, DeleteBucketOutput, DeleteBucketTaggingInput,
    DeleteBucketTaggingOutput, GetBucketCorsInput, GetBucketCorsOutput, GetBucketLocationInput,
    GetBucketLocationOutput, GetBucketTaggingInput, GetBucketTaggingOutput, GetBucketVersioningInput,
    GetBucketVersioningOutput, HeadBucketInput, HeadBucketOutput, ListBucketsInput, ListBucketsOutput, Owner,
    PutBucketCorsInput, PutBucketCorsOutput, PutBucketTaggingInput, PutBucketTaggingOutput, PutBucketVersioningInput,
    PutBucketVersioningOutput,
};
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result};

use crate::access::acl::{self, acl_given, Given};
use crate::auth::canonical_id;
use crate::description::timestamp;
use crate::errors::{meta_error, unavailable};
use crate::gateway::{Gateway, DEFAULT_REGION};
use crate::{cors, tagging};

pub(crate) fn owner(user_name: &str) -> Owner {
    Owner { display_name: Some(user_name.to_string()), id: Some(canonical_id(user_name)) }
}

/// Whether creating a bucket one already owns succeeds: in us-east-1 S3
/// answers 200 and changes nothing (its legacy behaviour, which clients
/// written against it expect); every other region says
/// BucketAlreadyOwnedByYou.
fn owned_again_is_ok(region: &str) -> bool {
    region == "us-east-1"
}

impl Gateway {
    pub(crate) async fn list_buckets_of(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let user = self.user_name(&req)?;
        let buckets = self.meta().ask(ask::Buckets).await.map_err(unavailable)?;
        let prefix = req.input.prefix.as_deref().unwrap_or("");
        let mine = buckets
            .into_iter()
            .filter(|b| b.owner == user && b.name.starts_with(prefix))
            .map(|b| S3Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                bucket_region: Some(self.region.clone()),
            })
            .collect();
        let output = ListBucketsOutput { buckets: Some(mine), owner: Some(owner(&user)), ..Default::default() };
        Ok(S3Response::new(output))
    }

    pub(crate) async fn create_bucket_for(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let user = self.user_name(&req)?;
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
        let object_lock = req.input.object_lock_enabled_for_bucket.unwrap_or(false);
        let input = &req.input;
        let given = Given { write: input.grant_write.as_deref(), ..acl_given!(input) };
        let acl = given.acl(&user).map_err(acl::s3_error)?;
        let command =
            Request::CreateBucket { name: name.clone(), owner: user.clone(), pool: self.pool.clone(), object_lock };
        match self.meta().write(command).await {
            Ok(_) => {
                if let Some(acl) = acl.filter(|a| !a.grants.is_empty()) {
                    self.set_bucket_acl_to(self.ask(ask::Bucket(name.clone())).await?, &acl).await?;
                }
                Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) }))
            }
            Err(MetaError::AlreadyExists { .. }) => match self.ask(ask::Bucket(name.clone())).await {
                Ok(b) if b.owner == user && owned_again_is_ok(&self.region) => {
                    Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) }))
                }
                Ok(b) if b.owner == user => Err(s3_error!(BucketAlreadyOwnedByYou)),
                _ => Err(s3_error!(BucketAlreadyExists)),
            },
            Err(MetaError::Invalid { why, .. }) => Err(s3_error!(InvalidBucketName, "{why}")),
            Err(e) => Err(meta_error(e)),
        }
    }

    pub(crate) async fn head_bucket_of(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.request_bucket(&req, &req.input.bucket).await?;
        let output = HeadBucketOutput { bucket_region: Some(self.region.clone()), ..Default::default() };
        Ok(S3Response::new(output))
    }

    pub(crate) async fn delete_bucket_of(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        match self.meta().write(Request::DeleteBucket { name: bucket.name }).await {
            Ok(_) => Ok(S3Response::new(DeleteBucketOutput::default())),
            Err(MetaError::BucketNotEmpty(_)) => Err(s3_error!(BucketNotEmpty)),
            Err(MetaError::NotFound { .. }) => Err(s3_error!(NoSuchBucket)),
            Err(e) => Err(meta_error(e)),
        }
    }

    pub(crate) async fn bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.request_bucket(&req, &req.input.bucket).await?;
        // us-east-1 is reported as no constraint at all, as S3 does.
        let location_constraint =
            (self.region != DEFAULT_REGION).then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint }))
    }

    pub(crate) async fn bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let status = match bucket.versioning {
            Versioning::Unset => None,
            Versioning::Enabled => Some(BucketVersioningStatus::from_static(BucketVersioningStatus::ENABLED)),
            Versioning::Suspended => Some(BucketVersioningStatus::from_static(BucketVersioningStatus::SUSPENDED)),
        };
        Ok(S3Response::new(GetBucketVersioningOutput { status, ..Default::default() }))
    }

    pub(crate) async fn set_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        // Saying MFA delete is off is what many tools send; only turning it
        // on is refused.
        if req
            .input
            .versioning_configuration
            .mfa_delete
            .as_ref()
            .is_some_and(|m| m.as_str() != s3s::dto::MFADelete::DISABLED)
        {
            return Err(s3_error!(NotImplemented, "MFA delete is not supported"));
        }
        let versioning = match req.input.versioning_configuration.status.as_ref().map(|s| s.as_str()) {
            Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
            other => {
                return Err(s3_error!(MalformedXML, "versioning status must be Enabled or Suspended, not {other:?}"))
            }
        };
        self.write(Request::SetVersioning { bucket: bucket.name, versioning }).await?;
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }
}

/// A bucket configuration the gateway keeps in its own form, stored as
/// JSON (CORS rules, lifecycle rules).
pub(crate) trait JsonDocument: serde::Serialize + serde::de::DeserializeOwned {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Reading and writing a bucket's configuration documents.
impl Gateway {
    /// The bucket's document of `kind`, decoded; `missing` (S3's NoSuch…)
    /// when it has none.
    pub(crate) async fn bucket_document<T>(
        &self,
        bucket: Bucket,
        kind: BucketConfigKind,
        decode: impl FnOnce(&[u8]) -> Option<T>,
        missing: S3Error,
    ) -> S3Result<T> {
        let Some(document) = self.ask(ask::BucketConfig { bucket: bucket.name, kind }).await? else {
            return Err(missing);
        };
        decode(&document).ok_or_else(|| {
            s3_error!(InternalError, "the bucket's stored {} configuration does not decode", kind.name())
        })
    }

    /// Stores (`Some`) or removes (`None`) the bucket's document of `kind`.
    pub(crate) async fn set_bucket_document(
        &self,
        bucket: Bucket,
        kind: BucketConfigKind,
        document: Option<Vec<u8>>,
    ) -> S3Result<()> {
        let name = bucket.name.clone();
        self.write(Request::SetBucketConfig { bucket: bucket.name, kind, document }).await?;
        // This gateway's requests see the change at once; others' within
        // documents::FRESH.
        match kind {
            BucketConfigKind::Policy => self.access.policies.forget(&name),
            BucketConfigKind::Acl => self.access.acls.forget(&name),
            BucketConfigKind::Lifecycle => self.lifecycles.forget(&name),
            BucketConfigKind::Encryption => self.encryptions.forget(&name),
            BucketConfigKind::Tagging | BucketConfigKind::Cors | BucketConfigKind::LifecycleProgress => {}
        }
        Ok(())
    }
}

/// Bucket tagging: Get/Put/DeleteBucketTagging, kept as the bucket's
/// `tagging` document.
impl Gateway {
    pub(crate) async fn bucket_tags(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let decode = |d: &[u8]| std::str::from_utf8(d).ok().and_then(tagging::decode);
        let missing = s3_error!(NoSuchTagSet, "The TagSet does not exist");
        let tags = self.bucket_document(bucket, BucketConfigKind::Tagging, decode, missing).await?;
        Ok(S3Response::new(GetBucketTaggingOutput { tag_set: tagging::to_document(tags) }))
    }

    pub(crate) async fn set_bucket_tags(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let tags = tagging::from_document(req.input.tagging, tagging::BUCKET_TAGS_MAX)?;
        let document = Some(tagging::encode(&tags).into_bytes());
        self.set_bucket_document(bucket, BucketConfigKind::Tagging, document).await?;
        Ok(S3Response::new(PutBucketTaggingOutput::default()))
    }

    pub(crate) async fn delete_bucket_tags(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        self.set_bucket_document(bucket, BucketConfigKind::Tagging, None).await?;
        Ok(S3Response::new(DeleteBucketTaggingOutput::default()))
    }
}

/// Bucket CORS: Get/Put/DeleteBucketCors, kept as the bucket's `cors`
/// document (JSON of [`cors::Config`]).
impl Gateway {
    pub(crate) async fn bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let missing = s3_error!(NoSuchCORSConfiguration, "The CORS configuration does not exist");
        let config = self.bucket_document(bucket, BucketConfigKind::Cors, cors::Config::decode, missing).await?;
        Ok(S3Response::new(GetBucketCorsOutput { cors_rules: Some(config.to_document()) }))
    }

    pub(crate) async fn set_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let config = cors::Config::from_document(req.input.cors_configuration)?;
        self.set_bucket_document(bucket, BucketConfigKind::Cors, Some(config.encode())).await?;
        Ok(S3Response::new(PutBucketCorsOutput::default()))
    }

    pub(crate) async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        self.set_bucket_document(bucket, BucketConfigKind::Cors, None).await?;
        Ok(S3Response::new(DeleteBucketCorsOutput::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creating_an_owned_bucket_again_succeeds_only_in_us_east_1() {
        assert!(owned_again_is_ok("us-east-1"));
        assert!(!owned_again_is_ok("cn-north-1"));
    }
}
