//! Partial aggregates: what a node returns for its shards and how partials merge exactly.
//!
//! A partial is one Arrow batch with a row per group: the group key columns (`Utf8`, nullable,
//! field metadata `sus.role=key`) then one state column per aggregate (`sus.role=<kind>`):
//!
//! | kind       | state column                        | merge                 | final       |
//! |------------|-------------------------------------|-----------------------|-------------|
//! | `count`    | `Int64`                             | add                   | `Int64`     |
//! | `sum`      | `Int64` (pence for money)           | add                   | `Int64`     |
//! | `min`/`max`| `Int64`, null when no input row     | min / max             | `Int64`     |
//! | `distinct` | `Binary`: 16-byte patient keys       | set union             | `Int64` count |
//! | `distinct_count` | `Int64`: a group's exact distinct count | never two non-zero | `Int64` |
//!
//! Distinct patients are exact: nodes exchange the set of 128-bit keyed digests of the patient
//! identifiers of each group (a keyed PRF, so the digests reveal nothing without the cluster's
//! key), and the merge is a set union ([`Digests`]: sets hashed by the digests' own bits). Sums are `i64` with overflow checked: a national total of
//! 10^9 rows at £10^6 each is 10^17 pence, well inside `i64`.
//!
//! When `provider_code` is a group key, every group's rows live in one shard (rows are routed
//! by provider), so a node counts each group's set itself and sends `distinct_count` instead
//! of the set ([`Partial::count_distinct`]): no digests cross the network and nobody unions
//! them. Counts of one patient set cannot be added, so merging two non-zero counts of one
//! group is an error ([`Error::CountedTwice`]), never a sum: a caller that meets it (a provider
//! whose rows are on two shards) asks again for the sets.

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Int64Array, Int64Builder, RecordBatch, StringArray,
    StringBuilder,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// An error decoding or merging partials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("partial aggregate: {0}")]
    Invalid(String),
    #[error("partial aggregate: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Distinct-patient counts that cannot be merged: one group counted by two partials (its
    /// rows are on both), or counts beside sets (a node of an older version, during a rolling
    /// upgrade). The caller asks again for the patient sets.
    #[error("partial aggregate: {0}; ask for the patient sets instead")]
    CountedTwice(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// How an aggregate's state is kept and merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Count,
    Sum,
    Min,
    Max,
    Distinct,
    /// Distinct patients counted where the group's rows all are (see the module documentation).
    DistinctCount,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Count => "count",
            Kind::Sum => "sum",
            Kind::Min => "min",
            Kind::Max => "max",
            Kind::Distinct => "distinct",
            Kind::DistinctCount => "distinct_count",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Count,
            Kind::Sum,
            Kind::Min,
            Kind::Max,
            Kind::Distinct,
            Kind::DistinctCount,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

/// A set of patients' 128-bit keyed digests, hashed by the digests themselves ([`DigestHasher`]).
pub type Digests = HashSet<u128, BuildHasherDefault<DigestHasher>>;

/// Hashes a patient digest by its low 64 bits, without hashing it again.
///
/// Safe for [`Digests`] because the values are already keyed SipHash-1-3 outputs (a PRF under a
/// key no user holds): every bit is uniform, and nobody can choose NHS numbers whose digests
/// collide in the low bits without the key (a recipient sees digests only of rows already
/// stored, under its own key, so it cannot search for collisions either). A second SipHash per
/// insert, as std's `RandomState` does, was most of a distinct count's cost. Sets are merged by
/// inserting the smaller into the larger after reserving room ([`State::merge`]): with one hash
/// function for every set, inserting a large set's iteration order into a small table would
/// cluster.
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u128(&mut self, v: u128) {
        // The first (only) value passes through as is.
        self.0 = self.0.rotate_left(29) ^ v as u64;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `Digests` (u128 hashes through `write_u128`); FNV-1a so it still hashes.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The state of one aggregate of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Count(i64),
    Sum(i64),
    Min(Option<i64>),
    Max(Option<i64>),
    Distinct(Digests),
    DistinctCount(i64),
}

impl State {
    pub fn empty(kind: Kind) -> State {
        match kind {
            Kind::Count => State::Count(0),
            Kind::Sum => State::Sum(0),
            Kind::Min => State::Min(None),
            Kind::Max => State::Max(None),
            Kind::Distinct => State::Distinct(Digests::default()),
            Kind::DistinctCount => State::DistinctCount(0),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            State::Count(_) => Kind::Count,
            State::Sum(_) => Kind::Sum,
            State::Min(_) => Kind::Min,
            State::Max(_) => Kind::Max,
            State::Distinct(_) => Kind::Distinct,
            State::DistinctCount(_) => Kind::DistinctCount,
        }
    }

    /// Folds `other` (of the same kind) into `self`. Two non-zero distinct counts are refused
    /// with [`Error::CountedTwice`] (naming no group: [`Partial::merge`] adds it); a zero count
    /// is an empty set, which merges with anything.
    pub fn merge(&mut self, other: State) -> Result<()> {
        let overflow = || Error::Invalid("sum overflows i64".into());
        match (self, other) {
            (State::Count(a), State::Count(b)) | (State::Sum(a), State::Sum(b)) => {
                *a = a.checked_add(b).ok_or_else(overflow)?;
            }
            (State::Min(a), State::Min(b)) => *a = opt(*a, b, i64::min),
            (State::Max(a), State::Max(b)) => *a = opt(*a, b, i64::max),
            (State::Distinct(a), State::Distinct(b)) => {
                let small = if a.len() < b.len() {
                    std::mem::replace(a, b)
                } else {
                    b
                };
                a.reserve(small.len());
                a.extend(small);
            }
            (State::DistinctCount(a), State::DistinctCount(b)) => {
                if *a != 0 && b != 0 {
                    return Err(Error::CountedTwice(String::new()));
                }
                *a += b;
            }
            (a, b) => {
                return Err(Error::Invalid(format!(
                    "cannot merge a {} state into a {} state",
                    b.kind().name(),
                    a.kind().name()
                )));
            }
        }
        Ok(())
    }

    /// The final value: counts and sums, min/max (null without input), distinct set sizes.
    pub fn value(&self) -> Option<i64> {
        match self {
            State::Count(v) | State::Sum(v) | State::DistinctCount(v) => Some(*v),
            State::Min(v) | State::Max(v) => *v,
            State::Distinct(set) => Some(set.len() as i64),
        }
    }
}

fn opt(a: Option<i64>, b: Option<i64>, f: fn(i64, i64) -> i64) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// A group's key: one optional text value per group-by field.
pub type GroupKey = Vec<Option<String>>;

/// Partial (or merged) aggregates of one query.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    /// Group-by output column names.
    pub keys: Vec<String>,
    /// Aggregate output column names and kinds.
    pub aggs: Vec<(String, Kind)>,
    pub groups: HashMap<GroupKey, Vec<State>>,
}

