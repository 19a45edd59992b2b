//! Parquet page headers read without decompressing anything (the Thrift compact protocol, by
//! hand, bounded in depth): what a file's pages decompress to and how many values they hold are
//! checked against the submission's limits before a single page is decoded.

use super::record::too_large;
use crate::limits::{SubmissionLimits, keys, setting};
use crate::{Error, Result};
use parquet::file::metadata::ParquetMetaData;

/// Walks the page headers of every column chunk, without decompressing anything: `Err` when the
/// file is over a limit, `Ok(Err(why))` when it is malformed.
pub(super) fn check_pages(
    data: &[u8],
    meta: &ParquetMetaData,
    limits: &SubmissionLimits,
) -> Result<std::result::Result<(), String>> {
    // A list item of n elements is at least 2n - 1 bytes of text.
    let per_row = (limits.max_field_bytes as u64 / 2).max(1);
    let mut decompressed = 0u64;
    for rg in meta.row_groups() {
        let rows = u64::try_from(rg.num_rows()).unwrap_or(0);
        for chunk in rg.columns() {
            let start = chunk
                .dictionary_page_offset()
                .unwrap_or_else(|| chunk.data_page_offset());
            let (Ok(start), Ok(len)) = (
                usize::try_from(start),
                usize::try_from(chunk.compressed_size()),
            ) else {
                return Ok(Err("a column chunk has a negative offset or size".into()));
            };
            let Some(bytes) = start.checked_add(len).and_then(|end| data.get(start..end)) else {
                return Ok(Err("a column chunk lies outside the file".into()));
            };
            let pages = match walk_pages(bytes) {
                Ok(p) => p,
                Err(e) => return Ok(Err(format!("a page header is malformed: {e}"))),
            };
            decompressed = decompressed.saturating_add(pages.bytes);
            if decompressed > limits.max_decoded_bytes {
                return Err(too_large(
                    "its pages decompress to more than",
                    decompressed,
                    limits,
                ));
            }
            let claimed = u64::try_from(chunk.num_values()).unwrap_or(0);
            let values = pages.values.max(claimed);
            if values > rows.saturating_mul(per_row) {
                return Err(Error::InvalidArgument(format!(
                    "column {} holds {values} values in a row group of {rows} rows: more than \
                     lists of at most {} bytes per item can hold (setting {})",
                    chunk.column_path(),
                    limits.max_field_bytes,
                    setting(keys::MAX_FIELD_BYTES)
                )));
            }
        }
    }
    Ok(Ok(()))
}

/// What the pages of one column chunk hold.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Pages {
    /// Decompressed bytes of every page.
    pub bytes: u64,
    /// Values (levels) of the data pages.
    pub values: u64,
}

/// The pages of a column chunk's bytes, by their headers (Thrift compact `PageHeader`s).
pub(super) fn walk_pages(mut bytes: &[u8]) -> std::result::Result<Pages, String> {
    let mut pages = Pages::default();
    while !bytes.is_empty() {
        let mut r = Compact { bytes, pos: 0 };
        let h = r.page_header()?;
        let (Ok(uncompressed), Ok(compressed)) =
            (u64::try_from(h.uncompressed), usize::try_from(h.compressed))
        else {
            return Err("negative page size".into());
        };
        pages.bytes = pages.bytes.saturating_add(uncompressed);
        pages.values = pages
            .values
            .saturating_add(u64::try_from(h.values).unwrap_or(0));
        let next = r
            .pos
            .checked_add(compressed)
            .filter(|n| *n <= bytes.len())
            .ok_or("a page runs past its column chunk")?;
        bytes = &bytes[next..];
    }
    Ok(pages)
}

/// The fields of a page header that size it.
#[derive(Debug, Default)]
struct PageHeader {
    uncompressed: i32,
    compressed: i32,
    /// `num_values` of a data page (v1 or v2); 0 for other pages.
    values: i32,
}

/// A reader of the Thrift compact protocol, as much of it as page headers need: their sizes and
/// value counts are read; every other field is skipped by its type.
struct Compact<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// Nesting deeper than this is refused (a crafted header must not exhaust the stack).
const MAX_DEPTH: u32 = 16;

