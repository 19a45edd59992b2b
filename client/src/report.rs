//! Monthly reports (domain spec section 7), built from pushed-down aggregates.
//!
//! - **Monthly Trust Statement** for one provider and activity month, as at a view: a row per
//!   commissioner × dataset × point of delivery × HRG (the spell HRG for admitted patient care)
//!   with activity, excess bed days, the priced total (pence) and the excluded count, then a
//!   grand total.
//! - **Monthly Database Counts** per provider, dataset and activity month: records held as at the
//!   view; records inserted, replaced, deleted, bulk deleted and stale in the period (the changes
//!   after the `since` freeze point up to the view); and the data-quality percentages (valid NHS
//!   number, known GP practice, known commissioner, coded primary diagnosis, ungrouped `UZ01Z`),
//!   to one decimal place, computed in integers.
//!
//! At the anonymised tier both come from disclosure-controlled tables: figures are text (`*`
//! where suppressed, counts rounded to 5, sums to 2 significant figures), the Trust Statement
//! ends with a controlled `TOTAL` row per dataset (a grand total of rounded figures would not
//! be one), and Database Counts' percentages are computed from the shown figures (`*` where
//! either is suppressed).

use crate::query::{ReadFrom, Tier, build};
use crate::{Client, Error, Result};
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use std::collections::BTreeMap;
use std::sync::Arc;
use sus_proto::v1::{QuerySpec, View};

const DATASETS: [&str; 3] = ["apc", "op", "ec"];

/// The Monthly Trust Statement of `provider` for `month` (`YYYY-MM`), at the caller's highest
/// tier.
pub async fn trust_statement(
    client: &Client,
    provider: &str,
    month: &str,
    view: Option<View>,
    read: ReadFrom,
) -> Result<RecordBatch> {
    trust_statement_at(client, Tier::Unspecified, provider, month, view, read).await
}

/// [`trust_statement`] at `tier` (`Tier::Unspecified`: the caller's highest).
pub async fn trust_statement_at(
    client: &Client,
    tier: Tier,
    provider: &str,
    month: &str,
    view: Option<View>,
    read: ReadFrom,
) -> Result<RecordBatch> {
    let anonymised = client.reads_anonymised(tier as i32);
    let mut rows: Vec<(Vec<String>, [i64; 4])> = Vec::new();
    let mut text_rows: Vec<(Vec<String>, [String; 4])> = Vec::new();
    let specs = DATASETS.map(|dataset| {
        let hrg = if dataset == "apc" { "spell_hrg" } else { "hrg" };
        QuerySpec {
            dataset: dataset.into(),
            filters: vec![
                build::eq("provider_code", provider),
                build::eq("activity_month", month),
            ],
            group_by: vec!["commissioner_code".into(), "pod".into(), hrg.into()],
            aggregates: vec![
                build::count(),
                build::sum("excess_bed_days"),
                build::sum("price"),
                build::sum("pbr_excluded"),
            ],
            view: view.clone(),
            tier: tier as i32,
            ..QuerySpec::default()
        }
    });
    // The three datasets at once: the statement waits for the slowest, not for their sum.
    let results =
        futures::future::try_join_all(specs.iter().map(|s| client.aggregate(s, read))).await?;
    for (dataset, result) in DATASETS.into_iter().zip(results) {
        let batch = result.batch;
        if anonymised {
            text_rows.extend(controlled_rows(&batch, dataset)?);
            continue;
        }
        for r in 0..batch.num_rows() {
            let text = |c: usize| {
                let col = batch.column(c).as_string::<i32>();
                if col.is_valid(r) {
                    col.value(r).to_string()
                } else {
                    String::new()
                }
            };
            let n = |c: usize| batch.column(c).as_primitive::<Int64Type>().value(r);
            rows.push((
                vec![text(0), dataset.to_string(), text(1), text(2)],
                [n(3), n(4), n(5), n(6)],
            ));
        }
    }
    let keys = ["commissioner", "dataset", "pod", "hrg"];
    let values = ["activity", "excess_bed_days", "price_pence", "excluded"];
    if anonymised {
        // Each dataset's TOTAL after every row.
        text_rows.sort_by_key(|(k, _)| (k[0] == "TOTAL", k.clone()));
        return text_table(&keys, &values, &text_rows, "statement");
    }
    rows.sort();
    let mut total = [0i64; 4];
    for (_, v) in &rows {
        for (t, x) in total.iter_mut().zip(v) {
            *t += x;
        }
    }
    rows.push((
        vec!["TOTAL".into(), String::new(), String::new(), String::new()],
        total,
    ));
    let mut fields: Vec<Field> = keys
        .iter()
        .map(|k| Field::new(*k, DataType::Utf8, false))
        .collect();
    fields.extend(
        values
            .iter()
            .map(|v| Field::new(*v, DataType::Int64, false)),
    );
    let mut columns: Vec<ArrayRef> = (0..keys.len())
        .map(|i| key_column(rows.iter().map(|r| r.0[i].as_str())))
        .collect();
    columns.extend(
        (0..values.len())
            .map(|i| Arc::new(rows.iter().map(|r| r.1[i]).collect::<Int64Array>()) as ArrayRef),
    );
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::Cluster(format!("building the statement: {e}")))
}

