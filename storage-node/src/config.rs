//! The storage node's config file (TOML), validated at start.
//!
//! ```toml
//! node_id = 1
//! listen = "127.0.0.1:7100"              # or "unix:/run/chuyi/node1.sock"
//! advertise = ["10.0.0.5:7100"]          # what peers and clients dial, if not `listen`
//! credential_file = "/etc/chuyi/node1.cred"  # or the cluster secret; else $CHUYI_CLUSTER_SECRET
//! io_engine = "uring"                    # or "pread"; "inline" only on tmpfs (the simulation)
//! meta = ["127.0.0.1:7201"]              # metadata members to register and heartbeat with
//! failure_domain = "rack1"
//! recovery_mb_per_s = 200                # backfill and resync throttle
//! scrub_mb_per_s = 20                    # background scrub rate; 0 turns scrub off
//! state_dir = "/var/lib/chuyi/node1"     # the fence table; default: the first directory disk
//! metrics_listen = "127.0.0.1:9101"      # Prometheus /metrics (storage-node/src/metrics.rs); none: off
//!
//! [[disk]]
//! id = 0
//! path = "/var/lib/chuyi/ssd0"           # directory, file or block device
//! class = "ssd"
//! capacity = "100GiB"                    # size of the file a new directory disk gets
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chuyi_common::ids::{DeviceClass, DiskId, NodeId};
use chuyi_common::limits::{BLOCK_SIZE_BYTES, CHUNK_SIZE_MAX_BYTES};
use chuyi_common::size::ByteSize;
use serde::{Deserialize, Serialize};

use crate::io::{EngineKind, EngineTuning};
use crate::store::DiskSpec;

/// Everything a storage node is told at start.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster.
    pub node_id: NodeId,
    /// Where the chunk service listens: "host:port" or "unix:/path".
    pub listen: String,
    /// A second listener, typically a Unix socket for a co-located frontend.
    #[serde(default)]
    pub listen_extra: Option<String>,
    /// The addresses other nodes and clients reach this node at, when not
    /// the TCP listener's own (behind NAT, a load balancer or a proxy).
    #[serde(default)]
    pub advertise: Vec<String>,
    /// File holding the node's credential (`chuyi credential issue --node
    /// ID`) or the cluster secret; when absent, $CHUYI_CLUSTER_SECRET.
    #[serde(default, alias = "cluster_secret_file")]
    pub credential_file: Option<PathBuf>,
    /// The I/O engine of every disk.
    #[serde(default = "default_engine")]
    pub io_engine: EngineKind,
    /// io_uring submission entries per disk: the most I/Os in flight.
    #[serde(default = "default_uring_entries")]
    pub uring_entries: u32,
    /// Worker threads per disk of the pread engine.
    #[serde(default = "default_pread_threads")]
    pub pread_threads: usize,
    /// Metadata members the node registers with and heartbeats to; none
    /// for a standalone node.
    #[serde(default)]
    pub meta: Vec<String>,
    /// The failure domain (rack, power feed) placement keeps replicas apart by.
    #[serde(default)]
    pub failure_domain: String,
    /// Backfill and resync send at most this many MB/s (10^6 bytes), and
    /// pause while client I/O is waiting.
    #[serde(default = "default_recovery_rate")]
    pub recovery_mb_per_s: u32,
    /// Background scrub reads at most this many MB/s of the node's chunks;
    /// 0 turns it off.
    #[serde(default = "default_scrub_rate")]
    pub scrub_mb_per_s: u32,
    /// Where the node keeps its own small state (the volume fence table,
    /// storage-node/FORMAT.md). Default: the first disk that is a
    /// directory; required when every disk is a file or a device.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Where `GET /metrics` is served (Prometheus text); none: not served.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Start with an empty fence table although the disks hold chunks and
    /// the table file is missing: for a node upgraded from a release
    /// before fencing, or to re-create a table known lost (until a
    /// volume's next attach, its older writers are not refused here).
    #[serde(default)]
    pub accept_missing_fences: bool,
    /// The node's disks; at least one.
    #[serde(rename = "disk")]
    pub disks: Vec<DiskConfig>,
}

/// One disk of a node.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Unique within the node; recorded in the disk's superblock.
    pub id: DiskId,
    /// A directory (created if missing), a regular file or a block device.
    pub path: PathBuf,
    pub class: DeviceClass,
    /// Size of the disk file a new directory disk gets ("100GiB"). Files
    /// and devices use their own size, capped by this when given.
    #[serde(default)]
    pub capacity: Option<ByteSize>,
    /// Chunk size, a multiple of 4 KiB up to 4 MiB; fixed at format time.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: ByteSize,
}

