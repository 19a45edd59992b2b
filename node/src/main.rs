//! `sus-node`: run a cluster node (`serve`), or a single node's operations on a local data
//! directory (`ingest`, `stats`).

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use sus_node::ingest::files::read_submission;
use sus_node::limits::Limits;
use sus_node::model::Dataset;
use sus_node::node::{Node, NodeConfig};
use sus_node::report::Outcome;
use tracing_subscriber::fmt::format::FmtSpan;

mod config;

#[derive(Parser)]
#[command(
    name = "sus-node",
    version,
    about = "A sus-cluster node",
    after_help = "\
Settings come from, in order of precedence: flags, SUS_* environment variables, the --config
file (TOML; keys are the long flag names with '_' for '-', e.g. `http_listen = \"0.0.0.0:9401\"`;
see deploy/node.example.toml), then the defaults shown by --help."
)]
struct Cli {
    /// TOML file of settings (any long flag of `serve` and the global ones, as `name = value`).
    #[arg(long, env = "SUS_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory (catalog and segments); created if absent.
    #[arg(long, env = "SUS_DATA_DIR", default_value = "sus-data", global = true)]
    data_dir: PathBuf,
    /// Reference data folder (see refdata/README.md).
    #[arg(long, env = "SUS_REFDATA", default_value = "refdata", global = true)]
    refdata: PathBuf,
    /// Group with a licensed HRG grouper's output instead of the reference tables: a CSV
    /// `dataset,cds_unique_id,hrg` (records it does not list are grouped by the tables). Every
    /// node of a cluster must use the same (it is part of the reference data version).
    #[arg(long, env = "SUS_GROUPER_OUTPUT", global = true)]
    grouper_output: Option<PathBuf>,
    /// Log lines as human-readable text or as JSON objects (one per line, for log shippers).
    /// The level comes from RUST_LOG (default `warn`; e.g. `RUST_LOG=info,sus_node=debug`).
    #[arg(long, env = "SUS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate, price and store submission files, in the order given, printing each report.
    ///
    /// Each FILE (CSV or Parquet) needs an envelope FILE.meta.json beside it.
    /// Exit status: 0 all accepted, 3 some rejected, 1 the node failed.
    ///
    /// Example: sus-node ingest --data-dir /tmp/n1 /tmp/apc/*.csv
    Ingest {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print only rejections and the final summary.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print record counts, segments and bytes on disk per dataset.
    Stats,
    /// Run a cluster node: the meta group, the shard replicas the shard map gives it, and the
    /// gRPC services (Ingest, Admin, internal Raft) on one port.
    ///
    /// A new node waits until `sus cluster init` (first nodes) or `sus cluster add-node` admits
    /// it. Prints `sus-node <id> listening on <addr>` once serving. Stops on SIGINT/SIGTERM.
    ///
    /// Example: sus-node --data-dir /var/lib/sus/n1 serve --id 1 --listen 0.0.0.0:7401 \
    ///            --advertise n1.internal:7401
    Serve(Box<ServeArgs>),
    /// Exit 0 if a node accepts connections at ADDR within the timeout, 1 if not: a health check
    /// for containers and supervisors (the container image has no shell or curl).
    ///
    /// Example: sus-node probe --addr 127.0.0.1:7400
    Probe {
        #[arg(long, default_value = "127.0.0.1:7400")]
        addr: String,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// This node's id: unique in the cluster and never reused (a wiped node gets a new id).
    /// Required (here, in the environment or in the config file) unless --id-from-hostname.
    #[arg(long, env = "SUS_NODE_ID")]
    id: Option<u64>,
    /// Take the id from the host name's trailing number plus one (`sus-2` is node 3): for
    /// Kubernetes StatefulSets, whose pods are named `<set>-<ordinal>`.
    #[arg(long, env = "SUS_ID_FROM_HOSTNAME", conflicts_with = "id")]
    id_from_hostname: bool,
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, env = "SUS_LISTEN", default_value = "127.0.0.1:7401")]
    listen: String,
    /// Address peers and clients use to reach this node (default: the bound listen address).
    #[arg(long, env = "SUS_ADVERTISE")]
    advertise: Option<String>,
    /// Plain-HTTP address of the operator endpoints: `/metrics` (Prometheus), `/health`,
    /// `/ready` and the status page `/`. No patient data is served there. Off when not given;
    /// port 0 picks a free port (printed on start).
    #[arg(long, env = "SUS_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Raft heartbeat interval (ms).
    #[arg(long, env = "SUS_HEARTBEAT_MS", default_value_t = 100)]
    heartbeat_ms: u64,
    /// Election timeout lower bound (ms); the upper bound is twice this.
    #[arg(long, env = "SUS_ELECTION_MS", default_value_t = 500)]
    election_ms: u64,
    /// Build a group snapshot after this many applied entries since the last one.
    #[arg(long, env = "SUS_SNAPSHOT_AFTER", default_value_t = 1000)]
    snapshot_after: u64,
    /// Log entries kept behind a snapshot (peers lagging further catch up by snapshot).
    #[arg(long, env = "SUS_KEEP_AFTER_SNAPSHOT", default_value_t = 200)]
    keep_after_snapshot: u64,
    /// Memory for decoded segment columns, shared by the node's shards (MiB; 0 reads Parquet
    /// every time). Freshly written segments and columns read by queries are kept.
    #[arg(long, env = "SUS_CACHE_MIB", default_value_t = 512)]
    cache_mib: usize,
    /// How long a submission waits for its commit before the client hears "outcome unknown".
    #[arg(long, env = "SUS_COMMIT_TIMEOUT_MS", default_value_t = 30_000)]
    commit_timeout_ms: u64,
    /// The cluster CA's certificate (PEM): peers and clients are verified against it.
    #[arg(long, env = "SUS_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the CA, naming this node's id as the URI
    /// `sus://node/<id>` (the node refuses to start otherwise; `sus certs init` and `sus certs
    /// node` make development ones). `{id}` in the path is replaced by the node id
    /// (`/tls/node-{id}.pem`).
    #[arg(long, env = "SUS_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM); `{id}` in the path is replaced by the node id.
    #[arg(long, env = "SUS_TLS_KEY", requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// Serve and call peers without TLS (local development only: tokens and patient data
    /// cross the network in clear, and no caller proves which node it is, so the internal Raft
    /// and Join services are open to anyone who reaches the port).
    #[arg(long, env = "SUS_PLAINTEXT", conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    plaintext: bool,

