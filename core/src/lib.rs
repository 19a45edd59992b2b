//! `sus-core`: the domain of sus-cluster, apart from everything that runs it (disclosure-control
//! arithmetic included).
//!
//! ```text
//!  records (model) ──► validate (R01-R08 whole-submission, W01-W09 per record)
//!        │                   │
//!        ▼                   ▼
//!  derive (spells, age, POD, HRG through a Grouper) ──► price (exact pence) ──► DerivedRecord
//!        ▲
//!  refdata (organisations, restricted codes, per tariff year: prices, MFF, grouper tables)
//! ```
//!
//! The crate is pure by construction: it depends on no async runtime, network, catalog or clock
//! (Cargo enforces this; `chrono` is built without its `clock` feature here). Its only I/O is
//! [`refdata::RefData::load`] reading reference files at start-up; everything else is a function
//! of its arguments, so every replica that derives the same submission gets the same result.
//! The exact rules are written out in `docs/rules.md`.

pub mod derive;
pub mod disclosure;
pub mod error;
pub mod model;
pub mod price;
pub mod refdata;
pub mod report;
pub mod validate;

pub use error::{Error, Result};
