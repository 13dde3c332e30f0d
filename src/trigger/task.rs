//! One task message, from the moment it takes a run slot to its answer, as a Celery worker would
//! serve the seed's tasks: a revoked task answered REVOKED without running; the persona's lock
//! taken; STARTED stored; the jobs run through the engine's one façade (`RunTask`). For
//! `ingest_full_persona` each job is a sub-task with a life of its own (received, STARTED,
//! SUCCESS with its vector count, FAILURE, RETRY, REVOKED, and their events), and the task itself
//! answers its sub-task ids as soon as the run is accepted (`tasks.full_persona_answers =
//! "dispatched"`, the seed's contract) or once it ended ("completed"). Then the message is
//! acknowledged, or, when the engine says its failures were transient, published again with its
//! countdown (acknowledged in the same step), which frees the slot and the lock at once.
//! `link` callbacks are sent on success and `link_error` ones on failure, as Celery sends them.
//!
//! Redis going away does not lose an answer: writes to it are retried until they land. If the
//! worker stops first, the message is still in flight and goes back to its queue. The states and
//! events given to the task and its sub-tasks are in `answers`.
//!
//! Over 400 lines because a task's way from slot to acknowledgement reads best in one file.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Recipient;
use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::celery::{retry_message, CallError, IngestCall, TaskMessage, TaskNames, TaskState};
use super::ports::{BrokerError, Delivery, Events, Locks, Queue, ResultStore, Revocations};
use crate::actors::jittered_backoff;
use crate::actors::orchestrator::RunOutcome;
use crate::actors::supervisor::{RunLimits, RunTask, TaskEvent, TaskOutcome};
use crate::config::FullPersonaAnswers;
use crate::retry::{retry, Backoff, Budget, Verdict};
use crate::{Kind, PersonaId};

/// A message understood, waiting for (or holding) a run slot.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub delivery: Delivery,
    pub msg: TaskMessage,
    /// What it asks; an error is answered as Celery's worker answers a call that does not bind.
    pub call: Result<IngestCall, CallError>,
    /// Set when a `revoke(terminate=True)` ended its run: it is answered REVOKED.
    pub terminated: Arc<AtomicBool>,
}

impl Accepted {
    /// Its own id and, for `ingest_full_persona`, its sub-tasks' (what a revoke may name).
    pub fn task_ids(&self) -> Vec<String> {
        let mut ids = vec![self.msg.id.clone()];
        if let Ok(IngestCall::FullPersona { job_ids, .. }) = &self.call {
            ids.extend(job_ids.keys().map(|k| subtask_id(&self.msg.id, *k)));
        }
        ids
    }
}

/// How a message left this worker's hands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// Answered SUCCESS, FAILURE or REVOKED, and acknowledged.
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
    pub names: TaskNames,
    pub answers: FullPersonaAnswers,
    /// Where `link` callbacks without a queue of their own go.
    pub default_queue: String,
    pub queue: Arc<dyn Queue>,
    pub results: Arc<dyn ResultStore>,
    pub locks: Arc<dyn Locks>,
    pub revocations: Arc<dyn Revocations>,
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

/// Answers a task that will not run (`reason`: "revoked", or "expired" for a message past its
/// `expires`), its sub-tasks too, and acknowledges it.
pub async fn revoke(ctx: Arc<TaskContext>, task: Accepted, reason: &str) {
    let mut handling = Task::new(&ctx, &task);
    let state = TaskState::Revoked {
        reason: reason.into(),
    };
    handling.answer_unanswered(&state).await;
    handling.answer_top(state).await;
    handling.acknowledge().await;
}

/// Retries a Redis write until it lands, with backoff (Redis restarting, a failover): an answer
/// or an acknowledgement given up on would be work lost or done twice. The worker's shutdown
/// grace bounds how long this can go on.
pub async fn write_until_done<F, Fut>(what: &str, write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), BrokerError>>,
{
    let backoff = Backoff {
        base: Duration::from_millis(200),
        cap: Duration::from_secs(5),
        budget: Budget::Forever,
    };
    let always = |_: &BrokerError| Verdict::Retry { after: None };
    let tell =
        |e: &BrokerError, _, wait| tracing::warn!("{what} failed ({e}); trying again in {wait:?}");
    // Forever: it returns only once written.
    let _ = retry(&backoff, "redis", always, tell, write).await;
}

struct Task<'a> {
    ctx: &'a TaskContext,
    delivery: &'a Delivery,
    msg: &'a TaskMessage,
    call: &'a Result<IngestCall, CallError>,
    terminated: &'a AtomicBool,
    /// Whether the task itself has its final answer.
    top_answered: bool,
    /// Sub-tasks already given the state they end in.
    answered: HashSet<Kind>,
    /// When each sub-task's job started, by sub-task id.
    sub_started: HashMap<String, Instant>,
    started: Instant,
    /// The persona whose lock this task holds.
    locked: Option<PersonaId>,
}

