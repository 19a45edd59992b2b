//! Single-node storage: immutable Parquet+zstd segments per (dataset, provider), their rows
//! grouped by activity month, with a catalog (redb) that makes every change atomic, durable and
//! versioned (docs/rules.md section 6).
//!
//! ```text
//!  <dir>/FORMAT                                   store format and stored schema version
//!  <dir>/catalog.redb                             segments, record index, deletions, submissions
//!  <dir>/segments/<dataset>/<provider>/<segment id, 20 digits>.parquet
//! ```
//!
//! **Applying a change** (one writer at a time, behind a mutex):
//! 1. plan it against the record index ([`apply`]): Net Change in (applicable date-time, ordinal)
//!    order with stale detection; Bulk Replacement deletes the sender's live records of the period
//!    (found through the `bysender/` index) and then stores every record;
//! 2. write one segment per touched provider, rows by month then `cds_unique_id` ([`segment`]):
//!    temp file, fsync, rename, fsync the directory;
//! 3. commit ONE catalog transaction, durably: segment entries, record states, sender index,
//!    deletion marks (`del/<segment><row>`: rows are never rewritten), the submission's report and
//!    version, the bulk extract marker, the version and segment counters.
//!
//! A crash before step 3 leaves segment files that no catalog entry names; [`Store::open`] deletes
//! them and any temp files. A crash after it loses nothing. So a segment is in the catalog wholly or
//! not at all, and a version is acknowledged only once durable. An error during steps 2-3 marks the
//! store failed: it refuses further writes until reopened (an fsync failure must not be retried).
//!
//! **Idempotency**: `(sender, submission id)` is used once. A resend of an applied submission gets
//! `AlreadyApplied` with the original report; a resend of a rejected one gets the stored rejection
//! (`version: None`), as SUS does: a corrected file needs a new submission id. A store-level
//! rejection (R07) is returned by `apply` and recorded by the caller through `record_rejected`.
//!
//! **Counts** follow the sequential reading of the rules: each record of the submission is applied in
//! order, so an id inserted and then updated by the same submission counts one insert and one
//! replacement. A Bulk Replacement leaves a tombstone with the deleted version's applicable
//! date-time, so replaying an older Net Change cannot bring a bulk-deleted record back; a record the
//! bulk re-sends after deleting it counts as inserted.
//!
//! Reads list the catalog (segments and deletion marks) in one read transaction, so a scan sees
//! one version without holding off writers; segment files are immutable.

mod apply;
mod cache;
mod catalog;
pub use cache::{DEFAULT_COLUMN_BYTES, DEFAULT_FOOTER_BYTES, SegmentCache};
mod compact;
pub use compact::CompactStats;
mod keys;
mod replica;
pub use replica::{ContentDigest, DumpItem};
mod segment;
mod spells;
pub use segment::{decode as decode_segment, encode as encode_segment};
pub use spells::{Precondition, SpellKey, SpellSnapshot, SpellsRead};
#[cfg(test)]
mod tests;
mod view;
pub use view::{Listing, MonthRun, SegmentView, check_freeze_name};

use crate::model::{Dataset, Issue, Protocol, Rule, SubmissionMeta};
use crate::schema::{SCHEMA_VERSION, stored_schema};
use crate::{Error, Result};
use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use chrono::{DateTime, NaiveDateTime};
use keys::{Live, SegmentEntry};
use rayon::prelude::*;
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tracing::{debug, info, warn};

/// A deletion of one record, in the submission's Net Change order.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteKey {
    pub cds_unique_id: String,
    pub applicable: NaiveDateTime,
    /// Position of the record in the submission file (1-based), the tie-break after `applicable`.
    pub ordinal: u64,
}

/// One validated, derived submission ready to apply.
#[derive(Debug, Clone)]
pub struct Change {
    pub meta: SubmissionMeta,
    /// Upsert records in the stored schema of `meta.dataset`, in file order.
    pub upserts: RecordBatch,
    /// File ordinal of each upsert row (same length as `upserts`).
    pub upsert_ordinals: Vec<u64>,
    pub deletes: Vec<DeleteKey>,
    /// The submission report (JSON) kept for idempotent resends; the store does not interpret it.
    pub report: Vec<u8>,
    /// APC: the spell of every row of `upserts` (`None`: no spell number), for the spell index.
    /// Empty for other datasets.
    pub spell_keys: Vec<Option<SpellKey>>,
    /// The last `rederived.len()` rows of `upserts` are new versions of stored episodes whose
    /// spell this change derived again; each holds the version of the row it replaces.
    pub rederived: Vec<u64>,
    /// What the spells were derived from (APC); checked before anything is applied.
    pub precondition: Option<Precondition>,
}

