//! Submission files (CSV or Parquet) into typed [`Record`]s, with the whole-submission format rules
//! R01 (unreadable), R02 (header), R03 (mandatory item) and R04 (item format).
//!
//! Every byte here is untrusted: nothing panics on bad input (the Parquet reader, which can panic on
//! malformed files, runs under `catch_unwind`), and every finding names the record and the item.
//! Parsing does not stop at the first bad record: the report lists up to [`MAX_ISSUES`] of them.

use crate::model::{
    ApcItems, Common, Dataset, Detail, EcItems, Issue, OpItems, Record, Rule, UpdateType,
};
use crate::schema::{Item, Mandatory, items};
use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use chrono::{NaiveDate, NaiveDateTime};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::HashMap;

/// The most issues a rejection lists; the rest are counted.
pub const MAX_ISSUES: usize = 100;

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
    fn one(rule: Rule, message: String) -> Rejected {
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

/// Parses a submission file of `dataset`. The format is recognised by content (Parquet's `PAR1`
/// magic), not by name.
pub fn parse(dataset: Dataset, bytes: &[u8]) -> Parsed {
    if bytes.is_empty() {
        return Err(Rejected::one(
            Rule::FileUnreadable,
            "the file is empty (0 bytes)".into(),
        ));
    }
    if bytes.starts_with(b"PAR1") {
        parse_parquet(dataset, bytes)
    } else {
        parse_csv(dataset, bytes)
    }
}

/// Collects issues up to the cap.
struct Findings {
    issues: Vec<Issue>,
    more: u64,
}

impl Findings {
    fn push(&mut self, issue: Issue) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(issue);
        } else {
            self.more += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.issues.is_empty()
    }

    fn into_result(self, records: Vec<Record>) -> Parsed {
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
fn resolve_header(dataset: Dataset, header: &[String]) -> Result<Vec<usize>, Rejected> {
    let items = items(dataset);
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut problems = Vec::new();
    for (i, name) in header.iter().enumerate() {
        let name = name.trim().trim_start_matches('\u{feff}');
        if !items.iter().any(|it| it.name == name) {
            problems.push(format!("unknown column '{name}' for dataset {dataset}"));
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
        Err(Rejected {
            issues: problems
                .into_iter()
                .map(|message| Issue {
                    ordinal: None,
                    cds_unique_id: None,
                    item: None,
                    rule: Rule::HeaderInvalid,
                    message,
                })
                .collect(),
            more: 0,
        })
    }
}

fn parse_csv(dataset: Dataset, bytes: &[u8]) -> Parsed {
    // Check the text encoding first: binary bytes would otherwise surface as a misleading field
    // count error on whatever line they happen to break.
    if let Err(e) = std::str::from_utf8(bytes) {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64
            + 1;
        return Err(Rejected {
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
        });
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => {
            return Err(Rejected::one(
                Rule::FileUnreadable,
                format!(
                    "cannot read the header row as CSV text: {}",
                    csv_message(&e)
                ),
            ));
        }
    };
    let positions = resolve_header(dataset, &header)?;
    let items = items(dataset);
    let mut findings = Findings {
        issues: Vec::new(),
        more: 0,
    };
    let mut records = Vec::new();
    let mut row = csv::StringRecord::new();
    let mut ordinal = 0u64;
    loop {
        match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                ordinal += 1;
                let values: Vec<&str> = positions.iter().map(|&p| &row[p]).collect();
                if let Some(r) = build_record(dataset, &items, ordinal, &values, &mut findings) {
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
                return findings.into_result(Vec::new());
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
    findings.into_result(records)
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

fn parse_parquet(dataset: Dataset, bytes: &[u8]) -> Parsed {
    let data = bytes::Bytes::copy_from_slice(bytes);
    // Malformed Parquet can panic inside the reader; never let a submitter crash the node.
    let outcome = std::panic::catch_unwind(|| parquet_records(dataset, data));
    match outcome {
        Ok(parsed) => parsed,
        Err(_) => Err(Rejected::one(
            Rule::FileUnreadable,
            "malformed Parquet file (the reader failed on its structure)".into(),
        )),
    }
}

fn parquet_records(dataset: Dataset, data: bytes::Bytes) -> Parsed {
    let unreadable = |e: &dyn std::fmt::Display| {
        Rejected::one(Rule::FileUnreadable, format!("unreadable Parquet: {e}"))
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(data).map_err(|e| unreadable(&e))?;
    let header: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let positions = resolve_header(dataset, &header)?;
    let reader = builder
        .with_batch_size(8192)
        .build()
        .map_err(|e| unreadable(&e))?;
    let items = items(dataset);
    let mut findings = Findings {
        issues: Vec::new(),
        more: 0,
    };
    let mut records = Vec::new();
    let mut ordinal = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| unreadable(&e))?;
        let columns: Vec<StringArray> = positions
            .iter()
            .map(|&p| to_strings(batch.column(p)))
            .collect::<Result<_, _>>()
            .map_err(|e| unreadable(&e))?;
        for r in 0..batch.num_rows() {
            ordinal += 1;
            let values: Vec<&str> = columns
                .iter()
                .map(|c| if c.is_null(r) { "" } else { c.value(r) })
                .collect();
            if let Some(rec) = build_record(dataset, &items, ordinal, &values, &mut findings) {
                records.push(rec);
            }
        }
    }
    if ordinal == 0 {
        return Err(Rejected::one(
            Rule::FileUnreadable,
            "the file has no records".into(),
        ));
    }
    findings.into_result(records)
}

/// Any Parquet column as text in the CSV formats: lists joined by `;`, booleans `Y`/`N`.
fn to_strings(col: &ArrayRef) -> Result<StringArray, arrow::error::ArrowError> {
    match col.data_type() {
        DataType::List(_) | DataType::LargeList(_) => {
            let mut out = arrow::array::StringBuilder::new();
            for i in 0..col.len() {
                if col.is_null(i) {
                    out.append_null();
                    continue;
                }
                let inner = match col.data_type() {
                    DataType::List(_) => col.as_list::<i32>().value(i),
                    _ => col.as_list::<i64>().value(i),
                };
                let inner = to_strings(&inner)?;
                let parts: Vec<&str> = inner.iter().flatten().collect();
                out.append_value(parts.join(";"));
            }
            Ok(out.finish())
        }
        DataType::Boolean => Ok(col
            .as_boolean()
            .iter()
            .map(|b| b.map(|b| if b { "Y" } else { "N" }))
            .collect()),
        DataType::Timestamp(_, _) => {
            let text = cast(col, &DataType::Utf8)?;
            // arrow renders timestamps as `YYYY-MM-DDTHH:MM:SS`, the CSV format.
            Ok(text.as_string::<i32>().clone())
        }
        _ => Ok(cast(col, &DataType::Utf8)?.as_string::<i32>().clone()),
    }
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
                    format!("'{v}' is not a date (YYYY-MM-DD)"),
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
                    format!("'{v}' is not a date-time (YYYY-MM-DDTHH:MM:SS)"),
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
                    format!("'{v}' is not Y or N"),
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
                    format!("'{v}' is not a whole number in range"),
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

/// Builds one record, reporting format and mandatory-item findings; `None` if the record is bad.
fn build_record(
    dataset: Dataset,
    items: &[Item],
    ordinal: u64,
    values: &[&str],
    findings: &mut Findings,
) -> Option<Record> {
    let id = values.first().map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut row = Row {
        items,
        values,
        ordinal,
        id: id.map(str::to_string),
        findings,
        bad: false,
    };
    let update_type = match row.raw("cds_update_type") {
        "" => None,
        "9" => Some(UpdateType::Upsert),
        "1" => Some(UpdateType::Delete),
        v => {
            row.fail(
                "cds_update_type",
                Rule::ItemFormatInvalid,
                format!("'{v}' is not an update type (9 original/replacement, 1 deletion)"),
            );
            None
        }
    };
    // Mandatory items: always, and for upserts (a bad update type is already reported).
    let upsert = update_type != Some(UpdateType::Delete);
    for (it, v) in items.iter().zip(values) {
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
