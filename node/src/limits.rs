//! Limits on what a client may make a node hold or do: every one has a setting (a `sus-node
//! serve` flag, a `SUS_*` variable and a config-file key of the same name), a default, and a
//! refusal that names the limit, its value and the setting that raises it.
//!
//! | limit | setting | refused with |
//! |---|---|---|
//! | bytes of one item of a record | `max_field_bytes` | `R04-ITEM-FORMAT` finding on the record |
//! | rows of a submission | `max_submission_rows` | `INVALID_ARGUMENT` |
//! | bytes of a submission file (the `Ingest` message) | `max_submission_mib` | `OUT_OF_RANGE` |
//! | decoded bytes of a submission | `max_submission_decoded_mib` | `INVALID_ARGUMENT` |
//! | decoded bytes of every submission being prepared on the node | `decode_budget_mib` | waits, then `UNAVAILABLE` |
//! | `Submit` calls received at once by the node | `max_concurrent_submissions` | waits |
//! | `Query`, `Admin` and Flight requests | `max_request_mib` | `OUT_OF_RANGE` |
//! | filters, values in one filter, bytes of a value or name, aggregates, columns | `max_filters`, `max_filter_values`, `max_filter_value_bytes`, `max_aggregates`, `max_columns` | `INVALID_ARGUMENT` |
//! | memory of one SQL statement's operators (sorts, joins, hash tables; nothing spills) | `sql_memory_mib` | `RESOURCE_EXHAUSTED` |
//! | failed logins before back-off | `login_free_failures`, `login_free_failures_per_source`, `login_max_backoff_secs`, `login_forget_secs` | `RESOURCE_EXHAUSTED` |
//!
//! `docs/security.md` ("Limits") is the operator's version of this table.

use crate::{Error, Result};
use std::sync::Arc;
use std::time::Duration;
use sus_proto::v1;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How a refusal names the setting that raises a limit: `max_submission_rows
/// (--max-submission-rows, SUS_MAX_SUBMISSION_ROWS)`.
pub fn setting(key: &str) -> String {
    format!(
        "{key} (--{}, SUS_{})",
        key.replace('_', "-"),
        key.to_ascii_uppercase()
    )
}

/// Names of the settings, as config-file keys.
pub mod keys {
    pub const MAX_FIELD_BYTES: &str = "max_field_bytes";
    pub const MAX_SUBMISSION_ROWS: &str = "max_submission_rows";
    pub const MAX_SUBMISSION_MIB: &str = "max_submission_mib";
    pub const MAX_SUBMISSION_DECODED_MIB: &str = "max_submission_decoded_mib";
    pub const DECODE_BUDGET_MIB: &str = "decode_budget_mib";
    pub const MAX_CONCURRENT_SUBMISSIONS: &str = "max_concurrent_submissions";
    pub const MAX_REQUEST_MIB: &str = "max_request_mib";
    pub const MAX_FILTERS: &str = "max_filters";
    pub const MAX_FILTER_VALUES: &str = "max_filter_values";
    pub const MAX_FILTER_VALUE_BYTES: &str = "max_filter_value_bytes";
    pub const MAX_AGGREGATES: &str = "max_aggregates";
    pub const MAX_COLUMNS: &str = "max_columns";
    pub const SQL_MEMORY_MIB: &str = "sql_memory_mib";
    pub const LOGIN_FREE_FAILURES: &str = "login_free_failures";
    pub const LOGIN_FREE_FAILURES_PER_SOURCE: &str = "login_free_failures_per_source";
    pub const LOGIN_MAX_BACKOFF_SECS: &str = "login_max_backoff_secs";
    pub const LOGIN_FORGET_SECS: &str = "login_forget_secs";
}

const MIB: u64 = 1 << 20;

/// Every limit of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub submission: SubmissionLimits,
    pub query: QueryLimits,
    pub logins: LoginLimits,
    /// Largest `Query`, `Admin` or Flight request message (bytes).
    pub max_request_bytes: usize,
    /// Decoded bytes of all the submissions this node prepares at once.
    pub decode_budget_bytes: u64,
    /// `Submit` calls this node receives and handles at once (the rest wait their turn).
    pub max_concurrent_submissions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            submission: SubmissionLimits::default(),
            query: QueryLimits::default(),
            logins: LoginLimits::default(),
            max_request_bytes: 4 * MIB as usize,
            decode_budget_bytes: 1024 * MIB,
            max_concurrent_submissions: 16,
        }
    }
}

