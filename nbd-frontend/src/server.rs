//! The NBD server: one task per connection, the fixed newstyle handshake,
//! then transmission with many requests in flight and replies in the order
//! they complete.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chuyi_client::{ClientError, Cluster, VolumeIo};
use chuyi_common::proto::chunk::ChunkErrorKind;
use chuyi_metadata::proto::{ApiReply, Query};
use chuyi_metadata::state::{Command, MetaError, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};

use crate::proto::*;

/// Requests of one connection being served at once.
const IN_FLIGHT: usize = 128;
/// Request data of one connection held in memory at once, in MiB: a client
/// sending many large writes waits instead of filling the frontend's memory.
const IN_FLIGHT_MIB: u32 = 256;
const LEASE_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// A volume served by this frontend, with the attach lease it holds for as
/// long as any connection uses it.
#[derive(Debug)]
struct Attachment {
    vol: VolumeIo,
    connections: usize,
    lease_id: u64,
    renew: AbortHandle,
}

#[derive(Debug)]
pub struct NbdServer {
    cluster: Arc<Cluster>,
    /// The lease holder name of this frontend.
    holder: String,
    attached: Mutex<HashMap<String, Attachment>>,
}

impl NbdServer {
    pub fn new(cluster: Arc<Cluster>, holder: String) -> Arc<Self> {
        Arc::new(Self { cluster, holder, attached: Mutex::new(HashMap::new()) })
    }

