//! Typed failure reasons on the wire: a [`v1::Reason`] rides in a gRPC status's details, so that
//! a client decides what to do (ask the leader, resend, give up) from the reason, not the text.

use crate::v1::{ErrorDetail, Reason};
use prost::Message;
use tonic::{Code, Status};

/// A status with `code`, `message` and `reason` in its details.
pub fn status(code: Code, message: impl Into<String>, reason: Reason) -> Status {
    let detail = ErrorDetail {
        reason: reason as i32,
    };
    Status::with_details(code, message, detail.encode_to_vec().into())
}

/// The reason a status carries (`Unspecified` for a status without one, such as a transport
/// error or a node of an older build).
pub fn reason(status: &Status) -> Reason {
    ErrorDetail::decode(status.details())
        .ok()
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
}
