//! Which shard holds a submission.
//!
//! Rows are partitioned by provider, and one submission must be one shard's atomic write. A
//! submitting agency may send for several providers in one file, and a Bulk Replacement replaces a
//! sender's records across its providers. So providers linked through a common sender (the
//! connected components of `senders.csv`'s sender-provider pairs) share a shard: the shard of a
//! sender, or of a provider, is a stable hash of its component's smallest code. Every node
//! computes the same map from the same reference data.

use crate::refdata::RefData;
use std::collections::BTreeMap;

/// The routing components of one reference data set (built once, when the node starts).
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Code -> the smallest code of its component (codes not listed are their own component).
    root: BTreeMap<String, String>,
}

impl Routing {
    /// Builds the components from `senders.csv`'s pairs.
    pub fn new(refdata: &RefData) -> Routing {
        let mut parent: BTreeMap<String, String> = BTreeMap::new();
        fn find(parent: &mut BTreeMap<String, String>, x: &str) -> String {
            let mut cur = x.to_string();
            while let Some(p) = parent.get(&cur).filter(|p| **p != cur) {
                cur = p.clone();
            }
            cur
        }
        for (sender, provider) in refdata.agency_pairs() {
            for code in [sender, provider] {
                parent
                    .entry(code.to_string())
                    .or_insert_with(|| code.to_string());
            }
            let (a, b) = (find(&mut parent, sender), find(&mut parent, provider));
            if a != b {
                // The smaller code becomes the root, so the result does not depend on order.
                let (small, large) = if a < b { (a, b) } else { (b, a) };
                parent.insert(large, small);
            }
        }
        let codes: Vec<String> = parent.keys().cloned().collect();
        let root = codes
            .into_iter()
            .map(|c| {
                let r = find(&mut parent, &c);
                (c, r)
            })
            .collect();
        Routing { root }
    }

    /// The shard, of `shards`, holding a sender's submissions (and a provider's rows).
    pub fn shard_of(&self, code: &str, shards: u32) -> u32 {
        let root = self.root.get(code).map_or(code, String::as_str);
        crc32fast::hash(root.as_bytes()) % shards.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An agency and every provider it sends for land on one shard, so a multi-provider
    // submission or a bulk replacement is one shard's atomic write.
    #[test]
    fn agencies_share_their_providers_shard() {
        let rd = crate::refdata::testdata::refdata();
        let routing = Routing::new(&rd);
        let pairs: Vec<(String, String)> = rd
            .agency_pairs()
            .map(|(s, p)| (s.to_string(), p.to_string()))
            .collect();
        assert!(!pairs.is_empty());
        for (sender, provider) in pairs {
            assert_eq!(routing.shard_of(&sender, 8), routing.shard_of(&provider, 8));
        }
    }
}
