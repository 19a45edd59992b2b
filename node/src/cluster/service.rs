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
use super::{Cluster, command, shard_group};
use crate::ingest::{self, Prepared};
use crate::model::SubmissionMeta;
use crate::report::{Outcome, SubmissionReport};
use crate::{Error, Result};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use sus_proto::v1::admin_client::AdminClient;
use sus_proto::v1::admin_server::{self, AdminServer};
use sus_proto::v1::ingest_client::IngestClient;
use sus_proto::v1::ingest_server::{self, IngestServer};
use sus_proto::v1::*;
use sus_proto::{MAX_MESSAGE_BYTES, WIRE_FORMAT_VERSION};
use sus_raft::{META_GROUP, NodeId, Raft, Request as RaftCommand};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::info;

/// How long membership changes may take (a learner catching up by snapshot included).
pub(super) const ADMIN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a call waits for a group to elect a leader before answering `UNAVAILABLE`.
pub(super) const LEADER_WAIT: Duration = Duration::from_secs(10);

/// The node's public services.
#[derive(Clone)]
pub struct Services {
    pub(super) cluster: Arc<Cluster>,
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

    pub(super) fn channel(&self, node: NodeId) -> std::result::Result<PeerChannel, Status> {
        let addr = self
            .cluster
            .address_of(node)
            .ok_or_else(|| Status::unavailable(format!("no address known for node {node}")))?;
        self.cluster
            .peer(&addr)
            .map_err(|e| Status::unavailable(format!("node {node} at {addr}: {e}")))
    }

