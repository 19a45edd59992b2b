//! The layer in front of every gRPC service of the node (`Server::layer` in `main.rs`).
//!
//! - **Submissions at once.** `Ingest` calls hold a slot of `max_concurrent_submissions` from
//!   before their message is read until they are answered, so that the submission files in the
//!   node's memory are at most that many times `max_submission_mib`, whatever the number of
//!   connections and streams. Later calls wait their turn (their bytes wait in HTTP/2 flow
//!   control, not in the node).
//! - **No credentials, no reading.** `Ingest` and `Query` calls without an `authorization`
//!   header are refused before their message is read (a bad token is refused by the services'
//!   interceptor, also before): a caller without a token cannot make the node buffer a
//!   submission-sized message.
//! - **Undecodable requests answer `INVALID_ARGUMENT`.** tonic's prost codec answers a request
//!   whose bytes are not its protobuf message with `INTERNAL`, which tells the caller the node
//!   failed; it is the caller's bytes that are wrong. Every service is covered, Arrow Flight's
//!   included (whose generated server is not ours to give another codec), by rewriting that one
//!   status (recognised by prost's own wording) wherever it appears: in a trailers-only answer,
//!   or in the trailers of a streamed one.
//! - **Oversized requests name the setting.** tonic refuses a message over the service's limit
//!   with `OUT_OF_RANGE` and the two sizes; the answer gains the setting that raises the limit.

use crate::limits::{Limits, keys, setting};
use bytes::Bytes;
use http_body::Frame;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::Semaphore;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{Body, Service};
use tonic::{Code, Status};

/// The gRPC path prefix of the `Ingest` service.
const INGEST: &str = "/sus.v1.Ingest/";
/// Services every call of which needs a token.
const TOKEN_ONLY: [&str; 2] = [INGEST, "/sus.v1.Query/"];

/// How prost's decode errors begin (`prost::DecodeError`'s `Display`).
const PROST_DECODE: &str = "failed to decode Protobuf message";
/// How tonic's refusal of an oversized message begins.
const TOO_LARGE: &str = "Error, decoded message length too large";

/// The [`tower_layer::Layer`] of [`RequestLimits`].
#[derive(Clone)]
pub struct RequestLimitsLayer {
    shared: Arc<Shared>,
}

struct Shared {
    submissions: Arc<Semaphore>,
    ingest_bytes: usize,
    request_bytes: usize,
}

impl RequestLimitsLayer {
    pub fn new(limits: &Limits) -> RequestLimitsLayer {
        RequestLimitsLayer {
            shared: Arc::new(Shared {
                submissions: Arc::new(Semaphore::new(limits.max_concurrent_submissions)),
                ingest_bytes: limits.max_ingest_request_bytes(),
                request_bytes: limits.max_request_bytes,
            }),
        }
    }
}

impl<S> tower_layer::Layer<S> for RequestLimitsLayer {
    type Service = RequestLimits<S>;

