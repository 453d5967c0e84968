//! Applying the object index's commands: object data from reservation to
//! garbage, and versions of objects.
//!
//! Object data has one life: [`begin_data`] reserves a chunk owner and
//! records it pending; the gateway writes the chunks; a put (or a part)
//! claims it. A version removed later, a part replaced or an upload
//! aborted puts its runs in the garbage table, and data whose writer gave
//! up or died (pending past its time) goes there too. The gateway deletes
//! garbage chunks from the storage nodes and then forgets them. No chunk
//! is ever referred to by two records, so freeing a run frees nothing
//! else. Small objects' runs live in shared packs instead (packs.rs): a
//! removed version's packed run only counts as dead in its pack.

use super::apply::{Applied, Ctx};
use super::error::{Kind, MetaError};
use super::keys;
use super::model::{
    retention_change_allowed, version_id_of, BucketUsage, DataRun, LockMode, LockRefusal, ObjectLockConfig, ObjectPut,
    ObjectRecord, PendingData, Retention, Versioning, WriteCondition, NULL_VERSION, OBJECT_FRAMED, TAGGING_HEADER,
};
use super::names;
use super::packs;
use super::tables::TableError;
use super::tables::TablesMut;
use super::view;
use super::Reply;

pub use chuyi_meta_api::limits::{DATA_TTL_MAX_MS, EXPIRE_SCAN_MAX};

/// Versions of one key examined to find its null version.
pub(crate) const NULL_VERSION_SCAN_MAX: usize = 100_000;

pub(crate) fn begin_data(t: &mut impl TablesMut, ctx: Ctx, pool: &str, len: u64, ttl_ms: u64) -> Applied {
    if ttl_ms == 0 || ttl_ms > DATA_TTL_MAX_MS {
        refuse!(MetaError::invalid("data ttl", format!("{ttl_ms} ms is not within 1..={DATA_TTL_MAX_MS}")));
    }
    let Some(pool) = view::pool(t, pool)? else { refuse!(MetaError::not_found(Kind::Pool, pool)) };
    let Some(owner) = super::apply::next_owner(t, pool.id)? else {
        refuse!(MetaError::invalid("object data", format!("pool {} has given out every chunk owner id", pool.name)))
    };
    let pending = PendingData { run: DataRun::owned(owner, len), expires_ms: ctx.now_ms.saturating_add(ttl_ms) };
    t.put_rec("pending data", &keys::pending(owner), &pending)?;
    Ok(Ok(Reply::Data { owner }))
}

pub(crate) fn abandon_data(t: &mut impl TablesMut, owner: u64) -> Applied {
    if let Some(pending) = t.get_rec::<PendingData>("pending data", &keys::pending(owner))? {
        t.delete(&keys::pending(owner));
        to_garbage(t, pending.run)?;
    }
    Ok(Ok(Reply::Done))
}

/// Moves up to `max` pending runs whose time is up to the garbage.
pub(crate) fn expire_pending(t: &mut impl TablesMut, ctx: Ctx, max: u32) -> Applied {
    let (from, to) = keys::table_range(keys::T_PENDING);
    let mut expired = 0u64;
    for (key, value) in t.scan(&from, &to, EXPIRE_SCAN_MAX)? {
        if expired >= u64::from(max) {
            break;
        }
        let pending: PendingData = crate::store::codec::decode("pending data", &value)?;
        if pending.expires_ms <= ctx.now_ms {
            t.delete(&key);
            to_garbage(t, pending.run)?;
            expired += 1;
        }
    }
    Ok(Ok(Reply::Count(expired)))
}

pub(crate) fn forget_garbage(t: &mut impl TablesMut, owners: &[u64]) -> Applied {
    for &owner in owners {
        t.delete(&keys::garbage(owner));
    }
    Ok(Ok(Reply::Count(owners.len() as u64)))
}

pub(crate) fn to_garbage(t: &mut impl TablesMut, run: DataRun) -> Result<(), TableError> {
    if run.len > 0 {
        t.put_rec("garbage", &keys::garbage(run.owner), &run.len)?;
    }
    Ok(())
}

/// Claims a pending run for a record: `Some(refusal)` when it is not
/// pending (any more) or not of the length it was reserved for.
pub(crate) fn claim(t: &mut impl TablesMut, run: DataRun) -> Result<Option<MetaError>, TableError> {
    let Some(pending) = t.get_rec::<PendingData>("pending data", &keys::pending(run.owner))? else {
        return Ok(Some(MetaError::DataNotPending { owner: run.owner }));
    };
    if pending.run.len < run.len {
        return Ok(Some(MetaError::invalid(
            "object data",
            format!("{} bytes claimed of owner {:#x}, reserved for {}", run.len, run.owner, pending.run.len),
        )));
    }
    t.delete(&keys::pending(run.owner));
    Ok(None)
}

