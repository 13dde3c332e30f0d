//! Answering a run's start and its jobs' starts before they are written, and what happens when
//! a write so answered fails.
//!
//! Why: every update of a run waited for its batch to be written before its sender went on, so
//! a run of three jobs waited for four batches in a row (its start, its jobs' starts, the last
//! job's end, its own end), and a no-op Celery worker served twice the messages a second. A
//! run's start and its jobs' starts need not wait: the updates are written in the order they
//! arrive, and while a run is open this module knows, from the rows its start read, the status
//! each of its jobs will have when its next update is written. A start that status accepts (the
//! same conditions as the transitions' statements in `crate::jobs`) is answered at once and
//! written in its turn. A job's end and the run's end still wait for their writes: what
//! answers them (a sub-task's SUCCESS or FAILURE, the task's) must never be seen before the row
//! that says the same.
//!
//! When such a write fails after all (the database went away for longer than the recorder waits
//! for it; another process changed a row meanwhile), the run is *doomed*: its later updates are
//! not written, and its end is recorded failed with that error and answered with it, so the task
//! that waits for the run's end learns of it and nothing says the run went well.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::apply::Applied;
use super::StatusUpdate;
use crate::jobs::TransitionError;
use crate::{JobStatus, PersonaId};

/// Whom to tell how an update was applied.
pub(super) enum Reply {
    /// Its sender waits for the write.
    Waiting(oneshot::Sender<Applied>),
    /// Answered before the write, as an update of the open run of this persona.
    Answered(PersonaId),
    /// A run's start: answered by its early read or its write, whichever comes first.
    First(Arc<Mutex<Start>>),
}

/// A run's start read apart from the queue: who waits for its answer until the read or the
/// write gives it.
#[derive(Debug, Default)]
pub(super) struct Start {
    pub answer: Option<oneshot::Sender<Applied>>,
    /// The read came back, answering or (on an error) leaving the answer to the write.
    pub read_ended: bool,
}

impl Reply {
    pub fn answered_for(&self) -> Option<PersonaId> {
        match self {
            Reply::Answered(persona) => Some(persona.clone()),
            _ => None,
        }
    }

    /// Whether someone waits for this update's write: its sender, or a run's start whose early
    /// read ended without answering it.
    pub fn waits(&self) -> bool {
        match self {
            Reply::Waiting(_) => true,
            Reply::Answered(_) => false,
            Reply::First(start) => {
                let start = start.lock().unwrap();
                start.answer.is_some() && start.read_ended
            }
        }
    }

    pub fn send(self, result: Applied) {
        // A sender that stopped waiting no longer cares.
        match self {
            Reply::Waiting(answer) => drop(answer.send(result)),
            Reply::Answered(_) => {}
            Reply::First(start) => {
                if let Some(answer) = start.lock().unwrap().answer.take() {
                    let _ = answer.send(result);
                }
            }
        }
    }
}

/// The runs whose start was answered early and whose end has not arrived: for each job, its
/// status once every update that arrived for it is written.
#[derive(Default)]
pub(super) struct OpenRuns {
    jobs: HashMap<Uuid, (PersonaId, JobStatus)>,
}

impl OpenRuns {
    /// A run's start was read: `statuses` are its jobs' as its start leaves them (a missing row
    /// is inserted pending). Replaces what an earlier run of the persona left.
    pub fn open(&mut self, persona: &PersonaId, statuses: Vec<(Uuid, JobStatus)>) {
        self.close(persona);
        for (job_id, status) in statuses {
            self.jobs.insert(job_id, (persona.clone(), status));
        }
    }

    pub fn close(&mut self, persona: &PersonaId) {
        self.jobs.retain(|_, (owner, _)| owner != persona);
    }

