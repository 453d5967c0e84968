//! The order of forwarded mutations between two nodes, so a replica never
//! lands a forward its sender gave up on over a newer write of the range.
//!
//! A primary holds a range while it forwards a write of it, so overlapping
//! writes reach a replica one at a time, except for one it gave up on (the
//! call timed out, the PG moved): that one may still be on its way, in a
//! socket buffer of a frozen or cut-off replica, when the primary, the
//! range released, forwards a newer write of it. The replica may then read
//! both at once and run them in either order. So every forward carries its
//! sender's number for it and the number below which all of the sender's
//! forwards to this node are settled (answered or given up)
//! ([`ForwardOrder`]), and the replica, under the range's lock, refuses a
//! forward numbered below the highest such mark it has had from the
//! sender. A forward the sender still waits for is never below a mark the
//! sender sent since, and one it had answered has already landed; so only
//! forwards given up are refused, and the newer write that raised the mark
//! did so before it landed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::UNIX_EPOCH;

use chuyi_common::clock;
use chuyi_common::ids::NodeId;
use chuyi_common::proto::chunk::ForwardOrder;

/// The sender's side: numbers for forwards and, per peer, those in flight.
#[derive(Debug)]
pub struct Outbound {
    me: NodeId,
    next: AtomicU64,
    in_flight: Mutex<HashMap<NodeId, BTreeSet<u64>>>,
}

impl Outbound {
    /// Numbers start at the calendar clock in nanoseconds, so a restarted
    /// sender's are above those it sent before (unless the clock went
    /// back across the restart: a replica then refuses its forwards until
    /// the clock passes the old ones, failing writes, never misplacing
    /// them).
    pub fn new(me: NodeId) -> Self {
        let start = clock::wall().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Self { me, next: AtomicU64::new(start), in_flight: Mutex::default() }
    }

    /// A forward to `to` starting: its order, in flight until the ticket
    /// is dropped (the call answered or given up).
    pub fn start(&self, to: NodeId) -> Ticket<'_> {
        let mut in_flight = self.lock();
        // Numbered under the lock: a forward numbered and not yet in the
        // set would be below the mark a forward numbered after it sends.
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let peer = in_flight.entry(to).or_default();
        peer.insert(seq);
        let settled_below = peer.first().copied().unwrap_or(seq);
        Ticket { outbound: self, to, order: ForwardOrder { from: self.me, seq, settled_below } }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, BTreeSet<u64>>> {
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One forward in flight.
#[derive(Debug)]
pub struct Ticket<'a> {
    outbound: &'a Outbound,
    to: NodeId,
    order: ForwardOrder,
}

impl Ticket<'_> {
    pub fn order(&self) -> ForwardOrder {
        self.order
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.outbound.lock();
        if let Some(peer) = in_flight.get_mut(&self.to) {
            peer.remove(&self.order.seq);
            if peer.is_empty() {
                in_flight.remove(&self.to);
            }
        }
    }
}

/// The receiver's side: per sender, the highest mark had from it.
#[derive(Debug, Default)]
pub struct Inbound {
    settled: Mutex<HashMap<NodeId, u64>>,
}

/// A forward its sender had given up on, refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GivenUp {
    pub seq: u64,
    pub settled_below: u64,
}

impl Inbound {
    /// Takes `order`'s mark, then judges its forward. Called under the
    /// forward's range lock, before it lands.
    pub fn admit(&self, order: &ForwardOrder) -> Result<(), GivenUp> {
        let mut settled = self.settled.lock().unwrap_or_else(PoisonError::into_inner);
        let known = settled.entry(order.from).or_insert(0);
        let (mark, verdict) = judge(*known, order);
        *known = mark;
        verdict
    }
}

/// The sender's mark after `order` arrives, and whether its forward lands.
fn judge(known: u64, order: &ForwardOrder) -> (u64, Result<(), GivenUp>) {
    let mark = known.max(order.settled_below);
    let verdict = if order.seq < mark { Err(GivenUp { seq: order.seq, settled_below: mark }) } else { Ok(()) };
    (mark, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(seq: u64, settled_below: u64) -> ForwardOrder {
        ForwardOrder { from: 1, seq, settled_below }
    }

    #[test]
    fn a_forward_below_a_mark_had_is_refused_and_one_at_or_above_lands() {
        assert_eq!(judge(0, &order(10, 10)), (10, Ok(())));
        assert_eq!(judge(12, &order(11, 11)), (12, Err(GivenUp { seq: 11, settled_below: 12 })));
        assert_eq!(judge(12, &order(12, 12)), (12, Ok(())));
        // A mark never goes down: a late forward carries an older one.
        assert_eq!(judge(20, &order(25, 15)), (20, Ok(())));
    }

    /// The case this exists for: a forward given up, then a newer one of
    /// the range; the replica runs the newer first, and the older is
    /// refused. Had it run the older first, both would land, in order.
    #[test]
    fn a_forward_given_up_is_refused_after_a_newer_one_landed() {
        let (outbound, inbound) = (Outbound::new(1), Inbound::default());
        let first = outbound.start(2);
        let stale = first.order();
        drop(first);
        let newer = outbound.start(2);
        assert_eq!(newer.order().settled_below, newer.order().seq, "nothing else in flight");
        assert_eq!(inbound.admit(&newer.order()), Ok(()));
        assert_eq!(
            inbound.admit(&stale),
            Err(GivenUp { seq: stale.seq, settled_below: newer.order().seq }),
            "the forward given up"
        );
    }

    /// A forward still awaited is never below a mark sent while it is, to
    /// its node; forwards to other nodes do not hold the mark back.
    #[test]
    fn a_forward_in_flight_holds_the_mark_for_its_node_only() {
        let (outbound, inbound) = (Outbound::new(1), Inbound::default());
        let slow = outbound.start(2);
        let elsewhere = outbound.start(3);
        let later = outbound.start(2);
        let after_elsewhere = outbound.start(3);
        assert_eq!(later.order().settled_below, slow.order().seq);
        assert_eq!(after_elsewhere.order().settled_below, elsewhere.order().seq);
        drop(elsewhere);
        assert_eq!(outbound.start(3).order().settled_below, after_elsewhere.order().seq);
        assert_eq!(inbound.admit(&later.order()), Ok(()));
        assert_eq!(inbound.admit(&slow.order()), Ok(()), "still awaited: lands though it arrived last");
        drop(slow);
        let next = outbound.start(2);
        assert_eq!(next.order().settled_below, later.order().seq);
        drop((later, next, after_elsewhere));
        assert!(outbound.lock().is_empty(), "nothing left in flight");
    }

    /// Marks are per sender: another node's numbers say nothing of these.
    #[test]
    fn senders_are_judged_apart() {
        let inbound = Inbound::default();
        assert_eq!(inbound.admit(&ForwardOrder { from: 1, seq: 1_000, settled_below: 1_000 }), Ok(()));
        assert_eq!(inbound.admit(&ForwardOrder { from: 2, seq: 5, settled_below: 5 }), Ok(()));
    }

    /// A restarted sender numbers above what it sent before.
    #[test]
    fn numbers_rise_across_a_restart() {
        let before = Outbound::new(1).start(2).order().seq;
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(Outbound::new(1).start(2).order().seq > before);
    }
}
