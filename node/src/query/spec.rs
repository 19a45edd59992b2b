//! The query as the engine runs it: checked fields, typed filter values, aggregates and the
//! view, parsed from the wire (`QuerySpec`); and what a scan reports.

use super::field::{Field, Kind as FieldKind};
use crate::model::Dataset;
use crate::{Error, Result};
use chrono::{Datelike, NaiveDate, NaiveDateTime};
use sus_proto::partial::Kind;
use sus_proto::v1;

/// A filter value, parsed for its field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
}

/// What a filter keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    In(Vec<Value>),
    NotIn(Vec<Value>),
    /// Inclusive bounds; `None` is open.
    Range(Option<Value>, Option<Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub name: String,
    pub field: Field,
    pub pred: Pred,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Count,
    Sum,
    Min,
    Max,
    DistinctPatients,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    /// Output column name.
    pub name: String,
    pub func: Func,
    pub field: Option<Field>,
}

impl Agg {
    pub fn kind(&self) -> Kind {
        match self.func {
            Func::Count => Kind::Count,
            Func::Sum => Kind::Sum,
            Func::Min => Kind::Min,
            Func::Max => Kind::Max,
            Func::DistinctPatients => Kind::Distinct,
        }
    }
}

/// Which state a read sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Current,
    Freeze(String),
}

/// At most this many group-by fields (their per-batch codes pack into one `u128`).
pub const MAX_GROUP_BY: usize = 4;

/// A checked query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub dataset: Dataset,
    pub filters: Vec<Filter>,
    pub group_by: Vec<(String, Field)>,
    pub aggs: Vec<Agg>,
    pub view: View,
    /// The caller's scope: a row must pass at least one of these (empty: every row).
    pub scope: Vec<Filter>,
}

impl Query {
    /// Checks a wire query: known dataset and fields, typed values, aggregates that fit their
    /// fields. Errors name the part of the query at fault.
    pub fn from_proto(spec: &v1::QuerySpec) -> Result<Query> {
        let dataset = parse_dataset(&spec.dataset)?;
        let filters = parse_filters(dataset, &spec.filters)?;
        if spec.group_by.len() > MAX_GROUP_BY {
            return Err(Error::InvalidArgument(format!(
                "{} group-by fields; at most {MAX_GROUP_BY}",
                spec.group_by.len()
            )));
        }
        let group_by = spec
            .group_by
            .iter()
            .map(|name| Ok((name.clone(), Field::resolve(dataset, name)?)))
            .collect::<Result<Vec<_>>>()?;
        if spec.aggregates.is_empty() {
            return Err(Error::InvalidArgument(
                "a query needs at least one aggregate".into(),
            ));
        }
        let mut aggs = Vec::new();
        for a in &spec.aggregates {
            let func = match v1::aggregate::Func::try_from(a.func) {
                Ok(v1::aggregate::Func::Count) => Func::Count,
                Ok(v1::aggregate::Func::Sum) => Func::Sum,
                Ok(v1::aggregate::Func::Min) => Func::Min,
                Ok(v1::aggregate::Func::Max) => Func::Max,
                Ok(v1::aggregate::Func::CountDistinctPatients) => Func::DistinctPatients,
                Err(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown aggregate function {}",
                        a.func
                    )));
                }
            };
            let field = match func {
                Func::Count | Func::DistinctPatients => None,
                _ => {
                    let f = Field::resolve(dataset, &a.field)?;
                    if !f.is_numeric() {
                        return Err(Error::InvalidArgument(format!(
                            "{} of {}: only integer, pence and flag fields can be aggregated",
                            func_name(func),
                            a.field
                        )));
                    }
                    Some(f)
                }
            };
            let name = if a.name.is_empty() {
                match func {
                    Func::Count => "count".to_string(),
                    Func::DistinctPatients => "patients".to_string(),
                    _ => format!("{}_{}", func_name(func), a.field),
                }
            } else {
                a.name.clone()
            };
            if group_by.iter().any(|(g, _)| *g == name) || aggs.iter().any(|x: &Agg| x.name == name)
            {
                return Err(Error::InvalidArgument(format!(
                    "output column {name} is named twice; give the aggregate a name"
                )));
            }
            aggs.push(Agg { name, func, field });
        }
        Ok(Query {
            dataset,
            filters,
            group_by,
            aggs,
            view: parse_view(spec.view.as_ref()),
            scope: Vec::new(),
        })
    }

    /// Whether every group's rows lie in one shard: `provider_code` is a group key, and rows
    /// are routed to shards by provider. A node then counts distinct patients itself
    /// (`Partial::count_distinct`) instead of sending the sets.
    pub fn groups_within_a_shard(&self) -> bool {
        self.group_by.iter().any(|(name, f)| {
            matches!(f, super::field::Field::Column { name: column, .. } if column == "provider_code")
                && name == "provider_code"
        })
    }

    /// An empty partial of this query's shape.
    pub fn partial(&self) -> sus_proto::partial::Partial {
        sus_proto::partial::Partial::new(
            self.group_by.iter().map(|(n, _)| n.clone()).collect(),
            self.aggs
                .iter()
                .map(|a| (a.name.clone(), a.kind()))
                .collect(),
        )
    }
}

