//! Building APC spells from the episodes of one submission.
//!
//! ```text
//!  records ──► APC upserts ──► group by (provider_code, hospital_provider_spell_number)
//!                                  └─► order by (episode_number, position in file)
//!  Spell { episodes: [i_first, ..., i_last] }  (i = index into the submission's records)
//! ```
//!
//! Providers submit a spell's episodes together, so a spell is built from one submission only.
//! Spells come out in the order of their first record in the file, so nothing depends on map order.

use crate::model::{Detail, Record};
use std::collections::BTreeMap;

/// The episodes of one spell of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spell {
    /// The provider of every episode.
    pub provider_code: String,
    /// The spell number shared by every episode (`None` only for an episode without one, which is
    /// then a spell of its own).
    pub spell_number: Option<String>,
    /// Indexes into the submission's records, ordered by episode number (then file position).
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

/// Groups the APC upserts of `records` into spells. Deletions and other datasets are left out.
pub fn build_spells(records: &[Record]) -> Vec<Spell> {
    // Key → index of the spell in `spells` (first-seen order).
    let mut by_key: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut spells: Vec<Spell> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let Detail::Apc(a) = &r.detail else { continue };
        if r.is_delete() {
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
        // Stable sort: equal episode numbers keep file order.
        spell.episodes.sort_by_key(|&i| match &records[i].detail {
            Detail::Apc(a) => a.episode_number,
            _ => None,
        });
    }
    spells
}
