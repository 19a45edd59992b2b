//! The store's files on a [`sus_disk::Disk`]: what Parquet and redb need of a file, over a
//! [`DiskFile`], so that the power-loss tests run the store on a simulated disk.

use bytes::Bytes;
use parquet::file::reader::{ChunkReader, Length};
use std::io::{self, Read, Write};
use std::sync::Arc;
use sus_disk::{DiskFile, FileReader};

/// A segment file opened for Parquet's reader.
#[derive(Debug, Clone)]
pub(crate) struct ParquetFile {
    file: Arc<dyn DiskFile>,
    len: u64,
}

impl ParquetFile {
    pub(crate) fn new(file: Arc<dyn DiskFile>) -> io::Result<ParquetFile> {
        let len = file.len()?;
        Ok(ParquetFile { file, len })
    }
}

impl Length for ParquetFile {
    fn len(&self) -> u64 {
        self.len
    }
}

/// A buffered reader from an offset (what `ChunkReader::get_read` hands out).
pub(crate) struct ReadFrom {
    inner: io::BufReader<io::Take<FileReader>>,
}

impl Read for ReadFrom {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl ChunkReader for ParquetFile {
    type T = ReadFrom;

    fn get_read(&self, start: u64) -> parquet::errors::Result<ReadFrom> {
        let rest = FileReader::at(self.file.clone(), start).take(self.len.saturating_sub(start));
        Ok(ReadFrom {
            inner: io::BufReader::new(rest),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let mut buf = vec![0; length];
        self.file.read_exact_at(&mut buf, start)?;
        Ok(Bytes::from(buf))
    }
}

/// A sequential writer over a new file (Parquet's writer writes forwards only).
#[derive(Debug)]
pub(crate) struct FileWriter {
    file: Arc<dyn DiskFile>,
    pos: u64,
}

impl FileWriter {
    pub(crate) fn new(file: Arc<dyn DiskFile>) -> FileWriter {
        FileWriter { file, pos: 0 }
    }

    pub(crate) fn file(&self) -> &Arc<dyn DiskFile> {
        &self.file
    }
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all_at(buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The catalog's file for redb, on a simulated disk (on the real one redb opens its own file,
/// with its own locking).
#[derive(Debug)]
pub(crate) struct CatalogBackend(pub(crate) Arc<dyn DiskFile>);

impl redb::StorageBackend for CatalogBackend {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
}
