//! The dashboard's JSON API against a running daemon, as any client (not only the page) reads
//! it: tasks known from Celery's events with their filters, a task's page, workers, the broker,
//! personas and their runs, the charts, the live stream, and the answers to bad arguments.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::http_api::{assert_error, http_env, Api, TOKEN};
use crate::worker_kit::*;

#[actix::test]
async fn the_dashboard_s_api_answers_every_view() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let port = free_port();
    let _daemon = Daemon::start(&world, &names, &redis_url(), &http_env(port));
    let api = Api::new(port);
    api.up().await;
    let (status, sent) = api.post("/api/personas/twain-sampler/ingest", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let task_id = sent["task_id"].as_str().unwrap().to_owned();
    let works = persona_ingest::trigger::task::subtask_id(&task_id, persona_ingest::Kind::Works);
    let result = final_result(&redis_url(), &works, Duration::from_secs(60)).await;
    assert_eq!(result["status"], "SUCCESS", "{result}");

    // Tasks: the top task and its three sub-tasks, found by persona and by state.
    let tasks = wait_for("the sub-tasks' events", Duration::from_secs(10), || async {
        let (_, found) = api
            .get("/api/tasks?persona=twain-sampler&state=success")
            .await;
        (found["total"] == 4).then_some(found)
    })
    .await;
    assert!(tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["state"] == "SUCCESS" && t.get("timeline").is_none()));
    let (_, by_id) = api.get(&format!("/api/tasks?q={}", &task_id[..8])).await;
    assert_eq!(by_id["total"], 4, "the task and its sub-tasks: {by_id}");
    assert_error(
        api.get("/api/tasks?state=DONE").await,
        StatusCode::BAD_REQUEST,
        "is not one of PENDING",
    );
    assert_error(
        api.get("/api/jobs/not-a-uuid").await,
        StatusCode::BAD_REQUEST,
        "job id \"not-a-uuid\" is not a UUID",
    );
    for bad in ["0", "abc", "-5", "1.5", "", "1001"] {
        assert_error(
            api.get(&format!("/api/tasks?limit={bad}")).await,
            StatusCode::BAD_REQUEST,
            &format!("limit {bad:?} is not a whole number from 1 to 1000"),
        );
    }
    assert_error(
        api.get("/api/tasks?colour=red").await,
        StatusCode::BAD_REQUEST,
        "colour",
    );

    // A task's page: its sub-tasks, its jobs' rows, its result as stored, its events.
    let (status, page) = api.get(&format!("/api/tasks/{task_id}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["children"].as_array().unwrap().len(), 3);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(page["result"]["status"], "SUCCESS");
    assert_eq!(page["task"]["timeline"][0]["type"], "task-received");
    assert_error(
        api.get("/api/tasks/no-such-task").await,
        StatusCode::NOT_FOUND,
        "no task no-such-task",
    );

    // Workers: this daemon, with what `inspect` adds (asked every 10 s).
    let worker = wait_for(
        "the worker's concurrency",
        Duration::from_secs(20),
        || async {
            let (_, found) = api.get("/api/workers").await;
            found["workers"]
                .as_array()?
                .iter()
                .find(|w| w["queues"] == json!([names.queue]) && w["concurrency"].is_u64())
                .cloned()
        },
    )
    .await;
    assert_eq!(worker["alive"], true, "{worker}");
    assert_eq!(worker["software"], "persona-ingest");
    assert!(worker["succeeded"].as_u64().unwrap() >= 4, "{worker}");
    assert!(worker["lease_left_ms"].as_u64().unwrap() > 0, "{worker}");

    let (_, broker) = api.get("/api/broker").await;
    assert_eq!(broker["queues"][0]["queue"], json!(names.queue));
    assert_eq!(
        broker["queues"][0]["by_priority"],
        json!([[0, 0], [3, 0], [6, 0], [9, 0]])
    );
    assert_eq!(broker["dead_letters"]["total"], 0);
    assert_error(
        api.post("/api/dead-letters/0123456789abcdef/drop", None)
            .await,
        StatusCode::NOT_FOUND,
        "no dead letter",
    );
    assert_error(
        api.post("/api/dead-letters/xyz/requeue", None).await,
        StatusCode::BAD_REQUEST,
        "16 hex digits",
    );

    // Personas and a persona's runs, with what its collections hold.
    let (_, personas) = api.get("/api/personas").await;
    let twain = personas["personas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "twain-sampler")
        .unwrap()
        .clone();
    assert_eq!(twain["vectors"], 36);
    let (_, found) = api.get("/api/personas?q=sampler&limit=1").await;
    assert_eq!(found["personas"][0]["id"], "twain-sampler", "{found}");
    assert_error(
        api.get("/api/personas?limit=0").await,
        StatusCode::BAD_REQUEST,
        "limit \"0\" is not a whole number from 1 to 1000",
    );
    let (status, runs) = api.get("/api/personas/twain-sampler/runs").await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    assert_eq!(runs["runs"][0]["jobs"].as_array().unwrap().len(), 3);
    let records: Value = runs["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["kind"].as_str().unwrap().to_owned(), c["records"].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into();
    assert_eq!(records, json!({ "works": 20, "quotes": 12, "profile": 4 }));
    assert_error(
        api.get("/api/personas/nobody-here/runs").await,
        StatusCode::NOT_FOUND,
        "no persona",
    );

    let (_, charts) = api.get("/api/charts").await;
    assert_eq!(charts["window_seconds"], 900);
    assert!(
        !charts["durations"].as_array().unwrap().is_empty(),
        "{charts}"
    );

    // A browser page of another site cannot make the daemon act, token or not; the scheme's
    // case does not matter.
    let drop_letter = "/api/dead-letters/0123456789abcdef/drop";
    let post_as = |path: &str, scheme: &str, header: (&'static str, String)| {
        reqwest::Client::new()
            .post(format!("{}{path}", api.base))
            .header("Authorization", format!("{scheme} {TOKEN}"))
            .header(header.0, header.1)
            .header("Content-Type", "text/plain")
            .send()
    };
    let forged = post_as(
        "/api/personas/twain-sampler/ingest",
        "bearer",
        ("Origin", "http://evil.example".into()),
    );
    assert_eq!(forged.await.unwrap().status(), StatusCode::FORBIDDEN);
    let fetched = post_as(
        drop_letter,
        "bearer",
        ("Sec-Fetch-Site", "cross-site".into()),
    );
    assert_eq!(fetched.await.unwrap().status(), StatusCode::FORBIDDEN);
    let own = post_as(drop_letter, "BEARER", ("Origin", api.base.clone()));
    assert_eq!(
        own.await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "its own page's request passes"
    );
    let page = reqwest::get(format!("{}/", api.base)).await.unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");

    // The live stream: Server-Sent Events, a tick first.
    let mut stream = reqwest::Client::new()
        .get(format!("{}/api/stream", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).starts_with("event: tick\ndata: 0\n\n"),
        "{first:?}"
    );
    let bare = reqwest::get(format!("{}/api/stream", api.base))
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    forget(&redis_url(), &names.prefix, &[&task_id]).await;
}

/// A Celery worker's own task, named as this engine's quotes task, answering at once.
const CELERY_APP: &str = r#"
import os
from celery import Celery
url = os.environ["TEST_REDIS"]
app = Celery("workers", broker=url, backend=url)

@app.task(name="workers.tasks.ingest_persona_quotes")
def ingest_persona_quotes(persona_id, job_id):
    return 7
"#;

/// Flower's view of a fleet: a Celery worker beside the daemon, heard through its own events.
#[actix::test]
async fn a_celery_worker_and_its_tasks_are_on_the_dashboard() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let port = free_port();
    let _daemon = Daemon::start(&world, &names, &redis_url(), &http_env(port));
    let api = Api::new(port);
    api.up().await;

    let module = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(module.path().join("workers")).unwrap();
    std::fs::write(module.path().join("workers/__init__.py"), "").unwrap();
    std::fs::write(module.path().join("workers/tasks.py"), CELERY_APP).unwrap();
    let queue = format!("{}-py", names.queue);
    let node = format!("celery-{}@testhost", names.prefix);
    let worker = std::process::Command::new(python())
        .args([
            "-m",
            "celery",
            "-A",
            "workers.tasks",
            "worker",
            "--pool",
            "solo",
            "-E",
        ])
        .args(["-Q", &queue, "-n", &node, "--loglevel", "error"])
        .args(["--without-gossip", "--without-mingle"])
        .current_dir(module.path())
        .env("TEST_REDIS", redis_url())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _worker = Kill(worker);

    let sent = client(
        r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import os
os.environ["TEST_REDIS"] = sys.argv[2]
from workers.tasks import app
r = app.send_task("workers.tasks.ingest_persona_quotes", args=["jane-austen", "j1"], queue=sys.argv[3])
print(json.dumps({"id": r.id, "result": r.get(timeout=60)}))
"#,
        &[module.path().to_str().unwrap(), &redis_url(), &queue],
    );
    assert_eq!(sent["result"], 7);
    let id = sent["id"].as_str().unwrap().to_owned();

    let task = wait_for(
        "the Celery worker's task",
        Duration::from_secs(15),
        || async {
            let (_, found) = api.get(&format!("/api/tasks?worker={node}")).await;
            let task = found["tasks"].get(0)?.clone();
            (task["state"] == "SUCCESS").then_some(task)
        },
    )
    .await;
    assert_eq!(task["id"], json!(id));
    assert_eq!(
        (&task["persona"], &task["kind"], &task["result"]),
        (&json!("jane-austen"), &json!("quotes"), &json!("7"))
    );
    assert!(task["runtime"].as_f64().unwrap() >= 0.0, "{task}");

    let celery = wait_for(
        "the Celery worker, inspected",
        Duration::from_secs(20),
        || async {
            let (_, found) = api.get("/api/workers").await;
            found["workers"]
                .as_array()?
                .iter()
                .find(|w| w["hostname"] == json!(node) && w["concurrency"].is_u64())
                .cloned()
        },
    )
    .await;
    assert_eq!(celery["alive"], true, "{celery}");
    assert_eq!(celery["software"], "py-celery");
    assert_eq!(celery["queues"], json!([queue]));
    assert_eq!(celery["succeeded"], 1);
    forget(&redis_url(), &names.prefix, &[&id]).await;
}
