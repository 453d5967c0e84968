//! Serving one volume on a vhost-user socket: the volume attached under
//! its lease for as long as the server runs, and one VMM connection at a
//! time (vhost-user has one frontend per socket), each with a fresh
//! device; a VMM that disconnects (QEMU restarting, a VM migrated away)
//! can connect again, once the requests of the last connection have
//! ended ([`SETTLE_WAIT`]). Once the server stops (or loses its lease) it
//! accepts no VMM more: one connecting meanwhile is closed at once, not
//! left on a device that answers nothing.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chuyi_client::attach::{self, AttachError};
use chuyi_client::crypt::{volume_cipher, CipherError};
use chuyi_client::metrics::VolumeOpMetrics;
use chuyi_client::qos::Qos;
use chuyi_client::{ClientError, Cluster};
use chuyi_common::sm4::Kek;
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::config::Geometry;
use crate::device::{Device, Served};

/// How a volume is served.
#[derive(Clone, Debug)]
pub struct VhostOptions {
    /// Virtqueues offered; the guest uses up to this many (QEMU's
    /// `num-queues`), each served by its own thread.
    pub queues: u16,
    /// How long the attach lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// Opens encrypted volumes' keys; without it they are refused.
    pub kek: Option<Kek>,
    /// Where the served volume's requests are counted
    /// ([`crate::metrics::register`]); none: not counted.
    pub metrics: Option<Arc<VolumeOpMetrics>>,
}

/// How long a new VMM connection waits for the last one's requests to
/// end: a write of the last connection landing after the new one's
/// writes would undo them. More than a cluster call's retries take.
pub const SETTLE_WAIT: Duration = Duration::from_secs(60);

/// Queues offered unless told otherwise.
pub const QUEUES: u16 = 4;
/// Most queues one device offers (one worker thread each).
pub const MAX_QUEUES: u16 = 64;

impl Default for VhostOptions {
    fn default() -> Self {
        Self { queues: QUEUES, lease_ttl: Duration::from_secs(30), kek: None, metrics: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    #[error("opening the volume: {0}")]
    Open(#[from] ClientError),
    #[error(transparent)]
    Key(#[from] CipherError),
    #[error("attaching the volume: {0}")]
    Attach(#[from] AttachError),
    #[error("the socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("vhost-user: {0}")]
    Daemon(String),
    #[error("the attach lease of volume {0:?} could not be kept; its VMM was disconnected")]
    LeaseLost(String),
}

/// Serves `volume` at `socket` until `stop` resolves or the lease is lost
/// (then the VMM's connection is closed and this returns an error) or the
/// listener fails; the lease is given back before it returns. `holder`
/// names this frontend in the lease.
pub async fn serve(
    cluster: Arc<Cluster>,
    volume: &str,
    holder: &str,
    socket: &Path,
    options: VhostOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), VhostError> {
    let listener = chuyi_common::unix_socket::bind(socket)?;
    tracing::info!(volume, socket = %socket.display(), "vhost-user socket bound");
    let outcome = serve_on(cluster, volume, holder, listener, options, stop).await;
    let _ = std::fs::remove_file(socket);
    outcome
}

/// [`serve`] on a bound socket.
async fn serve_on(
    cluster: Arc<Cluster>,
    volume: &str,
    holder: &str,
    listener: UnixListener,
    options: VhostOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), VhostError> {
    let vol = cluster.open_volume(volume).await?;
    let crypt = volume_cipher(options.kek.as_ref(), vol.volume())?.map(Arc::new);
    let geometry = Geometry {
        size: vol.size(),
        block: if crypt.is_some() { 4096 } else { 512 },
        queues: options.queues.clamp(1, MAX_QUEUES),
        read_only: false,
    };
    let lease = attach::attach(&cluster, vol, holder, options.lease_ttl).await?;
    let metrics =
        options.metrics.as_ref().map(|m| Arc::new(m.volume(volume, &crate::metrics::OP_NAMES, crypt.is_some())));
    let served = Served { vol: lease.vol.clone(), fence: lease.fence.clone(), crypt, metrics };
    tracing::info!(volume, queues = geometry.queues, "serving over vhost-user-blk");
    let qos = Qos::start(cluster.clone());
    let connected: Arc<Mutex<Connected>> = Arc::default();
    let runtime = tokio::runtime::Handle::current();
    let address = listener.local_addr()?;
    // A thread of its own, not the runtime's blocking pool: it sits in
    // accept(2), and a runtime shutting down waits for its blocking tasks.
    let (ended, accepting) = tokio::sync::oneshot::channel();
    {
        let connected = connected.clone();
        std::thread::Builder::new().name("vhost-accept".into()).spawn(move || {
            let _ = ended.send(connections(listener, served, geometry, runtime, qos, &connected));
        })?;
    }
    let outcome = tokio::select! {
        () = lease.fence.closed() => Err(VhostError::LeaseLost(volume.to_string())),
        () = stop => Ok(()),
        ended = accepting => ended.unwrap_or_else(|_| Err(VhostError::Daemon("the accepting thread ended".into()))),
    };
    // The VMM loses its disk before the lease goes: nothing it sends
    // after this is served, and no VMM is accepted any more (the
    // accepting thread is woken by a connection of our own, and ends).
    lease.fence.lost();
    {
        let mut connected = connected.lock().unwrap_or_else(|p| p.into_inner());
        connected.stopping = true;
        if let Some(connection) = connected.handle.take() {
            connection.shutdown();
        }
    }
    if let Some(path) = address.as_pathname() {
        let _ = tokio::time::timeout(Duration::from_secs(1), tokio::net::UnixStream::connect(path)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), lease.release(&cluster, holder)).await;
    outcome
}

/// The VMM connection being served, and whether the server is stopping.
#[derive(Default)]
struct Connected {
    handle: Option<vhost_user_backend::ShutdownHandle>,
    stopping: bool,
}

/// Serves one VMM connection after another, until the server stops.
fn connections(
    listener: UnixListener,
    served: Served,
    geometry: Geometry,
    runtime: tokio::runtime::Handle,
    qos: Arc<Qos>,
    connected: &Mutex<Connected>,
) -> Result<(), VhostError> {
    let mut listener = Listener::from(listener);
    loop {
        let device = Arc::new(Device::new(served.clone(), geometry, runtime.clone(), qos.clone()));
        let memory = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new("chuyi-vhost".into(), device.clone(), memory)
            .map_err(|e| VhostError::Daemon(e.to_string()))?;
        daemon.start(&mut listener).map_err(|e| VhostError::Daemon(e.to_string()))?;
        {
            // Under the lock the stop takes too: either the stop sees this
            // connection and closes it, or this sees the stop.
            let mut connected = connected.lock().unwrap_or_else(|p| p.into_inner());
            if connected.stopping {
                return Ok(());
            }
            connected.handle = daemon.shutdown_handle();
        }
        tracing::info!("a VMM connected");
        match daemon.wait() {
            Ok(()) => tracing::info!("the VMM disconnected"),
            Err(e) => tracing::warn!(error = %e, "the VMM's connection failed"),
        }
        // Dropping the daemon stops its queue threads.
        connected.lock().unwrap_or_else(|p| p.into_inner()).handle = None;
        drop(daemon);
        let left = device.settle(SETTLE_WAIT);
        if left > 0 {
            tracing::warn!(left, "requests of the last VMM connection still run; serving the next one anyway");
        }
    }
}
