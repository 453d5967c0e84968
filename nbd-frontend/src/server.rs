//! The NBD server: accepts connections (TCP or Unix socket), one task per
//! connection, and the volumes attached for them under their leases.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chuyi_client::crypt::volume_cipher;
use chuyi_client::{Cluster, VolumeIo};
use chuyi_common::sm4::{Kek, Sm4Xts};
use chuyi_meta_api::MetaError;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, BufWriter};
use tokio::net::{TcpListener, UnixListener};

use crate::lease::{self, AttachError, Fence, Lease};
use crate::proto::*;
use crate::transmission::{transmission, Session, Shared};

/// How long an attach lease lasts unless renewed.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("the attach lease of volume {0:?} could not be kept; the connection is closed")]
    LeaseLost(String),
}

/// How a frontend serves.
#[derive(Clone, Debug)]
pub struct NbdOptions {
    /// How long an attach lease lasts unless renewed (tests shorten it).
    pub lease_ttl: Duration,
    /// The master key that opens encrypted volumes' keys; without it they
    /// are refused.
    pub kek: Option<Kek>,
    /// How long a client has from connecting to the end of the handshake
    /// (its export chosen and attached); a silent one is closed then.
    pub handshake_timeout: Duration,
    /// Connections open at most (over TCP and the Unix socket); past it a
    /// new one is closed at once.
    pub max_connections: usize,
    /// Connections to one export at most; past it an attach is refused
    /// (NBD_REP_ERR_POLICY).
    pub max_per_export: usize,
    /// How long an attached connection may send no request before it is
    /// closed; none (the default): VMs may idle for days.
    pub idle_timeout: Option<Duration>,
    /// MiB of request data held at once over every connection (each one
    /// holds at most 256 of its own); past it requests wait.
    pub memory_budget_mib: u32,
    /// Where the frontend counts for Prometheus (metrics.rs); none:
    /// nothing counted.
    pub metrics: Option<Arc<crate::metrics::NbdMetrics>>,
}

/// The default handshake time: qemu and nbdinfo finish in milliseconds;
/// room for an attach that waits on the metadata service.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The default cap on connections: far above the VMs one frontend serves,
/// far below the files it may open.
pub const MAX_CONNECTIONS: usize = 4096;
/// The default cap per export: qemu opens one per disk, or up to a few
/// dozen with multi-conn.
pub const MAX_PER_EXPORT: usize = 64;
/// The default memory budget over every connection, in MiB.
pub const MEMORY_BUDGET_MIB: u32 = 1024;
/// A connection's reply buffer: replies queued together leave in one
/// syscall, seven 4 KiB reads' worth (the default 8 KiB held under two);
/// 128 MiB at the connection cap.
const REPLY_BUF_BYTES: usize = 32 * 1024;

impl Default for NbdOptions {
    fn default() -> Self {
        Self {
            lease_ttl: LEASE_TTL,
            kek: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_per_export: MAX_PER_EXPORT,
            idle_timeout: None,
            memory_budget_mib: MEMORY_BUDGET_MIB,
            metrics: None,
        }
    }
}

/// What a connection needs of the volume it serves.
#[derive(Clone, Debug)]
pub(crate) struct Served {
    pub vol: VolumeIo,
    pub fence: Arc<Fence>,
    /// The volume's key when it is encrypted.
    pub crypt: Option<Arc<Sm4Xts>>,
}

impl Served {
    /// A snapshot's export: reads only.
    pub fn read_only(&self) -> bool {
        self.vol.snapshot().is_some()
    }
}

/// A volume served by this frontend, with the attach lease it holds for as
/// long as any connection uses it.
#[derive(Debug)]
struct Attachment {
    served: Served,
    connections: usize,
    lease: Lease,
    /// Tells this attachment from a later one of the same volume (after a
    /// lost lease), so a closing connection of the old one never counts
    /// down the new one.
    generation: u64,
}

