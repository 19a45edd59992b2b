//! Section `pki` of the security suite (see `main.rs`): node identity, on a cluster of its own
//! (4 nodes, TLS; node 4 is removed half-way).
//!
//! The attacker holds the operator's client certificate (`client.pem` of `sus certs init`), or
//! no certificate, or a member's node certificate, or the certificate of a node that has been
//! removed, and speaks raw gRPC to the internal services with hand-built openraft messages: a
//! Vote with a huge term (a forced election), an AppendEntries from an invented leader carrying
//! a forged meta command that adds an administrator, an InstallSnapshot, a Join, an AppendAudit.
//! Each must be refused with its exact code and message, and the meta group must show that
//! nothing happened: same term and leader on every node, same users. Then the cluster must
//! still elect, replicate and admit a new node normally.

use crate::ensure;
use crate::fixture::{Cases, channel_to, refused, with_token};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, SnapshotMeta, StoredMembership, Vote,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use sus_chaos_tests::cluster::{NodeOptions, TestCluster};
use sus_node::access::{Role, Tier, User, password::PasswordHash};
use sus_node::cluster::meta::MetaCommand;
use sus_proto::WIRE_FORMAT_VERSION;
use sus_proto::v1::{self, RaftRequest};
use sus_raft::{META_GROUP, NodeId, TypeConfig};
use tonic::Code;
use tonic::transport::Channel;

/// The term of every forged message: far above anything the cluster reaches by itself, so a
/// node that accepted one would show it.
const FORGED_TERM: u64 = 1 << 40;
/// An invented leader: no node of the cluster has this id.
const INVENTED: NodeId = 99;
/// The administrator the forged meta command tries to add.
const MALLORY: &str = "mallory";

/// Certificate and key (PEM) of an identity.
type Identity = (Vec<u8>, Vec<u8>);

fn read_identity(cert: &Path, key: &Path) -> Identity {
    (
        std::fs::read(cert).expect("certificate"),
        std::fs::read(key).expect("key"),
    )
}

/// The operator's client certificate, which bootstraps the cluster.
fn operator(cluster: &TestCluster) -> Identity {
    read_identity(&cluster.certs.client.0, &cluster.certs.client.1)
}

/// Node `id`'s own certificate.
fn node_identity(cluster: &TestCluster, id: NodeId) -> Identity {
    let dir = cluster.certs.ca.parent().expect("the certificates' folder");
    let (cert, key) = sus_client::certs::node_files(dir, id);
    read_identity(&cert, &key)
}

fn raft_client(ch: Channel) -> v1::raft_client::RaftClient<Channel> {
    v1::raft_client::RaftClient::new(ch)
        .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(sus_proto::MAX_MESSAGE_BYTES)
}

fn raft_request<T: serde::Serialize>(group: u64, message: &T) -> RaftRequest {
    RaftRequest {
        format: WIRE_FORMAT_VERSION,
        group,
        payload: bincode::serialize(message).expect("bincode").into(),
    }
}

/// A Vote from `candidate` with a huge term.
fn forged_vote(candidate: NodeId) -> RaftRequest {
    let vote: VoteRequest<NodeId> = VoteRequest {
        vote: Vote::new(FORGED_TERM, candidate),
        last_log_id: Some(LogId::new(
            CommittedLeaderId::new(FORGED_TERM - 1, candidate),
            1 << 30,
        )),
    };
    raft_request(META_GROUP, &vote)
}

/// The meta group as node `id` sees it: (term, leader, last log index).
async fn meta_view(cluster: &TestCluster, id: NodeId) -> Result<(u64, u64, u64), String> {
    let status = cluster.status_of(id).await?;
    let g = status
        .groups
        .iter()
        .find(|g| g.group == META_GROUP)
        .ok_or("no meta group in the status")?;
    Ok((g.term, g.leader, g.last_log))
}

/// Term and leader of the meta group on every node in `nodes`.
async fn terms(
    cluster: &TestCluster,
    nodes: &[NodeId],
) -> Result<BTreeMap<NodeId, (u64, u64)>, String> {
    let mut out = BTreeMap::new();
    for id in nodes {
        let (term, leader, _) = meta_view(cluster, *id).await?;
        out.insert(*id, (term, leader));
    }
    Ok(out)
}

