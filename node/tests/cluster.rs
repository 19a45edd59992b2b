//! Replication on real clusters: 3 and 5 `sus-node` processes on loopback ports with their own
//! data directories, driven through the client library over gRPC, with real faults (SIGKILL,
//! SIGSTOP, wiped disks).
//!
//! Every test submits the generator's files in order and checks what the cluster acknowledged
//! against the generator's independent oracle: each accepted report's counts, the national live
//! record count and price total, byte-identical logical content on every replica of each shard
//! (a checksum over rows, not file bytes), and that every acknowledged submission is still there
//! (a resend is answered with its original version). Some spells are finished by a later file, so
//! episodes stored earlier are derived again through the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use sus_chaos_tests::cluster::{NodeOptions, TestCluster, totals};
use sus_client::generator::{Expected, GenConfig, generate};
use sus_client::{Client, RetryPolicy};

fn refdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata")
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sus-node"))
}

/// The generator's files, in submission order, and its expectations.
fn dataset(dir: &Path, rows: u64, seed: u64) -> (Vec<PathBuf>, Expected) {
    let summary = generate(
        &GenConfig {
            rows,
            seed,
            refdata_dir: refdata(),
            out_dir: dir.to_path_buf(),
            rows_per_file: 400,
            reject_files: true,
            // Spells finished by a later file: their earlier episodes are derived again, through
            // the log, on every replica.
            split_spell_share: 0.1,
            ..GenConfig::default()
        },
        &mut |_| {},
    )
    .expect("generate");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    assert_eq!(files.len() as u64, summary.files);
    (files, summary.expected)
}

/// What the cluster acknowledged for one file.
struct Ack {
    file: PathBuf,
    accepted: bool,
    version: Option<u64>,
    shard: u32,
}

/// Submits `files` through `client`, checking each report against the oracle's expectation.
async fn submit_all(client: &Client, files: &[PathBuf], expected: &Expected) -> Vec<Ack> {
    let mut acks = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let outcome = client
            .submit_file(file)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = expected
            .submissions
            .iter()
            .find(|s| s.file == name)
            .unwrap_or_else(|| panic!("{name} not in expected.json"));
        let r = &outcome.report;
        assert_eq!(outcome.accepted, want.outcome == "accepted", "{name}: {r}");
        if outcome.accepted && want.duplicate_of.is_none() {
            for (field, got, value) in [
                ("inserted", r.inserted, want.inserted),
                ("replaced", r.replaced, want.replaced),
                ("deleted", r.deleted, want.deleted),
                ("stale", r.stale, want.stale),
                ("bulk_deleted", r.bulk_deleted, want.bulk_deleted),
                ("rederived", r.rederived, want.rederived),
            ] {
                assert_eq!(got, value, "{name}: {field} in {r}");
            }
        }
        acks.push(Ack {
            file: file.clone(),
            accepted: outcome.accepted,
            version: outcome.version(),
            shard: outcome.shard,
        });
    }
    acks
}

/// Every acknowledged submission is still there: a resend gets the original outcome and version.
async fn check_acks_durable(client: &Client, acks: &[Ack]) {
    for ack in acks {
        let again = client.submit_file(&ack.file).await.unwrap();
        assert!(again.report.resent, "{}", ack.file.display());
        assert_eq!(again.accepted, ack.accepted, "{}", ack.file.display());
        assert_eq!(again.version(), ack.version, "{}", ack.file.display());
        assert_eq!(again.shard, ack.shard);
    }
}

/// All replicas agree, and the national totals are the oracle's.
async fn check_converged(cluster: &TestCluster, expected: &Expected) {
    let contents = cluster
        .wait_replicas_agree(Duration::from_secs(120))
        .await
        .unwrap();
    let (live, price) = totals(&contents);
    assert_eq!(live, expected.all.live_records, "national live records");
    assert_eq!(
        price, expected.all.total_price_pence,
        "national price (pence)"
    );
}

fn thirds<T>(v: &[T]) -> (&[T], &[T], &[T]) {
    let n = v.len() / 3;
    (&v[..n], &v[n..2 * n], &v[2 * n..])
}

