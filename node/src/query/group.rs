//! Grouping and accumulating the rows of chunks into one thread's aggregates.
//!
//! Group keys are interned per field (text → code), and a group is its fields' codes packed in
//! a `u128`. A field whose value is a constant of the chunk (provider, activity month, financial
//! year: the partition keys) costs nothing per row; a dictionary column or a bucket of one is
//! keyed through its dictionary (one lookup per dictionary value, not per row). Within a chunk
//! rows find their group through a dense table over the chunk's local codes when it is small, a
//! hash of the packed codes otherwise. Sums accumulate in `i128` and are checked into `i64`
//! once, at the end.

use super::field::{Bucket, Field, age_band, as_i64, date_bucket_of_month};
use super::keys::{DictCodes, Interner, Keys, dictionary_keys, generic_keys, patient_digests};
use super::read::Chunk;
use super::spec::{Agg, Func, PatientKey, Query, ScanStats};
use crate::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, UInt16Type};

/// Group lookups hash per row or per chunk: a fast hasher (the keys are our own codes and
/// labels, not attacker-chosen in a way that matters for a query's own memory).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use sus_proto::partial::{Digests, Partial, State};

/// The rows of a chunk that count: all, all but the hidden ones, or listed ones.
enum Sel<'a> {
    All(usize),
    AllBut(usize, &'a [u32]),
    Rows(Vec<u32>),
}

impl Sel<'_> {
    fn rows(&self) -> Vec<u32> {
        match self {
            Sel::All(n) => (0..*n as u32).collect(),
            Sel::AllBut(n, hidden) => {
                let mut out = Vec::with_capacity(n - hidden.len());
                let mut h = hidden.iter().peekable();
                for r in 0..*n as u32 {
                    if h.peek() == Some(&&r) {
                        h.next();
                    } else {
                        out.push(r);
                    }
                }
                out
            }
            Sel::Rows(r) => r.clone(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Sel::All(n) => *n,
            Sel::AllBut(n, h) => n - h.len(),
            Sel::Rows(r) => r.len(),
        }
    }
}

/// One aggregate's states, one per group.
enum Column {
    Count(Vec<i64>),
    Sum(Vec<i128>),
    Min(Vec<Option<i64>>),
    Max(Vec<Option<i64>>),
    Distinct(Vec<Digests>),
}

impl Column {
    fn push(&mut self) {
        match self {
            Column::Count(v) => v.push(0),
            Column::Sum(v) => v.push(0),
            Column::Min(v) | Column::Max(v) => v.push(None),
            Column::Distinct(v) => v.push(Digests::default()),
        }
    }
}

/// One thread's aggregates of a query.
pub struct Groups<'q> {
    q: &'q Query,
    key: &'q PatientKey,
    fields: Vec<Interner>,
    /// Per field: the code of the last provider seen, and of every month seen (the partition
    /// keys repeat chunk after chunk; their labels are made once).
    last_provider: Vec<Option<(String, u32)>>,
    month_codes: Vec<HashMap<String, u32>>,
    dicts: Vec<DictCodes>,
    /// Per field: the codes of the age bands, `0-4` ... `90+` then null.
    age_codes: Vec<Option<Vec<u32>>>,
    index: HashMap<u128, u32>,
    packed: Vec<u128>,
    columns: Vec<Column>,
    pub stats: ScanStats,
}

/// Local code products up to this size find groups through a dense table.
const DENSE: usize = 1 << 16;

