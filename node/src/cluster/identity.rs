//! The node's identity on disk (`node.json`): its id, the cluster it joined, and the members that
//! admitted it (accepted before its meta group has caught up).

use super::durable::write_atomically;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use sus_raft::NodeId;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub id: NodeId,
    pub cluster_id: Option<String>,
    /// The members named by the `Init` or `Join` that admitted this node: the nodes it accepts
    /// before its meta group has caught up (and so knows the members itself).
    #[serde(default)]
    pub admitted_with: BTreeSet<NodeId>,
}

pub(crate) fn load_identity(dir: &Path, id: NodeId) -> Result<Identity> {
    let path = dir.join("node.json");
    match fs::read(&path) {
        Ok(bytes) => {
            let identity: Identity =
                serde_json::from_slice(&bytes).map_err(|e| Error::Corruption {
                    what: path.display().to_string(),
                    message: e.to_string(),
                })?;
            if identity.id != id {
                return Err(Error::InvalidArgument(format!(
                    "data directory {} belongs to node {}, not node {id}; node ids are never \
                     reused or changed",
                    dir.display(),
                    identity.id
                )));
            }
            Ok(identity)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .next()
                .is_some()
            {
                return Err(Error::InvalidArgument(format!(
                    "data directory {} is not empty but has no node.json; refusing to use it",
                    dir.display()
                )));
            }
            let identity = Identity {
                id,
                cluster_id: None,
                admitted_with: BTreeSet::new(),
            };
            write_identity(dir, &identity)?;
            Ok(identity)
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

pub(crate) fn write_identity(dir: &Path, identity: &Identity) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(identity).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    write_atomically(&dir.join("node.json"), &bytes)
}
