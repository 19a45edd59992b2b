//! Section `limits` of the security suite (see `main.rs`): oversized and decompression-bomb input
//! over raw gRPC and Flight. Each is refused naming the limit and the setting that raises it; the
//! nodes' peak memory stays bounded; nothing refused is stored, and the replicas stay identical.

use crate::ensure;
use crate::fixture::{Cases, Fixture, aggregate, filter, refused, spec, with_token};
use arrow::array::{Array, ArrayRef, DictionaryArray, ListArray, RecordBatch, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use bytes::{Buf, BufMut};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sus_proto::WIRE_FORMAT_VERSION;
use sus_proto::v1::{self, Tier, aggregate::Func, filter::Op};
use tonic::Code;
use tonic::transport::Channel;

pub async fn run(fx: &Fixture, cases: &mut Cases) {
    let before = contents(fx).await;
    let hwm_before = peak_memory(fx);
    let ch = fx.channel(1).await;
    let (header, row) = apc_row(fx);

    cases
        .check(
            "limits: a Parquet bomb (one row 2 M times, a few hundred KB) is refused from its \
             footer, naming max_submission_rows",
            async {
                let bomb = parquet_of(&header, &row, 2_000_000, None);
                let bomb_len = bomb.len();
                ensure!(bomb_len < 1 << 20, "the bomb is {bomb_len} bytes");
                let started = Instant::now();
                let result = submit(&ch, fx, "SEC-LIMITS-BOMB", bomb).await;
                refused(
                    result,
                    Code::InvalidArgument,
                    "the submission has 2000000 records: over the limit of 1000000 records per \
                     submission (setting max_submission_rows (--max-submission-rows, \
                     SUS_MAX_SUBMISSION_ROWS))",
                )?;
                let took = started.elapsed();
                eprintln!(
                    "        ({} bytes of Parquet, refused in {took:?})",
                    bomb_len
                );
                ensure!(took < Duration::from_secs(10), "took {took:?}");
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "limits: a list bomb (1,000 rows of 5,000 diagnoses each) is refused from its page \
             headers, naming max_field_bytes",
            async {
                let bomb = parquet_of(&header, &row, 1_000, Some(("secondary_diagnoses", 5_000)));
                ensure!(bomb.len() < 1 << 20, "the bomb is {} bytes", bomb.len());
                refused(
                    submit(&ch, fx, "SEC-LIMITS-LISTS", bomb).await,
                    Code::InvalidArgument,
                    "holds 5000000 values in a row group of 1000 rows: more than lists of at \
                     most 4096 bytes per item can hold (setting max_field_bytes",
                )
            },
        )
        .await;

    cases
        .check(
            "limits: the bombs leave every node's peak memory (VmHWM) within 64 MiB of where it \
             was, and the stored data and replicas unchanged",
            async {
                let hwm = peak_memory(fx);
                for (node, was) in &hwm_before {
                    let now = hwm[node];
                    eprintln!(
                        "        (node {node}: VmHWM {} -> {} MiB)",
                        was >> 20,
                        now >> 20
                    );
                    ensure!(
                        now <= was + (64 << 20),
                        "node {node}: VmHWM {was} -> {now} bytes"
                    );
                }
                let after = contents(fx).await;
                ensure!(
                    after == before,
                    "shard contents changed: {before:?} -> {after:?}"
                );
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "limits: a 50 MB record key, a 10 KB item and a 36-character key are R04 findings \
             naming the limit; none is stored or quoted in the report",
            async {
                let key = header
                    .iter()
                    .position(|h| h == "cds_unique_id")
                    .ok_or("no key column")?;
                let lpi = header
                    .iter()
                    .position(|h| h == "local_patient_id")
                    .ok_or("no local_patient_id column")?;
                let mut w = csv::Writer::from_writer(Vec::new());
                w.write_record(&header).map_err(|e| e.to_string())?;
                let mut huge = row.clone();
                huge[key] = "K".repeat(50 << 20);
                w.write_record(&huge).map_err(|e| e.to_string())?;
                let mut long_item = row.clone();
                long_item[key] = "BSECLIMITS00000002".into();
                long_item[lpi] = "L".repeat(10_000);
                w.write_record(&long_item).map_err(|e| e.to_string())?;
                let mut long_key = row.clone();
                long_key[key] = format!("B{}", "3".repeat(35));
                w.write_record(&long_key).map_err(|e| e.to_string())?;
                let bytes = w.into_inner().map_err(|e| e.to_string())?;
                let (live_before, price_before) = totals(fx).await;
                let reply = submit(&ch, fx, "SEC-LIMITS-KEY", bytes)
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
                ensure!(!reply.accepted, "accepted: {:?}", reply.report);
                let report = reply.report.as_ref().ok_or("a reply without a report")?;
                // Every string of the report (file, findings, examples) is in its Debug text.
                let text = format!("{report:?}");
                ensure!(text.len() < 16 << 10, "a report of {} bytes", text.len());
                let findings = report
                    .rejection
                    .as_ref()
                    .map_or(&[][..], |r| r.issues.as_slice());
                for needle in [
                    "52428800 bytes: over the limit of 4096 bytes per item (setting \
                     max_field_bytes (--max-field-bytes, SUS_MAX_FIELD_BYTES))",
                    "10000 bytes: over the limit of 4096 bytes per item",
                    "36 characters: the data dictionary allows at most 35 (an..35)",
                ] {
                    ensure!(
                        findings
                            .iter()
                            .any(|f| f.rule == "R04-ITEM-FORMAT" && f.message.contains(needle)),
                        "no R04-ITEM-FORMAT finding says '{needle}' in {text}"
                    );
                }
                ensure!(
                    !text.contains("KKKKKKKK") && !text.contains("LLLLLLLL"),
                    "the report quotes a value: {text}"
                );
                let (live, price) = totals(fx).await;
                ensure!(
                    (live, price) == (live_before, price_before),
                    "stored totals changed: {live_before} records, {price_before} p -> {live}, \
                     {price}"
                );
                Ok(())
            },
        )
        .await;

    let five_mib = 5 << 20;
    let too_large = "Error, decoded message length too large: found";
    cases
        .check(
            "limits: a 5 MiB Query request is refused with OUT_OF_RANGE naming max_request_mib",
            async {
                let q = spec(
                    "apc",
                    &[],
                    vec![filter("postcode", Op::Eq, &[&"x".repeat(five_mib)], "", "")],
                    &[(Func::Count, "", "n")],
                    Tier::Unspecified,
                );
                let result = aggregate(&ch, Some(fx.token("nat_id")), q, false).await;
                refused(result.clone(), Code::OutOfRange, too_large)?;
                refused(
                    result,
                    Code::OutOfRange,
                    "this node takes requests to /sus.v1.Query/Aggregate of at most 4194304 \
                     bytes (setting max_request_mib (--max-request-mib, SUS_MAX_REQUEST_MIB))",
                )
            },
        )
        .await;

    cases
        .check(
            "limits: a 5 MiB Login (no token needed) is refused with OUT_OF_RANGE before it is \
             read",
            async {
                let request = v1::LoginRequest {
                    format: WIRE_FORMAT_VERSION,
                    user: "nobody".into(),
                    password: "p".repeat(five_mib),
                    purpose: "security test".into(),
                    ttl_secs: 0,
                };
                let result = v1::admin_client::AdminClient::new(ch.clone())
                    .login(request)
                    .await;
                refused(result, Code::OutOfRange, "setting max_request_mib")
            },
        )
        .await;

    cases
        .check(
            "limits: a 5 MiB Flight command is refused with OUT_OF_RANGE naming max_request_mib",
            async {
                let descriptor = arrow_flight::FlightDescriptor::new_cmd(vec![b' '; five_mib]);
                let result = flight(&ch)
                    .get_flight_info(with_token(descriptor, Some(fx.token("prov_p"))))
                    .await;
                refused(
                    result,
                    Code::OutOfRange,
                    "/arrow.flight.protocol.FlightService/GetFlightInfo of at most 4194304 bytes \
                     (setting max_request_mib",
                )
            },
        )
        .await;

    cases
        .check(
            "limits: a 3 M-value IN list is refused in milliseconds (over the message limit)",
            async {
                let values = vec!["R".to_string(); 3_000_000];
                let mut f = filter("provider_code", Op::In, &[], "", "");
                f.values = values;
                let q = spec(
                    "apc",
                    &[],
                    vec![f],
                    &[(Func::Count, "", "n")],
                    Tier::Unspecified,
                );
                let started = Instant::now();
                let result = aggregate(&ch, Some(fx.token("nat_id")), q, false).await;
                let took = started.elapsed();
                eprintln!("        (refused in {took:?})");
                refused(result, Code::OutOfRange, "setting max_request_mib")?;
                ensure!(took < Duration::from_secs(2), "took {took:?}");
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "limits: a 10,001-value IN list within the message limit is refused in \
             milliseconds, naming max_filter_values",
            async {
                let mut f = filter("provider_code", Op::In, &[], "", "");
                f.values = (0..10_001).map(|i| format!("R{i}")).collect();
                let q = spec(
                    "apc",
                    &[],
                    vec![f],
                    &[(Func::Count, "", "n")],
                    Tier::Unspecified,
                );
                let started = Instant::now();
                let result = aggregate(&ch, Some(fx.token("nat_id")), q, false).await;
                let took = started.elapsed();
                eprintln!("        (refused in {took:?})");
                refused(
                    result,
                    Code::InvalidArgument,
                    "filter on provider_code: 10001 values, over the limit of 10000 per filter \
                     (setting max_filter_values (--max-filter-values, SUS_MAX_FILTER_VALUES))",
                )?;
                ensure!(took < Duration::from_millis(500), "took {took:?}");
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "limits: 33 filters, a 300-byte value and 33 aggregates are refused naming \
             max_filters, max_filter_value_bytes and max_aggregates",
            async {
                let many = (0..33)
                    .map(|_| filter("sex", Op::Eq, &["1"], "", ""))
                    .collect();
                let q = spec(
                    "apc",
                    &[],
                    many,
                    &[(Func::Count, "", "n")],
                    Tier::Unspecified,
                );
                refused(
                    aggregate(&ch, Some(fx.token("nat_id")), q, false).await,
                    Code::InvalidArgument,
                    "33 filters: over the limit of 32 per request (setting max_filters",
                )?;
                let long = "Z".repeat(300);
                let q = spec(
                    "apc",
                    &[],
                    vec![filter("postcode", Op::Eq, &[&long], "", "")],
                    &[(Func::Count, "", "n")],
                    Tier::Unspecified,
                );
                let result = aggregate(&ch, Some(fx.token("nat_id")), q, false).await;
                if let Err(s) = &result {
                    ensure!(!s.message().contains(&long), "the value is quoted back");
                }
                refused(
                    result,
                    Code::InvalidArgument,
                    "a value of the filter on postcode is 300 bytes: over the limit of 256 bytes \
                     (setting max_filter_value_bytes",
                )?;
                let names: Vec<String> = (0..33).map(|i| format!("n{i}")).collect();
                let aggs: Vec<(Func, &str, &str)> = names
                    .iter()
                    .map(|n| (Func::Count, "", n.as_str()))
                    .collect();
                let q = spec("apc", &[], Vec::new(), &aggs, Tier::Unspecified);
                refused(
                    aggregate(&ch, Some(fx.token("nat_id")), q, false).await,
                    Code::InvalidArgument,
                    "33 aggregates: over the limit of 32 per query (setting max_aggregates",
                )
            },
        )
        .await;

    cases
        .check(
            "limits: a scan of 257 columns and a Flight command of 33 filters are refused \
             naming max_columns and max_filters",
            async {
                let request = v1::ScanRequest {
                    format: WIRE_FORMAT_VERSION,
                    dataset: "apc".into(),
                    columns: vec!["provider_code".into(); 257],
                    shards: vec![0],
                    ..Default::default()
                };
                let result = v1::query_client::QueryClient::new(ch.clone())
                    .scan(with_token(request, Some(fx.token("nat_id"))))
                    .await
                    .map(|_| ());
                refused(
                    result,
                    Code::InvalidArgument,
                    "257 columns: over the limit of 256 per request (setting max_columns",
                )?;
                let filters: Vec<serde_json::Value> = (0..33)
                    .map(|_| serde_json::json!({"field": "sex", "op": "eq", "values": ["1"]}))
                    .collect();
                let cmd = serde_json::json!({"dataset": "apc", "filters": filters});
                let descriptor =
                    arrow_flight::FlightDescriptor::new_cmd(serde_json::to_vec(&cmd).unwrap());
                refused(
                    flight(&ch)
                        .get_flight_info(with_token(descriptor, Some(fx.token("prov_p"))))
                        .await,
                    Code::InvalidArgument,
                    "33 filters: over the limit of 32 per request (setting max_filters",
                )
            },
        )
        .await;

    cases
        .check(
            "limits: bytes that are no protobuf message answer INVALID_ARGUMENT (not INTERNAL) \
             on Ingest, Admin, Query and Flight",
            async {
                let garbage = vec![0x0f, 0x00, 0x0a, 0xff];
                for path in [
                    "/sus.v1.Ingest/Submit",
                    "/sus.v1.Admin/Login",
                    "/sus.v1.Admin/Status",
                    "/sus.v1.Query/Aggregate",
                    "/sus.v1.Query/Scan",
                    "/arrow.flight.protocol.FlightService/GetFlightInfo",
                    "/arrow.flight.protocol.FlightService/DoGet",
                ] {
                    let result = raw_call(&ch, path, garbage.clone(), fx.token("admin")).await;
                    refused(
                        result,
                        Code::InvalidArgument,
                        &format!("the request to {path} is not a valid protobuf message"),
                    )
                    .map_err(|e| format!("{path}: {e}"))?;
                }
                Ok(())
            },
        )
        .await;

    cases
        .check(
            "limits: Flight DoPut and DoExchange take no client data (UNIMPLEMENTED)",
            async {
                let data = futures::stream::iter(vec![arrow_flight::FlightData::default(); 3]);
                refused(
                    flight(&ch)
                        .do_put(with_token(data, Some(fx.token("admin"))))
                        .await
                        .map(|_| ()),
                    Code::Unimplemented,
                    "Ingest.Submit",
                )?;
                let data = futures::stream::iter(vec![arrow_flight::FlightData::default(); 3]);
                refused(
                    flight(&ch)
                        .do_exchange(with_token(data, Some(fx.token("admin"))))
                        .await
                        .map(|_| ()),
                    Code::Unimplemented,
                    "not offered",
                )
            },
        )
        .await;

    cases
        .check(
            "limits: after every refusal the replicas of each shard are identical",
            async {
                fx.cluster
                    .wait_replicas_agree(Duration::from_secs(60))
                    .await
                    .map(|_| ())
            },
        )
        .await;
}

/// Every replica's (shard, node) -> (applied index, checksum), once the replicas agree.
async fn contents(fx: &Fixture) -> BTreeMap<(u32, u64), String> {
    fx.cluster
        .wait_replicas_agree(Duration::from_secs(60))
        .await
        .expect("replicas agree")
        .into_iter()
        .map(|r| {
            let c = r.content.expect("content");
            (
                (r.shard, r.node),
                format!("{}:{}", c.last_applied, c.checksum),
            )
        })
        .collect()
}

/// Live records and price total over the shards, once the replicas agree.
async fn totals(fx: &Fixture) -> (u64, i64) {
    let contents = fx
        .cluster
        .wait_replicas_agree(Duration::from_secs(60))
        .await
        .expect("replicas agree");
    sus_chaos_tests::cluster::totals(&contents)
}

/// Every node's peak resident memory (`VmHWM`), in bytes.
fn peak_memory(fx: &Fixture) -> BTreeMap<u64, u64> {
    fx.cluster
        .nodes
        .keys()
        .map(|id| {
            let pid = fx.cluster.pid(*id).expect("a running node");
            let status =
                std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
            let kib: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .expect("VmHWM");
            (*id, kib * 1024)
        })
        .collect()
}

/// The header and one accepted `apc` record of provider `p`, from the generated files.
fn apc_row(fx: &Fixture) -> (Vec<String>, Vec<String>) {
    let p = &fx.orgs.p;
    let file = fx
        .summary
        .expected
        .submissions
        .iter()
        .find(|s| s.dataset == "apc" && &s.sender == p && s.outcome == "accepted")
        .expect("an accepted apc file of p");
    let mut r = csv::Reader::from_path(fx.out.join(&file.file)).expect("csv");
    let header: Vec<String> = r
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    let provider = header
        .iter()
        .position(|h| h == "provider_code")
        .expect("provider column");
    let row = r
        .records()
        .map(|rec| rec.expect("row"))
        .find(|rec| &rec[provider] == p)
        .expect("a record of p");
    (header, row.iter().map(String::from).collect())
}

/// `rows` copies of `row` as Parquet: text columns, dictionary-encoded, zstd. With `list`, that
/// column is a list of that many copies of its value per row.
fn parquet_of(
    header: &[String],
    row: &[String],
    rows: usize,
    list: Option<(&str, usize)>,
) -> Vec<u8> {
    let chunk = rows.min(100_000);
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (name, value) in header.iter().zip(row) {
        match list {
            Some((l, items)) if l == name => {
                let item = value.split(';').next().unwrap_or("I10X").to_string();
                let values = DictionaryArray::<Int32Type>::new(
                    vec![0i32; chunk * items].into(),
                    Arc::new(StringArray::from(vec![item])),
                );
                let field = Arc::new(Field::new("item", values.data_type().clone(), true));
                let list = ListArray::new(
                    field.clone(),
                    OffsetBuffer::from_lengths(std::iter::repeat_n(items, chunk)),
                    Arc::new(values),
                    None,
                );
                fields.push(Field::new(name, DataType::List(field), true));
                columns.push(Arc::new(list));
            }
            _ => {
                fields.push(Field::new(name, DataType::Utf8, true));
                columns.push(Arc::new(StringArray::from(vec![value.as_str(); chunk])));
            }
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("level")))
        .set_max_row_group_row_count(Some(1 << 22))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).expect("writer");
    let mut left = rows;
    while left > 0 {
        let take = left.min(chunk);
        w.write(&batch.slice(0, take)).expect("write");
        left -= take;
    }
    w.close().expect("close");
    out
}

/// Submits `content` as an `apc` submission of provider `p` (by `prov_p`), over raw gRPC.
async fn submit(
    ch: &Channel,
    fx: &Fixture,
    id: &str,
    content: Vec<u8>,
) -> Result<v1::SubmitReply, tonic::Status> {
    let envelope = serde_json::json!({
        "submission_id": id,
        "sender": fx.orgs.p,
        "dataset": "apc",
        "protocol": "net_change",
    });
    let request = v1::SubmitRequest {
        format: WIRE_FORMAT_VERSION,
        envelope_json: envelope.to_string(),
        file_name: format!("{id}.dat"),
        content: content.into(),
        forwarded: false,
    };
    v1::ingest_client::IngestClient::new(ch.clone())
        .max_encoding_message_size(usize::MAX)
        .submit(with_token(request, Some(fx.token("prov_p"))))
        .await
        .map(|r| r.into_inner())
}

fn flight(ch: &Channel) -> arrow_flight::flight_service_client::FlightServiceClient<Channel> {
    arrow_flight::flight_service_client::FlightServiceClient::new(ch.clone())
}

/// Calls `path` with `bytes` as the request message, as they are.
async fn raw_call(
    ch: &Channel,
    path: &'static str,
    bytes: Vec<u8>,
    token: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    if path.path().ends_with("/Scan") || path.path().ends_with("/DoGet") {
        let mut stream = grpc
            .server_streaming(with_token(bytes, Some(token)), path, Raw)
            .await?
            .into_inner();
        return stream.message().await.map(|m| m.unwrap_or_default());
    }
    grpc.unary(with_token(bytes, Some(token)), path, Raw)
        .await
        .map(|r| r.into_inner())
}

/// A codec that sends and receives message bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = buf.remaining();
        Ok(Some(buf.copy_to_bytes(n).to_vec()))
    }
}
