//! SQL over a source of shards held in memory: what is pushed to the nodes, and that answers
//! are the SQL's whatever was pushed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use futures::TryStreamExt;
use std::sync::{Arc, Mutex};
use sus_proto::v1;
use sus_sql::{BatchStream, Code, Error, Session, ShardScan, Source};

#[derive(Debug)]
struct Shards {
    schema: SchemaRef,
    /// Rows per shard: (provider, price pence, nhs number).
    rows: Vec<Vec<(&'static str, i64, &'static str)>>,
    scans: Mutex<Vec<ShardScan>>,
    aggregates: Mutex<Vec<v1::QuerySpec>>,
    refuse: Option<Code>,
    /// The caller reads at the anonymised tier: aggregates come back as text.
    anonymised: bool,
}

impl Shards {
    fn new(refuse: Option<Code>) -> Arc<Shards> {
        Arc::new(Shards {
            schema: Arc::new(Schema::new(vec![
                Field::new("provider_code", DataType::Utf8, true),
                Field::new("price", DataType::Int64, true),
                Field::new("nhs_number", DataType::Utf8, true),
            ])),
            rows: vec![
                vec![("RRV", 100, "a"), ("RRV", 250, "b"), ("RRV", 40, "a")],
                vec![("RAJ", 700, "c"), ("RAJ", 10, "d")],
                vec![],
            ],
            scans: Mutex::default(),
            aggregates: Mutex::default(),
            refuse,
            anonymised: false,
        })
    }
}

#[async_trait::async_trait]
impl Source for Shards {
    fn schema(&self, _dataset: &str) -> sus_sql::Result<SchemaRef> {
        Ok(self.schema.clone())
    }
    fn filterable(&self, _dataset: &str) -> Vec<String> {
        vec!["provider_code".into(), "price".into()]
    }
    fn anonymised(&self) -> bool {
        self.anonymised
    }

    fn shards(&self) -> Vec<u32> {
        (0..self.rows.len() as u32).collect()
    }
    async fn scan(&self, scan: ShardScan) -> sus_sql::Result<BatchStream> {
        if let Some(code) = self.refuse {
            return Err(Error::source_error(code, "refused by the node"));
        }
        self.scans.lock().unwrap().push(scan.clone());
        // A node applies its filters: here only the provider equality, to show that what a
        // node leaves is filtered again by the SQL.
        let rows: Vec<_> = self.rows[scan.shard as usize]
            .iter()
            .filter(|(p, _, _)| {
                scan.filters.iter().all(|f| {
                    f.field != "provider_code"
                        || f.op != v1::filter::Op::Eq as i32
                        || f.values[0] == *p
                })
            })
            .collect();
        let all = RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        let indices: Vec<usize> = scan
            .columns
            .iter()
            .map(|c| self.schema.index_of(c).unwrap())
            .collect();
        let batch = all.project(&indices).unwrap();
        Ok(Box::pin(futures::stream::iter([Ok(batch)])))
    }

    /// A native aggregate as a node answers it (keys as text, values as Int64), for the few
    /// shapes the tests push: by provider or nothing; count, sum/min/max of price; provider
    /// equality and price ranges.
    async fn aggregate(&self, spec: v1::QuerySpec) -> sus_sql::Result<RecordBatch> {
        if let Some(code) = self.refuse {
            return Err(Error::source_error(code, "refused by the node"));
        }
        self.aggregates.lock().unwrap().push(spec.clone());
        let keep = |(p, price, _): &&(&str, i64, &str)| {
            spec.filters.iter().all(|f| match f.field.as_str() {
                "provider_code" => f.values.iter().any(|v| v == p),
                "price" => {
                    (f.min.is_empty() || *price >= f.min.parse::<i64>().unwrap())
                        && (f.max.is_empty() || *price <= f.max.parse::<i64>().unwrap())
                }
                other => panic!("no filter on {other} in this fake"),
            })
        };
        let mut groups: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
        for row in self.rows.iter().flatten().filter(keep) {
            let key = if spec.group_by.is_empty() {
                String::new()
            } else {
                row.0.to_string()
            };
            let acc = groups.entry(key).or_insert_with(|| {
                spec.aggregates
                    .iter()
                    .map(|a| match a.func {
                        2 => i64::MAX,
                        3 => i64::MIN,
                        _ => 0,
                    })
                    .collect()
            });
            for (v, a) in acc.iter_mut().zip(&spec.aggregates) {
                *v = match a.func {
                    0 => *v + 1,
                    1 => *v + row.1,
                    2 => (*v).min(row.1),
                    _ => (*v).max(row.1),
                };
            }
        }
        let mut columns: Vec<(String, arrow::array::ArrayRef)> = Vec::new();
        if !spec.group_by.is_empty() {
            columns.push((
                "provider_code".into(),
                Arc::new(StringArray::from_iter_values(groups.keys())),
            ));
        }
        for (i, _) in spec.aggregates.iter().enumerate() {
            columns.push((
                format!("a{i}"),
                Arc::new(Int64Array::from_iter_values(groups.values().map(|v| v[i]))),
            ));
        }
        let table = RecordBatch::try_from_iter(columns).unwrap();
        if !self.anonymised {
            return Ok(table);
        }
        // As the disclosure control leaves a table: text, small counts suppressed.
        let text: Vec<(String, arrow::array::ArrayRef)> = table
            .schema()
            .fields()
            .iter()
            .zip(table.columns())
            .map(|(f, c)| {
                let c = arrow::compute::cast(c, &DataType::Utf8).unwrap();
                let c: StringArray = c
                    .as_string::<i32>()
                    .iter()
                    .map(|v| {
                        v.map(|v| {
                            if v.len() == 1 {
                                "*".to_string()
                            } else {
                                v.to_string()
                            }
                        })
                    })
                    .collect();
                (f.name().clone(), Arc::new(c) as arrow::array::ArrayRef)
            })
            .collect();
        Ok(RecordBatch::try_from_iter(text).unwrap())
    }
}