fn check_object(object: &ObjectPut) -> Result<(), MetaError> {
    let total = object.data.iter().try_fold(0u64, |sum, run| sum.checked_add(run.len));
    // Framed (compressed) runs take what they take; plain ones are the
    // object's bytes.
    let framed = object.flags & OBJECT_FRAMED != 0;
    if total.is_none() || (!framed && total != Some(object.size)) {
        return Err(MetaError::invalid("object", format!("its data runs do not add up to its size {}", object.size)));
    }
    Ok(())
}

pub(crate) fn put_object(
    t: &mut impl TablesMut,
    ctx: Ctx,
    bucket: &str,
    key: &str,
    object: &ObjectPut,
    condition: Option<&WriteCondition>,
) -> Applied {
    if let Err(e) = names::check_object_key(key).and_then(|()| check_object(object)) {
        refuse!(e);
    }
    let Some(b) = view::bucket(t, bucket)? else { refuse!(MetaError::not_found(Kind::Bucket, bucket)) };
    // A client that lost the reply retries the same command: the version
    // that already holds this packed run is its answer, not a refusal
    // (nor a failed condition: its own put made the key exist).
    if let Some(done) = packs::already_put(t, bucket, key, &object.data)? {
        return Ok(Ok(done));
    }
    if let Some(condition) = condition {
        if let Err(refusal) = condition_holds(view::latest_object(t, bucket, key)?.as_ref(), condition, key) {
            refuse!(refusal);
        }
    }
    // Refused before anything is staged (a refusal changes nothing).
    let mut object = object.clone();
    if let Err(refusal) = stamp_lock(t, ctx.now_ms, bucket, &mut object)? {
        refuse!(refusal);
    }
    let packed = match packs::check_adds(t, ctx, &object.data)? {
        Ok(packed) => packed,
        Err(refusal) => refuse!(refusal),
    };
    for run in object.data.iter().filter(|run| !packed.contains(run)) {
        if let Some(refusal) = claim(t, *run)? {
            refuse!(refusal);
        }
    }
    if packed.len() > 1 {
        refuse!(MetaError::invalid("object", "more than one packed run".to_string()));
    }
    let version_id = add_version(t, ctx, b.versioning, bucket, key, false, object)?;
    for run in &packed {
        packs::add_run(t, run, bucket, key, ctx.seq)?;
    }
    Ok(Ok(Reply::ObjectPut { version_id, seq: ctx.seq }))
}

/// Largest header value a sub-resource keeps in a version: S3's ten tags
/// of at most 128 and 256 characters fit with room for their encoding, and
/// an ACL of a hundred grants.
const SUB_RESOURCE_MAX_BYTES: usize = 16 << 10;

/// Replaces the tag set of a version (the newest when `version_id` is
/// `None`); a delete marker has none to replace.
pub(crate) fn set_object_tags(
    t: &mut impl TablesMut,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    tags: &str,
) -> Applied {
    set_object_header(t, Target { bucket, key, version_id }, TAGGING_HEADER, tags)
}

/// Replaces the header `name` a version keeps a sub-resource under (its
/// tags, its ACL); an empty `value` removes it. A delete marker has none.
pub(crate) fn set_object_header(t: &mut impl TablesMut, target: Target<'_>, name: &str, value: &str) -> Applied {
    if value.len() > SUB_RESOURCE_MAX_BYTES {
        refuse!(MetaError::invalid(name, format!("{} bytes; at most {SUB_RESOURCE_MAX_BYTES}", value.len())));
    }
    let mut record = match find_version(t, target)? {
        Ok(record) => record,
        Err(refusal) => refuse!(refusal),
    };
    record.data.headers.retain(|(n, _)| n != name);
    if !value.is_empty() {
        record.data.headers.push((name.into(), value.into()));
    }
    rewrite(t, target.bucket, target.key, &record)
}