/// The controlled rows of one dataset's statement table (commissioner, pod, HRG, then the four
/// figures as text), its `TOTAL` row named for the dataset.
fn controlled_rows(batch: &RecordBatch, dataset: &str) -> Result<Vec<(Vec<String>, [String; 4])>> {
    let text = |c: usize, r: usize| -> Result<String> {
        let col = batch
            .column(c)
            .as_string_opt::<i32>()
            .ok_or_else(|| Error::Cluster(format!("controlled table: column {c} is not text")))?;
        Ok(if col.is_valid(r) {
            col.value(r).to_string()
        } else {
            String::new()
        })
    };
    (0..batch.num_rows())
        .map(|r| {
            Ok((
                vec![text(0, r)?, dataset.to_string(), text(1, r)?, text(2, r)?],
                [text(3, r)?, text(4, r)?, text(5, r)?, text(6, r)?],
            ))
        })
        .collect()
}

/// A report of text keys and text figures.
fn text_table<const N: usize>(
    keys: &[&str],
    values: &[&str],
    rows: &[(Vec<String>, [String; N])],
    what: &str,
) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = keys
        .iter()
        .chain(values)
        .map(|k| Field::new(*k, DataType::Utf8, false))
        .collect();
    fields.truncate(keys.len() + N);
    let mut columns: Vec<ArrayRef> = (0..keys.len())
        .map(|i| key_column(rows.iter().map(|r| r.0[i].as_str())))
        .collect();
    columns.extend((0..N).map(|i| key_column(rows.iter().map(|r| r.1[i].as_str()))));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::Cluster(format!("building the {what}: {e}")))
}

/// Monthly Database Counts, optionally for one provider, at the caller's highest tier; the
/// period runs from `since` (a freeze point, exclusive; `None`: the beginning) to `view`.
pub async fn database_counts(
    client: &Client,
    provider: Option<&str>,
    view: Option<View>,
    since: Option<View>,
    read: ReadFrom,
) -> Result<RecordBatch> {
    database_counts_at(client, Tier::Unspecified, provider, view, since, read).await
}

