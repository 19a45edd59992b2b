//! What a node counts for Prometheus (`GET /metrics` on the HTTP port).
//!
//! The HTTP port has no authentication, so nothing here is about data: no sender, provider,
//! submission id or rule, only totals of this node's own work (submissions by outcome, records
//! applied per dataset, scans) and the health of its groups and peers.
//!
//! Counters are updated where the work happens (a shard leader's submissions, a node's scans,
//! a replica's snapshot installs); gauges (Raft groups from openraft's metrics, the audit log's
//! length from the applied meta state) are read when scraped, so they are never stale; peer
//! reachability is what the last check (every few seconds) saw.

use crate::report::{Outcome, SubmissionReport};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use sus_raft::Raft;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatasetLabel {
    pub dataset: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `accepted`, `rejected`, `resent` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    /// `meta` or `shard-N`.
    pub group: String,
}

/// What this node saw of a member on its last check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerView {
    pub addr: String,
    /// `None`: it answered; otherwise why it did not.
    pub problem: Option<String>,
}

/// A node's metrics.
pub struct Metrics {
    registry: Registry,
    ingest_records: Family<DatasetLabel, Counter>,
    submissions: Family<OutcomeLabel, Counter>,
    commit_seconds: Histogram,
    scan_rows: Counter,
    scan_seconds: Counter<f64, AtomicU64>,
    scans: Counter,
    snapshots_installed: Counter,
    audit_entries: Gauge,
    write_buffer_bytes: Gauge,
    audit_commits: Counter,
    audit_records: Counter,
    group_leader: Family<GroupLabel, Gauge>,
    group_applied: Family<GroupLabel, Gauge>,
    groups_led: Gauge,
    peer_up: Family<PeerLabel, Gauge>,
    peers: Mutex<BTreeMap<u64, PeerView>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            ingest_records: Family::default(),
            submissions: Family::default(),
            // 1 ms to about 33 s.
            commit_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16),
            ),
            scan_rows: Counter::default(),
            scan_seconds: Counter::default(),
            scans: Counter::default(),
            snapshots_installed: Counter::default(),
            audit_entries: Gauge::default(),
            write_buffer_bytes: Gauge::default(),
            audit_commits: Counter::default(),
            audit_records: Counter::default(),
            group_leader: Family::default(),
            group_applied: Family::default(),
            groups_led: Gauge::default(),
            peer_up: Family::default(),
            peers: Mutex::default(),
            registry: Registry::with_prefix("sus"),
        };
        m.registry.register(
            "ingest_records",
            "Records of accepted submissions applied by this node as shard leader",
            m.ingest_records.clone(),
        );
        m.registry.register(
            "submissions",
            "Submissions answered by this node as shard leader, by outcome",
            m.submissions.clone(),
        );
        m.registry.register(
            "commit_seconds",
            "From proposing a submission to its commit and apply on this leader",
            m.commit_seconds.clone(),
        );
        m.registry.register(
            "scan_rows",
            "Rows read by aggregate scans on this node (rate / rate of scan_seconds = rows/s)",
            m.scan_rows.clone(),
        );
        m.registry.register(
            "scan_seconds",
            "Wall time of aggregate scans on this node",
            m.scan_seconds.clone(),
        );
        m.registry
            .register("scans", "Aggregate scans run on this node", m.scans.clone());
        m.registry.register(
            "snapshot_installs",
            "Shard snapshots received and installed by this node",
            m.snapshots_installed.clone(),
        );
        m.registry.register(
            "write_buffer_bytes",
            "Bytes of applied rows this node's shard replicas hold in memory, not yet in segment \
             files (the Raft logs hold them durably)",
            m.write_buffer_bytes.clone(),
        );
        m.registry.register(
            "audit_entries",
            "Entries of the cluster's audit log as this node has applied it",
            m.audit_entries.clone(),
        );
        m.registry.register(
            "audit_commits",
            "Audit entries this node had the meta group commit (each carries the records of every \
             call that gathered meanwhile), successful or not",
            m.audit_commits.clone(),
        );
        m.registry.register(
            "audit_records",
            "Audit records this node's calls handed to the meta group (audit_records / \
             audit_commits: records per commit)",
            m.audit_records.clone(),
        );
        m.registry.register(
            "group_leader",
            "The node id this node sees leading each hosted Raft group (0: none)",
            m.group_leader.clone(),
        );
        m.registry.register(
            "group_applied_index",
            "Last log index applied by this node's replica of each group",
            m.group_applied.clone(),
        );
        m.registry.register(
            "groups_led",
            "Raft groups this node leads",
            m.groups_led.clone(),
        );
        m.registry.register(
            "peer_up",
            "1 if the member answered this node's last check, 0 if not (the log says why)",
            m.peer_up.clone(),
        );
        m
    }

    /// What the last reachability check saw of each other member.
    pub fn set_peers(&self, peers: BTreeMap<u64, PeerView>) {
        self.peer_up.clear();
        for (id, view) in &peers {
            self.peer_up
                .get_or_create(&PeerLabel {
                    peer: id.to_string(),
                })
                .set(i64::from(view.problem.is_none()));
        }
        *self.peers.lock().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    pub fn peers(&self) -> BTreeMap<u64, PeerView> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A submission answered by this node as its shard's leader.
    pub fn submission(&self, report: &SubmissionReport, commit: Option<Duration>) {
        let outcome = match (report.resent, &report.outcome) {
            (true, _) => "resent",
            (false, Outcome::Accepted) => "accepted",
            (false, Outcome::Rejected) => "rejected",
        };
        self.submissions
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        if outcome == "accepted" {
            self.ingest_records
                .get_or_create(&DatasetLabel {
                    dataset: report.dataset.name().into(),
                })
                .inc_by(report.records);
        }
        if let Some(d) = commit {
            self.commit_seconds.observe(d.as_secs_f64());
        }
    }

    /// A submission whose commit failed here (timeout, lost leadership, storage).
    pub fn submission_failed(&self) {
        self.submissions
            .get_or_create(&OutcomeLabel {
                outcome: "failed".into(),
            })
            .inc();
    }

    /// One audit commit of `records` records.
    pub fn audit_commit(&self, records: usize) {
        self.audit_commits.inc();
        self.audit_records.inc_by(records as u64);
    }

    pub fn scan(&self, rows: u64, took: Duration) {
        self.scans.inc();
        self.scan_rows.inc_by(rows);
        self.scan_seconds.inc_by(took.as_secs_f64());
    }

    pub fn snapshot_installed(&self) {
        self.snapshots_installed.inc();
    }

    /// The Prometheus text exposition of every metric, group gauges read now from `cluster`.
    /// The exposition text, with the gauges of `groups` (by name) read now: `node` is this
    /// node's id, `audited` the audit log's length, `buffered` the write buffer's bytes.
    pub fn encode(
        &self,
        node: u64,
        groups: &[(String, Raft)],
        audited: usize,
        buffered: u64,
    ) -> String {
        self.group_leader.clear();
        self.group_applied.clear();
        let mut led = 0;
        for (name, raft) in groups {
            let m = raft.metrics().borrow().clone();
            let label = GroupLabel {
                group: name.clone(),
            };
            let leader = m.current_leader.unwrap_or(0);
            led += i64::from(leader == node);
            self.group_leader
                .get_or_create(&label)
                .set(i64::try_from(leader).unwrap_or(i64::MAX));
            self.group_applied
                .get_or_create(&label)
                .set(m.last_applied.map(|l| l.index as i64).unwrap_or(0));
        }
        self.groups_led.set(led);
        self.audit_entries
            .set(i64::try_from(audited).unwrap_or(i64::MAX));
        self.write_buffer_bytes
            .set(i64::try_from(buffered).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
