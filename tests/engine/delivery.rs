//! Nothing lost, nothing done twice: `persona-ingest run` killed in the middle of an ingestion,
//! stopped with SIGTERM during work, its Redis restarted under it, and facing an embedding
//! provider that is down for a while (messages it cannot run: `trigger.rs`).

use std::time::Duration;

use persona_ingest::trigger::task::subtask_id;
use persona_ingest::{JobStatus, Kind, PersonaStatus};
use serde_json::{json, Value};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer};

use crate::common::*;
use crate::openai::embeddings_response;
use crate::own_postgres::OwnPostgres;
use crate::worker_kit::*;

/// What a clean run of the example persona gives.
const CLEAN_RUN: [(Kind, i64); 3] = [(Kind::Works, 20), (Kind::Quotes, 12), (Kind::Profile, 4)];

const PERSONA: &str = "twain-sampler";

/// The task succeeded with the clean run's counts under each sub-task, every job row is
/// completed with them, and the store holds exactly that many records.
async fn assert_clean_outcome(world: &World, redis: &str, task_id: &str, result: &Value) {
    assert_eq!(result["status"], "SUCCESS", "{result}");
    let mut con = connect(redis).await;
    for (kind, vectors) in CLEAN_RUN {
        let child = subtask_id(task_id, kind);
        assert_eq!(result["result"][kind.as_str()], json!(child));
        let answered = result_of(&mut con, &child).await.unwrap();
        assert_eq!(answered["result"], json!(vectors), "{kind}: {answered}");
    }
    let engine = world.engine(&[]).await;
    let rows = latest_jobs(&engine.db, PERSONA).await;
    for (kind, vectors) in CLEAN_RUN {
        let row = job_of(&rows, kind);
        assert_eq!(
            (row.status, row.total_vectors),
            (JobStatus::Completed, vectors)
        );
    }
    assert_store_matches_rows(&engine, PERSONA).await;
    assert_eq!(
        persona_row(&engine.db, PERSONA).await.status,
        PersonaStatus::Active
    );
}

async fn job_rows(world: &World) -> Vec<entities::ingestion_job::Model> {
    let db = persona_ingest::db::connect(&world.settings(&[]).database)
        .await
        .unwrap();
    latest_jobs(&db, PERSONA).await
}

/// Waits until the embedder has been called `calls` times: the run is under way.
async fn under_way(embedder: &MockServer, calls: usize) {
    wait_for("embedding calls", Duration::from_secs(30), || async {
        let made = crate::worker_kit::embedding_calls(embedder).await;
        (made >= calls).then_some(())
    })
    .await;
}

#[actix::test]
async fn a_daemon_killed_mid_ingestion_is_replaced_and_each_job_completes_once() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let embedder = slow_embedder(Duration::from_millis(250)).await;
    let mut env = slow_embedder_env(&embedder);
    env.extend(vars(&[("ENGINE__WORKER__VISIBILITY_TIMEOUT", "2")]));
    let first = Daemon::start(&world, &names, &redis_url(), &env);
    let mut con = connect(&redis_url()).await;
    let task_id = send_full_persona(&mut con, &names.queue, PERSONA).await;
    // The profile's two calls are over before the works' ten.
    wait_for(
        "the profile to complete",
        Duration::from_secs(30),
        || async {
            let rows = job_rows(&world).await;
            rows.iter()
                .any(|r| r.kind == Kind::Profile && r.status == JobStatus::Completed)
                .then_some(())
        },
    )
    .await;
    first.kill();
    let rows = job_rows(&world).await;
    assert_eq!(job_of(&rows, Kind::Works).status, JobStatus::Processing);
    assert_eq!(in_flight(&mut con, &names.prefix).await, 1);
    // `status` shows what the dead worker holds.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_persona-ingest"))
        .args(["status", "--json"])
        .env_clear()
        .envs(daemon_env(&world, &names, &redis_url()))
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let workers = status["broker"]["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{status}");
    assert_eq!(
        workers[0]["in_flight"],
        json!([{ "task_id": task_id, "task": "workers.tasks.ingest_full_persona", "queue": names.queue, "eta": null, "bytes": workers[0]["in_flight"][0]["bytes"] }])
    );
    let profile_done_at = job_of(&rows, Kind::Profile).completed_at;

    // A new worker requeues the dead one's message once its lease lapses, and serves it.
    let second = Daemon::start(&world, &names, &redis_url(), &env);
    let result = final_result(&redis_url(), &task_id, Duration::from_secs(60)).await;
    assert_clean_outcome(&world, &redis_url(), &task_id, &result).await;
    let rows = job_rows(&world).await;
    let profile = job_of(&rows, Kind::Profile);
    assert_eq!(
        (profile.attempts, profile.completed_at),
        (1, profile_done_at),
        "the completed job was not run again"
    );
    assert_eq!(job_of(&rows, Kind::Works).attempts, 2);
    let (code, stderr) = second.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("requeued the messages of workers whose lease lapsed"),
        "{stderr}"
    );
    assert_eq!(in_flight(&mut con, &names.prefix).await, 0);
    forget(&redis_url(), &names.prefix, &[&task_id]).await;
}

