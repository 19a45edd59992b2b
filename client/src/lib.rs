//! sus-cluster client library: the cluster client (submissions, administration) and the
//! synthetic data generator (`sus gen`).

pub mod cluster;
pub mod error;
pub mod generator;
pub mod query;
pub mod report;

pub use cluster::{Client, RetryPolicy, SubmitOutcome};
pub use error::{Error, Result};
pub use query::{AggregateResult, ReadFrom, ScanSpec};
