//! Development certificates (`sus certs init`, `sus certs node`): a CA; one certificate per
//! node, naming the node's id as the URI `sus://node/<id>` and its host names and addresses
//! (server and client use, for mutual TLS between nodes); and an operator client certificate
//! (`sus://operator`, no node name) for `sus cluster init`. A node accepts only certificates
//! naming current members on its internal services, and starts only with a certificate naming
//! its own id. For production, use your organisation's PKI with the same names
//! (`docs/security.md`, "PKI: who is a node"); the node only needs PEM files.

use crate::{Error, Result};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use sus_proto::identity::{OPERATOR_URI, node_uri};

/// Where `init` wrote the files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub ca: PathBuf,
    /// Per node id: certificate and key.
    pub nodes: Vec<(u64, PathBuf, PathBuf)>,
    /// The operator's client certificate and key (for `sus cluster init`).
    pub client: (PathBuf, PathBuf),
}

/// A node certificate to issue: the node's id and the host names or IP addresses it is reached
/// at (`localhost`, `127.0.0.1` and `::1` are always added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCert {
    pub id: u64,
    pub names: Vec<String>,
}

impl std::str::FromStr for NodeCert {
    type Err = Error;

    /// `ID=NAME[,NAME...]`, e.g. `1=n1,10.0.0.11,n1.sus.svc`, or `ID` alone.
    fn from_str(spec: &str) -> Result<NodeCert> {
        let (id, names) = spec.split_once('=').unwrap_or((spec, ""));
        let id: u64 = id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(|| {
            Error::Config(format!(
                "node certificate '{spec}': give the node as ID=NAME[,NAME...] with its \
                     id (1 or more) first, e.g. 1=n1,10.0.0.11"
            ))
        })?;
        Ok(NodeCert {
            id,
            names: names
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }
}

/// The certificate and key files of node `id` in `dir`: `node-<id>.pem`, `node-<id>.key`.
pub fn node_files(dir: &Path, id: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("node-{id}.pem")),
        dir.join(format!("node-{id}.key")),
    )
}

fn tls_error(e: rcgen::Error) -> Error {
    Error::Config(format!("certificate generation: {e}"))
}

fn write(path: &Path, content: &str, private: bool) -> Result<()> {
    std::fs::write(path, content).map_err(|e| Error::io(path, e))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

fn uri(s: String) -> Result<SanType> {
    Ia5String::try_from(s)
        .map(SanType::URI)
        .map_err(|e| Error::Config(format!("certificate name: {e}")))
}

/// Signs a certificate for `sans` (host names and IP addresses) plus `uri`, writes it and its
/// key as `<dir>/<file>.pem` and `.key`.
fn issue(
    dir: &Path,
    file: &str,
    common_name: &str,
    sans: Vec<String>,
    uri_name: String,
    usages: Vec<ExtendedKeyUsagePurpose>,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(PathBuf, PathBuf)> {
    let mut p = CertificateParams::new(sans).map_err(tls_error)?;
    p.subject_alt_names.push(uri(uri_name)?);
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.extended_key_usages = usages;
    let key = KeyPair::generate().map_err(tls_error)?;
    let cert = p.signed_by(&key, issuer).map_err(tls_error)?;
    let (c, k) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}.key")),
    );
    write(&c, &cert.pem(), false)?;
    write(&k, &key.serialize_pem(), true)?;
    Ok((c, k))
}

