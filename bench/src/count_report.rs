//! What `meta-count` measured on one group: the PUT rate as the bucket
//! filled, listing latency, memory and disk at each checkpoint, snapshot
//! builds, and a new member catching up; as markdown tables ready for
//! bench/RESULTS.md, or as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::latency::LatencySummary;
use crate::proc_stat::{DiskUse, Memory};

/// Puts of one stretch of the fill, with nothing else running.
#[derive(Debug, Clone, Serialize)]
pub struct FillStep {
    /// Objects in the bucket before and after.
    pub from: u64,
    pub to: u64,
    pub seconds: f64,
    pub puts_per_s: f64,
    pub latency: LatencySummary,
    /// Each member's RSS at the stretch's end, in the order given.
    pub rss_bytes: Vec<u64>,
    pub cpu: StretchCpu,
}

/// Cores busy on average during a stretch (1.0 = one core all the time):
/// the members, this bench's writers, and everything else on the machine,
/// which should be near zero for figures worth keeping.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StretchCpu {
    pub members_cores: f64,
    pub bench_cores: f64,
    pub other_cores: f64,
}

/// Pages of one kind of listing, each of at most 1000 keys and prefixes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListStats {
    pub pages: usize,
    /// Keys plus common prefixes, on average per page.
    pub items_per_page: f64,
    pub latency: LatencySummary,
}

/// One member, looked at from outside.
#[derive(Debug, Clone, Serialize)]
pub struct MemberSample {
    pub id: u64,
    pub leader: bool,
    pub memory: Memory,
    pub disk: DiskUse,
}

/// The group with `objects` in the bucket, the writers stopped.
#[derive(Debug, Clone, Serialize)]
pub struct Checkpoint {
    pub objects: u64,
    /// ListObjectsV2 without prefix or delimiter, from a random key on.
    pub flat: ListStats,
    /// ListObjectsV2 of one shard's folder with delimiter "/": its study
    /// folders as common prefixes.
    pub delimited: ListStats,
    pub members: Vec<MemberSample>,
}

/// A snapshot a member built.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotBuild {
    pub member: u64,
    /// Objects the writers had put when the finished file was seen.
    pub objects: u64,
    pub bytes: u64,
    /// From the build's start to its file's last write.
    pub build_seconds: f64,
    /// The member's largest RSS seen (sampled every 200 ms) while the
    /// file was being written; none when no sample fell in the build.
    pub sampled_rss_bytes: Option<u64>,
}

/// A snapshot of the whole filled state, built with the writers stopped.
#[derive(Debug, Clone, Serialize)]
pub struct QuietBuild {
    pub wait_seconds: f64,
    pub build: SnapshotBuild,
    /// The leader's peak RSS from the trigger's start to the build's end,
    /// or its lifetime peak when the peak could not be reset.
    pub leader_peak_rss_bytes: u64,
    pub peak_was_reset: bool,
}

/// A new, empty member added to the filled group; times are seconds from
/// the first AddMember.
#[derive(Debug, Clone, Serialize)]
pub struct CatchUp {
    pub member: u64,
    /// AddMember attempts that ran out of the client's 5 s per attempt
    /// (the leader answers only once the learner is up to date); the CLI
    /// gives up after 15 s.
    pub add_attempts_timed_out: u32,
    pub add_returned_s: f64,
    /// Snapshot receptions begun (more than one means a resend).
    pub transfers: usize,
    pub receive_started_s: Option<f64>,
    pub received_s: Option<f64>,
    pub snapshot_bytes: Option<u64>,
    /// When the member first reported a snapshot (it answers status only
    /// after an install).
    pub installed_s: Option<f64>,
    /// When it had applied the leader's last entry as of the add.
    pub caught_up_s: f64,
    pub log_index: u64,
    pub memory: Memory,
}