/// [`database_counts`] at `tier` (`Tier::Unspecified`: the caller's highest).
pub async fn database_counts_at(
    client: &Client,
    tier: Tier,
    provider: Option<&str>,
    view: Option<View>,
    since: Option<View>,
    read: ReadFrom,
) -> Result<RecordBatch> {
    if client.reads_anonymised(tier as i32) {
        return controlled_counts(client, provider, view, since, read).await;
    }
    let flags = FLAGS;
    // (provider, dataset, month) → records, flag counts, period counts.
    type Row = (i64, Vec<i64>, [u64; 5]);
    let mut rows: BTreeMap<(String, String, String), Row> = BTreeMap::new();
    for dataset in DATASETS {
        for ((p, month), counts) in client
            .activity(dataset, view.clone(), since.clone(), read)
            .await?
        {
            if provider.is_none_or(|want| want == p) {
                rows.entry((p, dataset.to_string(), month))
                    .or_insert_with(|| (0, vec![0; flags.len()], [0; 5]))
                    .2 = counts;
            }
        }
        let mut aggregates = vec![build::count()];
        aggregates.extend(flags.iter().map(|f| build::sum(f)));
        let spec = QuerySpec {
            dataset: dataset.into(),
            filters: provider
                .map(|p| vec![build::eq("provider_code", p)])
                .unwrap_or_default(),
            group_by: vec!["provider_code".into(), "activity_month".into()],
            aggregates,
            view: view.clone(),
            tier: tier as i32,
            ..QuerySpec::default()
        };
        let batch = client.aggregate(&spec, read).await?.batch;
        for r in 0..batch.num_rows() {
            let text = |c: usize| batch.column(c).as_string::<i32>().value(r).to_string();
            let n = |c: usize| batch.column(c).as_primitive::<Int64Type>().value(r);
            let row = rows
                .entry((text(0), dataset.to_string(), text(1)))
                .or_insert_with(|| (0, vec![0; flags.len()], [0; 5]));
            row.0 = n(2);
            row.1 = (0..flags.len()).map(|i| n(3 + i)).collect();
        }
    }
    let rows: Vec<(Vec<String>, Row)> = rows
        .into_iter()
        .map(|((p, d, m), row)| (vec![p, d, m], row))
        .collect();
    let mut fields = vec![
        Field::new("provider", DataType::Utf8, false),
        Field::new("dataset", DataType::Utf8, false),
        Field::new("activity_month", DataType::Utf8, false),
        Field::new("records", DataType::Int64, false),
    ];
    let period = PERIOD;
    fields.extend(
        period
            .iter()
            .map(|n| Field::new(*n, DataType::Int64, false)),
    );
    let names = PERCENTAGES;
    fields.extend(names.iter().map(|n| Field::new(*n, DataType::Utf8, false)));
    let mut columns: Vec<ArrayRef> = (0..3)
        .map(|i| key_column(rows.iter().map(|r| r.0[i].as_str())))
        .collect();
    columns.push(Arc::new(rows.iter().map(|r| r.1.0).collect::<Int64Array>()));
    for i in 0..period.len() {
        columns.push(Arc::new(
            rows.iter().map(|r| r.1.2[i] as i64).collect::<Int64Array>(),
        ));
    }
    for i in 0..names.len() {
        let pct: StringArray = rows
            .iter()
            .map(|r| Some(percent(r.1.1[i], r.1.0)))
            .collect();
        columns.push(Arc::new(pct));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::Cluster(format!("building the counts: {e}")))
}

/// The data-quality flags of Database Counts, summed as counts.
const FLAGS: [&str; 5] = [
    "nhs_number_valid",
    "gp_practice_valid",
    "commissioner_valid",
    "diagnosis_coded",
    "ungrouped",
];

/// The period's changes of Database Counts.
const PERIOD: [&str; 5] = ["inserted", "replaced", "deleted", "bulk_deleted", "stale"];

/// The percentage columns of Database Counts.
const PERCENTAGES: [&str; 5] = [
    "valid_nhs_number_pct",
    "valid_gp_practice_pct",
    "valid_commissioner_pct",
    "coded_diagnosis_pct",
    "ungrouped_pct",
];

