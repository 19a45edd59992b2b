//! `sus sql`: a read-only SQL statement over the cluster's tables, planned by a node.

use crate::EndpointArgs;
use crate::read::{Format, TierArg, write_as};
use arrow::array::RecordBatch;
use clap::Args;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use sus_client::{Error, Result, Tier};

#[derive(Debug, Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// The statement (`-`: read it from standard input).
    pub statement: Option<String>,
    /// Read the statement from this file.
    #[arg(long, short = 'f', conflicts_with = "statement")]
    pub file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write to this file instead of standard output (required for parquet).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Read at this tier (default: your highest).
    #[arg(long, value_enum)]
    pub tier: Option<TierArg>,
}

impl SqlArgs {
    fn statement(&self) -> Result<String> {
        match (&self.statement, &self.file) {
            (_, Some(path)) => std::fs::read_to_string(path).map_err(|e| Error::io(path, e)),
            (Some(s), None) if s != "-" => Ok(s.clone()),
            _ => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| Error::io("standard input", e))?;
                Ok(s)
            }
        }
    }
}

pub async fn run_sql(a: SqlArgs) -> Result<ExitCode> {
    let statement = a.statement()?;
    let tier = match a.tier {
        None => Tier::Unspecified,
        Some(TierArg::Identifiable) => Tier::Identifiable,
        Some(TierArg::Pseudonymised) => Tier::Pseudonymised,
        Some(TierArg::Anonymised) => Tier::Anonymised,
    };
    let answer = a.endpoint.client()?.sql_at(&statement, tier).await?;
    let schema = answer.schema();
    let mut batches = answer.collect().await?;
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    write_as(a.format, a.out.as_deref(), &batches)?;
    eprintln!("{rows} rows");
    Ok(ExitCode::SUCCESS)
}
