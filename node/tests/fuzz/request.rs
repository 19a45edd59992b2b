//! Targets `flight_command` and `query_spec`: what a reader sends.
//!
//! `flight_command`: the JSON body of a Flight command or ticket, generated as JSON of the right
//! shape with hostile values and as mutated bytes of valid commands, read as the Flight service
//! reads it, checked against the request limits, then parsed against the dataset's fields.
//!
//! `query_spec`: aggregate query specs (dataset, filters with any operator and values, group-by,
//! aggregates, view) checked against the limits, parsed, and run by the query engine over a real
//! store holding the seed submissions; and scans of random columns with the same filters.
//!
//! Every request must end in an answer or an `InvalidArgument` or `NotFound` refusal with a
//! message; nothing may panic or fail the node.

use crate::engine::{self, Budget, Report, Tally};
use crate::submission::{ByteEdit, INTERESTING, Seeds, apply_bytes, byte_edit};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};
use sus_node::Error;
use sus_node::ingest::local::{LocalConfig, LocalStore};
use sus_node::limits::QueryLimits;
use sus_node::model::Dataset;
use sus_node::query::{PatientKey, aggregate, scan};
use sus_node::query::{Query, parse_dataset, parse_filters, parse_view};
use sus_node::schema::stored_schema;
use sus_node::server::FlightRequest;
use sus_proto::partial::Partial;
use sus_proto::v1;

/// Derived fields a query may name beside the stored columns.
const DERIVED: &[&str] = &[
    "activity_month",
    "financial_year",
    "age_band",
    "hrg_chapter",
    "nhs_number_valid",
    "gp_practice_valid",
    "commissioner_valid",
    "diagnosis_coded",
    "ungrouped",
];

/// Every field name of every dataset.
fn names() -> Vec<String> {
    let mut names: Vec<String> = DERIVED.iter().map(|s| s.to_string()).collect();
    for ds in Dataset::ALL {
        for f in stored_schema(ds).fields() {
            if !names.contains(f.name()) {
                names.push(f.name().clone());
            }
        }
    }
    names
}

/// A text of a request: a field name, a known value, or anything.
fn text() -> impl Strategy<Value = String> {
    let names = names();
    prop_oneof![
        4 => prop::sample::select(names),
        3 => prop::sample::select(INTERESTING.to_vec()).prop_map(str::to_string),
        2 => prop::sample::select(vec!["apc", "op", "ec", "APC", "2024-25", "2024-09", "RXX", "15F", "NHFDD", "0-4", "90+", "AA"]).prop_map(str::to_string),
        2 => "\\PC{0,16}",
        1 => (0usize..400).prop_map(|n| "x".repeat(n)),
    ]
}

fn values() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        6 => prop::collection::vec(text(), 0..4),
        1 => (0usize..12_000).prop_map(|n| (0..n).map(|i| i.to_string()).collect()),
    ]
}

fn filter(fields: Vec<String>) -> impl Strategy<Value = v1::Filter> {
    let field = prop_oneof![3 => prop::sample::select(fields), 1 => text()];
    (field, -1i32..5, values(), text(), text()).prop_map(|(field, op, values, min, max)| {
        v1::Filter {
            field,
            op,
            values,
            min,
            max,
        }
    })
}

/// A spec mostly about one dataset's own fields (so that many get past the parser), sometimes
/// about anything.
fn spec() -> impl Strategy<Value = v1::QuerySpec> {
    prop::sample::select(Dataset::ALL.to_vec()).prop_flat_map(|ds| {
        let mut fields: Vec<String> = DERIVED.iter().map(|s| s.to_string()).collect();
        fields.extend(stored_schema(ds).fields().iter().map(|f| f.name().clone()));
        let field = prop_oneof![3 => prop::sample::select(fields.clone()), 1 => text()];
        let aggregate = (
            prop_oneof![4 => 0i32..5, 1 => -1i32..7],
            field.clone(),
            prop_oneof![3 => Just(String::new()), 1 => text()],
        )
            .prop_map(|(func, field, name)| v1::Aggregate { func, field, name });
        (
            prop_oneof![8 => Just(ds.to_string()), 1 => text()],
            prop::collection::vec(filter(fields), 0..4),
            prop::collection::vec(field, 0..4),
            prop::collection::vec(aggregate, 0..4),
            prop_oneof![6 => Just(None), 1 => text().prop_map(|freeze| Some(v1::View { freeze }))],
        )
    })
    .prop_map(|(dataset, filters, group_by, aggregates, view)| v1::QuerySpec {
        dataset,
        filters,
        group_by,
        aggregates,
        view,
        ..Default::default()
    })
}

/// A refusal is fine if it is a caller's error with a message.
fn refusal(e: Error, tally: &mut Tally, what: &str) -> Result<(), String> {
    match e {
        Error::InvalidArgument(m) | Error::NotFound(m) | Error::ReplicaBehind(m)
            if !m.trim().is_empty() =>
        {
            tally.note(format!("{what}: refused"));
            Ok(())
        }
        other => Err(format!(
            "{what}: a caller's request failed the node: {other}"
        )),
    }
}

#[derive(Debug, Clone)]
enum Command {
    /// JSON of the command's shape.
    Shaped(Value),
    /// A valid command's bytes, mutated.
    Mutated(Value, Vec<ByteEdit>),
}

fn json_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => text().prop_map(Value::String),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => Just(Value::Null),
        1 => prop::collection::vec(text(), 0..3).prop_map(|v| json!(v)),
        1 => Just(json!({"a": [1, {"b": null}]})),
    ]
}

