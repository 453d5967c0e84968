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
//!
//! Each forward also gets its deadline when it is numbered, and its sender
//! gives up on it then at the latest (connecting included), so deadlines
//! rise with the numbers, and a forward past its deadline counts as settled
//! even before its task has seen it. Then once a forward is given up for
//! its deadline, every forward numbered below it is settled too, and the
//! next forward's mark passes it: however the replica orders the two, a
//! newer write of the range forwarded after it keeps it out.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use chuyi_common::clock::{self, Instant};
use chuyi_common::ids::NodeId;
use chuyi_common::proto::chunk::ForwardOrder;

/// The file in a node's `state_dir` saying where its next start numbers
/// from (`storage-node/FORMAT.md`, "Forward numbers").
pub const NUMBERS_FILE: &str = "chuyi-forward-numbers";
const NUMBERS_MAGIC: &[u8; 8] = b"CHUYIFWD";
/// Numbers one start may use; the next start numbers above them.
const PER_START: u64 = 1 << 44;

/// This start's first forward number: above every number an earlier start
/// of this node used, as the file in `dir` records, and not below the
/// calendar clock in nanoseconds (so a node whose file was lost still
/// starts above its old numbers, unless its clock went back as well).
/// Where the next start begins is on disk before this start uses any.
pub fn first_number(dir: &Path) -> io::Result<u64> {
    let path = dir.join(NUMBERS_FILE);
    let recorded = match std::fs::read(&path) {
        Ok(bytes) => decode_numbers(&bytes).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a forward-number file", path.display()))
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let clock = clock::wall().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let first = recorded.max(clock);
    let next = first.checked_add(PER_START).ok_or_else(|| io::Error::other("forward numbers exhausted"))?;
    let mut bytes = NUMBERS_MAGIC.to_vec();
    bytes.extend_from_slice(&next.to_le_bytes());
    crate::fence::write_atomically(&path, &bytes)?;
    Ok(first)
}

fn decode_numbers(bytes: &[u8]) -> Option<u64> {
    let (magic, number) = bytes.split_at_checked(NUMBERS_MAGIC.len())?;
    (magic == NUMBERS_MAGIC).then_some(())?;
    Some(u64::from_le_bytes(number.try_into().ok()?))
}

/// The sender's side: numbers for forwards and, per peer, those in flight
/// with their deadlines.
#[derive(Debug)]
pub struct Outbound {
    me: NodeId,
    give_up_after: Duration,
    state: Mutex<Numbering>,
}

#[derive(Debug)]
struct Numbering {
    next: u64,
    in_flight: HashMap<NodeId, BTreeMap<u64, Instant>>,
}

impl Outbound {
    /// Numbers from `first` ([`first_number`]: above those of the node's
    /// earlier starts); forwards are given up `give_up_after` they are
    /// numbered.
    pub fn new(me: NodeId, first: u64, give_up_after: Duration) -> Self {
        let numbering = Numbering { next: first, in_flight: HashMap::new() };
        Self { me, give_up_after, state: Mutex::new(numbering) }
    }

    /// A forward to `to` starting: its order and deadline, in flight until
    /// the ticket is dropped (the call answered or given up) or the
    /// deadline passes.
    pub fn start(&self, to: NodeId) -> Ticket<'_> {
        let mut state = self.lock();
        // Numbered and timed under the lock: a forward numbered and not yet
        // in the set would be below the mark a forward numbered after it
        // sends, and deadlines must rise with the numbers.
        let (seq, now) = (state.next, clock::now());
        state.next += 1;
        let deadline = now + self.give_up_after;
        let peer = state.in_flight.entry(to).or_default();
        peer.insert(seq, deadline);
        let settled_below = peer.iter().find(|(_, &due)| due > now).map_or(seq, |(&s, _)| s);
        Ticket { outbound: self, to, deadline, order: ForwardOrder { from: self.me, seq, settled_below } }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Numbering> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One forward in flight.
#[derive(Debug)]
pub struct Ticket<'a> {
    outbound: &'a Outbound,
    to: NodeId,
    deadline: Instant,
    order: ForwardOrder,
}

impl Ticket<'_> {
    pub fn order(&self) -> ForwardOrder {
        self.order
    }

    /// When the sender gives the forward up, whatever the call is doing.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut state = self.outbound.lock();
        if let Some(peer) = state.in_flight.get_mut(&self.to) {
            peer.remove(&self.order.seq);
            if peer.is_empty() {
                state.in_flight.remove(&self.to);
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

    const LONG: Duration = Duration::from_secs(3600);

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
        let (outbound, inbound) = (Outbound::new(1, 1_000, LONG), Inbound::default());
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
        let (outbound, inbound) = (Outbound::new(1, 1_000, LONG), Inbound::default());
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
        assert!(outbound.lock().in_flight.is_empty(), "nothing left in flight");
    }

    /// Marks are per sender: another node's numbers say nothing of these.
    #[test]
    fn senders_are_judged_apart() {
        let inbound = Inbound::default();
        assert_eq!(inbound.admit(&ForwardOrder { from: 1, seq: 1_000, settled_below: 1_000 }), Ok(()));
        assert_eq!(inbound.admit(&ForwardOrder { from: 2, seq: 5, settled_below: 5 }), Ok(()));
    }

    /// A restarted sender numbers above everything it could have used
    /// before, even if its clock went back; a lost file falls back on the
    /// clock; a damaged one stops the start.
    #[test]
    fn numbers_rise_across_restarts_and_the_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = first_number(dir.path()).expect("first start");
        let now = clock::wall().duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as u64;
        assert!(first <= now && now - first < 60_000_000_000, "a fresh node starts at the clock");
        let second = first_number(dir.path()).expect("second start");
        assert!(second >= first + PER_START, "above every number the first start could use");
        // A clock far behind changes nothing: the file is ahead of it.
        assert!(first_number(dir.path()).expect("third") >= second + PER_START);
        std::fs::remove_file(dir.path().join(NUMBERS_FILE)).expect("lose the file");
        assert!(first_number(dir.path()).expect("file lost") >= first, "the clock again");
        std::fs::write(dir.path().join(NUMBERS_FILE), b"CHUYIFWD123").expect("damage");
        let damaged = first_number(dir.path()).expect_err("damaged");
        assert_eq!(damaged.kind(), io::ErrorKind::InvalidData, "{damaged}");
    }

    /// A forward past its deadline counts as settled before its task has
    /// noticed: a forward numbered after it, once it is given up, passes it
    /// even if an older one's task is slower to give up.
    #[tokio::test(start_paused = true)]
    async fn a_forward_past_its_deadline_is_settled_before_its_ticket_goes() {
        let outbound = Outbound::new(1, 1_000, Duration::from_secs(5));
        let older = outbound.start(2);
        tokio::time::advance(Duration::from_millis(1)).await;
        let given_up = outbound.start(2);
        assert_eq!(given_up.order().settled_below, older.order().seq);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(given_up.deadline() <= clock::now() && older.deadline() <= clock::now());
        drop(given_up);
        let newer = outbound.start(2);
        assert_eq!(newer.order().settled_below, newer.order().seq, "the older one is past its deadline");
        let inbound = Inbound::default();
        assert_eq!(inbound.admit(&newer.order()), Ok(()));
        assert!(inbound.admit(&older.order()).is_err(), "and so refused");
        drop(older);
    }
}