/// Database Counts at the anonymised tier, from the controlled tables of every dataset (each
/// table's `TOTAL` row left out; a partition absent from a table holds 0).
async fn controlled_counts(
    client: &Client,
    provider: Option<&str>,
    view: Option<View>,
    since: Option<View>,
    read: ReadFrom,
) -> Result<RecordBatch> {
    // (provider, dataset, month) → records, flag counts, period counts, as shown.
    type Row = [String; 11];
    let zero = || -> Row { std::array::from_fn(|_| "0".to_string()) };
    let mut rows: BTreeMap<(String, String, String), Row> = BTreeMap::new();
    for dataset in DATASETS {
        let table = client
            .activity_controlled(dataset, view.clone(), since.clone())
            .await?;
        for r in text_rows(&table, 2, PERIOD.len())? {
            if r.0[0] == "TOTAL" || provider.is_some_and(|want| want != r.0[0]) {
                continue;
            }
            let row = rows
                .entry((r.0[0].clone(), dataset.to_string(), r.0[1].clone()))
                .or_insert_with(zero);
            row[6..].clone_from_slice(&r.1);
        }
        let mut aggregates = vec![build::count()];
        aggregates.extend(FLAGS.iter().map(|f| build::sum(f)));
        let spec = QuerySpec {
            dataset: dataset.into(),
            filters: provider
                .map(|p| vec![build::eq("provider_code", p)])
                .unwrap_or_default(),
            group_by: vec!["provider_code".into(), "activity_month".into()],
            aggregates,
            view: view.clone(),
            tier: Tier::Anonymised as i32,
            ..QuerySpec::default()
        };
        let table = client.aggregate(&spec, read).await?.batch;
        for r in text_rows(&table, 2, 1 + FLAGS.len())? {
            if r.0[0] == "TOTAL" {
                continue;
            }
            let row = rows
                .entry((r.0[0].clone(), dataset.to_string(), r.0[1].clone()))
                .or_insert_with(zero);
            row[..6].clone_from_slice(&r.1);
        }
    }
    let out: Vec<(Vec<String>, [String; 11])> = rows
        .into_iter()
        .map(|((p, d, m), row)| {
            let mut shown: [String; 11] = std::array::from_fn(|_| String::new());
            shown[0] = row[0].clone();
            shown[1..6].clone_from_slice(&row[6..]);
            for i in 0..FLAGS.len() {
                shown[6 + i] = shown_percent(&row[1 + i], &row[0]);
            }
            (vec![p, d, m], shown)
        })
        .collect();
    let mut values = vec!["records"];
    values.extend(PERIOD);
    values.extend(PERCENTAGES);
    text_table(
        &["provider", "dataset", "activity_month"],
        &values,
        &out,
        "counts",
    )
}

/// The rows of a controlled table: `keys` key columns then `n` figures, all text (a null key,
/// as in the `TOTAL` row, reads as empty).
#[allow(clippy::type_complexity)]
fn text_rows(
    batch: &RecordBatch,
    keys: usize,
    n: usize,
) -> Result<Vec<(Vec<String>, Vec<String>)>> {
    if batch.num_columns() != keys + n {
        return Err(Error::Cluster(format!(
            "controlled table: {} columns, expected {}",
            batch.num_columns(),
            keys + n
        )));
    }
    let columns = (0..keys + n)
        .map(|c| {
            batch
                .column(c)
                .as_string_opt::<i32>()
                .ok_or_else(|| Error::Cluster(format!("controlled table: column {c} is not text")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((0..batch.num_rows())
        .map(|r| {
            let cell = |c: usize| {
                let col = columns[c];
                if col.is_valid(r) {
                    col.value(r).to_string()
                } else {
                    String::new()
                }
            };
            (
                (0..keys).map(cell).collect(),
                (keys..keys + n).map(cell).collect(),
            )
        })
        .collect())
}

/// A text column of one key of the report's rows.
fn key_column<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(values.map(Some).collect::<StringArray>())
}

/// A percentage of two controlled figures: `*` where either is suppressed (a percentage of the
/// exact values would give them away), else [`percent`] of the shown figures.
pub fn shown_percent(part: &str, whole: &str) -> String {
    match (part.parse::<i64>(), whole.parse::<i64>()) {
        (Ok(part), Ok(whole)) => percent(part, whole),
        _ => "*".into(),
    }
}

/// `part / whole` as a percentage to one decimal place, rounded half up, in integers.
pub fn percent(part: i64, whole: i64) -> String {
    if whole <= 0 {
        return "-".into();
    }
    let tenths = (part * 1000 + whole / 2) / whole;
    format!("{}.{}", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentages_round_half_up_in_integers() {
        assert_eq!(super::percent(1, 3), "33.3");
        assert_eq!(super::percent(2, 3), "66.7");
        assert_eq!(super::percent(1, 8), "12.5");
        assert_eq!(super::percent(0, 5), "0.0");
        assert_eq!(super::percent(5, 5), "100.0");
        assert_eq!(super::percent(1, 0), "-");
    }

    #[test]
    fn percentages_of_controlled_figures_use_the_shown_values() {
        assert_eq!(super::shown_percent("15", "20"), "75.0");
        assert_eq!(super::shown_percent("*", "20"), "*");
        assert_eq!(super::shown_percent("10", "*"), "*");
        assert_eq!(super::shown_percent("0", "0"), "-");
    }
}