/// What applying a change did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyCounts {
    /// The store version this change created (strictly increasing, 1 for the first change).
    pub version: u64,
    pub inserted: u64,
    pub replaced: u64,
    pub deleted: u64,
    pub bulk_deleted: u64,
    pub stale: u64,
    /// Live episodes of earlier submissions stored again with their spell derived anew.
    pub rederived: u64,
}

/// A submission the store has already seen.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSubmission {
    /// The report given when it was first processed (JSON).
    pub report: Vec<u8>,
    /// What applying it did (its version and counts), or `None` if it was rejected.
    pub counts: Option<ApplyCounts>,
}

/// The result of [`Store::apply`].
#[derive(Debug, Clone)]
pub enum ApplyOutcome {
    Applied(ApplyCounts),
    AlreadyApplied(StoredSubmission),
    /// Refused by a store-level rule (R07: duplicate or older bulk extract).
    Rejected(Issue),
    /// The spells it was derived against changed before it was applied: nothing was stored;
    /// derive it again (the message says what moved).
    Conflict(String),
}

/// Counts per dataset, for reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetStats {
    pub live_records: u64,
    pub segments: u64,
    pub segment_bytes: u64,
}

/// Version of the on-disk layout (catalog keys, segment paths); bump on any incompatible change.
pub const STORE_FORMAT: u32 = 3;

const FORMAT_FILE: &str = "FORMAT";
const CATALOG_FILE: &str = "catalog.redb";
const SEGMENTS_DIR: &str = "segments";

