//! Views: which rows of which segments a read sees, now or "as at" a freeze point.
//!
//! A row is visible at version `v` when the version that inserted it is `<= v` and it was not
//! deleted at a version `<= v`. Rows are never rewritten in place and deletion marks record their
//! version, so any past version can be read exactly while compaction keeps the rows it needs
//! (see [`super::compact`]).
//!
//! Freeze points are recorded per store (`freeze/<name>` → version) by a command in the shard's
//! log, so every replica knows a freeze point at the same position of its history.

use super::engine::{Store, version_of};
use super::keys;
use super::listing::{Listing, MonthRun, SegmentView, check_freeze_name};
use crate::model::Dataset;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Store {
    /// The segments of `dataset` as seen at version `as_at` (the latest version when `None`).
    pub fn listing(&self, dataset: Dataset, as_at: Option<u64>) -> Result<Arc<Listing>> {
        let generation = self.generation.load(Ordering::SeqCst);
        {
            let listings = self.listings.lock().unwrap_or_else(|e| e.into_inner());
            if listings.generation == generation
                && let Some(l) = listings.made.get(&(dataset, as_at))
            {
                return Ok(l.clone());
            }
        }
        let listing = Arc::new(self.make_listing(dataset, as_at)?);
        let mut listings = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        // Only a listing read at the generation it is filed under is kept (a commit may have
        // landed meanwhile; then the next call lists again).
        if self.generation.load(Ordering::SeqCst) == generation {
            if listings.generation != generation {
                listings.generation = generation;
                listings.made.clear();
            }
            listings.made.insert((dataset, as_at), listing.clone());
        }
        Ok(listing)
    }

    fn make_listing(&self, dataset: Dataset, as_at: Option<u64>) -> Result<Listing> {
        // One read transaction: the segments and deletion marks of one committed version.
        let pin = self.pin();
        let reader = self.db.reader()?;
        let latest = version_of(&reader)?;
        let version = match as_at {
            Some(v) if v > latest => {
                return Err(Error::InvalidArgument(format!(
                    "version {v} is later than this replica's latest version {latest}"
                )));
            }
            Some(v) => v,
            None => latest,
        };
        let mut segments = Vec::new();
        for mut entry in super::engine::segments_of(&reader, dataset)? {
            let pieces = match entry.is_buffered() {
                true => {
                    let pieces = self.buffered_pieces(entry.id, version)?;
                    entry.fill_from(&pieces);
                    if pieces.is_empty() {
                        continue;
                    }
                    // The pieces kept are those of versions up to the view's: no run to hide.
                    entry.runs.clear();
                    Some(pieces)
                }
                false => None,
            };
            if entry.first_version() > version {
                continue;
            }
            let mut hidden: Vec<u32> = Vec::new();
            if entry.runs.is_empty() {
                if entry.version > version {
                    hidden.extend(0..entry.rows);
                }
            } else {
                for (i, &(start, v)) in entry.runs.iter().enumerate() {
                    if v > version {
                        let end = entry.runs.get(i + 1).map_or(entry.rows, |r| r.0);
                        hidden.extend(start..end);
                    }
                }
            }
            reader.for_prefix(&keys::deleted_prefix(entry.id), &mut |k, v| {
                if keys::u64_value(v, "deletion mark")? <= version {
                    hidden.push(keys::deleted_row(k)?);
                }
                Ok(())
            })?;
            hidden.sort_unstable();
            hidden.dedup();
            if hidden.len() as u64 >= u64::from(entry.rows) {
                continue;
            }
            let mut start = 0u32;
            let months = entry
                .months
                .into_iter()
                .map(|(month, rows)| {
                    let run = MonthRun { month, start, rows };
                    start += rows;
                    run
                })
                .collect();
            segments.push(SegmentView {
                id: entry.id,
                provider: entry.provider,
                months,
                rows: entry.rows,
                bytes: entry.bytes,
                path: match pieces {
                    Some(_) => std::path::PathBuf::new(),
                    None => self.dir.join(&entry.file),
                },
                pieces,
                hidden,
            });
        }
        Ok(Listing {
            dataset,
            version,
            segments,
            pin,
        })
    }

    /// Records the latest version as freeze point `name` and returns it; a name already taken
    /// keeps (and returns) the version it froze, so a retried freeze is harmless.
    pub fn freeze(&self, name: &str) -> Result<u64> {
        check_freeze_name(name)?;
        let _writer = self.lock_writer();
        self.check_not_failed()?;
        if let Some(v) = self.freeze_version(name)? {
            return Ok(v);
        }
        let version = self.version()?;
        let mut ops = super::catalog::Batch::default();
        ops.insert(keys::freeze(name), version.to_be_bytes());
        let written = self.db.apply(ops, self.commits_durable());
        if written.is_err() {
            self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        written?;
        Ok(version)
    }

    /// Counts of the changes with versions in `(after, upto]`, per (provider, `YYYY-MM`):
    /// inserted, replaced, deleted, bulk deleted, stale.
    pub fn activity(
        &self,
        dataset: Dataset,
        after: u64,
        upto: u64,
    ) -> Result<BTreeMap<(String, String), [u64; 5]>> {
        let mut out: BTreeMap<(String, String), [u64; 5]> = BTreeMap::new();
        for (k, v) in self.db.scan_prefix(&keys::activity_prefix(dataset))? {
            let (provider, month, version) = keys::decode_activity(dataset, &k)?;
            if version <= after || version > upto {
                continue;
            }
            if v.len() != 40 {
                return Err(keys::corrupt("activity counts", "not five numbers"));
            }
            let counts = out.entry((provider, month)).or_default();
            for (c, chunk) in counts.iter_mut().zip(v.chunks_exact(8)) {
                *c += keys::u64_value(chunk, "activity counts")?;
            }
        }
        Ok(out)
    }

    /// The version frozen under `name`, if this store has it.
    pub fn freeze_version(&self, name: &str) -> Result<Option<u64>> {
        self.db
            .get(&keys::freeze(name))?
            .map(|v| keys::u64_value(&v, "freeze point"))
            .transpose()
    }

    /// Every freeze point of this store: (name, version), by name.
    pub fn freezes(&self) -> Result<Vec<(String, u64)>> {
        self.db
            .scan_prefix(keys::FREEZE_ANY)?
            .into_iter()
            .map(|(k, v)| {
                let name = String::from_utf8(k[keys::FREEZE_ANY.len()..].to_vec())
                    .map_err(|_| keys::corrupt("freeze point", "name is not UTF-8"))?;
                Ok((name, keys::u64_value(&v, "freeze point")?))
            })
            .collect()
    }
}
