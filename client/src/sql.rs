//! SQL over Arrow Flight SQL: the node plans the statement (DataFusion over the cluster's
//! tables `apc`, `op`, `ec`) and the answer streams back as Arrow record batches.

use crate::cluster::{Client, status_error};
use crate::query::Tier;
use crate::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, FlightInfo, Ticket};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The header that asks a node for a tier below the caller's highest.
const TIER_HEADER: &str = "x-sus-tier";

/// The answer to a statement: its schema, then its batches as the nodes produce them (reading
/// stops when the stream is dropped).
pub struct SqlStream {
    schema: SchemaRef,
    batches: Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>,
}

impl SqlStream {
    /// The columns of the answer (known before the first batch arrives).
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Every batch of the answer.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        self.batches.try_collect().await
    }
}

impl Stream for SqlStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.batches.as_mut().poll_next(cx)
    }
}

/// `message` as a request asking for `tier` (none: the caller's highest).
fn with_tier<T>(message: T, tier: Option<&'static str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = tier {
        r.metadata_mut()
            .insert(TIER_HEADER, tonic::metadata::MetadataValue::from_static(t));
    }
    r
}

fn flight_error(e: FlightError) -> Error {
    match e {
        FlightError::Tonic(s) => status_error(*s),
        other => Error::Cluster(format!("reading the answer: {other}")),
    }
}

impl Client {
    /// Runs a read-only SQL statement at the caller's highest tier.
    ///
    /// ```no_run
    /// # async fn f(client: sus_client::Client) -> sus_client::Result<()> {
    /// let answer = client
    ///     .sql("SELECT provider_code, sum(price) AS pence FROM apc GROUP BY provider_code")
    ///     .await?
    ///     .collect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn sql(&self, statement: &str) -> Result<SqlStream> {
        self.sql_at(statement, Tier::Unspecified).await
    }

    /// Runs a read-only SQL statement at `tier` (`Tier::Unspecified`: the caller's highest).
    pub async fn sql_at(&self, statement: &str, tier: Tier) -> Result<SqlStream> {
        let command = CommandStatementQuery {
            query: statement.to_string(),
            transaction_id: None,
        };
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        let tier_name = match tier {
            Tier::Unspecified => None,
            Tier::Identifiable => Some("identifiable"),
            Tier::Pseudonymised => Some("pseudonymised"),
            Tier::Anonymised => Some("anonymised"),
        };
        let mut last = Error::Cluster("no endpoint".into());
        for (addr, _) in self.endpoints() {
            let mut flight = FlightServiceClient::new(self.channel_to(addr)?)
                .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES);
            let info: FlightInfo = match flight
                .get_flight_info(with_tier(descriptor.clone(), tier_name))
                .await
            {
                Ok(info) => info.into_inner(),
                Err(s) => {
                    last = status_error(s);
                    if last.is_retryable() {
                        continue;
                    }
                    return Err(last);
                }
            };
            let schema: SchemaRef = std::sync::Arc::new(
                info.clone()
                    .try_decode_schema()
                    .map_err(|e| Error::Cluster(format!("the answer's schema: {e}")))?,
            );
            let tickets: Vec<Ticket> = info.endpoint.into_iter().filter_map(|e| e.ticket).collect();
            // Every endpoint of a statement is served by the node that planned it.
            let batches = futures::stream::iter(tickets)
                .then(move |ticket| {
                    let mut flight = flight.clone();
                    async move {
                        let data = flight
                            .do_get(with_tier(ticket, tier_name))
                            .await
                            .map_err(status_error)?
                            .into_inner()
                            .map_err(|s| FlightError::Tonic(Box::new(s)));
                        Ok::<_, Error>(
                            FlightRecordBatchStream::new_from_flight_data(data)
                                .map_err(flight_error),
                        )
                    }
                })
                .try_flatten();
            return Ok(SqlStream {
                schema,
                batches: Box::pin(batches),
            });
        }
        Err(last)
    }
}
