//! Tests of the synthetic data generator and its pricing oracle.

use chrono::{NaiveDate, NaiveDateTime};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use sus_client::generator::model::{Apc, Common, Dataset, Detail, Ec, Op, Rec};
use sus_client::generator::oracle::{
    self, Priced, Store, apply_mff, nhs_number_valid, price_submission,
};
use sus_client::generator::refdata::RefData;
use sus_client::generator::{GenConfig, generate};

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).expect("valid date")
}

fn dt(y: i32, m: u32, day: u32, h: u32) -> NaiveDateTime {
    d(y, m, day).and_hms_opt(h, 0, 0).expect("valid time")
}

const APC_HEADER: &str = "HRG code,HRG name,Outpatient procedure tariff (£),Combined day case / ordinary elective spell tariff (£),Day case spell tariff (£),Ordinary elective spell tariff (£),Ordinary elective long stay trim point (days),Non-elective spell tariff (£),Non-elective long stay trim point (days),Per day long stay payment (for days exceeding trim point) (£),Reduced short stay emergency tariff _applicable?,% applied in calculation of reduced short stay emergency tariff,Reduced short stay emergency tariff (£)";

/// A small reference folder whose figures the expected pence below are worked out from.
fn fixture(dir: &Path) {
    let mut files: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut put = |p: &str, t: String| {
        files.insert(dir.join(p), t);
    };
    put(
        "organisations/providers.csv",
        "org_code,org_name,org_type\nRRV,A,NHS trust\nRX1,B,NHS trust\n8HA03,C,Independent\n"
            .into(),
    );
    put(
        "organisations/commissioners.csv",
        "org_code,org_name,icb_code\nD4U1Y,X,QMJ\n".into(),
    );
    put(
        "organisations/gp_practices.csv",
        "org_code,org_name,commissioner_code\nA81001,P,D4U1Y\n".into(),
    );
    put(
        "organisations/senders.csv",
        "sender_code,provider_code\nX26,RRV\n".into(),
    );
    put(
        "codes/restricted_codes.csv",
        "code_type,code_prefix,list\nICD10,N97,FERTILISATION\n".into(),
    );
    for (year, uplift_note, mff) in [
        ("2024-25", "", "RRV,A,1.045678\nRX1,B,1.000005\n"),
        ("2023-24", "", "RRV,A,1.04\n"),
    ] {
        let _ = uplift_note;
        let apc = if year == "2024-25" {
            "HN12A,,,\"£8,000\",,\"7,500.00\",5,\"9,000\",10,350.50,No,,\n\
             HN12B,,,\"6,000\",-,-,4,\"7,000\",8,300,No,,\n\
             HN12C,,,\"5,000\",\"4,000\",\"5,500\",3,\"6,000\",6,250,Yes,25%,\"1,500\"\n\
             EB10C,,,,,,,\"2,800\",8,240,Yes,40%,950\n\
             EB99Z,,,,,,,\"1,000.01\",0,100,Yes,50%,500.01\n\
             MA01Z,,150,,,,,,,,No,,\n"
        } else {
            "HN12C,,,\"4,800\",\"3,900\",\"5,000\",3,\"5,900\",6,240,Yes,,\"1,400\"\n"
        };
        put(
            &format!("{year}/apc_oproc_prices.csv"),
            format!("{APC_HEADER}\n{apc}"),
        );
        put(
            &format!("{year}/op_prices.csv"),
            "Treatment function code,First attendance - single professional (£),Follow-up attendance - single professional (£)\n\
             110,170,90\n100,\"£1,000\",\"3,000.00\"\n"
                .into(),
        );
        let mut ec =
            String::from("HRG code,Type 1 and 2 departments (£),Type 3 and 4 departments (£)\n");
        for n in 1..=11 {
            ec.push_str(&format!("VB{n:02}Z,{},{}\n", 500 - 20 * n, 100));
        }
        put(&format!("{year}/ec_prices.csv"), ec);
        put(
            &format!("{year}/mff.csv"),
            format!("Org code,Org name,MFF payment index\n{mff}"),
        );
        put(
            &format!("{year}/hrg_grouper.csv"),
            "setting,code_type,code_prefix,hrg,cc_split\n\
             APC,OPCS4,W37,HN12,Y\nAPC,OPCS4,W,HN99Z,N\nAPC,ICD10,I21,EB10,Y\nAPC,ICD10,I,EB99Z,N\n\
             OP,OPCS4,S06,MA01Z,N\n"
                .into(),
        );
        put(
            &format!("{year}/ec_grouper.csv"),
            "snomed_code,kind,category\n1001,investigation,1\n1002,investigation,2\n2001,treatment,1\n2004,treatment,4\n".into(),
        );
        let mut h = String::from("investigation_category,treatment_category,hrg\n");
        for i in 0..4 {
            for t in 0..5 {
                h.push_str(&format!("{i},{t},VB{:02}Z\n", 11 - (2 * i + t)));
            }
        }
        put(&format!("{year}/ec_hrg.csv"), h);
    }
    for (path, text) in files {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write fixture");
    }
}

