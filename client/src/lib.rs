//! sus-cluster client library: the cluster client (submissions, administration) and the
//! synthetic data generator (`sus gen`).

pub mod certs;
pub mod cluster;
pub mod error;
pub mod generator;
pub mod query;
pub mod report;
pub mod sql;
pub mod submission;
pub mod trace;

pub use cluster::{Client, ClientConfig, RetryPolicy, TlsOptions};
pub use error::{Error, Result};
pub use query::{AggregateResult, Aggregation, ReadFrom, ScanSpec, Tier};
pub use sql::SqlStream;
pub use submission::{SubmissionReport, SubmitOutcome};
