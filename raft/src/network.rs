//! The Raft network over gRPC: many groups, one connection per peer.
//!
//! ```text
//!  group 3's Raft ──► Connection{group: 3, target} ─┐
//!  group 0's Raft ──► Connection{group: 0, target} ─┼─► Peers: one tonic Channel (HTTP/2) per address
//!                                                   │        │
//!  peer node: RaftService ◄─────────────────────────┘        ▼
//!     └─► Registry[group] ─► that group's Raft::append_entries / vote / install_snapshot
//! ```
//!
//! Payloads are openraft's own request and response types, bincode-encoded, so the wire carries
//! exactly what openraft produced; the reply is `Result<response, RaftError>` so that a remote
//! Raft error reaches the caller's openraft as a `RemoteError`. A call for a group the peer does
//! not host (yet) is answered `NOT_FOUND` and reported to openraft as unreachable, which backs off.
//!
//! Who may call is the node's decision, not this crate's: the server asks a [`Gate`] (given the
//! caller's verified certificates) before reading a message, and then refuses any message whose
//! sender (the leader or candidate in its vote) is not the node the gate named. A sender refused
//! by a peer backs off as from an unreachable one.

use crate::{GroupId, NodeId, Raft, TypeConfig};
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use sus_proto::v1::raft_client::RaftClient;
use sus_proto::v1::raft_server;
use sus_proto::v1::{RaftReply, RaftRequest};
use sus_proto::{MAX_MESSAGE_BYTES, WIRE_FORMAT_VERSION};
use tonic::transport::{CertificateDer, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

/// How long a connection attempt to a peer may take before the RPC counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One lazily connected gRPC channel per peer address, shared by every group and every service.
#[derive(Debug, Default)]
pub struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
    /// TLS towards peers (mutual: the config carries this node's certificate); `None`: plaintext.
    tls: Option<ClientTlsConfig>,
}

impl Peers {
    /// A new, empty set of peer channels.
    pub fn new() -> Arc<Peers> {
        Arc::new(Peers::default())
    }

    /// A new set of peer channels that speak TLS with `tls`.
    pub fn with_tls(tls: ClientTlsConfig) -> Arc<Peers> {
        Arc::new(Peers {
            channels: Mutex::default(),
            tls: Some(tls),
        })
    }

    /// The channel to `addr` (`host:port`), created on first use; it reconnects by itself.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Creates the connections of one group's Raft to its peers.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    group: GroupId,
    peers: Arc<Peers>,
}

impl NetworkFactory {
    /// The network of `group`, sharing `peers`' channels with every other group.
    pub fn new(group: GroupId, peers: Arc<Peers>) -> NetworkFactory {
        NetworkFactory { group, peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            group: self.group,
            target,
            client: self.peers.channel(&node.addr).map(raft_client),
            inflight: None,
        }
    }
}

fn raft_client(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// One group's view of one peer.
pub struct Connection {
    group: GroupId,
    target: NodeId,
    /// An invalid peer address is kept as its error and reported on every call.
    client: Result<RaftClient<Channel>, tonic::transport::Error>,
    /// The AppendEntries with entries still on its way (see `append_entries`).
    inflight: Option<Inflight>,
}

type AppendResult =
    Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>>;

/// What identifies an AppendEntries: the leader's vote and the log range it carries.
type AppendKey = (
    openraft::Vote<NodeId>,
    Option<openraft::LogId<NodeId>>,
    Option<openraft::LogId<NodeId>>,
);

/// An AppendEntries sent by a task of its own, which outlives openraft's wait for it.
struct Inflight {
    key: AppendKey,
    reply: tokio::sync::oneshot::Receiver<AppendResult>,
}

/// Deadline of an AppendEntries that carries entries (see `append_entries`).
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of entries one AppendEntries carries at most (unless one entry alone is larger):
/// entries are whole submissions of up to tens of MB, and a batch of them could exceed the
/// message limit, or take a loaded follower longer than [`APPEND_TIMEOUT`] to write and fsync;
/// either way the same batch would be retried for ever and the group would never commit again.
pub const APPEND_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Which RPC a call is, for the shared send path.
#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        send(client, self.group, self.target, rpc, payload, timeout).await
    }
}

/// The answer of an append whose task ended without one (the runtime is shutting down).
fn lost_append() -> NetworkError {
    NetworkError::new(&openraft::AnyError::error(
        "the append task ended without an answer",
    ))
}

