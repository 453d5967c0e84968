//! `chuyi up`: the local all-in-one cluster. One metadata member and three
//! storage nodes (each with an ssd and an hdd disk) run as child processes
//! of this one, from configs it writes under the data directory; the NBD
//! frontend runs in this process. It creates the `ssd` and `hdd` pools and
//! a default volume, prints the endpoints, writes them to `<data-dir>/up.env`
//! and serves until SIGINT or SIGTERM. Running it again reuses the data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chuyi_client::{ClientConfig, Cluster};
use chuyi_common::credential::{Credential, Principal, Role};
use chuyi_common::ids::DeviceClass;
use chuyi_common::secret::ClusterSecret;
use chuyi_metadata::client::MetaClient;
use chuyi_metadata::proto::{ApiReply, MetaCall, Query};
use chuyi_metadata::state::model::Redundancy;
use chuyi_metadata::state::{MetaError, Request};

const NODES: u16 = 3;
const DEFAULT_VOLUME: &str = "vol0";
const DEFAULT_VOLUME_BYTES: u64 = 4 << 30;
/// The volume served to VMs over vhost-user-blk (a VM's disk is attached
/// to one frontend at a time, so it is not `vol0`, which NBD serves).
const VM_VOLUME: &str = "vm0";

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where everything lives; created if missing, reused if not.
    #[arg(long, default_value = "./chuyi-data")]
    data_dir: PathBuf,
    /// Metadata member on PORT+101 (its web console on PORT+102, over TLS
    /// with the S3 gateway's self-signed certificate), storage nodes on
    /// PORT+1..=PORT+3.
    #[arg(long, default_value_t = 7100)]
    port_base: u16,
    /// The NBD frontend's address.
    #[arg(long, default_value = "127.0.0.1:10809")]
    nbd: String,
    /// The S3 gateway's address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    s3: String,
    /// The S3 gateway's address over TLS, with a self-signed certificate
    /// made on the first run (`<data-dir>/tls/`, its path in up.env as
    /// AWS_CA_BUNDLE, so awscli and boto3 verify it).
    #[arg(long, default_value = "127.0.0.1:9443")]
    s3_tls: String,
    /// Prometheus metrics of the gateway and the NBD and vhost frontends
    /// (this process), at http://ADDR/metrics; in up.env as
    /// CHUYI_METRICS_URL.
    /// The metadata member and the storage nodes serve theirs on the next
    /// ports (free ones where those are taken, or with port 0), in up.env
    /// as CHUYI_META_METRICS_URL and CHUYI_NODE_METRICS_URLS.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics: String,
    /// Each storage node's ssd disk ("4GiB", "100GiB"): a sparse file,
    /// space taken as chunks are written; set at the data dir's first run.
    #[arg(long, default_value = "4GiB")]
    ssd_capacity: String,
    /// Each storage node's backfill and resync rate (MB/s); the node's
    /// default when unset. A slow one lets recovery be watched.
    #[arg(long)]
    recovery_mb_per_s: Option<u32>,
}

