//! Executing a query over one store: pruning, parallel segment scans, grouping, accumulation.

use super::field::as_i64;
use super::filter::{any_mask, mask, partition_may_match, row_group_may_match};
use super::{Filter, Func, Query, View};
use crate::model::Dataset;
use crate::schema::stored_schema;
use crate::store::{SegmentView, Store};
use crate::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{and, cast, filter_record_batch};
use arrow::datatypes::{DataType, Int32Type, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use rayon::prelude::*;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::hash::Hasher;
use std::sync::Arc;
use sus_proto::partial::{Partial, State};

/// The key of the patient digests exchanged for distinct counts (the cluster's, never sent to
/// clients): digests of different clusters, or without the key, cannot be linked or reversed.
#[derive(Clone)]
pub struct PatientKey(pub [u8; 16]);

/// What a scan read and skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Visible rows read from segments (before filters).
    pub rows_scanned: u64,
    /// Rows that passed the filters.
    pub rows_matched: u64,
    pub segments_scanned: u64,
    /// Segments skipped by their partition (provider, month).
    pub segments_pruned: u64,
    /// Row groups skipped by their statistics.
    pub row_groups_pruned: u64,
    /// Segments read from memory (hot) rather than Parquet.
    pub segments_hot: u64,
}

impl ScanStats {
    fn add(&mut self, o: &ScanStats) {
        self.rows_scanned += o.rows_scanned;
        self.rows_matched += o.rows_matched;
        self.segments_scanned += o.segments_scanned;
        self.segments_pruned += o.segments_pruned;
        self.row_groups_pruned += o.row_groups_pruned;
        self.segments_hot += o.segments_hot;
    }
}

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
            None => Err(Error::NotFound(format!(
                "freeze point '{name}' is not known to this replica"
            ))),
        },
    }
}

