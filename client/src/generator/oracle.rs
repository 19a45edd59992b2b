//! The pricing ORACLE: an implementation of `docs/rules.md` §3-§6 written for the generator,
//! independently of the node, so that the node's totals can be checked against it to the penny.

use super::model::{Apc, Dataset, Detail, Rec, financial_year};
use super::refdata::{MffMicros, Pence, RefData, Year};
use chrono::{Datelike, NaiveDate, NaiveDateTime};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Warning bits (`W01` = bit 0 ... `W09` = bit 8).
pub mod warn {
    pub const NHS_NUMBER: u16 = 1 << 0;
    pub const NHS_STATUS: u16 = 1 << 1;
    pub const DATE_OF_BIRTH: u16 = 1 << 2;
    pub const GP_PRACTICE: u16 = 1 << 3;
    pub const COMMISSIONER: u16 = 1 << 4;
    pub const ICD10: u16 = 1 << 5;
    pub const OPCS4: u16 = 1 << 6;
    pub const PATIENT_DATA_IN_KEY: u16 = 1 << 7;
    pub const OUTSIDE_PERIOD: u16 = 1 << 8;
}

/// HRG of ungroupable activity.
pub const UNGROUPABLE: &str = "UZ01Z";

/// What the oracle derives for one record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Priced {
    pub hrg: String,
    pub spell_hrg: String,
    pub pod: String,
    pub base_price: Pence,
    pub excess_bed_days: i64,
    pub excess_payment: Pence,
    pub mff: Option<MffMicros>,
    pub price: Pence,
    pub excluded: bool,
    pub reason: String,
    pub warnings: u16,
    /// Whole years on the activity date (`None` without a date of birth, or born after it).
    pub age: Option<u16>,
    /// APC: episode end (or discharge) minus episode start, in days.
    pub episode_los: Option<i64>,
    /// APC: discharge minus admission, in days, on every episode of a finished spell.
    pub spell_los: Option<i64>,
    /// The financial year whose prices applied (empty when none was loaded).
    pub tariff_year: String,
    /// A legally restricted code on the record or, for APC, on any episode of its spell.
    pub restricted: bool,
}

/// Modulus 11 check of an NHS number (spaces removed; all-same-digit numbers invalid).
pub fn nhs_number_valid(raw: &str) -> bool {
    let digits: Vec<u32> = raw
        .chars()
        .filter(|c| *c != ' ')
        .map(|c| c.to_digit(10))
        .collect::<Option<Vec<u32>>>()
        .unwrap_or_default();
    if digits.len() != 10 || digits.iter().all(|d| *d == digits[0]) {
        return false;
    }
    let sum: u32 = digits[..9]
        .iter()
        .zip((2..=10).rev())
        .map(|(d, w)| d * w)
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        c => c,
    };
    check == digits[9]
}

/// The check digit that makes nine digits a valid NHS number, if any.
pub fn nhs_check_digit(nine: &[u32; 9]) -> Option<u32> {
    let sum: u32 = nine.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        c => Some(c),
    }
}

/// `[A-Z][0-9][0-9X][0-9X]([0-9X])?(A|D)?`.
pub fn icd10_well_formed(code: &str) -> bool {
    let b = code.as_bytes();
    if !(4..=6).contains(&b.len()) {
        return false;
    }
    let d_or_x = |c: u8| c.is_ascii_digit() || c == b'X';
    if !(b[0].is_ascii_uppercase() && b[1].is_ascii_digit() && d_or_x(b[2]) && d_or_x(b[3])) {
        return false;
    }
    match &b[4..] {
        [] => true,
        [x] => d_or_x(*x) || *x == b'A' || *x == b'D',
        [x, y] => d_or_x(*x) && (*y == b'A' || *y == b'D'),
        _ => false,
    }
}

/// `[A-Z][0-9]{3}`, letter I excluded (O and U are chapters: overflow, diagnostic imaging).
pub fn opcs4_well_formed(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 4
        && b[0].is_ascii_uppercase()
        && b[0] != b'I'
        && b[1..].iter().all(u8::is_ascii_digit)
}

/// Whole years completed on `on`.
pub fn age_on(dob: NaiveDate, on: NaiveDate) -> i32 {
    let mut years = on.year() - dob.year();
    if (on.month(), on.day()) < (dob.month(), dob.day()) {
        years -= 1;
    }
    years
}

/// `round_half_even(amount × mff / 1 000 000)` in i128.
pub fn apply_mff(amount: Pence, mff: MffMicros) -> Pence {
    let n = i128::from(amount) * i128::from(mff);
    let d: i128 = 1_000_000;
    let (q, r) = (n.div_euclid(d), n.rem_euclid(d));
    let q = if 2 * r > d || (2 * r == d && q % 2 != 0) {
        q + 1
    } else {
        q
    };
    i64::try_from(q).unwrap_or(i64::MAX)
}

