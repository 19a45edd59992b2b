//! Validation, derivation and pricing: records/s of `ingest::prepare` (parse CSV, validate,
//! group, price, encode Arrow) per dataset, and of the whole single-node submit (plus segments
//! and the catalog commit, fsynced).

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sus_client::generator::Dataset;
use sus_node::ingest::files::read_submission;
use sus_node::ingest::local::{LocalConfig, LocalStore};

fn prepare(c: &mut Criterion) {
    let rows = if common::test_mode() { 500 } else { 20_000 };
    let tmp = tempfile::tempdir().expect("temp dir");
    let node = LocalStore::open(&LocalConfig {
        data_dir: tmp.path().join("node"),
        refdata_dir: common::refdata(),
        grouper_output: None,
    })
    .expect("node");
    let mut group = c.benchmark_group("prepare");
    group.sample_size(10);
    for dataset in [Dataset::Apc, Dataset::Op, Dataset::Ec] {
        let dir = tmp.path().join(dataset.name());
        // One file of the first (largest) submission.
        let files = common::submissions(&dir, Some(dataset), rows, rows);
        let (meta, bytes) = read_submission(&files[0]).expect("read");
        let records = bytes.iter().filter(|b| **b == b'\n').count() as u64 - 1;
        group.throughput(Throughput::Elements(records));
        group.bench_with_input(
            BenchmarkId::from_parameter(dataset.name()),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    sus_node::ingest::prepare(
                        node.refdata(),
                        node.store(),
                        &meta,
                        "bench.csv",
                        bytes,
                        &Default::default(),
                    )
                    .expect("prepare")
                })
            },
        );
    }
    group.finish();
}

fn submit(c: &mut Criterion) {
    let rows = if common::test_mode() { 500 } else { 20_000 };
    let tmp = tempfile::tempdir().expect("temp dir");
    let files = common::submissions(&tmp.path().join("gen"), Some(Dataset::Op), rows, rows);
    let (meta, bytes) = read_submission(&files[0]).expect("read");
    let records = bytes.iter().filter(|b| **b == b'\n').count() as u64 - 1;
    let mut group = c.benchmark_group("submit");
    group.sample_size(10);
    group.throughput(Throughput::Elements(records));
    let mut n = 0;
    group.bench_function("op, new store each time", |b| {
        b.iter_batched(
            || {
                n += 1;
                LocalStore::open(&LocalConfig {
                    data_dir: tmp.path().join(format!("node{n}")),
                    refdata_dir: common::refdata(),
                    grouper_output: None,
                })
                .expect("node")
            },
            |node| node.submit(&meta, "bench.csv", &bytes).expect("submit"),
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, prepare, submit);
criterion_main!(benches);
