//! `chuyi volume create|list|info|set|resize|delete`: volumes in the
//! metadata service with their QoS; delete moves one into the recycle bin
//! (trash.rs).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chuyi_client::{ClientConfig, Cluster};
use chuyi_common::size::ByteSize;
use chuyi_common::sm4::new_wrapped_volume_key;
use chuyi_meta_api::qos::{QosScope, RuleStatus};
use chuyi_meta_api::{ask, order, MetaError};
use chuyi_metadata::client::MetaClient;
use chuyi_metadata::state::model::{Volume, VolumeState};
use chuyi_metadata::state::{Reply, Request};
use chuyi_nbd::server::{NbdOptions, NbdServer};
use tokio::net::UnixListener;

use crate::cluster::ClusterArgs;
use crate::qos::{StatusView, VolumeQosArgs};
use crate::table::Table;

#[derive(Debug, clap::Subcommand)]
pub enum VolumeCmd {
    /// Create a thin volume.
    Create {
        name: String,
        /// Size: "20GiB", "20G" (a multiple of 4 KiB).
        #[arg(long)]
        size: ByteSize,
        #[arg(long, default_value = "ssd")]
        pool: String,
        /// Encrypt it (SM4-XTS, a key of its own wrapped under the KEK).
        #[arg(long)]
        encrypt: bool,
        /// Its QoS (without: its pool's, if the pool has a rule).
        #[command(flatten)]
        qos: VolumeQosArgs,
    },
    /// Change a volume's QoS, online: the frontend serving it applies it
    /// within two seconds. Rates not given are kept; 0 lifts one.
    Set {
        name: String,
        #[command(flatten)]
        qos: VolumeQosArgs,
    },
    List,
    Info {
        name: String,
    },
    /// Create volume NEW as a clone of a snapshot (VOLUME@SNAPSHOT): it
    /// shares the snapshot's data until written (each chunk copied on its
    /// first write), keeps the parent's key, and keeps the snapshot from
    /// being deleted until flattened.
    Clone {
        snapshot: String,
        new: String,
    },
    /// Copy into a detached clone every chunk it still reads from its
    /// parent snapshot, and forget the parent.
    Flatten {
        name: String,
    },
    /// Grow a volume (online; shrinking is refused).
    Resize {
        name: String,
        #[arg(long)]
        size: ByteSize,
    },
    /// Delete a volume that no frontend has attached: into the recycle bin
    /// (`chuyi trash`), from which it can be restored until its time is up;
    /// then the cluster frees its chunks on every replica (zeroed), and an
    /// encrypted volume's key is destroyed.
    Delete {
        name: String,
        /// How long it stays in the recycle bin (default: the cluster's,
        /// `chuyi trash retention`).
        #[arg(long, value_parser = crate::duration::parse_ms, conflicts_with = "now")]
        retain: Option<u64>,
        /// Skip the recycle bin: free it now, with a progress bar.
        #[arg(long)]
        now: bool,
    },
}

