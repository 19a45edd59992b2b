//! A store fed directly, without consensus: reference data plus one store that owns every
//! partition. The offline `sus-node ingest` and `sus-node stats` commands, the demo example, and
//! the tests and benchmarks of the write and read paths use it; a cluster's shards do the same
//! work through their Raft logs (`crate::cluster`).

use crate::Result;
use crate::ingest;
use crate::model::SubmissionMeta;
use crate::refdata::RefData;
use crate::report::SubmissionReport;
use crate::store::Store;
use std::path::PathBuf;

/// Where a local store keeps its data and finds its reference data.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Data directory: the catalog and the segment files live under it.
    pub data_dir: PathBuf,
    /// Reference data folder (see `refdata/README.md`).
    pub refdata_dir: PathBuf,
    /// A licensed grouper's output to group with instead of the reference tables (see
    /// [`crate::refdata::GrouperOutput`]); `None`: the table grouper.
    pub grouper_output: Option<PathBuf>,
}

/// Loads the reference folder and, if given, a licensed grouper's output: the grouper a node
/// prices with is chosen here, at start-up.
pub fn load_refdata(
    dir: &std::path::Path,
    grouper_output: Option<&std::path::Path>,
) -> Result<RefData> {
    let refdata = RefData::load(dir)?;
    let Some(path) = grouper_output else {
        return Ok(refdata);
    };
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::RefData {
        path: path.to_path_buf(),
        line: 0,
        message: format!("cannot read the grouper output: {e}"),
    })?;
    let refdata = refdata.with_grouper_output(path, &text)?;
    tracing::info!(
        path = %path.display(),
        records = refdata.grouper_output().map_or(0, |o| o.len()),
        "grouping with a licensed grouper's output"
    );
    Ok(refdata)
}

/// A local store and the reference data it prices with.
pub struct LocalStore {
    refdata: RefData,
    store: Store,
}

impl LocalStore {
    /// Loads and checks the reference data, then opens (or creates) the store, recovering from a
    /// crash if needed.
    pub fn open(config: &LocalConfig) -> Result<LocalStore> {
        let refdata = load_refdata(&config.refdata_dir, config.grouper_output.as_deref())?;
        let store = Store::open(&config.data_dir)?;
        Ok(LocalStore { refdata, store })
    }

    /// [`LocalStore::open`] with a given segment cache (a zero-sized one reads Parquet every time).
    pub fn open_with_cache(
        config: &LocalConfig,
        cache: std::sync::Arc<crate::store::SegmentCache>,
    ) -> Result<LocalStore> {
        let refdata = load_refdata(&config.refdata_dir, config.grouper_output.as_deref())?;
        let store = Store::open_with_cache(&config.data_dir, cache)?;
        Ok(LocalStore { refdata, store })
    }

    /// Validates, prices and stores one submission within the default limits; see
    /// [`ingest::submit`].
    pub fn submit(
        &self,
        meta: &SubmissionMeta,
        file: &str,
        bytes: &[u8],
    ) -> Result<SubmissionReport> {
        ingest::submit(
            &self.refdata,
            &self.store,
            meta,
            file,
            bytes,
            &crate::limits::SubmissionLimits::default(),
        )
    }

    pub fn refdata(&self) -> &RefData {
        &self.refdata
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}