/// The children, stopped (SIGTERM, then waited for) when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SAFETY: kill(2) on a child this process spawned and has not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)?;
    let dir = std::fs::canonicalize(&args.data_dir)?;
    let secret_file = dir.join("cluster.secret");
    if !secret_file.exists() {
        crate::key::write_private(&secret_file, &ClusterSecret::generate().to_text())?;
    }
    // The master key of encrypted volumes. A real deployment keeps it off
    // the cluster's disks (a key file on the frontend hosts, or $CHUYI_KEK);
    // this local all-in-one cluster keeps it beside its data, readable by
    // its owner only, and says so.
    let kek_file = dir.join("master.kek");
    if !kek_file.exists() {
        crate::key::write_new_kek(&kek_file)?;
    }
    let kek = chuyi_common::sm4::load_kek(Some(&kek_file))?;
    let meta_addr = format!("127.0.0.1:{}", args.port_base + 101);
    let console_addr = format!("127.0.0.1:{}", args.port_base + 102);
    let secret = ClusterSecret::load(Some(&secret_file))?;
    // The nodes and this process's frontends get credentials of their own
    // (written on the first run; issuing is deterministic, so later runs
    // derive the same ones); only the member and the administrator hold
    // the secret.
    let frontend = issue(&secret, &dir, "frontend.cred", Principal::new(Role::Frontend, "chuyi-up")?)?;
    for id in 1..=NODES {
        issue(&secret, &dir, &format!("node{id}.cred"), Principal::node(id))?;
    }
    let metrics_listener =
        tokio::net::TcpListener::bind(&args.metrics).await.with_context(|| format!("listening on {}", args.metrics))?;
    let metrics_addr = metrics_listener.local_addr()?;
    let metrics_url = format!("http://{metrics_addr}/metrics");
    // The member's, then each node's.
    let port_of = |addr: &str| addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    let mut reserved: Vec<u16> = [&args.s3, &args.s3_tls, &args.nbd].iter().filter_map(|a| port_of(a)).collect();
    reserved.extend((1..=NODES).chain([101, 102]).filter_map(|i| args.port_base.checked_add(i)));
    let children_metrics = ports_after(metrics_addr, 1 + NODES, args.metrics.ends_with(":0"), &reserved)?;
    let meta_metrics_url = format!("http://{}/metrics", children_metrics[0]);
    let node_metrics_urls: Vec<String> = children_metrics[1..].iter().map(|a| format!("http://{a}/metrics")).collect();
    // The S3 gateway's and the console's certificate.
    let tls_files = self_signed(&dir.join("tls"))?;
    let configs = write_configs(&dir, &tls_files, &secret_file, [&meta_addr, &console_addr], &args, &children_metrics)?;
    let exe = std::env::current_exe()?;
    let mut children = Children(Vec::new());
    for (role, config) in configs {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(config.with_extension("log"))?;
        let child = Process::new(&exe)
            .args([role, "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting chuyi {role}"))?;
        children.0.push(child);
    }
    let admin = Credential::from_secret(secret, Principal::admin());
    let meta = MetaClient::new(vec![meta_addr.clone()], &admin)?;
    wait_for_nodes(&meta).await?;
    for (name, class) in [("ssd", DeviceClass::Ssd), ("hdd", DeviceClass::Hdd)] {
        let pool = Request::CreatePool {
            name: name.into(),
            class,
            redundancy: Redundancy::Replicated(2),
            pg_count: 64,
            separate_failure_domains: false,
        };
        match meta.write(pool).await {
            Ok(_) | Err(MetaError::AlreadyExists { .. }) => {}
            Err(e) => bail!("creating pool {name}: {e}"),
        }
    }
    for name in [DEFAULT_VOLUME, VM_VOLUME] {
        let volume = Request::CreateVolume {
            name: name.into(),
            pool: "ssd".into(),
            size_bytes: DEFAULT_VOLUME_BYTES,
            chunk_size_bytes: chuyi_common::limits::CHUNK_SIZE_MAX_BYTES as u32,
            wrapped_key: Vec::new(),
        };
        match meta.write(volume).await {
            Ok(_) | Err(MetaError::AlreadyExists { .. }) => {}
            Err(e) => bail!("creating volume {name}: {e}"),
        }
    }
    let s3_keys = user(&meta, &dir, "s3-user.json", "local", false).await?;
    let console_keys = user(&meta, &dir, "console-admin.json", "console-admin", true).await?;
    let console_url = format!("https://{console_addr}/");
    let s3_listener =
        tokio::net::TcpListener::bind(&args.s3).await.with_context(|| format!("listening on {}", args.s3))?;
    let s3_endpoint = format!("http://{}", s3_listener.local_addr()?);
    let cluster = Cluster::connect(vec![meta_addr.clone()], &frontend, ClientConfig::default()).await?;
    let user_seal = frontend.user_seal().context("a frontend credential opens users' secret keys")?;
    // One registry for the frontends this process runs.
    let mut registry = chuyi_common::metrics::prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(chuyi_common::metrics::ProcessCollector));
    registry.register_collector(Box::new(chuyi_client::metrics::RetryCollector));
    let s3_metrics = chuyi_s3::metrics::S3Metrics::register(&mut registry);
    let nbd_metrics = chuyi_nbd::metrics::NbdMetrics::register(&mut registry);
    let vhost_metrics = chuyi_vhost::metrics::register(&mut registry);
    tokio::spawn(chuyi_common::metrics::serve(metrics_listener, std::sync::Arc::new(registry)));
    let s3_options = chuyi_s3::server::Options {
        kek: kek.clone(),
        metrics: Some(s3_metrics),
        ..chuyi_s3::server::Options::new("hdd")
    };
    let s3 = std::sync::Arc::new(chuyi_s3::server::service_with(cluster.clone(), user_seal, s3_options));
    tokio::spawn(chuyi_s3::server::serve_on(s3_listener, s3.clone(), None));
    let tls = chuyi_s3::tls::Tls::load(tls_files.clone())?;
    tokio::spawn(tls.clone().watch(chuyi_s3::tls::RELOAD_EVERY));
    let tls_listener =
        tokio::net::TcpListener::bind(&args.s3_tls).await.with_context(|| format!("listening on {}", args.s3_tls))?;
    let s3_tls_endpoint = format!("https://{}", tls_listener.local_addr()?);
    tokio::spawn(chuyi_s3::server::serve_on(tls_listener, s3, Some(tls)));
    let listener =
        tokio::net::TcpListener::bind(&args.nbd).await.with_context(|| format!("listening on {}", args.nbd))?;
    let nbd_uri = format!("nbd://{}/{DEFAULT_VOLUME}", listener.local_addr()?);
    let socket = dir.join("nbd.sock");
    let unix = crate::volume::bind_nbd_socket(&socket)?;
    let nbd_unix_uri = format!("nbd+unix:///{DEFAULT_VOLUME}?socket={}", socket.display());
    let vhost_socket = dir.join(format!("{VM_VOLUME}.vhost.sock"));
    // Exported, so `. up.env` also reaches the commands run after it; PATH
    // gains this binary's directory, so `chuyi ...` works as the README
    // shows it.
    let bin_dir = std::env::current_exe()?.parent().map(|d| d.display().to_string()).unwrap_or_default();
    let env = format!(
        "export PATH=\"{bin_dir}:$PATH\"\n\
         export CHUYI_META_ADDR={meta_addr}\nexport CHUYI_CONFIG={}\nexport CHUYI_NBD_URI={nbd_uri}\n\
         export CHUYI_NBD_UNIX_URI='{nbd_unix_uri}'\nexport CHUYI_S3_ENDPOINT={s3_endpoint}\n\
         export CHUYI_S3_TLS_ENDPOINT={s3_tls_endpoint}\nexport CHUYI_METRICS_URL={metrics_url}\n\
         export CHUYI_META_METRICS_URL={meta_metrics_url}\nexport CHUYI_NODE_METRICS_URLS='{}'\n\
         export CHUYI_VHOST_SOCKET={}\n\
         export CHUYI_CONSOLE_URL={console_url}\nexport CHUYI_CONSOLE_ACCESS_KEY={}\n\
         export CHUYI_CONSOLE_SECRET_KEY='{}'\n\
         export AWS_CA_BUNDLE={}\n\
         export AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY='{}'\nexport AWS_DEFAULT_REGION={}\n",
        dir.join("chuyi.toml").display(),
        node_metrics_urls.join(" "),
        vhost_socket.display(),
        console_keys.access_key,
        console_keys.secret_key,
        tls_files.cert.display(),
        s3_keys.access_key,
        s3_keys.secret_key,
        chuyi_s3::gateway::DEFAULT_REGION,
    );
    std::fs::write(
        dir.join("chuyi.toml"),
        format!(
            "meta = [\"{meta_addr}\"]\ncluster_secret_file = \"{}\"\nkek_file = \"{}\"\n",
            secret_file.display(),
            kek_file.display()
        ),
    )?;
    // Owner-readable only: it holds the S3 user's and the console
    // administrator's secret keys.
    let up_env = dir.join("up.env");
    match std::fs::remove_file(&up_env) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    crate::key::write_private(&up_env, env.trim_end())?;
    write_prometheus(&dir, metrics_addr, &children_metrics)?;
    println!("chuyi is up (data in {})", dir.display());
    println!("  metadata : {meta_addr}");
    println!("  nodes    : 127.0.0.1:{}..{} (ssd and hdd disks each)", args.port_base + 1, args.port_base + NODES);
    println!("  NBD      : {nbd_uri}   (try: qemu-img info {nbd_uri})");
    println!("             {nbd_unix_uri}");
    println!("  vhost    : {} (volume {VM_VOLUME}, vhost-user-blk; for QEMU:", vhost_socket.display());
    println!(
        "             -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem \\\n             \
         -chardev socket,id=vm0,path={} -device vhost-user-blk-pci,chardev=vm0)",
        vhost_socket.display()
    );
    println!(
        "  S3       : {s3_endpoint}   (try: aws --endpoint-url {s3_endpoint} s3 cp FILE s3://b1/ after s3 mb s3://b1)"
    );
    println!("             {s3_tls_endpoint} over TLS (self-signed: {})", tls_files.cert.display());
    println!(
        "             user {}, access key {}, secret key {}",
        s3_keys.name, s3_keys.access_key, s3_keys.secret_key
    );
    println!("  metrics  : {metrics_url} (Prometheus, of the S3 gateway and the NBD and vhost frontends)");
    println!("             {meta_metrics_url} (the metadata member)");
    println!("             {} (the storage nodes)", node_metrics_urls.join(" "));
    println!("  console  : {console_url} (the same self-signed certificate; log in with");
    println!(
        "             access key {} and secret key {}: an administrator's)",
        console_keys.access_key, console_keys.secret_key
    );
    println!("  settings : {} (. it in a shell)", dir.join("up.env").display());
    println!("  alerts   : {} (rules and scrape jobs for Prometheus)", dir.join("prometheus.yml").display());
    println!("  KEK      : {} (encrypted volumes: chuyi volume create NAME --size 1G --encrypt;", kek_file.display());
    println!("             kept beside the data for this local cluster only)");
    println!("Ctrl-C stops everything; running again reuses the data.");
    let holder = format!("{}:{}", frontend.principal().name, std::process::id());
    crate::volume::spawn_chores(&cluster, kek.as_ref(), &holder);
    let vhost_options =
        chuyi_vhost::server::VhostOptions { kek: kek.clone(), metrics: Some(vhost_metrics), ..Default::default() };
    let (stop_vhost, stopped) = tokio::sync::watch::channel(false);
    let vhost = tokio::spawn(serve_vm_volume(cluster.clone(), holder.clone(), vhost_socket, vhost_options, stopped));
    let options = chuyi_nbd::server::NbdOptions { kek, metrics: Some(nbd_metrics), ..Default::default() };
    let server = chuyi_nbd::server::NbdServer::with_options(cluster, holder, options);
    let served = crate::volume::serve_until_signal(server, listener, Some((unix, &socket))).await;
    // The VM volume's lease is given back, so the next `chuyi up` can
    // serve it at once.
    let _ = stop_vhost.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), vhost).await;
    drop(children);
    served?;
    println!("chuyi stopped");
    Ok(())
}

