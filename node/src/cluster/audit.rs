//! The audit log: append-only, replicated through the meta group, hash-chained.
//!
//! A node that serves an audited call (an identifiable read, any extract, a submission) builds a
//! [`Record`] and has the meta group append it before it answers (fail closed: no audit entry, no
//! answer; a stream's last message waits for it). The meta group chains each record to the one
//! before as it applies it, so every replica holds the same hashes, and an auditor who reads the
//! log (`Admin.AuditLog`, roles auditor and admin) can verify it with `sus_proto::audit::verify`.
//!
//! Entries live in the meta state in chunks of shared vectors, so publishing a new state copies
//! one chunk, not the log. The whole log is in every meta snapshot: a log of tens of millions of
//! entries would want its own group and segment files (noted in ARCHITECTURE.md).

use crate::access::Caller;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use sus_proto::audit::{Hash, Record};

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub record: Record,
    pub hash: Hash,
}

const CHUNK: usize = 1024;

/// The chained entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Stored>", into = "Vec<Stored>")]
pub struct AuditLog {
    chunks: Vec<Arc<Vec<Stored>>>,
    len: usize,
}

impl From<Vec<Stored>> for AuditLog {
    fn from(entries: Vec<Stored>) -> AuditLog {
        let len = entries.len();
        AuditLog {
            chunks: entries
                .chunks(CHUNK)
                .map(|c| Arc::new(c.to_vec()))
                .collect(),
            len,
        }
    }
}

impl From<AuditLog> for Vec<Stored> {
    fn from(log: AuditLog) -> Vec<Stored> {
        log.iter().cloned().collect()
    }
}

impl AuditLog {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn last_hash(&self) -> Hash {
        self.chunks
            .last()
            .and_then(|c| c.last())
            .map_or(sus_proto::audit::GENESIS, |s| s.hash)
    }

    /// Chains and appends a record.
    pub fn append(&mut self, record: Record) {
        let hash = sus_proto::audit::chain(&self.last_hash(), &record);
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => Arc::make_mut(c).push(Stored { record, hash }),
            _ => self.chunks.push(Arc::new(vec![Stored { record, hash }])),
        }
        self.len += 1;
    }

    pub fn iter(&self) -> impl Iterator<Item = &Stored> {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}

/// An audit record of `caller`'s call, stamped now by `node`.
pub fn record(caller: &Caller, node: u64, action: &str) -> Record {
    Record {
        time_ms: chrono::Utc::now().timestamp_millis(),
        node,
        user: caller.user.clone(),
        role: caller.role.name().to_string(),
        org: caller.org.clone(),
        purpose: caller.purpose.clone(),
        tier: String::new(),
        action: action.to_string(),
        dataset: String::new(),
        filter: String::new(),
        view: String::new(),
        rows: 0,
        detail: String::new(),
    }
}

/// Parses the records of an `AppendAudit` call.
pub(crate) fn parse_records(json: &[String]) -> Result<Vec<Record>> {
    json.iter()
        .map(|j| {
            Record::from_json(j)
                .map_err(|e| Error::InvalidArgument(format!("undecodable audit record: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_chains_across_chunks_and_round_trips() {
        let mut log = AuditLog::default();
        let caller = Caller::node(1);
        for i in 0..(CHUNK as u64 + 5) {
            let mut r = record(&caller, 1, "scan");
            r.rows = i;
            log.append(r);
        }
        assert_eq!(log.len(), CHUNK + 5);
        let entries: Vec<(u64, Record, Hash)> = log
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64, s.record.clone(), s.hash))
            .collect();
        let end = sus_proto::audit::verify(
            sus_proto::audit::GENESIS,
            entries.iter().map(|(i, r, h)| (*i, r, h.as_slice())),
        )
        .expect("verifies");
        assert_eq!(end, log.last_hash());
        let json = serde_json::to_string(&log).expect("serialises");
        let back: AuditLog = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, log);
    }
}
