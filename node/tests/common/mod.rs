//! Shared by the query tests: the oracle's live records and aggregates recomputed from them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use std::collections::BTreeMap;
use std::path::Path;
use sus_proto::v1::{self, aggregate::Func, filter::Op};

/// One live record of the oracle.
#[derive(Debug, Clone)]
pub struct Live {
    pub dataset: String,
    pub provider: String,
    pub commissioner: String,
    pub month: String,
    pub hrg: String,
    pub spell_hrg: String,
    pub pod: String,
    pub price: i64,
    pub excess_bed_days: i64,
    pub excluded: bool,
}

pub fn read_live(path: &Path) -> Vec<Live> {
    let mut r = csv::Reader::from_path(path).expect("live.csv");
    r.records()
        .map(|rec| {
            let rec = rec.expect("row");
            Live {
                dataset: rec[0].to_string(),
                provider: rec[2].to_string(),
                commissioner: rec[3].to_string(),
                month: rec[4][..7].to_string(),
                hrg: rec[5].to_string(),
                spell_hrg: rec[6].to_string(),
                pod: rec[7].to_string(),
                price: rec[8].parse().expect("price"),
                excess_bed_days: rec[11].parse().expect("days"),
                excluded: &rec[12] == "true",
            }
        })
        .collect()
}

/// (group key) → [count, price, excess bed days, excluded].
pub type Table = BTreeMap<Vec<String>, [i64; 4]>;

pub fn table(batch: &RecordBatch, keys: usize) -> Table {
    let mut out = Table::new();
    for row in 0..batch.num_rows() {
        let key = (0..keys)
            .map(|c| {
                let col = batch.column(c).as_string::<i32>();
                if col.is_valid(row) {
                    col.value(row).to_string()
                } else {
                    String::new()
                }
            })
            .collect();
        let v = |c: usize| {
            batch
                .column(keys + c)
                .as_primitive::<Int64Type>()
                .value(row)
        };
        out.insert(key, [v(0), v(1), v(2), v(3)]);
    }
    out
}

pub fn expect(live: &[Live], keys: impl Fn(&Live) -> Option<Vec<String>>) -> Table {
    let mut out = Table::new();
    for r in live {
        if let Some(k) = keys(r) {
            let e = out.entry(k).or_default();
            e[0] += 1;
            e[1] += r.price;
            e[2] += r.excess_bed_days;
            e[3] += i64::from(r.excluded);
        }
    }
    out
}

pub fn spec(dataset: &str, group_by: &[&str], filters: Vec<v1::Filter>) -> v1::QuerySpec {
    let agg = |func: Func, field: &str| v1::Aggregate {
        func: func as i32,
        field: field.into(),
        name: String::new(),
    };
    v1::QuerySpec {
        dataset: dataset.into(),
        filters,
        group_by: group_by.iter().map(|s| s.to_string()).collect(),
        aggregates: vec![
            agg(Func::Count, ""),
            agg(Func::Sum, "price"),
            agg(Func::Sum, "excess_bed_days"),
            agg(Func::Sum, "pbr_excluded"),
        ],
        ..v1::QuerySpec::default()
    }
}

pub fn filter(field: &str, op: Op, values: &[&str], min: &str, max: &str) -> v1::Filter {
    v1::Filter {
        field: field.into(),
        op: op as i32,
        values: values.iter().map(|v| v.to_string()).collect(),
        min: min.into(),
        max: max.into(),
    }
}

/// National, per-provider-and-month, per-commissioner and filtered queries.
pub fn queries() -> [v1::QuerySpec; 4] {
    [
        spec("apc", &[], vec![]),
        spec("op", &["provider_code", "activity_month"], vec![]),
        spec("ec", &["commissioner_code"], vec![]),
        spec(
            "apc",
            &["pod", "hrg_chapter"],
            vec![
                filter("pod", Op::In, &["EL", "NEL", "DC"], "", ""),
                filter("price", Op::Range, &[], "1", ""),
            ],
        ),
    ]
}

/// What [`queries`] must answer, recomputed row by row from the oracle's live records.
pub fn expected(live: &[Live]) -> [Table; 4] {
    let ds = |d: &str, r: &Live| r.dataset == d;
    [
        expect(live, |r| ds("apc", r).then(Vec::new)),
        expect(live, |r| {
            ds("op", r).then(|| vec![r.provider.clone(), r.month.clone()])
        }),
        expect(live, |r| ds("ec", r).then(|| vec![r.commissioner.clone()])),
        expect(live, |r| {
            (ds("apc", r) && ["EL", "NEL", "DC"].contains(&r.pod.as_str()) && r.price >= 1)
                .then(|| vec![r.pod.clone(), r.hrg.chars().take(2).collect()])
        }),
    ]
}

/// A 3-node cluster of 4 shards of 2 replicas (every node lacks some shard) and `rows` generated
/// rows (files of `rows_per_file`, with the oracle's `live.csv`) in its scratch directory.
pub async fn cluster_with_data(
    rows: u64,
    seed: u64,
    rows_per_file: u64,
) -> (
    sus_chaos_tests::cluster::TestCluster,
    std::path::PathBuf,
    sus_client::generator::Summary,
) {
    let refdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata");
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_sus-node"));
    let cluster = sus_chaos_tests::cluster::TestCluster::start(
        &bin,
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
            rows,
            seed,
            refdata_dir: refdata,
            out_dir: out.clone(),
            rows_per_file,
            write_live: true,
            ..sus_client::generator::GenConfig::default()
        },
        &mut |_| {},
    )
    .unwrap();
    (cluster, out, summary)
}

/// Whether an external tool the test needs is here; under CI it must be (`.ci/run` installs it).
pub fn available(what: &str, ok: bool) -> bool {
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing, and CI requires it (.ci/run installs it)"
        );
        eprintln!("SKIPPED: {what} is not installed here; this part of the test did not run");
    }
    ok
}

/// The Python the tests run (`SUS_PYTHON`, else `python3`).
pub fn python() -> String {
    std::env::var("SUS_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether that Python imports `modules` (e.g. `"pyarrow.flight"`).
pub fn python_has(modules: &str) -> bool {
    std::process::Command::new(python())
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
