//! Benchmarks for sus-cluster: criterion micro benchmarks (`benches/`), the side-by-side harness
//! against peer engines (`side-by-side`, driven by `benches/run`) and the replication figures
//! (`replication`). This library holds what the harnesses share: generated data, ingest through
//! a cluster, timings, and canonical result rows that engines are compared on.

pub mod peers;
pub mod queries;

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use sus_client::Client;
use sus_client::generator::{GenConfig, generate};

/// Generated submission files and what the generator's oracle expects of them.
pub struct Data {
    pub dir: PathBuf,
    /// Submission files, in submission order.
    pub files: Vec<PathBuf>,
    /// `expected.json`.
    pub expected: serde_json::Value,
}

impl Data {
    /// Generates `rows` records with `seed` under `work` (kept and reused for the same rows and
    /// seed: a 50 M-row set takes minutes).
    pub fn generate(work: &Path, rows: u64, seed: u64, refdata: &Path) -> Result<Data> {
        let dir = work.join(format!("gen-{rows}-{seed}"));
        let expected_path = dir.join("expected.json");
        if !expected_path.exists() {
            let started = Instant::now();
            eprintln!(
                "generating {rows} records (seed {seed}) into {}",
                dir.display()
            );
            generate(
                &GenConfig {
                    rows,
                    seed,
                    refdata_dir: refdata.to_path_buf(),
                    out_dir: dir.clone(),
                    ..GenConfig::default()
                },
                &mut |_| {},
            )?;
            eprintln!("generated in {:.0} s", started.elapsed().as_secs_f64());
        }
        let expected: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&expected_path).with_context(|| expected_path.display().to_string())?,
        )?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        files.retain(|p| p.extension().is_some_and(|x| x == "csv"));
        files.sort();
        Ok(Data {
            dir,
            files,
            expected,
        })
    }

    /// Live records and their price total (pence) the store must hold at the end.
    pub fn totals(&self) -> (u64, i64) {
        (
            self.expected["all"]["live_records"].as_u64().unwrap_or(0),
            self.expected["all"]["total_price_pence"]
                .as_i64()
                .unwrap_or(0),
        )
    }

    /// Records in all submission files (accepted or not).
    pub fn rows_written(&self) -> u64 {
        self.expected["rows_written"].as_u64().unwrap_or(0)
    }

    /// The provider with the most live records of `dataset`.
    pub fn busiest_provider(&self, dataset: &str) -> String {
        self.expected["providers"]
            .as_object()
            .and_then(|m| {
                m.iter()
                    .max_by_key(|(_, v)| v[dataset]["live_records"].as_u64().unwrap_or(0))
                    .map(|(k, _)| k.clone())
            })
            .unwrap_or_default()
    }
}

fn sender_of(file: &Path) -> Result<String> {
    let mut meta = file.as_os_str().to_owned();
    meta.push(".meta.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta)?)?;
    Ok(v["sender"].as_str().unwrap_or_default().to_string())
}

/// Submits every file, one lane per sender (its files in order), `lanes` lanes at a time;
/// returns the seconds taken and the records accepted.
pub async fn ingest(client: &Client, files: &[PathBuf], lanes: usize) -> Result<(f64, u64)> {
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
            let mut records = 0u64;
            for f in files {
                let outcome = client
                    .submit_file(&f)
                    .await
                    .with_context(|| f.display().to_string())?;
                if outcome.accepted {
                    records += outcome.report.records;
                }
            }
            anyhow::Ok(records)
        });
    }
    let mut records = 0;
    while let Some(r) = tasks.join_next().await {
        records += r??;
    }
    Ok((started.elapsed().as_secs_f64(), records))
}

/// Repeated timings of one thing, in seconds.
#[derive(Debug, Clone, Default)]
pub struct Timings(pub Vec<f64>);

impl Timings {
    pub fn median(&self) -> f64 {
        percentile(&self.0, 0.5)
    }
    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }
    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(0.0, f64::max)
    }
}

/// The `p` quantile (nearest rank) of `values`; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A result row as engines are compared on it: group keys (text or null), then integers.
pub type Row = Vec<serde_json::Value>;

/// Sorts rows by their keys, null first (the order `peers.py` gives).
pub fn sort_rows(rows: &mut [Row], keys: usize) {
    let key = |r: &Row| -> Vec<(u8, String)> {
        r[..keys]
            .iter()
            .map(|v| match v.as_str() {
                Some(s) => (1, s.to_string()),
                None => (0, String::new()),
            })
            .collect()
    };
    rows.sort_by_key(key);
}

/// The first difference between two canonical results, if any.
pub fn first_difference(a: &[Row], b: &[Row]) -> Option<String> {
    if let Some((i, (x, y))) = a.iter().zip(b).enumerate().find(|(_, (x, y))| x != y) {
        return Some(format!("row {i}: {x:?} vs {y:?}"));
    }
    (a.len() != b.len()).then(|| format!("{} rows vs {}", a.len(), b.len()))
}
