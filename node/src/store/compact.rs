//! Compaction: merges a partition's small segments into one and drops the rows no retained view
//! can see, keeping every freeze point's answer exactly.
//!
//! The retained versions are the latest version and every freeze point's. A row inserted at `i`
//! and deleted at `d` (or never) is kept if some retained `r` has `i <= r < d`. Kept rows keep
//! their insert version (the new segment's `runs`) and their deletion mark (re-keyed to the new
//! row), so a view at any retained version reads the same rows before and after. Versions between
//! retained ones are not kept readable: a freeze point is how a version is kept.
//!
//! Compaction changes no content (no version is created) and is deterministic given the catalog,
//! so replicas that run it at the same position of the shard's log end up alike. Crash safety is
//! that of `apply`: the new segment is written and fsynced first, one sled batch swaps the catalog
//! over, and the old files are deleted after it (a crash leaves them uncatalogued, and open
//! removes them).

use super::keys::{self, Live, RecState, SegmentEntry};
use super::{Store, segment};
use crate::model::Dataset;
use crate::{Error, Result};
use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::Ordering;
use tracing::info;

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    pub segments_before: u64,
    pub segments_after: u64,
    pub rows_dropped: u64,
}

impl Store {
    /// Merges, per partition, the segments smaller than `target_rows` rows into segments of up
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
            let mut partitions: BTreeMap<(String, String), Vec<SegmentEntry>> = BTreeMap::new();
            for entry in self.segments(dataset)? {
                stats.segments_before += 1;
                if entry.rows < target_rows {
                    partitions
                        .entry((entry.provider.clone(), entry.month.clone()))
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
        let mut kept_batches = Vec::new();
        let mut runs: Vec<(u32, u64)> = Vec::new();
        let mut new_marks: Vec<(u32, u64)> = Vec::new();
        // (cds_unique_id, new row) of kept rows still live.
        let mut live_rows: Vec<(String, u32)> = Vec::new();
        let mut next_row = 0u32;
        for entry in group {
            let versions = entry.row_versions();
            let marks = self.deletion_marks(entry.id)?;
            let path = self.dir.join(&entry.file);
            let mut offset = 0usize;
            for batch in segment::read(&path, dataset)? {
                let ids = segment::ids(&batch)?;
                let mut keep = Vec::with_capacity(batch.num_rows());
                for i in 0..batch.num_rows() {
                    let row = offset + i;
                    let inserted = *versions.get(row).ok_or_else(|| Error::Corruption {
                        what: format!("segment {}", path.display()),
                        message: format!("more rows than the {} catalogued", entry.rows),
                    })?;
                    let deleted = marks.get(&(row as u32)).copied();
                    let k = visible(inserted, deleted);
                    keep.push(Some(k));
                    if !k {
                        stats.rows_dropped += 1;
                        continue;
                    }
                    if runs.last().is_none_or(|r| r.1 != inserted) {
                        runs.push((next_row, inserted));
                    }
                    match deleted {
                        Some(d) => new_marks.push((next_row, d)),
                        None => live_rows.push((ids.value(i).to_string(), next_row)),
                    }
                    next_row += 1;
                }
                offset += batch.num_rows();
                let kept = filter_record_batch(&batch, &BooleanArray::from(keep))?;
                if kept.num_rows() > 0 {
                    kept_batches.push(kept);
                }
            }
            if offset != entry.rows as usize {
                return Err(Error::Corruption {
                    what: format!("segment {}", path.display()),
                    message: format!("{offset} rows read, {} catalogued", entry.rows),
                });
            }
        }
        let schema = crate::schema::stored_schema(dataset);
        let merged: RecordBatch = concat_batches(&schema, &kept_batches)?;
        let written = self.swap(dataset, group, merged, runs, new_marks, live_rows);
        if written.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        written
    }

    /// Writes the merged segment (if it has rows), then swaps the catalog over in one batch and
    /// deletes the old files.
    fn swap(
        &self,
        dataset: Dataset,
        group: &[SegmentEntry],
        merged: RecordBatch,
        runs: Vec<(u32, u64)>,
        marks: Vec<(u32, u64)>,
        live_rows: Vec<(String, u32)>,
    ) -> Result<u64> {
        let mut ops = sled::Batch::default();
        let mut left = 0;
        let mut hot = None;
        if merged.num_rows() > 0 {
            let id = match self.db.get(keys::NEXT_SEGMENT)? {
                Some(v) => keys::u64_value(&v, "segment counter")?,
                None => 1,
            };
            let first = &group[0];
            let file = segment::relative_path(dataset, &first.provider, &first.month, id);
            let rows: Vec<u32> = (0..merged.num_rows() as u32).collect();
            let (bytes, written) = segment::write(&self.dir, &file, &merged, &rows, false)?;
            hot = Some((id, written));
            let version = runs.iter().map(|r| r.1).max().unwrap_or(first.version);
            let entry = SegmentEntry {
                id,
                dataset,
                provider: first.provider.clone(),
                month: first.month.clone(),
                rows: merged.num_rows() as u32,
                bytes,
                version,
                file,
                runs: if runs.len() == 1 { Vec::new() } else { runs },
            };
            ops.insert(keys::segment(dataset, id), entry.encode()?);
            ops.insert(keys::NEXT_SEGMENT, &(id + 1).to_be_bytes());
            for (row, version) in marks {
                ops.insert(keys::deleted(id, row), &version.to_be_bytes());
            }
            for (rid, row) in live_rows {
                let key = keys::record(dataset, &rid);
                let value = self.db.get(&key)?.ok_or_else(|| {
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
        for e in group {
            ops.remove(keys::segment(dataset, e.id));
            for k in self.db.scan_prefix(keys::deleted_prefix(e.id)).keys() {
                ops.remove(k?);
            }
        }
        {
            let _view = self.lock_view_exclusive();
            self.db.apply_batch(ops)?;
            self.db.flush()?;
        }
        if let Some((id, rows)) = hot {
            self.hot.insert(id, rows);
        }
        for e in group {
            self.hot.remove(e.id);
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
            .scan_prefix(keys::deleted_prefix(segment))
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    keys::deleted_row(&k)?,
                    keys::u64_value(&v, "deletion mark")?,
                ))
            })
            .collect()
    }
}
