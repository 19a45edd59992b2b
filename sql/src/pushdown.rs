//! Grouped aggregates the nodes can compute, pushed down to their partial-aggregate path.
//!
//! `Aggregate(group by columns; count(*), sum, min, max of integer or date columns)` directly
//! over a table scan, whose every filter the nodes apply exactly, becomes one native aggregate
//! (`Source::aggregate`): each node aggregates the shards it leads, the planning node merges.
//! That is the plan of `Query.Aggregate`, with its access rules and audit. Anything else
//! (DISTINCT, expressions, a filter the nodes cannot apply exactly, a `LIMIT` below the
//! aggregate) is left to DataFusion over the scans. Native semantics apply to what is pushed: a
//! sum over a group whose values are all null is 0, not NULL.

use crate::source::Source;
use crate::table::DatasetTable;
use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::Transformed;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, Projection, TableScan, TableType,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::ExecutionPlan;
use std::any::Any;
use std::sync::Arc;
use sus_proto::v1::{self, aggregate::Func};

/// The optimizer rule (added after DataFusion's own, so filters and projections are already in
/// the table scans).
#[derive(Debug, Default)]
pub(crate) struct PushAggregates;

impl OptimizerRule for PushAggregates {
    fn name(&self) -> &str {
        "sus_push_aggregates"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else {
            return Ok(Transformed::no(plan));
        };
        match pushed(aggregate)? {
            Some(p) => Ok(Transformed::yes(p)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// A scan of one of our tables, the predicates over it, and its provider.
type Under<'a> = (&'a TableScan, Vec<&'a Expr>, Arc<dyn TableProvider>);

/// The dataset table under `plan` and the predicates between, if it is a scan (perhaps with a
/// filter above it) of one of ours without a row limit.
fn table_under(plan: &LogicalPlan) -> Result<Option<Under<'_>>> {
    // Projections of plain columns change nothing the nodes compute: look through them.
    let mut plan = plan;
    let mut predicates = Vec::new();
    let scan = loop {
        match plan {
            LogicalPlan::TableScan(s) => break s,
            LogicalPlan::Filter(f) => {
                predicates.extend(split_conjunction(&f.predicate));
                plan = f.input.as_ref();
            }
            LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
                plan = p.input.as_ref();
            }
            _ => return Ok(None),
        }
    };
    if scan.fetch.is_some() || scan.skip.is_some() {
        return Ok(None);
    }
    predicates.extend(scan.filters.iter());
    let provider = source_as_provider(&scan.source)?;
    let any: &dyn Any = provider.as_ref();
    if !any.is::<DatasetTable>() {
        return Ok(None);
    }
    Ok(Some((scan, predicates, provider)))
}

fn pushed(aggregate: &Aggregate) -> Result<Option<LogicalPlan>> {
    let Some((scan, predicates, provider)) = table_under(&aggregate.input)? else {
        return Ok(None);
    };
    let any: &dyn Any = provider.as_ref();
    let Some(table) = any.downcast_ref::<DatasetTable>() else {
        return Ok(None);
    };
    let mut filters: Vec<v1::Filter> = Vec::new();
    for p in predicates {
        let Some(f) = table.exact_wire(p) else {
            return Ok(None);
        };
        // An inexact pushdown leaves the same predicate in the filter above the scan.
        if !filters.contains(&f) {
            filters.push(f);
        }
    }
    let schema = table.table_schema();
    let mut group_by = Vec::new();
    for g in &aggregate.group_expr {
        let Expr::Column(c) = g else { return Ok(None) };
        if schema.field_with_name(&c.name).is_err() {
            return Ok(None);
        }
        group_by.push(c.name.clone());
    }
    let mut aggregates = Vec::new();
    for e in &aggregate.aggr_expr {
        let Some(a) = native(e, schema) else {
            return Ok(None);
        };
        aggregates.push(a);
    }
    // Without groups a native answer may have no row where SQL has one (count 0, the rest
    // NULL): a hidden count tells them apart. A native query needs an aggregate: `SELECT
    // DISTINCT` (groups only) gets the hidden count too.
    let groupless = group_by.is_empty();
    let hidden_count = groupless || aggregates.is_empty();
    if hidden_count {
        aggregates.push(aggregate_of(Func::Count, ""));
    }
    // Named by position: the answer's columns are matched by position, and two SQL aggregates
    // (or one and the hidden count) may compute the same thing.
    for (i, a) in aggregates.iter_mut().enumerate() {
        a.name = format!("a{i}");
    }
    let spec = v1::QuerySpec {
        dataset: table.dataset().to_string(),
        filters,
        group_by,
        aggregates,
        view: table.view().map(|freeze| v1::View {
            freeze: freeze.to_string(),
        }),
        ..v1::QuerySpec::default()
    };
    let output: SchemaRef = Arc::new(aggregate.schema.as_arrow().clone());
    let counts = std::iter::repeat_n(false, spec.group_by.len())
        .chain(spec.aggregates.iter().map(|a| a.func == Func::Count as i32))
        .collect();
    let pushed = PushedAggregate {
        source: table.source().clone(),
        spec,
        schema: output,
        hidden_count,
        groupless,
        counts,
    };
    let new_scan = LogicalPlanBuilder::scan(
        scan.table_name.clone(),
        provider_as_source(Arc::new(pushed)),
        None,
    )?
    .build()?;
    // The aggregate's columns under their own names and qualifiers, for the plan above.
    let exprs = aggregate
        .schema
        .iter()
        .zip(new_scan.schema().columns())
        .map(|((qualifier, field), column)| {
            Expr::Column(column).alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    Ok(Some(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(new_scan),
    )?)))
}

fn aggregate_of(func: Func, field: &str) -> v1::Aggregate {
    v1::Aggregate {
        func: func as i32,
        field: field.to_string(),
        name: String::new(),
    }
}

/// The native aggregate of a SQL one: `count(*)`, or `sum`, `min`, `max` of an integer
/// column (`sum` of a flag cast to an integer; `min`, `max` of a date column).
fn native(e: &Expr, schema: &SchemaRef) -> Option<v1::Aggregate> {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = e else {
        return None;
    };
    if params.distinct || params.filter.is_some() || !params.order_by.is_empty() {
        return None;
    }
    let column = |e: &Expr| -> Option<(String, DataType)> {
        let Expr::Column(c) = e else { return None };
        let f = schema.field_with_name(&c.name).ok()?;
        Some((c.name.clone(), f.data_type().clone()))
    };
    match (func.name(), params.args.as_slice()) {
        ("count", [Expr::Literal(v, _)]) if !v.is_null() => Some(aggregate_of(Func::Count, "")),
        ("count", []) => Some(aggregate_of(Func::Count, "")),
        ("sum", [arg]) => {
            // A flag summed as a count: `sum(CAST(pbr_excluded AS BIGINT))`.
            if let Expr::Cast(c) = arg {
                let (name, ty) = column(&c.expr)?;
                return (ty == DataType::Boolean && c.field.data_type().is_integer())
                    .then(|| aggregate_of(Func::Sum, &name));
            }
            let (name, ty) = column(arg)?;
            ty.is_integer().then(|| aggregate_of(Func::Sum, &name))
        }
        ("min" | "max", [arg]) => {
            let (name, ty) = column(arg)?;
            let func = if func.name() == "min" {
                Func::Min
            } else {
                Func::Max
            };
            (ty.is_integer() || ty == DataType::Date32).then(|| aggregate_of(func, &name))
        }
        _ => None,
    }
}

/// A pushed-down aggregate as a table: one partition, the finished native table.
#[derive(Debug)]
struct PushedAggregate {
    source: Arc<dyn Source>,
    spec: v1::QuerySpec,
    schema: SchemaRef,
    /// The native table ends with a count the statement did not ask for.
    hidden_count: bool,
    /// No group keys: SQL answers one row even over no rows.
    groupless: bool,
    /// Per column of the native table: whether it is a count.
    counts: Vec<bool>,
}

#[async_trait::async_trait]
impl TableProvider for PushedAggregate {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&[usize]>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The native call runs when the plan is made: one round trip, answered in one batch.
        let native = self.source.aggregate(self.spec.clone()).await?;
        let batch = conform(&native, &self.schema, self, &self.counts)?;
        let exec = MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.map(<[usize]>::to_vec),
        )?;
        Ok(exec)
    }
}

