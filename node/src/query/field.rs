//! Fields a query can filter, group and aggregate on: stored columns and derived ones.
//!
//! | field | type | from |
//! |---|---|---|
//! | any stored column | its stored type | the segment |
//! | `activity_month` | text `YYYY-MM` | `activity_date` |
//! | `financial_year` | text `YYYY-YY` (April to March) | `activity_date` |
//! | `age_band` | text `0-4`, `5-9`, ... `85-89`, `90+` | `age_at_activity` |
//! | `hrg_chapter` | text, first two characters of `hrg` | `hrg` |
//! | `nhs_number_valid` | flag: an NHS number without W01 | `nhs_number`, `warnings` |
//! | `gp_practice_valid` | flag: a practice without W04 | `gp_practice_code`, `warnings` |
//! | `commissioner_valid` | flag: a commissioner without W05 | `commissioner_code`, `warnings` |
//! | `diagnosis_coded` | flag: a primary diagnosis (EC: diagnosis) without W06 | as named |
//! | `ungrouped` | flag: HRG `UZ01Z` | `hrg` |
//!
//! Flags sum as counts of rows where they hold.

use crate::model::{Dataset, Rule};
use crate::schema::stored_schema;
use crate::{Error, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, UInt16Type};
use chrono::{Datelike, NaiveDate};
use std::collections::HashMap;
use std::sync::Arc;

/// A derived text bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    ActivityMonth,
    FinancialYear,
    AgeBand,
    HrgChapter,
}

/// A derived flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    NhsNumberValid,
    GpPracticeValid,
    CommissionerValid,
    DiagnosisCoded,
    Ungrouped,
}

/// A resolved field of one dataset.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Column { name: String, ty: DataType },
    Bucket(Bucket),
    Flag(Flag),
}

/// How a field's values compare and print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// Integers, booleans (0/1), dates (days since 1970) and date-times (seconds): compared as i64.
    Number,
    Date,
    DateTime,
    Bool,
}

const BUCKETS: [(&str, Bucket); 4] = [
    ("activity_month", Bucket::ActivityMonth),
    ("financial_year", Bucket::FinancialYear),
    ("age_band", Bucket::AgeBand),
    ("hrg_chapter", Bucket::HrgChapter),
];

const FLAGS: [(&str, Flag); 5] = [
    ("nhs_number_valid", Flag::NhsNumberValid),
    ("gp_practice_valid", Flag::GpPracticeValid),
    ("commissioner_valid", Flag::CommissionerValid),
    ("diagnosis_coded", Flag::DiagnosisCoded),
    ("ungrouped", Flag::Ungrouped),
];

/// The derived fields' names, in the order a table lists them.
pub const DERIVED: [&str; 9] = [
    "activity_month",
    "financial_year",
    "age_band",
    "hrg_chapter",
    "nhs_number_valid",
    "gp_practice_valid",
    "commissioner_valid",
    "diagnosis_coded",
    "ungrouped",
];