fn longest_prefix<'a, V>(map: &'a BTreeMap<String, V>, code: &str) -> Option<&'a V> {
    (1..=code.len())
        .rev()
        .filter_map(|n| code.get(..n))
        .find_map(|p| map.get(p))
}

/// The per-record warnings of an upsert (§3). `period` is a Bulk Replacement's report period.
pub fn warnings(rd: &RefData, rec: &Rec, period: Option<(NaiveDate, NaiveDate)>) -> u16 {
    let c = &rec.common;
    if !c.upsert {
        return 0;
    }
    let mut w = 0;
    if !nhs_number_valid(&c.nhs_number) {
        w |= warn::NHS_NUMBER;
    }
    if c.nhs_number_status != "01" {
        w |= warn::NHS_STATUS;
    }
    let activity = rec.activity_date();
    if let Some(dob) = c.date_of_birth {
        let floor = NaiveDate::from_ymd_opt(1880, 1, 1).unwrap_or(NaiveDate::MIN);
        if dob < floor || dob > activity {
            w |= warn::DATE_OF_BIRTH;
        }
    }
    if !c.gp_practice.is_empty() && !rd.is_gp(&c.gp_practice) {
        w |= warn::GP_PRACTICE;
    }
    if !rd.commissioner_codes.contains(&c.commissioner) {
        w |= warn::COMMISSIONER;
    }
    let (diags, procs): (Vec<&str>, Vec<&str>) = match &rec.detail {
        Detail::Apc(a) => (
            std::iter::once(a.primary_diagnosis.as_str())
                .chain(a.secondary_diagnoses.iter().map(String::as_str))
                .collect(),
            std::iter::once(a.primary_procedure.as_str())
                .chain(a.secondary_procedures.iter().map(String::as_str))
                .collect(),
        ),
        Detail::Op(o) => (
            vec![o.primary_diagnosis.as_str()],
            vec![o.primary_procedure.as_str()],
        ),
        _ => (vec![], vec![]),
    };
    if diags.iter().any(|d| !d.is_empty() && !icd10_well_formed(d)) {
        w |= warn::ICD10;
    }
    if procs.iter().any(|p| !p.is_empty() && !opcs4_well_formed(p)) {
        w |= warn::OPCS4;
    }
    let nhs: String = c.nhs_number.chars().filter(|c| *c != ' ').collect();
    if nhs.len() == 10 && nhs.bytes().all(|b| b.is_ascii_digit()) {
        let spell = match &rec.detail {
            Detail::Apc(a) => a.spell.as_str(),
            _ => "",
        };
        if c.cds_unique_id.contains(&nhs) || spell.contains(&nhs) {
            w |= warn::PATIENT_DATA_IN_KEY;
        }
    }
    if let Some((start, end)) = period
        && (activity < start || activity > end)
    {
        w |= warn::OUTSIDE_PERIOD;
    }
    w
}

/// The APC episode HRG from the grouper of `year`.
pub fn group_episode(year: &Year, a: &Apc) -> String {
    let rule = (!a.primary_procedure.is_empty())
        .then(|| longest_prefix(&year.apc_procedure_rules, &a.primary_procedure))
        .flatten()
        .or_else(|| {
            (!a.primary_diagnosis.is_empty())
                .then(|| longest_prefix(&year.apc_diagnosis_rules, &a.primary_diagnosis))
                .flatten()
        });
    match rule {
        None => UNGROUPABLE.to_string(),
        Some(r) if !r.cc_split => r.hrg.clone(),
        Some(r) => {
            let band = match a.secondary_diagnoses.len() {
                0 => 'C',
                1 | 2 => 'B',
                _ => 'A',
            };
            format!("{}{band}", r.hrg)
        }
    }
}

/// The APC POD of a spell's first episode.
pub fn apc_pod(a: &Apc) -> &'static str {
    match a.patient_classification.as_str() {
        "3" => return "RDA",
        "4" => return "RNA",
        _ => {}
    }
    let m = a.admission_method.as_str();
    let nel = m.starts_with('2') || m.starts_with('3') || m.starts_with('8');
    if nel {
        return "NEL";
    }
    match (m, a.patient_classification.as_str()) {
        ("11" | "12" | "13", "2") => "DC",
        ("11" | "12" | "13", "1" | "5") => "EL",
        _ => "",
    }
}

fn apc_base(year: &Year, hrg: &str, pod: &str) -> Option<Pence> {
    let t = year.apc.get(hrg)?;
    match pod {
        "DC" => t.day_case.or(t.combined),
        "EL" => t.elective.or(t.combined),
        "NEL" => t.non_elective,
        _ => None,
    }
}

