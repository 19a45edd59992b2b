//! The one error type of `sus-node`, classed by what the caller must do.
//!
//! A submission that fails validation is not an error: it is an answer (a rejected
//! [`crate::report::SubmissionReport`]). Errors here are failures of the node or of its inputs
//! outside a submission (reference data, configuration, disk, corrupt state).

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reference data is missing or malformed: names the file, the line and what is wrong.
    #[error("reference data {path}:{line}: {message}")]
    RefData {
        path: PathBuf,
        line: u64,
        message: String,
    },
    /// A named thing (a freeze point, a shard on this node) does not exist here.
    #[error("not found: {0}")]
    NotFound(String),
    /// The caller could not be authenticated (no token, or one that is expired, revoked or not
    /// signed by this cluster).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller is authenticated but its role, organisation or tier does not allow this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A caller passed something unusable (not a submission's content: that gets a report).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Stored state contradicts itself (a catalogued segment missing, a checksum mismatch).
    /// The node must not serve or accept writes on top of it.
    #[error("corruption in {what}: {message}")]
    Corruption { what: String, message: String },
    /// A file-system operation failed. Durability failures (fsync) are fatal to the node.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The catalog (redb) failed.
    #[error("catalog: {0}")]
    Catalog(#[from] redb::Error),
    /// Encoding or decoding a Parquet segment failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Consensus could not complete the operation (no leader, no quorum, a group stopped, a
    /// membership change refused). Retrying later may succeed; the cluster state says why.
    #[error("consensus: {0}")]
    Consensus(String),
    /// The node's budget for this kind of work (decoding submissions) stayed in use; retrying
    /// later may succeed.
    #[error("busy: {0}")]
    Busy(String),
    /// A submission was derived against spells that changed before it could be applied: nothing
    /// was stored, and deriving it again will succeed (the node does so itself).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller made too many attempts (failed logins); the message says when to try again.
    #[error("too many attempts: {0}")]
    Throttled(String),
    /// An Arrow kernel or batch construction failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Something this build's own invariants rule out happened: a bug, or a replica running a
    /// build that disagrees with the leader's. Never the caller's fault and never a refusal: a
    /// replica that meets it while applying its log stops (see [`Error::is_deterministic`]).
    #[error("internal error (a bug): {0}")]
    Internal(String),
    /// A view (a freeze point) this replica has not applied yet; the shard's leader has it.
    #[error("not found on this replica: {0}")]
    ReplicaBehind(String),
    /// Init of a cluster that already has its shards.
    #[error("the cluster is already initialised")]
    AlreadyInitialised,
    /// A write the shard's log recorded as refused: every replica refused it alike.
    #[error("refused: {0}")]
    Refused(String),
    /// A write was not committed within the commit timeout: its outcome is unknown, and resending
    /// it (same submission id) is safe.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The node or cluster is not in a state to do this (not yet part of a cluster, reference
    /// data not the cluster's, a wire format it does not speak); the message says what to change.
    #[error("failed precondition: {0}")]
    Precondition(String),
    /// Another node could not be reached (no address known, or its channel failed); retrying
    /// later may succeed.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Another node's answer to a call this node made for its caller (a forwarded submission, a
    /// fan-out read): its gRPC code, typed reason and words, passed back to the caller as given.
    #[error("{message}")]
    Peer {
        /// The gRPC code (`tonic::Code` as `i32`).
        code: i32,
        /// The typed reason (`sus_proto::v1::Reason` as `i32`).
        reason: i32,
        message: String,
    },
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Error {
        Error::Peer {
            code: s.code() as i32,
            reason: sus_proto::error::reason(&s) as i32,
            message: s.message().to_string(),
        }
    }
}

impl From<sus_core::Error> for Error {
    fn from(e: sus_core::Error) -> Error {
        match e {
            sus_core::Error::RefData {
                path,
                line,
                message,
            } => Error::RefData {
                path,
                line,
                message,
            },
        }
    }
}

