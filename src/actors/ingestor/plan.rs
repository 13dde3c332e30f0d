//! A job's plan without doing it (`persona-ingest ingest --dry-run`): the same judging and
//! reading as a run, through the same code, with the chunks to embed counted and dropped
//! instead of embedded, and nothing written.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::read::{spawn_reader, ReadReport};
use super::trust::{gone, trust};
use super::{IngestJob, Shared};
use crate::manifest::JobCounts;

/// What a run of the job would do: files read and skipped, chunks embedded, left and deleted,
/// tokens embedded; and the records the collection would hold after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JobPlan {
    #[serde(flatten)]
    pub counts: JobCounts,
    pub vectors: u64,
    /// Whether `chunks_deleted` is exact: without a manifest to trust it is the least the
    /// store's count says (a run lists the collection to know).
    pub deletions_exact: bool,
}

/// Plans `job` against a store holding `held` records of its collection (`None`: unknown).
///
/// Errors: a file that cannot be read, as the job would fail on it.
pub async fn dry_run(job: IngestJob, held: Option<u64>) -> Result<JobPlan, String> {
    let previous = job.previous.clone().and_then(|p| trust(&job, p, held));
    let (tx, mut rx) = mpsc::channel(256);
    let reader = spawn_reader(&job, previous.clone(), tx, Arc::new(Shared::default()));
    let mut to_embed = 0;
    while rx.recv().await.is_some() {
        to_embed += 1;
    }
    let ReadReport {
        entries,
        mut counts,
        ..
    } = reader
        .await
        .map_err(|e| format!("reader thread failed: {e}"))?
        .map_err(|e| e.to_string())?;
    let vectors: u64 = entries.iter().map(|e| e.chunks.len() as u64).sum();
    counts.chunks_embedded = to_embed;
    let (deleted, deletions_exact) = match &previous {
        Some(previous) => (gone(job.kind, previous, &entries).len() as u64, true),
        None => {
            // Records of this run's ids are replaced; any beyond them are stale.
            let ids: HashSet<String> = entries
                .iter()
                .flat_map(|e| e.record_ids(job.kind))
                .collect();
            (held.unwrap_or(0).saturating_sub(ids.len() as u64), false)
        }
    };
    counts.chunks_deleted = deleted;
    Ok(JobPlan {
        counts,
        vectors,
        deletions_exact,
    })
}
