//! chuyi-backup: volume backups in any S3 store, and their restore.
//!
//! It owns the target's layout and formats ([`repo`], [`envelope`],
//! [`manifest`]), taking a backup from a volume's snapshots ([`create`]),
//! restoring one into a volume ([`restore`]), drills that read a backup
//! back ([`verify`]), retention and pruning ([`retention`], [`prune`]),
//! schedules the volume frontends run ([`schedule`]), who may use a target at once ([`lock`]), bandwidth by time of day
//! ([`throttle`]), and the S3 client it reaches targets with ([`s3`]).
//!
//! It refuses to know how volumes are stored or served: it reads and writes
//! them through chuyi-client like any frontend (snapshots, their changed
//! ranges, I/O under the attach lease), and the target is any S3 endpoint,
//! this cluster's gateway or another's. What leaves the cluster is sealed
//! under a backup key only the KEK opens.

pub mod catalog;
pub mod create;
pub mod envelope;
pub mod error;
pub mod lock;
pub mod manifest;
pub mod prune;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod s3;
pub mod schedule;
pub mod throttle;
pub mod verify;

pub use error::{BackupError, S3Error};
