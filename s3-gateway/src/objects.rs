//! Object operations: PUT, GET, HEAD, DELETE, DeleteObjects and
//! CopyObject. Data goes through [`crate::data`]; the version record is
//! written to the object index only once the data is on every replica, so
//! an object is never visible before its bytes are durable, and an upload
//! that fails leaves nothing but garbage for the reclaimer.

use chuyi_meta_api::model::{Bucket, ObjectPut, ObjectRecord, Versioning, WriteCondition, NULL_VERSION, OBJECT_FRAMED};
use chuyi_meta_api::order::{self, Deleted};
use chuyi_meta_api::MetaError;
use http::{HeaderMap, HeaderValue};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result};

use crate::access::acl::{self, acl_given, Given};
use crate::access::check::{granted, Granted};
use crate::conditions::{copy_source_conditions, read_conditions, write_condition, Conditions, Unchanged};
use crate::data::{Written, OBJECT_PUT_MAX_BYTES};
use crate::description::{
    hasher_for, header_checksums, keep_checksums, overrides, returned, sent_checksums, timestamp, verify_checksums,
    verify_md5, with_checksums, without_checksums, Headers, Returned,
};
use crate::encryption::{copy_source_customer_key, keep_customer_key, request_customer_key, returned_sse, CustomerKey};
use crate::errors::meta_error;
use crate::frames::{Codec, Spec};
use crate::gateway::{check_version_id, Gateway};
use crate::object_lock::{lock_headers, LockHeaders};
use crate::sse::{Seal, Sealing};
use crate::tagging;

/// Keys one DeleteObjects may name, as S3.
pub const DELETE_OBJECTS_MAX: usize = 1000;

/// The version id a response reports: none for a bucket that never had
/// versioning, else the version's (`null` included).
pub(crate) fn reported_version(bucket: &Bucket, version_id: &str) -> Option<String> {
    (bucket.versioning != Versioning::Unset || version_id != NULL_VERSION).then(|| version_id.to_string())
}

pub(crate) fn etag(hex: &str) -> ETag {
    ETag::Strong(hex.to_string())
}

/// The error for reading a delete marker: 404 for the latest version, 405
/// when asked for by version id, with the headers that say it is a marker.
fn delete_marker_error(record: &ObjectRecord, by_version: bool) -> S3Error {
    let mut e = if by_version {
        s3_error!(MethodNotAllowed, "the version is a delete marker")
    } else {
        s3_error!(NoSuchKey, "the object's latest version is a delete marker")
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-amz-delete-marker", HeaderValue::from_static("true"));
    if let Ok(v) = HeaderValue::from_str(&record.version_id) {
        headers.insert("x-amz-version-id", v);
    }
    e.set_headers(headers);
    e
}

/// The output of a GET or HEAD (`$ty`, with its own `fields`): the
/// object's headers as [`returned`] gives them, its ETag, time and version,
/// and the part of it `$range` covers. A checksum is of the whole object,
/// so a range does not carry it.
macro_rules! object_output {
    ($ty:path { $($field:ident: $value:expr),* $(,)? }, $returned:expr, $record:expr, $bucket:expr, $range:expr) => {{
        let r: Returned = $returned;
        let record: &ObjectRecord = $record;
        let range: Option<std::ops::Range<u64>> = $range;
        let size = record.data.size;
        let sums = if range.is_none() { r.checksums } else { Checksum::default() };
        let checksum_type = sums.checksum_type.clone();
        let lock = crate::object_lock::returned(&record.data);
        let sse = crate::encryption::returned_sse(&record.data);
        with_checksums!(
            $ty {
                $($field: $value,)*
                server_side_encryption: sse.server_side_encryption,
                sse_customer_algorithm: sse.sse_customer_algorithm,
                sse_customer_key_md5: sse.sse_customer_key_md5,
                checksum_type: checksum_type,
                accept_ranges: Some("bytes".into()),
                content_length: Some(range.as_ref().map_or(size, |r| r.end - r.start) as i64),
                content_range: range.map(|r| format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1))),
                content_type: r.content_type,
                cache_control: r.cache_control,
                content_disposition: r.content_disposition,
                content_encoding: r.content_encoding,
                content_language: r.content_language,
                expires: r.expires,
                metadata: r.metadata,
                e_tag: Some(etag(&record.data.etag)),
                last_modified: Some(timestamp(record.modified_ms)),
                version_id: reported_version($bucket, &record.version_id),
                object_lock_mode: lock.0,
                object_lock_retain_until_date: lock.1,
                object_lock_legal_hold_status: lock.2,
            },
            sums
        )
    }};
}

