//! The fault schedule of one simulation run: a pure function of the seed,
//! so a failing run is replayed by running its seed again.
//!
//! Rules, so that every run tests something: faults start 0.5–3 s apart
//! and last 1–6 s; at most one metadata member and at most one storage node
//! is crashed or isolated at a time (a Raft majority and one replica of
//! every chunk stay reachable, so writes keep being acknowledged and the
//! check has something to check); the client, which holds the model of
//! acknowledged writes, is never crashed, only cut from one host; every
//! fault ends inside the window, so the run ends healed.
//!
//! A failing disk (EIO on its reads, its writes or both) comes from a
//! second stream of the seed, so adding it left the faults above of every
//! seed as they were; it counts as the node being out (the node takes the
//! disk out of service at its first EIO), and when it ends the node is
//! restarted, as an operator would after reseating or replacing the disk.
//!
//! Rot (a bit flipped in a block a node holds) comes from a third stream
//! of the seed. It hits one node per run, and only while every node has been in
//! for [`ROT_QUIET`] and stays in for the fault's length: a bad block is
//! repaired from its other replica (on read or by scrub), and a rotted
//! block whose other copy is down or still resyncing is a double fault,
//! which two replicas do not promise to survive.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One simulated process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    Meta(u64),
    Node(u64),
    Client,
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Meta(id) => write!(f, "meta{id}"),
            Host::Node(id) => write!(f, "node{id}"),
            Host::Client => f.write_str("client"),
        }
    }
}

/// No node out this long before a rot, nor during it.
const ROT_QUIET: Duration = Duration::from_secs(10);
/// How long a rot is given to be repaired before a node may go out again.
const ROT_REPAIR: Duration = Duration::from_secs(5);
/// Distinguishes the rot stream of a seed from its main stream.
const ROT_STREAM: u64 = 0x005e_ed0f_b175;
/// Distinguishes the failing-disk stream of a seed from the others.
const EIO_STREAM: u64 = 0x00d1_5cfa_11ed;
/// At most this many failing disks in a run, of this many tried (most
/// tries meet another node's fault and are dropped).
const MAX_EIO: usize = 2;
const EIO_TRIES: u32 = 12;

/// Which operations of a failing disk return EIO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failing {
    Reads,
    Writes,
    Everything,
}

impl fmt::Display for Failing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failing::Reads => "reads",
            Failing::Writes => "writes",
            Failing::Everything => "all",
        })
    }
}

/// What goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The process dies (its tasks dropped, its files kept, like SIGKILL)
    /// and restarts when the fault ends.
    Crash(Host),
    /// Partitioned from every other host.
    Isolate(Host),
    /// The link between two hosts drops everything, both ways.
    Cut(Host, Host),
    /// The link between two hosts holds its messages, delivered when the
    /// fault ends: a long stall, then everything at once.
    Hold(Host, Host),
    /// One bit flips in a block of data the node holds (the disk returns
    /// garbage); the node must notice by its checksum and repair it.
    Rot(Host),
    /// The node's disk fails operations with EIO; the node restarts when
    /// the fault ends.
    Eio(Host, Failing),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crash(h) => write!(f, "crash {h}"),
            Fault::Isolate(h) => write!(f, "isolate {h}"),
            Fault::Cut(a, b) => write!(f, "cut {a}-{b}"),
            Fault::Hold(a, b) => write!(f, "hold {a}-{b}"),
            Fault::Rot(h) => write!(f, "rot {h}"),
            Fault::Eio(h, failing) => write!(f, "eio {h} {failing}"),
        }
    }
}

/// A fault from `at` (after the workload starts) for `lasts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub at: Duration,
    pub lasts: Duration,
    pub fault: Fault,
}

impl Event {
    pub fn ends(&self) -> Duration {
        self.at + self.lasts
    }

    /// Whether the fault takes its host out of its group (a member out of
    /// the Raft majority, a node out of its replica pairs).
    fn takes_out(&self) -> Option<Host> {
        match self.fault {
            Fault::Crash(h) | Fault::Isolate(h) | Fault::Eio(h, _) => Some(h),
            Fault::Cut(..) | Fault::Hold(..) | Fault::Rot(_) => None,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1}s+{:.1}s {}", self.at.as_secs_f64(), self.lasts.as_secs_f64(), self.fault)
    }
}

/// The hosts of a run.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub metas: u64,
    pub nodes: u64,
}

impl Shape {
    pub fn hosts(&self) -> Vec<Host> {
        let metas = (1..=self.metas).map(Host::Meta);
        let nodes = (1..=self.nodes).map(Host::Node);
        metas.chain(nodes).chain([Host::Client]).collect()
    }
}

