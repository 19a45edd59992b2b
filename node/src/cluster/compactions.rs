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
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Finished jobs kept for their waiter (the leader that proposed the entry, within seconds of the
/// start; a follower's jobs have none).
const KEEP_FINISHED: usize = 64;

/// The compaction jobs of one replica, by the log index of the entry that asked for them.
pub struct Compactions {
    shard: u32,
    shared: Arc<Shared>,
}

struct Shared {
    /// Jobs asked for and not started, and whether a worker thread is draining them: one per
    /// replica at most, so compactions asked in a burst queue here instead of holding threads.
    queue: Mutex<(VecDeque<Job>, bool)>,
    finished: Mutex<BTreeMap<u64, Result<CompactStats>>>,
    /// Bumped whenever a job finishes.
    count: watch::Sender<u64>,
}

struct Job {
    store: Arc<Store>,
    index: u64,
    target_rows: u32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn record(&self, shard: u32, index: u64, outcome: Result<CompactStats>) {
        if let Err(e) = &outcome {
            tracing::error!(shard, index, "compaction failed: {e}");
        }
        let mut done = lock(&self.finished);
        done.insert(index, outcome);
        while done.len() > KEEP_FINISHED {
            done.pop_first();
        }
        drop(done);
        self.count.send_modify(|n| *n += 1);
    }

    /// Runs queued jobs in order until none is left.
    fn drain(&self, shard: u32) {
        loop {
            let job = {
                let mut queue = lock(&self.queue);
                match queue.0.pop_front() {
                    Some(job) => job,
                    None => {
                        queue.1 = false;
                        return;
                    }
                }
            };
            self.record(shard, job.index, job.store.compact(job.target_rows));
        }
    }
}

impl Compactions {
    pub fn new(shard: u32) -> Compactions {
        Compactions {
            shard,
            shared: Arc::new(Shared {
                queue: Mutex::new((VecDeque::new(), false)),
                finished: Mutex::new(BTreeMap::new()),
                count: watch::Sender::new(0),
            }),
        }
    }

    /// Queues compacting `store` for the entry at `index`; jobs run in order on one worker thread.
    pub fn start(&self, store: Arc<Store>, index: u64, target_rows: u32) {
        let mut queue = lock(&self.shared.queue);
        queue.0.push_back(Job {
            store,
            index,
            target_rows,
        });
        if queue.1 {
            return;
        }
        let (shared, shard) = (self.shared.clone(), self.shard);
        let spawned = std::thread::Builder::new()
            .name(format!("compact-{shard}"))
            .spawn(move || shared.drain(shard));
        match spawned {
            Ok(_) => queue.1 = true,
            Err(e) => {
                let failed: Vec<Job> = queue.0.drain(..).collect();
                drop(queue);
                for job in failed {
                    let why = format!("cannot start a compaction thread: {e}");
                    self.shared
                        .record(self.shard, job.index, Err(Error::Busy(why)));
                }
            }
        }
    }

    /// The figures of the job started for the entry at `index`, once it has finished.
    pub async fn wait(&self, index: u64, timeout: Duration) -> Result<CompactStats> {
        let mut rx = self.shared.count.subscribe();
        let outcome = tokio::time::timeout(timeout, async {
            loop {
                if let Some(outcome) = lock(&self.shared.finished).remove(&index) {
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

#[cfg(test)]
mod tests {
    use super::*;

    // A burst of compactions queues behind the replica's worker; every entry gets its own
    // outcome, once, and a job queued after the worker has exited starts another.
    #[tokio::test]
    async fn a_burst_of_compactions_queues_and_each_entry_gets_its_outcome() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(Store::open(tmp.path()).expect("store"));
        let jobs = Compactions::new(0);
        for index in 1..=20 {
            jobs.start(store.clone(), index, 1000);
        }
        for index in 1..=20 {
            let stats = jobs
                .wait(index, Duration::from_secs(60))
                .await
                .expect("ran");
            assert_eq!(
                stats,
                CompactStats::default(),
                "an empty store has nothing to merge"
            );
        }
        assert!(lock(&jobs.shared.queue).0.is_empty());
        jobs.start(store.clone(), 21, 1000);
        jobs.wait(21, Duration::from_secs(60)).await.expect("ran");
        // Its outcome was handed to its waiter once.
        assert!(jobs.wait(21, Duration::from_millis(10)).await.is_err());
    }
}
