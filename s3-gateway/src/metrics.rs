//! What the gateway counts for Prometheus: requests by operation and
//! status, their latency (to the response head) by operation, body bytes
//! each way, the same per bucket (requests and errors by request class,
//! latency, bytes), open connections, each QoS rule's admissions, delays
//! and refusals, and object bytes through compression and encryption.
//! Labels are bounded sets: s3s's operation names, HTTP status codes,
//! request classes, QoS scopes (as many as rules), codecs and ciphers, and
//! the names of buckets the access check found and let the caller use
//! (at most [`BUCKET_SERIES_MAX`], the latency histograms of fewer);
//! never object keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chuyi_client::qos::Qos;
use chuyi_common::metrics::prometheus_client;
use chuyi_common::metrics::LatencyHistogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::admission::Admission;
use crate::frames::{Codec, Spec};
use crate::sse::Algorithm;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BucketClass {
    bucket: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BucketLabel {
    bucket: String,
}

type Latency = Family<OpLabels, Histogram, fn() -> Histogram>;

/// Buckets counted apart, the first seen since the gateway started (a
/// deleted bucket keeps its place until then); requests of buckets past
/// them count under [`OTHER_BUCKETS`]. Bucket names are bounded already
/// (only buckets that exist and that the caller may use are named), this
/// bounds the series a scrape returns whatever the number of buckets.
pub const BUCKET_SERIES_MAX: usize = 1000;

/// Buckets whose latency histogram (23 series each) is kept apart, of
/// the [`BUCKET_SERIES_MAX`]; the rest share [`OTHER_BUCKETS`]'s.
pub const BUCKET_LATENCY_MAX: usize = 100;

/// The bucket label past [`BUCKET_SERIES_MAX`]: no bucket is named so
/// (names begin with a letter or digit).
pub const OTHER_BUCKETS: &str = "_other";

/// A request's class as AWS's CloudWatch request metrics count them:
/// get, put, delete, head, post, list, or other (bucket settings).
pub fn request_class(op: &str) -> &'static str {
    match op {
        "GetObject" => "get",
        "PutObject" | "UploadPart" | "UploadPartCopy" | "CopyObject" => "put",
        "DeleteObject" | "DeleteObjects" => "delete",
        "HeadObject" | "HeadBucket" => "head",
        "CreateMultipartUpload" | "CompleteMultipartUpload" | "PostObject" => "post",
        op if op.starts_with("List") => "list",
        _ => "other",
    }
}

/// What the access check learned of a request for the metrics: its
/// operation (a request refused before it has none) and the bucket it
/// was let use.
#[derive(Clone, Debug, Default)]
pub struct OpSlot(Arc<Noted>);

#[derive(Debug, Default)]
struct Noted {
    op: OnceLock<String>,
    bucket: OnceLock<String>,
    /// The bucket's labels, worked out once per request.
    labels: OnceLock<BucketLabels>,
    /// The bucket's byte counters, looked up once per request.
    bodies: OnceLock<BucketBodies>,
}

/// A bucket's labels: for its counters, and for its latency histogram.
#[derive(Debug)]
struct BucketLabels {
    counted: String,
    timed: String,
}

#[derive(Debug)]
struct BucketBodies {
    received: Counter,
    sent: Counter,
}

impl OpSlot {
    pub fn set(&self, op: &str) {
        let _ = self.0.op.set(op.to_string());
    }

    pub fn get(&self) -> Option<&str> {
        self.0.op.get().map(String::as_str)
    }

    /// The bucket the request was let use.
    pub fn set_bucket(&self, bucket: &str) {
        let _ = self.0.bucket.set(bucket.to_string());
    }

    pub fn bucket(&self) -> Option<&str> {
        self.0.bucket.get().map(String::as_str)
    }
}

/// Where a body's bytes are counted: the gateway's totals and, once the
/// access check has named it, the request's bucket.
#[derive(Clone, Debug)]
pub struct BodyCount {
    pub metrics: Arc<S3Metrics>,
    pub noted: OpSlot,
}

impl BodyCount {
    /// `n` bytes sent to the client (`out`) or received from it.
    pub fn add(&self, out: bool, n: u64) {
        let total = if out { &self.metrics.sent } else { &self.metrics.received };
        total.inc_by(n);
        let Some(labels) = self.metrics.labels_of(&self.noted) else { return };
        let bodies = self.noted.0.bodies.get_or_init(|| {
            let label = BucketLabel { bucket: labels.counted.clone() };
            BucketBodies {
                received: self.metrics.bucket_received.get_or_create(&label).clone(),
                sent: self.metrics.bucket_sent.get_or_create(&label).clone(),
            }
        });
        if out { &bodies.sent } else { &bodies.received }.inc_by(n);
    }
}

