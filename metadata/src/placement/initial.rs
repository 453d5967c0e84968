//! The first placement of a pool's PGs.

use super::load::LoadTable;
use super::view::ClusterView;
use chuyi_meta_api::placement::PlacementError;
use chuyi_meta_api::placement::{NodeView, PoolRule, ReplicaSet};

/// Places every PG of a new pool: `rule.replicas` up disks of the rule's
/// class on distinct nodes (and distinct failure domains when the rule says
/// so), the primary first.
///
/// Balanced by capacity, greedily: PG by PG, each replica goes to the
/// allowed disk with the lowest (replicas + 1) / capacity, ties to the
/// lowest [`DiskRef`](super::DiskRef), so the result is a function of the
/// input alone. The primary is then the member with the lowest
/// (primaries + 1) / capacity, so primaries, which serve the I/O, spread by
/// capacity too.
pub fn place_pool(rule: &PoolRule, nodes: &[NodeView]) -> Result<Vec<ReplicaSet>, PlacementError> {
    rule.validate()?;
    let view = ClusterView::new(nodes, rule.class)?;
    view.check_room(rule)?;
    let mut load = LoadTable::new(&view);
    Ok((0..rule.pg_count).map(|_| place_one(rule, &view, &mut load)).collect())
}

fn place_one(rule: &PoolRule, view: &ClusterView<'_>, load: &mut LoadTable) -> ReplicaSet {
    let mut set = ReplicaSet::with_capacity(rule.replicas);
    while set.len() < rule.replicas {
        let disk = load
            .lightest(&set, |d| view.can_join(&set, d, rule))
            .expect("check_room guarantees a disk on an unused node and domain");
        set.push(disk);
    }
    let primary = set.remove(load.lightest_primary(&set));
    set.insert(0, primary);
    load.add_set(&set);
    set
}

#[cfg(test)]
mod tests {
    use chuyi_common::ids::DeviceClass::{Hdd, Ssd};

    use super::*;
    use crate::placement::testkit::{check_map, node, primary_counts, replica_counts, rule};
    use crate::placement::DiskRef;

    /// Three equal nodes: every PG on two nodes, and the 512 replicas split
    /// 171/171/170, as even as integers allow.
    #[test]
    fn equal_disks_share_evenly() {
        let nodes: Vec<_> = (1..=3).map(|n| node(n, "a", &[(0, Ssd, 100)])).collect();
        let rule = rule(Ssd, 256, false);
        let map = place_pool(&rule, &nodes).expect("place");
        check_map(&rule, &nodes, &map).expect("valid");
        for (disk, count) in replica_counts(&map) {
            assert!((170..=171).contains(&count), "{disk}: {count}");
        }
        for (disk, count) in primary_counts(&map) {
            assert!((85..=86).contains(&count), "{disk} primaries: {count}");
        }
    }

    /// Four equal nodes: each of the 6 node pairs shares about a sixth of
    /// the PGs, so a failed node's PGs rebuild from all the others.
    #[test]
    fn peers_are_spread() {
        let nodes: Vec<_> = (1..=4).map(|n| node(n, "a", &[(0, Ssd, 100)])).collect();
        let map = place_pool(&rule(Ssd, 240, false), &nodes).expect("place");
        let mut pairs = std::collections::BTreeMap::<(u32, u32), usize>::new();
        for set in &map {
            let (a, b) = (set[0].node.min(set[1].node), set[0].node.max(set[1].node));
            *pairs.entry((a, b)).or_default() += 1;
        }
        assert_eq!(pairs.len(), 6);
        assert!(pairs.values().all(|&n| (36..=44).contains(&n)), "{pairs:?}");
    }

