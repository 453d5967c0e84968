//! A multipart upload's checksum: the algorithm and type its creation
//! names, and the object's checksum made of its parts' as S3 makes it.
//!
//! - COMPOSITE (CRC32, CRC32C, SHA1, SHA256): the algorithm over the
//!   parts' binary checksums concatenated, then `-` and the part count.
//! - FULL_OBJECT (CRC32, CRC32C, CRC64NVME): the CRC of the whole object,
//!   combined from the parts' CRCs and lengths without reading a byte.
//!
//! Pure: the handlers in [`crate::multipart`] do the I/O.

use crc_fast::CrcAlgorithm;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::dto::Checksum;
use s3s::{s3_error, S3Result};

/// The upload's headers naming its checksum (stored with the upload,
/// then with the object, KEYSPACE.md).
pub const ALGORITHM_HEADER: &str = "x-amz-checksum-algorithm";
pub const TYPE_HEADER: &str = "x-amz-checksum-type";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Composite,
    FullObject,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] =
        [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme, Algorithm::Sha1, Algorithm::Sha256];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// S3's name: `x-amz-checksum-algorithm`'s value.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    /// The header (and stored header) of a checksum in this algorithm.
    pub fn header(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// This algorithm's value among `sums`.
    pub fn of(self, sums: &Checksum) -> Option<&String> {
        match self {
            Algorithm::Crc32 => sums.checksum_crc32.as_ref(),
            Algorithm::Crc32c => sums.checksum_crc32c.as_ref(),
            Algorithm::Crc64Nvme => sums.checksum_crc64nvme.as_ref(),
            Algorithm::Sha1 => sums.checksum_sha1.as_ref(),
            Algorithm::Sha256 => sums.checksum_sha256.as_ref(),
        }
    }

    /// `sums` with only this algorithm's value set to `value`.
    pub fn sums(self, value: String) -> Checksum {
        let mut sums = Checksum::default();
        let slot = match self {
            Algorithm::Crc32 => &mut sums.checksum_crc32,
            Algorithm::Crc32c => &mut sums.checksum_crc32c,
            Algorithm::Crc64Nvme => &mut sums.checksum_crc64nvme,
            Algorithm::Sha1 => &mut sums.checksum_sha1,
            Algorithm::Sha256 => &mut sums.checksum_sha256,
        };
        *slot = Some(value);
        sums
    }

    fn crc(self) -> Option<CrcAlgorithm> {
        match self {
            Algorithm::Crc32 => Some(CrcAlgorithm::Crc32IsoHdlc),
            Algorithm::Crc32c => Some(CrcAlgorithm::Crc32Iscsi),
            Algorithm::Crc64Nvme => Some(CrcAlgorithm::Crc64Nvme),
            Algorithm::Sha1 | Algorithm::Sha256 => None,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Algorithm::Crc32 => Crc32::checksum(data).to_vec(),
            Algorithm::Crc32c => Crc32c::checksum(data).to_vec(),
            Algorithm::Crc64Nvme => Crc64Nvme::checksum(data).to_vec(),
            Algorithm::Sha1 => Sha1::checksum(data).to_vec(),
            Algorithm::Sha256 => Sha256::checksum(data).to_vec(),
        }
    }
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Composite => "COMPOSITE",
            Kind::FullObject => "FULL_OBJECT",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Kind::Composite, Kind::FullObject].into_iter().find(|k| k.name().eq_ignore_ascii_case(name))
    }
}

/// What a CreateMultipartUpload's `x-amz-checksum-algorithm` and
/// `x-amz-checksum-type` ask for, as S3 judges them: a type needs an
/// algorithm; CRC64NVME is full-object only, SHA1 and SHA256 composite
/// only; without a type, CRC64NVME is full-object and the rest composite.
pub fn chosen(algorithm: Option<&str>, kind: Option<&str>) -> S3Result<Option<(Algorithm, Kind)>> {
    let Some(algorithm) = algorithm else {
        if kind.is_some() {
            return Err(s3_error!(
                InvalidRequest,
                "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header"
            ));
        }
        return Ok(None);
    };
    let algorithm = Algorithm::parse(algorithm)
        .ok_or_else(|| s3_error!(InvalidRequest, "Checksum algorithm provided is unsupported: {algorithm}"))?;
    let kind = match kind {
        None if algorithm == Algorithm::Crc64Nvme => Kind::FullObject,
        None => Kind::Composite,
        Some(k) => {
            Kind::parse(k).ok_or_else(|| s3_error!(InvalidRequest, "Value for x-amz-checksum-type is invalid"))?
        }
    };
    let fits = match kind {
        Kind::FullObject => algorithm.crc().is_some(),
        Kind::Composite => algorithm != Algorithm::Crc64Nvme,
    };
    if !fits {
        return Err(s3_error!(
            InvalidRequest,
            "The {} checksum type cannot be used with the {} checksum algorithm.",
            kind.name(),
            algorithm.name().to_ascii_lowercase()
        ));
    }
    Ok(Some((algorithm, kind)))
}

/// The algorithm and type an upload was created with, from its stored
/// headers.
pub fn of_upload(headers: &[(String, String)]) -> Option<(Algorithm, Kind)> {
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let algorithm = Algorithm::parse(header(ALGORITHM_HEADER)?)?;
    let kind = header(TYPE_HEADER).and_then(Kind::parse).unwrap_or(Kind::Composite);
    Some((algorithm, kind))
}

