//! Derivations at ingest (`docs/rules.md` section 4) and the price (section 5) of every record of an
//! accepted submission.
//!
//! ```text
//!  records + warnings ─► per record: age, restricted?          (deletions: Derived::default())
//!        │
//!        ├─ APC ─► spells ─► episode LoS, HRG (UZ01Z with W06/W07), POD from the first episode
//!        │                └─ finished? spell LoS, tariff year of discharge, spell HRG = highest
//!        │                   base price (ties: lowest episode), price on the last episode
//!        ├─ OP ──► POD, HRG (procedure or WF01B/WF01A), price
//!        └─ EC ──► HRG (categories, department type), price
//!        ▼
//!  restricted spell → every episode restricted; identifiers removed last
//! ```
//!
//! Exclusions are checked in one order for every dataset: no tariff for the year, ungroupable,
//! date of birth implausible (W03), then the dataset's own (not attended, walk-in centre, blank
//! price). The first that applies is the stored reason. An unfinished APC spell comes before all of
//! them: without a discharge date it has neither a tariff year nor a spell HRG.

pub mod grouper;
pub mod spells;

pub use grouper::{
    EC_DEPARTMENT_TYPES, EC_UNGROUPABLE_HRG, Grouper, OutputGrouper, TableGrouper, configured,
};
pub use spells::{Spell, build_spells, live_versions};

#[cfg(test)]
mod tests;

use crate::model::{
    ApcItems, Derived, DerivedRecord, Detail, EcItems, MFF_ONE, OpItems, Pod, Record, Rule,
    UNGROUPED_HRG, Warnings, financial_year,
};
use crate::price::{self, Exclusion, Payment, SpellFacts};
use crate::refdata::{CodeType, RefData, TariffYear};
use crate::validate::clinical_codes;
use chrono::{Datelike, NaiveDate};

/// Admission methods of non-elective spells (emergency `2x`, maternity `3x`, other `8x`).
pub const NON_ELECTIVE_METHODS: [&str; 15] = [
    "21", "22", "23", "24", "25", "2A", "2B", "2C", "2D", "28", "31", "32", "81", "82", "83",
];
/// Admission methods of emergency admissions, the only ones short-stay emergency pricing applies
/// to (not maternity 31/32 nor other non-elective 81-83).
pub const EMERGENCY_METHODS: [&str; 10] =
    ["21", "22", "23", "24", "25", "28", "2A", "2B", "2C", "2D"];
/// `first_attendance` codes of attendances that can be priced (1/3 first, 2/4 follow-up).
pub const PRICED_FIRST_ATTENDANCE: [&str; 4] = ["1", "2", "3", "4"];
/// Admission methods of elective spells.
pub const ELECTIVE_METHODS: [&str; 3] = ["11", "12", "13"];
/// HRG of a first outpatient attendance priced by treatment function.
pub const OP_FIRST_HRG: &str = "WF01B";
/// HRG of a follow-up outpatient attendance priced by treatment function.
pub const OP_FOLLOW_UP_HRG: &str = "WF01A";
/// `attended_or_did_not_attend` values of an attendance that took place.
pub const ATTENDED: [&str; 2] = ["5", "6"];

/// An APC episode already stored, brought into the derivation of a submission because it shares
/// a spell with one of the submission's episodes (or lost one to it).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEpisode {
    /// The episode as stored (without identifiers if it was legally restricted).
    pub record: Record,
    /// What is stored with it. Its warnings and age are kept: they were derived from the
    /// envelope and identifiers of its own submission.
    pub derived: Derived,
}

/// What [`derive`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Derivation {
    /// The submission's records with their derivations, in input order.
    pub records: Vec<DerivedRecord>,
    /// Stored episodes whose derivation changed (their spell changed): the index into the
    /// `stored` argument and the episode as it must now be stored.
    pub rederived: Vec<(usize, DerivedRecord)>,
}

/// Derives and prices every record of a submission on its own (as applied to an empty store, by
/// Net Change) with the grouper `refdata` was configured with ([`configured`]).
///
/// `warnings[i]` are the warnings of `records[i]` (from [`crate::validate::record_warnings`]). The
/// result is in input order; restricted records come back without their identifiers.
pub fn derive_submission(
    records: Vec<Record>,
    warnings: Vec<Warnings>,
    refdata: &RefData,
) -> Vec<DerivedRecord> {
    let live = live_versions(&records, &crate::model::Protocol::NetChange, &|_| None);
    derive(
        configured(refdata).as_ref(),
        refdata,
        records,
        warnings,
        &live,
        Vec::new(),
    )
    .records
}

