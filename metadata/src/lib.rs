//! chuyi-metadata: the Raft metadata service.
//!
//! It owns the Raft group (openraft) with its log and state machine in
//! RocksDB, and everything the cluster agrees on: the cluster map (storage
//! nodes, their disks and heartbeats), pools, placement groups and the map
//! epoch, volumes and their attach leases, users, buckets and the object
//! index. It knows nothing of chunk bytes: data never passes through it.
//! What its clients see (records, commands, messages, `MetaClient`) is
//! `chuyi-meta-api`'s, re-exported here under the paths the service uses.
//!
//! - [`access`]: who may call what, by the caller's proven role.
//! - [`placement`]: pure functions deciding where PGs live and how they move.
//! - [`state`]: the typed tables and how each command is applied
//!   (deterministic, no I/O of its own).
//! - [`store`]: openraft's log store and state machine on RocksDB (the only
//!   module naming `rocksdb` is `store/rocks.rs`). Layout: `KEYSPACE.md`.
//! - [`proto`]: Raft traffic between members, beside the client messages.
//! - [`raft`]: a member: its network, group commit, the service, the
//!   leader's monitor.
//! - [`qos`]: the leader's memory of what frontends use of each QoS rule,
//!   and the share of its rate each gets.

pub use chuyi_meta_api::client;

pub mod access;
pub mod config;
pub mod placement;
pub mod proto;
pub mod qos;
pub mod raft;
pub mod state;
pub mod store;