/// Sends an encoded request and decodes the reply.
async fn send<Resp, E>(
    mut client: RaftClient<Channel>,
    group: GroupId,
    target: NodeId,
    rpc: Rpc,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
where
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    let mut request = Request::new(RaftRequest {
        format: WIRE_FORMAT_VERSION,
        group,
        payload: payload.into(),
    });
    request.set_timeout(timeout);
    let reply = match rpc {
        Rpc::Append => client.append_entries(request).await,
        Rpc::Vote => client.vote(request).await,
        Rpc::Snapshot => client.install_snapshot(request).await,
    };
    let reply = match reply {
        Ok(reply) => reply.into_inner(),
        Err(status) => {
            return Err(match status.code() {
                // Not reachable, not hosting the group yet, shutting down, or not accepting
                // this node (its gate refused us: another node now at that address, or a
                // membership it has not caught up with yet): back off.
                tonic::Code::Unavailable
                | tonic::Code::NotFound
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated => RPCError::Unreachable(Unreachable::new(&status)),
                _ => RPCError::Network(NetworkError::new(&status)),
            });
        }
    };
    let result: Result<Resp, E> = bincode::deserialize(&reply.payload)
        .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        if rpc.entries.is_empty() {
            return self.call(Rpc::Append, &rpc, option.hard_ttl()).await;
        }
        // openraft waits for an AppendEntries only as long as the heartbeat interval, then drops
        // the call and sends again: right for a heartbeat, too short for submissions a loaded
        // follower must receive, write and fsync. Dropped and resent, such a batch would never
        // complete and the group would stop committing. So the call runs in a task of its own
        // (deadline APPEND_TIMEOUT) that outlives openraft's wait; the next call waits for it
        // first and, if it is the same request, takes its answer.
        let key: AppendKey = (
            rpc.vote,
            rpc.prev_log_id,
            rpc.entries.last().map(|e| e.log_id),
        );
        if let Some(inflight) = self.inflight.as_mut() {
            let answer = (&mut inflight.reply).await;
            let same = inflight.key == key;
            self.inflight = None;
            if same {
                return match answer {
                    Ok(answer) => answer,
                    Err(_) => Err(RPCError::Network(lost_append())),
                };
            }
        }
        let timeout = option.hard_ttl().max(APPEND_TIMEOUT);
        let payload =
            bincode::serialize(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if payload.len() > APPEND_MAX_BYTES && rpc.entries.len() > 1 {
            // openraft retries at once with at most this many entries (and keeps to it for a
            // while): the longest prefix that fits, and always at least one entry.
            let mut fits = 0u64;
            let mut bytes = 0usize;
            for entry in &rpc.entries {
                bytes += bincode::serialized_size(entry).unwrap_or(u64::MAX) as usize;
                if bytes > APPEND_MAX_BYTES {
                    break;
                }
                fits += 1;
            }
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fits.max(1)),
            ));
        }
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let (group, target) = (self.group, self.target);
        let (tx, reply) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(send(client, group, target, Rpc::Append, payload, timeout).await);
        });
        let inflight = self.inflight.insert(Inflight { key, reply });
        let answer = (&mut inflight.reply).await;
        self.inflight = None;
        match answer {
            Ok(answer) => answer,
            Err(_) => Err(RPCError::Network(lost_append())),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }
}

/// The Raft instances a node hosts, by group; the server side of the network looks them up.
#[derive(Default)]
pub struct Registry {
    groups: RwLock<HashMap<GroupId, Raft>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Makes `raft` reachable by its peers as `group`.
    pub fn insert(&self, group: GroupId, raft: Raft) {
        self.write().insert(group, raft);
    }

    /// Stops routing calls to `group`; returns its Raft so that the caller can shut it down.
    pub fn remove(&self, group: GroupId) -> Option<Raft> {
        self.write().remove(&group)
    }

    /// The Raft of `group`, if this node hosts it.
    pub fn get(&self, group: GroupId) -> Option<Raft> {
        self.read().get(&group).cloned()
    }

