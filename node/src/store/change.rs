//! A change: one validated, derived submission as the store applies it.

use super::spells::{Precondition, SpellKey};
use crate::model::SubmissionMeta;
use arrow::array::RecordBatch;
use chrono::NaiveDateTime;

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
