//! Spans of the calls a node serves. A call's span carries the caller's trace id (W3C
//! `traceparent`, sent by `sus-client` and passed on by nodes that forward work), so one query's
//! log lines on every node it reached can be found by that id.

use sus_proto::trace::{TRACEPARENT, TraceContext};
use tonic::codegen::http;

/// The span of one incoming call (the server's `trace_fn`); Raft traffic gets none: it is
/// constant and openraft logs its own.
pub fn rpc_span(node: u64, request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    if path.starts_with("/sus.v1.Raft/") {
        return tracing::Span::none();
    }
    let method = path.strip_prefix("/sus.v1.").unwrap_or(path);
    let trace = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let span = tracing::info_span!("rpc", node, method, trace_id = tracing::field::Empty);
    if let Some(t) = trace {
        span.record("trace_id", tracing::field::display(t.trace_hex()));
    }
    span
}

/// Copies the trace of an incoming call onto a call made for it.
pub fn propagate(from: &tonic::metadata::MetadataMap, to: &mut tonic::metadata::MetadataMap) {
    if let Some(ctx) = TraceContext::from_metadata(from) {
        ctx.child().insert(to);
    }
}
