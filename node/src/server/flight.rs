//! Arrow Flight on the node's port: record-level extracts for pyarrow, ADBC and other Arrow
//! clients.
//!
//! A flight is described by a JSON command (or a path `[dataset]` for a whole dataset):
//!
//! ```json
//! {"dataset": "op", "columns": ["provider_code", "price"],
//!  "filters": [{"field": "pod", "op": "in", "values": ["OPFA", "OPFU"]},
//!              {"field": "price", "op": "range", "min": "1"}],
//!  "freeze": "2024-25 M06 recon"}
//! ```
//!
//! `GetFlightInfo` answers one endpoint per shard (the ticket names the shard; the locations are
//! the shard's replicas). Any node serves any ticket: a node without a replica of the shard reads
//! it from the shard's leader over the internal `Query.Scan` call and relays the batches.

use super::flight_sql::{FlightSql, as_sent, encode, is_flight_sql};
use crate::access::Caller;
use crate::cluster::auth::{self, Authenticated};
use crate::cluster::reads::Extract;
use crate::cluster::service::Services;
use crate::error::status;
use crate::{Error, Result};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use futures::{Stream, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use sus_proto::v1::{self, ScanRequest};
use sus_proto::{MAX_MESSAGE_BYTES, WIRE_FORMAT_VERSION};
use tonic::{Request, Response, Status, Streaming};

/// A filter in a flight command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlightFilter {
    pub field: String,
    /// `eq`, `ne`, `in` or `range`.
    pub op: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub min: String,
    #[serde(default)]
    pub max: String,
}

/// What a flight reads; a ticket adds the shard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlightRequest {
    pub dataset: String,
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default)]
    pub filters: Vec<FlightFilter>,
    #[serde(default)]
    pub freeze: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    /// `identifiable` or `pseudonymised` (default: the caller's highest tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

impl FlightRequest {
    /// Reads a Flight command or ticket body as a client sent it (`what` names which, for the
    /// error): the first thing done with those untrusted bytes, so the fuzz harness drives it.
    pub fn parse(bytes: &[u8], what: &str) -> Result<FlightRequest> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidArgument(format!("{what} is not a sus flight request: {e}")))
    }

    /// The filters as wire filters; an unknown operator is `InvalidArgument`.
    pub fn wire_filters(&self) -> Result<Vec<v1::Filter>> {
        self.filters
            .iter()
            .map(|f| {
                let op = match f.op.as_str() {
                    "eq" | "=" => v1::filter::Op::Eq,
                    "ne" | "!=" => v1::filter::Op::Ne,
                    "in" => v1::filter::Op::In,
                    "range" => v1::filter::Op::Range,
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "filter on {}: unknown op '{other}' (eq, ne, in, range)",
                            f.field
                        )));
                    }
                };
                Ok(v1::Filter {
                    field: f.field.clone(),
                    op: op as i32,
                    values: f.values.clone(),
                    min: f.min.clone(),
                    max: f.max.clone(),
                })
            })
            .collect()
    }

    fn view(&self) -> Option<v1::View> {
        self.freeze.clone().map(|freeze| v1::View { freeze })
    }

    /// The tier asked, as the wire enum; an unknown tier is `InvalidArgument`.
    pub fn wire_tier(&self) -> Result<i32> {
        match self.tier.as_deref() {
            None | Some("") => Ok(v1::Tier::Unspecified as i32),
            Some(t) => crate::access::Tier::parse(t)
                .map(|t| t.to_proto() as i32)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "unknown tier '{t}' (identifiable, pseudonymised, anonymised)"
                    ))
                }),
        }
    }

    /// The wire scan of one shard of this request.
    fn shard_scan(&self, shard: u32) -> Result<ScanRequest> {
        Ok(ScanRequest {
            format: WIRE_FORMAT_VERSION,
            dataset: self.dataset.clone(),
            filters: self.wire_filters()?,
            columns: self.columns.clone(),
            view: self.view(),
            shards: vec![shard],
            linearizable: false,
            tier: self.wire_tier()?,
        })
    }

    /// Checks the request against the caller's rights.
    fn extract(&self, services: &Services, caller: Caller) -> Result<Extract> {
        Extract::check(
            services,
            caller,
            self.wire_tier()?,
            &self.dataset,
            &self.wire_filters()?,
            &self.columns,
            self.view().as_ref(),
            "flight",
        )
    }

    fn from_descriptor(d: &FlightDescriptor) -> Result<FlightRequest> {
        if !d.cmd.is_empty() {
            return FlightRequest::parse(&d.cmd, "flight command");
        }
        match d.path.as_slice() {
            [dataset] => Ok(FlightRequest {
                dataset: dataset.clone(),
                columns: Vec::new(),
                filters: Vec::new(),
                freeze: None,
                shard: None,
                tier: None,
            }),
            _ => Err(Error::InvalidArgument(
                "a flight descriptor is a JSON command or the path [dataset]".into(),
            )),
        }
    }
}

type Boxed<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

