//! HES disclosure control for the anonymised tier (domain spec section 8): one implementation
//! that every anonymised path uses (`Query.Aggregate` finished tables, `Query.Activity`).
//!
//! ```text
//!  query ─► check: group-by and filters on the allow-list only; count, patients, flags summed,
//!           money and day sums only (no min/max) ─► PERMISSION_DENIED naming the field
//!  merged table (exact values) ─► exempt? (national scope, only dataset/period/pod) ─► exact
//!        │ otherwise
//!        ▼
//!  suppress: records 1-7 ─► secondary suppression on every margin line, to a fixed point
//!            each other count: its own 1-7 and the records' pattern ─► the same closure
//!            sums: the records' pattern
//!        ▼
//!  show: counts rounded to 5 (0 stays 0), sums to 2 significant figures, `*` where suppressed;
//!        TOTAL from the exact values, then the same rules; order by what is shown; limit
//! ```
//!
//! The arithmetic (rounding, margin lines, secondary suppression) is `sus_core::disclosure`.
//!
//! Controlled cells are text (`*`, `0`, `15`, `120000`): the finished table's aggregate columns
//! are `Utf8`, and a grouped table ends with a `TOTAL` row.

use crate::query::{Field, Func, Query};
use crate::{Error, Result};
use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Schema};
use std::cmp::Ordering;
use std::sync::Arc;
pub use sus_core::disclosure::{SMALL, round_sig2, round5, show_count};
use sus_core::disclosure::{close, margin_lines};
use sus_proto::partial::{GroupKey, Partial};

/// Group-by and filter fields allowed at the anonymised tier (besides the dataset, which every
/// request names): organisation codes, period, point of delivery, HRG (episode and spell) and
/// HRG chapter, treatment function, age band and sex.
pub const DIMENSIONS: [&str; 13] = [
    "provider_code",
    "site_code",
    "commissioner_code",
    "gp_practice_code",
    "financial_year",
    "activity_month",
    "pod",
    "hrg",
    "spell_hrg",
    "hrg_chapter",
    "treatment_function_code",
    "age_band",
    "sex",
];

/// The dimensions of the national exemption: a national-scope figure broken down by these (and
/// the dataset) only is shown exactly.
pub const NATIONAL_DIMENSIONS: [&str; 3] = ["activity_month", "financial_year", "pod"];

/// Fields that may be summed at the anonymised tier: money (pence) and days.
pub const SUMMABLE: [&str; 7] = [
    "price",
    "base_price",
    "excess_payment",
    "excess_bed_days",
    "episode_los",
    "spell_los",
    "critical_care_days",
];

/// Stored boolean columns that may be summed (as counts). The derived data-quality flags
/// (`nhs_number_valid`, ...) may be summed too. `restricted` may not: how many legally
/// restricted records a group holds is itself sensitive.
pub const COUNTABLE_BOOLEANS: [&str; 2] = ["pbr_excluded", "last_episode_in_spell"];

/// What a column of a controlled table holds, which decides its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The records of each group: every other figure of a cell whose record count is suppressed
    /// is suppressed too.
    Records,
    /// Another count: distinct patients, a flag summed, changes counted.
    Count,
    /// Money or days summed: shown only where the record count is, to 2 significant figures.
    Sum,
}

fn allowed_text() -> String {
    format!(
        "dataset, {} (organisation codes, period, point of delivery, HRG, HRG chapter, treatment \
         function, age band, sex)",
        DIMENSIONS.join(", ")
    )
}

fn denied(message: String) -> Error {
    Error::PermissionDenied(message)
}

