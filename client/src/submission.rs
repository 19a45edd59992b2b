//! What the cluster says about a submission: the [`SubmitOutcome`] of
//! [`Client::submit`](crate::Client::submit) and its typed [`SubmissionReport`], read from the
//! `SubmissionReport` message of the node's reply.
//!
//! The report is the client's own type, not the node's: the client depends on the wire contract
//! only. Counts are of records (rows of the submitted file or of the store); rules are named by
//! their stable codes (`W01-NHS-NUMBER-INVALID`, `R04-ITEM-FORMAT`, see `docs/rules.md`).

use crate::{Error, Result};
use serde::Serialize;
use std::fmt;
use sus_proto::v1;
use sus_proto::v1::submission_report::Outcome as WireOutcome;

/// What the cluster said about one submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitOutcome {
    /// Whether the submission was accepted (with or without warnings).
    pub accepted: bool,
    /// The submission report, as the node wrote it.
    pub report: SubmissionReport,
    /// The data shard that holds the sender's records.
    pub shard: u32,
    /// The node that committed it.
    pub leader: u64,
}

impl SubmitOutcome {
    /// The store version the submission created on its shard (accepted only).
    pub fn version(&self) -> Option<u64> {
        self.report.version
    }

    /// The outcome of a node's reply; [`Error::MissingReport`] when the reply carries no report
    /// (a node older than this client, which sent the report as JSON text).
    pub(crate) fn from_reply(reply: v1::SubmitReply) -> Result<SubmitOutcome> {
        let report = reply.report.ok_or(Error::MissingReport {
            accepted: reply.accepted,
            shard: reply.shard,
            leader: reply.leader,
        })?;
        Ok(SubmitOutcome {
            accepted: reply.accepted,
            report: report.into(),
            shard: reply.shard,
            leader: reply.leader,
        })
    }
}

/// The report of one submission, accepted or rejected. A resend of the same (sender, submission
/// id) gets the original report again, with [`resent`](SubmissionReport::resent) set.
///
/// `Display` writes it as pretty-printed JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubmissionReport {
    /// The submitted file's name, as given by the submitter.
    pub file: String,
    /// The envelope's submission id.
    pub submission_id: String,
    /// ODS code of the sending organisation (a provider or a submitting agency).
    pub sender: String,
    /// The Commissioning Data Set: `apc` (admitted patient care), `op` (outpatients) or `ec`
    /// (emergency care).
    pub dataset: String,
    /// The submission protocol: `net_change` or `bulk_replacement`.
    pub protocol: String,
    /// Accepted or rejected, as a whole.
    pub outcome: Outcome,
    /// True when this is the stored report of a submission already processed (a resend):
    /// nothing was applied again.
    pub resent: bool,
    /// The store version the submission created on its shard (accepted only).
    pub version: Option<u64>,
    /// Records read from the file.
    pub records: u64,
    /// Records stored under a `cds_unique_id` that had no live record.
    pub inserted: u64,
    /// Records stored in place of the live record with the same `cds_unique_id`.
    pub replaced: u64,
    /// Live records removed by a deletion of this submission.
    pub deleted: u64,
    /// Records of the sender in the report period removed by a Bulk Replacement.
    pub bulk_deleted: u64,
    /// Updates and deletions ignored as not later than the stored version of their record, and
    /// deletions of a `cds_unique_id` the store never held.
    pub stale: u64,
    /// Episodes of earlier submissions stored again because this one changed their spell (they
    /// now carry the spell's new HRG and price).
    pub rederived: u64,
    /// The warning rules the records raised, one entry per rule, in rule order.
    pub warnings: Vec<WarningSummary>,
    /// Why the submission was rejected (rejected only).
    pub rejection: Option<Rejection>,
}

impl SubmissionReport {
    /// Whether the submission was accepted (with or without warnings).
    pub fn is_accepted(&self) -> bool {
        self.outcome == Outcome::Accepted
    }
}

/// Accepted (possibly with warnings: its changes are stored) or rejected (nothing of it is
/// stored), a submission as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Accepted as a whole, possibly with warnings.
    Accepted,
    /// Rejected as a whole; [`SubmissionReport::rejection`] says why.
    Rejected,
}

/// How many records raised one warning rule, with examples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WarningSummary {
    /// The rule's stable code, e.g. `W01-NHS-NUMBER-INVALID`.
    pub rule: String,
    /// Records that raised it.
    pub count: u64,
    /// The `cds_unique_id` of the first few of those records (at most 3), in file order.
    pub examples: Vec<String>,
}

/// Why a submission was rejected: the first findings and how many more there were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The first findings (at most 100).
    pub issues: Vec<Finding>,
    /// Findings beyond those listed in [`issues`](Rejection::issues).
    pub more: u64,
}

/// One finding against a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The record's position in the file (1-based, header excluded), when the finding is about
    /// one record.
    pub ordinal: Option<u64>,
    /// The record's `cds_unique_id`, when known.
    pub cds_unique_id: Option<String>,
    /// The data item (column) at fault, when the finding is about one item.
    pub item: Option<String>,
    /// The rule's stable code, e.g. `R04-ITEM-FORMAT`.
    pub rule: String,
    /// What is wrong, in words a submitter can act on.
    pub message: String,
}

