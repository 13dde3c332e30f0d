//! What a job compares its chunks with: its kind's manifest when it can be trusted (settled, and
//! agreeing with the store's count), else the store's own record hashes; and the records that
//! are gone since.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use std::time::Duration;

use actix::Recipient;

use super::{CountRecords, IngestJob, IngestorPeers, ReadHashes};
use crate::ids::WrittenIds;
use crate::manifest::{FileEntry, KindManifest};
use crate::Kind;

/// What a job compares its chunks with, and how it finds the records that are gone.
#[derive(Clone, Debug)]
pub(super) enum Basis {
    /// The manifest, trusted: unchanged files are not read; what is gone is what it lists and
    /// the job did not find again.
    Manifest(Arc<KindManifest>),
    /// What the store holds, record by record (no manifest, or one not to be trusted): every
    /// file is read, a chunk the store already holds as the job would write it is not embedded
    /// again, and what is gone is what the store holds and the job did not make.
    Store(Arc<HashMap<String, u64>>),
    /// The store could not say: everything is embedded, stale records found by listing.
    Nothing,
}

/// The job's basis: its manifest when it can be trusted to say what the store holds (settled,
/// no run died since it was written, and agreeing with the store's count of the collection);
/// else the store's own record hashes.
pub(super) async fn basis(job: &IngestJob, peers: &IngestorPeers) -> Basis {
    let held = records_present(&peers.counter, &job.collection.name).await;
    if let Some(previous) = job.previous.clone() {
        if let Some(trusted) = trust(job, previous, held) {
            return Basis::Manifest(trusted);
        }
    }
    match held {
        Some(0) => Basis::Store(Arc::default()),
        Some(_) => {
            let asked = peers.hashes.send(ReadHashes {
                collection: job.collection.name.clone(),
            });
            match asked.await {
                Ok(Ok(hashes)) => Basis::Store(Arc::new(hashes)),
                Ok(Err(e)) => {
                    tracing::warn!("reading {}'s records failed: {e}", job.collection.name);
                    Basis::Nothing
                }
                Err(_) => Basis::Nothing,
            }
        }
        None => Basis::Nothing,
    }
}

/// `previous` if settled and the store holds `held` records, as many as it says; else `None`,
/// told.
pub(super) fn trust(
    job: &IngestJob,
    previous: Arc<KindManifest>,
    held: Option<u64>,
) -> Option<Arc<KindManifest>> {
    if !previous.settled {
        tracing::warn!(
            "the last run of {} {} did not end; every file is read and compared with the store",
            job.persona,
            job.kind
        );
        return None;
    }
    let expected = previous.records();
    if held == Some(expected) {
        return Some(previous);
    }
    tracing::warn!(
        "{} holds {} records where the manifest says {expected}; every file is read and \
         compared with the store",
        job.collection.name,
        held.map_or("an unknown number of".to_owned(), |n| n.to_string()),
    );
    None
}

/// The ids the store holds (`held`) and `entries` do not.
pub(super) fn gone_from_store(
    kind: Kind,
    held: &HashMap<String, u64>,
    entries: &[FileEntry],
) -> Vec<String> {
    not_made(kind, held.keys().cloned(), entries)
}

/// The ids `previous` has and `entries` do not.
pub(super) fn gone(kind: Kind, previous: &KindManifest, entries: &[FileEntry]) -> Vec<String> {
    not_made(
        kind,
        previous.files.values().flat_map(|e| e.record_ids(kind)),
        entries,
    )
}

/// The ids of `before` that `entries` do not make, sorted.
fn not_made(
    kind: Kind,
    before: impl Iterator<Item = String>,
    entries: &[FileEntry],
) -> Vec<String> {
    let now: HashSet<String> = entries.iter().flat_map(|e| e.record_ids(kind)).collect();
    let mut gone: Vec<String> = before.filter(|id| !now.contains(id)).collect();
    gone.sort_unstable();
    gone
}

pub(super) fn ids_of(kind: Kind, entries: &[FileEntry]) -> WrittenIds {
    let mut ids = WrittenIds::new(kind);
    for entry in entries {
        for (index, _) in &entry.chunks {
            ids.insert(&entry.source, *index);
        }
    }
    ids.seal();
    ids
}

/// What the store holds of `collection` (within a few seconds; `None` when it cannot say, as
/// when the store is what failed).
pub(super) async fn records_present(
    counter: &Recipient<CountRecords>,
    collection: &str,
) -> Option<u64> {
    let asked = counter.send(CountRecords {
        collection: collection.to_owned(),
    });
    match tokio::time::timeout(Duration::from_secs(5), asked).await {
        Ok(Ok(Ok(count))) => Some(count),
        _ => None,
    }
}
