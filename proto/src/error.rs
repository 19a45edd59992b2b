//! Typed failure reasons on the wire: a [`v1::Reason`] rides in a gRPC status's details, so that
//! a client decides what to do (ask the leader, resend, give up) from the reason, not the text.
//!
//! The details are a `google.rpc.Status` (the gRPC convention for `grpc-status-details-bin`:
//! its code and message repeat the status's, its `details` hold our [`ErrorDetail`] as an `Any`),
//! so that any gRPC client can read them: Go's, under ADBC and the Flight SQL drivers, refuses a
//! status whose details say another code.

use crate::v1::{ErrorDetail, Reason};
use prost::Message;
use tonic::{Code, Status};

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

const DETAIL_TYPE: &str = "type.googleapis.com/sus.v1.ErrorDetail";

/// A status with `code`, `message` and `reason` in its details.
pub fn status(code: Code, message: impl Into<String>, reason: Reason) -> Status {
    let message = message.into();
    let detail = ErrorDetail {
        reason: reason as i32,
    };
    let rpc = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![Any {
            type_url: DETAIL_TYPE.to_string(),
            value: detail.encode_to_vec(),
        }],
    };
    Status::with_details(code, message, rpc.encode_to_vec().into())
}

/// The reason a status carries (`Unspecified` for a status without one, such as a transport
/// error or a node of an older build).
pub fn reason(status: &Status) -> Reason {
    let detail = RpcStatus::decode(status.details())
        .ok()
        .and_then(|rpc| rpc.details.into_iter().find(|a| a.type_url == DETAIL_TYPE))
        .and_then(|a| ErrorDetail::decode(a.value.as_slice()).ok());
    detail
        .and_then(|d| Reason::try_from(d.reason).ok())
        .unwrap_or(Reason::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_survives_the_status_and_its_absence_reads_unspecified() {
        let s = status(Code::NotFound, "freeze point 'x'", Reason::ReplicaBehind);
        assert_eq!(reason(&s), Reason::ReplicaBehind);
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(reason(&Status::not_found("plain")), Reason::Unspecified);
    }

    #[test]
    fn the_details_are_a_google_rpc_status_with_the_same_code_and_message() {
        let s = status(Code::PermissionDenied, "not yours", Reason::Access);
        let rpc = RpcStatus::decode(s.details()).expect("a google.rpc.Status");
        assert_eq!(rpc.code, Code::PermissionDenied as i32);
        assert_eq!(rpc.message, "not yours");
        assert_eq!(rpc.details[0].type_url, DETAIL_TYPE);
    }
}
