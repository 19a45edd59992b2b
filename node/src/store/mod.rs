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
//! **A Raft replica's store buffers** ([`buffer`], [`flush`]): its log is already the
//! write-ahead log, so step 2 keeps the rows in memory, in one open segment per (dataset,
//! provider) that takes the rows of many changes, and step 3 commits without an fsync. A
//! checkpoint (by size, age, budget, before a snapshot dump or a compaction's install, on close)
//! writes the buffered segments as files and makes the catalog durable in one commit; durable
//! commits happen only there, so after a crash the catalog is the last checkpoint's and the log
//! applies the rest again.
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
//! one version without holding off writers; segment files are immutable, and a file compaction
//! replaced is deleted only once no read that could name it is alive ([`retire`]).
//!
//! **Compaction** ([`compact`]) merges a provider's small segments beside applies and reads: it
//! plans and writes the merged segment without the writer lock, which it takes only to install
//! the result against the catalog as it is then.

mod apply;
pub mod buffer;
#[cfg(test)]
mod buffer_tests;
mod cache;
mod catalog;
mod change;
mod compact;
#[cfg(test)]
mod compact_tests;
mod engine;
mod files;
mod flush;
mod keys;
mod listing;
mod outcome;
#[cfg(test)]
mod power_tests;
mod replica;
mod retire;
mod segment;
mod spell_view;
mod spells;
#[cfg(test)]
mod tests;
pub mod totals;
mod view;
mod write;

pub use buffer::{BufferBudget, BufferSettings};
pub use cache::{DEFAULT_COLUMN_BYTES, DEFAULT_FOOTER_BYTES, SegmentCache};
pub use change::{Change, DeleteKey};
pub use compact::CompactStats;
pub use engine::{STORE_FORMAT, Store};
pub(crate) use files::ParquetFile;
pub use listing::{Listing, MonthRun, SegmentView, check_freeze_name};
pub use outcome::{ApplyCounts, ApplyOutcome, DatasetStats, StoredSubmission};
pub use replica::{ContentDigest, DumpItem};
pub use retire::Pin;
pub use segment::{decode as decode_segment, encode as encode_segment};
pub use spell_view::SpellSnapshot;
pub use spells::{Precondition, SpellKey, SpellsRead};
