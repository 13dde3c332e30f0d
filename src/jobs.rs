//! Persona and job rows: the lifecycle transitions (applied only by the StatusRecorder) and
//! the read queries that `status` shows. A transition that would move a status backwards is
//! refused, except a job start marked as an explicit restart.

use chrono::{DateTime, Utc};
use entities::{ingestion_job, persona};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde::Serialize;
use uuid::Uuid;

use crate::manifest::JobCounts;
use crate::{JobStatus, Kind, PersonaId, PersonaStatus};

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransitionError {
    #[error("database: {0}")]
    Db(String),
    /// The database could not be reached (down, restarting, failing over): worth trying again.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("job {0} does not exist")]
    NoJob(Uuid),
    #[error("persona {0} does not exist")]
    NoPersona(String),
    #[error("refused: {0}")]
    Refused(String),
}

impl From<DbErr> for TransitionError {
    fn from(e: DbErr) -> Self {
        if is_unavailable(&e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Db(e.to_string())
        }
    }
}

/// Whether an error says the database was out of reach rather than that the statement failed:
/// no connection, a broken one, PostgreSQL shutting down or starting (SQLSTATE classes 08
/// and 57P), or an SQLite file another process is writing (SQLITE_BUSY and SQLITE_LOCKED with
/// their extended codes, such as 517, BUSY_SNAPSHOT: a read transaction that wants to write
/// after another process wrote, which no busy timeout waits out; only trying the whole
/// statement again does).
fn is_unavailable(e: &DbErr) -> bool {
    use sea_orm::sqlx;
    use sea_orm::RuntimeErr;
    let sqlx_error = match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    match sqlx_error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(_) if crate::db::is_sqlite_busy(e) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// A job a run is to carry out: its id may come from the caller (the web app made the row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobRef {
    pub id: Uuid,
    pub kind: Kind,
    pub task_id: Option<String>,
}

