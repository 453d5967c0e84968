//! chuyi-bench: load generators that drive Chuyi through its real
//! interfaces, and side-by-side benchmarks against peers (fio on the same
//! disk), so a number printed here is one a client could see.
//!
//! It owns workload shapes (region, operation, block size, queue depth),
//! latency statistics and the reports; it talks to a running storage node
//! only over the RPC layer and the chunk service (`chuyi_common::proto`),
//! never by linking the storage node, so nothing here can take a shortcut a
//! real client could not. It refuses to report a number it did not measure:
//! a read of a chunk that was never written (which the node answers with
//! zeros and no disk I/O) is an error, not a fast read.
//!
//! The metadata service is driven through `chuyi_metadata::client`, the
//! same client the CLI and frontends use: `meta` for its rate and read
//! latency, `count` for a bucket filled to millions of objects (watching
//! the members' memory, disk and snapshots from outside: `proc_stat`,
//! `snapshot_watch`).
//!
//! Failure and recovery figures (`recovery`) run a whole cluster of real
//! processes through chuyi-chaos's harness and chuyi-client.
//!
//! Where fio is not installed, `nbd_load` drives an NBD export itself.
//!
//! The S3 benchmark (`s3_load`) drives the S3 gateway over real HTTP with
//! SigV4-signed requests (`s3_client`), and the same objects through
//! chuyi-client directly (`s3_paths`), on such a cluster.
//!
//! The micro-benchmarks of single components (crc32c, the chunk store
//! without the network) are criterion benches in their own crates.

pub mod count;
pub mod count_report;
pub mod count_snapshot;
pub mod cpu;
pub mod error;
pub mod latency;
pub mod load;
pub mod meta;
pub mod nbd_load;
pub mod nbd_serve;
pub mod pacs_keys;
pub mod prefill;
pub mod proc_stat;
pub mod recovery;
pub mod region;
pub mod report;
pub mod s3_client;
pub mod s3_load;
pub mod s3_paths;
pub mod s3_report;
pub mod snapshot_watch;
pub mod target;

pub use error::LoadError;