/// An AppendEntries from `leader` (invented, or a node whose certificate the attacker holds)
/// that a follower whose last log entry is `(term, last_leader, last)` would append and commit:
/// one entry adding the administrator `mallory`.
fn forged_append(leader: NodeId, term: u64, last_leader: NodeId, last: u64) -> RaftRequest {
    let command = MetaCommand::AddUser {
        name: MALLORY.into(),
        user: User {
            role: Role::Admin,
            org: String::new(),
            max_tier: Tier::Identifiable,
            delegated: Vec::new(),
            password: PasswordHash::new("mallory-owns-the-cluster-now"),
            generation: 0,
            revoked: false,
            created: 0,
        },
    };
    let id = LogId::new(CommittedLeaderId::new(FORGED_TERM, leader), last + 1);
    let append: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote: Vote::new_committed(FORGED_TERM, leader),
        prev_log_id: Some(LogId::new(CommittedLeaderId::new(term, last_leader), last)),
        entries: vec![Entry {
            log_id: id,
            payload: EntryPayload::Normal(sus_raft::Request(
                bincode::serialize(&command).expect("bincode"),
            )),
        }],
        leader_commit: Some(id),
    };
    raft_request(META_GROUP, &append)
}

/// A forged AppendEntries aimed at node `target`'s current log.
async fn forged_append_for(
    cluster: &TestCluster,
    target: NodeId,
    leader: NodeId,
) -> Result<RaftRequest, String> {
    let (term, last_leader, last) = meta_view(cluster, target).await?;
    Ok(forged_append(leader, term, last_leader, last))
}

/// A snapshot that would replace the meta state with an empty one.
fn forged_snapshot(leader: NodeId) -> RaftRequest {
    let snapshot: InstallSnapshotRequest<TypeConfig> = InstallSnapshotRequest {
        vote: Vote::new_committed(FORGED_TERM, leader),
        meta: SnapshotMeta {
            last_log_id: Some(LogId::new(
                CommittedLeaderId::new(FORGED_TERM, leader),
                1 << 30,
            )),
            last_membership: StoredMembership::default(),
            snapshot_id: "forged".into(),
        },
        offset: 0,
        data: b"{}".to_vec(),
        done: true,
    };
    raft_request(META_GROUP, &snapshot)
}

