//! The command line: flags, the settings they override, and one module per command.

mod audit;
mod enqueue;
mod ingest;
mod interrupt;
mod plan;
mod progress;
mod query;
mod revoke;
mod run;
mod status;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{ConfigInputs, Settings};
use crate::Kind;

#[derive(Debug, Parser)]
#[command(
    name = "persona-ingest",
    version,
    about = "Ingest persona corpora (works, quotes, profile) into vector collections, tracking every job in SQL.",
    long_about = "Ingest persona corpora (works, quotes, profile) into vector collections, tracking every job in SQL.\n\n\
        With no configuration at all it uses a SQLite database (persona-ingest.db), an embedded vector store \
        (persona-ingest.vectors.db) and a local hashing embedder, all in the working directory.\n\n\
        Try:  persona-ingest ingest --data-root examples twain-sampler\n      \
        persona-ingest query --data-root examples twain-sampler \"the river at night\"",
    after_help = "Settings: config.toml defaults < --config FILE < environment (ENGINE__SECTION__KEY, DATABASE_URL, \
        REDIS_URL, CHROMA_URL, OPENAI_API_KEY, .env) < flags."
)]
pub struct Cli {
    /// A TOML file of settings, layered over the defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where personas live: data/{persona}/works, data/{persona}/quotes/all_quotes.jsonl, personas/{persona}/profile.md.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// The jobs database: sqlite://file.db?mode=rwc or postgres://user@host/db.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// The embedded vector store's file.
    #[arg(long, global = true, value_name = "FILE")]
    pub store_path: Option<PathBuf>,
    /// Log filter, e.g. info or persona_ingest=debug (also RUST_LOG).
    #[arg(long, global = true, value_name = "FILTER", default_value = "warn")]
    pub log: String,
    /// Log lines for people (human) or one JSON object a line for machines (json).
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest personas now, in this process, with a progress bar per job and a summary.
    Ingest(ingest::IngestArgs),
    /// Show personas and their jobs: all, one persona's, or one job.
    Status(status::StatusArgs),
    /// Compare the database (job rows, the manifest) with the vector store, record by record;
    /// with --repair, mend what differs. Exit 0 when they agree, 1 when they do not.
    Audit(audit::AuditArgs),
    /// Find the records nearest to a text in a persona's collection.
    Query(query::QueryArgs),
    /// Apply pending database migrations (the other commands also do, at start).
    Migrate,
    /// Serve the Celery queues on Redis (redis.url, worker.queues) until SIGTERM or SIGINT.
    Run,
    /// Create the job rows and send the Celery message the web app would; prints the task id.
    Enqueue(enqueue::EnqueueArgs),
    /// Revoke Celery tasks on every worker of the broker (Celery's `revoke`); with --terminate,
    /// stop a running ingestion.
    Revoke(revoke::RevokeArgs),
}

/// `--only works,quotes` or `--kind works`.
pub fn parse_kind(s: &str) -> Result<Kind, String> {
    s.parse()
}

impl Cli {
    /// The settings: defaults, `--config`, the environment, then these flags.
    pub fn settings(
        &self,
        mut inputs: ConfigInputs,
    ) -> Result<Settings, crate::config::ConfigError> {
        inputs.file = self.config.clone();
        if let Some(root) = &self.data_root {
            inputs = inputs.with_override("data_root", root.display().to_string());
        }
        if let Some(url) = &self.database_url {
            inputs = inputs.with_override("database.url", url.clone());
        }
        if let Some(path) = &self.store_path {
            inputs = inputs.with_override("store.path", path.display().to_string());
        }
        Settings::load(&inputs)
    }
}

/// Runs the command; the exit code is 0 on success, 1 when work failed, 2 for bad input.
pub async fn run(cli: Cli, settings: Settings) -> i32 {
    let result = match &cli.command {
        Command::Ingest(args) => ingest::run(args, settings).await,
        Command::Status(args) => status::run(args, settings).await,
        Command::Audit(args) => audit::run(args, settings).await,
        Command::Query(args) => query::run(args, settings).await,
        Command::Migrate => migrate(settings).await,
        Command::Run => run::run(settings).await,
        Command::Enqueue(args) => enqueue::run(args, settings).await,
        Command::Revoke(args) => revoke::run(args, settings).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

async fn migrate(settings: Settings) -> anyhow::Result<i32> {
    let db = crate::db::connect_only(&settings.database).await?;
    let (_, pending) = crate::db::migration_status(&db).await?;
    let _ = db.close().await;
    let db = crate::db::connect(&settings.database).await?;
    let (applied, _) = crate::db::migration_status(&db).await?;
    println!(
        "database {}: {} migration(s) applied now, {} in all",
        crate::urls::redact(&settings.database.url),
        pending.len(),
        applied.len()
    );
    for name in applied {
        println!("  {name}");
    }
    Ok(0)
}

/// A table for the terminal.
pub fn table(header: &[&str]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    // Lines above, under the header and below; none between rows.
    table.load_preset("  ── ══      ──    ");
    table.set_header(header.to_vec());
    table
}

/// This process's peak resident memory (Linux's VmHWM), for summaries and benchmarks.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
