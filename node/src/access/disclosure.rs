//! HES disclosure control for the anonymised tier (aggregates only).
//!
//! Below national level: counts of 1 to 7 are shown as `*`, other counts are rounded to the
//! nearest 5, and zero stays 0. Our rule for sums, minima and maxima (the spec names only
//! counts): a cell of a group of 1 to 7 records is `*`, otherwise it is exact. Totals are computed
//! from the unrounded values, then controlled like any cell. National-level figures (national
//! scope, no organisation in the filters or the grouping) are not suppressed.
//!
//! Controlled cells are text (`*`, `0`, `15`, ...): the finished table's aggregate columns are
//! `Utf8`, and a grouped table ends with a `TOTAL` row.

use crate::Result;
use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use std::sync::Arc;
use sus_proto::partial::{Partial, State};

/// Fields whose presence in a filter or grouping puts a figure below national level.
pub const SUB_NATIONAL: [&str; 10] = [
    "provider_code",
    "site_code",
    "commissioner_code",
    "gp_practice_code",
    "postcode",
    "nhs_number",
    "local_patient_id",
    "date_of_birth",
    "cds_unique_id",
    "hospital_provider_spell_number",
];

/// How to control one finished query.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Per aggregate: whether it is a count (of records, patients or flagged records).
    pub counts: Vec<bool>,
    /// The aggregate that counts the records of each group.
    pub rows: usize,
    /// Leave that aggregate out of the output (it was added for control only).
    pub hide_rows: bool,
    /// Whether the grouped rows are national-level figures.
    pub rows_national: bool,
    /// Whether the total is a national-level figure.
    pub total_national: bool,
    pub order: Vec<(String, bool)>,
    pub limit: usize,
}

/// Rounds a count to the nearest 5.
pub fn round5(v: i64) -> i64 {
    (v + 2).div_euclid(5) * 5
}

/// One controlled cell: `raw` is the value, `n` the records behind it.
pub fn cell(raw: Option<i64>, n: Option<i64>, count: bool, national: bool) -> Option<String> {
    let v = raw?;
    if national {
        return Some(v.to_string());
    }
    if count {
        return Some(match v {
            0 => "0".to_string(),
            1..=7 => "*".to_string(),
            _ => round5(v).to_string(),
        });
    }
    match n {
        Some(1..=7) => Some("*".to_string()),
        _ => Some(v.to_string()),
    }
}

/// The finished, controlled table of a merged partial.
pub fn control(partial: &Partial, spec: &Spec) -> Result<RecordBatch> {
    let finished = partial
        .finish(&spec.order, spec.limit)
        .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
    // Totals from the unrounded states of every group.
    let mut total: Option<Vec<State>> = None;
    for states in partial.groups.values() {
        match &mut total {
            None => total = Some(states.clone()),
            Some(t) => {
                for (t, s) in t.iter_mut().zip(states) {
                    t.merge(s.clone())
                        .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
                }
            }
        }
    }
    let keys = partial.keys.len();
    let with_total = keys > 0;
    let rows = finished.num_rows();
    let value = |col: usize, row: usize| -> Option<i64> {
        use arrow::array::{Array, AsArray};
        let a = finished
            .column(keys + col)
            .as_primitive::<arrow::datatypes::Int64Type>();
        a.is_valid(row).then(|| a.value(row))
    };
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for k in 0..keys {
        use arrow::array::AsArray;
        fields.push(Field::new(&partial.keys[k], DataType::Utf8, true));
        let col = finished.column(k).as_string::<i32>();
        let mut b = StringBuilder::new();
        for row in 0..rows {
            use arrow::array::Array;
            b.append_option(col.is_valid(row).then(|| col.value(row)));
        }
        if with_total {
            b.append_option((k == 0).then_some("TOTAL"));
        }
        columns.push(Arc::new(b.finish()));
    }
    for (a, (name, _)) in partial.aggs.iter().enumerate() {
        if spec.hide_rows && a == spec.rows {
            continue;
        }
        fields.push(Field::new(name, DataType::Utf8, true));
        let mut b = StringBuilder::new();
        for row in 0..rows {
            b.append_option(cell(
                value(a, row),
                value(spec.rows, row),
                spec.counts[a],
                spec.rows_national,
            ));
        }
        if with_total {
            let t = total.as_ref();
            let raw = t.and_then(|t| t[a].value());
            let n = t.and_then(|t| t[spec.rows].value());
            b.append_option(cell(
                raw.or(Some(0)),
                n,
                spec.counts[a],
                spec.total_national,
            ));
        }
        columns.push(Arc::new(b.finish()));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use sus_proto::partial::Kind;

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
            assert_eq!(
                cell(Some(v), Some(v), true, false).as_deref(),
                Some(want),
                "{v}"
            );
            assert_eq!(
                cell(Some(v), Some(v), true, true).as_deref(),
                Some(v.to_string()).as_deref(),
                "national {v}"
            );
        }
        // A sum over a small group is suppressed; over a larger one it is exact.
        assert_eq!(
            cell(Some(123_456), Some(3), false, false).as_deref(),
            Some("*")
        );
        assert_eq!(
            cell(Some(123_456), Some(9), false, false).as_deref(),
            Some("123456")
        );
    }

    fn column(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
        let c = batch.column_by_name(name).expect("column");
        let c = c.as_string::<i32>();
        (0..c.len())
            .map(|i| c.is_valid(i).then(|| c.value(i).to_string()))
            .collect()
    }

    #[test]
    fn a_grouped_table_is_controlled_and_totalled_before_rounding() {
        // Hand-computed: groups with 3, 8, 12 and 0 records and their pence.
        let mut p = Partial::new(
            vec!["provider".into()],
            vec![
                ("count".into(), Kind::Count),
                ("sum_price".into(), Kind::Sum),
            ],
        );
        for (provider, n, pence) in [("A", 3, 300), ("B", 8, 800), ("C", 12, 1_200), ("D", 0, 0)] {
            *p.group(vec![Some(provider.into())]) = vec![State::Count(n), State::Sum(pence)];
        }
        let spec = Spec {
            counts: vec![true, false],
            rows: 0,
            hide_rows: false,
            rows_national: false,
            total_national: false,
            order: Vec::new(),
            limit: 0,
        };
        let out = control(&p, &spec).expect("controlled");
        let s = |v: &[&str]| v.iter().map(|x| Some(x.to_string())).collect::<Vec<_>>();
        assert_eq!(
            column(&out, "provider"),
            vec![
                Some("A".into()),
                Some("B".into()),
                Some("C".into()),
                Some("D".into()),
                Some("TOTAL".into())
            ]
        );
        // Total 23 records: rounded from 23 (25), not summed from rounded cells (0+10+10+0).
        assert_eq!(column(&out, "count"), s(&["*", "10", "10", "0", "25"]));
        assert_eq!(
            column(&out, "sum_price"),
            s(&["*", "800", "1200", "0", "2300"])
        );
        // The same total at national level is exact.
        let national = Spec {
            total_national: true,
            ..spec
        };
        let out = control(&p, &national).expect("controlled");
        assert_eq!(column(&out, "count"), s(&["*", "10", "10", "0", "23"]));
    }
}
