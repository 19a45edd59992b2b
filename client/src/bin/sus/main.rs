//! `sus`: the sus-cluster command line.

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use sus_client::generator::{self, Dataset, GenConfig};
use sus_client::trace::TraceContext;
use tracing::Instrument;

mod demo;
mod read;

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
    Gen(GenArgs),
    /// Submit files to a cluster, in the order given, printing each submission's outcome.
    #[command(after_help = "\
Example:
  sus submit --endpoint 127.0.0.1:7401,127.0.0.1:7402 /tmp/sus-gen/*.csv

Each FILE needs its FILE.meta.json envelope. Any node will do: it forwards to the shard leader.
A submission whose outcome is unknown (node lost, no leader) is resent with the same submission id
until --retry-for passes; the cluster answers a resend with the original report.
Exit status: 0 all accepted, 3 some rejected, 1 a submission's outcome is unknown or a call failed.")]
    Submit(SubmitArgs),
    /// Administer a cluster: bootstrap, membership, leaders, status.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Aggregate over the whole cluster (pushed down to every shard, merged exactly).
    #[command(after_help = "\
Examples:
  sus query --dataset apc --group-by provider_code,activity_month --agg count --agg sum:price
  sus query --dataset op --filter pod=OPFA|OPFU --filter activity_date=2024-04-01..2024-06-30 \\
      --group-by commissioner_code --agg patients --order patients:desc --limit 10
  sus query --dataset ec --agg sum:price --freeze '2024-25 M06 recon' --format csv")]
    Query(read::QueryArgs),
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
    User(UserCommand),
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
enum UserCommand {
    /// Add a user; the password comes from SUS_NEW_PASSWORD or a prompt.
    #[command(after_help = "\
Examples:
  sus user add rrv-analyst --role provider --org RRV
  sus user add icb-analyst --role commissioner --org 15F --tier pseudonymised
  sus user add csu --role shared --org 0DF --delegate 15F --delegate 14L
Roles: admin, provider, commissioner, national, shared, auditor.
Tiers: identifiable, pseudonymised, anonymised (default by role).")]
    Add {
        #[command(flatten)]
        endpoint: EndpointArgs,
        name: String,
        #[arg(long)]
        role: String,
        /// The user's organisation (ODS code).
        #[arg(long, default_value = "")]
        org: String,
        /// The highest tier the user may read at.
        #[arg(long)]
        tier: Option<String>,
        /// For role shared: an organisation that delegated to it (repeat).
        #[arg(long = "delegate")]
        delegated: Vec<String>,
    },
    /// List users.
    #[command(after_help = "Example:\n  sus user list --format csv")]
    List {
        #[command(flatten)]
        endpoint: EndpointArgs,
        #[arg(long, value_enum, default_value_t = read::Format::Table)]
        format: read::Format,
    },
    /// Revoke a user and every token issued to it.
    #[command(after_help = "Example:\n  sus user revoke rrv-analyst")]
    Revoke {
        #[command(flatten)]
        endpoint: EndpointArgs,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create a development CA, node certificates and a client certificate.
    #[command(after_help = "\
Example:
  sus certs init --dir certs --node n1 --node n2 --node n3
Each node certificate names the node, localhost, 127.0.0.1 and ::1. Start each node with
--tls-ca certs/ca.pem --tls-cert certs/n1.pem --tls-key certs/n1.key; give clients --ca certs/ca.pem
(and --cert certs/client.pem --key certs/client.key for `sus cluster init`).")]
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// A node's host name (repeat).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
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
    /// A client certificate and key (PEM) of the CA: `sus cluster init` needs one.
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

#[derive(Debug, Args)]
struct SubmitArgs {
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Submission files (CSV or Parquet), each with FILE.meta.json beside it.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print only rejections and the final summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Bootstrap a new cluster of started nodes (send to one of them, once).
    #[command(after_help = "\
Example:
  sus cluster init --endpoint 127.0.0.1:7401 --node 1=127.0.0.1:7401 --node 2=127.0.0.1:7402 \\
      --node 3=127.0.0.1:7403 --shards 8 --replication 3")]
    Init {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// A member as ID=HOST:PORT (repeat for each node).
        #[arg(long = "node", required = true, value_parser = parse_member)]
        nodes: Vec<(u64, String)>,
        /// Number of data shards (Raft groups).
        #[arg(long, default_value_t = 8)]
        shards: u32,
        /// Replicas per shard.
        #[arg(long, default_value_t = 3)]
        replication: u32,
        /// The password of the first user, `admin` (at least 12 characters).
        #[arg(long, env = "SUS_ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: String,
        /// Succeed without change if the cluster is already initialised (for deploy scripts
        /// and init containers that run on every start).
        #[arg(long)]
        if_needed: bool,
    },
    /// Add a started node under a new id, and move shard replicas onto it.
    AddNode {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// The new node as ID=HOST:PORT (an id never used in this cluster).
        #[arg(value_parser = parse_member)]
        node: (u64, String),
        /// Do not move shard replicas onto it.
        #[arg(long)]
        no_rebalance: bool,
    },
    /// Move a node's shard replicas to other nodes, then remove it from the cluster.
    RemoveNode {
        #[command(flatten)]
        endpoint: EndpointArgs,
        id: u64,
    },
    /// Make NODE the leader of GROUP (0 = meta, shard s = s + 1), e.g. before restarting a leader.
    TransferLeader {
        #[command(flatten)]
        endpoint: EndpointArgs,
        group: u64,
        node: u64,
    },
    /// Make the reference data of the node at --endpoint the version the cluster prices with
    /// (after installing new reference data on every node).
    SetRefdata {
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Read every replica of every shard and compare their content checksums (over rows, not
    /// file bytes). Exit status 0 when all replicas of each shard agree, 4 when not.
    Verify {
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Members: id, address, and which leads the meta group.
    #[command(after_help = "Example:\n  sus cluster members --format csv")]
    Members {
        #[command(flatten)]
        endpoint: EndpointArgs,
        #[arg(long, value_enum, default_value_t = read::Format::Table)]
        format: read::Format,
    },
    /// Shards: replicas, and the leader as the answering node sees it (`-` where it hosts no
    /// replica of the shard).
    #[command(after_help = "Example:\n  sus cluster shards --format json")]
    Shards {
        #[command(flatten)]
        endpoint: EndpointArgs,
        #[arg(long, value_enum, default_value_t = read::Format::Table)]
        format: read::Format,
    },
    /// Members, shard map, and the Raft groups of the node that answers.
    #[command(after_help = "\
Examples:
  sus cluster status
  sus cluster status --linearizable --format json   # the Raft groups only, for scripts")]
    Status {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// Read the shard map through the meta leader (read index).
        #[arg(long)]
        linearizable: bool,
        /// The Raft groups as a table, CSV, JSON or Parquet (default: a summary for people;
        /// `cluster members` and `cluster shards` give the rest).
        #[arg(long, value_enum)]
        format: Option<read::Format>,
    },
}

fn parse_member(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not ID=HOST:PORT"))?;
    let id = id
        .parse()
        .map_err(|_| format!("'{id}' is not a node id (a positive integer)"))?;
    if id == 0 {
        return Err("node id 0 is reserved".into());
    }
    Ok((id, addr.to_string()))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DatasetArg {
    Apc,
    Op,
    Ec,
    All,
}

#[derive(Debug, Args)]
struct GenArgs {
    /// Dataset to generate; `all` mixes the three (APC 20 %, OP 55 %, EC 25 %).
    #[arg(long, value_enum, default_value = "all")]
    dataset: DatasetArg,
    /// Original activity records to generate (corrections and re-sends come on top).
    #[arg(long, default_value_t = 10_000)]
    rows: u64,
    /// Random seed: the same seed and options give byte-identical output.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Reference data folder.
    #[arg(long, default_value = "refdata")]
    refdata: PathBuf,
    /// Share of records with a per-record defect (a warning, still stored).
    #[arg(long, default_value_t = 0.02)]
    invalid_share: f64,
    /// Share of submissions sent as Bulk Replacement.
    #[arg(long, default_value_t = 0.1)]
    bulk_share: f64,
    /// Share of records (APC: spells) re-sent later as replacements.
    #[arg(long, default_value_t = 0.05)]
    replace_share: f64,
    /// Share of records (APC: spells) deleted later.
    #[arg(long, default_value_t = 0.01)]
    delete_share: f64,
    /// Most records in one file.
    #[arg(long, default_value_t = 50_000)]
    rows_per_file: u64,
    /// Also write whole-submission-rejected files (bad date, unknown provider, ...).
    #[arg(long)]
    reject_files: bool,
    /// Also write oracle/live.csv: every record live at the end with its derived fields.
    #[arg(long)]
    live_rows: bool,
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

fn run_gen(a: GenArgs) -> sus_client::Result<()> {
    let cfg = GenConfig {
        dataset: match a.dataset {
            DatasetArg::Apc => Some(Dataset::Apc),
            DatasetArg::Op => Some(Dataset::Op),
            DatasetArg::Ec => Some(Dataset::Ec),
            DatasetArg::All => None,
        },
        rows: a.rows,
        seed: a.seed,
        refdata_dir: a.refdata,
        out_dir: a.out,
        invalid_share: a.invalid_share,
        bulk_share: a.bulk_share,
        replace_share: a.replace_share,
        delete_share: a.delete_share,
        rows_per_file: a.rows_per_file,
        reject_files: a.reject_files,
        write_live: a.live_rows,
    };
    let bar = ProgressBar::new(cfg.rows);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rows, {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let summary = generator::generate(&cfg, &mut |p| {
        bar.set_length(p.rows_total);
        bar.set_position(p.rows_done);
        bar.set_message(format!("{} files", p.files));
    })?;
    bar.finish_and_clear();
    let e = &summary.expected;
    let rejected = e
        .submissions
        .iter()
        .filter(|s| s.outcome == "rejected")
        .count();
    println!(
        "wrote {} files ({} rejected by design), {} rows to {} in {:.1}s",
        summary.files,
        rejected,
        summary.rows_written,
        summary.out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<5} {:>10} {:>18} {:>18} {:>16} {:>9} {:>9}",
        "set", "live", "price", "base", "excess", "excluded", "warnings"
    );
    let mut rows: Vec<(&str, &generator::oracle::DatasetTotals)> =
        e.datasets.iter().map(|(k, v)| (k.as_str(), v)).collect();
    rows.push(("all", &e.all));
    for (name, t) in rows {
        println!(
            "{:<5} {:>10} {:>18} {:>18} {:>16} {:>9} {:>9}",
            name,
            t.live_records,
            pounds(t.total_price_pence),
            pounds(t.total_base_price_pence),
            pounds(t.total_excess_payment_pence),
            t.excluded_records,
            t.records_with_warnings
        );
    }
    println!(
        "expected totals: {}",
        summary.out_dir.join("expected.json").display()
    );
    Ok(())
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
        Command::Gen(a) => run_gen(a).map(|()| ExitCode::SUCCESS),
        Command::Submit(a) => block_on(trace, run_submit(a)),
        Command::Cluster(c) => block_on(trace, run_cluster(c)),
        Command::Query(a) => block_on(trace, read::run_query(a)),
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
        } => block_on(trace, run_login(endpoint, user, purpose, ttl)),
        Command::User(c) => block_on(trace, run_user(c)),
        Command::Audit {
            endpoint,
            from,
            limit,
            format,
        } => block_on(trace, run_audit(endpoint, from, limit, format)),
        Command::Certs(CertsCommand::Init { dir, nodes }) => sus_client::certs::init(&dir, &nodes)
            .map(|files| {
                println!("CA {}", files.ca.display());
                for (name, cert, key) in &files.nodes {
                    println!("node {name}: {} {}", cert.display(), key.display());
                }
                println!(
                    "client: {} {}",
                    files.client.0.display(),
                    files.client.1.display()
                );
                ExitCode::SUCCESS
            }),
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

async fn run_submit(a: SubmitArgs) -> sus_client::Result<ExitCode> {
    let client = a.endpoint.client()?;
    let started = std::time::Instant::now();
    let bar = ProgressBar::new(a.files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} files {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // A bar drawn on no terminal drops its println lines: reports then go straight to stdout.
    let say = |line: String| {
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    };
    let (mut accepted, mut rejected, mut records) = (0u64, 0u64, 0u64);
    for file in &a.files {
        let outcome = client
            .submit_file(file)
            .await
            .inspect_err(|_| bar.abandon())?;
        let r = &outcome.report;
        let id = r["submission_id"].as_str().unwrap_or("?");
        if outcome.accepted {
            accepted += 1;
            records += r["records"].as_u64().unwrap_or(0);
            if !a.quiet {
                say(format!(
                    "{}: accepted{} as version {} of shard {} ({} records: {} inserted, {} replaced, {} deleted, {} stale)",
                    id,
                    if r["resent"].as_bool() == Some(true) {
                        " (resent)"
                    } else {
                        ""
                    },
                    outcome.version().unwrap_or(0),
                    outcome.shard,
                    r["records"],
                    r["inserted"],
                    r["replaced"],
                    r["deleted"],
                    r["stale"]
                ));
            }
        } else {
            rejected += 1;
            let first = &r["rejection"]["issues"][0];
            say(format!(
                "{}: REJECTED ({}): {}",
                id,
                file.display(),
                first["message"].as_str().unwrap_or("see report")
            ));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} submissions: {accepted} accepted ({records} records), {rejected} rejected in {secs:.1}s ({:.0} records/s)",
        a.files.len(),
        records as f64 / secs.max(1e-9)
    );
    Ok(if rejected > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

async fn run_verify(endpoint: EndpointArgs) -> sus_client::Result<ExitCode> {
    let contents = endpoint.client()?.replica_contents().await?;
    let mut ok = true;
    let (mut live, mut price) = (0u64, 0i64);
    println!(
        "{:>5} {:>4} {:>9} {:>8} {:>10} {:>16} checksum",
        "shard", "node", "applied", "version", "live", "price"
    );
    let mut shards: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for r in &contents {
        match &r.content {
            Ok(c) => {
                println!(
                    "{:>5} {:>4} {:>9} {:>8} {:>10} {:>16} {}",
                    r.shard,
                    r.node,
                    c.last_applied,
                    c.version,
                    c.live_records,
                    pounds(c.price_pence),
                    c.checksum
                );
                let sums = shards.entry(r.shard).or_default();
                if sums.is_empty() {
                    live += c.live_records;
                    price += c.price_pence;
                }
                sums.push(c.checksum.clone());
            }
            Err(e) => {
                ok = false;
                println!("{:>5} {:>4} unreadable: {e}", r.shard, r.node);
            }
        }
    }
    for (shard, sums) in &shards {
        if sums.iter().any(|s| s != &sums[0]) {
            ok = false;
            println!("shard {shard}: replicas DIFFER");
        }
    }
    println!("total: {live} live records, {}", pounds(price));
    println!(
        "{}",
        if ok {
            "all replicas agree"
        } else {
            "replicas do not agree (or could not be read)"
        }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

async fn run_cluster(c: ClusterCommand) -> sus_client::Result<ExitCode> {
    let status = match c {
        ClusterCommand::Init {
            endpoint,
            nodes,
            shards,
            replication,
            admin_password,
            if_needed,
        } => {
            match endpoint
                .client()?
                .init(&nodes, shards, replication, &admin_password)
                .await
            {
                Err(e) if if_needed && e.to_string().contains("already initialised") => {
                    println!("the cluster is already initialised");
                    return Ok(ExitCode::SUCCESS);
                }
                other => other?,
            }
        }
        ClusterCommand::AddNode {
            endpoint,
            node,
            no_rebalance,
        } => {
            endpoint
                .client()?
                .add_node(node.0, &node.1, !no_rebalance)
                .await?
        }
        ClusterCommand::RemoveNode { endpoint, id } => endpoint.client()?.remove_node(id).await?,
        ClusterCommand::TransferLeader {
            endpoint,
            group,
            node,
        } => endpoint.client()?.transfer_leader(group, node).await?,
        ClusterCommand::Verify { endpoint } => return run_verify(endpoint).await,
        ClusterCommand::SetRefdata { endpoint } => endpoint.client()?.set_refdata().await?,
        ClusterCommand::Status {
            endpoint,
            linearizable,
            format: None,
        } => endpoint.client()?.status(linearizable).await?,
        ClusterCommand::Status {
            endpoint,
            linearizable,
            format: Some(format),
        } => {
            let status = endpoint.client()?.status(linearizable).await?;
            let ids = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
            let rows: Vec<Vec<String>> = status
                .groups
                .iter()
                .map(|g| {
                    vec![
                        g.group.to_string(),
                        g.leader.to_string(),
                        g.term.to_string(),
                        g.last_applied.to_string(),
                        g.last_log.to_string(),
                        g.snapshot_index.to_string(),
                        ids(&g.voters),
                        ids(&g.learners),
                    ]
                })
                .collect();
            read::write_rows(
                format,
                &[
                    "group", "leader", "term", "applied", "last_log", "snapshot", "voters",
                    "learners",
                ],
                &rows,
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        ClusterCommand::Members { endpoint, format } => {
            let status = endpoint.client()?.status(true).await?;
            let rows: Vec<Vec<String>> = status
                .nodes
                .iter()
                .map(|n| {
                    let role = if n.id == status.meta_leader {
                        "meta leader"
                    } else {
                        "member"
                    };
                    vec![n.id.to_string(), n.addr.clone(), role.to_string()]
                })
                .collect();
            read::write_rows(format, &["id", "addr", "role"], &rows)?;
            return Ok(ExitCode::SUCCESS);
        }
        ClusterCommand::Shards { endpoint, format } => {
            let status = endpoint.client()?.status(true).await?;
            let rows: Vec<Vec<String>> = status
                .shards
                .iter()
                .map(|s| {
                    let leader = status
                        .groups
                        .iter()
                        .find(|g| g.group == u64::from(s.shard) + 1)
                        .map(|g| g.leader.to_string())
                        .unwrap_or_else(|| "-".into());
                    let replicas: Vec<String> = s.replicas.iter().map(u64::to_string).collect();
                    vec![s.shard.to_string(), replicas.join(" "), leader]
                })
                .collect();
            read::write_rows(format, &["shard", "replicas", "leader"], &rows)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!(
        "node {} (meta leader {}), reference data {} (this node: {})",
        status.node, status.meta_leader, status.refdata, status.node_refdata
    );
    for n in &status.nodes {
        println!("  member {:>3} {}", n.id, n.addr);
    }
    for s in &status.shards {
        println!("  shard {:>3} replicas {:?}", s.shard, s.replicas);
    }
    println!(
        "  {:>5} {:>6} {:>5} {:>9} {:>9} {:>9} {:<12} learners",
        "group", "leader", "term", "applied", "last log", "snapshot", "voters"
    );
    for g in &status.groups {
        println!(
            "  {:>5} {:>6} {:>5} {:>9} {:>9} {:>9} {:<12} {:?}",
            g.group,
            g.leader,
            g.term,
            g.last_applied,
            g.last_log,
            g.snapshot_index,
            format!("{:?}", g.voters),
            g.learners
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A secret from an environment variable, or read from the terminal (stdin) after a prompt.
fn secret(var: &str, prompt: &str) -> sus_client::Result<String> {
    if let Ok(v) = std::env::var(var) {
        return Ok(v);
    }
    eprint!("{prompt}: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| sus_client::Error::io("stdin", e))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

async fn run_login(
    endpoint: EndpointArgs,
    user: String,
    purpose: String,
    ttl: u64,
) -> sus_client::Result<ExitCode> {
    let password = secret("SUS_PASSWORD", &format!("password for {user}"))?;
    let client = endpoint.client()?.with_token(None);
    let reply = client.login(&user, &password, &purpose, ttl).await?;
    let path = &endpoint.token_file;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| sus_client::Error::io(dir, e))?;
    }
    std::fs::write(path, &reply.token).map_err(|e| sus_client::Error::io(path, e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| sus_client::Error::io(path, e))?;
    let expires = chrono::DateTime::from_timestamp(reply.expires, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    println!(
        "logged in as {user}; token saved in {} (expires {expires})",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn tier_name(t: i32) -> &'static str {
    match sus_proto::v1::Tier::try_from(t) {
        Ok(sus_proto::v1::Tier::Identifiable) => "identifiable",
        Ok(sus_proto::v1::Tier::Pseudonymised) => "pseudonymised",
        Ok(sus_proto::v1::Tier::Anonymised) => "anonymised",
        _ => "-",
    }
}

async fn run_user(c: UserCommand) -> sus_client::Result<ExitCode> {
    let print = |users: &[sus_client::cluster::UserInfo], format: read::Format| {
        let rows: Vec<Vec<String>> = users
            .iter()
            .map(|u| {
                vec![
                    u.name.clone(),
                    u.role.clone(),
                    u.org.clone(),
                    tier_name(u.max_tier).to_string(),
                    u.delegated.join(","),
                    u.revoked.to_string(),
                ]
            })
            .collect();
        read::write_rows(
            format,
            &["name", "role", "org", "max_tier", "delegated", "revoked"],
            &rows,
        )
    };
    match c {
        UserCommand::Add {
            endpoint,
            name,
            role,
            org,
            tier,
            delegated,
        } => {
            let max_tier = match tier.as_deref() {
                None => sus_proto::v1::Tier::Unspecified,
                Some("identifiable") => sus_proto::v1::Tier::Identifiable,
                Some("pseudonymised") => sus_proto::v1::Tier::Pseudonymised,
                Some("anonymised") => sus_proto::v1::Tier::Anonymised,
                Some(other) => {
                    return Err(sus_client::Error::Config(format!(
                        "unknown tier '{other}' (identifiable, pseudonymised, anonymised)"
                    )));
                }
            };
            let password = secret("SUS_NEW_PASSWORD", &format!("new password for {name}"))?;
            let user = sus_client::cluster::UserInfo {
                name,
                role,
                org,
                max_tier: max_tier as i32,
                delegated,
                ..Default::default()
            };
            print(
                &[endpoint.client()?.add_user(user, &password).await?],
                read::Format::Table,
            )?;
        }
        UserCommand::List { endpoint, format } => {
            print(&endpoint.client()?.list_users().await?, format)?;
        }
        UserCommand::Revoke { endpoint, name } => {
            print(
                &[endpoint.client()?.revoke_user(&name).await?],
                read::Format::Table,
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_audit(
    endpoint: EndpointArgs,
    from: u64,
    limit: u64,
    format: Option<read::Format>,
) -> sus_client::Result<ExitCode> {
    let log = endpoint.client()?.audit_log(from, limit).await?;
    if let Some(format) = format {
        let rows: Vec<Vec<String>> = log
            .entries
            .iter()
            .map(|e| {
                let r = &e.record;
                vec![
                    e.index.to_string(),
                    chrono::DateTime::from_timestamp_millis(r.time_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                    r.node.to_string(),
                    r.user.clone(),
                    r.role.clone(),
                    r.org.clone(),
                    r.purpose.clone(),
                    r.action.clone(),
                    r.tier.clone(),
                    r.dataset.clone(),
                    r.filter.clone(),
                    r.view.clone(),
                    r.rows.to_string(),
                    r.detail.clone(),
                ]
            })
            .collect();
        read::write_rows(
            format,
            &[
                "index", "time", "node", "user", "role", "org", "purpose", "action", "tier",
                "dataset", "filter", "view", "rows", "detail",
            ],
            &rows,
        )?;
        // The data goes to stdout; the verdict to stderr (and the exit status).
        return Ok(match (from, log.verify()) {
            (0, Ok(())) => {
                eprintln!("{} entries; hash chain verified", log.entries.len());
                ExitCode::SUCCESS
            }
            (0, Err(e)) => {
                eprintln!("HASH CHAIN BROKEN: {e}");
                ExitCode::from(4)
            }
            _ => ExitCode::SUCCESS,
        });
    }
    for e in &log.entries {
        let r = &e.record;
        let time = chrono::DateTime::from_timestamp_millis(r.time_ms)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        println!(
            "{:>6} {time} node {} {} ({} {}) {:<9} {:<13} {} rows {} [{}] purpose: {} {}",
            e.index,
            r.node,
            r.user,
            r.role,
            r.org,
            r.action,
            r.tier,
            r.dataset,
            r.rows,
            r.filter,
            r.purpose,
            r.detail
        );
    }
    if from == 0 {
        match log.verify() {
            Ok(()) => println!("{} entries; hash chain verified", log.entries.len()),
            Err(e) => {
                println!("HASH CHAIN BROKEN: {e}");
                return Ok(ExitCode::from(4));
            }
        }
    } else {
        println!(
            "{} entries (chain verified only from entry 0)",
            log.entries.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
