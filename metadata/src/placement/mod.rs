//! Placement: where a pool's placement groups (PGs) live, as pure functions
//! of the cluster view and the current PG map. No I/O, no clock: the state
//! machine decides *when* (a node missed heartbeats for the configured time,
//! a node joined), calls these for *what*, applies the returned changes and
//! bumps the map epoch.
//!
//! - [`place_pool`]: the first map of a new pool.
//! - [`repair`]: PGs off down nodes and disks; survivors become primary.
//! - [`rebalance`]: a bounded batch of moves towards capacity balance.
//!
//! Every replica set keeps the pool's constraints: eligible disks only (up,
//! of the pool's class, with capacity, on an up node), one replica per node,
//! one per failure domain when the pool asks. Load is balanced greedily by
//! capacity: a disk's share of replicas, and of primaries, follows its share
//! of the capacity.
//!
//! Rejected: computing placement by hashing (CRUSH, rendezvous hashing). It
//! needs no stored map, but the metadata service holds the map in Raft
//! anyway, and a hash decides moves implicitly: any change to the view may
//! move PGs nobody chose to move. An explicit map with greedy balancing
//! makes every move a [`PgChange`] that is bounded, reported and fenced by
//! an epoch, and it balances on the actual replica counts, not in expectation.

mod initial;
mod load;
mod rebalance;
mod repair;
mod view;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testkit;

pub use chuyi_meta_api::placement::{
    ChangeReason, DiskRef, DiskView, NodeView, PgChange, PlacementError, PoolRule, ReplicaSet,
};
pub use initial::place_pool;
pub use rebalance::{rebalance, REBALANCE_TOLERANCE};
pub use repair::repair;
