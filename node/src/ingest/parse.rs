//! Submission files (CSV or Parquet) into typed [`Record`]s, with the whole-submission format rules
//! R01 (unreadable), R02 (header), R03 (mandatory item) and R04 (item format).
//!
//! Every byte here is untrusted: nothing panics on bad input (the Parquet reader, which can panic on
//! malformed files, runs under `catch_unwind`), and every finding names the record and the item.
//! Parsing does not stop at the first bad record: the report lists up to [`MAX_ISSUES`] of them.
//!
//! What a submission may make the node hold is bounded ([`SubmissionLimits`]): an item longer
//! than `max_field_bytes` is an `R04` finding on its record (and is never copied); more than
//! `max_submission_rows` records, or records that take more than `max_submission_decoded_mib`
//! once decoded, refuse the whole submission as soon as the count passes the limit
//! ([`parse_limited`]'s `Err`). A Parquet file is checked before anything is decoded (its
//! footer's row count, its pages' sizes: see [`super::parquet`]).

use crate::limits::{ROW_BYTES, SubmissionLimits, keys, setting};
use crate::model::{Dataset, Rule};
use crate::{Error, Result as NodeResult};

pub use super::record::{CDS_UNIQUE_ID_CHARS, MAX_ISSUES, Parsed, Rejected, parse_datetime};

/// Parses a submission file of `dataset` under the default limits; a file over them is an
/// `R01` rejection naming the limit. The format is recognised by content (Parquet's `PAR1`
/// magic), not by name.
pub fn parse(dataset: Dataset, bytes: &[u8]) -> Parsed {
    parse_limited(dataset, bytes, &SubmissionLimits::default())
        .unwrap_or_else(|e| Err(Rejected::one(Rule::FileUnreadable, e.to_string())))
}

/// Parses a submission file of `dataset` within `limits`. `Err` (`InvalidArgument`, naming the
/// limit and its setting) when the file is larger than the node accepts: that is no property of
/// the data, so the submission is refused, not rejected (nothing is recorded, and it may be sent
/// again once the limit is raised or the file split).
pub fn parse_limited(
    dataset: Dataset,
    bytes: &[u8],
    limits: &SubmissionLimits,
) -> NodeResult<Parsed> {
    if bytes.len() > limits.max_bytes {
        return Err(Error::InvalidArgument(format!(
            "the submission file is {} bytes: over the limit of {} bytes (setting {})",
            bytes.len(),
            limits.max_bytes,
            setting(keys::MAX_SUBMISSION_MIB)
        )));
    }
    if bytes.is_empty() {
        return Ok(Err(Rejected::one(
            Rule::FileUnreadable,
            "the file is empty (0 bytes)".into(),
        )));
    }
    if bytes.starts_with(b"PAR1") {
        super::parquet::parse(dataset, bytes, limits)
    } else {
        super::csv::parse_csv(dataset, bytes, limits)
    }
}

/// The most a file's records can take decoded (what [`parse_limited`] counts against
/// `max_submission_decoded_mib`), known before parsing: for CSV the text of the fields is part of
/// the file and a record takes at least one line; a Parquet file may decode to any size, up to
/// the limit.
pub fn decoded_bound(bytes: &[u8], limits: &SubmissionLimits) -> u64 {
    if bytes.starts_with(b"PAR1") {
        return limits.max_decoded_bytes;
    }
    let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    (bytes.len() as u64)
        .saturating_add(lines.saturating_mul(ROW_BYTES))
        .min(limits.max_decoded_bytes)
}

#[cfg(test)]
mod tests;
