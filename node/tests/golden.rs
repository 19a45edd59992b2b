//! Golden rule files: every rule of `docs/rules.md` shown by small cases written by hand, run
//! against BOTH implementations of the rules: the node (`sus_node::ingest::submit` into a real
//! `Store`, then `Store::scan_live`) and the generator's independent oracle
//! (`sus_client::generator::oracle::Store`, fed by `sus_client::generator::read`).
//!
//! The cases are in `tests/golden/*.txt`, one file per rule area. The expected values in them were
//! worked out from `docs/rules.md` and the reference CSVs by hand; the comment above a number says
//! how. Run `GOLDEN_REWRITE=1 cargo test --test golden` to rewrite every expected block with what
//! the NODE produced (then review the change with `git diff`); `GOLDEN_FILTER=text` runs only the
//! cases whose name contains `text`.
//!
//! What the oracle does not implement is checked against the node only: the oracle has no
//! whole-submission rules (R01-R08) and no idempotency by submission id, so a submission the file
//! expects to be `rejected` or `resent` is not given to the oracle (its live state must then be
//! unchanged, and is compared); and the oracle removes no identifiers, so `ids` is compared for the
//! node only. Warnings are compared as codes.
//!
//! # Format
//!
//! ```text
//! # A comment. Blank lines and comments may stand anywhere except inside a table or an
//! # expected block (an expected block ends at the first blank line or comment).
//! @append 2024-25/mff.csv          reference data override (before the first case: for the
//! R1X,Test trust,1.500000          whole file; after a case's `===`: for that case). `@append`
//! @end                             adds lines to a copy of a refdata file, `@replace` replaces it.
//!
//! === case-name
//! # One line: the rule the case shows (required).
//! >>> apc net_change S1 RR9        dataset, protocol, submission id, sender
//! cds_unique_id | admission_method | discharge_date     the columns that matter; every other
//! A1            | 21               | 2024-05-03         column comes from the default record
//! <<< accepted inserted=1          the verdict: counts (non-zero), resent, warning tally
//! apc A1 hrg=DZ40C spell_hrg=DZ40C pod=NEL base=712451 mff=1.187991 price=846385 ...
//! ```
//!
//! A submission line may add `group=010 period=2024-04-01..2024-04-30
//! extract=2024-05-03T10:00:00 prime=02T00` (Bulk Replacement), `drop=column,column` (columns left
//! out of the file) and `raw` (the lines up to `<<<` are the file itself, `\xNN` escapes allowed;
//! no lines is a file of 0 bytes). A column that the dataset does not have is written as it is. A
//! cell left empty in a table is a blank item. Deletions (`cds_update_type` 1) get only their key
//! items from the default record.
//!
//! Default record (valid and unremarkable): common items `cds_update_type` 9,
//! `cds_applicable_datetime` 2024-06-01T09:00:00, provider `RR9` (MFF 2024-25 1.187991, 2023-24
//! 1.187177), site `RR901`, commissioner `02T00`, GP `A96507`, NHS number `9434765919` status `01`,
//! local id `LP0001`, born 1980-06-15, sex 1, ethnic category A, postcode `LS1 4AP`. APC: spell
//! number `SP-<cds_unique_id>` (each record its own spell unless the case names one), episode 1,
//! last episode Y, method 11, source 19, class 1 (ordinary elective), discharge method 1,
//! destination 19, admitted and episode started 2024-05-01, discharged and episode ended
//! 2024-05-03, specialty and TFC 300, diagnosis `J441` (→ `DZ40C` without secondaries), no
//! procedure. OP: 2024-05-10, attended `5`, first attendance `1`, mechanism `01`, TFC 100, outcome
//! 1. EC: arrival 2024-05-10T10:00:00, departure 13:30, type `01`, mode 1, acuity 3, no codes.
//!
//! Expected block: `<<< accepted|rejected` and its counts (`inserted replaced deleted stale
//! bulk_deleted`, only those not 0), `resent` for the stored answer to a resend, `Wnn=count` per
//! warning rule raised in the file; `! RULE record=N id=ID item=ITEM` per finding of a rejection;
//! then every live record of the store, by dataset and id:
//! `<dataset> <id> hrg= spell_hrg= pod= base= excess_days= excess= mff= price= year= age=
//! episode_los= spell_los= warnings= restricted=Y ids=removed excluded="reason"` (pence;
//! `ids=removed`: NHS number, local id, date of birth, postcode and spell number all blank; a
//! field blank, 0 or false is left out, except `price`; `age` and the LoS are shown when known, 0
//! included; `mff` only on rows with a tariff year: the node stores 1.000000 where a row is not
//! priced).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::UInt32Type;
use arrow::util::display::array_value_to_string;
use chrono::{NaiveDate, NaiveDateTime};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use sus_client::generator::model::Dataset as ODataset;
use sus_client::generator::oracle::{self, BulkEnvelope, Priced};
use sus_client::generator::read;
use sus_client::generator::refdata::RefData as ORefData;
use sus_node::model::{Dataset, Protocol, Rule, SubmissionMeta};
use sus_node::refdata::RefData;
use sus_node::report::{Outcome, SubmissionReport};
use sus_node::store::Store;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn refdata_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata")
}

