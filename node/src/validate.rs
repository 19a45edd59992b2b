//! Whole-submission rules that need reference data (R05, R06, R08) and the per-record warnings
//! W01-W09 (`docs/rules.md` sections 2-3).
//!
//! The format rules R01-R04 belong to the parser and R07 (bulk extract not newer) to the store,
//! which alone knows what was applied before. Everything here is a pure function of the envelope,
//! the records and the reference data.

use crate::model::{Detail, Issue, Protocol, Record, Rule, SubmissionMeta, UpdateType, Warnings};
use crate::refdata::RefData;
use chrono::NaiveDate;

/// The most issues a rejection lists; further findings are only counted.
pub const MAX_ISSUES: usize = 100;

/// Earliest plausible date of birth (W03): 1880-01-01.
pub fn earliest_birth() -> NaiveDate {
    NaiveDate::from_ymd_opt(1880, 1, 1).unwrap_or(NaiveDate::MIN)
}

/// Whether an NHS number is valid: 10 digits once spaces are removed, not all one digit, and passing
/// Modulus 11 (weights 10..2 on digits 1-9, `check = 11 - sum mod 11`, 11 reads as 0, 10 is never
/// valid, the check must equal digit 10).
pub fn nhs_number_is_valid(s: &str) -> bool {
    let digits: Vec<u32> = s
        .chars()
        .filter(|c| *c != ' ')
        .map(|c| c.to_digit(10).filter(|_| c.is_ascii_digit()))
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
    match 11 - sum % 11 {
        11 => digits[9] == 0,
        10 => false,
        check => digits[9] == check,
    }
}

/// Whether an ICD-10 code is well formed: `[A-Z][0-9][0-9X][0-9X]`, then optionally one of `[0-9X]`,
/// then optionally `A` or `D` (4 to 6 characters, no dot).
pub fn icd10_is_well_formed(code: &str) -> bool {
    let b = code.as_bytes();
    let num_or_x = |c: u8| c.is_ascii_digit() || c == b'X';
    let dagger = |c: u8| c == b'A' || c == b'D';
    if !(4..=6).contains(&b.len())
        || !b[0].is_ascii_uppercase()
        || !b[1].is_ascii_digit()
        || !num_or_x(b[2])
        || !num_or_x(b[3])
    {
        return false;
    }
    match b[4..] {
        [] => true,
        [c] => num_or_x(c) || dagger(c),
        [c, e] => num_or_x(c) && dagger(e),
        _ => false,
    }
}

/// Whether an OPCS-4 code is well formed: a chapter letter (not `I` or `U`, which are not OPCS-4
/// chapters) and three digits, no dot.
pub fn opcs4_is_well_formed(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 4
        && b[0].is_ascii_uppercase()
        && b[0] != b'I'
        && b[0] != b'U'
        && b[1..].iter().all(u8::is_ascii_digit)
}

/// The findings of [`submission_findings`]: at most [`MAX_ISSUES`] issues, and how many more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// The first findings, envelope first, then records in file order.
    pub issues: Vec<Issue>,
    /// Findings beyond the first [`MAX_ISSUES`].
    pub more: u64,
}

impl Findings {
    fn push(&mut self, issue: Issue) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(issue);
        } else {
            self.more += 1;
        }
    }

    /// Whether the submission passes these rules.
    pub fn is_empty(&self) -> bool {
        self.issues.is_empty()
    }
}

/// The whole-submission rules R05, R06 and R08 over an envelope and its parsed records: every
/// failing record is listed (up to [`MAX_ISSUES`]). Empty means the submission may be accepted.
pub fn submission_issues(
    meta: &SubmissionMeta,
    records: &[Record],
    refdata: &RefData,
) -> Vec<Issue> {
    submission_findings(meta, records, refdata).issues
}

