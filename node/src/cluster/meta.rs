//! The meta group: the cluster's shared state (members, the shard map), replicated by openraft on
//! every node (voters up to five, learners beyond).
//!
//! The state is small, so the state machine keeps it in memory and persists it only as snapshots
//! (`<data>/meta/snapshot.json`, written atomically); after a restart openraft replays the
//! committed log entries after the snapshot (the log store records the committed index).

use super::durable::{receiving_file, storage_error, write_atomically};
use crate::{Error, Result};
use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use sus_raft::{NodeId, Response, TypeConfig};
use tokio::sync::watch;

type Membership = StoredMembership<NodeId, BasicNode>;

/// One data shard in the shard map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// The nodes that host (or are joining as) replicas of the shard.
    pub replicas: Vec<NodeId>,
    /// The voters the shard was created with; the first of them initialises the group. Cleared
    /// by the first replica move, so a node that joins later (or rejoins) never initialises a
    /// group: it catches up from its peers.
    pub bootstrap: Vec<NodeId>,
}

/// The replicated cluster state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    /// Members and their gRPC addresses.
    pub nodes: BTreeMap<NodeId, String>,
    pub replication: u32,
    /// The shard map, indexed by shard number.
    pub shards: Vec<ShardInfo>,
    /// The reference data version (see `RefData::fingerprint`) shard leaders must price with.
    #[serde(default)]
    pub refdata: String,
    /// Ids of removed nodes: never admitted again (a wiped node rejoins under a new id).
    #[serde(default)]
    pub retired: std::collections::BTreeSet<NodeId>,
    /// Freeze points by name: the version each shard froze (indexed by shard number).
    #[serde(default)]
    pub freezes: BTreeMap<String, FreezeRecord>,
    /// The cluster's secret (random, set at bootstrap): keys the patient digests nodes exchange
    /// for distinct counts. Held by nodes only; never sent to clients.
    #[serde(default)]
    pub secret: Vec<u8>,
    /// Users by name.
    #[serde(default)]
    pub users: BTreeMap<String, crate::access::User>,
    /// The audit log (append-only, hash-chained as applied).
    #[serde(default)]
    pub audit: super::audit::AuditLog,
}

/// A freeze point as the meta group records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeRecord {
    /// Seconds since 1970 (UTC), as proposed by the meta leader.
    pub created: i64,
    pub versions: Vec<u64>,
}

/// The commands of the meta group (a closed set; applying them is deterministic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Creates the shard map over the bootstrap members (once).
    Bootstrap {
        nodes: Vec<(NodeId, String)>,
        shards: u32,
        replication: u32,
        refdata: String,
        secret: Vec<u8>,
    },
    SetRefData {
        version: String,
    },
    AddNode {
        id: NodeId,
        addr: String,
    },
    RemoveNode {
        id: NodeId,
    },
    SetReplicas {
        shard: u32,
        replicas: Vec<NodeId>,
    },
    /// Records a freeze point every shard has taken (a name is recorded once).
    Freeze {
        name: String,
        record: FreezeRecord,
    },
    /// Adds a user (a name is never reused, even after revocation).
    AddUser {
        name: String,
        user: crate::access::User,
    },
    /// Revokes a user and every token issued to it.
    RevokeUser {
        name: String,
    },
    /// Appends records to the audit log.
    Audit {
        records: Vec<sus_proto::audit::Record>,
    },
}

