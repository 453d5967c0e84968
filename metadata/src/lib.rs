//! chuyi-metadata: the Raft metadata service.
//!
//! It will own the Raft group (openraft) with its log and state machine in
//! RocksDB, and everything the cluster agrees on: the cluster map (storage
//! nodes, their disks and heartbeats), pools, placement groups and the map
//! epoch, volumes and their attach leases, users, buckets and the object
//! index. It knows nothing of chunk bytes: data never passes through it.
//!
//! Built so far: the [`placement`] logic, pure functions that decide where a
//! pool's placement groups live and how they move when nodes fail or join;
//! and the Raft [`store`]: openraft's log store and state machine on RocksDB
//! (the only module naming `rocksdb` is `store/rocks.rs`), applying batches of
//! key-value mutations and passing openraft's storage test suite. Key layout
//! and value formats: `KEYSPACE.md`.
//! Not built yet: the Raft group itself (network, node), the typed state
//! (cluster map, pools, volumes, buckets...) as key prefixes in the store, the
//! state machine applying placement's changes and bumping the epoch, and the
//! service API; see the issue "The Raft metadata service".

pub mod placement;
pub mod store;