/// [`derive_submission`] with another grouper (e.g. a licensed grouper's output).
pub fn derive_submission_with(
    grouper: &dyn Grouper,
    records: Vec<Record>,
    warnings: Vec<Warnings>,
    refdata: &RefData,
) -> Vec<DerivedRecord> {
    let live = live_versions(&records, &crate::model::Protocol::NetChange, &|_| None);
    derive(grouper, refdata, records, warnings, &live, Vec::new()).records
}

/// Derives and prices the records of a submission together with the stored episodes of the spells
/// it touches.
///
/// `live[i]` says whether `records[i]` will be live once applied ([`live_versions`]): spells are
/// built from the live upserts and `stored` (the live episodes of the same spells that the
/// submission does not supersede), so a spell is always priced over every live episode of the
/// provider. A record that will not be live is derived as a spell of its own (it is not stored).
pub fn derive(
    grouper: &dyn Grouper,
    refdata: &RefData,
    records: Vec<Record>,
    warnings: Vec<Warnings>,
    live: &[bool],
    stored: Vec<StoredEpisode>,
) -> Derivation {
    debug_assert_eq!(records.len(), warnings.len(), "one warning set per record");
    debug_assert_eq!(records.len(), live.len(), "one liveness per record");
    let n = records.len();
    let mut derived: Vec<Derived> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if r.is_delete() {
                return Derived {
                    mff: MFF_ONE,
                    ..Derived::default()
                };
            }
            Derived {
                age_at_activity: r
                    .activity_date()
                    .and_then(|a| age_on(r.common.date_of_birth?, a)),
                warnings: warnings.get(i).copied().unwrap_or_default(),
                restricted: has_restricted_code(r, refdata),
                mff: MFF_ONE,
                ..Derived::default()
            }
        })
        .collect();
    let mut all = records;
    let mut before = Vec::with_capacity(stored.len());
    for s in stored {
        derived.push(Derived {
            age_at_activity: s.derived.age_at_activity,
            warnings: s.derived.warnings,
            // Identifiers removed once are gone: a restricted spell stays restricted.
            restricted: s.derived.restricted || has_restricted_code(&s.record, refdata),
            mff: MFF_ONE,
            ..Derived::default()
        });
        all.push(s.record);
        before.push(s.derived);
    }

    let mut include: Vec<bool> = live.to_vec();
    include.resize(n, false);
    include.resize(all.len(), true);
    let mut spells = build_spells(&all, &include);
    // An upsert that will not be stored still gets a derivation: its own.
    for (i, r) in all.iter().enumerate().take(n) {
        if !include[i] && !r.is_delete() && matches!(r.detail, Detail::Apc(_)) {
            spells.push(Spell {
                provider_code: r.common.provider_code.clone(),
                spell_number: None,
                episodes: vec![i],
            });
        }
    }
    for spell in &spells {
        derive_spell(grouper, refdata, &all, &mut derived, spell);
    }
    for (r, d) in all.iter().zip(derived.iter_mut()).take(n) {
        if r.is_delete() {
            continue;
        }
        match &r.detail {
            Detail::Apc(_) => {} // done by spell
            Detail::Op(o) => derive_op(grouper, refdata, r, o, d),
            Detail::Ec(e) => derive_ec(grouper, refdata, r, e, d),
        }
    }

    let mut out: Vec<DerivedRecord> = all
        .into_iter()
        .zip(derived)
        .map(|(mut record, derived)| {
            if derived.restricted {
                remove_identifiers(&mut record);
            }
            DerivedRecord { record, derived }
        })
        .collect();
    let stored_out = out.split_off(n);
    let rederived = stored_out
        .into_iter()
        .zip(before)
        .enumerate()
        .filter(|(_, (now, was))| now.derived != *was)
        .map(|(k, (now, _))| (k, now))
        .collect();
    Derivation {
        records: out,
        rederived,
    }
}

