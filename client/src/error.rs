//! The client crate's one error type.

use std::path::PathBuf;

/// Errors of the client library and the `sus` command line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A CSV file could not be read or written.
    #[error("{path}: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    /// A reference data file has content the generator cannot use.
    #[error("{path} line {line}: {message}")]
    RefData {
        path: PathBuf,
        line: u64,
        message: String,
    },
    /// JSON could not be written.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The requested configuration cannot be generated.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The cluster could not be reached or did not settle the call in time; a submission's
    /// outcome is unknown and resending it (same submission id) is safe.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The cluster refused the call (bad argument, wrong state); retrying will not help.
    #[error("refused by the cluster: {0}")]
    Refused(String),
    /// The cluster does not know who is calling: no token, or one that is expired, revoked or
    /// not the cluster's. Log in again.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The caller's role, organisation or tier does not allow the call.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The replica asked has not yet applied the view (a freeze point) the call reads; the
    /// shard's leader has. The client asks the leader itself; this reaches a caller only when no
    /// replica had it.
    #[error("not yet on the replica asked: {0}")]
    ReplicaBehind(String),
    /// `init` of a cluster that already has its shards.
    #[error("the cluster is already initialised")]
    AlreadyInitialised,
    /// A node answered a submission without its report: a node older than this client (it sent
    /// the report as JSON text). The submission was processed; resending it (same submission
    /// id) to an up-to-date node returns its original report.
    #[error(
        "node {leader} answered the submission (accepted: {accepted}, shard {shard}) with no \
         submission report: is it older than this client?"
    )]
    MissingReport {
        /// Whether the node said the submission was accepted.
        accepted: bool,
        /// The data shard that holds the sender's records.
        shard: u32,
        /// The node that committed it.
        leader: u64,
    },
    /// Any other failure talking to the cluster.
    #[error("cluster: {0}")]
    Cluster(String),
}

impl Error {
    /// Whether the same call may succeed if made again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

/// Result with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A CSV error on `path`.
    pub fn csv(path: impl Into<PathBuf>, source: csv::Error) -> Error {
        Error::Csv {
            path: path.into(),
            source,
        }
    }
}
