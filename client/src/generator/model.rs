//! Records as the generator writes them, with the exact CSV headers of `docs/rules.md` §1.

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use serde::Serialize;
use std::fmt::Write as _;

/// One of the three datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    Apc,
    Op,
    Ec,
}

impl Dataset {
    /// All three, in a fixed order.
    pub const ALL: [Dataset; 3] = [Dataset::Apc, Dataset::Op, Dataset::Ec];

    /// `apc`, `op`, `ec`.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Apc => "apc",
            Dataset::Op => "op",
            Dataset::Ec => "ec",
        }
    }

    /// The Bulk Replacement group of the dataset.
    pub fn bulk_group(self) -> &'static str {
        match self {
            Dataset::Apc => "010",
            Dataset::Op => "060",
            Dataset::Ec => "140",
        }
    }

    /// Parses `apc`/`op`/`ec`.
    pub fn parse(s: &str) -> Option<Dataset> {
        match s {
            "apc" => Some(Dataset::Apc),
            "op" => Some(Dataset::Op),
            "ec" => Some(Dataset::Ec),
            _ => None,
        }
    }

    /// The CSV header of the dataset.
    pub fn header(self) -> Vec<&'static str> {
        let mut h = COMMON_COLUMNS.to_vec();
        h.extend_from_slice(match self {
            Dataset::Apc => &APC_COLUMNS[..],
            Dataset::Op => &OP_COLUMNS[..],
            Dataset::Ec => &EC_COLUMNS[..],
        });
        h
    }
}

/// Columns every dataset has.
pub const COMMON_COLUMNS: [&str; 14] = [
    "cds_unique_id",
    "cds_update_type",
    "cds_applicable_datetime",
    "provider_code",
    "site_code",
    "commissioner_code",
    "gp_practice_code",
    "nhs_number",
    "nhs_number_status",
    "local_patient_id",
    "date_of_birth",
    "sex",
    "ethnic_category",
    "postcode",
];
/// Admitted patient care columns.
pub const APC_COLUMNS: [&str; 20] = [
    "hospital_provider_spell_number",
    "episode_number",
    "last_episode_in_spell",
    "admission_method",
    "admission_source",
    "patient_classification",
    "discharge_method",
    "discharge_destination",
    "admission_date",
    "discharge_date",
    "episode_start_date",
    "episode_end_date",
    "main_specialty",
    "treatment_function_code",
    "primary_diagnosis",
    "secondary_diagnoses",
    "primary_procedure",
    "primary_procedure_date",
    "secondary_procedures",
    "critical_care_days",
];
/// Outpatient columns.
pub const OP_COLUMNS: [&str; 8] = [
    "appointment_date",
    "attended_or_did_not_attend",
    "first_attendance",
    "consultation_mechanism",
    "treatment_function_code",
    "outcome_of_attendance",
    "primary_procedure",
    "primary_diagnosis",
];
/// Emergency care columns.
pub const EC_COLUMNS: [&str; 10] = [
    "arrival_datetime",
    "departure_datetime",
    "department_type",
    "arrival_mode",
    "acuity",
    "chief_complaint",
    "investigations",
    "treatments",
    "diagnosis",
    "discharge_status",
];

/// Items common to every record. Empty strings are blank cells.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Common {
    pub cds_unique_id: String,
    /// `true` for `9` (upsert), `false` for `1` (deletion).
    pub upsert: bool,
    pub applicable: NaiveDateTime,
    pub provider: String,
    pub site: String,
    pub commissioner: String,
    pub gp_practice: String,
    pub nhs_number: String,
    pub nhs_number_status: String,
    pub local_patient_id: String,
    pub date_of_birth: Option<NaiveDate>,
    pub sex: String,
    pub ethnic_category: String,
    pub postcode: String,
}

/// An admitted patient care episode.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Apc {
    pub spell: String,
    pub episode_number: u32,
    pub last_episode: bool,
    pub admission_method: String,
    pub admission_source: String,
    pub patient_classification: String,
    pub discharge_method: String,
    pub discharge_destination: String,
    pub admission_date: NaiveDate,
    pub discharge_date: Option<NaiveDate>,
    pub episode_start: NaiveDate,
    pub episode_end: Option<NaiveDate>,
    pub main_specialty: String,
    pub tfc: String,
    pub primary_diagnosis: String,
    pub secondary_diagnoses: Vec<String>,
    pub primary_procedure: String,
    pub primary_procedure_date: Option<NaiveDate>,
    pub secondary_procedures: Vec<String>,
    pub critical_care_days: Option<u32>,
}

/// An outpatient appointment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Op {
    pub appointment_date: NaiveDate,
    pub attended: String,
    pub first_attendance: String,
    pub consultation_mechanism: String,
    pub tfc: String,
    pub outcome: String,
    pub primary_procedure: String,
    pub primary_diagnosis: String,
}

