//! A data shard's replica on this node: the store and the Raft state machine that feeds it.
//!
//! ```text
//!  <data>/shards/<shard>/raft/            the group's log and vote (sus_raft::LogStore)
//!  <data>/shards/<shard>/CURRENT          name of the live store directory
//!  <data>/shards/<shard>/store-<n>/       the Store (catalog + segments)
//!  <data>/shards/<shard>/snapshots/       CURRENT -> snap-<n>/ (meta.json, hard-linked segments +
//!                                         catalog dump, archive.snap once packed), incoming-*.snap
//! ```
//!
//! `apply` ([`super::apply`]) commits each entry's prepared submission with
//! [`crate::ingest::commit`], then records the applied log id (and membership) in the store's catalog. A crash between the two replays the
//! entry on restart, which is a no-op: every command is idempotent by (sender, submission id).
//! Installing a snapshot builds a new store directory from the archive, then switches `CURRENT`
//! to it; the old directory is removed after the switch (or at the next start).

use super::apply::{self, APPLIED, MEMBERSHIP, corrupt, encode, read_applied};
use super::durable::{receiving_file, storage_error, sync_dir, write_atomically};
use super::snapshot;
use crate::store::{SegmentCache, Store};
use crate::{Error, Result};
use openraft::storage::RaftStateMachine;
use openraft::{
    LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use sus_raft::{GroupId, NodeId, Response, TypeConfig};
use tracing::{info, warn};

type Membership = StoredMembership<NodeId, openraft::BasicNode>;

const CURRENT: &str = "CURRENT";
/// In `snapshots/`: names the current snapshot directory `snap-<n>/`, which holds `meta.json`
/// and either a frozen image (built here) or `archive.snap` (received), or both once packed.
const SNAPSHOT_POINTER: &str = "CURRENT";
const SNAPSHOT_META: &str = "meta.json";
const SNAPSHOT_ARCHIVE: &str = "archive.snap";

/// Version of the snapshot archive a shard writes and accepts.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// The Raft group of data shard `shard`.
pub fn shard_group(shard: u32) -> GroupId {
    u64::from(shard) + 1
}

/// How a node's shard replicas buffer applied rows (see `crate::store::buffer`).
#[derive(Clone)]
pub struct Buffering {
    pub settings: crate::store::BufferSettings,
    pub budget: Arc<crate::store::BufferBudget>,
}

/// A shard replica: shared by its state machine and the services that read it.
pub struct ShardReplica {
    pub group: GroupId,
    pub shard: u32,
    dir: PathBuf,
    store: RwLock<Arc<Store>>,
    /// Distinguishes incoming snapshot files and store directories.
    counter: AtomicU64,
    /// The node's segment cache (a store built from a snapshot shares it).
    cache: Arc<SegmentCache>,
    /// The node's write buffer settings (a store built from a snapshot buffers too).
    buffering: Option<Buffering>,
    /// When the snapshot being received began to arrive (for the transfer rate in the log).
    receiving_since: std::sync::Mutex<Option<std::time::Instant>>,
    metrics: Arc<super::metrics::Metrics>,
    /// Submissions derive their spells optimistically under the read side; one that lost a race
    /// derives again under the write side, alone, so it cannot lose again.
    pub derivations: tokio::sync::RwLock<()>,
    /// Why this replica stopped applying its log, once it has (shown in the cluster status).
    stopped: std::sync::Mutex<Option<String>>,
    /// Compactions running beside the apply path, by the index of the entry that asked.
    pub compactions: super::compactions::Compactions,
}

impl ShardReplica {
    /// Opens (or creates) the replica in `dir`, removing what an interrupted install left.
    pub fn open(
        dir: &Path,
        shard: u32,
        cache: Arc<SegmentCache>,
        buffering: Option<Buffering>,
        metrics: Arc<super::metrics::Metrics>,
    ) -> Result<Arc<ShardReplica>> {
        fs::create_dir_all(dir.join("snapshots")).map_err(|e| Error::io(dir, e))?;
        let current = match fs::read_to_string(dir.join(CURRENT)) {
            Ok(name) => name.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomically(&dir.join(CURRENT), b"store-0\n")?;
                "store-0".to_string()
            }
            Err(e) => return Err(Error::io(dir.join(CURRENT), e)),
        };
        let mut highest = 0u64;
        for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(n) = name.strip_prefix("store-") {
                highest = highest.max(n.parse().unwrap_or(0));
                if name != current {
                    warn!(dir = %entry.path().display(), "removing a store left by a snapshot install");
                    fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
                }
            }
        }
        let snapshots = dir.join("snapshots");
        let current_snapshot = fs::read_to_string(snapshots.join(SNAPSHOT_POINTER))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        for entry in fs::read_dir(&snapshots).map_err(|e| Error::io(&snapshots, e))? {
            let entry = entry.map_err(|e| Error::io(&snapshots, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(n) = name.strip_prefix("snap-") {
                highest = highest.max(n.parse().unwrap_or(0));
            }
            if name.starts_with("incoming-") {
                let _ = fs::remove_file(entry.path());
            } else if name.starts_with("snap-") && name != current_snapshot {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let store = Arc::new(Store::open_with_cache(&dir.join(&current), cache.clone())?);
        if let Some(b) = &buffering {
            store.enable_buffer(b.settings, b.budget.clone())?;
        }
        Ok(Arc::new(ShardReplica {
            group: shard_group(shard),
            shard,
            dir: dir.to_path_buf(),
            store: RwLock::new(store),
            counter: AtomicU64::new(highest + 1),
            cache,
            buffering,
            receiving_since: std::sync::Mutex::new(None),
            metrics,
            derivations: tokio::sync::RwLock::new(()),
            stopped: std::sync::Mutex::new(None),
            compactions: super::compactions::Compactions::new(shard),
        }))
    }

    /// The live store (a snapshot install may replace it; holders of the old one finish safely).
    pub fn store(&self) -> Arc<Store> {
        self.store.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Why this replica stopped applying its log (`None`: it has not).
    pub fn stopped(&self) -> Option<String> {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The applied log index recorded in the store (0 before any).
    pub fn last_applied(&self) -> u64 {
        self.store()
            .raft_state(APPLIED)
            .ok()
            .flatten()
            .and_then(|v| bincode::deserialize::<Option<LogId<NodeId>>>(&v).ok())
            .flatten()
            .map_or(0, |l| l.index)
    }

    fn snapshots(&self) -> PathBuf {
        self.dir.join("snapshots")
    }
}

/// The openraft state machine of a shard.
pub struct ShardStateMachine {
    replica: Arc<ShardReplica>,
}

impl ShardStateMachine {
    pub fn new(replica: Arc<ShardReplica>) -> ShardStateMachine {
        ShardStateMachine { replica }
    }
}

impl RaftStateMachine<TypeConfig> for ShardStateMachine {
    type SnapshotBuilder = ShardSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        read_applied(&self.replica.store()).map_err(storage_error)
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> std::result::Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let replica = self.replica.clone();
        // Commits write files and fsync: off the async runtime.
        tokio::task::spawn_blocking(move || apply_entries(&replica, entries))
            .await
            .map_err(|e| storage_error(Error::Internal(format!("apply task failed: {e}"))))?
            .map_err(storage_error)
    }

    async fn get_snapshot_builder(&mut self) -> ShardSnapshotBuilder {
        ShardSnapshotBuilder {
            replica: self.replica.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let n = self.replica.counter.fetch_add(1, Ordering::SeqCst);
        let path = self.replica.snapshots().join(format!("incoming-{n}.snap"));
        *self
            .replica
            .receiving_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        Ok(Box::new(receiving_file(&path).await?))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> std::result::Result<(), StorageError<NodeId>> {
        let replica = self.replica.clone();
        let meta = meta.clone();
        let mut file = *snapshot;
        use tokio::io::AsyncWriteExt;
        file.flush()
            .await
            .map_err(|e| storage_error(Error::io(&replica.dir, e)))?;
        file.sync_all()
            .await
            .map_err(|e| storage_error(Error::io(&replica.dir, e)))?;
        drop(file);
        let installed = replica.clone();
        tokio::task::spawn_blocking(move || install(&replica, &meta))
            .await
            .map_err(|e| storage_error(Error::Consensus(format!("install task failed: {e}"))))?
            .map_err(storage_error)?;
        installed.metrics.snapshot_installed();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        current_snapshot(&self.replica).await.map_err(storage_error)
    }
}

/// Applies committed entries in order. A deterministic refusal becomes the entry's answer on
/// every replica alike; any other failure stops this replica (openraft shuts the group down on a
/// storage error), loudly, because recording it would let this replica diverge from the others.
fn apply_entries(
    replica: &ShardReplica,
    entries: Vec<openraft::Entry<TypeConfig>>,
) -> Result<Vec<Response>> {
    let mut at = 0;
    let store = replica.store();
    let compact = |index, target_rows| replica.compactions.start(store.clone(), index, target_rows);
    apply::apply_in_order(&store, entries, &compact, &mut at).map_err(|e| stopping(replica, at, e))
}

/// Records and logs why this replica stops applying its log, with what an operator should do.
/// The status (open to every authenticated caller) shows the class of failure only; the log has
/// the detail, which may name files or records.
fn stopping(replica: &ShardReplica, index: u64, e: Error) -> Error {
    *replica.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
        "applying log entry {index}: {}; the node's log has the details",
        e.class()
    ));
    tracing::error!(
        shard = replica.shard, index, error = %e,
        "this shard replica stops: applying log entry {index} failed on this node only or for \
         a reason no replica may record as an answer; the other replicas carry on. Look for the \
         cause (disk, a build that differs from the leader's); after fixing it, restart the \
         node, or wipe its directory and rejoin it under a new id"
    );
    e
}

/// Installs the newest `incoming-*.snap` as the replica's store.
fn install(replica: &ShardReplica, meta: &SnapshotMeta<NodeId, openraft::BasicNode>) -> Result<()> {
    let snapshots = replica.snapshots();
    // openraft hands back the file it had us create; it is the newest incoming file.
    let incoming = fs::read_dir(&snapshots)
        .map_err(|e| Error::io(&snapshots, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("incoming-"))
        .max_by_key(|e| {
            e.file_name()
                .to_string_lossy()
                .trim_start_matches("incoming-")
                .trim_end_matches(".snap")
                .parse::<u64>()
                .unwrap_or(0)
        })
        .map(|e| e.path())
        .ok_or_else(|| Error::InvalidArgument("no received snapshot file to install".into()))?;
    let started = std::time::Instant::now();
    let receiving_since = replica
        .receiving_since
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or(started);
    let bytes = fs::metadata(&incoming).map(|m| m.len()).unwrap_or(0);
    let n = replica.counter.fetch_add(1, Ordering::SeqCst);
    let name = format!("store-{n}");
    let new_dir = replica.dir.join(&name);
    let (_header, store) = snapshot::restore(&incoming, &new_dir, replica.cache.clone())?;
    let store = Arc::new(store);
    store.set_raft_state(&[
        (APPLIED, encode(&meta.last_log_id)?),
        (MEMBERSHIP, encode(&meta.last_membership)?),
    ])?;
    // Durable before CURRENT names it: a store without its applied log id would be replayed
    // from a log that was purged.
    store.flush()?;
    // The received archive becomes this replica's current snapshot (to serve other peers).
    let snap_dir = snapshots.join(format!("snap-{n}"));
    fs::create_dir_all(&snap_dir).map_err(|e| Error::io(&snap_dir, e))?;
    fs::rename(&incoming, snap_dir.join(SNAPSHOT_ARCHIVE)).map_err(|e| Error::io(&incoming, e))?;
    write_atomically(
        &snap_dir.join(SNAPSHOT_META),
        &serde_json::to_vec(meta).map_err(|e| corrupt("snapshot meta", e))?,
    )?;
    write_atomically(&replica.dir.join(CURRENT), format!("{name}\n").as_bytes())?;
    set_current_snapshot(replica, &snap_dir)?;
    if let Some(b) = &replica.buffering {
        store.enable_buffer(b.settings, b.budget.clone())?;
    }
    let old = {
        let mut guard = replica.store.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, store)
    };
    // The snapshot holds everything the old store buffered: nothing to write.
    old.discard_buffer();
    let old_dir = old.dir().to_path_buf();
    drop(old);
    if let Err(e) = fs::remove_dir_all(&old_dir) {
        warn!(dir = %old_dir.display(), "old store not removed yet ({e}); removed at next start");
    }
    let transfer_secs = started.duration_since(receiving_since).as_secs_f64();
    let install_secs = started.elapsed().as_secs_f64();
    info!(
        shard = replica.shard, snapshot = %meta.snapshot_id, bytes, transfer_secs, install_secs,
        transfer_mb_per_s = bytes as f64 / 1e6 / transfer_secs.max(1e-9),
        "snapshot installed"
    );
    Ok(())
}

/// Points `snapshots/CURRENT` at `snap_dir` and removes the snapshots it replaces.
fn set_current_snapshot(replica: &ShardReplica, snap_dir: &Path) -> Result<()> {
    let snapshots = replica.snapshots();
    let name = snap_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    write_atomically(
        &snapshots.join(SNAPSHOT_POINTER),
        format!("{name}\n").as_bytes(),
    )?;
    for entry in fs::read_dir(&snapshots).map_err(|e| Error::io(&snapshots, e))? {
        let entry = entry.map_err(|e| Error::io(&snapshots, e))?;
        let other = entry.file_name().to_string_lossy().to_string();
        if other.starts_with("snap-") && other != name {
            // A reader streaming the old archive keeps its open file; unlinking is safe.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// The current snapshot, packing its archive first if it was only frozen so far. A newer
/// snapshot may replace the one being packed; then the newer one is served.
async fn current_snapshot(replica: &Arc<ShardReplica>) -> Result<Option<Snapshot<TypeConfig>>> {
    let mut attempt = 0;
    loop {
        match current_snapshot_once(replica).await {
            Err(e) if attempt < 3 => {
                attempt += 1;
                warn!(
                    shard = replica.shard,
                    "serving the current snapshot: {e}; retrying"
                );
            }
            other => return other,
        }
    }
}

async fn current_snapshot_once(
    replica: &Arc<ShardReplica>,
) -> Result<Option<Snapshot<TypeConfig>>> {
    let snapshots = replica.snapshots();
    let name = match fs::read_to_string(snapshots.join(SNAPSHOT_POINTER)) {
        Ok(name) => name.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(snapshots.join(SNAPSHOT_POINTER), e)),
    };
    let dir = snapshots.join(&name);
    let meta_path = dir.join(SNAPSHOT_META);
    let meta: SnapshotMeta<NodeId, openraft::BasicNode> = match fs::read(&meta_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| corrupt("snapshot meta", e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&meta_path, e)),
    };
    let archive = dir.join(SNAPSHOT_ARCHIVE);
    if !archive.exists() {
        let header = snapshot::Header {
            format: SNAPSHOT_FORMAT,
            group: replica.group,
        };
        let (from, packing) = (dir.clone(), dir.join(format!("{SNAPSHOT_ARCHIVE}.tmp")));
        let started = std::time::Instant::now();
        let bytes = tokio::task::spawn_blocking(move || {
            let bytes = snapshot::pack(&from, &header, &packing)?;
            fs::rename(&packing, from.join(SNAPSHOT_ARCHIVE))
                .map_err(|e| Error::io(&packing, e))?;
            Ok::<_, Error>(bytes)
        })
        .await
        .map_err(|e| Error::Consensus(format!("snapshot pack task failed: {e}")))??;
        info!(
            shard = replica.shard, snapshot = %meta.snapshot_id, bytes,
            secs = started.elapsed().as_secs_f64(), "snapshot packed to send"
        );
    }
    let file = tokio::fs::File::open(&archive)
        .await
        .map_err(|e| Error::io(&archive, e))?;
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(file),
    }))
}

/// Builds a shard snapshot: a frozen image of the store (hard links and a catalog dump).
pub struct ShardSnapshotBuilder {
    replica: Arc<ShardReplica>,
}

impl RaftSnapshotBuilder<TypeConfig> for ShardSnapshotBuilder {
    async fn build_snapshot(
        &mut self,
    ) -> std::result::Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let replica = self.replica.clone();
        tokio::task::spawn_blocking(move || build(&replica))
            .await
            .map_err(|e| storage_error(Error::Consensus(format!("snapshot task failed: {e}"))))?
            .map_err(storage_error)?;
        current_snapshot(&self.replica)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| storage_error(Error::InvalidArgument("snapshot vanished".into())))
    }
}

