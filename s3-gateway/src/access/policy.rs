//! Bucket policies: S3's JSON grammar, parsed and checked when a policy is
//! put, then evaluated for each request without I/O.
//!
//! Supported: `Version`, `Id`, and statements with `Sid`, `Effect`,
//! `Principal` (`"*"`, `{"AWS": ...}` with user names or IAM user ARNs,
//! `{"CanonicalUser": ...}`), `Action` and `Resource` (strings or lists,
//! with `*` and `?` wildcards), and `Condition` with the string, IP,
//! boolean and null operators (each also as `...IfExists`). Refused as
//! malformed, so a policy never means less than it says: `NotPrincipal`,
//! `NotAction`, `NotResource`, the `ForAnyValue:`/`ForAllValues:` set
//! operators, numeric and date operators, and resources outside the
//! bucket.
//!
//! Evaluation is AWS's: an explicit Deny wins over any Allow; a statement
//! applies when its principal, action, resource and every condition match.
//! A condition key the request does not carry fails a positive operator
//! and satisfies a negated one (`StringNotEquals`, `NotIpAddress`).

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::Caller;
use crate::auth::canonical_id;

/// Largest policy document S3 takes for a bucket.
pub const POLICY_MAX_BYTES: usize = 20 * 1024;

/// Why a policy document was refused (S3's `MalformedPolicy`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(String);

fn malformed<T>(why: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError(why.into()))
}

/// A checked bucket policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Clone, Debug, PartialEq)]
struct Statement {
    effect: Effect,
    principals: Principals,
    actions: Vec<String>,
    resources: Vec<String>,
    conditions: Vec<Condition>,
}

/// Who a statement is about.
#[derive(Clone, Debug, PartialEq)]
enum Principals {
    /// `"*"`: everyone, anonymous callers included.
    Everyone,
    /// Users by name or canonical user ID.
    Users(Vec<String>),
}

/// One operator on one key, with its values (any of which may match).
#[derive(Clone, Debug, PartialEq)]
struct Condition {
    operator: Operator,
    if_exists: bool,
    key: String,
    values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    IpAddress,
    NotIpAddress,
    Bool,
    Null,
}

impl Operator {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "StringEquals" => Operator::StringEquals,
            "StringNotEquals" => Operator::StringNotEquals,
            "StringEqualsIgnoreCase" => Operator::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Operator::StringNotEqualsIgnoreCase,
            "StringLike" => Operator::StringLike,
            "StringNotLike" => Operator::StringNotLike,
            "IpAddress" => Operator::IpAddress,
            "NotIpAddress" => Operator::NotIpAddress,
            "Bool" => Operator::Bool,
            "Null" => Operator::Null,
            _ => return None,
        })
    }

    /// Whether the operator matches when the request lacks the key.
    fn negated(self) -> bool {
        matches!(
            self,
            Operator::StringNotEquals
                | Operator::StringNotEqualsIgnoreCase
                | Operator::StringNotLike
                | Operator::NotIpAddress
        )
    }
}

/// What a request asks, as a policy sees it.
#[derive(Debug)]
pub struct Question<'a> {
    pub caller: &'a Caller,
    /// `s3:GetObject` and the like.
    pub action: &'a str,
    /// `arn:aws:s3:::bucket` or `arn:aws:s3:::bucket/key`.
    pub resource: &'a str,
    /// Condition keys (`aws:SourceIp`, `s3:prefix`, ...) and their values.
    pub context: &'a HashMap<&'static str, String>,
}

/// What a policy says about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Deny,
    Allow,
    /// No statement applies.
    Silent,
}

/// The ARN of a bucket, or of a key in it.
pub fn resource(bucket: &str, key: Option<&str>) -> String {
    match key {
        Some(key) => format!("arn:aws:s3:::{bucket}/{key}"),
        None => format!("arn:aws:s3:::{bucket}"),
    }
}

