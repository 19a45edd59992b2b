//! `sus-node`: the sus-cluster server as a library (the `sus-node` binary is `main.rs`).
//!
//! # A guide to the crate
//!
//! **Write path** (a submission file in, a report out, the same rows on every replica):
//!
//! ```text
//!  server::ingest (decode) ─► cluster::submit (authorise, forward once to the shard leader)
//!    ─► ingest::prepare on the leader: ingest::parse (CSV or Parquet, R01-R04)
//!         ─► validate (R05, R06, R08) ─► derive (spells over every live episode, HRG) ─► price
//!         ─► ingest::encode (Arrow, the stored schema) ─► cluster::command (a Raft entry)
//!    ─► openraft commits it (sus-raft: fsynced log) ─► cluster::shard applies it on each replica
//!         ─► store::Store::apply (plan, segments, one durable catalog transaction)
//! ```
//!
//! **Read path** (an aggregate, a scan or an extract, scoped by the caller's role and tier):
//!
//! ```text
//!  server::query / server::flight (decode) ─► cluster::{aggregate, activity, reads}
//!    ─► access::read (tier, scope, identifiers, disclosure control: the one read policy)
//!    ─► the shards this node hosts (or their leaders, fanned out); audit before the first row
//!    ─► query (spec ─► filter ─► group over store::SegmentView chunks) ─► a partial aggregate
//!    ─► merged by sus_proto::partial (on the client, or here for the anonymised tier)
//! ```
//!
//! **Modules.** [`ingest`] parses and prepares submissions (and [`ingest::local`] feeds a store
//! directly, without consensus, for offline loads, tests and benchmarks); [`store`] keeps
//! segments and the catalog of one shard replica; [`query`] is the pushed-down engine over a store; [`access`] is
//! who may read what; [`cluster`] is the node's groups and use cases (meta group, shards,
//! membership, freeze points, reads, audit), each returning this crate's [`Error`];
//! [`server`] serves them on the gRPC port (decode, authenticate, call a use case, encode: the
//! only place a node's own error becomes a gRPC status, with its typed reason);
//! [`limits`] bounds what a caller may send; [`error`] classes every failure (a refusal, the
//! caller's fault, or [`Error::Internal`]: a bug, never recorded as a refusal). The domain core
//! (`model`, `validate`, `derive`, `price`, `refdata`, `report`) is its own crate, `sus-core`,
//! re-exported here under the same names: no I/O beyond loading reference files, no clock and no
//! globals, so that every replica would compute the same result.
//!
//! # Glossary
//!
//! - **CDS**: Commissioning Data Set, the national record formats (admitted patient care `apc`,
//!   outpatients `op`, emergency care `ec`).
//! - **HRG**: Healthcare Resource Group, the casemix group a spell or attendance is priced by.
//! - **PbR**: Payment by Results, the national tariff that prices activity by HRG.
//! - **POD**: point of delivery (elective, non-elective, outpatient first or follow-up, ...).
//! - **MFF**: Market Forces Factor, a provider's multiplier on the national price.
//! - **SSEM**: short stay emergency adjustment, for emergency admissions shorter than the trim.
//! - **Spell**: a stay in hospital from admission to discharge, made of one or more episodes
//!   (periods under one consultant); APC is grouped and priced per spell.
//! - **TFC**: treatment function code, the specialty an outpatient attendance is priced under.
//! - **ICB**: Integrated Care Board, the commissioner of most activity.
//! - **Freeze point**: a named, replicated version of every shard, read exactly later.

pub mod access;
pub mod broken;
pub mod cluster;
pub mod error;
pub mod ingest;
pub mod limits;
pub mod query;
pub mod schema;
pub mod server;
pub mod store;

pub use error::{Error, Result};
pub use sus_core::{derive, model, price, refdata, report, validate};
