//! The data map: what the data path needs of the cluster map to find a
//! chunk's replicas and to fence requests by epoch.
//!
//! The metadata service owns the full map; it hands out this projection so
//! that clients and storage nodes, which know nothing of Raft or placement,
//! agree on one function from a chunk to its placement group and replicas.

use serde::{Deserialize, Serialize};

use crate::ids::{ChunkId, DeviceClass, DiskId, NodeId};

/// Bits of a chunk owner id that number owners within a pool; the pool id
/// sits above them, so any node can tell a chunk's pool from its id alone.
pub const OWNER_SEQ_BITS: u32 = 40;

/// The largest pool id an owner id can carry.
pub const POOL_ID_MAX: u32 = (1 << (64 - OWNER_SEQ_BITS)) - 1;

/// The owner id of the `seq`th owner (volume or object data) of `pool`.
pub fn owner_id(pool: u32, seq: u64) -> u64 {
    (u64::from(pool) << OWNER_SEQ_BITS) | (seq & ((1 << OWNER_SEQ_BITS) - 1))
}

/// The pool whose chunks carry this owner id.
pub fn pool_of(owner: u64) -> u32 {
    (owner >> OWNER_SEQ_BITS) as u32
}

/// The placement group of `chunk` in a pool of `pg_count` PGs: a fixed mix
/// of owner and index (splitmix64), so a volume's consecutive chunks land on
/// different PGs and every role computes the same answer.
/// A snapshot clone lands in its chunk's PG, on the same disks.
pub fn pg_of(chunk: ChunkId, pg_count: u32) -> u32 {
    let chunk = chunk.head();
    let mut x = chunk.owner ^ chunk.index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x % u64::from(pg_count.max(1))) as u32
}

/// One disk of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Replica {
    pub node: NodeId,
    pub disk: DiskId,
}

/// The data map at one epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataMap {
    pub epoch: u64,
    pub nodes: Vec<NodeAddr>,
    pub pools: Vec<PoolMap>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub id: NodeId,
    /// Where the node serves chunk RPCs, in preference order.
    pub addrs: Vec<String>,
    pub up: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMap {
    pub id: u32,
    pub name: String,
    pub class: DeviceClass,
    /// Replicas the pool asks for.
    pub size: u32,
    /// Indexed by PG number.
    pub pgs: Vec<PgMap>,
}

/// One placement group as the data path sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgMap {
    /// The map epoch at which this PG last changed: what requests carry and
    /// nodes compare.
    pub epoch: u64,
    /// Primary first. Recovering replicas are in here too: they take every
    /// write but serve no read until backfilled.
    pub replicas: Vec<Replica>,
    /// Members of `replicas` not yet holding the PG's data.
    pub recovering: Vec<Replica>,
}

/// A PG's address: pool id and PG number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PgId {
    pub pool: u32,
    pub pg: u32,
}

impl std::fmt::Display for PgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.pool, self.pg)
    }
}

impl PgMap {
    pub fn primary(&self) -> Option<Replica> {
        self.replicas.first().copied()
    }

    /// Replicas holding the data: those a read may go to.
    pub fn complete(&self) -> impl Iterator<Item = Replica> + '_ {
        self.replicas.iter().copied().filter(|r| !self.recovering.contains(r))
    }

    /// This node's replica in the PG, if it has one.
    pub fn on_node(&self, node: NodeId) -> Option<Replica> {
        self.replicas.iter().copied().find(|r| r.node == node)
    }
}

impl DataMap {
    pub fn pool(&self, id: u32) -> Option<&PoolMap> {
        self.pools.iter().find(|p| p.id == id)
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeAddr> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The PG holding `chunk`, or `None` when its pool is not in the map.
    pub fn locate(&self, chunk: ChunkId) -> Option<(PgId, &PgMap)> {
        let pool = self.pool(pool_of(chunk.owner))?;
        let pg = pg_of(chunk, pool.pgs.len() as u32);
        let map = pool.pgs.get(pg as usize)?;
        Some((PgId { pool: pool.id, pg }, map))
    }

    pub fn pg(&self, id: PgId) -> Option<&PgMap> {
        self.pool(id.pool)?.pgs.get(id.pg as usize)
    }

    /// Every PG with its id.
    pub fn pgs(&self) -> impl Iterator<Item = (PgId, &PgMap)> {
        self.pools.iter().flat_map(|p| p.pgs.iter().zip(0u32..).map(move |(m, pg)| (PgId { pool: p.id, pg }, m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_carry_their_pool() {
        let owner = owner_id(7, 12345);
        assert_eq!(pool_of(owner), 7);
        assert_eq!(owner & ((1 << OWNER_SEQ_BITS) - 1), 12345);
        assert_eq!(pool_of(owner_id(POOL_ID_MAX, 1)), POOL_ID_MAX);
    }

    #[test]
    fn pg_of_spreads_a_volume_and_stays_in_range() {
        let owner = owner_id(1, 1);
        let mut hits = vec![0u32; 64];
        for index in 0..6400 {
            let pg = pg_of(ChunkId::new(owner, index), 64);
            hits[pg as usize] += 1;
        }
        // Uniform would be 100 each; a fixed hash must not pile up.
        assert!(hits.iter().all(|&h| (50..=150).contains(&h)), "{hits:?}");
        assert_eq!(pg_of(ChunkId::new(owner, 3), 0), 0, "zero PGs does not divide by zero");
    }

    #[test]
    fn pg_of_is_stable() {
        // Computed once (independently, in Python) and frozen: a change
        // here would move every chunk of every cluster.
        let pgs: Vec<u32> = (0..4).map(|i| pg_of(ChunkId::new(1 << 40, i), 1000)).collect();
        assert_eq!(pgs, vec![568, 203, 25, 305]);
    }
}
