//! Properties over random clusters: whatever the view, placement's output
//! keeps the constraints, repair leaves nothing on a dead disk, and
//! rebalancing stays valid and stops.

use std::collections::BTreeSet;

use chuyi_common::ids::DeviceClass::{self, Hdd, Nvme, Ssd};
use proptest::prelude::*;

use super::testkit::{apply, check_map, check_set};
use super::{place_pool, rebalance, repair, ChangeReason, DiskRef, DiskView, NodeView, PlacementError, PoolRule};

fn class() -> impl Strategy<Value = DeviceClass> {
    prop_oneof![4 => Just(Ssd), 1 => Just(Hdd), 1 => Just(Nvme)]
}

fn disk() -> impl Strategy<Value = (DeviceClass, u64, bool)> {
    (class(), prop_oneof![1 => Just(0u64), 9 => 1u64..=1000], prop::bool::weighted(0.9))
}

fn node() -> impl Strategy<Value = (u8, bool, Vec<(DeviceClass, u64, bool)>)> {
    (0u8..3, prop::bool::weighted(0.8), prop::collection::vec(disk(), 1..=3))
}

/// 2 to 8 nodes with ids 1.., disks with ids 0.., random classes,
/// capacities, domains and down flags.
fn cluster() -> impl Strategy<Value = Vec<NodeView>> {
    prop::collection::vec(node(), 2..=8).prop_map(|nodes| {
        (1u32..)
            .zip(nodes)
            .map(|(id, (domain, up, disks))| NodeView {
                id,
                failure_domain: format!("rack-{domain}"),
                up,
                disks: (0u32..)
                    .zip(disks)
                    .map(|(id, (class, capacity_bytes, up))| DiskView { id, class, capacity_bytes, up })
                    .collect(),
            })
            .collect()
    })
}

fn pool_rule() -> impl Strategy<Value = PoolRule> {
    (class(), prop_oneof![1 => Just(1usize), 4 => Just(2usize), 1 => Just(3usize)], 1u32..=64, any::<bool>()).prop_map(
        |(class, replicas, pg_count, separate_failure_domains)| PoolRule {
            class,
            replicas,
            pg_count,
            separate_failure_domains,
        },
    )
}

/// The same cluster with every node and disk up.
fn all_up(nodes: &[NodeView]) -> Vec<NodeView> {
    let mut nodes = nodes.to_vec();
    for n in &mut nodes {
        n.up = true;
        n.disks.iter_mut().for_each(|d| d.up = true);
    }
    nodes
}

fn alive(nodes: &[NodeView], d: DiskRef) -> bool {
    nodes.iter().any(|n| n.id == d.node && n.up && n.disks.iter().any(|x| x.id == d.disk && x.up))
}

/// The error `place_pool` owes for this view, computed independently.
fn expected_error(rule: &PoolRule, nodes: &[NodeView]) -> Option<PlacementError> {
    let eligible_node =
        |n: &&NodeView| n.up && n.disks.iter().any(|d| d.up && d.class == rule.class && d.capacity_bytes > 0);
    let ok_nodes: Vec<&NodeView> = nodes.iter().filter(eligible_node).collect();
    let domains: BTreeSet<&str> = ok_nodes.iter().map(|n| n.failure_domain.as_str()).collect();
    let class = rule.class;
    if ok_nodes.is_empty() {
        Some(PlacementError::NoDisksOfClass { class })
    } else if ok_nodes.len() < rule.replicas {
        Some(PlacementError::NotEnoughNodes { class, needed: rule.replicas, available: ok_nodes.len() })
    } else if rule.separate_failure_domains && domains.len() < rule.replicas {
        Some(PlacementError::NotEnoughFailureDomains { class, needed: rule.replicas, available: domains.len() })
    } else {
        None
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// `place_pool` errs exactly when no valid set exists, with the precise
    /// error, and otherwise returns a map that keeps every constraint.
    #[test]
    fn placement_is_valid_or_a_precise_error(nodes in cluster(), rule in pool_rule()) {
        match place_pool(&rule, &nodes) {
            Ok(map) => {
                prop_assert_eq!(expected_error(&rule, &nodes), None);
                prop_assert_eq!(check_map(&rule, &nodes, &map), Ok(()));
            }
            Err(e) => prop_assert_eq!(Some(e), expected_error(&rule, &nodes)),
        }
    }

    /// Place on the whole cluster, then take the down flags: repair never
    /// fails, leaves no live PG on a dead disk, keeps survivors first and in
    /// order, touches only PGs that had a dead replica, and reports lost
    /// exactly the PGs with no survivor. Repairing again changes nothing.
    #[test]
    fn repair_leaves_nothing_on_dead_disks(nodes in cluster(), rule in pool_rule()) {
        let Ok(before) = place_pool(&rule, &all_up(&nodes)) else { return Ok(()) };
        let changes = repair(&rule, &nodes, &before).expect("repair takes any view");
        let mut after = before.clone();
        apply(&mut after, &changes);
        let changed: BTreeSet<u32> = changes.iter().map(|c| c.pg).collect();
        for (pg, (old, new)) in (0u32..).zip(before.iter().zip(&after)) {
            let survivors: Vec<DiskRef> = old.iter().copied().filter(|&d| alive(&nodes, d)).collect();
            if survivors.is_empty() {
                prop_assert!(changes.iter().any(|c| c.pg == pg && c.reason == ChangeReason::Lost));
                prop_assert_eq!(old, new);
                continue;
            }
            prop_assert_eq!(changed.contains(&pg), survivors.len() < old.len());
            prop_assert!(new.iter().all(|&d| alive(&nodes, d)), "pg {} on a dead disk: {:?}", pg, new);
            prop_assert_eq!(&new[..survivors.len()], &survivors[..]);
            prop_assert!(new.len() <= rule.replicas);
            prop_assert_eq!(check_set(&rule, &nodes, new), Ok(()));
        }
        let again = repair(&rule, &nodes, &after).expect("repair");
        prop_assert!(again.iter().all(|c| c.reason == ChangeReason::Lost), "{:?}", again);
    }

    /// The pool is placed on the first `placed_on` nodes, the rest join
    /// and some nodes and disks go down; after a repair, rebalancing in
    /// batches of at most `max_moves` keeps every moved PG valid, starts
    /// each change from the map as it stands, and stops.
    #[test]
    fn rebalance_stays_valid_and_stops(
        nodes in cluster(),
        rule in pool_rule(),
        placed_on in 1usize..=8,
        max_moves in 1usize..=8,
    ) {
        let first = &nodes[..placed_on.min(nodes.len())];
        let Ok(mut map) = place_pool(&rule, &all_up(first)) else { return Ok(()) };
        let repaired = repair(&rule, &nodes, &map).expect("repair");
        apply(&mut map, &repaired);
        for _ in 0..500 {
            let changes = rebalance(&rule, &nodes, &map, &BTreeSet::new(), max_moves).expect("rebalance");
            if changes.is_empty() {
                return Ok(());
            }
            prop_assert!(changes.len() <= max_moves);
            apply(&mut map, &changes);
            for c in &changes {
                prop_assert_eq!(c.reason, ChangeReason::Rebalance);
                prop_assert_eq!(c.to.len(), rule.replicas);
                prop_assert_eq!(check_set(&rule, &nodes, &c.to), Ok(()));
            }
        }
        prop_assert!(false, "rebalance did not stop in 500 calls");
    }
}
