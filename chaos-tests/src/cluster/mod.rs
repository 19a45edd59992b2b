//! A cluster of real `sus-node` processes, for integration and fault tests.
//!
//! Nodes run as local processes on loopback ports (started on port 0: the node prints the port it
//! bound, and is restarted on the same port), or as containers of the project's own image on a
//! private Docker network with one address per node ([`Launcher::Docker`]). Each node has its own
//! data directory under one temp dir (bind-mounted into its container). Faults are real: SIGKILL,
//! SIGSTOP/SIGCONT (a frozen container), a node cut off its network, a wiped directory, and a
//! full disk (a size-limited tmpfs at the node's directory). Waits are on conditions with a
//! timeout, never fixed sleeps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use sus_client::cluster::{ClusterStatus, ReplicaContent};
use sus_client::{Client, RetryPolicy};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod docker;
use docker::{DOCKER_SLOTS, DockerNet, create_network};
pub use docker::{docker, docker_available};

/// Settings passed to every node of a test cluster.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub snapshot_after: u64,
    pub keep_after_snapshot: u64,
    pub commit_timeout_ms: u64,
    /// Give each node's directory a tmpfs of this many bytes (needs root), so that a disk can be
    /// filled ([`TestCluster::fill_disk`]).
    pub disk_bytes: Option<u64>,
    /// Extra environment of every node (`SUS_TEST_BROKEN` for deliberately broken builds).
    pub env: Vec<(String, String)>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            heartbeat_ms: 50,
            election_ms: 300,
            snapshot_after: 1000,
            keep_after_snapshot: 200,
            commit_timeout_ms: 10_000,
            disk_bytes: None,
            env: Vec::new(),
        }
    }
}

/// One node process (or the memory of one, while it is down).
pub struct NodeProc {
    pub id: u64,
    pub addr: String,
    /// The node's HTTP port (metrics, probes, status page), for local processes.
    pub http: Option<String>,
    pub dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// The node's container (Docker launcher), and whether it is running.
    container: Option<(String, bool)>,
}

/// How the nodes of a [`TestCluster`] run.
#[derive(Debug, Clone)]
pub enum Launcher {
    /// Local processes on loopback ports.
    Process,
    /// Containers of `image` on a private network of their own.
    Docker { image: String },
}

/// A cluster of node processes.
pub struct TestCluster {
    bin: PathBuf,
    docker: Option<DockerNet>,
    /// tmpfs mounts to undo on drop.
    mounts: Vec<PathBuf>,
    refdata: PathBuf,
    root: tempfile::TempDir,
    pub options: NodeOptions,
    pub nodes: BTreeMap<u64, NodeProc>,
    /// The development CA, the operator's client certificate (`client`, which bootstraps), and
    /// the node certificates minted so far: each node presents its own, naming its id
    /// (`tls/node-<id>.pem`, minted when the id is first spawned).
    pub certs: sus_client::certs::CertFiles,
    /// The `admin` user's token (clients carry it unless given another).
    pub token: Option<String>,
}

/// The password the test clusters give their `admin` user.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

type Result<T> = std::result::Result<T, String>;

impl TestCluster {
    /// Starts `n` nodes (ids 1..=n) and bootstraps them with `shards` shards of `replication`.
    pub async fn start(
        bin: &Path,
        refdata: &Path,
        n: u64,
        shards: u32,
        replication: u32,
        options: NodeOptions,
    ) -> Result<TestCluster> {
        Self::start_with(
            Launcher::Process,
            bin,
            refdata,
            n,
            shards,
            replication,
            options,
        )
        .await
    }

