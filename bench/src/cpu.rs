//! CPU time spent by the parts of one benchmark run on this machine, read
//! from `/proc`: this process's threads split by name (the gateway's
//! runtime names its threads [`GATEWAY_THREAD`]; every other thread is the
//! load generator and the direct path's client), and the child processes
//! (the cluster's metadata members and storage nodes).
//!
//! Why not `getrusage`: it cannot split one process's threads, and it sees
//! children only once they are reaped. Resolution is the kernel's clock
//! tick (10 ms), fine for phases of a second or more.

use std::fs;

/// Thread name prefix of the gateway's runtime (at most 15 bytes survive
/// in `/proc/*/comm`).
pub const GATEWAY_THREAD: &str = "s3-gateway";

/// Linux reports utime and stime in USER_HZ, which is 100 on every
/// architecture it supports (the kernel's own HZ is hidden behind it).
const MS_PER_TICK: u64 = 10;

/// Accumulated CPU milliseconds (user + system) up to one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CpuTimes {
    /// This process, outside the gateway's runtime.
    pub load_ms: u64,
    /// The gateway's runtime threads.
    pub gateway_ms: u64,
    /// Child processes: the cluster.
    pub cluster_ms: u64,
}

impl CpuTimes {
    /// What was spent between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            load_ms: self.load_ms.saturating_sub(earlier.load_ms),
            gateway_ms: self.gateway_ms.saturating_sub(earlier.gateway_ms),
            cluster_ms: self.cluster_ms.saturating_sub(earlier.cluster_ms),
        }
    }
}

/// The times now. A thread or child that ends between listing and reading
/// is skipped: it is counted in neither sample, or only in the earlier.
pub fn sample() -> CpuTimes {
    let mut times = CpuTimes::default();
    for stat in read_all("/proc/self/task", "stat") {
        let Some((comm, ticks)) = parse_stat(&stat) else { continue };
        if comm.starts_with(GATEWAY_THREAD) {
            times.gateway_ms += ticks.cpu * MS_PER_TICK;
        } else {
            times.load_ms += ticks.cpu * MS_PER_TICK;
        }
    }
    let me = u64::from(std::process::id());
    for stat in read_all("/proc", "stat") {
        let Some((_, ticks)) = parse_stat(&stat) else { continue };
        if ticks.ppid == me {
            times.cluster_ms += ticks.cpu * MS_PER_TICK;
        }
    }
    times
}

/// CPU milliseconds (user + system) process `pid` has spent; none once it
/// is gone.
pub fn process_ms(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, ticks)| ticks.cpu * MS_PER_TICK)
}

/// CPU milliseconds the whole machine has been busy, all cores together:
/// every state of the `cpu` line of `/proc/stat` but idle and iowait
/// (guest time is already inside user).
pub fn machine_busy_ms() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    parse_machine(&stat)
}

fn parse_machine(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| ticks.get(i)).sum();
    Some(busy * MS_PER_TICK)
}

/// `file` of every numeric entry of `dir`.
fn read_all(dir: &str, file: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| fs::read_to_string(e.path().join(file)).ok())
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
struct StatTicks {
    ppid: u64,
    /// utime + stime.
    cpu: u64,
}

/// (comm, ticks) of one `stat` line. The name sits in parentheses and may
/// itself hold spaces and parentheses, so fields are counted from the last
/// `)`: state is field 3, ppid 4, utime 14, stime 15 (proc(5)).
fn parse_stat(stat: &str) -> Option<(&str, StatTicks)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some((comm, StatTicks { ppid: field(4)?, cpu: field(14)? + field(15)? }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "4242 (s3-gateway (1)) S 17 4242 4242 0 -1 4194368 100 0 0 0 250 31 0 0 20 0 2 0 1 0 0";
        assert_eq!(parse_stat(stat), Some(("s3-gateway (1)", StatTicks { ppid: 17, cpu: 281 })));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_machine_is_busy_in_every_state_but_idle_and_iowait() {
        let stat = "cpu  100 2 30 5000 70 4 5 1 9 0\ncpu0 50 1 15 2500 35 2 2 0 0 0\n";
        assert_eq!(parse_machine(stat), Some((100 + 2 + 30 + 4 + 5 + 1) * MS_PER_TICK));
        assert_eq!(parse_machine("intr 1 2 3"), None);
    }
}
