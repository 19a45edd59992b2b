//! The cluster the attacks run against, the users they act as, raw gRPC and Flight calls, and the
//! case recorder that lets a section check every attack and report them all.
//!
//! One 3-node TLS cluster (4 shards of 2 replicas, so that every node lacks some shard and relays
//! it) holds generated data of every dataset. Users of every role exist in two organisations, and
//! every one of them logs in while the fixture starts: sections never log in again, so that the
//! login-throttling section (run last) cannot slow the others.

#![allow(dead_code)]

use arrow::array::RecordBatch;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use sus_chaos_tests::cluster::TestCluster;
use sus_client::cluster::UserInfo;
use sus_proto::WIRE_FORMAT_VERSION;
use sus_proto::partial::ipc_to_batch;
use sus_proto::v1::{self, Tier};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// The password of every user the fixture makes.
pub const PASSWORD: &str = "a-long-security-test-password";

/// A user of the fixture: name, role, organisation, highest tier, delegated organisations.
pub struct UserSpec {
    pub name: &'static str,
    pub role: &'static str,
    pub org: String,
    pub tier: Tier,
    pub delegated: Vec<String>,
}

/// The organisations the users belong to, chosen from the generated data.
#[derive(Debug, Clone)]
pub struct Orgs {
    /// The two busiest providers of `apc`.
    pub p: String,
    pub q: String,
    /// The two busiest commissioners of `apc`.
    pub c: String,
    pub d: String,
}

/// The running cluster and everything a section needs to attack it.
pub struct Fixture {
    pub cluster: TestCluster,
    /// The generator's files (submissions and `oracle/live.csv`).
    pub out: PathBuf,
    pub summary: sus_client::generator::Summary,
    pub orgs: Orgs,
    /// Tokens by user name (`admin` included).
    pub tokens: BTreeMap<String, String>,
}

/// The users of the fixture, by role and organisation.
pub fn users(o: &Orgs) -> Vec<UserSpec> {
    let u = |name, role, org: &str, tier| UserSpec {
        name,
        role,
        org: org.to_string(),
        tier,
        delegated: Vec::new(),
    };
    vec![
        u("prov_p", "provider", &o.p, Tier::Identifiable),
        u("prov_q", "provider", &o.q, Tier::Identifiable),
        u("prov_p_pseudo", "provider", &o.p, Tier::Pseudonymised),
        u("comm_c", "commissioner", &o.c, Tier::Pseudonymised),
        u("comm_d", "commissioner", &o.d, Tier::Pseudonymised),
        u("comm_c_id", "commissioner", &o.c, Tier::Identifiable),
        u("nat_a", "national", "X26", Tier::Pseudonymised),
        u("nat_b", "national", "X24", Tier::Pseudonymised),
        u("nat_id", "national", "X26", Tier::Identifiable),
        u("anon_nat", "national", "X26", Tier::Anonymised),
        u("anon_comm", "commissioner", &o.c, Tier::Anonymised),
        u("anon_prov", "provider", &o.p, Tier::Anonymised),
        UserSpec {
            name: "shared",
            role: "shared",
            org: "8JH00".into(),
            tier: Tier::Pseudonymised,
            delegated: vec![o.q.clone()],
        },
        u("aud", "auditor", "", Tier::Anonymised),
    ]
}

impl Fixture {
    /// Starts the cluster, loads `rows` generated rows and makes and logs in every user.
    pub async fn start(rows: u64, seed: u64) -> Fixture {
        let refdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata");
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_sus-node"));
        let cluster = TestCluster::start(
            &bin,
            &refdata,
            3,
            4,
            2,
            sus_chaos_tests::cluster::NodeOptions::default(),
        )
        .await
        .expect("the test cluster starts");
        let out = cluster.scratch();
        let summary = sus_client::generator::generate(
            &sus_client::generator::GenConfig {
                rows,
                seed,
                refdata_dir: refdata,
                out_dir: out.clone(),
                rows_per_file: 500,
                write_live: true,
                ..sus_client::generator::GenConfig::default()
            },
            &mut |_| {},
        )
        .expect("generated data");
        let admin = cluster.client(&[1, 2, 3]);
        for s in &summary.expected.submissions {
            admin
                .submit_file(&out.join(&s.file))
                .await
                .expect("a generated submission is answered");
        }
        let orgs = busiest(&out.join("oracle/live.csv"));
        let mut tokens = BTreeMap::new();
        tokens.insert(
            "admin".to_string(),
            cluster.token.clone().expect("the admin token"),
        );
        for u in users(&orgs) {
            admin
                .add_user(
                    UserInfo {
                        name: u.name.into(),
                        role: u.role.into(),
                        org: u.org.clone(),
                        max_tier: u.tier as i32,
                        delegated: u.delegated.clone(),
                        ..Default::default()
                    },
                    PASSWORD,
                )
                .await
                .expect("user added");
            let reply = cluster
                .client_as(&[1, 2, 3], Default::default(), None)
                .login(u.name, PASSWORD, "security test", 0)
                .await
                .expect("login");
            tokens.insert(u.name.to_string(), reply.token);
        }
        Fixture {
            cluster,
            out,
            summary,
            orgs,
            tokens,
        }
    }

