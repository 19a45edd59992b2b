//! Derivation and end-to-end pricing of submissions over the fixture reference data
//! (`refdata::testdata`). Every expected value is worked out by hand from the fixture tables; the
//! arithmetic is in the comment beside it.
//!
//! Fixture MFFs: RRV 1.045678 (2024-25) and 1.040000 (2023-24); RX1 1.000005 (2024-25, absent in
//! 2023-24); 8HA03 absent (1.000000).

use super::*;
use crate::model::{Dataset, DerivedRecord, Protocol, SubmissionMeta};
use crate::refdata::testdata::{
    apc, apc_mut, common, d, deletion, dt, ec, ec_mut, net_change, op, op_mut, refdata,
};
use crate::validate::record_warnings;

const RRV_2024: i64 = 1_045_678;
const RRV_2023: i64 = 1_040_000;

/// Validates (W01-W09 under `meta`) and derives `records` like ingest does.
fn run_with(meta: &SubmissionMeta, records: Vec<Record>) -> Vec<DerivedRecord> {
    let rd = refdata();
    let warnings = records
        .iter()
        .map(|r| record_warnings(meta, r, &rd))
        .collect();
    derive_submission(records, warnings, &rd)
}

/// [`run_with`] under a Net Change envelope of the first record's dataset.
fn run(records: Vec<Record>) -> Vec<DerivedRecord> {
    let ds = records.first().map_or(Dataset::Apc, Record::dataset);
    run_with(&net_change(ds), records)
}

/// The derivations of a single record.
fn one(r: Record) -> Derived {
    run(vec![r])
        .pop()
        .expect("one record in, one record out")
        .derived
}

/// Sets a single-episode spell's dates: admitted and episode start `from`, discharged and episode
/// end `to` (`None`: unfinished).
fn stay(r: &mut Record, from: NaiveDate, to: Option<NaiveDate>) {
    let a = apc_mut(r);
    a.admission_date = Some(from);
    a.episode_start_date = Some(from);
    a.episode_end_date = to;
    a.discharge_date = to;
}

/// An APC episode with the given method / class, primary procedure, diagnosis and number of
/// secondary diagnoses, admitted 2024-05-01 and discharged after `los` days.
fn spell(
    id: &str,
    method: &str,
    class: &str,
    proc: Option<&str>,
    dx: &str,
    sec: usize,
    los: i64,
) -> Record {
    let mut r = apc(id);
    let from = d(2024, 5, 1);
    stay(&mut r, from, Some(from + chrono::Days::new(los as u64)));
    let a = apc_mut(&mut r);
    a.admission_method = Some(method.into());
    a.patient_classification = Some(class.into());
    a.primary_procedure = proc.map(str::to_string);
    a.primary_diagnosis = Some(dx.into());
    a.secondary_diagnoses = ["E119", "J449", "N189", "I10X"][..sec]
        .iter()
        .map(|s| s.to_string())
        .collect();
    r
}

fn elective(id: &str, proc: Option<&str>, dx: &str, sec: usize, los: i64) -> Record {
    spell(id, "11", "1", proc, dx, sec, los)
}

fn emergency(id: &str, proc: Option<&str>, dx: &str, sec: usize, los: i64) -> Record {
    spell(id, "21", "1", proc, dx, sec, los)
}

/// The money of a priced row: (base, excess days, excess payment, mff, price).
fn money(d: &Derived) -> (i64, i32, i64, i64, i64) {
    (
        d.base_price,
        d.excess_bed_days,
        d.excess_payment,
        d.mff,
        d.price,
    )
}

#[track_caller]
fn assert_priced(d: &Derived, year: &str) {
    assert!(!d.pbr_excluded, "not excluded: {:?}", d.exclusion_reason);
    assert_eq!(d.exclusion_reason, None);
    assert_eq!(d.tariff_year.as_deref(), Some(year));
}

#[track_caller]
fn assert_excluded(d: &Derived, reason: &str) {
    assert!(d.pbr_excluded, "excluded: {d:?}");
    assert_eq!(d.exclusion_reason.as_deref(), Some(reason));
    assert_eq!(
        (d.base_price, d.excess_bed_days, d.excess_payment, d.price),
        (0, 0, 0, 0)
    );
}

// ----- age and lengths of stay -----

#[test]
fn age_is_whole_years_completed_birthday_counts() {
    assert_eq!(age_on(d(1970, 6, 15), d(2024, 6, 14)), Some(53)); // day before the 54th birthday
    assert_eq!(age_on(d(1970, 6, 15), d(2024, 6, 15)), Some(54)); // on the birthday
    assert_eq!(age_on(d(1970, 6, 15), d(1970, 6, 15)), Some(0)); // born that day
    assert_eq!(age_on(d(1970, 6, 15), d(1970, 6, 14)), None); // not yet born
    // Born 29 February: a year is completed on 1 March in other years.
    assert_eq!(age_on(d(2020, 2, 29), d(2023, 2, 28)), Some(2));
    assert_eq!(age_on(d(2020, 2, 29), d(2023, 3, 1)), Some(3));
    assert_eq!(age_on(d(2020, 2, 29), d(2024, 2, 29)), Some(4));
}

#[test]
fn age_at_activity_per_dataset() {
    // OP appointment 2024-05-10; born 1970-05-10 → 54 on the day, born 1970-05-11 → still 53.
    let mut r = op("B1");
    r.common.date_of_birth = Some(d(1970, 5, 10));
    assert_eq!(one(r).age_at_activity, Some(54));
    let mut r = op("B1");
    r.common.date_of_birth = Some(d(1970, 5, 11));
    assert_eq!(one(r).age_at_activity, Some(53));
    // EC arrival 2024-05-10 14:00: the date counts.
    let mut r = ec("B1");
    r.common.date_of_birth = Some(d(2000, 5, 10));
    assert_eq!(one(r).age_at_activity, Some(24));
    // APC: episode start 2024-05-01, born 1970-06-15 → 53.
    assert_eq!(one(apc("B1")).age_at_activity, Some(53));
    // No date of birth, or one after the activity (W03): no age.
    let mut r = op("B1");
    r.common.date_of_birth = None;
    assert_eq!(one(r).age_at_activity, None);
    let mut r = op("B1");
    r.common.date_of_birth = Some(d(2024, 5, 11));
    assert_eq!(one(r).age_at_activity, None);
}

#[test]
fn episode_and_spell_los() {
    // 2024-05-01 → 2024-05-03 = 2 days.
    let x = one(apc("B1"));
    assert_eq!((x.episode_los, x.spell_los), (Some(2), Some(2)));
    // Same day = 0.
    let mut r = apc("B1");
    stay(&mut r, d(2024, 5, 1), Some(d(2024, 5, 1)));
    let x = one(r);
    assert_eq!((x.episode_los, x.spell_los), (Some(0), Some(0)));
    // No episode end: the discharge date ends the episode (05-01 → 05-04 = 3).
    let mut r = apc("B1");
    apc_mut(&mut r).episode_end_date = None;
    apc_mut(&mut r).discharge_date = Some(d(2024, 5, 4));
    let x = one(r);
    assert_eq!((x.episode_los, x.spell_los), (Some(3), Some(3)));
    // Neither: blank, and the spell is unfinished (no spell LoS).
    let mut r = apc("B1");
    stay(&mut r, d(2024, 5, 1), None);
    let x = one(r);
    assert_eq!((x.episode_los, x.spell_los), (None, None));
    // Across a month end and a leap day: 2024-02-28 → 2024-03-01 = 2 days.
    let mut r = apc("B1");
    stay(&mut r, d(2024, 2, 28), Some(d(2024, 3, 1)));
    assert_eq!(one(r).spell_los, Some(2));
}

// ----- spells -----

fn episode(id: &str, spell_no: &str, n: u8, start: NaiveDate, end: NaiveDate) -> Record {
    let mut r = apc(id);
    let a = apc_mut(&mut r);
    a.hospital_provider_spell_number = Some(spell_no.into());
    a.episode_number = Some(n);
    a.episode_start_date = Some(start);
    a.episode_end_date = Some(end);
    a.discharge_date = None;
    a.last_episode_in_spell = false;
    r
}

