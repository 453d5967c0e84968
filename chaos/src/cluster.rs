//! A real cluster on localhost: `chuyi meta` and `chuyi node` processes
//! with their own configs and data directories under one temporary
//! directory, which this harness can kill, freeze and restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use chuyi_client::{ClientConfig, Cluster};
use chuyi_common::credential::{Credential, Door, Principal, Role};
use chuyi_common::ids::{ChunkId, DeviceClass, NodeId};
use chuyi_common::map::{DataMap, Replica};
use chuyi_common::proto::chunk::{ChunkRequest, ChunkResponse, DiskRequest, NodeReport};
use chuyi_common::rpc::{Endpoint, RpcClient, RpcConfig};
use chuyi_common::secret::ClusterSecret;
use chuyi_meta_api::ask;
use chuyi_metadata::client::MetaClient;
use chuyi_metadata::proto::{ApiReply, MetaCall};
use chuyi_metadata::state::model::Redundancy;
use chuyi_metadata::state::Request;

use crate::proxy::Proxy;

const SECRET: &str = "chaos-harness-cluster-secret-0123456789";
pub const POOL: &str = "ssd";
pub const CHUNK_SIZE: u32 = 4 << 20;

/// How long the tests' S3 gateways keep an idle keep-alive connection
/// (their head timeout): longer than any client script runs. The scripts
/// never retry, so that a failure a retry would hide still shows; but a
/// server closing an idle connection races with a client reusing it
/// (RFC 9112 §9.3.1), and real clients answer that by retrying. Measured:
/// boto3 uploading over connections idle 4 ms short of a 2 s timeout got
/// "Remote end closed connection without response", as CI's boto3 suite
/// once did with the default 30 s. Tests of the timeout set their own.
pub const S3_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// A `chuyi s3` process, SIGKILLed when dropped (also when a test fails
/// half-way).
#[derive(Debug)]
pub struct GatewayProcess(pub Child);

impl GatewayProcess {
    /// SIGKILL, and reap.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Spec {
    pub metas: usize,
    pub nodes: usize,
    /// Size of each node's one ssd disk.
    pub disk_mib: u64,
    pub heartbeat_timeout_ms: u64,
    pub scrub_mb_per_s: u32,
    pub recovery_mb_per_s: u32,
    pub pg_count: u32,
    /// Put each node behind a [`Proxy`] that peers reach it through (the
    /// test's client still dials nodes directly), so `net-cut` can cut it.
    pub proxied: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            metas: 1,
            nodes: 3,
            disk_mib: 512,
            heartbeat_timeout_ms: 2000,
            scrub_mb_per_s: 0,
            recovery_mb_per_s: 200,
            pg_count: 16,
            proxied: false,
        }
    }
}

/// One process: its config, its log, and the child while it runs.
#[derive(Debug)]
pub struct Proc {
    pub id: u64,
    pub addr: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub dir: PathBuf,
    child: Option<Child>,
    frozen: bool,
}

#[derive(Debug)]
pub struct TestCluster {
    pub spec: Spec,
    dir: tempfile::TempDir,
    bin: PathBuf,
    secret_file: PathBuf,
    pub metas: Vec<Proc>,
    pub nodes: Vec<Proc>,
    /// With `Spec::proxied`: node i's proxy at i.
    pub proxies: Vec<Proxy>,
}

/// An S3 user's access key and secret key.
#[derive(Clone, Debug)]
pub struct S3Keys {
    pub access: String,
    pub secret: String,
}

/// The `chuyi` binary: `$CHUYI_BIN`, else next to (or above) this
/// executable, where cargo puts every binary of the workspace.
pub fn chuyi_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("CHUYI_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("chuyi");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("cannot find the chuyi binary near {}; set CHUYI_BIN", exe.display())
}

