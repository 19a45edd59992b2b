//! What every handler does first: put the service behind the authenticator (which puts the
//! caller in each request: `cluster::auth::caller` reads it), check the caller's rights for admin
//! and node-only calls, and the wire format.

use crate::Error;
use crate::cluster::auth::{self, Authenticated};
use crate::cluster::service::Services;
use sus_proto::WIRE_FORMAT_VERSION;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// `service` behind the node's authenticator, which puts the [`Caller`] in each request.
pub(super) fn authenticated<S>(services: &Services, service: S) -> Authenticated<S> {
    Authenticated::new(service, services.cluster.authenticator())
}

/// The credentials and message of a call the caller must be an administrator to make.
pub(super) fn admin<T>(
    request: Request<T>,
    what: &str,
) -> std::result::Result<(MetadataMap, T), Status> {
    auth::caller(&request)?.require_admin(what)?;
    let (metadata, _, message) = request.into_parts();
    Ok((metadata, message))
}

/// The message of an internal call only a node (its own token over its own certificate, checked
/// by the authenticator) may make.
pub(super) fn node_only<T>(
    request: Request<T>,
    what: &str,
) -> std::result::Result<(MetadataMap, T), Status> {
    auth::caller(&request)?.require_node(what)?;
    let (metadata, _, message) = request.into_parts();
    Ok((metadata, message))
}

/// Refuses a request of a wire format this node does not speak.
pub(super) fn check_format(format: u32) -> crate::Result<()> {
    if format != WIRE_FORMAT_VERSION {
        return Err(Error::Precondition(format!(
            "wire format {format} not supported (this node speaks {WIRE_FORMAT_VERSION})"
        )));
    }
    Ok(())
}