#[actix::test]
async fn sigterm_during_work_lets_it_finish_or_requeues_it_and_exits_0() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let embedder = slow_embedder(Duration::from_millis(150)).await;
    let mut con = connect(&redis_url()).await;

    // A grace long enough: the run ends, is answered, and the daemon exits 0.
    let mut env = slow_embedder_env(&embedder);
    env.extend(vars(&[("ENGINE__WORKER__SHUTDOWN_GRACE", "60")]));
    let daemon = Daemon::start(&world, &names, &redis_url(), &env);
    let finished = send_full_persona(&mut con, &names.queue, PERSONA).await;
    under_way(&embedder, 2).await;
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("stopped: 1 task(s) answered, 0 dead-lettered, 0 requeued"),
        "{stderr}"
    );
    let result = result_of(&mut con, &finished).await.unwrap();
    assert_clean_outcome(&world, &redis_url(), &finished, &result).await;

    // A grace too short: the message goes back to its queue, and the next worker serves it.
    embedder.reset().await;
    Mock::given(path("/v1/embeddings"))
        .respond_with(|r: &wiremock::Request| {
            embeddings_response(r).set_delay(Duration::from_millis(300))
        })
        .mount(&embedder)
        .await;
    let mut env = slow_embedder_env(&embedder);
    env.extend(vars(&[("ENGINE__WORKER__SHUTDOWN_GRACE", "1")]));
    let daemon = Daemon::start(&world, &names, &redis_url(), &env);
    // Forced: nothing changed since the first run, which would leave nothing to embed.
    let requeued = send_full_persona_forced(&mut con, &names.queue, PERSONA).await;
    under_way(&embedder, 2).await;
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("0 task(s) answered, 0 dead-lettered, 1 requeued"),
        "{stderr}"
    );
    let queued: usize = redis::cmd("LLEN")
        .arg(&names.queue)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!((queued, in_flight(&mut con, &names.prefix).await), (1, 0));
    // Its run was aborted first: no job is left processing in the meantime.
    let rows = job_rows(&world).await;
    assert!(
        rows.iter().all(|r| r.status != JobStatus::Processing),
        "{rows:#?}"
    );
    let works = job_of(&rows, Kind::Works);
    assert_eq!(works.status, JobStatus::Failed);
    let error = works.error_message.as_deref().unwrap();
    assert!(
        error.contains("its message went back to the queue"),
        "{error}"
    );
    let _daemon = Daemon::start(&world, &names, &redis_url(), &env);
    let result = final_result(&redis_url(), &requeued, Duration::from_secs(60)).await;
    assert_clean_outcome(&world, &redis_url(), &requeued, &result).await;
    forget(&redis_url(), &names.prefix, &[&finished, &requeued]).await;
}

#[actix::test]
async fn redis_restarting_under_a_running_daemon_loses_nothing() {
    let mut redis = OwnRedis::start().await;
    let world = World::reading(examples_root());
    let names = Names::new();
    let embedder = slow_embedder(Duration::from_millis(200)).await;
    let _daemon = Daemon::start(&world, &names, &redis.url(), &slow_embedder_env(&embedder));
    let mut con = connect(&redis.url()).await;
    let during = send_full_persona(&mut con, &names.queue, PERSONA).await;
    under_way(&embedder, 2).await;

    // Down for two seconds in the middle of the run, then back with what it had persisted.
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.run().await;
    let result = final_result(&redis.url(), &during, Duration::from_secs(60)).await;
    assert_clean_outcome(&world, &redis.url(), &during, &result).await;

    // And it serves new work.
    let mut con = connect(&redis.url()).await;
    let after = send_full_persona(&mut con, &names.queue, PERSONA).await;
    let result = final_result(&redis.url(), &after, Duration::from_secs(60)).await;
    assert_eq!(result["status"], "SUCCESS", "{result}");
    wait_for("nothing in flight", Duration::from_secs(10), || {
        let mut con = con.clone();
        let prefix = names.prefix.clone();
        async move { (in_flight(&mut con, &prefix).await == 0).then_some(()) }
    })
    .await;
}

