//! Freeze points, compaction and the `Query` service (pushed-down aggregates and scans).
//!
//! **Freeze points.** The meta leader asks every shard's leader to record the name in its log
//! (`ShardCommand::Freeze`: each replica stores its current version under the name when it
//! applies the entry), then records the vector of versions in the meta group. Each shard's
//! version is taken after the request arrived, so everything acknowledged before the freeze was
//! asked for is in it. Submissions are single-shard, so any such vector is a consistent cut. A
//! freeze that fails part-way leaves names on some shards only; retrying the same name reuses them
//! (a shard keeps the version it first froze).
//!
//! **Reads.** A node answers `Aggregate` and `Scan` for the shards it hosts. The view is resolved
//! on each replica from its own catalog, so a replica that has not yet applied a freeze entry says
//! `NOT_FOUND` (the client then asks the shard's leader). With `linearizable` the replica must
//! lead the shard and confirms it with a read-index round first (read your writes).

use super::command::ShardCommand;
use super::meta::{FreezeRecord, MetaCommand};
use super::service::{LEADER_WAIT, Services, check_format, status};
use super::{Cluster, shard::ShardReplica};
use crate::query::{self, PatientKey, Query};
use crate::store::check_freeze_name;
use crate::{Error, Result};
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use sus_proto::partial::batch_to_ipc;
use sus_proto::v1::query_server::{self, QueryServer};
use sus_proto::v1::*;
use sus_proto::{MAX_MESSAGE_BYTES, WIRE_FORMAT_VERSION};
use sus_raft::Raft;
use tonic::{Request, Response, Status};
use tracing::info;

/// Segments smaller than this are merged by a compaction that names no target.
pub const DEFAULT_COMPACT_ROWS: u32 = 250_000;

