//! The typed state of the metadata service, layered on the store's byte
//! map: the records (nodes, pools, PGs, volumes, users, buckets, the object
//! index), their keys, the commands of the log and how each is applied.
//!
//! Everything here is deterministic and does no I/O of its own: it reads and
//! writes through [`tables::Tables`], which the store implements on RocksDB
//! and unit tests on a `BTreeMap`.

/// Ends an apply function with a refusal: `Ok(Err(e))`, the command
/// refused and nothing staged kept (`Err` is the store's own failure).
/// Defined before the modules so that each of them sees it.
macro_rules! refuse {
    ($e:expr) => {
        return Ok(Err($e))
    };
}

pub(crate) mod apply;
pub(crate) mod backups;
pub(crate) mod buckets;
pub mod command;
pub use chuyi_meta_api::error;
pub(crate) mod keys;
pub mod listing;
pub use chuyi_meta_api::model;
pub mod names;
pub(crate) mod nodes;
pub(crate) mod objects;
pub(crate) mod packs;
pub(crate) mod pools;
pub(crate) mod qos;
pub(crate) mod snapshots;
pub(crate) mod tables;
pub(crate) mod trash;
pub(crate) mod uploads;
pub(crate) mod users;
pub(crate) mod view;
pub(crate) mod volumes;

#[cfg(test)]
mod tests;

pub use chuyi_meta_api::request::{PoolChange, Reply, Request};
pub use command::{Command, MetaRequest, MetaResponse, COMMANDS_PER_ENTRY_MAX};
pub use error::{Kind, MetaError, UploadProblem};
pub use listing::{ListCursor, ListEntry, ListRequest, Listing, ObjectSummary, LIST_MAX_KEYS, LIST_SCAN_BUDGET_PAIRS};
pub use objects::{DATA_TTL_MAX_MS, EXPIRE_SCAN_MAX};
pub use packs::{PACK_TTL_MAX_MS, RETIRE_SCAN_MAX};