/// One connection's hold on an attachment; dropping it detaches, however
/// the connection ended (even mid-handshake).
#[derive(Debug)]
pub(crate) struct Attached {
    server: Arc<NbdServer>,
    pub name: String,
    generation: u64,
    pub served: Served,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.server.detach(&self.name, self.generation);
    }
}

#[derive(Debug)]
pub struct NbdServer {
    cluster: Arc<Cluster>,
    /// The lease holder name of this frontend.
    holder: String,
    options: NbdOptions,
    attached: Mutex<HashMap<String, Attachment>>,
    /// Held across a first attach (see [`Self::attach`]).
    attaching: tokio::sync::Mutex<()>,
    generations: AtomicU64,
    /// Connections open now.
    connections: AtomicUsize,
    /// What every connection shares: the memory budget, the idle timeout.
    shared: Shared,
}

/// One open connection's place in [`NbdServer::connections`].
struct Counted(Arc<NbdServer>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl NbdServer {
    pub fn new(cluster: Arc<Cluster>, holder: String) -> Arc<Self> {
        Self::with_options(cluster, holder, NbdOptions::default())
    }

    pub fn with_options(cluster: Arc<Cluster>, holder: String, options: NbdOptions) -> Arc<Self> {
        let qos = chuyi_client::qos::Qos::start(cluster.clone());
        let metrics = options.metrics.clone();
        let server = Arc::new(Self {
            cluster: cluster.clone(),
            holder,
            attached: Mutex::new(HashMap::new()),
            attaching: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            shared: Shared {
                budget: Arc::new(tokio::sync::Semaphore::new(options.memory_budget_mib.max(1) as usize)),
                budget_mib: options.memory_budget_mib.max(1),
                idle_timeout: options.idle_timeout,
                qos: qos.clone(),
                metrics: metrics.clone(),
            },
            options,
        });
        if let Some(m) = metrics {
            let _ = m.server.set(Arc::downgrade(&server));
            let _ = m.qos.set(qos);
        }
        server
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Accepts TCP connections until the listener fails; each is served on
    /// its own task, and one client's error never touches another's.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let (r, w) = stream.into_split();
            self.clone().spawn_connection(r, w, peer.to_string());
        }
    }

    /// [`Self::serve`] on a Unix socket, watched for reading only (see
    /// [`chuyi_common::unix_stream`]: a client's reads do not wake us).
    pub async fn serve_unix(self: Arc<Self>, listener: UnixListener) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            match chuyi_common::unix_stream::split(stream) {
                Ok((r, w)) => self.clone().spawn_connection(r, w, "unix".into()),
                // Out of descriptors or epoll watches: this client only.
                Err(e) => tracing::warn!(error = %e, "cannot watch a unix connection; dropped"),
            }
        }
    }

    /// Binds a Unix socket at `path` for [`Self::serve_unix`]: see
    /// [`chuyi_common::unix_socket::bind`] (mode 0660, stale replaced).
    pub fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
        let listener = chuyi_common::unix_socket::bind(path)?;
        listener.set_nonblocking(true)?;
        UnixListener::from_std(listener)
    }

    fn spawn_connection<R, W>(self: Arc<Self>, r: R, w: W, peer: String)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let open = self.connections.fetch_add(1, Ordering::AcqRel);
        let counted = Counted(self.clone());
        if open >= self.options.max_connections {
            tracing::debug!(%peer, open, "nbd connection refused: at the cap");
            return;
        }
        tokio::spawn(async move {
            let _counted = counted;
            if let Err(e) = self.connection(r, w).await {
                tracing::debug!(%peer, error = %e, "nbd connection ended");
            }
        });
    }

    async fn connection<R, W>(self: Arc<Self>, r: R, w: W) -> Result<(), NbdError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (mut r, mut w) = (BufReader::new(r), BufWriter::with_capacity(REPLY_BUF_BYTES, w));
        let limit = self.options.handshake_timeout;
        let handshake = tokio::time::timeout(limit, self.handshake(&mut r, &mut w)).await;
        let Ok(handshake) = handshake else {
            return Err(NbdError::Protocol(format!("no handshake within {limit:?}")));
        };
        let Some((attached, negotiated)) = handshake? else { return Ok(()) };
        let session = Session { structured: negotiated.structured, allocation: negotiated.allocation(&attached.name) };
        // `attached` detaches when the connection ends, however it ends.
        transmission(attached.served.clone(), session, self.shared.clone(), r, w).await
    }

    /// Opens `name` for a connection, taking the volume's attach lease if
    /// this frontend does not hold it yet. Refused while another holds it,
    /// and for an encrypted volume whose key this frontend cannot open.
    pub(crate) async fn attach(self: &Arc<Self>, name: &str) -> Result<Attached, (u32, String)> {
        if let Some((volume, snapshot)) = name.split_once('@') {
            return self.attach_snapshot(name, volume, snapshot).await;
        }
        if let Some(attached) = self.join(name)? {
            return Ok(attached);
        }
        // One first attach at a time: two connections racing to attach one
        // volume must not each take a lease (the second replaces the first).
        let _attaching = self.attaching.lock().await;
        if let Some(attached) = self.join(name)? {
            return Ok(attached);
        }
        let vol = match self.cluster.open_volume(name).await {
            Ok(vol) => vol,
            Err(e) => return Err((REP_ERR_UNKNOWN, e.to_string())),
        };
        let crypt = self.volume_key(&vol)?;
        let lease = match lease::attach(&self.cluster, vol, &self.holder, self.options.lease_ttl).await {
            Ok(lease) => lease,
            Err(AttachError::Refused(e)) => return Err((attach_refused(&e), e.to_string())),
            Err(e @ AttachError::Fence(_)) => {
                tracing::error!(volume = name, error = %e, "not attached");
                return Err((REP_ERR_SHUTDOWN, e.to_string()));
            }
        };
        let served = Served { vol: lease.vol.clone(), fence: lease.fence.clone(), crypt };
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let attachment = Attachment { served: served.clone(), connections: 1, lease, generation };
        // An entry still here has lost its lease (else `join` took it): its
        // connections are closing, and detach by generation leaves this one be.
        if let Some(stale) = self.lock().insert(name.to_string(), attachment) {
            stale.lease.abandon();
        }
        Ok(Attached { server: self.clone(), name: name.to_string(), generation, served })
    }

    /// Serves snapshot `snapshot` of `volume` (export `name`), read-only:
    /// a snapshot never changes, so it takes no lease and shares nothing
    /// with the volume's attachment. An encrypted volume's snapshot is
    /// deciphered with the volume's key.
    async fn attach_snapshot(
        self: &Arc<Self>,
        name: &str,
        volume: &str,
        snapshot: &str,
    ) -> Result<Attached, (u32, String)> {
        let vol = match self.cluster.open_volume(volume).await {
            Ok(vol) => vol,
            Err(e) => return Err((REP_ERR_UNKNOWN, e.to_string())),
        };
        let found = match chuyi_client::snapshot::find(&self.cluster, volume, snapshot).await {
            Ok(found) => found,
            Err(e) => return Err((REP_ERR_UNKNOWN, e.to_string())),
        };
        let vol = vol.at_snapshot(found.id);
        let crypt = self.volume_key(&vol)?;
        let fence = Fence::forever();
        let (cluster, clone, weak) = (self.cluster.clone(), vol.is_clone(), Arc::downgrade(&fence));
        let watch = lease::watch_snapshot(cluster, volume.to_string(), found.id, clone, weak);
        tokio::spawn(watch);
        let served = Served { vol, fence, crypt };
        // No attachment to count: detach finds none under this generation.
        Ok(Attached { server: self.clone(), name: name.to_string(), generation: u64::MAX, served })
    }

    /// Joins this frontend's attachment of `name` while its lease holds
    /// (none: there is none to join), unless it has its most connections.
    fn join(self: &Arc<Self>, name: &str) -> Result<Option<Attached>, (u32, String)> {
        let mut attached = self.lock();
        let Some(a) = attached.get_mut(name).filter(|a| a.served.fence.holds()) else { return Ok(None) };
        if a.connections >= self.options.max_per_export {
            let max = self.options.max_per_export;
            return Err((REP_ERR_POLICY, format!("export {name:?} holds its maximum of {max} connections")));
        }
        a.connections += 1;
        Ok(Some(Attached {
            server: self.clone(),
            name: name.to_string(),
            generation: a.generation,
            served: a.served.clone(),
        }))
    }

    /// The key of an encrypted volume, opened with this frontend's KEK.
    fn volume_key(&self, vol: &VolumeIo) -> Result<Option<Arc<Sm4Xts>>, (u32, String)> {
        volume_cipher(self.options.kek.as_ref(), vol.volume()).map(|c| c.map(Arc::new)).map_err(|e| {
            tracing::error!(volume = vol.volume().name, error = %e, "refusing an encrypted volume");
            (REP_ERR_POLICY, e.to_string())
        })
    }

    /// One connection of attachment `generation` of `name` is done; the
    /// last one releases the lease (in the background: this runs on drop).
    fn detach(self: &Arc<Self>, name: &str, generation: u64) {
        let mut attached = self.lock();
        let Some(a) = attached.get_mut(name).filter(|a| a.generation == generation) else { return };
        a.connections = a.connections.saturating_sub(1);
        if a.connections > 0 {
            return;
        }
        let Some(a) = attached.remove(name) else { return };
        drop(a.lease.release(&self.cluster, &self.holder));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attachment>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The NBD error a client gets when the metadata service refuses to attach
/// a volume: every refusal by name, so a new one must be placed here.
/// NBD has few codes: UNKNOWN for an export that is not there, POLICY for
/// one the client may not have now, SHUTDOWN for trouble on the server's
/// side, which a client may retry.
fn attach_refused(e: &MetaError) -> u32 {
    match e {
        MetaError::NotFound { .. } => REP_ERR_UNKNOWN,
        MetaError::LeaseHeld { .. } | MetaError::StaleLease { .. } | MetaError::Forbidden { .. } => REP_ERR_POLICY,
        // Refusals no attach causes: a bug or a version mismatch here.
        MetaError::AlreadyExists { .. }
        | MetaError::Invalid { .. }
        | MetaError::KeyLength { .. }
        | MetaError::ConditionFailed { .. }
        | MetaError::Locked { .. }
        | MetaError::BucketState { .. }
        | MetaError::VolumeTooLarge { .. }
        | MetaError::VolumeShrink { .. }
        | MetaError::InUse { .. }
        | MetaError::BucketNotEmpty(_)
        | MetaError::DataNotPending { .. }
        | MetaError::BadUpload { .. }
        | MetaError::UnknownNode(_)
        | MetaError::Malformed(_) => REP_ERR_SHUTDOWN,
        MetaError::Placement(_) | MetaError::NotLeader { .. } | MetaError::Unavailable(_) | MetaError::Internal(_) => {
            REP_ERR_SHUTDOWN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_refusals_are_nbd_errors_by_kind() {
        assert_eq!(attach_refused(&MetaError::not_found(chuyi_meta_api::Kind::Volume, "v")), REP_ERR_UNKNOWN);
        let held = MetaError::LeaseHeld { volume: "v".into(), holder: "nbd-b".into(), expires_ms: 1 };
        assert_eq!(attach_refused(&held), REP_ERR_POLICY);
        assert_eq!(attach_refused(&MetaError::Unavailable("no leader".into())), REP_ERR_SHUTDOWN);
        assert_eq!(attach_refused(&MetaError::Placement("too few nodes".into())), REP_ERR_SHUTDOWN);
    }
}
