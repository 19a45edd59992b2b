//! Parquet submissions, read within the submission's limits.
//!
//! A few hundred kilobytes of Parquet can describe gigabytes: a row repeated two million times
//! (its values in a dictionary page, the rows as run-length indices), one dictionary value of
//! megabytes repeated in every row, a list of millions of items in one row, a page whose header
//! promises gigabytes. So nothing is decoded before the file has been measured, and nothing is
//! expanded that has not been counted:
//!
//! ```text
//!  footer ─► rows (file and row groups) ≤ max_submission_rows
//!  page headers of every column chunk (walked, not decompressed)
//!        ─► Σ decompressed page bytes ≤ max_submission_decoded_mib
//!        ─► values of a chunk ≤ its rows × (max_field_bytes / 2)   (a list item holds at most
//!                                                                    that many elements)
//!  decode, 1024 rows a batch, text columns kept as dictionaries (no per-row copies)
//!        ─► per row: each value's length first (> max_field_bytes: an R04 finding, never copied),
//!           then the row counted (rows, decoded bytes) before its values are copied
//! ```

use super::pages::check_pages;
use super::record::{
    Cells, Findings, Meter, Parsed, Rejected, build_record, resolve_header, too_many_rows,
};
use crate::limits::SubmissionLimits;
use crate::model::Record;
use crate::model::{Dataset, Rule};
use crate::schema::items;
use crate::{Error, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, GenericListArray, OffsetSizeTrait, RecordBatch, StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type, Schema};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::metadata::ParquetMetaData;
use std::sync::Arc;

/// Rows decoded at a time: what one batch can hold is bounded by it.
const BATCH_ROWS: usize = 1024;

/// Parses a Parquet submission (see the module documentation).
pub(super) fn parse(dataset: Dataset, bytes: &[u8], limits: &SubmissionLimits) -> Result<Parsed> {
    let data = bytes::Bytes::copy_from_slice(bytes);
    // Malformed Parquet can panic inside the reader; never let a submitter crash the node.
    match std::panic::catch_unwind(|| read(dataset, data, limits)) {
        Ok(parsed) => parsed,
        Err(_) => Ok(Err(Rejected::one(
            Rule::FileUnreadable,
            "malformed Parquet file (the reader failed on its structure)".into(),
        ))),
    }
}

fn unreadable(e: &dyn std::fmt::Display) -> Result<Parsed> {
    Ok(Err(Rejected::one(
        Rule::FileUnreadable,
        format!("unreadable Parquet: {e}"),
    )))
}

fn read(dataset: Dataset, data: bytes::Bytes, limits: &SubmissionLimits) -> Result<Parsed> {
    let meta = match ArrowReaderMetadata::load(&data, ArrowReaderOptions::new()) {
        Ok(m) => m,
        Err(e) => return unreadable(&e),
    };
    let rows = match footer_rows(meta.metadata()) {
        Ok(rows) => rows,
        Err(e) => return unreadable(&e),
    };
    if rows > limits.max_rows {
        return Err(too_many_rows(&rows.to_string(), limits));
    }
    let header: Vec<String> = meta
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let positions = match resolve_header(dataset, &header) {
        Ok(p) => p,
        Err(rejected) => return Ok(Err(rejected)),
    };
    if let Err(e) = check_pages(&data, meta.metadata(), limits)? {
        return unreadable(&e);
    }
    // Text stays dictionary-encoded as decoded: a row's values are copied one row at a time,
    // after they were counted.
    let hinted = Arc::new(Schema::new_with_metadata(
        meta.schema()
            .fields()
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_data_type(hint(f.data_type()))))
            .collect::<Vec<_>>(),
        meta.schema().metadata().clone(),
    ));
    let meta = match ArrowReaderMetadata::try_new(
        meta.metadata().clone(),
        ArrowReaderOptions::new().with_schema(hinted),
    ) {
        Ok(m) => m,
        Err(e) => return unreadable(&e),
    };
    let reader = match ParquetRecordBatchReaderBuilder::new_with_metadata(data, meta)
        .with_batch_size(BATCH_ROWS)
        .build()
    {
        Ok(r) => r,
        Err(e) => return unreadable(&e),
    };
    let items = items(dataset);
    let mut findings = Findings::new();
    let mut meter = Meter::new(limits);
    let mut records = Vec::new();
    let mut ordinal = 0u64;
    let mut lengths = vec![0usize; positions.len()];
    let mut texts = vec![String::new(); positions.len()];
    for batch in reader {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => return unreadable(&e),
        };
        let columns = match positions
            .iter()
            .map(|&p| Column::new(batch.column(p)))
            .collect::<std::result::Result<Vec<_>, _>>()
        {
            Ok(c) => c,
            Err(e) => return unreadable(&e),
        };
        for r in 0..batch.num_rows() {
            ordinal += 1;
            let mut copied = 0u64;
            for (c, column) in columns.iter().enumerate() {
                lengths[c] = column.len_of(r);
                if lengths[c] <= limits.max_field_bytes {
                    copied += lengths[c] as u64;
                }
            }
            meter.row(copied)?;
            for (c, column) in columns.iter().enumerate() {
                texts[c].clear();
                if lengths[c] <= limits.max_field_bytes {
                    column.write(r, &mut texts[c]);
                }
            }
            let values: Vec<&str> = texts.iter().map(String::as_str).collect();
            let cells = Cells {
                values: &values,
                lengths: Some(&lengths),
            };
            if let Some(rec) = build_record(dataset, &items, ordinal, cells, limits, &mut findings)
            {
                records.push(rec);
            }
        }
    }
    if ordinal == 0 {
        return Ok(Err(Rejected::one(
            Rule::FileUnreadable,
            "the file has no records".into(),
        )));
    }
    Ok(findings.into_result(records))
}

