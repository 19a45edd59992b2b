//! Durable files of the cluster layer: atomic replacement, directory fsync, snapshot files, and
//! how a node failure inside a state machine reaches openraft.

use crate::{Error, Result};
use openraft::storage::RaftLogStorage;
use std::fs;
use std::io::Write;
use std::path::Path;
use sus_raft::{LogStore, NodeId};
use tracing::warn;

/// Replaces `path` with `bytes` durably: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes renames and creations inside `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// A new, empty file to receive a snapshot into (openraft writes the chunks, then reads it back).
pub(crate) async fn receiving_file(
    path: &Path,
) -> std::result::Result<tokio::fs::File, openraft::StorageError<NodeId>> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .await
        .map_err(|e| storage_error(Error::io(path, e)))
}

/// A node failure inside a state machine, as openraft's storage error (which stops the group:
/// an I/O or corruption error while applying must not be answered to a client as a rejection).
pub(crate) fn storage_error(e: Error) -> openraft::StorageError<NodeId> {
    openraft::StorageError::from(openraft::StorageIOError::write_state_machine(
        openraft::AnyError::new(&e),
    ))
}

pub(crate) fn raft_error(e: sus_raft::Error) -> Error {
    Error::Consensus(format!("raft log: {e}"))
}

/// Makes a group's log consistent with its state machine before openraft starts on them.
///
/// A purge (after a snapshot) and openraft's next `save_committed` are separate writes, and a
/// follower purges its log for a received snapshot before the state machine has installed it. A
/// crash in either gap leaves a state openraft cannot start from:
/// - purge point ahead of the committed id, state machine holding the purged entries: the
///   committed id is raised to the purge point (purged entries are in a snapshot: committed);
/// - purge point ahead of the state machine, and no entry after it (a snapshot install cut
///   short): the log is emptied, keeping the vote, and the leader sends the snapshot again. Safe:
///   a follower answers a snapshot only once installed, so nothing was acknowledged from this
///   state;
/// - purge point ahead of the state machine with entries after it: refused as corruption.
pub(crate) async fn align_committed<
    SM: openraft::storage::RaftStateMachine<sus_raft::TypeConfig>,
>(
    mut log: LogStore,
    sm: &mut SM,
    dir: &Path,
    options: sus_raft::log_store::Options,
    what: &str,
) -> Result<LogStore> {
    let st = log.get_log_state().await.map_err(storage)?;
    let purged = st.last_purged_log_id;
    let committed = log.read_committed().await.map_err(storage)?;
    let (applied, _) = sm.applied_state().await.map_err(storage)?;
    if purged <= applied {
        if purged > committed {
            warn!(
                group = what,
                ?purged,
                ?committed,
                "committed id raised to the log's purge point"
            );
            log.save_committed(purged).await.map_err(storage)?;
        }
        return Ok(log);
    }
    if st.last_log_id > purged {
        return Err(Error::Corruption {
            what: what.to_string(),
            message: format!(
                "the log is purged up to {purged:?}, holds entries after it, but the state machine \
                 holds only {applied:?}; wipe this node and add it back under a new id"
            ),
        });
    }
    warn!(
        group = what,
        ?purged,
        ?applied,
        "a snapshot install was cut short: emptying the log (keeping the vote) to receive it again"
    );
    let vote = log.read_vote().await.map_err(storage)?;
    drop(log);
    let aside = dir.with_extension("reset");
    fs::rename(dir, &aside).map_err(|e| Error::io(dir, e))?;
    fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
    let mut log = LogStore::open_with(dir, options).map_err(raft_error)?;
    if let Some(vote) = vote {
        log.save_vote(&vote).await.map_err(storage)?;
    }
    Ok(log)
}

pub(crate) fn storage(e: openraft::StorageError<NodeId>) -> Error {
    Error::Consensus(format!("raft log: {e}"))
}

pub(crate) fn fatal(e: openraft::error::Fatal<NodeId>) -> Error {
    Error::Consensus(format!("raft stopped: {e}"))
}

/// Turns a shard group's saved leadership of this node into a plain vote for itself in that
/// term. openraft 0.9 restores a node that led before a restart as leader at once, without a new
/// term's first entry, and answers read-index rounds with the committed index it recovered. A
/// shard's committed index is saved lazily and its replica's write buffer rolls back to the
/// last checkpoint, so that index can be behind entries the leader applied and acknowledged
/// before the restart: a linearizable read would miss them. As a candidate it must win an
/// election first, and a new term's first entry makes every read wait for the whole log.
pub(crate) async fn no_restored_leadership(log: &mut LogStore, id: NodeId) -> crate::Result<()> {
    let storage = |e| crate::Error::Consensus(format!("raft log: {e}"));
    if let Some(vote) = log.read_vote().await.map_err(storage)?
        && vote.is_committed()
        && vote.leader_id.node_id == id
    {
        let plain = openraft::Vote::new(vote.leader_id.term, id);
        log.save_vote(&plain).await.map_err(storage)?;
    }
    Ok(())
}
