//! The query engine on one store, against the generator's independent oracle: every aggregate is
//! recomputed row by row from `oracle/live.csv` (the records the oracle holds live, with the prices it
//! derived itself). Then freeze points: a frozen view keeps its answers through replacements,
//! deletions, Bulk Replacements and compaction, while the current view moves on.

mod common;

use arrow::array::{Array, AsArray};
use common::{Table, expected, queries, read_live, table};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use sus_client::generator::{GenConfig, generate};
use sus_node::ingest::files::read_submission;
use sus_node::ingest::local::{LocalConfig, LocalStore};
use sus_node::query::{self, PatientKey, Query};
use sus_node::store::{DEFAULT_FOOTER_BYTES, SegmentCache};
use sus_proto::v1;

fn refdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata")
}

fn run(node: &LocalStore, spec: &v1::QuerySpec) -> Table {
    let q = Query::from_proto(spec).expect("valid query");
    let (partial, _, _) = query::aggregate(node.store(), &q, &PatientKey([7; 16])).expect("query");
    table(
        &partial.finish(&[], 0).expect("finish"),
        spec.group_by.len(),
    )
}

/// Distinct patients per provider (op), as the engine counts them from keyed digests, equal the
/// patients a record-level scan lists (the NHS number, else the provider and local identifier).
fn check_distinct_patients(node: &LocalStore, what: &str) {
    let spec = v1::QuerySpec {
        dataset: "op".into(),
        group_by: vec!["provider_code".into()],
        aggregates: vec![v1::Aggregate {
            func: v1::aggregate::Func::CountDistinctPatients as i32,
            ..v1::Aggregate::default()
        }],
        ..v1::QuerySpec::default()
    };
    let q = Query::from_proto(&spec).expect("valid query");
    let (partial, _, _) = query::aggregate(node.store(), &q, &PatientKey([7; 16])).expect("query");
    let batch = partial.finish(&[], 0).expect("finish");
    let (providers, counts) = (
        batch.column(0).as_string::<i32>(),
        batch
            .column(1)
            .as_primitive::<arrow::datatypes::Int64Type>(),
    );
    let got: BTreeMap<String, i64> = (0..batch.num_rows())
        .map(|r| (providers.value(r).to_string(), counts.value(r)))
        .collect();
    let mut patients: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let columns = ["provider_code", "nhs_number", "local_patient_id"].map(String::from);
    query::scan(
        node.store(),
        sus_node::model::Dataset::Op,
        (&[], &[]),
        &columns,
        &query::View::Current,
        &mut |batch| {
            let provider = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
                .expect("cast");
            let provider = provider.as_string::<i32>();
            let (nhs, local) = (
                batch.column(1).as_string::<i32>(),
                batch.column(2).as_string::<i32>(),
            );
            for row in 0..batch.num_rows() {
                let key = if nhs.is_valid(row) {
                    format!("n{}", nhs.value(row))
                } else if local.is_valid(row) {
                    format!("l{}", local.value(row))
                } else {
                    continue;
                };
                patients
                    .entry(provider.value(row).to_string())
                    .or_default()
                    .insert(key);
            }
            Ok(())
        },
    )
    .expect("scan");
    assert!(patients.len() > 1, "{what}: too few providers");
    let want: BTreeMap<String, i64> = patients
        .into_iter()
        .map(|(p, set)| (p, set.len() as i64))
        .collect();
    assert_eq!(got, want, "{what}: distinct patients by provider");
}

fn ingest(node: &LocalStore, out: &Path, files: &[String]) {
    for f in files {
        let (meta, bytes) = read_submission(&out.join(f)).expect("read");
        node.submit(&meta, f, &bytes).expect("submit");
    }
}

