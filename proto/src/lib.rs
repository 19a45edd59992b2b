//! The wire contract of sus-cluster.
//!
//! The gRPC services (`Ingest`, `Query`, `Admin`, `Raft`) are defined here when the cluster's network
//! arrives (issue #3). Until then the node is used as a library and this crate only fixes the wire
//! format version that every message family will carry.

/// Version of the wire format; bumped on any incompatible change to a message family.
pub const WIRE_FORMAT_VERSION: u32 = 1;
