//! A cluster node: the meta group and the data shards this node hosts, each an openraft group,
//! and the reconciliation that keeps the hosted shards equal to the meta group's shard map.
//!
//! ```text
//!  Admin.Init / AddNode ──► meta group (members, shard map) ──watch──► reconcile loop
//!                                                                        │ open / initialise /
//!                                                                        ▼ drop shard groups
//!  Ingest.Submit ──► shard of the sender ──► leader? ── no ──► forward once to the leader
//!                                             │ yes
//!                                             ▼
//!                prepare (parse, validate, derive, price) ──► client_write (majority fsync)
//!                                                              ──► every replica: ingest::commit
//! ```
//!
//! A node keeps its identity in `<data>/node.json`: its id and, once admitted, the cluster id and
//! the members it was admitted with. A node serves Raft calls only once admitted (by `Init` or
//! `AddNode`), and `AddNode` refuses an id the cluster has used before, so a wiped node can only
//! rejoin under a new id. With TLS, a node's certificate names its id (`sus://node/<id>`, see
//! [`pki`]) and the internal services accept only current members, each as itself.

mod activity;
pub(crate) mod aggregate;
mod apply;
pub(crate) mod audit;
mod audit_commit;
pub mod auth;
pub mod command;
pub mod compactions;
mod config;
pub(crate) mod durable;
pub(crate) mod freeze;
pub mod http;
mod identity;
pub(crate) mod membership;
pub mod meta;
pub mod metrics;
pub mod pki;
pub mod reachability;
pub(crate) mod reads;
mod report;
pub mod routing;
pub mod service;
pub mod shard;
pub mod snapshot;
pub(crate) mod sql;
pub(crate) mod submit;
pub mod throttle;
pub mod tls;
pub mod trace;
pub mod users;

use crate::refdata::RefData;
use crate::{Error, Result};
pub use config::{ClusterConfig, RaftTuning, WriteBufferConfig};
use config::{META_LOG, SHARD_LOG};
use durable::{align_committed, fatal, raft_error, storage, sync_dir, write_atomically};
use identity::{Identity, load_identity, write_identity};
use meta::{MetaCommand, MetaState, MetaStateMachine};
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, ServerState, SnapshotPolicy};
pub use shard::shard_group;
use shard::{ShardReplica, ShardStateMachine};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sus_raft::network::{NetworkFactory, Peers, Registry};
use sus_raft::{LogStore, META_GROUP, NodeId, Raft, Request};
use tokio::sync::watch;
use tracing::{info, warn};

/// A running cluster node.
pub struct Cluster {
    pub id: NodeId,
    pub advertise: String,
    pub refdata: Arc<RefData>,
    /// Sender/provider routing components of `refdata`, computed once.
    pub routing: routing::Routing,
    pub commit_timeout: Duration,
    tls: bool,
    pub peers: Arc<Peers>,
    pub registry: Arc<Registry>,
    pub meta: Raft,
    pub(crate) meta_state: watch::Receiver<MetaState>,
    /// Signs this node's own calls to its peers.
    pub node_auth: auth::NodeAuth,
    shards: Mutex<BTreeMap<u32, (Raft, Arc<ShardReplica>)>>,
    raft_config: Arc<openraft::Config>,
    data_dir: PathBuf,
    identity: Arc<Mutex<Identity>>,
    /// Which callers the internal services accept (node certificates of current members).
    gate: pki::NodeGate,
    /// Decoded footers and columns of every hosted store's segments.
    cache: Arc<crate::store::SegmentCache>,
    /// The shard replicas' write buffer settings and the node's budget for it.
    write_buffer: Option<shard::Buffering>,
    /// What `/metrics` and the status page show.
    pub metrics: Arc<metrics::Metrics>,
    /// What clients may send and make the node hold.
    pub limits: crate::limits::Limits,
    /// Decoded bytes of the submissions being prepared on this node.
    pub decode_budget: crate::limits::DecodeBudget,
    /// Failed logins answered by this node.
    pub logins: throttle::LoginThrottle,
    /// When the node started (uptime on the status page).
    pub started: std::time::Instant,
}