/// The store of one node: see the module documentation.
pub struct Store {
    dir: PathBuf,
    db: catalog::Catalog,
    /// Serialises changes: planning reads the catalog the commit then overwrites.
    writer: Mutex<()>,
    /// Set when a write failed after it started touching disk.
    failed: AtomicBool,
    /// The node's segment cache, and this store's key in it.
    cache: Arc<SegmentCache>,
    uid: u64,
    /// Bumped after every commit that changes segments or deletion marks (it dates listings).
    generation: AtomicU64,
    listings: Mutex<view::Listings>,
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
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        check_format(dir)?;
        let db = catalog::Catalog::open(&dir.join(CATALOG_FILE))?;
        Store::with_catalog(dir, db, cache)
    }

    /// Opens the store over an already open catalog.
    fn with_catalog(dir: &Path, db: catalog::Catalog, cache: Arc<SegmentCache>) -> Result<Store> {
        let store = Store {
            dir: dir.to_path_buf(),
            db,
            writer: Mutex::new(()),
            failed: AtomicBool::new(false),
            cache,
            uid: NEXT_STORE_UID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            listings: Mutex::new(view::Listings::default()),
        };
        let segments = store.recover()?;
        info!(dir = %dir.display(), version = store.version()?, segments, "store opened");
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn submission(&self, sender: &str, id: &str) -> Result<Option<StoredSubmission>> {
        keys::short_text("sender", sender)?;
        self.db
            .get(&keys::submission(sender, id))?
            .map(|v| keys::decode_submission(&v))
            .transpose()
    }

    pub fn apply(&self, change: Change) -> Result<ApplyOutcome> {
        let _writer = self.lock_writer();
        self.check_not_failed()?;
        let meta = &change.meta;
        keys::short_text("sender", &meta.sender)?;
        keys::short_text("submission id", &meta.submission_id)?;
        if let Some(previous) = self.submission(&meta.sender, &meta.submission_id)? {
            debug!(sender = %meta.sender, submission = %meta.submission_id, "already applied");
            return Ok(ApplyOutcome::AlreadyApplied(previous));
        }
        let dataset = meta.dataset;
        let batch = RecordBatch::try_new(stored_schema(dataset), change.upserts.columns().to_vec())
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "upserts do not have the stored schema of {dataset}: {e}"
                ))
            })?;
        if change.upsert_ordinals.len() + change.rederived.len() != batch.num_rows() {
            return Err(Error::InvalidArgument(format!(
                "{} upsert ordinals and {} re-derived rows for {} upsert rows",
                change.upsert_ordinals.len(),
                change.rederived.len(),
                batch.num_rows()
            )));
        }
        let keyed = dataset == Dataset::Apc;
        let expected_keys = if keyed { batch.num_rows() } else { 0 };
        if change.spell_keys.len() != expected_keys {
            return Err(Error::InvalidArgument(format!(
                "{} spell keys for {} {dataset} upsert rows",
                change.spell_keys.len(),
                batch.num_rows()
            )));
        }
        let cols = apply::Columns::new(&batch)?;
        let version = self.version()? + 1;
        // Planning reads the catalog as of the last commit (writers are serialised).
        let reader = self.db.reader()?;
        if let Some(pre) = &change.precondition
            && let Err(moved) = (spells::SpellReader { db: &reader }).check(pre)?
        {
            debug!(sender = %meta.sender, submission = %meta.submission_id, "{moved}");
            return Ok(ApplyOutcome::Conflict(moved));
        }
        let mut plan = apply::Plan::new(dataset, version, &meta.sender);
        let mut bulk_marker = None;
        match &meta.protocol {
            Protocol::NetChange => {
                plan.net_change(&reader, &cols, &change.upsert_ordinals, &change.deletes)?;
            }
            Protocol::BulkReplacement {
                period_start,
                period_end,
                extract_datetime,
                ..
            } => {
                if !change.deletes.is_empty() {
                    return Err(Error::InvalidArgument(
                        "a Bulk Replacement cannot carry deletions (R08)".into(),
                    ));
                }
                let (start, end) = (apply::days(*period_start), apply::days(*period_end));
                let key = keys::bulk(dataset, &meta.sender, start, end);
                let extract = extract_datetime.and_utc().timestamp();
                if let Some(previous) = reader.get(&key)? {
                    let (applied, applied_id) = keys::decode_bulk(&previous)?;
                    if applied >= extract {
                        let applied = DateTime::from_timestamp(applied, 0)
                            .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string())
                            .unwrap_or_else(|| applied.to_string());
                        let issue = Issue {
                            ordinal: None,
                            cds_unique_id: None,
                            item: Some("extract_datetime".into()),
                            rule: Rule::BulkExtractNotNewer,
                            message: format!(
                                "extract date-time {} is not later than {applied} of submission \
                                 {applied_id}, already applied for sender {}, dataset {dataset} and \
                                 period {period_start} to {period_end}",
                                fmt_datetime(extract_datetime),
                                meta.sender
                            ),
                        };
                        debug!(sender = %meta.sender, submission = %meta.submission_id, "{issue}");
                        return Ok(ApplyOutcome::Rejected(issue));
                    }
                }
                plan.bulk(&reader, &cols, &change.upsert_ordinals, start, end)?;
                bulk_marker = Some((key, keys::encode_bulk(extract, &meta.submission_id)));
            }
        }
        let upserts = change.upsert_ordinals.len();
        if let Some(pre) = &change.precondition
            && let Err(moved) = plan.check_live(&cols, upserts, &pre.live)
        {
            debug!(sender = %meta.sender, submission = %meta.submission_id, "{moved}");
            return Ok(ApplyOutcome::Conflict(moved));
        }
        for (k, &expected) in change.rederived.iter().enumerate() {
            if let Err(moved) = plan.rederive(&reader, &cols, upserts + k, expected)? {
                debug!(sender = %meta.sender, submission = %meta.submission_id, "{moved}");
                return Ok(ApplyOutcome::Conflict(moved));
            }
        }
        if keyed {
            plan.load_spells(&reader, &change.spell_keys)?;
        }
        let partitions = plan.partitions(&cols)?;
        let committed = self.commit(plan, partitions, &batch, &change, bulk_marker);
        if committed.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        let counts = committed?;
        // The caller logs the submission's outcome; this is the store's own view of it.
        debug!(
            sender = %meta.sender, submission = %meta.submission_id, dataset = %dataset,
            version = counts.version, inserted = counts.inserted, replaced = counts.replaced,
            deleted = counts.deleted, bulk_deleted = counts.bulk_deleted, stale = counts.stale,
            "change applied"
        );
        Ok(ApplyOutcome::Applied(counts))
    }

    /// Writes the plan's segments, then commits everything in one durable catalog transaction.
    fn commit(
        &self,
        mut plan: apply::Plan,
        partitions: Vec<apply::PartitionRows>,
        batch: &RecordBatch,
        change: &Change,
        bulk_marker: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<ApplyCounts> {
        let meta = &change.meta;
        let dataset = meta.dataset;
        let version = plan.counts.version;
        let mut next_segment = match self.db.get(keys::NEXT_SEGMENT)? {
            Some(v) => keys::u64_value(&v, "segment counter")?,
            None => 1,
        };
        let mut entries = Vec::new();
        // Ids first (deterministic), then the files in parallel: per-file costs (codec set-up,
        // footer, fsync) dominate small segments, and partitions are independent.
        let jobs: Vec<(u64, String, Vec<u32>, apply::PartitionRows)> = partitions
            .into_iter()
            .map(|part| {
                let id = next_segment;
                next_segment += 1;
                let file = segment::relative_path(dataset, &part.provider, id);
                let rows = part.rows.iter().map(|r| r.1 as u32).collect();
                (id, file, rows, part)
            })
            .collect();
        let written: Vec<PathBuf> = jobs.iter().map(|j| self.dir.join(&j.1)).collect();
        let sizes: Vec<Result<(u64, RecordBatch)>> = jobs
            .par_iter()
            .map(|(_, file, rows, part)| segment::write(&self.dir, file, batch, rows, &part.months))
            .collect();
        let mut hot = Vec::new();
        let outcome = (|| -> Result<()> {
            for ((id, file, rows, part), written) in jobs.into_iter().zip(sizes) {
                let (bytes, rows_written) = written?;
                hot.push((id, rows_written));
                for (pos, (rid, _, activity)) in part.rows.iter().enumerate() {
                    let live = Live {
                        segment: id,
                        row: pos as u32,
                        activity: *activity,
                    };
                    plan.place(rid, live);
                }
                entries.push(SegmentEntry {
                    id,
                    dataset,
                    provider: part.provider,
                    months: part.months,
                    rows: rows.len() as u32,
                    bytes,
                    version,
                    file,
                    runs: Vec::new(),
                });
            }
            Ok(())
        })();
        if let Err(e) = outcome {
            // Uncatalogued files are harmless (open removes them), but do not leave them to chance.
            for path in &written {
                let _ = fs::remove_file(path);
            }
            return Err(e);
        }

        let mut ops = catalog::Batch::default();
        for entry in &entries {
            ops.insert(keys::segment(dataset, entry.id), entry.encode()?);
        }
        plan.write_to(&mut ops)?;
        for ((provider, month), counts) in &plan.activity {
            let value: Vec<u8> = counts.iter().flat_map(|n| n.to_be_bytes()).collect();
            ops.insert(keys::activity(dataset, provider, month, version), value);
        }
        let stored = StoredSubmission {
            report: change.report.clone(),
            counts: Some(plan.counts),
        };
        ops.insert(
            keys::submission(&meta.sender, &meta.submission_id),
            keys::encode_submission(&stored),
        );
        if let Some((key, value)) = bulk_marker {
            ops.insert(key, value);
        }
        ops.insert(keys::VERSION, version.to_be_bytes());
        ops.insert(keys::NEXT_SEGMENT, next_segment.to_be_bytes());
        self.db.apply(ops, true)?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        for (id, rows) in hot {
            self.cache_written(id, &rows);
        }
        debug!(version, segments = entries.len(), "change committed");
        Ok(plan.counts)
    }

    /// Stores the report of a rejected submission so that a resend gets the same answer.
    pub fn record_rejected(&self, meta: &SubmissionMeta, report: Vec<u8>) -> Result<()> {
        let _writer = self.lock_writer();
        self.check_not_failed()?;
        keys::short_text("sender", &meta.sender)?;
        keys::short_text("submission id", &meta.submission_id)?;
        let key = keys::submission(&meta.sender, &meta.submission_id);
        if self.db.get(&key)?.is_some() {
            // The id is spent: never overwrite the outcome a sender has already been given.
            warn!(sender = %meta.sender, submission = %meta.submission_id,
                "rejection of an already processed submission not recorded");
            return Ok(());
        }
        let stored = StoredSubmission {
            report,
            counts: None,
        };
        let mut ops = catalog::Batch::default();
        ops.insert(key, keys::encode_submission(&stored));
        let written = self.db.apply(ops, true);
        if written.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        written?;
        Ok(())
    }

    /// Live rows of a dataset (replaced and deleted rows removed), in the stored schema.
    pub fn scan_live(&self, dataset: Dataset) -> Result<Vec<RecordBatch>> {
        let listing = {
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
            listing
        };
        let mut out = Vec::new();
        for (entry, deleted) in listing {
            if deleted.len() as u64 >= u64::from(entry.rows) {
                continue;
            }
            let path = self.dir.join(&entry.file);
            let mut offset = 0usize;
            for batch in segment::read(&path, dataset)? {
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
        let entries = segments_of(&self.db.reader()?, dataset)?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let versions = entry.row_versions();
            let mut offset = 0usize;
            for batch in segment::read(&self.dir.join(&entry.file), dataset)? {
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
        let reader = self.db.reader()?;
        let mut stats = DatasetStats::default();
        for entry in segments_of(&reader, dataset)? {
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
    fn cache_written(&self, id: u64, rows: &RecordBatch) {
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
            .map(|(_, v)| Ok(self.dir.join(SegmentEntry::decode(v)?.file)))
            .collect()
    }

    fn segments(&self, dataset: Dataset) -> Result<Vec<SegmentEntry>> {
        segments_of(&self.db.reader()?, dataset)
    }

    /// Removes temp and uncatalogued segment files, then checks that every catalogued segment is
    /// there with its catalogued size. Returns the number of catalogued segments.
    fn recover(&self) -> Result<usize> {
        let mut catalogued = HashSet::new();
        let mut entries = Vec::new();
        for (_, v) in self.db.scan_prefix(keys::SEGMENT_ANY)? {
            let entry = SegmentEntry::decode(&v)?;
            catalogued.insert(self.dir.join(&entry.file));
            entries.push(entry);
        }
        let mut files = Vec::new();
        list_files(&self.dir.join(SEGMENTS_DIR), &mut files)?;
        for path in files {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let leftover = name.ends_with(segment::TEMP_SUFFIX)
                || (name.ends_with(segment::SUFFIX) && !catalogued.contains(&path));
            if leftover {
                warn!(file = %path.display(), "removing a segment file of an interrupted change");
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        for entry in &entries {
            let path = self.dir.join(&entry.file);
            let len = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
            if len != entry.bytes {
                return Err(Error::Corruption {
                    what: format!("segment {}", path.display()),
                    message: format!("{len} bytes on disk, {} catalogued", entry.bytes),
                });
            }
        }
        Ok(entries.len())
    }

    fn check_not_failed(&self) -> Result<()> {
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
    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The latest version in a view of the catalog (0 for an empty store).
fn version_of(reader: &catalog::Reader) -> Result<u64> {
    match reader.get(keys::VERSION)? {
        Some(v) => keys::u64_value(&v, "version"),
        None => Ok(0),
    }
}

/// The segment entries of `dataset` in a view of the catalog, by id.
fn segments_of(reader: &catalog::Reader, dataset: Dataset) -> Result<Vec<SegmentEntry>> {
    reader
        .scan_prefix(&keys::segment_prefix(dataset))?
        .iter()
        .map(|(_, v)| SegmentEntry::decode(v))
        .collect()
}

fn fmt_datetime(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Every file under `dir` (none if it does not exist).
fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if kind.is_dir() {
            list_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The text of the `FORMAT` file this build writes and accepts.
fn format_text() -> String {
    format!("sus-store-format {STORE_FORMAT}\nschema-version {SCHEMA_VERSION}\n")
}

/// Refuses a store written in another format; marks a new store with ours.
fn check_format(dir: &Path) -> Result<()> {
    let path = dir.join(FORMAT_FILE);
    let expected = format_text();
    match fs::read_to_string(&path) {
        Ok(found) if found == expected => Ok(()),
        Ok(found) => Err(Error::InvalidArgument(format!(
            "store {} has format '{}' but this build reads '{}'; refusing to open it",
            dir.display(),
            found.trim().replace('\n', ", "),
            expected.trim().replace('\n', ", ")
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join(CATALOG_FILE).exists() {
                return Err(Error::Corruption {
                    what: format!("store {}", dir.display()),
                    message: format!("a catalog without a {FORMAT_FILE} file; refusing to open it"),
                });
            }
            // Before the catalog exists: a crash here leaves a FORMAT and no catalog, a new store.
            let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
            fs::write(&tmp, expected.as_bytes()).map_err(|e| Error::io(&tmp, e))?;
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
            segment::sync_dir(dir)
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}
