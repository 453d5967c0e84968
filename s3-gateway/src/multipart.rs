//! Multipart uploads: each part is written as its own run of object data
//! and recorded under the upload; completing makes the listed parts' runs
//! one object version without moving a byte. The ETag is S3's: the MD5 of
//! the parts' binary MD5s, then `-` and the part count. An upload created
//! with a checksum algorithm keeps each part's checksum, and the object's
//! is made of them ([`crate::part_checksums`]).

use chuyi_meta_api::ask;
use chuyi_meta_api::limits::RECORDS_PAGE_MAX;
use chuyi_meta_api::model::{Bucket, ObjectRecord, Part, Upload, OBJECT_FRAMED, PART_NUMBER_MAX, PART_SIZES_HEADER};
use chuyi_meta_api::{order, Request};
use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use crate::access::acl::acl_given;
use crate::buckets::owner;
use crate::conditions::{copy_source_conditions, write_condition};
use crate::data::Written;
use crate::description::{hasher_for, header_checksums, returned, timestamp, with_checksums, Headers};
use crate::encryption::{copy_source_customer_key, keep_customer_key, request_customer_key, returned_sse};
use crate::frames::{Codec, Spec};
use crate::gateway::Gateway;
use crate::object_lock::lock_headers;
use crate::objects::{body_length, etag, reported_version, Body};
use crate::part_checksums::{self, Algorithm, Kind};
use crate::sse::Seal;

/// Smallest part but the last, as S3.
pub const MIN_PART_BYTES: u64 = 5 << 20;

fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=PART_NUMBER_MAX).contains(n))
        .ok_or_else(|| s3_error!(InvalidArgument, "Part number must be an integer between 1 and {PART_NUMBER_MAX}"))
}

/// S3's ETag of a multipart object.
fn multipart_etag(part_etags: &[&str]) -> S3Result<String> {
    let mut md5 = Md5::new();
    for e in part_etags {
        let bytes = hex_bytes(e).ok_or_else(|| s3_error!(InternalError, "a part's ETag is not hex"))?;
        md5.update(&bytes);
    }
    Ok(format!("{}-{}", chuyi_common::secret::hex(&md5.finalize()), part_etags.len()))
}

fn completed(
    bucket: &Bucket,
    key: &str,
    etag_hex: &str,
    version_id: &str,
    sums: Checksum,
    sse: Option<ServerSideEncryption>,
) -> CompleteMultipartUploadOutput {
    let checksum_type = sums.checksum_type.clone();
    with_checksums!(
        CompleteMultipartUploadOutput {
            server_side_encryption: sse,
            bucket: Some(bucket.name.clone()),
            key: Some(key.to_string()),
            location: Some(format!("/{}/{key}", bucket.name)),
            e_tag: Some(etag(etag_hex)),
            version_id: reported_version(bucket, version_id),
            checksum_type: checksum_type
        },
        sums
    )
}

/// How an upload's parts are framed: when the upload began framed
/// (compressed or encrypted), with the bucket's codec now (each run names
/// its own), lz4 if compression was turned off meanwhile on an upload that
/// is framed for it alone; sealed with `seal`, the upload's.
fn upload_spec(upload: &Upload, bucket: &Bucket, seal: Option<Seal>) -> Spec {
    if upload.object.flags & OBJECT_FRAMED == 0 {
        return Spec::default();
    }
    let now = Codec::of_policy(bucket.settings.compression.as_deref());
    let codec = if seal.is_some() { now } else { Some(now.unwrap_or(Codec::Lz4)) };
    Spec { codec, seal }
}

/// A listed part's checksums, as the ones of a request.
fn listed_sums(part: &CompletedPart) -> Checksum {
    Checksum {
        checksum_crc32: part.checksum_crc32.clone(),
        checksum_crc32c: part.checksum_crc32c.clone(),
        checksum_crc64nvme: part.checksum_crc64nvme.clone(),
        checksum_sha1: part.checksum_sha1.clone(),
        checksum_sha256: part.checksum_sha256.clone(),
        checksum_type: None,
    }
}

