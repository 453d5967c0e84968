//! What S3 stores about an object besides its data, and how it travels:
//! taken from a PUT's (or CopyObject's, or CreateMultipartUpload's)
//! headers into an [`ObjectPut`], and given back on GET and HEAD, with the
//! `response-*` overrides a GET may ask for.

use std::time::{Duration, UNIX_EPOCH};

use chuyi_meta_api::model::{ObjectPut, PART_SIZES_HEADER};
use http::HeaderMap;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::dto::{Checksum, Metadata, Timestamp, TimestampFormat};
use s3s::{s3_error, S3Result};

/// The Content-Type S3 gives an object put without one.
pub const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

/// Most bytes of user metadata (names and values), as S3.
pub const USER_META_MAX_BYTES: usize = 2048;

const CACHE_CONTROL: &str = "cache-control";
const CONTENT_DISPOSITION: &str = "content-disposition";
const CONTENT_ENCODING: &str = "content-encoding";
const CONTENT_LANGUAGE: &str = "content-language";
const EXPIRES: &str = "expires";
const CHECKSUM_CRC32: &str = "x-amz-checksum-crc32";
const CHECKSUM_CRC32C: &str = "x-amz-checksum-crc32c";
const CHECKSUM_CRC64NVME: &str = "x-amz-checksum-crc64nvme";
const CHECKSUM_SHA1: &str = "x-amz-checksum-sha1";
const CHECKSUM_SHA256: &str = "x-amz-checksum-sha256";

/// The standard headers an object keeps, as a request gives them.
#[derive(Debug, Default, Clone)]
pub struct Headers {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<Timestamp>,
    pub metadata: Option<Metadata>,
    /// `x-amz-tagging`: the version's tags.
    pub tagging: Option<String>,
}

impl Headers {
    /// The object description these headers make, without data.
    pub fn describe(self) -> S3Result<ObjectPut> {
        let mut user_meta: Vec<(String, String)> =
            self.metadata.unwrap_or_default().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        user_meta.sort();
        let meta_bytes: usize = user_meta.iter().map(|(k, v)| k.len() + v.len()).sum();
        if meta_bytes > USER_META_MAX_BYTES {
            return Err(s3_error!(
                MetadataTooLarge,
                "user metadata is {meta_bytes} bytes; at most {USER_META_MAX_BYTES}"
            ));
        }
        let mut headers = Vec::new();
        let mut keep = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                headers.push((name.to_string(), value));
            }
        };
        keep(CACHE_CONTROL, self.cache_control);
        keep(CONTENT_DISPOSITION, self.content_disposition);
        keep(CONTENT_ENCODING, self.content_encoding.and_then(|e| stored_encoding(&e)));
        keep(CONTENT_LANGUAGE, self.content_language);
        keep(EXPIRES, self.expires.as_ref().and_then(http_date));
        let mut object = ObjectPut {
            content_type: self.content_type.unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into()),
            user_meta,
            headers,
            ..ObjectPut::default()
        };
        if let Some(header) = self.tagging {
            crate::tagging::set_on(&mut object, &crate::tagging::from_header(&header)?);
        }
        Ok(object)
    }
}

/// Adds the checksums a PUT verified, to be returned with the object.
pub fn keep_checksums(object: &mut ObjectPut, sums: &Checksum) {
    let pairs = [
        (CHECKSUM_CRC32, &sums.checksum_crc32),
        (CHECKSUM_CRC32C, &sums.checksum_crc32c),
        (CHECKSUM_CRC64NVME, &sums.checksum_crc64nvme),
        (CHECKSUM_SHA1, &sums.checksum_sha1),
        (CHECKSUM_SHA256, &sums.checksum_sha256),
    ];
    for (name, value) in pairs {
        if let Some(value) = value {
            object.headers.push((name.into(), value.clone()));
        }
    }
}

