//! Cross-origin resource sharing, as S3 does it: a bucket's CORS
//! configuration (rules of allowed origins, methods and headers), the
//! answer to a browser's preflight `OPTIONS`, and the headers added to an
//! actual request that carries `Origin`.
//!
//! Web DICOM viewers read images straight from the bucket in the browser;
//! without these answers the browser refuses them the bytes.
//!
//! The decisions are pure: the configuration is checked and stored as
//! JSON (the bucket's `cors` document), and a request is judged against it
//! by [`matching`]. The HTTP side at the end ([`preflight`], [`Origin`])
//! reads the configuration and answers; [`crate::server`] calls it before
//! and after s3s, which knows nothing of CORS. A preflight is answered
//! without authentication, as browsers send it.

use std::sync::Arc;

use chuyi_client::Cluster;
use chuyi_meta_api::model::BucketConfigKind;
use http::{HeaderMap, HeaderValue, Request};
use s3s::dto::{CORSConfiguration, CORSRule};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};
use serde::{Deserialize, Serialize};

use crate::buckets::JsonDocument;
use crate::documents::Documents;

/// Rules one configuration holds at most (S3's limit).
pub const RULES_MAX: usize = 100;
/// The methods a rule may allow.
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// One rule, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age_seconds: Option<i32>,
}

/// A bucket's configuration, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub rules: Vec<Rule>,
}

impl Config {
    /// A configuration from the request's document, checked as S3 checks
    /// it: 1 to 100 rules, each with origins and known methods, at most one
    /// `*` in an origin or an allowed header.
    pub fn from_document(document: CORSConfiguration) -> S3Result<Self> {
        let rules: Vec<Rule> = document.cors_rules.into_iter().map(Rule::from_document).collect();
        if rules.is_empty() || rules.len() > RULES_MAX {
            return Err(s3_error!(MalformedXML, "a CORS configuration has 1 to {RULES_MAX} rules"));
        }
        for rule in &rules {
            rule.check()?;
        }
        Ok(Self { rules })
    }

    pub fn to_document(&self) -> Vec<CORSRule> {
        self.rules.iter().map(Rule::to_document).collect()
    }
}

impl JsonDocument for Config {}

impl Rule {
    fn from_document(r: CORSRule) -> Self {
        Self {
            id: r.id,
            allowed_origins: r.allowed_origins,
            allowed_methods: r.allowed_methods,
            allowed_headers: r.allowed_headers.unwrap_or_default(),
            expose_headers: r.expose_headers.unwrap_or_default(),
            max_age_seconds: r.max_age_seconds,
        }
    }

    fn to_document(&self) -> CORSRule {
        let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        CORSRule {
            id: self.id.clone(),
            allowed_origins: self.allowed_origins.clone(),
            allowed_methods: self.allowed_methods.clone(),
            allowed_headers: some(&self.allowed_headers),
            expose_headers: some(&self.expose_headers),
            max_age_seconds: self.max_age_seconds,
        }
    }

    fn check(&self) -> S3Result<()> {
        if self.allowed_origins.is_empty() || self.allowed_methods.is_empty() {
            return Err(s3_error!(MalformedXML, "a CORS rule names at least one origin and one method"));
        }
        if let Some(m) = self.allowed_methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(s3_error!(
                InvalidRequest,
                "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
            ));
        }
        let wildcards = |s: &String| s.matches('*').count() > 1;
        if let Some(o) = self.allowed_origins.iter().find(|o| wildcards(o)) {
            return Err(s3_error!(InvalidRequest, "AllowedOrigin \"{o}\" can not have more than one wildcard."));
        }
        if let Some(h) = self.allowed_headers.iter().find(|h| wildcards(h)) {
            return Err(s3_error!(InvalidRequest, "AllowedHeader \"{h}\" can not have more than one wildcard."));
        }
        if self.max_age_seconds.is_some_and(|s| s < 0) {
            return Err(s3_error!(MalformedXML, "MaxAgeSeconds must not be negative"));
        }
        Ok(())
    }
}

/// Whether `s` matches `pattern`, which may hold one `*` standing for any
/// run of characters; case-insensitive when `fold` (header names).
fn wildcard(pattern: &str, s: &str, fold: bool) -> bool {
    let (pattern, s) =
        if fold { (pattern.to_ascii_lowercase(), s.to_ascii_lowercase()) } else { (pattern.into(), s.into()) };
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => s.len() >= head.len() + tail.len() && s.starts_with(head) && s.ends_with(tail),
    }
}

