//! Development certificates (`sus certs init`): a CA, one certificate per node (server and
//! client use, for mutual TLS between nodes) and a client certificate for `sus cluster init`.
//! For production, use your organisation's PKI; the node only needs PEM files.

use crate::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Where `init` wrote the files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub ca: PathBuf,
    /// Per node name: certificate and key.
    pub nodes: Vec<(String, PathBuf, PathBuf)>,
    /// The client certificate and key (for `sus cluster init`).
    pub client: (PathBuf, PathBuf),
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

/// Creates a CA and certificates for `nodes` in `dir`. Each entry is a name, optionally followed
/// by other names or IP addresses for the same certificate: `n1` or `n1,10.0.0.11,n1.sus.svc`
/// (the file is named after the first). Every certificate also names `localhost`, `127.0.0.1`
/// and `::1`.
pub fn init(dir: &Path, nodes: &[String]) -> Result<CertFiles> {
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
    let issue = |name: &str, sans: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
        let mut p = CertificateParams::new(sans).map_err(tls_error)?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = usages;
        let key = KeyPair::generate().map_err(tls_error)?;
        let cert = p.signed_by(&key, &issuer).map_err(tls_error)?;
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        write(&c, &cert.pem(), false)?;
        write(&k, &key.serialize_pem(), true)?;
        Ok::<_, Error>((c, k))
    };
    let mut out = Vec::new();
    for entry in nodes {
        let mut sans: Vec<String> = Vec::new();
        for s in entry
            .split(',')
            .map(str::trim)
            .chain(["localhost", "127.0.0.1", "::1"])
        {
            if !s.is_empty() && !sans.iter().any(|x| x == s) {
                sans.push(s.to_string());
            }
        }
        let name = &sans[0].clone();
        let (c, k) = issue(
            name,
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        out.push((name.clone(), c, k));
    }
    let client = issue(
        "client",
        vec!["sus-client".into()],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    Ok(CertFiles {
        ca,
        nodes: out,
        client,
    })
}
