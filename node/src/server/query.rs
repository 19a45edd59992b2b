//! The `Query` service: pushed-down aggregates, Database Counts and scans, each decoded here and
//! answered by its use case (`cluster::aggregate`, `cluster::activity`, `cluster::reads`), which
//! authorises and audits it before its first row leaves the node.

use super::call::check_format;
use crate::cluster::auth::{self, Authenticated};
use crate::cluster::service::Services;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use sus_proto::MAX_MESSAGE_BYTES;
use sus_proto::partial::batch_to_ipc;
use sus_proto::v1::query_server::{self, QueryServer};
use sus_proto::v1::*;
use tonic::{Request, Response, Status};

/// The service with explicit message limits (requests: `max_request_mib`).
pub(super) fn service(services: &Services) -> Authenticated<QueryServer<Services>> {
    super::call::authenticated(
        services,
        QueryServer::new(services.clone())
            .max_decoding_message_size(services.cluster.limits.max_request_bytes)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

type ScanStream = Pin<Box<dyn Stream<Item = std::result::Result<ScanChunk, Status>> + Send>>;

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
        let reply = self.read_aggregate(caller, &credentials, req).await?;
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
        let reply = self.read_activity(caller, &credentials, req).await?;
        Ok(Response::new(reply))
    }

    async fn scan(
        &self,
        request: Request<ScanRequest>,
    ) -> std::result::Result<Response<ScanStream>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        check_format(req.format)?;
        let batches = self.read_scan(caller, &req).await?;
        let chunks = batches.map(|batch| {
            let ipc = batch_to_ipc(&batch?).map_err(|e| Status::internal(e.to_string()))?;
            Ok(ScanChunk { ipc: ipc.into() })
        });
        Ok(Response::new(Box::pin(chunks)))
    }
}
