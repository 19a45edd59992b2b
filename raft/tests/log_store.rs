//! The durable log store: openraft's conformance suite, reopen, torn tails, corruption, rotation.
#![allow(clippy::unwrap_used)]

use std::fs::{self, OpenOptions};
use std::io::{SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use sus_raft::log_store::{LogStore, Options};
use sus_raft::{Error, NodeId, Request, Response, TypeConfig};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

// ---------------------------------------------------------------------------------------------
// A minimal in-memory state machine, only for openraft's conformance suite.

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmData {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    requests: Vec<Request>,
}

struct SmInner {
    dir: PathBuf,
    data: SmData,
    current: Option<(SnapshotMeta<NodeId, BasicNode>, PathBuf)>,
    seq: u64,
}

#[derive(Clone)]
struct MemSm(Arc<tokio::sync::Mutex<SmInner>>);

impl MemSm {
    fn new(dir: PathBuf) -> MemSm {
        fs::create_dir_all(&dir).unwrap();
        MemSm(Arc::new(tokio::sync::Mutex::new(SmInner {
            dir,
            data: SmData::default(),
            current: None,
            seq: 0,
        })))
    }
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(openraft::AnyError::error(e)).into()
}

impl RaftSnapshotBuilder<TypeConfig> for MemSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut sm = self.0.lock().await;
        sm.seq += 1;
        let meta = SnapshotMeta {
            last_log_id: sm.data.applied,
            last_membership: sm.data.membership.clone(),
            snapshot_id: format!("snap-{}", sm.seq),
        };
        let path = sm.dir.join(format!("snapshot-{}.json", sm.seq));
        fs::write(&path, serde_json::to_vec(&sm.data).map_err(sm_err)?).map_err(sm_err)?;
        sm.current = Some((meta.clone(), path.clone()));
        let file = tokio::fs::File::open(&path).await.map_err(sm_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MemSm {
    type SnapshotBuilder = MemSm;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let sm = self.0.lock().await;
        Ok((sm.data.applied, sm.data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut sm = self.0.lock().await;
        let mut out = Vec::new();
        for entry in entries {
            sm.data.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(r) => sm.data.requests.push(r),
                EntryPayload::Membership(m) => {
                    sm.data.membership = StoredMembership::new(Some(entry.log_id), m)
                }
            }
            out.push(Response::default());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> MemSm {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let mut sm = self.0.lock().await;
        sm.seq += 1;
        let path = sm.dir.join(format!("receiving-{}", sm.seq));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(sm_err)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut bytes = Vec::new();
        snapshot.seek(SeekFrom::Start(0)).await.map_err(sm_err)?;
        snapshot.read_to_end(&mut bytes).await.map_err(sm_err)?;
        let data: SmData = serde_json::from_slice(&bytes).map_err(sm_err)?;
        let mut sm = self.0.lock().await;
        sm.seq += 1;
        let path = sm.dir.join(format!("snapshot-{}.json", sm.seq));
        fs::write(&path, &bytes).map_err(sm_err)?;
        sm.data = data;
        sm.current = Some((meta.clone(), path));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let sm = self.0.lock().await;
        match &sm.current {
            None => Ok(None),
            Some((meta, path)) => {
                let file = tokio::fs::File::open(path).await.map_err(sm_err)?;
                Ok(Some(Snapshot {
                    meta: meta.clone(),
                    snapshot: Box::new(file),
                }))
            }
        }
    }
}

struct Builder {
    options: Options,
}

impl StoreBuilder<TypeConfig, LogStore, MemSm, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, MemSm), StorageError<NodeId>> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open_with(&dir.path().join("log"), self.options).unwrap();
        let sm = MemSm::new(dir.path().join("sm"));
        Ok((dir, log, sm))
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn lid(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// An entry whose payload is `size` bytes derived from its index, so a mix-up shows.
fn ent(term: u64, index: u64, size: usize) -> Entry<TypeConfig> {
    let bytes = (0..size).map(|i| (index as usize * 31 + i) as u8).collect();
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(Request(bytes)),
    }
}

fn key(e: &Entry<TypeConfig>) -> Vec<u8> {
    bincode::serialize(e).unwrap()
}

fn assert_entries(got: &[Entry<TypeConfig>], want: &[Entry<TypeConfig>]) {
    let got: Vec<_> = got.iter().map(key).collect();
    let want: Vec<_> = want.iter().map(key).collect();
    assert_eq!(got.len(), want.len(), "entry count");
    assert!(got == want, "entries differ");
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

fn first_index(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Record offsets of a segment, walking its headers.
fn record_offsets(path: &Path) -> Vec<(u64, u32)> {
    let bytes = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        out.push((at as u64, len));
        at += 8 + len as usize;
    }
    out
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x55;
    fs::write(path, bytes).unwrap();
}

fn append_raw(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn open_err(dir: &Path, options: Options) -> Error {
    match LogStore::open_with(dir, options) {
        Ok(_) => panic!("open succeeded on a corrupt log"),
        Err(e) => e,
    }
}

const SMALL: Options = Options {
    segment_bytes: 1024,
    sync_committed: true,
};

/// A shard group's options: the committed id is not synced on its own.
const LAZY: Options = Options {
    segment_bytes: 1024,
    sync_committed: false,
};

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn conformance_suite_default_segments() {
    // Proves the store meets openraft's storage contract with the production segment size.
    Suite::test_all(Builder {
        options: Options::default(),
    })
    .unwrap();
}

#[test]
fn conformance_suite_tiny_segments() {
    // Proves the contract still holds when nearly every entry rotates into a new segment.
    Suite::test_all(Builder {
        options: Options {
            segment_bytes: 64,
            ..Options::default()
        },
    })
    .unwrap();
}

#[test]
fn conformance_suite_lazy_committed() {
    // Proves the contract holds when the committed id is only remembered until the next vote.
    Suite::test_all(Builder { options: LAZY }).unwrap();
}

#[tokio::test]
async fn lazy_committed_is_written_with_the_next_vote_or_purge() {
    // Proves a lazy committed id is served at once, lost by a reopen on its own (openraft then
    // starts from the state machine's applied id), and made durable by the next vote or purge.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let all: Vec<_> = (0..10).map(|i| ent(1, i, 50)).collect();
    {
        let mut store = LogStore::open_with(&dir, LAZY).unwrap();
        store.blocking_append(all.clone()).await.unwrap();
        store.save_committed(Some(lid(1, 4))).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(lid(1, 4)));
    }
    {
        let mut store = LogStore::open_with(&dir, LAZY).unwrap();
        assert_eq!(store.read_committed().await.unwrap(), None);
        assert_entries(&store.try_get_log_entries(0..).await.unwrap(), &all);
        store.save_committed(Some(lid(1, 6))).await.unwrap();
        store.save_vote(&Vote::new(1, 1)).await.unwrap();
        store.save_committed(Some(lid(1, 8))).await.unwrap();
    }
    {
        let mut store = LogStore::open_with(&dir, LAZY).unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(lid(1, 6)));
        store.save_committed(Some(lid(1, 9))).await.unwrap();
        store.purge(lid(1, 2)).await.unwrap();
    }
    let mut store = LogStore::open_with(&dir, SMALL).unwrap();
    assert_eq!(store.read_committed().await.unwrap(), Some(lid(1, 9)));
    assert_entries(&store.try_get_log_entries(0..).await.unwrap(), &all[3..]);
}

#[tokio::test]
async fn concurrent_appends_of_many_stores_complete_in_order_and_survive_reopen() {
    // Proves the sync threads of 16 stores appending concurrently from one executor thread
    // complete every append, in order, durably (each callback awaited before the next append).
    let tmp = tempfile::tempdir().unwrap();
    let mut tasks = Vec::new();
    for g in 0..16u64 {
        let dir = tmp.path().join(format!("g{g}"));
        tasks.push(tokio::spawn(async move {
            let mut store = LogStore::open_with(&dir, SMALL).unwrap();
            for i in 0..40 {
                store.blocking_append([ent(1, i, 200)]).await.unwrap();
            }
            dir
        }));
    }
    for task in tasks {
        let dir = task.await.unwrap();
        let mut store = LogStore::open_with(&dir, SMALL).unwrap();
        let got = store.try_get_log_entries(0..).await.unwrap();
        let want: Vec<_> = (0..40).map(|i| ent(1, i, 200)).collect();
        assert_entries(&got, &want);
    }
}

#[tokio::test]
async fn reopen_restores_state_vote_committed_entries_truncate_and_purge() {
    // Proves everything acknowledged (entries, vote, committed, truncate, purge) survives a reopen.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let all: Vec<_> = (0..20)
        .map(|i| ent(1 + i / 10, i, 10 + 100 * i as usize))
        .collect();
    let vote = Vote::new(3, 2);
    let before;
    {
        let mut store = LogStore::open(&dir).unwrap();
        store.blocking_append(all[..5].to_vec()).await.unwrap();
        store.blocking_append(all[5..].to_vec()).await.unwrap();
        store.save_vote(&vote).await.unwrap();
        store.save_committed(Some(lid(2, 15))).await.unwrap();
        before = store.get_log_state().await.unwrap();
        assert_eq!(before.last_log_id, Some(lid(2, 19)));
    }
    {
        let mut store = LogStore::open(&dir).unwrap();
        assert_eq!(store.get_log_state().await.unwrap(), before);
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), Some(lid(2, 15)));
        assert_entries(&store.try_get_log_entries(0..).await.unwrap(), &all);

        store.truncate(lid(2, 15)).await.unwrap();
        store.purge(lid(1, 5)).await.unwrap();
    }
    {
        let mut store = LogStore::open(&dir).unwrap();
        let st = store.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(lid(1, 5)));
        assert_eq!(st.last_log_id, Some(lid(2, 14)));
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_entries(&store.try_get_log_entries(0..).await.unwrap(), &all[6..15]);
        assert!(store.try_get_log_entries(5..6).await.unwrap().is_empty());

        // Appending continues right after the truncation point.
        let next = ent(3, 15, 7);
        store.blocking_append([next.clone()]).await.unwrap();
        drop(store);
        let mut store = LogStore::open(&dir).unwrap();
        let got = store.try_get_log_entries(14..).await.unwrap();
        assert_entries(&got, &[all[14].clone(), next]);
    }
}

