//! The write buffer of a Raft replica's store: rows of applied changes kept in memory, in
//! segments that are catalogued but not yet written, until a checkpoint ([`super::flush`]) writes
//! them as segment files.
//!
//! The Raft log is their write-ahead log: a change is applied only once its entry is on a
//! majority's disks, and the catalog is made durable only at checkpoints, when nothing is
//! buffered. After a crash the catalog is that of the last checkpoint, and openraft applies the
//! entries after it again, which buffers their rows again.
//!
//! One open segment per (dataset, provider) takes the rows of every change until it is sealed;
//! a change's rows for it are one [`Piece`], at the segment rows it is given when applied, so
//! the record index points at final positions and a flush re-keys nothing. A sealed segment
//! takes no more pieces; once its file is installed it is kept for the reads that listed it as
//! buffered (until their pins are gone, as for retired files) and then dropped.

use super::retire::Epoch;
use crate::model::Dataset;
use arrow::array::RecordBatch;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// When a replica's buffered rows are written, and how much a node may buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSettings {
    /// A store is checkpointed once its buffer holds this many bytes of decoded rows.
    pub store_bytes: u64,
    /// ... or once its oldest buffered row is this old.
    pub max_age: Duration,
}

impl Default for BufferSettings {
    fn default() -> BufferSettings {
        BufferSettings {
            store_bytes: 128 << 20,
            max_age: Duration::from_secs(30),
        }
    }
}

/// Bytes buffered by every store of a node, and the most they may hold: applies wait above it
/// (never fail) while the stores' flushers write their buffers out.
pub struct BufferBudget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