/// Moves version `seq` of the target's key from data `from` to data `to`
/// (pending, of the same size): a lifecycle transition to another pool.
/// `Count(0)`, changing nothing, when the version is gone or its data is
/// no longer `from`.
pub(crate) fn transition_object(
    t: &mut impl TablesMut,
    ctx: Ctx,
    target: Target<'_>,
    seq: u64,
    from: &[DataRun],
    to: &[DataRun],
) -> Applied {
    let version_key = keys::object_version(target.bucket, target.key, seq);
    let Some(mut record) = t.get_rec::<ObjectRecord>("object", &version_key)? else { return Ok(Ok(Reply::Count(0))) };
    if record.data.data != from || record.delete_marker {
        return Ok(Ok(Reply::Count(0)));
    }
    let moved = ObjectPut { data: to.to_vec(), ..record.data.clone() };
    if let Err(e) = check_object(&moved) {
        refuse!(e);
    }
    let packed = match packs::check_adds(t, ctx, to)? {
        Ok(packed) => packed,
        Err(refusal) => refuse!(refusal),
    };
    if packed.len() > 1 {
        refuse!(MetaError::invalid("object", "more than one packed run".to_string()));
    }
    for run in to.iter().filter(|run| !packed.contains(run)) {
        if let Some(refusal) = claim(t, *run)? {
            refuse!(refusal);
        }
    }
    for run in from {
        if !packs::kill_run(t, ctx, run)? {
            to_garbage(t, *run)?;
        }
    }
    record.data = moved;
    t.put_rec("object", &version_key, &record)?;
    for run in &packed {
        packs::add_run(t, run, target.bucket, target.key, seq)?;
    }
    Ok(Ok(Reply::Count(1)))
}

/// One version of one key: the newest when `version_id` is `None`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    pub(crate) bucket: &'a str,
    pub(crate) key: &'a str,
    pub(crate) version_id: Option<&'a str>,
}

/// The version a target names; a delete marker is none (it has no tags or
/// lock to change).
fn find_version(t: &impl TablesMut, target: Target<'_>) -> Result<Result<ObjectRecord, MetaError>, TableError> {
    let Target { bucket, key, version_id } = target;
    if view::bucket(t, bucket)?.is_none() {
        return Ok(Err(MetaError::not_found(Kind::Bucket, bucket)));
    }
    let found = match version_id {
        Some(v) => view::object_version(t, bucket, key, v, NULL_VERSION_SCAN_MAX)?,
        None => view::latest_object(t, bucket, key)?,
    };
    Ok(found.filter(|r| !r.delete_marker).ok_or_else(|| match version_id {
        Some(v) => MetaError::not_found(Kind::Version, format!("{bucket}/{key}?versionId={v}")),
        None => MetaError::not_found(Kind::Object, format!("{bucket}/{key}")),
    }))
}

/// Writes a changed version back in place; answers with the version.
fn rewrite(t: &mut impl TablesMut, bucket: &str, key: &str, record: &ObjectRecord) -> Applied {
    t.put_rec("object", &keys::object_version(bucket, key, record.seq), record)?;
    Ok(Ok(Reply::ObjectPut { version_id: record.version_id.clone(), seq: record.seq }))
}

/// The object lock a bucket imposes, if it has object lock on.
fn lock_of(t: &impl TablesMut, bucket: &str) -> Result<Result<ObjectLockConfig, MetaError>, TableError> {
    Ok(view::object_lock(t, bucket)?.ok_or_else(|| MetaError::BucketState {
        bucket: bucket.into(),
        why: "Bucket is missing Object Lock Configuration".into(),
    }))
}

/// Sets a version's retention as far as object lock allows the change.
pub(crate) fn set_retention(
    t: &mut impl TablesMut,
    ctx: Ctx,
    target: Target<'_>,
    retention: Option<Retention>,
    bypass_governance: bool,
) -> Applied {
    if let Err(refusal) = lock_of(t, target.bucket)? {
        refuse!(refusal);
    }
    let mut record = match find_version(t, target)? {
        Ok(record) => record,
        Err(refusal) => refuse!(refusal),
    };
    let old = record.data.retention();
    if !retention_change_allowed(old, retention, ctx.now_ms, bypass_governance) {
        let why = record.data.removal_refused(ctx.now_ms, bypass_governance).unwrap_or(LockRefusal::Retained {
            mode: old.map_or(LockMode::Compliance, |o| o.mode),
            until_ms: old.map_or(0, |o| o.until_ms),
        });
        refuse!(MetaError::Locked { what: format!("{}/{}", target.bucket, target.key), why });
    }
    record.data.set_retention(retention);
    rewrite(t, target.bucket, target.key, &record)
}

