//! The connection handshake: mutual HMAC-SHA256 challenge–response over the
//! cluster secret (layout in `common/PROTOCOL.md`).
//!
//! Each side proves it holds the secret by MACing both fresh nonces, with a
//! different label per direction so one side's proof can never be replayed
//! as the other's. The secret itself never crosses the wire. The stream is
//! authenticated at open only, not encrypted or MACed per frame: the cluster
//! network is trusted not to tamper, and volume data is encrypted above us.
//!
//! Callers put the whole exchange under a deadline; the functions here would
//! otherwise wait as long as the peer stays silent.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::RpcError;
use crate::secret::{fill_random, ClusterSecret};

pub const MAGIC: [u8; 8] = *b"CHUYIRPC";
pub const HANDSHAKE_VERSION: u16 = 1;
pub const NONCE_LEN: usize = 32;
pub const MAC_LEN: usize = 32;
/// magic, version, reserved, server nonce.
pub const SERVER_HELLO_LEN: usize = 8 + 2 + 2 + NONCE_LEN;
/// magic, version, reserved, client nonce, client proof.
pub const CLIENT_HELLO_LEN: usize = SERVER_HELLO_LEN + MAC_LEN;
/// The server's verdict byte: accepted, followed by its own proof.
pub const VERDICT_ACCEPT: u8 = 0x00;
/// The server's verdict byte: refused, then the server closes.
pub const VERDICT_DENY: u8 = 0x01;

const CLIENT_LABEL: &[u8] = b"chuyi-rpc-v1 client";
const SERVER_LABEL: &[u8] = b"chuyi-rpc-v1 server";

pub type Nonce = [u8; NONCE_LEN];

/// Server side: sends the challenge, checks the client's proof, answers with
/// the verdict and, when accepted, the server's own proof.
pub(crate) async fn accept<R, W>(r: &mut R, w: &mut W, secret: &ClusterSecret) -> Result<(), RpcError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let server_nonce = fresh_nonce();
    w.write_all(&encode_hello(&server_nonce, None)).await?;
    w.flush().await?;
    let mut hello = [0u8; CLIENT_HELLO_LEN];
    r.read_exact(&mut hello).await?;
    let client_nonce = match check_client_hello(&hello, secret, &server_nonce) {
        Ok(nonce) => nonce,
        Err(e) => {
            // Best effort: the peer may already be gone, and we close anyway.
            let _ = w.write_all(&[VERDICT_DENY]).await;
            let _ = w.flush().await;
            return Err(e);
        }
    };
    let mut verdict = [0u8; 1 + MAC_LEN];
    verdict[0] = VERDICT_ACCEPT;
    verdict[1..].copy_from_slice(&proof(secret, SERVER_LABEL, &client_nonce, &server_nonce));
    w.write_all(&verdict).await?;
    w.flush().await?;
    Ok(())
}

/// Client side: answers the challenge, then checks the server's verdict and
/// proof, so a stranger cannot pose as a cluster server either.
pub async fn initiate<R, W>(r: &mut R, w: &mut W, secret: &ClusterSecret) -> Result<(), RpcError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut hello = [0u8; SERVER_HELLO_LEN];
    read_or_closed(r, &mut hello).await?;
    let server_nonce = parse_prefix(&hello)?;
    let client_nonce = fresh_nonce();
    let mac = proof(secret, CLIENT_LABEL, &server_nonce, &client_nonce);
    w.write_all(&encode_hello(&client_nonce, Some(&mac))).await?;
    w.flush().await?;
    let mut verdict = [0u8; 1];
    read_or_closed(r, &mut verdict).await?;
    match verdict[0] {
        VERDICT_ACCEPT => {}
        VERDICT_DENY => return Err(RpcError::Denied),
        other => return Err(RpcError::Handshake(format!("unknown verdict byte {other:#04x}"))),
    }
    let mut server_mac = [0u8; MAC_LEN];
    read_or_closed(r, &mut server_mac).await?;
    let expected = keyed(secret, SERVER_LABEL, &client_nonce, &server_nonce);
    expected
        .verify_slice(&server_mac)
        .map_err(|_| RpcError::Handshake("the server's proof is wrong: it lacks our secret".into()))
}

