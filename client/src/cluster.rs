//! The cluster client: submissions and administration over gRPC, to any node of a cluster.
//!
//! Nodes forward writes to the leader of the right shard, so the client only has to reach one
//! live node: it tries its endpoints in turn. A submission is safe to resend: the node answers a
//! `(sender, submission id)` it has already processed with the original report. So a submission
//! whose outcome is unknown (timeout, node lost, no leader yet) is retried with backoff until
//! `retry_for` has passed, and never reported as accepted without the node's report saying so.

use crate::{Error, Result};
use std::path::Path;
use std::time::Duration;
use sus_proto::v1::admin_client::AdminClient;
use sus_proto::v1::ingest_client::IngestClient;
use sus_proto::v1::{
    AddNodeRequest, InitRequest, NodeAddress, RemoveNodeRequest, SetRefDataRequest,
    ShardContentRequest, StatusRequest, SubmitRequest, TransferLeaderRequest,
};
use sus_proto::{MAX_MESSAGE_BYTES, WIRE_FORMAT_VERSION};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

pub use sus_proto::v1::{ClusterStatus, GroupStatus, ShardContentReply};

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

/// What the cluster said about one submission.
#[derive(Debug, Clone)]
pub struct SubmitOutcome {
    pub accepted: bool,
    /// The submission report (JSON), as the node wrote it.
    pub report: serde_json::Value,
    pub shard: u32,
    /// The node that committed it.
    pub leader: u64,
}

impl SubmitOutcome {
    /// The store version the submission created on its shard (accepted only).
    pub fn version(&self) -> Option<u64> {
        self.report.get("version").and_then(|v| v.as_u64())
    }
}

/// A client of a cluster, cheap to clone.
#[derive(Clone)]
pub struct Client {
    endpoints: Vec<(String, Channel)>,
    retry: RetryPolicy,
    /// Channels to member nodes by address (reads go to the node holding each shard).
    peers: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Channel>>>,
}

impl Client {
    /// A client of the nodes at `endpoints` (`host:port`); connections are made on first use.
    pub fn new(endpoints: &[String], retry: RetryPolicy) -> Result<Client> {
        if endpoints.is_empty() {
            return Err(Error::Cluster("no endpoint given".into()));
        }
        let endpoints = endpoints
            .iter()
            .map(|e| Ok((e.clone(), endpoint(e)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Client {
            endpoints,
            retry,
            peers: Default::default(),
        })
    }

    pub(crate) fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// A (shared, lazily connected) channel to a node's address.
    pub(crate) fn channel_to(&self, addr: &str) -> Result<Channel> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let channel = endpoint(addr)?;
        peers.insert(addr.to_string(), channel.clone());
        Ok(channel)
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
        let report = serde_json::from_str(&reply.report_json)
            .map_err(|e| Error::Cluster(format!("undecodable report: {e}")))?;
        Ok(SubmitOutcome {
            accepted: reply.accepted,
            report,
            shard: reply.shard,
            leader: reply.leader,
        })
    }

    /// Bootstraps a new cluster over `nodes` (id, address); sent to the first endpoint's node,
    /// which must be one of them.
    pub async fn init(
        &self,
        nodes: &[(u64, String)],
        shards: u32,
        replication: u32,
    ) -> Result<ClusterStatus> {
        let request = InitRequest {
            format: WIRE_FORMAT_VERSION,
            nodes: addresses(nodes),
            shards,
            replication,
        };
        let (_, channel) = &self.endpoints[0];
        let mut client = AdminClient::new(channel.clone());
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
        AdminClient::new(channel.clone())
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
        AdminClient::new(channel.clone())
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
                let one = Client::new(&[addr], self.retry.clone())?;
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

    /// Runs `call` against the endpoints in turn until one answers, retrying errors whose
    /// outcome is unknown with capped exponential backoff for up to `retry_for`.
    pub(crate) async fn with_retry<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        self.with_retry_for(self.retry.attempt_timeout, call).await
    }

    /// [`Client::with_retry`] with an explicit per-attempt deadline (membership changes wait for
    /// replicas to catch up, which can take minutes).
    async fn with_retry_for<T, F, Fut>(&self, attempt_timeout: Duration, call: F) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.retry.retry_for;
        let mut backoff = Duration::from_millis(50);
        let mut attempt = 0usize;
        loop {
            let (name, channel) = &self.endpoints[attempt % self.endpoints.len()];
            attempt += 1;
            let result = tokio::time::timeout(attempt_timeout, call(channel.clone())).await;
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

/// One replica's content digest (see [`Client::replica_contents`]).
#[derive(Debug)]
pub struct ReplicaContent {
    pub node: u64,
    pub shard: u32,
    pub content: Result<ShardContentReply>,
}

/// A lazily connected channel to `addr` (`host:port` or a URI).
fn endpoint(addr: &str) -> Result<Channel> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)
        .map_err(|err| Error::Cluster(format!("endpoint {addr}: {err}")))?
        .connect_timeout(Duration::from_secs(2))
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

pub(crate) fn status_error(status: Status) -> Error {
    match status.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound => {
            Error::Refused(status.message().to_string())
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            Error::Unavailable(status.message().to_string())
        }
        _ => Error::Cluster(format!("{:?}: {}", status.code(), status.message())),
    }
}
