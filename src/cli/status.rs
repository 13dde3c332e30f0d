//! `persona-ingest status`: personas and their jobs as tables, or one job in full.

use clap::Args;
use entities::ingestion_job;
use uuid::Uuid;

use crate::config::Settings;
use crate::jobs;

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
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "personas": personas, "latest_jobs": latest })
                    )?
                );
                return Ok(0);
            }
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
            let jobs = jobs::jobs_of(&db, what).await?;
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
