//! Section `disclosure` of the security suite (see `main.rs`): the anonymised tier attacked over
//! raw gRPC and Flight by national, commissioner and provider users.
//!
//! Every table the node returns is checked against the generator's oracle (`oracle/live.csv`)
//! with the rule of `docs/access.md` computed here, independently of the node: counts 1-7 `*`,
//! others rounded to 5; sums only where the count is shown, to 2 significant figures; TOTAL from
//! exact values. Differencing attacks take what an attacker sees (the shown figures, with the
//! rounding's bounds, and margins from coarser queries or the oracle's exact values) and assert
//! that no suppressed small count is pinned to one value.

use crate::common::{Live, read_live};
use crate::ensure;
use crate::fixture::{Cases, Fixture, aggregate, filter, refused, spec, table, with_token};
use std::collections::{BTreeMap, BTreeSet};
use sus_proto::WIRE_FORMAT_VERSION;
use sus_proto::v1::{self, Tier, aggregate::Func, filter::Op};
use tonic::Code;

/// A finished table as text: column names, then rows of cells (null cells as empty strings).
#[derive(Debug, Clone, PartialEq)]
struct Shown {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Shown {
    fn col(&self, name: &str) -> Result<usize, String> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| format!("no column {name} in {:?}", self.columns))
    }

    /// The rows before `TOTAL`, and the `TOTAL` row.
    fn split(&self) -> Result<(&[Vec<String>], &Vec<String>), String> {
        let (total, rows) = self.rows.split_last().ok_or("an empty table")?;
        ensure!(total[0] == "TOTAL", "the last row is not TOTAL: {total:?}");
        Ok((rows, total))
    }
}

fn shown(batch: &arrow::array::RecordBatch) -> Result<Shown, String> {
    use arrow::array::{Array, AsArray};
    let mut rows = vec![Vec::new(); batch.num_rows()];
    for c in 0..batch.num_columns() {
        let col = batch
            .column(c)
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("column {c} is not text: {:?}", batch.column(c).data_type()))?;
        for (r, row) in rows.iter_mut().enumerate() {
            row.push(if col.is_valid(r) {
                col.value(r).to_string()
            } else {
                String::new()
            });
        }
    }
    Ok(Shown {
        columns: batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
        rows,
    })
}

/// Asks node 1 for a finished table as `user`.
async fn ask(fx: &Fixture, user: &str, q: v1::QuerySpec) -> Result<Shown, tonic::Status> {
    let ch = fx.channel(1).await;
    let reply = aggregate(&ch, Some(fx.token(user)), q, true).await?;
    shown(&table(&reply).map_err(tonic::Status::internal)?).map_err(tonic::Status::internal)
}

