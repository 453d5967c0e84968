//! Virtual-hosted-style addressing: `Host: BUCKET.DOMAIN` names the bucket
//! when DOMAIN is one of the gateway's configured domains (`chuyi s3
//! --domain`). Every other host (an address, `localhost`, the domain
//! itself) is path style, as MinIO does with its domain setting; s3s's own
//! parsers would take any other host name for a bucket (CNAME style), so
//! that `localhost:9000` would address a bucket named after it.

use s3s::host::{S3Host, VirtualHost};
use s3s::S3Result;

/// The configured domains, lowercase, without ports.
#[derive(Debug, Clone, Default)]
pub struct Domains(Vec<String>);

/// Why a domain cannot be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{domain:?} is not a domain name: {why}")]
pub struct BadDomain {
    pub domain: String,
    pub why: &'static str,
}

impl Domains {
    pub fn new(domains: &[String]) -> Result<Self, BadDomain> {
        let mut out = Vec::with_capacity(domains.len());
        for domain in domains {
            let bad = |why| BadDomain { domain: domain.clone(), why };
            let d = domain.to_ascii_lowercase();
            if d.is_empty() || d.len() > 253 {
                return Err(bad("empty or longer than 253 characters"));
            }
            let label_ok = |l: &str| {
                (1..=63).contains(&l.len())
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            };
            if !d.split('.').all(label_ok) {
                return Err(bad("labels must be 1 to 63 letters, digits and inner hyphens"));
            }
            out.push(d);
        }
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bucket `host` names under a configured domain, and the domain;
    /// none for path style.
    pub fn bucket_of<'h>(&self, host: &'h str) -> Option<(&'h str, &str)> {
        let name = strip_port(host);
        self.0.iter().find_map(|domain| {
            let dot = name.len().checked_sub(domain.len() + 1)?;
            let tail = &name.as_bytes()[dot..];
            // A '.' byte starts a character: the bucket ends on a boundary.
            let matches = tail[0] == b'.' && tail[1..].eq_ignore_ascii_case(domain.as_bytes());
            let bucket = name.get(..dot).filter(|b| matches && !b.is_empty())?;
            Some((bucket, domain.as_str()))
        })
    }
}

/// `host` without a `:port` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

impl S3Host for Domains {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match self.bucket_of(host) {
            // Host names are case-insensitive, bucket names lowercase.
            Some((bucket, domain)) => VirtualHost::new(domain).with_bucket(bucket.to_ascii_lowercase()),
            None => VirtualHost::new(host),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_subdomains_of_configured_domains_name_buckets() {
        let d = Domains::new(&["s3.chuyi.test".into(), "S3.Example.COM".into()]).expect("domains");
        assert_eq!(d.bucket_of("scans.s3.chuyi.test"), Some(("scans", "s3.chuyi.test")));
        assert_eq!(d.bucket_of("scans.s3.chuyi.test:9443"), Some(("scans", "s3.chuyi.test")));
        assert_eq!(d.bucket_of("my.dotted.bucket.s3.example.com"), Some(("my.dotted.bucket", "s3.example.com")));
        assert_eq!(d.bucket_of("SCANS.S3.CHUYI.TEST"), Some(("SCANS", "s3.chuyi.test")));
        for path_style in [
            "s3.chuyi.test",
            "s3.chuyi.test:443",
            "localhost:9000",
            "127.0.0.1:9000",
            "[::1]:9000",
            "xs3.chuyi.test",
            ".s3.chuyi.test",
            "other.example.org",
            "",
        ] {
            assert_eq!(d.bucket_of(path_style), None, "{path_style}");
        }
    }

    proptest::proptest! {
        /// Any host header, however odd, is path style or a bucket, and
        /// never a panic.
        #[test]
        fn any_host_is_answered(host in "\\PC{0,40}", tail in proptest::sample::select(vec!["", ".s3.chuyi.test", ".S3.CHUYI.TEST:1", ":x"])) {
            let d = Domains::new(&["s3.chuyi.test".into()]).expect("domain");
            let host = format!("{host}{tail}");
            if let Some((bucket, _)) = d.bucket_of(&host) {
                proptest::prop_assert!(host.starts_with(bucket) && !bucket.is_empty());
            }
        }
    }

    #[test]
    fn bad_domains_are_refused() {
        for bad in ["", "a..b", "-", "a b.com", "s3.chuyi.test:9000", "ü.com"] {
            assert!(Domains::new(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(Domains::new(&["a-1.b".into()]).is_ok());
    }
}
