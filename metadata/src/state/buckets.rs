//! Applying the commands about buckets: create, delete, versioning.

use super::apply::{Applied, Ctx};
use super::error::{Kind, MetaError};
use super::keys;
use super::model::{Bucket, BucketConfigKind, ObjectLockConfig, Versioning, BUCKET_CONFIG_MAX_BYTES};
use super::names;
use super::tables::TablesMut;
use super::Reply;
use super::{uploads, view};
use chuyi_meta_api::qos::QosScope;

pub(super) fn create_bucket(t: &mut impl TablesMut, ctx: Ctx, name: &str, owner: &str, pool: &str) -> Applied {
    if let Err(e) = names::check_bucket_name(name) {
        refuse!(e);
    }
    if view::bucket(t, name)?.is_some() {
        refuse!(MetaError::exists(Kind::Bucket, name));
    }
    if view::user_by_name(t, owner)?.is_none() {
        refuse!(MetaError::not_found(Kind::User, owner));
    }
    if view::pool(t, pool)?.is_none() {
        refuse!(MetaError::not_found(Kind::Pool, pool));
    }
    let bucket = Bucket {
        name: name.into(),
        owner: owner.into(),
        pool: pool.into(),
        created_ms: ctx.now_ms,
        versioning: Versioning::Unset,
        settings: Default::default(),
    };
    t.put_rec("bucket", &keys::bucket(name), &bucket)?;
    Ok(Ok(Reply::Bucket(bucket)))
}

pub(super) fn delete_bucket(t: &mut impl TablesMut, name: &str) -> Applied {
    if view::bucket(t, name)?.is_none() {
        refuse!(MetaError::not_found(Kind::Bucket, name));
    }
    let objects = keys::bucket_objects(name);
    let end = keys::prefix_end(&objects).unwrap_or_default();
    if !t.scan(&objects, &end, 1)?.is_empty() {
        refuse!(MetaError::BucketNotEmpty(name.into()));
    }
    uploads::abort_all(t, name)?;
    let configs = keys::bucket_configs(name);
    for (key, _) in t.scan(&configs, &keys::prefix_end(&configs).unwrap_or_default(), usize::MAX)? {
        t.delete(&key);
    }
    t.delete(&keys::bucket(name));
    t.delete(&keys::bucket_usage(name));
    super::qos::drop_rules(t, |s| match s {
        QosScope::Bucket(b) | QosScope::UserBucket { bucket: b, .. } => b == name,
        QosScope::User(_) | QosScope::Volume(_) | QosScope::Pool(_) => false,
    })?;
    Ok(Ok(Reply::Done))
}

/// A bucket with object lock on and versioning enabled, made at once (a
/// bucket that exists without the lock it was asked with would be worse
/// than none).
pub(super) fn create_bucket_locked(t: &mut impl TablesMut, ctx: Ctx, name: &str, owner: &str, pool: &str) -> Applied {
    let mut bucket = match create_bucket(t, ctx, name, owner, pool)? {
        Ok(Reply::Bucket(bucket)) => bucket,
        other => return Ok(other),
    };
    bucket.versioning = Versioning::Enabled;
    t.put_rec("bucket", &keys::bucket(name), &bucket)?;
    t.put_rec("object lock", &keys::object_lock(name), &ObjectLockConfig::default())?;
    Ok(Ok(Reply::Bucket(bucket)))
}

/// Turns object lock on (versioning must be enabled), or changes its
/// default retention; it never turns off.
pub(super) fn set_object_lock(t: &mut impl TablesMut, name: &str, config: &ObjectLockConfig) -> Applied {
    let Some(bucket) = view::bucket(t, name)? else { refuse!(MetaError::not_found(Kind::Bucket, name)) };
    if bucket.versioning != Versioning::Enabled {
        refuse!(MetaError::BucketState { bucket: name.into(), why: "object lock needs versioning enabled".into() });
    }
    if config.default_retention.is_some_and(|d| d.days == 0) {
        refuse!(MetaError::invalid("default retention", "a default retention is at least one day"));
    }
    t.put_rec("object lock", &keys::object_lock(name), config)?;
    Ok(Ok(Reply::Done))
}

pub(super) fn set_versioning(t: &mut impl TablesMut, name: &str, versioning: Versioning) -> Applied {
    let Some(mut bucket) = view::bucket(t, name)? else { refuse!(MetaError::not_found(Kind::Bucket, name)) };
    if versioning == Versioning::Unset {
        refuse!(MetaError::invalid("versioning", "a bucket's versioning can be Enabled or Suspended, not unset"));
    }
    if versioning != Versioning::Enabled && view::object_lock(t, name)?.is_some() {
        refuse!(MetaError::BucketState {
            bucket: name.into(),
            why: "versioning cannot be suspended while object lock is on".into()
        });
    }
    bucket.versioning = versioning;
    t.put_rec("bucket", &keys::bucket(name), &bucket)?;
    Ok(Ok(Reply::Bucket(bucket)))
}

/// Stores or removes one configuration document of a bucket.
pub(super) fn set_config(
    t: &mut impl TablesMut,
    name: &str,
    kind: BucketConfigKind,
    document: Option<&[u8]>,
) -> Applied {
    if view::bucket(t, name)?.is_none() {
        refuse!(MetaError::not_found(Kind::Bucket, name));
    }
    let key = keys::bucket_config(name, kind.name());
    match document {
        Some(d) if d.len() > BUCKET_CONFIG_MAX_BYTES => refuse!(MetaError::invalid(
            format!("bucket {} configuration", kind.name()),
            format!("{} bytes; at most {BUCKET_CONFIG_MAX_BYTES}", d.len())
        )),
        Some(d) => t.put_rec("bucket config", &key, &d.to_vec())?,
        None => t.delete(&key),
    }
    Ok(Ok(Reply::Done))
}

/// Sets the bucket's wrapped data key if it is still `old`: a
/// compare-and-set, so two gateways making a key at once cannot both win
/// (the loser would seal objects under a key no record keeps).
pub(super) fn set_bucket_key(t: &mut impl TablesMut, name: &str, old: Option<&[u8]>, new: &[u8]) -> Applied {
    let Some(mut bucket) = view::bucket(t, name)? else { refuse!(MetaError::not_found(Kind::Bucket, name)) };
    if new.is_empty() {
        refuse!(MetaError::invalid("bucket key", "the new wrapped key is empty"));
    }
    if bucket.settings.wrapped_key.as_deref() != old {
        refuse!(MetaError::invalid("bucket key", format!("bucket {name}'s key changed meanwhile")));
    }
    bucket.settings.wrapped_key = Some(new.to_vec());
    t.put_rec("bucket", &keys::bucket(name), &bucket)?;
    Ok(Ok(Reply::Bucket(bucket)))
}