/// A hello: the fixed prefix, the sender's nonce and, from the client, its proof.
pub fn encode_hello(nonce: &Nonce, mac: Option<&[u8; MAC_LEN]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(CLIENT_HELLO_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&HANDSHAKE_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(nonce);
    if let Some(mac) = mac {
        out.extend_from_slice(mac);
    }
    out
}

/// The proof one side sends: HMAC-SHA256(secret, label || first || second).
pub fn proof(secret: &ClusterSecret, label: &[u8], first: &Nonce, second: &Nonce) -> [u8; MAC_LEN] {
    keyed(secret, label, first, second).finalize().into_bytes().into()
}

/// The client's nonce when its hello is well formed and its proof right.
fn check_client_hello(
    hello: &[u8; CLIENT_HELLO_LEN],
    secret: &ClusterSecret,
    server_nonce: &Nonce,
) -> Result<Nonce, RpcError> {
    let client_nonce = parse_prefix(&hello[..SERVER_HELLO_LEN])?;
    // verify_slice compares in constant time: no timing hint about the MAC.
    keyed(secret, CLIENT_LABEL, server_nonce, &client_nonce)
        .verify_slice(&hello[SERVER_HELLO_LEN..])
        .map_err(|_| RpcError::Handshake("the client's proof is wrong".into()))?;
    Ok(client_nonce)
}

/// Checks magic, version and reserved of a hello prefix; returns its nonce.
fn parse_prefix(prefix: &[u8]) -> Result<Nonce, RpcError> {
    let mut nonce = [0u8; NONCE_LEN];
    let (Some(magic), Some(version), Some(reserved), Some(raw_nonce)) =
        (prefix.get(0..8), prefix.get(8..10), prefix.get(10..12), prefix.get(12..SERVER_HELLO_LEN))
    else {
        return Err(RpcError::Handshake("short hello".into()));
    };
    if magic != MAGIC {
        return Err(RpcError::Handshake("the peer does not speak chuyi rpc".into()));
    }
    if version != HANDSHAKE_VERSION.to_le_bytes() || reserved != [0, 0] {
        return Err(RpcError::Handshake(format!("unsupported handshake version {version:?}")));
    }
    nonce.copy_from_slice(raw_nonce);
    Ok(nonce)
}

fn keyed(secret: &ClusterSecret, label: &[u8], first: &Nonce, second: &Nonce) -> Hmac<Sha256> {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(label);
    mac.update(first);
    mac.update(second);
    mac
}

fn fresh_nonce() -> Nonce {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    nonce
}

/// A peer that hangs up mid-handshake (a server at its connection limit, or
/// one shutting down) is a closed connection, not an I/O fault.
async fn read_or_closed<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), RpcError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(RpcError::Closed),
        Err(e) => Err(RpcError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(text.as_bytes().to_vec()).expect("long enough")
    }

    /// Runs both sides over an in-memory pipe.
    async fn run(server: ClusterSecret, client: ClusterSecret) -> (Result<(), RpcError>, Result<(), RpcError>) {
        let (a, b) = tokio::io::duplex(1024);
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        tokio::join!(accept(&mut ar, &mut aw, &server), async {
            let result = initiate(&mut br, &mut bw, &client).await;
            drop(bw);
            result
        })
    }

    #[tokio::test]
    async fn same_secret_authenticates_both_ways() {
        let (server, client) = run(secret("0123456789abcdef"), secret("0123456789abcdef")).await;
        assert!(server.is_ok(), "{server:?}");
        assert!(client.is_ok(), "{client:?}");
    }

    #[tokio::test]
    async fn wrong_secret_is_denied() {
        let (server, client) = run(secret("0123456789abcdef"), secret("fedcba9876543210")).await;
        assert!(matches!(server, Err(RpcError::Handshake(_))), "{server:?}");
        assert!(matches!(client, Err(RpcError::Denied)), "{client:?}");
    }

    #[test]
    fn directions_use_different_labels() {
        let s = secret("0123456789abcdef");
        let (x, y) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
        assert_ne!(proof(&s, CLIENT_LABEL, &x, &y), proof(&s, SERVER_LABEL, &x, &y));
    }

    #[test]
    fn garbage_hello_is_refused_not_panicked_on() {
        let s = secret("0123456789abcdef");
        for fill in [0u8, 0xff, b'C'] {
            let hello = [fill; CLIENT_HELLO_LEN];
            assert!(check_client_hello(&hello, &s, &[0; NONCE_LEN]).is_err());
        }
    }
}