#[tokio::test]
async fn purge_past_the_end_survives_reopen() {
    // Proves a purge beyond the last entry empties the log durably and fixes the next index.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    {
        let mut store = LogStore::open(&dir).unwrap();
        store
            .blocking_append((0..5).map(|i| ent(1, i, 20)))
            .await
            .unwrap();
        store.purge(lid(2, 9)).await.unwrap();
        assert!(segments(&dir).is_empty());
        assert_eq!(store.disk_usage(), 0);
    }
    let mut store = LogStore::open(&dir).unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(lid(2, 9)));
    assert_eq!(st.last_log_id, Some(lid(2, 9)));
    // An entry already covered by the purge point is dropped; the log continues after it.
    store.blocking_append([ent(2, 5, 1)]).await.unwrap();
    assert_eq!(store.get_log_state().await.unwrap(), st);
    store.blocking_append([ent(2, 10, 1)]).await.unwrap();
    drop(store);
    let mut store = LogStore::open(&dir).unwrap();
    assert_entries(
        &store.try_get_log_entries(0..).await.unwrap(),
        &[ent(2, 10, 1)],
    );
    // A hole is refused.
    assert!(store.blocking_append([ent(2, 12, 1)]).await.is_err());
}

#[tokio::test]
async fn torn_tail_is_cut_and_appending_continues() {
    // Proves a partial record, a garbage record or a zero-filled tail at the end of the last
    // segment is dropped on open, the good entries remain, and the log continues at the next index.
    let torn_tails: Vec<(&str, Vec<u8>)> = vec![
        ("partial record", {
            let payload = bincode::serialize(&ent(1, 10, 500)).unwrap();
            let mut rec = (payload.len() as u32).to_le_bytes().to_vec();
            rec.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            rec.extend_from_slice(&payload[..200]);
            rec
        }),
        ("garbage record", {
            let mut rec = 6u32.to_le_bytes().to_vec();
            rec.extend_from_slice(&0xdead_beef_u32.to_le_bytes());
            rec.extend_from_slice(b"abcdef");
            rec
        }),
        ("half a header", vec![1, 2, 3]),
        ("zeros", vec![0; 4096]),
    ];
    for (what, tail) in torn_tails {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let all: Vec<_> = (0..10).map(|i| ent(1, i, 50)).collect();
        let size_before;
        {
            let mut store = LogStore::open(&dir).unwrap();
            store.blocking_append(all.clone()).await.unwrap();
            size_before = store.disk_usage();
        }
        let last = segments(&dir).pop().unwrap();
        append_raw(&last, &tail);

        let mut store = LogStore::open(&dir).unwrap();
        assert_eq!(store.disk_usage(), size_before, "{what}: tail not cut");
        assert_eq!(fs::metadata(&last).unwrap().len(), size_before, "{what}");
        assert_eq!(
            store.get_log_state().await.unwrap().last_log_id,
            Some(lid(1, 9)),
            "{what}"
        );
        assert_entries(&store.try_get_log_entries(0..).await.unwrap(), &all);
        let next = ent(2, 10, 30);
        store.blocking_append([next.clone()]).await.unwrap();
        drop(store);

        let mut store = LogStore::open(&dir).unwrap();
        let mut want = all.clone();
        want.push(next);
        assert_entries(&store.try_get_log_entries(0..).await.unwrap(), &want);
    }
}

