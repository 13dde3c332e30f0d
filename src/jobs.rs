//! Persona and job rows: the lifecycle transitions, applied only by the StatusRecorder (a run's
//! start is in `begin`, the rows the web app makes before it sends a task in `create`, the read
//! queries in `queries`). A transition that would move a status backwards is refused, except a
//! job start marked as a rerun (an explicit retry, or a task delivered again). Each transition's
//! statement is built by a function of its own (`started`, `completed`, ...), which the
//! recorder's batches write together (see [`Writes`]) and the function beside it runs alone,
//! saying why when it is refused.

use chrono::{DateTime, Utc};
use entities::{ingestion_job, persona};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryTrait, Statement,
};
use serde::Serialize;
use uuid::Uuid;

use crate::counts::JobCounts;
use crate::{JobStatus, Kind, PersonaId, PersonaStatus};

/// A job a run is to carry out: its id may come from the caller (the web app made the row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobRef {
    pub id: Uuid,
    pub kind: Kind,
    pub task_id: Option<String>,
}

/// Runs `statement`, a transition of job `id`; when it changes no row, the transition was
/// refused: `why` of the status the job has (`NoJob` when there is no such job).
async fn transition<C: ConnectionTrait>(
    db: &C,
    statement: Statement,
    id: Uuid,
    why: impl FnOnce(JobStatus) -> String,
) -> Result<(), TransitionError> {
    if db.execute(statement).await?.rows_affected() > 0 {
        return Ok(());
    }
    // Read only to say why.
    Err(match ingestion_job::Entity::find_by_id(id).one(db).await {
        Ok(Some(row)) => TransitionError::Refused(why(row.status)),
        Ok(None) => TransitionError::NoJob(id),
        Err(e) => e.into(),
    })
}

/// Sets the columns of what a job did (all 0 when it starts).
fn with_counts(
    update: sea_orm::UpdateMany<ingestion_job::Entity>,
    counts: JobCounts,
) -> sea_orm::UpdateMany<ingestion_job::Entity> {
    use ingestion_job::Column as C;
    let as_i64 = |n: u64| Expr::value(i64::try_from(n).unwrap_or(i64::MAX));
    update
        .col_expr(C::FilesRead, as_i64(counts.files_read))
        .col_expr(C::FilesSkipped, as_i64(counts.files_skipped))
        .col_expr(C::ChunksEmbedded, as_i64(counts.chunks_embedded))
        .col_expr(C::ChunksUnchanged, as_i64(counts.chunks_unchanged))
        .col_expr(C::ChunksDeleted, as_i64(counts.chunks_deleted))
        .col_expr(C::TokensEmbedded, as_i64(counts.tokens_embedded))
}

/// `pending → processing`; with `rerun`, from any status (an explicit retry, a redelivery).
pub async fn job_started<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    rerun: bool,
) -> Result<(), TransitionError> {
    let statement = started(db.get_database_backend(), &[id], rerun);
    transition(db, statement, id, |status| {
        format!("job {id} is {status}; only a pending job starts (or an explicit retry)")
    })
    .await
}

/// The write of [`job_started`], for any number of jobs: changes one row per job when it
/// applies.
pub fn started(backend: DbBackend, ids: &[Uuid], rerun: bool) -> Statement {
    let mut update = with_counts(ingestion_job::Entity::update_many(), JobCounts::default())
        .col_expr(
            ingestion_job::Column::Status,
            Expr::value(JobStatus::Processing),
        )
        .col_expr(ingestion_job::Column::Progress, Expr::value(0))
        .col_expr(ingestion_job::Column::TotalVectors, Expr::value(0i64))
        .col_expr(
            ingestion_job::Column::ErrorMessage,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            ingestion_job::Column::WarningMessage,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            ingestion_job::Column::Attempts,
            Expr::col(ingestion_job::Column::Attempts).add(1),
        )
        .col_expr(
            ingestion_job::Column::StartedAt,
            Expr::value(Some(Utc::now())),
        )
        .col_expr(
            ingestion_job::Column::CompletedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(ingestion_job::Column::Id.is_in(ids.iter().copied()));
    if !rerun {
        update = update.filter(ingestion_job::Column::Status.eq(JobStatus::Pending));
    }
    update.build(backend)
}

/// Raises a processing job's progress (capped at 99: 100 means completed). Lower values and
/// jobs no longer processing are left alone; returns whether anything changed.
pub async fn job_progress<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    progress: u8,
) -> Result<bool, TransitionError> {
    let statement = progressed(db.get_database_backend(), id, progress);
    Ok(db.execute(statement).await?.rows_affected() > 0)
}

/// The write of [`job_progress`]: changes the row, or nothing.
pub fn progressed(backend: DbBackend, id: Uuid, progress: u8) -> Statement {
    let progress = i32::from(progress.min(99));
    ingestion_job::Entity::update_many()
        .col_expr(ingestion_job::Column::Progress, progress.into())
        .filter(ingestion_job::Column::Id.eq(id))
        .filter(ingestion_job::Column::Status.eq(JobStatus::Processing))
        .filter(ingestion_job::Column::Progress.lt(progress))
        .build(backend)
}

/// `processing → completed`, progress 100.
pub async fn job_completed<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    total_vectors: u64,
    warning: Option<String>,
    counts: JobCounts,
) -> Result<(), TransitionError> {
    let statement = completed(
        db.get_database_backend(),
        id,
        total_vectors,
        warning,
        counts,
    );
    transition(db, statement, id, |status| {
        format!("job {id} is {status}; only a processing job completes")
    })
    .await
}