fn refdata() -> (tempfile::TempDir, RefData) {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(dir.path());
    let rd = RefData::load(dir.path()).expect("fixture loads");
    (dir, rd)
}

fn common(id: &str, provider: &str) -> Common {
    Common {
        cds_unique_id: id.into(),
        upsert: true,
        applicable: dt(2024, 6, 1, 9),
        provider: provider.into(),
        site: format!("{provider}01"),
        commissioner: "D4U1Y".into(),
        gp_practice: "A81001".into(),
        nhs_number: "9434765919".into(),
        nhs_number_status: "01".into(),
        local_patient_id: "LP1".into(),
        date_of_birth: Some(d(1970, 6, 15)),
        sex: "1".into(),
        ethnic_category: "A".into(),
        postcode: "LS1 4AP".into(),
    }
}

fn episode(id: &str, method: &str, class: &str, adm: NaiveDate, dis: NaiveDate) -> Apc {
    Apc {
        spell: format!("SP{id}"),
        episode_number: 1,
        last_episode: true,
        admission_method: method.into(),
        admission_source: "19".into(),
        patient_classification: class.into(),
        discharge_method: "1".into(),
        discharge_destination: "19".into(),
        admission_date: adm,
        discharge_date: Some(dis),
        episode_start: adm,
        episode_end: Some(dis),
        main_specialty: "110".into(),
        tfc: "110".into(),
        primary_diagnosis: "I10X".into(),
        ..Apc::default()
    }
}

fn apc_rec(id: &str, provider: &str, a: Apc) -> Rec {
    Rec {
        common: common(id, provider),
        detail: Detail::Apc(Box::new(a)),
    }
}

fn one(rd: &RefData, dataset: Dataset, r: Rec) -> Priced {
    price_submission(rd, dataset, &[r], None)
        .pop()
        .expect("one priced record")
}

