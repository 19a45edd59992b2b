//! `sus`: the sus-cluster command line.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use sus_client::trace::TraceContext;
use tracing::Instrument;

mod access;
mod cluster;
mod demo;
mod read;
mod sql;
mod submit;

#[derive(Debug, Parser)]
#[command(name = "sus", version, about = "sus-cluster command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print the command's trace id on stderr: every node's log lines for its calls carry it
    /// (`trace_id=...`). SUS_TRACEPARENT (W3C `traceparent`) makes the command part of a trace
    /// of your own.
    #[arg(long, global = true)]
    trace: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local 3-node cluster, fill it with generated data, and print the monthly reports.
    #[command(after_help = "\
Examples:
  cargo run --release --bin sus -- demo          # from a fresh clone
  sus demo --rows 1000000 --dir /tmp/sus-demo
  sus demo --stop --dir /tmp/sus-demo

The cluster (TLS, 8 shards of 3 replicas, an HTTP status page per node) keeps running after the
reports; the last lines say how to connect to it and how to stop it.")]
    Demo(demo::DemoArgs),
    /// Generate deterministic synthetic submissions and the oracle's expected totals.
    #[command(after_help = "\
Example:
  sus gen --dataset all --rows 1000000 --seed 42 --out /tmp/sus-gen --reject-files

Writes NNNN-<dataset>-<sender>-<nc|bulk>.csv files with .meta.json envelopes (submit them in NNNN
order) and expected.json: the live totals, per provider totals and per-submission outcomes the
cluster must report once every file is applied. SAMPLE PRICES - NOT THE NHS PAYMENT SCHEME.")]
    Gen(submit::GenArgs),
    /// Submit files to a cluster, in the order given, printing each submission's outcome.
    #[command(after_help = "\
