//! The deterministic SYNTHETIC DATA GENERATOR (`sus gen`) and its independent pricing ORACLE.
//!
//! [`generate`] reads the reference data folder, writes submission files
//! `NNNN-<dataset>-<sender>-<nc|bulk>.csv` with their `.meta.json` envelopes (`docs/rules.md` §1),
//! to be submitted in `NNNN` order, and `expected.json`: what the store must hold once every file
//! has been applied, computed by the [`oracle`] from `docs/rules.md` alone.
//!
//! Same seed and configuration give byte-identical output.

pub mod model;
pub mod oracle;
pub mod read;
pub mod refdata;
pub mod synth;

pub use model::Dataset;

use crate::error::{Error, Result};
use chrono::{Duration, NaiveDate, NaiveDateTime};
use model::{Detail, Rec, date, datetime};
use oracle::{BulkEnvelope, Counts, DatasetTotals, ProviderTotals, Store};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use refdata::RefData;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use synth::{Synth, next_month, rng_for};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// One dataset, or `None` for all three mixed (APC 20 %, OP 55 %, EC 25 % of rows).
    pub dataset: Option<Dataset>,
    /// Original activity records to generate (corrections, re-sends and rejected files add more).
    pub rows: u64,
    pub seed: u64,
    pub refdata_dir: PathBuf,
    pub out_dir: PathBuf,
    /// Share of records given a per-record defect that produces a warning.
    pub invalid_share: f64,
    /// Share of submissions sent as Bulk Replacement.
    pub bulk_share: f64,
    /// Share of records (APC: spells) re-sent later as a replacement.
    pub replace_share: f64,
    /// Share of records (APC: spells) deleted later.
    pub delete_share: f64,
    /// Share of Net Change APC spells of two or more episodes whose last episode is sent later,
    /// in the corrections run: the spell stays unfinished until then, and the node must price it
    /// again over the episodes it stored earlier.
    pub split_spell_share: f64,
    /// Keep every version the oracle stores ([`Summary::history`]), to compare record by record.
    pub keep_history: bool,
    /// Most records in one file (a soft limit: APC spells are never split across files, except
    /// by `split_spell_share`).
    pub rows_per_file: u64,
    /// Also emit whole-submission-rejected files (R04, R05, R06, R07, R08).
    pub reject_files: bool,
    /// Also write `oracle/live.csv` (outside the `*.csv` of submissions): every record live at the end, with its derived fields, for tests
    /// that recompute aggregates row by row.
    pub write_live: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            dataset: None,
            rows: 10_000,
            seed: 1,
            refdata_dir: PathBuf::from("refdata"),
            out_dir: PathBuf::from("gen-out"),
            invalid_share: 0.02,
            bulk_share: 0.1,
            replace_share: 0.05,
            delete_share: 0.01,
            split_spell_share: 0.0,
            keep_history: false,
            rows_per_file: 50_000,
            reject_files: false,
            write_live: false,
        }
    }
}

/// Progress of a run, reported after every file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Original records written so far.
    pub rows_done: u64,
    /// Original records planned.
    pub rows_total: u64,
    /// Files written so far.
    pub files: u64,
}

/// The expected outcome of one submission file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubmissionOutcome {
    pub file: String,
    pub submission_id: String,
    pub sender: String,
    pub dataset: String,
    pub protocol: String,
    /// `accepted` or `rejected`.
    pub outcome: String,
    /// The rule code of a rejection (`R05-PROVIDER-UNKNOWN`, ...).
    pub rule: Option<String>,
    pub records: u64,
    pub inserted: u64,
    pub replaced: u64,
    pub deleted: u64,
    pub stale: u64,
    pub bulk_deleted: u64,
    /// Live episodes of earlier submissions stored again because this file changed their spell.
    pub rederived: u64,
    /// Sum of the prices the oracle derived for this submission's records (0 when rejected).
    pub price_pence: i64,
    /// A resend with an already applied (sender, submission id): the file whose report it gets.
    pub duplicate_of: Option<String>,
    /// The live records and price total of this sender's records of this dataset once the file is
    /// applied (unchanged when it is rejected or a resend): the states a reader may see between
    /// the sender's submissions.
    pub sender_after: BTreeMap<String, ProviderTotals>,
}

