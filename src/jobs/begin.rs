//! A run's start: the persona upserted as `ingesting`, its job rows made where missing or
//! retagged with their task, and the jobs its task completed before found (they are not run
//! again).

use chrono::Utc;
use entities::{ingestion_job, persona};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryTrait};
use uuid::Uuid;

use super::create::{new_job, new_persona};
use super::{JobRef, RunsWrites, TransitionError, Writes};
use crate::{JobStatus, PersonaId, PersonaStatus};

/// Creates the persona (as a draft) and the job rows that do not exist yet, and moves the
/// persona to `ingesting`. Answers the jobs this very task completed before, with their vector
/// counts: a job that names a task id and whose row is completed under that id. Such a run is
/// a redelivery (its worker died after some jobs ended) or a retry of the jobs that failed, and
/// those jobs are not run twice.
///
/// One read (the jobs, in one query) and then its writes ([`begin_run_writes`]), run together.
/// Run it in a transaction: the StatusRecorder does. Like every transition here, a refused one
/// writes nothing, so that it can share its transaction with others.
pub async fn begin_run<C: RunsWrites>(
    db: &C,
    persona_id: &PersonaId,
    jobs: &[JobRef],
) -> Result<Vec<(Uuid, u64)>, TransitionError> {
    let existing = job_rows(db, jobs.iter().map(|j| j.id)).await?;
    let mut writes = Writes::new();
    let begun = begin_run_writes(
        db.get_database_backend(),
        persona_id,
        jobs,
        &existing,
        &mut writes,
    )?;
    writes.run(db).await?;
    Ok(begun.completed_before)
}

/// The rows of the jobs `ids` that exist, in one query.
pub async fn job_rows<C: ConnectionTrait>(
    db: &C,
    ids: impl IntoIterator<Item = Uuid>,
) -> Result<Vec<ingestion_job::Model>, TransitionError> {
    Ok(ingestion_job::Entity::find()
        .filter(ingestion_job::Column::Id.is_in(ids))
        .all(db)
        .await?)
}

/// What [`begin_run_writes`] decided.
#[derive(Debug)]
pub struct Begun {
    /// The jobs its task completed before, with their vector counts.
    pub completed_before: Vec<(Uuid, u64)>,
    /// The rows its writes change when they apply: fewer means one was refused.
    pub rows: u64,
}

/// What a run's start finds in `existing` (the rows of `jobs` that exist, as [`job_rows`] reads
/// them), before anything is written: the jobs its task completed before (with their vector
/// counts), those whose task id changed, and those without a row. Refused when a job belongs to
/// another persona or kind.
pub struct Claim<'a> {
    pub completed_before: Vec<(Uuid, u64)>,
    retagged: Vec<(Uuid, Option<String>)>,
    missing: Vec<&'a JobRef>,
}

/// See [`Claim`]: the decision [`begin_run_writes`] writes, which a run's start read ahead of
/// its write answers from without building its statements.
pub fn claim<'a>(
    persona_id: &PersonaId,
    jobs: &'a [JobRef],
    existing: &[ingestion_job::Model],
) -> Result<Claim<'a>, TransitionError> {
    let mut claim = Claim {
        completed_before: Vec::new(),
        retagged: Vec::new(),
        missing: Vec::new(),
    };
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
                claim
                    .completed_before
                    .push((row.id, row.total_vectors.max(0) as u64));
            }
            Some(row) if job.task_id.is_some() && row.task_id != job.task_id => {
                claim.retagged.push((row.id, job.task_id.clone()));
            }
            Some(_) => {}
            None => claim.missing.push(job),
        }
    }
    Ok(claim)
}

/// The writes of [`begin_run`], decided from `existing` (see [`claim`]): the persona upserted
/// as `ingesting`, jobs whose task id changed retagged, the missing ones inserted in one
/// statement. Refused (nothing pushed) when a job belongs to another persona or kind.
pub fn begin_run_writes(
    backend: DbBackend,
    persona_id: &PersonaId,
    jobs: &[JobRef],
    existing: &[ingestion_job::Model],
    writes: &mut Writes,
) -> Result<Begun, TransitionError> {
    let Claim {
        completed_before,
        retagged,
        missing,
    } = claim(persona_id, jobs, existing)?;
    let now = Utc::now();
    let missing: Vec<_> = missing
        .into_iter()
        .map(|job| new_job(persona_id, job, now))
        .collect();
    let mut rows = 1;
    writes.push(
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
            .build(backend),
    );
    for (id, task_id) in retagged {
        rows += 1;
        writes.push(
            ingestion_job::Entity::update_many()
                .col_expr(ingestion_job::Column::TaskId, Expr::value(task_id))
                .filter(ingestion_job::Column::Id.eq(id))
                .build(backend),
        );
    }
    if !missing.is_empty() {
        rows += missing.len() as u64;
        writes.push(ingestion_job::Entity::insert_many(missing).build(backend));
    }
    Ok(Begun {
        completed_before,
        rows,
    })
}

/// The jobs of `jobs` that are not among `completed_before` (as [`begin_run`] answers it): those
/// the run carries out.
pub fn still_to_run<'a>(
    jobs: &'a [JobRef],
    completed_before: &'a [(Uuid, u64)],
) -> impl Iterator<Item = &'a JobRef> + 'a {
    jobs.iter()
        .filter(|job| !completed_before.iter().any(|(id, _)| *id == job.id))
}