impl<'a> Task<'a> {
    fn new(ctx: &'a TaskContext, task: &'a Accepted) -> Self {
        Self {
            ctx,
            delivery: &task.delivery,
            msg: &task.msg,
            call: &task.call,
            terminated: &task.terminated,
            top_answered: false,
            answered: HashSet::new(),
            sub_started: HashMap::new(),
            started: Instant::now(),
            locked: None,
        }
    }

    fn full_persona(&self) -> Option<(&'a str, &'a std::collections::BTreeMap<Kind, uuid::Uuid>)> {
        match self.call {
            Ok(IngestCall::FullPersona {
                persona_id,
                job_ids,
                ..
            }) => Some((persona_id, job_ids)),
            _ => None,
        }
    }

    async fn serve(mut self) -> Served {
        let call = match self.call {
            Ok(call) => call,
            Err(e) => {
                let (exc_type, exc_module, message) = e.exception();
                tracing::warn!("answered {exc_type}: {message}");
                let state = TaskState::Failure {
                    exc_type: exc_type.into(),
                    exc_message: message,
                    exc_module: exc_module.into(),
                    traceback: None,
                };
                self.answer_top(state).await;
                self.acknowledge().await;
                return Served::Answered;
            }
        };
        let (persona_id, jobs) = jobs_asked(call, &self.msg.id);
        let persona = PersonaId::parse(persona_id);
        // Both asked at once, one round trip: a revoked task gives its lock straight back.
        let locks = &self.ctx.locks;
        let lock = async {
            match &persona {
                Ok(persona) => Some(locks.try_acquire(persona.as_str()).await),
                Err(_) => None,
            }
        };
        let (revoked, locked) = tokio::join!(self.ctx.revocations.is_revoked(&self.msg.id), lock);
        if matches!(locked, Some(Ok(true))) {
            self.locked = persona.as_ref().ok().cloned();
        }
        match revoked {
            Ok(true) => {
                let state = TaskState::Revoked {
                    reason: "revoked".into(),
                };
                self.answer_unanswered(&state).await;
                self.answer_top(state).await;
                self.acknowledge().await;
                return Served::Answered;
            }
            Ok(false) => {}
            // Not knowing costs at most a run of a revoked task: Celery's own revokes are
            // best effort too.
            Err(e) => tracing::warn!("could not read the revoked tasks: {e}"),
        }
        // Revoked first, as Celery's worker checks before the task runs and fails.
        let persona = match persona {
            Ok(persona) => persona,
            Err(e) => {
                let state = exception("ValueError", e.to_string());
                self.answer_unanswered(&state).await;
                self.answer_top(state).await;
                self.acknowledge().await;
                return Served::Answered;
            }
        };
        if self.locked.is_none() {
            match &locked {
                Some(Err(e)) => tracing::warn!(%persona, "taking the persona's lock failed: {e}"),
                _ => tracing::warn!(%persona, "another worker is ingesting this persona: waiting"),
            }
            if !self.lock(&persona).await {
                return Served::Left;
            }
            self.locked = Some(persona.clone());
        }
        let served = self.run(&persona, jobs).await;
        // Where the message was left in flight or published again, the lock is still held.
        self.release().await;
        served
    }

    /// Gives the persona's lock back, if this task holds it.
    async fn release(&mut self) {
        if let Some(persona) = self.locked.take() {
            let locks = &self.ctx.locks;
            write_until_done("releasing a persona lock", || {
                locks.release(persona.as_str())
            })
            .await;
        }
    }

