//! Applying a change: plan it against the record index, write its segments, commit one durable
//! catalog transaction (see the module documentation of [`super`]).

use super::apply;
use super::buffer::Piece;
use super::catalog;
use super::change::Change;
use super::engine::Store;
use super::keys;
use super::outcome::{ApplyCounts, ApplyOutcome, StoredSubmission};
use super::segment;
use super::spells;
use crate::model::{Dataset, Issue, Protocol, Rule, SubmissionMeta};
use crate::schema::stored_schema;
use crate::{Error, Result};
use arrow::array::RecordBatch;
use chrono::{DateTime, NaiveDateTime};
use keys::{Live, SegmentEntry};
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use tracing::{debug, warn};

impl Store {
    pub fn apply(&self, change: Change) -> Result<ApplyOutcome> {
        // Before the writer lock: a checkpoint, which frees the budget, takes it.
        if let Some(buffer) = self.buffer.get() {
            buffer.budget.wait_below_limit();
        }
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
        let batch = checked_upserts(&change)?;
        let keyed = dataset == Dataset::Apc;
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

    /// Writes the plan's segments, then commits everything in one durable catalog transaction;
    /// or, for a buffered store, buffers the rows and commits without waiting for the disk.
    fn commit(
        &self,
        plan: apply::Plan,
        partitions: Vec<apply::PartitionRows>,
        batch: &RecordBatch,
        change: &Change,
        bulk_marker: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<ApplyCounts> {
        match self.buffer.get() {
            Some(buffer) => {
                self.commit_buffered(buffer, plan, partitions, batch, change, bulk_marker)
            }
            None => self.commit_written(plan, partitions, batch, change, bulk_marker),
        }
    }

    /// The next segment id to give out.
    pub(super) fn next_segment(&self) -> Result<u64> {
        Ok(match self.db.get(keys::NEXT_SEGMENT)? {
            Some(v) => keys::u64_value(&v, "segment counter")?,
            None => 1,
        })
    }

    fn commit_buffered(
        &self,
        buffer: &super::buffer::WriteBuffer,
        mut plan: apply::Plan,
        partitions: Vec<apply::PartitionRows>,
        batch: &RecordBatch,
        change: &Change,
        bulk_marker: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<ApplyCounts> {
        let dataset = change.meta.dataset;
        let version = plan.counts.version;
        let mut next_segment = self.next_segment()?;
        let mut ops = catalog::Batch::default();
        let mut pieces = Vec::with_capacity(partitions.len());
        for part in partitions {
            let (id, start) = match buffer.open_segment(dataset, &part.provider) {
                Some(open) => open,
                None => {
                    let id = next_segment;
                    next_segment += 1;
                    let entry = SegmentEntry::buffered(id, dataset, &part.provider, version);
                    ops.insert(keys::segment(dataset, id), entry.encode()?);
                    (id, 0)
                }
            };
            let rows: Vec<u32> = part.rows.iter().map(|r| r.1 as u32).collect();
            let taken = segment::take_rows(batch, &rows)?;
            for (pos, (rid, _, activity)) in part.rows.iter().enumerate() {
                let live = Live {
                    segment: id,
                    row: start + pos as u32,
                    activity: *activity,
                };
                plan.place(rid, live);
            }
            let piece = Piece {
                start,
                version,
                months: part.months,
                batch: taken,
            };
            pieces.push((id, dataset, part.provider, piece));
        }
        self.change_ops(&plan, change, bulk_marker, next_segment, &mut ops)?;
        // Pieces before the commit that names them: a read at an earlier version skips them.
        buffer.add(pieces);
        if let Err(e) = self.db.apply(ops, false) {
            buffer.remove_version(version);
            return Err(e);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        debug!(version, "change buffered");
        Ok(plan.counts)
    }

    /// The catalog writes of a change besides its segments: the plan's record index writes,
    /// activity counts, the submission's outcome, the bulk marker and the counters.
    fn change_ops(
        &self,
        plan: &apply::Plan,
        change: &Change,
        bulk_marker: Option<(Vec<u8>, Vec<u8>)>,
        next_segment: u64,
        ops: &mut catalog::Batch,
    ) -> Result<()> {
        let meta = &change.meta;
        let dataset = meta.dataset;
        let version = plan.counts.version;
        plan.write_to(ops)?;
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
        Ok(())
    }

    fn commit_written(
        &self,
        mut plan: apply::Plan,
        partitions: Vec<apply::PartitionRows>,
        batch: &RecordBatch,
        change: &Change,
        bulk_marker: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<ApplyCounts> {
        let dataset = change.meta.dataset;
        let version = plan.counts.version;
        let mut next_segment = self.next_segment()?;
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
            .map(|(_, file, rows, part)| {
                segment::write(
                    self.disk.as_ref(),
                    &self.dir,
                    file,
                    batch,
                    rows,
                    &part.months,
                )
            })
            .collect();
        let mut hot = Vec::new();
        let outcome = (|| -> Result<()> {
            for ((id, file, rows, part), written) in jobs.into_iter().zip(sizes) {
                let (bytes, rows_written) = written?;
                // The catalog's row count is what every read trusts: the file must hold exactly it.
                if rows_written.num_rows() != rows.len() {
                    return Err(Error::Internal(format!(
                        "segment {file}: wrote {} rows, the catalog would record {}",
                        rows_written.num_rows(),
                        rows.len()
                    )));
                }
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
                let _ = self.disk.remove_file(path);
            }
            return Err(e);
        }

        let mut ops = catalog::Batch::default();
        for entry in &entries {
            ops.insert(keys::segment(dataset, entry.id), entry.encode()?);
        }
        self.change_ops(&plan, change, bulk_marker, next_segment, &mut ops)?;
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
        let written = self.db.apply(ops, self.commits_durable());
        if written.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        written?;
        Ok(())
    }
}

impl Store {
    /// Whether a change's commit is durable by itself; a buffered store's commits become
    /// durable at checkpoints ([`super::flush`]).
    pub(super) fn commits_durable(&self) -> bool {
        self.buffer.get().is_none()
    }
}

pub(super) fn fmt_datetime(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// The change's upserts on the stored schema, checked against what the change says of them: a
/// mismatch is a bug, or a replica whose build differs from the leader's.
fn checked_upserts(change: &Change) -> Result<RecordBatch> {
    let dataset = change.meta.dataset;
    let batch = RecordBatch::try_new(stored_schema(dataset), change.upserts.columns().to_vec())
        .map_err(|e| {
            Error::Internal(format!(
                "upserts do not have the stored schema of {dataset}: {e}"
            ))
        })?;
    if change.upsert_ordinals.len() + change.rederived.len() != batch.num_rows() {
        return Err(Error::Internal(format!(
            "{} upsert ordinals and {} re-derived rows for {} upsert rows",
            change.upsert_ordinals.len(),
            change.rederived.len(),
            batch.num_rows()
        )));
    }
    let keyed = dataset == Dataset::Apc;
    let expected_keys = if keyed { batch.num_rows() } else { 0 };
    if change.spell_keys.len() != expected_keys {
        return Err(Error::Internal(format!(
            "{} spell keys for {} {dataset} upsert rows",
            change.spell_keys.len(),
            batch.num_rows()
        )));
    }
    Ok(batch)
}
