//! Record ids: deterministic (kind, source, chunk index), so a re-run replaces records and
//! never adds copies; and the compact set of the ids one job wrote (4 bytes a record), which
//! tells the stale records of a collection from the live ones.

use std::collections::HashMap;

use crate::Kind;

pub fn record_id(kind: Kind, source: &str, chunk_index: u32) -> String {
    format!("{kind}:{source}:{chunk_index}")
}

/// The ids one job wrote, by source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WrittenIds {
    prefix: String,
    by_source: HashMap<String, Vec<u32>>,
    len: usize,
}

impl WrittenIds {
    pub fn new(kind: Kind) -> Self {
        Self {
            prefix: format!("{kind}:"),
            ..Self::default()
        }
    }

    pub fn insert(&mut self, source: &str, chunk_index: u32) {
        let indexes = match self.by_source.get_mut(source) {
            Some(indexes) => indexes,
            None => self.by_source.entry(source.to_owned()).or_default(),
        };
        // Chunks of a source arrive in order; anything else is put in order by `seal`.
        if indexes.last() != Some(&chunk_index) {
            indexes.push(chunk_index);
            self.len += 1;
        }
    }

    /// Sorts and deduplicates, after which `contains` and `len` are exact.
    pub fn seal(&mut self) {
        self.len = 0;
        for indexes in self.by_source.values_mut() {
            indexes.sort_unstable();
            indexes.dedup();
            indexes.shrink_to_fit();
            self.len += indexes.len();
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `id` is one this job wrote (needs `seal` first).
    pub fn contains(&self, id: &str) -> bool {
        let Some((source, index)) = id
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.rsplit_once(':'))
        else {
            return false;
        };
        let Ok(index) = index.parse::<u32>() else {
            return false;
        };
        self.by_source
            .get(source)
            .is_some_and(|indexes| indexes.binary_search(&index).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_exactly_the_ids_it_was_given() {
        let mut ids = WrittenIds::new(Kind::Works);
        for i in [0, 1, 2, 2, 7, 3] {
            ids.insert("data/p/works/a:b.txt", i);
        }
        ids.insert("data/p/works/c.txt", 0);
        ids.seal();
        assert_eq!(ids.len(), 6);
        assert!(ids.contains(&record_id(Kind::Works, "data/p/works/a:b.txt", 3)));
        assert!(ids.contains("works:data/p/works/c.txt:0"));
        assert!(!ids.contains("works:data/p/works/c.txt:1"));
        assert!(!ids.contains("quotes:data/p/works/c.txt:0"));
        assert!(!ids.contains("works:data/p/works/d.txt:0"));
        assert!(!ids.contains("garbage"));
    }
}
