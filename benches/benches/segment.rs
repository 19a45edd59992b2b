//! Segment encode and decode: a batch of derived outpatient rows to Parquet (zstd, a row group
//! per month run) and back, all columns and the one column a priced total reads.

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::collections::BTreeMap;
use sus_client::generator::Dataset;
use sus_node::ingest::files::read_submission;
use sus_node::ingest::local::{LocalConfig, LocalStore};
use sus_node::ingest::{Command, Prepared};
use sus_node::schema::stored_schema;
use sus_node::store::{decode_segment, encode_segment};

fn segment(c: &mut Criterion) {
    let rows = if common::test_mode() { 500 } else { 60_000 };
    let tmp = tempfile::tempdir().expect("temp dir");
    let files = common::submissions(&tmp.path().join("gen"), Some(Dataset::Op), rows, rows);
    let node = LocalStore::open(&LocalConfig {
        data_dir: tmp.path().join("node"),
        refdata_dir: common::refdata(),
        grouper_output: None,
    })
    .expect("node");
    let (meta, bytes) = read_submission(&files[0]).expect("read");
    let Prepared::Commit(command) = sus_node::ingest::prepare(
        node.refdata(),
        node.store(),
        &meta,
        "f.csv",
        &bytes,
        &Default::default(),
    )
    .expect("prepare") else {
        panic!("not a new submission")
    };
    let Command::Apply { change, .. } = *command else {
        panic!("rejected")
    };
    // Rows by month, as a segment holds them.
    let batch = change.upserts;
    let dates = batch
        .column_by_name("activity_date")
        .expect("dates")
        .as_any()
        .downcast_ref::<arrow::array::Date32Array>()
        .expect("date32")
        .clone();
    let mut by_month: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for (i, d) in dates.values().iter().enumerate() {
        by_month.entry(d / 30).or_default().push(i as u32);
    }
    let order: Vec<u32> = by_month.values().flatten().copied().collect();
    let months: Vec<(String, u32)> = by_month
        .iter()
        .map(|(m, r)| (m.to_string(), r.len() as u32))
        .collect();
    let sorted = arrow::compute::take_record_batch(&batch, &arrow::array::UInt32Array::from(order))
        .expect("take");
    let n = sorted.num_rows() as u64;
    let encoded = bytes::Bytes::from(encode_segment(Vec::new(), &sorted, &months).expect("encode"));
    let price = stored_schema(sus_node::model::Dataset::Op)
        .index_of("price")
        .expect("price");

    let mut group = c.benchmark_group("segment");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n));
    group.bench_function("encode op", |b| {
        b.iter(|| {
            encode_segment(Vec::with_capacity(encoded.len()), &sorted, &months).expect("encode")
        })
    });
    group.bench_function("decode op, all columns", |b| {
        b.iter(|| {
            decode_segment(encoded.clone(), sus_node::model::Dataset::Op, &[]).expect("decode")
        })
    });
    group.bench_function("decode op, price", |b| {
        b.iter(|| {
            decode_segment(encoded.clone(), sus_node::model::Dataset::Op, &[price]).expect("decode")
        })
    });
    group.finish();
}

criterion_group!(benches, segment);
criterion_main!(benches);
