//! Group commit: many concurrent writes share one Raft entry, hence one
//! log fsync on each member.
//!
//! Callers queue commands; the proposer takes whatever has queued (up to a
//! count and a byte budget) into one [`MetaRequest`] stamped with this
//! leader's clock, and keeps a few such proposals in flight so the next
//! batch fills while the last one commits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::warn;

use super::leader_addr;
use crate::state::{Command, MetaError, MetaRequest, Reply};
use crate::store::TypeConfig;

/// Commands in one proposal at most.
pub const BATCH_COMMANDS_MAX: usize = 1024;
/// Encoded bytes of commands in one proposal at most (one log entry); with
/// `APPEND_ENTRIES_MAX` entries per message this bounds AppendEntries under
/// the RPC payload limit.
pub const BATCH_BYTES_MAX: usize = 512 * 1024;
/// A single command larger than this is refused.
pub const COMMAND_BYTES_MAX: usize = 256 * 1024;
/// Proposals committing at once.
const PROPOSALS_IN_FLIGHT: usize = 4;
/// Commands queued before callers wait.
const QUEUE_DEPTH: usize = 16 * 1024;

type Responder = oneshot::Sender<Result<Reply, MetaError>>;

struct Queued {
    command: Command,
    bytes: usize,
    reply: Responder,
}

/// The handle callers propose through.
#[derive(Debug, Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Queued>,
    counts: Arc<ProposalCounts>,
}

/// Proposals made and the commands in them: their ratio is the batch size.
#[derive(Debug, Default)]
pub struct ProposalCounts {
    pub proposals: AtomicU64,
    pub commands: AtomicU64,
}

impl Proposer {
    /// Starts the batching task; it ends when every handle is dropped.
    pub fn start(raft: Raft<TypeConfig>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let counts = Arc::new(ProposalCounts::default());
        tokio::spawn(run(raft, rx, counts.clone()));
        Self { queue, counts }
    }

    pub fn counts(&self) -> &ProposalCounts {
        &self.counts
    }

    /// Commits `command` and returns what applying it did.
    pub async fn propose(&self, command: Command) -> Result<Reply, MetaError> {
        let bytes = postcard::to_allocvec(&command).map_err(|e| MetaError::Malformed(e.to_string()))?.len();
        if bytes > COMMAND_BYTES_MAX {
            return Err(MetaError::invalid("request", format!("{bytes} bytes; at most {COMMAND_BYTES_MAX}")));
        }
        let (reply, rx) = oneshot::channel();
        let stopped = || MetaError::Unavailable("this member is shutting down".into());
        self.queue.send(Queued { command, bytes, reply }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft<TypeConfig>, mut rx: mpsc::Receiver<Queued>, counts: Arc<ProposalCounts>) {
    let slots = Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT));
    // A command that did not fit the last batch opens the next one.
    let mut carried: Option<Queued> = None;
    loop {
        // Take a slot first: while all are busy, commands pile up in the
        // queue and go out together in the next proposal.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < BATCH_COMMANDS_MAX {
            let Ok(next) = rx.try_recv() else { break };
            if bytes + next.bytes > BATCH_BYTES_MAX {
                carried = Some(next);
                break;
            }
            bytes += next.bytes;
            batch.push(next);
        }
        counts.proposals.fetch_add(1, Ordering::Relaxed);
        counts.commands.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(slot);
        });
    }
}

async fn commit(raft: &Raft<TypeConfig>, batch: Vec<Queued>) {
    let (commands, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|q| (q.command, q.reply)).unzip();
    let count = commands.len();
    match raft.client_write(MetaRequest { now_ms: chuyi_common::clock::unix_ms(), commands }).await {
        Ok(written) => {
            let results = written.data.results;
            if results.len() != count {
                warn!(expected = count, got = results.len(), "state machine answered a batch short");
            }
            let mut results = results.into_iter();
            for reply in replies {
                let result = results.next().unwrap_or_else(|| Err(MetaError::Internal("no result for command".into())));
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let error = write_error(raft, e);
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

fn write_error(raft: &Raft<TypeConfig>, e: RaftError<u64, ClientWriteError<u64, openraft::BasicNode>>) -> MetaError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            MetaError::NotLeader { leader: f.leader_node.map(|n| n.addr).or_else(|| leader_addr(raft)) }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            MetaError::Invalid { what: "membership change".into(), why: e.to_string() }
        }
        RaftError::Fatal(f) => MetaError::Unavailable(f.to_string()),
    }
}
