//! Moving PGs off down nodes and disks.

use super::load::LoadTable;
use super::view::ClusterView;
use chuyi_meta_api::placement::PlacementError;
use chuyi_meta_api::placement::{ChangeReason, NodeView, PgChange, PoolRule, ReplicaSet};

/// The changes that take every PG off dead replicas, in PG order; healthy
/// PGs get none.
///
/// For a PG with a replica on a down node or disk, the survivors keep their
/// order and data while they fit the rule (a set a rebalance is moving has
/// one more than the rule, and its new replica may share the failure domain
/// of the one it replaces; the caller lists complete replicas first, so a
/// half-filled one gives way), the first survivor becomes primary, and new replicas
/// are chosen after them with the rule's constraints and the same greedy
/// capacity balancing as [`place_pool`](super::place_pool), counting the
/// current map's load. Without an eligible disk the PG runs degraded on its
/// survivors: the change is still reported ([`PgChange::is_degraded`]). A PG
/// that already runs short with all replicas alive gets its missing replicas
/// back as soon as a disk allows ([`ChangeReason::Underreplicated`]).
///
/// A PG with no survivor is reported as [`ChangeReason::Lost`] with
/// `to == from`, not as an error: one lost PG must not stop the repair of the
/// others, and the map keeps naming the only disks that may bring it back.
pub fn repair(rule: &PoolRule, nodes: &[NodeView], current: &[ReplicaSet]) -> Result<Vec<PgChange>, PlacementError> {
    rule.validate()?;
    if current.len() != rule.pg_count as usize {
        return Err(PlacementError::MapSize { expected: rule.pg_count, actual: current.len() });
    }
    let view = ClusterView::new(nodes, rule.class)?;
    let mut load = LoadTable::counting(&view, current);
    let changes = current.iter().zip(0u32..).filter_map(|(set, pg)| repair_one(rule, &view, &mut load, pg, set));
    Ok(changes.collect())
}

