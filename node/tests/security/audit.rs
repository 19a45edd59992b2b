//! Section `audit`: every extract is on the audit log before its first row reaches the reader,
//! and an extract the reader cuts off is completed on the log as "stopped after N rows", over
//! `Query.Scan` and Arrow Flight `DoGet`.

use crate::ensure;
use crate::fixture::{Cases, Fixture, with_token};
use futures::StreamExt;
use std::time::{Duration, Instant};
use sus_proto::WIRE_FORMAT_VERSION;
use sus_proto::audit::Record;
use sus_proto::v1::{self, Tier};

/// Entries `from..` of the audit log as node `node` holds it.
async fn entries(fx: &Fixture, node: u64, from: u64) -> Result<Vec<Record>, String> {
    let reply = v1::admin_client::AdminClient::new(fx.channel(node).await)
        .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES)
        .audit_log(with_token(
            v1::AuditLogRequest {
                format: WIRE_FORMAT_VERSION,
                from,
                limit: 0,
            },
            Some(fx.token("aud")),
        ))
        .await
        .map_err(|s| format!("audit log: {s:?}"))?
        .into_inner();
    reply
        .entries
        .iter()
        .map(|e| Record::from_json(&e.record_json).map_err(|e| e.to_string()))
        .collect()
}

/// The meta group's leader: it has applied every committed audit entry.
async fn meta_leader(fx: &Fixture) -> u64 {
    fx.cluster.leader_of(0).await.expect("a meta leader")
}

/// The length of the log now.
async fn log_len(fx: &Fixture) -> Result<u64, String> {
    let leader = meta_leader(fx).await;
    Ok(entries(fx, leader, 0).await?.len() as u64)
}

