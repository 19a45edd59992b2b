//! SQL on a real 3-node TLS cluster (Flight SQL on every node's port, DataFusion over the
//! cluster's scans): answers against the generator's oracle and the native aggregates, time
//! views, the refusals of the access rules and of anything but a query, the audit of SQL reads,
//! and an ADBC client from Python (installed by `.ci/run`; under CI its absence fails the test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use common::{Table, available, expect, python};
use std::collections::BTreeMap;
use std::path::Path;
use sus_client::cluster::UserInfo;
use sus_client::query::build;
use sus_client::{Client, Error, ReadFrom};
use sus_proto::v1::Tier;

const PASSWORD: &str = "sql-test-password-1";

async fn sql(client: &Client, statement: &str) -> Vec<RecordBatch> {
    client
        .sql(statement)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
}

async fn sql_err(client: &Client, statement: &str) -> Error {
    match client.sql(statement).await {
        Err(e) => e,
        Ok(stream) => stream
            .collect()
            .await
            .err()
            .unwrap_or_else(|| panic!("{statement} was answered")),
    }
}

/// `keys` text columns (null as "") then integer columns, as the oracle's tables hold them
/// (count, price; the rest zero).
fn rows(batches: &[RecordBatch], keys: usize) -> Table {
    let mut out = Table::new();
    for b in batches {
        for row in 0..b.num_rows() {
            let key = (0..keys)
                .map(|c| {
                    let col = arrow::compute::cast(b.column(c), &arrow::datatypes::DataType::Utf8)
                        .unwrap();
                    let col = col.as_string::<i32>();
                    if col.is_valid(row) {
                        col.value(row).to_string()
                    } else {
                        String::new()
                    }
                })
                .collect();
            let mut v = [0i64; 4];
            for (i, c) in (keys..b.num_columns()).enumerate() {
                let col =
                    arrow::compute::cast(b.column(c), &arrow::datatypes::DataType::Int64).unwrap();
                let col = col.as_primitive::<Int64Type>();
                v[i] = if col.is_valid(row) { col.value(row) } else { 0 };
            }
            out.insert(key, v);
        }
    }
    out
}

/// The oracle's table with only count and price kept.
fn count_and_price(t: Table) -> Table {
    t.into_iter()
        .map(|(k, v)| (k, [v[0], v[1], 0, 0]))
        .collect()
}

