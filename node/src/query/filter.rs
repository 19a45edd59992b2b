//! Filter values, row masks, and what a partition (provider, month) decides of a filter.

use super::field::{Bucket, Field, Kind, as_i64, bucket_of_date, first_of_month};
use super::spec::{Filter, Pred, Value};
use crate::Result;
use crate::model::Dataset;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{and, cast};
use arrow::datatypes::{DataType, Int32Type};
use arrow::error::ArrowError;
use chrono::{Datelike, NaiveDate};
use std::cmp::Ordering;

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
    filters: &[&Filter],
    batch: &RecordBatch,
    tests: &mut DictTests,
) -> Result<Option<BooleanArray>> {
    combine(dataset, filters, batch, tests, and)
}

/// The rows of `batch` that pass at least one of `filters` (`None`: no filters, every row).
pub fn any_mask(
    dataset: Dataset,
    filters: &[&Filter],
    batch: &RecordBatch,
    tests: &mut DictTests,
) -> Result<Option<BooleanArray>> {
    combine(dataset, filters, batch, tests, arrow::compute::or)
}

/// One thread's memory of filters tested on dictionaries: chunks sliced from one column share
/// its dictionary, so each value is tested once per query, not once per chunk. Holding the
/// dictionary keeps its address from being reused by another while it is remembered.
#[derive(Default)]
pub struct DictTests {
    /// (the filter's address, only ever compared; the dictionary; its values' outcomes)
    recent: Vec<(usize, ArrayRef, std::sync::Arc<Vec<bool>>)>,
}

/// Dictionaries remembered per thread.
const RECENT_DICTIONARIES: usize = 8;

