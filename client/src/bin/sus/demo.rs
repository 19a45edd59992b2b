//! `sus demo`: a local 3-node cluster with realistic data and the monthly reports, from nothing.
//!
//! Starts `sus-node` processes on loopback (TLS with development certificates, one per node
//! naming its id, each node with an HTTP port for metrics and its status page), bootstraps them
//! with the operator's certificate, generates submissions, submits them, takes a freeze point
//! and prints a Monthly Trust Statement and the Database Counts. The cluster keeps running
//! afterwards; `sus demo --stop --dir DIR` stops it.

use crate::read;
use clap::{Args, Parser};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};
use sus_client::generator::{self, GenConfig};
use sus_client::{Client, ClientConfig, Error, Result, TlsOptions};

const NODES: u64 = 3;
const FREEZE: &str = "demo M06";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the cluster's data, certificates, logs and the generated files (default: a
    /// new folder under the system's temp dir). Must not hold a running demo.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Original activity records to generate (corrections and re-sends come on top).
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Reference data folder (default: ./refdata, else the one in this source tree).
    #[arg(long)]
    refdata: Option<PathBuf>,
    /// The sus-node program (default: the one beside this program; under `cargo run` it is
    /// built first if missing).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Stop the demo cluster running in --dir, and exit.
    #[arg(long, requires = "dir")]
    stop: bool,
}

