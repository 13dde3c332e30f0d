//! One task message, from the in-flight list to its answer: decoded (or dead-lettered with the
//! reason), run through the Supervisor, each sub-task answered as its job finishes, run again
//! with backoff while its failures are transient (up to `max_retries`, the task saying RETRY
//! meanwhile), answered SUCCESS or FAILURE, and only then acknowledged.
//!
//! Redis going away does not lose an answer: writes to it are retried until they land. If the
//! worker stops first, the message is still in flight and goes back to its queue.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use super::broker::Delivery;
use super::celery::{decode, ingest_call, IngestCall, TaskMessage, TaskState};
use super::consumer::Context;
use crate::actors::ingestor::JobError;
use crate::actors::jittered_backoff;
use crate::actors::orchestrator::{JobOutcome, JobWatch, RunOutcome, RunRequest};
use crate::actors::supervisor::IngestPersona;
use crate::jobs::JobRef;
use crate::{JobStatus, Kind, PersonaId};

/// The longest wait between two retries of a task (Celery's `retry_backoff_max`).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// How a message left this worker's hands.
pub(super) enum Served {
    Answered,
    DeadLettered,
    /// Still in flight (the worker is stopping): requeued at exit, or by another worker's reaper.
    Left,
}

pub(super) async fn handle(
    ctx: &Context,
    delivery: &Delivery,
    shutdown: watch::Receiver<bool>,
) -> Served {
    let worker = &ctx.config.worker_id;
    let call = decode(delivery.raw.as_bytes())
        .map_err(|e| e.to_string())
        .and_then(|msg| ingest_call(&msg, &ctx.config.names).map(|call| (msg, call)));
    let (msg, call) = match call {
        Ok(understood) => understood,
        Err(reason) => {
            tracing::warn!(queue = %delivery.queue, "dead-lettered: {reason}");
            crate::metrics::METRICS.dead_letters.inc();
            persist("dead-lettering a message", || {
                ctx.peers.broker.dead_letter(worker, delivery, &reason)
            })
            .await;
            return Served::DeadLettered;
        }
    };
    let task = Task {
        ctx,
        msg: &msg,
        call: &call,
        answered: HashSet::new(),
        started: Instant::now(),
    };
    if let Some(events) = &ctx.peers.events {
        events.task_taken();
        events
            .task("task-received", &msg.id, received_fields(&msg))
            .await;
    }
    let span = tracing::info_span!("task", task_id = %msg.id, name = %msg.task);
    let flow = task.serve(shutdown).instrument(span).await;
    if let Some(events) = &ctx.peers.events {
        events.task_done();
    }
    if let Flow::Stopped = flow {
        return Served::Left;
    }
    persist("acknowledging a message", || {
        ctx.peers.broker.ack(worker, delivery)
    })
    .await;
    Served::Answered
}

