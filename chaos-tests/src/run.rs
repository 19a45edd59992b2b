//! One chaos run: start a cluster, run the workload under a fault schedule, heal, check.

use crate::cluster::{Launcher, NodeOptions, TestCluster};
use crate::faults::{FaultKind, Injected, Injector, ScheduleConfig};
use crate::plan::{Plan, PlanConfig};
use crate::workload::{Violation, Workload};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;
use sus_client::RetryPolicy;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub launcher: Launcher,
    /// The `sus-node` binary (process launcher).
    pub bin: PathBuf,
    pub refdata: PathBuf,
    pub nodes: u64,
    pub shards: u32,
    pub seed: u64,
    /// How long faults are injected (the workload runs alongside).
    pub duration: Duration,
    pub plan: PlanConfig,
    pub kinds: Vec<FaultKind>,
    pub gap_ms: (u64, u64),
    pub hold_ms: (u64, u64),
    /// Deliberate bugs to switch on in the nodes (`SUS_TEST_BROKEN`; builds with the `fault-injection` feature only, as the workspace tests build `sus-node`).
    pub broken: Vec<String>,
    /// Size of each node's tmpfs, for disk-full faults (needs root); `None`: no disk faults.
    pub disk_bytes: Option<u64>,
    /// Keep the cluster's logs and data when an invariant is violated.
    pub keep_on_violation: bool,
}

impl RunConfig {
    /// The short schedule CI runs: every fault kind the launcher allows, 30 s of faults.
    pub fn short(launcher: Launcher, bin: PathBuf, refdata: PathBuf, seed: u64) -> RunConfig {
        RunConfig {
            launcher,
            bin,
            refdata,
            nodes: 3,
            shards: 3,
            seed,
            duration: Duration::from_secs(30),
            plan: PlanConfig {
                rows: 3000,
                rows_per_file: 60,
                seed,
            },
            kinds: FaultKind::ALL.to_vec(),
            gap_ms: (500, 1500),
            hold_ms: (500, 2500),
            broken: Vec::new(),
            disk_bytes: running_as_root().then_some(256 << 20),
            keep_on_violation: true,
        }
    }
}

/// Whether this process runs as root (tmpfs mounts for disk faults need it).
pub fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// What a run did and found.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub launcher: String,
    pub elapsed: Duration,
    pub faults: BTreeMap<&'static str, u64>,
    pub injected: Vec<Injected>,
    pub files: usize,
    pub acks: u64,
    pub unknown: u64,
    pub reads: u64,
    pub read_errors: u64,
    pub freezes: usize,
    pub violations: Vec<Violation>,
    /// Where the cluster's logs and data were kept (when there were violations).
    pub kept: Option<PathBuf>,
}

impl Report {
    /// Invariant numbers violated, sorted and deduplicated.
    pub fn violated(&self) -> Vec<u8> {
        let mut v: Vec<u8> = self.violations.iter().map(|v| v.invariant).collect();
        v.sort();
        v.dedup();
        v
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "chaos run: seed {}, {} launcher, {:.0} s",
            self.seed,
            self.launcher,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  faults: {} ({})",
            self.injected.len(),
            self.faults
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            f,
            "  submissions: {} acknowledged of {} files, {} attempts without an answer (resent)",
            self.acks, self.files, self.unknown
        )?;
        writeln!(
            f,
            "  linearizable reads checked: {} ({} failed under faults); freeze points: {}",
            self.reads, self.read_errors, self.freezes
        )?;
        writeln!(f, "  invariant violations: {}", self.violations.len())?;
        for v in self.violations.iter().take(20) {
            writeln!(f, "    [{}] {}", v.invariant, v.detail)?;
        }
        if let Some(dir) = &self.kept {
            writeln!(f, "  cluster logs and data kept in {}", dir.display())?;
        }
        Ok(())
    }
}

/// Runs one chaos run to the end and reports (violations are in the report, not an error; an
/// error means the harness itself could not run).
pub async fn run(cfg: RunConfig) -> Result<Report, String> {
    let started = tokio::time::Instant::now();
    let options = NodeOptions {
        disk_bytes: cfg.disk_bytes,
        env: if cfg.broken.is_empty() {
            Vec::new()
        } else {
            vec![("SUS_TEST_BROKEN".into(), cfg.broken.join(","))]
        },
        commit_timeout_ms: 5_000,
        snapshot_after: 200,
        keep_after_snapshot: 50,
        ..NodeOptions::default()
    };
    let mut cluster = TestCluster::start_with(
        cfg.launcher.clone(),
        &cfg.bin,
        &cfg.refdata,
        cfg.nodes,
        cfg.shards,
        3,
        options,
    )
    .await?;
    let plan = Plan::generate(&cfg.refdata, &cluster.scratch(), cfg.plan)?;
    let files = plan.files.len();
    let most = plan
        .senders
        .values()
        .map(Vec::len)
        .max()
        .unwrap_or(1)
        .max(1);
    let gap = (cfg.duration / most as u32).clamp(Duration::from_millis(10), Duration::from_secs(2));
    let workload = Workload::new(plan);
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    let retry = RetryPolicy {
        retry_for: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(5),
    };
    let client = cluster.client_with(&ids, retry);
    let mut tasks = tokio::task::JoinSet::new();
    for sender in workload.plan.senders.keys() {
        let w = workload.clone();
        tasks.spawn(w.submitter(client.clone(), sender.clone(), gap, Duration::from_secs(30)));
    }
    for _ in 0..2 {
        tasks.spawn(
            workload
                .clone()
                .reader(client.clone(), Duration::from_millis(300)),
        );
    }
    let every = (cfg.duration / 8).max(Duration::from_secs(1));
    tasks.spawn(workload.clone().freezer(client.clone(), every));

    let mut injector = Injector::new(
        ScheduleConfig {
            seed: cfg.seed,
            kinds: cfg.kinds.clone(),
            gap_ms: cfg.gap_ms,
            hold_ms: cfg.hold_ms,
        },
        &cluster,
    );
    let mut harness_error = None;
    while started.elapsed() < cfg.duration {
        if let Err(e) = injector.step(&mut cluster, started).await {
            harness_error = Some(e);
            break;
        }
    }
    workload.stop.store(true, Ordering::SeqCst);
    while tasks.join_next().await.is_some() {}
    let mut history =
        std::mem::take(&mut *workload.history.lock().unwrap_or_else(|e| e.into_inner()));
    if let Some(e) = harness_error {
        history.violate(0, format!("the cluster did not recover from a fault: {e}"));
    } else {
        crate::check::after_healing(&cluster, &workload.plan, &mut history).await;
    }
    let kept = (cfg.keep_on_violation && !history.violations.is_empty()).then(|| cluster.keep());
    Ok(Report {
        seed: cfg.seed,
        launcher: match cfg.launcher {
            Launcher::Process => "process".into(),
            Launcher::Docker { .. } => "docker".into(),
        },
        elapsed: started.elapsed(),
        faults: injector.counts(),
        injected: injector.injected,
        files,
        acks: history.acks,
        unknown: history.unknown,
        reads: history.reads,
        read_errors: history.read_errors,
        freezes: history.freezes.len(),
        violations: history.violations,
        kept,
    })
}
