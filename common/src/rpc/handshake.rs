//! The connection handshake: the client names a principal and both sides
//! prove, by HMAC-SHA256 challenge–response, that they hold that
//! principal's key at this door (layout in `common/PROTOCOL.md`; keys in
//! `credential.rs`).
//!
//! Each side MACs both fresh nonces, with a different label per direction
//! so one side's proof can never be replayed as the other's. No key
//! crosses the wire. The server answers with the principal it now serves
//! the connection as; services decide what that principal may call. The
//! stream is authenticated at open only, not encrypted or MACed per frame:
//! the cluster network is trusted not to tamper, and volume data is
//! encrypted above us.
//!
//! Callers put the whole exchange under a deadline; the functions here would
//! otherwise wait as long as the peer stays silent.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::RpcError;
use crate::credential::{Identity, Keyring, Principal, Role, RoleKey, NAME_MAX_BYTES};
use crate::secret::fill_random;

pub const MAGIC: [u8; 8] = *b"CHUYIRPC";
/// Version 2 names a principal in the client's hello (version 1 proved the
/// cluster secret alone, and is refused).
pub const HANDSHAKE_VERSION: u16 = 2;
pub const NONCE_LEN: usize = 32;
pub const MAC_LEN: usize = 32;
/// magic, version, role byte (0 from the server), name length, nonce.
pub const HELLO_PREFIX_LEN: usize = 8 + 2 + 1 + 1 + NONCE_LEN;
/// The server's hello is the prefix alone.
pub const SERVER_HELLO_LEN: usize = HELLO_PREFIX_LEN;
/// The server's verdict byte: accepted, followed by its own proof.
pub const VERDICT_ACCEPT: u8 = 0x00;
/// The server's verdict byte: refused, then the server closes.
pub const VERDICT_DENY: u8 = 0x01;

pub const CLIENT_LABEL: &[u8] = b"chuyi-rpc-v2 client";
pub const SERVER_LABEL: &[u8] = b"chuyi-rpc-v2 server";

pub type Nonce = [u8; NONCE_LEN];

/// Server side: sends the challenge, checks the client's principal and
/// proof, answers with the verdict and, when accepted, the server's own
/// proof. Returns the principal the connection is served as.
pub(crate) async fn accept<R, W>(r: &mut R, w: &mut W, keyring: &Keyring) -> Result<Principal, RpcError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let server_nonce = fresh_nonce();
    w.write_all(&encode_prefix(None, &server_nonce)).await?;
    w.flush().await?;
    let mut prefix = [0u8; HELLO_PREFIX_LEN];
    r.read_exact(&mut prefix).await?;
    let checked = match parse_prefix(&prefix) {
        Ok((Some(role), name_len, client_nonce)) => {
            let mut rest = vec![0u8; usize::from(name_len) + MAC_LEN];
            r.read_exact(&mut rest).await?;
            check_client(role, &rest, keyring, &server_nonce, &client_nonce).map(|(p, key)| (p, key, client_nonce))
        }
        Ok((None, _, _)) => Err(RpcError::Handshake("the client names no role".into())),
        Err(e) => Err(e),
    };
    let (principal, key, client_nonce) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            // Best effort: the peer may already be gone, and we close anyway.
            let _ = w.write_all(&[VERDICT_DENY]).await;
            let _ = w.flush().await;
            return Err(e);
        }
    };
    let mut verdict = [0u8; 1 + MAC_LEN];
    verdict[0] = VERDICT_ACCEPT;
    verdict[1..].copy_from_slice(&proof(&key, SERVER_LABEL, &client_nonce, &server_nonce));
    w.write_all(&verdict).await?;
    w.flush().await?;
    Ok(principal)
}

