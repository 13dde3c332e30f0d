//! Results written by the engine, read by the real Celery client (`AsyncResult`) from the
//! project's virtualenv, exactly as the web app reads them.

use std::process::Command;
use std::time::Duration;

use persona_ingest::trigger::celery::{ResultMeta, TaskState};
use persona_ingest::trigger::ports::ResultStore;
use persona_ingest::trigger::results::ResultBackend;
use serde_json::json;

fn redis_url() -> String {
    std::env::var("PERSONA_INGEST_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn python() -> std::path::PathBuf {
    let path = std::env::var_os("PERSONA_INGEST_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
        });
    assert!(
        path.exists(),
        "no Python at {}: run scripts/python-env (scripts/test does)",
        path.display()
    );
    path
}

/// `AsyncResult(id).get(timeout)` in Celery, printed as JSON: the status and the result or the
/// exception's type and message.
const READER: &str = r#"
import json, sys
from celery import Celery
app = Celery(broker=sys.argv[1], backend=sys.argv[1])
result = app.AsyncResult(sys.argv[2])
try:
    value = result.get(timeout=float(sys.argv[3]))
    print(json.dumps({"status": result.status, "result": value}))
except Exception as e:
    print(json.dumps({"status": result.status, "error": type(e).__name__, "message": str(e)}))
"#;

fn celery_reads(task_id: &str, timeout_secs: u32) -> std::process::Child {
    Command::new(python())
        .args([
            "-c",
            READER,
            &redis_url(),
            task_id,
            &timeout_secs.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn answer(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn async_result_get_wakes_on_our_success_and_sees_its_value() {
    let backend = ResultBackend::connect(&redis_url(), Duration::from_secs(60))
        .await
        .unwrap();
    let task_id = uuid::Uuid::new_v4().to_string();
    let waiting = celery_reads(&task_id, 20);
    // Started while Celery waits, then the answer it waits for.
    tokio::time::sleep(Duration::from_millis(800)).await;
    backend
        .store(
            &task_id,
            &TaskState::Started {
                pid: std::process::id(),
                hostname: "test@host".into(),
            },
            &ResultMeta::default(),
        )
        .await
        .unwrap();
    let value = json!({ "profile": "a", "works": "b", "quotes": "c" });
    assert!(backend
        .store(
            &task_id,
            &TaskState::Success(value.clone()),
            &ResultMeta::default(),
        )
        .await
        .unwrap());
    assert_eq!(
        answer(waiting),
        json!({ "status": "SUCCESS", "result": value })
    );

    // A SUCCESS stays: a later FAILURE of a redelivered run does not replace it.
    let late = TaskState::Failure {
        exc_type: "IngestionError".into(),
        exc_message: "late".into(),
        exc_module: "builtins".into(),
        traceback: None,
    };
    assert!(!backend
        .store(&task_id, &late, &ResultMeta::default())
        .await
        .unwrap());
    assert_eq!(
        answer(celery_reads(&task_id, 1)),
        json!({ "status": "SUCCESS", "result": value })
    );
    forget(&task_id).await;
}

#[tokio::test]
async fn a_failure_reaches_celery_as_the_exception_with_its_message() {
    let backend = ResultBackend::connect(&redis_url(), Duration::from_secs(60))
        .await
        .unwrap();
    let task_id = uuid::Uuid::new_v4().to_string();
    let failure = TaskState::Failure {
        exc_type: "ValueError".into(),
        exc_message: "persona ghost not found".into(),
        exc_module: "builtins".into(),
        traceback: None,
    };
    backend
        .store(&task_id, &failure, &ResultMeta::default())
        .await
        .unwrap();
    assert_eq!(
        answer(celery_reads(&task_id, 5)),
        json!({ "status": "FAILURE", "error": "ValueError", "message": "persona ghost not found" })
    );
    let mut con = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("celery-task-meta-{task_id}"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!((50..=60).contains(&ttl), "expires as configured: {ttl}");
    forget(&task_id).await;
}

async fn forget(task_id: &str) {
    let mut con = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!("celery-task-meta-{task_id}"))
        .query_async(&mut con)
        .await
        .unwrap();
}

/// States stored together (a task's sub-tasks starting or ending at once) go in one pipeline of
/// the result script: each lands in order, a SUCCESS stays, and a Redis that lost its scripts
/// (`SCRIPT FLUSH`, a restart) is given the script again, nothing lost. On a Redis of its own,
/// as the flush would reach every test's scripts.
#[tokio::test]
async fn states_stored_together_land_in_order_even_after_a_script_flush() {
    let redis = crate::worker_kit::OwnRedis::start().await;
    let backend = ResultBackend::connect(&redis.url(), Duration::from_secs(60))
        .await
        .unwrap();
    let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let meta = ResultMeta::default();
    assert!(backend
        .store(&ids[0], &TaskState::Success(json!(1)), &meta)
        .await
        .unwrap());
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    let started = TaskState::Started {
        pid: 1,
        hostname: "w@h".into(),
    };
    let late = TaskState::Failure {
        exc_type: "RuntimeError".into(),
        exc_message: "late".into(),
        exc_module: "builtins".into(),
        traceback: None,
    };
    let states = vec![
        (ids[0].clone(), late, meta.clone()),
        (ids[1].clone(), started.clone(), meta.clone()),
        (ids[1].clone(), TaskState::Success(json!(3)), meta.clone()),
        (ids[2].clone(), started, meta.clone()),
    ];
    assert_eq!(
        backend.store_all(&states).await.unwrap(),
        [false, true, true, true]
    );
    let mut read = Vec::new();
    for id in &ids {
        let raw: String = redis::cmd("GET")
            .arg(format!("celery-task-meta-{id}"))
            .query_async(&mut con)
            .await
            .unwrap();
        let value: serde_json::Value = serde_json::from_str(&raw).unwrap();
        read.push((value["status"].clone(), value["result"].clone()));
    }
    assert_eq!(
        read,
        [
            (json!("SUCCESS"), json!(1)),
            (json!("SUCCESS"), json!(3)),
            (json!("STARTED"), json!({ "pid": 1, "hostname": "w@h" })),
        ]
    );
}