impl Limits {
    /// Checks that the limits can work together; the error names the settings at fault.
    pub fn validate(&self) -> Result<()> {
        let s = &self.submission;
        let positive = [
            (keys::MAX_FIELD_BYTES, s.max_field_bytes as u64),
            (keys::MAX_SUBMISSION_ROWS, s.max_rows),
            (keys::MAX_SUBMISSION_MIB, s.max_bytes as u64),
            (keys::MAX_SUBMISSION_DECODED_MIB, s.max_decoded_bytes),
            (keys::DECODE_BUDGET_MIB, self.decode_budget_bytes),
            (
                keys::MAX_CONCURRENT_SUBMISSIONS,
                self.max_concurrent_submissions as u64,
            ),
            (keys::MAX_REQUEST_MIB, self.max_request_bytes as u64),
            (keys::MAX_FILTERS, self.query.max_filters as u64),
            (keys::MAX_FILTER_VALUES, self.query.max_filter_values as u64),
            (
                keys::MAX_FILTER_VALUE_BYTES,
                self.query.max_filter_value_bytes as u64,
            ),
            (keys::MAX_AGGREGATES, self.query.max_aggregates as u64),
            (keys::MAX_COLUMNS, self.query.max_columns as u64),
            (keys::SQL_MEMORY_MIB, self.query.sql_memory_bytes as u64),
            (
                keys::LOGIN_MAX_BACKOFF_SECS,
                self.logins.max_backoff.as_secs(),
            ),
            (keys::LOGIN_FORGET_SECS, self.logins.forget_after.as_secs()),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(Error::InvalidArgument(format!(
                    "{} must be at least 1",
                    setting(key)
                )));
            }
        }
        if s.max_decoded_bytes > self.decode_budget_bytes {
            return Err(Error::InvalidArgument(format!(
                "{} ({} MiB) is larger than the node's {} ({} MiB): no submission of that size \
                 could ever be prepared",
                setting(keys::MAX_SUBMISSION_DECODED_MIB),
                s.max_decoded_bytes / MIB,
                setting(keys::DECODE_BUDGET_MIB),
                self.decode_budget_bytes / MIB
            )));
        }
        // Semaphore permits are KiB in a u32; the message limits are usize.
        if self.decode_budget_bytes / 1024 > u64::from(u32::MAX) {
            return Err(Error::InvalidArgument(format!(
                "{} is larger than 4 TiB",
                setting(keys::DECODE_BUDGET_MIB)
            )));
        }
        if s.max_bytes > (u32::MAX as usize) - INGEST_ENVELOPE_BYTES
            || self.max_request_bytes > u32::MAX as usize
        {
            return Err(Error::InvalidArgument(format!(
                "{} and {} must stay under 4 GiB (gRPC message lengths are 32-bit)",
                setting(keys::MAX_SUBMISSION_MIB),
                setting(keys::MAX_REQUEST_MIB)
            )));
        }
        if self.logins.max_backoff > self.logins.forget_after {
            return Err(Error::InvalidArgument(format!(
                "{} ({} s) is longer than {} ({} s): failures would be forgotten before the \
                 back-off ends",
                setting(keys::LOGIN_MAX_BACKOFF_SECS),
                self.logins.max_backoff.as_secs(),
                setting(keys::LOGIN_FORGET_SECS),
                self.logins.forget_after.as_secs()
            )));
        }
        Ok(())
    }

    /// The largest `Ingest` request: a whole submission file plus its envelope.
    pub fn max_ingest_request_bytes(&self) -> usize {
        self.submission.max_bytes + INGEST_ENVELOPE_BYTES
    }
}

/// Room beside the file in an `Ingest.Submit` message (envelope JSON, file name).
pub const INGEST_ENVELOPE_BYTES: usize = 1 << 20;

