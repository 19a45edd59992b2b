//! `sus-chaos`: a chaos run on demand, with a seed and a duration.
//!
//! Example (ten minutes against containers, every fault kind):
//!   cargo build -p sus-node -p sus-chaos-tests && deploy/image/build.sh --profile debug --no-cargo --tag sus-node:chaos
//!   target/debug/sus-chaos --launcher docker --image sus-node:chaos --seed 7 --duration 600
//! Exit status: 0 no invariant violated, 2 violations (the report lists them), 1 the harness failed.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use sus_chaos_tests::cluster::Launcher;
use sus_chaos_tests::faults::FaultKind;
use sus_chaos_tests::run::{RunConfig, run, running_as_root};

#[derive(Parser)]
#[command(
    name = "sus-chaos",
    version,
    about = "Run sus nodes under injected faults and check the invariants"
)]
struct Args {
    /// Seed of the fault schedule and the generated data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of faults (the workload runs alongside; healing and checks follow).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// `process` (local processes) or `docker` (containers of --image; allows partitions).
    #[arg(long, default_value = "process")]
    launcher: String,
    /// The node image (docker launcher), built by deploy/image/build.sh.
    #[arg(long, default_value = "sus-node:chaos")]
    image: String,
    /// The sus-node binary (process launcher); default: beside this program.
    #[arg(long)]
    bin: Option<PathBuf>,
    #[arg(long, default_value = "refdata")]
    refdata: PathBuf,
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    #[arg(long, default_value_t = 3)]
    shards: u32,
    /// Original records generated (corrections and bulk replacements add more).
    #[arg(long, default_value_t = 20_000)]
    rows: u64,
    #[arg(long, default_value_t = 100)]
    rows_per_file: u64,
    /// Fault kinds, comma-separated (default: all the launcher allows):
    /// kill-leader, kill-follower, kill-all, pause, partition, restart, wipe-rejoin, disk-full.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Deliberate bugs to switch on in debug-built nodes, comma-separated: ack-before-commit,
    /// diverge, stale-read, freeze-drift, partial-apply (see node/src/broken.rs).
    #[arg(long, value_delimiter = ',')]
    broken: Vec<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("sus_chaos_tests=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let kinds: Result<Vec<FaultKind>, String> = if args.faults.is_empty() {
        Ok(FaultKind::ALL.to_vec())
    } else {
        args.faults
            .iter()
            .map(|f| FaultKind::parse(f).ok_or_else(|| format!("unknown fault kind '{f}'")))
            .collect()
    };
    let kinds = match kinds {
        Ok(k) => k,
        Err(e) => {
            eprintln!("sus-chaos: {e}");
            return ExitCode::from(1);
        }
    };
    let launcher = match args.launcher.as_str() {
        "process" => Launcher::Process,
        "docker" => Launcher::Docker { image: args.image },
        other => {
            eprintln!("sus-chaos: --launcher must be process or docker, not '{other}'");
            return ExitCode::from(1);
        }
    };
    let bin = args.bin.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("sus-node")))
            .unwrap_or_else(|| PathBuf::from("sus-node"))
    });
    let mut cfg = RunConfig::short(launcher, bin, args.refdata, args.seed);
    cfg.nodes = args.nodes;
    cfg.shards = args.shards;
    cfg.duration = Duration::from_secs(args.duration);
    cfg.plan.rows = args.rows;
    cfg.plan.rows_per_file = args.rows_per_file;
    cfg.kinds = kinds;
    cfg.broken = args.broken;
    if !running_as_root() {
        eprintln!("sus-chaos: not root: no disk-full faults (they mount a tmpfs per node)");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sus-chaos: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cfg)) {
        Ok(report) => {
            print!("{report}");
            for i in &report.injected {
                println!(
                    "  {:>7.1}s {:<13} node {}{} for {:.1}s",
                    i.at.as_secs_f64(),
                    i.kind.name(),
                    i.node,
                    i.replaced_by
                        .map(|n| format!(" (now node {n})"))
                        .unwrap_or_default(),
                    i.held.as_secs_f64()
                );
            }
            if report.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("sus-chaos: {e}");
            ExitCode::from(1)
        }
    }
}
