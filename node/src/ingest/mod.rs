//! The ingest pipeline: one submission file in, one [`SubmissionReport`] out.
//!
//! ```text
//!  bytes ─► parse (R01-R04) ─► validate::submission_issues (R05, R06, R08) ─┐ any finding:
//!                                                                           ├─► rejected, nothing stored
//!        ─► validate::record_warnings (W01-W09) ─► derive (spells, HRG, price)
//!        ─► encode (stored Arrow schema) ─► Store::apply (R07, stale/replace/delete, segments)
//! ```
//!
//! Derivation happens once, here, before the change is applied: a replica that applies the change
//! stores what the leader derived and never re-derives (prices cannot diverge between replicas).

mod csv;
mod dates;
pub mod encode;
pub mod files;
pub mod local;
mod pages;
mod parquet;
pub mod parse;
mod record;
mod spells;

use crate::derive::{configured, derive};
use crate::limits::SubmissionLimits;
use crate::model::{Dataset, SubmissionMeta};
use crate::refdata::RefData;
use crate::report::{SubmissionReport, WarningTally};
use crate::store::{
    ApplyCounts, ApplyOutcome, Change, DeleteKey, Precondition, Store, StoredSubmission,
};
use crate::validate::{record_warnings, submission_issues};
use crate::{Error, Result};
use spells::SpellContext;
use tracing::{info, warn};

/// Validates, derives, prices and stores one submission on a single node: [`prepare`], then
/// [`commit`].
///
/// A rejected submission is an `Ok` report with outcome `Rejected` (nothing stored). A submission
/// whose `(sender, submission_id)` was already processed gets its original report with `resent`.
/// `Err` means the node failed (disk, catalog), or the submission is over one of `limits` (which
/// is not recorded: see [`parse::parse_limited`]).
pub fn submit(
    refdata: &RefData,
    store: &Store,
    meta: &SubmissionMeta,
    file: &str,
    bytes: &[u8],
    limits: &SubmissionLimits,
) -> Result<SubmissionReport> {
    // Alone on this store nothing moves between prepare and commit; should a caller apply other
    // changes concurrently, derive again.
    loop {
        match prepare(refdata, store, meta, file, bytes, limits)? {
            Prepared::Resent(report) => return Ok(*report),
            Prepared::Commit(command) => match commit(store, command) {
                Err(Error::Conflict(moved)) => info!("deriving again: {moved}"),
                other => return other,
            },
        }
    }
}

/// What a submission becomes before it touches the store: the unit a Raft entry carries.
#[derive(Debug, Clone)]
pub enum Command {
    /// Rejected before apply (R01-R06, R08): only the report is stored.
    Reject {
        meta: SubmissionMeta,
        report: SubmissionReport,
    },
    /// Validated and derived: apply it (it may still be refused by R07 or be a resend).
    Apply {
        change: Box<Change>,
        report: SubmissionReport,
    },
}

/// The outcome of [`prepare`].
#[derive(Debug)]
pub enum Prepared {
    /// Already processed: the original report, nothing to commit.
    Resent(Box<SubmissionReport>),
    /// To be committed, on this node or through the shard's Raft log.
    Commit(Box<Command>),
}

/// Parses, validates, derives and prices a submission: everything that needs reference data and
/// CPU, done once (on the shard leader), so that replicas only [`commit`] what it produced.
/// A submission over `limits` is `Err(InvalidArgument)` naming the limit, and nothing is recorded.
pub fn prepare(
    refdata: &RefData,
    store: &Store,
    meta: &SubmissionMeta,
    file: &str,
    bytes: &[u8],
    limits: &SubmissionLimits,
) -> Result<Prepared> {
    check_envelope_text(meta)?;
    if let Some(previous) = store.submission(&meta.sender, &meta.submission_id)? {
        return resent(meta, &previous).map(|r| Prepared::Resent(Box::new(r)));
    }

    let mut report = SubmissionReport::new(meta, file);
    let records = match parse::parse_limited(meta.dataset, bytes, limits)? {
        Ok(records) => records,
        Err(rejected) => return Ok(rejection(meta, report, rejected.issues, rejected.more)),
    };
    report.records = records.len() as u64;
    let issues = submission_issues(meta, &records, refdata);
    if !issues.is_empty() {
        let more = issues.len().saturating_sub(parse::MAX_ISSUES) as u64;
        let listed = issues.into_iter().take(parse::MAX_ISSUES).collect();
        return Ok(rejection(meta, report, listed, more));
    }

    let mut tally = WarningTally::default();
    let warnings: Vec<_> = records
        .iter()
        .map(|r| {
            let w = record_warnings(meta, r, refdata);
            w.iter()
                .for_each(|rule| tally.add(rule, &r.common.cds_unique_id));
            w
        })
        .collect();
    report.warnings = tally.finish();

    let context = match meta.dataset {
        Dataset::Apc => spells::context(store, meta, &records)?,
        Dataset::Op | Dataset::Ec => SpellContext::none(&records, &meta.protocol),
    };
    let grouper = configured(refdata);
    let derivation = derive(
        grouper.as_ref(),
        refdata,
        records,
        warnings,
        &context.live,
        context.stored,
    );
    let mut upserts = derivation.records;
    let keep: Vec<bool> = upserts.iter().map(|d| !d.record.is_delete()).collect();
    let live = only_kept(context.live, &keep);
    let mut spell_keys = only_kept(context.keys, &keep);
    // Deletions become keys and leave the vector in place: derived records are large, and
    // moving thousands of them into two new vectors was a tenth of a node's ingest time.
    let deletes = upserts
        .iter()
        .filter(|d| d.record.is_delete())
        .filter_map(|d| {
            Some(DeleteKey {
                applicable: d.record.common.cds_applicable_datetime?,
                ordinal: d.record.ordinal,
                cds_unique_id: d.record.common.cds_unique_id.clone(),
            })
        })
        .collect();
    upserts.retain(|d| !d.record.is_delete());
    let upsert_ordinals = upserts.iter().map(|d| d.record.ordinal).collect();
    let mut batch = encode::encode(meta.dataset, &upserts)?;
    drop(upserts);
    let mut rederived = Vec::with_capacity(derivation.rederived.len());
    if !derivation.rederived.is_empty() {
        let mut rows = Vec::with_capacity(derivation.rederived.len());
        for (k, row) in derivation.rederived {
            rederived.push(context.stored_versions[k]);
            spell_keys.push(context.stored_keys[k].clone());
            rows.push(row);
        }
        let again = encode::encode(meta.dataset, &rows)?;
        batch = arrow::compute::concat_batches(&batch.schema(), [&batch, &again])?;
    }
    if meta.dataset != Dataset::Apc {
        spell_keys.clear();
    }

    let change = Change {
        meta: meta.clone(),
        upserts: batch,
        upsert_ordinals,
        deletes,
        report: report.to_json(),
        spell_keys,
        rederived,
        precondition: context.spells.map(|spells| Precondition { spells, live }),
    };
    Ok(Prepared::Commit(Box::new(Command::Apply {
        change: Box::new(change),
        report,
    })))
}