#[tokio::test]
async fn corrupt_record_before_the_tail_is_an_error() {
    // Proves a checksum failure in a non-last segment, or mid-file in the last one with good
    // records after it, is reported as Corruption naming the file instead of being cut.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    {
        let mut store = LogStore::open_with(&dir, SMALL).unwrap();
        store
            .blocking_append((0..20).map(|i| ent(1, i, 300)))
            .await
            .unwrap();
    }
    let segs = segments(&dir);
    assert!(segs.len() >= 3);

    // Middle of a non-last segment.
    let victim = segs[1].clone();
    let (offset, _) = record_offsets(&victim)[1];
    flip_byte(&victim, offset + 8 + 40);
    match open_err(&dir, SMALL) {
        Error::Corruption { path, .. } => assert_eq!(path, victim),
        other => panic!("expected Corruption, got {other}"),
    }
    flip_byte(&victim, offset + 8 + 40);
    LogStore::open_with(&dir, SMALL).unwrap();

    // First record of the last segment, good records after it.
    let last = segments(&dir).pop().unwrap();
    let recs = record_offsets(&last);
    assert!(recs.len() >= 2);
    flip_byte(&last, recs[0].0 + 8 + 10);
    match open_err(&dir, SMALL) {
        Error::Corruption { path, .. } => assert_eq!(path, last),
        other => panic!("expected Corruption, got {other}"),
    }
}

