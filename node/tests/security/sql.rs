//! Section `sql`: Arrow Flight SQL over raw Flight calls. No token, no answer; the caller's tier
//! and scope apply inside SQL's scans (no raw identifier at the pseudonymised tier, not even
//! through a filter on one; no rows at the anonymised tier; a provider's own rows only); a
//! ticket or prepared-statement handle grants nothing to whoever presents it; statements that
//! write, reach files or change settings are refused, and so are oversized ones.

use crate::ensure;
use crate::fixture::{Cases, Fixture, refused};
use crate::pseudonym::{flight_status, forbidden, is_pseudonym, leak, raw_identifiers};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, CommandStatementQuery, ProstMessageExt,
    TicketStatementQuery,
};
use arrow_flight::{Action, FlightClient, FlightDescriptor, FlightInfo, Ticket};
use futures::TryStreamExt;
use prost::Message;
use tonic::{Code, Status};

fn statement(sql: &str) -> FlightDescriptor {
    FlightDescriptor::new_cmd(
        CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec(),
    )
}

async fn client(fx: &Fixture, node: u64, token: Option<&str>, tier: Option<&str>) -> FlightClient {
    let mut flight = FlightClient::new(fx.channel(node).await);
    if let Some(t) = token {
        flight
            .add_header("authorization", &format!("Bearer {t}"))
            .expect("header");
    }
    if let Some(t) = tier {
        flight.add_header("x-sus-tier", t).expect("header");
    }
    flight
}

async fn info(flight: &mut FlightClient, sql: &str) -> Result<FlightInfo, Status> {
    flight
        .get_flight_info(statement(sql))
        .await
        .map_err(flight_status)
}

/// Every batch of one ticket (a refusal may come as the stream's first message).
async fn get(flight: &mut FlightClient, ticket: Ticket) -> Result<Vec<RecordBatch>, Status> {
    let stream = flight.do_get(ticket).await.map_err(flight_status)?;
    stream.try_collect().await.map_err(flight_status)
}

async fn fetch(flight: &mut FlightClient, info: FlightInfo) -> Result<Vec<RecordBatch>, Status> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint
            .ticket
            .ok_or_else(|| Status::internal("no ticket"))?;
        out.extend(get(flight, ticket).await?);
    }
    Ok(out)
}

/// Plans and runs `sql` as `user` (at `tier` if given) on node 2.
async fn run(
    fx: &Fixture,
    user: &str,
    tier: Option<&str>,
    sql: &str,
) -> Result<Vec<RecordBatch>, Status> {
    let mut flight = client(fx, 2, Some(fx.token(user)), tier).await;
    let info = info(&mut flight, sql).await?;
    fetch(&mut flight, info).await
}

fn count(batches: &[RecordBatch]) -> i64 {
    batches
        .iter()
        .map(|b| b.column(0).as_primitive::<Int64Type>().value(0))
        .sum()
}

