//! The write side of apply: staged writes over a consistent RocksDB view, so
//! a command sees the writes of the commands before it in the same batch,
//! and a refused command's writes are undone before the batch is written.

use std::collections::BTreeMap;

use super::rocks::{Batch, Cf, View};
use crate::state::tables::{Pair, TableError, Tables, TablesMut};

/// Staged state writes: `None` is a delete.
pub(crate) struct Overlay<'a> {
    view: View<'a>,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Writes in order, to roll back to a checkpoint.
    undo: Vec<Undo>,
}

/// A key and what was staged for it before a write (`None`: nothing).
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

/// A point to roll back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checkpoint(usize);

impl<'a> Overlay<'a> {
    pub(crate) fn new(view: View<'a>) -> Self {
        Self { view, writes: BTreeMap::new(), undo: Vec::new() }
    }

    pub(crate) fn checkpoint(&self) -> Checkpoint {
        Checkpoint(self.undo.len())
    }

    /// Forgets every write staged since `cp`.
    pub(crate) fn rollback(&mut self, cp: Checkpoint) {
        while self.undo.len() > cp.0 {
            let Some((key, before)) = self.undo.pop() else { break };
            match before {
                Some(staged) => self.writes.insert(key, staged),
                None => self.writes.remove(&key),
            };
        }
    }

    /// Writes every staged change into `batch`.
    pub(crate) fn stage_into(self, batch: &mut Batch<'_>) {
        for (key, value) in self.writes {
            match value {
                Some(v) => batch.put(Cf::State, &key, &v),
                None => batch.delete(Cf::State, &key),
            }
        }
    }

    fn stage(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        let before = self.writes.insert(key.to_vec(), value);
        self.undo.push((key.to_vec(), before));
    }
}

impl Tables for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TableError> {
        match self.writes.get(key) {
            Some(staged) => Ok(staged.clone()),
            None => Ok(self.view.get(Cf::State, key)?),
        }
    }

    fn scan(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>, TableError> {
        if from >= to || limit == 0 {
            return Ok(Vec::new());
        }
        let staged: Vec<_> = self.writes.range(from.to_vec()..to.to_vec()).collect();
        // Each staged key can hide or replace at most one stored pair, so
        // this many stored pairs always suffice for `limit` merged ones.
        let stored = self.view.scan(Cf::State, from, to, limit.saturating_add(staged.len()))?;
        let mut merged = BTreeMap::new();
        for (k, v) in stored {
            merged.insert(k, Some(v));
        }
        for (k, v) in staged {
            merged.insert(k.clone(), v.clone());
        }
        Ok(merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).take(limit).collect())
    }
}

impl TablesMut for Overlay<'_> {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.stage(key, Some(value));
    }

    fn delete(&mut self, key: &[u8]) {
        self.stage(key, None);
    }
}

impl Tables for View<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TableError> {
        Ok(View::get(self, Cf::State, key)?)
    }

    fn scan(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>, TableError> {
        Ok(View::scan(self, Cf::State, from, to, limit)?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::store::rocks::{Durability, Rocks};

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8),
        Delete(u8),
        Checkpoint,
        Rollback,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..16, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            2 => (0u8..16).prop_map(Op::Delete),
            1 => Just(Op::Checkpoint),
            1 => Just(Op::Rollback),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Staged writes over stored pairs read like a plain map with the
        /// same writes applied, scans with any limit included, and a
        /// rollback forgets exactly what came after its checkpoint.
        #[test]
        fn overlay_reads_like_a_map(
            stored in proptest::collection::btree_map(0u8..16, any::<u8>(), 0..12),
            ops in proptest::collection::vec(op(), 0..40),
            from in 0u8..16, to in 0u8..18, limit in 0usize..20,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let rocks = Rocks::open(dir.path()).expect("open");
            let mut batch = rocks.batch();
            for (k, v) in &stored {
                batch.put(Cf::State, &[*k], &[*v]);
            }
            batch.commit(Durability::Buffered).expect("commit");

            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = stored.iter().map(|(k, v)| (vec![*k], vec![*v])).collect();
            let mut saved = vec![(Checkpoint(0), model.clone())];
            let mut overlay = Overlay::new(rocks.view());
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        overlay.put(&[k], vec![v]);
                        model.insert(vec![k], vec![v]);
                    }
                    Op::Delete(k) => {
                        overlay.delete(&[k]);
                        model.remove(&vec![k]);
                    }
                    Op::Checkpoint => saved.push((overlay.checkpoint(), model.clone())),
                    Op::Rollback => {
                        let (cp, before) = saved.last().cloned().expect("base checkpoint");
                        overlay.rollback(cp);
                        model = before;
                    }
                }
            }
            for k in 0u8..16 {
                prop_assert_eq!(overlay.get(&[k]).expect("get"), model.get(&vec![k]).cloned());
            }
            let scanned = overlay.scan(&[from], &[to], limit).expect("scan");
            let expected: Vec<_> = if from < to {
                model.range(vec![from]..vec![to]).take(limit).map(|(k, v)| (k.clone(), v.clone())).collect()
            } else {
                Vec::new()
            };
            prop_assert_eq!(scanned, expected);
        }
    }
}