fn exclude(p: &mut Priced, reason: String) {
    p.excluded = true;
    p.reason = reason;
    p.price = 0;
    p.base_price = 0;
    p.excess_bed_days = 0;
    p.excess_payment = 0;
}

/// Prices every record of one accepted submission applied to an empty store (deletions get a
/// default [`Priced`]; an upsert that a later version in the file supersedes gets what it would
/// have had if it were alone, since it is never stored). See [`Store::submit`] for the general case.
pub fn price_submission(
    rd: &RefData,
    dataset: Dataset,
    recs: &[Rec],
    period: Option<(NaiveDate, NaiveDate)>,
) -> Vec<Priced> {
    let sender = recs.first().map_or("", |r| r.common.provider.as_str());
    let bulk = period.map(|(period_start, period_end)| BulkEnvelope {
        period_start,
        period_end,
        extract: NaiveDateTime::MIN,
    });
    Store::default()
        .submit(rd, dataset, sender, bulk.as_ref(), recs)
        .priced
}

/// What an OP or EC record is priced at (APC episodes are priced by spell, in the store).
fn price_record(rd: &RefData, r: &Rec, warnings: u16) -> Priced {
    let mut p = Priced {
        warnings,
        age: age_at_activity(r),
        restricted: has_restricted_code(rd, r),
        ..Priced::default()
    };
    match &r.detail {
        Detail::Op(o) => price_op(rd, &r.common.provider, r.common.date_of_birth, o, &mut p),
        Detail::Ec(e) => price_ec(rd, &r.common.provider, e, &mut p),
        Detail::Apc(_) | Detail::Delete(_) => {}
    }
    p
}

fn price_op(
    rd: &RefData,
    provider: &str,
    _dob: Option<NaiveDate>,
    o: &super::model::Op,
    p: &mut Priced,
) {
    let first = matches!(o.first_attendance.as_str(), "1" | "3");
    p.pod = if first { "OPFA" } else { "OPFU" }.to_string();
    p.hrg = if first { "WF01B" } else { "WF01A" }.to_string();
    let fy = financial_year(o.appointment_date);
    let Some(year) = rd.years.get(&fy) else {
        exclude(p, format!("no tariff for {fy}"));
        return;
    };
    p.mff = Some(year.mff_of(provider));
    p.tariff_year = fy.clone();
    if p.warnings & (warn::ICD10 | warn::OPCS4) != 0 {
        p.hrg = UNGROUPABLE.into();
        exclude(p, "ungroupable".into());
        return;
    }
    let procedure = (!o.primary_procedure.is_empty())
        .then(|| longest_prefix(&year.op_procedure_rules, &o.primary_procedure))
        .flatten()
        .and_then(|r| {
            year.apc
                .get(&r.hrg)
                .and_then(|t| t.op_procedure)
                .map(|price| (r.hrg.clone(), price))
        });
    let base = match procedure {
        Some((hrg, price)) => {
            p.pod = "OPPROC".into();
            p.hrg = hrg;
            Some(price)
        }
        None => year
            .op
            .get(&o.tfc)
            .and_then(|(f, u)| if first { *f } else { *u }),
    };
    if p.warnings & warn::DATE_OF_BIRTH != 0 {
        exclude(p, "date of birth implausible".into());
    } else if !matches!(o.attended.as_str(), "5" | "6") {
        exclude(p, "not attended".into());
    } else if !matches!(o.first_attendance.as_str(), "1" | "2" | "3" | "4") {
        exclude(
            p,
            format!(
                "first attendance '{}' is not priced (only 1-4)",
                o.first_attendance
            ),
        );
    } else if let Some(base) = base {
        p.base_price = base;
        p.price = apply_mff(base, year.mff_of(provider));
    } else {
        exclude(p, format!("no national price for TFC {}", o.tfc));
    }
}

