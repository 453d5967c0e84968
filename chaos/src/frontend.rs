//! Real `chuyi nbd` frontend processes, and the stale-writer check: a
//! frontend that lost its volume (frozen, or cut off from the metadata
//! service) while it had many large writes in flight and queued, a newer
//! frontend that overwrites the volume and has every write acknowledged,
//! then the old one let go again. Every block must then hold the newer
//! frontend's data, on both replicas.

use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use chuyi_common::ids::ChunkId;
use chuyi_common::proto::chunk::{ChunkErrorKind, ChunkRequest, ChunkResponse, PgOp};
use chuyi_meta_api::ask;
use chuyi_metadata::state::model::Volume;

use crate::cluster::{free_port, TestCluster, CHUNK_SIZE};
use crate::proxy::Proxy;

/// The lease time the frontends here run with: short, so a round is quick.
pub const LEASE_TTL_SECS: u64 = 3;

/// One `chuyi nbd` process, killed when dropped.
#[derive(Debug)]
pub struct Frontend {
    pub addr: String,
    pub log: PathBuf,
    child: Child,
}

impl Frontend {
    /// Starts `chuyi nbd` on a free port, reaching the metadata service at
    /// `meta` (the cluster's members, or a proxy in front of them).
    pub fn start(cluster: &TestCluster, name: &str, meta: &str) -> anyhow::Result<Self> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let log = cluster.dir().join(format!("nbd-{name}.log"));
        let child = cluster
            .frontend_command(&format!("nbd-{name}"), meta)?
            .args(["nbd", "--listen", &addr, "--lease-ttl-secs", &LEASE_TTL_SECS.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning chuyi nbd")?;
        Ok(Self { addr, log, child })
    }

    pub fn uri(&self, volume: &str) -> String {
        format!("nbd://{}/{volume}", self.addr)
    }

    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGSTOP)
    }

    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGCONT)
    }

    fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill(2) with a pid we spawned and still hold the child of.
        let rc = unsafe { libc::kill(pid, signal) };
        ensure!(rc == 0, "kill({pid}, {signal}) failed: {}", std::io::Error::last_os_error());
        Ok(())
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        let _ = self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the old frontend loses its volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// SIGSTOP, as a paused VM host or a long stall: its lease runs out
    /// while it cannot notice.
    Freeze,
    /// Its connections to the metadata service cut: it notices, and must
    /// stop before its lease can run out.
    MetaCut,
}

/// `rounds` of the stale-writer check on `volume` (`volume_mib` MiB, in a
/// clean cluster). Returns a line of what was done, and the old frontends'
/// tokens.
pub async fn stale_writer_rounds(
    cluster: &TestCluster,
    volume: &str,
    volume_mib: u64,
    rounds: usize,
    loss: Loss,
) -> anyhow::Result<(String, Vec<u64>)> {
    let direct = cluster.meta_addrs().join(",");
    let proxy = Proxy::start(cluster.meta_addrs()[0].clone()).await?;
    let mut tokens = Vec::new();
    for round in 0..rounds {
        let pattern = 0xb0 + (round % 0x40) as u8;
        let meta = if loss == Loss::MetaCut { proxy.addr.clone() } else { direct.clone() };
        let old = Frontend::start(cluster, &format!("old-{round}"), &meta)?;
        // The previous round's newer frontend was killed holding its lease:
        // wait for it to run out.
        served_within(&old.uri(volume), Duration::from_secs(30)).await?;
        let mut fio = start_fio(&old.uri(volume))?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Taken while fio's connections keep the volume attached.
        tokens.push(lease_of(cluster, volume).await?.context("the old frontend holds no lease")?);
        match loss {
            Loss::Freeze => old.freeze()?,
            Loss::MetaCut => proxy.cut(),
        }
        let _ = fio.kill();
        let _ = fio.wait();
        tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS) + Duration::from_millis(500)).await;

        let new = Frontend::start(cluster, &format!("new-{round}"), &direct)?;
        served_within(&new.uri(volume), Duration::from_secs(30)).await?;
        let size = volume_mib << 20;
        qemu_io(&new.uri(volume), &format!("write -P {pattern:#x} 0 {size}"), &format!("wrote {size}/{size}"))
            .await
            .context("the newer frontend's overwrite")?;
        match loss {
            Loss::Freeze => old.thaw()?,
            Loss::MetaCut => proxy.heal(),
        }
        // Whatever the old frontend still had queued goes out now, or never.
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(old);
        qemu_io(&new.uri(volume), &format!("read -P {pattern:#x} 0 {size}"), &format!("read {size}/{size}"))
            .await
            .with_context(|| format!("round {round}: a block lost the newer frontend's data"))?;
        check_replicas(cluster, volume, pattern).await.with_context(|| format!("round {round}"))?;
    }
    let refused = check_old_tokens_refused(cluster, volume, &tokens).await?;
    Ok((format!("{rounds} rounds ({loss:?}); every block the newer frontend's on both replicas; {refused}"), tokens))
}

