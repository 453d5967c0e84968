//! The virtio-blk device: rust-vmm's vhost-user backend for one served
//! volume.
//!
//! Each virtqueue has its own worker thread (the daemon's epoll loop): it
//! takes the guest's kick, pops every available chain, checks it
//! ([`crate::request`]) and hands it to the tokio runtime, which serves it
//! through chuyi-client. The task that finishes a request writes its data
//! and status into guest memory, puts it on the used ring and signals the
//! guest itself, so a completion waits for no other thread. Requests run
//! concurrently, as many as the guest keeps in its queues; virtio lets
//! them complete in any order.
//!
//! A request is served only while the volume's fence holds: once the
//! attach lease may be lost, requests in flight are dropped unanswered
//! (the guest sees them time out, as after a disconnect) and the server
//! closes the connection ([`crate::server`]).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chuyi_client::attach::Fence;
use chuyi_client::metrics::VolumeSeries;
use chuyi_client::qos::{pace_volume, Limiter, Qos, VolumeLimiter};
use chuyi_client::{crypt, VolumeIo};
use chuyi_common::sm4::Sm4Xts;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{Bytes as _, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier};

use crate::config::{self, Geometry};
use crate::request::{self, Op, Request, Segment, S_IOERR, S_OK};

/// Guest memory as the daemon maps it (no dirty-page log: no live
/// migration of the device's state yet).
pub type Memory = GuestMemoryMmap<()>;
type Vring = VringRwLock<GuestMemoryAtomic<Memory>>;

/// How long a vring stop waits for its requests in flight.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// What serving a volume needs: its I/O under the lease, the fence, and
/// its key when it is encrypted.
#[derive(Clone, Debug)]
pub struct Served {
    pub vol: VolumeIo,
    pub fence: Arc<Fence>,
    pub crypt: Option<Arc<Sm4Xts>>,
    /// The volume's counters, when the frontend counts.
    pub metrics: Option<Arc<VolumeSeries>>,
}

/// One volume's virtio-blk device, for one vhost-user connection.
pub struct Device {
    served: Served,
    geometry: Geometry,
    runtime: tokio::runtime::Handle,
    mem: Mutex<Option<GuestMemoryAtomic<Memory>>>,
    event_idx: AtomicBool,
    /// Requests handed to the runtime and not yet answered, per queue.
    in_flight: Vec<Arc<AtomicUsize>>,
    /// The volume's QoS limiter, cached per queue: each queue's thread
    /// takes only its own lock.
    limiters: Vec<VolumeLimiter>,
    /// What GET_ID answers: made once, not per request.
    serial: [u8; request::ID_BYTES],
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let volume = &self.served.vol.volume().name;
        f.debug_struct("Device").field("volume", volume).field("geometry", &self.geometry).finish_non_exhaustive()
    }
}

impl Device {
    pub fn new(served: Served, geometry: Geometry, runtime: tokio::runtime::Handle, qos: Arc<Qos>) -> Self {
        let in_flight = (0..geometry.queues).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let volume = served.vol.volume();
        let serial = request::serial(&volume.name);
        let limiters =
            (0..geometry.queues).map(|_| VolumeLimiter::new(qos.clone(), &volume.name, &volume.pool)).collect();
        Self {
            served,
            geometry,
            runtime,
            mem: Mutex::new(None),
            event_idx: AtomicBool::new(false),
            in_flight,
            limiters,
            serial,
        }
    }

    /// Pops every chain queue `queue` has available and starts serving it.
    fn drain(&self, vring: &Vring, mem: &Arc<Memory>, queue: usize) {
        loop {
            let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(mem.clone());
            let Some(chain) = chain else { return };
            let head = chain.head_index();
            let segments: Vec<Segment> =
                chain.map(|d| Segment { addr: d.addr(), len: d.len(), writable: d.is_write_only() }).collect();
            let done = Completion {
                vring: vring.clone(),
                mem: mem.clone(),
                head,
                event_idx: self.event_idx.load(Ordering::Acquire),
                _counted: InFlight::count(&self.in_flight[queue]),
            };
            match request::parse(&**mem, &segments, &self.geometry) {
                Err(refused) => {
                    tracing::debug!(why = refused.why, status = refused.status, "virtio-blk request refused");
                    if let Some(metrics) = &self.served.metrics {
                        metrics.served(crate::metrics::REFUSED, 0, false, 0.0);
                    }
                    done.finish(refused.at.map(|at| (at, refused.status)), 0);
                }
                Ok(req) => {
                    let (served, limiter) = (self.served.clone(), self.limiters[queue].get());
                    self.runtime.spawn(serve(served, limiter, req, self.serial, done));
                }
            }
        }
    }
}

/// Serves one request and completes it, unless the fence closes first.
async fn serve(
    served: Served,
    limiter: Option<Arc<Limiter>>,
    req: Request,
    id: [u8; request::ID_BYTES],
    done: Completion,
) {
    if !served.fence.holds() {
        return;
    }
    let fence = served.fence.clone();
    // Timed from here, as NBD times its requests: QoS waits are not the
    // cluster's latency.
    pace(limiter, &req.op).await;
    let started = std::time::Instant::now();
    let outcome = tokio::select! {
        biased;
        () = fence.closed() => return,
        outcome = execute(&served, &req, &id, &done.mem) => outcome,
    };
    if let Some(metrics) = &served.metrics {
        let (op, bytes) = crate::metrics::counted(&req.op);
        metrics.served(op, bytes, outcome.is_ok(), started.elapsed().as_secs_f64());
    }
    let (status, written) = match outcome {
        Ok(written) => (S_OK, written),
        Err(e) => {
            tracing::warn!(error = %e, "virtio-blk request failed");
            (S_IOERR, 0)
        }
    };
    done.finish(Some((req.status, status)), written);
}