/// The items of `v` whose `keep` holds.
fn only_kept<T>(v: Vec<T>, keep: &[bool]) -> Vec<T> {
    v.into_iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(x, _)| x)
        .collect()
}

/// Applies a prepared command to the store. Deterministic: every replica that commits the same
/// commands in the same order reaches the same catalog, versions and reports.
pub fn commit(store: &Store, command: Box<Command>) -> Result<SubmissionReport> {
    match *command {
        Command::Reject { meta, report } => record_rejection(store, &meta, report),
        Command::Apply {
            mut change,
            mut report,
        } => {
            let n = change.upserts.num_rows();
            if n > 1 && change.rederived.is_empty() && crate::broken::broken("partial-apply") {
                change.upserts = change.upserts.slice(0, n / 2);
                change.upsert_ordinals.truncate(n / 2);
                if !change.spell_keys.is_empty() {
                    change.spell_keys.truncate(n / 2);
                }
            }
            let meta = change.meta.clone();
            match store.apply(*change)? {
                ApplyOutcome::Applied(counts) => {
                    fill_counts(&mut report, &counts);
                    info!(
                        sender = %meta.sender, submission = %meta.submission_id, dataset = %meta.dataset,
                        version = counts.version, records = report.records, inserted = counts.inserted,
                        replaced = counts.replaced, deleted = counts.deleted, stale = counts.stale,
                        "submission accepted"
                    );
                    Ok(report)
                }
                ApplyOutcome::AlreadyApplied(previous) => resent(&meta, &previous),
                ApplyOutcome::Rejected(issue) => {
                    let report = report.reject(vec![issue], 0);
                    record_rejection(store, &meta, report)
                }
                ApplyOutcome::Conflict(moved) => Err(Error::Conflict(moved)),
            }
        }
    }
}

/// The original report of a submission already processed; the store keeps the counts beside the
/// report it was given before applying.
fn resent(meta: &SubmissionMeta, previous: &StoredSubmission) -> Result<SubmissionReport> {
    let mut report =
        SubmissionReport::from_json(&previous.report).map_err(|e| Error::Corruption {
            what: format!("stored report of {}/{}", meta.sender, meta.submission_id),
            message: e.to_string(),
        })?;
    if let Some(counts) = &previous.counts {
        fill_counts(&mut report, counts);
    }
    report.resent = true;
    Ok(report)
}

fn fill_counts(report: &mut SubmissionReport, counts: &ApplyCounts) {
    report.version = Some(counts.version);
    report.inserted = counts.inserted;
    report.replaced = counts.replaced;
    report.deleted = counts.deleted;
    report.bulk_deleted = counts.bulk_deleted;
    report.stale = counts.stale;
    report.rederived = counts.rederived;
}

fn rejection(
    meta: &SubmissionMeta,
    report: SubmissionReport,
    issues: Vec<crate::model::Issue>,
    more: u64,
) -> Prepared {
    Prepared::Commit(Box::new(Command::Reject {
        meta: meta.clone(),
        report: report.reject(issues, more),
    }))
}

fn record_rejection(
    store: &Store,
    meta: &SubmissionMeta,
    report: SubmissionReport,
) -> Result<SubmissionReport> {
    if let Some(previous) = store.submission(&meta.sender, &meta.submission_id)? {
        // A replayed Raft entry or a concurrent resend: the first outcome stands.
        return resent(meta, &previous);
    }
    if let Some(r) = &report.rejection {
        warn!(
            sender = %meta.sender, submission = %meta.submission_id, file = %report.file,
            "submission rejected: {}", r.summary()
        );
    }
    store.record_rejected(meta, report.to_json())?;
    Ok(report)
}

/// The envelope's own text must be usable as catalog keys: refuse it before anything else.
fn check_envelope_text(meta: &SubmissionMeta) -> Result<()> {
    let ok = |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic());
    if !ok(&meta.sender) || !ok(&meta.submission_id) {
        return Err(Error::InvalidArgument(format!(
            "sender '{}' and submission id '{}' must be 1-64 printable ASCII characters",
            meta.sender, meta.submission_id
        )));
    }
    Ok(())
}
