//! ListObjects (v1), ListObjectsV2 and ListObjectVersions over the
//! metadata service's listing: prefix, delimiter, page size, and each
//! API's own way of resuming (marker, continuation token, key and
//! version-id markers), with `encoding-type=url`.

use chuyi_meta_api::ask;
use chuyi_meta_api::model::{seq_of_version_id, Bucket, NULL_VERSION};
use chuyi_meta_api::{ListCursor, ListRequest, Listing, LIST_MAX_KEYS};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use crate::buckets::owner;
use crate::description::timestamp;
use crate::gateway::{check_version_id, Gateway};
use crate::objects::{etag, reported_version};

/// The page size asked for: S3's default and most is 1000.
fn max_keys(asked: Option<i32>) -> S3Result<u32> {
    match asked {
        None => Ok(LIST_MAX_KEYS),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok((n as u32).min(LIST_MAX_KEYS)),
    }
}

/// Whether names in the answer are URL-encoded.
fn url_encoded(encoding: Option<&EncodingType>) -> S3Result<bool> {
    match encoding.map(|e| e.as_str()) {
        None => Ok(false),
        Some(EncodingType::URL) => Ok(true),
        Some(other) => Err(s3_error!(InvalidArgument, "Invalid Encoding Method specified in Request: {other}")),
    }
}

struct Names {
    url: bool,
}

/// A name as S3 URL-encodes it in listings: every byte but the unreserved
/// ones (`A-Z a-z 0-9 - _ . ~`) and `/` as `%XX`, a space as `+` (what SDKs
/// decode with `unquote_plus`; a `/` left plain is what they show for
/// prefixes and delimiters).
fn s3_url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Names {
    fn name(&self, s: &str) -> String {
        if self.url {
            s3_url_encode(s)
        } else {
            s.to_string()
        }
    }

    fn opt(&self, s: Option<&String>) -> Option<String> {
        s.map(|s| self.name(s))
    }
}

/// A continuation token: the cursor, opaque to the client.
fn token(cursor: &ListCursor) -> S3Result<String> {
    let json = serde_json::to_vec(cursor).map_err(|e| s3_error!(InternalError, "encoding a token: {e}"))?;
    Ok(base64_simd::URL_SAFE_NO_PAD.encode_to_string(json))
}

fn parse_token(token: &str) -> S3Result<ListCursor> {
    let bad = || s3_error!(InvalidArgument, "The continuation token provided is incorrect");
    let json = base64_simd::URL_SAFE_NO_PAD.decode_to_vec(token).map_err(|_| bad())?;
    serde_json::from_slice(&json).map_err(|_| bad())
}

/// A v1 marker or key-marker: a key, or a common prefix when it ends with
/// the delimiter (so the page does not report that prefix again).
fn marker_cursor(marker: &str, prefix: &str, delimiter: Option<&str>) -> ListCursor {
    let rolled_up =
        delimiter.is_some_and(|d| !d.is_empty() && marker.starts_with(prefix) && marker[prefix.len()..].ends_with(d));
    ListCursor { key: marker.to_string(), past_prefix: rolled_up, seq: None }
}

impl Gateway {
    async fn list(&self, request: ListRequest) -> S3Result<Listing> {
        if request.max_keys == 0 {
            return Ok(Listing::default());
        }
        self.ask(ask::List(request)).await
    }

    fn contents(&self, bucket: &Bucket, listing: &Listing, names: &Names, with_owner: bool) -> Vec<Object> {
        listing
            .entries
            .iter()
            .map(|e| Object {
                key: Some(names.name(&e.key)),
                size: Some(e.object.size as i64),
                e_tag: Some(etag(&e.object.etag)),
                last_modified: Some(timestamp(e.object.modified_ms)),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                owner: with_owner.then(|| owner(&bucket.owner)),
                ..Default::default()
            })
            .collect()
    }

