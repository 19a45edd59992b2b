//! The one error type of `sus-core`: reference data that cannot be loaded. A submission that fails
//! validation is not an error but an answer (a rejected [`crate::report::SubmissionReport`]).

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the domain core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reference data is missing or malformed: names the file, the line and what is wrong.
    #[error("reference data {path}:{line}: {message}")]
    RefData {
        path: PathBuf,
        line: u64,
        message: String,
    },
}
