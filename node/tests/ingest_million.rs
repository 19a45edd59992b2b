//! The whole slice on one node, at scale: the generator writes 1 M mixed records (APC, OP, EC; Net
//! Change and Bulk Replacement; replacements, deletions, warnings and whole-file rejections) and
//! computes, independently of the node, what every submission must report and what the store must
//! hold. We ingest every file through the real path, restart the node, and compare.
//!
//! `SUS_TEST_ROWS` overrides the row count (default 1 000 000).

use std::path::{Path, PathBuf};
use std::time::Instant;
use sus_client::generator::{GenConfig, generate};
use sus_node::ingest::files::read_submission;
use sus_node::ingest::local::{LocalConfig, LocalStore};
use sus_node::model::Dataset;
use sus_node::report::Outcome;
use sus_node::store::totals::summarise;

fn refdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata")
}

#[test]
fn million_mixed_rows_match_the_generators_totals_after_restart() {
    let rows: u64 = std::env::var("SUS_TEST_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("gen");
    let started = Instant::now();
    let summary = generate(
        &GenConfig {
            dataset: None,
            rows,
            seed: 20_261_125,
            refdata_dir: refdata(),
            out_dir: out.clone(),
            reject_files: true,
            ..GenConfig::default()
        },
        &mut |_| {},
    )
    .expect("generate");
    let expected = summary.expected;
    eprintln!(
        "generated {} files, {} rows in {:.1}s",
        summary.files,
        summary.rows_written,
        started.elapsed().as_secs_f64()
    );
    assert!(expected.submissions.iter().any(|s| s.outcome == "rejected"));
    assert!(
        expected
            .submissions
            .iter()
            .any(|s| s.protocol == "bulk_replacement")
    );

    let config = LocalConfig {
        data_dir: tmp.path().join("node"),
        refdata_dir: refdata(),
        grouper_output: None,
    };
    let node = LocalStore::open(&config).expect("open node");
    let started = Instant::now();
    let mut records = 0u64;
    for want in &expected.submissions {
        let path = out.join(&want.file);
        let (meta, bytes) = read_submission(&path).expect("read submission");
        let got = node.submit(&meta, &want.file, &bytes).expect("submit");
        records += got.records;
        let ctx = format!("{}: got {got}", want.file);
        match want.outcome.as_str() {
            "accepted" => {
                assert_eq!(got.outcome, Outcome::Accepted, "{ctx}");
                assert_eq!(got.resent, want.duplicate_of.is_some(), "{ctx}");
                assert_eq!(
                    (
                        got.records,
                        got.inserted,
                        got.replaced,
                        got.deleted,
                        got.stale,
                        got.bulk_deleted
                    ),
                    (
                        want.records,
                        want.inserted,
                        want.replaced,
                        want.deleted,
                        want.stale,
                        want.bulk_deleted
                    ),
                    "{ctx}"
                );
            }
            "rejected" => {
                assert_eq!(got.outcome, Outcome::Rejected, "{ctx}");
                let rejection = got.rejection.as_ref().expect("rejection");
                let rule = want.rule.as_deref().expect("expected rule");
                assert!(
                    rejection.issues.iter().any(|i| i.rule.code() == rule),
                    "{ctx}: expected {rule}"
                );
            }
            other => panic!("unknown expected outcome {other}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "ingested {records} records in {secs:.1}s: {:.0} records/s (debug build with optimised dependencies)",
        records as f64 / secs
    );
    drop(node);

    // Restart: everything must come back from disk.
    let node = LocalStore::open(&config).expect("reopen node");
    let mut bytes = 0u64;
    let mut live = 0u64;
    for ds in Dataset::ALL {
        let want = expected
            .datasets
            .get(ds.name())
            .copied()
            .unwrap_or_default();
        let got = summarise(node.store(), ds).expect("summarise");
        let t = got.totals;
        assert_eq!(
            (
                t.live_records,
                t.price,
                t.base_price,
                t.excess_payment,
                t.excess_bed_days
            ),
            (
                want.live_records,
                want.total_price_pence,
                want.total_base_price_pence,
                want.total_excess_payment_pence,
                want.total_excess_bed_days
            ),
            "{ds}: live records and pence"
        );
        assert_eq!(
            (t.excluded, t.with_warnings),
            (want.excluded_records, want.records_with_warnings),
            "{ds}: excluded and warned records"
        );
        for (provider, per_ds) in &expected.providers {
            let want = per_ds.get(ds.name()).copied().unwrap_or_default();
            let got = got.providers.get(provider).copied().unwrap_or_default();
            assert_eq!(
                (got.live_records, got.price),
                (want.live_records, want.total_price_pence),
                "{ds} provider {provider}"
            );
        }
        assert_eq!(
            got.providers
                .keys()
                .filter(|p| !expected.providers.contains_key(*p))
                .count(),
            0,
            "{ds}: providers the generator never sent"
        );
        let stats = node.store().stats(ds).expect("stats");
        assert_eq!(stats.live_records, t.live_records, "{ds}: stats");
        bytes += stats.segment_bytes;
        live += stats.live_records;
    }
    eprintln!(
        "on disk: {bytes} bytes of segments for {live} live records: {:.1} bytes/record",
        bytes as f64 / live as f64
    );
}
