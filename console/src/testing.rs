//! What the console's tests build their surveys from.

use chuyi_meta_api::model::ClusterMap;
use chuyi_meta_api::proto::{PoolHealth, StatusReport};

use crate::survey::{NodeIo, Survey};

/// A status from member 1, the leader, of `map` with `pools`' health.
pub fn status(map: ClusterMap, pools: Vec<PoolHealth>) -> StatusReport {
    StatusReport {
        member: 1,
        leader: Some(1),
        term: 1,
        members: vec![],
        last_log_index: None,
        last_applied: None,
        snapshot: None,
        purged: None,
        map,
        pools,
        packs: Default::default(),
    }
}

/// A survey at `taken_ms` of `map`, with the nodes' counters `io` and no
/// node reports.
pub fn survey(taken_ms: u64, map: ClusterMap, io: Vec<NodeIo>) -> Survey {
    Survey { taken_ms, status: status(map, vec![]), nodes: vec![], io }
}