pub async fn run(args: &ClusterArgs, cmd: VolumeCmd) -> anyhow::Result<()> {
    let meta = args.client()?;
    match cmd {
        VolumeCmd::Create { name, size, pool, encrypt, qos } => {
            let encrypt = encrypt || { meta.ask(ask::PoolDefaults(pool.clone())).await?.encrypt };
            let wrapped_key = if encrypt {
                let kek = args.kek()?.context(
                    "an encrypted volume (--encrypt, or a pool that encrypts every volume) needs the master key (KEK): \
                     --kek-file, $CHUYI_KEK_FILE, $CHUYI_KEK or kek_file in the config",
                )?;
                new_wrapped_volume_key(&kek, &name)
            } else {
                Vec::new()
            };
            let create = order::CreateVolume {
                name,
                pool,
                size_bytes: size.0,
                chunk_size_bytes: chuyi_common::limits::CHUNK_SIZE_MAX_BYTES as u32,
                wrapped_key,
            };
            let v = meta.order(create).await?;
            if qos.any() {
                crate::qos::set_volume(&meta, &v.name, &qos).await?;
            }
            print_volume(args, &meta, &v).await
        }
        VolumeCmd::Set { name, qos } => {
            if !qos.any() {
                anyhow::bail!("nothing to set: give --iops, --mbps or --burst");
            }
            let v = meta.ask(ask::Volume(name)).await?;
            crate::qos::set_volume(&meta, &v.name, &qos).await?;
            print_volume(args, &meta, &v).await
        }
        VolumeCmd::List => {
            let volumes = meta.ask(ask::Volumes).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&volumes)?);
                return Ok(());
            }
            let mut t = Table::new(&["VOLUME", "POOL", "SIZE", "ENCRYPTION", "ATTACHED BY"]);
            for v in volumes {
                let encryption = encryption(&v).to_string();
                t.row(vec![v.name, v.pool, ByteSize(v.size_bytes).to_string(), encryption, holder(v.lease.as_ref())]);
            }
            t.print();
            Ok(())
        }
        VolumeCmd::Info { name } => {
            let v = meta.ask(ask::Volume(name)).await?;
            print_volume(args, &meta, &v).await
        }
        VolumeCmd::Resize { name, size } => {
            let v = meta.order(order::ResizeVolume { name, size_bytes: size.0 }).await?;
            print_volume(args, &meta, &v).await
        }
        VolumeCmd::Delete { name, retain, now } => delete(args, &name, retain, now).await,
        VolumeCmd::Clone { snapshot, new } => {
            let Some((volume, snap)) = snapshot.split_once('@') else {
                anyhow::bail!("name the snapshot as VOLUME@SNAPSHOT, not {snapshot:?}");
            };
            let cluster = Cluster::connect(args.members()?, &args.admin()?, ClientConfig::default()).await?;
            let kek = args.kek()?;
            let v = chuyi_client::snapshot::clone_volume(&cluster, (volume, snap), &new, kek.as_ref()).await?;
            print_volume(args, &meta, &v).await
        }
        VolumeCmd::Flatten { name } => flatten(args, &name).await,
    }
}

async fn flatten(args: &ClusterArgs, name: &str) -> anyhow::Result<()> {
    let cluster = Cluster::connect(args.members()?, &args.admin()?, ClientConfig::default()).await?;
    let bar = crate::progress::chunks("flattening", args.json);
    let report = crate::progress::report(&bar);
    let holder = format!("flatten:{}", std::process::id());
    let flattened = chuyi_client::snapshot::flatten(&cluster, name, &holder, &report).await;
    bar.finish_and_clear();
    match flattened {
        Ok(()) => {}
        Err(chuyi_client::ClientError::Meta(MetaError::LeaseHeld { holder, .. })) => {
            anyhow::bail!("volume {name} is attached by {holder}: detach it before flattening it")
        }
        Err(e) => return Err(e).with_context(|| format!("flattening {name} (run it again to finish)")),
    }
    println!("volume {name} flattened: it no longer reads from its parent snapshot");
    Ok(())
}

fn holder(lease: Option<&chuyi_metadata::state::model::Lease>) -> String {
    lease.map_or("-".into(), |l| l.holder.clone())
}

fn encryption(v: &Volume) -> &'static str {
    match (v.state, v.wrapped_key.is_empty()) {
        (VolumeState::KeyDestroyed, _) => "key destroyed",
        (_, true) => "none",
        (_, false) => "sm4-xts",
    }
}

/// A volume as `--json` shows it: its record and its QoS.
#[derive(serde::Serialize)]
struct VolumeView<'a> {
    #[serde(flatten)]
    volume: &'a Volume,
    qos: Option<StatusView>,
}

