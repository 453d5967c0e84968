//! What a block both of whose copies fail their checksums may be mended
//! to: a pure decision, tested without I/O.
//!
//! A store writes a block's data and its new checksum side by side
//! (storage-node/FORMAT.md, "Ordering"), so a crash in the middle of the
//! write can leave either one landed without the other. One replica torn
//! that way is repaired from the other. A crash of both replicas during
//! the same write (one host holding both, a power cut of both) can tear
//! both, and then neither copy passes its own checksum. Both copies were
//! in the same write, because a primary holds a range until every replica
//! has answered for it, so each copy is one of four states, with `O`/`o`
//! the block's acknowledged data and checksum and `N`/`n` the write's
//! (a forward its primary gave up on can still be running on the replica
//! while the primary writes the next one; the rules below then find a
//! write both copies vouch for, or nothing):
//!
//! | copy | data | checksum | |
//! |---|---|---|---|
//! | whole, old | O | o | matches |
//! | whole, new | N | n | matches |
//! | data landed | N | o | torn |
//! | checksum landed | O | n | torn |
//!
//! Two torn copies either are in the same state, and then hold the same
//! data under the same checksum (that data is the old block or the new
//! one, both allowed for a write never acknowledged), or are in different
//! states, and then each one's data matches the other's checksum. Rot gives
//! neither: it does not turn two copies into the same bytes, and a
//! rotten block matches no checksum either copy stores. A poisoned copy
//! (backfill's mark for a block that was bad on its only source) is never
//! evidence: its zeros are not the block's, and its checksum blesses
//! nothing. Nor are zeros under a checksum not theirs on both copies: that
//! is what a torn write leaves over two poisoned copies (the poison's
//! checksum replaced, its zeros not) as well as over a block never
//! written, and the two cannot be told apart.
//!
//! So the rules only ever keep bytes some write put there: ones a stored
//! checksum vouches for, or ones both copies hold under the one checksum
//! they both store. (That assumes a copy is torn only by a crash: the same
//! misdirected write made by one bug on both nodes would also leave the
//! same bytes on both.) Both replicas must mend a block alike, whichever
//! of them mends it first and from which side, so every rule here is
//! symmetric in its two copies, and it judges two copies only: with more,
//! each node could judge a different pair and keep different bytes, so
//! the caller mends only a block with exactly two complete copies.

use chuyi_common::checksum::crc32c;

/// One copy of the block: its bytes as stored and the checksum stored for
/// it, which they fail.
#[derive(Clone, Copy, Debug)]
pub struct Stored<'a> {
    pub data: &'a [u8],
    pub crc: u32,
}