impl Cluster {
    /// Opens the node's groups from its data directory and starts reconciling.
    pub async fn start(config: ClusterConfig) -> Result<Arc<Cluster>> {
        fs::create_dir_all(&config.data_dir).map_err(|e| Error::io(&config.data_dir, e))?;
        // Dropped shard replicas whose deletion a crash cut short.
        let trash = config.data_dir.join("shards").join("dropped");
        if trash.exists() {
            fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
        }
        let identity = load_identity(&config.data_dir, config.id)?;
        if let Some(files) = &config.tls {
            files.check_identity(config.id)?;
        }
        let refdata = Arc::new(crate::ingest::local::load_refdata(
            &config.refdata_dir,
            config.grouper_output.as_deref(),
        )?);
        let raft_config = Arc::new(
            openraft::Config {
                cluster_name: "sus".into(),
                heartbeat_interval: config.raft.heartbeat_ms,
                election_timeout_min: config.raft.election_min_ms,
                election_timeout_max: config.raft.election_max_ms,
                install_snapshot_timeout: 30_000,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(config.raft.snapshot_after),
                max_in_snapshot_log_to_keep: config.raft.keep_after_snapshot,
                snapshot_max_chunk_size: 1024 * 1024,
                // Entries are whole submissions (up to tens of MB): openraft's default of 300 per
                // AppendEntries could exceed the message limit, and a follower could then never
                // catch up.
                max_payload_entries: 8,
                ..Default::default()
            }
            .validate()
            .map_err(|e| Error::InvalidArgument(format!("raft settings: {e}")))?,
        );
        let peers = match &config.tls {
            Some(files) => Peers::with_tls(files.client()?),
            None => Peers::new(),
        };
        let registry = Registry::new();
        let meta_dir = config.data_dir.join("meta");
        let log = LogStore::open_with(&meta_dir.join("raft"), META_LOG).map_err(raft_error)?;
        let (mut sm, meta_state) = MetaStateMachine::open(&meta_dir)?;
        let log = align_committed(
            log,
            &mut sm,
            &meta_dir.join("raft"),
            META_LOG,
            "the meta group",
        )
        .await?;
        let meta = Raft::new(
            config.id,
            raft_config.clone(),
            NetworkFactory::new(META_GROUP, peers.clone()),
            log,
            sm,
        )
        .await
        .map_err(|e| Error::Consensus(format!("starting the meta group: {e}")))?;
        let admitted = identity.cluster_id.is_some();
        let identity = Arc::new(Mutex::new(identity));
        let gate = pki::NodeGate::new(
            config.tls.is_some(),
            meta_state.clone(),
            meta.metrics(),
            identity.clone(),
        );
        let cluster = Arc::new(Cluster {
            id: config.id,
            advertise: config.advertise,
            routing: routing::Routing::new(&refdata),
            refdata,
            commit_timeout: config.commit_timeout,
            tls: config.tls.is_some(),
            peers,
            registry,
            meta,
            node_auth: auth::NodeAuth::new(config.id, meta_state.clone()),
            meta_state,
            shards: Mutex::new(BTreeMap::new()),
            raft_config,
            data_dir: config.data_dir,
            identity,
            gate,
            cache: crate::store::SegmentCache::new(
                config.cache_bytes,
                crate::store::DEFAULT_FOOTER_BYTES,
            ),
            write_buffer: config.write_buffer.map(|w| shard::Buffering {
                settings: w.settings,
                budget: crate::store::BufferBudget::new(w.node_bytes),
            }),
            metrics: Arc::new(metrics::Metrics::new()),
            decode_budget: crate::limits::DecodeBudget::new(config.limits.decode_budget_bytes),
            logins: throttle::LoginThrottle::new(config.limits.logins.clone()),
            limits: config.limits,
            started: std::time::Instant::now(),
        });
        // The hash unknown user names are checked against, before the first login needs it.
        tokio::task::spawn_blocking(crate::access::password::prepare_unknown_user_hash);
        if admitted {
            cluster.registry.insert(META_GROUP, cluster.meta.clone());
        }
        cluster.reconcile().await?;
        tokio::spawn(reconcile_loop(
            Arc::downgrade(&cluster),
            cluster.meta_state.clone(),
        ));
        let members: std::sync::Weak<dyn reachability::Members> = Arc::downgrade(&cluster) as _;
        tokio::spawn(reachability::watch(members));
        info!(id = cluster.id, addr = %cluster.advertise, admitted, "node started");
        Ok(cluster)
    }

