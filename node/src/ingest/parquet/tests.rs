//! The Parquet reader on hand-made files: types, limits, bombs, and agreement with CSV.

use super::*;
use crate::ingest::pages::walk_pages;
use crate::ingest::record::fixtures::row;
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
    let e =
        parse(Dataset::Apc, &bytes, &SubmissionLimits::default()).expect_err("over the row limit");
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
    let from_csv = crate::ingest::parse::parse(Dataset::Apc, &fixtures_csv(&rows)).expect("csv");
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
    crate::ingest::record::fixtures::csv(rows)
}

// Page headers are read for their sizes whatever other fields they carry; malformed ones are
// errors, never panics.
#[test]
fn page_headers_are_walked_and_malformed_ones_refused() {
    let bytes = repeated(Dataset::Op, 3, &[]);
    let meta = ArrowReaderMetadata::load(&bytes::Bytes::from(bytes.clone()), Default::default())
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