fn config_error(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

pub async fn run(a: DemoArgs) -> Result<ExitCode> {
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
            std::env::temp_dir().join(format!("sus-demo-{stamp}"))
        }
    };
    if a.stop {
        return stop(&dir);
    }
    if dir.join("pids").exists() {
        return Err(config_error(format!(
            "{} holds a demo cluster already: stop it with `sus demo --stop --dir {0}` or choose \
             another --dir",
            dir.display()
        )));
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let refdata = refdata(a.refdata.clone())?;
    let node_bin = node_bin(a.node_bin.clone())?;
    println!("demo: a 3-node cluster in {}", dir.display());

    // Certificates, nodes, bootstrap.
    // One certificate per node naming its id, and the operator's (which bootstraps).
    let nodes: Vec<sus_client::certs::NodeCert> = (1..=NODES)
        .map(|id| sus_client::certs::NodeCert {
            id,
            names: vec![format!("n{id}")],
        })
        .collect();
    let certs = sus_client::certs::init(&dir.join("tls"), &nodes)?;
    let mut nodes = Vec::new();
    let mut pids = String::new();
    for id in 1..=NODES {
        let (grpc, http, pid) = start_node(&node_bin, &refdata, &dir, &certs, id).await?;
        println!("demo: node {id} on {grpc} (status page http://{http}/)");
        pids += &format!("{pid}\n");
        std::fs::write(dir.join("pids"), &pids).map_err(|e| Error::io(dir.join("pids"), e))?;
        nodes.push((id, grpc, http));
    }
    let endpoints: Vec<String> = nodes.iter().map(|n| n.1.clone()).collect();
    let admin = Client::with_config(ClientConfig {
        endpoints: endpoints.clone(),
        token: None,
        tls: Some(TlsOptions::from_files(
            &certs.ca,
            Some((certs.client.0.as_path(), certs.client.1.as_path())),
        )?),
        retry: Default::default(),
    })?;
    let password = format!("demo-{:016x}", rand::random::<u64>());
    let members: Vec<(u64, String)> = nodes.iter().map(|n| (n.0, n.1.clone())).collect();
    admin.init(&members, 8, 3, &password).await?;
    write_private(&dir.join("admin-password"), &password)?;
    let token = admin.login("admin", &password, "sus demo", 0).await?.token;
    write_private(&dir.join("token"), &token)?;
    println!("demo: cluster initialised: 8 shards, 3 replicas each; user admin");

    // Data.
    let gen_dir = dir.join("submissions");
    let bar = progress(
        a.rows,
        "{spinner} generating [{elapsed_precise}] {bar:40} {pos}/{len} records",
    );
    let summary = generator::generate(
        &GenConfig {
            rows: a.rows,
            seed: a.seed,
            refdata_dir: refdata.clone(),
            out_dir: gen_dir.clone(),
            reject_files: true,
            ..GenConfig::default()
        },
        &mut |p| bar.set_position(p.rows_done),
    )?;
    bar.finish();
    let client = Client::with_config(ClientConfig {
        endpoints: endpoints.clone(),
        token: Some(token.clone()),
        tls: Some(TlsOptions::from_files(&certs.ca, None)?),
        retry: Default::default(),
    })?;
    let files = &summary.expected.submissions;
    let bar = progress(
        files.len() as u64,
        "{spinner} submitting [{elapsed_precise}] {bar:40} {pos}/{len} files {msg}",
    );
    let started = Instant::now();
    let (mut accepted, mut rejected, mut records) = (0u64, 0u64, 0u64);
    for s in files {
        let outcome = client
            .submit_file(&gen_dir.join(&s.file))
            .await
            .inspect_err(|_| bar.abandon())?;
        if outcome.accepted {
            accepted += 1;
            records += outcome.report.records;
        } else {
            rejected += 1;
        }
        bar.inc(1);
        bar.set_message(format!("{records} records"));
    }
    bar.finish();
    println!(
        "demo: {accepted} submissions accepted ({records} records, {:.0} records/s, each committed \
         on 2 of 3 nodes' disks), {rejected} rejected as the generator intended",
        records as f64 / started.elapsed().as_secs_f64().max(1e-9)
    );
    let point = client.create_freeze(FREEZE).await?;
    println!(
        "demo: freeze point '{FREEZE}' taken ({} shard versions)",
        point.versions.len()
    );

    // Reports, through the same code as `sus report`.
    let expected = &summary.expected;
    let provider = expected
        .providers
        .iter()
        .max_by_key(|(_, ds)| ds.values().map(|t| t.live_records).sum::<u64>())
        .map(|(p, _)| p.clone())
        .ok_or_else(|| config_error("the generator produced no providers"))?;
    let common = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "report".into(),
            "--endpoint".into(),
            endpoints.join(","),
            "--ca".into(),
            certs.ca.display().to_string(),
            "--token".into(),
            token.clone(),
            "--freeze".into(),
            FREEZE.into(),
        ];
        v.splice(1..1, extra.iter().map(|s| s.to_string()));
        v
    };
    println!(
        "\nMonthly Trust Statement: provider {provider}, activity month 2024-09, as at '{FREEZE}'"
    );
    report(common(&[
        "trust-statement",
        "--provider",
        &provider,
        "--month",
        "2024-09",
    ]))
    .await?;
    println!(
        "\nDatabase Counts of provider {provider} as at '{FREEZE}' (`sus report database-counts` for all)"
    );
    report(common(&["database-counts", "--provider", &provider])).await?;

    // Every dataset's live count and pence total against the generator's independent oracle.
    let mut agree = true;
    for (dataset, want) in &expected.datasets {
        let spec = sus_proto::v1::QuerySpec {
            dataset: dataset.clone(),
            aggregates: vec![
                sus_client::query::build::count(),
                sus_client::query::build::sum("price"),
            ],
            view: sus_client::query::build::freeze(FREEZE),
            ..Default::default()
        };
        let got = client
            .aggregate(&spec, sus_client::ReadFrom::Leader)
            .await?;
        let value = |c: usize| {
            use arrow::array::AsArray;
            got.batch
                .column(c)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0)
        };
        let (count, pence) = (value(0), value(1));
        let ok = count == want.live_records as i64 && pence == want.total_price_pence;
        agree &= ok;
        println!(
            "demo: {dataset}: {count} live records, {} - {}",
            crate::pounds(pence),
            if ok {
                "equal to the generator's own totals"
            } else {
                "DIFFERENT from the generator's totals"
            }
        );
    }
    if !agree {
        return Err(config_error(
            "the cluster's totals differ from the generator's",
        ));
    }

    let http: Vec<String> = nodes.iter().map(|n| format!("http://{}/", n.2)).collect();
    println!(
        "\nThe cluster is still running. Use it with:\n\
         \n  export SUS_ENDPOINT={} SUS_CA={} SUS_TOKEN_FILE={}\
         \n  sus cluster status\
         \n  sus query --dataset apc --group-by provider_code --agg count --agg sum:price\
         \n  sus report trust-statement --provider {provider} --month 2024-09 --freeze '{FREEZE}'\
         \n\nStatus pages: {}\nMetrics: {}metrics (Prometheus)\n\
         The admin password is in {}; logs are in {}/n*.log.\n\
         \nStop it with:\n\n  sus demo --stop --dir {}\n",
        endpoints.join(","),
        certs.ca.display(),
        dir.join("token").display(),
        http.join("  "),
        http[0],
        dir.join("admin-password").display(),
        dir.display(),
        dir.display(),
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `sus report ...` in this process.
async fn report(args: Vec<String>) -> Result<()> {
    #[derive(Parser)]
    struct Report {
        #[command(subcommand)]
        command: read::ReportCommand,
    }
    let parsed = Report::try_parse_from(&args).map_err(|e| config_error(e.to_string()))?;
    read::run_report(parsed.command).await.map(|_| ())
}

fn progress(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))
}

