//! Crash safety of the store under a real `kill -9`.
//!
//! The test re-executes its own binary as a child (selected by an environment variable) that applies
//! deterministic changes in a loop, printing each acknowledged version. The parent kills it at a
//! different point each round, reopens the store and checks that every acknowledged change is there,
//! that no partial or orphan segment remains, and that the live rows are exactly those of the last
//! catalogued version.

use chrono::{NaiveDate, NaiveDateTime};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use sus_node::ingest::encode::encode;
use sus_node::model::{
    Common, Dataset, Derived, DerivedRecord, Detail, OpItems, Protocol, Record, SubmissionMeta,
    UpdateType,
};
use sus_node::store::{ApplyOutcome, Change, DeleteKey, Store};

const CHILD_DIR: &str = "SUS_STORE_CRASH_CHILD_DIR";
const TEST_NAME: &str = "store_survives_kill_9";
/// Records inserted by each change, spread over 2 providers x 3 months = 6 partitions, in one
/// segment per provider.
const PER_CHANGE: u64 = 24;
const ROUNDS: u64 = 8;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

/// Applicable time of change `i`: each change is later than every earlier one.
fn at(i: u64) -> NaiveDateTime {
    date(2024, 6, 1).and_hms_opt(0, 0, 0).expect("valid time") + chrono::Duration::minutes(i as i64)
}

