//! Opening a disk at start: find or create its file, format it when it is
//! new, check its superblock, and load its slot table.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chuyi_common::buf::AlignedBuf;
use chuyi_common::ids::{DeviceClass, DiskId};
use chuyi_common::secret::fill_random;

use super::disk::{DiskStore, Index};
use super::error::OpenError;
use super::journal::Journal;
use crate::format::layout::Layout;
use crate::format::slot_table::{SlotEntry, ENTRY_BYTES};
use crate::format::superblock::{Superblock, SUPERBLOCK_BYTES};
use crate::io::{open_engine, Engine, EngineKind, EngineTuning, IoEngine};

/// The file a directory disk keeps its chunks in.
pub const DISK_FILE_NAME: &str = "chuyi-disk.img";

/// What the config says about one disk.
#[derive(Clone, Debug)]
pub struct DiskSpec {
    pub id: DiskId,
    pub class: DeviceClass,
    /// A directory (created if missing), a regular file or a block device.
    pub path: PathBuf,
    /// Size of the disk file to create; needed for a new directory disk.
    pub capacity_bytes: Option<u64>,
    pub chunk_size: u64,
    pub engine: EngineKind,
    pub tuning: EngineTuning,
}

/// Opens (formatting if new) the disk `spec` describes.
pub async fn open_disk(spec: &DiskSpec) -> Result<DiskStore, OpenError> {
    open_disk_wrapped(spec, |engine| engine).await
}

/// Like [`open_disk`], with the engine passed through `wrap` first: how
/// tests put a [`crate::io::fault::FaultEngine`] under a real disk.
pub async fn open_disk_wrapped(
    spec: &DiskSpec,
    wrap: impl FnOnce(Arc<dyn IoEngine>) -> Arc<dyn IoEngine>,
) -> Result<DiskStore, OpenError> {
    let io_err = |source| OpenError::Io { disk: spec.id, path: spec.path.display().to_string(), source };
    let (file_path, is_dir) = resolve(spec)?;
    let (file, direct_io) = open_file(&file_path, is_dir).map_err(io_err)?;
    let mut size = file_size(&file).map_err(io_err)?;
    if size == 0 {
        let capacity = spec
            .capacity_bytes
            .ok_or_else(|| OpenError::NoCapacity { disk: spec.id, path: spec.path.display().to_string() })?;
        file.set_len(capacity).map_err(io_err)?;
        size = capacity;
    }
    let first = read_block(&file, 0).map_err(io_err)?;
    let engine = Engine::new(wrap(open_engine(spec.engine, file, &spec.tuning).map_err(io_err)?));
    let superblock = if first.iter().all(|&b| b == 0) {
        let usable = spec.capacity_bytes.map_or(size, |c| c.min(size));
        format(spec, &engine, usable).await?
    } else {
        check_superblock(spec, &first)?
    };
    let entries = load_slot_table(&engine, &superblock.layout).await.map_err(io_err)?;
    // Before anything reads a checksum block: the journal may hold newer
    // checksums than they do.
    let journal = match superblock.layout.journal_blocks {
        0 => None,
        _ => Some(Journal::open(engine.clone(), superblock.layout, superblock.disk_uuid).await.map_err(io_err)?),
    };
    tracing::info!(
        disk = spec.id,
        path = %file_path.display(),
        engine = engine.name(),
        direct_io,
        slots = superblock.layout.slot_count,
        "disk open"
    );
    Ok(DiskStore::new(
        spec.id,
        spec.class,
        file_path,
        engine,
        superblock.layout,
        direct_io,
        Index::from_entries(entries),
    )
    .with_journal(journal))
}