/// Client side: names its principal and answers the challenge, then checks
/// the server's verdict and proof, so a stranger cannot pose as a cluster
/// server either.
pub async fn initiate<R, W>(r: &mut R, w: &mut W, identity: &Identity) -> Result<(), RpcError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut hello = [0u8; SERVER_HELLO_LEN];
    read_or_closed(r, &mut hello).await?;
    let (_, _, server_nonce) = parse_prefix(&hello)?;
    let client_nonce = fresh_nonce();
    w.write_all(&encode_client_hello(identity, &server_nonce, &client_nonce)).await?;
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
    keyed(identity.key(), SERVER_LABEL, &client_nonce, &server_nonce)
        .verify_slice(&server_mac)
        .map_err(|_| RpcError::Handshake("the server's proof is wrong: it lacks our key".into()))
}

/// A hello's prefix: from the client its role and name length, from the
/// server zeros.
pub fn encode_prefix(principal: Option<&Principal>, nonce: &Nonce) -> Vec<u8> {
    let mut out = Vec::with_capacity(HELLO_PREFIX_LEN + NAME_MAX_BYTES + MAC_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&HANDSHAKE_VERSION.to_le_bytes());
    match principal {
        // Names are at most NAME_MAX_BYTES (64), checked when made.
        Some(p) => out.extend_from_slice(&[p.role.wire(), p.name.len() as u8]),
        None => out.extend_from_slice(&[0, 0]),
    }
    out.extend_from_slice(nonce);
    out
}

/// The client's whole hello: prefix, name, proof.
pub fn encode_client_hello(identity: &Identity, server_nonce: &Nonce, client_nonce: &Nonce) -> Vec<u8> {
    let mut out = encode_prefix(Some(&identity.principal), client_nonce);
    out.extend_from_slice(identity.principal.name.as_bytes());
    out.extend_from_slice(&proof(identity.key(), CLIENT_LABEL, server_nonce, client_nonce));
    out
}

/// The proof one side sends: HMAC-SHA256(key, label || first || second).
pub fn proof(key: &RoleKey, label: &[u8], first: &Nonce, second: &Nonce) -> [u8; MAC_LEN] {
    keyed(key, label, first, second).finalize().into_bytes().into()
}

/// The client's principal and key when its name is valid and its proof
/// right; `rest` is the name followed by the proof.
fn check_client(
    role: Role,
    rest: &[u8],
    keyring: &Keyring,
    server_nonce: &Nonce,
    client_nonce: &Nonce,
) -> Result<(Principal, RoleKey), RpcError> {
    let (name, mac) = rest.split_at(rest.len() - MAC_LEN);
    let name = std::str::from_utf8(name).map_err(|_| RpcError::Handshake("the client's name is not UTF-8".into()))?;
    let principal = Principal::new(role, name).map_err(|e| RpcError::Handshake(e.to_string()))?;
    let key = keyring.key(&principal);
    // verify_slice compares in constant time: no timing hint about the MAC.
    keyed(&key, CLIENT_LABEL, server_nonce, client_nonce)
        .verify_slice(mac)
        .map_err(|_| RpcError::Handshake(format!("the proof of {principal} is wrong")))?;
    Ok((principal, key))
}

/// Checks magic and version of a hello prefix; returns its role (none for
/// byte 0), name length and nonce.
fn parse_prefix(prefix: &[u8; HELLO_PREFIX_LEN]) -> Result<(Option<Role>, u8, Nonce), RpcError> {
    let (magic, version, role, name_len) = (&prefix[..8], &prefix[8..10], prefix[10], prefix[11]);
    if magic != MAGIC {
        return Err(RpcError::Handshake("the peer does not speak chuyi rpc".into()));
    }
    if version != HANDSHAKE_VERSION.to_le_bytes() {
        return Err(RpcError::Handshake(format!("unsupported handshake version {version:?}")));
    }
    let role = match role {
        0 => None,
        byte => Some(Role::from_wire(byte).ok_or_else(|| RpcError::Handshake(format!("unknown role byte {byte}")))?),
    };
    if usize::from(name_len) > NAME_MAX_BYTES {
        return Err(RpcError::Handshake(format!("a name of {name_len} bytes; at most {NAME_MAX_BYTES}")));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&prefix[12..]);
    Ok((role, name_len, nonce))
}

