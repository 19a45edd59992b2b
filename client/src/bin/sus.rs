//! `sus`: the sus-cluster command line.

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use sus_client::generator::{self, Dataset, GenConfig};

#[derive(Debug, Parser)]
#[command(name = "sus", version, about = "sus-cluster command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate deterministic synthetic submissions and the oracle's expected totals.
    #[command(after_help = "\
Example:
  sus gen --dataset all --rows 1000000 --seed 42 --out /tmp/sus-gen --reject-files

Writes NNNN-<dataset>-<sender>-<nc|bulk>.csv files with .meta.json envelopes (submit them in NNNN
order) and expected.json: the live totals, per provider totals and per-submission outcomes the
cluster must report once every file is applied. SAMPLE PRICES - NOT THE NHS PAYMENT SCHEME.")]
    Gen(GenArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DatasetArg {
    Apc,
    Op,
    Ec,
    All,
}

#[derive(Debug, Args)]
struct GenArgs {
    /// Dataset to generate; `all` mixes the three (APC 20 %, OP 55 %, EC 25 %).
    #[arg(long, value_enum, default_value = "all")]
    dataset: DatasetArg,
    /// Original activity records to generate (corrections and re-sends come on top).
    #[arg(long, default_value_t = 10_000)]
    rows: u64,
    /// Random seed: the same seed and options give byte-identical output.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Reference data folder.
    #[arg(long, default_value = "refdata")]
    refdata: PathBuf,
    /// Share of records with a per-record defect (a warning, still stored).
    #[arg(long, default_value_t = 0.02)]
    invalid_share: f64,
    /// Share of submissions sent as Bulk Replacement.
    #[arg(long, default_value_t = 0.1)]
    bulk_share: f64,
    /// Share of records (APC: spells) re-sent later as replacements.
    #[arg(long, default_value_t = 0.05)]
    replace_share: f64,
    /// Share of records (APC: spells) deleted later.
    #[arg(long, default_value_t = 0.01)]
    delete_share: f64,
    /// Most records in one file.
    #[arg(long, default_value_t = 50_000)]
    rows_per_file: u64,
    /// Also write whole-submission-rejected files (bad date, unknown provider, ...).
    #[arg(long)]
    reject_files: bool,
}

fn pounds(pence: i64) -> String {
    let sign = if pence < 0 { "-" } else { "" };
    let p = pence.unsigned_abs();
    let whole = (p / 100).to_string();
    let mut grouped = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{sign}£{grouped}.{:02}", p % 100)
}

fn run_gen(a: GenArgs) -> sus_client::Result<()> {
    let cfg = GenConfig {
        dataset: match a.dataset {
            DatasetArg::Apc => Some(Dataset::Apc),
            DatasetArg::Op => Some(Dataset::Op),
            DatasetArg::Ec => Some(Dataset::Ec),
            DatasetArg::All => None,
        },
        rows: a.rows,
        seed: a.seed,
        refdata_dir: a.refdata,
        out_dir: a.out,
        invalid_share: a.invalid_share,
        bulk_share: a.bulk_share,
        replace_share: a.replace_share,
        delete_share: a.delete_share,
        rows_per_file: a.rows_per_file,
        reject_files: a.reject_files,
    };
    let bar = ProgressBar::new(cfg.rows);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rows, {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let summary = generator::generate(&cfg, &mut |p| {
        bar.set_length(p.rows_total);
        bar.set_position(p.rows_done);
        bar.set_message(format!("{} files", p.files));
    })?;
    bar.finish_and_clear();
    let e = &summary.expected;
    let rejected = e
        .submissions
        .iter()
        .filter(|s| s.outcome == "rejected")
        .count();
    println!(
        "wrote {} files ({} rejected by design), {} rows to {} in {:.1}s",
        summary.files,
        rejected,
        summary.rows_written,
        summary.out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<5} {:>10} {:>18} {:>18} {:>16} {:>9} {:>9}",
        "set", "live", "price", "base", "excess", "excluded", "warnings"
    );
    let mut rows: Vec<(&str, &generator::oracle::DatasetTotals)> =
        e.datasets.iter().map(|(k, v)| (k.as_str(), v)).collect();
    rows.push(("all", &e.all));
    for (name, t) in rows {
        println!(
            "{:<5} {:>10} {:>18} {:>18} {:>16} {:>9} {:>9}",
            name,
            t.live_records,
            pounds(t.total_price_pence),
            pounds(t.total_base_price_pence),
            pounds(t.total_excess_payment_pence),
            t.excluded_records,
            t.records_with_warnings
        );
    }
    println!(
        "expected totals: {}",
        summary.out_dir.join("expected.json").display()
    );
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gen(a) => run_gen(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sus: {e}");
            ExitCode::FAILURE
        }
    }
}
