//! Pushed-down reads: fan a query out to one replica of every shard, merge the partials exactly.
//!
//! The client asks any node for the shard map, finds each shard's leader (from the nodes' own
//! views of the groups they host), groups shards by the node chosen to read them, and sends each
//! node one `Aggregate` (or `Scan`) for its shards, all at once. Partial aggregates merge exactly
//! ([`sus_proto::partial`]); ordering and the row limit apply after the merge. A shard whose
//! replica fails (gone, lagging behind a freeze point) is retried on its leader with a fresh map.

use crate::cluster::{Client, status_error};
use crate::{Error, Result};
use arrow::array::RecordBatch;
use std::collections::BTreeMap;
use std::time::Duration;
use sus_proto::WIRE_FORMAT_VERSION;
use sus_proto::partial::{Partial, ipc_to_batch};
pub use sus_proto::v1::Tier;
use sus_proto::v1::admin_client::AdminClient;
use sus_proto::v1::query_client::QueryClient;
use sus_proto::v1::{
    ActivityRequest, AggregateRequest, ClusterStatus, CompactReply, CompactRequest,
    CreateFreezeRequest, FreezePoint, ListFreezesRequest, QuerySpec, ScanRequest, StatusRequest,
};

pub use sus_proto::v1::{Aggregate, Filter, Order, View, aggregate::Func, filter::Op};

/// Which replica of each shard serves a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// The leader, after a read-index round: sees every acknowledged write.
    #[default]
    Leader,
    /// Any replica (spread over the replicas): may lag the latest writes by a moment; a freeze
    /// point reads the same everywhere once the replica has it.
    AnyReplica,
}

/// A merged aggregate.
#[derive(Debug, Clone)]
pub struct AggregateResult {
    /// Group key columns (`Utf8`) then one `Int64` column per aggregate; at the anonymised
    /// tier every column is text (`*` for a suppressed cell, counts rounded to 5, sums to 2
    /// significant figures) and a grouped table ends with a `TOTAL` row (docs/access.md).
    pub batch: RecordBatch,
    /// The store version read on each shard.
    pub versions: BTreeMap<u32, u64>,
    pub rows_scanned: u64,
    pub segments_scanned: u64,
    pub segments_pruned: u64,
}

/// A record-level read.
#[derive(Debug, Clone, Default)]
pub struct ScanSpec {
    pub dataset: String,
    pub filters: Vec<Filter>,
    /// Stored columns to return; empty: all.
    pub columns: Vec<String>,
    pub view: Option<View>,
    /// The tier asked for (`Tier::Unspecified`: the caller's highest).
    pub tier: Tier,
}

/// A typed aggregate query, built step by step:
///
/// ```
/// use sus_client::query::{Aggregation, Tier, build};
/// let q = Aggregation::new("apc")
///     .filter(build::eq("pod", "EL"))
///     .group_by(["provider_code", "activity_month"])
///     .count()
///     .sum("price")
///     .order_by("sum_price", true)
///     .limit(10)
///     .tier(Tier::Pseudonymised);
/// assert_eq!(q.spec().aggregates.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregation {
    spec: QuerySpec,
}

impl Aggregation {
    pub fn new(dataset: &str) -> Aggregation {
        Aggregation {
            spec: QuerySpec {
                dataset: dataset.into(),
                ..QuerySpec::default()
            },
        }
    }

    pub fn filter(mut self, filter: Filter) -> Aggregation {
        self.spec.filters.push(filter);
        self
    }