    /// Every hosted group, in group order.
    pub fn all(&self) -> Vec<(GroupId, Raft)> {
        let mut all: Vec<_> = self.read().iter().map(|(g, r)| (*g, r.clone())).collect();
        all.sort_by_key(|(g, _)| *g);
        all
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<GroupId, Raft>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<GroupId, Raft>> {
        self.groups.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who may send Raft messages to this node: the node's policy (membership, certificates), which
/// this crate does not know. [`RaftService`] asks it about every call before decoding the
/// payload, then checks that the message's sender is the node the gate named.
pub trait Gate: Send + Sync + 'static {
    /// The node a call for `group` comes from, proven by the connection (`peer_certs`: the
    /// client's verified TLS chain, leaf first, if it presented one): `Ok(Some(id))` for a node
    /// allowed to send Raft messages, `Ok(None)` when the transport proves no identity (a
    /// plaintext development node: every caller is let through), or the refusal to answer.
    fn peer(
        &self,
        peer_certs: Option<&[CertificateDer<'static>]>,
        group: GroupId,
    ) -> Result<Option<NodeId>, Status>;
}

/// A gate that lets every caller through and proves no identity (plaintext nodes and tests).
pub struct Open;

impl Gate for Open {
    fn peer(
        &self,
        _: Option<&[CertificateDer<'static>]>,
        _: GroupId,
    ) -> Result<Option<NodeId>, Status> {
        Ok(None)
    }
}

/// The node id a Raft message claims to come from: the leader of an AppendEntries or an
/// InstallSnapshot, the candidate of a Vote (each carries it in its vote).
pub trait Sender {
    fn sender(&self) -> NodeId;
}

impl Sender for AppendEntriesRequest<TypeConfig> {
    fn sender(&self) -> NodeId {
        self.vote.leader_id().node_id
    }
}

impl Sender for VoteRequest<NodeId> {
    fn sender(&self) -> NodeId {
        self.vote.leader_id().node_id
    }
}

impl Sender for InstallSnapshotRequest<TypeConfig> {
    fn sender(&self) -> NodeId {
        self.vote.leader_id().node_id
    }
}

/// The internal `Raft` gRPC service: routes each call to the hosted group it names, once the
/// [`Gate`] has admitted the caller and the message's sender is the caller itself.
pub struct RaftService {
    registry: Arc<Registry>,
    gate: Arc<dyn Gate>,
}

impl RaftService {
    /// The service, as a tonic server with explicit message limits, admitting callers by `gate`.
    pub fn server(
        registry: Arc<Registry>,
        gate: Arc<dyn Gate>,
    ) -> raft_server::RaftServer<RaftService> {
        raft_server::RaftServer::new(RaftService { registry, gate })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn open<Req: DeserializeOwned + Sender>(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<(Raft, Req), Status> {
        // Refused before anything of the message is read, so an unknown caller learns nothing
        // (not even which groups are hosted) and costs no decoding.
        let certs = request.peer_certs();
        let peer = self
            .gate
            .peer(certs.as_deref().map(Vec::as_slice), request.get_ref().group)?;
        let request = request.into_inner();
        if request.format != WIRE_FORMAT_VERSION {
            return Err(Status::failed_precondition(format!(
                "wire format {} not supported (this node speaks {WIRE_FORMAT_VERSION})",
                request.format
            )));
        }
        let req: Req = bincode::deserialize(&request.payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable raft request: {e}")))?;
        if let Some(peer) = peer
            && req.sender() != peer
        {
            return Err(Status::permission_denied(format!(
                "this Raft message names node {} as its sender, but the connection's \
                 certificate is node {peer}'s: a node sends only its own messages",
                req.sender()
            )));
        }
        let raft = self
            .registry
            .get(request.group)
            .ok_or_else(|| Status::not_found(format!("group {} not hosted here", request.group)))?;
        Ok((raft, req))
    }
}

fn reply<T: Serialize>(result: &T) -> Result<Response<RaftReply>, Status> {
    let payload =
        bincode::serialize(result).map_err(|e| Status::internal(format!("encoding reply: {e}")))?;
    Ok(Response::new(RaftReply {
        payload: payload.into(),
    }))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let (raft, req): (Raft, AppendEntriesRequest<TypeConfig>) = self.open(request)?;
        reply(&raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (raft, req): (Raft, VoteRequest<NodeId>) = self.open(request)?;
        reply(&raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let (raft, req): (Raft, InstallSnapshotRequest<TypeConfig>) = self.open(request)?;
        reply(&raft.install_snapshot(req).await)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    fn entries(sizes: &[usize]) -> Vec<Entry<TypeConfig>> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i as u64 + 1),
                payload: EntryPayload::Normal(crate::Request(vec![7; *n])),
            })
            .collect()
    }

    async fn append(sizes: &[usize]) -> RPCError<NodeId, BasicNode, RaftError<NodeId>> {
        // No peer: a request small enough to send fails as unreachable.
        let mut c = Connection {
            group: 1,
            target: 2,
            client: Endpoint::from_shared("no uri".to_string())
                .map(|_| -> RaftClient<Channel> { unreachable!("not a URI") }),
            inflight: None,
        };
        let rpc = AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: entries(sizes),
            leader_commit: None,
        };
        let option = RPCOption::new(Duration::from_secs(1));
        c.append_entries(rpc, option).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_batch_over_the_byte_limit_is_split_and_a_single_entry_is_sent() {
        const MIB: usize = 1024 * 1024;
        match append(&[12 * MIB, 12 * MIB, 12 * MIB, 12 * MIB]).await {
            RPCError::PayloadTooLarge(e) => assert_eq!(e.entries_hint(), 2),
            e => panic!("{e}"),
        }
        // One entry over the limit is sent whole (openraft cannot split an entry).
        assert!(matches!(
            append(&[40 * MIB]).await,
            RPCError::Unreachable(_)
        ));
        // Under the limit: sent as it is.
        assert!(matches!(
            append(&[MIB, MIB, MIB]).await,
            RPCError::Unreachable(_)
        ));
    }

    /// A gate that names every caller node 2, or refuses every call.
    struct Fixed(Result<Option<NodeId>, tonic::Code>);

    impl Gate for Fixed {
        fn peer(
            &self,
            _: Option<&[CertificateDer<'static>]>,
            _: GroupId,
        ) -> Result<Option<NodeId>, Status> {
            self.0
                .map_err(|code| Status::new(code, "refused by the gate"))
        }
    }

    fn vote_from(candidate: NodeId) -> Request<RaftRequest> {
        let vote: VoteRequest<NodeId> = VoteRequest {
            vote: Vote::new(u64::MAX / 2, candidate),
            last_log_id: None,
        };
        Request::new(RaftRequest {
            format: WIRE_FORMAT_VERSION,
            group: 0,
            payload: bincode::serialize(&vote).unwrap().into(),
        })
    }

    /// The gate decides before anything else (even whether the group is hosted), and a message
    /// whose sender is not the node the gate named is refused.
    #[tokio::test]
    async fn the_gate_admits_callers_and_a_message_names_its_own_sender() {
        use raft_server::Raft as _;
        let service = |gate| RaftService {
            registry: Registry::new(),
            gate: Arc::new(Fixed(gate)),
        };
        let refused = service(Err(tonic::Code::PermissionDenied))
            .vote(vote_from(2))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert_eq!(refused.message(), "refused by the gate");
        let forged = service(Ok(Some(2))).vote(vote_from(3)).await.unwrap_err();
        assert_eq!(forged.code(), tonic::Code::PermissionDenied);
        assert!(
            forged.message().contains(
                "names node 3 as its sender, but the connection's certificate is node 2's"
            ),
            "{}",
            forged.message()
        );
        // Its own message gets through the checks (and finds no group hosted here).
        let own = service(Ok(Some(2))).vote(vote_from(2)).await.unwrap_err();
        assert_eq!(own.code(), tonic::Code::NotFound);
        // Without identities (plaintext), any sender gets through.
        let open = service(Ok(None)).vote(vote_from(3)).await.unwrap_err();
        assert_eq!(open.code(), tonic::Code::NotFound);
        // The sender of each kind of message is the node in its vote.
        let append: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
            vote: Vote::new_committed(4, 9),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        assert_eq!(append.sender(), 9);
    }

    /// A follower that takes `delay` to answer an AppendEntries, counting the requests it gets.
    struct SlowFollower {
        delay: Duration,
        appends: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[tonic::async_trait]
    impl raft_server::Raft for SlowFollower {
        async fn append_entries(
            &self,
            _: Request<RaftRequest>,
        ) -> Result<Response<RaftReply>, Status> {
            self.appends
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            let answer: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
                Ok(AppendEntriesResponse::Success);
            reply(&answer)
        }
        async fn vote(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
            Err(Status::unimplemented("vote"))
        }
        async fn install_snapshot(
            &self,
            _: Request<RaftRequest>,
        ) -> Result<Response<RaftReply>, Status> {
            Err(Status::unimplemented("install_snapshot"))
        }
    }

    /// openraft gives an append only the heartbeat interval, then drops it and sends it again;
    /// a follower slower than that must still get it once and answer it.
    #[tokio::test]
    async fn an_append_slower_than_openrafts_wait_completes_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let appends = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let follower = SlowFollower {
            delay: Duration::from_millis(300),
            appends: appends.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(raft_server::RaftServer::new(follower))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut c = Connection {
            group: 1,
            target: 2,
            client: Peers::new().channel(&addr.to_string()).map(raft_client),
            inflight: None,
        };
        let heartbeat = Duration::from_millis(50);
        let mut attempts = 0;
        let answer = loop {
            attempts += 1;
            assert!(attempts < 200, "the append never completed");
            let rpc = AppendEntriesRequest {
                vote: Vote::new_committed(1, 1),
                prev_log_id: None,
                entries: entries(&[1024]),
                leader_commit: None,
            };
            // What openraft does: wait one heartbeat interval, then give up on the call.
            match tokio::time::timeout(heartbeat, c.append_entries(rpc, RPCOption::new(heartbeat)))
                .await
            {
                Ok(answer) => break answer,
                Err(_) => continue,
            }
        };
        assert_eq!(answer.unwrap(), AppendEntriesResponse::Success);
        assert!(attempts > 1, "the follower was slower than one wait");
        assert_eq!(
            appends.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "resent while the first was on its way"
        );
    }
}