/// What one submission may hold.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmissionLimits {
    /// Bytes of one item of one record (a list item counts whole, as sent).
    pub max_field_bytes: usize,
    /// Records of one submission file.
    pub max_rows: u64,
    /// Bytes of the submission file as sent.
    pub max_bytes: usize,
    /// Bytes the parsed records of one submission take: their text plus a fixed cost per record
    /// ([`ROW_BYTES`]).
    pub max_decoded_bytes: u64,
}

impl Default for SubmissionLimits {
    fn default() -> Self {
        SubmissionLimits {
            max_field_bytes: 4096,
            max_rows: 1_000_000,
            max_bytes: 128 * MIB as usize,
            max_decoded_bytes: 512 * MIB,
        }
    }
}

/// The decoded cost of one record beside its text: the parsed record's own size (its items'
/// string headers, numbers and dates), counted against
/// [`SubmissionLimits::max_decoded_bytes`].
pub const ROW_BYTES: u64 = std::mem::size_of::<crate::model::Record>() as u64;

/// What one query, scan or extract request may ask.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryLimits {
    /// Filters of one request.
    pub max_filters: usize,
    /// Values of one filter (an `IN` list).
    pub max_filter_values: usize,
    /// Bytes of any text of a request: a filter value or bound, a field, column or aggregate
    /// name, the dataset, the freeze point.
    pub max_filter_value_bytes: usize,
    /// Aggregates of one query.
    pub max_aggregates: usize,
    /// Columns of one scan or extract.
    pub max_columns: usize,
    /// Bytes one SQL statement's operators may hold on the node that plans it.
    pub sql_memory_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_filters: 32,
            max_filter_values: 10_000,
            max_filter_value_bytes: 256,
            max_aggregates: 32,
            max_columns: 256,
            sql_memory_bytes: 512 * MIB as usize,
        }
    }
}

/// The aggregate a coordinating node adds to an anonymised query without a count (not the
/// caller's, so not counted against [`QueryLimits::max_aggregates`]).
const HIDDEN_AGGREGATE: &str = "__records";

impl QueryLimits {
    /// Checks an aggregate query's sizes, before any of it is parsed.
    pub fn check_spec(&self, spec: &v1::QuerySpec) -> Result<()> {
        self.check_text("the dataset name", &spec.dataset)?;
        self.check_filters(&spec.filters)?;
        // More than the engine's group-by fields is refused by the query itself; only bound the
        // work of looking at them here.
        if spec.group_by.len() > crate::query::MAX_GROUP_BY {
            return Err(Error::InvalidArgument(format!(
                "{} group-by fields; a query groups by at most {}",
                spec.group_by.len(),
                crate::query::MAX_GROUP_BY
            )));
        }
        for g in &spec.group_by {
            self.check_text("a group-by field name", g)?;
        }
        let aggregates = spec
            .aggregates
            .iter()
            .filter(|a| a.name != HIDDEN_AGGREGATE)
            .count();
        if aggregates > self.max_aggregates {
            return Err(Error::InvalidArgument(format!(
                "{aggregates} aggregates: over the limit of {} per query (setting {})",
                self.max_aggregates,
                setting(keys::MAX_AGGREGATES)
            )));
        }
        for a in &spec.aggregates {
            self.check_text("an aggregate's field name", &a.field)?;
            self.check_text("an aggregate's output name", &a.name)?;
        }
        if let Some(v) = &spec.view {
            self.check_text("the freeze point name", &v.freeze)?;
        }
        Ok(())
    }

    /// Checks a scan's or extract's sizes, before any of it is parsed.
    pub fn check_scan(
        &self,
        dataset: &str,
        filters: &[v1::Filter],
        columns: &[String],
        view: Option<&v1::View>,
    ) -> Result<()> {
        self.check_text("the dataset name", dataset)?;
        self.check_filters(filters)?;
        if columns.len() > self.max_columns {
            return Err(Error::InvalidArgument(format!(
                "{} columns: over the limit of {} per request (setting {})",
                columns.len(),
                self.max_columns,
                setting(keys::MAX_COLUMNS)
            )));
        }
        for c in columns {
            self.check_text("a column name", c)?;
        }
        if let Some(v) = view {
            self.check_text("the freeze point name", &v.freeze)?;
        }
        Ok(())
    }

