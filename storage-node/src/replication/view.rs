//! The node's copy of the data map, pushed in by whoever follows the
//! metadata service (the `chuyi node` process), and waited on by requests
//! that arrive from a sender with a newer map.

use std::sync::Arc;
use std::time::Duration;

use chuyi_common::map::DataMap;
use tokio::sync::watch;

#[derive(Debug)]
pub struct MapView {
    tx: watch::Sender<Arc<DataMap>>,
}

impl Default for MapView {
    fn default() -> Self {
        Self { tx: watch::channel(Arc::new(DataMap::default())).0 }
    }
}

impl MapView {
    pub fn current(&self) -> Arc<DataMap> {
        self.tx.borrow().clone()
    }

    /// Takes `map` if it is newer than the one held; an older map (a slow
    /// member's answer) never replaces a newer one.
    pub fn update(&self, map: DataMap) -> bool {
        self.tx.send_if_modified(|held| {
            if map.epoch > held.epoch {
                *held = Arc::new(map);
                true
            } else {
                false
            }
        })
    }

    /// Waits up to `wait` for a map that satisfies `ready`; returns the
    /// newest map either way.
    pub async fn wait_for(&self, wait: Duration, ready: impl Fn(&DataMap) -> bool) -> Arc<DataMap> {
        let mut rx = self.tx.subscribe();
        let waited = tokio::time::timeout(wait, rx.wait_for(|m| ready(m))).await;
        match waited {
            Ok(Ok(map)) => map.clone(),
            _ => self.current(),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<DataMap>> {
        self.tx.subscribe()
    }
}
