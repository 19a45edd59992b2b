//! Pushed-down query figures: rows/s for `sum(price) group by provider, activity month` and for a
//! selective filtered query, on a 1-node cluster and on a 3-node loopback cluster, same data.
//!
//! ```text
//! cargo build --release -p sus-node -p sus-benches
//! ./target/release/query --rows 10000000 --node-bin target/release/sus-node
//! ```
//!
//! Data comes from the project's generator (mixed APC/OP/EC, with replacements, deletions and
//! Bulk Replacements), is ingested through the real path (submitters in parallel lanes, one lane
//! per sender so that each sender's files stay in order), checked against the generator's totals,
//! compacted, and then queried: one warm-up run, then `--reps` timed runs; medians with min-max.
//! Shards have one replica each here: a read uses one replica per shard whatever the replication
//! factor, and single replicas keep the 10 M-row ingest of both clusters within minutes.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sus_chaos_tests::cluster::{NodeOptions, TestCluster};
use sus_client::generator::{GenConfig, generate};
use sus_client::query::{Order, build};
use sus_client::{Client, ReadFrom};
use sus_proto::v1::QuerySpec;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value = "target/release/sus-node")]
    node_bin: PathBuf,
    #[arg(long, default_value = "refdata")]
    refdata: PathBuf,
    /// Where generated files are kept (reused when present with the same rows and seed).
    #[arg(long, default_value = "/tmp/sus-bench-query")]
    work: PathBuf,
    #[arg(long, default_value_t = 5)]
    reps: usize,
    #[arg(long, default_value_t = 8)]
    shards: u32,
    /// Concurrent submission lanes.
    #[arg(long, default_value_t = 4)]
    lanes: usize,
}

struct Run {
    rows: u64,
    secs: Vec<f64>,
}

impl Run {
    fn median(&self) -> f64 {
        let mut s = self.secs.clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    }

    fn line(&self, what: &str, cluster: &str) -> String {
        let min = self.secs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.secs.iter().copied().fold(0.0, f64::max);
        format!(
            "| {what} | {cluster} | {} | {:.1} ({:.1}-{:.1}) | {:.1} M |",
            self.rows,
            self.median() * 1e3,
            min * 1e3,
            max * 1e3,
            self.rows as f64 / self.median() / 1e6
        )
    }
}

fn q1(dataset: &str) -> QuerySpec {
    QuerySpec {
        dataset: dataset.into(),
        group_by: vec!["provider_code".into(), "activity_month".into()],
        aggregates: vec![build::sum("price")],
        ..QuerySpec::default()
    }
}

/// One provider, one quarter, by treatment function: selective, pruned by partition.
fn q_filtered(provider: &str) -> QuerySpec {
    QuerySpec {
        dataset: "op".into(),
        filters: vec![
            build::eq("provider_code", provider),
            build::range("activity_date", "2024-04-01", "2024-06-30"),
        ],
        group_by: vec!["treatment_function_code".into()],
        aggregates: vec![build::count(), build::sum("price")],
        order: vec![Order {
            column: "sum_price".into(),
            descending: true,
        }],
        ..QuerySpec::default()
    }
}

async fn time(client: &Client, specs: &[QuerySpec], reps: usize) -> Result<Run> {
    let mut rows = 0;
    for s in specs {
        rows += client.aggregate(s, ReadFrom::Leader).await?.rows_scanned;
    }
    let mut secs = Vec::new();
    for _ in 0..reps {
        let started = Instant::now();
        for s in specs {
            client.aggregate(s, ReadFrom::Leader).await?;
        }
        secs.push(started.elapsed().as_secs_f64());
    }
    Ok(Run { rows, secs })
}

