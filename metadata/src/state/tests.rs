//! Apply driven through the in-memory tables: every refusal changes nothing,
//! every success does what its command says.

use chuyi_common::ids::DeviceClass;
use chuyi_common::seal::Sealed;
use chuyi_meta_api::model::DEFAULT_TRASH_RETENTION_MS;

use super::apply::{apply, Ctx};
use super::command::Command;
use super::error::{Kind, MetaError};
use super::listing::{list, ListCursor, ListRequest};
use super::model::{
    BucketConfigKind, BucketSettings, DataRun, DefaultRetention, DiskRecord, DiskState, LockMode, LockRefusal,
    NodeState, ObjectLockConfig, ObjectPut, Pack, PgHealth, PoolDefaults, Redundancy, Retention, Versioning,
    VolumeState, WriteCondition, ACL_HEADER, BUCKET_CONFIG_MAX_BYTES, PACK_BYTES, TAGGING_HEADER,
};
use super::tables::memory::MemTables;
use super::view;
use super::Reply;

const GIB: u64 = 1 << 30;

struct World {
    t: MemTables,
    now_ms: u64,
    seq: u64,
}

impl World {
    fn new() -> Self {
        Self { t: MemTables::default(), now_ms: 1_000_000, seq: 1 << 16 }
    }

    /// Applies like the state machine: a refusal is rolled back.
    fn run(&mut self, command: Command) -> Result<Reply, MetaError> {
        self.seq += 1;
        let before = self.t.clone();
        let result = apply(&mut self.t, Ctx { now_ms: self.now_ms, seq: self.seq }, &command).expect("store works");
        if result.is_err() {
            assert_eq!(self.t, before, "a refused {command:?} staged writes");
            self.t = before;
        }
        result
    }

    fn ok(&mut self, command: Command) -> Reply {
        self.run(command.clone()).unwrap_or_else(|e| panic!("{command:?}: {e}"))
    }

    fn register(&mut self, id: u32, disks: u32) {
        let disks = (0..disks)
            .map(|d| DiskRecord {
                id: d,
                class: DeviceClass::Ssd,
                capacity_bytes: 100 * GIB,
                used_bytes: 0,
                state: DiskState::Up,
            })
            .collect();
        self.ok(Command::RegisterNode {
            id,
            addrs: vec![format!("10.0.0.{id}:7101")],
            failure_domain: format!("rack{id}"),
            disks,
        });
    }

    fn cluster(nodes: u32) -> Self {
        let mut w = Self::new();
        for id in 1..=nodes {
            w.register(id, 2);
        }
        w.ok(Command::CreatePool {
            name: "ssd".into(),
            class: DeviceClass::Ssd,
            redundancy: Redundancy::Replicated(2),
            pg_count: 64,
            separate_failure_domains: false,
        });
        w.ok(Command::CreateUser {
            name: "alice".into(),
            access_key: "AKIAALICE0000001".into(),
            secret: Sealed(vec![1; 40]),
            admin: false,
        });
        w.ok(Command::CreateBucket { name: "scans".into(), owner: "alice".into(), pool: "ssd".into() });
        w
    }

    /// Reserves a run of `len` bytes of object data, as the gateway does
    /// before writing it.
    fn begin(&mut self, len: u64) -> DataRun {
        match self.ok(Command::BeginData { pool: "ssd".into(), len, ttl_ms: 60_000 }) {
            Reply::Data { owner } => DataRun::owned(owner, len),
            other => panic!("{other:?}"),
        }
    }

    fn put(&mut self, key: &str, size: u64) -> String {
        let run = self.begin(size);
        self.put_run(key, run).expect("put")
    }

    fn put_run(&mut self, key: &str, run: DataRun) -> Result<String, MetaError> {
        let object = ObjectPut {
            size: run.len,
            etag: format!("etag-{}", run.len),
            content_type: "application/dicom".into(),
            data: vec![run],
            ..ObjectPut::default()
        };
        match self.run(Command::PutObject { bucket: "scans".into(), key: key.into(), object })? {
            Reply::ObjectPut { version_id, .. } => Ok(version_id),
            other => panic!("{other:?}"),
        }
    }

    fn garbage(&self) -> Vec<DataRun> {
        view::garbage(&self.t, None, usize::MAX).expect("garbage")
    }

    fn usage(&self) -> (u64, u64) {
        let u = view::bucket_usage(&self.t, "scans").expect("usage");
        (u.objects, u.bytes)
    }

    fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<ListCursor>,
        max_keys: u32,
        versions: bool,
    ) -> super::Listing {
        let req = ListRequest {
            bucket: "scans".into(),
            prefix: prefix.into(),
            delimiter: delimiter.map(Into::into),
            after,
            max_keys,
            versions,
        };
        list(&self.t, &req).expect("list")
    }
}

#[test]
fn duplicates_and_unknowns_are_refused_without_change() {
    let mut w = World::cluster(3);
    let dup_pool = Command::CreatePool {
        name: "ssd".into(),
        class: DeviceClass::Ssd,
        redundancy: Redundancy::Replicated(2),
        pg_count: 8,
        separate_failure_domains: false,
    };
    assert_eq!(w.run(dup_pool), Err(MetaError::exists(Kind::Pool, "ssd")));
    let unknown_pool = Command::CreateVolume {
        name: "vm1".into(),
        pool: "nope".into(),
        size_bytes: GIB,
        chunk_size_bytes: 4 << 20,
        wrapped_key: vec![],
    };
    assert_eq!(w.run(unknown_pool), Err(MetaError::not_found(Kind::Pool, "nope")));
    let too_big = Command::CreateVolume {
        name: "vm1".into(),
        pool: "ssd".into(),
        size_bytes: 400 * GIB,
        chunk_size_bytes: 4 << 20,
        wrapped_key: vec![],
    };
    assert!(matches!(w.run(too_big), Err(MetaError::VolumeTooLarge { available, .. }) if available == 300 * GIB));
    let dup_key = Command::CreateUser {
        name: "bob".into(),
        access_key: "AKIAALICE0000001".into(),
        secret: Sealed(vec![]),
        admin: false,
    };
    assert_eq!(w.run(dup_key), Err(MetaError::exists(Kind::AccessKey, "AKIAALICE0000001")));
    let bad_bucket = Command::CreateBucket { name: "Bad_Name".into(), owner: "alice".into(), pool: "ssd".into() };
    assert!(matches!(w.run(bad_bucket), Err(MetaError::Invalid { .. })));
    assert!(matches!(w.run(Command::DeleteUser { name: "alice".into() }), Err(MetaError::InUse { .. })));
}

#[test]
fn leases_exclude_other_holders_until_expiry_and_refuse_stale_renewals() {
    let mut w = World::cluster(2);
    w.ok(Command::CreateVolume {
        name: "vm1".into(),
        pool: "ssd".into(),
        size_bytes: 10 * GIB,
        chunk_size_bytes: 4 << 20,
        wrapped_key: vec![7],
    });
    let Reply::Lease(lease) = w.ok(Command::AcquireLease { volume: "vm1".into(), holder: "fe-a".into(), ttl_ms: 5000 })
    else {
        panic!()
    };
    let other = Command::AcquireLease { volume: "vm1".into(), holder: "fe-b".into(), ttl_ms: 5000 };
    assert!(matches!(w.run(other.clone()), Err(MetaError::LeaseHeld { .. })));
    assert!(matches!(w.run(Command::DeleteVolume { name: "vm1".into() }), Err(MetaError::LeaseHeld { .. })));
    w.now_ms += 4000;
    w.ok(Command::RenewLease { volume: "vm1".into(), holder: "fe-a".into(), lease_id: lease.id, ttl_ms: 5000 });
    w.now_ms += 5001;
    // Expired: the old holder may not renew, another may take it.
    let renew = Command::RenewLease { volume: "vm1".into(), holder: "fe-a".into(), lease_id: lease.id, ttl_ms: 5000 };
    assert!(matches!(w.run(renew), Err(MetaError::StaleLease { .. })));
    let Reply::Lease(taken) = w.ok(other) else { panic!() };
    assert_ne!(taken.id, lease.id);
    let release_old = Command::ReleaseLease { volume: "vm1".into(), holder: "fe-a".into(), lease_id: lease.id };
    assert!(matches!(w.run(release_old), Err(MetaError::StaleLease { .. })));
    w.ok(Command::ReleaseLease { volume: "vm1".into(), holder: "fe-b".into(), lease_id: taken.id });
    w.ok(Command::DeleteVolume { name: "vm1".into() });
}

