//! What `s3-load` measured: one result per (object size, phase, path), as
//! markdown tables ready for bench/RESULTS.md, or as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use chuyi_common::size::ByteSize;

use crate::cpu::CpuTimes;
use crate::latency::LatencySummary;
use crate::s3_load::{Phase, S3LoadSpec, SizeSpec};

/// One phase on one path.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseResult {
    pub object_bytes: u64,
    pub phase: Phase,
    /// "gateway", "gateway-owned", "direct", "gateway-performance",
    /// "gateway-capacity", "gateway-sm4" or "gateway-aes256".
    pub path: &'static str,
    pub concurrency: usize,
    /// Timed requests: one per object, or one per page of a listing.
    pub requests: u64,
    /// Objects written, read or deleted; keys listed.
    pub objects: u64,
    /// Object bytes moved (zero for LIST and DELETE).
    pub bytes: u64,
    pub seconds: f64,
    pub objects_per_s: f64,
    /// Decimal megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Per request.
    pub latency: LatencySummary,
    /// CPU spent during the phase, by part.
    pub cpu: CpuTimes,
    /// PUT only: what the storage nodes' disk files grew by (du).
    pub disk_bytes: Option<u64>,
}

/// What one phase measured, before it is a [`PhaseResult`].
#[derive(Debug)]
pub struct Measured {
    pub requests: u64,
    pub objects: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub latency: LatencySummary,
    pub cpu: CpuTimes,
}

impl PhaseResult {
    pub fn new(phase: Phase, path: &'static str, size: SizeSpec, m: Measured) -> Self {
        let seconds = m.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        Self {
            object_bytes: size.object_bytes,
            phase,
            path,
            concurrency: size.concurrency,
            requests: m.requests,
            objects: m.objects,
            bytes: m.bytes,
            seconds,
            objects_per_s: m.objects as f64 / seconds,
            mb_per_s: m.bytes as f64 / seconds / 1e6,
            latency: m.latency,
            cpu: m.cpu,
            disk_bytes: None,
        }
    }

    /// Bytes on the nodes' disks per object byte stored (PUT only).
    pub fn disk_per_byte(&self) -> Option<f64> {
        Some(self.disk_bytes? as f64 / self.bytes.max(1) as f64)
    }

    /// CPU milliseconds per request: (load generator, gateway, cluster).
    pub fn cpu_per_request(&self) -> (f64, f64, f64) {
        let n = self.requests.max(1) as f64;
        (self.cpu.load_ms as f64 / n, self.cpu.gateway_ms as f64 / n, self.cpu.cluster_ms as f64 / n)
    }

    fn cpu_total_per_request(&self) -> f64 {
        let (l, g, c) = self.cpu_per_request();
        l + g + c
    }

    /// One plain line, for progress on stderr.
    pub fn line(&self) -> String {
        format!(
            "s3-load size={} phase={} path={} in_flight={} objects={} requests={} seconds={:.2} objects/s={:.0} \
             MB/s={:.1} p50_ms={:.2} p99_ms={:.2} cpu_ms={}+{}+{}{}",
            ByteSize(self.object_bytes),
            self.phase.name(),
            self.path,
            self.concurrency,
            self.objects,
            self.requests,
            self.seconds,
            self.objects_per_s,
            self.mb_per_s,
            self.latency.p50_us / 1e3,
            self.latency.p99_us / 1e3,
            self.cpu.load_ms,
            self.cpu.gateway_ms,
            self.cpu.cluster_ms,
            self.disk_per_byte().map(|d| format!(" disk/data={d:.3}")).unwrap_or_default()
        )
    }
}

/// Everything one run measured, and how it was run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct S3Report {
    pub spec: S3LoadSpec,
    pub results: Vec<PhaseResult>,
    /// MD5 and SHA-256 on one core, over the last size's body.
    pub md5_mb_per_s: f64,
    pub sha256_mb_per_s: f64,
}

