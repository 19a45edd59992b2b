//! Shard snapshots: frozen cheaply (hard links to the immutable segments plus a catalog dump) when
//! openraft asks for one, and packed into one archive file only when a lagging or new replica
//! needs it, then streamed in bounded chunks.
//!
//! ```text
//!  "SUSSNAP1" │ Header(json) │ File(path,len) Data.. Data │ File.. │ Catalog(kv batch).. │ End(counts)
//!  each record: kind u8 │ len u32 LE │ crc32 u32 LE │ payload (≤ 8 MiB)
//! ```
//!
//! Segment files come before the catalog so that a receiver writes (and fsyncs) every segment
//! before it builds the catalog that refers to them, holding nothing whole in memory. A received
//! archive is untrusted input: every record's length is bounded and its checksum verified, paths
//! must be segment paths, and any defect is an error, never a panic.

use crate::store::{DumpItem, Store};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"SUSSNAP1";
const MAX_RECORD: usize = 8 * 1024 * 1024;
const DATA_CHUNK: usize = 1024 * 1024;
const CATALOG_CHUNK: usize = 4 * 1024 * 1024;

const HEADER: u8 = 1;
const FILE: u8 = 2;
const DATA: u8 = 3;
const CATALOG: u8 = 4;
const END: u8 = 5;

/// What the archive says about itself (openraft's snapshot metadata travels beside it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub group: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Counts {
    files: u64,
    catalog_entries: u64,
}

/// What a frozen snapshot directory holds besides the hard-linked segments.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    /// Segment paths relative to the store (and to the frozen directory) with their sizes.
    files: Vec<(String, u64)>,
    catalog_entries: u64,
}

const MANIFEST: &str = "MANIFEST.json";
const CATALOG_RECORDS: &str = "catalog.records";

/// Freezes a consistent image of `store` in the new directory `dir`: every catalogued segment
/// hard-linked (segments are immutable, so this copies no data) and the catalog dumped as
/// archive records. `observe` sees every catalog entry (the Raft state among them). Writes to the
/// store are held off only while the catalog is read and the links are made.
pub fn freeze(store: &Store, dir: &Path, observe: &mut dyn FnMut(&[u8], &[u8])) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let catalog_path = dir.join(CATALOG_RECORDS);
    let mut cat =
        BufWriter::new(File::create(&catalog_path).map_err(|e| Error::io(&catalog_path, e))?);
    let mut manifest = Manifest::default();
    let mut pending: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut dirs = std::collections::BTreeSet::new();
    store.dump(&mut |item| {
        match item {
            DumpItem::Catalog(k, v) => {
                observe(k, v);
                pending_bytes += k.len() + v.len() + 16;
                pending.push((k.to_vec(), v.to_vec()));
                manifest.catalog_entries += 1;
                if pending_bytes >= CATALOG_CHUNK {
                    flush_catalog(&mut cat, &mut pending)
                        .map_err(|e| Error::io(&catalog_path, e))?;
                    pending_bytes = 0;
                }
            }
            DumpItem::Segment(relative, file) => {
                let target = Store::checked_segment_path(dir, relative)?;
                let parent = target.parent().unwrap_or(dir).to_path_buf();
                if dirs.insert(parent.clone()) {
                    fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
                }
                fs::hard_link(file, &target).map_err(|e| Error::io(&target, e))?;
                let len = fs::metadata(&target)
                    .map_err(|e| Error::io(&target, e))?
                    .len();
                manifest.files.push((relative.to_string(), len));
            }
        }
        Ok(())
    })?;
    flush_catalog(&mut cat, &mut pending).map_err(|e| Error::io(&catalog_path, e))?;
    let cat = cat
        .into_inner()
        .map_err(|e| Error::io(&catalog_path, e.into_error()))?;
    cat.sync_all().map_err(|e| Error::io(&catalog_path, e))?;
    for d in &dirs {
        super::durable::sync_dir(d)?;
    }
    let manifest_json = serde_json::to_vec(&manifest).map_err(|e| invalid(e.to_string()))?;
    super::durable::write_atomically(&dir.join(MANIFEST), &manifest_json)
}

