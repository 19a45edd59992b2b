//! Concurrent submitters, linearizable readers and a freeze-point taker, and the history they
//! record for the checker.
//!
//! One submitter per sender sends that sender's files in order, resending a file whose outcome is
//! unknown under the same submission id (the cluster answers a resend with the first report) until
//! it hears an answer. Readers check every linearizable read against the streams' possible states
//! at once (invariants 2 and 5); the final checks are in [`crate::check`].

use crate::plan::{Plan, State, Stream};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sus_client::{Aggregation, Client, ReadFrom};

/// Totals read from the cluster: dataset → (provider, live records, price in pence).
pub type Totals = BTreeMap<String, Vec<(String, u64, i64)>>;

/// A broken promise, by the number of the invariant it breaks (see the crate documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: u8,
    pub detail: String,
}

/// What the workload did and saw.
#[derive(Debug, Default)]
pub struct History {
    /// stream → how many of its files are acknowledged (a prefix: each sender sends in order).
    pub acked: BTreeMap<Stream, usize>,
    /// stream → how many of its files have been sent at least once.
    pub started: BTreeMap<Stream, usize>,
    /// Submissions acknowledged (accepted or rejected as the oracle expects).
    pub acks: u64,
    /// Attempts that ended without an answer (resent).
    pub unknown: u64,
    /// Linearizable reads checked, and reads that failed under faults.
    pub reads: u64,
    pub read_errors: u64,
    /// Freeze points taken, with what was read at them then: dataset → (provider, count, price).
    pub freezes: Vec<(String, Totals)>,
    pub violations: Vec<Violation>,
}

impl History {
    pub fn violate(&mut self, invariant: u8, detail: String) {
        tracing::error!(invariant, %detail, "violation");
        self.violations.push(Violation { invariant, detail });
    }
}

/// The shared state of a running workload.
#[derive(Clone)]
pub struct Workload {
    pub plan: Arc<Plan>,
    pub history: Arc<Mutex<History>>,
    /// Set when submitters should finish their current file and stop.
    pub stop: Arc<AtomicBool>,
}

/// Reads every dataset's totals by provider: dataset → (provider, count, price).
pub async fn read_totals(
    client: &Client,
    datasets: &[String],
    freeze: Option<&str>,
    read: ReadFrom,
) -> sus_client::Result<Totals> {
    let mut out = BTreeMap::new();
    for d in datasets {
        let mut q = Aggregation::new(d)
            .group_by(["provider_code"])
            .count()
            .sum("price");
        if let Some(name) = freeze {
            q = q.freeze(name);
        }
        let result = client.aggregate(q, read).await?;
        out.insert(d.clone(), rows(&result.batch));
    }
    Ok(out)
}

fn rows(batch: &arrow::record_batch::RecordBatch) -> Vec<(String, u64, i64)> {
    use arrow::array::{Array, Int64Array, StringArray};
    let (Some(keys), Some(counts), Some(sums)) = (
        batch.column(0).as_any().downcast_ref::<StringArray>(),
        batch.column(1).as_any().downcast_ref::<Int64Array>(),
        batch.column(2).as_any().downcast_ref::<Int64Array>(),
    ) else {
        return Vec::new();
    };
    (0..batch.num_rows())
        .map(|i| {
            let sum = if sums.is_null(i) { 0 } else { sums.value(i) };
            (keys.value(i).to_string(), counts.value(i) as u64, sum)
        })
        .collect()
}

