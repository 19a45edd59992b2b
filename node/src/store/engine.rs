//! The store itself: its directory, catalog and cache; opening (with recovery of what an
//! interrupted change left behind), whole-dataset scans, counters and the writer lock.

use super::cache::{DEFAULT_COLUMN_BYTES, DEFAULT_FOOTER_BYTES, SegmentCache};
use super::catalog;
use super::keys::{self, SegmentEntry};
use super::listing::Listings;
use super::outcome::{DatasetStats, StoredSubmission};
use super::segment;
use crate::model::Dataset;
use crate::schema::SCHEMA_VERSION;
use crate::{Error, Result};
use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use sus_disk::{Disk, OpenMode};
use tracing::{error, info, warn};

/// Version of the on-disk layout (catalog keys, segment paths); bump on any incompatible change.
pub const STORE_FORMAT: u32 = 3;

pub(super) const FORMAT_FILE: &str = "FORMAT";
pub(super) const CATALOG_FILE: &str = "catalog.redb";
pub(super) const SEGMENTS_DIR: &str = "segments";

/// The store of one node: see the module documentation.
pub struct Store {
    /// Where every file of the store lives: the real file system, or a simulated one in the
    /// power-loss tests.
    pub(super) disk: Arc<dyn Disk>,
    pub(super) dir: PathBuf,
    pub(super) db: catalog::Catalog,
    /// Serialises changes: planning reads the catalog the commit then overwrites.
    pub(super) writer: Mutex<()>,
    /// A Raft replica's rows not yet in segment files ([`super::buffer`]); none: every change
    /// is written and committed durably before it is acknowledged.
    pub(super) buffer: OnceLock<Arc<super::buffer::WriteBuffer>>,
    /// One checkpoint at a time; taken before the writer lock.
    pub(super) flushing: Mutex<()>,
    /// Set when a write failed after it started touching disk.
    pub(super) failed: AtomicBool,
    /// The node's segment cache, and this store's key in it.
    pub(super) cache: Arc<SegmentCache>,
    pub(super) uid: u64,
    /// Bumped after every commit that changes segments or deletion marks (it dates listings).
    pub(super) generation: AtomicU64,
    pub(super) listings: Mutex<Listings>,
    /// One compaction at a time (it runs without the writer lock until it installs).
    pub(super) compacting: Mutex<()>,
    /// Segment files replaced by compaction, until no read can name them.
    pub(super) retired: super::retire::Retired,
    /// Test hook: runs between a compaction's merge and its install.
    #[cfg(test)]
    pub(super) before_install: Mutex<Option<Box<dyn FnMut() + Send>>>,
}

impl Drop for Store {
    /// A buffered store is checkpointed before its catalog closes: redb makes pending
    /// non-durable commits durable on close, and they name buffered rows. If the checkpoint
    /// fails, the catalog is left unclosed, so that its next open rolls back to the last
    /// checkpoint and the Raft log is applied again from there.
    fn drop(&mut self) {
        let Some(buffer) = self.buffer.get().cloned() else {
            return;
        };
        buffer.close();
        if !buffer.buffered().is_empty()
            && let Err(e) = self.checkpoint()
        {
            error!(
                dir = %self.dir.display(),
                "closing a store whose buffer could not be written ({e}): its catalog is left for \
                 the next open to roll back to the last checkpoint"
            );
            self.db.abandon();
        }
    }
}

/// Process-unique store ids: the segment cache is shared by every store of a node.
static NEXT_STORE_UID: AtomicU64 = AtomicU64::new(1);

