//! The parsers, on hand-made files: format rules, limits, messages.

use super::*;
use crate::ingest::record::fixtures::{csv, row};
use crate::ingest::record::*;
use crate::model::Detail;
use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::DataType;
use chrono::NaiveDate;

fn rules(r: &Rejected) -> Vec<Rule> {
    r.issues.iter().map(|i| i.rule).collect()
}

// A valid file of each dataset parses into typed records with every item in place.
#[test]
fn valid_files_parse() {
    for ds in Dataset::ALL {
        let bytes = csv(&[row(ds, "BRRV00001", &[]), row(ds, "BRRV00002", &[])]);
        let recs = parse(ds, &bytes).expect("valid file");
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].ordinal, 2);
        assert_eq!(recs[1].common.cds_unique_id, "BRRV00002");
        assert_eq!(recs[0].dataset(), ds);
        assert_eq!(recs[0].activity_date(), NaiveDate::from_ymd_opt(2024, 5, 1));
    }
    let recs = parse(Dataset::Apc, &csv(&[row(Dataset::Apc, "B1", &[])])).expect("valid");
    match &recs[0].detail {
        Detail::Apc(a) => {
            assert_eq!(a.secondary_diagnoses, vec!["E119", "J449"]);
            assert!(a.last_episode_in_spell);
            assert_eq!(a.episode_number, Some(1));
        }
        other => panic!("wrong detail {other:?}"),
    }
}

// A 0-byte file and a header-only file are unreadable submissions, not empty successes.
#[test]
fn empty_files_are_rejected() {
    let r = parse(Dataset::Op, b"").expect_err("0 bytes");
    assert_eq!(rules(&r), vec![Rule::FileUnreadable]);
    assert!(r.issues[0].message.contains("0 bytes"));
    let header_only = csv(&[row(Dataset::Op, "B1", &[])]);
    let first_line = header_only
        .split(|b| *b == b'\n')
        .next()
        .expect("header")
        .to_vec();
    let r = parse(Dataset::Op, &first_line).expect_err("no records");
    assert!(r.issues[0].message.contains("no records"));
}

// Binary garbage is named as such, with the line where it was found.
#[test]
fn binary_garbage_is_rejected() {
    let mut bytes = csv(&[row(Dataset::Ec, "B1", &[])]);
    bytes.extend_from_slice(&[0xff, 0xfe, 0x00, 0x9c, b',', 0xc3, b'\n']);
    let r = parse(Dataset::Ec, &bytes).expect_err("garbage");
    assert_eq!(rules(&r), vec![Rule::FileUnreadable]);
    assert!(r.issues[0].message.contains("not UTF-8"), "{:?}", r.issues);
    let r = parse(Dataset::Ec, &[0u8, 1, 2, 3, 0xff, 0xfe, 7, 8]).expect_err("all binary");
    assert_eq!(rules(&r), vec![Rule::FileUnreadable]);
}

// A file cut in the middle of a record is rejected naming the broken line.
#[test]
fn truncated_file_is_rejected() {
    let bytes = csv(&[row(Dataset::Apc, "B1", &[]), row(Dataset::Apc, "B2", &[])]);
    let cut = &bytes[..bytes.len() - 40];
    let r = parse(Dataset::Apc, cut).expect_err("truncated");
    assert_eq!(rules(&r), vec![Rule::FileUnreadable]);
    assert_eq!(r.issues[0].ordinal, Some(2));
    assert!(r.issues[0].message.contains("line 3"), "{}", r.issues[0]);
}

// Wrong columns: an unknown column and a missing one are both named.
#[test]
fn wrong_columns_are_rejected() {
    let mut rec = row(Dataset::Op, "B1", &[]);
    rec.retain(|(k, _)| k != "first_attendance");
    rec.push(("favourite_colour".into(), "blue".into()));
    let r = parse(Dataset::Op, &csv(&[rec])).expect_err("header");
    assert_eq!(rules(&r), vec![Rule::HeaderInvalid, Rule::HeaderInvalid]);
    let text: Vec<String> = r.issues.iter().map(|i| i.message.clone()).collect();
    assert!(text.iter().any(|m| m.contains("favourite_colour")));
    assert!(
        text.iter()
            .any(|m| m.contains("missing column 'first_attendance'"))
    );
    // An APC file sent as outpatients is a wrong header too.
    let r = parse(Dataset::Op, &csv(&[row(Dataset::Apc, "B1", &[])])).expect_err("dataset");
    assert!(rules(&r).iter().all(|x| *x == Rule::HeaderInvalid));
}