fn command() -> impl Strategy<Value = Value> {
    let filter = (
        text(),
        prop_oneof![prop::sample::select(vec!["eq", "=", "ne", "!=", "in", "range"]).prop_map(str::to_string), text()],
        values(),
        text(),
        text(),
    )
        .prop_map(|(field, op, values, min, max)| json!({"field": field, "op": op, "values": values, "min": min, "max": max}));
    (
        prop_oneof![6 => prop::sample::select(vec!["apc", "op", "ec"]).prop_map(str::to_string), 1 => text()],
        prop::collection::vec(text(), 0..4),
        prop::collection::vec(filter, 0..3),
        prop_oneof![4 => Just(Value::Null), 1 => json_text()],
        prop_oneof![4 => Just(Value::Null), 1 => any::<i64>().prop_map(|n| json!(n)), 1 => json_text()],
        prop_oneof![
            3 => Just(Value::Null),
            2 => prop::sample::select(vec!["identifiable", "pseudonymised", "anonymised"]).prop_map(|t| json!(t)),
            1 => json_text()
        ],
        prop_oneof![6 => Just(None), 1 => ("[a-z_]{1,10}", json_text()).prop_map(Some)],
    )
        .prop_map(|(dataset, columns, filters, freeze, shard, tier, extra)| {
            let mut v = json!({
                "dataset": dataset, "columns": columns, "filters": filters,
                "freeze": freeze, "shard": shard, "tier": tier,
            });
            if let (Some((k, x)), Some(map)) = (extra, v.as_object_mut()) {
                map.insert(k, x);
            }
            v
        })
}

pub fn flight(budget: &Budget) -> Report {
    let strategy = prop_oneof![
        3 => command().prop_map(Command::Shaped),
        2 => (command(), prop::collection::vec(byte_edit(), 1..4)).prop_map(|(v, e)| Command::Mutated(v, e)),
    ];
    let limits = QueryLimits::default();
    engine::run("flight_command", budget, strategy, |c, tally| {
        let bytes = match c {
            Command::Shaped(v) => serde_json::to_vec(v).map_err(|e| e.to_string())?,
            Command::Mutated(v, edits) => {
                let mut b = serde_json::to_vec(v).map_err(|e| e.to_string())?;
                apply_bytes(&mut b, edits);
                b
            }
        };
        let req = match FlightRequest::parse(&bytes, "the ticket") {
            Ok(req) => req,
            Err(e) => return refusal(e, tally, "parse"),
        };
        let checked = (|| {
            let filters = req.wire_filters()?;
            req.wire_tier()?;
            let view = req.freeze.clone().map(|freeze| v1::View { freeze });
            limits.check_scan(&req.dataset, &filters, &req.columns, view.as_ref())?;
            let dataset = parse_dataset(&req.dataset)?;
            parse_filters(dataset, &filters)?;
            sus_node::query::exec::output_schema(dataset, &req.columns)?;
            Ok::<_, Error>(())
        })();
        match checked {
            Ok(()) => {
                tally.note("a valid request");
                Ok(())
            }
            Err(e) => refusal(e, tally, "check"),
        }
    })
}

pub fn query(budget: &Budget, seeds: &Seeds) -> Report {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = LocalStore::open(&LocalConfig {
        data_dir: dir.path().join("node"),
        refdata_dir: seeds.refdata.clone(),
        grouper_output: None,
    })
    .expect("open a node");
    for (i, (meta, bytes)) in seeds.files.iter().enumerate() {
        node.submit(meta, &format!("seed{i}.csv"), bytes)
            .expect("seed");
    }
    let names = names();
    let columns = prop::collection::vec(
        prop_oneof![4 => prop::sample::select(names), 1 => text()],
        0..5,
    );
    let strategy = (spec(), columns, any::<Index>());
    let limits = QueryLimits::default();
    let key = PatientKey([7; 16]);
    engine::run(
        "query_spec",
        budget,
        strategy,
        |(spec, columns, _), tally| {
            if let Err(e) = limits.check_spec(spec) {
                return refusal(e, tally, "limits");
            }
            match Query::from_proto(spec) {
                Ok(q) => match aggregate(node.store(), &q, &key) {
                    Ok((partial, _, _)) => {
                        // What a coordinator does with it: the partial over the wire, then finished.
                        let ipc = partial
                            .to_ipc()
                            .map_err(|e| format!("partial to IPC: {e}"))?;
                        let back = Partial::from_ipc(&ipc)
                            .map_err(|e| format!("partial from IPC: {e}"))?;
                        let table = back.finish(&[], 0).map_err(|e| format!("finish: {e}"))?;
                        tally.note(if table.num_rows() == 0 {
                            "aggregated (no groups)"
                        } else {
                            "aggregated (groups)"
                        });
                    }
                    Err(e) => refusal(e, tally, "aggregate")?,
                },
                Err(e) => refusal(e, tally, "parse")?,
            }
            // The same filters on a scan of the columns asked.
            let scanned = (|| {
                let dataset = parse_dataset(&spec.dataset)?;
                let filters = parse_filters(dataset, &spec.filters)?;
                let mut rows = 0;
                scan(
                    node.store(),
                    dataset,
                    (&filters, &[]),
                    columns,
                    &parse_view(spec.view.as_ref()),
                    &mut |b| {
                        rows += b.num_rows();
                        Ok(())
                    },
                )?;
                Ok::<_, Error>(rows)
            })();
            match scanned {
                Ok(rows) => {
                    tally.note(if rows == 0 {
                        "scanned (no rows)"
                    } else {
                        "scanned (rows)"
                    });
                    Ok(())
                }
                Err(e) => refusal(e, tally, "scan"),
            }
        },
    )
}
