//! Raft traffic between members, on the metadata service's port beside
//! the client calls (`chuyi_meta_api::proto`, re-exported here): frames
//! whose envelope says [`Channel::Raft`] carry a [`PeerCall`], answered by
//! a [`PeerReply`]. Only members may send them (`access::check_peer`).

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

pub use chuyi_meta_api::proto::*;

use crate::state::MetaError;
use crate::store::TypeConfig;

/// The envelope of Raft traffic.
pub const RAFT_ENVELOPE: Envelope = Envelope { version: META_PROTOCOL_VERSION, channel: Channel::Raft };

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerCall {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerReply {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// Not taken: the caller is not a member, or the message is malformed.
    Refused(MetaError),
}
