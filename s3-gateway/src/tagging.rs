//! Tag sets of objects and buckets: S3's limits, the `x-amz-tagging`
//! header form, and the stored form.
//!
//! An object version's tags live in its description's headers under
//! [`TAGGING_HEADER`] (the metadata service's `SetObjectTags` rewrites
//! them); a bucket's in its `tagging` configuration document. Both are
//! stored URL-encoded (`key=value&...`), the form the header carries.

use chuyi_meta_api::model::{ObjectPut, TAGGING_HEADER};
use s3s::dto::{Tag, TagSet, Tagging};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};

/// Tags an object version may carry.
pub const OBJECT_TAGS_MAX: usize = 10;
/// Tags a bucket may carry.
pub const BUCKET_TAGS_MAX: usize = 50;
/// Characters in a tag key and a tag value at most.
pub const KEY_MAX_CHARS: usize = 128;
pub const VALUE_MAX_CHARS: usize = 256;

/// A tag set in order, keys unique.
pub type Tags = Vec<(String, String)>;

/// Checks a tag set against S3's rules: at most `max` tags, unique keys of
/// 1 to 128 characters not starting with `aws:`, values of at most 256,
/// both of letters, digits, white space and `+ - = . _ : / @`.
pub fn check(tags: &Tags, max: usize) -> S3Result<()> {
    if tags.len() > max {
        return Err(too_many(max, tags.len()));
    }
    let allowed = |s: &str| s.chars().all(|c| c.is_alphanumeric() || c.is_whitespace() || "+-=._:/@".contains(c));
    for (i, (key, value)) in tags.iter().enumerate() {
        if key.is_empty() || key.chars().count() > KEY_MAX_CHARS {
            return Err(s3_error!(InvalidTag, "a tag key is 1 to {KEY_MAX_CHARS} characters"));
        }
        if value.chars().count() > VALUE_MAX_CHARS {
            return Err(s3_error!(InvalidTag, "a tag value is at most {VALUE_MAX_CHARS} characters"));
        }
        if key.starts_with("aws:") {
            return Err(s3_error!(InvalidTag, "Your TagKey cannot be prefixed with aws:"));
        }
        if !allowed(key) || !allowed(value) {
            return Err(s3_error!(InvalidTag, "The TagValue you have provided is invalid"));
        }
        if tags[..i].iter().any(|(k, _)| k == key) {
            return Err(s3_error!(InvalidTag, "Cannot provide multiple Tags with the same key"));
        }
    }
    Ok(())
}

/// S3's answer to too many tags: 400 with the code BadRequest, which s3s
/// does not name.
fn too_many(max: usize, given: usize) -> S3Error {
    let mut e = S3Error::with_message(
        S3ErrorCode::Custom("BadRequest".into()),
        format!("tags cannot be more than {max}; {given} given"),
    );
    e.set_status_code(http::StatusCode::BAD_REQUEST);
    e
}

/// The tags of an `x-amz-tagging` header (URL query form), checked.
pub fn from_header(header: &str) -> S3Result<Tags> {
    let tags = decode(header).ok_or_else(|| s3_error!(InvalidArgument, "x-amz-tagging is not URL-encoded"))?;
    check(&tags, OBJECT_TAGS_MAX)?;
    Ok(tags)
}

/// The tags of a Tagging document, checked against `max`.
pub fn from_document(tagging: Tagging, max: usize) -> S3Result<Tags> {
    let tags = tagging.tag_set.into_iter().map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default())).collect();
    check(&tags, max)?;
    Ok(tags)
}

pub fn to_document(tags: Tags) -> TagSet {
    tags.into_iter().map(|(key, value)| Tag { key: Some(key), value: Some(value) }).collect()
}

/// The stored form: `key=value&...`, URL-encoded.
pub fn encode(tags: &Tags) -> String {
    let pair = |(k, v): &(String, String)| format!("{}={}", urlencoding::encode(k), urlencoding::encode(v));
    tags.iter().map(pair).collect::<Vec<_>>().join("&")
}

/// Inverse of [`encode`], also reading `+` as a space as query strings do;
/// `None` for bytes that are no UTF-8 once decoded.
pub fn decode(s: &str) -> Option<Tags> {
    let part = |p: &str| urlencoding::decode(&p.replace('+', " ")).ok().map(|c| c.into_owned());
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((part(k)?, part(v)?))
        })
        .collect()
}

/// An object version's tags.
pub fn of_object(object: &ObjectPut) -> Tags {
    let stored = object.headers.iter().find(|(n, _)| n == TAGGING_HEADER).map(|(_, v)| v.as_str());
    stored.and_then(decode).unwrap_or_default()
}

/// Replaces an object description's tags.
pub fn set_on(object: &mut ObjectPut, tags: &Tags) {
    object.headers.retain(|(n, _)| n != TAGGING_HEADER);
    if !tags.is_empty() {
        object.headers.push((TAGGING_HEADER.into(), encode(tags)));
    }
}

/// What `x-amz-tagging-count` says: the number of tags, when there are any.
pub fn count(object: &ObjectPut) -> Option<i32> {
    let n = of_object(object).len();
    (n > 0).then_some(n as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_header_form_round_trips() {
        let t = tags(&[("study", "CT chest"), ("ward", "3/b"), ("病区", "心内科"), ("empty", "")]);
        assert_eq!(decode(&encode(&t)), Some(t.clone()));
        assert_eq!(
            from_header("study=CT+chest&ward=3%2Fb").ok(),
            Some(tags(&[("study", "CT chest"), ("ward", "3/b")]))
        );
        assert_eq!(decode(""), Some(vec![]));
        assert_eq!(decode("a=%FF"), None, "not UTF-8");
    }

    #[test]
    fn s3s_limits_are_kept() {
        let code = |r: S3Result<()>| r.err().map(|e| e.code().as_str().to_string());
        assert_eq!(code(check(&tags(&[("a", "1")]), 10)), None);
        let eleven: Tags = (0..11).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(code(check(&eleven, OBJECT_TAGS_MAX)).as_deref(), Some("BadRequest"));
        assert_eq!(code(check(&eleven, BUCKET_TAGS_MAX)), None);
        for bad in [
            tags(&[("", "v")]),
            tags(&[(&"k".repeat(129), "v")]),
            tags(&[("k", &"v".repeat(257))]),
            tags(&[("aws:owner", "v")]),
            tags(&[("k", "a<b")]),
            tags(&[("k", "1"), ("k", "2")]),
        ] {
            assert_eq!(code(check(&bad, 10)).as_deref(), Some("InvalidTag"), "{bad:?}");
        }
    }

    #[test]
    fn an_object_keeps_one_tag_set() {
        let mut object = ObjectPut::default();
        assert_eq!(count(&object), None);
        set_on(&mut object, &tags(&[("a", "1"), ("b", "2")]));
        set_on(&mut object, &tags(&[("c", "3")]));
        assert_eq!(of_object(&object), tags(&[("c", "3")]));
        assert_eq!(count(&object), Some(1));
        set_on(&mut object, &vec![]);
        assert!(object.headers.is_empty());
    }
}
