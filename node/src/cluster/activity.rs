//! Database Counts: the changes submissions made, per provider and activity month, between two
//! views. Identifiable and pseudonymised callers get rows; at the anonymised tier the node merges
//! every shard's counts and controls the table before it leaves.

use super::service::Services;
use crate::access::{self, Caller, Tier};
use crate::model::Dataset;
use crate::query;
use crate::{Error, Result};
use arrow::array::RecordBatch;
use sus_proto::MAX_MESSAGE_BYTES;
use sus_proto::partial::batch_to_ipc;
use sus_proto::v1::query_client::QueryClient;
use sus_proto::v1::{self, ActivityReply, ActivityRequest, ActivityRow};
use tonic::metadata::MetadataMap;

impl Services {
    /// Answers `req` for `caller` (whose credentials the fan-out of the anonymised tier carries).
    pub(crate) async fn read_activity(
        &self,
        caller: Caller,
        credentials: &MetadataMap,
        req: ActivityRequest,
    ) -> Result<ActivityReply> {
        let (tier, providers) = access::read::activity(&caller, req.tier)?;
        let limits = &self.cluster.limits.query;
        limits
            .check_scan(&req.dataset, &[], &[], req.view.as_ref())
            .and_then(|()| limits.check_scan("", &[], &[], req.since.as_ref()))?;
        let dataset = query::parse_dataset(&req.dataset)?;
        if tier == Tier::Anonymised && !caller.via_node {
            // Counts of every shard, merged here and controlled before they leave the node.
            let mut merged = ActivityCounts::default();
            let by_node = self.shards_by_leader().await?;
            let calls = by_node.into_iter().map(|(node, shards)| {
                let req = ActivityRequest {
                    shards,
                    tier: v1::Tier::Anonymised as i32,
                    linearizable: true,
                    ..req.clone()
                };
                let providers = providers.clone();
                async move {
                    if node == self.cluster.id {
                        return self.activity_here(dataset, &req, providers).await;
                    }
                    let reply = QueryClient::new(self.channel(node)?)
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .activity(Self::on_behalf(credentials, req)?)
                        .await?
                        .into_inner();
                    Ok(reply
                        .rows
                        .into_iter()
                        .map(|r| {
                            let counts =
                                [r.inserted, r.replaced, r.deleted, r.bulk_deleted, r.stale];
                            ((r.provider, r.month), counts)
                        })
                        .collect())
                }
            });
            for counts in futures::future::try_join_all(calls).await? {
                add_counts(&mut merged, counts);
            }
            let table = activity_table(&merged)?;
            return Ok(ActivityReply {
                rows: Vec::new(),
                table: batch_to_ipc(&table).map_err(|e| Error::Internal(e.to_string()))?,
            });
        }
        let rows = self.activity_here(dataset, &req, providers).await?;
        Ok(ActivityReply {
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
            table: Vec::new(),
        })
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
    ) -> Result<ActivityCounts> {
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
        .map_err(|e| Error::Internal(format!("activity task: {e}")))?
    }
}
