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
//!
//! Each queue has an epoch, ended when the VMM takes the queue back
//! (`GET_VRING_BASE`, after its requests had until [`STOP_WAIT`] to
//! finish) and as soon as the connection ends: a request of an ended
//! epoch still running then never writes into guest memory or onto the
//! rings, which the guest may be using for something else by then (QEMU
//! sends again, after it reconnects, what was not answered), and one not
//! yet sent to the cluster is not sent. The bytes the guest's reads and
//! writes hold at once are bounded ([`BUDGET_BYTES`]; a clone's copy-up
//! reads the parent's chunk besides).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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

/// How long a queue's stop waits for its requests in flight. QEMU stops
/// the queues one after another, holding its own lock; the first that
/// outwaits this cuts the connection, so the waits never add up.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Data bytes one device's requests hold at once (reads' and writes'
/// buffers): a guest with many queues full of 32 MiB requests waits for
/// its turn instead of growing the frontend without bound.
pub const BUDGET_BYTES: usize = 128 << 20;
/// The budget's unit (a semaphore permit).
const BUDGET_UNIT: u64 = 4096;

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
    /// Each queue's requests in flight and epoch.
    lanes: Vec<Arc<Lane>>,
    /// What the requests' data may take ([`BUDGET_BYTES`], in units of
    /// [`BUDGET_UNIT`]).
    budget: Arc<tokio::sync::Semaphore>,
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
        let lanes = (0..geometry.queues).map(|_| Arc::new(Lane::default())).collect();
        let budget = Arc::new(tokio::sync::Semaphore::new(BUDGET_BYTES / BUDGET_UNIT as usize));
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
            lanes,
            budget,
            limiters,
            serial,
        }
    }

    /// Pops every chain queue `queue` has available and starts serving it;
    /// how many it popped.
    fn drain(&self, vring: &Vring, mem: &Arc<Memory>, queue: usize) -> usize {
        let lane = &self.lanes[queue];
        let mut popped = 0;
        loop {
            // Counted before the pop: a stop that comes between them
            // waits for it.
            let ticket = Ticket::take(lane);
            let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(mem.clone());
            let Some(chain) = chain else { return popped };
            popped += 1;
            let head = chain.head_index();
            let segments: Vec<Segment> =
                chain.map(|d| Segment { addr: d.addr(), len: d.len(), writable: d.is_write_only() }).collect();
            let done = Completion {
                vring: vring.clone(),
                mem: mem.clone(),
                head,
                event_idx: self.event_idx.load(Ordering::Acquire),
                ticket,
            };
            match request::parse(&**mem, &segments, &self.geometry) {
                Err(refused) => {
                    tracing::debug!(why = refused.why, status = refused.status, "virtio-blk request refused");
                    if let Some(metrics) = &self.served.metrics {
                        metrics.served(crate::metrics::REFUSED, 0, false, 0.0);
                    }
                    done.finish(refused.at.map(|at| (at, refused.status)), None);
                }
                Ok(req) => {
                    let (served, limiter) = (self.served.clone(), self.limiters[queue].get());
                    let budget = self.budget.clone();
                    self.runtime.spawn(serve(served, limiter, budget, req, self.serial, done));
                }
            }
        }
    }

    /// After the connection ended: ends every queue's epoch, then waits up
    /// to `wait` for the requests still running to end (a write that
    /// lands after the next VMM's writes could undo them). Returns how
    /// many were still running.
    pub fn settle(&self, wait: Duration) -> usize {
        for lane in &self.lanes {
            lane.retire();
        }
        let start = std::time::Instant::now();
        let running = || self.lanes.iter().map(|l| l.in_flight.load(Ordering::Acquire)).sum::<usize>();
        while running() > 0 && start.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        running()
    }
}

/// One queue's requests in flight, and its epoch: a request answers only
/// while the epoch it was popped in lasts.
#[derive(Debug, Default)]
struct Lane {
    in_flight: AtomicUsize,
    /// Read-held while a request writes into guest memory and the used
    /// ring; write-held to end the epoch, which then waits for those.
    epoch: RwLock<u64>,
}

impl Lane {
    fn epoch(&self) -> u64 {
        *self.epoch.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the epoch: no request popped in it touches guest memory or
    /// the rings from now on.
    fn retire(&self) {
        *self.epoch.write().unwrap_or_else(|p| p.into_inner()) += 1;
    }
}

/// A popped request: counted in its lane's `in_flight` until dropped, and
/// of the lane's epoch when it was taken.
struct Ticket {
    lane: Arc<Lane>,
    epoch: u64,
}

impl Ticket {
    fn take(lane: &Arc<Lane>) -> Self {
        lane.in_flight.fetch_add(1, Ordering::AcqRel);
        Self { lane: lane.clone(), epoch: lane.epoch() }
    }

