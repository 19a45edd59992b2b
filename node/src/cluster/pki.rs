//! Node identity: which node a certificate names, and which callers the internal services accept.
//!
//! ```text
//!  TLS handshake: chain verified against the cluster CA (rustls)
//!        │ leaf certificate (DER)
//!        ▼
//!  identity_of: SAN URI sus://node/<id> ─► Node(id)      (exactly one; malformed: refused)
//!               none                    ─► Operator     (`sus certs init`'s client.pem)
//!        │
//!        ▼ NodeGate
//!  Raft service, Join, node tokens ─► Node(id) of a current member, never retired
//!                                     (members: meta state ∪ meta Raft membership ∪ the
//!                                      nodes listed when this node was admitted)
//!  Init (before any user exists)   ─► Operator only
//! ```
//!
//! With `--plaintext` no connection proves anything: the gate lets every caller through and
//! the internal services are open to whoever reaches the port (local development only).

use super::identity::Identity;
use super::meta::MetaState;
use crate::{Error, Result};
use openraft::{BasicNode, RaftMetrics};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use sus_proto::identity::parse_node_uri;
use sus_raft::{GroupId, NodeId};
use tokio::sync::watch;
use tonic::Status;
use tonic::transport::CertificateDer;
use x509_parser::extensions::GeneralName;

/// What a certificate of the cluster's CA names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertIdentity {
    /// A node's certificate: it carries `sus://node/<id>`.
    Node(NodeId),
    /// Any other certificate (an operator's client certificate): it is never a node.
    Operator,
}

impl std::fmt::Display for CertIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertIdentity::Node(id) => write!(f, "node {id}'s certificate"),
            CertIdentity::Operator => {
                f.write_str("an operator (client) certificate, which names no node")
            }
        }
    }
}

/// The identity a DER certificate carries, or why it carries none that can be trusted: a
/// malformed `sus://node/...` name, or two node names, make the certificate unusable (it is not
/// taken for an operator's either).
pub fn identity_of(der: &[u8]) -> std::result::Result<CertIdentity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("unreadable subject alternative names: {e}"))?;
    let mut node = None;
    for name in san.iter().flat_map(|san| san.value.general_names.iter()) {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        match parse_node_uri(uri) {
            None => {}
            Some(Err(e)) => return Err(e),
            Some(Ok(id)) => {
                if let Some(first) = node.replace(id) {
                    return Err(format!(
                        "the certificate names two nodes ({first} and {id}); a node certificate \
                         names exactly one"
                    ));
                }
            }
        }
    }
    Ok(node.map_or(CertIdentity::Operator, CertIdentity::Node))
}

/// Checks, at start-up, that the node's own certificate (PEM) names node `id`.
pub fn check_own_certificate(pem: &[u8], path: &std::path::Path, id: NodeId) -> Result<()> {
    let bad = |m: String| {
        Error::InvalidArgument(format!(
            "the TLS certificate {} {m}; each node presents its own certificate naming its id \
             (sus://node/{id}): `sus certs node --dir DIR --id {id} --name HOST` issues one",
            path.display()
        ))
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| bad(format!("is not a PEM certificate ({e})")))?;
    match identity_of(&pem.contents).map_err(|e| bad(format!("is not usable: {e}")))? {
        CertIdentity::Node(named) if named == id => Ok(()),
        CertIdentity::Node(named) => Err(bad(format!("names node {named}, but this is node {id}"))),
        CertIdentity::Operator => Err(bad(format!(
            "names no node (it has no sus://node/<id> name), but this is node {id}"
        ))),
    }
}

/// Decides which callers the internal services accept: nodes that are current members, each
/// presenting its own certificate. Cheap to clone; reads the node's live state.
#[derive(Clone)]
pub struct NodeGate {
    tls: bool,
    state: watch::Receiver<MetaState>,
    meta: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    identity: Arc<Mutex<Identity>>,
}

impl NodeGate {
    pub(super) fn new(
        tls: bool,
        state: watch::Receiver<MetaState>,
        meta: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
        identity: Arc<Mutex<Identity>>,
    ) -> NodeGate {
        NodeGate {
            tls,
            state,
            meta,
            identity,
        }
    }