/// Refuses a checksum in another algorithm than the upload's: S3 keeps one
/// per part, in the algorithm the upload was created with.
fn refuse_other_algorithm(ours: Algorithm, sent: &Checksum, named: Option<&str>) -> S3Result<()> {
    let other = Algorithm::ALL
        .into_iter()
        .filter(|a| *a != ours)
        .find(|a| a.of(sent).is_some() || named.is_some_and(|n| n.eq_ignore_ascii_case(a.name())));
    match other {
        Some(other) => Err(s3_error!(
            InvalidRequest,
            "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
            ours.name().to_ascii_lowercase(),
            other.name().to_ascii_lowercase()
        )),
        None => Ok(()),
    }
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// `bytes=first-last` of a copy source of `size` bytes.
pub(crate) fn copy_range(range: Option<&str>, size: u64) -> S3Result<std::ops::Range<u64>> {
    let Some(range) = range else { return Ok(0..size) };
    let bad = || s3_error!(InvalidArgument, "The x-amz-copy-source-range value must be of the form bytes=first-last");
    let spec = range.strip_prefix("bytes=").ok_or_else(bad)?;
    let (first, last) = spec.split_once('-').ok_or_else(bad)?;
    let first: u64 = first.trim().parse().map_err(|_| bad())?;
    let last: u64 = last.trim().parse().map_err(|_| bad())?;
    if first > last || last >= size {
        return Err(s3_error!(InvalidRange, "the range {first}-{last} is not within the source's {size} bytes"));
    }
    Ok(first..last + 1)
}

/// The completed object's checksum, as S3 makes and checks it: with the
/// upload's algorithm, made of the chosen parts' stored checksums (each
/// listed one must match its part's, and a composite upload must list
/// them all), checked against the whole-object checksum sent, if any.
/// Without an algorithm there is none, and a checksum sent is refused: it
/// could not be checked.
fn object_checksum(
    checksum: Option<(Algorithm, Kind)>,
    asked_type: Option<&ChecksumType>,
    listed: &[CompletedPart],
    chosen: &[&Part],
    sent: &Checksum,
) -> S3Result<Checksum> {
    let Some((algorithm, kind)) = checksum else {
        if *sent != Checksum::default() || asked_type.is_some() {
            return Err(s3_error!(
                InvalidRequest,
                "The upload was created without a checksum algorithm: the object has no checksum to check"
            ));
        }
        return Ok(Checksum::default());
    };
    if let Some(asked) = asked_type.filter(|t| !t.as_str().eq_ignore_ascii_case(kind.name())) {
        return Err(s3_error!(
            InvalidRequest,
            "The upload was created using the {} checksum mode. The complete request specified the {} mode.",
            kind.name(),
            asked.as_str()
        ));
    }
    refuse_other_algorithm(algorithm, sent, None)?;
    let mut parts = Vec::with_capacity(chosen.len());
    for (listed, part) in listed.iter().zip(chosen) {
        let Some(stored) = part.checksum.as_deref() else {
            return Err(s3_error!(InvalidPart, "part {} has no {} checksum", part.number, algorithm.name()));
        };
        match algorithm.of(&listed_sums(listed)) {
            Some(given) if given != stored => {
                return Err(s3_error!(
                    InvalidPart,
                    "the {} checksum listed for part {} does not match the part's",
                    algorithm.name(),
                    part.number
                ));
            }
            None if kind == Kind::Composite => {
                return Err(s3_error!(
                    InvalidRequest,
                    "The upload was created using a {} checksum. The complete request must include the checksum \
                     for each part. It was missing for part {} in the request.",
                    algorithm.name().to_ascii_lowercase(),
                    part.number
                ));
            }
            _ => {}
        }
        parts.push((stored, part.run.len));
    }
    let made = part_checksums::combined(algorithm, kind, &parts)?;
    if let Some(sent) = algorithm.of(sent) {
        if !part_checksums::matches(sent, &made) {
            return Err(s3_error!(
                BadDigest,
                "the {} you specified did not match the calculated checksum",
                algorithm.name()
            ));
        }
    }
    let mut sums = algorithm.sums(made);
    sums.checksum_type = Some(kind.name().to_string().into());
    Ok(sums)
}

impl Gateway {
    async fn upload(&self, bucket: &Bucket, key: &str, upload_id: &str) -> S3Result<Upload> {
        self.ask(ask::Upload { bucket: bucket.name.clone(), key: key.into(), upload_id: upload_id.into() }).await
    }

    async fn parts_page(&self, upload_id: &str, after: u32, max: u32) -> S3Result<Vec<Part>> {
        self.ask(ask::Parts { upload_id: upload_id.into(), after, max }).await
    }

    /// Records written data as part `number` of `upload`, with its
    /// checksum and, when framed, its size as sent; its ETag (hex).
    async fn record_part(
        &self,
        upload: &Upload,
        number: u32,
        written: Written,
        checksum: Option<String>,
        size: Option<u64>,
    ) -> S3Result<String> {
        let etag_hex = chuyi_common::secret::hex(&written.md5);
        let command = Request::PutPart {
            bucket: upload.bucket.clone(),
            key: upload.key.clone(),
            upload_id: upload.upload_id.clone(),
            number,
            etag: etag_hex.clone(),
            run: written.run.run,
            checksum,
            size,
        };
        self.write(command).await?;
        written.run.claimed();
        Ok(etag_hex)
    }

    pub(crate) async fn create_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = req.input;
        let customer = request_customer_key!(input);
        let sealing = self.write_sealing(&bucket, input.server_side_encryption.as_ref(), customer.as_ref()).await?;
        let object = Headers {
            content_type: input.content_type,
            cache_control: input.cache_control,
            content_disposition: input.content_disposition,
            content_encoding: input.content_encoding,
            content_language: input.content_language,
            expires: input.expires,
            metadata: input.metadata,
            tagging: input.tagging,
        }
        .describe()?;
        let mut object = object;
        self.lock_from_headers(&bucket, &mut object, lock_headers!(input)).await?;
        crate::objects::given_acl(&bucket, &mut object, acl_given!(input))?;
        let checksum = part_checksums::chosen(
            input.checksum_algorithm.as_ref().map(|a| a.as_str()),
            input.checksum_type.as_ref().map(|t| t.as_str()),
        )?;
        if let Some((algorithm, kind)) = checksum {
            object.headers.push((part_checksums::ALGORITHM_HEADER.into(), algorithm.name().into()));
            object.headers.push((part_checksums::TYPE_HEADER.into(), kind.name().into()));
        }
        // The bucket's compression and the encryption when the upload
        // starts hold for every part: an object's runs are all framed or
        // none, all sealed alike or none.
        if Codec::of_policy(bucket.settings.compression.as_deref()).is_some() || sealing.is_some() {
            object.flags |= OBJECT_FRAMED;
        }
        if let Some((sealing, _)) = &sealing {
            object.flags |= sealing.flag();
        }
        if let Some(customer) = &customer {
            keep_customer_key(&mut object, customer);
        }
        let sse = returned_sse(&object);
        let upload =
            self.order(order::CreateUpload { bucket: bucket.name.clone(), key: input.key.clone(), object }).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(bucket.name),
            key: Some(input.key),
            upload_id: Some(upload.upload_id),
            checksum_algorithm: checksum.map(|(a, _)| a.name().to_string().into()),
            checksum_type: checksum.map(|(_, k)| k.name().to_string().into()),
            server_side_encryption: sse.server_side_encryption,
            sse_customer_algorithm: sse.sse_customer_algorithm,
            sse_customer_key_md5: sse.sse_customer_key_md5,
            ..Default::default()
        }))
    }

    pub(crate) async fn put_part(&self, mut req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let number = part_number(req.input.part_number)?;
        // Refused before a byte is written when the upload is gone.
        let upload = self.upload(&bucket, &req.input.key, &req.input.upload_id).await?;
        let ours = part_checksums::of_upload(&upload.object.headers).map(|(a, _)| a);
        let customer = request_customer_key!(req.input);
        let seal = self.upload_seal(&bucket, &upload.object, customer.as_ref())?;
        let input = &mut req.input;
        let len = body_length(input.content_length, input.body.as_ref())?;
        let sent = header_checksums!(input);
        let named = input.checksum_algorithm.as_ref().map(|a| a.as_str().to_string());
        if let Some(ours) = ours {
            refuse_other_algorithm(ours, &sent, named.as_deref())?;
        }
        let body = Body {
            len,
            stream: input.body.take(),
            sent,
            // The upload's algorithm is computed whether sent or not.
            algorithm: ours.map(|a| a.name().to_string()).or(named),
            content_md5: input.content_md5.take(),
            spec: upload_spec(&upload, &bucket, seal),
        };
        let size = body.spec.framed().then_some(len);
        let (written, sums) = self.receive(&bucket, false, body, &req.headers, req.trailing_headers.as_ref()).await?;
        let checksum = ours.and_then(|a| a.of(&sums).cloned());
        let etag_hex = self.record_part(&upload, number, written, checksum, size).await?;
        let sse = returned_sse(&upload.object);
        let output = with_checksums!(
            UploadPartOutput {
                e_tag: Some(etag(&etag_hex)),
                server_side_encryption: sse.server_side_encryption,
                sse_customer_algorithm: sse.sse_customer_algorithm,
                sse_customer_key_md5: sse.sse_customer_key_md5
            },
            sums
        );
        Ok(S3Response::new(output))
    }

    pub(crate) async fn copy_part(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let granted = crate::access::check::granted(&req)?.clone();
        let input = req.input;
        let number = part_number(input.part_number)?;
        let upload = self.upload(&bucket, &input.key, &input.upload_id).await?;
        let ours = part_checksums::of_upload(&upload.object.headers).map(|(a, _)| a);
        let conditions = copy_source_conditions!(input);
        let customer = request_customer_key!(input);
        let source_customer = copy_source_customer_key!(input);
        let seal = self.upload_seal(&bucket, &upload.object, customer.as_ref())?;
        let (source_bucket, _, source) = self.copy_source(&granted, &input.copy_source, conditions).await?;
        let source_key = self.read_key(&source_bucket, &source.data, source_customer.as_ref())?;
        let range = copy_range(input.copy_source_range.as_deref(), source.data.size)?;
        let len = range.end - range.start;
        let body = self.data.read_object(&source.data, range, source_key).await?;
        let hasher = hasher_for(&http::HeaderMap::new(), &Checksum::default(), ours.map(Algorithm::name));
        let spec = upload_spec(&upload, &bucket, seal);
        let written = self.data.write(&bucket.pool, len, body, hasher, &spec).await?;
        let checksum = ours.and_then(|a| a.of(&written.checksums).cloned());
        let sums = written.checksums.clone();
        let size = spec.framed().then_some(len);
        let etag_hex = self.record_part(&upload, number, written, checksum, size).await?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(with_checksums!(
                CopyPartResult {
                    e_tag: Some(etag(&etag_hex)),
                    last_modified: Some(Timestamp::from(chuyi_common::clock::wall()))
                },
                sums
            )),
            copy_source_version_id: reported_version(&source_bucket, &source.version_id),
            ..Default::default()
        }))
    }

    pub(crate) async fn complete_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let mut input = req.input;
        let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let listed = input.multipart_upload.as_ref().and_then(|m| m.parts.clone()).unwrap_or_default();
        let upload = match self.upload(&bucket, &input.key, &input.upload_id).await {
            Ok(upload) => upload,
            Err(gone) => {
                // SDKs retry a Complete whose reply was lost: it is answered
                // as the first time, not with NoSuchUpload.
                let Some(done) = self.completed_before(&bucket, &input.key, &listed).await else { return Err(gone) };
                let sums = returned(&done.data, Default::default()).checksums;
                let sse = returned_sse(&done.data).server_side_encryption;
                let output = completed(&bucket, &input.key, &done.data.etag, &done.version_id, sums, sse);
                return Ok(S3Response::new(output));
            }
        };
        if listed.is_empty() {
            return Err(s3_error!(MalformedXML, "The XML you provided did not validate: no parts were listed"));
        }
        let uploaded = self.all_parts(&input.upload_id).await?;
        let mut chosen = Vec::with_capacity(listed.len());
        for part in &listed {
            let number = part_number(part.part_number.unwrap_or(0))?;
            // Pages come in part-number order.
            let found = uploaded.binary_search_by_key(&number, |p: &Part| p.number).ok().map(|at| &uploaded[at]);
            let matches = |p: &&Part| part.e_tag.as_ref().is_none_or(|e| e.value() == p.etag);
            let Some(found) = found.filter(matches) else {
                return Err(s3_error!(
                    InvalidPart,
                    "part {number} was not uploaded, or its ETag does not match the one listed"
                ));
            };
            chosen.push(found);
        }
        if let Some(size) = input.mpu_object_size {
            let total: u64 = chosen.iter().map(|p| p.size()).sum();
            if u64::try_from(size).ok() != Some(total) {
                return Err(s3_error!(
                    InvalidRequest,
                    "The provided x-amz-mp-object-size {size} does not match the parts' {total} bytes"
                ));
            }
        }
        let sent = header_checksums!(input);
        let checksum = part_checksums::of_upload(&upload.object.headers);
        let sums = object_checksum(checksum, input.checksum_type.as_ref(), &listed, &chosen, &sent)?;
        let etags: Vec<&str> = chosen.iter().map(|p| p.etag.as_str()).collect();
        let etag_hex = multipart_etag(&etags)?;
        let mut headers = match checksum {
            Some((algorithm, _)) => algorithm.of(&sums).map(|v| vec![(algorithm.header().to_string(), v.clone())]),
            None => None,
        }
        .unwrap_or_default();
        if upload.object.flags & OBJECT_FRAMED != 0 {
            let sizes: Vec<String> = chosen.iter().map(|p| p.size().to_string()).collect();
            headers.push((PART_SIZES_HEADER.to_string(), sizes.join(",")));
        }
        let complete = order::CompleteUpload {
            bucket: bucket.name.clone(),
            key: input.key.clone(),
            upload_id: input.upload_id.clone(),
            parts: chosen.iter().map(|p| (p.number, p.run.owner)).collect(),
            etag: etag_hex.clone(),
            min_part_bytes: MIN_PART_BYTES,
            headers,
            condition,
        };
        let version_id = self.order(complete).await?.version_id;
        let sse = returned_sse(&upload.object).server_side_encryption;
        Ok(S3Response::new(completed(&bucket, &input.key, &etag_hex, &version_id, sums, sse)))
    }

    /// Every part uploaded so far, in part-number order.
    async fn all_parts(&self, upload_id: &str) -> S3Result<Vec<Part>> {
        let mut uploaded = Vec::new();
        loop {
            let after = uploaded.last().map_or(0, |p: &Part| p.number);
            let page = self.parts_page(upload_id, after, RECORDS_PAGE_MAX).await?;
            let done = page.len() < RECORDS_PAGE_MAX as usize;
            uploaded.extend(page);
            if done {
                return Ok(uploaded);
            }
        }
    }

    /// The key's current version, when it is what completing `listed` made:
    /// the multipart ETag of the listed parts' ETags, over as many parts.
    /// Its upload is gone because this very Complete succeeded before.
    async fn completed_before(&self, bucket: &Bucket, key: &str, listed: &[CompletedPart]) -> Option<ObjectRecord> {
        let etags: Option<Vec<&str>> = listed.iter().map(|p| p.e_tag.as_ref().map(|e| e.value())).collect();
        let expected = multipart_etag(&etags?).ok()?;
        let current = self.object(&bucket.name, key, None).await.ok()?;
        let same =
            !current.delete_marker && current.data.etag == expected && current.data.parts as usize == listed.len();
        same.then_some(current)
    }

    pub(crate) async fn abort_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = req.input;
        let command = Request::AbortUpload { bucket: bucket.name, key: input.key, upload_id: input.upload_id };
        self.write(command).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(crate) async fn parts_of(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = req.input;
        let upload = self.upload(&bucket, &input.key, &input.upload_id).await?;
        let checksum = part_checksums::of_upload(&upload.object.headers);
        let max = match input.max_parts {
            None => RECORDS_PAGE_MAX,
            Some(n) if n < 0 => return Err(s3_error!(InvalidArgument, "max-parts must not be negative")),
            Some(n) => (n as u32).clamp(1, RECORDS_PAGE_MAX),
        };
        let after = match input.part_number_marker {
            None => 0,
            Some(n) => u32::try_from(n).map_err(|_| s3_error!(InvalidArgument, "a negative part-number-marker"))?,
        };
        // One more than the page shows whether there are more.
        let mut parts = self.parts_page(&input.upload_id, after, max + 1).await?;
        let truncated = parts.len() > max as usize;
        parts.truncate(max as usize);
        let next = parts.last().map(|p| p.number as i32);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(bucket.name.clone()),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max as i32),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            is_truncated: Some(truncated),
            owner: Some(owner(&bucket.owner)),
            initiator: Some(Initiator {
                display_name: Some(bucket.owner.clone()),
                id: Some(crate::auth::canonical_id(&bucket.owner)),
            }),
            parts: Some(
                parts
                    .iter()
                    .map(|p| {
                        let sums = match (checksum, &p.checksum) {
                            (Some((algorithm, _)), Some(value)) => algorithm.sums(value.clone()),
                            _ => Checksum::default(),
                        };
                        with_checksums!(
                            s3s::dto::Part {
                                part_number: Some(p.number as i32),
                                e_tag: Some(etag(&p.etag)),
                                size: Some(p.size() as i64),
                                last_modified: Some(timestamp(p.modified_ms))
                            },
                            sums
                        )
                    })
                    .collect(),
            ),
            checksum_algorithm: checksum.map(|(a, _)| a.name().to_string().into()),
            checksum_type: checksum.map(|(_, k)| k.name().to_string().into()),
            ..Default::default()
        }))
    }

    pub(crate) async fn uploads_of(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = req.input;
        let max = match input.max_uploads {
            None => RECORDS_PAGE_MAX,
            Some(n) if n < 0 => return Err(s3_error!(InvalidArgument, "max-uploads must not be negative")),
            Some(n) => (n as u32).clamp(1, RECORDS_PAGE_MAX),
        };
        // A key marker alone resumes after every upload of that key: "~"
        // sorts after every upload id, which are digits.
        let after = input.key_marker.clone().filter(|k| !k.is_empty()).map(|k| {
            let id = input.upload_id_marker.clone().filter(|u| !u.is_empty()).unwrap_or_else(|| "~".into());
            (k, id)
        });
        let mut uploads = self
            .ask(ask::Uploads {
                bucket: bucket.name.clone(),
                prefix: input.prefix.clone().unwrap_or_default(),
                after,
                max: max + 1,
            })
            .await?;
        let truncated = uploads.len() > max as usize;
        uploads.truncate(max as usize);
        let last = uploads.last().map(|u| (u.key.clone(), u.upload_id.clone()));
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(bucket.name.clone()),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: last.as_ref().filter(|_| truncated).map(|l| l.0.clone()),
            next_upload_id_marker: last.filter(|_| truncated).map(|l| l.1),
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(u.key),
                        upload_id: Some(u.upload_id),
                        initiated: Some(timestamp(u.initiated_ms)),
                        owner: Some(owner(&bucket.owner)),
                        initiator: Some(Initiator {
                            display_name: Some(bucket.owner.clone()),
                            id: Some(crate::auth::canonical_id(&bucket.owner)),
                        }),
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_multipart_etag_is_the_md5_of_part_md5s() {
        // Two parts whose MD5s are those of "a" and "b".
        let a = "0cc175b9c0f1b6a831c399e269772661";
        let b = "92eb5ffee6ae2fec3ad71c777531578f";
        let etag = multipart_etag(&[a, b]).expect("etag");
        let mut md5 = Md5::new();
        md5.update(&hex_bytes(a).expect("hex"));
        md5.update(&hex_bytes(b).expect("hex"));
        assert_eq!(etag, format!("{}-2", chuyi_common::secret::hex(&md5.finalize())));
        assert!(multipart_etag(&["zz"]).is_err());
    }

    #[test]
    fn copy_ranges_are_checked() {
        assert_eq!(copy_range(None, 10).ok(), Some(0..10));
        assert_eq!(copy_range(Some("bytes=2-5"), 10).ok(), Some(2..6));
        assert!(copy_range(Some("bytes=5-2"), 10).is_err());
        assert!(copy_range(Some("bytes=0-10"), 10).is_err());
        assert!(copy_range(Some("0-1"), 10).is_err());
        assert!(copy_range(Some("bytes=a-1"), 10).is_err());
    }

    #[test]
    fn part_numbers_are_bounded() {
        assert!(part_number(0).is_err());
        assert!(part_number(10_001).is_err());
        assert_eq!(part_number(1).ok(), Some(1));
    }
}
