//! Checkpoints of a buffered store: its buffered segments written as files and the catalog made
//! durable in one commit (see [`super::buffer`]).
//!
//! Every durable catalog commit of a buffered store is a checkpoint, so the durable catalog never
//! names a row that only memory holds: after a crash the store is at its last checkpoint, and
//! the Raft log (never purged past a snapshot, and a snapshot is a checkpoint) holds every entry
//! after it.
//!
//! A checkpoint is two phases, so that applies wait only for a short one: the open segments are
//! sealed (under the writer lock, briefly) and written without it; then, under the writer lock,
//! what was buffered meanwhile is sealed and written too, and one durable transaction installs
//! every written segment (with whatever else the caller commits: a compaction's install).
//! One checkpoint at a time (`flushing`, taken before the writer lock).

use super::buffer::{BufferBudget, BufferSettings, Sealed, WriteBuffer};
use super::catalog::Batch;
use super::engine::Store;
use super::keys::{self, SegmentEntry};
use super::segment;
use crate::{Error, Result};
use arrow::compute::concat_batches;
use rayon::prelude::*;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use tracing::{debug, error};

/// Segments written by a checkpoint's first phase, waiting for its install.
#[derive(Default)]
pub(super) struct Staged {
    entries: Vec<SegmentEntry>,
}

impl Store {
    /// Buffers this store's applied rows in memory (a Raft replica's store: its log is the
    /// write-ahead log) and starts the thread that checkpoints it when `settings` say so.
    pub fn enable_buffer(
        self: &Arc<Store>,
        settings: BufferSettings,
        budget: Arc<BufferBudget>,
    ) -> Result<()> {
        let buffer = Arc::new(WriteBuffer::new(settings, budget));
        self.buffer
            .set(buffer.clone())
            .map_err(|_| Error::Internal("the write buffer is already enabled".into()))?;
        let store = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("sus-flush".into())
            .spawn(move || {
                while buffer.wait_due() {
                    let Some(store) = store.upgrade() else { break };
                    if let Err(e) = store.checkpoint() {
                        // The store is failed (it refuses writes until reopened): its rows stay
                        // readable, but must not hold the node's other stores' applies.
                        error!(dir = %store.dir.display(), "checkpoint failed: {e}");
                        buffer.release_budget();
                        break;
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("starting a flusher thread: {e}")))?;
        Ok(())
    }

    /// Bytes of rows buffered, if the store buffers.
    pub fn buffered_bytes(&self) -> Option<u64> {
        self.buffer.get().map(|b| b.bytes())
    }

    /// Writes every buffered row to segment files and makes the catalog durable; returns the
    /// segments written.
    pub fn checkpoint(&self) -> Result<usize> {
        let _one = self.lock_flushing();
        let staged = self.stage()?;
        let _writer = self.lock_writer();
        self.check_not_failed()?;
        self.commit_durable(staged, Batch::default())
    }

    pub(super) fn lock_flushing(&self) -> MutexGuard<'_, ()> {
        self.flushing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Phase one: seals the open segments and writes them (the caller holds `flushing`).
    pub(super) fn stage(&self) -> Result<Staged> {
        let Some(buffer) = self.buffer.get() else {
            return Ok(Staged::default());
        };
        let sealed = {
            let _writer = self.lock_writer();
            self.check_not_failed()?;
            buffer.seal_all()
        };
        let entries = self.write_sealed(&sealed);
        if entries.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        Ok(Staged { entries: entries? })
    }

    /// Phase two (the caller holds `flushing` and the writer lock): writes what was buffered
    /// since `staged`, and commits `ops` with every written segment's entry, durably.
    pub(super) fn commit_durable(&self, staged: Staged, mut ops: Batch) -> Result<usize> {
        let Some(buffer) = self.buffer.get() else {
            self.db.apply(ops, true)?;
            return Ok(0);
        };
        let committed = (|| {
            let mut entries = staged.entries;
            entries.extend(self.write_sealed(&buffer.seal_all())?);
            for e in &entries {
                ops.insert(keys::segment(e.dataset, e.id), e.encode()?);
            }
            let left = buffer.buffered();
            let written: BTreeSet<u64> = entries.iter().map(|e| e.id).collect();
            if let Some(id) = left.iter().find(|id| !written.contains(id)) {
                return Err(Error::Internal(format!(
                    "buffered segment {id} was not written by the checkpoint"
                )));
            }
            self.db.apply(ops, true)?;
            Ok(entries)
        })();
        let entries = match committed {
            Ok(entries) => entries,
            Err(e) => {
                self.failed.store(true, Ordering::SeqCst);
                return Err(e);
            }
        };
        self.generation.fetch_add(1, Ordering::SeqCst);
        // Memoised listings pin their epoch, and a pin keeps every later epoch's pieces.
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .made
            .clear();
        let ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
        buffer.installed(&ids, self.retired.advance());
        debug!(dir = %self.dir.display(), segments = ids.len(), "checkpoint");
        Ok(ids.len())
    }

    /// Writes sealed segments as files (in parallel: per-file costs dominate) and syncs their
    /// directories; returns their complete catalog entries.
    fn write_sealed(&self, sealed: &[Sealed]) -> Result<Vec<SegmentEntry>> {
        let entries = sealed
            .par_iter()
            .map(|s| self.write_one(s))
            .collect::<Result<Vec<_>>>()?;
        let dirs: BTreeSet<_> = entries
            .iter()
            .filter_map(|e| self.dir.join(&e.file).parent().map(|d| d.to_path_buf()))
            .collect();
        for dir in dirs {
            segment::sync_dir(self.disk.as_ref(), &dir)?;
        }
        Ok(entries)
    }

    fn write_one(&self, s: &Sealed) -> Result<SegmentEntry> {
        let schema = crate::schema::stored_schema(s.dataset);
        let batches: Vec<_> = s.pieces.iter().map(|p| p.batch.clone()).collect();
        let batch = concat_batches(&schema, &batches)?;
        let months: Vec<(String, u32)> = s.pieces.iter().flat_map(|p| p.months.clone()).collect();
        let runs: Vec<(u32, u64)> = s.pieces.iter().map(|p| (p.start, p.version)).collect();
        let file = segment::relative_path(s.dataset, &s.provider, s.id);
        let bytes =
            segment::write_batch(self.disk.as_ref(), &self.dir, &file, &batch, &months, false)?;
        Ok(SegmentEntry {
            id: s.id,
            dataset: s.dataset,
            provider: s.provider.clone(),
            months,
            rows: batch.num_rows() as u32,
            bytes,
            version: runs.last().map_or(0, |r| r.1),
            file,
            runs: if runs.len() == 1 { Vec::new() } else { runs },
        })
    }

    /// Forgets the buffer without writing it: the store is being replaced by a snapshot's.
    pub fn discard_buffer(&self) {
        if let Some(buffer) = self.buffer.get() {
            buffer.discard();
        }
    }
}
