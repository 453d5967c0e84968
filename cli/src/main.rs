//! `chuyi`: the one binary of the cluster. Each role is a subcommand
//! (`chuyi node`), and so is each admin command.

mod admin;
mod backup;
mod bucket;
mod cluster;
mod credential;
mod duration;
mod key;
mod meta;
mod node;
mod progress;
mod qos;
mod snapshot;
mod table;
mod trash;
mod up;
mod volume;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The Rust heap on mimalloc rather than glibc's malloc, measured in
/// bench/RESULTS.md ("Allocator"); C and C++ code (RocksDB) keeps glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "chuyi", version, about = "Chuyi distributed block and object storage")]
struct Cli {
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a storage node from its config file (--config).
    Node,
    /// Run a metadata service member from its config file (--config).
    Meta,
    /// Members, leader, term, nodes, pools and PG health.
    Status,
    /// Create, list or delete pools.
    #[command(subcommand)]
    Pool(admin::PoolCmd),
    /// Create, list or delete S3 users.
    #[command(subcommand)]
    User(admin::UserCmd),
    /// List S3 buckets or show one: owner, versioning, objects, bytes.
    #[command(subcommand)]
    Bucket(bucket::BucketCmd),
    /// Add or remove metadata members.
    #[command(subcommand)]
    Member(admin::MemberCmd),
    /// Create, list, inspect, grow or delete volumes; set their QoS.
    #[command(subcommand)]
    Volume(volume::VolumeCmd),
    /// The recycle bin of deleted volumes: list, restore, purge, and how
    /// long volumes stay in it.
    #[command(subcommand)]
    Trash(trash::TrashCmd),
    /// Volume snapshots: create, list, info, delete, rename, rollback.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
    /// Volume backups in an S3 target: create, list, info, verify (a
    /// drill), restore, prune.
    #[command(subcommand)]
    Backup(backup::BackupCmd),
    /// QoS rules of S3 users and buckets, volumes and pools: set, list,
    /// delete, and what the frontends did under them (status).
    #[command(subcommand)]
    Qos(qos::QosCmd),
    /// The master key (KEK) of encrypted volumes: generate, rotate.
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// Credentials of nodes and frontends, issued from the cluster secret.
    #[command(subcommand)]
    Credential(credential::CredentialCmd),
    /// The local all-in-one cluster: a metadata member, three storage nodes,
    /// the NBD frontend, a default volume; endpoints in <data-dir>/up.env.
    Up(up::UpArgs),
    /// Serve volumes over NBD (export name = volume name).
    Nbd {
        #[arg(long, default_value = "127.0.0.1:10809")]
        listen: String,
        /// Also serve on this Unix socket (nbd+unix:///VOLUME?socket=PATH).
        #[arg(long)]
        socket: Option<std::path::PathBuf>,
        /// How long an attach lease lasts unless renewed; a frontend that
        /// cannot renew stops serving a volume within this time.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
        lease_ttl_secs: u64,
        /// Seconds a client has from connecting to the end of the
        /// handshake; a silent one is closed then.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        handshake_timeout_secs: u64,
        /// Connections open at most; past it a new one is closed at once.
        #[arg(long, default_value_t = chuyi_nbd::server::MAX_CONNECTIONS)]
        max_connections: usize,
        /// Connections to one export at most; past it an attach is refused.
        #[arg(long, default_value_t = chuyi_nbd::server::MAX_PER_EXPORT)]
        max_per_export: usize,
        /// Seconds an attached connection may send no request before it is
        /// closed; 0 (the default): never (VMs may idle for days).
        #[arg(long, default_value_t = 0)]
        idle_timeout_secs: u64,
        /// MiB of request data held at once over every connection.
        #[arg(long, default_value_t = chuyi_nbd::server::MEMORY_BUDGET_MIB, value_parser = clap::value_parser!(u32).range(1..))]
        memory_budget_mib: u32,
        /// Serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// Serve one volume to a VM as a vhost-user-blk device, until SIGINT or
    /// SIGTERM (QEMU: -chardev socket,path=PATH -device vhost-user-blk-pci).
    Vhost {
        /// The Unix socket the VMM connects to.
        #[arg(long)]
        socket: std::path::PathBuf,
        /// Virtqueues offered, each served by its own thread.
        #[arg(long, default_value_t = chuyi_vhost::server::QUEUES, value_parser = clap::value_parser!(u16).range(1..=chuyi_vhost::server::MAX_QUEUES as i64))]
        queues: u16,
        /// How long the attach lease lasts unless renewed.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
        lease_ttl_secs: u64,
        /// Serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
        /// The volume served.
        volume: String,
    },
    /// Serve S3 until SIGINT or SIGTERM.
    S3 {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: String,
        /// The pool new buckets' objects go to.
        #[arg(long, default_value = "hdd")]
        pool: String,
        /// Seconds object data being written may stay unclaimed before it
        /// is taken for a dead gateway's and freed (plus as long again per
        /// GiB of it).
        #[arg(long, default_value_t = 3600)]
        pending_ttl_secs: u64,
        /// Seconds small objects are appended into one pack before the
        /// next is opened.
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=1800))]
        pack_window_secs: u64,
        /// Seconds a pack's bytes outlive its last object (for GETs that
        /// began before it was moved or deleted).
        #[arg(long, default_value_t = 60)]
        pack_grace_secs: u64,
        /// Seconds deleted object data stays readable by GETs already
        /// under way before its chunks are freed (every gateway frees what
        /// it has seen for its own grace: give them all the same).
        #[arg(long, default_value_t = 900)]
        garbage_grace_secs: u64,
        /// MB per second the compactor copies at most.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
        compact_mb_per_s: u64,
        /// Also serve S3 over TLS here (plain HTTP stays on --listen, for
        /// loopback); needs --tls-cert and --tls-key.
        #[arg(long, requires_all = ["tls_cert", "tls_key"])]
        tls_listen: Option<String>,
        /// The certificate chain, PEM; read again when it changes or on
        /// SIGHUP, without dropping connections.
        #[arg(long, value_name = "FILE", requires = "tls_listen")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key, PEM.
        #[arg(long, value_name = "FILE", requires = "tls_listen")]
        tls_key: Option<PathBuf>,
        /// A domain under which `Host: BUCKET.DOMAIN` names the bucket
        /// (virtual-hosted style, plain and TLS; the certificate should name
        /// `*.DOMAIN`); may be given more than once. Other hosts are path
        /// style.
        #[arg(long = "domain", value_name = "DOMAIN")]
        domains: Vec<String>,
        /// Serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
        /// Connections open at most, plain and TLS together; past it a new
        /// one is closed at once.
        #[arg(long, default_value_t = chuyi_s3::admission::DEFAULT_LIMITS.max_total)]
        max_connections: usize,
        /// Connections open at most from one client address.
        #[arg(long, default_value_t = chuyi_s3::admission::DEFAULT_LIMITS.max_per_client)]
        max_connections_per_client: usize,
        /// Seconds a connection has to send a request's head, from when it
        /// opens or its last response went out (the keep-alive timeout too).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        head_timeout_secs: u64,
        /// Seconds a request body may fall behind --body-min-rate before it
        /// is cut (each --body-min-rate bytes buy a second, up to this).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
        body_stall_timeout_secs: u64,
        /// Bytes per second a request body must keep up on average.
        #[arg(long, default_value_t = chuyi_s3::admission::DEFAULT_LIMITS.body_min_rate, value_parser = clap::value_parser!(u64).range(1..))]
        body_min_rate: u64,
        /// Refused requests (403) per second one client address may cause
        /// (twice as many at once) before its requests get 503 SlowDown
        /// unread until it is back under; 0: no limit.
        #[arg(long, default_value_t = chuyi_s3::admission::DEFAULT_LIMITS.refusals_per_s)]
        refusals_per_client: u32,
        /// MiB of request and response bodies held at once; past it a new
        /// body waits a second for room, then gets 503 SlowDown.
        #[arg(long, default_value_t = chuyi_s3::data::DEFAULT_BUDGET_BYTES >> 20, value_parser = clap::value_parser!(u64).range(1..))]
        memory_budget_mib: u64,
    },
    /// Show a storage node's disks.
    Disks {
        /// The node's address: "host:port" or "unix:/path".
        #[arg(long, value_name = "ADDR")]
        node: String,
        /// File with the cluster secret; else $CHUYI_CLUSTER_SECRET.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
        /// Print JSON-like debug output instead of a table.
        #[arg(long)]
        raw: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Node => node::run(&role_config(&cli.cluster)?).await,
            Command::Disks { node, secret_file, raw } => node::disks(&node, secret_file.as_deref(), raw).await,
            Command::Meta => meta::run(&role_config(&cli.cluster)?).await,
            Command::Status => admin::status(&cli.cluster).await,
            Command::Pool(cmd) => admin::pool(&cli.cluster, cmd).await,
            Command::User(cmd) => admin::user(&cli.cluster, cmd).await,
            Command::Bucket(cmd) => bucket::run(&cli.cluster, cmd).await,
            Command::Member(cmd) => admin::member(&cli.cluster, cmd).await,
            Command::Volume(cmd) => volume::run(&cli.cluster, cmd).await,
            Command::Qos(cmd) => qos::run(&cli.cluster, cmd).await,
            Command::Trash(cmd) => trash::run(&cli.cluster, cmd).await,
            Command::Snapshot(cmd) => snapshot::run(&cli.cluster, cmd).await,
            Command::Backup(cmd) => backup::run(&cli.cluster, cmd).await,
            Command::Key(cmd) => key::run(&cli.cluster, cmd).await,
            Command::Credential(cmd) => credential::run(&cli.cluster, cmd),
            Command::Up(args) => up::run(args).await,
            Command::S3 {
                listen,
                pool,
                pending_ttl_secs,
                pack_window_secs,
                pack_grace_secs,
                garbage_grace_secs,
                compact_mb_per_s,
                tls_listen,
                tls_cert,
                tls_key,
                domains,
                metrics_listen,
                max_connections,
                max_connections_per_client,
                head_timeout_secs,
                body_stall_timeout_secs,
                body_min_rate,
                refusals_per_client,
                memory_budget_mib,
            } => {
                let secs = std::time::Duration::from_secs;
                let connections = chuyi_s3::admission::ConnectionLimits {
                    max_total: max_connections,
                    max_per_client: max_connections_per_client,
                    head_timeout: secs(head_timeout_secs),
                    body_stall_timeout: secs(body_stall_timeout_secs),
                    body_min_rate,
                    refusals_per_s: refusals_per_client,
                };
                let options = chuyi_s3::server::Options {
                    pending_ttl: secs(pending_ttl_secs),
                    pack_window: secs(pack_window_secs),
                    pack_ttl: secs(pack_window_secs * 2),
                    pack_grace: secs(pack_grace_secs),
                    garbage_grace: secs(garbage_grace_secs),
                    compact_bytes_per_s: compact_mb_per_s.saturating_mul(1_000_000),
                    // Server-side encryption's bucket keys are wrapped under
                    // it; without one, encrypted objects are refused.
                    kek: cli.cluster.kek()?,
                    connections,
                    memory_budget_bytes: memory_budget_mib << 20,
                    domains: chuyi_s3::domains::Domains::new(&domains)?,
                    metrics: match metrics_listen {
                        Some(addr) => Some(serve_metrics(&addr, chuyi_s3::metrics::S3Metrics::register).await?),
                        None => None,
                    },
                    ..chuyi_s3::server::Options::new(pool)
                };
                let tls = match (tls_listen, tls_cert, tls_key) {
                    (Some(addr), Some(cert), Some(key)) => Some((addr, chuyi_s3::tls::TlsFiles { cert, key })),
                    _ => None,
                };
                serve_s3(&cli.cluster, &listen, tls, options).await
            }
            Command::Vhost { socket, queues, lease_ttl_secs, metrics_listen, volume } => {
                let metrics = match metrics_listen {
                    Some(addr) => Some(serve_metrics(&addr, chuyi_vhost::metrics::register).await?),
                    None => None,
                };
                let options = chuyi_vhost::server::VhostOptions {
                    queues,
                    lease_ttl: std::time::Duration::from_secs(lease_ttl_secs),
                    kek: None,
                    metrics,
                };
                volume::serve_vhost(&cli.cluster, &volume, &socket, options).await
            }
            Command::Nbd {
                listen,
                socket,
                lease_ttl_secs,
                handshake_timeout_secs,
                max_connections,
                max_per_export,
                idle_timeout_secs,
                memory_budget_mib,
                metrics_listen,
            } => {
                let secs = std::time::Duration::from_secs;
                let metrics = match metrics_listen {
                    Some(addr) => Some(serve_metrics(&addr, chuyi_nbd::metrics::NbdMetrics::register).await?),
                    None => None,
                };
                let options = chuyi_nbd::server::NbdOptions {
                    lease_ttl: secs(lease_ttl_secs),
                    handshake_timeout: secs(handshake_timeout_secs),
                    max_connections,
                    max_per_export,
                    idle_timeout: (idle_timeout_secs > 0).then(|| secs(idle_timeout_secs)),
                    memory_budget_mib,
                    kek: None,
                    metrics,
                };
                volume::serve_nbd(&cli.cluster, &listen, socket.as_deref(), options).await
            }
        }
    })
}

