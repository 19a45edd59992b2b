//! Whole-submission rules that need reference data (R05, R06, R08) and the per-record warnings
//! W01-W09 (`docs/rules.md` sections 2-3).
//!
//! The format rules R01-R04 belong to the parser and R07 (bulk extract not newer) to the store,
//! which alone knows what was applied before. Everything here is a pure function of the envelope,
//! the records and the reference data.

use crate::model::{Detail, Issue, Protocol, Record, Rule, SubmissionMeta, UpdateType, Warnings};
use crate::refdata::RefData;
use chrono::NaiveDate;

/// The most issues a rejection lists; further findings are only counted.
pub const MAX_ISSUES: usize = 100;

/// Earliest plausible date of birth (W03): 1880-01-01.
pub fn earliest_birth() -> NaiveDate {
    NaiveDate::from_ymd_opt(1880, 1, 1).unwrap_or(NaiveDate::MIN)
}

/// Whether an NHS number is valid: 10 digits once spaces are removed, not all one digit, and passing
/// Modulus 11 (weights 10..2 on digits 1-9, `check = 11 - sum mod 11`, 11 reads as 0, 10 is never
/// valid, the check must equal digit 10).
pub fn nhs_number_is_valid(s: &str) -> bool {
    let digits: Vec<u32> = s
        .chars()
        .filter(|c| *c != ' ')
        .map(|c| c.to_digit(10).filter(|_| c.is_ascii_digit()))
        .collect::<Option<Vec<u32>>>()
        .unwrap_or_default();
    if digits.len() != 10 || digits.iter().all(|d| *d == digits[0]) {
        return false;
    }
    let sum: u32 = digits[..9]
        .iter()
        .zip((2..=10).rev())
        .map(|(d, w)| d * w)
        .sum();
    match 11 - sum % 11 {
        11 => digits[9] == 0,
        10 => false,
        check => digits[9] == check,
    }
}

/// Whether an ICD-10 code is well formed: `[A-Z][0-9][0-9X][0-9X]`, then optionally one of `[0-9X]`,
/// then optionally `A` or `D` (4 to 6 characters, no dot).
pub fn icd10_is_well_formed(code: &str) -> bool {
    let b = code.as_bytes();
    let num_or_x = |c: u8| c.is_ascii_digit() || c == b'X';
    let dagger = |c: u8| c == b'A' || c == b'D';
    if !(4..=6).contains(&b.len())
        || !b[0].is_ascii_uppercase()
        || !b[1].is_ascii_digit()
        || !num_or_x(b[2])
        || !num_or_x(b[3])
    {
        return false;
    }
    match b[4..] {
        [] => true,
        [c] => num_or_x(c) || dagger(c),
        [c, e] => num_or_x(c) && dagger(e),
        _ => false,
    }
}

/// Whether an OPCS-4 code is well formed: a chapter letter (any but `I`, which is no chapter;
/// `O` overflow and `U` diagnostic imaging are chapters) and three digits, no dot.
pub fn opcs4_is_well_formed(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 4
        && b[0].is_ascii_uppercase()
        && b[0] != b'I'
        && b[1..].iter().all(u8::is_ascii_digit)
}

/// The findings of [`submission_findings`]: at most [`MAX_ISSUES`] issues, and how many more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// The first findings, envelope first, then records in file order.
    pub issues: Vec<Issue>,
    /// Findings beyond the first [`MAX_ISSUES`].
    pub more: u64,
}

impl Findings {
    fn push(&mut self, issue: Issue) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(issue);
        } else {
            self.more += 1;
        }
    }

    /// Whether the submission passes these rules.
    pub fn is_empty(&self) -> bool {
        self.issues.is_empty()
    }
}

/// The whole-submission rules R05, R06 and R08 over an envelope and its parsed records: every
/// finding, envelope first, then records in file order. Empty means the submission may be accepted.
///
/// Nothing is left out, so that a caller that lists the first [`MAX_ISSUES`] can also count the
/// rest (`docs/rules.md` section 2: "up to 100, then a count"); [`submission_findings`] does both.
pub fn submission_issues(
    meta: &SubmissionMeta,
    records: &[Record],
    refdata: &RefData,
) -> Vec<Issue> {
    let mut all = Vec::new();
    each_issue(meta, records, refdata, &mut |i| all.push(i));
    all
}