    pub fn group_by<'a>(mut self, fields: impl IntoIterator<Item = &'a str>) -> Aggregation {
        self.spec
            .group_by
            .extend(fields.into_iter().map(str::to_string));
        self
    }

    pub fn aggregate(mut self, aggregate: Aggregate) -> Aggregation {
        self.spec.aggregates.push(aggregate);
        self
    }

    /// Records (output column `count`).
    pub fn count(self) -> Aggregation {
        self.aggregate(build::count())
    }

    /// Distinct patients (output column `patients`).
    pub fn patients(self) -> Aggregation {
        self.aggregate(build::patients())
    }

    /// Output column `sum_<field>`.
    pub fn sum(self, field: &str) -> Aggregation {
        self.aggregate(build::agg(Func::Sum, field))
    }

    pub fn min(self, field: &str) -> Aggregation {
        self.aggregate(build::agg(Func::Min, field))
    }

    pub fn max(self, field: &str) -> Aggregation {
        self.aggregate(build::agg(Func::Max, field))
    }

    /// Read as at a freeze point.
    pub fn freeze(mut self, name: &str) -> Aggregation {
        self.spec.view = build::freeze(name);
        self
    }

    pub fn order_by(mut self, column: &str, descending: bool) -> Aggregation {
        self.spec.order.push(Order {
            column: column.into(),
            descending,
        });
        self
    }

    pub fn limit(mut self, rows: u64) -> Aggregation {
        self.spec.limit = rows;
        self
    }

    /// The tier to read at (default: the caller's highest; the node refuses a higher one).
    pub fn tier(mut self, tier: Tier) -> Aggregation {
        self.spec.tier = tier as i32;
        self
    }

    /// The wire query.
    pub fn spec(&self) -> &QuerySpec {
        &self.spec
    }
}

impl std::borrow::Borrow<QuerySpec> for Aggregation {
    fn borrow(&self) -> &QuerySpec {
        &self.spec
    }
}

/// Shorthands for building queries.
pub mod build {
    use super::*;

    pub fn eq(field: &str, value: &str) -> Filter {
        Filter {
            field: field.into(),
            op: Op::Eq as i32,
            values: vec![value.into()],
            ..Filter::default()
        }
    }

    pub fn any_of(field: &str, values: &[&str]) -> Filter {
        Filter {
            field: field.into(),
            op: Op::In as i32,
            values: values.iter().map(|v| v.to_string()).collect(),
            ..Filter::default()
        }
    }

    /// Inclusive; an empty bound is open.
    pub fn range(field: &str, min: &str, max: &str) -> Filter {
        Filter {
            field: field.into(),
            op: Op::Range as i32,
            min: min.into(),
            max: max.into(),
            ..Filter::default()
        }
    }

    pub fn count() -> Aggregate {
        Aggregate {
            func: Func::Count as i32,
            ..Aggregate::default()
        }
    }

    pub fn patients() -> Aggregate {
        Aggregate {
            func: Func::CountDistinctPatients as i32,
            ..Aggregate::default()
        }
    }

    pub fn agg(func: Func, field: &str) -> Aggregate {
        Aggregate {
            func: func as i32,
            field: field.into(),
            ..Aggregate::default()
        }
    }

    pub fn sum(field: &str) -> Aggregate {
        agg(Func::Sum, field)
    }

    pub fn freeze(name: &str) -> Option<View> {
        Some(View {
            freeze: name.into(),
        })
    }
}

/// Shards to read, by the node address chosen to read them.
type Plan = BTreeMap<String, Vec<u32>>;

impl Client {
    /// Runs an aggregate query over the whole cluster.
    ///
    /// The nodes send partial states that the client merges, except at the anonymised tier:
    /// then one node reads every shard and returns the finished, disclosure-controlled table.
    ///
    /// With `provider_code` among the group keys, each node counts distinct patients itself
    /// (a provider's rows are on one shard); should two shards count one group, the client asks
    /// again for the patient sets and unions them.
    pub async fn aggregate(
        &self,
        spec: impl std::borrow::Borrow<QuerySpec>,
        read: ReadFrom,
    ) -> Result<AggregateResult> {
        let spec: &QuerySpec = spec.borrow();
        self.check_view(spec.view.as_ref()).await?;
        if self.reads_anonymised(spec.tier) {
            return self.aggregate_finished(spec, read).await;
        }
        match self.aggregate_partials(spec, read, true).await? {
            Ok(result) => Ok(result),
            Err(twice) => {
                tracing::warn!("{twice}; reading patient sets instead");
                self.aggregate_partials(spec, read, false)
                    .await?
                    .map_err(Error::Cluster)
            }
        }
    }