#[test]
fn build_spells_groups_by_provider_and_spell_number_in_episode_order() {
    let mut other_provider = episode("B5", "S1", 1, d(2024, 5, 1), d(2024, 5, 2));
    other_provider.common.provider_code = "RX1".into();
    let records = vec![
        episode("B0", "S1", 3, d(2024, 5, 3), d(2024, 5, 4)),
        op("B1"),
        episode("B2", "S2", 1, d(2024, 5, 1), d(2024, 5, 2)),
        episode("B3", "S1", 1, d(2024, 5, 1), d(2024, 5, 2)),
        deletion(Dataset::Apc, "B4"),
        other_provider,
        episode("B6", "S1", 2, d(2024, 5, 2), d(2024, 5, 3)),
    ];
    let spells = build_spells(&records, &[true; 7]);
    // First-seen order: (RRV, S1), (RRV, S2), (RX1, S1); the OP record and the deletion are left out.
    assert_eq!(
        spells,
        vec![
            Spell {
                provider_code: "RRV".into(),
                spell_number: Some("S1".into()),
                episodes: vec![3, 6, 0], // episodes 1, 2, 3
            },
            Spell {
                provider_code: "RRV".into(),
                spell_number: Some("S2".into()),
                episodes: vec![2],
            },
            Spell {
                provider_code: "RX1".into(),
                spell_number: Some("S1".into()),
                episodes: vec![5],
            },
        ]
    );
    assert_eq!((spells[0].first(), spells[0].last()), (3, 0));
}

/// A three-episode non-elective spell of RRV, admitted 2024-05-01 and discharged 2024-05-20
/// (spell LoS 19), given in the file out of episode order.
fn three_episode_spell() -> Vec<Record> {
    let mut e1 = episode("B-E1", "S77", 1, d(2024, 5, 1), d(2024, 5, 2));
    let mut e2 = episode("B-E2", "S77", 2, d(2024, 5, 2), d(2024, 5, 10));
    let mut e3 = episode("B-E3", "S77", 3, d(2024, 5, 10), d(2024, 5, 20));
    for e in [&mut e1, &mut e2, &mut e3] {
        let a = apc_mut(e);
        a.admission_date = Some(d(2024, 5, 1));
        a.admission_method = Some("21".into());
    }
    // Episode 1: chest pain R07X → EB30Z (NEL price blank → 0 in the spell HRG choice).
    apc_mut(&mut e1).primary_diagnosis = Some("R07X".into());
    // Episode 2: I21X with 3 secondary diagnoses → EB10A (NEL £4,500.50).
    apc_mut(&mut e2).primary_diagnosis = Some("I21X".into());
    apc_mut(&mut e2).secondary_diagnoses = vec!["E119".into(), "J449".into(), "N189".into()];
    // Episode 3: I21X with 1 → EB10B (NEL £3,600.00); it finishes the spell.
    apc_mut(&mut e3).primary_diagnosis = Some("I21X".into());
    apc_mut(&mut e3).secondary_diagnoses = vec!["E119".into()];
    apc_mut(&mut e3).discharge_date = Some(d(2024, 5, 20));
    apc_mut(&mut e3).last_episode_in_spell = true;
    vec![e3, e1, e2]
}

#[test]
fn multi_episode_spell_is_priced_once_on_its_last_episode() {
    let out = run(three_episode_spell());
    let by_id = |id: &str| {
        &out.iter()
            .find(|x| x.record.common.cds_unique_id == id)
            .expect("record present")
            .derived
    };
    let (e1, e2, e3) = (by_id("B-E1"), by_id("B-E2"), by_id("B-E3"));
    // Output keeps input order.
    assert_eq!(out[0].record.common.cds_unique_id, "B-E3");
    // Episode HRGs, episode LoS 1, 8, 10; spell LoS 05-01 → 05-20 = 19 on every episode.
    assert_eq!(e1.hrg.as_deref(), Some("EB30Z"));
    assert_eq!(e2.hrg.as_deref(), Some("EB10A"));
    assert_eq!(e3.hrg.as_deref(), Some("EB10B"));
    assert_eq!(
        [e1.episode_los, e2.episode_los, e3.episode_los],
        [Some(1), Some(8), Some(10)]
    );
    for e in [e1, e2, e3] {
        // Spell HRG: highest NEL base price: EB30Z 0 (blank), EB10A 450_050, EB10B 360_000 → EB10A.
        assert_eq!(e.spell_hrg.as_deref(), Some("EB10A"));
        assert_eq!(e.spell_los, Some(19));
        assert_eq!(e.pod, Some(Pod::Nel));
        assert_priced(e, "2024-25");
        assert_eq!(e.mff, RRV_2024);
    }
    // Other episodes carry nothing.
    assert_eq!(money(e1), (0, 0, 0, RRV_2024, 0));
    assert_eq!(money(e2), (0, 0, 0, RRV_2024, 0));
    // EB10A NEL trim 12: excess 19 − 12 = 7 days × 27_525 (£275.25) = 192_675;
    // (450_050 + 192_675) = 642_725 × 1.045678 = 672_083.39255 → 672_083.
    assert_eq!(money(e3), (450_050, 7, 192_675, RRV_2024, 672_083));
}

#[test]
fn spell_hrg_ties_go_to_the_lowest_episode_number() {
    // Elective spell: episode 1 dx Z000 → WD99Z (no price row: 0), episode 2 dx I10X → EB99Z
    // (no EL or combined price: 0). Tie at 0 → episode 1's HRG, whatever the file order.
    let build = |dx1: &str, dx2: &str| {
        let mut e1 = episode("B-T1", "S5", 1, d(2024, 5, 1), d(2024, 5, 2));
        let mut e2 = episode("B-T2", "S5", 2, d(2024, 5, 2), d(2024, 5, 3));
        apc_mut(&mut e1).primary_diagnosis = Some(dx1.into());
        apc_mut(&mut e2).primary_diagnosis = Some(dx2.into());
        apc_mut(&mut e2).discharge_date = Some(d(2024, 5, 3));
        vec![e2, e1]
    };
    let out = run(build("Z000", "I10X"));
    assert_eq!(out[0].derived.spell_hrg.as_deref(), Some("WD99Z"));
    assert_eq!(out[1].derived.spell_hrg.as_deref(), Some("WD99Z"));
    assert_excluded(&out[0].derived, "no national price for HRG WD99Z EL");
    let out = run(build("I10X", "Z000"));
    assert_eq!(out[0].derived.spell_hrg.as_deref(), Some("EB99Z"));
    assert_excluded(&out[0].derived, "no national price for HRG EB99Z EL");
    // The other episode is not itself excluded.
    assert!(!out[1].derived.pbr_excluded);
}

#[test]
fn spell_hrg_uses_the_spells_pod_price() {
    // Day case spell (class 2): episode 1 W371 → HN12C (DC £4,000), episode 2 W371 + 1 secondary →
    // HN12B (DC "-" → combined £6,000). 600_000 > 400_000 → HN12B.
    // 600_000 × 1.045678 = 627_406.8 → 627_407.
    let mut e1 = episode("B-D1", "S6", 1, d(2024, 5, 1), d(2024, 5, 1));
    let mut e2 = episode("B-D2", "S6", 2, d(2024, 5, 1), d(2024, 5, 1));
    for e in [&mut e1, &mut e2] {
        let a = apc_mut(e);
        a.patient_classification = Some("2".into());
        a.primary_procedure = Some("W371".into());
    }
    apc_mut(&mut e2).secondary_diagnoses = vec!["E119".into()];
    apc_mut(&mut e2).discharge_date = Some(d(2024, 5, 1));
    let out = run(vec![e1, e2]);
    assert_eq!(out[1].derived.spell_hrg.as_deref(), Some("HN12B"));
    assert_eq!(out[1].derived.pod, Some(Pod::Dc));
    assert_eq!(money(&out[1].derived), (600_000, 0, 0, RRV_2024, 627_407));
}

#[test]
fn pod_comes_from_the_first_episode() {
    // Episode 1 emergency (21), episode 2 recorded as elective (11): the spell is NEL.
    let mut e1 = episode("B-P1", "S8", 1, d(2024, 5, 1), d(2024, 5, 4));
    let mut e2 = episode("B-P2", "S8", 2, d(2024, 5, 4), d(2024, 5, 8));
    apc_mut(&mut e1).admission_method = Some("21".into());
    apc_mut(&mut e2).admission_method = Some("11".into());
    apc_mut(&mut e2).discharge_date = Some(d(2024, 5, 8));
    apc_mut(&mut e2).primary_procedure = Some("W371".into());
    let out = run(vec![e2, e1]);
    assert_eq!(out[0].derived.pod, Some(Pod::Nel));
    assert_eq!(out[1].derived.pod, Some(Pod::Nel));
    // Spell HRG by NEL price: EB99Z (I10X) £1,000.01 vs HN12C £6,000 → HN12C; LoS 05-01 → 05-08 = 7,
    // NEL trim 6 → 1 excess day × 25_000 = 25_000. (600_000 + 25_000) = 625_000 × 1.045678
    // = 653_548.75 → 653_549.
    assert_eq!(out[0].derived.spell_hrg.as_deref(), Some("HN12C"));
    assert_eq!(
        money(&out[0].derived),
        (600_000, 1, 25_000, RRV_2024, 653_549)
    );
}

