//! Section `pseudonym`: no item that identifies a patient or a record leaves the node raw at the
//! pseudonymised tier, on any path (rows over Scan and Flight, Flight schemas, group-by keys of
//! partial and finished aggregates, filters, distinct-patient states, error messages), and one
//! patient's pseudonyms and digests cannot be linked across two recipient organisations or with
//! the identifiable tier.

use crate::ensure;
use crate::fixture::{Cases, Fixture, aggregate, filter, refused, scan, spec, strings, table};
use arrow::array::{AsArray, RecordBatch};
use futures::TryStreamExt;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use sus_proto::WIRE_FORMAT_VERSION;
use sus_proto::partial::{Partial, State};
use sus_proto::v1::aggregate::Func;
use sus_proto::v1::filter::Op;
use sus_proto::v1::{self, Tier};
use tonic::Code;

/// The items the spec names as identifying (section 8), with how they may leave at this tier.
const PSEUDONYMISED: [&str; 4] = [
    "nhs_number",
    "local_patient_id",
    "cds_unique_id",
    "hospital_provider_spell_number",
];

/// Every raw identifier of the submitted files, by item.
pub(crate) fn raw_identifiers(fx: &Fixture) -> BTreeMap<&'static str, BTreeSet<String>> {
    let items = [
        "nhs_number",
        "local_patient_id",
        "cds_unique_id",
        "hospital_provider_spell_number",
        "postcode",
        "date_of_birth",
    ];
    let mut out: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for s in &fx.summary.expected.submissions {
        let mut r = csv::Reader::from_path(fx.out.join(&s.file)).expect("a submission file");
        let header = r.headers().expect("header").clone();
        let columns: Vec<(&'static str, usize)> = items
            .iter()
            .filter_map(|i| header.iter().position(|h| h == *i).map(|p| (*i, p)))
            .collect();
        for rec in r.records() {
            let rec = rec.expect("record");
            for (item, p) in &columns {
                if !rec[*p].is_empty() {
                    out.entry(item).or_default().insert(rec[*p].to_string());
                }
            }
        }
    }
    out
}

/// The raw values no pseudonymised answer may hold in any cell. (Dates of birth are checked in
/// their own column: as values they are also dates of activity, of newborns.)
pub(crate) fn forbidden(raw: &BTreeMap<&'static str, BTreeSet<String>>) -> HashSet<String> {
    let mut out = HashSet::new();
    for item in PSEUDONYMISED.iter().chain(&["postcode"]) {
        out.extend(raw.get(item).into_iter().flatten().cloned());
    }
    out
}

/// The first text cell of `batches` that holds a forbidden value, if any.
pub(crate) fn leak(batches: &[RecordBatch], forbidden: &HashSet<String>) -> Option<String> {
    for b in batches {
        for (i, f) in b.schema().fields().iter().enumerate() {
            let Ok(text) = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8)
            else {
                continue;
            };
            let text = text.as_string::<i32>();
            if let Some(v) = text.iter().flatten().find(|v| forbidden.contains(*v)) {
                return Some(format!("{} = {v}", f.name()));
            }
        }
    }
    None
}

pub(crate) fn is_pseudonym(v: &str) -> bool {
    v.len() == 32 && v.chars().all(|c| c.is_ascii_hexdigit())
}

/// A raw `Query.Scan` request of every column of `dataset` at the caller's default tier.
fn scan_request(dataset: &str, filters: Vec<v1::Filter>) -> v1::ScanRequest {
    v1::ScanRequest {
        format: WIRE_FORMAT_VERSION,
        dataset: dataset.into(),
        filters,
        columns: Vec::new(),
        view: None,
        shards: Vec::new(),
        linearizable: true,
        tier: Tier::Unspecified as i32,
    }
}

/// Every batch of a Flight extract (GetFlightInfo, then DoGet of each endpoint on node 1, which
/// relays the shards it has no replica of), and the schema FlightInfo advertised.
async fn flight_extract(
    fx: &Fixture,
    user: &str,
    command: serde_json::Value,
) -> Result<(arrow::datatypes::Schema, Vec<RecordBatch>), tonic::Status> {
    let mut flight = arrow_flight::FlightClient::new(fx.channel(1).await);
    flight
        .add_header("authorization", &format!("Bearer {}", fx.token(user)))
        .expect("header");
    let info = flight
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(command.to_string()))
        .await
        .map_err(flight_status)?;
    let schema = info
        .clone()
        .try_decode_schema()
        .map_err(|e| tonic::Status::internal(format!("advertised schema: {e}")))?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let stream = flight
            .do_get(endpoint.ticket.expect("a ticket"))
            .await
            .map_err(flight_status)?;
        let got: Vec<RecordBatch> = stream.try_collect().await.map_err(flight_status)?;
        batches.extend(got);
    }
    Ok((schema, batches))
}

