//! The output of a licensed HRG grouper, loaded in place of our table grouper's answers.
//!
//! A CSV with the header `dataset,cds_unique_id,hrg`: one row per record the grouper saw (APC:
//! the episode HRG; OP: the procedure HRG, blank when the procedure does not group; EC: the
//! attendance HRG). The node is pointed at it at start-up (`--grouper-output`); records it does not
//! list are grouped by the reference tables as before.

use crate::error::{Error, Result};
use crate::model::Dataset;
use std::collections::HashMap;
use std::path::Path;

/// HRGs by dataset and `cds_unique_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrouperOutput {
    hrgs: HashMap<(Dataset, String), String>,
}

impl GrouperOutput {
    /// Parses the file's text; errors name `path` and the line.
    pub fn parse(path: &Path, text: &str) -> Result<GrouperOutput> {
        let error = |line: u64, message: String| Error::RefData {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let header = reader
            .headers()
            .map_err(|e| error(1, format!("unreadable header: {e}")))?
            .clone();
        let want = ["dataset", "cds_unique_id", "hrg"];
        if header.iter().collect::<Vec<_>>() != want {
            return Err(error(1, format!("the header must be {}", want.join(","))));
        }
        let mut hrgs = HashMap::new();
        for (i, row) in reader.records().enumerate() {
            let line = i as u64 + 2;
            let row = row.map_err(|e| error(line, format!("unreadable row: {e}")))?;
            let dataset = Dataset::parse(&row[0])
                .ok_or_else(|| error(line, format!("unknown dataset '{}'", &row[0])))?;
            let id = row[1].to_string();
            if id.is_empty() {
                return Err(error(line, "blank cds_unique_id".into()));
            }
            let hrg = row[2].to_string();
            if hrgs.insert((dataset, id.clone()), hrg).is_some() {
                return Err(error(line, format!("{dataset} record {id} listed twice")));
            }
        }
        Ok(GrouperOutput { hrgs })
    }

    /// The HRG the grouper gave a record (`Some("")`: listed, not grouped).
    pub fn hrg(&self, dataset: Dataset, cds_unique_id: &str) -> Option<&str> {
        self.hrgs
            .get(&(dataset, cds_unique_id.to_string()))
            .map(String::as_str)
    }

    /// Records listed.
    pub fn len(&self) -> usize {
        self.hrgs.len()
    }

    /// Whether no record is listed.
    pub fn is_empty(&self) -> bool {
        self.hrgs.is_empty()
    }
}