fn price_ec(rd: &RefData, provider: &str, e: &super::model::Ec, p: &mut Priced) {
    p.pod = "AE".into();
    let fy = financial_year(e.arrival.date());
    let Some(year) = rd.years.get(&fy) else {
        // No year, no grouper tables.
        p.hrg = UNGROUPABLE.into();
        exclude(p, format!("no tariff for {fy}"));
        return;
    };
    p.mff = Some(year.mff_of(provider));
    p.tariff_year = fy.clone();
    let dept = e.department_type.as_str();
    if !matches!(dept, "01" | "02" | "03" | "04") {
        p.hrg = "VB99Z".into();
        exclude(p, "ungroupable".into());
        return;
    }
    let inv = e
        .investigations
        .iter()
        .filter_map(|c| year.ec_investigations.get(c))
        .max()
        .copied()
        .unwrap_or(0);
    let tr = e
        .treatments
        .iter()
        .filter_map(|c| year.ec_treatments.get(c))
        .max()
        .copied()
        .unwrap_or(0);
    p.hrg = year
        .ec_hrg
        .get(&(inv, tr))
        .cloned()
        .unwrap_or_else(|| "VB99Z".into());
    let prices = year.ec.get(&p.hrg);
    let base = match dept {
        "01" | "02" => prices.and_then(|x| x.0),
        "03" => prices.and_then(|x| x.1),
        _ => None,
    };
    if p.warnings & warn::DATE_OF_BIRTH != 0 {
        exclude(p, "date of birth implausible".into());
    } else if dept == "04" {
        exclude(p, "walk-in centre: local price".into());
    } else if let Some(base) = base {
        p.base_price = base;
        p.price = apply_mff(base, year.mff_of(provider));
    } else {
        exclude(p, format!("no national price for HRG {} AE", p.hrg));
    }
}

/// Whole years on the record's activity date, if its date of birth is not after it.
fn age_at_activity(r: &Rec) -> Option<u16> {
    if !r.common.upsert {
        return None;
    }
    let on = r.activity_date();
    let dob = r.common.date_of_birth.filter(|dob| *dob <= on)?;
    u16::try_from(age_on(dob, on)).ok()
}

/// Whether any diagnosis or procedure of the record starts with a restricted prefix.
fn has_restricted_code(rd: &RefData, r: &Rec) -> bool {
    let (diags, procs): (Vec<&String>, Vec<&String>) = match &r.detail {
        Detail::Apc(a) => (
            std::iter::once(&a.primary_diagnosis)
                .chain(&a.secondary_diagnoses)
                .collect(),
            std::iter::once(&a.primary_procedure)
                .chain(&a.secondary_procedures)
                .collect(),
        ),
        Detail::Op(o) => (vec![&o.primary_diagnosis], vec![&o.primary_procedure]),
        Detail::Ec(_) | Detail::Delete(_) => (vec![], vec![]),
    };
    diags
        .iter()
        .any(|c| !c.is_empty() && rd.is_restricted(true, c))
        || procs
            .iter()
            .any(|c| !c.is_empty() && rd.is_restricted(false, c))
}

