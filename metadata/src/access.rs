//! Who may call what on the metadata service: the caller's principal,
//! proved at the RPC handshake (`chuyi_common::credential`), against the
//! call. A pure decision, asked by the service before it acts on anything.
//!
//! - members: everything, and Raft traffic is theirs alone
//!   ([`check_peer`]);
//! - the administrator: every client call;
//! - a storage node: reads, and the commands about itself (registering,
//!   heartbeats, reports of unreachable peers) and its PGs' recovery;
//! - a frontend (S3 gateway, NBD frontend): reads, buckets, objects,
//!   uploads, their data and packs, and the leases of volumes it holds:
//!   only leases whose holder name is its own; and the purge of a volume
//!   whose time in the recycle bin is up (volume frontends empty the bin).
//!   It cannot mark a node down, create, delete or restore volumes, purge
//!   one before its time, touch pools or users, or change the membership.

use chuyi_common::credential::{Principal, Role};

use crate::proto::MetaCall;
use crate::state::{MetaError, Request};

/// Whether `caller` may send Raft traffic: members only.
pub fn check_peer(caller: &Principal) -> Result<(), MetaError> {
    match caller.role {
        Role::Member => Ok(()),
        Role::Admin | Role::Node | Role::Frontend => {
            Err(MetaError::Forbidden { caller: caller.to_string(), action: "send Raft traffic".into() })
        }
    }
}

/// Whether `caller` may make `call`; the refusal names both.
pub fn check(caller: &Principal, call: &MetaCall) -> Result<(), MetaError> {
    let allowed = match caller.role {
        Role::Member | Role::Admin => true,
        Role::Node => match call {
            MetaCall::Write(request) => node_may(caller, request),
            other => is_open(other),
        },
        Role::Frontend => match call {
            MetaCall::Write(request) => frontend_may(caller, request),
            MetaCall::QosExchange(_) => true,
            other => is_open(other),
        },
    };
    if allowed {
        Ok(())
    } else {
        Err(MetaError::Forbidden { caller: caller.to_string(), action: action(call).into() })
    }
}

/// Calls that only read, open to every principal.
fn is_open(call: &MetaCall) -> bool {
    match call {
        MetaCall::Read(_) | MetaCall::WatchMap { .. } | MetaCall::Status | MetaCall::QosStatus => true,
        // A QoS report changes only the leader's memory of the caller's
        // own use; frontends send them (see `check`), nodes have none.
        MetaCall::QosExchange(_) => false,
        MetaCall::Write(_)
        | MetaCall::CreateUser { .. }
        | MetaCall::AddMember { .. }
        | MetaCall::RemoveMember { .. }
        | MetaCall::BuildSnapshot => false,
    }
}

fn node_may(caller: &Principal, request: &Request) -> bool {
    let is_me = |id: &chuyi_common::ids::NodeId| id.to_string() == caller.name;
    match request {
        Request::RegisterNode { id, .. } | Request::Heartbeat { id, .. } => is_me(id),
        Request::ReportUnreachable { reporter, .. } => is_me(reporter),
        // The PG's primary reports its recovering replica, on another node.
        Request::PgRecovered { .. } => true,
        // An allow-list: a request added later is denied until listed.
        _ => false,
    }
}

fn frontend_may(caller: &Principal, request: &Request) -> bool {
    match request {
        Request::AcquireLease { holder, .. }
        | Request::RenewLease { holder, .. }
        | Request::ReleaseLease { holder, .. } => caller.owns_holder(holder),
        Request::CreateBucket { .. }
        | Request::DeleteBucket { .. }
        | Request::SetVersioning { .. }
        | Request::SetBucketSettings { .. }
        | Request::SetBucketConfig { .. }
        | Request::SetBucketKey { .. }
        | Request::SetObjectTags { .. }
        | Request::SetObjectLockConfig { .. }
        | Request::SetRetention { .. }
        | Request::SetLegalHold { .. }
        | Request::ExpireObject { .. }
        | Request::RemoveVersion { .. }
        | Request::SetObjectAcl { .. }
        | Request::TransitionObject { .. }
        | Request::BeginData { .. }
        | Request::OpenPack { .. }
        | Request::MovePacked { .. }
        | Request::RetirePacks { .. }
        | Request::AbandonData { .. }
        | Request::PutObject { .. }
        | Request::DeleteObject { .. }
        | Request::CreateUpload { .. }
        | Request::PutPart { .. }
        | Request::CompleteUpload { .. }
        | Request::AbortUpload { .. }
        | Request::ForgetGarbage { .. }
        | Request::ExpirePending { .. } => true,
        // The recycle bin is emptied by the cluster: a frontend may purge
        // what is due, never force a purge or restore.
        Request::BeginPurge { force: false, .. } | Request::EndPurge { .. } => true,
        // So are snapshot schedules: a frontend takes what is due and
        // deletes what expired, each checked against the schedule.
        Request::TakeScheduledSnapshot { .. } | Request::ExpireSnapshot { .. } => true,
        // And backup schedules: a frontend claims a slot due and reports
        // its run, under its own name; setting them is the
        // administrator's. A run reads a snapshot of its own, named so
        // (chuyi-backup's `create`), and drops the one before it: a
        // frontend may take and delete those, told by their whole name,
        // and no other (deleting one costs the next backup its increment,
        // not any data).
        Request::ClaimBackupRun { holder, .. } | Request::ReportBackupRun { holder, .. } => caller.owns_holder(holder),
        Request::CreateSnapshot { name, .. } | Request::DeleteSnapshot { name, .. } => {
            chuyi_meta_api::backup_schedule::is_backup_snapshot(name)
        }
        // An allow-list: a request added later is denied until listed.
        _ => false,
    }
}

