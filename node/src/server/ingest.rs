//! The `Ingest` service: one call, `Submit`, decoded and handed to the submission use case
//! (`cluster::submit`).

use super::call::check_format;
use crate::cluster::auth::{self, Authenticated};
use crate::cluster::service::Services;
use sus_proto::MAX_MESSAGE_BYTES;
use sus_proto::v1::ingest_server::{Ingest, IngestServer};
use sus_proto::v1::{SubmitReply, SubmitRequest};
use tonic::{Request, Response, Status};

/// The service with explicit message limits (requests: a submission file).
pub(super) fn service(services: &Services) -> Authenticated<IngestServer<Services>> {
    super::call::authenticated(
        services,
        IngestServer::new(services.clone())
            .max_decoding_message_size(services.cluster.limits.max_ingest_request_bytes())
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

#[tonic::async_trait]
impl Ingest for Services {
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> std::result::Result<Response<SubmitReply>, Status> {
        let caller = auth::caller(&request)?;
        let credentials = request.metadata().clone();
        let req = request.into_inner();
        check_format(req.format)?;
        let reply = self.submit_file(caller, &credentials, req).await?;
        Ok(Response::new(reply))
    }
}
