//! The simulation's engine: each I/O runs to completion on the caller's
//! thread, inside `submit`.
//!
//! It blocks the async runtime for the length of a syscall, so it is only
//! for disks in memory (tmpfs), where that is a memory copy. The seeded
//! simulation (`chaos/src/sim`) uses it because its clock must not move
//! while an I/O is in flight: with worker threads, turmoil's steps would
//! race ahead of a disk the machine is slow to schedule, and simulated
//! deadlines would expire for work that simply had not run yet.

use std::fs::File;

use super::{run_blocking, IoEngine, IoRequest};

/// An [`IoEngine`] with no threads of its own.
#[derive(Debug)]
pub struct InlineEngine {
    file: File,
}

impl InlineEngine {
    pub fn new(file: File) -> Self {
        Self { file }
    }
}

impl IoEngine for InlineEngine {
    fn submit(&self, request: IoRequest) {
        // A caller that gave up no longer wants the answer.
        let _ = request.done.send(run_blocking(&self.file, request.op));
    }

    fn name(&self) -> &'static str {
        "inline"
    }
}
