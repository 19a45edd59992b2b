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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sus_proto::v1;

    fn key(parts: &[&str]) -> GroupKey {
        parts.iter().map(|p| Some(p.to_string())).collect()
    }

    /// A table of `keys` with a record count and, if given, a sum of pence per row.
    fn table(keys: &[&str], rows: &[(&[&str], i64, i64)]) -> Table {
        Table {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            rows: rows.iter().map(|r| key(r.0)).collect(),
            columns: vec![
                Column {
                    name: "count".into(),
                    measure: Measure::Records,
                    values: rows.iter().map(|r| r.1).collect(),
                    hidden: false,
                },
                Column {
                    name: "sum_price".into(),
                    measure: Measure::Sum,
                    values: rows.iter().map(|r| r.2).collect(),
                    hidden: false,
                },
            ],
        }
    }

    fn column(c: &Controlled, name: &str) -> Vec<String> {
        let i = c.columns.iter().position(|n| n == name).expect("column");
        c.rows
            .iter()
            .map(|r| r[i].clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn counts_are_suppressed_and_rounded_by_hand() {
        let cases = [
            (0, "0"),
            (1, "*"),
            (7, "*"),
            (8, "10"),
            (12, "10"),
            (13, "15"),
            (22, "20"),
            (23, "25"),
            (1000, "1000"),
        ];
        for (v, want) in cases {
            assert_eq!(show_count(v), want, "{v}");
        }
    }

    #[test]
    fn sums_round_to_two_significant_figures_halves_away_from_zero() {
        let cases = [
            (0, 0),
            (7, 7),
            (57, 57),
            (99, 99),
            (100, 100),
            (123, 120),
            (125, 130),
            (135, 140),
            (994, 990),
            (995, 1_000),
            (1_250, 1_300),
            (123_456, 120_000),
            (149_999, 150_000),
            (-125, -130),
            (-123_456, -120_000),
        ];
        for (v, want) in cases {
            assert_eq!(round_sig2(v), want, "{v}");
        }
    }

    /// One key: the small cell and the next smallest are hidden (the TOTAL would otherwise give
    /// the small one away); sums follow the counts and round to 2 significant figures; the TOTAL
    /// is rounded from the exact total (63 → 65), not summed from the shown cells.
    #[test]
    fn a_one_key_table_hides_the_next_smallest_cell_of_its_total() {
        let t = table(
            &["provider"],
            &[
                (&["A"], 3, 300),
                (&["B"], 8, 800),
                (&["C"], 12, 1_234),
                (&["D"], 40, 98_765),
            ],
        );
        let out = control(&t, &Options::default()).expect("controlled");
        assert_eq!(column(&out, "provider"), ["A", "B", "C", "D", "TOTAL"]);
        assert_eq!(column(&out, "count"), ["*", "*", "10", "40", "65"]);
        // 300 + 800 + 1234 + 98765 = 101099 → 100000.
        assert_eq!(
            column(&out, "sum_price"),
            ["*", "*", "1200", "99000", "100000"]
        );
    }

    /// Two keys: (P, M1) = 3 is hidden; its row and column each need a second hidden cell, and
    /// so do the lines those fall on, until every line holds two:
    ///
    /// ```text
    ///       M1  M2  M3            M1  M2  M3
    ///  P     3  20  30       P     *   *  30
    ///  Q    25  40  50   ─►  Q     *   *  50
    ///  R    35  45  60       R    35  45  60     TOTAL 308 → 310
    /// ```
    #[test]
    fn a_two_key_table_gets_secondary_suppression_on_rows_and_columns() {
        let mut rows = Vec::new();
        let grid = [("P", [3, 20, 30]), ("Q", [25, 40, 50]), ("R", [35, 45, 60])];
        let months = ["M1", "M2", "M3"];
        let names: Vec<[&str; 2]> = grid
            .iter()
            .flat_map(|(p, _)| months.iter().map(move |m| [*p, *m]))
            .collect();
        for (i, (_, values)) in grid.iter().enumerate() {
            for (j, v) in values.iter().enumerate() {
                rows.push((&names[i * 3 + j][..], *v, *v * 100));
            }
        }
        let t = table(&["provider", "month"], &rows);
        let out = control(&t, &Options::default()).expect("controlled");
        assert_eq!(
            column(&out, "count"),
            ["*", "*", "30", "*", "*", "50", "35", "45", "60", "310"]
        );
        assert_eq!(
            column(&out, "sum_price"),
            [
                "*", "*", "3000", "*", "*", "5000", "3500", "4500", "6000", "31000"
            ]
        );
    }

    /// A cell that is the only one of another line is never chosen: that line's margin is its
    /// value, so hiding it would hide nothing. Here (Q, M1) = 40 is all of Q's row.
    #[test]
    fn a_cell_given_away_by_another_margin_is_not_chosen() {
        let t = table(
            &["provider", "month"],
            &[
                (&["P", "M1"], 3, 0),
                (&["Q", "M1"], 40, 0),
                (&["R", "M2"], 50, 0),
            ],
        );
        let out = control(&t, &Options::default()).expect("controlled");
        assert_eq!(column(&out, "count"), ["*", "40", "50", "95"]);
    }

    /// Two hidden cells are not enough when the rounding pins them: with the exact total 28 and
    /// the shown 15s at least 13 each, the two hidden cells could only be 1 and 1.
    #[test]
    fn hidden_cells_pinned_by_the_rounding_get_another() {
        let t = table(
            &["provider"],
            &[
                (&["A"], 1, 0),
                (&["B"], 1, 0),
                (&["C"], 13, 0),
                (&["D"], 13, 0),
            ],
        );
        let out = control(&t, &Options::default()).expect("controlled");
        assert_eq!(column(&out, "count"), ["*", "*", "*", "15", "30"]);
    }

    /// Order and limit see the shown values only (`*` first), and the TOTAL covers every row.
    #[test]
    fn order_and_limit_use_the_shown_values() {
        let t = table(
            &["provider"],
            &[
                (&["A"], 3, 0),
                (&["B"], 9, 0),
                (&["C"], 11, 0),
                (&["D"], 12, 0),
                (&["E"], 40, 0),
            ],
        );
        let options = Options {
            order: vec![("count".into(), false)],
            limit: 3,
            ..Options::default()
        };
        let out = control(&t, &options).expect("controlled");
        // B (9) is hidden with A; C (11) and D (12) both show 10 and keep their key order.
        assert_eq!(column(&out, "provider"), ["A", "B", "C", "TOTAL"]);
        assert_eq!(column(&out, "count"), ["*", "*", "10", "75"]);
        let bad = Options {
            order: vec![("__records".into(), true)],
            ..Options::default()
        };
        assert!(control(&t, &bad).is_err());
    }

    /// A small TOTAL hides every figure of the TOTAL row; an exempt table is exact.
    #[test]
    fn small_totals_are_hidden_and_exempt_tables_exact() {
        let t = table(&["provider"], &[(&["A"], 3, 300), (&["B"], 2, 250)]);
        let out = control(&t, &Options::default()).expect("controlled");
        assert_eq!(column(&out, "count"), ["*", "*", "*"]);
        assert_eq!(column(&out, "sum_price"), ["*", "*", "*"]);
        let exempt = Options {
            exempt: true,
            ..Options::default()
        };
        let out = control(&t, &exempt).expect("exact");
        assert_eq!(column(&out, "count"), ["3", "2", "5"]);
        assert_eq!(column(&out, "sum_price"), ["300", "250", "550"]);
        // No group-by and no rows: one zero figure.
        let empty = table(&[], &[]);
        let out = control(&empty, &Options::default()).expect("controlled");
        assert_eq!(
            out.rows,
            vec![vec![Some("0".to_string()), Some("0".into())]]
        );
    }

    /// Another count (a flag summed) is hidden where the records are, and on its own 1-7.
    #[test]
    fn other_counts_follow_the_records_and_their_own_small_values() {
        let mut t = table(
            &["provider"],
            &[
                (&["A"], 3, 0),
                (&["B"], 20, 0),
                (&["C"], 30, 0),
                (&["D"], 40, 0),
            ],
        );
        t.columns[1] = Column {
            name: "sum_ungrouped".into(),
            measure: Measure::Count,
            values: vec![0, 2, 30, 40],
            hidden: false,
        };
        let out = control(&t, &Options::default()).expect("controlled");
        assert_eq!(column(&out, "count"), ["*", "*", "30", "40", "95"]);
        // A hidden (records), B hidden (2): two hidden in the line, and 72 − 28 − 38 = 6 > 1.
        assert_eq!(column(&out, "sum_ungrouped"), ["*", "*", "30", "40", "70"]);
    }

    fn query(group_by: &[&str], filters: &[&str], aggs: &[(v1::aggregate::Func, &str)]) -> Query {
        let spec = v1::QuerySpec {
            dataset: "apc".into(),
            group_by: group_by.iter().map(|s| s.to_string()).collect(),
            filters: filters
                .iter()
                .map(|f| v1::Filter {
                    field: f.to_string(),
                    op: v1::filter::Op::Range as i32,
                    ..Default::default()
                })
                .collect(),
            aggregates: aggs
                .iter()
                .enumerate()
                .map(|(i, (func, field))| v1::Aggregate {
                    func: *func as i32,
                    field: field.to_string(),
                    name: format!("a{i}"),
                })
                .collect(),
            ..Default::default()
        };
        Query::from_proto(&spec).expect("a valid query")
    }

    #[test]
    fn only_allowed_dimensions_and_aggregates_pass() {
        use v1::aggregate::Func as F;
        let q = query(
            &["provider_code", "age_band", "spell_hrg"],
            &["activity_month", "sex"],
            &[
                (F::Count, ""),
                (F::CountDistinctPatients, ""),
                (F::Sum, "price"),
                (F::Sum, "pbr_excluded"),
                (F::Sum, "nhs_number_valid"),
                (F::Count, ""),
            ],
        );
        assert_eq!(
            check(&q).expect("allowed"),
            [
                Measure::Records,
                Measure::Count,
                Measure::Sum,
                Measure::Count,
                Measure::Count,
                Measure::Count
            ]
        );
        for (group_by, filter, says) in [
            ("age_at_activity", "", "age_at_activity cannot be grouped"),
            (
                "primary_diagnosis",
                "",
                "primary_diagnosis cannot be grouped",
            ),
            ("admission_date", "", "admission_date cannot be grouped"),
            ("cds_unique_id", "", "cds_unique_id cannot be grouped"),
            ("", "nhs_number", "nhs_number cannot be filtered"),
            ("", "age_at_activity", "age_at_activity cannot be filtered"),
            ("", "price", "price cannot be filtered"),
            ("", "ungrouped", "ungrouped cannot be filtered"),
        ] {
            let g: Vec<&str> = [group_by].into_iter().filter(|s| !s.is_empty()).collect();
            let f: Vec<&str> = [filter].into_iter().filter(|s| !s.is_empty()).collect();
            let e = check(&query(&g, &f, &[(F::Count, "")])).expect_err(says);
            assert!(matches!(e, Error::PermissionDenied(_)), "{e}");
            assert!(e.to_string().contains(says), "{e}");
            assert!(
                e.to_string().contains("provider_code"),
                "says what is allowed: {e}"
            );
        }
        for (func, field, says) in [
            (F::Min, "price", "min of price"),
            (F::Max, "age_at_activity", "max of age_at_activity"),
            (F::Min, "ungrouped", "min of ungrouped"),
            (F::Sum, "age_at_activity", "sum of age_at_activity"),
            (F::Sum, "restricted", "sum of restricted"),
        ] {
            let e = check(&query(&[], &[], &[(func, field)])).expect_err(says);
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn the_national_exemption_is_narrow() {
        use v1::aggregate::Func as F;
        let c = [(F::Count, "")];
        let by_period = query(&["pod", "activity_month"], &["financial_year"], &c);
        assert!(exempt(true, &by_period));
        assert!(!exempt(false, &by_period), "a provider's own figures");
        for finer in [
            query(&["pod", "sex"], &[], &c),
            query(&["provider_code"], &[], &c),
            query(&["pod"], &["age_band"], &c),
            query(&[], &["commissioner_code"], &c),
        ] {
            assert!(!exempt(true, &finer), "{finer:?}");
        }
    }

    /// Tables of many groups are controlled in time linear in their lines: 100,000 providers on
    /// one key, 300 x 300 cells on two (quadratic work would take minutes here).
    #[test]
    fn large_tables_are_controlled_quickly() {
        let value = |i: usize| (i * 7919 % 97) as i64 + 1;
        let one = Table {
            keys: vec!["provider".into()],
            rows: (0..100_000).map(|i| key(&[&format!("P{i:06}")])).collect(),
            columns: vec![Column {
                name: "count".into(),
                measure: Measure::Records,
                values: (0..100_000).map(value).collect(),
                hidden: false,
            }],
        };
        let started = std::time::Instant::now();
        let hidden = &suppress(&one).expect("suppressed")[0];
        assert!(hidden.iter().filter(|h| **h).count() >= 2);
        let mut rows = Vec::new();
        for i in 0..300 {
            for j in 0..300 {
                rows.push(key(&[&format!("P{i:03}"), &format!("M{j:03}")]));
            }
        }
        let two = Table {
            keys: vec!["provider".into(), "month".into()],
            rows,
            columns: vec![Column {
                name: "count".into(),
                measure: Measure::Records,
                values: (0..90_000).map(value).collect(),
                hidden: false,
            }],
        };
        let hidden = &suppress(&two).expect("suppressed")[0];
        for line in lines(&two) {
            assert_ne!(line.iter().filter(|&&c| hidden[c]).count(), 1);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    /// Lines of a random table: every key's lines and the grand total.
    fn all_lines(t: &Table) -> Vec<Vec<usize>> {
        let mut out = lines(t);
        out.push((0..t.rows.len()).collect());
        out
    }

    /// The most and least a suppressed cell can hold, to someone who knows the exact margin of
    /// `line`, the rounding of its shown cells, and that hidden counts are at least 1.
    fn bounds(values: &[i64], hidden: &[bool], line: &[usize], cell: usize) -> (i128, i128) {
        let margin: i128 = line.iter().map(|&c| i128::from(values[c])).sum();
        let mut most = margin;
        for &c in line {
            if c == cell {
                continue;
            }
            most -= if hidden[c] {
                1
            } else if values[c] == 0 {
                0
            } else {
                (round5(i128::from(values[c])) - 2).max(8)
            };
        }
        let others_hidden = line.iter().any(|&c| c != cell && hidden[c]);
        // With another hidden cell in the line, nothing bounds this one from below but 1.
        let least = if others_hidden { 1 } else { most };
        (least.max(1), most)
    }

    /// A random table of 1 to 3 keys, each of 2 to 5 values; `sparse` leaves cells out.
    fn tables(sparse: bool) -> impl Strategy<Value = Table> {
        (1usize..=3, proptest::collection::vec(2usize..=5, 3))
            .prop_flat_map(move |(k, sizes)| {
                let cells: usize = sizes[..k].iter().product();
                let value = prop_oneof![3 => 1i64..=7, 4 => 8i64..=60, 1 => 61i64..=500];
                let present = if sparse { 0.6 } else { 1.0 };
                (
                    Just((k, sizes)),
                    proptest::collection::vec((value, proptest::bool::weighted(present)), cells),
                )
            })
            .prop_map(|((k, sizes), cells)| {
                let mut rows = Vec::new();
                let mut values = Vec::new();
                for (i, (v, present)) in cells.into_iter().enumerate() {
                    if !present {
                        continue;
                    }
                    let mut rest = i;
                    let mut key = Vec::new();
                    for s in &sizes[..k] {
                        key.push(Some(format!("k{}", rest % s)));
                        rest /= s;
                    }
                    rows.push(key);
                    values.push(v);
                }
                let mut order: Vec<usize> = (0..rows.len()).collect();
                order.sort_by(|a, b| rows[*a].cmp(&rows[*b]));
                Table {
                    keys: (0..k).map(|i| format!("key{i}")).collect(),
                    rows: order.iter().map(|&i| rows[i].clone()).collect(),
                    columns: vec![Column {
                        name: "count".into(),
                        measure: Measure::Records,
                        values: order.iter().map(|&i| values[i]).collect(),
                        hidden: false,
                    }],
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Dense tables: no margin line (any key's, or the TOTAL) holds exactly one suppressed
        /// cell, and no suppressed count can be pinned to one value by subtracting the shown
        /// cells' (rounded) values from an exact margin.
        #[test]
        fn no_margin_gives_a_suppressed_cell_away(t in tables(false)) {
            let hidden = &suppress(&t).expect("suppressed")[0];
            let values = &t.columns[0].values;
            for (c, v) in values.iter().enumerate() {
                prop_assert!(hidden[c] || !(1..=SMALL).contains(v), "primary cell {c} shown");
            }
            for line in all_lines(&t) {
                let n = line.iter().filter(|&&c| hidden[c]).count();
                prop_assert!(n != 1, "a line with one suppressed cell: {line:?} of {t:?}");
                // A margin of 1 to 7 is itself suppressed wherever it is shown (but see the
                // national exemption in docs/security.md).
                let margin: i64 = line.iter().map(|&c| values[c]).sum();
                if margin <= SMALL {
                    continue;
                }
                // Pinned only where nothing was left to hide (every cell hidden): which groups
                // exist is shown.
                let could_hide = line.iter().any(|&c| !hidden[c] && values[c] != 0);
                for &c in line.iter().filter(|&&c| hidden[c]) {
                    let (least, most) = bounds(values, hidden, &line, c);
                    prop_assert!(
                        most > least || !could_hide,
                        "cell {c} pinned to {least} by {line:?} of {t:?}"
                    );
                }
            }
        }

        /// Sparse tables: a line keeps a single suppressed cell only when no other cell of it
        /// could hide it (each other non-zero cell is the only one of another line).
        #[test]
        fn sparse_tables_leave_a_single_suppressed_cell_only_when_nothing_can_hide_it(
            t in tables(true)
        ) {
            let hidden = &suppress(&t).expect("suppressed")[0];
            let values = &t.columns[0].values;
            let lines = all_lines(&t);
            let alone = |c: usize| lines.iter().any(|l| l.contains(&c) && l.len() == 1);
            for line in &lines {
                let n = line.iter().filter(|&&c| hidden[c]).count();
                if n == 1 {
                    for &c in line.iter().filter(|&&c| !hidden[c]) {
                        prop_assert!(alone(c), "cell {c} could have hidden {line:?} of {t:?}");
                    }
                }
                for (c, v) in values.iter().enumerate() {
                    prop_assert!(hidden[c] || !(1..=SMALL).contains(v));
                }
            }
        }
    }
}
