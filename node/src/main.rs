//! `sus-node`: run a node's operations from the command line.
//!
//! Today a node is one process over one data directory; `ingest` applies submission files to it
//! exactly as the server will (issue #3 adds `serve` and replication).

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use sus_node::ingest::files::read_submission;
use sus_node::model::Dataset;
use sus_node::node::{Node, NodeConfig};
use sus_node::report::Outcome;

#[derive(Parser)]
#[command(name = "sus-node", version, about = "A sus-cluster node")]
struct Cli {
    /// Data directory (catalog and segments); created if absent.
    #[arg(long, env = "SUS_DATA_DIR", default_value = "sus-data", global = true)]
    data_dir: PathBuf,
    /// Reference data folder (see refdata/README.md).
    #[arg(long, env = "SUS_REFDATA", default_value = "refdata", global = true)]
    refdata: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate, price and store submission files, in the order given, printing each report.
    ///
    /// Each FILE (CSV or Parquet) needs an envelope FILE.meta.json beside it.
    /// Exit status: 0 all accepted, 3 some rejected, 1 the node failed.
    ///
    /// Example: sus-node ingest --data-dir /tmp/n1 /tmp/apc/*.csv
    Ingest {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print only rejections and the final summary.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print record counts, segments and bytes on disk per dataset.
    Stats,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sus-node: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let node = Node::open(&NodeConfig {
        data_dir: cli.data_dir.clone(),
        refdata_dir: cli.refdata.clone(),
    })
    .with_context(|| format!("opening the node at {}", cli.data_dir.display()))?;
    match cli.command {
        Command::Ingest { files, quiet } => {
            let started = Instant::now();
            let (mut accepted, mut rejected, mut records) = (0u64, 0u64, 0u64);
            for file in &files {
                let (meta, bytes) = read_submission(file)?;
                let name = file.display().to_string();
                let report = node
                    .submit(&meta, &name, &bytes)
                    .with_context(|| format!("submitting {name}"))?;
                match report.outcome {
                    Outcome::Accepted => {
                        accepted += 1;
                        records += report.records;
                        if !quiet {
                            print!("{report}");
                        }
                    }
                    Outcome::Rejected => {
                        rejected += 1;
                        print!("{report}");
                    }
                }
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{} submissions: {accepted} accepted ({records} records), {rejected} rejected in {secs:.1}s ({:.0} records/s)",
                files.len(),
                records as f64 / secs.max(1e-9)
            );
            Ok(if rejected > 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Stats => {
            println!("version {}", node.store().version()?);
            for ds in Dataset::ALL {
                let s = node.store().stats(ds)?;
                println!(
                    "{ds}: {} live records in {} segments, {} bytes ({:.1} bytes/record)",
                    s.live_records,
                    s.segments,
                    s.segment_bytes,
                    s.segment_bytes as f64 / (s.live_records.max(1)) as f64
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