async fn run(source: Arc<Shards>, sql: &str) -> sus_sql::Result<Vec<RecordBatch>> {
    let session = Session::new(source, 64 << 20)?;
    let stream = session.execute(sql).await?;
    stream.try_collect().await.map_err(Error::from)
}

fn int(batches: &[RecordBatch], column: usize) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(column)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

#[tokio::test]
async fn sums_and_counts_over_every_shard() {
    let source = Shards::new(None);
    // `abs(price)`: an expression, so computed here over scanned rows, not pushed down.
    let out = run(source.clone(), "SELECT count(*), sum(abs(price)) FROM op")
        .await
        .unwrap();
    assert_eq!(int(&out, 0), [5]);
    assert_eq!(int(&out, 1), [1100]);
    let scans = source.scans.lock().unwrap().clone();
    assert_eq!(scans.len(), 3, "one scan per shard: {scans:?}");
    assert!(
        scans.iter().all(|s| s.columns == ["price"]),
        "only the column used: {scans:?}"
    );
}

#[tokio::test]
async fn filters_are_pushed_and_still_applied() {
    let source = Shards::new(None);
    let out = run(
        source.clone(),
        "SELECT provider_code, sum(price + 0) AS pence FROM op \
         WHERE provider_code = 'RRV' AND price > 50 GROUP BY provider_code",
    )
    .await
    .unwrap();
    assert_eq!(
        int(&out, 1),
        [350],
        "100 + 250: the node left 40 in, the SQL took it out"
    );
    let scans = source.scans.lock().unwrap().clone();
    let fields: Vec<&str> = scans[0].filters.iter().map(|f| f.field.as_str()).collect();
    assert!(
        fields.contains(&"provider_code") && fields.contains(&"price"),
        "{scans:?}"
    );
}

#[tokio::test]
async fn a_transformed_column_is_filtered_here_not_on_the_node() {
    let source = Shards::new(None);
    let out = run(
        source.clone(),
        "SELECT count(*) FROM op WHERE nhs_number = 'a'",
    )
    .await
    .unwrap();
    assert_eq!(int(&out, 0), [2]);
    assert!(
        source
            .scans
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.filters.is_empty()),
        "no filter on nhs_number reaches a node"
    );
}

#[tokio::test]
async fn limit_and_time_views() {
    let source = Shards::new(None);
    let out = run(source.clone(), "SELECT provider_code FROM op LIMIT 2")
        .await
        .unwrap();
    assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    run(
        source.clone(),
        "SELECT provider_code FROM op_at('2024-25 M06')",
    )
    .await
    .unwrap();
    let scans = source.scans.lock().unwrap().clone();
    assert!(
        scans
            .iter()
            .any(|s| s.view.as_deref() == Some("2024-25 M06")),
        "{scans:?}"
    );
    run(source.clone(), "SELECT count(*) FROM op_at('2024-25 M06')")
        .await
        .unwrap();
    let pushed = source.aggregates.lock().unwrap().clone();
    assert_eq!(
        pushed[0].view.as_ref().map(|v| v.freeze.as_str()),
        Some("2024-25 M06")
    );
    let e = run(source, "SELECT * FROM op_at(3)").await.unwrap_err();
    assert!(e.to_string().contains("freeze point"), "{e}");
}

#[tokio::test]
async fn statements_that_change_anything_are_refused() {
    for sql in [
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO op VALUES ('X', 1, 'z')",
        "DROP TABLE op",
        "SET datafusion.execution.batch_size = 1",
        "COPY op TO '/tmp/out.csv'",
        "",
    ] {
        let e = run(Shards::new(None), sql).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{sql}: {e}");
    }
}

#[tokio::test]
async fn a_node_refusal_keeps_its_code_and_message() {
    let e = run(
        Shards::new(Some(Code::PermissionDenied)),
        "SELECT count(*) FROM op",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.to_string(), "refused by the node");
}