/// A config that cannot run, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config {path}: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("config field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

fn default_engine() -> EngineKind {
    EngineKind::Uring
}
fn default_uring_entries() -> u32 {
    EngineTuning::default().uring_entries
}
fn default_pread_threads() -> usize {
    EngineTuning::default().pread_threads
}
fn default_recovery_rate() -> u32 {
    200
}
fn default_scrub_rate() -> u32 {
    20
}
fn default_chunk_size() -> ByteSize {
    ByteSize(CHUNK_SIZE_MAX_BYTES as u64)
}

impl NodeConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        let config: NodeConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse { path: shown, source })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, problem: String| Err(ConfigError::Invalid { field: field.into(), problem });
        if self.disks.is_empty() {
            return invalid("disk", "a node needs at least one [[disk]]".into());
        }
        if !(4..=4096).contains(&self.uring_entries) {
            return invalid("uring_entries", format!("{} is outside 4..=4096", self.uring_entries));
        }
        if self.recovery_mb_per_s == 0 {
            return invalid("recovery_mb_per_s", "0 would never bring a replica back; give a rate".into());
        }
        if !(1..=256).contains(&self.pread_threads) {
            return invalid("pread_threads", format!("{} is outside 1..=256", self.pread_threads));
        }
        if self.state_dir().is_none() {
            return invalid("state_dir", "no disk is a directory to keep the fence table in; give state_dir".into());
        }
        let (mut ids, mut paths) = (HashSet::new(), HashSet::new());
        for (i, disk) in self.disks.iter().enumerate() {
            if !ids.insert(disk.id) {
                return invalid(&format!("disk[{i}].id"), format!("disk id {} appears twice", disk.id));
            }
            if !paths.insert(&disk.path) {
                return invalid(&format!("disk[{i}].path"), format!("{} appears twice", disk.path.display()));
            }
            let cs = disk.chunk_size.0;
            if cs == 0 || cs % BLOCK_SIZE_BYTES as u64 != 0 || cs > CHUNK_SIZE_MAX_BYTES as u64 {
                return invalid(
                    &format!("disk[{i}].chunk_size"),
                    format!("{} is not a multiple of 4KiB up to 4MiB", disk.chunk_size),
                );
            }
        }
        Ok(())
    }

    /// The directory of the node's own state: `state_dir`, else the first
    /// disk that is a directory (or will be made one: it does not exist).
    pub fn state_dir(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.state_dir {
            return Some(dir.clone());
        }
        let is_dir = |p: &Path| std::fs::metadata(p).map_or(true, |m| m.is_dir());
        self.disks.iter().map(|d| d.path.clone()).find(|p| is_dir(p))
    }

    /// The disk specs the chunk store opens.
    pub fn disk_specs(&self) -> Vec<DiskSpec> {
        let tuning = EngineTuning { uring_entries: self.uring_entries, pread_threads: self.pread_threads };
        self.disks
            .iter()
            .map(|d| DiskSpec {
                id: d.id,
                class: d.class,
                path: d.path.clone(),
                capacity_bytes: d.capacity.map(|c| c.0),
                chunk_size: d.chunk_size.0,
                engine: self.io_engine,
                tuning,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        let c: NodeConfig = toml::from_str(text).map_err(|source| ConfigError::Parse { path: "t".into(), source })?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn parses_full_example() {
        let c = parse(
            r#"
            node_id = 1
            listen = "127.0.0.1:7100"
            io_engine = "pread"
            [[disk]]
            id = 0
            path = "/tmp/d0"
            class = "ssd"
            capacity = "1GiB"
            "#,
        )
        .expect("valid");
        assert_eq!(c.io_engine, EngineKind::Pread);
        assert_eq!(c.disks[0].capacity, Some(ByteSize(1 << 30)));
        assert_eq!(c.disks[0].chunk_size, ByteSize(4 << 20));
    }

    #[test]
    fn names_the_bad_field() {
        let err = parse(
            r#"
            node_id = 1
            listen = "127.0.0.1:7100"
            [[disk]]
            id = 0
            path = "/tmp/d0"
            class = "ssd"
            chunk_size = "5000"
            "#,
        )
        .expect_err("bad chunk size");
        assert!(err.to_string().contains("disk[0].chunk_size"), "{err}");
        let err = parse("node_id = 1\nlisten = \"x:1\"\ndisk = []\n").expect_err("no disks");
        assert!(err.to_string().contains("`disk`"), "{err}");
        assert!(parse("node_id = 1\nlisten = \"x:1\"\nbogus = 2\ndisk = []\n").is_err());
    }
}
