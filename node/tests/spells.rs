//! Spells across submissions, checked record by record against the generator's independent
//! oracle (`sus_client::generator::oracle`), which knows only `docs/rules.md`:
//! - one spell whose episodes arrive in three submissions, then one episode replaced, then one
//!   deleted, then two versions of one episode in one file: the spell HRG and price after each;
//! - a generated data set of more than 100,000 rows at a seed no other test uses, with spells split
//!   across submissions: every stored version of every record, every derived field (HRGs, POD,
//!   pence, MFF, exclusion and reason, warnings, age, lengths of stay, tariff year, restriction).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Decimal128Type, Int32Type, Int64Type, UInt16Type, UInt32Type};
use chrono::{NaiveDate, NaiveDateTime};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use sus_client::generator::model::{Apc, Common, Dataset as GenDataset, Detail, Rec};
use sus_client::generator::oracle::{self, Priced};
use sus_client::generator::{GenConfig, generate};
use sus_node::ingest;
use sus_node::model::{Dataset, Protocol, SubmissionMeta};
use sus_node::refdata::RefData;
use sus_node::report::SubmissionReport;
use sus_node::store::Store;

fn refdata_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata")
}

/// The derived fields both implementations store, in one comparable shape.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    hrg: String,
    spell_hrg: String,
    pod: String,
    base_price: i64,
    excess_bed_days: i64,
    excess_payment: i64,
    mff: i64,
    price: i64,
    excluded: bool,
    reason: String,
    warnings: u32,
    age: Option<u16>,
    episode_los: Option<i64>,
    spell_los: Option<i64>,
    tariff_year: String,
    restricted: bool,
}

impl From<&Priced> for Fields {
    fn from(p: &Priced) -> Fields {
        Fields {
            hrg: p.hrg.clone(),
            spell_hrg: p.spell_hrg.clone(),
            pod: p.pod.clone(),
            base_price: p.base_price,
            excess_bed_days: p.excess_bed_days,
            excess_payment: p.excess_payment,
            mff: p.mff.unwrap_or(1_000_000),
            price: p.price,
            excluded: p.excluded,
            reason: p.reason.clone(),
            warnings: u32::from(p.warnings),
            age: p.age,
            episode_los: p.episode_los,
            spell_los: p.spell_los,
            tariff_year: p.tariff_year.clone(),
            restricted: p.restricted,
        }
    }
}

/// (id, fields) of every row of stored batches.
fn node_fields(batch: &RecordBatch) -> Vec<(String, Fields)> {
    let text = |name: &str| {
        batch.column_by_name(name).map(|c| {
            arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)
                .unwrap()
                .as_string::<i32>()
                .clone()
        })
    };
    let ids = text("cds_unique_id").unwrap();
    let hrg = text("hrg").unwrap();
    let spell_hrg = text("spell_hrg");
    let pod = text("pod").unwrap();
    let reason = text("exclusion_reason").unwrap();
    let col = |name: &str| batch.column_by_name(name).unwrap();
    let i64s = |name: &str| col(name).as_primitive::<Int64Type>().clone();
    let base = i64s("base_price");
    let excess = i64s("excess_payment");
    let price = i64s("price");
    let days = col("excess_bed_days").as_primitive::<Int32Type>().clone();
    let mff = col("mff").as_primitive::<Decimal128Type>().clone();
    let excluded = col("pbr_excluded").as_boolean().clone();
    let warnings = col("warnings").as_primitive::<UInt32Type>().clone();
    let age = col("age_at_activity").as_primitive::<UInt16Type>().clone();
    let los = |name: &str| {
        batch
            .column_by_name(name)
            .map(|c| c.as_primitive::<Int32Type>().clone())
    };
    let (episode_los, spell_los) = (los("episode_los"), los("spell_los"));
    let year = text("tariff_year").unwrap();
    let restricted = col("restricted").as_boolean().clone();
    let opt = |a: &Option<arrow::array::Int32Array>, r: usize| {
        a.as_ref()
            .and_then(|a| a.is_valid(r).then(|| i64::from(a.value(r))))
    };
    let s = |a: &arrow::array::StringArray, r: usize| {
        if a.is_valid(r) {
            a.value(r).to_string()
        } else {
            String::new()
        }
    };
    (0..batch.num_rows())
        .map(|r| {
            (
                ids.value(r).to_string(),
                Fields {
                    hrg: s(&hrg, r),
                    spell_hrg: spell_hrg.as_ref().map_or_else(String::new, |a| s(a, r)),
                    pod: s(&pod, r),
                    base_price: base.value(r),
                    excess_bed_days: i64::from(days.value(r)),
                    excess_payment: excess.value(r),
                    mff: i64::try_from(mff.value(r)).unwrap(),
                    price: price.value(r),
                    excluded: excluded.value(r),
                    reason: s(&reason, r),
                    warnings: warnings.value(r),
                    age: age.is_valid(r).then(|| age.value(r)),
                    episode_los: opt(&episode_los, r),
                    spell_los: opt(&spell_los, r),
                    tariff_year: s(&year, r),
                    restricted: restricted.value(r),
                },
            )
        })
        .collect()
}

