//! Apply semantics (docs/rules.md section 6), idempotency, reopen and recovery of the store.
//! The kill -9 test is `node/tests/store_crash.rs`.

use super::*;
use crate::Error;
use crate::ingest::encode::encode;
use crate::model::{Dataset, Rule, SubmissionMeta};
use crate::model::{Derived, DerivedRecord, Protocol};
use crate::refdata::testdata::{d, dt, op, op_mut};
use crate::schema::stored_schema;
use arrow::array::{AsArray, Int64Array};
use chrono::NaiveDate;
use chrono::NaiveDateTime;
use engine::FORMAT_FILE;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use write::fmt_datetime;

/// An OP upsert: `id` of `provider`, appointment on `date`, applicable at `at`, priced `price`.
pub(super) fn rec(
    ordinal: u64,
    id: &str,
    at: NaiveDateTime,
    date: NaiveDate,
    price: i64,
) -> DerivedRecord {
    let mut r = op(id);
    r.ordinal = ordinal;
    r.common.cds_applicable_datetime = Some(at);
    op_mut(&mut r).appointment_date = Some(date);
    DerivedRecord {
        record: r,
        derived: Derived {
            price,
            ..Derived::default()
        },
    }
}

fn with_provider(mut r: DerivedRecord, provider: &str) -> DerivedRecord {
    r.record.common.provider_code = provider.into();
    r
}

pub(super) fn del(ordinal: u64, id: &str, at: NaiveDateTime) -> DeleteKey {
    DeleteKey {
        cds_unique_id: id.into(),
        applicable: at,
        ordinal,
    }
}

fn meta(sender: &str, id: &str, protocol: Protocol) -> SubmissionMeta {
    SubmissionMeta {
        submission_id: id.into(),
        sender: sender.into(),
        dataset: Dataset::Op,
        protocol,
    }
}

fn change(meta: SubmissionMeta, upserts: Vec<DerivedRecord>, deletes: Vec<DeleteKey>) -> Change {
    let spell_keys = if meta.dataset == Dataset::Apc {
        vec![None; upserts.len()]
    } else {
        Vec::new()
    };
    Change {
        spell_keys,
        rederived: Vec::new(),
        precondition: None,
        upsert_ordinals: upserts.iter().map(|r| r.record.ordinal).collect(),
        upserts: encode(meta.dataset, &upserts).expect("test records encode"),
        deletes,
        report: format!("{{\"submission\":\"{}\"}}", meta.submission_id).into_bytes(),
        meta,
    }
}

pub(super) fn net(id: &str, upserts: Vec<DerivedRecord>, deletes: Vec<DeleteKey>) -> Change {
    change(meta("RRV", id, Protocol::NetChange), upserts, deletes)
}

/// A May 2024 Bulk Replacement of `sender` extracted at `extract`.
fn bulk(sender: &str, id: &str, extract: NaiveDateTime, upserts: Vec<DerivedRecord>) -> Change {
    let protocol = Protocol::BulkReplacement {
        bulk_group: "060".into(),
        period_start: d(2024, 5, 1),
        period_end: d(2024, 5, 31),
        extract_datetime: extract,
        prime_recipient: "D4U1Y".into(),
    };
    change(meta(sender, id, protocol), upserts, vec![])
}

pub(super) fn applied(store: &Store, change: Change) -> ApplyCounts {
    match store.apply(change).expect("apply succeeds") {
        ApplyOutcome::Applied(counts) => counts,
        other => panic!("expected Applied, got {other:?}"),
    }
}

fn counts(version: u64, ins: u64, rep: u64, del: u64, bulk: u64, stale: u64) -> ApplyCounts {
    ApplyCounts {
        version,
        inserted: ins,
        replaced: rep,
        deleted: del,
        bulk_deleted: bulk,
        stale,
        rederived: 0,
    }
}

