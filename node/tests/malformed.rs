//! Malformed submissions are rejected whole with an error naming the file, the record and the rule,
//! and nothing already accepted is lost or changed.

use std::path::{Path, PathBuf};
use sus_client::generator::{GenConfig, generate};
use sus_node::ingest::files::read_submission;
use sus_node::ingest::local::{LocalConfig, LocalStore};
use sus_node::model::{Dataset, SubmissionMeta};
use sus_node::report::{Outcome, SubmissionReport};
use sus_node::store::totals::{DatasetSummary, summarise};

fn refdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata")
}

fn snapshot(node: &LocalStore) -> Vec<DatasetSummary> {
    Dataset::ALL
        .into_iter()
        .map(|ds| summarise(node.store(), ds).expect("summarise"))
        .collect()
}

/// Rewrites one CSV cell (by column name) in every data row.
fn set_column(bytes: &[u8], column: &str, value: &str) -> Vec<u8> {
    let mut reader = csv::Reader::from_reader(bytes);
    let header = reader.headers().expect("header").clone();
    let at = header.iter().position(|h| h == column).expect("column");
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&header).expect("write header");
    for row in reader.records() {
        let row = row.expect("row");
        let cells: Vec<&str> = row
            .iter()
            .enumerate()
            .map(|(i, c)| if i == at { value } else { c })
            .collect();
        writer.write_record(&cells).expect("write row");
    }
    writer.into_inner().expect("flush")
}

/// Rewrites one cell of data row `n` (1-based).
fn set_cell(bytes: &[u8], n: usize, column: &str, value: &str) -> Vec<u8> {
    let mut reader = csv::Reader::from_reader(bytes);
    let header = reader.headers().expect("header").clone();
    let at = header.iter().position(|h| h == column).expect("column");
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&header).expect("write header");
    for (i, row) in reader.records().enumerate() {
        let row = row.expect("row");
        let cells: Vec<&str> = row
            .iter()
            .enumerate()
            .map(|(j, c)| if i + 1 == n && j == at { value } else { c })
            .collect();
        writer.write_record(&cells).expect("write row");
    }
    writer.into_inner().expect("flush")
}

#[test]
fn malformed_submissions_are_rejected_and_nothing_accepted_is_lost() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("gen");
    let expected = generate(
        &GenConfig {
            dataset: Some(sus_client::generator::model::Dataset::Apc),
            rows: 3_000,
            seed: 11,
            refdata_dir: refdata(),
            out_dir: out.clone(),
            rows_per_file: 500,
            bulk_share: 0.0,
            ..GenConfig::default()
        },
        &mut |_| {},
    )
    .expect("generate")
    .expected;
    let accepted: Vec<_> = expected
        .submissions
        .iter()
        .filter(|s| s.outcome == "accepted" && s.duplicate_of.is_none())
        .collect();
    assert!(accepted.len() >= 3, "need several files");
    let node = LocalStore::open(&LocalConfig {
        data_dir: tmp.path().join("node"),
        refdata_dir: refdata(),
        grouper_output: None,
    })
    .expect("open node");

    // Accept the first files, then try broken versions of the next one.
    let (done, next) = (&accepted[..2], accepted[2]);
    for s in done {
        let (meta, bytes) = read_submission(&out.join(&s.file)).expect("read");
        let report = node.submit(&meta, &s.file, &bytes).expect("submit");
        assert_eq!(report.outcome, Outcome::Accepted, "{report}");
    }
    let before = snapshot(&node);
    let version = node.store().version().expect("version");
    assert!(before[0].totals.live_records > 0);

    let (meta, good) = read_submission(&out.join(&next.file)).expect("read next");
    let text = String::from_utf8(good.clone()).expect("generated CSV is UTF-8");
    let second_row_end = text.match_indices('\n').nth(2).expect("3 lines").0;
    let cases: Vec<(&str, Vec<u8>, &str, Option<u64>)> = vec![
        // name, bytes, rule, record named
        (
            "truncated.csv",
            good[..second_row_end - 7].to_vec(),
            "R01-FILE-UNREADABLE",
            Some(2),
        ),
        (
            "wrong-column.csv",
            text.replacen("admission_date", "admision_date", 1)
                .into_bytes(),
            "R02-HEADER",
            None,
        ),
        (
            "bad-date.csv",
            set_cell(&good, 2, "admission_date", "2024-02-30"),
            "R04-ITEM-FORMAT",
            Some(2),
        ),
        (
            "garbage.bin",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            "R01-FILE-UNREADABLE",
            None,
        ),
        ("empty.csv", Vec::new(), "R01-FILE-UNREADABLE", None),
        (
            "unknown-provider.csv",
            set_column(&good, "provider_code", "ZZZ99"),
            "R05-PROVIDER-UNKNOWN",
            Some(1),
        ),
    ];
    for (i, (name, bytes, rule, record)) in cases.into_iter().enumerate() {
        let meta = SubmissionMeta {
            submission_id: format!("BROKEN{i}"),
            ..meta.clone()
        };
        let report: SubmissionReport = node.submit(&meta, name, &bytes).expect("submit");
        let shown = report.to_string();
        assert_eq!(report.outcome, Outcome::Rejected, "{name}: {shown}");
        assert!(
            shown.starts_with(name),
            "{name}: the report names the file: {shown}"
        );
        assert!(shown.contains(rule), "{name}: expected {rule}: {shown}");
        assert!(
            shown.contains("nothing of this submission was stored"),
            "{shown}"
        );
        let first = &report.rejection.as_ref().expect("rejection").issues[0];
        assert_eq!(first.rule.code(), rule, "{name}: {shown}");
        if let Some(n) = record {
            assert_eq!(first.ordinal, Some(n), "{name}: names record {n}: {shown}");
            assert!(shown.contains(&format!("record {n}")), "{shown}");
        }
        assert_eq!(snapshot(&node), before, "{name}: accepted data unchanged");
        assert_eq!(node.store().version().expect("version"), version, "{name}");
        // A resend of the same broken submission gets the same answer.
        let again = node.submit(&meta, name, &bytes).expect("resubmit");
        assert!(
            again.resent && again.outcome == Outcome::Rejected,
            "{again}"
        );
    }

    // The good file still goes in, after all that.
    let report = node.submit(&meta, &next.file, &good).expect("submit good");
    assert_eq!(report.outcome, Outcome::Accepted, "{report}");
    assert_eq!(report.inserted, next.inserted, "{report}");
    assert_eq!(
        snapshot(&node)[0].totals.live_records,
        before[0].totals.live_records + next.inserted
    );
}