/// Retries a Redis write until it lands, with backoff (Redis restarting, a failover): an answer
/// or an acknowledgement given up on would be work lost or done twice. The consumer's shutdown
/// grace bounds how long this can go on.
async fn persist<F, Fut>(what: &str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), redis::RedisError>>,
{
    let mut attempt = 0;
    while let Err(e) = write().await {
        attempt += 1;
        let wait = jittered_backoff(Duration::from_millis(200), attempt, Duration::from_secs(5));
        tracing::warn!("{what} failed ({e}); trying again in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

enum Flow {
    Done,
    /// The worker is stopping: the message stays in flight to be requeued.
    Stopped,
}

struct Task<'a> {
    ctx: &'a Context,
    msg: &'a TaskMessage,
    call: &'a IngestCall,
    /// Sub-tasks already given the state they end in.
    answered: HashSet<Kind>,
    started: Instant,
}

impl Task<'_> {
    async fn answer(&self, task_id: &str, state: TaskState) {
        if task_id == self.msg.id {
            self.tell_event(&state).await;
            let ended = match state {
                TaskState::Success(_) => Some("SUCCESS"),
                TaskState::Failure { .. } => Some("FAILURE"),
                _ => None,
            };
            if let Some(ended) = ended {
                crate::metrics::METRICS
                    .tasks
                    .with_label_values(&[ended])
                    .inc();
            }
        }
        persist("recording a task result", || async {
            self.ctx
                .peers
                .results
                .store(task_id, &state)
                .await
                .map(|_| ())
        })
        .await;
    }

    async fn serve(mut self, mut shutdown: watch::Receiver<bool>) -> Flow {
        let msg = self.msg;
        if msg.expires.is_some_and(|at| at < Utc::now()) {
            self.answer(&msg.id, exception("TaskRevokedError", "expired".into()))
                .await;
            return Flow::Done;
        }
        if let Some(eta) = msg.eta {
            if let Ok(wait) = (eta.with_timezone(&Utc) - Utc::now()).to_std() {
                if stopped_during(wait, &mut shutdown).await {
                    return Flow::Stopped;
                }
            }
        }
        let (persona_id, mut pending) = jobs_of(self.call, &msg.id);
        let persona = match PersonaId::parse(persona_id) {
            Ok(persona) => persona,
            Err(e) => {
                self.answer(&msg.id, exception("ValueError", e.to_string()))
                    .await;
                return Flow::Done;
            }
        };
        if !self.lock(&persona, &mut shutdown).await {
            return Flow::Stopped;
        }
        let flow = self.run(&persona, &mut pending, &mut shutdown).await;
        let locks = &self.ctx.peers.locks;
        persist("releasing a persona lock", || {
            locks.release(persona.as_str())
        })
        .await;
        flow
    }

    /// Waits until this worker holds the persona's lock; false if the worker began stopping.
    async fn lock(&self, persona: &PersonaId, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut attempt = 0;
        loop {
            match self.ctx.peers.locks.try_acquire(persona.as_str()).await {
                Ok(true) => return true,
                Ok(false) if attempt == 0 => {
                    tracing::warn!(%persona, "another worker is ingesting this persona: waiting")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(%persona, "taking the persona's lock failed: {e}"),
            }
            attempt += 1;
            let wait =
                jittered_backoff(Duration::from_millis(250), attempt, Duration::from_secs(5));
            if stopped_during(wait, shutdown).await {
                return false;
            }
        }
    }

    /// The runs of the task: once, and again while its failures are transient.
    async fn run(
        &mut self,
        persona: &PersonaId,
        pending: &mut Vec<JobRef>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Flow {
        let msg = self.msg;
        let mut done = self.done_before(pending).await;
        pending.retain(|job| !done.iter().any(|(earlier, _)| earlier.id == job.id));
        let config = &self.ctx.config;
        let mut retries = msg.retries;
        let mut results: BTreeMap<Kind, Result<u64, JobError>> = BTreeMap::new();
        loop {
            self.answer(&msg.id, self.started()).await;
            let may_retry = retries < config.max_retries;
            let run = self.run_once(
                persona,
                pending.clone(),
                std::mem::take(&mut done),
                may_retry,
            );
            let run = run.await;
            if self.ctx.abandoning() {
                return Flow::Stopped;
            }
            let outcome = match run {
                Ok(outcome) => outcome,
                Err(error) => {
                    let state = exception("RuntimeError", error);
                    self.answer_unanswered(&state).await;
                    self.answer(&msg.id, state).await;
                    return Flow::Done;
                }
            };
            for job in &outcome.jobs {
                results.insert(job.kind, job.result.clone().map(|s| s.vectors));
            }
            let failed: Vec<&JobOutcome> =
                outcome.jobs.iter().filter(|j| j.result.is_err()).collect();
            let transient = !failed.is_empty() && failed.iter().all(|j| is_retryable(&j.result));
            if outcome.succeeded() || !transient || !may_retry {
                self.finish(&results, &outcome).await;
                return Flow::Done;
            }
            retries += 1;
            crate::metrics::METRICS
                .retries
                .with_label_values(&["task"])
                .inc();
            let wait = jittered_backoff(config.retry_delay, retries, MAX_RETRY_DELAY);
            let error = outcome.error.clone().unwrap_or_default();
            tracing::warn!(
                task_id = %msg.id, persona = %persona, retry = retries,
                "transient failure, running again in {wait:?}: {error}"
            );
            self.answer(&msg.id, retry_state(error)).await;
            if stopped_during(wait, shutdown).await {
                return Flow::Stopped;
            }
            pending.retain(|job| failed.iter().any(|f| f.job_id == job.id));
        }
    }

    /// The jobs this very task completed before: it is being delivered again (its worker died
    /// after some of its jobs ended). They are not run twice.
    async fn done_before(&self, jobs: &[JobRef]) -> Vec<(JobRef, u64)> {
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        let rows = match crate::jobs::jobs_by_ids(&self.ctx.peers.db, &ids).await {
            Ok(rows) => rows,
            Err(e) => {
                // Not knowing costs only work done again (the run is idempotent).
                tracing::warn!("could not read the task's job rows: {e}");
                return Vec::new();
            }
        };
        jobs.iter()
            .filter_map(|job| {
                let row = rows.iter().find(|r| r.id == job.id)?;
                let done = row.status == JobStatus::Completed && row.task_id == job.task_id;
                done.then(|| (job.clone(), row.total_vectors.max(0) as u64))
            })
            .collect()
    }

    /// The Celery event of the task's new state.
    async fn tell_event(&self, state: &TaskState) {
        let Some(events) = &self.ctx.peers.events else {
            return;
        };
        let (event_type, fields) = event_of(state, self.started.elapsed());
        events.task(event_type, &self.msg.id, fields).await;
    }

    fn started(&self) -> TaskState {
        TaskState::Started {
            pid: std::process::id(),
            hostname: self.ctx.config.hostname.clone(),
        }
    }

    /// One run of `jobs`; each sub-task is answered as its job ends. An error: the engine did
    /// not answer at all.
    async fn run_once(
        &mut self,
        persona: &PersonaId,
        jobs: Vec<JobRef>,
        done: Vec<(JobRef, u64)>,
        may_retry: bool,
    ) -> Result<RunOutcome, String> {
        let (watch, mut finished) = JobWatch::channel();
        let request = RunRequest {
            persona: persona.clone(),
            jobs,
            // At least once: a redelivered or retried message may find its jobs in any state.
            restart: true,
            soft_time_limit: self.msg.soft_time_limit.map(Duration::from_secs_f64),
            time_limit: self.msg.time_limit.map(Duration::from_secs_f64),
            done,
            watch,
        };
        let run = self.ctx.peers.supervisor.send(IngestPersona(request));
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                Some(job) = finished.recv() => self.answer_job(&job, may_retry).await,
            }
        };
        while let Ok(job) = finished.try_recv() {
            self.answer_job(&job, may_retry).await;
        }
        outcome.map_err(|e| format!("the engine is not running: {e}"))
    }

    /// A sub-task's state as its job ends: its vector count, or a failure (RETRY while a
    /// transient one may still be run again).
    async fn answer_job(&mut self, job: &JobOutcome, may_retry: bool) {
        if !matches!(self.call, IngestCall::FullPersona { .. }) || self.ctx.abandoning() {
            return;
        }
        let id = subtask_id(&self.msg.id, job.kind);
        let state = match &job.result {
            Ok(stats) => TaskState::Success(json!(stats.vectors)),
            Err(e) if e.retryable && may_retry => retry_state(e.message.clone()),
            Err(e) => exception("RuntimeError", e.message.clone()),
        };
        if !matches!(state, TaskState::Retry { .. }) {
            self.answered.insert(job.kind);
        }
        self.answer(&id, state).await;
    }

    /// Gives every sub-task not yet answered for good the same `state`.
    async fn answer_unanswered(&mut self, state: &TaskState) {
        if let IngestCall::FullPersona { job_ids, .. } = self.call {
            for kind in job_ids.keys() {
                if self.answered.insert(*kind) {
                    self.answer(&subtask_id(&self.msg.id, *kind), state.clone())
                        .await;
                }
            }
        }
    }

    /// The task's final answer, and its sub-tasks' where their jobs never ran.
    async fn finish(&mut self, results: &BTreeMap<Kind, Result<u64, JobError>>, last: &RunOutcome) {
        let run_error = || last.error.clone().unwrap_or_else(|| "not run".into());
        let state_of = |kind: Kind| match results.get(&kind) {
            Some(Ok(vectors)) => TaskState::Success(json!(vectors)),
            Some(Err(e)) => exception("RuntimeError", e.message.clone()),
            None => exception("RuntimeError", run_error()),
        };
        match self.call {
            IngestCall::FullPersona { job_ids, .. } => {
                let mut children = serde_json::Map::new();
                for kind in job_ids.keys() {
                    let id = subtask_id(&self.msg.id, *kind);
                    if self.answered.insert(*kind) {
                        self.answer(&id, state_of(*kind)).await;
                    }
                    children.insert(kind.to_string(), Value::from(id));
                }
                let state = if last.succeeded() {
                    TaskState::Success(Value::Object(children))
                } else {
                    exception("RuntimeError", run_error())
                };
                self.answer(&self.msg.id, state).await;
            }
            IngestCall::OneKind { kind, .. } => {
                self.answer(&self.msg.id, state_of(*kind)).await;
            }
        }
    }
}

fn is_retryable<T>(result: &Result<T, JobError>) -> bool {
    result.as_ref().err().is_some_and(|e| e.retryable)
}

/// Waits `wait`; answers true if the worker began stopping meanwhile.
async fn stopped_during(wait: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    let stopping = async {
        if shutdown.wait_for(|stopping| *stopping).await.is_err() {
            // Nobody can ask this worker to stop any more.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stopping => true,
    }
}

mod states;

pub use states::subtask_id;
use states::{event_of, exception, jobs_of, received_fields, retry_state};
