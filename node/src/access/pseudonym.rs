//! The pseudonymised tier (domain spec section 8): every item that identifies a patient or a
//! record (`nhs_number`, `local_patient_id`, the record key `cds_unique_id` and the spell number
//! `hospital_provider_spell_number`) becomes a keyed pseudonym (HMAC-SHA-256 under the recipient
//! organisation's key, so one patient links within a recipient's data and not across recipients);
//! `date_of_birth` becomes its year and month; `postcode` its sector (`LS1 4`). Nulls stay null
//! (legally restricted records have no identifiers at all).
//!
//! The same transformation applies to rows ([`apply`]) and to group-by keys ([`partial`]), so
//! that a patient's pseudonym in an extract is the one its group carries in an aggregate of the
//! same recipient. Filters on these items are refused below the identifiable tier
//! (`access::check_identifiers`): a filter would test the raw value.

use crate::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use sus_proto::partial::Partial;

/// How one identifying column is transformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A keyed pseudonym of the value.
    Pseudonym,
    /// A date reduced to `YYYY-MM`.
    YearMonth,
    /// A postcode reduced to its sector.
    Sector,
}

/// The transformation of `column` at the pseudonymised tier; `None` for a column that
/// identifies nobody.
pub fn rule(column: &str) -> Option<Rule> {
    match column {
        // The record key and the spell number too: they should hold no patient data, but
        // providers do put NHS numbers in them (a warning at ingest), and both link records
        // across recipients if sent raw.
        "nhs_number" | "local_patient_id" | "cds_unique_id" | "hospital_provider_spell_number" => {
            Some(Rule::Pseudonym)
        }
        "date_of_birth" => Some(Rule::YearMonth),
        "postcode" => Some(Rule::Sector),
        _ => None,
    }
}

/// One value (as text) transformed by `rule` under the recipient's pseudonym `key`; an empty
/// value stays empty.
pub fn transform(rule: Rule, key: &[u8; 32], value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    match rule {
        Rule::Pseudonym => pseudonym(key, value),
        // Dates print as `YYYY-MM-DD`.
        Rule::YearMonth => value.chars().take(7).collect(),
        Rule::Sector => sector(value),
    }
}

/// A partial aggregate read at the pseudonymised tier: the group keys of identifying fields
/// (`fields`, the group-by field names in key order) transformed, and groups that now share a
/// key (two dates of birth in one month) merged.
pub fn partial(partial: Partial, fields: &[&str], key: &[u8; 32]) -> Result<Partial> {
    let rules: Vec<Option<Rule>> = fields.iter().map(|f| rule(f)).collect();
    if rules.iter().all(Option::is_none) {
        return Ok(partial);
    }
    let mut out = Partial::new(partial.keys.clone(), partial.aggs.clone());
    for (group, states) in partial.groups {
        let group = group
            .into_iter()
            .zip(&rules)
            .map(|(v, r)| match r {
                Some(r) => v.map(|v| transform(*r, key, &v)),
                None => v,
            })
            .collect();
        for (mine, s) in out.group(group).iter_mut().zip(states) {
            mine.merge(s).map_err(|e| {
                Error::InvalidArgument(format!("merging pseudonymised groups: {e}"))
            })?;
        }
    }
    Ok(out)
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
                    .map(|v| v.filter(|v| !v.is_empty()).map(|v| transform(rule, key, v)))
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

    #[test]
    fn group_keys_are_transformed_like_rows_and_merged() {
        use sus_proto::partial::{Kind, State};
        let key = [7u8; 32];
        let mut p = Partial::new(
            vec!["nhs_number".into(), "date_of_birth".into(), "sex".into()],
            vec![("count".into(), Kind::Count)],
        );
        let group =
            |n: &str, d: &str| vec![Some(n.to_string()), Some(d.to_string()), Some("1".into())];
        *p.group(group("9434765919", "1970-03-02")) = vec![State::Count(2)];
        *p.group(group("9434765919", "1970-03-30")) = vec![State::Count(3)];
        *p.group(vec![None, None, Some("2".into())]) = vec![State::Count(1)];
        let out = partial(p, &["nhs_number", "date_of_birth", "sex"], &key).expect("transformed");
        let want = pseudonym(&key, "9434765919");
        assert_eq!(out.groups.len(), 2);
        assert_eq!(
            out.groups[&vec![Some(want), Some("1970-03".to_string()), Some("1".into())]],
            vec![State::Count(5)],
            "two dates of birth in one month are one group"
        );
        assert_eq!(
            out.groups[&vec![None, None, Some("2".into())]],
            vec![State::Count(1)]
        );
        // The key a group carries is the pseudonym the same patient's row carries.
        let batch = RecordBatch::try_from_iter([(
            "nhs_number",
            Arc::new(StringArray::from(vec!["9434765919"])) as ArrayRef,
        )])
        .expect("batch");
        let row = apply(&batch, &key).expect("row");
        assert_eq!(
            row.column(0).as_string::<i32>().value(0),
            pseudonym(&key, "9434765919")
        );
        assert_eq!(
            rule("hospital_provider_spell_number"),
            Some(Rule::Pseudonym)
        );
    }
}