#[test]
fn aggregates_match_the_oracle_and_freeze_points_hold_through_compaction() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("gen");
    let summary = generate(
        &GenConfig {
            rows: 20_000,
            seed: 4,
            refdata_dir: refdata(),
            out_dir: out.clone(),
            rows_per_file: 400,
            write_live: true,
            ..GenConfig::default()
        },
        &mut |_| {},
    )
    .expect("generate");
    let files: Vec<String> = summary
        .expected
        .submissions
        .iter()
        .map(|s| s.file.clone())
        .collect();
    let node = LocalStore::open(&LocalConfig {
        data_dir: tmp.path().join("node"),
        refdata_dir: refdata(),
        grouper_output: None,
    })
    .expect("open");

    // Half the files, a freeze point, and what it answers.
    let half = files.len() / 2;
    ingest(&node, &out, &files[..half]);
    let version = node.store().freeze("M06 recon").expect("freeze");
    let frozen = |s: &v1::QuerySpec| {
        let mut s = s.clone();
        s.view = Some(v1::View {
            freeze: "M06 recon".into(),
        });
        s
    };
    let queries = queries();
    let at_freeze: Vec<Table> = queries.iter().map(|q| run(&node, q)).collect();
    assert!(at_freeze[0][&vec![]][0] > 0);

    // The rest: replacements, deletions and Bulk Replacements among them.
    let rest = &summary.expected.submissions[half..];
    assert!(
        rest.iter().any(|s| s.replaced > 0),
        "no replacement after the freeze"
    );
    assert!(
        rest.iter().any(|s| s.deleted > 0),
        "no deletion after the freeze"
    );
    assert!(
        rest.iter().any(|s| s.bulk_deleted > 0),
        "no bulk replacement after the freeze"
    );
    ingest(&node, &out, &files[half..]);
    assert!(node.store().version().expect("version") > version);

    // Current view = the oracle's live records, for national, per-provider, per-commissioner and
    // filtered queries.
    let want = expected(&read_live(&out.join("oracle/live.csv")));
    let check = |node: &LocalStore, what: &str| {
        for (q, want) in queries.iter().zip(&want) {
            assert_eq!(&run(node, q), want, "{what}: {q:?}");
        }
    };
    check(&node, "before compaction");
    check_distinct_patients(&node, "before compaction");
    // Recent segments were scanned from memory; after the restart below, from Parquet.
    let hot = |node: &LocalStore| {
        let q = Query::from_proto(&queries[1]).expect("query");
        let (_, _, stats) = query::aggregate(node.store(), &q, &PatientKey([7; 16])).expect("run");
        (stats.segments_hot, stats.segments_scanned)
    };
    let (in_memory, scanned) = hot(&node);
    assert!(
        in_memory > 0 && in_memory <= scanned,
        "{in_memory} of {scanned} hot"
    );
    let frozen_before: Vec<Table> = queries.iter().map(|q| run(&node, &frozen(q))).collect();
    assert_eq!(
        frozen_before, at_freeze,
        "the freeze point moved with later submissions"
    );
    assert_ne!(
        run(&node, &queries[1]),
        at_freeze[1],
        "the current view did not move"
    );

    // Compaction merges the small segments and keeps both views exact.
    let stats = node.store().compact(100_000).expect("compact");
    assert!(stats.segments_after < stats.segments_before, "{stats:?}");
    let again = node.store().compact(100_000).expect("compact again");
    assert_eq!(again.segments_after, again.segments_before, "{again:?}");
    assert_eq!(again.segments_before, stats.segments_after, "{again:?}");
    assert!(stats.rows_dropped > 0, "{stats:?}");
    check(&node, "after compaction");
    let frozen_after: Vec<Table> = queries.iter().map(|q| run(&node, &frozen(q))).collect();
    assert_eq!(
        frozen_after, at_freeze,
        "compaction changed the freeze point's answers"
    );

    // And after a restart: from Parquet alone (no column cache), then with the default cache,
    // which the first reads fill.
    drop(node);
    let config = LocalConfig {
        data_dir: tmp.path().join("node"),
        refdata_dir: refdata(),
        grouper_output: None,
    };
    let cold = LocalStore::open_with_cache(&config, SegmentCache::new(0, DEFAULT_FOOTER_BYTES))
        .expect("reopen without a column cache");
    check(&cold, "after restart, from Parquet");
    check_distinct_patients(&cold, "after restart, from Parquet");
    let (in_memory, scanned) = hot(&cold);
    assert!(
        in_memory == 0 && scanned > 0,
        "{in_memory} of {scanned} from memory without a cache"
    );
    let frozen_after: Vec<Table> = queries.iter().map(|q| run(&cold, &frozen(q))).collect();
    assert_eq!(frozen_after, at_freeze);
    drop(cold);
    let node = LocalStore::open(&config).expect("reopen");
    let (in_memory, _) = hot(&node);
    assert_eq!(in_memory, 0, "nothing is in memory after a restart");
    check(&node, "after restart");
    let (in_memory, scanned) = hot(&node);
    assert!(
        in_memory == scanned && scanned > 0,
        "{in_memory} of {scanned} from memory once read"
    );
    let frozen_after: Vec<Table> = queries.iter().map(|q| run(&node, &frozen(q))).collect();
    assert_eq!(frozen_after, at_freeze);
}
