//! What the CSV and Parquet readers share: a record's cells into a typed [`Record`] (items
//! checked against R03 and R04, every finding naming the record and the item), the findings of
//! a file, the header, and the meter that holds a submission to its limits.

use crate::limits::{ROW_BYTES, SubmissionLimits, keys, setting};
use crate::model::{
    ApcItems, Common, Dataset, Detail, EcItems, Issue, OpItems, Record, Rule, UpdateType,
};
use crate::schema::{Item, Mandatory, items};
use crate::{Error, Result as NodeResult};
use chrono::{NaiveDate, NaiveDateTime};
use std::collections::HashMap;

/// The most issues a rejection lists; the rest are counted.
pub const MAX_ISSUES: usize = 100;

/// The longest `cds_unique_id` the data dictionary allows (`an..35`).
pub const CDS_UNIQUE_ID_CHARS: usize = 35;

/// Parsed records, or the issues that reject the submission (with the count beyond those listed).
pub type Parsed = Result<Vec<Record>, Rejected>;

/// The findings that reject a submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub issues: Vec<Issue>,
    /// Findings beyond the first [`MAX_ISSUES`].
    pub more: u64,
}

impl Rejected {
    pub(crate) fn one(rule: Rule, message: String) -> Rejected {
        Rejected {
            issues: vec![Issue {
                ordinal: None,
                cds_unique_id: None,
                item: None,
                rule,
                message,
            }],
            more: 0,
        }
    }
}

/// Counts records and their decoded bytes against the submission's limits.
pub(crate) struct Meter<'l> {
    limits: &'l SubmissionLimits,
    rows: u64,
    bytes: u64,
}

impl<'l> Meter<'l> {
    pub(crate) fn new(limits: &'l SubmissionLimits) -> Meter<'l> {
        Meter {
            limits,
            rows: 0,
            bytes: 0,
        }
    }

    /// Counts one more record whose items hold `text` bytes; `Err` once over a limit.
    pub(crate) fn row(&mut self, text: u64) -> NodeResult<()> {
        self.rows += 1;
        self.bytes = self.bytes.saturating_add(ROW_BYTES).saturating_add(text);
        if self.rows > self.limits.max_rows {
            return Err(too_many_rows(
                &format!("more than {}", self.limits.max_rows),
                self.limits,
            ));
        }
        if self.bytes > self.limits.max_decoded_bytes {
            return Err(too_large(
                &format!("its first {} records take", self.rows),
                self.bytes,
                self.limits,
            ));
        }
        Ok(())
    }
}

/// The refusal of a submission with `count` rows (`count` is "2000000" or "more than 1000000").
pub(crate) fn too_many_rows(count: &str, limits: &SubmissionLimits) -> Error {
    Error::InvalidArgument(format!(
        "the submission has {count} records: over the limit of {} records per submission \
         (setting {}); split the file",
        limits.max_rows,
        setting(keys::MAX_SUBMISSION_ROWS)
    ))
}

/// The refusal of a submission whose decoded data passes the limit (`what` says what counted).
pub(crate) fn too_large(what: &str, bytes: u64, limits: &SubmissionLimits) -> Error {
    Error::InvalidArgument(format!(
        "the submission is too large once decoded: {what} {bytes} bytes, over the limit of {} \
         bytes of decoded records per submission (setting {}); split the file",
        limits.max_decoded_bytes,
        setting(keys::MAX_SUBMISSION_DECODED_MIB)
    ))
}

/// Collects issues up to the cap.
pub(crate) struct Findings {
    issues: Vec<Issue>,
    more: u64,
}

impl Findings {
    pub(crate) fn new() -> Findings {
        Findings {
            issues: Vec::new(),
            more: 0,
        }
    }

    pub(crate) fn push(&mut self, issue: Issue) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(issue);
        } else {
            self.more += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.issues.is_empty()
    }

    pub(crate) fn into_result(self, records: Vec<Record>) -> Parsed {
        if self.is_empty() {
            Ok(records)
        } else {
            Err(Rejected {
                issues: self.issues,
                more: self.more,
            })
        }
    }
}

