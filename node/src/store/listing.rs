//! What a view lists: the segments a read sees at a version, their month runs and hidden rows,
//! and the store's memo of recent listings.

use crate::model::Dataset;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// One segment as a view sees it.
#[derive(Debug, Clone)]
pub struct SegmentView {
    pub id: u64,
    pub provider: String,
    /// Its partitions in row order: each activity month's first row and row count.
    pub months: Vec<MonthRun>,
    pub rows: u32,
    pub bytes: u64,
    /// Its file (empty while buffered).
    pub path: PathBuf,
    /// While the segment is in the write buffer: the pieces the view sees (their months are
    /// `months`, each run inside one piece).
    pub pieces: Option<super::buffer::Pieces>,
    /// Rows the view does not see (inserted after it, or deleted at or before it), ascending.
    pub hidden: Vec<u32>,
}

/// The rows of one activity month in a segment: a partition (provider, month) of its dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthRun {
    /// `YYYY-MM`.
    pub month: String,
    pub start: u32,
    pub rows: u32,
}

/// The segments of one dataset as seen at one version.
#[derive(Debug, Clone)]
pub struct Listing {
    pub dataset: Dataset,
    /// The version read.
    pub version: u64,
    /// Segments with at least one visible row, in segment id order.
    pub segments: Vec<SegmentView>,
    /// Keeps the listed files while the listing is read.
    pub pin: super::retire::Pin,
}

impl Listing {
    pub fn visible_rows(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| u64::from(s.rows) - s.hidden.len() as u64)
            .sum()
    }
}

/// Listings made since the catalog's segments last changed, by (dataset, version asked): a
/// listing decodes every segment entry and scans every deletion mark, which a selective query
/// would otherwise pay on every call.
#[derive(Default)]
pub(super) struct Listings {
    pub generation: u64,
    pub made: HashMap<(Dataset, Option<u64>), Arc<Listing>>,
}

/// A freeze point name: 1 to 200 printable characters.
pub fn check_freeze_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "freeze point name '{name}' must be 1 to 200 printable characters"
        )));
    }
    Ok(())
}