/// Creates the persona (as a draft) and the job rows that do not exist yet, and moves the
/// persona to `ingesting`. Answers the jobs this very task completed before, with their vector
/// counts: a job that names a task id and whose row is completed under that id. Such a run is
/// a redelivery (its worker died after some jobs ended) or a retry of the jobs that failed, and
/// those jobs are not run twice.
pub async fn begin_run<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    persona_id: &PersonaId,
    jobs: &[JobRef],
) -> Result<Vec<(Uuid, u64)>, TransitionError> {
    let mut completed = Vec::new();
    // A run's rows in one transaction of four statements whatever the number of jobs: the
    // persona upserted, the jobs read in one query, the missing ones inserted in one.
    let txn = db.begin().await?;
    let now = Utc::now();
    persona::Entity::insert(new_persona(persona_id, PersonaStatus::Ingesting, now))
        .on_conflict(
            OnConflict::column(persona::Column::Id)
                .update_columns([
                    persona::Column::Status,
                    persona::Column::ErrorMessage,
                    persona::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let existing = ingestion_job::Entity::find()
        .filter(ingestion_job::Column::Id.is_in(ids))
        .all(&txn)
        .await?;
    let mut missing = Vec::new();
    for job in jobs {
        match existing.iter().find(|row| row.id == job.id) {
            Some(row) if row.persona_id != persona_id.as_str() || row.kind != job.kind => {
                return Err(TransitionError::Refused(format!(
                    "job {} belongs to {} {}, not to {} {}",
                    job.id, row.persona_id, row.kind, persona_id, job.kind
                )));
            }
            Some(row)
                if job.task_id.is_some()
                    && row.task_id == job.task_id
                    && row.status == JobStatus::Completed =>
            {
                completed.push((row.id, row.total_vectors.max(0) as u64));
            }
            Some(row) if job.task_id.is_some() && row.task_id != job.task_id => {
                let mut row = row.clone().into_active_model();
                row.task_id = Set(job.task_id.clone());
                row.update(&txn).await?;
            }
            Some(_) => {}
            None => missing.push(new_job(persona_id, job, now)),
        }
    }
    if !missing.is_empty() {
        ingestion_job::Entity::insert_many(missing)
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(completed)
}

/// Creates the rows the web app creates before it enqueues: the persona (a draft) if missing,
/// and the jobs, pending. Nothing else changes.
pub async fn create_pending<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    persona_id: &PersonaId,
    jobs: &[JobRef],
) -> Result<(), TransitionError> {
    let txn = db.begin().await?;
    let now = Utc::now();
    if persona::Entity::find_by_id(persona_id.as_str())
        .one(&txn)
        .await?
        .is_none()
    {
        new_persona(persona_id, PersonaStatus::Draft, now)
            .insert(&txn)
            .await?;
    }
    for job in jobs {
        new_job(persona_id, job, now).insert(&txn).await?;
    }
    txn.commit().await?;
    Ok(())
}

/// A persona row seen for the first time: its name is its id until the web app says better.
fn new_persona(
    persona_id: &PersonaId,
    status: PersonaStatus,
    now: chrono::DateTime<Utc>,
) -> persona::ActiveModel {
    persona::ActiveModel {
        id: Set(persona_id.to_string()),
        name: Set(persona_id.to_string()),
        status: Set(status),
        error_message: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

fn new_job(
    persona_id: &PersonaId,
    job: &JobRef,
    now: chrono::DateTime<Utc>,
) -> ingestion_job::ActiveModel {
    ingestion_job::ActiveModel {
        id: Set(job.id),
        persona_id: Set(persona_id.to_string()),
        kind: Set(job.kind),
        status: Set(JobStatus::Pending),
        progress: Set(0),
        total_vectors: Set(0),
        error_message: Set(None),
        warning_message: Set(None),
        task_id: Set(job.task_id.clone()),
        attempts: Set(0),
        created_at: Set(now),
        started_at: Set(None),
        completed_at: Set(None),
        ..Default::default()
    }
}

async fn job<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
) -> Result<ingestion_job::Model, TransitionError> {
    ingestion_job::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(TransitionError::NoJob(id))
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

/// `pending → processing`; with `restart`, from any status (an explicit retry).
pub async fn job_started<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    restart: bool,
) -> Result<(), TransitionError> {
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
        .filter(ingestion_job::Column::Id.eq(id));
    if !restart {
        update = update.filter(ingestion_job::Column::Status.eq(JobStatus::Pending));
    }
    if update.exec(db).await?.rows_affected == 0 {
        let row = job(db, id).await?;
        return Err(TransitionError::Refused(format!(
            "job {id} is {}; only a pending job starts (or an explicit retry)",
            row.status
        )));
    }
    Ok(())
}

/// Raises a processing job's progress (capped at 99: 100 means completed). Lower values and
/// jobs no longer processing are left alone; returns whether anything changed.
pub async fn job_progress<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    progress: u8,
) -> Result<bool, TransitionError> {
    let progress = i32::from(progress.min(99));
    let result = ingestion_job::Entity::update_many()
        .col_expr(ingestion_job::Column::Progress, progress.into())
        .filter(ingestion_job::Column::Id.eq(id))
        .filter(ingestion_job::Column::Status.eq(JobStatus::Processing))
        .filter(ingestion_job::Column::Progress.lt(progress))
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}

/// `processing → completed`, progress 100.
pub async fn job_completed<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    total_vectors: u64,
    warning: Option<String>,
    counts: JobCounts,
) -> Result<(), TransitionError> {
    let updated = with_counts(ingestion_job::Entity::update_many(), counts)
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
        .exec(db)
        .await?;
    if updated.rows_affected == 0 {
        let row = job(db, id).await?;
        return Err(TransitionError::Refused(format!(
            "job {id} is {}; only a processing job completes",
            row.status
        )));
    }
    Ok(())
}

/// `pending | processing → failed`. A completed job stays completed. With `vectors_present`,
/// `total_vectors` says what the store holds of the job's kind after the failure.
pub async fn job_failed<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    error: &str,
    vectors_present: Option<u64>,
) -> Result<(), TransitionError> {
    let mut update = ingestion_job::Entity::update_many();
    if let Some(present) = vectors_present {
        update = update.col_expr(
            ingestion_job::Column::TotalVectors,
            Expr::value(present as i64),
        );
    }
    let updated = update
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
        .exec(db)
        .await?;
    if updated.rows_affected == 0 {
        let row = job(db, id).await?;
        return Err(TransitionError::Refused(format!(
            "job {id} is already {}; not marking it failed ({error})",
            row.status
        )));
    }
    Ok(())
}

/// `ingesting → active` without an error, `→ failed` with it.
pub async fn finish_run<C: ConnectionTrait>(
    db: &C,
    persona_id: &PersonaId,
    error: Option<String>,
) -> Result<PersonaStatus, TransitionError> {
    let status = if error.is_none() {
        PersonaStatus::Active
    } else {
        PersonaStatus::Failed
    };
    let updated = persona::Entity::update_many()
        .col_expr(persona::Column::Status, Expr::value(status))
        .col_expr(persona::Column::ErrorMessage, Expr::value(error))
        .col_expr(persona::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(persona::Column::Id.eq(persona_id.as_str()))
        .filter(persona::Column::Status.eq(PersonaStatus::Ingesting))
        .exec(db)
        .await?;
    if updated.rows_affected == 0 {
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

pub async fn personas<C: ConnectionTrait>(db: &C) -> Result<Vec<persona::Model>, DbErr> {
    persona::Entity::find()
        .order_by_asc(persona::Column::Id)
        .all(db)
        .await
}

pub async fn persona<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> Result<Option<persona::Model>, DbErr> {
    persona::Entity::find_by_id(id).one(db).await
}

/// A persona's jobs, newest first.
pub async fn jobs_of<C: ConnectionTrait>(
    db: &C,
    persona_id: &str,
) -> Result<Vec<ingestion_job::Model>, DbErr> {
    find_jobs(db, None, Some(persona_id), None).await
}

pub async fn job_by_id<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
) -> Result<Option<ingestion_job::Model>, DbErr> {
    ingestion_job::Entity::find_by_id(id).one(db).await
}

/// The rows of these jobs, those that exist.
pub async fn jobs_by_ids<C: ConnectionTrait>(
    db: &C,
    ids: &[Uuid],
) -> Result<Vec<ingestion_job::Model>, DbErr> {
    ingestion_job::Entity::find()
        .filter(ingestion_job::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await
}

/// The latest job of each kind of every persona, for the overview.
pub async fn latest_jobs<C: ConnectionTrait>(db: &C) -> Result<Vec<ingestion_job::Model>, DbErr> {
    let all = ingestion_job::Entity::find()
        .order_by_asc(ingestion_job::Column::PersonaId)
        .order_by_desc(ingestion_job::Column::CreatedAt)
        .all(db)
        .await?;
    let mut seen = std::collections::HashSet::new();
    Ok(all
        .into_iter()
        .filter(|j| seen.insert((j.persona_id.clone(), j.kind)))
        .collect())
}

/// Jobs, newest first, of one status and/or one persona, at most `limit` when given.
pub async fn find_jobs<C: ConnectionTrait>(
    db: &C,
    status: Option<JobStatus>,
    persona_id: Option<&str>,
    limit: Option<u64>,
) -> Result<Vec<ingestion_job::Model>, DbErr> {
    let mut query = ingestion_job::Entity::find();
    if let Some(status) = status {
        query = query.filter(ingestion_job::Column::Status.eq(status));
    }
    if let Some(persona_id) = persona_id {
        query = query.filter(ingestion_job::Column::PersonaId.eq(persona_id));
    }
    query
        .order_by_desc(ingestion_job::Column::CreatedAt)
        .order_by_asc(ingestion_job::Column::Kind)
        .limit(limit)
        .all(db)
        .await
}

/// How many jobs there are of each kind and status.
pub async fn job_counts<C: ConnectionTrait>(db: &C) -> Result<Vec<(Kind, JobStatus, i64)>, DbErr> {
    ingestion_job::Entity::find()
        .select_only()
        .column(ingestion_job::Column::Kind)
        .column(ingestion_job::Column::Status)
        .column_as(ingestion_job::Column::Id.count(), "jobs")
        .group_by(ingestion_job::Column::Kind)
        .group_by(ingestion_job::Column::Status)
        .into_tuple()
        .all(db)
        .await
}

/// The personas updated last, newest first.
pub async fn recent_personas<C: ConnectionTrait>(
    db: &C,
    limit: u64,
) -> Result<Vec<persona::Model>, DbErr> {
    persona::Entity::find()
        .order_by_desc(persona::Column::UpdatedAt)
        .limit(limit)
        .all(db)
        .await
}
