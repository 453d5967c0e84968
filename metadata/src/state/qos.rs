//! Applying the commands about QoS rules: set and delete, and dropping the
//! rules of what is deleted (a user, a bucket, a volume, a pool).

use chuyi_meta_api::qos::{QosRule, QosScope};

use super::apply::Applied;
use super::error::{Kind, MetaError};
use super::keys;
use super::tables::{TableError, TablesMut};
use super::view;
use super::Reply;

pub(super) fn set_qos_rule(t: &mut impl TablesMut, rule: &QosRule) -> Applied {
    if let Some(why) = rule.limits.problem() {
        refuse!(MetaError::invalid("QoS rule", why));
    }
    if let Some(missing) = missing_subject(t, &rule.scope)? {
        refuse!(missing);
    }
    if t.get_rec::<QosRule>("QoS rule", &keys::qos(&rule.scope))?.is_none()
        && view::qos_rules(t)?.len() >= QOS_RULES_MAX
    {
        refuse!(MetaError::invalid("QoS rule", format!("the cluster holds its maximum of {QOS_RULES_MAX} rules")));
    }
    put_rule(t, rule)?;
    Ok(Ok(Reply::Done))
}

/// Rules at most: every frontend gets all of them in one reply.
pub const QOS_RULES_MAX: usize = 10_000;

/// Stores `rule` (checked) and moves the rules' version.
pub(super) fn put_rule(t: &mut impl TablesMut, rule: &QosRule) -> Result<(), TableError> {
    t.put_rec("QoS rule", &keys::qos(&rule.scope), rule)?;
    bump_version(t)
}

pub(super) fn delete_qos_rule(t: &mut impl TablesMut, scope: &QosScope) -> Applied {
    let key = keys::qos(scope);
    if t.get_rec::<QosRule>("QoS rule", &key)?.is_none() {
        refuse!(MetaError::not_found(Kind::QosRule, scope.to_string()));
    }
    t.delete(&key);
    bump_version(t)?;
    Ok(Ok(Reply::Done))
}

/// Drops every rule that names something being deleted, `names`
/// answering for each scope.
pub(super) fn drop_rules(t: &mut impl TablesMut, names: impl Fn(&QosScope) -> bool) -> Result<(), TableError> {
    let doomed: Vec<QosScope> = view::qos_rules(t)?.into_iter().map(|r| r.scope).filter(|s| names(s)).collect();
    if doomed.is_empty() {
        return Ok(());
    }
    for scope in &doomed {
        t.delete(&keys::qos(scope));
    }
    bump_version(t)
}

/// The refusal for a rule about a user, bucket, volume or pool that does
/// not exist.
fn missing_subject(t: &impl TablesMut, scope: &QosScope) -> Result<Option<MetaError>, TableError> {
    let user = |t: &_, name: &str| -> Result<Option<MetaError>, TableError> {
        Ok(view::user_by_name(t, name)?.is_none().then(|| MetaError::not_found(Kind::User, name)))
    };
    let bucket = |t: &_, name: &str| -> Result<Option<MetaError>, TableError> {
        Ok(view::bucket(t, name)?.is_none().then(|| MetaError::not_found(Kind::Bucket, name)))
    };
    match scope {
        QosScope::User(name) => user(t, name),
        QosScope::Bucket(name) => bucket(t, name),
        QosScope::UserBucket { user: u, bucket: b } => Ok(user(t, u)?.or(bucket(t, b)?)),
        QosScope::Volume(name) => {
            Ok(view::volume(t, name)?.is_none().then(|| MetaError::not_found(Kind::Volume, name)))
        }
        QosScope::Pool(name) => Ok(view::pool(t, name)?.is_none().then(|| MetaError::not_found(Kind::Pool, name))),
    }
}

fn bump_version(t: &mut impl TablesMut) -> Result<(), TableError> {
    let version = view::qos_version(t)? + 1;
    t.put_rec("QoS version", keys::QOS_VERSION, &version)
}
