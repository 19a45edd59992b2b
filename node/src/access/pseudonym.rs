//! The pseudonymised tier of record-level reads: `nhs_number`, `local_patient_id` and the record
//! key `cds_unique_id` become keyed
//! pseudonyms (HMAC-SHA-256 under the recipient organisation's key, so one patient links within
//! a recipient's data and not across recipients); `date_of_birth` becomes its year and month;
//! `postcode` its sector (`LS1 4`). Nulls stay null (legally restricted records have no
//! identifiers at all).

use crate::Result;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

/// How one column is transformed.
#[derive(Clone, Copy)]
enum Rule {
    Pseudonym,
    YearMonth,
    Sector,
}

fn rule(column: &str) -> Option<Rule> {
    match column {
        // The record key too: it should hold no patient data, but providers do put NHS numbers
        // in it (a warning at ingest), so a recipient gets it keyed like the identifiers.
        "nhs_number" | "local_patient_id" | "cds_unique_id" => Some(Rule::Pseudonym),
        "date_of_birth" => Some(Rule::YearMonth),
        "postcode" => Some(Rule::Sector),
        _ => None,
    }
}

/// The schema of a pseudonymised read of `schema`.
pub fn schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| match rule(f.name()) {
                Some(_) => Arc::new(Field::new(f.name(), DataType::Utf8, true)),
                None => f.clone(),
            })
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// The pseudonym of one identifier under an organisation's key: 32 hex digits (128 bits).
pub fn pseudonym(key: &[u8; 32], value: &str) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(value.as_bytes());
    hex::encode(&m.finalize().into_bytes()[..16])
}

/// `LS1 4AP` → `LS1 4`: the outward code and the first character of the inward code.
pub fn sector(postcode: &str) -> String {
    let compact: String = postcode.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() < 5 {
        // Not a full postcode: keep at most the outward part.
        return compact.chars().take(4).collect();
    }
    let (outward, inward) = compact.split_at(compact.len() - 3);
    format!("{outward} {}", &inward[..1])
}

/// Transforms a batch read at the pseudonymised tier for a recipient with pseudonym `key`.
pub fn apply(batch: &RecordBatch, key: &[u8; 32]) -> Result<RecordBatch> {
    let schema = schema(batch.schema_ref());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        let Some(rule) = rule(field.name()) else {
            columns.push(column.clone());
            continue;
        };
        let out: StringArray = match rule {
            Rule::YearMonth => {
                let days = cast(column, &DataType::Date32)?;
                let days = days.as_primitive::<Date32Type>();
                days.iter()
                    .map(|d| {
                        d.and_then(crate::query::field::date_of)
                            .map(|d| d.format("%Y-%m").to_string())
                    })
                    .collect()
            }
            Rule::Pseudonym | Rule::Sector => {
                let text = cast(column, &DataType::Utf8)?;
                let text = text.as_string::<i32>();
                text.iter()
                    .map(|v| {
                        v.filter(|v| !v.is_empty()).map(|v| match rule {
                            Rule::Pseudonym => pseudonym(key, v),
                            _ => sector(v),
                        })
                    })
                    .collect()
            }
        };
        debug_assert_eq!(out.len(), column.len());
        columns.push(Arc::new(out));
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_keep_the_outward_code_and_one_inward_character() {
        assert_eq!(sector("LS1 4AP"), "LS1 4");
        assert_eq!(sector("SW1A 1AA"), "SW1A 1");
        assert_eq!(sector("M1 1AE"), "M1 1");
    }

    #[test]
    fn pseudonyms_link_within_a_key_only() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(pseudonym(&a, "9434765919"), pseudonym(&a, "9434765919"));
        assert_ne!(pseudonym(&a, "9434765919"), pseudonym(&b, "9434765919"));
        assert_ne!(pseudonym(&a, "9434765919"), pseudonym(&a, "9434765918"));
        assert_eq!(pseudonym(&a, "x").len(), 32);
    }
}