/// Packs a frozen directory into one archive at `path` (fsynced) to stream to a peer; returns
/// its size in bytes.
pub fn pack(dir: &Path, header: &Header, path: &Path) -> Result<u64> {
    let manifest_path = dir.join(MANIFEST);
    let manifest: Manifest = serde_json::from_slice(
        &fs::read(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?,
    )
    .map_err(|e| Error::Corruption {
        what: manifest_path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut out = BufWriter::new(File::create(path).map_err(|e| Error::io(path, e))?);
    out.write_all(MAGIC).map_err(|e| Error::io(path, e))?;
    let header_json = serde_json::to_vec(header).map_err(|e| invalid(e.to_string()))?;
    record(&mut out, HEADER, &header_json).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; DATA_CHUNK];
    for (relative, len) in &manifest.files {
        let file = Store::checked_segment_path(dir, relative)?;
        let mut f = File::open(&file).map_err(|e| Error::io(&file, e))?;
        let desc = serde_json::to_vec(&(relative, len)).map_err(|e| invalid(e.to_string()))?;
        record(&mut out, FILE, &desc).map_err(|e| Error::io(path, e))?;
        let mut left = *len;
        while left > 0 {
            let n = (left as usize).min(DATA_CHUNK);
            f.read_exact(&mut buf[..n])
                .map_err(|e| Error::io(&file, e))?;
            record(&mut out, DATA, &buf[..n]).map_err(|e| Error::io(path, e))?;
            left -= n as u64;
        }
    }
    let catalog_path = dir.join(CATALOG_RECORDS);
    let mut cat = File::open(&catalog_path).map_err(|e| Error::io(&catalog_path, e))?;
    std::io::copy(&mut cat, &mut out).map_err(|e| Error::io(path, e))?;
    let counts = Counts {
        files: manifest.files.len() as u64,
        catalog_entries: manifest.catalog_entries,
    };
    let counts_json = serde_json::to_vec(&counts).map_err(|e| invalid(e.to_string()))?;
    record(&mut out, END, &counts_json).map_err(|e| Error::io(path, e))?;
    let out = out
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    out.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(out.metadata().map_err(|e| Error::io(path, e))?.len())
}

/// Freezes and packs in one go: the archive of `store` at `path`.
#[cfg(test)]
pub fn write_with(
    store: &Store,
    header: &Header,
    path: &Path,
    observe: &mut dyn FnMut(&[u8], &[u8]),
) -> Result<u64> {
    let frozen = path.with_extension("frozen");
    let result = freeze(store, &frozen, observe).and_then(|()| pack(&frozen, header, path));
    let _ = fs::remove_dir_all(&frozen);
    result
}

fn flush_catalog(
    out: &mut impl Write,
    pending: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> std::io::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let bytes = bincode::serialize(pending).map_err(std::io::Error::other)?;
    pending.clear();
    record(out, CATALOG, &bytes)
}

fn record(out: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    out.write_all(&[kind])?;
    out.write_all(&(payload.len() as u32).to_le_bytes())?;
    out.write_all(&crc32fast::hash(payload).to_le_bytes())?;
    out.write_all(payload)
}

/// Reads the header of an archive.
#[cfg(test)]
pub fn read_header(path: &Path) -> Result<Header> {
    let mut reader = Reader::open(path)?;
    match reader.next()? {
        Some((HEADER, payload)) => {
            serde_json::from_slice(&payload).map_err(|e| reader.bad(&format!("header: {e}")))
        }
        _ => Err(reader.bad("no header")),
    }
}

/// Builds a new store in the empty directory `dir` from the archive at `path`, sharing `cache`.
pub fn restore(
    path: &Path,
    dir: &Path,
    cache: std::sync::Arc<crate::store::SegmentCache>,
) -> Result<(Header, Store)> {
    let mut reader = Reader::open(path)?;
    let header: Header = match reader.next()? {
        Some((HEADER, payload)) => {
            serde_json::from_slice(&payload).map_err(|e| reader.bad(&format!("header: {e}")))?
        }
        _ => return Err(reader.bad("no header")),
    };
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut counts = Counts::default();
    let mut first_catalog = None;
    let mut synced_dirs = std::collections::BTreeSet::new();
    loop {
        match reader.next()? {
            Some((FILE, payload)) => {
                let (relative, len): (String, u64) = serde_json::from_slice(&payload)
                    .map_err(|e| reader.bad(&format!("file record: {e}")))?;
                let target = Store::checked_segment_path(dir, &relative)?;
                let parent = target.parent().unwrap_or(dir).to_path_buf();
                fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
                let mut f = File::create(&target).map_err(|e| Error::io(&target, e))?;
                let mut left = len;
                while left > 0 {
                    match reader.next()? {
                        Some((DATA, chunk)) if chunk.len() as u64 <= left => {
                            f.write_all(&chunk).map_err(|e| Error::io(&target, e))?;
                            left -= chunk.len() as u64;
                        }
                        _ => return Err(reader.bad(&format!("file {relative} cut short"))),
                    }
                }
                f.sync_all().map_err(|e| Error::io(&target, e))?;
                synced_dirs.insert(parent);
                counts.files += 1;
            }
            Some((CATALOG, payload)) => {
                first_catalog = Some(payload);
                break;
            }
            Some((END, payload)) => {
                check_end(&reader, &payload, counts)?;
                break;
            }
            Some((kind, _)) => return Err(reader.bad(&format!("unexpected record kind {kind}"))),
            None => return Err(reader.bad("archive ends without an end record")),
        }
    }
    for d in &synced_dirs {
        File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(d, e))?;
    }
    let mut entries = CatalogEntries {
        reader,
        pending: Vec::new(),
        next_chunk: first_catalog,
        counts,
        done: false,
    };
    let store = Store::restore(dir, &mut entries, cache)?;
    if !entries.done {
        return Err(entries.reader.bad("catalog not terminated"));
    }
    Ok((header, store))
}

fn check_end(reader: &Reader, payload: &[u8], seen: Counts) -> Result<()> {
    let expected: Counts =
        serde_json::from_slice(payload).map_err(|e| reader.bad(&format!("end record: {e}")))?;
    if expected != seen {
        return Err(reader.bad(&format!("archive promised {expected:?} but held {seen:?}")));
    }
    Ok(())
}

/// The catalog records of an archive, decoded lazily (one chunk in memory at a time).
struct CatalogEntries {
    reader: Reader,
    pending: Vec<(Vec<u8>, Vec<u8>)>,
    next_chunk: Option<Vec<u8>>,
    counts: Counts,
    done: bool,
}

impl Iterator for CatalogEntries {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(kv) = self.pending.pop() {
                self.counts.catalog_entries += 1;
                return Some(Ok(kv));
            }
            if self.done {
                return None;
            }
            let chunk = match self.next_chunk.take() {
                Some(chunk) => chunk,
                None => match self.reader.next() {
                    Ok(Some((CATALOG, chunk))) => chunk,
                    Ok(Some((END, payload))) => {
                        self.done = true;
                        if let Err(e) = check_end(&self.reader, &payload, self.counts) {
                            return Some(Err(e));
                        }
                        return None;
                    }
                    Ok(_) => {
                        self.done = true;
                        return Some(Err(self.reader.bad("catalog cut short")));
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
            };
            match bincode::deserialize::<Vec<(Vec<u8>, Vec<u8>)>>(&chunk) {
                Ok(mut kvs) => {
                    kvs.reverse();
                    self.pending = kvs;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(self.reader.bad(&format!("catalog chunk: {e}"))));
                }
            }
        }
    }
}

