//! `sus query`, `sus report`, `sus freeze`, `sus compact`, `sus export`: reads over the cluster.

use crate::EndpointArgs;
use arrow::array::RecordBatch;
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use sus_client::query::{Filter, Func, Op, Order, build};
use sus_client::{Error, ReadFrom, Result, ScanSpec, report};
use sus_proto::v1::{Aggregate, QuerySpec};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    /// A JSON array of objects, one per row.
    Json,
    Parquet,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// Read as at this freeze point (default: the current state).
    #[arg(long)]
    pub freeze: Option<String>,
    /// Read from any replica instead of each shard's leader (may lag the latest writes).
    #[arg(long)]
    pub any_replica: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write to this file instead of standard output (required for parquet).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Read at this tier (identifiable, pseudonymised, anonymised; default: your highest).
    #[arg(long, value_enum)]
    pub tier: Option<TierArg>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TierArg {
    Identifiable,
    Pseudonymised,
    Anonymised,
}

impl ReadArgs {
    pub fn tier(&self) -> sus_client::query::Tier {
        use sus_client::query::Tier;
        match self.tier {
            None => Tier::Unspecified,
            Some(TierArg::Identifiable) => Tier::Identifiable,
            Some(TierArg::Pseudonymised) => Tier::Pseudonymised,
            Some(TierArg::Anonymised) => Tier::Anonymised,
        }
    }
}

