//! Membership orchestration, run on the meta leader: bootstrap, adding and removing nodes, and
//! moving shard replicas (announce the joining replica, have the shard leader add it as a learner
//! and swap the voters, record the final replica set).

use super::Cluster;
use super::meta::MetaCommand;
use super::service::{ADMIN_TIMEOUT, LEADER_WAIT, Services};
use super::shard::shard_group;
use crate::{Error, Result};
use openraft::{BasicNode, ChangeMembers};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use sus_proto::WIRE_FORMAT_VERSION;
use sus_proto::v1::admin_client::AdminClient;
use sus_proto::v1::*;
use sus_raft::NodeId;
use tonic::Request;
use tracing::{info, warn};

impl Services {
    pub(crate) async fn init(&self, req: InitRequest) -> Result<ClusterStatus> {
        let cluster = &self.cluster;
        if req.nodes.is_empty() || req.shards == 0 || req.replication == 0 {
            return Err(Error::InvalidArgument(
                "init needs at least one node, one shard and a replication factor of 1 or more"
                    .into(),
            ));
        }
        crate::access::password::check_strength(&req.admin_password)
            .map_err(|e| Error::InvalidArgument(format!("init: the admin user's password: {e}")))?;
        if !req.nodes.iter().any(|n| n.id == cluster.id) {
            return Err(Error::InvalidArgument(format!(
                "init must be sent to one of the nodes it names (this is node {})",
                cluster.id
            )));
        }
        if cluster.cluster_id().is_some() && !cluster.meta_state().shards.is_empty() {
            return Err(Error::AlreadyInitialised);
        }
        let cluster_id = format!(
            "sus-{:016x}",
            crc32fast::hash(
                format!("{:?}{:?}", req.nodes, std::time::SystemTime::now()).as_bytes()
            )
        );
        // Every listed node is admitted with the list: until its meta group has caught up, these
        // are the only nodes whose Raft calls it accepts.
        let listed: Vec<NodeId> = req.nodes.iter().map(|n| n.id).collect();
        for node in &req.nodes {
            if node.id == cluster.id {
                cluster.join(&cluster_id, node.id, &listed)?;
            } else {
                let channel = cluster
                    .peers
                    .channel(&node.addr)
                    .map_err(|e| Error::InvalidArgument(format!("node {}: {e}", node.id)))?;
                AdminClient::new(channel)
                    .join(JoinRequest {
                        format: WIRE_FORMAT_VERSION,
                        cluster_id: cluster_id.clone(),
                        node_id: node.id,
                        members: listed.clone(),
                    })
                    .await
                    .map_err(|e| {
                        Error::InvalidArgument(format!(
                            "node {} at {} did not join: {}",
                            node.id,
                            node.addr,
                            e.message()
                        ))
                    })?;
            }
        }
        let members: BTreeMap<NodeId, BasicNode> = req
            .nodes
            .iter()
            .map(|n| {
                (
                    n.id,
                    BasicNode {
                        addr: n.addr.clone(),
                    },
                )
            })
            .collect();
        if let Err(e) = cluster.meta.initialize(members).await {
            warn!("meta initialise: {e}");
        }
        // The initialiser campaigns first; make sure it leads before it writes the shard map.
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        while !cluster.is_leader(&cluster.meta) {
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Consensus("no meta leader elected".into()));
            }
            let _ = cluster.meta.trigger().elect().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cluster
            .propose_meta(&MetaCommand::Bootstrap {
                nodes: req.nodes.iter().map(|n| (n.id, n.addr.clone())).collect(),
                shards: req.shards,
                replication: req.replication,
                refdata: cluster.refdata.fingerprint().to_string(),
                secret: rand::random::<[u8; 32]>().to_vec(),
            })
            .await?;
        cluster
            .propose_meta(&MetaCommand::AddUser {
                name: "admin".into(),
                user: crate::access::User {
                    role: crate::access::Role::Admin,
                    org: String::new(),
                    max_tier: crate::access::Tier::Identifiable,
                    delegated: Vec::new(),
                    password: crate::access::password::PasswordHash::new(&req.admin_password),
                    generation: 0,
                    revoked: false,
                    created: chrono::Utc::now().timestamp(),
                },
            })
            .await?;
        info!(
            cluster = cluster_id,
            nodes = req.nodes.len(),
            shards = req.shards,
            "cluster initialised"
        );
        Ok(self.status_local())
    }

    pub(crate) async fn add_node(&self, req: AddNodeRequest) -> Result<ClusterStatus> {
        let cluster = &self.cluster;
        let node = req
            .node
            .ok_or_else(|| Error::InvalidArgument("add-node needs a node".into()))?;
        let state = cluster.meta_state();
        // Idempotent for a retried call: a member with the same address just continues.
        let resumed = state.nodes.get(&node.id) == Some(&node.addr);
        if !resumed && (state.nodes.contains_key(&node.id) || state.retired.contains(&node.id)) {
            return Err(Error::InvalidArgument(format!(
                "node id {} is or was a member: a node id is never reused (a wiped node rejoins \
                 under a new id)",
                node.id
            )));
        }
        let cluster_id = cluster
            .cluster_id()
            .ok_or_else(|| Error::InvalidArgument("this node is not in a cluster".into()))?;
        let channel = cluster
            .peers
            .channel(&node.addr)
            .map_err(|e| Error::InvalidArgument(format!("node {}: {e}", node.id)))?;
        // The joining node accepts these nodes (this one among them) until it has caught up.
        let mut members: Vec<NodeId> = cluster.gate().members().into_iter().collect();
        if !members.contains(&cluster.id) {
            members.push(cluster.id);
        }
        AdminClient::new(channel)
            .join(JoinRequest {
                format: WIRE_FORMAT_VERSION,
                cluster_id,
                node_id: node.id,
                members,
            })
            .await
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "node {} at {} did not join: {}",
                    node.id,
                    node.addr,
                    e.message()
                ))
            })?;
        let membership = cluster.meta.metrics().borrow().membership_config.clone();
        if !membership.membership().nodes().any(|(n, _)| *n == node.id) {
            cluster
                .meta
                .add_learner(
                    node.id,
                    BasicNode {
                        addr: node.addr.clone(),
                    },
                    true,
                )
                .await
                .map_err(|e| Error::Consensus(format!("meta add learner: {e}")))?;
        }
        let voters: BTreeSet<NodeId> = cluster
            .meta
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if voters.len() < 5 && !voters.contains(&node.id) {
            cluster
                .meta
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node.id])), true)
                .await
                .map_err(|e| Error::Consensus(format!("meta add voter: {e}")))?;
        }
        if !resumed {
            cluster
                .propose_meta(&MetaCommand::AddNode {
                    id: node.id,
                    addr: node.addr.clone(),
                })
                .await?;
        }
        info!(node = node.id, addr = %node.addr, "node added");
        if req.rebalance {
            self.rebalance_onto(node.id).await?;
        }
        Ok(self.status_local())
    }

    /// Moves replicas onto `target` until it holds its even share.
    pub(crate) async fn rebalance_onto(&self, target: NodeId) -> Result<()> {
        let state = self.cluster.meta_state();
        let total: usize = state.shards.iter().map(|s| s.replicas.len()).sum();
        let share = total.div_ceil(state.nodes.len().max(1));
        let mut load: BTreeMap<NodeId, usize> = state.nodes.keys().map(|n| (*n, 0)).collect();
        for s in &state.shards {
            for r in &s.replicas {
                *load.entry(*r).or_default() += 1;
            }
        }
        for (shard, info) in state.shards.iter().enumerate() {
            if load.get(&target).copied().unwrap_or(0) >= share {
                break;
            }
            if info.replicas.contains(&target) {
                continue;
            }
            let Some(from) = info
                .replicas
                .iter()
                .copied()
                .max_by_key(|n| (load.get(n).copied().unwrap_or(0), *n))
            else {
                continue;
            };
            self.move_replica(shard as u32, from, target).await?;
            *load.entry(from).or_default() -= 1;
            *load.entry(target).or_default() += 1;
        }
        Ok(())
    }

    /// Moves shard `shard`'s replica from `from` to `to` (`to` may be `None` to shrink).
    pub(crate) async fn move_replica(&self, shard: u32, from: NodeId, to: NodeId) -> Result<()> {
        let cluster = &self.cluster;
        let state = cluster.meta_state();
        let info = state
            .shards
            .get(shard as usize)
            .ok_or_else(|| Error::InvalidArgument(format!("no shard {shard}")))?;
        info!(shard, from, to, "moving replica");
        // 1. Announce the joining replica so that `to` opens the group and can receive.
        let mut joining = info.replicas.clone();
        if !joining.contains(&to) {
            joining.push(to);
        }
        cluster
            .propose_meta(&MetaCommand::SetReplicas {
                shard,
                replicas: joining,
            })
            .await?;
        // 2. The shard leader adds `to` as a learner (it catches up), then swaps the voters.
        let mut target: Vec<NodeId> = info
            .replicas
            .iter()
            .copied()
            .filter(|n| *n != from)
            .collect();
        target.push(to);
        self.change_replicas_via_leader(shard, &target).await?;
        // 3. Record the final replica set; `from` drops its copy when it sees it.
        cluster
            .propose_meta(&MetaCommand::SetReplicas {
                shard,
                replicas: target,
            })
            .await?;
        Ok(())
    }

    pub(crate) async fn change_replicas_via_leader(
        &self,
        shard: u32,
        replicas: &[NodeId],
    ) -> Result<()> {
        let state = self.cluster.meta_state();
        let addresses: Vec<NodeAddress> = replicas
            .iter()
            .map(|id| NodeAddress {
                id: *id,
                addr: state.nodes.get(id).cloned().unwrap_or_default(),
            })
            .collect();
        let request = ChangeShardReplicasRequest {
            format: WIRE_FORMAT_VERSION,
            shard,
            replicas: addresses,
        };
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        loop {
            // Views of who leads can be stale: offer the change to the likely leader first, then
            // to every current replica; only the real leader accepts it.
            let mut candidates: Vec<NodeId> = self
                .shard_leader_anywhere(shard)
                .await
                .into_iter()
                .collect();
            if let Some(info) = self.cluster.meta_state().shards.get(shard as usize) {
                candidates.extend(info.replicas.iter().copied());
            }
            candidates.dedup();
            let mut last = Error::Consensus(format!("shard {shard} has no leader"));
            for leader in candidates {
                let result = match self.admin_client(leader) {
                    Ok(mut client) => {
                        let mut r = Request::new(request.clone());
                        r.set_timeout(ADMIN_TIMEOUT);
                        client
                            .change_shard_replicas(r)
                            .await
                            .map(|_| ())
                            .map_err(Error::from)
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Consensus(last.into_message()));
            }
            warn!(shard, "change replicas: {last}; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The leader of a shard: from the local replica if hosted, else by asking its replicas.
    pub(crate) async fn shard_leader_anywhere(&self, shard: u32) -> Option<NodeId> {
        if let Some((raft, _)) = self.cluster.shard(shard)
            && let Some(l) = Cluster::wait_leader(&raft, LEADER_WAIT).await
        {
            return Some(l);
        }
        let state = self.cluster.meta_state();
        for node in state.shards.get(shard as usize)?.replicas.clone() {
            let Ok(mut client) = self.admin_client(node) else {
                continue;
            };
            if let Ok(status) = client
                .status(StatusRequest {
                    format: WIRE_FORMAT_VERSION,
                    linearizable: false,
                })
                .await
            {
                let group = shard_group(shard);
                if let Some(g) = status
                    .into_inner()
                    .groups
                    .into_iter()
                    .find(|g| g.group == group && g.leader != 0)
                {
                    return Some(g.leader);
                }
            }
        }
        None
    }

    pub(crate) async fn remove_node(&self, req: RemoveNodeRequest) -> Result<ClusterStatus> {
        let cluster = &self.cluster;
        let id = req.id;
        let state = cluster.meta_state();
        if !state.nodes.contains_key(&id) {
            return Err(Error::InvalidArgument(format!("node {id} is not a member")));
        }
        for (shard, info) in state.shards.iter().enumerate() {
            if !info.replicas.contains(&id) {
                continue;
            }
            let current = cluster.meta_state();
            let mut load: BTreeMap<NodeId, usize> = current
                .nodes
                .keys()
                .filter(|n| **n != id)
                .map(|n| (*n, 0))
                .collect();
            for s in &current.shards {
                for r in &s.replicas {
                    if let Some(l) = load.get_mut(r) {
                        *l += 1;
                    }
                }
            }
            let candidate = load
                .iter()
                .filter(|(n, _)| !info.replicas.contains(n))
                .min_by_key(|(n, l)| (**l, **n))
                .map(|(n, _)| *n);
            match candidate {
                Some(to) => self.move_replica(shard as u32, id, to).await?,
                None => {
                    // Too few nodes to keep the replication factor: shrink the shard.
                    let target: Vec<NodeId> =
                        info.replicas.iter().copied().filter(|n| *n != id).collect();
                    warn!(
                        shard,
                        node = id,
                        "no spare node: shard shrinks to {} replicas",
                        target.len()
                    );
                    self.change_replicas_via_leader(shard as u32, &target)
                        .await?;
                    cluster
                        .propose_meta(&MetaCommand::SetReplicas {
                            shard: shard as u32,
                            replicas: target,
                        })
                        .await?;
                }
            }
        }
        let membership = cluster.meta.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
        if voters.contains(&id) {
            cluster
                .meta
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| Error::Consensus(format!("meta remove voter: {e}")))?;
        } else if membership.membership().nodes().any(|(n, _)| *n == id) {
            cluster
                .meta
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(|e| Error::Consensus(format!("meta remove learner: {e}")))?;
        }
        cluster
            .propose_meta(&MetaCommand::RemoveNode { id })
            .await?;
        info!(node = id, "node removed");
        Ok(self.status_local())
    }
}

impl Cluster {
    /// Sets a shard's voters to `replicas`: learners first (they catch up, by snapshot if the
    /// log was purged), then one joint-consensus membership change. Must run on the shard leader.
    pub async fn change_shard_replicas(
        &self,
        shard: u32,
        replicas: &BTreeMap<NodeId, String>,
    ) -> Result<u64> {
        let (raft, _) = self
            .shard(shard)
            .ok_or_else(|| Error::InvalidArgument(format!("shard {shard} not hosted here")))?;
        let current: BTreeSet<NodeId> = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(n, _)| *n)
            .collect();
        for (id, addr) in replicas {
            if !current.contains(id) {
                info!(shard, node = id, "adding learner (catch-up)");
                raft.add_learner(*id, BasicNode { addr: addr.clone() }, true)
                    .await
                    .map_err(|e| Error::Consensus(format!("add learner {id}: {e}")))?;
            }
        }
        let voters: BTreeSet<NodeId> = replicas.keys().copied().collect();
        let response = raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
            .await
            .map_err(|e| Error::Consensus(format!("change membership: {e}")))?;
        Ok(response.log_id.index)
    }
}