#[test]
fn spell_with_an_ungroupable_episode_is_priced_from_the_others() {
    // Episode 1 has a malformed procedure (W07) → UZ01Z; episode 2 W371 → HN12C (EL £5,500).
    let mut e1 = episode("B-U1", "S9", 1, d(2024, 5, 1), d(2024, 5, 2));
    let mut e2 = episode("B-U2", "S9", 2, d(2024, 5, 2), d(2024, 5, 3));
    apc_mut(&mut e1).primary_procedure = Some("W37".into());
    apc_mut(&mut e2).primary_procedure = Some("W371".into());
    apc_mut(&mut e2).discharge_date = Some(d(2024, 5, 3));
    let out = run(vec![e1, e2]);
    assert_eq!(out[0].derived.hrg.as_deref(), Some(UNGROUPED_HRG));
    assert!(out[0].derived.warnings.contains(Rule::Opcs4Malformed));
    assert_eq!(out[1].derived.spell_hrg.as_deref(), Some("HN12C"));
    // LoS 2 ≤ EL trim 3: 550_000 × 1.045678 = 575_122.9 → 575_123.
    assert_eq!(money(&out[1].derived), (550_000, 0, 0, RRV_2024, 575_123));
}

#[test]
fn date_of_birth_warning_on_any_episode_excludes_the_spell() {
    let mut e1 = episode("B-W1", "S10", 1, d(2024, 5, 1), d(2024, 5, 2));
    let mut e2 = episode("B-W2", "S10", 2, d(2024, 5, 2), d(2024, 5, 3));
    e1.common.date_of_birth = Some(d(1870, 1, 1)); // W03 on the first episode only
    apc_mut(&mut e2).primary_procedure = Some("W371".into());
    apc_mut(&mut e2).discharge_date = Some(d(2024, 5, 3));
    let out = run(vec![e1, e2]);
    assert_excluded(&out[1].derived, "date of birth implausible");
    assert_eq!(out[1].derived.spell_hrg.as_deref(), Some("HN12C"));
}

#[test]
fn unfinished_spell_is_excluded_on_every_episode() {
    let e1 = episode("B-N1", "S11", 1, d(2024, 5, 1), d(2024, 5, 2));
    let mut e2 = episode("B-N2", "S11", 2, d(2024, 5, 2), d(2024, 5, 3));
    apc_mut(&mut e2).episode_end_date = None; // still in hospital
    // A discharge date on a lower episode does not finish the spell.
    let mut e1 = e1;
    apc_mut(&mut e1).discharge_date = Some(d(2024, 5, 2));
    let out = run(vec![e1, e2]);
    for x in &out {
        assert_excluded(&x.derived, "spell unfinished");
        assert_eq!(x.derived.spell_los, None);
        assert_eq!(x.derived.spell_hrg, None);
        assert_eq!(x.derived.tariff_year, None);
        assert_eq!(x.derived.mff, MFF_ONE);
        assert_eq!(x.derived.hrg.as_deref(), Some("EB99Z")); // I10X still grouped
    }
    assert_eq!(out[1].derived.episode_los, None);
}

// ----- point of delivery -----

#[test]
fn apc_pod_by_class_and_method() {
    let pod = |class: &str, method: &str| apc_pod(Some(class), Some(method));
    // Regular day / night admissions, whatever the method.
    assert_eq!(pod("3", "11"), Some(Pod::Rda));
    assert_eq!(pod("3", "21"), Some(Pod::Rda));
    assert_eq!(pod("4", "13"), Some(Pod::Rna));
    // Non-elective methods, whatever the class (1, 2 or 5).
    for m in NON_ELECTIVE_METHODS {
        assert_eq!(pod("1", m), Some(Pod::Nel), "{m}");
        assert_eq!(pod("2", m), Some(Pod::Nel), "{m}");
    }
    for m in ["21", "2A", "2D", "28", "31", "32", "81", "83"] {
        assert_eq!(pod("5", m), Some(Pod::Nel), "{m}");
    }
    // Elective methods: class 2 → DC, 1 or 5 → EL.
    for m in ["11", "12", "13"] {
        assert_eq!(pod("2", m), Some(Pod::Dc), "{m}");
        assert_eq!(pod("1", m), Some(Pod::El), "{m}");
        assert_eq!(pod("5", m), Some(Pod::El), "{m}");
    }
    // Neither: no POD.
    assert_eq!(pod("1", "99"), None);
    assert_eq!(pod("9", "11"), None);
    assert_eq!(apc_pod(None, None), None);
}

#[test]
fn op_pod_first_or_follow_up() {
    assert_eq!(op_pod(Some("1")), Pod::Opfa);
    assert_eq!(op_pod(Some("3")), Pod::Opfa);
    for f in ["2", "4", "5"] {
        assert_eq!(op_pod(Some(f)), Pod::Opfu, "{f}");
    }
}

// ----- grouping -----

fn episode_hrg(proc: Option<&str>, dx: Option<&str>, sec: usize) -> String {
    let rd = refdata();
    let mut r = elective("B1", proc, dx.unwrap_or("I10X"), sec, 2);
    apc_mut(&mut r).primary_diagnosis = dx.map(str::to_string);
    let a = apc_mut(&mut r).clone();
    TableGrouper::new(&rd).episode_hrg(&r, &a, "2024-25")
}

#[test]
fn grouper_longest_prefix_wins() {
    // W371 matches W37 (split), W3 and W: W37 is longest.
    assert_eq!(episode_hrg(Some("W371"), None, 0), "HN12C");
    // W381 matches W3 and W → HN20Z.
    assert_eq!(episode_hrg(Some("W381"), None, 0), "HN20Z");
    // W901 matches only W → HN99Z (the OP-setting rule W90 is not used for APC).
    assert_eq!(episode_hrg(Some("W901"), None, 0), "HN99Z");
    // I21X → I21 (split) over I2 and I; I25X → I2 over I; I10X → I; R07X → R07.
    assert_eq!(episode_hrg(None, Some("I21X"), 0), "EB10C");
    assert_eq!(episode_hrg(None, Some("I259"), 0), "EB20Z");
    assert_eq!(episode_hrg(None, Some("I10X"), 0), "EB99Z");
    assert_eq!(episode_hrg(None, Some("R074"), 0), "EB30Z");
}

#[test]
fn grouper_cc_split_by_secondary_diagnoses() {
    // 0 → C, 1-2 → B, 3+ → A.
    assert_eq!(episode_hrg(Some("W371"), None, 0), "HN12C");
    assert_eq!(episode_hrg(Some("W371"), None, 1), "HN12B");
    assert_eq!(episode_hrg(Some("W371"), None, 2), "HN12B");
    assert_eq!(episode_hrg(Some("W371"), None, 3), "HN12A");
    assert_eq!(episode_hrg(None, Some("I214"), 4), "EB10A");
    // Unsplit rules ignore the count.
    assert_eq!(episode_hrg(Some("W381"), None, 4), "HN20Z");
    let rule = crate::refdata::GrouperRule {
        hrg: "XX01".into(),
        cc_split: true,
    };
    assert_eq!(
        [0, 1, 2, 3, 12].map(|n| rule.hrg_for(n)),
        ["XX01C", "XX01B", "XX01B", "XX01A", "XX01A"].map(String::from)
    );
}

#[test]
fn grouper_tries_procedures_before_diagnoses() {
    // W371 and I21X both group: the procedure wins.
    assert_eq!(episode_hrg(Some("W371"), Some("I21X"), 0), "HN12C");
    // A011: no OPCS4 rule for A → the diagnosis is used.
    assert_eq!(episode_hrg(Some("A011"), Some("I21X"), 1), "EB10B");
}

#[test]
fn grouper_without_a_rule_is_ungroupable() {
    // D50X: no ICD10 rule for D; no procedure.
    assert_eq!(episode_hrg(None, Some("D50X"), 0), UNGROUPED_HRG);
    assert_eq!(episode_hrg(Some("A011"), Some("D50X"), 0), UNGROUPED_HRG);
    assert_eq!(episode_hrg(None, None, 0), UNGROUPED_HRG);
    // A year that was not loaded has no grouper tables.
    let rd = refdata();
    let r = elective("B1", Some("W371"), "I10X", 0, 2);
    let a = apc_mut(&mut r.clone()).clone();
    assert_eq!(
        TableGrouper::new(&rd).episode_hrg(&r, &a, "2022-23"),
        UNGROUPED_HRG
    );
}

#[test]
fn op_procedure_grouping() {
    let rd = refdata();
    let g = TableGrouper::new(&rd);
    let with = |p: Option<&str>| {
        let mut r = op("B1");
        op_mut(&mut r).primary_procedure = p.map(str::to_string);
        let o = op_mut(&mut r).clone();
        g.op_procedure_hrg(&r, &o)
    };
    assert_eq!(with(Some("Q551")).as_deref(), Some("MA01Z"));
    assert_eq!(with(Some("W901")).as_deref(), Some("HN30Z"));
    assert_eq!(with(Some("W371")), None); // APC rules are not OP rules
    assert_eq!(with(None), None);
}