/// Maps the file's columns onto the dataset's items: R02 for a missing or unknown column.
pub(crate) fn resolve_header(dataset: Dataset, header: &[String]) -> Result<Vec<usize>, Rejected> {
    let items = items(dataset);
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut problems = Vec::new();
    for (i, name) in header.iter().enumerate() {
        let name = name.trim().trim_start_matches('\u{feff}');
        if !items.iter().any(|it| it.name == name) {
            problems.push(format!(
                "unknown column '{}' for dataset {dataset}",
                shown(name)
            ));
        } else if by_name.insert(name, i).is_some() {
            problems.push(format!("column '{name}' appears twice"));
        }
    }
    let mut positions = Vec::with_capacity(items.len());
    for it in &items {
        match by_name.get(it.name) {
            Some(&p) => positions.push(p),
            None => problems.push(format!("missing column '{}'", it.name)),
        }
    }
    if problems.is_empty() {
        Ok(positions)
    } else {
        let mut findings = Findings::new();
        for message in problems {
            findings.push(Issue {
                ordinal: None,
                cds_unique_id: None,
                item: None,
                rule: Rule::HeaderInvalid,
                message,
            });
        }
        Err(Rejected {
            issues: findings.issues,
            more: findings.more,
        })
    }
}

/// A value as a message quotes it: whole if short, else its start and its length (a report must
/// stay small whatever was sent).
pub(crate) fn shown(v: &str) -> String {
    const SHOWN: usize = 40;
    if v.len() <= SHOWN {
        return v.to_string();
    }
    let mut end = SHOWN;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &v[..end], v.len())
}

/// One record's items, in item order: their text, and their true lengths where a value too long
/// to copy was left out (Parquet).
pub(crate) struct Cells<'a> {
    pub values: &'a [&'a str],
    /// `None`: every value is whole (its length is its text's).
    pub lengths: Option<&'a [usize]>,
}

/// One row's values, in item order, with the helpers that parse each kind.
struct Row<'a, 'f> {
    items: &'a [Item],
    values: &'a [&'a str],
    ordinal: u64,
    id: Option<String>,
    findings: &'f mut Findings,
    bad: bool,
}

impl<'a> Row<'a, '_> {
    fn raw(&self, name: &str) -> &'a str {
        let i = self
            .items
            .iter()
            .position(|it| it.name == name)
            .unwrap_or_else(|| panic!("item {name} is not in the item table"));
        self.values[i].trim()
    }

    fn fail(&mut self, name: &str, rule: Rule, message: String) {
        self.bad = true;
        self.findings.push(Issue {
            ordinal: Some(self.ordinal),
            cds_unique_id: self.id.clone(),
            item: Some(name.to_string()),
            rule,
            message,
        });
    }

    fn text(&self, name: &str) -> Option<String> {
        let v = self.raw(name);
        (!v.is_empty()).then(|| v.to_string())
    }

    fn date(&mut self, name: &str) -> Option<NaiveDate> {
        let v = self.raw(name);
        if v.is_empty() {
            return None;
        }
        match super::dates::parse_date(v) {
            Some(d) => Some(d),
            None => {
                self.fail(
                    name,
                    Rule::ItemFormatInvalid,
                    format!("'{}' is not a date (YYYY-MM-DD)", shown(v)),
                );
                None
            }
        }
    }

    fn datetime(&mut self, name: &str) -> Option<NaiveDateTime> {
        let v = self.raw(name);
        if v.is_empty() {
            return None;
        }
        match parse_datetime(v) {
            Some(t) => Some(t),
            None => {
                self.fail(
                    name,
                    Rule::ItemFormatInvalid,
                    format!("'{}' is not a date-time (YYYY-MM-DDTHH:MM:SS)", shown(v)),
                );
                None
            }
        }
    }

    fn bool(&mut self, name: &str) -> bool {
        match self.raw(name) {
            "" | "N" | "n" | "false" | "0" => false,
            "Y" | "y" | "true" | "1" => true,
            v => {
                self.fail(
                    name,
                    Rule::ItemFormatInvalid,
                    format!("'{}' is not Y or N", shown(v)),
                );
                false
            }
        }
    }

    fn number<T: std::str::FromStr>(&mut self, name: &str) -> Option<T> {
        let v = self.raw(name);
        if v.is_empty() {
            return None;
        }
        match v.parse::<T>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.fail(
                    name,
                    Rule::ItemFormatInvalid,
                    format!("'{}' is not a whole number in range", shown(v)),
                );
                None
            }
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.raw(name)
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

pub use super::dates::parse_datetime;

