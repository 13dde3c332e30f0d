//! The work of one job, apart from the actor that owns it: the reader thread feeding a bounded
//! channel, windows of chunks embedded and written with a bounded number in flight, progress,
//! stale records removed at the end, and the job's end recorded whatever happens.
//!
//! Over 400 lines because a job's data path (read, window, reuse or embed, write, prune, end)
//! reads best in one file; the reader, the judging of files and the dry run are beside it in
//! `read`, `trust` and `plan`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::read::{spawn_reader, Prepared, ReadReport};
use super::trust::{basis, gone, gone_from_store, ids_of, records_present, Basis};
use super::{IngestJob, IngestorLimits, IngestorPeers, JobError, JobStats, Shared};
use crate::actors::panic_message;
use crate::actors::status_recorder::{RecordStatus, StatusUpdate};
use crate::actors::store_writer::{PruneCollection, ReadRecords, Stale};
use crate::actors::window::{Ack, EmbedWindow, Window, WindowFailed, WindowWritten};
use crate::manifest::ManifestChange;
use crate::record::MetaValue;
use crate::record::Record;
use crate::sources::SourceError;
use crate::store::StoreError;
use crate::Kind;

/// Runs the job and records its end; never panics, never leaves the job processing unless the
/// database itself cannot be written.
pub(super) async fn execute(
    job: IngestJob,
    peers: IngestorPeers,
    limits: IngestorLimits,
    shared: Arc<Shared>,
) -> Result<JobStats, JobError> {
    let recorder = peers.recorder.clone();
    let job_id = job.job_id;
    let started = record(
        &recorder,
        StatusUpdate::JobStarted {
            job_id,
            rerun: job.rerun,
        },
    )
    .await;
    if let Err(e) = started {
        // A pending job must not stay pending; a finished one refuses this, as it should.
        let error = JobError::Recording(format!("could not start job {job_id}: {e}"));
        let failed = StatusUpdate::JobFailed {
            job_id,
            error: error.to_string(),
            vectors_present: None,
            manifest: Some(forget(&job, Vec::new())),
        };
        let _ = record(&recorder, failed).await;
        return Err(error);
    }
    tracing::info!(
        files = job.plan.files.len(),
        bytes = job.plan.total_bytes(),
        "job started"
    );
    let counter = peers.counter.clone();
    let collection = job.collection.name.clone();
    let written_by_run = shared.clone();
    let (persona, kind) = (job.persona.clone(), job.kind);
    // Without rows when the run began there is nothing to forget or settle.
    let had_manifest = job.previous.is_some();
    let outcome = std::panic::AssertUnwindSafe(run(job, peers, limits, shared))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(JobError::Engine(format!(
                "ingestor panicked: {}",
                panic_message(&*panic)
            )))
        });
    let mut outcome = outcome;
    let update = match &mut outcome {
        Ok(stats) => StatusUpdate::JobCompleted {
            job_id,
            total_vectors: stats.vectors,
            warning: stats.warning.clone(),
            counts: stats.counts,
            manifest: stats
                .manifest
                .take()
                .map(|entries| ManifestChange::Replace {
                    persona: persona.clone(),
                    kind,
                    entries,
                }),
        },
        Err(error) => {
            // The row says what the store holds after the failure, and the error what this run
            // wrote before it: the next successful run makes the two agree again.
            let written = written_by_run.chunks_written.load(Ordering::Relaxed);
            let present = records_present(&counter, &collection).await;
            if written > 0 || present.is_some_and(|n| n > 0) {
                let cause = std::mem::replace(error, JobError::Engine(String::new()));
                *error = JobError::AfterWrites {
                    error: Box::new(cause),
                    written,
                    present,
                    collection: collection.clone(),
                };
            }
            StatusUpdate::JobFailed {
                job_id,
                error: error.to_string(),
                vectors_present: present,
                manifest: had_manifest.then(|| ManifestChange::Forget {
                    persona: persona.clone(),
                    kind,
                    sources: written_by_run.touched(),
                }),
            }
        }
    };
    if let Ok(stats) = &outcome {
        crate::metrics::METRICS.job_completed(&stats.counts);
    }
    match &outcome {
        Ok(stats) => tracing::info!(
            vectors = stats.vectors,
            embedded = stats.counts.chunks_embedded,
            unchanged = stats.counts.chunks_unchanged,
            deleted = stats.counts.chunks_deleted,
            files_skipped = stats.counts.files_skipped,
            tokens = stats.counts.tokens_embedded,
            elapsed_ms = stats.elapsed.as_millis() as u64,
            "job completed"
        ),
        Err(e) => tracing::warn!(retryable = e.retryable(), "job failed: {}", e.to_string()),
    }
    match record(&recorder, update).await {
        Ok(()) => outcome,
        Err(e) => {
            let error = JobError::Recording(format!(
                "job finished but its status could not be recorded: {e}"
            ));
            // What the manifest should say is not known: left unsettled.
            let _ = record(
                &recorder,
                StatusUpdate::JobFailed {
                    job_id,
                    error: error.to_string(),
                    vectors_present: None,
                    manifest: None,
                },
            )
            .await;
            Err(error)
        }
    }
}

