//! Properties of applying submissions (docs/rules.md §6) with a real `Store` in a temporary
//! directory:
//! - replay idempotence: a Net Change submission applied again under a NEW submission id leaves
//!   the live state identical (every record is stale); the SAME submission id resent returns the
//!   original report and changes nothing, the store version included;
//! - order independence: shuffling the file order of records whose `cds_applicable_datetime`s are
//!   distinct, and so the order of a spell's episodes, gives the same live state and prices.
//!
//! The live state compared is every column of every live row of every dataset (items and derived
//! fields), rendered as text and sorted.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use arrow::util::display::array_value_to_string;
use chrono::{Duration, NaiveDate, NaiveDateTime};
use proptest::prelude::*;
use std::collections::HashMap;
use sus_node::model::{Dataset, Protocol, SubmissionMeta};
use sus_node::refdata::RefData;
use sus_node::report::{Outcome, SubmissionReport};
use sus_node::store::Store;

fn refdata() -> &'static RefData {
    static RD: std::sync::OnceLock<RefData> = std::sync::OnceLock::new();
    RD.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata");
        RefData::load(&dir).expect("refdata")
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One record of a generated file: its items by column name (the rest are defaults).
#[derive(Debug, Clone)]
struct Rec {
    items: Vec<(&'static str, String)>,
}

fn default_value(dataset: Dataset, column: &str) -> &'static str {
    match column {
        "cds_update_type" => "9",
        "provider_code" => "RR9",
        "site_code" => "RR901",
        "commissioner_code" => "02T00",
        "gp_practice_code" => "A96507",
        "nhs_number" => "9434765919",
        "nhs_number_status" => "01",
        "local_patient_id" => "LP0001",
        "date_of_birth" => "1980-06-15",
        "sex" => "1",
        "ethnic_category" => "A",
        "postcode" => "LS1 4AP",
        _ => match (dataset, column) {
            (Dataset::Apc, "last_episode_in_spell") => "N",
            (Dataset::Apc, "admission_source" | "discharge_destination") => "19",
            (Dataset::Apc, "patient_classification" | "discharge_method") => "1",
            (Dataset::Apc, "admission_date") => "2024-05-01",
            (Dataset::Apc, "main_specialty" | "treatment_function_code") => "300",
            (Dataset::Op, "consultation_mechanism" | "outcome_of_attendance") => "01",
            _ => "",
        },
    }
}

fn csv(dataset: Dataset, recs: &[Rec]) -> Vec<u8> {
    let columns: Vec<&str> = sus_node::schema::items(dataset)
        .iter()
        .map(|i| i.name)
        .collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&columns).expect("header");
    for r in recs {
        let given: HashMap<&str, &str> = r.items.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let delete = given.get("cds_update_type") == Some(&"1");
        let row: Vec<&str> = columns
            .iter()
            .map(|c| match given.get(c) {
                Some(v) => v,
                None if delete && *c != "provider_code" => "",
                None => default_value(dataset, c),
            })
            .collect();
        w.write_record(&row).expect("row");
    }
    w.into_inner().expect("flush")
}

fn base_time() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 6, 1)
        .and_then(|d| d.and_hms_opt(8, 0, 0))
        .expect("date")
}

fn stamp(minutes: i64) -> String {
    (base_time() + Duration::minutes(minutes))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

fn day(d: u32) -> String {
    format!("2024-05-{d:02}")
}

/// OP records over a few ids (so several versions and deletions of one id), each with its own
/// applicable date-time (its index in minutes): (delete?, first attendance, attended, TFC,
/// procedure, day).
fn op_records() -> impl Strategy<Value = Vec<Rec>> {
    proptest::collection::vec(
        (
            0u8..4,
            prop::bool::weighted(0.2),
            prop::sample::select(vec!["1", "2", "3", "4", "5"]),
            prop::sample::select(vec!["5", "6", "2"]),
            prop::sample::select(vec!["100", "110", "560"]),
            prop::sample::select(vec!["", "A602", "I123"]),
            1u32..29,
        ),
        1..10,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (id, delete, first, attended, tfc, proc_, d))| {
                let mut items = vec![
                    ("cds_unique_id", format!("O{id}")),
                    ("cds_applicable_datetime", stamp(i as i64)),
                ];
                if delete {
                    items.push(("cds_update_type", "1".into()));
                } else {
                    items.extend([
                        ("appointment_date", day(d)),
                        ("first_attendance", first.to_string()),
                        ("attended_or_did_not_attend", attended.to_string()),
                        ("treatment_function_code", tfc.to_string()),
                        ("primary_procedure", proc_.to_string()),
                    ]);
                }
                Rec { items }
            })
            .collect()
    })
}

