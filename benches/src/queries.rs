//! The six benchmark queries on a sus cluster, answered as canonical rows (the definitions the
//! peers implement are in `benches/peers/peers.py`; both are checked against each other on every
//! run).

use crate::{Row, sort_rows};
use anyhow::{Result, bail};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use sus_client::query::build;
use sus_client::{Client, ReadFrom};
use sus_proto::v1::QuerySpec;

pub const QUERIES: [&str; 6] = ["Q1", "Q2", "Q3", "Q4", "Q5", "Q6"];
const DATASETS: [&str; 3] = ["apc", "op", "ec"];

/// The parameters of the selective queries.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// Q3 and Q6: one provider.
    pub provider: String,
    /// Q3: one quarter, inclusive dates.
    pub quarter: (String, String),
    /// Q4: an HRG chapter.
    pub chapter: String,
    /// Q6: one activity month, `YYYY-MM`.
    pub month: String,
}

/// What each query is, for the results table.
pub fn describe(q: &str) -> &'static str {
    match q {
        "Q1" => "sum(price) by provider, activity month (apc+op+ec)",
        "Q2" => "national count and sum(price) by financial year, POD (apc+op+ec)",
        "Q3" => "one provider, one quarter: count, sum(price) by treatment function (op)",
        "Q4" => "count, sum(price) by commissioner, age band; one HRG chapter (apc)",
        "Q5" => "distinct patients by provider (op)",
        "Q6" => "Monthly Trust Statement: one provider, one month (apc+op+ec)",
        _ => "",
    }
}

/// The datasets a query reads (its rows/s counts all their live rows).
pub fn datasets(q: &str) -> &'static [&'static str] {
    match q {
        "Q3" | "Q5" => &["op"],
        "Q4" => &["apc"],
        _ => &DATASETS,
    }
}

/// The parameters as `peers.py` takes them.
pub fn params_json(q: &str, p: &Params) -> Value {
    match q {
        "Q3" => json!({"provider": p.provider, "start": p.quarter.0, "end": p.quarter.1}),
        "Q4" => json!({"chapter": p.chapter}),
        "Q6" => json!({"provider": p.provider, "month": p.month}),
        _ => json!({}),
    }
}

fn spec(dataset: &str, group_by: &[&str], aggregates: Vec<sus_proto::v1::Aggregate>) -> QuerySpec {
    QuerySpec {
        dataset: dataset.into(),
        group_by: group_by.iter().map(|g| g.to_string()).collect(),
        aggregates,
        ..QuerySpec::default()
    }
}

/// Runs query `q` on the cluster: canonical rows (sorted) and the rows the nodes scanned.
pub async fn run(client: &Client, q: &str, p: &Params) -> Result<(Vec<Row>, u64)> {
    let read = ReadFrom::Leader;
    let (rows, keys, scanned) = match q {
        "Q1" | "Q2" => {
            let specs: Vec<QuerySpec> = DATASETS
                .iter()
                .map(|ds| {
                    if q == "Q1" {
                        spec(
                            ds,
                            &["provider_code", "activity_month"],
                            vec![build::sum("price")],
                        )
                    } else {
                        spec(
                            ds,
                            &["financial_year", "pod"],
                            vec![build::count(), build::sum("price")],
                        )
                    }
                })
                .collect();
            // The three datasets at once, as a reporting client would; merged by key.
            let (a, b, c) = tokio::join!(
                client.aggregate(&specs[0], read),
                client.aggregate(&specs[1], read),
                client.aggregate(&specs[2], read)
            );
            let mut merged: BTreeMap<Vec<Option<String>>, Vec<i64>> = BTreeMap::new();
            let mut scanned = 0;
            for r in [a?, b?, c?] {
                scanned += r.rows_scanned;
                for row in batch_rows(&r.batch, 2)? {
                    let (k, v) = row.split_at(2);
                    let key = k.iter().map(|x| x.as_str().map(str::to_string)).collect();
                    let acc = merged.entry(key).or_insert_with(|| vec![0; v.len()]);
                    for (a, x) in acc.iter_mut().zip(v) {
                        *a += x.as_i64().unwrap_or(0);
                    }
                }
            }
            let rows = merged
                .into_iter()
                .map(|(k, v)| {
                    let mut row: Row = k.into_iter().map(Value::from).collect();
                    row.extend(v.into_iter().map(Value::from));
                    row
                })
                .collect();
            (rows, 2, scanned)
        }
        "Q3" => {
            let mut s = spec(
                "op",
                &["treatment_function_code"],
                vec![build::count(), build::sum("price")],
            );
            s.filters = vec![
                build::eq("provider_code", &p.provider),
                build::range("activity_date", &p.quarter.0, &p.quarter.1),
            ];
            let r = client.aggregate(&s, read).await?;
            (batch_rows(&r.batch, 1)?, 1, r.rows_scanned)
        }
        "Q4" => {
            let mut s = spec(
                "apc",
                &["commissioner_code", "age_band"],
                vec![build::count(), build::sum("price")],
            );
            s.filters = vec![build::eq("hrg_chapter", &p.chapter)];
            let r = client.aggregate(&s, read).await?;
            (batch_rows(&r.batch, 2)?, 2, r.rows_scanned)
        }
        "Q5" => {
            let r = client
                .aggregate(
                    &spec("op", &["provider_code"], vec![build::patients()]),
                    read,
                )
                .await?;
            (batch_rows(&r.batch, 1)?, 1, r.rows_scanned)
        }
        "Q6" => {
            let batch =
                sus_client::report::trust_statement(client, &p.provider, &p.month, None, read)
                    .await?;
            (statement_rows(&batch)?, 4, 0)
        }
        other => bail!("unknown query {other}"),
    };
    let mut rows = rows;
    sort_rows(&mut rows, keys);
    Ok((rows, scanned))
}

