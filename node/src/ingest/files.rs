//! Submission files on disk: a data file plus its `FILE.meta.json` envelope sidecar.

use crate::model::SubmissionMeta;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The sidecar envelope path of a submission file: `FILE.meta.json`.
pub fn envelope_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".meta.json");
    PathBuf::from(name)
}

/// Reads a submission file and its envelope.
///
/// A missing or malformed envelope is an `InvalidArgument` naming the sidecar: without it we do
/// not know who sent the file or under which protocol, so nothing can be validated.
pub fn read_submission(file: &Path) -> Result<(SubmissionMeta, Vec<u8>)> {
    let sidecar = envelope_path(file);
    let text = std::fs::read(&sidecar).map_err(|e| {
        Error::InvalidArgument(format!(
            "{}: cannot read the envelope {} ({e}); every submission file needs a FILE.meta.json \
             giving submission_id, sender, dataset and protocol (see docs/rules.md)",
            file.display(),
            sidecar.display()
        ))
    })?;
    let meta: SubmissionMeta = serde_json::from_slice(&text).map_err(|e| {
        Error::InvalidArgument(format!("{}: invalid envelope: {e}", sidecar.display()))
    })?;
    let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
    Ok((meta, bytes))
}
