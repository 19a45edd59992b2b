//! Consensus glue for sus-cluster (openraft type config, durable log store, tonic network).
//!
//! Replication arrives with issue #3. The single-node store in `sus-node` already applies each
//! submission as one deterministic, versioned change, which is the unit a Raft entry will carry.