/// Checks a query for the anonymised tier and says how each aggregate is controlled: the first
/// record count is [`Measure::Records`]. Refuses, naming the field and what is allowed, group-by
/// or filter fields off the allow-list, minima and maxima, and sums of anything but flags, money
/// and days.
pub fn check(query: &Query) -> Result<Vec<Measure>> {
    for (name, _) in &query.group_by {
        if !DIMENSIONS.contains(&name.as_str()) {
            return Err(denied(format!(
                "{name} cannot be grouped on at the anonymised tier: group-by and filters there \
                 take only {}; exact dates, ages, clinical codes and identifiers need the \
                 pseudonymised tier",
                allowed_text()
            )));
        }
    }
    for f in &query.filters {
        if !DIMENSIONS.contains(&f.name.as_str()) {
            return Err(denied(format!(
                "{} cannot be filtered on at the anonymised tier: group-by and filters there \
                 take only {}; exact dates, ages, clinical codes, identifiers, prices and flags \
                 need the pseudonymised tier",
                f.name,
                allowed_text()
            )));
        }
    }
    let aggregates = || {
        format!(
            "aggregates there are count, patients, sums of flags (counted like counts) and sums \
             of {}",
            SUMMABLE.join(", ")
        )
    };
    let mut records = false;
    query
        .aggs
        .iter()
        .map(|a| match (a.func, &a.field) {
            (Func::Count, _) if !records => {
                records = true;
                Ok(Measure::Records)
            }
            (Func::Count | Func::DistinctPatients, _) => Ok(Measure::Count),
            (Func::Sum, Some(Field::Flag(_))) => Ok(Measure::Count),
            (Func::Sum, Some(Field::Column { name, .. }))
                if COUNTABLE_BOOLEANS.contains(&name.as_str()) =>
            {
                Ok(Measure::Count)
            }
            (Func::Sum, Some(Field::Column { name, .. })) if SUMMABLE.contains(&name.as_str()) => {
                Ok(Measure::Sum)
            }
            (Func::Min | Func::Max, field) => Err(denied(format!(
                "{} of {} is not available at the anonymised tier: it shows one record's value \
                 exactly; {}",
                if a.func == Func::Min { "min" } else { "max" },
                field_name(field),
                aggregates()
            ))),
            (_, field) => Err(denied(format!(
                "sum of {} is not available at the anonymised tier: {}",
                field_name(field),
                aggregates()
            ))),
        })
        .collect()
}

/// The name a caller gave an aggregate's input field.
fn field_name(field: &Option<Field>) -> String {
    use crate::query::field::{Bucket, Flag};
    match field {
        Some(Field::Column { name, .. }) => name.clone(),
        Some(Field::Flag(f)) => match f {
            Flag::NhsNumberValid => "nhs_number_valid",
            Flag::GpPracticeValid => "gp_practice_valid",
            Flag::CommissionerValid => "commissioner_valid",
            Flag::DiagnosisCoded => "diagnosis_coded",
            Flag::Ungrouped => "ungrouped",
        }
        .into(),
        Some(Field::Bucket(b)) => match b {
            Bucket::ActivityMonth => "activity_month",
            Bucket::FinancialYear => "financial_year",
            Bucket::AgeBand => "age_band",
            Bucket::HrgChapter => "hrg_chapter",
        }
        .into(),
        None => "records".into(),
    }
}

/// Whether `query` read with a national scope is a figure for England as a whole broken down
/// only by dataset, period and point of delivery (in group-by and filters): such figures are
/// exact. Any other field, or a narrower scope, gets the full control.
pub fn exempt(national_scope: bool, query: &Query) -> bool {
    national_scope
        && query.scope.is_empty()
        && query
            .filters
            .iter()
            .all(|f| NATIONAL_DIMENSIONS.contains(&f.name.as_str()))
        && query
            .group_by
            .iter()
            .all(|(n, _)| NATIONAL_DIMENSIONS.contains(&n.as_str()))
}

/// One column of a table before control.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub measure: Measure,
    /// The exact value of each row.
    pub values: Vec<i64>,
    /// Used for control only, left out of the output (the record count added to a query that
    /// asked for none).
    pub hidden: bool,
}

/// A grouped table of exact values: one row per group.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Group-by column names (none: one row, no `TOTAL`).
    pub keys: Vec<String>,
    /// The key values of each row, distinct.
    pub rows: Vec<GroupKey>,
    pub columns: Vec<Column>,
}

