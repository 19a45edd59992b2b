//! A CSV reader for the oracle: submission files (`docs/rules.md` §1) read back into [`Rec`]s, so
//! that files written by hand (the node's golden cases) can be priced by the oracle too.
//!
//! It reads what the generator writes and what §1 allows: columns in any order, values trimmed,
//! dates `YYYY-MM-DD`, date-times with `T` or a space, booleans `Y`/`N`/`true`/`false`/`1`/`0`,
//! `;`-separated lists. It checks formats only as far as it needs to build a record; the
//! whole-submission rules (R01-R08) are the node's, not the oracle's. A deletion (`1`) keeps only
//! its key items and its activity date, when the record has one.

use super::model::{Apc, Common, Dataset, Detail, Ec, Op, Rec};
use chrono::{NaiveDate, NaiveDateTime};
use std::collections::HashMap;

/// Reads the records of one submission file of `dataset`, in file order.
pub fn records(dataset: Dataset, csv: &[u8]) -> Result<Vec<Rec>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(csv);
    let header = reader
        .headers()
        .map_err(|e| format!("header: {e}"))?
        .clone();
    let columns: HashMap<String, usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| (h.trim().to_string(), i))
        .collect();
    for name in dataset.header() {
        if !columns.contains_key(name) {
            return Err(format!("column {name} missing"));
        }
    }
    let mut out = Vec::new();
    for (n, row) in reader.records().enumerate() {
        let row = row.map_err(|e| format!("record {}: {e}", n + 1))?;
        let cells = Cells {
            columns: &columns,
            row: &row,
            ordinal: n + 1,
        };
        out.push(cells.record(dataset)?);
    }
    Ok(out)
}

/// One CSV row, read by column name.
struct Cells<'a> {
    columns: &'a HashMap<String, usize>,
    row: &'a csv::StringRecord,
    ordinal: usize,
}