/// The description less what belongs to one version's data (checksums,
/// framing): what a copy with the COPY directive carries over.
pub fn without_checksums(object: &ObjectPut) -> ObjectPut {
    let mut copy = object.without_data();
    copy.headers.retain(|(name, _)| {
        !name.starts_with("x-amz-checksum-") && name != PART_SIZES_HEADER && !name.starts_with("x-chuyi-sse-c-")
    });
    copy.flags = 0;
    copy
}

/// Content-Encoding less `aws-chunked`, which describes how the request
/// body was framed, not the object (S3 does not store it).
fn stored_encoding(encoding: &str) -> Option<String> {
    let kept: Vec<&str> = encoding
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

pub(crate) fn http_date(t: &Timestamp) -> Option<String> {
    let mut out = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut out).ok()?;
    String::from_utf8(out).ok()
}

/// The last millisecond a [`Timestamp`] holds (9999-12-31T23:59:59.999Z):
/// past it, the conversion panics.
const TIMESTAMP_MAX_MS: u64 = 253_402_300_799_999;

/// A time `ms` after the epoch, as late as a timestamp goes at most: a
/// lifecycle rule of a million days puts an expiry there, and must not
/// panic the request that reports it.
pub fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms.min(TIMESTAMP_MAX_MS)))
}

/// The headers GET and HEAD return for an object.
#[derive(Debug, Default)]
pub struct Returned {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<Timestamp>,
    pub metadata: Option<Metadata>,
    pub checksums: Checksum,
}

/// The `response-*` overrides of a GET or HEAD input.
macro_rules! overrides {
    ($input:expr) => {
        $crate::description::Overrides {
            content_type: $input.response_content_type,
            cache_control: $input.response_cache_control,
            content_disposition: $input.response_content_disposition,
            content_encoding: $input.response_content_encoding,
            content_language: $input.response_content_language,
            expires: $input.response_expires,
        }
    };
}
pub(crate) use overrides;

/// The checksums a PUT or UploadPart input carries as headers, taken out.
macro_rules! header_checksums {
    ($input:expr) => {
        s3s::dto::Checksum {
            checksum_crc32: $input.checksum_crc32.take(),
            checksum_crc32c: $input.checksum_crc32c.take(),
            checksum_crc64nvme: $input.checksum_crc64nvme.take(),
            checksum_sha1: $input.checksum_sha1.take(),
            checksum_sha256: $input.checksum_sha256.take(),
            ..s3s::dto::Checksum::default()
        }
    };
}
pub(crate) use header_checksums;

/// An output struct of type `$ty` with `fields` and the checksums of
/// `$sums` (a [`Checksum`]): PUT, UploadPart, GET and HEAD all return
/// the same five.
macro_rules! with_checksums {
    ($ty:path { $($field:ident: $value:expr),* $(,)? }, $sums:expr) => {{
        let sums: s3s::dto::Checksum = $sums;
        type Output = $ty;
        // Some outputs (a listed part) have no field but these.
        #[allow(clippy::needless_update)]
        let output = Output {
            $($field: $value,)*
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            ..Default::default()
        };
        output
    }};
}
pub(crate) use with_checksums;

/// A GET's `response-*` overrides.
#[derive(Debug, Default)]
pub struct Overrides {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<Timestamp>,
}