    /// Waits until this worker holds the persona's lock (its first try, which found it taken
    /// or failed, was made already); false if the worker began stopping.
    async fn lock(&self, persona: &PersonaId) -> bool {
        let mut stopping = self.ctx.stopping.clone();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let wait =
                jittered_backoff(Duration::from_millis(250), attempt, Duration::from_secs(5));
            if stopped_during(wait, &mut stopping).await {
                return false;
            }
            match self.ctx.locks.try_acquire(persona.as_str()).await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => tracing::warn!(%persona, "taking the persona's lock failed: {e}"),
            }
        }
    }

    /// One run of the task's jobs through the engine, each sub-task answered as its job goes.
    async fn run(&mut self, persona: &PersonaId, jobs: Vec<crate::jobs::JobRef>) -> Served {
        let msg = self.msg;
        let (tell, mut told) = mpsc::unbounded_channel();
        let request = RunTask {
            persona: persona.clone(),
            jobs,
            limits: RunLimits {
                soft: msg.soft_time_limit.map(Duration::from_secs_f64),
                hard: msg.time_limit.map(Duration::from_secs_f64),
            },
            retries: msg.retries,
            force: self.call.as_ref().is_ok_and(|call| call.force()),
            tell: Arc::new(move |event: TaskEvent| drop(tell.send(event))),
        };
        // The run is asked for as STARTED is stored, not after: the engine's first steps (its
        // rows read) and that round trip to Redis overlap. Its events wait in `told` until
        // STARTED is stored, so the task's results keep their order.
        let run = self.ctx.engine.send(request);
        self.answer(&msg.id, self.started_state()).await;
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                Some(event) = told.recv() => self.on_events(event, &mut told).await,
            }
        };
        // Told before the outcome was sent: all here.
        if let Ok(event) = told.try_recv() {
            self.on_events(event, &mut told).await;
        }
        if self.ctx.abandoning() {
            return Served::Left;
        }
        match outcome {
            Err(e) => {
                let state = exception("RuntimeError", format!("the engine is not running: {e}"));
                self.answer_unanswered(&state).await;
                self.answer_top(state).await;
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
            }) if !self.terminated.load(Ordering::SeqCst) => {
                self.retry(persona, after, retry, &outcome).await;
                Served::Retried
            }
            Ok(TaskOutcome::Retry { outcome, .. }) => {
                self.finish(&outcome).await;
                self.acknowledge().await;
                Served::Answered
            }
        }
    }

    /// Answers `first` and every event told since, in one round trip to the result backend:
    /// a run's start and its jobs' starts come together, and so do the ends of jobs with
    /// little to do.
    async fn on_events(&mut self, first: TaskEvent, told: &mut mpsc::UnboundedReceiver<TaskEvent>) {
        if self.ctx.abandoning() {
            return;
        }
        let mut answers = Vec::new();
        let mut event = Some(first);
        while let Some(next) = event.take().or_else(|| told.try_recv().ok()) {
            let answer = match next {
                TaskEvent::Begun if self.ctx.answers == FullPersonaAnswers::Dispatched => {
                    self.dispatched().await
                }
                TaskEvent::Begun => None,
                TaskEvent::JobStarted { kind, .. } => self.sub_task_started(kind),
                TaskEvent::JobEnded(job) => self.sub_task_ended(&job),
            };
            answers.extend(answer);
        }
        self.answer_batch(answers).await;
    }

    /// RETRY stored, and the message published again with its countdown.
    async fn retry(
        &mut self,
        persona: &PersonaId,
        after: Duration,
        retry: u32,
        outcome: &RunOutcome,
    ) {
        let error = outcome.error.clone().unwrap_or_default();
        tracing::warn!(
            task_id = %self.msg.id, %persona, retry,
            "transient failure, running again in {after:?}: {error}"
        );
        crate::metrics::METRICS
            .retries
            .with_label_values(&["task"])
            .inc();
        if !self.top_answered {
            self.answer(&self.msg.id, retry_state(error)).await;
        }
        let eta = Utc::now() + chrono::Duration::from_std(after).unwrap_or_default();
        match retry_message(
            &self.delivery.raw,
            self.msg,
            routing_key(&self.delivery.queue),
            eta,
        ) {
            Ok(again) => {
                let (queue, worker) = (&self.ctx.queue, &self.ctx.worker_id);
                let republish = write_until_done("publishing a task's retry", || {
                    queue.republish(worker, self.delivery, &again)
                });
                tokio::join!(republish, self.release());
            }
            // It was read once: it cannot fail to parse now.
            Err(e) => {
                tracing::error!("the retry of task {} could not be made: {e}", self.msg.id);
                self.acknowledge().await;
            }
        }
    }

    /// Acknowledges the message and, at the same time (one round trip), gives back the
    /// persona's lock: the run is over and recorded.
    async fn acknowledge(&mut self) {
        let (queue, worker) = (&self.ctx.queue, &self.ctx.worker_id);
        let ack = write_until_done("acknowledging a message", || {
            queue.ack(worker, self.delivery)
        });
        let locked = self.locked.take();
        let locks = &self.ctx.locks;
        let release = async {
            if let Some(persona) = &locked {
                write_until_done("releasing a persona lock", || {
                    locks.release(persona.as_str())
                })
                .await
            }
        };
        tokio::join!(ack, release);
    }
}

/// The queue a delivery's priority list belongs to.
fn routing_key(list: &str) -> &str {
    list.split('\x06').next().unwrap_or(list)
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

mod answers;
mod states;

pub use states::{exception, received_fields, subtask_id};
use states::{jobs_asked, retry_state};
