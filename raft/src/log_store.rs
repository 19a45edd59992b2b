//! The durable Raft log and vote of one group, in plain files that are really fsynced.
//!
//! ```text
//! <dir>/<first index:020>.log   append-only segments, rotated at `Options::segment_bytes` (64 MiB)
//!                               record: [u32 LE payload len][u32 LE crc32(payload)][payload]
//!                               payload: bincode of openraft::Entry<TypeConfig>; indexes contiguous
//! <dir>/state                   one record as above holding vote, committed, last purged log id;
//!                               replaced as state.tmp + fsync + rename + fsync(dir)
//! ```
//!
//! Durability argument: `append` writes its records and hands the segment to the store's sync
//! thread (`syncer.rs`), which `fdatasync`s it (and fsyncs the directory if the append created a
//! segment) and only then fires openraft's `LogFlushed` callback, so an acknowledged entry is on
//! disk. A segment is created only after the previous one was synced, so
//! only the tail of the last segment can hold unsynced (never acknowledged) bytes: recovery cuts a
//! torn record there with a warning (short, the file's last record, a zero tail, or a record with an
//! all-zero sector, as etcd's WAL judges), and treats a bad record anywhere else, or a hole in the
//! indexes, as corruption. The vote is durable before `save_vote` returns. Truncation deletes later
//! segments newest first, each unlink fsynced, before cutting the segment it ends in, so a crash
//! never leaves a hole. A purge records the new `last_purged` durably before deleting segments, so
//! recovery may finish an interrupted purge but never serves a purged entry. Any write or fsync
//! error poisons the store: every later call fails, and an fsync is never retried (the page cache
//! may already have dropped the dirty pages, so a retry that succeeds proves nothing).
//!
//! Writes run on the calling task under one mutex, which also serialises vote and log writes as
//! openraft requires; the fsync of appended entries runs on the sync thread, off the executor.
//! Truncation and purge first wait for every queued sync. A group whose state machine can replay
//! from its own durable point may take `Options::sync_committed = false`: openraft's committed id
//! is then kept in memory and written only with the next vote or purge (openraft raises a stale
//! committed id to the state machine's applied id at start, and learns the rest from its leader),
//! which takes two fsyncs off every commit.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::io::{self, BufReader, Read};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use sus_disk::{Disk, DiskFile, FileReader, OpenMode};

use crate::syncer::{Job, Poison, Syncer};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogId, LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use crate::{Error, NodeId, Result, StorageError, TypeConfig};

/// Default segment size before rotation.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

type Entry = openraft::Entry<TypeConfig>;
type Lid = LogId<NodeId>;

/// Bytes of a record header: payload length and crc32, both u32 LE.
const HEADER: usize = 8;
/// Torn-write detection granularity: a crash can leave a whole sector of a record unwritten (zero).
const SECTOR: u64 = 512;
const STATE_FILE: &str = "state";
const STATE_TMP: &str = "state.tmp";
const SEGMENT_EXT: &str = "log";
/// Recently appended entries are kept decoded: replication reads them right after the append.
const CACHE_ENTRIES: usize = 64;
const CACHE_BYTES: usize = 8 << 20;

/// Tuning of a [`LogStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// A segment is rotated once the next record would take it past this size (a single larger
    /// record gets a segment of its own).
    pub segment_bytes: u64,
    /// Whether `save_committed` is durable before it returns (true), or only remembered and
    /// written with the next vote or purge (false: for a state machine that needs no committed id
    /// to recover, as openraft's is optional).
    pub sync_committed: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            sync_committed: true,
        }
    }
}

/// The durable Raft log store of one group (openraft `RaftLogStorage`, storage v2).
///
/// Cheap to clone: clones share one store, and a clone is the log reader.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

/// What the `state` file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DurableState {
    vote: Option<Vote<NodeId>>,
    committed: Option<Lid>,
    last_purged: Option<Lid>,
}

struct Segment {
    path: PathBuf,
    /// Shared with the sync thread while a sync of it is queued.
    file: Arc<dyn DiskFile>,
    size: u64,
}