#[tokio::test]
async fn missing_segment_is_an_error() {
    // Proves a hole between segments (a lost middle file) is Corruption naming the next file.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    {
        let mut store = LogStore::open_with(&dir, SMALL).unwrap();
        store
            .blocking_append((0..20).map(|i| ent(1, i, 300)))
            .await
            .unwrap();
    }
    let segs = segments(&dir);
    fs::remove_file(&segs[1]).unwrap();
    match open_err(&dir, SMALL) {
        Error::Corruption { path, .. } => assert_eq!(path, segs[2]),
        other => panic!("expected Corruption, got {other}"),
    }
}

#[tokio::test]
async fn rotation_purge_and_reads_across_segments() {
    // Proves entries span several segments, reads cross segment boundaries before and after a
    // reopen, purge deletes exactly the fully purged segments, and truncation across segments
    // removes later files.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let all: Vec<_> = (0..30).map(|i| ent(1, i, 300)).collect();
    let mut store = LogStore::open_with(&dir, SMALL).unwrap();
    store.blocking_append(all[..4].to_vec()).await.unwrap();
    // One batch spanning many segments.
    store.blocking_append(all[4..30].to_vec()).await.unwrap();
    let segs = segments(&dir);
    assert!(segs.len() >= 8, "only {} segments", segs.len());
    for seg in &segs {
        assert!(fs::metadata(seg).unwrap().len() <= SMALL.segment_bytes);
    }
    assert_entries(&store.try_get_log_entries(0..30).await.unwrap(), &all);
    assert_entries(
        &store.try_get_log_entries(2..=9).await.unwrap(),
        &all[2..10],
    );

    let usage = store.disk_usage();
    store.purge(lid(1, 10)).await.unwrap();
    assert!(store.disk_usage() < usage);
    let left = segments(&dir);
    // The first remaining segment still holds index 11; every deleted one held only <= 10.
    assert!(first_index(&left[0]) <= 11);
    assert!(left.len() < 2 || first_index(&left[1]) > 11);
    assert!(
        segs.iter()
            .filter(|s| !left.contains(s))
            .all(|s| first_index(s) <= 10)
    );
    assert_entries(&store.try_get_log_entries(0..).await.unwrap(), &all[11..]);
    drop(store);

    let mut store = LogStore::open_with(&dir, SMALL).unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap().last_purged_log_id,
        Some(lid(1, 10))
    );
    assert_entries(&store.try_get_log_entries(0..).await.unwrap(), &all[11..]);
    assert_entries(
        &store.try_get_log_entries(12..25).await.unwrap(),
        &all[12..25],
    );

    // Truncate in the middle of the remaining segments, then continue with a new term.
    store.truncate(lid(1, 20)).await.unwrap();
    assert!(segments(&dir).iter().all(|s| first_index(s) < 20));
    let newer: Vec<_> = (20..26).map(|i| ent(2, i, 300)).collect();
    store.blocking_append(newer.clone()).await.unwrap();
    drop(store);

    let mut store = LogStore::open_with(&dir, SMALL).unwrap();
    let mut want = all[11..20].to_vec();
    want.extend(newer);
    assert_entries(&store.try_get_log_entries(0..).await.unwrap(), &want);
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(lid(2, 25))
    );
}

#[tokio::test]
async fn write_error_fails_the_store_for_good() {
    // Proves a failed write is reported (return value and callback) and poisons every later call.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut store = LogStore::open_with(
        &dir,
        Options {
            segment_bytes: 64,
            ..Options::default()
        },
    )
    .unwrap();
    store.blocking_append([ent(1, 0, 100)]).await.unwrap();
    // The next entry needs a new segment, which cannot be created any more.
    fs::remove_dir_all(&dir).unwrap();
    assert!(store.blocking_append([ent(1, 1, 100)]).await.is_err());
    fs::create_dir_all(&dir).unwrap();
    assert!(store.read_vote().await.is_err());
    assert!(store.save_vote(&Vote::new(1, 1)).await.is_err());
    assert!(store.get_log_state().await.is_err());
    assert!(store.try_get_log_entries(0..).await.is_err());
    assert!(store.blocking_append([ent(1, 1, 100)]).await.is_err());
}
