//! Opening sockets for an [`Endpoint`]: the only place that tells TCP from
//! Unix from the simulated network. Everything above it works on split read
//! and write halves, generic over their types.
//!
//! The transports are an enum, not a trait object: the set is closed (the
//! kernel's two and turmoil's in-process one) and the data path stays
//! monomorphic. The simulated network (`chaos/src/sim`) drops, delays,
//! reorders and partitions messages between hosts from a seed; its
//! endpoints work only inside a simulation, and anywhere else they fail
//! with an error instead of reaching turmoil's thread-local world.

use std::io;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tracing::debug;

use super::Endpoint;

/// A connected socket, not yet split.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Sim(turmoil::net::TcpStream),
}

/// A bound listening socket.
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
    Sim(turmoil::net::TcpListener),
}

/// Connects to `endpoint`. TCP gets TCP_NODELAY: frames are written whole
/// and flushed deliberately, so Nagle would only add latency.
pub(crate) async fn connect(endpoint: &Endpoint) -> io::Result<Stream> {
    match endpoint {
        Endpoint::Tcp(addr) => {
            let stream = TcpStream::connect(addr.as_str()).await?;
            stream.set_nodelay(true)?;
            Ok(Stream::Tcp(stream))
        }
        Endpoint::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        Endpoint::Sim(addr) => {
            in_simulation()?;
            Ok(Stream::Sim(turmoil::net::TcpStream::connect(addr.as_str()).await?))
        }
    }
}

/// A `sim:` endpoint outside a simulation is a configuration error, not a
/// reason to panic in turmoil's world lookup.
fn in_simulation() -> io::Result<()> {
    if turmoil::in_simulation() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::Unsupported, "sim: endpoints exist only inside a simulation"))
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listener::Tcp(l) => l.fmt(f),
            Listener::Unix(l) => l.fmt(f),
            // turmoil's listener has no Debug.
            Listener::Sim(l) => write!(f, "SimListener({:?})", l.local_addr().ok()),
        }
    }
}

impl Listener {
    /// Binds `endpoint`; returns the listener and the endpoint it really has
    /// (the kernel's port for `:0`).
    pub(crate) async fn bind(endpoint: &Endpoint) -> io::Result<(Listener, Endpoint)> {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let listener = TcpListener::bind(addr.as_str()).await?;
                let local = Endpoint::Tcp(listener.local_addr()?.to_string());
                Ok((Listener::Tcp(listener), local))
            }
            Endpoint::Unix(path) => {
                crate::unix_socket::remove_stale(path)?;
                Ok((Listener::Unix(UnixListener::bind(path)?), endpoint.clone()))
            }
            Endpoint::Sim(addr) => {
                in_simulation()?;
                let listener = turmoil::net::TcpListener::bind(addr.as_str()).await?;
                // Peers dial the host by name; the listener only knows its IP.
                Ok((Listener::Sim(listener), endpoint.clone()))
            }
        }
    }

    /// The next connection and a printable peer address for logs.
    /// Cancel safe: tokio's accept is.
    pub(crate) async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                // A failure here concerns this connection only; it still works.
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                Ok((Stream::Tcp(stream), peer.to_string()))
            }
            Listener::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok((Stream::Unix(stream), "unix".to_owned()))
            }
            Listener::Sim(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((Stream::Sim(stream), peer.to_string()))
            }
        }
    }
}
