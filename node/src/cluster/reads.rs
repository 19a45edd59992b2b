//! Record-level reads (scans and Flight extracts), and what every read shares: the replica a
//! read may use, and the keys it is computed with. Aggregates are in `aggregate`, Database
//! Counts in `activity`; what a caller may read is decided in `access::read`.
//!
//! A node answers `Aggregate` and `Scan` for the shards it hosts. The view is resolved
//! on each replica from its own catalog, so a replica that has not yet applied a freeze entry says
//! `NOT_FOUND` (the client then asks the shard's leader). With `linearizable` the replica must
//! lead the shard and confirms it with a read-index round first (read your writes).

use super::service::Services;
use super::shard::ShardReplica;
use crate::access::{self, Caller, Keys, Tier};
use crate::model::Dataset;
use crate::query::{self, PatientKey};
use crate::{Error, Result};
use arrow::array::RecordBatch;
use futures::{Stream, StreamExt};
use std::sync::Arc;
use sus_proto::MAX_MESSAGE_BYTES;
use sus_proto::partial::ipc_to_batch;
use sus_proto::v1::query_client::QueryClient;
use sus_proto::v1::{self, ScanRequest};
use sus_raft::Raft;
use tracing::warn;

impl Services {
    /// The replica of `shard` a read may use: hosted here, and leading it when `linearizable`
    /// (after a read-index round).
    pub(crate) async fn readable(
        &self,
        shard: u32,
        linearizable: bool,
    ) -> Result<(Raft, Arc<ShardReplica>)> {
        let (raft, replica) = self.cluster.shard(shard).ok_or_else(|| {
            Error::NotFound(format!(
                "node {} hosts no replica of shard {shard}",
                self.cluster.id
            ))
        })?;
        if linearizable {
            raft.ensure_linearizable().await.map_err(|e| {
                Error::Consensus(format!(
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

    /// The rows of `req` for `caller`, transformed for its tier (see [`Services::run_extract`]).
    pub(crate) async fn read_scan(
        &self,
        caller: Caller,
        req: &ScanRequest,
    ) -> Result<impl Stream<Item = Result<RecordBatch>> + use<>> {
        let extract = Extract::check(
            self,
            caller,
            req.tier,
            &req.dataset,
            &req.filters,
            &req.columns,
            req.view.as_ref(),
            "scan",
        )?;
        let stores = self.stores(&req.shards, req.linearizable).await?;
        Ok(self.run_extract(extract, stores))
    }
}

impl Services {
    /// The rows of one shard's scan `req` (its `shards` name one), read here from a hosted
    /// replica or relayed from the shard's leader (which checks the caller's token itself, and
    /// audits). `credentials`: the caller's request metadata.
    pub(crate) async fn shard_batches(
        &self,
        caller: Caller,
        credentials: &tonic::metadata::MetadataMap,
        req: ScanRequest,
        action: &'static str,
    ) -> Result<std::pin::Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>> {
        let [shard] = req.shards[..] else {
            return Err(Error::InvalidArgument(
                "a shard scan names one shard".into(),
            ));
        };
        let extract = Extract::check(
            self,
            caller,
            req.tier,
            &req.dataset,
            &req.filters,
            &req.columns,
            req.view.as_ref(),
            action,
        )?;
        if let Some((_, replica)) = self.cluster.shard(shard) {
            let stores = vec![(shard, replica.store())];
            return Ok(Box::pin(self.run_extract(extract, stores)));
        }
        let leader = self
            .shard_leader_anywhere(shard)
            .await
            .ok_or_else(|| Error::Consensus(format!("shard {shard} has no leader; retry")))?;
        let req = ScanRequest {
            tier: extract.tier.to_proto() as i32,
            ..req
        };
        let stream = QueryClient::new(self.channel(leader)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .scan(super::auth::forward(credentials, req))
            .await?
            .into_inner();
        Ok(Box::pin(stream.map(|chunk| {
            let chunk = chunk.map_err(Error::from)?;
            ipc_to_batch(&chunk.ipc).map_err(|e| Error::Corruption {
                what: "relayed scan".into(),
                message: e.to_string(),
            })
        })))
    }
}

/// The keys one aggregate is computed with (see [`Services::read_keys`]).
#[derive(Clone)]
pub(crate) struct ReadKeys {
    pub(super) patient: PatientKey,
    pub(super) pseudonym: Option<[u8; 32]>,
}

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
    /// Checks a scan of `dataset` for `caller`: its sizes, then the read policy
    /// ([`access::read::records`]), then the columns asked for.
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
    ) -> Result<Extract> {
        services
            .cluster
            .limits
            .query
            .check_scan(dataset_name, wire_filters, columns, view)?;
        let read = access::read::records(&caller, asked, dataset_name, wire_filters)?;
        query::exec::output_schema(read.dataset, columns)?;
        let pseudonym_key = (read.tier == Tier::Pseudonymised).then(|| {
            Keys::new(&services.cluster.meta_state.borrow().secret).pseudonym_key(&caller.org)
        });
        Ok(Extract {
            tier: read.tier,
            dataset: read.dataset,
            scope: read.scope,
            scope_text: read.scope_text,
            filters: read.filters,
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
                if let Err(e) = handle.block_on(services.audit(vec![start])) {
                    let _ = tx.blocking_send(Err(Error::Consensus(format!(
                        "the extract could not be audited, so no row was sent: {}",
                        e.into_message()
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
                if let Err(e) = handle.block_on(services.audit(vec![end])) {
                    let e = e.into_message();
                    warn!(extract = %id, "the end of an extract could not be audited: {e}");
                    if stop.is_none() {
                        let _ = tx.blocking_send(Err(Error::Consensus(format!(
                            "the extract's completion could not be audited: {e}"
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
    ) -> Result<Vec<(u32, Arc<crate::store::Store>)>> {
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
}
