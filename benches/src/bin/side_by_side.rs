//! The side-by-side benchmark (issue #7): sus-cluster against DuckDB, DataFusion, Polars and chdb
//! on the same rows, in one run, with ratios. `benches/run` builds, installs the pinned peers and
//! runs this; `--help` lists the settings.
//!
//! 1. Generate realistic submissions with the project's generator (reused for the same rows and
//!    seed) and ingest them into a 1-node cluster and a 3-node cluster (3 replicas of every
//!    shard): rows/s, each checked against the generator's oracle, then compacted.
//! 2. Export every live row (all stored columns) from the 1-node cluster; `peers.py prepare`
//!    writes them to Parquet (zstd) with pyarrow (timed: the ingest reference) and DuckDB (for
//!    file sizes); the peers read pyarrow's files.
//! 3. Q1-Q6 on every engine, interleaved (A B C ... A B C ...), 2 threads each, a warm-up run
//!    first (whose answers must agree row for row with ours), then `--reps` timed runs: medians
//!    with min-max. Our nodes run with no column cache here: every query decodes Parquet.
//! 4. The 1-node cluster again with a column cache: the same queries from memory.
//! 5. Single-client commit latency on both clusters, with the floor measured alongside: an
//!    fdatasync of 4 KiB on the nodes' disk and a gRPC round trip to a node.
//! 6. `benches/results/<name>.md` and `.csv`, with the targets of issue #7 and where each stands.

use anyhow::{Result, bail};
use clap::Parser;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use sus_benches::peers::{self, Peer};
use sus_benches::queries::{self, Params, QUERIES};
use sus_benches::{Data, Row, Timings, first_difference, ingest, percentile};
use sus_chaos_tests::cluster::{NodeOptions, TestCluster};
use sus_client::generator::{Dataset, GenConfig, generate};
use sus_client::{Client, ReadFrom, RetryPolicy, ScanSpec};

#[derive(Debug, Parser)]
#[command(about = "sus-cluster side by side with DuckDB, DataFusion, Polars and chdb")]
struct Args {
    /// Original activity records to generate (replacements and deletions add about 10 %).
    #[arg(long, default_value_t = 50_000_000)]
    rows: u64,
    #[arg(long, default_value_t = 20_261_203)]
    seed: u64,
    /// The sus-node binary (a release build).
    #[arg(long, default_value = "target/release/sus-node")]
    node_bin: PathBuf,
    #[arg(long, default_value = "refdata")]
    refdata: PathBuf,
    /// Generated data (kept and reused), exports and the peers' Parquet files.
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
    /// The Python of the peers' virtual environment (`benches/peers/setup.sh` makes it).
    #[arg(long, default_value = "target/peers-venv/bin/python")]
    python: PathBuf,
    #[arg(long, default_value = "benches/peers/peers.py")]
    peers: PathBuf,
    /// Timed repetitions of each query on each engine.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Threads of every peer engine (our nodes use one per core: 2 on the reference machine).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 8)]
    shards: u32,
    /// Concurrent submission lanes while ingesting (one sender's files stay in order).
    #[arg(long, default_value_t = 4)]
    lanes: usize,
    /// Peer engines to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "duckdb,datafusion,polars,chdb"
    )]
    engines: Vec<String>,
    /// Submissions timed one at a time for the commit latency.
    #[arg(long, default_value_t = 200)]
    latency_submissions: usize,
    /// Column cache of the in-memory runs (MiB).
    #[arg(long, default_value_t = 8192)]
    memory_cache_mib: u64,
    /// Results go to `<out>/<name>.md` and `<out>/<name>.csv`.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    #[arg(long, default_value = "side-by-side")]
    name: String,
    /// Only load a cluster of this many nodes (1 or 3), report its ingest and stop: for
    /// investigating ingest without the queries and peers.
    #[arg(long)]
    ingest_only: Option<u64>,
    /// With --ingest-only: keep the compacted cluster's data directories (and say where), e.g.
    /// to compare its segments with the peers' files.
    #[arg(long, requires = "ingest_only")]
    keep: bool,
}