impl Error {
    /// Whether the same command on the same replicated state fails this way on every replica of
    /// a correct build, because of what the command is. Only such an error may be recorded as a
    /// command's answer in a replicated log; any other stops the replica that meets it, since
    /// recording it would let that replica diverge quietly from the others.
    pub fn is_deterministic(&self) -> bool {
        matches!(
            self,
            Error::InvalidArgument(_) | Error::Conflict(_) | Error::Refused(_)
        )
    }

    /// The error's own words: the message of a variant that carries only one, else its display.
    pub fn into_message(self) -> String {
        match self {
            Error::InvalidArgument(m)
            | Error::NotFound(m)
            | Error::Unauthenticated(m)
            | Error::PermissionDenied(m)
            | Error::Consensus(m)
            | Error::Busy(m)
            | Error::Throttled(m)
            | Error::Conflict(m)
            | Error::Refused(m)
            | Error::ReplicaBehind(m)
            | Error::OutcomeUnknown(m)
            | Error::Unreachable(m)
            | Error::Precondition(m)
            | Error::Peer { message: m, .. } => m,
            other => other.to_string(),
        }
    }

    /// What kind of failure this is, in words that say nothing of the data involved (for
    /// callers who must not see file paths, record ids or providers from a node's internals).
    pub fn class(&self) -> &'static str {
        match self {
            Error::Internal(_) => {
                "internal error (a bug, or a build that differs from the leader's)"
            }
            Error::Io { .. } => "I/O error",
            Error::Catalog(_) => "catalog error",
            Error::Corruption { .. } => "corruption",
            Error::Parquet(_) | Error::Arrow(_) => "segment encoding error",
            _ => "error",
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Maps a node error to a gRPC status by what the caller must do, with its typed reason in the
/// details (clients act on the reason, not the text). An internal error is logged here, with
/// its context, since the caller can do nothing about it.
pub fn status(e: Error) -> tonic::Status {
    use sus_proto::error::status as with_reason;
    use sus_proto::v1::Reason;
    use tonic::Code;
    let (code, reason) = match &e {
        Error::InvalidArgument(_) => (Code::InvalidArgument, Reason::Invalid),
        Error::Refused(_) => (Code::InvalidArgument, Reason::RefusedByLog),
        Error::NotFound(_) => (Code::NotFound, Reason::NotFound),
        Error::ReplicaBehind(_) => (Code::NotFound, Reason::ReplicaBehind),
        Error::AlreadyInitialised => (Code::InvalidArgument, Reason::AlreadyInitialised),
        Error::Unauthenticated(_) => (Code::Unauthenticated, Reason::Access),
        Error::PermissionDenied(_) => (Code::PermissionDenied, Reason::Access),
        Error::RefData { .. } => (Code::FailedPrecondition, Reason::Invalid),
        Error::Consensus(_) => (Code::Unavailable, Reason::NoLeader),
        Error::Busy(_) => (Code::Unavailable, Reason::Busy),
        Error::Throttled(_) => (Code::ResourceExhausted, Reason::Busy),
        Error::Conflict(_) => (Code::Aborted, Reason::Conflict),
        Error::OutcomeUnknown(_) => (Code::DeadlineExceeded, Reason::OutcomeUnknown),
        Error::Unreachable(_) => (Code::Unavailable, Reason::Unspecified),
        Error::Precondition(_) => (Code::FailedPrecondition, Reason::Unspecified),
        Error::Peer { code, reason, .. } => (
            Code::from_i32(*code),
            Reason::try_from(*reason).unwrap_or(Reason::Unspecified),
        ),
        Error::Corruption { .. } => (Code::Internal, Reason::Corruption),
        Error::Internal(_) => {
            // The caller learns the class only: the detail may name files or records.
            tracing::error!(error = %e, "internal error answered to a caller");
            return with_reason(
                Code::Internal,
                format!("{}: the node's log has the details", e.class()),
                Reason::Internal,
            );
        }
        Error::Io { .. } | Error::Catalog(_) | Error::Parquet(_) | Error::Arrow(_) => {
            (Code::Internal, Reason::Unspecified)
        }
    };
    let message = e.into_message();
    with_reason(code, message, reason)
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        status(e)
    }
}
