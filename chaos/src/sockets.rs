//! Hostile clients for the public listeners' tests: many connections from
//! one loopback address (so a per-address cap meets them and not the
//! test's own clients, which come from 127.0.0.1), and a count of how many
//! the server has closed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// `n` connections to `addr` from the loopback address `from`
/// (127.0.0.2, ...), each sending `first` (nothing, or half a request)
/// and then nothing.
pub async fn connect_from(from: &str, addr: SocketAddr, n: usize, first: &[u8]) -> anyhow::Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = TcpSocket::new_v4()?;
        socket.bind(format!("{from}:0").parse()?)?;
        let mut stream = socket.connect(addr).await?;
        if !first.is_empty() {
            // A refused connection may be closed under this write.
            let _ = stream.write_all(first).await;
        }
        out.push(stream);
    }
    Ok(out)
}

/// How many of `streams` the server has closed: each is read (whatever
/// the server sent first) until end of file or reset, waiting up to
/// `wait` for each.
pub async fn closed(streams: &mut [TcpStream], wait: Duration) -> usize {
    let mut count = 0;
    for stream in streams.iter_mut() {
        let mut buf = [0u8; 512];
        let ended = tokio::time::timeout(wait, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok();
        count += usize::from(ended);
    }
    count
}
