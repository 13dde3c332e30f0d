//! The daemon as a Celery worker in full, driven by the real Celery 5.7 client and CLI and by
//! Flower 2.2 (from the project's virtualenv): the seed's contract (`children`, sub-tasks with
//! lives of their own), remote control (`celery status`, `inspect`, `revoke` with `terminate`),
//! every kind of message a Celery producer sends, and a result backend of its own.
//!
//! One file for the Celery client's view of the daemon, a test per feature (the README's table
//! names them), hence its length.
//!
//! Remote control is a broadcast on the Redis db: daemons of other tests running beside these
//! answer too, so every check looks at this test's own node (`worker.name`).

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::worker_kit::*;

const PERSONA: &str = "twain-sampler";

fn celery_bin() -> std::path::PathBuf {
    python().with_file_name("celery")
}

fn node_env(names: &Names) -> (String, Vec<(String, String)>) {
    let node = format!("{}@test", names.prefix);
    (node.clone(), vars(&[("ENGINE__WORKER__NAME", &node)]))
}

/// The web app's side of the seed's contract: the top task answers at once with its sub-task
/// ids and `children`; each sub-task then lives on its own.
const SEED: &str = r#"
import json, sys, time, uuid
from celery import Celery
url, queue = sys.argv[1], sys.argv[2]
app = Celery("workers", broker=url, backend=url)
job_ids = {kind: str(uuid.uuid4()) for kind in ("works", "quotes", "profile")}
sent = time.time()
top = app.send_task("workers.tasks.ingest_full_persona",
                    kwargs={"persona_id": "twain-sampler", "job_ids": job_ids}, queue=queue)
ids = top.get(timeout=30)
answered = time.time() - sent
children = [c.id for c in (top.children or [])]
works = app.AsyncResult(ids["works"])
seen = set()
while not works.ready():
    seen.add(works.status)
    time.sleep(0.02)
counts = {kind: app.AsyncResult(task).get(timeout=60) for kind, task in ids.items()}
ended = time.time() - sent
print(json.dumps({"ids": ids, "children": children, "answered_after": answered, "ended_after": ended,
                  "works_states_seen": sorted(seen), "counts": counts,
                  "works_parent": app.backend.get_task_meta(ids["works"]).get("parent_id")}))
"#;

#[actix::test]
async fn the_seeds_contract_children_answered_at_once_and_sub_tasks_of_their_own() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let embedder = slow_embedder(Duration::from_millis(300)).await;
    let daemon = Daemon::start(&world, &names, &redis_url(), &slow_embedder_env(&embedder));
    let answer = client(SEED, &[&redis_url(), &names.queue]);
    let ids = &answer["ids"];
    let (answered, ended) = (
        answer["answered_after"].as_f64().unwrap(),
        answer["ended_after"].as_f64().unwrap(),
    );
    assert!(
        answered < 2.0 && ended > answered + 2.0,
        "the top task answers once the run is accepted, not when it ends: {answer}"
    );
    let mut children: Vec<&str> = answer["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    children.sort();
    let mut expected: Vec<&str> = ["works", "quotes", "profile"]
        .iter()
        .map(|k| ids[k].as_str().unwrap())
        .collect();
    expected.sort();
    assert_eq!(children, expected, "AsyncResult(id).children");
    assert_eq!(
        answer["counts"],
        json!({ "profile": 4, "works": 20, "quotes": 12 })
    );
    assert!(
        answer["works_states_seen"]
            .as_array()
            .unwrap()
            .contains(&json!("STARTED")),
        "{answer}"
    );
    assert!(answer["works_parent"].is_string(), "{answer}");
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    forget(&redis_url(), &names.prefix, &[]).await;
}