/// A TCP port for a test's process to listen on.
///
/// Taken below the kernel's ephemeral range (32768 up), so no outgoing
/// connection of a concurrent test can take it between this check and the
/// child's bind, the race a port from `bind(0)` has (a storage node of a
/// boto3 run once failed to start that way); and reserved across test
/// processes by a marker file created exclusively, stale after 10 minutes.
pub fn free_port() -> anyhow::Result<u16> {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    const RESERVED_FOR: std::time::Duration = std::time::Duration::from_secs(600);
    let dir = std::env::temp_dir().join("chuyi-test-ports");
    std::fs::create_dir_all(&dir)?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let start = (std::process::id() ^ nanos) % COUNT;
    for i in 0..COUNT {
        let port = (FIRST + (start + i) % COUNT) as u16;
        let marker = dir.join(port.to_string());
        let stale = std::fs::metadata(&marker)
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().unwrap_or_default() > RESERVED_FOR);
        if stale {
            let _ = std::fs::remove_file(&marker);
        }
        if std::fs::OpenOptions::new().write(true).create_new(true).open(&marker).is_err() {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free test port in {FIRST}..{}", FIRST + COUNT)
}

pub fn secret() -> ClusterSecret {
    ClusterSecret::new(SECRET.as_bytes().to_vec()).unwrap_or_else(|e| panic!("test secret: {e}"))
}

/// The administrator's credential: the test cluster's secret.
pub fn admin() -> Credential {
    Credential::from_secret(secret(), Principal::admin())
}

/// A frontend's own credential, issued from the test cluster's secret, as
/// `chuyi credential issue --frontend NAME` would.
pub fn frontend(name: &str) -> Credential {
    let principal = Principal::new(Role::Frontend, name).unwrap_or_else(|e| panic!("frontend name: {e}"));
    Credential::issue(&secret(), principal).unwrap_or_else(|e| panic!("issuing a credential: {e}"))
}

/// A node's own credential file's text.
fn node_credential(id: u64) -> String {
    let credential = Credential::issue(&secret(), Principal::node(id)).unwrap_or_else(|e| panic!("issuing: {e}"));
    credential.to_text().unwrap_or_default()
}

impl TestCluster {
    /// Starts the processes and waits until every node is registered.
    pub async fn start(spec: Spec) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, SECRET)?;
        let mut cluster = Self {
            bin: chuyi_bin()?,
            spec: spec.clone(),
            dir,
            secret_file,
            metas: Vec::new(),
            nodes: Vec::new(),
            proxies: Vec::new(),
        };
        let node_addrs: Vec<String> =
            (0..spec.nodes).map(|_| free_port().map(|p| format!("127.0.0.1:{p}"))).collect::<Result<_, _>>()?;
        if spec.proxied {
            for addr in &node_addrs {
                cluster.proxies.push(Proxy::start(addr.clone()).await?);
            }
        }
        cluster.write_configs(&node_addrs)?;
        for i in 0..cluster.metas.len() {
            cluster.spawn_meta(i)?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.spawn_node(i)?;
        }
        cluster.wait_registered().await?;
        Ok(cluster)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every file under the storage nodes' directories (their disks and
    /// state), for tests that search what the nodes hold.
    pub fn node_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.is_file() {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        for entry in std::fs::read_dir(self.dir()).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with("node") && entry.path().is_dir() {
                walk(&entry.path(), &mut files);
            }
        }
        files
    }

    fn write_configs(&mut self, node_addrs: &[String]) -> anyhow::Result<()> {
        let root = self.dir.path().to_path_buf();
        let meta_addrs: Vec<String> =
            (0..self.spec.metas).map(|_| free_port().map(|p| format!("127.0.0.1:{p}"))).collect::<Result<_, _>>()?;
        let founders: String = meta_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("[[member]]\nid = {}\naddr = \"{a}\"\n", i + 1))
            .collect();
        for (i, addr) in meta_addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let dir = root.join(format!("meta{id}"));
            let config = root.join(format!("meta{id}.toml"));
            std::fs::write(
                &config,
                format!(
                    "id = {id}\nlisten = \"{addr}\"\ndata_dir = \"{}\"\ncluster_secret_file = \"{}\"\n\
                     heartbeat_timeout_ms = {}\n\n{founders}",
                    dir.display(),
                    self.secret_file.display(),
                    self.spec.heartbeat_timeout_ms
                ),
            )?;
            let log = root.join(format!("meta{id}.log"));
            self.metas.push(Proc { id, addr: addr.clone(), config, log, dir, child: None, frozen: false });
        }
        let meta_list = meta_addrs.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
        for (i, addr) in node_addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let dir = root.join(format!("node{id}"));
            let config = root.join(format!("node{id}.toml"));
            let advertise = self.proxies.get(i).map_or(String::new(), |p| format!("advertise = [\"{}\"]\n", p.addr));
            // Each node holds its own credential, never the secret.
            let credential_file = root.join(format!("node{id}.cred"));
            std::fs::write(&credential_file, node_credential(id))?;
            std::fs::write(
                &config,
                format!(
                    "node_id = {id}\nlisten = \"{addr}\"\nlisten_extra = \"unix:{}\"\n{advertise}credential_file = \"{}\"\nmeta = [{meta_list}]\n\
                     scrub_mb_per_s = {}\nrecovery_mb_per_s = {}\n\n\
                     [[disk]]\nid = 0\npath = \"{}\"\nclass = \"ssd\"\ncapacity = \"{}MiB\"\n",
                    Self::node_socket(&root, id).display(),
                    credential_file.display(),
                    self.spec.scrub_mb_per_s,
                    self.spec.recovery_mb_per_s,
                    dir.join("ssd").display(),
                    self.spec.disk_mib
                ),
            )?;
            let log = root.join(format!("node{id}.log"));
            self.nodes.push(Proc { id, addr: addr.clone(), config, log, dir, child: None, frozen: false });
        }
        Ok(())
    }

    fn spawn(bin: &Path, role: &str, p: &mut Proc) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&p.log)?;
        let child = Process::new(bin)
            .args([role, "--config"])
            .arg(&p.config)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {} {role}", bin.display()))?;
        p.child = Some(child);
        p.frozen = false;
        Ok(())
    }

    fn spawn_meta(&mut self, i: usize) -> anyhow::Result<()> {
        Self::spawn(&self.bin, "meta", &mut self.metas[i])
    }

    fn spawn_node(&mut self, i: usize) -> anyhow::Result<()> {
        Self::spawn(&self.bin, "node", &mut self.nodes[i])
    }

    fn node_index(&self, id: NodeId) -> anyhow::Result<usize> {
        self.nodes.iter().position(|n| n.id == u64::from(id)).ok_or_else(|| anyhow!("no node {id}"))
    }

    pub fn meta_addrs(&self) -> Vec<String> {
        self.metas.iter().map(|m| m.addr.clone()).collect()
    }

    pub fn meta(&self) -> anyhow::Result<MetaClient> {
        Ok(MetaClient::new(self.meta_addrs(), &admin())?)
    }

    /// A data-path client, with `deadline` for each operation, acting as
    /// the administrator (any lease holder name).
    pub async fn client(&self, deadline: Duration) -> anyhow::Result<Arc<Cluster>> {
        self.client_as(&admin(), deadline).await
    }

    /// A data-path client calling as `credential`'s principal.
    pub async fn client_as(&self, credential: &Credential, deadline: Duration) -> anyhow::Result<Arc<Cluster>> {
        // Behind proxies, the map has the proxies' addresses; the client
        // dials the nodes themselves, so a cut is between nodes only.
        let node_addrs = self.nodes.iter().map(|n| (n.id as NodeId, vec![n.addr.clone()])).collect();
        let config = ClientConfig { deadline, node_addrs, ..ClientConfig::default() };
        Ok(Cluster::connect(self.meta_addrs(), credential, config).await?)
    }

    /// A data-path client that reaches the nodes over their Unix sockets,
    /// as a frontend on the same host as the nodes would.
    pub async fn local_client(&self, deadline: Duration) -> anyhow::Result<Arc<Cluster>> {
        let node_addrs = self
            .nodes
            .iter()
            .map(|n| (n.id as NodeId, vec![format!("unix:{}", Self::node_socket(self.dir.path(), n.id).display())]))
            .collect();
        let config = ClientConfig { deadline, node_addrs, ..ClientConfig::default() };
        Ok(Cluster::connect(self.meta_addrs(), &admin(), config).await?)
    }

    fn node_socket(root: &Path, id: u64) -> PathBuf {
        root.join(format!("node{id}.sock"))
    }

    async fn wait_registered(&self) -> anyhow::Result<()> {
        let want = self.spec.nodes;
        self.wait_map(Duration::from_secs(30), "every node registered", |m| {
            m.nodes.iter().filter(|n| n.up).count() == want
        })
        .await
        .map(drop)
    }

    /// The current data map from the metadata service.
    pub async fn map(&self) -> anyhow::Result<DataMap> {
        Ok(self.meta()?.ask(ask::Map).await?.data_map())
    }

    /// Polls the map until `ready` holds.
    pub async fn wait_map(
        &self,
        limit: Duration,
        what: &str,
        ready: impl Fn(&DataMap) -> bool,
    ) -> anyhow::Result<DataMap> {
        let start = Instant::now();
        loop {
            if let Ok(map) = self.map().await {
                if ready(&map) {
                    return Ok(map);
                }
            }
            if start.elapsed() > limit {
                bail!("timed out after {limit:?} waiting for {what}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the map has node `id` up (or down); returns how long
    /// that took.
    pub async fn wait_node(&self, id: NodeId, up: bool, limit: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let what = format!("node {id} {}", if up { "up" } else { "down" });
        self.wait_map(limit, &what, |m| m.node(id).is_some_and(|n| n.up == up)).await?;
        Ok(start.elapsed())
    }

    /// Waits until every PG has all its replicas and none recovering.
    pub async fn wait_clean(&self, limit: Duration) -> anyhow::Result<DataMap> {
        self.wait_map(limit, "every PG clean", is_clean).await
    }

    /// Creates an S3 user with `chuyi user create`; its keys.
    pub fn s3_user(&self, name: &str) -> anyhow::Result<S3Keys> {
        let (ok, out, err) = self.cli(&["--json", "user", "create", name])?;
        if !ok {
            bail!("chuyi user create {name}: {out}{err}");
        }
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let key =
            |field: &str| v[field].as_str().map(String::from).ok_or_else(|| anyhow::anyhow!("no {field} in {out}"));
        Ok(S3Keys { access: key("access_key")?, secret: key("secret_key")? })
    }

    /// The `chuyi` binary set to reach this cluster; add the command.
    pub fn command(&self) -> Process {
        self.command_via(&self.meta_addrs().join(","))
    }

    /// [`Self::command`] reaching the metadata service at `meta` (a proxy).
    pub fn command_via(&self, meta: &str) -> Process {
        let mut command = Process::new(&self.bin);
        command.args(["--meta", meta, "--secret-file"]).arg(&self.secret_file);
        command.env("RUST_LOG", "warn");
        command
    }

    /// `chuyi` run as frontend `name` with its own issued credential (not
    /// the cluster secret), reaching the metadata service at `meta`: how
    /// `chuyi s3` and `chuyi nbd` are deployed.
    pub fn frontend_command(&self, name: &str, meta: &str) -> anyhow::Result<Process> {
        let file = self.dir().join(format!("frontend-{name}.cred"));
        std::fs::write(&file, frontend(name).to_text().unwrap_or_default())?;
        let mut command = Process::new(&self.bin);
        command.args(["--meta", meta, "--secret-file"]).arg(file);
        command.env("RUST_LOG", "warn");
        Ok(command)
    }

    /// Runs the `chuyi` binary against this cluster: (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let out = self.command().args(args).output()?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok((out.status.success(), text(&out.stdout), text(&out.stderr)))
    }

    /// `chuyi s3` on `listen` (host:port) as its own process, with `args`
    /// added, once it accepts connections. Its head timeout is
    /// [`S3_IDLE_TIMEOUT`] unless `args` name one.
    pub async fn s3_gateway(&self, listen: &str, args: &[&str]) -> anyhow::Result<GatewayProcess> {
        let mut command = self.frontend_command("s3-gateway", &self.meta_addrs().join(","))?;
        command.args(["s3", "--listen", listen, "--pool", POOL]);
        if !args.iter().any(|a| a.starts_with("--head-timeout-secs")) {
            command.args(["--head-timeout-secs", &S3_IDLE_TIMEOUT.as_secs().to_string()]);
        }
        let child = command.args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("spawn chuyi s3")?;
        let gateway = GatewayProcess(child);
        let start = Instant::now();
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                bail!("the gateway at {listen} never listened");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(gateway)
    }

    /// Every chunk on the running nodes' disks 0, copies counted apart.
    pub async fn all_chunks(&self) -> anyhow::Result<usize> {
        let mut count = 0;
        for p in self.nodes.iter().filter(|p| p.child.is_some() && !p.frozen) {
            count += self.list_chunks(p.id as NodeId).await?.len();
        }
        Ok(count)
    }

    /// Chunks of `owner` on any running node's disk 0.
    pub async fn chunks_of(&self, owner: u64) -> anyhow::Result<usize> {
        let mut count = 0;
        for p in self.nodes.iter().filter(|p| p.child.is_some() && !p.frozen) {
            count += self.list_chunks(p.id as NodeId).await?.iter().filter(|c| c.owner == owner).count();
        }
        Ok(count)
    }

    /// Every chunk on a node's disk 0, straight from the node.
    pub async fn list_chunks(&self, node: NodeId) -> anyhow::Result<Vec<ChunkId>> {
        let rpc = self.node_rpc(node).await?;
        let (mut all, mut start_after) = (Vec::new(), None);
        loop {
            let list = ChunkRequest::Disk(DiskRequest::ListChunks { disk: 0, start_after, max: 1000 });
            let (ChunkResponse::Chunks { chunks, more }, _) = rpc.call(&list, Bytes::new()).await? else {
                bail!("node {node} did not list its chunks");
            };
            start_after = chunks.last().copied();
            all.extend(chunks);
            if !more {
                return Ok(all);
            }
        }
    }

    /// Creates the 2-replica pool `ssd` (once).
    pub async fn create_pool(&self) -> anyhow::Result<()> {
        let pool = Request::CreatePool {
            name: POOL.into(),
            class: DeviceClass::Ssd,
            redundancy: Redundancy::Replicated(2),
            pg_count: self.spec.pg_count,
            separate_failure_domains: false,
        };
        match self.meta()?.write(pool).await {
            Ok(_) | Err(chuyi_metadata::state::MetaError::AlreadyExists { .. }) => Ok(()),
            Err(e) => bail!("creating the pool: {e}"),
        }
    }

    /// Creates the 2-replica pool (once) and a volume of `size_mib`.
    pub async fn create_volume(&self, name: &str, size_mib: u64) -> anyhow::Result<()> {
        self.create_pool().await?;
        let meta = self.meta()?;
        let volume = Request::CreateVolume {
            name: name.into(),
            pool: POOL.into(),
            size_bytes: size_mib << 20,
            chunk_size_bytes: CHUNK_SIZE,
            wrapped_key: Vec::new(),
        };
        meta.write(volume).await.with_context(|| format!("creating volume {name}"))?;
        Ok(())
    }

    fn signal(p: &Proc, signal: i32) -> anyhow::Result<()> {
        let pid = p.child.as_ref().ok_or_else(|| anyhow!("process {} is not running", p.id))?.id() as i32;
        // SAFETY: kill(2) on the pid of a child this harness spawned and has
        // not reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc != 0 {
            bail!("kill({pid}, {signal}) failed");
        }
        Ok(())
    }

    fn reap(p: &mut Proc) {
        if let Some(mut child) = p.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn kill_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let i = self.node_index(id)?;
        Self::signal(&self.nodes[i], libc::SIGKILL)?;
        Self::reap(&mut self.nodes[i]);
        Ok(())
    }

    pub fn restart_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let i = self.node_index(id)?;
        self.spawn_node(i)
    }

    pub fn freeze_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let i = self.node_index(id)?;
        Self::signal(&self.nodes[i], libc::SIGSTOP)?;
        self.nodes[i].frozen = true;
        Ok(())
    }

    pub fn thaw_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let i = self.node_index(id)?;
        Self::signal(&self.nodes[i], libc::SIGCONT)?;
        self.nodes[i].frozen = false;
        Ok(())
    }

    /// The member that is leader now, by its own status.
    pub async fn meta_leader(&self) -> anyhow::Result<u64> {
        let meta = self.meta()?;
        for m in &self.metas {
            if m.child.is_none() {
                continue;
            }
            if let Ok(ApiReply::Status(s)) = meta.call_at(&m.addr, &MetaCall::Status).await {
                if let Some(leader) = s.leader {
                    return Ok(leader);
                }
            }
        }
        bail!("no metadata member names a leader")
    }

    pub fn kill_meta(&mut self, id: u64) -> anyhow::Result<()> {
        let i = self.metas.iter().position(|m| m.id == id).ok_or_else(|| anyhow!("no member {id}"))?;
        Self::signal(&self.metas[i], libc::SIGKILL)?;
        Self::reap(&mut self.metas[i]);
        Ok(())
    }

    pub fn restart_meta(&mut self, id: u64) -> anyhow::Result<()> {
        let i = self.metas.iter().position(|m| m.id == id).ok_or_else(|| anyhow!("no member {id}"))?;
        self.spawn_meta(i)
    }

    /// Cuts node `id` off from its peers (its proxy drops everything).
    pub fn cut_node(&self, id: NodeId) -> anyhow::Result<()> {
        let i = self.node_index(id)?;
        self.proxies.get(i).context("the cluster was started without proxies")?.cut();
        Ok(())
    }

    pub fn heal_node(&self, id: NodeId) -> anyhow::Result<()> {
        let i = self.node_index(id)?;
        self.proxies.get(i).context("the cluster was started without proxies")?.heal();
        Ok(())
    }

    /// A raw connection to one node, for checks behind the client's back.
    pub async fn node_rpc(&self, id: NodeId) -> anyhow::Result<RpcClient<ChunkRequest, ChunkResponse>> {
        let i = self.node_index(id)?;
        let endpoint: Endpoint = self.nodes[i].addr.parse()?;
        Ok(RpcClient::connect(&endpoint, &admin().identity(Door::Node), RpcConfig::default()).await?)
    }

    pub async fn node_report(&self, id: NodeId) -> anyhow::Result<NodeReport> {
        match self.node_rpc(id).await?.call(&ChunkRequest::NodeStatus, Bytes::new()).await? {
            (ChunkResponse::Status(report), _) => Ok(report),
            (other, _) => bail!("node {id} answered {other:?}"),
        }
    }

    /// Reads a whole chunk straight from one replica's disk.
    pub async fn read_replica(&self, replica: Replica, chunk: ChunkId) -> anyhow::Result<Bytes> {
        let request = ChunkRequest::Disk(DiskRequest::Read { disk: replica.disk, chunk, offset: 0, len: CHUNK_SIZE });
        match self.node_rpc(replica.node).await?.call(&request, Bytes::new()).await? {
            (ChunkResponse::ReadDone { .. }, data) => Ok(data),
            (other, _) => bail!("node {} answered {other:?}", replica.node),
        }
    }

    /// Chunks some node holds for a PG it is not a replica of, per the
    /// metadata service's map: space a move should have given back.
    pub async fn stray_chunks(&self) -> anyhow::Result<Vec<(NodeId, ChunkId)>> {
        let map = self.map().await?;
        let mut strays = Vec::new();
        for p in self.nodes.iter().filter(|p| p.child.is_some() && !p.frozen) {
            let node = p.id as NodeId;
            for chunk in self.list_chunks(node).await? {
                let Some((_, pg)) = map.locate(chunk) else { continue };
                if !pg.replicas.iter().any(|r| r.node == node) {
                    strays.push((node, chunk));
                }
            }
        }
        Ok(strays)
    }

    /// The file holding a node's disk.
    pub fn disk_file(&self, id: NodeId) -> anyhow::Result<PathBuf> {
        let i = self.node_index(id)?;
        Ok(self.nodes[i].dir.join("ssd").join("chuyi-disk.img"))
    }

    /// The last lines of every log, for a failure message.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for p in self.metas.iter().chain(&self.nodes) {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let tail: Vec<_> = text.lines().rev().take(12).collect();
            all.push_str(&format!("--- {} ---\n", p.log.display()));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::env::var_os("CHAOS_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}")));
            eprintln!("chaos: kept {}", kept.keep().display());
        }
        for p in self.metas.iter_mut().chain(self.nodes.iter_mut()) {
            if p.frozen {
                let _ = Self::signal(p, libc::SIGCONT);
            }
            Self::reap(p);
        }
    }
}

