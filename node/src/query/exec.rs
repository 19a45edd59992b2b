//! Executing a query over a node's stores: pruning by partition, one parallel scan over every
//! kept segment (rayon, all cores), each thread folding chunks into its own groups, then one merge.

use super::field::{Bucket, Field};
use super::filter::{self, DictTests};
use super::group::Groups;
use super::read::{Projection, read_chunks};
use super::spec::{Filter, Func, PatientKey, Query, ScanStats, View};
use crate::model::Dataset;
use crate::schema::stored_schema;
use crate::store::{SegmentView, Store};
use crate::{Error, Result};
use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::{and, filter_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use sus_proto::partial::Partial;

/// The version a view reads on this store (`None`: the latest).
pub fn resolve_view(store: &Store, view: &View) -> Result<Option<u64>> {
    match view {
        View::Current if crate::broken::broken("stale-read") => {
            Ok(Some(store.version()?.saturating_sub(1)))
        }
        View::Current => Ok(None),
        View::Freeze(name) => match store.freeze_version(name)? {
            Some(_) if crate::broken::broken("freeze-drift") => Ok(None),
            Some(v) => Ok(Some(v)),
            None => Err(Error::ReplicaBehind(format!(
                "freeze point '{name}' is not known to this replica"
            ))),
        },
    }
}

/// Runs `q` over `store`: the partial aggregates, the version read and what was scanned.
pub fn aggregate(store: &Store, q: &Query, key: &PatientKey) -> Result<(Partial, u64, ScanStats)> {
    let (partial, versions, stats) = aggregate_stores(&[store], q, key)?;
    Ok((partial, versions[0], stats))
}

/// Runs `q` over several stores (a node's shard replicas) as one parallel scan: the merged
/// partial aggregates, the version read on each store and what was scanned.
pub fn aggregate_stores(
    stores: &[&Store],
    q: &Query,
    key: &PatientKey,
) -> Result<(Partial, Vec<u64>, ScanStats)> {
    let mut inputs: Vec<&str> = Vec::new();
    for f in q.filters.iter().chain(&q.scope) {
        if !filter::partition_field(f) {
            inputs.extend(f.field.inputs(q.dataset));
        }
    }
    for (name, f) in &q.group_by {
        if !group_key_of_partition(name, f) {
            inputs.extend(f.inputs(q.dataset));
        }
    }
    for a in &q.aggs {
        match (&a.func, &a.field) {
            (Func::DistinctPatients, _) => inputs.extend(["nhs_number", "local_patient_id"]),
            (_, Some(f)) => inputs.extend(f.inputs(q.dataset)),
            _ => {}
        }
    }
    let projection = Projection::new(q.dataset, &inputs)?;
    let mut versions = Vec::with_capacity(stores.len());
    let mut listings = Vec::with_capacity(stores.len());
    for store in stores {
        let listing = store.listing(q.dataset, resolve_view(store, &q.view)?)?;
        versions.push(listing.version);
        listings.push(listing);
    }
    let mut pruned = 0u64;
    let mut work = Vec::new();
    for (i, listing) in listings.iter().enumerate() {
        for seg in &listing.segments {
            let residuals = residuals(seg, &q.filters, &q.scope);
            if residuals.iter().any(Option::is_some) {
                let keep: Vec<bool> = residuals.iter().map(Option::is_some).collect();
                work.push((stores[i], seg, keep, residuals));
            } else {
                pruned += 1;
            }
        }
    }
    // One worker per thread of the pool, each taking the next segment (biggest first, so that
    // the last to finish are small ones) into its own groups: as many partials to merge as
    // threads, whatever the number of segments.
    work.sort_by_key(|w| std::cmp::Reverse(w.1.rows));
    let next = AtomicUsize::new(0);
    let workers = rayon::current_num_threads().min(work.len()).max(1);
    let folded: Mutex<Vec<Result<Groups<'_>>>> = Mutex::new(Vec::with_capacity(workers));
    rayon::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|_| {
                let state = (|| {
                    let mut groups = Groups::new(q, key);
                    let mut tests = DictTests::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((store, seg, keep, residuals)) = work.get(i) else {
                            break;
                        };
                        let mut stats = ScanStats::default();
                        read_chunks(
                            store,
                            seg,
                            q.dataset,
                            &projection,
                            keep,
                            &mut stats,
                            &mut |chunk| {
                                let Some((rows, scope)) = &residuals[chunk.run] else {
                                    return Ok(());
                                };
                                let keep =
                                    row_mask(q.dataset, rows, scope, &chunk.batch, &mut tests)?;
                                groups.add(&chunk, keep.as_ref())
                            },
                        )?;
                        groups.stats.add(&stats);
                    }
                    Ok(groups)
                })();
                folded.lock().unwrap_or_else(|e| e.into_inner()).push(state);
            });
        }
    });
    let folded = folded.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut out = q.partial();
    let mut stats = ScanStats {
        segments_pruned: pruned,
        ..ScanStats::default()
    };
    for state in folded {
        let groups = state?;
        stats.add(&groups.stats);
        out.merge(groups.into_partial()?)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    }
    Ok((out, versions, stats))
}

/// Whether a group-by field is a constant of every partition (no column is read for it).
fn group_key_of_partition(name: &str, f: &Field) -> bool {
    matches!(
        (f, name),
        (Field::Column { .. }, "provider_code")
            | (
                Field::Bucket(Bucket::ActivityMonth | Bucket::FinancialYear),
                _
            )
    )
}

