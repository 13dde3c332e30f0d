//! The work of one job, apart from the actor that owns it: the reader thread feeding a bounded
//! channel, windows of chunks embedded and written with a bounded number in flight, progress,
//! stale records removed at the end, and the job's end recorded whatever happens.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use xxhash_rust::xxh3::xxh3_128;

use super::{IngestJob, IngestorLimits, IngestorPeers, JobError, JobStats, Shared};
use crate::actors::chroma_writer::{CountRecords, PruneCollection, WriteRecords};
use crate::actors::embedding_batcher::EmbedTexts;
use crate::actors::panic_message;
use crate::actors::status_recorder::{RecordStatus, StatusUpdate};
use crate::ids::{record_id, WrittenIds};
use crate::sources::{Chunk, ChunkSink, MetaValue, Source, SourceError, SourcePlan};
use crate::store::{Record, StoreError};
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
            restart: job.restart,
        },
    )
    .await;
    if let Err(e) = started {
        // A pending job must not stay pending; a finished one refuses this, as it should.
        let error = format!("could not start job {job_id}: {e}");
        let failed = StatusUpdate::JobFailed {
            job_id,
            error: error.clone(),
            vectors_present: None,
        };
        let _ = record(&recorder, failed).await;
        return Err(error.into());
    }
    tracing::info!(
        files = job.plan.files.len(),
        bytes = job.plan.total_bytes(),
        "job started"
    );
    let counter = peers.counter.clone();
    let collection = job.collection.name.clone();
    let written_by_run = shared.clone();
    let outcome = std::panic::AssertUnwindSafe(run(job, peers, limits, shared))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(format!("ingestor panicked: {}", panic_message(&*panic)).into())
        });
    let mut outcome = outcome;
    let update = match &mut outcome {
        Ok(stats) => StatusUpdate::JobCompleted {
            job_id,
            total_vectors: stats.vectors,
            warning: stats.warning.clone(),
        },
        Err(error) => {
            // The row says what the store holds after the failure, and the error what this run
            // wrote before it: the next successful run makes the two agree again.
            let written = written_by_run.chunks_written.load(Ordering::Relaxed);
            let present = records_present(&counter, &collection).await;
            error.message = match present {
                Some(0) if written == 0 => error.message.clone(),
                Some(present) => format!(
                    "{}; {written} record(s) written before the failure, {present} in {collection} now",
                    error.message
                ),
                None if written == 0 => error.message.clone(),
                None => format!(
                    "{}; {written} record(s) written before the failure",
                    error.message
                ),
            };
            StatusUpdate::JobFailed {
                job_id,
                error: error.message.clone(),
                vectors_present: present,
            }
        }
    };
    match &outcome {
        Ok(stats) => tracing::info!(
            vectors = stats.vectors,
            chunks = stats.chunks,
            elapsed_ms = stats.elapsed.as_millis() as u64,
            "job completed"
        ),
        Err(e) => tracing::warn!(retryable = e.retryable, "job failed: {}", e.message),
    }
    match record(&recorder, update).await {
        Ok(()) => outcome,
        Err(e) => {
            let error = format!("job finished but its status could not be recorded: {e}");
            let _ = record(
                &recorder,
                StatusUpdate::JobFailed {
                    job_id,
                    error: error.clone(),
                    vectors_present: None,
                },
            )
            .await;
            Err(error.into())
        }
    }
}

/// What the store holds of `collection` (within a few seconds; `None` when it cannot say, as
/// when the store is what failed).
async fn records_present(counter: &Recipient<CountRecords>, collection: &str) -> Option<u64> {
    let asked = counter.send(CountRecords {
        collection: collection.to_owned(),
    });
    match tokio::time::timeout(Duration::from_secs(5), asked).await {
        Ok(Ok(Ok(count))) => Some(count),
        _ => None,
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

/// A chunk made into a record (all but its vector), by the reader thread, so that this work
/// stays off the actor thread.
struct Prepared {
    record: Record,
    source: String,
    chunk_index: u32,
    /// How far into the whole plan (in bytes) the reader was when it made it.
    bytes_done: u64,
}

/// Passes chunks from the reader thread into the channel; blocks while the channel is full.
struct ChannelSink {
    tx: mpsc::Sender<Prepared>,
    shared: Arc<Shared>,
    bytes_before: u64,
    template: RecordTemplate,
}

impl ChunkSink for ChannelSink {
    fn accept(&mut self, chunk: Chunk, bytes_done: u64) -> ControlFlow<()> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return ControlFlow::Break(());
        }
        self.shared.chunks_read.fetch_add(1, Ordering::Relaxed);
        let prepared = Prepared {
            source: chunk.source.clone(),
            chunk_index: chunk.chunk_index,
            record: self.template.record(chunk),
            bytes_done: self.bytes_before + bytes_done,
        };
        match self.tx.blocking_send(prepared) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }
}

