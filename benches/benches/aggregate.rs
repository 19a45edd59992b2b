//! The aggregation kernels over one store: rows/s of pushed-down aggregates from Parquet
//! segments (no column cache: every run decodes) and from memory (the column cache warm).
//! Q1 is what a trust statement and the database counts do nationally: the partition keys
//! (provider, month) are constants of a chunk, so only `price` is read; Q2 groups a dictionary
//! column under a partition key; Q4 groups two columns under a dictionary filter; Q5 counts
//! distinct patients (keyed digests of NHS numbers).

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sus_node::ingest::files::read_submission;
use sus_node::ingest::local::{LocalConfig, LocalStore};
use sus_node::query::{self, PatientKey, Query};
use sus_node::store::{DEFAULT_FOOTER_BYTES, SegmentCache};
use sus_proto::v1::{Aggregate, Filter, QuerySpec, aggregate::Func, filter::Op};

fn spec(
    dataset: &str,
    group_by: &[&str],
    aggs: &[(Func, &str)],
    filters: Vec<Filter>,
) -> QuerySpec {
    QuerySpec {
        dataset: dataset.into(),
        group_by: group_by.iter().map(|s| s.to_string()).collect(),
        aggregates: aggs
            .iter()
            .map(|(f, field)| Aggregate {
                func: *f as i32,
                field: field.to_string(),
                ..Aggregate::default()
            })
            .collect(),
        filters,
        ..QuerySpec::default()
    }
}

fn queries() -> Vec<(&'static str, QuerySpec)> {
    vec![
        (
            "Q1 sum(price) by provider, month",
            spec(
                "op",
                &["provider_code", "activity_month"],
                &[(Func::Sum, "price")],
                vec![],
            ),
        ),
        (
            "Q2 count, sum(price) by financial year, pod",
            spec(
                "op",
                &["financial_year", "pod"],
                &[(Func::Count, ""), (Func::Sum, "price")],
                vec![],
            ),
        ),
        (
            "Q4 by commissioner, age band; HRG chapter filter",
            spec(
                "apc",
                &["commissioner_code", "age_band"],
                &[(Func::Count, ""), (Func::Sum, "price")],
                vec![Filter {
                    field: "hrg_chapter".into(),
                    op: Op::Eq as i32,
                    values: vec!["FD".into()],
                    ..Filter::default()
                }],
            ),
        ),
        (
            "Q5 distinct patients by provider",
            spec(
                "op",
                &["provider_code"],
                &[(Func::CountDistinctPatients, "")],
                vec![],
            ),
        ),
    ]
}

fn aggregate(c: &mut Criterion) {
    let rows = if common::test_mode() {
        3_000
    } else {
        2_000_000
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let files = common::submissions(&tmp.path().join("gen"), None, rows, 50_000);
    let config = LocalConfig {
        data_dir: tmp.path().join("node"),
        refdata_dir: common::refdata(),
        grouper_output: None,
    };
    {
        let node = LocalStore::open_with_cache(&config, SegmentCache::new(0, 0)).expect("node");
        for f in &files {
            let (meta, bytes) = read_submission(f).expect("read");
            node.submit(&meta, "f.csv", &bytes).expect("submit");
        }
        node.store().compact(250_000).expect("compact");
    }
    let key = PatientKey([3; 16]);
    let queries = queries();
    for (mode, cache) in [
        ("parquet", SegmentCache::new(0, DEFAULT_FOOTER_BYTES)),
        ("memory", SegmentCache::new(4 << 30, DEFAULT_FOOTER_BYTES)),
    ] {
        let node = LocalStore::open_with_cache(&config, cache).expect("node");
        let mut group = c.benchmark_group(format!("aggregate {mode}"));
        group.sample_size(10);
        for (name, spec) in &queries {
            let q = Query::from_proto(spec).expect("query");
            // Warm (the cache, the footers, the OS page cache), and the rows it reads.
            let (_, _, stats) = query::aggregate(node.store(), &q, &key).expect("aggregate");
            group.throughput(Throughput::Elements(stats.rows_scanned.max(1)));
            group.bench_with_input(BenchmarkId::from_parameter(name), &q, |b, q| {
                b.iter(|| query::aggregate(node.store(), q, &key).expect("aggregate"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, aggregate);
criterion_main!(benches);