    fn ingest_client(
        &self,
        node: NodeId,
    ) -> std::result::Result<IngestClient<PeerChannel>, Status> {
        Ok(IngestClient::new(self.channel(node)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub(super) fn admin_client(
        &self,
        node: NodeId,
    ) -> std::result::Result<AdminClient<PeerChannel>, Status> {
        Ok(AdminClient::new(self.channel(node)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The leader of `raft`'s group, waiting for an election if needed.
    async fn leader(&self, raft: &Raft, what: &str) -> std::result::Result<NodeId, Status> {
        Cluster::wait_leader(raft, LEADER_WAIT)
            .await
            .ok_or_else(|| {
                Status::unavailable(format!("{what} has no leader (no quorum reachable); retry"))
            })
    }

    async fn submit_here(
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
    pub(super) async fn propose_shard(
        &self,
        raft: &Raft,
        command: &ShardCommand,
    ) -> std::result::Result<Vec<u8>, Status> {
        let bytes = command::encode(command).map_err(status)?;
        let write = raft.client_write(RaftCommand(bytes));
        match tokio::time::timeout(self.cluster.commit_timeout, write).await {
            Err(_) => Err(Status::deadline_exceeded(format!(
                "not committed within {:?}: the outcome is unknown; resend to learn it",
                self.cluster.commit_timeout
            ))),
            Ok(Err(e)) => Err(Status::unavailable(format!("not committed: {e}; retry"))),
            Ok(Ok(response)) => match response.data.0.split_first() {
                Some((&super::shard::REFUSAL, message)) => Err(Status::invalid_argument(
                    String::from_utf8_lossy(message).into_owned(),
                )),
                Some((&super::shard::CONFLICT, message)) => Err(Status::aborted(
                    String::from_utf8_lossy(message).into_owned(),
                )),
                _ => Ok(response.data.0),
            },
        }
    }

    /// This node's view of the cluster.
    pub(super) fn status_local(&self) -> ClusterStatus {
        let cluster = &self.cluster;
        let state = cluster.meta_state();
        let mut groups = vec![group_status(META_GROUP, &cluster.meta)];
        for shard in cluster.hosted_shards() {
            if let Some((raft, _)) = cluster.shard(shard) {
                groups.push(group_status(shard_group(shard), &raft));
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
    async fn on_meta_leader<T, F, Fut>(
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

fn group_status(group: u64, raft: &Raft) -> GroupStatus {
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
    }
}

/// Maps a node error to a gRPC status by what the caller must do.
pub(super) fn status(e: Error) -> Status {
    match e {
        Error::InvalidArgument(m) => Status::invalid_argument(m),
        Error::NotFound(m) => Status::not_found(m),
        Error::Unauthenticated(m) => Status::unauthenticated(m),
        Error::PermissionDenied(m) => Status::permission_denied(m),
        Error::RefData { .. } => Status::failed_precondition(e.to_string()),
        Error::Consensus(m) | Error::Busy(m) => Status::unavailable(m),
        Error::Throttled(m) => Status::resource_exhausted(m),
        Error::Conflict(m) => Status::aborted(m),
        other => Status::internal(other.to_string()),
    }
}

/// The credentials and message of a call the caller must be an administrator to make.
fn admin<T>(request: Request<T>, what: &str) -> std::result::Result<(MetadataMap, T), Status> {
    auth::caller(&request)?
        .require_admin(what)
        .map_err(status)?;
    let (metadata, _, message) = request.into_parts();
    Ok((metadata, message))
}

/// The message of an internal call only a node (its own token over its own certificate, checked
/// by the authenticator) may make.
fn node_only<T>(request: Request<T>, what: &str) -> std::result::Result<(MetadataMap, T), Status> {
    auth::caller(&request)?.require_node(what).map_err(status)?;
    let (metadata, _, message) = request.into_parts();
    Ok((metadata, message))
}

pub(super) fn check_format(format: u32) -> std::result::Result<(), Status> {
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

#[tonic::async_trait]
impl admin_server::Admin for Services {
    async fn init(
        &self,
        request: Request<InitRequest>,
    ) -> std::result::Result<Response<ClusterStatus>, Status> {
        // Before bootstrap there are no users and no key: init needs no token. With TLS, the
        // caller must present the operator's certificate (of the cluster's CA, naming no node).
        let certs = request.peer_certs();
        self.cluster
            .gate()
            .operator(certs.as_deref().map(Vec::as_slice), "Init")?;
        let req = request.into_inner();
        check_format(req.format)?;
        self.init(req).await.map(Response::new).map_err(status)
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> std::result::Result<Response<ClusterStatus>, Status> {
        let (credentials, req) = admin(request, "add nodes")?;
        check_format(req.format)?;
        let forwarded = req.clone();
        self.on_meta_leader(
            false,
            || self.add_node(req),
            async move |mut c: AdminClient<PeerChannel>| {
                let mut r = auth::forward(&credentials, forwarded);
                r.set_timeout(ADMIN_TIMEOUT);
                c.add_node(r).await
            },
        )
        .await
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> std::result::Result<Response<ClusterStatus>, Status> {
        let (credentials, req) = admin(request, "remove nodes")?;
        check_format(req.format)?;
        let forwarded = req;
        self.on_meta_leader(
            false,
            || self.remove_node(req),
            async move |mut c: AdminClient<PeerChannel>| {
                let mut r = auth::forward(&credentials, forwarded);
                r.set_timeout(ADMIN_TIMEOUT);
                c.remove_node(r).await
            },
        )
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> std::result::Result<Response<ClusterStatus>, Status> {
        let (credentials, req) = admin(request, "transfer leadership")?;
        check_format(req.format)?;
        if req.node != self.cluster.id {
            let mut client = self.admin_client(req.node)?;
            return client
                .transfer_leader(auth::forward(&credentials, req))
                .await;
        }
        let raft = if req.group == META_GROUP {
            self.cluster.meta.clone()
        } else {
            let shard = u32::try_from(req.group - 1)
                .map_err(|_| Status::invalid_argument("no such group"))?;
            self.cluster
                .shard(shard)
                .map(|(r, _)| r)
                .ok_or_else(|| Status::not_found(format!("group {} not hosted here", req.group)))?
        };
        // openraft 0.9 has no transfer call: this node, caught up, campaigns with a higher term.
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        while !self.cluster.is_leader(&raft) {
            if tokio::time::Instant::now() > deadline {
                return Err(Status::unavailable(
                    "could not take leadership (not caught up?)",
                ));
            }
            raft.trigger()
                .elect()
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            let mut rx = raft.metrics();
            let _ = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
        }
        Ok(Response::new(self.status_local()))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> std::result::Result<Response<ClusterStatus>, Status> {
        // Membership and health only; open until the node holds the cluster key (a node waiting
        // to be initialised or admitted has nothing else to show).
        if self.cluster.has_key() {
            auth::caller(&request)?;
        }
        let credentials = request.metadata().clone();
        let req = request.into_inner();
        check_format(req.format)?;
        if req.linearizable {
            // Read index through the meta leader: the shard map returned is at least as new as
            // every write acknowledged before this call.
            if let Err(e) = self.cluster.meta.ensure_linearizable().await {
                let leader = e.forward_to_leader::<BasicNode>().and_then(|f| f.leader_id);
                return match leader {
                    Some(l) if l != self.cluster.id => {
                        self.admin_client(l)?
                            .status(auth::forward(&credentials, req))
                            .await
                    }
                    _ => Err(Status::unavailable(format!("linearizable read: {e}"))),
                };
            }
        }
        Ok(Response::new(self.status_local()))
    }

    async fn change_shard_replicas(
        &self,
        request: Request<ChangeShardReplicasRequest>,
    ) -> std::result::Result<Response<ChangeShardReplicasReply>, Status> {
        let (_, req) = node_only(request, "change shard replicas (an internal call)")?;
        check_format(req.format)?;
        let (raft, _) = self
            .cluster
            .shard(req.shard)
            .ok_or_else(|| Status::not_found(format!("shard {} not hosted here", req.shard)))?;
        if !self.cluster.is_leader(&raft) {
            return Err(Status::failed_precondition(format!(
                "node {} does not lead shard {}",
                self.cluster.id, req.shard
            )));
        }
        let replicas: BTreeMap<NodeId, String> =
            req.replicas.into_iter().map(|n| (n.id, n.addr)).collect();
        let index = self
            .cluster
            .change_shard_replicas(req.shard, &replicas)
            .await
            .map_err(status)?;
        Ok(Response::new(ChangeShardReplicasReply { log_index: index }))
    }

    async fn set_ref_data(
        &self,
        request: Request<SetRefDataRequest>,
    ) -> std::result::Result<Response<ClusterStatus>, Status> {
        let (credentials, mut req) = admin(request, "set the reference data version")?;
        check_format(req.format)?;
        if req.version.is_empty() {
            req.version = self.cluster.refdata.fingerprint().to_string();
        }
        let forwarded = req.clone();
        let version = req.version.clone();
        self.on_meta_leader(
            false,
            || async {
                self.cluster
                    .propose_meta(&MetaCommand::SetRefData { version })
                    .await?;
                info!(version = %req.version, "reference data version set");
                Ok(self.status_local())
            },
            async move |mut c: AdminClient<PeerChannel>| {
                c.set_ref_data(auth::forward(&credentials, forwarded)).await
            },
        )
        .await
    }

    async fn join(
        &self,
        request: Request<JoinRequest>,
    ) -> std::result::Result<Response<JoinReply>, Status> {
        // A joining node holds no key yet: with TLS, only a node certificate may ask. A node
        // already admitted takes it only from a current member; a fresh one knows no members
        // yet, and takes it from a node that names itself among the members it sends.
        let certs = request.peer_certs();
        let gate = self.cluster.gate();
        let admitting = if self.cluster.cluster_id().is_some() {
            gate.member(certs.as_deref().map(Vec::as_slice), "Join")?
        } else {
            gate.node_of(certs.as_deref().map(Vec::as_slice), "Join")?
        };
        let req = request.into_inner();
        check_format(req.format)?;
        if let Some(admitting) = admitting
            && !req.members.contains(&admitting)
        {
            return Err(Status::permission_denied(format!(
                "Join refused: node {admitting} admits this node but is not among the members it \
                 names"
            )));
        }
        self.cluster
            .join(&req.cluster_id, req.node_id, &req.members)
            .map_err(status)?;
        Ok(Response::new(JoinReply {}))
    }

    async fn shard_content(
        &self,
        request: Request<ShardContentRequest>,
    ) -> std::result::Result<Response<ShardContentReply>, Status> {
        let (_, req) = admin(request, "read replica digests")?;
        check_format(req.format)?;
        let (raft, replica) = self
            .cluster
            .shard(req.shard)
            .ok_or_else(|| Status::not_found(format!("shard {} not hosted here", req.shard)))?;
        if req.linearizable {
            raft.ensure_linearizable()
                .await
                .map_err(|e| Status::failed_precondition(format!("linearizable read: {e}")))?;
        }
        let store = replica.store();
        let digest = tokio::task::spawn_blocking(move || store.content_digest())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(ShardContentReply {
            shard: req.shard,
            last_applied: replica.last_applied(),
            version: digest.version,
            checksum: digest.checksum,
            live_records: digest.live_records,
            price_pence: digest.price_pence,
            submissions: digest.submissions,
        }))
    }

    async fn create_freeze(
        &self,
        request: Request<CreateFreezeRequest>,
    ) -> std::result::Result<Response<FreezePoint>, Status> {
        let (credentials, req) = admin(request, "take freeze points")?;
        check_format(req.format)?;
        let forwarded = req.clone();
        self.on_meta_leader(
            false,
            || self.create_freeze_here(req.name),
            async move |mut c: AdminClient<PeerChannel>| {
                c.create_freeze(auth::forward(&credentials, forwarded))
                    .await
            },
        )
        .await
    }

    async fn list_freezes(
        &self,
        request: Request<ListFreezesRequest>,
    ) -> std::result::Result<Response<ListFreezesReply>, Status> {
        auth::caller(&request)?;
        check_format(request.into_inner().format)?;
        let state = self.cluster.meta_state();
        let freezes = state
            .freezes
            .iter()
            .map(|(name, r)| super::freeze::freeze_point(name, r))
            .collect();
        Ok(Response::new(ListFreezesReply { freezes }))
    }

    async fn shard_freeze(
        &self,
        request: Request<ShardFreezeRequest>,
    ) -> std::result::Result<Response<ShardFreezeReply>, Status> {
        let (_, req) = node_only(request, "freeze a shard (an internal call)")?;
        check_format(req.format)?;
        let answer = self
            .on_shard_leader(req.shard, ShardCommand::Freeze { name: req.name })
            .await?;
        let version = <[u8; 8]>::try_from(answer.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| Status::internal("malformed freeze answer"))?;
        Ok(Response::new(ShardFreezeReply { version }))
    }

    async fn compact(
        &self,
        request: Request<CompactRequest>,
    ) -> std::result::Result<Response<CompactReply>, Status> {
        let (_, req) = admin(request, "compact shards")?;
        check_format(req.format)?;
        self.compact_shards(req.shards, req.target_rows, req.forwarded)
            .await
            .map(Response::new)
    }

    async fn add_user(
        &self,
        request: Request<AddUserRequest>,
    ) -> std::result::Result<Response<UserInfo>, Status> {
        let (credentials, req) = admin(request, "add users")?;
        check_format(req.format)?;
        let forwarded = req.clone();
        self.on_meta_leader(
            false,
            || self.add_user_here(req),
            async move |mut c: AdminClient<PeerChannel>| {
                c.add_user(auth::forward(&credentials, forwarded)).await
            },
        )
        .await
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> std::result::Result<Response<ListUsersReply>, Status> {
        let (_, req) = admin(request, "list users")?;
        check_format(req.format)?;
        let state = self.cluster.meta_state.borrow();
        let users = state.users.iter().map(|(n, u)| u.info(n)).collect();
        Ok(Response::new(ListUsersReply { users }))
    }

    async fn revoke_user(
        &self,
        request: Request<RevokeUserRequest>,
    ) -> std::result::Result<Response<UserInfo>, Status> {
        let (credentials, req) = admin(request, "revoke users")?;
        check_format(req.format)?;
        let forwarded = req.clone();
        self.on_meta_leader(
            false,
            || async {
                self.cluster
                    .propose_meta(&MetaCommand::RevokeUser {
                        name: req.name.clone(),
                    })
                    .await?;
                info!(user = %req.name, "user revoked");
                let state = self.cluster.meta_state.borrow();
                let user = state
                    .users
                    .get(&req.name)
                    .ok_or_else(|| Error::NotFound(format!("user {}", req.name)))?;
                Ok(user.info(&req.name))
            },
            async move |mut c: AdminClient<PeerChannel>| {
                c.revoke_user(auth::forward(&credentials, forwarded)).await
            },
        )
        .await
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> std::result::Result<Response<LoginReply>, Status> {
        let source = request.remote_addr().map(|a| a.ip());
        let req = request.into_inner();
        check_format(req.format)?;
        self.login_here(&req.user, &req.password, &req.purpose, req.ttl_secs, source)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn audit_log(
        &self,
        request: Request<AuditLogRequest>,
    ) -> std::result::Result<Response<AuditLogReply>, Status> {
        auth::caller(&request)?
            .require_audit_reader()
            .map_err(status)?;
        let req = request.into_inner();
        check_format(req.format)?;
        let (entries, total) = self.audit_entries(req.from, req.limit);
        Ok(Response::new(AuditLogReply { entries, total }))
    }

    async fn append_audit(
        &self,
        request: Request<AppendAuditRequest>,
    ) -> std::result::Result<Response<AppendAuditReply>, Status> {
        auth::caller(&request)?
            .require_node("append to the audit log")
            .map_err(status)?;
        let req = request.into_inner();
        check_format(req.format)?;
        let records = super::audit::parse_records(&req.records_json).map_err(status)?;
        if !self.cluster.is_leader(&self.cluster.meta) {
            return Err(Status::unavailable("not the meta leader; retry"));
        }
        let first_index = self.cluster.meta_state.borrow().audit.len() as u64;
        self.cluster
            .propose_meta(&MetaCommand::Audit { records })
            .await
            .map_err(status)?;
        Ok(Response::new(AppendAuditReply { first_index }))
    }
}
