//! The `Query` service: pushed-down aggregates, activity counts and scans, each authorised and
//! audited before its first row leaves the node.

use crate::access::{self, Scope, Tier};
use crate::cluster::auth;
use crate::cluster::reads::*;
use crate::cluster::service::{Services, check_format};
use crate::error::status;
use crate::query::{self, Query};
use futures::StreamExt;
use sus_proto::MAX_MESSAGE_BYTES;
use sus_proto::partial::batch_to_ipc;
use sus_proto::v1::query_client::QueryClient;
use sus_proto::v1::query_server::{self};
use sus_proto::v1::{self, *};
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl query_server::Query for Services {
    async fn aggregate(
        &self,
        request: Request<AggregateRequest>,
    ) -> std::result::Result<Response<AggregateReply>, Status> {
        let caller = auth::caller(&request)?;
        let credentials = request.metadata().clone();
        let req = request.into_inner();
        check_format(req.format)?;
        let mut spec = req
            .query
            .ok_or_else(|| Status::invalid_argument("an aggregate request needs a query"))?;
        // Sizes first: nothing of an oversized query is parsed or looked at.
        self.cluster
            .limits
            .query
            .check_spec(&spec)
            .map_err(status)?;
        let tier = caller
            .tier(Tier::from_proto(spec.tier).map_err(status)?)
            .map_err(status)?;
        if tier == Tier::Anonymised && !caller.via_node && !req.finish {
            return Err(Status::permission_denied(format!(
                "user {} reads at the anonymised tier: only finished, disclosure-controlled \
                 tables (AggregateRequest.finish), never partial states",
                caller.user
            )));
        }
        let mut hidden = None;
        if tier == Tier::Anonymised
            && req.finish
            && !spec
                .aggregates
                .iter()
                .any(|a| a.func == v1::aggregate::Func::Count as i32)
        {
            hidden = Some(spec.aggregates.len());
            spec.aggregates.push(v1::Aggregate {
                func: v1::aggregate::Func::Count as i32,
                field: String::new(),
                name: HIDDEN_COUNT.into(),
            });
        }
        let mut query = Query::from_proto(&spec).map_err(status)?;
        // The anonymised tier's allow-list first, so that its refusal says what is allowed.
        let measures = if tier == Tier::Anonymised {
            Some(access::disclosure::check(&query).map_err(status)?)
        } else {
            None
        };
        let scope = caller.scope().map_err(status)?;
        scope
            .check_filters(&caller, &query.filters)
            .map_err(status)?;
        let filter_names: Vec<&str> = query.filters.iter().map(|f| f.name.as_str()).collect();
        let group_names: Vec<&str> = query.group_by.iter().map(|(n, _)| n.as_str()).collect();
        access::check_identifiers(
            tier,
            filter_names.iter().copied(),
            group_names.iter().copied(),
        )
        .map_err(status)?;
        let keys = self.read_keys(&caller, tier);
        query.scope = scope.filters(query.dataset).map_err(status)?;
        let control = measures.map(|measures| Control {
            measures,
            hidden,
            exempt: access::disclosure::exempt(scope.is_national(), &query),
        });
        let mut audit = (tier == Tier::Identifiable && !caller.via_node).then(|| {
            let mut r = crate::cluster::audit::record(&caller, self.cluster.id, "aggregate");
            r.tier = tier.name().to_string();
            r.dataset = query.dataset.name().to_string();
            r.filter = format!(
                "{}; group by {}",
                describe_filters(&query.filters, &scope.describe()),
                group_names.join(",")
            );
            r.view = view_name(&query.view);
            r
        });
        let reply = if req.finish {
            let (table, mut reply) = self
                .finish_aggregate(&credentials, spec, query, control, req.linearizable, keys)
                .await?;
            if let Some(r) = audit.as_mut() {
                r.rows = table.num_rows() as u64;
                r.detail = "finished on this node".into();
            }
            reply.table = batch_to_ipc(&table).map_err(|e| Status::internal(e.to_string()))?;
            reply
        } else {
            let (merged, mut reply) = self
                .aggregate_here(query, &req.shards, req.linearizable, keys)
                .await?;
            if let Some(r) = audit.as_mut() {
                r.rows = merged.groups.len() as u64;
                r.detail = format!("partial of shards {:?}", req.shards);
            }
            reply.partial = merged
                .to_ipc()
                .map_err(|e| Status::internal(e.to_string()))?
                .into();
            reply
        };
        if let Some(r) = audit {
            self.audit(vec![r]).await?;
        }
        Ok(Response::new(reply))
    }

    type ScanStream = ScanStream;

    async fn activity(
        &self,
        request: Request<ActivityRequest>,
    ) -> std::result::Result<Response<ActivityReply>, Status> {
        let caller = auth::caller(&request)?;
        let credentials = request.metadata().clone();
        let req = request.into_inner();
        check_format(req.format)?;
        let tier = caller
            .tier(Tier::from_proto(req.tier).map_err(status)?)
            .map_err(status)?;
        // Submission activity is per provider: a scope of commissioners has none of its own.
        let providers = match caller.scope().map_err(status)? {
            Scope::National => None,
            Scope::Orgs { providers, .. } if !providers.is_empty() => Some(providers),
            Scope::Orgs { .. } => {
                return Err(Status::permission_denied(format!(
                    "user {} (role {}): database counts are per provider; a commissioner has \
                     none",
                    caller.user,
                    caller.role.name()
                )));
            }
        };
        let limits = &self.cluster.limits.query;
        limits
            .check_scan(&req.dataset, &[], &[], req.view.as_ref())
            .and_then(|()| limits.check_scan("", &[], &[], req.since.as_ref()))
            .map_err(status)?;
        let dataset = query::parse_dataset(&req.dataset).map_err(status)?;
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
                let credentials = &credentials;
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
            let table = activity_table(&merged).map_err(status)?;
            return Ok(Response::new(ActivityReply {
                rows: Vec::new(),
                table: batch_to_ipc(&table).map_err(|e| Status::internal(e.to_string()))?,
            }));
        }
        let rows = self.activity_here(dataset, &req, providers).await?;
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
            table: Vec::new(),
        }))
    }

    async fn scan(
        &self,
        request: Request<ScanRequest>,
    ) -> std::result::Result<Response<ScanStream>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        check_format(req.format)?;
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
        let stream = self.run_extract(extract, stores).map(|batch| {
            let batch = batch.map_err(status)?;
            let ipc = batch_to_ipc(&batch).map_err(|e| Status::internal(e.to_string()))?;
            Ok(ScanChunk { ipc: ipc.into() })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