impl<'q> Groups<'q> {
    pub fn new(q: &'q Query, key: &'q PatientKey) -> Groups<'q> {
        Groups {
            q,
            key,
            fields: q.group_by.iter().map(|_| Interner::default()).collect(),
            last_provider: vec![None; q.group_by.len()],
            month_codes: vec![HashMap::default(); q.group_by.len()],
            dicts: q.group_by.iter().map(|_| DictCodes::default()).collect(),
            age_codes: vec![None; q.group_by.len()],
            index: HashMap::default(),
            packed: Vec::new(),
            columns: q
                .aggs
                .iter()
                .map(|a| match a.func {
                    Func::Count => Column::Count(Vec::new()),
                    Func::Sum => Column::Sum(Vec::new()),
                    Func::Min => Column::Min(Vec::new()),
                    Func::Max => Column::Max(Vec::new()),
                    Func::DistinctPatients => Column::Distinct(Vec::new()),
                })
                .collect(),
            stats: ScanStats::default(),
        }
    }

    fn slot(&mut self, packed: u128) -> u32 {
        if let Some(s) = self.index.get(&packed) {
            return *s;
        }
        let s = self.packed.len() as u32;
        self.packed.push(packed);
        self.index.insert(packed, s);
        for c in &mut self.columns {
            c.push();
        }
        s
    }

    /// Folds a chunk's rows that pass `keep` (the row filter, `None`: all) into the groups.
    pub fn add(
        &mut self,
        chunk: &Chunk<'_>,
        keep: Option<&arrow::array::BooleanArray>,
    ) -> Result<()> {
        let n = chunk.batch.num_rows();
        let sel = match keep {
            None if chunk.hidden.is_empty() => Sel::All(n),
            None => Sel::AllBut(n, chunk.hidden),
            Some(mask) => {
                // The rows the mask keeps (a null keeps nothing), minus the hidden ones (both
                // ascending).
                let mask = if mask.null_count() > 0 {
                    arrow::compute::prep_null_mask_filter(mask)
                } else {
                    mask.clone()
                };
                let mut h = chunk.hidden.iter().peekable();
                let rows = mask
                    .values()
                    .set_indices()
                    .map(|r| r as u32)
                    .filter(|r| {
                        while h.peek().is_some_and(|x| **x < *r) {
                            h.next();
                        }
                        h.peek() != Some(&r)
                    })
                    .collect();
                Sel::Rows(rows)
            }
        };
        if sel.len() == 0 {
            return Ok(());
        }
        self.stats.rows_matched += sel.len() as u64;
        let q = self.q;
        let keys = q
            .group_by
            .iter()
            .enumerate()
            .map(|(i, (_, f))| self.keys(i, f, chunk))
            .collect::<Result<Vec<Keys>>>()?;
        // One group for the whole chunk, or a group per selected row.
        let slots: Option<Vec<u32>> = if keys.iter().all(|k| matches!(k, Keys::Const(_))) {
            let packed = pack(keys.iter().map(|k| match k {
                Keys::Const(c) => *c,
                Keys::Local { .. } => 0,
            }));
            let s = self.slot(packed);
            self.one(s, &sel, chunk)?;
            None
        } else {
            Some(self.slots(&keys, &sel))
        };
        if let Some(slots) = slots {
            let rows = sel.rows();
            self.many(&slots, &rows, chunk)?;
        }
        Ok(())
    }

    /// Group slots of the selected rows.
    fn slots(&mut self, keys: &[Keys], sel: &Sel<'_>) -> Vec<u32> {
        let rows = sel.rows();
        let local: Vec<usize> = keys
            .iter()
            .map(|k| match k {
                Keys::Const(_) => 1,
                Keys::Local { global, .. } => global.len().max(1),
            })
            .collect();
        let product = local.iter().try_fold(1usize, |a, b| a.checked_mul(*b));
        let global_of = |k: &Keys, row: u32| match k {
            Keys::Const(c) => *c,
            Keys::Local { codes, global } => global[codes[row as usize] as usize],
        };
        let mut out = Vec::with_capacity(rows.len());
        match product {
            Some(p) if p <= DENSE => {
                let mut table = vec![u32::MAX; p];
                for &row in &rows {
                    let mut at = 0usize;
                    for (k, size) in keys.iter().zip(&local) {
                        at = at * size
                            + match k {
                                Keys::Const(_) => 0,
                                Keys::Local { codes, .. } => codes[row as usize] as usize,
                            };
                    }
                    if table[at] == u32::MAX {
                        table[at] = self.slot(pack(keys.iter().map(|k| global_of(k, row))));
                    }
                    out.push(table[at]);
                }
            }
            _ => {
                for &row in &rows {
                    out.push(self.slot(pack(keys.iter().map(|k| global_of(k, row)))));
                }
            }
        }
        out
    }

    /// The keys of group-by field `i` over a chunk.
    fn keys(&mut self, i: usize, field: &Field, chunk: &Chunk<'_>) -> Result<Keys> {
        let q = self.q;
        let dataset = q.dataset;
        let name = q.group_by[i].0.as_str();
        let interner = &mut self.fields[i];
        match (field, name) {
            (Field::Column { .. }, "provider_code") => {
                let last = &mut self.last_provider[i];
                if let Some((p, code)) = last
                    && p == chunk.provider
                {
                    return Ok(Keys::Const(*code));
                }
                let code = interner.code(Some(chunk.provider));
                *last = Some((chunk.provider.to_string(), code));
                return Ok(Keys::Const(code));
            }
            (Field::Bucket(b @ (Bucket::ActivityMonth | Bucket::FinancialYear)), _) => {
                let months = &mut self.month_codes[i];
                if let Some(code) = months.get(chunk.month) {
                    return Ok(Keys::Const(*code));
                }
                let code = interner.code(Some(&date_bucket_of_month(*b, chunk.month)));
                months.insert(chunk.month.to_string(), code);
                return Ok(Keys::Const(code));
            }
            _ => {}
        }
        let n = chunk.batch.num_rows();
        let input = |name: &str| -> Result<&ArrayRef> {
            chunk.batch.column_by_name(name).ok_or_else(|| {
                Error::InvalidArgument(format!("internal: chunk lacks column {name}"))
            })
        };
        match field {
            Field::Bucket(Bucket::AgeBand) => {
                let ages = input("age_at_activity")?
                    .as_primitive_opt::<UInt16Type>()
                    .ok_or_else(|| Error::InvalidArgument("age_at_activity type".into()))?;
                let global = self.age_codes[i]
                    .get_or_insert_with(|| {
                        let mut g: Vec<u32> = (0..19u16)
                            .map(|b| interner.code(Some(&age_band(b * 5))))
                            .collect();
                        g.push(interner.code(None));
                        g
                    })
                    .clone();
                let codes = (0..n)
                    .map(|r| {
                        if ages.is_valid(r) {
                            u32::from(ages.value(r) / 5).min(18)
                        } else {
                            19
                        }
                    })
                    .collect();
                Ok(Keys::Local { codes, global })
            }
            Field::Bucket(Bucket::HrgChapter) => {
                let hrg = input("hrg")?;
                dictionary_keys(hrg, interner, &mut self.dicts[i], &|s| {
                    s.chars().take(2).collect::<String>()
                })
                .unwrap_or_else(|| generic_keys(&field.eval(dataset, &chunk.batch)?, interner))
            }
            Field::Column {
                name,
                ty: DataType::Dictionary(_, _),
            } => {
                let col = input(name)?;
                dictionary_keys(col, interner, &mut self.dicts[i], &str::to_string)
                    .unwrap_or_else(|| generic_keys(col, interner))
            }
            _ => generic_keys(&field.eval(dataset, &chunk.batch)?, interner),
        }
    }

    /// Folds the selected rows into one group.
    fn one(&mut self, s: u32, sel: &Sel<'_>, chunk: &Chunk<'_>) -> Result<()> {
        let (q, s) = (self.q, s as usize);
        for (a, agg) in q.aggs.iter().enumerate() {
            match agg.func {
                Func::Count => {
                    if let Column::Count(c) = &mut self.columns[a] {
                        c[s] += sel.len() as i64;
                    }
                }
                Func::DistinctPatients => {
                    let digests = patient_digests(chunk, &sel.rows(), self.key)?;
                    if let Column::Distinct(d) = &mut self.columns[a] {
                        d[s].extend(digests.into_iter().flatten());
                    }
                }
                Func::Sum | Func::Min | Func::Max => {
                    let values = as_i64(&value_field(agg)?.eval(q.dataset, &chunk.batch)?)?;
                    match (&mut self.columns[a], sel) {
                        (Column::Sum(acc), Sel::All(_)) if values.null_count() == 0 => {
                            acc[s] += sum(values.values());
                        }
                        (Column::Sum(acc), Sel::AllBut(_, hidden)) if values.null_count() == 0 => {
                            let v = values.values();
                            acc[s] += sum(v)
                                - hidden
                                    .iter()
                                    .map(|&h| i128::from(v[h as usize]))
                                    .sum::<i128>();
                        }
                        (col, sel) => fold_values(col, &values, &sel.rows(), |_| s),
                    }
                }
            }
        }
        Ok(())
    }

    /// Folds the selected `rows` into their groups `slots`.
    fn many(&mut self, slots: &[u32], rows: &[u32], chunk: &Chunk<'_>) -> Result<()> {
        let q = self.q;
        for (a, agg) in q.aggs.iter().enumerate() {
            match agg.func {
                Func::Count => {
                    if let Column::Count(c) = &mut self.columns[a] {
                        for s in slots {
                            c[*s as usize] += 1;
                        }
                    }
                }
                Func::DistinctPatients => {
                    let digests = patient_digests(chunk, rows, self.key)?;
                    if let Column::Distinct(d) = &mut self.columns[a] {
                        for (s, digest) in slots.iter().zip(digests) {
                            if let Some(digest) = digest {
                                d[*s as usize].insert(digest);
                            }
                        }
                    }
                }
                Func::Sum | Func::Min | Func::Max => {
                    let values = as_i64(&value_field(agg)?.eval(q.dataset, &chunk.batch)?)?;
                    fold_values(&mut self.columns[a], &values, rows, |k| slots[k] as usize);
                }
            }
        }
        Ok(())
    }

    /// The groups as a partial of the query (sums checked into `i64` here).
    pub fn into_partial(self) -> Result<Partial> {
        let mut out = self.q.partial();
        let Groups {
            q,
            fields,
            packed,
            columns,
            ..
        } = self;
        let mut columns = columns;
        for (slot, p) in packed.iter().enumerate() {
            let label = fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let code = (p >> (32 * (fields.len() - 1 - i))) as u32;
                    f.labels[code as usize].clone()
                })
                .collect();
            let target = out.group(label);
            for (a, (t, col)) in target.iter_mut().zip(columns.iter_mut()).enumerate() {
                let state = match col {
                    Column::Count(v) => State::Count(v[slot]),
                    Column::Sum(v) => State::Sum(i64::try_from(v[slot]).map_err(|_| {
                        Error::InvalidArgument(format!("sum of {} overflows", q.aggs[a].name))
                    })?),
                    Column::Min(v) => State::Min(v[slot]),
                    Column::Max(v) => State::Max(v[slot]),
                    Column::Distinct(v) => State::Distinct(std::mem::take(&mut v[slot])),
                };
                t.merge(state)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            }
        }
        Ok(out)
    }
}

