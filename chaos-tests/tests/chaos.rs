//! The chaos suite's CI schedule, the proof that its checker catches deliberately broken builds,
//! and the compose deployment driven end to end.
//!
//! Runs serially (one lock): each starts a real cluster, and two at once would starve this
//! 2-core machine. Tests that need Docker fail under CI=true without it, and say plainly that
//! they were skipped otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;
use sus_chaos_tests::cluster::{Launcher, docker_available, replicas_agree};
use sus_chaos_tests::faults::FaultKind;
use sus_chaos_tests::run::{Report, RunConfig, run};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory of the workspace's built binaries (this test runs from `<dir>/deps/`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf();
    assert!(
        dir.join("sus-node").exists() && dir.join("sus").exists(),
        "sus-node and sus are not built in {} (cargo test --workspace builds them; or cargo build -p sus-node -p sus-client)",
        dir.display()
    );
    dir
}

/// Whether Docker tests can run; under CI they must.
fn docker_or_skip(test: &str) -> bool {
    if docker_available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: no Docker engine answers, and CI requires one"
    );
    eprintln!("SKIPPED {test}: no Docker engine answers here (docker info failed)");
    false
}

/// Builds the node image from the debug binaries (once per test process).
fn image() -> String {
    static BUILT: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let tag = "sus-node:test".to_string();
            let dir = bin_dir();
            let out = std::process::Command::new("bash")
                .arg(root().join("deploy/image/build.sh"))
                .args([
                    "--profile",
                    "debug",
                    "--no-cargo",
                    "--tag",
                    &tag,
                    "--bin-dir",
                ])
                .arg(&dir)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(tag)
        })
        .clone()
        .expect("building the node image")
}

fn short(launcher: Launcher, seed: u64) -> RunConfig {
    RunConfig::short(
        launcher,
        bin_dir().join("sus-node"),
        root().join("refdata"),
        seed,
    )
}