#[actix::test]
async fn the_database_restarting_under_a_running_daemon_loses_nothing() {
    let postgres = OwnPostgres::start();
    let database = postgres.database("jobs").await;
    let world = World::reading(examples_root());
    let names = Names::new();
    let embedder = slow_embedder(Duration::from_millis(200)).await;
    let mut env = slow_embedder_env(&embedder);
    env.extend(vars(&[("DATABASE_URL", &database)]));
    let daemon = Daemon::start(&world, &names, &redis_url(), &env);
    let mut con = connect(&redis_url()).await;
    let task_id = send_full_persona(&mut con, &names.queue, PERSONA).await;
    under_way(&embedder, 2).await;

    // Down in the middle of the run, every connection dropped, for longer than a connection
    // is waited for (3 s) after the jobs end: their updates wait, in order, and nothing fails.
    postgres.stop();
    tokio::time::sleep(Duration::from_secs(8)).await;
    postgres.run();
    let result = final_result(&redis_url(), &task_id, Duration::from_secs(90)).await;
    assert_eq!(result["status"], "SUCCESS", "{result}");
    let db = sea_orm::Database::connect(&database).await.unwrap();
    let rows = latest_jobs(&db, PERSONA).await;
    for (kind, vectors) in CLEAN_RUN {
        let row = job_of(&rows, kind);
        assert_eq!(
            (row.status, row.total_vectors, row.attempts),
            (JobStatus::Completed, vectors, 1),
            "{kind}: no run failed, none was retried"
        );
    }
    assert_eq!(
        persona_row(&db, PERSONA).await.status,
        PersonaStatus::Active
    );
    assert_eq!(in_flight(&mut con, &names.prefix).await, 0);
    db.close().await.unwrap();
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("database unavailable (") && stderr.contains("trying again in"),
        "the outage was not ridden out: {stderr}"
    );
    forget(&redis_url(), &names.prefix, &[&task_id]).await;
}

#[actix::test]
async fn a_provider_down_for_a_while_is_retried_with_backoff_and_counted_in_attempts() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let embedder = embedder_down_for(3).await;
    let mut env = slow_embedder_env(&embedder);
    env.extend(vars(&[
        // One call for the whole persona, not retried by the batcher: the task is.
        ("ENGINE__EMBEDDING__MAX_BATCH_INPUTS", "256"),
        ("ENGINE__EMBEDDING__MAX_IN_FLIGHT", "1"),
        ("ENGINE__EMBEDDING__MAX_RETRIES", "0"),
        ("ENGINE__INGEST__WINDOW_CHUNKS", "64"),
        ("ENGINE__WORKER__RETRY_DELAY", "0.3"),
        ("ENGINE__WORKER__MAX_RETRIES", "5"),
    ]));
    let _daemon = Daemon::start(&world, &names, &redis_url(), &env);
    let mut con = connect(&redis_url()).await;
    let task_id = send_full_persona(&mut con, &names.queue, PERSONA).await;
    // The seed's contract: the task answered its sub-task ids; the works sub-task says RETRY.
    let works = persona_ingest::trigger::task::subtask_id(&task_id, Kind::Works);
    let retry = wait_for("a RETRY state", Duration::from_secs(30), || {
        let mut con = con.clone();
        let works = works.clone();
        async move {
            let found = result_of(&mut con, &works).await?;
            (found["status"] == "RETRY").then_some(found)
        }
    })
    .await;
    assert_eq!(retry["result"]["exc_type"], "RuntimeError");
    let message = retry["result"]["exc_message"][0].as_str().unwrap();
    assert!(message.contains("503"), "{message}");

    let result = final_result(&redis_url(), &task_id, Duration::from_secs(60)).await;
    assert_clean_outcome(&world, &redis_url(), &task_id, &result).await;
    let attempts: i32 = job_rows(&world)
        .await
        .iter()
        .map(|r| r.attempts)
        .max()
        .unwrap();
    assert!(attempts >= 2, "attempts {attempts}");
    forget(&redis_url(), &names.prefix, &[&task_id]).await;
}