/// An engine of the interleaved runs.
enum Engine {
    Sus { name: &'static str, client: Client },
    Peer(Box<Peer>),
}

impl Engine {
    fn name(&self) -> String {
        match self {
            Engine::Sus { name, .. } => name.to_string(),
            Engine::Peer(p) => p.engine.clone(),
        }
    }

    /// Runs a query: wall seconds and canonical rows.
    async fn run(&mut self, q: &str, p: &Params) -> Result<(f64, Vec<Row>)> {
        match self {
            Engine::Sus { client, .. } => {
                let started = Instant::now();
                let (rows, _) = queries::run(client, q, p).await?;
                Ok((started.elapsed().as_secs_f64(), rows))
            }
            Engine::Peer(peer) => {
                let (ms, rows) = peer.run(q, &queries::params_json(q, p)).await?;
                Ok((ms / 1e3, rows))
            }
        }
    }
}

/// What loading one cluster measured.
struct Loaded {
    cluster: TestCluster,
    client: Client,
    secs: f64,
    records: u64,
    segment_bytes: u64,
    compact_secs: f64,
}

/// Starts a cluster of `nodes` with `replication`, ingests every file, checks the totals against
/// the oracle and compacts.
async fn load(args: &Args, data: &Data, nodes: u64, replication: u32) -> Result<Loaded> {
    let options = NodeOptions {
        commit_timeout_ms: 300_000,
        // Every query decodes Parquet: the comparison with engines reading Parquet files.
        env: vec![("SUS_CACHE_MIB".into(), "0".into())],
        ..NodeOptions::default()
    };
    let cluster = TestCluster::start(
        &args.node_bin,
        &args.refdata,
        nodes,
        args.shards,
        replication,
        options,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let ids: Vec<u64> = (1..=nodes).collect();
    let client = cluster.client_with(
        &ids,
        RetryPolicy {
            retry_for: Duration::from_secs(900),
            attempt_timeout: Duration::from_secs(900),
        },
    );
    eprintln!("{nodes}-node: ingesting {} files", data.files.len());
    let (secs, records) = match ingest(&client, &data.files, args.lanes).await {
        Ok(done) => done,
        Err(e) => {
            let dir = cluster.keep();
            bail!(
                "{nodes}-node ingest: {e:#}\n(the nodes' logs and data are kept in {})",
                dir.display()
            );
        }
    };
    eprintln!(
        "{nodes}-node: {records} records in {secs:.0} s ({:.0}/s)",
        records as f64 / secs
    );
    check_totals(&client, data).await?;
    let started = Instant::now();
    client.compact(0).await?;
    let compact_secs = started.elapsed().as_secs_f64();
    check_totals(&client, data).await?;
    let segment_bytes = parquet_bytes(&cluster.nodes[&1].dir)?;
    Ok(Loaded {
        cluster,
        client,
        secs,
        records,
        segment_bytes,
        compact_secs,
    })
}

/// The national live count and price total must be the oracle's.
async fn check_totals(client: &Client, data: &Data) -> Result<()> {
    use arrow::array::AsArray;
    let mut got = (0u64, 0i64);
    for ds in ["apc", "op", "ec"] {
        let spec = sus_proto::v1::QuerySpec {
            dataset: ds.into(),
            aggregates: vec![
                sus_client::query::build::count(),
                sus_client::query::build::sum("price"),
            ],
            ..Default::default()
        };
        let r = client.aggregate(&spec, ReadFrom::Leader).await?;
        let col = |c: usize| {
            r.batch
                .column(c)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0)
        };
        got.0 += col(0) as u64;
        got.1 += col(1);
    }
    if got != data.totals() {
        bail!(
            "the cluster holds {got:?} (records, pence); the generator's oracle expects {:?}",
            data.totals()
        );
    }
    Ok(())
}

/// Bytes of every segment file under a node's data directory (one replica of every shard).
fn parquet_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            // Snapshots hard-link the live segments: count each file once, from the stores.
            if path.file_name().is_some_and(|n| n == "snapshots") {
                continue;
            }
            total += parquet_bytes(&path)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Every live row of every dataset (all stored columns) as Arrow IPC streams `<ds>.arrow`.
async fn export(client: &Client, dir: &Path) -> Result<u64> {
    use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
    std::fs::create_dir_all(dir)?;
    let mut rows = 0;
    for ds in ["apc", "op", "ec"] {
        let path = dir.join(format!("{ds}.arrow"));
        let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(arrow::ipc::CompressionType::ZSTD))?;
        let mut writer: Option<StreamWriter<_>> = None;
        let mut file = Some(file);
        let spec = ScanSpec {
            dataset: ds.into(),
            ..ScanSpec::default()
        };
        rows += client
            .scan(&spec, ReadFrom::Leader, &mut |batch| {
                if writer.is_none()
                    && let Some(f) = file.take()
                {
                    writer = Some(
                        StreamWriter::try_new_with_options(f, &batch.schema(), options.clone())
                            .map_err(|e| sus_client::Error::Cluster(e.to_string()))?,
                    );
                }
                if let Some(w) = writer.as_mut() {
                    w.write(&batch)
                        .map_err(|e| sus_client::Error::Cluster(e.to_string()))?;
                }
                Ok(())
            })
            .await?;
        match writer {
            Some(mut w) => w.finish()?,
            None => bail!("{ds}: nothing to export"),
        }
    }
    Ok(rows)
}