/// `expected.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Expected {
    pub seed: u64,
    pub rows: u64,
    pub dataset: String,
    pub files: u64,
    pub rows_written: u64,
    /// Live totals after every file is applied in order, by dataset.
    pub datasets: BTreeMap<String, DatasetTotals>,
    /// The three datasets together.
    pub all: DatasetTotals,
    /// provider → dataset → live totals.
    pub providers: BTreeMap<String, BTreeMap<String, ProviderTotals>>,
    /// provider → the sender that submits its records.
    pub sender_of: BTreeMap<String, String>,
    pub submissions: Vec<SubmissionOutcome>,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub files: u64,
    pub rows_written: u64,
    pub expected: Expected,
    pub out_dir: PathBuf,
    /// Every version the oracle stored, in order, when [`GenConfig::keep_history`] is set.
    pub history: Option<Vec<oracle::Version>>,
}

/// The Bulk Replacement header of a file.
#[derive(Debug, Clone)]
struct BulkSpec {
    group: String,
    start: NaiveDate,
    end: NaiveDate,
    extract: NaiveDateTime,
    prime: String,
}

#[derive(Serialize)]
struct Envelope<'a> {
    submission_id: &'a str,
    sender: &'a str,
    dataset: Dataset,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bulk_group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    period_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    period_end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extract_datetime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prime_recipient: Option<&'a str>,
}

/// A deliberate whole-file defect.
#[derive(Debug, Clone, Default)]
struct Special {
    /// (row, column, raw value) written instead of the record's value: R04.
    patch: Option<(usize, &'static str, String)>,
    /// Resend under this submission id (idempotency).
    submission_id: Option<String>,
}

/// Writes files and keeps the oracle's store in step.
struct Out<'a> {
    rd: &'a RefData,
    dir: PathBuf,
    files: u64,
    rows_written: u64,
    ids: BTreeMap<String, u32>,
    applied: BTreeMap<(String, String), usize>,
    store: Store,
    outcomes: Vec<SubmissionOutcome>,
}