// ----- one spell, step by step -----

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

fn at(day: u32, hour: u32) -> NaiveDateTime {
    d(2024, 7, day).and_hms_opt(hour, 0, 0).unwrap()
}

/// Episode `n` of emergency spell `SP1` of provider RR9 (admitted 2024-05-01, aged 40).
fn episode(n: u32, start: NaiveDate, end: NaiveDate, discharge: bool) -> Rec {
    Rec {
        common: Common {
            cds_unique_id: format!("BRR9SP1E{n}"),
            upsert: true,
            applicable: at(1, 9),
            provider: "RR9".into(),
            site: "RR901".into(),
            commissioner: "02T00".into(),
            gp_practice: "A96507".into(),
            nhs_number: "9434765919".into(),
            nhs_number_status: "01".into(),
            local_patient_id: "LP1".into(),
            date_of_birth: Some(d(1984, 3, 2)),
            sex: "2".into(),
            ethnic_category: "A".into(),
            postcode: "AB1 2CD".into(),
        },
        detail: Detail::Apc(Box::new(Apc {
            spell: "SP1".into(),
            episode_number: n,
            last_episode: discharge,
            admission_method: "21".into(),
            admission_source: "19".into(),
            patient_classification: "1".into(),
            discharge_method: if discharge { "1" } else { "" }.into(),
            discharge_destination: if discharge { "19" } else { "" }.into(),
            admission_date: d(2024, 5, 1),
            discharge_date: discharge.then_some(end),
            episode_start: start,
            episode_end: Some(end),
            main_specialty: "100".into(),
            tfc: "100".into(),
            // G500 groups to AA40 (split by CC).
            primary_diagnosis: "G500".into(),
            ..Apc::default()
        })),
    }
}

fn apc(r: &mut Rec) -> &mut Apc {
    match &mut r.detail {
        Detail::Apc(a) => a,
        _ => unreachable!(),
    }
}

struct Both {
    refdata: RefData,
    store: Store,
    oracle_refdata: sus_client::generator::refdata::RefData,
    oracle: oracle::Store,
    submissions: u32,
    _dir: tempfile::TempDir,
}

impl Both {
    fn new() -> Both {
        let dir = tempfile::tempdir().unwrap();
        Both {
            refdata: RefData::load(&refdata_dir()).unwrap(),
            store: Store::open(&dir.path().join("store")).unwrap(),
            oracle_refdata: sus_client::generator::refdata::RefData::load(&refdata_dir()).unwrap(),
            oracle: oracle::Store::default(),
            submissions: 0,
            _dir: dir,
        }
    }

