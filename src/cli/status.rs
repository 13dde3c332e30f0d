//! `persona-ingest status`: personas and their jobs as tables, or one job in full; and what the
//! workers are doing, as Redis knows it (queue lengths, workers with their leases and in-flight
//! tasks, dead letters) when Redis can be reached.

use std::time::Duration;

use clap::Args;
use entities::ingestion_job;
use uuid::Uuid;

use crate::config::Settings;
use crate::jobs;
use crate::trigger::broker::{Broker, BrokerOverview};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A persona id or a job id; everything when left out.
    #[arg(value_name = "PERSONA|JOB_ID")]
    pub what: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &StatusArgs, settings: Settings) -> anyhow::Result<i32> {
    let db = crate::db::connect(&settings.database).await?;
    match args.what.as_deref() {
        None => {
            let personas = jobs::personas(&db).await?;
            let latest = jobs::latest_jobs(&db).await?;
            let broker = broker_overview(&settings).await;
            if args.json {
                let broker = match &broker {
                    Ok(overview) => serde_json::to_value(overview)?,
                    Err(e) => serde_json::json!({ "error": e }),
                };
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "personas": personas,
                        "latest_jobs": latest,
                        "broker": broker,
                    }))?
                );
                return Ok(0);
            }
            print_broker(&broker);
            if personas.is_empty() {
                println!("no persona yet: try `persona-ingest ingest --data-root examples twain-sampler`");
                return Ok(0);
            }
            let mut table = super::table(&["persona", "status", "updated", "error"]);
            for p in &personas {
                table.add_row(vec![
                    p.id.clone(),
                    p.status.to_string(),
                    p.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    p.error_message.clone().unwrap_or_default(),
                ]);
            }
            println!("{table}\n\nlatest job of each kind:");
            println!("{}", jobs_table(&latest));
            Ok(0)
        }
        Some(what) => {
            if let Ok(id) = Uuid::parse_str(what) {
                let Some(job) = jobs::job_by_id(&db, id).await? else {
                    eprintln!("error: no job {id}");
                    return Ok(1);
                };
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&job)?);
                } else {
                    print_job(&job);
                }
                return Ok(0);
            }
            let Some(persona) = jobs::persona(&db, what).await? else {
                eprintln!("error: no persona or job {what:?} in the database");
                return Ok(1);
            };
            let jobs = jobs::jobs_of_persona(&db, what).await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "persona": persona, "jobs": jobs })
                    )?
                );
                return Ok(0);
            }
            println!(
                "{} ({}): {}{}",
                persona.id,
                persona.name,
                persona.status,
                persona
                    .error_message
                    .map(|e| format!(" — {e}"))
                    .unwrap_or_default()
            );
            println!("{}", jobs_table(&jobs));
            Ok(0)
        }
    }
}

/// What Redis says of the served queues and the workers; an error says why it could not tell.
async fn broker_overview(settings: &Settings) -> Result<BrokerOverview, String> {
    let redis = crate::urls::redact(&settings.redis.url);
    let look = async {
        let broker = Broker::connect(
            &settings.redis.url,
            &settings.redis.key_prefix,
            &settings.worker.queues,
        )
        .await?;
        broker.overview(&settings.worker.queues).await
    };
    match tokio::time::timeout(Duration::from_secs(3), look).await {
        Ok(Ok(overview)) => Ok(overview),
        Ok(Err(e)) => Err(format!("redis {redis}: {e}")),
        Err(_) => Err(format!("redis {redis}: no answer within 3 s")),
    }
}

fn print_broker(broker: &Result<BrokerOverview, String>) {
    let overview = match broker {
        Ok(overview) => overview,
        Err(e) => {
            println!("workers: unknown ({e})\n");
            return;
        }
    };
    let queues: Vec<String> = overview
        .queues
        .iter()
        .map(|q| format!("{} {} waiting", q.queue, q.waiting))
        .collect();
    println!(
        "queues: {}; dead letters: {}",
        queues.join(", "),
        overview.dead_letters
    );
    if overview.workers.is_empty() {
        println!("no worker has served these queues\n");
        return;
    }
    let mut table = super::table(&["worker", "lease", "in flight"]);
    for worker in &overview.workers {
        let lease = match worker.lease_left_ms {
            Some(ms) => format!("{:.1} s left", ms as f64 / 1000.0),
            None => "lapsed: its messages will be requeued".into(),
        };
        let tasks: Vec<String> = worker
            .in_flight
            .iter()
            .map(|m| match (&m.task, &m.eta) {
                (None, _) => format!("(undecodable, {} bytes)", m.bytes),
                (Some(task), None) => {
                    format!("{task} {}", m.task_id.as_deref().unwrap_or(""))
                }
                (Some(task), Some(eta)) => format!(
                    "{task} {} (held until {eta})",
                    m.task_id.as_deref().unwrap_or("")
                ),
            })
            .collect();
        table.add_row(vec![worker.worker.clone(), lease, tasks.join("\n")]);
    }
    println!("{table}\n");
}

fn jobs_table(jobs: &[ingestion_job::Model]) -> comfy_table::Table {
    let mut table = super::table(&[
        "job", "persona", "kind", "status", "progress", "vectors", "attempts", "created", "note",
    ]);
    for j in jobs {
        table.add_row(vec![
            j.id.to_string(),
            j.persona_id.clone(),
            j.kind.to_string(),
            j.status.to_string(),
            format!("{}%", j.progress),
            j.total_vectors.to_string(),
            j.attempts.to_string(),
            j.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            j.error_message
                .clone()
                .or_else(|| j.warning_message.clone())
                .unwrap_or_default(),
        ]);
    }
    table
}

fn print_job(j: &ingestion_job::Model) {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
    };
    println!("job           {}", j.id);
    println!("persona       {}", j.persona_id);
    println!("kind          {}", j.kind);
    println!("status        {}", j.status);
    println!("progress      {}%", j.progress);
    println!("vectors       {}", j.total_vectors);
    println!("attempts      {}", j.attempts);
    println!("task id       {}", j.task_id.as_deref().unwrap_or("-"));
    println!("created       {}", j.created_at.to_rfc3339());
    println!("started       {}", time(j.started_at));
    println!("completed     {}", time(j.completed_at));
    if let Some(e) = &j.error_message {
        println!("error         {e}");
    }
    if let Some(w) = &j.warning_message {
        println!("warning       {w}");
    }
}
