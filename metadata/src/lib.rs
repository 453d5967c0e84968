//! chuyi-metadata: the Raft metadata service.
//!
//! It will own the Raft group (openraft) with its log and state machine in
//! RocksDB, and everything the cluster agrees on: the cluster map (storage
//! nodes, their disks and heartbeats), pools, placement groups and the map
//! epoch, volumes and their attach leases, users, buckets and the object
//! index. It knows nothing of chunk bytes: data never passes through it.
//!
//! Not built yet: see the issue "The Raft metadata service".
