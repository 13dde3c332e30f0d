//! The one message between a trigger and the engine: `RunTask`, a task's jobs of one persona,
//! told as it goes (`TaskEvent`: accepted, each job started and ended, through the task's
//! `tell`) and answered once at the end (`TaskOutcome`). What the engine decides here, a trigger does not: which jobs a task
//! delivered again already completed (they are not run twice; see `jobs::begin_run`), and
//! whether and when a task whose jobs failed only transiently is run again (the engine's
//! [`RetryPolicy`](crate::retry::RetryPolicy)). The Redis trigger and `persona-ingest ingest --retries` both ask this way.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::Supervisor;
use uuid::Uuid;

use crate::actors::orchestrator::{JobOutcome, JobWatch, RunEvent, RunOutcome, RunRequest};
use crate::jobs::JobRef;
use crate::{Kind, PersonaId};

/// Runs a task's jobs. Jobs carrying the task id they were completed under are not run again.
#[derive(Clone, Message)]
#[rtype(result = "TaskOutcome")]
pub struct RunTask {
    pub persona: PersonaId,
    /// One per kind; each names the task id its result goes under, if any.
    pub jobs: Vec<JobRef>,
    pub limits: RunLimits,
    /// Runs of this task before this one (Celery's `retries` header).
    pub retries: u32,
    /// Read and embed every file, changed or not (the task's `force` keyword).
    pub force: bool,
    /// Told what happens as it goes, before the task's outcome.
    pub tell: TaskTell,
}

/// Overrides of the configured time limits (a Celery message's own `timelimit`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunLimits {
    pub soft: Option<Duration>,
    pub hard: Option<Duration>,
}

/// A job of a task has ended; its row is recorded.
#[derive(Clone, Debug)]
pub struct JobEnded {
    pub outcome: JobOutcome,
    /// It failed transiently and the task has retries left: it will run again unless another
    /// job of the task fails for good.
    pub will_retry: bool,
}

/// What a task's run tells as it goes.
#[derive(Clone, Debug)]
pub enum TaskEvent {
    /// Accepted: the job rows exist and the persona is `ingesting`.
    Begun,
    JobStarted {
        job_id: Uuid,
        kind: Kind,
    },
    JobEnded(JobEnded),
}

/// Where a task's events go; called on an engine thread, so keep it short.
pub type TaskTell = Arc<dyn Fn(TaskEvent) + Send + Sync>;

/// How a task ended.
#[derive(Clone, Debug)]
pub enum TaskOutcome {
    /// For good: every job completed, or one failed in a way another run would not mend.
    Done(RunOutcome),
    /// Every failed job failed transiently: run the task again after `after` (its completed
    /// jobs will not run again).
    Retry {
        after: Duration,
        retry: u32,
        outcome: RunOutcome,
    },
}

impl TaskOutcome {
    pub fn run(&self) -> &RunOutcome {
        match self {
            Self::Done(outcome) | Self::Retry { outcome, .. } => outcome,
        }
    }
}

impl Handler<RunTask> for Supervisor {
    type Result = ResponseFuture<TaskOutcome>;

    fn handle(&mut self, task: RunTask, ctx: &mut Context<Self>) -> Self::Result {
        let retry = task.retries + 1;
        let next = self.retry.delay(retry);
        let tell = task.tell.clone();
        let may_retry = next.is_some();
        let watch = JobWatch::new(move |event: &RunEvent| {
            tell(match event {
                RunEvent::Begun => TaskEvent::Begun,
                RunEvent::JobStarted { job_id, kind } => TaskEvent::JobStarted {
                    job_id: *job_id,
                    kind: *kind,
                },
                RunEvent::JobEnded(outcome) => {
                    let transient = outcome.result.as_ref().err().is_some_and(|e| e.retryable());
                    TaskEvent::JobEnded(JobEnded {
                        outcome: outcome.clone(),
                        will_retry: may_retry && transient,
                    })
                }
            })
        });
        let request = RunRequest {
            persona: task.persona,
            jobs: task.jobs,
            // At least once: a task delivered again may find its jobs in any state.
            rerun: true,
            force: task.force,
            soft_time_limit: task.limits.soft,
            time_limit: task.limits.hard,
            watch,
        };
        let outcome = self.enqueue(request, ctx);
        Box::pin(async move {
            let outcome = outcome.await;
            match next {
                Some(after) if outcome.only_transient_failures() => TaskOutcome::Retry {
                    after,
                    retry,
                    outcome,
                },
                _ => TaskOutcome::Done(outcome),
            }
        })
    }
}
