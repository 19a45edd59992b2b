//! The pushed-down query engine: filters, group-by and aggregates over one store's segments, as
//! at a view, producing partial aggregates ([`sus_proto::partial`]) the client merges exactly.
//!
//! ```text
//!  Query ─► listing per store (segments visible at the view, hidden rows)
//!        ─► prune by partition: segments by provider, month runs (row groups) by month
//!        ─► every kept segment of every store, in parallel (rayon, all cores), per chunk (one
//!           partition's rows: provider and month are constants):
//!             columns from the cache or Parquet (only those needed, only kept row groups)
//!             ─► filters the partition does not decide, as a row mask (dictionary-aware)
//!             ─► group: partition keys free, dictionary keys per value, dense tables
//!             ─► accumulate (sums in i128) into the thread's groups
//!        ─► merge the threads' groups into one Partial
//! ```
//!
//! Fields are described in [`field`]; the wire form is `QuerySpec` in `proto/sus.proto`.

pub mod exec;
pub mod field;
mod filter;
mod group;
mod keys;
mod read;
pub mod spec;

pub use exec::{aggregate, aggregate_stores, scan};
pub use field::Field;
pub use spec::{
    Agg, Filter, Func, MAX_GROUP_BY, PatientKey, Pred, Query, ScanStats, Value, View,
    parse_dataset, parse_filters, parse_view,
};
