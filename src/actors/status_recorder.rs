//! StatusRecorder: the only writer to the jobs database. Updates are applied one at a time in
//! arrival order (so SQLite never sees two writers), progress updates are coalesced and
//! flushed on a timer, and every applied change is published as a [`JobEvent`] for live views.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use sea_orm::{DatabaseConnection, TransactionTrait};
use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::Observe;
use crate::counts::JobCounts;
use crate::jobs::{self, JobRef, TransitionError};
use crate::manifest::{self, KindManifest, ManifestChange};
use crate::retry::{retry, Backoff, Budget, Verdict};
use crate::{JobStatus, Kind, PersonaId, PersonaStatus};

/// How often coalesced progress reaches the database.
pub const PROGRESS_FLUSH_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum StatusUpdate {
    /// Creates missing rows; the persona becomes `ingesting`.
    BeginRun {
        persona: PersonaId,
        jobs: Vec<JobRef>,
    },
    JobStarted {
        job_id: Uuid,
        rerun: bool,
    },
    /// Coalesced: only the latest value per job is written, on the next flush.
    JobProgress {
        job_id: Uuid,
        progress: u8,
    },
    JobCompleted {
        job_id: Uuid,
        total_vectors: u64,
        warning: Option<String>,
        counts: JobCounts,
        /// The kind's manifest as the job left it, written in the same transaction.
        manifest: Option<ManifestChange>,
    },
    JobFailed {
        job_id: Uuid,
        error: String,
        /// The records of the job's kind the store holds after the failure, when known: the
        /// row's `total_vectors` then says what the collection holds, not 0.
        vectors_present: Option<u64>,
        /// The files whose rows to forget, in the same transaction; `None` leaves the kind's
        /// rows unsettled (what the job wrote is not known).
        manifest: Option<ManifestChange>,
    },
    /// The persona becomes `active`, or `failed` with the run's error.
    FinishRun {
        persona: PersonaId,
        error: Option<String>,
    },
}

/// A status update to apply; answered once it is in the database.
#[derive(Clone, Debug, PartialEq, Message, Serialize)]
#[rtype(result = "Result<Recorded, TransitionError>")]
pub struct RecordStatus(pub StatusUpdate);

/// What applying an update found out. Only `BeginRun` finds anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The jobs of the run that its task completed before (job id, vectors): see
    /// [`jobs::begin_run`].
    pub completed_before: Vec<(Uuid, u64)>,
    /// The manifest of each kind the run is to carry out, as it was before (now unsettled).
    pub manifests: BTreeMap<Kind, KindManifest>,
}

/// Writes the coalesced progress now; answered once written.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushProgress;

/// A change of a job as applied, for progress bars and dashboards.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobEvent {
    pub job_id: Uuid,
    pub status: JobStatus,
    pub progress: u8,
    pub total_vectors: u64,
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecorderCounters {
    pub applied: u64,
    pub refused: u64,
    pub failed_writes: u64,
    pub progress_received: u64,
    pub progress_written: u64,
}

pub struct StatusRecorder {
    db: DatabaseConnection,
    events: broadcast::Sender<JobEvent>,
    pending_progress: BTreeMap<Uuid, u8>,
    flush_every: Duration,
    /// How long an update waits for an unavailable database before it fails.
    ride_out: Duration,
    /// Set when a flush found the database unavailable.
    flush_paused_until: Option<Instant>,
    counters: RecorderCounters,
}

/// How long progress flushes pause after one found the database unavailable.
const FLUSH_PAUSE: Duration = Duration::from_secs(5);

/// How long updates wait for a database that went away: long enough for a restart or a
/// failover, short enough that a database gone for good fails the jobs.
pub const DATABASE_RIDE_OUT: Duration = Duration::from_secs(60);

impl StatusRecorder {
    pub fn new(db: DatabaseConnection, events: broadcast::Sender<JobEvent>) -> Self {
        Self {
            db,
            events,
            pending_progress: BTreeMap::new(),
            flush_every: PROGRESS_FLUSH_EVERY,
            ride_out: DATABASE_RIDE_OUT,
            flush_paused_until: None,
            counters: RecorderCounters::default(),
        }
    }