// ---------------------------------------------------------------------------------------------
// The file format
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Override {
    append: bool,
    path: String,
    lines: Vec<String>,
}

#[derive(Debug, Clone)]
enum Body {
    Table {
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    Raw(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Bulk {
    group: String,
    start: NaiveDate,
    end: NaiveDate,
    extract: NaiveDateTime,
    prime: String,
}

#[derive(Debug, Clone)]
struct Submission {
    /// 1-based line of `>>>`.
    line: usize,
    dataset: Dataset,
    submission_id: String,
    sender: String,
    bulk: Option<Bulk>,
    drop: Vec<String>,
    body: Body,
    /// The expected block as written (verdict, findings, records), if any.
    expected: Option<Block>,
    /// Lines (0-based, end exclusive) the expected block occupies, or where to insert one.
    expected_at: (usize, usize),
}

/// What a submission produced (or is expected to): verdict line, findings and live records.
#[derive(Debug, Clone, Default, PartialEq)]
struct Block {
    verdict: String,
    issues: Vec<String>,
    records: BTreeMap<(String, String), Fields>,
}

/// Field name → value of one live record.
type Fields = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct Case {
    name: String,
    line: usize,
    overrides: Vec<Override>,
    submissions: Vec<Submission>,
}

#[derive(Debug)]
struct GoldenFile {
    name: String,
    path: PathBuf,
    lines: Vec<String>,
    overrides: Vec<Override>,
    cases: Vec<Case>,
}

fn is_block_end(line: &str) -> bool {
    let t = line.trim();
    t.is_empty()
        || t.starts_with('#')
        || t.starts_with(">>>")
        || t.starts_with("===")
        || t.starts_with('@')
        || t.starts_with("<<<")
}

fn parse_file(path: &Path) -> Result<GoldenFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let err = |i: usize, m: &str| format!("{name} line {}: {m}", i + 1);
    let mut file = GoldenFile {
        name: name.clone(),
        path: path.to_path_buf(),
        lines: lines.clone(),
        overrides: Vec::new(),
        cases: Vec::new(),
    };
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            i += 1;
        } else if let Some(rest) = t.strip_prefix('@') {
            let (mode, rel) = rest
                .split_once(' ')
                .ok_or_else(|| err(i, "@append/@replace PATH"))?;
            let append = match mode {
                "append" => true,
                "replace" => false,
                _ => return Err(err(i, "expected @append or @replace")),
            };
            let start = i;
            i += 1;
            let mut body = Vec::new();
            while i < lines.len() && lines[i].trim() != "@end" {
                body.push(lines[i].clone());
                i += 1;
            }
            if i == lines.len() {
                return Err(err(start, "no @end"));
            }
            i += 1;
            let o = Override {
                append,
                path: rel.trim().to_string(),
                lines: body,
            };
            match file.cases.last_mut() {
                Some(c) => c.overrides.push(o),
                None => file.overrides.push(o),
            }
        } else if let Some(rest) = t.strip_prefix("===") {
            let case_name = rest.trim().to_string();
            let described = lines
                .get(i + 1)
                .is_some_and(|l| l.trim().starts_with('#') && l.trim().len() > 2);
            if case_name.is_empty() || !described {
                return Err(err(i, "a case is `=== name` then a one-line `# comment`"));
            }
            if file.cases.iter().any(|c| c.name == case_name) {
                return Err(err(i, &format!("case {case_name} twice")));
            }
            file.cases.push(Case {
                name: case_name,
                line: i + 1,
                overrides: Vec::new(),
                submissions: Vec::new(),
            });
            i += 2;
        } else if let Some(rest) = t.strip_prefix(">>>") {
            let case = file
                .cases
                .last_mut()
                .ok_or_else(|| err(i, ">>> before any === case"))?;
            let (sub, next) = parse_submission(&lines, i, rest).map_err(|m| err(i, &m))?;
            case.submissions.push(sub);
            i = next;
        } else {
            return Err(err(i, &format!("unexpected line `{t}`")));
        }
    }
    Ok(file)
}