    fn layer(&self, inner: S) -> RequestLimits<S> {
        RequestLimits {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct RequestLimits<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestLimits<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Default + Unpin + Send + 'static,
{
    type Response = Response<Rewritten<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone that was made ready is the one called (tower's rule for `call` after
        // `poll_ready`).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let path = request.uri().path().to_string();
        let anonymous = !request.headers().contains_key("authorization")
            && TOKEN_ONLY.iter().any(|p| path.starts_with(p));
        Box::pin(async move {
            if anonymous {
                let refusal = Status::unauthenticated(
                    "no bearer token: log in (`sus login`) and send `authorization: Bearer \
                     <token>`",
                )
                .into_http::<ResBody>();
                let (parts, body) = refusal.into_parts();
                let context = Arc::new(Call {
                    path,
                    limit: (0, 0),
                });
                return Ok(Response::from_parts(
                    parts,
                    Rewritten {
                        inner: body,
                        context,
                    },
                ));
            }
            let _slot = if path.starts_with(INGEST) {
                // The semaphore is never closed.
                shared.submissions.clone().acquire_owned().await.ok()
            } else {
                None
            };
            let response = inner.call(request).await?;
            let (mut parts, body) = response.into_parts();
            let context = Arc::new(Call {
                path,
                limit: (shared.ingest_bytes, shared.request_bytes),
            });
            rewrite(&mut parts.headers, &context);
            Ok(Response::from_parts(
                parts,
                Rewritten {
                    inner: body,
                    context,
                },
            ))
        })
    }
}

/// What a rewritten status needs to say: the method and the limits.
struct Call {
    path: String,
    /// (Ingest, other public services) request limits in bytes.
    limit: (usize, usize),
}

impl Call {
    /// The limit on this method's requests and its setting (public services only).
    fn request_limit(&self) -> Option<(usize, &'static str)> {
        let service = self.path.trim_start_matches('/').split('/').next()?;
        match service {
            "sus.v1.Ingest" => Some((self.limit.0, keys::MAX_SUBMISSION_MIB)),
            "sus.v1.Query" | "sus.v1.Admin" | "arrow.flight.protocol.FlightService" => {
                Some((self.limit.1, keys::MAX_REQUEST_MIB))
            }
            _ => None,
        }
    }
}

/// Rewrites the gRPC status in `headers` (response headers or trailers) if it is one of the two
/// the module documentation names.
fn rewrite(headers: &mut HeaderMap, context: &Call) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let rewritten = match status.code() {
        Code::Internal if status.message().starts_with(PROST_DECODE) => {
            Status::invalid_argument(format!(
                "the request to {} is not a valid protobuf message of that call ({})",
                context.path,
                status.message()
            ))
        }
        Code::OutOfRange if status.message().starts_with(TOO_LARGE) => {
            match context.request_limit() {
                Some((limit, key)) => Status::out_of_range(format!(
                    "{}; this node takes requests to {} of at most {limit} bytes (setting {})",
                    status.message(),
                    context.path,
                    setting(key)
                )),
                None => return,
            }
        }
        _ => return,
    };
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    if rewritten.add_header(headers).is_err() {
        // Only a message that cannot be a header value fails; keep the code right at least.
        let _ = Status::new(rewritten.code(), "").add_header(headers);
    }
}

/// A response body whose trailers get the same rewriting as the headers.
pub struct Rewritten<B> {
    inner: B,
    context: Arc<Call>,
}

impl<B> Body for Rewritten<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        Poll::Ready(frame.map(|f| {
            f.map(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    rewrite(&mut trailers, &self.context);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(path: &str) -> Call {
        Call {
            path: path.into(),
            limit: (129 << 20, 4 << 20),
        }
    }

    fn status_of(headers: &HeaderMap) -> Status {
        Status::from_header_map(headers).expect("a status")
    }

    // A prost decode error becomes INVALID_ARGUMENT naming the call; any other INTERNAL stays.
    #[test]
    fn decode_errors_become_invalid_argument() {
        let mut h = HeaderMap::new();
        Status::internal("failed to decode Protobuf message: invalid wire type value: 7")
            .add_header(&mut h)
            .expect("header");
        rewrite(&mut h, &context("/sus.v1.Query/Aggregate"));
        let s = status_of(&h);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(
            s.message().contains("/sus.v1.Query/Aggregate"),
            "{}",
            s.message()
        );
        assert!(s.message().contains("invalid wire type"), "{}", s.message());
        let mut h = HeaderMap::new();
        Status::internal("the node failed")
            .add_header(&mut h)
            .expect("header");
        rewrite(&mut h, &context("/sus.v1.Query/Aggregate"));
        assert_eq!(status_of(&h).code(), Code::Internal);
    }

    // An oversized request's refusal names the limit's setting; internal services are left alone.
    #[test]
    fn oversized_requests_name_the_setting() {
        let message = "Error, decoded message length too large: found 5242880 bytes, the limit \
                       is: 4194304 bytes";
        for (path, key) in [
            ("/sus.v1.Admin/Login", "max_request_mib"),
            (
                "/arrow.flight.protocol.FlightService/DoGet",
                "max_request_mib",
            ),
            ("/sus.v1.Ingest/Submit", "max_submission_mib"),
        ] {
            let mut h = HeaderMap::new();
            Status::out_of_range(message)
                .add_header(&mut h)
                .expect("header");
            rewrite(&mut h, &context(path));
            let s = status_of(&h);
            assert_eq!(s.code(), Code::OutOfRange);
            assert!(s.message().starts_with(message), "{}", s.message());
            assert!(s.message().contains(key), "{path}: {}", s.message());
        }
        let mut h = HeaderMap::new();
        Status::out_of_range(message)
            .add_header(&mut h)
            .expect("header");
        rewrite(&mut h, &context("/sus.v1.Raft/AppendEntries"));
        assert_eq!(status_of(&h).message(), message);
    }
}