impl MetaState {
    /// Applies a command; an inapplicable one leaves the state unchanged and says why.
    pub fn apply(&mut self, command: MetaCommand) -> std::result::Result<(), String> {
        match command {
            MetaCommand::Bootstrap {
                nodes,
                shards,
                replication,
                refdata,
                secret,
            } => {
                if !self.shards.is_empty() {
                    return Err("the cluster is already bootstrapped".into());
                }
                self.refdata = refdata;
                self.secret = secret;
                let ids: Vec<NodeId> = nodes.iter().map(|(id, _)| *id).collect();
                let rf = (replication as usize).min(ids.len()).max(1);
                self.replication = replication;
                self.nodes.extend(nodes);
                // Replicas round-robin; the first replica (who initialises the group and so
                // usually leads it first) rotates too, spreading leaders over the nodes.
                self.shards = (0..shards as usize)
                    .map(|s| {
                        let replicas: Vec<NodeId> =
                            (0..rf).map(|k| ids[(s + k) % ids.len()]).collect();
                        ShardInfo {
                            bootstrap: replicas.clone(),
                            replicas,
                        }
                    })
                    .collect();
                Ok(())
            }
            MetaCommand::SetRefData { version } => {
                self.refdata = version;
                Ok(())
            }
            MetaCommand::AddNode { id, addr } => {
                if self.retired.contains(&id) {
                    return Err(format!("node id {id} was removed and is never reused"));
                }
                self.nodes.insert(id, addr);
                Ok(())
            }
            MetaCommand::RemoveNode { id } => {
                if self.shards.iter().any(|s| s.replicas.contains(&id)) {
                    return Err(format!("node {id} still hosts shard replicas"));
                }
                self.nodes.remove(&id);
                self.retired.insert(id);
                Ok(())
            }
            MetaCommand::SetReplicas { shard, replicas } => {
                let info = self
                    .shards
                    .get_mut(shard as usize)
                    .ok_or_else(|| format!("no shard {shard}"))?;
                info.replicas = replicas;
                // A move needs a leader, so the group exists: nobody may initialise it again
                // (a former initiator that rejoins must catch up like any new replica).
                info.bootstrap.clear();
                Ok(())
            }
            MetaCommand::Freeze { name, record } => {
                if self.freezes.contains_key(&name) {
                    return Err(format!("freeze point '{name}' already exists"));
                }
                self.freezes.insert(name, record);
                Ok(())
            }
            MetaCommand::AddUser { name, user } => {
                if self.users.contains_key(&name) {
                    return Err(format!(
                        "user {name} already exists (names are never reused)"
                    ));
                }
                self.users.insert(name, user);
                Ok(())
            }
            MetaCommand::RevokeUser { name } => {
                let user = self
                    .users
                    .get_mut(&name)
                    .ok_or_else(|| format!("no user {name}"))?;
                user.revoked = true;
                user.generation += 1;
                Ok(())
            }
            MetaCommand::Audit { records } => {
                for r in records {
                    self.audit.append(r);
                }
                Ok(())
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Persisted {
    meta: SnapshotMeta<NodeId, BasicNode>,
    state: MetaState,
}

/// The meta group's state machine; publishes every new state on a watch channel.
pub struct MetaStateMachine {
    dir: PathBuf,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    state: MetaState,
    tx: Arc<watch::Sender<MetaState>>,
}

impl MetaStateMachine {
    /// Opens the state machine, loading its last snapshot if any.
    pub fn open(dir: &Path) -> Result<(MetaStateMachine, watch::Receiver<MetaState>)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join("snapshot.json");
        let (applied, membership, state) = match std::fs::read(&path) {
            Ok(bytes) => {
                let p: Persisted =
                    serde_json::from_slice(&bytes).map_err(|e| Error::Corruption {
                        what: path.display().to_string(),
                        message: e.to_string(),
                    })?;
                (p.meta.last_log_id, p.meta.last_membership, p.state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (None, Membership::default(), MetaState::default())
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let (tx, rx) = watch::channel(state.clone());
        Ok((
            MetaStateMachine {
                dir: dir.to_path_buf(),
                applied,
                membership,
                state,
                tx: Arc::new(tx),
            },
            rx,
        ))
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join("snapshot.json")
    }
}

/// The answer of the meta state machine to one command: empty, or why it was not applied.
pub fn decode_response(response: &Response) -> std::result::Result<(), String> {
    if response.0.is_empty() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&response.0).into_owned())
    }
}

impl RaftStateMachine<TypeConfig> for MetaStateMachine {
    type SnapshotBuilder = MetaSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> std::result::Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        for entry in entries {
            self.applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Normal(request) => {
                    let command: MetaCommand = bincode::deserialize(&request.0).map_err(|e| {
                        storage_error(Error::Corruption {
                            what: "meta command".into(),
                            message: e.to_string(),
                        })
                    })?;
                    match self.state.apply(command) {
                        Ok(()) => Response::default(),
                        Err(why) => Response(why.into_bytes()),
                    }
                }
                EntryPayload::Membership(m) => {
                    self.membership = Membership::new(Some(entry.log_id), m);
                    Response::default()
                }
            };
            responses.push(response);
        }
        self.tx.send_replace(self.state.clone());
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> MetaSnapshotBuilder {
        MetaSnapshotBuilder {
            path: self.snapshot_path(),
            persisted: Persisted {
                meta: SnapshotMeta {
                    last_log_id: self.applied,
                    last_membership: self.membership.clone(),
                    snapshot_id: format!("meta-{}", self.applied.map_or(0, |l| l.index)),
                },
                state: self.state.clone(),
            },
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let path = self.dir.join("incoming.json");
        Ok(Box::new(receiving_file(&path).await?))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> std::result::Result<(), StorageError<NodeId>> {
        drop(snapshot);
        let incoming = self.dir.join("incoming.json");
        let bytes = std::fs::read(&incoming).map_err(|e| storage_error(Error::io(&incoming, e)))?;
        let received: Persisted = serde_json::from_slice(&bytes).map_err(|e| {
            storage_error(Error::Corruption {
                what: "received meta snapshot".into(),
                message: e.to_string(),
            })
        })?;
        let persisted = Persisted {
            meta: meta.clone(),
            state: received.state,
        };
        write_persisted(&self.snapshot_path(), &persisted).map_err(storage_error)?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.state = persisted.state;
        self.tx.send_replace(self.state.clone());
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let path = self.snapshot_path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(storage_error(Error::io(&path, e))),
        };
        let persisted: Persisted = serde_json::from_slice(&bytes).map_err(|e| {
            storage_error(Error::Corruption {
                what: path.display().to_string(),
                message: e.to_string(),
            })
        })?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| storage_error(Error::io(&path, e)))?;
        Ok(Some(Snapshot {
            meta: persisted.meta,
            snapshot: Box::new(file),
        }))
    }
}

fn write_persisted(path: &Path, persisted: &Persisted) -> Result<()> {
    let bytes = serde_json::to_vec(persisted).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    write_atomically(path, &bytes)
}

/// Writes the meta snapshot (the whole state as JSON).
pub struct MetaSnapshotBuilder {
    path: PathBuf,
    persisted: Persisted,
}

impl RaftSnapshotBuilder<TypeConfig> for MetaSnapshotBuilder {
    async fn build_snapshot(
        &mut self,
    ) -> std::result::Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        write_persisted(&self.path, &self.persisted).map_err(storage_error)?;
        let file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| storage_error(Error::io(&self.path, e)))?;
        Ok(Snapshot {
            meta: self.persisted.meta.clone(),
            snapshot: Box::new(file),
        })
    }
}
