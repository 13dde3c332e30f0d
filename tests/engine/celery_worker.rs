//! `persona-ingest run` serving the real Celery client: `send_task` from Python, results read
//! with `AsyncResult(...).get()`, as the web app does; SIGTERM ends it with exit code 0.

use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;
use crate::worker_kit::*;

/// The web app's side: one persona that ingests, one that does not exist.
const CLIENT: &str = r#"
import json, sys, uuid
from celery import Celery
url, queue = sys.argv[1], sys.argv[2]
app = Celery("workers", broker=url, backend=url)
job_ids = {kind: str(uuid.uuid4()) for kind in ("works", "quotes", "profile")}
good = app.send_task("workers.tasks.ingest_full_persona",
                     kwargs={"persona_id": "twain-sampler", "job_ids": job_ids}, queue=queue)
children = good.get(timeout=60)
counts = {kind: app.AsyncResult(task).get(timeout=10) for kind, task in children.items()}
bad = app.send_task("workers.tasks.ingest_full_persona", args=["ghost", {"works": str(uuid.uuid4())}], queue=queue)
# As in the seed: the task answers its sub-task ids, and the sub-task fails.
bad_works = app.AsyncResult(bad.get(timeout=60)["works"])
try:
    bad_works.get(timeout=60)
    failure = None
except Exception as e:
    failure = {"status": bad_works.status, "type": type(e).__name__, "message": str(e)}
print(json.dumps({"job_ids": job_ids, "task": good.id, "children": children, "counts": counts, "failure": failure}))
"#;

#[actix::test]
async fn the_celery_client_gets_its_results_and_sigterm_exits_cleanly() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let (prefix, queue) = (&names.prefix, &names.queue);
    let daemon = Daemon::start(&world, &names, &redis_url(), &[]);

    // Two messages no worker can run, ahead of the good ones.
    let mut con = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let unknown = persona_ingest::trigger::celery::encode(
        "workers.tasks.send_newsletter",
        "unknown-1",
        &[],
        &serde_json::Map::new(),
        queue,
        "test@host",
    );
    for raw in ["not json at all".to_owned(), unknown] {
        let _: () = redis::cmd("LPUSH")
            .arg(queue)
            .arg(raw)
            .query_async(&mut con)
            .await
            .unwrap();
    }

    let client = Command::new(python())
        .args(["-c", CLIENT, &redis_url(), queue])
        .output()
        .unwrap();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    let answer: Value = serde_json::from_slice(&client.stdout).unwrap();
    assert_eq!(
        answer["counts"],
        json!({ "profile": 4, "works": 20, "quotes": 12 })
    );
    assert_eq!(answer["failure"]["status"], "FAILURE");
    assert_eq!(answer["failure"]["type"], "RuntimeError");
    let message = answer["failure"]["message"].as_str().unwrap();
    assert!(message.contains("persona ghost not found"), "{message}");

    // The job rows the web app created ids for carry the sub-task ids.
    let db = persona_ingest::db::connect(&world.settings(&[]).database)
        .await
        .unwrap();
    let rows = latest_jobs(&db, "twain-sampler").await;
    for row in &rows {
        assert_eq!(
            row.id.to_string(),
            answer["job_ids"][row.kind.as_str()].as_str().unwrap()
        );
        assert_eq!(
            row.task_id.as_deref(),
            answer["children"][row.kind.as_str()].as_str()
        );
        assert_eq!(row.status, persona_ingest::JobStatus::Completed);
    }

    // SIGTERM: nothing running, nothing in flight, exit 0.
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("stopped: 2 task(s) answered, 2 dead-lettered, 0 requeued"),
        "{stderr}"
    );
    let dead: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{prefix}:dead-letters"))
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap();
    let reasons: Vec<String> = dead
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.starts_with("not a JSON envelope")),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"unknown task \"workers.tasks.send_newsletter\"".to_owned()),
        "{reasons:?}"
    );
    assert_eq!(in_flight(&mut con, prefix).await, 0);
    forget(&redis_url(), prefix, &[answer["task"].as_str().unwrap()]).await;
}

/// `AsyncResult(task).get()`, then each child's, as JSON.
const READ_RUN: &str = r#"
import json, sys
from celery import Celery
app = Celery("workers", broker=sys.argv[1], backend=sys.argv[1])
children = app.AsyncResult(sys.argv[2]).get(timeout=60)
print(json.dumps({kind: app.AsyncResult(task).get(timeout=10) for kind, task in children.items()}))
"#;

#[actix::test]
async fn enqueue_sends_what_the_web_app_sends_and_the_daemon_serves_it() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let _daemon = Daemon::start(&world, &names, &redis_url(), &[]);
    let enqueued = Command::new(env!("CARGO_BIN_EXE_persona-ingest"))
        .args([
            "enqueue",
            "twain-sampler",
            "--data-root",
            world.data_root.to_str().unwrap(),
        ])
        .env_clear()
        .envs(daemon_env(&world, &names, &redis_url()))
        .current_dir(world.dir.path())
        .output()
        .unwrap();
    assert!(
        enqueued.status.success(),
        "{}",
        String::from_utf8_lossy(&enqueued.stderr)
    );
    let task_id = String::from_utf8(enqueued.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let read = Command::new(python())
        .args(["-c", READ_RUN, &redis_url(), &task_id])
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let counts: Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(counts, json!({ "profile": 4, "works": 20, "quotes": 12 }));
    forget(&redis_url(), &names.prefix, &[&task_id]).await;
}
