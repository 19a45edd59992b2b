//! Arrow Flight SQL on the node's port, beside the JSON extract commands of `flight`: what ADBC,
//! the Flight SQL JDBC driver and BI tools speak.
//!
//! A statement is planned by DataFusion over the cluster's tables (`sus_sql`), for the caller
//! of each call: `GetFlightInfo` plans it for its schema, `DoGet` plans it again and runs it. A
//! ticket or prepared-statement handle holds only the statement and the tier asked, so it
//! grants nothing: whoever presents it is checked again. The tier is the caller's highest unless
//! the `x-sus-tier` header asks for a lower one. Parameters (`DoPut` bindings), updates,
//! transactions and Substrait plans are refused with a message that says so.

use crate::access::Caller;
use crate::cluster::auth;
use crate::cluster::service::Services;
use crate::cluster::sql::{SqlSource, from_sql};
use crate::error::status;
use crate::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket};
use futures::TryStreamExt;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;
use sus_proto::v1;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

const TYPE_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// The header that asks for a tier below the caller's highest.
pub const TIER_HEADER: &str = "x-sus-tier";

/// Whether `bytes` (a command, ticket or action body) is a Flight SQL message.
pub(super) fn is_flight_sql(bytes: &[u8]) -> bool {
    Any::decode(bytes).is_ok_and(|a| a.type_url.starts_with(TYPE_PREFIX))
}

/// The Flight SQL half of the node's Flight service.
#[derive(Clone)]
pub(super) struct FlightSql(pub Services);

/// A statement ticket's and a prepared statement's handle.
#[derive(Debug, Serialize, Deserialize)]
struct Handle {
    sql: String,
    /// The wire tier asked when the statement was planned.
    tier: i32,
}

impl Handle {
    fn bytes(&self) -> std::result::Result<prost::bytes::Bytes, Status> {
        serde_json::to_vec(self)
            .map(Into::into)
            .map_err(|e| Status::internal(e.to_string()))
    }

    fn parse(bytes: &[u8]) -> std::result::Result<Handle, Status> {
        serde_json::from_slice(bytes).map_err(|_| {
            Status::invalid_argument(
                "not a statement handle of this cluster: plan the statement again",
            )
        })
    }
}

type DoGetStream = <FlightSql as FlightService>::DoGetStream;

static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "sus-cluster");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    info.append(SqlInfo::FlightSqlServerArrowVersion, "60");
    info.append(SqlInfo::FlightSqlServerReadOnly, true);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    info.append(SqlInfo::FlightSqlServerCancel, false);
    info.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, false);
    info.append(SqlInfo::SqlDdlTable, false);
    // Every key above has a value of its kind: building cannot fail.
    #[allow(clippy::expect_used)]
    info.build().expect("static SQL info")
});

/// The tier asked in the request's header (unspecified: the caller's highest).
fn asked_tier(metadata: &MetadataMap) -> std::result::Result<i32, Status> {
    match metadata.get(TIER_HEADER).and_then(|v| v.to_str().ok()) {
        None | Some("") => Ok(v1::Tier::Unspecified as i32),
        Some(t) => crate::access::Tier::parse(t)
            .map(|t| t.to_proto() as i32)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "{TIER_HEADER}: unknown tier '{t}' (identifiable, pseudonymised, anonymised)"
                ))
            }),
    }
}

fn sql_status(e: sus_sql::Error) -> Status {
    status(from_sql(e))
}

/// `schema` as a `DoGet` stream sends it: the Flight encoder sends dictionary columns as their
/// values, so the schema a `FlightInfo` or `GetSchema` advertises must say so too (a client such
/// as ADBC refuses a stream whose schema differs from the advertised one).
pub(super) fn as_sent(schema: &SchemaRef) -> SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, values) => {
                f.as_ref().clone().with_data_type((**values).clone())
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    std::sync::Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn schema_ipc(schema: &SchemaRef) -> std::result::Result<prost::bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}

/// `batches` of `schema` as a `DoGet` stream; a refusal in the stream keeps its status.
pub(super) fn encode(
    schema: SchemaRef,
    batches: impl futures::Stream<Item = std::result::Result<RecordBatch, FlightError>> + Send + 'static,
) -> DoGetStream {
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(|e| match e {
            FlightError::Tonic(s) => *s,
            other => Status::internal(other.to_string()),
        });
    Box::pin(data)
}

/// One batch as a `DoGet` stream.
fn one_batch(batch: RecordBatch) -> Response<DoGetStream> {
    let schema = batch.schema();
    Response::new(encode(schema, futures::stream::once(async { Ok(batch) })))
}

/// A `FlightInfo` for a metadata command: its schema, and the command itself as the ticket.
fn command_info<M: ProstMessageExt>(
    command: &M,
    schema: SchemaRef,
    descriptor: FlightDescriptor,
) -> std::result::Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(command.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(&schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_descriptor(descriptor)
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket));
    Ok(Response::new(info))
}

impl FlightSql {
    fn session(
        &self,
        caller: Caller,
        metadata: &MetadataMap,
        tier: i32,
    ) -> std::result::Result<sus_sql::Session, Status> {
        SqlSource::new(&self.0, caller, metadata.clone(), tier)
            .session()
            .map_err(status)
    }