/// What a browser asks: from `origin`, may it send `method` with these
/// request headers (a preflight's `Access-Control-Request-Headers`; none
/// for an actual request).
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub origin: &'a str,
    pub method: &'a str,
    pub headers: &'a [&'a str],
}

/// The first rule that allows what is asked, as S3 picks it.
pub fn matching<'c>(config: &'c Config, asked: Asked<'_>) -> Option<&'c Rule> {
    config.rules.iter().find(|rule| {
        rule.allowed_origins.iter().any(|o| wildcard(o, asked.origin, false))
            && rule.allowed_methods.iter().any(|m| m == asked.method)
            && asked.headers.iter().all(|h| rule.allowed_headers.iter().any(|a| wildcard(a, h, true)))
    })
}

/// The response headers a matching rule gives: for a preflight (`asked`
/// with its request headers) and for an actual request alike.
pub fn response_headers(rule: &Rule, asked: Asked<'_>, preflight: bool) -> Vec<(&'static str, String)> {
    let any_origin = rule.allowed_origins.iter().any(|o| o == "*");
    let mut headers = vec![
        ("access-control-allow-origin", if any_origin { "*".to_string() } else { asked.origin.to_string() }),
        ("access-control-allow-methods", rule.allowed_methods.join(", ")),
        ("vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method".to_string()),
    ];
    if !any_origin {
        headers.push(("access-control-allow-credentials", "true".into()));
    }
    if preflight && !asked.headers.is_empty() {
        headers.push(("access-control-allow-headers", asked.headers.join(", ")));
    }
    if !rule.expose_headers.is_empty() {
        headers.push(("access-control-expose-headers", rule.expose_headers.join(", ")));
    }
    if let Some(age) = rule.max_age_seconds {
        headers.push(("access-control-max-age", age.to_string()));
    }
    headers
}

/// The header names of a preflight's `Access-Control-Request-Headers`.
pub fn requested_headers(value: &str) -> Vec<&str> {
    value.split(',').map(str::trim).filter(|h| !h.is_empty()).collect()
}

/// The bucket a path-style request names: its first path segment.
pub fn bucket_of(path: &str) -> Option<&str> {
    let first = path.trim_start_matches('/').split('/').next()?;
    (!first.is_empty()).then_some(first)
}

/// The buckets' CORS configurations, read through a short cache.
pub type Rules = Documents<Config>;

/// The cache of the buckets' CORS configurations.
pub fn rules(cluster: Arc<Cluster>) -> Rules {
    Documents::new(cluster, BucketConfigKind::Cors, |_, bytes| Config::decode(bytes))
}

/// A bucket's CORS configuration; none when it has none, or when it cannot
/// be read now (a browser then gets no CORS headers, as for a bucket
/// without rules).
async fn of(rules: &Rules, bucket: &str) -> Option<Arc<Config>> {
    rules.of(bucket).await.ok().flatten()
}

fn header<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The answer to a preflight `OPTIONS`: 200 with the rule's headers, 403
/// when no rule allows what is asked, 400 when it does not say what.
pub async fn preflight<B>(rules: &Rules, req: &Request<B>) -> s3s::HttpResponse {
    let (Some(origin), Some(method)) = (header(req, "origin"), header(req, "access-control-request-method")) else {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("BadRequest".into()),
            "Insufficient information. Origin request header needed.",
        );
        e.set_status_code(http::StatusCode::BAD_REQUEST);
        return crate::digests::error_response(e);
    };
    let requested = requested_headers(header(req, "access-control-request-headers").unwrap_or(""));
    let asked = Asked { origin, method, headers: &requested };
    let config = match bucket_of(req.uri().path()) {
        Some(bucket) => of(rules, bucket).await,
        None => None,
    };
    let Some(rule) = config.as_ref().and_then(|c| matching(c, asked)) else {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("AccessForbidden".into()),
            "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request \
             method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the \
             resource's CORS spec.",
        );
        e.set_status_code(http::StatusCode::FORBIDDEN);
        return crate::digests::error_response(e);
    };
    let mut response = s3s::HttpResponse::new(s3s::Body::empty());
    add(response.headers_mut(), response_headers(rule, asked, true));
    response
}