/// Where one record lives.
#[derive(Debug, Clone, Copy)]
struct Loc {
    /// Key (first index) of the segment.
    seg: u64,
    /// Offset of the record header.
    offset: u64,
    /// Payload length.
    len: u32,
    log_id: Lid,
}

struct Inner {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    segment_bytes: u64,
    sync_committed: bool,
    /// Segments by first index.
    segments: BTreeMap<u64, Segment>,
    /// Every record on disk, in index order, including purged ones at the head of a segment;
    /// `locs[i]` has index `base + i`. Reads never serve indexes `<= last_purged`.
    locs: VecDeque<Loc>,
    base: u64,
    state: DurableState,
    /// Contiguous tail of the log: (index, entry, encoded size).
    cache: VecDeque<(u64, Entry, usize)>,
    cache_bytes: usize,
    /// Set by the first failed write or fsync; the store refuses everything afterwards.
    failed: Poison,
    syncer: Syncer,
}

impl LogStore {
    /// Opens (creating if absent) the log store in `dir` with default options.
    pub fn open(dir: &Path) -> Result<LogStore> {
        LogStore::open_with(dir, Options::default())
    }

    /// Opens (creating if absent) the log store in `dir`, verifying every record and cutting a
    /// torn write at the tail of the last segment.
    pub fn open_with(dir: &Path, options: Options) -> Result<LogStore> {
        LogStore::open_on(sus_disk::real(), dir, options)
    }

    /// As [`LogStore::open_with`], on `disk` (a simulated one in the power-loss tests).
    pub fn open_on(disk: Arc<dyn Disk>, dir: &Path, options: Options) -> Result<LogStore> {
        let inner = Inner::open(disk, dir, options)?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// Bytes held by the segment files (purged entries at the head of a segment included).
    pub fn disk_usage(&self) -> u64 {
        self.lock().segments.values().map(|s| s.size).sum()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                // A panic in the middle of a write leaves the files in an unknown state.
                let guard = poisoned.into_inner();
                guard
                    .failed
                    .set("a thread panicked while writing the log".to_string());
                guard
            }
        }
    }
}

fn corruption(path: &Path, message: impl Into<String>) -> Error {
    Error::Corruption {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.{SEGMENT_EXT}"))
}

/// A record: header then payload.
fn frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::other(format!("record of {} bytes too large", payload.len())))?;
    let mut buf = Vec::with_capacity(HEADER + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf.extend_from_slice(payload);
    Ok(buf)
}

fn header(buf: &[u8]) -> (u32, u32) {
    let mut len = [0u8; 4];
    let mut crc = [0u8; 4];
    len.copy_from_slice(&buf[0..4]);
    crc.copy_from_slice(&buf[4..8]);
    (u32::from_le_bytes(len), u32::from_le_bytes(crc))
}

/// One record read during recovery, or why it could not be.
enum Scanned {
    Ok {
        payload: Vec<u8>,
        len: u32,
    },
    /// The file ends inside the record.
    Short,
    /// Zero length or crc mismatch; the record spans `[offset, offset + HEADER + len)`.
    Bad {
        len: u32,
        reason: &'static str,
    },
}

fn read_state(disk: &dyn Disk, path: &Path) -> Result<DurableState> {
    let bytes = match disk.read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DurableState::default()),
        Err(e) => return Err(Error::io(path, e)),
    };
    if bytes.len() < HEADER {
        return Err(corruption(path, "state file shorter than its header"));
    }
    let (len, crc) = header(&bytes);
    let payload = &bytes[HEADER..];
    if len as usize != payload.len() || crc32fast::hash(payload) != crc {
        // The state file is replaced by an atomic rename, so it is never torn.
        return Err(corruption(path, "state file length or checksum mismatch"));
    }
    bincode::deserialize(payload).map_err(|e| corruption(path, format!("state file: {e}")))
}

/// A segment as found by recovery.
struct Found {
    first: u64,
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    size: u64,
    locs: Vec<Loc>,
}

