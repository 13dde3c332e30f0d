//! The rows the web app makes before it sends a task (`enqueue`, `POST .../ingest`): the
//! persona as a draft if it is new, and the job rows, pending; and the shape of a new persona
//! or job row, which `begin_run` makes too.

use chrono::Utc;
use entities::{ingestion_job, persona};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, Set, TransactionTrait};

use super::{JobRef, TransitionError};
use crate::{JobStatus, PersonaId, PersonaStatus};

/// Creates the rows the web app creates before it enqueues: the persona (a draft) if missing,
/// and the jobs, pending. Nothing else changes.
pub async fn create_pending<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    persona_id: &PersonaId,
    jobs: &[JobRef],
) -> Result<(), TransitionError> {
    // A SQLite transaction that reads and then writes is refused at once ("database is locked",
    // no busy timeout waits for it) when another writer committed meanwhile, as the daemon's
    // StatusRecorder does all the time: the whole transaction is tried again, as is one that
    // meets a database restarting.
    let backoff = crate::retry::Backoff {
        base: std::time::Duration::from_millis(20),
        cap: std::time::Duration::from_secs(1),
        budget: crate::retry::Budget::For(std::time::Duration::from_secs(30)),
    };
    let unavailable = |e: &TransitionError| match e {
        TransitionError::Unavailable(_) => crate::retry::Verdict::Retry { after: None },
        _ => crate::retry::Verdict::Abort,
    };
    crate::retry::retry(
        &backoff,
        "database",
        unavailable,
        |_, _, _| {},
        || create_pending_once(db, persona_id, jobs),
    )
    .await
    .map_err(|gave_up| gave_up.error)
}

async fn create_pending_once<C: ConnectionTrait + TransactionTrait>(
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
pub(super) fn new_persona(
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

pub(super) fn new_job(
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