fn issue_node_with(
    dir: &Path,
    node: &NodeCert,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(PathBuf, PathBuf)> {
    let mut sans: Vec<String> = Vec::new();
    for s in node
        .names
        .iter()
        .map(String::as_str)
        .chain(["localhost", "127.0.0.1", "::1"])
    {
        if !sans.iter().any(|x| x == s) {
            sans.push(s.to_string());
        }
    }
    let common_name = match node.names.first() {
        Some(name) => format!("sus node {} ({name})", node.id),
        None => format!("sus node {}", node.id),
    };
    issue(
        dir,
        &format!("node-{}", node.id),
        &common_name,
        sans,
        node_uri(node.id),
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        issuer,
    )
}

/// Creates a CA in `dir` (`ca.pem`, `ca.key`), a certificate for each of `nodes`
/// (`node-<id>.pem` and `.key`) and the operator's client certificate (`client.pem`,
/// `client.key`).
pub fn init(dir: &Path, nodes: &[NodeCert]) -> Result<CertFiles> {
    for (i, n) in nodes.iter().enumerate() {
        if nodes[..i].iter().any(|m| m.id == n.id) {
            return Err(Error::Config(format!(
                "node {} is given twice: one certificate per node id",
                n.id
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sus-cluster development CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(tls_error)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_error)?;
    let ca = dir.join("ca.pem");
    write(&ca, &ca_cert.pem(), false)?;
    write(&dir.join("ca.key"), &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut out = Vec::new();
    for node in nodes {
        let (c, k) = issue_node_with(dir, node, &issuer)?;
        out.push((node.id, c, k));
    }
    let client = issue(
        dir,
        "client",
        "sus operator",
        Vec::new(),
        OPERATOR_URI.to_string(),
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        &issuer,
    )?;
    Ok(CertFiles {
        ca,
        nodes: out,
        client,
    })
}

/// Issues one more node certificate from the CA in `dir` (`ca.pem` and `ca.key`, as `init` left
/// them): for a node added later, a wiped node rejoining under a new id, or a rotation
/// (`replace`: a node's existing files are overwritten; otherwise they are refused).
pub fn issue_node(dir: &Path, node: &NodeCert, replace: bool) -> Result<(PathBuf, PathBuf)> {
    if node.id == 0 {
        return Err(Error::Config("node ids start at 1".into()));
    }
    let (cert, _) = node_files(dir, node.id);
    if cert.exists() && !replace {
        return Err(Error::Config(format!(
            "{} exists: node {} has a certificate already (a new node needs a new id; to rotate \
             its certificate, pass --replace)",
            cert.display(),
            node.id
        )));
    }
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))
    };
    let key = KeyPair::from_pem(&read("ca.key")?).map_err(tls_error)?;
    let issuer = Issuer::from_ca_cert_pem(&read("ca.pem")?, key).map_err(tls_error)?;
    issue_node_with(dir, node, &issuer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn uris(pem_path: &Path) -> String {
        // The URI is stored as IA5 text inside the DER: enough to see which name it carries.
        use base64::Engine;
        let pem = std::fs::read_to_string(pem_path).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        String::from_utf8_lossy(&der).into_owned()
    }

    #[test]
    fn node_specs_need_an_id() {
        let n: NodeCert = "3=n3, 10.0.0.13".parse().unwrap();
        assert_eq!(n.id, 3);
        assert_eq!(n.names, ["n3", "10.0.0.13"]);
        assert_eq!("4".parse::<NodeCert>().unwrap().names, Vec::<String>::new());
        for bad in ["n1", "0=n1", "=n1", "x=n1", ""] {
            assert!(bad.parse::<NodeCert>().is_err(), "{bad}");
        }
    }

    #[test]
    fn nodes_and_the_operator_get_distinct_certificates_and_more_nodes_come_from_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let files = init(
            dir.path(),
            &["1=n1".parse().unwrap(), "2=n2,10.0.0.12".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(files.nodes.len(), 2);
        assert_eq!(files.nodes[1].1, dir.path().join("node-2.pem"));
        assert!(uris(&files.nodes[0].1).contains("sus://node/1"));
        assert!(uris(&files.nodes[1].1).contains("sus://node/2"));
        let client = uris(&files.client.0);
        assert!(client.contains(OPERATOR_URI));
        assert!(!client.contains("sus://node/"));
        // One more from the same CA; an existing one only with `replace`.
        let (c, _) = issue_node(dir.path(), &"7=n7".parse().unwrap(), false).unwrap();
        assert!(uris(&c).contains("sus://node/7"));
        assert!(issue_node(dir.path(), &"7=n7".parse().unwrap(), false).is_err());
        assert!(issue_node(dir.path(), &"7=n7".parse().unwrap(), true).is_ok());
        assert!(init(dir.path(), &["1".parse().unwrap(), "1".parse().unwrap()]).is_err());
    }
}