async fn ask_ok(fx: &Fixture, user: &str, q: v1::QuerySpec) -> Result<Shown, String> {
    ask(fx, user, q)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

fn round5(v: i64) -> i64 {
    (v + 2) / 5 * 5
}

/// 2 significant figures, halves away from zero.
fn sig2(v: i64) -> i64 {
    let digits = v.abs().to_string().len() as u32;
    if digits <= 2 {
        return v;
    }
    let p = 10i64.pow(digits - 2);
    (v.abs() + p / 2) / p * p * v.signum()
}

/// A count as the rule shows it.
fn count_rule(v: i64) -> String {
    match v {
        0 => "0".into(),
        1..=7 => "*".into(),
        v => round5(v).to_string(),
    }
}

/// What a shown count tells an observer: the least and most the true count can be (`*`: 1 to
/// unbounded, as a secondary suppression may hide a large count).
fn range(s: &str) -> Result<(i64, i64), String> {
    match s {
        "*" => Ok((1, i64::MAX / 4)),
        "0" => Ok((0, 0)),
        n => {
            let n: i64 = n.parse().map_err(|_| format!("not a count: {n}"))?;
            Ok(((n - 2).max(8), n + 2))
        }
    }
}

/// The exact (count, pence, excess bed days, excluded) of the oracle's rows of `dataset` that
/// `keep`, by `key`.
fn exact(
    live: &[Live],
    dataset: &str,
    keep: impl Fn(&Live) -> bool,
    key: impl Fn(&Live) -> Vec<String>,
) -> BTreeMap<Vec<String>, [i64; 4]> {
    let mut out: BTreeMap<Vec<String>, [i64; 4]> = BTreeMap::new();
    for r in live.iter().filter(|r| r.dataset == dataset && keep(r)) {
        let e = out.entry(key(r)).or_default();
        e[0] += 1;
        e[1] += r.price;
        e[2] += r.excess_bed_days;
        e[3] += i64::from(r.excluded);
    }
    out
}

/// Checks a controlled table of `keys` key columns against the exact values (`value` picks the
/// exact count of a cell; `sum` picks the exact sum of a sum column): every cell follows the
/// primary rule, sums are shown exactly where counts are, the TOTAL follows the rule on the
/// exact totals, and no margin line (cells sharing every key but one, and the whole table)
/// holds exactly one `*` unless no other cell of it could hide it.
fn check_table(
    t: &Shown,
    keys: usize,
    exact: &BTreeMap<Vec<String>, [i64; 4]>,
    count_col: &str,
    count_of: usize,
    sum_col: Option<(&str, usize)>,
) -> Result<usize, String> {
    let (rows, total) = t.split()?;
    let c = t.col(count_col)?;
    let got: BTreeSet<Vec<String>> = rows.iter().map(|r| r[..keys].to_vec()).collect();
    let want: BTreeSet<Vec<String>> = exact.keys().cloned().collect();
    ensure!(
        got == want,
        "groups differ: {got:?} vs the oracle's {want:?}"
    );
    let mut stars = 0;
    for r in rows {
        let v = exact[&r[..keys]][count_of];
        if r[c] == "*" {
            stars += 1;
            // A count was suppressed: its record count (here it is the count) or itself small,
            // or a secondary suppression.
        } else {
            ensure!(
                r[c] == count_rule(v) && !(1..=7).contains(&v),
                "{:?}: {count_col} shows {} for exact {v}",
                &r[..keys],
                r[c]
            );
        }
        if let Some((name, of)) = sum_col {
            let s = t.col(name)?;
            let want = if r[c] == "*" {
                "*".to_string()
            } else {
                sig2(exact[&r[..keys]][of]).to_string()
            };
            ensure!(
                r[s] == want,
                "{:?}: {name} shows {} where the rule gives {want}",
                &r[..keys],
                r[s]
            );
        }
    }
    let totals: [i64; 4] = exact.values().fold([0; 4], |mut a, v| {
        for (a, v) in a.iter_mut().zip(v) {
            *a += v;
        }
        a
    });
    ensure!(
        total[c] == count_rule(totals[count_of]),
        "TOTAL {count_col} {} for exact {}",
        total[c],
        totals[count_of]
    );
    if let Some((name, of)) = sum_col {
        let s = t.col(name)?;
        let want = if (1..=7).contains(&totals[0]) {
            "*".to_string()
        } else {
            sig2(totals[of]).to_string()
        };
        ensure!(total[s] == want, "TOTAL {name} {} for {want}", total[s]);
    }
    // Margin lines of the hypercube, and the table as a whole.
    let mut lines: Vec<Vec<usize>> = vec![(0..rows.len()).collect()];
    for d in 0..keys {
        let mut by: BTreeMap<Vec<&String>, Vec<usize>> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            let rest: Vec<&String> = (0..keys).filter(|&j| j != d).map(|j| &r[j]).collect();
            by.entry(rest).or_default().push(i);
        }
        lines.extend(by.into_values());
    }
    let alone = |i: usize| lines.iter().any(|l| l.len() == 1 && l[0] == i);
    for line in &lines {
        let hidden: Vec<usize> = line
            .iter()
            .copied()
            .filter(|&i| rows[i][c] == "*")
            .collect();
        if hidden.len() == 1 {
            for &i in line
                .iter()
                .filter(|&&i| rows[i][c] != "*" && rows[i][c] != "0")
            {
                ensure!(
                    alone(i),
                    "line {:?} holds one suppressed cell ({:?}) and {:?} could have hidden it",
                    line.iter().map(|&i| &rows[i][..keys]).collect::<Vec<_>>(),
                    &rows[hidden[0]][..keys],
                    &rows[i][..keys]
                );
            }
        }
        // With the exact margin (an attacker-favourable assumption) and the shown cells at
        // their least, the hidden cells of a line are not all pinned to 1.
        let margin: i64 = line
            .iter()
            .map(|&i| exact[&rows[i][..keys]][count_of])
            .sum();
        if hidden.len() >= 2 && margin > 7 {
            let mut room = margin;
            for &i in line.iter().filter(|&&i| rows[i][c] != "*") {
                room -= range(&rows[i][c])?.0;
            }
            // Pinned only where nothing was left to hide: every cell of the line hidden, or
            // the only cell of another line (which groups exist is shown, docs/security.md).
            let could_hide = line
                .iter()
                .any(|&i| rows[i][c] != "*" && rows[i][c] != "0" && !alone(i));
            ensure!(
                room > hidden.len() as i64 || !could_hide,
                "line {:?}: its {} hidden cells are pinned to 1 each",
                line.iter().map(|&i| &rows[i][..keys]).collect::<Vec<_>>(),
                hidden.len()
            );
        }
    }
    Ok(stars)
}

/// The values 1 to 7 a small count `x = a - b` can take, given the shown `a` and `b`.
fn small_differences(a: &str, b: &str) -> Result<Vec<i64>, String> {
    let (a, b) = (range(a)?, range(b)?);
    Ok((1..=7)
        .filter(|x| a.0 - b.1 <= *x && *x <= a.1 - b.0)
        .collect())
}

