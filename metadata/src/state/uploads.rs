//! Applying multipart uploads: an upload record, its parts (each a claimed
//! run of object data), and completion into one object version whose data
//! is the listed parts' runs in order.

use super::apply::{Applied, Ctx};
use super::error::{Kind, MetaError, UploadProblem};
use super::keys;
use super::model::{version_id_of, DataRun, ObjectPut, Part, Upload, WriteCondition, PART_NUMBER_MAX};
use super::names;
use super::objects::{add_version, claim, to_garbage};
use super::tables::TableError;
use super::tables::TablesMut;
use super::view;
use super::Reply;

fn no_upload(bucket: &str, key: &str, upload_id: &str) -> MetaError {
    MetaError::not_found(Kind::Upload, format!("{bucket}/{key}?uploadId={upload_id}"))
}

pub(crate) fn create_upload(t: &mut impl TablesMut, ctx: Ctx, bucket: &str, key: &str, object: &ObjectPut) -> Applied {
    if let Err(e) = names::check_object_key(key) {
        refuse!(e);
    }
    if view::bucket(t, bucket)?.is_none() {
        refuse!(MetaError::not_found(Kind::Bucket, bucket));
    }
    let upload = Upload {
        bucket: bucket.into(),
        key: key.into(),
        upload_id: version_id_of(ctx.seq),
        initiated_ms: ctx.now_ms,
        object: object.without_data(),
    };
    t.put_rec("upload", &keys::upload(bucket, key, &upload.upload_id), &upload)?;
    Ok(Ok(Reply::Upload(upload)))
}

pub(crate) struct NewPart<'a> {
    pub(crate) bucket: &'a str,
    pub(crate) key: &'a str,
    pub(crate) upload_id: &'a str,
    pub(crate) number: u32,
    pub(crate) etag: &'a str,
    pub(crate) run: DataRun,
    pub(crate) checksum: &'a Option<String>,
    pub(crate) size: Option<u64>,
}

pub(crate) fn put_part(t: &mut impl TablesMut, ctx: Ctx, part: NewPart<'_>) -> Applied {
    if !(1..=PART_NUMBER_MAX).contains(&part.number) {
        refuse!(MetaError::invalid("part number", format!("{} is not within 1..={PART_NUMBER_MAX}", part.number)));
    }
    if view::upload(t, part.bucket, part.key, part.upload_id)?.is_none() {
        refuse!(no_upload(part.bucket, part.key, part.upload_id));
    }
    if let Some(refusal) = claim(t, part.run)? {
        refuse!(refusal);
    }
    let key = keys::part(part.upload_id, part.number);
    if let Some(old) = t.get_rec::<Part>("part", &key)? {
        to_garbage(t, old.run)?;
    }
    let record = Part {
        number: part.number,
        etag: part.etag.into(),
        run: part.run,
        modified_ms: ctx.now_ms,
        checksum: part.checksum.clone(),
        size: part.size,
    };
    t.put_rec("part", &key, &record)?;
    Ok(Ok(Reply::Done))
}

pub(crate) struct Completion<'a> {
    pub(crate) bucket: &'a str,
    pub(crate) key: &'a str,
    pub(crate) upload_id: &'a str,
    pub(crate) parts: &'a [(u32, u64)],
    pub(crate) etag: &'a str,
    pub(crate) min_part_bytes: u64,
    /// Added to the upload's headers: the object's checksum.
    pub(crate) headers: &'a [(String, String)],
}

pub(crate) fn complete_upload(
    t: &mut impl TablesMut,
    ctx: Ctx,
    c: Completion<'_>,
    condition: Option<&WriteCondition>,
) -> Applied {
    let Some(b) = view::bucket(t, c.bucket)? else { refuse!(MetaError::not_found(Kind::Bucket, c.bucket)) };
    let Some(upload) = view::upload(t, c.bucket, c.key, c.upload_id)? else {
        refuse!(no_upload(c.bucket, c.key, c.upload_id))
    };
    if let Some(condition) = condition {
        let current = view::latest_object(t, c.bucket, c.key)?;
        if let Err(refusal) = super::objects::condition_holds(current.as_ref(), condition, c.key) {
            refuse!(refusal);
        }
    }
    let bad = |problem| MetaError::BadUpload { upload_id: c.upload_id.into(), problem };
    if c.parts.is_empty() {
        refuse!(bad(UploadProblem::NoParts));
    }
    if c.parts.windows(2).any(|w| w[0].0 >= w[1].0) {
        refuse!(bad(UploadProblem::PartOrder));
    }
    let uploaded = view::parts(t, c.upload_id, 0, usize::MAX)?;
    let mut data = Vec::with_capacity(c.parts.len());
    let mut size = 0u64;
    // Parts are read in number order, so each is found by binary search.
    for (i, &(number, owner)) in c.parts.iter().enumerate() {
        let found = uploaded.binary_search_by_key(&number, |p| p.number).ok().map(|at| &uploaded[at]);
        let Some(part) = found.filter(|p| p.run.owner == owner) else {
            refuse!(bad(UploadProblem::NoSuchPart(number)))
        };
        let last = i + 1 == c.parts.len();
        if !last && part.size() < c.min_part_bytes {
            refuse!(bad(UploadProblem::PartTooSmall { number, size: part.size(), min: c.min_part_bytes }));
        }
        data.push(part.run);
        size += part.size();
    }
    // The object's lock, judged before anything is staged.
    let mut described = upload.object.clone();
    if let Err(refusal) = super::objects::stamp_lock(t, ctx.now_ms, c.bucket, &mut described)? {
        refuse!(refusal);
    }
    let kept: std::collections::BTreeSet<u64> = data.iter().map(|run| run.owner).collect();
    for part in &uploaded {
        if !kept.contains(&part.run.owner) {
            to_garbage(t, part.run)?;
        }
    }
    remove_upload(t, &upload)?;
    described.headers.extend_from_slice(c.headers);
    let object = ObjectPut { size, etag: c.etag.into(), parts: c.parts.len() as u32, data, ..described };
    let version_id = add_version(t, ctx, b.versioning, c.bucket, c.key, false, object)?;
    Ok(Ok(Reply::ObjectPut { version_id, seq: ctx.seq }))
}

pub(crate) fn abort_upload(t: &mut impl TablesMut, bucket: &str, key: &str, upload_id: &str) -> Applied {
    let Some(upload) = view::upload(t, bucket, key, upload_id)? else { refuse!(no_upload(bucket, key, upload_id)) };
    for part in view::parts(t, upload_id, 0, usize::MAX)? {
        to_garbage(t, part.run)?;
    }
    remove_upload(t, &upload)?;
    Ok(Ok(Reply::Done))
}

/// Aborts every upload of a bucket being deleted.
pub(crate) fn abort_all(t: &mut impl TablesMut, bucket: &str) -> Result<(), TableError> {
    for upload in view::uploads(t, bucket, "", None, usize::MAX)? {
        for part in view::parts(t, &upload.upload_id, 0, usize::MAX)? {
            to_garbage(t, part.run)?;
        }
        remove_upload(t, &upload)?;
    }
    Ok(())
}

/// Deletes the upload record and its part records (not their data).
fn remove_upload(t: &mut impl TablesMut, upload: &Upload) -> Result<(), TableError> {
    let from = keys::upload_parts(&upload.upload_id);
    let to = keys::prefix_end(&from).unwrap_or_default();
    for (key, _) in t.scan(&from, &to, usize::MAX)? {
        t.delete(&key);
    }
    t.delete(&keys::upload(&upload.bucket, &upload.key, &upload.upload_id));
    Ok(())
}