// ----- APC pricing -----

#[test]
fn elective_spell_price() {
    // W371, 0 secondary → HN12C; EL £5,500 = 550_000; LoS 2 ≤ EL trim 3 → no excess.
    // 550_000 × 1.045678 = 575_122.9 → 575_123.
    let x = one(elective("B1", Some("W371"), "I10X", 0, 2));
    assert_eq!(x.hrg.as_deref(), Some("HN12C"));
    assert_eq!(x.spell_hrg.as_deref(), Some("HN12C"));
    assert_eq!(x.pod, Some(Pod::El));
    assert_priced(&x, "2024-25");
    assert_eq!(money(&x), (550_000, 0, 0, RRV_2024, 575_123));
}

#[test]
fn day_case_price() {
    // Class 2, same day: HN12C DC £4,000 = 400_000 × 1.045678 = 418_271.2 → 418_271.
    let x = one(spell("B1", "11", "2", Some("W371"), "I10X", 0, 0));
    assert_eq!(x.pod, Some(Pod::Dc));
    assert_priced(&x, "2024-25");
    assert_eq!(money(&x), (400_000, 0, 0, RRV_2024, 418_271));
}

#[test]
fn blank_dc_and_el_fall_back_to_combined() {
    // HN12B: DC "-" and EL "-" → combined £6,000 = 600_000 × 1.045678 = 627_406.8 → 627_407.
    for class in ["1", "2"] {
        let x = one(spell("B1", "12", class, Some("W371"), "I10X", 1, 0));
        assert_eq!(x.spell_hrg.as_deref(), Some("HN12B"));
        assert_eq!(
            money(&x),
            (600_000, 0, 0, RRV_2024, 627_407),
            "class {class}"
        );
    }
    // HN20Z: DC £2,000 present, EL blank → combined £3,000.
    // DC: 200_000 × 1.045678 = 209_135.6 → 209_136; EL: 300_000 × 1.045678 = 313_703.4 → 313_703.
    let x = one(spell("B1", "11", "2", Some("W381"), "I10X", 0, 0));
    assert_eq!(money(&x), (200_000, 0, 0, RRV_2024, 209_136));
    let x = one(spell("B1", "11", "1", Some("W381"), "I10X", 0, 0));
    assert_eq!(money(&x), (300_000, 0, 0, RRV_2024, 313_703));
}

#[test]
fn non_elective_price() {
    // Method 21, I21X + 1 secondary → EB10B NEL £3,600.00 = 360_000; LoS 5 (> 1, no SSEM),
    // NEL trim 10 → no excess. 360_000 × 1.045678 = 376_444.08 → 376_444.
    let x = one(emergency("B1", None, "I21X", 1, 5));
    assert_eq!(x.pod, Some(Pod::Nel));
    assert_eq!(x.spell_hrg.as_deref(), Some("EB10B"));
    assert_priced(&x, "2024-25");
    assert_eq!(money(&x), (360_000, 0, 0, RRV_2024, 376_444));
}

#[test]
fn short_stay_emergency_applies() {
    // EB10B, LoS 0 or 1, age 53, SSEM Yes → SSEM £1,100.00 = 110_000 × 1.045678
    // = 115_024.58 → 115_025.
    for los in [0, 1] {
        let x = one(emergency("B1", None, "I21X", 1, los));
        assert_eq!(money(&x), (110_000, 0, 0, RRV_2024, 115_025), "LoS {los}");
    }
    // LoS 2: full NEL price 376_444 (above).
    let x = one(emergency("B1", None, "I21X", 1, 2));
    assert_eq!(money(&x), (360_000, 0, 0, RRV_2024, 376_444));
}

#[test]
fn short_stay_emergency_is_for_emergency_admissions_only() {
    // Every emergency method gets SSEM 115_025 (EB10B, LoS 1, age 53).
    for m in ["21", "22", "23", "24", "25", "28", "2A", "2B", "2C", "2D"] {
        let x = one(spell("B1", m, "1", None, "I21X", 1, 1));
        assert_eq!(x.pod, Some(Pod::Nel), "{m}");
        assert_eq!(money(&x), (110_000, 0, 0, RRV_2024, 115_025), "{m}");
    }
    // Maternity (31, 32) and other non-elective (81-83) admissions are NEL but not emergencies:
    // the full NEL price 360_000 × 1.045678 → 376_444.
    for m in ["31", "32", "81", "82", "83"] {
        let x = one(spell("B1", m, "1", None, "I21X", 1, 1));
        assert_eq!(x.pod, Some(Pod::Nel), "{m}");
        assert_eq!(money(&x), (360_000, 0, 0, RRV_2024, 376_444), "{m}");
    }
}

#[test]
fn short_stay_emergency_age_19_on_the_admission_date() {
    // Admitted 2024-05-01. Born 2005-05-01: 19 that day → SSEM 115_025.
    let mut r = emergency("B1", None, "I21X", 1, 1);
    r.common.date_of_birth = Some(d(2005, 5, 1));
    assert_eq!(one(r).price, 115_025);
    // Born 2005-05-02: 18 → full NEL 376_444.
    let mut r = emergency("B1", None, "I21X", 1, 1);
    r.common.date_of_birth = Some(d(2005, 5, 2));
    assert_eq!(one(r).price, 376_444);
    // No date of birth: age unknown → no SSEM.
    let mut r = emergency("B1", None, "I21X", 1, 1);
    r.common.date_of_birth = None;
    assert_eq!(one(r).price, 376_444);
}

#[test]
fn short_stay_emergency_uses_age_at_admission_not_at_last_episode() {
    // Born 2005-05-02; admitted 2024-05-01 (18), episode 2 starts 2024-05-02 (19), discharged that
    // day: spell LoS 1, but 18 at admission → no SSEM. EB10B (episode 2, I21X + 1) NEL 376_444.
    let mut e1 = episode("B-A1", "S12", 1, d(2024, 5, 1), d(2024, 5, 2));
    let mut e2 = episode("B-A2", "S12", 2, d(2024, 5, 2), d(2024, 5, 2));
    for e in [&mut e1, &mut e2] {
        e.common.date_of_birth = Some(d(2005, 5, 2));
        let a = apc_mut(e);
        a.admission_method = Some("21".into());
        a.primary_diagnosis = Some("I21X".into());
        a.secondary_diagnoses = vec!["E119".into()];
    }
    apc_mut(&mut e2).discharge_date = Some(d(2024, 5, 2));
    let out = run(vec![e1, e2]);
    assert_eq!(out[1].derived.age_at_activity, Some(19));
    assert_eq!(out[0].derived.age_at_activity, Some(18));
    assert_eq!(money(&out[1].derived), (360_000, 0, 0, RRV_2024, 376_444));
}

#[test]
fn short_stay_emergency_needs_applicable_yes_and_a_price() {
    // EB20Z (I259): SSEM applicable No (price £800 ignored). NEL £2,000 = 200_000, LoS 1:
    // 200_000 × 1.045678 = 209_135.6 → 209_136.
    let x = one(emergency("B1", None, "I259", 0, 1));
    assert_eq!(x.spell_hrg.as_deref(), Some("EB20Z"));
    assert_eq!(money(&x), (200_000, 0, 0, RRV_2024, 209_136));
    // HN20Z (W381): applicable Yes but the SSEM price is blank → NEL £3,500 = 350_000, LoS 0:
    // 350_000 × 1.045678 = 365_987.3 → 365_987.
    let x = one(emergency("B1", Some("W381"), "I10X", 0, 0));
    assert_eq!(money(&x), (350_000, 0, 0, RRV_2024, 365_987));
    // Not for elective spells: HN12C EL (SSEM Yes) LoS 0 → EL 575_123.
    let x = one(elective("B1", Some("W371"), "I10X", 0, 0));
    assert_eq!(money(&x), (550_000, 0, 0, RRV_2024, 575_123));
}

#[test]
fn excess_bed_days_elective() {
    // HN12C EL trim 3, LoS 7: 4 days × £250 = 100_000. (550_000 + 100_000) = 650_000 × 1.045678
    // = 679_690.7 → 679_691.
    let x = one(elective("B1", Some("W371"), "I10X", 0, 7));
    assert_eq!(money(&x), (550_000, 4, 100_000, RRV_2024, 679_691));
    // LoS 3 = trim: no excess.
    let x = one(elective("B1", Some("W371"), "I10X", 0, 3));
    assert_eq!(money(&x), (550_000, 0, 0, RRV_2024, 575_123));
}

#[test]
fn excess_bed_days_day_case_uses_the_el_trim_point() {
    // HN12C DC £4,000, EL trim 3 (NEL trim 6 not used), LoS 4: 1 day × 25_000.
    // 425_000 × 1.045678 = 444_413.15 → 444_413.
    let x = one(spell("B1", "11", "2", Some("W371"), "I10X", 0, 4));
    assert_eq!(money(&x), (400_000, 1, 25_000, RRV_2024, 444_413));
}

