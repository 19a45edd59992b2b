//! The node's command line: flags (each also an environment variable and a config-file key).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use sus_node::limits::Limits;

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
pub struct Cli {
    /// TOML file of settings (any long flag of `serve` and the global ones, as `name = value`).
    #[arg(long, env = "SUS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (catalog and segments); created if absent.
    #[arg(long, env = "SUS_DATA_DIR", default_value = "sus-data", global = true)]
    pub data_dir: PathBuf,
    /// Reference data folder (see refdata/README.md).
    #[arg(long, env = "SUS_REFDATA", default_value = "refdata", global = true)]
    pub refdata: PathBuf,
    /// Group with a licensed HRG grouper's output instead of the reference tables: a CSV
    /// `dataset,cds_unique_id,hrg` (records it does not list are grouped by the tables). Every
    /// node of a cluster must use the same (it is part of the reference data version).
    #[arg(long, env = "SUS_GROUPER_OUTPUT", global = true)]
    pub grouper_output: Option<PathBuf>,
    /// Log lines as human-readable text or as JSON objects (one per line, for log shippers).
    /// The level comes from RUST_LOG (default `warn`; e.g. `RUST_LOG=info,sus_node=debug`).
    #[arg(long, env = "SUS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
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
pub struct ServeArgs {
    /// This node's id: unique in the cluster and never reused (a wiped node gets a new id).
    /// Required (here, in the environment or in the config file) unless --id-from-hostname.
    #[arg(long, env = "SUS_NODE_ID")]
    pub id: Option<u64>,
    /// Take the id from the host name's trailing number plus one (`sus-2` is node 3): for
    /// Kubernetes StatefulSets, whose pods are named `<set>-<ordinal>`.
    #[arg(long, env = "SUS_ID_FROM_HOSTNAME", conflicts_with = "id")]
    pub id_from_hostname: bool,
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, env = "SUS_LISTEN", default_value = "127.0.0.1:7401")]
    pub listen: String,
    /// Address peers and clients use to reach this node (default: the bound listen address).
    #[arg(long, env = "SUS_ADVERTISE")]
    pub advertise: Option<String>,
    /// Plain-HTTP address of the operator endpoints: `/metrics` (Prometheus), `/health`,
    /// `/ready` and the status page `/`. No patient data is served there. Off when not given;
    /// port 0 picks a free port (printed on start).
    #[arg(long, env = "SUS_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Raft heartbeat interval (ms).
    #[arg(long, env = "SUS_HEARTBEAT_MS", default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Election timeout lower bound (ms); the upper bound is twice this.
    #[arg(long, env = "SUS_ELECTION_MS", default_value_t = 500)]
    pub election_ms: u64,
    /// Build a group snapshot after this many applied entries since the last one.
    #[arg(long, env = "SUS_SNAPSHOT_AFTER", default_value_t = 1000)]
    pub snapshot_after: u64,
    /// Log entries kept behind a snapshot (peers lagging further catch up by snapshot).
    #[arg(long, env = "SUS_KEEP_AFTER_SNAPSHOT", default_value_t = 200)]
    pub keep_after_snapshot: u64,
    /// Memory for decoded segment columns, shared by the node's shards (MiB; 0 reads Parquet
    /// every time). Freshly written segments and columns read by queries are kept.
    #[arg(long, env = "SUS_CACHE_MIB", default_value_t = 512)]
    pub cache_mib: usize,
    /// Memory for applied rows not yet written to segment files, shared by the node's shard
    /// replicas (MiB). The Raft log is their write-ahead log: a replica writes them in large
    /// segments at checkpoints, and after a crash applies the log again from its last one.
    /// Applies wait while the node is over it. 0 turns the buffer off (every apply writes its
    /// segments and commits the catalog durably).
    #[arg(long, env = "SUS_WRITE_BUFFER_MIB", default_value_t = 1024)]
    pub write_buffer_mib: u64,
    /// A shard replica checkpoints once its buffered rows take this much memory (MiB) ...
    #[arg(long, env = "SUS_FLUSH_MIB", default_value_t = 128)]
    pub flush_mib: u64,
    /// ... or once its oldest buffered row is this old (s): what a restart replays.
    #[arg(long, env = "SUS_FLUSH_SECS", default_value_t = 30)]
    pub flush_secs: u64,
    /// How long a submission waits for its commit before the client hears "outcome unknown".
    #[arg(long, env = "SUS_COMMIT_TIMEOUT_MS", default_value_t = 30_000)]
    pub commit_timeout_ms: u64,
    /// The cluster CA's certificate (PEM): peers and clients are verified against it.
    #[arg(long, env = "SUS_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the CA, naming this node's id as the URI
    /// `sus://node/<id>` (the node refuses to start otherwise; `sus certs init` and `sus certs
    /// node` make development ones). `{id}` in the path is replaced by the node id
    /// (`/tls/node-{id}.pem`).
    #[arg(long, env = "SUS_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM); `{id}` in the path is replaced by the node id.
    #[arg(long, env = "SUS_TLS_KEY", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// Serve and call peers without TLS (local development only: tokens and patient data
    /// cross the network in clear, and no caller proves which node it is, so the internal Raft
    /// and Join services are open to anyone who reaches the port).
    #[arg(long, env = "SUS_PLAINTEXT", conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    pub plaintext: bool,

    // Limits: what clients may send and make the node hold (docs/security.md, "Limits").
    /// Longest item of a submitted record (bytes); a longer one is an R04 finding on its record.
    #[arg(long, env = "SUS_MAX_FIELD_BYTES", default_value_t = DEFAULTS.submission.max_field_bytes)]
    pub max_field_bytes: usize,
    /// Most records in one submission file; a file with more is refused (split it).
    #[arg(long, env = "SUS_MAX_SUBMISSION_ROWS", default_value_t = DEFAULTS.submission.max_rows)]
    pub max_submission_rows: u64,
    /// Largest submission file (MiB): the limit of an Ingest request.
    #[arg(long, env = "SUS_MAX_SUBMISSION_MIB", default_value_t = DEFAULTS.submission.max_bytes >> 20)]
    pub max_submission_mib: usize,
    /// Most memory the records of one submission may take once decoded (MiB), counted as they
    /// decode; a submission over it is refused (split it).
    #[arg(long, env = "SUS_MAX_SUBMISSION_DECODED_MIB", default_value_t = DEFAULTS.submission.max_decoded_bytes >> 20)]
    pub max_submission_decoded_mib: u64,
    /// Decoded records of all the submissions this node prepares at once (MiB); a submission
    /// waits for room (up to the commit timeout, then "busy, retry").
    #[arg(long, env = "SUS_DECODE_BUDGET_MIB", default_value_t = DEFAULTS.decode_budget_bytes >> 20)]
    pub decode_budget_mib: u64,
    /// Submit calls this node receives and handles at once; more wait their turn.
    #[arg(long, env = "SUS_MAX_CONCURRENT_SUBMISSIONS", default_value_t = DEFAULTS.max_concurrent_submissions)]
    pub max_concurrent_submissions: usize,
    /// Largest Query, Admin or Arrow Flight request (MiB).
    #[arg(long, env = "SUS_MAX_REQUEST_MIB", default_value_t = DEFAULTS.max_request_bytes >> 20)]
    pub max_request_mib: usize,
    /// Most filters in one query, scan or extract.
    #[arg(long, env = "SUS_MAX_FILTERS", default_value_t = DEFAULTS.query.max_filters)]
    pub max_filters: usize,
    /// Most values in one filter (an IN list).
    #[arg(long, env = "SUS_MAX_FILTER_VALUES", default_value_t = DEFAULTS.query.max_filter_values)]
    pub max_filter_values: usize,
    /// Longest text in a query (bytes): a filter value or bound, a field, column or aggregate
    /// name, a dataset or freeze point name.
    #[arg(long, env = "SUS_MAX_FILTER_VALUE_BYTES", default_value_t = DEFAULTS.query.max_filter_value_bytes)]
    pub max_filter_value_bytes: usize,
    /// Most aggregates in one query.
    #[arg(long, env = "SUS_MAX_AGGREGATES", default_value_t = DEFAULTS.query.max_aggregates)]
    pub max_aggregates: usize,
    /// Most columns in one scan or extract.
    #[arg(long, env = "SUS_MAX_COLUMNS", default_value_t = DEFAULTS.query.max_columns)]
    pub max_columns: usize,
    /// Memory one SQL statement's sorts, joins and hash tables may hold on the node that plans
    /// it (MiB); a statement that needs more fails (nothing spills to disk).
    #[arg(long, env = "SUS_SQL_MEMORY_MIB", default_value_t = DEFAULTS.query.sql_memory_bytes >> 20)]
    pub sql_memory_mib: usize,
    /// Failed logins of one user name before each further attempt waits (1 s, then doubling).
    #[arg(long, env = "SUS_LOGIN_FREE_FAILURES", default_value_t = DEFAULTS.logins.free_failures)]
    pub login_free_failures: u32,
    /// Failed logins from one address, whatever the user names, before each further attempt
    /// waits.
    #[arg(long, env = "SUS_LOGIN_FREE_FAILURES_PER_SOURCE", default_value_t = DEFAULTS.logins.free_failures_per_source)]
    pub login_free_failures_per_source: u32,
    /// Longest wait between login attempts (s).
    #[arg(long, env = "SUS_LOGIN_MAX_BACKOFF_SECS", default_value_t = DEFAULTS.logins.max_backoff.as_secs())]
    pub login_max_backoff_secs: u64,
    /// Failed logins are forgotten after this long without another (s).
    #[arg(long, env = "SUS_LOGIN_FORGET_SECS", default_value_t = DEFAULTS.logins.forget_after.as_secs())]
    pub login_forget_secs: u64,
}

/// The limits' defaults (`sus_node::limits`), shown by `--help`.
static DEFAULTS: std::sync::LazyLock<Limits> = std::sync::LazyLock::new(Limits::default);

impl ServeArgs {
    /// The node's limits from the settings.
    pub fn limits(&self) -> Limits {
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
                sql_memory_bytes: self.sql_memory_mib.saturating_mul(1 << 20),
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