#[test]
fn oracle_prices_hand_computed_records() {
    let (_dir, rd) = refdata();

    // Ordinary elective, W371 → HN12, no secondary diagnoses → HN12C. LoS 5, EL trim 3:
    // 2 excess days × £250 = £500. (550000 + 50000) × 1.045678 = 627406.8 → 627407.
    let mut a = episode("1", "11", "1", d(2024, 5, 1), d(2024, 5, 6));
    a.primary_procedure = "W371".into();
    let p = one(&rd, Dataset::Apc, apc_rec("E1", "RRV", a));
    assert_eq!((p.hrg.as_str(), p.pod.as_str()), ("HN12C", "EL"));
    assert_eq!(
        (p.base_price, p.excess_bed_days, p.excess_payment),
        (550000, 2, 50000)
    );
    assert_eq!(p.price, 627407);

    // Non-elective, I219 with no secondary diagnoses → EB10C, LoS 1, age 53: SSEM £950.
    // 95000 × 1.045678 = 99339.41 → 99339.
    let mut a = episode("2", "21", "1", d(2024, 5, 1), d(2024, 5, 2));
    a.primary_diagnosis = "I219".into();
    let p = one(&rd, Dataset::Apc, apc_rec("E2", "RRV", a));
    assert_eq!(
        (p.hrg.as_str(), p.base_price, p.price),
        ("EB10C", 95000, 99339)
    );

    // Same spell, 2 secondary diagnoses → HN12B via W372; DC and EL blank ("-") → combined £6,000;
    // day case LoS 0. Provider 8HA03 has no MFF row: × 1.000000 = 600000.
    let mut a = episode("3", "11", "2", d(2024, 7, 1), d(2024, 7, 1));
    a.primary_procedure = "W372".into();
    a.secondary_diagnoses = vec!["I10X".into(), "E119".into()];
    let p = one(&rd, Dataset::Apc, apc_rec("E3", "8HA03", a));
    assert_eq!(
        (p.hrg.as_str(), p.pod.as_str(), p.price),
        ("HN12B", "DC", 600000)
    );

    // 2023-24 tariff (discharged March 2024): HN12C EL £5,000, LoS 2 (no excess) at RRV 1.04:
    // 500000 × 1.04 = 520000.
    let mut a = episode("4", "11", "1", d(2024, 3, 1), d(2024, 3, 3));
    a.primary_procedure = "W371".into();
    let p = one(&rd, Dataset::Apc, apc_rec("E4", "RRV", a));
    assert_eq!(p.price, 520000);

    // Two episodes: W371 (HN12C, EL £5,500) and I10X (EB99Z, no EL price → 0): the spell HRG is
    // HN12C, carried by the last episode; the first has price 0 and is not excluded.
    let mut a1 = episode("5", "11", "1", d(2024, 5, 1), d(2024, 5, 3));
    a1.primary_procedure = "W371".into();
    a1.last_episode = false;
    a1.discharge_date = None;
    a1.episode_end = Some(d(2024, 5, 2));
    let mut a2 = episode("5", "11", "1", d(2024, 5, 1), d(2024, 5, 3));
    a2.episode_number = 2;
    a2.episode_start = d(2024, 5, 2);
    let recs = vec![apc_rec("E5a", "RRV", a1), apc_rec("E5b", "RRV", a2)];
    let ps = price_submission(&rd, Dataset::Apc, &recs, None);
    assert_eq!(ps[0].price, 0);
    assert!(!ps[0].excluded);
    assert_eq!(ps[1].spell_hrg, "HN12C");
    // 550000 × 1.045678 = 575122.9 → 575123.
    assert_eq!(ps[1].price, 575123);

    // OP first attendance TFC 100 (£1,000) at RX1 (1.000005): 100000.5 → half-even 100000;
    // follow-up (£3,000): 300001.5 → 300002.
    let op = |id: &str, first: &str, attended: &str| Rec {
        common: common(id, "RX1"),
        detail: Detail::Op(Op {
            appointment_date: d(2024, 5, 10),
            attended: attended.into(),
            first_attendance: first.into(),
            consultation_mechanism: "01".into(),
            tfc: "100".into(),
            outcome: "1".into(),
            primary_procedure: String::new(),
            primary_diagnosis: String::new(),
        }),
    };
    assert_eq!(one(&rd, Dataset::Op, op("O1", "1", "5")).price, 100000);
    assert_eq!(one(&rd, Dataset::Op, op("O2", "2", "5")).price, 300002);
    let dna = one(&rd, Dataset::Op, op("O3", "1", "3"));
    assert!(dna.excluded);
    assert_eq!(dna.price, 0);
    // Outpatient procedure S061 → MA01Z £150: 15000 × 1.000005 = 15000.075 → 15000.
    let mut r = op("O4", "2", "5");
    if let Detail::Op(o) = &mut r.detail {
        o.primary_procedure = "S061".into();
    }
    let p = one(&rd, Dataset::Op, r);
    assert_eq!(
        (p.pod.as_str(), p.hrg.as_str(), p.price),
        ("OPPROC", "MA01Z", 15000)
    );

    // EC type 03, investigation category 2, treatment category 1 → VB(11 - 5) = VB06Z, £100:
    // 10000 × 1.045678 = 10456.78 → 10457. Type 04: walk-in, excluded.
    let ec = |id: &str, dept: &str| Rec {
        common: common(id, "RRV"),
        detail: Detail::Ec(Ec {
            arrival: dt(2024, 5, 10, 14),
            departure: Some(dt(2024, 5, 10, 17)),
            department_type: dept.into(),
            arrival_mode: "1".into(),
            acuity: 3,
            investigations: vec!["1002".into(), "9999".into()],
            treatments: vec!["2001".into()],
            ..Ec::default()
        }),
    };
    let p = one(&rd, Dataset::Ec, ec("A1", "03"));
    assert_eq!((p.hrg.as_str(), p.price), ("VB06Z", 10457));
    assert!(one(&rd, Dataset::Ec, ec("A2", "04")).excluded);
    assert_eq!(one(&rd, Dataset::Ec, ec("A3", "07")).hrg, "VB99Z");
}

#[test]
fn mff_rounding_is_half_even() {
    assert_eq!(apply_mff(100_000, 1_000_005), 100_000); // 100000.5 → even
    assert_eq!(apply_mff(300_000, 1_000_005), 300_002); // 300001.5 → even
    assert_eq!(apply_mff(95_000, 1_045_678), 99_339); // 99339.41
    assert_eq!(apply_mff(1, 500_000), 0); // 0.5 → 0
    assert_eq!(apply_mff(3, 500_000), 2); // 1.5 → 2
}

#[test]
fn store_applies_net_change_in_applicable_order() {
    let (_dir, rd) = refdata();
    let mut store = Store::default();
    let mut a = episode("1", "11", "1", d(2024, 5, 1), d(2024, 5, 6));
    a.primary_procedure = "W371".into();
    let r = apc_rec("E1", "RRV", a);
    let c = store
        .submit(&rd, Dataset::Apc, "RRV", None, std::slice::from_ref(&r))
        .counts;
    assert_eq!(c.inserted, 1);
    // Replaying changes nothing: stale.
    let c = store
        .submit(&rd, Dataset::Apc, "RRV", None, std::slice::from_ref(&r))
        .counts;
    assert_eq!((c.inserted, c.stale), (0, 1));
    let mut del = r.clone();
    del.common.upsert = false;
    del.common.applicable = dt(2024, 7, 1, 9);
    let c = store.submit(&rd, Dataset::Apc, "RRV", None, &[del]).counts;
    assert_eq!(c.deleted, 1);
    assert_eq!(
        store
            .totals()
            .datasets
            .get(&Dataset::Apc)
            .map_or(0, |t| t.live_records),
        0
    );
}