/// The native table as the SQL aggregate's columns: keys cast from text to their SQL types,
/// values to theirs; without groups, one row even when nothing matched.
fn conform(
    native: &RecordBatch,
    schema: &SchemaRef,
    shape: &PushedAggregate,
    counts: &[bool],
) -> Result<RecordBatch> {
    let wanted = schema.fields().len();
    let have = native.num_columns() - usize::from(shape.hidden_count);
    if have != wanted {
        return Err(DataFusionError::Internal(format!(
            "a pushed-down aggregate answered {have} columns for {wanted}"
        )));
    }
    if shape.groupless && (native.num_rows() == 0 || matched_nothing(native)?) {
        // SQL's answer over no rows: counts 0, everything else NULL.
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .zip(counts)
            .map(|(f, is_count)| {
                if *is_count {
                    cast(&arrow::array::Int64Array::from(vec![0]), f.data_type())
                } else {
                    Ok(new_null_array(f.data_type(), 1))
                }
            })
            .collect::<std::result::Result<_, _>>()?;
        return Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )?);
    }
    let columns = schema
        .fields()
        .iter()
        .zip(native.columns())
        .map(|(f, c)| cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(native.num_rows())),
    )?)
}

/// Whether the hidden count (the last column) of a groupless answer is 0.
fn matched_nothing(native: &RecordBatch) -> Result<bool> {
    let last = native.column(native.num_columns() - 1);
    let counts = cast(last, &DataType::Int64)?;
    let counts = counts
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("a count that is no integer".into()))?;
    Ok(counts.len() == 1 && counts.value(0) == 0)
}

