//! The read queries over persona and job rows: what `status`, the API and the dashboard show.

use entities::{ingestion_job, persona};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use uuid::Uuid;

use crate::{JobStatus, Kind};

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
pub async fn jobs_of_persona<C: ConnectionTrait>(
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

/// The jobs whose results go under these Celery task ids (a one-kind task's own id, or an
/// `ingest_full_persona` sub-task's), oldest first.
pub async fn jobs_of_tasks<C: ConnectionTrait>(
    db: &C,
    task_ids: &[String],
) -> Result<Vec<ingestion_job::Model>, DbErr> {
    ingestion_job::Entity::find()
        .filter(ingestion_job::Column::TaskId.is_in(task_ids.iter().cloned()))
        .order_by_asc(ingestion_job::Column::CreatedAt)
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
