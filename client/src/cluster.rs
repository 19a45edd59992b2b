//! The cluster client: submissions and administration over gRPC, to any node of a cluster.
//!
//! Nodes forward writes to the leader of the right shard, so the client only has to reach one
//! live node: it tries its endpoints in turn. A submission is safe to resend: the node answers a
//! `(sender, submission id)` it has already processed with the original report. So a submission
//! whose outcome is unknown (timeout, node lost, no leader yet) is retried with backoff until
//! `retry_for` has passed, and never reported as accepted without the node's report saying so.

use crate::submission::SubmitOutcome;
use crate::{Error, Result};
use std::path::Path;
use std::time::Duration;
use sus_proto::v1::admin_client::AdminClient;
use sus_proto::v1::ingest_client::IngestClient;
use sus_proto::v1::{
    AddNodeRequest, AddUserRequest, AuditLogRequest, InitRequest, ListUsersRequest, LoginRequest,
    NodeAddress, RemoveNodeRequest, RevokeUserRequest, SetRefDataRequest, ShardContentRequest,
    StatusRequest, SubmitRequest, TransferLeaderRequest,
};
use sus_proto::{MAX_MESSAGE_BYTES, WIRE_FORMAT_VERSION};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

pub use sus_proto::audit::Record as AuditRecord;
pub use sus_proto::v1::{ClusterStatus, GroupStatus, LoginReply, ShardContentReply, UserInfo};

/// How a client retries calls whose outcome is unknown.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Give up after this long (the last error is returned).
    pub retry_for: Duration,
    /// Deadline of one attempt.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retry_for: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(60),
        }
    }
}

/// TLS towards the cluster: the CA that signed the nodes' certificates, and (for `init`, which
/// runs before any user exists) a client certificate of that CA.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub ca_pem: Vec<u8>,
    /// Certificate and key (PEM) presented to nodes.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsOptions {
    /// Reads the CA certificate (and optionally a client certificate and key) from PEM files.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<TlsOptions> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
        Ok(TlsOptions {
            ca_pem: read(ca)?,
            identity: match identity {
                Some((c, k)) => Some((read(c)?, read(k)?)),
                None => None,
            },
        })
    }

    fn config(&self) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        c
    }
}

/// How to reach and authenticate to a cluster (see [`Client::connect`]).
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// Nodes to call first (`host:port`); any live one will do.
    pub endpoints: Vec<String>,
    /// A bearer token from [`Client::login`] (`sus login`).
    pub token: Option<String>,
    /// `None`: plaintext, for nodes started with `--plaintext` only.
    pub tls: Option<TlsOptions>,
    pub retry: RetryPolicy,
}

/// Adds the bearer token (a shared, replaceable value) and the trace context to every call.
#[derive(Clone, Default)]
pub struct Credentials {
    token: std::sync::Arc<std::sync::RwLock<Option<String>>>,
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, Status> {
        let token = self.token.read().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = token.as_deref()
            && request.metadata().get("authorization").is_none()
        {
            let v = tonic::metadata::MetadataValue::try_from(format!("Bearer {t}"))
                .map_err(|_| Status::unauthenticated("the token is not valid header text"))?;
            request.metadata_mut().insert("authorization", v);
        }
        if let Some(ctx) = crate::trace::current()
            && request.metadata().get(crate::trace::TRACEPARENT).is_none()
        {
            ctx.child().insert(request.metadata_mut());
        }
        Ok(request)
    }
}

/// A channel that carries the client's token (and the caller's trace, see [`crate::trace`]).
pub type Conn = tonic::service::interceptor::InterceptedService<Channel, Credentials>;

/// A client of a cluster, cheap to clone. It holds no more rights than its token: the nodes
/// check every call.
#[derive(Clone)]
pub struct Client {
    endpoints: Vec<(String, Channel)>,
    retry: RetryPolicy,
    tls: Option<TlsOptions>,
    credentials: Credentials,
    /// Channels to member nodes by address (reads go to the node holding each shard).
    peers: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Channel>>>,
}

