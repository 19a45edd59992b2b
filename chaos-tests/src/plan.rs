//! The workload's data and the states it may leave: generated submission files and, from the
//! generator's independent oracle, what each sender's records must total after each of its files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use sus_client::generator::oracle::ProviderTotals;
use sus_client::generator::{Expected, GenConfig, SubmissionOutcome, generate};

/// One sender's records of one dataset: submissions to it are applied in the order sent, each
/// atomically, on one shard.
pub type Stream = (String, String);

/// A stream's totals by provider (providers with no live records left out).
pub type State = BTreeMap<String, ProviderTotals>;

/// One submission file and where it stands in its stream.
#[derive(Debug, Clone)]
pub struct PlannedFile {
    pub path: PathBuf,
    pub expected: SubmissionOutcome,
    pub stream: Stream,
    /// 1-based position in the stream: the stream is in state `states[pos]` once it is applied.
    pub pos: usize,
}

/// The workload's files, by sender, and the states of every stream.
#[derive(Debug, Clone)]
pub struct Plan {
    pub files: Vec<PlannedFile>,
    /// sender → indexes into `files`, in submission order.
    pub senders: BTreeMap<String, Vec<usize>>,
    /// stream → its states: `[0]` before any file, `[k]` after its k-th file.
    pub states: BTreeMap<Stream, Vec<State>>,
    /// provider → sender.
    pub sender_of: BTreeMap<String, String>,
    pub expected: Expected,
}

/// The shape of a generated workload.
#[derive(Debug, Clone, Copy)]
pub struct PlanConfig {
    pub rows: u64,
    pub rows_per_file: u64,
    pub seed: u64,
}

impl Plan {
    /// Generates the workload's files under `dir` (Net Change and Bulk Replacement submissions,
    /// with replacements and deletions) and derives every stream's states.
    pub fn generate(refdata: &Path, dir: &Path, cfg: PlanConfig) -> Result<Plan, String> {
        let summary = generate(
            &GenConfig {
                rows: cfg.rows,
                seed: cfg.seed,
                refdata_dir: refdata.to_path_buf(),
                out_dir: dir.to_path_buf(),
                bulk_share: 0.15,
                replace_share: 0.1,
                delete_share: 0.05,
                rows_per_file: cfg.rows_per_file,
                ..GenConfig::default()
            },
            &mut |_| {},
        )
        .map_err(|e| format!("generating the workload: {e}"))?;
        let expected = summary.expected;
        let mut files = Vec::new();
        let mut senders: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut states: BTreeMap<Stream, Vec<State>> = BTreeMap::new();
        for o in &expected.submissions {
            let stream = (o.sender.clone(), o.dataset.clone());
            let s = states
                .entry(stream.clone())
                .or_insert_with(|| vec![State::new()]);
            s.push(o.sender_after.clone());
            senders
                .entry(o.sender.clone())
                .or_default()
                .push(files.len());
            files.push(PlannedFile {
                path: dir.join(&o.file),
                expected: o.clone(),
                pos: s.len() - 1,
                stream,
            });
        }
        Ok(Plan {
            files,
            senders,
            states,
            sender_of: expected.sender_of.clone(),
            expected,
        })
    }

    /// The observed state of every stream of `dataset`, from (provider, count, price) rows.
    pub fn observed(&self, dataset: &str, rows: &[(String, u64, i64)]) -> BTreeMap<Stream, State> {
        let mut out: BTreeMap<Stream, State> = BTreeMap::new();
        for (provider, count, price) in rows {
            if *count == 0 {
                continue;
            }
            let sender = self
                .sender_of
                .get(provider)
                .cloned()
                .unwrap_or_else(|| format!("(no sender for {provider})"));
            out.entry((sender, dataset.to_string()))
                .or_default()
                .insert(
                    provider.clone(),
                    ProviderTotals {
                        live_records: *count,
                        total_price_pence: *price,
                    },
                );
        }
        out
    }

    /// The datasets the workload writes.
    pub fn datasets(&self) -> Vec<String> {
        let mut d: Vec<String> = self.states.keys().map(|(_, d)| d.clone()).collect();
        d.dedup();
        d.sort();
        d.dedup();
        d
    }
}