impl Workload {
    pub fn new(plan: Plan) -> Workload {
        Workload {
            plan: Arc::new(plan),
            history: Arc::new(Mutex::new(History::default())),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `sender`'s files in order, `gap` apart, until done or stopped. Once stopped, the
    /// file in flight is resent for up to `drain` and then left (its outcome unknown).
    pub async fn submitter(self, client: Client, sender: String, gap: Duration, drain: Duration) {
        let indexes = self.plan.senders[&sender].clone();
        for i in indexes {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let f = &self.plan.files[i];
            let (envelope, content) = match read_submission(&f.path) {
                Ok(x) => x,
                Err(e) => {
                    self.history().violate(0, format!("workload file: {e}"));
                    return;
                }
            };
            {
                let mut h = self.history();
                let s = h.started.entry(f.stream.clone()).or_default();
                *s = (*s).max(f.pos);
            }
            let mut stopped_at = None;
            loop {
                let name = f.expected.file.clone();
                match client.submit(&envelope, &name, content.clone()).await {
                    Ok(outcome) => {
                        let mut h = self.history();
                        check_report(&mut h, f, &outcome);
                        h.acks += 1;
                        let a = h.acked.entry(f.stream.clone()).or_default();
                        *a = (*a).max(f.pos);
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(file = %name, "outcome unknown: {e}");
                        self.history().unknown += 1;
                        if self.stop.load(Ordering::SeqCst) {
                            let since = *stopped_at.get_or_insert_with(tokio::time::Instant::now);
                            if since.elapsed() >= drain {
                                return;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            tokio::time::sleep(gap).await;
        }
    }

    /// Reads every stream's state with linearizable reads until stopped, checking each against
    /// the states the acknowledgements allow.
    pub async fn reader(self, client: Client, pause: Duration) {
        let datasets = self.plan.datasets();
        while !self.stop.load(Ordering::SeqCst) {
            let before = self.history().acked.clone();
            let read = read_totals(&client, &datasets, None, ReadFrom::Leader).await;
            let after = self.history().started.clone();
            match read {
                Ok(totals) => {
                    let mut h = self.history();
                    h.reads += 1;
                    for (dataset, rows) in &totals {
                        let observed = self.plan.observed(dataset, rows);
                        check_states(
                            &mut h, &self.plan, dataset, &observed, &before, &after, "read",
                        );
                    }
                }
                Err(e) => {
                    tracing::debug!("read failed: {e}");
                    self.history().read_errors += 1;
                }
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Takes a freeze point every `every` until stopped and reads it at once.
    pub async fn freezer(self, client: Client, every: Duration) {
        let datasets = self.plan.datasets();
        let mut n = 0;
        loop {
            tokio::time::sleep(every).await;
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            n += 1;
            let name = format!("chaos-{n}");
            let before = self.history().acked.clone();
            if let Err(e) = client.create_freeze(&name).await {
                tracing::debug!("freeze {name}: {e}");
                continue;
            }
            // Any replica that has the freeze point reads it the same.
            match read_totals(&client, &datasets, Some(&name), ReadFrom::AnyReplica).await {
                Ok(totals) => {
                    let after = self.history().started.clone();
                    let mut h = self.history();
                    for (dataset, rows) in &totals {
                        let observed = self.plan.observed(dataset, rows);
                        let what = format!("freeze point {name}");
                        check_states(
                            &mut h, &self.plan, dataset, &observed, &before, &after, &what,
                        );
                    }
                    h.freezes.push((name, totals));
                }
                Err(e) => tracing::debug!("reading freeze {name}: {e}"),
            }
        }
    }
}

/// A submission's report must be the oracle's: same outcome, same counts (a resend that was
/// applied twice, or a lost first application, shows here).
fn check_report(h: &mut History, f: &crate::plan::PlannedFile, o: &sus_client::SubmitOutcome) {
    let e = &f.expected;
    let accepted = e.outcome == "accepted";
    let r = &o.report;
    let counts = (r.inserted, r.replaced, r.deleted);
    if o.accepted != accepted {
        h.violate(
            1,
            format!(
                "{}: expected {}, the cluster said {}",
                e.file,
                e.outcome,
                if o.accepted { "accepted" } else { "rejected" }
            ),
        );
    } else if accepted && counts != (e.inserted, e.replaced, e.deleted) {
        h.violate(
            1,
            format!(
                "{}: report counts {:?} differ from the oracle's {:?}",
                e.file,
                counts,
                (e.inserted, e.replaced, e.deleted)
            ),
        );
    }
}

/// Checks observed stream states against those allowed between `before` (acknowledged when the
/// read began: invariant 5) and `after` (sent when it ended: anything else is a partial or
/// invented write, invariant 2).
pub fn check_states(
    h: &mut History,
    plan: &Plan,
    dataset: &str,
    observed: &BTreeMap<Stream, State>,
    before: &BTreeMap<Stream, usize>,
    after: &BTreeMap<Stream, usize>,
    what: &str,
) {
    let empty = State::new();
    for (stream, states) in plan.states.iter().filter(|(s, _)| s.1 == dataset) {
        let seen = observed.get(stream).unwrap_or(&empty);
        let lo = before.get(stream).copied().unwrap_or(0);
        let hi = after.get(stream).copied().unwrap_or(0).max(lo);
        if (lo..=hi).any(|k| &states[k] == seen) {
            continue;
        }
        if (0..lo).any(|k| &states[k] == seen) {
            h.violate(
                5,
                format!(
                    "{what}: {stream:?} is at an earlier state than its {lo} acknowledged submissions"
                ),
            );
        } else {
            h.violate(
                2,
                format!(
                    "{what}: {stream:?} holds {seen:?}, which no prefix of its submissions {lo}..={hi} explains"
                ),
            );
        }
    }
    for stream in observed.keys().filter(|s| !plan.states.contains_key(*s)) {
        h.violate(
            2,
            format!("{what}: records of {stream:?}, which nobody submitted"),
        );
    }
}

/// A submission file's envelope (JSON) and bytes.
fn read_submission(path: &std::path::Path) -> Result<(String, Vec<u8>), String> {
    let mut envelope = path.as_os_str().to_owned();
    envelope.push(".meta.json");
    let envelope = std::fs::read_to_string(&envelope).map_err(|e| format!("{envelope:?}: {e}"))?;
    let content = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((envelope, content))
}