/// Commit latency of one client submitting small files one at a time, and the floor under it.
struct Latency {
    commits_ms: Vec<f64>,
    fsync_ms: Vec<f64>,
    rtt_ms: Vec<f64>,
}

/// One-record outpatient submissions, each under a submission id never used before.
fn small_submissions(args: &Args, tag: &str) -> Result<Vec<PathBuf>> {
    let dir = args.work.join(format!("latency-{tag}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let summary = generate(
        &GenConfig {
            dataset: Some(Dataset::Op),
            rows: args.latency_submissions as u64,
            seed: args.seed + 1,
            refdata_dir: args.refdata.clone(),
            out_dir: dir.clone(),
            rows_per_file: 1,
            bulk_share: 0.0,
            replace_share: 0.0,
            delete_share: 0.0,
            invalid_share: 0.0,
            ..GenConfig::default()
        },
        &mut |_| {},
    )?;
    let mut files = Vec::new();
    for (i, s) in summary.expected.submissions.iter().enumerate() {
        let file = dir.join(&s.file);
        let meta_path = dir.join(format!("{}.meta.json", s.file));
        let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta_path)?)?;
        meta["submission_id"] = format!("LAT-{tag}-{i:05}").into();
        std::fs::write(&meta_path, serde_json::to_vec(&meta)?)?;
        files.push(file);
    }
    Ok(files)
}