/// The faults of the run of `seed`, in start order, all ended by `window`;
/// with `rot`, bit flips on one node's disk besides.
pub fn schedule(seed: u64, window: Duration, shape: Shape, rot: bool) -> Vec<Event> {
    let mut events = main_faults(seed, window, shape);
    add_eio(seed, window, shape, &mut events);
    if rot {
        add_rot(seed, window, shape, &mut events);
    }
    events
}

/// Every fault but rot.
fn main_faults(seed: u64, window: Duration, shape: Shape) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let hosts = shape.hosts();
    let mut events: Vec<Event> = Vec::new();
    let mut at = Duration::from_millis(rng.random_range(500..3000));
    while at < window {
        let lasts = Duration::from_millis(rng.random_range(1000..6000)).min(window - at);
        let fault = pick(&mut rng, &hosts, shape);
        let event = Event { at, lasts, fault };
        if allowed(&events, &event) {
            events.push(event);
        }
        at += Duration::from_millis(rng.random_range(500..3000));
    }
    events
}

/// Up to [`MAX_EIO`] failing disks, where [`allowed`] lets them be.
fn add_eio(seed: u64, window: Duration, shape: Shape, events: &mut Vec<Event>) {
    let mut rng = StdRng::seed_from_u64(seed ^ EIO_STREAM);
    let mut added = 0;
    for _ in 0..EIO_TRIES {
        if added == MAX_EIO {
            break;
        }
        let at = Duration::from_millis(rng.random_range(0..window.as_millis() as u64));
        let lasts = Duration::from_millis(rng.random_range(1000..6000)).min(window - at);
        let node = Host::Node(rng.random_range(1..=shape.nodes));
        let failing = [Failing::Reads, Failing::Writes, Failing::Everything][rng.random_range(0..3)];
        let event = Event { at, lasts, fault: Fault::Eio(node, failing) };
        if !lasts.is_zero() && allowed(events, &event) {
            events.push(event);
            added += 1;
        }
    }
    events.sort_by_key(|e| e.at);
}

/// Up to six rots on one node, where [`rot_allowed`] lets them be.
fn add_rot(seed: u64, window: Duration, shape: Shape, events: &mut Vec<Event>) {
    let mut rng = StdRng::seed_from_u64(seed ^ ROT_STREAM);
    let node = Host::Node(rng.random_range(1..=shape.nodes));
    for _ in 0..rng.random_range(1..=6) {
        let at = Duration::from_millis(rng.random_range(0..window.as_millis() as u64));
        let rot = Event { at, lasts: ROT_REPAIR.min(window - at), fault: Fault::Rot(node) };
        if !rot.lasts.is_zero() && rot_allowed(events, &rot) {
            events.push(rot);
        }
    }
    events.sort_by_key(|e| e.at);
}

/// No node out from [`ROT_QUIET`] before the rot to its end.
fn rot_allowed(events: &[Event], rot: &Event) -> bool {
    let quiet_from = rot.at.saturating_sub(ROT_QUIET);
    !events.iter().any(|e| {
        let node_out = matches!(e.takes_out(), Some(Host::Node(_)));
        let rot_again = matches!(e.fault, Fault::Rot(_)) && e.at < rot.ends() && rot.at < e.ends();
        (node_out && e.at < rot.ends() && quiet_from < e.ends()) || rot_again
    })
}

fn pick(rng: &mut StdRng, hosts: &[Host], shape: Shape) -> Fault {
    let server = |rng: &mut StdRng| {
        if rng.random_bool(0.5) {
            Host::Meta(rng.random_range(1..=shape.metas))
        } else {
            Host::Node(rng.random_range(1..=shape.nodes))
        }
    };
    let pair = |rng: &mut StdRng| {
        let a = hosts[rng.random_range(0..hosts.len())];
        let others: Vec<Host> = hosts.iter().copied().filter(|h| *h != a).collect();
        (a, others[rng.random_range(0..others.len())])
    };
    match rng.random_range(0..4) {
        0 => Fault::Crash(server(rng)),
        1 => Fault::Isolate(server(rng)),
        2 => {
            let (a, b) = pair(rng);
            Fault::Cut(a, b)
        }
        _ => {
            let (a, b) = pair(rng);
            Fault::Hold(a, b)
        }
    }
}