/// Whole years completed on `on` by someone born on `dob` (a birthday on `on` counts; someone born
/// on 29 February completes a year on 1 March in other years). `None` if `dob` is after `on`.
pub fn age_on(dob: NaiveDate, on: NaiveDate) -> Option<u16> {
    if dob > on {
        return None;
    }
    let mut years = on.year() - dob.year();
    if (on.month(), on.day()) < (dob.month(), dob.day()) {
        years -= 1;
    }
    u16::try_from(years).ok()
}

/// `to − from` in days (same day = 0).
pub fn days_between(from: NaiveDate, to: NaiveDate) -> i32 {
    i32::try_from((to - from).num_days()).unwrap_or(i32::MAX)
}

/// The point of delivery of an APC spell from its first episode: class 3 → `RDA`, 4 → `RNA`;
/// else a non-elective method → `NEL`; else an elective method with class 2 → `DC`, 1 or 5 → `EL`.
/// Anything else has none.
pub fn apc_pod(
    patient_classification: Option<&str>,
    admission_method: Option<&str>,
) -> Option<Pod> {
    let class = patient_classification.unwrap_or("");
    let method = admission_method.unwrap_or("");
    match class {
        "3" => return Some(Pod::Rda),
        "4" => return Some(Pod::Rna),
        _ => {}
    }
    if NON_ELECTIVE_METHODS.contains(&method) {
        return Some(Pod::Nel);
    }
    if ELECTIVE_METHODS.contains(&method) {
        return match class {
            "2" => Some(Pod::Dc),
            "1" | "5" => Some(Pod::El),
            _ => None,
        };
    }
    None
}

/// The point of delivery of an outpatient appointment priced by treatment function: first
/// attendances (`1`, `3`) → `OPFA`, others → `OPFU`.
pub fn op_pod(first_attendance: Option<&str>) -> Pod {
    match first_attendance {
        Some("1" | "3") => Pod::Opfa,
        _ => Pod::Opfu,
    }
}

/// Whether any ICD-10 or OPCS-4 code of the record starts with a legally restricted prefix.
pub fn has_restricted_code(record: &Record, refdata: &RefData) -> bool {
    let codes = clinical_codes(record);
    codes
        .diagnoses
        .iter()
        .any(|c| refdata.is_restricted(CodeType::Icd10, c))
        || codes
            .procedures
            .iter()
            .any(|c| refdata.is_restricted(CodeType::Opcs4, c))
}

/// Removes the identifiers of a legally restricted record (after everything is derived from them).
fn remove_identifiers(record: &mut Record) {
    let c = &mut record.common;
    c.nhs_number = None;
    c.local_patient_id = None;
    c.date_of_birth = None;
    c.postcode = None;
    if let Detail::Apc(a) = &mut record.detail {
        a.hospital_provider_spell_number = None;
    }
}

/// Whether the warnings stop grouping (malformed ICD-10 or OPCS-4 code).
fn is_ungroupable(w: Warnings) -> bool {
    w.contains(Rule::Icd10Malformed) || w.contains(Rule::Opcs4Malformed)
}

/// The financial year of an activity date and its tariff, if loaded.
fn tariff_of(refdata: &RefData, date: Option<NaiveDate>) -> (String, Option<&TariffYear>) {
    match date {
        Some(d) => {
            let fy = financial_year(d);
            let year = refdata.year(&fy);
            (fy, year)
        }
        None => ("(no activity date)".to_string(), None),
    }
}

/// Stores a payment, or an exclusion (price 0, nothing before MFF, the reason).
fn settle(d: &mut Derived, outcome: Result<Payment, Exclusion>) {
    match outcome {
        Ok(p) => {
            d.base_price = p.base_price;
            d.excess_bed_days = p.excess_bed_days;
            d.excess_payment = p.excess_payment;
            d.mff = p.mff;
            d.price = p.price;
        }
        Err(e) => exclude(d, &e),
    }
}

/// Flags a row excluded from PbR: price 0 with the reason.
fn exclude(d: &mut Derived, e: &Exclusion) {
    d.base_price = 0;
    d.excess_bed_days = 0;
    d.excess_payment = 0;
    d.price = 0;
    d.pbr_excluded = true;
    d.exclusion_reason = Some(e.to_string());
}

