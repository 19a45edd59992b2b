//! Filter values, row masks and pruning (by partition and by Parquet row-group statistics).

use super::field::{Field, Kind, as_i64};
use super::{Filter, Pred, Value};
use crate::model::Dataset;
use crate::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{and, cast};
use arrow::datatypes::{DataType, Int32Type};
use arrow::error::ArrowError;
use chrono::{Datelike, NaiveDate, NaiveDateTime};
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::statistics::Statistics;
use std::cmp::Ordering;

/// Parses a filter value for a field's kind.
pub fn parse_value(field: &Field, name: &str, s: &str) -> Result<Value> {
    let bad = |what: &str| Error::InvalidArgument(format!("filter on {name}: '{s}' is not {what}"));
    Ok(match field.kind() {
        Kind::Text => Value::Text(s.to_string()),
        Kind::Number => Value::Int(s.trim().parse().map_err(|_| bad("an integer"))?),
        Kind::Bool => Value::Int(match s.trim() {
            "true" | "Y" | "1" => 1,
            "false" | "N" | "0" => 0,
            _ => return Err(bad("true or false")),
        }),
        Kind::Date => {
            let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                .map_err(|_| bad("a date YYYY-MM-DD"))?;
            Value::Int(i64::from(d.num_days_from_ce() - 719_163))
        }
        Kind::DateTime => {
            let t = NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S")
                .map_err(|_| bad("a date-time YYYY-MM-DDTHH:MM:SS"))?;
            Value::Int(t.and_utc().timestamp())
        }
    })
}

fn cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Text(a), Value::Text(b)) => a.cmp(b),
        (Value::Int(a), Value::Int(b)) => a.cmp(b),
        // Values are parsed per field, so kinds never mix; order them anyway.
        (Value::Text(_), Value::Int(_)) => Ordering::Greater,
        (Value::Int(_), Value::Text(_)) => Ordering::Less,
    }
}

impl Pred {
    /// Whether a (non-null) value passes.
    pub fn test(&self, v: &Value) -> bool {
        match self {
            Pred::In(values) => values.iter().any(|x| cmp(x, v) == Ordering::Equal),
            Pred::NotIn(values) => !values.iter().any(|x| cmp(x, v) == Ordering::Equal),
            Pred::Range(lo, hi) => {
                lo.as_ref().is_none_or(|lo| cmp(v, lo) != Ordering::Less)
                    && hi.as_ref().is_none_or(|hi| cmp(v, hi) != Ordering::Greater)
            }
        }
    }

    /// Whether a text value passes, without allocating (filters on text fields hold text).
    pub fn test_text(&self, v: &str) -> bool {
        let cmp = |x: &Value| match x {
            Value::Text(x) => x.as_str().cmp(v),
            Value::Int(_) => Ordering::Less,
        };
        match self {
            Pred::In(values) => values.iter().any(|x| cmp(x) == Ordering::Equal),
            Pred::NotIn(values) => !values.iter().any(|x| cmp(x) == Ordering::Equal),
            Pred::Range(lo, hi) => {
                lo.as_ref().is_none_or(|lo| cmp(lo) != Ordering::Greater)
                    && hi.as_ref().is_none_or(|hi| cmp(hi) != Ordering::Less)
            }
        }
    }

    /// Whether some value in `[min, max]` may pass.
    fn may_pass(&self, min: &Value, max: &Value) -> bool {
        match self {
            Pred::In(values) => values
                .iter()
                .any(|x| cmp(x, min) != Ordering::Less && cmp(x, max) != Ordering::Greater),
            Pred::NotIn(values) => {
                !(cmp(min, max) == Ordering::Equal
                    && values.iter().any(|x| cmp(x, min) == Ordering::Equal))
            }
            Pred::Range(lo, hi) => {
                lo.as_ref().is_none_or(|lo| cmp(max, lo) != Ordering::Less)
                    && hi
                        .as_ref()
                        .is_none_or(|hi| cmp(min, hi) != Ordering::Greater)
            }
        }
    }
}

/// The rows of `batch` that pass every filter (nulls never pass).
pub fn mask(
    dataset: Dataset,
    filters: &[Filter],
    batch: &RecordBatch,
) -> Result<Option<BooleanArray>> {
    combine(dataset, filters, batch, and)
}

/// The rows of `batch` that pass at least one of `filters` (`None`: no filters, every row).
pub fn any_mask(
    dataset: Dataset,
    filters: &[Filter],
    batch: &RecordBatch,
) -> Result<Option<BooleanArray>> {
    combine(dataset, filters, batch, arrow::compute::or)
}