impl Partial {
    pub fn new(keys: Vec<String>, aggs: Vec<(String, Kind)>) -> Partial {
        Partial {
            keys,
            aggs,
            groups: HashMap::new(),
        }
    }

    /// The states of a group, created empty on first use.
    pub fn group(&mut self, key: GroupKey) -> &mut Vec<State> {
        let aggs = &self.aggs;
        self.groups
            .entry(key)
            .or_insert_with(|| aggs.iter().map(|(_, k)| State::empty(*k)).collect())
    }

    /// Folds another partial of the same query into this one.
    pub fn merge(&mut self, other: Partial) -> Result<()> {
        let as_sets = |aggs: &[(String, Kind)]| -> Vec<(String, Kind)> {
            aggs.iter()
                .map(|(n, k)| match k {
                    Kind::DistinctCount => (n.clone(), Kind::Distinct),
                    k => (n.clone(), *k),
                })
                .collect()
        };
        if other.keys == self.keys
            && other.aggs != self.aggs
            && as_sets(&other.aggs) == as_sets(&self.aggs)
        {
            return Err(Error::CountedTwice(
                "one partial counts distinct patients, another sends their sets (nodes of \
                 different versions)"
                    .into(),
            ));
        }
        if other.keys != self.keys || other.aggs != self.aggs {
            return Err(Error::Invalid(format!(
                "partials of different queries: keys {:?} / {:?}, aggregates {:?} / {:?}",
                self.keys, other.keys, self.aggs, other.aggs
            )));
        }
        for (key, states) in other.groups {
            match self.groups.get_mut(&key) {
                Some(mine) => {
                    for (m, s) in mine.iter_mut().zip(states) {
                        m.merge(s).map_err(|e| match e {
                            Error::CountedTwice(_) => Error::CountedTwice(format!(
                                "distinct patients of group {key:?} were counted by two shards \
                                 (its rows are on both)"
                            )),
                            e => e,
                        })?;
                    }
                }
                None => {
                    self.groups.insert(key, states);
                }
            }
        }
        Ok(())
    }

