//! The submission report on the wire: [`to_wire`] turns the domain's report (which the catalog
//! keeps as JSON, for the answer to a resend) into the `SubmissionReport` message a
//! `SubmitReply` carries. Rules travel by their stable codes ([`Rule::code`]), the dataset by its
//! name ([`Dataset::name`](crate::model::Dataset::name)).

use crate::model::{Issue, Rule};
use crate::report::{Outcome, Rejection, SubmissionReport, WarningSummary};
use sus_proto::v1;
use sus_proto::v1::submission_report::Outcome as WireOutcome;

/// The `SubmitReply.report` message of a submission report.
pub(crate) fn to_wire(r: &SubmissionReport) -> v1::SubmissionReport {
    // Destructured, so that a field added to the report does not compile until it is sent.
    let SubmissionReport {
        file,
        submission_id,
        sender,
        dataset,
        protocol,
        outcome,
        resent,
        version,
        records,
        inserted,
        replaced,
        deleted,
        bulk_deleted,
        stale,
        rederived,
        warnings,
        rejection,
    } = r;
    v1::SubmissionReport {
        file: file.clone(),
        submission_id: submission_id.clone(),
        sender: sender.clone(),
        dataset: dataset.name().to_string(),
        protocol: protocol.clone(),
        outcome: i32::from(match outcome {
            Outcome::Accepted => WireOutcome::Accepted,
            Outcome::Rejected => WireOutcome::Rejected,
        }),
        resent: *resent,
        version: *version,
        records: *records,
        inserted: *inserted,
        replaced: *replaced,
        deleted: *deleted,
        bulk_deleted: *bulk_deleted,
        stale: *stale,
        rederived: *rederived,
        warnings: warnings.iter().map(warning_to_wire).collect(),
        rejection: rejection.as_ref().map(rejection_to_wire),
    }
}

fn warning_to_wire(w: &WarningSummary) -> v1::WarningSummary {
    v1::WarningSummary {
        rule: code(w.rule),
        count: w.count,
        examples: w.examples.clone(),
    }
}

fn rejection_to_wire(r: &Rejection) -> v1::Rejection {
    v1::Rejection {
        issues: r.issues.iter().map(finding_to_wire).collect(),
        more: r.more,
    }
}

fn finding_to_wire(i: &Issue) -> v1::Finding {
    v1::Finding {
        ordinal: i.ordinal,
        cds_unique_id: i.cds_unique_id.clone(),
        item: i.item.clone(),
        rule: code(i.rule),
        message: i.message.clone(),
    }
}

fn code(rule: Rule) -> String {
    rule.code().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dataset, Protocol, SubmissionMeta};
    use crate::report::WarningTally;

    fn meta() -> SubmissionMeta {
        SubmissionMeta {
            submission_id: "S-0001".into(),
            sender: "RR8".into(),
            dataset: Dataset::Op,
            protocol: Protocol::NetChange,
        }
    }

    #[test]
    fn an_accepted_report_keeps_its_counts_version_and_warnings_by_code() {
        let mut tally = WarningTally::default();
        tally.add(Rule::GpPracticeUnknown, "B2");
        tally.add(Rule::NhsNumberInvalid, "B1");
        tally.add(Rule::GpPracticeUnknown, "B3");
        let mut r = SubmissionReport::new(&meta(), "op-1.csv");
        r.resent = true;
        r.version = Some(42);
        (r.records, r.inserted, r.replaced, r.deleted) = (10, 5, 3, 1);
        (r.bulk_deleted, r.stale, r.rederived) = (0, 1, 2);
        r.warnings = tally.finish();

        let wire = to_wire(&r);
        assert_eq!(
            wire,
            v1::SubmissionReport {
                file: "op-1.csv".into(),
                submission_id: "S-0001".into(),
                sender: "RR8".into(),
                dataset: "op".into(),
                protocol: "net_change".into(),
                outcome: i32::from(WireOutcome::Accepted),
                resent: true,
                version: Some(42),
                records: 10,
                inserted: 5,
                replaced: 3,
                deleted: 1,
                bulk_deleted: 0,
                stale: 1,
                rederived: 2,
                warnings: vec![
                    v1::WarningSummary {
                        rule: "W01-NHS-NUMBER-INVALID".into(),
                        count: 1,
                        examples: vec!["B1".into()],
                    },
                    v1::WarningSummary {
                        rule: "W04-GP-PRACTICE-UNKNOWN".into(),
                        count: 2,
                        examples: vec!["B2".into(), "B3".into()],
                    },
                ],
                rejection: None,
            }
        );
        assert_eq!(wire.outcome(), WireOutcome::Accepted);
    }

    #[test]
    fn a_rejected_report_carries_its_findings_and_the_count_of_the_rest() {
        let issues = vec![
            Issue {
                ordinal: None,
                cds_unique_id: None,
                item: None,
                rule: Rule::EnvelopeInvalid,
                message: "period reversed".into(),
            },
            Issue {
                ordinal: Some(7),
                cds_unique_id: Some("B7".into()),
                item: Some("appointment_date".into()),
                rule: Rule::ItemFormatInvalid,
                message: "not a date".into(),
            },
        ];
        let r = SubmissionReport::new(&meta(), "op-2.csv").reject(issues, 12);

        let wire = to_wire(&r);
        assert_eq!(wire.outcome(), WireOutcome::Rejected);
        assert_eq!(wire.version, None);
        assert_eq!(
            wire.rejection,
            Some(v1::Rejection {
                issues: vec![
                    v1::Finding {
                        ordinal: None,
                        cds_unique_id: None,
                        item: None,
                        rule: "R08-ENVELOPE".into(),
                        message: "period reversed".into(),
                    },
                    v1::Finding {
                        ordinal: Some(7),
                        cds_unique_id: Some("B7".into()),
                        item: Some("appointment_date".into()),
                        rule: "R04-ITEM-FORMAT".into(),
                        message: "not a date".into(),
                    },
                ],
                more: 12,
            })
        );
    }

    #[test]
    fn every_dataset_travels_by_its_name() {
        for dataset in Dataset::ALL {
            let m = SubmissionMeta { dataset, ..meta() };
            let wire = to_wire(&SubmissionReport::new(&m, "f.csv"));
            assert_eq!(wire.dataset, dataset.name());
        }
    }
}
