//! Nodes as containers of the project's image on a private Docker network of their own.

use super::{NodeProc, Result, TestCluster};
use std::path::PathBuf;
use std::time::Duration;

/// The private network of a Docker-launched cluster.
#[derive(Debug, Clone)]
pub(super) struct DockerNet {
    pub(super) image: String,
    /// Network and container name prefix.
    pub(super) name: String,
    /// The first three octets of the subnet, with the trailing dot (`10.231.7.`).
    pub(super) prefix: String,
}

/// Addresses of a Docker network's nodes: node `id` is `.(10 + id)`, never reused (a container
/// that takes a removed one's address was seen unreachable from its peers), so a run can add
/// up to this many nodes; each node's certificate names its own.
pub(super) const DOCKER_SLOTS: u64 = 240;

impl DockerNet {
    pub(super) fn ip(&self, slot: u64) -> String {
        format!("{}{}", self.prefix, 10 + slot)
    }
    pub(super) fn container(&self, id: u64) -> String {
        format!("{}-n{id}", self.name)
    }
}

/// Runs `docker ARGS`, returning its stdout, or its stderr as the error.
pub fn docker(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether a Docker engine answers here.
pub fn docker_available() -> bool {
    docker(&["info", "--format", "{{.ServerVersion}}"]).is_ok()
}

/// Creates a private network with a free /24 subnet for a Docker-launched cluster.
pub(super) fn create_network(image: String) -> Result<DockerNet> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = std::process::id();
    let mut last = String::new();
    for _ in 0..20 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let octet = (base + n * 7) % 200 + 20;
        let name = format!("sus-test-{base}-{n}");
        let prefix = format!("10.231.{octet}.");
        match docker(&[
            "network",
            "create",
            "--subnet",
            &format!("{prefix}0/24"),
            &name,
        ]) {
            Ok(_) => {
                return Ok(DockerNet {
                    image,
                    name,
                    prefix,
                });
            }
            Err(e) => last = e,
        }
    }
    Err(format!("no free subnet for a test network: {last}"))
}

impl TestCluster {
    /// Starts node `id` as a container (creating it the first time) and waits until it accepts
    /// connections.
    pub(super) async fn spawn_container(
        &mut self,
        net: &DockerNet,
        id: u64,
        dir: PathBuf,
        log: PathBuf,
    ) -> Result<String> {
        let name = net.container(id);
        let exists = self.nodes.get(&id).is_some_and(|p| p.container.is_some());
        let ip = match self.nodes.get(&id) {
            Some(p) if exists => p.addr.trim_end_matches(":7400").to_string(),
            _ if id <= DOCKER_SLOTS => net.ip(id),
            _ => {
                return Err(format!(
                    "node ids above {DOCKER_SLOTS} have no address here"
                ));
            }
        };
        let addr = format!("{ip}:7400");
        if exists {
            docker(&["start", &name])?;
        } else {
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let o = &self.options;
            let data = format!("{}:/data", dir.display());
            let tls = format!("{}:/tls:ro", self.root.path().join("tls").display());
            let id_s = id.to_string();
            let (cert, key) = (format!("/tls/node-{id}.pem"), format!("/tls/node-{id}.key"));
            let (hb, el, sa, ks, ct) = (
                o.heartbeat_ms.to_string(),
                o.election_ms.to_string(),
                o.snapshot_after.to_string(),
                o.keep_after_snapshot.to_string(),
                o.commit_timeout_ms.to_string(),
            );
            let mut args: Vec<String> = [
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                &net.name,
                "--ip",
                &ip,
                "-v",
                &data,
                "-v",
                &tls,
                "-e",
                "RUST_LOG=info,openraft=warn",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            for (k, v) in &o.env {
                args.extend(["-e".to_string(), format!("{k}={v}")]);
            }
            args.push(net.image.clone());
            for a in [
                "serve",
                "--id",
                &id_s,
                "--listen",
                "0.0.0.0:7400",
                "--advertise",
                &addr,
                "--tls-ca",
                "/tls/ca.pem",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--heartbeat-ms",
                &hb,
                "--election-ms",
                &el,
                "--snapshot-after",
                &sa,
                "--keep-after-snapshot",
                &ks,
                "--commit-timeout-ms",
                &ct,
            ] {
                args.push(a.to_string());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            docker(&args)?;
            self.nodes.insert(
                id,
                NodeProc {
                    id,
                    addr: addr.clone(),
                    http: None,
                    dir,
                    log,
                    child: None,
                    container: Some((name.clone(), false)),
                },
            );
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "container {name} did not accept connections on {addr} within 60s: {}",
                    docker(&["logs", "--tail", "20", &name]).unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(p) = self.nodes.get_mut(&id)
            && let Some(c) = p.container.as_mut()
        {
            c.1 = true;
        }
        Ok(addr)
    }
}