    /// The cluster state as this node last applied it.
    pub fn meta_state(&self) -> MetaState {
        self.meta_state.borrow().clone()
    }

    /// A channel to the peer at `addr` on which calls without credentials carry this node's.
    pub fn peer(&self, addr: &str) -> Result<auth::PeerChannel> {
        let channel = self
            .peers
            .channel(addr)
            .map_err(|e| Error::Consensus(format!("peer {addr}: {e}")))?;
        Ok(tonic::service::interceptor::InterceptedService::new(
            channel,
            self.node_auth.clone(),
        ))
    }

    /// Whether connections are TLS (and the pre-key calls need node certificates).
    pub fn tls_required(&self) -> bool {
        self.tls
    }

    /// Whether this node holds the cluster key (it belongs to a bootstrapped cluster).
    pub fn has_key(&self) -> bool {
        !self.meta_state.borrow().secret.is_empty()
    }

    /// The interceptor that authenticates calls to this node's public services.
    pub fn authenticator(&self) -> auth::Authenticator {
        auth::Authenticator::new(self.gate.clone())
    }

    /// Which callers the internal services (Raft, Join, node tokens) accept.
    pub fn gate(&self) -> &pki::NodeGate {
        &self.gate
    }

    /// Whether this node has been admitted to a cluster.
    pub fn cluster_id(&self) -> Option<String> {
        self.identity_guard().cluster_id.clone()
    }

    /// Admits this node to `cluster_id` (idempotent; refuses a second, different cluster), with
    /// `members` the cluster's members (the nodes it accepts until it has caught up).
    pub fn join(&self, cluster_id: &str, node_id: NodeId, members: &[NodeId]) -> Result<()> {
        if node_id != self.id {
            return Err(Error::InvalidArgument(format!(
                "asked to join as node {node_id}, but this is node {}",
                self.id
            )));
        }
        let mut identity = self.identity_guard();
        match &identity.cluster_id {
            Some(existing) if existing == cluster_id => return Ok(()),
            Some(existing) => {
                return Err(Error::InvalidArgument(format!(
                    "node {} already belongs to cluster {existing}",
                    self.id
                )));
            }
            None => {}
        }
        identity.cluster_id = Some(cluster_id.to_string());
        identity.admitted_with = members.iter().copied().collect();
        write_identity(&self.data_dir, &identity)?;
        drop(identity);
        self.registry.insert(META_GROUP, self.meta.clone());
        info!(
            id = self.id,
            cluster = cluster_id,
            "admitted to the cluster"
        );
        Ok(())
    }

    /// The Raft and replica of a shard this node hosts.
    pub fn shard(&self, shard: u32) -> Option<(Raft, Arc<ShardReplica>)> {
        self.shards_guard().get(&shard).cloned()
    }

    /// The hosted shards.
    pub fn hosted_shards(&self) -> Vec<u32> {
        self.shards_guard().keys().copied().collect()
    }

    /// Proposes a meta command through the meta leader (this node must lead the meta group).
    pub async fn propose_meta(&self, command: &MetaCommand) -> Result<()> {
        let bytes =
            bincode::serialize(command).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let response = self
            .meta
            .client_write(Request(bytes))
            .await
            .map_err(|e| Error::Consensus(format!("meta write: {e}")))?;
        meta::decode_response(&response.data).map_err(Error::InvalidArgument)
    }

    /// Address of a node, from the meta group's members.
    /// The channel to node `node` at its address in the meta state.
    pub(crate) fn peer_of(&self, node: NodeId) -> Result<auth::PeerChannel> {
        let addr = self
            .address_of(node)
            .ok_or_else(|| Error::Unreachable(format!("no address known for node {node}")))?;
        self.peer(&addr)
            .map_err(|e| Error::Unreachable(format!("node {node} at {addr}: {e}")))
    }

    pub fn address_of(&self, node: NodeId) -> Option<String> {
        self.meta_state.borrow().nodes.get(&node).cloned()
    }