/// [`submission_issues`] with the count of findings beyond those listed.
pub fn submission_findings(
    meta: &SubmissionMeta,
    records: &[Record],
    refdata: &RefData,
) -> Findings {
    let mut f = Findings::default();
    let envelope = |item: &str, message: String| Issue {
        ordinal: None,
        cds_unique_id: None,
        item: Some(item.to_string()),
        rule: Rule::EnvelopeInvalid,
        message,
    };
    let bulk = match &meta.protocol {
        Protocol::NetChange => false,
        Protocol::BulkReplacement {
            bulk_group,
            period_start,
            period_end,
            ..
        } => {
            let want = meta.dataset.bulk_group();
            if bulk_group != want {
                f.push(envelope(
                    "bulk_group",
                    format!(
                        "bulk group '{bulk_group}' does not carry dataset {}: it must be {want}",
                        meta.dataset
                    ),
                ));
            }
            if period_end < period_start {
                f.push(envelope(
                    "period_end",
                    format!("report period ends ({period_end}) before it starts ({period_start})"),
                ));
            }
            true
        }
    };
    for r in records {
        let issue = |item: &str, rule: Rule, message: String| Issue {
            ordinal: Some(r.ordinal),
            cds_unique_id: Some(r.common.cds_unique_id.clone()),
            item: Some(item.to_string()),
            rule,
            message,
        };
        let provider = r.common.provider_code.as_str();
        if !refdata.is_provider(provider) {
            f.push(issue(
                "provider_code",
                Rule::ProviderUnknown,
                format!("provider '{provider}' is not a known provider"),
            ));
        } else if !refdata.may_send(&meta.sender, provider) {
            // Only for known providers: an unknown one is already the reason, and no sender can be
            // registered for it.
            f.push(issue(
                "provider_code",
                Rule::SenderNotRegistered,
                format!(
                    "sender '{}' is not registered to submit for provider '{provider}'",
                    meta.sender
                ),
            ));
        }
        if r.dataset() != meta.dataset {
            f.push(issue(
                "dataset",
                Rule::EnvelopeInvalid,
                format!(
                    "the envelope names dataset {} but the record is {}",
                    meta.dataset,
                    r.dataset()
                ),
            ));
        }
        if bulk && r.common.cds_update_type == Some(UpdateType::Delete) {
            f.push(issue(
                "cds_update_type",
                Rule::EnvelopeInvalid,
                "a deletion (1) is not allowed in a Bulk Replacement".into(),
            ));
        }
    }
    f
}

/// The warnings W01-W09 of one record. Deletions carry only key items and get none.
pub fn record_warnings(meta: &SubmissionMeta, record: &Record, refdata: &RefData) -> Warnings {
    let mut w = Warnings::default();
    if record.is_delete() {
        return w;
    }
    let c = &record.common;
    let activity = record.activity_date();

    if !c.nhs_number.as_deref().is_some_and(nhs_number_is_valid) {
        w.add(Rule::NhsNumberInvalid);
    }
    if c.nhs_number_status.as_deref() != Some("01") {
        w.add(Rule::NhsNumberStatusNotVerified);
    }
    if c.date_of_birth
        .is_some_and(|dob| dob < earliest_birth() || activity.is_some_and(|a| dob > a))
    {
        w.add(Rule::DateOfBirthImplausible);
    }
    if c.gp_practice_code
        .as_deref()
        .is_some_and(|gp| !refdata.is_gp_practice(gp))
    {
        w.add(Rule::GpPracticeUnknown);
    }
    if !c
        .commissioner_code
        .as_deref()
        .is_some_and(|code| refdata.is_commissioner(code))
    {
        w.add(Rule::CommissionerUnknown);
    }
    let codes = clinical_codes(record);
    if codes.diagnoses.iter().any(|d| !icd10_is_well_formed(d)) {
        w.add(Rule::Icd10Malformed);
    }
    if codes.procedures.iter().any(|p| !opcs4_is_well_formed(p)) {
        w.add(Rule::Opcs4Malformed);
    }
    if let Some(nhs) = own_nhs_number(record) {
        let spell = match &record.detail {
            Detail::Apc(a) => a.hospital_provider_spell_number.as_deref(),
            _ => None,
        };
        if c.cds_unique_id.contains(&nhs) || spell.is_some_and(|s| s.contains(&nhs)) {
            w.add(Rule::PatientDataInNonPatientField);
        }
    }
    if let Protocol::BulkReplacement {
        period_start,
        period_end,
        ..
    } = &meta.protocol
    {
        if activity.is_some_and(|a| a < *period_start || a > *period_end) {
            w.add(Rule::OutsideReportPeriod);
        }
    }
    w
}

/// The ICD-10 diagnoses and OPCS-4 procedures of a record. EC codes are SNOMED CT, not these.
pub(crate) struct ClinicalCodes<'a> {
    pub diagnoses: Vec<&'a str>,
    pub procedures: Vec<&'a str>,
}

/// Collects a record's ICD-10 and OPCS-4 codes (primary first).
pub(crate) fn clinical_codes(record: &Record) -> ClinicalCodes<'_> {
    match &record.detail {
        Detail::Apc(a) => ClinicalCodes {
            diagnoses: a
                .primary_diagnosis
                .iter()
                .chain(&a.secondary_diagnoses)
                .map(String::as_str)
                .collect(),
            procedures: a
                .primary_procedure
                .iter()
                .chain(&a.secondary_procedures)
                .map(String::as_str)
                .collect(),
        },
        Detail::Op(o) => ClinicalCodes {
            diagnoses: o.primary_diagnosis.iter().map(String::as_str).collect(),
            procedures: o.primary_procedure.iter().map(String::as_str).collect(),
        },
        Detail::Ec(_) => ClinicalCodes {
            diagnoses: vec![],
            procedures: vec![],
        },
    }
}

/// The record's NHS number when it is 10 digits (valid or not: W08 is about leaking it, whatever
/// its check digit).
fn own_nhs_number(record: &Record) -> Option<String> {
    let n: String = record.common.nhs_number.as_deref()?.replace(' ', "");
    (n.len() == 10 && n.bytes().all(|b| b.is_ascii_digit())).then_some(n)
}