/// Serves `vm0` over vhost-user-blk until `stop` turns true; tried again
/// every few seconds while it cannot be (its lease still held by a
/// `chuyi up` that was killed runs out by itself).
async fn serve_vm_volume(
    cluster: std::sync::Arc<Cluster>,
    holder: String,
    socket: PathBuf,
    options: chuyi_vhost::server::VhostOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let stopped = {
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        };
        let served = chuyi_vhost::server::serve(cluster.clone(), VM_VOLUME, &holder, &socket, options.clone(), stopped);
        match served.await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "serving {VM_VOLUME} over vhost-user-blk; trying again in 5 s"),
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stop.wait_for(|s| *s)).await;
    }
}

/// Writes the member's and nodes' configs (each run, so the ports follow
/// the arguments); the data they point at is kept.
fn write_configs(
    dir: &Path,
    tls: &chuyi_s3::tls::TlsFiles,
    secret_file: &Path,
    [meta_addr, console_addr]: [&str; 2],
    args: &UpArgs,
    metrics: &[std::net::SocketAddr],
) -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
    let (port_base, ssd_capacity) = (args.port_base, &args.ssd_capacity);
    let meta_config = dir.join("meta1.toml");
    std::fs::write(
        &meta_config,
        format!(
            "id = 1\nlisten = \"{meta_addr}\"\ndata_dir = \"{}\"\ncluster_secret_file = \"{}\"\n\
             metrics_listen = \"{}\"\nconsole_listen = \"{console_addr}\"\n\
             console_tls_cert = \"{}\"\nconsole_tls_key = \"{}\"\n\n\
             [[member]]\nid = 1\naddr = \"{meta_addr}\"\n",
            dir.join("meta1").display(),
            secret_file.display(),
            metrics[0],
            tls.cert.display(),
            tls.key.display()
        ),
    )?;
    let mut configs = vec![("meta", meta_config)];
    // accept_missing_fences: a data dir from a release before fencing
    // starts without a fence table; on one host, its disks and its table
    // are lost together or not at all.
    for id in 1..=NODES {
        let config = dir.join(format!("node{id}.toml"));
        let node_dir = dir.join(format!("node{id}"));
        let recovery = args.recovery_mb_per_s.map_or(String::new(), |r| format!("recovery_mb_per_s = {r}\n"));
        std::fs::write(
            &config,
            format!(
                "node_id = {id}\nlisten = \"127.0.0.1:{}\"\nlisten_extra = \"unix:{}\"\ncredential_file = \"{}\"\n\
                 meta = [\"{meta_addr}\"]\nfailure_domain = \"local{id}\"\naccept_missing_fences = true\n\
                 metrics_listen = \"{}\"\n{recovery}\n\
                 [[disk]]\nid = 0\npath = \"{}\"\nclass = \"ssd\"\ncapacity = \"{ssd_capacity}\"\n\n\
                 [[disk]]\nid = 1\npath = \"{}\"\nclass = \"hdd\"\ncapacity = \"8GiB\"\n",
                port_base + id,
                dir.join(format!("node{id}.sock")).display(),
                dir.join(format!("node{id}.cred")).display(),
                metrics[usize::from(id)],
                node_dir.join("ssd0").display(),
                node_dir.join("hdd0").display()
            ),
        )?;
        configs.push(("node", config));
    }
    Ok(configs)
}

