//! Upserts that fit the server's request-size limit (Chroma's `max_payload_size_bytes`, 40 MiB by
//! default; a proxy's may be lower): records are grouped so that each request's JSON stays under
//! a byte budget, estimated from the records without serialising them twice. The budget starts
//! at `store.max_request_bytes` and is halved, for the process, each time the server answers 413.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::record::Record;

/// The most bytes a request may carry: lowered, never raised.
#[derive(Debug)]
pub struct ByteBudget(AtomicUsize);

impl ByteBudget {
    pub fn new(bytes: usize) -> Self {
        Self(AtomicUsize::new(bytes.max(1)))
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// The server refused a request of `sent` bytes: the budget becomes half of that at most.
    pub fn refused(&self, sent: usize) -> usize {
        let half = (sent / 2).max(1);
        self.0.fetch_min(half, Ordering::SeqCst).min(half)
    }
}

/// A generous estimate of a record's share of an upsert's JSON: every float at its longest
/// (`-1.2345678e-12,`), the document as if every byte were escaped to two, the metadata as
/// serialised.
pub fn record_bytes(record: &Record) -> usize {
    let metadata = serde_json::to_vec(&record.metadata).map_or(4096, |m| m.len());
    32 + record.id.len() + record.embedding.len() * 16 + record.document.len() * 2 + metadata
}

/// Cuts `records` into runs whose estimated size stays within `budget` bytes (a record over it
/// alone makes a run of its own); answers the end index of each run.
pub fn runs_within(records: &[Record], budget: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut size = 0;
    for (i, record) in records.iter().enumerate() {
        let bytes = record_bytes(record);
        if size > 0 && size + bytes > budget {
            ends.push(i);
            size = 0;
        }
        size += bytes;
    }
    if !records.is_empty() {
        ends.push(records.len());
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize, dimension: usize) -> Record {
        Record {
            id: format!("r{i}"),
            document: "text".repeat(10),
            metadata: Default::default(),
            embedding: vec![-1.234_567_8e-12; dimension],
        }
    }

    #[test]
    fn the_estimate_is_never_below_the_json() {
        let r = record(0, 3072);
        // As the upsert's body serialises it: f32s at their shortest, not widened to f64.
        let json = serde_json::to_vec(&(&r.id, &r.embedding, &r.document, &r.metadata)).unwrap();
        assert!(
            record_bytes(&r) >= json.len(),
            "{} < {}",
            record_bytes(&r),
            json.len()
        );
    }

    #[test]
    fn runs_stay_within_the_budget_and_cover_every_record() {
        let records: Vec<Record> = (0..10).map(|i| record(i, 100)).collect();
        let each = record_bytes(&records[0]);
        assert_eq!(runs_within(&records, each * 3), [3, 6, 9, 10]);
        assert_eq!(runs_within(&records, 1), (1..=10).collect::<Vec<_>>());
        assert_eq!(runs_within(&records, usize::MAX), [10]);
        assert!(runs_within(&[], 10).is_empty());
    }

    #[test]
    fn a_refusal_halves_the_budget_for_good() {
        let budget = ByteBudget::new(1000);
        assert_eq!(budget.refused(800), 400);
        assert_eq!(budget.refused(2000), 400, "never raised");
        assert_eq!(budget.get(), 400);
    }
}
