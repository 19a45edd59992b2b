//! The file system under sus-cluster's durable state, behind two small traits, so that tests can
//! prove what survives a power cut instead of assuming it (as TigerBeetle and FoundationDB
//! simulate their storage).
//!
//! - [`RealDisk`]: `std::fs`, with `fdatasync`/`fsync` as asked.
//! - [`SimDisk`]: in memory. It keeps, per file, the bytes made durable by the last sync and the
//!   writes since; per directory, the entries made durable by the last directory sync and the
//!   operations since. [`SimDisk::cut_power`] stops it (every later call fails with EIO) and
//!   [`SimDisk::after_power_loss`] returns what a restart would find: the durable state, plus a
//!   seeded choice of the unsynced writes (a prefix of them, torn at a sector, or any subset of
//!   the sectors they touched, the rest reading as before) and a seeded prefix of each
//!   directory's unsynced operations.
//!
//! Code that promises durability takes an `Arc<dyn Disk>`; production passes [`real`].

mod real;
mod sim;

pub use real::RealDisk;
pub use sim::{PowerLoss, SimDisk};

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How [`Disk::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, read only.
    Read,
    /// An existing file, read and write.
    ReadWrite,
    /// A new file, read and write; fails if the name exists.
    CreateNew,
    /// A file created if absent and emptied if present, read and write.
    CreateTruncate,
}

/// A file system: the operations durable state needs, and nothing else.
pub trait Disk: Send + Sync + Debug {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>>;
    /// Creates `path` and any missing parents (durable only once each parent is synced).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Replaces `to` by `from` atomically (both in one directory for [`SimDisk`]).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// The paths of the entries of a directory, in no particular order.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    /// Makes the directory's entries (creations, removals, renames in it) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Whether `path` is a directory.
    fn is_dir(&self, path: &Path) -> io::Result<bool>;

    /// Whether this is the real file system (where a library may open the path itself, with
    /// its own locking, instead of going through [`Disk::open`]).
    fn is_real(&self) -> bool {
        false
    }

    /// The size of the file at `path`.
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        self.open(path, OpenMode::Read)?.len()
    }

    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path, OpenMode::Read)?;
        let len = usize::try_from(file.len()?).map_err(io::Error::other)?;
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// An open file: positional reads and writes, so that one handle serves many threads.
pub trait DiskFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; 0 at or past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    /// Makes the file's data (and the size needed to read it) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable.
    fn sync_all(&self) -> io::Result<()>;

    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset)? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "failed to fill whole buffer",
                    ));
                }
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// The real file system, shared.
pub fn real() -> Arc<dyn Disk> {
    Arc::new(RealDisk)
}

/// A sequential reader over a [`DiskFile`] (for `BufReader` and decoders).
#[derive(Debug)]
pub struct FileReader {
    file: Arc<dyn DiskFile>,
    pos: u64,
}

impl FileReader {
    pub fn new(file: Arc<dyn DiskFile>) -> FileReader {
        FileReader::at(file, 0)
    }

    /// A reader starting at byte `pos`.
    pub fn at(file: Arc<dyn DiskFile>, pos: u64) -> FileReader {
        FileReader { file, pos }
    }
}

impl io::Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
