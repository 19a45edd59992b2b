//! The checks after the cluster has healed (invariants 1, 2, 3, 4 and 6; reads during the run
//! check 2 and 5 as they go, see [`crate::workload`]).

use crate::cluster::TestCluster;
use crate::plan::State;
use crate::workload::{History, read_totals};
use std::collections::BTreeMap;
use std::time::Duration;
use sus_client::ReadFrom;

/// Runs the final checks, recording violations in `h`.
pub async fn after_healing(cluster: &TestCluster, plan: &crate::plan::Plan, h: &mut History) {
    // 3: every replica of each shard holds the same content.
    if let Err(e) = replicas_identical(cluster, Duration::from_secs(90)).await {
        h.violate(3, e);
    }
    let client = cluster.client_up();
    let datasets = plan.datasets();
    let totals = match read_totals(&client, &datasets, None, ReadFrom::Leader).await {
        Ok(t) => t,
        Err(e) => {
            h.violate(1, format!("the healed cluster cannot be read: {e}"));
            return;
        }
    };
    // 1 and 2: each stream holds exactly its acknowledged prefix, or that plus the one file whose
    // outcome stayed unknown (all of it or none of it).
    let empty = State::new();
    let mut expected_providers: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    let mut observed_providers: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for dataset in &datasets {
        let observed = plan.observed(dataset, &totals[dataset]);
        for (stream, states) in plan.states.iter().filter(|(s, _)| &s.1 == dataset) {
            let acked = h.acked.get(stream).copied().unwrap_or(0);
            let started = h.started.get(stream).copied().unwrap_or(0);
            let seen = observed.get(stream).unwrap_or(&empty);
            let chosen = if &states[acked] == seen {
                acked
            } else if started > acked && &states[started] == seen {
                started
            } else {
                let detail = format!(
                    "{stream:?}: after {acked} acknowledged submissions (+{} unknown) the cluster \
                     holds {seen:?}, the oracle {:?}",
                    started - acked,
                    states[acked]
                );
                h.violate(if seen.is_empty() || acked > 0 { 1 } else { 2 }, detail);
                acked
            };
            for (p, t) in &states[chosen] {
                let e = expected_providers.entry(p.clone()).or_default();
                e.0 += t.live_records;
                e.1 += t.total_price_pence;
            }
            for (p, t) in seen {
                let o = observed_providers.entry(p.clone()).or_default();
                o.0 += t.live_records;
                o.1 += t.total_price_pence;
            }
        }
    }
    // 4: national and per-provider price totals recomputed from the acknowledged submissions.
    let national = |m: &BTreeMap<String, (u64, i64)>| m.values().map(|v| v.1).sum::<i64>();
    if national(&expected_providers) != national(&observed_providers) {
        h.violate(
            4,
            format!(
                "national price total {} pence, recomputed from the acknowledged submissions {}",
                national(&observed_providers),
                national(&expected_providers)
            ),
        );
    }
    for (p, e) in &expected_providers {
        let o = observed_providers.get(p).copied().unwrap_or_default();
        if o.1 != e.1 {
            h.violate(
                4,
                format!("provider {p}: price total {} pence, expected {}", o.1, e.1),
            );
        }
    }
    // 6: every freeze point still reads what it read when it was taken.
    for (name, then) in h.freezes.clone() {
        match read_totals(&client, &datasets, Some(&name), ReadFrom::AnyReplica).await {
            Ok(now) if now == then => {}
            Ok(now) => {
                let changed: Vec<&String> = then
                    .keys()
                    .filter(|d| then.get(*d) != now.get(*d))
                    .collect();
                h.violate(
                    6,
                    format!("freeze point {name} reads differently now ({changed:?})"),
                );
            }
            Err(e) => h.violate(6, format!("freeze point {name} cannot be read: {e}")),
        }
    }
}

/// Waits until the replicas of every shard have applied the same log index, then requires their
/// content checksums to be equal: a difference at the same index is divergence, at once.
async fn replicas_identical(cluster: &TestCluster, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let contents = cluster
            .client_up()
            .replica_contents()
            .await
            .map_err(|e| format!("reading replica contents: {e}"))?;
        let mut by_shard: BTreeMap<u32, Vec<(u64, u64, String)>> = BTreeMap::new();
        let mut unreadable = Vec::new();
        for r in &contents {
            match &r.content {
                Ok(c) => by_shard.entry(r.shard).or_default().push((
                    r.node,
                    c.last_applied,
                    c.checksum.clone(),
                )),
                Err(e) => unreadable.push(format!("shard {} on node {}: {e}", r.shard, r.node)),
            }
        }
        let caught_up =
            unreadable.is_empty() && by_shard.values().all(|v| v.iter().all(|x| x.1 == v[0].1));
        if caught_up {
            let diverged: Vec<String> = by_shard
                .iter()
                .filter(|(_, v)| v.iter().any(|x| x.2 != v[0].2))
                .map(|(shard, v)| format!("shard {shard}: (node, applied, checksum) {v:?}"))
                .collect();
            return if diverged.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "replicas differ at the same applied index: {}",
                    diverged.join("; ")
                ))
            };
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "replicas did not catch up within {timeout:?}: {by_shard:?} {unreadable:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
