//! Applying one command to the tables: validate everything, then write.
//! This module dispatches; each family applies in its own module (nodes,
//! pools, volumes, users, buckets, objects, uploads, packs).
//!
//! Pure apart from the [`TablesMut`] it is given: no clock (the entry's
//! `now_ms`), no randomness (ids come from a counter, sequences from the log
//! index), so every member computes the same state. A refusal returns
//! `Ok(Err(MetaError))`; the caller rolls back whatever the command staged,
//! so a refused command changes nothing. `Err(TableError)` is the store
//! failing, which stops the state machine.

use super::buckets::{self, create_bucket, delete_bucket, set_bucket_key, set_versioning};
use super::command::Command;
use super::error::{Kind, MetaError};
use super::keys;
use super::model::{BucketSettings, Millis, Pool, User, ACL_HEADER};
use super::nodes::{heartbeat, mark_down, pg_recovered, rebalance, register_node, report_unreachable};
use super::pools::{create_pool, delete_pool, set_pool_defaults};
use super::tables::TableError;
use super::tables::TablesMut;
use super::users::{create_user, delete_user};
use super::volumes::{
    acquire_lease, create_volume, delete_volume, destroy_volume_key, renew_lease, resize_volume, rewrap_volume_key,
};
use super::Reply;
use super::{backups, objects, packs, qos, snapshots, trash, uploads, view};

/// What one command may depend on besides the tables.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub(crate) now_ms: Millis,
    /// Unique and increasing across the log: `index << 16 | position`.
    pub(crate) seq: u64,
}

pub(crate) type Applied = Result<Result<Reply, MetaError>, TableError>;

pub use chuyi_meta_api::limits::LEASE_TTL_MAX_MS;