/// The call's name in a refusal.
pub fn action(call: &MetaCall) -> &'static str {
    match call {
        MetaCall::Write(request) => request.name(),
        MetaCall::Read(_) => "Read",
        MetaCall::WatchMap { .. } => "WatchMap",
        MetaCall::Status => "Status",
        MetaCall::CreateUser { .. } => "CreateUser",
        MetaCall::AddMember { .. } => "AddMember",
        MetaCall::RemoveMember { .. } => "RemoveMember",
        MetaCall::BuildSnapshot => "BuildSnapshot",
        MetaCall::QosExchange(_) => "QosExchange",
        MetaCall::QosStatus => "QosStatus",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::DiskRef;
    use crate::proto::Query;

    fn frontend(name: &str) -> Principal {
        Principal::new(Role::Frontend, name).expect("name")
    }

    fn write(request: Request) -> MetaCall {
        MetaCall::Write(request)
    }

    /// The calls a frontend must never make, with what the issue names:
    /// destroying a volume key, another's lease, a heartbeat for a node
    /// (marking a node down and rebalancing are not requests at all: only
    /// the members commit them).
    fn forbidden_to_frontends() -> Vec<MetaCall> {
        vec![
            write(Request::DestroyVolumeKey { name: "v".into(), holder: "s3-a".into() }),
            write(Request::AcquireLease { volume: "v".into(), holder: "nbd-b".into(), ttl_ms: 1 }),
            write(Request::RenewLease { volume: "v".into(), holder: "nbd-b:1".into(), lease_id: 1, ttl_ms: 1 }),
            write(Request::ReleaseLease { volume: "v".into(), holder: "s3-ab".into(), lease_id: 1 }),
            write(Request::DeleteVolume { name: "v".into() }),
            write(Request::Heartbeat { id: 1, disks: vec![] }),
            write(Request::DeleteUser { name: "u".into() }),
            MetaCall::CreateUser { name: "u".into(), admin: true },
            MetaCall::AddMember { id: 9, addr: "x:1".into() },
            MetaCall::RemoveMember { id: 1 },
            MetaCall::BuildSnapshot,
        ]
    }

    #[test]
    fn a_frontend_is_refused_what_is_not_its_own() {
        let fe = frontend("s3-a");
        for call in forbidden_to_frontends() {
            let refused = check(&fe, &call);
            assert!(
                matches!(&refused, Err(MetaError::Forbidden { caller, .. }) if caller == "frontend s3-a"),
                "{call:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_frontend_may_serve_its_users() {
        let fe = frontend("nbd-h1");
        for call in [
            write(Request::AcquireLease { volume: "v".into(), holder: "nbd-h1:42".into(), ttl_ms: 1 }),
            write(Request::ReleaseLease { volume: "v".into(), holder: "nbd-h1".into(), lease_id: 1 }),
            write(Request::DeleteBucket { name: "b".into() }),
            MetaCall::Read(Query::Buckets),
            MetaCall::Status,
            MetaCall::WatchMap { known_epoch: 0, wait_ms: 0 },
            write(Request::CreateSnapshot { volume: "v".into(), name: BACKUP_SNAPSHOT.into() }),
            write(Request::DeleteSnapshot { volume: "v".into(), name: BACKUP_SNAPSHOT.into() }),
            write(Request::ClaimBackupRun {
                volume: "v".into(),
                target: "s3://b".into(),
                holder: "nbd-h1:42".into(),
                ttl_ms: 1,
            }),
        ] {
            assert_eq!(check(&fe, &call), Ok(()), "{call:?}");
        }
    }

    const BACKUP_SNAPSHOT: &str = "backup-1a2b3c4d-20261204T112233.456Z-abcdef";

    #[test]
    fn a_frontend_takes_and_drops_only_backup_snapshots() {
        let fe = frontend("nbd-h1");
        for name in ["daily", "auto-24h-x", "backupx", "restoring-1", "backup-before-upgrade"] {
            let create = write(Request::CreateSnapshot { volume: "v".into(), name: name.into() });
            let delete = write(Request::DeleteSnapshot { volume: "v".into(), name: name.into() });
            assert!(matches!(check(&fe, &create), Err(MetaError::Forbidden { .. })), "{name}");
            assert!(matches!(check(&fe, &delete), Err(MetaError::Forbidden { .. })), "{name}");
        }
        let set = write(Request::DeleteBackupSchedule { volume: "v".into(), target: "s3://b".into() });
        assert!(matches!(check(&fe, &set), Err(MetaError::Forbidden { .. })));
        let claim = Request::ClaimBackupRun {
            volume: "v".into(),
            target: "s3://b".into(),
            holder: "nbd-h2:1".into(),
            ttl_ms: 1,
        };
        assert!(matches!(check(&fe, &write(claim)), Err(MetaError::Forbidden { .. })), "another's claim");
    }

    #[test]
    fn a_node_speaks_for_itself_only() {
        let node = Principal::node(3);
        assert_eq!(check(&node, &write(Request::Heartbeat { id: 3, disks: vec![] })), Ok(()));
        assert_eq!(check(&node, &write(Request::ReportUnreachable { reporter: 3, node: 4 })), Ok(()));
        let recovered = Request::PgRecovered { pool: 1, pg: 2, disk: DiskRef::new(4, 0), epoch: 7 };
        assert_eq!(check(&node, &write(recovered)), Ok(()));
        for call in [
            write(Request::Heartbeat { id: 4, disks: vec![] }),
            write(Request::ReportUnreachable { reporter: 4, node: 3 }),
            write(Request::CreatePool {
                name: "p".into(),
                class: chuyi_common::ids::DeviceClass::Ssd,
                redundancy: chuyi_meta_api::model::Redundancy::Replicated(2),
                pg_count: 1,
                separate_failure_domains: false,
            }),
            write(Request::DeleteObject {
                bucket: "b".into(),
                key: "k".into(),
                version_id: None,
                bypass_governance: false,
            }),
            MetaCall::RemoveMember { id: 1 },
        ] {
            assert!(matches!(check(&node, &call), Err(MetaError::Forbidden { .. })), "{call:?}");
        }
    }

    #[test]
    fn the_admin_may_do_all_but_raft() {
        for call in forbidden_to_frontends() {
            assert_eq!(check(&Principal::admin(), &call), Ok(()), "{call:?}");
            assert_eq!(check(&Principal::member(1), &call), Ok(()), "{call:?}");
        }
        assert_eq!(check_peer(&Principal::member(2)), Ok(()));
        for caller in [Principal::admin(), Principal::node(1), frontend("s3-a")] {
            assert!(matches!(check_peer(&caller), Err(MetaError::Forbidden { .. })), "{caller}");
        }
    }

    /// QoS reports are frontends' (and the administrator's); purges are
    /// a frontend's only when due (the state checks when), never forced,
    /// and restores are the administrator's.
    #[test]
    fn qos_reports_and_due_purges_are_frontends_and_the_rest_of_the_bin_is_not() {
        use chuyi_meta_api::qos::QosReport;
        let report = || MetaCall::QosExchange(QosReport { instance: 1, rules_version: 0, rules: vec![] });
        let frontend = frontend("s3-gateway");
        assert_eq!(check(&frontend, &report()), Ok(()));
        assert_eq!(check(&Principal::admin(), &report()), Ok(()));
        assert!(matches!(check(&Principal::node(3), &report()), Err(MetaError::Forbidden { .. })));
        let due = write(Request::BeginPurge { name: "v".into(), force: false });
        assert_eq!(check(&frontend, &due), Ok(()));
        assert_eq!(check(&frontend, &write(Request::EndPurge { name: "v".into(), token: 7 })), Ok(()));
        for call in [
            write(Request::BeginPurge { name: "v".into(), force: true }),
            write(Request::RestoreVolume { name: "v".into() }),
            write(Request::TrashVolume { name: "v".into(), retain_ms: None }),
            write(Request::SetTrashRetention { retain_ms: 0 }),
        ] {
            assert!(matches!(check(&frontend, &call), Err(MetaError::Forbidden { .. })), "{call:?}");
        }
    }
}