    fn publish(&self, event: JobEvent) {
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }

    fn flush(&mut self) -> AtomicResponse<Self, ()> {
        // Progress can wait; while the database is away, the timer's flushes (which come before
        // the mailbox) must not keep the job updates waiting behind them.
        if self
            .flush_paused_until
            .is_some_and(|until| Instant::now() < until)
        {
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        let pending = std::mem::take(&mut self.pending_progress);
        let db = self.db.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let mut written = 0;
                let mut pending = pending.into_iter();
                while let Some((job_id, progress)) = pending.next() {
                    match jobs::job_progress(&db, job_id, progress).await {
                        Ok(true) => written += 1,
                        Ok(false) => {}
                        // Kept for the next flush; the others are not tried against a database
                        // that is not there (each try would wait for a connection).
                        Err(TransitionError::Unavailable(e)) => {
                            tracing::warn!("progress not recorded yet: database unavailable ({e})");
                            let unwritten = std::iter::once((job_id, progress)).chain(pending);
                            return (written, unwritten.collect());
                        }
                        Err(e) => tracing::warn!(%job_id, "progress not recorded: {e}"),
                    }
                }
                (written, Vec::new())
            }
            .into_actor(self)
            .map(|(written, unwritten): (u64, Vec<(Uuid, u8)>), act, _| {
                act.counters.progress_written += written;
                if !unwritten.is_empty() {
                    act.flush_paused_until = Some(Instant::now() + FLUSH_PAUSE);
                }
                for (job_id, progress) in unwritten {
                    // Unless a newer value or the job's end came meanwhile.
                    act.pending_progress.entry(job_id).or_insert(progress);
                }
            }),
        ))
    }
}

impl Actor for StatusRecorder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.flush_every, |_, ctx| ctx.notify(FlushProgress));
    }
}

impl Handler<FlushProgress> for StatusRecorder {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: FlushProgress, _: &mut Context<Self>) -> Self::Result {
        self.flush()
    }
}

impl Handler<RecordStatus> for StatusRecorder {
    type Result = AtomicResponse<Self, Result<Recorded, TransitionError>>;

    fn handle(
        &mut self,
        RecordStatus(update): RecordStatus,
        _: &mut Context<Self>,
    ) -> Self::Result {
        if let StatusUpdate::JobProgress { job_id, progress } = update {
            self.counters.progress_received += 1;
            let progress = progress.min(99);
            let slot = self.pending_progress.entry(job_id).or_insert(progress);
            *slot = (*slot).max(progress);
            self.publish(JobEvent {
                job_id,
                status: JobStatus::Processing,
                progress,
                total_vectors: 0,
                message: None,
            });
            return AtomicResponse::new(Box::pin(fut::ready(Ok(Recorded::default()))));
        }
        // A job's final state supersedes its unwritten progress.
        if let StatusUpdate::JobCompleted { job_id, .. } | StatusUpdate::JobFailed { job_id, .. } =
            &update
        {
            self.pending_progress.remove(job_id);
        }
        let db = self.db.clone();
        let applied = update.clone();
        let ride_out = self.ride_out;
        AtomicResponse::new(Box::pin(
            async move { apply_riding_out(&db, update, ride_out).await }
                .into_actor(self)
                .map(move |result, act, _| {
                    match &result {
                        Ok((event, _)) => {
                            act.counters.applied += 1;
                            if let Some(event) = event.clone() {
                                act.publish(event);
                            }
                        }
                        Err(TransitionError::Refused(why)) => {
                            act.counters.refused += 1;
                            tracing::warn!("status update {applied:?} refused: {why}");
                        }
                        Err(e) => {
                            act.counters.failed_writes += 1;
                            tracing::error!("status update {applied:?} not written: {e}");
                        }
                    }
                    result.map(|(_, recorded)| recorded)
                }),
        ))
    }
}