    /// [`TestCluster::start`] with nodes run by `launcher`.
    pub async fn start_with(
        launcher: Launcher,
        bin: &Path,
        refdata: &Path,
        n: u64,
        shards: u32,
        replication: u32,
        options: NodeOptions,
    ) -> Result<TestCluster> {
        let docker = match launcher {
            Launcher::Process => None,
            Launcher::Docker { image } => Some(create_network(image)?),
        };
        let mut root = tempfile::tempdir().map_err(|e| e.to_string())?;
        if std::env::var_os("SUS_TEST_KEEP").is_some() {
            // Keep logs and data for inspection (the path is printed).
            root.disable_cleanup(true);
            eprintln!("test cluster directory: {}", root.path().display());
        }
        // The CA and the operator's certificate; each node's is minted when it is first spawned.
        let certs = sus_client::certs::init(&root.path().join("tls"), &[])
            .map_err(|e| format!("certificates: {e}"))?;
        let mut cluster = TestCluster {
            bin: bin.to_path_buf(),
            docker,
            mounts: Vec::new(),
            refdata: refdata.to_path_buf(),
            root,
            options,
            nodes: BTreeMap::new(),
            certs,
            token: None,
        };
        for id in 1..=n {
            cluster.spawn(id, "127.0.0.1:0").await?;
        }
        let members: Vec<(u64, String)> = cluster
            .nodes
            .values()
            .map(|p| (p.id, p.addr.clone()))
            .collect();
        // Init runs before any user exists: it is authorised by a client certificate.
        let mut tls = cluster.tls();
        tls.identity = Some((
            std::fs::read(&cluster.certs.client.0).map_err(|e| e.to_string())?,
            std::fs::read(&cluster.certs.client.1).map_err(|e| e.to_string())?,
        ));
        let init = Client::with_config(sus_client::ClientConfig {
            endpoints: vec![cluster.nodes[&1].addr.clone()],
            token: None,
            tls: Some(tls),
            retry: RetryPolicy::default(),
        })
        .map_err(|e| e.to_string())?;
        init.init(&members, shards, replication, ADMIN_PASSWORD)
            .await
            .map_err(|e| format!("init: {e}"))?;
        let reply = cluster
            .client(&[1])
            .login("admin", ADMIN_PASSWORD, "test cluster administration", 0)
            .await
            .map_err(|e| format!("admin login: {e}"))?;
        cluster.token = Some(reply.token);
        cluster
            .wait_for(
                "every shard to elect a leader",
                Duration::from_secs(60),
                async |c| c.all_shards_led().await,
            )
            .await?;
        Ok(cluster)
    }

    /// The directory tests may use for their own files.
    pub fn scratch(&self) -> PathBuf {
        self.root.path().join("scratch")
    }

    /// The certificate and key node `id` presents (`tls/node-<id>.pem`, `.key`), minted from the
    /// cluster's CA on first use: naming the node's id and, with the Docker launcher, its
    /// address on the network.
    pub fn node_cert(&mut self, id: u64) -> Result<(PathBuf, PathBuf)> {
        let dir = self.root.path().join("tls");
        let files = sus_client::certs::node_files(&dir, id);
        if !files.0.exists() {
            let names = match &self.docker {
                Some(net) if id <= DOCKER_SLOTS => vec![net.ip(id)],
                _ => Vec::new(),
            };
            let (c, k) = sus_client::certs::issue_node(
                &dir,
                &sus_client::certs::NodeCert { id, names },
                false,
            )
            .map_err(|e| format!("certificate of node {id}: {e}"))?;
            self.certs.nodes.push((id, c, k));
        }
        Ok(files)
    }

    /// Starts node `id` (a new one, or a stopped one on its old port and directory).
    pub async fn spawn(&mut self, id: u64, listen: &str) -> Result<String> {
        let refdata = self.refdata.clone();
        self.spawn_with(id, listen, &refdata).await
    }

