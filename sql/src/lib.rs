//! SQL over sus-cluster: DataFusion plans whose table scans run on the nodes.
//!
//! The tables `apc`, `op` and `ec` are [`DatasetTable`]s over a [`Source`]: something that
//! streams one shard's rows for one caller (on a node: read here or relayed from the shard's
//! leader, with the caller's own token, so every access rule applies inside the scan exactly as
//! for the native calls). Projection, the filters the nodes understand (equality, `IN`, ranges)
//! and `LIMIT` go to the nodes; DataFusion computes everything else over the scanned streams.
//! Statements are read-only: DDL, DML, `COPY` and `SET` are refused.

mod error;
mod filters;
mod pushdown;
mod session;
mod source;
mod table;

pub use error::{Code, Error, Result};
pub use filters::to_wire;
pub use session::{CATALOG, DATASETS, MAX_SQL_BYTES, SCHEMA, Session};
pub use source::{BatchStream, ShardScan, Source};
pub use table::DatasetTable;

/// DataFusion, for the node's Flight SQL service (its record batches are ours: one arrow).
pub use datafusion;
