//! The `Query` service: pushed-down aggregates, scans and extracts.
//!
//! **Reads.** A node answers `Aggregate` and `Scan` for the shards it hosts. The view is resolved
//! on each replica from its own catalog, so a replica that has not yet applied a freeze entry says
//! `NOT_FOUND` (the client then asks the shard's leader). With `linearizable` the replica must
//! lead the shard and confirms it with a read-index round first (read your writes).

use super::auth;
use super::service::Services;
use super::shard::ShardReplica;
use crate::access::{self, Caller, Keys, Tier};
use crate::error::status;
use crate::model::Dataset;
use crate::query::{self, PatientKey, Query};
use crate::{Error, Result};
use arrow::array::RecordBatch;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use sus_proto::partial::Partial;
use sus_proto::v1::query_client::QueryClient;
use sus_proto::v1::query_server::QueryServer;
use sus_proto::v1::{self, *};
use sus_proto::{MAX_MESSAGE_BYTES, WIRE_FORMAT_VERSION};
use sus_raft::Raft;
use tonic::{Request, Status};
use tracing::{info, warn};

impl Services {
    /// The `Query` service with explicit message limits (requests: `max_request_mib`).
    pub fn query(&self) -> super::auth::Authenticated<QueryServer<Services>> {
        super::auth::Authenticated::new(
            QueryServer::new(self.clone())
                .max_decoding_message_size(self.cluster.limits.max_request_bytes)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            self.cluster.authenticator(),
        )
    }

    /// The replica of `shard` a read may use: hosted here, and leading it when `linearizable`
    /// (after a read-index round).
    pub(crate) async fn readable(
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

    /// The keys of `caller`'s read at `tier`: distinct-patient digests keyed per recipient and
    /// tier, and (pseudonymised tier) the recipient's pseudonym key for identifying group keys.
    pub(crate) fn read_keys(&self, caller: &Caller, tier: Tier) -> ReadKeys {
        let keys = Keys::new(&self.cluster.meta_state.borrow().secret);
        ReadKeys {
            patient: PatientKey(keys.distinct_key(&caller.org, tier)),
            pseudonym: (tier == Tier::Pseudonymised).then(|| keys.pseudonym_key(&caller.org)),
        }
    }
}

/// The keys one aggregate is computed with (see [`Services::read_keys`]).
#[derive(Clone)]
pub(crate) struct ReadKeys {
    patient: PatientKey,
    pseudonym: Option<[u8; 32]>,
}

pub(crate) type ScanStream =
    Pin<Box<dyn Stream<Item = std::result::Result<ScanChunk, Status>> + Send>>;

/// A record-level read, checked against the caller's rights.
pub(crate) struct Extract {
    pub caller: Caller,
    pub tier: Tier,
    pub dataset: Dataset,
    pub filters: Vec<query::Filter>,
    pub scope: Vec<query::Filter>,
    pub scope_text: String,
    pub columns: Vec<String>,
    pub view: query::View,
    /// The recipient's pseudonym key (pseudonymised tier).
    pub pseudonym_key: Option<[u8; 32]>,
    /// `scan` or `flight`.
    pub action: &'static str,
}

impl Extract {
    /// Checks a scan of `dataset` for `caller`: the tier it may read at (never anonymised: no
    /// record-level reads), its scope, and no identifier filters below the identifiable tier.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check(
        services: &Services,
        caller: Caller,
        asked: i32,
        dataset_name: &str,
        wire_filters: &[v1::Filter],
        columns: &[String],
        view: Option<&v1::View>,
        action: &'static str,
    ) -> std::result::Result<Extract, Status> {
        services
            .cluster
            .limits
            .query
            .check_scan(dataset_name, wire_filters, columns, view)
            .map_err(status)?;
        let dataset = query::parse_dataset(dataset_name).map_err(status)?;
        let tier = caller
            .tier(Tier::from_proto(asked).map_err(status)?)
            .map_err(status)?;
        if tier == Tier::Anonymised {
            return Err(Status::permission_denied(format!(
                "user {} reads at the anonymised tier: aggregates only (with disclosure \
                 control), no record-level reads",
                caller.user
            )));
        }
        let scope = caller.scope().map_err(status)?;
        let filters = query::parse_filters(dataset, wire_filters).map_err(status)?;
        scope.check_filters(&caller, &filters).map_err(status)?;
        access::check_identifiers(tier, filters.iter().map(|f| f.name.as_str()), [])
            .map_err(status)?;
        query::exec::output_schema(dataset, columns).map_err(status)?;
        let pseudonym_key = (tier == Tier::Pseudonymised).then(|| {
            Keys::new(&services.cluster.meta_state.borrow().secret).pseudonym_key(&caller.org)
        });
        Ok(Extract {
            tier,
            dataset,
            scope: scope.filters(dataset).map_err(status)?,
            scope_text: scope.describe(),
            filters,
            columns: columns.to_vec(),
            view: query::parse_view(view),
            pseudonym_key,
            action,
            caller,
        })
    }