fn sender_of(file: &Path) -> Result<String> {
    let mut meta = file.as_os_str().to_owned();
    meta.push(".meta.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta)?)?;
    Ok(v["sender"].as_str().unwrap_or_default().to_string())
}

/// Submits every file: one lane per sender (in file order), `lanes` lanes at a time.
async fn ingest(client: &Client, files: &[PathBuf], lanes: usize) -> Result<f64> {
    let mut by_sender: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        by_sender.entry(sender_of(f)?).or_default().push(f.clone());
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(lanes));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (_, files) in by_sender {
        let client = client.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire().await?;
            for f in files {
                client
                    .submit_file(&f)
                    .await
                    .with_context(|| f.display().to_string())?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.node_bin.exists() {
        bail!(
            "{} not found: cargo build --release -p sus-node",
            args.node_bin.display()
        );
    }
    let gen_dir = args.work.join(format!("gen-{}-{}", args.rows, args.seed));
    let expected_path = gen_dir.join("expected.json");
    if !expected_path.exists() {
        let started = Instant::now();
        generate(
            &GenConfig {
                rows: args.rows,
                seed: args.seed,
                refdata_dir: args.refdata.clone(),
                out_dir: gen_dir.clone(),
                ..GenConfig::default()
            },
            &mut |_| {},
        )?;
        eprintln!("generated in {:.0}s", started.elapsed().as_secs_f64());
    }
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(&expected_path)?)?;
    let live = expected["all"]["live_records"].as_u64().unwrap_or(0);
    let pence = expected["all"]["total_price_pence"].as_i64().unwrap_or(0);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&gen_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|x| x == "csv"));
    files.sort();
    // The busiest outpatient provider, for the selective query.
    let provider = expected["providers"]
        .as_object()
        .and_then(|m| {
            m.iter()
                .max_by_key(|(_, v)| v["op"]["live_records"].as_u64().unwrap_or(0))
                .map(|(k, _)| k.clone())
        })
        .unwrap_or_default();
    println!(
        "data: {} files, {live} live records (seed {}), selective query provider {provider}",
        files.len(),
        args.seed
    );

    let mut lines = Vec::new();
    let mut q1_rate = BTreeMap::new();
    for nodes in [1u64, 3] {
        let options = NodeOptions {
            snapshot_after: 100_000,
            commit_timeout_ms: 120_000,
            ..NodeOptions::default()
        };
        let mut cluster = TestCluster::start(
            &args.node_bin,
            &args.refdata,
            nodes,
            args.shards,
            1,
            options,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        let ids: Vec<u64> = (1..=nodes).collect();
        let client = cluster.client_with(
            &ids,
            sus_client::RetryPolicy {
                retry_for: Duration::from_secs(600),
                attempt_timeout: Duration::from_secs(600),
            },
        );
        let secs = ingest(&client, &files, args.lanes).await?;
        let name = format!("{nodes}-node");
        println!(
            "{name}: ingested in {secs:.0}s ({:.0} records/s)",
            live as f64 / secs
        );
        let mut got = (0u64, 0i64);
        for ds in ["apc", "op", "ec"] {
            let r = client
                .aggregate(
                    &QuerySpec {
                        dataset: ds.into(),
                        aggregates: vec![build::count(), build::sum("price")],
                        ..QuerySpec::default()
                    },
                    ReadFrom::Leader,
                )
                .await?;
            use arrow::array::AsArray;
            let col = |c: usize| {
                r.batch
                    .column(c)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .value(0)
            };
            got.0 += col(0) as u64;
            got.1 += col(1);
        }
        if got != (live, pence) {
            bail!("{name}: totals {got:?} differ from the generator's ({live}, {pence})");
        }
        let started = Instant::now();
        let c = client.compact(0).await?;
        println!(
            "{name}: compacted {} segments into {} in {:.0}s",
            c.segments_before,
            c.segments_after,
            started.elapsed().as_secs_f64()
        );
        let q1s: Vec<QuerySpec> = ["apc", "op", "ec"].iter().map(|d| q1(d)).collect();
        // Warm: recently written and compacted segments are in memory (up to 64 MiB a store).
        let run = time(&client, &q1s, args.reps).await?;
        lines.push(run.line("Q1 sum(price) by provider, month (3 datasets), warm", &name));
        let run = time(&client, &[q_filtered(&provider)], args.reps).await?;
        lines.push(run.line("one provider, one quarter, by TFC (op), warm", &name));
        // After a restart nothing is in memory: every segment is read from Parquet (the OS
        // page cache is warm after the first run).
        for id in 1..=nodes {
            cluster.kill(id).await;
            cluster.restart(id).await.map_err(anyhow::Error::msg)?;
        }
        cluster
            .wait_for(
                "leaders after restart",
                Duration::from_secs(120),
                async |c| c.all_shards_led().await,
            )
            .await
            .map_err(anyhow::Error::msg)?;
        let run = time(&client, &q1s, args.reps).await?;
        q1_rate.insert(nodes, run.rows as f64 / run.median());
        lines.push(run.line(
            "Q1 sum(price) by provider, month (3 datasets), Parquet",
            &name,
        ));
        let run = time(&client, &[q_filtered(&provider)], args.reps).await?;
        lines.push(run.line("one provider, one quarter, by TFC (op), Parquet", &name));
        drop(cluster);
    }
    println!();
    println!("| query | cluster | rows scanned | median ms (min-max) | rows/s |");
    println!("|---|---|---|---|---|");
    for l in lines {
        println!("{l}");
    }
    println!();
    println!(
        "Q1 (Parquet) 3-node / 1-node rows/s: {:.2}",
        q1_rate.get(&3).copied().unwrap_or(0.0) / q1_rate.get(&1).copied().unwrap_or(1.0)
    );
    Ok(())
}
