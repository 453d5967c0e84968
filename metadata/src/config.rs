//! A metadata member's config file (TOML).
//!
//! ```toml
//! id = 1
//! listen = "127.0.0.1:7201"
//! data_dir = "/var/lib/chuyi/meta1"
//! cluster_secret_file = "/etc/chuyi/secret"   # else $CHUYI_CLUSTER_SECRET
//! heartbeat_timeout_ms = 5000                 # a storage node silent this long is down
//! metrics_listen = "127.0.0.1:9102"           # Prometheus /metrics (raft/metrics.rs); none: off
//! console_listen = "127.0.0.1:9470"           # the web console (the console crate); none: off
//! console_tls_cert = "/etc/chuyi/console.pem" # with console_tls_key: the console over HTTPS
//! console_tls_key = "/etc/chuyi/console.key"  #   (PEM, reloaded when the files change)
//!
//! # The founding members, the same list in every founder's file. A member
//! # whose id is not listed starts empty and waits to be added
//! # (`chuyi member add`).
//! [[member]]
//! id = 1
//! addr = "127.0.0.1:7201"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaConfig {
    pub id: u64,
    pub listen: String,
    /// The address other members and clients reach this one at; `listen`
    /// when unset.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    pub cluster_secret_file: Option<PathBuf>,
    #[serde(default = "default_heartbeat_timeout_ms")]
    pub heartbeat_timeout_ms: u64,
    /// Log entries since the last snapshot that trigger a new one, at
    /// least (more while the state is large: raft/snapshots.rs).
    #[serde(default = "default_snapshot_logs")]
    pub snapshot_logs: u64,
    #[serde(default = "default_election_timeout_ms")]
    pub election_timeout_ms: u64,
    /// Where `GET /metrics` is served (Prometheus text); none: not served.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Where the web console is served (HTTP, for administrators: the
    /// `chuyi-console` crate, started by `chuyi meta`); none: not served.
    #[serde(default)]
    pub console_listen: Option<String>,
    /// The console's certificate chain and key (PEM): with both, it is
    /// served over TLS only.
    #[serde(default)]
    pub console_tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub console_tls_key: Option<PathBuf>,
    #[serde(default, rename = "member")]
    pub members: Vec<MemberEntry>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    pub id: u64,
    pub addr: String,
}

fn default_heartbeat_timeout_ms() -> u64 {
    5000
}

fn default_snapshot_logs() -> u64 {
    10_000
}

fn default_election_timeout_ms() -> u64 {
    1000
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("parsing {path}: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("{0}")]
    Invalid(String),
}

impl MetaConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        let config: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse { path: shown, source })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.members.len() {
            return Err(ConfigError::Invalid("a member id is listed twice".into()));
        }
        if self.heartbeat_timeout_ms < 1000 {
            return Err(ConfigError::Invalid("heartbeat_timeout_ms below 1000".into()));
        }
        if self.election_timeout_ms < 200 {
            return Err(ConfigError::Invalid("election_timeout_ms below 200".into()));
        }
        if self.console_tls_cert.is_some() != self.console_tls_key.is_some() {
            return Err(ConfigError::Invalid("console_tls_cert and console_tls_key go together".into()));
        }
        Ok(())
    }

    pub fn advertised(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }
}
