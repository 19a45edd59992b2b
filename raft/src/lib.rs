//! Consensus glue for sus-cluster: the openraft type configuration shared by every Raft group, the
//! durable log store, and the gRPC network that carries many groups over one connection per peer.
//!
//! ```text
//!   node (meta group + data shards)        this crate                     openraft
//!   ───────────────────────────────        ──────────                     ────────
//!   state machines (catalog, segments) ◄── TypeConfig (opaque commands) ── Raft<TypeConfig>
//!                                          LogStore  (fsynced log, vote) ◄─ RaftLogStorage
//!                                          network   (tonic, group id)   ◄─ RaftNetwork
//! ```
//!
//! Commands are opaque bytes here: the node crate encodes its closed command enums and decodes them
//! in its state machines, so this crate knows nothing of submissions or catalogs.

pub mod error;
pub mod log_store;
pub mod network;
mod syncer;

pub use error::{Error, Result};
pub use log_store::LogStore;

use serde::{Deserialize, Serialize};

/// A Raft group in a node: the meta group or one data shard.
pub type GroupId = u64;

/// The group id of the meta group; data shard `s` is group `s + 1`.
pub const META_GROUP: GroupId = 0;

/// Node ids are never reused: a wiped node rejoins under a new id.
pub type NodeId = u64;

/// An opaque, encoded command for a group's state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request(pub Vec<u8>);

/// An opaque, encoded answer of a group's state machine to one command.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Response(pub Vec<u8>);

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request of {} bytes", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration of every group. Snapshots are files on disk so that a
    /// snapshot is streamed in bounded chunks and never held whole in memory.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Shorthand for a Raft instance of this configuration.
pub type Raft = openraft::Raft<TypeConfig>;
/// Shorthand for openraft's storage error of this configuration.
pub type StorageError = openraft::StorageError<NodeId>;
