use crate::Result;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::Stream;
use std::pin::Pin;
use sus_proto::v1;

/// A stream of record batches from the cluster.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// One shard's part of a table scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardScan {
    pub dataset: String,
    /// Never empty (an empty list would mean every column to a node).
    pub columns: Vec<String>,
    pub filters: Vec<v1::Filter>,
    /// A freeze point's name; `None` reads the current view.
    pub view: Option<String>,
    pub shard: u32,
}

/// The cluster as one caller sees it.
#[async_trait::async_trait]
pub trait Source: Send + Sync + std::fmt::Debug {
    /// The columns of `dataset` as this caller receives them (its tier decides which identifiers
    /// are pseudonymised).
    fn schema(&self, dataset: &str) -> Result<SchemaRef>;

    /// The columns of `dataset` a node may filter on their stored values for this caller (not
    /// those its tier transforms: a filter on a pseudonym must be applied to the pseudonym).
    fn filterable(&self, dataset: &str) -> Vec<String>;

    /// The shards a table scan reads, one partition each.
    fn shards(&self) -> Vec<u32>;

    /// One shard's rows, checked and audited by the node that reads them.
    async fn scan(&self, scan: ShardScan) -> Result<BatchStream>;

    /// The finished table of a pushed-down aggregate over every shard, as the native
    /// `Query.Aggregate` answers it: the group keys as text, then one `Int64` per aggregate;
    /// for an [anonymised](Source::anonymised) caller, every cell as disclosure-controlled text
    /// and a `TOTAL` line after the groups.
    async fn aggregate(&self, spec: v1::QuerySpec) -> Result<RecordBatch>;

    /// Whether the caller reads at the anonymised tier: then only statements that are one
    /// pushed-down aggregate are answered, and as the disclosure control leaves them (text).
    fn anonymised(&self) -> bool {
        false
    }
}
