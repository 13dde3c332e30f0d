//! One task message, from the moment it takes a run slot to its answer: the persona's lock taken,
//! STARTED stored, the jobs run through the engine's one façade (`RunTask`), each sub-task
//! answered as its job ends, then the task answered SUCCESS or FAILURE and acknowledged, or, when
//! the engine says its failures were transient, answered RETRY and re-published with its
//! countdown (acknowledged in the same step), which frees the slot and the lock at once.
//!
//! Redis going away does not lose an answer: writes to it are retried until they land. If the
//! worker stops first, the message is still in flight and goes back to its queue.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Recipient;
use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::celery::{retry_message, IngestCall, TaskMessage, TaskState};
use super::ports::{BrokerError, Delivery, Events, Locks, Queue, ResultStore};
use crate::actors::jittered_backoff;
use crate::actors::orchestrator::RunOutcome;
use crate::actors::supervisor::{JobEnded, RunLimits, RunTask, TaskOutcome};
use crate::{Kind, PersonaId};

/// A message understood, waiting for (or holding) a run slot.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub delivery: Delivery,
    pub msg: TaskMessage,
    pub call: IngestCall,
}

/// How a message left this worker's hands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// Answered SUCCESS or FAILURE, and acknowledged.
    Answered,
    /// Answered RETRY and published again with its countdown.
    Retried,
    /// Still in flight (the worker is stopping): requeued at exit, or by another worker's reaper.
    Left,
}

/// What every task's handling shares.
pub struct TaskContext {
    pub worker_id: String,
    /// The node name in STARTED results and events.
    pub hostname: String,
    pub queue: Arc<dyn Queue>,
    pub results: Arc<dyn ResultStore>,
    pub locks: Arc<dyn Locks>,
    pub events: Option<Arc<dyn Events>>,
    pub engine: Recipient<RunTask>,
    /// Turns true when the worker stops taking work.
    pub stopping: watch::Receiver<bool>,
    /// Set when the shutdown grace ran out: runs ending now were aborted, their messages go
    /// back to their queue unanswered.
    pub abandoning: Arc<AtomicBool>,
}

impl TaskContext {
    fn abandoning(&self) -> bool {
        self.abandoning.load(Ordering::SeqCst)
    }
}

/// Serves one task that holds a run slot.
pub async fn serve(ctx: Arc<TaskContext>, task: Accepted) -> Served {
    let span = tracing::info_span!("task", task_id = %task.msg.id, name = %task.msg.task);
    async move {
        if let Some(events) = &ctx.events {
            events.task_taken();
        }
        let served = Task::new(&ctx, &task).serve().await;
        if let Some(events) = &ctx.events {
            events.task_done();
        }
        served
    }
    .instrument(span)
    .await
}

/// Answers a task whose message expired before it ran, and acknowledges it.
pub async fn expire(ctx: Arc<TaskContext>, task: Accepted) {
    let state = exception("TaskRevokedError", "expired".into());
    let handling = Task::new(&ctx, &task);
    handling.answer(&task.msg.id, state).await;
    handling.acknowledge().await;
}