/// [`submission_issues`] as the first [`MAX_ISSUES`] findings and the count of the others.
pub fn submission_findings(
    meta: &SubmissionMeta,
    records: &[Record],
    refdata: &RefData,
) -> Findings {
    let mut f = Findings::default();
    each_issue(meta, records, refdata, &mut |i| f.push(i));
    f
}

/// Hands every finding of R05, R06 and R08 to `push`, envelope first, then records in file order.
fn each_issue(
    meta: &SubmissionMeta,
    records: &[Record],
    refdata: &RefData,
    push: &mut dyn FnMut(Issue),
) {
    let envelope = |item: &str, message: String| Issue {
        ordinal: None,
        cds_unique_id: None,
        item: Some(item.to_string()),
        rule: Rule::EnvelopeInvalid,
        message,
    };
    let bulk = match &meta.protocol {
        Protocol::NetChange => false,
        Protocol::BulkReplacement {
            bulk_group,
            period_start,
            period_end,
            ..
        } => {
            let want = meta.dataset.bulk_group();
            if bulk_group != want {
                push(envelope(
                    "bulk_group",
                    format!(
                        "bulk group '{bulk_group}' does not carry dataset {}: it must be {want}",
                        meta.dataset
                    ),
                ));
            }
            if period_end < period_start {
                push(envelope(
                    "period_end",
                    format!("report period ends ({period_end}) before it starts ({period_start})"),
                ));
            }
            true
        }
    };
    for r in records {
        let issue = |item: &str, rule: Rule, message: String| Issue {
            ordinal: Some(r.ordinal),
            cds_unique_id: Some(r.common.cds_unique_id.clone()),
            item: Some(item.to_string()),
            rule,
            message,
        };
        let provider = r.common.provider_code.as_str();
        if !refdata.is_provider(provider) {
            push(issue(
                "provider_code",
                Rule::ProviderUnknown,
                format!("provider '{provider}' is not a known provider"),
            ));
        } else if !refdata.may_send(&meta.sender, provider) {
            // Only for known providers: an unknown one is already the reason, and no sender can be
            // registered for it.
            push(issue(
                "provider_code",
                Rule::SenderNotRegistered,
                format!(
                    "sender '{}' is not registered to submit for provider '{provider}'",
                    meta.sender
                ),
            ));
        }
        if r.dataset() != meta.dataset {
            push(issue(
                "dataset",
                Rule::EnvelopeInvalid,
                format!(
                    "the envelope names dataset {} but the record is {}",
                    meta.dataset,
                    r.dataset()
                ),
            ));
        }
        if bulk && r.common.cds_update_type == Some(UpdateType::Delete) {
            push(issue(
                "cds_update_type",
                Rule::EnvelopeInvalid,
                "a deletion (1) is not allowed in a Bulk Replacement".into(),
            ));
        }
    }
}

/// The warnings W01-W09 of one record. Deletions carry only key items and get none.
pub fn record_warnings(meta: &SubmissionMeta, record: &Record, refdata: &RefData) -> Warnings {
    let mut w = Warnings::default();
    if record.is_delete() {
        return w;
    }
    let c = &record.common;
    let activity = record.activity_date();

    if !c.nhs_number.as_deref().is_some_and(nhs_number_is_valid) {
        w.add(Rule::NhsNumberInvalid);
    }
    if c.nhs_number_status.as_deref() != Some("01") {
        w.add(Rule::NhsNumberStatusNotVerified);
    }
    if c.date_of_birth
        .is_some_and(|dob| dob < earliest_birth() || activity.is_some_and(|a| dob > a))
    {
        w.add(Rule::DateOfBirthImplausible);
    }
    if c.gp_practice_code
        .as_deref()
        .is_some_and(|gp| !refdata.is_gp_practice(gp))
    {
        w.add(Rule::GpPracticeUnknown);
    }
    if !c
        .commissioner_code
        .as_deref()
        .is_some_and(|code| refdata.is_commissioner(code))
    {
        w.add(Rule::CommissionerUnknown);
    }
    let codes = clinical_codes(record);
    if codes.diagnoses.iter().any(|d| !icd10_is_well_formed(d)) {
        w.add(Rule::Icd10Malformed);
    }
    if codes.procedures.iter().any(|p| !opcs4_is_well_formed(p)) {
        w.add(Rule::Opcs4Malformed);
    }
    if let Some(nhs) = own_nhs_number(record) {
        let spell = match &record.detail {
            Detail::Apc(a) => a.hospital_provider_spell_number.as_deref(),
            _ => None,
        };
        if c.cds_unique_id.contains(&nhs) || spell.is_some_and(|s| s.contains(&nhs)) {
            w.add(Rule::PatientDataInNonPatientField);
        }
    }
    if let Protocol::BulkReplacement {
        period_start,
        period_end,
        ..
    } = &meta.protocol
        && activity.is_some_and(|a| a < *period_start || a > *period_end)
    {
        w.add(Rule::OutsideReportPeriod);
    }
    w
}