    /// A TLS channel to `node` that presents no client certificate (as any user's client).
    pub async fn channel(&self, node: u64) -> Channel {
        channel_to(&self.cluster, node, None).await
    }

    /// The token of `user`.
    pub fn token(&self, user: &str) -> &str {
        self.tokens
            .get(user)
            .unwrap_or_else(|| panic!("no user {user} in the fixture"))
    }
}

/// A TLS channel to `node` of `cluster`, presenting `identity` (certificate and key PEM) if given.
pub async fn channel_to(
    cluster: &TestCluster,
    node: u64,
    identity: Option<(Vec<u8>, Vec<u8>)>,
) -> Channel {
    let ca = std::fs::read(&cluster.certs.ca).expect("the CA file");
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{}", cluster.nodes[&node].addr))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS config")
        .connect()
        .await
        .expect("connected")
}

/// The two busiest providers and commissioners of `apc` in the oracle's live records.
fn busiest(live: &Path) -> Orgs {
    let mut providers: BTreeMap<String, usize> = BTreeMap::new();
    let mut commissioners: BTreeMap<String, usize> = BTreeMap::new();
    let mut r = csv::Reader::from_path(live).expect("live.csv");
    for rec in r.records() {
        let rec = rec.expect("row");
        if &rec[0] == "apc" {
            *providers.entry(rec[2].to_string()).or_default() += 1;
            *commissioners.entry(rec[3].to_string()).or_default() += 1;
        }
    }
    let top = |m: BTreeMap<String, usize>| {
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by_key(|(k, n)| (std::cmp::Reverse(*n), k.clone()));
        v.into_iter().map(|(k, _)| k).collect::<Vec<_>>()
    };
    let (p, c) = (top(providers), top(commissioners));
    Orgs {
        p: p[0].clone(),
        q: p[1].clone(),
        c: c[0].clone(),
        d: c[1].clone(),
    }
}

/// `message` with `authorization: Bearer <token>` when a token is given.
pub fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    r
}

/// A query spec with `aggregates` given as (function, field, name).
pub fn spec(
    dataset: &str,
    group_by: &[&str],
    filters: Vec<v1::Filter>,
    aggregates: &[(v1::aggregate::Func, &str, &str)],
    tier: Tier,
) -> v1::QuerySpec {
    v1::QuerySpec {
        dataset: dataset.into(),
        filters,
        group_by: group_by.iter().map(|s| s.to_string()).collect(),
        aggregates: aggregates
            .iter()
            .map(|(func, field, name)| v1::Aggregate {
                func: *func as i32,
                field: field.to_string(),
                name: name.to_string(),
            })
            .collect(),
        tier: tier as i32,
        ..Default::default()
    }
}

/// A filter of `op` on `field` (values for EQ/NE/IN, min and max for RANGE).
pub fn filter(
    field: &str,
    op: v1::filter::Op,
    values: &[&str],
    min: &str,
    max: &str,
) -> v1::Filter {
    v1::Filter {
        field: field.into(),
        op: op as i32,
        values: values.iter().map(|v| v.to_string()).collect(),
        min: min.into(),
        max: max.into(),
    }
}

