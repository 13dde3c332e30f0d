//! A job's plan without doing it (`persona-ingest ingest --dry-run`): the same judging and
//! reading as a run, through the same code, with the chunks to embed counted and dropped
//! instead of embedded, and nothing written.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::read::{spawn_reader, ReadReport};
use super::trust::{gone, gone_from_store, trust, Basis};
use super::{IngestJob, Shared};
use crate::counts::JobCounts;
use crate::record::MetaValue;

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

/// What the store holds of a job's collection, by record id: the hash of each record (as
/// [`crate::manifest::hash_of`] makes it) and its text's `content_hash`.
pub type Stored = HashMap<String, (u64, Option<MetaValue>)>;

/// Plans `job` against a store holding `stored` of its collection (`None`: the store could not
/// say).
///
/// Errors: a file that cannot be read, as the job would fail on it.
pub async fn dry_run(job: IngestJob, stored: Option<Stored>) -> Result<JobPlan, String> {
    // A chunk whose text the record of its id holds keeps its vector, as a run does.
    let texts: HashMap<String, MetaValue> = match (&stored, job.force) {
        (Some(stored), false) => stored
            .iter()
            .filter_map(|(id, (_, text))| Some((id.clone(), text.clone()?)))
            .collect(),
        _ => HashMap::new(),
    };
    let stored = stored.map(|s| {
        s.into_iter()
            .map(|(id, (hash, _))| (id, hash))
            .collect::<HashMap<_, _>>()
    });
    let held = stored.as_ref().map(|s| s.len() as u64);
    let basis = match job.previous.clone().and_then(|p| trust(&job, p, held)) {
        Some(previous) => Basis::Manifest(previous),
        None => stored.map_or(Basis::Nothing, |s| Basis::Store(Arc::new(s))),
    };
    let (tx, mut rx) = mpsc::channel(256);
    let reader = spawn_reader(&job, &basis, tx, Arc::new(Shared::default()));
    let (mut to_embed, mut reused, mut tokens) = (0, 0, 0);
    while let Some(prepared) = rx.recv().await {
        let text = prepared
            .record
            .metadata
            .get(crate::record::keys::CONTENT_HASH);
        if text.is_some() && texts.get(&prepared.record.id) == text {
            reused += 1;
        } else {
            to_embed += 1;
            tokens += prepared.tokens;
        }
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
    counts.chunks_unchanged += reused;
    counts.tokens_embedded = tokens;
    let (deleted, deletions_exact) = match &basis {
        Basis::Manifest(previous) => (gone(job.kind, previous, &entries).len() as u64, true),
        Basis::Store(held) => (gone_from_store(job.kind, held, &entries).len() as u64, true),
        Basis::Nothing => (0, false),
    };
    counts.chunks_deleted = deleted;
    Ok(JobPlan {
        counts,
        vectors,
        deletions_exact,
    })
}
