//! Compaction beside applies and reads ([`super::compact`], [`super::retire`]): applies and reads
//! complete while a merge waits to install, and the install keeps the content of every retained
//! view, against a model store fed the same changes and never compacted.

use super::tests::{applied, del, live, net, open, rec};
use super::*;
use crate::model::Dataset;
use crate::refdata::testdata::{d, dt};
use std::sync::{Arc, mpsc};

/// 30 one-record submissions: 30 small segments of one provider, over two months.
fn before() -> Vec<Change> {
    (0..30)
        .map(|i| {
            let month = if i % 2 == 0 { 5 } else { 6 };
            let r = rec(
                1,
                &format!("A{i}"),
                dt(2024, 7, 1, 9),
                d(2024, month, 10),
                100 + i,
            );
            net(&format!("S{i}"), vec![r], vec![])
        })
        .collect()
}

/// While the merge waits: replacements and deletions of merged rows, and new records.
fn during() -> Vec<Change> {
    let mut out = Vec::new();
    for i in 0..10 {
        let r = rec(
            1,
            &format!("A{i}"),
            dt(2024, 7, 2, 9),
            d(2024, 5, 10),
            1000 + i,
        );
        out.push(net(&format!("R{i}"), vec![r], vec![]));
    }
    for i in 10..15 {
        let gone = del(1, &format!("A{i}"), dt(2024, 7, 2, 9));
        out.push(net(&format!("D{i}"), vec![], vec![gone]));
    }
    for i in 0..5 {
        let r = rec(1, &format!("B{i}"), dt(2024, 7, 2, 9), d(2024, 6, 10), 7);
        out.push(net(&format!("N{i}"), vec![r], vec![]));
    }
    out
}

#[test]
fn applies_and_reads_go_on_while_a_compaction_merges() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(open(&tmp.path().join("compacted")));
    let model = open(&tmp.path().join("model"));
    for c in before() {
        applied(&store, c.clone());
        applied(&model, c);
    }
    let frozen = store.freeze("f1").expect("freeze");
    assert_eq!(model.freeze("f1").expect("freeze"), frozen);
    // Replaced after the freeze point: its first version stays readable there, so it is kept.
    let r = rec(1, "A29", dt(2024, 7, 1, 10), d(2024, 6, 10), 5);
    applied(&store, net("early", vec![r.clone()], vec![]));
    applied(&model, net("early", vec![r], vec![]));

    let (merged_tx, merged_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    *store.before_install.lock().expect("hook") = Some(Box::new(move || {
        let _ = merged_tx.send(());
        let _ = go_rx.recv();
    }));
    // A read that lists the segments before the install and reads them after it.
    let held = store.listing(Dataset::Op, None).expect("listing");
    let compacting = {
        let store = store.clone();
        std::thread::spawn(move || store.compact(1000))
    };
    merged_rx
        .recv()
        .expect("the merge is written and waits to install");

    // Every apply completes while the merge waits: compaction holds no lock until it installs.
    for c in during() {
        applied(&store, c.clone());
        applied(&model, c);
    }
    assert_eq!(live(&store), live(&model), "reads go on during the merge");
    go_tx.send(()).expect("release the install");
    let stats = compacting.join().expect("no panic").expect("compaction");
    assert_eq!(stats.segments_before, 31);
    assert_eq!(stats.segments_after, 1);
    assert_eq!(stats.rows_dropped, 0, "the replaced A29 is visible at f1");

    // Same content at the latest version and at the freeze point.
    assert_eq!(live(&store), live(&model));
    assert_eq!(
        store.content_digest().expect("digest"),
        model.content_digest().expect("digest")
    );
    for at in [None, Some(frozen)] {
        let got = store.listing(Dataset::Op, at).expect("listing");
        let want = model.listing(Dataset::Op, at).expect("listing");
        assert_eq!(got.visible_rows(), want.visible_rows(), "rows at {at:?}");
    }
    assert_eq!(
        store
            .listing(Dataset::Op, None)
            .expect("listing")
            .segments
            .len(),
        16,
        "the merged segment and the 15 written during the merge"
    );

    // The replaced files stay while the earlier read holds them, and go once it ends.
    assert_eq!(store.retired_files(), 31);
    assert!(held.segments.iter().all(|s| s.path.exists()));
    let paths: Vec<_> = held.segments.iter().map(|s| s.path.clone()).collect();
    drop(held);
    drop(store.pin());
    assert_eq!(store.retired_files(), 0);
    assert!(paths.iter().all(|p| !p.exists()));

    // And the compacted store reopens to the same content.
    drop(store);
    let reopened = open(&tmp.path().join("compacted"));
    assert_eq!(live(&reopened), live(&model));
    assert_eq!(
        reopened.content_digest().expect("digest"),
        model.content_digest().expect("digest")
    );
}
