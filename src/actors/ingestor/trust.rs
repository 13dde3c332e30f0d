//! What a job may take from its kind's manifest: whether to trust it at all (settled, and
//! agreeing with the store's count), and the records that are gone since it was written.

use std::collections::HashSet;
use std::sync::Arc;

use super::job::records_present;
use super::{IngestJob, IngestorPeers};
use crate::ids::WrittenIds;
use crate::manifest::{FileEntry, KindManifest};
use crate::Kind;

/// The job's manifest, when it can be trusted to say what the store holds: settled (no run
/// died since it was written) and agreeing with the store's count of the collection. Otherwise
/// nothing is skipped and stale records are found by listing the collection.
pub(super) async fn trusted_manifest(
    job: &IngestJob,
    peers: &IngestorPeers,
) -> Option<Arc<KindManifest>> {
    let previous = job.previous.clone()?;
    let held = if previous.settled {
        records_present(&peers.counter, &job.collection.name).await
    } else {
        None
    };
    trust(job, previous, held)
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
            "the last run of {} {} did not end; every file is read and embedded again",
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
         embedded again (`persona-ingest audit --repair` mends only what differs)",
        job.collection.name,
        held.map_or("an unknown number of".to_owned(), |n| n.to_string()),
    );
    None
}

/// The ids `previous` has and `entries` do not.
pub(super) fn gone(kind: Kind, previous: &KindManifest, entries: &[FileEntry]) -> Vec<String> {
    let now: HashSet<String> = entries.iter().flat_map(|e| e.record_ids(kind)).collect();
    let mut gone: Vec<String> = previous
        .files
        .values()
        .flat_map(|e| e.record_ids(kind))
        .filter(|id| !now.contains(id))
        .collect();
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