/// The repository's alert rules (ops/prometheus), built into the binary.
const ALERT_RULES: &str = include_str!("../../ops/prometheus/chuyi-alerts.yml");

/// Writes `prometheus.yml` (scraping this process, the member and the
/// nodes as jobs chuyi-frontend, chuyi-meta and chuyi-node) and the alert
/// rules it loads into `dir`: `prometheus --config.file=DIR/prometheus.yml`
/// watches this cluster.
fn write_prometheus(
    dir: &Path,
    frontend: std::net::SocketAddr,
    children: &[std::net::SocketAddr],
) -> anyhow::Result<()> {
    let targets =
        |addrs: &[std::net::SocketAddr]| addrs.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    let config = format!(
        "# Written by `chuyi up` on each start: this cluster's processes and alert rules.\n\
         global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n\
         rule_files:\n  - chuyi-alerts.yml\n\
         scrape_configs:\n\
         \x20 - job_name: chuyi-frontend\n    static_configs:\n      - targets: [{}]\n\
         \x20 - job_name: chuyi-meta\n    static_configs:\n      - targets: [{}]\n\
         \x20 - job_name: chuyi-node\n    static_configs:\n      - targets: [{}]\n",
        targets(&[frontend]),
        targets(&children[..1]),
        targets(&children[1..]),
    );
    std::fs::write(dir.join("prometheus.yml"), config)?;
    std::fs::write(dir.join("chuyi-alerts.yml"), ALERT_RULES)?;
    Ok(())
}

