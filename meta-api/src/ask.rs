//! Typed reads: each query is a type that names the answer it gets, so a
//! caller writes `meta.ask(ask::Bucket(name))` and has a [`model::Bucket`],
//! and the one place a reply of the wrong kind is handled is
//! [`crate::client::MetaClient::ask`].

use crate::listing::{ListRequest, Listing};
use crate::model;
use crate::proto::{ApiReply, Query};

/// A query and the kind of its answer.
pub trait Ask {
    type Answer;
    fn query(self) -> Query;
    /// The answer in `reply`, or what `reply` was when of another kind.
    fn answer(reply: ApiReply) -> Result<Self::Answer, String>;
}

macro_rules! ask {
    ($ty:ty, |$s:pat_param| $query:expr, $reply:ident($answer:ty)) => {
        impl Ask for $ty {
            type Answer = $answer;
            fn query(self) -> Query {
                let $s = self;
                $query
            }
            fn answer(reply: ApiReply) -> Result<$answer, String> {
                match reply {
                    ApiReply::$reply(answer) => Ok(answer),
                    other => Err(format!("{other:?}")),
                }
            }
        }
    };
}

/// The cluster map.
#[derive(Debug, Clone)]
pub struct Map;
ask!(Map, |_| Query::Map, Map(model::ClusterMap));

#[derive(Debug, Clone)]
pub struct Pools;
ask!(Pools, |_| Query::Pools, Pools(Vec<model::Pool>));

/// A volume by name.
#[derive(Debug, Clone)]
pub struct Volume(pub String);
ask!(Volume, |Volume(name)| Query::Volume(name), Volume(model::Volume));

#[derive(Debug, Clone)]
pub struct Volumes;
ask!(Volumes, |_| Query::Volumes, Volumes(Vec<model::Volume>));

/// A user by access key.
#[derive(Debug, Clone)]
pub struct User(pub String);
ask!(User, |User(access_key)| Query::User(access_key), User(model::User));

#[derive(Debug, Clone)]
pub struct Users;
ask!(Users, |_| Query::Users, Users(Vec<model::User>));

/// A bucket by name.
#[derive(Debug, Clone)]
pub struct Bucket(pub String);
ask!(Bucket, |Bucket(name)| Query::Bucket(name), Bucket(model::Bucket));

/// One configuration document of a bucket, if it has one.
#[derive(Debug, Clone)]
pub struct BucketConfig {
    pub bucket: String,
    pub kind: model::BucketConfigKind,
}
ask!(BucketConfig, |BucketConfig { bucket, kind }| Query::BucketConfig { bucket, kind }, Document(Option<Vec<u8>>));

/// A bucket's object lock configuration; `None` when object lock is off.
#[derive(Debug, Clone)]
pub struct ObjectLock(pub String);
ask!(ObjectLock, |ObjectLock(bucket)| Query::ObjectLock(bucket), ObjectLock(Option<model::ObjectLockConfig>));

#[derive(Debug, Clone)]
pub struct Buckets;
ask!(Buckets, |_| Query::Buckets, Buckets(Vec<model::Bucket>));

/// An object's latest version, or the version named.
#[derive(Debug, Clone)]
pub struct Object {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
}
ask!(
    Object,
    |Object { bucket, key, version_id }| Query::Object { bucket, key, version_id },
    Object(model::ObjectRecord)
);

/// A page of a bucket's objects or versions.
#[derive(Debug, Clone)]
pub struct List(pub ListRequest);
ask!(List, |List(request)| Query::List(request), Listing(Listing));

/// What a pool's new volumes get by default.
#[derive(Debug, Clone)]
pub struct PoolDefaults(pub String);
ask!(PoolDefaults, |PoolDefaults(pool)| Query::PoolDefaults(pool), PoolDefaults(model::PoolDefaults));

/// Objects and bytes a bucket holds.
#[derive(Debug, Clone)]
pub struct BucketUsage(pub String);
ask!(BucketUsage, |BucketUsage(bucket)| Query::BucketUsage(bucket), BucketUsage(model::BucketUsage));

#[derive(Debug, Clone)]
pub struct Upload {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
}
ask!(Upload, |Upload { bucket, key, upload_id }| Query::Upload { bucket, key, upload_id }, Upload(model::Upload));

/// Up to `max` parts numbered above `after`.
#[derive(Debug, Clone)]
pub struct Parts {
    pub upload_id: String,
    pub after: u32,
    pub max: u32,
}
ask!(Parts, |Parts { upload_id, after, max }| Query::Parts { upload_id, after, max }, Parts(Vec<model::Part>));

/// Up to `max` uploads of keys starting with `prefix`, after (key, upload
/// id) `after`.
#[derive(Debug, Clone)]
pub struct Uploads {
    pub bucket: String,
    pub prefix: String,
    pub after: Option<(String, String)>,
    pub max: u32,
}
ask!(
    Uploads,
    |Uploads { bucket, prefix, after, max }| Query::Uploads { bucket, prefix, after, max },
    Uploads(Vec<model::Upload>)
);

/// Up to `max` runs of object data waiting to be deleted, in owner order,
/// those after owner `after`.
#[derive(Debug, Clone)]
pub struct Garbage {
    pub max: u32,
    pub after: Option<u64>,
}
ask!(Garbage, |Garbage { max, after }| Query::GarbageAfter { max, after }, Garbage(Vec<model::DataRun>));

