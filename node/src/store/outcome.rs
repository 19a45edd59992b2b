//! What applying a change did, and what the store remembers of each submission (the catalog
//! encodes both).

use crate::model::Issue;

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
