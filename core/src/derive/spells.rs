//! Building APC spells from live episodes, and which versions of a submission will be live.
//!
//! ```text
//!  records (the submission's live upserts + stored live episodes of the same spells)
//!     ──► group by (provider_code, hospital_provider_spell_number)
//!     ──► order by (episode_number, cds_unique_id)
//!  Spell { episodes: [i_first, ..., i_last] }  (i = index into the records given)
//! ```
//!
//! A spell is every live episode of the provider with that spell number, whichever submission
//! brought it (`docs/rules.md` section 4). Spells come out in the order of their first record, so
//! nothing depends on map order.

use crate::model::{Detail, Protocol, Record};
use chrono::NaiveDateTime;
use std::collections::{BTreeMap, HashMap};

/// The episodes of one spell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spell {
    /// The provider of every episode.
    pub provider_code: String,
    /// The spell number shared by every episode (`None` only for an episode without one, which is
    /// then a spell of its own).
    pub spell_number: Option<String>,
    /// Indexes into the records, ordered by episode number (then `cds_unique_id`).
    pub episodes: Vec<usize>,
}

impl Spell {
    /// The first episode (lowest episode number): the spell's point of delivery and admission.
    pub fn first(&self) -> usize {
        self.episodes[0]
    }

    /// The last episode (highest episode number): finishes the spell and carries its payment.
    pub fn last(&self) -> usize {
        self.episodes[self.episodes.len() - 1]
    }
}

/// Groups the APC upserts of `records` for which `include[i]` holds into spells. Deletions and
/// other datasets are left out.
pub fn build_spells(records: &[Record], include: &[bool]) -> Vec<Spell> {
    // Key → index of the spell in `spells` (first-seen order).
    let mut by_key: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut spells: Vec<Spell> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let Detail::Apc(a) = &r.detail else { continue };
        if r.is_delete() || !include.get(i).copied().unwrap_or(false) {
            continue;
        }
        let provider = r.common.provider_code.as_str();
        let number = a.hospital_provider_spell_number.as_deref();
        let slot = match number {
            Some(n) => *by_key.entry((provider, n)).or_insert_with(|| {
                spells.push(Spell {
                    provider_code: provider.to_string(),
                    spell_number: Some(n.to_string()),
                    episodes: Vec::new(),
                });
                spells.len() - 1
            }),
            None => {
                spells.push(Spell {
                    provider_code: provider.to_string(),
                    spell_number: None,
                    episodes: Vec::new(),
                });
                spells.len() - 1
            }
        };
        spells[slot].episodes.push(i);
    }
    for spell in &mut spells {
        spell.episodes.sort_by(|&x, &y| {
            let key = |i: usize| {
                let n = match &records[i].detail {
                    Detail::Apc(a) => a.episode_number,
                    _ => None,
                };
                (n, records[i].common.cds_unique_id.as_str())
            };
            key(x).cmp(&key(y))
        });
    }
    spells
}

/// Which records of a submission will be live once it is applied: the version of each
/// `cds_unique_id` that wins by the protocol's rules (`docs/rules.md` section 6). `stored(id)` is
/// the applicable date-time the store already holds for `id` (live or deleted), if any.
///
/// Records apply in (applicable, file position) order. Net Change: an upsert or deletion older
/// than or as old as the current version is ignored. Bulk Replacement: every upsert is stored, the
/// later replacing the earlier. A deletion is never live.
pub fn live_versions(
    records: &[Record],
    protocol: &Protocol,
    stored: &dyn Fn(&str) -> Option<NaiveDateTime>,
) -> Vec<bool> {
    let bulk = matches!(protocol, Protocol::BulkReplacement { .. });
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| {
        (
            records[i].common.cds_applicable_datetime,
            records[i].ordinal,
        )
    });
    let mut live = vec![false; records.len()];
    // id → (current applicable, index of the live record of this submission)
    let mut current: HashMap<&str, (Option<NaiveDateTime>, Option<usize>)> = HashMap::new();
    for i in order {
        let r = &records[i];
        let id = r.common.cds_unique_id.as_str();
        let applicable = r.common.cds_applicable_datetime;
        let state = current
            .entry(id)
            .or_insert_with(|| (if bulk { None } else { stored(id) }, None));
        let stale = !bulk && state.0.is_some() && applicable <= state.0;
        if stale {
            continue;
        }
        if let Some(previous) = state.1.take() {
            live[previous] = false;
        }
        state.0 = applicable;
        if !r.is_delete() {
            live[i] = true;
            state.1 = Some(i);
        }
    }
    live
}