struct Reader {
    path: std::path::PathBuf,
    inner: BufReader<File>,
}

impl Reader {
    fn open(path: &Path) -> Result<Reader> {
        let mut inner = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
        let mut magic = [0u8; 8];
        inner
            .read_exact(&mut magic)
            .map_err(|e| Error::io(path, e))?;
        let reader = Reader {
            path: path.to_path_buf(),
            inner,
        };
        if &magic != MAGIC {
            return Err(reader.bad("not a sus snapshot archive"));
        }
        Ok(reader)
    }

    /// The next record, or `None` at a clean end of file.
    fn next(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        let mut head = [0u8; 9];
        match self.inner.read_exact(&mut head[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::io(&self.path, e)),
        }
        self.inner
            .read_exact(&mut head[1..])
            .map_err(|_| self.bad("truncated record header"))?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let crc = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
        if len > MAX_RECORD {
            return Err(self.bad(&format!("record of {len} bytes exceeds {MAX_RECORD}")));
        }
        let mut payload = vec![0u8; len];
        self.inner
            .read_exact(&mut payload)
            .map_err(|_| self.bad("truncated record"))?;
        if crc32fast::hash(&payload) != crc {
            return Err(self.bad("record checksum mismatch"));
        }
        Ok(Some((head[0], payload)))
    }

