//! `sus-node`: run a cluster node (`serve`), or a single node's operations on a local data
//! directory (`ingest`, `stats`).

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use sus_node::ingest::files::read_submission;
use sus_node::ingest::local::{LocalConfig, LocalStore};
use sus_node::model::Dataset;
use sus_node::report::Outcome;
use tracing_subscriber::fmt::format::FmtSpan;

mod cli;
mod config;

use cli::{Cli, Command, LogFormat, ServeArgs};

// Ingest and scans allocate many small buffers from several threads (CSV fields, Arrow arrays,
// catalog entries); glibc's allocator spent a third of ingest time in malloc and free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Some(path) = cli.config.clone()
        && let Err(e) = config::apply(&path, &mut cli, &matches)
    {
        eprintln!("sus-node: error: {e:#}");
        return ExitCode::from(2);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    match cli.log_format {
        // A call's span closing logs its busy and idle time: an access log at level info.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_span_events(FmtSpan::CLOSE)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_span_events(FmtSpan::CLOSE)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sus-node: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cli = match cli.command {
        Command::Serve(args) => {
            return serve(cli.data_dir, cli.refdata, cli.grouper_output, *args);
        }
        Command::Probe { addr, timeout_ms } => return probe(&addr, timeout_ms),
        _ => cli,
    };
    let node = LocalStore::open(&LocalConfig {
        data_dir: cli.data_dir.clone(),
        refdata_dir: cli.refdata.clone(),
        grouper_output: cli.grouper_output.clone(),
    })
    .with_context(|| format!("opening the node at {}", cli.data_dir.display()))?;
    match cli.command {
        Command::Ingest { files, quiet } => {
            let started = Instant::now();
            let (mut accepted, mut rejected, mut records) = (0u64, 0u64, 0u64);
            for file in &files {
                let (meta, bytes) = read_submission(file)?;
                let name = file.display().to_string();
                let report = node
                    .submit(&meta, &name, &bytes)
                    .with_context(|| format!("submitting {name}"))?;
                match report.outcome {
                    Outcome::Accepted => {
                        accepted += 1;
                        records += report.records;
                        if !quiet {
                            print!("{report}");
                        }
                    }
                    Outcome::Rejected => {
                        rejected += 1;
                        print!("{report}");
                    }
                }
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{} submissions: {accepted} accepted ({records} records), {rejected} rejected in {secs:.1}s ({:.0} records/s)",
                files.len(),
                records as f64 / secs.max(1e-9)
            );
            Ok(if rejected > 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Stats => {
            println!("version {}", node.store().version()?);
            for ds in Dataset::ALL {
                let s = node.store().stats(ds)?;
                println!(
                    "{ds}: {} live records in {} segments, {} bytes ({:.1} bytes/record)",
                    s.live_records,
                    s.segments,
                    s.segment_bytes,
                    s.segment_bytes as f64 / (s.live_records.max(1)) as f64
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(_) | Command::Probe { .. } => unreachable!("handled above"),
    }
}

fn probe(addr: &str, timeout_ms: u64) -> anyhow::Result<ExitCode> {
    use std::net::ToSocketAddrs;
    let timeout = std::time::Duration::from_millis(timeout_ms);
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .collect();
    for a in &addrs {
        if std::net::TcpStream::connect_timeout(a, timeout).is_ok() {
            println!("{addr}: accepting connections");
            return Ok(ExitCode::SUCCESS);
        }
    }
    eprintln!("sus-node: {addr}: not accepting connections");
    Ok(ExitCode::from(1))
}

/// The id of a StatefulSet pod: its host name's trailing ordinal, plus one (ids start at 1).
fn id_from_hostname() -> anyhow::Result<u64> {
    let name = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let ordinal = name
        .rsplit('-')
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .with_context(|| {
            format!("--id-from-hostname: host name '{name}' does not end in -<number>")
        })?;
    Ok(ordinal + 1)
}

/// `path` with every `{id}` replaced by the node id: one setting for every node of a compose
/// file or a StatefulSet (`/tls/node-{id}.pem`).
fn with_id(path: &std::path::Path, id: u64) -> PathBuf {
    match path.to_str() {
        Some(p) if p.contains("{id}") => PathBuf::from(p.replace("{id}", &id.to_string())),
        _ => path.to_path_buf(),
    }
}

fn serve(
    data_dir: PathBuf,
    refdata: PathBuf,
    grouper_output: Option<PathBuf>,
    args: ServeArgs,
) -> anyhow::Result<ExitCode> {
    use sus_node::cluster::{Cluster, ClusterConfig, RaftTuning, WriteBufferConfig};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let id = match (args.id, args.id_from_hostname) {
        (Some(_), true) => anyhow::bail!("give the node id or --id-from-hostname, not both"),
        (Some(id), false) => id,
        (None, true) => id_from_hostname()?,
        (None, false) => anyhow::bail!(
            "the node needs an id: --id N, SUS_NODE_ID=N or `id = N` in the config file \
             (or --id-from-hostname)"
        ),
    };
    sus_node::broken::set_node(id);
    let tls = match (&args.tls_ca, &args.tls_cert, &args.tls_key, args.plaintext) {
        (Some(ca), Some(cert), Some(key), false) => Some(sus_node::cluster::tls::TlsFiles {
            ca: ca.clone(),
            cert: with_id(cert, id),
            key: with_id(key, id),
        }),
        (None, None, None, true) => None,
        _ => anyhow::bail!(
            "TLS is required: pass --tls-ca, --tls-cert and --tls-key (`sus certs init` makes \
             development ones), or --plaintext for local development"
        ),
    };
    let limits = args.limits();
    limits.validate().context("limits")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let bound = listener.local_addr()?;
        let advertise = args.advertise.clone().unwrap_or_else(|| bound.to_string());
        let cluster = Cluster::start(ClusterConfig {
            id,
            advertise: advertise.clone(),
            data_dir: data_dir.clone(),
            refdata_dir: refdata,
            grouper_output,
            raft: RaftTuning {
                heartbeat_ms: args.heartbeat_ms,
                election_min_ms: args.election_ms,
                election_max_ms: args.election_ms * 2,
                snapshot_after: args.snapshot_after,
                keep_after_snapshot: args.keep_after_snapshot,
            },
            commit_timeout: std::time::Duration::from_millis(args.commit_timeout_ms),
            tls: tls.clone(),
            cache_bytes: args.cache_mib << 20,
            write_buffer: (args.write_buffer_mib > 0).then(|| WriteBufferConfig {
                node_bytes: args.write_buffer_mib.saturating_mul(1 << 20),
                settings: sus_node::store::BufferSettings {
                    store_bytes: args.flush_mib.max(1).saturating_mul(1 << 20),
                    max_age: std::time::Duration::from_secs(args.flush_secs.max(1)),
                },
            }),
            limits: limits.clone(),
        })
        .await
        .with_context(|| format!("starting node {id} in {}", data_dir.display()))?;
        println!("sus-node {id} listening on {bound}");
        let http = match &args.http_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the HTTP port {addr}"))?;
                println!("sus-node {id} http on {}", listener.local_addr()?);
                let cluster = cluster.clone();
                Some(tokio::spawn(async move {
                    if let Err(e) = sus_node::cluster::http::serve(listener, cluster).await {
                        tracing::error!("HTTP port stopped: {e}");
                    }
                }))
            }
            None => None,
        };
        use std::io::Write;
        std::io::stdout().flush()?;
        sus_node::server::run(listener, cluster.clone(), tls.as_ref(), shutdown_signal())
            .await
            .context("serving")?;
        if let Some(http) = http {
            http.abort();
        }
        cluster.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}
