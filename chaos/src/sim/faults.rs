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
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crash(h) => write!(f, "crash {h}"),
            Fault::Isolate(h) => write!(f, "isolate {h}"),
            Fault::Cut(a, b) => write!(f, "cut {a}-{b}"),
            Fault::Hold(a, b) => write!(f, "hold {a}-{b}"),
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
            Fault::Crash(h) | Fault::Isolate(h) => Some(h),
            Fault::Cut(..) | Fault::Hold(..) => None,
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

/// The faults of the run of `seed`, in start order, all ended by `window`.
pub fn schedule(seed: u64, window: Duration, shape: Shape) -> Vec<Event> {
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
        assert_eq!(schedule(7, WINDOW, SHAPE), schedule(7, WINDOW, SHAPE));
        assert_ne!(schedule(7, WINDOW, SHAPE), schedule(8, WINDOW, SHAPE));
    }

    #[test]
    fn every_fault_ends_inside_the_window_and_the_client_never_crashes() {
        for seed in 0..500 {
            for e in schedule(seed, WINDOW, SHAPE) {
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
            let events = schedule(seed, WINDOW, SHAPE);
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
    fn runs_see_every_kind_of_fault() {
        let all: Vec<Fault> = (0..50).flat_map(|s| schedule(s, WINDOW, SHAPE)).map(|e| e.fault).collect();
        assert!(all.iter().any(|f| matches!(f, Fault::Crash(Host::Meta(_)))));
        assert!(all.iter().any(|f| matches!(f, Fault::Crash(Host::Node(_)))));
        assert!(all.iter().any(|f| matches!(f, Fault::Isolate(_))));
        assert!(all.iter().any(|f| matches!(f, Fault::Cut(..))));
        assert!(all.iter().any(|f| matches!(f, Fault::Hold(..))));
    }
}