/// One step of the workload: upserts (id, provider, activity date, price) and deleted ids.
struct Step {
    upserts: Vec<(String, &'static str, NaiveDate, i64)>,
    deletes: Vec<String>,
}

/// Every fourth change is a Bulk Replacement of May 2024 (no deletions; its period deletes instead).
fn is_bulk(i: u64) -> bool {
    i.is_multiple_of(4)
}

/// Change `i` (1-based): inserts `r<i>-<j>`, re-prices `r<i-1>-0`, deletes `r<i-2>-1` (Net Change).
fn step(i: u64) -> Step {
    let mut upserts: Vec<_> = (0..PER_CHANGE)
        .map(|j| {
            let provider = if j % 2 == 0 { "RRV" } else { "RR8" };
            let day = date(2024, 4 + (j % 3) as u32, 1 + (j % 28) as u32);
            (format!("r{i}-{j}"), provider, day, (i * 1000 + j) as i64)
        })
        .collect();
    if i > 1 {
        upserts.push((
            format!("r{}-0", i - 1),
            "RRV",
            date(2024, 4, 1),
            -(i as i64),
        ));
    }
    let deletes = if i > 2 && !is_bulk(i) {
        vec![format!("r{}-1", i - 2)]
    } else {
        vec![]
    };
    Step { upserts, deletes }
}

fn change(i: u64) -> Change {
    let s = step(i);
    let records: Vec<DerivedRecord> = s
        .upserts
        .iter()
        .enumerate()
        .map(|(n, (id, provider, day, price))| DerivedRecord {
            record: Record {
                ordinal: n as u64 + 1,
                common: Common {
                    cds_unique_id: id.clone(),
                    cds_update_type: Some(UpdateType::Upsert),
                    cds_applicable_datetime: Some(at(i)),
                    provider_code: provider.to_string(),
                    ..Common::default()
                },
                detail: Detail::Op(OpItems {
                    appointment_date: Some(*day),
                    ..OpItems::default()
                }),
            },
            derived: Derived {
                price: *price,
                ..Derived::default()
            },
        })
        .collect();
    let deletes = s
        .deletes
        .iter()
        .enumerate()
        .map(|(n, id)| DeleteKey {
            cds_unique_id: id.clone(),
            applicable: at(i),
            ordinal: (records.len() + n + 1) as u64,
        })
        .collect();
    let meta = SubmissionMeta {
        submission_id: format!("C{i}"),
        sender: "RRV".into(),
        dataset: Dataset::Op,
        protocol: if is_bulk(i) {
            Protocol::BulkReplacement {
                bulk_group: "060".into(),
                period_start: date(2024, 5, 1),
                period_end: date(2024, 5, 31),
                extract_datetime: at(i),
                prime_recipient: "D4U1Y".into(),
            }
        } else {
            Protocol::NetChange
        },
    };
    Change {
        upserts: encode(Dataset::Op, &records).expect("records encode"),
        upsert_ordinals: records.iter().map(|r| r.record.ordinal).collect(),
        deletes,
        report: format!("report of C{i}").into_bytes(),
        meta,
        spell_keys: Vec::new(),
        rederived: Vec::new(),
        precondition: None,
    }
}

/// Live id -> price after changes `1..=version`.
fn model(version: u64) -> BTreeMap<String, i64> {
    let mut live: BTreeMap<String, (i64, NaiveDate)> = BTreeMap::new();
    let may = date(2024, 5, 1)..=date(2024, 5, 31);
    for i in 1..=version {
        let s = step(i);
        if is_bulk(i) {
            // Every record is sent by RRV, so the period empties of everything dated in May.
            live.retain(|_, (_, day)| !may.contains(day));
        }
        for (id, _, day, price) in s.upserts {
            live.insert(id, (price, day));
        }
        for id in s.deletes {
            live.remove(&id);
        }
    }
    live.into_iter()
        .map(|(id, (price, _))| (id, price))
        .collect()
}

fn live(store: &Store) -> BTreeMap<String, i64> {
    use arrow::array::{AsArray, Int64Array};
    let mut out = BTreeMap::new();
    for batch in store
        .scan_live(Dataset::Op)
        .expect("every segment reads fully")
    {
        let ids = batch.column_by_name("cds_unique_id").expect("id column");
        let prices: &Int64Array = batch.column_by_name("price").expect("price").as_primitive();
        for (id, price) in ids.as_string::<i32>().iter().zip(prices.iter()) {
            let id = id.expect("id").to_string();
            assert!(
                out.insert(id, price.expect("price")).is_none(),
                "id live twice"
            );
        }
    }
    out
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Child mode: apply changes until killed, acknowledging each durable version on stdout.
fn child(dir: &Path) {
    let store = Store::open(dir).expect("child opens the store");
    for i in 1..=10_000 {
        match store.apply(change(i)).expect("apply succeeds") {
            ApplyOutcome::Applied(c) => {
                assert_eq!(c.version, i, "one version per change");
                println!("ACK {}", c.version);
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
}

#[test]
fn store_survives_kill_9() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        child(Path::new(&dir));
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    for round in 0..ROUNDS {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("child starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let acked = |line: &str| line.strip_prefix("ACK ").map(|v| v.parse::<u64>());
        // Kill after a different number of acknowledgements, then a different extra delay, each
        // round; the delay only varies where in a change the kill lands.
        let wait_for = 1 + (round * 3) % 5;
        let extra = Duration::from_micros((round * 7_919) % 25_000);
        let mut last = 0;
        while last < wait_for {
            let line = lines
                .next()
                .expect("the child acknowledges before exiting")
                .expect("readable stdout");
            if let Some(v) = acked(&line) {
                last = v.expect("a version number");
            }
        }
        std::thread::sleep(extra);
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        // Acknowledgements already written before the kill count too.
        for line in lines {
            let line = line.expect("readable stdout");
            if let Some(v) = acked(&line) {
                last = last.max(v.expect("a version number"));
            }
        }

        let mut before = Vec::new();
        files_under(&tmp.path().join("segments"), &mut before);
        let store = Store::open(tmp.path()).expect("the store reopens after kill -9");
        let version = store.version().expect("version");
        // Every acknowledged change is durable; at most one more committed without its ack.
        assert!(
            version == last || version == last + 1,
            "round {round}: version {version} after {last} acknowledged"
        );
        for v in 1..=version {
            let s = store
                .submission("RRV", &format!("C{v}"))
                .expect("lookup")
                .expect("every committed change is recorded");
            assert_eq!(s.counts.map(|c| c.version), Some(v));
            assert_eq!(s.report, format!("report of C{v}").into_bytes());
        }
        assert_eq!(
            store
                .submission("RRV", &format!("C{}", version + 1))
                .expect("lookup"),
            None,
            "a change past the catalog's version is not recorded"
        );

        // No partial, temp or orphan segment survives open; every catalogued one is there.
        let catalogued: BTreeSet<PathBuf> = store
            .segment_files()
            .expect("segment list")
            .into_iter()
            .collect();
        let mut on_disk = Vec::new();
        files_under(&tmp.path().join("segments"), &mut on_disk);
        let on_disk: BTreeSet<PathBuf> = on_disk.into_iter().collect();
        assert_eq!(
            on_disk, catalogued,
            "round {round}: files on disk = catalog"
        );
        assert_eq!(
            catalogued.len() as u64,
            version * 2,
            "a segment per provider per change"
        );

        let want = model(version);
        assert_eq!(
            live(&store),
            want,
            "round {round}: live rows of version {version}"
        );
        let stats = store.stats(Dataset::Op).expect("stats");
        assert_eq!(stats.live_records, want.len() as u64);
        assert_eq!(stats.segments, version * 2);

        // Versions continue after the crash.
        match store
            .apply(change(version + 1))
            .expect("apply after recovery")
        {
            ApplyOutcome::Applied(c) => assert_eq!(c.version, version + 1),
            other => panic!("unexpected outcome {other:?}"),
        }
        assert_eq!(live(&store), model(version + 1));
        eprintln!(
            "round {round}: killed after {last} acks, recovered version {version}, \
             {} leftover files removed",
            before.len() - on_disk.len()
        );
    }
}