// Bad dates and numbers name the record, its id, the item and the value; all are listed.
#[test]
fn bad_values_name_record_item_and_value() {
    let rows = [
        row(Dataset::Apc, "B1", &[]),
        row(Dataset::Apc, "B2", &[("admission_date", "2024-13-45")]),
        row(Dataset::Apc, "B3", &[("episode_number", "x1")]),
        row(
            Dataset::Apc,
            "B4",
            &[("cds_applicable_datetime", "yesterday")],
        ),
        row(Dataset::Apc, "B5", &[("cds_update_type", "7")]),
    ];
    let r = parse(Dataset::Apc, &csv(&rows)).expect_err("bad values");
    assert_eq!(r.issues.len(), 4);
    assert!(r.issues.iter().all(|i| i.rule == Rule::ItemFormatInvalid));
    let first = &r.issues[0];
    assert_eq!(first.ordinal, Some(2));
    assert_eq!(first.cds_unique_id.as_deref(), Some("B2"));
    assert_eq!(first.item.as_deref(), Some("admission_date"));
    assert_eq!(
        first.to_string(),
        "record 2 (B2): item admission_date: '2024-13-45' is not a date (YYYY-MM-DD) [R04-ITEM-FORMAT]"
    );
}

// Mandatory items: always for keys, only for upserts for the rest; deletions need only keys.
#[test]
fn mandatory_items() {
    let rows = [
        row(Dataset::Op, "", &[]),
        row(Dataset::Op, "B2", &[("appointment_date", "")]),
        row(
            Dataset::Op,
            "B3",
            &[("cds_update_type", "1"), ("appointment_date", "")],
        ),
    ];
    let r = parse(Dataset::Op, &csv(&rows)).expect_err("mandatory");
    let found: Vec<(Option<u64>, Option<String>)> = r
        .issues
        .iter()
        .map(|i| (i.ordinal, i.item.clone()))
        .collect();
    assert_eq!(
        found,
        vec![
            (Some(1), Some("cds_unique_id".to_string())),
            (Some(2), Some("appointment_date".to_string())),
        ]
    );
    assert!(
        r.issues
            .iter()
            .all(|i| i.rule == Rule::MandatoryItemMissing)
    );
}

// The rejection lists at most MAX_ISSUES findings and counts the rest.
#[test]
fn findings_are_capped_and_counted() {
    let rows: Vec<_> = (0..150)
        .map(|i| {
            row(
                Dataset::Ec,
                &format!("B{i}"),
                &[("arrival_datetime", "soon")],
            )
        })
        .collect();
    let r = parse(Dataset::Ec, &csv(&rows)).expect_err("many");
    assert_eq!(r.issues.len(), MAX_ISSUES);
    assert_eq!(r.more, 50);
}

