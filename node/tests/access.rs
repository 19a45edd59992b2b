//! Access control on a real 3-node TLS cluster, calling the gRPC and Flight endpoints directly:
//! missing, expired, tampered, forged and revoked tokens; a provider submitting for another
//! sender; tier escalation; provider, commissioner and anonymised scopes, each refused or
//! answered with exactly the rows recomputed from the generator's files; pseudonymised extracts
//! scanned byte by byte for real NHS numbers and postcodes; pseudonyms linking within one
//! organisation only; disclosure-controlled cells; and the audit log's entries and hash chain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arrow::array::{Array, AsArray, RecordBatch};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use sus_chaos_tests::cluster::TestCluster;
use sus_client::cluster::UserInfo;
use sus_proto::WIRE_FORMAT_VERSION;
use sus_proto::partial::ipc_to_batch;
use sus_proto::v1::{self, Tier};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const PASSWORD: &str = "a-long-test-password";

async fn channel(cluster: &TestCluster, node: u64) -> Channel {
    let ca = std::fs::read(&cluster.certs.ca).unwrap();
    Endpoint::from_shared(format!("https://{}", cluster.nodes[&node].addr))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

fn spec(dataset: &str, group_by: &[&str], filters: Vec<v1::Filter>, tier: Tier) -> v1::QuerySpec {
    v1::QuerySpec {
        dataset: dataset.into(),
        filters,
        group_by: group_by.iter().map(|s| s.to_string()).collect(),
        aggregates: vec![
            v1::Aggregate {
                func: v1::aggregate::Func::Count as i32,
                field: String::new(),
                name: "count".into(),
            },
            v1::Aggregate {
                func: v1::aggregate::Func::Sum as i32,
                field: "price".into(),
                name: "sum_price".into(),
            },
        ],
        tier: tier as i32,
        ..Default::default()
    }
}

fn eq(field: &str, value: &str) -> v1::Filter {
    v1::Filter {
        field: field.into(),
        op: v1::filter::Op::Eq as i32,
        values: vec![value.into()],
        ..Default::default()
    }
}

/// Calls Query.Aggregate on one node for every shard.
async fn aggregate(
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
    v1::query_client::QueryClient::new(ch.clone())
        .aggregate(with_token(request, token))
        .await
        .map(|r| r.into_inner())
}

/// Scans every shard (each on its leader) with Query.Scan: the raw bytes received and the batches.
async fn scan(
    cluster: &TestCluster,
    token: &str,
    dataset: &str,
    filters: Vec<v1::Filter>,
    tier: Tier,
) -> Result<(Vec<u8>, Vec<RecordBatch>), tonic::Status> {
    let mut bytes = Vec::new();
    let mut batches = Vec::new();
    for shard in 0..4u32 {
        let leader = cluster.leader_of(u64::from(shard) + 1).await.unwrap();
        let mut c = v1::query_client::QueryClient::new(channel(cluster, leader).await)
            .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES);
        let request = v1::ScanRequest {
            format: WIRE_FORMAT_VERSION,
            dataset: dataset.into(),
            filters: filters.clone(),
            columns: Vec::new(),
            view: None,
            shards: vec![shard],
            linearizable: true,
            tier: tier as i32,
        };
        let mut stream = c.scan(with_token(request, Some(token))).await?.into_inner();
        while let Some(chunk) = stream.message().await? {
            bytes.extend_from_slice(&chunk.ipc);
            batches.push(ipc_to_batch(&chunk.ipc).unwrap());
        }
    }
    Ok((bytes, batches))
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in batches {
        let c = arrow::compute::cast(
            b.column_by_name(column).unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let c = c.as_string::<i32>();
        out.extend((0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i).to_string())));
    }
    out
}

/// The oracle's live records: (dataset, id, provider, commissioner, price).
type LiveRow = (String, String, String, String, i64);

fn live(path: &Path) -> Vec<LiveRow> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (
                rec[0].to_string(),
                rec[1].to_string(),
                rec[2].to_string(),
                rec[3].to_string(),
                rec[8].parse().unwrap(),
            )
        })
        .collect()
}

