//! Option haggling: from the server's greeting to the export the client
//! chooses (fixed newstyle; EXPORT_NAME, LIST, INFO, GO, ABORT,
//! STRUCTURED_REPLY, LIST_META_CONTEXT and SET_META_CONTEXT).

use std::sync::Arc;

use chuyi_meta_api::ask;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proto::*;
use crate::server::{Attached, NbdError, NbdServer};

/// What the client chose during option haggling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// Structured replies: reads and block status answer in chunks.
    pub structured: bool,
    /// The export `base:allocation` was selected for, if any. Choosing
    /// another export drops it.
    pub allocation_for: Option<String>,
}

impl Negotiated {
    pub fn transmission_flags(&self) -> u16 {
        if self.structured {
            TRANSMISSION_FLAGS | TFLAG_SEND_DF
        } else {
            TRANSMISSION_FLAGS
        }
    }

    /// Whether `base:allocation` is active once `export` is chosen.
    pub fn allocation(&self, export: &str) -> bool {
        self.allocation_for.as_deref() == Some(export)
    }
}

impl NbdServer {
    /// Option haggling. `Some` once the client has chosen (and attached) an
    /// export, `None` when it aborted.
    pub(crate) async fn handshake<R, W>(
        self: &Arc<Self>,
        r: &mut R,
        w: &mut W,
    ) -> Result<Option<(Attached, Negotiated)>, NbdError>
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
        let mut negotiated = Negotiated::default();
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
                    let attached = self.attach(&name).await.map_err(|(_, why)| NbdError::Protocol(why))?;
                    if attached.served.crypt.is_some() {
                        // EXPORT_NAME cannot tell the client that this
                        // volume takes whole 4 KiB blocks only.
                        return Err(NbdError::Protocol(format!("encrypted volume {name:?} needs NBD_OPT_GO")));
                    }
                    w.write_u64(attached.served.vol.size()).await?;
                    w.write_u16(negotiated.transmission_flags()).await?;
                    if !no_zeroes {
                        w.write_all(&[0u8; 124]).await?;
                    }
                    w.flush().await?;
                    return Ok(Some((attached, negotiated)));
                }
                OPT_ABORT => {
                    w.write_all(&option_reply(option, REP_ACK, &[])).await?;
                    w.flush().await?;
                    return Ok(None);
                }
                OPT_LIST if !data.is_empty() => {
                    w.write_all(&option_reply(option, REP_ERR_INVALID, b"LIST takes no data")).await?;
                }
                OPT_LIST => self.list(option, w).await?,
                OPT_INFO | OPT_GO => {
                    if let Some(attached) = self.info(option, &data, &negotiated, w).await? {
                        return Ok(Some((attached, negotiated)));
                    }
                }
                OPT_STRUCTURED_REPLY if !data.is_empty() => {
                    w.write_all(&option_reply(option, REP_ERR_INVALID, b"STRUCTURED_REPLY takes no data")).await?;
                }
                OPT_STRUCTURED_REPLY => {
                    negotiated.structured = true;
                    w.write_all(&option_reply(option, REP_ACK, &[])).await?;
                }
                OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                    meta_context(option, &data, &mut negotiated, w).await?;
                }
                _ => w.write_all(&option_reply(option, REP_ERR_UNSUP, b"option not supported")).await?,
            }
            w.flush().await?;
        }
    }

    async fn list<W: AsyncWriteExt + Unpin>(&self, option: u32, w: &mut W) -> Result<(), NbdError> {
        match self.cluster().meta().ask(ask::Volumes).await {
            Ok(volumes) => {
                for v in volumes {
                    let mut data = (v.name.len() as u32).to_be_bytes().to_vec();
                    data.extend_from_slice(v.name.as_bytes());
                    w.write_all(&option_reply(option, REP_SERVER, &data)).await?;
                }
                w.write_all(&option_reply(option, REP_ACK, &[])).await?;
            }
            Err(_) => w.write_all(&option_reply(option, REP_ERR_SHUTDOWN, b"metadata unavailable")).await?,
        }
        Ok(())
    }

    /// INFO describes an export; GO also attaches it (`Some`).
    async fn info<W: AsyncWriteExt + Unpin>(
        self: &Arc<Self>,
        option: u32,
        data: &[u8],
        negotiated: &Negotiated,
        w: &mut W,
    ) -> Result<Option<Attached>, NbdError> {
        let Some((name, infos)) = parse_info_request(data) else {
            w.write_all(&option_reply(option, REP_ERR_INVALID, b"malformed INFO/GO request")).await?;
            return Ok(None);
        };
        let (size, encrypted, attached) = if option == OPT_GO {
            match self.attach(&name).await {
                Ok(a) => (a.served.vol.size(), a.served.crypt.is_some(), Some(a)),
                Err((kind, why)) => {
                    w.write_all(&option_reply(option, kind, why.as_bytes())).await?;
                    return Ok(None);
                }
            }
        } else {
            match self.cluster().meta().ask(ask::Volume(name.clone())).await {
                Ok(v) => (v.size_bytes, !v.wrapped_key.is_empty(), None),
                Err(_) => {
                    w.write_all(&option_reply(option, REP_ERR_UNKNOWN, format!("no volume {name:?}").as_bytes()))
                        .await?;
                    return Ok(None);
                }
            }
        };
        if encrypted && !infos.contains(&INFO_BLOCK_SIZE) {
            // It takes whole 4 KiB blocks only, which a client that does
            // not ask for block sizes would not know (`attached`, if any,
            // detaches as it drops).
            let why = b"an encrypted volume takes whole 4 KiB blocks: ask for NBD_INFO_BLOCK_SIZE";
            w.write_all(&option_reply(option, REP_ERR_BLOCK_SIZE_REQD, why)).await?;
            return Ok(None);
        }
        let mut export = INFO_EXPORT.to_be_bytes().to_vec();
        export.extend_from_slice(&size.to_be_bytes());
        export.extend_from_slice(&negotiated.transmission_flags().to_be_bytes());
        w.write_all(&option_reply(option, REP_INFO, &export)).await?;
        if infos.contains(&INFO_BLOCK_SIZE) {
            let min = if encrypted { PREFERRED_BLOCK } else { MIN_BLOCK };
            let mut sizes = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
            for v in [min, PREFERRED_BLOCK, MAX_REQUEST] {
                sizes.extend_from_slice(&v.to_be_bytes());
            }
            w.write_all(&option_reply(option, REP_INFO, &sizes)).await?;
        }
        w.write_all(&option_reply(option, REP_ACK, &[])).await?;
        w.flush().await?;
        Ok(attached)
    }
}

