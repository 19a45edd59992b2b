//! The catalog's key layout and value encodings.
//!
//! Everything lives in one ordered table (see [`super::catalog`]), written one transaction per
//! change. Keys start with a readable prefix; the variable parts after it
//! are length-prefixed or fixed-width big-endian so that keys never collide (a sender may contain
//! `/`) and range scans by number or date are byte-ordered:
//!
//! | key                                                           | value                          |
//! |---------------------------------------------------------------|--------------------------------|
//! | `meta/version`                                                | u64: latest version            |
//! | `meta/next_segment`                                           | u64: next segment id           |
//! | `seg/<dataset>/<segment u64>`                                 | [`SegmentEntry`] (JSON)        |
//! | `del/<segment u64><row u32>`                                  | u64: version that deleted it   |
//! | `rec/<dataset>/<cds_unique_id>`                               | [`RecState`]                   |
//! | `bysender/<dataset>/<len u8><sender><activity date><id>`      | empty (live records only)      |
//! | `sub/<len u8><sender><submission id>`                         | [`StoredSubmission`] (7 × u64 counts, then the report) |
//! | `bulk/<dataset>/<len u8><sender><period start><period end>`   | i64 extract time + submission  |
//! | `freeze/<name>`                                               | u64: the version it froze      |
//! | `act/<dataset>/<len u8><provider><YYYY-MM><version u64>`       | 5 × u64: counts of the change  |
//! | `spell/<len u8><provider><digest 16><id>`, `epspell/<id>`     | the spell index (`spells.rs`)  |
//!
//! Dates are days since 1970 as `u32` with the sign bit flipped (ordered like the dates).

use super::outcome::{ApplyCounts, StoredSubmission};
use crate::model::Dataset;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

pub(super) const VERSION: &[u8] = b"meta/version";
pub(super) const NEXT_SEGMENT: &[u8] = b"meta/next_segment";

fn with_dataset(prefix: &str, dataset: Dataset) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(dataset.name().as_bytes());
    k.push(b'/');
    k
}

/// Appends a length-prefixed string (at most 255 bytes: callers check [`short_text`]).
fn push_text(k: &mut Vec<u8>, s: &str) {
    k.push(s.len() as u8);
    k.extend_from_slice(s.as_bytes());
}

/// Order-preserving bytes of a date (days since 1970).
pub(super) fn date_bytes(days: i32) -> [u8; 4] {
    ((days as u32) ^ 0x8000_0000).to_be_bytes()
}

/// A key component that must fit a length prefix.
pub(super) fn short_text(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 255 {
        return Err(Error::InvalidArgument(format!(
            "{what} '{s}' must be 1 to 255 bytes"
        )));
    }
    Ok(())
}

pub(super) fn segment_prefix(dataset: Dataset) -> Vec<u8> {
    with_dataset("seg/", dataset)
}

pub(super) fn segment(dataset: Dataset, id: u64) -> Vec<u8> {
    let mut k = segment_prefix(dataset);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(super) const SEGMENT_ANY: &[u8] = b"seg/";

pub(super) fn deleted_prefix(segment: u64) -> Vec<u8> {
    let mut k = b"del/".to_vec();
    k.extend_from_slice(&segment.to_be_bytes());
    k
}

pub(super) fn deleted(segment: u64, row: u32) -> Vec<u8> {
    let mut k = deleted_prefix(segment);
    k.extend_from_slice(&row.to_be_bytes());
    k
}

/// The row number of a `del/` key.
pub(super) fn deleted_row(key: &[u8]) -> Result<u32> {
    key.len()
        .checked_sub(4)
        .and_then(|at| key.get(at..))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| corrupt("deletion key", "too short"))
}

pub(super) fn record(dataset: Dataset, id: &str) -> Vec<u8> {
    let mut k = with_dataset("rec/", dataset);
    k.extend_from_slice(id.as_bytes());
    k
}