/// The data a block torn on both replicas may be mended to, if the two
/// copies show what it is.
///
/// `poisoned` is the checksum a poisoned block stores.
pub fn mend<'a>(a: Stored<'a>, b: Stored<'a>, poisoned: u32) -> Option<&'a [u8]> {
    if a.crc == poisoned || b.crc == poisoned {
        return None;
    }
    let whole = |c: &Stored<'_>| crc32c(c.data) == c.crc;
    match (whole(&a), whole(&b)) {
        (true, true) => return (a.data == b.data).then_some(a.data),
        (true, false) => return Some(a.data),
        (false, true) => return Some(b.data),
        (false, false) => {}
    }
    if a.data == b.data {
        // Both in the same state: the same write's data landed on both, or
        // on neither, while its checksum did the other. Not zeros: they may
        // be what two poisoned copies held.
        let zeros = a.data.iter().all(|&b| b == 0);
        return (a.crc == b.crc && !zeros).then_some(a.data);
    }
    let blessed = |data: &[u8]| {
        let crc = crc32c(data);
        crc == a.crc || crc == b.crc
    };
    match (blessed(a.data), blessed(b.data)) {
        // One copy's data landed, the other's checksum did: old and new
        // are both there, and either may be kept; the smaller bytes, so
        // that both replicas keep the same.
        (true, true) => Some(a.data.min(b.data)),
        (true, false) => Some(a.data),
        (false, true) => Some(b.data),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POISONED: u32 = 0xDEAD_BEEF;

    fn block(byte: u8) -> Vec<u8> {
        vec![byte; 4096]
    }

    fn copy(data: &[u8], crc: u32) -> Stored<'_> {
        Stored { data, crc }
    }

    /// Both orders, for the symmetry every rule must have.
    fn both_ways<'a>(a: Stored<'a>, b: Stored<'a>) -> Option<&'a [u8]> {
        let one = mend(a, b, POISONED);
        assert_eq!(one, mend(b, a, POISONED), "the rule is not symmetric");
        one
    }

    #[test]
    fn the_same_tear_on_both_copies_keeps_what_both_hold() {
        let (old, new) = (block(1), block(2));
        let (o, n) = (crc32c(&old), crc32c(&new));
        // The new data landed on both, its checksum on neither.
        assert_eq!(both_ways(copy(&new, o), copy(&new, o)), Some(&new[..]));
        // The new checksum landed on both, the data on neither.
        assert_eq!(both_ways(copy(&old, n), copy(&old, n)), Some(&old[..]));
    }

    #[test]
    fn opposite_tears_keep_one_write_the_same_from_either_side() {
        let (old, new) = (block(1), block(2));
        let (o, n) = (crc32c(&old), crc32c(&new));
        let kept = both_ways(copy(&new, o), copy(&old, n)).expect("mended");
        assert_eq!(kept, &old[..], "the smaller bytes");
    }

    #[test]
    fn a_whole_copy_is_kept_over_a_torn_one() {
        let (old, new) = (block(1), block(2));
        let (o, n) = (crc32c(&old), crc32c(&new));
        assert_eq!(both_ways(copy(&new, n), copy(&old, n)), Some(&new[..]));
        assert_eq!(both_ways(copy(&old, o), copy(&new, o)), Some(&old[..]));
    }

    #[test]
    fn two_whole_copies_that_differ_are_not_this_rules_to_pick() {
        let (old, new) = (block(1), block(2));
        assert_eq!(both_ways(copy(&old, crc32c(&old)), copy(&new, crc32c(&new))), None);
    }

    #[test]
    fn rot_is_never_blessed() {
        let (old, new) = (block(1), block(2));
        let (o, n) = (crc32c(&old), crc32c(&new));
        let mut rotten = old.clone();
        rotten[100] ^= 0x10;
        // A rotten copy beside a torn one: only the torn one's data is
        // some write's, and it matches a stored checksum.
        assert_eq!(both_ways(copy(&rotten, o), copy(&new, o)), None);
        assert_eq!(both_ways(copy(&rotten, o), copy(&old, n)), Some(&old[..]));
        // Two rotten copies, even of the same block, differ.
        let mut other = old.clone();
        other[7] ^= 0x01;
        assert_eq!(both_ways(copy(&rotten, o), copy(&other, o)), None);
    }

    #[test]
    fn the_same_bytes_under_different_checksums_are_not_one_tear() {
        let (old, new, third) = (block(1), block(2), block(3));
        assert_eq!(both_ways(copy(&third, crc32c(&old)), copy(&third, crc32c(&new))), None);
    }

    #[test]
    fn a_poisoned_copy_is_no_evidence() {
        let (old, zeros) = (block(1), block(0));
        let o = crc32c(&old);
        let mut rotten = old.clone();
        rotten[100] ^= 0x10;
        // Backfill poisoned the new copy because the only source's block
        // was bad: neither its zeros nor its checksum mend the block, even
        // where the old data was zeros.
        assert_eq!(both_ways(copy(&rotten, o), copy(&zeros, POISONED)), None);
        assert_eq!(both_ways(copy(&rotten, crc32c(&zeros)), copy(&zeros, POISONED)), None);
        // Two poisoned copies hold the same zeros.
        assert_eq!(both_ways(copy(&zeros, POISONED), copy(&zeros, POISONED)), None);
        // And a write over both, torn with its checksum landed and its
        // data not, leaves zeros that no longer look poisoned.
        let new = block(2);
        assert_eq!(both_ways(copy(&zeros, crc32c(&new)), copy(&zeros, crc32c(&new))), None);
    }
}
