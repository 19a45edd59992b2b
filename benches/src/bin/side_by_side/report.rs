//! The results of a side-by-side run: the markdown table with ratios and targets, and the CSV.

use crate::{Args, Latency, Loaded, PSEUDO_1, PSEUDO_3, Results, SQL_1, SQL_3};
use anyhow::Result;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use sus_benches::queries::{self, Params, QUERIES};
use sus_benches::{Data, Timings, percentile};

pub(super) struct Report<'a> {
    pub(super) args: &'a Args,
    pub(super) data: &'a Data,
    pub(super) live_of: &'a dyn Fn(&str) -> u64,
    pub(super) one: &'a Loaded,
    pub(super) three: &'a Loaded,
    pub(super) prepared: &'a serde_json::Value,
    pub(super) versions: &'a BTreeMap<String, String>,
    pub(super) params: &'a Params,
    pub(super) results: &'a Results,
    pub(super) memory: &'a BTreeMap<String, Timings>,
    pub(super) lat: [&'a Latency; 2],
    pub(super) mismatches: &'a [String],
    pub(super) streamed: &'a crate::Streamed,
    pub(super) elapsed: f64,
}

impl Report<'_> {
    /// Rows a query reads: every live row of its datasets.
    fn rows_in(&self, q: &str) -> u64 {
        queries::datasets(q)
            .iter()
            .map(|ds| (self.live_of)(ds))
            .sum()
    }

    fn engines(&self) -> Vec<String> {
        let mut names = vec!["sus 1 node".to_string(), "sus 3 nodes".to_string()];
        names.extend(self.args.engines.iter().cloned());
        names
    }

    fn median(&self, q: &str, engine: &str) -> f64 {
        self.results
            .get(&(q.to_string(), engine.to_string()))
            .map_or(f64::NAN, Timings::median)
    }

    fn pyarrow(&self) -> (u64, f64, u64, u64) {
        let (mut rows, mut secs, mut bytes, mut duck) = (0u64, 0f64, 0u64, 0u64);
        for ds in ["apc", "op", "ec"] {
            let d = &self.prepared["datasets"][ds];
            rows += d["rows"].as_u64().unwrap_or(0);
            secs += d["pyarrow_secs"].as_f64().unwrap_or(0.0);
            bytes += d["pyarrow_bytes"].as_u64().unwrap_or(0);
            duck += d["duckdb_bytes"].as_u64().unwrap_or(0);
        }
        (rows, secs, bytes, duck)
    }

    /// Identifiable (audited) against pseudonymised reads of the same queries, same run.
    fn audit_table(&self, s: &mut String) -> Result<()> {
        writeln!(
            s,
            "\n### The audit of identifiable reads\n\n\
             The columns above read as the cluster's admin, at the identifiable tier: every \
             node that answers appends an audit record through the meta group's Raft log \
             (committed on a majority's disks) before it replies. A national analyst at the \
             pseudonymised tier (`{PSEUDO_1}`, `{PSEUDO_3}`, interleaved with the others in \
             the same run, same answers) reads without that commit.\n"
        )?;
        writeln!(
            s,
            "| query | 1 node, identifiable | 1 node, pseudonymised | audit share | \
             3 nodes, identifiable | 3 nodes, pseudonymised | audit share |"
        )?;
        writeln!(s, "|---|---|---|---|---|---|---|")?;
        for q in QUERIES {
            write!(s, "| {q} |")?;
            for (audited, plain) in [("sus 1 node", PSEUDO_1), ("sus 3 nodes", PSEUDO_3)] {
                let (a, p) = (self.median(q, audited), self.median(q, plain));
                write!(
                    s,
                    " {:.1} | {:.1} | {:.0} % |",
                    a * 1e3,
                    p * 1e3,
                    (a - p) / a * 100.0
                )?;
            }
            writeln!(s)?;
        }
        Ok(())
    }

    pub(super) fn write(&self) -> Result<()> {
        std::fs::create_dir_all(&self.args.out)?;
        let md = self.args.out.join(format!("{}.md", self.args.name));
        let csv = self.args.out.join(format!("{}.csv", self.args.name));
        std::fs::write(&md, self.markdown()?)?;
        std::fs::write(&csv, self.csv())?;
        println!("results: {} and {}", md.display(), csv.display());
        Ok(())
    }

    fn csv(&self) -> String {
        let mut out = String::from(
            "section,query,engine,rows,median_ms,min_ms,max_ms,rows_per_sec,sus_1node_speedup\n",
        );
        for q in QUERIES {
            let rows = self.rows_in(q);
            let ours = self.median(q, "sus 1 node");
            let runs = self
                .engines()
                .into_iter()
                .chain([PSEUDO_1.to_string(), PSEUDO_3.to_string()])
                .filter_map(|e| Some((self.results.get(&(q.to_string(), e.clone()))?, e)))
                .chain(
                    self.memory
                        .get(q)
                        .map(|t| (t, "sus 1 node memory".to_string())),
                );
            for (t, e) in runs {
                let _ = writeln!(
                    out,
                    "query,{q},{e},{rows},{:.3},{:.3},{:.3},{:.0},{:.3}",
                    t.median() * 1e3,
                    t.min() * 1e3,
                    t.max() * 1e3,
                    rows as f64 / t.median(),
                    t.median() / ours
                );
            }
        }
        let (py_rows, py_secs, py_bytes, duck_bytes) = self.pyarrow();
        for (name, l) in [("sus 1 node", self.one), ("sus 3 nodes", self.three)] {
            let _ = writeln!(
                out,
                "ingest,,{name},{},{:.3},,,{:.0},",
                l.records,
                l.secs * 1e3,
                l.records as f64 / l.secs
            );
        }
        let _ = writeln!(
            out,
            "ingest,,pyarrow parquet write,{py_rows},{:.3},,,{:.0},",
            py_secs * 1e3,
            py_rows as f64 / py_secs
        );
        let _ = writeln!(
            out,
            "bytes,,sus segments,{},{},,,,",
            py_rows, self.one.segment_bytes
        );
        let _ = writeln!(out, "bytes,,pyarrow,{py_rows},{py_bytes},,,,");
        let _ = writeln!(out, "bytes,,duckdb,{py_rows},{duck_bytes},,,,");
        for (name, l) in [("sus 1 node", self.lat[0]), ("sus 3 nodes", self.lat[1])] {
            let _ = writeln!(
                out,
                "commit_latency,,{name},{},{:.3},{:.3},{:.3},,",
                l.commits_ms.len(),
                percentile(&l.commits_ms, 0.5),
                percentile(&l.fsync_ms, 0.5),
                percentile(&l.rtt_ms, 0.5)
            );
        }
        out
    }

    fn markdown(&self) -> Result<String> {
        let a = self.args;
        let mut s = String::new();
        let (live, _) = self.data.totals();
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        writeln!(
            s,
            "# Side by side: sus-cluster, DuckDB, DataFusion, Polars, chdb\n"
        )?;
        writeln!(
            s,
            "One run of `benches/run` (commit `{commit}`, {}), {cores} cores ({cpu}). {} records \
             generated (seed {}), {} submission files; **{live} live rows** (apc {}, op {}, \
             ec {}). Every engine: {} threads, a warm-up run whose answers must equal ours row \
             for row, then {} timed runs interleaved across engines; median (min-max) ms. \
             rows/s = live rows of the datasets the query reads / median. The whole run took \
             {:.0} min.\n",
            chrono_now(),
            a.rows,
            a.seed,
            self.data.files.len(),
            (self.live_of)("apc"),
            (self.live_of)("op"),
            (self.live_of)("ec"),
            a.threads,
            a.reps,
            self.elapsed / 60.0
        )?;
        writeln!(
            s,
            "```sh\nbenches/run --rows {} --seed {} --reps {}\n```\n",
            a.rows, a.seed, a.reps
        )?;
        writeln!(
            s,
            "Versions: {}. Peers read the rows as pyarrow wrote them (one zstd Parquet file per \
             dataset, pyarrow's defaults, rows in our export's order: provider, then month). \
             sus reads its own segments (8 shards; one Parquet file per provider and dataset \
             after compaction, a row group per month) with no column cache, so every query \
             decodes Parquet like the peers; times are taken by the client, so they include \
             gRPC and TLS to the nodes. Parameters: provider {}, quarter {} to {}, HRG chapter \
             {}, month {}.\n",
            self.versions
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.params.provider,
            self.params.quarter.0,
            self.params.quarter.1,
            self.params.chapter,
            self.params.month
        )?;
        if !self.mismatches.is_empty() {
            writeln!(s, "**Answers that differed:**\n")?;
            for m in self.mismatches {
                writeln!(s, "- {m}")?;
            }
            writeln!(s)?;
        }
        writeln!(s, "## Queries\n")?;
        let engines = self.engines();
        engine_header(&mut s, "query", &engines)?;
        for q in QUERIES {
            write!(s, "| {q}: {} |", queries::describe(q))?;
            let ours = self.median(q, "sus 1 node");
            for e in &engines {
                match self.results.get(&(q.to_string(), e.clone())) {
                    Some(t) => write!(
                        s,
                        " {:.1} ({:.1}-{:.1}){} |",
                        t.median() * 1e3,
                        t.min() * 1e3,
                        t.max() * 1e3,
                        if e == "sus 1 node" {
                            String::new()
                        } else {
                            format!(" **{:.2}x**", t.median() / ours)
                        }
                    )?,
                    None => write!(s, " - |")?,
                }
            }
            match self.memory.get(q) {
                Some(t) => writeln!(
                    s,
                    " {:.1} ({:.1}-{:.1}) |",
                    t.median() * 1e3,
                    t.min() * 1e3,
                    t.max() * 1e3
                )?,
                None => writeln!(s, " - |")?,
            }
        }
        writeln!(
            s,
            "\nBold: the engine's median / sus 1 node's (above 1: sus is faster by that \
             factor).\n"
        )?;
        engine_header(&mut s, "rows/s (millions)", &engines)?;
        for q in QUERIES {
            let rows = self.rows_in(q) as f64;
            write!(s, "| {q} |")?;
            for e in &engines {
                write!(s, " {:.1} |", rows / self.median(q, e) / 1e6)?;
            }
            let m = self.memory.get(q).map_or(f64::NAN, Timings::median);
            writeln!(s, " {:.1} |", rows / m / 1e6)?;
        }

        self.audit_table(&mut s)?;

        let (py_rows, py_secs, py_bytes, duck_bytes) = self.pyarrow();
        let py_rate = py_rows as f64 / py_secs;
        let rate = |l: &Loaded| l.records as f64 / l.secs;
        writeln!(s, "\n## Ingest and file size\n")?;
        writeln!(s, "| what | rows | seconds | rows/s | vs pyarrow |")?;
        writeln!(s, "|---|---|---|---|---|")?;
        for (name, l) in [
            (
                "sus, 1 node (validate, derive, price, store; 1 replica)",
                self.one,
            ),
            (
                "sus, 3 nodes (the same, 3 replicas of every shard)",
                self.three,
            ),
        ] {
            writeln!(
                s,
                "| {name} | {} | {:.1} | {:.0} | {:.3} |",
                l.records,
                l.secs,
                rate(l),
                rate(l) / py_rate
            )?;
        }
        writeln!(
            s,
            "| pyarrow `write_table` zstd (in-memory table to Parquet) | {py_rows} | {py_secs:.1} | \
             {py_rate:.0} | 1 |"
        )?;
        writeln!(
            s,
            "\nsus ingests the generator's CSV submissions through the cluster ({} lanes, \
             every submission committed on a majority's disks before its answer); pyarrow only \
             encodes the already derived rows. Compaction afterwards: {:.0} s (1 node), {:.0} s \
             (3 nodes).\n",
            a.lanes, self.one.compact_secs, self.three.compact_secs
        )?;
        writeln!(
            s,
            "| Parquet bytes of the live rows | bytes | bytes/row | vs pyarrow |"
        )?;
        writeln!(s, "|---|---|---|---|")?;
        for (name, b) in [
            (
                "sus segments (one replica, compacted)",
                self.one.segment_bytes,
            ),
            ("pyarrow (zstd)", py_bytes),
            ("DuckDB `COPY` (zstd)", duck_bytes),
        ] {
            writeln!(
                s,
                "| {name} | {b} | {:.1} | {:.3} |",
                b as f64 / py_rows as f64,
                b as f64 / py_bytes as f64
            )?;
        }
        writeln!(s, "\n## Single-client commit latency\n")?;
        writeln!(
            s,
            "{} one-record submissions sent one at a time; floor measured in the same run: \
             fdatasync of 4 KiB on the nodes' disk, and a gRPC round trip (TLS, authenticated \
             `Status`) to a node.\n",
            a.latency_submissions
        )?;
        writeln!(
            s,
            "| cluster | commit p50 ms | p99 ms | fsync p50 ms | round trip p50 ms | floor ms | p50 / floor |"
        )?;
        writeln!(s, "|---|---|---|---|---|---|---|")?;
        for (name, l, trips) in [("1 node", self.lat[0], 1.0), ("3 nodes", self.lat[1], 2.0)] {
            let fsync = percentile(&l.fsync_ms, 0.5);
            let rtt = percentile(&l.rtt_ms, 0.5);
            let floor = fsync + trips * rtt;
            let p50 = percentile(&l.commits_ms, 0.5);
            writeln!(
                s,
                "| {name} | {p50:.2} | {:.2} | {fsync:.2} | {rtt:.2} | {floor:.2} (fsync + {trips} round trip{}) | {:.1} |",
                percentile(&l.commits_ms, 0.99),
                if trips > 1.0 { "s" } else { "" },
                p50 / floor
            )?;
        }

        writeln!(s, "\n## SQL beside the native calls (issue #24)\n")?;
        writeln!(
            s,
            "The same clients asking Q1-Q6 in SQL over Flight SQL (`queries::sql`; the answers \
             are checked equal to the native ones above). Overhead = SQL median / native median.\n"
        )?;
        writeln!(
            s,
            "| query | 1 node native | 1 node SQL | overhead | 3 nodes native | 3 nodes SQL | overhead |"
        )?;
        writeln!(s, "|---|---|---|---|---|---|---|")?;
        for q in queries::QUERIES {
            let (n1, s1) = (self.median(q, "sus 1 node"), self.median(q, SQL_1));
            let (n3, s3) = (self.median(q, "sus 3 nodes"), self.median(q, SQL_3));
            writeln!(
                s,
                "| {q} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.1} | {:.2}x |",
                n1 * 1e3,
                s1 * 1e3,
                s1 / n1,
                n3 * 1e3,
                s3 * 1e3,
                s3 / n3
            )?;
        }
        let st = self.streamed;
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        writeln!(
            s,
            "\n`{}` streamed to the client: {} rows, {:.1} MiB of Arrow arrays, in {:.2} s; the \
             answering node's resident set {:.1} MiB before, peak {:.1} MiB while answering \
             (VmHWM, reset before the read).",
            st.statement,
            st.rows,
            mib(st.bytes),
            st.secs,
            mib(st.rss_before),
            mib(st.rss_peak)
        )?;

        writeln!(s, "\n## Targets (issue #7)\n")?;
        writeln!(s, "| target | measured | met |")?;
        writeln!(s, "|---|---|---|")?;
        let ours = self.median("Q1", "sus 1 node");
        let vs = |e: &str| self.median("Q1", e) / ours;
        let mut target = |what: &str, measured: String, met: bool| {
            writeln!(
                s,
                "| {what} | {measured} | {} |",
                if met { "yes" } else { "**no**" }
            )
        };
        target(
            "Q1, 1 node from Parquet, >= 1.5x DuckDB's rows/s (stretch 3x)",
            format!("{:.2}x", vs("duckdb")),
            vs("duckdb") >= 1.5,
        )?;
        for e in ["datafusion", "polars"] {
            target(
                &format!("Q1, 1 node from Parquet, >= 2x {e}"),
                format!("{:.2}x", vs(e)),
                vs(e) >= 2.0,
            )?;
        }
        let mem = self.memory.get("Q1").map_or(f64::NAN, Timings::median);
        let mem_rate = self.rows_in("Q1") as f64 / mem;
        target(
            "Q1 from memory >= 100 M rows/s",
            format!("{:.0} M rows/s", mem_rate / 1e6),
            mem_rate >= 100e6,
        )?;
        let duck_q3 = self.median("Q3", "duckdb");
        let q3 = self.median("Q3", "sus 1 node") / duck_q3;
        target(
            "Q3 p50 latency <= 0.5x DuckDB's",
            format!(
                "{q3:.2}x (pseudonymised, no audit commit: {:.2}x)",
                self.median("Q3", PSEUDO_1) / duck_q3
            ),
            q3 <= 0.5,
        )?;
        let three = ours / self.median("Q1", "sus 3 nodes");
        target(
            "3-node pushed-down Q1 >= 0.8x the single node",
            format!(
                "{three:.2}x (pseudonymised, no audit commits: {:.2}x)",
                self.median("Q1", PSEUDO_1) / self.median("Q1", PSEUDO_3)
            ),
            three >= 0.8,
        )?;
        for q in ["Q1", "Q3"] {
            let overhead = self.median(q, SQL_1) / self.median(q, "sus 1 node");
            let overhead3 = self.median(q, SQL_3) / self.median(q, "sus 3 nodes");
            target(
                &format!("{q} in SQL <= 1.2x the native call (issue #24)"),
                format!("{overhead:.2}x on 1 node, {overhead3:.2}x on 3 nodes"),
                overhead <= 1.2 && overhead3 <= 1.2,
            )?;
        }
        let ingest = rate(self.three) / py_rate;
        target(
            "replicated ingest >= 0.4x pyarrow's Parquet write rows/s",
            format!("{ingest:.3}x"),
            ingest >= 0.4,
        )?;
        let size = self.one.segment_bytes as f64 / py_bytes as f64;
        target(
            "file size <= 1.05x pyarrow's",
            format!("{size:.3}x"),
            size <= 1.05,
        )?;
        Ok(s)
    }
}

/// The head of a table with a column per engine and one for the 1-node cluster from memory.
fn engine_header(s: &mut String, first: &str, engines: &[String]) -> std::fmt::Result {
    write!(s, "| {first} |")?;
    for e in engines {
        write!(s, " {e} |")?;
    }
    writeln!(s, " sus 1 node, memory |")?;
    writeln!(s, "|---|{}---|", "---|".repeat(engines.len()))
}

/// The date and time now (UTC), for the report.
fn chrono_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
