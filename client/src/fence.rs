//! A volume writer's right to write: the fencing token its attach lease
//! gave it, and the gate that stops its requests once the lease may be
//! gone.
//!
//! Storage nodes refuse a mutation whose token is older than the newest
//! they know for the volume (storage-node's `fence` module); the gate keeps
//! a writer that lost its lease from sending at all, even requests that
//! were already queued on a connection when it froze.

use std::sync::Arc;

use chuyi_common::proto::chunk::VolumeFence;
use chuyi_common::rpc::SendGate;

#[derive(Clone, Debug)]
pub struct WriteFence {
    /// The volume's chunk owner id.
    pub owner: u64,
    /// The attach lease's id: lease ids only grow, so a newer writer's is
    /// larger.
    pub token: u64,
    /// Open while the writer surely holds its lease.
    pub gate: Arc<dyn SendGate>,
}

impl WriteFence {
    pub fn volume_fence(&self) -> VolumeFence {
        // A writer raises its token only; snapshots raise the sequence.
        VolumeFence { owner: self.owner, token: self.token, snap: 0 }
    }
}

/// A gate that is always open: for a writer whose token alone fences it
/// (a volume delete holding the volume's lease for its whole run).
#[derive(Debug)]
pub struct AlwaysOpen;

impl SendGate for AlwaysOpen {
    fn open(&self) -> bool {
        true
    }
}