#[test]
fn nhs_numbers_modulus_11() {
    assert!(nhs_number_valid("9434765919"));
    assert!(!nhs_number_valid("9434765918"));
    assert!(!nhs_number_valid("1234567890"));
    assert!(!nhs_number_valid("0000000000"));
    assert!(nhs_number_valid("943 476 5919"));
    let mut rng = sus_client::generator::synth::rng_for(&[42]);
    for _ in 0..10_000 {
        let n = sus_client::generator::synth::valid_nhs_number(&mut rng);
        assert!(nhs_number_valid(&n), "{n}");
    }
    assert!(oracle::icd10_well_formed("I10X"));
    assert!(oracle::icd10_well_formed("S7200D"));
    assert!(!oracle::icd10_well_formed("J18.9"));
    assert!(oracle::opcs4_well_formed("W371"));
    assert!(!oracle::opcs4_well_formed("I123"));
}

fn config(out: &Path) -> GenConfig {
    GenConfig {
        rows: 3000,
        seed: 99,
        refdata_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata"),
        out_dir: out.to_path_buf(),
        rows_per_file: 400,
        bulk_share: 0.3,
        reject_files: true,
        ..GenConfig::default()
    }
}

fn read_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read out dir")
        .map(|e| {
            let e = e.expect("dir entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read file"),
            )
        })
        .collect()
}

#[test]
fn generation_is_deterministic_and_well_formed() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let s1 = generate(&config(a.path()), &mut |_| {}).expect("generate a");
    let s2 = generate(&config(b.path()), &mut |_| {}).expect("generate b");
    assert_eq!(s1.expected, s2.expected);
    let fa = read_dir(a.path());
    let fb = read_dir(b.path());
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (name, bytes) in &fa {
        assert!(fb.get(name) == Some(bytes), "{name} differs between runs");
    }
    assert!(fa.contains_key("expected.json"));
    assert!(s1.expected.all.live_records > 2000);
    assert!(
        s1.expected
            .submissions
            .iter()
            .any(|s| s.protocol == "bulk_replacement")
    );
    for rule in ["R04", "R05", "R06", "R07", "R08"] {
        assert!(
            s1.expected
                .submissions
                .iter()
                .any(|s| s.rule.as_deref().is_some_and(|r| r.starts_with(rule))),
            "no {rule} file"
        );
    }
    assert!(
        s1.expected
            .submissions
            .iter()
            .any(|s| s.duplicate_of.is_some())
    );

    // Every CSV has the exact header of its dataset and a sidecar envelope of the right shape.
    let mut ids = std::collections::BTreeSet::new();
    for (name, bytes) in &fa {
        let Some(stem) = name.strip_suffix(".csv") else {
            continue;
        };
        let dataset = Dataset::parse(stem.split('-').nth(1).expect("dataset in name"))
            .expect("known dataset");
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        let header: Vec<String> = reader
            .headers()
            .expect("header")
            .iter()
            .map(str::to_string)
            .collect();
        assert_eq!(header, dataset.header(), "{name}");
        let mut rows = 0;
        for rec in reader.records() {
            assert_eq!(rec.expect("row parses").len(), header.len(), "{name}");
            rows += 1;
        }
        assert!(rows > 0, "{name} has no rows");
        let meta: serde_json::Value =
            serde_json::from_slice(&fa[&format!("{name}.meta.json")]).expect("meta parses");
        let obj = meta.as_object().expect("meta is an object");
        assert_eq!(obj["dataset"], dataset.name());
        let sender = obj["sender"].as_str().expect("sender");
        let id = obj["submission_id"].as_str().expect("submission id");
        let bulk = name.ends_with("-bulk.csv");
        assert_eq!(
            obj["protocol"],
            if bulk {
                "bulk_replacement"
            } else {
                "net_change"
            }
        );
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        if bulk {
            for k in [
                "bulk_group",
                "period_start",
                "period_end",
                "extract_datetime",
                "prime_recipient",
            ] {
                assert!(keys.contains(&k), "{name} lacks {k}");
            }
        } else {
            assert_eq!(keys.len(), 4, "{name}: {keys:?}");
        }
        // Unique per sender, except the deliberate idempotent replay.
        let dup = s1
            .expected
            .submissions
            .iter()
            .any(|s| s.file == name.as_str() && s.duplicate_of.is_some());
        assert!(
            ids.insert((sender.to_string(), id.to_string())) || dup,
            "{name}"
        );
    }
}
