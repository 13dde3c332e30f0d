//! The wiring, in one place: connects the database, opens the vector store, builds the
//! embedding provider, and starts the engine's actors with their peers. `Engine` is what the
//! command line, the daemon and the end-to-end tests drive.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use tokio::sync::broadcast;

use crate::actors::embedding_batcher::{BatchLimits, EmbeddingBatcher};
use crate::actors::ingestor::{IngestFinished, IngestJob, Ingestor, IngestorLimits, IngestorPeers};
use crate::actors::orchestrator::{
    IngestorHandle, IngestorSpawner, RunDeps, RunEvent, RunOutcome, RunRequest,
};
use crate::actors::status_recorder::{FlushProgress, JobEvent, StatusRecorder};
use crate::actors::store_writer::{StoreWriter, WriterLimits};
use crate::actors::supervisor::{
    IngestPersona, OrchestratorStarter, RunLimits, RunTask, Supervisor, TaskEvent, TaskOutcome,
};
use crate::config::Settings;
use crate::embed::rate_limit::{LocalLimiter, RateLimiter, RateLimits};
use crate::embed::{self, EmbeddingProvider};
use crate::retry::RetryPolicy;
use crate::sources::{FileSources, SourceFactory};
use crate::store::{self, VectorStore};
use crate::{db, manifest, Kind, PersonaId};

/// Starts each job's Ingestor as an actor sharing the engine's batcher, writer and recorder.
pub struct ActorIngestorSpawner {
    pub peers: IngestorPeers,
    pub limits: IngestorLimits,
}

impl IngestorSpawner for ActorIngestorSpawner {
    fn spawn(&self, job: IngestJob, report_to: Recipient<IngestFinished>) -> IngestorHandle {
        let ingestor = Ingestor::new(job, self.peers.clone(), self.limits, report_to).start();
        IngestorHandle {
            stop: ingestor.clone().recipient(),
            abort: ingestor.recipient(),
        }
    }
}

/// The provider's rate limits kept in this process, if set.
fn local_rate_limit(settings: &Settings) -> Option<Arc<dyn RateLimiter>> {
    let limits = RateLimits::from_settings(&settings.embedding);
    limits
        .is_limited()
        .then(|| Arc::new(LocalLimiter::new(limits)) as Arc<dyn RateLimiter>)
}

/// The running engine. Must be started inside an actix system.
pub struct Engine {
    pub settings: Arc<Settings>,
    pub db: DatabaseConnection,
    pub store: Arc<dyn VectorStore>,
    pub provider: Arc<dyn EmbeddingProvider>,
    pub supervisor: Addr<Supervisor>,
    pub recorder: Addr<StatusRecorder>,
    pub batcher: Addr<EmbeddingBatcher>,
    pub writer: Addr<StoreWriter>,
    writer_thread: Arbiter,
    events: broadcast::Sender<JobEvent>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.writer_thread.stop();
    }
}

