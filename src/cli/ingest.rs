//! `persona-ingest ingest`: runs whole persona ingestions in this process, through the one
//! Supervisor, with a live progress bar per job and a summary table (or JSON) at the end.

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use uuid::Uuid;

use super::progress::ProgressBars;
use crate::actors::orchestrator::{RunOutcome, RunRequest};
use crate::config::Settings;
use crate::counts::JobCounts;
use crate::pipeline::Engine;
use crate::sources::DataRoot;
use crate::{JobStatus, Kind, PersonaId};

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Persona ids (slugs such as mark-twain), as folder names under the data root.
    #[arg(value_name = "PERSONA")]
    pub personas: Vec<String>,
    /// Every persona found under the data root.
    #[arg(long, conflicts_with = "personas")]
    pub all: bool,
    /// Only these kinds (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = super::parse_kind, value_name = "KINDS", default_value = "works,quotes,profile")]
    pub only: Vec<Kind>,
    /// Print the summary as JSON on stdout instead of a table (no progress bars).
    #[arg(long)]
    pub json: bool,
    /// Run jobs that failed only transiently (the embedding provider or the vector store still
    /// unavailable after their own retries) again, up to N times, waiting `worker.retry_delay`
    /// seconds doubled each time, as the daemon retries its tasks. Sets `worker.max_retries`.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub retries: u32,
    /// Do not wait for a persona another process is ingesting: exit 3 naming it.
    #[arg(long)]
    pub no_wait: bool,
    /// Read and embed every file, changed or not (by default only what changed since the last
    /// run is embedded and written: see `ingestion_manifest`).
    #[arg(long)]
    pub force: bool,
    /// Print what a run would do (files to read, chunks and tokens to embed, records to delete,
    /// the cost at `embedding.price_per_million_tokens`) and stop: no provider call, no write.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Serialize)]
struct Summary {
    succeeded: bool,
    elapsed_secs: f64,
    /// Peak resident memory of this process.
    peak_rss_bytes: Option<u64>,
    personas: Vec<PersonaSummary>,
}

#[derive(Serialize)]
struct PersonaSummary {
    persona: String,
    status: String,
    error: Option<String>,
    elapsed_secs: f64,
    jobs: Vec<JobSummary>,
}

#[derive(Serialize)]
struct JobSummary {
    job_id: Uuid,
    kind: Kind,
    collection: String,
    status: JobStatus,
    vectors: u64,
    chunks: u64,
    bytes: u64,
    elapsed_secs: f64,
    chunks_per_sec: f64,
    /// Files read and skipped, chunks embedded, unchanged and deleted, tokens embedded.
    #[serde(flatten)]
    counts: JobCounts,
    warning: Option<String>,
    error: Option<String>,
}

pub async fn run(args: &IngestArgs, mut settings: Settings) -> anyhow::Result<i32> {
    settings.worker.max_retries = args.retries;
    let personas = match personas_of(args, &settings) {
        Ok(personas) => personas,
        Err(code) => return Ok(code),
    };
    if args.dry_run {
        return super::plan::run(&personas, &args.only, args.force, args.json, settings).await;
    }

    let engine = Engine::start(settings).await?;
    let interrupt = super::interrupt::Interrupt::watch(engine.supervisor.clone())?;
    let requests: Vec<RunRequest> = personas
        .iter()
        .map(|p| RunRequest {
            force: args.force,
            ..RunRequest::new(p.clone(), &args.only)
        })
        .collect();
    let bars = (!args.json).then(|| ProgressBars::new(&requests));
    let listener = bars.as_ref().map(|bars| bars.follow(engine.subscribe()));

    let started = std::time::Instant::now();
    let holder = format!(
        "ingest:{}:{}:{}",
        crate::naming::hostname(),
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    );
    if args.no_wait {
        for request in &requests {
            if let Some(other) =
                crate::run_lock::try_acquire(&engine.db, &request.persona, &holder).await?
            {
                eprintln!(
                    "error: {} is being ingested by {other}; not waiting (--no-wait)",
                    request.persona
                );
                for request in &requests {
                    let _ = crate::run_lock::release(&engine.db, &request.persona, &holder).await;
                }
                return Ok(3);
            }
        }
    }
    let outcomes = futures::future::join_all(
        requests
            .into_iter()
            .map(|r| locked_run(&engine, r, &holder)),
    )
    .await;
    engine.shutdown().await;
    if let Some(listener) = listener {
        listener.abort();
    }
    if let Some(bars) = &bars {
        bars.finish(&outcomes);
    }
    let outcomes: Vec<RunOutcome> = outcomes.into_iter().collect::<anyhow::Result<_>>()?;
    let summary = summarise(&outcomes, started.elapsed());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(match (interrupt.caught(), summary.succeeded) {
        (Some(_), _) => 130,
        (None, true) => 0,
        (None, false) => 1,
    })
}