fn seed() -> u64 {
    std::env::var("SUS_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261126)
}

async fn run_ok(cfg: RunConfig) -> Report {
    let report = run(cfg).await.expect("the chaos harness runs");
    eprint!("{report}");
    assert!(
        report.violations.is_empty(),
        "invariants violated (replay with SUS_CHAOS_SEED={}):\n{report}",
        report.seed
    );
    assert!(
        report.acks > 0 && report.reads > 0,
        "the workload made progress"
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_schedule_on_processes_keeps_every_invariant() {
    let _serial = SERIAL.lock().await;
    let report = run_ok(short(Launcher::Process, seed())).await;
    assert!(report.injected.len() >= 5, "faults were injected: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_schedule_on_containers_keeps_every_invariant() {
    let _serial = SERIAL.lock().await;
    if !docker_or_skip("short_schedule_on_containers_keeps_every_invariant") {
        return;
    }
    let report = run_ok(short(Launcher::Docker { image: image() }, seed() + 1)).await;
    assert!(report.injected.len() >= 5, "faults were injected: {report}");
}

/// Runs a broken build under `kinds` and expects the checker to report one of `caught`.
async fn broken_is_caught(switch: &str, kinds: &[FaultKind], caught: &[u8]) {
    let launcher = if kinds.contains(&FaultKind::Partition) {
        Launcher::Docker { image: image() }
    } else {
        Launcher::Process
    };
    let mut cfg = short(launcher, seed());
    cfg.broken = vec![switch.to_string()];
    cfg.kinds = kinds.to_vec();
    cfg.duration = Duration::from_secs(15);
    cfg.plan.rows = 1500;
    cfg.disk_bytes = None;
    cfg.keep_on_violation = false;
    let report = run(cfg).await.expect("the chaos harness runs");
    eprint!("broken build '{switch}':\n{report}");
    let violated = report.violated();
    assert!(
        caught.iter().any(|i| violated.contains(i)),
        "the checker missed the '{switch}' bug (expected a violation of {caught:?}, got {violated:?}):\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_before_commit_is_caught_when_leaders_die() {
    let _serial = SERIAL.lock().await;
    // Lost writes show in the price totals (4) and as reads behind acknowledgements (5); the
    // acknowledgements' own reports (1) give the bug away too, but are not what this proves.
    broken_is_caught("ack-before-commit", &[FaultKind::KillLeader], &[4, 5]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_before_commit_is_caught_when_leaders_are_cut_off() {
    let _serial = SERIAL.lock().await;
    if !docker_or_skip("acknowledging_before_commit_is_caught_when_leaders_are_cut_off") {
        return;
    }
    broken_is_caught("ack-before-commit", &[FaultKind::Partition], &[4, 5]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverging_replicas_are_caught() {
    let _serial = SERIAL.lock().await;
    broken_is_caught("diverge", &[FaultKind::Pause], &[3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_are_caught() {
    let _serial = SERIAL.lock().await;
    broken_is_caught("stale-read", &[FaultKind::KillFollower], &[5]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_submissions_are_caught() {
    let _serial = SERIAL.lock().await;
    // Half a submission's rows no longer match what the entry states, so the replicas' own
    // apply-path assertions stop them on some entries: the checker sees wrong acknowledged
    // counts (1) and stalled replicas (3) as well as lost records (2).
    broken_is_caught("partial-apply", &[FaultKind::Pause], &[2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drifting_freeze_points_are_caught() {
    let _serial = SERIAL.lock().await;
    broken_is_caught("freeze-drift", &[FaultKind::Restart], &[6]).await;
}

/// `docker compose` (v2) where it exists, else `docker-compose` (v1).
fn compose() -> Vec<String> {
    let v2 = std::process::Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if v2 {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

/// A compose project that is taken down (with its volumes) when dropped.
struct Project {
    file: PathBuf,
    name: String,
    env: Vec<(String, String)>,
}

impl Project {
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let c = compose();
        let out = std::process::Command::new(&c[0])
            .args(&c[1..])
            .arg("-f")
            .arg(&self.file)
            .args(["-p", &self.name])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .map_err(|e| format!("{}: {e}", c.join(" ")))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("{} {}: {text}", c.join(" "), args.join(" ")))
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-v", "--remove-orphans"]);
    }
}

// The README's compose deployment, driven end to end: the 3-node file as shipped, its TLS and
// health checks and init service; then submit, restart every node in turn with a write while each
// is down (the rolling restart procedure), query, kill a container, query again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_serves_and_survives_a_killed_container() {
    use sus_client::{Aggregation, Client, ClientConfig, ReadFrom, RetryPolicy, TlsOptions};
    let _serial = SERIAL.lock().await;
    if !docker_or_skip("compose_cluster_serves_and_survives_a_killed_container") {
        return;
    }
    let image = image();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("three-nodes.yml");
    std::fs::copy(root().join("deploy/compose/three-nodes.yml"), &file).expect("compose file");
    let ips = ["172.29.7.11", "172.29.7.12", "172.29.7.13"];
    // What deploy/compose/certs.sh makes: a certificate per node naming its id, its service
    // name and its address, and the operator's for the init service.
    let nodes: Vec<sus_client::certs::NodeCert> = (1..=3u64)
        .map(|id| sus_client::certs::NodeCert {
            id,
            names: vec![format!("n{id}"), ips[id as usize - 1].to_string()],
        })
        .collect();
    let certs = sus_client::certs::init(&dir.path().join("tls"), &nodes).expect("certificates");
    let password = "compose-test-password";
    let project = Project {
        file,
        name: format!("sustest{}", std::process::id()),
        env: vec![
            ("SUS_IMAGE".into(), image),
            ("SUS_ADMIN_PASSWORD".into(), password.into()),
        ],
    };
    project.run(&["up", "-d"]).expect("compose up");

    let endpoints: Vec<String> = ips.iter().map(|ip| format!("{ip}:7400")).collect();
    let client = Client::with_config(ClientConfig {
        endpoints: endpoints.clone(),
        token: None,
        tls: Some(TlsOptions::from_files(&certs.ca, None).expect("CA")),
        retry: RetryPolicy {
            retry_for: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
        },
    })
    .expect("client");
    // The init service runs once the nodes are healthy; login works once it has.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let token = loop {
        match client.login("admin", password, "compose test", 0).await {
            Ok(reply) => break reply.token,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing_debug(&format!("waiting for init: {e}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!(
                "the compose cluster never initialised: {e}\n{}",
                project.run(&["logs", "--tail", "30"]).unwrap_or_else(|e| e)
            ),
        }
    };
    client.set_token(Some(token));
    let ps = project.run(&["ps"]).expect("compose ps");
    assert!(
        ps.matches("healthy").count() >= 3,
        "three healthy nodes:\n{ps}"
    );

    // The HTTP port the file opens: each node turns ready, and its metrics show both peers up.
    for ip in ips {
        let addr = format!("{ip}:9400");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = sus_chaos_tests::http::get(&addr, "/ready").await;
            let metrics = sus_chaos_tests::http::get(&addr, "/metrics").await;
            let up = match &metrics {
                Ok((200, text)) => sus_chaos_tests::http::metric(text, "sus_peer_up", ""),
                _ => 0.0,
            };
            if matches!(ready, Ok((200, _))) && up == 2.0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{addr}: ready {ready:?}, peers up {up}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // Submit a generated data set and check the national totals against the generator's oracle.
    let data = dir.path().join("data");
    let summary = sus_client::generator::generate(
        &sus_client::generator::GenConfig {
            rows: 2000,
            seed: 5,
            refdata_dir: root().join("refdata"),
            out_dir: data.clone(),
            rows_per_file: 500,
            ..Default::default()
        },
        &mut |_| {},
    )
    .expect("generated data");
    let submit = async |o: &sus_client::generator::SubmissionOutcome| {
        let outcome = client
            .submit_file(&data.join(&o.file))
            .await
            .unwrap_or_else(|e| panic!("submitting {}: {e}", o.file));
        assert_eq!(outcome.accepted, o.outcome == "accepted", "{}", o.file);
    };
    // All but the last three files now; those go in during the rolling restart.
    let files = &summary.expected.submissions;
    let (first, rest) = files.split_at(files.len().saturating_sub(3));
    for o in first {
        submit(o).await;
    }
    // The rolling restart of deploy/README.md: one node at a time, stopped (SIGTERM), a write
    // while it is down, started, and caught up before the next.
    for (node, o) in ["n1", "n2", "n3"].iter().zip(rest) {
        project.run(&["stop", node]).expect("stopping a node");
        submit(o).await;
        project.run(&["start", node]).expect("starting it again");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let contents = client.replica_contents().await.expect("replica contents");
            if replicas_agree(&contents) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{node} did not catch up after its restart: {contents:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let totals = async |client: &Client| {
        let mut out = Vec::new();
        for (dataset, t) in &summary.expected.datasets {
            let r = client
                .aggregate(
                    Aggregation::new(dataset).count().sum("price"),
                    ReadFrom::Leader,
                )
                .await
                .expect("aggregate");
            let col = |i: usize| {
                r.batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .map(|a| a.value(0))
                    .unwrap_or(0)
            };
            out.push((dataset.clone(), col(0) as u64, col(1)));
            assert_eq!(
                (col(0) as u64, col(1)),
                (t.live_records, t.total_price_pence),
                "{dataset}: live records and price total against the generator's oracle"
            );
        }
        out
    };
    let before = totals(&client).await;

    project.run(&["kill", "n1"]).expect("killing n1");
    let after = totals(&client).await;
    assert_eq!(before, after, "the same answers with n1 killed");
}

fn tracing_debug(message: &str) {
    if std::env::var_os("SUS_TEST_VERBOSE").is_some() {
        eprintln!("{message}");
    }
}
