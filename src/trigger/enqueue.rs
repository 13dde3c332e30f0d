//! Asking for an ingestion the way the web app does: the job rows are created (pending, the
//! persona a draft if it is new), then `ingest_full_persona` (or one kind's task) is sent to the
//! first of `worker.queues` as Celery's client would send it. Used by `persona-ingest enqueue`
//! and by the HTTP API.

use redis::aio::ConnectionLike;
use sea_orm::DatabaseConnection;
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::celery::{encode, TaskNames};
use crate::config::Settings;
use crate::jobs::{self, JobRef};
use crate::naming::hostname;
use crate::{Kind, PersonaId};

/// What was sent: the Celery task id, and the job rows it will run.
#[derive(Clone, Debug, Serialize)]
pub struct Enqueued {
    pub task_id: String,
    pub queue: String,
    pub jobs: Vec<JobRef>,
}

/// Creates the job rows of `kinds` and sends the task (with `force=True` when `force`: every
/// file embedded again). The rows come first: a worker that takes the message at once finds
/// them.
pub async fn enqueue_ingestion<C: ConnectionLike>(
    db: &DatabaseConnection,
    redis: &mut C,
    settings: &Settings,
    persona: &PersonaId,
    kinds: &[Kind],
    force: bool,
) -> anyhow::Result<Enqueued> {
    let task_id = Uuid::new_v4().to_string();
    let names = TaskNames::from_settings(&settings.tasks);
    let jobs: Vec<JobRef> = kinds
        .iter()
        .map(|kind| JobRef {
            id: Uuid::new_v4(),
            kind: *kind,
            task_id: None,
        })
        .collect();
    jobs::create_pending(db, persona, &jobs).await?;
    let (task, kwargs) = match kinds {
        [kind] => (
            names.of_kind(*kind).to_owned(),
            json!({ "persona_id": persona, "job_id": jobs[0].id }),
        ),
        _ => {
            let job_ids: Map<String, Value> = jobs
                .iter()
                .map(|j| (j.kind.to_string(), json!(j.id)))
                .collect();
            (
                names.full_persona.clone(),
                json!({ "persona_id": persona, "job_ids": job_ids }),
            )
        }
    };
    let queue = settings
        .worker
        .queues
        .first()
        .cloned()
        .unwrap_or_else(|| "celery".into());
    let Value::Object(mut kwargs) = kwargs else {
        unreachable!("built as an object")
    };
    if force {
        kwargs.insert("force".into(), Value::Bool(true));
    }
    let origin = format!("{}@{}", std::process::id(), hostname());
    let message = encode(&task, &task_id, &[], &kwargs, &queue, &origin);
    redis::cmd("LPUSH")
        .arg(&queue)
        .arg(message)
        .query_async::<()>(redis)
        .await
        .map_err(|e| anyhow::anyhow!("redis {}: {e}", crate::urls::redact(&settings.redis.url)))?;
    Ok(Enqueued {
        task_id,
        queue,
        jobs,
    })
}
