//! The trace a client's calls belong to: every call made inside [`scope`] carries its
//! `traceparent`, so the nodes' logs of one query or report share its trace id.
//!
//! ```no_run
//! # async fn f(client: sus_client::Client, spec: sus_proto::v1::QuerySpec) {
//! use sus_client::trace::{self, TraceContext};
//! let ctx = TraceContext::new();
//! eprintln!("trace {}", ctx.trace_hex());
//! let result = trace::scope(ctx, client.aggregate(spec, sus_client::ReadFrom::Leader)).await;
//! # }
//! ```

use std::future::Future;
use tracing::Instrument;

pub use sus_proto::trace::{TRACEPARENT, TraceContext};

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Runs `work` with every call it makes (and every task the client spawns for it) in trace `ctx`.
pub async fn scope<F: Future>(ctx: TraceContext, work: F) -> F::Output {
    CURRENT.scope(ctx, work).await
}

/// The trace of the running task, if it runs in a [`scope`].
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// `work` in the caller's trace, for a task spawned on its behalf (task-locals do not cross
/// `tokio::spawn` by themselves).
pub(crate) fn inherit<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let ctx = current();
    let work = work.instrument(tracing::Span::current());
    async move {
        match ctx {
            Some(ctx) => CURRENT.scope(ctx, work).await,
            None => work.await,
        }
    }
}
