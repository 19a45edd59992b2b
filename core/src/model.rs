//! The SUS data model: datasets, submission envelopes, typed records, derived values and rule codes.
//!
//! Everything here is plain data. Parsing (`ingest::parse`) fills [`Record`]s from files, the domain core
//! (`validate`, `derive`, `price`) reads them with reference data and fills [`Derived`], and
//! `ingest::encode` turns both into the stored Arrow schema (`schema`).

use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One of the three Commissioning Data Sets the cluster stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    /// Admitted Patient Care, CDS 130: one row is one finished consultant episode.
    Apc,
    /// Outpatients, CDS 020: one row is one appointment.
    Op,
    /// Emergency Care (ECDS), CDS 011: one row is one attendance.
    Ec,
}

impl Dataset {
    pub const ALL: [Dataset; 3] = [Dataset::Apc, Dataset::Op, Dataset::Ec];

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Apc => "apc",
            Dataset::Op => "op",
            Dataset::Ec => "ec",
        }
    }

    pub fn parse(s: &str) -> Option<Dataset> {
        match s.trim().to_ascii_lowercase().as_str() {
            "apc" => Some(Dataset::Apc),
            "op" => Some(Dataset::Op),
            "ec" => Some(Dataset::Ec),
            _ => None,
        }
    }

    /// The CDS type code of the dataset.
    pub fn cds_type(self) -> &'static str {
        match self {
            Dataset::Apc => "130",
            Dataset::Op => "020",
            Dataset::Ec => "011",
        }
    }

    /// The Bulk Replacement group that carries this dataset.
    pub fn bulk_group(self) -> &'static str {
        match self {
            Dataset::Apc => "010",
            Dataset::Op => "060",
            Dataset::Ec => "140",
        }
    }

    /// The item whose date is the record's activity date (partitioning, bulk periods, tariff year).
    pub fn activity_item(self) -> &'static str {
        match self {
            Dataset::Apc => "episode_start_date",
            Dataset::Op => "appointment_date",
            Dataset::Ec => "arrival_datetime",
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `cds_update_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateType {
    /// `9`: original or replacement.
    Upsert,
    /// `1`: deletion (Net Change only).
    Delete,
}

impl UpdateType {
    pub fn code(self) -> &'static str {
        match self {
            UpdateType::Upsert => "9",
            UpdateType::Delete => "1",
        }
    }
}

/// The update protocol of a submission, with the Bulk Replacement header items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum Protocol {
    /// Protocol `010`: each record upserts or deletes by `cds_unique_id`.
    NetChange,
    /// Protocol `020`: replaces every stored record of the sender and group in the report period.
    BulkReplacement {
        /// `010` finished episodes, `060` outpatients, `140` emergency care.
        bulk_group: String,
        /// First day of the report period (inclusive).
        period_start: NaiveDate,
        /// Last day of the report period (inclusive).
        period_end: NaiveDate,
        /// When the sender extracted the data; a duplicate or older extract is rejected.
        extract_datetime: NaiveDateTime,
        /// The prime recipient (commissioner) of the submission.
        prime_recipient: String,
    },
}

/// The envelope of one submission: who sends what, under which protocol.
///
/// `(sender, submission_id)` is the idempotency key: a resent submission gets its original outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionMeta {
    pub submission_id: String,
    /// ODS code of the sending organisation (a provider or a submitting agency).
    pub sender: String,
    pub dataset: Dataset,
    #[serde(flatten)]
    pub protocol: Protocol,
}

/// Items common to every dataset. Optional items are `None` when blank in the submission.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Common {
    pub cds_unique_id: String,
    pub cds_update_type: Option<UpdateType>,
    pub cds_applicable_datetime: Option<NaiveDateTime>,
    pub provider_code: String,
    pub site_code: Option<String>,
    pub commissioner_code: Option<String>,
    pub gp_practice_code: Option<String>,
    /// As submitted (digits only after stripping spaces); validity is a warning, not a parse error.
    pub nhs_number: Option<String>,
    pub nhs_number_status: Option<String>,
    pub local_patient_id: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub sex: Option<String>,
    pub ethnic_category: Option<String>,
    pub postcode: Option<String>,
}

/// Admitted Patient Care episode items.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApcItems {
    pub hospital_provider_spell_number: Option<String>,
    pub episode_number: Option<u8>,
    pub last_episode_in_spell: bool,
    pub admission_method: Option<String>,
    pub admission_source: Option<String>,
    pub patient_classification: Option<String>,
    pub discharge_method: Option<String>,
    pub discharge_destination: Option<String>,
    pub admission_date: Option<NaiveDate>,
    pub discharge_date: Option<NaiveDate>,
    pub episode_start_date: Option<NaiveDate>,
    pub episode_end_date: Option<NaiveDate>,
    pub main_specialty: Option<String>,
    pub treatment_function_code: Option<String>,
    pub primary_diagnosis: Option<String>,
    /// Up to 12 codes (`;`-separated in CSV).
    pub secondary_diagnoses: Vec<String>,
    pub primary_procedure: Option<String>,
    pub primary_procedure_date: Option<NaiveDate>,
    /// Up to 11 codes (`;`-separated in CSV).
    pub secondary_procedures: Vec<String>,
    pub critical_care_days: Option<u32>,
}

/// Outpatient appointment items.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpItems {
    pub appointment_date: Option<NaiveDate>,
    pub attended_or_did_not_attend: Option<String>,
    pub first_attendance: Option<String>,
    pub consultation_mechanism: Option<String>,
    pub treatment_function_code: Option<String>,
    pub outcome_of_attendance: Option<String>,
    pub primary_procedure: Option<String>,
    pub primary_diagnosis: Option<String>,
}

/// Emergency Care attendance items.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EcItems {
    pub arrival_datetime: Option<NaiveDateTime>,
    pub departure_datetime: Option<NaiveDateTime>,
    pub department_type: Option<String>,
    pub arrival_mode: Option<String>,
    pub acuity: Option<u8>,
    pub chief_complaint: Option<String>,
    /// SNOMED CT ids (`;`-separated in CSV).
    pub investigations: Vec<String>,
    /// SNOMED CT ids (`;`-separated in CSV).
    pub treatments: Vec<String>,
    pub diagnosis: Option<String>,
    pub discharge_status: Option<String>,
}

/// The dataset-specific items of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    Apc(ApcItems),
    Op(OpItems),
    Ec(EcItems),
}

/// One record of a submission, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 1-based position of the record in the submission (CSV data line or Parquet row), for messages.
    pub ordinal: u64,
    pub common: Common,
    pub detail: Detail,
}

impl Record {
    pub fn dataset(&self) -> Dataset {
        match self.detail {
            Detail::Apc(_) => Dataset::Apc,
            Detail::Op(_) => Dataset::Op,
            Detail::Ec(_) => Dataset::Ec,
        }
    }

    /// The activity date: episode start (APC), appointment (OP) or arrival (EC).
    pub fn activity_date(&self) -> Option<NaiveDate> {
        match &self.detail {
            Detail::Apc(a) => a.episode_start_date,
            Detail::Op(o) => o.appointment_date,
            Detail::Ec(e) => e.arrival_datetime.map(|t| t.date()),
        }
    }

    pub fn is_delete(&self) -> bool {
        self.common.cds_update_type == Some(UpdateType::Delete)
    }
}

/// Point of delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Pod {
    /// Day case (patient classification 2, elective).
    Dc,
    /// Ordinary elective (class 1, admission method 1x).
    El,
    /// Non-elective (admission method 2x, 3x, 8x).
    Nel,
    /// Regular day admission (class 3).
    Rda,
    /// Regular night admission (class 4).
    Rna,
    /// Outpatient first attendance.
    Opfa,
    /// Outpatient follow-up attendance.
    Opfu,
    /// Outpatient procedure.
    Opproc,
    /// Emergency care attendance.
    Ae,
}

impl Pod {
    /// Every point of delivery.
    pub const ALL: [Pod; 9] = [
        Pod::Dc,
        Pod::El,
        Pod::Nel,
        Pod::Rda,
        Pod::Rna,
        Pod::Opfa,
        Pod::Opfu,
        Pod::Opproc,
        Pod::Ae,
    ];

    /// The point of delivery of a code (`DC`, `NEL`, ...).
    pub fn parse(code: &str) -> Option<Pod> {
        Pod::ALL.into_iter().find(|p| p.code() == code)
    }

    pub fn code(self) -> &'static str {
        match self {
            Pod::Dc => "DC",
            Pod::El => "EL",
            Pod::Nel => "NEL",
            Pod::Rda => "RDA",
            Pod::Rna => "RNA",
            Pod::Opfa => "OPFA",
            Pod::Opfu => "OPFU",
            Pod::Opproc => "OPPROC",
            Pod::Ae => "AE",
        }
    }
}

/// The HRG of ungroupable activity, priced 0.
pub const UNGROUPED_HRG: &str = "UZ01Z";

/// A validation rule. Per-record warnings flag and store the record; rejections refuse the whole
/// submission. Each has a stable code used in reports and a bit in the stored `warnings` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Rule {
    // --- per-record warnings (stored in the `warnings` bitmask) ---
    /// NHS number missing digits or failing Modulus 11 (or all one digit).
    NhsNumberInvalid,
    /// `nhs_number_status` is not `01` (number present and verified).
    NhsNumberStatusNotVerified,
    /// Date of birth before 1880-01-01 or after the activity date; the record is not priced.
    DateOfBirthImplausible,
    /// GP practice code not in the reference list (`V81997/8/9` are valid defaults).
    GpPracticeUnknown,
    /// Commissioner code not in the reference list.
    CommissionerUnknown,
    /// An ICD-10 code is malformed; the record is not grouped (`UZ01Z`, price 0).
    Icd10Malformed,
    /// An OPCS-4 code is malformed; the record is not grouped (`UZ01Z`, price 0).
    Opcs4Malformed,
    /// Patient data (the record's NHS number) found in a non-patient field such as `cds_unique_id`.
    PatientDataInNonPatientField,
    /// A Bulk Replacement record whose activity date lies outside the report period.
    OutsideReportPeriod,
    // --- whole-submission rejections ---
    /// The file cannot be read as CSV or Parquet (truncated, binary, empty, wrong encoding).
    FileUnreadable,
    /// The header lacks a mandatory column or names a column the dataset does not have.
    HeaderInvalid,
    /// A mandatory item is blank in a record.
    MandatoryItemMissing,
    /// An item's value does not have the item's format (date, number, code list).
    ItemFormatInvalid,
    /// A provider code that is malformed or not in the reference list.
    ProviderUnknown,
    /// The sender is not registered to submit for the record's provider.
    SenderNotRegistered,
    /// A Bulk Replacement whose extract is a duplicate of, or older than, one already applied.
    BulkExtractNotNewer,
    /// The envelope is inconsistent (bulk group does not match the dataset, period reversed, a
    /// deletion in a Bulk Replacement).
    EnvelopeInvalid,
}

impl Rule {
    /// The warnings, in bit order.
    pub const WARNINGS: [Rule; 9] = [
        Rule::NhsNumberInvalid,
        Rule::NhsNumberStatusNotVerified,
        Rule::DateOfBirthImplausible,
        Rule::GpPracticeUnknown,
        Rule::CommissionerUnknown,
        Rule::Icd10Malformed,
        Rule::Opcs4Malformed,
        Rule::PatientDataInNonPatientField,
        Rule::OutsideReportPeriod,
    ];

    /// Stable code used in reports, errors and documentation.
    pub fn code(self) -> &'static str {
        match self {
            Rule::NhsNumberInvalid => "W01-NHS-NUMBER-INVALID",
            Rule::NhsNumberStatusNotVerified => "W02-NHS-NUMBER-STATUS",
            Rule::DateOfBirthImplausible => "W03-DATE-OF-BIRTH",
            Rule::GpPracticeUnknown => "W04-GP-PRACTICE-UNKNOWN",
            Rule::CommissionerUnknown => "W05-COMMISSIONER-UNKNOWN",
            Rule::Icd10Malformed => "W06-ICD10-MALFORMED",
            Rule::Opcs4Malformed => "W07-OPCS4-MALFORMED",
            Rule::PatientDataInNonPatientField => "W08-PATIENT-DATA-IN-KEY",
            Rule::OutsideReportPeriod => "W09-OUTSIDE-REPORT-PERIOD",
            Rule::FileUnreadable => "R01-FILE-UNREADABLE",
            Rule::HeaderInvalid => "R02-HEADER",
            Rule::MandatoryItemMissing => "R03-MANDATORY-ITEM",
            Rule::ItemFormatInvalid => "R04-ITEM-FORMAT",
            Rule::ProviderUnknown => "R05-PROVIDER-UNKNOWN",
            Rule::SenderNotRegistered => "R06-SENDER-NOT-REGISTERED",
            Rule::BulkExtractNotNewer => "R07-BULK-EXTRACT-NOT-NEWER",
            Rule::EnvelopeInvalid => "R08-ENVELOPE",
        }
    }

    pub fn is_warning(self) -> bool {
        Rule::WARNINGS.contains(&self)
    }

    /// The bit of a warning in the stored `warnings` column.
    pub fn warning_bit(self) -> Option<u32> {
        Rule::WARNINGS
            .iter()
            .position(|r| *r == self)
            .map(|i| 1u32 << i)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One finding against a submission: the record (1-based ordinal and id, where known), the item, the
/// rule and a message a submitter can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    pub ordinal: Option<u64>,
    pub cds_unique_id: Option<String>,
    pub item: Option<String>,
    pub rule: Rule,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.ordinal {
            write!(f, "record {n}")?;
            if let Some(id) = &self.cds_unique_id {
                write!(f, " ({id})")?;
            }
            f.write_str(": ")?;
        }
        if let Some(item) = &self.item {
            write!(f, "item {item}: ")?;
        }
        write!(f, "{} [{}]", self.message, self.rule.code())
    }
}

/// The set of warnings raised on one record, as the stored bitmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Warnings(pub u32);

impl Warnings {
    pub fn add(&mut self, rule: Rule) {
        if let Some(bit) = rule.warning_bit() {
            self.0 |= bit;
        }
    }

    pub fn contains(self, rule: Rule) -> bool {
        rule.warning_bit().is_some_and(|b| self.0 & b != 0)
    }

    pub fn iter(self) -> impl Iterator<Item = Rule> {
        Rule::WARNINGS
            .into_iter()
            .filter(move |r| self.contains(*r))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Money in exact integer pence.
pub type Pence = i64;

/// A market forces factor as an exact fixed-point number of millionths (1.045678 = 1_045_678).
pub type MffMicros = i64;

/// One MFF of exactly 1.0.
pub const MFF_ONE: MffMicros = 1_000_000;

/// Values derived at ingest (section 4) and the price (section 5), stored as columns beside the items.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Derived {
    /// Whole years at episode start / appointment / arrival; `None` without a usable date of birth.
    pub age_at_activity: Option<u16>,
    /// APC only: episode end (or discharge) minus episode start, in days.
    pub episode_los: Option<i32>,
    /// APC only: discharge minus admission, in days; `None` while the spell is unfinished.
    pub spell_los: Option<i32>,
    /// The HRG of this row: the episode's own HRG for APC, the attendance HRG for OP/EC.
    pub hrg: Option<String>,
    /// APC only: the spell's HRG (on every episode of a finished spell).
    pub spell_hrg: Option<String>,
    pub pod: Option<Pod>,
    /// Pence before MFF (the tariff, or the SSEM tariff).
    pub base_price: Pence,
    pub excess_bed_days: i32,
    /// Pence before MFF.
    pub excess_payment: Pence,
    /// The provider's MFF applied to this row; `MFF_ONE` where not priced.
    pub mff: MffMicros,
    /// The payment in pence: `round_half_even((base + excess) * mff)`. For APC it is carried by the
    /// last episode of a finished spell; other episodes carry 0.
    pub price: Pence,
    /// True when the activity is outside PbR or has no national price (price 0, reason given).
    pub pbr_excluded: bool,
    pub exclusion_reason: Option<String>,
    /// Financial year of the tariff applied, e.g. `2024-25`.
    pub tariff_year: Option<String>,
    pub warnings: Warnings,
    /// True when the record (or its spell) is legally restricted: identifiers are removed at ingest.
    pub restricted: bool,
}

/// A record with its derivations: what is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedRecord {
    pub record: Record,
    pub derived: Derived,
}

/// The financial year (April to March) containing a date, as `YYYY-YY`.
pub fn financial_year(date: NaiveDate) -> String {
    use chrono::Datelike;
    let start = if date.month() >= 4 {
        date.year()
    } else {
        date.year() - 1
    };
    format!("{}-{:02}", start, (start + 1) % 100)
}

/// Activity month as `YYYYMM` (the partition key's month).
pub fn activity_month(date: NaiveDate) -> u32 {
    use chrono::Datelike;
    date.year() as u32 * 100 + date.month()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Financial years run April to March; the boundary day belongs to the new year.
    #[test]
    fn financial_year_boundaries() {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("valid date");
        assert_eq!(financial_year(d(2024, 3, 31)), "2023-24");
        assert_eq!(financial_year(d(2024, 4, 1)), "2024-25");
        assert_eq!(financial_year(d(1999, 12, 31)), "1999-00");
        assert_eq!(activity_month(d(2024, 4, 1)), 202404);
    }

    // Warning bits are stable: reports and stored rows depend on them.
    #[test]
    fn warning_bits_are_stable_and_distinct() {
        let mut w = Warnings::default();
        w.add(Rule::NhsNumberInvalid);
        w.add(Rule::Opcs4Malformed);
        w.add(Rule::HeaderInvalid); // a rejection: no bit
        assert_eq!(w.0, 0b100_0001);
        assert_eq!(
            w.iter().collect::<Vec<_>>(),
            vec![Rule::NhsNumberInvalid, Rule::Opcs4Malformed]
        );
    }
}