impl Store {
    /// Opens (or creates) the store in `dir` with a cache of its own (default sizes), removing
    /// what an interrupted change left behind.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with_cache(
            dir,
            SegmentCache::new(DEFAULT_COLUMN_BYTES, DEFAULT_FOOTER_BYTES),
        )
    }

    /// Opens (or creates) the store in `dir`, sharing the node's segment cache.
    pub fn open_with_cache(dir: &Path, cache: Arc<SegmentCache>) -> Result<Store> {
        Store::open_on(sus_disk::real(), dir, cache)
    }

    /// Opens (or creates) the store in `dir` on `disk`.
    pub fn open_on(disk: Arc<dyn Disk>, dir: &Path, cache: Arc<SegmentCache>) -> Result<Store> {
        segment::create_dirs(disk.as_ref(), Path::new("/"), dir)?;
        check_format(disk.as_ref(), dir)?;
        let db = catalog::Catalog::open_on(disk.as_ref(), &dir.join(CATALOG_FILE))?;
        Store::with_catalog(disk, dir, db, cache)
    }

    /// Opens the store over an already open catalog.
    pub(super) fn with_catalog(
        disk: Arc<dyn Disk>,
        dir: &Path,
        db: catalog::Catalog,
        cache: Arc<SegmentCache>,
    ) -> Result<Store> {
        let store = Store {
            disk: disk.clone(),
            dir: dir.to_path_buf(),
            db,
            writer: Mutex::new(()),
            buffer: OnceLock::new(),
            flushing: Mutex::new(()),
            failed: AtomicBool::new(false),
            cache,
            uid: NEXT_STORE_UID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            listings: Mutex::new(Listings::default()),
            compacting: Mutex::new(()),
            retired: super::retire::Retired::new(disk.clone()),
            #[cfg(test)]
            before_install: Mutex::new(None),
        };
        let segments = store.recover()?;
        info!(dir = %dir.display(), version = store.version()?, segments, "store opened");
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file system the store lives on.
    pub fn disk(&self) -> &dyn Disk {
        self.disk.as_ref()
    }

    pub fn submission(&self, sender: &str, id: &str) -> Result<Option<StoredSubmission>> {
        keys::short_text("sender", sender)?;
        self.db
            .get(&keys::submission(sender, id))?
            .map(|v| keys::decode_submission(&v))
            .transpose()
    }
}

impl Store {
    /// Live rows of a dataset (replaced and deleted rows removed), in the stored schema.
    pub fn scan_live(&self, dataset: Dataset) -> Result<Vec<RecordBatch>> {
        let _pin = self.pin();
        let (version, listing) = {
            let reader = self.db.reader()?;
            let mut listing = Vec::new();
            for entry in segments_of(&reader, dataset)? {
                let deleted: HashSet<u32> = reader
                    .scan_prefix(&keys::deleted_prefix(entry.id))?
                    .iter()
                    .map(|(k, _)| keys::deleted_row(k))
                    .collect::<Result<_>>()?;
                listing.push((entry, deleted));
            }
            (version_of(&reader)?, listing)
        };
        let mut out = Vec::new();
        for (mut entry, deleted) in listing {
            if !entry.is_buffered() && deleted.len() as u64 >= u64::from(entry.rows) {
                continue;
            }
            let path = self.dir.join(&entry.file);
            let mut offset = 0usize;
            for batch in self.entry_rows(&mut entry, version)? {
                let n = batch.num_rows();
                if deleted.is_empty() {
                    out.push(batch);
                } else {
                    let keep: BooleanArray = (offset..offset + n)
                        .map(|row| Some(!deleted.contains(&(row as u32))))
                        .collect();
                    let kept = filter_record_batch(&batch, &keep)?;
                    if kept.num_rows() > 0 {
                        out.push(kept);
                    }
                }
                offset += n;
            }
            if offset != entry.rows as usize {
                return Err(Error::Corruption {
                    what: format!("segment {}", path.display()),
                    message: format!("{offset} rows read, {} catalogued", entry.rows),
                });
            }
        }
        Ok(out)
    }

    /// Every stored row of a dataset, live or superseded (compaction keeps those a freeze point
    /// can still see), each batch with the version of the change that wrote each of its rows:
    /// the store's history, for audits and for checking it against an independent model.
    pub fn scan_history(&self, dataset: Dataset) -> Result<Vec<(Vec<u64>, RecordBatch)>> {
        let _pin = self.pin();
        let reader = self.db.reader()?;
        let (version, entries) = (version_of(&reader)?, segments_of(&reader, dataset)?);
        drop(reader);
        let mut out = Vec::with_capacity(entries.len());
        for mut entry in entries {
            let batches = self.entry_rows(&mut entry, version)?;
            let versions = entry.row_versions();
            let mut offset = 0usize;
            for batch in batches {
                let n = batch.num_rows();
                let part = versions
                    .get(offset..offset + n)
                    .ok_or_else(|| Error::Corruption {
                        what: format!("segment {}", entry.file),
                        message: format!("more rows than the {} catalogued", entry.rows),
                    })?;
                out.push((part.to_vec(), batch));
                offset += n;
            }
        }
        Ok(out)
    }