#[test]
fn excess_bed_days_non_elective() {
    // EB10A (I21X + 3): NEL £4,500.50 = 450_050, trim 12, LoS 15: 3 × £275.25 = 82_575.
    // 532_625 × 1.045678 = 556_954.24475 → 556_954.
    let x = one(emergency("B1", None, "I21X", 3, 15));
    assert_eq!(x.spell_hrg.as_deref(), Some("EB10A"));
    assert_eq!(money(&x), (450_050, 3, 82_575, RRV_2024, 556_954));
}

#[test]
fn short_stay_emergency_and_excess_together() {
    // EB99Z (I10X) NEL trim 0, LoS 1, SSEM Yes £500.01 → base 50_001; excess 1 − 0 = 1 × £100
    // = 10_000. 60_001 × 1.045678 = 62_741.725678 → 62_742.
    let x = one(emergency("B1", None, "I10X", 0, 1));
    assert_eq!(money(&x), (50_001, 1, 10_000, RRV_2024, 62_742));
}

#[test]
fn blank_trim_or_per_day_means_no_excess_payment() {
    // HN99Z (W901) NEL £1,200, NEL trim blank: LoS 30 → no excess.
    // 120_000 × 1.045678 = 125_481.36 → 125_481.
    let x = one(emergency("B1", Some("W901"), "I10X", 0, 30));
    assert_eq!(money(&x), (120_000, 0, 0, RRV_2024, 125_481));
    // HN99Z EL £1,100, EL trim 2, per-day blank: LoS 10 → 8 days at 0.
    // 110_000 × 1.045678 = 115_024.58 → 115_025.
    let x = one(elective("B1", Some("W901"), "I10X", 0, 10));
    assert_eq!(money(&x), (110_000, 8, 0, RRV_2024, 115_025));
}

#[test]
fn blank_national_price_is_excluded_with_reason() {
    // EB30Z (R074) NEL "-".
    let x = one(emergency("B1", None, "R074", 0, 3));
    assert_excluded(&x, "no national price for HRG EB30Z NEL");
    assert_eq!(x.spell_hrg.as_deref(), Some("EB30Z"));
    // Priced rows keep the year and MFF even when excluded for a blank price.
    assert_eq!(x.tariff_year.as_deref(), Some("2024-25"));
    assert_eq!(x.mff, RRV_2024);
    // EB99Z (I10X) has no EL, DC or combined price.
    let x = one(elective("B1", None, "I10X", 0, 2));
    assert_excluded(&x, "no national price for HRG EB99Z EL");
    // WD99Z (Z000) has no row at all.
    let x = one(elective("B1", None, "Z000", 0, 2));
    assert_excluded(&x, "no national price for HRG WD99Z EL");
    // EB10C has a NEL price but no DC price.
    let x = one(spell("B1", "11", "2", None, "I21X", 0, 0));
    assert_excluded(&x, "no national price for HRG EB10C DC");
}

#[test]
fn regular_day_and_night_admissions_have_no_national_price() {
    let x = one(spell("B1", "11", "3", Some("W371"), "I10X", 0, 0));
    assert_eq!(x.pod, Some(Pod::Rda));
    assert_excluded(&x, "no national price for HRG HN12C RDA");
    let x = one(spell("B1", "11", "4", Some("W371"), "I10X", 0, 1));
    assert_eq!(x.pod, Some(Pod::Rna));
    assert_excluded(&x, "no national price for HRG HN12C RNA");
}

#[test]
fn ungroupable_spell_is_excluded() {
    // W06 (I10 is not padded) → UZ01Z → "ungroupable".
    let x = one(elective("B1", None, "I10", 0, 2));
    assert!(x.warnings.contains(Rule::Icd10Malformed));
    assert_eq!(x.hrg.as_deref(), Some(UNGROUPED_HRG));
    assert_eq!(x.spell_hrg.as_deref(), Some(UNGROUPED_HRG));
    assert_excluded(&x, "ungroupable");
    // W07 in a secondary procedure also stops grouping, even with a good primary procedure.
    let mut r = elective("B1", Some("W371"), "I10X", 0, 2);
    apc_mut(&mut r).secondary_procedures = vec!["Y03".into()];
    let x = one(r);
    assert_eq!(x.hrg.as_deref(), Some(UNGROUPED_HRG));
    assert_excluded(&x, "ungroupable");
    // No grouping rule at all (D50X).
    let x = one(elective("B1", None, "D50X", 0, 2));
    assert_excluded(&x, "ungroupable");
}

#[test]
fn implausible_date_of_birth_is_excluded() {
    let mut r = elective("B1", Some("W371"), "I10X", 0, 2);
    r.common.date_of_birth = Some(d(1879, 12, 31));
    let x = one(r);
    assert!(x.warnings.contains(Rule::DateOfBirthImplausible));
    assert_excluded(&x, "date of birth implausible");
    // Ungroupable is checked first.
    let mut r = elective("B1", None, "I10", 0, 2);
    r.common.date_of_birth = Some(d(1879, 12, 31));
    assert_excluded(&one(r), "ungroupable");
}

#[test]
fn mff_rounds_half_even_both_ways() {
    // RX1 1.000005: (base + excess) × 5 / 1_000_000 ends in exactly half a penny when the amount is
    // an odd multiple of 100_000.
    // HN20Z EL blank → combined £3,000: 300_000 × 1.000005 = 300_001.5 → 300_002 (up to even).
    let mut r = elective("B1", Some("W381"), "I10X", 0, 2);
    r.common.provider_code = "RX1".into();
    let x = one(r);
    assert_eq!(money(&x), (300_000, 0, 0, 1_000_005, 300_002));
    // HN12C EL LoS 17: 14 days × 25_000 = 350_000; 550_000 + 350_000 = 900_000 × 1.000005
    // = 900_004.5 → 900_004 (down to even).
    let mut r = elective("B1", Some("W371"), "I10X", 0, 17);
    r.common.provider_code = "RX1".into();
    let x = one(r);
    assert_eq!(money(&x), (550_000, 14, 350_000, 1_000_005, 900_004));
}

#[test]
fn provider_absent_from_mff_sheet_is_one() {
    // 8HA03 is not on the MFF sheet: 550_000 × 1.000000 = 550_000.
    let mut r = elective("B1", Some("W371"), "I10X", 0, 2);
    r.common.provider_code = "8HA03".into();
    let x = one(r);
    assert_eq!(money(&x), (550_000, 0, 0, 1_000_000, 550_000));
    // RX1 is absent in 2023-24 (discharged 2024-03-31): HN12C EL £5,000 × 1.0 = 500_000.
    let mut r = elective("B1", Some("W371"), "I10X", 0, 2);
    r.common.provider_code = "RX1".into();
    stay(&mut r, d(2024, 3, 29), Some(d(2024, 3, 31)));
    let x = one(r);
    assert_priced(&x, "2023-24");
    assert_eq!(money(&x), (500_000, 0, 0, 1_000_000, 500_000));
}

#[test]
fn tariff_year_is_the_discharge_dates() {
    // Discharged 2024-03-31 (2023-24): HN12C EL £5,000, trim 3, LoS 3 → 500_000 × 1.04 = 520_000.
    let mut r = elective("B1", Some("W371"), "I10X", 0, 0);
    stay(&mut r, d(2024, 3, 28), Some(d(2024, 3, 31)));
    let x = one(r);
    assert_priced(&x, "2023-24");
    assert_eq!(money(&x), (500_000, 0, 0, RRV_2023, 520_000));
    // Admitted in March, discharged 2024-04-02 (2024-25): HN12C EL £5,500, LoS 5 − trim 3 = 2 days
    // × £250 = 50_000. 600_000 × 1.045678 = 627_406.8 → 627_407.
    let mut r = elective("B1", Some("W371"), "I10X", 0, 0);
    stay(&mut r, d(2024, 3, 28), Some(d(2024, 4, 2)));
    let x = one(r);
    assert_priced(&x, "2024-25");
    assert_eq!(money(&x), (550_000, 2, 50_000, RRV_2024, 627_407));
    // HN20Z exists only in 2024-25: a spell starting in 2023-24 is still priced from the 2024-25
    // sheet. EL → combined £3,000, LoS 5 − EL trim 2 = 3 × £200 = 60_000.
    // 360_000 × 1.045678 = 376_444.08 → 376_444.
    let mut r = elective("B1", Some("W381"), "I10X", 0, 0);
    stay(&mut r, d(2024, 3, 28), Some(d(2024, 4, 2)));
    let x = one(r);
    assert_priced(&x, "2024-25");
    assert_eq!(money(&x), (300_000, 3, 60_000, RRV_2024, 376_444));
}