pub(super) fn freeze_point(name: &str, r: &FreezeRecord) -> FreezePoint {
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
    /// The `Query` service with explicit message limits.
    pub fn query(&self) -> QueryServer<Services> {
        QueryServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// On the meta leader: freezes every shard, then records the freeze point.
    pub(super) async fn create_freeze_here(&self, name: String) -> Result<FreezePoint> {
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
    async fn freeze_shard(&self, shard: u32, name: String) -> Result<u64> {
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
                    Err(e) => Err(e),
                },
                None => Err(Status::unavailable(format!("shard {shard} has no leader"))),
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
    pub(super) async fn on_shard_leader(
        &self,
        shard: u32,
        command: ShardCommand,
    ) -> std::result::Result<Vec<u8>, Status> {
        let (raft, _) = self
            .cluster
            .shard(shard)
            .ok_or_else(|| Status::unavailable(format!("shard {shard} is not hosted here")))?;
        let leader = Cluster::wait_leader(&raft, LEADER_WAIT).await;
        if leader != Some(self.cluster.id) {
            return Err(Status::unavailable(format!(
                "node {} does not lead shard {shard} (leader: {leader:?}); retry",
                self.cluster.id
            )));
        }
        self.propose_shard(&raft, &command).await
    }

    /// Compacts `shards` (all when empty) through each shard's leader.
    pub(super) async fn compact_shards(
        &self,
        shards: Vec<u32>,
        target_rows: u32,
        forwarded: bool,
    ) -> std::result::Result<CompactReply, Status> {
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
                let answer = self.on_shard_leader(shard, command).await?;
                decode_compact(&answer)?
            } else {
                let leader = self.shard_leader_anywhere(shard).await.ok_or_else(|| {
                    Status::unavailable(format!("shard {shard} has no leader; retry"))
                })?;
                if leader == self.cluster.id {
                    decode_compact(&self.on_shard_leader(shard, command).await?)?
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

    /// The replica of `shard` a read may use: hosted here, and leading it when `linearizable`
    /// (after a read-index round).
    async fn readable(
        &self,
        shard: u32,
        linearizable: bool,
    ) -> std::result::Result<(Raft, Arc<ShardReplica>), Status> {
        let (raft, replica) = self.cluster.shard(shard).ok_or_else(|| {
            Status::not_found(format!(
                "node {} hosts no replica of shard {shard}",
                self.cluster.id
            ))
        })?;
        if linearizable {
            raft.ensure_linearizable().await.map_err(|e| {
                Status::unavailable(format!(
                    "read your writes on shard {shard} needs its leader: {e}"
                ))
            })?;
        }
        Ok((raft, replica))
    }

    fn patient_key(&self) -> PatientKey {
        let secret = self.cluster.meta_state().secret;
        let mut key = [0u8; 16];
        for (k, s) in key.iter_mut().zip(secret.iter()) {
            *k = *s;
        }
        PatientKey(key)
    }
}

fn decode_compact(answer: &[u8]) -> std::result::Result<CompactReply, Status> {
    let n: Vec<u64> = answer
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
        .collect();
    match n.as_slice() {
        [before, after, dropped] => Ok(CompactReply {
            segments_before: *before,
            segments_after: *after,
            rows_dropped: *dropped,
        }),
        _ => Err(Status::internal("malformed compaction answer")),
    }
}

type ScanStream = Pin<Box<dyn Stream<Item = std::result::Result<ScanChunk, Status>> + Send>>;

#[tonic::async_trait]
impl query_server::Query for Services {
    async fn aggregate(
        &self,
        request: Request<AggregateRequest>,
    ) -> std::result::Result<Response<AggregateReply>, Status> {
        let req = request.into_inner();
        check_format(req.format)?;
        let spec = req
            .query
            .ok_or_else(|| Status::invalid_argument("an aggregate request needs a query"))?;
        let query = Query::from_proto(&spec).map_err(status)?;
        let mut stores = Vec::new();
        for shard in &req.shards {
            let (_, replica) = self.readable(*shard, req.linearizable).await?;
            stores.push((*shard, replica.store()));
        }
        let key = self.patient_key();
        let done = tokio::task::spawn_blocking(move || {
            let mut merged = query.partial();
            let mut reply = AggregateReply::default();
            for (shard, store) in stores {
                let (partial, version, stats) = query::aggregate(&store, &query, &key)?;
                merged
                    .merge(partial)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                reply.versions.push(ShardVersion { shard, version });
                reply.rows_scanned += stats.rows_scanned;
                reply.segments_scanned += stats.segments_scanned;
                reply.segments_pruned += stats.segments_pruned;
            }
            reply.partial = merged
                .to_ipc()
                .map_err(|e| Error::InvalidArgument(e.to_string()))?
                .into();
            Ok::<_, Error>(reply)
        })
        .await
        .map_err(|e| Status::internal(format!("query task: {e}")))?
        .map_err(status)?;
        Ok(Response::new(done))
    }

    type ScanStream = ScanStream;

    async fn activity(
        &self,
        request: Request<ActivityRequest>,
    ) -> std::result::Result<Response<ActivityReply>, Status> {
        let req = request.into_inner();
        check_format(req.format)?;
        let dataset = query::parse_dataset(&req.dataset).map_err(status)?;
        let view = query::parse_view(req.view.as_ref());
        let since = query::parse_view(req.since.as_ref());
        let mut stores = Vec::new();
        for shard in &req.shards {
            let (_, replica) = self.readable(*shard, req.linearizable).await?;
            stores.push(replica.store());
        }
        let rows = tokio::task::spawn_blocking(move || {
            let mut total: std::collections::BTreeMap<(String, String), [u64; 5]> =
                Default::default();
            for store in stores {
                let upto = query::exec::resolve_view(&store, &view)?
                    .map_or_else(|| store.version(), Ok)?;
                let after = match &since {
                    query::View::Current => 0,
                    v => query::exec::resolve_view(&store, v)?.unwrap_or(0),
                };
                for (k, c) in store.activity(dataset, after, upto)? {
                    let t = total.entry(k).or_default();
                    for (t, c) in t.iter_mut().zip(c) {
                        *t += c;
                    }
                }
            }
            Ok::<_, Error>(total)
        })
        .await
        .map_err(|e| Status::internal(format!("activity task: {e}")))?
        .map_err(status)?;
        Ok(Response::new(ActivityReply {
            rows: rows
                .into_iter()
                .map(|((provider, month), c)| ActivityRow {
                    provider,
                    month,
                    inserted: c[0],
                    replaced: c[1],
                    deleted: c[2],
                    bulk_deleted: c[3],
                    stale: c[4],
                })
                .collect(),
        }))
    }

    async fn scan(
        &self,
        request: Request<ScanRequest>,
    ) -> std::result::Result<Response<ScanStream>, Status> {
        let req = request.into_inner();
        check_format(req.format)?;
        let dataset = query::parse_dataset(&req.dataset).map_err(status)?;
        let filters = query::parse_filters(dataset, &req.filters).map_err(status)?;
        query::exec::output_schema(dataset, &req.columns).map_err(status)?;
        let view = query::parse_view(req.view.as_ref());
        let mut stores = Vec::new();
        for shard in &req.shards {
            let (_, replica) = self.readable(*shard, req.linearizable).await?;
            stores.push(replica.store());
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<ScanChunk, Status>>(4);
        tokio::task::spawn_blocking(move || {
            for store in stores {
                let mut send = |batch: arrow::array::RecordBatch| -> Result<()> {
                    let ipc =
                        batch_to_ipc(&batch).map_err(|e| Error::InvalidArgument(e.to_string()))?;
                    tx.blocking_send(Ok(ScanChunk { ipc: ipc.into() }))
                        .map_err(|_| Error::InvalidArgument("the reader went away".into()))
                };
                let scanned =
                    query::scan(&store, dataset, &filters, &req.columns, &view, &mut send);
                if let Err(e) = scanned {
                    let _ = tx.blocking_send(Err(status(e)));
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }
}