/// Runs `request` holding its persona's run lock (waiting for another process's run of it to
/// end, then taking it), renewed while the run lives and freed at its end.
pub(super) async fn locked_run(
    engine: &Engine,
    request: RunRequest,
    holder: &str,
) -> anyhow::Result<RunOutcome> {
    let persona = request.persona.clone();
    let mut told = false;
    while let Some(other) = crate::run_lock::try_acquire(&engine.db, &persona, holder).await? {
        if crate::run_lock::holder_is_gone(&other) {
            eprintln!(
                "{persona} was being ingested by {other}, whose process is gone: taking over"
            );
            crate::run_lock::release(&engine.db, &persona, &other).await?;
            continue;
        }
        if !told {
            eprintln!("{persona} is being ingested by {other}: waiting for it to end");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Holding the lock, no other `ingest` runs this persona: rows one left processing are its
    // dead run's.
    let abandoned = crate::jobs::fail_abandoned(&engine.db, &persona).await?;
    if abandoned > 0 {
        eprintln!("{persona}: {abandoned} job(s) an earlier ingest left processing marked failed");
    }
    let run = engine.run_retrying(request);
    tokio::pin!(run);
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            _ = tokio::time::sleep(crate::run_lock::LEASE / 3) => {
                if let Err(e) = crate::run_lock::try_acquire(&engine.db, &persona, holder).await {
                    tracing::warn!(%persona, "renewing the run lock failed: {e}");
                }
            }
        }
    };
    if let Err(e) = crate::run_lock::release(&engine.db, &persona, holder).await {
        tracing::warn!(%persona, "freeing the run lock failed (it expires by itself): {e}");
    }
    outcome
}

/// The personas the arguments name (every one under the data root with `--all`), or the exit
/// code of the error printed.
fn personas_of(args: &IngestArgs, settings: &Settings) -> Result<Vec<PersonaId>, i32> {
    Ok(if args.all {
        let found = DataRoot::new(settings.data_root()).personas();
        if found.is_empty() {
            eprintln!(
                "error: no persona under {} (looked in data/ and personas/)",
                settings.data_root().display()
            );
            return Err(2);
        }
        found
    } else {
        if args.personas.is_empty() {
            eprintln!("error: name at least one persona, or use --all");
            return Err(2);
        }
        let mut ids = Vec::new();
        for given in &args.personas {
            match PersonaId::parse(given) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    eprintln!("error: {e}");
                    return Err(2);
                }
            }
        }
        ids
    })
}

fn summarise(outcomes: &[RunOutcome], elapsed: Duration) -> Summary {
    let personas = outcomes
        .iter()
        .map(|o| PersonaSummary {
            persona: o.persona.to_string(),
            status: o.status.to_string(),
            error: o.error.clone(),
            elapsed_secs: o.elapsed.as_secs_f64(),
            jobs: o
                .jobs
                .iter()
                .map(|j| {
                    let (status, stats, error) = match &j.result {
                        Ok(stats) => (JobStatus::Completed, stats.clone(), None),
                        Err(e) => (JobStatus::Failed, Default::default(), Some(e.to_string())),
                    };
                    let secs = stats.elapsed.as_secs_f64();
                    JobSummary {
                        job_id: j.job_id,
                        kind: j.kind,
                        collection: j.collection.clone(),
                        status,
                        vectors: stats.vectors,
                        chunks: stats.chunks,
                        bytes: stats.bytes,
                        elapsed_secs: secs,
                        chunks_per_sec: if secs > 0.0 {
                            stats.chunks as f64 / secs
                        } else {
                            0.0
                        },
                        counts: stats.counts,
                        warning: stats.warning,
                        error,
                    }
                })
                .collect(),
        })
        .collect();
    Summary {
        succeeded: outcomes.iter().all(RunOutcome::succeeded),
        elapsed_secs: elapsed.as_secs_f64(),
        peak_rss_bytes: super::peak_rss_bytes(),
        personas,
    }
}

fn print_summary(summary: &Summary) {
    let mut table = super::table(&[
        "persona",
        "kind",
        "collection",
        "status",
        "vectors",
        "embedded",
        "unchanged",
        "deleted",
        "tokens",
        "MB",
        "time",
        "note",
    ]);
    for persona in &summary.personas {
        for job in &persona.jobs {
            table.add_row(vec![
                persona.persona.clone(),
                job.kind.to_string(),
                job.collection.clone(),
                job.status.to_string(),
                job.vectors.to_string(),
                job.counts.chunks_embedded.to_string(),
                job.counts.chunks_unchanged.to_string(),
                job.counts.chunks_deleted.to_string(),
                job.counts.tokens_embedded.to_string(),
                format!("{:.2}", job.bytes as f64 / 1e6),
                format!("{:.2}s", job.elapsed_secs),
                job.error
                    .clone()
                    .or_else(|| job.warning.clone())
                    .unwrap_or_default(),
            ]);
        }
    }
    println!("{table}");
    let failed: Vec<&PersonaSummary> = summary
        .personas
        .iter()
        .filter(|p| p.status != "active")
        .collect();
    println!(
        "{} persona(s) in {:.2}s: {} active, {} failed",
        summary.personas.len(),
        summary.elapsed_secs,
        summary.personas.len() - failed.len(),
        failed.len()
    );
    for persona in failed {
        eprintln!(
            "error: {} failed: {}",
            persona.persona,
            persona.error.as_deref().unwrap_or("unknown reason")
        );
    }
}