/// APC spells of 1-3 episodes (consecutive 2-day episodes from 1 May; a discharge date on the
/// last one unless unfinished), each episode once with its own applicable date-time; some
/// episodes also sent again later with another diagnosis.
fn apc_records() -> impl Strategy<Value = Vec<Rec>> {
    let episode = (
        prop::sample::select(vec!["J441", "J36X", "J069", "E119", "J44.1"]),
        prop::sample::select(vec!["", "A051", "A081"]),
        prop::option::weighted(0.3, prop::sample::select(vec!["J069", "J36X"])),
    );
    let spell = (
        prop::sample::select(vec!["11", "21", "31"]),
        prop::bool::weighted(0.8),
        proptest::collection::vec(episode, 1..4),
    );
    proptest::collection::vec(spell, 1..4).prop_map(|spells| {
        let mut recs = Vec::new();
        let mut later = Vec::new();
        let mut minute = 0i64;
        for (s, (method, finished, eps)) in spells.into_iter().enumerate() {
            let n = eps.len();
            for (e, (diag, proc_, again)) in eps.into_iter().enumerate() {
                let start = 1 + 2 * e as u32;
                let last = e + 1 == n;
                let id = format!("A{s}-{e}");
                let items = |minute: i64, diag: &str| {
                    vec![
                        ("cds_unique_id", id.clone()),
                        ("cds_applicable_datetime", stamp(minute)),
                        ("hospital_provider_spell_number", format!("SP{s}")),
                        ("episode_number", (e + 1).to_string()),
                        ("admission_method", method.to_string()),
                        ("episode_start_date", day(start)),
                        ("episode_end_date", day(start + 2)),
                        (
                            "discharge_date",
                            if last && finished {
                                day(start + 2)
                            } else {
                                String::new()
                            },
                        ),
                        ("primary_diagnosis", diag.to_string()),
                        ("primary_procedure", proc_.to_string()),
                    ]
                };
                recs.push(Rec {
                    items: items(minute, diag),
                });
                minute += 1;
                if let Some(other) = again {
                    later.push(Rec {
                        items: items(1000 + minute, other),
                    });
                }
            }
        }
        recs.extend(later);
        recs
    })
}

fn meta(dataset: Dataset, id: &str) -> SubmissionMeta {
    SubmissionMeta {
        submission_id: id.to_string(),
        sender: "RR9".into(),
        dataset,
        protocol: Protocol::NetChange,
    }
}

fn submit(store: &Store, dataset: Dataset, id: &str, bytes: &[u8]) -> SubmissionReport {
    let report = sus_node::ingest::submit(
        refdata(),
        store,
        &meta(dataset, id),
        &format!("{id}.csv"),
        bytes,
        &Default::default(),
    )
    .expect("submit");
    assert_eq!(
        report.outcome,
        Outcome::Accepted,
        "{:?}",
        report.rejection.as_ref().map(|r| r.summary())
    );
    report
}

/// Every column of every live row, as text, sorted.
fn live(store: &Store) -> Vec<String> {
    let mut rows = Vec::new();
    for ds in Dataset::ALL {
        for batch in store.scan_live(ds).expect("scan_live") {
            for row in 0..batch.num_rows() {
                let cells: Vec<String> = batch
                    .schema()
                    .fields()
                    .iter()
                    .zip(batch.columns())
                    .map(|(f, c)| {
                        let v = if c.is_null(row) {
                            "∅".to_string()
                        } else {
                            array_value_to_string(c, row).expect("cell")
                        };
                        format!("{}={v}", f.name())
                    })
                    .collect();
                rows.push(format!("{ds} {}", cells.join("|")));
            }
        }
    }
    rows.sort();
    rows
}

/// The records and the same records in another file order.
fn with_shuffled(
    recs: impl Strategy<Value = Vec<Rec>>,
) -> impl Strategy<Value = (Vec<Rec>, Vec<Rec>)> {
    recs.prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
}

fn counts(r: &SubmissionReport) -> [u64; 5] {
    [r.inserted, r.replaced, r.deleted, r.stale, r.bulk_deleted]
}

proptest! {
    #![proptest_config(config())]

    // Applying a Net Change file again under a new submission id changes nothing: every record is
    // stale (not later than what it left). Resending the same (sender, id) returns the original
    // report, store version unchanged.
    #[test]
    fn replay_is_idempotent(op in op_records(), apc in apc_records()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let (op_csv, apc_csv) = (csv(Dataset::Op, &op), csv(Dataset::Apc, &apc));
        let first_op = submit(&store, Dataset::Op, "S1", &op_csv);
        let first_apc = submit(&store, Dataset::Apc, "S2", &apc_csv);
        let state = live(&store);

        let again_op = submit(&store, Dataset::Op, "S3", &op_csv);
        let again_apc = submit(&store, Dataset::Apc, "S4", &apc_csv);
        prop_assert_eq!(counts(&again_op), [0, 0, 0, op.len() as u64, 0]);
        prop_assert_eq!(counts(&again_apc), [0, 0, 0, apc.len() as u64, 0]);
        prop_assert_eq!(&live(&store), &state);

        let version = store.version().expect("version");
        let resent_op = submit(&store, Dataset::Op, "S1", &op_csv);
        let resent_apc = submit(&store, Dataset::Apc, "S2", &apc_csv);
        prop_assert!(resent_op.resent && resent_apc.resent);
        prop_assert_eq!(counts(&resent_op), counts(&first_op));
        prop_assert_eq!(counts(&resent_apc), counts(&first_apc));
        prop_assert_eq!(&resent_op.warnings, &first_op.warnings);
        prop_assert_eq!(resent_op.version, first_op.version);
        prop_assert_eq!(store.version().expect("version"), version);
        prop_assert_eq!(&live(&store), &state);
    }

    // Records with distinct applicable date-times apply in date-time order whatever their file
    // order, and a spell is derived from its episodes whatever their order: same live state.
    #[test]
    fn file_order_does_not_matter(
        (op, op_shuffled) in with_shuffled(op_records()),
        (apc, apc_shuffled) in with_shuffled(apc_records()),
    ) {
        let runs = [(&op, &apc), (&op_shuffled, &apc_shuffled)];
        let states: Vec<(Vec<String>, [u64; 5], [u64; 5])> = runs
            .iter()
            .map(|(op, apc)| {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = Store::open(dir.path()).expect("store");
                let a = submit(&store, Dataset::Op, "S1", &csv(Dataset::Op, op));
                let b = submit(&store, Dataset::Apc, "S2", &csv(Dataset::Apc, apc));
                (live(&store), counts(&a), counts(&b))
            })
            .collect();
        prop_assert_eq!(&states[0], &states[1]);
    }
}