/// The APC items of a record known to be APC.
fn apc_items(r: &Record) -> Option<&ApcItems> {
    match &r.detail {
        Detail::Apc(a) => Some(a),
        _ => None,
    }
}

/// Derives and prices the episodes of one spell.
fn derive_spell(
    grouper: &dyn Grouper,
    refdata: &RefData,
    records: &[Record],
    derived: &mut [Derived],
    spell: &Spell,
) {
    let episodes: Vec<(usize, &ApcItems)> = spell
        .episodes
        .iter()
        .filter_map(|&i| apc_items(&records[i]).map(|a| (i, a)))
        .collect();
    let (Some(&(first_i, first)), Some(&(last_i, last))) = (episodes.first(), episodes.last())
    else {
        return;
    };

    let pod = apc_pod(
        first.patient_classification.as_deref(),
        first.admission_method.as_deref(),
    );
    let restricted = episodes.iter().any(|(i, _)| derived[*i].restricted);
    for &(i, a) in &episodes {
        let d = &mut derived[i];
        d.episode_los = a
            .episode_start_date
            .zip(a.episode_end_date.or(a.discharge_date))
            .map(|(start, end)| days_between(start, end));
        d.pod = pod;
        d.restricted = restricted;
    }
    // The grouper tables of an episode: its spell's discharge year (the prices' year), or, while
    // the spell is unfinished, its own activity year.
    let group = |derived: &mut [Derived], i: usize, a: &ApcItems, year: Option<&str>| {
        derived[i].hrg = Some(match year {
            Some(fy) if !is_ungroupable(derived[i].warnings) => {
                grouper.episode_hrg(&records[i], a, fy)
            }
            _ => UNGROUPED_HRG.to_string(),
        });
    };

    let Some(discharge) = last.discharge_date else {
        for &(i, a) in &episodes {
            let fy = records[i]
                .activity_date()
                .map(financial_year)
                .filter(|fy| refdata.year(fy).is_some());
            group(derived, i, a, fy.as_deref());
            exclude(&mut derived[i], &Exclusion::SpellUnfinished);
        }
        return;
    };
    let spell_los = first.admission_date.map(|a| days_between(a, discharge));
    let (fy, year) = tariff_of(refdata, Some(discharge));
    for &(i, a) in &episodes {
        group(derived, i, a, year.map(|_| fy.as_str()));
        derived[i].spell_los = spell_los;
    }
    let Some(year) = year else {
        // Without the year's tables nothing groups: no spell HRG, and the reason says why.
        settle(&mut derived[last_i], Err(Exclusion::NoTariff { year: fy }));
        return;
    };
    let mff = year.mff(&spell.provider_code);

    // The highest base price among grouped episodes wins (an ungrouped one gives the spell
    // nothing); scanning in episode order with a strict comparison leaves ties with the lowest
    // episode. Every episode ungrouped: the spell is too.
    let mut best: Option<(String, i64)> = None;
    for &(i, _) in &episodes {
        let Some(hrg) = derived[i].hrg.clone().filter(|h| h != UNGROUPED_HRG) else {
            continue;
        };
        let base = price::apc_base_or_zero(Some(year), &hrg, pod);
        if best.as_ref().is_none_or(|(_, b)| base > *b) {
            best = Some((hrg, base));
        }
    }
    let spell_hrg = best.map_or_else(|| UNGROUPED_HRG.to_string(), |(h, _)| h);

    for &(i, _) in &episodes {
        let d = &mut derived[i];
        d.spell_hrg = Some(spell_hrg.clone());
        d.tariff_year = Some(fy.clone());
        d.mff = mff;
    }

    let dob_implausible = episodes
        .iter()
        .any(|(i, _)| derived[*i].warnings.contains(Rule::DateOfBirthImplausible));
    let outcome = if spell_hrg == UNGROUPED_HRG {
        Err(Exclusion::Ungroupable)
    } else if dob_implausible {
        Err(Exclusion::DateOfBirthImplausible)
    } else {
        let age_at_admission = match (first.admission_date, records[first_i].common.date_of_birth) {
            (Some(admitted), Some(dob)) => age_on(dob, admitted),
            // A restricted episode stored earlier has lost its date of birth: its age at the
            // episode's start was kept, which is the age at admission when the spell starts
            // with it.
            (Some(admitted), None) if first.episode_start_date == Some(admitted) => {
                derived[first_i].age_at_activity
            }
            _ => None,
        };
        let facts = SpellFacts {
            hrg: &spell_hrg,
            pod,
            emergency: first
                .admission_method
                .as_deref()
                .is_some_and(|m| EMERGENCY_METHODS.contains(&m)),
            spell_los,
            age_at_admission,
        };
        price::apc_spell_payment(year, &facts, mff)
    };
    settle(&mut derived[last_i], outcome);
}