fn decoded(algorithm: Algorithm, value: &str) -> S3Result<Vec<u8>> {
    base64_simd::STANDARD
        .decode_to_vec(value)
        .map_err(|_| s3_error!(InvalidPart, "a part's {} checksum is not base64", algorithm.name()))
}

/// The object's checksum from its parts' (each base64, with the part's
/// length), in part order.
pub fn combined(algorithm: Algorithm, kind: Kind, parts: &[(&str, u64)]) -> S3Result<String> {
    match (kind, algorithm.crc()) {
        (Kind::Composite, _) => {
            let mut joined = Vec::with_capacity(parts.len() * 32);
            for (value, _) in parts {
                joined.extend(decoded(algorithm, value)?);
            }
            let digest = algorithm.digest(&joined);
            Ok(format!("{}-{}", base64_simd::STANDARD.encode_to_string(digest), parts.len()))
        }
        (Kind::FullObject, Some(crc)) => {
            let mut whole: Option<u64> = None;
            for (value, len) in parts {
                let bytes = decoded(algorithm, value)?;
                let part = bytes.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
                whole = Some(match whole {
                    None => part,
                    Some(before) => crc_fast::checksum_combine(crc, before, part, *len),
                });
            }
            let whole = whole.unwrap_or(0);
            let bytes = whole.to_be_bytes();
            let width = if algorithm == Algorithm::Crc64Nvme { 8 } else { 4 };
            Ok(base64_simd::STANDARD.encode_to_string(&bytes[8 - width..]))
        }
        (Kind::FullObject, None) => {
            Err(s3_error!(InternalError, "a full-object {} checksum was accepted", algorithm.name()))
        }
    }
}

/// Whether a checksum the client sent for the whole object matches the
/// one made of the parts: a composite one may be sent without its `-N`.
pub fn matches(sent: &str, made: &str) -> bool {
    sent == made || made.rsplit_once('-').is_some_and(|(value, _)| value == sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        base64_simd::STANDARD.encode_to_string(bytes)
    }

    #[test]
    fn full_object_crcs_are_those_of_the_whole_object() {
        let a = vec![7u8; 5 << 10];
        let b: Vec<u8> = (0..3000u32).map(|i| (i * 31 % 251) as u8).collect();
        let whole = [a.as_slice(), b.as_slice()].concat();
        for algorithm in [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme] {
            let parts = [b64(algorithm.digest(&a)), b64(algorithm.digest(&b))];
            let listed = [(parts[0].as_str(), a.len() as u64), (parts[1].as_str(), b.len() as u64)];
            let made = combined(algorithm, Kind::FullObject, &listed).expect("combined");
            assert_eq!(made, b64(algorithm.digest(&whole)), "{algorithm:?}");
        }
    }

    #[test]
    fn composite_checksums_hash_the_parts_checksums() {
        let parts = [b64(Sha256::checksum(b"one")), b64(Sha256::checksum(b"two"))];
        let listed = [(parts[0].as_str(), 3), (parts[1].as_str(), 3)];
        let made = combined(Algorithm::Sha256, Kind::Composite, &listed).expect("combined");
        let joined = [Sha256::checksum(b"one"), Sha256::checksum(b"two")].concat();
        assert_eq!(made, format!("{}-2", b64(Sha256::checksum(&joined))));
        assert!(matches(&made, &made));
        assert!(matches(&b64(Sha256::checksum(&joined)), &made));
        assert!(!matches("AAAA", &made));
        assert!(combined(Algorithm::Sha256, Kind::Composite, &[("not base64!", 1)]).is_err());
    }

    #[test]
    fn algorithms_and_types_are_judged_as_s3_does() {
        let code = |a, k| chosen(a, k).err().map(|e| e.code().as_str().to_string());
        assert_eq!(chosen(None, None).ok(), Some(None));
        assert_eq!(code(None, Some("COMPOSITE")).as_deref(), Some("InvalidRequest"));
        assert_eq!(chosen(Some("crc32"), None).ok(), Some(Some((Algorithm::Crc32, Kind::Composite))));
        assert_eq!(chosen(Some("CRC64NVME"), None).ok(), Some(Some((Algorithm::Crc64Nvme, Kind::FullObject))));
        assert_eq!(chosen(Some("CRC32C"), Some("FULL_OBJECT")).ok(), Some(Some((Algorithm::Crc32c, Kind::FullObject))));
        assert_eq!(code(Some("SHA1"), Some("FULL_OBJECT")).as_deref(), Some("InvalidRequest"));
        assert_eq!(code(Some("CRC64NVME"), Some("COMPOSITE")).as_deref(), Some("InvalidRequest"));
        assert_eq!(code(Some("MD5"), None).as_deref(), Some("InvalidRequest"));
        assert_eq!(code(Some("CRC32"), Some("PARTIAL")).as_deref(), Some("InvalidRequest"));
        let stored = vec![(ALGORITHM_HEADER.to_string(), "SHA1".to_string()), (TYPE_HEADER.into(), "COMPOSITE".into())];
        assert_eq!(of_upload(&stored), Some((Algorithm::Sha1, Kind::Composite)));
        assert_eq!(of_upload(&[]), None);
    }
}