/// A request body to store, with what the request says of it.
#[derive(Debug)]
pub(crate) struct Body {
    pub(crate) len: u64,
    pub(crate) stream: Option<StreamingBlob>,
    /// The checksums sent as headers (trailers come once it is read).
    pub(crate) sent: Checksum,
    /// The checksum algorithm the request names.
    pub(crate) algorithm: Option<String>,
    pub(crate) content_md5: Option<String>,
    /// How it is framed (compressed, sealed) when stored; neither: as sent.
    pub(crate) spec: Spec,
}

/// The codec `len` bytes written into `bucket` are framed with: its
/// compression policy's, for objects with data.
pub(crate) fn codec_for(bucket: &Bucket, len: u64) -> Option<Codec> {
    Codec::of_policy(bucket.settings.compression.as_deref()).filter(|_| len > 0)
}

/// How `len` bytes written into `bucket` are framed, sealed as `sealing`
/// says; the flags it gives `object` (an empty object has no frames, only
/// the flag that says it is encrypted).
pub(crate) fn spec_for(
    bucket: &Bucket,
    len: u64,
    sealing: Option<&(Sealing, Seal)>,
    customer: Option<&CustomerKey>,
    object: &mut ObjectPut,
) -> Spec {
    let spec = Spec { codec: codec_for(bucket, len), seal: sealing.filter(|_| len > 0).map(|(_, seal)| seal.clone()) };
    if spec.framed() {
        object.flags |= OBJECT_FRAMED;
    }
    if let Some((sealing, _)) = sealing {
        object.flags |= sealing.flag();
    }
    if let Some(customer) = customer {
        keep_customer_key(object, customer);
    }
    spec
}

/// The bytes a Range asks for, within an object of `size` bytes.
fn checked_range(range: Option<&Range>, size: u64) -> S3Result<Option<std::ops::Range<u64>>> {
    range
        .map(|r| r.check(size).map_err(|_| s3_error!(InvalidRange, "the range is not within {size} bytes")))
        .transpose()
}

/// The declared length of a request body.
pub(crate) fn body_length(content_length: Option<i64>, body: Option<&StreamingBlob>) -> S3Result<u64> {
    use s3s::stream::ByteStream as _;
    let declared = match content_length {
        Some(n) => Some(n),
        None => body.and_then(|b| b.remaining_length().exact()).map(|n| n as i64),
    };
    match declared {
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "a negative Content-Length")),
        Some(n) => Ok(n as u64),
        None if body.is_none() => Ok(0),
        None => Err(s3_error!(MissingContentLength)),
    }
}

