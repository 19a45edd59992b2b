//! The peer engines (DuckDB, DataFusion, Polars, chdb), each a long-lived `peers.py worker`
//! process answering one JSON line per query (protocol in `benches/peers/peers.py`).

use crate::Row;
use anyhow::{Context, Result, anyhow, bail};
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// One worker process.
pub struct Peer {
    pub engine: String,
    pub version: String,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    /// Starts `peers.py worker` for `engine` over the Parquet files in `data`.
    pub async fn start(
        python: &Path,
        script: &Path,
        engine: &str,
        data: &Path,
        threads: usize,
    ) -> Result<Peer> {
        let mut child = Command::new(python)
            .arg(script)
            .args(["worker", "--engine", engine, "--data"])
            .arg(data)
            .args(["--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let mut peer = Peer {
            engine: engine.to_string(),
            version: String::new(),
            child,
            stdin,
            stdout: stdout.lines(),
        };
        let ready = peer.read().await?;
        if ready["ready"] != serde_json::Value::Bool(true) {
            bail!("{engine} worker did not start: {ready}");
        }
        peer.version = ready["version"].as_str().unwrap_or_default().to_string();
        Ok(peer)
    }

    async fn read(&mut self) -> Result<serde_json::Value> {
        let line = self
            .stdout
            .next_line()
            .await?
            .ok_or_else(|| anyhow!("{} worker exited", self.engine))?;
        serde_json::from_str(&line).with_context(|| format!("{} worker said {line}", self.engine))
    }

    /// Runs `query` with `params`: the engine's own wall time (ms) and its canonical rows.
    pub async fn run(
        &mut self,
        query: &str,
        params: &serde_json::Value,
    ) -> Result<(f64, Vec<Row>)> {
        let mut line = serde_json::to_string(&serde_json::json!({
            "query": query,
            "params": params,
        }))?;
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        let reply = self.read().await?;
        if let Some(e) = reply.get("error") {
            bail!("{} {query}: {e}", self.engine);
        }
        let ms = reply["ms"]
            .as_f64()
            .ok_or_else(|| anyhow!("{} {query}: no time in {reply}", self.engine))?;
        let rows = reply["rows"]
            .as_array()
            .ok_or_else(|| anyhow!("{} {query}: no rows", self.engine))?
            .iter()
            .map(|r| r.as_array().cloned().unwrap_or_default())
            .collect();
        Ok((ms, rows))
    }

    /// Ends the worker (EOF on its stdin) and waits for it.
    pub async fn stop(mut self) -> Result<()> {
        drop(self.stdin);
        let status = self.child.wait().await?;
        if !status.success() {
            bail!("{} worker exited with {status}", self.engine);
        }
        Ok(())
    }
}

/// The JSON `peers.py prepare` prints: per dataset rows, pyarrow's and DuckDB's Parquet write
/// seconds and bytes; the engines' versions.
pub async fn prepare(
    python: &Path,
    script: &Path,
    ipc: &Path,
    out: &Path,
) -> Result<serde_json::Value> {
    let output = Command::new(python)
        .arg(script)
        .arg("prepare")
        .arg("--ipc")
        .arg(ipc)
        .arg("--out")
        .arg(out)
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("running peers.py prepare")?;
    if !output.status.success() {
        bail!("peers.py prepare failed ({})", output.status);
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}