fn func_name(f: Func) -> &'static str {
    match f {
        Func::Count => "count",
        Func::Sum => "sum",
        Func::Min => "min",
        Func::Max => "max",
        Func::DistinctPatients => "patients",
    }
}

pub fn parse_dataset(name: &str) -> Result<Dataset> {
    Dataset::parse(name)
        .ok_or_else(|| Error::InvalidArgument(format!("unknown dataset '{name}' (apc, op or ec)")))
}

pub fn parse_view(view: Option<&v1::View>) -> View {
    match view {
        Some(v) if !v.freeze.is_empty() => View::Freeze(v.freeze.clone()),
        _ => View::Current,
    }
}

/// Checks wire filters against a dataset's fields and parses their values.
pub fn parse_filters(dataset: Dataset, filters: &[v1::Filter]) -> Result<Vec<Filter>> {
    filters
        .iter()
        .map(|f| {
            let field = Field::resolve(dataset, &f.field)?;
            let value = |s: &str| parse_value(&field, &f.field, s);
            let pred = match v1::filter::Op::try_from(f.op) {
                Ok(v1::filter::Op::Eq) | Ok(v1::filter::Op::Ne) | Ok(v1::filter::Op::In) => {
                    let op = v1::filter::Op::try_from(f.op).unwrap_or(v1::filter::Op::In);
                    if f.values.is_empty() || (op != v1::filter::Op::In && f.values.len() != 1) {
                        return Err(Error::InvalidArgument(format!(
                            "filter on {}: {} takes {} value(s), {} given",
                            f.field,
                            op.as_str_name(),
                            if op == v1::filter::Op::In {
                                "one or more"
                            } else {
                                "one"
                            },
                            f.values.len()
                        )));
                    }
                    let values = f.values.iter().map(|v| value(v)).collect::<Result<_>>()?;
                    if op == v1::filter::Op::Ne {
                        Pred::NotIn(values)
                    } else {
                        Pred::In(values)
                    }
                }
                Ok(v1::filter::Op::Range) => {
                    let bound = |s: &str| (!s.is_empty()).then(|| value(s)).transpose();
                    Pred::Range(bound(&f.min)?, bound(&f.max)?)
                }
                Err(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "filter on {}: unknown operator {}",
                        f.field, f.op
                    )));
                }
            };
            Ok(Filter {
                name: f.field.clone(),
                field,
                pred,
            })
        })
        .collect()
}

/// Parses a filter value for a field's kind.
pub fn parse_value(field: &Field, name: &str, s: &str) -> Result<Value> {
    let bad = |what: &str| Error::InvalidArgument(format!("filter on {name}: '{s}' is not {what}"));
    Ok(match field.kind() {
        FieldKind::Text => Value::Text(s.to_string()),
        FieldKind::Number => Value::Int(s.trim().parse().map_err(|_| bad("an integer"))?),
        FieldKind::Bool => Value::Int(match s.trim() {
            "true" | "Y" | "1" => 1,
            "false" | "N" | "0" => 0,
            _ => return Err(bad("true or false")),
        }),
        FieldKind::Date => {
            let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                .map_err(|_| bad("a date YYYY-MM-DD"))?;
            Value::Int(i64::from(d.num_days_from_ce() - 719_163))
        }
        FieldKind::DateTime => {
            let t = NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S")
                .map_err(|_| bad("a date-time YYYY-MM-DDTHH:MM:SS"))?;
            Value::Int(t.and_utc().timestamp())
        }
    })
}

/// The key of the patient digests exchanged for distinct counts (the cluster's, never sent to
/// clients): digests of different clusters, or without the key, cannot be linked or reversed.
#[derive(Clone)]
pub struct PatientKey(pub [u8; 16]);

/// What a scan read and skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Visible rows read from segments (before filters).
    pub rows_scanned: u64,
    /// Rows that passed the filters.
    pub rows_matched: u64,
    pub segments_scanned: u64,
    /// Segments skipped by their partitions (provider, months).
    pub segments_pruned: u64,
    /// Row groups (months) skipped within the segments read.
    pub row_groups_pruned: u64,
    /// Segments read from the node's cache rather than Parquet.
    pub segments_hot: u64,
}

impl ScanStats {
    pub(super) fn add(&mut self, o: &ScanStats) {
        self.rows_scanned += o.rows_scanned;
        self.rows_matched += o.rows_matched;
        self.segments_scanned += o.segments_scanned;
        self.segments_pruned += o.segments_pruned;
        self.row_groups_pruned += o.row_groups_pruned;
        self.segments_hot += o.segments_hot;
    }
}