// Three nodes: writes keep being acknowledged with a follower down and after the leader of a
// shard is killed; no acknowledged submission is lost; a read-your-write (read index) on the
// leader sees the last write; the restarted nodes catch up and every replica holds the same rows;
// leadership can be moved on request (planned restarts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_tolerate_a_lost_follower_and_a_killed_leader() {
    let mut cluster = TestCluster::start(&bin(), &refdata(), 3, 4, 3, NodeOptions::default())
        .await
        .unwrap();
    let (files, expected) = dataset(&cluster.scratch(), 6000, 11);
    let (first, second, third) = thirds(&files);
    let mut acks = submit_all(&cluster.client(&[1, 2, 3]), first, &expected).await;

    // A follower of shard 0's group goes down; writes continue through the other two nodes.
    let leader0 = cluster.leader_of(1).await.unwrap();
    let follower = (1..=3).find(|n| *n != leader0).unwrap();
    cluster.kill(follower).await;
    let up: Vec<u64> = (1..=3).filter(|n| *n != follower).collect();
    acks.extend(submit_all(&cluster.client(&up), second, &expected).await);

    // Read your write: the last acknowledged submission's shard, read through its leader.
    let last = acks.iter().rev().find(|a| a.accepted).unwrap();
    let leader = cluster.leader_of(u64::from(last.shard) + 1).await.unwrap();
    let content = cluster
        .client(&[leader])
        .shard_content(0, last.shard, true)
        .await
        .unwrap();
    assert!(content.version >= last.version.unwrap());

    // The follower comes back; then the leader of shard 0 is killed mid-stream.
    cluster.restart(follower).await.unwrap();
    let leader0 = cluster.leader_of(1).await.unwrap();
    cluster.kill(leader0).await;
    let up: Vec<u64> = (1..=3).filter(|n| *n != leader0).collect();
    acks.extend(submit_all(&cluster.client(&up), third, &expected).await);
    let new_leader = cluster.leader_of(1).await.unwrap();
    assert_ne!(new_leader, leader0, "a new leader was elected");

    cluster.restart(leader0).await.unwrap();
    check_converged(&cluster, &expected).await;
    check_acks_durable(&cluster.client(&[1, 2, 3]), &acks).await;

    // Planned restart: leadership of shard 0 moves back to the restarted node on request.
    cluster
        .client(&[1, 2, 3])
        .transfer_leader(1, leader0)
        .await
        .unwrap();
    cluster
        .wait_for(
            "the requested leader to be reported",
            Duration::from_secs(30),
            async |c| c.leader_of(1).await == Some(leader0),
        )
        .await
        .unwrap();
}

// Five nodes, five replicas per shard: writes are acknowledged with any two nodes down, and the
// two catch up when they return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_tolerate_two_down() {
    let mut cluster = TestCluster::start(&bin(), &refdata(), 5, 2, 5, NodeOptions::default())
        .await
        .unwrap();
    let (files, expected) = dataset(&cluster.scratch(), 3000, 12);
    let (first, second, third) = thirds(&files);
    let mut acks = submit_all(&cluster.client(&[1, 2, 3, 4, 5]), first, &expected).await;
    // Two down, one of them the meta group's leader.
    let meta_leader = cluster.leader_of(0).await.unwrap();
    let other = (1..=5).find(|n| *n != meta_leader).unwrap();
    cluster.kill(meta_leader).await;
    cluster.kill(other).await;
    let up: Vec<u64> = (1..=5).filter(|n| cluster.is_up(*n)).collect();
    acks.extend(submit_all(&cluster.client(&up), second, &expected).await);
    cluster.restart(meta_leader).await.unwrap();
    cluster.restart(other).await.unwrap();
    acks.extend(submit_all(&cluster.client(&[1, 2, 3, 4, 5]), third, &expected).await);
    check_converged(&cluster, &expected).await;
    check_acks_durable(&cluster.client(&[1, 2, 3, 4, 5]), &acks).await;
}

// Every node killed (SIGKILL) with submissions applied only in the replicas' write buffers: the
// rows come back from the Raft logs, no acknowledged submission is lost, the replicas agree, and
// the cluster takes more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_killed_loses_no_acknowledged_submission() {
    let mut cluster = TestCluster::start(&bin(), &refdata(), 3, 4, 3, NodeOptions::default())
        .await
        .unwrap();
    let (files, expected) = dataset(&cluster.scratch(), 3000, 14);
    let (first, second) = files.split_at(files.len() / 2);
    let mut acks = submit_all(&cluster.client(&[1, 2, 3]), first, &expected).await;
    // A checkpoint comes after 30 s by default: what was acknowledged is in memory and logs.
    for n in 1..=3 {
        cluster.kill(n).await;
    }
    for n in 1..=3 {
        cluster.restart(n).await.unwrap();
    }
    check_acks_durable(&cluster.client(&[1, 2, 3]), &acks).await;
    acks.extend(submit_all(&cluster.client(&[1, 2, 3]), second, &expected).await);
    check_converged(&cluster, &expected).await;
    check_acks_durable(&cluster.client(&[1, 2, 3]), &acks).await;
}

