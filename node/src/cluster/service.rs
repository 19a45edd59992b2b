//! The node's gRPC services: `Ingest` (submissions) and `Admin` (bootstrap, membership, status,
//! replica content), over a [`Cluster`].
//!
//! Writes reach the leader of their group: a node that does not lead forwards the call once (a
//! forwarded call is never forwarded again), so clients may call any node. A write that is not
//! committed within the commit timeout is answered `DEADLINE_EXCEEDED`: its outcome is unknown
//! and the client resends with the same submission id, which is answered with the original
//! outcome if it did commit. A write is never answered "accepted" before its commit.

use super::auth::{self, PeerChannel};
use super::command::ShardCommand;
use super::meta::MetaCommand;
use super::shard::shard_group;
use super::{Cluster, command};
use crate::error::status;
use crate::ingest::{self, Prepared};
use crate::model::SubmissionMeta;
use crate::report::{Outcome, SubmissionReport};
use crate::{Error, Result};
use std::sync::Arc;
use std::time::Duration;
use sus_proto::audit::Record;
use sus_proto::v1::admin_client::AdminClient;
use sus_proto::v1::admin_server::AdminServer;
use sus_proto::v1::ingest_client::IngestClient;
use sus_proto::v1::ingest_server::{self, IngestServer};
use sus_proto::v1::*;
use sus_proto::{MAX_MESSAGE_BYTES, WIRE_FORMAT_VERSION};
use sus_raft::{META_GROUP, NodeId, Raft, Request as RaftCommand};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

/// How long membership changes may take (a learner catching up by snapshot included).
pub(crate) const ADMIN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a call waits for a group to elect a leader before answering `UNAVAILABLE`.
pub(crate) const LEADER_WAIT: Duration = Duration::from_secs(10);

/// The node's public services.
#[derive(Clone)]
pub struct Services {
    pub(crate) cluster: Arc<Cluster>,
}

impl Services {
    pub fn new(cluster: Arc<Cluster>) -> Services {
        Services { cluster }
    }

    /// The `Ingest` service with explicit message limits (requests: a submission file).
    pub fn ingest(&self) -> super::auth::Authenticated<IngestServer<Services>> {
        super::auth::Authenticated::new(
            IngestServer::new(self.clone())
                .max_decoding_message_size(self.cluster.limits.max_ingest_request_bytes())
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            self.cluster.authenticator(),
        )
    }

    /// The `Admin` service with explicit message limits (requests: `max_request_mib`).
    pub fn admin(&self) -> super::auth::Authenticated<AdminServer<Services>> {
        super::auth::Authenticated::new(
            AdminServer::new(self.clone())
                .max_decoding_message_size(self.cluster.limits.max_request_bytes)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            self.cluster.authenticator(),
        )
    }

    pub(crate) fn channel(&self, node: NodeId) -> std::result::Result<PeerChannel, Status> {
        let addr = self
            .cluster
            .address_of(node)
            .ok_or_else(|| Status::unavailable(format!("no address known for node {node}")))?;
        self.cluster
            .peer(&addr)
            .map_err(|e| Status::unavailable(format!("node {node} at {addr}: {e}")))
    }