/// Builds one record, reporting format, length and mandatory-item findings; `None` if the record
/// is bad.
pub(crate) fn build_record(
    dataset: Dataset,
    items: &[Item],
    ordinal: u64,
    cells: Cells<'_>,
    limits: &SubmissionLimits,
    findings: &mut Findings,
) -> Option<Record> {
    let length = |i: usize| {
        cells
            .lengths
            .and_then(|l| l.get(i).copied())
            .unwrap_or_else(|| cells.values.get(i).map_or(0, |v| v.len()))
    };
    // An item over the field limit is reported by its length and otherwise read as blank: its
    // text is never copied or quoted.
    let oversize: Vec<(usize, usize)> = (0..items.len())
        .map(|i| (i, length(i)))
        .filter(|(_, len)| *len > limits.max_field_bytes)
        .collect();
    let mut values: Vec<&str> = cells.values.to_vec();
    for (i, _) in &oversize {
        if let Some(v) = values.get_mut(*i) {
            *v = "";
        }
    }
    let id = values.first().map(|v| v.trim()).filter(|v| !v.is_empty());
    // The record key is quoted in every finding: one longer than the data dictionary allows is
    // reported once, and not quoted.
    let id_chars = id.map_or(0, |v| v.chars().count());
    let mut row = Row {
        items,
        values: &values,
        ordinal,
        id: id
            .filter(|_| id_chars <= CDS_UNIQUE_ID_CHARS)
            .map(str::to_string),
        findings,
        bad: false,
    };
    for (i, len) in &oversize {
        if let Some(it) = items.get(*i) {
            row.fail(
                it.name,
                Rule::ItemFormatInvalid,
                format!(
                    "{len} bytes: over the limit of {} bytes per item (setting {})",
                    limits.max_field_bytes,
                    setting(keys::MAX_FIELD_BYTES)
                ),
            );
        }
    }
    if id_chars > CDS_UNIQUE_ID_CHARS {
        row.fail(
            "cds_unique_id",
            Rule::ItemFormatInvalid,
            format!(
                "{id_chars} characters: the data dictionary allows at most \
                 {CDS_UNIQUE_ID_CHARS} (an..{CDS_UNIQUE_ID_CHARS})"
            ),
        );
    }
    let update_type = match row.raw("cds_update_type") {
        "" => None,
        "9" => Some(UpdateType::Upsert),
        "1" => Some(UpdateType::Delete),
        v => {
            row.fail(
                "cds_update_type",
                Rule::ItemFormatInvalid,
                format!(
                    "'{}' is not an update type (9 original/replacement, 1 deletion)",
                    shown(v)
                ),
            );
            None
        }
    };
    // Mandatory items: always, and for upserts (a bad update type is already reported).
    let upsert = update_type != Some(UpdateType::Delete);
    for (i, (it, v)) in items.iter().zip(&values).enumerate() {
        if oversize.iter().any(|(o, _)| *o == i) {
            continue;
        }
        let required = match it.mandatory {
            Mandatory::Always => true,
            Mandatory::Upsert => upsert,
            Mandatory::No => false,
        };
        if required && v.trim().is_empty() {
            row.fail(
                it.name,
                Rule::MandatoryItemMissing,
                "mandatory item is blank".into(),
            );
        }
    }
    let common = common_items(&mut row, update_type);
    let detail = detail_items(dataset, &mut row);
    if row.bad {
        return None;
    }
    Some(Record {
        ordinal,
        common,
        detail,
    })
}

/// The items every dataset has.
fn common_items(row: &mut Row<'_, '_>, update_type: Option<UpdateType>) -> Common {
    Common {
        cds_unique_id: row.text("cds_unique_id").unwrap_or_default(),
        cds_update_type: update_type,
        cds_applicable_datetime: row.datetime("cds_applicable_datetime"),
        provider_code: row
            .text("provider_code")
            .map(|s| s.to_ascii_uppercase())
            .unwrap_or_default(),
        site_code: row.text("site_code"),
        commissioner_code: row.text("commissioner_code"),
        gp_practice_code: row.text("gp_practice_code"),
        nhs_number: row.text("nhs_number").map(|s| s.replace(' ', "")),
        nhs_number_status: row.text("nhs_number_status"),
        local_patient_id: row.text("local_patient_id"),
        date_of_birth: row.date("date_of_birth"),
        sex: row.text("sex"),
        ethnic_category: row.text("ethnic_category"),
        postcode: row.text("postcode"),
    }
}