impl Policy {
    /// Parses and checks the policy `text` of bucket `bucket`.
    pub fn parse(text: &[u8], bucket: &str) -> Result<Self, PolicyError> {
        if text.len() > POLICY_MAX_BYTES {
            return malformed(format!("the policy is {} bytes; at most {POLICY_MAX_BYTES}", text.len()));
        }
        let Ok(Value::Object(document)) = serde_json::from_slice::<Value>(text) else {
            return malformed("the policy is not a JSON object");
        };
        for field in document.keys() {
            if !matches!(field.as_str(), "Version" | "Id" | "Statement") {
                return malformed(format!("unknown field {field:?}"));
            }
        }
        match document.get("Version").and_then(Value::as_str) {
            Some("2012-10-17" | "2008-10-17") => {}
            _ => return malformed("Version must be \"2012-10-17\" or \"2008-10-17\""),
        }
        let statements = match document.get("Statement") {
            Some(Value::Array(list)) if !list.is_empty() => list.iter().collect(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => return malformed("the policy has no statement"),
        };
        let statements = statements.into_iter().map(|s| Statement::parse(s, bucket)).collect::<Result<_, _>>()?;
        Ok(Self { statements })
    }

    /// What the policy says about `question`: Deny if any statement
    /// denies it, else Allow if any allows it.
    pub fn evaluate(&self, question: &Question<'_>) -> Verdict {
        let applying = || self.statements.iter().filter(|s| s.applies(question));
        if applying().any(|s| s.effect == Effect::Deny) {
            Verdict::Deny
        } else if applying().next().is_some() {
            Verdict::Allow
        } else {
            Verdict::Silent
        }
    }

    /// Whether the policy grants anything to everyone without a condition
    /// on where the request comes from: S3's "public" policy status.
    pub fn is_public(&self) -> bool {
        self.statements.iter().any(|s| {
            s.effect == Effect::Allow
                && s.principals == Principals::Everyone
                && !s.conditions.iter().any(|c| c.key.eq_ignore_ascii_case("aws:SourceIp"))
        })
    }
}

impl Statement {
    fn parse(value: &Value, bucket: &str) -> Result<Self, PolicyError> {
        let Value::Object(fields) = value else { return malformed("a statement is not an object") };
        for field in fields.keys() {
            match field.as_str() {
                "Sid" | "Effect" | "Principal" | "Action" | "Resource" | "Condition" => {}
                "NotPrincipal" | "NotAction" | "NotResource" => {
                    return malformed(format!("{field} is not supported; write the statement with {}", &field[3..]))
                }
                _ => return malformed(format!("unknown statement field {field:?}")),
            }
        }
        let effect = match fields.get("Effect").and_then(Value::as_str) {
            Some("Allow") => Effect::Allow,
            Some("Deny") => Effect::Deny,
            _ => return malformed("Effect must be \"Allow\" or \"Deny\""),
        };
        let principals = Principals::parse(fields.get("Principal"))?;
        let actions = strings(fields.get("Action"), "Action")?;
        if let Some(bad) = actions.iter().find(|a| *a != "*" && !a.to_ascii_lowercase().starts_with("s3:")) {
            return malformed(format!("Action {bad:?} is not an s3: action"));
        }
        let resources = strings(fields.get("Resource"), "Resource")?;
        if let Some(bad) = resources.iter().find(|r| !in_bucket(r, bucket)) {
            return malformed(format!("Policy has invalid resource {bad:?}: not bucket {bucket:?} or a key in it"));
        }
        let conditions = match fields.get("Condition") {
            None => Vec::new(),
            Some(Value::Object(block)) => conditions(block)?,
            Some(_) => return malformed("Condition is not an object"),
        };
        Ok(Self { effect, principals, actions, resources, conditions })
    }

    fn applies(&self, q: &Question<'_>) -> bool {
        self.principals.include(q.caller)
            && self.actions.iter().any(|a| a == "*" || glob(&a.to_ascii_lowercase(), &q.action.to_ascii_lowercase()))
            && self.resources.iter().any(|r| glob(r, q.resource))
            && self.conditions.iter().all(|c| c.holds(q.context))
    }
}

/// Whether resource pattern `pattern` names `bucket` or keys in it.
fn in_bucket(pattern: &str, bucket: &str) -> bool {
    let Some(rest) = pattern.strip_prefix("arn:aws:s3:::") else { return false };
    let bucket_part = rest.split('/').next().unwrap_or(rest);
    glob(bucket_part, bucket)
}

impl Principals {
    fn parse(value: Option<&Value>) -> Result<Self, PolicyError> {
        let names = match value {
            Some(Value::String(s)) if s == "*" => return Ok(Principals::Everyone),
            Some(Value::Object(map)) => {
                let mut names = Vec::new();
                for (kind, value) in map {
                    if kind != "AWS" && kind != "CanonicalUser" {
                        return malformed(format!("Principal kind {kind:?} is not supported (AWS, CanonicalUser)"));
                    }
                    names.extend(strings(Some(value), "Principal")?);
                }
                names
            }
            _ => return malformed("Principal must be \"*\" or an object such as {\"AWS\": [...]}"),
        };
        if names.iter().any(|n| n == "*") {
            return Ok(Principals::Everyone);
        }
        Ok(Principals::Users(names.iter().map(|n| user_name(n).to_string()).collect()))
    }