// An item over the field limit is a finding on its record naming the limit, and is not
// quoted; a key over the data dictionary's 35 characters likewise, and the record's other
// findings do not quote it either.
#[test]
fn long_items_and_keys_are_findings_that_quote_nothing() {
    let long = "Q".repeat(5_000);
    let key = format!("B{}", "9".repeat(35));
    let rows = [
        row(Dataset::Op, "B1", &[("local_patient_id", &long)]),
        row(Dataset::Op, &key, &[("appointment_date", "someday")]),
        row(Dataset::Op, "B3", &[]),
    ];
    let r = parse(Dataset::Op, &csv(&rows)).expect_err("findings");
    let text: Vec<String> = r.issues.iter().map(|i| i.to_string()).collect();
    assert_eq!(r.issues.len(), 3, "{text:?}");
    assert_eq!(r.issues[0].item.as_deref(), Some("local_patient_id"));
    assert_eq!(
        r.issues[0].message,
        "5000 bytes: over the limit of 4096 bytes per item (setting max_field_bytes \
         (--max-field-bytes, SUS_MAX_FIELD_BYTES))"
    );
    assert!(r.issues[1..].iter().all(|i| i.cds_unique_id.is_none()));
    assert!(
        text.iter()
            .any(|t| t.contains("36 characters: the data dictionary allows at most 35")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .all(|t| !t.contains("QQQQ") && !t.contains("99999"))
    );
    // A long value quoted by a format finding is cut short.
    let odd = format!("2024-{}", "1".repeat(100));
    let r = parse(
        Dataset::Op,
        &csv(&[row(Dataset::Op, "B1", &[("appointment_date", &odd)])]),
    )
    .expect_err("format");
    assert!(
        r.issues[0].message.contains("(105 bytes)"),
        "{}",
        r.issues[0]
    );
}

// More rows, or more decoded bytes, than the limits refuse the whole submission, naming the
// limit; a file over the byte limit is refused before it is read.
#[test]
fn submissions_over_the_limits_are_refused_naming_them() {
    let rows: Vec<_> = (0..10)
        .map(|i| row(Dataset::Ec, &format!("B{i}"), &[]))
        .collect();
    let bytes = csv(&rows);
    let tight = |f: &dyn Fn(&mut SubmissionLimits)| {
        let mut l = SubmissionLimits::default();
        f(&mut l);
        parse_limited(Dataset::Ec, &bytes, &l)
            .expect_err("over a limit")
            .to_string()
    };
    let e = tight(&|l| l.max_rows = 9);
    assert!(e.contains("more than 9 records"), "{e}");
    assert!(e.contains("max_submission_rows"), "{e}");
    let e = tight(&|l| l.max_decoded_bytes = 3 * ROW_BYTES);
    assert!(e.contains("max_submission_decoded_mib"), "{e}");
    let e = tight(&|l| l.max_bytes = 100);
    assert!(e.contains("max_submission_mib"), "{e}");
    let ok = parse_limited(Dataset::Ec, &bytes, &SubmissionLimits::default())
        .expect("within the limits")
        .expect("valid");
    assert_eq!(ok.len(), 10);
    // The reservation made before parsing covers what parsing counts.
    let bound = decoded_bound(&bytes, &SubmissionLimits::default());
    let l = SubmissionLimits {
        max_decoded_bytes: bound,
        ..SubmissionLimits::default()
    };
    parse_limited(Dataset::Ec, &bytes, &l)
        .expect("the bound is an upper bound")
        .expect("valid");
}

fn to_parquet(batch: &arrow::array::RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).expect("writer");
    w.write(batch).expect("write");
    w.close().expect("close");
    out
}

// Parquet submissions with string columns parse exactly like the same CSV.
#[test]
fn parquet_with_string_columns_matches_csv() {
    let rows = [row(Dataset::Ec, "B1", &[]), row(Dataset::Ec, "B2", &[])];
    let bytes = csv(&rows);
    let schema = Arc::new(arrow::datatypes::Schema::new(
        rows[0]
            .iter()
            .map(|(k, _)| arrow::datatypes::Field::new(k, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let cols: Vec<ArrayRef> = (0..rows[0].len())
        .map(|c| {
            Arc::new(StringArray::from(
                rows.iter().map(|r| r[c].1.as_str()).collect::<Vec<_>>(),
            )) as ArrayRef
        })
        .collect();
    let batch = arrow::array::RecordBatch::try_new(schema, cols).expect("batch");
    let from_parquet = parse(Dataset::Ec, &to_parquet(&batch)).expect("parquet");
    let from_csv = parse(Dataset::Ec, &bytes).expect("csv");
    assert_eq!(from_parquet, from_csv);
}

// A file that starts like Parquet but is garbage is rejected, never a panic.
#[test]
fn corrupt_parquet_is_rejected() {
    let mut bytes = b"PAR1".to_vec();
    bytes.extend((0..500u32).map(|i| (i * 7919 % 251) as u8));
    bytes.extend_from_slice(b"PAR1");
    let r = parse(Dataset::Op, &bytes).expect_err("corrupt");
    assert_eq!(rules(&r), vec![Rule::FileUnreadable]);
    assert!(r.issues[0].message.contains("Parquet"));
}

use std::sync::Arc;
