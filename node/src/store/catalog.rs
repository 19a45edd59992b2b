//! The catalog: one ordered table of byte keys and values in a redb database (a copy-on-write
//! B-tree in one file, MVCC reads, checksummed commits).
//!
//! A change is one write transaction, committed durably (fsync) before the change is
//! acknowledged: after a crash the catalog is exactly some committed change, never part of one.
//! Commits may instead be non-durable (the applied Raft log id, which a replay after a crash
//! reconstructs): those become durable with the next durable commit or are lost whole. A read
//! ([`Catalog::reader`]) sees one committed state however long it runs, so listings need no lock
//! against writers.

use crate::{Error, Result};
use redb::{Durability, ReadableDatabase, TableDefinition};
use std::path::Path;

/// A visitor of catalog entries (key, value); an error stops the walk.
pub type EntryFn<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("catalog");

/// Page cache per catalog: a node opens one per shard replica.
const CACHE_BYTES: usize = 64 << 20;

fn catalog_error(e: impl Into<redb::Error>) -> Error {
    Error::Catalog(e.into())
}

/// See the module documentation.
pub struct Catalog {
    /// `None` once abandoned.
    db: Option<redb::Database>,
}

/// Writes of one transaction, applied in order (a later write of a key wins).
#[derive(Default)]
#[allow(clippy::len_without_is_empty)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().to_vec(), None));
    }

    /// Writes held.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// One consistent view of the catalog.
pub struct Reader {
    table: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

/// The first key after every key starting with `prefix` (`None`: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Reader {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .table
            .get(key)
            .map_err(catalog_error)?
            .map(|v| v.value().to_vec()))
    }

    /// Every entry whose key is in `[from, to)` (`to`: `None` for the end), in key order.
    pub fn range(&self, from: &[u8], to: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_range(from, to, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.range(prefix, prefix_end(prefix).as_deref())
    }

    /// Feeds `f` every entry in `[from, to)` without collecting them.
    pub fn for_range(&self, from: &[u8], to: Option<&[u8]>, f: &mut EntryFn<'_>) -> Result<()> {
        let iter = match to {
            Some(to) => self.table.range::<&[u8]>(from..to),
            None => self.table.range::<&[u8]>(from..),
        }
        .map_err(catalog_error)?;
        for kv in iter {
            let (k, v) = kv.map_err(catalog_error)?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }

    /// Feeds `f` every entry whose key starts with `prefix`.
    pub fn for_prefix(&self, prefix: &[u8], f: &mut EntryFn<'_>) -> Result<()> {
        self.for_range(prefix, prefix_end(prefix).as_deref(), f)
    }
}

/// Opens redb's database at `path`: on the real disk redb opens the file itself (with its own
/// locking); on another, through the file the disk opens.
fn open_db(disk: &dyn sus_disk::Disk, path: &Path, new: bool) -> Result<redb::Database> {
    let mut builder = redb::Database::builder();
    builder.set_cache_size(CACHE_BYTES);
    if disk.is_real() {
        return builder.create(path).map_err(catalog_error);
    }
    let mode = if new {
        sus_disk::OpenMode::CreateNew
    } else {
        sus_disk::OpenMode::ReadWrite
    };
    let file = disk.open(path, mode).map_err(|e| Error::io(path, e))?;
    builder
        .create_with_backend(super::files::CatalogBackend(file))
        .map_err(catalog_error)
}

impl Catalog {
    /// Opens (or creates) the catalog file at `path` on `disk`. A new catalog is made under a
    /// temporary name and renamed into place once its first commit is durable, so that a crash
    /// while redb lays out a new file never leaves a catalog that will not open.
    pub fn open_on(disk: &dyn sus_disk::Disk, path: &Path) -> Result<Catalog> {
        let io = |p: &Path, e| Error::io(p, e);
        if !disk.exists(path).map_err(|e| io(path, e))? {
            let tmp = path.with_extension("redb.tmp");
            if disk.exists(&tmp).map_err(|e| io(&tmp, e))? {
                disk.remove_file(&tmp).map_err(|e| io(&tmp, e))?;
            }
            let fresh = Catalog {
                db: Some(open_db(disk, &tmp, true)?),
            };
            fresh.apply(Batch::default(), true)?;
            drop(fresh);
            disk.rename(&tmp, path).map_err(|e| io(path, e))?;
            if let Some(dir) = path.parent() {
                disk.sync_dir(dir).map_err(|e| io(dir, e))?;
            }
        }
        let db = open_db(disk, path, false)?;
        let catalog = Catalog { db: Some(db) };
        // The table exists from the first open, so reads never meet a missing table.
        catalog.apply(Batch::default(), true)?;
        Ok(catalog)
    }

    fn db(&self) -> Result<&redb::Database> {
        self.db
            .as_ref()
            .ok_or_else(|| Error::Internal("the catalog was abandoned".into()))
    }

    /// Leaves the database file without closing it: redb's close would make pending
    /// non-durable commits durable, and its next open rolls back to the last durable one.
    pub fn abandon(&mut self) {
        std::mem::forget(self.db.take());
    }

    /// A consistent view of the latest commit.
    pub fn reader(&self) -> Result<Reader> {
        let tx = self.db()?.begin_read().map_err(catalog_error)?;
        let table = tx.open_table(TABLE).map_err(catalog_error)?;
        Ok(Reader { table })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.reader()?.get(key)
    }

    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.reader()?.scan_prefix(prefix)
    }

    /// Commits `batch` as one transaction; durably (fsynced before this returns) unless `durable`
    /// is false.
    pub fn apply(&self, batch: Batch, durable: bool) -> Result<()> {
        let mut tx = self.db()?.begin_write().map_err(catalog_error)?;
        tx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(catalog_error)?;
        {
            let mut table = tx.open_table(TABLE).map_err(catalog_error)?;
            for (k, v) in &batch.ops {
                match v {
                    Some(v) => {
                        table
                            .insert(k.as_slice(), v.as_slice())
                            .map_err(catalog_error)?;
                    }
                    None => {
                        table.remove(k.as_slice()).map_err(catalog_error)?;
                    }
                }
            }
        }
        tx.commit().map_err(catalog_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Prefix scans stop at the prefix, later writes of a batch win, and a reader keeps its view
    // while later commits land.
    #[test]
    fn batches_prefixes_and_snapshot_reads() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let c =
            Catalog::open_on(&sus_disk::RealDisk, &tmp.path().join("catalog.redb")).expect("open");
        let mut b = Batch::default();
        b.insert(b"a/1", b"x");
        b.insert(b"a/2", b"y");
        b.insert(b"a\xff", b"edge");
        b.insert(b"b/1", b"z");
        b.insert(b"a/2", b"y2");
        b.remove(b"a/1");
        c.apply(b, true).expect("commit");
        let before = c.reader().expect("reader");
        let mut b = Batch::default();
        b.insert(b"a/3", b"w");
        c.apply(b, false).expect("commit");
        let keys =
            |rows: Vec<(Vec<u8>, Vec<u8>)>| rows.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(before.scan_prefix(b"a/").expect("scan")),
            vec![b"a/2".to_vec()]
        );
        assert_eq!(
            keys(c.scan_prefix(b"a/").expect("scan")),
            vec![b"a/2".to_vec(), b"a/3".to_vec()]
        );
        assert_eq!(c.get(b"a/2").expect("get"), Some(b"y2".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(keys(c.scan_prefix(b"a").expect("scan")).len(), 3);
    }
}