pub fn returned(object: &ObjectPut, overrides: Overrides) -> Returned {
    let header = |name: &str| object.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let stored_expires = header(EXPIRES).and_then(|v| Timestamp::parse(TimestampFormat::HttpDate, &v).ok());
    let metadata = (!object.user_meta.is_empty()).then(|| object.user_meta.iter().cloned().collect());
    Returned {
        content_type: overrides.content_type.or_else(|| Some(object.content_type.clone())),
        cache_control: overrides.cache_control.or_else(|| header(CACHE_CONTROL)),
        content_disposition: overrides.content_disposition.or_else(|| header(CONTENT_DISPOSITION)),
        content_encoding: overrides.content_encoding.or_else(|| header(CONTENT_ENCODING)),
        content_language: overrides.content_language.or_else(|| header(CONTENT_LANGUAGE)),
        expires: overrides.expires.or(stored_expires),
        metadata,
        checksums: Checksum {
            checksum_crc32: header(CHECKSUM_CRC32),
            checksum_crc32c: header(CHECKSUM_CRC32C),
            checksum_crc64nvme: header(CHECKSUM_CRC64NVME),
            checksum_sha1: header(CHECKSUM_SHA1),
            checksum_sha256: header(CHECKSUM_SHA256),
            checksum_type: None,
        },
    }
    .with_checksum_type(header(crate::part_checksums::TYPE_HEADER))
}

impl Returned {
    /// A multipart object's checksum type is stored with it; any other
    /// checksum is of the whole object, as a single PUT's.
    fn with_checksum_type(mut self, stored: Option<String>) -> Self {
        if self.checksums != Checksum::default() {
            self.checksums.checksum_type = Some(stored.unwrap_or_else(|| "FULL_OBJECT".into()).into());
        }
        self
    }
}

/// The checksums a request body must be checked against: those sent as
/// headers now, and those announced to come as trailers
/// (`x-amz-trailer`) or asked for by algorithm.
pub fn hasher_for(headers: &HeaderMap, sent: &Checksum, algorithm: Option<&str>) -> ChecksumHasher {
    let trailer = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let sdk = headers.get("x-amz-sdk-checksum-algorithm").and_then(|v| v.to_str().ok()).map(str::to_ascii_uppercase);
    let asked = |name: &str, header: &str| {
        algorithm.is_some_and(|a| a.eq_ignore_ascii_case(name))
            || sdk.as_deref() == Some(name)
            || trailer.contains(header)
    };
    ChecksumHasher {
        crc32: (sent.checksum_crc32.is_some() || asked("CRC32", CHECKSUM_CRC32)).then(Crc32::new),
        crc32c: (sent.checksum_crc32c.is_some() || asked("CRC32C", CHECKSUM_CRC32C)).then(Crc32c::new),
        sha1: (sent.checksum_sha1.is_some() || asked("SHA1", CHECKSUM_SHA1)).then(Sha1::new),
        sha256: (sent.checksum_sha256.is_some() || asked("SHA256", CHECKSUM_SHA256)).then(Sha256::new),
        crc64nvme: (sent.checksum_crc64nvme.is_some() || asked("CRC64NVME", CHECKSUM_CRC64NVME)).then(Crc64Nvme::new),
    }
}

/// The checksums the client sent, from headers or (once the body is read)
/// trailers.
pub fn sent_checksums(headers: Checksum, trailers: Option<&HeaderMap>) -> Checksum {
    let trailer = |name: &str| trailers.and_then(|t| t.get(name)).and_then(|v| v.to_str().ok()).map(String::from);
    Checksum {
        checksum_crc32: headers.checksum_crc32.or_else(|| trailer(CHECKSUM_CRC32)),
        checksum_crc32c: headers.checksum_crc32c.or_else(|| trailer(CHECKSUM_CRC32C)),
        checksum_crc64nvme: headers.checksum_crc64nvme.or_else(|| trailer(CHECKSUM_CRC64NVME)),
        checksum_sha1: headers.checksum_sha1.or_else(|| trailer(CHECKSUM_SHA1)),
        checksum_sha256: headers.checksum_sha256.or_else(|| trailer(CHECKSUM_SHA256)),
        ..Checksum::default()
    }
}