/// Each filter's mask, folded with `op`.
fn combine(
    dataset: Dataset,
    filters: &[Filter],
    batch: &RecordBatch,
    op: fn(&BooleanArray, &BooleanArray) -> std::result::Result<BooleanArray, ArrowError>,
) -> Result<Option<BooleanArray>> {
    let mut out: Option<BooleanArray> = None;
    for f in filters {
        let values = f.field.eval(dataset, batch)?;
        let m = test_array(&f.field, &f.pred, &values)?;
        out = Some(match out {
            Some(prev) => op(&prev, &m)?,
            None => m,
        });
    }
    Ok(out)
}

fn test_array(field: &Field, pred: &Pred, values: &ArrayRef) -> Result<BooleanArray> {
    if field.kind() != Kind::Text {
        let ints = as_i64(values)?;
        return Ok(ints
            .iter()
            .map(|v| Some(v.is_some_and(|v| pred.test(&Value::Int(v)))))
            .collect());
    }
    if let DataType::Dictionary(_, _) = values.data_type() {
        // Test each dictionary value once, then map the keys.
        let dict = values
            .as_dictionary_opt::<Int32Type>()
            .ok_or_else(|| Error::InvalidArgument("dictionary keys are not Int32".into()))?;
        let names = cast(dict.values(), &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let pass: Vec<bool> = (0..names.len())
            .map(|i| names.is_valid(i) && pred.test_text(names.value(i)))
            .collect();
        let keys = dict.keys();
        return Ok((0..keys.len())
            .map(|i| Some(keys.is_valid(i) && pass[keys.value(i) as usize]))
            .collect());
    }
    let text = cast(values, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    Ok((0..text.len())
        .map(|i| Some(text.is_valid(i) && pred.test_text(text.value(i))))
        .collect())
}

/// Whether a partition (provider, `YYYY-MM`) may hold rows passing every filter.
pub fn partition_may_match(filters: &[Filter], provider: &str, month: &str) -> bool {
    let first_day = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").ok();
    filters.iter().all(|f| {
        let Some(first) = first_day else { return true };
        let days = |d: NaiveDate| Value::Int(i64::from(d.num_days_from_ce() - 719_163));
        match (&f.field, f.name.as_str()) {
            (Field::Column { .. }, "provider_code") => f.pred.test(&Value::Text(provider.into())),
            (Field::Bucket(_), "activity_month") => f.pred.test(&Value::Text(month.into())),
            (Field::Bucket(_), "financial_year") => {
                let start = if first.month() >= 4 {
                    first.year()
                } else {
                    first.year() - 1
                };
                let fy = format!("{start}-{:02}", (start + 1).rem_euclid(100));
                f.pred.test(&Value::Text(fy))
            }
            (Field::Column { .. }, "activity_date") => {
                let last = first
                    .checked_add_months(chrono::Months::new(1))
                    .and_then(|d| d.pred_opt())
                    .unwrap_or(first);
                f.pred.may_pass(&days(first), &days(last))
            }
            _ => true,
        }
    })
}

/// Whether a row group may hold rows passing every filter, by its column statistics (only
/// integer-valued columns are used: dates, ages, lengths of stay, pence).
pub fn row_group_may_match(filters: &[Filter], rg: &RowGroupMetaData) -> bool {
    filters.iter().all(|f| {
        // Signed physical types only: unsigned columns' statistics use another sort order.
        if !matches!(
            f.field,
            Field::Column {
                ty: DataType::Int64 | DataType::Int32 | DataType::Date32,
                ..
            }
        ) {
            return true;
        }
        let Some(col) = rg
            .columns()
            .iter()
            .find(|c| c.column_path().string() == f.name)
        else {
            return true;
        };
        let range = match col.statistics() {
            Some(Statistics::Int32(s)) => s
                .min_opt()
                .zip(s.max_opt())
                .map(|(a, b)| (i64::from(*a), i64::from(*b))),
            Some(Statistics::Int64(s)) => s.min_opt().zip(s.max_opt()).map(|(a, b)| (*a, *b)),
            _ => None,
        };
        match range {
            Some((min, max)) => f.pred.may_pass(&Value::Int(min), &Value::Int(max)),
            None => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The allocation-free text test agrees with the general one on every operator.
    #[test]
    fn text_predicates_agree() {
        let t = |s: &str| Value::Text(s.into());
        let preds = [
            Pred::In(vec![t("EL"), t("NEL")]),
            Pred::NotIn(vec![t("EL")]),
            Pred::Range(Some(t("B")), Some(t("D"))),
            Pred::Range(None, Some(t("B"))),
            Pred::Range(Some(t("C")), None),
        ];
        for p in &preds {
            for v in ["", "A", "B", "C", "D", "E", "EL", "NEL", "DC"] {
                assert_eq!(p.test_text(v), p.test(&t(v)), "{p:?} {v}");
            }
        }
    }
}
