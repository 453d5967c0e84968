//! A count of operations in progress, kept by a guard each operation holds.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts itself in a counter while it lives, so an operation cancelled
/// mid-way (its future dropped) stops counting too.
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    pub(crate) fn start(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_while_held_and_not_after() {
        let counter = AtomicU64::new(0);
        let first = InFlight::start(&counter);
        let second = InFlight::start(&counter);
        assert_eq!(counter.load(Ordering::Relaxed), 2);
        drop(first);
        assert_eq!(counter.load(Ordering::Relaxed), 1);
        drop(second);
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }
}