impl ReadArgs {
    fn read(&self) -> ReadFrom {
        if self.any_replica {
            ReadFrom::AnyReplica
        } else {
            ReadFrom::Leader
        }
    }
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub read: ReadArgs,
    /// apc, op or ec.
    #[arg(long)]
    pub dataset: String,
    /// Fields to group by, comma-separated (stored columns or activity_month, financial_year,
    /// age_band, hrg_chapter).
    #[arg(long, value_delimiter = ',')]
    pub group_by: Vec<String>,
    /// count, patients, sum:FIELD, min:FIELD or max:FIELD (repeat; default count). At the
    /// anonymised tier: count, patients, sums of flags, money and days; no min or max.
    #[arg(long = "agg")]
    pub aggs: Vec<String>,
    /// FIELD=V, FIELD!=V, FIELD=A|B|C, FIELD=LO..HI, FIELD>=V or FIELD<=V (repeat: all must hold).
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    /// Output column to order by, with :desc for descending (repeat).
    #[arg(long)]
    pub order: Vec<String>,
    /// At most this many rows (after ordering).
    #[arg(long, default_value_t = 0)]
    pub limit: u64,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Monthly Trust Statement of a provider for an activity month.
    #[command(after_help = "\
Examples:
  sus report trust-statement --provider RM9 --month 2024-09
  sus report trust-statement --provider RM9 --month 2024-09 --freeze '2024-25 M06 recon' --format csv")]
    TrustStatement {
        #[command(flatten)]
        read: ReadArgs,
        #[arg(long)]
        provider: String,
        /// Activity month, YYYY-MM.
        #[arg(long)]
        month: String,
    },
    /// Monthly Database Counts per provider, dataset and activity month.
    #[command(after_help = "\
Examples:
  sus report database-counts --format csv --out counts.csv
  sus report database-counts --provider RM9 --since '2024-25 M05' --freeze '2024-25 M06'")]
    DatabaseCounts {
        #[command(flatten)]
        read: ReadArgs,
        #[arg(long)]
        provider: Option<String>,
        /// Start of the period (a freeze point, exclusive); default: the beginning. The period
        /// ends at --freeze (default: now).
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum FreezeCommand {
    /// Take a freeze point: every shard's current version, recorded under NAME.
    #[command(after_help = "\
Example:
  sus freeze create '2024-25 M06 recon'
Reads and reports then take --freeze '2024-25 M06 recon' and see exactly what was there.")]
    Create {
        #[command(flatten)]
        endpoint: EndpointArgs,
        name: String,
    },
    /// List freeze points.
    #[command(after_help = "Example:\n  sus freeze list --format json")]
    List {
        #[command(flatten)]
        endpoint: EndpointArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub read: ReadArgs,
    #[arg(long)]
    pub dataset: String,
    /// Stored columns, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// As for `sus query`.
    #[arg(long = "filter")]
    pub filters: Vec<String>,
}

/// Parses `FIELD=V`, `FIELD!=V`, `FIELD=A|B`, `FIELD=LO..HI`, `FIELD>=V`, `FIELD<=V`.
pub fn parse_filter(s: &str) -> Result<Filter> {
    let bad = || {
        Error::Config(format!(
            "filter '{s}': expected FIELD=V, FIELD!=V, FIELD=A|B, FIELD=LO..HI, FIELD>=V or FIELD<=V"
        ))
    };
    for (sep, lower) in [(">=", true), ("<=", false)] {
        if let Some((f, v)) = s.split_once(sep) {
            return Ok(if lower {
                build::range(f.trim(), v.trim(), "")
            } else {
                build::range(f.trim(), "", v.trim())
            });
        }
    }
    if let Some((f, v)) = s.split_once("!=") {
        return Ok(Filter {
            op: Op::Ne as i32,
            ..build::eq(f.trim(), v.trim())
        });
    }
    let (f, v) = s.split_once('=').ok_or_else(bad)?;
    let (f, v) = (f.trim(), v.trim());
    if f.is_empty() {
        return Err(bad());
    }
    if let Some((lo, hi)) = v.split_once("..") {
        return Ok(build::range(f, lo, hi));
    }
    if v.contains('|') {
        return Ok(build::any_of(f, &v.split('|').collect::<Vec<_>>()));
    }
    Ok(build::eq(f, v))
}

fn parse_agg(s: &str) -> Result<Aggregate> {
    match s.split_once(':') {
        None if s == "count" => Ok(build::count()),
        None if s == "patients" => Ok(build::patients()),
        Some(("sum", f)) => Ok(build::agg(Func::Sum, f)),
        Some(("min", f)) => Ok(build::agg(Func::Min, f)),
        Some(("max", f)) => Ok(build::agg(Func::Max, f)),
        _ => Err(Error::Config(format!(
            "aggregate '{s}': expected count, patients, sum:FIELD, min:FIELD or max:FIELD"
        ))),
    }
}

pub async fn run_query(a: QueryArgs) -> Result<ExitCode> {
    let client = a.read.endpoint.client()?;
    let aggs = if a.aggs.is_empty() {
        vec![build::count()]
    } else {
        a.aggs.iter().map(|s| parse_agg(s)).collect::<Result<_>>()?
    };
    let spec = QuerySpec {
        dataset: a.dataset.clone(),
        filters: a
            .filters
            .iter()
            .map(|f| parse_filter(f))
            .collect::<Result<_>>()?,
        group_by: a.group_by.clone(),
        aggregates: aggs,
        view: a.read.freeze.as_deref().and_then(build::freeze),
        tier: a.read.tier() as i32,
        order: a
            .order
            .iter()
            .map(|o| {
                let (column, desc) = match o.strip_suffix(":desc") {
                    Some(c) => (c, true),
                    None => (o.strip_suffix(":asc").unwrap_or(o), false),
                };
                Order {
                    column: column.into(),
                    descending: desc,
                }
            })
            .collect(),
        limit: a.limit,
    };
    let started = std::time::Instant::now();
    let result = client.aggregate(&spec, a.read.read()).await?;
    write(&a.read, &[result.batch])?;
    eprintln!(
        "{} rows scanned in {} segments ({} pruned) on {} shards in {:.2}s",
        result.rows_scanned,
        result.segments_scanned,
        result.segments_pruned,
        result.versions.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn run_report(c: ReportCommand) -> Result<ExitCode> {
    let (read, batch) = match c {
        ReportCommand::TrustStatement {
            read,
            provider,
            month,
        } => {
            let client = read.endpoint.client()?;
            let view = read.freeze.as_deref().and_then(build::freeze);
            let b = report::trust_statement_at(
                &client,
                read.tier(),
                &provider,
                &month,
                view,
                read.read(),
            )
            .await?;
            (read, b)
        }
        ReportCommand::DatabaseCounts {
            read,
            provider,
            since,
        } => {
            let client = read.endpoint.client()?;
            let view = read.freeze.as_deref().and_then(build::freeze);
            let since = since.as_deref().and_then(build::freeze);
            let b = report::database_counts_at(
                &client,
                read.tier(),
                provider.as_deref(),
                view,
                since,
                read.read(),
            )
            .await?;
            (read, b)
        }
    };
    write(&read, &[batch])?;
    Ok(ExitCode::SUCCESS)
}

pub async fn run_freeze(c: FreezeCommand) -> Result<ExitCode> {
    match c {
        FreezeCommand::Create { endpoint, name } => {
            let p = endpoint.client()?.create_freeze(&name).await?;
            let versions: Vec<String> = p
                .versions
                .iter()
                .map(|v| format!("{}:{}", v.shard, v.version))
                .collect();
            println!(
                "freeze point '{}' (shard:version {})",
                p.name,
                versions.join(" ")
            );
        }
        FreezeCommand::List { endpoint, format } => {
            let rows: Vec<Vec<String>> = endpoint
                .client()?
                .freezes()
                .await?
                .into_iter()
                .map(|p| {
                    let when = chrono::DateTime::from_timestamp(p.created, 0)
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                        .unwrap_or_default();
                    let versions: Vec<String> = p
                        .versions
                        .iter()
                        .map(|v| format!("{}:{}", v.shard, v.version))
                        .collect();
                    vec![p.name, when, versions.join(" ")]
                })
                .collect();
            write_rows(format, &["name", "created", "shard_versions"], &rows)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_compact(endpoint: EndpointArgs, target_rows: u32) -> Result<ExitCode> {
    let r = endpoint.client()?.compact(target_rows).await?;
    println!(
        "segments: {} before, {} after; {} rows no view can see dropped",
        r.segments_before, r.segments_after, r.rows_dropped
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn run_export(a: ExportArgs) -> Result<ExitCode> {
    let client = a.read.endpoint.client()?;
    let spec = ScanSpec {
        dataset: a.dataset.clone(),
        filters: a
            .filters
            .iter()
            .map(|f| parse_filter(f))
            .collect::<Result<_>>()?,
        columns: a.columns.clone(),
        view: a.read.freeze.as_deref().and_then(build::freeze),
        tier: a.read.tier(),
    };
    let mut batches = Vec::new();
    let rows = client
        .scan(&spec, a.read.read(), &mut |b| {
            batches.push(b);
            Ok(())
        })
        .await?;
    write(&a.read, &batches)?;
    eprintln!("{rows} records exported");
    Ok(ExitCode::SUCCESS)
}

/// Writes text `rows` under `header` in `format` to standard output.
pub fn write_rows(format: Format, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    use arrow::array::{ArrayRef, StringArray};
    let columns: Vec<(&str, ArrayRef)> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let values: StringArray = rows.iter().map(|r| Some(r[i].as_str())).collect();
            (*h, std::sync::Arc::new(values) as ArrayRef)
        })
        .collect();
    let batch = RecordBatch::try_from_iter(columns)
        .map_err(|e| Error::Cluster(format!("building the table: {e}")))?;
    write_as(format, None, &[batch])
}

fn write(args: &ReadArgs, batches: &[RecordBatch]) -> Result<()> {
    write_as(args.format, args.out.as_deref(), batches)
}

/// Writes `batches` in `format` to `out` (standard output when `None`, except Parquet).
pub fn write_as(
    format: Format,
    out: Option<&std::path::Path>,
    batches: &[RecordBatch],
) -> Result<()> {
    let out: Box<dyn std::io::Write + Send> = match out {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| Error::io(p, e))?),
        None if format == Format::Parquet => {
            return Err(Error::Config("--format parquet needs --out FILE".into()));
        }
        None => Box::new(std::io::stdout()),
    };
    let fail = |e: String| Error::Cluster(format!("writing the output: {e}"));
    match format {
        Format::Table => {
            let mut out = out;
            let text = arrow::util::pretty::pretty_format_batches(batches)
                .map_err(|e| fail(e.to_string()))?;
            writeln!(out, "{text}").map_err(|e| fail(e.to_string()))?;
        }
        Format::Csv => {
            let mut w = arrow::csv::Writer::new(out);
            for b in batches {
                let b = csv_form(b).map_err(|e| fail(e.to_string()))?;
                w.write(&b).map_err(|e| fail(e.to_string()))?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs).map_err(|e| fail(e.to_string()))?;
            w.finish().map_err(|e| fail(e.to_string()))?;
            let mut out = w.into_inner();
            writeln!(out).map_err(|e| fail(e.to_string()))?;
        }
        Format::Parquet => {
            let schema = batches
                .first()
                .map(|b| b.schema())
                .ok_or_else(|| fail("no rows".into()))?;
            let mut w = parquet::arrow::ArrowWriter::try_new(out, schema, None)
                .map_err(|e| fail(e.to_string()))?;
            for b in batches {
                w.write(b).map_err(|e| fail(e.to_string()))?;
            }
            w.close().map_err(|e| fail(e.to_string()))?;
        }
    }
    Ok(())
}

/// `batch` as CSV can hold it: a list of codes becomes its items joined by `;`, the form a
/// submission file gives them in (so an export can be read back as a submission); a null list
/// stays empty.
fn csv_form(batch: &RecordBatch) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{ArrayRef, AsArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let text = match column.data_type() {
            DataType::List(_) => Some(joined(column.as_list::<i32>())?),
            DataType::LargeList(_) => Some(joined(column.as_list::<i64>())?),
            _ => None,
        };
        match text {
            Some(text) => {
                fields.push(Field::new(field.name(), DataType::Utf8, true));
                columns.push(Arc::new(text));
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// Each list's non-null items as text, joined by `;`; a null list is null.
fn joined<O: arrow::array::OffsetSizeTrait>(
    list: &arrow::array::GenericListArray<O>,
) -> std::result::Result<arrow::array::StringArray, arrow::error::ArrowError> {
    use arrow::array::{Array, AsArray};
    (0..list.len())
        .map(|i| {
            if list.is_null(i) {
                return Ok(None);
            }
            let items = arrow::compute::cast(&list.value(i), &arrow::datatypes::DataType::Utf8)?;
            let items = items.as_string::<i32>();
            Ok(Some(items.iter().flatten().collect::<Vec<_>>().join(";")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_from_the_command_line() {
        let f = parse_filter("pod=EL|NEL").expect("in");
        assert_eq!((f.op, f.values.len()), (Op::In as i32, 2));
        let f = parse_filter("price=100..2000").expect("range");
        assert_eq!(
            (f.op, f.min.as_str(), f.max.as_str()),
            (Op::Range as i32, "100", "2000")
        );
        let f = parse_filter("age_at_activity>=65").expect("lower bound");
        assert_eq!((f.min.as_str(), f.max.as_str()), ("65", ""));
        let f = parse_filter("sex!=9").expect("ne");
        assert_eq!(f.op, Op::Ne as i32);
        assert!(parse_filter("nonsense").is_err());
        assert!(parse_agg("sum:price").is_ok());
        assert!(parse_agg("median:price").is_err());
    }

    #[test]
    fn lists_are_written_to_csv_as_their_items_joined_by_semicolons() {
        use arrow::array::{Array, ListBuilder, StringArray, StringBuilder};
        use arrow::datatypes::{DataType, Field, Schema};
        use std::sync::Arc;
        let mut codes = ListBuilder::new(StringBuilder::new());
        codes.values().append_value("I10X");
        codes.values().append_value("E119");
        codes.append(true);
        codes.append(true);
        codes.append_null();
        let codes = codes.finish();
        let id = StringArray::from(vec!["A", "B", "C"]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("secondary_diagnoses", codes.data_type().clone(), true),
        ]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(id), Arc::new(codes)]).expect("batch");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.csv");
        write_as(Format::Csv, Some(&path), &[batch]).expect("a CSV of list columns");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text, "id,secondary_diagnoses\nA,I10X;E119\nB,\nC,\n",
            "{text}"
        );
    }
}