#[test]
fn no_tariff_for_the_year_is_excluded() {
    // Admitted 2025-03-30, discharged 2025-04-02 → 2025-26: no folder, so neither prices nor
    // grouper tables (a spell is grouped with its discharge year's): UZ01Z, and the reason says
    // which year is missing, not "ungroupable".
    let mut r = elective("B1", Some("W371"), "I10X", 0, 0);
    stay(&mut r, d(2025, 3, 30), Some(d(2025, 4, 2)));
    let x = one(r);
    assert_eq!(x.hrg.as_deref(), Some(UNGROUPED_HRG));
    assert_eq!(x.spell_hrg, None);
    assert_excluded(&x, "no tariff for 2025-26");
    assert_eq!(x.tariff_year, None);
    assert_eq!(x.mff, MFF_ONE);
}

// ----- legally restricted -----

#[test]
fn restricted_episode_restricts_its_whole_spell() {
    // Episode 1 has N970 (FERTILISATION list); episode 2 is unremarkable.
    let mut e1 = episode("B-R1", "S13", 1, d(2024, 5, 1), d(2024, 5, 2));
    let mut e2 = episode("B-R2", "S13", 2, d(2024, 5, 2), d(2024, 5, 3));
    apc_mut(&mut e1).primary_diagnosis = Some("N970".into());
    apc_mut(&mut e2).primary_procedure = Some("W371".into());
    apc_mut(&mut e2).discharge_date = Some(d(2024, 5, 3));
    // Another spell of the same patient is not restricted.
    let other = apc("B-R3");
    let out = run(vec![e1, e2, other]);
    for x in &out[..2] {
        assert!(x.derived.restricted);
        let c = &x.record.common;
        assert_eq!(c.nhs_number, None);
        assert_eq!(c.local_patient_id, None);
        assert_eq!(c.date_of_birth, None);
        assert_eq!(c.postcode, None);
        let Detail::Apc(a) = &x.record.detail else {
            panic!("APC")
        };
        assert_eq!(a.hospital_provider_spell_number, None);
        // Derived before removal: age (born 1970-06-15) 53, the spell was built and priced.
        assert_eq!(x.derived.age_at_activity, Some(53));
        assert_eq!(x.derived.spell_los, Some(2));
        // Other items stay.
        assert_eq!(c.provider_code, "RRV");
        assert_eq!(c.gp_practice_code.as_deref(), Some("A81001"));
    }
    // Spell HRG: MC10Z (EL £2,300) vs HN12C (EL £5,500) → HN12C; 575_123 as priced above.
    assert_eq!(out[1].derived.price, 575_123);
    assert!(!out[2].derived.restricted);
    assert_eq!(
        out[2].record.common.nhs_number.as_deref(),
        Some("9434765919")
    );
}

#[test]
fn restricted_by_secondary_codes_and_procedures_in_every_dataset() {
    // Secondary diagnosis F640 (GENDER_RECOGNITION).
    let mut r = elective("B1", None, "I10X", 0, 2);
    apc_mut(&mut r).secondary_diagnoses = vec!["E119".into(), "F640".into()];
    assert!(one(r).restricted);
    // OPCS4 Q131 (FERTILISATION) on an outpatient attendance.
    let mut r = op("B1");
    op_mut(&mut r).primary_procedure = Some("Q131".into());
    let out = run(vec![r]);
    assert!(out[0].derived.restricted);
    assert_eq!(out[0].record.common.nhs_number, None);
    // The prefix must match the code type: N97 as an OPCS4 code is not restricted (only ICD10).
    let mut r = elective("B1", Some("N971"), "I10X", 0, 2);
    apc_mut(&mut r).secondary_procedures = vec![];
    assert!(!one(r).restricted);
    // F64 is a prefix, not a substring: I10X with nothing else is not restricted.
    assert!(!one(apc("B1")).restricted);
}

// ----- outpatients -----

#[test]
fn op_first_attendance_by_treatment_function() {
    // TFC 110 first £180.00 = 18_000 × 1.045678 = 18_822.204 → 18_822.
    let x = one(op("B1"));
    assert_eq!(x.pod, Some(Pod::Opfa));
    assert_eq!(x.hrg.as_deref(), Some(OP_FIRST_HRG));
    assert_priced(&x, "2024-25");
    assert_eq!(money(&x), (18_000, 0, 0, RRV_2024, 18_822));
    // First telephone attendance (3) is a first attendance too.
    let mut r = op("B1");
    op_mut(&mut r).first_attendance = Some("3".into());
    assert_eq!(one(r).price, 18_822);
}

#[test]
fn op_follow_up_by_treatment_function() {
    // TFC 110 follow-up £95.50 = 9_550 × 1.045678 = 9_986.2249 → 9_986.
    for f in ["2", "4"] {
        let mut r = op("B1");
        op_mut(&mut r).first_attendance = Some(f.into());
        let x = one(r);
        assert_eq!(x.pod, Some(Pod::Opfu));
        assert_eq!(x.hrg.as_deref(), Some(OP_FOLLOW_UP_HRG));
        assert_eq!(money(&x), (9_550, 0, 0, RRV_2024, 9_986), "{f}");
    }
    // Attended late but seen (6) counts as attended.
    let mut r = op("B1");
    op_mut(&mut r).attended_or_did_not_attend = Some("6".into());
    op_mut(&mut r).first_attendance = Some("2".into());
    assert_eq!(one(r).price, 9_986);
}

#[test]
fn op_only_first_attendance_1_to_4_is_priced() {
    // 5 is a referral-to-treatment clock stop: stored, never priced, even with a priced procedure
    // (Q551 → MA01Z would be 15_685).
    for proc in [None, Some("Q551")] {
        let mut r = op("B1");
        op_mut(&mut r).first_attendance = Some("5".into());
        op_mut(&mut r).primary_procedure = proc.map(str::to_string);
        let x = one(r);
        assert_excluded(&x, "first attendance '5' is not priced (only 1-4)");
        assert_eq!(x.price, 0);
    }
    let mut r = op("B1");
    op_mut(&mut r).first_attendance = Some("9".into());
    assert_excluded(&one(r), "first attendance '9' is not priced (only 1-4)");
}

#[test]
fn op_procedure_attendance() {
    // Q551 → MA01Z, outpatient procedure £150 = 15_000 × 1.045678 = 15_685.17 → 15_685.
    let mut r = op("B1");
    op_mut(&mut r).primary_procedure = Some("Q551".into());
    let x = one(r);
    assert_eq!(x.pod, Some(Pod::Opproc));
    assert_eq!(x.hrg.as_deref(), Some("MA01Z"));
    assert_eq!(money(&x), (15_000, 0, 0, RRV_2024, 15_685));
    // W901 → HN30Z, which has no outpatient procedure price: priced by TFC (first, 18_822).
    let mut r = op("B1");
    op_mut(&mut r).primary_procedure = Some("W901".into());
    let x = one(r);
    assert_eq!(x.pod, Some(Pod::Opfa));
    assert_eq!(x.hrg.as_deref(), Some(OP_FIRST_HRG));
    assert_eq!(x.price, 18_822);
    // A011 maps to nothing: by TFC.
    let mut r = op("B1");
    op_mut(&mut r).primary_procedure = Some("A011".into());
    assert_eq!(one(r).price, 18_822);
    // 2023-24 (appointment 2024-03-31): MA01Z £140 = 14_000 × 1.04 = 14_560.
    let mut r = op("B1");
    op_mut(&mut r).primary_procedure = Some("Q551".into());
    op_mut(&mut r).appointment_date = Some(d(2024, 3, 31));
    let x = one(r);
    assert_priced(&x, "2023-24");
    assert_eq!(money(&x), (14_000, 0, 0, RRV_2023, 14_560));
}

#[test]
fn op_tariff_year_by_appointment_date() {
    // 2024-03-31: TFC 110 first £170 × 1.04 = 17_000 × 1.04 = 17_680.
    let mut r = op("B1");
    op_mut(&mut r).appointment_date = Some(d(2024, 3, 31));
    let x = one(r);
    assert_priced(&x, "2023-24");
    assert_eq!(money(&x), (17_000, 0, 0, RRV_2023, 17_680));
    // 2024-04-01: 2024-25, 18_822.
    let mut r = op("B1");
    op_mut(&mut r).appointment_date = Some(d(2024, 4, 1));
    assert_eq!(one(r).price, 18_822);
    // 2025-04-01: no folder.
    let mut r = op("B1");
    op_mut(&mut r).appointment_date = Some(d(2025, 4, 1));
    assert_excluded(&one(r), "no tariff for 2025-26");
}