pub(crate) fn flight_status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::unknown(other.to_string()),
    }
}

/// Every distinct-patient digest of a partial aggregate.
fn digests(partial: &Partial) -> Result<HashSet<u128>, String> {
    let mut out = HashSet::new();
    for states in partial.groups.values() {
        for s in states {
            if let State::Distinct(set) = s {
                out.extend(set.iter().copied());
            }
        }
    }
    Ok(out)
}

/// The partial aggregate of `query` over every shard, each read on its leader and merged, as
/// the client does.
async fn partial_of(fx: &Fixture, user: &str, query: v1::QuerySpec) -> Result<Partial, String> {
    let mut merged: Option<Partial> = None;
    for shard in 0..4u32 {
        let leader = fx
            .cluster
            .leader_of(u64::from(shard) + 1)
            .await
            .expect("leader");
        let request = v1::AggregateRequest {
            format: WIRE_FORMAT_VERSION,
            query: Some(query.clone()),
            shards: vec![shard],
            linearizable: true,
            finish: false,
            // The sets, even grouped by provider (where nodes may send counts instead): what an
            // attacker after digests would ask for.
            distinct_counts: false,
        };
        let ch = fx.channel(leader).await;
        let r = crate::fixture::retry_unavailable(|| async {
            v1::query_client::QueryClient::new(ch.clone())
                .max_decoding_message_size(sus_proto::MAX_MESSAGE_BYTES)
                .aggregate(crate::fixture::with_token(
                    request.clone(),
                    Some(fx.token(user)),
                ))
                .await
        })
        .await
        .map_err(|s| format!("{user}: {s:?}"))?
        .into_inner();
        let part = Partial::from_ipc(&r.partial).map_err(|e| e.to_string())?;
        match &mut merged {
            Some(m) => m.merge(part).map_err(|e| e.to_string())?,
            None => merged = Some(part),
        }
    }
    merged.ok_or_else(|| "no shard answered".to_string())
}

/// Distinct patients of `dataset` grouped by `group_by`, as a merged partial.
async fn distinct_partial(
    fx: &Fixture,
    user: &str,
    dataset: &str,
    group_by: &[&str],
) -> Result<Partial, String> {
    let query = spec(
        dataset,
        group_by,
        Vec::new(),
        &[(Func::CountDistinctPatients, "", "patients")],
        Tier::Unspecified,
    );
    partial_of(fx, user, query).await
}

