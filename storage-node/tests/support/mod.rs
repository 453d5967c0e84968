//! Helpers shared by the storage node's integration tests.

use std::path::{Path, PathBuf};

/// A small tmpfs mounted for a test: a real file system that fills up.
/// Mounting needs root, as CI runs; without it the test fails loudly.
pub struct TmpfsMount(PathBuf);

impl TmpfsMount {
    pub fn new(at: &Path, size: &str) -> Self {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root (CI runs as root)");
        Self(at.to_path_buf())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