fn has_adbc() -> bool {
    common::python_has("adbc_driver_flightsql.dbapi, pyarrow")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_answers_match_the_oracle_and_the_native_calls() {
    let (cluster, out, summary) = common::cluster_with_data(3_000, 23, 300).await;
    let admin = cluster.client(&[1, 2, 3]);
    for s in &summary.expected.submissions {
        admin.submit_file(&out.join(&s.file)).await.unwrap();
    }
    let live = common::read_live(&out.join("oracle/live.csv"));

    // National totals of each table, against the oracle row by row: pushed down to the nodes'
    // aggregates, and (`price + 0`, an expression) summed here over their scans.
    for ds in ["apc", "op", "ec"] {
        let want = count_and_price(expect(&live, |r| (r.dataset == ds).then(Vec::new)));
        for sum in ["sum(price)", "sum(price + 0)"] {
            let got = rows(
                &sql(&admin, &format!("SELECT count(*), {sum} FROM {ds}")).await,
                0,
            );
            assert_eq!(got, want, "{ds}, {sum}");
        }
    }
    // Grouped and filtered (pushed down: the filters are ones the nodes apply exactly).
    let got = rows(
        &sql(
            &admin,
            "SELECT pod, count(*) AS n, sum(price) AS pence FROM apc \
             WHERE pod IN ('EL', 'NEL', 'DC') AND price >= 1 GROUP BY pod",
        )
        .await,
        1,
    );
    let want = count_and_price(expect(&live, |r| {
        (r.dataset == "apc" && ["EL", "NEL", "DC"].contains(&r.pod.as_str()) && r.price >= 1)
            .then(|| vec![r.pod.clone()])
    }));
    assert_eq!(got, want);
    let got = rows(
        &sql(
            &admin,
            "SELECT commissioner_code, count(*), sum(price) FROM ec GROUP BY 1",
        )
        .await,
        1,
    );
    let want = count_and_price(expect(&live, |r| {
        (r.dataset == "ec").then(|| vec![r.commissioner.clone()])
    }));
    assert_eq!(got, want);

    // Q3 of the benchmark in SQL equals the native aggregate.
    let mut by_provider: BTreeMap<&str, usize> = BTreeMap::new();
    for r in live.iter().filter(|r| r.dataset == "op") {
        *by_provider.entry(r.provider.as_str()).or_default() += 1;
    }
    let provider = by_provider
        .iter()
        .max_by_key(|(_, n)| **n)
        .unwrap()
        .0
        .to_string();
    let native = sus_client::Aggregation::new("op")
        .filter(build::eq("provider_code", &provider))
        .filter(build::range("activity_date", "2024-04-01", "2024-09-30"))
        .group_by(["treatment_function_code"])
        .count()
        .sum("price");
    let native = admin.aggregate(native, ReadFrom::Leader).await.unwrap();
    let got = rows(
        &sql(
            &admin,
            &format!(
                "SELECT treatment_function_code, count(*), sum(price) FROM op \
                 WHERE provider_code = '{provider}' \
                 AND activity_date BETWEEN DATE '2024-04-01' AND DATE '2024-09-30' GROUP BY 1"
            ),
        )
        .await,
        1,
    );
    assert_eq!(got, rows(&[native.batch], 1));
    assert!(
        !got.is_empty(),
        "the provider has outpatient activity in the period"
    );

    // A frozen view reads what the freeze point froze, after later changes too.
    admin.create_freeze("sql-test").await.unwrap();
    let frozen = rows(
        &sql(&admin, "SELECT count(*), sum(price) FROM op_at('sql-test')").await,
        0,
    );
    assert_eq!(
        frozen,
        count_and_price(expect(&live, |r| (r.dataset == "op").then(Vec::new)))
    );
    let e = sql_err(&admin, "SELECT count(*) FROM op_at('no-such-point')").await;
    assert!(e.to_string().contains("no-such-point"), "{e}");

    // Anything but a query is refused, naming why.
    for statement in [
        "DROP TABLE op",
        "INSERT INTO op SELECT * FROM op",
        "SET x = 1",
    ] {
        let e = sql_err(&admin, statement).await;
        assert!(matches!(e, Error::Refused(_)), "{statement}: {e:?}");
    }
    let e = sql_err(&admin, "SELECT no_such_column FROM op").await;
    assert!(e.to_string().contains("no_such_column"), "{e}");

    // Access: the node applies the caller's tier and scope inside the scans.
    let mut tokens = BTreeMap::new();
    for (name, role, org, tier) in [
        ("nat", "national", "X26", Tier::Pseudonymised),
        ("anon", "national", "X26", Tier::Anonymised),
        ("prov", "provider", provider.as_str(), Tier::Identifiable),
    ] {
        admin
            .add_user(
                UserInfo {
                    name: name.into(),
                    role: role.into(),
                    org: org.into(),
                    max_tier: tier as i32,
                    ..Default::default()
                },
                PASSWORD,
            )
            .await
            .unwrap();
        let reply = cluster
            .client_as(&[1, 2, 3], Default::default(), None)
            .login(name, PASSWORD, "sql test", 0)
            .await
            .unwrap();
        tokens.insert(name, reply.token);
    }
    let as_user =
        |name: &str| cluster.client_as(&[2], Default::default(), Some(tokens[name].clone()));
    // Pseudonymised: NHS numbers arrive as pseudonyms, and a filter on one is applied to the
    // pseudonyms (not sent to the nodes as a raw value).
    let nat = as_user("nat");
    let numbers = sql(
        &nat,
        "SELECT nhs_number FROM apc WHERE nhs_number IS NOT NULL LIMIT 50",
    )
    .await;
    let first = numbers[0].column(0).as_string::<i32>().value(0).to_string();
    assert_eq!(first.len(), 32, "a pseudonym, not an NHS number: {first}");
    let one = rows(
        &sql(
            &nat,
            &format!("SELECT count(*) FROM apc WHERE nhs_number = '{first}'"),
        )
        .await,
        0,
    );
    assert!(
        one[&Vec::<String>::new()][0] >= 1,
        "the pseudonym filter found its rows"
    );
    // Scope: a provider reads only its own rows, whatever the statement says.
    let prov = as_user("prov");
    let providers = rows(
        &sql(&prov, "SELECT provider_code, count(*) FROM op GROUP BY 1").await,
        1,
    );
    assert_eq!(
        providers.keys().cloned().collect::<Vec<_>>(),
        vec![vec![provider.clone()]]
    );
    // Anonymised: no record-level read, so no SQL over rows.
    let e = sql_err(
        &as_user("anon"),
        "SELECT provider_code, price FROM apc LIMIT 5",
    )
    .await;
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    // No token, or a forged one.
    let e = sql_err(
        &cluster.client_as(&[1], Default::default(), None),
        "SELECT 1",
    )
    .await;
    assert!(matches!(e, Error::Unauthenticated(_)), "{e:?}");
    let e = sql_err(
        &cluster.client_as(&[1], Default::default(), Some("a.b.c".into())),
        "SELECT count(*) FROM op",
    )
    .await;
    assert!(matches!(e, Error::Unauthenticated(_)), "{e:?}");

    // Every SQL read is audited: scans as extracts on the nodes that read them, pushed-down
    // aggregates as the native aggregate they are.
    let log = admin.audit_log(0, 0).await.unwrap();
    let by = |user: &str, action: &str| {
        log.entries
            .iter()
            .any(|e| e.record.user == user && e.record.action == action)
    };
    assert!(
        by("nat", "sql"),
        "the analyst's SQL scans are on the audit log"
    );
    assert!(
        by("prov", "aggregate"),
        "the provider's grouped SQL is on the audit log"
    );

    // ADBC from Python, over TLS with users' passwords.
    if available("Python 3 with adbc-driver-flightsql", has_adbc()) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/adbc_sql.py");
        let received = out.join("adbc-pseudonymised.arrows");
        let run = tokio::process::Command::new(python())
            .arg(&script)
            .arg(&cluster.nodes[&3].addr)
            .arg(&cluster.certs.ca)
            .args([PASSWORD, "prov", "nat", "anon", "sql-test"])
            .arg(&received)
            .output()
            .await
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        let tables: Vec<&String> = got["tables"].as_object().unwrap().keys().collect();
        assert_eq!(tables, ["sus.public.apc", "sus.public.ec", "sus.public.op"]);
        let columns = got["op_columns"].as_array().unwrap();
        assert!(
            columns.iter().any(|c| c == "price") && columns.iter().any(|c| c == "activity_month")
        );
        // The provider's own rows, now and at the freeze point (nothing changed since).
        let mine = count_and_price(expect(&live, |r| {
            (r.dataset == "op" && r.provider == provider).then(Vec::new)
        }));
        let mine = mine[&Vec::<String>::new()];
        let op = &got["op"][0];
        assert_eq!(
            [op["n"].as_i64().unwrap(), op["pence"].as_i64().unwrap()],
            [mine[0], mine[1]],
            "{got}"
        );
        assert_eq!(got["op_frozen"][0]["n"].as_i64(), Some(mine[0]), "{got}");
        assert!(
            got["refused_drop"].as_str().is_some(),
            "DROP was answered: {got}"
        );
        // Pseudonymised rows: no clear identifier in any byte received (NHS numbers, local
        // patient ids, record keys), and postcodes reduced to their sectors.
        assert!(got["pseudonymised"]["rows"].as_u64().unwrap() > 0, "{got}");
        let bytes = std::fs::read(&received).unwrap();
        let mut identifiers = 0;
        let mut postcodes = std::collections::HashSet::new();
        for s in &summary.expected.submissions {
            let mut r = csv::Reader::from_path(out.join(&s.file)).unwrap();
            let header = r.headers().unwrap().clone();
            let col = |name: &str| header.iter().position(|h| h == name);
            let ids: Vec<usize> = ["nhs_number", "local_patient_id", "cds_unique_id"]
                .iter()
                .filter_map(|c| col(c))
                .collect();
            let postcode = col("postcode");
            for rec in r.records() {
                let rec = rec.unwrap();
                for &c in &ids {
                    let v = &rec[c];
                    if v.len() >= 8 {
                        identifiers += 1;
                        assert!(
                            !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
                            "the clear identifier {v} reached the pseudonymised client"
                        );
                    }
                }
                if let Some(p) = postcode
                    .map(|c| rec[c].to_string())
                    .filter(|p| p.len() >= 6)
                {
                    postcodes.insert(p);
                }
            }
        }
        assert!(
            identifiers > 1_000,
            "identifiers searched for: {identifiers}"
        );
        let reader = arrow::ipc::reader::StreamReader::try_new(
            std::fs::File::open(&received).unwrap(),
            None,
        )
        .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let sent = arrow::compute::cast(
                batch.column_by_name("postcode").unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            for p in sent.as_string::<i32>().iter().flatten() {
                assert!(
                    !postcodes.contains(p),
                    "the full postcode {p} reached the client"
                );
            }
        }
        // Anonymised: the disclosure control's table (text; counts rounded to 5 or suppressed).
        let table = got["anonymised"].as_array().unwrap();
        assert!(
            table.iter().any(|r| r["commissioner_code"] == "TOTAL"),
            "{got}"
        );
        for r in table {
            let n = r["activity"].as_str().unwrap();
            assert!(
                n == "*" || n.parse::<u64>().is_ok_and(|n| n % 5 == 0),
                "count {n}: {got}"
            );
        }
        let e = got["refused_anonymised"].as_str().unwrap_or_default();
        assert!(
            e.contains("PermissionDenied")
                || e.contains("PERMISSION_DENIED")
                || e.contains("Unauthorized"),
            "the refusal keeps its code: {e}"
        );
        assert!(
            e.contains("anonymised tier") && !e.contains("mismatch"),
            "a readable refusal: {e}"
        );
    }
}