impl Gateway {
    /// Writes a request body as new object data (a whole object's, packed
    /// when small, or a part's): the run, its MD5 and the checksums, each
    /// verified against what the client sent.
    pub(crate) async fn receive(
        &self,
        bucket: &Bucket,
        whole_object: bool,
        body: Body,
        headers: &HeaderMap,
        trailers: Option<&s3s::TrailingHeaders>,
    ) -> S3Result<(Written, Checksum)> {
        // Sent but empty is a bad digest to S3 (the request layer reads
        // it as absent), refused before any byte is stored.
        if headers.get("content-md5").is_some_and(|v| v.is_empty()) {
            return Err(s3_error!(InvalidDigest, "Content-MD5 is empty"));
        }
        let hasher = hasher_for(headers, &body.sent, body.algorithm.as_deref());
        let stream = body
            .stream
            .unwrap_or_else(|| StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>()));
        let written = if whole_object {
            self.data.write_object(&bucket.pool, body.len, stream, hasher, &body.spec).await?
        } else {
            self.data.write(&bucket.pool, body.len, stream, hasher, &body.spec).await?
        };
        verify_md5(body.content_md5.as_deref(), &written.md5)?;
        let trailing = trailers.and_then(|t| t.take());
        let sent = sent_checksums(body.sent, trailing.as_ref());
        verify_checksums(&sent, &written.checksums)?;
        let computed = written.checksums.clone();
        Ok((written, computed))
    }

    pub(crate) async fn put(&self, mut req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = &mut req.input;
        let customer = request_customer_key!(input);
        let sealing = self.write_sealing(&bucket, input.server_side_encryption.as_ref(), customer.as_ref()).await?;
        let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let len = body_length(input.content_length, input.body.as_ref())?;
        if len > OBJECT_PUT_MAX_BYTES {
            return Err(s3_error!(EntityTooLarge, "{len} bytes; one PUT is at most {OBJECT_PUT_MAX_BYTES}"));
        }
        let headers = Headers {
            content_type: input.content_type.take(),
            cache_control: input.cache_control.take(),
            content_disposition: input.content_disposition.take(),
            content_encoding: input.content_encoding.take(),
            content_language: input.content_language.take(),
            expires: input.expires.take(),
            metadata: input.metadata.take(),
            tagging: input.tagging.take(),
        };
        let mut object = headers.describe()?;
        self.lock_from_headers(&bucket, &mut object, lock_headers!(input)).await?;
        given_acl(&bucket, &mut object, acl_given!(input))?;
        let sent = header_checksums!(input);
        let body = Body {
            len,
            stream: input.body.take(),
            sent,
            algorithm: input.checksum_algorithm.as_ref().map(|a| a.as_str().to_string()),
            content_md5: input.content_md5.take(),
            spec: spec_for(&bucket, len, sealing.as_ref(), customer.as_ref(), &mut object),
        };
        let (written, sums) = self.receive(&bucket, true, body, &req.headers, req.trailing_headers.as_ref()).await?;
        keep_checksums(&mut object, &sums);
        let etag_hex = chuyi_common::secret::hex(&written.md5);
        object.size = len;
        object.etag = etag_hex.clone();
        let now = chuyi_common::clock::unix_ms();
        let expiration = self.expiration_of(&bucket.name, &input.key, &object, now).await;
        let sse = returned_sse(&object);
        // An empty object has no data: its reservation goes back at once.
        let written = (len > 0).then(|| {
            object.data = vec![written.run.run];
            written
        });
        let version_id = self.commit(&bucket, &input.key, object, written, condition).await?;
        // A single PUT's checksum is always of the whole object.
        let checksum_type = (sums != Checksum::default()).then(|| ChecksumType::from_static(ChecksumType::FULL_OBJECT));
        let output = with_checksums!(
            PutObjectOutput {
                e_tag: Some(etag(&etag_hex)),
                version_id: reported_version(&bucket, &version_id),
                expiration: expiration,
                checksum_type: checksum_type,
                server_side_encryption: sse.server_side_encryption,
                sse_customer_algorithm: sse.sse_customer_algorithm,
                sse_customer_key_md5: sse.sse_customer_key_md5
            },
            sums
        );
        Ok(S3Response::new(output))
    }

    /// The storage class S3 reports: none for the bucket's own pool (S3's
    /// STANDARD), else the name of the pool a transition moved it to.
    fn storage_class(&self, bucket: &Bucket, record: &ObjectRecord) -> Option<StorageClass> {
        let owner = record.data.data.first()?.owner;
        let map = self.data.cluster().map();
        let pool = map.pools.iter().find(|p| p.id == chuyi_common::map::pool_of(owner))?;
        (pool.name != bucket.pool).then(|| StorageClass::from(pool.name.to_ascii_uppercase()))
    }

    /// `x-amz-expiration` of a GET or HEAD: only the current version (read
    /// without a version id) has one.
    async fn current_expiration(
        &self,
        bucket: &Bucket,
        key: &str,
        version_id: Option<&str>,
        record: &ObjectRecord,
    ) -> Option<String> {
        if version_id.is_some() {
            return None;
        }
        self.expiration_of(&bucket.name, key, &record.data, record.modified_ms).await
    }

    /// The version a GET or HEAD reads, checked against its conditions.
    async fn readable(
        &self,
        bucket: &Bucket,
        key: &str,
        version_id: Option<&str>,
        conditions: Conditions<'_>,
    ) -> S3Result<ObjectRecord> {
        let record = self.object(&bucket.name, key, version_id).await?;
        if record.delete_marker {
            return Err(delete_marker_error(&record, version_id.is_some()));
        }
        conditions.check(&record.data.etag, record.modified_ms, Unchanged::NotModified)?;
        Ok(record)
    }

    pub(crate) async fn get(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = req.input;
        let customer = request_customer_key!(input);
        if input.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "GET by part number is not supported"));
        }
        let conditions = read_conditions!(input);
        let record = self.readable(&bucket, &input.key, input.version_id.as_deref(), conditions).await?;
        let size = record.data.size;
        let range = checked_range(input.range.as_ref(), size)?;
        let key = self.read_key(&bucket, &record.data, customer.as_ref())?;
        let body = self.data.read_object(&record.data, range.clone().unwrap_or(0..size), key).await?;
        let headers = returned(&record.data, overrides!(input));
        let tag_count = tagging::count(&record.data);
        let expiration = self.current_expiration(&bucket, &input.key, input.version_id.as_deref(), &record).await;
        let storage_class = self.storage_class(&bucket, &record);
        let output = object_output!(
            GetObjectOutput {
                body: Some(body),
                tag_count: tag_count,
                expiration: expiration,
                storage_class: storage_class
            },
            headers,
            &record,
            &bucket,
            range
        );
        Ok(S3Response::new(output))
    }

    pub(crate) async fn head(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = req.input;
        let customer = request_customer_key!(input);
        let conditions = read_conditions!(input);
        let record = self.readable(&bucket, &input.key, input.version_id.as_deref(), conditions).await?;
        self.check_customer_key(&record.data, customer.as_ref())?;
        let size = record.data.size;
        let range = checked_range(input.range.as_ref(), size)?;
        let headers = returned(&record.data, overrides!(input));
        let parts_count = (record.data.parts > 0).then_some(record.data.parts as i32);
        let expiration = self.current_expiration(&bucket, &input.key, input.version_id.as_deref(), &record).await;
        let storage_class = self.storage_class(&bucket, &record);
        let output = object_output!(
            HeadObjectOutput { parts_count: parts_count, expiration: expiration, storage_class: storage_class },
            headers,
            &record,
            &bucket,
            range
        );
        Ok(S3Response::new(output))
    }

    /// Deletes `key` (or one version of it) as S3 does: a missing key or
    /// version is not an error.
    async fn delete_one(
        &self,
        bucket: &Bucket,
        key: &str,
        version_id: Option<&str>,
        bypass_governance: bool,
    ) -> S3Result<DeletedObject> {
        if let Some(v) = version_id {
            check_version_id(v)?;
        }
        let delete = order::DeleteObject {
            bucket: bucket.name.clone(),
            key: key.into(),
            version_id: version_id.map(Into::into),
            bypass_governance,
        };
        let (version_id, delete_marker) = match self.meta().order(delete).await {
            Ok(Deleted { version_id, delete_marker }) => (version_id, delete_marker),
            Err(MetaError::NotFound { kind: chuyi_meta_api::Kind::Version, .. }) => {
                (version_id.map(String::from), false)
            }
            Err(e) => return Err(meta_error(e)),
        };
        let version_id = version_id.and_then(|v| reported_version(bucket, &v));
        Ok(DeletedObject {
            key: Some(key.into()),
            delete_marker: delete_marker.then_some(true),
            delete_marker_version_id: if delete_marker { version_id.clone() } else { None },
            version_id,
        })
    }

    pub(crate) async fn delete(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let bypass = req.input.bypass_governance_retention.unwrap_or(false);
        let version_id = req.input.version_id.as_deref();
        self.may_bypass(granted(&req)?, bypass, &bucket, &req.input.key, version_id).await?;
        let deleted = self.delete_one(&bucket, &req.input.key, req.input.version_id.as_deref(), bypass).await?;
        Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: deleted.delete_marker,
            version_id: deleted.version_id,
            ..Default::default()
        }))
    }

    pub(crate) async fn delete_many(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let objects = &req.input.delete.objects;
        if objects.is_empty() || objects.len() > DELETE_OBJECTS_MAX {
            return Err(s3_error!(
                MalformedXML,
                "a delete names 1 to {DELETE_OBJECTS_MAX} keys, not {}",
                objects.len()
            ));
        }
        let quiet = req.input.delete.quiet.unwrap_or(false);
        let bypass = req.input.bypass_governance_retention.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        let granted = granted(&req)?;
        for object in objects {
            let version_id = object.version_id.as_deref();
            // Each key is decided as a DeleteObject of it: a policy may
            // deny some keys of the bucket and not others.
            let allowed = match self.access.also(granted, "DeleteObject", &bucket, &object.key, version_id).await {
                Ok(()) => self.may_bypass(granted, bypass, &bucket, &object.key, version_id).await,
                refused => refused,
            };
            match allowed {
                Err(e) => errors.push(delete_error(e, object)),
                Ok(()) => match self.delete_one(&bucket, &object.key, version_id, bypass).await {
                    Ok(d) if !quiet => deleted.push(d),
                    Ok(_) => {}
                    Err(e) => errors.push(delete_error(e, object)),
                },
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    /// With `x-amz-bypass-governance-retention` (`bypass`), whether the
    /// caller may also bypass a Governance retention of that version:
    /// `s3:BypassGovernanceRetention`, which the bucket's owner, an
    /// administrator or a policy grants, never an ACL. Sending the header
    /// without it is AccessDenied, as S3 answers, and changes nothing.
    pub(crate) async fn may_bypass(
        &self,
        granted: &Granted,
        bypass: bool,
        bucket: &Bucket,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<()> {
        if !bypass {
            return Ok(());
        }
        self.access.also(granted, "BypassGovernanceRetention", bucket, key, version_id).await
    }

    /// The source of a copy: an object the caller may read, checked
    /// against the copy-source conditions (which fail with 412, never 304).
    pub(crate) async fn copy_source(
        &self,
        granted: &Granted,
        source: &CopySource,
        conditions: Conditions<'_>,
    ) -> S3Result<(Bucket, String, ObjectRecord)> {
        let CopySource::Bucket { bucket, key, version_id } = source else {
            return Err(s3_error!(NotImplemented, "copy sources are bucket/key"));
        };
        let source_bucket = self.ask(chuyi_meta_api::ask::Bucket(bucket.to_string())).await?;
        self.access.also(granted, "GetObject", &source_bucket, key, version_id.as_deref()).await?;
        let record = self.object(&source_bucket.name, key, version_id.as_deref()).await?;
        if record.delete_marker {
            return Err(if version_id.is_some() {
                s3_error!(InvalidRequest, "the source version is a delete marker")
            } else {
                s3_error!(NoSuchKey, "the source's latest version is a delete marker")
            });
        }
        conditions.check(&record.data.etag, record.modified_ms, Unchanged::PreconditionFailed)?;
        Ok((source_bucket, key.to_string(), record))
    }

    pub(crate) async fn copy(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let granted = granted(&req)?.clone();
        let input = req.input;
        let customer = request_customer_key!(input);
        let source_customer = copy_source_customer_key!(input);
        let sealing = self.write_sealing(&bucket, input.server_side_encryption.as_ref(), customer.as_ref()).await?;
        let conditions = copy_source_conditions!(input);
        let (source_bucket, source_key, source) = self.copy_source(&granted, &input.copy_source, conditions).await?;
        let source_key_bytes = self.read_key(&source_bucket, &source.data, source_customer.as_ref())?;
        let replace = match input.metadata_directive.as_ref().map(|d| d.as_str()) {
            None | Some(MetadataDirective::COPY) => false,
            Some(MetadataDirective::REPLACE) => true,
            Some(other) => return Err(s3_error!(InvalidArgument, "unknown metadata directive {other}")),
        };
        // A copy of an older version onto its own key is S3's way to
        // restore it; only the current version copied onto itself changes
        // nothing.
        let names_version = matches!(&input.copy_source, CopySource::Bucket { version_id: Some(_), .. });
        let same_key = source_bucket.name == bucket.name && source_key == input.key;
        let same_object = same_key
            && (!names_version
                || self.object(&bucket.name, &source_key, None).await.is_ok_and(|current| current.seq == source.seq));
        let reencrypted = input.server_side_encryption.is_some() || customer.is_some();
        if same_object && !replace && !reencrypted {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the \
                 object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let size = source.data.size;
        if size > OBJECT_PUT_MAX_BYTES {
            return Err(s3_error!(
                InvalidRequest,
                "the copy source is {size} bytes, more than the {OBJECT_PUT_MAX_BYTES} a copy may be"
            ));
        }
        let mut object = if replace {
            Headers {
                content_type: input.content_type,
                cache_control: input.cache_control,
                content_disposition: input.content_disposition,
                content_encoding: input.content_encoding,
                content_language: input.content_language,
                expires: input.expires,
                metadata: input.metadata,
                tagging: None,
            }
            .describe()?
        } else {
            without_checksums(&source.data)
        };
        // Tags follow their own directive: the source's unless REPLACE.
        let tags = match input.tagging_directive.as_ref().map(|d| d.as_str()) {
            None | Some(TaggingDirective::COPY) => tagging::of_object(&source.data),
            Some(TaggingDirective::REPLACE) => match input.tagging.as_deref() {
                Some(header) => tagging::from_header(header)?,
                None => Vec::new(),
            },
            Some(other) => return Err(s3_error!(InvalidArgument, "unknown tagging directive {other}")),
        };
        tagging::set_on(&mut object, &tags);
        given_acl(&bucket, &mut object, acl_given!(input))?;
        // A copy's lock is its own (the request's headers, or the target
        // bucket's default), never the source's.
        object.set_retention(None);
        object.set_legal_hold(false);
        self.lock_from_headers(&bucket, &mut object, lock_headers!(input)).await?;
        let written = if size > 0 {
            let body = self.data.read_object(&source.data, 0..size, source_key_bytes).await?;
            let spec = spec_for(&bucket, size, sealing.as_ref(), customer.as_ref(), &mut object);
            let written = self.data.write_object(&bucket.pool, size, body, Default::default(), &spec).await?;
            let md5 = chuyi_common::secret::hex(&written.md5);
            object.etag = md5;
            object.data = vec![written.run.run];
            Some(written)
        } else {
            spec_for(&bucket, size, sealing.as_ref(), customer.as_ref(), &mut object);
            object.etag = source.data.etag.clone();
            None
        };
        if size > 0 && source.data.parts == 0 && object.etag != source.data.etag {
            return Err(s3_error!(InternalError, "the copy does not read back as its source"));
        }
        object.size = size;
        let etag_hex = object.etag.clone();
        let sse = returned_sse(&object);
        let version_id = self.commit(&bucket, &input.key, object, written, None).await?;
        let output = CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&etag_hex)),
                last_modified: Some(Timestamp::from(chuyi_common::clock::wall())),
                ..Default::default()
            }),
            copy_source_version_id: reported_version(&source_bucket, &source.version_id),
            version_id: reported_version(&bucket, &version_id),
            server_side_encryption: sse.server_side_encryption,
            sse_customer_algorithm: sse.sse_customer_algorithm,
            sse_customer_key_md5: sse.sse_customer_key_md5,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    /// Writes the version record of `object`, claiming its written data
    /// (which is abandoned instead when the record is refused, a failed
    /// `condition` included).
    async fn commit(
        &self,
        bucket: &Bucket,
        key: &str,
        object: ObjectPut,
        written: Option<Written>,
        condition: Option<WriteCondition>,
    ) -> S3Result<String> {
        let put =
            self.order(order::PutObject { bucket: bucket.name.clone(), key: key.into(), object, condition }).await?;
        let version_id = put.version_id;
        if let Some(written) = written {
            written.run.claimed();
        }
        Ok(version_id)
    }
}

impl Gateway {
    /// Sets the lock a write's headers ask for on the new version; a
    /// bucket without object lock takes none (S3's InvalidRequest).
    pub(crate) async fn lock_from_headers(
        &self,
        bucket: &Bucket,
        object: &mut ObjectPut,
        headers: LockHeaders<'_>,
    ) -> S3Result<()> {
        if headers.mode.is_none() && headers.until.is_none() && headers.hold.is_none() {
            return Ok(());
        }
        self.object_lock_of(bucket).await?;
        crate::object_lock::apply_headers(object, headers, chuyi_common::clock::unix_ms())
    }
}

/// The attributes GetObjectAttributes may ask for.
const ATTRIBUTES: [&str; 5] = [
    ObjectAttributes::ETAG,
    ObjectAttributes::CHECKSUM,
    ObjectAttributes::OBJECT_PARTS,
    ObjectAttributes::OBJECT_SIZE,
    ObjectAttributes::STORAGE_CLASS,
];
/// Parts listed per GetObjectAttributes page at most.
const ATTRIBUTE_PARTS_MAX: i32 = 1000;

/// One page of a multipart object's parts (numbers from 1, sizes from its
/// data runs, one per part): those numbered above `marker`, at most `max`.
fn parts_page(part_sizes: &[u64], marker: i32, max: i32) -> GetObjectAttributesParts {
    let from = usize::try_from(marker.max(0)).unwrap_or(0).min(part_sizes.len());
    let take = usize::try_from(max.clamp(0, ATTRIBUTE_PARTS_MAX)).unwrap_or(0);
    let shown: Vec<ObjectPart> = part_sizes[from..]
        .iter()
        .take(take)
        .enumerate()
        .map(|(i, &size)| ObjectPart {
            part_number: Some((from + i + 1) as i32),
            size: Some(size as i64),
            ..Default::default()
        })
        .collect();
    let last = from + shown.len();
    let truncated = last < part_sizes.len();
    GetObjectAttributesParts {
        is_truncated: Some(truncated),
        max_parts: Some(take as i32),
        next_part_number_marker: truncated.then_some(last as i32),
        part_number_marker: Some(from as i32),
        parts: Some(shown),
        total_parts_count: Some(part_sizes.len() as i32),
    }
}

impl Gateway {
    /// GetObjectAttributes: what a HEAD tells and a multipart object's
    /// parts, only the attributes asked for.
    pub(crate) async fn attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = req.input;
        let customer = request_customer_key!(input);
        // One header, its names comma-separated (s3s hands it over whole).
        let asked: Vec<&str> = input
            .object_attributes
            .iter()
            .flat_map(|a| a.as_str().split(','))
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if asked.is_empty() {
            return Err(s3_error!(InvalidArgument, "x-amz-object-attributes names no attribute"));
        }
        if let Some(bad) = asked.iter().find(|a| !ATTRIBUTES.contains(a)) {
            return Err(s3_error!(InvalidArgument, "Invalid attribute name specified: {bad}"));
        }
        let record = self.readable(&bucket, &input.key, input.version_id.as_deref(), Conditions::default()).await?;
        self.check_customer_key(&record.data, customer.as_ref())?;
        let wants = |a: &str| asked.contains(&a);
        let data = &record.data;
        let parts = (data.parts > 0).then(|| {
            let sizes = crate::data::part_sizes(data).unwrap_or_default();
            parts_page(&sizes, input.part_number_marker.unwrap_or(0), input.max_parts.unwrap_or(ATTRIBUTE_PARTS_MAX))
        });
        let sums = returned(data, Default::default()).checksums;
        let checksum = sums != Checksum::default();
        Ok(S3Response::new(GetObjectAttributesOutput {
            e_tag: wants(ObjectAttributes::ETAG).then(|| etag(&data.etag)),
            object_size: wants(ObjectAttributes::OBJECT_SIZE).then_some(data.size as i64),
            storage_class: wants(ObjectAttributes::STORAGE_CLASS)
                .then(|| StorageClass::from_static(StorageClass::STANDARD)),
            checksum: (wants(ObjectAttributes::CHECKSUM) && checksum).then_some(sums),
            object_parts: if wants(ObjectAttributes::OBJECT_PARTS) { parts } else { None },
            last_modified: Some(timestamp(record.modified_ms)),
            version_id: reported_version(&bucket, &record.version_id),
            ..Default::default()
        }))
    }
}