impl Inner {
    fn open(disk: Arc<dyn Disk>, dir: &Path, options: Options) -> Result<Inner> {
        if !disk.exists(dir).map_err(|e| Error::io(dir, e))? {
            disk.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            // The new directory's own entry must be durable before anything in it counts.
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            disk.sync_dir(parent).map_err(|e| Error::io(parent, e))?;
        }
        let tmp = dir.join(STATE_TMP);
        if disk.exists(&tmp).map_err(|e| Error::io(&tmp, e))? {
            // A state write that never reached its rename: the old state stands.
            disk.remove_file(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        let state = read_state(disk.as_ref(), &dir.join(STATE_FILE))?;

        let mut names = BTreeMap::new();
        for path in disk.read_dir(dir).map_err(|e| Error::io(dir, e))? {
            if path.extension().and_then(|x| x.to_str()) != Some(SEGMENT_EXT) {
                continue;
            }
            let first = path
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|s| s.len() == 20)
                .and_then(|s| s.parse::<u64>().ok());
            match first {
                Some(first) => {
                    names.insert(first, path);
                }
                None => tracing::warn!(path = %path.display(), "ignoring a stray .log file"),
            }
        }

        let count = names.len();
        let mut found = Vec::with_capacity(count);
        for (i, (first, path)) in names.into_iter().enumerate() {
            found.push(scan_segment(disk.as_ref(), first, path, i + 1 == count)?);
        }

        let mut dir_changed = false;
        // An empty segment can only be the last one, created just before a crash (or emptied by a
        // torn-tail cut); it holds nothing, and the next append recreates it.
        if found.last().is_some_and(|f| f.locs.is_empty())
            && let Some(f) = found.pop()
        {
            disk.remove_file(&f.path)
                .map_err(|e| Error::io(&f.path, e))?;
            dir_changed = true;
        }
        if let Some(f) = found.iter().find(|f| f.locs.is_empty()) {
            return Err(corruption(&f.path, "empty segment before the last one"));
        }

        // Finish an interrupted purge: segments whose entries are all purged go. Holes among them
        // are harmless, since their entries are never served.
        let purged = state.last_purged.map(|p| p.index);
        let mut kept = Vec::with_capacity(found.len());
        for f in found {
            let last = f.locs.last().map_or(f.first, |l| l.log_id.index);
            if purged.is_some_and(|p| last <= p) {
                disk.remove_file(&f.path)
                    .map_err(|e| Error::io(&f.path, e))?;
                dir_changed = true;
            } else {
                kept.push(f);
            }
        }
        if dir_changed {
            disk.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
        }

        // What remains must run without a hole from just after the purge point.
        let mut next: Option<u64> = None;
        for f in &kept {
            let ok = match next {
                None => purged.is_none_or(|p| f.first <= p + 1),
                Some(n) => f.first == n,
            };
            if !ok {
                let want = next.or(purged.map(|p| p + 1)).unwrap_or(0);
                return Err(corruption(
                    &f.path,
                    format!(
                        "starts at index {} but the log continues at {want}",
                        f.first
                    ),
                ));
            }
            next = f.locs.last().map(|l| l.log_id.index + 1);
        }

        let failed = Poison::default();
        let syncer = Syncer::start(disk.clone(), failed.clone(), "raft-log-sync")
            .map_err(|e| Error::io(dir, e))?;
        let mut inner = Inner {
            disk,
            dir: dir.to_path_buf(),
            segment_bytes: options.segment_bytes.max(1),
            sync_committed: options.sync_committed,
            segments: BTreeMap::new(),
            locs: VecDeque::new(),
            base: 0,
            state,
            cache: VecDeque::new(),
            cache_bytes: 0,
            failed,
            syncer,
        };
        for f in kept {
            if inner.locs.is_empty() {
                inner.base = f.first;
            }
            inner.locs.extend(f.locs);
            inner.segments.insert(
                f.first,
                Segment {
                    path: f.path,
                    file: f.file,
                    size: f.size,
                },
            );
        }
        Ok(inner)
    }

    fn check(&self) -> std::result::Result<(), AnyError> {
        match self.failed.get() {
            Some(why) => Err(AnyError::error(format!("log store failed earlier: {why}"))),
            None => Ok(()),
        }
    }

    fn fail(&mut self, what: &str, e: &io::Error) {
        tracing::error!(dir = %self.dir.display(), "raft log store {what} failed, refusing all further I/O: {e}");
        self.failed.set(format!("{what}: {e}"));
    }

    fn purged_index(&self) -> Option<u64> {
        self.state.last_purged.map(|p| p.index)
    }

    fn last_loc(&self) -> Option<&Loc> {
        self.locs.back()
    }

    fn last_log_id(&self) -> Option<Lid> {
        match (self.last_loc(), self.state.last_purged) {
            (Some(l), Some(p)) if l.log_id.index <= p.index => Some(p),
            (Some(l), _) => Some(l.log_id),
            (None, p) => p,
        }
    }

    /// The index the next appended entry must have, if the log constrains it.
    fn next_index(&self) -> Option<u64> {
        let after_log = self.last_loc().map(|l| l.log_id.index + 1);
        let after_purge = self.purged_index().map(|p| p + 1);
        after_log.max(after_purge)
    }

    fn loc(&self, index: u64) -> Option<&Loc> {
        let i = index.checked_sub(self.base)?;
        self.locs.get(usize::try_from(i).ok()?)
    }

    fn write_state(&self, st: &DurableState) -> io::Result<()> {
        let payload = bincode::serialize(st).map_err(io::Error::other)?;
        let buf = frame(&payload)?;
        let tmp = self.dir.join(STATE_TMP);
        let f = self.disk.open(&tmp, OpenMode::CreateTruncate)?;
        f.write_all_at(&buf, 0)?;
        f.sync_all()?;
        drop(f);
        self.disk.rename(&tmp, &self.dir.join(STATE_FILE))?;
        self.disk.sync_dir(&self.dir)
    }

    /// Replaces the durable state; on failure the store is failed and the old state stays.
    fn update_state(&mut self, what: &str, f: impl FnOnce(&mut DurableState)) -> io::Result<()> {
        let mut st = self.state.clone();
        f(&mut st);
        if let Err(e) = self.write_state(&st) {
            self.fail(what, &e);
            return Err(e);
        }
        self.state = st;
        Ok(())
    }

    /// Writes the entries (not yet durable) and returns the sync they need: the segment the batch
    /// ended in, and whether a segment was created.
    fn append(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> io::Result<Option<(Arc<dyn DiskFile>, bool)>> {
        // Encode everything first: a batch that cannot be encoded writes nothing.
        let mut next = self.next_index();
        let mut records = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            if self.purged_index().is_some_and(|p| index <= p) {
                // Already covered by the purge point (openraft's suite appends such entries after
                // a purge). Storing it would only leave a hole before the next index.
                continue;
            }
            if let Some(n) = next
                && index != n
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("append of index {index}, expected {n}: the log must stay contiguous"),
                ));
            }
            next = Some(index + 1);
            let payload = bincode::serialize(&entry).map_err(io::Error::other)?;
            records.push((frame(&payload)?, entry));
        }

        let mut created = false;
        let mut dirty: Option<u64> = None;
        for (record, entry) in records {
            let index = entry.log_id.index;
            let rec_len = record.len() as u64;
            let follows = self.last_loc().is_some_and(|l| l.log_id.index + 1 == index);
            let active = match self.segments.last_key_value() {
                Some((&key, seg))
                    if follows && (seg.size == 0 || seg.size + rec_len <= self.segment_bytes) =>
                {
                    key
                }
                _ => {
                    // The previous segment must be durable before a newer one exists: recovery
                    // accepts torn bytes only at the tail of the last segment. Earlier batches'
                    // syncs may still be queued, so this one is done here, whatever they wrote.
                    if let Some((_, seg)) = self.segments.last_key_value() {
                        seg.file.sync_data()?;
                    }
                    let path = segment_path(&self.dir, index);
                    let file = self.disk.open(&path, OpenMode::CreateNew)?;
                    self.segments.insert(
                        index,
                        Segment {
                            path,
                            file,
                            size: 0,
                        },
                    );
                    created = true;
                    index
                }
            };
            let seg = self
                .segments
                .get_mut(&active)
                .ok_or_else(|| io::Error::other("active segment vanished"))?;
            let offset = seg.size;
            seg.file.write_all_at(&record, offset)?;
            seg.size += rec_len;
            dirty = Some(active);

            if self.locs.is_empty() {
                self.base = index;
            }
            self.locs.push_back(Loc {
                seg: active,
                offset,
                len: (record.len() - HEADER) as u32,
                log_id: entry.log_id,
            });
            self.cache_push(index, entry, record.len());
        }
        Ok(dirty
            .and_then(|key| self.segments.get(&key))
            .map(|seg| (seg.file.clone(), created)))
    }

    fn cache_push(&mut self, index: u64, entry: Entry, size: usize) {
        if self.cache.back().is_some_and(|(i, _, _)| i + 1 != index) {
            self.cache.clear();
            self.cache_bytes = 0;
        }
        self.cache.push_back((index, entry, size));
        self.cache_bytes += size;
        while self.cache.len() > CACHE_ENTRIES || self.cache_bytes > CACHE_BYTES {
            match self.cache.pop_front() {
                Some((_, _, s)) => self.cache_bytes -= s,
                None => break,
            }
        }
    }

    fn cache_retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.cache.retain(|(i, _, _)| keep(*i));
        self.cache_bytes = self.cache.iter().map(|(_, _, s)| s).sum();
    }

    fn truncate(&mut self, index: u64) -> io::Result<()> {
        self.syncer.wait_idle();
        self.cache_retain(|i| i < index);
        if self.last_loc().is_none_or(|l| l.log_id.index < index) {
            return Ok(());
        }
        // Newest first, each unlink durable before the next, so that a crash leaves a prefix.
        let doomed: Vec<u64> = self
            .segments
            .range(index..)
            .map(|(k, _)| *k)
            .rev()
            .collect();
        for key in doomed {
            if let Some(seg) = self.segments.remove(&key) {
                self.disk.remove_file(&seg.path)?;
                self.disk.sync_dir(&self.dir)?;
            }
        }
        if let Some(loc) = self.loc(index).copied()
            && let Some(seg) = self.segments.get_mut(&loc.seg)
        {
            seg.file.set_len(loc.offset)?;
            seg.file.sync_all()?;
            seg.size = loc.offset;
        }
        let keep = index.saturating_sub(self.base);
        self.locs
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
        Ok(())
    }

    /// Deletes the segments whose entries are all at or below the (already durable) purge point.
    fn delete_purged_segments(&mut self, index: u64) -> io::Result<()> {
        let keys: Vec<u64> = self.segments.keys().copied().collect();
        let last_index = self.last_loc().map(|l| l.log_id.index);
        let mut deleted = false;
        for (i, key) in keys.iter().enumerate() {
            let seg_last = match keys.get(i + 1) {
                Some(next) => next.checked_sub(1),
                None => last_index,
            };
            if seg_last.is_none_or(|l| l > index) {
                break;
            }
            if let Some(seg) = self.segments.remove(key) {
                self.disk.remove_file(&seg.path)?;
                deleted = true;
                while self.locs.front().is_some_and(|l| l.seg == *key) {
                    self.locs.pop_front();
                    self.base += 1;
                }
            }
        }
        if deleted {
            self.disk.sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn read_entry(&self, index: u64) -> std::result::Result<Entry, AnyError> {
        if let Some((first, _, _)) = self.cache.front()
            && let Some(i) = index.checked_sub(*first)
            && let Some((_, entry, _)) = usize::try_from(i).ok().and_then(|i| self.cache.get(i))
        {
            return Ok(entry.clone());
        }
        let loc = self
            .loc(index)
            .ok_or_else(|| AnyError::error(format!("no record of index {index}")))?;
        let seg = self
            .segments
            .get(&loc.seg)
            .ok_or_else(|| AnyError::error(format!("no segment {} for index {index}", loc.seg)))?;
        let mut buf = vec![0u8; HEADER + loc.len as usize];
        seg.file
            .read_exact_at(&mut buf, loc.offset)
            .map_err(|e| AnyError::new(&e))?;
        let (len, crc) = header(&buf);
        let payload = &buf[HEADER..];
        if len != loc.len || crc32fast::hash(payload) != crc {
            return Err(AnyError::error(format!(
                "{}: record of index {index} at offset {} changed on disk (checksum mismatch)",
                seg.path.display(),
                loc.offset
            )));
        }
        bincode::deserialize(payload).map_err(|e| AnyError::error(format!("decode entry: {e}")))
    }
}

/// Reads one segment, verifying every record. A bad record in the last segment is cut as a torn
/// write when it has the shape of one; anywhere else it is corruption.
fn scan_segment(disk: &dyn Disk, first: u64, path: PathBuf, is_last: bool) -> Result<Found> {
    let io_err = |e| Error::io(&path, e);
    let file = disk.open(&path, OpenMode::ReadWrite).map_err(io_err)?;
    let size = file.len().map_err(io_err)?;
    let mut reader = BufReader::with_capacity(1 << 20, FileReader::new(file.clone()));
    let mut locs: Vec<Loc> = Vec::new();
    let mut offset = 0u64;
    while offset < size {
        let scanned = scan_record(&mut reader, size - offset).map_err(io_err)?;
        let (torn, reason) = match scanned {
            Scanned::Ok { payload, len } => {
                locs.push(decode_loc(
                    &path,
                    first,
                    offset,
                    &payload,
                    len,
                    locs.last(),
                )?);
                offset += (HEADER + len as usize) as u64;
                continue;
            }
            Scanned::Short => (true, "record runs past the end of the file"),
            Scanned::Bad { len, reason } => (
                looks_torn(file.as_ref(), offset, len, size).map_err(io_err)?,
                reason,
            ),
        };
        if !(is_last && torn) {
            return Err(corruption(
                &path,
                format!(
                    "{reason} at offset {offset} (after {} good records)",
                    locs.len()
                ),
            ));
        }
        // Never acknowledged: the ack follows the fsync, and only the last segment's tail can
        // be unsynced.
        tracing::warn!(
            path = %path.display(),
            offset,
            cut = size - offset,
            "raft log: cutting a torn write at the tail ({reason})"
        );
        file.set_len(offset).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        return Ok(Found {
            first,
            path,
            file,
            size: offset,
            locs,
        });
    }
    Ok(Found {
        first,
        path,
        file,
        size,
        locs,
    })
}

/// Decodes a record that passed its checksum and checks that its index follows `prev`.
fn decode_loc(
    path: &Path,
    first: u64,
    offset: u64,
    payload: &[u8],
    len: u32,
    prev: Option<&Loc>,
) -> Result<Loc> {
    let entry: Entry = bincode::deserialize(payload).map_err(|e| {
        corruption(
            path,
            format!("record at offset {offset} has a valid checksum but does not decode: {e}"),
        )
    })?;
    let expected = prev.map_or(first, |l| l.log_id.index + 1);
    if entry.log_id.index != expected {
        return Err(corruption(
            path,
            format!(
                "record at offset {offset} has index {}, expected {expected}",
                entry.log_id.index
            ),
        ));
    }
    Ok(Loc {
        seg: first,
        offset,
        len,
        log_id: entry.log_id,
    })
}

fn scan_record(reader: &mut impl Read, remaining: u64) -> io::Result<Scanned> {
    if remaining < HEADER as u64 {
        return Ok(Scanned::Short);
    }
    let mut head = [0u8; HEADER];
    reader.read_exact(&mut head)?;
    let (len, crc) = header(&head);
    if len == 0 {
        // Entries never encode to nothing: this is a zero-filled header.
        return Ok(Scanned::Bad {
            len,
            reason: "zero-length record",
        });
    }
    if u64::from(len) > remaining - HEADER as u64 {
        return Ok(Scanned::Short);
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(Scanned::Bad {
            len,
            reason: "checksum mismatch",
        });
    }
    Ok(Scanned::Ok { payload, len })
}

/// Whether a bad record at `offset` has the shape of a torn write: it is the last record of the
/// file, or the rest of the file is zeros, or its part in one of the sectors it touches is
/// entirely zero (a sector the crash left unwritten, as etcd's WAL checks; unsynced bytes past
/// the synced end of a log file read as zeros when their sector never reached the device, and a
/// device may write back a file's later sectors before its earlier ones).
fn looks_torn(file: &dyn DiskFile, offset: u64, len: u32, size: u64) -> io::Result<bool> {
    let end = offset + HEADER as u64 + u64::from(len);
    if end >= size {
        return Ok(true);
    }
    // A zero-filled tail (zero headers included).
    if all_zero(file, offset, size)? {
        return Ok(true);
    }
    let mut sector = offset / SECTOR * SECTOR;
    while sector < end {
        if all_zero(file, sector.max(offset), (sector + SECTOR).min(end))? {
            return Ok(true);
        }
        sector += SECTOR;
    }
    Ok(false)
}

fn all_zero(file: &dyn DiskFile, from: u64, to: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; (to - from).min(1 << 20) as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

fn write_logs_err(e: &io::Error) -> StorageError {
    StorageIOError::write_logs(AnyError::new(e)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let inner = self.lock();
        inner.check().map_err(StorageIOError::read_logs)?;
        let live = inner.purged_index().map_or(0, |p| p + 1).max(inner.base);
        let stop = end.min(inner.base + inner.locs.len() as u64);
        let mut out = Vec::new();
        for index in start.max(live)..stop {
            let entry = inner
                .read_entry(index)
                .map_err(|e| StorageIOError::read_log_at_index(index, e))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> std::result::Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        inner.check().map_err(StorageIOError::read_logs)?;
        Ok(LogState {
            last_purged_log_id: inner.state.last_purged,
            last_log_id: inner.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> std::result::Result<(), StorageError> {
        let mut inner = self.lock();
        inner.check().map_err(StorageIOError::write_vote)?;
        inner
            .update_state("save vote", |st| st.vote = Some(*vote))
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> std::result::Result<Option<Vote<NodeId>>, StorageError> {
        let inner = self.lock();
        inner.check().map_err(StorageIOError::read_vote)?;
        Ok(inner.state.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<Lid>,
    ) -> std::result::Result<(), StorageError> {
        let mut inner = self.lock();
        inner.check().map_err(StorageIOError::write)?;
        if inner.state.committed == committed {
            return Ok(());
        }
        if !inner.sync_committed {
            // Written with the next vote or purge (see the module doc).
            inner.state.committed = committed;
            return Ok(());
        }
        inner
            .update_state("save committed", |st| st.committed = committed)
            .map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> std::result::Result<Option<Lid>, StorageError> {
        let inner = self.lock();
        inner.check().map_err(StorageIOError::read)?;
        Ok(inner.state.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> std::result::Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let result = match inner.check() {
            Err(why) => Err(io::Error::other(why.to_string())),
            Ok(()) => {
                let r = inner.append(entries);
                if let Err(e) = &r {
                    inner.fail("append", e);
                }
                r
            }
        };
        match result {
            Ok(written) => {
                // The callback fires once the sync thread has made the batch durable (and after
                // every earlier batch's, even when this one wrote nothing).
                let (file, created) = written.unzip();
                let new_segment_in = created.unwrap_or(false).then(|| inner.dir.clone());
                inner.syncer.submit(Job {
                    file,
                    new_segment_in,
                    callback,
                });
                Ok(())
            }
            Err(e) => {
                let err = write_logs_err(&e);
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: Lid) -> std::result::Result<(), StorageError> {
        let mut inner = self.lock();
        inner.check().map_err(StorageIOError::write_logs)?;
        if let Err(e) = inner.truncate(log_id.index) {
            inner.fail("truncate", &e);
            return Err(write_logs_err(&e));
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: Lid) -> std::result::Result<(), StorageError> {
        let mut inner = self.lock();
        inner.check().map_err(StorageIOError::write_logs)?;
        if inner.purged_index().is_some_and(|p| p >= log_id.index) {
            return Ok(());
        }
        inner.syncer.wait_idle();
        // The purge point is durable before any file goes, so a crash in between only leaves
        // files that recovery deletes.
        inner
            .update_state("purge", |st| st.last_purged = Some(log_id))
            .map_err(|e| write_logs_err(&e))?;
        inner.cache_retain(|i| i > log_id.index);
        if let Err(e) = inner.delete_purged_segments(log_id.index) {
            inner.fail("purge", &e);
            return Err(write_logs_err(&e));
        }
        Ok(())
    }
}