/// An emergency care attendance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ec {
    pub arrival: NaiveDateTime,
    pub departure: Option<NaiveDateTime>,
    pub department_type: String,
    pub arrival_mode: String,
    pub acuity: u8,
    pub chief_complaint: String,
    pub investigations: Vec<String>,
    pub treatments: Vec<String>,
    pub diagnosis: String,
    pub discharge_status: String,
}

/// The dataset items of a record; deletions carry none.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    Apc(Box<Apc>),
    Op(Op),
    Ec(Ec),
    /// A deletion (`cds_update_type` `1`): key items only. Keeps the activity date the generator knew.
    Delete(NaiveDate),
}

/// One record.
#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub common: Common,
    pub detail: Detail,
}

impl Rec {
    /// The activity date (`docs/rules.md` §4).
    pub fn activity_date(&self) -> NaiveDate {
        match &self.detail {
            Detail::Apc(a) => a.episode_start,
            Detail::Op(o) => o.appointment_date,
            Detail::Ec(e) => e.arrival.date(),
            Detail::Delete(d) => *d,
        }
    }

    /// The record as CSV cells in header order.
    pub fn cells(&self, dataset: Dataset) -> Vec<String> {
        let c = &self.common;
        let mut v = Vec::with_capacity(34);
        v.push(c.cds_unique_id.clone());
        v.push(if c.upsert { "9" } else { "1" }.to_string());
        v.push(datetime(c.applicable));
        v.push(c.provider.clone());
        v.push(c.site.clone());
        v.push(c.commissioner.clone());
        v.push(c.gp_practice.clone());
        v.push(c.nhs_number.clone());
        v.push(c.nhs_number_status.clone());
        v.push(c.local_patient_id.clone());
        v.push(opt_date(c.date_of_birth));
        v.push(c.sex.clone());
        v.push(c.ethnic_category.clone());
        v.push(c.postcode.clone());
        match &self.detail {
            Detail::Apc(a) => {
                v.push(a.spell.clone());
                v.push(a.episode_number.to_string());
                v.push(if a.last_episode { "Y" } else { "N" }.to_string());
                v.push(a.admission_method.clone());
                v.push(a.admission_source.clone());
                v.push(a.patient_classification.clone());
                v.push(a.discharge_method.clone());
                v.push(a.discharge_destination.clone());
                v.push(date(a.admission_date));
                v.push(opt_date(a.discharge_date));
                v.push(date(a.episode_start));
                v.push(opt_date(a.episode_end));
                v.push(a.main_specialty.clone());
                v.push(a.tfc.clone());
                v.push(a.primary_diagnosis.clone());
                v.push(a.secondary_diagnoses.join(";"));
                v.push(a.primary_procedure.clone());
                v.push(opt_date(a.primary_procedure_date));
                v.push(a.secondary_procedures.join(";"));
                v.push(
                    a.critical_care_days
                        .map_or(String::new(), |d| d.to_string()),
                );
            }
            Detail::Op(o) => {
                v.push(date(o.appointment_date));
                v.push(o.attended.clone());
                v.push(o.first_attendance.clone());
                v.push(o.consultation_mechanism.clone());
                v.push(o.tfc.clone());
                v.push(o.outcome.clone());
                v.push(o.primary_procedure.clone());
                v.push(o.primary_diagnosis.clone());
            }
            Detail::Ec(e) => {
                v.push(datetime(e.arrival));
                v.push(e.departure.map_or(String::new(), datetime));
                v.push(e.department_type.clone());
                v.push(e.arrival_mode.clone());
                v.push(e.acuity.to_string());
                v.push(e.chief_complaint.clone());
                v.push(e.investigations.join(";"));
                v.push(e.treatments.join(";"));
                v.push(e.diagnosis.clone());
                v.push(e.discharge_status.clone());
            }
            Detail::Delete(_) => {
                let n = dataset.header().len();
                v.resize(n, String::new());
            }
        }
        v
    }
}

/// `YYYY-MM-DD`.
pub fn date(d: NaiveDate) -> String {
    let mut s = String::with_capacity(10);
    let _ = write!(s, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
    s
}

fn opt_date(d: Option<NaiveDate>) -> String {
    d.map_or(String::new(), date)
}

/// `YYYY-MM-DDTHH:MM:SS`.
pub fn datetime(t: NaiveDateTime) -> String {
    let mut s = date(t.date());
    let _ = write!(s, "T{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    s
}

/// The financial year of a date, e.g. `2024-25`.
pub fn financial_year(d: NaiveDate) -> String {
    let start = if d.month() >= 4 {
        d.year()
    } else {
        d.year() - 1
    };
    format!("{}-{:02}", start, (start + 1) % 100)
}