#[actix::test]
async fn celery_status_and_inspect_see_the_daemon_as_a_worker() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let (node, env) = node_env(&names);
    let daemon = Daemon::start(&world, &names, &redis_url(), &env);
    // Give it the moment to subscribe.
    wait_for(
        "the worker answers ping",
        Duration::from_secs(10),
        || async {
            let out = celery(&["inspect", "ping", "-d", &node, "--timeout", "1"]);
            out.status.success().then_some(())
        },
    )
    .await;
    let out = celery(&["status", "--timeout", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&node));
    let out = celery(&["inspect", "ping", "--timeout", "2"]);
    assert!(out.status.success());
    let inspected = client(
        r#"
import json, sys
from celery import Celery
app = Celery("workers", broker=sys.argv[1], backend=sys.argv[1])
i = app.control.inspect(destination=[sys.argv[2]], timeout=2)
print(json.dumps({"stats": i.stats(), "registered": i.registered(), "active_queues": i.active_queues(),
                  "active": i.active(), "reserved": i.reserved(), "scheduled": i.scheduled(),
                  "revoked": i.revoked(), "conf": i.conf(), "clock": i.clock(), "report": i.report(),
                  "query_task": i.query_task("nope"),
                  "unknown": app.control.broadcast("no_such_command", reply=True, timeout=2, destination=[sys.argv[2]])}))
"#,
        &[&redis_url(), &node],
    );
    let of = |key: &str| inspected[key][&node].clone();
    assert_eq!(of("stats")["pool"]["max-concurrency"], json!(4));
    assert!(of("registered")
        .as_array()
        .unwrap()
        .contains(&json!("workers.tasks.ingest_full_persona")));
    assert_eq!(of("active_queues")[0]["name"], json!(names.queue));
    for empty in ["active", "reserved", "scheduled"] {
        assert_eq!(of(empty), json!([]), "{empty}");
    }
    assert!(of("clock")["clock"].is_u64());
    assert!(of("report")["ok"]
        .as_str()
        .unwrap()
        .contains("persona-ingest"));
    assert_eq!(of("query_task"), json!({}));
    assert_eq!(
        inspected["unknown"],
        json!([{ &node: { "error": "KeyError('no_such_command')" } }])
    );
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    forget(&redis_url(), &names.prefix, &[]).await;
}

fn celery(args: &[&str]) -> Output {
    Command::new(celery_bin())
        .args(["-b", &redis_url()])
        .args(args)
        .output()
        .unwrap()
}

/// Sends the seed's task and, once the works sub-task has started, revokes it with terminate.
const TERMINATE: &str = r#"
import json, sys, time, uuid
from celery import Celery
url, queue = sys.argv[1], sys.argv[2]
app = Celery("workers", broker=url, backend=url)
job_ids = {kind: str(uuid.uuid4()) for kind in ("works", "quotes", "profile")}
top = app.send_task("workers.tasks.ingest_full_persona",
                    kwargs={"persona_id": "twain-sampler", "job_ids": job_ids}, queue=queue)
ids = top.get(timeout=30)
works = app.AsyncResult(ids["works"])
while works.status != "STARTED":
    time.sleep(0.05)
time.sleep(1.0)
replies = app.control.revoke(ids["works"], terminate=True, reply=True, timeout=2)
deadline = time.time() + 30
while works.status != "REVOKED" and time.time() < deadline:
    time.sleep(0.05)
print(json.dumps({"ids": ids, "job_ids": job_ids, "replies": replies, "works": works.status, "revoked_at": time.time()}))
"#;

#[actix::test]
async fn revoke_with_terminate_stops_a_running_ingestion() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let (node, mut env) = node_env(&names);
    let embedder = slow_embedder(Duration::from_millis(200)).await;
    env.extend(slow_embedder_env(&embedder));
    let daemon = Daemon::start(&world, &names, &redis_url(), &env);
    let answer = client(TERMINATE, &[&redis_url(), &names.queue]);
    assert_eq!(answer["works"], "REVOKED", "{answer}");
    let ours: Vec<&Value> = answer["replies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.get(&node))
        .collect();
    assert_eq!(ours.len(), 1, "{answer}");
    assert!(ours[0]["ok"].as_str().unwrap().starts_with("terminate: "));
    // Within seconds no more provider calls.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls = crate::worker_kit::embedding_calls(&embedder).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        crate::worker_kit::embedding_calls(&embedder).await,
        calls,
        "calls after the revoke"
    );
    let db = persona_ingest::db::connect(&world.settings(&[]).database)
        .await
        .unwrap();
    assert_nothing_processing(&db).await;
    let persona = persona_row(&db, PERSONA).await;
    assert_eq!(persona.status, persona_ingest::PersonaStatus::Failed);
    assert!(persona
        .error_message
        .unwrap_or_default()
        .contains("revoked"));
    let works: uuid::Uuid = answer["job_ids"]["works"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let row = persona_ingest::jobs::job_by_id(&db, works)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, persona_ingest::JobStatus::Failed);
    assert!(row.error_message.unwrap_or_default().contains("revoked"));
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    forget(&redis_url(), &names.prefix, &[]).await;
}

/// Every other kind of message a Celery producer sends, and what the caller then reads.
const MESSAGES: &str = r#"
import json, sys, time, uuid
from celery import Celery, signature
url, queue, callbacks = sys.argv[1], sys.argv[2], sys.argv[3]
def app_with(**conf):
    app = Celery("workers", broker=url, backend=url)
    app.conf.update(**conf)
    return app
app = app_with()
def ids():
    return {kind: str(uuid.uuid4()) for kind in ("works", "quotes", "profile")}
