//! Disclosure control on hand-made tables: rounding, suppression, margins, differencing.

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
