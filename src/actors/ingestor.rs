//! Ingestor: one per job, the same for works, quotes and profile (they differ only in their
//! [`Source`]). A blocking thread reads and chunks the files that changed since the last run
//! (see `manifest`) into a bounded channel, leaving out the chunks the store holds as they are;
//! the actor makes windows of records from it and sends each one way, to the EmbeddingBatcher,
//! which sends it on to the StoreWriter (`window.rs`); it hears back only that a window was
//! written, and keeps at most `windows_in_flight` windows between reading and writing, so
//! memory stays bounded whatever the corpus. Progress goes to the StatusRecorder as
//! it advances; at the end, the records of files and chunks that are gone are deleted.
//!
//! Stopping: `StopIngest` (soft) asks the reader to stop and fails the job once what is in
//! flight is done; `AbortIngest` (hard) drops the work at once. Either way, and on a panic in
//! the reader or the pipeline, the job is recorded as failed with the reason.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use tracing::Instrument;
use uuid::Uuid;

pub use self::error::JobError;
use self::job::{execute, record};
use super::status_recorder::{RecordStatus, StatusUpdate};
use super::store_writer::{CountRecords, PruneCollection, ReadHashes, ReadRecords};
use super::window::{EmbedWindow, WriteWindow};
use super::Observe;
use crate::counts::JobCounts;
use crate::manifest::{FileEntry, KindManifest, ManifestChange};
use crate::sources::{Source, SourcePlan};
use crate::store::CollectionSpec;
use crate::tokens::TokenCounter;
use crate::{Kind, PersonaId};

/// Everything one job needs to know.
#[derive(Clone)]
pub struct IngestJob {
    pub job_id: Uuid,
    pub persona: PersonaId,
    pub kind: Kind,
    pub collection: CollectionSpec,
    pub source: Arc<dyn Source>,
    pub plan: SourcePlan,
    /// The job row may be in any state: this is an explicit retry.
    pub rerun: bool,
    /// What the manifest said of this kind before the run (`None`: nothing yet).
    pub previous: Option<Arc<KindManifest>>,
    /// Read and embed every file, changed or not (`--force`).
    pub force: bool,
    /// [`crate::manifest::fingerprint`] of the engine's settings.
    pub fingerprint: Arc<str>,
    /// Counts the tokens embedded, as the provider's model does where it is known.
    pub tokens: TokenCounter,
}

/// Where an Ingestor sends each of its messages. One recipient a message, named after what it
/// asks, not after the actor: `write`, `prune`, `counter`, `hashes` and `records` all reach the
/// one StoreWriter (in `pipeline.rs`), kept apart so that a test probes each alone.
#[derive(Clone)]
pub struct IngestorPeers {
    /// Where windows go to have their vectors filled in (the EmbeddingBatcher).
    pub embedder: Recipient<EmbedWindow>,
    /// Where windows go to be written (the StoreWriter): each window carries it, and the batcher
    /// sends it on there.
    pub write: Recipient<WriteWindow>,
    pub prune: Recipient<PruneCollection>,
    /// Asked what the store holds of the job's kind after a failure.
    pub counter: Recipient<CountRecords>,
    /// Asked for the hashes of what the store holds when the manifest cannot be trusted.
    pub hashes: Recipient<ReadHashes>,
    /// Asked for the records (with their vectors) of chunks about to be embedded: one whose
    /// text a record already holds keeps its vector.
    pub records: Recipient<ReadRecords>,
    pub recorder: Recipient<RecordStatus>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestorLimits {
    pub window_chunks: usize,
    pub windows_in_flight: usize,
}

/// What a finished job reports to whoever started it.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct IngestFinished {
    pub job_id: Uuid,
    pub kind: Kind,
    pub result: Result<JobStats, JobError>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JobStats {
    /// Records of the kind the collection holds after the job.
    pub vectors: u64,
    /// Chunks embedded and written by this run.
    pub chunks: u64,
    /// Bytes and files of the kind's corpus, read or not.
    pub bytes: u64,
    pub files: usize,
    pub warning: Option<String>,
    #[serde(skip)]
    pub elapsed: Duration,
    #[serde(flatten)]
    pub counts: JobCounts,
    /// The kind's manifest rows as the job leaves them (taken when its end is recorded).
    #[serde(skip)]
    pub manifest: Option<Arc<Vec<FileEntry>>>,
}

/// Soft stop: finish what is in flight, then fail the job with `reason`.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct StopIngest {
    pub reason: String,
}

/// Hard stop: drop the work now and fail the job with `reason`.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct AbortIngest {
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IngestorCounters {
    pub chunks_read: u64,
    pub chunks_written: u64,
    pub windows_sent: u64,
    pub bytes_done: u64,
    pub progress: u8,
}