/// How many pending runs' time is up at `now_ms`.
#[derive(Debug, Clone)]
pub struct ExpiredPending {
    pub now_ms: u64,
}
ask!(ExpiredPending, |ExpiredPending { now_ms }| Query::ExpiredPending { now_ms }, Count(u64));

/// Up to `max` sparse packs, owners from `after`.
#[derive(Debug, Clone)]
pub struct SparsePacks {
    pub after: u64,
    pub max: u32,
}
ask!(SparsePacks, |SparsePacks { after, max }| Query::SparsePacks { after, max }, Packs(Vec<(u64, model::Pack)>));

/// Up to `max` live runs of pack `owner` at offsets from `from`.
#[derive(Debug, Clone)]
pub struct PackRefs {
    pub owner: u64,
    pub from: u64,
    pub max: u32,
}
ask!(PackRefs, |PackRefs { owner, from, max }| Query::PackRefs { owner, from, max }, PackRefs(Vec<model::PackRef>));

/// How many packs could be freed at `now_ms`.
#[derive(Debug, Clone)]
pub struct FreeablePacks {
    pub now_ms: u64,
    pub grace_ms: u64,
}
ask!(FreeablePacks, |FreeablePacks { now_ms, grace_ms }| Query::FreeablePacks { now_ms, grace_ms }, Count(u64));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_of_another_kind_comes_back() {
        assert_eq!(<ExpiredPending as Ask>::answer(ApiReply::Count(3)).ok(), Some(3));
        assert_eq!(<Buckets as Ask>::answer(ApiReply::Count(3)).err().as_deref(), Some("Count(3)"));
        assert!(matches!(Bucket("b".into()).query(), Query::Bucket(name) if name == "b"));
    }
}

/// Every QoS rule, and the rules' version.
#[derive(Debug, Clone)]
pub struct QosRules;

impl Ask for QosRules {
    type Answer = (u64, Vec<crate::qos::QosRule>);
    fn query(self) -> Query {
        Query::QosRules
    }
    fn answer(reply: ApiReply) -> Result<Self::Answer, String> {
        match reply {
            ApiReply::QosRules { version, rules } => Ok((version, rules)),
            other => Err(format!("{other:?}")),
        }
    }
}

/// The recycle bin: the cluster's retention, and every deleted volume.
#[derive(Debug, Clone)]
pub struct Trash;

impl Ask for Trash {
    type Answer = (u64, Vec<model::TrashEntry>);
    fn query(self) -> Query {
        Query::Trash
    }
    fn answer(reply: ApiReply) -> Result<Self::Answer, String> {
        match reply {
            ApiReply::Trash { retention_ms, entries } => Ok((retention_ms, entries)),
            other => Err(format!("{other:?}")),
        }
    }
}

/// A volume's snapshots and snap sequence.
#[derive(Debug, Clone)]
pub struct Snapshots(pub String);

impl Ask for Snapshots {
    type Answer = model::VolumeSnapshots;
    fn query(self) -> Query {
        Query::Snapshots(self.0)
    }
    fn answer(reply: ApiReply) -> Result<Self::Answer, String> {
        match reply {
            ApiReply::Snapshots(snapshots) => Ok(snapshots),
            other => Err(format!("{other:?}")),
        }
    }
}

/// What snapshot schedules want done now: snapshots due (volume,
/// interval) and expired (volume, name).
#[derive(Debug, Clone)]
pub struct SnapshotWork;

impl Ask for SnapshotWork {
    type Answer = (Vec<(String, u64)>, Vec<(String, String)>);
    fn query(self) -> Query {
        Query::SnapshotWork
    }
    fn answer(reply: ApiReply) -> Result<Self::Answer, String> {
        match reply {
            ApiReply::SnapshotWork { due, expired } => Ok((due, expired)),
            other => Err(format!("{other:?}")),
        }
    }
}

/// Every snapshot schedule.
#[derive(Debug, Clone)]
pub struct SnapshotSchedules;

impl Ask for SnapshotSchedules {
    type Answer = Vec<(crate::schedule::ScheduleScope, crate::schedule::SnapshotSchedule)>;
    fn query(self) -> Query {
        Query::SnapshotSchedules
    }
    fn answer(reply: ApiReply) -> Result<Self::Answer, String> {
        match reply {
            ApiReply::SnapshotSchedules(all) => Ok(all),
            other => Err(format!("{other:?}")),
        }
    }
}

/// Every backup schedule, with its run state.
#[derive(Debug, Clone)]
pub struct BackupSchedules;

impl Ask for BackupSchedules {
    type Answer = Vec<crate::backup_schedule::BackupSchedule>;
    fn query(self) -> Query {
        Query::BackupSchedules
    }
    fn answer(reply: ApiReply) -> Result<Self::Answer, String> {
        match reply {
            ApiReply::BackupSchedules(all) => Ok(all),
            other => Err(format!("{other:?}")),
        }
    }
}

/// The snapshots of the volume whose chunk owner id this is.
#[derive(Debug, Clone)]
pub struct SnapshotsOf(pub u64);

impl Ask for SnapshotsOf {
    type Answer = model::VolumeSnapshots;
    fn query(self) -> Query {
        Query::SnapshotsOf(self.0)
    }
    fn answer(reply: ApiReply) -> Result<Self::Answer, String> {
        match reply {
            ApiReply::Snapshots(snapshots) => Ok(snapshots),
            other => Err(format!("{other:?}")),
        }
    }
}
