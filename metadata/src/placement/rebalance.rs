//! Gradual rebalancing after a node or disk joins.

use std::collections::{BTreeMap, BTreeSet};

use super::load::LoadTable;
use super::view::ClusterView;
use chuyi_meta_api::placement::PlacementError;
use chuyi_meta_api::placement::{ChangeReason, DiskRef, NodeView, PgChange, PoolRule, ReplicaSet};

/// A move is made only when it narrows the gap between the two disks' fills
/// (replicas relative to their capacity share) by more than this fraction of
/// a fair share. Each move copies a PG's data, so near-balance is left alone:
/// with equal disks, counts settle within 1 + 5% of the fair share.
pub const REBALANCE_TOLERANCE: f64 = 0.05;

/// Up to `max_moves` changes that move replicas from the fullest disks
/// (relative to capacity) to the emptiest eligible ones; an empty list once
/// the pool is balanced within [`REBALANCE_TOLERANCE`].
///
/// Only healthy PGs move (all replicas alive, as many as the rule asks,
/// not in `frozen`); the others are [`repair`](super::repair)'s. The caller
/// freezes PGs with a replica still being backfilled: moving one of them
/// could leave the PG with no complete copy. A PG moves at most once per
/// call, so each change's `from` is the current map's entry. The moved
/// replica always joins last: it is empty until backfilled, so it cannot be
/// primary. A PG whose secondary sits on the full disk is preferred, because
/// moving it leaves the primary, which serves the I/O, where it is; when only
/// primaries can move, the other replica is promoted. That may leave
/// primaries less even than replicas, which is accepted for simplicity.
///
/// A pool of one replica is not rebalanced: its moved replica would be
/// its only one, primary and empty until backfilled from itself, and the
/// old copy would be swept as a stray (a move of a larger pool keeps the
/// replica it replaces until the new one is backfilled; state/nodes.rs).
///
/// Converges: each move lowers sum(replicas² / fair share) by more than
/// 2 × tolerance, so repeated calls end with an empty list.
pub fn rebalance(
    rule: &PoolRule,
    nodes: &[NodeView],
    current: &[ReplicaSet],
    frozen: &BTreeSet<u32>,
    max_moves: usize,
) -> Result<Vec<PgChange>, PlacementError> {
    rule.validate()?;
    if rule.replicas < 2 {
        return Ok(Vec::new());
    }
    let view = ClusterView::new(nodes, rule.class)?;
    let mut state = Rebalancer::new(rule, &view, current, frozen);
    let mut changes = Vec::new();
    while changes.len() < max_moves {
        let Some(change) = state.next_move() else { break };
        changes.push(change);
    }
    Ok(changes)
}

/// The map as moves are decided, with the indexes that pick them.
#[derive(Debug)]
struct Rebalancer<'a> {
    rule: &'a PoolRule,
    view: &'a ClusterView<'a>,
    map: Vec<ReplicaSet>,
    load: LoadTable,
    /// Healthy, not yet moved PGs, by the disks they have a replica on.
    movable: BTreeMap<DiskRef, BTreeSet<u32>>,
}

impl<'a> Rebalancer<'a> {
    fn new(rule: &'a PoolRule, view: &'a ClusterView<'a>, current: &[ReplicaSet], frozen: &BTreeSet<u32>) -> Self {
        let load = LoadTable::counting(view, current);
        let mut movable: BTreeMap<DiskRef, BTreeSet<u32>> = BTreeMap::new();
        for (set, pg) in current.iter().zip(0u32..) {
            if !frozen.contains(&pg)
                && set.len() == rule.replicas
                && set.iter().all(|&d| view.is_alive(d) && view.is_eligible(d))
            {
                for &d in set {
                    movable.entry(d).or_default().insert(pg);
                }
            }
        }
        Self { rule, view, map: current.to_vec(), load, movable }
    }

