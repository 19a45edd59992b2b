//! Compaction: merges a provider's small segments into one and drops the rows no retained view
//! can see, keeping every freeze point's answer exactly. The merged segment keeps the layout of
//! any segment: rows grouped by activity month (a row group per month), in source order within a
//! month.
//!
//! The retained versions are the latest version and every freeze point's. A row inserted at `i`
//! and deleted at `d` (or never) is kept if some retained `r` has `i <= r < d`. Kept rows keep
//! their insert version (the new segment's `runs`) and their deletion mark (re-keyed to the new
//! row), so a view at any retained version reads the same rows before and after. Versions between
//! retained ones are not kept readable: a freeze point is how a version is kept.
//!
//! Compaction changes no content (no version is created) and is deterministic given the catalog,
//! so replicas that run it at the same position of the shard's log end up alike. Crash safety is
//! that of `apply`: the new segment is written and fsynced first, one catalog transaction swaps the catalog
//! over, and the old files are deleted after it (a crash leaves them uncatalogued, and open
//! removes them).

use super::engine::Store;
use super::keys::{self, Live, RecState, SegmentEntry};
use super::segment;
use crate::model::Dataset;
use crate::{Error, Result};
use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use std::collections::BTreeMap;

/// A row that survives compaction: (month, source row in the concatenated input, inserted
/// version, deleted version, live id).
type KeptRow<'a> = (&'a str, u32, u64, Option<u64>, Option<String>);
use std::fs;
use std::sync::atomic::Ordering;
use tracing::info;

/// A merge's rows: `batch` holds every source row, `order` the kept ones in their new order.
struct Merged {
    batch: RecordBatch,
    order: Vec<u32>,
    months: Vec<(String, u32)>,
    runs: Vec<(u32, u64)>,
    marks: Vec<(u32, u64)>,
    live_rows: Vec<(String, u32)>,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    pub segments_before: u64,
    pub segments_after: u64,
    pub rows_dropped: u64,
}

impl Store {
    /// Merges, per provider, the segments smaller than `target_rows` rows into segments of up
    /// to about `target_rows` rows, dropping rows no retained view can see.
    pub fn compact(&self, target_rows: u32) -> Result<CompactStats> {
        let _writer = self.lock_writer();
        self.check_not_failed()?;
        let mut retained: Vec<u64> = self.freezes()?.into_iter().map(|(_, v)| v).collect();
        retained.push(self.version()?);
        retained.sort_unstable();
        retained.dedup();
        let mut stats = CompactStats::default();
        for dataset in Dataset::ALL {
            let mut partitions: BTreeMap<String, Vec<SegmentEntry>> = BTreeMap::new();
            for entry in self.segments(dataset)? {
                stats.segments_before += 1;
                if entry.rows < target_rows {
                    partitions
                        .entry(entry.provider.clone())
                        .or_default()
                        .push(entry);
                } else {
                    stats.segments_after += 1;
                }
            }
            for (_, small) in partitions {
                let mut group: Vec<SegmentEntry> = Vec::new();
                let mut rows = 0u32;
                let groups_of = small.len();
                for entry in small {
                    if !group.is_empty() && rows.saturating_add(entry.rows) > target_rows {
                        stats.segments_after +=
                            self.merge(dataset, &group, &retained, &mut stats)?;
                        group.clear();
                        rows = 0;
                    }
                    rows = rows.saturating_add(entry.rows);
                    group.push(entry);
                }
                if groups_of > 0 {
                    stats.segments_after += self.merge(dataset, &group, &retained, &mut stats)?;
                }
            }
        }
        info!(
            dir = %self.dir.display(), before = stats.segments_before,
            after = stats.segments_after, dropped = stats.rows_dropped, "compacted"
        );
        Ok(stats)
    }