    /// The cluster state as this node last applied it (for the token check).
    pub(crate) fn state(&self) -> watch::Ref<'_, MetaState> {
        self.state.borrow()
    }

    /// What the connection's verified leaf certificate names (`None`: it presented none).
    fn identify(
        certs: Option<&[CertificateDer<'static>]>,
        what: &str,
    ) -> Result<Option<CertIdentity>> {
        let Some(leaf) = certs.and_then(|c| c.first()) else {
            return Ok(None);
        };
        identity_of(leaf).map(Some).map_err(|e| {
            Error::PermissionDenied(format!(
                "{what} refused: the connection's certificate is not usable: {e}"
            ))
        })
    }

    /// The node a connection proves it is, whether or not it is a member: `None` without TLS
    /// (nothing is proven, everything is let through). Without a certificate, or with one that
    /// names no node, the call is refused.
    pub fn node_of(
        &self,
        certs: Option<&[CertificateDer<'static>]>,
        what: &str,
    ) -> Result<Option<NodeId>> {
        if !self.tls {
            return Ok(None);
        }
        match Self::identify(certs, what)? {
            Some(CertIdentity::Node(id)) => Ok(Some(id)),
            Some(operator @ CertIdentity::Operator) => Err(Error::PermissionDenied(format!(
                "{what} is for the cluster's nodes only: this connection presents {operator} \
                 (sus://node/<id>)"
            ))),
            None => Err(Error::Unauthenticated(format!(
                "{what} is for the cluster's nodes only: present a node certificate \
                 (sus://node/<id>) of the cluster's CA; this connection presents none"
            ))),
        }
    }

    /// [`NodeGate::node_of`], and the node must be a current member of the cluster.
    pub fn member(
        &self,
        certs: Option<&[CertificateDer<'static>]>,
        what: &str,
    ) -> Result<Option<NodeId>> {
        let node = self.node_of(certs, what)?;
        if let Some(id) = node {
            self.check_member(id, what)?;
        }
        Ok(node)
    }

    /// Refuses node `id` unless it is a current member: in the meta state's nodes, in the meta
    /// group's Raft membership (a node being added is a learner before it is recorded), or
    /// listed when this node was admitted (before it has caught up); and never a removed node.
    pub fn check_member(&self, id: NodeId, what: &str) -> Result<()> {
        if self.state.borrow().retired.contains(&id) {
            return Err(Error::PermissionDenied(format!(
                "{what} refused: node {id} was removed from this cluster, and its certificate is \
                 no longer accepted"
            )));
        }
        if !self.members().contains(&id) {
            return Err(Error::PermissionDenied(format!(
                "{what} refused: node {id} is not a member of this cluster"
            )));
        }
        Ok(())
    }

    /// The current members as this node knows them (see [`NodeGate::check_member`]).
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut members: BTreeSet<NodeId> = self.state.borrow().nodes.keys().copied().collect();
        members.extend(
            self.meta
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id),
        );
        members.extend(
            self.identity
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admitted_with
                .iter()
                .copied(),
        );
        let state = self.state.borrow();
        members.retain(|id| !state.retired.contains(id));
        members
    }

    /// Checks that a call carrying node `token_node`'s token comes over that node's own
    /// certificate, and that the node is a current member. Without TLS nothing is checked.
    pub fn check_node_token(
        &self,
        certs: Option<&[CertificateDer<'static>]>,
        token_node: NodeId,
    ) -> Result<()> {
        if !self.tls {
            return Ok(());
        }
        let what = format!("a token of node {token_node}");
        match Self::identify(certs, &what)? {
            Some(CertIdentity::Node(id)) if id == token_node => {
                self.check_member(id, &format!("the call with {what}"))
            }
            Some(other) => Err(Error::PermissionDenied(format!(
                "{what} is accepted only over a connection presenting node {token_node}'s \
                 certificate; this connection presents {other}"
            ))),
            None => Err(Error::Unauthenticated(format!(
                "{what} is accepted only over a connection presenting node {token_node}'s \
                 certificate; this connection presents none"
            ))),
        }
    }

    /// Refuses any caller but the operator (a verified certificate that names no node): for
    /// `Init`, which runs before any user exists. Without TLS everyone is let through.
    pub fn operator(&self, certs: Option<&[CertificateDer<'static>]>, what: &str) -> Result<()> {
        if !self.tls {
            return Ok(());
        }
        match Self::identify(certs, what)? {
            Some(CertIdentity::Operator) => Ok(()),
            Some(node @ CertIdentity::Node(_)) => Err(Error::PermissionDenied(format!(
                "{what} is authorised by the operator's client certificate (client.pem of `sus \
                 certs init`); this connection presents {node}"
            ))),
            None => Err(Error::Unauthenticated(format!(
                "{what} is authorised by the operator's client certificate (client.pem of `sus \
                 certs init`, given to `sus cluster init` as --cert and --key); this connection \
                 presents none"
            ))),
        }
    }
}

impl sus_raft::network::Gate for NodeGate {
    fn peer(
        &self,
        peer_certs: Option<&[CertificateDer<'static>]>,
        _group: GroupId,
    ) -> std::result::Result<Option<NodeId>, Status> {
        // Any member may carry any group's traffic: replicas move between members, and a
        // joining replica is announced in the shard map before its group adds it.
        Ok(self.member(peer_certs, "the Raft service")?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType, string::Ia5String};

    /// A self-signed certificate with these URIs (and a DNS name) as its alternative names.
    fn cert_with(uris: &[&str]) -> Vec<u8> {
        let mut p = CertificateParams::new(vec!["n1.example".to_string()]).unwrap();
        for u in uris {
            p.subject_alt_names
                .push(SanType::URI(Ia5String::try_from(u.to_string()).unwrap()));
        }
        p.self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn a_node_certificate_names_its_node_and_an_operator_certificate_none() {
        assert_eq!(
            identity_of(&cert_with(&["sus://node/7"])),
            Ok(CertIdentity::Node(7))
        );
        // Other URIs do not matter.
        assert_eq!(
            identity_of(&cert_with(&["https://example.org/x", "sus://node/12"])),
            Ok(CertIdentity::Node(12))
        );
        assert_eq!(
            identity_of(&cert_with(&["sus://operator"])),
            Ok(CertIdentity::Operator)
        );
        assert_eq!(identity_of(&cert_with(&[])), Ok(CertIdentity::Operator));
    }

    #[test]
    fn malformed_or_ambiguous_node_names_make_a_certificate_unusable() {
        for uris in [
            &["sus://node/"][..],
            &["sus://node/0"],
            &["sus://node/007"],
            &["sus://node/1/2"],
            &["sus://node/x"],
            &["SUS://NODE/1x"],
            &["sus://node/1", "sus://node/2"],
            &["sus://node/1", "sus://node/1"],
            &["sus://operator", "sus://node/-3"],
        ] {
            let e = identity_of(&cert_with(uris)).unwrap_err();
            assert!(
                e.contains("node URI") || e.contains("two nodes"),
                "{uris:?}: {e}"
            );
        }
        assert!(identity_of(b"not a certificate").is_err());
    }

    /// A gate over a cluster whose meta state has nodes 1-3 and node 4 retired, whose Raft
    /// membership also has node 5 (being added), and which admitted this node with node 6.
    fn gate(tls: bool) -> NodeGate {
        let mut state = MetaState::default();
        for id in 1..=3 {
            state.nodes.insert(id, format!("n{id}:7400"));
        }
        state.retired.insert(4);
        let mut metrics = RaftMetrics::new_initial(1);
        let nodes: std::collections::BTreeMap<NodeId, BasicNode> = [1, 2, 3, 4, 5]
            .into_iter()
            .map(|id| (id, BasicNode::new(format!("n{id}:7400"))))
            .collect();
        let voters = BTreeSet::from([1, 2, 3]);
        metrics.membership_config = Arc::new(openraft::StoredMembership::new(
            None,
            openraft::Membership::new(vec![voters], nodes),
        ));
        let identity = Identity {
            id: 1,
            cluster_id: Some("sus-test".into()),
            admitted_with: BTreeSet::from([6]),
        };
        NodeGate::new(
            tls,
            watch::channel(state).1,
            watch::channel(metrics).1,
            Arc::new(Mutex::new(identity)),
        )
    }

    fn chain(uris: &[&str]) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(cert_with(uris))]
    }

    #[test]
    fn members_are_known_nodes_raft_members_and_the_admitting_list_never_a_removed_node() {
        let g = gate(true);
        assert_eq!(g.members(), BTreeSet::from([1, 2, 3, 5, 6]));
        let removed = g.check_member(4, "the Raft service").unwrap_err();
        assert!(matches!(removed, Error::PermissionDenied(_)));
        assert!(
            removed
                .to_string()
                .contains("node 4 was removed from this cluster")
        );
        let stranger = g.check_member(9, "Join").unwrap_err();
        assert!(
            stranger
                .to_string()
                .contains("node 9 is not a member of this cluster")
        );
        assert_eq!(
            g.member(Some(chain(&["sus://node/5"]).as_slice()), "x")
                .unwrap(),
            Some(5)
        );
        // An operator's certificate, or none, is never a node.
        let operator = g
            .member(Some(chain(&["sus://operator"]).as_slice()), "x")
            .unwrap_err();
        assert!(matches!(operator, Error::PermissionDenied(_)));
        let none = g.member(None, "x").unwrap_err();
        assert!(matches!(none, Error::Unauthenticated(_)));
        // Init takes the operator's certificate only.
        assert!(
            g.operator(Some(chain(&["sus://operator"]).as_slice()), "Init")
                .is_ok()
        );
        assert!(
            g.operator(Some(chain(&["sus://node/2"]).as_slice()), "Init")
                .is_err()
        );
        assert!(g.operator(None, "Init").is_err());
        // Without TLS nothing is proven and nothing is refused.
        let open = gate(false);
        assert_eq!(open.member(None, "x").unwrap(), None);
        assert!(open.check_node_token(None, 4).is_ok());
        assert!(open.operator(None, "Init").is_ok());
    }

    #[test]
    fn a_node_token_counts_only_over_that_nodes_own_certificate() {
        let g = gate(true);
        assert!(
            g.check_node_token(Some(chain(&["sus://node/2"]).as_slice()), 2)
                .is_ok()
        );
        let other = g
            .check_node_token(Some(chain(&["sus://node/3"]).as_slice()), 2)
            .unwrap_err();
        assert!(matches!(other, Error::PermissionDenied(_)));
        assert!(
            other.to_string().contains(
                "a token of node 2 is accepted only over a connection presenting node 2's \
                 certificate; this connection presents node 3's certificate"
            ),
            "{}",
            other.to_string()
        );
        let operator = g
            .check_node_token(Some(chain(&["sus://operator"]).as_slice()), 2)
            .unwrap_err();
        assert!(operator.to_string().contains("presents an operator"));
        assert!(matches!(
            g.check_node_token(None, 2).unwrap_err(),
            Error::Unauthenticated(_)
        ));
        // A removed node's token and certificate, both genuine, are refused.
        let removed = g
            .check_node_token(Some(chain(&["sus://node/4"]).as_slice()), 4)
            .unwrap_err();
        assert!(removed.to_string().contains("node 4 was removed"));
    }

    #[test]
    fn a_node_starts_only_with_a_certificate_naming_its_id() {
        let pem = |uris: &[&str]| {
            let mut p = CertificateParams::new(vec!["n1".to_string()]).unwrap();
            for u in uris {
                p.subject_alt_names
                    .push(SanType::URI(Ia5String::try_from(u.to_string()).unwrap()));
            }
            p.self_signed(&KeyPair::generate().unwrap()).unwrap().pem()
        };
        let path = std::path::Path::new("n.pem");
        assert!(check_own_certificate(pem(&["sus://node/3"]).as_bytes(), path, 3).is_ok());
        let other = check_own_certificate(pem(&["sus://node/4"]).as_bytes(), path, 3)
            .unwrap_err()
            .to_string();
        assert!(
            other.contains("names node 4, but this is node 3"),
            "{other}"
        );
        let operator = check_own_certificate(pem(&["sus://operator"]).as_bytes(), path, 3)
            .unwrap_err()
            .to_string();
        assert!(operator.contains("names no node"), "{operator}");
        assert!(check_own_certificate(b"garbage", path, 3).is_err());
    }
}