pub(crate) fn set_legal_hold(t: &mut impl TablesMut, target: Target<'_>, on: bool) -> Applied {
    if let Err(refusal) = lock_of(t, target.bucket)? {
        refuse!(refusal);
    }
    let mut record = match find_version(t, target)? {
        Ok(record) => record,
        Err(refusal) => refuse!(refusal),
    };
    record.data.set_legal_hold(on);
    rewrite(t, target.bucket, target.key, &record)
}

/// The lock a new version of `bucket` gets: its own when it names one (a
/// bucket without object lock takes none), else the bucket's default
/// retention from `now_ms`.
pub(crate) fn stamp_lock(
    t: &impl TablesMut,
    now_ms: u64,
    bucket: &str,
    object: &mut ObjectPut,
) -> Result<Result<(), MetaError>, TableError> {
    let lock = view::object_lock(t, bucket)?;
    let Some(lock) = lock else {
        if object.is_locked_at_all() {
            return lock_of(t, bucket).map(|r| r.map(|_| ()));
        }
        return Ok(Ok(()));
    };
    if object.retention().is_none() {
        if let Some(default) = lock.default_retention {
            let until_ms = now_ms.saturating_add(u64::from(default.days) * 86_400_000);
            object.set_retention(Some(Retention { mode: default.mode, until_ms }));
        }
    }
    Ok(Ok(()))
}

/// Lifecycle's expiration of the current version, if it is still `seq`.
pub(crate) fn expire_object(t: &mut impl TablesMut, ctx: Ctx, bucket: &str, key: &str, seq: u64) -> Applied {
    let current = view::latest_object(t, bucket, key)?;
    if !current.is_some_and(|c| c.seq == seq && !c.delete_marker) {
        return Ok(Ok(Reply::Count(0)));
    }
    deleted_one(t, ctx, bucket, key, None)
}

/// Lifecycle's removal of version `version_id` of `key`, planned when it
/// had sequence `seq` and was noncurrent (with `lone_marker`: a delete
/// marker with no other version): done only if it still is, else
/// `Count(0)`. A write in a bucket with versioning suspended replaces the
/// null version under the same id, and must not be removed by the rule
/// judged on the old one.
pub(crate) fn remove_planned_version(
    t: &mut impl TablesMut,
    ctx: Ctx,
    bucket: &str,
    key: &str,
    version_id: &str,
    seq: u64,
    lone_marker: bool,
) -> Applied {
    let Some(record) = view::object_version(t, bucket, key, version_id, NULL_VERSION_SCAN_MAX)? else {
        return Ok(Ok(Reply::Count(0)));
    };
    // Versions are only ever added as the newest: a marker still newest
    // has had nothing added above it, and nothing can appear below.
    let newest = view::latest_object(t, bucket, key)?.is_some_and(|l| l.seq == seq);
    // A noncurrent version judged may have become the newest since (the
    // newer ones deleted by id): it is then the object, not a rule's.
    let as_judged = match lone_marker {
        true => record.delete_marker && newest,
        false => !newest,
    };
    if record.seq != seq || !as_judged {
        return Ok(Ok(Reply::Count(0)));
    }
    deleted_one(t, ctx, bucket, key, Some(version_id))
}

/// [`delete_object`] (no Governance bypass) answered as lifecycle's
/// conditional requests are: `Count(1)`, or the refusal.
fn deleted_one(t: &mut impl TablesMut, ctx: Ctx, bucket: &str, key: &str, version_id: Option<&str>) -> Applied {
    match delete_object(t, ctx, bucket, key, version_id, false)? {
        Ok(_) => Ok(Ok(Reply::Count(1))),
        Err(refusal) => Ok(Err(refusal)),
    }
}

/// Whether a conditional write may apply over `current`, the key's newest
/// version (a delete marker means no object). If-Match on a key with no
/// object is S3's NoSuchKey, not PreconditionFailed.
pub(crate) fn condition_holds(
    current: Option<&ObjectRecord>,
    condition: &WriteCondition,
    key: &str,
) -> Result<(), MetaError> {
    let current = current.filter(|record| !record.delete_marker);
    let failed = || MetaError::ConditionFailed { key: key.into(), condition: condition.clone() };
    match (condition, current) {
        (WriteCondition::Absent, None) => Ok(()),
        (WriteCondition::Absent, Some(_)) => Err(failed()),
        (WriteCondition::ETag(_), None) => Err(MetaError::not_found(Kind::Object, key)),
        (WriteCondition::ETag(etag), Some(record)) if record.data.etag == *etag => Ok(()),
        (WriteCondition::ETag(_), Some(_)) => Err(failed()),
    }
}