impl BufferBudget {
    pub fn new(limit: u64) -> Arc<BufferBudget> {
        Arc::new(BufferBudget {
            limit,
            used: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    pub fn used(&self) -> u64 {
        *lock(&self.used)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn over(&self) -> bool {
        self.used() > self.limit
    }

    fn add(&self, bytes: u64) {
        *lock(&self.used) += bytes;
    }

    fn release(&self, bytes: u64) {
        let mut used = lock(&self.used);
        *used = used.saturating_sub(bytes);
        self.freed.notify_all();
    }

    /// Waits while the node's buffers are over the limit (the flushers are writing them out).
    pub(super) fn wait_below_limit(&self) {
        let mut used = lock(&self.used);
        while *used > self.limit {
            used = self
                .freed
                .wait_timeout(used, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A change's rows of one buffered segment.
pub struct Piece {
    /// First segment row.
    pub start: u32,
    /// The change's version.
    pub version: u64,
    /// (`YYYY-MM`, rows) runs, in row order.
    pub months: Vec<(String, u32)>,
    /// The rows, in the stored schema.
    pub batch: RecordBatch,
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Piece")
            .field("start", &self.start)
            .field("rows", &self.rows())
            .field("version", &self.version)
            .finish()
    }
}

impl Piece {
    pub fn rows(&self) -> u32 {
        self.batch.num_rows() as u32
    }

    fn bytes(&self) -> u64 {
        self.batch.get_array_memory_size() as u64
    }
}

/// The pieces of a buffered segment a read sees.
pub type Pieces = Arc<[Arc<Piece>]>;

struct Segment {
    dataset: Dataset,
    provider: String,
    pieces: Vec<Arc<Piece>>,
    rows: u32,
}

/// A sealed segment handed to a flush: it takes no more pieces.
pub(super) struct Sealed {
    pub id: u64,
    pub dataset: Dataset,
    pub provider: String,
    pub pieces: Vec<Arc<Piece>>,
}

/// Segments installed by one checkpoint, and the epoch it ended.
type Installed = (Weak<Epoch>, Vec<(u64, Pieces)>);

#[derive(Default)]
struct State {
    /// (dataset, provider) → its open segment.
    open: HashMap<(Dataset, String), u64>,
    /// Open and sealed segments, until their files are installed.
    segments: BTreeMap<u64, Segment>,
    /// Installed segments, kept while a pin from before their install may read them.
    flushed: Vec<Installed>,
    bytes: u64,
    oldest: Option<Instant>,
    /// Set when the store is dropped: its flusher ends.
    closed: bool,
}

/// See the module documentation.
pub struct WriteBuffer {
    state: Mutex<State>,
    wake: Condvar,
    pub(super) settings: BufferSettings,
    pub(super) budget: Arc<BufferBudget>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WriteBuffer {
    pub(super) fn new(settings: BufferSettings, budget: Arc<BufferBudget>) -> WriteBuffer {
        WriteBuffer {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            settings,
            budget,
        }
    }

    /// The open segment of (dataset, provider) and its next row, if one is open.
    pub(super) fn open_segment(&self, dataset: Dataset, provider: &str) -> Option<(u64, u32)> {
        let state = lock(&self.state);
        let id = *state.open.get(&(dataset, provider.to_string()))?;
        Some((id, state.segments.get(&id)?.rows))
    }

    /// Adds a change's pieces (under the writer lock, before the catalog commit that names
    /// them: a read at an earlier version skips them by version). A piece whose segment is not
    /// open opens it.
    pub(super) fn add(&self, pieces: Vec<(u64, Dataset, String, Piece)>) {
        let mut state = lock(&self.state);
        for (id, dataset, provider, piece) in pieces {
            let bytes = piece.bytes();
            state.bytes += bytes;
            self.budget.add(bytes);
            state.oldest.get_or_insert_with(Instant::now);
            let seg = state.segments.entry(id).or_insert_with(|| Segment {
                dataset,
                provider: provider.clone(),
                pieces: Vec::new(),
                rows: 0,
            });
            debug_assert_eq!(seg.rows, piece.start, "pieces are contiguous");
            seg.rows += piece.rows();
            seg.pieces.push(Arc::new(piece));
            state.open.insert((dataset, provider), id);
        }
        if state.bytes >= self.settings.store_bytes || self.budget.over() {
            self.wake.notify_all();
        }
    }

    /// Removes the pieces of a change whose catalog commit failed.
    pub(super) fn remove_version(&self, version: u64) {
        let mut state = lock(&self.state);
        let mut freed = 0;
        for seg in state.segments.values_mut() {
            while seg.pieces.last().is_some_and(|p| p.version == version) {
                let p = seg.pieces.pop().expect("checked");
                seg.rows -= p.rows();
                freed += p.bytes();
            }
        }
        let empty: Vec<u64> = state
            .segments
            .iter()
            .filter(|(_, s)| s.pieces.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in empty {
            state.segments.remove(&id);
            state.open.retain(|_, v| *v != id);
        }
        state.bytes = state.bytes.saturating_sub(freed);
        self.budget.release(freed);
    }

    /// Gives the node's budget back without dropping the rows (a failed store keeps them for
    /// reads but must not hold other stores' applies).
    pub(super) fn release_budget(&self) {
        let mut state = lock(&self.state);
        self.budget.release(state.bytes);
        state.bytes = 0;
    }

    /// The pieces of buffered segment `id` with versions up to `version` (a prefix: versions
    /// grow); `None` if the store never buffered it or dropped it since.
    pub(super) fn pieces(&self, id: u64, version: u64) -> Option<Pieces> {
        let state = lock(&self.state);
        let all: &[Arc<Piece>] = match state.segments.get(&id) {
            Some(seg) => &seg.pieces,
            None => state
                .flushed
                .iter()
                .flat_map(|(_, segs)| segs.iter())
                .find(|(i, _)| *i == id)
                .map(|(_, p)| &p[..])?,
        };
        let n = all.partition_point(|p| p.version <= version);
        Some(all[..n].iter().cloned().collect())
    }

    /// Seals every open segment and returns the sealed segments not yet handed out.
    pub(super) fn seal_all(&self) -> Vec<Sealed> {
        let mut state = lock(&self.state);
        let open: Vec<u64> = state.open.drain().map(|(_, id)| id).collect();
        let mut out: Vec<Sealed> = open
            .into_iter()
            .filter_map(|id| {
                let seg = state.segments.get(&id)?;
                Some(Sealed {
                    id,
                    dataset: seg.dataset,
                    provider: seg.provider.clone(),
                    pieces: seg.pieces.clone(),
                })
            })
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }

    /// Ids of the segments still buffered (none after a checkpoint).
    pub(super) fn buffered(&self) -> Vec<u64> {
        lock(&self.state).segments.keys().copied().collect()
    }

    /// Marks segments installed as files: they leave the buffer's accounting at once, and
    /// their pieces once no pin of `epoch` (ended by the install) or earlier is alive.
    pub(super) fn installed(&self, ids: &[u64], epoch: Weak<Epoch>) {
        let mut state = lock(&self.state);
        let mut kept = Vec::with_capacity(ids.len());
        let mut freed = 0;
        for id in ids {
            if let Some(seg) = state.segments.remove(id) {
                freed += seg.pieces.iter().map(|p| p.bytes()).sum::<u64>();
                kept.push((*id, Pieces::from(seg.pieces)));
            }
        }
        state.bytes = state.bytes.saturating_sub(freed);
        if state.segments.is_empty() {
            state.oldest = None;
        }
        state.flushed.push((epoch, kept));
        state.flushed.retain(|(e, _)| e.strong_count() > 0);
        self.budget.release(freed);
    }

    /// Forgets everything (the store is being replaced by a snapshot's).
    pub(super) fn discard(&self) {
        let mut state = lock(&self.state);
        self.budget.release(state.bytes);
        *state = State {
            closed: state.closed,
            ..State::default()
        };
    }

    /// Bytes of decoded rows buffered.
    pub fn bytes(&self) -> u64 {
        lock(&self.state).bytes
    }

    pub(super) fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_all();
    }

    /// Waits until a checkpoint is due (`true`) or the store is gone (`false`).
    pub(super) fn wait_due(&self) -> bool {
        let mut state = lock(&self.state);
        loop {
            if state.closed {
                return false;
            }
            let pressure = self.budget.over() && state.bytes > 0;
            let old = state
                .oldest
                .is_some_and(|t| t.elapsed() >= self.settings.max_age);
            if state.bytes >= self.settings.store_bytes || pressure || old {
                return true;
            }
            state = self
                .wake
                .wait_timeout(state, Duration::from_millis(250))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for WriteBuffer {
    fn drop(&mut self) {
        let bytes = lock(&self.state).bytes;
        self.budget.release(bytes);
    }
}
