//! The main job on an embedded default: generate a realistic synthetic data set, ingest it into a
//! local node (validation, HRG grouping, tariff pricing, Parquet segments), restart the node from
//! disk, and print a priced activity report checked against the generator's independent totals.
//!
//! `cargo run --release -p sus-node --example demo -- --help`

use anyhow::{Context, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;
use sus_client::generator::{GenConfig, generate};
use sus_node::ingest::files::read_submission;
use sus_node::ingest::local::{LocalConfig, LocalStore};
use sus_node::model::Dataset;
use sus_node::report::Outcome;
use sus_node::store::totals::{Totals, summarise};

#[derive(Parser)]
#[command(about = "Generate, ingest, restart and report on a local sus-cluster node")]
struct Args {
    /// Original activity records to generate (all three datasets, mixed).
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// Generator seed: the same seed gives the same data and the same report.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Working directory (recreated on every run).
    #[arg(long, default_value = ".sus-demo")]
    dir: PathBuf,
    /// Reference data folder.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../refdata"))]
    refdata: PathBuf,
}

const MARKER: &str = "SUS-DEMO-DIR";

fn pounds(pence: i64) -> String {
    let (sign, p) = if pence < 0 {
        ("-", -pence)
    } else {
        ("", pence)
    };
    let mut whole = (p / 100).to_string();
    let mut grouped = String::new();
    while whole.len() > 3 {
        let tail = whole.split_off(whole.len() - 3);
        grouped = format!(",{tail}{grouped}");
    }
    format!("{sign}£{whole}{grouped}.{:02}", p % 100)
}

fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            bail!(
                "{} exists and is not a demo directory; choose another --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "created by the sus-node demo; safe to delete\n",
    )?;
    Ok(())
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what:<10} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    fresh_dir(&args.dir)?;
    let gen_dir = args.dir.join("submissions");

    println!(
        "1/4 generating {} synthetic records (seed {})",
        args.rows, args.seed
    );
    let progress = bar(args.rows, "generate");
    let summary = generate(
        &GenConfig {
            rows: args.rows,
            seed: args.seed,
            refdata_dir: args.refdata.clone(),
            out_dir: gen_dir.clone(),
            reject_files: true,
            ..GenConfig::default()
        },
        &mut |p| {
            progress.set_length(p.rows_total);
            progress.set_position(p.rows_done);
        },
    )
    .context("generating the data set")?;
    progress.finish_and_clear();
    let expected = summary.expected;
    println!(
        "    {} submission files, {} rows, in {}",
        summary.files,
        summary.rows_written,
        gen_dir.display()
    );

    let config = LocalConfig {
        data_dir: args.dir.join("node"),
        refdata_dir: args.refdata.clone(),
        grouper_output: None,
    };
    println!("2/4 ingesting into a node at {}", config.data_dir.display());
    let node = LocalStore::open(&config).context("opening the node")?;
    let progress = bar(expected.submissions.len() as u64, "ingest");
    let started = Instant::now();
    let (mut records, mut rejected) = (0u64, Vec::new());
    for s in &expected.submissions {
        let (meta, bytes) = read_submission(&gen_dir.join(&s.file))?;
        let report = node.submit(&meta, &s.file, &bytes)?;
        records += report.records;
        if report.outcome == Outcome::Rejected && !report.resent {
            rejected.push(report);
        }
        progress.inc(1);
        progress.set_message(format!("{records} records"));
    }
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "    {} submissions ({records} records) in {secs:.1}s: {:.0} records/s; {} rejected, e.g.:",
        expected.submissions.len(),
        records as f64 / secs,
        rejected.len()
    );
    for report in rejected.iter().take(4) {
        if let Some(r) = &report.rejection {
            println!("    {}: {}", report.file, r.summary());
        }
    }
    drop(node);

    println!("3/4 restarting the node from disk");
    let node = LocalStore::open(&config).context("reopening the node")?;

    println!(
        "4/4 priced activity (sample tariff; live records after replacements and deletions)\n"
    );
    println!(
        "{:<8} {:>10} {:>20} {:>18} {:>10} {:>10} {:>10} {:>8}",
        "dataset",
        "records",
        "price",
        "excess payment",
        "bed days",
        "excluded",
        "warnings",
        "matches"
    );
    let mut all_match = true;
    let mut by_provider: Vec<(String, Totals)> = Vec::new();
    let (mut bytes, mut live) = (0u64, 0u64);
    for ds in Dataset::ALL {
        let got = summarise(node.store(), ds)?;
        let t = got.totals;
        let want = expected
            .datasets
            .get(ds.name())
            .copied()
            .unwrap_or_default();
        let matches = (
            t.live_records,
            t.price,
            t.excess_payment,
            t.excluded,
            t.with_warnings,
        ) == (
            want.live_records,
            want.total_price_pence,
            want.total_excess_payment_pence,
            want.excluded_records,
            want.records_with_warnings,
        );
        all_match &= matches;
        println!(
            "{:<8} {:>10} {:>20} {:>18} {:>10} {:>10} {:>10} {:>8}",
            ds.name(),
            t.live_records,
            pounds(t.price),
            pounds(t.excess_payment),
            t.excess_bed_days,
            t.excluded,
            t.with_warnings,
            if matches { "yes" } else { "NO" }
        );
        for (p, pt) in got.providers {
            match by_provider.iter_mut().find(|(q, _)| *q == p) {
                Some((_, acc)) => {
                    acc.live_records += pt.live_records;
                    acc.price += pt.price;
                }
                None => by_provider.push((p, pt)),
            }
        }
        let stats = node.store().stats(ds)?;
        bytes += stats.segment_bytes;
        live += stats.live_records;
    }
    by_provider.sort_by_key(|(_, t)| std::cmp::Reverse(t.price));
    let names = sus_node::refdata::RefData::load(&args.refdata)?;
    println!("\ntop providers by price");
    for (p, t) in by_provider.iter().take(10) {
        let name = names
            .organisations()
            .provider(p)
            .map(|o| o.name.as_str())
            .unwrap_or("");
        println!(
            "  {p:<6} {name:<45} {:>10} records {:>20}",
            t.live_records,
            pounds(t.price)
        );
    }
    println!(
        "\nsegments on disk: {:.1} MB for {live} live records ({:.0} bytes/record, Parquet + zstd)",
        bytes as f64 / 1e6,
        bytes as f64 / live.max(1) as f64
    );
    println!(
        "totals {} the generator's independent computation ({})",
        if all_match { "match" } else { "DO NOT match" },
        gen_dir.join("expected.json").display()
    );
    println!(
        "inspect: cargo run --release -p sus-node -- --data-dir {} stats",
        config.data_dir.display()
    );
    if !all_match {
        bail!("the node's totals differ from the generator's");
    }
    Ok(())
}