pub async fn run_cases(fx: &Fixture, cases: &mut Cases) {
    cases
        .check(
            "Flight SQL without a token is UNAUTHENTICATED on every call",
            async {
                let mut anonymous = client(fx, 1, None, None).await;
                refused(
                    info(&mut anonymous, "SELECT 1").await,
                    Code::Unauthenticated,
                    "",
                )?;
                let ticket = Ticket::new(
                    TicketStatementQuery {
                        statement_handle:
                            br#"{"sql":"SELECT * FROM apc","tier":1}"#.to_vec().into(),
                    }
                    .as_any()
                    .encode_to_vec(),
                );
                refused(get(&mut anonymous, ticket).await, Code::Unauthenticated, "")?;
                let action = Action::new(
                    "CreatePreparedStatement",
                    ActionCreatePreparedStatementRequest {
                        query: "SELECT * FROM apc".into(),
                        transaction_id: None,
                    }
                    .as_any()
                    .encode_to_vec(),
                );
                let got = anonymous
                    .do_action(action)
                    .await
                    .map(|_| ())
                    .map_err(flight_status);
                refused(got, Code::Unauthenticated, "")
            },
        )
        .await;

    cases
        .check(
            "an anonymised caller reads no rows through SQL, only aggregates the control passed",
            async {
                for user in ["anon_nat", "anon_comm", "anon_prov"] {
                    for sql in [
                        "SELECT * FROM apc",
                        "SELECT provider_code, price FROM apc WHERE price > 0 LIMIT 10",
                        "SELECT count(DISTINCT nhs_number) FROM apc",
                        "SELECT pod, count(*) FROM apc GROUP BY pod ORDER BY 2",
                        "SELECT pod, count(*) FROM apc WHERE nhs_number IS NOT NULL GROUP BY pod",
                    ] {
                        let got = run(fx, user, None, sql).await;
                        refused(got, Code::PermissionDenied, "anonymised tier")
                            .map_err(|e| format!("{user}: {sql}: {e}"))?;
                    }
                    // A grouped count comes back as the disclosure control leaves it: the same
                    // table as the native call's. (By commissioner: a national figure by POD
                    // alone is exempt from the control.)
                    let by_commissioner =
                        "SELECT commissioner_code, count(*) FROM apc GROUP BY commissioner_code";
                    let sql_table = run(fx, user, None, by_commissioner)
                        .await
                        .map_err(|s| format!("{user}: {s:?}"))?;
                    let native = crate::fixture::aggregate(
                        &fx.channel(1).await,
                        Some(fx.token(user)),
                        crate::fixture::spec(
                            "apc",
                            &["commissioner_code"],
                            Vec::new(),
                            &[(sus_proto::v1::aggregate::Func::Count, "", "")],
                            sus_proto::v1::Tier::Unspecified,
                        ),
                        true,
                    )
                    .await
                    .map_err(|s| format!("{user}: native: {s:?}"))?;
                    let native = sus_proto::partial::ipc_to_batch(&native.table)
                        .map_err(|e| format!("{user}: native table: {e}"))?;
                    let text = |batches: &[RecordBatch]| -> Vec<Vec<String>> {
                        let mut rows = Vec::new();
                        for b in batches {
                            for r in 0..b.num_rows() {
                                rows.push(
                                    (0..b.num_columns())
                                        .map(|c| {
                                            let c = arrow::compute::cast(
                                                b.column(c),
                                                &arrow::datatypes::DataType::Utf8,
                                            )
                                            .expect("text");
                                            c.as_string::<i32>().value(r).to_string()
                                        })
                                        .collect(),
                                );
                            }
                        }
                        rows
                    };
                    ensure!(
                        text(&sql_table) == text(&[native]),
                        "{user}: SQL {:?} is not the native table",
                        text(&sql_table)
                    );
                    ensure!(
                        text(&sql_table)
                            .iter()
                            .all(|r| r[1] == "*" || r[1].parse::<u64>().is_ok_and(|n| n % 5 == 0)),
                        "{user}: a count passed the control unrounded"
                    );
                }
                Ok(())
            },
        )
        .await;

    let raw = raw_identifiers(fx);
    let forbidden = forbidden(&raw);
    let a_raw_nhs_number = raw["nhs_number"].iter().next().cloned().unwrap_or_default();
    cases
        .check(
            "pseudonymised SQL rows, keys and filters reveal no raw identifier",
            async {
                let rows = run(fx, "nat_a", None, "SELECT * FROM apc")
                    .await
                    .map_err(|s| format!("{s:?}"))?;
                ensure!(!rows.is_empty(), "no rows");
                if let Some(l) = leak(&rows, &forbidden) {
                    return Err(format!("raw identifier in a SQL row: {l}"));
                }
                let keys = run(
                    fx,
                    "nat_a",
                    None,
                    "SELECT nhs_number, count(*) FROM op GROUP BY nhs_number",
                )
                .await
                .map_err(|s| format!("{s:?}"))?;
                if let Some(l) = leak(&keys, &forbidden) {
                    return Err(format!("raw identifier as a SQL group key: {l}"));
                }
                let ids: Vec<String> = keys
                    .iter()
                    .flat_map(|b| {
                        b.column(0)
                            .as_string::<i32>()
                            .iter()
                            .flatten()
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    })
                    .collect();
                ensure!(
                    ids.iter().all(|v| is_pseudonym(v)),
                    "a key is not a pseudonym"
                );
                // A filter on a raw number compares it with pseudonyms: it can find nothing, so it
                // cannot confirm that a person is in the data.
                let probe = run(
                    fx,
                    "nat_a",
                    None,
                    &format!("SELECT count(*) FROM apc WHERE nhs_number = '{a_raw_nhs_number}'"),
                )
                .await
                .map_err(|s| format!("{s:?}"))?;
                ensure!(
                    count(&probe) == 0,
                    "a raw NHS number matched {} rows",
                    count(&probe)
                );
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "a provider's SQL reads its own rows only, however the statement is written",
            async {
                for sql in [
                    "SELECT DISTINCT provider_code FROM apc",
                    "SELECT DISTINCT provider_code FROM apc WHERE provider_code <> 'nobody' \
                 UNION SELECT provider_code FROM op",
                ] {
                    let rows = run(fx, "prov_p", None, sql)
                        .await
                        .map_err(|s| format!("{s:?}"))?;
                    let seen: Vec<String> = rows
                        .iter()
                        .flat_map(|b| {
                            let c = arrow::compute::cast(
                                b.column(0),
                                &arrow::datatypes::DataType::Utf8,
                            )
                            .expect("text");
                            c.as_string::<i32>()
                                .iter()
                                .flatten()
                                .map(str::to_string)
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    ensure!(seen == [fx.orgs.p.clone()], "{sql}: saw providers {seen:?}");
                }
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "a statement ticket grants nothing to another caller",
            async {
                // Planned by an identifiable national analyst asking for the identifiable tier.
                let mut owner = client(fx, 2, Some(fx.token("nat_id")), Some("identifiable")).await;
                let planned = info(&mut owner, "SELECT nhs_number FROM apc")
                    .await
                    .map_err(|s| format!("{s:?}"))?;
                let ticket = planned.endpoint[0].ticket.clone().ok_or("no ticket")?;
                // Presented by a pseudonymised analyst: the identifiable tier is not theirs.
                let mut other = client(fx, 3, Some(fx.token("nat_a")), None).await;
                refused(
                    get(&mut other, ticket.clone()).await,
                    Code::PermissionDenied,
                    "",
                )?;
                let mut anon = client(fx, 3, Some(fx.token("anon_nat")), None).await;
                refused(get(&mut anon, ticket).await, Code::PermissionDenied, "")?;
                // A handle that is not one of ours.
                let junk = Ticket::new(
                    TicketStatementQuery {
                        statement_handle: b"\x00junk".to_vec().into(),
                    }
                    .as_any()
                    .encode_to_vec(),
                );
                refused(
                    get(&mut other, junk).await,
                    Code::InvalidArgument,
                    "statement handle",
                )
            },
        )
        .await;

    cases
        .check(
            "statements that write, reach files or change settings are refused",
            async {
                let target = fx.out.join("sql-probe-output.csv");
                for sql in [
                    "DROP TABLE apc".to_string(),
                    "INSERT INTO apc SELECT * FROM apc".to_string(),
                    "CREATE TABLE t AS SELECT * FROM apc".to_string(),
                    "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'".to_string(),
                    format!("COPY (SELECT * FROM apc) TO '{}'", target.display()),
                    "SELECT * FROM '/etc/passwd'".to_string(),
                    "SET datafusion.execution.target_partitions = 1000".to_string(),
                ] {
                    match run(fx, "nat_id", None, &sql).await {
                        Ok(_) => return Err(format!("{sql}: answered")),
                        Err(s) if s.code() == Code::InvalidArgument => {}
                        Err(s) => return Err(format!("{sql}: {:?}: {}", s.code(), s.message())),
                    }
                }
                ensure!(!target.exists(), "COPY wrote a file");
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "an unknown tier in x-sus-tier is refused, naming the tiers",
            async {
                let got = run(fx, "nat_id", Some("everything"), "SELECT count(*) FROM op").await;
                refused(
                    got,
                    Code::InvalidArgument,
                    "identifiable, pseudonymised, anonymised",
                )
            },
        )
        .await;

    cases
        .check(
            "a statement over 1 MiB is refused (INVALID_ARGUMENT)",
            async {
                let long = format!("SELECT 1 {}", " ".repeat(1 << 20));
                refused(
                    run(fx, "nat_id", None, &long).await,
                    Code::InvalidArgument,
                    "over the limit",
                )
            },
        )
        .await;
}