fn build(replica: &ShardReplica) -> Result<()> {
    let store = replica.store();
    let snapshots = replica.snapshots();
    let n = replica.counter.fetch_add(1, Ordering::SeqCst);
    let snap_dir = snapshots.join(format!("snap-{n}"));
    let started = std::time::Instant::now();
    // The dump includes the catalog's Raft state as of the dump, so read it from there.
    let mut applied_raw = None;
    let mut membership_raw = None;
    snapshot::freeze(&store, &snap_dir, &mut |k, v| {
        if k == format!("raft/{APPLIED}").as_bytes() {
            applied_raw = Some(v.to_vec());
        } else if k == format!("raft/{MEMBERSHIP}").as_bytes() {
            membership_raw = Some(v.to_vec());
        }
    })?;
    let applied: Option<LogId<NodeId>> = match applied_raw {
        Some(v) => bincode::deserialize(&v).map_err(|e| corrupt("applied log id", e))?,
        None => None,
    };
    let membership: Membership = match membership_raw {
        Some(v) => bincode::deserialize(&v).map_err(|e| corrupt("membership", e))?,
        None => Membership::default(),
    };
    let snapshot_id = match &applied {
        Some(l) => format!("{}-{}-{n}", l.leader_id.term, l.index),
        None => format!("0-0-{n}"),
    };
    let meta = SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
        snapshot_id,
    };
    write_atomically(
        &snap_dir.join(SNAPSHOT_META),
        &serde_json::to_vec(&meta).map_err(|e| corrupt("snapshot meta", e))?,
    )?;
    set_current_snapshot(replica, &snap_dir)?;
    sync_dir(&snapshots)?;
    info!(
        shard = replica.shard, snapshot = %meta.snapshot_id,
        secs = started.elapsed().as_secs_f64(), "snapshot built"
    );
    Ok(())
}