/// The manifest change of a job that failed after starting to read `touched`.
fn forget(job: &IngestJob, touched: Vec<String>) -> ManifestChange {
    ManifestChange::Forget {
        persona: job.persona.clone(),
        kind: job.kind,
        sources: touched,
    }
}

pub(super) async fn record(
    recorder: &Recipient<RecordStatus>,
    update: StatusUpdate,
) -> Result<(), String> {
    match recorder.send(RecordStatus(update)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("status recorder unreachable: {e}")),
    }
}

async fn run(
    job: IngestJob,
    peers: IngestorPeers,
    limits: IngestorLimits,
    shared: Arc<Shared>,
) -> Result<JobStats, JobError> {
    let started = Instant::now();
    let basis = basis(&job, &peers).await;
    let total_bytes = job.plan.total_bytes().max(1);
    let capacity = limits.window_chunks * limits.windows_in_flight;
    let (tx, mut rx) = mpsc::channel::<Prepared>(capacity);
    let reader = spawn_reader(&job, &basis, tx, shared.clone());

    let mut windows =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).ready_chunks(limits.window_chunks);
    // Vectors are looked for in the store only where it may hold records of this kind, and not
    // when forced (a forced run embeds everything again).
    let reuse = !job.force && !matches!(&basis, Basis::Store(held) if held.is_empty());
    // Windows go downstream and come back only as a `WindowWritten` on this channel; at most
    // `windows_in_flight` are out at once, which holds the reader back.
    let (written_tx, mut written_rx) = mpsc::unbounded_channel::<WindowWritten>();
    let mut in_flight = 0;
    let mut reading = true;
    let mut bytes_sent = 0;
    let mut bytes_written = 0;
    let mut last_progress = 0u8;
    let mut pipeline_error = None;
    while reading || in_flight > 0 {
        tokio::select! {
            next = windows.next(), if reading && in_flight < limits.windows_in_flight => {
                let Some(prepared) = next else {
                    reading = false;
                    continue;
                };
                let bytes_done = prepared.last().map_or(bytes_sent, |p| p.bytes_done);
                let bytes = bytes_done.saturating_sub(bytes_sent);
                bytes_sent = bytes_done;
                send_window(&job, &peers, prepared, bytes, reuse, &written_tx).await;
                in_flight += 1;
                shared.windows_sent.fetch_add(1, Ordering::Relaxed);
            }
            Some(WindowWritten { result }) = written_rx.recv(), if in_flight > 0 => {
                in_flight -= 1;
                let report = match result {
                    Ok(report) => report,
                    Err(failed) => {
                        pipeline_error = Some(window_failed(&job, failed));
                        break;
                    }
                };
                shared
                    .chunks_written
                    .fetch_add(report.records as u64, Ordering::Relaxed);
                shared
                    .reused
                    .fetch_add((report.records - report.embedded) as u64, Ordering::Relaxed);
                shared.tokens_embedded.fetch_add(report.tokens, Ordering::Relaxed);
                bytes_written += report.bytes;
                shared.bytes_done.store(bytes_written, Ordering::Relaxed);
                let progress = ((bytes_written * 100 / total_bytes) as u8).min(99);
                if progress > last_progress {
                    last_progress = progress;
                    shared.progress.store(progress.into(), Ordering::Relaxed);
                    peers
                        .recorder
                        .do_send(RecordStatus(StatusUpdate::JobProgress {
                            job_id: job.job_id,
                            progress,
                        }));
                }
            }
        }
    }
    // Windows still out are abandoned with this channel: the batcher and writer drop them.
    drop(written_rx);
    // Dropping the stream drops the receiver: a reader blocked on a full channel wakes and ends.
    drop(windows);
    if pipeline_error.is_some() {
        shared.stopping.store(true, Ordering::SeqCst);
    }
    let read = reader.await.map_err(|e| match e.try_into_panic() {
        Ok(panic) => JobError::Engine(format!("reader panicked: {}", panic_message(&*panic))),
        Err(e) => JobError::Engine(format!("reader thread failed: {e}")),
    })?;
    if let Some(error) = pipeline_error {
        return Err(error);
    }
    let ReadReport {
        mut warnings,
        entries,
        mut counts,
    } = match read {
        Ok(report) => report,
        Err(SourceError::Stopped { rel }) => {
            let reason = shared.stop_reason().unwrap_or_else(|| "stopped".into());
            return Err(JobError::Stopped(format!(
                "{reason} (stopped while reading {rel})"
            )));
        }
        Err(e) => return Err(JobError::Reading(Arc::new(e))),
    };
    if let Some(reason) = shared.stop_reason() {
        return Err(JobError::Stopped(reason));
    }
    let vectors = entries.iter().map(|e| e.chunks.len() as u64).sum();
    let stale = match &basis {
        Basis::Manifest(previous) => Stale::These(gone(job.kind, previous, &entries)),
        Basis::Store(held) => Stale::These(gone_from_store(job.kind, held, &entries)),
        Basis::Nothing => Stale::NotIn(Arc::new(ids_of(job.kind, &entries))),
    };
    let pruned = peers
        .prune
        .send(PruneCollection {
            collection: job.collection.clone(),
            stale,
        })
        .await
        .map_err(|e| JobError::Engine(format!("vector store writer unreachable: {e}")))?
        .map_err(|e| {
            store_failed(
                format!("removing stale records from {}", job.collection.name),
                e,
            )
        })?;
    if pruned > 0 {
        tracing::info!(job_id = %job.job_id, collection = %job.collection.name, pruned, "removed stale records");
    }
    let reused = shared.reused.load(Ordering::Relaxed);
    counts.chunks_embedded = shared.chunks_written.load(Ordering::Relaxed) - reused;
    counts.chunks_unchanged += reused;
    counts.tokens_embedded = shared.tokens_embedded.load(Ordering::Relaxed);
    counts.chunks_deleted = pruned as u64;
    if let Some(skipped) = job.plan.skipped_warning() {
        warnings.insert(0, skipped);
    }
    if job.plan.files.is_empty() {
        warnings.insert(
            0,
            format!(
                "nothing to ingest: no {} found ({})",
                job.kind,
                job.plan.missing.join(", ")
            ),
        );
    }
    Ok(JobStats {
        vectors,
        chunks: counts.chunks_embedded,
        bytes: job.plan.total_bytes(),
        files: job.plan.files.len(),
        warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
        elapsed: started.elapsed(),
        counts,
        // Nothing to describe and nothing described before: no row to write.
        manifest: (!entries.is_empty() || job.previous.is_some()).then(|| Arc::new(entries)),
    })
}

