//! Conditional requests (RFC 9110 §13.2.2, as S3 applies them): If-Match
//! and If-Unmodified-Since fail with 412; If-None-Match and
//! If-Modified-Since answer a read with 304. An entity-tag condition that
//! holds makes its date condition irrelevant.

use chuyi_meta_api::model::WriteCondition;
use s3s::dto::{ETag, ETagCondition, Timestamp};
use s3s::{s3_error, S3Result};

/// The conditions of one request, on the object's ETag (hex, unquoted)
/// and modification time.
#[derive(Debug, Default)]
pub struct Conditions<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
    pub if_unmodified_since: Option<&'a Timestamp>,
}

/// The conditions of a GET or HEAD input (both have the same fields).
macro_rules! read_conditions {
    ($input:expr) => {
        $crate::conditions::Conditions {
            if_match: $input.if_match.as_ref(),
            if_none_match: $input.if_none_match.as_ref(),
            if_modified_since: $input.if_modified_since.as_ref(),
            if_unmodified_since: $input.if_unmodified_since.as_ref(),
        }
    };
}
pub(crate) use read_conditions;

/// The copy-source conditions of a CopyObject or UploadPartCopy input.
macro_rules! copy_source_conditions {
    ($input:expr) => {
        $crate::conditions::Conditions {
            if_match: $input.copy_source_if_match.as_ref(),
            if_none_match: $input.copy_source_if_none_match.as_ref(),
            if_modified_since: $input.copy_source_if_modified_since.as_ref(),
            if_unmodified_since: $input.copy_source_if_unmodified_since.as_ref(),
        }
    };
}
pub(crate) use copy_source_conditions;

/// What failing an If-None-Match or If-Modified-Since means: 304 on a
/// read, 412 on a copy's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unchanged {
    NotModified,
    PreconditionFailed,
}

impl Conditions<'_> {
    pub fn check(&self, etag: &str, modified_ms: u64, unchanged: Unchanged) -> S3Result<()> {
        let current = ETag::Strong(etag.to_string());
        let modified_s = (modified_ms / 1000) as i64;
        match self.if_match {
            Some(condition) if !matches(condition, &current, true) => {
                return Err(s3_error!(PreconditionFailed, "If-Match does not match the ETag"));
            }
            Some(_) => {}
            None => {
                if self.if_unmodified_since.is_some_and(|since| modified_s > seconds(since)) {
                    return Err(s3_error!(PreconditionFailed, "modified since If-Unmodified-Since"));
                }
            }
        }
        let unchanged_error = || match unchanged {
            Unchanged::NotModified => s3_error!(NotModified),
            Unchanged::PreconditionFailed => s3_error!(PreconditionFailed, "the source is unchanged"),
        };
        match self.if_none_match {
            Some(condition) if matches(condition, &current, false) => return Err(unchanged_error()),
            Some(_) => {}
            None => {
                if self.if_modified_since.is_some_and(|since| modified_s <= seconds(since)) {
                    return Err(unchanged_error());
                }
            }
        }
        Ok(())
    }
}

/// The condition of a PutObject or CompleteMultipartUpload, checked by the
/// metadata service when the write applies. S3 takes `If-None-Match: *`
/// (create only) and `If-Match: <etag>` (replace only that object); any
/// other form, or both at once, is functionality it does not implement.
pub fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<Option<WriteCondition>> {
    match (if_match, if_none_match) {
        (None, None) => Ok(None),
        (None, Some(ETagCondition::Any)) => Ok(Some(WriteCondition::Absent)),
        (Some(ETagCondition::ETag(tag)), None) => Ok(Some(WriteCondition::ETag(tag.value().to_string()))),
        (None, Some(ETagCondition::ETag(_))) => {
            Err(s3_error!(NotImplemented, "If-None-Match on a write takes only \"*\""))
        }
        (Some(ETagCondition::Any), None) => {
            Err(s3_error!(NotImplemented, "If-Match on a write takes an ETag, not \"*\""))
        }
        (Some(_), Some(_)) => Err(s3_error!(NotImplemented, "If-Match and If-None-Match together on a write")),
    }
}

fn seconds(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

/// If-Match compares strongly, If-None-Match weakly (RFC 9110 §13.1).
fn matches(condition: &ETagCondition, current: &ETag, strong: bool) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(tag) if strong => tag.strong_cmp(current),
        ETagCondition::ETag(tag) => tag.weak_cmp(current),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::from(UNIX_EPOCH + Duration::from_secs(s))
    }

    fn tag(v: &str) -> ETagCondition {
        ETagCondition::ETag(ETag::Strong(v.into()))
    }

    fn code(r: S3Result<()>) -> Option<String> {
        r.err().map(|e| e.code().as_str().to_string())
    }

    #[test]
    fn writes_take_create_only_or_replace_this_etag_and_nothing_else() {
        assert_eq!(write_condition(None, None).ok(), Some(None));
        assert_eq!(write_condition(None, Some(&ETagCondition::Any)).ok(), Some(Some(WriteCondition::Absent)));
        let weak = ETagCondition::ETag(ETag::Weak("abc".into()));
        assert_eq!(write_condition(Some(&tag("abc")), None).ok(), Some(Some(WriteCondition::ETag("abc".into()))));
        assert_eq!(write_condition(Some(&weak), None).ok(), Some(Some(WriteCondition::ETag("abc".into()))));
        for (m, n) in [
            (None, Some(&tag("abc"))),
            (Some(&ETagCondition::Any), None),
            (Some(&tag("abc")), Some(&ETagCondition::Any)),
        ] {
            assert_eq!(code(write_condition(m, n).map(|_| ())).as_deref(), Some("NotImplemented"), "{m:?} {n:?}");
        }
    }

    #[test]
    fn etag_conditions_override_date_conditions() {
        let (right, wrong) = (tag("abc"), tag("xyz"));
        let (past, future) = (at(100), at(10_000));
        let modified_ms = 5_000_000;
        let check = |c: Conditions<'_>| code(c.check("abc", modified_ms, Unchanged::NotModified));
        assert_eq!(check(Conditions::default()), None);
        assert_eq!(
            check(Conditions { if_match: Some(&wrong), ..Default::default() }).as_deref(),
            Some("PreconditionFailed")
        );
        let c = Conditions { if_match: Some(&right), if_unmodified_since: Some(&past), ..Default::default() };
        assert_eq!(check(c), None, "a matching If-Match wins over If-Unmodified-Since");
        let c = Conditions { if_unmodified_since: Some(&past), ..Default::default() };
        assert_eq!(check(c).as_deref(), Some("PreconditionFailed"));
        let c = Conditions { if_none_match: Some(&right), ..Default::default() };
        assert_eq!(check(c).as_deref(), Some("NotModified"));
        let c = Conditions { if_none_match: Some(&wrong), if_modified_since: Some(&future), ..Default::default() };
        assert_eq!(check(c), None, "a failing If-None-Match wins over If-Modified-Since");
        let c = Conditions { if_modified_since: Some(&future), ..Default::default() };
        assert_eq!(check(c).as_deref(), Some("NotModified"));
        let c = Conditions { if_modified_since: Some(&past), ..Default::default() };
        assert_eq!(check(c), None);
        let any = ETagCondition::Any;
        let c = Conditions { if_none_match: Some(&any), ..Default::default() };
        assert_eq!(
            code(c.check("abc", modified_ms, Unchanged::PreconditionFailed)).as_deref(),
            Some("PreconditionFailed")
        );
    }
}
