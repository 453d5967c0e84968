//! chuyi-chaos: real clusters under faults.
//!
//! [`cluster`] starts `chuyi meta` and `chuyi node` processes on localhost
//! and kills, freezes and restarts them, optionally behind fault-injecting
//! TCP proxies ([`proxy`]); [`workload`] writes
//! self-describing blocks through chuyi-client and checks every read
//! against a model of the acknowledged writes; [`scenarios`] puts the two
//! together, one fault each; [`frontend`] runs real `chuyi nbd` processes
//! for the stale-writer scenario. `chuyi-chaos` (what `make chaos` runs) prints a
//! line per scenario and a last line `N passed, N failed`; the crate's
//! tests run each scenario in its short form inside `make test`.
//!
//! [`sim`] is the other half: the same library code of a whole cluster in
//! one process on turmoil's simulated network and clock, under a fault
//! schedule drawn from a seed (`make simulate SEEDS=N`).

pub mod cluster;
pub mod frontend;
pub mod proxy;
pub mod scenarios;
pub mod sim;
pub mod sockets;
pub mod workload;