/// `count` addresses for the children's metrics: the ports after `first`'s
/// where they are free and not `reserved` (ports this process binds
/// later), so they stay the same from run to run; else, or when `any`
/// (the caller asked for port 0), ports the kernel picks. A port is known
/// free here and bound by the child a moment later; a process taking it
/// between is told by the child's failure to start.
fn ports_after(
    first: std::net::SocketAddr,
    count: u16,
    any: bool,
    reserved: &[u16],
) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    let bind = |port: u16| std::net::TcpListener::bind((first.ip(), port));
    // Held until all are chosen, so the kernel hands out no port twice.
    let mut held = Vec::new();
    for i in 1..=count {
        let next = first.port().checked_add(i).filter(|p| !any && !reserved.contains(p)).map(bind).and_then(Result::ok);
        held.push(match next {
            Some(listener) => listener,
            None => bind(0).context("a free port for metrics")?,
        });
    }
    held.iter().map(|l| l.local_addr().context("a metrics port")).collect()
}

/// Writes `principal`'s credential to `dir/file` (readable by its owner
/// only) unless there, and returns it: issuing is deterministic.
fn issue(secret: &ClusterSecret, dir: &Path, file: &str, principal: Principal) -> anyhow::Result<Credential> {
    let credential = Credential::issue(secret, principal)?;
    let path = dir.join(file);
    if !path.exists() {
        let text = credential.to_text().context("an issued credential has a file form")?;
        crate::key::write_private(&path, text.trim_end())?;
    }
    Ok(credential)
}

