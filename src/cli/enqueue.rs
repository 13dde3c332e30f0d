//! `persona-ingest enqueue`: does what the web app does, from the command line: creates the
//! job rows (pending) and sends `workers.tasks.ingest_full_persona` (or one kind's task) to the
//! first of `worker.queues`, then prints the task id for `status` or `AsyncResult`.

use clap::Args;

use crate::config::Settings;
use crate::trigger::enqueue::enqueue_ingestion;
use crate::{Kind, PersonaId};

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The persona to ingest.
    pub persona: String,
    /// One kind only (its own task); every kind by default (`ingest_full_persona`).
    #[arg(long, value_parser = super::parse_kind)]
    pub kind: Option<Kind>,
    /// Embed every file again, changed or not (the task's `force=True`).
    #[arg(long)]
    pub force: bool,
}

pub async fn run(args: &EnqueueArgs, settings: Settings) -> anyhow::Result<i32> {
    let persona = match PersonaId::parse(&args.persona) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let kinds: Vec<Kind> = args.kind.map_or_else(|| Kind::ALL.to_vec(), |k| vec![k]);
    let db = crate::db::connect(&settings.database).await?;
    let mut redis = crate::urls::redis::client(&settings.redis.url)
        .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| anyhow::anyhow!("redis {}: {e}", crate::urls::redact(&settings.redis.url)))?;
    let sent = enqueue_ingestion(&db, &mut redis, &settings, &persona, &kinds, args.force).await?;
    println!("{}", sent.task_id);
    for job in &sent.jobs {
        eprintln!("  {} job {}", job.kind, job.id);
    }
    Ok(0)
}
