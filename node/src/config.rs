//! `sus-node --config FILE`: settings from a TOML file, below flags and environment variables.
//!
//! Keys are the long flag names with `_` for `-`. An unknown key or a value of the wrong type is
//! an error naming the file, the line and the key: a misspelt setting must not be ignored.

use super::cli::{Cli, Command, LogFormat};
use anyhow::Context;
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    refdata: Option<PathBuf>,
    grouper_output: Option<PathBuf>,
    log_format: Option<LogFormat>,
    id: Option<u64>,
    id_from_hostname: Option<bool>,
    listen: Option<String>,
    advertise: Option<String>,
    http_listen: Option<String>,
    heartbeat_ms: Option<u64>,
    election_ms: Option<u64>,
    snapshot_after: Option<u64>,
    keep_after_snapshot: Option<u64>,
    cache_mib: Option<usize>,
    write_buffer_mib: Option<u64>,
    flush_mib: Option<u64>,
    flush_secs: Option<u64>,
    commit_timeout_ms: Option<u64>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    plaintext: Option<bool>,
    max_field_bytes: Option<usize>,
    max_submission_rows: Option<u64>,
    max_submission_mib: Option<usize>,
    max_submission_decoded_mib: Option<u64>,
    decode_budget_mib: Option<u64>,
    max_concurrent_submissions: Option<usize>,
    max_request_mib: Option<usize>,
    max_filters: Option<usize>,
    max_filter_values: Option<usize>,
    max_filter_value_bytes: Option<usize>,
    max_aggregates: Option<usize>,
    max_columns: Option<usize>,
    sql_memory_mib: Option<usize>,
    login_free_failures: Option<u32>,
    login_free_failures_per_source: Option<u32>,
    login_max_backoff_secs: Option<u64>,
    login_forget_secs: Option<u64>,
}

/// Whether the setting `id` was given on the command line or in the environment.
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Fills every setting of `cli` that flags and the environment left at its default from `path`.
pub fn apply(path: &Path, cli: &mut Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let file: FileConfig = toml::from_str(&text).map_err(|e| {
        // One line: the file, the line and what is wrong (toml's own text spans several).
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .map(|n| format!(", line {n}"))
            .unwrap_or_default();
        anyhow::anyhow!("config file {}{line}: {}", path.display(), e.message())
    })?;

    // Copies a file value into `target` unless a flag or variable set it.
    macro_rules! take {
        ($m:expr, $target:expr, $field:ident) => {
            if let Some(v) = file.$field.clone()
                && !given($m, stringify!($field))
            {
                $target = v.into();
            }
        };
    }
    take!(matches, cli.data_dir, data_dir);
    take!(matches, cli.refdata, refdata);
    take!(matches, cli.grouper_output, grouper_output);
    take!(matches, cli.log_format, log_format);
    if let Command::Serve(args) = &mut cli.command {
        let m = matches
            .subcommand_matches("serve")
            .context("serve arguments")?;
        take!(m, args.id, id);
        take!(m, args.id_from_hostname, id_from_hostname);
        take!(m, args.listen, listen);
        take!(m, args.advertise, advertise);
        take!(m, args.http_listen, http_listen);
        take!(m, args.heartbeat_ms, heartbeat_ms);
        take!(m, args.election_ms, election_ms);
        take!(m, args.snapshot_after, snapshot_after);
        take!(m, args.keep_after_snapshot, keep_after_snapshot);
        take!(m, args.cache_mib, cache_mib);
        take!(m, args.write_buffer_mib, write_buffer_mib);
        take!(m, args.flush_mib, flush_mib);
        take!(m, args.flush_secs, flush_secs);
        take!(m, args.commit_timeout_ms, commit_timeout_ms);
        take!(m, args.tls_ca, tls_ca);
        take!(m, args.tls_cert, tls_cert);
        take!(m, args.tls_key, tls_key);
        take!(m, args.plaintext, plaintext);
        take!(m, args.max_field_bytes, max_field_bytes);
        take!(m, args.max_submission_rows, max_submission_rows);
        take!(m, args.max_submission_mib, max_submission_mib);
        take!(
            m,
            args.max_submission_decoded_mib,
            max_submission_decoded_mib
        );
        take!(m, args.decode_budget_mib, decode_budget_mib);
        take!(
            m,
            args.max_concurrent_submissions,
            max_concurrent_submissions
        );
        take!(m, args.max_request_mib, max_request_mib);
        take!(m, args.max_filters, max_filters);
        take!(m, args.max_filter_values, max_filter_values);
        take!(m, args.max_filter_value_bytes, max_filter_value_bytes);
        take!(m, args.max_aggregates, max_aggregates);
        take!(m, args.max_columns, max_columns);
        take!(m, args.sql_memory_mib, sql_memory_mib);
        take!(m, args.login_free_failures, login_free_failures);
        take!(
            m,
            args.login_free_failures_per_source,
            login_free_failures_per_source
        );
        take!(m, args.login_max_backoff_secs, login_max_backoff_secs);
        take!(m, args.login_forget_secs, login_forget_secs);
    }
    Ok(())
}