/// Reads every planned file; runs on a blocking thread.
fn read_all(
    source: Arc<dyn Source>,
    plan: SourcePlan,
    mut sink: ChannelSink,
) -> Result<Vec<String>, SourceError> {
    let mut warnings = Vec::new();
    for file in &plan.files {
        let chunks_before = sink.shared.chunks_read.load(Ordering::Relaxed);
        let report = source.read(file, &mut sink)?;
        warnings.extend(report.warnings);
        if sink.shared.chunks_read.load(Ordering::Relaxed) == chunks_before {
            warnings.push(format!("{}: no text to ingest (empty file)", file.rel));
        }
        sink.bytes_before += file.bytes;
    }
    Ok(warnings)
}

async fn run(
    job: IngestJob,
    peers: IngestorPeers,
    limits: IngestorLimits,
    shared: Arc<Shared>,
) -> Result<JobStats, JobError> {
    let started = Instant::now();
    let total_bytes = job.plan.total_bytes().max(1);
    let capacity = limits.window_chunks * limits.windows_in_flight;
    let (tx, mut rx) = mpsc::channel::<Prepared>(capacity);
    let sink = ChannelSink {
        tx,
        shared: shared.clone(),
        bytes_before: 0,
        template: RecordTemplate::of(&job),
    };
    let reader = tokio::task::spawn_blocking({
        let (source, plan) = (job.source.clone(), job.plan.clone());
        move || read_all(source, plan, sink)
    });

    let windows =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).ready_chunks(limits.window_chunks);
    let job_ref = &job;
    let peers_ref = &peers;
    let mut written = windows
        .map(|window: Vec<Prepared>| async move {
            let bytes_done = window.last().map_or(0, |p| p.bytes_done);
            let count = window.len();
            let ids = write_window(job_ref, peers_ref, window).await?;
            Ok::<_, JobError>((ids, count, bytes_done))
        })
        .buffered(limits.windows_in_flight);

    let mut ids = WrittenIds::new(job.kind);
    let mut last_progress = 0u8;
    let mut pipeline_error = None;
    while let Some(result) = written.next().await {
        match result {
            Ok((window_ids, count, bytes_done)) => {
                for (source, chunk_index) in &window_ids {
                    ids.insert(source, *chunk_index);
                }
                shared.windows_sent.fetch_add(1, Ordering::Relaxed);
                shared
                    .chunks_written
                    .fetch_add(count as u64, Ordering::Relaxed);
                shared.bytes_done.store(bytes_done, Ordering::Relaxed);
                let progress = ((bytes_done * 100 / total_bytes) as u8).min(99);
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
            Err(e) => {
                pipeline_error = Some(e);
                break;
            }
        }
    }
    // Dropping the stream drops the receiver: a reader blocked on a full channel wakes and ends.
    drop(written);
    if pipeline_error.is_some() {
        shared.stopping.store(true, Ordering::SeqCst);
    }
    let read = reader.await.map_err(|e| match e.try_into_panic() {
        Ok(panic) => format!("reader panicked: {}", panic_message(&*panic)),
        Err(e) => format!("reader thread failed: {e}"),
    })?;
    if let Some(error) = pipeline_error {
        return Err(error);
    }
    let warnings = match read {
        Ok(warnings) => warnings,
        Err(SourceError::Stopped { rel }) => {
            let reason = shared.stop_reason().unwrap_or_else(|| "stopped".into());
            return Err(format!("{reason} (stopped while reading {rel})").into());
        }
        Err(e) => return Err(e.to_string().into()),
    };
    if let Some(reason) = shared.stop_reason() {
        return Err(reason.into());
    }
    ids.seal();
    let vectors = ids.len() as u64;
    let pruned = peers
        .pruner
        .send(PruneCollection {
            collection: job.collection.clone(),
            keep: Arc::new(ids),
        })
        .await
        .map_err(|e| format!("vector store writer unreachable: {e}"))?
        .map_err(|e| {
            store_failed(
                format!("removing stale records from {}", job.collection.name),
                e,
            )
        })?;
    if pruned > 0 {
        tracing::info!(job_id = %job.job_id, collection = %job.collection.name, pruned, "removed stale records");
    }
    let mut warnings = warnings;
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
        chunks: shared.chunks_written.load(Ordering::Relaxed),
        bytes: job.plan.total_bytes(),
        files: job.plan.files.len(),
        warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
        elapsed: started.elapsed(),
    })
}