    pub fn stats(&self, dataset: Dataset) -> Result<DatasetStats> {
        let _pin = self.pin();
        let reader = self.db.reader()?;
        let version = version_of(&reader)?;
        let mut stats = DatasetStats::default();
        for mut entry in segments_of(&reader, dataset)? {
            if entry.is_buffered() {
                entry.fill_from(&self.buffered_pieces(entry.id, version)?);
            }
            let deleted = reader.scan_prefix(&keys::deleted_prefix(entry.id))?.len() as u64;
            stats.segments += 1;
            stats.segment_bytes += entry.bytes;
            stats.live_records += u64::from(entry.rows).saturating_sub(deleted);
        }
        Ok(stats)
    }

    /// The node's segment cache and this store's key in it.
    pub fn cache(&self) -> (&Arc<SegmentCache>, u64) {
        (&self.cache, self.uid)
    }

    /// Keeps a freshly written segment's columns in the cache: recent data is what reports read.
    pub(super) fn cache_written(&self, id: u64, rows: &RecordBatch) {
        if self.cache.keeps_columns() {
            let columns: Vec<(usize, arrow::array::ArrayRef)> =
                rows.columns().iter().cloned().enumerate().collect();
            self.cache.insert_columns(self.uid, id, &columns);
        }
    }

    /// The latest version (0 for an empty store).
    pub fn version(&self) -> Result<u64> {
        version_of(&self.db.reader()?)
    }

    /// The files of every catalogued segment, of every dataset (for checks and tools).
    pub fn segment_files(&self) -> Result<Vec<PathBuf>> {
        self.db
            .scan_prefix(keys::SEGMENT_ANY)?
            .iter()
            .map(|(_, v)| SegmentEntry::decode(v))
            .filter(|e| e.as_ref().map_or(true, |e| !e.is_buffered()))
            .map(|e| Ok(self.dir.join(e?.file)))
            .collect()
    }

    /// The rows of a segment as a read at `version` (holding a pin taken before its catalog
    /// reader) sees them; a buffered entry is filled in from the pieces that read sees.
    pub(super) fn entry_rows(
        &self,
        entry: &mut SegmentEntry,
        version: u64,
    ) -> Result<Vec<RecordBatch>> {
        if entry.is_buffered() {
            let pieces = self.buffered_pieces(entry.id, version)?;
            entry.fill_from(&pieces);
            return Ok(pieces.iter().map(|p| p.batch.clone()).collect());
        }
        segment::read(
            self.disk.as_ref(),
            &self.dir.join(&entry.file),
            entry.dataset,
        )
    }

    /// The pieces of buffered segment `id` a pinned read at `version` sees.
    pub(super) fn buffered_pieces(&self, id: u64, version: u64) -> Result<super::buffer::Pieces> {
        self.buffer
            .get()
            .and_then(|b| b.pieces(id, version))
            .ok_or_else(|| {
                Error::Internal(format!(
                    "segment {id} is catalogued as buffered, but the write buffer has it not"
                ))
            })
    }

    /// Removes temp and uncatalogued segment files, then checks that every catalogued segment is
    /// there with its catalogued size. Returns the number of catalogued segments.
    pub(super) fn recover(&self) -> Result<usize> {
        let mut catalogued = HashSet::new();
        let mut entries = Vec::new();
        for (_, v) in self.db.scan_prefix(keys::SEGMENT_ANY)? {
            let entry = SegmentEntry::decode(&v)?;
            if entry.is_buffered() {
                // Only a close that made non-durable commits durable without a checkpoint
                // leaves one: rows the catalog points at were in memory only.
                return Err(Error::Corruption {
                    what: format!("store {}", self.dir.display()),
                    message: format!(
                        "segment {} is catalogued as buffered in memory, so its rows are lost: \
                         remove this replica and let it rejoin under a new id",
                        entry.id
                    ),
                });
            }
            catalogued.insert(self.dir.join(&entry.file));
            entries.push(entry);
        }
        let mut files = Vec::new();
        list_files(self.disk.as_ref(), &self.dir.join(SEGMENTS_DIR), &mut files)?;
        for path in files {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let leftover = name.ends_with(segment::TEMP_SUFFIX)
                || (name.ends_with(segment::SUFFIX) && !catalogued.contains(&path));
            if leftover {
                warn!(file = %path.display(), "removing a segment file of an interrupted change");
                self.disk
                    .remove_file(&path)
                    .map_err(|e| Error::io(&path, e))?;
            }
        }
        for entry in &entries {
            let path = self.dir.join(&entry.file);
            let len = self.disk.file_len(&path).map_err(|e| Error::io(&path, e))?;
            if len != entry.bytes {
                return Err(Error::Corruption {
                    what: format!("segment {}", path.display()),
                    message: format!("{len} bytes on disk, {} catalogued", entry.bytes),
                });
            }
        }
        Ok(entries.len())
    }

