//! A storage node as a load target: a few connections to it and the two
//! requests the workloads send, with every answer checked.

use bytes::Bytes;
use chuyi_common::credential::Identity;
use chuyi_common::ids::DiskId;
use chuyi_common::proto::chunk::{ChunkRequest, ChunkResponse, DiskRequest, DiskStat};
use chuyi_common::rpc::{Endpoint, RpcClient, RpcConfig};

use crate::region::Target;
use crate::LoadError;

pub type ChunkClient = RpcClient<ChunkRequest, ChunkResponse>;

/// One disk of one node, reached over `connections` RPC connections.
#[derive(Clone, Debug)]
pub struct NodeTarget {
    clients: Vec<ChunkClient>,
    disk: DiskId,
}

impl NodeTarget {
    /// Opens `connections` connections (at least one) to the node.
    pub async fn connect(
        endpoint: &Endpoint,
        identity: &Identity,
        disk: DiskId,
        connections: usize,
    ) -> Result<Self, LoadError> {
        let mut clients = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            clients.push(ChunkClient::connect(endpoint, identity, RpcConfig::default()).await?);
        }
        Ok(Self { clients, disk })
    }

    pub fn connections(&self) -> usize {
        self.clients.len()
    }

    /// The connection the `n`th worker uses: workers are dealt round-robin.
    pub fn client(&self, n: usize) -> &ChunkClient {
        &self.clients[n % self.clients.len()]
    }

    pub fn disk(&self) -> DiskId {
        self.disk
    }

    /// The node's view of the target disk; an error when it has none.
    pub async fn disk_stat(&self) -> Result<DiskStat, LoadError> {
        let what = "DiskStats";
        let answer = self.client(0).call(&ChunkRequest::DiskStats, Bytes::new()).await?.0;
        let disks = match answer {
            ChunkResponse::Disks { disks } => disks,
            ChunkResponse::Error(error) => return Err(LoadError::Node { what, error }),
            other => return Err(LoadError::Unexpected { what, answer: Box::new(other) }),
        };
        let disk = self.disk;
        disks
            .into_iter()
            .find(|d| d.id == disk)
            .ok_or_else(|| LoadError::Invalid(format!("--disk {disk}: the node has no such disk")))
    }
}

/// Reads `len` bytes at `at`; the chunk must have been written.
pub async fn read(client: &ChunkClient, disk: DiskId, at: Target, len: u32) -> Result<(), LoadError> {
    let what = "a read";
    let request = ChunkRequest::Disk(DiskRequest::Read { disk, chunk: at.chunk, offset: at.offset, len });
    let (answer, data) = client.call(&request, Bytes::new()).await?;
    match answer {
        ChunkResponse::ReadDone { allocated: false } => Err(LoadError::NotPrefilled { chunk: at.chunk }),
        ChunkResponse::ReadDone { allocated: true } if data.len() != len as usize => {
            Err(LoadError::ShortRead { chunk: at.chunk, got: data.len(), want: len as usize })
        }
        ChunkResponse::ReadDone { allocated: true } => Ok(()),
        ChunkResponse::Error(error) => Err(LoadError::Node { what, error }),
        other => Err(LoadError::Unexpected { what, answer: Box::new(other) }),
    }
}

/// Writes `data` at `at`, without FUA (as fio's plain O_DIRECT writes).
pub async fn write(client: &ChunkClient, disk: DiskId, at: Target, data: Bytes) -> Result<(), LoadError> {
    let what = "a write";
    let request = ChunkRequest::Disk(DiskRequest::Write { disk, chunk: at.chunk, offset: at.offset, fua: false });
    match client.call(&request, data).await?.0 {
        ChunkResponse::Done => Ok(()),
        ChunkResponse::Error(error) => Err(LoadError::Node { what, error }),
        other => Err(LoadError::Unexpected { what, answer: Box::new(other) }),
    }
}

/// `len` bytes that are not all zeros, so nothing on the way can treat the
/// data as a hole.
pub fn payload(len: usize) -> Bytes {
    (0..len).map(|i| (i * 7 + i / 4096 + 1) as u8).collect::<Vec<u8>>().into()
}