/// The write of [`job_completed`]: changes one row when it applies.
pub fn completed(
    backend: DbBackend,
    id: Uuid,
    total_vectors: u64,
    warning: Option<String>,
    counts: JobCounts,
) -> Statement {
    with_counts(ingestion_job::Entity::update_many(), counts)
        .col_expr(
            ingestion_job::Column::Status,
            Expr::value(JobStatus::Completed),
        )
        .col_expr(ingestion_job::Column::Progress, Expr::value(100))
        .col_expr(
            ingestion_job::Column::TotalVectors,
            Expr::value(total_vectors as i64),
        )
        .col_expr(ingestion_job::Column::WarningMessage, Expr::value(warning))
        .col_expr(
            ingestion_job::Column::CompletedAt,
            Expr::value(Some(Utc::now())),
        )
        .filter(ingestion_job::Column::Id.eq(id))
        .filter(ingestion_job::Column::Status.eq(JobStatus::Processing))
        .build(backend)
}

/// `pending | processing → failed`. A completed job stays completed. With `vectors_present`,
/// `total_vectors` says what the store holds of the job's kind after the failure.
pub async fn job_failed<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    error: &str,
    vectors_present: Option<u64>,
) -> Result<(), TransitionError> {
    let statement = failed(db.get_database_backend(), id, error, vectors_present);
    transition(db, statement, id, |status| {
        format!("job {id} is already {status}; not marking it failed ({error})")
    })
    .await
}

/// The write of [`job_failed`]: changes one row when it applies.
pub fn failed(
    backend: DbBackend,
    id: Uuid,
    error: &str,
    vectors_present: Option<u64>,
) -> Statement {
    let mut update = ingestion_job::Entity::update_many();
    if let Some(present) = vectors_present {
        update = update.col_expr(
            ingestion_job::Column::TotalVectors,
            Expr::value(present as i64),
        );
    }
    update
        .col_expr(
            ingestion_job::Column::Status,
            Expr::value(JobStatus::Failed),
        )
        .col_expr(
            ingestion_job::Column::ErrorMessage,
            Expr::value(Some(error.to_owned())),
        )
        .col_expr(
            ingestion_job::Column::CompletedAt,
            Expr::value(Some(Utc::now())),
        )
        .filter(ingestion_job::Column::Id.eq(id))
        .filter(ingestion_job::Column::Status.is_in([JobStatus::Pending, JobStatus::Processing]))
        .build(backend)
}

/// Fails the persona's jobs that a `persona-ingest ingest` left processing when it stopped
/// (killed, or its machine gone): rows without a task id (the daemon's always have one), found
/// processing by the next `ingest` once it holds the persona's run lock. Answers how many.
pub async fn fail_abandoned<C: ConnectionTrait>(
    db: &C,
    persona_id: &PersonaId,
) -> Result<u64, TransitionError> {
    let updated = ingestion_job::Entity::update_many()
        .col_expr(
            ingestion_job::Column::Status,
            Expr::value(JobStatus::Failed),
        )
        .col_expr(
            ingestion_job::Column::ErrorMessage,
            Expr::value(Some(
                "interrupted: the persona-ingest ingest running it stopped before it ended"
                    .to_owned(),
            )),
        )
        .col_expr(
            ingestion_job::Column::CompletedAt,
            Expr::value(Some(Utc::now())),
        )
        .filter(ingestion_job::Column::PersonaId.eq(persona_id.as_str()))
        .filter(ingestion_job::Column::Status.eq(JobStatus::Processing))
        .filter(ingestion_job::Column::TaskId.is_null())
        .exec(db)
        .await?;
    Ok(updated.rows_affected)
}

/// `ingesting → active` without an error, `→ failed` with it.
pub async fn finish_run<C: ConnectionTrait>(
    db: &C,
    persona_id: &PersonaId,
    error: Option<String>,
) -> Result<PersonaStatus, TransitionError> {
    let status = finished_status(&error);
    let statement = finished(db.get_database_backend(), persona_id, error);
    if db.execute(statement).await?.rows_affected() == 0 {
        // Read only to say why.
        let row = persona::Entity::find_by_id(persona_id.as_str())
            .one(db)
            .await?
            .ok_or_else(|| TransitionError::NoPersona(persona_id.to_string()))?;
        return Err(TransitionError::Refused(format!(
            "persona {persona_id} is {}; only an ingesting persona finishes a run",
            row.status
        )));
    }
    Ok(status)
}

fn finished_status(error: &Option<String>) -> PersonaStatus {
    if error.is_none() {
        PersonaStatus::Active
    } else {
        PersonaStatus::Failed
    }
}

/// The write of [`finish_run`]: changes one row when it applies.
pub fn finished(backend: DbBackend, persona_id: &PersonaId, error: Option<String>) -> Statement {
    persona::Entity::update_many()
        .col_expr(
            persona::Column::Status,
            Expr::value(finished_status(&error)),
        )
        .col_expr(persona::Column::ErrorMessage, Expr::value(error))
        .col_expr(persona::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(persona::Column::Id.eq(persona_id.as_str()))
        .filter(persona::Column::Status.eq(PersonaStatus::Ingesting))
        .build(backend)
}

mod begin;
mod create;
mod error;
mod queries;
mod writes;

pub use begin::{begin_run, begin_run_writes, claim, job_rows, still_to_run, Begun, Claim};
pub use create::create_pending;
pub use error::TransitionError;
pub use queries::*;
pub use writes::{RunsWrites, Writes};
