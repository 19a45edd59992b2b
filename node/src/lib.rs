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
//! The domain core (`model`, `validate`, `derive`, `price`, `refdata`, `report`) is its own crate,
//! `sus-core`, re-exported here under the same module names: it has no I/O beyond loading reference
//! files, no clock and no globals, so that every replica would compute the same result.

pub mod access;
pub mod broken;
pub mod cluster;
pub mod error;
pub mod ingest;
pub mod limits;
pub mod node;
pub mod query;
pub mod schema;
pub mod store;
pub mod summary;

pub use error::{Error, Result};
pub use sus_core::{derive, model, price, refdata, report, validate};