    /// The schema of the rows the caller receives.
    pub(crate) fn schema(&self) -> Result<arrow::datatypes::SchemaRef> {
        let schema = query::exec::output_schema(self.dataset, &self.columns)?;
        Ok(match self.tier {
            Tier::Pseudonymised => access::pseudonym::schema(&schema),
            _ => schema,
        })
    }

    pub(crate) fn audit_record(
        &self,
        node: u64,
        rows: u64,
        shards: &[u32],
    ) -> sus_proto::audit::Record {
        let mut r = super::audit::record(&self.caller, node, self.action);
        r.tier = self.tier.name().to_string();
        r.dataset = self.dataset.name().to_string();
        r.filter = describe_filters(&self.filters, &self.scope_text);
        r.view = view_name(&self.view);
        r.rows = rows;
        r.detail = format!("shards {shards:?}");
        r
    }
}

pub(crate) fn view_name(view: &query::View) -> String {
    match view {
        query::View::Current => String::new(),
        query::View::Freeze(name) => name.clone(),
    }
}

/// Why an extract ended before its last row.
pub(crate) enum Stop {
    /// The client cancelled the stream or disconnected.
    ReaderGone,
    /// The scan failed.
    Failed(Error),
}

/// Filters and scope as the audit log records them.
pub(crate) fn describe_filters(filters: &[query::Filter], scope: &str) -> String {
    let mut parts: Vec<String> = filters
        .iter()
        .map(|f| format!("{} {:?}", f.name, f.pred))
        .collect();
    parts.push(format!("scope: {scope}"));
    parts.join("; ")
}