impl Engine {
    /// Connects everything the settings name (applying pending migrations) and starts; the
    /// provider's rate limits, if set, are kept in this process.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        Self::start_sharing(settings, None).await
    }

    /// As [`start`](Self::start), the provider's rate limits kept by `limiter` (the daemon's,
    /// shared on Redis) when given.
    pub async fn start_sharing(
        settings: Settings,
        limiter: Option<Arc<dyn RateLimiter>>,
    ) -> anyhow::Result<Self> {
        let database = db::connect(&settings.database).await?;
        let store = store::from_settings(&settings.store)
            .await
            .with_context(|| format!("opening the vector store ({:?})", settings.store.kind))?;
        let limiter = limiter.or_else(|| local_rate_limit(&settings));
        let provider = embed::connect(&settings.embedding, limiter.as_deref())
            .await
            .map_err(anyhow::Error::msg)?;
        let sources = Arc::new(
            FileSources::new(Arc::new(settings.clone()))
                .with_token_counter(provider.token_counter()),
        );
        Ok(Self::start_with(
            settings, database, store, provider, sources, limiter,
        ))
    }

    /// Starts the actors on pieces the caller made (tests put their own sources or store). The
    /// provider's rate limits are kept by `limiter`, else in process when set.
    pub fn start_with(
        settings: Settings,
        db: DatabaseConnection,
        store: Arc<dyn VectorStore>,
        provider: Arc<dyn EmbeddingProvider>,
        sources: Arc<dyn SourceFactory>,
        limiter: Option<Arc<dyn RateLimiter>>,
    ) -> Self {
        let settings = Arc::new(settings);
        let (events, _) = broadcast::channel(4096);
        let recorder = StatusRecorder::new(db.clone(), events.clone()).start();
        let limiter = limiter.or_else(|| local_rate_limit(&settings));
        let batcher = EmbeddingBatcher::new(
            provider.clone(),
            BatchLimits::from_settings(&settings.embedding),
        )
        .with_rate_limiter(limiter)
        .start();
        // The writer's work (serialising records for the store) gets a thread of its own, so
        // it runs beside the ingestors instead of taking turns with them.
        let writer_thread = Arbiter::new();
        let writer_limits = WriterLimits {
            max_in_flight: settings.store.max_in_flight,
            max_retries: settings.store.max_retries,
            ..WriterLimits::default()
        };
        let writer_store = store.clone();
        let writer = StoreWriter::start_in_arbiter(&writer_thread.handle(), move |_| {
            StoreWriter::new(writer_store, writer_limits)
        });
        let spawner = ActorIngestorSpawner {
            peers: IngestorPeers {
                embedder: batcher.clone().recipient(),
                write: writer.clone().recipient(),
                prune: writer.clone().recipient(),
                counter: writer.clone().recipient(),
                hashes: writer.clone().recipient(),
                records: writer.clone().recipient(),
                recorder: recorder.clone().recipient(),
            },
            limits: IngestorLimits {
                window_chunks: settings.ingest.window_chunks,
                windows_in_flight: settings.windows_in_flight(),
            },
        };
        let deps = RunDeps {
            sources,
            ingestors: Arc::new(spawner),
            recorder: recorder.clone().recipient(),
            collection_template: settings.collections.name_template.clone(),
            embedding_model: provider.model().to_owned(),
            dimension: provider.dimension(),
            soft_time_limit: Duration::from_secs(settings.worker.soft_time_limit),
            time_limit: Duration::from_secs(settings.worker.time_limit),
            fingerprints: Arc::new(manifest::fingerprints(
                &settings,
                provider.model(),
                provider.dimension(),
            )),
            tokens: provider.token_counter(),
        };
        let supervisor = Supervisor::new(
            settings.worker.concurrency,
            Arc::new(OrchestratorStarter(deps)),
            recorder.clone().recipient(),
        )
        .with_retry_policy(RetryPolicy::from_settings(&settings.worker))
        .start();
        Self {
            settings,
            db,
            store,
            provider,
            supervisor,
            recorder,
            batcher,
            writer,
            writer_thread,
            events,
        }
    }

    /// Ingests `kinds` of `persona` with new job rows, and waits for the outcome.
    pub async fn ingest(&self, persona: PersonaId, kinds: &[Kind]) -> anyhow::Result<RunOutcome> {
        self.run(RunRequest::new(persona, kinds)).await
    }

    pub async fn run(&self, request: RunRequest) -> anyhow::Result<RunOutcome> {
        self.supervisor
            .send(IngestPersona(request))
            .await
            .context("the supervisor is not running")
    }

    /// Runs `request` as a task: jobs that fail only transiently run again, waiting in this
    /// process, as the engine's retry policy says (`worker.max_retries`, `worker.retry_delay`);
    /// jobs already completed are not run again. Answers the last run's outcome, which holds
    /// every job.
    pub async fn run_retrying(&self, mut request: RunRequest) -> anyhow::Result<RunOutcome> {
        // One task id for the run's jobs when it may run again, so that a run again knows which
        // completed (rows of a run that cannot be retried keep no task id, as before).
        if self.settings.worker.max_retries > 0 {
            let task_id = uuid::Uuid::new_v4().to_string();
            for job in &mut request.jobs {
                job.task_id.get_or_insert_with(|| task_id.clone());
            }
        }
        let mut retries = 0;
        loop {
            let watch = request.watch.clone();
            let task = RunTask {
                persona: request.persona.clone(),
                jobs: request.jobs.clone(),
                limits: RunLimits {
                    soft: request.soft_time_limit,
                    hard: request.time_limit,
                },
                retries,
                force: request.force,
                tell: Arc::new(move |event: TaskEvent| {
                    if let TaskEvent::JobEnded(ended) = event {
                        watch.tell(&RunEvent::JobEnded(ended.outcome));
                    }
                }),
            };
            match self
                .supervisor
                .send(task)
                .await
                .context("the supervisor is not running")?
            {
                TaskOutcome::Done(outcome) => return Ok(outcome),
                TaskOutcome::Retry {
                    after,
                    retry,
                    outcome,
                } => {
                    tracing::warn!(
                        persona = %request.persona, retry,
                        "failed only transiently; running the failed jobs again in {after:?}: {}",
                        outcome.error.unwrap_or_default()
                    );
                    tokio::time::sleep(after).await;
                    retries = retry;
                }
            }
        }
    }

    /// Every job change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// The collection name of a persona's kind.
    pub fn collection_name(&self, persona: &PersonaId, kind: Kind) -> String {
        self.settings
            .collection_name(persona.as_str(), kind.as_str())
    }

    /// Writes what is still buffered (coalesced progress). Runs are expected to be over.
    pub async fn shutdown(&self) {
        let _ = self.recorder.send(FlushProgress).await;
    }
}

#[cfg(test)]
mod tests;
