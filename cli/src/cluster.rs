//! How a CLI command finds the cluster: `--meta ADDR[,ADDR...]`, else
//! `$CHUYI_META_ADDR`, else the config file (`--config`, `$CHUYI_CONFIG`,
//! `/etc/chuyi/chuyi.toml`); and the cluster secret: `--secret-file`, else
//! `$CHUYI_CLUSTER_SECRET`, else the config's `cluster_secret_file`. The
//! processes that serve (`chuyi s3`, `chuyi nbd`) may be given a frontend's
//! credential file there instead; administration needs the secret.
//!
//! The master key (KEK) of encrypted volumes: `--kek-file`, else
//! `$CHUYI_KEK_FILE`, else `$CHUYI_KEK` (hex), else the config's
//! `kek_file`; absent is fine until an encrypted volume needs it.
//!
//! The config file may be a client file (`meta = ["host:port", ...]`) or a
//! metadata member's own file (its `[[member]]` addresses).

use std::path::PathBuf;

use anyhow::{bail, Context};
use chuyi_common::credential::{Credential, Principal, Role};
use chuyi_common::secret::{ClusterSecret, SECRET_ENV};
use chuyi_common::sm4::{load_kek, Kek, KEK_ENV};
use chuyi_metadata::client::MetaClient;

pub const DEFAULT_CONFIG: &str = "/etc/chuyi/chuyi.toml";

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Metadata members, comma-separated ("host:port" or "unix:/path").
    #[arg(long, value_name = "ADDRS", env = "CHUYI_META_ADDR", global = true)]
    pub meta: Option<String>,
    /// Config file naming the members and the secret file.
    #[arg(long, value_name = "FILE", env = "CHUYI_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// File with the cluster secret; else $CHUYI_CLUSTER_SECRET, else the config's.
    #[arg(long, value_name = "FILE", global = true)]
    pub secret_file: Option<PathBuf>,
    /// File with the master key (KEK) of encrypted volumes, 32 hex digits;
    /// else $CHUYI_KEK, else the config's `kek_file`.
    #[arg(long, value_name = "FILE", env = "CHUYI_KEK_FILE", global = true)]
    pub kek_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Default, serde::Deserialize)]
struct FileView {
    meta: Option<Vec<String>>,
    member: Option<Vec<MemberAddr>>,
    cluster_secret_file: Option<PathBuf>,
    kek_file: Option<PathBuf>,
}

#[derive(Debug, serde::Deserialize)]
struct MemberAddr {
    addr: String,
}

impl ClusterArgs {
    fn file(&self) -> anyhow::Result<FileView> {
        let path = self.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        if self.config.is_none() && !path.exists() {
            return Ok(FileView::default());
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        // Only the keys above matter; a member or node file has others.
        let value: toml::Value = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        value.try_into().with_context(|| format!("reading the cluster from {}", path.display()))
    }

    /// The cluster secret itself: what issues credentials.
    pub fn secret(&self) -> anyhow::Result<ClusterSecret> {
        if self.secret_file.is_some() || std::env::var_os(SECRET_ENV).is_some() {
            return Ok(ClusterSecret::load(self.secret_file.as_deref())?);
        }
        match self.file()?.cluster_secret_file {
            Some(path) => Ok(ClusterSecret::from_file(&path)?),
            None => Ok(ClusterSecret::load(None)?),
        }
    }

    /// Who this process is: the credential in the secret file (a node's or
    /// frontend's, issued by `chuyi credential issue`), or the cluster
    /// secret acting as `default`.
    pub fn credential(&self, default: Principal) -> anyhow::Result<Credential> {
        let file = match &self.secret_file {
            Some(path) => Some(path.clone()),
            None if std::env::var_os(SECRET_ENV).is_some() => None,
            None => self.file()?.cluster_secret_file,
        };
        Ok(Credential::load(file.as_deref(), default)?)
    }

    /// A serving frontend's credential: an issued one, else the cluster
    /// secret acting as frontend `KIND-HOSTNAME` (`s3-host1`, `nbd-host1`).
    pub fn frontend(&self, kind: &str) -> anyhow::Result<Credential> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let name = Principal::new(Role::Frontend, format!("{kind}-{}", host.trim()))
            .or_else(|_| Principal::new(Role::Frontend, kind))?;
        self.credential(name)
    }

    /// The administrator's credential: the cluster secret (a node's or
    /// frontend's credential file is refused, naming whose it is).
    pub fn admin(&self) -> anyhow::Result<Credential> {
        self.credential(Principal::admin())
    }

    /// The KEK, if one is configured anywhere.
    pub fn kek(&self) -> anyhow::Result<Option<Kek>> {
        if self.kek_file.is_some() || std::env::var_os(KEK_ENV).is_some() {
            return Ok(load_kek(self.kek_file.as_deref())?);
        }
        match self.file()?.kek_file {
            Some(path) => Ok(load_kek(Some(&path))?),
            None => Ok(None),
        }
    }

    pub fn members(&self) -> anyhow::Result<Vec<String>> {
        if let Some(list) = &self.meta {
            return Ok(list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect());
        }
        let file = self.file()?;
        if let Some(meta) = file.meta {
            return Ok(meta);
        }
        if let Some(members) = file.member {
            return Ok(members.into_iter().map(|m| m.addr).collect());
        }
        bail!("no metadata service given: use --meta ADDR, $CHUYI_META_ADDR or a config file ({DEFAULT_CONFIG})")
    }

    /// A metadata client acting as the administrator.
    pub fn client(&self) -> anyhow::Result<MetaClient> {
        Ok(MetaClient::new(self.members()?, &self.admin()?)?)
    }
}