fn by_sender_prefix(dataset: Dataset, sender: &str) -> Vec<u8> {
    let mut k = with_dataset("bysender/", dataset);
    push_text(&mut k, sender);
    k
}

pub(super) fn by_sender(dataset: Dataset, sender: &str, activity: i32, id: &str) -> Vec<u8> {
    let mut k = by_sender_prefix(dataset, sender);
    k.extend_from_slice(&date_bytes(activity));
    k.extend_from_slice(id.as_bytes());
    k
}

/// The key range of a sender's live records with activity dates in `[start, end]` (days).
pub(super) fn by_sender_range(
    dataset: Dataset,
    sender: &str,
    start: i32,
    end: i32,
) -> (Vec<u8>, Vec<u8>) {
    let prefix = by_sender_prefix(dataset, sender);
    let mut from = prefix.clone();
    from.extend_from_slice(&date_bytes(start));
    let mut to = prefix;
    // An exclusive bound one day after the end; the end of time keeps every later key out anyway.
    to.extend_from_slice(&date_bytes(end.saturating_add(1)));
    if end == i32::MAX {
        to.push(0xff);
    }
    (from, to)
}

/// The `cds_unique_id` of a `bysender/` key of the given sender.
pub(super) fn by_sender_id(dataset: Dataset, sender: &str, key: &[u8]) -> Result<String> {
    let skip = by_sender_prefix(dataset, sender).len() + 4;
    let id = key
        .get(skip..)
        .ok_or_else(|| corrupt("sender index key", "too short"))?;
    String::from_utf8(id.to_vec()).map_err(|e| corrupt("sender index key", &e.to_string()))
}

/// Prefix of every submission outcome.
pub(super) const SUBMISSION_ANY: &[u8] = b"sub/";

pub(super) fn submission(sender: &str, id: &str) -> Vec<u8> {
    let mut k = b"sub/".to_vec();
    push_text(&mut k, sender);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Prefix of the per-partition counts of every change to `dataset`.
pub(super) fn activity_prefix(dataset: Dataset) -> Vec<u8> {
    with_dataset("act/", dataset)
}

pub(super) fn activity(dataset: Dataset, provider: &str, month: &str, version: u64) -> Vec<u8> {
    let mut k = activity_prefix(dataset);
    push_text(&mut k, provider);
    k.extend_from_slice(month.as_bytes());
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// (provider, month, version) of an `act/` key of `dataset`.
pub(super) fn decode_activity(dataset: Dataset, key: &[u8]) -> Result<(String, String, u64)> {
    let bad = || corrupt("activity key", "malformed");
    let rest = key.get(activity_prefix(dataset).len()..).ok_or_else(bad)?;
    let (&len, rest) = rest.split_first().ok_or_else(bad)?;
    let (provider, rest) = rest.split_at_checked(len as usize).ok_or_else(bad)?;
    let (month, version) = rest.split_at_checked(7).ok_or_else(bad)?;
    let version = u64_value(version, "activity key")?;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| bad());
    Ok((text(provider)?, text(month)?, version))
}

/// Prefix of every freeze point.
pub(super) const FREEZE_ANY: &[u8] = b"freeze/";

pub(super) fn freeze(name: &str) -> Vec<u8> {
    let mut k = FREEZE_ANY.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

pub(super) fn bulk(dataset: Dataset, sender: &str, start: i32, end: i32) -> Vec<u8> {
    let mut k = with_dataset("bulk/", dataset);
    push_text(&mut k, sender);
    k.extend_from_slice(&date_bytes(start));
    k.extend_from_slice(&date_bytes(end));
    k
}

pub(super) fn corrupt(what: &str, message: &str) -> Error {
    Error::Corruption {
        what: format!("catalog {what}"),
        message: message.to_string(),
    }
}

pub(super) fn u64_value(bytes: &[u8], what: &str) -> Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(what, "not an 8-byte number"))
}

