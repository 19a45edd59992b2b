//! The segment cache: decoded Parquet footers and decoded columns of segments, shared by every
//! store of a node, each kind bounded in bytes, least recently used out first.
//!
//! Segments are immutable, so an entry is always exactly its file's content; entries are keyed by
//! the store's process-unique id and the segment id, and a segment retired by compaction is
//! forgotten. Columns enter when a change writes a segment (fresh data is what reports read) and
//! when a scan reads one from Parquet; footers enter when a segment is first opened.

use arrow::array::ArrayRef;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

/// Default bytes of decoded columns kept per node.
pub const DEFAULT_COLUMN_BYTES: usize = 512 << 20;
/// Default bytes of decoded footers kept per node.
pub const DEFAULT_FOOTER_BYTES: usize = 128 << 20;

/// A byte-bounded map that evicts the least recently used entry first.
struct Lru<K, V> {
    budget: usize,
    bytes: usize,
    tick: u64,
    map: HashMap<K, (V, usize, u64)>,
    order: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    fn new(budget: usize) -> Self {
        Lru {
            budget,
            bytes: 0,
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn get(&mut self, k: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.map.get_mut(k)?;
        self.order.remove(&e.2);
        e.2 = tick;
        self.order.insert(tick, k.clone());
        Some(e.0.clone())
    }

    /// Inserts unless the value alone would take more than a quarter of the budget; returns
    /// the keys evicted to make room.
    fn insert(&mut self, k: K, v: V, size: usize) -> Vec<K> {
        if size > self.budget / 4 {
            return Vec::new();
        }
        self.remove(&k);
        self.tick += 1;
        self.order.insert(self.tick, k.clone());
        self.map.insert(k, (v, size, self.tick));
        self.bytes += size;
        let mut evicted = Vec::new();
        while self.bytes > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.map.remove(&oldest) {
                self.bytes -= e.1;
            }
            evicted.push(oldest);
        }
        evicted
    }

    fn remove(&mut self, k: &K) {
        if let Some(e) = self.map.remove(k) {
            self.order.remove(&e.2);
            self.bytes -= e.1;
        }
    }
}

/// (store, segment).
type SegmentKey = (u64, u64);

struct Inner {
    columns: Lru<(u64, u64, usize), ArrayRef>,
    /// The cached columns of each segment, so that forgetting a segment is cheap.
    by_segment: HashMap<SegmentKey, HashSet<usize>>,
    footers: Lru<SegmentKey, ArrowReaderMetadata>,
}

/// See the module documentation.
pub struct SegmentCache {
    inner: Mutex<Inner>,
    column_budget: usize,
}

impl SegmentCache {
    /// A cache keeping up to `column_bytes` of decoded columns and `footer_bytes` of footers
    /// (0 turns either off).
    pub fn new(column_bytes: usize, footer_bytes: usize) -> Arc<SegmentCache> {
        Arc::new(SegmentCache {
            inner: Mutex::new(Inner {
                columns: Lru::new(column_bytes),
                by_segment: HashMap::new(),
                footers: Lru::new(footer_bytes),
            }),
            column_budget: column_bytes,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Entries are inserted whole: a panic elsewhere cannot leave one half-made.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether columns are kept at all.
    pub fn keeps_columns(&self) -> bool {
        self.column_budget > 0
    }

    /// Every one of `columns` of a segment, or `None` unless all are cached.
    pub fn columns(&self, store: u64, segment: u64, columns: &[usize]) -> Option<Vec<ArrayRef>> {
        let mut inner = self.lock();
        columns
            .iter()
            .map(|&c| inner.columns.get(&(store, segment, c)))
            .collect()
    }

    /// Keeps whole-segment columns (index in the stored schema, values).
    pub fn insert_columns(&self, store: u64, segment: u64, columns: &[(usize, ArrayRef)]) {
        if !self.keeps_columns() {
            return;
        }
        let mut inner = self.lock();
        for (c, values) in columns {
            let size = values.get_array_memory_size();
            let evicted = inner
                .columns
                .insert((store, segment, *c), values.clone(), size);
            if inner.columns.map.contains_key(&(store, segment, *c)) {
                inner
                    .by_segment
                    .entry((store, segment))
                    .or_default()
                    .insert(*c);
            }
            for (s, g, col) in evicted {
                if let Some(set) = inner.by_segment.get_mut(&(s, g)) {
                    set.remove(&col);
                    if set.is_empty() {
                        inner.by_segment.remove(&(s, g));
                    }
                }
            }
        }
    }

    pub fn footer(&self, store: u64, segment: u64) -> Option<ArrowReaderMetadata> {
        self.lock().footers.get(&(store, segment))
    }

    pub fn insert_footer(&self, store: u64, segment: u64, footer: ArrowReaderMetadata) {
        let size = footer.metadata().memory_size();
        self.lock().footers.insert((store, segment), footer, size);
    }

    /// Drops everything kept of a segment (retired by compaction).
    pub fn forget(&self, store: u64, segment: u64) {
        let mut inner = self.lock();
        inner.footers.remove(&(store, segment));
        if let Some(cols) = inner.by_segment.remove(&(store, segment)) {
            for c in cols {
                inner.columns.remove(&(store, segment, c));
            }
        }
    }

    /// Bytes of columns and of footers held.
    pub fn bytes(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.columns.bytes, inner.footers.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn column(n: usize) -> ArrayRef {
        Arc::new(Int64Array::from(vec![1i64; n]))
    }

    // The least recently used column leaves first, the budget holds, and forgetting a segment
    // drops all of its columns.
    #[test]
    fn evicts_the_least_recently_used_within_budget() {
        let one = column(1000).get_array_memory_size();
        let cache = SegmentCache::new(one * 4, 0);
        for seg in 1..=4 {
            cache.insert_columns(7, seg, &[(0, column(1000))]);
        }
        assert!(cache.columns(7, 1, &[0]).is_some());
        cache.insert_columns(7, 5, &[(0, column(1000))]);
        assert!(
            cache.columns(7, 2, &[0]).is_none(),
            "2 was the least recently used"
        );
        assert!(cache.columns(7, 1, &[0]).is_some() && cache.columns(7, 5, &[0]).is_some());
        assert!(cache.columns(7, 5, &[0, 1]).is_none(), "all or nothing");
        cache.forget(7, 5);
        assert!(cache.columns(7, 5, &[0]).is_none());
        assert!(cache.bytes().0 <= one * 4);
        // Another store's segment 1 is another entry.
        assert!(cache.columns(8, 1, &[0]).is_none());
    }

    // A cache without a budget keeps nothing.
    #[test]
    fn zero_budget_keeps_nothing() {
        let cache = SegmentCache::new(0, 0);
        cache.insert_columns(1, 1, &[(0, column(10))]);
        assert!(cache.columns(1, 1, &[0]).is_none());
        assert_eq!(cache.bytes(), (0, 0));
    }
}