/// One group's run.
#[derive(Debug, Clone, Serialize)]
pub struct CountReport {
    pub members: usize,
    pub writers: usize,
    pub objects: u64,
    /// Seconds of puts, checkpoints left out.
    pub fill_seconds: f64,
    pub wall_seconds: f64,
    pub steps: Vec<FillStep>,
    /// The last step's puts/s over the first's.
    pub last_over_first: f64,
    pub checkpoints: Vec<Checkpoint>,
    pub builds_during_fill: Vec<SnapshotBuild>,
    pub quiet_build: QuietBuild,
    pub catch_up: Option<CatchUp>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn ms(us: f64) -> f64 {
    us / 1e3
}

fn opt_s(s: Option<f64>) -> String {
    s.map_or_else(|| "–".to_string(), |s| format!("{s:.2} s"))
}

impl CountReport {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "### {} member(s), {} writers, {} objects in one bucket\n\n\
             {:.0} s of puts, {:.0} s in all. PUT rate by stretch of the fill:\n\n\
             | objects | puts/s | put p50 ms | put p99 ms | put max ms | RSS MiB after | cores: members / bench / other |\n\
             |---|---:|---:|---:|---:|---|---|",
            self.members, self.writers, self.objects, self.fill_seconds, self.wall_seconds
        );
        for s in &self.steps {
            let l = &s.latency;
            let _ = writeln!(
                out,
                "| {}–{} | {:.0} | {:.1} | {:.1} | {:.0} | {} | {:.2} / {:.2} / {:.2} |",
                s.from,
                s.to,
                s.puts_per_s,
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.max_us),
                s.rss_bytes.iter().map(|&b| format!("{:.0}", mib(b))).collect::<Vec<_>>().join(" / "),
                s.cpu.members_cores,
                s.cpu.bench_cores,
                s.cpu.other_cores
            );
        }
        let _ = writeln!(out, "\nlast / first stretch: {:.2}\n", self.last_over_first);
        self.checkpoint_tables(&mut out);
        self.snapshot_lines(&mut out);
        out
    }

    fn checkpoint_tables(&self, out: &mut String) {
        out.push_str(
            "ListObjectsV2 pages (1000 at most), writers stopped:\n\n\
             | objects | flat p50 ms | flat p99 ms | keys | prefix+\"/\" p50 ms | p99 ms | items |\n\
             |---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for c in &self.checkpoints {
            let (f, d) = (&c.flat, &c.delimited);
            let _ = writeln!(
                out,
                "| {} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} |",
                c.objects,
                ms(f.latency.p50_us),
                ms(f.latency.p99_us),
                f.items_per_page,
                ms(d.latency.p50_us),
                ms(d.latency.p99_us),
                d.items_per_page
            );
        }
        out.push_str(
            "\nMembers (RSS from /proc, disk from du):\n\n\
             | objects | member | RSS MiB | peak RSS MiB | RocksDB MiB | B/object | SST MiB | SST B/object | snapshots MiB |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for c in &self.checkpoints {
            for m in &c.members {
                let d = &m.disk;
                let per_object = |bytes: u64| match c.objects {
                    0 => "–".to_string(),
                    n => format!("{:.0}", bytes as f64 / n as f64),
                };
                let _ = writeln!(
                    out,
                    "| {} | {}{} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {} | {:.0} |",
                    c.objects,
                    m.id,
                    if m.leader { " (leader)" } else { "" },
                    mib(m.memory.rss_bytes),
                    mib(m.memory.peak_rss_bytes),
                    mib(d.rocksdb_bytes),
                    per_object(d.rocksdb_bytes),
                    mib(d.sst_bytes),
                    per_object(d.sst_bytes),
                    mib(d.snapshot_bytes)
                );
            }
        }
    }

    fn snapshot_lines(&self, out: &mut String) {
        let _ = writeln!(out, "\nSnapshots built during the fill: {}\n", self.builds_during_fill.len());
        if !self.builds_during_fill.is_empty() {
            out.push_str(
                "| member | at objects | file MiB | build s | RSS MiB during build (sampled) |\n|---|---:|---:|---:|---:|\n",
            );
        }
        for b in &self.builds_during_fill {
            let rss = b.sampled_rss_bytes.map_or_else(|| "–".to_string(), |r| format!("{:.0}", mib(r)));
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {rss} |",
                b.member,
                b.objects,
                mib(b.bytes),
                b.build_seconds
            );
        }
        self.quiet_line(out);
        self.catch_up_line(out);
    }

    fn quiet_line(&self, out: &mut String) {
        let q = &self.quiet_build;
        let _ = writeln!(
            out,
            "\nSnapshot of the filled state, writers stopped (member {}): {:.0} MiB built in {:.2} s; \
                 leader peak RSS {:.0} MiB{} ({:.1} s from the request to the file)",
            q.build.member,
            mib(q.build.bytes),
            q.build.build_seconds,
            mib(q.leader_peak_rss_bytes),
            if q.peak_was_reset { " over the trigger and build" } else { " (lifetime: peak not reset)" },
            q.wait_seconds
        );
    }

    fn catch_up_line(&self, out: &mut String) {
        if let Some(c) = &self.catch_up {
            let _ = writeln!(
                out,
                "\nNew member {} added to the filled group: snapshot {} received from {} to {}, installed by {}; \
                 caught up to log index {} in {:.2} s; AddMember returned at {:.2} s after {} timed-out attempt(s) \
                 of 5 s; {} transfer(s); its RSS {:.0} MiB, peak {:.0} MiB",
                c.member,
                c.snapshot_bytes.map_or_else(|| "–".to_string(), |b| format!("{:.0} MiB", mib(b))),
                opt_s(c.receive_started_s),
                opt_s(c.received_s),
                opt_s(c.installed_s),
                c.log_index,
                c.caught_up_s,
                c.add_returned_s,
                c.add_attempts_timed_out,
                c.transfers,
                mib(c.memory.rss_bytes),
                mib(c.memory.peak_rss_bytes)
            );
        }
    }
}