impl Services {
    /// Streams the rows of `extract` from `stores`, transformed for its tier. The caller's audit
    /// entry is committed before the first row leaves the node (an extract that cannot be
    /// audited sends nothing), and a second entry, naming the same extract, completes it with
    /// the rows sent: all of them, or "stopped after N" when the reader went away (a cancelled
    /// stream) or the scan failed. N counts the rows handed to the stream, so at most a few
    /// batches more than the reader received.
    pub(crate) fn run_extract(
        &self,
        extract: Extract,
        stores: Vec<(u32, Arc<crate::store::Store>)>,
    ) -> tokio_stream::wrappers::ReceiverStream<Result<arrow::array::RecordBatch>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<arrow::array::RecordBatch>>(4);
        let services = self.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let node = services.cluster.id;
            let shards: Vec<u32> = stores.iter().map(|(s, _)| *s).collect();
            // A node relaying for a client does not audit: the node it reads from does.
            let audited = !extract.caller.via_node;
            let id = format!("{:016x}", rand::random::<u64>());
            if audited {
                let mut start = extract.audit_record(node, 0, &shards);
                start.detail = format!("extract {id} started: shards {shards:?}");
                if let Err(s) = handle.block_on(services.audit(vec![start])) {
                    let _ = tx.blocking_send(Err(Error::Consensus(format!(
                        "the extract could not be audited, so no row was sent: {}",
                        s.message()
                    ))));
                    return;
                }
            }
            let mut rows = 0u64;
            let mut stop: Option<Stop> = None;
            for (_, store) in &stores {
                let mut send = |batch: arrow::array::RecordBatch| -> Result<()> {
                    let batch = match &extract.pseudonym_key {
                        Some(key) => access::pseudonym::apply(&batch, key)?,
                        None => batch,
                    };
                    let n = batch.num_rows() as u64;
                    if tx.blocking_send(Ok(batch)).is_err() {
                        stop = Some(Stop::ReaderGone);
                        return Err(Error::InvalidArgument("the reader went away".into()));
                    }
                    rows += n;
                    Ok(())
                };
                let scanned = query::scan(
                    store,
                    extract.dataset,
                    (&extract.filters, &extract.scope),
                    &extract.columns,
                    &extract.view,
                    &mut send,
                );
                if let Err(e) = scanned {
                    stop.get_or_insert(Stop::Failed(e));
                    break;
                }
            }
            if audited {
                let mut end = extract.audit_record(node, rows, &shards);
                end.detail = match &stop {
                    None => format!("extract {id} complete: {rows} rows sent"),
                    Some(Stop::ReaderGone) => {
                        format!("extract {id} stopped after {rows} rows: the reader went away")
                    }
                    Some(Stop::Failed(e)) => format!("extract {id} stopped after {rows} rows: {e}"),
                };
                if let Err(s) = handle.block_on(services.audit(vec![end])) {
                    warn!(extract = %id, "the end of an extract could not be audited: {}", s.message());
                    if stop.is_none() {
                        let _ = tx.blocking_send(Err(Error::Consensus(format!(
                            "the extract's completion could not be audited: {}",
                            s.message()
                        ))));
                    }
                }
            }
            if let Some(Stop::Failed(e)) = stop {
                let _ = tx.blocking_send(Err(e));
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    /// The stores of `shards` a read may use.
    pub(crate) async fn stores(
        &self,
        shards: &[u32],
        linearizable: bool,
    ) -> std::result::Result<Vec<(u32, Arc<crate::store::Store>)>, Status> {
        // The shards' read-index rounds at once: one round trip, not one per shard.
        let replicas = futures::future::try_join_all(
            shards
                .iter()
                .map(|shard| self.readable(*shard, linearizable)),
        )
        .await?;
        Ok(shards
            .iter()
            .zip(replicas)
            .map(|(shard, (_, replica))| (*shard, replica.store()))
            .collect())
    }

    /// Aggregates `query` over local `shards`.
    pub(crate) async fn aggregate_here(
        &self,
        query: Query,
        shards: &[u32],
        linearizable: bool,
        keys: ReadKeys,
    ) -> std::result::Result<(Partial, AggregateReply), Status> {
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
        .map_err(|e| Status::internal(format!("query task: {e}")))?
        .map_err(status)
    }

    /// Every shard, grouped by the node leading it.
    pub(crate) async fn shards_by_leader(
        &self,
    ) -> std::result::Result<std::collections::BTreeMap<u64, Vec<u32>>, Status> {
        let shards = self.cluster.meta_state.borrow().shards.len() as u32;
        let mut by_node: std::collections::BTreeMap<u64, Vec<u32>> = Default::default();
        for shard in 0..shards {
            let leader = self.shard_leader_anywhere(shard).await.ok_or_else(|| {
                Status::unavailable(format!("shard {shard} has no leader; retry"))
            })?;
            by_node.entry(leader).or_default().push(shard);
        }
        Ok(by_node)
    }

    /// `message` to another node, acting for the client whose token `credentials` hold (the
    /// callee may then answer exact states for this node to finish).
    pub(crate) fn on_behalf<T>(
        credentials: &tonic::metadata::MetadataMap,
        message: T,
    ) -> std::result::Result<Request<T>, Status> {
        let client_token = auth::bearer(credentials)
            .map_err(status)?
            .ok_or_else(|| Status::unauthenticated("no bearer token"))?;
        let mut r = Request::new(message);
        let v = tonic::metadata::MetadataValue::try_from(client_token)
            .map_err(|e| Status::internal(e.to_string()))?;
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
    ) -> std::result::Result<(RecordBatch, AggregateReply), Status> {
        let by_node = self.shards_by_leader().await?;
        let calls = by_node.into_iter().map(|(node, shards)| {
            let query = query.clone();
            let spec = spec.clone();
            let keys = keys.clone();
            async move {
                if node == self.cluster.id {
                    return self
                        .aggregate_here(query, &shards, linearizable, keys)
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
                    },
                )?;
                let reply = QueryClient::new(self.channel(node)?)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .aggregate(r)
                    .await?
                    .into_inner();
                let partial = Partial::from_ipc(&reply.partial)
                    .map_err(|e| Status::internal(format!("partial from node {node}: {e}")))?;
                Ok((partial, reply))
            }
        });
        let mut merged = query.partial();
        let mut total = AggregateReply::default();
        for r in futures::future::try_join_all(calls).await? {
            let (partial, reply) = r;
            merged
                .merge(partial)
                .map_err(|e| Status::internal(e.to_string()))?;
            total.versions.extend(reply.versions);
            total.rows_scanned += reply.rows_scanned;
            total.segments_scanned += reply.segments_scanned;
            total.segments_pruned += reply.segments_pruned;
        }
        let order: Vec<(String, bool)> = spec
            .order
            .iter()
            .map(|o| (o.column.clone(), o.descending))
            .collect();
        let table = match control {
            Some(c) => {
                use access::disclosure;
                let table = disclosure::Table::from_partial(&merged, &c.measures, c.hidden)
                    .map_err(status)?;
                let options = disclosure::Options {
                    exempt: c.exempt,
                    order,
                    limit: spec.limit as usize,
                };
                disclosure::control(&table, &options)
                    .and_then(|t| t.to_batch())
                    .map_err(status)?
            }
            None => merged
                .finish(&order, spec.limit as usize)
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
        };
        Ok((table, total))
    }
}