/// Shared between the actor, its pipeline future and its reader thread.
#[derive(Default)]
struct Shared {
    stop_reason: Mutex<Option<String>>,
    stopping: AtomicBool,
    chunks_read: AtomicU64,
    chunks_written: AtomicU64,
    windows_sent: AtomicU64,
    bytes_done: AtomicU64,
    progress: AtomicU64,
    /// The files the reader started reading: their records may be written.
    touched: Mutex<Vec<String>>,
    /// Records written with the vector their text already had (their metadata moved).
    reused: AtomicU64,
    /// Tokens of the chunks sent to the embedding provider.
    tokens_embedded: AtomicU64,
}

impl Shared {
    fn touched(&self) -> Vec<String> {
        self.touched.lock().expect("not poisoned").clone()
    }

    fn stop(&self, reason: String) {
        self.stop_reason
            .lock()
            .expect("not poisoned")
            .get_or_insert(reason);
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn stop_reason(&self) -> Option<String> {
        self.stop_reason.lock().expect("not poisoned").clone()
    }
}

pub struct Ingestor {
    job: IngestJob,
    peers: IngestorPeers,
    limits: IngestorLimits,
    report_to: Recipient<IngestFinished>,
    shared: Arc<Shared>,
    work: Option<SpawnHandle>,
    finished: bool,
}

impl Ingestor {
    pub fn new(
        job: IngestJob,
        peers: IngestorPeers,
        limits: IngestorLimits,
        report_to: Recipient<IngestFinished>,
    ) -> Self {
        Self {
            job,
            peers,
            limits,
            report_to,
            shared: Arc::default(),
            work: None,
            finished: false,
        }
    }

    fn report(&mut self, result: Result<JobStats, JobError>) {
        self.finished = true;
        self.report_to.do_send(IngestFinished {
            job_id: self.job.job_id,
            kind: self.job.kind,
            result,
        });
    }
}

impl Actor for Ingestor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Every log line of the job says whose it is.
        let span = tracing::info_span!(
            "job",
            persona = %self.job.persona,
            kind = %self.job.kind,
            job_id = %self.job.job_id,
        );
        let work = execute(
            self.job.clone(),
            self.peers.clone(),
            self.limits,
            self.shared.clone(),
        )
        .instrument(span);
        self.work = Some(ctx.spawn(work.into_actor(self).map(|result, act, ctx| {
            act.report(result);
            ctx.stop();
        })));
    }
}

impl Handler<StopIngest> for Ingestor {
    type Result = ();

    fn handle(&mut self, msg: StopIngest, _: &mut Context<Self>) {
        self.shared.stop(msg.reason);
    }
}

impl Handler<AbortIngest> for Ingestor {
    type Result = ();

    fn handle(&mut self, msg: AbortIngest, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        self.shared.stop(msg.reason.clone());
        if let Some(work) = self.work.take() {
            ctx.cancel_future(work);
        }
        let recorder = self.peers.recorder.clone();
        let counter = self.peers.counter.clone();
        let collection = self.job.collection.name.clone();
        let written = self.shared.chunks_written.load(Ordering::Relaxed);
        let job_id = self.job.job_id;
        let stopped = JobError::Stopped(msg.reason);
        // Windows in flight may still land, but only of files the reader had started.
        let manifest = self.job.previous.is_some().then(|| ManifestChange::Forget {
            persona: self.job.persona.clone(),
            kind: self.job.kind,
            sources: self.shared.touched(),
        });
        ctx.wait(
            async move {
                // As a failure in the data path is told: what the store holds now, and what
                // this run wrote before the abort.
                let present = trust::records_present(&counter, &collection).await;
                let error = match present {
                    Some(_) if written > 0 => JobError::AfterWrites {
                        error: Box::new(stopped),
                        written,
                        present,
                        collection,
                    },
                    _ => stopped,
                };
                let failed = StatusUpdate::JobFailed {
                    job_id,
                    error: error.to_string(),
                    vectors_present: present,
                    manifest,
                };
                let _ = record(&recorder, failed).await;
                error
            }
            .into_actor(self)
            .map(move |error, act, ctx| {
                act.report(Err(error));
                ctx.stop();
            }),
        );
    }
}

impl Handler<Observe<IngestorCounters>> for Ingestor {
    type Result = MessageResult<Observe<IngestorCounters>>;

    fn handle(&mut self, _: Observe<IngestorCounters>, _: &mut Context<Self>) -> Self::Result {
        let s = &self.shared;
        MessageResult(IngestorCounters {
            chunks_read: s.chunks_read.load(Ordering::Relaxed),
            chunks_written: s.chunks_written.load(Ordering::Relaxed),
            windows_sent: s.windows_sent.load(Ordering::Relaxed),
            bytes_done: s.bytes_done.load(Ordering::Relaxed),
            progress: s.progress.load(Ordering::Relaxed) as u8,
        })
    }
}

mod error;
mod job;
mod plan;
mod read;
mod trust;

pub use plan::{dry_run, JobPlan};

#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod tests;
