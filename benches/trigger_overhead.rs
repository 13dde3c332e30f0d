//! Trigger overhead: how many `ingest_full_persona` messages a second `persona-ingest run`
//! serves from Redis when there is next to nothing to ingest, side by side with a real Celery
//! worker (the `celery` package of the project's virtualenv) serving the same messages on the
//! same Redis with a task that does nothing at all.
//!
//!     cargo bench --bench trigger_overhead [-- MESSAGES]   (default 300)
//!
//! Each persona has a one-line profile and no works or quotes: the engine's run records the
//! persona and its three jobs in SQLite, embeds and stores one chunk, answers four results
//! (the task and its three sub-tasks). The Celery task returns its dict and records one. Both
//! run 4 at once (`worker.concurrency`, `--concurrency 4` prefork) and hold 16 messages
//! (`worker.prefetch = 4`, Celery's default multiplier). Redis: `REDIS_URL` or
//! 127.0.0.1:6379/0; keys of the bench's own, deleted at the end. The Celery side needs
//! `scripts/python-env` to have run (`scripts/test` does); without it only the engine runs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use persona_ingest::trigger::celery::encode;
use persona_ingest::Kind;
use redis::aio::MultiplexedConnection;
use serde_json::{Map, Value};

const CONCURRENCY: &str = "4";

/// The web app's tasks module, with a task that does nothing but answer.
const CELERY_TASKS: &str = r#"
import os, uuid
from celery import Celery
url = os.environ["BENCH_REDIS"]
app = Celery("workers", broker=url, backend=url)

@app.task(name="workers.tasks.ingest_full_persona")
def ingest_full_persona(persona_id, job_ids):
    return {kind: str(uuid.uuid4()) for kind in job_ids}
"#;

fn main() {
    let messages: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(messages, redis));
}

async fn run(messages: usize, redis: String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for i in 0..messages {
        let profile = data.join(format!("personas/p{i}/profile.md"));
        std::fs::create_dir_all(profile.parent().unwrap()).unwrap();
        std::fs::write(profile, "A writer of few words.\n").unwrap();
    }
    let mut con = redis::Client::open(redis.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    println!("trigger overhead: {messages} ingest_full_persona messages, 4 at once, {redis}");

    let prefix = format!("pi-bench-{}", uuid::Uuid::new_v4().simple());
    let queue = format!("{prefix}-engine");
    let engine = spawn(
        Command::new(env!("CARGO_BIN_EXE_persona-ingest"))
            .args(["run", "--data-root"])
            .arg(&data)
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/jobs.db?mode=rwc", dir.path().display()),
            )
            .env("ENGINE__STORE__PATH", dir.path().join("vectors.db"))
            .env("REDIS_URL", &redis)
            .env("ENGINE__WORKER__QUEUES", &queue)
            .env("ENGINE__WORKER__CONCURRENCY", CONCURRENCY)
            // Celery's default `worker_prefetch_multiplier`, which the Celery worker runs with.
            .env("ENGINE__WORKER__PREFETCH", "4")
            .env("ENGINE__REDIS__KEY_PREFIX", &prefix)
            .env("ENGINE__HTTP__LISTEN", "")
            // BENCH_ENGINE_LOG (a RUST_LOG filter) to see what the engine does a message.
            .env(
                "RUST_LOG",
                std::env::var("BENCH_ENGINE_LOG").unwrap_or_else(|_| "error".into()),
            ),
    );
    let rate = serve_rate(&mut con, &queue, messages).await;
    println!("  persona-ingest run: {rate:>8.1} messages/s  (records every job in SQLite, embeds and stores a chunk)");
    drop(engine);
    cleanup(&mut con, &[format!("{prefix}*"), format!("{queue}*")]).await;

    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if !python.exists() {
        println!(
            "  celery worker:      not measured ({} missing: run scripts/python-env)",
            python.display()
        );
        return;
    }
    let queue = format!("{prefix}-celery");
    let module = dir.path().join("celery-app");
    std::fs::create_dir_all(module.join("workers")).unwrap();
    std::fs::write(module.join("workers/__init__.py"), "").unwrap();
    std::fs::write(module.join("workers/tasks.py"), CELERY_TASKS).unwrap();
    let celery = spawn(
        Command::new(&python)
            .args([
                "-m",
                "celery",
                "-A",
                "workers.tasks",
                "worker",
                "--pool",
                "prefork",
            ])
            .args([
                "--concurrency",
                CONCURRENCY,
                "--loglevel",
                "error",
                "-Q",
                &queue,
            ])
            .args([
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ])
            .current_dir(&module)
            .env("BENCH_REDIS", &redis),
    );
    let rate = serve_rate(&mut con, &queue, messages).await;
    println!("  celery worker 5.7:  {rate:>8.1} messages/s  (prefork; the task does nothing and records its result)");
    drop(celery);
    cleanup(
        &mut con,
        &[format!("{queue}*"), format!("_kombu.binding.{queue}*")],
    )
    .await;
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(command: &mut Command) -> Killed {
    Killed(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the worker starts"),
    )
}

/// Sends one message and waits for its answer (the worker is up and warm), then sends
/// `messages` at once and times them until every one is answered; answers messages a second.
async fn serve_rate(con: &mut MultiplexedConnection, queue: &str, messages: usize) -> f64 {
    let warmup = send(con, queue, &[0]).await;
    answered(con, &warmup, Duration::from_secs(60)).await;
    let ids: Vec<usize> = (1..messages).chain([0]).collect();
    let started = Instant::now();
    let tasks = send(con, queue, &ids).await;
    answered(con, &tasks, Duration::from_secs(600)).await;
    let rate = tasks.len() as f64 / started.elapsed().as_secs_f64();
    let keys: Vec<String> = warmup
        .iter()
        .chain(&tasks)
        .flat_map(|id| {
            let mut keys = vec![format!("celery-task-meta-{id}")];
            for kind in Kind::ALL {
                let child = persona_ingest::trigger::task::subtask_id(id, kind);
                keys.push(format!("celery-task-meta-{child}"));
            }
            keys
        })
        .collect();
    for chunk in keys.chunks(500) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(con).await.unwrap();
    }
    rate
}