    /// Reads partials of every shard and merges them; the inner error is a group two shards
    /// counted distinct patients of.
    async fn aggregate_partials(
        &self,
        spec: &QuerySpec,
        read: ReadFrom,
        distinct_counts: bool,
    ) -> Result<std::result::Result<AggregateResult, String>> {
        let deadline = tokio::time::Instant::now() + self.retry().retry_for;
        let mut merged: Option<Partial> = None;
        let mut result = AggregateResult {
            batch: RecordBatch::new_empty(std::sync::Arc::new(arrow::datatypes::Schema::empty())),
            versions: BTreeMap::new(),
            rows_scanned: 0,
            segments_scanned: 0,
            segments_pruned: 0,
        };
        let status = self.status(false).await?;
        let mut pending: Vec<u32> = status.shards.iter().map(|s| s.shard).collect();
        let mut read = read;
        let mut retry = false;
        loop {
            let views = status_fresh(self, &status, read, retry).await?;
            retry = true;
            let plan = self.plan(&views, &pending, read)?;
            let mut calls = tokio::task::JoinSet::new();
            for (addr, shards) in plan {
                let request = AggregateRequest {
                    format: WIRE_FORMAT_VERSION,
                    query: Some(spec.clone()),
                    shards: shards.clone(),
                    linearizable: read == ReadFrom::Leader,
                    finish: false,
                    distinct_counts,
                };
                let timeout = self.retry().attempt_timeout;
                let ch = self.channel_to(&addr)?;
                calls.spawn(crate::trace::inherit(async move {
                    let reply = async {
                        let mut c = QueryClient::new(ch)
                            .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES);
                        let mut r = tonic::Request::new(request);
                        r.set_timeout(timeout);
                        c.aggregate(r)
                            .await
                            .map(|r| r.into_inner())
                            .map_err(|s| status_error(named(&addr, s)))
                    }
                    .await;
                    (shards, reply)
                }));
            }
            let mut failed = Vec::new();
            let mut last_error = None;
            while let Some(joined) = calls.join_next().await {
                let (shards, reply) =
                    joined.map_err(|e| Error::Cluster(format!("query task: {e}")))?;
                match reply {
                    Ok(reply) => {
                        let partial = Partial::from_ipc(&reply.partial)
                            .map_err(|e| Error::Cluster(e.to_string()))?;
                        match &mut merged {
                            Some(m) => match m.merge(partial) {
                                Ok(()) => {}
                                Err(e @ sus_proto::partial::Error::CountedTwice(_)) => {
                                    return Ok(Err(e.to_string()));
                                }
                                Err(e) => return Err(Error::Cluster(e.to_string())),
                            },
                            None => merged = Some(partial),
                        }
                        for v in reply.versions {
                            result.versions.insert(v.shard, v.version);
                        }
                        result.rows_scanned += reply.rows_scanned;
                        result.segments_scanned += reply.segments_scanned;
                        result.segments_pruned += reply.segments_pruned;
                    }
                    // A bad query is bad everywhere: say so at once.
                    Err(Error::Refused(m)) => return Err(Error::Refused(m)),
                    Err(e @ (Error::PermissionDenied(_) | Error::Unauthenticated(_))) => {
                        return Err(e);
                    }
                    Err(e) => {
                        failed.extend(shards);
                        last_error = Some(e);
                    }
                }
            }
            if failed.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(last_error.unwrap_or_else(|| Error::Unavailable("query".into())));
            }
            tracing::debug!(?failed, "retrying shards on their leaders: {last_error:?}");
            pending = failed;
            read = ReadFrom::Leader;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let merged = merged.ok_or_else(|| Error::Cluster("the cluster has no shards".into()))?;
        let order: Vec<(String, bool)> = spec
            .order
            .iter()
            .map(|o| (o.column.clone(), o.descending))
            .collect();
        result.batch = merged
            .finish(&order, spec.limit as usize)
            .map_err(|e| Error::Refused(e.to_string()))?;
        Ok(Ok(result))
    }

    /// One node reads every shard, merges and finishes the table (with disclosure control at
    /// the anonymised tier).
    pub async fn aggregate_finished(
        &self,
        spec: &QuerySpec,
        read: ReadFrom,
    ) -> Result<AggregateResult> {
        let request = AggregateRequest {
            format: WIRE_FORMAT_VERSION,
            query: Some(spec.clone()),
            shards: Vec::new(),
            linearizable: read == ReadFrom::Leader,
            finish: true,
            distinct_counts: false,
        };
        let reply = self
            .with_retry(|ch| {
                let request = request.clone();
                async move {
                    QueryClient::new(ch)
                        .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES)
                        .aggregate(request)
                        .await
                }
            })
            .await?;
        let batch = sus_proto::partial::ipc_to_batch(&reply.table)
            .map_err(|e| Error::Cluster(format!("finished table: {e}")))?;
        Ok(AggregateResult {
            batch,
            versions: reply
                .versions
                .iter()
                .map(|v| (v.shard, v.version))
                .collect(),
            rows_scanned: reply.rows_scanned,
            segments_scanned: reply.segments_scanned,
            segments_pruned: reply.segments_pruned,
        })
    }

    /// Reads records of the whole cluster, shard by shard, handing each batch to `sink`.
    pub async fn scan(
        &self,
        spec: &ScanSpec,
        read: ReadFrom,
        sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<u64> {
        self.check_view(spec.view.as_ref()).await?;
        let status = self.status(false).await?;
        let shards: Vec<u32> = status.shards.iter().map(|s| s.shard).collect();
        let views = status_fresh(self, &status, read, false).await?;
        let plan = self.plan(&views, &shards, read)?;
        let mut rows = 0u64;
        for (addr, shards) in plan {
            let request = ScanRequest {
                format: WIRE_FORMAT_VERSION,
                dataset: spec.dataset.clone(),
                filters: spec.filters.clone(),
                columns: spec.columns.clone(),
                view: spec.view.clone(),
                shards,
                linearizable: read == ReadFrom::Leader,
                tier: spec.tier as i32,
            };
            let mut c = QueryClient::new(self.channel_to(&addr)?)
                .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES);
            let mut stream = c
                .scan(request)
                .await
                .map_err(|s| status_error(named(&addr, s)))?
                .into_inner();
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|s| status_error(named(&addr, s)))?
            {
                let batch = ipc_to_batch(&chunk.ipc).map_err(|e| Error::Cluster(e.to_string()))?;
                rows += batch.num_rows() as u64;
                sink(batch)?;
            }
        }
        Ok(rows)
    }

    /// Whether a read asking for `tier` (a `Tier` as `i32`) runs at the anonymised tier: asked
    /// for, or the token's highest tier when none is asked for.
    pub fn reads_anonymised(&self, tier: i32) -> bool {
        tier == Tier::Anonymised as i32
            || (tier == Tier::Unspecified as i32 && self.token_tier() == Some(Tier::Anonymised))
    }

    /// Counts of the changes per (provider, activity month) in the period after `since` (a
    /// freeze point; `None`: the beginning) up to `view` (`None`: now): inserted, replaced,
    /// deleted, bulk deleted, stale. Exact counts need the pseudonymised tier or higher; at the
    /// anonymised tier use [`Client::activity_controlled`].
    pub async fn activity(
        &self,
        dataset: &str,
        view: Option<View>,
        since: Option<View>,
        read: ReadFrom,
    ) -> Result<BTreeMap<(String, String), [u64; 5]>> {
        if self.reads_anonymised(Tier::Unspecified as i32) {
            return Err(Error::Refused(
                "exact database counts need the pseudonymised tier or higher; at the anonymised \
                 tier they come disclosure-controlled (Client::activity_controlled)"
                    .into(),
            ));
        }
        self.check_view(view.as_ref()).await?;
        self.check_view(since.as_ref()).await?;
        let status = self.status(false).await?;
        let shards: Vec<u32> = status.shards.iter().map(|s| s.shard).collect();
        let views = status_fresh(self, &status, read, false).await?;
        let plan = self.plan(&views, &shards, read)?;
        let mut out: BTreeMap<(String, String), [u64; 5]> = BTreeMap::new();
        for (addr, shards) in plan {
            let request = ActivityRequest {
                format: WIRE_FORMAT_VERSION,
                dataset: dataset.to_string(),
                shards,
                view: view.clone(),
                since: since.clone(),
                linearizable: read == ReadFrom::Leader,
                tier: Tier::Unspecified as i32,
            };
            let reply = QueryClient::new(self.channel_to(&addr)?)
                .activity(request)
                .await
                .map_err(|s| status_error(named(&addr, s)))?
                .into_inner();
            for r in reply.rows {
                let t = out.entry((r.provider, r.month)).or_default();
                for (t, c) in
                    t.iter_mut()
                        .zip([r.inserted, r.replaced, r.deleted, r.bulk_deleted, r.stale])
                {
                    *t += c;
                }
            }
        }
        Ok(out)
    }

    /// The changes of [`Client::activity`] at the anonymised tier: one node reads every shard
    /// and answers a disclosure-controlled table (text columns `provider`, `month`, `inserted`,
    /// `replaced`, `deleted`, `bulk_deleted`, `stale`; `*` for suppressed counts, others rounded
    /// to 5), ending with a `TOTAL` row.
    pub async fn activity_controlled(
        &self,
        dataset: &str,
        view: Option<View>,
        since: Option<View>,
    ) -> Result<RecordBatch> {
        self.check_view(view.as_ref()).await?;
        self.check_view(since.as_ref()).await?;
        let request = ActivityRequest {
            format: WIRE_FORMAT_VERSION,
            dataset: dataset.to_string(),
            shards: Vec::new(),
            view,
            since,
            linearizable: true,
            tier: Tier::Anonymised as i32,
        };
        let reply = self
            .with_retry(|ch| {
                let request = request.clone();
                async move {
                    QueryClient::new(ch)
                        .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES)
                        .activity(request)
                        .await
                }
            })
            .await?;
        ipc_to_batch(&reply.table).map_err(|e| Error::Cluster(format!("controlled counts: {e}")))
    }

    /// Refuses a freeze point the meta group does not hold (a replica that lacks one the meta
    /// group holds is only behind, and the read is retried on the shard's leader).
    async fn check_view(&self, view: Option<&View>) -> Result<()> {
        let Some(name) = view.map(|v| v.freeze.as_str()).filter(|n| !n.is_empty()) else {
            return Ok(());
        };
        let known = self.freezes().await?;
        if known.iter().any(|f| f.name == name) {
            return Ok(());
        }
        Err(Error::Refused(format!(
            "no freeze point named '{name}' (known: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known
                    .iter()
                    .map(|f| format!("'{}'", f.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )))
    }

    /// Takes a freeze point (idempotent for a name).
    pub async fn create_freeze(&self, name: &str) -> Result<FreezePoint> {
        let name = name.to_string();
        self.with_retry(|channel| {
            let name = name.clone();
            async move {
                AdminClient::new(channel)
                    .create_freeze(CreateFreezeRequest {
                        format: WIRE_FORMAT_VERSION,
                        name,
                    })
                    .await
            }
        })
        .await
    }

    /// The freeze points the meta group holds, by name.
    pub async fn freezes(&self) -> Result<Vec<FreezePoint>> {
        self.with_retry(|channel| async move {
            AdminClient::new(channel)
                .list_freezes(ListFreezesRequest {
                    format: WIRE_FORMAT_VERSION,
                })
                .await
        })
        .await
        .map(|r| r.freezes)
    }

    /// Compacts every shard (segments under `target_rows` rows merged; 0: the node's default).
    pub async fn compact(&self, target_rows: u32) -> Result<CompactReply> {
        self.with_retry(|channel| async move {
            let mut r = tonic::Request::new(CompactRequest {
                format: WIRE_FORMAT_VERSION,
                shards: Vec::new(),
                target_rows,
                forwarded: false,
            });
            r.set_timeout(Duration::from_secs(600));
            AdminClient::new(channel).compact(r).await
        })
        .await
    }

    /// Chooses a node for each of `shards`: its leader, or a replica spread by shard number.
    fn plan(&self, views: &[ClusterStatus], shards: &[u32], read: ReadFrom) -> Result<Plan> {
        let map = views
            .first()
            .ok_or_else(|| Error::Unavailable("no node answered".into()))?;
        let addr_of = |id: u64| {
            map.nodes
                .iter()
                .find(|n| n.id == id)
                .map(|n| n.addr.clone())
        };
        let mut plan = Plan::new();
        for &shard in shards {
            let info = map
                .shards
                .iter()
                .find(|s| s.shard == shard)
                .ok_or_else(|| Error::Cluster(format!("shard {shard} is not in the map")))?;
            let node = match read {
                ReadFrom::AnyReplica if !info.replicas.is_empty() => {
                    info.replicas[shard as usize % info.replicas.len()]
                }
                _ => leader_of(views, shard).ok_or_else(|| {
                    Error::Unavailable(format!("shard {shard} has no known leader; retry"))
                })?,
            };
            let addr = addr_of(node)
                .ok_or_else(|| Error::Cluster(format!("no address for node {node}")))?;
            plan.entry(addr).or_default().push(shard);
        }
        Ok(plan)
    }
}

/// The views of member nodes (for their groups' leaders) until every shard has a known leader,
/// or of every member when `all` (a retry: some view named a leader that no longer leads); just
/// the given one when reading from any replica.
async fn status_fresh(
    client: &Client,
    status: &ClusterStatus,
    read: ReadFrom,
    all: bool,
) -> Result<Vec<ClusterStatus>> {
    let mut views = vec![status.clone()];
    if read == ReadFrom::AnyReplica {
        return Ok(views);
    }
    let wanted = status.shards.len();
    let known = |views: &[ClusterStatus]| {
        (0..wanted as u32)
            .filter(|s| leader_of(views, *s).is_some())
            .count()
    };
    for node in &status.nodes {
        if known(&views) == wanted && !all {
            break;
        }
        if node.id == status.node {
            continue;
        }
        let Ok(ch) = client.channel_to(&node.addr) else {
            continue;
        };
        let mut r = tonic::Request::new(StatusRequest {
            format: WIRE_FORMAT_VERSION,
            linearizable: false,
        });
        r.set_timeout(Duration::from_secs(5));
        if let Ok(s) = AdminClient::new(ch).status(r).await {
            views.push(s.into_inner());
        }
    }
    Ok(views)
}

/// The shard's leader in the newest term any view knows of (a restarted or cut-off node may
/// still name an old leader).
fn leader_of(views: &[ClusterStatus], shard: u32) -> Option<u64> {
    let group = u64::from(shard) + 1;
    views
        .iter()
        .flat_map(|v| v.groups.iter())
        .filter(|g| g.group == group && g.leader != 0)
        .max_by_key(|g| g.term)
        .map(|g| g.leader)
}

fn named(addr: &str, s: tonic::Status) -> tonic::Status {
    tonic::Status::new(s.code(), format!("{addr}: {}", s.message()))
}
