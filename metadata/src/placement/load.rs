//! How many replicas and primaries each eligible disk holds, and the greedy
//! capacity-proportional choice built on those counts.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::view::ClusterView;
use chuyi_meta_api::placement::{DiskRef, ReplicaSet};

/// The load of one eligible disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DiskLoad {
    pub(crate) capacity_bytes: u64,
    pub(crate) replicas: u64,
    pub(crate) primaries: u64,
}

/// Loads of every eligible disk of a view; replicas on other disks (down,
/// other class) are not counted anywhere.
#[derive(Clone, Debug)]
pub(crate) struct LoadTable {
    disks: BTreeMap<DiskRef, DiskLoad>,
    /// How many PGs each pair of eligible disks shares, smaller ref first.
    peers: BTreeMap<(DiskRef, DiskRef), u64>,
}

impl LoadTable {
    /// Every eligible disk, empty.
    pub(crate) fn new(view: &ClusterView<'_>) -> Self {
        let disks = view.eligible().map(|(d, cap)| (d, DiskLoad { capacity_bytes: cap, replicas: 0, primaries: 0 }));
        Self { disks: disks.collect(), peers: BTreeMap::new() }
    }

    /// Every eligible disk, loaded with the replicas of `map`.
    pub(crate) fn counting(view: &ClusterView<'_>, map: &[ReplicaSet]) -> Self {
        let mut table = Self::new(view);
        for set in map {
            table.add_set(set);
        }
        table
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (DiskRef, &DiskLoad)> {
        self.disks.iter().map(|(&d, l)| (d, l))
    }

    pub(crate) fn total_replicas(&self) -> u64 {
        self.disks.values().map(|l| l.replicas).sum()
    }

    pub(crate) fn total_capacity_bytes(&self) -> u128 {
        self.disks.values().map(|l| u128::from(l.capacity_bytes)).sum()
    }

    /// Counts `set` in (the first member as primary).
    pub(crate) fn add_set(&mut self, set: &[DiskRef]) {
        for (i, d) in set.iter().enumerate() {
            if let Some(load) = self.disks.get_mut(d) {
                load.replicas += 1;
                load.primaries += u64::from(i == 0);
            }
        }
        for pair in self.pairs(set) {
            *self.peers.entry(pair).or_default() += 1;
        }
    }

    /// Counts `set` out; it must have been counted in.
    pub(crate) fn remove_set(&mut self, set: &[DiskRef]) {
        for (i, d) in set.iter().enumerate() {
            if let Some(load) = self.disks.get_mut(d) {
                load.replicas -= 1;
                load.primaries -= u64::from(i == 0);
            }
        }
        for pair in self.pairs(set) {
            if let Some(n) = self.peers.get_mut(&pair) {
                *n -= 1;
            }
        }
    }

    /// The pairs of eligible members of `set`, each as (smaller, larger).
    fn pairs(&self, set: &[DiskRef]) -> Vec<(DiskRef, DiskRef)> {
        let members: Vec<DiskRef> = set.iter().copied().filter(|d| self.disks.contains_key(d)).collect();
        let mut pairs = Vec::new();
        for (i, &a) in members.iter().enumerate() {
            pairs.extend(members[i + 1..].iter().map(|&b| (a.min(b), a.max(b))));
        }
        pairs
    }

    /// PGs `disk` shares with the members of `set`.
    fn shared(&self, disk: DiskRef, set: &[DiskRef]) -> u64 {
        set.iter().map(|&m| self.peers.get(&(disk.min(m), disk.max(m))).copied().unwrap_or(0)).sum()
    }

    /// The allowed disk to join `set`: the one whose replica count would be
    /// lowest relative to its capacity after taking one more, min
    /// (replicas + 1) / capacity; among equals, the one sharing the fewest
    /// PGs with `set`, then the lowest [`DiskRef`]. The second key spreads
    /// each disk's peers, so a failed disk's PGs are rebuilt from, and onto,
    /// many disks instead of one fixed partner.
    pub(crate) fn lightest(&self, set: &[DiskRef], allowed: impl Fn(DiskRef) -> bool) -> Option<DiskRef> {
        self.disks
            .iter()
            .filter(|(&d, _)| allowed(d))
            .min_by(|a, b| {
                next_share(a.1.replicas, a.1, b.1.replicas, b.1)
                    .then_with(|| self.shared(*a.0, set).cmp(&self.shared(*b.0, set)))
                    .then(a.0.cmp(b.0))
            })
            .map(|(&d, _)| d)
    }

    /// The member of `set` that should be primary: the same rule over the
    /// primary counts, so primaries spread by capacity too. `set` must hold
    /// eligible disks only.
    pub(crate) fn lightest_primary(&self, set: &[DiskRef]) -> usize {
        let key = |d: &DiskRef| self.disks.get(d).copied();
        let best = (0..set.len()).min_by(|&a, &b| match (key(&set[a]), key(&set[b])) {
            (Some(la), Some(lb)) => next_share(la.primaries, &la, lb.primaries, &lb).then(set[a].cmp(&set[b])),
            _ => Ordering::Equal,
        });
        best.unwrap_or(0)
    }
}

/// Compares (a_count + 1) / a_capacity with (b_count + 1) / b_capacity
/// exactly, by cross-multiplying in u128 (counts fit u64, capacities u64).
fn next_share(a_count: u64, a: &DiskLoad, b_count: u64, b: &DiskLoad) -> Ordering {
    let lhs = (u128::from(a_count) + 1) * u128::from(b.capacity_bytes);
    let rhs = (u128::from(b_count) + 1) * u128::from(a.capacity_bytes);
    lhs.cmp(&rhs)
}