/// The group keys of query `q`'s rows.
pub fn keys(q: &str) -> usize {
    match q {
        "Q3" | "Q5" => 1,
        "Q6" => 4,
        _ => 2,
    }
}

/// A SQL string literal.
fn text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Query `q` in SQL over the cluster's tables (`docs/sql.md`), as an analyst would write it: the
/// derived fields (`activity_month`, `financial_year`, `age_band`, `hrg_chapter`) are columns.
pub fn sql(q: &str, p: &Params) -> Result<String> {
    let union = |select: &dyn Fn(&str) -> String| {
        DATASETS
            .iter()
            .map(|ds| select(ds))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    };
    Ok(match q {
        "Q1" => format!(
            "SELECT provider_code, activity_month, sum(pence) FROM ({}) GROUP BY 1, 2",
            union(&|ds| format!(
                "SELECT provider_code, activity_month, sum(price) AS pence FROM {ds} GROUP BY 1, 2"
            ))
        ),
        "Q2" => format!(
            "SELECT financial_year, pod, sum(n), sum(pence) FROM ({}) GROUP BY 1, 2",
            union(&|ds| format!(
                "SELECT financial_year, pod, count(*) AS n, sum(price) AS pence FROM {ds} \
                 GROUP BY 1, 2"
            ))
        ),
        "Q3" => format!(
            "SELECT treatment_function_code, count(*), sum(price) FROM op \
             WHERE provider_code = {} AND activity_date BETWEEN DATE {} AND DATE {} \
             GROUP BY treatment_function_code",
            text(&p.provider),
            text(&p.quarter.0),
            text(&p.quarter.1)
        ),
        "Q4" => format!(
            "SELECT commissioner_code, age_band, count(*), sum(price) FROM apc \
             WHERE hrg_chapter = {} GROUP BY 1, 2",
            text(&p.chapter)
        ),
        // A patient is its NHS number, else its provider and local id: with the provider as the
        // key, the distinct NHS numbers plus the distinct local ids of rows without one.
        "Q5" => "SELECT provider_code, count(DISTINCT nhs_number) \
                 + count(DISTINCT local_patient_id) FILTER (WHERE nhs_number IS NULL) \
                 FROM op GROUP BY provider_code"
            .to_string(),
        "Q6" => union(&|ds| {
            let hrg = if ds == "apc" { "spell_hrg" } else { "hrg" };
            format!(
                "SELECT commissioner_code, '{ds}', pod, {hrg}, count(*), sum(excess_bed_days), \
                 sum(price), sum(CAST(pbr_excluded AS BIGINT)) FROM {ds} \
                 WHERE provider_code = {} AND activity_month = {} \
                 GROUP BY commissioner_code, pod, {hrg}",
                text(&p.provider),
                text(&p.month)
            )
        }),
        other => bail!("unknown query {other}"),
    })
}

/// Runs query `q` in SQL on the cluster (Flight SQL): canonical rows (sorted), as [`run`]'s.
pub async fn run_sql(client: &Client, q: &str, p: &Params) -> Result<Vec<Row>> {
    let batches = client.sql(&sql(q, p)?).await?.collect().await?;
    let keys = keys(q);
    let mut rows = Vec::new();
    for b in &batches {
        let columns = b
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let to = if i < keys {
                    arrow::datatypes::DataType::Utf8
                } else {
                    arrow::datatypes::DataType::Int64
                };
                arrow::compute::cast(c, &to)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let b = RecordBatch::try_new(
            std::sync::Arc::new(arrow::datatypes::Schema::new(
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        arrow::datatypes::Field::new(format!("c{i}"), c.data_type().clone(), true)
                    })
                    .collect::<Vec<_>>(),
            )),
            columns,
        )?;
        rows.extend(batch_rows(&b, keys)?);
    }
    sort_rows(&mut rows, keys);
    Ok(rows)
}

/// Rows of an aggregate result: `keys` text columns (null stays null), then integers.
fn batch_rows(batch: &RecordBatch, keys: usize) -> Result<Vec<Row>> {
    let mut out = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let mut row = Vec::with_capacity(batch.num_columns());
        for c in 0..batch.num_columns() {
            let col = batch.column(c);
            if c < keys {
                let text = col.as_string::<i32>();
                row.push(if text.is_valid(r) {
                    Value::from(text.value(r))
                } else {
                    Value::Null
                });
            } else {
                row.push(Value::from(col.as_primitive::<Int64Type>().value(r)));
            }
        }
        out.push(row);
    }
    Ok(out)
}

/// The statement's lines without its total (checked against them), empty keys as null.
fn statement_rows(batch: &RecordBatch) -> Result<Vec<Row>> {
    let mut rows = batch_rows(batch, 4)?;
    let Some(total) = rows.pop() else {
        bail!("a trust statement without a total line");
    };
    for v in 4..8 {
        let sum: i64 = rows.iter().map(|r| r[v].as_i64().unwrap_or(0)).sum();
        if total[v].as_i64() != Some(sum) {
            bail!(
                "trust statement total {} is not the sum of its lines {sum}",
                total[v]
            );
        }
    }
    for row in &mut rows {
        for k in row.iter_mut().take(4) {
            if k.as_str() == Some("") {
                *k = Value::Null;
            }
        }
    }
    Ok(rows)
}