Example:
  sus submit --endpoint 127.0.0.1:7401,127.0.0.1:7402 /tmp/sus-gen/*.csv

Each FILE needs its FILE.meta.json envelope. Any node will do: it forwards to the shard leader.
A submission whose outcome is unknown (node lost, no leader) is resent with the same submission id
until --retry-for passes; the cluster answers a resend with the original report.
Exit status: 0 all accepted, 3 some rejected, 1 a submission's outcome is unknown or a call failed.")]
    Submit(submit::SubmitArgs),
    /// Administer a cluster: bootstrap, membership, leaders, status.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Aggregate over the whole cluster (pushed down to every shard, merged exactly).
    #[command(after_help = "\
Examples:
  sus query --dataset apc --group-by provider_code,activity_month --agg count --agg sum:price
  sus query --dataset op --filter pod=OPFA|OPFU --filter activity_date=2024-04-01..2024-06-30 \\
      --group-by commissioner_code --agg patients --order patients:desc --limit 10
  sus query --dataset ec --agg sum:price --freeze '2024-25 M06 recon' --format csv")]
    Query(read::QueryArgs),
    /// A read-only SQL statement over the tables apc, op and ec (money in pence); `<table>_at('freeze
    /// point')` reads a frozen view. See docs/sql.md.
    #[command(after_help = "\
Examples:
  sus sql \"SELECT provider_code, count(*) AS spells, sum(price) AS pence FROM apc GROUP BY 1 ORDER BY 3 DESC\"
  sus sql \"SELECT count(*) FROM op_at('2024-25 M06 recon') WHERE pod = 'OPFA'\" --format csv
  sus sql -f monthly.sql --format parquet --out monthly.parquet")]
    Sql(sql::SqlArgs),
    /// Monthly reports: trust statement, database counts.
    #[command(subcommand)]
    Report(read::ReportCommand),
    /// Freeze points: named, immutable cluster-wide views.
    #[command(subcommand)]
    Freeze(read::FreezeCommand),
    /// Merge small segments on every shard, keeping every freeze point's rows.
    #[command(after_help = "Example:\n  sus compact --target-rows 1000000")]
    Compact {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// Segments with fewer rows are merged (0: the node's default).
        #[arg(long, default_value_t = 0)]
        target_rows: u32,
    },
    /// Export records (CSV, Parquet or a table), scoped by filters, as at a view.
    #[command(after_help = "\
Examples:
  sus export --dataset apc --filter provider_code=RM9 --format parquet --out rm9-apc.parquet
  sus export --dataset op --columns cds_unique_id,activity_date,price --freeze '2024-25 M06' --format csv")]
    Export(read::ExportArgs),
    /// Log in: exchange a password (prompted, or SUS_PASSWORD) for a token saved in
    /// --token-file.
    #[command(after_help = "\
Example:
  sus login --ca certs/ca.pem --user alice --purpose 'M06 reconciliation'")]
    Login {
        #[command(flatten)]
        endpoint: EndpointArgs,
        #[arg(long)]
        user: String,
        /// Why the data is needed (recorded with every audited read).
        #[arg(long)]
        purpose: String,
        /// Token lifetime in seconds (0: 8 hours).
        #[arg(long, default_value_t = 0)]
        ttl: u64,
    },
    /// Users and roles (admin role).
    #[command(subcommand)]
    User(access::UserCommand),
    /// Read and verify the audit log (roles auditor and admin).
    #[command(after_help = "\
Examples:
  sus audit                               # every entry, then the hash chain check
  sus audit --from 1000 --limit 50 --format json
Exit status 4 if the hash chain does not verify.")]
    Audit {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// First entry (0-based).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many entries (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// Entries as a table, CSV, JSON or Parquet (default: one line each, then the chain
        /// check; with a format the check goes to stderr).
        #[arg(long, value_enum)]
        format: Option<read::Format>,
    },
    /// Development certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create a development CA, a certificate per node and the operator's client certificate.
    #[command(after_help = "\
Example:
  sus certs init --dir certs --node 1=n1 --node 2=n2 --node 3=n3,10.0.0.13
Each node certificate names its node id (the URI sus://node/<id>: a node starts only with its own,
and its peers accept it only while the node is a member), the names and addresses given, localhost,
127.0.0.1 and ::1. Start node 1 with --tls-ca certs/ca.pem --tls-cert certs/node-1.pem
--tls-key certs/node-1.key (or --tls-cert 'certs/node-{id}.pem' on every node). Give clients
--ca certs/ca.pem, and `sus cluster init` also --cert certs/client.pem --key certs/client.key (the
operator's certificate: it names no node and can never act as one). Keep ca.key offline: it is
needed only to issue more node certificates (`sus certs node`).")]
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// A node: its id, then the host names and IP addresses it is reached at:
        /// ID=NAME[,NAME...] (repeat for each node).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
    },
    /// Issue one more node certificate from the CA that `sus certs init` made in --dir.
    #[command(after_help = "\
Examples:
  sus certs node --dir certs --id 4 --name n4 --name 10.0.0.14     # a node to add (new id)
  sus certs node --dir certs --id 2 --name n2 --replace            # rotate node 2's certificate
Writes certs/node-<id>.pem and .key. A wiped node rejoins under a new id, so it needs a new
certificate; node ids are never reused.")]
    Node {
        #[arg(long)]
        dir: PathBuf,
        /// The node's id (1 or more).
        #[arg(long)]
        id: u64,
        /// A host name or IP address the node is reached at (repeat).
        #[arg(long = "name")]
        names: Vec<String>,
        /// Overwrite the node's existing certificate and key (a rotation).
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Debug, Args)]
struct EndpointArgs {
    /// Node addresses (host:port), comma-separated; any live node will do.
    #[arg(
        long,
        env = "SUS_ENDPOINT",
        value_delimiter = ',',
        default_value = "127.0.0.1:7401"
    )]
    endpoint: Vec<String>,
    /// Keep retrying calls whose outcome is unknown for this many seconds.
    #[arg(long, default_value_t = 60)]
    retry_for: u64,
    /// The cluster CA's certificate (PEM): connect with TLS and verify the nodes against it.
    #[arg(long, env = "SUS_CA", conflicts_with = "plaintext")]
    ca: Option<PathBuf>,
    /// Connect without TLS (only to nodes started with --plaintext, for local development).
    #[arg(long, env = "SUS_PLAINTEXT")]
    plaintext: bool,
    /// The operator's client certificate and key (PEM) of the CA (client.pem of `sus certs
    /// init`): `sus cluster init` needs it. A node's certificate is refused there.
    #[arg(long, env = "SUS_CERT", requires = "key")]
    cert: Option<PathBuf>,
    #[arg(long, env = "SUS_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// The bearer token (default: the one `sus login` saved in --token-file).
    #[arg(long, env = "SUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where `sus login` saves the token and other commands read it.
    #[arg(long, env = "SUS_TOKEN_FILE", default_value_os_t = default_token_file())]
    token_file: PathBuf,
}

fn default_token_file() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".config/sus/token")
}

impl EndpointArgs {
    fn client(&self) -> sus_client::Result<sus_client::Client> {
        let tls = match (&self.ca, self.plaintext) {
            (Some(ca), false) => Some(sus_client::TlsOptions::from_files(
                ca,
                self.cert.as_deref().zip(self.key.as_deref()),
            )?),
            (None, true) => None,
            _ => {
                return Err(sus_client::Error::Config(
                    "give --ca (the cluster's CA certificate; env SUS_CA), or --plaintext for \
                     nodes started with --plaintext"
                        .into(),
                ));
            }
        };
        let token = match &self.token {
            Some(t) => Some(t.clone()),
            None => std::fs::read_to_string(&self.token_file)
                .ok()
                .map(|t| t.trim().to_string()),
        };
        sus_client::Client::with_config(sus_client::ClientConfig {
            endpoints: self.endpoint.clone(),
            token,
            tls,
            retry: sus_client::RetryPolicy {
                retry_for: std::time::Duration::from_secs(self.retry_for),
                ..Default::default()
            },
        })
    }
}

fn pounds(pence: i64) -> String {
    let sign = if pence < 0 { "-" } else { "" };
    let p = pence.unsigned_abs();
    let whole = (p / 100).to_string();
    let mut grouped = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{sign}£{grouped}.{:02}", p % 100)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One line, like every other error of this program; `--help` has the rest.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("sus: {} (see --help)", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let trace = std::env::var("SUS_TRACEPARENT")
        .ok()
        .and_then(|v| TraceContext::parse(&v))
        .map_or_else(TraceContext::new, |parent| parent.child());
    if cli.trace {
        eprintln!("trace {}", trace.trace_hex());
    }
    let result = match cli.command {
        Command::Demo(a) => block_on(trace, demo::run(a)),
        Command::Gen(a) => submit::run_gen(a).map(|()| ExitCode::SUCCESS),
        Command::Submit(a) => block_on(trace, submit::run_submit(a)),
        Command::Cluster(c) => block_on(trace, cluster::run_cluster(c)),
        Command::Query(a) => block_on(trace, read::run_query(a)),
        Command::Sql(a) => block_on(trace, sql::run_sql(a)),
        Command::Report(c) => block_on(trace, read::run_report(c)),
        Command::Freeze(c) => block_on(trace, read::run_freeze(c)),
        Command::Compact {
            endpoint,
            target_rows,
        } => block_on(trace, read::run_compact(endpoint, target_rows)),
        Command::Export(a) => block_on(trace, read::run_export(a)),
        Command::Login {
            endpoint,
            user,
            purpose,
            ttl,
        } => block_on(trace, access::run_login(endpoint, user, purpose, ttl)),
        Command::User(c) => block_on(trace, access::run_user(c)),
        Command::Audit {
            endpoint,
            from,
            limit,
            format,
        } => block_on(trace, access::run_audit(endpoint, from, limit, format)),
        Command::Certs(CertsCommand::Init { dir, nodes }) => nodes
            .iter()
            .map(|n| n.parse())
            .collect::<sus_client::Result<Vec<sus_client::certs::NodeCert>>>()
            .and_then(|nodes| sus_client::certs::init(&dir, &nodes))
            .map(|files| {
                println!("CA {}", files.ca.display());
                for (id, cert, key) in &files.nodes {
                    println!("node {id}: {} {}", cert.display(), key.display());
                }
                println!(
                    "operator (client): {} {}",
                    files.client.0.display(),
                    files.client.1.display()
                );
                ExitCode::SUCCESS
            }),
        Command::Certs(CertsCommand::Node {
            dir,
            id,
            names,
            replace,
        }) => {
            sus_client::certs::issue_node(&dir, &sus_client::certs::NodeCert { id, names }, replace)
                .map(|(cert, key)| {
                    println!("node {id}: {} {}", cert.display(), key.display());
                    ExitCode::SUCCESS
                })
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sus: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> sus_client::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| sus_client::Error::Cluster(format!("starting the async runtime: {e}")))
}

/// Runs a command's work on a new runtime, in `trace` (its calls carry it; see `--trace`).
fn block_on<T>(
    trace: TraceContext,
    work: impl std::future::Future<Output = sus_client::Result<T>>,
) -> sus_client::Result<T> {
    let span = tracing::info_span!("sus", trace_id = %trace.trace_hex());
    runtime()?.block_on(sus_client::trace::scope(trace, work.instrument(span)))
}
