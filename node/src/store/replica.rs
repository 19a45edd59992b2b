//! What a Raft replica needs of a store beyond applying changes: the applied Raft state kept in
//! the catalog, a consistent dump of the whole store for a snapshot, building a store from such a
//! dump, and a content digest over rows (not file bytes) to compare replicas.

use super::engine::{CATALOG_FILE, FORMAT_FILE, SEGMENTS_DIR, Store, format_text};
use super::{keys, segment};
use crate::model::Dataset;
use crate::{Error, Result};
use arrow::array::{Array, Int64Array};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Catalog keys of the Raft state; `raft/` is a prefix no other catalog key uses.
const RAFT_PREFIX: &str = "raft/";

/// One item of a store dump, in dump order: every catalog entry, then every segment file.
pub enum DumpItem<'a> {
    /// A catalog key and value.
    Catalog(&'a [u8], &'a [u8]),
    /// A catalogued segment: its path relative to the store directory and its absolute path.
    Segment(&'a str, &'a Path),
}

/// A digest of a store's logical content, equal on replicas that hold the same rows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContentDigest {
    pub version: u64,
    pub live_records: u64,
    pub price_pence: i64,
    pub submissions: u64,
    /// Order-independent hash over every live row's values of every dataset, and every
    /// submission's stored outcome, as hex.
    pub checksum: String,
}

impl Store {
    /// A value of the Raft state (applied log id, membership) kept beside the catalog.
    pub fn raft_state(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.db.get(format!("{RAFT_PREFIX}{name}").as_bytes())
    }

    /// Records Raft state values in one transaction, not durably: a crash may lose them whole
    /// (never in part), and replaying the entries after the last durable ones is harmless (every
    /// command is idempotent). The next change's commit, [`Store::flush`] and [`Store::dump`]
    /// make them durable.
    pub fn set_raft_state(&self, values: &[(&str, Vec<u8>)]) -> Result<()> {
        let mut batch = super::catalog::Batch::default();
        for (name, value) in values {
            batch.insert(format!("{RAFT_PREFIX}{name}").as_bytes(), value.as_slice());
        }
        self.db.apply(batch, false)
    }

    /// Makes every catalog commit so far durable (with a buffered store's rows: a checkpoint).
    pub fn flush(&self) -> Result<()> {
        self.checkpoint().map(drop)
    }

    /// Feeds a consistent dump of the whole store to `sink`: writes are held off meanwhile. A
    /// buffered store is checkpointed first, so the dump names only segment files.
    pub fn dump(&self, sink: &mut dyn FnMut(DumpItem<'_>) -> Result<()>) -> Result<()> {
        let _one = self.lock_flushing();
        let staged = self.stage()?;
        let _writer = self.lock_writer();
        self.check_not_failed()?;
        self.commit_durable(staged, super::catalog::Batch::default())?;
        let reader = self.db.reader()?;
        reader.for_range(b"", None, &mut |k, v| sink(DumpItem::Catalog(k, v)))?;
        for (_, v) in reader.scan_prefix(keys::SEGMENT_ANY)? {
            let entry = keys::SegmentEntry::decode(&v)?;
            let path = self.dir.join(&entry.file);
            sink(DumpItem::Segment(&entry.file, &path))?;
        }
        Ok(())
    }

    /// Builds a new store in the empty directory `dir` from a dump: `catalog` yields every
    /// catalog entry, and the segment files must already be under `dir` (the caller wrote and
    /// fsynced them). The catalog is written last, so an interrupted build is not a store.
    pub fn restore(
        dir: &Path,
        catalog: &mut dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
        cache: std::sync::Arc<super::cache::SegmentCache>,
    ) -> Result<Store> {
        let disk = sus_disk::real();
        let format = dir.join(FORMAT_FILE);
        super::engine::write_synced(disk.as_ref(), &format, format_text().as_bytes())?;
        let db = super::catalog::Catalog::open_on(disk.as_ref(), &dir.join(CATALOG_FILE))?;
        let mut batch = super::catalog::Batch::default();
        for kv in catalog {
            let (k, v) = kv?;
            batch.insert(k, v);
            if batch.len() >= 100_000 {
                db.apply(std::mem::take(&mut batch), false)?;
            }
        }
        db.apply(batch, true)?;
        segment::sync_dir(disk.as_ref(), dir)?;
        Store::with_catalog(disk, dir, db, cache)
    }

    /// Where a dumped segment's relative path may land: only under `segments/`, no `..`.
    pub fn checked_segment_path(dir: &Path, relative: &str) -> Result<PathBuf> {
        let rel = Path::new(relative);
        let safe = rel.starts_with(SEGMENTS_DIR)
            && rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
            && relative.ends_with(segment::SUFFIX);
        if !safe {
            return Err(Error::Corruption {
                what: "snapshot".into(),
                message: format!("segment path '{relative}' is not a segment path"),
            });
        }
        Ok(dir.join(rel))
    }

    /// The digest of the live rows and submission outcomes; see [`ContentDigest`].
    pub fn content_digest(&self) -> Result<ContentDigest> {
        let mut digest = ContentDigest {
            version: self.version()?,
            ..ContentDigest::default()
        };
        let mut sum: u64 = 0;
        let options = FormatOptions::default().with_null("\u{0}");
        for dataset in Dataset::ALL {
            for batch in self.scan_live(dataset)? {
                let formatters = batch
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                for row in 0..batch.num_rows() {
                    let mut h = DefaultHasher::new();
                    h.write(dataset.name().as_bytes());
                    for f in &formatters {
                        h.write(f.value(row).to_string().as_bytes());
                        h.write_u8(0x1f);
                    }
                    sum = sum.wrapping_add(h.finish());
                }
                digest.live_records += batch.num_rows() as u64;
                if let Some(prices) = batch
                    .column_by_name("price")
                    .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                {
                    digest.price_pence += prices.iter().flatten().sum::<i64>();
                }
            }
        }
        for (k, v) in self.db.scan_prefix(keys::SUBMISSION_ANY)? {
            let mut h = DefaultHasher::new();
            h.write(&k);
            h.write(&v);
            sum = sum.wrapping_add(h.finish());
            digest.submissions += 1;
        }
        digest.checksum = format!("{sum:016x}");
        Ok(digest)
    }

    /// Whether a write failed part-way (the store refuses writes until reopened).
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}