impl Client {
    /// A plaintext client without a token of the nodes at `endpoints` (`host:port`);
    /// connections are made on first use. See [`Client::connect`] for TLS and a token.
    pub fn new(endpoints: &[String], retry: RetryPolicy) -> Result<Client> {
        Client::with_config(ClientConfig {
            endpoints: endpoints.to_vec(),
            retry,
            ..ClientConfig::default()
        })
    }

    /// A client as `config` says; connections are made on first use.
    pub fn with_config(config: ClientConfig) -> Result<Client> {
        if config.endpoints.is_empty() {
            return Err(Error::Cluster("no endpoint given".into()));
        }
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| Ok((e.clone(), endpoint(e, config.tls.as_ref())?)))
            .collect::<Result<Vec<_>>>()?;
        let client = Client {
            endpoints,
            retry: config.retry,
            tls: config.tls,
            credentials: Credentials::default(),
            peers: Default::default(),
        };
        client.set_token(config.token);
        Ok(client)
    }

    /// Connects to a cluster: checks that a node answers (and accepts the token, if any).
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let client = Client::with_config(config)?;
        client.status(false).await?;
        Ok(client)
    }

    /// Replaces the token every later call carries (shared by the clones of this client).
    pub fn set_token(&self, token: Option<String>) {
        *self
            .credentials
            .token
            .write()
            .unwrap_or_else(|e| e.into_inner()) = token;
    }

    /// A client like this one with another token (the clones of this one keep theirs).
    pub fn with_token(&self, token: Option<String>) -> Client {
        let mut c = self.clone();
        c.credentials = Credentials::default();
        c.set_token(token);
        c
    }

    /// The token calls carry.
    pub fn token(&self) -> Option<String> {
        self.credentials
            .token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The highest tier the token claims (read without verifying it: only to choose how to
    /// ask; the node decides).
    pub fn token_tier(&self) -> Option<crate::query::Tier> {
        use base64::Engine;
        let token = self.token()?;
        let claims = token.split('.').nth(1)?;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
        match claims.get("tier")?.as_str()? {
            "Identifiable" => Some(crate::query::Tier::Identifiable),
            "Pseudonymised" => Some(crate::query::Tier::Pseudonymised),
            "Anonymised" => Some(crate::query::Tier::Anonymised),
            _ => None,
        }
    }

    pub(crate) fn conn(&self, channel: Channel) -> Conn {
        tonic::service::interceptor::InterceptedService::new(channel, self.credentials.clone())
    }

    /// The endpoints this client was given, in order.
    pub(crate) fn endpoints(&self) -> &[(String, Channel)] {
        &self.endpoints
    }

    pub(crate) fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// A (shared, lazily connected) channel to a node's address.
    pub(crate) fn channel_to(&self, addr: &str) -> Result<Conn> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = peers.get(addr) {
            return Ok(self.conn(c.clone()));
        }
        let channel = endpoint(addr, self.tls.as_ref())?;
        peers.insert(addr.to_string(), channel.clone());
        Ok(self.conn(channel))
    }

    /// Submits a file and its `FILE.meta.json` envelope.
    pub async fn submit_file(&self, file: &Path) -> Result<SubmitOutcome> {
        let mut envelope = file.as_os_str().to_owned();
        envelope.push(".meta.json");
        let envelope = std::path::PathBuf::from(envelope);
        let envelope_json = std::fs::read_to_string(&envelope).map_err(|source| Error::Io {
            path: envelope.clone(),
            source,
        })?;
        let content = std::fs::read(file).map_err(|source| Error::Io {
            path: file.to_path_buf(),
            source,
        })?;
        let name = file.display().to_string();
        self.submit(&envelope_json, &name, content).await
    }

    /// Submits a file's bytes with its envelope (JSON), retrying while the outcome is unknown.
    /// A reply without a report (from a node older than this client) is
    /// [`Error::MissingReport`].
    pub async fn submit(
        &self,
        envelope_json: &str,
        file_name: &str,
        content: Vec<u8>,
    ) -> Result<SubmitOutcome> {
        let request = SubmitRequest {
            format: WIRE_FORMAT_VERSION,
            envelope_json: envelope_json.to_string(),
            file_name: file_name.to_string(),
            content: content.into(),
            forwarded: false,
        };
        let reply = self
            .with_retry(|channel| {
                let request = request.clone();
                async move {
                    let mut client = IngestClient::new(channel)
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES);
                    client.submit(request).await
                }
            })
            .await?;
        SubmitOutcome::from_reply(reply)
    }

    /// Bootstraps a new cluster over `nodes` (id, address); sent to the first endpoint's node,
    /// which must be one of them.
    pub async fn init(
        &self,
        nodes: &[(u64, String)],
        shards: u32,
        replication: u32,
        admin_password: &str,
    ) -> Result<ClusterStatus> {
        let request = InitRequest {
            format: WIRE_FORMAT_VERSION,
            nodes: addresses(nodes),
            shards,
            replication,
            admin_password: admin_password.to_string(),
        };
        let (_, channel) = &self.endpoints[0];
        let mut client = AdminClient::new(self.conn(channel.clone()));
        client
            .init(request)
            .await
            .map(|r| r.into_inner())
            .map_err(status_error)
    }

    /// Adds a node and (with `rebalance`) moves shard replicas onto it.
    pub async fn add_node(&self, id: u64, addr: &str, rebalance: bool) -> Result<ClusterStatus> {
        let request = AddNodeRequest {
            format: WIRE_FORMAT_VERSION,
            node: Some(NodeAddress {
                id,
                addr: addr.to_string(),
            }),
            rebalance,
        };
        self.with_retry_for(ADMIN_TIMEOUT, |channel| {
            let request = request.clone();
            async move { AdminClient::new(channel).add_node(long(request)).await }
        })
        .await
    }

    /// Moves a node's replicas away and removes it.
    pub async fn remove_node(&self, id: u64) -> Result<ClusterStatus> {
        let request = RemoveNodeRequest {
            format: WIRE_FORMAT_VERSION,
            id,
        };
        self.with_retry_for(ADMIN_TIMEOUT, |channel| async move {
            AdminClient::new(channel).remove_node(long(request)).await
        })
        .await
    }

    /// Makes `node` the leader of `group` (0 = meta, shard s = s + 1).
    pub async fn transfer_leader(&self, group: u64, node: u64) -> Result<ClusterStatus> {
        let request = TransferLeaderRequest {
            format: WIRE_FORMAT_VERSION,
            group,
            node,
        };
        self.with_retry(|channel| async move {
            AdminClient::new(channel).transfer_leader(request).await
        })
        .await
    }

    /// Makes the reference data version of the first reachable node the cluster's.
    pub async fn set_refdata(&self) -> Result<ClusterStatus> {
        self.with_retry(|channel| async move {
            AdminClient::new(channel)
                .set_ref_data(SetRefDataRequest {
                    format: WIRE_FORMAT_VERSION,
                    version: String::new(),
                })
                .await
        })
        .await
    }

    /// The cluster as the first reachable node sees it.
    pub async fn status(&self, linearizable: bool) -> Result<ClusterStatus> {
        self.with_retry(|channel| async move {
            AdminClient::new(channel)
                .status(StatusRequest {
                    format: WIRE_FORMAT_VERSION,
                    linearizable,
                })
                .await
        })
        .await
    }

    /// The status of one node (by endpoint index), without retries.
    pub async fn status_of(&self, endpoint: usize) -> Result<ClusterStatus> {
        let (_, channel) = self
            .endpoints
            .get(endpoint)
            .ok_or_else(|| Error::Cluster(format!("no endpoint {endpoint}")))?;
        let mut request = tonic::Request::new(StatusRequest {
            format: WIRE_FORMAT_VERSION,
            linearizable: false,
        });
        request.set_timeout(Duration::from_secs(5));
        AdminClient::new(self.conn(channel.clone()))
            .status(request)
            .await
            .map(|r| r.into_inner())
            .map_err(status_error)
    }

    /// The content digest of one node's replica of `shard` (by endpoint index), without retries.
    pub async fn shard_content(
        &self,
        endpoint: usize,
        shard: u32,
        linearizable: bool,
    ) -> Result<ShardContentReply> {
        let (_, channel) = self
            .endpoints
            .get(endpoint)
            .ok_or_else(|| Error::Cluster(format!("no endpoint {endpoint}")))?;
        let mut request = tonic::Request::new(ShardContentRequest {
            format: WIRE_FORMAT_VERSION,
            shard,
            linearizable,
        });
        request.set_timeout(Duration::from_secs(120));
        AdminClient::new(self.conn(channel.clone()))
            .shard_content(request)
            .await
            .map(|r| r.into_inner())
            .map_err(status_error)
    }

    /// The content of every replica of every shard, read from each member node (for checking
    /// that replicas agree). Replicas that could not be read are reported with their error.
    pub async fn replica_contents(&self) -> Result<Vec<ReplicaContent>> {
        let status = self.status(true).await?;
        let mut out = Vec::new();
        for shard in &status.shards {
            for node in &shard.replicas {
                let Some(addr) = status
                    .nodes
                    .iter()
                    .find(|n| n.id == *node)
                    .map(|n| n.addr.clone())
                else {
                    continue;
                };
                let one = Client::with_config(ClientConfig {
                    endpoints: vec![addr],
                    token: self.token(),
                    tls: self.tls.clone(),
                    retry: self.retry.clone(),
                })?;
                let content = one.shard_content(0, shard.shard, false).await;
                out.push(ReplicaContent {
                    node: *node,
                    shard: shard.shard,
                    content,
                });
            }
        }
        Ok(out)
    }

    /// Exchanges a password for a token (for `purpose`, lasting `ttl_secs`, 0: 8 hours) and
    /// makes this client (and its clones) carry it.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        purpose: &str,
        ttl_secs: u64,
    ) -> Result<LoginReply> {
        let request = LoginRequest {
            format: WIRE_FORMAT_VERSION,
            user: user.to_string(),
            password: password.to_string(),
            purpose: purpose.to_string(),
            ttl_secs,
        };
        let reply = self
            .with_retry(|channel| {
                let request = request.clone();
                async move { AdminClient::new(channel).login(request).await }
            })
            .await?;
        self.set_token(Some(reply.token.clone()));
        Ok(reply)
    }

    /// Adds a user (admin role). `tier` `None`: the role's default.
    pub async fn add_user(&self, user: UserInfo, password: &str) -> Result<UserInfo> {
        let request = AddUserRequest {
            format: WIRE_FORMAT_VERSION,
            user: Some(user),
            password: password.to_string(),
        };
        self.with_retry(|channel| {
            let request = request.clone();
            async move { AdminClient::new(channel).add_user(request).await }
        })
        .await
    }

    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        self.with_retry(|channel| async move {
            AdminClient::new(channel)
                .list_users(ListUsersRequest {
                    format: WIRE_FORMAT_VERSION,
                })
                .await
        })
        .await
        .map(|r| r.users)
    }

    /// Revokes a user: every token issued to it is refused from now on.
    pub async fn revoke_user(&self, name: &str) -> Result<UserInfo> {
        let request = RevokeUserRequest {
            format: WIRE_FORMAT_VERSION,
            name: name.to_string(),
        };
        self.with_retry(|channel| {
            let request = request.clone();
            async move { AdminClient::new(channel).revoke_user(request).await }
        })
        .await
    }

    /// Entries `from..from+limit` (0: all) of the audit log, verified against their hash
    /// chain (from the start of the log when `from` is 0). Roles auditor and admin.
    pub async fn audit_log(&self, from: u64, limit: u64) -> Result<AuditLog> {
        let reply = self
            .with_retry(|channel| async move {
                AdminClient::new(channel)
                    .audit_log(AuditLogRequest {
                        format: WIRE_FORMAT_VERSION,
                        from,
                        limit,
                    })
                    .await
            })
            .await?;
        let mut entries = Vec::new();
        for e in reply.entries {
            let record = sus_proto::audit::Record::from_json(&e.record_json)?;
            entries.push(AuditEntry {
                index: e.index,
                record,
                hash: e.hash.to_vec(),
            });
        }
        Ok(AuditLog {
            entries,
            total: reply.total,
        })
    }

    /// Runs `call` against the endpoints in turn until one answers, retrying errors whose
    /// outcome is unknown with capped exponential backoff for up to `retry_for`.
    pub(crate) async fn with_retry<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        self.with_retry_for(self.retry.attempt_timeout, call).await
    }

    /// [`Client::with_retry`] with an explicit per-attempt deadline (membership changes wait for
    /// replicas to catch up, which can take minutes).
    async fn with_retry_for<T, F, Fut>(&self, attempt_timeout: Duration, call: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.retry.retry_for;
        let mut backoff = Duration::from_millis(50);
        let mut attempt = 0usize;
        loop {
            let (name, channel) = &self.endpoints[attempt % self.endpoints.len()];
            attempt += 1;
            let result =
                tokio::time::timeout(attempt_timeout, call(self.conn(channel.clone()))).await;
            let status = match result {
                Ok(Ok(reply)) => return Ok(reply.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded("attempt timed out"),
            };
            if !retryable(&status) || tokio::time::Instant::now() >= deadline {
                // Name the node that gave the last answer: "which one?" is the next question.
                let status = Status::new(status.code(), format!("{name}: {}", status.message()));
                return Err(status_error(status));
            }
            tracing::debug!(endpoint = %name, code = ?status.code(), "retrying: {}", status.message());
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub index: u64,
    pub record: sus_proto::audit::Record,
    pub hash: Vec<u8>,
}

/// Part of the audit log.
#[derive(Debug, Clone)]
pub struct AuditLog {
    pub entries: Vec<AuditEntry>,
    /// Entries in the whole log.
    pub total: u64,
}

impl AuditLog {
    /// Verifies the hash chain of entries read from index 0; names the first broken entry.
    pub fn verify(&self) -> std::result::Result<(), sus_proto::audit::Broken> {
        sus_proto::audit::verify(
            sus_proto::audit::GENESIS,
            self.entries
                .iter()
                .map(|e| (e.index, &e.record, e.hash.as_slice())),
        )
        .map(|_| ())
    }
}

/// One replica's content digest (see [`Client::replica_contents`]).
#[derive(Debug)]
pub struct ReplicaContent {
    pub node: u64,
    pub shard: u32,
    pub content: Result<ShardContentReply>,
}

/// A lazily connected channel to `addr` (`host:port` or a URI).
fn endpoint(addr: &str, tls: Option<&TlsOptions>) -> Result<Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = match addr.split_once("://") {
        Some((_, rest)) => format!("{scheme}://{rest}"),
        None => format!("{scheme}://{addr}"),
    };
    let mut e = Endpoint::from_shared(uri)
        .map_err(|err| Error::Cluster(format!("endpoint {addr}: {err}")))?;
    if let Some(tls) = tls {
        e = e
            .tls_config(tls.config())
            .map_err(|err| Error::Cluster(format!("TLS for {addr}: {err}")))?;
    }
    Ok(e.connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Deadline of one membership-change attempt.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(600);

fn long<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(ADMIN_TIMEOUT);
    request
}

fn addresses(nodes: &[(u64, String)]) -> Vec<NodeAddress> {
    nodes
        .iter()
        .map(|(id, addr)| NodeAddress {
            id: *id,
            addr: addr.clone(),
        })
        .collect()
}

/// Codes after which the same call may be made again safely (submissions are idempotent).
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// A node's status as the client's error: by the typed reason the node sent, else by its code.
pub(crate) fn status_error(status: Status) -> Error {
    use sus_proto::v1::Reason;
    match sus_proto::error::reason(&status) {
        Reason::ReplicaBehind => return Error::ReplicaBehind(status.message().to_string()),
        Reason::AlreadyInitialised => return Error::AlreadyInitialised,
        _ => {}
    }
    match status.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound => {
            Error::Refused(status.message().to_string())
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            Error::Unavailable(status.message().to_string())
        }
        Code::Unauthenticated => Error::Unauthenticated(status.message().to_string()),
        Code::PermissionDenied => Error::PermissionDenied(status.message().to_string()),
        _ => Error::Cluster(format!("{:?}: {}", status.code(), status.message())),
    }
}
