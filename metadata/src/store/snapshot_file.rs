//! Snapshot files: the state machine's pairs streamed to and from a file,
//! so building, sending, receiving and installing a snapshot never holds
//! the state in memory.
//!
//! Layout (`<data_dir>/snapshots/<name>.snap`, little-endian):
//!
//! ```text
//! magic "CHUYISNP" (8) | format version u32 = 1
//! per pair, in key order: key_len u32 | key | value_len u32 | value
//! end: u32::MAX | pair count u64 | crc32c u32 of every byte before it
//! ```
//!
//! A file is whole only with its end and a matching crc32c; a received
//! file is checked whole before anything of it is installed.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use chuyi_common::checksum::crc32c_append;
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use super::error::{StoreError, StoreResult};
use super::rocks::Pair;

const MAGIC: &[u8; 8] = b"CHUYISNP";
const VERSION: u32 = 1;
const END: u32 = u32::MAX;
/// Longest key or value a snapshot may carry (RocksDB values here are
/// records of at most a few MiB; this refuses a garbage length before
/// allocating for it).
const FIELD_MAX_BYTES: u32 = 64 << 20;

/// The snapshot files of one member.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFiles {
    dir: PathBuf,
    /// Held by a build from its view to its commit and the removal of
    /// older files, by an install, and by a read of the current snapshot
    /// from its name to its open file: openraft builds on a task of its
    /// own, beside installs and reads, and each deletes what the others
    /// may be about to name.
    pub(crate) lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl SnapshotFiles {
    pub(crate) fn open(dir: PathBuf) -> StoreResult<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| io("creating the snapshot directory", e))?;
        Ok(Self { dir, lock: Default::default() })
    }

    /// Renames a received file to `name`, durably, so it outlives the
    /// clean-up of unfinished receptions at the next start.
    pub(crate) fn adopt(&self, received: &str, name: &str) -> StoreResult<()> {
        std::fs::rename(self.path(received), self.path(name)).map_err(|e| io("naming a received snapshot", e))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io("syncing the snapshot directory", e))
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `pairs` (in key order) to `name`, durably; returns how many.
    pub(crate) fn write(&self, name: &str, pairs: impl Iterator<Item = StoreResult<Pair>>) -> StoreResult<u64> {
        let tmp = self.path(&format!("{name}.tmp"));
        let file = File::create(&tmp).map_err(|e| io("creating a snapshot file", e))?;
        let mut w = Writer { out: BufWriter::with_capacity(1 << 20, file), crc: 0 };
        w.put(MAGIC)?;
        w.put(&VERSION.to_le_bytes())?;
        let mut count = 0u64;
        for pair in pairs {
            let (key, value) = pair?;
            w.field(&key)?;
            w.field(&value)?;
            count += 1;
        }
        w.put(&END.to_le_bytes())?;
        w.put(&count.to_le_bytes())?;
        let crc = w.crc;
        let mut out = w.out;
        out.write_all(&crc.to_le_bytes()).map_err(|e| io("writing a snapshot", e))?;
        let file = out.into_inner().map_err(|e| io("writing a snapshot", e.into_error()))?;
        file.sync_all().map_err(|e| io("syncing a snapshot", e))?;
        std::fs::rename(&tmp, self.path(name)).map_err(|e| io("naming a snapshot", e))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io("syncing the snapshot directory", e))?;
        Ok(count)
    }

    /// The pairs of `name`, one at a time. Check the file whole first
    /// ([`Self::verify`]): a reader that meets damage says so only there.
    pub(crate) fn pairs(&self, name: &str) -> StoreResult<Pairs> {
        let file = File::open(self.path(name)).map_err(|e| io("opening a snapshot", e))?;
        let mut r = Pairs { r: BufReader::with_capacity(1 << 20, file), crc: 0, count: 0, ended: None };
        let mut head = [0u8; 12];
        r.fill(&mut head)?;
        if &head[..8] != MAGIC || head[8..12] != VERSION.to_le_bytes() {
            return Err(damaged(format!("{name}: not a format version {VERSION} snapshot")));
        }
        Ok(r)
    }

    /// Reads `name` through to its end and checks its count and crc32c.
    pub(crate) fn verify(&self, name: &str) -> StoreResult<u64> {
        let mut pairs = self.pairs(name)?;
        for pair in pairs.by_ref() {
            pair?;
        }
        pairs.finish()
    }

    /// Deletes every snapshot file but `keep` and those being received.
    pub(crate) fn remove_others(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != keep && !name.starts_with(RECEIVING_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Deletes files of receptions a restart cut short, but `keep` (the
    /// one an install cut short is finished from).
    pub(crate) fn remove_receiving(&self, keep: Option<&str>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(RECEIVING_PREFIX) && Some(name.as_str()) != keep {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Names of files being received start so, until installed.
pub(crate) const RECEIVING_PREFIX: &str = "receiving-";

struct Writer {
    out: BufWriter<File>,
    crc: u32,
}

impl Writer {
    fn put(&mut self, bytes: &[u8]) -> StoreResult<()> {
        self.crc = crc32c_append(self.crc, bytes);
        self.out.write_all(bytes).map_err(|e| io("writing a snapshot", e))
    }

    fn field(&mut self, bytes: &[u8]) -> StoreResult<()> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&l| l <= FIELD_MAX_BYTES)
            .ok_or_else(|| StoreError::Invariant(format!("a {}-byte field cannot go into a snapshot", bytes.len())))?;
        self.put(&len.to_le_bytes())?;
        self.put(bytes)
    }
}

/// The pairs of a snapshot file, in order.
pub(crate) struct Pairs {
    r: BufReader<File>,
    crc: u32,
    count: u64,
    /// The count the file's end gives, once read.
    ended: Option<u64>,
}

impl Pairs {
    fn fill(&mut self, buf: &mut [u8]) -> StoreResult<()> {
        self.r.read_exact(buf).map_err(|e| damaged(format!("snapshot cut short: {e}")))?;
        self.crc = crc32c_append(self.crc, buf);
        Ok(())
    }

    fn u32(&mut self) -> StoreResult<u32> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn bytes(&mut self, len: u32) -> StoreResult<Vec<u8>> {
        if len > FIELD_MAX_BYTES {
            return Err(damaged(format!("a field of {len} bytes")));
        }
        let mut b = vec![0u8; len as usize];
        self.fill(&mut b)?;
        Ok(b)
    }

    fn next_pair(&mut self) -> StoreResult<Option<Pair>> {
        if self.ended.is_some() {
            return Ok(None);
        }
        let len = self.u32()?;
        if len == END {
            let mut b = [0u8; 8];
            self.fill(&mut b)?;
            self.ended = Some(u64::from_le_bytes(b));
            return Ok(None);
        }
        let key = self.bytes(len)?;
        let len = self.u32()?;
        let value = self.bytes(len)?;
        self.count += 1;
        Ok(Some((key, value)))
    }

    /// After the last pair: the file's count and crc32c must match what
    /// was read, and nothing may follow.
    pub(crate) fn finish(mut self) -> StoreResult<u64> {
        let expected = self.crc;
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b).map_err(|e| damaged(format!("no crc32c at the end: {e}")))?;
        if u32::from_le_bytes(b) != expected {
            return Err(damaged("crc32c mismatch".into()));
        }
        if self.ended != Some(self.count) {
            return Err(damaged(format!("{} pairs read, the end says {:?}", self.count, self.ended)));
        }
        let mut rest = [0u8; 1];
        if self.r.read(&mut rest).map_err(|e| io("reading a snapshot", e))? != 0 {
            return Err(damaged("bytes after the end".into()));
        }
        Ok(self.count)
    }
}

impl Iterator for Pairs {
    type Item = StoreResult<Pair>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_pair().transpose()
    }
}

fn io(what: &'static str, e: std::io::Error) -> StoreError {
    StoreError::Io { what, source: e }
}

fn damaged(problem: String) -> StoreError {
    StoreError::DamagedSnapshot(problem)
}

/// openraft's snapshot data: an open snapshot file and where it is, which
/// install needs to find the file again.
#[derive(Debug)]
pub struct SnapshotFile {
    pub(crate) path: PathBuf,
    file: tokio::fs::File,
}

impl SnapshotFile {
    pub(crate) async fn open(path: PathBuf) -> std::io::Result<Self> {
        let file = tokio::fs::File::open(&path).await?;
        Ok(Self { path, file })
    }

    /// A new file to receive into.
    pub(crate) async fn create(path: PathBuf) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).await?;
        Ok(Self { path, file })
    }

    /// Waits for every write to finish and reach stable storage.
    pub(crate) async fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_all().await
    }

    /// Its name in `files`, copying it there first when it is another
    /// member's file (a snapshot handed over whole, as openraft's storage
    /// suite does, rather than received through this member's files).
    pub(crate) async fn name_in(&mut self, files: &SnapshotFiles, receiving: String) -> std::io::Result<String> {
        if self.path.parent() == Some(files.dir.as_path()) {
            if let Some(name) = self.path.file_name() {
                return Ok(name.to_string_lossy().into_owned());
            }
        }
        use tokio::io::AsyncSeekExt;
        self.file.seek(std::io::SeekFrom::Start(0)).await?;
        let mut copy = Self::create(files.path(&receiving)).await?;
        tokio::io::copy(&mut self.file, &mut copy.file).await?;
        copy.sync().await?;
        Ok(receiving)
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: std::io::SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_damage_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = SnapshotFiles::open(dir.path().to_path_buf()).expect("dir");
        let pairs: Vec<Pair> =
            (0u32..1000).map(|i| (i.to_be_bytes().to_vec(), vec![i as u8; (i % 37) as usize])).collect();
        let n = files.write("a.snap", pairs.clone().into_iter().map(Ok)).expect("written");
        assert_eq!(n, 1000);
        assert_eq!(files.verify("a.snap").expect("whole"), 1000);
        let back: Vec<Pair> = files.pairs("a.snap").expect("open").collect::<StoreResult<_>>().expect("read");
        assert_eq!(back, pairs);

        let path = files.path("a.snap");
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[100] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert!(files.verify("a.snap").is_err(), "a flipped bit");
        bytes[100] ^= 1;
        std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("write");
        assert!(files.verify("a.snap").is_err(), "cut short");
        std::fs::write(&path, b"CHUYISNP\x02\0\0\0").expect("write");
        assert!(files.verify("a.snap").is_err(), "another version");
    }
}