/// Object tagging: Get/Put/DeleteObjectTagging.
impl Gateway {
    pub(crate) async fn object_tags(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = &req.input;
        let record = self.object(&bucket.name, &input.key, input.version_id.as_deref()).await?;
        if record.delete_marker {
            return Err(delete_marker_error(&record, input.version_id.is_some()));
        }
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: tagging::to_document(tagging::of_object(&record.data)),
            version_id: reported_version(&bucket, &record.version_id),
        }))
    }

    pub(crate) async fn set_object_tags(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = req.input;
        let tags = tagging::from_document(input.tagging, tagging::OBJECT_TAGS_MAX)?;
        let version_id = self.write_tags(&bucket, input.key, input.version_id, &tags).await?;
        Ok(S3Response::new(PutObjectTaggingOutput { version_id }))
    }

    pub(crate) async fn delete_object_tags(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = req.input;
        let version_id = self.write_tags(&bucket, input.key, input.version_id, &Vec::new()).await?;
        Ok(S3Response::new(DeleteObjectTaggingOutput { version_id }))
    }

    /// Replaces a version's tags; the version id to report.
    async fn write_tags(
        &self,
        bucket: &Bucket,
        key: String,
        version_id: Option<String>,
        tags: &tagging::Tags,
    ) -> S3Result<Option<String>> {
        if let Some(v) = version_id.as_deref() {
            check_version_id(v)?;
        }
        let order = order::SetObjectTags { bucket: bucket.name.clone(), key, version_id, tags: tagging::encode(tags) };
        let put = self.order(order).await?;
        Ok(reported_version(bucket, &put.version_id))
    }
}