    pub(crate) fn ingest_client(
        &self,
        node: NodeId,
    ) -> std::result::Result<IngestClient<PeerChannel>, Status> {
        Ok(IngestClient::new(self.channel(node)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub(crate) fn admin_client(
        &self,
        node: NodeId,
    ) -> std::result::Result<AdminClient<PeerChannel>, Status> {
        Ok(AdminClient::new(self.channel(node)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The leader of `raft`'s group, waiting for an election if needed.
    pub(crate) async fn leader(
        &self,
        raft: &Raft,
        what: &str,
    ) -> std::result::Result<NodeId, Status> {
        Cluster::wait_leader(raft, LEADER_WAIT)
            .await
            .ok_or_else(|| {
                Status::unavailable(format!("{what} has no leader (no quorum reachable); retry"))
            })
    }

    pub(crate) async fn submit_here(
        &self,
        raft: &Raft,
        replica: &super::shard::ShardReplica,
        meta: SubmissionMeta,
        file: String,
        content: bytes::Bytes,
        mut audit: sus_proto::audit::Record,
    ) -> std::result::Result<SubmissionReport, Status> {
        let store = replica.store();
        let refdata = self.cluster.refdata.clone();
        // The submission's records, decoded, must fit the node's budget beside the others being
        // prepared: its share is reserved (the most its file can decode to) until it is prepared.
        let limits = self.cluster.limits.submission.clone();
        let reservation = self
            .cluster
            .decode_budget
            .reserve(
                ingest::parse::decoded_bound(&content, &limits),
                self.cluster.commit_timeout,
            )
            .await
            .map_err(status)?;
        let prepared = tokio::task::spawn_blocking(move || {
            let prepared = ingest::prepare(&refdata, &store, &meta, &file, &content, &limits);
            drop((content, reservation));
            prepared
        })
        .await
        .map_err(|e| Status::internal(format!("prepare task: {e}")))?
        .map_err(status)?;
        let command = match prepared {
            Prepared::Resent(report) => {
                audit.rows = report.records;
                audit.detail += &format!(", resent: {:?}", report.outcome);
                self.audit(vec![audit]).await?;
                self.cluster.metrics.submission(&report, None);
                return Ok(*report);
            }
            Prepared::Commit(command) => command,
        };
        let prepared = match command.as_ref() {
            ingest::Command::Reject { report, .. } | ingest::Command::Apply { report, .. } => {
                report
            }
        };
        audit.rows = prepared.records;
        audit.detail += &format!(", prepared: {:?}", prepared.outcome);
        if crate::broken::broken("ack-before-commit") {
            let (report, this, raft) = (prepared.clone(), self.clone(), raft.clone());
            let command = ShardCommand::Submission(command);
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                let _ = this.propose_shard(&raft, &command).await;
            });
            return Ok(report);
        }
        // The audit write and the shard's commit run side by side: one round of latency, not two.
        let command = ShardCommand::Submission(command);
        let started = std::time::Instant::now();
        let (reply, ()) =
            tokio::try_join!(self.propose_shard(raft, &command), self.audit(vec![audit]))
                .inspect_err(|_| self.cluster.metrics.submission_failed())?;
        let took = started.elapsed();
        let report = SubmissionReport::from_json(&reply)
            .map_err(|e| Status::internal(format!("undecodable report: {e}")))?;
        self.cluster.metrics.submission(&report, Some(took));
        Ok(report)
    }

    /// Proposes a command to a shard this node leads and returns the state machine's answer
    /// once committed and applied here. A deterministic refusal is `INVALID_ARGUMENT`.
    pub(crate) async fn propose_shard(
        &self,
        raft: &Raft,
        command: &ShardCommand,
    ) -> std::result::Result<Vec<u8>, Status> {
        let bytes = command::encode(command).map_err(status)?;
        let write = raft.client_write(RaftCommand(bytes));
        match tokio::time::timeout(self.cluster.commit_timeout, write).await {
            Err(_) => Err(status(Error::OutcomeUnknown(format!(
                "not committed within {:?}: the outcome is unknown; resend to learn it",
                self.cluster.commit_timeout
            )))),
            Ok(Err(e)) => Err(status(Error::Consensus(format!(
                "not committed: {e}; retry"
            )))),
            Ok(Ok(response)) => match response.data.0.split_first() {
                Some((&super::apply::REFUSAL, message)) => Err(status(Error::Refused(
                    String::from_utf8_lossy(message).into_owned(),
                ))),
                Some((&super::apply::CONFLICT, message)) => Err(status(Error::Conflict(
                    String::from_utf8_lossy(message).into_owned(),
                ))),
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

    /// Runs `f` on the meta leader: here if this node leads, else by forwarding `forward` once.
    pub(crate) async fn on_meta_leader<T, F, Fut>(
        &self,
        forwarded: bool,
        here: F,
        forward: impl AsyncFnOnce(AdminClient<PeerChannel>) -> std::result::Result<Response<T>, Status>,
    ) -> std::result::Result<Response<T>, Status>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let leader = self.leader(&self.cluster.meta, "the meta group").await?;
        if leader == self.cluster.id {
            return here().await.map(Response::new).map_err(status);
        }
        if forwarded {
            return Err(Status::unavailable("meta leadership moved; retry"));
        }
        forward(self.admin_client(leader)?).await
    }
}

impl Services {
    /// Appends audit records through the meta leader; returns once they are committed.
    pub(crate) async fn audit(
        &self,
        records: Vec<Record>,
    ) -> std::result::Result<(), tonic::Status> {
        if records.is_empty() {
            return Ok(());
        }
        let leader = Cluster::wait_leader(&self.cluster.meta, LEADER_WAIT)
            .await
            .ok_or_else(|| tonic::Status::unavailable("audit: the meta group has no leader"))?;
        if leader == self.cluster.id {
            return self
                .cluster
                .propose_meta(&MetaCommand::Audit { records })
                .await
                .map_err(|e| status(Error::Consensus(format!("audit: {e}"))));
        }
        let request = AppendAuditRequest {
            format: WIRE_FORMAT_VERSION,
            records_json: records.iter().map(Record::to_json).collect(),
        };
        self.admin_client(leader)?
            .append_audit(Request::new(request))
            .await
            .map(|_| ())
            .map_err(|s| tonic::Status::unavailable(format!("audit: {}", s.message())))
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

/// The credentials and message of a call the caller must be an administrator to make.
pub(crate) fn admin<T>(
    request: Request<T>,
    what: &str,
) -> std::result::Result<(MetadataMap, T), Status> {
    auth::caller(&request)?
        .require_admin(what)
        .map_err(status)?;
    let (metadata, _, message) = request.into_parts();
    Ok((metadata, message))
}

/// The message of an internal call only a node (its own token over its own certificate, checked
/// by the authenticator) may make.
pub(crate) fn node_only<T>(
    request: Request<T>,
    what: &str,
) -> std::result::Result<(MetadataMap, T), Status> {
    auth::caller(&request)?.require_node(what).map_err(status)?;
    let (metadata, _, message) = request.into_parts();
    Ok((metadata, message))
}

pub(crate) fn check_format(format: u32) -> std::result::Result<(), Status> {
    if format != WIRE_FORMAT_VERSION {
        return Err(Status::failed_precondition(format!(
            "wire format {format} not supported (this node speaks {WIRE_FORMAT_VERSION})"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl ingest_server::Ingest for Services {
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> std::result::Result<Response<SubmitReply>, Status> {
        let caller = auth::caller(&request)?;
        let credentials = request.metadata().clone();
        let req = request.into_inner();
        check_format(req.format)?;
        if self.cluster.cluster_id().is_none() {
            return Err(Status::failed_precondition(
                "this node is not part of a cluster yet",
            ));
        }
        let meta: SubmissionMeta = serde_json::from_str(&req.envelope_json).map_err(|e| {
            Status::invalid_argument(format!("{}: invalid envelope: {e}", req.file_name))
        })?;
        caller.require_submit(&meta.sender).map_err(status)?;
        let state = self.cluster.meta_state();
        if state.shards.is_empty() {
            return Err(Status::unavailable("the cluster has no shard map yet"));
        }
        let shard = self
            .cluster
            .routing
            .shard_of(&meta.sender, state.shards.len() as u32);
        let hosted = self.cluster.shard(shard);
        let leader = match &hosted {
            Some((raft, _)) => self.leader(raft, &format!("shard {shard}")).await?,
            None => {
                // Not hosted here: ask a replica's view via the shard map.
                self.shard_leader_anywhere(shard).await.ok_or_else(|| {
                    Status::unavailable(format!("shard {shard} has no leader; retry"))
                })?
            }
        };
        if leader != self.cluster.id {
            if req.forwarded {
                return Err(Status::unavailable(format!(
                    "shard {shard} leadership moved to node {leader}; retry"
                )));
            }
            let mut forward = req.clone();
            forward.forwarded = true;
            let mut r = auth::forward(&credentials, forward);
            r.set_timeout(self.cluster.commit_timeout + LEADER_WAIT);
            return self.ingest_client(leader)?.submit(r).await;
        }
        let Some((raft, replica)) = hosted else {
            return Err(Status::unavailable("shard moved; retry"));
        };
        // Derivation happens once, here: price only with the cluster's reference data.
        let mine = self.cluster.refdata.fingerprint();
        if state.refdata != mine {
            return Err(Status::failed_precondition(format!(
                "node {} leads shard {shard} but its reference data (version {mine}) is not the \
                 cluster's (version {}); install the cluster's reference data on it, or make its \
                 version the cluster's with `sus cluster set-refdata`",
                self.cluster.id, state.refdata
            )));
        }
        // Every submission is accounted for: its audit entry is committed alongside it, and the
        // report is returned only when both are (a retry after a failed audit write gets the same
        // report and audits it then).
        let mut record = super::audit::record(&caller, self.cluster.id, "submit");
        record.dataset = meta.dataset.name().to_string();
        record.detail = format!(
            "file {}, sender {}, submission {}, shard {shard}",
            req.file_name, meta.sender, meta.submission_id
        );
        // A conflict means another change to the same spells was applied between this one's
        // derivation and its turn in the log: nothing was stored, so derive it again.
        // The first attempt runs beside others; a retry runs alone (no other derivation of this
        // shard is in flight), so it cannot conflict again.
        let mut alone = false;
        let report = loop {
            let (_shared, _exclusive) = if alone {
                (None, Some(replica.derivations.write().await))
            } else {
                (Some(replica.derivations.read().await), None)
            };
            let result = self
                .submit_here(
                    &raft,
                    &replica,
                    meta.clone(),
                    req.file_name.clone(),
                    req.content.clone(),
                    record.clone(),
                )
                .await;
            match result {
                Err(s) if s.code() == tonic::Code::Aborted && !alone => {
                    tracing::info!(submission = %meta.submission_id, "deriving again: {}", s.message());
                    alone = true;
                }
                other => break other?,
            }
        };
        Ok(Response::new(SubmitReply {
            accepted: report.outcome == Outcome::Accepted,
            report_json: String::from_utf8_lossy(&report.to_json()).into_owned(),
            shard,
            leader: self.cluster.id,
        }))
    }
}
