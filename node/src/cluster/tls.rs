//! Transport security: every client and node-to-node connection is TLS (rustls); nodes present
//! certificates of the cluster's CA that name them (`sus://node/<id>`) to each other (mutual
//! TLS). Which certificate may call what is decided by [`super::pki`]: the internal services
//! (Raft, Join, node tokens) accept only current members, `Init` only the operator's certificate.
//! Plaintext only when a node is started with `--plaintext` (local development: no identities).

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

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

    /// Refuses to start node `id` with a certificate that does not name it (`sus://node/<id>`).
    pub fn check_identity(&self, id: sus_raft::NodeId) -> Result<()> {
        super::pki::check_own_certificate(&read(&self.cert)?, &self.cert, id)
    }

    /// The client side of node-to-node channels: trust the CA, present the node's certificate.
    pub fn client(&self) -> Result<ClientTlsConfig> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?)))
    }
}