    fn include(&self, caller: &Caller) -> bool {
        match (self, caller) {
            (Principals::Everyone, _) => true,
            (Principals::Users(names), Caller::User { name, .. }) => {
                names.iter().any(|n| n == name) || names.contains(&canonical_id(name))
            }
            (Principals::Users(_), Caller::Anonymous) => false,
        }
    }
}

/// A user named in a principal: a plain name, or the name in an IAM user
/// ARN (`arn:aws:iam::ACCOUNT:user/NAME`).
fn user_name(principal: &str) -> &str {
    match principal.rsplit_once(":user/") {
        Some((_, name)) => name.rsplit('/').next().unwrap_or(name),
        None => principal,
    }
}

/// A string or a non-empty list of strings.
fn strings(value: Option<&Value>, field: &str) -> Result<Vec<String>, PolicyError> {
    match value {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => malformed(format!("{field} holds something other than strings")),
            })
            .collect(),
        _ => malformed(format!("{field} must be a string or a list of strings")),
    }
}

/// A condition value: S3 takes strings, booleans and numbers alike.
fn condition_values(value: &Value) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => malformed("a condition value is not a string, boolean or number"),
    };
    match value {
        Value::Array(list) if !list.is_empty() => list.iter().map(one).collect(),
        Value::Array(_) => malformed("a condition has an empty list of values"),
        v => Ok(vec![one(v)?]),
    }
}

fn conditions(block: &Map<String, Value>) -> Result<Vec<Condition>, PolicyError> {
    let mut out = Vec::new();
    for (name, keys) in block {
        if name.contains(':') {
            return malformed(format!("condition operator {name:?}: set operators are not supported"));
        }
        let (base, if_exists) = match name.strip_suffix("IfExists") {
            Some(base) => (base, true),
            None => (name.as_str(), false),
        };
        let Some(operator) = Operator::parse(base) else {
            return malformed(format!("condition operator {name:?} is not supported"));
        };
        let Value::Object(keys) = keys else { return malformed(format!("condition {name:?} is not an object")) };
        for (key, value) in keys {
            let values = condition_values(value)?;
            if matches!(operator, Operator::IpAddress | Operator::NotIpAddress) {
                if let Some(bad) = values.iter().find(|v| Cidr::parse(v).is_none()) {
                    return malformed(format!("{bad:?} is not an IP address or CIDR block"));
                }
            }
            out.push(Condition { operator, if_exists, key: key.to_ascii_lowercase(), values });
        }
    }
    Ok(out)
}