/// A catalogued segment: one immutable Parquet file of one provider's rows of one dataset,
/// grouped by activity month (each month a contiguous run of rows in its own row groups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SegmentEntry {
    pub id: u64,
    pub dataset: Dataset,
    pub provider: String,
    /// The partitions it holds, in row order: (`YYYY-MM`, rows), months ascending within each
    /// change's rows (a segment written from the write buffer repeats them per change).
    pub months: Vec<(String, u32)>,
    pub rows: u32,
    pub bytes: u64,
    /// The version whose change wrote it (for a compacted segment, the latest of its rows).
    pub version: u64,
    /// Relative to the store directory, `/`-separated; empty while the segment is buffered
    /// (its rows, months and runs are then the write buffer's, and never durable).
    pub file: String,
    /// Compacted and buffer-written segments: `(first row, version)` runs giving the version
    /// that inserted each row. Empty: every row is of `version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<(u32, u64)>,
}

impl SegmentEntry {
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| corrupt("segment entry", &e.to_string()))
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentEntry> {
        serde_json::from_slice(bytes).map_err(|e| corrupt("segment entry", &e.to_string()))
    }

    /// The entry of a segment opened in the write buffer.
    pub fn buffered(id: u64, dataset: Dataset, provider: &str, version: u64) -> SegmentEntry {
        SegmentEntry {
            id,
            dataset,
            provider: provider.to_string(),
            months: Vec::new(),
            rows: 0,
            bytes: 0,
            version,
            file: String::new(),
            runs: Vec::new(),
        }
    }

    pub fn is_buffered(&self) -> bool {
        self.file.is_empty()
    }

    /// A buffered entry as a read sees it: the rows, months and runs of `pieces`.
    pub fn fill_from(&mut self, pieces: &[std::sync::Arc<super::buffer::Piece>]) {
        self.months = pieces.iter().flat_map(|p| p.months.clone()).collect();
        self.rows = pieces.last().map_or(0, |p| p.start + p.rows());
        self.runs = pieces.iter().map(|p| (p.start, p.version)).collect();
        if let Some(last) = self.runs.last() {
            self.version = last.1;
        }
    }

    /// The version that inserted each row.
    pub fn row_versions(&self) -> Vec<u64> {
        if self.runs.is_empty() {
            return vec![self.version; self.rows as usize];
        }
        let mut out = Vec::with_capacity(self.rows as usize);
        for (i, &(start, version)) in self.runs.iter().enumerate() {
            let end = self.runs.get(i + 1).map_or(self.rows, |r| r.0);
            out.extend(std::iter::repeat_n(
                version,
                end.saturating_sub(start) as usize,
            ));
        }
        out
    }

    /// The earliest version of any of its rows.
    pub fn first_version(&self) -> u64 {
        self.runs.iter().map(|r| r.1).min().unwrap_or(self.version)
    }
}

/// Where a live record's row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Live {
    pub segment: u64,
    pub row: u32,
    /// Activity date, days since 1970 (the `bysender/` key needs it to remove the entry).
    pub activity: i32,
}

/// The current state of one `cds_unique_id`: its stored version, live or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RecState {
    /// `cds_applicable_datetime` of the stored version, seconds since 1970.
    pub applicable: i64,
    /// The store version that last changed the record.
    pub version: u64,
    /// The sender of the stored version (or of the deletion).
    pub sender: String,
    /// `None` for a tombstone.
    pub live: Option<Live>,
}