/// The file to open, and whether it lives in a directory we manage.
fn resolve(spec: &DiskSpec) -> Result<(PathBuf, bool), OpenError> {
    let path_str = spec.path.display().to_string();
    let io_err = |source| OpenError::Io { disk: spec.id, path: path_str.clone(), source };
    match std::fs::metadata(&spec.path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&spec.path).map_err(io_err)?;
            Ok((spec.path.join(DISK_FILE_NAME), true))
        }
        Err(e) => Err(io_err(e)),
        Ok(m) if m.is_dir() => Ok((spec.path.join(DISK_FILE_NAME), true)),
        Ok(m) if m.is_file() || m.file_type().is_block_device() => Ok((spec.path.clone(), false)),
        Ok(_) => Err(OpenError::Unsupported { disk: spec.id, path: path_str, what: "neither a file nor a device" }),
    }
}

/// Opens with O_DIRECT where the file system takes it (checked by a real
/// read, since some accept the flag and fail the I/O), else buffered.
fn open_file(path: &Path, create: bool) -> io::Result<(File, bool)> {
    let open = |flags: i32| OpenOptions::new().read(true).write(true).create(create).custom_flags(flags).open(path);
    if let Ok(file) = open(libc::O_DIRECT) {
        let mut probe = AlignedBuf::zeroed(SUPERBLOCK_BYTES);
        match file.read_at(&mut probe, 0) {
            Ok(_) => return Ok((file, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((open(0)?, false))
}

fn file_size(file: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    // Seeking to the end gives a block device's size as well as a file's.
    let mut f = file;
    f.seek(SeekFrom::End(0))
}

/// Block `n` read synchronously (before the engine exists).
fn read_block(file: &File, at: u64) -> io::Result<AlignedBuf> {
    let mut buf = AlignedBuf::zeroed(SUPERBLOCK_BYTES);
    let n = file.read_at(&mut buf, at)?;
    buf[n..].fill(0);
    Ok(buf)
}

async fn format(spec: &DiskSpec, engine: &Engine, capacity_bytes: u64) -> Result<Superblock, OpenError> {
    let path = spec.path.display().to_string();
    let layout = Layout::for_capacity(capacity_bytes, spec.chunk_size).map_err(|source| OpenError::Format {
        disk: spec.id,
        path: path.clone(),
        source,
    })?;
    let mut disk_uuid = [0u8; 16];
    fill_random(&mut disk_uuid);
    let sb = Superblock { disk_uuid, disk_id: spec.id, class: spec.class, capacity_bytes, layout };
    let io_err = |source| OpenError::Io { disk: spec.id, path: path.clone(), source };
    // A block device may hold anything: the slot table must start as zeros.
    let table = AlignedBuf::zeroed(layout.slot_table_bytes() as usize).freeze();
    engine.write(layout.slot_table_offset, table).await.map_err(io_err)?;
    Journal::format(engine, &layout, &sb.disk_uuid).await.map_err(io_err)?;
    engine.sync().await.map_err(io_err)?;
    // The superblock last: a disk is formatted once it names itself.
    engine.write(0, AlignedBuf::copy_from(&sb.encode()).freeze()).await.map_err(io_err)?;
    engine.sync().await.map_err(io_err)?;
    tracing::info!(disk = spec.id, %path, slots = layout.slot_count, "formatted new disk");
    Ok(sb)
}

fn check_superblock(spec: &DiskSpec, block: &[u8]) -> Result<Superblock, OpenError> {
    let path = spec.path.display().to_string();
    let mut raw = [0u8; SUPERBLOCK_BYTES];
    raw.copy_from_slice(&block[..SUPERBLOCK_BYTES]);
    let sb =
        Superblock::decode(&raw).map_err(|source| OpenError::Format { disk: spec.id, path: path.clone(), source })?;
    if sb.disk_id != spec.id || sb.class != spec.class {
        return Err(OpenError::Mismatch {
            disk: spec.id,
            path,
            found: sb.disk_id,
            class: sb.class.to_string(),
            want: spec.class.to_string(),
        });
    }
    Ok(sb)
}

async fn load_slot_table(engine: &Engine, layout: &Layout) -> io::Result<Vec<SlotEntry>> {
    let table = engine.read(layout.slot_table_offset, layout.slot_table_bytes() as usize).await?;
    Ok(table.chunks_exact(ENTRY_BYTES).take(layout.slot_count as usize).map(SlotEntry::decode).collect())
}
