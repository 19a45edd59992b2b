//! Single-node storage: immutable Parquet+zstd segments per (dataset, provider, activity month),
//! with a sled catalog that makes every change atomic and versioned.
//!
//! INTERFACE SKELETON — the bodies are being written (see the store helper's task).

use crate::Result;
use crate::model::{Dataset, Issue, SubmissionMeta};
use arrow::array::RecordBatch;
use chrono::NaiveDateTime;
use std::path::Path;

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
}

/// A submission the store has already seen.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSubmission {
    /// The report given when it was first processed (JSON).
    pub report: Vec<u8>,
    /// The version it created, or `None` if it was rejected.
    pub version: Option<u64>,
}

/// The result of [`Store::apply`].
#[derive(Debug, Clone)]
pub enum ApplyOutcome {
    Applied(ApplyCounts),
    AlreadyApplied(StoredSubmission),
    /// Refused by a store-level rule (R07: duplicate or older bulk extract).
    Rejected(Issue),
}

/// Counts per dataset, for reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetStats {
    pub live_records: u64,
    pub segments: u64,
    pub segment_bytes: u64,
}

pub struct Store {}

impl Store {
    pub fn open(_dir: &Path) -> Result<Store> {
        todo!()
    }
    pub fn submission(&self, _sender: &str, _id: &str) -> Result<Option<StoredSubmission>> {
        todo!()
    }
    pub fn apply(&self, _change: Change) -> Result<ApplyOutcome> {
        todo!()
    }
    pub fn record_rejected(&self, _meta: &SubmissionMeta, _report: Vec<u8>) -> Result<()> {
        todo!()
    }
    /// Live rows of a dataset (replaced and deleted rows removed), in the stored schema.
    pub fn scan_live(&self, _dataset: Dataset) -> Result<Vec<RecordBatch>> {
        todo!()
    }
    pub fn stats(&self, _dataset: Dataset) -> Result<DatasetStats> {
        todo!()
    }
    /// The latest version (0 for an empty store).
    pub fn version(&self) -> Result<u64> {
        todo!()
    }
}
