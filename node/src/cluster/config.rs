//! How a cluster node is started: its identity, addresses, directories, Raft timings, TLS and
//! limits.

use super::tls::TlsFiles;
use crate::limits::Limits;
use std::path::PathBuf;
use std::time::Duration;
use sus_raft::NodeId;

/// Timing and log-retention settings of every group (loopback defaults; raise for WANs).
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_after: u64,
    /// Entries kept in the log behind a snapshot (a lagging peer within them needs no snapshot).
    pub keep_after_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 100,
            election_min_ms: 500,
            election_max_ms: 1000,
            snapshot_after: 1000,
            keep_after_snapshot: 200,
        }
    }
}

/// What a cluster node needs to start.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub id: NodeId,
    /// The address peers and clients use to reach this node (`host:port`).
    pub advertise: String,
    pub data_dir: PathBuf,
    pub refdata_dir: PathBuf,
    /// A licensed grouper's output (`--grouper-output`); `None`: the table grouper.
    pub grouper_output: Option<PathBuf>,
    pub raft: RaftTuning,
    /// How long a submission may wait for its commit before the client is told the outcome is
    /// unknown (and to resend with the same submission id).
    pub commit_timeout: Duration,
    /// TLS material; `None` only for explicitly plaintext (development) nodes.
    pub tls: Option<TlsFiles>,
    /// Bytes of decoded segment columns kept in memory by the node (0: every read decodes
    /// Parquet).
    pub cache_bytes: usize,
    /// The shard replicas' write buffer; `None`: every apply writes its segments and commits
    /// the catalog durably.
    pub write_buffer: Option<WriteBufferConfig>,
    /// What clients may send and make the node hold (validated by the caller).
    pub limits: Limits,
}

/// Memory for rows applied but not yet in segment files (see `crate::store::buffer`).
#[derive(Debug, Clone, Copy)]
pub struct WriteBufferConfig {
    /// For every shard replica of the node together: applies wait above it.
    pub node_bytes: u64,
    /// When one replica checkpoints.
    pub settings: crate::store::BufferSettings,
}

impl Default for WriteBufferConfig {
    fn default() -> WriteBufferConfig {
        WriteBufferConfig {
            node_bytes: 1 << 30,
            settings: crate::store::BufferSettings::default(),
        }
    }
}

/// How long membership changes may take (a learner catching up by snapshot included).
pub(crate) const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// The log of a shard group. Its committed id is not synced on every commit: a replica recovers
/// from its own durable catalog (openraft raises a stale committed id to the applied one) and
/// learns the rest from the leader, so two fsyncs leave every shard commit. The meta group keeps
/// the synced default: its state machine is rebuilt by replaying up to the committed id.
pub(crate) const SHARD_LOG: sus_raft::log_store::Options = sus_raft::log_store::Options {
    segment_bytes: sus_raft::log_store::DEFAULT_SEGMENT_BYTES,
    sync_committed: false,
};
/// The log of the meta group.
pub(crate) const META_LOG: sus_raft::log_store::Options = sus_raft::log_store::Options {
    segment_bytes: sus_raft::log_store::DEFAULT_SEGMENT_BYTES,
    sync_committed: true,
};
/// How long a call waits for a group to elect a leader before answering `UNAVAILABLE`.
pub(crate) const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
