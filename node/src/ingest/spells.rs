//! What an APC submission's spells are derived from: the live episodes of every spell it touches.
//!
//! ```text
//!  records ─► which versions will be live (stored applicable times, the protocol's order)
//!          ─► touched spells: those of its live upserts, and those of the stored episodes it
//!             supersedes, deletes or (Bulk Replacement) removes
//!          ─► each spell's live episodes now (the precondition) minus those superseded
//!          ─► their stored rows read back as records with their stored derivation
//! ```
//!
//! `derive` then prices every touched spell over all of them; stored episodes whose derivation
//! changed become re-derived rows of the change.

use super::{encode, parquet};
use crate::derive::{StoredEpisode, live_versions};
use crate::model::{Dataset, Detail, Protocol, Record, SubmissionMeta};
use crate::store::{SpellKey, SpellSnapshot, SpellsRead, Store};
use crate::{Error, Result};
use chrono::{NaiveDate, NaiveDateTime};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The spells of one submission and what they are derived from.
pub(super) struct SpellContext {
    /// Per record: whether it will be live once applied.
    pub live: Vec<bool>,
    /// Per record: its spell (APC upserts with a spell number).
    pub keys: Vec<Option<SpellKey>>,
    /// The stored live episodes of the touched spells that the submission leaves live.
    pub stored: Vec<StoredEpisode>,
    /// The version of each of `stored`.
    pub stored_versions: Vec<u64>,
    /// The spell of each of `stored`.
    pub stored_keys: Vec<Option<SpellKey>>,
    /// APC: every touched spell with its live episodes (id, version) as read.
    pub spells: Option<SpellsRead>,
}

impl SpellContext {
    /// No spells (OP, EC): every record stands alone.
    pub fn none(records: &[Record], _protocol: &Protocol) -> SpellContext {
        SpellContext {
            live: vec![true; records.len()],
            keys: vec![None; records.len()],
            stored: Vec::new(),
            stored_versions: Vec::new(),
            stored_keys: Vec::new(),
            spells: None,
        }
    }
}

/// Days since 1970 (the store's date keys).
fn days(date: NaiveDate) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(NaiveDate::MIN);
    i32::try_from((date - epoch).num_days()).unwrap_or(i32::MAX)
}

/// Reads what the spells of an APC submission are derived from (see the module documentation).
pub(super) fn context(
    store: &Store,
    meta: &SubmissionMeta,
    records: &[Record],
) -> Result<SpellContext> {
    let bulk = match &meta.protocol {
        Protocol::BulkReplacement {
            period_start,
            period_end,
            ..
        } => Some((*period_start, *period_end)),
        Protocol::NetChange => None,
    };
    // One catalog snapshot for every read of this derivation.
    let store = store.spell_snapshot()?;
    let mut stored_at: HashMap<&str, Option<NaiveDateTime>> = HashMap::new();
    for r in records {
        let id = r.common.cds_unique_id.as_str();
        if !stored_at.contains_key(id) {
            stored_at.insert(id, store.record_applicable(Dataset::Apc, id)?);
        }
    }
    let live = live_versions(records, &meta.protocol, &|id| {
        stored_at.get(id).copied().flatten()
    });
    let keys: Vec<Option<SpellKey>> = records
        .iter()
        .map(|r| match &r.detail {
            Detail::Apc(a) if !r.is_delete() => a
                .hospital_provider_spell_number
                .as_deref()
                .map(|n| SpellKey::new(&r.common.provider_code, n)),
            _ => None,
        })
        .collect();

    // A stored row is superseded by any operation on its id newer than it (every upsert of a
    // Bulk Replacement), and a Bulk Replacement removes the sender's rows of its period.
    let mut superseded: HashSet<String> = HashSet::new();
    for r in records {
        let id = r.common.cds_unique_id.as_str();
        let newer = bulk.is_some()
            || match stored_at.get(id).copied().flatten() {
                None => true,
                Some(t) => r.common.cds_applicable_datetime.is_some_and(|a| a > t),
            };
        if newer {
            superseded.insert(id.to_string());
        }
    }
    let mut touched: BTreeSet<SpellKey> = keys
        .iter()
        .zip(&live)
        .filter(|(_, l)| **l)
        .filter_map(|(k, _)| k.clone())
        .collect();
    for id in &superseded {
        if let Some(k) = store.episode_spell(id)? {
            touched.insert(k);
        }
    }
    if let Some((start, end)) = bulk {
        for id in store.sender_live_ids(Dataset::Apc, &meta.sender, days(start), days(end))? {
            if let Some(k) = store.episode_spell(&id)? {
                touched.insert(k);
            }
            superseded.insert(id);
        }
    }

    // A spell's label for grouping: the number of an episode of this submission, else of a
    // stored one; a spell whose every episode lost its number (restricted) gets its digest.
    let mut labels: BTreeMap<SpellKey, String> = BTreeMap::new();
    for (r, k) in records.iter().zip(&keys) {
        if let (Some(k), Detail::Apc(a)) = (k, &r.detail)
            && let Some(n) = &a.hospital_provider_spell_number
        {
            labels.entry(k.clone()).or_insert_with(|| n.clone());
        }
    }

    let mut spells = Vec::with_capacity(touched.len());
    let mut survivors: Vec<(String, SpellKey)> = Vec::new();
    for key in touched {
        let members = store.spell_members(&key)?;
        for (id, _) in &members {
            if !superseded.contains(id) {
                survivors.push((id.clone(), key.clone()));
            }
        }
        spells.push((key, members));
    }
    let mut context = SpellContext {
        live,
        keys,
        stored: Vec::new(),
        stored_versions: Vec::new(),
        stored_keys: Vec::new(),
        spells: Some(spells),
    };
    if survivors.is_empty() {
        return Ok(context);
    }
    add_stored(&store, survivors, labels, &mut context)?;
    Ok(context)
}

/// Reads back the stored episodes that stay in the touched spells (`survivors`), labelled with
/// their spell's number, into `context`.
fn add_stored(
    store: &SpellSnapshot<'_>,
    survivors: Vec<(String, SpellKey)>,
    mut labels: BTreeMap<SpellKey, String>,
    context: &mut SpellContext,
) -> Result<()> {
    let ids: Vec<String> = survivors.iter().map(|(id, _)| id.clone()).collect();
    let (batch, versions) = store.live_rows(Dataset::Apc, &ids)?;
    let stored_records = parquet::records_of_stored(Dataset::Apc, &batch)?;
    let derived = encode::derived_of(Dataset::Apc, &batch)?;
    if stored_records.len() != ids.len() || derived.len() != ids.len() {
        return Err(Error::Corruption {
            what: "stored APC episodes".into(),
            message: format!(
                "{} rows read back for {} episodes",
                stored_records.len(),
                ids.len()
            ),
        });
    }
    for (r, (_, key)) in stored_records.iter().zip(&survivors) {
        if let Detail::Apc(a) = &r.detail
            && let Some(n) = &a.hospital_provider_spell_number
        {
            labels.entry(key.clone()).or_insert_with(|| n.clone());
        }
    }
    for ((mut record, derived), (_, key)) in stored_records.into_iter().zip(derived).zip(survivors)
    {
        let label = labels.get(&key).cloned().unwrap_or_else(|| {
            format!(
                "#{}",
                key.digest
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        });
        if let Detail::Apc(a) = &mut record.detail {
            a.hospital_provider_spell_number = Some(label);
        }
        context.stored.push(StoredEpisode { record, derived });
        context.stored_keys.push(Some(key));
    }
    context.stored_versions = versions;
    Ok(())
}