def full(app, **options):
    return app.send_task("workers.tasks.ingest_full_persona",
                         kwargs={"persona_id": "twain-sampler", "job_ids": ids()}, queue=queue, **options)
out = {}
for compression in ("zlib", "gzip", "bzip2"):
    r = full(app, compression=compression)
    out[compression] = r.get(timeout=30) and r.status
v1 = app_with(task_protocol=1)
r = v1.send_task("workers.tasks.ingest_persona_profile", args=["twain-sampler", str(uuid.uuid4())], queue=queue)
out["protocol_1"] = [r.get(timeout=30), r.status]
link = signature("workers.tasks.notify", args=("linked",), queue=callbacks)
err = signature("workers.tasks.on_error", queue=callbacks)
r = app.send_task("workers.tasks.ingest_persona_profile", args=["twain-sampler", str(uuid.uuid4())], queue=queue, link=link)
out["link"] = [r.get(timeout=30), r.id]
r = app.send_task("workers.tasks.ingest_persona_profile", args=["ghost", str(uuid.uuid4())], queue=queue, link_error=err)
try:
    r.get(timeout=30)
except Exception as e:
    out["link_error"] = [type(e).__name__, r.id]
r = full(app, ignore_result=True)
time.sleep(0.5)
out["ignore_result"] = app.backend.get(app.backend.get_key_for_task(r.id))
r = full(app, countdown=3, expires=1)
deadline = time.time() + 20
while r.status != "REVOKED" and time.time() < deadline:
    time.sleep(0.1)
out["expired"] = [r.status, str(r.result)]
sent = time.time()
r = app.send_task("workers.tasks.ingest_full_persona", kwargs={"persona_id": "twain-sampler"}, queue=queue)
try:
    r.get(timeout=10)
except Exception as e:
    out["missing"] = [type(e).__name__, str(e), time.time() - sent]
r = app.send_task("workers.tasks.ingest_full_persona", args=["twain-sampler", {"works": 7}], queue=queue)
try:
    r.get(timeout=10)
except Exception as e:
    out["integer_job_id"] = [type(e).__name__, str(e)]
later = full(app, countdown=5)
later.revoke()
time.sleep(7)
out["revoked_countdown"] = [later.status, app.backend.get_task_meta(later.id)["status"]]
print(json.dumps(out))
"#;

#[actix::test]
async fn every_message_a_celery_producer_sends_is_served_as_celery_serves_it() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let callbacks = format!("{}-callbacks", names.prefix);
    let daemon = Daemon::start(&world, &names, &redis_url(), &[]);
    let out = client(MESSAGES, &[&redis_url(), &names.queue, &callbacks]);
    for compression in ["zlib", "gzip", "bzip2"] {
        assert_eq!(out[compression], "SUCCESS", "{compression}: {out}");
    }
    assert_eq!(out["protocol_1"], json!([4, "SUCCESS"]));
    // The callbacks, as Celery would send them, on their own queue.
    let mut con = connect(&redis_url()).await;
    let sent: Vec<String> = redis::cmd("LRANGE")
        .arg(&callbacks)
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap();
    let sent: Vec<_> = sent
        .iter()
        .map(|raw| persona_ingest::trigger::celery::decode(raw.as_bytes()).unwrap())
        .collect();
    let notify = sent
        .iter()
        .find(|m| m.task == "workers.tasks.notify")
        .unwrap();
    assert_eq!(notify.args, [json!(4), json!("linked")]);
    assert_eq!(notify.parent_id.as_deref(), out["link"][1].as_str());
    assert_eq!(out["link_error"][0], "RuntimeError");
    let on_error = sent
        .iter()
        .find(|m| m.task == "workers.tasks.on_error")
        .unwrap();
    assert_eq!(on_error.args, [out["link_error"][1].clone()]);
    assert_eq!(out["ignore_result"], Value::Null);
    assert_eq!(out["expired"][0], "REVOKED", "{out}");
    assert_eq!(out["missing"][0], "TypeError");
    assert_eq!(
        out["missing"][1],
        "ingest_full_persona() missing 1 required positional argument: 'job_ids'"
    );
    assert!(out["missing"][2].as_f64().unwrap() < 1.5, "{out}");
    assert_eq!(out["integer_job_id"][0], "ValueError");
    assert!(out["integer_job_id"][1]
        .as_str()
        .unwrap()
        .contains("job_ids.works"));
    assert_eq!(out["revoked_countdown"], json!(["REVOKED", "REVOKED"]));
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    let _: () = redis::cmd("DEL")
        .arg(&callbacks)
        .query_async(&mut con)
        .await
        .unwrap();
    forget(&redis_url(), &names.prefix, &[]).await;
}