fn parse_submission(
    lines: &[String],
    at: usize,
    rest: &str,
) -> Result<(Submission, usize), String> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    if words.len() < 4 {
        return Err("`>>> DATASET PROTOCOL SUBMISSION_ID SENDER [options]`".into());
    }
    let dataset = Dataset::parse(words[0]).ok_or("unknown dataset")?;
    let bulk_protocol = match words[1] {
        "net_change" => false,
        "bulk_replacement" => true,
        p => return Err(format!("unknown protocol {p}")),
    };
    let mut opts: HashMap<&str, &str> = HashMap::new();
    let mut raw = false;
    for w in &words[4..] {
        match w.split_once('=') {
            Some((k, v)) => {
                opts.insert(k, v);
            }
            None if *w == "raw" => raw = true,
            None => return Err(format!("unknown option {w}")),
        }
    }
    let bulk = if bulk_protocol {
        let get = |k: &str| opts.get(k).copied().ok_or(format!("bulk needs {k}="));
        let (s, e) = get("period")?.split_once("..").ok_or("period=START..END")?;
        let date = |v: &str| NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|e| e.to_string());
        Some(Bulk {
            group: get("group")?.to_string(),
            start: date(s)?,
            end: date(e)?,
            extract: NaiveDateTime::parse_from_str(get("extract")?, "%Y-%m-%dT%H:%M:%S")
                .map_err(|e| e.to_string())?,
            prime: get("prime")?.to_string(),
        })
    } else {
        None
    };
    let drop = opts
        .get("drop")
        .map(|d| d.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let mut i = at + 1;
    let mut table_end = i;
    let body = if raw {
        let mut bytes = Vec::new();
        while i < lines.len() && !lines[i].trim_start().starts_with("<<<") {
            bytes.extend(unescape(&lines[i]));
            bytes.push(b'\n');
            i += 1;
        }
        table_end = i;
        Body::Raw(bytes)
    } else {
        let mut table: Vec<Vec<String>> = Vec::new();
        while i < lines.len() {
            let t = lines[i].trim();
            if t.starts_with("<<<")
                || t.starts_with(">>>")
                || t.starts_with("===")
                || t.starts_with('@')
            {
                break;
            }
            if !t.is_empty() && !t.starts_with('#') {
                table.push(t.split('|').map(|c| c.trim().to_string()).collect());
                table_end = i + 1;
            }
            i += 1;
        }
        let mut rows = table.into_iter();
        let header = rows.next().ok_or("a table needs a header line")?;
        let rows: Vec<Vec<String>> = rows.collect();
        if let Some(r) = rows.iter().find(|r| r.len() != header.len()) {
            return Err(format!(
                "a row has {} cells, the header {}: {r:?}",
                r.len(),
                header.len()
            ));
        }
        if !header.iter().any(|h| h == "cds_unique_id") {
            return Err("a table needs a cds_unique_id column".into());
        }
        Body::Table { header, rows }
    };
    let (expected, expected_at, next) = if lines.get(i).is_some_and(|l| l.trim().starts_with("<<<"))
    {
        let start = i;
        let verdict = lines[i].trim().trim_start_matches("<<<").trim().to_string();
        let mut block = Block {
            verdict,
            ..Block::default()
        };
        i += 1;
        while i < lines.len() && !is_block_end(&lines[i]) {
            let t = lines[i].trim();
            if let Some(issue) = t.strip_prefix('!') {
                block.issues.push(issue.trim().to_string());
            } else {
                let (key, fields) = parse_record(t)?;
                block.records.insert(key, fields);
            }
            i += 1;
        }
        (Some(block), (start, i), i)
    } else {
        (None, (table_end, table_end), i)
    };
    Ok((
        Submission {
            line: at + 1,
            dataset,
            submission_id: words[2].to_string(),
            sender: words[3].to_string(),
            bulk,
            drop,
            body,
            expected,
            expected_at,
        },
        next,
    ))
}

