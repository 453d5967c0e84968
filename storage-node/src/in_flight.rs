//! Operations in progress: a count of them, kept by a guard each holds,
//! and a task that finishes one whose caller stops waiting.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::StoreError;

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

/// Runs `work` in a task of its own, so that it finishes even if the
/// caller stops waiting (its future dropped: a client gone, the RPC layer
/// aborting requests at shutdown). A chunk store mutation must run so: one
/// dropped mid-way leaves its I/O running with its locks released, and that
/// I/O may land after a newer write of the same blocks. The task starts
/// when this is called, so the caller's future holds its handle, not
/// `work`; whatever `work` holds (a range lock) is held until it ends.
pub(crate) fn to_completion<T, E>(
    work: impl Future<Output = Result<T, E>> + Send + 'static,
) -> impl Future<Output = Result<T, E>>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let task = tokio::spawn(work);
    async move { task.await.unwrap_or_else(|e| Err(StoreError::Internal(e.to_string()).into())) }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::{Mutex, Notify};

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

    /// The caller drops its future while the work waits: the work still
    /// ends, and what it holds is held until then, not released at the drop.
    #[tokio::test]
    async fn work_outlives_its_caller_and_holds_what_it_holds_until_done() {
        let lock = Arc::new(Mutex::new(0));
        let go = Arc::new(Notify::new());
        let guard = lock.clone().lock_owned().await;
        let (held, go_on) = (go.clone(), go.clone());
        let caller = to_completion(async move {
            let mut guard = guard;
            held.notified().await;
            *guard += 1;
            Ok::<_, StoreError>(())
        });
        drop(caller);
        tokio::task::yield_now().await;
        assert!(lock.try_lock().is_err(), "released when the caller went, before the work ended");
        go_on.notify_one();
        let value = tokio::time::timeout(Duration::from_secs(5), lock.lock()).await.expect("the work ended");
        assert_eq!(*value, 1, "the work ran to its end");
    }

    #[tokio::test]
    async fn a_panicking_task_is_an_internal_error() {
        fn boom() -> Result<(), StoreError> {
            panic!("boom")
        }
        let failed = to_completion(async { boom() }).await;
        assert!(matches!(failed, Err(StoreError::Internal(_))), "{failed:?}");
    }
}
