//! Pushed-down aggregates: each node aggregates the shards it hosts into a partial state
//! (`sus_proto::partial`), and the node a client called finishes: it reads every shard on its
//! leader, merges the partial states and finishes the table (with disclosure control at the
//! anonymised tier). What a caller may aggregate is decided in `access::read`.

use super::auth;
use super::reads::{ReadKeys, describe_filters, view_name};
use super::service::Services;
use crate::access::read::{self, Control};
use crate::access::{self, Caller, Tier};
use crate::query::{self, Query};
use crate::{Error, Result};
use arrow::array::RecordBatch;
use sus_proto::partial::{Partial, batch_to_ipc};
use sus_proto::v1::query_client::QueryClient;
use sus_proto::v1::{AggregateReply, AggregateRequest, QuerySpec, ShardVersion};
use sus_proto::{MAX_MESSAGE_BYTES, WIRE_FORMAT_VERSION};
use tonic::Request;
use tonic::metadata::MetadataMap;
use tracing::info;

impl Services {
    /// Answers `req` for `caller`: a partial state of the shards it names (another node
    /// finishing), or (`finish`) the finished table of every shard. An identifiable read is
    /// audited before its answer leaves the node.
    pub(crate) async fn read_aggregate(
        &self,
        caller: Caller,
        credentials: &MetadataMap,
        req: AggregateRequest,
    ) -> Result<AggregateReply> {
        let spec = req
            .query
            .ok_or_else(|| Error::InvalidArgument("an aggregate request needs a query".into()))?;
        // Sizes first: nothing of an oversized query is parsed or looked at.
        self.cluster.limits.query.check_spec(&spec)?;
        let read::AggregateRead {
            tier,
            query,
            spec,
            control,
            scope_text,
        } = read::aggregate(&caller, spec, req.finish)?;
        let keys = self.read_keys(&caller, tier);
        // An identifiable read is audited before its answer leaves the node: its record is
        // committed beside the scan (one round of latency, not two), the answer waits for both,
        // and a second record, naming the same read, adds the rows answered once they are known.
        let audit = (tier == Tier::Identifiable && !caller.via_node).then(|| {
            let groups: Vec<&str> = query.group_by.iter().map(|(n, _)| n.as_str()).collect();
            let mut r = super::audit::record(&caller, self.cluster.id, "aggregate");
            r.tier = tier.name().to_string();
            r.dataset = query.dataset.name().to_string();
            r.filter = format!(
                "{}; group by {}",
                describe_filters(&query.filters, &scope_text),
                groups.join(",")
            );
            r.view = view_name(&query.view);
            let id = format!("{:016x}", rand::random::<u64>());
            (r, id)
        });
        let started = async {
            let Some((r, id)) = &audit else {
                return Ok(());
            };
            let mut start = r.clone();
            start.detail = if req.finish {
                format!("aggregate {id} started: every shard, finished on this node")
            } else {
                format!("aggregate {id} started: partial of shards {:?}", req.shards)
            };
            self.audit(vec![start]).await
        };
        let answer = async {
            if req.finish {
                let (table, mut reply) = self
                    .finish_aggregate(credentials, spec, query, control, req.linearizable, keys)
                    .await?;
                reply.table = batch_to_ipc(&table).map_err(|e| Error::Internal(e.to_string()))?;
                Ok((reply, table.num_rows() as u64))
            } else {
                let counted = query.groups_within_a_shard() && req.distinct_counts;
                let (merged, mut reply) = self
                    .aggregate_here(query, &req.shards, req.linearizable, keys, counted)
                    .await?;
                let groups = merged.groups.len() as u64;
                reply.partial = merged
                    .to_ipc()
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .into();
                Ok::<_, Error>((reply, groups))
            }
        };
        let (audited, answered) = tokio::join!(started, answer);
        // Fail closed: a read whose record could not be committed answers nothing.
        audited?;
        let (reply, rows) = answered?;
        if let Some((mut end, id)) = audit {
            end.rows = rows;
            end.detail = format!("aggregate {id} answered: {rows} rows");
            let services = self.clone();
            tokio::spawn(async move {
                if let Err(e) = services.audit(vec![end]).await {
                    tracing::warn!(aggregate = %id, "the rows of an aggregate could not be audited: {e}");
                }
            });
        }
        Ok(reply)
    }

