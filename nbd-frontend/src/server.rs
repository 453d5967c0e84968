//! The NBD server: accepts connections (TCP or Unix socket), one task per
//! connection, and the volumes attached for them under their leases.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chuyi_client::{Cluster, VolumeIo};
use chuyi_common::sm4::{open_volume_key, Kek, Sm4Xts};
use chuyi_metadata::state::model::VolumeState;
use chuyi_metadata::state::{Command, MetaError, Reply};
use tokio::io::{AsyncRead, AsyncWrite, BufReader, BufWriter};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::AbortHandle;

use crate::lease::{self, Fence};
use crate::proto::*;
use crate::transmission::{transmission, Session};

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
}

impl Default for NbdOptions {
    fn default() -> Self {
        Self { lease_ttl: LEASE_TTL, kek: None }
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

/// A volume served by this frontend, with the attach lease it holds for as
/// long as any connection uses it.
#[derive(Debug)]
struct Attachment {
    served: Served,
    connections: usize,
    lease_id: u64,
    renew: AbortHandle,
}

#[derive(Debug)]
pub struct NbdServer {
    cluster: Arc<Cluster>,
    /// The lease holder name of this frontend.
    holder: String,
    options: NbdOptions,
    attached: Mutex<HashMap<String, Attachment>>,
}

impl NbdServer {
    pub fn new(cluster: Arc<Cluster>, holder: String) -> Arc<Self> {
        Self::with_options(cluster, holder, NbdOptions::default())
    }

    pub fn with_options(cluster: Arc<Cluster>, holder: String, options: NbdOptions) -> Arc<Self> {
        Arc::new(Self { cluster, holder, options, attached: Mutex::new(HashMap::new()) })
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

    /// [`Self::serve`] on a Unix socket.
    pub async fn serve_unix(self: Arc<Self>, listener: UnixListener) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let (r, w) = stream.into_split();
            self.clone().spawn_connection(r, w, "unix".into());
        }
    }

    /// Binds a Unix socket at `path`, replacing a stale socket file left by
    /// an earlier run.
    pub fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        UnixListener::bind(path)
    }

    fn spawn_connection<R, W>(self: Arc<Self>, r: R, w: W, peer: String)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
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
        let (mut r, mut w) = (BufReader::new(r), BufWriter::new(w));
        let Some((name, negotiated)) = self.handshake(&mut r, &mut w).await? else { return Ok(()) };
        let Some(served) = self.attached(&name) else {
            return Err(NbdError::Protocol("export vanished".into()));
        };
        let session = Session { structured: negotiated.structured, allocation: negotiated.allocation(&name) };
        let result = transmission(served, session, r, w).await;
        self.detach(&name).await;
        result
    }

    fn attached(&self, name: &str) -> Option<Served> {
        self.lock().get(name).map(|a| a.served.clone())
    }

    /// Opens `name` for a connection, taking the volume's attach lease if
    /// this frontend does not hold it yet. Refused while another holds it,
    /// and for an encrypted volume whose key this frontend cannot open.
    pub(crate) async fn attach(&self, name: &str) -> Result<VolumeIo, (u32, String)> {
        if let Some(a) = self.lock().get_mut(name).filter(|a| a.served.fence.holds()) {
            a.connections += 1;
            return Ok(a.served.vol.clone());
        }
        let vol = match self.cluster.open_volume(name).await {
            Ok(vol) => vol,
            Err(e) => return Err((REP_ERR_UNKNOWN, e.to_string())),
        };
        let crypt = self.volume_key(&vol)?;
        let meta = self.cluster.meta();
        let ttl = self.options.lease_ttl;
        let acquire =
            Command::AcquireLease { volume: name.into(), holder: self.holder.clone(), ttl_ms: ttl.as_millis() as u64 };
        let sent = Instant::now();
        let lease = match meta.write(acquire).await {
            Ok(Reply::Lease(lease)) => lease,
            Ok(other) => return Err((REP_ERR_UNKNOWN, format!("unexpected reply {other:?}"))),
            Err(MetaError::NotFound { .. }) => return Err((REP_ERR_UNKNOWN, format!("no volume {name:?}"))),
            Err(e @ MetaError::LeaseHeld { .. }) => return Err((REP_ERR_POLICY, e.to_string())),
            Err(e) => return Err((REP_ERR_SHUTDOWN, e.to_string())),
        };
        let mut attached = self.lock();
        // Another connection may have attached it meanwhile: share that,
        // unless its lease was lost (a fresh one was just taken).
        if attached.get(name).is_some_and(|a| !a.served.fence.holds()) {
            if let Some(stale) = attached.remove(name) {
                stale.renew.abort();
            }
        }
        let entry = attached.entry(name.to_string()).or_insert_with(|| {
            let fence = Fence::new(sent, ttl);
            let renew = tokio::spawn(lease::renew(
                self.cluster.clone(),
                name.to_string(),
                self.holder.clone(),
                lease.id,
                ttl,
                fence.clone(),
            ));
            let served = Served { vol, fence, crypt };
            Attachment { served, connections: 0, lease_id: lease.id, renew: renew.abort_handle() }
        });
        entry.connections += 1;
        Ok(entry.served.vol.clone())
    }

    /// The key of an encrypted volume, opened with this frontend's KEK.
    fn volume_key(&self, vol: &VolumeIo) -> Result<Option<Arc<Sm4Xts>>, (u32, String)> {
        let volume = vol.volume();
        if volume.state == VolumeState::KeyDestroyed {
            return Err((REP_ERR_POLICY, format!("volume {:?}'s key was destroyed: it is being deleted", volume.name)));
        }
        if volume.wrapped_key.is_empty() {
            return Ok(None);
        }
        match open_volume_key(self.options.kek.as_ref(), &volume.name, &volume.wrapped_key) {
            Ok(xts) => Ok(Some(Arc::new(xts))),
            Err(e) => {
                tracing::error!(volume = volume.name, error = %e, "refusing an encrypted volume");
                Err((REP_ERR_POLICY, e.to_string()))
            }
        }
    }

    async fn detach(&self, name: &str) {
        let released = {
            let mut attached = self.lock();
            let Some(a) = attached.get_mut(name) else { return };
            a.connections = a.connections.saturating_sub(1);
            if a.connections > 0 {
                return;
            }
            attached.remove(name).map(|a| {
                a.renew.abort();
                a.lease_id
            })
        };
        if let Some(lease_id) = released {
            let release = Command::ReleaseLease { volume: name.into(), holder: self.holder.clone(), lease_id };
            if let Err(e) = self.cluster.meta().write(release).await {
                tracing::warn!(volume = name, error = %e, "releasing the attach lease failed; it expires by itself");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attachment>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }
}