    /// Brings the hosted shard groups in line with the shard map.
    async fn reconcile(&self) -> Result<()> {
        if self.cluster_id().is_none() {
            return Ok(());
        }
        let state = self.meta_state();
        for (s, info) in state.shards.iter().enumerate() {
            let s = s as u32;
            let hosted = self.shard(s);
            if info.replicas.contains(&self.id) {
                let raft = match hosted {
                    Some((raft, _)) => raft,
                    None => self.open_shard(s).await?,
                };
                if info.bootstrap.first() == Some(&self.id)
                    && !raft.is_initialized().await.map_err(fatal)?
                {
                    let members: BTreeMap<NodeId, BasicNode> = info
                        .bootstrap
                        .iter()
                        .filter_map(|n| {
                            state
                                .nodes
                                .get(n)
                                .map(|addr| (*n, BasicNode { addr: addr.clone() }))
                        })
                        .collect();
                    info!(shard = s, ?members, "initialising shard group");
                    if let Err(e) = raft.initialize(members).await {
                        warn!(shard = s, "shard initialise: {e}");
                    }
                }
            } else if let Some((raft, replica)) = hosted {
                // The meta group records a replica set without this node only after the shard's
                // membership change committed, so the copy is no longer needed.
                self.drop_shard(s, raft, replica).await;
            }
        }
        Ok(())
    }

    /// Bytes of applied rows this node's replicas buffer (0 without a write buffer).
    pub fn write_buffer_bytes(&self) -> u64 {
        self.write_buffer.as_ref().map_or(0, |b| b.budget.used())
    }

    async fn open_shard(&self, shard: u32) -> Result<Raft> {
        let dir = self.shard_dir(shard);
        let replica = {
            let dir = dir.clone();
            let (cache, metrics) = (self.cache.clone(), self.metrics.clone());
            let buffering = self.write_buffer.clone();
            tokio::task::spawn_blocking(move || {
                ShardReplica::open(&dir, shard, cache, buffering, metrics)
            })
            .await
            .map_err(|e| Error::Consensus(format!("opening shard {shard}: {e}")))??
        };
        let mut log = LogStore::open_with(&dir.join("raft"), SHARD_LOG).map_err(raft_error)?;
        // A node that hosted this shard before keeps its last vote: it must never vote twice in
        // one term, even after its replica was removed and the data deleted.
        let kept_vote = self.kept_vote_path(shard);
        if let Ok(bytes) = fs::read(&kept_vote) {
            if log.read_vote().await.map_err(storage)?.is_none() {
                let vote: openraft::Vote<NodeId> =
                    bincode::deserialize(&bytes).map_err(|e| Error::Corruption {
                        what: kept_vote.display().to_string(),
                        message: e.to_string(),
                    })?;
                // Only the promise matters (no second vote in that term): restore it as an
                // uncommitted vote, never as a leadership this replica no longer holds.
                let vote = openraft::Vote::new(vote.leader_id.term, vote.leader_id.node_id);
                log.save_vote(&vote).await.map_err(storage)?;
            }
            fs::remove_file(&kept_vote).map_err(|e| Error::io(&kept_vote, e))?;
        }
        durable::no_restored_leadership(&mut log, self.id).await?;
        let mut sm = ShardStateMachine::new(replica.clone());
        let what = format!("shard {shard}");
        let log = align_committed(log, &mut sm, &dir.join("raft"), SHARD_LOG, &what).await?;
        let raft = Raft::new(
            self.id,
            self.raft_config.clone(),
            NetworkFactory::new(shard_group(shard), self.peers.clone()),
            log,
            sm,
        )
        .await
        .map_err(|e| Error::Consensus(format!("starting shard {shard}: {e}")))?;
        self.registry.insert(shard_group(shard), raft.clone());
        self.shards_guard().insert(shard, (raft.clone(), replica));
        info!(shard, "shard replica opened");
        Ok(raft)
    }