#[test]
fn op_exclusions() {
    // Not attended (DNA 3, patient cancelled 2, late not seen 7).
    for a in ["2", "3", "4", "7"] {
        let mut r = op("B1");
        op_mut(&mut r).attended_or_did_not_attend = Some(a.into());
        let x = one(r);
        assert_excluded(&x, "not attended");
        assert_eq!(x.tariff_year.as_deref(), Some("2024-25"));
    }
    // TFC 100 follow-up "-".
    let mut r = op("B1");
    op_mut(&mut r).treatment_function_code = Some("100".into());
    op_mut(&mut r).first_attendance = Some("2".into());
    assert_excluded(&one(r), "no national price for TFC 100");
    // TFC 100 first £160 is priced: 16_000 × 1.045678 = 16_730.848 → 16_731.
    let mut r = op("B1");
    op_mut(&mut r).treatment_function_code = Some("100".into());
    assert_eq!(one(r).price, 16_731);
    // Unknown TFC.
    let mut r = op("B1");
    op_mut(&mut r).treatment_function_code = Some("999".into());
    assert_excluded(&one(r), "no national price for TFC 999");
    // Malformed procedure (W07) → UZ01Z, ungroupable, even with a mapping prefix.
    let mut r = op("B1");
    op_mut(&mut r).primary_procedure = Some("Q55".into());
    let x = one(r);
    assert_eq!(x.hrg.as_deref(), Some(UNGROUPED_HRG));
    assert_excluded(&x, "ungroupable");
    // Malformed diagnosis (W06) likewise.
    let mut r = op("B1");
    op_mut(&mut r).primary_diagnosis = Some("R07".into());
    assert_excluded(&one(r), "ungroupable");
    // W03.
    let mut r = op("B1");
    r.common.date_of_birth = Some(d(2030, 1, 1));
    assert_excluded(&one(r), "date of birth implausible");
}

// ----- emergency care -----

#[test]
fn ec_by_department_type_and_categories() {
    // No investigations or treatments: (0, 0) → VB11Z, type 01 £100 = 10_000 × 1.045678
    // = 10_456.78 → 10_457.
    let x = one(ec("B1"));
    assert_eq!(x.pod, Some(Pod::Ae));
    assert_eq!(x.hrg.as_deref(), Some("VB11Z"));
    assert_priced(&x, "2024-25");
    assert_eq!(money(&x), (10_000, 0, 0, RRV_2024, 10_457));
    // Highest categories: investigations 1003 (3), 1001 (1), 9999 (unknown, ignored) → 3;
    // treatments 2002 (2), 2004 (4) → 4. (3, 4) → VB01Z type 01/02 £450 = 45_000 × 1.045678
    // = 47_055.51 → 47_056.
    let mut r = ec("B1");
    ec_mut(&mut r).investigations = vec!["1003".into(), "1001".into(), "9999".into()];
    ec_mut(&mut r).treatments = vec!["2002".into(), "2004".into()];
    let x = one(r);
    assert_eq!(x.hrg.as_deref(), Some("VB01Z"));
    assert_eq!(money(&x), (45_000, 0, 0, RRV_2024, 47_056));
    // Type 02 with (0, 1) → VB10Z £120.50 = 12_050 × 1.045678 = 12_600.4199 → 12_600.
    let mut r = ec("B1");
    ec_mut(&mut r).department_type = Some("02".into());
    ec_mut(&mut r).treatments = vec!["2001".into()];
    let x = one(r);
    assert_eq!(x.hrg.as_deref(), Some("VB10Z"));
    assert_eq!(money(&x), (12_050, 0, 0, RRV_2024, 12_600));
    // Type 03 with (1, 2) → VB07Z types 3 and 4 £90 = 9_000 × 1.045678 = 9_411.102 → 9_411.
    let mut r = ec("B1");
    ec_mut(&mut r).department_type = Some("03".into());
    ec_mut(&mut r).investigations = vec!["1001".into()];
    ec_mut(&mut r).treatments = vec!["2002".into()];
    let x = one(r);
    assert_eq!(x.hrg.as_deref(), Some("VB07Z"));
    assert_eq!(money(&x), (9_000, 0, 0, RRV_2024, 9_411));
    // Type 03, (0, 1) → VB10Z £60.25 = 6_025 × 1.045678 = 6_300.20995 → 6_300.
    let mut r = ec("B1");
    ec_mut(&mut r).department_type = Some("03".into());
    ec_mut(&mut r).treatments = vec!["2001".into()];
    assert_eq!(money(&one(r)), (6_025, 0, 0, RRV_2024, 6_300));
    // Only unknown codes: (0, 0).
    let mut r = ec("B1");
    ec_mut(&mut r).investigations = vec!["424".into()];
    ec_mut(&mut r).treatments = vec!["1003".into()]; // an investigation code as a treatment
    assert_eq!(one(r).hrg.as_deref(), Some("VB11Z"));
}

#[test]
fn ec_exclusions() {
    // Type 04 walk-in centre: grouped, local price.
    let mut r = ec("B1");
    ec_mut(&mut r).department_type = Some("04".into());
    let x = one(r);
    assert_eq!(x.hrg.as_deref(), Some("VB11Z"));
    assert_excluded(&x, "walk-in centre: local price");
    // Other department types → VB99Z, ungroupable.
    for t in [Some("05"), Some("1"), None] {
        let mut r = ec("B1");
        ec_mut(&mut r).department_type = t.map(str::to_string);
        let x = one(r);
        assert_eq!(x.hrg.as_deref(), Some(EC_UNGROUPABLE_HRG), "{t:?}");
        assert_excluded(&x, "ungroupable");
    }
    // VB11Z in a type 03 department: "-" → no national price.
    let mut r = ec("B1");
    ec_mut(&mut r).department_type = Some("03".into());
    assert_excluded(&one(r), "no national price for HRG VB11Z AE");
    // W03.
    let mut r = ec("B1");
    r.common.date_of_birth = Some(d(1800, 1, 1));
    assert_excluded(&one(r), "date of birth implausible");
}

#[test]
fn ec_mff_and_tariff_year_by_arrival_date() {
    // Arrival 2024-03-31 23:00 → 2023-24: VB11Z £100 × 1.04 = 10_400.
    let mut r = ec("B1");
    ec_mut(&mut r).arrival_datetime = d(2024, 3, 31).and_hms_opt(23, 0, 0);
    let x = one(r);
    assert_priced(&x, "2023-24");
    assert_eq!(money(&x), (10_000, 0, 0, RRV_2023, 10_400));
    // RX1 2024-25: VB01Z 45_000 × 1.000005 = 45_000.225 → 45_000.
    let mut r = ec("B1");
    r.common.provider_code = "RX1".into();
    ec_mut(&mut r).investigations = vec!["1003".into()];
    ec_mut(&mut r).treatments = vec!["2004".into()];
    assert_eq!(money(&one(r)), (45_000, 0, 0, 1_000_005, 45_000));
}

// ----- deletions -----

#[test]
fn deletions_are_not_derived() {
    for ds in Dataset::ALL {
        let out = run_with(&net_change(ds), vec![deletion(ds, "B1")]);
        assert_eq!(
            out[0].derived,
            Derived {
                mff: MFF_ONE,
                ..Derived::default()
            }
        );
    }
}

#[test]
fn common_fixture_is_clean() {
    // Sanity: the builders' common items raise no warning (so tests above see only their own).
    let rd = refdata();
    let mut r = op("B1");
    r.common = common("B1");
    assert!(record_warnings(&net_change(Dataset::Op), &r, &rd).is_empty());
}

#[test]
fn op_not_attended_with_a_priced_procedure() {
    // The procedure still names the HRG and POD; the price is 0 because nobody was seen.
    let mut r = op("B1");
    op_mut(&mut r).primary_procedure = Some("Q551".into());
    op_mut(&mut r).attended_or_did_not_attend = Some("3".into());
    let x = one(r);
    assert_eq!(x.hrg.as_deref(), Some("MA01Z"));
    assert_eq!(x.pod, Some(Pod::Opproc));
    assert_excluded(&x, "not attended");
}

/// A stand-in for a licensed grouper: every episode is `HN12C`, every OP procedure `MA01Z`, every
/// EC attendance `VB05Z`.
struct FixedGrouper;

impl Grouper for FixedGrouper {
    fn episode_hrg(&self, _: &Record, _: &ApcItems, _: &str) -> String {
        "HN12C".into()
    }
    fn op_procedure_hrg(&self, _: &Record, _: &OpItems) -> Option<String> {
        Some("MA01Z".into())
    }
    fn ec_hrg(&self, _: &Record, _: &EcItems) -> String {
        "VB05Z".into()
    }
}