/// Why a request failed: the guest sees IOERR either way.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error(transparent)]
    Client(#[from] chuyi_client::ClientError),
    #[error("a data buffer lies outside guest memory")]
    Memory,
}

/// Waits for `op`'s turn under the volume's QoS rule, if it has one.
async fn pace(limiter: Option<Arc<Limiter>>, op: &Op) {
    match op {
        Op::Read { len, .. } => pace_volume(limiter, true, *len).await,
        Op::Write { len, .. } => pace_volume(limiter, false, *len).await,
        Op::Zero { ranges } => {
            for _ in ranges {
                pace_volume(limiter.clone(), false, 0).await;
            }
        }
        Op::Flush | Op::GetId => {}
    }
}

/// Does what `req` asks; answers the bytes it wrote into guest buffers.
async fn execute(served: &Served, req: &Request, id: &[u8], mem: &Memory) -> Result<u32, Failed> {
    match &req.op {
        Op::Read { offset, len } => {
            let data = served.vol.read(*offset, *len).await?;
            let data = match &served.crypt {
                Some(xts) => crypt::decrypt(xts, *offset, data),
                None => data,
            };
            request::scatter(mem, &req.data, &data).map(|n| n as u32).ok_or(Failed::Memory)
        }
        Op::Write { offset, .. } => {
            let mut data = request::gather(mem, &req.data).ok_or(Failed::Memory)?;
            if let Some(xts) = &served.crypt {
                crypt::encrypt(xts, *offset, &mut data);
            }
            // virtio has no FUA: the guest flushes (the device says it
            // caches writes).
            served.vol.write(*offset, Bytes::from(data), false).await?;
            Ok(0)
        }
        Op::Flush => {
            served.vol.flush().await?;
            Ok(0)
        }
        Op::GetId => request::scatter(mem, &req.data, id).map(|n| n as u32).ok_or(Failed::Memory),
        Op::Zero { ranges } => {
            for &(offset, len) in ranges {
                served.vol.zero(offset, len, false).await?;
            }
            Ok(0)
        }
    }
}

/// One popped chain's way back to the guest.
struct Completion {
    vring: Vring,
    mem: Arc<Memory>,
    head: u16,
    event_idx: bool,
    _counted: InFlight,
}

impl Completion {
    /// Writes the status (when the chain has a place for it), puts the
    /// chain on the used ring with the bytes written into it (`written`
    /// plus the status byte) and signals the guest if it asked to be.
    fn finish(self, status: Option<(GuestAddress, u8)>, written: u32) {
        let mut used = written;
        if let Some((at, status)) = status {
            if self.mem.write_obj(status, at).is_ok() {
                used += 1;
            }
        }
        if let Err(e) = self.vring.add_used(self.head, used) {
            tracing::warn!(error = ?e, "could not put a request on the used ring");
            return;
        }
        let notify = !self.event_idx || self.vring.needs_notification().unwrap_or(true);
        if notify {
            if let Err(e) = self.vring.signal_used_queue() {
                tracing::debug!(error = %e, "could not signal the guest");
            }
        }
    }
}

/// A request counted in its queue's [`Device::in_flight`] until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn count(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl VhostUserBackend for Device {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        usize::from(self.geometry.queues)
    }

    fn max_queue_size(&self) -> usize {
        usize::from(config::QUEUE_SIZE)
    }

    fn features(&self) -> u64 {
        config::features(&self.geometry)
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        config::protocol_features()
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Release);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        config::config_read(&self.geometry, offset, size)
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<Memory>) -> io::Result<()> {
        *self.mem.lock().unwrap_or_else(|p| p.into_inner()) = Some(mem);
        Ok(())
    }

    /// One worker thread per queue: queue `i` is served by thread `i`.
    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.geometry.queues).map(|i| 1u64 << i).collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    /// The guest (or QEMU, stopping the VM) takes the queue back: its
    /// requests in flight finish first, so none lands on a ring the guest
    /// has reused.
    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        let Some(counter) = self.in_flight.get(queue_index as usize) else { return Ok(()) };
        let start = std::time::Instant::now();
        while counter.load(Ordering::Acquire) > 0 {
            if start.elapsed() > STOP_WAIT {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "requests still in flight"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn handle_event(&self, device_event: u16, evset: EventSet, vrings: &[Vring], thread_id: usize) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unexpected event {evset:?}")));
        }
        let Some(vring) = vrings.get(usize::from(device_event)) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("no queue for event {device_event}")));
        };
        let Some(mem) = self.mem.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|m| m.memory().into_inner())
        else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a kick before the guest's memory"));
        };
        // Thread i serves queue i alone (see `queues_per_thread`).
        let queue = thread_id;
        if !self.event_idx.load(Ordering::Acquire) {
            self.drain(vring, &mem, queue);
            return Ok(());
        }
        // With event suppression: no kicks while draining, then look once
        // more after turning them back on (a chain may have come between).
        loop {
            vring.disable_notification().map_err(io::Error::other)?;
            self.drain(vring, &mem, queue);
            if !vring.enable_notification().map_err(io::Error::other)? {
                return Ok(());
            }
        }
    }
}