    /// [`TestCluster::spawn`] with another reference data folder.
    pub async fn spawn_with(&mut self, id: u64, listen: &str, refdata: &Path) -> Result<String> {
        let dir = self.root.path().join(format!("n{id}"));
        let log = self.root.path().join(format!("n{id}.log"));
        if let Some(bytes) = self.options.disk_bytes
            && !dir.exists()
        {
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let size = format!("size={bytes}");
            let status = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
                .arg(&dir)
                .status()
                .map_err(|e| format!("mount: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "mounting a {bytes}-byte tmpfs at {} failed (disk faults need root)",
                    dir.display()
                ));
            }
            self.mounts.push(dir.clone());
        }
        let (cert, key) = self.node_cert(id)?;
        if let Some(net) = self.docker.clone() {
            return self.spawn_container(&net, id, dir, log).await;
        }
        let o = &self.options;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.bin)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--refdata")
            .arg(refdata)
            .args(["serve", "--id", &id.to_string(), "--listen", listen])
            .arg("--tls-ca")
            .arg(&self.certs.ca)
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args(["--heartbeat-ms", &o.heartbeat_ms.to_string()])
            .args(["--election-ms", &o.election_ms.to_string()])
            .args(["--snapshot-after", &o.snapshot_after.to_string()])
            .args(["--keep-after-snapshot", &o.keep_after_snapshot.to_string()])
            .args(["--commit-timeout-ms", &o.commit_timeout_ms.to_string()])
            .args(["--http-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info,openraft=warn")
            .envs(o.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", self.bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .map_err(|_| format!("node {id} did not start within 60s (see {})", log.display()))?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("node {id} exited at start (see {})", log.display()))?;
        let addr = line
            .rsplit(' ')
            .next()
            .filter(|_| line.contains("listening on"))
            .ok_or_else(|| format!("unexpected first line from node {id}: {line}"))?
            .to_string();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .map_err(|_| format!("node {id} printed no HTTP address (see {})", log.display()))?
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let http = line
            .rsplit(' ')
            .next()
            .filter(|_| line.contains("http on"))
            .map(str::to_string);
        // Keep draining stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.nodes.insert(
            id,
            NodeProc {
                id,
                addr: addr.clone(),
                http,
                dir,
                log,
                child: Some(child),
                container: None,
            },
        );
        Ok(addr)
    }

    /// SIGKILLs node `id` and waits for it to exit.
    pub async fn kill(&mut self, id: u64) {
        let Some(p) = self.nodes.get_mut(&id) else {
            return;
        };
        if let Some(mut child) = p.child.take() {
            let _ = child.kill().await;
        }
        if let Some((name, running)) = p.container.as_mut()
            && *running
        {
            // `docker kill` returns once the container has stopped.
            let _ = docker(&["kill", "--signal", "KILL", name]);
            *running = false;
        }
    }

    /// SIGKILLs every node in `ids` at one instant (all signals sent before any exit is awaited),
    /// as a power cut of the whole cluster would, then waits for them all to exit.
    pub async fn kill_all(&mut self, ids: &[u64]) {
        let mut containers = Vec::new();
        for id in ids {
            let Some(p) = self.nodes.get_mut(id) else {
                continue;
            };
            if let Some(child) = p.child.as_mut() {
                let _ = child.start_kill();
            }
            if let Some((name, running)) = p.container.as_mut()
                && *running
            {
                containers.push(name.clone());
                *running = false;
            }
        }
        if !containers.is_empty() {
            let mut args = vec!["kill", "--signal", "KILL"];
            args.extend(containers.iter().map(String::as_str));
            let _ = docker(&args);
        }
        for id in ids {
            if let Some(mut child) = self.nodes.get_mut(id).and_then(|p| p.child.take()) {
                let _ = child.wait().await;
            }
        }
    }

    /// Stops node `id` with SIGTERM (a clean shutdown) and waits for it to exit.
    pub async fn stop(&mut self, id: u64) {
        let Some(p) = self.nodes.get_mut(&id) else {
            return;
        };
        if let Some(mut child) = p.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        if let Some((name, running)) = p.container.as_mut()
            && *running
        {
            let _ = docker(&["stop", "--time", "30", name]);
            *running = false;
        }
    }

    /// Restarts a killed node on its old address and directory.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        let addr = self.nodes.get(&id).ok_or("no such node")?.addr.clone();
        self.spawn(id, &addr).await.map(|_| ())
    }

    /// Restarts a killed node on its old address and directory with another reference folder.
    pub async fn restart_with(&mut self, id: u64, refdata: &Path) -> Result<()> {
        let addr = self.nodes.get(&id).ok_or("no such node")?.addr.clone();
        self.spawn_with(id, &addr, refdata).await.map(|_| ())
    }

    /// Kills node `id` and deletes its data (a lost disk).
    pub async fn wipe(&mut self, id: u64) -> Result<()> {
        self.kill(id).await;
        let dir = self.nodes.get(&id).ok_or("no such node")?.dir.clone();
        // The directory itself may be a mount point: empty it.
        for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            }
            .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Writes a container's log (stdout and stderr) to its node's log file.
    fn save_container_log(&self, id: u64) {
        if let Some(p) = self.nodes.get(&id)
            && p.container.is_some()
        {
            let _ = std::fs::write(&p.log, self.log_of(id));
        }
    }

    /// Forgets a node the cluster no longer has (it must be down).
    pub fn forget(&mut self, id: u64) {
        self.save_container_log(id);
        if let Some(p) = self.nodes.remove(&id)
            && let Some((name, _)) = p.container
        {
            let _ = docker(&["rm", "-f", &name]);
        }
    }

    /// Fills node `id`'s disk (its tmpfs: [`NodeOptions::disk_bytes`]) with a ballast file until
    /// no byte is left; returns the bytes written.
    pub fn fill_disk(&self, id: u64) -> Result<u64> {
        use std::io::Write;
        let dir = &self.nodes.get(&id).ok_or("no such node")?.dir;
        if !self.mounts.contains(dir) {
            return Err("disk faults need NodeOptions::disk_bytes".into());
        }
        let mut f = std::fs::File::create(dir.join("ballast")).map_err(|e| e.to_string())?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(written)
    }

    /// Frees what [`TestCluster::fill_disk`] took.
    pub fn free_disk(&self, id: u64) -> Result<()> {
        let dir = &self.nodes.get(&id).ok_or("no such node")?.dir;
        match std::fs::remove_file(dir.join("ballast")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
            _ => Ok(()),
        }
    }

    /// Cuts node `id` off the cluster's network (both directions; Docker launcher only).
    pub fn isolate(&mut self, id: u64) -> Result<()> {
        let net = self
            .docker
            .as_ref()
            .ok_or("partitions need the Docker launcher")?;
        docker(&["network", "disconnect", &net.name, &net.container(id)]).map(|_| ())
    }

    /// Reconnects an isolated node at its old address.
    pub fn reconnect(&mut self, id: u64) -> Result<()> {
        let net = self
            .docker
            .as_ref()
            .ok_or("partitions need the Docker launcher")?;
        let addr = &self.nodes.get(&id).ok_or("no such node")?.addr;
        let ip = addr.trim_end_matches(":7400").to_string();
        docker(&[
            "network",
            "connect",
            "--ip",
            &ip,
            &net.name,
            &net.container(id),
        ])
        .map(|_| ())
    }

    /// Whether the cluster's nodes are containers (and so can be partitioned).
    pub fn is_docker(&self) -> bool {
        self.docker.is_some()
    }

    /// Whether node directories are size-limited (and so disks can be filled).
    pub fn has_disks(&self) -> bool {
        !self.mounts.is_empty()
    }

    /// Pauses (SIGSTOP) or resumes (SIGCONT) node `id` (a container is frozen and thawed).
    pub fn signal(&self, id: u64, signal: &str) -> Result<()> {
        if let Some((name, _)) = self.nodes.get(&id).and_then(|p| p.container.as_ref()) {
            let verb = if signal == "STOP" { "pause" } else { "unpause" };
            return docker(&[verb, name]).map(|_| ());
        }
        let pid = self
            .nodes
            .get(&id)
            .and_then(|p| p.child.as_ref())
            .and_then(|c| c.id())
            .ok_or("node not running")?;
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .map_err(|e| e.to_string())?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| format!("kill -{signal} {pid} failed"))
    }

    /// The process id of node `id` (a local process that is running), e.g. to read its memory
    /// from `/proc/<pid>/status`.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes.get(&id)?.child.as_ref()?.id()
    }

    /// Whether node `id` is running.
    pub fn is_up(&self, id: u64) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|p| p.child.is_some() || p.container.as_ref().is_some_and(|c| c.1))
    }

    /// A client of the given nodes, with the default retry policy.
    pub fn client(&self, ids: &[u64]) -> Client {
        self.client_with(ids, RetryPolicy::default())
    }

    /// A client of the given nodes (TLS, with the admin token).
    pub fn client_with(&self, ids: &[u64], retry: RetryPolicy) -> Client {
        self.client_as(ids, retry, self.token.clone())
    }

    /// A client of the given nodes carrying `token`.
    pub fn client_as(&self, ids: &[u64], retry: RetryPolicy, token: Option<String>) -> Client {
        let endpoints: Vec<String> = ids
            .iter()
            .filter_map(|id| self.nodes.get(id).map(|p| p.addr.clone()))
            .collect();
        Client::with_config(sus_client::ClientConfig {
            endpoints,
            token,
            tls: Some(self.tls()),
            retry,
        })
        .expect("valid endpoints")
    }

    /// TLS options trusting the cluster's CA (no client certificate).
    pub fn tls(&self) -> sus_client::TlsOptions {
        sus_client::TlsOptions::from_files(&self.certs.ca, None).expect("the test CA is readable")
    }

    /// A client of every running node.
    pub fn client_up(&self) -> Client {
        let up: Vec<u64> = self
            .nodes
            .keys()
            .copied()
            .filter(|id| self.is_up(*id))
            .collect();
        self.client(&up)
    }

    /// The status as node `id` sees it.
    pub async fn status_of(&self, id: u64) -> Result<ClusterStatus> {
        self.client(&[id])
            .status_of(0)
            .await
            .map_err(|e| e.to_string())
    }

    /// The leader of group `group` as the running nodes see it (the first answer with one).
    pub async fn leader_of(&self, group: u64) -> Option<u64> {
        for id in self.nodes.keys().copied().filter(|id| self.is_up(*id)) {
            if let Ok(status) = self.status_of(id).await
                && let Some(g) = status
                    .groups
                    .iter()
                    .find(|g| g.group == group && g.leader != 0)
            {
                return Some(g.leader);
            }
        }
        None
    }

    /// Whether some live node sees a leader for every shard.
    pub async fn all_shards_led(&self) -> bool {
        let Some(first) = self.nodes.keys().copied().find(|id| self.is_up(*id)) else {
            return false;
        };
        let Ok(status) = self.status_of(first).await else {
            return false;
        };
        for shard in &status.shards {
            if self.leader_of(u64::from(shard.shard) + 1).await.is_none() {
                return false;
            }
        }
        !status.shards.is_empty()
    }

    /// Polls `condition` every 100 ms until it holds, or fails after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl AsyncFn(&TestCluster) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(self).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("timed out after {timeout:?} waiting for {what}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every replica of every shard has applied the same entries and holds the same
    /// content, then returns the contents (one entry per replica).
    pub async fn wait_replicas_agree(&self, timeout: Duration) -> Result<Vec<ReplicaContent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let contents = self
                .client_up()
                .replica_contents()
                .await
                .map_err(|e| e.to_string())?;
            let agree = replicas_agree(&contents);
            if agree {
                return Ok(contents);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "replicas did not converge within {timeout:?}: {:#?}",
                    contents
                        .iter()
                        .map(|r| (
                            r.shard,
                            r.node,
                            r.content
                                .as_ref()
                                .map(|c| (c.last_applied, c.checksum.clone()))
                                .map_err(|e| e.to_string())
                        ))
                        .collect::<Vec<_>>()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The log (stderr) of node `id`, for assertions on what it did and for failure messages.
    pub fn log_of(&self, id: u64) -> String {
        let Some(p) = self.nodes.get(&id) else {
            return String::new();
        };
        if let Some((name, _)) = &p.container {
            let out = std::process::Command::new("docker")
                .args(["logs", name])
                .output();
            return out
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr)
                })
                .unwrap_or_default();
        }
        std::fs::read_to_string(&p.log).unwrap_or_default()
    }

    /// Keeps the cluster's directory (logs, data) for inspection after a failure.
    pub fn keep(mut self) -> PathBuf {
        // A tmpfs directory is emptied by its unmount: copy its content out first.
        for dir in &self.mounts {
            let mut saved = dir.as_os_str().to_owned();
            saved.push(".data");
            let _ = std::process::Command::new("cp")
                .arg("-a")
                .arg(dir)
                .arg(&saved)
                .status();
        }
        self.cleanup();
        self.root.disable_cleanup(true);
        self.root.path().to_path_buf()
    }

    /// Saves container logs, removes containers and the network, and unmounts tmpfs
    /// directories.
    fn cleanup(&mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.save_container_log(id);
        }
        for p in self.nodes.values_mut() {
            if let Some((name, _)) = p.container.take() {
                let _ = docker(&["rm", "-f", &name]);
            }
            if let Some(mut child) = p.child.take() {
                let _ = child.start_kill();
            }
        }
        if let Some(net) = self.docker.take() {
            let _ = docker(&["network", "rm", &net.name]);
        }
        for dir in self.mounts.drain(..) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&dir)
                .status();
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Whether every replica answered and the replicas of each shard have applied the same entries
/// and hold the same content.
pub fn replicas_agree(contents: &[ReplicaContent]) -> bool {
    let mut by_shard: BTreeMap<u32, Vec<(u64, &str)>> = BTreeMap::new();
    for r in contents {
        match &r.content {
            Ok(c) => by_shard
                .entry(r.shard)
                .or_default()
                .push((c.last_applied, c.checksum.as_str())),
            Err(_) => return false,
        }
    }
    by_shard.values().all(|v| v.iter().all(|x| x == &v[0]))
}

/// Live records and price total of a set of replica contents, one replica per shard.
pub fn totals(contents: &[ReplicaContent]) -> (u64, i64) {
    let mut seen = std::collections::BTreeSet::new();
    let (mut live, mut price) = (0u64, 0i64);
    for r in contents {
        if let Ok(c) = &r.content
            && seen.insert(r.shard)
        {
            live += c.live_records;
            price += c.price_pence;
        }
    }
    (live, price)
}