/// Sends one window downstream, to the batcher (which passes on at once a window whose every
/// chunk keeps a vector). With `reuse`, a chunk whose text the store's record of the same id already
/// holds (its metadata alone moved, as offsets do after an insertion above it) keeps that
/// record's vector instead of being embedded.
async fn send_window(
    job: &IngestJob,
    peers: &IngestorPeers,
    prepared: Vec<Prepared>,
    bytes: u64,
    reuse: bool,
    written: &mpsc::UnboundedSender<WindowWritten>,
) {
    let mut kept = if reuse {
        reusable_vectors(job, peers, &prepared).await
    } else {
        HashMap::new()
    };
    let mut to_embed = Vec::new();
    let mut tokens = 0;
    let records: Vec<Record> = prepared
        .into_iter()
        .enumerate()
        .map(|(at, p)| {
            let embedding = kept.remove(&p.record.id).unwrap_or_else(|| {
                to_embed.push((at, u32::try_from(p.tokens).unwrap_or(u32::MAX)));
                tokens += p.tokens;
                Vec::new()
            });
            Record {
                embedding,
                ..p.record
            }
        })
        .collect();
    let window = Window {
        collection: job.collection.clone(),
        records,
        to_embed,
        bytes,
        tokens,
        write_to: peers.write.clone(),
        ack: Ack::new(written.clone()),
    };
    peers.embedder.do_send(EmbedWindow(window));
}

