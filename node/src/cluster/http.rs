//! The node's HTTP port (`--http-listen`): Prometheus metrics, liveness and readiness probes, and
//! a status page for operators.
//!
//! Plain HTTP, no credentials, so it shows health and the cluster's shape only: members and
//! whether this node reaches them, shard replicas and leaders, versions and uptime. Nothing
//! about data (no sender, provider, submission id, record count or rule): that goes through the
//! authenticated gRPC port (the audit log lists every submission, `sus audit`). A token is never
//! asked for here either: it would cross the network in clear.

use super::Cluster;
use super::shard::shard_group;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::sync::Arc;

/// The page: plain HTML and JavaScript that polls `/api/status`; no build step.
const STATUS_PAGE: &str = include_str!("status.html");

/// The routes of the HTTP port.
pub fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/api/status", get(api_status))
        .with_state(cluster)
}

/// Serves `router(cluster)` on `listener` (until the task is dropped).
pub async fn serve(
    listener: tokio::net::TcpListener,
    cluster: Arc<Cluster>,
) -> std::io::Result<()> {
    axum::serve(listener, router(cluster)).await
}

async fn page() -> Html<&'static str> {
    Html(STATUS_PAGE)
}

async fn metrics(State(cluster): State<Arc<Cluster>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        encode_metrics(&cluster),
    )
        .into_response()
}

/// Liveness: the process answers.
async fn health() -> &'static str {
    "ok\n"
}

/// Readiness: 200 once the node is a member, the meta group has a leader and every shard this
/// node hosts has a leader; 503 with the reason otherwise.
async fn ready(State(cluster): State<Arc<Cluster>>) -> Response {
    match not_ready(&cluster) {
        None => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

fn not_ready(cluster: &Cluster) -> Option<String> {
    if cluster.cluster_id().is_none() {
        return Some("not a member of a cluster yet (`sus cluster init` or `add-node`)".into());
    }
    if cluster.meta.metrics().borrow().current_leader.is_none() {
        return Some("the meta group has no leader".into());
    }
    let leaderless: Vec<String> = cluster
        .hosted_shards()
        .into_iter()
        .filter(|s| {
            cluster
                .shard(*s)
                .is_some_and(|(raft, _)| raft.metrics().borrow().current_leader.is_none())
        })
        .map(|s| s.to_string())
        .collect();
    if !leaderless.is_empty() {
        return Some(format!(
            "shards without a leader: {}",
            leaderless.join(", ")
        ));
    }
    None
}

#[derive(Serialize)]
struct StatusJson {
    node: u64,
    advertise: String,
    cluster_id: Option<String>,
    ready: bool,
    not_ready: Option<String>,
    meta_leader: Option<u64>,
    members: Vec<Member>,
    shards: Vec<ShardJson>,
    /// The cluster's reference data version.
    refdata: String,
    /// This node's software version.
    version: &'static str,
    /// Seconds since this node started.
    uptime_secs: u64,
}

#[derive(Serialize)]
struct Member {
    id: u64,
    addr: String,
    /// This node's last check of the member (`None` for this node itself, or not checked yet).
    reachable: Option<bool>,
    problem: Option<String>,
}

#[derive(Serialize)]
struct ShardJson {
    shard: u32,
    group: u64,
    replicas: Vec<u64>,
    /// Known only for shards this node hosts.
    leader: Option<u64>,
    hosted_here: bool,
    last_applied: Option<u64>,
}

async fn api_status(State(cluster): State<Arc<Cluster>>) -> Response {
    let state = cluster.meta_state();
    let reason = not_ready(&cluster);
    let peers = cluster.metrics.peers();
    let shards = state
        .shards
        .iter()
        .enumerate()
        .map(|(s, info)| {
            let shard = s as u32;
            let hosted = cluster.shard(shard);
            let m = hosted
                .as_ref()
                .map(|(raft, _)| raft.metrics().borrow().clone());
            ShardJson {
                shard,
                group: shard_group(shard),
                replicas: info.replicas.clone(),
                leader: m.as_ref().and_then(|m| m.current_leader),
                hosted_here: hosted.is_some(),
                last_applied: m.as_ref().and_then(|m| m.last_applied.map(|l| l.index)),
            }
        })
        .collect();
    let body = StatusJson {
        node: cluster.id,
        advertise: cluster.advertise.clone(),
        cluster_id: cluster.cluster_id(),
        ready: reason.is_none(),
        not_ready: reason,
        meta_leader: cluster.meta.metrics().borrow().current_leader,
        members: state
            .nodes
            .iter()
            .map(|(id, addr)| {
                let seen = peers.get(id);
                Member {
                    id: *id,
                    addr: addr.clone(),
                    reachable: seen.map(|v| v.problem.is_none()),
                    problem: seen.and_then(|v| v.problem.clone()),
                }
            })
            .collect(),
        shards,
        refdata: state.refdata.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: cluster.started.elapsed().as_secs(),
    };
    axum::Json(body).into_response()
}

/// The metrics exposition, with every group this node hosts read now.
fn encode_metrics(cluster: &Cluster) -> String {
    let mut groups = vec![("meta".to_string(), cluster.meta.clone())];
    for shard in cluster.hosted_shards() {
        if let Some((raft, _)) = cluster.shard(shard) {
            groups.push((format!("shard-{shard}"), raft));
        }
    }
    let audited = cluster.meta_state.borrow().audit.len();
    cluster
        .metrics
        .encode(cluster.id, &groups, audited, cluster.write_buffer_bytes())
}
