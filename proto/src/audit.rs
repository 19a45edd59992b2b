//! The audit log's records and their hash chain, shared by the node (which chains records as the
//! meta group applies them) and by auditors (who verify what they read).
//!
//! Entry `i` stores `hash_i = SHA-256(hash_{i-1} || canonical(record_i))`, with `hash_{-1}` all
//! zeros. The canonical form is the record's JSON with fields in declaration order, so altering,
//! inserting, removing or reordering any entry changes every later hash.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One audited event: an identifiable read, an extract, or a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Milliseconds since 1970 (UTC), on the node that served the call.
    pub time_ms: i64,
    /// The node that served the call.
    pub node: u64,
    pub user: String,
    pub role: String,
    pub org: String,
    pub purpose: String,
    /// `identifiable`, `pseudonymised`, `anonymised` (reads) or empty (submissions).
    pub tier: String,
    /// `aggregate`, `scan`, `flight` or `submit`.
    pub action: String,
    pub dataset: String,
    /// What was asked for: the filters and the caller's scope, as text.
    pub filter: String,
    /// The freeze point read (empty: current).
    pub view: String,
    /// Rows (or records) returned or submitted.
    pub rows: u64,
    /// Free text: the shards read, or the submission's file, id and outcome.
    pub detail: String,
}

impl Record {
    /// The bytes the chain hashes.
    pub fn canonical(&self) -> Vec<u8> {
        // Serialising a plain struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn to_json(&self) -> String {
        String::from_utf8(self.canonical()).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Result<Record, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// A chain link's hash.
pub type Hash = [u8; 32];

/// The hash before the first entry.
pub const GENESIS: Hash = [0; 32];

/// The hash of `record` following `prev`.
pub fn chain(prev: &Hash, record: &Record) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(record.canonical());
    h.finalize().into()
}

/// Where a chain stops verifying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {index}: stored hash {stored} does not match the recomputed {computed}")]
pub struct Broken {
    pub index: u64,
    pub stored: String,
    pub computed: String,
}

/// Verifies entries `(index, record, stored hash)` in order, starting after `prev` (the hash of
/// the entry before the first one given; [`GENESIS`] from the start).
pub fn verify<'a>(
    prev: Hash,
    entries: impl IntoIterator<Item = (u64, &'a Record, &'a [u8])>,
) -> Result<Hash, Broken> {
    let mut prev = prev;
    for (index, record, stored) in entries {
        let computed = chain(&prev, record);
        if stored != computed.as_slice() {
            return Err(Broken {
                index,
                stored: hex::encode(stored),
                computed: hex::encode(computed),
            });
        }
        prev = computed;
    }
    Ok(prev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str, rows: u64) -> Record {
        Record {
            time_ms: 1_700_000_000_000,
            node: 1,
            user: user.into(),
            role: "national".into(),
            org: "X26".into(),
            purpose: "audit test".into(),
            tier: "identifiable".into(),
            action: "scan".into(),
            dataset: "apc".into(),
            filter: "provider_code = RRV".into(),
            view: String::new(),
            rows,
            detail: String::new(),
        }
    }

    #[test]
    fn an_altered_entry_breaks_the_chain_at_that_entry() {
        let records = [record("a", 1), record("b", 2), record("c", 3)];
        let mut hashes = Vec::new();
        let mut prev = GENESIS;
        for r in &records {
            prev = chain(&prev, r);
            hashes.push(prev);
        }
        let entries = |rs: &[Record]| -> Vec<(u64, Record, Hash)> {
            rs.iter()
                .zip(&hashes)
                .enumerate()
                .map(|(i, (r, h))| (i as u64, r.clone(), *h))
                .collect()
        };
        let ok = entries(&records);
        assert!(verify(GENESIS, ok.iter().map(|(i, r, h)| (*i, r, h.as_slice()))).is_ok());
        let mut altered = records.clone();
        altered[1].rows = 200;
        let bad = entries(&altered);
        let err = verify(GENESIS, bad.iter().map(|(i, r, h)| (*i, r, h.as_slice())))
            .expect_err("an altered record is detected");
        assert_eq!(err.index, 1);
    }
}
