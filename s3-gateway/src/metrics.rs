//! What the gateway counts for Prometheus: requests by operation and
//! status, their latency (to the response head) by operation, body bytes
//! each way, open connections, and each QoS rule's admissions, delays and
//! refusals. Labels are bounded sets: s3s's operation names, HTTP status
//! codes, QoS scopes (as many as rules); never bucket or object names.

use std::sync::{Arc, OnceLock};

use chuyi_client::qos::Qos;
use chuyi_common::metrics::prometheus_client;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::admission::Admission;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: String,
}

type Latency = Family<OpLabels, Histogram, fn() -> Histogram>;

/// The operation a request turned out to be, set by the access check (a
/// request refused before it has none).
#[derive(Clone, Debug, Default)]
pub struct OpSlot(Arc<OnceLock<String>>);

impl OpSlot {
    pub fn set(&self, op: &str) {
        let _ = self.0.set(op.to_string());
    }

    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// The gateway's metrics, registered once per process.
#[derive(Debug)]
pub struct S3Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
    received: Counter,
    sent: Counter,
    /// Set when the service is built (the collector reads them live).
    admission: OnceLock<Arc<Admission>>,
    qos: OnceLock<Arc<Qos>>,
    /// Set when TLS is served.
    tls: OnceLock<Arc<crate::tls::Tls>>,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

impl S3Metrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Arc::new(Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            received: Counter::default(),
            sent: Counter::default(),
            admission: OnceLock::new(),
            qos: OnceLock::new(),
            tls: OnceLock::new(),
        });
        let s3 = registry.sub_registry_with_prefix("chuyi_s3");
        s3.register("requests", "S3 requests answered, by operation and status code", metrics.requests.clone());
        s3.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response head, by operation",
            metrics.latency.clone(),
        );
        s3.register("received_bytes", "Request body bytes received", metrics.received.clone());
        s3.register("sent_bytes", "Response body bytes sent", metrics.sent.clone());
        registry.register_collector(Box::new(Live(metrics.clone())));
        metrics
    }

    /// Exports the expiry of `tls`'s certificate of the moment.
    pub(crate) fn watching_tls(&self, tls: Arc<crate::tls::Tls>) {
        let _ = self.tls.set(tls);
    }

    pub(crate) fn serving(&self, admission: Arc<Admission>, qos: Arc<Qos>) {
        let _ = self.admission.set(admission);
        let _ = self.qos.set(qos);
    }

    /// A request answered: its operation (none: refused before it was
    /// known), status and time to its response head.
    pub fn answered(&self, op: Option<&str>, code: u16, seconds: f64) {
        let op = op.unwrap_or("unknown").to_string();
        self.latency.get_or_create(&OpLabels { op: op.clone() }).observe(seconds);
        self.requests.get_or_create(&RequestLabels { op, code }).inc();
    }

    pub fn received(&self, n: u64) {
        self.received.inc_by(n);
    }

    pub fn sent(&self, n: u64) {
        self.sent.inc_by(n);
    }
}

/// Open connections and QoS counters, read at each scrape.
#[derive(Debug)]
struct Live(Arc<S3Metrics>);

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(admission) = self.0.admission.get() {
            let open = admission.open() as i64;
            chuyi_common::metrics::encode_gauge(&mut encoder, "chuyi_s3_connections", "Open client connections", open)?;
        }
        if let Some(qos) = self.0.qos.get() {
            qos.encode_metrics("chuyi_s3", &mut encoder)?;
        }
        if let Some(not_after) = self.0.tls.get().and_then(|tls| tls.not_after()) {
            chuyi_common::metrics::encode_gauge(
                &mut encoder,
                "chuyi_s3_tls_certificate_expiry_timestamp_seconds",
                "When the TLS certificate in use expires (its notAfter), in Unix seconds",
                not_after,
            )?;
        }
        Ok(())
    }
}
