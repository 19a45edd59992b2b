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

use super::parse::{
    Cells, Findings, Meter, Parsed, Rejected, build_record, resolve_header, too_large,
    too_many_rows,
};
use crate::limits::{SubmissionLimits, keys, setting};
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

/// Walks the page headers of every column chunk, without decompressing anything: `Err` when the
/// file is over a limit, `Ok(Err(why))` when it is malformed.
fn check_pages(
    data: &[u8],
    meta: &ParquetMetaData,
    limits: &SubmissionLimits,
) -> Result<std::result::Result<(), String>> {
    // A list item of n elements is at least 2n - 1 bytes of text.
    let per_row = (limits.max_field_bytes as u64 / 2).max(1);
    let mut decompressed = 0u64;
    for rg in meta.row_groups() {
        let rows = u64::try_from(rg.num_rows()).unwrap_or(0);
        for chunk in rg.columns() {
            let start = chunk
                .dictionary_page_offset()
                .unwrap_or_else(|| chunk.data_page_offset());
            let (Ok(start), Ok(len)) = (
                usize::try_from(start),
                usize::try_from(chunk.compressed_size()),
            ) else {
                return Ok(Err("a column chunk has a negative offset or size".into()));
            };
            let Some(bytes) = start.checked_add(len).and_then(|end| data.get(start..end)) else {
                return Ok(Err("a column chunk lies outside the file".into()));
            };
            let pages = match walk_pages(bytes) {
                Ok(p) => p,
                Err(e) => return Ok(Err(format!("a page header is malformed: {e}"))),
            };
            decompressed = decompressed.saturating_add(pages.bytes);
            if decompressed > limits.max_decoded_bytes {
                return Err(too_large(
                    "its pages decompress to more than",
                    decompressed,
                    limits,
                ));
            }
            let claimed = u64::try_from(chunk.num_values()).unwrap_or(0);
            let values = pages.values.max(claimed);
            if values > rows.saturating_mul(per_row) {
                return Err(Error::InvalidArgument(format!(
                    "column {} holds {values} values in a row group of {rows} rows: more than \
                     lists of at most {} bytes per item can hold (setting {})",
                    chunk.column_path(),
                    limits.max_field_bytes,
                    setting(keys::MAX_FIELD_BYTES)
                )));
            }
        }
    }
    Ok(Ok(()))
}

/// What the pages of one column chunk hold.
#[derive(Debug, Default, PartialEq)]
struct Pages {
    /// Decompressed bytes of every page.
    bytes: u64,
    /// Values (levels) of the data pages.
    values: u64,
}

/// The pages of a column chunk's bytes, by their headers (Thrift compact `PageHeader`s).
fn walk_pages(mut bytes: &[u8]) -> std::result::Result<Pages, String> {
    let mut pages = Pages::default();
    while !bytes.is_empty() {
        let mut r = Compact { bytes, pos: 0 };
        let h = r.page_header()?;
        let (Ok(uncompressed), Ok(compressed)) =
            (u64::try_from(h.uncompressed), usize::try_from(h.compressed))
        else {
            return Err("negative page size".into());
        };
        pages.bytes = pages.bytes.saturating_add(uncompressed);
        pages.values = pages
            .values
            .saturating_add(u64::try_from(h.values).unwrap_or(0));
        let next = r
            .pos
            .checked_add(compressed)
            .filter(|n| *n <= bytes.len())
            .ok_or("a page runs past its column chunk")?;
        bytes = &bytes[next..];
    }
    Ok(pages)
}

/// The fields of a page header that size it.
#[derive(Debug, Default)]
struct PageHeader {
    uncompressed: i32,
    compressed: i32,
    /// `num_values` of a data page (v1 or v2); 0 for other pages.
    values: i32,
}

/// A reader of the Thrift compact protocol, as much of it as page headers need: their sizes and
/// value counts are read; every other field is skipped by its type.
struct Compact<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// Nesting deeper than this is refused (a crafted header must not exhaust the stack).
const MAX_DEPTH: u32 = 16;