#[test]
fn another_grouper_can_replace_the_table_grouper() {
    let rd = refdata();
    let records = vec![
        // I10X would group to EB99Z (no EL price) with the table grouper.
        elective("B1", None, "I10X", 0, 2),
        op("B2"),
        ec("B3"),
    ];
    let meta = net_change(Dataset::Apc);
    let warnings = records
        .iter()
        .map(|r| record_warnings(&meta, r, &rd))
        .collect();
    let out = derive_submission_with(&FixedGrouper, records, warnings, &rd);
    // HN12C EL 550_000 → 575_123 (575_122.9).
    assert_eq!(out[0].derived.hrg.as_deref(), Some("HN12C"));
    assert_eq!(out[0].derived.price, 575_123);
    // MA01Z outpatient procedure £150 → 15_685 (15_685.17).
    assert_eq!(out[1].derived.pod, Some(Pod::Opproc));
    assert_eq!(out[1].derived.price, 15_685);
    // VB05Z type 01 £250 = 25_000 × 1.045678 = 26_141.95 → 26_142.
    assert_eq!(out[2].derived.hrg.as_deref(), Some("VB05Z"));
    assert_eq!(out[2].derived.price, 26_142);
    // A W06 record is still UZ01Z whatever the grouper says.
    let bad = elective("B4", None, "I10", 0, 2);
    let w = vec![record_warnings(&meta, &bad, &rd)];
    let out = derive_submission_with(&FixedGrouper, vec![bad], w, &rd);
    assert_eq!(out[0].derived.hrg.as_deref(), Some(UNGROUPED_HRG));
    assert_excluded(&out[0].derived, "ungroupable");
}

#[test]
fn exclusion_precedence() {
    // No tariff beats ungroupable (APC: discharged 2025-04-02 → 2025-26, and W06).
    let mut r = elective("B1", None, "I10", 0, 0);
    stay(&mut r, d(2025, 3, 30), Some(d(2025, 4, 2)));
    assert_excluded(&one(r), "no tariff for 2025-26");
    // Ungroupable beats W03 (OP), W03 beats not attended (OP).
    let mut r = op("B1");
    op_mut(&mut r).primary_procedure = Some("Q55".into());
    r.common.date_of_birth = Some(d(1870, 1, 1));
    assert_excluded(&one(r), "ungroupable");
    let mut r = op("B1");
    op_mut(&mut r).attended_or_did_not_attend = Some("3".into());
    r.common.date_of_birth = Some(d(1870, 1, 1));
    assert_excluded(&one(r), "date of birth implausible");
    // No tariff beats not attended.
    let mut r = op("B1");
    op_mut(&mut r).attended_or_did_not_attend = Some("3".into());
    op_mut(&mut r).appointment_date = Some(d(2022, 4, 1));
    assert_excluded(&one(r), "no tariff for 2022-23");
    // W03 beats the walk-in centre (EC).
    let mut r = ec("B1");
    ec_mut(&mut r).department_type = Some("04".into());
    r.common.date_of_birth = Some(d(1870, 1, 1));
    assert_excluded(&one(r), "date of birth implausible");
    // An unfinished spell has no tariff year or spell HRG yet: "spell unfinished" even with W03
    // or W06.
    let mut r = elective("B1", None, "I10", 0, 0);
    stay(&mut r, d(2024, 5, 1), None);
    r.common.date_of_birth = Some(d(1870, 1, 1));
    assert_excluded(&one(r), "spell unfinished");
}

// ----- spells over stored episodes and live versions -----

#[test]
fn a_stored_unfinished_spell_is_finished_by_a_later_episode() {
    let rd = refdata();
    let meta = net_change(Dataset::Apc);
    // Submission 1: episodes 1 and 2, no discharge yet.
    let mut e1 = episode("B-X1", "S20", 1, d(2024, 5, 1), d(2024, 5, 2));
    apc_mut(&mut e1).primary_procedure = Some("W371".into());
    let e2 = episode("B-X2", "S20", 2, d(2024, 5, 2), d(2024, 5, 3));
    let first = run(vec![e1, e2]);
    for x in &first {
        assert_excluded(&x.derived, "spell unfinished");
    }
    // Submission 2: episode 3 with the discharge; episodes 1-2 come from the store.
    let mut e3 = episode("B-X3", "S20", 3, d(2024, 5, 3), d(2024, 5, 6));
    apc_mut(&mut e3).discharge_date = Some(d(2024, 5, 6));
    let stored: Vec<StoredEpisode> = first
        .iter()
        .map(|x| StoredEpisode {
            record: x.record.clone(),
            derived: x.derived.clone(),
        })
        .collect();
    let w = vec![record_warnings(&meta, &e3, &rd)];
    let out = derive(&TableGrouper::new(&rd), &rd, vec![e3], w, &[true], stored);
    // Both stored episodes change (spell HRG, no longer excluded) and come back re-derived.
    assert_eq!(out.rederived.len(), 2);
    let last = &out.records[0].derived;
    // HN12C (from episode 1, the highest base) EL: admitted 05-01, discharged 05-06, LoS 5.
    assert_eq!(last.spell_hrg.as_deref(), Some("HN12C"));
    assert!(!last.pbr_excluded);
    assert!(last.price > 0);
    for (_, x) in &out.rederived {
        assert_eq!(x.derived.spell_hrg.as_deref(), Some("HN12C"));
        assert!(!x.derived.pbr_excluded);
        assert_eq!(x.derived.price, 0);
        assert_eq!(x.derived.spell_los, Some(5));
    }
    // The same three episodes in one submission price the same.
    let mut e3 = episode("B-X3", "S20", 3, d(2024, 5, 3), d(2024, 5, 6));
    apc_mut(&mut e3).discharge_date = Some(d(2024, 5, 6));
    let mut e1 = episode("B-X1", "S20", 1, d(2024, 5, 1), d(2024, 5, 2));
    apc_mut(&mut e1).primary_procedure = Some("W371".into());
    let e2 = episode("B-X2", "S20", 2, d(2024, 5, 2), d(2024, 5, 3));
    let together = run(vec![e1, e2, e3]);
    assert_eq!(together[2].derived, *last);
}

#[test]
fn only_the_live_version_of_an_episode_joins_its_spell() {
    // Episode 1 twice: the later version (procedure W371) is live; the earlier (no procedure,
    // and a discharge date) must not make the spell look finished or lend it its HRG.
    let mut old = episode("B-V1", "S21", 1, d(2024, 5, 1), d(2024, 5, 2));
    apc_mut(&mut old).discharge_date = Some(d(2024, 5, 2));
    let mut new = episode("B-V1", "S21", 1, d(2024, 5, 1), d(2024, 5, 2));
    new.common.cds_applicable_datetime = Some(dt(2024, 6, 2, 9));
    old.common.cds_applicable_datetime = Some(dt(2024, 6, 1, 9));
    apc_mut(&mut new).primary_procedure = Some("W371".into());
    let e2 = episode("B-V2", "S21", 2, d(2024, 5, 2), d(2024, 5, 3));
    let out = run(vec![new, old, e2]);
    assert_excluded(&out[0].derived, "spell unfinished");
    assert_excluded(&out[2].derived, "spell unfinished");
}

#[test]
fn live_versions_follow_the_protocol() {
    let mut a1 = op("B1");
    a1.common.cds_applicable_datetime = Some(dt(2024, 6, 2, 9));
    let mut a2 = op("B1");
    a2.common.cds_applicable_datetime = Some(dt(2024, 6, 1, 9));
    a2.ordinal = 2;
    let mut b = op("B2");
    b.ordinal = 3;
    let records = vec![a1, a2, b];
    // Net Change: the later applicable time wins, whatever the file order.
    assert_eq!(
        live_versions(&records, &Protocol::NetChange, &|_| None),
        vec![true, false, true]
    );
    // A stored version as late as B2's makes B2 stale.
    let stored = |id: &str| (id == "B2").then(|| dt(2030, 1, 1, 0));
    assert_eq!(
        live_versions(&records, &Protocol::NetChange, &stored),
        vec![true, false, false]
    );
}

#[test]
fn an_ungrouped_episode_gives_its_spell_nothing() {
    // Episode 1 has a malformed diagnosis (UZ01Z); episode 2 groups to EB99Z, which has no EL
    // price: the spell HRG is EB99Z (not UZ01Z), so the reason is the missing price.
    let mut e1 = episode("B-U1", "S22", 1, d(2024, 5, 1), d(2024, 5, 2));
    apc_mut(&mut e1).primary_diagnosis = Some("I10".into());
    let mut e2 = episode("B-U2", "S22", 2, d(2024, 5, 2), d(2024, 5, 3));
    apc_mut(&mut e2).primary_diagnosis = Some("I10X".into());
    apc_mut(&mut e2).discharge_date = Some(d(2024, 5, 3));
    let out = run(vec![e1, e2]);
    assert_eq!(out[0].derived.hrg.as_deref(), Some(UNGROUPED_HRG));
    assert_eq!(out[1].derived.spell_hrg.as_deref(), Some("EB99Z"));
    assert!(out[1].derived.pbr_excluded);
    assert_ne!(
        out[1].derived.exclusion_reason.as_deref(),
        Some("ungroupable")
    );
}