    /// Checks the number of filters, the values of each and the bytes of each value.
    pub fn check_filters(&self, filters: &[v1::Filter]) -> Result<()> {
        if filters.len() > self.max_filters {
            return Err(Error::InvalidArgument(format!(
                "{} filters: over the limit of {} per request (setting {})",
                filters.len(),
                self.max_filters,
                setting(keys::MAX_FILTERS)
            )));
        }
        for f in filters {
            self.check_text("a filter's field name", &f.field)?;
            if f.values.len() > self.max_filter_values {
                return Err(Error::InvalidArgument(format!(
                    "filter on {}: {} values, over the limit of {} per filter (setting {})",
                    f.field,
                    f.values.len(),
                    self.max_filter_values,
                    setting(keys::MAX_FILTER_VALUES)
                )));
            }
            let what = || format!("a value of the filter on {}", f.field);
            for v in f.values.iter().chain([&f.min, &f.max]) {
                if v.len() > self.max_filter_value_bytes {
                    return Err(self.too_long(&what(), v.len()));
                }
            }
        }
        Ok(())
    }

    fn check_text(&self, what: &str, text: &str) -> Result<()> {
        if text.len() > self.max_filter_value_bytes {
            return Err(self.too_long(what, text.len()));
        }
        Ok(())
    }

    // The text itself is not repeated: it may be an identifier, or megabytes.
    fn too_long(&self, what: &str, len: usize) -> Error {
        Error::InvalidArgument(format!(
            "{what} is {len} bytes: over the limit of {} bytes (setting {})",
            self.max_filter_value_bytes,
            setting(keys::MAX_FILTER_VALUE_BYTES)
        ))
    }
}

/// Back-off of password logins (per node, in memory).
#[derive(Debug, Clone, PartialEq)]
pub struct LoginLimits {
    /// Failed logins of one user name before each further attempt must wait.
    pub free_failures: u32,
    /// Failed logins from one source address (any user names) before each further attempt must
    /// wait.
    pub free_failures_per_source: u32,
    /// The longest wait: the back-off doubles from 1 s up to this.
    pub max_backoff: Duration,
    /// Failures are forgotten after this long without one.
    pub forget_after: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            free_failures: 5,
            free_failures_per_source: 20,
            max_backoff: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
        }
    }
}

/// The node-wide budget of decoded submission bytes: a submission reserves its share before it
/// is parsed and returns it once prepared, so that the records of every submission being
/// prepared at once stay within [`Limits::decode_budget_bytes`] whatever clients send.
#[derive(Debug, Clone)]
pub struct DecodeBudget {
    permits: Arc<Semaphore>,
    /// In KiB, the unit of a permit.
    total_kib: u32,
}

/// A share of the [`DecodeBudget`], returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    /// The bytes reserved.
    pub bytes: u64,
}

impl DecodeBudget {
    pub fn new(bytes: u64) -> DecodeBudget {
        let total_kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        DecodeBudget {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Reserves `bytes` (at most the whole budget), waiting up to `wait` for other submissions
    /// to finish; [`Error::Busy`] (retry) if they do not.
    pub async fn reserve(&self, bytes: u64, wait: Duration) -> Result<Reservation> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib);
        match tokio::time::timeout(wait, self.permits.clone().acquire_many_owned(kib)).await {
            Ok(Ok(permit)) => Ok(Reservation {
                _permit: permit,
                bytes: u64::from(kib) * 1024,
            }),
            // The semaphore is never closed.
            Ok(Err(_)) | Err(_) => Err(Error::Busy(format!(
                "this node is busy preparing other submissions (its budget of {} MiB of decoded \
                 submissions, setting {}, stayed in use for {} s); retry",
                u64::from(self.total_kib) / 1024,
                setting(keys::DECODE_BUDGET_MIB),
                wait.as_secs()
            ))),
        }
    }

