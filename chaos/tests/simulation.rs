//! The seeded simulation (chaos/src/sim) on a fixed set of seeds: each is
//! a whole cluster on turmoil's network, under its own schedule of
//! crashes, partitions and held links, with the verifying workload.
//! `make simulate SEEDS=N` runs many more.

use chuyi_chaos::sim::{self, Options};

/// Seeds `make test` runs: about a second each on an idle machine.
const SEEDS: std::ops::Range<u64> = 0..16;

#[test]
fn fixed_seeds_lose_no_acknowledged_write() {
    let mut failures = Vec::new();
    for seed in SEEDS {
        let outcome = sim::run(seed, Options::default()).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
        println!("{}", outcome.line());
        assert!(outcome.stats.acked_writes > 100, "seed {seed} acknowledged too few writes: {}", outcome.line());
        if !outcome.passed() {
            failures.push(format!("{}\n  {}", outcome.line(), outcome.violations.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "failing seeds (rerun with chuyi-chaos simulate --seed N):\n{}", failures.join("\n"));
}

#[test]
fn a_seed_replays_its_schedule() {
    let first = sim::run(3, Options::default()).expect("seed 3");
    let again = sim::run(3, Options::default()).expect("seed 3 again");
    assert_eq!(first.events, again.events);
    assert!(!first.events.is_empty(), "seed 3 has faults");
    assert!(first.passed() && again.passed(), "{}\n{}", first.line(), again.line());
}