impl Compact<'_> {
    fn byte(&mut self) -> std::result::Result<u8, String> {
        let b = *self.bytes.get(self.pos).ok_or("page header cut short")?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> std::result::Result<(), String> {
        self.pos = self
            .pos
            .checked_add(n)
            .filter(|p| *p <= self.bytes.len())
            .ok_or("page header cut short")?;
        Ok(())
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn zigzag(&mut self) -> std::result::Result<i64, String> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn i32(&mut self) -> std::result::Result<i32, String> {
        i32::try_from(self.zigzag()?).map_err(|_| "an i32 out of range".to_string())
    }

    /// The next field of a struct: `None` at its end, else (id, type).
    fn field(&mut self, last: &mut i16) -> std::result::Result<Option<(i16, u8)>, String> {
        let b = self.byte()?;
        if b == 0 {
            return Ok(None);
        }
        let ty = b & 0x0f;
        let delta = i16::from(b >> 4);
        let id = if delta == 0 {
            i16::try_from(self.zigzag()?).map_err(|_| "field id out of range")?
        } else {
            last.checked_add(delta).ok_or("field id out of range")?
        };
        *last = id;
        Ok(Some((id, ty)))
    }

    /// Skips an element of a list, set or map of compact type `ty`: unlike a field, a boolean
    /// element takes a byte of its own.
    fn skip_element(&mut self, ty: u8, depth: u32) -> std::result::Result<(), String> {
        if ty == 1 || ty == 2 {
            self.skip(1)
        } else {
            self.skip_value(ty, depth)
        }
    }

    /// Skips a value of compact type `ty`.
    fn skip_value(&mut self, ty: u8, depth: u32) -> std::result::Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        match ty {
            // Booleans (in a field header, the type carries the value) and bytes.
            1 | 2 => Ok(()),
            3 => self.skip(1),
            4..=6 => self.varint().map(|_| ()),
            7 => self.skip(8),
            8 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
                self.skip(n)
            }
            9 | 10 => {
                let h = self.byte()?;
                let size = match h >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                let elem = h & 0x0f;
                // Every element takes a byte at least: a size the bytes cannot hold fails on
                // the way, within as many steps as there are bytes.
                for _ in 0..size {
                    self.skip_element(elem, depth + 1)?;
                }
                Ok(())
            }
            11 => {
                let size = self.varint()?;
                if size == 0 {
                    return Ok(());
                }
                let kv = self.byte()?;
                for _ in 0..size {
                    for t in [kv >> 4, kv & 0x0f] {
                        self.skip_element(t, depth + 1)?;
                    }
                }
                Ok(())
            }
            12 => {
                let mut last = 0;
                while let Some((_, t)) = self.field(&mut last)? {
                    self.skip_value(t, depth + 1)?;
                }
                Ok(())
            }
            other => Err(format!("unknown Thrift type {other}")),
        }
    }

    /// A struct whose field 1 is `num_values` (data page headers v1 and v2).
    fn num_values(&mut self) -> std::result::Result<i32, String> {
        let mut last = 0;
        let mut values = 0;
        while let Some((id, t)) = self.field(&mut last)? {
            if id == 1 && t == 5 {
                values = self.i32()?;
            } else {
                self.skip_value(t, 1)?;
            }
        }
        Ok(values)
    }

    fn page_header(&mut self) -> std::result::Result<PageHeader, String> {
        let mut h = PageHeader::default();
        let (mut uncompressed, mut compressed) = (false, false);
        let mut last = 0;
        while let Some((id, t)) = self.field(&mut last)? {
            match (id, t) {
                (2, 5) => {
                    h.uncompressed = self.i32()?;
                    uncompressed = true;
                }
                (3, 5) => {
                    h.compressed = self.i32()?;
                    compressed = true;
                }
                // DataPageHeader, DataPageHeaderV2.
                (5 | 8, 12) => h.values = self.num_values()?,
                _ => self.skip_value(t, 0)?,
            }
        }
        if !(uncompressed && compressed) {
            return Err("a page header without its sizes".into());
        }
        Ok(h)
    }
}
