//! What operators and analysts touch besides gRPC, on a real 3-node TLS cluster: the HTTP port
//! (Prometheus metrics checked against the submissions made, health and readiness, the status
//! page rendered by headless Chromium: the cluster's shape, and no submission on it), a pyarrow
//! client reading a scoped extract over Arrow
//! Flight, and `sus-node --config` (settings from TOML; bad files refused with one line).
//!
//! Chromium and pyarrow are outside the Rust toolchain: `.ci/run` installs them, and under CI
//! (`CI` set) a missing one fails the test; elsewhere the test says plainly what it skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use sus_client::ReadFrom;
use sus_client::cluster::UserInfo;
use sus_proto::v1::Tier;

async fn http_get(addr: &str, path: &str) -> (u16, String) {
    sus_chaos_tests::http::get(addr, path).await.unwrap()
}

use sus_chaos_tests::http::metric;

use common::{available, python};

fn has_pyarrow() -> bool {
    common::python_has("pyarrow.flight")
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_page_and_pyarrow_flight_on_a_cluster() {
    let (cluster, out, summary) = common::cluster_with_data(3_000, 17, 300).await;
    let https: BTreeMap<u64, String> = cluster
        .nodes
        .iter()
        .map(|(id, n)| (*id, n.http.clone().expect("every node has an HTTP port")))
        .collect();

    // Every node turns ready (a member, with leaders for the meta group and its shards).
    for addr in https.values() {
        assert_eq!(http_get(addr, "/health").await, (200, "ok\n".into()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = http_get(addr, "/ready").await;
            if code == 200 {
                break;
            }
            assert_eq!(code, 503, "{body}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "{addr} not ready: {body}"
            );
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.tick().await;
            tick.tick().await;
        }
    }

    // Submissions: what the metrics must count.
    let client = cluster.client(&[1, 2, 3]);
    let (mut accepted, mut rejected, mut resent) = (0u64, 0u64, 0u64);
    let mut records: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = Vec::new();
    for s in &summary.expected.submissions {
        let outcome = client.submit_file(&out.join(&s.file)).await.unwrap();
        let report = &outcome.report;
        ids.push(report.submission_id.clone());
        if report.resent {
            // The generator re-sends some submissions: answered with the original report.
            resent += 1;
        } else if outcome.accepted {
            accepted += 1;
            *records.entry(report.dataset.clone()).or_default() += report.records;
        } else {
            rejected += 1;
        }
    }
    assert!(accepted > 0);
    let national = common::spec("op", &[], Vec::new());
    let result = client.aggregate(&national, ReadFrom::Leader).await.unwrap();
    assert!(result.rows_scanned > 0);

    // Scrape every node until each group (meta + 4 shards) is led by exactly one node: on a
    // loaded machine an election may be under way, and a deposed leader can still believe it leads.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let scraped = loop {
        let mut scraped = String::new();
        for addr in https.values() {
            let (code, body) = http_get(addr, "/metrics").await;
            assert_eq!(code, 200);
            assert!(
                body.ends_with("# EOF\n"),
                "OpenMetrics text ends with # EOF"
            );
            scraped += &body;
        }
        if metric(&scraped, "sus_groups_led", "") == 5.0 {
            break scraped;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "groups led: {}",
            metric(&scraped, "sus_groups_led", "")
        );
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.tick().await;
        tick.tick().await;
    };
    let m = |name: &str, labels: &str| metric(&scraped, name, labels);
    assert_eq!(
        m("sus_submissions_total", "outcome=\"accepted\""),
        accepted as f64
    );
    assert_eq!(
        m("sus_submissions_total", "outcome=\"rejected\""),
        rejected as f64
    );
    for (dataset, n) in &records {
        assert_eq!(
            m(
                "sus_ingest_records_total",
                &format!("dataset=\"{dataset}\"")
            ),
            *n as f64,
            "{dataset}"
        );
    }
    assert_eq!(
        m("sus_submissions_total", "outcome=\"resent\""),
        resent as f64
    );
    // Resends are answered from the store, without a commit.
    assert_eq!(
        m("sus_commit_seconds_count", ""),
        (accepted + rejected) as f64
    );
    // The query's scans, and only they, ran on the nodes.
    assert_eq!(m("sus_scan_rows_total", ""), result.rows_scanned as f64);
    // Audit: logins, submissions and the query; every node has applied the same log.
    assert!(m("sus_audit_entries", "") >= 3.0 * (accepted + rejected + resent) as f64);

    // The status page's data: members, shards, versions and uptime; nothing about the data (the
    // port has no login): no submission, sender or count.
    for addr in https.values() {
        let (code, body) = http_get(addr, "/api/status").await;
        assert_eq!(code, 200);
        let s: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(s["ready"], true);
        assert_eq!(s["members"].as_array().unwrap().len(), 3);
        assert_eq!(s["shards"].as_array().unwrap().len(), 4);
        assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
        assert!(s["uptime_secs"].is_u64(), "{body}");
        assert!(s.get("recent_submissions").is_none(), "{body}");
        for id in &ids {
            assert!(!body.contains(id.as_str()), "submission {id} shown: {body}");
        }
    }

    // The page itself, as a browser renders it (its script fetches /api/status).
    let browser = chromium();
    if available("Chromium (headless)", browser.is_some()) {
        let browser = browser.unwrap();
        let addr = &https[&1];
        let page = tempfile::tempdir().unwrap();
        let dom = tokio::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--virtual-time-budget=5000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", page.path().display()))
            .arg(format!("http://{addr}/"))
            .output()
            .await
            .unwrap();
        let html = String::from_utf8_lossy(&dom.stdout);
        assert!(
            dom.status.success(),
            "{}",
            String::from_utf8_lossy(&dom.stderr)
        );
        assert!(
            html.contains("data-loaded=\"true\""),
            "the script ran: {html}"
        );
        assert!(html.contains(">ready<"), "{html}");
        for n in cluster.nodes.values() {
            assert!(html.contains(&n.addr), "member {} listed", n.addr);
        }
        assert!(
            html.contains(&format!("sus-node {}", env!("CARGO_PKG_VERSION"))),
            "the version is shown: {html}"
        );
        for id in &ids {
            assert!(!html.contains(id.as_str()), "submission {id} shown: {html}");
        }
    }

    // pyarrow over Flight, as a provider analyst: the provider's own apc rows, no others.
    if available("Python 3 with pyarrow", has_pyarrow()) {
        let live = common::read_live(&out.join("oracle/live.csv"));
        let mut count: BTreeMap<&str, u64> = BTreeMap::new();
        for r in live.iter().filter(|r| r.dataset == "apc") {
            *count.entry(r.provider.as_str()).or_default() += 1;
        }
        let (provider, rows) = count.iter().max_by_key(|(_, n)| **n).unwrap();
        let password = "analyst-password-1";
        client
            .add_user(
                UserInfo {
                    name: "analyst".into(),
                    role: "provider".into(),
                    org: provider.to_string(),
                    max_tier: Tier::Pseudonymised as i32,
                    ..Default::default()
                },
                password,
            )
            .await
            .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/flight_extract.py");
        let run = tokio::process::Command::new(python())
            .arg(&script)
            .arg(&cluster.nodes[&2].addr)
            .arg(&cluster.certs.ca)
            .args(["analyst", password, "apc"])
            .output()
            .await
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(got["datasets"], serde_json::json!(["apc", "ec", "op"]));
        assert_eq!(got["rows"], *rows);
        assert_eq!(got["providers"], serde_json::json!([provider]));
        // Pseudonymised: NHS numbers come as 32-hex-digit pseudonyms, never as themselves.
        for n in got["nhs_numbers"].as_array().unwrap() {
            let n = n.as_str().unwrap_or_default();
            assert!(
                n.is_empty() || (n.len() == 32 && n.chars().all(|c| c.is_ascii_hexdigit())),
                "{n}"
            );
        }
    }

    // Reachability: node 1 sees both peers up; once node 3 is stopped it says so, with why, in
    // its status, its metrics and (once) its log.
    let member3 = |s: &serde_json::Value| {
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == 3)
            .cloned()
            .unwrap()
    };
    let addr3 = cluster.nodes[&3].addr.clone();
    let seen = status_until(&https[&1], |s| member3(s)["reachable"] == true).await;
    assert_eq!(member3(&seen)["problem"], serde_json::Value::Null);
    let (_, scraped) = http_get(&https[&1], "/metrics").await;
    assert_eq!(metric(&scraped, "sus_peer_up", "peer=\"2\""), 1.0);
    let mut cluster = cluster;
    cluster.stop(3).await;
    let seen = status_until(&https[&1], |s| member3(s)["reachable"] == false).await;
    let problem = member3(&seen)["problem"].as_str().unwrap().to_string();
    assert!(!problem.is_empty());
    let (_, scraped) = http_get(&https[&1], "/metrics").await;
    assert_eq!(metric(&scraped, "sus_peer_up", "peer=\"3\""), 0.0);
    let log = cluster.log_of(1);
    assert!(
        log.contains(&format!("node 3 at {addr3} is unreachable: {problem}")),
        "{log}"
    );
}

