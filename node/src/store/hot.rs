//! Hot segments: the decoded rows of recently written segments, kept in memory (bounded, least
//! recently used out first) so that scans of fresh data read Arrow batches instead of Parquet.
//!
//! An entry is added only after the catalog names its segment and removed when compaction
//! retires it; segments are immutable, so an entry is always exactly the file's rows.

use arrow::array::RecordBatch;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Memory kept per store for hot segments.
pub const HOT_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Inner {
    map: HashMap<u64, (Arc<RecordBatch>, usize, u64)>,
    bytes: usize,
    tick: u64,
}

pub(super) struct HotSegments {
    budget: usize,
    inner: Mutex<Inner>,
}

impl HotSegments {
    pub fn new(budget: usize) -> HotSegments {
        HotSegments {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic cannot leave the map half-updated in a way that matters: entries are whole.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: u64) -> Option<Arc<RecordBatch>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        inner.map.get_mut(&id).map(|e| {
            e.2 = tick;
            e.0.clone()
        })
    }

    pub fn insert(&self, id: u64, batch: RecordBatch) {
        let size = batch.get_array_memory_size();
        if size > self.budget / 4 {
            return;
        }
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(old) = inner.map.insert(id, (Arc::new(batch), size, tick)) {
            inner.bytes -= old.1;
        }
        inner.bytes += size;
        while inner.bytes > self.budget {
            let Some(oldest) = inner.map.iter().min_by_key(|(_, e)| e.2).map(|(k, _)| *k) else {
                break;
            };
            if let Some(e) = inner.map.remove(&oldest) {
                inner.bytes -= e.1;
            }
        }
    }

    pub fn remove(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(e) = inner.map.remove(&id) {
            inner.bytes -= e.1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn batch(n: usize) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "v",
            Arc::new(Int64Array::from(vec![1i64; n])) as arrow::array::ArrayRef,
        )])
        .expect("batch")
    }

    // The least recently used segment leaves first, and the budget holds.
    #[test]
    fn evicts_the_least_recently_used_within_budget() {
        let one = batch(1000).get_array_memory_size();
        let hot = HotSegments::new(one * 4);
        for id in 1..=4 {
            hot.insert(id, batch(1000));
        }
        assert!(hot.get(1).is_some());
        hot.insert(5, batch(1000));
        assert!(hot.get(2).is_none(), "2 was the least recently used");
        assert!(hot.get(1).is_some() && hot.get(5).is_some());
        hot.remove(5);
        assert!(hot.get(5).is_none());
        assert!(hot.lock().bytes <= one * 4);
    }
}