impl Field {
    /// Resolves a field name for `dataset`, or says which names exist.
    pub fn resolve(dataset: Dataset, name: &str) -> Result<Field> {
        if let Some((_, b)) = BUCKETS.iter().find(|(n, _)| *n == name) {
            return Ok(Field::Bucket(*b));
        }
        if let Some((_, f)) = FLAGS.iter().find(|(n, _)| *n == name) {
            return Ok(Field::Flag(*f));
        }
        let schema = stored_schema(dataset);
        match schema.field_with_name(name) {
            Ok(f) if !matches!(f.data_type(), DataType::List(_)) => Ok(Field::Column {
                name: name.to_string(),
                ty: f.data_type().clone(),
            }),
            Ok(_) => Err(Error::InvalidArgument(format!(
                "field {name} of {dataset} is a list of codes: it cannot be filtered or grouped on"
            ))),
            Err(_) => Err(Error::InvalidArgument(format!(
                "{dataset} has no field {name}; fields are its stored columns and {}",
                BUCKETS
                    .iter()
                    .map(|b| b.0)
                    .chain(FLAGS.iter().map(|f| f.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Field::Bucket(_) => Kind::Text,
            Field::Flag(_) => Kind::Bool,
            Field::Column { ty, .. } => match ty {
                DataType::Utf8 | DataType::Dictionary(_, _) => Kind::Text,
                DataType::Date32 => Kind::Date,
                DataType::Timestamp(_, _) => Kind::DateTime,
                DataType::Boolean => Kind::Bool,
                _ => Kind::Number,
            },
        }
    }

    /// Whether the field can be summed or have a min/max (integers, pence, flags).
    pub fn is_numeric(&self) -> bool {
        match self {
            Field::Flag(_) => true,
            Field::Bucket(_) => false,
            Field::Column { ty, .. } => matches!(
                ty,
                DataType::Int64
                    | DataType::Int32
                    | DataType::UInt8
                    | DataType::UInt16
                    | DataType::UInt32
                    | DataType::Boolean
            ),
        }
    }

    /// The stored columns it is computed from.
    pub fn inputs(&self, dataset: Dataset) -> Vec<&str> {
        match self {
            Field::Column { name, .. } => vec![name.as_str()],
            Field::Bucket(Bucket::ActivityMonth | Bucket::FinancialYear) => vec!["activity_date"],
            Field::Bucket(Bucket::AgeBand) => vec!["age_at_activity"],
            Field::Bucket(Bucket::HrgChapter) | Field::Flag(Flag::Ungrouped) => vec!["hrg"],
            Field::Flag(Flag::NhsNumberValid) => vec!["nhs_number", "warnings"],
            Field::Flag(Flag::GpPracticeValid) => vec!["gp_practice_code", "warnings"],
            Field::Flag(Flag::CommissionerValid) => vec!["commissioner_code", "warnings"],
            Field::Flag(Flag::DiagnosisCoded) => match dataset {
                Dataset::Ec => vec!["diagnosis", "warnings"],
                _ => vec!["primary_diagnosis", "warnings"],
            },
        }
    }

    /// The field's values over a batch that holds its inputs.
    pub fn eval(&self, dataset: Dataset, batch: &RecordBatch) -> Result<ArrayRef> {
        let col = |name: &str| {
            batch.column_by_name(name).cloned().ok_or_else(|| {
                Error::InvalidArgument(format!("internal: batch lacks column {name}"))
            })
        };
        Ok(match self {
            Field::Column { name, .. } => col(name)?,
            Field::Bucket(b) => {
                let input = col(self.inputs(dataset)[0])?;
                Arc::new(bucket(*b, &input)?)
            }
            Field::Flag(f) => {
                let inputs = self.inputs(dataset);
                let input = col(inputs[0])?;
                let flags = match f {
                    Flag::Ungrouped => {
                        let text = cast(&input, &DataType::Utf8)?;
                        let text = text.as_string::<i32>();
                        (0..text.len())
                            .map(|i| Some(text.is_valid(i) && text.value(i) == "UZ01Z"))
                            .collect::<BooleanArray>()
                    }
                    _ => {
                        let rule = match f {
                            Flag::NhsNumberValid => Rule::NhsNumberInvalid,
                            Flag::GpPracticeValid => Rule::GpPracticeUnknown,
                            Flag::CommissionerValid => Rule::CommissionerUnknown,
                            _ => Rule::Icd10Malformed,
                        };
                        let bit = rule.warning_bit().unwrap_or(0);
                        let warnings = col(inputs[1])?;
                        let warnings = warnings
                            .as_any()
                            .downcast_ref::<UInt32Array>()
                            .ok_or_else(|| Error::InvalidArgument("warnings type".into()))?;
                        (0..input.len())
                            .map(|i| Some(input.is_valid(i) && warnings.value(i) & bit == 0))
                            .collect::<BooleanArray>()
                    }
                };
                Arc::new(flags)
            }
        })
    }
}

/// Derived text of each row (null where the input is null).
fn bucket(b: Bucket, input: &ArrayRef) -> Result<StringArray> {
    match b {
        Bucket::ActivityMonth | Bucket::FinancialYear => {
            let days = input
                .as_primitive_opt::<Date32Type>()
                .ok_or_else(|| Error::InvalidArgument("activity_date type".into()))?;
            // Few distinct dates per segment: format each once.
            let mut cache: HashMap<i32, String> = HashMap::new();
            Ok(days
                .iter()
                .map(|d| d.map(|d| cache.entry(d).or_insert_with(|| date_bucket(b, d)).clone()))
                .collect())
        }
        Bucket::AgeBand => {
            let ages = input
                .as_primitive_opt::<UInt16Type>()
                .ok_or_else(|| Error::InvalidArgument("age_at_activity type".into()))?;
            Ok(ages.iter().map(|a| a.map(age_band)).collect())
        }
        Bucket::HrgChapter => {
            let text = cast(input, &DataType::Utf8)?;
            Ok(text
                .as_string::<i32>()
                .iter()
                .map(|h| h.map(|h| h.chars().take(2).collect::<String>()))
                .collect())
        }
    }
}

pub fn date_of(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days.checked_add(719_163)?)
}

fn date_bucket(b: Bucket, days: i32) -> String {
    date_of(days).map_or_else(String::new, |d| bucket_of_date(b, d))
}

/// The activity month (`YYYY-MM`) or financial year (`2024-25`) of a date.
pub fn bucket_of_date(b: Bucket, d: NaiveDate) -> String {
    match b {
        Bucket::ActivityMonth => d.format("%Y-%m").to_string(),
        _ => {
            let start = if d.month() >= 4 {
                d.year()
            } else {
                d.year() - 1
            };
            format!("{start}-{:02}", (start + 1).rem_euclid(100))
        }
    }
}

/// The first day of month `YYYY-MM` (`None` if malformed). Called per month run of every
/// segment a query lists, so it parses the digits itself rather than through a format string.
pub fn first_of_month(month: &str) -> Option<NaiveDate> {
    let b = month.as_bytes();
    if b.len() != 7 || b[4] != b'-' {
        return None;
    }
    let digits = |s: &[u8]| {
        s.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    NaiveDate::from_ymd_opt(digits(&b[..4])? as i32, digits(&b[5..])?, 1)
}

/// The activity month or financial year of every day of month `YYYY-MM` (empty if malformed).
pub fn date_bucket_of_month(b: Bucket, month: &str) -> String {
    first_of_month(month).map_or_else(String::new, |first| bucket_of_date(b, first))
}

/// `0-4`, `5-9`, ..., `85-89`, `90+`.
pub fn age_band(age: u16) -> String {
    if age >= 90 {
        "90+".into()
    } else {
        let lo = age / 5 * 5;
        format!("{lo}-{}", lo + 4)
    }
}

/// Integer values of a numeric field (flags and booleans as 0/1).
pub fn as_i64(values: &ArrayRef) -> Result<Int64Array> {
    let cast_to = if values.data_type() == &DataType::Boolean {
        cast(&cast(values, &DataType::UInt8)?, &DataType::Int64)?
    } else {
        cast(values, &DataType::Int64)?
    };
    Ok(cast_to
        .as_primitive::<arrow::datatypes::Int64Type>()
        .clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_to_their_first_day_and_malformed_ones_to_none() {
        assert_eq!(
            first_of_month("2024-04"),
            NaiveDate::from_ymd_opt(2024, 4, 1)
        );
        assert_eq!(
            first_of_month("1999-12"),
            NaiveDate::from_ymd_opt(1999, 12, 1)
        );
        for bad in [
            "2024-13",
            "2024-00",
            "2024-4",
            "2024/04",
            "20a4-04",
            "",
            "2024-04-01",
        ] {
            assert_eq!(first_of_month(bad), None, "{bad}");
        }
    }

    #[test]
    fn buckets_follow_the_financial_year_and_five_year_bands() {
        let d = |y, m, day| {
            NaiveDate::from_ymd_opt(y, m, day)
                .expect("date")
                .num_days_from_ce()
                - 719_163
        };
        assert_eq!(
            date_bucket(Bucket::FinancialYear, d(2024, 3, 31)),
            "2023-24"
        );
        assert_eq!(date_bucket(Bucket::FinancialYear, d(2024, 4, 1)), "2024-25");
        assert_eq!(date_bucket(Bucket::FinancialYear, d(1999, 4, 1)), "1999-00");
        assert_eq!(date_bucket(Bucket::ActivityMonth, d(2024, 4, 1)), "2024-04");
        assert_eq!(age_band(0), "0-4");
        assert_eq!(age_band(19), "15-19");
        assert_eq!(age_band(89), "85-89");
        assert_eq!(age_band(90), "90+");
    }

    #[test]
    fn unknown_and_list_fields_are_refused_by_name() {
        let e = Field::resolve(Dataset::Apc, "colour").expect_err("unknown");
        assert!(e.to_string().contains("no field colour"), "{e}");
        let e = Field::resolve(Dataset::Apc, "secondary_diagnoses").expect_err("list");
        assert!(e.to_string().contains("list of codes"), "{e}");
        assert!(Field::resolve(Dataset::Op, "hrg_chapter").is_ok());
    }
}

#[cfg(test)]
mod derived_tests {
    use super::*;

    #[test]
    fn every_derived_name_resolves_and_every_bucket_and_flag_is_listed() {
        for name in DERIVED {
            let f = Field::resolve(Dataset::Apc, name).expect("resolves");
            assert!(matches!(f, Field::Bucket(_) | Field::Flag(_)), "{name}");
        }
        for (name, _) in BUCKETS {
            assert!(DERIVED.contains(&name), "{name}");
        }
        for (name, _) in FLAGS {
            assert!(DERIVED.contains(&name), "{name}");
        }
    }
}