    /// Accepts connections until the listener fails; each is served on its
    /// own task, and one client's error never touches another's.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.connection(stream).await {
                    tracing::debug!(%peer, error = %e, "nbd connection ended");
                }
            });
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream) -> Result<(), NbdError> {
        let (r, w) = stream.into_split();
        let (mut r, mut w) = (BufReader::new(r), BufWriter::new(w));
        let Some(name) = self.handshake(&mut r, &mut w).await? else { return Ok(()) };
        let vol = self.attached(&name).ok_or_else(|| NbdError::Protocol("export vanished".into()))?;
        let result = transmission(vol, r, w).await;
        self.detach(&name).await;
        result
    }

    /// Option haggling. `Some(name)` once the client has chosen an export
    /// (attached), `None` when it aborted.
    async fn handshake<R, W>(&self, r: &mut R, w: &mut W) -> Result<Option<String>, NbdError>
    where
        R: AsyncReadExt + Unpin,
        W: AsyncWriteExt + Unpin,
    {
        w.write_u64(NBDMAGIC).await?;
        w.write_u64(IHAVEOPT).await?;
        w.write_u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).await?;
        w.flush().await?;
        let client_flags = r.read_u32().await?;
        if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
            return Err(NbdError::Protocol(format!("unknown client flags {client_flags:#x}")));
        }
        let no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;
        loop {
            if r.read_u64().await? != IHAVEOPT {
                return Err(NbdError::Protocol("option without IHAVEOPT".into()));
            }
            let option = r.read_u32().await?;
            let len = r.read_u32().await?;
            if len > MAX_OPTION_DATA {
                return Err(NbdError::Protocol(format!("option data of {len} bytes")));
            }
            let mut data = vec![0u8; len as usize];
            r.read_exact(&mut data).await?;
            match option {
                OPT_EXPORT_NAME => {
                    // No way to send an error here: a refusal closes.
                    let name =
                        String::from_utf8(data).map_err(|_| NbdError::Protocol("export name not UTF-8".into()))?;
                    let vol = self.attach(&name).await.map_err(|(_, why)| NbdError::Protocol(why))?;
                    w.write_u64(vol.size()).await?;
                    w.write_u16(TRANSMISSION_FLAGS).await?;
                    if !no_zeroes {
                        w.write_all(&[0u8; 124]).await?;
                    }
                    w.flush().await?;
                    return Ok(Some(name));
                }
                OPT_ABORT => {
                    w.write_all(&option_reply(option, REP_ACK, &[])).await?;
                    w.flush().await?;
                    return Ok(None);
                }
                OPT_LIST => {
                    if !data.is_empty() {
                        w.write_all(&option_reply(option, REP_ERR_INVALID, b"LIST takes no data")).await?;
                    } else {
                        self.list(option, w).await?;
                    }
                }
                OPT_INFO | OPT_GO => {
                    if let Some(name) = self.info(option, &data, w).await? {
                        return Ok(Some(name));
                    }
                }
                _ => w.write_all(&option_reply(option, REP_ERR_UNSUP, b"option not supported")).await?,
            }
            w.flush().await?;
        }
    }

    async fn list<W: AsyncWriteExt + Unpin>(&self, option: u32, w: &mut W) -> Result<(), NbdError> {
        match self.cluster.meta().read(Query::Volumes).await {
            Ok(ApiReply::Volumes(volumes)) => {
                for v in volumes {
                    let mut data = (v.name.len() as u32).to_be_bytes().to_vec();
                    data.extend_from_slice(v.name.as_bytes());
                    w.write_all(&option_reply(option, REP_SERVER, &data)).await?;
                }
                w.write_all(&option_reply(option, REP_ACK, &[])).await?;
            }
            Ok(_) | Err(_) => w.write_all(&option_reply(option, REP_ERR_SHUTDOWN, b"metadata unavailable")).await?,
        }
        Ok(())
    }

    /// INFO describes an export; GO also attaches it (`Some(name)`).
    async fn info<W: AsyncWriteExt + Unpin>(
        &self,
        option: u32,
        data: &[u8],
        w: &mut W,
    ) -> Result<Option<String>, NbdError> {
        let Some((name, infos)) = parse_info_request(data) else {
            w.write_all(&option_reply(option, REP_ERR_INVALID, b"malformed INFO/GO request")).await?;
            return Ok(None);
        };
        let size = if option == OPT_GO {
            match self.attach(&name).await {
                Ok(vol) => vol.size(),
                Err((kind, why)) => {
                    w.write_all(&option_reply(option, kind, why.as_bytes())).await?;
                    return Ok(None);
                }
            }
        } else {
            match self.cluster.meta().read(Query::Volume(name.clone())).await {
                Ok(ApiReply::Volume(v)) => v.size_bytes,
                _ => {
                    w.write_all(&option_reply(option, REP_ERR_UNKNOWN, format!("no volume {name:?}").as_bytes()))
                        .await?;
                    return Ok(None);
                }
            }
        };
        let mut export = INFO_EXPORT.to_be_bytes().to_vec();
        export.extend_from_slice(&size.to_be_bytes());
        export.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
        w.write_all(&option_reply(option, REP_INFO, &export)).await?;
        if infos.contains(&INFO_BLOCK_SIZE) {
            let mut sizes = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
            for v in [MIN_BLOCK, PREFERRED_BLOCK, MAX_REQUEST] {
                sizes.extend_from_slice(&v.to_be_bytes());
            }
            w.write_all(&option_reply(option, REP_INFO, &sizes)).await?;
        }
        w.write_all(&option_reply(option, REP_ACK, &[])).await?;
        w.flush().await?;
        Ok((option == OPT_GO).then_some(name))
    }

    fn attached(&self, name: &str) -> Option<VolumeIo> {
        self.lock().get(name).map(|a| a.vol.clone())
    }

    /// Opens `name` for this connection, taking the volume's attach lease
    /// if this frontend does not hold it yet. Refused while another holds it.
    async fn attach(&self, name: &str) -> Result<VolumeIo, (u32, String)> {
        if let Some(a) = self.lock().get_mut(name) {
            a.connections += 1;
            return Ok(a.vol.clone());
        }
        let meta = self.cluster.meta();
        let acquire = Command::AcquireLease {
            volume: name.into(),
            holder: self.holder.clone(),
            ttl_ms: LEASE_TTL.as_millis() as u64,
        };
        let lease = match meta.write(acquire).await {
            Ok(Reply::Lease(lease)) => lease,
            Ok(other) => return Err((REP_ERR_UNKNOWN, format!("unexpected reply {other:?}"))),
            Err(MetaError::NotFound { .. }) => return Err((REP_ERR_UNKNOWN, format!("no volume {name:?}"))),
            Err(e @ MetaError::LeaseHeld { .. }) => return Err((REP_ERR_POLICY, e.to_string())),
            Err(e) => return Err((REP_ERR_SHUTDOWN, e.to_string())),
        };
        let vol = match self.cluster.open_volume(name).await {
            Ok(vol) => vol,
            Err(e) => return Err((REP_ERR_UNKNOWN, e.to_string())),
        };
        let mut attached = self.lock();
        // Another connection may have attached it meanwhile: share that.
        let entry = attached.entry(name.to_string()).or_insert_with(|| {
            let renew =
                tokio::spawn(renew_lease(self.cluster.clone(), name.to_string(), self.holder.clone(), lease.id));
            Attachment { vol, connections: 0, lease_id: lease.id, renew: renew.abort_handle() }
        });
        entry.connections += 1;
        Ok(entry.vol.clone())
    }

    async fn detach(&self, name: &str) {
        let released = {
            let mut attached = self.lock();
            let Some(a) = attached.get_mut(name) else { return };
            a.connections -= 1;
            if a.connections > 0 {
                return;
            }
            let a = attached.remove(name);
            a.map(|a| {
                a.renew.abort();
                a.lease_id
            })
        };
        if let Some(lease_id) = released {
            let release = Command::ReleaseLease { volume: name.into(), holder: self.holder.clone(), lease_id };
            if let Err(e) = self.cluster.meta().write(release).await {
                tracing::warn!(volume = name, error = %e, "releasing the attach lease failed; it expires by itself");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attachment>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn renew_lease(cluster: Arc<Cluster>, volume: String, holder: String, lease_id: u64) {
    loop {
        tokio::time::sleep(LEASE_TTL / 3).await;
        let renew = Command::RenewLease {
            volume: volume.clone(),
            holder: holder.clone(),
            lease_id,
            ttl_ms: LEASE_TTL.as_millis() as u64,
        };
        if let Err(e) = cluster.meta().write(renew).await {
            tracing::error!(volume, error = %e, "renewing the attach lease failed");
        }
    }
}

/// Serves requests until DISC or the connection ends; replies go out in
/// the order requests complete.
async fn transmission<R, W>(vol: VolumeIo, mut r: R, mut w: W) -> Result<(), NbdError>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin + Send + 'static,
{
    let (replies, mut outbox) = mpsc::channel::<([u8; 16], Bytes)>(IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some((header, data)) = outbox.recv().await {
            w.write_all(&header).await?;
            w.write_all(&data).await?;
            if outbox.is_empty() {
                w.flush().await?;
            }
        }
        w.flush().await?;
        Ok::<_, std::io::Error>(())
    });
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_MIB as usize));
    let mut tasks = JoinSet::new();
    let size = vol.size();
    let result = loop {
        let mut header = [0u8; REQUEST_LEN];
        if let Err(e) = r.read_exact(&mut header).await {
            break Err(e.into());
        }
        let Some(req) = Request::parse(&header) else {
            break Err(NbdError::Protocol("request with a bad magic".into()));
        };
        let end = req.offset.checked_add(u64::from(req.length));
        let in_bounds = end.is_some_and(|e| e <= size);
        let reply_now = |error: u32| {
            let replies = replies.clone();
            async move {
                let _ = replies.send((simple_reply(error, req.cookie), Bytes::new())).await;
            }
        };
        match req.kind {
            CMD_DISC => break Ok(()),
            CMD_WRITE if req.length > MAX_REQUEST => {
                // Its payload cannot be skipped safely: answer and close.
                reply_now(EINVAL).await;
                break Err(NbdError::Protocol(format!("write of {} bytes", req.length)));
            }
            CMD_WRITE => {
                let Ok(held) = budget.clone().acquire_many_owned(mib(req.length)).await else { break Ok(()) };
                let mut data = BytesMut::zeroed(req.length as usize);
                if let Err(e) = r.read_exact(&mut data).await {
                    break Err(e.into());
                }
                if !in_bounds {
                    reply_now(ENOSPC).await;
                    continue;
                }
                let fua = req.flags & CMD_FLAG_FUA != 0;
                spawn(&mut tasks, &slots, &replies, req.cookie, Some(held), {
                    let vol = vol.clone();
                    async move { vol.write(req.offset, data.freeze(), fua).await.map(|()| Bytes::new()) }
                })
                .await;
            }
            CMD_READ if req.length > MAX_REQUEST || !in_bounds => reply_now(EINVAL).await,
            CMD_READ => {
                let Ok(held) = budget.clone().acquire_many_owned(mib(req.length)).await else { break Ok(()) };
                let vol = vol.clone();
                spawn(&mut tasks, &slots, &replies, req.cookie, Some(held), async move {
                    vol.read(req.offset, u64::from(req.length)).await
                })
                .await;
            }
            CMD_FLUSH => {
                let vol = vol.clone();
                spawn(&mut tasks, &slots, &replies, req.cookie, None, async move {
                    vol.flush().await.map(|()| Bytes::new())
                })
                .await;
            }
            CMD_TRIM | CMD_WRITE_ZEROES if !in_bounds => reply_now(ENOSPC).await,
            CMD_TRIM | CMD_WRITE_ZEROES => {
                let fua = req.flags & CMD_FLAG_FUA != 0;
                let vol = vol.clone();
                spawn(&mut tasks, &slots, &replies, req.cookie, None, async move {
                    vol.zero(req.offset, u64::from(req.length), fua).await.map(|()| Bytes::new())
                })
                .await;
            }
            _ => reply_now(EINVAL).await,
        }
        // Reap finished tasks as we go.
        while tasks.try_join_next().is_some() {}
    };
    // Requests already taken are answered before the connection closes.
    while tasks.join_next().await.is_some() {}
    drop(replies);
    let _ = writer.await;
    result
}