async fn wait_for_nodes(meta: &MetaClient) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(ApiReply::Map(map)) = meta.read(Query::Map).await {
            let up = map.nodes.iter().filter(|n| n.state == chuyi_metadata::state::model::NodeState::Up).count();
            if up == usize::from(NODES) {
                return Ok(());
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the storage nodes did not register within 60 s; see the *.log files in the data directory");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The local cluster's TLS certificate and key in `dir`, made on the
/// first run: self-signed for localhost and 127.0.0.1, so the certificate
/// is its own CA bundle. The key is readable by its owner only.
fn self_signed(dir: &Path) -> anyhow::Result<chuyi_s3::tls::TlsFiles> {
    let files = chuyi_s3::tls::TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir)?;
    // A key left without its certificate (a run cut short) is made anew.
    let _ = std::fs::remove_file(&files.key);
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .context("making the local cluster's TLS certificate")?;
    crate::key::write_private(&files.key, &made.signing_key.serialize_pem())?;
    std::fs::write(&files.cert, made.cert.pem())?;
    Ok(files)
}

/// A user `chuyi up` prints and writes to up.env (the S3 user, the
/// console's administrator); made on the first run and kept in a file of
/// the data dir (owner-readable only), since the metadata service shows a
/// secret key once.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct UserKeys {
    name: String,
    access_key: String,
    secret_key: String,
}

async fn user(meta: &MetaClient, dir: &Path, file: &str, name: &str, admin: bool) -> anyhow::Result<UserKeys> {
    let file = dir.join(file);
    if let Ok(text) = std::fs::read_to_string(&file) {
        return serde_json::from_str(&text).with_context(|| format!("reading {}", file.display()));
    }
    let base = name;
    let mut name = base.to_string();
    let created = loop {
        let call = MetaCall::CreateUser { name: name.clone(), admin };
        match meta.call(&call).await {
            Ok(ApiReply::UserCreated { user, secret_key }) => {
                break UserKeys { name: user.name, access_key: user.access_key, secret_key }
            }
            // Made by an earlier run whose key file is gone: another name.
            Err(MetaError::AlreadyExists { .. }) => name = format!("{base}-{}", std::process::id()),
            Ok(other) => bail!("creating user {name}: unexpected reply {other:?}"),
            Err(e) => bail!("creating user {name}: {e}"),
        }
    };
    crate::key::write_private(&file, &serde_json::to_string_pretty(&created)?)?;
    Ok(created)
}