/// Pushes an `ingest_full_persona` message for each persona `p{i}`; answers the task ids.
async fn send(con: &mut MultiplexedConnection, queue: &str, personas: &[usize]) -> Vec<String> {
    let mut ids = Vec::new();
    let mut raws = Vec::new();
    for i in personas {
        let task_id = uuid::Uuid::new_v4().to_string();
        let job_ids: Map<String, Value> = Kind::ALL
            .iter()
            .map(|k| (k.to_string(), uuid::Uuid::new_v4().to_string().into()))
            .collect();
        let mut kwargs = Map::new();
        kwargs.insert("persona_id".into(), format!("p{i}").into());
        kwargs.insert("job_ids".into(), Value::Object(job_ids));
        let full = "workers.tasks.ingest_full_persona";
        raws.push(encode(full, &task_id, &[], &kwargs, queue, "bench@host"));
        ids.push(task_id);
    }
    let _: () = redis::cmd("LPUSH")
        .arg(queue)
        .arg(&raws)
        .query_async(con)
        .await
        .unwrap();
    ids
}

/// Waits until every task has a result that ends it. Only the results still awaited are read
/// again (every 10 ms), so that the polling weighs on Redis as little as it can.
async fn answered(con: &mut MultiplexedConnection, tasks: &[String], limit: Duration) {
    let started = Instant::now();
    let mut waiting: Vec<String> = tasks
        .iter()
        .map(|id| format!("celery-task-meta-{id}"))
        .collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for chunk in waiting.chunks(500) {
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg(chunk)
                .query_async(con)
                .await
                .unwrap();
            let ended = |v: &Option<String>| {
                v.as_ref()
                    .is_some_and(|v| v.contains("\"SUCCESS\"") || v.contains("\"FAILURE\""))
            };
            still.extend(
                chunk
                    .iter()
                    .zip(&values)
                    .filter(|(_, v)| !ended(v))
                    .map(|(key, _)| key.clone()),
            );
        }
        waiting = still;
        if waiting.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{} of {} answered within {limit:?}",
            tasks.len() - waiting.len(),
            tasks.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn cleanup(con: &mut MultiplexedConnection, patterns: &[String]) {
    for pattern in patterns {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(con)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(keys).query_async(con).await.unwrap();
        }
    }
}
