//! Reading segments as chunks: the rows of one activity month of one segment (so one partition:
//! provider and month are constants of a chunk), with the rows the view hides, from the node's
//! segment cache or from Parquet.
//!
//! ```text
//!  segment ─► month runs kept by the partition filters ─► buffered? ─► slices of its pieces
//!                                                        └► columns cached? ─► slices of them
//!                                                        └► Parquet: cached footer, only the
//!                                                           row groups of kept months, only the
//!                                                           wanted columns (whole segment when
//!                                                           the cache keeps columns)
//! ```

use super::spec::ScanStats;
use crate::model::Dataset;
use crate::schema::stored_schema;
use crate::store::{SegmentView, Store};
use crate::{Error, Result};
use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::concat;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use std::sync::Arc;

/// Rows per batch decoded from Parquet.
const BATCH_ROWS: usize = 64 * 1024;

/// One partition's rows of one segment.
pub struct Chunk<'a> {
    /// The month run it belongs to (index in the segment's `months`).
    pub run: usize,
    pub provider: &'a str,
    /// `YYYY-MM`.
    pub month: &'a str,
    /// The wanted columns (in stored-schema order) of the chunk's rows.
    pub batch: RecordBatch,
    /// Rows of `batch` the view does not see, ascending.
    pub hidden: &'a [u32],
}

/// Which stored columns a read needs, in stored-schema order, and their schema.
#[derive(Debug, Clone)]
pub struct Projection {
    pub indices: Vec<usize>,
    pub schema: SchemaRef,
}

impl Projection {
    pub fn new(dataset: Dataset, names: &[&str]) -> Result<Projection> {
        let schema = stored_schema(dataset);
        let mut indices = names
            .iter()
            .map(|c| {
                schema
                    .index_of(c)
                    .map_err(|_| Error::InvalidArgument(format!("{dataset} has no column {c}")))
            })
            .collect::<Result<Vec<_>>>()?;
        indices.sort_unstable();
        indices.dedup();
        let schema = Arc::new(schema.project(&indices)?);
        Ok(Projection { indices, schema })
    }
}