pub(crate) fn apply(t: &mut impl TablesMut, ctx: Ctx, command: &Command) -> Applied {
    match command {
        Command::RegisterNode { id, addrs, failure_domain, disks } => {
            register_node(t, ctx, *id, addrs, failure_domain, disks)
        }
        Command::Heartbeat { id, disks } => heartbeat(t, ctx, *id, disks),
        Command::MarkNodeDown { id, timeout_ms } => mark_down(t, ctx, *id, *timeout_ms),
        Command::Rebalance { max_moves } => rebalance(t, *max_moves),
        Command::PgRecovered { pool, pg, disk, epoch } => pg_recovered(t, *pool, *pg, *disk, *epoch),
        Command::CreatePool { name, class, redundancy, pg_count, separate_failure_domains } => {
            let pool = Pool {
                id: 0,
                name: name.clone(),
                class: *class,
                redundancy: *redundancy,
                pg_count: *pg_count,
                separate_failure_domains: *separate_failure_domains,
            };
            create_pool(t, pool)
        }
        Command::DeletePool { name } => delete_pool(t, name),
        Command::CreateVolume { name, pool, size_bytes, chunk_size_bytes, wrapped_key } => {
            create_volume(t, ctx, name, pool, *size_bytes, *chunk_size_bytes, wrapped_key)
        }
        Command::ResizeVolume { name, size_bytes } => resize_volume(t, name, *size_bytes),
        Command::DeleteVolume { name } => delete_volume(t, ctx, name),
        Command::AcquireLease { volume, holder, ttl_ms } => acquire_lease(t, ctx, volume, holder, *ttl_ms),
        Command::RenewLease { volume, holder, lease_id, ttl_ms } => {
            renew_lease(t, ctx, volume, holder, *lease_id, Some(*ttl_ms))
        }
        Command::ReleaseLease { volume, holder, lease_id } => renew_lease(t, ctx, volume, holder, *lease_id, None),
        Command::CreateUser { name, access_key, secret, admin } => {
            let user = User {
                name: name.clone(),
                access_key: access_key.clone(),
                secret: secret.clone(),
                admin: *admin,
                created_ms: ctx.now_ms,
            };
            create_user(t, user)
        }
        Command::DeleteUser { name } => delete_user(t, name),
        Command::CreateBucket { name, owner, pool } => create_bucket(t, ctx, name, owner, pool),
        Command::DeleteBucket { name } => delete_bucket(t, name),
        Command::SetVersioning { bucket, versioning } => set_versioning(t, bucket, *versioning),
        Command::SetBucketSettings { bucket, settings } => {
            let Some(mut b) = view::bucket(t, bucket)? else { refuse!(MetaError::not_found(Kind::Bucket, bucket)) };
            // The key is SetBucketKey's alone: a settings change read
            // before a gateway made the key must not take it away.
            let key = b.settings.wrapped_key.take();
            b.settings = BucketSettings { wrapped_key: key, ..settings.clone() };
            t.put_rec("bucket", &keys::bucket(bucket), &b)?;
            Ok(Ok(Reply::Bucket(b)))
        }
        Command::BeginData { pool, len, ttl_ms } => objects::begin_data(t, ctx, pool, *len, *ttl_ms),
        Command::AbandonData { owner } => objects::abandon_data(t, *owner),
        Command::OpenPack { pool, ttl_ms } => packs::open_pack(t, ctx, pool, *ttl_ms),
        Command::MovePacked { bucket, key, seq, from, to } => packs::move_packed(t, ctx, bucket, key, *seq, from, to),
        Command::RetirePacks { max, grace_ms } => packs::retire_packs(t, ctx, *max, *grace_ms),
        Command::PutObject { bucket, key, object } => objects::put_object(t, ctx, bucket, key, object, None),
        Command::SetBucketKey { bucket, old, new } => set_bucket_key(t, bucket, old.as_deref(), new),
        Command::SetBucketConfig { bucket, kind, document } => {
            buckets::set_config(t, bucket, *kind, document.as_deref())
        }
        Command::SetObjectTags { bucket, key, version_id, tags } => {
            objects::set_object_tags(t, bucket, key, version_id.as_deref(), tags)
        }
        Command::PutObjectIf { bucket, key, object, condition } => {
            objects::put_object(t, ctx, bucket, key, object, Some(condition))
        }
        Command::DeleteObject { bucket, key, version_id } => {
            objects::delete_object(t, ctx, bucket, key, version_id.as_deref(), false)
        }
        Command::DeleteObjectBypass { bucket, key, version_id } => {
            objects::delete_object(t, ctx, bucket, key, version_id.as_deref(), true)
        }
        Command::CreateBucketLocked { name, owner, pool } => buckets::create_bucket_locked(t, ctx, name, owner, pool),
        Command::SetObjectLockConfig { bucket, config } => buckets::set_object_lock(t, bucket, config),
        Command::SetRetention { bucket, key, version_id, retention, bypass_governance } => {
            let target = objects::Target { bucket, key, version_id: version_id.as_deref() };
            objects::set_retention(t, ctx, target, *retention, *bypass_governance)
        }
        Command::ExpireObject { bucket, key, seq } => objects::expire_object(t, ctx, bucket, key, *seq),
        Command::RemoveVersion { bucket, key, version_id, seq, lone_marker } => {
            objects::remove_planned_version(t, ctx, bucket, key, version_id, *seq, *lone_marker)
        }
        Command::TransitionObject { bucket, key, seq, from, to } => {
            objects::transition_object(t, ctx, objects::Target { bucket, key, version_id: None }, *seq, from, to)
        }
        Command::SetObjectAcl { bucket, key, version_id, acl } => {
            let target = objects::Target { bucket, key, version_id: version_id.as_deref() };
            objects::set_object_header(t, target, ACL_HEADER, acl)
        }
        Command::SetLegalHold { bucket, key, version_id, on } => {
            objects::set_legal_hold(t, objects::Target { bucket, key, version_id: version_id.as_deref() }, *on)
        }
        Command::CreateUpload { bucket, key, object } => uploads::create_upload(t, ctx, bucket, key, object),
        Command::PutPart { bucket, key, upload_id, number, etag, run, checksum, size } => {
            let (number, run, size) = (*number, *run, *size);
            let part = uploads::NewPart { bucket, key, upload_id, number, etag, run, checksum, size };
            uploads::put_part(t, ctx, part)
        }
        Command::CompleteUpload { bucket, key, upload_id, parts, etag, min_part_bytes, headers } => {
            let min_part_bytes = *min_part_bytes;
            let completion = uploads::Completion { bucket, key, upload_id, parts, etag, min_part_bytes, headers };
            uploads::complete_upload(t, ctx, completion, None)
        }
        Command::CompleteUploadIf { bucket, key, upload_id, parts, etag, min_part_bytes, condition, headers } => {
            let min_part_bytes = *min_part_bytes;
            let completion = uploads::Completion { bucket, key, upload_id, parts, etag, min_part_bytes, headers };
            uploads::complete_upload(t, ctx, completion, Some(condition))
        }
        Command::AbortUpload { bucket, key, upload_id } => uploads::abort_upload(t, bucket, key, upload_id),
        Command::ForgetGarbage { owners } => objects::forget_garbage(t, owners),
        Command::ExpirePending { max } => objects::expire_pending(t, ctx, *max),
        Command::ReportUnreachable { reporter, node } => report_unreachable(t, ctx, *reporter, *node),
        Command::DestroyVolumeKey { name, holder } => destroy_volume_key(t, ctx, name, holder),
        Command::RewrapVolumeKey { name, old, new } => rewrap_volume_key(t, name, old, new),
        Command::SetPoolDefaults { pool, defaults } => set_pool_defaults(t, pool, defaults),
        Command::SetQosRule { rule } => qos::set_qos_rule(t, rule),
        Command::DeleteQosRule { scope } => qos::delete_qos_rule(t, scope),
        Command::TrashVolume { name, retain_ms } => trash::trash_volume(t, ctx, name, *retain_ms),
        Command::RestoreVolume { name } => trash::restore_volume(t, name),
        Command::BeginPurge { name, force } => trash::begin_purge(t, ctx, name, *force),
        Command::EndPurge { name, token } => trash::end_purge(t, name, *token),
        Command::SetTrashRetention { retain_ms } => trash::set_retention(t, *retain_ms),
        Command::CreateSnapshot { volume, name } => snapshots::create_snapshot(t, ctx, volume, name, None),
        Command::DeleteSnapshot { volume, name } => snapshots::delete_snapshot(t, volume, name),
        Command::RenameSnapshot { volume, from, to } => snapshots::rename_snapshot(t, volume, from, to),
        Command::SetSnapshotSchedule { scope, schedule } => snapshots::set_schedule(t, scope, *schedule),
        Command::TakeScheduledSnapshot { volume, every_ms } => snapshots::take_scheduled(t, ctx, volume, *every_ms),
        Command::ExpireSnapshot { volume, name } => snapshots::expire_snapshot(t, volume, name),
        Command::CloneVolume { volume, snapshot, name, wrapped_key } => {
            snapshots::clone_volume(t, ctx, (volume, snapshot), name, wrapped_key)
        }
        Command::FlattenVolume { name } => snapshots::flatten_volume(t, name),
        Command::SetBackupSchedule { schedule } => backups::set_schedule(t, schedule),
        Command::DeleteBackupSchedule { volume, target } => backups::delete_schedule(t, volume, target),
        Command::ClaimBackupRun { volume, target, holder, ttl_ms } => {
            backups::claim(t, ctx, (volume, target), holder, *ttl_ms)
        }
        Command::ReportBackupRun { volume, target, holder, outcome } => {
            backups::report(t, ctx, (volume, target), holder, outcome)
        }
    }
}

