//! `persona-ingest enqueue`: does what the web app does, from the command line: creates the
//! job rows (pending) and sends `workers.tasks.ingest_full_persona` (or one kind's task) to the
//! first of `worker.queues`, then prints the task id for `status` or `AsyncResult`.

use clap::Args;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::config::Settings;
use crate::jobs::{self, JobRef};
use crate::trigger::celery::{encode, TaskNames};
use crate::trigger::consumer::hostname;
use crate::{Kind, PersonaId};

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The persona to ingest.
    pub persona: String,
    /// One kind only (its own task); every kind by default (`ingest_full_persona`).
    #[arg(long, value_parser = super::parse_kind)]
    pub kind: Option<Kind>,
}

pub async fn run(args: &EnqueueArgs, settings: Settings) -> anyhow::Result<i32> {
    let persona = match PersonaId::parse(&args.persona) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let task_id = Uuid::new_v4().to_string();
    let names = TaskNames::default();
    let kinds: Vec<Kind> = args.kind.map_or_else(|| Kind::ALL.to_vec(), |k| vec![k]);
    let jobs: Vec<JobRef> = kinds
        .iter()
        .map(|kind| JobRef {
            id: Uuid::new_v4(),
            kind: *kind,
            task_id: None,
        })
        .collect();
    let db = crate::db::connect(&settings.database).await?;
    jobs::create_pending(&db, &persona, &jobs).await?;
    let (task, kwargs) = match args.kind {
        None => {
            let job_ids: Map<String, Value> = jobs
                .iter()
                .map(|j| (j.kind.to_string(), json!(j.id)))
                .collect();
            (
                names.full_persona.clone(),
                json!({ "persona_id": persona, "job_ids": job_ids }),
            )
        }
        Some(kind) => {
            let task = names
                .one_kind
                .iter()
                .find(|(_, k)| **k == kind)
                .map(|(name, _)| name.clone())
                .expect("every kind has a task");
            (task, json!({ "persona_id": persona, "job_id": jobs[0].id }))
        }
    };
    let queue = settings
        .worker
        .queues
        .first()
        .cloned()
        .unwrap_or_else(|| "celery".into());
    let Value::Object(kwargs) = kwargs else {
        unreachable!("built as an object")
    };
    let origin = format!("{}@{}", std::process::id(), hostname());
    let message = encode(&task, &task_id, &[], &kwargs, &queue, &origin);
    let mut con = redis::Client::open(settings.redis.url.as_str())?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| anyhow::anyhow!("redis {}: {e}", crate::db::redact(&settings.redis.url)))?;
    redis::cmd("LPUSH")
        .arg(&queue)
        .arg(message)
        .query_async::<()>(&mut con)
        .await?;
    println!("{task_id}");
    for job in &jobs {
        eprintln!("  {} job {}", job.kind, job.id);
    }
    Ok(0)
}