/// The records of stored rows (a batch in the stored schema, or any batch holding every item
/// column), read back through the submission parser: the store keeps items typed, and their text
/// is their submitted form. Used to derive a spell again over episodes stored earlier.
pub(crate) fn records_of_stored(dataset: Dataset, batch: &RecordBatch) -> Result<Vec<Record>> {
    let items = items(dataset);
    let columns = items
        .iter()
        .map(|item| {
            batch
                .column_by_name(item.name)
                .ok_or_else(|| Error::Corruption {
                    what: format!("stored {dataset} rows"),
                    message: format!("no column {}", item.name),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let columns = columns
        .into_iter()
        .map(Column::new)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // Stored rows were within the limits when submitted; these bound nothing here.
    let limits = SubmissionLimits {
        max_field_bytes: usize::MAX,
        ..SubmissionLimits::default()
    };
    let mut findings = Findings::new();
    let mut records = Vec::with_capacity(batch.num_rows());
    let mut texts = vec![String::new(); columns.len()];
    for r in 0..batch.num_rows() {
        for (c, column) in columns.iter().enumerate() {
            texts[c].clear();
            column.write(r, &mut texts[c]);
        }
        let values: Vec<&str> = texts.iter().map(String::as_str).collect();
        let cells = Cells {
            values: &values,
            lengths: None,
        };
        let ordinal = r as u64 + 1;
        if let Some(rec) = build_record(dataset, &items, ordinal, cells, &limits, &mut findings) {
            records.push(rec);
        }
    }
    match findings.into_result(records) {
        Ok(records) => Ok(records),
        Err(rejected) => Err(Error::Corruption {
            what: format!("stored {dataset} rows"),
            message: format!(
                "do not read back as records: {}",
                rejected
                    .issues
                    .first()
                    .map_or_else(String::new, ToString::to_string)
            ),
        }),
    }
}

/// The rows the footer says the file holds (the larger of the file's count and its row groups').
fn footer_rows(meta: &ParquetMetaData) -> std::result::Result<u64, String> {
    let file = u64::try_from(meta.file_metadata().num_rows())
        .map_err(|_| "the footer gives a negative row count".to_string())?;
    let mut groups = 0u64;
    for rg in meta.row_groups() {
        let n = u64::try_from(rg.num_rows())
            .map_err(|_| "a row group has a negative row count".to_string())?;
        groups = groups.saturating_add(n);
    }
    Ok(file.max(groups))
}

/// The type a column is decoded as: text (and lists of text) as dictionaries.
fn hint(ty: &DataType) -> DataType {
    let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    match ty {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => dict(),
        DataType::Dictionary(_, v)
            if matches!(
                **v,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) =>
        {
            dict()
        }
        DataType::List(f) => DataType::List(Arc::new(
            f.as_ref().clone().with_data_type(hint(f.data_type())),
        )),
        DataType::LargeList(f) => DataType::LargeList(Arc::new(
            f.as_ref().clone().with_data_type(hint(f.data_type())),
        )),
        other => other.clone(),
    }
}

/// A decoded column whose values are measured before they are copied.
enum Column<'a> {
    /// Text, kept as a dictionary.
    Dict {
        keys: &'a arrow::array::PrimitiveArray<Int32Type>,
        values: &'a StringArray,
    },
    /// Text, or any other type as its text (bounded by the batch's rows).
    Text(StringArray),
    /// A list, written as its non-null items joined by `;`.
    List {
        offsets: Vec<usize>,
        nulls: Option<arrow::buffer::NullBuffer>,
        items: Box<Column<'a>>,
    },
}

impl<'a> Column<'a> {
    fn new(array: &'a ArrayRef) -> std::result::Result<Column<'a>, arrow::error::ArrowError> {
        Ok(match array.data_type() {
            DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
                let d = array.as_dictionary::<Int32Type>();
                Column::Dict {
                    keys: d.keys(),
                    values: d.values().as_string::<i32>(),
                }
            }
            DataType::List(_) => list(array.as_list::<i32>())?,
            DataType::LargeList(_) => list(array.as_list::<i64>())?,
            DataType::Boolean => Column::Text(
                array
                    .as_boolean()
                    .iter()
                    .map(|b| b.map(|b| if b { "Y" } else { "N" }))
                    .collect(),
            ),
            // Timestamps render as `YYYY-MM-DDTHH:MM:SS`, the CSV format.
            _ => Column::Text(cast(array, &DataType::Utf8)?.as_string::<i32>().clone()),
        })
    }

    /// Bytes of row `r`'s text (0 when null).
    fn len_of(&self, r: usize) -> usize {
        match self {
            Column::Dict { keys, values } => dict_value(keys, values, r).map_or(0, str::len),
            Column::Text(a) => {
                if a.is_null(r) {
                    0
                } else {
                    a.value_length(r) as usize
                }
            }
            Column::List {
                offsets,
                nulls,
                items,
            } => {
                let Some((start, end)) = list_range(offsets, nulls.as_ref(), r) else {
                    return 0;
                };
                let mut len = 0usize;
                let mut n = 0usize;
                for i in start..end {
                    if items.is_valid(i) {
                        len = len.saturating_add(items.len_of(i));
                        n += 1;
                    }
                }
                len.saturating_add(n.saturating_sub(1))
            }
        }
    }

    fn is_valid(&self, r: usize) -> bool {
        match self {
            Column::Dict { keys, values } => dict_value(keys, values, r).is_some(),
            Column::Text(a) => a.is_valid(r),
            Column::List { nulls, .. } => nulls.as_ref().is_none_or(|n| n.is_valid(r)),
        }
    }

    /// Appends row `r`'s text to `out`.
    fn write(&self, r: usize, out: &mut String) {
        match self {
            Column::Dict { keys, values } => {
                if let Some(v) = dict_value(keys, values, r) {
                    out.push_str(v);
                }
            }
            Column::Text(a) => {
                if a.is_valid(r) {
                    out.push_str(a.value(r));
                }
            }
            Column::List {
                offsets,
                nulls,
                items,
            } => {
                let Some((start, end)) = list_range(offsets, nulls.as_ref(), r) else {
                    return;
                };
                let mut first = true;
                for i in start..end {
                    if items.is_valid(i) {
                        if !first {
                            out.push(';');
                        }
                        items.write(i, out);
                        first = false;
                    }
                }
            }
        }
    }
}

fn dict_value<'v>(
    keys: &arrow::array::PrimitiveArray<Int32Type>,
    values: &'v StringArray,
    r: usize,
) -> Option<&'v str> {
    if keys.is_null(r) {
        return None;
    }
    let k = usize::try_from(keys.value(r)).ok()?;
    (k < values.len() && values.is_valid(k)).then(|| values.value(k))
}

fn list_range(
    offsets: &[usize],
    nulls: Option<&arrow::buffer::NullBuffer>,
    r: usize,
) -> Option<(usize, usize)> {
    if nulls.is_some_and(|n| n.is_null(r)) {
        return None;
    }
    Some((*offsets.get(r)?, *offsets.get(r + 1)?))
}

fn list<O: OffsetSizeTrait>(
    list: &GenericListArray<O>,
) -> std::result::Result<Column<'_>, arrow::error::ArrowError> {
    Ok(Column::List {
        offsets: list.value_offsets().iter().map(|o| o.as_usize()).collect(),
        nulls: list.nulls().cloned(),
        items: Box::new(Column::new(list.values())?),
    })
}

#[cfg(test)]
mod tests;