pub async fn run(fx: &Fixture, cases: &mut Cases) {
    let raw = raw_identifiers(fx);
    let forbidden = forbidden(&raw);
    assert!(
        PSEUDONYMISED
            .iter()
            .all(|i| raw.get(i).is_some_and(|s| s.len() > 50)),
        "the generated data holds identifiers of every kind"
    );
    let nhs_numbers = raw["nhs_number"].clone();

    // Rows over Query.Scan, every dataset, two recipients of two organisations.
    let mut row_pseudonyms: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for user in ["nat_a", "nat_b", "comm_c", "shared"] {
        let forbidden = &forbidden;
        let row_pseudonyms = &mut row_pseudonyms;
        cases
            .check(
                format!("pseudonymised Query.Scan rows of {user} hold no raw identifier"),
                async move {
                    let mut all = Vec::new();
                    for dataset in ["apc", "op", "ec"] {
                        let batches = scan(fx, fx.token(user), scan_request(dataset, Vec::new()))
                            .await
                            .map_err(|s| format!("{dataset}: {s:?}"))?;
                        all.extend(batches);
                    }
                    ensure!(!all.is_empty(), "{user} read no rows");
                    if let Some(l) = leak(&all, forbidden) {
                        return Err(format!("raw identifier in a row: {l}"));
                    }
                    for item in PSEUDONYMISED {
                        let values = strings(&all, item);
                        ensure!(
                            values.iter().flatten().all(|v| is_pseudonym(v)),
                            "{item} is not a 32-hex-digit pseudonym in every row"
                        );
                    }
                    ensure!(
                        strings(&all, "date_of_birth")
                            .iter()
                            .flatten()
                            .all(|v| v.len() == 7),
                        "a date of birth is not reduced to YYYY-MM"
                    );
                    row_pseudonyms.insert(
                        user,
                        strings(&all, "nhs_number").into_iter().flatten().collect(),
                    );
                    Ok(())
                },
            )
            .await;
    }
    cases
        .check(
            "one patient's row pseudonyms differ between two organisations",
            async {
                let none = BTreeSet::new();
                let a = row_pseudonyms.get("nat_a").unwrap_or(&none);
                let b = row_pseudonyms.get("nat_b").unwrap_or(&none);
                ensure!(
                    a.len() > 50 && b.len() > 50,
                    "too few pseudonyms to compare"
                );
                let common = a.intersection(b).count();
                ensure!(common == 0, "{common} pseudonyms shared by X26 and X24");
                Ok(())
            },
        )
        .await;

    // Rows and schemas over Arrow Flight.
    cases
        .check(
            "pseudonymised Flight extract: rows and advertised schema hold no raw identifier",
            async {
                let command = serde_json::json!({"dataset": "apc"});
                let (schema, batches) = flight_extract(fx, "nat_a", command)
                    .await
                    .map_err(|s| format!("{s:?}"))?;
                ensure!(!batches.is_empty(), "no rows over Flight");
                if let Some(l) = leak(&batches, &forbidden) {
                    return Err(format!("raw identifier over Flight: {l}"));
                }
                for item in PSEUDONYMISED.iter().chain(&["date_of_birth", "postcode"]) {
                    let f = schema
                        .field_with_name(item)
                        .map_err(|e| format!("advertised schema: {e}"))?;
                    ensure!(
                        f.data_type() == &arrow::datatypes::DataType::Utf8,
                        "{item} advertised as {:?}, not the text of a pseudonym",
                        f.data_type()
                    );
                }
                let meta = format!("{:?}", schema.metadata());
                ensure!(
                    !nhs_numbers.iter().any(|n| meta.contains(n.as_str())),
                    "schema metadata carries an NHS number"
                );
                let ps: BTreeSet<String> = strings(&batches, "nhs_number")
                    .into_iter()
                    .flatten()
                    .collect();
                ensure!(
                    row_pseudonyms.get("nat_a").is_some_and(|r| ps.is_subset(r)),
                    "Flight and Scan give one recipient different pseudonyms"
                );
                Ok(())
            },
        )
        .await;

    // Group-by keys of identifying items leave transformed, in partials and finished tables.
    let ch = fx.channel(2).await;
    for item in PSEUDONYMISED.iter().chain(&["date_of_birth", "postcode"]) {
        for finish in [false, true] {
            let ch = &ch;
            let raw = &raw;
            let row_pseudonyms = &row_pseudonyms;
            cases
                .check(
                    format!(
                        "pseudonymised group-by {item} ({}) gives no raw key",
                        if finish { "finished" } else { "partial" }
                    ),
                    async move {
                        let query = spec(
                            "apc",
                            &[item],
                            Vec::new(),
                            &[(Func::Count, "", "n")],
                            Tier::Unspecified,
                        );
                        let keys: Vec<String> = if finish {
                            let reply = aggregate(ch, Some(fx.token("nat_a")), query, true)
                                .await
                                .map_err(|s| format!("{s:?}"))?;
                            strings(&[table(&reply)?], item)
                                .into_iter()
                                .flatten()
                                .collect()
                        } else {
                            let p = partial_of(fx, "nat_a", query).await?;
                            p.groups.keys().filter_map(|k| k[0].clone()).collect()
                        };
                        ensure!(keys.len() > 5, "only {} groups", keys.len());
                        let all_raw: BTreeSet<&String> = raw.values().flatten().collect();
                        if let Some(k) = keys.iter().find(|k| all_raw.contains(k)) {
                            return Err(format!("raw key {k}"));
                        }
                        match *item {
                            "date_of_birth" => ensure!(
                                keys.iter().all(|k| k.len() == 7),
                                "a date of birth key is not YYYY-MM"
                            ),
                            "postcode" => ensure!(
                                keys.iter().all(|k| k.len() <= 6 && k.contains(' ')),
                                "a postcode key is not a sector"
                            ),
                            "nhs_number" => {
                                let keys: BTreeSet<String> = keys.into_iter().collect();
                                ensure!(
                                    row_pseudonyms
                                        .get("nat_a")
                                        .is_some_and(|r| keys.is_subset(r)),
                                    "group keys are not the pseudonyms rows carry"
                                );
                            }
                            _ => ensure!(
                                keys.iter().all(|k| is_pseudonym(k)),
                                "a key is not a pseudonym"
                            ),
                        }
                        Ok(())
                    },
                )
                .await;
        }
    }

    // Filters on identifying items would test raw values: refused, on every path.
    let real_nhs = nhs_numbers.iter().next().expect("an NHS number").clone();
    let real_id = raw["cds_unique_id"]
        .iter()
        .next()
        .expect("a record key")
        .clone();
    let filters = [
        filter("nhs_number", Op::Eq, &[&real_nhs], "", ""),
        filter("cds_unique_id", Op::Range, &[], &real_id, &real_id),
        filter(
            "hospital_provider_spell_number",
            Op::In,
            &["1", "2"],
            "",
            "",
        ),
        filter("local_patient_id", Op::Ne, &["x"], "", ""),
        filter("date_of_birth", Op::Range, &[], "1970-01-01", "1970-12-31"),
        filter("postcode", Op::Eq, &["LS1 4AP"], "", ""),
    ];
    for f in filters {
        let ch = &ch;
        let real_nhs = &real_nhs;
        cases
            .check(
                format!(
                    "pseudonymised filter on {} refused (Aggregate, Scan, Flight)",
                    f.field
                ),
                async move {
                    let q = spec(
                        "apc",
                        &[],
                        vec![f.clone()],
                        &[(Func::Count, "", "n")],
                        Tier::Unspecified,
                    );
                    for finish in [false, true] {
                        let r = aggregate(ch, Some(fx.token("nat_a")), q.clone(), finish).await;
                        refused(r, Code::PermissionDenied, &f.field)?;
                    }
                    let r =
                        scan(fx, fx.token("comm_c"), scan_request("apc", vec![f.clone()])).await;
                    refused(r, Code::PermissionDenied, &f.field)?;
                    let op = match Op::try_from(f.op).expect("op") {
                        Op::Eq => "eq",
                        Op::Ne => "ne",
                        Op::In => "in",
                        Op::Range => "range",
                    };
                    let command = serde_json::json!({"dataset": "apc", "filters": [{
                        "field": f.field, "op": op, "values": f.values, "min": f.min, "max": f.max,
                    }]});
                    let r = flight_extract(fx, "nat_b", command)
                        .await
                        .map(|(_, b)| b.len());
                    let message = match &r {
                        Err(s) => s.message().to_string(),
                        Ok(_) => String::new(),
                    };
                    refused(r, Code::PermissionDenied, &f.field)?;
                    ensure!(
                        !message.contains(real_nhs.as_str()),
                        "the refusal echoes an NHS number: {message}"
                    );
                    Ok(())
                },
            )
            .await;
    }

    // Distinct-patient states: keyed per recipient and tier, so digests cannot be matched.
    cases
        .check(
            "distinct-patient digests cannot be linked across organisations or with the clear tier",
            async {
                // An identifiable user of X26 can tie each digest it receives to an NHS number.
                let table = distinct_partial(fx, "nat_id", "apc", &["nhs_number"]).await?;
                let mut by_digest = BTreeMap::new();
                for (key, states) in &table.groups {
                    if let (Some(n), State::Distinct(set)) = (&key[0], &states[0]) {
                        for d in set {
                            by_digest.insert(*d, n.clone());
                        }
                    }
                }
                ensure!(by_digest.len() > 50, "too few digests in the clear table");
                // The attack can succeed where keys agree: the same user's other partials match.
                let own =
                    digests(&distinct_partial(fx, "nat_id", "apc", &["provider_code"]).await?)?;
                ensure!(
                    own.iter().filter(|d| by_digest.contains_key(d)).count() > 50,
                    "the check cannot fail: one recipient's digests do not even match each other"
                );
                for user in ["nat_a", "nat_b", "comm_c", "prov_p"] {
                    let other =
                        digests(&distinct_partial(fx, user, "apc", &["provider_code"]).await?)?;
                    ensure!(other.len() > 5, "{user} got too few digests");
                    let linked = other.iter().filter(|d| by_digest.contains_key(d)).count();
                    ensure!(
                        linked == 0,
                        "{linked} of {user}'s digests name an NHS number"
                    );
                }
                let (a, b) = (
                    digests(&distinct_partial(fx, "nat_a", "op", &["provider_code"]).await?)?,
                    digests(&distinct_partial(fx, "nat_b", "op", &["provider_code"]).await?)?,
                );
                ensure!(a.is_disjoint(&b), "X26 and X24 receive comparable digests");
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "anonymised tier: grouping by a record key is refused",
            async {
                let r = aggregate(
                    &ch,
                    Some(fx.token("anon_nat")),
                    spec(
                        "apc",
                        &["cds_unique_id"],
                        Vec::new(),
                        &[(Func::Count, "", "n")],
                        Tier::Unspecified,
                    ),
                    true,
                )
                .await;
                refused(r, Code::PermissionDenied, "cds_unique_id")
            },
        )
        .await;
}