    /// Pins the current segment files: take it before the catalog reader whose segments a read
    /// will open (see [`super::retire`]).
    pub fn pin(&self) -> super::retire::Pin {
        self.retired.pin()
    }

    /// Retires files a catalog commit just replaced (under the writer lock, after the commit).
    pub(super) fn retire(&self, files: Vec<PathBuf>) -> Result<()> {
        self.retired.retire(files)
    }

    /// Retired segment files not deleted yet (a read that began before their install holds them).
    pub fn retired_files(&self) -> usize {
        self.retired.waiting()
    }

    pub(super) fn check_not_failed(&self) -> Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(Error::Corruption {
                what: format!("store {}", self.dir.display()),
                message: "an earlier write failed part-way; reopen the store to recover".into(),
            });
        }
        Ok(())
    }

    // A panic while holding a lock leaves nothing half-done in the catalog (commits are single
    // batches), so a poisoned lock is still safe to take.
    pub(super) fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The latest version in a view of the catalog (0 for an empty store).
pub(super) fn version_of(reader: &catalog::Reader) -> Result<u64> {
    match reader.get(keys::VERSION)? {
        Some(v) => keys::u64_value(&v, "version"),
        None => Ok(0),
    }
}

/// The segment entries of `dataset` in a view of the catalog, by id.
pub(super) fn segments_of(reader: &catalog::Reader, dataset: Dataset) -> Result<Vec<SegmentEntry>> {
    reader
        .scan_prefix(&keys::segment_prefix(dataset))?
        .iter()
        .map(|(_, v)| SegmentEntry::decode(v))
        .collect()
}

/// Every file under `dir` (none if it does not exist).
pub(super) fn list_files(disk: &dyn Disk, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match disk.read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for path in entries {
        if disk.is_dir(&path).map_err(|e| Error::io(&path, e))? {
            list_files(disk, &path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The text of the `FORMAT` file this build writes and accepts.
pub(super) fn format_text() -> String {
    format!("sus-store-format {STORE_FORMAT}\nschema-version {SCHEMA_VERSION}\n")
}

/// Refuses a store written in another format; marks a new store with ours.
pub(super) fn check_format(disk: &dyn Disk, dir: &Path) -> Result<()> {
    let path = dir.join(FORMAT_FILE);
    let expected = format_text();
    match disk
        .read(&path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
    {
        Ok(found) if found == expected => Ok(()),
        Ok(found) => Err(Error::InvalidArgument(format!(
            "store {} has format '{}' but this build reads '{}'; refusing to open it",
            dir.display(),
            found.trim().replace('\n', ", "),
            expected.trim().replace('\n', ", ")
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let catalog = dir.join(CATALOG_FILE);
            if disk.exists(&catalog).map_err(|e| Error::io(&catalog, e))? {
                return Err(Error::Corruption {
                    what: format!("store {}", dir.display()),
                    message: format!("a catalog without a {FORMAT_FILE} file; refusing to open it"),
                });
            }
            // Before the catalog exists: a crash here leaves a FORMAT and no catalog, a new store.
            let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
            write_synced(disk, &tmp, expected.as_bytes())?;
            disk.rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
            segment::sync_dir(disk, dir)
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Writes `bytes` as the whole file at `path` and syncs it (its name is the caller's to sync).
pub(super) fn write_synced(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> Result<()> {
    disk.open(path, OpenMode::CreateTruncate)
        .and_then(|f| {
            f.write_all_at(bytes, 0)?;
            f.sync_all()
        })
        .map_err(|e| Error::io(path, e))
}
