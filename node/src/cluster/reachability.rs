//! Whether this node reaches each other member. Every few seconds it makes a cheap
//! authenticated call to each (TCP, TLS and token: the path Raft and forwarded calls take). A
//! member that becomes unreachable is logged once, with the cause and what to check, and again
//! when it is back; `/metrics` (`sus_peer_up`) and the status page show the current view.

use super::auth::PeerChannel;
use super::metrics::{Metrics, PeerView};
use crate::Result;
use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;
use sus_proto::WIRE_FORMAT_VERSION;
use sus_proto::v1::StatusRequest;
use sus_proto::v1::admin_client::AdminClient;
use sus_raft::NodeId;
use tracing::{info, warn};

/// How often each member is checked.
const EVERY: Duration = Duration::from_secs(3);
/// How long a member has to answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// What the checks need of the node (the cluster node implements it).
pub trait Members: Send + Sync {
    /// The other members and their addresses; `None` before the node joins a cluster.
    fn others(&self) -> Option<Vec<(NodeId, String)>>;
    /// A channel to a member, authenticated as this node.
    fn channel(&self, addr: &str) -> Result<PeerChannel>;
    /// Where the view is published.
    fn metrics(&self) -> &Metrics;
}

/// Checks every member until the node stops.
pub(crate) async fn watch(cluster: Weak<dyn Members>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let Some(members) = cluster.others() else {
            continue;
        };
        let checks = members.into_iter().map(|(id, addr)| {
            let cluster = &cluster;
            async move {
                let problem = match cluster.channel(&addr) {
                    Ok(channel) => check(channel).await.err(),
                    Err(e) => Some(e.to_string()),
                };
                (id, PeerView { addr, problem })
            }
        });
        let seen: BTreeMap<NodeId, PeerView> = futures::future::join_all(checks)
            .await
            .into_iter()
            .collect();
        let before = cluster.metrics().peers();
        for (id, view) in &seen {
            let was = before.get(id).and_then(|v| v.problem.as_ref());
            match (&view.problem, was) {
                (Some(now), was) if was != Some(now) => warn!(
                    peer = id,
                    addr = %view.addr,
                    "node {id} at {} is unreachable: {now} (check that it runs, that this is \
                     the address it advertises and can be reached from here, and that its \
                     certificate is signed by this cluster's CA)",
                    view.addr
                ),
                (None, Some(_)) => info!(peer = id, addr = %view.addr, "node {id} reachable again"),
                _ => {}
            }
        }
        cluster.metrics().set_peers(seen);
    }
}

/// One authenticated status call (answered from the member's memory: no consensus round).
async fn check(channel: PeerChannel) -> Result<(), String> {
    let mut request = tonic::Request::new(StatusRequest {
        format: WIRE_FORMAT_VERSION,
        linearizable: false,
    });
    request.set_timeout(TIMEOUT);
    let mut client = AdminClient::new(channel);
    match tokio::time::timeout(TIMEOUT, client.status(request)).await {
        Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(describe(&status)),
    }
}

/// A status with the causes tonic keeps in its source chain ("transport error" alone says
/// nothing about a refused connection or a certificate from another CA).
fn describe(status: &tonic::Status) -> String {
    let mut parts = vec![status.message().to_string()];
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    let parts: Vec<String> = parts
        .into_iter()
        .filter(|p| !p.is_empty() && p != "transport error")
        .fold(Vec::new(), |mut kept, p| {
            if !kept.iter().any(|k: &String| k.contains(&p)) {
                kept.push(p);
            }
            kept
        });
    if parts.is_empty() {
        return format!("{:?}", status.code());
    }
    parts.join(": ")
}
