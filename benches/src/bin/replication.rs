//! Replication figures (issue #3): ingest rows/s into a 3-node loopback cluster against the same
//! data into a 1-node cluster, single-client commit latency per submission (p50/p99), and the
//! snapshot transfer rate when a fourth node joins and receives its shards by snapshot.
//!
//! Run on release binaries, one run, side by side:
//!
//! ```sh
//! cargo build --release -p sus-node -p sus-benches
//! ./target/release/replication --rows 200000 --node-bin target/release/sus-node
//! ```

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use sus_chaos_tests::cluster::{NodeOptions, TestCluster, totals};
use sus_client::generator::{GenConfig, generate};

#[derive(Parser)]
struct Args {
    /// Original activity records to generate.
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    #[arg(long, default_value_t = 20_261_125)]
    seed: u64,
    /// The sus-node binary to run (a release build).
    #[arg(long, default_value = "target/release/sus-node")]
    node_bin: PathBuf,
    #[arg(long, default_value = "refdata")]
    refdata: PathBuf,
    /// Data shards.
    #[arg(long, default_value_t = 8)]
    shards: u32,
}

struct Run {
    nodes: u64,
    records: u64,
    secs: f64,
    latencies_ms: Vec<f64>,
}

async fn ingest(
    args: &Args,
    files: &[PathBuf],
    nodes: u64,
    options: NodeOptions,
) -> Result<(TestCluster, Run)> {
    let replication = nodes.min(3) as u32;
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
    let client = cluster.client(&ids);
    let mut latencies_ms = Vec::with_capacity(files.len());
    let mut records = 0u64;
    let started = Instant::now();
    for file in files {
        let t = Instant::now();
        let outcome = client.submit_file(file).await?;
        latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if outcome.accepted {
            records += outcome.report.records;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((
        cluster,
        Run {
            nodes,
            records,
            secs,
            latencies_ms,
        },
    ))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn report(run: &Run) {
    let mut l = run.latencies_ms.clone();
    l.sort_by(f64::total_cmp);
    println!(
        "| {} node{} | {} | {:.1} | {:.0} | {:.1} | {:.1} |",
        run.nodes,
        if run.nodes > 1 { "s" } else { "" },
        run.records,
        run.secs,
        run.records as f64 / run.secs,
        percentile(&l, 0.5),
        percentile(&l, 0.99)
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.node_bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p sus-node)",
            args.node_bin.display()
        );
    }
    let gen_dir = tempdir_path("sus-bench-gen")?;
    let summary = generate(
        &GenConfig {
            rows: args.rows,
            seed: args.seed,
            refdata_dir: args.refdata.clone(),
            out_dir: gen_dir.clone(),
            ..GenConfig::default()
        },
        &mut |_| {},
    )?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&gen_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|x| x == "csv"));
    files.sort();
    let per_file = summary.rows_written as f64 / files.len() as f64;
    println!(
        "data: {} files, {} records ({per_file:.0} per submission), seed {}",
        files.len(),
        summary.rows_written,
        args.seed
    );
    println!();
    println!(
        "| cluster | records accepted | seconds | records/s | commit p50 ms | commit p99 ms |"
    );
    println!("|---|---|---|---|---|---|");

    let (one, run1) = ingest(&args, &files, 1, NodeOptions::default()).await?;
    report(&run1);
    drop(one);
    // Snapshots often enough that a joining node's shards come by snapshot.
    let options = NodeOptions {
        snapshot_after: 64,
        keep_after_snapshot: 8,
        ..NodeOptions::default()
    };
    let (mut three, run3) = ingest(&args, &files, 3, options).await?;
    report(&run3);
    println!();
    println!(
        "3-node / 1-node ingest rate: {:.2}",
        (run3.records as f64 / run3.secs) / (run1.records as f64 / run1.secs)
    );

    // Snapshot transfer: a fourth node joins and receives its share of the replicas.
    let contents = three
        .wait_replicas_agree(Duration::from_secs(600))
        .await
        .map_err(anyhow::Error::msg)?;
    let (live, price) = totals(&contents);
    if live != summary.expected.all.live_records || price != summary.expected.all.total_price_pence
    {
        bail!("3-node totals {live} / {price} differ from the generator's");
    }
    let addr = three
        .spawn(4, "127.0.0.1:0")
        .await
        .map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let status = three.client(&[1, 2, 3]).add_node(4, &addr, true).await?;
    three
        .wait_replicas_agree(Duration::from_secs(600))
        .await
        .map_err(anyhow::Error::msg)?;
    let join_secs = started.elapsed().as_secs_f64();
    let moved = status
        .shards
        .iter()
        .filter(|s| s.replicas.contains(&4))
        .count();
    let (mut bytes, mut secs, mut n) = (0f64, 0f64, 0);
    for line in three
        .log_of(4)
        .lines()
        .filter(|l| l.contains("snapshot installed"))
    {
        let field = |name: &str| -> Option<f64> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
        };
        if let (Some(b), Some(s)) = (field("bytes"), field("transfer_secs")) {
            bytes += b;
            secs += s;
            n += 1;
        }
    }
    println!(
        "snapshot transfer to a joining node: {moved} replicas moved, {n} snapshots, {:.1} MB in {secs:.2} s of transfer: {:.1} MB/s (add-node with rebalance until every replica agrees: {join_secs:.1} s)",
        bytes / 1e6,
        bytes / 1e6 / secs.max(1e-9)
    );
    std::fs::remove_dir_all(&gen_dir).context("removing generated data")?;
    Ok(())
}

fn tempdir_path(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    if Path::new(&dir).exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