/// Retries a Redis write until it lands, with backoff (Redis restarting, a failover): an answer
/// or an acknowledgement given up on would be work lost or done twice. The worker's shutdown
/// grace bounds how long this can go on.
pub async fn persist<F, Fut>(what: &str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), BrokerError>>,
{
    let mut attempt = 0;
    while let Err(e) = write().await {
        attempt += 1;
        let wait = jittered_backoff(Duration::from_millis(200), attempt, Duration::from_secs(5));
        tracing::warn!("{what} failed ({e}); trying again in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

struct Task<'a> {
    ctx: &'a TaskContext,
    delivery: &'a Delivery,
    msg: &'a TaskMessage,
    call: &'a IngestCall,
    /// Sub-tasks already given the state they end in.
    answered: HashSet<Kind>,
    started: Instant,
}

impl<'a> Task<'a> {
    fn new(ctx: &'a TaskContext, task: &'a Accepted) -> Self {
        Self {
            ctx,
            delivery: &task.delivery,
            msg: &task.msg,
            call: &task.call,
            answered: HashSet::new(),
            started: Instant::now(),
        }
    }

    async fn serve(mut self) -> Served {
        let (persona_id, jobs) = jobs_of(self.call, &self.msg.id);
        let persona = match PersonaId::parse(persona_id) {
            Ok(persona) => persona,
            Err(e) => {
                self.answer(&self.msg.id, exception("ValueError", e.to_string()))
                    .await;
                self.acknowledge().await;
                return Served::Answered;
            }
        };
        if !self.lock(&persona).await {
            return Served::Left;
        }
        let served = self.run(&persona, jobs).await;
        let locks = &self.ctx.locks;
        persist("releasing a persona lock", || {
            locks.release(persona.as_str())
        })
        .await;
        served
    }

    /// Waits until this worker holds the persona's lock; false if the worker began stopping.
    async fn lock(&self, persona: &PersonaId) -> bool {
        let mut stopping = self.ctx.stopping.clone();
        let mut attempt = 0;
        loop {
            match self.ctx.locks.try_acquire(persona.as_str()).await {
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
            if stopped_during(wait, &mut stopping).await {
                return false;
            }
        }
    }

    /// One run of the task's jobs through the engine, each sub-task answered as its job ends.
    async fn run(&mut self, persona: &PersonaId, jobs: Vec<crate::jobs::JobRef>) -> Served {
        let msg = self.msg;
        self.answer(&msg.id, self.started_state()).await;
        let (tell, mut ended) = mpsc::unbounded_channel();
        let request = RunTask {
            persona: persona.clone(),
            jobs,
            limits: RunLimits {
                soft: msg.soft_time_limit.map(Duration::from_secs_f64),
                hard: msg.time_limit.map(Duration::from_secs_f64),
            },
            retries: msg.retries,
            tell: Arc::new(move |job: JobEnded| drop(tell.send(job))),
        };
        let run = self.ctx.engine.send(request);
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                Some(job) = ended.recv() => self.answer_job(&job).await,
            }
        };
        // Told before the outcome was sent: all here.
        while let Ok(job) = ended.try_recv() {
            self.answer_job(&job).await;
        }
        if self.ctx.abandoning() {
            return Served::Left;
        }
        match outcome {
            Err(e) => {
                let state = exception("RuntimeError", format!("the engine is not running: {e}"));
                self.answer_unanswered(&state).await;
                self.answer(&msg.id, state).await;
                self.acknowledge().await;
                Served::Answered
            }
            Ok(TaskOutcome::Done(outcome)) => {
                self.finish(&outcome).await;
                self.acknowledge().await;
                Served::Answered
            }
            Ok(TaskOutcome::Retry {
                after,
                retry,
                outcome,
            }) => {
                self.retry(persona, after, retry, &outcome).await;
                Served::Retried
            }
        }
    }

    /// RETRY stored, and the message published again with `retries = retry` and its countdown.
    async fn retry(&self, persona: &PersonaId, after: Duration, retry: u32, outcome: &RunOutcome) {
        let error = outcome.error.clone().unwrap_or_default();
        tracing::warn!(
            task_id = %self.msg.id, %persona, retry,
            "transient failure, running again in {after:?}: {error}"
        );
        crate::metrics::METRICS
            .retries
            .with_label_values(&["task"])
            .inc();
        self.answer(&self.msg.id, retry_state(error)).await;
        let eta = Utc::now() + chrono::Duration::from_std(after).unwrap_or_default();
        match retry_message(&self.delivery.raw, retry, eta) {
            Ok(again) => {
                let (queue, worker) = (&self.ctx.queue, &self.ctx.worker_id);
                persist("publishing a task's retry", || {
                    queue.republish(worker, self.delivery, &again)
                })
                .await
            }
            // It was read once: it cannot fail to parse now.
            Err(e) => {
                tracing::error!("the retry of task {} could not be made: {e}", self.msg.id);
                self.acknowledge().await;
            }
        }
    }

    async fn acknowledge(&self) {
        let (queue, worker) = (&self.ctx.queue, &self.ctx.worker_id);
        persist("acknowledging a message", || {
            queue.ack(worker, self.delivery)
        })
        .await;
    }

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
        let results = &self.ctx.results;
        persist("recording a task result", || async {
            results.store(task_id, &state).await.map(|_| ())
        })
        .await;
    }

    /// The Celery event of the task's new state.
    async fn tell_event(&self, state: &TaskState) {
        let Some(events) = &self.ctx.events else {
            return;
        };
        let (event_type, fields) = event_of(state, self.started.elapsed());
        events.task(event_type, &self.msg.id, fields).await;
    }

    fn started_state(&self) -> TaskState {
        TaskState::Started {
            pid: std::process::id(),
            hostname: self.ctx.hostname.clone(),
        }
    }

    /// A sub-task's state as its job ends: its vector count, or a failure (RETRY while the task
    /// will run it again).
    async fn answer_job(&mut self, job: &JobEnded) {
        if !matches!(self.call, IngestCall::FullPersona { .. }) || self.ctx.abandoning() {
            return;
        }
        let kind = job.outcome.kind;
        let id = subtask_id(&self.msg.id, kind);
        let state = match &job.outcome.result {
            Ok(stats) => TaskState::Success(json!(stats.vectors)),
            Err(e) if job.will_retry => retry_state(e.message.clone()),
            Err(e) => exception("RuntimeError", e.message.clone()),
        };
        if !matches!(state, TaskState::Retry { .. }) {
            self.answered.insert(kind);
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

    /// The task's final answer, and its sub-tasks' where their jobs did not end for good.
    async fn finish(&mut self, outcome: &RunOutcome) {
        let run_error = || outcome.error.clone().unwrap_or_else(|| "not run".into());
        let state_of = |kind: Kind| match outcome.jobs.iter().find(|j| j.kind == kind) {
            Some(job) => match &job.result {
                Ok(stats) => TaskState::Success(json!(stats.vectors)),
                Err(e) => exception("RuntimeError", e.message.clone()),
            },
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
                let state = if outcome.succeeded() {
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

/// Waits `wait`; answers true if the worker began stopping meanwhile.
async fn stopped_during(wait: Duration, stopping: &mut watch::Receiver<bool>) -> bool {
    let stop = async {
        if stopping.wait_for(|stopping| *stopping).await.is_err() {
            // Nobody can ask this worker to stop any more.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stop => true,
    }
}

mod states;

use states::{event_of, jobs_of, retry_state};
pub use states::{exception, received_fields, subtask_id};
