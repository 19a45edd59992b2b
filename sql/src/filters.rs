//! Which SQL predicates the nodes can apply in their scans, as wire filters.
//!
//! A pushed filter is *inexact*: DataFusion still applies the SQL predicate to what comes back,
//! so a wire filter only has to keep every row the predicate keeps. That is why `<` on text can
//! become an inclusive bound, and why anything not recognised here is simply not pushed.

use arrow::datatypes::{DataType, Schema};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, expr::InList};
use datafusion::scalar::ScalarValue;
use sus_proto::v1::{self, filter::Op};

/// The wire filter a node applies for `expr` over `schema`, if there is one. `filterable` says
/// whether the node may filter a column on its raw values (not a column the caller's tier
/// transforms, such as a pseudonym).
pub fn to_wire(
    expr: &Expr,
    schema: &Schema,
    filterable: &dyn Fn(&str) -> bool,
) -> Option<v1::Filter> {
    to_wire_exact(expr, schema, filterable).map(|(f, _)| f)
}

/// [`to_wire`], and whether the node's filter keeps exactly the rows `expr` keeps (a strict
/// comparison on text becomes an inclusive bound: looser, so not exact).
pub(crate) fn to_wire_exact(
    expr: &Expr,
    schema: &Schema,
    filterable: &dyn Fn(&str) -> bool,
) -> Option<(v1::Filter, bool)> {
    let column = |e: &Expr| -> Option<(String, DataType)> {
        let Expr::Column(c) = e else { return None };
        let field = schema.field_with_name(&c.name).ok()?;
        filterable(&c.name).then(|| (c.name.clone(), field.data_type().clone()))
    };
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (name, ty, value, op) = match (column(left), literal(right)) {
                (Some((n, t)), Some(v)) => (n, t, v, *op),
                _ => {
                    let (n, t) = column(right)?;
                    (n, t, literal(left)?, op.swap()?)
                }
            };
            let v = text(&ty, &value)?;
            let step = |delta: i64| shifted(&ty, &value, delta);
            let (wire_op, values, min, max, exact) = match op {
                Operator::Eq => (Op::Eq, vec![v], String::new(), String::new(), true),
                Operator::NotEq => (Op::Ne, vec![v], String::new(), String::new(), true),
                Operator::GtEq => (Op::Range, vec![], v, String::new(), true),
                Operator::LtEq => (Op::Range, vec![], String::new(), v, true),
                Operator::Gt => match step(1) {
                    Some(next) => (Op::Range, vec![], next, String::new(), true),
                    None => (Op::Range, vec![], v, String::new(), false),
                },
                Operator::Lt => match step(-1) {
                    Some(prev) => (Op::Range, vec![], String::new(), prev, true),
                    None => (Op::Range, vec![], String::new(), v, false),
                },
                _ => return None,
            };
            Some((wire(name, wire_op, values, min, max), exact))
        }
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) => {
            let (name, ty) = column(expr)?;
            let values = list
                .iter()
                .map(|e| text(&ty, &literal(e)?))
                .collect::<Option<Vec<_>>>()?;
            (!values.is_empty()).then(|| {
                (
                    wire(name, Op::In, values, String::new(), String::new()),
                    true,
                )
            })
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) => {
            let (name, ty) = column(expr)?;
            let min = text(&ty, &literal(low)?)?;
            let max = text(&ty, &literal(high)?)?;
            Some((wire(name, Op::Range, vec![], min, max), true))
        }
        _ => None,
    }
}

fn wire(field: String, op: Op, values: Vec<String>, min: String, max: String) -> v1::Filter {
    v1::Filter {
        field,
        op: op as i32,
        values,
        min,
        max,
    }
}

fn literal(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) if !v.is_null() => Some(match v {
            ScalarValue::Dictionary(_, inner) => (**inner).clone(),
            other => other.clone(),
        }),
        _ => None,
    }
}

fn is_text(ty: &DataType) -> bool {
    match ty {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

/// A literal as the node parses it for a column of type `ty`; `None` where the kinds differ
/// (DataFusion coerces literals to the column's type first, so that is rare).
fn text(ty: &DataType, value: &ScalarValue) -> Option<String> {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
            if is_text(ty) =>
        {
            Some(s.clone())
        }
        ScalarValue::Date32(Some(days)) if *ty == DataType::Date32 => {
            let date = chrono_date(*days)?;
            Some(date)
        }
        ScalarValue::Boolean(Some(b)) if *ty == DataType::Boolean => Some(b.to_string()),
        v if ty.is_integer() && v.data_type().is_integer() => integer(v).map(|i| i.to_string()),
        _ => None,
    }
}

fn integer(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Int8(Some(i)) => Some(i64::from(*i)),
        ScalarValue::Int16(Some(i)) => Some(i64::from(*i)),
        ScalarValue::Int32(Some(i)) => Some(i64::from(*i)),
        ScalarValue::Int64(Some(i)) => Some(*i),
        ScalarValue::UInt8(Some(i)) => Some(i64::from(*i)),
        ScalarValue::UInt16(Some(i)) => Some(i64::from(*i)),
        ScalarValue::UInt32(Some(i)) => Some(i64::from(*i)),
        ScalarValue::UInt64(Some(i)) => i64::try_from(*i).ok(),
        _ => None,
    }
}