/// Live OP records as id -> price.
pub(super) fn live(store: &Store) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for batch in store.scan_live(Dataset::Op).expect("scan succeeds") {
        assert_eq!(batch.schema(), stored_schema(Dataset::Op));
        let ids = batch.column_by_name("cds_unique_id").expect("id column");
        let prices = batch.column_by_name("price").expect("price column");
        let prices: &Int64Array = prices.as_primitive();
        for (id, price) in ids.as_string::<i32>().iter().zip(prices.iter()) {
            let id = id.expect("ids are not null").to_string();
            let price = price.expect("prices are not null");
            assert!(out.insert(id, price).is_none(), "an id is live twice");
        }
    }
    out
}

fn expect_live(store: &Store, want: &[(&str, i64)]) {
    let want: BTreeMap<String, i64> = want.iter().map(|(i, p)| (i.to_string(), *p)).collect();
    assert_eq!(live(store), want);
    let stats = store.stats(Dataset::Op).expect("stats");
    assert_eq!(stats.live_records, want.len() as u64);
}

pub(super) fn open(dir: &Path) -> Store {
    Store::open(dir).expect("store opens")
}

// Insert, replace with a later applicable time, replay under a new id, and an older update.
#[test]
fn net_change_insert_replace_and_stale() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = open(tmp.path());
    assert_eq!(store.version().expect("version"), 0);
    let first = vec![
        rec(1, "A", dt(2024, 6, 1, 9), d(2024, 5, 10), 100),
        rec(2, "B", dt(2024, 6, 1, 9), d(2024, 5, 11), 200),
        with_provider(rec(3, "C", dt(2024, 6, 1, 9), d(2024, 6, 2), 300), "RR8"),
    ];
    assert_eq!(
        applied(&store, net("S1", first, vec![])),
        counts(1, 3, 0, 0, 0, 0)
    );
    expect_live(&store, &[("A", 100), ("B", 200), ("C", 300)]);
    // Two partitions: (RRV, 2024-05) and (RR8, 2024-06).
    assert_eq!(store.stats(Dataset::Op).expect("stats").segments, 2);

    let update = || vec![rec(1, "A", dt(2024, 6, 1, 10), d(2024, 5, 10), 150)];
    assert_eq!(
        applied(&store, net("S2", update(), vec![])),
        counts(2, 0, 1, 0, 0, 0)
    );
    expect_live(&store, &[("A", 150), ("B", 200), ("C", 300)]);

    // The same content again, under a new id: every record is stale, nothing is written.
    assert_eq!(
        applied(&store, net("S3", update(), vec![])),
        counts(3, 0, 0, 0, 0, 1)
    );
    let older = vec![rec(1, "B", dt(2024, 6, 1, 8), d(2024, 5, 11), 999)];
    assert_eq!(
        applied(&store, net("S4", older, vec![])),
        counts(4, 0, 0, 0, 0, 1)
    );
    expect_live(&store, &[("A", 150), ("B", 200), ("C", 300)]);
    let stats = store.stats(Dataset::Op).expect("stats");
    assert_eq!(stats.segments, 3);
    assert!(stats.segment_bytes > 0);
    assert_eq!(store.version().expect("version"), 4);
    assert_eq!(
        store.stats(Dataset::Apc).expect("stats"),
        DatasetStats::default()
    );
}

// A deletion wins over an older upsert arriving later; deleting an unknown id is recorded as stale.
#[test]
fn deletions_and_tombstones() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = open(tmp.path());
    let a = |at, price| vec![rec(1, "A", at, d(2024, 5, 10), price)];
    applied(&store, net("S1", a(dt(2024, 6, 1, 9), 100), vec![]));
    assert_eq!(
        applied(
            &store,
            net("S2", vec![], vec![del(1, "A", dt(2024, 6, 1, 11))])
        ),
        counts(2, 0, 0, 1, 0, 0)
    );
    expect_live(&store, &[]);
    assert_eq!(
        applied(&store, net("S3", a(dt(2024, 6, 1, 10), 200), vec![])),
        counts(3, 0, 0, 0, 0, 1)
    );
    expect_live(&store, &[]);
    // Replaying the deletion is stale too.
    assert_eq!(
        applied(
            &store,
            net("S4", vec![], vec![del(1, "A", dt(2024, 6, 1, 11))])
        ),
        counts(4, 0, 0, 0, 0, 1)
    );
    assert_eq!(
        applied(&store, net("S5", a(dt(2024, 6, 1, 12), 300), vec![])),
        counts(5, 1, 0, 0, 0, 0)
    );
    expect_live(&store, &[("A", 300)]);

    assert_eq!(
        applied(
            &store,
            net("S6", vec![], vec![del(1, "Z", dt(2024, 6, 1, 9))])
        ),
        counts(6, 0, 0, 0, 0, 1)
    );
    let z = vec![rec(1, "Z", dt(2024, 6, 1, 8), d(2024, 5, 10), 1)];
    assert_eq!(
        applied(&store, net("S7", z, vec![])),
        counts(7, 0, 0, 0, 0, 1)
    );
    expect_live(&store, &[("A", 300)]);
}