impl Table {
    /// The table of a merged partial, rows in key order; `measures` per aggregate, `hidden` the
    /// aggregate to leave out of the output.
    pub fn from_partial(
        partial: &Partial,
        measures: &[Measure],
        hidden: Option<usize>,
    ) -> Result<Table> {
        if measures.len() != partial.aggs.len() {
            return Err(Error::InvalidArgument(format!(
                "internal: {} measures for {} aggregates",
                measures.len(),
                partial.aggs.len()
            )));
        }
        let mut groups: Vec<(&GroupKey, &Vec<sus_proto::partial::State>)> =
            partial.groups.iter().collect();
        groups.sort_by(|a, b| a.0.cmp(b.0));
        let columns = partial
            .aggs
            .iter()
            .enumerate()
            .map(|(i, (name, _))| Column {
                name: name.clone(),
                measure: measures[i],
                values: groups
                    .iter()
                    .map(|(_, s)| s[i].value().unwrap_or(0))
                    .collect(),
                hidden: hidden == Some(i),
            })
            .collect();
        Ok(Table {
            keys: partial.keys.clone(),
            rows: groups.into_iter().map(|(k, _)| k.clone()).collect(),
            columns,
        })
    }

    fn records(&self) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.measure == Measure::Records)
    }
}

/// The margin lines of a table ([`margin_lines`]).
fn lines(table: &Table) -> Vec<Vec<usize>> {
    margin_lines(&table.rows, table.keys.len())
}

/// Which cells of each column are suppressed (`*`): primary (counts 1-7), the record count's
/// pattern carried to every column of the cell, and secondary suppression on every margin.
pub fn suppress(table: &Table) -> Result<Vec<Vec<bool>>> {
    let n = table.rows.len();
    let lines = lines(table);
    let mut of_cell: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (l, line) in lines.iter().enumerate() {
        for &c in line {
            of_cell[c].push(l);
        }
    }
    let small = |v: i64| (1..=SMALL).contains(&v);
    let records = table.records();
    let by_records: Vec<bool> = match records {
        Some(r) => {
            let values = &table.columns[r].values;
            let mut s: Vec<bool> = values.iter().map(|&v| small(v)).collect();
            close(values, &mut s, &vec![1; n], &lines, &of_cell);
            s
        }
        None => vec![false; n],
    };
    table
        .columns
        .iter()
        .map(|col| {
            if col.values.len() != n {
                return Err(Error::InvalidArgument(format!(
                    "internal: column {} has {} values for {n} rows",
                    col.name,
                    col.values.len()
                )));
            }
            Ok(match col.measure {
                Measure::Records => by_records.clone(),
                Measure::Sum if records.is_none() => {
                    return Err(Error::InvalidArgument(format!(
                        "internal: sum {} without a record count to control it",
                        col.name
                    )));
                }
                Measure::Sum => by_records.clone(),
                Measure::Count => {
                    let mut s: Vec<bool> = (0..n)
                        .map(|c| by_records[c] || small(col.values[c]))
                        .collect();
                    // A cell hidden only for its record count may hold 0; any other suppressed
                    // count is at least 1.
                    let least: Vec<i128> = (0..n).map(|c| i128::from(!by_records[c])).collect();
                    close(&col.values, &mut s, &least, &lines, &of_cell);
                    s
                }
            })
        })
        .collect()
}

/// How a finished table is shown.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A national figure broken down only by dataset, period and point of delivery: exact.
    pub exempt: bool,
    /// Output columns to order by (descending when true), applied to the shown values.
    pub order: Vec<(String, bool)>,
    /// At most this many rows before the `TOTAL` (0: all).
    pub limit: usize,
}

/// A shown value as ordering sees it: `*` before every number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Shown {
    Star,
    Number(i128),
}

/// The controlled cells of one table: row-major text, then the `TOTAL` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Controlled {
    /// Output column names: keys, then the aggregates that are not hidden.
    pub columns: Vec<String>,
    /// Rows in output order (ordered, limited); `TOTAL` last for a grouped table.
    pub rows: Vec<Vec<Option<String>>>,
}

