//! Segment files: immutable Parquet (zstd, column-chunk statistics), written durably before the
//! catalog refers to them.
//!
//! A segment holds one provider's rows of one dataset, grouped by activity month: each month is a
//! contiguous run of rows (the catalog records the runs) and row groups end at month boundaries,
//! so the partition keys (provider, month) are constants of every run and a selective read skips
//! whole row groups of other months. Fresh rows are sorted by `cds_unique_id` within their
//! month, so the order is deterministic (a replica writing the same change writes the same bytes).

use crate::schema::stored_schema;
use crate::{Error, Result};
use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::path::{Path, PathBuf};
use sus_disk::{Disk, OpenMode};

use super::files::{FileWriter, ParquetFile};
use crate::model::Dataset;

/// Suffix of a segment being written; such files are never catalogued and are removed on open.
pub(super) const TEMP_SUFFIX: &str = ".parquet.tmp";
pub(super) const SUFFIX: &str = ".parquet";

/// The path of a segment relative to the store directory (always `/`-separated).
pub(super) fn relative_path(dataset: Dataset, provider: &str, id: u64) -> String {
    format!("segments/{dataset}/{provider}/{id:020}{SUFFIX}")
}

/// Makes a file's directory entry (a create, rename or delete inside `dir`) durable.
pub(super) fn sync_dir(disk: &dyn Disk, dir: &Path) -> Result<()> {
    disk.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Creates `dir` and any missing parents up to `root`, syncing each new entry into its parent so
/// that a segment's directory survives a crash as surely as the segment.
pub(super) fn create_dirs(disk: &dyn Disk, root: &Path, dir: &Path) -> Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    for d in dir.ancestors().take_while(|d| *d != root) {
        if d.as_os_str().is_empty() || disk.exists(d).map_err(|e| Error::io(d, e))? {
            break;
        }
        missing.push(d.to_path_buf());
    }
    if missing.is_empty() {
        return Ok(());
    }
    disk.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    missing.reverse();
    for d in &missing {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(disk, parent)?;
        }
    }
    Ok(())
}

/// Writes the rows `rows` of `batch`, in that order, as the segment at `root/rel`, ending a row
/// group after each run of `months` (rows per month, in order); returns its size and the rows
/// written (for the column cache).
///
/// Write to a temporary name, fsync the file, rename, fsync the directory: after this returns the
/// segment is on disk under its final name, and before it returns no file of that name exists.
pub(super) fn write(
    disk: &dyn Disk,
    root: &Path,
    rel: &str,
    batch: &RecordBatch,
    rows: &[u32],
    months: &[(String, u32)],
) -> Result<(u64, RecordBatch)> {
    let in_runs: u64 = months.iter().map(|m| u64::from(m.1)).sum();
    if in_runs != rows.len() as u64 {
        return Err(Error::Internal(format!(
            "segment {rel}: {} rows but {in_runs} in its month runs",
            rows.len()
        )));
    }
    let sorted = take_rows(batch, rows)?;
    let bytes = write_batch(disk, root, rel, &sorted, months, true)?;
    Ok((bytes, sorted))
}

/// The rows `rows` of `batch`, in that order, each dictionary keeping only the values they use.
pub(super) fn take_rows(batch: &RecordBatch, rows: &[u32]) -> Result<RecordBatch> {
    compact_dictionaries(&take_record_batch(
        batch,
        &UInt32Array::from(rows.to_vec()),
    )?)
}

/// Writes `batch` (its rows in order, `months` their runs) as the segment at `root/rel`, as
/// [`write`] does; `sync_dir` false leaves the directory fsync to the caller (a flush writes
/// many segments and syncs each directory once). Returns the file's size.
pub(super) fn write_batch(
    disk: &dyn Disk,
    root: &Path,
    rel: &str,
    batch: &RecordBatch,
    months: &[(String, u32)],
    sync_dir_now: bool,
) -> Result<u64> {
    let path = root.join(rel);
    let dir = path
        .parent()
        .ok_or_else(|| Error::Internal(format!("segment path {rel} has no directory")))?;
    create_dirs(disk, root, dir)?;
    let tmp = path.with_extension(&TEMP_SUFFIX[1..]);
    let io = |e| Error::io(&tmp, e);
    let file = disk.open(&tmp, OpenMode::CreateTruncate).map_err(io)?;
    let out = std::io::BufWriter::with_capacity(1 << 20, FileWriter::new(file));
    let out = encode(out, batch, months)?;
    let out = out.into_inner().map_err(|e| io(e.into_error()))?;
    out.file().sync_all().map_err(io)?;
    let bytes = out.file().len().map_err(io)?;
    drop(out);
    disk.rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    if sync_dir_now {
        sync_dir(disk, dir)?;
    }
    Ok(bytes)
}

