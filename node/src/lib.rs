//! `sus-node`: the sus-cluster server as a library.
//!
//! ```text
//!  submission file ──► ingest::parse ──► validate ──► derive (spells, HRG) ──► price
//!       (CSV/Parquet)        │ rejects whole submission      │                     │
//!                            ▼                               ▼                     ▼
//!                      SubmissionReport ◄──────────── ingest::encode (Arrow, stored schema)
//!                                                            │
//!                                                            ▼
//!                                   store::Store::apply (segments + catalog, versioned)
//! ```
//!
//! The domain core (`validate`, `derive`, `price`, `refdata`) is pure: no I/O beyond loading
//! reference files, no clock, no globals, so that every replica would compute the same result.

pub mod access;
pub mod broken;
pub mod cluster;
pub mod derive;
pub mod error;
pub mod ingest;
pub mod limits;
pub mod model;
pub mod node;
pub mod price;
pub mod query;
pub mod refdata;
pub mod report;
pub mod schema;
pub mod store;
pub mod summary;
pub mod validate;

pub use error::{Error, Result};