    fn bad(&self, message: &str) -> Error {
        Error::Corruption {
            what: format!("snapshot {}", self.path.display()),
            message: message.to_string(),
        }
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

#[cfg(test)]
mod tests {
    //! Snapshot archives: a restored store holds exactly the rows and outcomes of the original,
    //! and a damaged or hostile archive is refused with an error (never a panic, never a file
    //! outside the store).
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::ingest::files::read_submission;
    use crate::refdata::RefData;
    use std::path::PathBuf;
    use sus_client::generator::{GenConfig, generate};

    fn refdata_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata")
    }

    /// A store holding a small generated data set (replacements, deletions, rejections).
    fn populated(root: &Path) -> Store {
        let gen_dir = root.join("gen");
        generate(
            &GenConfig {
                rows: 400,
                seed: 5,
                refdata_dir: refdata_dir(),
                out_dir: gen_dir.clone(),
                reject_files: true,
                ..GenConfig::default()
            },
            &mut |_| {},
        )
        .unwrap();
        let refdata = RefData::load(&refdata_dir()).unwrap();
        let store = Store::open(&root.join("store")).unwrap();
        let mut files: Vec<PathBuf> = fs::read_dir(&gen_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .collect();
        files.sort();
        for file in files {
            let (meta, bytes) = read_submission(&file).unwrap();
            crate::ingest::submit(&refdata, &store, &meta, "f", &bytes, &Default::default())
                .unwrap();
        }
        store
    }

    fn no_cache() -> std::sync::Arc<crate::store::SegmentCache> {
        crate::store::SegmentCache::new(0, 0)
    }

    fn header() -> Header {
        Header {
            format: 1,
            group: 1,
        }
    }

    // A snapshot restored elsewhere holds the same rows, versions and submission outcomes.
    #[test]
    fn restored_store_has_the_same_content() {
        let tmp = tempfile::tempdir().unwrap();
        let store = populated(tmp.path());
        let archive = tmp.path().join("a.snap");
        let mut seen = 0;
        write_with(&store, &header(), &archive, &mut |_, _| seen += 1).unwrap();
        assert!(seen > 0);
        let (h, restored) = restore(&archive, &tmp.path().join("restored"), no_cache()).unwrap();
        assert_eq!(h.group, 1);
        let (a, b) = (
            store.content_digest().unwrap(),
            restored.content_digest().unwrap(),
        );
        assert!(a.live_records > 0 && a.submissions > 0);
        assert_eq!(a, b);
        assert_eq!(read_header(&archive).unwrap().format, 1);
    }

    // Any flipped byte or a cut anywhere in the archive is reported as corruption, not a panic.
    #[test]
    fn damaged_archives_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = populated(tmp.path());
        let archive = tmp.path().join("a.snap");
        write_with(&store, &header(), &archive, &mut |_, _| {}).unwrap();
        let good = fs::read(&archive).unwrap();
        let len = good.len();
        for (i, at) in [9, 20, len / 3, len / 2, len - 3].into_iter().enumerate() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            let path = tmp.path().join(format!("flip{i}.snap"));
            fs::write(&path, &bad).unwrap();
            let result = restore(&path, &tmp.path().join(format!("flip{i}")), no_cache());
            assert!(
                matches!(result, Err(Error::Corruption { .. })),
                "flip at {at}: {:?}",
                result.err()
            );
        }
        for (i, cut) in [5, 100, len / 2, len - 1].into_iter().enumerate() {
            let path = tmp.path().join(format!("cut{i}.snap"));
            fs::write(&path, &good[..cut]).unwrap();
            assert!(restore(&path, &tmp.path().join(format!("cut{i}")), no_cache()).is_err());
        }
    }

    // A well-formed archive naming a path outside `segments/` writes nothing outside the store.
    #[test]
    fn hostile_paths_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for relative in [
            "../escape.parquet",
            "segments/../../escape.parquet",
            "/etc/escape.parquet",
            "catalog/db",
        ] {
            let path = tmp.path().join("hostile.snap");
            let mut out = fs::File::create(&path).unwrap();
            out.write_all(MAGIC).unwrap();
            record(&mut out, HEADER, &serde_json::to_vec(&header()).unwrap()).unwrap();
            let desc = serde_json::to_vec(&(relative, 4u64)).unwrap();
            record(&mut out, FILE, &desc).unwrap();
            record(&mut out, DATA, b"evil").unwrap();
            drop(out);
            let result = restore(&path, &tmp.path().join("store"), no_cache());
            assert!(
                matches!(result, Err(Error::Corruption { .. })),
                "{relative}"
            );
            assert!(!tmp.path().join("escape.parquet").exists());
        }
    }
}
