//! `sus gen` and `sus submit`: synthetic submissions and sending them to a cluster.

use crate::{EndpointArgs, pounds};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use sus_client::generator::{self, Dataset, GenConfig};

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Submission files (CSV or Parquet), each with FILE.meta.json beside it.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print only rejections and the final summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DatasetArg {
    Apc,
    Op,
    Ec,
    All,
}

#[derive(Debug, Args)]
pub struct GenArgs {
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
    /// Share of APC spells whose last episode is sent in a later file (the spell is finished,
    /// and priced again over the episodes stored earlier, when it arrives).
    #[arg(long, default_value_t = 0.0)]
    split_spell_share: f64,
    /// Most records in one file.
    #[arg(long, default_value_t = 50_000)]
    rows_per_file: u64,
    /// Also write whole-submission-rejected files (bad date, unknown provider, ...).
    #[arg(long)]
    reject_files: bool,
    /// Also write oracle/live.csv: every record live at the end with its derived fields.
    #[arg(long)]
    live_rows: bool,
}

pub fn run_gen(a: GenArgs) -> sus_client::Result<()> {
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
        split_spell_share: a.split_spell_share,
        keep_history: false,
        rows_per_file: a.rows_per_file,
        reject_files: a.reject_files,
        write_live: a.live_rows,
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

pub async fn run_submit(a: SubmitArgs) -> sus_client::Result<ExitCode> {
    let client = a.endpoint.client()?;
    let started = std::time::Instant::now();
    let bar = ProgressBar::new(a.files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} files {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // A bar drawn on no terminal drops its println lines: reports then go straight to stdout.
    let say = |line: String| {
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    };
    let (mut accepted, mut rejected, mut records) = (0u64, 0u64, 0u64);
    for file in &a.files {
        let outcome = client
            .submit_file(file)
            .await
            .inspect_err(|_| bar.abandon())?;
        let r = &outcome.report;
        let id = &r.submission_id;
        if outcome.accepted {
            accepted += 1;
            records += r.records;
            if !a.quiet {
                say(format!(
                    "{}: accepted{} as version {} of shard {} ({} records: {} inserted, {} replaced, {} deleted, {} stale)",
                    id,
                    if r.resent { " (resent)" } else { "" },
                    outcome.version().unwrap_or(0),
                    outcome.shard,
                    r.records,
                    r.inserted,
                    r.replaced,
                    r.deleted,
                    r.stale
                ));
            }
        } else {
            rejected += 1;
            let first = r
                .rejection
                .as_ref()
                .and_then(|rejection| rejection.issues.first());
            say(format!(
                "{}: REJECTED ({}): {}",
                id,
                file.display(),
                first.map_or("see report", |f| f.message.as_str())
            ));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} submissions: {accepted} accepted ({records} records), {rejected} rejected in {secs:.1}s ({:.0} records/s)",
        a.files.len(),
        records as f64 / secs.max(1e-9)
    );
    Ok(if rejected > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
