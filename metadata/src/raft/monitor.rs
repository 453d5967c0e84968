//! The leader's housekeeping, once a second: mark nodes down that stopped
//! heartbeating (as the leader's memory has it, liveness.rs), and rebalance
//! gradually after nodes join.
//!
//! Decisions are proposed as commands and re-checked at apply (a heartbeat
//! committed meanwhile wins), so a stale leader proposing them is harmless.

use std::sync::Arc;
use std::time::Duration;

use chuyi_common::clock::{self, Instant};

use openraft::{Raft, ServerState};
use tracing::{info, warn};

use super::liveness::{quorum_fresh, Liveness};
use super::proposer::Proposer;
use crate::placement;
use crate::state::model::NodeState;
use crate::state::{Command, Reply};
use crate::store::{StateReader, TypeConfig};

/// How often the leader looks.
const TICK: Duration = Duration::from_secs(1);
/// PG moves per pool per tick, so a new node fills gradually.
pub const REBALANCE_MOVES_PER_TICK: usize = 4;

pub(crate) async fn run(
    raft: Raft<TypeConfig>,
    reader: StateReader,
    proposer: Proposer,
    liveness: Arc<Liveness>,
    heartbeat_timeout: Duration,
) {
    // The term this member leads in, and since when: leadership lost and
    // won again between two ticks is a new term, whose memory of the
    // nodes starts empty (they heartbeat the other leader meanwhile).
    let mut leading: Option<(u64, Instant)> = None;
    let mut ticker = tokio::time::interval(TICK);
    loop {
        ticker.tick().await;
        let metrics = raft.metrics().borrow().clone();
        if metrics.running_state.is_err() {
            return;
        }
        let term = metrics.current_term;
        if leading.is_some_and(|(t, _)| metrics.state != ServerState::Leader || t != term) {
            leading = None;
            liveness.clear();
        }
        if metrics.state != ServerState::Leader {
            continue;
        }
        // A new leader has not seen heartbeats for a while: the nodes sent
        // them to the old one. Give them one timeout to find us.
        let (_, since) = *leading.get_or_insert_with(|| (term, clock::now()));
        // A leader no quorum has acknowledged lately may be deposed: its
        // memory of the nodes says nothing.
        let acked = quorum_fresh(metrics.millis_since_quorum_ack, heartbeat_timeout);
        if since.elapsed() < heartbeat_timeout || !acked {
            continue;
        }
        if let Err(e) = tick(&reader, &proposer, &liveness, heartbeat_timeout).await {
            warn!(error = %e, "metadata monitor tick failed");
        }
    }
}

async fn tick(
    reader: &StateReader,
    proposer: &Proposer,
    liveness: &Liveness,
    timeout: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let map = reader.map()?;
    let now = chuyi_common::clock::unix_ms();
    let timeout_ms = timeout.as_millis() as u64;
    for node in map.nodes.iter().filter(|n| n.state == NodeState::Up) {
        // Silent in memory, and (a node this leader never heard, for a
        // whole timeout since it began leading) in the log too.
        let heard = liveness.silent_for(node.id).is_some_and(|s| s < timeout);
        if !heard && now.saturating_sub(node.last_heartbeat_ms) >= timeout_ms {
            let reply = proposer.propose(Command::MarkNodeDown { id: node.id, timeout_ms }).await?;
            if let Reply::Moves { epoch, changes } = &reply {
                info!(node = node.id, epoch, moves = changes.len(), "storage node marked down");
                report(&reply);
            }
        }
    }
    let views = crate::state::view::node_views_of(&map.nodes);
    let wants_moves = map.pools.iter().any(|pool| {
        let pgs: Vec<_> = map.pgs.iter().filter(|pg| pg.pool == pool.id).cloned().collect();
        let frozen = crate::state::view::recovering_pgs(&pgs);
        let sets = crate::state::view::placed_sets(pgs, pool.redundancy.replicas());
        let rule = crate::state::view::rule(pool);
        placement::rebalance(&rule, &views, &sets, &frozen, 1).is_ok_and(|moves| !moves.is_empty())
    });
    if wants_moves {
        let reply = proposer.propose(Command::Rebalance { max_moves: REBALANCE_MOVES_PER_TICK }).await?;
        report(&reply);
    }
    Ok(())
}

/// One log line per PG move, as the issue of placement asks.
fn report(reply: &Reply) {
    if let Reply::Moves { epoch, changes } = reply {
        for c in changes {
            info!(
                epoch,
                pool = %c.pool,
                pg = c.change.pg,
                from = ?c.change.from,
                to = ?c.change.to,
                reason = ?c.change.reason,
                "PG moved"
            );
        }
    }
}