/// Every node in `nodes` still has the terms and leaders of `before`, and none holds `mallory`
/// (every difference is reported).
async fn nothing_happened(
    cluster: &TestCluster,
    nodes: &[NodeId],
    before: &BTreeMap<NodeId, (u64, u64)>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let after = terms(cluster, nodes).await?;
    if &after != before {
        problems.push(format!(
            "the meta group moved: (term, leader) by node before {before:?}, after {after:?}"
        ));
    }
    for id in nodes {
        match cluster.client(&[*id]).list_users().await {
            Ok(users) if users.iter().any(|u| u.name == MALLORY) => {
                problems.push(format!(
                    "node {id} holds the forged administrator {MALLORY}"
                ));
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("node {id} lists no users: {e}")),
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

/// Both checks' failures (the refusal, and that nothing happened), so that a regression shows
/// what an accepted attack did.
fn both(refusal: Result<(), String>, effects: Result<(), String>) -> Result<(), String> {
    match (refusal, effects) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(format!("{a}; and {b}")),
    }
}

fn join_request(target: NodeId) -> v1::JoinRequest {
    v1::JoinRequest {
        format: WIRE_FORMAT_VERSION,
        cluster_id: "sus-forged".into(),
        node_id: target,
        members: vec![INVENTED],
    }
}

const OPERATOR_REFUSED: &str = "is for the cluster's nodes only: this connection presents an \
                                operator (client) certificate, which names no node";

pub async fn run(cases: &mut Cases) {
    let refdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_sus-node"));
    // Long election timeouts: any election seen here is the attack's, not the machine's load.
    let options = NodeOptions {
        heartbeat_ms: 100,
        election_ms: 2000,
        ..NodeOptions::default()
    };
    let mut cluster = TestCluster::start(&bin, &refdata, 4, 2, 3, options)
        .await
        .expect("the test cluster starts");
    let all: Vec<NodeId> = vec![1, 2, 3, 4];
    let leader = cluster.leader_of(META_GROUP).await.expect("a meta leader");
    let follower = *all.iter().find(|n| **n != leader).expect("a follower");
    let before = terms(&cluster, &all).await.expect("status");
    let op = operator(&cluster);

    cases
        .check(
            "pki: Vote with a huge term over the operator's certificate",
            async {
                let ch = channel_to(&cluster, leader, Some(op.clone())).await;
                let r = raft_client(ch).vote(forged_vote(INVENTED)).await;
                let refusal = refused(
                    r,
                    Code::PermissionDenied,
                    &format!("the Raft service {OPERATOR_REFUSED}"),
                );
                both(refusal, nothing_happened(&cluster, &all, &before).await)
            },
        )
        .await;

    cases
        .check(
            "pki: AppendEntries from an invented leader adding an administrator, over the \
             operator's certificate",
            async {
                let forged = forged_append_for(&cluster, follower, INVENTED).await?;
                let ch = channel_to(&cluster, follower, Some(op.clone())).await;
                let r = raft_client(ch).append_entries(forged).await;
                let refusal = refused(
                    r,
                    Code::PermissionDenied,
                    &format!("the Raft service {OPERATOR_REFUSED}"),
                );
                both(refusal, nothing_happened(&cluster, &all, &before).await)
            },
        )
        .await;

    cases
        .check(
            "pki: InstallSnapshot over the operator's certificate",
            async {
                let ch = channel_to(&cluster, follower, Some(op.clone())).await;
                let r = raft_client(ch)
                    .install_snapshot(forged_snapshot(INVENTED))
                    .await;
                let refusal = refused(
                    r,
                    Code::PermissionDenied,
                    &format!("the Raft service {OPERATOR_REFUSED}"),
                );
                both(refusal, nothing_happened(&cluster, &all, &before).await)
            },
        )
        .await;

    cases
        .check("pki: Join over the operator's certificate", async {
            let ch = channel_to(&cluster, follower, Some(op.clone())).await;
            let r = v1::admin_client::AdminClient::new(ch)
                .join(join_request(follower))
                .await;
            refused(
                r,
                Code::PermissionDenied,
                &format!("Join {OPERATOR_REFUSED}"),
            )
        })
        .await;

    cases
        .check(
            "pki: a node refuses to start with another node's certificate",
            async {
                let dir = cluster.certs.ca.parent().ok_or("no certificates' folder")?;
                let (cert, key) = sus_client::certs::node_files(dir, 1);
                let out = tokio::process::Command::new(&bin)
                    .arg("--data-dir")
                    .arg(cluster.scratch().join("impostor"))
                    .arg("--refdata")
                    .arg(&refdata)
                    .args(["serve", "--id", "7", "--listen", "127.0.0.1:0", "--tls-ca"])
                    .arg(&cluster.certs.ca)
                    .arg("--tls-cert")
                    .arg(&cert)
                    .arg("--tls-key")
                    .arg(&key)
                    .kill_on_drop(true)
                    .output();
                let out = tokio::time::timeout(Duration::from_secs(60), out)
                    .await
                    .map_err(|_| "the node did not exit")?
                    .map_err(|e| e.to_string())?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                ensure!(
                    out.status.code() == Some(1)
                        && stderr.contains("names node 1, but this is node 7")
                        && stderr.contains("sus certs node --dir DIR --id 7"),
                    "exit {:?}: {stderr}",
                    out.status.code()
                );
                Ok(())
            },
        )
        .await;

    let admin_token = cluster.token.clone().expect("the admin token");
    cases
        .check(
            "pki: AppendAudit with the administrator's user token",
            async {
                let ch = channel_to(&cluster, leader, Some(op.clone())).await;
                let request = v1::AppendAuditRequest {
                    format: WIRE_FORMAT_VERSION,
                    records_json: Vec::new(),
                };
                let r = v1::admin_client::AdminClient::new(ch.clone())
                    .append_audit(with_token(request.clone(), Some(&admin_token)))
                    .await;
                refused(
                    r,
                    Code::PermissionDenied,
                    "user admin (role admin) may not append to the audit log",
                )?;
                let r = v1::admin_client::AdminClient::new(ch)
                    .append_audit(with_token(request, None))
                    .await;
                refused(r, Code::Unauthenticated, "no bearer token")
            },
        )
        .await;

    cases
        .check(
            "pki: internal shard calls (ShardFreeze, ChangeShardReplicas) with the \
             administrator's user token",
            async {
                let ch = channel_to(&cluster, leader, None).await;
                let mut admin = v1::admin_client::AdminClient::new(ch);
                let r = admin
                    .shard_freeze(with_token(
                        v1::ShardFreezeRequest {
                            format: WIRE_FORMAT_VERSION,
                            shard: 0,
                            name: "forged".into(),
                        },
                        Some(&admin_token),
                    ))
                    .await;
                refused(
                    r,
                    Code::PermissionDenied,
                    "may not freeze a shard (an internal call)",
                )?;
                let r = admin
                    .change_shard_replicas(with_token(
                        v1::ChangeShardReplicasRequest {
                            format: WIRE_FORMAT_VERSION,
                            shard: 0,
                            replicas: vec![v1::NodeAddress {
                                id: leader,
                                addr: cluster.nodes[&leader].addr.clone(),
                            }],
                        },
                        Some(&admin_token),
                    ))
                    .await;
                refused(
                    r,
                    Code::PermissionDenied,
                    "may not change shard replicas (an internal call)",
                )
            },
        )
        .await;

    cases
        .check("pki: x-sus-on-behalf with a user's token", async {
            // Only a node acting for a client may receive partial states.
            let ch = channel_to(&cluster, leader, None).await;
            let mut request = with_token(
                v1::AggregateRequest {
                    format: WIRE_FORMAT_VERSION,
                    query: Some(crate::fixture::spec(
                        "apc",
                        &[],
                        Vec::new(),
                        &[(v1::aggregate::Func::Count, "", "n")],
                        v1::Tier::Identifiable,
                    )),
                    shards: vec![0],
                    linearizable: false,
                    finish: false,
                    distinct_counts: false,
                },
                Some(&admin_token),
            );
            request
                .metadata_mut()
                .insert("x-sus-on-behalf", admin_token.parse().expect("header"));
            let r = v1::query_client::QueryClient::new(ch)
                .aggregate(request)
                .await;
            refused(
                r,
                Code::PermissionDenied,
                "x-sus-on-behalf is sent only by a node of the cluster",
            )
        })
        .await;

    cases
        .check(
            "pki: Init over a node's certificate, and over the operator's once initialised",
            async {
                let request = v1::InitRequest {
                    format: WIRE_FORMAT_VERSION,
                    nodes: vec![v1::NodeAddress {
                        id: follower,
                        addr: cluster.nodes[&follower].addr.clone(),
                    }],
                    shards: 1,
                    replication: 1,
                    admin_password: "a-new-admin-password-of-mine".into(),
                };
                let ch =
                    channel_to(&cluster, follower, Some(node_identity(&cluster, leader))).await;
                let r = v1::admin_client::AdminClient::new(ch)
                    .init(request.clone())
                    .await;
                refused(
                    r,
                    Code::PermissionDenied,
                    &format!(
                        "Init is authorised by the operator's client certificate (client.pem of \
                     `sus certs init`); this connection presents node {leader}'s certificate"
                    ),
                )?;
                let ch = channel_to(&cluster, follower, Some(op.clone())).await;
                let r = v1::admin_client::AdminClient::new(ch).init(request).await;
                refused(
                    r,
                    Code::InvalidArgument,
                    "the cluster is already initialised",
                )
            },
        )
        .await;

    cases
        .check("pki: Raft calls without a client certificate", async {
            let ch = channel_to(&cluster, leader, None).await;
            let r = raft_client(ch.clone()).vote(forged_vote(INVENTED)).await;
            refused(
                r,
                Code::Unauthenticated,
                "the Raft service is for the cluster's nodes only: present a node certificate \
                 (sus://node/<id>) of the cluster's CA; this connection presents none",
            )?;
            let forged = forged_append_for(&cluster, leader, INVENTED).await?;
            let r = raft_client(ch).append_entries(forged).await;
            refused(r, Code::Unauthenticated, "this connection presents none")?;
            nothing_happened(&cluster, &all, &before).await
        })
        .await;

    // A member's certificate (stolen with its key, or a member gone rogue) speaks only for that
    // node: not for the leader it claims to be.
    let (thief, claimed) = (follower, leader);
    cases
        .check(
            format!(
                "pki: node {thief}'s certificate sending Raft messages as node {claimed} (a \
                 Vote, an AppendEntries as the leader)"
            ),
            async {
                let target = *all
                    .iter()
                    .find(|n| **n != thief && **n != claimed)
                    .expect("a third node");
                let ch = channel_to(&cluster, target, Some(node_identity(&cluster, thief))).await;
                let mismatch = format!(
                    "this Raft message names node {claimed} as its sender, but the connection's \
                     certificate is node {thief}'s"
                );
                let r = raft_client(ch.clone()).vote(forged_vote(claimed)).await;
                refused(r, Code::PermissionDenied, &mismatch)?;
                let forged = forged_append_for(&cluster, target, claimed).await?;
                let r = raft_client(ch).append_entries(forged).await;
                refused(r, Code::PermissionDenied, &mismatch)?;
                nothing_happened(&cluster, &all, &before).await
            },
        )
        .await;

    // Node 4 leaves the cluster; its certificate (and key) remain, in an attacker's hands.
    let removed: NodeId = 4;
    let admin = cluster.client(&[1, 2, 3]);
    let removal = admin.remove_node(removed).await;
    cluster.kill(removed).await;
    let rest: Vec<NodeId> = vec![1, 2, 3];
    let leader = cluster.leader_of(META_GROUP).await.expect("a meta leader");
    let follower = *rest.iter().find(|n| **n != leader).expect("a follower");
    let before = terms(&cluster, &rest).await.expect("status");
    cases
        .check(
            format!("pki: Vote and AppendEntries over removed node {removed}'s certificate"),
            async {
                removal.map_err(|e| format!("remove-node: {e}"))?;
                let gone = format!(
                    "the Raft service refused: node {removed} was removed from this cluster, and \
                     its certificate is no longer accepted"
                );
                let identity = node_identity(&cluster, removed);
                let ch = channel_to(&cluster, leader, Some(identity.clone())).await;
                let r = raft_client(ch).vote(forged_vote(removed)).await;
                refused(r, Code::PermissionDenied, &gone)?;
                let forged = forged_append_for(&cluster, follower, removed).await?;
                let ch = channel_to(&cluster, follower, Some(identity.clone())).await;
                let r = raft_client(ch.clone()).append_entries(forged).await;
                refused(r, Code::PermissionDenied, &gone)?;
                let r = v1::admin_client::AdminClient::new(ch)
                    .join(join_request(follower))
                    .await;
                refused(
                    r,
                    Code::PermissionDenied,
                    &format!("Join refused: node {removed} was removed from this cluster"),
                )?;
                nothing_happened(&cluster, &rest, &before).await
            },
        )
        .await;

    cases
        .check(
            "pki: the cluster still elects, replicates and admits a node (over node \
             certificates)",
            async {
                // An election: leadership moves to a follower.
                admin
                    .transfer_leader(META_GROUP, follower)
                    .await
                    .map_err(|e| format!("transfer-leader: {e}"))?;
                let now = cluster
                    .leader_of(META_GROUP)
                    .await
                    .ok_or("no meta leader after the transfer")?;
                ensure!(
                    now == follower,
                    "node {follower} did not take the lead ({now} did)"
                );
                // A write through the new leader reaches every node.
                admin
                    .add_user(
                        sus_client::cluster::UserInfo {
                            name: "after_attacks".into(),
                            role: "auditor".into(),
                            max_tier: v1::Tier::Anonymised as i32,
                            ..Default::default()
                        },
                        "a-long-enough-password",
                    )
                    .await
                    .map_err(|e| format!("add user: {e}"))?;
                // A new node (a new id, its own certificate) joins and catches up.
                let addr = cluster.spawn(5, "127.0.0.1:0").await?;
                admin
                    .add_node(5, &addr, false)
                    .await
                    .map_err(|e| format!("add-node 5: {e}"))?;
                cluster
                    .wait_for(
                        "every node to hold the new user",
                        Duration::from_secs(60),
                        async |c| {
                            let mut all = true;
                            for id in [1, 2, 3, 5] {
                                let seen = c.client(&[id]).list_users().await.is_ok_and(|users| {
                                    users.iter().any(|u| u.name == "after_attacks")
                                });
                                all &= seen;
                            }
                            all
                        },
                    )
                    .await?;
                let (_, leader_seen, _) = meta_view(&cluster, 5).await?;
                ensure!(leader_seen == follower, "node 5 sees leader {leader_seen}");
                let status = cluster.status_of(follower).await?;
                ensure!(
                    status.nodes.iter().any(|n| n.id == 5)
                        && !status.nodes.iter().any(|n| n.id == removed),
                    "members: {:?}",
                    status.nodes
                );
                Ok(())
            },
        )
        .await;
}
