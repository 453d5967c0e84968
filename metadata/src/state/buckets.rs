//! Applying the commands about buckets: create, delete, versioning.

use super::apply::{Applied, Ctx};
use super::error::{Kind, MetaError};
use super::keys;
use super::model::{Bucket, BucketConfigKind, Versioning, BUCKET_CONFIG_MAX_BYTES};
use super::names;
use super::tables::TablesMut;
use super::Reply;
use super::{uploads, view};

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
    Ok(Ok(Reply::Done))
}

pub(super) fn set_versioning(t: &mut impl TablesMut, name: &str, versioning: Versioning) -> Applied {
    let Some(mut bucket) = view::bucket(t, name)? else { refuse!(MetaError::not_found(Kind::Bucket, name)) };
    if versioning == Versioning::Unset {
        refuse!(MetaError::invalid("versioning", "a bucket's versioning can be Enabled or Suspended, not unset"));
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
