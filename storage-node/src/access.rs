//! Who may call what on a storage node: the caller's principal, proved at
//! the RPC handshake (`chuyi_common::credential`), against the request. A
//! pure decision, asked before the request touches anything.
//!
//! Nodes, the administrator and members may make any request but a
//! numbered forward, which only the node it names may send. A frontend
//! (S3 gateway, NBD frontend) makes the replicated PG operations a client
//! makes, raises its volume's fences, flushes, and reads status; never the
//! raw per-disk service (`ChunkRequest::Disk`, which bypasses replication
//! and fencing) nor what only a peer sends (forwarded writes, checksum
//! tables for backfill).

use chuyi_common::credential::{Principal, Role};
use chuyi_common::proto::chunk::{ChunkError, ChunkErrorKind, ChunkRequest, DiskRequest, PgOp};

/// Whether `caller` may make `request`; the refusal names both.
pub fn check(caller: &Principal, request: &ChunkRequest) -> Result<(), ChunkError> {
    let allowed = match caller.role {
        Role::Member | Role::Admin | Role::Node => true,
        Role::Frontend => frontend_may(request),
    } && numbers_its_own(caller, request);
    if allowed {
        return Ok(());
    }
    Err(ChunkError { kind: ChunkErrorKind::Forbidden, message: format!("{caller} may not {}", name(request)) })
}

fn frontend_may(request: &ChunkRequest) -> bool {
    match request {
        ChunkRequest::Ping
        | ChunkRequest::DiskStats
        | ChunkRequest::NodeStatus
        | ChunkRequest::RaiseFences { .. }
        | ChunkRequest::TrimClones { .. }
        | ChunkRequest::Flush { disk: None, .. } => true,
        // Poison, stamps and raw blocks are between nodes.
        ChunkRequest::Pg { forwarded, op, .. } => {
            !forwarded && !matches!(op, PgOp::Poison { .. } | PgOp::Stamp { .. } | PgOp::ReadRaw { .. })
        }
        // Another frontend's volumes' I/O is the administrator's to see.
        ChunkRequest::Disk(_)
        | ChunkRequest::Flush { disk: Some(_), .. }
        | ChunkRequest::PgSums { .. }
        | ChunkRequest::OwnerIo { .. } => false,
    }
}

/// A numbered forward names the node that sent it, and only that node may
/// send it: a mark raised in another node's name would have the receiver
/// refuse that node's forwards (`crate::replication::order`).
fn numbers_its_own(caller: &Principal, request: &ChunkRequest) -> bool {
    match request {
        ChunkRequest::Pg { order: Some(order), .. } => {
            caller.role == Role::Node && caller.name == order.from.to_string()
        }
        _ => true,
    }
}

/// The request's name in a refusal.
fn name(request: &ChunkRequest) -> &'static str {
    match request {
        ChunkRequest::Ping => "Ping",
        ChunkRequest::Disk(op) => disk_name(op),
        ChunkRequest::Flush { disk: Some(_), .. } => "Flush of one disk",
        ChunkRequest::Flush { disk: None, .. } => "Flush",
        ChunkRequest::DiskStats => "DiskStats",
        ChunkRequest::Pg { forwarded: true, order: Some(_), .. } => "a forward numbered by another node",
        ChunkRequest::Pg { forwarded: true, .. } => "a forwarded PG operation",
        ChunkRequest::Pg { forwarded: false, .. } => "a PG operation",
        ChunkRequest::PgSums { .. } => "PgSums",
        ChunkRequest::NodeStatus => "NodeStatus",
        ChunkRequest::RaiseFences { .. } => "RaiseFences",
        ChunkRequest::TrimClones { .. } => "TrimClones",
        ChunkRequest::OwnerIo { .. } => "OwnerIo",
    }
}

fn disk_name(op: &DiskRequest) -> &'static str {
    match op {
        DiskRequest::Write { .. } => "Write (raw)",
        DiskRequest::Read { .. } => "Read (raw)",
        DiskRequest::Trim { .. } => "Trim (raw)",
        DiskRequest::WriteZeroes { .. } => "WriteZeroes (raw)",
        DiskRequest::DeleteChunk { .. } => "DeleteChunk",
        DiskRequest::ListChunks { .. } => "ListChunks",
    }
}

#[cfg(test)]
mod tests {
    use chuyi_common::ids::ChunkId;
    use chuyi_common::map::PgId;
    use chuyi_common::proto::chunk::{ForwardOrder, VolumeFence};