/// Applies an update, trying again with backoff while the database is unavailable, for at most
/// `ride_out`: a database restart or failover delays the updates (in order) instead of failing
/// the jobs.
async fn apply_riding_out(
    db: &DatabaseConnection,
    update: StatusUpdate,
    ride_out: Duration,
) -> Result<(Option<JobEvent>, Recorded), TransitionError> {
    let backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(2),
        budget: Budget::For(ride_out),
    };
    let unavailable = |e: &TransitionError| match e {
        TransitionError::Unavailable(_) => Verdict::Retry { after: None },
        _ => Verdict::Abort,
    };
    // Said as before the retry was shared: "database unavailable (<why>); trying again in ...".
    let tell = |e: &TransitionError, _, wait| {
        if let TransitionError::Unavailable(why) = e {
            tracing::warn!("database unavailable ({why}); trying again in {wait:?}");
        }
    };
    retry(&backoff, "database", unavailable, tell, || {
        apply(db, update.clone())
    })
    .await
    .map_err(|gave_up| gave_up.error)
}

async fn apply(
    db: &DatabaseConnection,
    update: StatusUpdate,
) -> Result<(Option<JobEvent>, Recorded), TransitionError> {
    let event = |job_id, status, progress, total_vectors, message| {
        Some(JobEvent {
            job_id,
            status,
            progress,
            total_vectors,
            message,
        })
    };
    Ok((
        match update {
            StatusUpdate::BeginRun { persona, jobs } => {
                let completed_before = jobs::begin_run(db, &persona, &jobs).await?;
                let kinds: Vec<Kind> = jobs
                    .iter()
                    .filter(|job| !completed_before.iter().any(|(id, _)| *id == job.id))
                    .map(|job| job.kind)
                    .collect();
                let manifests = manifest::load(db, &persona, &kinds).await?;
                if !manifests.is_empty() {
                    manifest::unsettle(db, &persona, &kinds).await?;
                }
                return Ok((
                    None,
                    Recorded {
                        completed_before,
                        manifests,
                    },
                ));
            }
            StatusUpdate::JobStarted { job_id, rerun } => {
                jobs::job_started(db, job_id, rerun).await?;
                event(job_id, JobStatus::Processing, 0, 0, None)
            }
            StatusUpdate::JobProgress { .. } => unreachable!("coalesced in the handler"),
            StatusUpdate::JobCompleted {
                job_id,
                total_vectors,
                warning,
                counts,
                manifest,
            } => {
                match manifest {
                    Some(change) => {
                        let txn = db.begin().await?;
                        jobs::job_completed(&txn, job_id, total_vectors, warning.clone(), counts)
                            .await?;
                        change.apply(&txn).await?;
                        txn.commit().await?;
                    }
                    None => {
                        jobs::job_completed(db, job_id, total_vectors, warning.clone(), counts)
                            .await?
                    }
                }
                event(job_id, JobStatus::Completed, 100, total_vectors, warning)
            }
            StatusUpdate::JobFailed {
                job_id,
                error,
                vectors_present,
                manifest,
            } => {
                match manifest {
                    Some(change) => {
                        let txn = db.begin().await?;
                        jobs::job_failed(&txn, job_id, &error, vectors_present).await?;
                        change.apply(&txn).await?;
                        txn.commit().await?;
                    }
                    None => jobs::job_failed(db, job_id, &error, vectors_present).await?,
                }
                event(job_id, JobStatus::Failed, 0, 0, Some(error))
            }
            StatusUpdate::FinishRun { persona, error } => {
                let status = jobs::finish_run(db, &persona, error).await?;
                debug_assert!(matches!(
                    status,
                    PersonaStatus::Active | PersonaStatus::Failed
                ));
                None
            }
        },
        Recorded::default(),
    ))
}

impl Handler<Observe<RecorderCounters>> for StatusRecorder {
    type Result = MessageResult<Observe<RecorderCounters>>;

    fn handle(&mut self, _: Observe<RecorderCounters>, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.clone())
    }
}

#[cfg(test)]
mod tests;
