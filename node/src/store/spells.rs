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
use crate::Result;
use crate::model::Dataset;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