/// Changes per (provider, activity month): inserted, replaced, deleted, bulk deleted, stale.
pub(crate) type ActivityCounts = std::collections::BTreeMap<(String, String), [u64; 5]>;

pub(crate) fn add_counts(total: &mut ActivityCounts, counts: ActivityCounts) {
    for (k, c) in counts {
        let t = total.entry(k).or_default();
        for (t, c) in t.iter_mut().zip(c) {
            *t += c;
        }
    }
}

/// The Database Counts of the anonymised tier: the changes as a controlled table (provider and
/// month keys, every column a count; never exempt, as it is broken down by provider).
pub(crate) fn activity_table(counts: &ActivityCounts) -> Result<RecordBatch> {
    use access::disclosure::{Column, Measure, Options, Table, control};
    let names = ["inserted", "replaced", "deleted", "bulk_deleted", "stale"];
    let table = Table {
        keys: vec!["provider".into(), "month".into()],
        rows: counts
            .keys()
            .map(|(p, m)| vec![Some(p.clone()), Some(m.clone())])
            .collect(),
        columns: names
            .iter()
            .enumerate()
            .map(|(i, name)| Column {
                name: name.to_string(),
                measure: Measure::Count,
                values: counts
                    .values()
                    .map(|c| i64::try_from(c[i]).unwrap_or(i64::MAX))
                    .collect(),
                hidden: false,
            })
            .collect(),
    };
    control(&table, &Options::default())?.to_batch()
}

impl Services {
    /// The changes of `req.shards` hosted here, within the caller's providers (`None`: all).
    pub(crate) async fn activity_here(
        &self,
        dataset: Dataset,
        req: &ActivityRequest,
        providers: Option<Vec<String>>,
    ) -> std::result::Result<ActivityCounts, Status> {
        let view = query::parse_view(req.view.as_ref());
        let since = query::parse_view(req.since.as_ref());
        let stores = self.stores(&req.shards, req.linearizable).await?;
        tokio::task::spawn_blocking(move || {
            let mut total = ActivityCounts::default();
            for (_, store) in stores {
                let upto = query::exec::resolve_view(&store, &view)?
                    .map_or_else(|| store.version(), Ok)?;
                let after = match &since {
                    query::View::Current => 0,
                    v => query::exec::resolve_view(&store, v)?.unwrap_or(0),
                };
                let mine = store
                    .activity(dataset, after, upto)?
                    .into_iter()
                    .filter(|(k, _)| providers.as_ref().is_none_or(|p| p.contains(&k.0)))
                    .collect();
                add_counts(&mut total, mine);
            }
            Ok::<_, Error>(total)
        })
        .await
        .map_err(|e| Status::internal(format!("activity task: {e}")))?
        .map_err(status)
    }
}

/// The record count added to an anonymised query that has none (disclosure control needs it).
pub(crate) const HIDDEN_COUNT: &str = "__records";

/// How an anonymised table is controlled (`access::disclosure`).
pub(crate) struct Control {
    /// Per aggregate.
    pub measures: Vec<access::disclosure::Measure>,
    /// The record count added for control, left out of the output.
    pub hidden: Option<usize>,
    /// A national figure broken down only by dataset, period and point of delivery.
    pub exempt: bool,
}