fn repair_one(
    rule: &PoolRule,
    view: &ClusterView<'_>,
    load: &mut LoadTable,
    pg: u32,
    set: &ReplicaSet,
) -> Option<PgChange> {
    let survivors: ReplicaSet = set.iter().copied().filter(|&d| view.is_alive(d)).collect();
    if survivors.is_empty() {
        return Some(PgChange { pg, from: set.clone(), to: set.clone(), reason: ChangeReason::Lost });
    }
    let reason = match set.iter().find_map(|&d| view.down_reason(d)) {
        Some(reason) => reason,
        None if set.len() < rule.replicas => ChangeReason::Underreplicated,
        None => return None,
    };
    // Survivors in order while they fit the rule: a set a rebalance is
    // moving holds one replica more than the rule, and the new one may
    // share a failure domain with the one it replaces.
    let mut to = ReplicaSet::new();
    for d in survivors {
        if to.len() < rule.replicas && view.can_join(&to, d, rule) {
            to.push(d);
        }
    }
    while to.len() < rule.replicas {
        match load.lightest(&to, |d| view.can_join(&to, d, rule)) {
            Some(disk) => to.push(disk),
            None => break,
        }
    }
    if to == *set {
        // Already short, and still nothing to add: not a change.
        return None;
    }
    load.remove_set(set);
    load.add_set(&to);
    Some(PgChange { pg, from: set.clone(), to, reason })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chuyi_common::ids::DeviceClass::Ssd;

    use super::*;
    use crate::placement::testkit::{apply, check_map, node, replica_counts, rule};
    use crate::placement::{place_pool, DiskRef};

    /// A set a rebalance is moving (primary, new replica, kept replica; the
    /// new one in the kept one's failure domain, which the move allowed
    /// since the kept one leaves) loses its primary: the kept replica, a
    /// complete one listed before the new, stays; the new one, which would
    /// share its domain, gives way to one from another domain.
    #[test]
    fn a_moving_set_that_loses_its_primary_keeps_the_rule() {
        let mut nodes = vec![
            node(1, "a", &[(0, Ssd, 100)]),
            node(2, "b", &[(0, Ssd, 100)]),
            node(3, "b", &[(0, Ssd, 100)]),
            node(4, "c", &[(0, Ssd, 100)]),
        ];
        let rule = rule(Ssd, 1, true);
        let d = |n| DiskRef { node: n, disk: 0 };
        // Complete first (as the state layer orders them): 1, kept 2, new 3.
        let current = vec![vec![d(1), d(2), d(3)]];
        nodes[0].up = false;
        let changes = repair(&rule, &nodes, &current).expect("repair");
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].to, vec![d(2), d(4)], "{changes:?}");
    }

    /// Node 2 of 4 goes down: its PGs, and only those, change; each keeps
    /// its survivor as primary and gets a secondary on nodes 1, 3 or 4,
    /// spread evenly; nothing refers to node 2 afterwards.
    #[test]
    fn a_down_node_loses_its_pgs_to_the_others() {
        let mut nodes: Vec<_> = (1..=4).map(|n| node(n, "a", &[(0, Ssd, 100)])).collect();
        let rule = rule(Ssd, 256, false);
        let before = place_pool(&rule, &nodes).expect("place");
        nodes[1].up = false;
        let changes = repair(&rule, &nodes, &before).expect("repair");

        let affected: BTreeSet<u32> =
            (0u32..).zip(&before).filter(|(_, s)| s.iter().any(|d| d.node == 2)).map(|(pg, _)| pg).collect();
        assert_eq!(changes.iter().map(|c| c.pg).collect::<BTreeSet<_>>(), affected);
        for c in &changes {
            assert_eq!(c.reason, ChangeReason::NodeDown(2));
            assert_eq!(c.from, before[c.pg as usize]);
            let survivor = *c.from.iter().find(|d| d.node != 2).expect("a survivor");
            assert_eq!(c.to[0], survivor, "pg {}: the survivor is primary", c.pg);
            assert_eq!(c.to.len(), 2);
        }
        let mut after = before.clone();
        apply(&mut after, &changes);
        check_map(&rule, &nodes, &after).expect("valid");
        let mut new_secondaries = std::collections::BTreeMap::<u32, usize>::new();
        for c in &changes {
            *new_secondaries.entry(c.to[1].node).or_default() += 1;
        }
        for n in [1, 3, 4] {
            let got = new_secondaries.get(&n).copied().unwrap_or(0);
            assert!((32..=54).contains(&got), "node {n} took {got} of {} new secondaries", changes.len());
        }
        let counts = replica_counts(&after);
        assert!(counts.keys().all(|d| d.node != 2));
        // 512 replicas over 3 disks: 170 or 171 each is perfect; allow a few.
        for (disk, count) in counts {
            assert!((166..=175).contains(&count), "{disk}: {count}");
        }
    }

    /// Two nodes, one down: every PG keeps its one survivor, as primary,
    /// and the call succeeds; a second call changes nothing more.
    #[test]
    fn no_room_degrades_to_the_survivor() {
        let mut nodes: Vec<_> = (1..=2).map(|n| node(n, "a", &[(0, Ssd, 100)])).collect();
        let rule = rule(Ssd, 16, false);
        let mut map = place_pool(&rule, &nodes).expect("place");
        nodes[0].up = false;
        let changes = repair(&rule, &nodes, &map).expect("repair");
        assert_eq!(changes.len(), 16);
        for c in &changes {
            assert!(c.is_degraded(&rule));
            assert_eq!(c.to, vec![DiskRef::new(2, 0)]);
        }
        apply(&mut map, &changes);
        assert_eq!(repair(&rule, &nodes, &map), Ok(vec![]));

        // Node 1 returns: the degraded PGs get a second replica back.
        nodes[0].up = true;
        let changes = repair(&rule, &nodes, &map).expect("repair");
        assert_eq!(changes.len(), 16);
        assert!(changes.iter().all(|c| c.reason == ChangeReason::Underreplicated && c.to[0] == DiskRef::new(2, 0)));
    }

    /// Both replicas of a PG down: reported lost, map entry kept; a PG on a
    /// down disk of an up node is reported with the disk as the reason.
    #[test]
    fn both_replicas_down_is_reported_lost() {
        let mut nodes: Vec<_> = (1..=3).map(|n| node(n, "a", &[(0, Ssd, 100), (1, Ssd, 100)])).collect();
        let rule = rule(Ssd, 3, false);
        let map = vec![
            vec![DiskRef::new(1, 0), DiskRef::new(2, 0)],
            vec![DiskRef::new(3, 0), DiskRef::new(1, 1)],
            vec![DiskRef::new(2, 1), DiskRef::new(3, 1)],
        ];
        nodes[0].up = false;
        nodes[1].disks[0].up = false;
        let changes = repair(&rule, &nodes, &map).expect("repair");
        assert_eq!(changes.len(), 2);
        assert_eq!(
            changes[0],
            PgChange { pg: 0, from: map[0].clone(), to: map[0].clone(), reason: ChangeReason::Lost }
        );
        assert_eq!(changes[1].reason, ChangeReason::NodeDown(1));
        assert_eq!(changes[1].to, vec![DiskRef::new(3, 0), DiskRef::new(2, 1)]);
        assert!(!changes[0].is_degraded(&rule));
    }

    #[test]
    fn a_map_of_the_wrong_size_is_refused() {
        let nodes: Vec<_> = (1..=2).map(|n| node(n, "a", &[(0, Ssd, 100)])).collect();
        let err = repair(&rule(Ssd, 4, false), &nodes, &[]);
        assert_eq!(err, Err(PlacementError::MapSize { expected: 4, actual: 0 }));
    }
}
