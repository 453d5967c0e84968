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
    /// The flags of an export; `read_only` for a snapshot's.
    pub fn transmission_flags(&self, read_only: bool) -> u16 {
        let flags = if self.structured { TRANSMISSION_FLAGS | TFLAG_SEND_DF } else { TRANSMISSION_FLAGS };
        if read_only {
            flags | TFLAG_READ_ONLY
        } else {
            flags
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
            match decide(option, &data, &mut negotiated) {
                Step::ExportName(name) => {
                    // No way to send an error here: a refusal closes.
                    let attached = self.attach(&name).await.map_err(|(_, why)| NbdError::Protocol(why))?;
                    if attached.served.crypt.is_some() {
                        // EXPORT_NAME cannot tell the client that this
                        // volume takes whole 4 KiB blocks only.
                        return Err(NbdError::Protocol(format!("encrypted volume {name:?} needs NBD_OPT_GO")));
                    }
                    w.write_u64(attached.served.vol.size()).await?;
                    w.write_u16(negotiated.transmission_flags(attached.served.read_only())).await?;
                    if !no_zeroes {
                        w.write_all(&[0u8; 124]).await?;
                    }
                    w.flush().await?;
                    return Ok(Some((attached, negotiated)));
                }
                Step::Abort => {
                    w.write_all(&option_reply(option, REP_ACK, &[])).await?;
                    w.flush().await?;
                    return Ok(None);
                }
                Step::List => self.list(option, w).await?,
                Step::Info => {
                    if let Some(attached) = self.info(option, &data, &negotiated, w).await? {
                        return Ok(Some((attached, negotiated)));
                    }
                }
                Step::Replies(replies) => {
                    for (kind, body) in replies {
                        w.write_all(&option_reply(option, kind, &body)).await?;
                    }
                }
                Step::Close(why) => return Err(NbdError::Protocol(why)),
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
        let (size, encrypted, read_only, attached) = if option == OPT_GO {
            match self.attach(&name).await {
                Ok(a) => (a.served.vol.size(), a.served.crypt.is_some(), a.served.read_only(), Some(a)),
                Err((kind, why)) => {
                    w.write_all(&option_reply(option, kind, why.as_bytes())).await?;
                    return Ok(None);
                }
            }
        } else {
            // VOLUME@SNAPSHOT names a snapshot, served read-only.
            let (volume, snapshot) = name.split_once('@').map_or((name.as_str(), None), |(v, s)| (v, Some(s)));
            let found = match self.cluster().meta().ask(ask::Volume(volume.into())).await {
                Ok(v) => match snapshot {
                    Some(s) => chuyi_client::snapshot::find(self.cluster(), volume, s).await.ok().map(|_| v),
                    None => Some(v),
                },
                Err(_) => None,
            };
            match found {
                Some(v) => (v.size_bytes, !v.wrapped_key.is_empty(), snapshot.is_some(), None),
                None => {
                    w.write_all(&option_reply(option, REP_ERR_UNKNOWN, format!("no export {name:?}").as_bytes()))
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
        export.extend_from_slice(&negotiated.transmission_flags(read_only).to_be_bytes());
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

/// What one option asks of the server, decided without I/O (the
/// replies it can make from the option alone are made here).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send these replies (type, data), then read the next option.
    Replies(Vec<(u32, Vec<u8>)>),
    /// The old way in: attach the export and start transmission. A refusal
    /// closes (EXPORT_NAME has no error reply).
    ExportName(String),
    /// Acknowledge, then close.
    Abort,
    /// The exports, then an acknowledgement.
    List,
    /// INFO describes the export; GO also attaches it.
    Info,
    /// The client broke the protocol: close.
    Close(String),
}

/// The step for option `option` with `data`, updating what was negotiated.
pub(crate) fn decide(option: u32, data: &[u8], negotiated: &mut Negotiated) -> Step {
    let one = |kind: u32, why: &[u8]| Step::Replies(vec![(kind, why.to_vec())]);
    match option {
        OPT_EXPORT_NAME => match String::from_utf8(data.to_vec()) {
            Ok(name) => Step::ExportName(name),
            Err(_) => Step::Close("export name not UTF-8".into()),
        },
        OPT_ABORT => Step::Abort,
        OPT_LIST if !data.is_empty() => one(REP_ERR_INVALID, b"LIST takes no data"),
        OPT_LIST => Step::List,
        OPT_INFO | OPT_GO => Step::Info,
        OPT_STRUCTURED_REPLY if !data.is_empty() => one(REP_ERR_INVALID, b"STRUCTURED_REPLY takes no data"),
        OPT_STRUCTURED_REPLY => {
            negotiated.structured = true;
            one(REP_ACK, b"")
        }
        OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => Step::Replies(meta_context(option, data, negotiated)),
        _ => one(REP_ERR_UNSUP, b"option not supported"),
    }
}

/// LIST_META_CONTEXT names the contexts a query matches; SET_META_CONTEXT
/// also selects them (replacing any earlier selection). Only
/// `base:allocation` exists: `base:allocation` and `base:` match it, other
/// namespaces match nothing, and a query without a namespace is invalid.
/// Returns the replies.
fn meta_context(option: u32, data: &[u8], negotiated: &mut Negotiated) -> Vec<(u32, Vec<u8>)> {
    let invalid = |why: &[u8]| vec![(REP_ERR_INVALID, why.to_vec())];
    if !negotiated.structured {
        return invalid(b"negotiate structured replies first");
    }
    let Some((export, queries)) = parse_meta_context_request(data) else {
        return invalid(b"malformed meta context request");
    };
    if queries.iter().any(|q| !q.contains(':')) {
        return invalid(b"a query must start with a namespace");
    }
    let listing = option == OPT_LIST_META_CONTEXT;
    let matches = (listing && queries.is_empty()) || queries.iter().any(|q| q == "base:" || q == ALLOCATION_CONTEXT);
    let mut replies = Vec::new();
    if matches {
        // A listing's ids are reserved: zero.
        let id = if listing { 0 } else { ALLOCATION_CONTEXT_ID };
        let mut reply = id.to_be_bytes().to_vec();
        reply.extend_from_slice(ALLOCATION_CONTEXT.as_bytes());
        replies.push((REP_META_CONTEXT, reply));
    }
    if !listing {
        negotiated.allocation_for = matches.then_some(export);
    }
    replies.push((REP_ACK, Vec::new()));
    replies
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A meta context request body: export name, then each query, each
    /// with its 32-bit length first.
    fn contexts(export: &str, queries: &[&str]) -> Vec<u8> {
        let mut data = (export.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            data.extend_from_slice(&(q.len() as u32).to_be_bytes());
            data.extend_from_slice(q.as_bytes());
        }
        data
    }

    fn kinds(step: &Step) -> Vec<u32> {
        match step {
            Step::Replies(replies) => replies.iter().map(|(k, _)| *k).collect(),
            other => panic!("not replies: {other:?}"),
        }
    }

    #[test]
    fn meta_contexts_need_structured_replies_first() {
        let mut n = Negotiated::default();
        let set = decide(OPT_SET_META_CONTEXT, &contexts("vol0", &["base:allocation"]), &mut n);
        assert_eq!(kinds(&set), [REP_ERR_INVALID]);
        assert_eq!(n.allocation_for, None);
        assert_eq!(kinds(&decide(OPT_STRUCTURED_REPLY, &[], &mut n)), [REP_ACK]);
        assert!(n.structured);
        let set = decide(OPT_SET_META_CONTEXT, &contexts("vol0", &["base:allocation"]), &mut n);
        assert_eq!(kinds(&set), [REP_META_CONTEXT, REP_ACK]);
        assert!(n.allocation("vol0") && !n.allocation("vol1"));
        assert_eq!(n.transmission_flags(false), TRANSMISSION_FLAGS | TFLAG_SEND_DF);
        assert_eq!(n.transmission_flags(true), TRANSMISSION_FLAGS | TFLAG_SEND_DF | TFLAG_READ_ONLY);
    }

    #[test]
    fn listing_selects_nothing_and_other_namespaces_match_nothing() {
        let mut n = Negotiated { structured: true, allocation_for: Some("vol0".into()) };
        let listed = decide(OPT_LIST_META_CONTEXT, &contexts("vol1", &[]), &mut n);
        assert_eq!(kinds(&listed), [REP_META_CONTEXT, REP_ACK]);
        assert_eq!(n.allocation_for.as_deref(), Some("vol0"), "a listing changes no selection");
        let other = decide(OPT_SET_META_CONTEXT, &contexts("vol0", &["qemu:dirty-bitmap"]), &mut n);
        assert_eq!(kinds(&other), [REP_ACK]);
        assert_eq!(n.allocation_for, None, "a set replaces the selection, here with none");
        let bare = decide(OPT_SET_META_CONTEXT, &contexts("vol0", &["allocation"]), &mut n);
        assert_eq!(kinds(&bare), [REP_ERR_INVALID]);
        let cut = decide(OPT_SET_META_CONTEXT, &[0, 0, 0, 9, b'v'], &mut n);
        assert_eq!(kinds(&cut), [REP_ERR_INVALID]);
    }

    #[test]
    fn options_map_to_their_steps() {
        let mut n = Negotiated::default();
        assert_eq!(decide(OPT_EXPORT_NAME, b"vol0", &mut n), Step::ExportName("vol0".into()));
        assert!(matches!(decide(OPT_EXPORT_NAME, &[0xff, 0xfe], &mut n), Step::Close(_)));
        assert_eq!(decide(OPT_ABORT, &[], &mut n), Step::Abort);
        assert_eq!(decide(OPT_LIST, &[], &mut n), Step::List);
        assert_eq!(kinds(&decide(OPT_LIST, b"x", &mut n)), [REP_ERR_INVALID]);
        assert_eq!(decide(OPT_GO, b"anything", &mut n), Step::Info);
        assert_eq!(decide(OPT_INFO, b"", &mut n), Step::Info);
        assert_eq!(kinds(&decide(OPT_STRUCTURED_REPLY, b"x", &mut n)), [REP_ERR_INVALID]);
        assert!(!n.structured);
        assert_eq!(kinds(&decide(0x7777, &[], &mut n)), [REP_ERR_UNSUP]);
    }
}