/// The items of `dataset` only.
fn detail_items(dataset: Dataset, row: &mut Row<'_, '_>) -> Detail {
    match dataset {
        Dataset::Apc => Detail::Apc(ApcItems {
            hospital_provider_spell_number: row.text("hospital_provider_spell_number"),
            episode_number: row.number("episode_number"),
            last_episode_in_spell: row.bool("last_episode_in_spell"),
            admission_method: row.text("admission_method"),
            admission_source: row.text("admission_source"),
            patient_classification: row.text("patient_classification"),
            discharge_method: row.text("discharge_method"),
            discharge_destination: row.text("discharge_destination"),
            admission_date: row.date("admission_date"),
            discharge_date: row.date("discharge_date"),
            episode_start_date: row.date("episode_start_date"),
            episode_end_date: row.date("episode_end_date"),
            main_specialty: row.text("main_specialty"),
            treatment_function_code: row.text("treatment_function_code"),
            primary_diagnosis: row.text("primary_diagnosis"),
            secondary_diagnoses: row.list("secondary_diagnoses"),
            primary_procedure: row.text("primary_procedure"),
            primary_procedure_date: row.date("primary_procedure_date"),
            secondary_procedures: row.list("secondary_procedures"),
            critical_care_days: row.number("critical_care_days"),
        }),
        Dataset::Op => Detail::Op(OpItems {
            appointment_date: row.date("appointment_date"),
            attended_or_did_not_attend: row.text("attended_or_did_not_attend"),
            first_attendance: row.text("first_attendance"),
            consultation_mechanism: row.text("consultation_mechanism"),
            treatment_function_code: row.text("treatment_function_code"),
            outcome_of_attendance: row.text("outcome_of_attendance"),
            primary_procedure: row.text("primary_procedure"),
            primary_diagnosis: row.text("primary_diagnosis"),
        }),
        Dataset::Ec => Detail::Ec(EcItems {
            arrival_datetime: row.datetime("arrival_datetime"),
            departure_datetime: row.datetime("departure_datetime"),
            department_type: row.text("department_type"),
            arrival_mode: row.text("arrival_mode"),
            acuity: row.number("acuity"),
            chief_complaint: row.text("chief_complaint"),
            investigations: row.list("investigations"),
            treatments: row.list("treatments"),
            diagnosis: row.text("diagnosis"),
            discharge_status: row.text("discharge_status"),
        }),
    }
}

/// Small valid submissions to build test cases from (shared by the crate's tests).
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A valid value for every item of `dataset`, overridable per item.
    pub fn row(dataset: Dataset, id: &str, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let base: Vec<(&str, &str)> = match dataset {
            Dataset::Apc => vec![
                ("hospital_provider_spell_number", "SP0001"),
                ("episode_number", "1"),
                ("last_episode_in_spell", "Y"),
                ("admission_method", "11"),
                ("patient_classification", "1"),
                ("admission_date", "2024-05-01"),
                ("discharge_date", "2024-05-03"),
                ("episode_start_date", "2024-05-01"),
                ("episode_end_date", "2024-05-03"),
                ("primary_diagnosis", "I10X"),
                ("secondary_diagnoses", "E119;J449"),
                ("primary_procedure", "W371"),
            ],
            Dataset::Op => vec![
                ("appointment_date", "2024-05-01"),
                ("attended_or_did_not_attend", "5"),
                ("first_attendance", "1"),
                ("treatment_function_code", "100"),
            ],
            Dataset::Ec => vec![
                ("arrival_datetime", "2024-05-01T10:15:00"),
                ("department_type", "01"),
                ("investigations", "252167001;167217005"),
            ],
        };
        let common = [
            ("cds_unique_id", id),
            ("cds_update_type", "9"),
            ("cds_applicable_datetime", "2024-06-01T09:00:00"),
            ("provider_code", "RRV"),
            ("commissioner_code", "D4U1Y"),
            ("gp_practice_code", "A81001"),
            ("nhs_number", "9434765919"),
            ("nhs_number_status", "01"),
            ("date_of_birth", "1950-02-03"),
            ("sex", "1"),
            ("postcode", "LS1 4AP"),
        ];
        items(dataset)
            .iter()
            .map(|it| {
                let v = overrides
                    .iter()
                    .chain(common.iter())
                    .chain(base.iter())
                    .find(|(k, _)| *k == it.name)
                    .map_or("", |(_, v)| v);
                (it.name.to_string(), v.to_string())
            })
            .collect()
    }

    /// A CSV submission of these rows (all rows have the same columns).
    pub fn csv(rows: &[Vec<(String, String)>]) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(Vec::new());
        if let Some(first) = rows.first() {
            w.write_record(first.iter().map(|(k, _)| k))
                .expect("write to memory");
        }
        for r in rows {
            w.write_record(r.iter().map(|(_, v)| v))
                .expect("write to memory");
        }
        w.into_inner().expect("flush to memory")
    }
}