/// A volume deleted for good, at once or purged from the recycle bin,
/// takes its backup schedules with it: one created later under the name
/// has none to run. In the bin it keeps them (it may come back).
#[test]
fn backup_schedules_go_with_their_volume() {
    use chuyi_meta_api::backup_schedule::BackupSchedule;
    let mut w = World::cluster(2);
    let create = create_volume("vm1", Vec::new());
    w.ok(create.clone());
    let schedule = BackupSchedule {
        volume: "vm1".into(),
        target: "s3://backups/vm1".into(),
        endpoint: "http://127.0.0.1:9000".into(),
        region: "us-east-1".into(),
        access_key: "AK".into(),
        wrapped_secret: vec![1; 40],
        every_ms: 3_600_000,
        keep: Default::default(),
        bandwidth: String::new(),
        drill_every_ms: 0,
        run: Default::default(),
    };
    let set = Command::SetBackupSchedule { schedule: Box::new(schedule) };
    w.ok(set.clone());
    let delete = Command::DeleteBackupSchedule { volume: "vm1".into(), target: "s3://backups/vm1".into() };
    w.ok(Command::DeleteVolume { name: "vm1".into() });
    w.ok(create.clone());
    assert!(matches!(w.run(delete.clone()), Err(MetaError::Invalid { .. })), "the schedule went with the volume");
    w.ok(set);
    w.ok(Command::TrashVolume { name: "vm1".into(), retain_ms: Some(0) });
    let Reply::Purging { token, .. } = w.ok(Command::BeginPurge { name: "vm1".into(), force: true }) else {
        panic!("no purge")
    };
    w.ok(Command::EndPurge { name: "vm1".into(), token });
    w.ok(create);
    assert!(matches!(w.run(delete), Err(MetaError::Invalid { .. })), "the schedule went with the purged volume");
}

#[test]
fn volume_keys_are_rewrapped_only_from_their_value_and_destroyed_only_by_the_holder() {
    let mut w = World::cluster(2);
    w.ok(Command::CreateVolume {
        name: "vm1".into(),
        pool: "ssd".into(),
        size_bytes: 10 * GIB,
        chunk_size_bytes: 4 << 20,
        wrapped_key: vec![1],
    });
    let stale = Command::RewrapVolumeKey { name: "vm1".into(), old: vec![9], new: vec![2] };
    assert!(matches!(w.run(stale), Err(MetaError::Invalid { .. })), "not from a value it no longer has");
    let Reply::Volume(v) = w.ok(Command::RewrapVolumeKey { name: "vm1".into(), old: vec![1], new: vec![2] }) else {
        panic!()
    };
    assert_eq!(v.wrapped_key, vec![2]);
    w.ok(Command::AcquireLease { volume: "vm1".into(), holder: "fe-a".into(), ttl_ms: 5000 });
    let by_other = Command::DestroyVolumeKey { name: "vm1".into(), holder: "deleter".into() };
    assert!(matches!(w.run(by_other.clone()), Err(MetaError::LeaseHeld { .. })));
    w.now_ms += 5001;
    let Reply::Volume(v) = w.ok(by_other) else { panic!() };
    assert!(v.wrapped_key.is_empty() && v.state == VolumeState::KeyDestroyed);
    let rewrap = Command::RewrapVolumeKey { name: "vm1".into(), old: vec![], new: vec![3] };
    assert!(matches!(w.run(rewrap), Err(MetaError::Invalid { .. })), "a destroyed key stays destroyed");
    w.ok(create_volume("plain", vec![]));
    let plain = Command::DestroyVolumeKey { name: "plain".into(), holder: "x".into() };
    assert!(matches!(w.run(plain), Err(MetaError::Invalid { .. })));
    // A pool that encrypts every volume refuses one without a key.
    w.ok(Command::SetPoolDefaults { pool: "ssd".into(), defaults: PoolDefaults { encrypt: true } });
    let unencrypted = create_volume("plain2", vec![]);
    assert!(matches!(w.run(unencrypted), Err(MetaError::Invalid { .. })));
    let missing = Command::SetPoolDefaults { pool: "nope".into(), defaults: PoolDefaults::default() };
    assert!(matches!(w.run(missing), Err(MetaError::NotFound { .. })));
}

#[test]
fn a_silent_node_goes_down_and_its_pgs_move_with_an_epoch_bump() {
    let mut w = World::cluster(3);
    let epoch = view::epoch(&w.t).expect("epoch");
    // Not silent long enough: nothing happens.
    w.now_ms += 4000;
    assert_eq!(w.ok(Command::MarkNodeDown { id: 3, timeout_ms: 5000 }), Reply::Done);
    w.now_ms += 1000;
    for id in [1, 2] {
        let disks = view::node(&w.t, id).expect("read").expect("node").disks;
        w.ok(Command::Heartbeat { id, disks });
    }
    let Reply::Moves { epoch: after, changes } = w.ok(Command::MarkNodeDown { id: 3, timeout_ms: 5000 }) else {
        panic!()
    };
    assert_eq!(after, epoch + 1);
    assert!(!changes.is_empty());
    assert_eq!(view::node(&w.t, 3).expect("read").expect("node").state, NodeState::Down);
    let pool = view::pool(&w.t, "ssd").expect("read").expect("pool");
    for pg in view::pgs(&w.t, pool.id).expect("pgs") {
        assert!(pg.replicas.iter().all(|d| d.node != 3), "PG {} still on node 3", pg.pg);
        assert_eq!(pg.replicas.len(), 2);
        let moved = changes.iter().any(|c| c.change.pg == pg.pg);
        assert_eq!(pg.health(&pool) == PgHealth::Recovering, moved, "PG {}", pg.pg);
    }
}

#[test]
fn versioning_keeps_versions_and_delete_markers() {
    let mut w = World::cluster(2);
    assert_eq!(w.put("a", 1), "null");
    assert_eq!(w.put("a", 2), "null", "an unversioned put replaces the null version");
    w.ok(Command::SetVersioning { bucket: "scans".into(), versioning: Versioning::Enabled });
    let v3 = w.put("a", 3);
    assert_ne!(v3, "null");
    let Reply::ObjectDeleted { version_id: Some(marker), delete_marker: true } =
        w.ok(Command::DeleteObject { bucket: "scans".into(), key: "a".into(), version_id: None })
    else {
        panic!()
    };
    assert!(w.list("", None, None, 100, false).entries.is_empty(), "a delete marker hides the key");
    let versions = w.list("", None, None, 100, true);
    let ids: Vec<_> = versions.entries.iter().map(|e| (e.object.version_id.clone(), e.is_latest)).collect();
    assert_eq!(ids, vec![(marker.clone(), true), (v3.clone(), false), ("null".into(), false)]);
    w.ok(Command::DeleteObject { bucket: "scans".into(), key: "a".into(), version_id: Some(marker) });
    assert_eq!(w.list("", None, None, 100, false).entries[0].object.version_id, v3);

    // Paging versions one at a time resumes inside a key, is_latest intact.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = w.list("", None, after.clone(), 1, true);
        seen.extend(page.entries.iter().map(|e| (e.object.version_id.clone(), e.is_latest)));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, vec![(v3.clone(), true), ("null".into(), false)]);
    assert!(matches!(w.run(Command::DeleteBucket { name: "scans".into() }), Err(MetaError::BucketNotEmpty(_))));
}