    pub(crate) async fn list_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = req.input;
        let names = Names { url: url_encoded(input.encoding_type.as_ref())? };
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(t), _) => Some(parse_token(t)?),
            (None, Some(s)) if !s.is_empty() => Some(ListCursor::after_key(s.clone())),
            _ => None,
        };
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let request = ListRequest {
            bucket: bucket.name.clone(),
            prefix: prefix.clone(),
            delimiter: delimiter.clone(),
            after,
            max_keys: max,
            versions: false,
        };
        let listing = self.list(request).await?;
        let contents = self.contents(&bucket, &listing, &names, input.fetch_owner.unwrap_or(false));
        let common_prefixes: Vec<CommonPrefix> =
            listing.common_prefixes.iter().map(|p| CommonPrefix { prefix: Some(names.name(p)) }).collect();
        let next = listing.next.as_ref().map(token).transpose()?;
        let output = ListObjectsV2Output {
            name: Some(bucket.name.clone()),
            prefix: Some(names.name(&prefix)),
            delimiter: names.opt(delimiter.as_ref()),
            max_keys: Some(max as i32),
            key_count: Some((contents.len() + common_prefixes.len()) as i32),
            continuation_token: input.continuation_token,
            start_after: names.opt(input.start_after.as_ref()),
            is_truncated: Some(next.is_some()),
            next_continuation_token: next,
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    pub(crate) async fn list_v1(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = req.input;
        let names = Names { url: url_encoded(input.encoding_type.as_ref())? };
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let after =
            input.marker.as_deref().filter(|m| !m.is_empty()).map(|m| marker_cursor(m, &prefix, delimiter.as_deref()));
        let request = ListRequest {
            bucket: bucket.name.clone(),
            prefix: prefix.clone(),
            delimiter: delimiter.clone(),
            after,
            max_keys: max,
            versions: false,
        };
        let listing = self.list(request).await?;
        let truncated = listing.next.is_some();
        // NextMarker is what the next page starts after: the last thing
        // listed (S3 sends it only with a delimiter, but clients take it
        // whenever it is there, and a page cut short by the scan budget
        // may list nothing). A v1 marker cannot resume inside a key's
        // versions, so a page that listed nothing resumes after the key
        // the scan stopped in.
        let next_marker = listing.next.as_ref().map(|next| {
            let last = listing.common_prefixes.last().into_iter().chain(listing.entries.last().map(|e| &e.key)).max();
            names.name(last.unwrap_or(&next.key))
        });
        let output = ListObjectsOutput {
            name: Some(bucket.name.clone()),
            prefix: Some(names.name(&prefix)),
            marker: Some(names.name(input.marker.as_deref().unwrap_or(""))),
            delimiter: names.opt(delimiter.as_ref()),
            max_keys: Some(max as i32),
            is_truncated: Some(truncated),
            next_marker,
            contents: Some(self.contents(&bucket, &listing, &names, true)),
            common_prefixes: Some(
                listing.common_prefixes.iter().map(|p| CommonPrefix { prefix: Some(names.name(p)) }).collect(),
            ),
            encoding_type: input.encoding_type,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    /// Where a version listing resumes: after a key, or after one version
    /// of it (`null` is found by reading the key's null version).
    async fn version_cursor(
        &self,
        bucket: &Bucket,
        key_marker: Option<&str>,
        version_marker: Option<&str>,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> S3Result<Option<ListCursor>> {
        let Some(key) = key_marker.filter(|k| !k.is_empty()) else {
            if version_marker.is_some_and(|v| !v.is_empty()) {
                return Err(s3_error!(
                    InvalidArgument,
                    "A version-id marker cannot be specified without a key marker."
                ));
            }
            return Ok(None);
        };
        let Some(version) = version_marker.filter(|v| !v.is_empty()) else {
            return Ok(Some(marker_cursor(key, prefix, delimiter)));
        };
        check_version_id(version)?;
        let seq = match seq_of_version_id(version) {
            Some(seq) => seq,
            None => {
                debug_assert_eq!(version, NULL_VERSION);
                match self.object(&bucket.name, key, Some(NULL_VERSION)).await {
                    Ok(record) => record.seq,
                    // The null version is gone: resume after the key.
                    Err(e) if *e.code() == s3s::S3ErrorCode::NoSuchVersion => {
                        return Ok(Some(ListCursor::after_key(key)))
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(Some(ListCursor::after_version(key, seq)))
    }

    pub(crate) async fn list_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let input = req.input;
        let names = Names { url: url_encoded(input.encoding_type.as_ref())? };
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let after = self
            .version_cursor(
                &bucket,
                input.key_marker.as_deref(),
                input.version_id_marker.as_deref(),
                &prefix,
                delimiter.as_deref(),
            )
            .await?;
        let request = ListRequest {
            bucket: bucket.name.clone(),
            prefix: prefix.clone(),
            delimiter: delimiter.clone(),
            after,
            max_keys: max,
            versions: true,
        };
        let listing = self.list(request).await?;
        let (mut versions, mut markers) = (Vec::new(), Vec::new());
        for e in &listing.entries {
            let version_id = reported_version(&bucket, &e.object.version_id).or_else(|| Some(NULL_VERSION.into()));
            if e.object.delete_marker {
                markers.push(DeleteMarkerEntry {
                    key: Some(names.name(&e.key)),
                    version_id,
                    is_latest: Some(e.is_latest),
                    last_modified: Some(timestamp(e.object.modified_ms)),
                    owner: Some(owner(&bucket.owner)),
                });
            } else {
                versions.push(ObjectVersion {
                    key: Some(names.name(&e.key)),
                    version_id,
                    is_latest: Some(e.is_latest),
                    last_modified: Some(timestamp(e.object.modified_ms)),
                    e_tag: Some(etag(&e.object.etag)),
                    size: Some(e.object.size as i64),
                    storage_class: Some(ObjectVersionStorageClass::from_static(ObjectVersionStorageClass::STANDARD)),
                    owner: Some(owner(&bucket.owner)),
                    ..Default::default()
                });
            }
        }
        // The next markers name the last thing listed: a version (by its
        // id) or a common prefix.
        let (next_key, next_version) = match &listing.next {
            None => (None, None),
            Some(next) => {
                let version = next
                    .seq
                    .and_then(|seq| listing.entries.iter().rev().find(|e| e.key == next.key && e.object.seq == seq));
                (Some(names.name(&next.key)), version.map(|e| e.object.version_id.clone()))
            }
        };
        let output = ListObjectVersionsOutput {
            name: Some(bucket.name.clone()),
            prefix: Some(names.name(&prefix)),
            delimiter: names.opt(delimiter.as_ref()),
            key_marker: Some(names.name(input.key_marker.as_deref().unwrap_or(""))),
            version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
            max_keys: Some(max as i32),
            is_truncated: Some(listing.next.is_some()),
            next_key_marker: next_key,
            next_version_id_marker: next_version,
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: Some(
                listing.common_prefixes.iter().map(|p| CommonPrefix { prefix: Some(names.name(p)) }).collect(),
            ),
            encoding_type: input.encoding_type,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_url_encoded_as_s3_does() {
        assert_eq!(s3_url_encode("scans/2024/ct 01+a.dcm"), "scans/2024/ct+01%2Ba.dcm");
        assert_eq!(s3_url_encode("a~b_c-d.e"), "a~b_c-d.e");
        assert_eq!(s3_url_encode("病人/x%y"), "%E7%97%85%E4%BA%BA/x%25y");
        assert_eq!(s3_url_encode("\u{1}&<"), "%01%26%3C");
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let cursor = ListCursor { key: "a/b c".into(), past_prefix: true, seq: Some(7) };
        assert_eq!(parse_token(&token(&cursor).expect("token")).expect("parse"), cursor);
        assert!(parse_token("not a token!").is_err());
        assert!(parse_token("").is_err());
    }

    #[test]
    fn a_marker_ending_in_the_delimiter_skips_its_prefix() {
        assert!(marker_cursor("photos/2024/", "photos/", Some("/")).past_prefix);
        assert!(!marker_cursor("photos/2024/a", "photos/", Some("/")).past_prefix);
        assert!(!marker_cursor("photos/2024/", "photos/", None).past_prefix);
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(max_keys(None).ok(), Some(LIST_MAX_KEYS));
        assert_eq!(max_keys(Some(5000)).ok(), Some(LIST_MAX_KEYS));
        assert!(max_keys(Some(-1)).is_err());
    }
}
