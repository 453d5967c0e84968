//! Prometheus metrics: each process builds one registry of what it counts
//! (prometheus-client, the Prometheus project's own Rust client: typed
//! metrics and label sets, no global state, OpenMetrics text), adds the
//! process's own CPU, memory and open files ([`ProcessCollector`]), and
//! serves it at `GET /metrics` on the address it is given ([`serve`]).
//!
//! The server is a few lines of HTTP/1.1 on tokio, not a web framework:
//! one request per connection, a request head of at most 8 KiB read within
//! 5 s, `/metrics` answered, anything else 404.

use std::sync::Arc;
use std::time::Duration;

pub use prometheus_client;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
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