// A node whose disk is wiped rejoins under a new id (never its old one) and receives its shards
// by snapshot, since the leaders have purged the log it would need; the cluster grows to four
// nodes online (replicas move onto the new node) and then drops the dead node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_rejoins_under_a_new_id_by_snapshot() {
    let options = NodeOptions {
        snapshot_after: 8,
        keep_after_snapshot: 2,
        ..NodeOptions::default()
    };
    let mut cluster = TestCluster::start(&bin(), &refdata(), 3, 4, 3, options)
        .await
        .unwrap();
    let (files, expected) = dataset(&cluster.scratch(), 6000, 13);
    let (first, second, third) = thirds(&files);
    let mut acks = submit_all(&cluster.client(&[1, 2, 3]), first, &expected).await;

    cluster.wipe(3).await.unwrap();
    acks.extend(submit_all(&cluster.client(&[1, 2]), second, &expected).await);

    // The old id is refused; the node comes back as node 4 on a new port and is added online.
    let addr = cluster.spawn(4, "127.0.0.1:0").await.unwrap();
    let admin = cluster.client(&[1, 2]);
    let refused = admin.add_node(3, &addr, true).await;
    assert!(refused.is_err(), "re-adding a used node id must be refused");
    let status = admin.add_node(4, &addr, true).await.unwrap();
    let hosted_by_4 = status
        .shards
        .iter()
        .filter(|s| s.replicas.contains(&4))
        .count();
    assert!(
        hosted_by_4 >= 3,
        "node 4 received replicas: {:?}",
        status.shards
    );
    let status = admin.remove_node(3).await.unwrap();
    assert!(status.nodes.iter().all(|n| n.id != 3));
    assert!(
        status
            .shards
            .iter()
            .all(|s| !s.replicas.contains(&3) && s.replicas.len() == 3)
    );
    cluster.forget(3);

    acks.extend(submit_all(&cluster.client(&[1, 2, 4]), third, &expected).await);
    check_converged(&cluster, &expected).await;
    check_acks_durable(&cluster.client(&[1, 2, 4]), &acks).await;
    let log = cluster.log_of(4);
    assert!(
        log.contains("snapshot installed"),
        "node 4 caught up by snapshot; its log:\n{log}"
    );
}

// A node cut off from the majority (the other two paused) cannot acknowledge a write: the write
// fails or times out, never reports success; once the majority is back the same submission is
// accepted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_never_acknowledges() {
    let options = NodeOptions {
        commit_timeout_ms: 2000,
        ..NodeOptions::default()
    };
    let cluster = TestCluster::start(&bin(), &refdata(), 3, 2, 3, options)
        .await
        .unwrap();
    let (files, expected) = dataset(&cluster.scratch(), 1500, 14);
    let (first, rest) = files.split_at(files.len() / 2);
    let mut acks = submit_all(&cluster.client(&[1, 2, 3]), first, &expected).await;

    cluster.signal(2, "STOP").unwrap();
    cluster.signal(3, "STOP").unwrap();
    let isolated = cluster.client_with(
        &[1],
        RetryPolicy {
            retry_for: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(5),
        },
    );
    let probe = rest
        .iter()
        .find(|f| {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            expected
                .submissions
                .iter()
                .any(|s| s.file == name && s.outcome == "accepted")
        })
        .unwrap();
    let result = isolated.submit_file(probe).await;
    assert!(
        result.is_err(),
        "a minority acknowledged a write: {:?}",
        result.map(|o| o.report)
    );
    assert!(result.err().unwrap().is_retryable());

    cluster.signal(2, "CONT").unwrap();
    cluster.signal(3, "CONT").unwrap();
    acks.extend(submit_all(&cluster.client(&[1, 2, 3]), rest, &expected).await);
    check_converged(&cluster, &expected).await;
    check_acks_durable(&cluster.client(&[1, 2, 3]), &acks).await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