/// The bound one step beyond a strict comparison's literal, where the type has steps
/// (integers, dates); `None` keeps the literal itself as an inclusive (looser) bound.
fn shifted(ty: &DataType, value: &ScalarValue, delta: i64) -> Option<String> {
    match value {
        ScalarValue::Date32(Some(days)) if *ty == DataType::Date32 => {
            chrono_date(days.checked_add(i32::try_from(delta).ok()?)?)
        }
        v if ty.is_integer() => integer(v)?.checked_add(delta).map(|i| i.to_string()),
        _ => None,
    }
}

/// Days since 1970 as `YYYY-MM-DD` (proleptic Gregorian, as the node parses dates).
fn chrono_date(days: i32) -> Option<String> {
    // Civil-from-days (Howard Hinnant's algorithm): no date crate needed for one conversion.
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (0..=9999)
        .contains(&y)
        .then(|| format!("{y:04}-{m:02}-{d:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use datafusion::prelude::{col, lit};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("provider_code", DataType::Utf8, true),
            Field::new(
                "pod",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
            Field::new("price", DataType::Int64, true),
            Field::new("activity_date", DataType::Date32, true),
            Field::new("nhs_number", DataType::Utf8, true),
        ])
    }

    fn pushed(e: Expr) -> Option<v1::Filter> {
        to_wire(&e, &schema(), &|c| c != "nhs_number")
    }

    fn date(s: &str) -> Expr {
        let d = chrono_days(s);
        lit(ScalarValue::Date32(Some(d)))
    }

    fn chrono_days(s: &str) -> i32 {
        // Inverse of chrono_date by search: enough for a test.
        (-1000..40_000)
            .find(|d| chrono_date(*d).as_deref() == Some(s))
            .expect("a date in range")
    }

    #[test]
    fn equality_in_and_ranges_become_wire_filters() {
        let f = pushed(col("provider_code").eq(lit("RRV"))).expect("pushed");
        assert_eq!(
            (f.field.as_str(), f.op, f.values),
            ("provider_code", Op::Eq as i32, vec!["RRV".to_string()])
        );
        let f = pushed(lit("RRV").eq(col("provider_code"))).expect("either side");
        assert_eq!(f.values, ["RRV"]);
        let f = pushed(col("pod").in_list(vec![lit("OPFA"), lit("OPFU")], false)).expect("in");
        assert_eq!((f.op, f.values.len()), (Op::In as i32, 2));
        let f = pushed(col("price").gt(lit(100i64))).expect("gt");
        assert_eq!(
            (f.op, f.min.as_str(), f.max.as_str()),
            (Op::Range as i32, "101", "")
        );
        let f = pushed(lit(100i64).gt(col("price"))).expect("swapped");
        assert_eq!((f.min.as_str(), f.max.as_str()), ("", "99"));
        let f = pushed(col("activity_date").between(date("2024-09-01"), date("2024-09-30")))
            .expect("between");
        assert_eq!(
            (f.min.as_str(), f.max.as_str()),
            ("2024-09-01", "2024-09-30")
        );
        let f = pushed(col("activity_date").lt(date("2024-03-01"))).expect("lt date");
        assert_eq!(f.max, "2024-02-29");
        let f = pushed(col("provider_code").lt(lit("RRV"))).expect("text lt");
        assert_eq!(f.max, "RRV", "inclusive, so looser than the SQL");
        let f = pushed(col("price").not_eq(lit(0i64))).expect("ne");
        assert_eq!(f.op, Op::Ne as i32);
    }

    #[test]
    fn what_the_node_cannot_apply_exactly_is_not_pushed() {
        assert!(
            pushed(col("nhs_number").eq(lit("943 476 5919"))).is_none(),
            "a transformed column"
        );
        assert!(
            pushed(col("price").in_list(vec![lit(1i64)], true)).is_none(),
            "NOT IN"
        );
        assert!(pushed(col("price").eq(lit("x"))).is_none(), "kinds differ");
        assert!(
            pushed(col("provider_code").like(lit("R%"))).is_none(),
            "LIKE"
        );
        assert!(
            pushed(col("price").eq(col("price"))).is_none(),
            "no literal"
        );
        assert!(
            pushed(col("price").eq(lit(ScalarValue::Int64(None)))).is_none(),
            "NULL"
        );
        assert!(
            pushed(col("missing").eq(lit(1i64))).is_none(),
            "no such column"
        );
    }

    #[test]
    fn dates_print_as_the_node_parses_them() {
        assert_eq!(chrono_date(0).as_deref(), Some("1970-01-01"));
        assert_eq!(chrono_date(19_997).as_deref(), Some("2024-10-01"));
        assert_eq!(chrono_date(-1).as_deref(), Some("1969-12-31"));
    }
}
