//! Drills: reading a backup back from its target without touching any
//! volume. Every piece it names is fetched, opened (its envelope's tag
//! checked) and hashed again; the image hash is recomputed from those
//! hashes and compared with the manifest's. The result is stored beside
//! the backup (`drills/`) and shown by `chuyi backup list`.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;

use crate::catalog::Drill;
use crate::envelope::Kind;
use crate::error::BackupError;
use crate::lock::{Lock, LockKind};
use crate::manifest::{image_hash, Manifest};
use crate::repo::{drill_name, PieceId, Repo};
use crate::throttle::Throttle;

/// Checks backup `m`; `progress(done, total, bytes)` per piece.
pub async fn verify(
    repo: &Arc<Repo>,
    m: &Manifest,
    in_flight: usize,
    throttle: &Throttle,
    progress: &(dyn Fn(u64, u64, u64) + Sync),
) -> Result<Drill, BackupError> {
    let id = crate::manifest::new_id(chuyi_common::clock::unix_ms());
    let lock = Lock::acquire(repo, LockKind::Verify, Some(&m.volume), &id).await?;
    // Read again and recorded under the lock, so that a prune cannot
    // forget the backup between the caller's read and the drill, nor the
    // drill be recorded for a backup gone meanwhile.
    let result = async {
        let m = crate::catalog::manifest(repo, &m.volume, &m.id).await?;
        let drill = check(repo, &m, in_flight, throttle, progress).await?;
        let json = serde_json::to_vec(&drill).map_err(|e| BackupError::Invalid(e.to_string()))?;
        repo.put_sealed(Kind::Drill, &drill_name(&m.volume, &m.id), &json).await?;
        Ok(drill)
    }
    .await;
    lock.release().await;
    result
}

async fn check(
    repo: &Repo,
    m: &Manifest,
    in_flight: usize,
    throttle: &Throttle,
    progress: &(dyn Fn(u64, u64, u64) + Sync),
) -> Result<Drill, BackupError> {
    // Each distinct piece once, however many spans hold it.
    let mut spans_of: HashMap<PieceId, Vec<u64>> = HashMap::new();
    for (index, piece) in m.pieces.iter().enumerate() {
        if let Some(id) = piece {
            spans_of.entry(*id).or_default().push(index as u64);
        }
    }
    let ids: Vec<PieceId> = spans_of.keys().copied().collect();
    let total = ids.len() as u64;
    let mut reads = futures::stream::iter(ids)
        .map(|id| async move {
            let got = repo.get_piece(&id).await;
            if let Ok(plain) = &got {
                throttle.take(plain.len() as u64).await;
            }
            (id, got)
        })
        .buffer_unordered(in_flight.max(1));
    let mut drill = Drill {
        backup: m.id.clone(),
        checked_ms: 0,
        pieces_checked: 0,
        bytes_checked: 0,
        bad: Vec::new(),
        image_hash_ok: false,
    };
    // The ids as read back: a bad piece's spans hash as unknown.
    let mut read_back = m.pieces.clone();
    while let Some((id, got)) = reads.next().await {
        drill.pieces_checked += 1;
        match got {
            Ok(plain) => drill.bytes_checked += plain.len() as u64,
            Err(BackupError::Corrupt { why, .. }) => {
                for &span in &spans_of[&id] {
                    drill.bad.push((span, why.clone()));
                    read_back[span as usize] = Some([0xff; 32]);
                }
            }
            Err(other) => return Err(other),
        }
        progress(drill.pieces_checked, total, drill.bytes_checked);
    }
    drill.bad.sort();
    drill.image_hash_ok = image_hash(m.volume_bytes, &read_back) == m.image_hash;
    drill.checked_ms = chuyi_common::clock::unix_ms();
    Ok(drill)
}