/// The ICD-10 diagnoses and OPCS-4 procedures of a record. EC codes are SNOMED CT, not these.
pub(crate) struct ClinicalCodes<'a> {
    pub diagnoses: Vec<&'a str>,
    pub procedures: Vec<&'a str>,
}

/// Collects a record's ICD-10 and OPCS-4 codes (primary first).
pub(crate) fn clinical_codes(record: &Record) -> ClinicalCodes<'_> {
    match &record.detail {
        Detail::Apc(a) => ClinicalCodes {
            diagnoses: a
                .primary_diagnosis
                .iter()
                .chain(&a.secondary_diagnoses)
                .map(String::as_str)
                .collect(),
            procedures: a
                .primary_procedure
                .iter()
                .chain(&a.secondary_procedures)
                .map(String::as_str)
                .collect(),
        },
        Detail::Op(o) => ClinicalCodes {
            diagnoses: o.primary_diagnosis.iter().map(String::as_str).collect(),
            procedures: o.primary_procedure.iter().map(String::as_str).collect(),
        },
        Detail::Ec(_) => ClinicalCodes {
            diagnoses: vec![],
            procedures: vec![],
        },
    }
}

/// The record's NHS number when it is 10 digits (valid or not: W08 is about leaking it, whatever
/// its check digit).
fn own_nhs_number(record: &Record) -> Option<String> {
    let n: String = record.common.nhs_number.as_deref()?.replace(' ', "");
    (n.len() == 10 && n.bytes().all(|b| b.is_ascii_digit())).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dataset, Issue};
    use crate::refdata::testdata::{
        apc, apc_mut, bulk, d, deletion, ec, ec_mut, net_change, op, op_mut, refdata,
    };

    // ----- NHS number, Modulus 11 -----

    // 9 4 3 4 7 6 5 9 1 | 9 with weights 10..2:
    // 90 + 36 + 24 + 28 + 42 + 30 + 20 + 27 + 2 = 299; 299 mod 11 = 2 (297 = 27 × 11);
    // check = 11 − 2 = 9 = digit 10 → valid.
    #[test]
    fn nhs_number_9434765919_is_valid() {
        assert!(nhs_number_is_valid("9434765919"));
        // Same first nine digits, last digit 8 ≠ 9.
        assert!(!nhs_number_is_valid("9434765918"));
    }

    // 4 0 1 0 2 3 2 1 3 | 7: 40 + 0 + 8 + 0 + 12 + 15 + 8 + 3 + 6 = 92; 92 mod 11 = 4 (88 = 8 × 11);
    // check = 11 − 4 = 7 = digit 10 → valid.
    #[test]
    fn nhs_number_4010232137_is_valid() {
        assert!(nhs_number_is_valid("4010232137"));
        assert!(!nhs_number_is_valid("4010232136"));
    }

    // 9 9 9 0 0 0 1 2 3 | ?: 90 + 81 + 72 + 0 + 0 + 0 + 4 + 6 + 6 = 259; 259 mod 11 = 6 (253 = 23 × 11);
    // check = 11 − 6 = 5: 9990001235 is valid, 9990001234 is not.
    #[test]
    fn nhs_number_9990001235_is_valid_and_9990001234_is_not() {
        assert!(nhs_number_is_valid("9990001235"));
        assert!(!nhs_number_is_valid("9990001234"));
    }

    // 0 1 0 0 0 0 0 0 1 | 0: 0 + 9 + 0 + 0 + 0 + 0 + 0 + 0 + 2 = 11; 11 mod 11 = 0; check = 11 → 0
    // = digit 10 → valid.
    #[test]
    fn nhs_number_check_11_reads_as_0() {
        assert!(nhs_number_is_valid("0100000010"));
        assert!(!nhs_number_is_valid("0100000011"));
    }

    // 1 2 3 4 5 6 7 8 9 | ?: 10 + 18 + 24 + 28 + 30 + 30 + 28 + 24 + 18 = 210; 210 mod 11 = 1
    // (209 = 19 × 11); check = 11 − 1 = 10 → invalid whatever digit 10 is.
    #[test]
    fn nhs_number_check_10_is_never_valid() {
        for last in 0..=9 {
            let n = format!("123456789{last}");
            assert!(!nhs_number_is_valid(&n), "{n}");
        }
    }

    // 1111111111: 1 × (10 + 9 + … + 2) = 54; 54 mod 11 = 10; check = 1 = digit 10, so it passes
    // Modulus 11 but all one digit is invalid. 0000000000: sum 0 → check 11 → 0, also passes the
    // checksum and is refused.
    #[test]
    fn nhs_number_all_same_digit_is_invalid() {
        assert!(!nhs_number_is_valid("1111111111"));
        assert!(!nhs_number_is_valid("0000000000"));
        assert!(!nhs_number_is_valid("9999999999"));
    }

    #[test]
    fn nhs_number_wrong_length_or_not_digits_is_invalid() {
        assert!(!nhs_number_is_valid(""));
        assert!(!nhs_number_is_valid("943476591")); // 9 digits
        assert!(!nhs_number_is_valid("94347659190")); // 11 digits
        assert!(!nhs_number_is_valid("943476591X"));
        assert!(!nhs_number_is_valid("943-476-5919"));
        assert!(!nhs_number_is_valid("９434765919")); // full-width 9 is not an ASCII digit
    }

    #[test]
    fn nhs_number_spaces_are_removed() {
        assert!(nhs_number_is_valid("943 476 5919"));
        assert!(nhs_number_is_valid(" 9434765919 "));
        assert!(!nhs_number_is_valid("943 476 5918"));
    }

    // Modulus 11 with weights 2..10 catches every single-digit error (w × Δ is never a multiple of
    // 11 for w in 2..=10 and Δ in 1..=9) and every swap of two different adjacent digits among the
    // first nine (the weights differ by 1, so the sum changes by ±Δ).
    #[test]
    fn nhs_number_single_digit_errors_and_transpositions_are_caught() {
        for valid in ["9434765919", "4010232137", "9990001235", "0100000010"] {
            assert!(nhs_number_is_valid(valid), "{valid}");
            let digits: Vec<u8> = valid.bytes().collect();
            for pos in 0..10 {
                for new in b'0'..=b'9' {
                    if new == digits[pos] {
                        continue;
                    }
                    let mut m = digits.clone();
                    m[pos] = new;
                    let m = String::from_utf8(m).expect("ASCII");
                    assert!(!nhs_number_is_valid(&m), "{valid} → {m}");
                }
            }
            for pos in 0..8 {
                if digits[pos] == digits[pos + 1] {
                    continue;
                }
                let mut m = digits.clone();
                m.swap(pos, pos + 1);
                let m = String::from_utf8(m).expect("ASCII");
                assert!(!nhs_number_is_valid(&m), "{valid} → {m}");
            }
        }
    }

    // ----- code formats -----

    #[test]
    fn icd10_forms() {
        for ok in [
            "I10X", "I219", "S7200", "S720XA", "I10XA", "I10XD", "I1XX", "M00X0D",
        ] {
            assert!(icd10_is_well_formed(ok), "{ok} is well formed");
        }
        for bad in [
            "", "I10", "i10X", "I10.X", "IX0X", "110X", "I10XAA", "I10XXXX", "I10XB", "I10XAX",
        ] {
            assert!(!icd10_is_well_formed(bad), "{bad} is malformed");
        }
    }

    #[test]
    fn opcs4_forms() {
        // Chapters O (overflow) and U (diagnostic imaging) are OPCS-4 chapters.
        for ok in ["W371", "A011", "Q551", "Z999", "U051", "O011"] {
            assert!(opcs4_is_well_formed(ok), "{ok} is well formed");
        }
        for bad in [
            "", "W37", "W3712", "w371", "W37X", "I123", "W.371", "1371", "U05",
        ] {
            assert!(!opcs4_is_well_formed(bad), "{bad} is malformed");
        }
    }

    // ----- whole-submission rules -----

    fn issues(meta: &SubmissionMeta, records: &[Record]) -> Vec<Issue> {
        submission_issues(meta, records, &refdata())
    }

    fn numbered(mut r: Record, ordinal: u64) -> Record {
        r.ordinal = ordinal;
        r
    }

    #[test]
    fn clean_submissions_have_no_issues() {
        for ds in Dataset::ALL {
            let r = match ds {
                Dataset::Apc => apc("B1"),
                Dataset::Op => op("B1"),
                Dataset::Ec => ec("B1"),
            };
            assert_eq!(issues(&net_change(ds), std::slice::from_ref(&r)), vec![]);
            assert_eq!(issues(&bulk(ds), &[r]), vec![]);
        }
    }

    #[test]
    fn r05_unknown_provider_names_record_and_item() {
        let mut bad = numbered(apc("BZZZ01"), 2);
        bad.common.provider_code = "ZZZ".into();
        let found = issues(
            &net_change(Dataset::Apc),
            &[numbered(apc("BRRV01"), 1), bad],
        );
        assert_eq!(found.len(), 1, "{found:?}");
        let i = &found[0];
        assert_eq!(i.rule, Rule::ProviderUnknown);
        assert_eq!(i.rule.code(), "R05-PROVIDER-UNKNOWN");
        assert_eq!(i.ordinal, Some(2));
        assert_eq!(i.cds_unique_id.as_deref(), Some("BZZZ01"));
        assert_eq!(i.item.as_deref(), Some("provider_code"));
        assert!(i.message.contains("ZZZ"), "{}", i.message);
        // What the submitter reads names all four.
        assert_eq!(
            i.to_string(),
            "record 2 (BZZZ01): item provider_code: provider 'ZZZ' is not a known provider \
             [R05-PROVIDER-UNKNOWN]"
        );
        // Unknown provider: no second finding (R06) for the same record.
    }

    #[test]
    fn r06_sender_must_be_the_provider_or_registered_for_it() {
        let for_provider = |provider: &str| {
            let mut r = numbered(op("B1"), 7);
            r.common.provider_code = provider.into();
            r
        };
        let from = |sender: &str| {
            let mut m = net_change(Dataset::Op);
            m.sender = sender.into();
            m
        };
        // The provider itself.
        assert_eq!(issues(&from("RRV"), &[for_provider("RRV")]), vec![]);
        assert_eq!(issues(&from("RX1"), &[for_provider("RX1")]), vec![]);
        // Agency X26 is registered for RRV (senders.csv) but not for RX1.
        assert_eq!(issues(&from("X26"), &[for_provider("RRV")]), vec![]);
        let found = issues(&from("X26"), &[for_provider("RX1")]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule, Rule::SenderNotRegistered);
        assert_eq!(found[0].rule.code(), "R06-SENDER-NOT-REGISTERED");
        assert_eq!(found[0].ordinal, Some(7));
        assert_eq!(found[0].cds_unique_id.as_deref(), Some("B1"));
        assert_eq!(found[0].item.as_deref(), Some("provider_code"));
        // One provider may not send for another.
        let found = issues(&from("RX1"), &[for_provider("RRV")]);
        assert_eq!(
            found.iter().map(|i| i.rule).collect::<Vec<_>>(),
            vec![Rule::SenderNotRegistered]
        );
    }

    fn with_bulk(
        dataset: Dataset,
        edit: impl FnOnce(&mut String, &mut NaiveDate, &mut NaiveDate),
    ) -> SubmissionMeta {
        let mut m = bulk(dataset);
        if let Protocol::BulkReplacement {
            bulk_group,
            period_start,
            period_end,
            ..
        } = &mut m.protocol
        {
            edit(bulk_group, period_start, period_end);
        }
        m
    }

    #[test]
    fn r08_bulk_group_must_be_the_datasets() {
        // apc 010, op 060, ec 140.
        for (ds, wrong) in [
            (Dataset::Apc, "060"),
            (Dataset::Op, "010"),
            (Dataset::Ec, "060"),
        ] {
            let meta = with_bulk(ds, |g, _, _| *g = wrong.into());
            let r = match ds {
                Dataset::Apc => apc("B1"),
                Dataset::Op => op("B1"),
                Dataset::Ec => ec("B1"),
            };
            let found = issues(&meta, &[r]);
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].rule, Rule::EnvelopeInvalid);
            assert_eq!(found[0].rule.code(), "R08-ENVELOPE");
            assert_eq!(found[0].ordinal, None);
            assert_eq!(found[0].item.as_deref(), Some("bulk_group"));
        }
    }

    #[test]
    fn r08_period_end_before_start() {
        let meta = with_bulk(Dataset::Apc, |_, s, e| {
            *s = d(2024, 5, 31);
            *e = d(2024, 5, 1);
        });
        let found = issues(&meta, &[apc("B1")]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule, Rule::EnvelopeInvalid);
        assert_eq!(found[0].item.as_deref(), Some("period_end"));
        // A one-day period (end = start) is fine.
        let meta = with_bulk(Dataset::Apc, |_, s, e| {
            *s = d(2024, 5, 1);
            *e = d(2024, 5, 1);
        });
        assert_eq!(issues(&meta, &[apc("B1")]), vec![]);
    }

    #[test]
    fn r08_deletion_inside_bulk_replacement() {
        let records = [
            numbered(op("B1"), 1),
            numbered(deletion(Dataset::Op, "B2"), 2),
        ];
        let found = issues(&bulk(Dataset::Op), &records);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule, Rule::EnvelopeInvalid);
        assert_eq!(found[0].ordinal, Some(2));
        assert_eq!(found[0].cds_unique_id.as_deref(), Some("B2"));
        assert_eq!(found[0].item.as_deref(), Some("cds_update_type"));
        // The same deletion in a Net Change is fine.
        assert_eq!(issues(&net_change(Dataset::Op), &records), vec![]);
    }

    #[test]
    fn r08_envelope_dataset_not_the_files() {
        let found = issues(&net_change(Dataset::Apc), &[numbered(op("B9"), 3)]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule, Rule::EnvelopeInvalid);
        assert_eq!(found[0].ordinal, Some(3));
        assert_eq!(found[0].cds_unique_id.as_deref(), Some("B9"));
        assert_eq!(found[0].item.as_deref(), Some("dataset"));
    }

    #[test]
    fn findings_list_envelope_first_then_records_and_cap_at_100() {
        let meta = with_bulk(Dataset::Ec, |g, _, _| *g = "010".into());
        let records: Vec<Record> = (1..=150)
            .map(|n| {
                let mut r = numbered(ec(&format!("B{n}")), n);
                r.common.provider_code = "ZZZ".into();
                r
            })
            .collect();
        let f = submission_findings(&meta, &records, &refdata());
        // 1 envelope finding + 150 record findings = 151: 100 listed, 51 counted.
        assert_eq!(f.issues.len(), MAX_ISSUES);
        assert_eq!(f.more, 51);
        assert_eq!(f.issues[0].item.as_deref(), Some("bulk_group"));
        assert_eq!(f.issues[1].ordinal, Some(1));
        assert_eq!(f.issues[99].ordinal, Some(99));
        assert!(!f.is_empty());
        // Uncapped, so that a caller listing 100 can count the rest (ingest reports
        // `issues.len() - 100` as "more"): 151 findings.
        let all = submission_issues(&meta, &records, &refdata());
        assert_eq!(all.len(), 151);
        assert_eq!(all[..MAX_ISSUES], f.issues[..]);
        assert_eq!(all[150].ordinal, Some(150));
    }

    // ----- per-record warnings -----

    fn warnings_of(meta: &SubmissionMeta, r: &Record) -> Vec<Rule> {
        record_warnings(meta, r, &refdata()).iter().collect()
    }

    fn nc(r: &Record) -> Vec<Rule> {
        warnings_of(&net_change(r.dataset()), r)
    }

    #[test]
    fn clean_records_have_no_warnings() {
        for r in [apc("B1"), op("B1"), ec("B1")] {
            assert_eq!(nc(&r), vec![], "{r:?}");
            assert_eq!(warnings_of(&bulk(r.dataset()), &r), vec![], "{r:?}");
        }
    }

    #[test]
    fn deletions_get_no_warnings() {
        // A deletion has no NHS number, status or commissioner, and still no warning.
        for ds in Dataset::ALL {
            assert_eq!(nc(&deletion(ds, "B1")), vec![]);
        }
    }

    #[test]
    fn w01_nhs_number_invalid() {
        for n in [
            None,
            Some("9434765918"),
            Some("1234567890"),
            Some("0000000000"),
        ] {
            let mut r = op("B1");
            r.common.nhs_number = n.map(str::to_string);
            assert_eq!(nc(&r), vec![Rule::NhsNumberInvalid], "{n:?}");
        }
        let mut r = op("B1");
        r.common.nhs_number = Some("401 023 2137".into());
        assert_eq!(nc(&r), vec![]);
    }

    #[test]
    fn w02_nhs_number_status_not_01() {
        for s in [None, Some("02"), Some("1"), Some("08")] {
            let mut r = ec("B1");
            r.common.nhs_number_status = s.map(str::to_string);
            assert_eq!(nc(&r), vec![Rule::NhsNumberStatusNotVerified], "{s:?}");
        }
    }

    #[test]
    fn w03_date_of_birth_implausible() {
        // OP activity date 2024-05-10.
        let with_dob = |dob: Option<NaiveDate>| {
            let mut r = op("B1");
            r.common.date_of_birth = dob;
            nc(&r)
        };
        assert_eq!(
            with_dob(Some(d(1879, 12, 31))),
            vec![Rule::DateOfBirthImplausible]
        );
        assert_eq!(with_dob(Some(d(1880, 1, 1))), vec![]);
        assert_eq!(with_dob(Some(d(2024, 5, 10))), vec![]); // born on the day
        assert_eq!(
            with_dob(Some(d(2024, 5, 11))),
            vec![Rule::DateOfBirthImplausible]
        );
        assert_eq!(with_dob(None), vec![]); // blank is not a warning
        // APC: the activity date is the episode start (2024-05-01).
        let mut r = apc("B1");
        r.common.date_of_birth = Some(d(2024, 5, 2));
        assert_eq!(nc(&r), vec![Rule::DateOfBirthImplausible]);
        // EC: the arrival date (2024-05-10).
        let mut r = ec("B1");
        r.common.date_of_birth = Some(d(2024, 5, 10));
        assert_eq!(nc(&r), vec![]);
    }

    #[test]
    fn w04_gp_practice_unknown() {
        let with_gp = |gp: Option<&str>| {
            let mut r = apc("B1");
            r.common.gp_practice_code = gp.map(str::to_string);
            nc(&r)
        };
        assert_eq!(with_gp(Some("Z99999")), vec![Rule::GpPracticeUnknown]);
        assert_eq!(with_gp(Some("B82002")), vec![]);
        for default in ["V81997", "V81998", "V81999"] {
            assert_eq!(with_gp(Some(default)), vec![], "{default}");
        }
        assert_eq!(with_gp(None), vec![]); // only a present code is checked
    }

    #[test]
    fn w05_commissioner_unknown() {
        let with = |c: Option<&str>| {
            let mut r = op("B1");
            r.common.commissioner_code = c.map(str::to_string);
            nc(&r)
        };
        assert_eq!(with(None), vec![Rule::CommissionerUnknown]);
        assert_eq!(with(Some("ZZZZZ")), vec![Rule::CommissionerUnknown]);
        assert_eq!(with(Some("15E")), vec![]); // sub-ICB location
        assert_eq!(with(Some("QMJ")), vec![]); // an ICB, from icb_code
    }

    #[test]
    fn w06_icd10_malformed_in_primary_or_secondary() {
        let mut r = apc("B1");
        apc_mut(&mut r).primary_diagnosis = Some("I10".into()); // 3 characters: must be I10X
        assert_eq!(nc(&r), vec![Rule::Icd10Malformed]);
        let mut r = apc("B1");
        apc_mut(&mut r).secondary_diagnoses = vec!["E119".into(), "e11.9".into()];
        assert_eq!(nc(&r), vec![Rule::Icd10Malformed]);
        let mut r = op("B1");
        op_mut(&mut r).primary_diagnosis = Some("R07.4".into());
        assert_eq!(nc(&r), vec![Rule::Icd10Malformed]);
        let mut r = apc("B1");
        apc_mut(&mut r).secondary_diagnoses = vec!["E119".into(), "S720XA".into()];
        assert_eq!(nc(&r), vec![]);
    }

    #[test]
    fn w07_opcs4_malformed_in_primary_or_secondary() {
        let mut r = apc("B1");
        apc_mut(&mut r).primary_procedure = Some("W37".into());
        assert_eq!(nc(&r), vec![Rule::Opcs4Malformed]);
        let mut r = apc("B1");
        apc_mut(&mut r).primary_procedure = Some("W371".into());
        apc_mut(&mut r).secondary_procedures = vec!["Y031".into(), "I051".into()]; // I: no chapter
        assert_eq!(nc(&r), vec![Rule::Opcs4Malformed]);
        // U (diagnostic imaging) is a chapter: a U code is well formed, grouped and priced.
        let mut r = op("B1");
        op_mut(&mut r).primary_procedure = Some("U051".into());
        assert_eq!(nc(&r), vec![]);
        let mut r = op("B1");
        op_mut(&mut r).primary_procedure = Some("Q55.1".into());
        assert_eq!(nc(&r), vec![Rule::Opcs4Malformed]);
        let mut r = apc("B1");
        apc_mut(&mut r).primary_procedure = Some("W371".into());
        apc_mut(&mut r).secondary_procedures = vec!["Y031".into()];
        assert_eq!(nc(&r), vec![]);
    }

    #[test]
    fn w06_w07_do_not_apply_to_ec_snomed_codes() {
        let mut r = ec("B1");
        ec_mut(&mut r).investigations = vec!["1001".into()];
        ec_mut(&mut r).treatments = vec!["I10".into()];
        assert_eq!(nc(&r), vec![]);
    }

    #[test]
    fn w08_own_nhs_number_in_key() {
        // The record's NHS number is 9434765919.
        assert_eq!(
            nc(&apc("BRRV9434765919")),
            vec![Rule::PatientDataInNonPatientField]
        );
        let mut r = apc("B1");
        apc_mut(&mut r).hospital_provider_spell_number = Some("S9434765919".into());
        assert_eq!(nc(&r), vec![Rule::PatientDataInNonPatientField]);
        // Submitted with spaces: still the same number.
        let mut r = op("X9434765919");
        r.common.nhs_number = Some("943 476 5919".into());
        assert_eq!(nc(&r), vec![Rule::PatientDataInNonPatientField]);
        // Someone else's number in the key is not this rule.
        assert_eq!(nc(&op("B4010232137")), vec![]);
        // An invalid 10-digit number leaks just the same (and is W01 as well).
        let mut r = op("B9434765918");
        r.common.nhs_number = Some("9434765918".into());
        assert_eq!(
            nc(&r),
            vec![Rule::NhsNumberInvalid, Rule::PatientDataInNonPatientField]
        );
    }

    #[test]
    fn w09_outside_report_period_only_in_bulk() {
        // Period 2024-05-01 .. 2024-05-31 inclusive.
        let at = |day: NaiveDate| {
            let mut r = op("B1");
            op_mut(&mut r).appointment_date = Some(day);
            r
        };
        let meta = bulk(Dataset::Op);
        assert_eq!(warnings_of(&meta, &at(d(2024, 5, 1))), vec![]);
        assert_eq!(warnings_of(&meta, &at(d(2024, 5, 31))), vec![]);
        assert_eq!(
            warnings_of(&meta, &at(d(2024, 4, 30))),
            vec![Rule::OutsideReportPeriod]
        );
        assert_eq!(
            warnings_of(&meta, &at(d(2024, 6, 1))),
            vec![Rule::OutsideReportPeriod]
        );
        assert_eq!(nc(&at(d(2024, 6, 1))), vec![]);
        // APC: the episode start is the activity date.
        let mut r = apc("B1");
        apc_mut(&mut r).episode_start_date = Some(d(2024, 6, 1));
        assert_eq!(
            warnings_of(&bulk(Dataset::Apc), &r),
            vec![Rule::OutsideReportPeriod]
        );
        // EC: the arrival date.
        let mut r = ec("B1");
        ec_mut(&mut r).arrival_datetime = d(2024, 4, 30).and_hms_opt(23, 59, 59);
        assert_eq!(
            warnings_of(&bulk(Dataset::Ec), &r),
            vec![Rule::OutsideReportPeriod]
        );
    }

    #[test]
    fn warnings_combine_into_the_bitmask() {
        let mut r = apc("B1");
        r.common.nhs_number = None; // W01 bit 0
        r.common.commissioner_code = None; // W05 bit 4
        apc_mut(&mut r).primary_procedure = Some("W37".into()); // W07 bit 6
        let w = record_warnings(&net_change(Dataset::Apc), &r, &refdata());
        // 1 + 16 + 64 = 81
        assert_eq!(w.0, 0b101_0001);
        assert_eq!(w.0, 81);
    }
}