impl S3Report {
    /// The results table, then the gateway/direct ratios.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| size | phase | path | in flight | objects | objects/s | MB/s | p50 ms | p99 ms | \
             CPU ms/request (load + gateway + cluster) | disk / data |\n\
             |---|---|---|---:|---:|---:|---:|---:|---:|---|---:|\n",
        );
        // Each phase's two paths on adjacent rows, though they ran apart.
        let mut rows: Vec<&PhaseResult> = self.results.iter().collect();
        rows.sort_by_key(|r| (r.object_bytes, r.phase, r.path != "gateway", r.path));
        for r in rows {
            let (l, g, c) = r.cpu_per_request();
            let mb = if r.bytes == 0 { "–".to_string() } else { format!("{:.1}", r.mb_per_s) };
            let disk = r.disk_per_byte().map_or_else(|| "–".to_string(), |d| format!("{d:.3}"));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.0} | {mb} | {:.2} | {:.2} | {l:.2} + {g:.2} + {c:.2} | {disk} |",
                ByteSize(r.object_bytes),
                r.phase.name(),
                r.path,
                r.concurrency,
                r.objects,
                r.objects_per_s,
                r.latency.p50_us / 1e3,
                r.latency.p99_us / 1e3,
            );
        }
        let _ = writeln!(
            out,
            "\nOne core here hashes {:.0} MB/s with MD5 and {:.0} MB/s with SHA-256 (over the last size's body, once).",
            self.md5_mb_per_s, self.sha256_mb_per_s
        );
        out.push_str(
            "\ngateway / direct:\n\n\
             | size | phase | objects/s | p50 | p99 | CPU/request |\n\
             |---|---|---:|---:|---:|---:|\n",
        );
        for (gateway, direct) in self.pairs("direct") {
            let cpu = ratio(gateway.cpu_total_per_request(), direct.cpu_total_per_request());
            let _ = writeln!(out, "{} {cpu} |", ratio_row(gateway, direct));
        }
        // Packing against the layout before it, when both ran.
        if self.pairs("gateway-owned").next().is_some() {
            out.push_str(
                "\ngateway (packed) / gateway-owned (every object in chunks of its own):\n\n\
                 | size | phase | objects/s | p50 | p99 | disk / data |\n\
                 |---|---|---:|---:|---:|---:|\n",
            );
            for (packed, owned) in self.pairs("gateway-owned") {
                let disk = match (packed.disk_per_byte(), owned.disk_per_byte()) {
                    (Some(p), Some(o)) => ratio(p, o),
                    _ => "–".to_string(),
                };
                let _ = writeln!(out, "{} {disk} |", ratio_row(packed, owned));
            }
        }
        // Each compression policy and cipher against neither, when both
        // ran: the disk column is stored/sent.
        for policy in ["gateway-performance", "gateway-capacity", "gateway-sm4", "gateway-aes256"] {
            if self.pairs(policy).next().is_none() {
                continue;
            }
            let _ = write!(
                out,
                "\n{policy} / gateway (neither compressed nor encrypted):\n\n\
                 | size | phase | objects/s | p50 | p99 | disk / data |\n\
                 |---|---|---:|---:|---:|---:|\n"
            );
            for (off, compressed) in self.pairs(policy) {
                let disk = match (compressed.disk_per_byte(), off.disk_per_byte()) {
                    (Some(c), Some(o)) => ratio(c, o),
                    _ => "–".to_string(),
                };
                let _ = writeln!(out, "{} {disk} |", ratio_row(compressed, off));
            }
        }
        out
    }

    /// (gateway, `peer`) results of the same size and phase.
    fn pairs<'a>(&'a self, peer: &'a str) -> impl Iterator<Item = (&'a PhaseResult, &'a PhaseResult)> {
        self.results.iter().filter(|r| r.path == "gateway").filter_map(move |g| {
            let d = self
                .results
                .iter()
                .find(|d| d.path == peer && d.object_bytes == g.object_bytes && d.phase == g.phase)?;
            Some((g, d))
        })
    }
}

/// `a / b` with two decimals; a dash when nothing was measured on `b`
/// (CPU time below the clock tick, say).
/// A table row's common columns, `a` over `b`: "| size | phase |
/// objects/s | p50 | p99 |", open for one more.
fn ratio_row(a: &PhaseResult, b: &PhaseResult) -> String {
    format!(
        "| {} | {} | {} | {} | {} |",
        ByteSize(a.object_bytes),
        a.phase.name(),
        ratio(a.objects_per_s, b.objects_per_s),
        ratio(a.latency.p50_us, b.latency.p50_us),
        ratio(a.latency.p99_us, b.latency.p99_us)
    )
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3_client::PayloadSigning;

    fn result(path: &'static str, phase: Phase, objects_per_s: f64, p99_us: f64) -> PhaseResult {
        let size = SizeSpec { object_bytes: 4096, objects: 100, concurrency: 8 };
        let m = Measured {
            requests: 100,
            objects: 100,
            bytes: 409_600,
            elapsed: Duration::from_secs_f64(100.0 / objects_per_s),
            latency: LatencySummary { p50_us: p99_us / 2.0, p99_us, ..LatencySummary::default() },
            cpu: CpuTimes { load_ms: 100, gateway_ms: 0, cluster_ms: 100 },
        };
        PhaseResult::new(phase, path, size, m)
    }

    #[test]
    fn the_ratio_table_pairs_each_gateway_phase_with_its_direct_peer() {
        let report = S3Report {
            spec: S3LoadSpec {
                nodes: 3,
                sizes: vec![],
                get_rounds: 1,
                list_rounds: 1,
                payload: PayloadSigning::Unsigned,
                gateway_threads: 1,
                paths: vec![],
                data: None,
            },
            md5_mb_per_s: 0.0,
            sha256_mb_per_s: 0.0,
            results: vec![
                result("gateway", Phase::Put, 500.0, 4000.0),
                result("direct", Phase::Put, 1000.0, 2000.0),
                result("gateway", Phase::Get, 800.0, 1000.0),
            ],
        };
        let md = report.markdown();
        let (results, ratios) = md.split_once("gateway / direct:").expect("a ratio table");
        assert!(results.contains("| 4KiB | GET | gateway | 8 | 100 | 800 | 3.3 | 0.50 | 1.00 |"), "{md}");
        assert!(!md.contains("gateway-owned"), "no packed/owned table without the owned path: {md}");
        assert!(ratios.contains("| 4KiB | PUT | 0.50 | 2.00 | 2.00 | 1.00 |"), "{md}");
        assert!(!ratios.contains("| 4KiB | GET | "), "a phase without its peer has no ratio: {md}");
    }
}