async fn spawn(
    tasks: &mut JoinSet<()>,
    slots: &Arc<Semaphore>,
    replies: &mpsc::Sender<([u8; 16], Bytes)>,
    cookie: u64,
    // Memory budget of the request's data, given back once its reply is
    // queued.
    held: Option<OwnedSemaphorePermit>,
    work: impl std::future::Future<Output = Result<Bytes, ClientError>> + Send + 'static,
) {
    let Ok(slot) = slots.clone().acquire_owned().await else { return };
    let replies = replies.clone();
    tasks.spawn(async move {
        let reply = match work.await {
            Ok(data) => (simple_reply(0, cookie), data),
            Err(e) => {
                tracing::warn!(cookie, error = %e, "nbd request failed");
                (simple_reply(errno(&e), cookie), Bytes::new())
            }
        };
        let _ = replies.send(reply).await;
        drop((slot, held));
    });
}

/// Whole MiB of the memory budget a request of `len` bytes takes (at least one).
fn mib(len: u32) -> u32 {
    len.div_ceil(1 << 20).max(1)
}

fn errno(e: &ClientError) -> u32 {
    match e {
        ClientError::Chunk { error, .. } if error.kind == ChunkErrorKind::NoSpace => ENOSPC,
        ClientError::OutOfRange { .. } => EINVAL,
        ClientError::Chunk { error, .. } if error.kind == ChunkErrorKind::InvalidArgument => EINVAL,
        _ => EIO,
    }
}