/// Reads the wire message. An outcome other than `ACCEPTED` (unset, or unknown to this client)
/// reads as [`Outcome::Rejected`]: the client never takes a submission for accepted unless the
/// node said so.
impl From<v1::SubmissionReport> for SubmissionReport {
    fn from(r: v1::SubmissionReport) -> SubmissionReport {
        let outcome = match r.outcome() {
            WireOutcome::Accepted => Outcome::Accepted,
            WireOutcome::Rejected | WireOutcome::Unspecified => Outcome::Rejected,
        };
        SubmissionReport {
            file: r.file,
            submission_id: r.submission_id,
            sender: r.sender,
            dataset: r.dataset,
            protocol: r.protocol,
            outcome,
            resent: r.resent,
            version: r.version,
            records: r.records,
            inserted: r.inserted,
            replaced: r.replaced,
            deleted: r.deleted,
            bulk_deleted: r.bulk_deleted,
            stale: r.stale,
            rederived: r.rederived,
            warnings: r.warnings.into_iter().map(WarningSummary::from).collect(),
            rejection: r.rejection.map(Rejection::from),
        }
    }
}

impl From<v1::WarningSummary> for WarningSummary {
    fn from(w: v1::WarningSummary) -> WarningSummary {
        WarningSummary {
            rule: w.rule,
            count: w.count,
            examples: w.examples,
        }
    }
}

impl From<v1::Rejection> for Rejection {
    fn from(r: v1::Rejection) -> Rejection {
        Rejection {
            issues: r.issues.into_iter().map(Finding::from).collect(),
            more: r.more,
        }
    }
}

impl From<v1::Finding> for Finding {
    fn from(f: v1::Finding) -> Finding {
        Finding {
            ordinal: f.ordinal,
            cds_unique_id: f.cds_unique_id,
            item: f.item,
            rule: f.rule,
            message: f.message,
        }
    }
}

/// Pretty-printed JSON (field names as in the struct, the outcome as `accepted` / `rejected`).
impl fmt::Display for SubmissionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string_pretty(self).map_err(|_| fmt::Error)?;
        f.write_str(&json)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn wire_report() -> v1::SubmissionReport {
        v1::SubmissionReport {
            file: "apc-1.csv".into(),
            submission_id: "S-1".into(),
            sender: "RR8".into(),
            dataset: "apc".into(),
            protocol: "net_change".into(),
            outcome: i32::from(WireOutcome::Accepted),
            resent: false,
            version: Some(9),
            records: 12,
            inserted: 8,
            replaced: 2,
            deleted: 1,
            bulk_deleted: 0,
            stale: 1,
            rederived: 3,
            warnings: vec![v1::WarningSummary {
                rule: "W04-GP-PRACTICE-UNKNOWN".into(),
                count: 2,
                examples: vec!["B1".into(), "B5".into()],
            }],
            rejection: None,
        }
    }

    fn reply(report: Option<v1::SubmissionReport>) -> v1::SubmitReply {
        v1::SubmitReply {
            accepted: true,
            shard: 4,
            leader: 2,
            report,
        }
    }

    #[test]
    fn an_accepted_reply_reads_as_a_typed_report() {
        let outcome = SubmitOutcome::from_reply(reply(Some(wire_report()))).unwrap();
        assert!(outcome.accepted);
        assert_eq!((outcome.shard, outcome.leader), (4, 2));
        assert_eq!(outcome.version(), Some(9));
        let r = &outcome.report;
        assert!(r.is_accepted());
        assert_eq!(r.dataset, "apc");
        assert_eq!(
            (r.records, r.inserted, r.replaced, r.deleted, r.stale),
            (12, 8, 2, 1, 1)
        );
        assert_eq!((r.bulk_deleted, r.rederived), (0, 3));
        assert_eq!(
            r.warnings,
            vec![WarningSummary {
                rule: "W04-GP-PRACTICE-UNKNOWN".into(),
                count: 2,
                examples: vec!["B1".into(), "B5".into()],
            }]
        );
        assert_eq!(r.rejection, None);
    }

    #[test]
    fn a_rejected_report_keeps_its_findings() {
        let mut w = wire_report();
        w.outcome = i32::from(WireOutcome::Rejected);
        w.version = None;
        w.rejection = Some(v1::Rejection {
            issues: vec![v1::Finding {
                ordinal: Some(3),
                cds_unique_id: Some("B3".into()),
                item: Some("episode_start_date".into()),
                rule: "R04-ITEM-FORMAT".into(),
                message: "not a date".into(),
            }],
            more: 7,
        });
        let r = SubmissionReport::from(w);
        assert_eq!(r.outcome, Outcome::Rejected);
        assert_eq!(r.version, None);
        let rejection = r.rejection.unwrap();
        assert_eq!(rejection.more, 7);
        assert_eq!(
            rejection.issues,
            vec![Finding {
                ordinal: Some(3),
                cds_unique_id: Some("B3".into()),
                item: Some("episode_start_date".into()),
                rule: "R04-ITEM-FORMAT".into(),
                message: "not a date".into(),
            }]
        );
    }

    #[test]
    fn an_unset_or_unknown_outcome_is_never_read_as_accepted() {
        for outcome in [0, 99] {
            let mut w = wire_report();
            w.outcome = outcome;
            assert_eq!(SubmissionReport::from(w).outcome, Outcome::Rejected);
        }
    }

    #[test]
    fn a_reply_without_a_report_is_an_error_that_says_so() {
        let err = SubmitOutcome::from_reply(reply(None)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MissingReport {
                    accepted: true,
                    shard: 4,
                    leader: 2
                }
            ),
            "{err:?}"
        );
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("no submission report"), "{err}");
    }

    #[test]
    fn the_report_displays_as_pretty_json() {
        let r = SubmissionReport::from(wire_report());
        let text = r.to_string();
        assert!(text.contains("\n  \"records\": 12,"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["outcome"], "accepted");
        assert_eq!(json["version"], 9);
        assert_eq!(json["warnings"][0]["rule"], "W04-GP-PRACTICE-UNKNOWN");
        assert!(json["rejection"].is_null());
    }
}