/// The QoS a volume runs under (its own rule, else its pool's) with what
/// its frontend reported lately.
async fn volume_qos(meta: &MetaClient, v: &Volume) -> anyhow::Result<Option<StatusView>> {
    let (_, rules) = meta.ask(ask::QosRules).await?;
    let has = |s: &QosScope| rules.iter().any(|r| &r.scope == s);
    let Some(source) = chuyi_meta_api::qos::volume_scope(has, &v.name, &v.pool) else { return Ok(None) };
    let limits = rules.iter().find(|r| r.scope == source).map(|r| r.limits.clone());
    let scope = QosScope::Volume(v.name.clone());
    let reported = meta.qos_status().await?.into_iter().find(|s| s.scope == scope);
    let mut status = reported.unwrap_or(RuleStatus {
        scope,
        limits: None,
        rates: [0.0; 6],
        counters: Default::default(),
        frontends: 0,
    });
    status.limits = limits;
    let mut view = StatusView::of(&status);
    if let QosScope::Pool(pool) = source {
        view.rule.pool = Some(pool);
    }
    Ok(Some(view))
}

async fn print_volume(args: &ClusterArgs, meta: &MetaClient, v: &Volume) -> anyhow::Result<()> {
    let qos = volume_qos(meta, v).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&VolumeView { volume: v, qos })?);
        return Ok(());
    }
    println!("volume {}", v.name);
    println!("  id          {:#x}", v.id);
    println!("  pool        {}", v.pool);
    println!("  size        {} ({} bytes)", ByteSize(v.size_bytes), v.size_bytes);
    println!("  chunk size  {}", ByteSize(u64::from(v.chunk_size_bytes)));
    println!("  encryption  {}", encryption(v));
    println!("  attached by {}", holder(v.lease.as_ref()));
    if let Some(parent) = meta.ask(ask::Snapshots(v.name.clone())).await?.parent {
        println!("  clone of    {}@{}", parent.volume, parent.snapshot);
    }
    match qos {
        None => println!("  qos         none"),
        Some(q) => {
            let from = q.rule.pool.as_ref().map_or(String::new(), |p| format!(" (pool {p}'s class)"));
            println!("  qos         {}{from}", q.describe_limits);
            println!("  qos now     {}", q.describe_rates);
            println!(
                "  qos counts  {} operations, {} in, {} out, {} delayed for {:.1}s in all",
                q.counters.admitted,
                ByteSize(q.counters.bytes_in).approx(),
                ByteSize(q.counters.bytes_out).approx(),
                q.counters.delayed,
                q.counters.delayed_ms as f64 / 1000.0
            );
        }
    }
    Ok(())
}

/// Moves the volume into the recycle bin (refused while a frontend holds
/// it), and with `now` purges it at once.
async fn delete(args: &ClusterArgs, name: &str, retain_ms: Option<u64>, now: bool) -> anyhow::Result<()> {
    let meta = args.client()?;
    let retain_ms = if now { Some(0) } else { retain_ms };
    let entry = match meta.write(Request::TrashVolume { name: name.into(), retain_ms }).await? {
        Reply::Trashed(entry) => entry,
        other => anyhow::bail!("the metadata service answered {other:?}"),
    };
    if now {
        crate::trash::purge(args, name, true).await?;
        return Ok(());
    }
    if args.json {
        println!("{}", serde_json::json!({ "trashed": name, "purge_at_ms": entry.purge_at_ms }));
    } else {
        let stays = crate::duration::show(entry.purge_at_ms.saturating_sub(entry.deleted_ms));
        println!("volume {name} moved to the recycle bin for {stays} (chuyi trash restore {name} brings it back)");
    }
    Ok(())
}

