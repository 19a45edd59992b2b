//! The node's gRPC port: every service on one listener, with the limits of `docs/security.md`
//! ("Limits") set here rather than left to library defaults.
//!
//! `main.rs` parses settings and starts the [`Cluster`]; [`run`] serves it until `shutdown`
//! completes, so tests can run a node's server in-process on a listener of their own.

mod admin;
mod call;
mod flight;
mod flight_sql;
mod ingest;
mod query;
pub mod requests;

pub use flight::{FlightFilter, FlightRequest};

use crate::cluster::Cluster;
use crate::cluster::service::Services;
use crate::cluster::tls::TlsFiles;
use crate::{Error, Result};
use requests::RequestLimitsLayer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

/// Serves `cluster`'s services (Raft, Ingest, Admin, Query, Flight) on `listener` until
/// `shutdown` completes, over TLS when `tls` is given.
pub async fn run(
    listener: TcpListener,
    cluster: Arc<Cluster>,
    tls: Option<&TlsFiles>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let services = Services::new(cluster.clone());
    // Small Raft and client messages must not wait for Nagle's algorithm (40 ms stalls with
    // delayed ACKs); tonic's own tcp_nodelay applies only to listeners it binds itself.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|stream| {
        stream.inspect(|s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::warn!("TCP_NODELAY: {e}");
            }
        })
    });
    let mut server = tonic::transport::Server::builder();
    if let Some(files) = tls {
        server = server
            .tls_config(files.server()?)
            .map_err(|e| Error::InvalidArgument(format!("TLS configuration: {e}")))?;
    }
    let id = cluster.id;
    server
        .trace_fn(move |r| crate::cluster::trace::rpc_span(id, r))
        .tcp_nodelay(true)
        // Calls handled at once per connection (Raft traffic of every group and client calls
        // share a peer's); further streams wait, unread.
        .concurrency_limit_per_connection(128)
        .max_concurrent_streams(256)
        // Bytes a peer may send before the node reads them.
        .initial_stream_window_size(2 << 20)
        .initial_connection_window_size(8 << 20)
        // Request headers (tokens, trace context) are small.
        .http2_max_header_list_size(64 << 10)
        // Streams reset straight after opening (the HTTP/2 "rapid reset" attack), and streams
        // the node had to reset, close the connection past these counts.
        .http2_max_pending_accept_reset_streams(Some(32))
        .http2_max_local_error_reset_streams(Some(256))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        // Ingest slots, and request errors in the codes gRPC gives them.
        .layer(RequestLimitsLayer::new(&cluster.limits))
        // Raft calls only from current members, each sending its own messages (with TLS).
        .add_service(sus_raft::network::RaftService::server(
            cluster.registry.clone(),
            Arc::new(cluster.gate().clone()),
        ))
        .add_service(ingest::service(&services))
        .add_service(admin::service(&services))
        .add_service(query::service(&services))
        .add_service(flight::service(&services))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::io("the gRPC listener", std::io::Error::other(e)))
}
