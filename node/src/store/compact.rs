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
//! Compaction changes no content (no version is created), so it need not happen at the same
//! point on every replica: segment ids, files and row positions are a replica's own layout.
//!
//! It runs beside applies and reads. A plan is made on one catalog read transaction (the
//! retained versions and the segments as of one version); each group is merged and its segment
//! written, fsynced and renamed without any lock; only the install takes the writer lock, and
//! applies the merge to the catalog as it is then: deletion marks added to source rows since the
//! plan move to their new rows, and a record is re-pointed only if it still points at its source
//! row. A row the plan dropped stays invisible at every version retained at install (freeze points
//! made since are at versions the plan's latest reached). The replaced files are retired
//! ([`super::retire`]): deleted once no read that listed them is alive. Crash safety is that of
//! `apply`: one catalog transaction swaps the catalog over; a crash before it leaves an
//! uncatalogued file, which open removes.

use super::engine::{Store, segments_of, version_of};
use super::keys::{self, Live, RecState, SegmentEntry};
use super::segment;
use crate::model::Dataset;
use crate::{Error, Result};
use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use tracing::info;

/// A row that survives compaction: (month, source segment, source row, row in the concatenated
/// input, inserted version, record id).
type KeptRow<'a> = (&'a str, u64, u32, u32, u64, String);

/// A merged segment, written and fsynced, waiting for its install.
struct Merged {
    /// None when no row survives.
    entry: Option<SegmentEntry>,
    /// The rows written, for the column cache.
    rows: RecordBatch,
    /// Per new row: its source (segment, row) and record id.
    origin: Vec<(u64, u32, String)>,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    pub segments_before: u64,
    pub segments_after: u64,
    pub rows_dropped: u64,
}

/// Groups of one partition's small segments to merge, planned on one catalog view.
struct Plan {
    retained: Vec<u64>,
    groups: Vec<(Dataset, Vec<SegmentEntry>)>,
}

impl Store {
    /// Merges, per provider, the segments smaller than `target_rows` rows into segments of up
    /// to about `target_rows` rows, dropping rows no retained view can see. Applies and reads go
    /// on meanwhile; one compaction runs at a time.
    pub fn compact(&self, target_rows: u32) -> Result<CompactStats> {
        let _one = self.compacting.lock().unwrap_or_else(|e| e.into_inner());
        self.check_not_failed()?;
        if self.buffer.get().is_some() {
            // Buffered rows are written first, so that they are compacted too.
            self.checkpoint()?;
        }
        let mut stats = CompactStats::default();
        let plan = self.plan_compaction(target_rows, &mut stats)?;
        info!(dir = %self.dir.display(), groups = plan.groups.len(), "compacting");
        if let Some(pause) = crate::broken::compaction_pause() {
            std::thread::sleep(pause);
        }
        for (dataset, group) in &plan.groups {
            stats.segments_after += match self.merge(*dataset, group, &plan.retained, &mut stats)? {
                None => group.len() as u64,
                Some(merged) => {
                    #[cfg(test)]
                    if let Some(hook) = self
                        .before_install
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_mut()
                    {
                        hook();
                    }
                    self.install(*dataset, group, merged)?
                }
            };
        }
        info!(
            dir = %self.dir.display(), before = stats.segments_before,
            after = stats.segments_after, dropped = stats.rows_dropped, "compacted"
        );
        Ok(stats)
    }