/// What each month run of a segment leaves of the filters and scope to test per row (`None`:
/// the run has no row that can pass); decided once per run, not per chunk.
type Residual<'q> = Option<(Vec<&'q Filter>, Vec<&'q Filter>)>;

fn residuals<'q>(
    seg: &SegmentView,
    filters: &'q [Filter],
    scope: &'q [Filter],
) -> Vec<Residual<'q>> {
    seg.months
        .iter()
        .map(|m| filter::residual(filters, scope, &seg.provider, &m.month))
        .collect()
}

/// The rows passing every filter of `rows` and at least one of `scope` (`None`: all do).
fn row_mask(
    dataset: Dataset,
    rows: &[&Filter],
    scope: &[&Filter],
    batch: &RecordBatch,
    tests: &mut DictTests,
) -> Result<Option<BooleanArray>> {
    let mut keep = filter::mask(dataset, rows, batch, tests)?;
    if let Some(m) = filter::any_mask(dataset, scope, batch, tests)? {
        keep = Some(match keep {
            Some(k) => and(&k, &m)?,
            None => m,
        });
    }
    Ok(keep)
}

/// Streams the rows of `dataset` passing `filters` and at least one of `scope` (none: every row),
/// as at `view`, with `columns` (stored columns; empty: all), to `sink` in segment order. Returns
/// the version read and what was scanned.
pub fn scan(
    store: &Store,
    dataset: Dataset,
    (filters, scope): (&[Filter], &[Filter]),
    columns: &[String],
    view: &View,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<(u64, ScanStats)> {
    let schema = output_schema(dataset, columns)?;
    let listing = store.listing(dataset, resolve_view(store, view)?)?;
    let derived = derived_fields(dataset, &schema);
    let mut inputs: Vec<&str> = Vec::new();
    for (f, d) in schema.fields().iter().zip(&derived) {
        match d {
            Some(d) => inputs.extend(d.inputs(dataset)),
            None => inputs.push(f.name().as_str()),
        }
    }
    for f in filters.iter().chain(scope) {
        inputs.extend(f.field.inputs(dataset));
    }
    let projection = Projection::new(dataset, &inputs)?;
    let mut stats = ScanStats::default();
    let mut matched = 0u64;
    let mut tests = DictTests::default();
    for seg in &listing.segments {
        let residuals = residuals(seg, filters, scope);
        let keep: Vec<bool> = residuals.iter().map(Option::is_some).collect();
        read_chunks(
            store,
            seg,
            dataset,
            &projection,
            &keep,
            &mut stats,
            &mut |chunk| {
                let Some((rows, in_scope)) = &residuals[chunk.run] else {
                    return Ok(());
                };
                let n = chunk.batch.num_rows();
                let mut keep = row_mask(dataset, rows, in_scope, &chunk.batch, &mut tests)?;
                if !chunk.hidden.is_empty() {
                    let mut visible = vec![true; n];
                    for h in chunk.hidden {
                        visible[*h as usize] = false;
                    }
                    let visible = BooleanArray::from(visible);
                    keep = Some(match keep {
                        Some(k) => and(&k, &visible)?,
                        None => visible,
                    });
                }
                let batch = match keep {
                    Some(k) if k.true_count() < n => filter_record_batch(&chunk.batch, &k)?,
                    _ => chunk.batch,
                };
                if batch.num_rows() == 0 {
                    return Ok(());
                }
                matched += batch.num_rows() as u64;
                let cols = schema
                    .fields()
                    .iter()
                    .zip(&derived)
                    .map(|(f, d)| {
                        if let Some(d) = d {
                            return d.eval(dataset, &batch);
                        }
                        batch.column_by_name(f.name()).cloned().ok_or_else(|| {
                            Error::InvalidArgument(format!("internal: scan lacks {}", f.name()))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                sink(RecordBatch::try_new(schema.clone(), cols)?)
            },
        )?;
    }
    stats.rows_matched = matched;
    Ok((listing.version, stats))
}

/// The columns `columns` of `dataset` (every stored column when empty), in the order asked: its
/// stored columns, and the derived fields of `query::field` (buckets as text, flags as booleans),
/// which a scan computes from their inputs.
pub fn output_schema(dataset: Dataset, columns: &[String]) -> Result<SchemaRef> {
    let schema = stored_schema(dataset);
    if columns.is_empty() {
        return Ok(schema);
    }
    let fields = columns
        .iter()
        .map(|c| {
            if let Ok(f) = schema.field_with_name(c) {
                return Ok(f.clone());
            }
            match Field::resolve(dataset, c) {
                Ok(Field::Bucket(_)) => Ok(arrow::datatypes::Field::new(c, DataType::Utf8, true)),
                Ok(Field::Flag(_)) => Ok(arrow::datatypes::Field::new(c, DataType::Boolean, true)),
                _ => Err(Error::InvalidArgument(format!(
                    "{dataset} has no column {c}: columns are its stored ones and the derived {}",
                    super::field::DERIVED.join(", ")
                ))),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(std::sync::Arc::new(
        arrow::datatypes::Schema::new_with_metadata(fields, schema.metadata().clone()),
    ))
}

/// The derived field behind each column of `schema` (`None`: a stored column).
fn derived_fields(dataset: Dataset, schema: &SchemaRef) -> Vec<Option<Field>> {
    let stored = stored_schema(dataset);
    schema
        .fields()
        .iter()
        .map(|f| {
            if stored.field_with_name(f.name()).is_ok() {
                None
            } else {
                Field::resolve(dataset, f.name()).ok()
            }
        })
        .collect()
}