impl Condition {
    fn holds(&self, context: &HashMap<&'static str, String>) -> bool {
        let found = context.iter().find(|(k, _)| k.eq_ignore_ascii_case(&self.key)).map(|(_, v)| v.as_str());
        if self.operator == Operator::Null {
            let want_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return found.is_none() == want_absent;
        }
        let Some(value) = found else { return self.if_exists || self.operator.negated() };
        let any = |f: &dyn Fn(&str) -> bool| self.values.iter().any(|v| f(v));
        match self.operator {
            Operator::StringEquals => any(&|v| v == value),
            Operator::StringNotEquals => !any(&|v| v == value),
            Operator::StringEqualsIgnoreCase => any(&|v| v.eq_ignore_ascii_case(value)),
            Operator::StringNotEqualsIgnoreCase => !any(&|v| v.eq_ignore_ascii_case(value)),
            Operator::StringLike => any(&|v| glob(v, value)),
            Operator::StringNotLike => !any(&|v| glob(v, value)),
            Operator::IpAddress => any(&|v| Cidr::parse(v).is_some_and(|c| c.contains(value))),
            Operator::NotIpAddress => !any(&|v| Cidr::parse(v).is_some_and(|c| c.contains(value))),
            Operator::Bool => any(&|v| v.eq_ignore_ascii_case(value)),
            Operator::Null => unreachable!("handled above"),
        }
    }
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
struct Cidr {
    net: IpAddr,
    bits: u32,
}

impl Cidr {
    fn parse(text: &str) -> Option<Self> {
        let (addr, bits) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits.parse::<u32>().ok()?)),
            None => (text, None),
        };
        let net: IpAddr = addr.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Self { net, bits })
    }

    fn contains(&self, addr: &str) -> bool {
        let Ok(addr) = addr.parse::<IpAddr>() else { return false };
        let masked = |a: u128, width: u32| if self.bits == 0 { 0 } else { a >> (width - self.bits) };
        match (self.net, addr) {
            (IpAddr::V4(n), IpAddr::V4(a)) => masked(u32::from(n).into(), 32) == masked(u32::from(a).into(), 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => masked(u128::from(n), 128) == masked(u128::from(a), 128),
            // An IPv4 client seen through an IPv6 socket.
            (IpAddr::V4(_), IpAddr::V6(a)) => a.to_ipv4_mapped().is_some_and(|a| self.contains(&a.to_string())),
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

/// Whether `text` matches `pattern`, where `*` is any run of characters
/// and `?` any one character (IAM's wildcards).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and how much of the text it has eaten.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Caller {
        Caller::User { name: "alice".into(), admin: false }
    }

    fn ask(
        policy: &Policy,
        caller: &Caller,
        action: &str,
        key: Option<&str>,
        context: &[(&'static str, &str)],
    ) -> Verdict {
        let context = context.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let resource = resource("scans", key);
        policy.evaluate(&Question { caller, action, resource: &resource, context: &context })
    }

    fn parse(json: &str) -> Result<Policy, PolicyError> {
        Policy::parse(json.as_bytes(), "scans")
    }

    const PUBLIC_READ: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"pub","Effect":"Allow",
        "Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::scans/public/*"}]}"#;

    #[test]
    fn an_allow_applies_to_its_principal_action_and_resource_only() {
        let p = parse(PUBLIC_READ).expect("parse");
        assert_eq!(ask(&p, &Caller::Anonymous, "s3:GetObject", Some("public/a.dcm"), &[]), Verdict::Allow);
        assert_eq!(ask(&p, &alice(), "s3:GetObject", Some("public/a.dcm"), &[]), Verdict::Allow);
        assert_eq!(ask(&p, &Caller::Anonymous, "s3:GetObject", Some("private/a.dcm"), &[]), Verdict::Silent);
        assert_eq!(ask(&p, &Caller::Anonymous, "s3:PutObject", Some("public/a.dcm"), &[]), Verdict::Silent);
        assert_eq!(ask(&p, &Caller::Anonymous, "s3:ListBucket", None, &[]), Verdict::Silent);
        assert!(p.is_public());
    }

    #[test]
    fn an_explicit_deny_wins_over_an_allow() {
        let p = parse(
            r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::123:user/alice","bob"]},"Action":"s3:*","Resource":["arn:aws:s3:::scans","arn:aws:s3:::scans/*"]},
            {"Effect":"Deny","Principal":"*","Action":"s3:DeleteObject*","Resource":"arn:aws:s3:::scans/*"}]}"#,
        )
        .expect("parse");
        assert_eq!(ask(&p, &alice(), "s3:GetObject", Some("k"), &[]), Verdict::Allow);
        assert_eq!(ask(&p, &alice(), "s3:ListBucket", None, &[]), Verdict::Allow);
        assert_eq!(ask(&p, &alice(), "s3:DeleteObject", Some("k"), &[]), Verdict::Deny);
        assert_eq!(ask(&p, &alice(), "s3:DeleteObjectVersion", Some("k"), &[]), Verdict::Deny);
        let bob = Caller::User { name: "bob".into(), admin: false };
        assert_eq!(ask(&p, &bob, "s3:PutObject", Some("k"), &[]), Verdict::Allow);
        let carol = Caller::User { name: "carol".into(), admin: false };
        assert_eq!(ask(&p, &carol, "s3:PutObject", Some("k"), &[]), Verdict::Silent);
        assert!(!p.is_public());
    }

    #[test]
    fn conditions_on_source_ip_transport_and_prefix() {
        let p = parse(
            r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Principal":"*","Action":"s3:ListBucket","Resource":"arn:aws:s3:::scans",
             "Condition":{"StringLike":{"s3:prefix":["public/*","shared/"]},"IpAddress":{"aws:SourceIp":["10.0.0.0/8","::1"]}}},
            {"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::scans/*",
             "Condition":{"Bool":{"aws:SecureTransport":false}}}]}"#,
        )
        .expect("parse");
        let list = |ctx: &[(&'static str, &str)]| ask(&p, &Caller::Anonymous, "s3:ListBucket", None, ctx);
        assert_eq!(list(&[("s3:prefix", "public/2024"), ("aws:SourceIp", "10.1.2.3")]), Verdict::Allow);
        assert_eq!(list(&[("s3:prefix", "shared/"), ("aws:SourceIp", "::1")]), Verdict::Allow);
        assert_eq!(list(&[("s3:prefix", "private/"), ("aws:SourceIp", "10.1.2.3")]), Verdict::Silent);
        assert_eq!(list(&[("s3:prefix", "public/"), ("aws:SourceIp", "192.168.1.1")]), Verdict::Silent);
        assert_eq!(list(&[("aws:SourceIp", "10.1.2.3")]), Verdict::Silent, "no prefix: a positive operator fails");
        let get = |secure: &str| ask(&p, &alice(), "s3:GetObject", Some("k"), &[("aws:SecureTransport", secure)]);
        assert_eq!(get("false"), Verdict::Deny);
        assert_eq!(get("true"), Verdict::Silent);
    }

    #[test]
    fn negated_operators_match_a_missing_key_and_if_exists_skips_one() {
        let p = parse(
            r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::scans/*",
             "Condition":{"NotIpAddress":{"aws:SourceIp":"127.0.0.0/8"}}},
            {"Effect":"Allow","Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::scans/*",
             "Condition":{"StringEqualsIfExists":{"s3:x-amz-acl":"private"},"Null":{"aws:username":"false"}}}]}"#,
        )
        .expect("parse");
        let get = |ctx: &[(&'static str, &str)]| ask(&p, &alice(), "s3:GetObject", Some("k"), ctx);
        assert_eq!(get(&[("aws:SourceIp", "127.0.0.1")]), Verdict::Silent);
        assert_eq!(get(&[("aws:SourceIp", "::ffff:127.0.0.1")]), Verdict::Silent, "IPv4-mapped");
        assert_eq!(get(&[("aws:SourceIp", "10.0.0.1")]), Verdict::Deny);
        let put = |ctx: &[(&'static str, &str)]| ask(&p, &alice(), "s3:PutObject", Some("k"), ctx);
        assert_eq!(put(&[("aws:username", "alice")]), Verdict::Allow);
        assert_eq!(put(&[("aws:username", "alice"), ("s3:x-amz-acl", "public-read")]), Verdict::Silent);
        assert_eq!(put(&[]), Verdict::Silent, "Null false: the key must be there");
    }

    #[test]
    fn malformed_policies_are_refused_with_a_reason() {
        let bad = [
            ("not json", "not a JSON object"),
            (r#"{"Statement":[]}"#, "Version"),
            (r#"{"Version":"2012-10-17"}"#, "no statement"),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Maybe","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::scans"}}"#,
                "Effect",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::other/*"}}"#,
                "invalid resource",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"ec2:*","Resource":"arn:aws:s3:::scans"}}"#,
                "not an s3: action",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotPrincipal":"*","Action":"s3:*","Resource":"arn:aws:s3:::scans"}}"#,
                "not supported",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::scans","Condition":{"NumericLessThan":{"s3:max-keys":"10"}}}}"#,
                "not supported",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::scans","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/33"}}}}"#,
                "CIDR",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Service":"x"},"Action":"s3:*","Resource":"arn:aws:s3:::scans"}}"#,
                "Principal kind",
            ),
        ];
        for (json, why) in bad {
            let e = parse(json).expect_err(json);
            assert!(e.0.contains(why), "{json}: {e} (wanted {why:?})");
        }
        assert!(parse(&format!("{:width$}", PUBLIC_READ, width = POLICY_MAX_BYTES + 1)).is_err());
    }

    #[test]
    fn wildcards() {
        assert!(glob("s3:get*", "s3:getobject"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(!glob("a*b", "aXbX"));
        assert!(glob("arn:aws:s3:::scans/*/x", "arn:aws:s3:::scans/a/b/x"));
    }
}