fn unescape(line: &str) -> Vec<u8> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && let Some(v) = line
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// `apc A1 hrg=X ... excluded="a reason"`.
fn parse_record(line: &str) -> Result<((String, String), Fields), String> {
    let mut rest = line.trim();
    let mut word = || -> Option<String> {
        let t = rest.trim_start();
        if t.is_empty() {
            return None;
        }
        let end = t.find(' ').unwrap_or(t.len());
        let w = t[..end].to_string();
        rest = &t[end..];
        Some(w)
    };
    let dataset = word().ok_or("record line: dataset")?;
    let id = word().ok_or("record line: id")?;
    let mut fields = Fields::new();
    let mut t = rest.trim_start();
    while !t.is_empty() {
        let eq = t
            .find('=')
            .ok_or_else(|| format!("record {id}: `{t}` is not key=value"))?;
        let key = t[..eq].to_string();
        let after = &t[eq + 1..];
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let close = q
                .find('"')
                .ok_or_else(|| format!("record {id}: unclosed quote"))?;
            (q[..close].to_string(), &q[close + 1..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        if !FIELDS.contains(&key.as_str()) {
            return Err(format!("record {id}: unknown field {key}"));
        }
        fields.insert(key, value);
        t = next.trim_start();
    }
    Ok(((dataset, id), fields))
}

/// Every field of a live record, in the order they are written.
const FIELDS: [&str; 16] = [
    "hrg",
    "spell_hrg",
    "pod",
    "base",
    "excess_days",
    "excess",
    "mff",
    "price",
    "year",
    "age",
    "episode_los",
    "spell_los",
    "warnings",
    "restricted",
    "ids",
    "excluded",
];

/// The fields the oracle derives (all but `ids`: it removes no identifiers).
const ORACLE_FIELDS: [&str; 15] = [
    "hrg",
    "spell_hrg",
    "pod",
    "base",
    "excess_days",
    "excess",
    "mff",
    "price",
    "year",
    "age",
    "episode_los",
    "spell_los",
    "warnings",
    "restricted",
    "excluded",
];

fn render_record(dataset: &str, id: &str, f: &Fields) -> String {
    let mut s = format!("{dataset} {id}");
    for k in FIELDS {
        if let Some(v) = f.get(k) {
            if k == "excluded" || v.contains(' ') || v.is_empty() {
                let _ = write!(s, " {k}=\"{v}\"");
            } else {
                let _ = write!(s, " {k}={v}");
            }
        }
    }
    s
}

fn render_block(b: &Block) -> Vec<String> {
    let mut out = vec![format!("<<< {}", b.verdict).trim_end().to_string()];
    out.extend(b.issues.iter().map(|i| format!("! {i}")));
    out.extend(b.records.iter().map(|((d, id), f)| render_record(d, id, f)));
    out
}

// ---------------------------------------------------------------------------------------------
// Building the submission file
// ---------------------------------------------------------------------------------------------

fn default_value(dataset: Dataset, column: &str, id: &str) -> String {
    let v = match column {
        "cds_update_type" => "9",
        "cds_applicable_datetime" => "2024-06-01T09:00:00",
        "provider_code" => "RR9",
        "site_code" => "RR901",
        "commissioner_code" => "02T00",
        "gp_practice_code" => "A96507",
        "nhs_number" => "9434765919",
        "nhs_number_status" => "01",
        "local_patient_id" => "LP0001",
        "date_of_birth" => "1980-06-15",
        "sex" => "1",
        "ethnic_category" => "A",
        "postcode" => "LS1 4AP",
        _ => "",
    };
    if !v.is_empty() {
        return v.to_string();
    }
    match (dataset, column) {
        (Dataset::Apc, "hospital_provider_spell_number") => format!("SP-{id}"),
        (Dataset::Apc, c) => match c {
            "episode_number" => "1",
            "last_episode_in_spell" => "Y",
            "admission_method" => "11",
            "admission_source" => "19",
            "patient_classification" => "1",
            "discharge_method" => "1",
            "discharge_destination" => "19",
            "admission_date" | "episode_start_date" => "2024-05-01",
            "discharge_date" | "episode_end_date" => "2024-05-03",
            "main_specialty" | "treatment_function_code" => "300",
            "primary_diagnosis" => "J441",
            _ => "",
        }
        .to_string(),
        (Dataset::Op, c) => match c {
            "appointment_date" => "2024-05-10",
            "attended_or_did_not_attend" => "5",
            "first_attendance" => "1",
            "consultation_mechanism" => "01",
            "treatment_function_code" => "100",
            "outcome_of_attendance" => "1",
            _ => "",
        }
        .to_string(),
        (Dataset::Ec, c) => match c {
            "arrival_datetime" => "2024-05-10T10:00:00",
            "departure_datetime" => "2024-05-10T13:30:00",
            "department_type" => "01",
            "arrival_mode" => "1",
            "acuity" => "3",
            _ => "",
        }
        .to_string(),
    }
}

const KEY_ITEMS: [&str; 4] = [
    "cds_unique_id",
    "cds_update_type",
    "cds_applicable_datetime",
    "provider_code",
];

fn csv_bytes(s: &Submission) -> Vec<u8> {
    let (header, rows) = match &s.body {
        Body::Raw(b) => return b.clone(),
        Body::Table { header, rows } => (header, rows),
    };
    let mut columns: Vec<String> = sus_node::schema::items(s.dataset)
        .iter()
        .map(|it| it.name.to_string())
        .filter(|c| !s.drop.contains(c))
        .collect();
    for h in header {
        if !columns.contains(h) && !s.drop.contains(h) {
            columns.push(h.clone());
        }
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&columns).expect("csv header");
    for row in rows {
        let given: HashMap<&str, &str> = header
            .iter()
            .map(String::as_str)
            .zip(row.iter().map(String::as_str))
            .collect();
        let id = given.get("cds_unique_id").copied().unwrap_or("");
        let delete = given.get("cds_update_type") == Some(&"1");
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match given.get(c.as_str()) {
                Some(v) => (*v).to_string(),
                None if delete && !KEY_ITEMS.contains(&c.as_str()) => String::new(),
                None => default_value(s.dataset, c, id),
            })
            .collect();
        w.write_record(&cells).expect("csv row");
    }
    w.into_inner().expect("csv flush")
}

fn meta(s: &Submission) -> SubmissionMeta {
    SubmissionMeta {
        submission_id: s.submission_id.clone(),
        sender: s.sender.clone(),
        dataset: s.dataset,
        protocol: match &s.bulk {
            None => Protocol::NetChange,
            Some(b) => Protocol::BulkReplacement {
                bulk_group: b.group.clone(),
                period_start: b.start,
                period_end: b.end,
                extract_datetime: b.extract,
                prime_recipient: b.prime.clone(),
            },
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Running the node and the oracle
// ---------------------------------------------------------------------------------------------

fn warning_codes(bits: u32) -> String {
    Rule::WARNINGS
        .iter()
        .filter(|r| r.warning_bit().is_some_and(|b| bits & b != 0))
        .map(|r| r.code()[..3].to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn counts_verdict(
    outcome: &str,
    resent: bool,
    counts: [(&str, u64); 5],
    tally: &[(String, u64)],
) -> String {
    let mut v = outcome.to_string();
    if resent {
        v.push_str(" resent");
    }
    for (k, n) in counts {
        if n > 0 {
            let _ = write!(v, " {k}={n}");
        }
    }
    for (k, n) in tally {
        let _ = write!(v, " {k}={n}");
    }
    v
}

fn node_verdict(r: &SubmissionReport) -> (String, Vec<String>) {
    match r.outcome {
        Outcome::Rejected => {
            let mut issues = Vec::new();
            if let Some(rej) = &r.rejection {
                for i in &rej.issues {
                    let mut s = i.rule.code().to_string();
                    if let Some(n) = i.ordinal {
                        let _ = write!(s, " record={n}");
                    }
                    if let Some(id) = &i.cds_unique_id {
                        let _ = write!(s, " id={id}");
                    }
                    if let Some(item) = &i.item {
                        let _ = write!(s, " item={item}");
                    }
                    issues.push(s);
                }
                if rej.more > 0 {
                    issues.push(format!("and {} more", rej.more));
                }
            }
            ("rejected".to_string(), issues)
        }
        Outcome::Accepted => {
            let tally: Vec<(String, u64)> = r
                .warnings
                .iter()
                .map(|w| (w.rule.code()[..3].to_string(), w.count))
                .collect();
            (
                counts_verdict(
                    "accepted",
                    r.resent,
                    [
                        ("inserted", r.inserted),
                        ("replaced", r.replaced),
                        ("deleted", r.deleted),
                        ("stale", r.stale),
                        ("bulk_deleted", r.bulk_deleted),
                    ],
                    &tally,
                ),
                Vec::new(),
            )
        }
    }
}

fn cell(batch: &RecordBatch, name: &str, row: usize) -> Option<String> {
    let col = batch.column_by_name(name)?;
    if col.is_null(row) {
        return None;
    }
    array_value_to_string(col, row).ok()
}

fn node_live(store: &Store) -> BTreeMap<(String, String), Fields> {
    let mut out = BTreeMap::new();
    for ds in Dataset::ALL {
        for batch in store.scan_live(ds).expect("scan_live") {
            for row in 0..batch.num_rows() {
                let id = cell(&batch, "cds_unique_id", row).unwrap_or_default();
                let mut f = Fields::new();
                let mut put = |k: &str, v: Option<String>| {
                    if let Some(v) = v.filter(|v| !v.is_empty()) {
                        f.insert(k.to_string(), v);
                    }
                };
                let nonzero = |v: Option<String>| v.filter(|v| v != "0" && v != "0.000000");
                put("hrg", cell(&batch, "hrg", row));
                put("spell_hrg", cell(&batch, "spell_hrg", row));
                put("pod", cell(&batch, "pod", row));
                put("base", nonzero(cell(&batch, "base_price", row)));
                put("excess_days", nonzero(cell(&batch, "excess_bed_days", row)));
                put("excess", nonzero(cell(&batch, "excess_payment", row)));
                // The node stores 1.000000 as the MFF of a row that is not priced (no tariff
                // year): shown, like the oracle's, only with a tariff year.
                let year = cell(&batch, "tariff_year", row);
                put(
                    "mff",
                    nonzero(cell(&batch, "mff", row)).filter(|_| year.is_some()),
                );
                put(
                    "price",
                    Some(cell(&batch, "price", row).unwrap_or_default()),
                );
                put("year", year);
                put("age", cell(&batch, "age_at_activity", row));
                put("episode_los", cell(&batch, "episode_los", row));
                put("spell_los", cell(&batch, "spell_los", row));
                let bits = batch
                    .column_by_name("warnings")
                    .map_or(0, |c| c.as_primitive::<UInt32Type>().value(row));
                put("warnings", Some(warning_codes(bits)));
                if cell(&batch, "restricted", row).as_deref() == Some("true") {
                    put("restricted", Some("Y".into()));
                }
                let mut ids = vec![
                    "nhs_number",
                    "local_patient_id",
                    "date_of_birth",
                    "postcode",
                ];
                if ds == Dataset::Apc {
                    ids.push("hospital_provider_spell_number");
                }
                if ids.iter().all(|c| cell(&batch, c, row).is_none()) {
                    put("ids", Some("removed".into()));
                }
                if cell(&batch, "pbr_excluded", row).as_deref() == Some("true") {
                    f.insert(
                        "excluded".into(),
                        cell(&batch, "exclusion_reason", row).unwrap_or_default(),
                    );
                } else if let Some(r) = cell(&batch, "exclusion_reason", row) {
                    f.insert("excluded".into(), format!("NOT EXCLUDED, reason {r}"));
                }
                out.insert((ds.name().to_string(), id), f);
            }
        }
    }
    out
}

fn mff_text(m: i64) -> String {
    format!("{}.{:06}", m / 1_000_000, m % 1_000_000)
}

fn oracle_fields(p: &Priced) -> Fields {
    let mut f = Fields::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() && v != "0" {
            f.insert(k.to_string(), v);
        }
    };
    put("hrg", p.hrg.clone());
    put("spell_hrg", p.spell_hrg.clone());
    put("pod", p.pod.clone());
    put("base", p.base_price.to_string());
    put("excess_days", p.excess_bed_days.to_string());
    put("excess", p.excess_payment.to_string());
    put(
        "mff",
        p.mff.filter(|m| *m != 0).map(mff_text).unwrap_or_default(),
    );
    put("warnings", warning_codes(u32::from(p.warnings)));
    put("year", p.tariff_year.clone());
    // Age and lengths of stay are shown when known, 0 included.
    for (k, v) in [
        ("age", p.age.map(i64::from)),
        ("episode_los", p.episode_los),
        ("spell_los", p.spell_los),
    ] {
        if let Some(v) = v {
            f.insert(k.to_string(), v.to_string());
        }
    }
    if p.restricted {
        f.insert("restricted".into(), "Y".into());
    }
    f.insert("price".into(), p.price.to_string());
    if p.excluded {
        f.insert("excluded".into(), p.reason.clone());
    } else if !p.reason.is_empty() {
        f.insert(
            "excluded".into(),
            format!("NOT EXCLUDED, reason {}", p.reason),
        );
    }
    f
}

fn oracle_dataset(d: Dataset) -> ODataset {
    match d {
        Dataset::Apc => ODataset::Apc,
        Dataset::Op => ODataset::Op,
        Dataset::Ec => ODataset::Ec,
    }
}

fn oracle_live(store: &oracle::Store) -> BTreeMap<(String, String), Fields> {
    store
        .live()
        .into_iter()
        .map(|(id, d, p)| ((d.name().to_string(), id), oracle_fields(&p)))
        .collect()
}

/// Differences between an expected and a produced block, one line each.
fn compare(expected: &Block, got: &Block, fields: &[&str], verdict: bool) -> Vec<String> {
    let mut out = Vec::new();
    if verdict && expected.verdict != got.verdict {
        out.push(format!(
            "verdict: expected `{}`, got `{}`",
            expected.verdict, got.verdict
        ));
    }
    if verdict && expected.issues != got.issues {
        out.push(format!(
            "findings: expected {:?}, got {:?}",
            expected.issues, got.issues
        ));
    }
    for (key, e) in &expected.records {
        let Some(g) = got.records.get(key) else {
            out.push(format!(
                "record {} {}: expected live, not there",
                key.0, key.1
            ));
            continue;
        };
        for k in fields {
            let (ev, gv) = (e.get(*k), g.get(*k));
            if ev != gv {
                let show =
                    |v: Option<&String>| v.map_or("(blank)".to_string(), |v| format!("`{v}`"));
                out.push(format!(
                    "record {} {}: {k} expected {}, got {}",
                    key.0,
                    key.1,
                    show(ev),
                    show(gv)
                ));
            }
        }
    }
    for (key, g) in &got.records {
        if !expected.records.contains_key(key) {
            out.push(format!(
                "record {} {}: live but not expected: {}",
                key.0,
                key.1,
                render_record(&key.0, &key.1, g)
            ));
        }
    }
    out
}

/// Reference data: the project's folder, or a temporary copy with the overrides applied.
struct Refs {
    node: RefData,
    oracle: ORefData,
    _dir: Option<tempfile::TempDir>,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

fn load_refs(overrides: &[Override]) -> Result<Refs, String> {
    if overrides.is_empty() {
        let dir = refdata_dir();
        return Ok(Refs {
            node: RefData::load(&dir).map_err(|e| e.to_string())?,
            oracle: ORefData::load(&dir).map_err(|e| e.to_string())?,
            _dir: None,
        });
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    copy_dir(&refdata_dir(), tmp.path());
    for o in overrides {
        let path = tmp.path().join(&o.path);
        let mut text = if o.append {
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", o.path))?
        } else {
            String::new()
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        for l in &o.lines {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
    }
    Ok(Refs {
        node: RefData::load(tmp.path()).map_err(|e| format!("refdata with overrides: {e}"))?,
        oracle: ORefData::load(tmp.path())
            .map_err(|e| format!("oracle refdata with overrides: {e}"))?,
        _dir: Some(tmp),
    })
}

/// What one case produced, per submission: the node's block and the oracle's (verdict set only
/// when the oracle was given the submission).
struct CaseRun {
    node: Vec<Block>,
    oracle: Vec<(bool, Block)>,
}

fn run_case(case: &Case, refs: &Refs, rewrite: bool) -> Result<CaseRun, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = Store::open(dir.path()).map_err(|e| e.to_string())?;
    let mut ostore = oracle::Store::default();
    let mut run = CaseRun {
        node: Vec::new(),
        oracle: Vec::new(),
    };
    for (n, s) in case.submissions.iter().enumerate() {
        let bytes = csv_bytes(s);
        let m = meta(s);
        let file = format!("{}-{}.csv", s.submission_id, s.dataset.name());
        let report =
            sus_node::ingest::submit(&refs.node, &store, &m, &file, &bytes, &Default::default())
                .map_err(|e| {
                    format!(
                        "submission {} ({}): node error: {e}",
                        n + 1,
                        s.submission_id
                    )
                })?;
        let (verdict, issues) = node_verdict(&report);
        let node_block = Block {
            verdict,
            issues,
            records: node_live(&store),
        };
        // The oracle is given what the file expects to be accepted (the node's verdict when
        // rewriting), and never a resend.
        let verdict_source = if rewrite {
            Some(node_block.verdict.as_str())
        } else {
            s.expected.as_ref().map(|e| e.verdict.as_str())
        };
        let to_oracle = verdict_source
            .is_some_and(|v| v.starts_with("accepted") && !v.split(' ').any(|w| w == "resent"));
        let mut oblock = Block::default();
        if to_oracle {
            let recs = read::records(oracle_dataset(s.dataset), &bytes)
                .map_err(|e| format!("submission {}: oracle reader: {e}", n + 1))?;
            let bulk = s.bulk.as_ref().map(|b| BulkEnvelope {
                period_start: b.start,
                period_end: b.end,
                extract: b.extract,
            });
            let done = ostore.submit(
                &refs.oracle,
                oracle_dataset(s.dataset),
                &s.sender,
                bulk.as_ref(),
                &recs,
            );
            let mut tally: BTreeMap<String, u64> = BTreeMap::new();
            for p in &done.priced {
                for code in warning_codes(u32::from(p.warnings))
                    .split(',')
                    .filter(|c| !c.is_empty())
                {
                    *tally.entry(code.to_string()).or_default() += 1;
                }
            }
            let tally: Vec<(String, u64)> = tally.into_iter().collect();
            let c = done.counts;
            oblock.verdict = counts_verdict(
                "accepted",
                false,
                [
                    ("inserted", c.inserted),
                    ("replaced", c.replaced),
                    ("deleted", c.deleted),
                    ("stale", c.stale),
                    ("bulk_deleted", c.bulk_deleted),
                ],
                &tally,
            );
        }
        oblock.records = oracle_live(&ostore);
        run.node.push(node_block);
        run.oracle.push((to_oracle, oblock));
    }
    Ok(run)
}

#[test]
fn golden_rule_files() {
    let rewrite = std::env::var("GOLDEN_REWRITE").is_ok_and(|v| !v.is_empty() && v != "0");
    let filter = std::env::var("GOLDEN_FILTER").unwrap_or_default();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/golden")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no golden files");
    let default_refs = load_refs(&[]).expect("refdata");
    let mut failures: Vec<String> = Vec::new();
    let mut cases_run = 0;
    for path in &paths {
        let file = match parse_file(path) {
            Ok(f) => f,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let mut new_lines = file.lines.clone();
        // Splices from the end, so earlier line numbers stay valid.
        let mut splices: Vec<((usize, usize), Vec<String>)> = Vec::new();
        for case in &file.cases {
            if !filter.is_empty() && !case.name.contains(&filter) {
                continue;
            }
            cases_run += 1;
            let place = format!("{}: case {} (line {})", file.name, case.name, case.line);
            let overrides: Vec<Override> = file
                .overrides
                .iter()
                .chain(&case.overrides)
                .cloned()
                .collect();
            let owned;
            let refs = if overrides.is_empty() {
                &default_refs
            } else {
                match load_refs(&overrides) {
                    Ok(r) => {
                        owned = r;
                        &owned
                    }
                    Err(e) => {
                        failures.push(format!("{place}: {e}"));
                        continue;
                    }
                }
            };
            let run = match run_case(case, refs, rewrite) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{place}: {e}"));
                    continue;
                }
            };
            for (n, s) in case.submissions.iter().enumerate() {
                let at = format!(
                    "{place}, submission {} ({} line {})",
                    n + 1,
                    s.submission_id,
                    s.line
                );
                let node = &run.node[n];
                if rewrite {
                    splices.push((s.expected_at, render_block(node)));
                }
                let expected = if rewrite {
                    Some(node)
                } else {
                    s.expected.as_ref()
                };
                let Some(expected) = expected else {
                    failures.push(format!("{at}: no expected block (`<<< ...`)"));
                    continue;
                };
                let diffs = compare(expected, node, &FIELDS, true);
                if !diffs.is_empty() {
                    failures.push(format!("{at}: NODE differs:\n    {}", diffs.join("\n    ")));
                }
                let (given, oblock) = &run.oracle[n];
                let diffs = compare(
                    &Block {
                        issues: Vec::new(),
                        ..expected.clone()
                    },
                    oblock,
                    &ORACLE_FIELDS,
                    *given,
                );
                if !diffs.is_empty() {
                    failures.push(format!(
                        "{at}: ORACLE differs:\n    {}",
                        diffs.join("\n    ")
                    ));
                }
            }
        }
        if rewrite && !splices.is_empty() {
            splices.sort_by_key(|s| std::cmp::Reverse(s.0.0));
            for ((start, end), block) in splices {
                new_lines.splice(start..end, block);
            }
            let mut text = new_lines.join("\n");
            text.push('\n');
            std::fs::write(&file.path, text).expect("rewrite golden file");
        }
    }
    eprintln!(
        "golden: {cases_run} cases in {} files, {} differences",
        paths.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} golden difference(s){}:\n\n{}",
        failures.len(),
        if rewrite {
            " (files rewritten from the node; the oracle's differences remain)"
        } else {
            ""
        },
        failures.join("\n\n")
    );
}