    /// The best move left, applied to the working map.
    fn next_move(&mut self) -> Option<PgChange> {
        let fills = self.fills()?;
        let mut sources = fills.clone();
        sources.sort_by(|a, b| b.giving.total_cmp(&a.giving).then(a.disk.cmp(&b.disk)));
        let mut targets = fills;
        targets.sort_by(|a, b| a.taking.total_cmp(&b.taking).then(a.disk.cmp(&b.disk)));
        for source in &sources {
            for target in &targets {
                if source.giving - target.taking <= REBALANCE_TOLERANCE {
                    break; // targets only get fuller from here
                }
                if let Some(pg) = self.movable_pg(source.disk, target.disk) {
                    return Some(self.apply(pg, source.disk, target.disk));
                }
            }
        }
        None
    }

    /// Each eligible disk's fill in fair shares (1.0 = exactly its share),
    /// as the midpoints of giving one replica away or taking one more.
    /// `None` when there is nothing to balance.
    fn fills(&self) -> Option<Vec<Fill>> {
        let total = self.load.total_replicas() as f64;
        let capacity = self.load.total_capacity_bytes() as f64;
        if total == 0.0 {
            return None;
        }
        let fills = self.load.iter().map(|(disk, l)| {
            let fair = total * l.capacity_bytes as f64 / capacity;
            let count = l.replicas as f64;
            Fill { disk, giving: (count - 0.5) / fair, taking: (count + 0.5) / fair }
        });
        Some(fills.collect())
    }

    /// A healthy PG on `from` whose replica may move to `to`, secondaries
    /// first, then the lowest PG number.
    fn movable_pg(&self, from: DiskRef, to: DiskRef) -> Option<u32> {
        let pgs = self.movable.get(&from)?;
        let fits = |pg: &u32| {
            let others: ReplicaSet = self.map[*pg as usize].iter().copied().filter(|&d| d != from).collect();
            self.view.can_join(&others, to, self.rule)
        };
        let is_primary = |pg: &u32| self.map[*pg as usize].first() == Some(&from);
        let secondary = pgs.iter().filter(|pg| !is_primary(pg)).find(|pg| fits(pg));
        secondary.or_else(|| pgs.iter().filter(|pg| is_primary(pg)).find(|pg| fits(pg))).copied()
    }

    fn apply(&mut self, pg: u32, from: DiskRef, to: DiskRef) -> PgChange {
        let before = self.map[pg as usize].clone();
        let mut after: ReplicaSet = before.iter().copied().filter(|&d| d != from).collect();
        after.push(to);
        self.load.remove_set(&before);
        self.load.add_set(&after);
        for d in &before {
            if let Some(pgs) = self.movable.get_mut(d) {
                pgs.remove(&pg);
            }
        }
        self.map[pg as usize] = after.clone();
        PgChange { pg, from: before, to: after, reason: ChangeReason::Rebalance }
    }
}

#[derive(Clone, Copy, Debug)]
struct Fill {
    disk: DiskRef,
    giving: f64,
    taking: f64,
}

#[cfg(test)]
mod tests {
    use chuyi_common::ids::DeviceClass::Ssd;

    use super::*;
    use crate::placement::testkit::{apply, check_map, node, replica_counts, rule};
    use crate::placement::{place_pool, repair};

    /// Calls `rebalance` until it returns nothing, checking every call: at
    /// most `max_moves`, each change starting from the map as it stood, the
    /// map valid after each. Returns the final map and the number of calls.
    fn settle(
        rule: &PoolRule,
        nodes: &[NodeView],
        mut map: Vec<ReplicaSet>,
        max_moves: usize,
    ) -> (Vec<ReplicaSet>, usize) {
        for call in 1..=200 {
            let changes = rebalance(rule, nodes, &map, &BTreeSet::new(), max_moves).expect("rebalance");
            if changes.is_empty() {
                return (map, call);
            }
            assert!(changes.len() <= max_moves);
            apply(&mut map, &changes);
            check_map(rule, nodes, &map).expect("valid after a call");
        }
        panic!("rebalance did not converge in 200 calls");
    }