/// Prices one spell from its live episodes (`eps`: record, warnings, and whether it is already
/// stored restricted (identifiers once removed stay removed); any order); the result is in the
/// order of `eps`.
fn price_spell(rd: &RefData, eps: &[(&Rec, u16, bool)]) -> Vec<Priced> {
    let apc = |i: usize| -> &Apc {
        match &eps[i].0.detail {
            Detail::Apc(a) => a,
            _ => unreachable!("only APC episodes are grouped into spells"),
        }
    };
    let restricted = eps
        .iter()
        .any(|(r, _, sticky)| *sticky || has_restricted_code(rd, r));
    let mut out: Vec<Priced> = eps
        .iter()
        .map(|(r, w, _)| {
            let a = match &r.detail {
                Detail::Apc(a) => Some(a),
                _ => None,
            };
            Priced {
                warnings: *w,
                age: age_at_activity(r),
                episode_los: a.and_then(|a| {
                    a.episode_end
                        .or(a.discharge_date)
                        .map(|end| (end - a.episode_start).num_days())
                }),
                restricted,
                ..Priced::default()
            }
        })
        .collect();
    // Episode order: episode number, then id.
    let mut order: Vec<usize> = (0..eps.len()).collect();
    order.sort_by(|&x, &y| {
        (apc(x).episode_number, &eps[x].0.common.cds_unique_id)
            .cmp(&(apc(y).episode_number, &eps[y].0.common.cds_unique_id))
    });
    let (Some(&first), Some(&last)) = (order.first(), order.last()) else {
        return out;
    };
    let provider = eps[first].0.common.provider.as_str();
    let pod = apc_pod(apc(first));
    let ungroupable = |w: u16| w & (warn::ICD10 | warn::OPCS4) != 0;
    for &i in &order {
        out[i].pod = pod.to_string();
    }
    let Some(discharge) = apc(last).discharge_date else {
        // Unfinished: each episode grouped with the tables of its own year.
        for &i in &order {
            let fy = financial_year(apc(i).episode_start);
            out[i].hrg = match rd.years.get(&fy) {
                Some(y) if !ungroupable(out[i].warnings) => group_episode(y, apc(i)),
                _ => UNGROUPABLE.into(),
            };
            exclude(&mut out[i], "spell unfinished".into());
        }
        return out;
    };
    let spell_los = (discharge - apc(first).admission_date).num_days();
    for &i in &order {
        out[i].spell_los = Some(spell_los);
    }
    // The grouper tables and the prices of a spell come from its discharge year.
    let fy = financial_year(discharge);
    let Some(year) = rd.years.get(&fy) else {
        for &i in &order {
            out[i].hrg = UNGROUPABLE.into();
        }
        exclude(&mut out[last], format!("no tariff for {fy}"));
        return out;
    };
    for &i in &order {
        out[i].hrg = if ungroupable(out[i].warnings) {
            UNGROUPABLE.into()
        } else {
            group_episode(year, apc(i))
        };
    }
    let mff = year.mff_of(provider);
    // Spell HRG: highest base price for the POD among grouped episodes; ties to the lowest
    // episode; every episode UZ01Z: UZ01Z.
    let mut best: Option<(usize, Pence)> = None;
    for &i in &order {
        if out[i].hrg == UNGROUPABLE {
            continue;
        }
        let p = apc_base(year, &out[i].hrg, pod).unwrap_or(0);
        if best.is_none_or(|(_, b)| p > b) {
            best = Some((i, p));
        }
    }
    let spell_hrg = best.map_or_else(|| UNGROUPABLE.to_string(), |(i, _)| out[i].hrg.clone());
    for &i in &order {
        out[i].spell_hrg = spell_hrg.clone();
        out[i].mff = Some(mff);
        out[i].tariff_year = fy.clone();
    }
    let a = apc(first);
    let dob_bad = order
        .iter()
        .any(|&i| out[i].warnings & warn::DATE_OF_BIRTH != 0);
    let p = &mut out[last];
    if spell_hrg == UNGROUPABLE {
        exclude(p, "ungroupable".into());
        return out;
    }
    if dob_bad {
        exclude(p, "date of birth implausible".into());
        return out;
    }
    let Some(mut base) = apc_base(year, &spell_hrg, pod) else {
        exclude(p, format!("no national price for HRG {spell_hrg} {pod}"));
        return out;
    };
    let Some(t) = year.apc.get(&spell_hrg) else {
        return out;
    };
    let adult = eps[first]
        .0
        .common
        .date_of_birth
        .is_some_and(|dob| age_on(dob, a.admission_date) >= 19);
    let emergency = matches!(
        a.admission_method.as_str(),
        "21" | "22" | "23" | "24" | "25" | "28" | "2A" | "2B" | "2C" | "2D"
    );
    if pod == "NEL"
        && emergency
        && spell_los <= 1
        && adult
        && t.ssem_applies
        && let Some(ssem) = t.ssem
    {
        base = ssem;
    }
    let trim = if pod == "NEL" { t.nel_trim } else { t.el_trim };
    let days = trim.map_or(0, |trim| (spell_los - trim).max(0));
    let payment = days * t.per_day.unwrap_or(0);
    p.base_price = base;
    p.excess_bed_days = days;
    p.excess_payment = payment;
    p.price = apply_mff(base + payment, mff);
    out
}

/// Counts of one applied submission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub inserted: u64,
    pub replaced: u64,
    pub deleted: u64,
    pub stale: u64,
    pub bulk_deleted: u64,
}

#[derive(Debug, Clone)]
struct Stored {
    applicable: NaiveDateTime,
    live: bool,
    dataset: Dataset,
    sender: u32,
    activity: NaiveDate,
    provider: u32,
    commissioner: u32,
    priced: Priced,
    /// A live APC episode: its record and spell, to price the spell again when it changes.
    episode: Option<Box<(Rec, SpellKey)>>,
}

/// A spell: (provider, spell number).
type SpellKey = (String, String);

/// One stored version of a record: what the store holds after each change, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The change that stored it (1 for the first applied submission).
    pub version: u64,
    pub cds_unique_id: String,
    pub priced: Priced,
}

/// What [`Store::submit`] did with one accepted submission.
#[derive(Debug, Clone, Default)]
pub struct Submitted {
    pub counts: Counts,
    /// Per record of the submission: what it was stored with (after its spell was priced);
    /// a default [`Priced`] (with its warnings) for deletions and for upserts not stored (stale).
    pub priced: Vec<Priced>,
    /// Live episodes of earlier submissions whose spell this one changed: each stored again.
    pub rederived: u64,
}

/// Columns of the live-records file ([`Store::write_live`]).
pub const LIVE_HEADER: [&str; 13] = [
    "dataset",
    "cds_unique_id",
    "provider",
    "commissioner",
    "activity_date",
    "hrg",
    "spell_hrg",
    "pod",
    "price",
    "base_price",
    "excess_payment",
    "excess_bed_days",
    "excluded",
];