/// Calls `Query.Aggregate` on `ch` for every shard.
pub async fn aggregate(
    ch: &Channel,
    token: Option<&str>,
    spec: v1::QuerySpec,
    finish: bool,
) -> Result<v1::AggregateReply, tonic::Status> {
    let request = v1::AggregateRequest {
        format: WIRE_FORMAT_VERSION,
        query: Some(spec),
        shards: Vec::new(),
        linearizable: true,
        finish,
        distinct_counts: false,
    };
    retry_unavailable(|| async {
        v1::query_client::QueryClient::new(ch.clone())
            .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES)
            .aggregate(with_token(request.clone(), token))
            .await
            .map(|r| r.into_inner())
    })
    .await
}

/// Retries `call` while it answers `UNAVAILABLE` (a leader change or a read-index round that
/// timed out on a loaded machine), as the client library does; at most 20 s.
pub async fn retry_unavailable<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match call().await {
            Err(s) if s.code() == Code::Unavailable && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

/// The finished table of an aggregate reply.
pub fn table(reply: &v1::AggregateReply) -> Result<RecordBatch, String> {
    ipc_to_batch(&reply.table).map_err(|e| format!("finished table: {e}"))
}

/// Scans every shard of `fx`'s cluster, each on its leader, with `Query.Scan`: the batches.
pub async fn scan(
    fx: &Fixture,
    token: &str,
    request: v1::ScanRequest,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let mut batches = Vec::new();
    for shard in 0..4u32 {
        let request = v1::ScanRequest {
            format: WIRE_FORMAT_VERSION,
            shards: vec![shard],
            linearizable: true,
            ..request.clone()
        };
        let shard_batches = retry_unavailable(|| async {
            let leader = fx
                .cluster
                .leader_of(u64::from(shard) + 1)
                .await
                .expect("the shard has a leader");
            let mut c = v1::query_client::QueryClient::new(fx.channel(leader).await)
                .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES);
            let mut stream = c
                .scan(with_token(request.clone(), Some(token)))
                .await?
                .into_inner();
            let mut out = Vec::new();
            while let Some(chunk) = stream.message().await? {
                out.push(ipc_to_batch(&chunk.ipc).expect("an IPC batch"));
            }
            Ok(out)
        })
        .await?;
        batches.extend(shard_batches);
    }
    Ok(batches)
}

/// Every value of `column` in `batches`, as text.
pub fn strings(batches: &[RecordBatch], column: &str) -> Vec<Option<String>> {
    use arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for b in batches {
        let Some(c) = b.column_by_name(column) else {
            continue;
        };
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).expect("as text");
        let c = c.as_string::<i32>();
        out.extend((0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i).to_string())));
    }
    out
}

/// Checks that `result` is a refusal with `code` whose message contains `says`.
pub fn refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    says: &str,
) -> Result<(), String> {
    match result {
        Ok(v) => Err(format!("expected {code:?} ({says}), got an answer: {v:?}")
            .chars()
            .take(600)
            .collect()),
        Err(s) if s.code() == code && s.message().contains(says) => Ok(()),
        Err(s) => Err(format!(
            "expected {code:?} saying '{says}', got {:?}: {}",
            s.code(),
            s.message()
        )),
    }
}

/// `Err(message)` unless `cond`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// The attack cases of one run: each is checked and recorded, and a failure does not stop the
/// others; [`Cases::finish`] prints them all and fails if any failed.
#[derive(Default)]
pub struct Cases {
    results: Vec<(String, Result<(), String>)>,
}

impl Cases {
    /// Runs one case.
    pub async fn check<F>(&mut self, name: impl Into<String>, case: F)
    where
        F: Future<Output = Result<(), String>>,
    {
        let name = name.into();
        let result = case.await;
        match &result {
            Ok(()) => eprintln!("  pass  {name}"),
            Err(e) => eprintln!("  FAIL  {name}: {e}"),
        }
        self.results.push((name, result));
    }

    /// Prints the summary; panics if any case failed.
    pub fn finish(self, suite: &str) {
        let failed: Vec<&(String, Result<(), String>)> =
            self.results.iter().filter(|(_, r)| r.is_err()).collect();
        eprintln!(
            "{suite}: {} cases, {} passed, {} failed",
            self.results.len(),
            self.results.len() - failed.len(),
            failed.len()
        );
        assert!(
            failed.is_empty(),
            "{suite}: failed cases:\n{}",
            failed
                .iter()
                .map(|(n, r)| format!("- {n}: {}", r.as_ref().err().map_or("", |e| e)))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