/// Feeds `sink` the chunks of the month runs of `seg` that `keep` selects (by run index), in row
/// order.
pub fn read_chunks(
    store: &Store,
    seg: &SegmentView,
    dataset: Dataset,
    projection: &Projection,
    keep: &[bool],
    stats: &mut ScanStats,
    sink: &mut dyn FnMut(Chunk<'_>) -> Result<()>,
) -> Result<()> {
    if !keep.iter().any(|k| *k) {
        stats.segments_pruned += 1;
        return Ok(());
    }
    stats.segments_scanned += 1;
    let corrupt = |message: String| Error::Corruption {
        what: format!("segment {}", seg.path.display()),
        message,
    };
    let runs: Vec<(usize, usize)> = seg
        .months
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(m, _)| (m.start as usize, (m.start + m.rows) as usize))
        .collect();
    // Every wanted value is a constant of the partition (or nothing is wanted): the catalog
    // knows the rows, no file is read.
    if projection.indices.is_empty() {
        let mut counted = |_: usize, len: usize| -> Result<RecordBatch> {
            Ok(RecordBatch::try_new_with_options(
                projection.schema.clone(),
                Vec::new(),
                &RecordBatchOptions::new().with_row_count(Some(len)),
            )?)
        };
        return emit_runs(seg, &runs, 0, seg.rows as usize, &mut counted, stats, sink);
    }
    if let Some(pieces) = &seg.pieces {
        return read_pieces(seg, pieces, projection, &runs, stats, sink);
    }
    let (cache, uid) = store.cache();
    if let Some(columns) = cache.columns(uid, seg.id, &projection.indices) {
        stats.segments_hot += 1;
        if columns.iter().any(|c| c.len() != seg.rows as usize) {
            return Err(corrupt(format!(
                "{} rows catalogued, other counts in memory",
                seg.rows
            )));
        }
        let mut slice = |start: usize, len: usize| -> Result<RecordBatch> {
            let cols = columns.iter().map(|c| c.slice(start, len)).collect();
            Ok(RecordBatch::try_new(projection.schema.clone(), cols)?)
        };
        return emit_runs(seg, &runs, 0, seg.rows as usize, &mut slice, stats, sink);
    }

    let parquet_error = |e: parquet::errors::ParquetError| corrupt(e.to_string());
    let file = store
        .disk()
        .open(&seg.path, sus_disk::OpenMode::Read)
        .and_then(crate::store::ParquetFile::new)
        .map_err(|e| Error::io(&seg.path, e))?;
    let footer = match cache.footer(uid, seg.id) {
        Some(f) => f,
        None => {
            let options = ArrowReaderOptions::new().with_schema(stored_schema(dataset));
            let f = ArrowReaderMetadata::load(&file, options).map_err(parquet_error)?;
            cache.insert_footer(uid, seg.id, f.clone());
            f
        }
    };
    // Row groups hold whole months (several, or part of one too large for a group): read the
    // groups that overlap a kept month.
    let whole = cache.keeps_columns();
    let (groups, group_ranges) =
        select_groups(footer.metadata().row_groups(), &runs, whole, seg, stats).map_err(corrupt)?;
    let mask = ProjectionMask::roots(
        footer.metadata().file_metadata().schema_descr(),
        projection.indices.iter().copied(),
    );
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, footer)
        .with_row_groups(groups)
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_error)?;
    // The reader yields the file's types; rebuilding each batch on our schema checks them.
    let typed = |batch: std::result::Result<RecordBatch, arrow::error::ArrowError>| {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        Ok::<_, Error>(RecordBatch::try_new(
            projection.schema.clone(),
            batch.columns().to_vec(),
        )?)
    };
    if whole {
        // The whole segment's columns: keep them, then slice as from memory.
        let batches = reader.map(typed).collect::<Result<Vec<_>>>()?;
        let columns = keep_whole(cache, uid, seg, &projection.indices, &batches)?;
        let mut slice = |start: usize, len: usize| -> Result<RecordBatch> {
            let cols = columns.iter().map(|c| c.slice(start, len)).collect();
            Ok(RecordBatch::try_new(projection.schema.clone(), cols)?)
        };
        return emit_runs(seg, &runs, 0, seg.rows as usize, &mut slice, stats, sink);
    }
    // Only the selected row groups were read, back to back: map each batch (which may span
    // groups) onto segment rows.
    let mut read = 0usize;
    for batch in reader {
        let batch = typed(batch)?;
        emit_batch(seg, &runs, &group_ranges, &batch, read, stats, sink)?;
        read += batch.num_rows();
    }
    let selected: usize = group_ranges.iter().map(|(a, b)| b - a).sum();
    if read != selected {
        return Err(corrupt(format!(
            "{read} rows read from row groups of {selected}"
        )));
    }
    Ok(())
}