// Within one submission records apply in (applicable, ordinal) order; the later one wins.
#[test]
fn same_id_several_times_in_one_submission() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = open(tmp.path());
    let upserts = vec![
        rec(1, "A", dt(2024, 6, 1, 10), d(2024, 5, 10), 1),
        rec(2, "A", dt(2024, 6, 1, 9), d(2024, 5, 10), 2),
        rec(3, "A", dt(2024, 6, 1, 10), d(2024, 5, 10), 3),
        rec(4, "B", dt(2024, 6, 1, 9), d(2024, 5, 10), 4),
    ];
    let deletes = vec![del(5, "B", dt(2024, 6, 1, 10))];
    // A: (9h, #2) inserts, (10h, #1) replaces, (10h, #3) is not later: stale. B: inserted, deleted.
    assert_eq!(
        applied(&store, net("S1", upserts, deletes)),
        counts(1, 2, 1, 1, 0, 1)
    );
    expect_live(&store, &[("A", 1)]);
    // Only the surviving row is written.
    let stats = store.stats(Dataset::Op).expect("stats");
    assert_eq!((stats.segments, stats.live_records), (1, 1));
}

// Bulk Replacement of May: in-period records of the sender go, others stay; R07 on a duplicate or
// older extract changes nothing; a newer extract applies.
#[test]
fn bulk_replacement_of_a_period() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = open(tmp.path());
    let t = dt(2024, 6, 1, 9);
    applied(
        &store,
        net(
            "S1",
            vec![
                rec(1, "M1", t, d(2024, 5, 1), 11),
                rec(2, "M2", t, d(2024, 5, 31), 12),
                rec(3, "APR", t, d(2024, 4, 30), 13),
                rec(4, "JUN", t, d(2024, 6, 1), 14),
            ],
            vec![],
        ),
    );
    let other = vec![rec(1, "OTHER", t, d(2024, 5, 15), 15)];
    applied(
        &store,
        change(meta("RCB", "S1", Protocol::NetChange), other, vec![]),
    );

    let extract = dt(2024, 6, 3, 10);
    let first = vec![
        rec(1, "M1", dt(2024, 5, 1, 0), d(2024, 5, 2), 21),
        rec(2, "M3", t, d(2024, 5, 15), 23),
        // Already live under April: replaced, whatever its date.
        rec(3, "APR", t, d(2024, 5, 7), 24),
    ];
    assert_eq!(
        applied(&store, bulk("RRV", "B1", extract, first)),
        counts(3, 2, 1, 0, 2, 0)
    );
    let after_first = [
        ("APR", 24),
        ("JUN", 14),
        ("M1", 21),
        ("M3", 23),
        ("OTHER", 15),
    ];
    expect_live(&store, &after_first);

    for (id, at) in [("B2", extract), ("B3", dt(2024, 6, 2, 10))] {
        let again = vec![rec(1, "M9", t, d(2024, 5, 9), 99)];
        match store
            .apply(bulk("RRV", id, at, again))
            .expect("apply succeeds")
        {
            ApplyOutcome::Rejected(issue) => {
                assert_eq!(issue.rule, Rule::BulkExtractNotNewer);
                assert!(issue.message.contains(&fmt_datetime(&at)), "{issue}");
                assert!(issue.message.contains("2024-06-03T10:00:00"), "{issue}");
                assert!(issue.message.contains("B1"), "{issue}");
            }
            other => panic!("expected R07, got {other:?}"),
        }
    }
    assert_eq!(store.version().expect("version"), 3);
    expect_live(&store, &after_first);

    let newer = vec![rec(1, "M3", t, d(2024, 5, 16), 33)];
    assert_eq!(
        applied(&store, bulk("RRV", "B4", dt(2024, 6, 4, 10), newer)),
        counts(4, 1, 0, 0, 3, 0)
    );
    expect_live(&store, &[("JUN", 14), ("M3", 33), ("OTHER", 15)]);

    // A bulk-deleted record's tombstone keeps its time: replaying S1 content brings nothing back.
    let replay = vec![rec(1, "M2", t, d(2024, 5, 31), 12)];
    assert_eq!(
        applied(&store, net("S2", replay, vec![])),
        counts(5, 0, 0, 0, 0, 1)
    );
}

