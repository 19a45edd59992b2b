//! One reference CSV read by column name, with errors that name the file, the line and the column.
//!
//! Column order does not matter and extra columns are ignored (a sheet saved from the workbook loads
//! as it is); the names a table needs must each appear exactly once after trimming spaces and a
//! UTF-8 byte-order mark (which spreadsheet programs write at the start of "CSV UTF-8" files).

use super::money;
use crate::error::{Error, Result};
use crate::model::{MffMicros, Pence};
use std::path::{Path, PathBuf};

/// A parsed sheet: the needed columns of every non-blank data row.
pub(crate) struct Sheet {
    path: PathBuf,
    columns: Vec<&'static str>,
    rows: Vec<(u64, Vec<String>)>,
}

impl Sheet {
    /// Parses `text` (the content of `path`), keeping the `columns` a table needs.
    pub(crate) fn parse(path: &Path, text: &str, columns: &[&'static str]) -> Result<Sheet> {
        let err = |line: u64, message: String| Error::RefData {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(text.as_bytes());
        let header = reader
            .headers()
            .map_err(|e| err(1, format!("cannot read the header row: {e}")))?
            .clone();
        if header.iter().all(|h| h.trim().is_empty()) {
            return Err(err(1, "no header row".into()));
        }
        let mut positions = Vec::with_capacity(columns.len());
        for &name in columns {
            let found: Vec<usize> = header
                .iter()
                .enumerate()
                .filter(|(_, h)| h.trim().trim_start_matches('\u{feff}').trim() == name)
                .map(|(i, _)| i)
                .collect();
            match found.as_slice() {
                [one] => positions.push(*one),
                [] => return Err(err(1, format!("missing column '{name}'"))),
                _ => return Err(err(1, format!("column '{name}' appears more than once"))),
            }
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                err(line, format!("malformed CSV: {e}"))
            })?;
            // Spreadsheets often save trailing empty rows as a line of commas.
            if record.iter().all(|v| v.trim().is_empty()) {
                continue;
            }
            let line = record.position().map_or(0, |p| p.line());
            let values = positions
                .iter()
                .map(|&i| record.get(i).unwrap_or("").trim().to_string())
                .collect();
            rows.push((line, values));
        }
        Ok(Sheet {
            path: path.to_path_buf(),
            columns: columns.to_vec(),
            rows,
        })
    }

    /// The data rows, in file order.
    pub(crate) fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(move |(line, values)| Row {
            sheet: self,
            line: *line,
            values,
        })
    }

    /// An error about the whole file (line 0).
    pub(crate) fn file_error(&self, message: String) -> Error {
        Error::RefData {
            path: self.path.clone(),
            line: 0,
            message,
        }
    }
}

/// One data row of a [`Sheet`].
pub(crate) struct Row<'a> {
    sheet: &'a Sheet,
    line: u64,
    values: &'a [String],
}

impl Row<'_> {
    /// The trimmed cell of a column the sheet was parsed with ("" if it is not one: a programming
    /// error caught by the tests, not something the data can cause).
    pub(crate) fn text(&self, column: &str) -> &str {
        let i = self.sheet.columns.iter().position(|c| *c == column);
        debug_assert!(i.is_some(), "column {column} was not requested");
        i.and_then(|i| self.values.get(i))
            .map_or("", String::as_str)
    }

    /// An error naming this row's file, line and the column.
    pub(crate) fn error(&self, column: &str, message: impl std::fmt::Display) -> Error {
        Error::RefData {
            path: self.sheet.path.clone(),
            line: self.line,
            message: format!("column '{column}': {message}"),
        }
    }

    /// A cell that must not be blank.
    pub(crate) fn required(&self, column: &str) -> Result<String> {
        let v = self.text(column);
        if v.is_empty() {
            Err(self.error(column, "blank"))
        } else {
            Ok(v.to_string())
        }
    }

    /// Money in pounds into pence; blank or `-` is `None`.
    pub(crate) fn money(&self, column: &str) -> Result<Option<Pence>> {
        money::parse_money(self.text(column)).map_err(|m| self.error(column, m))
    }

    /// An MFF payment index into millionths.
    pub(crate) fn mff(&self, column: &str) -> Result<MffMicros> {
        money::parse_mff(self.text(column)).map_err(|m| self.error(column, m))
    }

    /// Whole days; blank or `-` is `None`.
    pub(crate) fn days(&self, column: &str) -> Result<Option<i32>> {
        money::parse_days(self.text(column)).map_err(|m| self.error(column, m))
    }

    /// `Yes`/`No`.
    pub(crate) fn yes_no(&self, column: &str) -> Result<bool> {
        money::parse_yes_no(self.text(column)).map_err(|m| self.error(column, m))
    }

    /// `Y`/`N` (the grouper's `cc_split`).
    pub(crate) fn y_n(&self, column: &str) -> Result<bool> {
        match self.text(column) {
            "Y" => Ok(true),
            "N" => Ok(false),
            v => Err(self.error(column, format!("'{v}' is not Y or N"))),
        }
    }

    /// A small whole number within `range`.
    pub(crate) fn small_number(
        &self,
        column: &str,
        range: std::ops::RangeInclusive<u8>,
    ) -> Result<u8> {
        let v = self.text(column);
        match v.parse::<u8>() {
            Ok(n) if range.contains(&n) && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(self.error(
                column,
                format!(
                    "'{v}' is not a number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// Another row has the same key: refused, because which one applies would be arbitrary.
    pub(crate) fn duplicate(&self, column: &str, key: &str) -> Error {
        self.error(column, format!("'{key}' is listed more than once"))
    }
}