    /// Submits `recs` (Net Change, sender RR9) to the node and to the oracle, and checks that
    /// every live APC record is stored alike; returns the node's report and live fields.
    fn submit(&mut self, recs: &[Rec]) -> (SubmissionReport, BTreeMap<String, Fields>) {
        self.submissions += 1;
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(GenDataset::Apc.header()).unwrap();
        for r in recs {
            w.write_record(r.cells(GenDataset::Apc)).unwrap();
        }
        let bytes = w.into_inner().unwrap();
        let meta = SubmissionMeta {
            submission_id: format!("S{}", self.submissions),
            sender: "RR9".into(),
            dataset: Dataset::Apc,
            protocol: Protocol::NetChange,
        };
        let report = ingest::submit(
            &self.refdata,
            &self.store,
            &meta,
            "spell.csv",
            &bytes,
            &Default::default(),
        )
        .unwrap();
        assert!(report.rejection.is_none(), "{report}");
        let done = self
            .oracle
            .submit(&self.oracle_refdata, GenDataset::Apc, "RR9", None, recs);
        assert_eq!(
            report.rederived, done.rederived,
            "re-derived episodes: {report}"
        );
        let node: BTreeMap<String, Fields> = self
            .store
            .scan_live(Dataset::Apc)
            .unwrap()
            .iter()
            .flat_map(node_fields)
            .collect();
        let want: BTreeMap<String, Fields> = self
            .oracle
            .live()
            .iter()
            .map(|(id, _, p)| (id.clone(), Fields::from(p)))
            .collect();
        assert_eq!(node, want, "after submission {}", self.submissions);
        (report, node)
    }
}

#[test]
fn a_spell_across_submissions_is_priced_over_every_live_episode() {
    let mut both = Both::new();
    let e1 = episode(1, d(2024, 5, 1), d(2024, 5, 3), false);
    let mut e2 = episode(2, d(2024, 5, 3), d(2024, 5, 6), false);
    // A081 groups to AA10 (NEL price above AA40's).
    apc(&mut e2).primary_procedure = "A081".into();

    // 1: two episodes, no discharge: unfinished.
    let (_, live) = both.submit(&[e1.clone(), e2.clone()]);
    assert!(live.values().all(|f| f.reason == "spell unfinished"));

    // 2: the third episode, with the discharge, finishes it: the stored two are derived again.
    let e3 = episode(3, d(2024, 5, 6), d(2024, 5, 9), true);
    let (report, live) = both.submit(std::slice::from_ref(&e3));
    assert_eq!((report.inserted, report.rederived), (1, 2), "{report}");
    assert!(live.values().all(|f| f.spell_hrg == "AA10C"), "{live:?}");
    let last = &live["BRR9SP1E3"];
    assert!(!last.excluded && last.price > 0, "{last:?}");
    let priced_once = last.price;

    // 3: episode 2 replaced by a later version with a dearer procedure (A9: AA13): the spell's
    // HRG and the price on episode 3 follow.
    let mut e2b = e2.clone();
    e2b.common.applicable = at(2, 9);
    apc(&mut e2b).primary_procedure = "A901".into();
    let (report, live) = both.submit(&[e2b]);
    assert_eq!((report.replaced, report.rederived), (1, 2), "{report}");
    assert!(live.values().all(|f| f.spell_hrg == "AA13C"), "{live:?}");
    assert!(live["BRR9SP1E3"].price > priced_once);

    // 4: episode 3 deleted: the spell is unfinished again.
    let mut del = episode(3, d(2024, 5, 6), d(2024, 5, 9), true);
    del.common.upsert = false;
    del.common.applicable = at(3, 9);
    del.detail = Detail::Delete(d(2024, 5, 6));
    let (report, live) = both.submit(&[del]);
    assert_eq!((report.deleted, report.rederived), (1, 2), "{report}");
    assert_eq!(live.len(), 2);
    assert!(live.values().all(|f| f.reason == "spell unfinished"));

    // 5: two versions of episode 2 in one file (the later first in the file); only the later,
    // live one, which discharges, makes the spell: finished again, priced on episode 2. Both
    // replace in turn (applicable order), so the earlier is never the stored one.
    let mut early = e2.clone();
    early.common.applicable = at(4, 9);
    apc(&mut early).primary_procedure = "A901".into();
    let mut late = early.clone();
    late.common.applicable = at(4, 10);
    apc(&mut late).discharge_date = Some(d(2024, 5, 6));
    apc(&mut late).primary_procedure = "A081".into();
    let (report, live) = both.submit(&[late, early]);
    assert_eq!((report.replaced, report.stale), (2, 0), "{report}");
    let e2 = &live["BRR9SP1E2"];
    assert_eq!(e2.spell_hrg, "AA10C");
    assert!(!e2.excluded && e2.price > 0, "{e2:?}");
}