/// The pushed-down aggregate a whole plan is, at most renamed and reordered above it: what the
/// anonymised tier may run. `None` when the plan computes anything else.
pub(crate) fn whole_aggregate(plan: &LogicalPlan) -> Result<Option<ControlledRead>> {
    // Column indices into the plan below, from the top's output down.
    let mut selection: Vec<usize> = (0..plan.schema().fields().len()).collect();
    let mut plan = plan;
    loop {
        match plan {
            LogicalPlan::Projection(p) => {
                let below = p.input.schema();
                let mut indices = Vec::with_capacity(p.expr.len());
                for e in &p.expr {
                    let e = match e {
                        Expr::Alias(a) => a.expr.as_ref(),
                        other => other,
                    };
                    let Expr::Column(c) = e else { return Ok(None) };
                    let Some(i) = below.maybe_index_of_column(c) else {
                        return Ok(None);
                    };
                    indices.push(i);
                }
                selection = selection.into_iter().map(|i| indices[i]).collect();
                plan = p.input.as_ref();
            }
            LogicalPlan::TableScan(scan) if scan.filters.is_empty() && scan.fetch.is_none() => {
                let provider = source_as_provider(&scan.source)?;
                let any: &dyn Any = provider.as_ref();
                let Some(pushed) = any.downcast_ref::<PushedAggregate>() else {
                    return Ok(None);
                };
                if let Some(p) = &scan.projection {
                    selection = selection.into_iter().map(|i| p[i]).collect();
                }
                return Ok(Some(ControlledRead {
                    source: pushed.source.clone(),
                    spec: pushed.spec.clone(),
                    selection,
                }));
            }
            _ => return Ok(None),
        }
    }
}

/// One pushed-down aggregate read at the anonymised tier.
pub(crate) struct ControlledRead {
    source: Arc<dyn Source>,
    spec: v1::QuerySpec,
    /// The native table's columns, in the statement's order.
    selection: Vec<usize>,
}

impl ControlledRead {
    /// The disclosure-controlled table, with the statement's column names (all text).
    pub(crate) async fn run(&self, schema: &SchemaRef) -> crate::Result<RecordBatch> {
        let table = self.source.aggregate(self.spec.clone()).await?;
        let columns = self
            .selection
            .iter()
            .map(|i| {
                let c = table.columns().get(*i).ok_or_else(|| {
                    crate::Error::source_error(
                        crate::Code::Internal,
                        format!("a controlled table without column {i}"),
                    )
                })?;
                cast(c, &DataType::Utf8).map_err(|e| crate::Error::Sql(e.to_string()))
            })
            .collect::<crate::Result<Vec<_>>>()?;
        RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(table.num_rows())),
        )
        .map_err(|e| crate::Error::Sql(e.to_string()))
    }
}
