//! [`Services`]: the node's use cases over a [`Cluster`], shared by the gRPC and Flight servers
//! (`crate::server`): here the channels to peers, leader waits, shard proposals, the audit
//! write and this node's status; the use cases themselves in `submit`, `membership`, `freeze`
//! and `reads`.
//!
//! Writes reach the leader of their group: a node that does not lead forwards the call once (a
//! forwarded call is never forwarded again), so clients may call any node.

use super::audit_commit::AuditQueue;
use super::auth::PeerChannel;
use super::command::ShardCommand;
use super::shard::shard_group;
use super::{Cluster, command};
use crate::{Error, Result};
use std::sync::Arc;
use sus_proto::MAX_MESSAGE_BYTES;
use sus_proto::audit::Record;
use sus_proto::v1::admin_client::AdminClient;
use sus_proto::v1::ingest_client::IngestClient;
use sus_proto::v1::*;
use sus_raft::{META_GROUP, NodeId, Raft, Request as RaftCommand};

pub(crate) use super::config::{ADMIN_TIMEOUT, LEADER_WAIT};

/// The node's public services.
#[derive(Clone)]
pub struct Services {
    pub(crate) cluster: Arc<Cluster>,
    audit: AuditQueue,
}

impl Services {
    /// The services of `cluster`, with its audit queue's committing task (on the current runtime).
    pub fn new(cluster: Arc<Cluster>) -> Services {
        let audit = AuditQueue::start(&cluster);
        Services { cluster, audit }
    }

    pub(crate) fn channel(&self, node: NodeId) -> Result<PeerChannel> {
        self.cluster.peer_of(node)
    }

    pub(crate) fn ingest_client(&self, node: NodeId) -> Result<IngestClient<PeerChannel>> {
        Ok(IngestClient::new(self.channel(node)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub(crate) fn admin_client(&self, node: NodeId) -> Result<AdminClient<PeerChannel>> {
        Ok(AdminClient::new(self.channel(node)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The leader of `raft`'s group, waiting for an election if needed.
    pub(crate) async fn leader(&self, raft: &Raft, what: &str) -> Result<NodeId> {
        Cluster::wait_leader(raft, LEADER_WAIT)
            .await
            .ok_or_else(|| {
                Error::Consensus(format!("{what} has no leader (no quorum reachable); retry"))
            })
    }

    /// Proposes a command to a shard this node leads and returns the state machine's answer
    /// once committed and applied here. A deterministic refusal is [`Error::Refused`].
    pub(crate) async fn propose_shard(
        &self,
        raft: &Raft,
        command: &ShardCommand,
    ) -> Result<Vec<u8>> {
        let bytes = command::encode(command)?;
        let write = raft.client_write(RaftCommand(bytes));
        match tokio::time::timeout(self.cluster.commit_timeout, write).await {
            Err(_) => Err(Error::OutcomeUnknown(format!(
                "not committed within {:?}: the outcome is unknown; resend to learn it",
                self.cluster.commit_timeout
            ))),
            Ok(Err(e)) => Err(Error::Consensus(format!("not committed: {e}; retry"))),
            Ok(Ok(response)) => match response.data.0.split_first() {
                Some((&super::apply::REFUSAL, message)) => Err(Error::Refused(
                    String::from_utf8_lossy(message).into_owned(),
                )),
                Some((&super::apply::CONFLICT, message)) => Err(Error::Conflict(
                    String::from_utf8_lossy(message).into_owned(),
                )),
                _ => Ok(response.data.0),
            },
        }
    }

    /// This node's view of the cluster.
    pub(crate) fn status_local(&self) -> ClusterStatus {
        let cluster = &self.cluster;
        let state = cluster.meta_state();
        let mut groups = vec![group_status(META_GROUP, &cluster.meta, None)];
        for shard in cluster.hosted_shards() {
            if let Some((raft, replica)) = cluster.shard(shard) {
                groups.push(group_status(shard_group(shard), &raft, replica.stopped()));
            }
        }
        ClusterStatus {
            node: cluster.id,
            meta_leader: cluster.meta.metrics().borrow().current_leader.unwrap_or(0),
            nodes: state
                .nodes
                .iter()
                .map(|(id, addr)| NodeAddress {
                    id: *id,
                    addr: addr.clone(),
                })
                .collect(),
            shards: state
                .shards
                .iter()
                .enumerate()
                .map(|(s, info)| ShardReplicas {
                    shard: s as u32,
                    replicas: info.replicas.clone(),
                })
                .collect(),
            groups,
            refdata: state.refdata,
            node_refdata: cluster.refdata.fingerprint().to_string(),
        }
    }
}

impl Services {
    /// Appends audit records through the meta leader, in an entry shared with other calls'
    /// records (`audit_commit`); returns once they are committed.
    pub(crate) async fn audit(&self, records: Vec<Record>) -> Result<()> {
        self.audit.commit(records).await
    }

    /// Entries `from..from+limit` (0: to the end) of this node's copy of the log.
    pub(crate) fn audit_entries(&self, from: u64, limit: u64) -> (Vec<AuditEntry>, u64) {
        let state = self.cluster.meta_state.borrow();
        let total = state.audit.len() as u64;
        let take = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        let entries = state
            .audit
            .iter()
            .enumerate()
            .skip(from as usize)
            .take(take)
            .map(|(i, s)| AuditEntry {
                index: i as u64,
                record_json: s.record.to_json(),
                hash: s.hash.to_vec(),
            })
            .collect();
        (entries, total)
    }
}

pub(crate) fn group_status(group: u64, raft: &Raft, stopped: Option<String>) -> GroupStatus {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    GroupStatus {
        group,
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
        leader: m.current_leader.unwrap_or(0),
        last_applied: m.last_applied.map_or(0, |l| l.index),
        last_log: m.last_log_index.unwrap_or(0),
        term: m.current_term,
        snapshot_index: m.snapshot.map_or(0, |l| l.index),
        stopped: stopped.unwrap_or_default(),
    }
}