fn add(headers: &mut HeaderMap, pairs: Vec<(&'static str, String)>) {
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
}

/// A cross-origin request (one that carries `Origin`), noted before s3s
/// takes it, so that its response can be given the CORS headers after.
#[derive(Debug)]
pub struct Origin {
    origin: String,
    bucket: String,
    method: String,
}

impl Origin {
    pub fn of<B>(req: &Request<B>) -> Option<Self> {
        let origin = header(req, "origin")?.to_string();
        let bucket = bucket_of(req.uri().path())?.to_string();
        Some(Self { origin, bucket, method: req.method().as_str().to_string() })
    }

    /// Adds the headers of the bucket's first rule allowing this request
    /// (none when no rule does: the browser then withholds the response).
    pub async fn allow(self, rules: &Rules, headers: &mut HeaderMap) {
        let Some(config) = of(rules, &self.bucket).await else { return };
        let asked = Asked { origin: &self.origin, method: &self.method, headers: &[] };
        if let Some(rule) = matching(&config, asked) {
            add(headers, response_headers(rule, asked, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> Rule {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        Rule {
            id: None,
            allowed_origins: v(origins),
            allowed_methods: v(methods),
            allowed_headers: v(headers),
            expose_headers: v(&["ETag"]),
            max_age_seconds: Some(600),
        }
    }

    fn asked<'a>(origin: &'a str, method: &'a str, headers: &'a [&'a str]) -> Asked<'a> {
        Asked { origin, method, headers }
    }

    #[test]
    fn wildcards_stand_for_one_run() {
        assert!(wildcard("https://*.example.org", "https://viewer.example.org", false));
        assert!(!wildcard("https://*.example.org", "https://example.org.evil.com", false));
        assert!(wildcard("*", "anything", false));
        assert!(wildcard("x-amz-*", "X-Amz-Date", true));
        assert!(!wildcard("http://a", "http://A", false), "origins compare exactly");
    }

    #[test]
    fn the_first_rule_allowing_origin_method_and_headers_wins() {
        let config = Config {
            rules: vec![
                rule(&["https://viewer.example.org"], &["GET", "HEAD"], &["range", "x-amz-*"]),
                rule(&["*"], &["GET"], &[]),
            ],
        };
        let viewer = "https://viewer.example.org";
        let first = matching(&config, asked(viewer, "GET", &["Range", "x-amz-date"]));
        assert_eq!(first, Some(&config.rules[0]));
        let other = matching(&config, asked("https://other.example", "GET", &[]));
        assert_eq!(other, Some(&config.rules[1]));
        assert_eq!(matching(&config, asked("https://other.example", "GET", &["range"])), None, "header not allowed");
        assert_eq!(matching(&config, asked(viewer, "PUT", &[])), None, "method not allowed");
    }

    #[test]
    fn answers_name_the_origin_unless_any_is_allowed() {
        let r = rule(&["https://v.example"], &["GET"], &["range"]);
        let headers = response_headers(&r, asked("https://v.example", "GET", &["range"]), true);
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("access-control-allow-origin"), Some("https://v.example"));
        assert_eq!(get("access-control-allow-credentials"), Some("true"));
        assert_eq!(get("access-control-allow-headers"), Some("range"));
        assert_eq!(get("access-control-expose-headers"), Some("ETag"));
        assert_eq!(get("access-control-max-age"), Some("600"));
        let any = rule(&["*"], &["GET"], &[]);
        let headers = response_headers(&any, asked("https://v.example", "GET", &[]), false);
        assert!(headers.contains(&("access-control-allow-origin", "*".to_string())));
        assert!(!headers.iter().any(|(n, _)| *n == "access-control-allow-credentials"));
    }

    #[test]
    fn configurations_are_checked_as_s3_checks_them() {
        let doc = |rules: Vec<Rule>| CORSConfiguration { cors_rules: rules.iter().map(Rule::to_document).collect() };
        let code = |r: S3Result<Config>| r.err().map(|e| e.code().as_str().to_string());
        assert_eq!(code(Config::from_document(doc(vec![rule(&["*"], &["GET"], &[])]))), None);
        assert_eq!(code(Config::from_document(doc(vec![]))).as_deref(), Some("MalformedXML"));
        assert_eq!(
            code(Config::from_document(doc(vec![rule(&["*"], &["PATCH"], &[])]))).as_deref(),
            Some("InvalidRequest")
        );
        assert_eq!(
            code(Config::from_document(doc(vec![rule(&["*.*"], &["GET"], &[])]))).as_deref(),
            Some("InvalidRequest")
        );
        let config = Config { rules: vec![rule(&["https://a"], &["GET", "PUT"], &["*"])] };
        assert_eq!(Config::decode(&config.encode()), Some(config));
    }

    #[test]
    fn the_bucket_is_the_first_path_segment() {
        assert_eq!(bucket_of("/scans/ct/1.dcm"), Some("scans"));
        assert_eq!(bucket_of("/scans"), Some("scans"));
        assert_eq!(bucket_of("/"), None);
    }
}