#[tokio::test]
async fn unknown_tables_and_columns_name_what_is_missing() {
    let e = run(Shards::new(None), "SELECT nope FROM op")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let e = run(Shards::new(None), "SELECT * FROM patients")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("patients"), "{e}");
    let listed = run(Shards::new(None), "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name")
        .await
        .unwrap();
    let names: Vec<String> = listed
        .iter()
        .flat_map(|b| {
            let c = b
                .column(0)
                .as_string_view_opt()
                .map(|v| v.iter().map(|s| s.unwrap().to_string()).collect::<Vec<_>>());
            c.unwrap_or_else(|| {
                b.column(0)
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.unwrap().to_string())
                    .collect()
            })
        })
        .collect();
    assert_eq!(names, ["apc", "ec", "op"]);
    let _ = Array::len(listed[0].column(0));
}

#[tokio::test]
async fn aggregates_the_nodes_compute_are_pushed_down_and_answer_as_sql_would() {
    let source = Shards::new(None);
    let out = run(
        source.clone(),
        "SELECT provider_code, count(*) AS n, sum(price) AS pence, max(price) AS top FROM op \
         WHERE price >= 20 GROUP BY provider_code ORDER BY provider_code",
    )
    .await
    .unwrap();
    assert_eq!(int(&out, 1), [1, 3], "RAJ 700; RRV 100, 250, 40");
    assert_eq!(int(&out, 2), [700, 390]);
    assert_eq!(int(&out, 3), [700, 250]);
    assert!(
        source.scans.lock().unwrap().is_empty(),
        "no row was scanned"
    );
    let pushed = source.aggregates.lock().unwrap().clone();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].group_by, ["provider_code"]);
    assert_eq!(pushed[0].filters[0].min, "20");

    // Nothing matched: one row, count 0 and the sum NULL, as SQL says.
    let source = Shards::new(None);
    let out = run(
        source.clone(),
        "SELECT count(*), sum(price) FROM op WHERE provider_code = 'NONE'",
    )
    .await
    .unwrap();
    assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    assert_eq!(int(&out, 0), [0]);
    assert!(out[0].column(1).is_null(0));
    assert_eq!(source.aggregates.lock().unwrap().len(), 1);

    // Groups only (`DISTINCT`): a native query needs an aggregate, so a hidden count is asked.
    let source = Shards::new(None);
    let out = run(
        source.clone(),
        "SELECT DISTINCT provider_code FROM op ORDER BY 1",
    )
    .await
    .unwrap();
    assert_eq!(out.iter().map(|b| b.num_columns()).max(), Some(1));
    assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    assert_eq!(source.aggregates.lock().unwrap()[0].aggregates.len(), 1);
}

#[tokio::test]
async fn aggregates_the_nodes_cannot_compute_exactly_run_over_scans() {
    for sql in [
        "SELECT provider_code, sum(price) FROM op WHERE provider_code < 'RZZ' GROUP BY 1",
        "SELECT count(*) FROM op WHERE nhs_number = 'a'",
        "SELECT provider_code, sum(price * 2) FROM op GROUP BY 1",
        "SELECT upper(provider_code), count(*) FROM op GROUP BY 1",
    ] {
        let source = Shards::new(None);
        run(source.clone(), sql).await.unwrap();
        assert!(
            source.aggregates.lock().unwrap().is_empty(),
            "{sql} was pushed"
        );
        assert!(
            !source.scans.lock().unwrap().is_empty(),
            "{sql} scanned nothing"
        );
    }
}

#[tokio::test]
async fn the_anonymised_tier_answers_one_pushed_down_aggregate_as_the_control_leaves_it() {
    let anonymised = || {
        let mut s = Arc::into_inner(Shards::new(None)).unwrap();
        s.anonymised = true;
        Arc::new(s)
    };
    let source = anonymised();
    let session = Session::new(source.clone(), 64 << 20).unwrap();
    let sql = "SELECT provider_code AS provider, sum(price) AS pence, count(*) AS n \
               FROM op WHERE price >= 20 GROUP BY provider_code";
    let schema = session.schema(sql).await.unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["provider", "pence", "n"]);
    assert!(
        schema
            .fields()
            .iter()
            .all(|f| f.data_type() == &DataType::Utf8)
    );
    let out: Vec<RecordBatch> = session
        .execute(sql)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let text = |c: usize| -> Vec<String> {
        out.iter()
            .flat_map(|b| {
                b.column(c)
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(text(0), ["RAJ", "RRV"]);
    assert_eq!(text(1), ["700", "390"]);
    assert_eq!(text(2), ["*", "*"], "counts as the control leaves them");
    assert!(source.scans.lock().unwrap().is_empty(), "no row was read");

    for refused in [
        "SELECT * FROM op",
        "SELECT provider_code, count(*) FROM op GROUP BY 1 ORDER BY 2 DESC",
        "SELECT count(DISTINCT provider_code) FROM op",
        "SELECT provider_code, sum(price) * 2 FROM op GROUP BY 1",
    ] {
        let session = Session::new(anonymised(), 64 << 20).unwrap();
        let e = match session.execute(refused).await {
            Err(e) => e,
            Ok(_) => panic!("{refused} was answered"),
        };
        assert_eq!(e.code(), Code::PermissionDenied, "{refused}: {e}");
        assert!(e.to_string().contains("disclosure control"), "{e}");
    }
}