// A resend gets the original report; a rejected id stays rejected.
#[test]
fn idempotent_resend() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = open(tmp.path());
    let first = net(
        "S1",
        vec![rec(1, "A", dt(2024, 6, 1, 9), d(2024, 5, 10), 1)],
        vec![],
    );
    let report = first.report.clone();
    applied(&store, first);
    let mut resend = net(
        "S1",
        vec![rec(1, "B", dt(2024, 6, 1, 9), d(2024, 5, 10), 2)],
        vec![],
    );
    resend.report = b"different".to_vec();
    match store.apply(resend).expect("apply succeeds") {
        ApplyOutcome::AlreadyApplied(s) => {
            assert_eq!(
                s,
                StoredSubmission {
                    report: report.clone(),
                    counts: Some(counts(1, 1, 0, 0, 0, 0))
                }
            );
        }
        other => panic!("expected AlreadyApplied, got {other:?}"),
    }
    assert_eq!(store.version().expect("version"), 1);
    expect_live(&store, &[("A", 1)]);
    // The same id from another sender is another submission.
    let mut other = change(meta("RCB", "S1", Protocol::NetChange), vec![], vec![]);
    other.report = b"other".to_vec();
    assert_eq!(applied(&store, other), counts(2, 0, 0, 0, 0, 0));

    let rejected = meta("RRV", "S9", Protocol::NetChange);
    store
        .record_rejected(&rejected, b"rejected".to_vec())
        .expect("recorded");
    let stored = StoredSubmission {
        report: b"rejected".to_vec(),
        counts: None,
    };
    assert_eq!(
        store.submission("RRV", "S9").expect("lookup"),
        Some(stored.clone())
    );
    let retry = net(
        "S9",
        vec![rec(1, "C", dt(2024, 6, 1, 9), d(2024, 5, 10), 3)],
        vec![],
    );
    match store.apply(retry).expect("apply succeeds") {
        ApplyOutcome::AlreadyApplied(s) => assert_eq!(s, stored),
        other => panic!("expected AlreadyApplied, got {other:?}"),
    }
    // Recording a rejection never overwrites an applied submission's report.
    store
        .record_rejected(&meta("RRV", "S1", Protocol::NetChange), b"late".to_vec())
        .expect("ignored");
    assert_eq!(
        store.submission("RRV", "S1").expect("lookup"),
        Some(StoredSubmission {
            report,
            counts: Some(counts(1, 1, 0, 0, 0, 0))
        })
    );
    assert_eq!(store.version().expect("version"), 2);
}