#[actix::test]
async fn results_go_to_a_result_backend_of_their_own() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let results = redis_url()
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/7"))
        .unwrap();
    let daemon = Daemon::start(
        &world,
        &names,
        &redis_url(),
        &vars(&[("CELERY_RESULT_BACKEND", &results)]),
    );
    let answer = client(
        r#"
import json, sys, uuid
from celery import Celery
app = Celery("workers", broker=sys.argv[1], backend=sys.argv[2])
r = app.send_task("workers.tasks.ingest_persona_profile", args=["twain-sampler", str(uuid.uuid4())], queue=sys.argv[3])
print(json.dumps([r.get(timeout=30), r.status]))
"#,
        &[&redis_url(), &results, &names.queue],
    );
    assert_eq!(answer, json!([4, "SUCCESS"]));
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    forget(&redis_url(), &names.prefix, &[]).await;
}

/// Flower 2.2 from the virtualenv, on a port of the test's own; killed when dropped.
struct Flower(Child);

impl Drop for Flower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[actix::test]
async fn flower_lists_the_worker_and_knows_its_sub_tasks() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let (node, env) = node_env(&names);
    let port = free_port();
    let _flower = Flower(
        Command::new(celery_bin())
            .args(["-b", &redis_url(), "flower", "--address=127.0.0.1"])
            .arg(format!("--port={port}"))
            .env("FLOWER_UNAUTHENTICATED_API", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let daemon = Daemon::start(&world, &names, &redis_url(), &env);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let workers = wait_for("Flower to list the worker", Duration::from_secs(30), || {
        let http = http.clone();
        let url = format!("{base}/api/workers?refresh=1");
        let node = node.clone();
        async move {
            let workers: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            workers
                .get(&node)
                .is_some_and(|w| w.get("stats").is_some())
                .then_some(workers)
        }
    })
    .await;
    assert_eq!(workers[&node]["stats"]["pool"]["max-concurrency"], json!(4));
    // Flower listens to events by now: a task's sub-tasks are seen from received to succeeded.
    let mut con = connect(&redis_url()).await;
    let task_id = send_full_persona(&mut con, &names.queue, PERSONA).await;
    final_result(&redis_url(), &task_id, Duration::from_secs(30)).await;
    let works = persona_ingest::trigger::task::subtask_id(&task_id, persona_ingest::Kind::Works);
    let info = wait_for(
        "Flower to know the sub-task",
        Duration::from_secs(30),
        || {
            let http = http.clone();
            let url = format!("{base}/api/task/info/{works}");
            async move {
                let info: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                (info["state"] == "SUCCESS").then_some(info)
            }
        },
    )
    .await;
    assert_eq!(info["name"], "workers.tasks.ingest_persona_works");
    eprintln!("Flower saw it all {:?} after", started.elapsed());
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    forget(&redis_url(), &names.prefix, &[&task_id]).await;
}

#[actix::test]
async fn persona_ingest_revoke_and_the_api_revoke_reach_the_workers() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let (node, mut env) = node_env(&names);
    let port = free_port();
    env.extend(vars(&[(
        "ENGINE__HTTP__LISTEN",
        &format!("127.0.0.1:{port}"),
    )]));
    let daemon = Daemon::start(&world, &names, &redis_url(), &env);
    let mut con = connect(&redis_url()).await;
    let by_cli = send_full_persona_in(&mut con, &names.queue, PERSONA, 60).await;
    let by_api = send_full_persona_in(&mut con, &names.queue, PERSONA, 60).await;
    wait_for("both held for their eta", Duration::from_secs(10), || {
        let mut con = con.clone();
        let prefix = names.prefix.clone();
        async move { (in_flight(&mut con, &prefix).await == 2).then_some(()) }
    })
    .await;

    let out = Command::new(env!("CARGO_BIN_EXE_persona-ingest"))
        .args(["revoke", &by_cli])
        .env_clear()
        .envs(daemon_env(&world, &names, &redis_url()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!("{node}: tasks {{'{by_cli}'}} flagged as revoked")),
        "{printed}"
    );
    let answer: Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/tasks/{by_api}/revoke"))
        .body(r#"{"terminate": false}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        answer["replies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.get(&node).is_some()),
        "{answer}"
    );
    for id in [&by_cli, &by_api] {
        let result = final_result(&redis_url(), id, Duration::from_secs(10)).await;
        assert_eq!(result["status"], "REVOKED", "{result}");
    }
    assert_eq!(
        in_flight(&mut con, &names.prefix).await,
        0,
        "answered, not held"
    );
    let (code, stderr) = daemon.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    forget(&redis_url(), &names.prefix, &[&by_cli, &by_api]).await;
}
