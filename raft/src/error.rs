//! The one error type of `sus-raft`.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures of the consensus glue, classed by what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation on the log or vote failed. Fatal to the group: an fsync error is
    /// never retried.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The durable log contradicts itself (a checksum mismatch or a hole before the tail).
    #[error("corrupt raft log {path}: {message}")]
    Corruption { path: PathBuf, message: String },
    /// Encoding or decoding an entry or message failed.
    #[error("codec: {0}")]
    Codec(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
