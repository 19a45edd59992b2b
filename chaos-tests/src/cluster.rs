//! A cluster of real `sus-node` processes on loopback ports, for integration and fault tests.
//!
//! Each node is a separate OS process with its own data directory under one temp dir, started on
//! port 0 (the node prints the port it bound) and restarted on the same port. Faults are real:
//! SIGKILL, SIGSTOP/SIGCONT, and wiping a node's directory. Waits are on conditions with a
//! timeout, never fixed sleeps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use sus_client::cluster::{ClusterStatus, ReplicaContent};
use sus_client::{Client, RetryPolicy};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Settings passed to every node of a test cluster.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub snapshot_after: u64,
    pub keep_after_snapshot: u64,
    pub commit_timeout_ms: u64,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            heartbeat_ms: 50,
            election_ms: 300,
            snapshot_after: 1000,
            keep_after_snapshot: 200,
            commit_timeout_ms: 10_000,
        }
    }
}

/// One node process (or the memory of one, while it is down).
pub struct NodeProc {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

/// A cluster of node processes.
pub struct TestCluster {
    bin: PathBuf,
    refdata: PathBuf,
    root: tempfile::TempDir,
    pub options: NodeOptions,
    pub nodes: BTreeMap<u64, NodeProc>,
    /// The development CA and the certificate every node presents (TLS, mutual between nodes).
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
        let mut root = tempfile::tempdir().map_err(|e| e.to_string())?;
        if std::env::var_os("SUS_TEST_KEEP").is_some() {
            // Keep logs and data for inspection (the path is printed).
            root.disable_cleanup(true);
            eprintln!("test cluster directory: {}", root.path().display());
        }
        let certs = sus_client::certs::init(&root.path().join("tls"), &["node".to_string()])
            .map_err(|e| format!("certificates: {e}"))?;
        let mut cluster = TestCluster {
            bin: bin.to_path_buf(),
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

    /// Starts node `id` (a new one, or a stopped one on its old port and directory).
    pub async fn spawn(&mut self, id: u64, listen: &str) -> Result<String> {
        let refdata = self.refdata.clone();
        self.spawn_with(id, listen, &refdata).await
    }

    /// [`TestCluster::spawn`] with another reference data folder.
    pub async fn spawn_with(&mut self, id: u64, listen: &str, refdata: &Path) -> Result<String> {
        let dir = self.root.path().join(format!("n{id}"));
        let log = self.root.path().join(format!("n{id}.log"));
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
            .arg(&self.certs.nodes[0].1)
            .arg("--tls-key")
            .arg(&self.certs.nodes[0].2)
            .args(["--heartbeat-ms", &o.heartbeat_ms.to_string()])
            .args(["--election-ms", &o.election_ms.to_string()])
            .args(["--snapshot-after", &o.snapshot_after.to_string()])
            .args(["--keep-after-snapshot", &o.keep_after_snapshot.to_string()])
            .args(["--commit-timeout-ms", &o.commit_timeout_ms.to_string()])
            .env("RUST_LOG", "info,openraft=warn")
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
        // Keep draining stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.nodes.insert(
            id,
            NodeProc {
                id,
                addr: addr.clone(),
                dir,
                log,
                child: Some(child),
            },
        );
        Ok(addr)
    }

    /// SIGKILLs node `id` and waits for it to exit.
    pub async fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|p| p.child.take()) {
            let _ = child.kill().await;
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

    /// Kills node `id` and deletes its data directory (a lost disk).
    pub async fn wipe(&mut self, id: u64) -> Result<()> {
        self.kill(id).await;
        let dir = self.nodes.get(&id).ok_or("no such node")?.dir.clone();
        std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())
    }

    /// Forgets a node the cluster no longer has (it must be down).
    pub fn forget(&mut self, id: u64) {
        self.nodes.remove(&id);
    }

    /// Pauses (SIGSTOP) or resumes (SIGCONT) node `id`.
    pub fn signal(&self, id: u64, signal: &str) -> Result<()> {
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

    /// Whether node `id` is running.
    pub fn is_up(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|p| p.child.is_some())
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
            let mut by_shard: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
            let mut readable = true;
            for r in &contents {
                match &r.content {
                    Ok(c) => by_shard
                        .entry(r.shard)
                        .or_default()
                        .push((c.last_applied, c.checksum.clone())),
                    Err(_) => readable = false,
                }
            }
            let agree = readable && by_shard.values().all(|v| v.iter().all(|x| x == &v[0]));
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
        self.nodes
            .get(&id)
            .and_then(|p| std::fs::read_to_string(&p.log).ok())
            .unwrap_or_default()
    }

    /// Keeps the cluster's directory (logs, data) for inspection after a failure.
    pub fn keep(self) -> PathBuf {
        self.root.keep()
    }
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