    /// The `FlightInfo` of a statement: its schema, and one endpoint whose ticket holds it.
    async fn statement_info<T>(
        &self,
        request: &Request<T>,
        handle: Handle,
        descriptor: FlightDescriptor,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let caller = auth::caller(request)?;
        let session = self.session(caller, request.metadata(), handle.tier)?;
        let schema = as_sent(&session.schema(&handle.sql).await.map_err(sql_status)?);
        let ticket = TicketStatementQuery {
            statement_handle: handle.bytes()?,
        };
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_descriptor(descriptor)
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            );
        Ok(Response::new(info))
    }

    /// Runs a statement for the caller of `request`.
    async fn run<T>(
        &self,
        request: &Request<T>,
        handle: Handle,
    ) -> std::result::Result<Response<DoGetStream>, Status> {
        let caller = auth::caller(request)?;
        let session = self.session(caller, request.metadata(), handle.tier)?;
        tracing::debug!(sql = %handle.sql, "flight sql statement");
        let batches = session.execute(&handle.sql).await.map_err(sql_status)?;
        let schema = batches.schema();
        let batches =
            batches.map_err(|e| FlightError::Tonic(Box::new(sql_status(sus_sql::Error::from(e)))));
        Ok(Response::new(encode(schema, batches)))
    }

    /// The tables' schemas as this caller receives them.
    async fn tables(
        &self,
        request: &Request<impl Send>,
        query: CommandGetTables,
    ) -> Result<RecordBatch> {
        let caller = auth::caller(request).map_err(Error::from)?;
        let tier = asked_tier(request.metadata()).map_err(Error::from)?;
        let session =
            SqlSource::new(&self.0, caller, request.metadata().clone(), tier).session()?;
        let mut builder = query.into_builder();
        for table in sus_sql::DATASETS {
            let schema = session.table_schema(table).await.map_err(from_sql)?;
            builder
                .append(sus_sql::CATALOG, sus_sql::SCHEMA, table, "TABLE", &schema)
                .map_err(|e| Error::Internal(format!("listing tables: {e}")))?;
        }
        builder
            .build()
            .map_err(|e| Error::Internal(format!("listing tables: {e}")))
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        if query.transaction_id.is_some() {
            return Err(Status::invalid_argument(
                "transactions are not offered: the tables are read-only",
            ));
        }
        let tier = asked_tier(request.metadata())?;
        let descriptor = request.get_ref().clone();
        let handle = Handle {
            sql: query.query,
            tier,
        };
        self.statement_info(&request, handle, descriptor).await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<DoGetStream>, Status> {
        let handle = Handle::parse(&ticket.statement_handle)?;
        self.run(&request, handle).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> std::result::Result<ActionCreatePreparedStatementResult, Status> {
        let caller = auth::caller(&request)?;
        let tier = asked_tier(request.metadata())?;
        let session = self.session(caller, request.metadata(), tier)?;
        let schema = as_sent(&session.schema(&query.query).await.map_err(sql_status)?);
        let handle = Handle {
            sql: query.query,
            tier,
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.bytes()?,
            dataset_schema: schema_ipc(&schema)?,
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> std::result::Result<(), Status> {
        // Handles hold no server state.
        Ok(())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let handle = Handle::parse(&query.prepared_statement_handle)?;
        let descriptor = request.get_ref().clone();
        self.statement_info(&request, handle, descriptor).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<arrow_flight::Ticket>,
    ) -> std::result::Result<Response<DoGetStream>, Status> {
        let handle = Handle::parse(&query.prepared_statement_handle)?;
        self.run(&request, handle).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        _query: CommandPreparedStatementQuery,
        _request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<DoPutPreparedStatementResult, Status> {
        Err(Status::invalid_argument(
            "statement parameters are not supported: put the values in the statement",
        ))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        command_info(&query, schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(sus_sql::CATALOG);
        Ok(one_batch(
            builder
                .build()
                .map_err(|e| Status::internal(e.to_string()))?,
        ))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        command_info(&query, schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(sus_sql::CATALOG, sus_sql::SCHEMA);
        Ok(one_batch(
            builder
                .build()
                .map_err(|e| Status::internal(e.to_string()))?,
        ))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        command_info(&query, schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<DoGetStream>, Status> {
        Ok(one_batch(
            self.tables(&request, query).await.map_err(status)?,
        ))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        command_info(&query, schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append("TABLE");
        Ok(one_batch(
            builder
                .build()
                .map_err(|e| Status::internal(e.to_string()))?,
        ))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&SQL_INFO).schema();
        command_info(&query, schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<DoGetStream>, Status> {
        let batch = query
            .into_builder(&SQL_INFO)
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(one_batch(batch))
    }

    async fn do_put_fallback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> std::result::Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        Err(Status::unimplemented(format!(
            "DoPut of {} is not offered: the tables are read-only, and submissions go through \
             Ingest.Submit (`sus submit`)",
            message.type_url
        )))
    }

    async fn do_put_error_callback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        error: arrow_flight::sql::server::DoPutError,
    ) -> std::result::Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        Err(Status::unimplemented(format!(
            "DoPut takes no data here ({error}): the tables are read-only, and submissions go \
             through Ingest.Submit (`sus submit`)"
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
