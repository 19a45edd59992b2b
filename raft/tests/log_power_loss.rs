//! The log store under power cuts (invariant W1 of `docs/design/write-path.md`): on a simulated
//! disk that loses what was not synced, seeded schedules of appends (some still in flight at the
//! cut), votes, committed ids, truncations and purges, then a cut and a restart. After every cut:
//! the store opens, every acknowledged entry is there, nothing but a prefix of what was written
//! is, the vote and purge point are the last ones that returned, and appending goes on.
//! `SUS_POWER_SEED=N` replays one seed; `SUS_POWER_TRACE=1` prints its operations.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use futures::FutureExt;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sus_disk::{Disk, SimDisk};
use sus_raft::log_store::{LogStore, Options};
use sus_raft::{NodeId, Request, TypeConfig};

type Pending = Pin<Box<dyn Future<Output = Result<(), openraft::StorageError<NodeId>>>>>;

fn lid(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn ent(term: u64, index: u64, size: usize) -> Entry<TypeConfig> {
    let bytes = (0..size)
        .map(|i| (index as usize * 31 + term as usize * 7 + i) as u8)
        .collect();
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(Request(bytes)),
    }
}

fn key(e: &Entry<TypeConfig>) -> Vec<u8> {
    bincode::serialize(e).unwrap()
}

/// What the store has promised so far.
#[derive(Default)]
struct Model {
    /// The log as written (index → entry bytes), acknowledged or not.
    log: BTreeMap<u64, Vec<u8>>,
    /// Indexes whose append was acknowledged (and not truncated since).
    acked: BTreeSet<u64>,
    term: u64,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<u64>,
}

impl Model {
    fn next(&self) -> u64 {
        self.log
            .keys()
            .next_back()
            .map(|i| i + 1)
            .or(self.purged.map(|p| p + 1))
            .unwrap_or(0)
    }
}

async fn settle(pending: &mut Vec<(Vec<u64>, Pending)>, model: &mut Model) {
    for (indexes, fut) in pending.drain(..) {
        if fut.await.is_ok() {
            model.acked.extend(indexes);
        }
    }
}

/// Runs one seeded schedule on `disk` and returns what it promised; the power is cut on return.
async fn schedule(disk: &SimDisk, dir: &Path, options: Options, rng: &mut ChaCha8Rng) -> Model {
    let mut store = LogStore::open_on(Arc::new(disk.clone()), dir, options).unwrap();
    let mut model = Model {
        term: 1,
        ..Model::default()
    };
    let mut pending: Vec<(Vec<u64>, Pending)> = Vec::new();
    let steps = rng.random_range(1..60);
    let trace = std::env::var("SUS_POWER_TRACE").is_ok();
    for _ in 0..steps {
        let op = rng.random_range(0..10);
        if trace {
            let files = disk.read_dir(dir).unwrap_or_default();
            eprintln!("op {op} next {} files {files:?}", model.next());
        }
        match op {
            0..6 => {
                let first = model.next();
                let n = rng.random_range(1..5u64);
                let batch: Vec<_> = (first..first + n)
                    .map(|i| ent(model.term, i, rng.random_range(1..700)))
                    .collect();
                for e in &batch {
                    model.log.insert(e.log_id.index, key(e));
                }
                let mut s = store.clone();
                let mut fut: Pending = Box::pin(async move { s.blocking_append(batch).await });
                // One poll writes the records and queues their sync; the answer comes later.
                if let Some(r) = (&mut fut).now_or_never() {
                    r.unwrap();
                    model.acked.extend(first..first + n);
                } else {
                    pending.push(((first..first + n).collect(), fut));
                }
            }
            6 => {
                settle(&mut pending, &mut model).await;
                let vote = Vote::new(model.term + rng.random_range(0..2), rng.random_range(1..4));
                if model.vote.is_none_or(|v| vote >= v) {
                    store.save_vote(&vote).await.unwrap();
                    model.vote = Some(vote);
                }
            }
            7 => {
                settle(&mut pending, &mut model).await;
                if let Some((&i, _)) = model.log.last_key_value() {
                    let c = lid(
                        model.term,
                        rng.random_range(model.purged.map_or(0, |p| p + 1)..=i),
                    );
                    // Raft's committed id only grows.
                    if Some(c) > model.committed {
                        store.save_committed(Some(c)).await.unwrap();
                        model.committed = Some(c);
                    }
                }
            }
            8 => {
                settle(&mut pending, &mut model).await;
                // Raft truncates only what is not committed.
                let low = model
                    .purged
                    .max(model.committed.map(|c| c.index))
                    .map_or(0, |i| i + 1);
                let Some(&last) = model.log.keys().next_back() else {
                    continue;
                };
                if last < low {
                    continue;
                }
                let at = rng.random_range(low..=last);
                store.truncate(lid(model.term, at)).await.unwrap();
                model.log.split_off(&at);
                model.acked.retain(|i| *i < at);
                model.term += 1;
            }
            _ => {
                settle(&mut pending, &mut model).await;
                let Some(&last) = model.acked.last() else {
                    continue;
                };
                let upto = rng.random_range(model.purged.unwrap_or(0)..=last);
                store.purge(lid(model.term, upto)).await.unwrap();
                model.purged = Some(model.purged.map_or(upto, |p| p.max(upto)));
                model.log.retain(|i, _| *i > upto);
                model.acked.retain(|i| *i > upto);
            }
        }
    }
    // Let the sync thread get somewhere, or not, then cut.
    for _ in 0..rng.random_range(0..3) {
        tokio::task::yield_now().await;
        std::thread::yield_now();
    }
    disk.cut_power();
    settle(&mut pending, &mut model).await;
    model
}