    /// Whether its epoch is over.
    fn ended(&self) -> bool {
        self.lane.epoch() != self.epoch
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.lane.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one request and completes it, unless the fence closes first.
async fn serve(
    served: Served,
    limiter: Option<Arc<Limiter>>,
    budget: Arc<tokio::sync::Semaphore>,
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
    // The budget is never closed; a request fits it (DATA_MAX is less).
    let Ok(_held) = budget.acquire_many(budget_units(&req.op)).await else { return };
    // Its queue stopped or its connection ended while it waited: nothing
    // is sent that the guest will not hear of.
    if done.ticket.ended() {
        return;
    }
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
    match outcome {
        Ok(answer) => done.finish(Some((req.status, S_OK)), answer.as_deref().map(|a| (&req.data[..], a))),
        Err(e) => {
            tracing::warn!(error = %e, "virtio-blk request failed");
            done.finish(Some((req.status, S_IOERR)), None);
        }
    }
}

/// The budget a request's data takes.
fn budget_units(op: &Op) -> u32 {
    match op {
        Op::Read { len, .. } | Op::Write { len, .. } => len.div_ceil(BUDGET_UNIT).max(1) as u32,
        Op::Flush | Op::GetId | Op::Zero { .. } => 0,
    }
}

/// Why a request failed: the guest sees IOERR either way.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error(transparent)]
    Client(#[from] chuyi_client::ClientError),
    #[error("a data buffer lies outside guest memory")]
    Memory,
    #[error("the cluster answered {got} bytes for a read of {asked}")]
    ShortRead { asked: u64, got: usize },
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

/// Does what `req` asks; answers the bytes to write into its guest
/// buffers, if any (written by [`Completion::finish`], while the queue's
/// epoch lasts).
async fn execute(served: &Served, req: &Request, id: &[u8], mem: &Memory) -> Result<Option<Bytes>, Failed> {
    match &req.op {
        Op::Read { offset, len } => {
            // Checked before the cluster is asked: a buffer outside guest
            // memory fails without a read.
            if !request::in_memory(mem, &req.data) {
                return Err(Failed::Memory);
            }
            let data = served.vol.read(*offset, *len).await?;
            if data.len() as u64 != *len {
                return Err(Failed::ShortRead { asked: *len, got: data.len() });
            }
            let data = match &served.crypt {
                Some(xts) => crypt::decrypt(xts, *offset, data),
                None => data,
            };
            Ok(Some(data))
        }
        Op::Write { offset, .. } => {
            let mut data = request::gather(mem, &req.data).ok_or(Failed::Memory)?;
            if let Some(xts) = &served.crypt {
                crypt::encrypt(xts, *offset, &mut data);
            }
            // virtio has no FUA: the guest flushes (the device says it
            // caches writes).
            served.vol.write(*offset, Bytes::from(data), false).await?;
            Ok(None)
        }
        Op::Flush => {
            served.vol.flush().await?;
            Ok(None)
        }
        Op::GetId => Ok(Some(Bytes::copy_from_slice(id))),
        Op::Zero { ranges } => {
            for &(offset, len) in ranges {
                served.vol.zero(offset, len, false).await?;
            }
            Ok(None)
        }
    }
}

/// One popped chain's way back to the guest.
struct Completion {
    vring: Vring,
    mem: Arc<Memory>,
    head: u16,
    event_idx: bool,
    ticket: Ticket,
}

impl Completion {
    /// Writes `data` into its buffers (an answer outside guest memory
    /// turns the status into IOERR) and the status (when the chain has a
    /// place for it), puts the chain on the used ring with the bytes
    /// written into it and signals the guest if it asked to be; nothing
    /// at all once the epoch it was popped in is over.
    fn finish(self, status: Option<(GuestAddress, u8)>, data: Option<(&[Segment], &[u8])>) {
        let lane = &self.ticket.lane;
        let epoch = lane.epoch.read().unwrap_or_else(|p| p.into_inner());
        if *epoch != self.ticket.epoch {
            return;
        }
        let (mut used, scattered) = match data {
            Some((segments, bytes)) => match request::scatter(&*self.mem, segments, bytes) {
                Some(n) => (n as u32, true),
                None => (0, false),
            },
            None => (0, true),
        };
        let status = status.map(|(at, s)| (at, if scattered { s } else { S_IOERR }));
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
    /// requests in flight have [`STOP_WAIT`] to finish, then its epoch
    /// ends, so none still running lands in memory or on a ring
    /// the guest may have reused. Some still running is an error, which
    /// cuts the connection: `GET_VRING_BASE` would report them consumed
    /// and the guest would never hear of them, while QEMU, reconnecting,
    /// sends again what its used ring does not hold.
    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        let Some(lane) = self.lanes.get(queue_index as usize) else { return Ok(()) };
        let start = std::time::Instant::now();
        while lane.in_flight.load(Ordering::Acquire) > 0 && start.elapsed() < STOP_WAIT {
            std::thread::sleep(Duration::from_millis(1));
        }
        lane.retire();
        let left = lane.in_flight.load(Ordering::Acquire);
        if left > 0 {
            tracing::warn!(queue = queue_index, left, "requests outlived the queue's stop; closing the connection");
            return Err(io::Error::new(io::ErrorKind::TimedOut, "requests still in flight"));
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
        drain_quietly(
            || vring.disable_notification().map_err(io::Error::other),
            || self.drain(vring, &mem, queue),
            || vring.enable_notification().map_err(io::Error::other),
        )
    }
}

/// With event suppression: no kicks while draining, then a look once
/// more after turning them back on (a chain may have come between). Twice
/// running announced (`enable` true) but none popped: the queue was
/// stopped, or the guest's index is beyond its ring; going on would spin,
/// and keep the thread from its exit event. The next kick looks again.
fn drain_quietly(
    mut disable: impl FnMut() -> io::Result<()>,
    mut drain: impl FnMut() -> usize,
    mut enable: impl FnMut() -> io::Result<bool>,
) -> io::Result<()> {
    let mut empty = 0;
    loop {
        disable()?;
        let popped = drain();
        if !enable()? {
            return Ok(());
        }
        empty = if popped == 0 { empty + 1 } else { 0 };
        if empty == 2 {
            tracing::debug!("chains announced that cannot be popped; waiting for the next kick");
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use vhost_user_backend::VringT;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;

    use super::*;

    #[test]
    fn a_ring_that_announces_chains_it_cannot_pop_is_left_until_the_next_kick() {
        let drains = Cell::new(0);
        let drain = || {
            drains.set(drains.get() + 1);
            0
        };
        drain_quietly(|| Ok(()), drain, || Ok(true)).expect("returns");
        assert_eq!(drains.get(), 2, "a broken ring is looked at twice, not for ever");
        // A chain that came between a drain and turning kicks back on is
        // popped by the next look.
        let popped = Cell::new(vec![0, 1, 0]);
        let announced = Cell::new(vec![true, true, false]);
        fn next<T>(c: &Cell<Vec<T>>) -> T {
            let mut v = c.take();
            let x = v.remove(0);
            c.set(v);
            x
        }
        drain_quietly(|| Ok(()), || next(&popped), || Ok(next(&announced))).expect("returns");
        assert!(popped.take().is_empty(), "drained three times");
    }

    /// A ring of 16 in `m` holding one read of 512 bytes at 0x2000, its
    /// status at 0x3000; the vring serving it, and the chain's head.
    fn one_read(m: &Memory) -> (Vring, u16) {
        let q = MockSplitQueue::new(m, 16);
        let d = |addr, len, flags| RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0));
        let write = VRING_DESC_F_WRITE as u16;
        q.build_desc_chain(&[d(0x1000, 16, 0), d(0x2000, 512, write), d(0x3000, 1, write)]).expect("chain");
        let vring = Vring::new(GuestMemoryAtomic::new(m.clone()), 16).expect("vring");
        vring.set_queue_size(16);
        vring.set_queue_info(q.desc_table_addr().0, q.avail_addr().0, q.used_addr().0).expect("addresses");
        vring.set_queue_ready(true);
        let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(m).expect("a chain");
        (vring, chain.head_index())
    }

    fn used_idx(m: &Memory, vring: &Vring) -> u16 {
        let used = vring.get_ref().get_queue().used_ring();
        m.read_obj::<u16>(GuestAddress(used + 2)).expect("used idx")
    }

    #[test]
    fn a_request_of_an_ended_epoch_leaves_guest_memory_and_the_rings_alone() {
        let m = Memory::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("guest memory");
        let (vring, head) = one_read(&m);
        m.write_obj(0xeeu8, GuestAddress(0x3000)).expect("status");
        let lane = Arc::new(Lane::default());
        let mem = Arc::new(m.clone());
        let data = [Segment { addr: GuestAddress(0x2000), len: 512, writable: true }];
        let answer = |ticket| {
            let done = Completion { vring: vring.clone(), mem: mem.clone(), head, event_idx: false, ticket };
            done.finish(Some((GuestAddress(0x3000), S_OK)), Some((&data, &[0x5a; 512])));
        };
        // Popped, then the VMM took the queue back: the answer goes nowhere.
        let stale = Ticket::take(&lane);
        lane.retire();
        answer(stale);
        assert_eq!(lane.in_flight.load(Ordering::Acquire), 0);
        assert_eq!(used_idx(&m, &vring), 0, "nothing on the used ring");
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x3000)).expect("status"), 0xee);
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x2000)).expect("data"), 0);
        // A request of the epoch now answers.
        answer(Ticket::take(&lane));
        assert_eq!(used_idx(&m, &vring), 1);
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x3000)).expect("status"), S_OK);
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x2000)).expect("data"), 0x5a);
    }

    #[test]
    fn an_answer_outside_guest_memory_is_an_io_error() {
        let m = Memory::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("guest memory");
        let (vring, head) = one_read(&m);
        let lane = Arc::new(Lane::default());
        let done = Completion {
            vring: vring.clone(),
            mem: Arc::new(m.clone()),
            head,
            event_idx: false,
            ticket: Ticket::take(&lane),
        };
        let outside = [Segment { addr: GuestAddress(2 << 20), len: 512, writable: true }];
        done.finish(Some((GuestAddress(0x3000), S_OK)), Some((&outside, &[1; 512])));
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x3000)).expect("status"), S_IOERR);
        assert_eq!(used_idx(&m, &vring), 1);
    }
}
