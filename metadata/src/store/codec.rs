//! Byte encodings of everything the store writes; layouts in KEYSPACE.md.
//!
//! Keys that order (log indexes) are big-endian integers so RocksDB's
//! bytewise order is numeric order. Values are one format version byte
//! followed by postcard: compact, already a workspace dependency, and the
//! version byte lets a later release read old values and migrate them.
//! serde_json was rejected: several times larger for log entries.

use serde::de::DeserializeOwned;
use serde::Serialize;

use chuyi_meta_api::model::decoding_stored;

use super::StoreError;

/// Version byte of values written before object data runs had an offset
/// (a [`DataRun`] was `owner, len`); still read, never written.
///
/// [`DataRun`]: crate::state::model::DataRun
pub(crate) const FORMAT_V1: u8 = 1;
/// Version byte prefixing every stored value now: a `DataRun` is `owner,
/// offset, len`.
pub(crate) const FORMAT_V2: u8 = 2;

/// Key of the log entry at `index`.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Inverse of [`log_key`]; a key of the wrong length is corruption.
pub(crate) fn parse_log_key(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::BadLogKey { len: key.len() })?;
    Ok(u64::from_be_bytes(bytes))
}

/// `FORMAT_V2` followed by the postcard encoding of `value`.
pub(crate) fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![FORMAT_V2]).map_err(|source| StoreError::Encode { what, source })
}

/// Inverse of [`encode`]; rejects unknown versions and trailing garbage.
pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    let (&version, body) = bytes.split_first().ok_or(StoreError::Empty { what })?;
    if version != FORMAT_V1 && version != FORMAT_V2 {
        return Err(StoreError::UnknownVersion { what, version });
    }
    let taken = decoding_stored(version == FORMAT_V1, || postcard::take_from_bytes(body));
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
        assert_eq!(bytes[0], FORMAT_V2);
        assert_eq!(decode::<u64>("test", &bytes).ok(), Some(42));
        assert!(matches!(decode::<u64>("test", &[]), Err(StoreError::Empty { .. })));
        assert!(matches!(decode::<u64>("test", &[9, 42]), Err(StoreError::UnknownVersion { version: 9, .. })));
        assert!(matches!(decode::<u64>("test", &[FORMAT_V2, 42, 0]), Err(StoreError::TrailingBytes { .. })));
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
}
