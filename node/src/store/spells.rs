//! The spell index: which live APC episodes make up each spell, so that a change can derive a
//! spell again over every live episode of the provider (`docs/rules.md` section 4).
//!
//! | key                                                   | value                            |
//! |-------------------------------------------------------|----------------------------------|
//! | `spell/<len u8><provider><digest 16><id>`             | empty (live episodes only)       |
//! | `epspell/<id>`                                        | `<len u8><provider><digest 16>`  |
//!
//! The spell number is kept only as a digest (SHA-256 of provider and number, 16 bytes): a
//! legally restricted episode loses its spell number at ingest, yet must stay findable by the
//! episodes that later join its spell.
//!
//! The leader derives a change against the index as it reads it; [`Precondition`] records what it
//! read, and every replica checks it before applying. A change whose spells moved in between
//! (another change applied first) is refused as a [`super::ApplyOutcome::Conflict`] and derived
//! again, so no replica ever stores a spell priced from a state it did not have.

use super::catalog::{Batch, Reader};
use super::keys::{self, RecState};
use super::{Store, segment};
use crate::model::Dataset;
use crate::{Error, Result};
use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use chrono::{DateTime, NaiveDateTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A spell: its provider and a digest of its number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SpellKey {
    pub provider: String,
    pub digest: [u8; 16],
}

impl SpellKey {
    /// The key of spell `number` of `provider`.
    pub fn new(provider: &str, number: &str) -> SpellKey {
        let mut h = Sha256::new();
        h.update(provider.as_bytes());
        h.update([0]);
        h.update(number.as_bytes());
        let full = h.finalize();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&full[..16]);
        SpellKey {
            provider: provider.to_string(),
            digest,
        }
    }

    fn encode(&self) -> Result<Vec<u8>> {
        keys::short_text("provider", &self.provider)?;
        let mut v = Vec::with_capacity(1 + self.provider.len() + 16);
        v.push(self.provider.len() as u8);
        v.extend_from_slice(self.provider.as_bytes());
        v.extend_from_slice(&self.digest);
        Ok(v)
    }

    fn decode(bytes: &[u8]) -> Result<SpellKey> {
        let bad = || keys::corrupt("spell index", "malformed spell key");
        let (&len, rest) = bytes.split_first().ok_or_else(bad)?;
        let len = usize::from(len);
        if rest.len() != len + 16 {
            return Err(bad());
        }
        let provider = std::str::from_utf8(&rest[..len])
            .map_err(|_| bad())?
            .to_string();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&rest[len..]);
        Ok(SpellKey { provider, digest })
    }
}

fn spell_prefix(key: &SpellKey) -> Result<Vec<u8>> {
    let mut k = b"spell/".to_vec();
    k.extend_from_slice(&key.encode()?);
    Ok(k)
}

fn spell_member(key: &SpellKey, id: &str) -> Result<Vec<u8>> {
    let mut k = spell_prefix(key)?;
    k.extend_from_slice(id.as_bytes());
    Ok(k)
}

fn episode_spell_key(id: &str) -> Vec<u8> {
    let mut k = b"epspell/".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// Spells with their live episodes (id, version), as read.
pub type SpellsRead = Vec<(SpellKey, Vec<(String, u64)>)>;

/// What the leader read when it derived a change's spells; every replica checks it still holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Precondition {
    /// Every spell the change touches, with its live episodes then: (id, version).
    pub spells: SpellsRead,
    /// Per upsert row (not counting re-derived rows): whether it was expected to become live.
    pub live: Vec<bool>,
}

/// Reads of the spell index (on one catalog snapshot).
pub(super) struct SpellReader<'a> {
    pub db: &'a Reader,
}

impl SpellReader<'_> {
    /// The live episodes of a spell and their versions, by id.
    pub fn members(&self, key: &SpellKey) -> Result<Vec<(String, u64)>> {
        let prefix = spell_prefix(key)?;
        let mut out = Vec::new();
        for (k, _) in self.db.scan_prefix(&prefix)? {
            let id = std::str::from_utf8(&k[prefix.len()..])
                .map_err(|_| keys::corrupt("spell index", "id is not UTF-8"))?
                .to_string();
            let state = self
                .db
                .get(&keys::record(Dataset::Apc, &id))?
                .map(|v| RecState::decode(&v))
                .transpose()?
                .filter(|s| s.live.is_some())
                .ok_or_else(|| {
                    keys::corrupt(
                        "spell index",
                        &format!("episode {id} is indexed but not live"),
                    )
                })?;
            out.push((id, state.version));
        }
        Ok(out)
    }

    /// The spell of a live episode.
    pub fn spell_of(&self, id: &str) -> Result<Option<SpellKey>> {
        self.db
            .get(&episode_spell_key(id))?
            .map(|v| SpellKey::decode(&v))
            .transpose()
    }

    /// Whether the spells still hold the episodes the precondition read.
    pub fn check(&self, pre: &Precondition) -> Result<std::result::Result<(), String>> {
        for (key, expected) in &pre.spells {
            let now = self.members(key)?;
            if &now != expected {
                return Ok(Err(format!(
                    "a spell of provider {} changed while this submission was derived",
                    key.provider
                )));
            }
        }
        Ok(Ok(()))
    }
}

/// Index writes for one APC record whose live row changed: out of its old spell, into its new.
pub(super) fn reindex(
    batch: &mut Batch,
    id: &str,
    old: Option<&SpellKey>,
    new: Option<&SpellKey>,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    if let Some(old) = old {
        batch.remove(spell_member(old, id)?);
        batch.remove(episode_spell_key(id));
    }
    if let Some(new) = new {
        batch.insert(spell_member(new, id)?, []);
        batch.insert(episode_spell_key(id), new.encode()?);
    }
    Ok(())
}

/// One catalog snapshot to read what a submission's spells are derived from: every read of one
/// derivation sees the same state, and costs no transaction of its own.
pub struct SpellSnapshot<'a> {
    store: &'a Store,
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
        for (segment_id, rows) in wanted {
            let entry = db
                .get(&keys::segment(dataset, segment_id))?
                .map(|v| keys::SegmentEntry::decode(&v))
                .transpose()?
                .ok_or_else(|| {
                    keys::corrupt("record index", &format!("segment {segment_id} unknown"))
                })?;
            let batches = segment::read(&self.store.dir.join(&entry.file), dataset)?;
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
        Ok(SpellSnapshot {
            store: self,
            db: self.db.reader()?,
        })
    }
}
