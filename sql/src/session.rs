//! One caller's SQL session: the tables, the time-view functions, the limits.

use crate::Code;
use crate::pushdown::{ControlledRead, whole_aggregate};
use crate::table::DatasetTable;
use crate::{Error, Result, Source};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use std::sync::Arc;

/// The tables, one per dataset.
pub const DATASETS: [&str; 3] = ["apc", "op", "ec"];

/// The longest statement accepted.
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// Where the tables live (`sus.public.apc`), for clients that list catalogs and schemas.
pub const CATALOG: &str = "sus";
pub const SCHEMA: &str = "public";

/// A session for one caller: tables `apc`, `op`, `ec` at the current view, and table functions
/// `apc_at('freeze point')` (and `op_at`, `ec_at`) for a frozen view.
pub struct Session {
    ctx: SessionContext,
    anonymised: bool,
}

impl Session {
    /// `memory_limit`: the bytes one statement's operators (sorts, joins, hash tables) may hold;
    /// beyond it the statement fails (nothing spills to disk).
    pub fn new(source: Arc<dyn Source>, memory_limit: usize) -> Result<Session> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, SCHEMA);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(memory_limit, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(Error::from)?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.add_optimizer_rule(Arc::new(crate::pushdown::PushAggregates));
        for dataset in DATASETS {
            let table = DatasetTable::new(source.clone(), dataset, None)?;
            ctx.register_table(dataset, Arc::new(table))
                .map_err(Error::from)?;
            ctx.register_udtf(
                &format!("{dataset}_at"),
                Arc::new(AtView {
                    source: source.clone(),
                    dataset,
                }),
            );
        }
        Ok(Session {
            ctx,
            anonymised: source.anonymised(),
        })
    }

    /// Plans a read-only statement (a query; no DDL, DML, `COPY` or `SET`).
    pub async fn plan(&self, sql: &str) -> Result<DataFrame> {
        if sql.len() > MAX_SQL_BYTES {
            return Err(Error::Sql(format!(
                "the statement is {} bytes, over the limit of {MAX_SQL_BYTES}",
                sql.len()
            )));
        }
        if sql.trim().is_empty() {
            return Err(Error::Sql("the statement is empty".into()));
        }
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        Ok(self.ctx.sql_with_options(sql, options).await?)
    }

    /// The columns `sql` answers.
    pub async fn schema(&self, sql: &str) -> Result<SchemaRef> {
        if self.anonymised {
            return Ok(self.controlled(sql).await?.1);
        }
        let df = self.plan(sql).await?;
        Ok(Arc::new(df.schema().as_arrow().clone()))
    }

    /// Runs `sql`; the stream reads the cluster as it is polled.
    pub async fn execute(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        if self.anonymised {
            let (read, schema) = self.controlled(sql).await?;
            let batch = read.run(&schema).await?;
            let stream = futures::stream::once(async { Ok(batch) });
            return Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)));
        }
        let stream = self.plan(sql).await?.execute_stream().await?;
        // Branches of a UNION may differ in nullability or field metadata: every batch leaves
        // with the statement's one schema, as a stream's consumers expect.
        let schema = stream.schema();
        let declared = schema.clone();
        let batches = stream.map(move |batch| {
            let batch = batch?;
            if batch.schema_ref() == &declared {
                return Ok(batch);
            }
            let columns = batch.columns().to_vec();
            Ok(batch
                .with_schema(declared.clone())
                .or_else(|_| RecordBatch::try_new(declared.clone(), columns))?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    /// At the anonymised tier a statement must be one pushed-down aggregate, answered as the
    /// disclosure control leaves it: every column text (`*` for a suppressed cell, rounded
    /// counts and sums), a `TOTAL` line after the groups.
    async fn controlled(&self, sql: &str) -> Result<(ControlledRead, SchemaRef)> {
        let plan = self.plan(sql).await?.into_optimized_plan()?;
        let read = whole_aggregate(&plan)?.ok_or_else(|| {
            Error::source_error(
                Code::PermissionDenied,
                "at the anonymised tier a statement must be one aggregate the nodes compute, so \
                 that its table passes the disclosure control: one table, GROUP BY columns, \
                 count(*), sum, min or max of columns, conditions the nodes apply exactly \
                 (=, <>, IN, BETWEEN, ranges on numbers and dates); no DISTINCT, expressions, \
                 joins, ORDER BY or LIMIT",
            )
        })?;
        let fields: Vec<Field> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect();
        Ok((read, Arc::new(Schema::new(fields))))
    }

    /// The tables' columns, as a client lists them.
    pub async fn table_schema(&self, table: &str) -> Result<SchemaRef> {
        let t = self.ctx.table_provider(table).await.map_err(Error::from)?;
        Ok(t.schema())
    }
}

/// `<dataset>_at('freeze point')`: the dataset as that freeze point froze it.
#[derive(Debug)]
struct AtView {
    source: Arc<dyn Source>,
    dataset: &'static str,
}

impl TableFunctionImpl for AtView {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let name = match args.exprs() {
            [Expr::Literal(ScalarValue::Utf8(Some(s)), _)] => s.clone(),
            [Expr::Literal(ScalarValue::Utf8View(Some(s)), _)] => s.clone(),
            _ => {
                return Err(Error::Sql(format!(
                    "{}_at takes one argument, a freeze point's name in quotes: {}_at('2024-25 M06')",
                    self.dataset, self.dataset
                ))
                .into());
            }
        };
        Ok(Arc::new(DatasetTable::new(
            self.source.clone(),
            self.dataset,
            Some(name),
        )?))
    }
}