/// Waits until `user`'s entries for `action` after `from` hold an extract's start and end;
/// returns (start, end).
async fn extract_entries(
    fx: &Fixture,
    from: u64,
    user: &str,
    action: &str,
) -> Result<(Record, Record), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leader = meta_leader(fx).await;
        let mine: Vec<Record> = entries(fx, leader, from)
            .await?
            .into_iter()
            .filter(|r| r.user == user && r.action == action)
            .collect();
        let start = mine.iter().find(|r| r.detail.contains(" started"));
        if let Some(start) = start {
            let id = start.detail.split_whitespace().nth(1).unwrap_or_default();
            let end = mine
                .iter()
                .find(|r| r.detail.starts_with(&format!("extract {id} ")) && r != &start);
            if let Some(end) = end {
                return Ok((start.clone(), end.clone()));
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no start and end entries of {user}'s {action} within 20 s: {mine:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shards node 1 hosts.
async fn hosted(fx: &Fixture) -> Vec<u32> {
    let status = fx.cluster.status_of(1).await.expect("status");
    status
        .groups
        .iter()
        .filter(|g| g.group > 0)
        .map(|g| (g.group - 1) as u32)
        .collect()
}

pub async fn run(fx: &Fixture, cases: &mut Cases) {
    for (user, tier) in [
        ("nat_id", Tier::Identifiable),
        ("nat_a", Tier::Pseudonymised),
    ] {
        cases
            .check(
                format!(
                    "a Query.Scan of {user} cut off after one batch is audited before and after"
                ),
                async move {
                    let from = log_len(fx).await?;
                    let request = v1::ScanRequest {
                        format: WIRE_FORMAT_VERSION,
                        dataset: "op".into(),
                        filters: Vec::new(),
                        columns: Vec::new(),
                        view: None,
                        shards: hosted(fx).await,
                        linearizable: false,
                        tier: tier as i32,
                    };
                    let mut stream = v1::query_client::QueryClient::new(fx.channel(1).await)
                        .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES)
                        .scan(with_token(request, Some(fx.token(user))))
                        .await
                        .map_err(|s| format!("{s:?}"))?
                        .into_inner();
                    let first = stream.message().await.map_err(|s| format!("{s:?}"))?;
                    ensure!(first.is_some(), "the scan sent no row");
                    // The first row is here: its extract must already be on the log.
                    let leader = meta_leader(fx).await;
                    let now: Vec<Record> = entries(fx, leader, from).await?;
                    ensure!(
                        now.iter().any(|r| r.user == user
                            && r.action == "scan"
                            && r.detail.contains(" started")),
                        "a row arrived before its extract was audited: {now:?}"
                    );
                    drop(stream);
                    let (start, end) = extract_entries(fx, from, user, "scan").await?;
                    ensure!(start.rows == 0, "the start entry counts rows");
                    // The node's share of `op` (about a thousand rows in small batches) is far
                    // more than the transport buffers, so the reader's cancel stops the scan.
                    ensure!(
                        end.detail.contains("stopped after") && end.detail.contains("went away"),
                        "the cut-off extract is recorded as {:?}",
                        end.detail
                    );
                    ensure!(end.rows >= 1, "the end entry counts no row sent");
                    eprintln!("        {user}'s cut-off scan ended as: {}", end.detail);
                    ensure!(
                        start.tier == tier_name(tier) && end.tier == start.tier,
                        "tier recorded as {} / {}",
                        start.tier,
                        end.tier
                    );
                    ensure!(
                        start.purpose == "security test" && start.dataset == "op",
                        "who and what: {start:?}"
                    );
                    Ok(())
                },
            )
            .await;
    }

    cases
        .check(
            "a Flight DoGet cut off after one batch is audited before and after",
            async {
                let from = log_len(fx).await?;
                let mut flight = arrow_flight::FlightClient::new(fx.channel(1).await);
                flight
                    .add_header("authorization", &format!("Bearer {}", fx.token("nat_id")))
                    .expect("header");
                let info = flight
                    .get_flight_info(arrow_flight::FlightDescriptor::new_path(vec!["op".into()]))
                    .await
                    .map_err(|e| e.to_string())?;
                // The shard with the most rows is the longest stream.
                let endpoint = info.endpoint.first().cloned().ok_or("no endpoint")?;
                let mut stream = flight
                    .do_get(endpoint.ticket.ok_or("no ticket")?)
                    .await
                    .map_err(|e| e.to_string())?;
                let first = stream.next().await;
                ensure!(
                    matches!(first, Some(Ok(_))),
                    "the extract sent no batch: {first:?}"
                );
                let leader = meta_leader(fx).await;
                let now = entries(fx, leader, from).await?;
                ensure!(
                    now.iter().any(|r| r.user == "nat_id"
                        && r.action == "flight"
                        && r.detail.contains(" started")),
                    "a Flight batch arrived before its extract was audited"
                );
                drop(stream);
                let (_, end) = extract_entries(fx, from, "nat_id", "flight").await?;
                ensure!(
                    end.detail.contains("stopped after") || end.detail.contains("complete"),
                    "the end entry says {:?}",
                    end.detail
                );
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "an extract read to its end is completed with the rows sent",
            async {
                let from = log_len(fx).await?;
                let mut rows = 0u64;
                let shards = hosted(fx).await;
                let request = v1::ScanRequest {
                    format: WIRE_FORMAT_VERSION,
                    dataset: "ec".into(),
                    filters: Vec::new(),
                    columns: vec!["provider_code".into()],
                    view: None,
                    shards,
                    linearizable: false,
                    tier: Tier::Unspecified as i32,
                };
                let mut stream = v1::query_client::QueryClient::new(fx.channel(1).await)
                    .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES)
                    .scan(with_token(request, Some(fx.token("comm_c"))))
                    .await
                    .map_err(|s| format!("{s:?}"))?
                    .into_inner();
                while let Some(chunk) = stream.message().await.map_err(|s| format!("{s:?}"))? {
                    rows += sus_proto::partial::ipc_to_batch(&chunk.ipc)
                        .map_err(|e| e.to_string())?
                        .num_rows() as u64;
                }
                let (_, end) = extract_entries(fx, from, "comm_c", "scan").await?;
                ensure!(
                    end.rows == rows && end.detail.contains(&format!("complete: {rows} rows")),
                    "received {rows} rows; the log says {} ({})",
                    end.rows,
                    end.detail
                );
                Ok(())
            },
        )
        .await;

    cases
        .check("the audit log's hash chain verifies", async {
            let reply = v1::admin_client::AdminClient::new(fx.channel(2).await)
                .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES)
                .audit_log(with_token(
                    v1::AuditLogRequest {
                        format: WIRE_FORMAT_VERSION,
                        from: 0,
                        limit: 0,
                    },
                    Some(fx.token("aud")),
                ))
                .await
                .map_err(|s| format!("{s:?}"))?
                .into_inner();
            let records: Vec<(u64, Record, Vec<u8>)> = reply
                .entries
                .iter()
                .map(|e| {
                    Record::from_json(&e.record_json)
                        .map(|r| (e.index, r, e.hash.clone()))
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?;
            sus_proto::audit::verify(
                sus_proto::audit::GENESIS,
                records.iter().map(|(i, r, h)| (*i, r, h.as_slice())),
            )
            .map_err(|e| e.to_string())?;
            Ok(())
        })
        .await;
}

fn tier_name(t: Tier) -> &'static str {
    match t {
        Tier::Identifiable => "identifiable",
        Tier::Pseudonymised => "pseudonymised",
        Tier::Anonymised => "anonymised",
        Tier::Unspecified => "",
    }
}