async fn check(disk: &SimDisk, dir: &Path, options: Options, model: &Model, seed: u64) {
    let mut store = LogStore::open_on(Arc::new(disk.clone()), dir, options)
        .unwrap_or_else(|e| panic!("seed {seed}: the store does not open after a cut: {e}"));
    assert_eq!(
        store.read_vote().await.unwrap(),
        model.vote,
        "seed {seed}: vote"
    );
    let committed = store.read_committed().await.unwrap();
    if options.sync_committed {
        assert_eq!(committed, model.committed, "seed {seed}: committed");
    } else {
        assert!(
            committed <= model.committed,
            "seed {seed}: committed from the future"
        );
    }
    let state = store.get_log_state().await.unwrap();
    assert_eq!(
        state.last_purged_log_id.map(|l| l.index),
        model.purged,
        "seed {seed}: purge point"
    );
    let got = store.try_get_log_entries(0..).await.unwrap();
    let from = model.purged.map_or(0, |p| p + 1);
    for (k, e) in got.iter().enumerate() {
        let index = from + k as u64;
        assert_eq!(e.log_id.index, index, "seed {seed}: the log has a hole");
        assert_eq!(
            model.log.get(&index),
            Some(&key(e)),
            "seed {seed}: entry {index} was never written so, or was truncated"
        );
    }
    let last = got.last().map(|e| e.log_id.index);
    for i in &model.acked {
        assert!(
            last.is_some_and(|l| *i <= l),
            "seed {seed}: acknowledged entry {i} lost (log ends at {last:?})"
        );
    }
    // The recovered store takes appends where it ends, and keeps them.
    let next = last.map(|l| l + 1).unwrap_or(from);
    let more: Vec<_> = (next..next + 3)
        .map(|i| ent(model.term + 1, i, 300))
        .collect();
    store.blocking_append(more.clone()).await.unwrap();
    drop(store);
    let again = disk.after_process_crash();
    let mut store = LogStore::open_on(Arc::new(again), dir, options).unwrap();
    let tail = store.try_get_log_entries(next..).await.unwrap();
    assert_eq!(
        tail.iter().map(key).collect::<Vec<_>>(),
        more.iter().map(key).collect::<Vec<_>>(),
        "seed {seed}: appends after recovery"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn every_acknowledged_entry_and_vote_survives_a_power_cut() {
    let first: u64 = std::env::var("SUS_POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261208);
    let runs: u64 = if std::env::var("SUS_POWER_SEED").is_ok() {
        1
    } else {
        400
    };
    let dir = Path::new("/node/raft/g1");
    let (mut acked, mut cut_tails) = (0usize, 0usize);
    for seed in first..first + runs {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let options = Options {
            segment_bytes: rng.random_range(600..4000),
            sync_committed: rng.random_bool(0.5),
        };
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/node/raft")).unwrap();
        disk.sync_dir(Path::new("/node")).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        let model = schedule(&disk, dir, options, &mut rng).await;
        acked += model.acked.len();
        let survivor = disk.after_power_loss(seed);
        let written = model.log.keys().next_back().copied();
        check(&survivor, dir, options, &model, seed).await;
        if written > model.acked.last().copied() {
            cut_tails += 1;
        }
    }
    // The schedules must have exercised something: acknowledged entries, and cuts with
    // unacknowledged entries in flight.
    assert!(
        acked > runs as usize * 5,
        "{acked} entries acknowledged in {runs} runs"
    );
    assert!(
        runs == 1 || cut_tails > runs as usize / 10,
        "{cut_tails} of {runs} cuts had unacknowledged entries"
    );
}
