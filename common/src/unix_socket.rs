//! Binding the Unix sockets the frontends serve block devices on (NBD,
//! vhost-user-blk). Neither protocol authenticates its client, so the
//! socket's file mode is the access control: owner and group only.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// Binds a Unix socket at `path` with mode 0660, after [`remove_stale`]:
/// a second frontend cannot steal a VM's disk or delete a file. (The mode
/// is set just after the bind: until then the socket has the umask's,
/// which under the usual 022 lets no one else connect.)
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    remove_stale(path)?;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Makes way for a new socket at `path`: a socket left by a process that
/// died (connecting is refused) is removed. A live one (another process
/// serves it), one this process may not connect to (another user's: it
/// may be live), or anything that is not a socket is an error.
pub fn remove_stale(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                let served = format!("{} is served by another process", path.display());
                Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, served))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            Err(e) => Err(e),
        },
        Ok(_) => {
            let exists = format!("{} exists and is not a socket", path.display());
            Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, exists))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_or_a_file_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.sock");
        let live = bind(&path).expect("first bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "owner and group only");
        let err = bind(&path).expect_err("a live socket is not taken over");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(live);
        bind(&path).expect("a stale socket is replaced");
        let file = dir.path().join("f");
        std::fs::write(&file, b"keep").expect("file");
        let err = bind(&file).expect_err("a file is not a socket");
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&file).expect("read"), b"keep", "the file is left alone");
    }
}