/// The field a sum, min or max reads.
fn value_field(agg: &Agg) -> Result<&Field> {
    agg.field
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument(format!("aggregate {} has no field", agg.name)))
}

/// Packs up to four 32-bit codes, first field highest.
fn pack(codes: impl Iterator<Item = u32>) -> u128 {
    codes.fold(0u128, |p, c| (p << 32) | u128::from(c))
}

fn sum(values: &[i64]) -> i128 {
    // Blocks small enough that an i64 cannot overflow unless a value is near the limits, in
    // which case the block is summed in i128.
    values
        .chunks(1024)
        .map(|block| {
            let small = block.iter().all(|v| v.unsigned_abs() < (1 << 52));
            if small {
                i128::from(block.iter().sum::<i64>())
            } else {
                block.iter().map(|&v| i128::from(v)).sum()
            }
        })
        .sum()
}

/// Folds `values[rows[k]]` into `col` at slot `slot(k)`; nulls are skipped.
fn fold_values(col: &mut Column, values: &Int64Array, rows: &[u32], slot: impl Fn(usize) -> usize) {
    let v = values.values();
    let valid = |r: usize| values.null_count() == 0 || values.is_valid(r);
    match col {
        Column::Sum(acc) => {
            for (k, &r) in rows.iter().enumerate() {
                if valid(r as usize) {
                    acc[slot(k)] += i128::from(v[r as usize]);
                }
            }
        }
        Column::Min(acc) => {
            for (k, &r) in rows.iter().enumerate() {
                if valid(r as usize) {
                    let a = &mut acc[slot(k)];
                    *a = Some(a.map_or(v[r as usize], |x| x.min(v[r as usize])));
                }
            }
        }
        Column::Max(acc) => {
            for (k, &r) in rows.iter().enumerate() {
                if valid(r as usize) {
                    let a = &mut acc[slot(k)];
                    *a = Some(a.map_or(v[r as usize], |x| x.max(v[r as usize])));
                }
            }
        }
        Column::Count(_) | Column::Distinct(_) => {}
    }
}