/// Runs `q` over `store`: the partial aggregates, the version read and what was scanned.
pub fn aggregate(store: &Store, q: &Query, key: &PatientKey) -> Result<(Partial, u64, ScanStats)> {
    let listing = store.listing(q.dataset, resolve_view(store, &q.view)?)?;
    let mut inputs: Vec<&str> = Vec::new();
    for f in &q.filters {
        inputs.extend(f.field.inputs(q.dataset));
    }
    for (_, f) in &q.group_by {
        inputs.extend(f.inputs(q.dataset));
    }
    for a in &q.aggs {
        match (&a.func, &a.field) {
            (Func::DistinctPatients, _) => {
                inputs.extend(["nhs_number", "local_patient_id", "provider_code"])
            }
            (_, Some(f)) => inputs.extend(f.inputs(q.dataset)),
            _ => {}
        }
    }
    for f in &q.scope {
        inputs.extend(f.field.inputs(q.dataset));
    }
    let (segments, pruned) = prune(&listing.segments, &q.filters, &q.scope);
    let results: Vec<Result<(Partial, ScanStats)>> = segments
        .par_iter()
        .map(|seg| {
            let mut partial = q.partial();
            let mut stats = ScanStats::default();
            read_segment(
                seg,
                store.hot_segment(seg.id),
                q.dataset,
                &inputs,
                (&q.filters, &q.scope),
                &mut stats,
                &mut |batch| accumulate(q, &batch, key, &mut partial),
            )?;
            Ok((partial, stats))
        })
        .collect();
    let mut out = q.partial();
    let mut stats = ScanStats {
        segments_pruned: pruned,
        ..ScanStats::default()
    };
    for r in results {
        let (p, s) = r?;
        out.merge(p)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        stats.add(&s);
    }
    Ok((out, listing.version, stats))
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
    let mut inputs: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for f in filters.iter().chain(scope) {
        inputs.extend(f.field.inputs(dataset));
    }
    let (segments, pruned) = prune(&listing.segments, filters, scope);
    let mut stats = ScanStats {
        segments_pruned: pruned,
        ..ScanStats::default()
    };
    for seg in segments {
        let hot = store.hot_segment(seg.id);
        read_segment(
            seg,
            hot,
            dataset,
            &inputs,
            (filters, scope),
            &mut stats,
            &mut |batch| {
                let cols = schema
                    .fields()
                    .iter()
                    .map(|f| {
                        batch.column_by_name(f.name()).cloned().ok_or_else(|| {
                            Error::InvalidArgument(format!("internal: scan lacks {}", f.name()))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                sink(RecordBatch::try_new(schema.clone(), cols)?)
            },
        )?;
    }
    Ok((listing.version, stats))
}

/// The stored schema of `dataset` cut to `columns` (all when empty), in the order asked.
pub fn output_schema(dataset: Dataset, columns: &[String]) -> Result<SchemaRef> {
    let schema = stored_schema(dataset);
    if columns.is_empty() {
        return Ok(schema);
    }
    let indices = columns
        .iter()
        .map(|c| {
            schema
                .index_of(c)
                .map_err(|_| Error::InvalidArgument(format!("{dataset} has no stored column {c}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(std::sync::Arc::new(schema.project(&indices)?))
}

fn prune<'a>(
    segments: &'a [SegmentView],
    filters: &[Filter],
    scope: &[Filter],
) -> (Vec<&'a SegmentView>, u64) {
    let kept: Vec<&SegmentView> = segments
        .iter()
        .filter(|s| {
            partition_may_match(filters, &s.provider, &s.month)
                && (scope.is_empty()
                    || scope.iter().any(|f| {
                        partition_may_match(std::slice::from_ref(f), &s.provider, &s.month)
                    }))
        })
        .collect();
    let pruned = (segments.len() - kept.len()) as u64;
    (kept, pruned)
}

/// Rows per batch handed to the kernels.
const BATCH_ROWS: usize = 64 * 1024;

/// Reads the columns `inputs` of one segment's visible rows that pass `filters`, in batches:
/// from memory when the segment is hot, else from its Parquet file.
fn read_segment(
    seg: &SegmentView,
    hot: Option<Arc<RecordBatch>>,
    dataset: Dataset,
    inputs: &[&str],
    (filters, scope): (&[Filter], &[Filter]),
    stats: &mut ScanStats,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let schema = stored_schema(dataset);
    let wanted: BTreeSet<usize> = inputs
        .iter()
        .map(|c| {
            schema
                .index_of(c)
                .map_err(|_| Error::InvalidArgument(format!("{dataset} has no column {c}")))
        })
        .collect::<Result<_>>()?;
    let corrupt = |message: String| Error::Corruption {
        what: format!("segment {}", seg.path.display()),
        message,
    };
    let visible_of = |ranges: &[(u64, u64)]| -> Option<Vec<bool>> {
        (!seg.hidden.is_empty()).then(|| {
            let mut v = Vec::new();
            for &(start, n) in ranges {
                v.extend(
                    (start..start + n).map(|row| seg.hidden.binary_search(&(row as u32)).is_err()),
                );
            }
            v
        })
    };
    if let Some(rows) = hot {
        if rows.num_rows() != seg.rows as usize {
            return Err(corrupt(format!(
                "{} rows in memory, {} catalogued",
                rows.num_rows(),
                seg.rows
            )));
        }
        stats.segments_scanned += 1;
        stats.segments_hot += 1;
        let indices: Vec<usize> = wanted.iter().copied().collect();
        let projected = rows.project(&indices)?;
        let visible = visible_of(&[(0, u64::from(seg.rows))]);
        let mut offset = 0;
        while offset < projected.num_rows() {
            let n = BATCH_ROWS.min(projected.num_rows() - offset);
            let seen = visible.as_ref().map(|v| &v[offset..offset + n]);
            emit(
                projected.slice(offset, n),
                seen,
                dataset,
                (filters, scope),
                stats,
                sink,
            )?;
            offset += n;
        }
        return Ok(());
    }
    let parquet_error = |e: parquet::errors::ParquetError| corrupt(e.to_string());
    let file = File::open(&seg.path).map_err(|e| Error::io(&seg.path, e))?;
    let options = ArrowReaderOptions::new().with_schema(schema.clone());
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .map_err(parquet_error)?;
    let meta = builder.metadata().clone();
    // Which row groups to read, and where each starts in the segment.
    let mut groups = Vec::new();
    let mut ranges = Vec::new();
    let mut start = 0u64;
    for (i, rg) in meta.row_groups().iter().enumerate() {
        let n = rg.num_rows() as u64;
        if row_group_may_match(filters, rg) {
            groups.push(i);
            ranges.push((start, n));
        } else {
            stats.row_groups_pruned += 1;
        }
        start += n;
    }
    if start != u64::from(seg.rows) {
        return Err(corrupt(format!(
            "{start} rows in the file, {} catalogued",
            seg.rows
        )));
    }
    if groups.is_empty() {
        return Ok(());
    }
    stats.segments_scanned += 1;
    // Visibility of the rows read, in read order.
    let visible = visible_of(&ranges);
    let projection = ProjectionMask::roots(builder.parquet_schema(), wanted);
    let reader = builder
        .with_row_groups(groups)
        .with_projection(projection)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_error)?;
    let mut offset = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        let n = batch.num_rows();
        let seen = visible.as_ref().map(|v| &v[offset..offset + n]);
        offset += n;
        emit(batch, seen, dataset, (filters, scope), stats, sink)?;
    }
    Ok(())
}

/// Masks a batch by visibility and filters and hands what is left to `sink`.
fn emit(
    batch: RecordBatch,
    visible: Option<&[bool]>,
    dataset: Dataset,
    (filters, scope): (&[Filter], &[Filter]),
    stats: &mut ScanStats,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let n = batch.num_rows();
    stats.rows_scanned += match visible {
        Some(v) => v.iter().filter(|x| **x).count() as u64,
        None => n as u64,
    };
    let seen = visible.map(|v| BooleanArray::from(v.to_vec()));
    let mut keep = seen;
    for m in [
        mask(dataset, filters, &batch)?,
        any_mask(dataset, scope, &batch)?,
    ]
    .into_iter()
    .flatten()
    {
        keep = Some(match keep {
            Some(k) => and(&k, &m)?,
            None => m,
        });
    }
    let batch = match keep {
        Some(k) if k.true_count() < n => filter_record_batch(&batch, &k)?,
        _ => batch,
    };
    if batch.num_rows() > 0 {
        stats.rows_matched += batch.num_rows() as u64;
        sink(batch)?;
    }
    Ok(())
}

/// Per-batch dense codes of a group-by field and the text of each code (the last may be null).
fn codes(values: &ArrayRef) -> Result<(Vec<u32>, Vec<Option<String>>)> {
    if let Some(dict) = values.as_dictionary_opt::<Int32Type>() {
        let names = cast(dict.values(), &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let mut labels: Vec<Option<String>> = names.iter().map(|v| v.map(str::to_string)).collect();
        let null = labels.len() as u32;
        labels.push(None);
        let keys = dict.keys();
        let codes = (0..keys.len())
            .map(|i| {
                if keys.is_valid(i) {
                    keys.value(i) as u32
                } else {
                    null
                }
            })
            .collect();
        return Ok((codes, labels));
    }
    let text = cast(values, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let mut index: HashMap<Option<&str>, u32> = HashMap::new();
    let mut labels = Vec::new();
    let codes = text
        .iter()
        .map(|v| {
            *index.entry(v).or_insert_with(|| {
                labels.push(v.map(str::to_string));
                (labels.len() - 1) as u32
            })
        })
        .collect();
    Ok((codes, labels))
}

/// Dense composite indexes up to this many slots; a hash map beyond.
const DENSE_GROUPS: u64 = 1 << 20;

/// Groups the rows of a (filtered) batch and folds their aggregates into `out`.
fn accumulate(q: &Query, batch: &RecordBatch, key: &PatientKey, out: &mut Partial) -> Result<()> {
    let n = batch.num_rows();
    let mut fields = Vec::with_capacity(q.group_by.len());
    for (_, f) in &q.group_by {
        fields.push(codes(&f.eval(q.dataset, batch)?)?);
    }
    // Group index of each row and the composite code of each group.
    let mut gid = vec![0u32; n];
    let mut groups: Vec<Vec<u32>> = Vec::new();
    if fields.is_empty() {
        groups.push(Vec::new());
    } else {
        let slots = fields
            .iter()
            .try_fold(1u64, |acc, (_, l)| acc.checked_mul(l.len() as u64))
            .unwrap_or(u64::MAX);
        if slots <= DENSE_GROUPS {
            let mut dense = vec![u32::MAX; slots as usize];
            for (row, g) in gid.iter_mut().enumerate() {
                let mut at = 0usize;
                for (c, l) in &fields {
                    at = at * l.len() + c[row] as usize;
                }
                if dense[at] == u32::MAX {
                    dense[at] = groups.len() as u32;
                    groups.push(fields.iter().map(|(c, _)| c[row]).collect());
                }
                *g = dense[at];
            }
        } else {
            let mut index: HashMap<u128, u32> = HashMap::new();
            for (row, g) in gid.iter_mut().enumerate() {
                let k = fields
                    .iter()
                    .fold(0u128, |k, (c, _)| (k << 32) | u128::from(c[row]));
                *g = *index.entry(k).or_insert_with(|| {
                    groups.push(fields.iter().map(|(c, _)| c[row]).collect());
                    (groups.len() - 1) as u32
                });
            }
        }
    }
    let ng = groups.len();
    let mut states: Vec<Vec<State>> = (0..q.aggs.len())
        .map(|a| (0..ng).map(|_| State::empty(q.aggs[a].kind())).collect())
        .collect();
    for (a, agg) in q.aggs.iter().enumerate() {
        let st = &mut states[a];
        match (agg.func, &agg.field) {
            (Func::Count, _) => {
                let mut counts = vec![0i64; ng];
                for g in &gid {
                    counts[*g as usize] += 1;
                }
                for (s, c) in st.iter_mut().zip(counts) {
                    *s = State::Count(c);
                }
            }
            (Func::DistinctPatients, _) => {
                let digests = patient_digests(batch, key)?;
                for (row, d) in digests.into_iter().enumerate() {
                    if let (Some(d), State::Distinct(set)) = (d, &mut st[gid[row] as usize]) {
                        set.insert(d);
                    }
                }
            }
            (func, Some(field)) => {
                let values = as_i64(&field.eval(q.dataset, batch)?)?;
                let mut acc: Vec<Option<i64>> = vec![None; ng];
                for row in 0..n {
                    if values.is_null(row) {
                        continue;
                    }
                    let v = values.value(row);
                    let slot = &mut acc[gid[row] as usize];
                    *slot = Some(match (func, *slot) {
                        (_, None) => v,
                        (Func::Sum, Some(s)) => s.checked_add(v).ok_or_else(|| {
                            Error::InvalidArgument(format!("sum of {} overflows", agg.name))
                        })?,
                        (Func::Min, Some(s)) => s.min(v),
                        (_, Some(s)) => s.max(v),
                    });
                }
                for (s, v) in st.iter_mut().zip(acc) {
                    *s = match func {
                        Func::Sum => State::Sum(v.unwrap_or(0)),
                        Func::Min => State::Min(v),
                        _ => State::Max(v),
                    };
                }
            }
            (_, None) => {
                return Err(Error::InvalidArgument(format!(
                    "aggregate {} has no field",
                    agg.name
                )));
            }
        }
    }
    // Fold each group's states into the partial under its text key.
    let mut columns: Vec<_> = states.into_iter().map(|s| s.into_iter()).collect();
    for g in groups {
        let label = g
            .iter()
            .zip(&fields)
            .map(|(code, (_, labels))| labels[*code as usize].clone())
            .collect();
        let target = out.group(label);
        for (t, col) in target.iter_mut().zip(columns.iter_mut()) {
            let s = col.next().ok_or_else(|| {
                Error::InvalidArgument("internal: group states out of step".into())
            })?;
            t.merge(s)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        }
    }
    Ok(())
}

/// A patient's keyed 128-bit digest per row: the NHS number, else the provider and local
/// patient identifier; `None` for a row with neither.
fn patient_digests(batch: &RecordBatch, key: &PatientKey) -> Result<Vec<Option<u128>>> {
    let text = |name: &str| -> Result<ArrayRef> {
        let col = batch
            .column_by_name(name)
            .ok_or_else(|| Error::InvalidArgument(format!("internal: batch lacks {name}")))?;
        Ok(cast(col, &DataType::Utf8)?)
    };
    let nhs = text("nhs_number")?;
    let local = text("local_patient_id")?;
    let provider = text("provider_code")?;
    let (nhs, local, provider) = (
        nhs.as_string::<i32>(),
        local.as_string::<i32>(),
        provider.as_string::<i32>(),
    );
    Ok((0..batch.num_rows())
        .map(|row| {
            let mut h = SipHasher13::new_with_key(&key.0);
            if nhs.is_valid(row) {
                h.write(b"n");
                h.write(nhs.value(row).as_bytes());
            } else if local.is_valid(row) && provider.is_valid(row) {
                h.write(b"l");
                h.write(provider.value(row).as_bytes());
                h.write_u8(0x1f);
                h.write(local.value(row).as_bytes());
            } else {
                return None;
            }
            Some(h.finish128().as_u128())
        })
        .collect())
}
