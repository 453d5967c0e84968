//! A client connection's calls awaiting replies, by request id.
//!
//! The map and the in-flight semaphore close together when the connection
//! ends: every waiting caller then sees its sender dropped (→ `Closed`) and
//! new callers fail fast instead of queueing on a dead connection.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::{oneshot, Semaphore, SemaphorePermit};
use tracing::debug;

use super::conn::Frame;
use super::RpcError;

type Waiters = HashMap<u64, oneshot::Sender<Frame>>;

#[derive(Debug)]
pub(crate) struct Pending {
    /// `None` once the connection has ended.
    waiters: Mutex<Option<Waiters>>,
    /// In-flight slots; closed with the connection.
    slots: Semaphore,
    inflight_max: usize,
}

/// Removes its call's entry when dropped, so a call that times out or whose
/// future is dropped leaves nothing behind. Removing an entry the reply
/// already took is a no-op.
#[derive(Debug)]
pub(crate) struct Registration<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Pending {
    pub fn new(inflight_max: usize) -> Self {
        Self { waiters: Mutex::new(Some(HashMap::new())), slots: Semaphore::new(inflight_max), inflight_max }
    }

    /// Whether another call holds a slot besides the one whose frame the
    /// writer has in hand.
    pub fn others_in_flight(&self) -> bool {
        super::conn::others_hold_slots(&self.slots, self.inflight_max)
    }

    /// Waits for an in-flight slot; fails once the connection has ended.
    pub async fn slot(&self) -> Result<SemaphorePermit<'_>, RpcError> {
        self.slots.acquire().await.map_err(|_| RpcError::Closed)
    }

    /// Records that a reply to `id` is awaited.
    pub fn register(&self, id: u64, reply: oneshot::Sender<Frame>) -> Result<Registration<'_>, RpcError> {
        let mut waiters = self.lock();
        let map = waiters.as_mut().ok_or(RpcError::Closed)?;
        map.insert(id, reply);
        Ok(Registration { pending: self, id })
    }

    /// Hands a reply to its caller. A reply nobody waits for belongs to a
    /// call that timed out or was dropped, which is normal, not an error.
    pub fn complete(&self, frame: Frame) {
        let id = frame.header.request_id;
        let waiter = self.lock().as_mut().and_then(|map| map.remove(&id));
        match waiter {
            // The caller may have given up between our remove and this send.
            Some(reply) => drop(reply.send(frame)),
            None => debug!(request_id = id, "reply to a call no longer waiting; dropped"),
        }
    }

    /// Drops the waiter of `id` (its request was not sent): its caller sees
    /// the reply channel closed.
    pub fn abandon(&self, id: u64) {
        if let Some(map) = self.lock().as_mut() {
            map.remove(&id);
        }
    }

    /// Ends the connection's calls: drops every waiter, refuses new ones.
    pub fn close(&self) {
        let waiters = self.lock().take();
        self.slots.close();
        drop(waiters);
    }

    pub fn is_closed(&self) -> bool {
        self.lock().is_none()
    }

    /// Calls awaiting a reply.
    pub fn len(&self) -> usize {
        self.lock().as_ref().map_or(0, HashMap::len)
    }

    /// No code panics while holding the lock, so poisoning cannot happen;
    /// were it to, the map is still consistent (every operation is one call).
    fn lock(&self) -> MutexGuard<'_, Option<Waiters>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Some(map) = self.pending.lock().as_mut() {
            map.remove(&self.id);
        }
    }
}