// Closing and reopening keeps live rows and continues versions; leftovers of a crash are removed.
#[test]
fn reopen_keeps_state_and_removes_leftovers() {
    let tmp = tempfile::tempdir().expect("temp dir");
    {
        let store = open(tmp.path());
        let t = dt(2024, 6, 1, 9);
        applied(
            &store,
            net(
                "S1",
                vec![
                    rec(1, "A", t, d(2024, 5, 10), 1),
                    rec(2, "B", t, d(2024, 4, 10), 2),
                ],
                vec![],
            ),
        );
        applied(
            &store,
            net("S2", vec![], vec![del(1, "B", dt(2024, 6, 1, 10))]),
        );
    }
    let orphan = tmp
        .path()
        .join("segments/op/RRV/00000000000000000099.parquet");
    let temp = tmp
        .path()
        .join("segments/op/RRV/00000000000000000100.parquet.tmp");
    for f in [&orphan, &temp] {
        fs::create_dir_all(f.parent().expect("has a parent")).expect("mkdir");
        fs::write(f, b"partial").expect("write");
    }
    let store = open(tmp.path());
    assert!(!orphan.exists() && !temp.exists());
    assert_eq!(store.version().expect("version"), 2);
    expect_live(&store, &[("A", 1)]);
    // One segment (both months of RRV) is all S1 and S2 wrote: a deletion writes no segment.
    let files = store.segment_files().expect("files");
    assert_eq!(files.len(), 1);
    assert!(files.iter().all(|f| f.exists()));
    assert_eq!(
        applied(
            &store,
            net(
                "S3",
                vec![rec(1, "B", dt(2024, 6, 1, 11), d(2024, 4, 10), 3)],
                vec![]
            )
        ),
        counts(3, 1, 0, 0, 0, 0)
    );
    expect_live(&store, &[("A", 1), ("B", 3)]);
}

// A store of another format is refused with a message naming both formats.
#[test]
fn incompatible_format_is_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    drop(open(tmp.path()));
    fs::write(
        tmp.path().join(FORMAT_FILE),
        "sus-store-format 99\nschema-version 1\n",
    )
    .expect("write");
    let err = Store::open(tmp.path())
        .err()
        .expect("an incompatible store is refused")
        .to_string();
    assert!(
        err.contains("sus-store-format 99") && err.contains("refusing"),
        "{err}"
    );
    fs::remove_file(tmp.path().join(FORMAT_FILE)).expect("remove");
    assert!(Store::open(tmp.path()).is_err(), "a catalog without FORMAT");
}

// Upserts that are not in the stored schema are refused before anything is written.
#[test]
fn wrong_schema_is_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = open(tmp.path());
    let mut c = net(
        "S1",
        vec![rec(1, "A", dt(2024, 6, 1, 9), d(2024, 5, 10), 1)],
        vec![],
    );
    c.meta.dataset = Dataset::Apc;
    assert!(matches!(store.apply(c), Err(Error::Internal(_))));
    let mut c = net(
        "S2",
        vec![rec(1, "A", dt(2024, 6, 1, 9), d(2024, 5, 10), 1)],
        vec![],
    );
    c.upsert_ordinals.clear();
    assert!(matches!(store.apply(c), Err(Error::Internal(_))));
    assert_eq!(store.version().expect("version"), 0);
    assert_eq!(store.submission("RRV", "S1").expect("lookup"), None);
}

// The store is shared across server threads.
#[test]
fn store_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Store>();
}

// Every column, including dictionaries, timestamps, lists, decimals and field metadata, reads back
// exactly as written (segments do not embed the Arrow schema; the reader supplies it).
#[test]
fn segments_round_trip_every_column() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = open(tmp.path());
    let upserts = vec![
        rec(1, "B", dt(2024, 6, 1, 9), d(2024, 5, 10), 1234),
        rec(2, "A", dt(2024, 6, 1, 9), d(2024, 5, 11), 5678),
    ];
    let expected = encode(Dataset::Op, &upserts).expect("encode");
    applied(&store, net("S1", upserts, vec![]));
    let got = store.scan_live(Dataset::Op).expect("scan");
    assert_eq!(got.len(), 1, "one partition, one batch");
    // Rows are stored sorted by id: A (written second) comes first.
    let reordered =
        arrow::compute::take_record_batch(&expected, &arrow::array::UInt32Array::from(vec![1, 0]))
            .expect("take");
    assert_eq!(got[0], reordered);
    assert_eq!(got[0].schema(), stored_schema(Dataset::Op));
}
