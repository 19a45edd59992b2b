//! The cluster as SQL sees it for one caller (`sus_sql::Source`): each shard of a table scan is
//! a scan of that shard for the caller, read from a replica here or relayed from the shard's
//! leader with the caller's own token, so the access rules and the audit of record-level reads
//! apply exactly as they do to `Query.Scan` and Flight extracts.

use super::service::Services;
use crate::access::{Caller, Tier, pseudonym};
use crate::error::status;
use crate::model::Dataset;
use crate::{Error, Result};
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use std::sync::Arc;
use sus_proto::WIRE_FORMAT_VERSION;
use sus_proto::v1::{self, ScanRequest};
use sus_sql::{BatchStream, Code, ShardScan};

/// One caller's view of the cluster.
pub(crate) struct SqlSource {
    services: Services,
    caller: Caller,
    credentials: tonic::metadata::MetadataMap,
    /// The tier asked (the wire enum; unspecified: the caller's highest).
    tier: i32,
    /// The tier the caller reads at (`None`: it may not read at the tier asked; every read
    /// says why).
    resolved: Option<Tier>,
}

impl std::fmt::Debug for SqlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqlSource({} at tier {})", self.caller.user, self.tier)
    }
}

impl SqlSource {
    pub(crate) fn new(
        services: &Services,
        caller: Caller,
        credentials: tonic::metadata::MetadataMap,
        tier: i32,
    ) -> SqlSource {
        let resolved = Tier::from_proto(tier)
            .and_then(|asked| caller.tier(asked))
            .ok();
        SqlSource {
            services: services.clone(),
            caller,
            credentials,
            tier,
            resolved,
        }
    }

    /// A SQL session over the cluster for this caller, with the node's memory limit.
    pub(crate) fn session(self) -> Result<sus_sql::Session> {
        let limit = self.services.cluster.limits.query.sql_memory_bytes;
        sus_sql::Session::new(Arc::new(self), limit).map_err(from_sql)
    }
}

#[async_trait::async_trait]
impl sus_sql::Source for SqlSource {
    fn schema(&self, dataset: &str) -> sus_sql::Result<SchemaRef> {
        let known = Dataset::parse(dataset)
            .ok_or_else(|| sus_sql::Error::Sql(format!("no dataset {dataset} (apc, op, ec)")))?;
        // The stored columns, then the derived fields (buckets and flags) the nodes compute.
        let stored = crate::schema::stored_schema(known);
        let columns: Vec<String> = stored
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .chain(crate::query::field::DERIVED.iter().map(|d| d.to_string()))
            .collect();
        let schema = crate::query::exec::output_schema(known, &columns).map_err(to_sql)?;
        Ok(match self.resolved {
            Some(Tier::Identifiable) => schema,
            _ => pseudonym::schema(&schema),
        })
    }

    fn filterable(&self, dataset: &str) -> Vec<String> {
        let Ok(schema) = sus_sql::Source::schema(self, dataset) else {
            return Vec::new();
        };
        // Below the identifiable tier a filter on an identifying column would test raw values
        // (the nodes refuse it): the planning node applies it to the transformed ones instead.
        schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|c| self.resolved == Some(Tier::Identifiable) || pseudonym::rule(c).is_none())
            .collect()
    }

    fn anonymised(&self) -> bool {
        self.resolved == Some(Tier::Anonymised)
    }

    fn shards(&self) -> Vec<u32> {
        (0..self.services.cluster.meta_state.borrow().shards.len() as u32).collect()
    }

    async fn scan(&self, scan: ShardScan) -> sus_sql::Result<BatchStream> {
        let req = ScanRequest {
            format: WIRE_FORMAT_VERSION,
            dataset: scan.dataset,
            filters: scan.filters,
            columns: scan.columns,
            view: scan.view.map(|freeze| v1::View { freeze }),
            shards: vec![scan.shard],
            linearizable: false,
            tier: self.tier,
        };
        let batches = self
            .services
            .shard_batches(self.caller.clone(), &self.credentials, req, "sql")
            .await
            .map_err(to_sql)?;
        Ok(Box::pin(batches.map(|b| b.map_err(to_sql))))
    }

    async fn aggregate(&self, spec: v1::QuerySpec) -> sus_sql::Result<arrow::array::RecordBatch> {
        self.finished(spec).await.map_err(to_sql)
    }
}

impl SqlSource {
    /// The finished table of `spec` over every shard, through the native aggregate call (its
    /// access rules and audit).
    async fn finished(&self, spec: v1::QuerySpec) -> Result<arrow::array::RecordBatch> {
        let spec = v1::QuerySpec {
            tier: self.tier,
            ..spec
        };
        let reply = self
            .services
            .read_aggregate(
                self.caller.clone(),
                &self.credentials,
                v1::AggregateRequest {
                    format: WIRE_FORMAT_VERSION,
                    query: Some(spec),
                    shards: Vec::new(),
                    linearizable: false,
                    finish: true,
                    distinct_counts: false,
                },
            )
            .await?;
        sus_proto::partial::ipc_to_batch(&reply.table).map_err(|e| Error::Corruption {
            what: "a finished aggregate".into(),
            message: e.to_string(),
        })
    }
}

/// A node error as SQL's, keeping what the caller must do.
fn to_sql(e: Error) -> sus_sql::Error {
    let s = status(e);
    let code = match s.code() {
        tonic::Code::Unauthenticated => Code::Unauthenticated,
        tonic::Code::PermissionDenied => Code::PermissionDenied,
        tonic::Code::NotFound => Code::NotFound,
        tonic::Code::InvalidArgument
        | tonic::Code::OutOfRange
        | tonic::Code::FailedPrecondition => Code::InvalidArgument,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Aborted => {
            Code::Unavailable
        }
        tonic::Code::ResourceExhausted => Code::ResourceExhausted,
        _ => Code::Internal,
    };
    sus_sql::Error::source_error(code, s.message())
}

/// SQL's error as the node's.
pub(crate) fn from_sql(e: sus_sql::Error) -> Error {
    let message = e.to_string();
    match e.code() {
        Code::Unauthenticated => Error::Unauthenticated(message),
        Code::PermissionDenied => Error::PermissionDenied(message),
        Code::NotFound => Error::NotFound(message),
        Code::InvalidArgument => Error::InvalidArgument(message),
        Code::Unavailable => Error::Consensus(message),
        Code::ResourceExhausted => Error::Throttled(message),
        Code::Internal => Error::Internal(message),
    }
}
