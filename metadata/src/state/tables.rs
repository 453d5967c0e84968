//! The seam between the typed state and the store: reads and writes of raw
//! keys in `sm_data`, plus typed helpers that encode records the store's
//! way (version byte + postcard).
//!
//! The store implements [`Tables`] on a RocksDB view (for queries) and
//! [`TablesMut`] on a write overlay (for apply); tests use a `BTreeMap`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::codec::{decode, encode};

/// Why the tables failed under a command: trouble below the state, never
/// the command's fault (a refusal is a `MetaError`). The state names no
/// store: the store's own errors arrive boxed.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The store beneath could not read or write, or holds a value this
    /// version cannot decode.
    #[error(transparent)]
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// The stored state contradicts itself (a PG of a missing pool, a
    /// malformed index key): a bug or corruption, never bad input.
    #[error("state invariant broken: {0}")]
    Invariant(String),
}

/// A key and its value as stored.
pub(crate) type Pair = (Vec<u8>, Vec<u8>);

pub(crate) trait Tables {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TableError>;

    /// Up to `limit` pairs with `from <= key < to`, in key order.
    fn scan(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>, TableError>;

    fn get_rec<T: DeserializeOwned>(&self, what: &'static str, key: &[u8]) -> Result<Option<T>, TableError> {
        self.get(key)?.map(|bytes| decode(what, &bytes).map_err(TableError::from)).transpose()
    }

    /// Every record of `[from, to)`, decoded; for the small tables only.
    fn scan_recs<T: DeserializeOwned>(
        &self,
        what: &'static str,
        from: &[u8],
        to: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>, TableError> {
        self.scan_recs_limited(what, from, to, usize::MAX)
    }

    /// Up to `limit` records of `[from, to)`, decoded.
    fn scan_recs_limited<T: DeserializeOwned>(
        &self,
        what: &'static str,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, T)>, TableError> {
        let pairs = self.scan(from, to, limit)?;
        pairs.into_iter().map(|(k, v)| Ok((k, decode(what, &v).map_err(TableError::from)?))).collect()
    }
}

pub(crate) trait TablesMut: Tables {
    fn put(&mut self, key: &[u8], value: Vec<u8>);

    fn delete(&mut self, key: &[u8]);

    fn put_rec<T: Serialize>(&mut self, what: &'static str, key: &[u8], value: &T) -> Result<(), TableError> {
        let bytes = encode(what, value)?;
        self.put(key, bytes);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod memory {
    //! An in-memory [`TablesMut`] for apply's unit tests.

    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    pub(crate) struct MemTables(pub(crate) BTreeMap<Vec<u8>, Vec<u8>>);

    impl Tables for MemTables {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TableError> {
            Ok(self.0.get(key).cloned())
        }

        fn scan(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>, TableError> {
            if from >= to {
                return Ok(Vec::new());
            }
            let range = self.0.range(from.to_vec()..to.to_vec());
            Ok(range.take(limit).map(|(k, v)| (k.clone(), v.clone())).collect())
        }
    }

    impl TablesMut for MemTables {
        fn put(&mut self, key: &[u8], value: Vec<u8>) {
            self.0.insert(key.to_vec(), value);
        }

        fn delete(&mut self, key: &[u8]) {
            self.0.remove(key);
        }
    }
}
