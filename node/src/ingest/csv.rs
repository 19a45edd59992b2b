//! CSV submission files: text encoding, header (R02), then each line through the shared record
//! builder ([`super::record`]).

use super::record::{Cells, Findings, Meter, Parsed, Rejected, build_record, resolve_header};
use crate::Result as NodeResult;
use crate::limits::SubmissionLimits;
use crate::model::{Dataset, Issue, Rule};
use crate::schema::items;

pub(super) fn parse_csv(
    dataset: Dataset,
    bytes: &[u8],
    limits: &SubmissionLimits,
) -> NodeResult<Parsed> {
    // Check the text encoding first: binary bytes would otherwise surface as a misleading field
    // count error on whatever line they happen to break.
    if let Err(e) = std::str::from_utf8(bytes) {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64
            + 1;
        return Ok(Err(Rejected {
            issues: vec![Issue {
                ordinal: line.checked_sub(1).filter(|o| *o > 0),
                cds_unique_id: None,
                item: None,
                rule: Rule::FileUnreadable,
                message: format!(
                    "bytes that are not UTF-8 text at line {line} (byte offset {}): is this a binary file?",
                    e.valid_up_to()
                ),
            }],
            more: 0,
        }));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => {
            return Ok(Err(Rejected::one(
                Rule::FileUnreadable,
                format!(
                    "cannot read the header row as CSV text: {}",
                    csv_message(&e)
                ),
            )));
        }
    };
    let positions = match resolve_header(dataset, &header) {
        Ok(p) => p,
        Err(rejected) => return Ok(Err(rejected)),
    };
    let items = items(dataset);
    let mut findings = Findings::new();
    let mut meter = Meter::new(limits);
    let mut records = Vec::new();
    let mut row = csv::StringRecord::new();
    let mut ordinal = 0u64;
    loop {
        match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                ordinal += 1;
                let values: Vec<&str> = positions.iter().map(|&p| &row[p]).collect();
                meter.row(values.iter().map(|v| v.len() as u64).sum())?;
                let cells = Cells {
                    values: &values,
                    lengths: None,
                };
                if let Some(r) =
                    build_record(dataset, &items, ordinal, cells, limits, &mut findings)
                {
                    records.push(r);
                }
            }
            Err(e) => {
                // A broken row (truncated file, binary bytes, wrong field count) makes the rest of
                // the file unreadable: reject, naming where it broke.
                findings.push(Issue {
                    ordinal: Some(ordinal + 1),
                    cds_unique_id: None,
                    item: None,
                    rule: Rule::FileUnreadable,
                    message: format!("unreadable CSV: {}", csv_message(&e)),
                });
                return Ok(findings.into_result(Vec::new()));
            }
        }
    }
    if ordinal == 0 {
        findings.push(Issue {
            ordinal: None,
            cds_unique_id: None,
            item: None,
            rule: Rule::FileUnreadable,
            message: "the file has a header but no records".into(),
        });
    }
    Ok(findings.into_result(records))
}

fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { pos, err } => format!(
            "bytes that are not UTF-8 text at line {} (field {}): is this a binary file?",
            pos.as_ref().map_or(0, |p| p.line()),
            err.field() + 1
        ),
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "line {} has {len} fields where the header has {expected_len} (truncated or malformed row)",
            pos.as_ref().map_or(0, |p| p.line())
        ),
        _ => e.to_string(),
    }
}