/// Serves Prometheus metrics on `addr`: the process's own (CPU, memory,
/// files, chunk retries) and those `register` adds, whose handle it
/// returns.
async fn serve_metrics<T>(
    addr: &str,
    register: impl FnOnce(&mut chuyi_common::metrics::prometheus_client::registry::Registry) -> T,
) -> anyhow::Result<T> {
    use anyhow::Context;
    let mut registry = chuyi_common::metrics::prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(chuyi_common::metrics::ProcessCollector));
    registry.register_collector(Box::new(chuyi_client::metrics::RetryCollector));
    let handle = register(&mut registry);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics at /metrics");
    tokio::spawn(chuyi_common::metrics::serve(listener, std::sync::Arc::new(registry)));
    Ok(handle)
}

/// The config file a role (node, meta) runs from: `--config` is required.
fn role_config(args: &cluster::ClusterArgs) -> anyhow::Result<PathBuf> {
    args.config.clone().ok_or_else(|| anyhow::anyhow!("give the role's config file with --config FILE"))
}

/// `chuyi s3`: the S3 gateway of the cluster, over plain HTTP on `listen`
/// and over TLS when given, until SIGINT or SIGTERM.
async fn serve_s3(
    args: &cluster::ClusterArgs,
    listen: &str,
    tls: Option<(String, chuyi_s3::tls::TlsFiles)>,
    options: chuyi_s3::server::Options,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let credential = args.frontend("s3")?;
    let user_seal = credential.user_seal().context("a frontend credential opens users' secret keys")?;
    let cluster =
        chuyi_client::Cluster::connect(args.members()?, &credential, chuyi_client::ClientConfig::default()).await?;
    let service = std::sync::Arc::new(chuyi_s3::server::service_with(cluster, user_seal, options));
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "s3 gateway listening");
    let plain = chuyi_s3::server::serve_on(listener, service.clone(), None);
    let secure = async {
        let Some((addr, files)) = tls else { return std::future::pending().await };
        let tls = chuyi_s3::tls::Tls::load(files)?;
        tokio::spawn(tls.clone().watch(chuyi_s3::tls::RELOAD_EVERY));
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("listening on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "s3 gateway listening over TLS");
        chuyi_s3::server::serve_on(listener, service.clone(), Some(tls)).await?;
        anyhow::Ok(())
    };
    tokio::select! {
        served = plain => served?,
        served = secure => served?,
        () = node::shutdown_signal() => {}
    }
    Ok(())
}