/// The chunks of a buffered segment: each run lies inside one piece, so a chunk is a slice of it.
fn read_pieces(
    seg: &SegmentView,
    pieces: &[Arc<crate::store::buffer::Piece>],
    projection: &Projection,
    runs: &[(usize, usize)],
    stats: &mut ScanStats,
    sink: &mut dyn FnMut(Chunk<'_>) -> Result<()>,
) -> Result<()> {
    stats.segments_hot += 1;
    let mut slice = |start: usize, len: usize| -> Result<RecordBatch> {
        let i = pieces.partition_point(|p| p.start as usize <= start);
        let piece = i
            .checked_sub(1)
            .map(|i| &pieces[i])
            .filter(|p| start + len <= (p.start + p.rows()) as usize)
            .ok_or_else(|| Error::Internal(format!("rows {start}+{len} span buffered pieces")))?;
        let at = start - piece.start as usize;
        let cols = (projection.indices.iter())
            .map(|&c| piece.batch.column(c).slice(at, len))
            .collect();
        Ok(RecordBatch::try_new(projection.schema.clone(), cols)?)
    };
    emit_runs(seg, runs, 0, seg.rows as usize, &mut slice, stats, sink)
}

/// The whole segment's columns (`batches` read back to back), kept in the cache.
fn keep_whole(
    cache: &crate::store::SegmentCache,
    uid: u64,
    seg: &SegmentView,
    indices: &[usize],
    batches: &[RecordBatch],
) -> Result<Vec<ArrayRef>> {
    let columns = (0..indices.len())
        .map(|c| {
            let parts: Vec<&dyn arrow::array::Array> =
                batches.iter().map(|b| b.column(c).as_ref()).collect();
            Ok(concat(&parts)?)
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    if columns.iter().any(|c| c.len() != seg.rows as usize) {
        return Err(Error::Corruption {
            what: format!("segment {}", seg.path.display()),
            message: format!("short read of {} rows", seg.rows),
        });
    }
    let entries: Vec<(usize, ArrayRef)> = indices
        .iter()
        .copied()
        .zip(columns.iter().cloned())
        .collect();
    cache.insert_columns(uid, seg.id, &entries);
    Ok(columns)
}

/// Row group indices to read, and the segment rows each holds.
type SelectedGroups = (Vec<usize>, Vec<(usize, usize)>);

/// The row groups of a segment to read: those overlapping a kept month run (every one when
/// `whole`), with their segment row ranges. `Err`: the file's rows are not the catalog's.
fn select_groups(
    row_groups: &[parquet::file::metadata::RowGroupMetaData],
    runs: &[(usize, usize)],
    whole: bool,
    seg: &SegmentView,
    stats: &mut ScanStats,
) -> std::result::Result<SelectedGroups, String> {
    let mut groups = Vec::new();
    let mut group_ranges = Vec::new();
    let mut start = 0usize;
    for (i, rg) in row_groups.iter().enumerate() {
        let end = start + rg.num_rows() as usize;
        if whole || runs.iter().any(|&(a, b)| a < end && start < b) {
            groups.push(i);
            group_ranges.push((start, end));
        } else {
            stats.row_groups_pruned += 1;
        }
        start = end;
    }
    if start != seg.rows as usize {
        return Err(format!("{start} rows in the file, {} catalogued", seg.rows));
    }
    Ok((groups, group_ranges))
}

/// Emits the kept rows of `batch`, which holds rows `read..` of the selected row groups read
/// back to back (it may span groups).
fn emit_batch(
    seg: &SegmentView,
    runs: &[(usize, usize)],
    group_ranges: &[(usize, usize)],
    batch: &RecordBatch,
    read: usize,
    stats: &mut ScanStats,
    sink: &mut dyn FnMut(Chunk<'_>) -> Result<()>,
) -> Result<()> {
    let n = batch.num_rows();
    let mut group_start = 0usize;
    for &(a, b) in group_ranges {
        let (lo, hi) = (group_start.max(read), (group_start + b - a).min(read + n));
        if lo < hi {
            // Read positions [lo, hi) are segment rows from `a + lo - group_start`.
            let first = a + lo - group_start;
            let mut slice = |start: usize, len: usize| -> Result<RecordBatch> {
                Ok(batch.slice(lo - read + (start - first), len))
            };
            emit_runs(seg, runs, first, first + hi - lo, &mut slice, stats, sink)?;
        }
        group_start += b - a;
    }
    Ok(())
}

/// Emits the parts of the kept `runs` inside segment rows `[from, to)`, each as a chunk built by
/// `rows(start, len)` (segment row numbers).
fn emit_runs(
    seg: &SegmentView,
    runs: &[(usize, usize)],
    from: usize,
    to: usize,
    rows: &mut dyn FnMut(usize, usize) -> Result<RecordBatch>,
    stats: &mut ScanStats,
    sink: &mut dyn FnMut(Chunk<'_>) -> Result<()>,
) -> Result<()> {
    for &(a, b) in runs {
        let (start, end) = (a.max(from), b.min(to));
        if start >= end {
            continue;
        }
        let Some(run) = seg
            .months
            .iter()
            .position(|m| (m.start as usize) <= start && start < (m.start + m.rows) as usize)
        else {
            continue;
        };
        let lo = seg.hidden.partition_point(|&h| (h as usize) < start);
        let hi = seg.hidden.partition_point(|&h| (h as usize) < end);
        let hidden_abs = &seg.hidden[lo..hi];
        let hidden: Vec<u32> = hidden_abs.iter().map(|h| h - start as u32).collect();
        let visible = (end - start - hidden.len()) as u64;
        if visible == 0 {
            continue;
        }
        stats.rows_scanned += visible;
        sink(Chunk {
            run,
            provider: &seg.provider,
            month: &seg.months[run].month,
            batch: rows(start, end - start)?,
            hidden: &hidden,
        })?;
    }
    Ok(())
}