fn refdata(given: Option<PathBuf>) -> Result<PathBuf> {
    let candidates = match given {
        Some(p) => vec![p],
        None => vec![
            PathBuf::from("refdata"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata"),
        ],
    };
    candidates
        .iter()
        .find(|p| p.join("README.md").exists() || p.is_dir())
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .ok_or_else(|| {
            config_error(format!(
                "no reference data at {}: give --refdata DIR",
                candidates[0].display()
            ))
        })
}

/// The `sus-node` program: given; under `cargo run`, built (or found up to date) by the cargo
/// that runs us, so that it matches this program; else the one beside this program.
fn node_bin(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let exe = std::env::current_exe().map_err(|e| config_error(format!("own path: {e}")))?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let beside = dir.join("sus-node");
    let Some(cargo) = std::env::var_os("CARGO") else {
        if beside.exists() {
            return Ok(beside);
        }
        return Err(config_error(format!(
            "no sus-node beside {}: build it (`cargo build --release -p sus-node`) or give \
             --node-bin",
            exe.display()
        )));
    };
    let release = dir.file_name().is_some_and(|n| n == "release");
    println!(
        "demo: building sus-node (cargo build{} -p sus-node)",
        if release { " --release" } else { "" }
    );
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "-p", "sus-node", "--bin", "sus-node"]);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .map_err(|e| config_error(format!("running cargo: {e}")))?;
    if !status.success() || !beside.exists() {
        return Err(config_error("building sus-node failed (see above)"));
    }
    Ok(beside)
}

/// Starts node `id` in the background; returns its gRPC and HTTP addresses and its pid.
async fn start_node(
    bin: &Path,
    refdata: &Path,
    dir: &Path,
    certs: &sus_client::certs::CertFiles,
    id: u64,
) -> Result<(String, String, u32)> {
    use std::os::unix::process::CommandExt;
    let out_path = dir.join(format!("n{id}.out"));
    let log_path = dir.join(format!("n{id}.log"));
    let out = std::fs::File::create(&out_path).map_err(|e| Error::io(&out_path, e))?;
    let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let (_, cert, key) = certs
        .nodes
        .iter()
        .find(|n| n.0 == id)
        .ok_or_else(|| config_error(format!("no certificate for node {id}")))?;
    let child = std::process::Command::new(bin)
        .arg("--data-dir")
        .arg(dir.join(format!("n{id}")))
        .arg("--refdata")
        .arg(refdata)
        .args(["serve", "--id", &id.to_string()])
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .arg("--tls-ca")
        .arg(&certs.ca)
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log)
        // Its own process group: the nodes outlive this command and a Ctrl-C in its terminal.
        .process_group(0)
        .spawn()
        .map_err(|e| config_error(format!("starting {}: {e}", bin.display())))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        let addr = |marker: &str| {
            text.lines()
                .find(|l| l.contains(marker))
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_string)
        };
        if let (Some(grpc), Some(http)) = (addr("listening on"), addr("http on")) {
            return Ok((grpc, http, child.id()));
        }
        if Instant::now() > deadline {
            return Err(config_error(format!(
                "node {id} did not start within 60 s; see {}",
                log_path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stop(dir: &Path) -> Result<ExitCode> {
    let pids_path = dir.join("pids");
    let pids = std::fs::read_to_string(&pids_path).map_err(|e| {
        config_error(format!(
            "no demo cluster in {} ({}: {e})",
            dir.display(),
            pids_path.display()
        ))
    })?;
    for pid in pids.lines().filter(|l| !l.trim().is_empty()) {
        // SIGTERM: each node shuts down cleanly (one already gone is no error).
        let _ = std::process::Command::new("kill")
            .arg(pid.trim())
            .stderr(std::process::Stdio::null())
            .status();
    }
    std::fs::remove_file(&pids_path).map_err(|e| Error::io(&pids_path, e))?;
    println!(
        "demo: stopped the nodes in {} (their data stays; delete the folder to remove it)",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
