//! Pushed-down queries on a real 3-node cluster (4 shards of 2 replicas, so that every node lacks
//! some shard; `sus-node` processes over gRPC), against the oracle's live records recomputed row by row: national, per-provider,
//! per-commissioner and filtered aggregates, read from leaders and from any replica; distinct
//! patients across shards; a record-level scan, over gRPC and Arrow Flight; and a freeze point taken through the meta group
//! that keeps its answers through later replacements, deletions, Bulk Replacements and compaction.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arrow::array::{Array, AsArray};
use common::{Table, expected, queries, read_live, table};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use sus_client::query::build;
use sus_client::{Client, ReadFrom, ScanSpec};
use sus_proto::v1;

async fn run(client: &Client, spec: &v1::QuerySpec, read: ReadFrom) -> Table {
    let r = client.aggregate(spec, read).await.expect("aggregate");
    assert_eq!(r.versions.len(), 4, "every shard answered once");
    table(&r.batch, spec.group_by.len())
}

fn frozen(spec: &v1::QuerySpec, name: &str) -> v1::QuerySpec {
    v1::QuerySpec {
        view: build::freeze(name),
        ..spec.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_down_aggregates_match_the_oracle_and_freeze_points_hold() {
    let (cluster, out, summary) = common::cluster_with_data(8_000, 21, 400).await;
    let files: Vec<PathBuf> = summary
        .expected
        .submissions
        .iter()
        .map(|s| out.join(&s.file))
        .collect();
    let client = cluster.client(&[1, 2, 3]);
    let half = files.len() / 2;
    for f in &files[..half] {
        client.submit_file(f).await.unwrap();
    }
    let queries = queries();

    // A freeze point through the meta group: one version per shard, listed afterwards.
    let point = client.create_freeze("2024-25 M06 recon").await.unwrap();
    assert_eq!(point.versions.len(), 4);
    let again = client.create_freeze("2024-25 M06 recon").await.unwrap();
    assert_eq!(
        again.versions, point.versions,
        "a freeze point is taken once"
    );
    let listed = client.freezes().await.unwrap();
    assert_eq!(
        listed.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["2024-25 M06 recon"]
    );
    let mut at_freeze = Vec::new();
    for q in &queries {
        at_freeze.push(run(&client, q, ReadFrom::Leader).await);
    }

    for f in &files[half..] {
        client.submit_file(f).await.unwrap();
    }
    let want = expected(&read_live(&out.join("oracle/live.csv")));
    for read in [ReadFrom::Leader, ReadFrom::AnyReplica] {
        for (q, want) in queries.iter().zip(&want) {
            // A follower may apply the last entries a moment after the leader acknowledged them.
            let mut got = run(&client, q, read).await;
            for _ in 0..50 {
                if &got == want {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                got = run(&client, q, read).await;
            }
            assert_eq!(&got, want, "{read:?}: {q:?}");
        }
    }
    for (q, at) in queries.iter().zip(&at_freeze) {
        let name = "2024-25 M06 recon";
        assert_eq!(
            &run(&client, &frozen(q, name), ReadFrom::AnyReplica).await,
            at
        );
    }
    assert_ne!(
        run(&client, &queries[1], ReadFrom::Leader).await,
        at_freeze[1]
    );

    // Distinct patients per provider: merged across shards exactly, checked against the rows a
    // record-level scan returns (patients are keyed by NHS number, else provider + local id).
    let mut patients: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut scanned = 0u64;
    let spec = ScanSpec {
        dataset: "op".into(),
        columns: vec![
            "provider_code".into(),
            "nhs_number".into(),
            "local_patient_id".into(),
        ],
        ..ScanSpec::default()
    };
    client
        .scan(&spec, ReadFrom::Leader, &mut |batch| {
            let provider =
                arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
            let provider = provider.as_string::<i32>();
            let nhs = batch.column(1).as_string::<i32>();
            let local = batch.column(2).as_string::<i32>();
            for row in 0..batch.num_rows() {
                scanned += 1;
                let key = if nhs.is_valid(row) {
                    format!("n{}", nhs.value(row))
                } else if local.is_valid(row) {
                    format!("l{}/{}", provider.value(row), local.value(row))
                } else {
                    continue;
                };
                patients
                    .entry(provider.value(row).to_string())
                    .or_default()
                    .insert(key.clone());
                patients.entry("*".into()).or_default().insert(key);
            }
            Ok(())
        })
        .await
        .unwrap();
    let op_live: i64 = want[1].values().map(|v| v[0]).sum();
    assert_eq!(
        scanned as i64, op_live,
        "the scan returns every live op record once"
    );
    let q = v1::QuerySpec {
        dataset: "op".into(),
        group_by: vec!["provider_code".into()],
        aggregates: vec![build::patients()],
        ..v1::QuerySpec::default()
    };
    let by_provider = client
        .aggregate(&q, ReadFrom::AnyReplica)
        .await
        .unwrap()
        .batch;
    for row in 0..by_provider.num_rows() {
        let p = by_provider.column(0).as_string::<i32>().value(row);
        let n = by_provider
            .column(1)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(row);
        assert_eq!(n as usize, patients[p].len(), "patients of {p}");
    }
    let national = client
        .aggregate(
            &v1::QuerySpec {
                group_by: vec![],
                ..q.clone()
            },
            ReadFrom::Leader,
        )
        .await
        .unwrap()
        .batch;
    let n = national
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    assert_eq!(n as usize, patients["*"].len(), "patients nationally");
    let by_provider_sum: i64 = (0..by_provider.num_rows())
        .map(|r| {
            by_provider
                .column(1)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(r)
        })
        .sum();
    let per_provider: usize = patients
        .iter()
        .filter(|(p, _)| *p != "*")
        .map(|(_, s)| s.len())
        .sum();
    assert_eq!(by_provider_sum as usize, per_provider);

    // The Monthly Trust Statement of the busiest provider-month, as the oracle's rows give it.
    let live = read_live(&out.join("oracle/live.csv"));
    let mut months: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &live {
        *months
            .entry((r.provider.clone(), r.month.clone()))
            .or_default() += 1;
    }
    let ((provider, month), _) = months.iter().max_by_key(|(_, n)| **n).unwrap();
    let statement =
        sus_client::report::trust_statement(&client, provider, month, None, ReadFrom::Leader)
            .await
            .unwrap();
    let mut want_statement = common::expect(&live, |r| {
        (&r.provider == provider && &r.month == month).then(|| {
            let hrg = if r.dataset == "apc" {
                &r.spell_hrg
            } else {
                &r.hrg
            };
            vec![
                r.commissioner.clone(),
                r.dataset.clone(),
                r.pod.clone(),
                hrg.clone(),
            ]
        })
    });
    let mut total = [0i64; 4];
    for v in want_statement.values() {
        for (t, x) in total.iter_mut().zip(v) {
            *t += x;
        }
    }
    want_statement.insert(
        vec!["TOTAL".into(), String::new(), String::new(), String::new()],
        total,
    );
    // Columns: commissioner, dataset, pod, hrg, activity, excess bed days, price, excluded.
    let got: Table = (0..statement.num_rows())
        .map(|r| {
            let t = |c: usize| statement.column(c).as_string::<i32>().value(r).to_string();
            let n = |c: usize| {
                statement
                    .column(c)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .value(r)
            };
            (vec![t(0), t(1), t(2), t(3)], [n(4), n(6), n(5), n(7)])
        })
        .collect();
    assert_eq!(got, want_statement, "trust statement of {provider} {month}");

    // Monthly Database Counts: records held as the oracle holds them, and the changes of the
    // period after the freeze point as the oracle counted them, submission by submission.
    let counts = sus_client::report::database_counts(
        &client,
        None,
        None,
        build::freeze("2024-25 M06 recon"),
        ReadFrom::Leader,
    )
    .await
    .unwrap();
    let col = |c: usize, r: usize| {
        counts
            .column(c)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(r)
    };
    let mut held = Table::new();
    let mut changes: BTreeMap<String, [i64; 5]> = BTreeMap::new();
    for r in 0..counts.num_rows() {
        let text = |c: usize| counts.column(c).as_string::<i32>().value(r).to_string();
        if text(1) == "op" && col(3, r) > 0 {
            held.insert(vec![text(0), text(2)], [col(3, r), 0, 0, 0]);
        }
        let c = changes.entry(text(1)).or_default();
        for (i, x) in c.iter_mut().enumerate() {
            *x += col(4 + i, r);
        }
    }
    let op_held: Table = want[1]
        .iter()
        .map(|(k, v)| (k.clone(), [v[0], 0, 0, 0]))
        .collect();
    assert_eq!(held, op_held, "records held per provider and month (op)");
    let mut oracle: BTreeMap<String, [i64; 5]> = BTreeMap::new();
    for s in &summary.expected.submissions[half..] {
        if s.outcome != "accepted" || s.duplicate_of.is_some() {
            continue;
        }
        let c = oracle.entry(s.dataset.clone()).or_default();
        for (x, n) in c
            .iter_mut()
            .zip([s.inserted, s.replaced, s.deleted, s.bulk_deleted, s.stale])
        {
            *x += n as i64;
        }
    }
    for (dataset, o) in &oracle {
        let got = changes.get(dataset).copied().unwrap_or_default();
        assert_eq!(
            got[..4],
            o[..4],
            "{dataset}: inserted, replaced, deleted, bulk deleted"
        );
        // Stale deletions of records never held belong to no partition.
        assert!(got[4] <= o[4], "{dataset}: stale");
    }

    // Arrow Flight: one endpoint per shard, every ticket served by node 1 (which relays the
    // shards it has no replica of), as at the freeze point and now.
    let addr = cluster.nodes[&1].addr.clone();
    let ca = std::fs::read(&cluster.certs.ca).unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flight = arrow_flight::FlightClient::new(channel);
    flight
        .add_header(
            "authorization",
            &format!("Bearer {}", cluster.token.as_ref().unwrap()),
        )
        .unwrap();
    let hosted = cluster.status_of(1).await.unwrap().groups.len() - 1;
    assert!(
        hosted < 4,
        "node 1 hosts every shard: the relay is not exercised"
    );
    for (freeze, want) in [(None, &want[1]), (Some("2024-25 M06 recon"), &at_freeze[1])] {
        let command = serde_json::json!({
            "dataset": "op",
            "columns": ["provider_code", "price"],
            "filters": [{"field": "price", "op": "range", "min": "1"}],
            "freeze": freeze,
        });
        let info = flight
            .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(command.to_string()))
            .await
            .unwrap();
        assert_eq!(info.endpoint.len(), 4);
        let (mut rows, mut pence) = (0i64, 0i64);
        for endpoint in &info.endpoint {
            let ticket = endpoint.ticket.clone().unwrap();
            let mut stream = flight.do_get(ticket).await.unwrap();
            while let Some(batch) = futures::StreamExt::next(&mut stream).await {
                let batch = batch.unwrap();
                assert_eq!(batch.num_columns(), 2);
                rows += batch.num_rows() as i64;
                let prices = batch
                    .column(1)
                    .as_primitive::<arrow::datatypes::Int64Type>();
                pence += prices.iter().flatten().sum::<i64>();
            }
        }
        let priced: i64 = want.values().map(|v| v[1]).sum();
        assert_eq!(pence, priced, "flight {freeze:?}: pence");
        assert!(rows > 0 && rows <= want.values().map(|v| v[0]).sum::<i64>());
    }
    let bad = flight
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(
            r#"{"dataset":"xyz"}"#,
        ))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("unknown dataset"), "{bad}");

    // Compaction through every shard's log keeps both views, on every replica.
    let stats = client.compact(100_000).await.unwrap();
    // The write buffer already wrote one segment per provider; compaction still drops the rows
    // no retained view sees.
    assert!(
        stats.segments_after <= stats.segments_before && stats.rows_dropped > 0,
        "{stats:?}"
    );
    for read in [ReadFrom::Leader, ReadFrom::AnyReplica] {
        for ((q, want), at) in queries.iter().zip(&want).zip(&at_freeze) {
            assert_eq!(
                &run(&client, q, read).await,
                want,
                "after compaction {read:?}"
            );
            let f = frozen(q, "2024-25 M06 recon");
            assert_eq!(&run(&client, &f, read).await, at, "frozen after compaction");
        }
    }
    cluster
        .wait_replicas_agree(std::time::Duration::from_secs(60))
        .await
        .unwrap();

    // Errors name what is wrong.
    let bad = v1::QuerySpec {
        dataset: "apc".into(),
        group_by: vec!["colour".into()],
        aggregates: vec![build::count()],
        ..v1::QuerySpec::default()
    };
    let e = client.aggregate(&bad, ReadFrom::Leader).await.unwrap_err();
    assert!(e.to_string().contains("no field colour"), "{e}");
    let e = client
        .aggregate(&frozen(&queries[0], "no such point"), ReadFrom::Leader)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no such point"), "{e}");
}
