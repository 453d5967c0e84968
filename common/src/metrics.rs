//! Prometheus metrics: each process builds one registry of what it counts
//! (prometheus-client, the Prometheus project's own Rust client: typed
//! metrics and label sets, no global state, OpenMetrics text), adds the
//! process's own CPU, memory and open files ([`ProcessCollector`]), and
//! serves it at `GET /metrics` on the address it is given ([`serve`]).
//!
//! The server is a few lines of HTTP/1.1 on tokio, not a web framework:
//! one request per connection, a request head of at most 8 KiB read within
//! 5 s, `/metrics` answered, anything else 404.
//!
//! [`LatencyHistogram`] is for the hottest paths (every disk I/O): atomics
//! only, where prometheus-client's histogram takes a lock per observation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use prometheus_client;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The content type of the OpenMetrics text prometheus-client writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const HEAD_MAX: usize = 8 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Scrapes answered at once; past it a connection waits its turn (it
/// shares the process's file descriptors with what the process serves).
const CONNECTIONS_MAX: usize = 16;

/// Serves `registry` at `/metrics` on `listener` for as long as the
/// process runs: a failed accept (out of files, a connection reset before
/// it was taken) is logged and retried, never the end of the endpoint.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &registry).await {
                tracing::debug!(error = %e, "metrics request");
            }
            drop(slot);
        });
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HEAD_MAX {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        std::io::Result::Ok(())
    };
    tokio::time::timeout(HEAD_TIMEOUT, read).await.map_err(|_| std::io::ErrorKind::TimedOut)??;
    let (status, kind, body) = match route(&head) {
        Some(()) => {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).map_err(std::io::Error::other)?;
            ("200 OK", CONTENT_TYPE, text)
        }
        None => ("404 Not Found", "text/plain", "only /metrics is served here\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Whether a request head asks for the metrics.
fn route(head: &[u8]) -> Option<()> {
    let line = head.split(|&b| b == b'\r').next()?;
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next()?, parts.next()?);
    (method == b"GET" && (path == b"/metrics" || path.starts_with(b"/metrics?"))).then_some(())
}

/// The upper bound of a [`LatencyHistogram`]'s first bucket: 10 µs.
const LATENCY_FIRST_BOUND_NS: u64 = 10_000;
/// Buckets doubling from 10 µs to about 5.2 s, then +Inf.
const LATENCY_BUCKETS: usize = 20;

/// A latency histogram in seconds, updated with two relaxed atomic adds
/// per observation: buckets doubling from 10 µs to 5.2 s. Its count (the
/// sum of its buckets) is the number of operations, so a rate of it is
/// IOPS. Clones share the counts (as prometheus-client's metrics do), so
/// it can be a [`Family`](prometheus_client::metrics::family::Family)'s.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram(Arc<LatencyCounts>);

#[derive(Debug, Default)]
struct LatencyCounts {
    /// Per bucket (not cumulative), the last one +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.0.buckets[latency_bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// [`Self::observe`] of a time in seconds.
    pub fn observe_seconds(&self, seconds: f64) {
        self.observe(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX));
    }

    /// Operations observed.
    pub fn count(&self) -> u64 {
        self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// (upper bound in seconds, count in that bucket alone), the last
    /// bound `f64::MAX`, which the encoder writes as `+Inf`.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let bound = |i: usize| match i {
            LATENCY_BUCKETS => f64::MAX,
            _ => (LATENCY_FIRST_BOUND_NS << i) as f64 / 1e9,
        };
        self.0.buckets.iter().enumerate().map(|(i, b)| (bound(i), b.load(Ordering::Relaxed))).collect()
    }
}

/// The bucket of an observation of `ns`: the first whose bound is at
/// least `ns` (bounds 10 µs × 2^i), past the last one +Inf.
fn latency_bucket(ns: u64) -> usize {
    // For ns in (B·2^(i-1), B·2^i], (ns-1)/B has exactly i significant bits.
    let q = ns.saturating_sub(1) / LATENCY_FIRST_BOUND_NS;
    ((u64::BITS - q.leading_zeros()) as usize).min(LATENCY_BUCKETS)
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = self.buckets();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl prometheus_client::metrics::TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

/// The process's CPU seconds, resident memory and open files, from
/// `/proc/self`, under Prometheus's standard `process_` names.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = process() else { return Ok(()) };
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        encode_gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.resident_bytes as i64,
        )?;
        encode_gauge(&mut encoder, "process_open_fds", "Open file descriptors", p.open_fds as i64)
    }
}

/// One gauge read at scrape time, by a collector.
pub fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    open_fds: u64,
}

fn process() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15, rss 24.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let hz = 100.0; // USER_HZ, 100 on every Linux this runs on.
    let cpu_seconds = (ticks(11)? + ticks(12)?) as f64 / hz;
    let resident_bytes = ticks(21)? * 4096;
    let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
    Some(Process { cpu_seconds, resident_bytes, open_fds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_of_metrics_is_answered() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Some(()));
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Some(()));
        for other in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"POST /metrics HTTP/1.1\r\n\r\n", b"", b"\xff\xfe", b"GET"] {
            assert_eq!(route(other), None, "{other:?}");
        }
    }

    #[test]
    fn latencies_land_in_the_first_bucket_whose_bound_holds_them() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(10_000), 0, "the bound itself is in its bucket");
        assert_eq!(latency_bucket(10_001), 1);
        assert_eq!(latency_bucket(20_000), 1);
        assert_eq!(latency_bucket(20_001), 2);
        assert_eq!(latency_bucket(LATENCY_FIRST_BOUND_NS << 19), 19);
        assert_eq!(latency_bucket((LATENCY_FIRST_BOUND_NS << 19) + 1), LATENCY_BUCKETS, "past 5.2 s: +Inf");
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS);
        let h = LatencyHistogram::default();
        for us in [5, 15, 15, 7_000_000] {
            h.observe(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 4);
        let b = h.buckets();
        assert_eq!((b[0].1, b[1].1, b[LATENCY_BUCKETS].1), (1, 2, 1));
        assert_eq!(b[LATENCY_BUCKETS].0, f64::MAX);
        let mut registry = Registry::default();
        registry.register("chuyi_test_io_duration_seconds", "Test", h);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("# TYPE chuyi_test_io_duration_seconds histogram"), "{text}");
        assert!(text.contains("chuyi_test_io_duration_seconds_bucket{le=\"+Inf\"} 4"), "cumulative: {text}");
        assert!(text.contains("chuyi_test_io_duration_seconds_count 4"), "{text}");
    }

    #[test]
    fn the_process_counts_itself() {
        let p = process().expect("/proc/self");
        assert!(p.resident_bytes > 1 << 20 && p.open_fds > 0);
    }

    #[tokio::test]
    async fn a_scrape_gets_the_registry() {
        let mut registry = Registry::default();
        let counter: prometheus_client::metrics::counter::Counter = Default::default();
        registry.register("chuyi_test_things", "Things", counter.clone());
        registry.register_collector(Box::new(ProcessCollector));
        counter.inc_by(3);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, Arc::new(registry)));
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("send");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("read");
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.contains("chuyi_test_things_total 3"), "{text}");
        assert!(text.contains("process_resident_memory_bytes") && text.ends_with("# EOF\n"), "{text}");
    }
}