/// Checks every sent checksum against the computed one: S3's BadDigest.
pub fn verify_checksums(sent: &Checksum, computed: &Checksum) -> S3Result<()> {
    let pairs = [
        ("CRC32", &sent.checksum_crc32, &computed.checksum_crc32),
        ("CRC32C", &sent.checksum_crc32c, &computed.checksum_crc32c),
        ("CRC64NVME", &sent.checksum_crc64nvme, &computed.checksum_crc64nvme),
        ("SHA1", &sent.checksum_sha1, &computed.checksum_sha1),
        ("SHA256", &sent.checksum_sha256, &computed.checksum_sha256),
    ];
    for (name, sent, computed) in pairs {
        if let Some(sent) = sent {
            if Some(sent) != computed.as_ref() {
                return Err(s3_error!(BadDigest, "the {name} you specified did not match the calculated checksum"));
            }
        }
    }
    Ok(())
}

/// Checks Content-MD5 (base64) against the body's MD5.
pub fn verify_md5(content_md5: Option<&str>, md5: &[u8; 16]) -> S3Result<()> {
    let Some(sent) = content_md5 else { return Ok(()) };
    let Ok(sent) = base64_simd::STANDARD.decode_to_vec(sent.trim()) else {
        return Err(s3_error!(InvalidDigest, "Content-MD5 is not base64"));
    };
    if sent.len() != 16 {
        return Err(s3_error!(InvalidDigest, "Content-MD5 is not 16 bytes"));
    }
    if sent != md5 {
        return Err(s3_error!(BadDigest, "the Content-MD5 you specified did not match what was received"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_overrides() {
        let headers = Headers {
            content_type: Some("application/dicom".into()),
            cache_control: Some("max-age=60".into()),
            expires: Some(timestamp(1_700_000_000_000)),
            metadata: Some([("Study".to_string(), "x".to_string())].into_iter().collect()),
            ..Headers::default()
        };
        let object = headers.describe().expect("describe");
        assert_eq!(object.user_meta, vec![("study".to_string(), "x".to_string())]);
        let back = returned(&object, Overrides { content_type: Some("text/plain".into()), ..Overrides::default() });
        assert_eq!(back.content_type.as_deref(), Some("text/plain"));
        assert_eq!(back.cache_control.as_deref(), Some("max-age=60"));
        assert_eq!(back.expires.map(|t| time::OffsetDateTime::from(t).unix_timestamp()), Some(1_700_000_000));
        let bare = Headers::default().describe().expect("describe");
        assert_eq!(bare.content_type, DEFAULT_CONTENT_TYPE);
    }

    #[test]
    fn aws_chunked_is_not_stored_as_an_encoding() {
        assert_eq!(stored_encoding("aws-chunked"), None);
        assert_eq!(stored_encoding("aws-chunked, gzip").as_deref(), Some("gzip"));
        assert_eq!(stored_encoding("gzip").as_deref(), Some("gzip"));
    }

    #[test]
    fn too_much_user_metadata_is_refused() {
        let big = "v".repeat(USER_META_MAX_BYTES);
        let headers = Headers { metadata: Some([("k".to_string(), big)].into_iter().collect()), ..Headers::default() };
        assert_eq!(
            headers.describe().err().map(|e| e.code().as_str().to_string()).as_deref(),
            Some("MetadataTooLarge")
        );
    }

    #[test]
    fn digests_are_checked() {
        let md5 = [7u8; 16];
        let b64 = base64_simd::STANDARD.encode_to_string(md5);
        assert!(verify_md5(Some(&b64), &md5).is_ok());
        assert!(verify_md5(Some(&b64), &[8u8; 16]).is_err());
        assert!(verify_md5(Some("!!"), &md5).is_err());
        let sent = Checksum { checksum_crc32: Some("AAAAAA==".into()), ..Checksum::default() };
        let right = Checksum { checksum_crc32: Some("AAAAAA==".into()), ..Checksum::default() };
        let wrong = Checksum { checksum_crc32: Some("BBBBBB==".into()), ..Checksum::default() };
        assert!(verify_checksums(&sent, &right).is_ok());
        assert!(verify_checksums(&sent, &wrong).is_err());
    }
}
