//! Applying status updates to the database: the updates waiting in the recorder's queue go in
//! one transaction (group commit), their writes as few statement strings as their reads allow,
//! and alone when that fails.
//!
//! Why together: SQLite has one writer, so every update of every run waits its turn, and each
//! statement is a hand-off to the driver's thread and back (about 0.1 ms under load, where
//! SQLite's own work is a few microseconds). A run of three jobs makes eight updates; applied
//! one by one they capped `persona-ingest run` at the rate of that one queue, and with one
//! statement each in a shared transaction, still at half a no-op Celery worker's. Now a batch
//! costs BEGIN, the reads of the runs it starts (two queries for any number of them), one
//! string of every transition, one of the manifest changes, and COMMIT.
//!
//! Why that is safe: every transition says how many rows it changes when it applies (a refused
//! one changes none and writes nothing, see [`crate::jobs`]); a batch whose transitions changed
//! fewer rows is rolled back and its updates applied one at a time, as is a batch that met any
//! other error, each riding out an unavailable database, so one bad update fails alone.

use std::time::Duration;

use uuid::Uuid;

use super::open_runs::Doomed;
use super::{JobEvent, Recorded, StatusUpdate};
use crate::db::JobsWriter;
use crate::jobs::{self, RunsWrites, TransitionError};
use crate::manifest;
use crate::retry::{retry, Backoff, Budget, Verdict};
use crate::{JobStatus, Kind, PersonaId};

/// What applying an update did: the event it makes for live views, and what it found.
pub(super) type Applied = Result<(Option<JobEvent>, Recorded), TransitionError>;

/// What a batch's progress writes came to, and whether the batch shared one transaction.
#[derive(Debug, Default)]
pub(super) struct ProgressWritten {
    /// The batch's writes were more than one and went in one transaction.
    pub together: bool,
    /// Rows whose progress changed.
    pub written: u64,
    /// Values not written because the database was unavailable: kept for the next flush.
    pub unwritten: Vec<(Uuid, u8)>,
}

/// Applies `updates` in order, then writes `progress`; answers each update's result in order.
/// Together in one transaction when there is more than one thing to write, riding out an
/// unavailable database as one update alone would; one at a time when that transaction fails
/// for any other reason, or when an update belongs to a doomed run (see [`Doomed`]).
/// `answered[i]` is the run `updates[i]` was answered early for: if its write fails, that run
/// is doomed, as is the run of any start that fails.
pub(super) async fn apply_batch(
    db: &JobsWriter,
    updates: Vec<StatusUpdate>,
    answered: Vec<Option<PersonaId>>,
    progress: Vec<(Uuid, u8)>,
    ride_out: Duration,
    mut doomed: Doomed,
) -> (Vec<Applied>, ProgressWritten, Doomed) {
    let clean = updates.iter().all(|update| doomed.of(update).is_none());
    if clean && updates.len() + usize::from(!progress.is_empty()) > 1 {
        let batch = || together(db, &updates, &progress);
        match retry(&backoff(ride_out), "database", unavailable, tell, batch).await {
            Ok((results, written)) => {
                for update in &updates {
                    if let StatusUpdate::BeginRun { persona, .. } = update {
                        doomed.forget(persona);
                    }
                }
                return (results, written, doomed);
            }
            Err(gave_up) if matches!(gave_up.error, TransitionError::Unavailable(_)) => {
                for (update, run) in updates.iter().zip(&answered) {
                    doomed.doom(update, run.as_ref(), &gave_up.error);
                }
                let results = updates.iter().map(|_| Err(gave_up.error.clone()));
                let progress = ProgressWritten {
                    unwritten: progress,
                    ..ProgressWritten::default()
                };
                return (results.collect(), progress, doomed);
            }
            Err(gave_up) => tracing::debug!(
                "status updates applied one by one: together, {}",
                gave_up.error
            ),
        }
    }
    let mut results = Vec::with_capacity(updates.len());
    for (update, run) in updates.into_iter().zip(answered) {
        let result = match (&update, doomed.of(&update).cloned()) {
            (StatusUpdate::BeginRun { persona, .. }, _) => {
                doomed.forget(persona);
                apply_riding_out(db, update.clone(), ride_out).await
            }
            (StatusUpdate::FinishRun { persona, .. }, Some(doom)) => {
                doomed.forget(persona);
                // Its persona is not left ingesting, and says why the run failed.
                let end = StatusUpdate::FinishRun {
                    persona: persona.clone(),
                    error: Some(doom.to_string()),
                };
                let _ = apply_riding_out(db, end, ride_out).await;
                Err(doom)
            }
            // Not written: its run could not record an update it was told had been.
            (_, Some(doom)) => Err(doom),
            (_, None) => apply_riding_out(db, update.clone(), ride_out).await,
        };
        if let Err(e) = &result {
            doomed.doom(&update, run.as_ref(), e);
        }
        results.push(result);
    }
    (results, write_progress(db, progress).await, doomed)
}

