//! Q1 to Q6 of the side-by-side harness, written in SQL (`queries::sql`), answer exactly what
//! the native calls answer (`queries::run`), on a real 3-node TLS cluster holding generated data.
//! Q1 to Q4 and Q6 are pushed down to the nodes' aggregates; Q5 (distinct patients, written
//! as SQL's count distinct) runs over the scans.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use sus_benches::queries::{self, Params, QUERIES};

/// The `sus-node` binary `cargo test --workspace` builds beside this test's own.
fn node_bin() -> PathBuf {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("sus-node")))
        .expect("the test's directory");
    assert!(
        bin.exists(),
        "{} is missing: run this test with the workspace (`cargo test --workspace`), which builds sus-node",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q1_to_q6_in_sql_answer_as_the_native_calls() {
    let refdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata");
    let cluster = sus_chaos_tests::cluster::TestCluster::start(
        &node_bin(),
        &refdata,
        3,
        4,
        2,
        sus_chaos_tests::cluster::NodeOptions::default(),
    )
    .await
    .unwrap();
    let out = cluster.scratch();
    let summary = sus_client::generator::generate(
        &sus_client::generator::GenConfig {
            rows: 4_000,
            seed: 20_261_208,
            refdata_dir: refdata,
            out_dir: out.clone(),
            rows_per_file: 400,
            ..sus_client::generator::GenConfig::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let client = cluster.client(&[1, 2, 3]);
    for s in &summary.expected.submissions {
        client.submit_file(&out.join(&s.file)).await.unwrap();
    }
    // The busiest outpatient provider, as the harness chooses it.
    let busiest = queries::run(&client, "Q5", &Params::default())
        .await
        .unwrap();
    let provider = busiest
        .0
        .iter()
        .max_by_key(|r| r[1].as_i64())
        .and_then(|r| r[0].as_str())
        .unwrap()
        .to_string();
    let params = Params {
        provider,
        quarter: ("2024-04-01".into(), "2024-06-30".into()),
        chapter: "FD".into(),
        month: "2024-09".into(),
    };
    for q in QUERIES {
        let (native, _) = queries::run(&client, q, &params).await.unwrap();
        let sql = queries::run_sql(&client, q, &params)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e:#}\n{}", queries::sql(q, &params).unwrap()));
        assert!(!native.is_empty(), "{q}: the data answers it");
        assert_eq!(sql, native, "{q}: {}", queries::sql(q, &params).unwrap());
    }
}