/// Keeps the ACL a write's headers give in the new version (none given:
/// private, S3's default; a copy does not take its source's).
pub(crate) fn given_acl(bucket: &Bucket, object: &mut ObjectPut, given: Given<'_>) -> S3Result<()> {
    if let Some(acl) = given.acl(&bucket.owner).map_err(acl::s3_error)? {
        acl::set_on_object(&mut object.headers, &acl);
    }
    Ok(())
}

/// A key of a DeleteObjects that failed, as its answer lists it.
fn delete_error(e: S3Error, object: &ObjectIdentifier) -> Error {
    Error {
        code: Some(e.code().as_str().to_string()),
        key: Some(object.key.clone()),
        message: e.message().map(String::from),
        version_id: object.version_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_pages_number_from_one_and_say_where_to_go_on() {
        let sizes = [5, 5, 3];
        let first = parts_page(&sizes, 0, 2);
        let numbers = |p: &GetObjectAttributesParts| {
            p.parts.iter().flatten().map(|x| (x.part_number, x.size)).collect::<Vec<_>>()
        };
        assert_eq!(numbers(&first), vec![(Some(1), Some(5)), (Some(2), Some(5))]);
        assert_eq!(
            (first.is_truncated, first.next_part_number_marker, first.total_parts_count),
            (Some(true), Some(2), Some(3))
        );
        let rest = parts_page(&sizes, 2, 1000);
        assert_eq!(numbers(&rest), vec![(Some(3), Some(3))]);
        assert_eq!((rest.is_truncated, rest.next_part_number_marker), (Some(false), None));
        assert!(numbers(&parts_page(&sizes, 9, 10)).is_empty(), "past the end");
        assert_eq!(parts_page(&sizes, -4, 5000).max_parts, Some(ATTRIBUTE_PARTS_MAX), "bounds clamped");
    }
}