impl Out<'_> {
    fn submit(
        &mut self,
        dataset: Dataset,
        sender: &str,
        recs: &[Rec],
        bulk: Option<&BulkSpec>,
        special: &Special,
    ) -> Result<usize> {
        self.files += 1;
        let file = format!(
            "{:04}-{}-{}-{}.csv",
            self.files,
            dataset.name(),
            sender,
            if bulk.is_some() { "bulk" } else { "nc" }
        );
        let submission_id = match &special.submission_id {
            Some(id) => id.clone(),
            None => {
                let n = self.ids.entry(sender.to_string()).or_insert(0);
                *n += 1;
                format!("S{:06}", *n)
            }
        };
        let path = self.dir.join(&file);
        write_csv(&path, dataset, recs, special.patch.as_ref())?;
        let env = Envelope {
            submission_id: &submission_id,
            sender,
            dataset,
            protocol: if bulk.is_some() {
                "bulk_replacement"
            } else {
                "net_change"
            },
            bulk_group: bulk.map(|b| b.group.as_str()),
            period_start: bulk.map(|b| date(b.start)),
            period_end: bulk.map(|b| date(b.end)),
            extract_datetime: bulk.map(|b| datetime(b.extract)),
            prime_recipient: bulk.map(|b| b.prime.as_str()),
        };
        let meta_path = self.dir.join(format!("{file}.meta.json"));
        let mut json = serde_json::to_string(&env)?;
        json.push('\n');
        std::fs::write(&meta_path, json).map_err(|e| Error::io(&meta_path, e))?;
        self.rows_written += recs.len() as u64;

        let mut o = SubmissionOutcome {
            file: file.clone(),
            submission_id: submission_id.clone(),
            sender: sender.to_string(),
            dataset: dataset.name().to_string(),
            protocol: env.protocol.to_string(),
            outcome: "accepted".into(),
            records: recs.len() as u64,
            ..SubmissionOutcome::default()
        };
        let key = (sender.to_string(), submission_id);
        if let Some(&first) = self.applied.get(&key) {
            let orig = self.outcomes[first].clone();
            o = SubmissionOutcome {
                file,
                duplicate_of: Some(orig.file.clone()),
                sender_after: self.store.sender_totals(sender, dataset),
                ..orig
            };
            self.outcomes.push(o);
            return Ok(self.outcomes.len() - 1);
        }
        let envelope = bulk.map(|b| BulkEnvelope {
            period_start: b.start,
            period_end: b.end,
            extract: b.extract,
        });
        let rule = if special.patch.is_some() {
            Some("R04-ITEM-FORMAT")
        } else if bulk.is_some_and(|b| b.group != dataset.bulk_group() || b.end < b.start)
            || (bulk.is_some() && recs.iter().any(|r| !r.common.upsert))
        {
            Some("R08-ENVELOPE")
        } else if recs
            .iter()
            .any(|r| !self.rd.providers.contains(&r.common.provider))
        {
            Some("R05-PROVIDER-UNKNOWN")
        } else if recs
            .iter()
            .any(|r| !self.rd.may_send(sender, &r.common.provider))
        {
            Some("R06-SENDER-NOT-REGISTERED")
        } else if envelope
            .as_ref()
            .is_some_and(|b| self.store.bulk_not_newer(sender, dataset, b))
        {
            Some("R07-BULK-EXTRACT-NOT-NEWER")
        } else {
            None
        };
        if let Some(rule) = rule {
            o.outcome = "rejected".into();
            o.rule = Some(rule.into());
        } else {
            let done = self
                .store
                .submit(self.rd, dataset, sender, envelope.as_ref(), recs);
            o.price_pence = done.priced.iter().map(|p| p.price).sum();
            o.rederived = done.rederived;
            let c: Counts = done.counts;
            o.inserted = c.inserted;
            o.replaced = c.replaced;
            o.deleted = c.deleted;
            o.stale = c.stale;
            o.bulk_deleted = c.bulk_deleted;
            self.applied.insert(key, self.outcomes.len());
        }
        o.sender_after = self.store.sender_totals(sender, dataset);
        self.outcomes.push(o);
        Ok(self.outcomes.len() - 1)
    }
}