// ----- a generated data set, every stored version -----

#[test]
fn node_and_oracle_agree_on_every_stored_version() {
    let dir = tempfile::tempdir().unwrap();
    let gen_dir = dir.path().join("gen");
    let summary = generate(
        &GenConfig {
            rows: 100_000,
            // No other test uses this seed.
            seed: 20_261_207,
            refdata_dir: refdata_dir(),
            out_dir: gen_dir.clone(),
            split_spell_share: 0.1,
            keep_history: true,
            reject_files: true,
            rows_per_file: 20_000,
            ..GenConfig::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let refdata = RefData::load(&refdata_dir()).unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut rederived = 0;
    for s in &summary.expected.submissions {
        let (meta, bytes) = ingest::files::read_submission(&gen_dir.join(&s.file)).unwrap();
        let report = ingest::submit(
            &refdata,
            &store,
            &meta,
            &s.file,
            &bytes,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(
            report.rejection.is_none(),
            s.outcome == "accepted",
            "{}: {report}",
            s.file
        );
        if s.duplicate_of.is_none() && s.outcome == "accepted" {
            assert_eq!(report.rederived, s.rederived, "{}: {report}", s.file);
            rederived += report.rederived;
        }
    }

    // The oracle's history: (version, id) → fields.
    let history = summary.history.expect("history kept");
    let mut want: BTreeMap<(u64, String), Fields> = BTreeMap::new();
    for v in &history {
        let old = want.insert(
            (v.version, v.cds_unique_id.clone()),
            Fields::from(&v.priced),
        );
        assert!(
            old.is_none(),
            "two versions of {} in change {}",
            v.cds_unique_id,
            v.version
        );
    }
    let mut got: BTreeMap<(u64, String), Fields> = BTreeMap::new();
    for dataset in Dataset::ALL {
        for (versions, batch) in store.scan_history(dataset).unwrap() {
            for (v, (id, f)) in versions.into_iter().zip(node_fields(&batch)) {
                assert!(
                    got.insert((v, id.clone()), f).is_none(),
                    "{id} twice in {v}"
                );
            }
        }
    }
    let mut mismatches = 0;
    for (key, w) in &want {
        match got.get(key) {
            Some(g) if g == w => {}
            other => {
                if mismatches < 10 {
                    eprintln!(
                        "version {} of {}: node {other:?}, oracle {w:?}",
                        key.0, key.1
                    );
                }
                mismatches += 1;
            }
        }
    }
    let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
    eprintln!(
        "compared {} stored versions ({} rows written, {rederived} re-derived): {mismatches} \
         mismatches, {extra} versions only the node has",
        want.len(),
        summary.rows_written
    );
    assert!(want.len() >= 100_000, "only {} versions", want.len());
    assert!(rederived > 0, "no spell crossed submissions");
    assert_eq!((mismatches, extra), (0, 0));
}

// ----- a spell changed between a submission's derivation and its apply -----

/// The CSV of `recs` (APC).
fn csv_of(recs: &[Rec]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(GenDataset::Apc.header()).unwrap();
    for r in recs {
        w.write_record(r.cells(GenDataset::Apc)).unwrap();
    }
    w.into_inner().unwrap()
}

fn meta(id: &str) -> SubmissionMeta {
    SubmissionMeta {
        submission_id: id.into(),
        sender: "RR9".into(),
        dataset: Dataset::Apc,
        protocol: Protocol::NetChange,
    }
}

#[test]
fn a_change_derived_against_a_spell_that_moved_is_refused_and_derived_again() {
    let dir = tempfile::tempdir().unwrap();
    let refdata = RefData::load(&refdata_dir()).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let limits = Default::default();
    let e1 = episode(1, d(2024, 5, 1), d(2024, 5, 3), false);
    let e2 = episode(2, d(2024, 5, 3), d(2024, 5, 6), true);
    ingest::submit(&refdata, &store, &meta("S1"), "a", &csv_of(&[e1]), &limits).unwrap();
    // Both derived against episode 1 alone.
    let prepare = |id: &str, rec: &Rec| match ingest::prepare(
        &refdata,
        &store,
        &meta(id),
        "f",
        &csv_of(std::slice::from_ref(rec)),
        &limits,
    )
    .unwrap()
    {
        ingest::Prepared::Commit(c) => c,
        ingest::Prepared::Resent(_) => panic!("not a resend"),
    };
    let mut e3 = episode(3, d(2024, 5, 6), d(2024, 5, 8), true);
    apc(&mut e3).primary_procedure = "A901".into();
    let first = prepare("S2", &e2);
    let second = prepare("S3", &e3);
    let version = store.version().unwrap();
    ingest::commit(&store, first).unwrap();
    // The second no longer holds: nothing of it is stored.
    match ingest::commit(&store, second) {
        Err(sus_node::Error::Conflict(m)) => assert!(m.contains("spell"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.version().unwrap(), version + 1);
    assert!(store.submission("RR9", "S3").unwrap().is_none());
    // Derived again, it prices the spell over all three episodes, as the oracle does.
    let report = ingest::submit(
        &refdata,
        &store,
        &meta("S3"),
        "f",
        &csv_of(&[e3.clone()]),
        &limits,
    )
    .unwrap();
    assert_eq!(report.rederived, 2, "{report}");
    let rd = sus_client::generator::refdata::RefData::load(&refdata_dir()).unwrap();
    let mut oracle = oracle::Store::default();
    for recs in [
        vec![episode(1, d(2024, 5, 1), d(2024, 5, 3), false)],
        vec![e2],
        vec![e3],
    ] {
        oracle.submit(&rd, GenDataset::Apc, "RR9", None, &recs);
    }
    let want: BTreeMap<String, Fields> = oracle
        .live()
        .iter()
        .map(|(id, _, p)| (id.clone(), Fields::from(p)))
        .collect();
    let got: BTreeMap<String, Fields> = store
        .scan_live(Dataset::Apc)
        .unwrap()
        .iter()
        .flat_map(node_fields)
        .collect();
    assert_eq!(got, want);
    assert_eq!(got["BRR9SP1E3"].spell_hrg, "AA13C");
}

/// Episodes of one spell sent at once as separate files to a 3-node cluster: their derivations
/// race, the losers are derived again by the leader, and every replica ends with the spell priced
/// over all of them, as the oracle prices it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_episodes_of_one_spell_on_a_cluster() {
    use sus_chaos_tests::cluster::{NodeOptions, TestCluster, totals};
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_sus-node"));
    let cluster = TestCluster::start(&bin, &refdata_dir(), 3, 1, 3, NodeOptions::default())
        .await
        .unwrap();
    let client = cluster.client(&[1, 2, 3]);
    let n = 8u32;
    let episodes: Vec<Rec> = (1..=n)
        .map(|k| {
            let start = d(2024, 5, k);
            let mut e = episode(k, start, d(2024, 5, k + 1), k == n);
            if k == 4 {
                apc(&mut e).primary_procedure = "A901".into();
            }
            e
        })
        .collect();
    let sends = episodes.iter().enumerate().map(|(k, e)| {
        let client = &client;
        let envelope = serde_json::json!({
            "submission_id": format!("C{k}"), "sender": "RR9", "dataset": "apc",
            "protocol": "net_change"
        })
        .to_string();
        let content = csv_of(std::slice::from_ref(e));
        async move { client.submit(&envelope, "episode.csv", content).await }
    });
    let outcomes = futures::future::join_all(sends).await;
    let mut rederived = 0;
    for o in outcomes {
        let o = o.unwrap();
        assert!(o.accepted, "{}", o.report);
        rederived += o.report.rederived;
    }
    let contents = cluster
        .wait_replicas_agree(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let rd = sus_client::generator::refdata::RefData::load(&refdata_dir()).unwrap();
    let mut oracle = oracle::Store::default();
    oracle.submit(&rd, GenDataset::Apc, "RR9", None, &episodes);
    let want: i64 = oracle.live().iter().map(|(_, _, p)| p.price).sum();
    let (live, price) = totals(&contents);
    assert_eq!((live, price), (u64::from(n), want));
    assert!(want > 0);
    eprintln!("{n} episodes sent at once: {rederived} re-derived, spell price {want} pence");
}

// ----- the grouper, chosen at start-up -----

/// A node started with a licensed grouper's output groups the records it lists by it (here one
/// episode the tables would put in AA40C), without a code change; a malformed output file stops
/// the node with the file and line named.
#[test]
fn a_licensed_grouper_output_chosen_at_start_up_gives_the_hrgs() {
    use sus_node::ingest::local::{LocalConfig, LocalStore};
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("grouper-output.csv");
    std::fs::write(&output, "dataset,cds_unique_id,hrg\napc,BRR9SP1E1,AA13C\n").unwrap();
    let e1 = episode(1, d(2024, 5, 1), d(2024, 5, 3), true);
    let hrgs = |grouper_output: Option<PathBuf>, data: &str| {
        let node = LocalStore::open(&LocalConfig {
            data_dir: dir.path().join(data),
            refdata_dir: refdata_dir(),
            grouper_output,
        })
        .unwrap();
        let report = node
            .submit(&meta("S1"), "f", &csv_of(std::slice::from_ref(&e1)))
            .unwrap();
        assert!(report.rejection.is_none(), "{report}");
        let live: Vec<(String, Fields)> = node
            .store()
            .scan_live(Dataset::Apc)
            .unwrap()
            .iter()
            .flat_map(node_fields)
            .collect();
        live[0].1.clone()
    };
    let tables = hrgs(None, "tables");
    assert_eq!(
        (tables.hrg.as_str(), tables.spell_hrg.as_str()),
        ("AA40C", "AA40C")
    );
    let licensed = hrgs(Some(output.clone()), "licensed");
    assert_eq!(
        (licensed.hrg.as_str(), licensed.spell_hrg.as_str()),
        ("AA13C", "AA13C")
    );
    assert!(licensed.price > tables.price, "{licensed:?} {tables:?}");

    std::fs::write(
        &output,
        "dataset,cds_unique_id,hrg\napc,BRR9SP1E1,AA13C\nxyz,B2,AA13C\n",
    )
    .unwrap();
    let err = LocalStore::open(&LocalConfig {
        data_dir: dir.path().join("bad"),
        refdata_dir: refdata_dir(),
        grouper_output: Some(output),
    })
    .err()
    .expect("a malformed grouper output is refused");
    let message = err.to_string();
    assert!(
        message.contains("grouper-output.csv:3") && message.contains("xyz"),
        "{message}"
    );
}
