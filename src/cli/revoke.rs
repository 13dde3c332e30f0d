//! `persona-ingest revoke TASK_ID... [--terminate]`: Celery's `revoke`, broadcast to every worker
//! on the broker (this engine's daemons and Celery workers alike): a task not yet run never
//! runs and ends REVOKED; with `--terminate`, a running ingestion stops within seconds (its jobs
//! failed "revoked"). Prints each worker's reply.

use std::time::Duration;

use clap::Args;

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Task ids (an `ingest_full_persona` id or one of its sub-task ids).
    #[arg(required = true, value_name = "TASK_ID")]
    pub task_ids: Vec<String>,
    /// Also stop the ingestion if it is running.
    #[arg(long)]
    pub terminate: bool,
    /// Seconds to wait for the workers' replies.
    #[arg(long, default_value_t = 1.0)]
    pub timeout: f64,
}

pub async fn run(args: &RevokeArgs, settings: Settings) -> anyhow::Result<i32> {
    let client = crate::urls::redis::client(&settings.redis.url)
        .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
    let replies = crate::trigger::control::revoke(
        &client,
        &args.task_ids,
        args.terminate,
        Duration::from_secs_f64(args.timeout.max(0.0)),
    )
    .await
    .map_err(|e| anyhow::anyhow!("redis {}: {e}", crate::urls::redact(&settings.redis.url)))?;
    if replies.is_empty() {
        eprintln!(
            "no worker replied within {} s (the revoke is kept for workers that start later)",
            args.timeout
        );
    }
    for reply in replies {
        if let Some(reply) = reply.as_object() {
            for (node, said) in reply {
                let said = said.get("ok").or_else(|| said.get("error")).unwrap_or(said);
                println!(
                    "{node}: {}",
                    said.as_str()
                        .map_or_else(|| said.to_string(), str::to_owned)
                );
            }
        }
    }
    Ok(0)
}