/// Polls a node's `/api/status` until `done` holds of it (30 s at most).
async fn status_until(addr: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(addr, "/api/status").await;
        assert_eq!(code, 200, "{body}");
        let s: serde_json::Value = serde_json::from_str(&body).unwrap();
        if done(&s) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.tick().await;
        tick.tick().await;
    }
}

/// Runs `sus-node` with `args`, returning (exit code, stdout, stderr).
fn sus_node(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sus-node"))
        .args(args)
        .current_dir(dir)
        .env_remove("SUS_NODE_ID")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_files_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = sus_node(&["--config", "nope.toml", "serve"], dir.path());
    assert_eq!(missing.0, 2);
    assert!(
        missing
            .2
            .starts_with("sus-node: error: reading the config file nope.toml"),
        "{}",
        missing.2
    );

    std::fs::write(
        dir.path().join("bad.toml"),
        "id = 1\nlisen = \"0.0.0.0:7401\"\n",
    )
    .unwrap();
    let unknown = sus_node(&["--config", "bad.toml", "serve"], dir.path());
    assert_eq!(unknown.0, 2);
    assert!(unknown.2.contains("unknown field `lisen`"), "{}", unknown.2);
    assert!(unknown.2.contains("line 2"), "{}", unknown.2);

    std::fs::write(dir.path().join("type.toml"), "id = \"one\"\n").unwrap();
    let typed = sus_node(&["--config", "type.toml", "serve"], dir.path());
    assert_eq!(typed.0, 2);
    assert!(typed.2.contains("id"), "{}", typed.2);

    let no_id = sus_node(&["serve", "--plaintext"], dir.path());
    assert_eq!(no_id.0, 1);
    assert!(no_id.2.contains("the node needs an id"), "{}", no_id.2);
}