    async fn drop_shard(&self, shard: u32, raft: Raft, replica: Arc<ShardReplica>) {
        info!(
            shard,
            "shard replica moved away: shutting it down and removing its data"
        );
        self.registry.remove(shard_group(shard));
        self.shards_guard().remove(&shard);
        if let Err(e) = raft.shutdown().await {
            warn!(shard, "shutdown: {e}");
        }
        drop(replica);
        let dir = self.shard_dir(shard);
        if let Err(e) = self.keep_vote(shard).await {
            // Without the vote the data must stay: the replica could otherwise rejoin and vote
            // twice in a term. Leave it for the operator.
            warn!(shard, dir = %dir.display(), "could not keep the shard's vote ({e}); data left in place");
            return;
        }
        // Moved aside in one rename, then deleted: the state machine may still be finishing an
        // apply after shutdown, and a deletion racing it (or cut short by a crash) must never
        // leave a half-deleted directory (a Raft state without its log) where the shard would be
        // opened again if it moves back here.
        let trash = self.trash_dir();
        let aside = trash.join(format!(
            "{shard:04}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let moved = fs::create_dir_all(&trash)
            .and_then(|()| fs::rename(&dir, &aside))
            .map_err(|e| Error::io(&dir, e))
            .and_then(|()| sync_dir(&self.data_dir.join("shards")));
        match moved {
            Ok(()) => {
                if let Err(e) = fs::remove_dir_all(&aside) {
                    // Deleted at the next start.
                    warn!(shard, dir = %aside.display(), "removing a dropped shard: {e}");
                }
            }
            Err(e) => warn!(shard, dir = %dir.display(), "moving a dropped shard aside: {e}"),
        }
    }

    /// Where dropped shard replicas are moved before deletion (emptied at start).
    fn trash_dir(&self) -> PathBuf {
        self.data_dir.join("shards").join("dropped")
    }

    async fn keep_vote(&self, shard: u32) -> Result<()> {
        let dir = self.shard_dir(shard).join("raft");
        let mut log = LogStore::open_with(&dir, SHARD_LOG).map_err(raft_error)?;
        if let Some(vote) = log.read_vote().await.map_err(storage)? {
            let bytes =
                bincode::serialize(&vote).map_err(|e| Error::InvalidArgument(e.to_string()))?;
            write_atomically(&self.kept_vote_path(shard), &bytes)?;
        }
        Ok(())
    }

    fn kept_vote_path(&self, shard: u32) -> PathBuf {
        self.data_dir
            .join("shards")
            .join(format!("{shard:04}.vote"))
    }

    fn shard_dir(&self, shard: u32) -> PathBuf {
        self.data_dir.join("shards").join(format!("{shard:04}"))
    }

    /// Stops every group (for a clean shutdown) and checkpoints each replica's write buffer, so
    /// that the next start has no log to apply again.
    pub async fn shutdown(&self) {
        let shards: Vec<_> = self.shards_guard().values().cloned().collect();
        for (raft, replica) in shards {
            let _ = raft.shutdown().await;
            let store = replica.store();
            match tokio::task::spawn_blocking(move || store.checkpoint()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(shard = replica.shard, "checkpoint at shutdown: {e}"),
                Err(e) => warn!(shard = replica.shard, "checkpoint at shutdown: {e}"),
            }
        }
        let _ = self.meta.shutdown().await;
    }

    /// Waits until `raft` knows a leader, up to `timeout`.
    pub async fn wait_leader(raft: &Raft, timeout: Duration) -> Option<NodeId> {
        let mut rx = raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = rx.borrow().current_leader {
                return Some(l);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Whether this node currently leads `raft`'s group.
    pub fn is_leader(&self, raft: &Raft) -> bool {
        let m = raft.metrics().borrow().clone();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    fn shards_guard(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, (Raft, Arc<ShardReplica>)>> {
        self.shards.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn identity_guard(&self) -> std::sync::MutexGuard<'_, Identity> {
        self.identity.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl reachability::Members for Cluster {
    fn others(&self) -> Option<Vec<(NodeId, String)>> {
        self.cluster_id()?;
        let state = self.meta_state.borrow();
        Some(
            state
                .nodes
                .iter()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, addr)| (*id, addr.clone()))
                .collect(),
        )
    }

    fn channel(&self, addr: &str) -> Result<auth::PeerChannel> {
        self.peer(addr)
    }

    fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }
}

async fn reconcile_loop(cluster: std::sync::Weak<Cluster>, mut state: watch::Receiver<MetaState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        if let Err(e) = cluster.reconcile().await {
            warn!("reconcile: {e}");
        }
    }
}
