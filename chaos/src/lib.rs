//! chuyi-chaos: a multi-process cluster harness with fault injection.
//!
//! It will start real clusters as separate processes, run a verifying
//! workload against a model of every acknowledged write, and inject faults
//! (node-kill, meta-leader-kill, node-freeze, bitflip, disk-full, net-cut).
//!
//! Not built yet. The single-node crash test of the storage node lives in
//! `cli/tests/crash.rs` until this harness exists.
