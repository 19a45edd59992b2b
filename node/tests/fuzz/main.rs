//! Fuzz targets on everything a client can send a node: submission files (CSV and Parquet)
//! through the whole ingest path, bearer tokens, Flight commands and tickets, and query specs
//! through the query engine. See `docs/security.md` ("Fuzzing") for how to run them longer.
//!
//! Each target runs for `SUS_FUZZ_SECONDS` (default 4) from `SUS_FUZZ_SEED`; `SUS_FUZZ_TARGETS`
//! (comma-separated names) picks some. The run prints, per target, the inputs tried, the CPU time
//! spent and what the inputs became; it fails on the first input that panics, breaks an
//! invariant, or takes over 20 s, printing the smallest such input and the seed.
//!
//! `cargo test --workspace --test fuzz -- --nocapture`
//! `SUS_FUZZ_SECONDS=600 cargo test --release --workspace --test fuzz -- --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod engine;
mod request;
mod submission;
mod token;

use engine::Budget;

#[test]
fn fuzz_targets() {
    let budget = Budget::from_env();
    let only: Option<Vec<String>> = std::env::var("SUS_FUZZ_TARGETS")
        .ok()
        .map(|s| s.split(',').map(|t| t.trim().to_string()).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|t| t == name));
    let seeds = submission::seeds();
    let mut reports = Vec::new();
    if wanted("csv_submission") {
        reports.push(submission::csv(&budget, &seeds));
    }
    if wanted("parquet_submission") {
        reports.push(submission::parquet(&budget, &seeds));
    }
    if wanted("token") {
        reports.push(token::run(&budget));
    }
    if wanted("flight_command") {
        reports.push(request::flight(&budget));
    }
    if wanted("query_spec") {
        reports.push(request::query(&budget, &seeds));
    }

    println!(
        "\nfuzz: seed {}, {:.0} s per target",
        budget.seed,
        budget.per_target.as_secs_f64()
    );
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>8}  outcome",
        "target", "inputs", "CPU s", "wall s", "crashes"
    );
    let mut failed = Vec::new();
    for r in &reports {
        println!(
            "{:<20} {:>9} {:>9.1} {:>9.1} {:>8}  {}",
            r.target,
            r.cases,
            r.cpu.as_secs_f64(),
            r.wall.as_secs_f64(),
            u8::from(r.failure.is_some()),
            if r.failure.is_some() { "FAILED" } else { "ok" }
        );
        for (what, n) in &r.tally.0 {
            println!("{:<20}   {n:>9}  {what}", "");
        }
        if let Some(f) = &r.failure {
            failed.push(format!("{}: {f}", r.target));
        }
    }
    let cpu: f64 = reports.iter().map(|r| r.cpu.as_secs_f64()).sum();
    let inputs: u64 = reports.iter().map(|r| r.cases).sum();
    println!(
        "total: {inputs} inputs, {:.1} CPU minutes, {} crashes",
        cpu / 60.0,
        failed.len()
    );
    assert!(reports.iter().all(|r| r.cases > 0), "a target ran no input");
    assert!(failed.is_empty(), "fuzz findings:\n{}", failed.join("\n"));
}