    /// Merges `group` (one partition's segments, in id order) into at most one new segment;
    /// returns the number of segments left in its place (0 or 1).
    fn merge(
        &self,
        dataset: Dataset,
        group: &[SegmentEntry],
        retained: &[u64],
        stats: &mut CompactStats,
    ) -> Result<u64> {
        let visible = |inserted: u64, deleted: Option<u64>| {
            retained
                .iter()
                .any(|&r| inserted <= r && deleted.is_none_or(|d| r < d))
        };
        // Nothing to gain from rewriting a lone segment that keeps every row.
        if group.len() == 1 {
            let e = &group[0];
            let versions = e.row_versions();
            let marks = self.deletion_marks(e.id)?;
            let all_kept = (0..e.rows as usize)
                .all(|row| visible(versions[row], marks.get(&(row as u32)).copied()));
            if all_kept {
                return Ok(1);
            }
        }
        let mut kept: Vec<KeptRow> = Vec::new();
        let mut sources = Vec::with_capacity(group.len());
        let mut base = 0u32;
        for entry in group {
            let versions = entry.row_versions();
            let marks = self.deletion_marks(entry.id)?;
            let path = self.dir.join(&entry.file);
            let schema = crate::schema::stored_schema(dataset);
            let batch = concat_batches(&schema, &segment::read(&path, dataset)?)?;
            if batch.num_rows() != entry.rows as usize || versions.len() != batch.num_rows() {
                return Err(Error::Corruption {
                    what: format!("segment {}", path.display()),
                    message: format!("{} rows read, {} catalogued", batch.num_rows(), entry.rows),
                });
            }
            let ids = segment::ids(&batch)?;
            let mut row = 0usize;
            for (month, n) in &entry.months {
                for _ in 0..*n {
                    let inserted = versions[row];
                    let deleted = marks.get(&(row as u32)).copied();
                    if visible(inserted, deleted) {
                        let live = deleted.is_none().then(|| ids.value(row).to_string());
                        kept.push((month.as_str(), base + row as u32, inserted, deleted, live));
                    } else {
                        stats.rows_dropped += 1;
                    }
                    row += 1;
                }
            }
            if row != batch.num_rows() {
                return Err(Error::Corruption {
                    what: format!("segment {}", path.display()),
                    message: format!("month runs cover {row} of {} rows", batch.num_rows()),
                });
            }
            base += batch.num_rows() as u32;
            sources.push(batch);
        }
        // Months together (a row group each); source order within a month.
        kept.sort_by_key(|k| k.0);
        let mut months: Vec<(String, u32)> = Vec::new();
        let mut runs: Vec<(u32, u64)> = Vec::new();
        let mut new_marks: Vec<(u32, u64)> = Vec::new();
        let mut live_rows: Vec<(String, u32)> = Vec::new();
        let mut order = Vec::with_capacity(kept.len());
        for (new_row, (month, source, inserted, deleted, live)) in kept.into_iter().enumerate() {
            let new_row = new_row as u32;
            match months.last_mut() {
                Some((m, n)) if m == month => *n += 1,
                _ => months.push((month.to_string(), 1)),
            }
            if runs.last().is_none_or(|r| r.1 != inserted) {
                runs.push((new_row, inserted));
            }
            if let Some(d) = deleted {
                new_marks.push((new_row, d));
            }
            if let Some(id) = live {
                live_rows.push((id, new_row));
            }
            order.push(source);
        }
        let schema = crate::schema::stored_schema(dataset);
        let all: RecordBatch = concat_batches(&schema, &sources)?;
        drop(sources);
        let merged = Merged {
            batch: all,
            order,
            months,
            runs,
            marks: new_marks,
            live_rows,
        };
        let written = self.swap(dataset, group, merged);
        if written.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        written
    }

    /// Writes the merged segment (if it has rows), then swaps the catalog over in one batch and
    /// deletes the old files.
    fn swap(&self, dataset: Dataset, group: &[SegmentEntry], merged: Merged) -> Result<u64> {
        let mut ops = super::catalog::Batch::default();
        let mut left = 0;
        let mut fresh = None;
        if !merged.order.is_empty() {
            let id = match self.db.get(keys::NEXT_SEGMENT)? {
                Some(v) => keys::u64_value(&v, "segment counter")?,
                None => 1,
            };
            let first = &group[0];
            let file = segment::relative_path(dataset, &first.provider, id);
            let (bytes, written) = segment::write(
                &self.dir,
                &file,
                &merged.batch,
                &merged.order,
                &merged.months,
            )?;
            fresh = Some((id, written));
            let version = merged
                .runs
                .iter()
                .map(|r| r.1)
                .max()
                .unwrap_or(first.version);
            let entry = SegmentEntry {
                id,
                dataset,
                provider: first.provider.clone(),
                months: merged.months,
                rows: merged.order.len() as u32,
                bytes,
                version,
                file,
                runs: if merged.runs.len() == 1 {
                    Vec::new()
                } else {
                    merged.runs
                },
            };
            ops.insert(keys::segment(dataset, id), entry.encode()?);
            ops.insert(keys::NEXT_SEGMENT, (id + 1).to_be_bytes());
            for (row, version) in merged.marks {
                ops.insert(keys::deleted(id, row), version.to_be_bytes());
            }
            let reader = self.db.reader()?;
            for (rid, row) in merged.live_rows {
                let key = keys::record(dataset, &rid);
                let value = reader.get(&key)?.ok_or_else(|| {
                    keys::corrupt("record index", &format!("live row {rid} has no record"))
                })?;
                let mut state = RecState::decode(&value)?;
                let live = state.live.ok_or_else(|| {
                    keys::corrupt("record index", &format!("live row {rid} is a tombstone"))
                })?;
                state.live = Some(Live {
                    segment: id,
                    row,
                    activity: live.activity,
                });
                ops.insert(key, state.encode());
            }
            left = 1;
        }
        let reader = self.db.reader()?;
        for e in group {
            ops.remove(keys::segment(dataset, e.id));
            for (k, _) in reader.scan_prefix(&keys::deleted_prefix(e.id))? {
                ops.remove(k);
            }
        }
        drop(reader);
        self.db.apply(ops, true)?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some((id, rows)) = fresh {
            self.cache_written(id, &rows);
        }
        for e in group {
            self.cache.forget(self.uid, e.id);
            let path = self.dir.join(&e.file);
            fs::remove_file(&path).map_err(|err| Error::io(&path, err))?;
            if let Some(dir) = path.parent() {
                segment::sync_dir(dir)?;
            }
        }
        Ok(left)
    }

    fn deletion_marks(&self, segment: u64) -> Result<BTreeMap<u32, u64>> {
        self.db
            .scan_prefix(&keys::deleted_prefix(segment))?
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    keys::deleted_row(&k)?,
                    keys::u64_value(&v, "deletion mark")?,
                ))
            })
            .collect()
    }
}