// Prices are derived once, by the shard leader, so every leader must price with the reference data
// version the cluster recorded: a leader whose files differ (here one MFF changed) refuses
// submissions with a clear error instead of pricing them differently; with the cluster's files
// back, the same submission is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_with_other_reference_data_refuses_to_price() {
    let mut cluster = TestCluster::start(&bin(), &refdata(), 3, 1, 3, NodeOptions::default())
        .await
        .unwrap();
    let (files, expected) = dataset(&cluster.scratch(), 300, 15);
    let other = cluster.scratch().join("other-refdata");
    copy_dir(&refdata(), &other);
    let mff = other.join("2024-25/mff.csv");
    let text = std::fs::read_to_string(&mff).unwrap();
    std::fs::write(&mff, text.replacen("1.187991", "1.187992", 1)).unwrap();

    cluster.kill(3).await;
    cluster.restart_with(3, &other).await.unwrap();
    let client = cluster.client(&[1, 2, 3]);
    client.transfer_leader(1, 3).await.unwrap();
    let status = cluster.status_of(3).await.unwrap();
    assert_ne!(status.refdata, status.node_refdata);
    let refused = client.submit_file(&files[0]).await;
    match refused {
        Err(sus_client::Error::Refused(message)) => {
            assert!(message.contains("reference data"), "{message}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|o| o.report)),
    }

    cluster.kill(3).await;
    cluster.restart(3).await.unwrap();
    let acks = submit_all(&cluster.client(&[1, 2, 3]), &files, &expected).await;
    assert!(acks.iter().any(|a| a.accepted));
    check_converged(&cluster, &expected).await;
}

/// A copy of `file`'s envelope with another submission id.
fn envelope_with_id(file: &Path, id: &str) -> String {
    let path = PathBuf::from(format!("{}.meta.json", file.display()));
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(meta.get("submission_id").is_some(), "envelope names its id");
    meta["submission_id"] = serde_json::Value::String(id.to_string());
    meta.to_string()
}

// A refusal decided by what a command is gets recorded alike on every replica; an error that is
// not (a bug, a build that differs from the leader's: here a fault switch makes node 2 meet an
// internal error applying one submission) stops that replica, which says why, instead of
// recording a refusal the others did not: the other replicas apply the write and carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_meeting_an_internal_error_stops_and_a_refusal_is_recorded_everywhere() {
    let options = NodeOptions {
        env: vec![(
            "SUS_TEST_BROKEN".into(),
            "internal-apply,refuse-apply".into(),
        )],
        ..NodeOptions::default()
    };
    let cluster = TestCluster::start(&bin(), &refdata(), 3, 1, 3, options)
        .await
        .unwrap();
    let (files, expected) = dataset(&cluster.scratch(), 1200, 23);
    let accepted: Vec<&PathBuf> = files
        .iter()
        .filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy();
            expected
                .submissions
                .iter()
                .any(|s| s.file == name && s.outcome == "accepted" && s.duplicate_of.is_none())
        })
        .collect();
    assert!(accepted.len() >= 3, "the dataset has three accepted files");
    let client = cluster.client(&[1, 2, 3]);
    // Node 1 leads shard 0 (group 1), so node 2 is a follower.
    client.transfer_leader(1, 1).await.unwrap();
    cluster
        .wait_for(
            "node 1 to lead shard 0",
            Duration::from_secs(30),
            async |c| c.leader_of(1).await == Some(1),
        )
        .await
        .unwrap();
    client.submit_file(accepted[0]).await.unwrap();

    // Every replica refuses this one as it applies it (a deterministic refusal): the same
    // answer everywhere, recorded as the entry's answer, and the group carries on.
    let content = std::fs::read(accepted[1]).unwrap();
    let refused = client
        .submit(
            &envelope_with_id(accepted[1], "refuse-1"),
            "refuse-1.csv",
            content,
        )
        .await;
    match refused {
        Err(sus_client::Error::Refused(m)) => {
            assert!(m.contains("fault switch refuse-apply"), "{m}")
        }
        other => panic!("expected a refusal recorded by the log, got {other:?}"),
    }
    let agreed = cluster
        .wait_replicas_agree(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(agreed.len(), 3);

    // Node 2 meets an internal error applying this one: it stops its replica and says why.
    let content = std::fs::read(accepted[2]).unwrap();
    let outcome = client
        .submit(
            &envelope_with_id(accepted[2], "break-1"),
            "break-1.csv",
            content,
        )
        .await
        .unwrap();
    assert!(outcome.accepted, "{}", outcome.report);
    cluster
        .wait_for(
            "node 2 to report its stopped replica",
            Duration::from_secs(30),
            async |c| {
                c.status_of(2).await.is_ok_and(|s| {
                    s.groups
                        .iter()
                        .any(|g| g.group == 1 && g.stopped.contains("internal error"))
                })
            },
        )
        .await
        .unwrap();
    // Every authenticated caller may read the status: it names the class of failure, never the
    // detail (which may name files or records); the node's log has that.
    let status = cluster.status_of(2).await.unwrap();
    let stopped = &status.groups.iter().find(|g| g.group == 1).unwrap().stopped;
    assert!(!stopped.contains("fault switch"), "{stopped}");
    let log = cluster.log_of(2);
    assert!(
        log.contains("this shard replica stops"),
        "node 2 says why:\n{log}"
    );
    assert!(
        log.contains("fault switch internal-apply"),
        "node 2 names the error:\n{log}"
    );

    // Nodes 1 and 3 applied the write and agree; node 2 did not record anything for it.
    let contents = client.replica_contents().await.unwrap();
    let of = |node: u64| {
        contents
            .iter()
            .find(|r| r.node == node)
            .and_then(|r| r.content.as_ref().ok())
            .cloned()
    };
    let (one, three) = (of(1).unwrap(), of(3).unwrap());
    assert_eq!(one.checksum, three.checksum, "the running replicas agree");
    assert_eq!(one.last_applied, three.last_applied);
    let before = agreed.iter().find(|r| r.node == 2).unwrap();
    let before = before.content.as_ref().unwrap();
    assert_eq!(
        one.submissions,
        before.submissions + 1,
        "the write is on nodes 1 and 3"
    );
    if let Some(two) = of(2) {
        assert!(
            two.last_applied < one.last_applied,
            "node 2 stopped before the entry"
        );
        assert_eq!(
            two.checksum, before.checksum,
            "node 2 recorded nothing for it"
        );
    }
}