/// The simulated store: what is live after each submission.
#[derive(Debug, Default)]
pub struct Store {
    ids: HashMap<String, usize>,
    rows: Vec<Stored>,
    /// Live rows by (dataset, sender, activity date, row) for Bulk Replacement.
    live_index: BTreeSet<(Dataset, u32, NaiveDate, usize)>,
    names: Vec<String>,
    name_ids: HashMap<String, u32>,
    /// Applied bulk extracts: (sender, dataset, start, end) → latest extract.
    bulks: BTreeMap<(String, Dataset, NaiveDate, NaiveDate), NaiveDateTime>,
    /// Live records and price total by (sender, dataset) and provider, kept in step with every
    /// change.
    by_sender: HashMap<(u32, Dataset), BTreeMap<u32, ProviderTotals>>,
    /// Live APC episodes (row indexes) by spell.
    spells: BTreeMap<SpellKey, BTreeSet<usize>>,
    /// Spells whose episodes changed in the change being applied.
    touched: BTreeSet<SpellKey>,
    /// Applied changes so far.
    version: u64,
    /// Every stored version, when kept ([`Store::with_history`]).
    history: Option<Vec<Version>>,
}

impl ProviderTotals {
    fn add(&mut self, price: Pence, sign: i64) {
        self.live_records = self.live_records.wrapping_add_signed(sign);
        self.total_price_pence += sign * price;
    }
}

/// A Bulk Replacement envelope, as the store needs it.
#[derive(Debug, Clone)]
pub struct BulkEnvelope {
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub extract: NaiveDateTime,
}

impl Store {
    fn name(&mut self, s: &str) -> u32 {
        if let Some(i) = self.name_ids.get(s) {
            return *i;
        }
        let i = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(s.to_string());
        self.name_ids.insert(s.to_string(), i);
        i
    }

    /// R07: whether a bulk extract is not newer than one already applied.
    pub fn bulk_not_newer(&self, sender: &str, dataset: Dataset, b: &BulkEnvelope) -> bool {
        self.bulks
            .get(&(sender.to_string(), dataset, b.period_start, b.period_end))
            .is_some_and(|prev| b.extract <= *prev)
    }