/// The job's error for a window that was not written.
fn window_failed(job: &IngestJob, failed: WindowFailed) -> JobError {
    match failed {
        WindowFailed::Embedding { error, window } => {
            let at = error.input.and_then(|at| window.source_of(at));
            let context = match at {
                // One input refused: name it, so the user can mend that file.
                Some((source, index)) => format!(
                    "embedding failed for {source} {} {index}",
                    if job.kind == Kind::Quotes {
                        "line"
                    } else {
                        "chunk"
                    },
                ),
                None => "embedding failed".to_owned(),
            };
            JobError::Embedding {
                context,
                source: error,
            }
        }
        WindowFailed::Store(e) => store_failed(format!("writing to {}", job.collection.name), e),
        WindowFailed::Lost => JobError::Engine(
            "a window of records was lost on its way to the store (the embedding batcher or the \
             store writer stopped)"
                .into(),
        ),
    }
}

/// The vectors of the window's chunks whose text the store's record of the same id holds, by
/// id. A store that cannot answer costs only the reuse: the chunks are embedded.
async fn reusable_vectors(
    job: &IngestJob,
    peers: &IngestorPeers,
    window: &[Prepared],
) -> HashMap<String, Vec<f32>> {
    let ids = window.iter().map(|p| p.record.id.clone()).collect();
    let asked = peers.records.send(ReadRecords {
        collection: job.collection.name.clone(),
        ids,
    });
    let found = match asked.await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::warn!("reading {}'s records failed: {e}", job.collection.name);
            return HashMap::new();
        }
        Err(_) => return HashMap::new(),
    };
    let texts: HashMap<&str, &MetaValue> = window
        .iter()
        .filter_map(|p| {
            let hash = p.record.metadata.get(crate::record::keys::CONTENT_HASH)?;
            Some((p.record.id.as_str(), hash))
        })
        .collect();
    let model = MetaValue::from(job.collection.embedding_model.as_str());
    found
        .into_iter()
        // A vector of this model and size only.
        .filter(|r| r.embedding.len() == job.collection.dimension)
        .filter(|r| r.metadata.get(crate::record::keys::EMBEDDING_MODEL) == Some(&model))
        .filter(|r| {
            let same = texts.get(r.id.as_str()).copied();
            same.is_some() && r.metadata.get(crate::record::keys::CONTENT_HASH) == same
        })
        .map(|r| (r.id, r.embedding))
        .collect()
}

fn store_failed(context: String, source: StoreError) -> JobError {
    JobError::Store { context, source }
}
