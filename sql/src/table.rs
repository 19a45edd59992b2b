//! A dataset as a DataFusion table: one partition per shard, each streamed from the cluster.

use crate::filters::{to_wire, to_wire_exact};
use crate::source::{ShardScan, Source};
use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;
use sus_proto::v1;

/// `dataset` (at a view) as the caller of `source` may read it.
#[derive(Debug)]
pub struct DatasetTable {
    source: Arc<dyn Source>,
    dataset: String,
    view: Option<String>,
    schema: SchemaRef,
    filterable: Vec<String>,
}

impl DatasetTable {
    pub fn new(
        source: Arc<dyn Source>,
        dataset: &str,
        view: Option<String>,
    ) -> crate::Result<DatasetTable> {
        let schema = source.schema(dataset)?;
        let filterable = source.filterable(dataset);
        Ok(DatasetTable {
            source,
            dataset: dataset.to_string(),
            view,
            schema,
            filterable,
        })
    }

    fn wire(&self, e: &Expr) -> Option<v1::Filter> {
        to_wire(e, &self.schema, &|c| self.filterable.iter().any(|f| f == c))
    }

    /// The wire filter that keeps exactly the rows `e` keeps, if there is one.
    pub(crate) fn exact_wire(&self, e: &Expr) -> Option<v1::Filter> {
        to_wire_exact(e, &self.schema, &|c| self.filterable.iter().any(|f| f == c))
            .and_then(|(f, exact)| exact.then_some(f))
    }

    pub(crate) fn source(&self) -> &Arc<dyn Source> {
        &self.source
    }

    pub(crate) fn dataset(&self) -> &str {
        &self.dataset
    }

    pub(crate) fn view(&self) -> Option<&str> {
        self.view.as_deref()
    }

    pub(crate) fn table_schema(&self) -> &SchemaRef {
        &self.schema
    }
}

#[async_trait::async_trait]
impl TableProvider for DatasetTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.wire(f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&[usize]>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        // A node reads every column for an empty list: ask for the narrowest one instead when
        // only rows are counted, and drop it here.
        let mut columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        if columns.is_empty() {
            let first =
                self.schema.fields().first().ok_or_else(|| {
                    DataFusionError::Plan(format!("{} has no columns", self.dataset))
                })?;
            columns.push(first.name().clone());
        }
        let scan = ShardScan {
            dataset: self.dataset.clone(),
            columns,
            filters: filters.iter().filter_map(|f| self.wire(f)).collect(),
            view: self.view.clone(),
            shard: 0,
        };
        Ok(Arc::new(ShardScanExec::new(
            self.source.clone(),
            scan,
            schema,
            self.source.shards(),
            limit,
        )))
    }
}

/// Reads each shard of a scan in its own partition.
#[derive(Debug)]
pub struct ShardScanExec {
    source: Arc<dyn Source>,
    scan: ShardScan,
    schema: SchemaRef,
    shards: Vec<u32>,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
}

impl ShardScanExec {
    fn new(
        source: Arc<dyn Source>,
        scan: ShardScan,
        schema: SchemaRef,
        shards: Vec<u32>,
        limit: Option<usize>,
    ) -> ShardScanExec {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(shards.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        ShardScanExec {
            source,
            scan,
            schema,
            shards,
            limit,
            properties,
        }
    }
}

impl DisplayAs for ShardScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "ShardScanExec: dataset={}, shards={}, columns={:?}, filters={}, limit={:?}",
                self.scan.dataset,
                self.shards.len(),
                self.scan.columns,
                self.scan.filters.len(),
                self.limit
            ),
            DisplayFormatType::TreeRender => write!(f, "dataset={}", self.scan.dataset),
        }
    }
}

impl ExecutionPlan for ShardScanExec {
    fn name(&self) -> &'static str {
        "ShardScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema.clone();
        let Some(shard) = self.shards.get(partition) else {
            // No shard (an empty cluster): one empty partition.
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        };
        let scan = ShardScan {
            shard: *shard,
            ..self.scan.clone()
        };
        let source = self.source.clone();
        let target = schema.clone();
        let batches = futures::stream::once(async move { source.scan(scan).await })
            .try_flatten()
            .map_err(DataFusionError::from)
            .and_then(move |batch| {
                let target = target.clone();
                async move { conform(batch, &target) }
            });
        let batches: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(schema.clone(), batches));
        Ok(match self.limit {
            None => batches,
            Some(limit) => Box::pin(RecordBatchStreamAdapter::new(schema, take(batches, limit))),
        })
    }
}

/// At most `limit` rows of `batches`; stops reading (and so the node's scan) once they came.
fn take(
    batches: SendableRecordBatchStream,
    limit: usize,
) -> impl futures::Stream<Item = Result<RecordBatch>> + Send {
    futures::stream::unfold((batches, limit), |(mut batches, left)| async move {
        if left == 0 {
            return None;
        }
        let batch = match batches.next().await? {
            Ok(b) => b,
            Err(e) => return Some((Err(e), (batches, 0))),
        };
        let n = batch.num_rows().min(left);
        Some((Ok(batch.slice(0, n)), (batches, left - n)))
    })
}

/// `batch` with exactly `schema`'s columns and types (a node may send a dictionary where the
/// table declares plain text, or more columns than a counting scan needs).
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let c = batch.column_by_name(f.name()).ok_or_else(|| {
                DataFusionError::Execution(format!("the scan sent no column {}", f.name()))
            })?;
            Ok(if c.data_type() == f.data_type() {
                c.clone()
            } else {
                cast(c, f.data_type())?
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}
