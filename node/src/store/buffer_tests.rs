//! The write buffer ([`super::buffer`], [`super::flush`]): a buffered store reads exactly as a
//! store that writes every change at once, before and after checkpoints, at the latest version
//! and at freeze points; a crash rolls it back to its last checkpoint, from which the same
//! changes applied again give the same content; the node's budget holds applies until a
//! checkpoint frees it; dumps and compactions checkpoint first.

use super::tests::{applied, del, live, net, open, rec};
use super::*;
use crate::model::Dataset;
use crate::query::{View, scan};
use crate::refdata::testdata::{d, dt};
use arrow::array::{AsArray, Int64Array};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Settings under which only the test checkpoints.
pub(super) fn manual() -> BufferSettings {
    BufferSettings {
        store_bytes: u64::MAX,
        max_age: Duration::from_secs(3600),
    }
}

fn buffered(dir: &Path, settings: BufferSettings, budget: Arc<BufferBudget>) -> Arc<Store> {
    let store = Arc::new(open(dir));
    store.enable_buffer(settings, budget).expect("buffer");
    store
}

/// Changes of two providers over two months: inserts, replacements, deletions.
pub(super) fn changes(round: u32) -> Vec<Change> {
    let mut out = Vec::new();
    for i in 0..12u32 {
        let month = if i % 2 == 0 { 5 } else { 6 };
        let mut r = rec(
            1,
            &format!("A{i}"),
            dt(2024, 7, 1 + round, 9),
            d(2024, month, 10),
            i64::from(100 * round + i),
        );
        if i % 3 == 0 {
            r.record.common.provider_code = "RX1".into();
        }
        let mut upserts = vec![r];
        if i % 4 == 1 {
            upserts.push(rec(
                2,
                &format!("B{round}-{i}"),
                dt(2024, 7, 1 + round, 10),
                d(2024, 5, 11),
                7,
            ));
        }
        let deletes = if round > 0 && i % 5 == 0 {
            vec![del(
                3,
                &format!("B{}-1", round - 1),
                dt(2024, 7, 1 + round, 11),
            )]
        } else {
            Vec::new()
        };
        out.push(net(&format!("S{round}-{i}"), upserts, deletes));
    }
    out
}

/// Visible OP rows at `view` through the query path: id → price.
pub(super) fn visible(store: &Store, view: &View) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    scan(store, Dataset::Op, (&[], &[]), &[], view, &mut |batch| {
        let ids = batch.column_by_name("cds_unique_id").expect("ids");
        let prices: &Int64Array = batch.column_by_name("price").expect("price").as_primitive();
        for (id, p) in ids.as_string::<i32>().iter().zip(prices.iter()) {
            out.insert(id.expect("id").to_string(), p.expect("price"));
        }
        Ok(())
    })
    .expect("scan");
    out
}

fn history(store: &Store) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for (versions, batch) in store.scan_history(Dataset::Op).expect("history") {
        let ids = batch.column_by_name("cds_unique_id").expect("ids");
        for (v, id) in versions.iter().zip(ids.as_string::<i32>().iter()) {
            out.push((*v, id.expect("id").to_string()));
        }
    }
    out.sort();
    out
}

fn assert_same(store: &Store, model: &Store, freezes: &[&str]) {
    assert_eq!(live(store), live(model));
    assert_eq!(
        store.content_digest().expect("digest"),
        model.content_digest().expect("digest")
    );
    assert_eq!(history(store), history(model));
    let mut views = vec![View::Current];
    views.extend(freezes.iter().map(|f| View::Freeze(f.to_string())));
    for view in &views {
        assert_eq!(visible(store, view), visible(model, view), "at {view:?}");
    }
    assert_eq!(
        store.stats(Dataset::Op).expect("stats").live_records,
        model.stats(Dataset::Op).expect("stats").live_records
    );
}