impl DictTests {
    fn passes(
        &mut self,
        f: &Filter,
        dict_values: &ArrayRef,
        pass: &dyn Fn(&str) -> bool,
    ) -> Result<std::sync::Arc<Vec<bool>>> {
        let id = f as *const Filter as usize;
        if let Some((_, _, p)) = self
            .recent
            .iter()
            .find(|(g, v, _)| *g == id && std::sync::Arc::ptr_eq(v, dict_values))
        {
            return Ok(p.clone());
        }
        let names = cast(dict_values, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let passes = std::sync::Arc::new(
            (0..names.len())
                .map(|i| names.is_valid(i) && pass(names.value(i)))
                .collect::<Vec<bool>>(),
        );
        if self.recent.len() == RECENT_DICTIONARIES {
            self.recent.remove(0);
        }
        self.recent.push((id, dict_values.clone(), passes.clone()));
        Ok(passes)
    }
}

/// Each filter's mask, folded with `op`.
fn combine(
    dataset: Dataset,
    filters: &[&Filter],
    batch: &RecordBatch,
    tests: &mut DictTests,
    op: fn(&BooleanArray, &BooleanArray) -> std::result::Result<BooleanArray, ArrowError>,
) -> Result<Option<BooleanArray>> {
    let mut out: Option<BooleanArray> = None;
    for f in filters {
        let m = filter_mask(dataset, f, batch, tests)?;
        out = Some(match out {
            Some(prev) => op(&prev, &m)?,
            None => m,
        });
    }
    Ok(out)
}

/// The rows of `batch` whose value of `f` passes (nulls never pass).
fn filter_mask(
    dataset: Dataset,
    f: &Filter,
    batch: &RecordBatch,
    tests: &mut DictTests,
) -> Result<BooleanArray> {
    // Text tested through a dictionary: once per dictionary value, then the keys mapped (an HRG
    // chapter: once per HRG).
    let dictionary = match &f.field {
        Field::Bucket(Bucket::HrgChapter) => batch.column_by_name("hrg"),
        Field::Column { name, .. } if f.field.kind() == Kind::Text => batch.column_by_name(name),
        _ => None,
    };
    if let Some(dict) = dictionary.and_then(|c| c.as_dictionary_opt::<Int32Type>()) {
        let passes = if f.field == Field::Bucket(Bucket::HrgChapter) {
            tests.passes(f, dict.values(), &|h| {
                let end = h.char_indices().nth(2).map_or(h.len(), |(i, _)| i);
                f.pred.test_text(&h[..end])
            })?
        } else {
            tests.passes(f, dict.values(), &|v| f.pred.test_text(v))?
        };
        let keys = dict.keys();
        let k = keys.values();
        let bits = if keys.null_count() == 0 {
            BooleanBuffer::collect_bool(k.len(), |i| passes[k[i] as usize])
        } else {
            BooleanBuffer::collect_bool(k.len(), |i| keys.is_valid(i) && passes[k[i] as usize])
        };
        return Ok(BooleanArray::new(bits, None));
    }
    let values = f.field.eval(dataset, batch)?;
    test_array(&f.field, &f.pred, &values)
}

/// Lists longer than this are looked up in a hash set per row rather than scanned: a filter of
/// thousands of values (up to `max_filter_values`) must not cost rows x values.
const SCANNED_LIST: usize = 16;

fn test_array(field: &Field, pred: &Pred, values: &ArrayRef) -> Result<BooleanArray> {
    let (list, keep) = match pred {
        Pred::In(l) if l.len() > SCANNED_LIST => (Some(l), true),
        Pred::NotIn(l) if l.len() > SCANNED_LIST => (Some(l), false),
        _ => (None, true),
    };
    if field.kind() != Kind::Text {
        let ints = as_i64(values)?;
        let v = ints.values();
        let bits = match list {
            Some(l) => {
                let set: foldhash::HashSet<i64> = l
                    .iter()
                    .filter_map(|x| match x {
                        Value::Int(i) => Some(*i),
                        Value::Text(_) => None,
                    })
                    .collect();
                BooleanBuffer::collect_bool(v.len(), |i| {
                    ints.is_valid(i) && set.contains(&v[i]) == keep
                })
            }
            None => BooleanBuffer::collect_bool(v.len(), |i| {
                ints.is_valid(i) && pred.test(&Value::Int(v[i]))
            }),
        };
        return Ok(BooleanArray::new(bits, None));
    }
    let text = cast(values, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let bits = match list {
        Some(l) => {
            let set: foldhash::HashSet<&str> = l
                .iter()
                .filter_map(|x| match x {
                    Value::Text(t) => Some(t.as_str()),
                    Value::Int(_) => None,
                })
                .collect();
            BooleanBuffer::collect_bool(text.len(), |i| {
                text.is_valid(i) && set.contains(text.value(i)) == keep
            })
        }
        None => BooleanBuffer::collect_bool(text.len(), |i| {
            text.is_valid(i) && pred.test_text(text.value(i))
        }),
    };
    Ok(BooleanArray::new(bits, None))
}

/// What partition (provider, `YYYY-MM`) decides of a filter: every row passes, none does, or
/// (`None`) it depends on the row. Provider, activity month and financial year are constants of
/// a partition; an activity date range is decided unless it cuts through the month.
pub fn decide(f: &Filter, provider: &str, month: &str) -> Option<bool> {
    let first = || first_of_month(month);
    let days = |d: NaiveDate| Value::Int(i64::from(d.num_days_from_ce() - 719_163));
    match (&f.field, f.name.as_str()) {
        (Field::Column { .. }, "provider_code") => Some(f.pred.test(&Value::Text(provider.into()))),
        (Field::Bucket(_), "activity_month") => Some(f.pred.test(&Value::Text(month.into()))),
        (Field::Bucket(b), "financial_year") => {
            Some(f.pred.test(&Value::Text(bucket_of_date(*b, first()?))))
        }
        (Field::Column { .. }, "activity_date") => {
            let first = first()?;
            let last = first
                .checked_add_months(chrono::Months::new(1))
                .and_then(|d| d.pred_opt())
                .unwrap_or(first);
            let (lo, hi) = (days(first), days(last));
            if !f.pred.may_pass(&lo, &hi) {
                return Some(false);
            }
            match &f.pred {
                Pred::Range(..) if f.pred.test(&lo) && f.pred.test(&hi) => Some(true),
                Pred::NotIn(values)
                    if values.iter().all(|v| {
                        cmp(v, &lo) == Ordering::Less || cmp(v, &hi) == Ordering::Greater
                    }) =>
                {
                    Some(true)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The filters whose value is decided per partition: they read no column.
pub fn partition_field(f: &Filter) -> bool {
    matches!(
        (&f.field, f.name.as_str()),
        (Field::Column { .. }, "provider_code")
            | (Field::Bucket(_), "activity_month")
            | (Field::Bucket(_), "financial_year")
    )
}

/// What a partition leaves of a query's filters and scope: `None` when it holds no row that can
/// pass; else the filters and the scope filters still to test per row (`Some(vec![])` for the
/// scope: every row is in scope).
pub fn residual<'a>(
    filters: &'a [Filter],
    scope: &'a [Filter],
    provider: &str,
    month: &str,
) -> Option<(Vec<&'a Filter>, Vec<&'a Filter>)> {
    let mut rows = Vec::new();
    for f in filters {
        match decide(f, provider, month) {
            Some(false) => return None,
            Some(true) => {}
            None => rows.push(f),
        }
    }
    if scope.is_empty() {
        return Some((rows, Vec::new()));
    }
    let mut any = Vec::new();
    for f in scope {
        match decide(f, provider, month) {
            Some(true) => return Some((rows, Vec::new())),
            Some(false) => {}
            None => any.push(f),
        }
    }
    if any.is_empty() {
        return None;
    }
    Some((rows, any))
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
