//! Byte encodings of everything the store writes; layouts in KEYSPACE.md.
//!
//! Keys that order (log indexes) are big-endian integers so RocksDB's
//! bytewise order is numeric order. Values are one format version byte
//! followed by postcard: compact, already a workspace dependency, and the
//! version byte lets a later release read old values and migrate them.
//! serde_json was rejected: several times larger for log entries.

use serde::de::DeserializeOwned;
use serde::Serialize;

use chuyi_meta_api::model::{decoding_stored, STORED_FORMAT};

use super::StoreError;

/// Version byte of values written before object data runs had an offset
/// (a [`DataRun`] was `owner, len`); still read, never written.
///
/// [`DataRun`]: crate::state::model::DataRun
pub(crate) const FORMAT_V1: u8 = 1;
/// Version byte of values written before a multipart part kept its
/// checksum: a `DataRun` is `owner, offset, len`; still read (named for
/// the tests that write it).
#[cfg(test)]
pub(crate) const FORMAT_V2: u8 = 2;
/// Version byte prefixing every stored value now: a `Part` and the
/// multipart commands carry checksums (the layout changes are listed at
/// [`STORED_FORMAT`]).
pub(crate) const FORMAT_V3: u8 = STORED_FORMAT;

/// Key of the log entry at `index`.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Inverse of [`log_key`]; a key of the wrong length is corruption.
pub(crate) fn parse_log_key(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::BadLogKey { len: key.len() })?;
    Ok(u64::from_be_bytes(bytes))
}

/// `FORMAT_V3` followed by the postcard encoding of `value`.
pub(crate) fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![FORMAT_V3]).map_err(|source| StoreError::Encode { what, source })
}

/// Inverse of [`encode`]; rejects unknown versions and trailing garbage.
pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    let (&version, body) = bytes.split_first().ok_or(StoreError::Empty { what })?;
    if !(FORMAT_V1..=FORMAT_V3).contains(&version) {
        return Err(StoreError::UnknownVersion { what, version });
    }
    let taken = decoding_stored(version, || postcard::take_from_bytes(body));
    let (value, rest) = taken.map_err(|source| StoreError::Decode { what, source })?;
    if !rest.is_empty() {
        return Err(StoreError::TrailingBytes { what, len: rest.len() });
    }
    Ok(value)
}

/// Decodes an optional stored value, absent meaning `None`.
pub(crate) fn decode_opt<T: DeserializeOwned>(
    what: &'static str,
    bytes: Option<Vec<u8>>,
) -> Result<Option<T>, StoreError> {
    bytes.map(|b| decode(what, &b)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_numerically() {
        assert!(log_key(255) < log_key(256));
        assert_eq!(parse_log_key(&log_key(u64::MAX)).ok(), Some(u64::MAX));
        assert!(parse_log_key(&[1, 2, 3]).is_err());
    }

    #[test]
    fn values_carry_a_version_and_reject_garbage() {
        let bytes = encode("test", &42u64).expect("encode");
        assert_eq!(bytes[0], FORMAT_V3);
        assert_eq!(decode::<u64>("test", &bytes).ok(), Some(42));
        assert!(matches!(decode::<u64>("test", &[]), Err(StoreError::Empty { .. })));
        assert!(matches!(decode::<u64>("test", &[9, 42]), Err(StoreError::UnknownVersion { version: 9, .. })));
        assert!(matches!(decode::<u64>("test", &[FORMAT_V3, 42, 0]), Err(StoreError::TrailingBytes { .. })));
    }

    #[test]
    fn format_1_data_runs_read_as_runs_from_offset_0() {
        use crate::state::model::{DataRun, PendingData};
        // Format 1: owner, len (varints), then the pending record's expiry.
        let v1 = [FORMAT_V1, 0x81, 0x01, 0x05, 0x07];
        let pending: PendingData = decode("pending data", &v1).expect("format 1");
        assert_eq!(pending, PendingData { run: DataRun { owner: 129, offset: 0, len: 5 }, expires_ms: 7 });
        let run = DataRun { owner: 129, offset: 4096, len: 5 };
        let v2 = encode("run", &run).expect("encode");
        assert_eq!(decode::<DataRun>("run", &v2).ok(), Some(run));
        // The format is per value: a format 1 value does not leave the
        // thread reading format 1.
    }

    #[test]
    fn format_2_parts_and_part_commands_read_without_checksums() {
        use crate::state::model::{DataRun, Part};
        use crate::state::Command;
        // Format 2 wrote a part as number, etag, run, time; format 3 adds
        // the checksum after them.
        #[derive(Serialize)]
        struct PartV2<'a>(u32, &'a str, DataRun, u64);
        let run = DataRun { owner: 7, offset: 0, len: 5 };
        let v2 = postcard::to_extend(&PartV2(3, "abc", run, 9), vec![FORMAT_V2]).expect("encode");
        let part: Part = decode("part", &v2).expect("format 2");
        assert_eq!(part, Part { number: 3, etag: "abc".into(), run, modified_ms: 9, checksum: None, size: None });
        let with = Part { checksum: Some("AAAAAA==".into()), ..part };
        assert_eq!(decode::<Part>("part", &encode("part", &with).expect("encode")).ok(), Some(with));
        // A format 2 log entry's PutPart: the variant's fields, no checksum.
        #[derive(Serialize)]
        enum CommandV2<'a> {
            PutPart { bucket: &'a str, key: &'a str, upload_id: &'a str, number: u32, etag: &'a str, run: DataRun },
        }
        let index = Command::PutPart {
            bucket: String::new(),
            key: String::new(),
            upload_id: String::new(),
            number: 0,
            etag: String::new(),
            run,
            checksum: None,
            size: None,
        };
        let variant = postcard::to_allocvec(&index).expect("encode")[0];
        let mut old = vec![FORMAT_V2, variant];
        let fields = CommandV2::PutPart { bucket: "b", key: "k", upload_id: "u", number: 2, etag: "e", run };
        old.extend_from_slice(&postcard::to_allocvec(&fields).expect("encode")[1..]);
        let read: Command = decode("log entry", &old).expect("format 2 command");
        assert!(matches!(read, Command::PutPart { number: 2, checksum: None, size: None, .. }));
        // A format 2 bucket usage: nothing was compressed, stored as sent.
        let v2 = postcard::to_extend(&(3u64, 500u64), vec![FORMAT_V2]).expect("encode");
        let usage: crate::state::model::BucketUsage = decode("usage", &v2).expect("format 2");
        assert_eq!((usage.objects, usage.bytes, usage.stored_bytes), (3, 500, 500));
    }
}