/// A run's start read apart from the queue (its jobs' rows in one query, its manifests in
/// another), so that it can be answered before its write: what it would answer, and the status
/// each of its jobs has once it is written. A refusal, or any error, is left for its write to
/// find and answer.
pub(super) async fn read_start(
    db: &JobsWriter,
    persona: &PersonaId,
    run: &[jobs::JobRef],
) -> Result<(Recorded, Vec<(Uuid, JobStatus)>), TransitionError> {
    // The manifests of every kind of the run, read beside its jobs' rows rather than after
    // them: one trip to the database's thread of latency instead of two. Those of kinds that
    // completed before are dropped below.
    let every_kind: Vec<Kind> = run.iter().map(|job| job.kind).collect();
    let (existing, mut manifests) =
        tokio::try_join!(jobs::job_rows(db, run.iter().map(|j| j.id)), async {
            manifest::load(db, persona, &every_kind)
                .await
                .map_err(TransitionError::from)
        })?;
    // Decided as its write will decide, without building the statements.
    let completed_before = jobs::claim(persona, run, &existing)?.completed_before;
    let kinds: Vec<Kind> = jobs::still_to_run(run, &completed_before)
        .map(|job| job.kind)
        .collect();
    manifests.retain(|kind, _| kinds.contains(kind));
    let statuses = run
        .iter()
        .map(|job| {
            let row = existing.iter().find(|row| row.id == job.id);
            (job.id, row.map_or(JobStatus::Pending, |row| row.status))
        })
        .collect();
    let recorded = Recorded {
        completed_before,
        manifests,
    };
    Ok((recorded, statuses))
}

/// Waits for a database that went away: from a tenth of a second, doubling to 2 s, for at most
/// `ride_out` (a restart or a failover delays the updates, in order, instead of failing jobs).
fn backoff(ride_out: Duration) -> Backoff {
    Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(2),
        budget: Budget::For(ride_out),
    }
}

fn unavailable(e: &TransitionError) -> Verdict {
    match e {
        TransitionError::Unavailable(_) => Verdict::Retry { after: None },
        _ => Verdict::Abort,
    }
}

/// Said as before the retry was shared: "database unavailable (<why>); trying again in ...".
fn tell(e: &TransitionError, _: u32, wait: Duration) {
    if let TransitionError::Unavailable(why) = e {
        tracing::warn!("database unavailable ({why}); trying again in {wait:?}");
    }
}

fn started_event(job_id: Uuid) -> Option<JobEvent> {
    Some(JobEvent {
        job_id,
        status: JobStatus::Processing,
        progress: 0,
        total_vectors: 0,
        message: None,
    })
}

fn completed_event(job_id: Uuid, total_vectors: u64, warning: Option<String>) -> Option<JobEvent> {
    Some(JobEvent {
        job_id,
        status: JobStatus::Completed,
        progress: 100,
        total_vectors,
        message: warning,
    })
}

fn failed_event(job_id: Uuid, error: &str) -> Option<JobEvent> {
    Some(JobEvent {
        job_id,
        status: JobStatus::Failed,
        progress: 0,
        total_vectors: 0,
        message: Some(error.to_owned()),
    })
}

/// Progress alone, row by row; what the database could not take yet is answered back.
async fn write_progress(db: &JobsWriter, progress: Vec<(Uuid, u8)>) -> ProgressWritten {
    let mut done = ProgressWritten::default();
    let mut pending = progress.into_iter();
    while let Some((job_id, value)) = pending.next() {
        match jobs::job_progress(db, job_id, value).await {
            Ok(changed) => done.written += u64::from(changed),
            // Kept for the next flush; the others are not tried against a database that is not
            // there (each try would wait for a connection).
            Err(TransitionError::Unavailable(e)) => {
                tracing::warn!("progress not recorded yet: database unavailable ({e})");
                done.unwritten = std::iter::once((job_id, value)).chain(pending).collect();
                break;
            }
            Err(e) => tracing::warn!(%job_id, "progress not recorded: {e}"),
        }
    }
    done
}

/// Applies an update alone, riding out an unavailable database (see [`backoff`]).
async fn apply_riding_out(db: &JobsWriter, update: StatusUpdate, ride_out: Duration) -> Applied {
    retry(&backoff(ride_out), "database", unavailable, tell, || {
        apply_alone(db, update.clone())
    })
    .await
    .map_err(|gave_up| gave_up.error)
}

/// One update, in a transaction of its own when it writes more than one statement.
async fn apply_alone(db: &JobsWriter, update: StatusUpdate) -> Applied {
    let several = match &update {
        StatusUpdate::BeginRun { .. } => true,
        StatusUpdate::JobCompleted { manifest, .. } | StatusUpdate::JobFailed { manifest, .. } => {
            manifest.is_some()
        }
        _ => false,
    };
    if !several {
        return apply(db, update).await;
    }
    let txn = db.begin().await?;
    let applied = apply(&txn, update).await?;
    txn.commit().await?;
    Ok(applied)
}

/// Applies one update on `db`, which is a transaction wherever the update writes more than one
/// statement.
async fn apply<C: RunsWrites>(db: &C, update: StatusUpdate) -> Applied {
    Ok((
        match update {
            StatusUpdate::BeginRun { persona, jobs } => {
                let completed_before = jobs::begin_run(db, &persona, &jobs).await?;
                let kinds: Vec<Kind> = jobs::still_to_run(&jobs, &completed_before)
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
                started_event(job_id)
            }
            StatusUpdate::JobProgress { .. } => unreachable!("coalesced in the handler"),
            StatusUpdate::JobCompleted {
                job_id,
                total_vectors,
                warning,
                counts,
                manifest,
            } => {
                jobs::job_completed(db, job_id, total_vectors, warning.clone(), counts).await?;
                if let Some(change) = manifest {
                    change.apply(db).await?;
                }
                completed_event(job_id, total_vectors, warning)
            }
            StatusUpdate::JobFailed {
                job_id,
                error,
                vectors_present,
                manifest,
            } => {
                jobs::job_failed(db, job_id, &error, vectors_present).await?;
                if let Some(change) = manifest {
                    change.apply(db).await?;
                }
                failed_event(job_id, &error)
            }
            StatusUpdate::FinishRun { persona, error } => {
                jobs::finish_run(db, &persona, error).await?;
                None
            }
        },
        Recorded::default(),
    ))
}

mod together;
use together::together;
