//! A TCP proxy that can cut its connections: what `net-cut` puts between a
//! storage node and its peers.
//!
//! While cut, it drops every open connection and accepts new ones only to
//! close them at once, as a dead link looks to the sender (a refused or
//! reset connection, never a half-delivered request).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct Proxy {
    pub addr: String,
    cut: Arc<AtomicBool>,
    /// Bumped on each cut, so live connections learn to drop.
    generation: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free localhost port and forwards to `target`.
    pub async fn start(target: String) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let task = tokio::spawn(accept(listener, target, cut.clone(), generation.clone()));
        Ok(Self { addr, cut, generation, task })
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn accept(listener: TcpListener, target: String, cut: Arc<AtomicBool>, generation: watch::Sender<u64>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        if cut.load(Ordering::SeqCst) {
            drop(inbound);
            continue;
        }
        let (target, mut cuts) = (target.clone(), generation.subscribe());
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(&target).await else { return };
            let (mut a, mut b) = (inbound, outbound);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                _ = cuts.changed() => {}
            }
        });
    }
}
