//! Which copy of a chunk a snapshot reads, and which clones no snapshot
//! needs any more: pure decisions over a chunk's stamp and its clones'
//! sequences (storage-node/FORMAT.md, "Snapshot clones").
//!
//! A volume's snapshot `n` holds every write sent under a snap sequence
//! below `n`. A chunk's head carries the newest sequence it was written
//! under (`seq`) and the one it was created under (`born`); the first write
//! under a newer sequence `s` first copies the head into clone `s`, which
//! from then on keeps the chunk as snapshots `(previous clone, s]` saw it.

use chuyi_common::proto::chunk::Stamp;

/// Where snapshot `snap` finds a chunk's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Nothing has been written to the head since the snapshot.
    Head,
    /// The clone kept under this sequence.
    Clone(u32),
    /// The chunk did not exist when the snapshot was taken: zeros.
    Absent,
    /// The head was written after the snapshot, yet no clone keeps what it
    /// held: never made by this node (a disk copied without its clones).
    Missing,
}

/// What snapshot `snap` reads, given the head's stamp and the clones'
/// sequences in ascending order.
pub fn resolve(stamp: Stamp, clones: &[u32], snap: u32) -> Source {
    if stamp.born >= snap {
        return Source::Absent;
    }
    if snap > stamp.seq {
        return Source::Head;
    }
    match clones.iter().find(|&&tag| tag >= snap) {
        Some(&tag) => Source::Clone(tag),
        None => Source::Missing,
    }
}

/// Whether a write under `snap` must first keep the head in a clone.
pub fn needs_clone(stamp: Stamp, snap: u32) -> bool {
    snap > stamp.seq
}

/// Whether a repair may copy a range of a chunk's head into this copy,
/// stamped `mine`, from a source stamped `source`. Not when the source has
/// taken a write under a newer sequence than this copy: its bytes would
/// land here before that write's forward does, and the clone the forward
/// then makes would keep them, a snapshot holding a write made after it.
/// Equal sequences are fine: this copy has made that sequence's clone.
pub fn may_repair_from(mine: Stamp, source: Stamp) -> bool {
    source.seq <= mine.seq
}

/// The clones (ascending sequences) that no snapshot in `live` reads: a
/// clone serves the snapshots above the clone kept before it (or above the
/// chunk's creation) up to its own sequence, and the one below a dropped
/// clone serves the dropped one's range too.
pub fn unneeded(born: u32, clones: &[u32], live: &[u32]) -> Vec<u32> {
    let mut lower = born;
    let mut drop = Vec::new();
    for &tag in clones {
        if live.iter().any(|&n| n > lower && n <= tag) {
            lower = tag;
        } else {
            drop.push(tag);
        }
    }
    drop
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn stamp(seq: u32, born: u32) -> Stamp {
        Stamp { seq, born }
    }

    #[test]
    fn a_repair_takes_no_bytes_of_a_sequence_this_copy_has_not_cloned_for() {
        assert!(may_repair_from(stamp(3, 0), stamp(3, 0)), "the same writes' sequence");
        assert!(may_repair_from(stamp(3, 0), stamp(2, 0)), "a source behind has no newer bytes");
        assert!(!may_repair_from(stamp(2, 0), stamp(3, 0)), "the source took a write after snapshot 3");
        assert!(!may_repair_from(stamp(0, 0), stamp(1, 0)), "the first snapshot's first write");
    }

    #[test]
    fn a_snapshot_reads_the_head_until_it_is_written_then_its_clone() {
        // Written before snapshot 1, then under 3 (clone 3), then under 5.
        let (s, clones) = (stamp(5, 0), [3, 5]);
        assert_eq!(resolve(s, &clones, 6), Source::Head, "no write since snapshot 6");
        assert_eq!(resolve(s, &clones, 5), Source::Clone(5));
        assert_eq!(resolve(s, &clones, 4), Source::Clone(5), "nothing written under 3..5 but at 3");
        assert_eq!(resolve(s, &clones, 3), Source::Clone(3));
        assert_eq!(resolve(s, &clones, 1), Source::Clone(3));
        assert_eq!(resolve(stamp(4, 4), &[], 4), Source::Absent, "created under 4: not in snapshot 4");
        assert_eq!(resolve(stamp(4, 4), &[], 5), Source::Head);
        assert_eq!(resolve(stamp(4, 0), &[], 2), Source::Missing);
        assert!(needs_clone(stamp(0, 0), 1) && !needs_clone(stamp(3, 1), 3) && !needs_clone(stamp(3, 1), 2));
    }

    #[test]
    fn a_clone_goes_once_no_live_snapshot_falls_in_its_range() {
        assert_eq!(unneeded(0, &[2, 5], &[4]), vec![2], "4 reads clone 5");
        assert_eq!(unneeded(0, &[2, 5], &[1, 4]), Vec::<u32>::new());
        assert_eq!(unneeded(0, &[2, 5], &[]), vec![2, 5]);
        assert_eq!(unneeded(0, &[2, 5], &[6]), vec![2, 5], "6 reads the head");
        assert_eq!(unneeded(3, &[5], &[2, 3]), vec![5], "the chunk did not exist at 2 or 3");
        assert_eq!(unneeded(0, &[2, 3, 5], &[3]), vec![2, 5]);
    }
}
