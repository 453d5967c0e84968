//! `chuyi meta`: run one member of the metadata service.

use std::path::Path;

use chuyi_common::secret::ClusterSecret;
use chuyi_metadata::config::MetaConfig;
use chuyi_metadata::raft::Member;

use crate::node::shutdown_signal;

/// Runs a metadata member until SIGINT or SIGTERM.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = MetaConfig::load(config_path)?;
    let secret = ClusterSecret::load(config.cluster_secret_file.as_deref())?;
    let member = Member::start(&config, secret).await?;
    // The line tests and scripts wait for: the member is serving.
    tracing::info!(member = config.id, endpoint = %member.endpoint(), "metadata member listening");
    if let Some(addr) = member.metrics_addr() {
        tracing::info!(member = config.id, url = %format!("http://{addr}/metrics"), "metadata member metrics");
    }
    member.serve(shutdown_signal()).await?;
    tracing::info!(member = config.id, "metadata member stopped");
    Ok(())
}