fn write_csv(
    path: &Path,
    dataset: Dataset,
    recs: &[Rec],
    patch: Option<&(usize, &'static str, String)>,
) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = csv::WriterBuilder::new()
        .buffer_capacity(1 << 20)
        .from_writer(file);
    let header = dataset.header();
    w.write_record(&header).map_err(|e| Error::csv(path, e))?;
    for (i, r) in recs.iter().enumerate() {
        let mut cells = r.cells(dataset);
        if let Some((row, column, value)) = patch
            && *row == i
            && let Some(c) = header.iter().position(|h| h == column)
        {
            cells[c] = value.clone();
        }
        w.write_record(&cells).map_err(|e| Error::csv(path, e))?;
    }
    w.flush().map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// One planned submission period of one sender and dataset.
#[derive(Debug, Clone)]
struct Chunk {
    dataset: Dataset,
    sender: String,
    months: Vec<usize>,
    rows: u64,
    bulk: bool,
}

const MONTHS: usize = 24;

fn month_start(m: usize) -> NaiveDate {
    let y = 2023 + (3 + m as i32) / 12;
    let mo = (3 + m as u32) % 12 + 1;
    NaiveDate::from_ymd_opt(y, mo, 1).unwrap_or(NaiveDate::MIN)
}

fn split_groups(groups: Vec<Vec<Rec>>, max: u64) -> Vec<Vec<Rec>> {
    let mut parts: Vec<Vec<Rec>> = Vec::new();
    let mut cur: Vec<Rec> = Vec::new();
    for g in groups {
        if !cur.is_empty() && (cur.len() + g.len()) as u64 > max {
            parts.push(std::mem::take(&mut cur));
        }
        cur.extend(g);
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

fn deletion(r: &Rec, applicable: NaiveDateTime) -> Rec {
    Rec {
        common: model::Common {
            cds_unique_id: r.common.cds_unique_id.clone(),
            upsert: false,
            applicable,
            provider: r.common.provider.clone(),
            ..model::Common::default()
        },
        detail: Detail::Delete(r.activity_date()),
    }
}

/// A changed version of a record (APC: every episode of the spell gets one more secondary
/// diagnosis, moving its CC band; OP: first ↔ follow-up; EC: one more investigation).
fn modified(synth: &Synth<'_>, r: &Rec, rng: &mut ChaCha8Rng) -> Rec {
    let mut r = r.clone();
    match &mut r.detail {
        Detail::Apc(a) => {
            if a.secondary_diagnoses.len() < 12 {
                let extra = synth.extra_diagnosis(rng);
                a.secondary_diagnoses.push(extra);
            }
        }
        Detail::Op(o) => {
            o.first_attendance = if o.first_attendance == "1" { "2" } else { "1" }.into();
        }
        Detail::Ec(e) => {
            if let Some(code) = synth.extra_investigation(rng) {
                e.investigations.push(code);
                e.investigations.sort();
                e.investigations.dedup();
            }
        }
        Detail::Delete(_) => {}
    }
    r
}

/// Generates the files and `expected.json` (see the module documentation).
pub fn generate(cfg: &GenConfig, progress: &mut dyn FnMut(&Progress)) -> Result<Summary> {
    if cfg.rows_per_file == 0 {
        return Err(Error::Config("rows per file must be at least 1".into()));
    }
    for (name, v) in [
        ("invalid share", cfg.invalid_share),
        ("bulk share", cfg.bulk_share),
        ("replace share", cfg.replace_share),
        ("delete share", cfg.delete_share),
        ("split spell share", cfg.split_spell_share),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(Error::Config(format!("{name} {v} is not between 0 and 1")));
        }
    }
    if cfg.replace_share + cfg.delete_share > 1.0 {
        return Err(Error::Config(
            "replace share + delete share is more than 1".into(),
        ));
    }
    let rd = RefData::load(&cfg.refdata_dir)?;
    std::fs::create_dir_all(&cfg.out_dir).map_err(|e| Error::io(&cfg.out_dir, e))?;
    tracing::info!(
        dir = %cfg.refdata_dir.display(),
        providers = rd.providers.len(),
        years = rd.years.len(),
        "reference data loaded"
    );
    let synth = Synth::new(&rd, cfg.seed);
    let np = rd.providers.len();
    let mut plan_rng = rng_for(&[cfg.seed, 1]);

    // Provider sizes: Zipf-like over a shuffled order; monthly profiles; late starters.
    let mut order: Vec<usize> = (0..np).collect();
    for i in (1..np).rev() {
        let j = plan_rng.random_range(0..=i);
        order.swap(i, j);
    }
    let mut size = vec![0.0f64; np];
    for (rank, &p) in order.iter().enumerate() {
        size[p] = 1.0 / ((rank + 1) as f64).powf(0.9);
    }
    let profile: Vec<Vec<f64>> = (0..np)
        .map(|_| {
            let start = if plan_rng.random_bool(0.12) {
                plan_rng.random_range(1..13)
            } else {
                0
            };
            (0..MONTHS)
                .map(|m| {
                    if m < start {
                        0.0
                    } else {
                        let winter = if matches!(m % 12, 8..=10) { 1.15 } else { 1.0 };
                        (0.6 + plan_rng.random::<f64>() * 0.8) * winter
                    }
                })
                .collect()
        })
        .collect();
    let datasets: Vec<(Dataset, f64)> = match cfg.dataset {
        Some(d) => vec![(d, 1.0)],
        None => vec![
            (Dataset::Apc, 0.20),
            (Dataset::Op, 0.55),
            (Dataset::Ec, 0.25),
        ],
    };
    // counts[dataset][provider][month]
    let mut counts: BTreeMap<Dataset, Vec<Vec<u64>>> = BTreeMap::new();
    let mut provider_rows = vec![0u64; np];
    for &(d, share) in &datasets {
        let target = (cfg.rows as f64 * share).round();
        let eligible = |p: usize| d != Dataset::Ec || rd.providers[p].len() == 3;
        let total: f64 = (0..np)
            .filter(|&p| eligible(p))
            .map(|p| size[p] * profile[p].iter().sum::<f64>())
            .sum();
        let mut c = vec![vec![0u64; MONTHS]; np];
        for p in (0..np).filter(|&p| eligible(p)) {
            for m in 0..MONTHS {
                let x = if total > 0.0 {
                    target * size[p] * profile[p][m] / total
                } else {
                    0.0
                };
                let n = x.floor() as u64 + u64::from(plan_rng.random::<f64>() < x.fract());
                c[p][m] = n;
                provider_rows[p] += n;
            }
        }
        counts.insert(d, c);
    }
    // Senders: a provider sends its own data, or (60 %) through one of its submitting agencies.
    let mut sender_of: Vec<String> = Vec::with_capacity(np);
    for p in &rd.providers {
        let agencies: Vec<&String> = rd
            .senders
            .iter()
            .filter(|(_, prov)| prov == p)
            .map(|(s, _)| s)
            .collect();
        let via = if !agencies.is_empty() && plan_rng.random_bool(0.6) {
            agencies[plan_rng.random_range(0..agencies.len())].clone()
        } else {
            p.clone()
        };
        sender_of.push(via);
    }
    let mut by_sender: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (p, s) in sender_of.iter().enumerate() {
        by_sender.entry(s.clone()).or_default().push(p);
    }
    // Chunks: consecutive months of one financial year, up to rows_per_file rows.
    let mut chunks: Vec<Chunk> = Vec::new();
    for &(d, _) in &datasets {
        let c = &counts[&d];
        for (sender, ps) in &by_sender {
            for fy in [0..12usize, 12..24] {
                let mut cur = Chunk {
                    dataset: d,
                    sender: sender.clone(),
                    months: Vec::new(),
                    rows: 0,
                    bulk: false,
                };
                for m in fy {
                    let rows: u64 = ps.iter().map(|&p| c[p][m]).sum();
                    if !cur.months.is_empty() && cur.rows + rows > cfg.rows_per_file {
                        chunks.push(cur.clone());
                        cur.months.clear();
                        cur.rows = 0;
                    }
                    cur.months.push(m);
                    cur.rows += rows;
                }
                if !cur.months.is_empty() {
                    chunks.push(cur);
                }
            }
        }
    }
    chunks.retain(|c| c.rows > 0);
    for c in &mut chunks {
        c.bulk = c.rows <= cfg.rows_per_file && plan_rng.random::<f64>() < cfg.bulk_share;
    }
    chunks.sort_by(|a, b| {
        let key = |c: &Chunk| {
            (
                c.months.last().copied(),
                c.sender.clone(),
                c.dataset,
                c.months[0],
            )
        };
        key(a).cmp(&key(b))
    });
    let rows_total: u64 = chunks.iter().map(|c| c.rows).sum();
    let patients: Vec<u64> = provider_rows.iter().map(|r| (r / 3).max(30)).collect();
    tracing::info!(chunks = chunks.len(), rows = rows_total, "plan made");

    let mut out = Out {
        rd: &rd,
        dir: cfg.out_dir.clone(),
        files: 0,
        rows_written: 0,
        ids: BTreeMap::new(),
        applied: BTreeMap::new(),
        store: if cfg.keep_history {
            Store::with_history()
        } else {
            Store::default()
        },
        outcomes: Vec::new(),
    };
    let mut pending: BTreeMap<(String, Dataset), Vec<Vec<Rec>>> = BTreeMap::new();
    let mut split_rng = rng_for(&[cfg.seed, 7]);
    let mut rebulk: Vec<(Chunk, BulkSpec, Vec<Vec<Rec>>)> = Vec::new();
    let mut rebulk_rows = 0u64;
    let mut first_nc: Option<(Dataset, String, Vec<Rec>, String)> = None;
    let mut rows_done = 0u64;

    for (ci, chunk) in chunks.iter().enumerate() {
        let mut rng = rng_for(&[cfg.seed, 2, ci as u64]);
        let first = month_start(chunk.months[0]);
        let last_month = *chunk.months.last().unwrap_or(&0);
        let end = next_month(month_start(last_month)) - Duration::days(1);
        let extract = (end + Duration::days(rng.random_range(2..26)))
            .and_hms_opt(rng.random_range(6..22), rng.random_range(0..60), 0)
            .unwrap_or_default();
        let mut groups: Vec<Vec<Rec>> = Vec::new();
        for &m in &chunk.months {
            for &p in &by_sender[&chunk.sender] {
                let n = counts[&chunk.dataset][p][m];
                if n == 0 {
                    continue;
                }
                groups.extend(synth.cell(
                    chunk.dataset,
                    &rd.providers[p],
                    p,
                    np,
                    patients[p],
                    month_start(m),
                    m as u32 + 1,
                    n,
                ));
            }
        }
        for g in &mut groups {
            for r in g.iter_mut() {
                r.common.applicable = extract;
                if rng.random::<f64>() < cfg.invalid_share {
                    synth.add_defect(chunk.dataset, r, &mut rng, chunk.bulk);
                }
            }
            // Its own random stream, so that other shares generate what they always did.
            if cfg.split_spell_share > 0.0
                && chunk.dataset == Dataset::Apc
                && !chunk.bulk
                && g.len() >= 2
                && split_rng.random::<f64>() < cfg.split_spell_share
                && let Some(mut last) = g.pop()
            {
                last.common.applicable = extract + Duration::days(split_rng.random_range(1..60));
                pending
                    .entry((chunk.sender.clone(), chunk.dataset))
                    .or_default()
                    .push(vec![last]);
            }
            let u: f64 = rng.random();
            let later = extract
                + Duration::days(rng.random_range(30..120))
                + Duration::minutes(rng.random_range(0..600));
            if u < cfg.delete_share {
                pending
                    .entry((chunk.sender.clone(), chunk.dataset))
                    .or_default()
                    .push(g.iter().map(|r| deletion(r, later)).collect());
            } else if u < cfg.delete_share + cfg.replace_share {
                // One in ten replacements carries an older applicable date-time: stale.
                let when = if rng.random_bool(0.1) {
                    extract - Duration::days(1)
                } else {
                    later
                };
                let changed: Vec<Rec> = g
                    .iter()
                    .map(|r| {
                        let mut m = modified(&synth, r, &mut rng);
                        m.common.applicable = when;
                        m
                    })
                    .collect();
                pending
                    .entry((chunk.sender.clone(), chunk.dataset))
                    .or_default()
                    .push(changed);
            }
        }
        let rows: u64 = groups.iter().map(|g| g.len() as u64).sum();
        if chunk.bulk {
            let prime = by_sender[&chunk.sender]
                .first()
                .and_then(|&p| synth.patient(p, np, 0).commissioner.into())
                .unwrap_or_default();
            let spec = BulkSpec {
                group: chunk.dataset.bulk_group().into(),
                start: first,
                end,
                extract,
                prime,
            };
            if rows <= 20_000 && rebulk_rows + rows <= 200_000 && rng.random_bool(0.25) {
                rebulk_rows += rows;
                rebulk.push((chunk.clone(), spec.clone(), groups.clone()));
            }
            let recs: Vec<Rec> = groups.into_iter().flatten().collect();
            out.submit(
                chunk.dataset,
                &chunk.sender,
                &recs,
                Some(&spec),
                &Special::default(),
            )?;
        } else {
            for part in split_groups(groups, cfg.rows_per_file) {
                let idx = out.submit(
                    chunk.dataset,
                    &chunk.sender,
                    &part,
                    None,
                    &Special::default(),
                )?;
                if first_nc.is_none() && part.len() <= 5_000 {
                    first_nc = Some((
                        chunk.dataset,
                        chunk.sender.clone(),
                        part,
                        out.outcomes[idx].submission_id.clone(),
                    ));
                }
            }
        }
        rows_done += rows;
        progress(&Progress {
            rows_done,
            rows_total,
            files: out.files,
        });
    }

    // Corrections: replacements, deletions and stale updates, one Net Change run per sender.
    for ((sender, dataset), groups) in pending {
        for part in split_groups(groups, cfg.rows_per_file) {
            out.submit(dataset, &sender, &part, None, &Special::default())?;
        }
    }
    // Re-sent Bulk Replacements: a newer extract of the same period, some records gone.
    let mut rng = rng_for(&[cfg.seed, 3]);
    let mut r07: Option<(Dataset, String, Vec<Rec>, BulkSpec)> = None;
    for (chunk, spec, groups) in &rebulk {
        let newer = BulkSpec {
            extract: spec.extract + Duration::days(100),
            ..spec.clone()
        };
        let mut recs: Vec<Rec> = Vec::new();
        for g in groups {
            if rng.random_bool(0.03) {
                continue;
            }
            let change = rng.random_bool(0.05);
            for r in g {
                let mut r = if change {
                    modified(&synth, r, &mut rng)
                } else {
                    r.clone()
                };
                r.common.applicable = newer.extract;
                recs.push(r);
            }
        }
        if recs.is_empty() {
            continue;
        }
        out.submit(
            chunk.dataset,
            &chunk.sender,
            &recs,
            Some(&newer),
            &Special::default(),
        )?;
        if r07.is_none() {
            r07 = Some((chunk.dataset, chunk.sender.clone(), recs, spec.clone()));
        }
    }
    // Replays of the first Net Change file: same submission id (idempotent), then a new id (stale).
    if let Some((dataset, sender, recs, id)) = &first_nc {
        let same = Special {
            submission_id: Some(id.clone()),
            ..Special::default()
        };
        out.submit(*dataset, sender, recs, None, &same)?;
        out.submit(*dataset, sender, recs, None, &Special::default())?;
    }
    if cfg.reject_files {
        reject_files(&rd, &synth, cfg, &mut out, r07)?;
    }

    if cfg.write_live {
        let dir = cfg.out_dir.join("oracle");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("live.csv");
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = std::io::BufWriter::new(file);
        out.store
            .write_live(&mut w)
            .and_then(|_| w.flush())
            .map_err(|e| Error::io(&path, e))?;
    }
    let totals = out.store.totals();
    let mut expected = Expected {
        seed: cfg.seed,
        rows: cfg.rows,
        dataset: cfg.dataset.map_or("all", Dataset::name).to_string(),
        files: out.files,
        rows_written: out.rows_written,
        sender_of: rd.providers.iter().cloned().zip(sender_of).collect(),
        ..Expected::default()
    };
    for &(d, _) in &datasets {
        let t = totals.datasets.get(&d).copied().unwrap_or_default();
        expected.all.live_records += t.live_records;
        expected.all.total_price_pence += t.total_price_pence;
        expected.all.total_base_price_pence += t.total_base_price_pence;
        expected.all.total_excess_payment_pence += t.total_excess_payment_pence;
        expected.all.total_excess_bed_days += t.total_excess_bed_days;
        expected.all.excluded_records += t.excluded_records;
        expected.all.records_with_warnings += t.records_with_warnings;
        expected.datasets.insert(d.name().to_string(), t);
    }
    for (p, by_d) in totals.providers {
        expected.providers.insert(
            p,
            by_d.into_iter()
                .map(|(d, t)| (d.name().to_string(), t))
                .collect(),
        );
    }
    expected.submissions = out.outcomes;
    let path = cfg.out_dir.join("expected.json");
    let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    let mut w = std::io::BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, &expected)?;
    w.write_all(b"\n").map_err(|e| Error::io(&path, e))?;
    w.flush().map_err(|e| Error::io(&path, e))?;
    progress(&Progress {
        rows_done,
        rows_total,
        files: out.files,
    });
    Ok(Summary {
        files: out.files,
        rows_written: out.rows_written,
        expected,
        out_dir: cfg.out_dir.clone(),
        history: out.store.history().map(<[oracle::Version]>::to_vec),
    })
}

/// Whole-submission rejections: R04 (a date that is not a date), R05 (unknown provider), R06
/// (sender not registered), R07 (bulk extract not newer), R08 (wrong bulk group).
fn reject_files(
    rd: &RefData,
    synth: &Synth<'_>,
    cfg: &GenConfig,
    out: &mut Out<'_>,
    r07: Option<(Dataset, String, Vec<Rec>, BulkSpec)>,
) -> Result<()> {
    let datasets: Vec<Dataset> = match cfg.dataset {
        Some(d) => vec![d],
        None => Dataset::ALL.to_vec(),
    };
    let np = rd.providers.len();
    let p = rd.providers.iter().position(|c| c.len() == 3).unwrap_or(0);
    let provider = rd.providers[p].clone();
    let fresh = |d: Dataset, k: u64| -> Vec<Rec> {
        let month = month_start(13);
        let mut recs: Vec<Rec> = synth
            .cell(d, &provider, p, np, 50, month, 90 + k as u32, 10)
            .into_iter()
            .flatten()
            .collect();
        let when = (month + Duration::days(45))
            .and_hms_opt(9, 0, 0)
            .unwrap_or_default();
        for r in &mut recs {
            r.common.applicable = when;
        }
        recs
    };
    let ds = |i: usize| datasets[i % datasets.len()];

    // R04: one record's activity date is not a date.
    let d = ds(0);
    let column = match d {
        Dataset::Apc => "admission_date",
        Dataset::Op => "appointment_date",
        Dataset::Ec => "arrival_datetime",
    };
    let value = if d == Dataset::Ec {
        "2024-02-30T10:00:00"
    } else {
        "2024-02-30"
    };
    let patch = Special {
        patch: Some((0, column, value.to_string())),
        ..Special::default()
    };
    out.submit(d, &provider, &fresh(d, 0), None, &patch)?;

    // R05: a provider not in providers.csv (sending its own data).
    let d = ds(1);
    let unknown = ["RZZ", "RZY", "RZX", "RZW", "RYY"]
        .into_iter()
        .find(|c| !rd.providers.iter().any(|p| p == c))
        .unwrap_or("R0Z");
    let mut recs = fresh(d, 1);
    for r in &mut recs {
        r.common.provider = unknown.into();
    }
    out.submit(d, unknown, &recs, None, &Special::default())?;

    // R06: a submitting agency not registered for the provider.
    let d = ds(2);
    let agencies: BTreeSet<&String> = rd.senders.iter().map(|(s, _)| s).collect();
    let (agency, target) = agencies
        .iter()
        .find_map(|a| {
            rd.providers
                .iter()
                .position(|p| !rd.may_send(a, p))
                .map(|i| ((*a).clone(), i))
        })
        .unwrap_or_else(|| ("SA999".to_string(), p));
    let mut recs = fresh(d, 2);
    for r in &mut recs {
        r.common.provider = rd.providers[target].clone();
    }
    out.submit(d, &agency, &recs, None, &Special::default())?;

    // R07: a Bulk Replacement re-sent with its original (older) extract date-time.
    if let Some((d, sender, recs, spec)) = r07 {
        out.submit(d, &sender, &recs, Some(&spec), &Special::default())?;
    }

    // R08: a Bulk Replacement with another dataset's bulk group.
    let d = ds(3);
    let month = month_start(13);
    let spec = BulkSpec {
        group: "999".into(),
        start: month,
        end: next_month(month) - Duration::days(1),
        extract: (month + Duration::days(40))
            .and_hms_opt(8, 0, 0)
            .unwrap_or_default(),
        prime: rd
            .commissioners
            .first()
            .map_or(String::new(), |c| c.0.clone()),
    };
    out.submit(d, &provider, &fresh(d, 3), Some(&spec), &Special::default())?;
    Ok(())
}