    /// Aggregates `query` over local `shards`; `counted`: distinct patients as each group's
    /// count, not its set (see `Query::groups_within_a_shard`).
    pub(crate) async fn aggregate_here(
        &self,
        query: Query,
        shards: &[u32],
        linearizable: bool,
        keys: ReadKeys,
        counted: bool,
    ) -> Result<(Partial, AggregateReply)> {
        let stores = self.stores(shards, linearizable).await?;
        let metrics = self.cluster.metrics.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            // One parallel scan over every local shard: no core idles at a shard's tail.
            let started = std::time::Instant::now();
            let refs: Vec<&crate::store::Store> = stores.iter().map(|(_, s)| s.as_ref()).collect();
            let (merged, versions, stats) = query::aggregate_stores(&refs, &query, &keys.patient)?;
            // Identifying group keys never leave the node raw below the identifiable tier.
            let merged = match &keys.pseudonym {
                Some(key) => {
                    let fields: Vec<&str> =
                        query.group_by.iter().map(|(n, _)| n.as_str()).collect();
                    access::pseudonym::partial(merged, &fields, key)?
                }
                None => merged,
            };
            // Counted after the pseudonyms: groups they merged have been unioned as sets.
            let mut merged = merged;
            if counted {
                merged.count_distinct();
            }
            let took = started.elapsed();
            metrics.scan(stats.rows_scanned, took);
            info!(
                shards = ?stores.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
                rows = stats.rows_scanned,
                segments = stats.segments_scanned,
                pruned = stats.segments_pruned,
                micros = took.as_micros() as u64,
                "scanned"
            );
            let reply = AggregateReply {
                versions: stores
                    .iter()
                    .zip(versions)
                    .map(|((shard, _), version)| ShardVersion {
                        shard: *shard,
                        version,
                    })
                    .collect(),
                rows_scanned: stats.rows_scanned,
                segments_scanned: stats.segments_scanned,
                segments_pruned: stats.segments_pruned,
                ..AggregateReply::default()
            };
            Ok::<_, Error>((merged, reply))
        })
        .await
        .map_err(|e| Error::Internal(format!("query task: {e}")))?
    }

    /// Every shard, grouped by the node leading it.
    pub(crate) async fn shards_by_leader(
        &self,
    ) -> Result<std::collections::BTreeMap<u64, Vec<u32>>> {
        let shards = self.cluster.meta_state.borrow().shards.len() as u32;
        let mut by_node: std::collections::BTreeMap<u64, Vec<u32>> = Default::default();
        for shard in 0..shards {
            let leader = self
                .shard_leader_anywhere(shard)
                .await
                .ok_or_else(|| Error::Consensus(format!("shard {shard} has no leader; retry")))?;
            by_node.entry(leader).or_default().push(shard);
        }
        Ok(by_node)
    }

    /// `message` to another node, acting for the client whose token `credentials` hold (the
    /// callee may then answer exact states for this node to finish).
    pub(crate) fn on_behalf<T>(
        credentials: &tonic::metadata::MetadataMap,
        message: T,
    ) -> Result<Request<T>> {
        let client_token = auth::bearer(credentials)?
            .ok_or_else(|| Error::Unauthenticated("no bearer token".into()))?;
        let mut r = Request::new(message);
        let v = tonic::metadata::MetadataValue::try_from(client_token)
            .map_err(|e| Error::Internal(e.to_string()))?;
        r.metadata_mut().insert(auth::ON_BEHALF, v);
        super::trace::propagate(credentials, r.metadata_mut());
        Ok(r)
    }

    /// Reads every shard on its leader for the caller whose token `credentials` hold, merges,
    /// and finishes the table (with disclosure control when `control` is given: the anonymised
    /// tier).
    pub(crate) async fn finish_aggregate(
        &self,
        credentials: &tonic::metadata::MetadataMap,
        spec: QuerySpec,
        query: Query,
        control: Option<Control>,
        linearizable: bool,
        keys: ReadKeys,
    ) -> Result<(RecordBatch, AggregateReply)> {
        let counted = query.groups_within_a_shard();
        let (merged, total) = match self
            .gather(credentials, &spec, &query, linearizable, &keys, counted)
            .await?
        {
            Ok(gathered) => gathered,
            Err(twice) => {
                tracing::warn!("{twice}; reading patient sets instead");
                self.gather(credentials, &spec, &query, linearizable, &keys, false)
                    .await?
                    .map_err(Error::Internal)?
            }
        };
        let order: Vec<(String, bool)> = spec
            .order
            .iter()
            .map(|o| (o.column.clone(), o.descending))
            .collect();
        let table = match control {
            Some(c) => {
                use access::disclosure;
                let table = disclosure::Table::from_partial(&merged, &c.measures, c.hidden)?;
                let options = disclosure::Options {
                    exempt: c.exempt,
                    order,
                    limit: spec.limit as usize,
                };
                disclosure::control(&table, &options).and_then(|t| t.to_batch())?
            }
            None => merged
                .finish(&order, spec.limit as usize)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?,
        };
        Ok((table, total))
    }

    /// Reads every shard on its leader and merges the partials; the inner error is a group
    /// two shards counted (only when `counted`), for the caller to ask again for sets.
    async fn gather(
        &self,
        credentials: &tonic::metadata::MetadataMap,
        spec: &QuerySpec,
        query: &Query,
        linearizable: bool,
        keys: &ReadKeys,
        counted: bool,
    ) -> Result<std::result::Result<(Partial, AggregateReply), String>> {
        let by_node = self.shards_by_leader().await?;
        let calls = by_node.into_iter().map(|(node, shards)| {
            let query = query.clone();
            let spec = spec.clone();
            let keys = keys.clone();
            async move {
                if node == self.cluster.id {
                    return self
                        .aggregate_here(query, &shards, linearizable, keys, counted)
                        .await;
                }
                let r = Self::on_behalf(
                    credentials,
                    AggregateRequest {
                        format: WIRE_FORMAT_VERSION,
                        query: Some(spec),
                        shards,
                        linearizable,
                        finish: false,
                        distinct_counts: counted,
                    },
                )?;
                let reply = QueryClient::new(self.channel(node)?)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .aggregate(r)
                    .await?
                    .into_inner();
                let partial = Partial::from_ipc(&reply.partial)
                    .map_err(|e| Error::Internal(format!("partial from node {node}: {e}")))?;
                Ok((partial, reply))
            }
        });
        let mut merged = query.partial();
        if counted {
            merged.count_distinct();
        }
        let mut total = AggregateReply::default();
        for r in futures::future::try_join_all(calls).await? {
            let (partial, reply) = r;
            match merged.merge(partial) {
                Ok(()) => {}
                Err(e @ sus_proto::partial::Error::CountedTwice(_)) => {
                    return Ok(Err(e.to_string()));
                }
                Err(e) => return Err(Error::Internal(e.to_string())),
            }
            total.versions.extend(reply.versions);
            total.rows_scanned += reply.rows_scanned;
            total.segments_scanned += reply.segments_scanned;
            total.segments_pruned += reply.segments_pruned;
        }
        Ok(Ok((merged, total)))
    }
}