/// The (dataset, point of delivery) whose national table by provider best mixes small and
/// large values of `stat` (0 records, 3 excluded), so that suppression is exercised.
fn busy_pod(live: &[Live], stat: usize) -> Result<(String, String), String> {
    let pods: BTreeSet<(String, String)> = live
        .iter()
        .map(|r| (r.dataset.clone(), r.pod.clone()))
        .collect();
    let score = |(dataset, pod): &(String, String)| {
        let t = exact(
            live,
            dataset,
            |r| &r.pod == pod,
            |r| vec![r.provider.clone()],
        );
        let small = t.values().filter(|v| (1..=7).contains(&v[stat])).count();
        let large = t.values().filter(|v| v[stat] > 7).count();
        small.min(large)
    };
    pods.into_iter()
        .filter(|p| score(p) > 0)
        .max_by_key(|p| (score(p), std::cmp::Reverse(p.clone())))
        .ok_or_else(|| format!("no point of delivery mixes small and large values of {stat}"))
}

/// Three providers of `apc` with more than 7 records and one with 1 to 7: a table of them by
/// provider holds one small cell, which only secondary suppression keeps the TOTAL from giving
/// away.
fn one_small_among_large(live: &[Live]) -> Result<Vec<String>, String> {
    let t = exact(live, "apc", |_| true, |r| vec![r.provider.clone()]);
    let mut large: Vec<(&Vec<String>, i64)> = t
        .iter()
        .filter(|(_, v)| v[0] > 7)
        .map(|(k, v)| (k, v[0]))
        .collect();
    large.sort_by_key(|(k, n)| (std::cmp::Reverse(*n), (*k).clone()));
    let small = t
        .iter()
        .find(|(_, v)| (1..=7).contains(&v[0]))
        .ok_or("no small provider")?;
    ensure!(large.len() >= 3, "fewer than 3 large providers");
    let mut out: Vec<String> = large[..3].iter().map(|(k, _)| k[0].clone()).collect();
    out.push(small.0[0].clone());
    Ok(out)
}

/// The financial year (`2024-25`) of a month (`YYYY-MM`).
fn financial_year(month: &str) -> Result<String, String> {
    let bad = || format!("not a month: {month}");
    let year: i32 = month
        .get(..4)
        .and_then(|y| y.parse().ok())
        .ok_or_else(bad)?;
    let m: u32 = month
        .get(5..7)
        .and_then(|m| m.parse().ok())
        .ok_or_else(bad)?;
    let start = if m >= 4 { year } else { year - 1 };
    Ok(format!("{start}-{:02}", (start + 1) % 100))
}

/// The fields an anonymised read may never group or filter on, as (field, dataset).
const IDENTIFYING: [(&str, &str); 13] = [
    ("age_at_activity", "apc"),
    ("date_of_birth", "apc"),
    ("activity_date", "apc"),
    ("admission_date", "apc"),
    ("appointment_date", "op"),
    ("arrival_datetime", "ec"),
    ("primary_diagnosis", "apc"),
    ("primary_procedure", "apc"),
    ("nhs_number", "apc"),
    ("local_patient_id", "op"),
    ("cds_unique_id", "ec"),
    ("hospital_provider_spell_number", "apc"),
    ("postcode", "apc"),
];

fn count() -> (Func, &'static str, &'static str) {
    (Func::Count, "", "count")
}

fn sum_price() -> (Func, &'static str, &'static str) {
    (Func::Sum, "price", "sum_price")
}