#[tokio::test]
async fn a_node_starts_from_a_config_file_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let refdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata");
    let config = format!(
        "data_dir = \"{}\"\nrefdata = \"{}\"\nid = 7\nlisten = \"127.0.0.1:1\"\n\
         http_listen = \"127.0.0.1:0\"\nplaintext = true\nlog_format = \"json\"\n",
        dir.path().join("data").display(),
        refdata.display()
    );
    std::fs::write(dir.path().join("node.toml"), config).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sus-node"))
        .arg("--config")
        .arg(dir.path().join("node.toml"))
        // The flag wins over the file's (unusable) port.
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    assert!(
        first.starts_with("sus-node 7 listening on 127.0.0.1:"),
        "{first}"
    );
    let second = lines.next_line().await.unwrap().unwrap();
    let http = second.rsplit(' ').next().unwrap().to_string();
    assert!(second.starts_with("sus-node 7 http on"), "{second}");
    // Not a member yet: alive, not ready, and says why.
    assert_eq!(http_get(&http, "/health").await.0, 200);
    let (code, body) = http_get(&http, "/ready").await;
    assert_eq!(code, 503);
    assert!(body.contains("not a member"), "{body}");
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    // JSON logs: every line an object.
    let logs = String::from_utf8_lossy(&out.stderr);
    let first_log = logs.lines().next().expect("an info line at start");
    let parsed: serde_json::Value = serde_json::from_str(first_log).unwrap();
    assert!(parsed["level"].is_string(), "{first_log}");
}
