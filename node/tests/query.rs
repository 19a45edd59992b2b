//! The query engine on one store, against the generator's independent oracle: every aggregate is
//! recomputed row by row from `live.csv` (the records the oracle holds live, with the prices it
//! derived itself). Then freeze points: a frozen view keeps its answers through replacements,
//! deletions, Bulk Replacements and compaction, while the current view moves on.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use sus_client::generator::{GenConfig, generate};
use sus_node::ingest::files::read_submission;
use sus_node::node::{Node, NodeConfig};
use sus_node::query::{self, PatientKey, Query};
use sus_proto::v1::{self, aggregate::Func, filter::Op};

fn refdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata")
}

/// One live record of the oracle.
#[derive(Debug, Clone)]
pub struct Live {
    pub dataset: String,
    pub provider: String,
    pub commissioner: String,
    pub month: String,
    pub hrg: String,
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
                pod: rec[7].to_string(),
                price: rec[8].parse().expect("price"),
                excess_bed_days: rec[11].parse().expect("days"),
                excluded: &rec[12] == "true",
            }
        })
        .collect()
}

fn spec(dataset: &str, group_by: &[&str], filters: Vec<v1::Filter>) -> v1::QuerySpec {
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

fn filter(field: &str, op: Op, values: &[&str], min: &str, max: &str) -> v1::Filter {
    v1::Filter {
        field: field.into(),
        op: op as i32,
        values: values.iter().map(|v| v.to_string()).collect(),
        min: min.into(),
        max: max.into(),
    }
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

fn run(node: &Node, spec: &v1::QuerySpec) -> Table {
    let q = Query::from_proto(spec).expect("valid query");
    let (partial, _, _) = query::aggregate(node.store(), &q, &PatientKey([7; 16])).expect("query");
    table(
        &partial.finish(&[], 0).expect("finish"),
        spec.group_by.len(),
    )
}

fn ingest(node: &Node, out: &Path, files: &[String]) {
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
    let node = Node::open(&NodeConfig {
        data_dir: tmp.path().join("node"),
        refdata_dir: refdata(),
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
    let queries = [
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
    ];
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
    let live = read_live(&out.join("live.csv"));
    fn ds<'a>(d: &str) -> impl Fn(&'a Live) -> Option<&'a Live> {
        move |r: &'a Live| (r.dataset == d).then_some(r)
    }
    let check = |node: &Node, what: &str| {
        assert_eq!(
            run(node, &queries[0]),
            expect(&live, |r| ds("apc")(r).map(|_| vec![])),
            "{what}: apc national"
        );
        assert_eq!(
            run(node, &queries[1]),
            expect(&live, |r| ds("op")(r)
                .map(|r| vec![r.provider.clone(), r.month.clone()])),
            "{what}: op by provider and month"
        );
        assert_eq!(
            run(node, &queries[2]),
            expect(&live, |r| ds("ec")(r).map(|r| vec![r.commissioner.clone()])),
            "{what}: ec by commissioner"
        );
        assert_eq!(
            run(node, &queries[3]),
            expect(&live, |r| {
                ds("apc")(r)
                    .filter(|r| ["EL", "NEL", "DC"].contains(&r.pod.as_str()) && r.price >= 1)
                    .map(|r| vec![r.pod.clone(), r.hrg.chars().take(2).collect()])
            }),
            "{what}: apc filtered"
        );
    };
    check(&node, "before compaction");
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

    // And after a restart.
    drop(node);
    let node = Node::open(&NodeConfig {
        data_dir: tmp.path().join("node"),
        refdata_dir: refdata(),
    })
    .expect("reopen");
    check(&node, "after restart");
    let frozen_after: Vec<Table> = queries.iter().map(|q| run(&node, &frozen(q))).collect();
    assert_eq!(frozen_after, at_freeze);
}
