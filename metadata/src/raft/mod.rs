//! The Raft group: a member process wires the store, openraft, the network
//! over the RPC layer, group commit, the leader's monitor and the service,
//! and the leader's memory of storage node liveness.

pub mod liveness;
mod member;
mod metrics;
mod monitor;
mod network;
mod proposer;
mod service;
pub mod snapshots;

pub use member::{Member, MemberError};
pub use monitor::REBALANCE_MOVES_PER_TICK;
pub use network::Network;
pub use proposer::{Proposer, BATCH_BYTES_MAX, BATCH_COMMANDS_MAX, COMMAND_BYTES_MAX};
pub use service::{MetaService, RECORDS_PAGE_MAX};

use openraft::Raft;

use crate::store::TypeConfig;

/// The current leader's address as this member knows it.
pub(crate) fn leader_addr(raft: &Raft<TypeConfig>) -> Option<String> {
    let metrics = raft.metrics().borrow().clone();
    let leader = metrics.current_leader?;
    metrics.membership_config.membership().get_node(&leader).map(|n| n.addr.clone())
}