    /// Three nodes, then a fourth joins: 8 moves a call fill it to within
    /// the tolerance of a fair quarter, in a bounded number of calls.
    #[test]
    fn a_new_node_fills_gradually() {
        let mut nodes: Vec<_> = (1..=3).map(|n| node(n, "a", &[(0, Ssd, 100)])).collect();
        let rule = rule(Ssd, 256, false);
        let map = place_pool(&rule, &nodes).expect("place");
        nodes.push(node(4, "a", &[(0, Ssd, 100)]));
        let (map, calls) = settle(&rule, &nodes, map, 8);
        // About 128 replicas must move to the new disk: 16 calls at best.
        assert!(calls <= 20, "{calls} calls");
        let slack = 1.0 + REBALANCE_TOLERANCE * 128.0;
        for (disk, count) in replica_counts(&map) {
            assert!((count as f64 - 128.0).abs() <= slack, "{disk}: {count}");
        }
    }

    /// A bigger disk joins: it ends with about its capacity share.
    #[test]
    fn unequal_capacities_settle_near_their_shares() {
        let mut nodes: Vec<_> = (1..=3).map(|n| node(n, "a", &[(0, Ssd, 100)])).collect();
        let rule = rule(Ssd, 128, false);
        let map = place_pool(&rule, &nodes).expect("place");
        nodes.push(node(4, "a", &[(0, Ssd, 200)]));
        let (map, _) = settle(&rule, &nodes, map, 8);
        let counts = replica_counts(&map);
        // Fair shares of 256: 51.2 for each small disk, 102.4 for the big one.
        for (disk, count) in counts {
            let fair = if disk.node == 4 { 102.4 } else { 51.2 };
            assert!((count as f64 - fair).abs() <= 1.0 + 2.0 * REBALANCE_TOLERANCE * fair, "{disk}: {count}");
        }
    }

    /// Degraded PGs are repair's: rebalance leaves them where they are.
    #[test]
    fn unhealthy_pgs_do_not_move() {
        let mut nodes: Vec<_> = (1..=2).map(|n| node(n, "a", &[(0, Ssd, 100)])).collect();
        let rule = rule(Ssd, 8, false);
        let mut map = place_pool(&rule, &nodes).expect("place");
        nodes[0].up = false;
        let changes = repair(&rule, &nodes, &map).expect("repair");
        apply(&mut map, &changes);
        nodes.push(node(3, "a", &[(0, Ssd, 100)]));
        nodes[0].up = true;
        nodes[0].disks[0].up = false;
        assert_eq!(rebalance(&rule, &nodes, &map, &BTreeSet::new(), 8), Ok(vec![]));
    }

    /// A pool of one replica never moves its only copy.
    #[test]
    fn single_replica_pools_do_not_move() {
        let mut nodes: Vec<_> = (1..=2).map(|n| node(n, "a", &[(0, Ssd, 100)])).collect();
        let rule = PoolRule { replicas: 1, ..rule(Ssd, 64, false) };
        let map = place_pool(&rule, &nodes).expect("place");
        nodes.push(node(3, "a", &[(0, Ssd, 100)]));
        assert_eq!(rebalance(&rule, &nodes, &map, &BTreeSet::new(), 8), Ok(vec![]));
    }

    /// A balanced pool gets no moves.
    #[test]
    fn balanced_is_left_alone() {
        let nodes: Vec<_> = (1..=3).map(|n| node(n, "a", &[(0, Ssd, 100)])).collect();
        let rule = rule(Ssd, 256, false);
        let map = place_pool(&rule, &nodes).expect("place");
        assert_eq!(rebalance(&rule, &nodes, &map, &BTreeSet::new(), 8), Ok(vec![]));
    }
}