    /// Capacities 1:2:3: shares 1/6, 2/6, 3/6 of the replicas, within 2%.
    #[test]
    fn shares_follow_capacity() {
        let nodes =
            vec![node(1, "a", &[(0, Ssd, 100)]), node(2, "a", &[(0, Ssd, 200)]), node(3, "a", &[(0, Ssd, 300)])];
        let rule = rule(Ssd, 256, false);
        let map = place_pool(&rule, &nodes).expect("place");
        check_map(&rule, &nodes, &map).expect("valid");
        let counts = replica_counts(&map);
        for (n, sixths) in [(1, 1.0), (2, 2.0), (3, 3.0)] {
            let got = counts[&DiskRef::new(n, 0)] as f64;
            let want = 512.0 * sixths / 6.0;
            assert!((got - want).abs() <= 0.02 * 512.0, "node {n}: {got} vs {want}");
        }
    }

    /// Two domains of two nodes: every PG has one replica in each.
    #[test]
    fn failure_domains_are_separated() {
        let nodes: Vec<_> =
            (1..=4).map(|n| node(n, if n <= 2 { "rack-a" } else { "rack-b" }, &[(0, Ssd, 100)])).collect();
        let rule = rule(Ssd, 64, true);
        let map = place_pool(&rule, &nodes).expect("place");
        check_map(&rule, &nodes, &map).expect("valid");
        for set in &map {
            assert_ne!(set[0].node <= 2, set[1].node <= 2, "{set:?} spans one domain");
        }
    }

    #[test]
    fn too_few_nodes_or_domains_is_a_precise_error() {
        let one = vec![node(1, "a", &[(0, Ssd, 100), (1, Ssd, 100)]), node(2, "b", &[(0, Hdd, 100)])];
        let err = place_pool(&rule(Ssd, 8, false), &one);
        assert_eq!(err, Err(PlacementError::NotEnoughNodes { class: Ssd, needed: 2, available: 1 }));

        let same_domain = vec![node(1, "a", &[(0, Ssd, 100)]), node(2, "a", &[(0, Ssd, 100)])];
        let err = place_pool(&rule(Ssd, 8, true), &same_domain);
        assert_eq!(err, Err(PlacementError::NotEnoughFailureDomains { class: Ssd, needed: 2, available: 1 }));

        let no_ssd = vec![node(1, "a", &[(0, Hdd, 100)]), node(2, "b", &[(0, Hdd, 100)])];
        assert_eq!(place_pool(&rule(Ssd, 8, false), &no_ssd), Err(PlacementError::NoDisksOfClass { class: Ssd }));
        assert_eq!(place_pool(&rule(Ssd, 0, false), &same_domain), Err(PlacementError::ZeroPgCount));
        let dup = vec![node(1, "a", &[(0, Ssd, 100)]), node(1, "b", &[(0, Ssd, 100)])];
        assert_eq!(place_pool(&rule(Ssd, 8, false), &dup), Err(PlacementError::DuplicateNode(1)));
    }

    /// An ssd pool ignores hdd disks, even large ones next to its ssds.
    #[test]
    fn other_classes_are_ignored() {
        let nodes: Vec<_> = (1..=3).map(|n| node(n, "a", &[(0, Hdd, 10_000), (1, Ssd, 100)])).collect();
        let rule = rule(Ssd, 32, false);
        let map = place_pool(&rule, &nodes).expect("place");
        assert!(map.iter().flatten().all(|d| d.disk == 1), "an hdd got a replica: {map:?}");
    }

    /// Down nodes, down disks and zero-capacity disks get nothing.
    #[test]
    fn down_and_empty_disks_get_nothing() {
        let mut nodes: Vec<_> = (1..=4).map(|n| node(n, "a", &[(0, Ssd, 100), (1, Ssd, 100)])).collect();
        nodes[0].up = false;
        nodes[1].disks[0].up = false;
        nodes[2].disks[1].capacity_bytes = 0;
        let map = place_pool(&rule(Ssd, 64, false), &nodes).expect("place");
        let used: Vec<_> = replica_counts(&map).into_keys().collect();
        assert_eq!(used, vec![DiskRef::new(2, 1), DiskRef::new(3, 0), DiskRef::new(4, 0), DiskRef::new(4, 1)]);
    }
}
