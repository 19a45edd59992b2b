//! Applying a shard's committed entries to its store. A refusal decided by what a command is
//! (see [`crate::Error::is_deterministic`]) is recorded as the entry's answer, marked; any other
//! error is returned, and stops the replica.

use super::command::{self, ShardCommand};
use crate::broken::ApplyFault;
use crate::ingest;
use crate::store::Store;
use crate::{Error, Result};
use openraft::{EntryPayload, LogId, StoredMembership};
use sus_raft::{NodeId, Response, TypeConfig};

/// Catalog keys (under `raft/`) of the applied log id and membership.
pub(crate) const APPLIED: &str = "applied";
pub(crate) const MEMBERSHIP: &str = "membership";

type Membership = StoredMembership<NodeId, openraft::BasicNode>;

pub(crate) fn read_applied(store: &Store) -> Result<(Option<LogId<NodeId>>, Membership)> {
    let applied = match store.raft_state(APPLIED)? {
        Some(v) => bincode::deserialize(&v).map_err(|e| corrupt("applied log id", e))?,
        None => None,
    };
    let membership = match store.raft_state(MEMBERSHIP)? {
        Some(v) => bincode::deserialize(&v).map_err(|e| corrupt("membership", e))?,
        None => Membership::default(),
    };
    Ok((applied, membership))
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Corruption {
        what: format!("raft state {what}"),
        message: e.to_string(),
    }
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    bincode::serialize(value).map_err(|e| corrupt("encoding", e))
}

/// Applies committed entries in order; on an error that stops the replica, `at` is the index
/// of the entry being applied.
pub(crate) fn apply_in_order(
    store: &Store,
    entries: Vec<openraft::Entry<TypeConfig>>,
    compact: &dyn Fn(u64, u32),
    at: &mut u64,
) -> Result<Vec<Response>> {
    let mut applied = read_applied(store)?.0.map(|l| l.index);
    let mut responses = Vec::with_capacity(entries.len());
    for entry in entries {
        *at = entry.log_id.index;
        // Invariant: the applied index only grows (a log handed out of order, or twice, is a bug).
        if let Some(last) = applied.filter(|&a| entry.log_id.index <= a) {
            return Err(Error::Internal(format!(
                "entry {} handed to apply after entry {last} was applied",
                entry.log_id.index
            )));
        }
        let mut state = vec![(APPLIED, encode(&Some(entry.log_id))?)];
        let response = match entry.payload {
            EntryPayload::Blank => Response::default(),
            EntryPayload::Normal(request) => {
                match apply_command(store, entry.log_id.index, &request.0, compact) {
                    Ok(bytes) => Response(bytes),
                    // Derived against spells that moved since: nothing applied, on every replica
                    // alike; the leader derives it again.
                    Err(Error::Conflict(message)) => marked(CONFLICT, &message),
                    // Refused for what the command is: every replica refuses it alike and the
                    // group carries on.
                    Err(e) if e.is_deterministic() => refusal(&e.into_message()),
                    // A bug, a version skew, disk, catalog or corruption: this replica stops.
                    Err(e) => return Err(e),
                }
            }
            EntryPayload::Membership(m) => {
                let stored = Membership::new(Some(entry.log_id), m);
                state.push((MEMBERSHIP, encode(&stored)?));
                Response::default()
            }
        };
        store.set_raft_state(&state)?;
        applied = Some(entry.log_id.index);
        responses.push(response);
    }
    Ok(responses)
}

/// Applies one command: its answer (a report, a version, the index a compaction started under),
/// or why not.
fn apply_command(
    store: &Store,
    index: u64,
    bytes: &[u8],
    compact: &dyn Fn(u64, u32),
) -> Result<Vec<u8>> {
    match command::decode(bytes)? {
        ShardCommand::Submission(c) => {
            let id = match &*c {
                ingest::Command::Apply { change, .. } => Some(change.meta.submission_id.as_str()),
                ingest::Command::Reject { .. } => None,
            };
            match crate::broken::apply_fault(index, id) {
                None => ingest::commit(store, c).map(|r| r.to_json()),
                Some(ApplyFault::Fail(e)) => Err(e),
                Some(ApplyFault::AnswerPrepared) => {
                    let (ingest::Command::Apply { report, .. }
                    | ingest::Command::Reject { report, .. }) = *c;
                    Ok(report.to_json())
                }
            }
        }
        ShardCommand::Freeze { name } => store.freeze(&name).map(|v| v.to_be_bytes().to_vec()),
        ShardCommand::Compact { target_rows } => {
            // In the background (cluster/compactions.rs): applies go on meanwhile.
            compact(index, target_rows);
            Ok(index.to_be_bytes().to_vec())
        }
    }
}

/// Marks a response as a refusal (a report is JSON, so never starts with this byte).
pub const REFUSAL: u8 = b'!';

/// Marks a response as a conflict: the submission must be derived again.
pub const CONFLICT: u8 = b'?';

fn refusal(message: &str) -> Response {
    marked(REFUSAL, message)
}

fn marked(mark: u8, message: &str) -> Response {
    let mut bytes = vec![mark];
    bytes.extend_from_slice(message.as_bytes());
    Response(bytes)
}
