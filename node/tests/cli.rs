//! The `sus` command line end to end against a real 3-node TLS cluster: submit, query, freeze,
//! report and export, each output checked against the generator's oracle; and the one-line
//! errors and exit codes of bad flags and unreachable endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `sus` program, built beside `sus-node` by `cargo test --workspace`.
fn sus_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_sus-node")).with_file_name("sus");
    assert!(
        bin.exists(),
        "{} is missing: run the workspace's tests (`cargo test --workspace`), which build it",
        bin.display()
    );
    bin
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn sus(env: &[(&str, String)], args: &[&str]) -> Run {
    let out = std::process::Command::new(sus_bin())
        .args(args)
        .env_remove("SUS_ENDPOINT")
        .env_remove("SUS_CA")
        .env_remove("SUS_TOKEN")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        // No token file of the user running the tests.
        .env("SUS_TOKEN_FILE", "/nonexistent/sus-token")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// CSV text into rows of fields (the header first).
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_end_to_end() {
    let (cluster, out, summary) = common::cluster_with_data(2_000, 23, 400).await;
    let endpoints: Vec<String> = cluster.nodes.values().map(|n| n.addr.clone()).collect();
    let env = [
        ("SUS_ENDPOINT", endpoints.join(",")),
        ("SUS_CA", cluster.certs.ca.display().to_string()),
        ("SUS_TOKEN", cluster.token.clone().unwrap()),
    ];
    let live = common::read_live(&out.join("oracle/live.csv"));

    // submit: every file, a report line each, exit 0 (the generator made no rejected files).
    let files: Vec<String> = summary
        .expected
        .submissions
        .iter()
        .map(|s| out.join(&s.file).display().to_string())
        .collect();
    let mut args = vec!["submit"];
    args.extend(files.iter().map(String::as_str));
    let r = sus(&env, &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout.matches(": accepted").count(),
        files.len(),
        "{}",
        r.stdout
    );

    // query: count and pence by provider, as CSV, equal to the oracle's.
    let r = sus(
        &env,
        &[
            "query",
            "--dataset",
            "apc",
            "--group-by",
            "provider_code",
            "--agg",
            "count",
            "--agg",
            "sum:price",
            "--format",
            "csv",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for l in live.iter().filter(|l| l.dataset == "apc") {
        let e = want.entry(l.provider.clone()).or_default();
        e.0 += 1;
        e.1 += l.price;
    }
    let rows = csv_rows(&r.stdout);
    assert_eq!(rows[0], ["provider_code", "count", "sum_price"]);
    let got: BTreeMap<String, (i64, i64)> = rows[1..]
        .iter()
        .map(|r| (r[0].clone(), (r[1].parse().unwrap(), r[2].parse().unwrap())))
        .collect();
    assert_eq!(got, want);

    // The same as JSON.
    let r = sus(
        &env,
        &[
            "query",
            "--dataset",
            "op",
            "--agg",
            "count",
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let ops = live.iter().filter(|l| l.dataset == "op").count();
    assert_eq!(json[0]["count"], ops);

    // --trace: the command's trace (here one of the caller's own, SUS_TRACEPARENT) is printed,
    // and reaches every node it touches: their scans, logged in its span, cover every shard.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut traced = env.to_vec();
    traced.push((
        "SUS_TRACEPARENT",
        format!("00-{trace_id}-00f067aa0ba902b7-01"),
    ));
    let r = sus(
        &traced,
        &["--trace", "query", "--dataset", "apc", "--agg", "count"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("trace {trace_id}")),
        "{}",
        r.stderr
    );
    let r = sus(&env, &["cluster", "shards", "--format", "csv"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let all: std::collections::BTreeSet<u32> = csv_rows(&r.stdout)[1..]
        .iter()
        .map(|row| row[0].parse().unwrap())
        .collect();
    let mut scanned = std::collections::BTreeSet::new();
    for id in cluster.nodes.keys() {
        for line in cluster.log_of(*id).lines() {
            if !(line.contains(&format!("trace_id={trace_id}")) && line.contains("scanned")) {
                continue;
            }
            let list = line.split("shards=[").nth(1).unwrap();
            let list = &list[..list.find(']').unwrap()];
            scanned.extend(list.split(", ").map(|s| s.parse::<u32>().unwrap()));
        }
    }
    assert_eq!(scanned, all, "shards scanned in trace {trace_id}");

    // freeze create / list.
    let r = sus(&env, &["freeze", "create", "cli M06"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = sus(&env, &["freeze", "list", "--format", "csv"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("cli M06"), "{}", r.stdout);

    // report trust-statement as at the freeze point: its activity equals the oracle's for the
    // provider and month, in every dataset.
    let (provider, month) = {
        let mut n: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for l in &live {
            *n.entry((l.provider.as_str(), l.month.as_str()))
                .or_default() += 1;
        }
        let (k, _) = n.into_iter().max_by_key(|(_, c)| *c).unwrap();
        (k.0.to_string(), k.1.to_string())
    };
    let r = sus(
        &env,
        &[
            "report",
            "trust-statement",
            "--provider",
            &provider,
            "--month",
            &month,
            "--freeze",
            "cli M06",
            "--format",
            "csv",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows = csv_rows(&r.stdout);
    let col = |name: &str| rows[0].iter().position(|h| h == name).unwrap();
    let (activity, price) = (col("activity"), col("price_pence"));
    // The detail rows, and the grand total row that ends the statement, each add up.
    let (detail, total) = rows[1..].split_at(rows.len() - 2);
    assert_eq!(total[0][0], "TOTAL");
    let mut got = (0i64, 0i64);
    for row in detail {
        got.0 += row[activity].parse::<i64>().unwrap();
        got.1 += row[price].parse::<i64>().unwrap();
    }
    assert_eq!(
        got,
        (
            total[0][activity].parse().unwrap(),
            total[0][price].parse().unwrap()
        )
    );
    let mine: Vec<&common::Live> = live
        .iter()
        .filter(|l| l.provider == provider && l.month == month)
        .collect();
    assert_eq!(
        got,
        (mine.len() as i64, mine.iter().map(|l| l.price).sum::<i64>())
    );

    // report database-counts: one row per provider, dataset and month at least.
    let r = sus(&env, &["report", "database-counts", "--format", "csv"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(csv_rows(&r.stdout).len() > 1);

    // export to Parquet: every live op record, with the columns asked for.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("op.parquet");
    let r = sus(
        &env,
        &[
            "export",
            "--dataset",
            "op",
            "--columns",
            "cds_unique_id,price",
            "--format",
            "parquet",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&file).unwrap())
            .unwrap();
    use parquet::file::reader::FileReader;
    assert_eq!(reader.metadata().file_metadata().num_rows() as usize, ops);

    // The administrative listings in machine formats.
    let r = sus(&env, &["user", "list", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let users: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "admin" && u["role"] == "admin" && u["revoked"] == "false"),
        "{users}"
    );
    let r = sus(&env, &["cluster", "status", "--format", "csv"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let groups = csv_rows(&r.stdout);
    assert_eq!(groups[0][..2], ["group", "leader"]);
    // The meta group (0) and the shard groups the answering node hosts (2 replicas of 4).
    assert!(groups[1..].iter().any(|g| g[0] == "0"), "{}", r.stdout);
    assert!(
        (2..=1 + all.len()).contains(&(groups.len() - 1)),
        "{}",
        r.stdout
    );
    let r = sus(&env, &["audit", "--format", "csv"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("hash chain verified"), "{}", r.stderr);
    let audit = csv_rows(&r.stdout);
    assert_eq!(audit[0][..4], ["index", "time", "node", "user"]);
    // Every submission and the identifiable reads above were audited.
    let submits = audit[1..].iter().filter(|e| e[7] == "submit").count();
    assert!(submits >= files.len(), "{} submit entries", submits);

    // Bad flags: one line, exit 2.
    let r = sus(&env, &["query", "--datset", "apc"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("sus: "), "{}", r.stderr);
    assert!(r.stderr.contains("--datset"), "{}", r.stderr);

    // An unreachable endpoint: one line, exit 1.
    let mut unreachable = env.clone();
    unreachable[0].1 = "127.0.0.1:9".into();
    let r = sus(&unreachable, &["cluster", "status", "--retry-for", "0"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("127.0.0.1:9"), "{}", r.stderr);
}
