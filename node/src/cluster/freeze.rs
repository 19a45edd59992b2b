//! Freeze points and compaction, both proposed through every shard's Raft log.
//!
//! **Freeze points.** The meta leader asks every shard's leader to record the name in its log
//! (`ShardCommand::Freeze`: each replica stores its current version under the name when it
//! applies the entry), then records the vector of versions in the meta group. Each shard's
//! version is taken after the request arrived, so everything acknowledged before the freeze was
//! asked for is in it. Submissions are single-shard, so any such vector is a consistent cut. A
//! freeze that fails part-way leaves names on some shards only; retrying the same name reuses them
//! (a shard keeps the version it first froze).
//!
//! **Compaction** is asked through each shard's log too, so every replica is asked; each runs
//! it in the background, beside its applies (`compactions.rs`), and the leader answers once its
//! own replica's job has finished.

use super::Cluster;
use super::command::ShardCommand;
use super::meta::{FreezeRecord, MetaCommand};
use super::service::{LEADER_WAIT, Services};
use crate::store::check_freeze_name;
use crate::{Error, Result};
use std::time::Duration;
use sus_proto::WIRE_FORMAT_VERSION;
use sus_proto::v1::*;
use tonic::Request;
use tracing::info;

/// Segments smaller than this are merged by a compaction that names no target.
pub const DEFAULT_COMPACT_ROWS: u32 = 250_000;

pub(crate) fn freeze_point(name: &str, r: &FreezeRecord) -> FreezePoint {
    FreezePoint {
        name: name.to_string(),
        created: r.created,
        versions: r
            .versions
            .iter()
            .enumerate()
            .map(|(shard, version)| ShardVersion {
                shard: shard as u32,
                version: *version,
            })
            .collect(),
    }
}

impl Services {
    /// On the meta leader: freezes every shard, then records the freeze point.
    pub(crate) async fn create_freeze_here(&self, name: String) -> Result<FreezePoint> {
        check_freeze_name(&name)?;
        let state = self.cluster.meta_state();
        if let Some(r) = state.freezes.get(&name) {
            return Ok(freeze_point(&name, r));
        }
        let shards = state.shards.len() as u32;
        if shards == 0 {
            return Err(Error::Consensus("the cluster has no shard map yet".into()));
        }
        let calls = (0..shards).map(|shard| self.freeze_shard(shard, name.clone()));
        let versions = futures::future::try_join_all(calls).await?;
        let record = FreezeRecord {
            created: chrono::Utc::now().timestamp(),
            versions,
        };
        self.cluster
            .propose_meta(&MetaCommand::Freeze {
                name: name.clone(),
                record: record.clone(),
            })
            .await?;
        info!(freeze = %name, versions = ?record.versions, "freeze point taken");
        Ok(freeze_point(&name, &record))
    }

    /// Has the shard's leader record freeze point `name`, retrying while leadership moves.
    pub(crate) async fn freeze_shard(&self, shard: u32, name: String) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT * 3;
        loop {
            let result = match self.shard_leader_anywhere(shard).await {
                Some(leader) => match self.admin_client(leader) {
                    Ok(mut c) => c
                        .shard_freeze(ShardFreezeRequest {
                            format: WIRE_FORMAT_VERSION,
                            shard,
                            name: name.clone(),
                        })
                        .await
                        .map(|r| r.into_inner().version),
                    Err(e) => Err(tonic::Status::from(e)),
                },
                None => Err(Error::Consensus(format!("shard {shard} has no leader")).into()),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) if e.code() == tonic::Code::InvalidArgument => {
                    return Err(Error::InvalidArgument(e.message().to_string()));
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Consensus(format!(
                        "freeze of shard {shard}: {}",
                        e.message()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Proposes `command` to `shard` if this node leads it.
    pub(crate) async fn on_shard_leader(
        &self,
        shard: u32,
        command: ShardCommand,
    ) -> Result<Vec<u8>> {
        let (raft, _) = self
            .cluster
            .shard(shard)
            .ok_or_else(|| Error::Consensus(format!("shard {shard} is not hosted here")))?;
        let leader = Cluster::wait_leader(&raft, LEADER_WAIT).await;
        if leader != Some(self.cluster.id) {
            return Err(Error::Consensus(format!(
                "node {} does not lead shard {shard} (leader: {leader:?}); retry",
                self.cluster.id
            )));
        }
        self.propose_shard(&raft, &command).await
    }

    /// Compacts `shards` (all when empty) through each shard's leader.
    pub(crate) async fn compact_shards(
        &self,
        shards: Vec<u32>,
        target_rows: u32,
        forwarded: bool,
    ) -> Result<CompactReply> {
        let target_rows = if target_rows == 0 {
            DEFAULT_COMPACT_ROWS
        } else {
            target_rows
        };
        let shards = if shards.is_empty() {
            (0..self.cluster.meta_state().shards.len() as u32).collect()
        } else {
            shards
        };
        let mut total = CompactReply::default();
        for shard in shards {
            let command = ShardCommand::Compact { target_rows };
            let reply = if forwarded {
                self.compact_here(shard, command).await?
            } else {
                let leader = self.shard_leader_anywhere(shard).await.ok_or_else(|| {
                    Error::Consensus(format!("shard {shard} has no leader; retry"))
                })?;
                if leader == self.cluster.id {
                    self.compact_here(shard, command).await?
                } else {
                    let mut c = self.admin_client(leader)?;
                    let mut r = Request::new(CompactRequest {
                        format: WIRE_FORMAT_VERSION,
                        shards: vec![shard],
                        target_rows,
                        forwarded: true,
                    });
                    r.set_timeout(super::service::ADMIN_TIMEOUT);
                    c.compact(r).await?.into_inner()
                }
            };
            total.segments_before += reply.segments_before;
            total.segments_after += reply.segments_after;
            total.rows_dropped += reply.rows_dropped;
        }
        Ok(total)
    }
}

impl Services {
    /// Proposes a compaction on this node, the shard's leader, and waits for its own replica's
    /// background job (started by the entry) to finish.
    async fn compact_here(&self, shard: u32, command: ShardCommand) -> Result<CompactReply> {
        let answer = self.on_shard_leader(shard, command).await?;
        // The entry's answer is its index (the job's name on every replica).
        let index = <[u8; 8]>::try_from(answer.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| Error::Internal("malformed compaction answer".into()))?;
        let (_, replica) = self
            .cluster
            .shard(shard)
            .ok_or_else(|| Error::Consensus(format!("shard {shard} is not hosted here")))?;
        let stats = replica
            .compactions
            .wait(index, super::service::ADMIN_TIMEOUT)
            .await?;
        Ok(CompactReply {
            segments_before: stats.segments_before,
            segments_after: stats.segments_after,
            rows_dropped: stats.rows_dropped,
        })
    }
}