impl RecState {
    // Layout: tag (1 live, 0 tombstone), applicable i64, version u64, [segment u64, row u32,
    // activity i32 when live], sender bytes. Binary because there is one per record.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(40 + self.sender.len());
        v.push(u8::from(self.live.is_some()));
        v.extend_from_slice(&self.applicable.to_be_bytes());
        v.extend_from_slice(&self.version.to_be_bytes());
        if let Some(l) = self.live {
            v.extend_from_slice(&l.segment.to_be_bytes());
            v.extend_from_slice(&l.row.to_be_bytes());
            v.extend_from_slice(&l.activity.to_be_bytes());
        }
        v.extend_from_slice(self.sender.as_bytes());
        v
    }

    pub fn decode(bytes: &[u8]) -> Result<RecState> {
        let bad = || corrupt("record state", "malformed value");
        let mut r = Reader(bytes);
        let tag = r.take::<1>().ok_or_else(bad)?[0];
        let applicable = i64::from_be_bytes(r.take().ok_or_else(bad)?);
        let version = u64::from_be_bytes(r.take().ok_or_else(bad)?);
        let live = match tag {
            0 => None,
            1 => Some(Live {
                segment: u64::from_be_bytes(r.take().ok_or_else(bad)?),
                row: u32::from_be_bytes(r.take().ok_or_else(bad)?),
                activity: i32::from_be_bytes(r.take().ok_or_else(bad)?),
            }),
            _ => return Err(bad()),
        };
        let sender = String::from_utf8(r.0.to_vec()).map_err(|_| bad())?;
        Ok(RecState {
            applicable,
            version,
            sender,
            live,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        <[u8; N]>::try_from(head).ok()
    }
}

// Layout: six u64 (version, inserted, replaced, deleted, bulk_deleted, stale; version 0 for a
// rejected submission, as versions start at 1), then the report.
pub(super) fn encode_submission(s: &StoredSubmission) -> Vec<u8> {
    let c = s.counts.unwrap_or_default();
    let mut v = Vec::with_capacity(56 + s.report.len());
    for n in [
        c.version,
        c.inserted,
        c.replaced,
        c.deleted,
        c.bulk_deleted,
        c.stale,
        c.rederived,
    ] {
        v.extend_from_slice(&n.to_be_bytes());
    }
    v.extend_from_slice(&s.report);
    v
}

pub(super) fn decode_submission(bytes: &[u8]) -> Result<StoredSubmission> {
    let (head, report) = bytes
        .split_at_checked(56)
        .ok_or_else(|| corrupt("submission entry", "too short"))?;
    let mut n = [0u64; 7];
    for (i, chunk) in head.chunks_exact(8).enumerate() {
        n[i] = u64_value(chunk, "submission entry")?;
    }
    let [
        version,
        inserted,
        replaced,
        deleted,
        bulk_deleted,
        stale,
        rederived,
    ] = n;
    Ok(StoredSubmission {
        report: report.to_vec(),
        counts: (version != 0).then_some(ApplyCounts {
            version,
            inserted,
            replaced,
            deleted,
            bulk_deleted,
            stale,
            rederived,
        }),
    })
}

/// An applied bulk extract: its extract time (seconds since 1970) and submission id.
pub(super) fn encode_bulk(extract: i64, submission_id: &str) -> Vec<u8> {
    let mut v = extract.to_be_bytes().to_vec();
    v.extend_from_slice(submission_id.as_bytes());
    v
}

pub(super) fn decode_bulk(bytes: &[u8]) -> Result<(i64, String)> {
    let bad = || corrupt("bulk extract entry", "malformed value");
    let (head, id) = bytes.split_at_checked(8).ok_or_else(bad)?;
    let extract = i64::from_be_bytes(<[u8; 8]>::try_from(head).map_err(|_| bad())?);
    let id = String::from_utf8(id.to_vec()).map_err(|_| bad())?;
    Ok((extract, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Record states round-trip, live and tombstone.
    #[test]
    fn record_state_round_trips() {
        for live in [
            None,
            Some(Live {
                segment: 7,
                row: 3,
                activity: -5,
            }),
        ] {
            let s = RecState {
                applicable: 1_717_232_400,
                version: 42,
                sender: "RRV/x".into(),
                live,
            };
            assert_eq!(RecState::decode(&s.encode()).expect("decodes"), s);
        }
    }

    // Date bytes sort like the dates, across the epoch.
    #[test]
    fn date_bytes_are_ordered() {
        let days = [i32::MIN, -400, -1, 0, 1, 19_800, i32::MAX];
        for w in days.windows(2) {
            assert!(date_bytes(w[0]) < date_bytes(w[1]));
        }
    }
}
