//! Section `http` of the security suite (see `main.rs`): the unauthenticated HTTP port shows the
//! cluster's health and shape, and nothing about its data. Every response of every node is
//! searched for what the fixture submitted: provider and sender codes, submission ids, rule
//! codes.

use crate::ensure;
use crate::fixture::{Cases, Fixture};
use std::collections::BTreeSet;

pub async fn run(fx: &Fixture, cases: &mut Cases) {
    // What must not appear: every organisation code and submission id of the fixture's data.
    let mut secrets: BTreeSet<String> = BTreeSet::new();
    let expected = &fx.summary.expected;
    secrets.extend(expected.providers.keys().cloned());
    secrets.extend(expected.sender_of.values().cloned());
    for s in &expected.submissions {
        secrets.insert(s.sender.clone());
        secrets.insert(s.submission_id.clone());
    }
    for o in [&fx.orgs.p, &fx.orgs.q, &fx.orgs.c, &fx.orgs.d] {
        secrets.insert(o.clone());
    }
    let ports: Vec<(u64, String)> = fx
        .cluster
        .nodes
        .iter()
        .map(|(id, n)| (*id, n.http.clone().expect("an HTTP port")))
        .collect();

    cases
        .check(
            "http: /api/status shows members, shard leaders, versions and uptime, and no \
             submission, sender, provider, count or rule (every node)",
            async {
                for (id, addr) in &ports {
                    let body = get(addr, "/api/status").await?;
                    let s: serde_json::Value =
                        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
                    ensure!(s["members"].as_array().map(Vec::len) == Some(3), "{body}");
                    ensure!(s["shards"].as_array().map(Vec::len) == Some(4), "{body}");
                    ensure!(s["version"].is_string(), "no version: {body}");
                    ensure!(s["uptime_secs"].is_u64(), "no uptime: {body}");
                    let keys: BTreeSet<&str> = s
                        .as_object()
                        .map(|o| o.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let shape: BTreeSet<&str> = [
                        "node",
                        "advertise",
                        "cluster_id",
                        "ready",
                        "not_ready",
                        "meta_leader",
                        "members",
                        "shards",
                        "refdata",
                        "version",
                        "uptime_secs",
                    ]
                    .into();
                    ensure!(keys == shape, "node {id}: fields {keys:?}");
                    leaks(&body, &secrets).map_err(|e| format!("node {id} /api/status: {e}"))?;
                }
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "http: /metrics and the status page carry no sender, provider, submission id or \
             rule (every node)",
            async {
                for (id, addr) in &ports {
                    for path in ["/metrics", "/"] {
                        let body = get(addr, path).await?;
                        leaks(&body, &secrets).map_err(|e| format!("node {id} {path}: {e}"))?;
                    }
                    let metrics = get(addr, "/metrics").await?;
                    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
                        let labels = line.split_once('{').map(|(_, l)| l).unwrap_or("");
                        for forbidden in ["sender", "provider", "submission", "rule"] {
                            ensure!(
                                !labels.contains(forbidden),
                                "node {id}: a metric labelled by {forbidden}: {line}"
                            );
                        }
                    }
                }
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "http: the recent-submissions list is gone (no route serves it)",
            async {
                for (id, addr) in &ports {
                    for path in ["/api/submissions", "/api/recent"] {
                        let (code, _) = sus_chaos_tests::http::get(addr, path).await?;
                        ensure!(code == 404, "node {id} {path}: HTTP {code}");
                    }
                }
                Ok(())
            },
        )
        .await;
}

async fn get(addr: &str, path: &str) -> Result<String, String> {
    let (code, body) = sus_chaos_tests::http::get(addr, path).await?;
    ensure!(code == 200, "{path}: HTTP {code}");
    Ok(body)
}

/// `Err` naming what `body` reveals: any token (a run of letters and digits) that is one of
/// `secrets`, or a rule code.
fn leaks(body: &str, secrets: &BTreeSet<String>) -> Result<(), String> {
    let found: BTreeSet<&str> = body
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| secrets.contains(*t))
        .collect();
    ensure!(found.is_empty(), "shows {found:?}");
    for rule in ["R01-", "R04-", "R05-", "R06-", "W01-", "W05-"] {
        ensure!(!body.contains(rule), "shows rule codes ({rule})");
    }
    Ok(())
}
