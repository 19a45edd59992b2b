//! Compactions of a shard replica, off the apply path.
//!
//! A `ShardCommand::Compact` entry still goes through the shard's log, so every replica is asked
//! at the same point; applying it only starts a background compaction of the replica's store
//! (`Store::compact`, which takes the writer lock just to install each merge) and answers with
//! the entry's index. Compaction changes no content, so replicas need not finish together. The
//! leader that proposed it waits here for its own replica's job, by that index, to answer the
//! caller with the figures.

use crate::store::{CompactStats, Store};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Finished jobs kept for their waiter (the leader that proposed the entry, within seconds of the
/// start; a follower's jobs have none).
const KEEP_FINISHED: usize = 64;

/// The compaction jobs of one replica, by the log index of the entry that asked for them.
pub struct Compactions {
    shard: u32,
    finished: Arc<Mutex<BTreeMap<u64, Result<CompactStats>>>>,
    /// Bumped whenever a job finishes.
    count: watch::Sender<u64>,
}

impl Compactions {
    pub fn new(shard: u32) -> Compactions {
        Compactions {
            shard,
            finished: Arc::default(),
            count: watch::Sender::new(0),
        }
    }

    /// Starts compacting `store` for the entry at `index` (jobs of one store run one at a time).
    pub fn start(&self, store: Arc<Store>, index: u64, target_rows: u32) {
        let (finished, count, shard) = (self.finished.clone(), self.count.clone(), self.shard);
        let record = move |outcome: Result<CompactStats>| {
            if let Err(e) = &outcome {
                tracing::error!(shard, index, "compaction failed: {e}");
            }
            let mut done = finished.lock().unwrap_or_else(|p| p.into_inner());
            done.insert(index, outcome);
            while done.len() > KEEP_FINISHED {
                done.pop_first();
            }
            drop(done);
            count.send_modify(|n| *n += 1);
        };
        let job = {
            let record = record.clone();
            move || record(store.compact(target_rows))
        };
        let spawned = std::thread::Builder::new()
            .name(format!("compact-{shard}"))
            .spawn(job);
        if let Err(e) = spawned {
            record(Err(Error::Busy(format!(
                "cannot start a compaction thread: {e}"
            ))));
        }
    }

    /// The figures of the job started for the entry at `index`, once it has finished.
    pub async fn wait(&self, index: u64, timeout: Duration) -> Result<CompactStats> {
        let mut rx = self.count.subscribe();
        let outcome = tokio::time::timeout(timeout, async {
            loop {
                if let Some(outcome) = self
                    .finished
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&index)
                {
                    return Some(outcome);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match outcome {
            Ok(Some(outcome)) => outcome,
            Ok(None) => Err(Error::Internal(format!(
                "compaction of shard {} was not recorded",
                self.shard
            ))),
            Err(_) => Err(Error::Busy(format!(
                "the compaction of shard {} is still running after {} s; it goes on in the \
                 background",
                self.shard,
                timeout.as_secs()
            ))),
        }
    }
}
