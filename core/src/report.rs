//! The submission report: what a submitter gets back for every submission, accepted or rejected.

use crate::model::{Dataset, Issue, Protocol, Rule, SubmissionMeta};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Example record ids kept per warning rule.
pub const EXAMPLES_PER_RULE: usize = 3;

/// Accepted (with warnings) or rejected as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Accepted,
    Rejected,
}

/// Count and examples of one warning rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarningSummary {
    pub rule: Rule,
    pub count: u64,
    /// Up to [`EXAMPLES_PER_RULE`] `cds_unique_id`s, in file order.
    pub examples: Vec<String>,
}

/// Why a submission was rejected: the findings (up to 100) and how many more there were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub issues: Vec<Issue>,
    pub more: u64,
}

impl Rejection {
    /// One line naming the first finding and the total, for logs and CLIs.
    pub fn summary(&self) -> String {
        let total = self.issues.len() as u64 + self.more;
        match self.issues.first() {
            Some(first) if total > 1 => format!("{first} (and {} more)", total - 1),
            Some(first) => first.to_string(),
            None => "rejected".to_string(),
        }
    }
}

/// The report of one submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionReport {
    /// The submitted file's name, as given by the submitter.
    pub file: String,
    pub submission_id: String,
    pub sender: String,
    pub dataset: Dataset,
    /// `net_change` or `bulk_replacement`.
    pub protocol: String,
    pub outcome: Outcome,
    /// True when this is the stored answer to a submission already processed (a resend).
    pub resent: bool,
    /// The store version the submission created (accepted only).
    pub version: Option<u64>,
    /// Records read from the file.
    pub records: u64,
    pub inserted: u64,
    pub replaced: u64,
    pub deleted: u64,
    /// Records of the sender in the report period removed by a Bulk Replacement.
    pub bulk_deleted: u64,
    /// Updates and deletions ignored as not later than the stored version.
    pub stale: u64,
    /// Episodes of earlier submissions stored again because this one changed their spell (they
    /// now carry the spell's new HRG and price).
    #[serde(default)]
    pub rederived: u64,
    /// Warning rules raised, in rule order.
    pub warnings: Vec<WarningSummary>,
    pub rejection: Option<Rejection>,
}

impl SubmissionReport {
    /// A report with no counts yet, for `meta` and `file`.
    pub fn new(meta: &SubmissionMeta, file: &str) -> SubmissionReport {
        SubmissionReport {
            file: file.to_string(),
            submission_id: meta.submission_id.clone(),
            sender: meta.sender.clone(),
            dataset: meta.dataset,
            protocol: match meta.protocol {
                Protocol::NetChange => "net_change",
                Protocol::BulkReplacement { .. } => "bulk_replacement",
            }
            .to_string(),
            outcome: Outcome::Accepted,
            resent: false,
            version: None,
            records: 0,
            inserted: 0,
            replaced: 0,
            deleted: 0,
            bulk_deleted: 0,
            stale: 0,
            rederived: 0,
            warnings: Vec::new(),
            rejection: None,
        }
    }

    /// Marks the report rejected with these findings.
    pub fn reject(mut self, issues: Vec<Issue>, more: u64) -> SubmissionReport {
        self.outcome = Outcome::Rejected;
        self.rejection = Some(Rejection { issues, more });
        self
    }

    pub fn is_accepted(&self) -> bool {
        self.outcome == Outcome::Accepted
    }

    /// Serialised form stored in the catalog and sent on the wire.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).expect("report serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<SubmissionReport, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Accumulates warning counts and examples in file order.
#[derive(Default)]
pub struct WarningTally {
    by_rule: BTreeMap<Rule, WarningSummary>,
}

impl WarningTally {
    pub fn add(&mut self, rule: Rule, cds_unique_id: &str) {
        let s = self.by_rule.entry(rule).or_insert_with(|| WarningSummary {
            rule,
            count: 0,
            examples: Vec::new(),
        });
        s.count += 1;
        if s.examples.len() < EXAMPLES_PER_RULE {
            s.examples.push(cds_unique_id.to_string());
        }
    }

    pub fn finish(self) -> Vec<WarningSummary> {
        self.by_rule.into_values().collect()
    }
}

impl fmt::Display for SubmissionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (self.outcome, self.resent) {
            (Outcome::Accepted, false) => "ACCEPTED",
            (Outcome::Accepted, true) => "ACCEPTED (already processed; original outcome)",
            (Outcome::Rejected, false) => "REJECTED",
            (Outcome::Rejected, true) => "REJECTED (already processed; original outcome)",
        };
        writeln!(
            f,
            "{} [{} {} from {}, {}]: {}",
            self.file, self.dataset, self.submission_id, self.sender, self.protocol, state
        )?;
        if let Some(r) = &self.rejection {
            for issue in &r.issues {
                writeln!(f, "  {issue}")?;
            }
            if r.more > 0 {
                writeln!(f, "  ... and {} more findings", r.more)?;
            }
            return writeln!(f, "  nothing of this submission was stored");
        }
        writeln!(
            f,
            "  records {}: inserted {}, replaced {}, deleted {}, bulk-deleted {}, stale {}{}",
            self.records,
            self.inserted,
            self.replaced,
            self.deleted,
            self.bulk_deleted,
            self.stale,
            self.version
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default()
        )?;
        if self.rederived > 0 {
            writeln!(
                f,
                "  episodes of earlier submissions re-derived (their spell changed): {}",
                self.rederived
            )?;
        }
        for w in &self.warnings {
            writeln!(
                f,
                "  warning {}: {} records, e.g. {}",
                w.rule.code(),
                w.count,
                w.examples.join(", ")
            )?;
        }
        Ok(())
    }
}
