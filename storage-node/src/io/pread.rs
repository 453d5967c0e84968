//! The portable engine: a few threads per disk doing `pread`/`pwrite`.
//!
//! It works on every file system and kernel, and it is the reference the
//! io_uring engine is tested against. Its cost is a thread handoff per I/O.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{run_blocking, IoEngine, IoRequest};

/// An [`IoEngine`] on blocking syscalls in dedicated threads.
#[derive(Debug)]
pub struct PreadEngine {
    tx: Option<crossbeam_channel::Sender<IoRequest>>,
    threads: Vec<JoinHandle<()>>,
}

impl PreadEngine {
    /// Starts `threads` workers over `file`; that many I/Os run at once.
    pub fn new(file: File, threads: usize) -> io::Result<Self> {
        let file = Arc::new(file);
        // Unbounded is safe here: the RPC server caps requests in flight per
        // connection, and each request submits a bounded number of I/Os.
        let (tx, rx) = crossbeam_channel::unbounded::<IoRequest>();
        let threads = (0..threads.max(1))
            .map(|i| {
                let (file, rx) = (Arc::clone(&file), rx.clone());
                std::thread::Builder::new().name(format!("chuyi-pread-{i}")).spawn(move || {
                    for req in rx {
                        // A caller that gave up no longer wants the answer.
                        let _ = req.done.send(run_blocking(&file, req.op));
                    }
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { tx: Some(tx), threads })
    }
}

impl IoEngine for PreadEngine {
    fn submit(&self, request: IoRequest) {
        if let Some(tx) = &self.tx {
            // Send fails only when every worker is gone; dropping the request
            // then tells the caller the engine stopped.
            let _ = tx.send(request);
        }
    }

    fn name(&self) -> &'static str {
        "pread"
    }
}

impl Drop for PreadEngine {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