// Compaction runs beside the apply path: while the shard leader's compaction is held open (a
// test switch stretches every replica's to 10 s after planning), submissions to that shard keep
// being committed within a quarter of the compaction's length; the compaction then finishes,
// replicas agree, and the totals are the oracle's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_commit_while_a_compaction_runs() {
    const PAUSE: Duration = Duration::from_secs(10);
    const BOUND: Duration = Duration::from_millis(2500);
    let options = NodeOptions {
        env: vec![(
            "SUS_TEST_COMPACTION_PAUSE_MS".into(),
            PAUSE.as_millis().to_string(),
        )],
        ..NodeOptions::default()
    };
    let cluster = TestCluster::start(&bin(), &refdata(), 3, 1, 3, options)
        .await
        .unwrap();
    let (files, expected) = dataset(&cluster.scratch(), 3000, 31);
    let (first, rest) = files.split_at(files.len() / 2);
    // Small files take about 30 ms each: 30 of them fit well inside the stretched compaction.
    let (during, after) = rest.split_at(rest.len().min(30));
    let client = cluster.client(&[1, 2, 3]);
    let mut acks = submit_all(&client, first, &expected).await;

    let compacting = {
        let client = cluster.client(&[1, 2, 3]);
        tokio::spawn(async move { client.compact(100_000).await })
    };
    let leader = cluster.leader_of(1).await.unwrap();
    cluster
        .wait_for(
            "the shard's leader to start compacting",
            Duration::from_secs(120),
            async |c| c.log_of(leader).contains("compacting"),
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    for file in during {
        let at = std::time::Instant::now();
        acks.extend(submit_all(&client, std::slice::from_ref(file), &expected).await);
        slowest = slowest.max(at.elapsed());
    }
    let submitting = started.elapsed();
    eprintln!(
        "{} submissions in {submitting:?} during the compaction, slowest {slowest:?}",
        during.len()
    );
    assert!(
        !compacting.is_finished() && submitting < PAUSE,
        "the submissions ({} in {submitting:?}) ran while the compaction did",
        during.len()
    );
    assert!(
        slowest < BOUND,
        "slowest commit during compaction {slowest:?} (bound {BOUND:?})"
    );

    let stats = compacting.await.unwrap().unwrap();
    // The write buffer already wrote one segment per provider: there may be nothing to merge.
    assert!(
        stats.segments_before > 0 && stats.segments_after <= stats.segments_before,
        "{stats:?}"
    );
    acks.extend(submit_all(&client, after, &expected).await);
    check_converged(&cluster, &expected).await;
    check_acks_durable(&client, &acks).await;
}