/// Embeds one window and writes it; answers the (source, chunk index) of each record written.
async fn write_window(
    job: &IngestJob,
    peers: &IngestorPeers,
    window: Vec<Prepared>,
) -> Result<Vec<(String, u32)>, JobError> {
    let texts: Vec<String> = window.iter().map(|p| p.record.document.clone()).collect();
    let vectors = peers
        .embedder
        .send(EmbedTexts { texts })
        .await
        .map_err(|e| format!("embedding batcher unreachable: {e}"))?
        .map_err(|e| {
            let message = match e.input.and_then(|i| window.get(i)) {
                // One input refused: name it, so the user can mend that file.
                Some(bad) => format!(
                    "embedding failed for {} {} {}: {e}",
                    bad.source,
                    if job.kind == Kind::Quotes {
                        "line"
                    } else {
                        "chunk"
                    },
                    bad.chunk_index
                ),
                None => format!("embedding failed: {e}"),
            };
            JobError {
                message,
                retryable: e.is_transient(),
            }
        })?;
    let mut written = Vec::with_capacity(window.len());
    let mut records = Vec::with_capacity(window.len());
    for (prepared, embedding) in window.into_iter().zip(vectors) {
        written.push((prepared.source, prepared.chunk_index));
        records.push(Record {
            embedding,
            ..prepared.record
        });
    }
    peers
        .writer
        .send(WriteRecords {
            collection: job.collection.clone(),
            records,
        })
        .await
        .map_err(|e| format!("vector store writer unreachable: {e}"))?
        .map_err(|e| store_failed(format!("writing to {}", job.collection.name), e))?;
    Ok(written)
}

fn store_failed(what: String, e: StoreError) -> JobError {
    JobError {
        message: format!("{what}: {e}"),
        retryable: e.is_transient(),
    }
}

/// What every record of a job carries besides its chunk's own metadata.
#[derive(Clone)]
struct RecordTemplate {
    persona: String,
    kind: Kind,
    embedding_model: String,
}

impl RecordTemplate {
    fn of(job: &IngestJob) -> Self {
        Self {
            persona: job.persona.to_string(),
            kind: job.kind,
            embedding_model: job.collection.embedding_model.clone(),
        }
    }

    /// The chunk as a record, its vector still to come.
    fn record(&self, chunk: Chunk) -> Record {
        let mut metadata = chunk.metadata;
        let fixed = [
            ("persona_id", MetaValue::from(self.persona.as_str())),
            ("kind", MetaValue::from(self.kind.as_str())),
            ("source", MetaValue::from(chunk.source.as_str())),
            ("chunk_index", MetaValue::Int(chunk.chunk_index.into())),
            ("char_start", MetaValue::Int(chunk.char_start as i64)),
            ("char_end", MetaValue::Int(chunk.char_end as i64)),
            (
                "content_hash",
                MetaValue::Str(format!("{:032x}", xxh3_128(chunk.text.as_bytes()))),
            ),
            (
                "embedding_model",
                MetaValue::from(self.embedding_model.as_str()),
            ),
        ];
        for (key, value) in fixed {
            metadata.insert(key.to_owned(), value);
        }
        Record {
            id: record_id(self.kind, &chunk.source, chunk.chunk_index),
            document: chunk.text,
            metadata,
            embedding: Vec::new(),
        }
    }
}