    /// The partial as one Arrow batch (the wire layout in the module documentation).
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let mut groups: Vec<(&GroupKey, &Vec<State>)> = self.groups.iter().collect();
        groups.sort_by(|a, b| a.0.cmp(b.0));
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (i, name) in self.keys.iter().enumerate() {
            fields.push(role(Field::new(name, DataType::Utf8, true), "key"));
            let col: StringArray = groups.iter().map(|(k, _)| k[i].as_deref()).collect();
            columns.push(Arc::new(col));
        }
        for (i, (name, kind)) in self.aggs.iter().enumerate() {
            if *kind == Kind::Distinct {
                fields.push(role(Field::new(name, DataType::Binary, false), kind.name()));
                let mut b = BinaryBuilder::new();
                for (_, states) in &groups {
                    let State::Distinct(set) = &states[i] else {
                        return Err(Error::Invalid(format!("state of {name} is not distinct")));
                    };
                    // In the set's order: sorting cost more than the whole transfer.
                    let bytes: Vec<u8> = set.iter().flat_map(|k| k.to_le_bytes()).collect();
                    b.append_value(bytes);
                }
                columns.push(Arc::new(b.finish()));
            } else {
                fields.push(role(Field::new(name, DataType::Int64, true), kind.name()));
                let col: Int64Array = groups.iter().map(|(_, s)| s[i].value()).collect();
                columns.push(Arc::new(col));
            }
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }

    /// Reads a partial back from its Arrow batch, checking the layout.
    pub fn from_batch(batch: &RecordBatch) -> Result<Partial> {
        let mut keys = Vec::new();
        let mut aggs = Vec::new();
        for field in batch.schema().fields() {
            let role = field.metadata().get("sus.role").map(String::as_str);
            match role {
                Some("key") if aggs.is_empty() => keys.push(field.name().clone()),
                Some(r) => match Kind::parse(r) {
                    Some(kind) => aggs.push((field.name().clone(), kind)),
                    None => {
                        return Err(Error::Invalid(format!(
                            "column {} has role {r}",
                            field.name()
                        )));
                    }
                },
                None => {
                    return Err(Error::Invalid(format!(
                        "column {} has no role",
                        field.name()
                    )));
                }
            }
        }
        let mut out = Partial::new(keys, aggs);
        let key_cols = (0..out.keys.len())
            .map(|i| {
                batch.column(i).as_string_opt::<i32>().ok_or_else(|| {
                    Error::Invalid(format!("key column {} is not Utf8", out.keys[i]))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let nk = out.keys.len();
        for row in 0..batch.num_rows() {
            let key: GroupKey = key_cols
                .iter()
                .map(|c| c.is_valid(row).then(|| c.value(row).to_string()))
                .collect();
            let mut states = Vec::with_capacity(out.aggs.len());
            for (i, (name, kind)) in out.aggs.iter().enumerate() {
                let col = batch.column(nk + i);
                let bad = || Error::Invalid(format!("state column {name} has the wrong type"));
                let state = if *kind == Kind::Distinct {
                    let bytes = col.as_binary_opt::<i32>().ok_or_else(bad)?.value(row);
                    if bytes.len() % 16 != 0 {
                        return Err(Error::Invalid(format!("{name}: truncated patient keys")));
                    }
                    State::Distinct(
                        bytes
                            .chunks_exact(16)
                            .map(|c| u128::from_le_bytes(c.try_into().unwrap_or([0; 16])))
                            .collect(),
                    )
                } else {
                    let col = col.as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
                    let v = col.is_valid(row).then(|| col.value(row));
                    match kind {
                        Kind::Count => State::Count(v.ok_or_else(bad)?),
                        Kind::Sum => State::Sum(v.ok_or_else(bad)?),
                        Kind::Min => State::Min(v),
                        Kind::Max => State::Max(v),
                        Kind::DistinctCount => {
                            State::DistinctCount(v.filter(|v| *v >= 0).ok_or_else(bad)?)
                        }
                        Kind::Distinct => unreachable!("handled above"),
                    }
                };
                states.push(state);
            }
            if out.groups.insert(key, states).is_some() {
                return Err(Error::Invalid("a group appears twice".into()));
            }
        }
        Ok(out)
    }

    /// Replaces every distinct-patient set by its size (`distinct` → `distinct_count`): for a
    /// partial whose groups each lie wholly in the shards it covers (`provider_code` a key).
    pub fn count_distinct(&mut self) {
        for (_, kind) in &mut self.aggs {
            if *kind == Kind::Distinct {
                *kind = Kind::DistinctCount;
            }
        }
        for states in self.groups.values_mut() {
            for s in states.iter_mut() {
                if let State::Distinct(set) = s {
                    *s = State::DistinctCount(set.len() as i64);
                }
            }
        }
    }

    pub fn to_ipc(&self) -> Result<Vec<u8>> {
        batch_to_ipc(&self.to_batch()?)
    }

    pub fn from_ipc(bytes: &[u8]) -> Result<Partial> {
        let batch = ipc_to_batch(bytes)?;
        Partial::from_batch(&batch)
    }

    /// The final result: key columns, then one `Int64` column per aggregate, ordered by `order`
    /// (output column name, descending) then by the keys, and cut to `limit` rows (0: all).
    pub fn finish(&self, order: &[(String, bool)], limit: usize) -> Result<RecordBatch> {
        let mut rows: Vec<(&GroupKey, Vec<Option<i64>>)> = self
            .groups
            .iter()
            .map(|(k, s)| (k, s.iter().map(State::value).collect()))
            .collect();
        let mut sort_by = Vec::new();
        for (column, desc) in order {
            let at = if let Some(i) = self.keys.iter().position(|k| k == column) {
                Col::Key(i)
            } else if let Some(i) = self.aggs.iter().position(|(a, _)| a == column) {
                Col::Value(i)
            } else {
                return Err(Error::Invalid(format!(
                    "cannot order by {column}: not an output column ({})",
                    self.columns().join(", ")
                )));
            };
            sort_by.push((at, *desc));
        }
        rows.sort_by(|a, b| {
            for (col, desc) in &sort_by {
                let ord = match col {
                    Col::Key(i) => a.0[*i].cmp(&b.0[*i]),
                    Col::Value(i) => a.1[*i].cmp(&b.1[*i]),
                };
                let ord = if *desc { ord.reverse() } else { ord };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            a.0.cmp(b.0)
        });
        if limit > 0 {
            rows.truncate(limit);
        }
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (i, name) in self.keys.iter().enumerate() {
            fields.push(Field::new(name, DataType::Utf8, true));
            let mut b = StringBuilder::new();
            for (k, _) in &rows {
                b.append_option(k[i].as_deref());
            }
            columns.push(Arc::new(b.finish()));
        }
        for (i, (name, _)) in self.aggs.iter().enumerate() {
            fields.push(Field::new(name, DataType::Int64, true));
            let mut b = Int64Builder::new();
            for (_, v) in &rows {
                b.append_option(v[i]);
            }
            columns.push(Arc::new(b.finish()));
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }

    /// The output column names, keys first.
    pub fn columns(&self) -> Vec<String> {
        self.keys
            .iter()
            .cloned()
            .chain(self.aggs.iter().map(|(a, _)| a.clone()))
            .collect()
    }
}

enum Col {
    Key(usize),
    Value(usize),
}

fn role(field: Field, role: &str) -> Field {
    field.with_metadata(HashMap::from([("sus.role".to_string(), role.to_string())]))
}

/// One batch as a self-contained Arrow IPC stream.
pub fn batch_to_ipc(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// The one batch of an Arrow IPC stream (an empty batch of the stream's schema if it has none).
pub fn ipc_to_batch(bytes: &[u8]) -> Result<RecordBatch> {
    let reader = StreamReader::try_new(bytes, None)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(rows: &[(&str, i64, &[u128])]) -> Partial {
        let mut p = Partial::new(
            vec!["provider".into()],
            vec![
                ("n".into(), Kind::Count),
                ("price".into(), Kind::Sum),
                ("lo".into(), Kind::Min),
                ("hi".into(), Kind::Max),
                ("patients".into(), Kind::Distinct),
            ],
        );
        for (provider, price, patients) in rows {
            let g = p.group(vec![Some(provider.to_string())]);
            let states = [
                State::Count(1),
                State::Sum(*price),
                State::Min(Some(*price)),
                State::Max(Some(*price)),
                State::Distinct(patients.iter().copied().collect()),
            ];
            for (s, new) in g.iter_mut().zip(states) {
                s.merge(new).expect("same kinds");
            }
        }
        p
    }

    // Merging two partials gives what one partial over all rows gives, through the wire format,
    // and a patient seen on both sides is counted once.
    #[test]
    fn merge_equals_the_partial_of_all_rows() {
        let a = [("RA1", 100, &[1u128, 2][..]), ("RB2", -5, &[3][..])];
        let b = [("RA1", 250, &[2u128, 9][..]), ("RC3", 7, &[][..])];
        let all: Vec<_> = a.iter().chain(b.iter()).copied().collect();
        let mut merged = Partial::from_ipc(&partial(&a).to_ipc().expect("encode")).expect("decode");
        merged
            .merge(Partial::from_ipc(&partial(&b).to_ipc().expect("encode")).expect("decode"))
            .expect("merge");
        assert_eq!(merged, partial(&all));
        let out = merged.finish(&[("price".into(), true)], 2).expect("finish");
        let providers = out.column(0).as_string::<i32>();
        assert_eq!(providers.value(0), "RA1");
        assert_eq!(providers.value(1), "RC3");
        let v = |c: usize| out.column(c).as_primitive::<Int64Type>().value(0);
        assert_eq!((v(1), v(2), v(3), v(4), v(5)), (2, 350, 100, 250, 3));
    }

    /// Stand-ins for keyed digests: a counter through splitmix64, on both halves.
    fn digest(i: u64) -> u128 {
        let mix = |mut z: u64| {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (u128::from(mix(i)) << 64) | u128::from(mix(!i))
    }

    #[test]
    fn digests_hash_to_their_low_bits() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<DigestHasher>::default();
        for i in 0..100 {
            assert_eq!(build.hash_one(digest(i)), digest(i) as u64);
        }
    }

    // Overlapping digest sets merged (either way round, and through the wire) count what std's
    // sets count.
    #[test]
    fn digest_sets_count_as_std_sets() {
        let mut all = HashSet::new();
        let mut merged = State::empty(Kind::Distinct);
        let mut parts = Vec::new();
        for part in 0..8u64 {
            let n = 1000 + 2000 * (part % 3);
            let values: Vec<u128> = (0..n).map(|i| digest(part * 1500 + i)).collect();
            all.extend(values.iter().copied());
            let state = State::Distinct(values.iter().copied().collect());
            merged.merge(state.clone()).expect("merge");
            parts.push(state);
        }
        assert_eq!(merged.value(), Some(all.len() as i64));
        let mut backwards = State::empty(Kind::Distinct);
        for s in parts.into_iter().rev() {
            backwards.merge(s).expect("merge");
        }
        assert_eq!(backwards, merged);
        let mut p = Partial::new(vec![], vec![("patients".into(), Kind::Distinct)]);
        p.group(vec![])[0] = merged;
        let back = Partial::from_ipc(&p.to_ipc().expect("encode")).expect("decode");
        assert_eq!(back.groups[&vec![]][0].value(), Some(all.len() as i64));
    }

    #[test]
    fn partials_of_other_queries_do_not_merge() {
        let mut a = partial(&[("RA1", 1, &[])]);
        let b = Partial::new(vec!["x".into()], vec![]);
        assert!(a.merge(b).is_err());
        assert!(a.finish(&[("nope".into(), false)], 0).is_err());
    }

    // Counted partials: a group counted by one side merges; a group counted by both is refused
    // (naming it), whatever the order; zero counts (no identified patient) merge; the counts
    // cross the wire as Int64 and finish as the sets' sizes would.
    #[test]
    fn distinct_counts_merge_only_across_groups() {
        let counted = |rows: &[(&str, i64, &[u128])]| {
            let mut p = partial(rows);
            p.count_distinct();
            Partial::from_ipc(&p.to_ipc().expect("encode")).expect("decode")
        };
        let a = counted(&[("RA1", 100, &[1, 2]), ("RB2", 3, &[])]);
        let b = counted(&[("RC3", 7, &[5]), ("RB2", 4, &[9])]);
        let mut merged = a.clone();
        merged.merge(b.clone()).expect("disjoint counts merge");
        let mut sets = partial(&[("RA1", 100, &[1, 2]), ("RB2", 3, &[])]);
        sets.merge(partial(&[("RC3", 7, &[5]), ("RB2", 4, &[9])]))
            .expect("merge");
        sets.count_distinct();
        assert_eq!(merged, sets);
        for (x, y) in [(&a, &a), (&b, &merged)] {
            let mut m = x.clone();
            match m.merge(y.clone()) {
                Err(Error::CountedTwice(group)) => assert!(group.contains("R"), "{group}"),
                other => panic!("two counts of one group merged: {other:?}"),
            }
        }
        let mut empty = Partial::new(a.keys.clone(), a.aggs.clone());
        empty.merge(a.clone()).expect("into an empty partial");
        assert_eq!(empty, a);
        // Counts beside sets (a node of an older version): the caller must ask for sets.
        let mut mixed = a.clone();
        assert!(matches!(
            mixed.merge(partial(&[("RZ9", 1, &[])])),
            Err(Error::CountedTwice(_))
        ));
        let mut sets = partial(&[("RZ9", 1, &[])]);
        assert!(matches!(sets.merge(a.clone()), Err(Error::CountedTwice(_))));
    }
}