/// Writes `batch` (rows in order, `months` their runs) as a segment's Parquet bytes to `out`.
/// Row groups end at month boundaries, once they hold enough rows: a month is never split over
/// two groups (unless it alone exceeds the writer's maximum), and small months share one.
pub fn encode<W: std::io::Write + Send>(
    out: W,
    batch: &RecordBatch,
    months: &[(String, u32)],
) -> Result<W> {
    // The Arrow schema is ours (`stored_schema`), so it is not embedded in every file: on small
    // segments it would be a third of the bytes. The reader supplies it instead.
    let options = ArrowWriterOptions::new()
        .with_properties(writer_properties()?)
        .with_skip_arrow_metadata(true);
    let mut writer = ArrowWriter::try_new_with_options(out, batch.schema(), options)?;
    let mut offset = 0usize;
    let mut in_group = 0usize;
    for (_, n) in months {
        writer.write(&batch.slice(offset, *n as usize))?;
        offset += *n as usize;
        in_group += *n as usize;
        if in_group >= GROUP_ROWS {
            writer.flush()?;
            in_group = 0;
        }
    }
    Ok(writer.into_inner()?)
}

/// `batch` with each dictionary column keeping only the values its rows use: rows taken from a
/// submission keep the whole submission's dictionaries otherwise (costly to cache and to group).
fn compact_dictionaries(batch: &RecordBatch) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| match c.as_any_dictionary_opt() {
            Some(dict) => Ok(arrow_select::dictionary::garbage_collect_any_dictionary(
                dict,
            )?),
            None => Ok(c.clone()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Decodes a segment's Parquet bytes: `columns` (indices in the stored schema of `dataset`;
/// empty: all) of every row.
pub fn decode(
    bytes: bytes::Bytes,
    dataset: Dataset,
    columns: &[usize],
) -> Result<Vec<RecordBatch>> {
    let options = ArrowReaderOptions::new().with_schema(stored_schema(dataset));
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options)?;
    let builder = if columns.is_empty() {
        builder
    } else {
        let mask = parquet::arrow::ProjectionMask::roots(
            builder.parquet_schema(),
            columns.iter().copied(),
        );
        builder.with_projection(mask)
    };
    Ok(builder
        .with_batch_size(64 * 1024)
        .build()?
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Rows after which a row group ends at the next month boundary. Every column chunk costs a
/// page header, a zstd frame and footer metadata, so groups must not be small; months in groups
/// of their own let a selective read skip the rest.
const GROUP_ROWS: usize = 64 * 1024;

/// Columns whose values are (nearly) unique within a segment. A dictionary of them costs the
/// values plus an index per row; plain values compress better under zstd (at 2 M rows these
/// three made our segments 6 % larger than pyarrow's files, whose large row groups outgrow the
/// dictionary page and fall back to plain).
const PLAIN_COLUMNS: [&str; 3] = [
    "cds_unique_id",
    "hospital_provider_spell_number",
    "date_of_birth",
];

/// zstd level 3; statistics per column chunk (a page index would add bytes and no pruning:
/// months are row groups and the catalog knows them).
fn writer_properties() -> Result<WriterProperties> {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_statistics_enabled(EnabledStatistics::Chunk);
    for column in PLAIN_COLUMNS {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    Ok(builder.build())
}

/// Reads a whole segment as batches of the stored schema of `dataset`.
pub(super) fn read(disk: &dyn Disk, path: &Path, dataset: Dataset) -> Result<Vec<RecordBatch>> {
    let file = disk
        .open(path, OpenMode::Read)
        .and_then(ParquetFile::new)
        .map_err(|e| Error::io(path, e))?;
    let with_path = |e: parquet::errors::ParquetError| Error::Corruption {
        what: format!("segment {}", path.display()),
        message: e.to_string(),
    };
    let schema = stored_schema(dataset);
    let options = ArrowReaderOptions::new().with_schema(schema.clone());
    let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .map_err(with_path)?
        .with_batch_size(64 * 1024)
        .build()
        .map_err(with_path)?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| Error::Corruption {
            what: format!("segment {}", path.display()),
            message: e.to_string(),
        })?;
        // The file carries the schema, but rebuilding on ours checks it and restores its metadata.
        out.push(RecordBatch::try_new(
            schema.clone(),
            batch.columns().to_vec(),
        )?);
    }
    Ok(out)
}

/// The `cds_unique_id` values of a batch of the stored schema.
pub(super) fn ids(batch: &RecordBatch) -> Result<&arrow::array::StringArray> {
    batch
        .column_by_name("cds_unique_id")
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| Error::Internal("batch lacks a Utf8 cds_unique_id column".into()))
}