impl Cells<'_> {
    fn err(&self, item: &str, value: &str, what: &str) -> String {
        format!(
            "record {}: item {item}: '{value}' is not {what}",
            self.ordinal
        )
    }

    /// The trimmed value of a column (blank when the column is absent).
    fn text(&self, item: &str) -> String {
        self.columns
            .get(item)
            .and_then(|&i| self.row.get(i))
            .map_or(String::new(), |v| v.trim().to_string())
    }

    fn opt_date(&self, item: &str) -> Result<Option<NaiveDate>, String> {
        let v = self.text(item);
        if v.is_empty() {
            return Ok(None);
        }
        NaiveDate::parse_from_str(&v, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| self.err(item, &v, "a date"))
    }

    fn date(&self, item: &str) -> Result<NaiveDate, String> {
        self.opt_date(item)?
            .ok_or_else(|| self.err(item, "", "a date"))
    }

    fn opt_datetime(&self, item: &str) -> Result<Option<NaiveDateTime>, String> {
        let v = self.text(item);
        if v.is_empty() {
            return Ok(None);
        }
        NaiveDateTime::parse_from_str(&v, "%Y-%m-%dT%H:%M:%S")
            .or_else(|_| NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M:%S"))
            .map(Some)
            .map_err(|_| self.err(item, &v, "a date-time"))
    }

    fn datetime(&self, item: &str) -> Result<NaiveDateTime, String> {
        self.opt_datetime(item)?
            .ok_or_else(|| self.err(item, "", "a date-time"))
    }

    fn opt_number(&self, item: &str) -> Result<Option<u32>, String> {
        let v = self.text(item);
        if v.is_empty() {
            return Ok(None);
        }
        v.parse::<u32>()
            .map(Some)
            .map_err(|_| self.err(item, &v, "a number"))
    }

    fn bool(&self, item: &str) -> Result<bool, String> {
        let v = self.text(item);
        match v.as_str() {
            "" | "N" | "n" | "false" | "0" => Ok(false),
            "Y" | "y" | "true" | "1" => Ok(true),
            _ => Err(self.err(item, &v, "Y or N")),
        }
    }

    fn list(&self, item: &str) -> Vec<String> {
        self.text(item)
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn common(&self) -> Result<Common, String> {
        let upsert = match self.text("cds_update_type").as_str() {
            "9" => true,
            "1" => false,
            v => return Err(self.err("cds_update_type", v, "9 or 1")),
        };
        Ok(Common {
            cds_unique_id: self.text("cds_unique_id"),
            upsert,
            applicable: self.datetime("cds_applicable_datetime")?,
            provider: self.text("provider_code"),
            site: self.text("site_code"),
            commissioner: self.text("commissioner_code"),
            gp_practice: self.text("gp_practice_code"),
            nhs_number: self.text("nhs_number"),
            nhs_number_status: self.text("nhs_number_status"),
            local_patient_id: self.text("local_patient_id"),
            date_of_birth: self.opt_date("date_of_birth")?,
            sex: self.text("sex"),
            ethnic_category: self.text("ethnic_category"),
            postcode: self.text("postcode"),
        })
    }

    /// The activity date of a deletion, if its record carries one.
    fn deletion_date(&self, dataset: Dataset) -> NaiveDate {
        let date = match dataset {
            Dataset::Apc => self.opt_date("episode_start_date").ok().flatten(),
            Dataset::Op => self.opt_date("appointment_date").ok().flatten(),
            Dataset::Ec => self
                .opt_datetime("arrival_datetime")
                .ok()
                .flatten()
                .map(|t| t.date()),
        };
        date.unwrap_or_default()
    }

    fn record(&self, dataset: Dataset) -> Result<Rec, String> {
        let common = self.common()?;
        if !common.upsert {
            return Ok(Rec {
                common,
                detail: Detail::Delete(self.deletion_date(dataset)),
            });
        }
        let detail = match dataset {
            Dataset::Apc => Detail::Apc(Box::new(Apc {
                spell: self.text("hospital_provider_spell_number"),
                episode_number: self
                    .opt_number("episode_number")?
                    .ok_or_else(|| self.err("episode_number", "", "a number"))?,
                last_episode: self.bool("last_episode_in_spell")?,
                admission_method: self.text("admission_method"),
                admission_source: self.text("admission_source"),
                patient_classification: self.text("patient_classification"),
                discharge_method: self.text("discharge_method"),
                discharge_destination: self.text("discharge_destination"),
                admission_date: self.date("admission_date")?,
                discharge_date: self.opt_date("discharge_date")?,
                episode_start: self.date("episode_start_date")?,
                episode_end: self.opt_date("episode_end_date")?,
                main_specialty: self.text("main_specialty"),
                tfc: self.text("treatment_function_code"),
                primary_diagnosis: self.text("primary_diagnosis"),
                secondary_diagnoses: self.list("secondary_diagnoses"),
                primary_procedure: self.text("primary_procedure"),
                primary_procedure_date: self.opt_date("primary_procedure_date")?,
                secondary_procedures: self.list("secondary_procedures"),
                critical_care_days: self.opt_number("critical_care_days")?,
            })),
            Dataset::Op => Detail::Op(Op {
                appointment_date: self.date("appointment_date")?,
                attended: self.text("attended_or_did_not_attend"),
                first_attendance: self.text("first_attendance"),
                consultation_mechanism: self.text("consultation_mechanism"),
                tfc: self.text("treatment_function_code"),
                outcome: self.text("outcome_of_attendance"),
                primary_procedure: self.text("primary_procedure"),
                primary_diagnosis: self.text("primary_diagnosis"),
            }),
            Dataset::Ec => {
                let acuity = self.opt_number("acuity")?.unwrap_or(0);
                Detail::Ec(Ec {
                    arrival: self.datetime("arrival_datetime")?,
                    departure: self.opt_datetime("departure_datetime")?,
                    department_type: self.text("department_type"),
                    arrival_mode: self.text("arrival_mode"),
                    acuity: u8::try_from(acuity)
                        .map_err(|_| self.err("acuity", &acuity.to_string(), "a small number"))?,
                    chief_complaint: self.text("chief_complaint"),
                    investigations: self.list("investigations"),
                    treatments: self.list("treatments"),
                    diagnosis: self.text("diagnosis"),
                    discharge_status: self.text("discharge_status"),
                })
            }
        };
        Ok(Rec { common, detail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // What the generator writes reads back as the same records.
    #[test]
    fn reads_back_what_the_generator_writes() {
        let rec = Rec {
            common: Common {
                cds_unique_id: "E1".into(),
                upsert: true,
                applicable: NaiveDate::from_ymd_opt(2024, 6, 1)
                    .and_then(|d| d.and_hms_opt(9, 30, 0))
                    .expect("date-time"),
                provider: "RR9".into(),
                nhs_number: "9434765919".into(),
                date_of_birth: NaiveDate::from_ymd_opt(1980, 6, 15),
                ..Common::default()
            },
            detail: Detail::Op(Op {
                appointment_date: NaiveDate::from_ymd_opt(2024, 5, 10).expect("date"),
                attended: "5".into(),
                first_attendance: "1".into(),
                tfc: "100".into(),
                ..Op::default()
            }),
        };
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(Dataset::Op.header()).expect("header");
        w.write_record(rec.cells(Dataset::Op)).expect("row");
        let bytes = w.into_inner().expect("flush");
        assert_eq!(records(Dataset::Op, &bytes), Ok(vec![rec]));
    }

    #[test]
    fn a_missing_column_or_bad_date_is_an_error() {
        assert!(records(Dataset::Op, b"cds_unique_id\nX\n").is_err());
        let header = Dataset::Ec.header().join(",");
        let mut row = vec![""; Dataset::Ec.header().len()];
        row[0] = "X";
        row[1] = "9";
        row[2] = "2024-13-01T00:00:00";
        let csv = format!("{header}\n{}\n", row.join(","));
        assert!(records(Dataset::Ec, csv.as_bytes()).is_err());
    }
}