/// Derives and prices one outpatient appointment.
fn derive_op(
    grouper: &dyn Grouper,
    refdata: &RefData,
    record: &Record,
    o: &OpItems,
    d: &mut Derived,
) {
    let tfc_pod = op_pod(o.first_attendance.as_deref());
    let (fy, year) = tariff_of(refdata, o.appointment_date);
    let ungroupable = is_ungroupable(d.warnings);
    // An outpatient procedure needs both a mapping and a procedure price in the year.
    let procedure = if ungroupable {
        None
    } else {
        grouper.op_procedure_hrg(record, o).and_then(|hrg| {
            let price = year.and_then(|y| y.op_procedure_price(&hrg))?;
            Some((hrg, price))
        })
    };
    let (hrg, pod) = match (&procedure, ungroupable) {
        (_, true) => (UNGROUPED_HRG.to_string(), tfc_pod),
        (Some((hrg, _)), false) => (hrg.clone(), Pod::Opproc),
        (None, false) if tfc_pod == Pod::Opfa => (OP_FIRST_HRG.to_string(), tfc_pod),
        (None, false) => (OP_FOLLOW_UP_HRG.to_string(), tfc_pod),
    };
    d.hrg = Some(hrg);
    d.pod = Some(pod);
    let Some(year) = year else {
        exclude(d, &Exclusion::NoTariff { year: fy });
        return;
    };
    d.tariff_year = Some(fy);
    d.mff = year.mff(&record.common.provider_code);
    let attended = o
        .attended_or_did_not_attend
        .as_deref()
        .is_some_and(|a| ATTENDED.contains(&a));
    let outcome = if ungroupable {
        Err(Exclusion::Ungroupable)
    } else if d.warnings.contains(Rule::DateOfBirthImplausible) {
        Err(Exclusion::DateOfBirthImplausible)
    } else if !attended {
        Err(Exclusion::NotAttended)
    } else if !o
        .first_attendance
        .as_deref()
        .is_some_and(|f| PRICED_FIRST_ATTENDANCE.contains(&f))
    {
        Err(Exclusion::NotPricedAttendance {
            code: o.first_attendance.clone().unwrap_or_default(),
        })
    } else if let Some((_, price)) = procedure {
        Ok(price::op_procedure_payment(price, d.mff))
    } else {
        price::op_tfc_payment(year, o.treatment_function_code.as_deref(), tfc_pod, d.mff)
    };
    settle(d, outcome);
}

/// Derives and prices one emergency care attendance.
fn derive_ec(
    grouper: &dyn Grouper,
    refdata: &RefData,
    record: &Record,
    e: &EcItems,
    d: &mut Derived,
) {
    let hrg = grouper.ec_hrg(record, e);
    d.pod = Some(Pod::Ae);
    let (fy, year) = tariff_of(refdata, record.activity_date());
    let Some(year) = year else {
        d.hrg = Some(hrg);
        exclude(d, &Exclusion::NoTariff { year: fy });
        return;
    };
    d.tariff_year = Some(fy);
    d.mff = year.mff(&record.common.provider_code);
    let department = e.department_type.as_deref();
    let groups = hrg != EC_UNGROUPABLE_HRG
        && hrg != UNGROUPED_HRG
        && department.is_some_and(|t| EC_DEPARTMENT_TYPES.contains(&t));
    let outcome = if !groups {
        Err(Exclusion::Ungroupable)
    } else if d.warnings.contains(Rule::DateOfBirthImplausible) {
        Err(Exclusion::DateOfBirthImplausible)
    } else {
        price::ec_payment(year, &hrg, department, d.mff)
    };
    d.hrg = Some(hrg);
    settle(d, outcome);
}