    // Limits: what clients may send and make the node hold (docs/security.md, "Limits").
    /// Longest item of a submitted record (bytes); a longer one is an R04 finding on its record.
    #[arg(long, env = "SUS_MAX_FIELD_BYTES", default_value_t = DEFAULTS.submission.max_field_bytes)]
    max_field_bytes: usize,
    /// Most records in one submission file; a file with more is refused (split it).
    #[arg(long, env = "SUS_MAX_SUBMISSION_ROWS", default_value_t = DEFAULTS.submission.max_rows)]
    max_submission_rows: u64,
    /// Largest submission file (MiB): the limit of an Ingest request.
    #[arg(long, env = "SUS_MAX_SUBMISSION_MIB", default_value_t = DEFAULTS.submission.max_bytes >> 20)]
    max_submission_mib: usize,
    /// Most memory the records of one submission may take once decoded (MiB), counted as they
    /// decode; a submission over it is refused (split it).
    #[arg(long, env = "SUS_MAX_SUBMISSION_DECODED_MIB", default_value_t = DEFAULTS.submission.max_decoded_bytes >> 20)]
    max_submission_decoded_mib: u64,
    /// Decoded records of all the submissions this node prepares at once (MiB); a submission
    /// waits for room (up to the commit timeout, then "busy, retry").
    #[arg(long, env = "SUS_DECODE_BUDGET_MIB", default_value_t = DEFAULTS.decode_budget_bytes >> 20)]
    decode_budget_mib: u64,
    /// Submit calls this node receives and handles at once; more wait their turn.
    #[arg(long, env = "SUS_MAX_CONCURRENT_SUBMISSIONS", default_value_t = DEFAULTS.max_concurrent_submissions)]
    max_concurrent_submissions: usize,
    /// Largest Query, Admin or Arrow Flight request (MiB).
    #[arg(long, env = "SUS_MAX_REQUEST_MIB", default_value_t = DEFAULTS.max_request_bytes >> 20)]
    max_request_mib: usize,
    /// Most filters in one query, scan or extract.
    #[arg(long, env = "SUS_MAX_FILTERS", default_value_t = DEFAULTS.query.max_filters)]
    max_filters: usize,
    /// Most values in one filter (an IN list).
    #[arg(long, env = "SUS_MAX_FILTER_VALUES", default_value_t = DEFAULTS.query.max_filter_values)]
    max_filter_values: usize,
    /// Longest text in a query (bytes): a filter value or bound, a field, column or aggregate
    /// name, a dataset or freeze point name.
    #[arg(long, env = "SUS_MAX_FILTER_VALUE_BYTES", default_value_t = DEFAULTS.query.max_filter_value_bytes)]
    max_filter_value_bytes: usize,
    /// Most aggregates in one query.
    #[arg(long, env = "SUS_MAX_AGGREGATES", default_value_t = DEFAULTS.query.max_aggregates)]
    max_aggregates: usize,
    /// Most columns in one scan or extract.
    #[arg(long, env = "SUS_MAX_COLUMNS", default_value_t = DEFAULTS.query.max_columns)]
    max_columns: usize,
    /// Failed logins of one user name before each further attempt waits (1 s, then doubling).
    #[arg(long, env = "SUS_LOGIN_FREE_FAILURES", default_value_t = DEFAULTS.logins.free_failures)]
    login_free_failures: u32,
    /// Failed logins from one address, whatever the user names, before each further attempt
    /// waits.
    #[arg(long, env = "SUS_LOGIN_FREE_FAILURES_PER_SOURCE", default_value_t = DEFAULTS.logins.free_failures_per_source)]
    login_free_failures_per_source: u32,
    /// Longest wait between login attempts (s).
    #[arg(long, env = "SUS_LOGIN_MAX_BACKOFF_SECS", default_value_t = DEFAULTS.logins.max_backoff.as_secs())]
    login_max_backoff_secs: u64,
    /// Failed logins are forgotten after this long without another (s).
    #[arg(long, env = "SUS_LOGIN_FORGET_SECS", default_value_t = DEFAULTS.logins.forget_after.as_secs())]
    login_forget_secs: u64,
}