    use super::*;

    fn frontend() -> Principal {
        Principal::new(Role::Frontend, "s3-a").expect("name")
    }

    fn raw_requests() -> Vec<ChunkRequest> {
        vec![
            ChunkRequest::Disk(DiskRequest::Write { disk: 0, chunk: ChunkId::new(1, 0), offset: 0, fua: true }),
            ChunkRequest::Disk(DiskRequest::Read { disk: 0, chunk: ChunkId::new(1, 0), offset: 0, len: 4096 }),
            ChunkRequest::Disk(DiskRequest::Trim { disk: 0, chunk: ChunkId::new(1, 0), offset: 0, len: 4096 }),
            ChunkRequest::Disk(DiskRequest::WriteZeroes {
                disk: 0,
                chunk: ChunkId::new(1, 0),
                offset: 0,
                len: 4096,
                fua: false,
            }),
            ChunkRequest::Flush { disk: Some(0), fence: None },
            ChunkRequest::Disk(DiskRequest::DeleteChunk { disk: 0, chunk: ChunkId::new(1, 0) }),
            ChunkRequest::Disk(DiskRequest::ListChunks { disk: 0, start_after: None, max: 10 }),
            ChunkRequest::PgSums { pg: PgId { pool: 1, pg: 0 }, epoch: 1, start_after: None, max: 10 },
            ChunkRequest::Pg {
                chunk: ChunkId::new(1, 0),
                epoch: 1,
                op: PgOp::Write { offset: 0, fua: true, snap: 0 },
                forwarded: true,
                fence: None,
                order: None,
            },
            ChunkRequest::Pg {
                chunk: ChunkId::new(1, 0),
                epoch: 1,
                op: PgOp::Poison { offset: 0, len: 4096 },
                forwarded: false,
                fence: None,
                order: None,
            },
            ChunkRequest::Pg {
                chunk: ChunkId::new(1, 0),
                epoch: 1,
                op: PgOp::ReadRaw { offset: 0 },
                forwarded: false,
                fence: None,
                order: None,
            },
            ChunkRequest::OwnerIo { owners: vec![1] },
        ]
    }

    #[test]
    fn a_frontend_never_reaches_a_disk_directly() {
        for request in raw_requests() {
            let refused = check(&frontend(), &request).expect_err("refused");
            assert_eq!(refused.kind, ChunkErrorKind::Forbidden, "{request:?}");
            assert!(refused.message.starts_with("frontend s3-a may not"), "{}", refused.message);
        }
    }

    #[test]
    fn a_frontend_makes_what_a_client_makes() {
        for request in [
            ChunkRequest::Ping,
            ChunkRequest::Pg {
                chunk: ChunkId::new(1, 0),
                epoch: 1,
                op: PgOp::Read { offset: 0, len: 4096 },
                forwarded: false,
                fence: None,
                order: None,
            },
            ChunkRequest::Flush { disk: None, fence: Some(VolumeFence { owner: 1, token: 2, snap: 0 }) },
            ChunkRequest::RaiseFences { fences: vec![] },
            ChunkRequest::DiskStats,
            ChunkRequest::NodeStatus,
        ] {
            assert_eq!(check(&frontend(), &request), Ok(()), "{request:?}");
        }
    }

    #[test]
    fn peers_and_the_admin_may_do_anything() {
        for caller in [Principal::node(2), Principal::admin()] {
            for request in raw_requests() {
                assert_eq!(check(&caller, &request), Ok(()), "{caller}: {request:?}");
            }
        }
    }

    /// A numbered forward comes only from the node it names: not another
    /// node, not the administrator, not a member or a frontend.
    #[test]
    fn only_the_node_a_forward_names_may_send_it() {
        let numbered = ChunkRequest::Pg {
            chunk: ChunkId::new(1, 0),
            epoch: 1,
            op: PgOp::Write { offset: 0, fua: true, snap: 0 },
            forwarded: true,
            fence: None,
            order: Some(ForwardOrder { from: 2, seq: 7, settled_below: 7 }),
        };
        assert_eq!(check(&Principal::node(2), &numbered), Ok(()));
        for caller in [Principal::node(3), Principal::admin(), Principal::member(2), frontend()] {
            let refused = check(&caller, &numbered).expect_err("refused");
            assert_eq!(refused.kind, ChunkErrorKind::Forbidden, "{caller}");
            assert!(refused.message.ends_with("may not a forward numbered by another node"), "{}", refused.message);
        }
    }
}
