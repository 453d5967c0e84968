//! Opening sockets for an [`Endpoint`]: the only place that tells TCP from
//! Unix. Everything above it works on split read and write halves.

use std::io;
use std::path::Path;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tracing::debug;

use super::Endpoint;

/// A connected socket, not yet split.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A bound listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
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
                remove_stale_socket(path).await?;
                Ok((Listener::Unix(UnixListener::bind(path)?), endpoint.clone()))
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
        }
    }
}

/// A socket file left by a server that died is removed so bind can succeed.
/// One that still answers belongs to a live server and is left alone, as is
/// anything that is not a socket (a misconfigured path must not eat a file).
async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;

    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Ok(());
    }
    if UnixStream::connect(path).await.is_ok() {
        let what = format!("{} is served by a running process", path.display());
        return Err(io::Error::new(io::ErrorKind::AddrInUse, what));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
