//! Transport security: every client and node-to-node connection is TLS (rustls); nodes present
//! certificates of the cluster's CA to each other (mutual TLS), and the calls that run before a
//! node holds the cluster key (Raft, Join, Init) require such a certificate. Plaintext only when
//! a node is started with `--plaintext` (local development).

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

/// A node's TLS material (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

impl TlsFiles {
    /// The server side: the node's identity; client certificates of the CA are verified when
    /// presented (clients of users present none; nodes do).
    pub fn server(&self) -> Result<ServerTlsConfig> {
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .client_ca_root(Certificate::from_pem(read(&self.ca)?))
            .client_auth_optional(true))
    }

    /// The client side of node-to-node channels: trust the CA, present the node's certificate.
    pub fn client(&self) -> Result<ClientTlsConfig> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?)))
    }
}

/// Refuses a call without a verified client certificate when TLS is on.
pub fn require_client_cert<T>(
    request: &Request<T>,
    required: bool,
) -> std::result::Result<(), Status> {
    if required && request.peer_certs().is_none_or(|c| c.is_empty()) {
        return Err(Status::unauthenticated(
            "this call needs a client certificate of the cluster's CA (mutual TLS between nodes)",
        ));
    }
    Ok(())
}

/// The interceptor of the internal Raft service: with TLS, only nodes of the cluster's CA.
#[derive(Clone)]
pub struct NodesOnly {
    pub required: bool,
}

impl tonic::service::Interceptor for NodesOnly {
    fn call(&mut self, request: Request<()>) -> std::result::Result<Request<()>, Status> {
        require_client_cert(&request, self.required)?;
        Ok(request)
    }
}
