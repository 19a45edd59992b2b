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
//!    with min-max. Our nodes run with no column cache here: every query decodes Parquet. Our
//!    clusters are read twice over: as the admin at the identifiable tier (every answering node
//!    commits an audit record first) and as a national analyst at the pseudonymised tier.
//! 4. The 1-node cluster again with a column cache: the same queries from memory.
//! 5. Single-client commit latency on both clusters, with the floor measured alongside: an
//!    fdatasync of 4 KiB on the nodes' disk and a gRPC round trip to a node.
//! 6. `benches/results/<name>.md` and `.csv`, with the targets of issue #7 and where each stands.

use anyhow::{Result, bail};
use clap::Parser;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use sus_benches::peers::{self, Peer};
use sus_benches::queries::{self, Params, QUERIES};
use sus_benches::{Data, Row, Timings, first_difference, ingest};
use sus_chaos_tests::cluster::{NodeOptions, TestCluster};
use sus_client::generator::{Dataset, GenConfig, generate};
use sus_client::{Client, ReadFrom, RetryPolicy, ScanSpec};

mod report;
use report::Report;

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
    Sus {
        name: &'static str,
        client: Client,
    },
    /// The same cluster, asked in SQL (Flight SQL, `queries::sql`).
    SusSql {
        name: &'static str,
        client: Client,
    },
    Peer(Box<Peer>),
}

impl Engine {
    fn name(&self) -> String {
        match self {
            Engine::Sus { name, .. } | Engine::SusSql { name, .. } => name.to_string(),
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
            Engine::SusSql { client, .. } => {
                let started = Instant::now();
                let rows = queries::run_sql(client, q, p).await?;
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

/// The bench's clients wait out long commits and compactions rather than fail the run.
const PATIENT: RetryPolicy = RetryPolicy {
    retry_for: Duration::from_secs(900),
    attempt_timeout: Duration::from_secs(900),
};

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
    let client = cluster.client_with(&ids, PATIENT);
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

/// The clients of a national analyst reading at the pseudonymised tier: the same queries
/// without the audit commit every identifiable read waits for.
const PSEUDO_1: &str = "sus 1 node, pseudonymised";
const PSEUDO_3: &str = "sus 3 nodes, pseudonymised";
/// The identifiable clients asking in SQL.
const SQL_1: &str = "sus 1 node, SQL";
const SQL_3: &str = "sus 3 nodes, SQL";

/// A record-level SQL read streamed to the client, and what the answering node held meanwhile.
pub(crate) struct Streamed {
    statement: String,
    rows: u64,
    /// Bytes of the Arrow arrays received (what holding the answer would take).
    bytes: u64,
    secs: f64,
    /// The node's resident set before, and its peak while answering (VmHWM, reset first).
    rss_before: u64,
    rss_peak: u64,
}

/// A kernel memory figure of a process (`VmRSS`, `VmHWM`), bytes.
fn vm(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .ok_or_else(|| anyhow::anyhow!("no {key} for process {pid}"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("{line}"))?
        .parse()?;
    Ok(kib * 1024)
}

/// Streams `SELECT * FROM op` from the 1-node cluster without keeping it, with the node's peak
/// resident set over the read (the peak is reset first through `/proc/PID/clear_refs`).
async fn stream_op(one: &Loaded) -> Result<Streamed> {
    use futures::StreamExt;
    let pid = one
        .cluster
        .pid(1)
        .ok_or_else(|| anyhow::anyhow!("node 1 has no process"))?;
    let statement = "SELECT * FROM op".to_string();
    let rss_before = vm(pid, "VmRSS:")?;
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
    let started = Instant::now();
    let mut answer = one.client.sql(&statement).await?;
    let (mut rows, mut bytes) = (0u64, 0u64);
    while let Some(batch) = answer.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        bytes += batch.get_array_memory_size() as u64;
    }
    Ok(Streamed {
        statement,
        rows,
        bytes,
        secs: started.elapsed().as_secs_f64(),
        rss_before,
        rss_peak: vm(pid, "VmHWM:")?,
    })
}

/// Adds a national analyst whose highest tier is pseudonymised and returns a client logged in
/// as that user.
async fn analyst(loaded: &Loaded, ids: &[u64]) -> Result<Client> {
    const PASSWORD: &str = "side-by-side-analyst";
    loaded
        .client
        .add_user(
            sus_proto::v1::UserInfo {
                name: "analyst".into(),
                role: "national".into(),
                org: "X26".into(),
                max_tier: sus_proto::v1::Tier::Pseudonymised as i32,
                ..Default::default()
            },
            PASSWORD,
        )
        .await?;
    let client = loaded.cluster.client_as(ids, PATIENT, None);
    client
        .login("analyst", PASSWORD, "side-by-side benchmark", 0)
        .await?;
    Ok(client)
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
        Engine::SusSql {
            name: SQL_1,
            client: one.client.clone(),
        },
        Engine::SusSql {
            name: SQL_3,
            client: three.client.clone(),
        },
        Engine::Sus {
            name: PSEUDO_1,
            client: analyst(&one, &[1]).await?,
        },
        Engine::Sus {
            name: PSEUDO_3,
            client: analyst(&three, &[1, 2, 3]).await?,
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

    eprintln!("SQL: streaming SELECT * FROM op from the 1-node cluster");
    let streamed = stream_op(&one).await?;
    if streamed.rows != live_of("op") {
        mismatches.push(format!(
            "SELECT * FROM op streamed {} rows of {}",
            streamed.rows,
            live_of("op")
        ));
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
        streamed: &streamed,
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