#[test]
fn conditional_puts_apply_only_when_their_condition_holds() {
    let mut w = World::cluster(2);
    let put_if = |w: &mut World, len: u64, condition: WriteCondition| {
        let run = w.begin(len);
        let object = ObjectPut { size: len, etag: format!("etag-{len}"), data: vec![run], ..ObjectPut::default() };
        w.run(Command::PutObjectIf { bucket: "scans".into(), key: "a".into(), object, condition })
    };
    let etag = |e: &str| WriteCondition::ETag(e.into());
    let failed = |r: &Result<Reply, MetaError>| matches!(r, Err(MetaError::ConditionFailed { key, .. }) if key == "a");
    assert!(put_if(&mut w, 1, WriteCondition::Absent).is_ok(), "create-only on an absent key");
    assert!(failed(&put_if(&mut w, 2, WriteCondition::Absent)), "create-only on an existing key");
    assert!(put_if(&mut w, 3, etag("etag-1")).is_ok(), "If-Match on the current ETag");
    assert!(failed(&put_if(&mut w, 4, etag("etag-1"))), "If-Match on a replaced ETag");
    w.ok(Command::SetVersioning { bucket: "scans".into(), versioning: Versioning::Enabled });
    w.ok(Command::DeleteObject { bucket: "scans".into(), key: "a".into(), version_id: None });
    let missing = put_if(&mut w, 5, etag("etag-3"));
    assert!(
        matches!(missing, Err(MetaError::NotFound { kind: Kind::Object, .. })),
        "If-Match under a delete marker: {missing:?}"
    );
    assert!(put_if(&mut w, 6, WriteCondition::Absent).is_ok(), "a delete marker is no object");
    let current = view::latest_object(&w.t, "scans", "a").expect("read").expect("a version");
    assert_eq!(current.data.etag, "etag-6");
    assert_eq!(w.list("", None, None, 100, true).entries.len(), 3, "6, the delete marker, and 3 (which replaced 1)");
    // The refused puts claimed nothing (their data stays pending, for the
    // gateway to abandon); only 1, replaced, is garbage.
    assert_eq!(w.garbage().iter().map(|run| run.len).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn bucket_configs_and_object_tags_are_kept_and_go_with_their_bucket() {
    let mut w = World::cluster(2);
    let config = |w: &mut World, bucket: &str, document: Option<Vec<u8>>| {
        w.run(Command::SetBucketConfig { bucket: bucket.into(), kind: BucketConfigKind::Cors, document })
    };
    let stored = |w: &World| view::bucket_config(&w.t, "scans", BucketConfigKind::Cors).expect("read");
    config(&mut w, "scans", Some(b"<CORSConfiguration/>".to_vec())).expect("set");
    assert_eq!(stored(&w).as_deref(), Some(&b"<CORSConfiguration/>"[..]));
    assert_eq!(view::bucket_config(&w.t, "scans", BucketConfigKind::Tagging).expect("read"), None, "kinds apart");
    let big = config(&mut w, "scans", Some(vec![b'x'; BUCKET_CONFIG_MAX_BYTES + 1]));
    assert!(matches!(big, Err(MetaError::Invalid { .. })), "{big:?}");
    assert_eq!(stored(&w).as_deref(), Some(&b"<CORSConfiguration/>"[..]), "a refused document changed nothing");
    assert!(matches!(config(&mut w, "nope", None), Err(MetaError::NotFound { kind: Kind::Bucket, .. })));

    let tags = |w: &mut World, version_id: Option<String>, tags: &str| {
        let (bucket, key) = ("scans".into(), "a".into());
        w.run(Command::SetObjectTags { bucket, key, version_id, tags: tags.into() })
    };
    let tagging = |w: &World| {
        let record = view::latest_object(&w.t, "scans", "a").expect("read").expect("a");
        record.data.headers.iter().filter(|(n, _)| n == TAGGING_HEADER).map(|(_, v)| v.clone()).collect::<Vec<_>>()
    };
    assert!(matches!(tags(&mut w, None, "x=1"), Err(MetaError::NotFound { kind: Kind::Object, .. })));
    let v = w.put("a", 1);
    tags(&mut w, None, "study=ct&ward=3").expect("tag");
    assert_eq!(tagging(&w), vec!["study=ct&ward=3".to_string()]);
    tags(&mut w, Some(v), "study=mr").expect("tag by version");
    assert_eq!(tagging(&w), vec!["study=mr".to_string()], "replaced, not added");
    tags(&mut w, None, "").expect("untag");
    assert!(tagging(&w).is_empty());
    assert!(matches!(tags(&mut w, Some("nope".into()), "x=1"), Err(MetaError::NotFound { kind: Kind::Version, .. })));

    let acl = |w: &mut World, acl: &str| {
        w.run(Command::SetObjectAcl { bucket: "scans".into(), key: "a".into(), version_id: None, acl: acl.into() })
    };
    let header = |w: &World, name: &str| {
        let record = view::latest_object(&w.t, "scans", "a").expect("read").expect("a");
        record.data.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect::<Vec<_>>()
    };
    tags(&mut w, None, "study=ct").expect("tag");
    acl(&mut w, r#"{"grants":[]}"#).expect("acl");
    assert_eq!(header(&w, ACL_HEADER), vec![r#"{"grants":[]}"#.to_string()]);
    assert_eq!(header(&w, TAGGING_HEADER), vec!["study=ct".to_string()], "an ACL leaves the tags");
    let big = acl(&mut w, &"x".repeat(64 << 10));
    assert!(matches!(big, Err(MetaError::Invalid { .. })), "{big:?}");
    acl(&mut w, "").expect("private again");
    assert!(header(&w, ACL_HEADER).is_empty());

    w.ok(Command::DeleteObject { bucket: "scans".into(), key: "a".into(), version_id: None });
    w.ok(Command::DeleteBucket { name: "scans".into() });
    assert_eq!(stored(&w), None, "the bucket's documents went with it");
}

#[test]
fn object_lock_holds_every_version_it_protects_until_its_date() {
    let mut w = World::cluster(2);
    w.ok(Command::CreateBucketLocked { name: "vault".into(), owner: "alice".into(), pool: "ssd".into() });
    let bucket = view::bucket(&w.t, "vault").expect("read").expect("bucket");
    assert_eq!(bucket.versioning, Versioning::Enabled, "object lock turns versioning on");
    let suspend = w.run(Command::SetVersioning { bucket: "vault".into(), versioning: Versioning::Suspended });
    assert!(matches!(suspend, Err(MetaError::BucketState { .. })), "{suspend:?}");
    let default = DefaultRetention { mode: LockMode::Compliance, days: 1 };
    w.ok(Command::SetObjectLockConfig {
        bucket: "vault".into(),
        config: ObjectLockConfig { default_retention: Some(default) },
    });

    // A put names no retention: it gets the default, one day from now.
    let run = w.begin(10);
    let object = ObjectPut { size: 10, etag: "e".into(), data: vec![run], ..ObjectPut::default() };
    let Reply::ObjectPut { version_id, .. } =
        w.ok(Command::PutObject { bucket: "vault".into(), key: "backup".into(), object })
    else {
        panic!()
    };
    let delete = |w: &mut World, bypass: bool| {
        let (bucket, key, version_id) = ("vault".into(), "backup".into(), Some(version_id.clone()));
        if bypass {
            w.run(Command::DeleteObjectBypass { bucket, key, version_id })
        } else {
            w.run(Command::DeleteObject { bucket, key, version_id })
        }
    };
    let locked = |r: &Result<Reply, MetaError>| matches!(r, Err(MetaError::Locked { .. }));
    assert!(locked(&delete(&mut w, false)));
    assert!(locked(&delete(&mut w, true)), "compliance is not bypassed");
    let target = |v: &str| (String::from("vault"), String::from("backup"), Some(v.to_string()));
    let shorten = |w: &mut World, mode, until_ms, bypass_governance| {
        let (bucket, key, version_id) = target(&version_id);
        let retention = Some(Retention { mode, until_ms });
        w.run(Command::SetRetention { bucket, key, version_id, retention, bypass_governance })
    };
    let sooner = w.now_ms + 1;
    assert!(locked(&shorten(&mut w, LockMode::Compliance, sooner, true)), "compliance shortened");
    let later = w.now_ms + 3 * 86_400_000;
    assert!(shorten(&mut w, LockMode::Compliance, later, false).is_ok(), "extended");
    // A delete without a version adds a marker; the locked version stays.
    assert!(w.run(Command::DeleteObject { bucket: "vault".into(), key: "backup".into(), version_id: None }).is_ok());
    w.now_ms = later + 1;
    // A legal hold outlasts any date.
    let (bucket, key, v) = target(&version_id);
    w.ok(Command::SetLegalHold { bucket, key, version_id: v, on: true });
    assert!(matches!(delete(&mut w, true), Err(MetaError::Locked { why: LockRefusal::LegalHold, .. })));
    let (bucket, key, v) = target(&version_id);
    w.ok(Command::SetLegalHold { bucket, key, version_id: v, on: false });
    assert!(delete(&mut w, false).is_ok(), "free once its date has passed and the hold is lifted");

    // A bucket without object lock takes no locked version.
    let run = w.begin(10);
    let mut object = ObjectPut { size: 10, etag: "e".into(), data: vec![run], ..ObjectPut::default() };
    object.set_legal_hold(true);
    let refused = w.run(Command::PutObject { bucket: "scans".into(), key: "x".into(), object });
    assert!(matches!(refused, Err(MetaError::BucketState { .. })), "{refused:?}");
}

/// Lifecycle removes a version only as it judged it (`RemoveVersion`): in
/// a bucket with versioning suspended a put replaces the null version, a
/// lone null delete marker included, under the same id, and the object
/// written since stays; a marker no longer alone stays too.
#[test]
fn a_planned_removal_spares_a_version_written_since() {
    let mut w = World::cluster(2);
    let latest = |w: &World, key: &str| view::latest_object(&w.t, "scans", key).expect("read").expect("a version");
    let remove = |w: &mut World, key: &str, version_id: &str, seq, lone_marker| {
        let (bucket, key, version_id) = ("scans".into(), key.into(), version_id.into());
        w.run(Command::RemoveVersion { bucket, key, version_id, seq, lone_marker })
    };
    let delete = |w: &mut World, key: &str| {
        w.ok(Command::DeleteObject { bucket: "scans".into(), key: key.into(), version_id: None })
    };
    w.ok(Command::SetVersioning { bucket: "scans".into(), versioning: Versioning::Suspended });
    w.put("k", 1);
    delete(&mut w, "k");
    let marker = latest(&w, "k");
    assert!(marker.delete_marker && marker.version_id == "null", "{marker:?}");
    w.put("k", 2);
    assert!(matches!(remove(&mut w, "k", "null", marker.seq, true), Ok(Reply::Count(0))));
    let written = latest(&w, "k");
    assert!(!written.delete_marker && written.data.size == 2, "the put after the marker stays: {written:?}");
    assert!(matches!(remove(&mut w, "k", "null", written.seq, true), Ok(Reply::Count(0))), "not a marker");
    assert!(matches!(remove(&mut w, "k", "null", written.seq, false), Ok(Reply::Count(0))), "not noncurrent");

    w.ok(Command::SetVersioning { bucket: "scans".into(), versioning: Versioning::Enabled });
    w.put("m", 1);
    delete(&mut w, "m");
    let marker = latest(&w, "m");
    let planned = |w: &mut World| remove(w, "m", &marker.version_id, marker.seq, true);
    w.put("m", 3);
    assert!(matches!(planned(&mut w), Ok(Reply::Count(0))), "a marker with a version above it stays");
    assert!(!latest(&w, "m").delete_marker);
    // Noncurrent as judged, it goes; made current again since, it stays.
    let first = w.put("n", 1);
    let second = w.put("n", 2);
    let old = view::object_version(&w.t, "scans", "n", &first, 10).expect("read").expect("first");
    w.ok(Command::DeleteObject { bucket: "scans".into(), key: "n".into(), version_id: Some(second) });
    assert!(matches!(remove(&mut w, "n", &first, old.seq, false), Ok(Reply::Count(0))), "the object again");
    w.put("n", 3);
    assert!(matches!(remove(&mut w, "n", &first, old.seq, false), Ok(Reply::Count(1))), "noncurrent, it goes");
    assert!(matches!(remove(&mut w, "m", "no-such-version", 1, false), Ok(Reply::Count(0))));
}

#[test]
fn listing_pages_through_prefixes_and_delimiters() {
    let mut w = World::cluster(2);
    for key in ["a/1", "a/2", "b", "c/x/1", "c/y", "d"] {
        w.put(key, 1);
    }
    let top = w.list("", Some("/"), None, 1000, false);
    assert_eq!(top.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["b", "d"]);
    assert_eq!(top.common_prefixes, ["a/", "c/"]);
    assert!(top.next.is_none());

    // Two items per page: a/ , b | c/ , d
    let p1 = w.list("", Some("/"), None, 2, false);
    assert_eq!((p1.common_prefixes.clone(), p1.entries.len()), (vec!["a/".to_string()], 1));
    let p2 = w.list("", Some("/"), p1.next.clone(), 2, false);
    assert_eq!(p2.common_prefixes, ["c/"]);
    assert_eq!(p2.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["d"]);
    assert!(p2.next.is_none());

    let under_c = w.list("c/", Some("/"), None, 1000, false);
    assert_eq!(under_c.common_prefixes, ["c/x/"]);
    assert_eq!(under_c.entries[0].key, "c/y");

    // A "folder" whose only key is deleted shows no common prefix.
    w.ok(Command::SetVersioning { bucket: "scans".into(), versioning: Versioning::Enabled });
    w.put("e/1", 1);
    w.ok(Command::DeleteObject { bucket: "scans".into(), key: "e/1".into(), version_id: None });
    assert_eq!(w.list("", Some("/"), None, 1000, false).common_prefixes, ["a/", "c/"]);
    assert_eq!(w.list("", Some("/"), None, 1000, true).common_prefixes, ["a/", "c/", "e/"]);

    let after = w.list("", None, Some(ListCursor::after_key("b")), 1000, false);
    assert_eq!(after.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["c/x/1", "c/y", "d"]);
    assert!(w.list("", None, None, 0, false).entries.is_empty());
}

/// A PG whose only complete replica dies is not handed to its half-filled
/// replica: it keeps naming the complete one (whose return is the way back
/// to the data). Everywhere else a complete survivor is the primary, and a
/// recovery report from an older epoch is refused.
#[test]
fn a_recovering_replica_never_becomes_the_only_copy_or_primary() {
    let mut w = World::cluster(3);
    w.now_ms += 6000;
    for id in [1, 2] {
        let disks = view::node(&w.t, id).expect("read").expect("node").disks;
        w.ok(Command::Heartbeat { id, disks });
    }
    w.ok(Command::MarkNodeDown { id: 3, timeout_ms: 5000 });
    let pool = view::pool(&w.t, "ssd").expect("read").expect("pool");
    let pgs = view::pgs(&w.t, pool.id).expect("pgs");
    let victim =
        pgs.iter().find(|pg| pg.recovering.len() == 1 && pg.replicas.len() == 2).expect("a recovering PG").clone();
    let complete = *victim.replicas.iter().find(|d| !victim.recovering.contains(d)).expect("a complete replica");
    let stale =
        Command::PgRecovered { pool: pool.id, pg: victim.pg, disk: victim.recovering[0], epoch: victim.epoch - 1 };
    assert!(matches!(w.run(stale), Err(MetaError::Invalid { .. })));

    // The complete replica's node dies too.
    w.now_ms += 6000;
    let survivor = victim.recovering[0].node;
    let disks = view::node(&w.t, survivor).expect("read").expect("node").disks;
    w.ok(Command::Heartbeat { id: survivor, disks });
    w.ok(Command::MarkNodeDown { id: complete.node, timeout_ms: 5000 });
    let after = view::pgs(&w.t, pool.id).expect("pgs");
    let kept = after.iter().find(|pg| pg.pg == victim.pg).expect("pg");
    assert_eq!(kept.replicas, victim.replicas, "the PG was handed to a replica without its data");
    // Every other PG that kept a complete replica has one as primary.
    for pg in after.iter().filter(|pg| pg.pg != victim.pg) {
        let before = pgs.iter().find(|b| b.pg == pg.pg).expect("same PG");
        let complete_survivors: Vec<_> =
            pg.replicas.iter().filter(|d| before.replicas.contains(d) && !before.recovering.contains(d)).collect();
        if !complete_survivors.is_empty() {
            assert!(
                complete_survivors.contains(&&pg.replicas[0]),
                "PG {}: primary {:?} lacks the data",
                pg.pg,
                pg.replicas[0]
            );
        }
    }
}

/// A rebalance move keeps the replica it moves away from, after the new
/// one, until the new one is backfilled: a primary lost mid-backfill then
/// leaves that complete copy as primary (before, the PG kept naming the
/// dead primary, its one complete copy). Once the new replica reports
/// recovered, the kept one leaves.
#[test]
fn a_rebalanced_pg_keeps_its_old_replica_until_the_new_one_is_backfilled() {
    let mut w = World::cluster(3);
    w.register(4, 2);
    let pool = view::pool(&w.t, "ssd").expect("read").expect("pool");
    let Reply::Moves { changes, .. } = w.ok(Command::Rebalance { max_moves: 8 }) else { panic!("PGs move") };
    let moved: Vec<_> = changes.iter().map(|c| c.change.clone()).collect();
    assert!(!moved.is_empty(), "an empty node attracts PGs");
    let pgs = view::pgs(&w.t, pool.id).expect("pgs");
    for change in &moved {
        let pg = pgs.iter().find(|pg| pg.pg == change.pg).expect("pg");
        let left: Vec<_> = change.from.iter().filter(|d| !change.to.contains(d)).copied().collect();
        let new: Vec<_> = change.to.iter().filter(|d| !change.from.contains(d)).copied().collect();
        assert_eq!(pg.replicas, [change.to.clone(), left].concat(), "PG {}: kept after the new", pg.pg);
        assert_eq!(pg.recovering, new, "PG {}", pg.pg);
        assert_eq!(pg.health(&pool), PgHealth::Recovering);
    }

    // One moved PG's new replica is backfilled: the kept replica leaves.
    let done = &moved[0];
    let pg = pgs.iter().find(|pg| pg.pg == done.pg).expect("pg").clone();
    w.ok(Command::PgRecovered { pool: pool.id, pg: pg.pg, disk: pg.recovering[0], epoch: pg.epoch });
    let after = view::pgs(&w.t, pool.id).expect("pgs");
    let pg = after.iter().find(|p| p.pg == done.pg).expect("pg");
    assert_eq!(pg.replicas, done.to, "the kept replica left");
    assert_eq!(pg.health(&pool), PgHealth::Clean);

    // Another one's primary dies before its new replica is backfilled: the
    // kept replica, complete and written all along, becomes primary.
    let Some(change) = moved[1..].iter().find(|c| c.to[0] == c.from[0]) else { panic!("a move that kept its primary") };
    let primary = change.to[0];
    let kept = *change.from.iter().find(|d| !change.to.contains(d)).expect("a kept replica");
    w.now_ms += 6000;
    for id in (1..=4).filter(|id| *id != primary.node) {
        let disks = view::node(&w.t, id).expect("read").expect("node").disks;
        w.ok(Command::Heartbeat { id, disks });
    }
    w.ok(Command::MarkNodeDown { id: primary.node, timeout_ms: 5000 });
    let after = view::pgs(&w.t, pool.id).expect("pgs");
    let pg = after.iter().find(|p| p.pg == change.pg).expect("pg");
    assert_eq!(pg.replicas[0], kept, "the kept copy is primary: {:?}", pg.replicas);
    assert!(!pg.recovering.contains(&kept));
    assert!(pg.replicas.iter().all(|d| d.node != primary.node));
}

#[test]
fn a_node_reported_unreachable_stays_down_for_a_doubling_penalty() {
    let mut w = World::cluster(3);
    let state = |w: &World| view::node(&w.t, 3).expect("read").expect("node").state;
    let heartbeat = |w: &mut World| {
        let disks = view::node(&w.t, 3).expect("read").expect("node").disks;
        w.ok(Command::Heartbeat { id: 3, disks });
    };
    assert!(matches!(w.run(Command::ReportUnreachable { reporter: 3, node: 3 }), Err(MetaError::Invalid { .. })));
    assert!(matches!(w.run(Command::ReportUnreachable { reporter: 9, node: 3 }), Err(MetaError::UnknownNode(9))));
    let Reply::Moves { .. } = w.ok(Command::ReportUnreachable { reporter: 1, node: 3 }) else { panic!("PGs move") };
    assert_eq!(state(&w), NodeState::Down);
    let pool = view::pool(&w.t, "ssd").expect("read").expect("pool");
    assert!(view::pgs(&w.t, pool.id).expect("pgs").iter().all(|pg| pg.replicas.iter().all(|d| d.node != 3)));
    // Its heartbeats do not bring it back during the first 10 s...
    w.now_ms += 9_000;
    heartbeat(&mut w);
    assert_eq!(state(&w), NodeState::Down);
    // ...and do after.
    w.now_ms += 2_000;
    heartbeat(&mut w);
    assert_eq!(state(&w), NodeState::Up);
    // Reported again soon after: 20 s this time.
    w.ok(Command::ReportUnreachable { reporter: 2, node: 3 });
    w.now_ms += 15_000;
    heartbeat(&mut w);
    assert_eq!(state(&w), NodeState::Down, "the second penalty is twice the first");
    w.now_ms += 6_000;
    heartbeat(&mut w);
    assert_eq!(state(&w), NodeState::Up);
    // A down reporter's word does not count.
    w.now_ms += 10_000;
    w.ok(Command::MarkNodeDown { id: 1, timeout_ms: 1 });
    assert_eq!(w.ok(Command::ReportUnreachable { reporter: 1, node: 3 }), Reply::Done);
    assert_eq!(state(&w), NodeState::Up);
}

#[test]
fn object_data_is_claimed_once_and_becomes_garbage_when_its_version_goes() {
    let mut w = World::cluster(3);
    let first = w.begin(100);
    w.put_run("a", first).expect("put");
    assert_eq!(w.usage(), (1, 100));
    // A run is claimed once: a second object cannot take it.
    assert_eq!(w.put_run("b", first), Err(MetaError::DataNotPending { owner: first.owner }));
    // Sizes must add up, and a run cannot claim more than was reserved.
    let run = w.begin(10);
    let mut object = ObjectPut { size: 11, data: vec![run], ..ObjectPut::default() };
    assert!(matches!(
        w.run(Command::PutObject { bucket: "scans".into(), key: "b".into(), object: object.clone() }),
        Err(MetaError::Invalid { .. })
    ));
    object.data[0].len = 11;
    assert!(matches!(
        w.run(Command::PutObject { bucket: "scans".into(), key: "b".into(), object }),
        Err(MetaError::Invalid { .. })
    ));
    // Overwriting the null version frees the old data.
    assert!(w.garbage().is_empty());
    w.put("a", 7);
    assert_eq!(w.garbage(), vec![first]);
    assert_eq!(w.usage(), (1, 7));
    // Abandoned data is garbage at once; forgetting it empties the table.
    w.ok(Command::AbandonData { owner: run.owner });
    assert_eq!(w.garbage(), vec![first, run]);
    let page = |after, max| view::garbage(&w.t, after, max).expect("garbage");
    assert_eq!((page(None, 1), page(Some(first.owner), 1), page(Some(run.owner), 1)), (vec![first], vec![run], vec![]));
    w.ok(Command::ForgetGarbage { owners: vec![first.owner, run.owner] });
    assert!(w.garbage().is_empty());
    w.ok(Command::DeleteObject { bucket: "scans".into(), key: "a".into(), version_id: None });
    assert_eq!(w.garbage().len(), 1);
    assert_eq!(w.usage(), (0, 0));
}

#[test]
fn pending_data_expires_into_garbage_only_when_its_time_is_up() {
    let mut w = World::cluster(3);
    let run = w.begin(4096);
    assert_eq!(w.ok(Command::ExpirePending { max: 10 }), Reply::Count(0));
    w.now_ms += 60_000;
    assert_eq!(w.ok(Command::ExpirePending { max: 10 }), Reply::Count(1));
    assert_eq!(w.garbage(), vec![run]);
    assert_eq!(w.put_run("late", run), Err(MetaError::DataNotPending { owner: run.owner }));
    assert!(matches!(
        w.run(Command::BeginData { pool: "ssd".into(), len: 1, ttl_ms: 0 }),
        Err(MetaError::Invalid { .. })
    ));
}

/// Creating volume `name` of 1 GiB in pool ssd, its key `wrapped_key`.
fn create_volume(name: &str, wrapped_key: Vec<u8>) -> Command {
    Command::CreateVolume {
        name: name.into(),
        pool: "ssd".into(),
        size_bytes: GIB,
        chunk_size_bytes: 4 << 20,
        wrapped_key,
    }
}

fn part(w: &mut World, upload_id: &str, number: u32, len: u64) -> Result<DataRun, MetaError> {
    let run = w.begin(len);
    w.run(Command::PutPart {
        bucket: "scans".into(),
        key: "big".into(),
        upload_id: upload_id.into(),
        number,
        etag: format!("p{number}"),
        run,
        checksum: Some(format!("c{number}")),
        size: None,
    })
    .map(|_| run)
}

fn complete(w: &mut World, upload_id: &str, parts: Vec<(u32, u64)>) -> Result<Reply, MetaError> {
    w.run(Command::CompleteUpload {
        bucket: "scans".into(),
        key: "big".into(),
        upload_id: upload_id.into(),
        parts,
        etag: "x-2".into(),
        min_part_bytes: 5,
        headers: vec![("x-amz-checksum-crc32".into(), "AAAAAA==-3".into())],
    })
}

#[test]
fn multipart_uploads_complete_from_listed_parts_in_order_and_free_the_rest() {
    use super::error::UploadProblem;
    let mut w = World::cluster(3);
    let object = ObjectPut { content_type: "application/x-tar".into(), ..ObjectPut::default() };
    let upload = match w.ok(Command::CreateUpload { bucket: "scans".into(), key: "big".into(), object }) {
        Reply::Upload(u) => u,
        other => panic!("{other:?}"),
    };
    let id = upload.upload_id.as_str();
    let p1 = part(&mut w, id, 1, 10).expect("part 1");
    let kept = view::parts(&w.t, id, 0, 1).expect("read");
    assert_eq!(kept[0].checksum.as_deref(), Some("c1"), "a part keeps its checksum");
    let replaced = part(&mut w, id, 2, 3).expect("part 2");
    let p2 = part(&mut w, id, 2, 8).expect("part 2 again");
    assert_eq!(w.garbage(), vec![replaced], "a replaced part's data is freed");
    let p3 = part(&mut w, id, 3, 2).expect("part 3");
    let tiny = part(&mut w, id, 4, 1).expect("part 4");
    assert!(matches!(part(&mut w, id, 0, 1), Err(MetaError::Invalid { .. })));
    assert!(matches!(part(&mut w, "nope", 1, 1), Err(MetaError::NotFound { kind: Kind::Upload, .. })));

    let bad = |problem| Err(MetaError::BadUpload { upload_id: id.into(), problem });
    assert_eq!(complete(&mut w, id, vec![]), bad(UploadProblem::NoParts));
    assert_eq!(complete(&mut w, id, vec![(2, p2.owner), (1, p1.owner)]), bad(UploadProblem::PartOrder));
    assert_eq!(complete(&mut w, id, vec![(1, p1.owner), (2, replaced.owner)]), bad(UploadProblem::NoSuchPart(2)));
    assert_eq!(
        complete(&mut w, id, vec![(1, p1.owner), (3, p3.owner), (4, tiny.owner)]),
        bad(UploadProblem::PartTooSmall { number: 3, size: 2, min: 5 })
    );
    complete(&mut w, id, vec![(1, p1.owner), (2, p2.owner), (3, p3.owner)]).expect("complete");
    let record = view::latest_object(&w.t, "scans", "big").expect("read").expect("object");
    assert_eq!(record.data.size, 20);
    assert_eq!(record.data.data, vec![p1, p2, p3]);
    assert_eq!((record.data.parts, record.data.content_type.as_str()), (3, "application/x-tar"));
    let checksum = ("x-amz-checksum-crc32".to_string(), "AAAAAA==-3".to_string());
    assert_eq!(record.data.headers, vec![checksum], "the object gets the checksum made of its parts'");
    assert_eq!(w.garbage(), vec![replaced, tiny], "the part left out is freed");
    assert!(view::upload(&w.t, "scans", "big", id).expect("read").is_none());
    assert!(view::parts(&w.t, id, 0, usize::MAX).expect("read").is_empty());
    assert!(matches!(complete(&mut w, id, vec![(1, p1.owner)]), Err(MetaError::NotFound { .. })));
}

#[test]
fn aborting_an_upload_or_deleting_its_bucket_frees_its_parts() {
    let mut w = World::cluster(3);
    let start = |w: &mut World| match w.ok(Command::CreateUpload {
        bucket: "scans".into(),
        key: "big".into(),
        object: ObjectPut::default(),
    }) {
        Reply::Upload(u) => u.upload_id,
        other => panic!("{other:?}"),
    };
    let first = start(&mut w);
    let second = start(&mut w);
    let runs = [part(&mut w, &first, 1, 5).expect("part"), part(&mut w, &second, 1, 6).expect("part")];
    assert_eq!(view::uploads(&w.t, "scans", "", None, 10).expect("read").len(), 2);
    let after = view::uploads(&w.t, "scans", "", Some(("big", &first)), 10).expect("read");
    assert_eq!(after.iter().map(|u| u.upload_id.as_str()).collect::<Vec<_>>(), vec![second.as_str()]);
    w.ok(Command::AbortUpload { bucket: "scans".into(), key: "big".into(), upload_id: first.clone() });
    assert_eq!(w.garbage(), vec![runs[0]]);
    w.ok(Command::DeleteBucket { name: "scans".into() });
    assert_eq!(w.garbage(), runs.to_vec());
    assert!(view::uploads(&w.t, "scans", "", None, 10).expect("read").is_empty());
}

#[test]
fn a_pool_with_object_data_to_free_cannot_be_deleted() {
    let mut w = World::cluster(3);
    w.ok(Command::DeleteBucket { name: "scans".into() });
    let run = w.begin(10);
    let delete = Command::DeletePool { name: "ssd".into() };
    assert!(matches!(w.run(delete.clone()), Err(MetaError::Invalid { .. })), "pending data");
    w.ok(Command::AbandonData { owner: run.owner });
    assert!(matches!(w.run(delete.clone()), Err(MetaError::Invalid { .. })), "garbage");
    w.ok(Command::ForgetGarbage { owners: vec![run.owner] });
    w.ok(delete);
    assert_eq!(view::expired_pending(&w.t, u64::MAX, 10).expect("read"), 0);
}

impl World {
    fn open_pack(&mut self, ttl_ms: u64) -> u64 {
        match self.ok(Command::OpenPack { pool: "ssd".into(), ttl_ms }) {
            Reply::Data { owner } => owner,
            other => panic!("{other:?}"),
        }
    }

    fn pack(&self, owner: u64) -> Option<Pack> {
        super::packs::pack(&self.t, owner).expect("pack")
    }

    fn sparse(&self) -> Vec<u64> {
        super::packs::sparse(&self.t, 0, usize::MAX).expect("sparse").into_iter().map(|(o, _)| o).collect()
    }

    fn refs(&self, owner: u64) -> Vec<(u64, String)> {
        super::packs::refs(&self.t, owner, 0, usize::MAX)
            .expect("refs")
            .into_iter()
            .map(|r| (r.offset, r.key))
            .collect()
    }
}

#[test]
fn packed_runs_are_live_until_their_versions_go() {
    let mut w = World::cluster(3);
    let pack = w.open_pack(60_000);
    let run = |offset, len| DataRun { owner: pack, offset, len };
    w.put_run("a", run(0, 4096)).expect("a");
    w.put_run("b", run(4096, 100)).expect("b");
    w.put_run("c", run(8192, 4096)).expect("c");
    let p = w.pack(pack).expect("pack");
    assert_eq!((p.end, p.live_bytes, p.live_runs), (12288, 8292, 3));
    assert_eq!(w.refs(pack), vec![(0, "a".into()), (4096, "b".into()), (8192, "c".into())]);
    assert_eq!(w.sparse(), vec![pack], "12 KiB of its first 4 MiB chunk are used");
    // Packed runs are never pending: no claim, and nothing to garbage.
    assert!(w.garbage().is_empty());
    // Refused, changing nothing: a start already live, past the pack's
    // end, empty, two packed runs in one object, and after the window.
    assert!(matches!(w.put_run("d", run(4096, 10)), Err(MetaError::Invalid { .. })));
    // The same put again (a retry whose first reply was lost) answers
    // with the version it made and changes nothing.
    let before = w.t.clone();
    assert_eq!(w.put_run("b", run(4096, 100)), Ok("null".to_string()));
    assert_eq!(w.t, before);
    assert!(matches!(w.put_run("d", run(PACK_BYTES - 10, 11)), Err(MetaError::Invalid { .. })));
    assert!(matches!(w.put_run("d", run(PACK_BYTES, 0)), Err(MetaError::Invalid { .. })));
    let two = ObjectPut { size: 2, data: vec![run(20480, 1), run(24576, 1)], ..ObjectPut::default() };
    assert!(matches!(
        w.run(Command::PutObject { bucket: "scans".into(), key: "d".into(), object: two }),
        Err(MetaError::Invalid { .. })
    ));
    // Overwriting and deleting kill runs: dead in the pack, no garbage.
    w.put_run("a", run(12288, 10)).expect("a again");
    w.ok(Command::DeleteObject { bucket: "scans".into(), key: "b".into(), version_id: None });
    let p = w.pack(pack).expect("pack");
    assert_eq!((p.end, p.live_bytes, p.live_runs), (12298, 4106, 2));
    assert_eq!(w.refs(pack), vec![(8192, "c".into()), (12288, "a".into())]);
    assert!(w.garbage().is_empty());
    let totals = super::packs::totals(&w.t).expect("totals");
    assert_eq!((totals.packs, totals.bytes, totals.live_bytes, totals.sparse), (1, 4 << 20, 4106, 1));
    // A pack filled past half of its chunks is not sparse.
    let big = w.open_pack(60_000);
    w.put_run("big", DataRun { owner: big, offset: 0, len: 3 << 20 }).expect("big");
    assert_eq!(w.sparse(), vec![pack]);
    w.put_run("tail", DataRun { owner: big, offset: 4 << 20, len: 1 }).expect("tail");
    assert_eq!(w.sparse(), vec![pack, big], "3 MiB live of 8 MiB taken");
    w.now_ms += 60_000;
    assert!(matches!(w.put_run("e", run(16384, 1)), Err(MetaError::Invalid { .. })), "the window is over");
}

const GRACE: u64 = 60_000;

#[test]
fn a_move_lands_only_on_the_run_it_read_and_empty_packs_are_freed_after_the_grace() {
    let mut w = World::cluster(3);
    let old = w.open_pack(1_000);
    w.put_run("a", DataRun { owner: old, offset: 0, len: 10 }).expect("a");
    w.put_run("b", DataRun { owner: old, offset: 4096, len: 20 }).expect("b");
    w.ok(Command::SetVersioning { bucket: "scans".into(), versioning: Versioning::Enabled });
    w.now_ms += 2_000;
    let new = w.open_pack(60_000);
    let seq_of = |w: &World, key: &str| {
        super::packs::refs(&w.t, old, 0, 10).expect("refs").into_iter().find(|r| r.key == key).expect("ref").seq
    };
    let (seq_a, seq_b) = (seq_of(&w, "a"), seq_of(&w, "b"));
    let mv = |key: &str, seq, from: DataRun, to: DataRun| Command::MovePacked {
        bucket: "scans".into(),
        key: key.into(),
        seq,
        from,
        to,
    };
    let a_old = DataRun { owner: old, offset: 0, len: 10 };
    let a_new = DataRun { owner: new, offset: 0, len: 10 };
    // A move must keep the length and go into a writable pack.
    assert!(matches!(w.run(mv("a", seq_a, a_old, DataRun { len: 11, ..a_new })), Err(MetaError::Invalid { .. })));
    assert!(matches!(
        w.run(mv("a", seq_a, a_old, DataRun { owner: old, offset: 8192, len: 10 })),
        Err(MetaError::Invalid { .. })
    ));
    assert_eq!(w.ok(mv("a", seq_a, a_old, a_new)), Reply::Count(1));
    let got = view::object_version(&w.t, "scans", "a", "null", 100).expect("read").expect("a");
    assert_eq!(got.data.data, vec![a_new]);
    // b was overwritten (a new version: the old one keeps its run) and
    // then its old version deleted before the compactor's move landed.
    w.put_run("b", DataRun { owner: new, offset: 4096, len: 5 }).expect("b v2");
    w.ok(Command::DeleteObject { bucket: "scans".into(), key: "b".into(), version_id: Some("null".into()) });
    let b_old = DataRun { owner: old, offset: 4096, len: 20 };
    assert_eq!(w.ok(mv("b", seq_b, b_old, DataRun { owner: new, offset: 8192, len: 20 })), Reply::Count(0));
    assert_eq!(w.refs(new), vec![(0, "a".into()), (4096, "b".into())], "the lost move's copy is not live");
    // Nothing live in the old pack: freed only after the grace.
    assert_eq!(w.refs(old), vec![]);
    assert_eq!(w.ok(Command::RetirePacks { max: 10, grace_ms: GRACE }), Reply::Count(0));
    w.now_ms += GRACE;
    assert_eq!(w.ok(Command::RetirePacks { max: 10, grace_ms: GRACE }), Reply::Count(1));
    assert_eq!(w.pack(old), None);
    assert_eq!(w.garbage(), vec![DataRun::owned(old, PACK_BYTES)]);
    assert!(w.pack(new).is_some(), "the live pack stays");
    let totals = super::packs::totals(&w.t).expect("totals");
    assert_eq!((totals.packs, totals.live_bytes), (1, 15));
}

#[test]
fn a_transition_moves_a_versions_data_once_and_frees_the_old() {
    let mut w = World::cluster(2);
    w.put("a", 100);
    let record = view::latest_object(&w.t, "scans", "a").expect("read").expect("a");
    let from = record.data.data.clone();
    let to = w.begin(100);
    let transition = |w: &mut World, from: &[DataRun], to: DataRun| {
        let (bucket, key, seq) = ("scans".into(), "a".into(), record.seq);
        w.run(Command::TransitionObject { bucket, key, seq, from: from.to_vec(), to: vec![to] })
    };
    let short = w.begin(99);
    let refused = transition(&mut w, &from, DataRun { len: 99, ..short });
    assert!(matches!(refused, Err(MetaError::Invalid { .. })), "{refused:?}");
    assert!(matches!(transition(&mut w, &from, to), Ok(Reply::Count(1))));
    let moved = view::latest_object(&w.t, "scans", "a").expect("read").expect("a");
    assert_eq!(moved.data.data, vec![to]);
    assert_eq!((moved.seq, moved.data.etag.as_str()), (record.seq, record.data.etag.as_str()), "the same version");
    assert_eq!(w.garbage(), from, "the old data is freed");
    // A second gateway that judged the same version moved nothing.
    let late = w.begin(100);
    assert!(matches!(transition(&mut w, &from, late), Ok(Reply::Count(0))));
    assert_eq!(view::latest_object(&w.t, "scans", "a").expect("read").expect("a").data.data, vec![to]);
    assert_eq!(w.usage(), (1, 100), "usage counts the object once");
}

/// A bucket's key is set once by whoever comes first, replaced only from
/// the value read (rotation), and never by a settings change.
#[test]
fn bucket_keys_are_compared_and_set_and_settings_never_drop_them() {
    let mut w = World::cluster(2);
    let key = |old: Option<Vec<u8>>, new: Vec<u8>| Command::SetBucketKey { bucket: "scans".into(), old, new };
    let Reply::Bucket(b) = w.ok(key(None, vec![1])) else { panic!() };
    assert_eq!(b.settings.wrapped_key, Some(vec![1]));
    assert!(matches!(w.run(key(None, vec![2])), Err(MetaError::Invalid { .. })), "the second maker loses");
    assert!(matches!(w.run(key(Some(vec![9]), vec![2])), Err(MetaError::Invalid { .. })), "not from a stale value");
    assert!(matches!(w.run(key(Some(vec![1]), vec![])), Err(MetaError::Invalid { .. })), "never emptied");
    let missing = Command::SetBucketKey { bucket: "nope".into(), old: None, new: vec![1] };
    assert!(matches!(w.run(missing), Err(MetaError::NotFound { .. })));
    w.ok(key(Some(vec![1]), vec![2]));
    // A settings change made from a read before the key was set keeps it.
    let settings = BucketSettings { compression: Some("capacity".into()), wrapped_key: None, qos: vec![] };
    let Reply::Bucket(b) = w.ok(Command::SetBucketSettings { bucket: "scans".into(), settings }) else { panic!() };
    assert_eq!(b.settings.wrapped_key, Some(vec![2]));
    assert_eq!(b.settings.compression.as_deref(), Some("capacity"));
}

/// QoS rules are checked, name what exists, bump the rules' version at
/// each change, and go with the user or bucket they name.
#[test]
fn qos_rules_are_checked_versioned_and_go_with_what_they_name() {
    use chuyi_meta_api::qos::{Dimension, QosLimits, QosRule, QosScope};
    let mut w = World::cluster(2);
    let version = |w: &World| view::qos_version(&w.t).expect("read");
    let rule = |scope: QosScope, requests: Option<u64>| {
        let mut limits = QosLimits { burst_ms: 1000, ..Default::default() };
        limits.set(Dimension::Requests, requests);
        Command::SetQosRule { rule: QosRule { scope, limits } }
    };
    let both = QosScope::UserBucket { user: "alice".into(), bucket: "scans".into() };
    assert!(matches!(w.run(rule(both.clone(), None)), Err(MetaError::Invalid { .. })), "limits nothing");
    let nobody = QosScope::UserBucket { user: "bob".into(), bucket: "scans".into() };
    assert_eq!(w.run(rule(nobody, Some(5))), Err(MetaError::not_found(Kind::User, "bob")));
    assert_eq!(w.run(rule(QosScope::Volume("vm9".into()), Some(5))), Err(MetaError::not_found(Kind::Volume, "vm9")));
    assert_eq!(version(&w), 0, "refusals change nothing");
    w.ok(rule(both.clone(), Some(50)));
    w.ok(rule(QosScope::Bucket("scans".into()), Some(100)));
    w.ok(rule(QosScope::Pool("ssd".into()), Some(2000)));
    w.ok(rule(both.clone(), Some(60)));
    assert_eq!(version(&w), 4);
    let rules = view::qos_rules(&w.t).expect("read");
    assert_eq!(rules.len(), 3);
    assert!(rules.iter().any(|r| r.scope == both && r.limits.rate(Dimension::Requests) == Some(60)));
    let gone = QosScope::User("alice".into());
    assert_eq!(w.run(Command::DeleteQosRule { scope: gone }), Err(MetaError::not_found(Kind::QosRule, "user alice")));
    w.ok(Command::DeleteBucket { name: "scans".into() });
    let left: Vec<QosScope> = view::qos_rules(&w.t).expect("read").into_iter().map(|r| r.scope).collect();
    assert_eq!(left, vec![QosScope::Pool("ssd".into())], "the bucket's rules went with it");
    assert_eq!(version(&w), 5);
    w.ok(Command::DeleteQosRule { scope: QosScope::Pool("ssd".into()) });
    assert!(view::qos_rules(&w.t).expect("read").is_empty());
}

/// The recycle bin: a volume moves in as it was (name kept), comes back,
/// and is purged only when due (or forced), with its key destroyed and a
/// fence token newer than any lease it had.
#[test]
fn trashed_volumes_keep_their_name_and_key_until_purged() {
    let mut w = World::cluster(2);
    let create = create_volume("vm1", vec![7]);
    w.ok(create.clone());
    let mut limits = chuyi_meta_api::qos::QosLimits { burst_ms: 1000, ..Default::default() };
    limits.set(chuyi_meta_api::qos::Dimension::Requests, Some(2000));
    let scope = chuyi_meta_api::qos::QosScope::Volume("vm1".into());
    w.ok(Command::SetQosRule { rule: chuyi_meta_api::qos::QosRule { scope, limits } });
    let Reply::Lease(lease) = w.ok(Command::AcquireLease { volume: "vm1".into(), holder: "fe".into(), ttl_ms: 5000 })
    else {
        panic!()
    };
    let trash = |retain_ms| Command::TrashVolume { name: "vm1".into(), retain_ms };
    assert!(matches!(w.run(trash(None)), Err(MetaError::LeaseHeld { .. })), "attached: refused");
    w.ok(Command::ReleaseLease { volume: "vm1".into(), holder: "fe".into(), lease_id: lease.id });
    let Reply::Trashed(entry) = w.ok(trash(None)) else { panic!() };
    assert_eq!(entry.purge_at_ms, w.now_ms + DEFAULT_TRASH_RETENTION_MS);
    assert!(view::volume(&w.t, "vm1").expect("read").is_none());
    assert!(view::qos_rules(&w.t).expect("read").is_empty(), "its rule goes with it, kept in the entry");
    assert_eq!(w.run(create.clone()), Err(MetaError::exists(Kind::TrashedVolume, "vm1")), "the name stays taken");
    let purge = |force| Command::BeginPurge { name: "vm1".into(), force };
    assert!(matches!(w.run(purge(false)), Err(MetaError::Invalid { .. })), "not due");
    let Reply::Volume(back) = w.ok(Command::RestoreVolume { name: "vm1".into() }) else { panic!() };
    let rules = view::qos_rules(&w.t).expect("read");
    assert_eq!(rules.len(), 1, "its QoS rule came back with it");
    assert_eq!((back.id, back.wrapped_key.clone(), back.lease.clone()), (entry.volume.id, vec![7], None));

    w.ok(Command::SetTrashRetention { retain_ms: 60_000 });
    let Reply::Trashed(entry) = w.ok(trash(None)) else { panic!() };
    assert_eq!(entry.purge_at_ms, w.now_ms + 60_000, "the cluster's retention");
    w.now_ms += 60_000;
    let Reply::Purging { volume, token } = w.ok(purge(false)) else { panic!() };
    assert!(token > lease.id, "the purge's fence is newer than any lease");
    assert_eq!((volume.wrapped_key.is_empty(), volume.state), (true, VolumeState::KeyDestroyed), "key destroyed");
    assert!(matches!(w.run(Command::RestoreVolume { name: "vm1".into() }), Err(MetaError::Invalid { .. })));
    let Reply::Purging { token: again, .. } = w.ok(purge(false)) else { panic!() };
    assert_eq!(again, token, "a purge begun again keeps its fence, or it would fence off the first purger");
    let end = |token| Command::EndPurge { name: "vm1".into(), token };
    assert!(matches!(w.run(end(token + 1)), Err(MetaError::Invalid { .. })), "not under another token");
    w.ok(end(token));
    assert_eq!(w.run(end(token)), Err(MetaError::not_found(Kind::TrashedVolume, "vm1")));
    w.ok(create);
    // Forced, at once; a pool with a volume in the bin cannot go.
    w.ok(trash(Some(3_600_000)));
    assert!(matches!(w.run(Command::DeletePool { name: "ssd".into() }), Err(MetaError::InUse { .. })));
    let Reply::Purging { token, .. } = w.ok(purge(true)) else { panic!() };
    w.ok(Command::EndPurge { name: "vm1".into(), token });
}
