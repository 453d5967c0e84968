//! Applying the commands about S3 users.

use super::apply::Applied;
use super::error::{Kind, MetaError};
use super::keys;
use super::model::User;
use super::names;
use super::tables::TablesMut;
use super::view;
use super::Reply;
use chuyi_meta_api::qos::QosScope;

pub(super) fn create_user(t: &mut impl TablesMut, user: User) -> Applied {
    if let Err(e) = names::check_name("user name", &user.name).and(names::check_access_key(&user.access_key)) {
        refuse!(e);
    }
    if t.get(&keys::user_name(&user.name))?.is_some() {
        refuse!(MetaError::exists(Kind::User, &user.name));
    }
    if t.get(&keys::user(&user.access_key))?.is_some() {
        refuse!(MetaError::exists(Kind::AccessKey, &user.access_key));
    }
    t.put_rec("user name", &keys::user_name(&user.name), &user.access_key)?;
    t.put_rec("user", &keys::user(&user.access_key), &user)?;
    Ok(Ok(Reply::User(user)))
}

pub(super) fn delete_user(t: &mut impl TablesMut, name: &str) -> Applied {
    let Some(user) = view::user_by_name(t, name)? else { refuse!(MetaError::not_found(Kind::User, name)) };
    if let Some(b) = view::buckets(t)?.into_iter().find(|b| b.owner == name) {
        refuse!(MetaError::InUse { kind: Kind::User, name: name.into(), user_kind: Kind::Bucket, user: b.name });
    }
    t.delete(&keys::user_name(name));
    t.delete(&keys::user(&user.access_key));
    super::qos::drop_rules(t, |s| match s {
        QosScope::User(u) | QosScope::UserBucket { user: u, .. } => u == name,
        QosScope::Bucket(_) | QosScope::Volume(_) | QosScope::Pool(_) => false,
    })?;
    Ok(Ok(Reply::Done))
}
