//! Live totals of a store: counts and exact pence per dataset and per provider.
//!
//! A plain full scan, kept apart from the query engine on purpose: the `sus-node stats` command,
//! the demo and the tests use it as an independent check of what the engine answers.

use crate::model::Dataset;
use crate::store::Store;
use crate::{Error, Result};
use arrow::array::{
    Array, BooleanArray, DictionaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    UInt32Array,
};
use arrow::datatypes::Int32Type;
use serde::Serialize;
use std::collections::BTreeMap;

/// Totals of live records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub live_records: u64,
    /// Pence.
    pub price: i64,
    pub base_price: i64,
    pub excess_payment: i64,
    pub excess_bed_days: i64,
    /// Records excluded from PbR (priced 0 with a reason).
    pub excluded: u64,
    /// Records stored with at least one per-record warning.
    pub with_warnings: u64,
}

/// Totals of one dataset, and of each provider in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DatasetSummary {
    pub totals: Totals,
    pub providers: BTreeMap<String, Totals>,
}

/// Scans the live rows of `dataset` and totals them.
pub fn summarise(store: &Store, dataset: Dataset) -> Result<DatasetSummary> {
    let mut out = DatasetSummary::default();
    for batch in store.scan_live(dataset)? {
        add_batch(&mut out, &batch)?;
    }
    Ok(out)
}

fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Corruption {
            what: "stored batch".into(),
            message: format!("column {name} is missing or of an unexpected type"),
        })
}

fn add_batch(out: &mut DatasetSummary, batch: &RecordBatch) -> Result<()> {
    let price = column::<Int64Array>(batch, "price")?;
    let base = column::<Int64Array>(batch, "base_price")?;
    let excess = column::<Int64Array>(batch, "excess_payment")?;
    let days = column::<Int32Array>(batch, "excess_bed_days")?;
    let excluded = column::<BooleanArray>(batch, "pbr_excluded")?;
    let warnings = column::<UInt32Array>(batch, "warnings")?;
    let provider = column::<DictionaryArray<Int32Type>>(batch, "provider_code")?;
    let names = provider
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::Corruption {
            what: "stored batch".into(),
            message: "provider_code dictionary is not text".into(),
        })?;
    // Totals per dictionary key first, then by name: one map lookup per key, not per row.
    let mut per_key = vec![Totals::default(); names.len()];
    for row in 0..batch.num_rows() {
        let t = Totals {
            live_records: 1,
            price: price.value(row),
            base_price: base.value(row),
            excess_payment: excess.value(row),
            excess_bed_days: i64::from(days.value(row)),
            excluded: u64::from(excluded.value(row)),
            with_warnings: u64::from(warnings.value(row) != 0),
        };
        add(&mut out.totals, &t);
        if provider.is_valid(row) {
            add(&mut per_key[provider.keys().value(row) as usize], &t);
        }
    }
    for (key, t) in per_key.iter().enumerate() {
        if t.live_records > 0 {
            add(
                out.providers
                    .entry(names.value(key).to_string())
                    .or_default(),
                t,
            );
        }
    }
    Ok(())
}

fn add(into: &mut Totals, t: &Totals) {
    into.live_records += t.live_records;
    into.price += t.price;
    into.base_price += t.base_price;
    into.excess_payment += t.excess_payment;
    into.excess_bed_days += t.excess_bed_days;
    into.excluded += t.excluded;
    into.with_warnings += t.with_warnings;
}