/// The limits' defaults (`sus_node::limits`), shown by `--help`.
static DEFAULTS: std::sync::LazyLock<Limits> = std::sync::LazyLock::new(Limits::default);

impl ServeArgs {
    /// The node's limits from the settings.
    fn limits(&self) -> Limits {
        use sus_node::limits::{LoginLimits, QueryLimits, SubmissionLimits};
        let mib = |n: u64| n.saturating_mul(1 << 20);
        Limits {
            submission: SubmissionLimits {
                max_field_bytes: self.max_field_bytes,
                max_rows: self.max_submission_rows,
                max_bytes: self.max_submission_mib.saturating_mul(1 << 20),
                max_decoded_bytes: mib(self.max_submission_decoded_mib),
            },
            query: QueryLimits {
                max_filters: self.max_filters,
                max_filter_values: self.max_filter_values,
                max_filter_value_bytes: self.max_filter_value_bytes,
                max_aggregates: self.max_aggregates,
                max_columns: self.max_columns,
            },
            logins: LoginLimits {
                free_failures: self.login_free_failures,
                free_failures_per_source: self.login_free_failures_per_source,
                max_backoff: std::time::Duration::from_secs(self.login_max_backoff_secs),
                forget_after: std::time::Duration::from_secs(self.login_forget_secs),
            },
            max_request_bytes: self.max_request_mib.saturating_mul(1 << 20),
            decode_budget_bytes: mib(self.decode_budget_mib),
            max_concurrent_submissions: self.max_concurrent_submissions,
        }
    }
}

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
    let node = Node::open(&NodeConfig {
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
    use sus_node::cluster::{Cluster, ClusterConfig, RaftTuning, service::Services};
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
            limits: limits.clone(),
        })
        .await
        .with_context(|| format!("starting node {id} in {}", data_dir.display()))?;
        let services = Services::new(cluster.clone());
        // Small Raft and client messages must not wait for Nagle's algorithm (40 ms stalls with
        // delayed ACKs); tonic's own tcp_nodelay applies only to listeners it binds itself.
        use tokio_stream::StreamExt;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|stream| {
            stream.inspect(|s| {
                if let Err(e) = s.set_nodelay(true) {
                    tracing::warn!("TCP_NODELAY: {e}");
                }
            })
        });
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
        let mut server = tonic::transport::Server::builder();
        if let Some(files) = &tls {
            server = server
                .tls_config(files.server()?)
                .context("TLS configuration")?;
        }
        // Every server limit is set here, not left to a library default (docs/security.md,
        // "Limits"): what one connection may ask of the node is bounded, and message sizes are
        // set per service (Services, sus_raft).
        use std::time::Duration;
        server
            .trace_fn(move |r| sus_node::cluster::trace::rpc_span(id, r))
            .tcp_nodelay(true)
            // Calls handled at once per connection (Raft traffic of every group and client
            // calls share a peer's); further streams wait, unread.
            .concurrency_limit_per_connection(128)
            .max_concurrent_streams(256)
            // Bytes a peer may send before the node reads them.
            .initial_stream_window_size(2 << 20)
            .initial_connection_window_size(8 << 20)
            // Request headers (tokens, trace context) are small.
            .http2_max_header_list_size(64 << 10)
            // Streams reset straight after opening (the HTTP/2 "rapid reset" attack), and
            // streams the node had to reset, close the connection past these counts.
            .http2_max_pending_accept_reset_streams(Some(32))
            .http2_max_local_error_reset_streams(Some(256))
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            // Ingest slots, and request errors in the codes gRPC gives them.
            .layer(sus_node::cluster::requests::RequestLimitsLayer::new(
                &limits,
            ))
            // Raft calls only from current members, each sending its own messages (with TLS).
            .add_service(sus_raft::network::RaftService::server(
                cluster.registry.clone(),
                std::sync::Arc::new(cluster.gate().clone()),
            ))
            .add_service(services.ingest())
            .add_service(services.admin())
            .add_service(services.query())
            .add_service(services.flight())
            .serve_with_incoming_shutdown(incoming, shutdown_signal())
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