    /// Whether `update`, a job's start, is sure to apply once the updates that arrived before it
    /// have: then the run it belongs to is answered, and the job's status moves on. `None` for an
    /// update that must wait for its write (its status refuses it, it belongs to no open run, or
    /// it ends a job or a run).
    pub fn admit(&mut self, update: &StatusUpdate) -> Option<PersonaId> {
        match update {
            StatusUpdate::JobStarted { job_id, rerun } => {
                let (persona, status) = self.jobs.get_mut(job_id)?;
                if !*rerun && *status != JobStatus::Pending {
                    return None;
                }
                *status = JobStatus::Processing;
                Some(persona.clone())
            }
            // Answered once written; the job's status is no longer followed.
            StatusUpdate::JobCompleted { job_id, .. } | StatusUpdate::JobFailed { job_id, .. } => {
                self.jobs.remove(job_id);
                None
            }
            StatusUpdate::BeginRun { .. }
            | StatusUpdate::JobProgress { .. }
            | StatusUpdate::FinishRun { .. } => None,
        }
    }
}

/// The runs one of whose writes failed after it was answered, with that error and their jobs.
#[derive(Clone, Debug, Default)]
pub(super) struct Doomed {
    runs: HashMap<PersonaId, (HashSet<Uuid>, TransitionError)>,
}

impl Doomed {
    /// The run `update` belongs to is doomed: why (a run's start begins a new run, never doomed).
    pub fn of(&self, update: &StatusUpdate) -> Option<&TransitionError> {
        match update {
            StatusUpdate::BeginRun { .. } | StatusUpdate::JobProgress { .. } => None,
            StatusUpdate::FinishRun { persona, .. } => self.runs.get(persona).map(|(_, e)| e),
            StatusUpdate::JobStarted { job_id, .. }
            | StatusUpdate::JobCompleted { job_id, .. }
            | StatusUpdate::JobFailed { job_id, .. } => self
                .runs
                .values()
                .find(|(jobs, _)| jobs.contains(job_id))
                .map(|(_, e)| e),
        }
    }

    /// `update` failed with `error` after it was answered (or, for a run's start, whenever it
    /// fails: its run must not go on writing to jobs it could not claim). `run` is the persona
    /// an early answer was given for.
    pub fn doom(
        &mut self,
        update: &StatusUpdate,
        run: Option<&PersonaId>,
        error: &TransitionError,
    ) {
        let (persona, jobs): (&PersonaId, HashSet<Uuid>) = match (update, run) {
            (StatusUpdate::BeginRun { persona, jobs }, _) => {
                (persona, jobs.iter().map(|j| j.id).collect())
            }
            (_, Some(persona)) => (persona, HashSet::new()),
            _ => return,
        };
        let why = match update {
            StatusUpdate::BeginRun { .. } => format!("the run's start was not recorded: {error}"),
            _ => format!("an update of the run answered before its write failed: {error}"),
        };
        let error = match error {
            TransitionError::Unavailable(_) => TransitionError::Unavailable(why),
            _ => TransitionError::Refused(why),
        };
        let (known, _) = self
            .runs
            .entry(persona.clone())
            .or_insert_with(|| (HashSet::new(), error));
        known.extend(jobs);
        if let StatusUpdate::JobStarted { job_id, .. }
        | StatusUpdate::JobCompleted { job_id, .. }
        | StatusUpdate::JobFailed { job_id, .. } = update
        {
            known.insert(*job_id);
        }
    }

    /// A run of `persona` begins or ended: what doomed the one before is forgotten.
    pub fn forget(&mut self, persona: &PersonaId) -> Option<TransitionError> {
        self.runs.remove(persona).map(|(_, e)| e)
    }
}

/// The personas and jobs whose rows `update` reads or writes.
pub(super) fn touched(update: &StatusUpdate) -> (Vec<&PersonaId>, Vec<Uuid>) {
    match update {
        StatusUpdate::BeginRun { persona, jobs } => {
            (vec![persona], jobs.iter().map(|j| j.id).collect())
        }
        StatusUpdate::JobStarted { job_id, .. } | StatusUpdate::JobProgress { job_id, .. } => {
            (Vec::new(), vec![*job_id])
        }
        StatusUpdate::JobCompleted {
            job_id, manifest, ..
        }
        | StatusUpdate::JobFailed {
            job_id, manifest, ..
        } => (
            manifest.iter().map(|change| change.persona()).collect(),
            vec![*job_id],
        ),
        StatusUpdate::FinishRun { persona, .. } => (vec![persona], Vec::new()),
    }
}
