//! The spells of a provider as one catalog snapshot sees them: what a submission's spells are
//! derived from on the leader (see [`super::spells`] for the index and the precondition).

use super::catalog::Reader;
use super::engine::Store;
use super::keys::{self, RecState};
use super::spells::{SpellKey, SpellReader};
use crate::model::Dataset;
use crate::{Error, Result};
use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use chrono::{DateTime, NaiveDateTime};
use std::collections::BTreeMap;

/// One catalog snapshot to read what a submission's spells are derived from: every read of one
/// derivation sees the same state, and costs no transaction of its own.
pub struct SpellSnapshot<'a> {
    store: &'a Store,
    /// Taken before `db`: the files it names stay while the snapshot is read.
    _pin: super::retire::Pin,
    db: Reader,
}

impl SpellSnapshot<'_> {
    fn index(&self) -> SpellReader<'_> {
        SpellReader { db: &self.db }
    }

    /// The spell a live APC episode belongs to (`None`: not live, or no spell number).
    pub fn episode_spell(&self, id: &str) -> Result<Option<SpellKey>> {
        self.index().spell_of(id)
    }

    /// The live episodes of a spell with their versions.
    pub fn spell_members(&self, key: &SpellKey) -> Result<Vec<(String, u64)>> {
        self.index().members(key)
    }

    /// The `cds_applicable_datetime` the store holds for a record (live or deleted), if any.
    pub fn record_applicable(&self, dataset: Dataset, id: &str) -> Result<Option<NaiveDateTime>> {
        let Some(v) = self.db.get(&keys::record(dataset, id))? else {
            return Ok(None);
        };
        let state = RecState::decode(&v)?;
        Ok(DateTime::from_timestamp(state.applicable, 0).map(|t| t.naive_utc()))
    }

    /// The ids of a sender's live records with activity dates in `[start, end]` (days since
    /// 1970): what a Bulk Replacement of that period removes.
    pub fn sender_live_ids(
        &self,
        dataset: Dataset,
        sender: &str,
        start: i32,
        end: i32,
    ) -> Result<Vec<String>> {
        let (from, to) = keys::by_sender_range(dataset, sender, start, end);
        self.db
            .range(&from, Some(&to))?
            .into_iter()
            .map(|(k, _)| keys::by_sender_id(dataset, sender, &k))
            .collect()
    }

    /// The live rows of `ids` (stored schema, in the order given) with their versions. Every id
    /// must be live.
    pub fn live_rows(&self, dataset: Dataset, ids: &[String]) -> Result<(RecordBatch, Vec<u64>)> {
        let db = &self.db;
        let mut versions = Vec::with_capacity(ids.len());
        // segment → [(row, position in ids)]
        let mut wanted: BTreeMap<u64, Vec<(u32, usize)>> = BTreeMap::new();
        for (pos, id) in ids.iter().enumerate() {
            let state = db
                .get(&keys::record(dataset, id))?
                .map(|v| RecState::decode(&v))
                .transpose()?;
            let Some((live, version)) = state.and_then(|s| s.live.map(|l| (l, s.version))) else {
                return Err(Error::NotFound(format!("live {dataset} record {id}")));
            };
            versions.push(version);
            wanted
                .entry(live.segment)
                .or_default()
                .push((live.row, pos));
        }
        let schema = crate::schema::stored_schema(dataset);
        let mut parts: Vec<(usize, RecordBatch)> = Vec::with_capacity(ids.len());
        let version = super::engine::version_of(db)?;
        for (segment_id, rows) in wanted {
            let mut entry = db
                .get(&keys::segment(dataset, segment_id))?
                .map(|v| keys::SegmentEntry::decode(&v))
                .transpose()?
                .ok_or_else(|| {
                    keys::corrupt("record index", &format!("segment {segment_id} unknown"))
                })?;
            let batches = self.store.entry_rows(&mut entry, version)?;
            let whole = concat_batches(&schema, &batches)?;
            for (row, pos) in rows {
                if row as usize >= whole.num_rows() {
                    return Err(keys::corrupt(
                        "record index",
                        &format!("row {row} beyond segment {segment_id}"),
                    ));
                }
                let one = take_record_batch(&whole, &UInt32Array::from(vec![row]))?;
                parts.push((pos, one));
            }
        }
        parts.sort_by_key(|(pos, _)| *pos);
        let batches: Vec<RecordBatch> = parts.into_iter().map(|(_, b)| b).collect();
        Ok((concat_batches(&schema, &batches)?, versions))
    }
}

impl Store {
    /// A snapshot of the catalog for reading what spells are derived from.
    pub fn spell_snapshot(&self) -> Result<SpellSnapshot<'_>> {
        let pin = self.pin();
        Ok(SpellSnapshot {
            store: self,
            _pin: pin,
            db: self.db.reader()?,
        })
    }
}
