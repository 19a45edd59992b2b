//! Retiring segment files that a reader may still be reading.
//!
//! A read lists segments in one catalog read transaction and opens their files afterwards, without
//! any lock against writers; compaction, which runs beside reads and applies, replaces segments.
//! So a replaced file is not deleted at once: it is retired, and deleted when no read that began
//! before the replacement is alive.
//!
//! Reads pin the current epoch before opening their catalog reader (`Store::pin`). An install
//! starts a new epoch and retires its old files against the one it ends. Each epoch keeps the next
//! one alive, so a pin of any earlier epoch keeps every later retirement's files; once the last
//! such pin is dropped, the ended epoch is gone and the files are deleted at the next sweep (every
//! install and every pin sweeps). A crash leaves retired files uncatalogued, and `Store::open`
//! removes them.

use super::segment;
use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// One epoch of the catalog's segments.
#[derive(Default)]
pub(super) struct Epoch {
    next: OnceLock<Arc<Epoch>>,
}

/// Held by a read for as long as it reads segment files.
#[derive(Clone)]
pub struct Pin {
    _epoch: Arc<Epoch>,
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin")
    }
}

pub(super) struct Retired {
    disk: Arc<dyn sus_disk::Disk>,
    current: Mutex<Arc<Epoch>>,
    /// Files waiting for the epoch they were retired against to end.
    files: Mutex<Vec<(Weak<Epoch>, Vec<PathBuf>)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Retired {
    pub(super) fn new(disk: Arc<dyn sus_disk::Disk>) -> Retired {
        Retired {
            disk,
            current: Mutex::default(),
            files: Mutex::default(),
        }
    }

    /// Pins the current segment files: take it before the catalog reader whose segments are read.
    pub(super) fn pin(&self) -> Pin {
        // A sweep here cannot fail a read: a failed deletion is retried at the next sweep.
        if let Err(e) = self.sweep() {
            tracing::warn!("deleting retired segment files: {e}");
        }
        Pin {
            _epoch: lock(&self.current).clone(),
        }
    }

    /// Retires `files`, replaced by a catalog commit that has just happened (called under the
    /// writer lock, after the commit): they go once every earlier pin is dropped.
    pub(super) fn retire(&self, files: Vec<PathBuf>) -> Result<()> {
        let ended = self.advance();
        lock(&self.files).push((ended, files));
        self.sweep()
    }

    /// Starts a new epoch (under the writer lock, after a commit that replaced what reads may
    /// hold) and returns the one it ends: alive while a pin of it or of an earlier one is.
    pub(super) fn advance(&self) -> Weak<Epoch> {
        let mut current = lock(&self.current);
        let next = Arc::new(Epoch::default());
        // Only this function sets `next`, once per epoch, under the writer lock.
        let _ = current.next.set(next.clone());
        Arc::downgrade(&std::mem::replace(&mut *current, next))
    }

    /// Deletes the retired files no pin can reach any more.
    pub(super) fn sweep(&self) -> Result<()> {
        let due: Vec<PathBuf> = {
            let mut files = lock(&self.files);
            if files.is_empty() {
                return Ok(());
            }
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut *files)
                .into_iter()
                .partition(|(epoch, _)| epoch.strong_count() == 0);
            *files = kept;
            gone.into_iter().flat_map(|(_, paths)| paths).collect()
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut failed = Vec::new();
        let mut first_error = None;
        for path in due {
            match self.disk.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_error.get_or_insert(Error::io(&path, e));
                    failed.push(path);
                    continue;
                }
            }
            if let Some(dir) = path.parent()
                && !dirs.iter().any(|d| d == dir)
            {
                dirs.push(dir.to_path_buf());
            }
        }
        if !failed.is_empty() {
            // Due again at the next sweep; an orphan at worst, which open removes.
            lock(&self.files).push((Weak::new(), failed));
        }
        for dir in dirs {
            segment::sync_dir(self.disk.as_ref(), &dir)?;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Retired files not deleted yet.
    pub(super) fn waiting(&self) -> usize {
        lock(&self.files).iter().map(|(_, f)| f.len()).sum()
    }
}