/// At most one member and one node out at a time.
fn allowed(events: &[Event], new: &Event) -> bool {
    let Some(host) = new.takes_out() else { return true };
    let same_group =
        |other: Host| matches!((host, other), (Host::Meta(_), Host::Meta(_)) | (Host::Node(_), Host::Node(_)));
    !events.iter().any(|e| e.ends() > new.at && e.takes_out().is_some_and(same_group))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape { metas: 3, nodes: 3 };
    const WINDOW: Duration = Duration::from_secs(30);

    #[test]
    fn a_seed_gives_the_same_schedule_and_another_seed_another() {
        assert_eq!(schedule(7, WINDOW, SHAPE, true), schedule(7, WINDOW, SHAPE, true));
        assert_ne!(schedule(7, WINDOW, SHAPE, true), schedule(8, WINDOW, SHAPE, true));
    }

    #[test]
    fn every_fault_ends_inside_the_window_and_the_client_never_crashes() {
        for seed in 0..500 {
            for e in schedule(seed, WINDOW, SHAPE, true) {
                assert!(e.ends() <= WINDOW, "seed {seed}: {e}");
                assert!(!e.lasts.is_zero(), "seed {seed}: {e}");
                assert!(
                    !matches!(e.fault, Fault::Crash(Host::Client) | Fault::Isolate(Host::Client)),
                    "seed {seed}: {e}"
                );
                if let Fault::Cut(a, b) | Fault::Hold(a, b) = e.fault {
                    assert_ne!(a, b, "seed {seed}: {e}");
                }
            }
        }
    }

    #[test]
    fn at_most_one_member_and_one_node_are_out_at_once() {
        for seed in 0..500 {
            let events = schedule(seed, WINDOW, SHAPE, true);
            for (i, a) in events.iter().enumerate() {
                for b in &events[i + 1..] {
                    let overlap = a.at < b.ends() && b.at < a.ends();
                    let both_out = matches!(
                        (a.takes_out(), b.takes_out()),
                        (Some(Host::Meta(_)), Some(Host::Meta(_))) | (Some(Host::Node(_)), Some(Host::Node(_)))
                    );
                    assert!(!(overlap && both_out), "seed {seed}: {a} and {b}");
                }
            }
        }
    }

    #[test]
    fn rot_hits_one_node_and_only_while_every_node_is_in() {
        for seed in 0..500 {
            let events = schedule(seed, WINDOW, SHAPE, true);
            let rotted: std::collections::BTreeSet<Host> =
                events.iter().filter_map(|e| if let Fault::Rot(h) = e.fault { Some(h) } else { None }).collect();
            assert!(rotted.len() <= 1, "seed {seed}: rot on {rotted:?}");
            for rot in events.iter().filter(|e| matches!(e.fault, Fault::Rot(_))) {
                for e in events.iter().filter(|e| matches!(e.takes_out(), Some(Host::Node(_)))) {
                    let clear = e.ends() + ROT_QUIET <= rot.at || rot.ends() <= e.at;
                    assert!(clear, "seed {seed}: {rot} while {e}");
                }
            }
        }
    }

    #[test]
    fn failing_disks_leave_the_main_faults_of_a_seed_as_they_were() {
        for seed in 0..100 {
            let all = schedule(seed, WINDOW, SHAPE, false);
            let without: Vec<Event> = all.iter().copied().filter(|e| !matches!(e.fault, Fault::Eio(..))).collect();
            assert_eq!(without, main_faults(seed, WINDOW, SHAPE), "seed {seed}");
        }
    }

    #[test]
    fn rot_leaves_the_other_faults_of_a_seed_as_they_were() {
        for seed in 0..100 {
            let all = schedule(seed, WINDOW, SHAPE, true);
            let without: Vec<Event> = all.iter().copied().filter(|e| !matches!(e.fault, Fault::Rot(_))).collect();
            let mut before = main_faults(seed, WINDOW, SHAPE);
            add_eio(seed, WINDOW, SHAPE, &mut before);
            assert_eq!(without, before, "seed {seed}");
            assert!(all.windows(2).all(|w| w[0].at <= w[1].at), "seed {seed}: out of order");
        }
    }

    #[test]
    fn runs_see_every_kind_of_fault() {
        let all: Vec<Fault> = (0..50).flat_map(|s| schedule(s, WINDOW, SHAPE, true)).map(|e| e.fault).collect();
        assert!(all.iter().any(|f| matches!(f, Fault::Crash(Host::Meta(_)))));
        assert!(all.iter().any(|f| matches!(f, Fault::Crash(Host::Node(_)))));
        assert!(all.iter().any(|f| matches!(f, Fault::Isolate(_))));
        assert!(all.iter().any(|f| matches!(f, Fault::Cut(..))));
        assert!(all.iter().any(|f| matches!(f, Fault::Hold(..))));
        assert!(all.iter().any(|f| matches!(f, Fault::Rot(_))));
        for failing in [Failing::Reads, Failing::Writes, Failing::Everything] {
            assert!(all.iter().any(|f| matches!(f, Fault::Eio(Host::Node(_), x) if *x == failing)), "{failing}");
        }
    }
}