/// Controls `table`: suppression, rounding, the `TOTAL` row (from exact values), then order and
/// limit on the shown values (so neither can reveal more than the full table does).
pub fn control(table: &Table, options: &Options) -> Result<Controlled> {
    let k = table.keys.len();
    let mut table = table.clone();
    if k == 0 && table.rows.is_empty() {
        // No group at all: the single figure is zero.
        table.rows.push(Vec::new());
        for c in &mut table.columns {
            c.values.push(0);
        }
    }
    let suppressed = if options.exempt {
        vec![vec![false; table.rows.len()]; table.columns.len()]
    } else {
        suppress(&table)?
    };
    let visible: Vec<usize> = (0..table.columns.len())
        .filter(|&c| !table.columns[c].hidden)
        .collect();
    let show = |measure: Measure, v: i128, hidden: bool| -> (String, Shown) {
        if hidden {
            return ("*".into(), Shown::Star);
        }
        let v = if options.exempt {
            v
        } else {
            match measure {
                Measure::Sum => round_sig2(v),
                _ => round5(v),
            }
        };
        (v.to_string(), Shown::Number(v))
    };
    let mut rows: Vec<(Vec<Option<String>>, Vec<Shown>)> = (0..table.rows.len())
        .map(|r| {
            let mut text: Vec<Option<String>> = table.rows[r].clone();
            let mut order = Vec::new();
            for &c in &visible {
                let col = &table.columns[c];
                let (t, o) = show(col.measure, i128::from(col.values[r]), suppressed[c][r]);
                text.push(Some(t));
                order.push(o);
            }
            (text, order)
        })
        .collect();
    let mut names: Vec<String> = table.keys.clone();
    names.extend(visible.iter().map(|&c| table.columns[c].name.clone()));
    let mut sort_by = Vec::new();
    for (column, desc) in &options.order {
        let at = names.iter().position(|n| n == column).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "cannot order by {column}: not an output column ({})",
                names.join(", ")
            ))
        })?;
        sort_by.push((at, *desc));
    }
    // Rows are in key order already: a stable sort keeps it among ties.
    rows.sort_by(|a, b| {
        for &(at, desc) in &sort_by {
            let ord = if at < k {
                a.0[at].cmp(&b.0[at])
            } else {
                a.1[at - k].cmp(&b.1[at - k])
            };
            let ord = if desc { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
    if options.limit > 0 {
        rows.truncate(options.limit);
    }
    let mut out: Vec<Vec<Option<String>>> = rows.into_iter().map(|(t, _)| t).collect();
    if k > 0 {
        let total =
            |c: usize| -> i128 { table.columns[c].values.iter().map(|&v| i128::from(v)).sum() };
        let records_small = table
            .records()
            .is_some_and(|r| (1..=i128::from(SMALL)).contains(&total(r)));
        let mut row: Vec<Option<String>> = (0..k)
            .map(|i| (i == 0).then(|| "TOTAL".to_string()))
            .collect();
        for &c in &visible {
            let col = &table.columns[c];
            let t = total(c);
            let hidden = !options.exempt
                && (records_small
                    || (col.measure != Measure::Sum && (1..=i128::from(SMALL)).contains(&t)));
            row.push(Some(show(col.measure, t, hidden).0));
        }
        out.push(row);
    }
    Ok(Controlled {
        columns: names,
        rows: out,
    })
}

impl Controlled {
    /// The table as one Arrow batch of text columns.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let fields: Vec<arrow::datatypes::Field> = self
            .columns
            .iter()
            .map(|n| arrow::datatypes::Field::new(n, DataType::Utf8, true))
            .collect();
        let columns: Vec<ArrayRef> = (0..self.columns.len())
            .map(|c| {
                let mut b = StringBuilder::new();
                for row in &self.rows {
                    b.append_option(row[c].as_deref());
                }
                Arc::new(b.finish()) as ArrayRef
            })
            .collect();
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

#[cfg(test)]
mod tests;