/// Adds a version (or delete marker) of `key` as the bucket's versioning
/// says: a new version id when enabled, else the null version, replacing
/// the one before. Returns its version id.
pub(crate) fn add_version(
    t: &mut impl TablesMut,
    ctx: Ctx,
    versioning: Versioning,
    bucket: &str,
    key: &str,
    delete_marker: bool,
    data: ObjectPut,
) -> Result<String, TableError> {
    let version_id = match versioning {
        Versioning::Enabled => version_id_of(ctx.seq),
        Versioning::Unset | Versioning::Suspended => {
            if let Some(old) = view::find_null_version(t, bucket, key, NULL_VERSION_SCAN_MAX)? {
                remove_version(t, ctx, bucket, key, &old)?;
            }
            NULL_VERSION.to_string()
        }
    };
    let record =
        ObjectRecord { seq: ctx.seq, version_id: version_id.clone(), delete_marker, modified_ms: ctx.now_ms, data };
    t.put_rec("object", &keys::object_version(bucket, key, ctx.seq), &record)?;
    count(t, bucket, &record, true)?;
    Ok(version_id)
}

/// Removes one version; its data becomes garbage, or dead in its pack.
fn remove_version(
    t: &mut impl TablesMut,
    ctx: Ctx,
    bucket: &str,
    key: &str,
    record: &ObjectRecord,
) -> Result<(), TableError> {
    t.delete(&keys::object_version(bucket, key, record.seq));
    for run in &record.data.data {
        if !packs::kill_run(t, ctx, run)? {
            to_garbage(t, *run)?;
        }
    }
    count(t, bucket, record, false)
}

/// Keeps the bucket's usage as versions come and go.
fn count(t: &mut impl TablesMut, bucket: &str, record: &ObjectRecord, added: bool) -> Result<(), TableError> {
    if record.delete_marker {
        return Ok(());
    }
    let key = keys::bucket_usage(bucket);
    let mut usage: BucketUsage = t.get_rec("bucket usage", &key)?.unwrap_or_default();
    let stored: u64 = record.data.data.iter().map(|run| run.len).sum();
    if added {
        usage.objects += 1;
        usage.bytes = usage.bytes.saturating_add(record.data.size);
        usage.stored_bytes = usage.stored_bytes.saturating_add(stored);
    } else {
        usage.objects = usage.objects.saturating_sub(1);
        usage.bytes = usage.bytes.saturating_sub(record.data.size);
        usage.stored_bytes = usage.stored_bytes.saturating_sub(stored);
    }
    t.put_rec("bucket usage", &key, &usage)
}

pub(crate) fn delete_object(
    t: &mut impl TablesMut,
    ctx: Ctx,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    bypass_governance: bool,
) -> Applied {
    if let Err(e) = names::check_object_key(key) {
        refuse!(e);
    }
    let Some(b) = view::bucket(t, bucket)? else { refuse!(MetaError::not_found(Kind::Bucket, bucket)) };
    if let Some(version_id) = version_id {
        let Some(record) = view::object_version(t, bucket, key, version_id, NULL_VERSION_SCAN_MAX)? else {
            refuse!(MetaError::not_found(Kind::Version, format!("{bucket}/{key}?versionId={version_id}")))
        };
        // Every path that removes a version comes here (a client's delete,
        // DeleteObjects, lifecycle, the CLI): object lock holds on all.
        if let Some(why) = record.data.removal_refused(ctx.now_ms, bypass_governance) {
            refuse!(MetaError::Locked { what: format!("{bucket}/{key}?versionId={version_id}"), why });
        }
        remove_version(t, ctx, bucket, key, &record)?;
        return Ok(Ok(Reply::ObjectDeleted {
            version_id: Some(record.version_id),
            delete_marker: record.delete_marker,
        }));
    }
    if b.versioning == Versioning::Unset {
        if let Some(old) = view::find_null_version(t, bucket, key, NULL_VERSION_SCAN_MAX)? {
            remove_version(t, ctx, bucket, key, &old)?;
        }
        return Ok(Ok(Reply::ObjectDeleted { version_id: None, delete_marker: false }));
    }
    let marker_id = add_version(t, ctx, b.versioning, bucket, key, true, ObjectPut::default())?;
    Ok(Ok(Reply::ObjectDeleted { version_id: Some(marker_id), delete_marker: true }))
}