/// `chuyi nbd`: serves every volume over NBD (TCP, and a Unix socket when
/// `socket` is given) until SIGINT or SIGTERM.
pub async fn serve_nbd(
    args: &ClusterArgs,
    listen: &str,
    socket: Option<&Path>,
    options: NbdOptions,
) -> anyhow::Result<()> {
    let credential = args.frontend("nbd")?;
    let cluster = Cluster::connect(args.members()?, &credential, ClientConfig::default()).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    // The frontend's leases are its own only under its name (access.rs in
    // chuyi-metadata); the process id tells this process's apart.
    let holder = format!("{}:{}", credential.principal().name, std::process::id());
    tracing::info!(addr = %listener.local_addr()?, %holder, "nbd frontend listening");
    let unix = match socket {
        Some(path) => Some((bind_nbd_socket(path)?, path)),
        None => None,
    };
    let kek = args.kek()?;
    if kek.is_none() {
        tracing::info!("no master key (KEK) given: encrypted volumes will be refused");
    }
    spawn_chores(&cluster, kek.as_ref(), &holder);
    let server = NbdServer::with_options(cluster, holder, NbdOptions { kek, ..options });
    serve_until_signal(server, listener, unix).await
}

/// Serves `volume` on the vhost-user socket `socket` until SIGINT or
/// SIGTERM (the lease is given back then) or until its lease is lost.
pub async fn serve_vhost(
    args: &ClusterArgs,
    volume: &str,
    socket: &Path,
    options: chuyi_vhost::server::VhostOptions,
) -> anyhow::Result<()> {
    let credential = args.frontend("vhost")?;
    let cluster = Cluster::connect(args.members()?, &credential, ClientConfig::default()).await?;
    let holder = format!("{}:{}", credential.principal().name, std::process::id());
    let kek = args.kek()?;
    spawn_chores(&cluster, kek.as_ref(), &holder);
    let options = chuyi_vhost::server::VhostOptions { kek, ..options };
    let stop = crate::node::shutdown_signal();
    chuyi_vhost::server::serve(cluster, volume, &holder, socket, options, stop)
        .await
        .with_context(|| format!("serving volume {volume:?} at {}", socket.display()))
}

/// What every volume frontend does beside serving: empty the recycle bin
/// of what is due, take the scheduled snapshots and, with the KEK, run the
/// scheduled backups.
pub fn spawn_chores(cluster: &std::sync::Arc<Cluster>, kek: Option<&chuyi_common::sm4::Kek>, holder: &str) {
    tokio::spawn(chuyi_client::trash::reap(cluster.clone(), chuyi_client::trash::REAP_EVERY));
    tokio::spawn(chuyi_client::snapshot::run_schedules(cluster.clone(), chuyi_client::snapshot::SCHEDULES_EVERY));
    if let Some(kek) = kek {
        let backups = chuyi_backup::schedule::run_schedules(
            cluster.clone(),
            kek.clone(),
            holder.to_string(),
            chuyi_backup::schedule::EVERY,
        );
        tokio::spawn(backups);
    }
}

/// Binds the Unix socket of the NBD frontend, replacing a stale one.
pub fn bind_nbd_socket(path: &Path) -> anyhow::Result<UnixListener> {
    let listener = NbdServer::bind_unix(path).with_context(|| format!("listening on {}", path.display()))?;
    tracing::info!(socket = %path.display(), "nbd frontend listening");
    Ok(listener)
}

/// Serves `listener` and, if given, a Unix socket (its file removed at the
/// end) until SIGINT or SIGTERM.
pub async fn serve_until_signal(
    server: Arc<NbdServer>,
    listener: tokio::net::TcpListener,
    unix: Option<(UnixListener, &Path)>,
) -> anyhow::Result<()> {
    let socket = unix.as_ref().map(|(_, path)| path.to_path_buf());
    let serving_unix = async {
        match unix {
            Some((listener, _)) => server.clone().serve_unix(listener).await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        served = server.clone().serve(listener) => served.context("nbd on TCP"),
        served = serving_unix => served.context("nbd on the Unix socket"),
        () = crate::node::shutdown_signal() => Ok(()),
    };
    if let Some(path) = socket {
        let _ = std::fs::remove_file(path);
    }
    result
}