/// The time an entry applies at: its leader's clock, but never earlier than
/// an entry before it. A new leader whose clock lags cannot move time
/// backwards (un-expiring leases); one whose clock runs ahead still expires
/// leases early, so holders keep a margin on their own clock (DESIGN:
/// leases), and members' clocks are assumed within seconds (NTP).
pub(crate) fn entry_time(t: &mut impl TablesMut, now_ms: Millis) -> Result<Millis, TableError> {
    let last = t.get_rec::<u64>("last time", keys::LAST_NOW)?.unwrap_or(0);
    let now = now_ms.max(last);
    if now != last {
        t.put_rec("last time", keys::LAST_NOW, &now)?;
    }
    Ok(now)
}

/// A new chunk owner of `pool`, or `None` once the pool's 2^40 are spent
/// (an owner must never be given twice: it would alias another's data).
pub(crate) fn next_owner(t: &mut impl TablesMut, pool: u32) -> Result<Option<u64>, TableError> {
    let seq = next_id(t)?;
    Ok((seq < 1 << chuyi_common::map::OWNER_SEQ_BITS).then(|| chuyi_common::map::owner_id(pool, seq)))
}

pub(crate) fn next_id(t: &mut impl TablesMut) -> Result<u64, TableError> {
    let id = t.get_rec::<u64>("next id", keys::NEXT_ID)?.unwrap_or(1);
    t.put_rec("next id", keys::NEXT_ID, &(id + 1))?;
    Ok(id)
}

pub(super) fn bump_epoch(t: &mut impl TablesMut) -> Result<u64, TableError> {
    let epoch = view::epoch(t)? + 1;
    t.put_rec("epoch", keys::EPOCH, &epoch)?;
    Ok(epoch)
}

// ---- nodes and placement ----
