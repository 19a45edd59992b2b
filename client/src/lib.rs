//! sus-cluster client library: the synthetic data generator (`sus gen`) and, later, the submission
//! and query client.

pub mod error;
pub mod generator;

pub use error::{Error, Result};