/// LIST_META_CONTEXT names the contexts a query matches; SET_META_CONTEXT
/// also selects them (replacing any earlier selection). Only
/// `base:allocation` exists: `base:allocation` and `base:` match it, other
/// namespaces match nothing, and a query without a namespace is invalid.
async fn meta_context<W: AsyncWriteExt + Unpin>(
    option: u32,
    data: &[u8],
    negotiated: &mut Negotiated,
    w: &mut W,
) -> Result<(), NbdError> {
    if !negotiated.structured {
        w.write_all(&option_reply(option, REP_ERR_INVALID, b"negotiate structured replies first")).await?;
        return Ok(());
    }
    let Some((export, queries)) = parse_meta_context_request(data) else {
        w.write_all(&option_reply(option, REP_ERR_INVALID, b"malformed meta context request")).await?;
        return Ok(());
    };
    if queries.iter().any(|q| !q.contains(':')) {
        w.write_all(&option_reply(option, REP_ERR_INVALID, b"a query must start with a namespace")).await?;
        return Ok(());
    }
    let listing = option == OPT_LIST_META_CONTEXT;
    let matches = (listing && queries.is_empty()) || queries.iter().any(|q| q == "base:" || q == ALLOCATION_CONTEXT);
    if matches {
        // A listing's ids are reserved: zero.
        let id = if listing { 0 } else { ALLOCATION_CONTEXT_ID };
        let mut reply = id.to_be_bytes().to_vec();
        reply.extend_from_slice(ALLOCATION_CONTEXT.as_bytes());
        w.write_all(&option_reply(option, REP_META_CONTEXT, &reply)).await?;
    }
    if !listing {
        negotiated.allocation_for = matches.then_some(export);
    }
    w.write_all(&option_reply(option, REP_ACK, &[])).await?;
    Ok(())
}