/// Every PG has as many replicas as its pool asks for, none recovering.
pub fn is_clean(map: &DataMap) -> bool {
    map.pools
        .iter()
        .all(|pool| pool.pgs.iter().all(|pg| pg.replicas.len() == pool.size as usize && pg.recovering.is_empty()))
}

/// The offset of the first copy of `block` in `file` (a node's disk file,
/// see [`TestCluster::disk_file`]) at a multiple of its length, which
/// must divide 1 MiB: for tests that damage a block where the node cannot
/// see it.
pub fn find_block(file: &Path, block: &[u8]) -> anyhow::Result<Option<u64>> {
    use std::io::Read;
    let size = block.len();
    let mut f = std::fs::File::open(file)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut base = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = f.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(None);
        }
        for (i, b) in buf[..filled].chunks_exact(size).enumerate() {
            if b == block {
                return Ok(Some(base + (i * size) as u64));
            }
        }
        base += filled as u64;
        if filled < buf.len() {
            return Ok(None);
        }
    }
}

/// Overwrites `data.len()` bytes of `file` at `at` and syncs them, for
/// tests that damage a node's disk file behind its back.
pub fn overwrite(file: &Path, at: u64, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file)?;
    f.write_all_at(data, at)?;
    f.sync_all()?;
    Ok(())
}

/// Polls `check` until it returns `Some`; panics after `limit` (for tests).
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