async fn latency(
    args: &Args,
    cluster: &TestCluster,
    client: &Client,
    tag: &str,
) -> Result<Latency> {
    let files = small_submissions(args, tag)?;
    let mut commits_ms = Vec::with_capacity(files.len());
    for f in &files {
        let started = Instant::now();
        client.submit_file(f).await?;
        commits_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    // The floor: an fdatasync of 4 KiB on the nodes' disk, and one gRPC round trip (TLS,
    // authenticated) to a node.
    let probe = cluster.nodes[&1].dir.join("fsync-probe");
    let mut fsync_ms = Vec::new();
    {
        let mut f = std::fs::File::create(&probe)?;
        let block = vec![7u8; 4096];
        for _ in 0..files.len() {
            let started = Instant::now();
            f.write_all(&block)?;
            f.sync_data()?;
            fsync_ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    std::fs::remove_file(&probe)?;
    let one = cluster.client(&[1]);
    let mut rtt_ms = Vec::new();
    for _ in 0..files.len() {
        let started = Instant::now();
        one.status_of(0).await?;
        rtt_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Latency {
        commits_ms,
        fsync_ms,
        rtt_ms,
    })
}

/// Timings of the interleaved runs: (query, engine) → seconds.
type Results = BTreeMap<(String, String), Timings>;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    for (what, path) in [
        (
            "sus-node (cargo build --release -p sus-node)",
            &args.node_bin,
        ),
        ("the peers' Python (benches/peers/setup.sh)", &args.python),
        ("peers.py", &args.peers),
    ] {
        let needed = args.ingest_only.is_none() || path == &args.node_bin;
        if needed && !path.exists() {
            bail!("{} not found: {what}", path.display());
        }
    }
    let started = Instant::now();
    std::fs::create_dir_all(&args.work)?;
    let data = Data::generate(&args.work, args.rows, args.seed, &args.refdata)?;
    let (live, _) = data.totals();
    let live_of = |ds: &str| {
        data.expected["datasets"][ds]["live_records"]
            .as_u64()
            .unwrap_or(0)
    };
    println!(
        "data: {} files, {} records written, {live} live (seed {})",
        data.files.len(),
        data.rows_written(),
        args.seed
    );

    if let Some(nodes) = args.ingest_only {
        let replication = nodes.min(3) as u32;
        let loaded = load(&args, &data, nodes, replication).await?;
        println!(
            "{nodes}-node: compacted in {:.0} s; segments of node 1: {} bytes ({:.1} per live row)",
            loaded.compact_secs,
            loaded.segment_bytes,
            loaded.segment_bytes as f64 / live as f64
        );
        if args.keep {
            println!("data kept in {}", loaded.cluster.keep().display());
        }
        return Ok(());
    }
    let mut one = load(&args, &data, 1, 1).await?;
    let export_dir = args
        .work
        .join(format!("export-{}-{}", args.rows, args.seed));
    let exported = export(&one.client, &export_dir).await?;
    if exported != live {
        bail!("exported {exported} rows of {live} live");
    }
    let parquet_dir = args.work.join(format!("peers-{}-{}", args.rows, args.seed));
    eprintln!("peers: pyarrow and DuckDB write the exported rows to Parquet");
    let prepared = peers::prepare(&args.python, &args.peers, &export_dir, &parquet_dir).await?;
    let three = load(&args, &data, 3, 3).await?;

    let params = Params {
        provider: data.busiest_provider("op"),
        quarter: ("2024-04-01".into(), "2024-06-30".into()),
        chapter: "FD".into(),
        month: "2024-09".into(),
    };
    let mut engines = vec![
        Engine::Sus {
            name: "sus 1 node",
            client: one.client.clone(),
        },
        Engine::Sus {
            name: "sus 3 nodes",
            client: three.client.clone(),
        },
    ];
    for e in &args.engines {
        let peer = Peer::start(
            &args.python,
            &args.peers,
            e,
            &parquet_dir.join("pyarrow"),
            args.threads,
        )
        .await?;
        engines.push(Engine::Peer(Box::new(peer)));
    }
    let mut results: Results = BTreeMap::new();
    let mut answers: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut mismatches = Vec::new();
    for q in QUERIES {
        eprintln!("{q}: {}", queries::describe(q));
        // Warm-up (OS page cache, engines' own set-up) and the answers, which must agree.
        let mut reference: Option<Vec<Row>> = None;
        for e in engines.iter_mut() {
            let (_, rows) = e.run(q, &params).await?;
            match &reference {
                None => reference = Some(rows),
                Some(r) => {
                    if let Some(d) = first_difference(r, &rows) {
                        mismatches.push(format!("{q}: {} differs from sus: {d}", e.name()));
                    }
                }
            }
        }
        let reference = reference.unwrap_or_default();
        if reference.is_empty() {
            mismatches.push(format!("{q}: no rows (the parameters select nothing)"));
        }
        answers.insert(q.to_string(), reference);
        for _ in 0..args.reps {
            for e in engines.iter_mut() {
                let (secs, _) = e.run(q, &params).await?;
                results
                    .entry((q.to_string(), e.name()))
                    .or_default()
                    .0
                    .push(secs);
            }
        }
    }
    let mut versions = BTreeMap::new();
    for e in engines {
        if let Engine::Peer(p) = e {
            versions.insert(p.engine.clone(), p.version.clone());
            p.stop().await?;
        }
    }

    // From memory: the 1-node cluster restarted with a column cache, warmed by two runs.
    eprintln!("memory: restarting the 1-node cluster with a column cache");
    one.cluster.kill(1).await;
    one.cluster.options.env = vec![("SUS_CACHE_MIB".into(), args.memory_cache_mib.to_string())];
    one.cluster.restart(1).await.map_err(anyhow::Error::msg)?;
    one.cluster
        .wait_for(
            "leaders after restart",
            Duration::from_secs(120),
            async |c| c.all_shards_led().await,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    let mut memory: BTreeMap<String, Timings> = BTreeMap::new();
    for q in QUERIES {
        for _ in 0..2 {
            let (rows, _) = queries::run(&one.client, q, &params).await?;
            if let Some(d) = first_difference(&answers[q], &rows) {
                mismatches.push(format!("{q}: from memory differs from Parquet: {d}"));
            }
        }
        for _ in 0..args.reps {
            let t = Instant::now();
            queries::run(&one.client, q, &params).await?;
            memory
                .entry(q.to_string())
                .or_default()
                .0
                .push(t.elapsed().as_secs_f64());
        }
    }

    eprintln!(
        "commit latency: {} single submissions per cluster",
        args.latency_submissions
    );
    let lat1 = latency(&args, &one.cluster, &one.client, "1node").await?;
    let lat3 = latency(&args, &three.cluster, &three.client, "3node").await?;

    let report = Report {
        args: &args,
        data: &data,
        live_of: &live_of,
        one: &one,
        three: &three,
        prepared: &prepared,
        versions: &versions,
        params: &params,
        results: &results,
        memory: &memory,
        lat: [&lat1, &lat3],
        mismatches: &mismatches,
        elapsed: started.elapsed().as_secs_f64(),
    };
    report.write()?;
    if !mismatches.is_empty() {
        for m in &mismatches {
            eprintln!("MISMATCH {m}");
        }
        bail!("{} answers differ between engines", mismatches.len());
    }
    Ok(())
}

struct Report<'a> {
    args: &'a Args,
    data: &'a Data,
    live_of: &'a dyn Fn(&str) -> u64,
    one: &'a Loaded,
    three: &'a Loaded,
    prepared: &'a serde_json::Value,
    versions: &'a BTreeMap<String, String>,
    params: &'a Params,
    results: &'a Results,
    memory: &'a BTreeMap<String, Timings>,
    lat: [&'a Latency; 2],
    mismatches: &'a [String],
    elapsed: f64,
}

impl Report<'_> {
    /// Rows a query reads: every live row of its datasets.
    fn rows_in(&self, q: &str) -> u64 {
        queries::datasets(q)
            .iter()
            .map(|ds| (self.live_of)(ds))
            .sum()
    }

    fn engines(&self) -> Vec<String> {
        let mut names = vec!["sus 1 node".to_string(), "sus 3 nodes".to_string()];
        names.extend(self.args.engines.iter().cloned());
        names
    }

    fn median(&self, q: &str, engine: &str) -> f64 {
        self.results
            .get(&(q.to_string(), engine.to_string()))
            .map_or(f64::NAN, Timings::median)
    }

    fn pyarrow(&self) -> (u64, f64, u64, u64) {
        let (mut rows, mut secs, mut bytes, mut duck) = (0u64, 0f64, 0u64, 0u64);
        for ds in ["apc", "op", "ec"] {
            let d = &self.prepared["datasets"][ds];
            rows += d["rows"].as_u64().unwrap_or(0);
            secs += d["pyarrow_secs"].as_f64().unwrap_or(0.0);
            bytes += d["pyarrow_bytes"].as_u64().unwrap_or(0);
            duck += d["duckdb_bytes"].as_u64().unwrap_or(0);
        }
        (rows, secs, bytes, duck)
    }

    fn write(&self) -> Result<()> {
        std::fs::create_dir_all(&self.args.out)?;
        let md = self.args.out.join(format!("{}.md", self.args.name));
        let csv = self.args.out.join(format!("{}.csv", self.args.name));
        std::fs::write(&md, self.markdown()?)?;
        std::fs::write(&csv, self.csv())?;
        println!("results: {} and {}", md.display(), csv.display());
        Ok(())
    }

    fn csv(&self) -> String {
        let mut out = String::from(
            "section,query,engine,rows,median_ms,min_ms,max_ms,rows_per_sec,sus_1node_speedup\n",
        );
        for q in QUERIES {
            let rows = self.rows_in(q);
            let ours = self.median(q, "sus 1 node");
            let runs = self
                .engines()
                .into_iter()
                .filter_map(|e| Some((self.results.get(&(q.to_string(), e.clone()))?, e)))
                .chain(
                    self.memory
                        .get(q)
                        .map(|t| (t, "sus 1 node memory".to_string())),
                );
            for (t, e) in runs {
                let _ = writeln!(
                    out,
                    "query,{q},{e},{rows},{:.3},{:.3},{:.3},{:.0},{:.3}",
                    t.median() * 1e3,
                    t.min() * 1e3,
                    t.max() * 1e3,
                    rows as f64 / t.median(),
                    t.median() / ours
                );
            }
        }
        let (py_rows, py_secs, py_bytes, duck_bytes) = self.pyarrow();
        for (name, l) in [("sus 1 node", self.one), ("sus 3 nodes", self.three)] {
            let _ = writeln!(
                out,
                "ingest,,{name},{},{:.3},,,{:.0},",
                l.records,
                l.secs * 1e3,
                l.records as f64 / l.secs
            );
        }
        let _ = writeln!(
            out,
            "ingest,,pyarrow parquet write,{py_rows},{:.3},,,{:.0},",
            py_secs * 1e3,
            py_rows as f64 / py_secs
        );
        let _ = writeln!(
            out,
            "bytes,,sus segments,{},{},,,,",
            py_rows, self.one.segment_bytes
        );
        let _ = writeln!(out, "bytes,,pyarrow,{py_rows},{py_bytes},,,,");
        let _ = writeln!(out, "bytes,,duckdb,{py_rows},{duck_bytes},,,,");
        for (name, l) in [("sus 1 node", self.lat[0]), ("sus 3 nodes", self.lat[1])] {
            let _ = writeln!(
                out,
                "commit_latency,,{name},{},{:.3},{:.3},{:.3},,",
                l.commits_ms.len(),
                percentile(&l.commits_ms, 0.5),
                percentile(&l.fsync_ms, 0.5),
                percentile(&l.rtt_ms, 0.5)
            );
        }
        out
    }

    fn markdown(&self) -> Result<String> {
        let a = self.args;
        let mut s = String::new();
        let (live, _) = self.data.totals();
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        writeln!(
            s,
            "# Side by side: sus-cluster, DuckDB, DataFusion, Polars, chdb\n"
        )?;
        writeln!(
            s,
            "One run of `benches/run` (commit `{commit}`, {}), {cores} cores ({cpu}). {} records \
             generated (seed {}), {} submission files; **{live} live rows** (apc {}, op {}, \
             ec {}). Every engine: {} threads, a warm-up run whose answers must equal ours row \
             for row, then {} timed runs interleaved across engines; median (min-max) ms. \
             rows/s = live rows of the datasets the query reads / median. The whole run took \
             {:.0} min.\n",
            chrono_now(),
            a.rows,
            a.seed,
            self.data.files.len(),
            (self.live_of)("apc"),
            (self.live_of)("op"),
            (self.live_of)("ec"),
            a.threads,
            a.reps,
            self.elapsed / 60.0
        )?;
        writeln!(
            s,
            "```sh\nbenches/run --rows {} --seed {} --reps {}\n```\n",
            a.rows, a.seed, a.reps
        )?;
        writeln!(
            s,
            "Versions: {}. Peers read the rows as pyarrow wrote them (one zstd Parquet file per \
             dataset, pyarrow's defaults, rows in our export's order: provider, then month). \
             sus reads its own segments (8 shards; one Parquet file per provider and dataset \
             after compaction, a row group per month) with no column cache, so every query \
             decodes Parquet like the peers; times are taken by the client, so they include \
             gRPC and TLS to the nodes. Parameters: provider {}, quarter {} to {}, HRG chapter \
             {}, month {}.\n",
            self.versions
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.params.provider,
            self.params.quarter.0,
            self.params.quarter.1,
            self.params.chapter,
            self.params.month
        )?;
        if !self.mismatches.is_empty() {
            writeln!(s, "**Answers that differed:**\n")?;
            for m in self.mismatches {
                writeln!(s, "- {m}")?;
            }
            writeln!(s)?;
        }
        writeln!(s, "## Queries\n")?;
        let engines = self.engines();
        write!(s, "| query |")?;
        for e in &engines {
            write!(s, " {e} |")?;
        }
        writeln!(s, " sus 1 node, memory |")?;
        writeln!(s, "|---|{}---|", "---|".repeat(engines.len()))?;
        for q in QUERIES {
            write!(s, "| {q}: {} |", queries::describe(q))?;
            let ours = self.median(q, "sus 1 node");
            for e in &engines {
                match self.results.get(&(q.to_string(), e.clone())) {
                    Some(t) => write!(
                        s,
                        " {:.1} ({:.1}-{:.1}){} |",
                        t.median() * 1e3,
                        t.min() * 1e3,
                        t.max() * 1e3,
                        if e == "sus 1 node" {
                            String::new()
                        } else {
                            format!(" **{:.2}x**", t.median() / ours)
                        }
                    )?,
                    None => write!(s, " - |")?,
                }
            }
            match self.memory.get(q) {
                Some(t) => writeln!(
                    s,
                    " {:.1} ({:.1}-{:.1}) |",
                    t.median() * 1e3,
                    t.min() * 1e3,
                    t.max() * 1e3
                )?,
                None => writeln!(s, " - |")?,
            }
        }
        writeln!(
            s,
            "\nBold: the engine's median / sus 1 node's (above 1: sus is faster by that \
             factor).\n"
        )?;
        write!(s, "| rows/s (millions) |")?;
        for e in &engines {
            write!(s, " {e} |")?;
        }
        writeln!(s, " sus 1 node, memory |")?;
        writeln!(s, "|---|{}---|", "---|".repeat(engines.len()))?;
        for q in QUERIES {
            let rows = self.rows_in(q) as f64;
            write!(s, "| {q} |")?;
            for e in &engines {
                write!(s, " {:.1} |", rows / self.median(q, e) / 1e6)?;
            }
            let m = self.memory.get(q).map_or(f64::NAN, Timings::median);
            writeln!(s, " {:.1} |", rows / m / 1e6)?;
        }

        let (py_rows, py_secs, py_bytes, duck_bytes) = self.pyarrow();
        let py_rate = py_rows as f64 / py_secs;
        let rate = |l: &Loaded| l.records as f64 / l.secs;
        writeln!(s, "\n## Ingest and file size\n")?;
        writeln!(s, "| what | rows | seconds | rows/s | vs pyarrow |")?;
        writeln!(s, "|---|---|---|---|---|")?;
        for (name, l) in [
            (
                "sus, 1 node (validate, derive, price, store; 1 replica)",
                self.one,
            ),
            (
                "sus, 3 nodes (the same, 3 replicas of every shard)",
                self.three,
            ),
        ] {
            writeln!(
                s,
                "| {name} | {} | {:.1} | {:.0} | {:.3} |",
                l.records,
                l.secs,
                rate(l),
                rate(l) / py_rate
            )?;
        }
        writeln!(
            s,
            "| pyarrow `write_table` zstd (in-memory table to Parquet) | {py_rows} | {py_secs:.1} | \
             {py_rate:.0} | 1 |"
        )?;
        writeln!(
            s,
            "\nsus ingests the generator's CSV submissions through the cluster ({} lanes, \
             every submission committed on a majority's disks before its answer); pyarrow only \
             encodes the already derived rows. Compaction afterwards: {:.0} s (1 node), {:.0} s \
             (3 nodes).\n",
            a.lanes, self.one.compact_secs, self.three.compact_secs
        )?;
        writeln!(
            s,
            "| Parquet bytes of the live rows | bytes | bytes/row | vs pyarrow |"
        )?;
        writeln!(s, "|---|---|---|---|")?;
        for (name, b) in [
            (
                "sus segments (one replica, compacted)",
                self.one.segment_bytes,
            ),
            ("pyarrow (zstd)", py_bytes),
            ("DuckDB `COPY` (zstd)", duck_bytes),
        ] {
            writeln!(
                s,
                "| {name} | {b} | {:.1} | {:.3} |",
                b as f64 / py_rows as f64,
                b as f64 / py_bytes as f64
            )?;
        }
        writeln!(s, "\n## Single-client commit latency\n")?;
        writeln!(
            s,
            "{} one-record submissions sent one at a time; floor measured in the same run: \
             fdatasync of 4 KiB on the nodes' disk, and a gRPC round trip (TLS, authenticated \
             `Status`) to a node.\n",
            a.latency_submissions
        )?;
        writeln!(
            s,
            "| cluster | commit p50 ms | p99 ms | fsync p50 ms | round trip p50 ms | floor ms | p50 / floor |"
        )?;
        writeln!(s, "|---|---|---|---|---|---|---|")?;
        for (name, l, trips) in [("1 node", self.lat[0], 1.0), ("3 nodes", self.lat[1], 2.0)] {
            let fsync = percentile(&l.fsync_ms, 0.5);
            let rtt = percentile(&l.rtt_ms, 0.5);
            let floor = fsync + trips * rtt;
            let p50 = percentile(&l.commits_ms, 0.5);
            writeln!(
                s,
                "| {name} | {p50:.2} | {:.2} | {fsync:.2} | {rtt:.2} | {floor:.2} (fsync + {trips} round trip{}) | {:.1} |",
                percentile(&l.commits_ms, 0.99),
                if trips > 1.0 { "s" } else { "" },
                p50 / floor
            )?;
        }

        writeln!(s, "\n## Targets (issue #7)\n")?;
        writeln!(s, "| target | measured | met |")?;
        writeln!(s, "|---|---|---|")?;
        let ours = self.median("Q1", "sus 1 node");
        let vs = |e: &str| self.median("Q1", e) / ours;
        let mut target = |what: &str, measured: String, met: bool| {
            writeln!(
                s,
                "| {what} | {measured} | {} |",
                if met { "yes" } else { "**no**" }
            )
        };
        target(
            "Q1, 1 node from Parquet, >= 1.5x DuckDB's rows/s (stretch 3x)",
            format!("{:.2}x", vs("duckdb")),
            vs("duckdb") >= 1.5,
        )?;
        for e in ["datafusion", "polars"] {
            target(
                &format!("Q1, 1 node from Parquet, >= 2x {e}"),
                format!("{:.2}x", vs(e)),
                vs(e) >= 2.0,
            )?;
        }
        let mem = self.memory.get("Q1").map_or(f64::NAN, Timings::median);
        let mem_rate = self.rows_in("Q1") as f64 / mem;
        target(
            "Q1 from memory >= 100 M rows/s",
            format!("{:.0} M rows/s", mem_rate / 1e6),
            mem_rate >= 100e6,
        )?;
        let q3 = self.median("Q3", "sus 1 node") / self.median("Q3", "duckdb");
        target(
            "Q3 p50 latency <= 0.5x DuckDB's",
            format!("{q3:.2}x"),
            q3 <= 0.5,
        )?;
        let three = ours / self.median("Q1", "sus 3 nodes");
        target(
            "3-node pushed-down Q1 >= 0.8x the single node",
            format!("{three:.2}x"),
            three >= 0.8,
        )?;
        let ingest = rate(self.three) / py_rate;
        target(
            "replicated ingest >= 0.4x pyarrow's Parquet write rows/s",
            format!("{ingest:.3}x"),
            ingest >= 0.4,
        )?;
        let size = self.one.segment_bytes as f64 / py_bytes as f64;
        target(
            "file size <= 1.05x pyarrow's",
            format!("{size:.3}x"),
            size <= 1.05,
        )?;
        Ok(s)
    }
}

/// The date and time now (UTC), for the report.
fn chrono_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
