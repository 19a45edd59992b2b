//! Submission files (CSV or Parquet) into typed [`Record`]s, with the whole-submission format rules
//! R01 (unreadable), R02 (header), R03 (mandatory item) and R04 (item format).
//!
//! Every byte here is untrusted: nothing panics on bad input (the Parquet reader, which can panic on
//! malformed files, runs under `catch_unwind`), and every finding names the record and the item.
//! Parsing does not stop at the first bad record: the report lists up to [`MAX_ISSUES`] of them.
//!
//! What a submission may make the node hold is bounded ([`SubmissionLimits`]): an item longer
//! than `max_field_bytes` is an `R04` finding on its record (and is never copied); more than
//! `max_submission_rows` records, or records that take more than `max_submission_decoded_mib`
//! once decoded, refuse the whole submission as soon as the count passes the limit
//! ([`parse_limited`]'s `Err`). A Parquet file is checked before anything is decoded (its
//! footer's row count, its pages' sizes: see [`super::parquet`]).

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

/// Parses a submission file of `dataset` under the default limits; a file over them is an
/// `R01` rejection naming the limit. The format is recognised by content (Parquet's `PAR1`
/// magic), not by name.
pub fn parse(dataset: Dataset, bytes: &[u8]) -> Parsed {
    parse_limited(dataset, bytes, &SubmissionLimits::default())
        .unwrap_or_else(|e| Err(Rejected::one(Rule::FileUnreadable, e.to_string())))
}

/// Parses a submission file of `dataset` within `limits`. `Err` (`InvalidArgument`, naming the
/// limit and its setting) when the file is larger than the node accepts: that is no property of
/// the data, so the submission is refused, not rejected (nothing is recorded, and it may be sent
/// again once the limit is raised or the file split).
pub fn parse_limited(
    dataset: Dataset,
    bytes: &[u8],
    limits: &SubmissionLimits,
) -> NodeResult<Parsed> {
    if bytes.len() > limits.max_bytes {
        return Err(Error::InvalidArgument(format!(
            "the submission file is {} bytes: over the limit of {} bytes (setting {})",
            bytes.len(),
            limits.max_bytes,
            setting(keys::MAX_SUBMISSION_MIB)
        )));
    }
    if bytes.is_empty() {
        return Ok(Err(Rejected::one(
            Rule::FileUnreadable,
            "the file is empty (0 bytes)".into(),
        )));
    }
    if bytes.starts_with(b"PAR1") {
        super::parquet::parse(dataset, bytes, limits)
    } else {
        parse_csv(dataset, bytes, limits)
    }
}

/// The most a file's records can take decoded (what [`parse_limited`] counts against
/// `max_submission_decoded_mib`), known before parsing: for CSV the text of the fields is part of
/// the file and a record takes at least one line; a Parquet file may decode to any size, up to
/// the limit.
pub fn decoded_bound(bytes: &[u8], limits: &SubmissionLimits) -> u64 {
    if bytes.starts_with(b"PAR1") {
        return limits.max_decoded_bytes;
    }
    let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    (bytes.len() as u64)
        .saturating_add(lines.saturating_mul(ROW_BYTES))
        .min(limits.max_decoded_bytes)
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

fn parse_csv(dataset: Dataset, bytes: &[u8], limits: &SubmissionLimits) -> NodeResult<Parsed> {
    // Check the text encoding first: binary bytes would otherwise surface as a misleading field
    // count error on whatever line they happen to break.
    if let Err(e) = std::str::from_utf8(bytes) {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64
            + 1;
        return Ok(Err(Rejected {
            issues: vec![Issue {
                ordinal: line.checked_sub(1).filter(|o| *o > 0),
                cds_unique_id: None,
                item: None,
                rule: Rule::FileUnreadable,
                message: format!(
                    "bytes that are not UTF-8 text at line {line} (byte offset {}): is this a binary file?",
                    e.valid_up_to()
                ),
            }],
            more: 0,
        }));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => {
            return Ok(Err(Rejected::one(
                Rule::FileUnreadable,
                format!(
                    "cannot read the header row as CSV text: {}",
                    csv_message(&e)
                ),
            )));
        }
    };
    let positions = match resolve_header(dataset, &header) {
        Ok(p) => p,
        Err(rejected) => return Ok(Err(rejected)),
    };
    let items = items(dataset);
    let mut findings = Findings::new();
    let mut meter = Meter::new(limits);
    let mut records = Vec::new();
    let mut row = csv::StringRecord::new();
    let mut ordinal = 0u64;
    loop {
        match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                ordinal += 1;
                let values: Vec<&str> = positions.iter().map(|&p| &row[p]).collect();
                meter.row(values.iter().map(|v| v.len() as u64).sum())?;
                let cells = Cells {
                    values: &values,
                    lengths: None,
                };
                if let Some(r) =
                    build_record(dataset, &items, ordinal, cells, limits, &mut findings)
                {
                    records.push(r);
                }
            }
            Err(e) => {
                // A broken row (truncated file, binary bytes, wrong field count) makes the rest of
                // the file unreadable: reject, naming where it broke.
                findings.push(Issue {
                    ordinal: Some(ordinal + 1),
                    cds_unique_id: None,
                    item: None,
                    rule: Rule::FileUnreadable,
                    message: format!("unreadable CSV: {}", csv_message(&e)),
                });
                return Ok(findings.into_result(Vec::new()));
            }
        }
    }
    if ordinal == 0 {
        findings.push(Issue {
            ordinal: None,
            cds_unique_id: None,
            item: None,
            rule: Rule::FileUnreadable,
            message: "the file has a header but no records".into(),
        });
    }
    Ok(findings.into_result(records))
}

fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { pos, err } => format!(
            "bytes that are not UTF-8 text at line {} (field {}): is this a binary file?",
            pos.as_ref().map_or(0, |p| p.line()),
            err.field() + 1
        ),
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "line {} has {len} fields where the header has {expected_len} (truncated or malformed row)",
            pos.as_ref().map_or(0, |p| p.line())
        ),
        _ => e.to_string(),
    }
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
        match NaiveDate::parse_from_str(v, "%Y-%m-%d") {
            Ok(d) => Some(d),
            Err(_) => {
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

/// Accepts `YYYY-MM-DDTHH:MM:SS` or a space instead of `T` (fractional seconds are not allowed).
pub fn parse_datetime(v: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S"))
        .ok()
}

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
    let common = Common {
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
    };
    let detail = match dataset {
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
    };
    if row.bad {
        return None;
    }
    Some(Record {
        ordinal,
        common,
        detail,
    })
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

#[cfg(test)]
mod tests {
    use super::fixtures::{csv, row};
    use super::*;
    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::DataType;

    fn rules(r: &Rejected) -> Vec<Rule> {
        r.issues.iter().map(|i| i.rule).collect()
    }

    // A valid file of each dataset parses into typed records with every item in place.
    #[test]
    fn valid_files_parse() {
        for ds in Dataset::ALL {
            let bytes = csv(&[row(ds, "BRRV00001", &[]), row(ds, "BRRV00002", &[])]);
            let recs = parse(ds, &bytes).expect("valid file");
            assert_eq!(recs.len(), 2);
            assert_eq!(recs[1].ordinal, 2);
            assert_eq!(recs[1].common.cds_unique_id, "BRRV00002");
            assert_eq!(recs[0].dataset(), ds);
            assert_eq!(recs[0].activity_date(), NaiveDate::from_ymd_opt(2024, 5, 1));
        }
        let recs = parse(Dataset::Apc, &csv(&[row(Dataset::Apc, "B1", &[])])).expect("valid");
        match &recs[0].detail {
            Detail::Apc(a) => {
                assert_eq!(a.secondary_diagnoses, vec!["E119", "J449"]);
                assert!(a.last_episode_in_spell);
                assert_eq!(a.episode_number, Some(1));
            }
            other => panic!("wrong detail {other:?}"),
        }
    }

    // A 0-byte file and a header-only file are unreadable submissions, not empty successes.
    #[test]
    fn empty_files_are_rejected() {
        let r = parse(Dataset::Op, b"").expect_err("0 bytes");
        assert_eq!(rules(&r), vec![Rule::FileUnreadable]);
        assert!(r.issues[0].message.contains("0 bytes"));
        let header_only = csv(&[row(Dataset::Op, "B1", &[])]);
        let first_line = header_only
            .split(|b| *b == b'\n')
            .next()
            .expect("header")
            .to_vec();
        let r = parse(Dataset::Op, &first_line).expect_err("no records");
        assert!(r.issues[0].message.contains("no records"));
    }

    // Binary garbage is named as such, with the line where it was found.
    #[test]
    fn binary_garbage_is_rejected() {
        let mut bytes = csv(&[row(Dataset::Ec, "B1", &[])]);
        bytes.extend_from_slice(&[0xff, 0xfe, 0x00, 0x9c, b',', 0xc3, b'\n']);
        let r = parse(Dataset::Ec, &bytes).expect_err("garbage");
        assert_eq!(rules(&r), vec![Rule::FileUnreadable]);
        assert!(r.issues[0].message.contains("not UTF-8"), "{:?}", r.issues);
        let r = parse(Dataset::Ec, &[0u8, 1, 2, 3, 0xff, 0xfe, 7, 8]).expect_err("all binary");
        assert_eq!(rules(&r), vec![Rule::FileUnreadable]);
    }

    // A file cut in the middle of a record is rejected naming the broken line.
    #[test]
    fn truncated_file_is_rejected() {
        let bytes = csv(&[row(Dataset::Apc, "B1", &[]), row(Dataset::Apc, "B2", &[])]);
        let cut = &bytes[..bytes.len() - 40];
        let r = parse(Dataset::Apc, cut).expect_err("truncated");
        assert_eq!(rules(&r), vec![Rule::FileUnreadable]);
        assert_eq!(r.issues[0].ordinal, Some(2));
        assert!(r.issues[0].message.contains("line 3"), "{}", r.issues[0]);
    }

    // Wrong columns: an unknown column and a missing one are both named.
    #[test]
    fn wrong_columns_are_rejected() {
        let mut rec = row(Dataset::Op, "B1", &[]);
        rec.retain(|(k, _)| k != "first_attendance");
        rec.push(("favourite_colour".into(), "blue".into()));
        let r = parse(Dataset::Op, &csv(&[rec])).expect_err("header");
        assert_eq!(rules(&r), vec![Rule::HeaderInvalid, Rule::HeaderInvalid]);
        let text: Vec<String> = r.issues.iter().map(|i| i.message.clone()).collect();
        assert!(text.iter().any(|m| m.contains("favourite_colour")));
        assert!(
            text.iter()
                .any(|m| m.contains("missing column 'first_attendance'"))
        );
        // An APC file sent as outpatients is a wrong header too.
        let r = parse(Dataset::Op, &csv(&[row(Dataset::Apc, "B1", &[])])).expect_err("dataset");
        assert!(rules(&r).iter().all(|x| *x == Rule::HeaderInvalid));
    }

    // Bad dates and numbers name the record, its id, the item and the value; all are listed.
    #[test]
    fn bad_values_name_record_item_and_value() {
        let rows = [
            row(Dataset::Apc, "B1", &[]),
            row(Dataset::Apc, "B2", &[("admission_date", "2024-13-45")]),
            row(Dataset::Apc, "B3", &[("episode_number", "x1")]),
            row(
                Dataset::Apc,
                "B4",
                &[("cds_applicable_datetime", "yesterday")],
            ),
            row(Dataset::Apc, "B5", &[("cds_update_type", "7")]),
        ];
        let r = parse(Dataset::Apc, &csv(&rows)).expect_err("bad values");
        assert_eq!(r.issues.len(), 4);
        assert!(r.issues.iter().all(|i| i.rule == Rule::ItemFormatInvalid));
        let first = &r.issues[0];
        assert_eq!(first.ordinal, Some(2));
        assert_eq!(first.cds_unique_id.as_deref(), Some("B2"));
        assert_eq!(first.item.as_deref(), Some("admission_date"));
        assert_eq!(
            first.to_string(),
            "record 2 (B2): item admission_date: '2024-13-45' is not a date (YYYY-MM-DD) [R04-ITEM-FORMAT]"
        );
    }

    // Mandatory items: always for keys, only for upserts for the rest; deletions need only keys.
    #[test]
    fn mandatory_items() {
        let rows = [
            row(Dataset::Op, "", &[]),
            row(Dataset::Op, "B2", &[("appointment_date", "")]),
            row(
                Dataset::Op,
                "B3",
                &[("cds_update_type", "1"), ("appointment_date", "")],
            ),
        ];
        let r = parse(Dataset::Op, &csv(&rows)).expect_err("mandatory");
        let found: Vec<(Option<u64>, Option<String>)> = r
            .issues
            .iter()
            .map(|i| (i.ordinal, i.item.clone()))
            .collect();
        assert_eq!(
            found,
            vec![
                (Some(1), Some("cds_unique_id".to_string())),
                (Some(2), Some("appointment_date".to_string())),
            ]
        );
        assert!(
            r.issues
                .iter()
                .all(|i| i.rule == Rule::MandatoryItemMissing)
        );
    }

    // The rejection lists at most MAX_ISSUES findings and counts the rest.
    #[test]
    fn findings_are_capped_and_counted() {
        let rows: Vec<_> = (0..150)
            .map(|i| {
                row(
                    Dataset::Ec,
                    &format!("B{i}"),
                    &[("arrival_datetime", "soon")],
                )
            })
            .collect();
        let r = parse(Dataset::Ec, &csv(&rows)).expect_err("many");
        assert_eq!(r.issues.len(), MAX_ISSUES);
        assert_eq!(r.more, 50);
    }

    // An item over the field limit is a finding on its record naming the limit, and is not
    // quoted; a key over the data dictionary's 35 characters likewise, and the record's other
    // findings do not quote it either.
    #[test]
    fn long_items_and_keys_are_findings_that_quote_nothing() {
        let long = "Q".repeat(5_000);
        let key = format!("B{}", "9".repeat(35));
        let rows = [
            row(Dataset::Op, "B1", &[("local_patient_id", &long)]),
            row(Dataset::Op, &key, &[("appointment_date", "someday")]),
            row(Dataset::Op, "B3", &[]),
        ];
        let r = parse(Dataset::Op, &csv(&rows)).expect_err("findings");
        let text: Vec<String> = r.issues.iter().map(|i| i.to_string()).collect();
        assert_eq!(r.issues.len(), 3, "{text:?}");
        assert_eq!(r.issues[0].item.as_deref(), Some("local_patient_id"));
        assert_eq!(
            r.issues[0].message,
            "5000 bytes: over the limit of 4096 bytes per item (setting max_field_bytes \
             (--max-field-bytes, SUS_MAX_FIELD_BYTES))"
        );
        assert!(r.issues[1..].iter().all(|i| i.cds_unique_id.is_none()));
        assert!(
            text.iter()
                .any(|t| t.contains("36 characters: the data dictionary allows at most 35")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .all(|t| !t.contains("QQQQ") && !t.contains("99999"))
        );
        // A long value quoted by a format finding is cut short.
        let odd = format!("2024-{}", "1".repeat(100));
        let r = parse(
            Dataset::Op,
            &csv(&[row(Dataset::Op, "B1", &[("appointment_date", &odd)])]),
        )
        .expect_err("format");
        assert!(
            r.issues[0].message.contains("(105 bytes)"),
            "{}",
            r.issues[0]
        );
    }

    // More rows, or more decoded bytes, than the limits refuse the whole submission, naming the
    // limit; a file over the byte limit is refused before it is read.
    #[test]
    fn submissions_over_the_limits_are_refused_naming_them() {
        let rows: Vec<_> = (0..10)
            .map(|i| row(Dataset::Ec, &format!("B{i}"), &[]))
            .collect();
        let bytes = csv(&rows);
        let tight = |f: &dyn Fn(&mut SubmissionLimits)| {
            let mut l = SubmissionLimits::default();
            f(&mut l);
            parse_limited(Dataset::Ec, &bytes, &l)
                .expect_err("over a limit")
                .to_string()
        };
        let e = tight(&|l| l.max_rows = 9);
        assert!(e.contains("more than 9 records"), "{e}");
        assert!(e.contains("max_submission_rows"), "{e}");
        let e = tight(&|l| l.max_decoded_bytes = 3 * ROW_BYTES);
        assert!(e.contains("max_submission_decoded_mib"), "{e}");
        let e = tight(&|l| l.max_bytes = 100);
        assert!(e.contains("max_submission_mib"), "{e}");
        let ok = parse_limited(Dataset::Ec, &bytes, &SubmissionLimits::default())
            .expect("within the limits")
            .expect("valid");
        assert_eq!(ok.len(), 10);
        // The reservation made before parsing covers what parsing counts.
        let bound = decoded_bound(&bytes, &SubmissionLimits::default());
        let l = SubmissionLimits {
            max_decoded_bytes: bound,
            ..SubmissionLimits::default()
        };
        parse_limited(Dataset::Ec, &bytes, &l)
            .expect("the bound is an upper bound")
            .expect("valid");
    }

    fn to_parquet(batch: &arrow::array::RecordBatch) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).expect("writer");
        w.write(batch).expect("write");
        w.close().expect("close");
        out
    }

    // Parquet submissions with string columns parse exactly like the same CSV.
    #[test]
    fn parquet_with_string_columns_matches_csv() {
        let rows = [row(Dataset::Ec, "B1", &[]), row(Dataset::Ec, "B2", &[])];
        let bytes = csv(&rows);
        let schema = Arc::new(arrow::datatypes::Schema::new(
            rows[0]
                .iter()
                .map(|(k, _)| arrow::datatypes::Field::new(k, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let cols: Vec<ArrayRef> = (0..rows[0].len())
            .map(|c| {
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r[c].1.as_str()).collect::<Vec<_>>(),
                )) as ArrayRef
            })
            .collect();
        let batch = arrow::array::RecordBatch::try_new(schema, cols).expect("batch");
        let from_parquet = parse(Dataset::Ec, &to_parquet(&batch)).expect("parquet");
        let from_csv = parse(Dataset::Ec, &bytes).expect("csv");
        assert_eq!(from_parquet, from_csv);
    }

    // A file that starts like Parquet but is garbage is rejected, never a panic.
    #[test]
    fn corrupt_parquet_is_rejected() {
        let mut bytes = b"PAR1".to_vec();
        bytes.extend((0..500u32).map(|i| (i * 7919 % 251) as u8));
        bytes.extend_from_slice(b"PAR1");
        let r = parse(Dataset::Op, &bytes).expect_err("corrupt");
        assert_eq!(rules(&r), vec![Rule::FileUnreadable]);
        assert!(r.issues[0].message.contains("Parquet"));
    }

    use std::sync::Arc;
}