pub async fn run(fx: &Fixture, cases: &mut Cases) {
    let live = read_live(&fx.out.join("oracle/live.csv"));
    let c = fx.orgs.c.clone();
    let p = fx.orgs.p.clone();
    let anon = Tier::Unspecified;

    cases
        .check(
            "disclosure: partial states are refused to an anonymised user",
            async {
                let ch = fx.channel(2).await;
                let q = spec("apc", &["provider_code"], vec![], &[count()], anon);
                refused(
                    aggregate(&ch, Some(fx.token("anon_nat")), q.clone(), false).await,
                    Code::PermissionDenied,
                    "never partial states",
                )?;
                // Naming itself as the client a node acts for changes nothing: only a node, with
                // its own token over its own certificate, may send x-sus-on-behalf.
                let mut r = with_token(
                    v1::AggregateRequest {
                        format: WIRE_FORMAT_VERSION,
                        query: Some(q),
                        shards: vec![0, 1, 2, 3],
                        linearizable: true,
                        finish: false,
                        distinct_counts: false,
                    },
                    Some(fx.token("anon_comm")),
                );
                r.metadata_mut().insert(
                    "x-sus-on-behalf",
                    fx.token("anon_comm").parse().map_err(|_| "header")?,
                );
                refused(
                    v1::query_client::QueryClient::new(ch)
                        .aggregate(r)
                        .await
                        .map(|r| r.into_inner()),
                    Code::PermissionDenied,
                    "x-sus-on-behalf is sent only by a node of the cluster",
                )
            },
        )
        .await;

    cases
        .check(
            "disclosure: Scan and Flight are refused at the anonymised tier",
            async {
                let scan = crate::fixture::scan(
                    fx,
                    fx.token("anon_nat"),
                    v1::ScanRequest {
                        dataset: "apc".into(),
                        ..Default::default()
                    },
                )
                .await;
                refused(scan, Code::PermissionDenied, "aggregates only")?;
                let mut flight = arrow_flight::FlightClient::new(fx.channel(3).await);
                flight
                    .add_header(
                        "authorization",
                        &format!("Bearer {}", fx.token("anon_prov")),
                    )
                    .map_err(|e| e.to_string())?;
                let e = flight
                    .get_flight_info(arrow_flight::FlightDescriptor::new_path(vec!["apc".into()]))
                    .await
                    .err()
                    .ok_or("Flight answered an anonymised user")?;
                match e {
                    arrow_flight::error::FlightError::Tonic(s) => {
                        refused::<()>(Err(*s), Code::PermissionDenied, "aggregates only")
                    }
                    e => Err(format!("Flight: {e}")),
                }
            },
        )
        .await;

    cases
        .check(
            "disclosure: min and max are refused, even nationally",
            async {
                for (func, field, says) in [
                    (Func::Min, "price", "min of price"),
                    (Func::Max, "spell_los", "max of spell_los"),
                    (Func::Max, "age_at_activity", "max of age_at_activity"),
                ] {
                    let q = spec("apc", &[], vec![], &[(func, field, "")], anon);
                    refused(ask(fx, "anon_nat", q).await, Code::PermissionDenied, says)?;
                }
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "disclosure: sums of anything but money, days and flags are refused",
            async {
                for (field, says) in [
                    ("age_at_activity", "sum of age_at_activity"),
                    ("episode_number", "sum of episode_number"),
                    ("restricted", "sum of restricted"),
                    ("warnings", "sum of warnings"),
                ] {
                    let q = spec("apc", &[], vec![], &[(Func::Sum, field, "")], anon);
                    refused(ask(fx, "anon_comm", q).await, Code::PermissionDenied, says)?;
                }
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "disclosure: exact ages, dates, clinical codes and identifiers are refused as \
             group-by and as filters (national user included), naming the field and the \
             allow-list, without echoing the value",
            async {
                for user in ["anon_nat", "anon_comm"] {
                    for (field, dataset) in IDENTIFYING {
                        let q = spec(dataset, &[field], vec![], &[count()], anon);
                        let r = ask(fx, user, q).await;
                        refused(
                            r,
                            Code::PermissionDenied,
                            &format!("{field} cannot be grouped"),
                        )?;
                        let value = "4010232137";
                        let f = filter(field, Op::Eq, &[value], "", "");
                        let q = spec(dataset, &[], vec![f], &[count()], anon);
                        match ask(fx, user, q).await {
                            Err(s)
                                if s.code() == Code::PermissionDenied
                                    && s.message()
                                        .contains(&format!("{field} cannot be filtered"))
                                    && s.message().contains("provider_code")
                                    && !s.message().contains(value) => {}
                            // A value that does not parse for the field is refused before.
                            Err(s) if s.code() == Code::InvalidArgument => {
                                let f = filter(field, Op::Range, &[], "", "");
                                let q = spec(dataset, &[], vec![f], &[count()], anon);
                                refused(
                                    ask(fx, user, q).await,
                                    Code::PermissionDenied,
                                    &format!("{field} cannot be filtered"),
                                )?;
                            }
                            other => {
                                return Err(format!("{user} filtering on {field}: {other:?}"));
                            }
                        }
                    }
                    for field in ["price", "nhs_number_valid", "pbr_excluded", "episode_los"] {
                        let f = filter(field, Op::Range, &[], "1", "");
                        let q = spec("apc", &[], vec![f], &[count()], anon);
                        refused(
                            ask(fx, user, q).await,
                            Code::PermissionDenied,
                            &format!("{field} cannot be filtered"),
                        )?;
                    }
                }
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "disclosure: one key: cells, sums to 2 s.f. and TOTAL follow the rule, and TOTAL \
             minus the shown cells recovers no suppressed cell",
            async {
                let (dataset, pod) = busy_pod(&live, 0)?;
                let by_pod = vec![filter("pod", Op::Eq, &[&pod], "", "")];
                let q = spec(
                    &dataset,
                    &["provider_code"],
                    by_pod,
                    &[count(), sum_price()],
                    anon,
                );
                let t = ask_ok(fx, "anon_nat", q).await?;
                let want = exact(
                    &live,
                    &dataset,
                    |r| r.pod == pod,
                    |r| vec![r.provider.clone()],
                );
                let stars = check_table(&t, 1, &want, "count", 0, Some(("sum_price", 1)))?;
                ensure!(stars >= 2, "the data exercise suppression: {t:?}");
                // From what is shown alone: the hidden cells together hold at most
                // TOTAL's most minus the shown cells' least; each is at least 1.
                let (rows, total) = t.split()?;
                let mut room = range(&total[1])?.1;
                for r in rows.iter().filter(|r| r[1] != "*") {
                    room -= range(&r[1])?.0;
                }
                ensure!(
                    room > stars as i64,
                    "{stars} hidden cells pinned to 1 by a TOTAL of {}",
                    total[1]
                );
                // One small cell alone: the next smallest goes with it.
                let four = one_small_among_large(&live)?;
                let names: Vec<&str> = four.iter().map(String::as_str).collect();
                let only = vec![filter("provider_code", Op::In, &names, "", "")];
                let q = spec(
                    "apc",
                    &["provider_code"],
                    only,
                    &[count(), sum_price()],
                    anon,
                );
                let t = ask_ok(fx, "anon_nat", q).await?;
                let want = exact(
                    &live,
                    "apc",
                    |r| four.contains(&r.provider),
                    |r| vec![r.provider.clone()],
                );
                let stars = check_table(&t, 1, &want, "count", 0, Some(("sum_price", 1)))?;
                ensure!(stars == 2, "{four:?}: {stars} suppressed cells: {t:?}");
                // A commissioner's own table follows the same rule.
                let q = spec(
                    "apc",
                    &["provider_code"],
                    vec![],
                    &[count(), sum_price()],
                    anon,
                );
                let t = ask_ok(fx, "anon_comm", q).await?;
                let want = exact(
                    &live,
                    "apc",
                    |r| r.commissioner == c,
                    |r| vec![r.provider.clone()],
                );
                check_table(&t, 1, &want, "count", 0, Some(("sum_price", 1)))?;
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "disclosure: two keys: every line of the hypercube and the TOTAL leave no suppressed \
             cell derivable",
            async {
                for (user, keep) in [
                    (
                        "anon_nat",
                        Box::new(|_: &Live| true) as Box<dyn Fn(&Live) -> bool>,
                    ),
                    ("anon_comm", Box::new(|r: &Live| r.commissioner == c)),
                ] {
                    let q = spec(
                        "apc",
                        &["provider_code", "pod"],
                        vec![],
                        &[count(), sum_price()],
                        anon,
                    );
                    let t = ask_ok(fx, user, q).await?;
                    let want = exact(&live, "apc", &keep, |r| {
                        vec![r.provider.clone(), r.pod.clone()]
                    });
                    let stars = check_table(&t, 2, &want, "count", 0, Some(("sum_price", 1)))?;
                    ensure!(
                        stars >= 2 || user == "anon_comm",
                        "{user}: the data exercise suppression"
                    );
                    let q = spec(
                        "apc",
                        &["pod", "activity_month"],
                        vec![],
                        &[count(), sum_price()],
                        anon,
                    );
                    let t = ask_ok(fx, user, q).await?;
                    let want = exact(&live, "apc", &keep, |r| {
                        vec![r.pod.clone(), r.month.clone()]
                    });
                    if user == "anon_comm" {
                        // A commissioner's scope is never exempt.
                        let stars = check_table(&t, 2, &want, "count", 0, Some(("sum_price", 1)))?;
                        ensure!(stars >= 2, "{user}: the data exercise suppression");
                    }
                    let q = spec(
                        "op",
                        &["provider_code", "activity_month"],
                        vec![],
                        &[count()],
                        anon,
                    );
                    let t = ask_ok(fx, user, q).await?;
                    let want = exact(&live, "op", &keep, |r| {
                        vec![r.provider.clone(), r.month.clone()]
                    });
                    check_table(&t, 2, &want, "count", 0, None)?;
                }
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "disclosure: queries differing by one month (IN lists and ranges) never pin a small \
             count",
            async {
                let months: Vec<String> = live
                    .iter()
                    .map(|r| r.month.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let (dataset, pod) = busy_pod(&live, 0)?;
                let mut small_pairs = 0;
                for (user, ds, extra) in [
                    ("anon_comm", "apc".to_string(), None),
                    ("anon_nat", dataset.clone(), Some(pod.clone())),
                ] {
                    let keep = |r: &Live| match &extra {
                        None => r.commissioner == c,
                        Some(pod) => &r.pod == pod,
                    };
                    let exact_month = exact(&live, &ds, keep, |r| {
                        vec![r.provider.clone(), r.month.clone()]
                    });
                    let more = |f: v1::Filter| {
                        let mut v = vec![f];
                        v.extend(extra.iter().map(|p| filter("pod", Op::Eq, &[p], "", "")));
                        v
                    };
                    for i in 1..months.len() {
                        let with: Vec<&str> = months[..=i].iter().map(String::as_str).collect();
                        let without: Vec<&str> = months[..i].iter().map(String::as_str).collect();
                        let pairs = [
                            (
                                filter("activity_month", Op::In, &with, "", ""),
                                filter("activity_month", Op::In, &without, "", ""),
                            ),
                            (
                                filter("activity_month", Op::Range, &[], &months[0], &months[i]),
                                filter(
                                    "activity_month",
                                    Op::Range,
                                    &[],
                                    &months[0],
                                    &months[i - 1],
                                ),
                            ),
                        ];
                        for (a, b) in pairs {
                            let ta = ask_ok(
                                fx,
                                user,
                                spec(&ds, &["provider_code"], more(a), &[count()], anon),
                            )
                            .await?;
                            let tb = ask_ok(
                                fx,
                                user,
                                spec(&ds, &["provider_code"], more(b), &[count()], anon),
                            )
                            .await?;
                            let b_of: BTreeMap<&String, &String> =
                                tb.rows.iter().map(|r| (&r[0], &r[1])).collect();
                            for r in &ta.rows {
                                let zero = "0".to_string();
                                let before = b_of.get(&r[0]).copied().unwrap_or(&zero);
                                let x = if r[0] == "TOTAL" {
                                    exact_month
                                        .iter()
                                        .filter(|(k, _)| k[1] == months[i])
                                        .map(|(_, v)| v[0])
                                        .sum()
                                } else {
                                    exact_month
                                        .get(&vec![r[0].clone(), months[i].clone()])
                                        .map_or(0, |v| v[0])
                                };
                                if !(1..=7).contains(&x) {
                                    continue;
                                }
                                small_pairs += 1;
                                let possible = small_differences(&r[1], before)?;
                                ensure!(
                                    possible.contains(&x),
                                    "the true {x} is not among {possible:?}"
                                );
                                ensure!(
                                    possible.len() >= 2,
                                    "{user}: {} in {}: {} vs {} pins {x}",
                                    r[0],
                                    months[i],
                                    r[1],
                                    before
                                );
                            }
                        }
                    }
                }
                ensure!(small_pairs > 0, "no small month difference was tried");
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "disclosure: a coarser grouping against a finer one never pins a suppressed cell",
            async {
                let coarse = ask_ok(
                    fx,
                    "anon_nat",
                    spec("apc", &["provider_code"], vec![], &[count()], anon),
                )
                .await?;
                let fine = ask_ok(
                    fx,
                    "anon_nat",
                    spec("apc", &["provider_code", "pod"], vec![], &[count()], anon),
                )
                .await?;
                let exact_fine = exact(
                    &live,
                    "apc",
                    |_| true,
                    |r| vec![r.provider.clone(), r.pod.clone()],
                );
                let mut tried = 0;
                for m in coarse.split()?.0 {
                    let line: Vec<&Vec<String>> =
                        fine.rows.iter().filter(|r| r[0] == m[0]).collect();
                    let hidden: Vec<&&Vec<String>> = line.iter().filter(|r| r[2] == "*").collect();
                    if hidden.is_empty() || m[1] == "*" {
                        continue;
                    }
                    let (lo, hi) = range(&m[1])?;
                    let (mut least, mut most) = (lo, hi);
                    for r in line.iter().filter(|r| r[2] != "*") {
                        let (l, h) = range(&r[2])?;
                        least -= h;
                        most -= l;
                    }
                    for h in &hidden {
                        let x = exact_fine[&h[..2].to_vec()][0];
                        if !(1..=7).contains(&x) {
                            continue;
                        }
                        tried += 1;
                        // The others hidden in the line are at least 1 each.
                        let others = hidden.len() as i64 - 1;
                        let top = (most - others).min(7);
                        let bottom = if others == 0 { least.max(1) } else { 1 };
                        ensure!(
                            top > bottom,
                            "{:?} = {x} pinned by the margin {}",
                            &h[..2],
                            m[1]
                        );
                    }
                }
                ensure!(tried > 0, "no suppressed small cell under a shown margin");
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "disclosure: a boolean summed is controlled like a count",
            async {
                let (dataset, pod) = busy_pod(&live, 3)?;
                let q = spec(
                    &dataset,
                    &["provider_code"],
                    vec![filter("pod", Op::Eq, &[&pod], "", "")],
                    &[count(), (Func::Sum, "pbr_excluded", "excluded")],
                    anon,
                );
                let t = ask_ok(fx, "anon_nat", q).await?;
                let want = exact(
                    &live,
                    &dataset,
                    |r| r.pod == pod,
                    |r| vec![r.provider.clone()],
                );
                check_table(&t, 1, &want, "count", 0, None)?;
                let e = t.col("excluded")?;
                let n = t.col("count")?;
                let (rows, _) = t.split()?;
                let mut small = 0;
                for r in rows {
                    let v = want[&r[..1].to_vec()][3];
                    if r[n] == "*" || (1..=7).contains(&v) {
                        // Hidden with its records, or small itself.
                        small += usize::from((1..=7).contains(&v));
                        ensure!(r[e] == "*", "{}: excluded {} for exact {v}", r[0], r[e]);
                    } else {
                        // Shown by the rule, or hidden to protect another cell of its margin.
                        ensure!(
                            r[e] == count_rule(v) || (r[e] == "*" && v > 7),
                            "{}: excluded {} for exact {v}",
                            r[0],
                            r[e]
                        );
                    }
                }
                ensure!(small > 0, "no provider had 1-7 excluded records");
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "disclosure: the national exemption covers only dataset, period and point of delivery",
            async {
                // Exact for England by month and pod.
                let q = spec(
                    "apc",
                    &["activity_month", "pod"],
                    vec![],
                    &[count(), sum_price()],
                    anon,
                );
                let t = ask_ok(fx, "anon_nat", q).await?;
                let want = exact(
                    &live,
                    "apc",
                    |_| true,
                    |r| vec![r.month.clone(), r.pod.clone()],
                );
                let (rows, total) = t.split()?;
                ensure!(
                    rows.len() == want.len(),
                    "{} rows for {} groups",
                    rows.len(),
                    want.len()
                );
                let mut small = 0;
                for r in rows {
                    let v = want[&r[..2].to_vec()];
                    small += usize::from((1..=7).contains(&v[0]));
                    ensure!(
                        r[2] == v[0].to_string() && r[3] == v[1].to_string(),
                        "{r:?} for {v:?}"
                    );
                }
                ensure!(
                    small > 0,
                    "the exemption shows some small national figure exactly"
                );
                let all: i64 = want.values().map(|v| v[0]).sum();
                ensure!(total[2] == all.to_string(), "TOTAL {} for {all}", total[2]);
                let fy = financial_year(&live[0].month)?;
                let q = spec(
                    "op",
                    &["pod"],
                    vec![filter("financial_year", Op::Eq, &[&fy], "", "")],
                    &[count()],
                    anon,
                );
                let t = ask_ok(fx, "anon_nat", q).await?;
                for r in t.split()?.0 {
                    ensure!(
                        r[1] != "*",
                        "a national figure by pod and year was suppressed: {r:?}"
                    );
                }
                // Any finer breakdown, or a narrower scope, gets the full control.
                let controlled = |t: &Shown| -> Result<(), String> {
                    let n = t.col("count")?;
                    for r in &t.rows {
                        ensure!(
                            r[n] == "*" || r[n].parse::<i64>().is_ok_and(|v| v % 5 == 0),
                            "{r:?} not controlled"
                        );
                    }
                    Ok(())
                };
                for (user, group_by, filters) in [
                    ("anon_nat", vec!["pod", "sex"], vec![]),
                    ("anon_nat", vec!["pod", "age_band"], vec![]),
                    (
                        "anon_nat",
                        vec!["activity_month"],
                        vec![filter("provider_code", Op::Eq, &[&p], "", "")],
                    ),
                    (
                        "anon_nat",
                        vec!["pod"],
                        vec![filter("hrg_chapter", Op::Ne, &["UZ"], "", "")],
                    ),
                    ("anon_comm", vec!["pod"], vec![]),
                    ("anon_prov", vec!["activity_month"], vec![]),
                ] {
                    let q = spec("apc", &group_by, filters, &[count()], anon);
                    controlled(&ask_ok(fx, user, q).await?)
                        .map_err(|e| format!("{user} {group_by:?}: {e}"))?;
                }
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "disclosure: order and limit show a prefix of the table ordered by shown values, \
             with the TOTAL of every row",
            async {
                let (dataset, pod) = busy_pod(&live, 0)?;
                let by_pod = vec![filter("pod", Op::Eq, &[&pod], "", "")];
                let base = spec(&dataset, &["provider_code"], by_pod, &[count()], anon);
                let full = ask_ok(fx, "anon_nat", base.clone()).await?;
                let limited = ask_ok(
                    fx,
                    "anon_nat",
                    v1::QuerySpec {
                        order: vec![v1::Order {
                            column: "count".into(),
                            descending: false,
                        }],
                        limit: 3,
                        ..base.clone()
                    },
                )
                .await?;
                let (rows, total) = full.split()?;
                let (lrows, ltotal) = limited.split()?;
                ensure!(
                    total == ltotal,
                    "TOTAL {ltotal:?} with a limit, {total:?} without"
                );
                ensure!(lrows.len() == 3, "{} rows", lrows.len());
                ensure!(
                    lrows[0][1] == "*",
                    "the limit kept no suppressed row: {lrows:?}"
                );
                let mut sorted: Vec<&Vec<String>> = rows.iter().collect();
                let key = |r: &Vec<String>| r[1].parse::<i64>().map_or(-1, |v| v);
                sorted.sort_by_key(|r| key(r));
                ensure!(
                    lrows.iter().zip(&sorted).all(|(a, b)| a == *b),
                    "{lrows:?} is not the first rows of {sorted:?}"
                );
                // The suppressed cells keep the same `*`: the limit cut them, not revealed them.
                refused(
                    ask(
                        fx,
                        "anon_nat",
                        v1::QuerySpec {
                            aggregates: vec![v1::Aggregate {
                                func: Func::Sum as i32,
                                field: "price".into(),
                                name: String::new(),
                            }],
                            order: vec![v1::Order {
                                column: "__records".into(),
                                descending: true,
                            }],
                            ..base
                        },
                    )
                    .await,
                    Code::InvalidArgument,
                    "cannot order by __records",
                )
            },
        )
        .await;

    cases
        .check(
            "disclosure: Activity (Database Counts) at the anonymised tier is a controlled table",
            async {
                let admin = fx.cluster.client(&[1, 2, 3]);
                for (user, only) in [("anon_nat", None), ("anon_prov", Some(p.clone()))] {
                    let exact = admin
                        .activity("apc", None, None, sus_client::ReadFrom::Leader)
                        .await
                        .map_err(|e| e.to_string())?;
                    let exact: BTreeMap<Vec<String>, [i64; 4]> = exact
                        .into_iter()
                        .filter(|((prov, _), _)| only.as_ref().is_none_or(|o| o == prov))
                        .map(|((prov, m), c)| (vec![prov, m], [c[0] as i64, c[1] as i64, 0, 0]))
                        .collect();
                    let request = v1::ActivityRequest {
                        format: WIRE_FORMAT_VERSION,
                        dataset: "apc".into(),
                        shards: vec![0],
                        linearizable: true,
                        ..Default::default()
                    };
                    let reply = v1::query_client::QueryClient::new(fx.channel(2).await)
                        .activity(with_token(request, Some(fx.token(user))))
                        .await
                        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                        .into_inner();
                    ensure!(
                        reply.rows.is_empty(),
                        "{user}: exact rows at the anonymised tier"
                    );
                    let t = shown(
                        &sus_proto::partial::ipc_to_batch(&reply.table)
                            .map_err(|e| e.to_string())?,
                    )?;
                    ensure!(
                        t.columns
                            == [
                                "provider",
                                "month",
                                "inserted",
                                "replaced",
                                "deleted",
                                "bulk_deleted",
                                "stale"
                            ],
                        "{:?}",
                        t.columns
                    );
                    // Every shard, not only the one named; inserted and replaced as the rule
                    // shows them.
                    let stars = check_table(&t, 2, &exact, "inserted", 0, None)?;
                    ensure!(
                        stars > 0 || user == "anon_prov",
                        "{user}: no suppression exercised"
                    );
                    check_table(&t, 2, &exact, "replaced", 1, None)?;
                }
                let request = v1::ActivityRequest {
                    format: WIRE_FORMAT_VERSION,
                    dataset: "apc".into(),
                    tier: Tier::Pseudonymised as i32,
                    ..Default::default()
                };
                refused(
                    v1::query_client::QueryClient::new(fx.channel(1).await)
                        .activity(with_token(request, Some(fx.token("anon_nat"))))
                        .await,
                    Code::PermissionDenied,
                    "its highest tier is anonymised",
                )
            },
        )
        .await;

    cases
        .check(
            "disclosure: the Database Counts and Trust Statement reports work at the anonymised tier, controlled",
            async {
                let client = fx.cluster.client_as(
                    &[1, 2, 3],
                    Default::default(),
                    Some(fx.token("anon_prov").to_string()),
                );
                let b = sus_client::report::database_counts(
                    &client,
                    None,
                    None,
                    None,
                    sus_client::ReadFrom::Leader,
                )
                .await
                .map_err(|e| e.to_string())?;
                let t = shown(&b)?;
                ensure!(!t.rows.is_empty(), "an empty report");
                let records = t.col("records")?;
                let exact_held = exact(
                    &live,
                    "apc",
                    |r| r.provider == p,
                    |r| vec![r.provider.clone(), r.month.clone()],
                );
                for r in t.rows.iter().filter(|r| r[1] == "apc") {
                    ensure!(r[0] == p, "another provider's row: {r:?}");
                    let v = exact_held
                        .get(&vec![r[0].clone(), r[2].clone()])
                        .map_or(0, |v| v[0]);
                    ensure!(
                        r[records] == "*" || r[records] == count_rule(v),
                        "records {} for exact {v}",
                        r[records]
                    );
                }
                // The Trust Statement too: controlled rows and each dataset's controlled TOTAL.
                let month = exact_held
                    .iter()
                    .max_by_key(|(_, v)| v[0])
                    .map(|(k, _)| k[1].clone())
                    .ok_or("no month")?;
                let b = sus_client::report::trust_statement(
                    &client,
                    &p,
                    &month,
                    None,
                    sus_client::ReadFrom::Leader,
                )
                .await
                .map_err(|e| e.to_string())?;
                let t = shown(&b)?;
                let activity = t.col("activity")?;
                let want = exact(
                    &live,
                    "apc",
                    |r| r.provider == p && r.month == month,
                    |_| vec![],
                );
                let total = t
                    .rows
                    .iter()
                    .find(|r| r[0] == "TOTAL" && r[1] == "apc")
                    .ok_or("no apc TOTAL")?;
                ensure!(
                    total[activity] == count_rule(want[&Vec::new()][0]),
                    "apc TOTAL activity {} for exact {}",
                    total[activity],
                    want[&Vec::new()][0]
                );
                for r in &t.rows {
                    ensure!(
                        r[activity] == "*" || r[activity].parse::<i64>().is_ok_and(|v| v % 5 == 0),
                        "statement row {r:?} not controlled"
                    );
                }
                Ok(())
            },
        )
        .await;
}