    fn plan_compaction(&self, target_rows: u32, stats: &mut CompactStats) -> Result<Plan> {
        // One view: a segment listed here holds no row inserted after the latest version read.
        let reader = self.db.reader()?;
        let mut retained: Vec<u64> = Vec::new();
        for (_, v) in reader.scan_prefix(keys::FREEZE_ANY)? {
            retained.push(keys::u64_value(&v, "freeze point")?);
        }
        retained.push(version_of(&reader)?);
        retained.sort_unstable();
        retained.dedup();
        let mut groups = Vec::new();
        for dataset in Dataset::ALL {
            let mut partitions: BTreeMap<String, Vec<SegmentEntry>> = BTreeMap::new();
            for entry in segments_of(&reader, dataset)? {
                if entry.is_buffered() {
                    continue; // a checkpoint writes it
                }
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
                for entry in small {
                    if !group.is_empty() && rows.saturating_add(entry.rows) > target_rows {
                        groups.push((dataset, std::mem::take(&mut group)));
                        rows = 0;
                    }
                    rows = rows.saturating_add(entry.rows);
                    group.push(entry);
                }
                if !group.is_empty() {
                    groups.push((dataset, group));
                }
            }
        }
        Ok(Plan { retained, groups })
    }

    /// Merges `group` (one partition's segments, in id order) into one new segment, written and
    /// fsynced; `None` when there is nothing to gain (a lone segment that keeps every row).
    fn merge(
        &self,
        dataset: Dataset,
        group: &[SegmentEntry],
        retained: &[u64],
        stats: &mut CompactStats,
    ) -> Result<Option<Merged>> {
        let visible = |inserted: u64, deleted: Option<u64>| {
            retained
                .iter()
                .any(|&r| inserted <= r && deleted.is_none_or(|d| r < d))
        };
        let _pin = self.pin();
        if let [e] = group {
            let versions = e.row_versions();
            let marks = self.deletion_marks(e.id)?;
            let all_kept = (0..e.rows as usize)
                .all(|row| visible(versions[row], marks.get(&(row as u32)).copied()));
            if all_kept {
                return Ok(None);
            }
        }
        let mut kept: Vec<KeptRow> = Vec::new();
        let mut sources = Vec::with_capacity(group.len());
        let mut base = 0u32;
        for entry in group {
            let versions = entry.row_versions();
            // Marks as of now: a row deleted after the plan's latest version is visible at it.
            let marks = self.deletion_marks(entry.id)?;
            let path = self.dir.join(&entry.file);
            let schema = crate::schema::stored_schema(dataset);
            let batch =
                concat_batches(&schema, &segment::read(self.disk.as_ref(), &path, dataset)?)?;
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
                    if visible(inserted, marks.get(&(row as u32)).copied()) {
                        let id = ids.value(row).to_string();
                        kept.push((month, entry.id, row as u32, base + row as u32, inserted, id));
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
        if kept.is_empty() {
            return Ok(Some(Merged {
                entry: None,
                rows: RecordBatch::new_empty(crate::schema::stored_schema(dataset)),
                origin: Vec::new(),
            }));
        }
        // Months together (a row group each); source order within a month.
        kept.sort_by(|a, b| a.0.cmp(b.0));
        let mut months: Vec<(String, u32)> = Vec::new();
        let mut runs: Vec<(u32, u64)> = Vec::new();
        let mut order = Vec::with_capacity(kept.len());
        let mut origin = Vec::with_capacity(kept.len());
        for (new_row, (month, segment, row, source, inserted, id)) in kept.into_iter().enumerate() {
            match months.last_mut() {
                Some((m, n)) if m == month => *n += 1,
                _ => months.push((month.to_string(), 1)),
            }
            if runs.last().is_none_or(|r| r.1 != inserted) {
                runs.push((new_row as u32, inserted));
            }
            order.push(source);
            origin.push((segment, row, id));
        }
        let schema = crate::schema::stored_schema(dataset);
        let all: RecordBatch = concat_batches(&schema, &sources)?;
        drop(sources);
        let id = self.reserve_segment_id()?;
        let provider = group[0].provider.clone();
        let file = segment::relative_path(dataset, &provider, id);
        let (bytes, rows) =
            segment::write(self.disk.as_ref(), &self.dir, &file, &all, &order, &months)?;
        let version = runs.iter().map(|r| r.1).max().unwrap_or(group[0].version);
        let entry = SegmentEntry {
            id,
            dataset,
            provider,
            months,
            rows: order.len() as u32,
            bytes,
            version,
            file,
            runs: if runs.len() == 1 { Vec::new() } else { runs },
        };
        Ok(Some(Merged {
            entry: Some(entry),
            rows,
            origin,
        }))
    }

    /// A segment id of its own for a merge (made durable by the next durable commit; a crash
    /// before that leaves only an uncatalogued file, which open removes).
    fn reserve_segment_id(&self) -> Result<u64> {
        let _writer = self.lock_writer();
        self.check_not_failed()?;
        let id = self.next_segment()?;
        let mut ops = super::catalog::Batch::default();
        ops.insert(keys::NEXT_SEGMENT, (id + 1).to_be_bytes());
        self.db.apply(ops, false)?;
        Ok(id)
    }

    /// Swaps the catalog over to the merged segment in one durable transaction, against the
    /// catalog as it is now; returns the segments left in the group's place (0 or 1).
    fn install(&self, dataset: Dataset, group: &[SegmentEntry], merged: Merged) -> Result<u64> {
        // The install is a durable commit, so in a buffered store a checkpoint too.
        let _one = self.lock_flushing();
        let staged = self.stage()?;
        let _writer = self.lock_writer();
        self.check_not_failed()?;
        let written = self.install_locked(dataset, group, &merged, staged);
        if written.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        let left = written?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(entry) = &merged.entry {
            self.cache_written(entry.id, &merged.rows);
        }
        let mut old = Vec::with_capacity(group.len());
        for e in group {
            self.cache.forget(self.uid, e.id);
            old.push(self.dir.join(&e.file));
        }
        self.retire(old)?;
        Ok(left)
    }

    fn install_locked(
        &self,
        dataset: Dataset,
        group: &[SegmentEntry],
        merged: &Merged,
        staged: super::flush::Staged,
    ) -> Result<u64> {
        let reader = self.db.reader()?;
        let mut ops = super::catalog::Batch::default();
        // Current marks of the sources, by (segment, row); the old keys go with their segments.
        let mut marks: BTreeMap<(u64, u32), u64> = BTreeMap::new();
        for e in group {
            if reader.get(&keys::segment(dataset, e.id))?.is_none() {
                return Err(Error::Internal(format!(
                    "segment {} was replaced while being compacted",
                    e.id
                )));
            }
            ops.remove(keys::segment(dataset, e.id));
            for (k, v) in reader.scan_prefix(&keys::deleted_prefix(e.id))? {
                marks.insert(
                    (e.id, keys::deleted_row(&k)?),
                    keys::u64_value(&v, "deletion mark")?,
                );
                ops.remove(k);
            }
        }
        let Some(entry) = &merged.entry else {
            self.commit_durable(staged, ops)?;
            return Ok(0);
        };
        let id = entry.id;
        ops.insert(keys::segment(dataset, id), entry.encode()?);
        for (new_row, (segment, row, rid)) in merged.origin.iter().enumerate() {
            let new_row = new_row as u32;
            if let Some(d) = marks.get(&(*segment, *row)) {
                ops.insert(keys::deleted(id, new_row), d.to_be_bytes());
                continue;
            }
            // Unmarked, so live: its record points at the source row.
            let key = keys::record(dataset, rid);
            let value = reader.get(&key)?.ok_or_else(|| {
                keys::corrupt("record index", &format!("live row {rid} has no record"))
            })?;
            let mut state = RecState::decode(&value)?;
            let live = match state.live {
                Some(l) if l.segment == *segment && l.row == *row => l,
                _ => {
                    return Err(keys::corrupt(
                        "record index",
                        &format!("live row {rid} of segment {segment} is not its record's"),
                    ));
                }
            };
            state.live = Some(Live {
                segment: id,
                row: new_row,
                activity: live.activity,
            });
            ops.insert(key, state.encode());
        }
        drop(reader);
        self.commit_durable(staged, ops)?;
        Ok(1)
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