    /// KiB of the budget free now (for tests and metrics).
    pub fn available_kib(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(field: &str, values: usize, value: &str) -> v1::Filter {
        v1::Filter {
            field: field.into(),
            op: v1::filter::Op::In as i32,
            values: vec![value.to_string(); values],
            min: String::new(),
            max: String::new(),
        }
    }

    // The defaults work together, and the checks name the setting that raises each limit.
    #[test]
    fn defaults_validate_and_refusals_name_the_setting() {
        let limits = Limits::default();
        limits.validate().expect("defaults are valid");
        assert_eq!(
            setting(keys::MAX_FILTER_VALUES),
            "max_filter_values (--max-filter-values, SUS_MAX_FILTER_VALUES)"
        );
        let q = &limits.query;
        let e = q
            .check_filters(&[filter("provider_code", 3_000_000, "R")])
            .expect_err("3 M values");
        assert!(
            e.to_string().contains(
                "3000000 values, over the limit of 10000 per filter (setting max_filter_values"
            ),
            "{e}"
        );
        let many: Vec<_> = (0..33).map(|_| filter("sex", 1, "1")).collect();
        let e = q.check_filters(&many).expect_err("33 filters");
        assert!(e.to_string().contains("33 filters"), "{e}");
        assert!(e.to_string().contains("max_filters"), "{e}");
        let long = "x".repeat(300);
        let e = q
            .check_filters(&[filter("postcode", 1, &long)])
            .expect_err("long value");
        assert!(e.to_string().contains("300 bytes"), "{e}");
        assert!(!e.to_string().contains(&long), "the value is not echoed");
        let mut spec = v1::QuerySpec {
            dataset: "apc".into(),
            aggregates: (0..33)
                .map(|i| v1::Aggregate {
                    func: v1::aggregate::Func::Count as i32,
                    field: String::new(),
                    name: format!("c{i}"),
                })
                .collect(),
            ..Default::default()
        };
        let e = q.check_spec(&spec).expect_err("33 aggregates");
        assert!(e.to_string().contains("max_aggregates"), "{e}");
        spec.aggregates.truncate(32);
        spec.aggregates.push(v1::Aggregate {
            func: v1::aggregate::Func::Count as i32,
            field: String::new(),
            name: HIDDEN_AGGREGATE.into(),
        });
        q.check_spec(&spec)
            .expect("the node's own hidden count is not the caller's");
        let columns = vec!["provider_code".to_string(); 257];
        let e = q
            .check_scan("apc", &[], &columns, None)
            .expect_err("257 columns");
        assert!(e.to_string().contains("max_columns"), "{e}");
    }

    // Settings that cannot work together are refused at start-up, naming them.
    #[test]
    fn inconsistent_settings_are_refused() {
        let mut l = Limits::default();
        l.submission.max_decoded_bytes = 2 * l.decode_budget_bytes;
        let e = l
            .validate()
            .expect_err("per submission over the node's budget");
        assert!(e.to_string().contains("max_submission_decoded_mib"), "{e}");
        assert!(e.to_string().contains("decode_budget_mib"), "{e}");
        let mut l = Limits::default();
        l.query.max_filters = 0;
        assert!(
            l.validate()
                .expect_err("zero")
                .to_string()
                .contains("max_filters")
        );
        let mut l = Limits::default();
        l.logins.max_backoff = Duration::from_secs(2000);
        assert!(
            l.validate()
                .expect_err("back-off longer than memory")
                .to_string()
                .contains("login_forget_secs")
        );
    }

    // The budget hands out at most its total; a reservation that cannot be had in time is
    // refused (retry), and a returned one can be taken again.
    #[tokio::test]
    async fn the_decode_budget_is_shared_and_returned() {
        let budget = DecodeBudget::new(10 * 1024);
        let a = budget
            .reserve(6 * 1024, Duration::from_millis(10))
            .await
            .expect("fits");
        assert_eq!(a.bytes, 6 * 1024);
        let e = budget
            .reserve(6 * 1024, Duration::from_millis(10))
            .await
            .expect_err("does not fit beside the first");
        assert!(e.to_string().contains("decode_budget_mib"), "{e}");
        // Larger than the whole budget: takes the whole budget.
        drop(a);
        let all = budget
            .reserve(1 << 40, Duration::from_millis(10))
            .await
            .expect("whole budget");
        assert_eq!(all.bytes, 10 * 1024);
        assert_eq!(budget.available_kib(), 0);
        drop(all);
        assert_eq!(budget.available_kib(), 10);
    }
}