fn keyed(key: &RoleKey, label: &[u8], first: &Nonce, second: &Nonce) -> Hmac<Sha256> {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
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
    use crate::credential::{Credential, Door};
    use crate::secret::ClusterSecret;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(text.as_bytes().to_vec()).expect("long enough")
    }

    fn frontend(name: &str) -> Principal {
        Principal::new(Role::Frontend, name).expect("name")
    }

    /// Runs both sides over an in-memory pipe.
    async fn run(server: &Keyring, client: &Identity) -> (Result<Principal, RpcError>, Result<(), RpcError>) {
        let (a, b) = tokio::io::duplex(1024);
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        tokio::join!(accept(&mut ar, &mut aw, server), async {
            let result = initiate(&mut br, &mut bw, client).await;
            drop(bw);
            result
        })
    }

    fn meta_ring(text: &str) -> Keyring {
        Credential::from_secret(secret(text), Principal::member(1)).keyring(Door::Meta).expect("ring")
    }

    #[tokio::test]
    async fn the_server_learns_who_called() {
        let client = Credential::issue(&secret("0123456789abcdef"), frontend("s3-a")).expect("issue");
        let (server, client) = run(&meta_ring("0123456789abcdef"), &client.identity(Door::Meta)).await;
        assert_eq!(server.expect("accepted"), frontend("s3-a"));
        assert!(client.is_ok(), "{client:?}");
    }

    #[tokio::test]
    async fn wrong_secret_is_denied() {
        let client = Credential::issue(&secret("fedcba9876543210"), frontend("s3-a")).expect("issue");
        let (server, client) = run(&meta_ring("0123456789abcdef"), &client.identity(Door::Meta)).await;
        assert!(matches!(server, Err(RpcError::Handshake(_))), "{server:?}");
        assert!(matches!(client, Err(RpcError::Denied)), "{client:?}");
    }

    /// A frontend that claims another principal (the admin, another
    /// frontend) has the wrong key for it.
    #[tokio::test]
    async fn a_frontend_cannot_claim_another_principal() {
        let fe = Credential::issue(&secret("0123456789abcdef"), frontend("s3-a")).expect("issue");
        let mut forged = fe.identity(Door::Meta);
        for claim in [Principal::admin(), frontend("s3-b"), Principal::node(1), Principal::member(1)] {
            forged.principal = claim.clone();
            let (server, client) = run(&meta_ring("0123456789abcdef"), &forged).await;
            assert!(matches!(server, Err(RpcError::Handshake(_))), "{claim}: {server:?}");
            assert!(matches!(client, Err(RpcError::Denied)), "{claim}: {client:?}");
        }
        // Its node-door key does not open the meta door either.
        let (server, _) = run(&meta_ring("0123456789abcdef"), &fe.identity(Door::Node)).await;
        assert!(server.is_err());
    }

    #[test]
    fn directions_use_different_labels() {
        let id = Credential::issue(&secret("0123456789abcdef"), frontend("x")).expect("issue").identity(Door::Meta);
        let (x, y) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
        assert_ne!(proof(id.key(), CLIENT_LABEL, &x, &y), proof(id.key(), SERVER_LABEL, &x, &y));
    }

    #[test]
    fn garbage_prefix_is_refused_not_panicked_on() {
        for fill in [0u8, 0xff, b'C'] {
            assert!(parse_prefix(&[fill; HELLO_PREFIX_LEN]).is_err());
        }
        let mut prefix: [u8; HELLO_PREFIX_LEN] =
            encode_prefix(Some(&frontend("x")), &[0; NONCE_LEN]).try_into().expect("prefix length");
        prefix[10] = 9;
        assert!(parse_prefix(&prefix).is_err(), "unknown role byte");
        prefix[10] = Role::Frontend.wire();
        prefix[11] = 65;
        assert!(parse_prefix(&prefix).is_err(), "name too long");
    }
}