impl Compact<'_> {
    fn byte(&mut self) -> std::result::Result<u8, String> {
        let b = *self.bytes.get(self.pos).ok_or("page header cut short")?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> std::result::Result<(), String> {
        self.pos = self
            .pos
            .checked_add(n)
            .filter(|p| *p <= self.bytes.len())
            .ok_or("page header cut short")?;
        Ok(())
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn zigzag(&mut self) -> std::result::Result<i64, String> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn i32(&mut self) -> std::result::Result<i32, String> {
        i32::try_from(self.zigzag()?).map_err(|_| "an i32 out of range".to_string())
    }

    /// The next field of a struct: `None` at its end, else (id, type).
    fn field(&mut self, last: &mut i16) -> std::result::Result<Option<(i16, u8)>, String> {
        let b = self.byte()?;
        if b == 0 {
            return Ok(None);
        }
        let ty = b & 0x0f;
        let delta = i16::from(b >> 4);
        let id = if delta == 0 {
            i16::try_from(self.zigzag()?).map_err(|_| "field id out of range")?
        } else {
            last.checked_add(delta).ok_or("field id out of range")?
        };
        *last = id;
        Ok(Some((id, ty)))
    }

    /// Skips an element of a list, set or map of compact type `ty`: unlike a field, a boolean
    /// element takes a byte of its own.
    fn skip_element(&mut self, ty: u8, depth: u32) -> std::result::Result<(), String> {
        if ty == 1 || ty == 2 {
            self.skip(1)
        } else {
            self.skip_value(ty, depth)
        }
    }

    /// Skips a value of compact type `ty`.
    fn skip_value(&mut self, ty: u8, depth: u32) -> std::result::Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        match ty {
            // Booleans (in a field header, the type carries the value) and bytes.
            1 | 2 => Ok(()),
            3 => self.skip(1),
            4..=6 => self.varint().map(|_| ()),
            7 => self.skip(8),
            8 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
                self.skip(n)
            }
            9 | 10 => {
                let h = self.byte()?;
                let size = match h >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                let elem = h & 0x0f;
                // Every element takes a byte at least: a size the bytes cannot hold fails on
                // the way, within as many steps as there are bytes.
                for _ in 0..size {
                    self.skip_element(elem, depth + 1)?;
                }
                Ok(())
            }
            11 => {
                let size = self.varint()?;
                if size == 0 {
                    return Ok(());
                }
                let kv = self.byte()?;
                for _ in 0..size {
                    for t in [kv >> 4, kv & 0x0f] {
                        self.skip_element(t, depth + 1)?;
                    }
                }
                Ok(())
            }
            12 => {
                let mut last = 0;
                while let Some((_, t)) = self.field(&mut last)? {
                    self.skip_value(t, depth + 1)?;
                }
                Ok(())
            }
            other => Err(format!("unknown Thrift type {other}")),
        }
    }

    /// A struct whose field 1 is `num_values` (data page headers v1 and v2).
    fn num_values(&mut self) -> std::result::Result<i32, String> {
        let mut last = 0;
        let mut values = 0;
        while let Some((id, t)) = self.field(&mut last)? {
            if id == 1 && t == 5 {
                values = self.i32()?;
            } else {
                self.skip_value(t, 1)?;
            }
        }
        Ok(values)
    }

    fn page_header(&mut self) -> std::result::Result<PageHeader, String> {
        let mut h = PageHeader::default();
        let (mut uncompressed, mut compressed) = (false, false);
        let mut last = 0;
        while let Some((id, t)) = self.field(&mut last)? {
            match (id, t) {
                (2, 5) => {
                    h.uncompressed = self.i32()?;
                    uncompressed = true;
                }
                (3, 5) => {
                    h.compressed = self.i32()?;
                    compressed = true;
                }
                // DataPageHeader, DataPageHeaderV2.
                (5 | 8, 12) => h.values = self.num_values()?,
                _ => self.skip_value(t, 0)?,
            }
        }
        if !(uncompressed && compressed) {
            return Err("a page header without its sizes".into());
        }
        Ok(h)
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
mod tests {
    use super::*;
    use crate::ingest::parse::fixtures::row;
    use crate::limits::ROW_BYTES;
    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::Field;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;

    /// `n` copies of one valid record of `dataset` as Parquet (text columns, dictionary-encoded,
    /// zstd): tiny on disk whatever `n`.
    fn repeated(dataset: Dataset, n: usize, overrides: &[(&str, &str)]) -> Vec<u8> {
        let one = row(dataset, "BRRV0000001", overrides);
        let schema = Arc::new(Schema::new(
            one.iter()
                .map(|(k, _)| Field::new(k, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("level")))
            .set_max_row_group_row_count(Some(1 << 22))
            .build();
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema.clone(), Some(props))
            .expect("writer");
        let chunk = 65_536.min(n);
        let batch = RecordBatch::try_new(
            schema,
            one.iter()
                .map(|(_, v)| Arc::new(StringArray::from(vec![v.as_str(); chunk])) as ArrayRef)
                .collect(),
        )
        .expect("batch");
        let mut left = n;
        while left > 0 {
            let take = left.min(chunk);
            w.write(&batch.slice(0, take)).expect("write");
            left -= take;
        }
        w.close().expect("close");
        out
    }

    // The bomb of the issue: one small row repeated 2 M times is a few hundred kilobytes, and is
    // refused from its footer, naming the limit, before a row is decoded.
    #[test]
    fn a_repeated_row_bomb_is_refused_from_the_footer() {
        let bytes = repeated(Dataset::Apc, 2_000_000, &[]);
        assert!(bytes.len() < 1 << 20, "{} bytes", bytes.len());
        let started = std::time::Instant::now();
        let e = parse(Dataset::Apc, &bytes, &SubmissionLimits::default())
            .expect_err("over the row limit");
        let text = e.to_string();
        assert!(text.contains("2000000 records"), "{text}");
        assert!(text.contains("max_submission_rows"), "{text}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    // Under the row limit but over the decoded limit: refused as the rows are counted, before
    // the records pass the limit.
    #[test]
    fn decoded_bytes_are_counted_as_rows_decode() {
        let bytes = repeated(Dataset::Op, 20_000, &[]);
        let limits = SubmissionLimits {
            max_decoded_bytes: 2_000 * ROW_BYTES,
            ..SubmissionLimits::default()
        };
        let e = parse(Dataset::Op, &bytes, &limits).expect_err("over the decoded limit");
        assert!(e.to_string().contains("max_submission_decoded_mib"), "{e}");
        let parsed = parse(Dataset::Op, &bytes, &SubmissionLimits::default())
            .expect("within the defaults")
            .expect("valid records");
        assert_eq!(parsed.len(), 20_000);
        assert_eq!(parsed[19_999].common.cds_unique_id, "BRRV0000001");
    }

    // A long value repeated in every row is a finding per record, never copied per row; the
    // finding quotes neither the value nor the record key when that is the long one.
    #[test]
    fn a_long_dictionary_value_is_a_finding_not_a_copy() {
        let long = "x".repeat(100_000);
        let bytes = repeated(Dataset::Ec, 5_000, &[("local_patient_id", &long)]);
        let r = parse(Dataset::Ec, &bytes, &SubmissionLimits::default())
            .expect("within the limits")
            .expect_err("items too long");
        assert_eq!(r.issues.len() as u64 + r.more, 5_000);
        let first = &r.issues[0];
        assert_eq!(first.item.as_deref(), Some("local_patient_id"));
        assert!(
            first
                .message
                .contains("100000 bytes: over the limit of 4096 bytes per item"),
            "{first}"
        );
        let bytes = repeated(Dataset::Ec, 10, &[("cds_unique_id", &long)]);
        let r = parse(Dataset::Ec, &bytes, &SubmissionLimits::default())
            .expect("within the limits")
            .expect_err("key too long");
        assert!(r.issues.iter().all(|i| i.cds_unique_id.is_none()));
        assert!(r.issues.iter().all(|i| !i.message.contains("xxxxxxxxxx")));
    }

    // Typed columns (lists, booleans, dates, date-times, integers) read through the measured
    // path exactly as their CSV text, nulls as blanks.
    #[test]
    fn typed_columns_read_as_their_csv_text() {
        use arrow::array::{
            BooleanArray, Date32Array, Int64Array, ListBuilder, StringBuilder, TimestampSecondArray,
        };
        let rows = [
            row(Dataset::Apc, "B1", &[]),
            row(Dataset::Apc, "B2", &[("secondary_diagnoses", "")]),
        ];
        let from_csv =
            crate::ingest::parse::parse(Dataset::Apc, &fixtures_csv(&rows)).expect("csv");
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (i, (name, _)) in rows[0].iter().enumerate() {
            let text: Vec<&str> = rows.iter().map(|r| r[i].1.as_str()).collect();
            let (ty, column): (DataType, ArrayRef) = match name.as_str() {
                "secondary_diagnoses" => {
                    let mut b = ListBuilder::new(StringBuilder::new());
                    for t in &text {
                        if t.is_empty() {
                            b.append_null();
                        } else {
                            for item in t.split(';') {
                                b.values().append_value(item);
                            }
                            b.append(true);
                        }
                    }
                    let a = b.finish();
                    (a.data_type().clone(), Arc::new(a))
                }
                "last_episode_in_spell" => (
                    DataType::Boolean,
                    Arc::new(BooleanArray::from(
                        text.iter().map(|t| Some(*t == "Y")).collect::<Vec<_>>(),
                    )),
                ),
                "admission_date" => (
                    DataType::Date32,
                    Arc::new(Date32Array::from(vec![19_844; text.len()])),
                ),
                "cds_applicable_datetime" => (
                    DataType::Timestamp(arrow::datatypes::TimeUnit::Second, None),
                    Arc::new(TimestampSecondArray::from(vec![1_717_232_400; text.len()])),
                ),
                "episode_number" => (
                    DataType::Int64,
                    Arc::new(Int64Array::from(vec![1; text.len()])),
                ),
                _ => (
                    DataType::Utf8,
                    Arc::new(StringArray::from(
                        text.iter()
                            .map(|t| (!t.is_empty()).then_some(*t))
                            .collect::<Vec<_>>(),
                    )),
                ),
            };
            fields.push(Field::new(name, ty, true));
            columns.push(column);
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
        let from_parquet = parse(Dataset::Apc, &out, &SubmissionLimits::default())
            .expect("within limits")
            .expect("valid");
        assert_eq!(from_parquet, from_csv);
    }

    fn fixtures_csv(rows: &[Vec<(String, String)>]) -> Vec<u8> {
        crate::ingest::parse::fixtures::csv(rows)
    }

    // Page headers are read for their sizes whatever other fields they carry; malformed ones are
    // errors, never panics.
    #[test]
    fn page_headers_are_walked_and_malformed_ones_refused() {
        let bytes = repeated(Dataset::Op, 3, &[]);
        let meta =
            ArrowReaderMetadata::load(&bytes::Bytes::from(bytes.clone()), Default::default())
                .expect("metadata");
        let chunk = meta.metadata().row_group(0).column(0);
        let start = chunk
            .dictionary_page_offset()
            .unwrap_or(chunk.data_page_offset()) as usize;
        let len = chunk.compressed_size() as usize;
        let pages = walk_pages(&bytes[start..start + len]).expect("walked");
        assert_eq!(pages.values, 3);
        assert!(pages.bytes > 0);
        for cut in 0..len.min(40) {
            let _ = walk_pages(&bytes[start..start + cut]);
        }
        assert!(walk_pages(&[0x15, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(walk_pages(&[0x1c; 64]).is_err(), "nesting is bounded");
    }
}