/// fio writing 4 MiB blocks, 128 in flight on each of 4 connections,
/// until killed.
fn start_fio(uri: &str) -> anyhow::Result<Child> {
    Process::new("fio")
        .args(["--name=stale", "--ioengine=nbd", "--rw=randwrite", "--bs=4M", "--iodepth=128", "--numjobs=4"])
        .args(["--time_based", "--runtime=120", "--size=64M"])
        .arg(format!("--uri={uri}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning fio")
}

/// Runs one qemu-io command against `uri`; its output must contain `expect`
/// and no failure.
async fn qemu_io(uri: &str, command: &str, expect: &str) -> anyhow::Result<()> {
    let args = ["-f".to_string(), "raw".into(), uri.into(), "-c".into(), command.into()];
    let out = tokio::task::spawn_blocking(move || Process::new("qemu-io").args(args).output()).await??;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(
        out.status.success() && text.contains(expect) && !text.contains("failed") && !text.contains("error"),
        "qemu-io {command:?}: {text}"
    );
    Ok(())
}

/// Waits until a read through `uri` succeeds (the frontend is up and has
/// the volume's lease).
pub async fn served_within(uri: &str, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if qemu_io(uri, "read 0 4096", "read 4096/4096").await.is_ok() {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("{uri} not served within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn volume_record(cluster: &TestCluster, volume: &str) -> anyhow::Result<Volume> {
    Ok(cluster.meta()?.ask(ask::Volume(volume.into())).await?)
}

/// The id of the volume's live lease: its writer's fencing token.
async fn lease_of(cluster: &TestCluster, volume: &str) -> anyhow::Result<Option<u64>> {
    Ok(volume_record(cluster, volume).await?.lease.map(|l| l.id))
}

/// Both replicas of every chunk of the volume hold `pattern` throughout.
async fn check_replicas(cluster: &TestCluster, volume: &str, pattern: u8) -> anyhow::Result<()> {
    let v = volume_record(cluster, volume).await?;
    let map = cluster.map().await?;
    for index in 0..v.size_bytes.div_ceil(u64::from(CHUNK_SIZE)) {
        let chunk = ChunkId::new(v.id, index);
        let (_, pg) = map.locate(chunk).context("chunk not in the map")?;
        for &replica in &pg.replicas {
            let data = cluster.read_replica(replica, chunk).await?;
            if let Some(at) = data.iter().position(|&b| b != pattern) {
                bail!("chunk {chunk} on node {}: byte {at} is {:#x}, not {pattern:#x}", replica.node, data[at]);
            }
        }
    }
    Ok(())
}

/// Every old frontend's token, and no token at all, are refused by the
/// primary and by the other replica of chunk 0, directly.
pub async fn check_old_tokens_refused(cluster: &TestCluster, volume: &str, tokens: &[u64]) -> anyhow::Result<String> {
    let v = volume_record(cluster, volume).await?;
    let chunk = ChunkId::new(v.id, 0);
    let map = cluster.map().await?;
    let (_, pg) = map.locate(chunk).context("chunk not in the map")?;
    let mut asked = 0;
    for (i, &replica) in pg.replicas.iter().enumerate() {
        let rpc = cluster.node_rpc(replica.node).await?;
        for fence in tokens.iter().map(|&t| Some(t)).chain([None]) {
            let op = PgOp::Write { offset: 0, fua: true, snap: 0 };
            let request = ChunkRequest::Pg { chunk, epoch: pg.epoch, op, forwarded: i > 0, fence, order: None };
            match rpc.call(&request, Bytes::from(vec![0xee; 4096])).await? {
                (ChunkResponse::Error(e), _) if e.kind == ChunkErrorKind::Fenced => asked += 1,
                (other, _) => bail!("node {} took a write under {fence:?}: {other:?}", replica.node),
            }
        }
    }
    Ok(format!("{asked} direct writes under old tokens refused"))
}

/// A raw NBD client through the old-style handshake to `export`
/// (NBD_OPT_EXPORT_NAME): the open stream, the size and the transmission
/// flags the server sent. For tests that hold a connection open, or send
/// requests by hand.
pub async fn export_name(
    addr: std::net::SocketAddr,
    export: &str,
) -> anyhow::Result<(tokio::net::TcpStream, u64, u16)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).await?;
    s.write_u32(3).await?; // fixed newstyle, no zeroes
    s.write_u64(0x4948_4156_454f_5054).await?; // IHAVEOPT
    s.write_u32(1).await?; // EXPORT_NAME
    s.write_u32(u32::try_from(export.len())?).await?;
    s.write_all(export.as_bytes()).await?;
    let size = s.read_u64().await?;
    let flags = s.read_u16().await?;
    Ok((s, size, flags))
}
