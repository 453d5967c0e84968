//! chuyi-metadata: the Raft metadata service.
//!
//! It will own the Raft group (openraft) with its log and state machine in
//! RocksDB, and everything the cluster agrees on: the cluster map (storage
//! nodes, their disks and heartbeats), pools, placement groups and the map
//! epoch, volumes and their attach leases, users, buckets and the object
//! index. It knows nothing of chunk bytes: data never passes through it.
//!
//! Built so far: the [`placement`] logic, pure functions that decide where a
//! pool's placement groups live and how they move when nodes fail or join.
//! Not built yet: the Raft group, the RocksDB store, the state machine (which
//! will apply placement's changes and bump the epoch) and the service API; see
//! the issue "The Raft metadata service".

pub mod placement;