/// The Flight service with explicit message limits (requests: `max_request_mib`).
pub(super) fn service(services: &Services) -> Authenticated<FlightServiceServer<Services>> {
    super::call::authenticated(
        services,
        FlightServiceServer::new(services.clone())
            .max_decoding_message_size(services.cluster.limits.max_request_bytes)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

impl Services {
    fn flight_info(
        &self,
        caller: &Caller,
        request: &FlightRequest,
        descriptor: FlightDescriptor,
    ) -> std::result::Result<FlightInfo, Status> {
        let schema = as_sent(
            &request
                .extract(self, caller.clone())?
                .schema()
                .map_err(status)?,
        );
        let scheme = if self.cluster.tls_required() {
            "grpc+tls"
        } else {
            "grpc+tcp"
        };
        let state = self.cluster.meta_state();
        let mut info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_descriptor(descriptor);
        for (shard, s) in state.shards.iter().enumerate() {
            let ticket = FlightRequest {
                shard: Some(shard as u32),
                ..request.clone()
            };
            let bytes = serde_json::to_vec(&ticket).map_err(|e| Status::internal(e.to_string()))?;
            let mut endpoint = FlightEndpoint::new().with_ticket(Ticket::new(bytes));
            for node in &s.replicas {
                if let Some(addr) = state.nodes.get(node) {
                    endpoint = endpoint.with_location(format!("{scheme}://{addr}"));
                }
            }
            info = info.with_endpoint(endpoint);
        }
        Ok(info)
    }
}

#[tonic::async_trait]
impl FlightService for Services {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoExchangeStream = Boxed<FlightData>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;

    /// Basic authentication (`authorization: Basic base64(user:password)`, padded or not; the
    /// purpose in `x-sus-purpose`) answered with the bearer token in the `authorization` header.
    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<Response<Self::HandshakeStream>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(encoded) = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))
        else {
            return Err(Status::unauthenticated(
                "the handshake needs `authorization: Basic base64(user:password)`",
            ));
        };
        use base64::Engine;
        let trimmed = encoded.trim().trim_end_matches('=');
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Status::unauthenticated("the Basic credentials are not base64 text"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| Status::unauthenticated("Basic credentials are user:password"))?;
        let purpose = request
            .metadata()
            .get("x-sus-purpose")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("arrow flight extract")
            .to_string();
        let source = request.remote_addr().map(|a| a.ip());
        let reply =
            crate::cluster::users::login(&self.cluster, user, password, &purpose, 0, source)
                .await
                .map_err(status)?;
        let mut response = Response::new(Box::pin(futures::stream::once(async {
            Ok(HandshakeResponse::default())
        })) as Self::HandshakeStream);
        let value = tonic::metadata::MetadataValue::try_from(format!("Bearer {}", reply.token))
            .map_err(|e| Status::internal(e.to_string()))?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> std::result::Result<Response<Self::ListFlightsStream>, Status> {
        let caller = auth::caller(&request)?;
        let mut infos = Vec::new();
        for dataset in crate::model::Dataset::ALL {
            let request = FlightRequest {
                dataset: dataset.name().to_string(),
                columns: Vec::new(),
                filters: Vec::new(),
                freeze: None,
                shard: None,
                tier: None,
            };
            let descriptor = FlightDescriptor::new_path(vec![dataset.name().to_string()]);
            infos.push(Ok(self.flight_info(&caller, &request, descriptor)?));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        if is_flight_sql(&request.get_ref().cmd) {
            return FlightService::get_flight_info(&FlightSql(self.clone()), request).await;
        }
        let caller = auth::caller(&request)?;
        let descriptor = request.into_inner();
        let req = FlightRequest::from_descriptor(&descriptor).map_err(status)?;
        Ok(Response::new(self.flight_info(&caller, &req, descriptor)?))
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("use GetFlightInfo"))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<SchemaResult>, Status> {
        if is_flight_sql(&request.get_ref().cmd) {
            let info = FlightService::get_flight_info(&FlightSql(self.clone()), request).await?;
            return Ok(Response::new(SchemaResult {
                schema: info.into_inner().schema,
            }));
        }
        let caller = auth::caller(&request)?;
        let req = FlightRequest::from_descriptor(&request.into_inner()).map_err(status)?;
        let schema = as_sent(&req.extract(self, caller)?.schema().map_err(status)?);
        let result = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<Self::DoGetStream>, Status> {
        if is_flight_sql(&request.get_ref().ticket) {
            return FlightService::do_get(&FlightSql(self.clone()), request).await;
        }
        let caller = auth::caller(&request)?;
        let credentials = request.metadata().clone();
        let ticket = request.into_inner();
        let req = FlightRequest::parse(&ticket.ticket, "the ticket").map_err(status)?;
        let shard = req
            .shard
            .ok_or_else(|| Status::invalid_argument("the ticket names no shard"))?;
        let schema = req
            .extract(self, caller.clone())?
            .schema()
            .map_err(status)?;
        let scan = req.shard_scan(shard).map_err(status)?;
        let batches = self
            .shard_batches(caller, &credentials, scan, "flight")
            .await
            .map_err(status)?
            .map_err(|e| FlightError::Tonic(Box::new(status(e))));
        Ok(Response::new(encode(schema, batches)))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoPutStream>, Status> {
        // Flight SQL's bindings and updates are refused there, with its reasons; anything else
        // is not a Flight SQL call either.
        FlightService::do_put(&FlightSql(self.clone()), request).await
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange is not offered"))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> std::result::Result<Response<Self::DoActionStream>, Status> {
        // The only actions are Flight SQL's (prepared statements).
        FlightService::do_action(&FlightSql(self.clone()), request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> std::result::Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(&FlightSql(self.clone()), request).await
    }
}
