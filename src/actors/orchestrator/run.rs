//! A persona run as the Supervisor is asked for it and as it ends: the request (which jobs, with
//! which limits) and the outcome (each job's result, the persona's final status and why).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::actors::ingestor::{JobError, JobStats};
use crate::jobs::JobRef;
use crate::{Kind, PersonaId, PersonaStatus};

/// A request to ingest some kinds of one persona.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunRequest {
    pub persona: PersonaId,
    /// The jobs to run, one per kind, in any order.
    pub jobs: Vec<JobRef>,
    /// Job rows may be in any state: this is an explicit retry, or a task delivered again. Jobs
    /// that name a task id and were completed under it are not run again (see
    /// [`crate::jobs::begin_run`]).
    pub rerun: bool,
    /// Read and embed every file, changed or not (`--force`, `{"force": true}`, a task's
    /// `force` keyword); otherwise only what changed since the last run is.
    pub force: bool,
    /// Overrides of the configured limits (a Celery message's own `timelimit`).
    pub soft_time_limit: Option<Duration>,
    pub time_limit: Option<Duration>,
    /// Told of each job that ran as soon as it ends, before the run is over.
    #[serde(skip)]
    pub watch: JobWatch,
}

/// What a run tells its watcher as it goes, before its outcome.
#[derive(Clone, Debug)]
pub enum RunEvent {
    /// The run is accepted: its job rows exist and the persona is `ingesting`.
    Begun,
    /// A job's ingestor started.
    JobStarted { job_id: Uuid, kind: Kind },
    /// A job ended (or was found completed before); its row is recorded.
    JobEnded(JobOutcome),
}

/// Where a run tells what happens as it goes (the trigger answers a Celery sub-task as its job
/// starts and ends, and the seed's `ingest_full_persona` once the run is accepted).
#[derive(Clone, Default)]
pub struct JobWatch(Option<Tell>);

/// A watcher's callback.
type Tell = Arc<dyn Fn(&RunEvent) + Send + Sync>;

impl JobWatch {
    /// Calls `tell` with each event, on the Orchestrator's thread: keep it short.
    pub fn new(tell: impl Fn(&RunEvent) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(tell)))
    }

    /// Sends each ended job's outcome into a channel.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<JobOutcome>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let watch = Self::new(move |event| {
            if let RunEvent::JobEnded(outcome) = event {
                // A watcher that is gone no longer cares.
                let _ = tx.send(outcome.clone());
            }
        });
        (watch, rx)
    }

    pub fn tell(&self, event: &RunEvent) {
        if let Some(tell) = &self.0 {
            tell(event);
        }
    }
}

impl std::fmt::Debug for JobWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "JobWatch(watched)"
        } else {
            "JobWatch(none)"
        })
    }
}

/// Watching is not part of what a request asks for.
impl PartialEq for JobWatch {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for JobWatch {}

impl RunRequest {
    /// A run of `kinds` with new job ids.
    pub fn new(persona: PersonaId, kinds: &[Kind]) -> Self {
        let mut kinds = kinds.to_vec();
        kinds.sort_by_key(|k| Kind::ALL.iter().position(|x| x == k));
        kinds.dedup();
        Self {
            persona,
            jobs: kinds
                .into_iter()
                .map(|kind| JobRef {
                    id: Uuid::new_v4(),
                    kind,
                    task_id: None,
                })
                .collect(),
            rerun: false,
            force: false,
            soft_time_limit: None,
            time_limit: None,
            watch: JobWatch::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct JobOutcome {
    pub job_id: Uuid,
    pub kind: Kind,
    pub collection: String,
    pub result: Result<JobStats, JobError>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunOutcome {
    pub persona: PersonaId,
    pub status: PersonaStatus,
    pub jobs: Vec<JobOutcome>,
    /// Why the run failed as a whole, when it did.
    pub error: Option<String>,
    #[serde(skip)]
    pub elapsed: Duration,
}

impl RunOutcome {
    /// The outcome of a run that never started (or vanished): failed with `error`, no job.
    pub fn not_run(persona: PersonaId, error: String) -> Self {
        Self {
            persona,
            status: PersonaStatus::Failed,
            jobs: Vec::new(),
            error: Some(error),
            elapsed: Duration::ZERO,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.status == PersonaStatus::Active
    }
}

impl RunOutcome {
    /// Whether every failed job failed only for a while (see [`JobError::retryable`]), so that
    /// running them again later may succeed.
    pub fn only_transient_failures(&self) -> bool {
        let mut failed = self.jobs.iter().filter_map(|j| j.result.as_ref().err());
        let mut any = false;
        let all = failed.all(|e| {
            any = true;
            e.retryable()
        });
        any && all
    }

    /// The jobs that failed.
    pub fn failed_jobs(&self) -> impl Iterator<Item = &JobOutcome> {
        self.jobs.iter().filter(|j| j.result.is_err())
    }
}

/// Why a run failed: the failed kinds with their reasons, or that nothing at all was ingested.
pub(super) fn run_error(jobs: &[JobOutcome]) -> Option<String> {
    let failed: Vec<String> = jobs
        .iter()
        .filter_map(|j| j.result.as_ref().err().map(|e| format!("{} ({e})", j.kind)))
        .collect();
    if !failed.is_empty() {
        return Some(format!("failed: {}", failed.join("; ")));
    }
    nothing_ingested(jobs).then(|| {
        format!(
            "nothing was ingested: every file found was empty ({})",
            warnings(jobs)
        )
    })
}

fn nothing_ingested(jobs: &[JobOutcome]) -> bool {
    jobs.iter()
        .all(|j| j.result.as_ref().is_ok_and(|s| s.vectors == 0))
}

fn warnings(jobs: &[JobOutcome]) -> String {
    jobs.iter()
        .filter_map(|j| j.result.as_ref().ok()?.warning.clone())
        .collect::<Vec<_>>()
        .join("; ")
}
