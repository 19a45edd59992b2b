//! Segment files: immutable Parquet (zstd, page statistics), written durably before the catalog
//! refers to them.
//!
//! Rows of a segment are sorted by `cds_unique_id`: a partition already narrows the activity date to
//! one month, so sorting by id makes the id column's page statistics prune point lookups, and the
//! order is deterministic (a replica writing the same change writes the same bytes).

use crate::schema::stored_schema;
use crate::{Error, Result};
use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::model::Dataset;

/// Suffix of a segment being written; such files are never catalogued and are removed on open.
pub(super) const TEMP_SUFFIX: &str = ".parquet.tmp";
pub(super) const SUFFIX: &str = ".parquet";

/// The path of a segment relative to the store directory (always `/`-separated).
pub(super) fn relative_path(dataset: Dataset, provider: &str, month: &str, id: u64) -> String {
    // One directory per provider, not per month: creating directories dominated small changes.
    format!("segments/{dataset}/{provider}/{month}-{id:020}{SUFFIX}")
}

/// Makes a file's directory entry (a create, rename or delete inside `dir`) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Creates `dir` and any missing parents up to `root`, syncing each new entry into its parent so
/// that a segment's directory survives a crash as surely as the segment.
pub(super) fn create_dirs(root: &Path, dir: &Path) -> Result<()> {
    let mut missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| *d != root && !d.exists())
        .map(Path::to_path_buf)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    missing.reverse();
    for d in &missing {
        if let Some(parent) = d.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Writes the rows `rows` of `batch`, in that order, as the segment at `root/rel`; returns its size
/// and the rows written (for the hot-segment cache).
/// `id_sorted` records that the rows are in `cds_unique_id` order (compacted segments are not).
///
/// Write to a temporary name, fsync the file, rename, fsync the directory: after this returns the
/// segment is on disk under its final name, and before it returns no file of that name exists.
pub(super) fn write(
    root: &Path,
    rel: &str,
    batch: &RecordBatch,
    rows: &[u32],
    id_sorted: bool,
) -> Result<(u64, RecordBatch)> {
    let path = root.join(rel);
    let dir = path
        .parent()
        .ok_or_else(|| Error::InvalidArgument(format!("segment path {rel} has no directory")))?;
    create_dirs(root, dir)?;
    let tmp = path.with_extension(&TEMP_SUFFIX[1..]);

    let sorted = take_record_batch(batch, &UInt32Array::from(rows.to_vec()))?;
    let id_column = batch.schema().index_of("cds_unique_id")? as i32;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(id_sorted.then(|| {
            vec![SortingColumn {
                column_idx: id_column,
                descending: false,
                nulls_first: false,
            }]
        }))
        .build();
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    // The Arrow schema is ours (`stored_schema`), so it is not embedded in every file: on small
    // segments it would be a third of the bytes. The reader supplies it instead.
    let options = ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true);
    let mut writer = ArrowWriter::try_new_with_options(file, sorted.schema(), options)?;
    writer.write(&sorted)?;
    let file = writer.into_inner()?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    let bytes = file.metadata().map_err(|e| Error::io(&tmp, e))?.len();
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)?;
    Ok((bytes, sorted))
}

/// Reads a whole segment as batches of the stored schema of `dataset`.
pub(super) fn read(path: &Path, dataset: Dataset) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
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
        .ok_or_else(|| Error::InvalidArgument("batch lacks a Utf8 cds_unique_id column".into()))
}
