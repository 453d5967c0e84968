//! `chuyi meta`: run one member of the metadata service, and the web
//! console when its config names `console_listen`.

use std::path::Path;

use anyhow::Context;
use chuyi_common::credential::{Credential, Door, Principal};
use chuyi_common::secret::ClusterSecret;
use chuyi_meta_api::client::MetaClient;
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
    if let Some(listen) = &config.console_listen {
        start_console(&config, listen).await?;
    }
    member.serve(shutdown_signal()).await?;
    tracing::info!(member = config.id, "metadata member stopped");
    Ok(())
}

/// Serves the web console on `listen`, reading the cluster as the
/// administrator through this member and the others it knows.
async fn start_console(config: &MetaConfig, listen: &str) -> anyhow::Result<()> {
    let secret = ClusterSecret::load(config.cluster_secret_file.as_deref())?;
    let admin = Credential::from_secret(secret, Principal::admin());
    let own = config.advertise.clone().unwrap_or_else(|| config.listen.clone());
    let others = config.members.iter().map(|m| m.addr.clone()).filter(|a| *a != own);
    let members: Vec<String> = std::iter::once(own.clone()).chain(others).collect();
    let meta = MetaClient::new(members, &admin)?;
    let seal = admin.user_seal().context("the cluster secret opens users' secret keys")?;
    let console = chuyi_console::Console::new(meta, admin.identity(Door::Node), seal);
    // The gateway's certificate handling: PEM files, reloaded when they
    // change or on SIGHUP.
    let tls = match (&config.console_tls_cert, &config.console_tls_key) {
        (Some(cert), Some(key)) => {
            let files = chuyi_s3::tls::TlsFiles { cert: cert.clone(), key: key.clone() };
            let tls = chuyi_s3::tls::Tls::load(files).context("console: the TLS certificate")?;
            tokio::spawn(tls.clone().watch(chuyi_s3::tls::RELOAD_EVERY));
            let acceptors: chuyi_console::Acceptors = std::sync::Arc::new(move || tls.acceptor());
            Some(acceptors)
        }
        _ => None,
    };
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("console: listening on {listen}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(member = config.id, url = %format!("{scheme}://{}/", listener.local_addr()?), "web console");
    tokio::spawn(chuyi_console::serve(listener, console, tls));
    Ok(())
}
