//! The `Admin` service: bootstrap, membership, status, reference data, freeze points, compaction,
//! users; each call checks its caller, then runs on the meta leader (forwarded once) or here.

use super::call::{admin, check_format, node_only};
use crate::cluster::auth::{self, Authenticated, PeerChannel};
use crate::cluster::command::ShardCommand;
use crate::cluster::meta::MetaCommand;
use crate::cluster::service::*;
use crate::error::status;
use crate::{Error, Result};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::time::Duration;
use sus_proto::MAX_MESSAGE_BYTES;
use sus_proto::v1::admin_client::AdminClient;
use sus_proto::v1::admin_server::{self, AdminServer};
use sus_proto::v1::*;
use sus_raft::{META_GROUP, NodeId};
use tonic::{Request, Response, Status};
use tracing::info;

/// The service with explicit message limits (requests: `max_request_mib`).
pub(super) fn service(services: &Services) -> Authenticated<AdminServer<Services>> {
    super::call::authenticated(
        services,
        AdminServer::new(services.clone())
            .max_decoding_message_size(services.cluster.limits.max_request_bytes)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

impl Services {
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
            return Err(Error::Consensus("meta leadership moved; retry".into()).into());
        }
        forward(self.admin_client(leader)?).await
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
            .map(|(name, r)| crate::cluster::freeze::freeze_point(name, r))
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
        let reply = self
            .compact_shards(req.shards, req.target_rows, req.forwarded)
            .await?;
        Ok(Response::new(reply))
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
        let records = crate::cluster::audit::parse_records(&req.records_json).map_err(status)?;
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