#[test]
fn a_buffered_store_reads_as_one_that_writes_every_change() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let budget = BufferBudget::new(u64::MAX);
    let store = buffered(&tmp.path().join("buffered"), manual(), budget.clone());
    let model = open(&tmp.path().join("model"));
    for c in changes(0) {
        applied(&store, c.clone());
        applied(&model, c);
    }
    assert!(
        store.segment_files().expect("files").is_empty(),
        "nothing written yet"
    );
    assert!(budget.used() > 0);
    assert_eq!(
        store.freeze("f1").expect("freeze"),
        model.freeze("f1").expect("freeze")
    );
    for c in changes(1) {
        applied(&store, c.clone());
        applied(&model, c);
    }
    assert_same(&store, &model, &["f1"]);

    // Two providers: two segments, each holding the pieces of many changes.
    assert_eq!(store.checkpoint().expect("checkpoint"), 2);
    assert_eq!(store.buffered_bytes(), Some(0));
    assert_eq!(budget.used(), 0);
    assert_eq!(store.segment_files().expect("files").len(), 2);
    assert_same(&store, &model, &["f1"]);

    // Buffered and written segments together, then a reopen after a clean close.
    for c in changes(2) {
        applied(&store, c.clone());
        applied(&model, c);
    }
    assert_same(&store, &model, &["f1"]);
    drop(store);
    let reopened = open(&tmp.path().join("buffered"));
    assert_same(&reopened, &model, &["f1"]);
}

/// A copy of a store directory as a crash leaves it: every file as the page cache holds it.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_crash_rolls_back_to_the_last_checkpoint_and_the_log_applies_again() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = buffered(
        &tmp.path().join("live"),
        manual(),
        BufferBudget::new(u64::MAX),
    );
    let model = open(&tmp.path().join("model"));
    let (first, second) = (changes(0), changes(1));
    for c in &first {
        applied(&store, c.clone());
        applied(&model, c.clone());
    }
    store.checkpoint().expect("checkpoint");
    for c in &second {
        applied(&store, c.clone());
    }
    // The crash: the directory as it is now, the process gone without closing anything.
    copy_dir(&tmp.path().join("live"), &tmp.path().join("crashed"));
    let recovered = buffered(
        &tmp.path().join("crashed"),
        manual(),
        BufferBudget::new(u64::MAX),
    );
    assert_same(&recovered, &model, &[]);
    // What the Raft log still holds after the checkpoint, applied again.
    for c in &second {
        applied(&recovered, c.clone());
        applied(&model, c.clone());
    }
    assert_same(&recovered, &model, &[]);
    assert_eq!(
        recovered.content_digest().expect("digest"),
        store.content_digest().expect("digest")
    );
}

#[test]
fn applies_wait_for_the_budget_and_checkpoints_free_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // Any buffered row puts the node over: every apply after the first waits for a checkpoint.
    let budget = BufferBudget::new(1);
    let store = buffered(&tmp.path().join("buffered"), manual(), budget.clone());
    let model = open(&tmp.path().join("model"));
    for c in changes(0).into_iter().chain(changes(1)) {
        applied(&store, c.clone());
        applied(&model, c);
    }
    assert_same(&store, &model, &[]);
    assert!(
        store.segment_files().expect("files").len() > 2,
        "the budget made the flusher write more than once"
    );
}

#[test]
fn a_dump_and_a_compaction_checkpoint_first() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = buffered(
        &tmp.path().join("buffered"),
        manual(),
        BufferBudget::new(u64::MAX),
    );
    let model = open(&tmp.path().join("model"));
    for c in changes(0) {
        applied(&store, c.clone());
        applied(&model, c);
    }
    let mut segments = 0;
    store
        .dump(&mut |item| {
            if let DumpItem::Segment(_, path) = item {
                assert!(path.is_file(), "a dumped segment is a file");
                segments += 1;
            }
            Ok(())
        })
        .expect("dump");
    assert_eq!(segments, 2);
    assert_eq!(store.buffered_bytes(), Some(0));

    for c in changes(1) {
        applied(&store, c.clone());
        applied(&model, c);
    }
    store.freeze("f1").expect("freeze");
    model.freeze("f1").expect("freeze");
    for c in changes(2) {
        applied(&store, c.clone());
        applied(&model, c);
    }
    // Buffered segments are written first, then each provider's segments merge into one.
    let stats = store.compact(1000).expect("compaction");
    assert_eq!((stats.segments_before, stats.segments_after), (4, 2));
    assert_eq!(store.buffered_bytes(), Some(0));
    // Compaction drops rows no retained view sees: the model drops the same ones.
    model.compact(1000).expect("compaction");
    assert_same(&store, &model, &["f1"]);
}