/// The gateway's metrics, registered once per process.
#[derive(Debug)]
pub struct S3Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
    received: Counter,
    sent: Counter,
    bucket_requests: Family<BucketClass, Counter>,
    bucket_errors: Family<BucketClass, Counter>,
    /// Atomics only: prometheus-client's histogram locks per observation.
    bucket_latency: Family<BucketLabel, LatencyHistogram>,
    bucket_received: Family<BucketLabel, Counter>,
    bucket_sent: Family<BucketLabel, Counter>,
    /// The buckets counted apart, at most [`BUCKET_SERIES_MAX`], each
    /// with its place in the order they were first seen.
    buckets: Mutex<HashMap<String, usize>>,
    /// Set when the service is built (the collector reads them live).
    admission: OnceLock<Arc<Admission>>,
    qos: OnceLock<Arc<Qos>>,
    framing: OnceLock<Arc<FramingCounts>>,
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
            bucket_requests: Family::default(),
            bucket_errors: Family::default(),
            bucket_latency: Family::default(),
            bucket_received: Family::default(),
            bucket_sent: Family::default(),
            buckets: Mutex::default(),
            admission: OnceLock::new(),
            qos: OnceLock::new(),
            framing: OnceLock::new(),
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
        s3.register(
            "bucket_requests",
            "S3 requests answered, by bucket and request class (get, put, delete, head, post, list, other)",
            metrics.bucket_requests.clone(),
        );
        s3.register(
            "bucket_errors",
            "S3 requests let use the bucket and answered with a 4xx or 5xx status, by bucket and request class",
            metrics.bucket_errors.clone(),
        );
        s3.register(
            "bucket_request_duration_seconds",
            "Time from a request's arrival to its response head, by bucket",
            metrics.bucket_latency.clone(),
        );
        s3.register("bucket_received_bytes", "Request body bytes received, by bucket", metrics.bucket_received.clone());
        s3.register("bucket_sent_bytes", "Response body bytes sent, by bucket", metrics.bucket_sent.clone());
        registry.register_collector(Box::new(Live(metrics.clone())));
        metrics
    }

    /// Exports the expiry of `tls`'s certificate of the moment.
    pub(crate) fn watching_tls(&self, tls: Arc<crate::tls::Tls>) {
        let _ = self.tls.set(tls);
    }

    pub(crate) fn serving(&self, admission: Arc<Admission>, qos: Arc<Qos>, framing: Arc<FramingCounts>) {
        let _ = self.admission.set(admission);
        let _ = self.qos.set(qos);
        let _ = self.framing.set(framing);
    }

    /// A request answered: what the access check noted of it (none:
    /// refused before it was looked at), status and time to its response
    /// head.
    pub fn answered(&self, noted: Option<&OpSlot>, code: u16, seconds: f64) {
        let op = noted.and_then(OpSlot::get);
        if let Some((labels, op)) = noted.and_then(|n| self.labels_of(n)).zip(op) {
            let counted = BucketClass { bucket: labels.counted.clone(), class: request_class(op) };
            self.bucket_requests.get_or_create(&counted).inc();
            if code >= 400 {
                self.bucket_errors.get_or_create(&counted).inc();
            }
            let timed = BucketLabel { bucket: labels.timed.clone() };
            self.bucket_latency.get_or_create(&timed).observe_seconds(seconds);
        }
        let op = op.unwrap_or("unknown").to_string();
        self.latency.get_or_create(&OpLabels { op: op.clone() }).observe(seconds);
        self.requests.get_or_create(&RequestLabels { op, code }).inc();
    }

    /// The labels of the bucket `noted` names, if it names one: worked
    /// out on the request's first use and kept in it.
    fn labels_of<'a>(&self, noted: &'a OpSlot) -> Option<&'a BucketLabels> {
        let bucket = noted.bucket()?;
        Some(noted.0.labels.get_or_init(|| self.bucket_labels(bucket)))
    }

    /// `bucket`'s labels: itself, or [`OTHER_BUCKETS`] once
    /// [`BUCKET_SERIES_MAX`] others are counted apart
    /// ([`BUCKET_LATENCY_MAX`] for its latency).
    fn bucket_labels(&self, bucket: &str) -> BucketLabels {
        let mut named = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let next = named.len();
        let place = match named.get(bucket) {
            Some(&place) => Some(place),
            None if next < BUCKET_SERIES_MAX => Some(*named.entry(bucket.to_string()).or_insert(next)),
            None => None,
        };
        let label = |max: usize| match place {
            Some(place) if place < max => bucket.to_string(),
            _ => OTHER_BUCKETS.to_string(),
        };
        BucketLabels { counted: label(BUCKET_SERIES_MAX), timed: label(BUCKET_LATENCY_MAX) }
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
        if let Some(framing) = self.0.framing.get() {
            framing.encode(&mut encoder)?;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodecLabel {
    codec: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlgorithmLabel {
    algorithm: &'static str,
}

const CODECS: [(Codec, &str); 2] = [(Codec::Zstd, "zstd"), (Codec::Lz4, "lz4")];
const ALGORITHMS: [Algorithm; 2] = [Algorithm::Sm4, Algorithm::Aes256];

fn codec_slot(codec: Codec) -> usize {
    match codec {
        Codec::Zstd => 0,
        Codec::Lz4 => 1,
    }
}

fn algorithm_slot(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::Sm4 => 0,
        Algorithm::Aes256 => 1,
    }
}

/// Object bytes through compression and encryption, counted by the data
/// path (relaxed atomics, once per object written and per frame read)
/// and read at each scrape. Bytes are logical: on writes, every byte of
/// an object written to a bucket that compresses (or seals), frames kept
/// raw included, and beside them what the compressed ones were stored as
/// (`compressed_out`: the two give a bucket policy's ratio); on reads,
/// the whole frames decoded (a range GET decodes whole 128 KiB frames),
/// of compressed frames only for `decompressed`.
#[derive(Debug, Default)]
pub struct FramingCounts {
    /// By codec: logical bytes written compressed, and their stored bytes
    /// (frames, index and trailer, tags too when also sealed).
    compressed_in: [AtomicU64; 2],
    compressed_out: [AtomicU64; 2],
    /// By codec: logical bytes read out of compressed frames.
    decompressed: [AtomicU64; 2],
    /// By cipher: logical bytes written sealed, and read out of sealed frames.
    encrypted: [AtomicU64; 2],
    decrypted: [AtomicU64; 2],
}

impl FramingCounts {
    /// An object (or part) of `logical` bytes written as `spec` says,
    /// taking `stored` bytes.
    pub fn wrote(&self, spec: &Spec, logical: u64, stored: u64) {
        if let Some(codec) = spec.codec {
            self.compressed_in[codec_slot(codec)].fetch_add(logical, Ordering::Relaxed);
            self.compressed_out[codec_slot(codec)].fetch_add(stored, Ordering::Relaxed);
        }
        if let Some(seal) = &spec.seal {
            self.encrypted[algorithm_slot(seal.algorithm)].fetch_add(logical, Ordering::Relaxed);
        }
    }

    /// A frame of `logical` bytes decoded, undoing `codec` and `cipher`
    /// ([`crate::frames::Layout::undoes`]).
    pub fn read_frame(&self, (codec, cipher): (Option<Codec>, Option<Algorithm>), logical: u64) {
        if let Some(codec) = codec {
            self.decompressed[codec_slot(codec)].fetch_add(logical, Ordering::Relaxed);
        }
        if let Some(algorithm) = cipher {
            self.decrypted[algorithm_slot(algorithm)].fetch_add(logical, Ordering::Relaxed);
        }
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::MetricType;
        let by_codec: [(&str, &str, &[AtomicU64; 2]); 3] = [
            (
                "chuyi_s3_compression_input_bytes",
                "Object bytes written to buckets that compress, before compression, by codec",
                &self.compressed_in,
            ),
            (
                "chuyi_s3_compression_output_bytes",
                "What the compressed object bytes were stored as, by codec (input over output is the ratio)",
                &self.compressed_out,
            ),
            (
                "chuyi_s3_decompressed_bytes",
                "Bytes decompressed on reads (whole frames, which ranged reads decode whole), by codec",
                &self.decompressed,
            ),
        ];
        for (name, help, counts) in by_codec {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (codec, label) in CODECS {
                let value = counts[codec_slot(codec)].load(Ordering::Relaxed);
                ConstCounter::new(value).encode(family.encode_family(&CodecLabel { codec: label })?)?;
            }
        }
        let by_cipher: [(&str, &str, &[AtomicU64; 2]); 2] = [
            ("chuyi_s3_encrypted_bytes", "Object bytes written encrypted at rest (SSE), by cipher", &self.encrypted),
            ("chuyi_s3_decrypted_bytes", "Bytes decrypted on reads (whole frames), by cipher", &self.decrypted),
        ];
        for (name, help, counts) in by_cipher {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for algorithm in ALGORITHMS {
                let value = counts[algorithm_slot(algorithm)].load(Ordering::Relaxed);
                let label = AlgorithmLabel { algorithm: algorithm.s3_name() };
                ConstCounter::new(value).encode(family.encode_family(&label)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    }

    #[test]
    fn requests_fall_in_cloudwatch_classes() {
        let classes = [
            ("GetObject", "get"),
            ("UploadPart", "put"),
            ("CopyObject", "put"),
            ("DeleteObjects", "delete"),
            ("HeadBucket", "head"),
            ("CompleteMultipartUpload", "post"),
            ("ListObjectsV2", "list"),
            ("ListObjectVersions", "list"),
            ("PutBucketPolicy", "other"),
        ];
        for (op, class) in classes {
            assert_eq!(request_class(op), class, "{op}");
        }
    }

    #[test]
    fn a_request_counts_under_its_bucket_only_once_the_check_named_one() {
        let mut registry = Registry::default();
        let metrics = S3Metrics::register(&mut registry);
        let named = OpSlot::default();
        named.set("PutObject");
        named.set_bucket("scans");
        let body = BodyCount { metrics: metrics.clone(), noted: named.clone() };
        body.add(false, 1000);
        body.add(false, 24);
        metrics.answered(Some(&named), 200, 0.01);
        let refused = OpSlot::default();
        refused.set("GetObject");
        BodyCount { metrics: metrics.clone(), noted: refused.clone() }.add(true, 7);
        metrics.answered(Some(&refused), 404, 0.001);
        metrics.answered(None, 503, 0.001);
        let text = scrape(&registry);
        for line in [
            "chuyi_s3_bucket_requests_total{bucket=\"scans\",class=\"put\"} 1",
            "chuyi_s3_bucket_received_bytes_total{bucket=\"scans\"} 1024",
            "chuyi_s3_bucket_request_duration_seconds_count{bucket=\"scans\"} 1",
            "chuyi_s3_received_bytes_total 1024",
            "chuyi_s3_sent_bytes_total 7",
            "chuyi_s3_requests_total{op=\"GetObject\",code=\"404\"} 1",
            "chuyi_s3_requests_total{op=\"unknown\",code=\"503\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("chuyi_s3_bucket_errors_total{"), "no bucket's request failed: {text}");
        assert!(!text.contains("class=\"get\""), "a refused request names no bucket: {text}");
    }

    #[test]
    fn buckets_past_the_limit_share_one_series() {
        let mut registry = Registry::default();
        let metrics = S3Metrics::register(&mut registry);
        for i in 0..=BUCKET_SERIES_MAX {
            let noted = OpSlot::default();
            noted.set("GetObject");
            noted.set_bucket(&format!("b{i}"));
            metrics.answered(Some(&noted), 500, 0.001);
        }
        let again = OpSlot::default();
        again.set("GetObject");
        again.set_bucket("b0");
        metrics.answered(Some(&again), 200, 0.001);
        let text = scrape(&registry);
        let last = format!("chuyi_s3_bucket_errors_total{{bucket=\"b{}\"", BUCKET_SERIES_MAX);
        assert!(!text.contains(&last), "the bucket past the limit is not named");
        let timed = |i: usize| format!("chuyi_s3_bucket_request_duration_seconds_count{{bucket=\"b{i}\"}} 1");
        assert!(text.contains(&timed(BUCKET_LATENCY_MAX - 1)), "the first ones are timed apart");
        assert!(!text.contains(&timed(BUCKET_LATENCY_MAX)), "the later ones share a histogram");
        let shared = BUCKET_SERIES_MAX + 1 - BUCKET_LATENCY_MAX;
        let other = format!("chuyi_s3_bucket_request_duration_seconds_count{{bucket=\"_other\"}} {shared}");
        assert!(text.contains(&other), "{other} in {text}");
        assert!(text.contains("chuyi_s3_bucket_errors_total{bucket=\"_other\",class=\"get\"} 1"), "{text}");
        assert!(text.contains("chuyi_s3_bucket_requests_total{bucket=\"b0\",class=\"get\"} 2"), "named ones stay");
    }
}