/// The HES rule for a table grouped by one key, as docs/access.md states it, written
/// independently of the node's code: counts 1-7 are `*`, others rounded to the nearest 5; a
/// sum is shown only where its count is, to 2 significant figures (halves away from zero); the
/// TOTAL comes from exact values; one suppressed cell takes the next smallest with it, and more
/// are taken while the exact total and the shown cells' least values would pin the hidden ones.
fn controlled(cells: &[(String, i64, i64)]) -> Vec<(String, String, String)> {
    let round5 = |v: i64| (v + 2) / 5 * 5;
    let sig2 = |v: i64| {
        let digits = v.abs().to_string().len() as u32;
        if digits <= 2 {
            return v;
        }
        let p = 10i64.pow(digits - 2);
        (v.abs() + p / 2) / p * p * v.signum()
    };
    let mut hidden: Vec<bool> = cells.iter().map(|c| (1..=7).contains(&c.1)).collect();
    loop {
        let n = hidden.iter().filter(|h| **h).count();
        let total: i64 = cells.iter().map(|c| c.1).sum();
        let shown_least: i64 = cells
            .iter()
            .zip(&hidden)
            .filter(|(c, h)| !**h && c.1 > 0)
            .map(|(c, _)| (round5(c.1) - 2).max(8))
            .sum();
        let pinned = n == 1 || (n > 1 && total - shown_least <= n as i64);
        let next = (0..cells.len())
            .filter(|&i| !hidden[i] && cells[i].1 > 0)
            .min_by_key(|&i| (cells[i].1, i));
        match next {
            Some(i) if pinned && cells.len() > 1 => hidden[i] = true,
            _ => break,
        }
    }
    let show = |n: i64, s: i64, hide: bool| {
        if hide {
            ("*".to_string(), "*".to_string())
        } else {
            (round5(n).to_string(), sig2(s).to_string())
        }
    };
    let mut out: Vec<(String, String, String)> = cells
        .iter()
        .zip(&hidden)
        .map(|(c, h)| {
            let (n, s) = show(c.1, c.2, *h);
            (c.0.clone(), n, s)
        })
        .collect();
    let (n, s) = cells.iter().fold((0, 0), |a, c| (a.0 + c.1, a.1 + c.2));
    let (n, s) = show(n, s, (1..=7).contains(&n));
    out.push(("TOTAL".into(), n, s));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_is_enforced_by_the_node() {
    let (cluster, out, summary) = common::cluster_with_data(3_000, 5, 500).await;
    let admin = cluster.client(&[1, 2, 3]);
    let mut nhs_numbers = BTreeSet::new();
    let mut postcodes = BTreeSet::new();
    for s in &summary.expected.submissions {
        let file = out.join(&s.file);
        admin.submit_file(&file).await.unwrap();
        let mut r = csv::Reader::from_path(&file).unwrap();
        let header = r.headers().unwrap().clone();
        let col = |name: &str| header.iter().position(|h| h == name);
        let (nhs, pc) = (col("nhs_number"), col("postcode"));
        for rec in r.records() {
            let rec = rec.unwrap();
            if let Some(n) = nhs.map(|i| rec[i].to_string()).filter(|n| n.len() == 10) {
                nhs_numbers.insert(n);
            }
            if let Some(p) = pc.map(|i| rec[i].to_string()).filter(|p| p.len() >= 6) {
                postcodes.insert(p);
            }
        }
    }
    assert!(nhs_numbers.len() > 100 && postcodes.len() > 100);
    let live = live(&out.join("oracle/live.csv"));
    let busiest = |key: &dyn Fn(&LiveRow) -> &String| {
        let mut n: BTreeMap<&String, usize> = BTreeMap::new();
        for r in live.iter().filter(|r| r.0 == "apc") {
            *n.entry(key(r)).or_default() += 1;
        }
        let mut v: Vec<_> = n.into_iter().collect();
        v.sort_by_key(|(k, n)| (std::cmp::Reverse(*n), (*k).clone()));
        v.into_iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    };
    let providers = busiest(&|r| &r.2);
    let commissioners = busiest(&|r| &r.3);
    let (p, q, c) = (&providers[0], &providers[1], &commissioners[0]);

    // Users of each role, and their tokens.
    let users: [(&str, &str, &str, Tier); 7] = [
        ("prov", "provider", p, Tier::Identifiable),
        ("comm", "commissioner", c, Tier::Pseudonymised),
        ("nat1", "national", "X26", Tier::Pseudonymised),
        ("nat2", "national", "X24", Tier::Pseudonymised),
        ("anon", "national", "X26", Tier::Anonymised),
        ("anonc", "commissioner", c, Tier::Anonymised),
        ("aud", "auditor", "", Tier::Anonymised),
    ];
    let mut token = BTreeMap::new();
    for (name, role, org, tier) in users {
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
        let me = cluster.client_as(&[1, 2, 3], Default::default(), None);
        let reply = me.login(name, PASSWORD, "access test", 0).await.unwrap();
        token.insert(name, reply.token);
    }
    let t = |name: &str| Some(token[name].as_str());
    let ch = channel(&cluster, 1).await;
    let national = spec("apc", &[], Vec::new(), Tier::Unspecified);

    // No token, a tampered one, a forged one.
    let e = aggregate(&ch, None, national.clone(), false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let parts: Vec<&str> = token["comm"].split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = "nat1".into();
    claims["tier"] = "Identifiable".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    let e = aggregate(&ch, Some(&tampered), national.clone(), false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("signature"), "{e:?}");
    let forged_claims: sus_node::access::token::Claims = serde_json::from_value(claims).unwrap();
    let forged = sus_node::access::token::sign(&[9u8; 32], &forged_claims);
    let e = aggregate(&ch, Some(&forged), national.clone(), false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // An expired token: it works until its second is over, then never again.
    let short = cluster.client_as(&[1], Default::default(), None);
    let short = short
        .login("prov", PASSWORD, "expiry test", 1)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let e = loop {
        match aggregate(&ch, Some(&short.token), national.clone(), false).await {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the token never expired"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("expired"), "{e:?}");

    // A revoked user.
    admin
        .add_user(
            UserInfo {
                name: "leaver".into(),
                role: "national".into(),
                org: "X26".into(),
                ..Default::default()
            },
            PASSWORD,
        )
        .await
        .unwrap();
    let leaver = cluster.client_as(&[1], Default::default(), None);
    let leaver_token = leaver
        .login("leaver", PASSWORD, "t", 0)
        .await
        .unwrap()
        .token;
    aggregate(&ch, Some(&leaver_token), national.clone(), false)
        .await
        .unwrap();
    admin.revoke_user("leaver").await.unwrap();
    let ch2 = channel(&cluster, 2).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let e = loop {
        // Every node refuses it once it has applied the revocation.
        match aggregate(&ch2, Some(&leaver_token), national.clone(), false).await {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "revocation never applied"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("revoked"), "{e:?}");

    // Wrong organisation: a provider submitting another sender's file.
    let foreign = summary
        .expected
        .submissions
        .iter()
        .find(|s| &s.sender != p)
        .unwrap();
    let file = out.join(&foreign.file);
    let submit = v1::SubmitRequest {
        format: WIRE_FORMAT_VERSION,
        envelope_json: std::fs::read_to_string(format!("{}.meta.json", file.display())).unwrap(),
        file_name: foreign.file.clone(),
        content: std::fs::read(&file).unwrap().into(),
        forwarded: false,
    };
    let e = v1::ingest_client::IngestClient::new(ch.clone())
        .max_encoding_message_size(sus_proto::MAX_MESSAGE_BYTES)
        .submit(with_token(submit, t("prov")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Tier escalation.
    let e = aggregate(
        &ch,
        t("comm"),
        spec("apc", &[], Vec::new(), Tier::Identifiable),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A provider: another provider's rows are refused; its own are exactly the oracle's.
    let e = scan(
        &cluster,
        &token["prov"],
        "apc",
        vec![eq("provider_code", q)],
        Tier::Unspecified,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains(q.as_str()), "{e:?}");
    let (_, own) = scan(
        &cluster,
        &token["prov"],
        "apc",
        Vec::new(),
        Tier::Unspecified,
    )
    .await
    .unwrap();
    let got: BTreeSet<String> = strings(&own, "cds_unique_id")
        .into_iter()
        .flatten()
        .collect();
    let want: BTreeSet<String> = live
        .iter()
        .filter(|r| r.0 == "apc" && &r.2 == p)
        .map(|r| r.1.clone())
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want, "a provider reads exactly its own rows");

    // A commissioner filtering on a provider: only the rows it commissions there.
    let reply = aggregate(
        &ch,
        t("comm"),
        spec("apc", &[], vec![eq("provider_code", q)], Tier::Unspecified),
        true,
    )
    .await
    .unwrap();
    let table = ipc_to_batch(&reply.table).unwrap();
    let count = table
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>();
    let want = live
        .iter()
        .filter(|r| r.0 == "apc" && &r.2 == q && &r.3 == c)
        .count() as i64;
    let got = if count.is_empty() || count.is_null(0) {
        0
    } else {
        count.value(0)
    };
    assert_eq!(got, want, "commissioner {c} at provider {q}");

    // Anonymised callers: no rows, no partial states; finished tables are controlled.
    let e = scan(
        &cluster,
        &token["anon"],
        "apc",
        Vec::new(),
        Tier::Unspecified,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = aggregate(&ch, t("anonc"), national.clone(), false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let reply = aggregate(
        &ch,
        t("anonc"),
        spec("apc", &["provider_code"], Vec::new(), Tier::Unspecified),
        true,
    )
    .await
    .unwrap();
    let table = ipc_to_batch(&reply.table).unwrap();
    let mut raw: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in live.iter().filter(|r| r.0 == "apc" && &r.3 == c) {
        let e = raw.entry(r.2.clone()).or_default();
        e.0 += 1;
        e.1 += r.4;
    }
    let cells: Vec<(String, i64, i64)> = raw.iter().map(|(k, v)| (k.clone(), v.0, v.1)).collect();
    let want = controlled(&cells);
    let keys = strings(std::slice::from_ref(&table), "provider_code");
    let counts = strings(std::slice::from_ref(&table), "count");
    let sums = strings(std::slice::from_ref(&table), "sum_price");
    let got: Vec<(String, String, String)> = (0..table.num_rows())
        .map(|i| {
            (
                keys[i].clone().unwrap(),
                counts[i].clone().unwrap(),
                sums[i].clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want, "disclosure-controlled cells");
    assert!(
        got.iter().any(|(_, n, _)| n == "*") || raw.values().all(|(n, _)| *n > 7),
        "the data set exercises suppression"
    );

    // The typed client asks the same way by itself (the token's tier is anonymised).
    let anonc = cluster.client_as(&[1, 2, 3], Default::default(), Some(token["anonc"].clone()));
    let typed = anonc
        .aggregate(
            sus_client::Aggregation::new("apc")
                .group_by(["provider_code"])
                .count()
                .sum("price"),
            sus_client::ReadFrom::Leader,
        )
        .await
        .unwrap();
    assert_eq!(
        typed.batch, table,
        "the client's anonymised read is the node's finished table"
    );

    // Anonymised over Flight: refused.
    let mut flight = arrow_flight::FlightClient::new(ch.clone());
    flight
        .add_header("authorization", &format!("Bearer {}", token["anon"]))
        .unwrap();
    let e = flight
        .get_flight_info(arrow_flight::FlightDescriptor::new_path(vec!["apc".into()]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("aggregates only"), "{e}");

    // Flight without a token is refused; the handshake (Basic, unpadded as ADBC sends it)
    // answers a bearer token that reads.
    let e = arrow_flight::FlightClient::new(ch.clone())
        .get_flight_info(arrow_flight::FlightDescriptor::new_path(vec!["apc".into()]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no bearer token"), "{e}");
    let mut raw = arrow_flight::flight_service_client::FlightServiceClient::new(ch.clone());
    let mut hs = tonic::Request::new(futures::stream::iter(vec![
        arrow_flight::HandshakeRequest::default(),
    ]));
    let basic = base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!("nat1:{PASSWORD}"));
    hs.metadata_mut()
        .insert("authorization", format!("Basic {basic}").parse().unwrap());
    let reply = raw.handshake(hs).await.unwrap();
    let bearer = reply
        .metadata()
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap();
    let mut flight = arrow_flight::FlightClient::new(ch.clone());
    flight.add_header("authorization", bearer).unwrap();
    let info = flight
        .get_flight_info(arrow_flight::FlightDescriptor::new_path(vec!["op".into()]))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 4, "one endpoint per shard");
    let mut wrong = tonic::Request::new(futures::stream::iter(vec![
        arrow_flight::HandshakeRequest::default(),
    ]));
    let basic = base64::engine::general_purpose::STANDARD.encode("nat1:wrong-password");
    wrong
        .metadata_mut()
        .insert("authorization", format!("Basic {basic}").parse().unwrap());
    let e = raw.handshake(wrong).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // A shared service sees the rows of the organisations that delegated to it: here provider
    // `q` and commissioner `c`.
    admin
        .add_user(
            UserInfo {
                name: "csu".into(),
                role: "shared".into(),
                org: "0DF".into(),
                delegated: vec![q.clone(), c.clone()],
                max_tier: Tier::Pseudonymised as i32,
                ..Default::default()
            },
            PASSWORD,
        )
        .await
        .unwrap();
    let csu = cluster.client_as(&[1], Default::default(), None);
    let csu = csu
        .login("csu", PASSWORD, "access test", 0)
        .await
        .unwrap()
        .token;
    let (_, rows) = scan(&cluster, &csu, "apc", Vec::new(), Tier::Unspecified)
        .await
        .unwrap();
    let want = live
        .iter()
        .filter(|r| r.0 == "apc" && (&r.2 == q || &r.3 == c))
        .count();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), want);

    // Pseudonymised extracts carry no NHS number or full postcode, over gRPC and Flight.
    let (identifiable_bytes, _) = scan(
        &cluster,
        cluster.token.as_ref().unwrap(),
        "apc",
        Vec::new(),
        Tier::Identifiable,
    )
    .await
    .unwrap();
    let contains =
        |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        nhs_numbers
            .iter()
            .take(50)
            .any(|n| contains(&identifiable_bytes, n)),
        "the check can fail: identifiable extracts do carry NHS numbers"
    );
    // Scans of an unchanged store come in the same order: row i of a pseudonymised scan is row i
    // of the identifiable one.
    let mut received = Vec::new();
    let mut cells = Vec::new();
    let mut pseudonyms: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for dataset in ["apc", "op", "ec"] {
        let admin_token = cluster.token.clone().unwrap();
        let (_, clear) = scan(
            &cluster,
            &admin_token,
            dataset,
            Vec::new(),
            Tier::Identifiable,
        )
        .await
        .unwrap();
        let real = strings(&clear, "nhs_number");
        for user in ["nat1", "nat2"] {
            let (bytes, batches) = scan(
                &cluster,
                &token[user],
                dataset,
                Vec::new(),
                Tier::Unspecified,
            )
            .await
            .unwrap();
            received.extend(bytes);
            let ps = strings(&batches, "nhs_number");
            cells.extend(batches);
            assert_eq!(ps.len(), real.len());
            for (real, ps) in real.iter().zip(ps) {
                if let (Some(real), Some(ps)) = (real, ps) {
                    pseudonyms.entry(user).or_default().push((real.clone(), ps));
                }
            }
        }
    }
    let mut flight = arrow_flight::FlightClient::new(ch.clone());
    flight
        .add_header("authorization", &format!("Bearer {}", token["nat1"]))
        .unwrap();
    let info = flight
        .get_flight_info(arrow_flight::FlightDescriptor::new_path(vec!["apc".into()]))
        .await
        .unwrap();
    for endpoint in info.endpoint {
        use futures::TryStreamExt;
        let data: Vec<arrow_flight::decode::DecodedFlightData> = flight
            .do_get(endpoint.ticket.unwrap())
            .await
            .unwrap()
            .into_inner()
            .try_collect()
            .await
            .unwrap();
        for d in data {
            received.extend_from_slice(&d.inner.data_header);
            received.extend_from_slice(&d.inner.data_body);
        }
    }
    // Every window of the received bytes, looked up among the data set's identifiers.
    let leaked = |hay: &[u8], needles: &BTreeSet<String>| -> Option<String> {
        let set: std::collections::HashSet<&[u8]> = needles.iter().map(|n| n.as_bytes()).collect();
        let lengths: BTreeSet<usize> = needles.iter().map(|n| n.len()).collect();
        lengths.into_iter().find_map(|len| {
            hay.windows(len)
                .find(|w| set.contains(w))
                .map(|w| String::from_utf8_lossy(w).into_owned())
        })
    };
    assert_eq!(
        leaked(&received, &nhs_numbers),
        None,
        "an NHS number reached a pseudonymised caller"
    );
    // Postcodes are checked cell by cell: Arrow concatenates a column's values, so a sector
    // (`YM15 1`) followed by one starting with the letters of its inward code (`UB7 8`) forms
    // `YM15 1UB` in the bytes without any cell holding it.
    for batch in &cells {
        for (i, field) in batch.schema().fields().iter().enumerate() {
            if !matches!(field.data_type(), arrow::datatypes::DataType::Utf8) {
                continue;
            }
            let col = batch.column(i).as_string::<i32>();
            for v in col.iter().flatten() {
                assert!(!postcodes.contains(v), "postcode {v} in {}", field.name());
                assert!(
                    !nhs_numbers.contains(v),
                    "NHS number {v} in {}",
                    field.name()
                );
            }
        }
    }
    // Within one organisation a patient has one pseudonym; across two, different ones.
    for user in ["nat1", "nat2"] {
        let mut by_patient: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for (real, ps) in &pseudonyms[user] {
            by_patient.entry(real).or_default().insert(ps);
        }
        assert!(by_patient.values().all(|p| p.len() == 1), "{user}");
        assert!(
            by_patient.len() < pseudonyms[user].len(),
            "some patients have several records"
        );
    }
    for ((r1, p1), (r2, p2)) in pseudonyms["nat1"].iter().zip(&pseudonyms["nat2"]) {
        assert_eq!(r1, r2);
        assert_ne!(p1, p2, "one patient, two organisations, one pseudonym");
    }

    // The audit log: roles, entries, and the hash chain.
    let e = cluster
        .client_as(&[1], Default::default(), Some(token["prov"].clone()))
        .audit_log(0, 0)
        .await
        .unwrap_err();
    assert!(matches!(e, sus_client::Error::PermissionDenied(_)), "{e}");
    let auditor = cluster.client_as(&[1, 2, 3], Default::default(), Some(token["aud"].clone()));
    let e = auditor
        .aggregate(&national, sus_client::ReadFrom::Leader)
        .await
        .unwrap_err();
    assert!(matches!(e, sus_client::Error::PermissionDenied(_)), "{e}");
    // Concurrent identifiable aggregates: each answer came after its read's record was committed
    // (the node's audit queue gathers them into shared meta entries), and a second record of each
    // read adds the rows it answered.
    let prov = cluster.client_as(&[1, 2, 3], Default::default(), Some(token["prov"].clone()));
    let by_month = || {
        sus_client::Aggregation::new("op")
            .group_by(["activity_month"])
            .count()
    };
    let reads: Vec<_> = (0..8)
        .map(|_| prov.aggregate(by_month(), sus_client::ReadFrom::Leader))
        .collect();
    for r in futures::future::join_all(reads).await {
        r.unwrap();
    }
    let aggregates = |log: &sus_client::cluster::AuditLog, what: &str| {
        log.entries
            .iter()
            .filter(|e| {
                e.record.user == "prov"
                    && e.record.action == "aggregate"
                    && e.record.detail.contains(what)
            })
            .count()
    };
    let log = auditor.audit_log(0, 0).await.unwrap();
    assert!(
        aggregates(&log, " started") >= 8,
        "every read recorded before its answer"
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let log = loop {
        let log = auditor.audit_log(0, 0).await.unwrap();
        if aggregates(&log, " answered: ") == aggregates(&log, " started") {
            break log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rows of every aggregate are recorded"
        );
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
        tick.tick().await;
        tick.tick().await;
    };
    log.verify().expect("the chain verifies");
    let of = |user: &str, action: &str| {
        log.entries
            .iter()
            .filter(|e| e.record.user == user && e.record.action == action)
            .collect::<Vec<_>>()
    };
    // Every submission is audited (a resend after an unknown outcome is audited again).
    assert!(of("admin", "submit").len() >= summary.expected.submissions.len());
    let own_scan: u64 = of("prov", "scan").iter().map(|e| e.record.rows).sum();
    assert_eq!(
        own_scan,
        own.iter().map(|b| b.num_rows() as u64).sum::<u64>()
    );
    let prov_scans = of("prov", "scan");
    assert!(prov_scans.iter().all(|e| e.record.tier == "identifiable"
        && e.record.org == *p
        && e.record.purpose == "access test"
        && e.record.filter.contains("provider_code in")));
    assert!(
        of("nat1", "scan")
            .iter()
            .all(|e| e.record.tier == "pseudonymised")
    );
    assert!(
        !of("nat1", "flight").is_empty(),
        "Flight extracts are audited"
    );
    assert!(
        of("anonc", "aggregate").is_empty(),
        "anonymised aggregates are not identifiable reads"
    );
    let mut altered = log.clone();
    let k = altered.entries.len() / 2;
    altered.entries[k].record.rows += 1;
    let broken = altered.verify().expect_err("an altered entry is detected");
    assert_eq!(broken.index, altered.entries[k].index);
}