    /// The live totals of `sender`'s records of `dataset` now, by provider (providers with no
    /// live records left out).
    pub fn sender_totals(
        &self,
        sender: &str,
        dataset: Dataset,
    ) -> BTreeMap<String, ProviderTotals> {
        self.name_ids
            .get(sender)
            .and_then(|i| self.by_sender.get(&(*i, dataset)))
            .map(|m| {
                m.iter()
                    .filter(|(_, t)| t.live_records > 0)
                    .map(|(p, t)| (self.names[*p as usize].clone(), *t))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn count(&mut self, sender: u32, dataset: Dataset, provider: u32, price: Pence, sign: i64) {
        self.by_sender
            .entry((sender, dataset))
            .or_default()
            .entry(provider)
            .or_default()
            .add(price, sign);
    }

    /// Takes a row out of its spell (it is no longer live).
    fn unlink(&mut self, i: usize) {
        if let Some(ep) = self.rows[i].episode.take() {
            let key = ep.1;
            if let Some(set) = self.spells.get_mut(&key) {
                set.remove(&i);
                if set.is_empty() {
                    self.spells.remove(&key);
                }
            }
            self.touched.insert(key);
        }
    }

    fn put(&mut self, id: &str, row: Stored) -> (bool, usize) {
        let dataset = row.dataset;
        if row.live {
            self.count(row.sender, dataset, row.provider, row.priced.price, 1);
        }
        match self.ids.get(id).copied() {
            Some(i) => {
                let old = &self.rows[i];
                let was_live = old.live;
                let key = (old.dataset, old.sender, old.activity, i);
                let (s, p, price) = (old.sender, old.provider, old.priced.price);
                if was_live {
                    self.count(s, key.0, p, price, -1);
                    self.live_index.remove(&key);
                }
                self.unlink(i);
                if row.live {
                    self.live_index
                        .insert((dataset, row.sender, row.activity, i));
                }
                self.rows[i] = row;
                self.link(i);
                (was_live, i)
            }
            None => {
                let i = self.rows.len();
                if row.live {
                    self.live_index
                        .insert((dataset, row.sender, row.activity, i));
                }
                self.rows.push(row);
                self.ids.insert(id.to_string(), i);
                self.link(i);
                (false, i)
            }
        }
    }

    /// Puts a live episode into its spell.
    fn link(&mut self, i: usize) {
        if let Some(ep) = &self.rows[i].episode {
            let key = ep.1.clone();
            self.spells.entry(key.clone()).or_default().insert(i);
            self.touched.insert(key);
        }
    }

    /// A store that keeps every stored version ([`Store::history`]).
    pub fn with_history() -> Store {
        Store {
            history: Some(Vec::new()),
            ..Store::default()
        }
    }

    /// Every version stored so far, in order, if kept.
    pub fn history(&self) -> Option<&[Version]> {
        self.history.as_deref()
    }

    /// Validates nothing (the generator knows its rejections), then prices and applies an
    /// accepted submission: warnings, OP/EC prices, the Net Change or Bulk Replacement, and then
    /// every spell whose live episodes changed priced again over all of them (`docs/rules.md` §4).
    pub fn submit(
        &mut self,
        rd: &RefData,
        dataset: Dataset,
        sender: &str,
        bulk: Option<&BulkEnvelope>,
        recs: &[Rec],
    ) -> Submitted {
        let period = bulk.map(|b| (b.period_start, b.period_end));
        let priced: Vec<Priced> = recs
            .iter()
            .map(|r| price_record(rd, r, warnings(rd, r, period)))
            .collect();
        self.version += 1;
        self.touched.clear();
        let (counts, mut written) = self.apply(dataset, sender, bulk, recs, priced.clone());
        // A row written twice (two versions in one file) or deleted again holds only what the
        // last of them left: the earlier version was never stored.
        let last: HashMap<usize, usize> = written.iter().map(|&(k, row)| (row, k)).collect();
        written.retain(|&(k, row)| last.get(&row) == Some(&k) && self.rows[row].live);
        let mine: BTreeSet<usize> = written.iter().map(|(_, row)| *row).collect();
        let mut rederived = 0;
        let mut again = Vec::new();
        for key in std::mem::take(&mut self.touched) {
            let Some(rows) = self.spells.get(&key) else {
                continue;
            };
            let rows: Vec<usize> = rows.iter().copied().collect();
            // A row stored before this submission keeps a restriction it was stored with.
            let eps: Vec<(&Rec, u16, bool)> = rows
                .iter()
                .filter_map(|&i| {
                    let r = &self.rows[i];
                    let sticky = !mine.contains(&i) && r.priced.restricted;
                    r.episode
                        .as_ref()
                        .map(|e| (&e.0, r.priced.warnings, sticky))
                })
                .collect();
            let prices = price_spell(rd, &eps);
            for (i, p) in rows.into_iter().zip(prices) {
                if self.rows[i].priced != p {
                    if !mine.contains(&i) {
                        rederived += 1;
                        again.push(i);
                    }
                    self.reprice(i, p);
                }
            }
        }
        let mut out = priced;
        for (k, row) in &written {
            out[*k] = self.rows[*row].priced.clone();
        }
        if let Some(h) = &mut self.history {
            for (k, _) in &written {
                h.push(Version {
                    version: self.version,
                    cds_unique_id: recs[*k].common.cds_unique_id.clone(),
                    priced: out[*k].clone(),
                });
            }
            let ids: HashMap<usize, &String> = self.ids.iter().map(|(id, i)| (*i, id)).collect();
            for i in again {
                h.push(Version {
                    version: self.version,
                    cds_unique_id: ids.get(&i).map(|s| (*s).clone()).unwrap_or_default(),
                    priced: self.rows[i].priced.clone(),
                });
            }
        }
        Submitted {
            counts,
            priced: out,
            rederived,
        }
    }

    /// Replaces the derived fields of a live row, keeping the totals in step.
    fn reprice(&mut self, i: usize, p: Priced) {
        let r = &self.rows[i];
        let (s, d, prov, old) = (r.sender, r.dataset, r.provider, r.priced.price);
        if r.live {
            self.count(s, d, prov, old, -1);
            self.count(s, d, prov, p.price, 1);
        }
        self.rows[i].priced = p;
    }

    /// Applies an accepted submission (records and their prices): its counts and the rows it
    /// wrote (record index, row).
    fn apply(
        &mut self,
        dataset: Dataset,
        sender: &str,
        bulk: Option<&BulkEnvelope>,
        recs: &[Rec],
        priced: Vec<Priced>,
    ) -> (Counts, Vec<(usize, usize)>) {
        let mut counts = Counts::default();
        let mut written = Vec::new();
        let sender_id = self.name(sender);
        let mut items: Vec<(usize, Priced)> = priced.into_iter().enumerate().collect();
        if let Some(b) = bulk {
            self.bulks.insert(
                (sender.to_string(), dataset, b.period_start, b.period_end),
                b.extract,
            );
            let victims: Vec<usize> = self
                .live_index
                .range(
                    (dataset, sender_id, b.period_start, 0)
                        ..=(dataset, sender_id, b.period_end, usize::MAX),
                )
                .map(|k| k.3)
                .collect();
            for i in victims {
                let r = &mut self.rows[i];
                r.live = false;
                let key = (r.dataset, r.sender, r.activity, i);
                let (p, price) = (r.provider, r.priced.price);
                self.count(key.1, key.0, p, price, -1);
                self.live_index.remove(&key);
                self.unlink(i);
                counts.bulk_deleted += 1;
            }
        }
        // Net Change and Bulk Replacement alike: the later (applicable, position) wins.
        items.sort_by_key(|(i, _)| (recs[*i].common.applicable, *i));
        for (i, priced) in items {
            let r = &recs[i];
            let c = &r.common;
            if bulk.is_none()
                && let Some(&k) = self.ids.get(&c.cds_unique_id)
                && self.rows[k].applicable >= c.applicable
            {
                counts.stale += 1;
                continue;
            }
            let provider = self.name(&c.provider);
            let commissioner = self.name(&c.commissioner);
            let episode = match &r.detail {
                Detail::Apc(a) if c.upsert => {
                    Some(Box::new((r.clone(), (c.provider.clone(), a.spell.clone()))))
                }
                _ => None,
            };
            let row = Stored {
                applicable: c.applicable,
                live: c.upsert,
                dataset,
                sender: sender_id,
                activity: r.activity_date(),
                provider,
                commissioner,
                priced,
                episode,
            };
            let (was_live, row) = self.put(&c.cds_unique_id, row);
            if c.upsert {
                written.push((i, row));
            }
            match (c.upsert, was_live) {
                (true, false) => counts.inserted += 1,
                (true, true) => counts.replaced += 1,
                (false, true) => counts.deleted += 1,
                (false, false) => counts.stale += 1,
            }
        }
        (counts, written)
    }

    /// Writes every live record, one CSV line each (header [`LIVE_HEADER`]), sorted by id, so
    /// that tests can compute any aggregate row by row, independently of the node.
    pub fn write_live(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        writeln!(w, "{}", LIVE_HEADER.join(","))?;
        let mut ids: Vec<(&String, &usize)> = self.ids.iter().collect();
        ids.sort();
        for (id, &i) in ids {
            let r = &self.rows[i];
            if !r.live {
                continue;
            }
            let p = &r.priced;
            writeln!(
                w,
                "{},{id},{},{},{},{},{},{},{},{},{},{},{}",
                r.dataset.name(),
                self.names[r.provider as usize],
                self.names[r.commissioner as usize],
                r.activity,
                p.hrg,
                p.spell_hrg,
                p.pod,
                p.price,
                p.base_price,
                p.excess_payment,
                p.excess_bed_days,
                p.excluded
            )?;
        }
        Ok(())
    }

    /// Every live record: id, dataset and what it is stored with, sorted by id.
    pub fn live(&self) -> Vec<(String, Dataset, Priced)> {
        let mut out: Vec<(String, Dataset, Priced)> = self
            .ids
            .iter()
            .filter(|(_, i)| self.rows[**i].live)
            .map(|(id, &i)| {
                (
                    id.clone(),
                    self.rows[i].dataset,
                    self.rows[i].priced.clone(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Totals of the live records.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for r in self.rows.iter().filter(|r| r.live) {
            let d = t.datasets.entry(r.dataset).or_default();
            d.add(&r.priced);
            let pname = self.names[r.provider as usize].clone();
            let p = t.providers.entry(pname).or_default();
            let pd = p.entry(r.dataset).or_default();
            pd.live_records += 1;
            pd.total_price_pence += r.priced.price;
        }
        t
    }
}

/// Live totals of one dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DatasetTotals {
    pub live_records: u64,
    pub total_price_pence: i64,
    pub total_base_price_pence: i64,
    pub total_excess_payment_pence: i64,
    pub total_excess_bed_days: i64,
    pub excluded_records: u64,
    pub records_with_warnings: u64,
}

impl DatasetTotals {
    fn add(&mut self, p: &Priced) {
        self.live_records += 1;
        self.total_price_pence += p.price;
        self.total_base_price_pence += p.base_price;
        self.total_excess_payment_pence += p.excess_payment;
        self.total_excess_bed_days += p.excess_bed_days;
        self.excluded_records += u64::from(p.excluded);
        self.records_with_warnings += u64::from(p.warnings != 0);
    }
}

/// Live totals of one provider in one dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProviderTotals {
    pub live_records: u64,
    pub total_price_pence: i64,
}

/// Live totals of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub datasets: BTreeMap<Dataset, DatasetTotals>,
    pub providers: BTreeMap<String, BTreeMap<Dataset, ProviderTotals>>,
}
